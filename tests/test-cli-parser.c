/* test-cli-parser.c - the one flag parser (cli.h) on a table of its own
 * with every kind of value: good values at the edges of their ranges, bad
 * ones told in one line naming the option, what it wants and what it got,
 * presets first, the last repeat winning, strings the config owns, and
 * the find/set pair a config file reader will use. */
#include "cli.h"
#include "test-cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum color { RED, GREEN, BLUE } color;
typedef enum level { LOW, HIGH } level;

typedef struct opts {
  int quiet, count;
  uint64_t seed;
  double share, seconds;
  const char *label, *path;
  const char *host, *other_host;
  int port, other_port;
  color color;
  level level;
  int finished; /* finish ran; it saw count */
} opts;

static const cli_word color_words[] = {{"red", RED}, {"green", GREEN}, {"blue", BLUE}, {NULL, 0}};
static const cli_word level_words[] = {{"low", LOW}, {"high", HIGH}, {NULL, 0}};

/* The high level sets a count and a label, as a demo preset sets numbers. */
static void apply_level(void *cfg) {
  opts *o = cfg;
  o->count = o->level == HIGH ? 9 : 1;
  o->label = "from-level";
}

static const cli_option options[] = {
    CLI_OPT_FLAG(opts, "quiet", quiet, "say less"),
    CLI_OPT_INT(opts, "count", count, 1, 10, "how many"),
    CLI_OPT_U64(opts, "seed", seed, "the seed"),
    CLI_OPT_DOUBLE(opts, "share", share, 0, 0.5, "SHARE", "a share"),
    CLI_OPT_DOUBLE_ABOVE(opts, "seconds", seconds, 0, 60, "SECONDS", "a duration"),
    CLI_OPT_STRING(opts, "label", label, NULL, "any text"),
    CLI_OPT_PATH(opts, "path", path, "a file"),
    CLI_OPT_HOSTPORT(opts, "listen", host, port, "one address"),
    CLI_OPT_HOSTPORT(opts, "other", other_host, other_port, "another address"),
    CLI_OPT_ENUM(opts, "color", color, color_words, "a color"),
    {"level", CLI_ENUM, CLI_ENUM_MEMBER(opts, level), .words = level_words, .help = "a preset", .preset = apply_level},
};

static int finish(void *cfg, char *err, size_t errlen) {
  opts *o = cfg;
  if (o->count == 7) {
    snprintf(err, errlen, "--count 7 is unlucky");
    return -EINVAL;
  }
  o->finished = o->count;
  return 0;
}

static const cli_command command = {.name = "test",
                                    .about = "A table with every kind.",
                                    .options = options,
                                    .noptions = CLI_COUNT(options),
                                    .finish = finish};

typedef struct parsed {
  opts o;
  cli_strings strings;
  char err[256];
  int r;
} parsed;

static void parse_into(parsed *p, int argc, char *const argv[]) {
  memset(p, 0, sizeof *p);
  p->o.count = 5;
  p->o.label = "default";
  p->r = cli_parse(&command, argc, argv, &p->o, &p->strings, p->err, sizeof p->err);
}

#define PARSE(p, ...) parse_into((p), TEST_ARGC(__VA_ARGS__), TEST_ARGV(__VA_ARGS__))

/* Parses the arguments, expects a usage error and returns its message. */
#define EXPECT_ERROR(msg, ...)       \
  do {                               \
    parsed p_;                       \
    PARSE(&p_, __VA_ARGS__);         \
    ck_assert_int_eq(p_.r, -EINVAL); \
    ck_assert_str_eq(p_.err, (msg)); \
    cli_strings_free(&p_.strings);   \
  } while (0)

START_TEST(test_cli_parser_good_values_at_the_edges) {
  parsed p;
  PARSE(&p, "--quiet", "--count", "1", "--seed", "18446744073709551615", "--share", "0", "--seconds", "60",
        "--label=", "--path", "a b", "--listen", "[::1]:0", "--other", "localhost:65535", "--color=blue");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_int_eq(p.o.quiet, 1);
  ck_assert_int_eq(p.o.count, 1);
  ck_assert_uint_eq(p.o.seed, UINT64_MAX);
  ck_assert_double_eq(p.o.share, 0);
  ck_assert_double_eq(p.o.seconds, 60);
  ck_assert_str_eq(p.o.label, "");
  ck_assert_str_eq(p.o.path, "a b");
  ck_assert_str_eq(p.o.host, "::1");
  ck_assert_int_eq(p.o.port, 0);
  ck_assert_str_eq(p.o.other_host, "localhost");
  ck_assert_int_eq(p.o.other_port, 65535);
  ck_assert_int_eq(p.o.color, BLUE);
  ck_assert_int_eq(p.o.finished, 1);
  cli_strings_free(&p.strings);
  PARSE(&p, "--count=10", "--share", "0.5", "--seconds", "0.001", "--listen", "0.0.0.0:8080", "--other", "fe80::1%lo:7",
        "--other", "::1:9");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_int_eq(p.o.count, 10);
  ck_assert_double_eq(p.o.share, 0.5);
  ck_assert_double_eq(p.o.seconds, 0.001);
  ck_assert_str_eq(p.o.host, "0.0.0.0");
  ck_assert_int_eq(p.o.port, 8080);
  ck_assert_str_eq(p.o.other_host, "::1"); /* the last repeat wins; the last ':' ends the host */
  ck_assert_int_eq(p.o.other_port, 9);
  cli_strings_free(&p.strings);
}
END_TEST

