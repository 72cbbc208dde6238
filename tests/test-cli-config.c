/* test-cli-config.c - config files: `--config FILE` sets what the flags
 * set, flags given win over it, each command reads its own section, a bad
 * file is refused naming file, line and key (exit 2), and `--check`
 * prints the effective configuration as a file that reads back the same. */
#include "cli_devices.h"
#include "cli_serve.h"
#include "test-cli.h"

#include <errno.h>
#include <stdlib.h>

static char path[64];

/* Writes text to a fresh temporary file; path names it. */
static const char *write_file(const char *text) {
  snprintf(path, sizeof path, "/tmp/tg-config-XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static const char good[] = "; a comment\n"
                           "[serve]\n"
                           "listen-devices = 0.0.0.0:7000\n"
                           "batch-age-ms = 200\n"
                           "quiet = true   ; inline comment\n"
                           "log-format = json\n"
                           "\n"
                           "[devices]\n"
                           "count = 5\n"
                           "[demo]\n"
                           "seed = 9\n";

START_TEST(test_cli_config_sets_and_flags_win) {
  const char *file = write_file(good);
  serve_config cfg;
  cli_strings strings = {0};
  char err[256] = "";
  ck_assert_int_eq(cli_parse_serve(TEST_ARGC("--batch-size", "7", "--config", file, "--batch-age-ms", "300"),
                                   TEST_ARGV("--batch-size", "7", "--config", file, "--batch-age-ms", "300"), &cfg,
                                   &strings, err, sizeof err),
                   0);
  ck_assert_str_eq(cfg.listen_host, "0.0.0.0");
  ck_assert_int_eq(cfg.listen_port, 7000);
  ck_assert_int_eq(cfg.batch_age_ms, 300); /* the flag wins, wherever it stands */
  ck_assert_int_eq(cfg.batch_size, 7);
  ck_assert_int_eq(cfg.quiet, 1);
  ck_assert_int_eq(cfg.log_format, LOG_JSON);
  cli_strings_free(&strings);

  /* Another command reads its own section of the same file. */
  sim_config sc;
  ck_assert_int_eq(
      cli_parse_devices(TEST_ARGC("--config", file), TEST_ARGV("--config", file), &sc, &strings, err, sizeof err), 0);
  ck_assert_int_eq(sc.count, 5);
  cli_strings_free(&strings);
  unlink(file);
}
END_TEST

START_TEST(test_cli_config_bad_files) {
  static const struct {
    const char *text, *want;
  } bad[] = {
      {"[serve]\nbatch-age-ms = 200\nbatch-age-ms = x\n",
       ":3: batch-age-ms wants an integer from 1 to 3600000, got 'x'"},
      {"[serve]\nbatchage = 1\n", ":2: batchage: no such key in [serve]"},
      {"[serv]\nbatch-age-ms = 1\n", ":2: [serv]: no such section"},
      {"batch-age-ms = 1\n", ":1: batch-age-ms: a key outside a [section]"},
      {"[serve]\nquiet = yes\n", ":2: quiet wants true or false, got 'yes'"},
      {"[serve]\njust words\n", ":2: neither a [section] nor a key = value line"},
      {"[serve]\nstorage = nosuch\n", "--storage wants a registered backend"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    const char *file = write_file(bad[i].text);
    serve_config cfg;
    cli_strings strings = {0};
    char err[256] = "";
    ck_assert_int_eq(
        cli_parse_serve(TEST_ARGC("--config", file), TEST_ARGV("--config", file), &cfg, &strings, err, sizeof err),
        -EINVAL);
    ck_assert_msg(strstr(err, bad[i].want), "file %zu: got '%s', want '%s'", i, err, bad[i].want);
    cli_strings_free(&strings);
    unlink(file);
  }
  serve_config cfg;
  cli_strings strings = {0};
  char err[256] = "";
  ck_assert_int_eq(cli_parse_serve(TEST_ARGC("--config", "/nonexistent/x.ini"),
                                   TEST_ARGV("--config", "/nonexistent/x.ini"), &cfg, &strings, err, sizeof err),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "cannot read /nonexistent/x.ini"));
  ck_assert_int_eq(cli_parse_serve(TEST_ARGC("--config"), TEST_ARGV("--config"), &cfg, &strings, err, sizeof err),
                   -EINVAL);
}
END_TEST

/* What a user sees: --check prints the effective config and runs
 * nothing; the output, read back, is the same config; a bad file is exit
 * status 2 with the file, line and key on stderr. */
START_TEST(test_cli_config_check_binary) {
  const char *file = write_file(good);
  char first[sizeof path];
  snprintf(first, sizeof first, "%s", file);
  test_cli_run run;
  test_cli_run_binary((const char *[]){"telegate", "serve", "--config", first, "--check", NULL}, &run);
  ck_assert_int_eq(run.status, 0);
  ck_assert_ptr_nonnull(strstr(run.out, "[serve]\n"));
  ck_assert_ptr_nonnull(strstr(run.out, "listen-devices = 0.0.0.0:7000\n"));
  ck_assert_ptr_nonnull(strstr(run.out, "batch-age-ms = 200\n"));
  ck_assert_ptr_nonnull(strstr(run.out, "quiet = true\n"));
  ck_assert_ptr_nonnull(strstr(run.out, "# summary-json =\n"));
  char printed[sizeof run.out];
  snprintf(printed, sizeof printed, "%s", run.out);
  const char *again = write_file(printed);
  test_cli_run_binary((const char *[]){"telegate", "serve", "--config", again, "--check", NULL}, &run);
  ck_assert_int_eq(run.status, 0);
  ck_assert_str_eq(run.out, printed);
  unlink(again);
  unlink(first);

  const char *bad = write_file("[serve]\n\nbatch-size = 0\n");
  test_cli_run_binary((const char *[]){"telegate", "serve", "--config", bad, "--check", NULL}, &run);
  ck_assert_int_eq(run.status, 2);
  ck_assert_str_eq(run.out, "");
  char want[160];
  snprintf(want, sizeof want, "telegate serve: %s:3: batch-size wants an integer from 1 to 10000000, got '0'\n", bad);
  ck_assert_str_eq(run.err, want);
  unlink(bad);
}
END_TEST

/* The example in the repository is a valid file for each of its sections. */
START_TEST(test_cli_config_example) {
  char src[] = __FILE__, example[600];
  snprintf(example, sizeof example, "%s/../dist/telegate.ini", dirname(src));
  const char *const commands[] = {"serve", "devices"};
  for (size_t i = 0; i < 2; i++) {
    test_cli_run run;
    test_cli_run_binary((const char *[]){"telegate", commands[i], "--config", example, "--check", NULL}, &run);
    ck_assert_msg(run.status == 0, "%s: %s", commands[i], run.err);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("cli-config");
  tg_test_add(s, "sets_and_flags_win", test_cli_config_sets_and_flags_win, 10);
  tg_test_add(s, "bad_files", test_cli_config_bad_files, 10);
  tg_test_add(s, "check_binary", test_cli_config_check_binary, 30);
  tg_test_add(s, "example", test_cli_config_example, 30);
  return tg_test_main(s);
}