START_TEST(test_cli_parser_bad_values_say_what_they_want) {
  EXPECT_ERROR("--count wants an integer from 1 to 10, got '0'", "--count", "0");
  EXPECT_ERROR("--count wants an integer from 1 to 10, got '11'", "--count=11");
  EXPECT_ERROR("--count wants an integer from 1 to 10, got '3x'", "--count", "3x");
  EXPECT_ERROR("--count wants an integer from 1 to 10, got ''", "--count=");
  EXPECT_ERROR("--count wants an integer from 1 to 10, got '99999999999999999999'", "--count", "99999999999999999999");
  EXPECT_ERROR("--seed wants an integer from 0 to 18446744073709551615, got '-1'", "--seed", "-1");
  EXPECT_ERROR("--seed wants an integer from 0 to 18446744073709551615, got '18446744073709551616'", "--seed",
               "18446744073709551616");
  EXPECT_ERROR("--share wants a number from 0 to 0.5, got '0.6'", "--share", "0.6");
  EXPECT_ERROR("--share wants a number from 0 to 0.5, got 'nan'", "--share", "nan");
  EXPECT_ERROR("--seconds wants a number above 0, at most 60, got '0'", "--seconds", "0");
  EXPECT_ERROR("--seconds wants a number above 0, at most 60, got 'inf'", "--seconds", "inf");
  EXPECT_ERROR("--seconds wants a number above 0, at most 60, got '1e'", "--seconds", "1e");
  EXPECT_ERROR("--path wants a path, got ''", "--path", "");
  EXPECT_ERROR("--color wants red, green or blue, got 'Red'", "--color", "Red");
  EXPECT_ERROR("--level wants low or high, got 'max'", "--level", "max");
  const char *bad_addresses[] = {
      "1.2.3.4",     ":80",      "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1", "1.2.3.4:0x10", "host.example:80",
      "999.1.1.1:5", "1.2.3:80", "[::1]80",  "[]:80",         "[::1:80",    "fe80::1%:80",  "localhost:123456"};
  for (size_t i = 0; i < sizeof bad_addresses / sizeof bad_addresses[0]; i++) {
    char want[256];
    snprintf(want, sizeof want,
             "--listen wants HOST:PORT (HOST a numeric IPv4 address, an IPv6 one in brackets or localhost; PORT 0 to "
             "65535), got '%s'",
             bad_addresses[i]);
    EXPECT_ERROR(want, "--listen", bad_addresses[i]);
  }
}
END_TEST

START_TEST(test_cli_parser_bad_form) {
  EXPECT_ERROR("unknown flag '--colour'; --help lists the flags", "--colour", "red");
  EXPECT_ERROR("unknown flag '--colour'; --help lists the flags", "--colour=red");
  EXPECT_ERROR("unknown flag '-c'; --help lists the flags", "-c", "red");
  EXPECT_ERROR("unknown flag '--'; --help lists the flags", "--");
  EXPECT_ERROR("unknown flag '-'; --help lists the flags", "-");
  EXPECT_ERROR("unexpected argument 'red': each value follows its flag", "--quiet", "red");
  EXPECT_ERROR("--count needs a value: an integer from 1 to 10", "--quiet", "--count");
  EXPECT_ERROR("--listen needs a value: HOST:PORT (HOST a numeric IPv4 address, an IPv6 one in brackets or "
               "localhost; PORT 0 to 65535)",
               "--listen");
  EXPECT_ERROR("--quiet takes no value, got 'yes'", "--quiet=yes");
  /* A form error is told even when it stands after a preset's value. */
  EXPECT_ERROR("--quiet takes no value, got ''", "--level", "high", "--quiet=");
  /* A value that looks like a flag is still the value. */
  EXPECT_ERROR("--count wants an integer from 1 to 10, got '--quiet'", "--count", "--quiet");
  /* finish sees the final values and its error is the parse's. */
  EXPECT_ERROR("--count 7 is unlucky", "--count", "7");
}
END_TEST

/* --help wins over what comes after it, not over an error before it. */
START_TEST(test_cli_parser_help) {
  parsed p;
  PARSE(&p, "--count", "3", "--help", "--bogus");
  ck_assert_int_eq(p.r, CLI_HELP);
  cli_strings_free(&p.strings);
  PARSE(&p, "-h");
  ck_assert_int_eq(p.r, CLI_HELP);
  cli_strings_free(&p.strings);
  PARSE(&p, "--bogus", "--help");
  ck_assert_int_eq(p.r, -EINVAL);
  cli_strings_free(&p.strings);

  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ck_assert_ptr_nonnull(f);
  cli_usage(&command, f);
  fclose(f);
  ck_assert_ptr_nonnull(strstr(text, "usage: telegate test [flags]\n\nA table with every kind.\n"));
  /* One column, as wide as the widest option with its placeholder. */
  const char *rows[][2] = {{"--quiet", "say less"},
                           {"--count N", "how many"},
                           {"--seconds SECONDS", "a duration"},
                           {"--listen HOST:PORT", "one address"},
                           {"--color red|green|blue", "a color"},
                           {"--path PATH", "a file"},
                           {"--help", "this text"}};
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    char line[128];
    snprintf(line, sizeof line, "\n  %-22s  %s\n", rows[i][0], rows[i][1]);
    ck_assert_msg(strstr(text, line) != NULL, "no '%s' in\n%s", line, text);
  }
  free(text);
}
END_TEST

/* A preset is set first wherever it stands: explicit options win. */
START_TEST(test_cli_parser_preset_first) {
  parsed p;
  PARSE(&p, "--count", "3", "--level", "high");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_int_eq(p.o.level, HIGH);
  ck_assert_int_eq(p.o.count, 3);
  ck_assert_str_eq(p.o.label, "from-level");
  ck_assert_int_eq(p.o.finished, 3);
  cli_strings_free(&p.strings);
  PARSE(&p, "--label", "mine", "--level=high");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_int_eq(p.o.count, 9);
  ck_assert_str_eq(p.o.label, "mine");
  cli_strings_free(&p.strings);
}
END_TEST

/* Every string the config holds is its own copy: two addresses never
 * share a host, and rewriting argv afterwards changes nothing. */
START_TEST(test_cli_parser_strings_are_owned) {
  char a0[] = "--listen", a1[] = "127.0.0.1:7878", a2[] = "--other", a3[] = "0.0.0.0:8080", a4[] = "--label",
       a5[] = "mine", a6[] = "--path=/tmp/x";
  char *argv[] = {a0, a1, a2, a3, a4, a5, a6};
  parsed p;
  parse_into(&p, 7, argv);
  ck_assert_msg(p.r == 0, "%s", p.err);
  for (size_t i = 0; i < 7; i++) memset(argv[i], 'X', strlen(argv[i]));
  ck_assert_str_eq(p.o.host, "127.0.0.1");
  ck_assert_int_eq(p.o.port, 7878);
  ck_assert_str_eq(p.o.other_host, "0.0.0.0");
  ck_assert_int_eq(p.o.other_port, 8080);
  ck_assert_str_eq(p.o.label, "mine");
  ck_assert_str_eq(p.o.path, "/tmp/x");
  cli_strings_free(&p.strings);
  ck_assert_ptr_null(p.strings.head);
  cli_strings_free(&p.strings); /* freeing twice is harmless */
}
END_TEST

/* What a config file reader will do: look a key up, set it from text. */
START_TEST(test_cli_parser_find_and_set) {
  opts o = {0};
  cli_strings strings = {0};
  char err[256];
  ck_assert_ptr_null(cli_option_find(&command, "colour", 6));
  ck_assert_ptr_null(cli_option_find(&command, "coun", 4));
  const cli_option *count = cli_option_find(&command, "count=4", 5);
  ck_assert_ptr_nonnull(count);
  ck_assert_int_eq(cli_option_set(count, "4", &o, &strings, err, sizeof err), 0);
  ck_assert_int_eq(o.count, 4);
  ck_assert_int_eq(cli_option_set(count, "40", &o, &strings, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "--count wants an integer from 1 to 10, got '40'");
  ck_assert_int_eq(o.count, 4);
  const cli_option *preset = cli_option_find(&command, "level", 5);
  ck_assert_int_eq(cli_option_set(preset, "high", &o, &strings, err, sizeof err), 0);
  ck_assert_int_eq(o.count, 9); /* its preset hook ran */
  const cli_option *quiet = cli_option_find(&command, "quiet", 5);
  ck_assert_int_eq(cli_option_set(quiet, NULL, &o, &strings, err, sizeof err), 0);
  ck_assert_int_eq(o.quiet, 1);
  ck_assert_int_eq(cli_option_set(count, NULL, &o, &strings, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "--count needs a value: an integer from 1 to 10");
  cli_strings_free(&strings);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cli-parser");
  tg_test_add(s, "good_values_at_the_edges", test_cli_parser_good_values_at_the_edges, 10);
  tg_test_add(s, "bad_values_say_what_they_want", test_cli_parser_bad_values_say_what_they_want, 10);
  tg_test_add(s, "bad_form", test_cli_parser_bad_form, 10);
  tg_test_add(s, "help", test_cli_parser_help, 10);
  tg_test_add(s, "preset_first", test_cli_parser_preset_first, 10);
  tg_test_add(s, "strings_are_owned", test_cli_parser_strings_are_owned, 10);
  tg_test_add(s, "find_and_set", test_cli_parser_find_and_set, 10);
  return tg_test_main(s);
}
