/* test-cli-devices.c - the command line of `telegate devices`, the fleet
 * simulator: defaults, every flag name, bad input told in one line, and
 * exit status 2 from the real binary. */
#include "cli_devices.h"
#include "test-cli.h"

#include <errno.h>
#include <string.h>

typedef struct parsed {
  sim_config c;
  cli_strings strings;
  char err[256];
  int r;
} parsed;

static void parse_into(parsed *p, int argc, char *const argv[]) {
  memset(p, 0, sizeof *p);
  p->r = cli_parse_devices(argc, argv, &p->c, &p->strings, p->err, sizeof p->err);
}

#define PARSE(p, ...) parse_into((p), TEST_ARGC(__VA_ARGS__), TEST_ARGV(__VA_ARGS__))

START_TEST(test_cli_devices_defaults) {
  parsed p;
  parse_into(&p, 0, NULL);
  ck_assert_int_eq(p.r, 0);
  sim_config d;
  memset(&d, 0, sizeof d); /* padding compares equal too */
  sim_config_defaults(&d);
  ck_assert(memcmp(&p.c, &d, sizeof d) == 0);
}
END_TEST

START_TEST(test_cli_devices_every_flag) {
  parsed p;
  PARSE(&p, "--connect", "[::1]:9000", "--count", "3", "--rate", "0.5", "--duration", "2.5", "--seed", "7", "--format",
        "line", "--id-prefix", "", "--report-json", "r.json", "--workers", "2", "--health", "ignore", "--acks", "off",
        "--max-unacked", "50", "--ack-wait-s", "0", "--quiet");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_str_eq(p.c.host, "::1");
  ck_assert_int_eq(p.c.port, 9000);
  ck_assert_int_eq(p.c.count, 3);
  ck_assert_double_eq(p.c.rate_hz, 0.5);
  ck_assert_double_eq(p.c.duration_s, 2.5);
  ck_assert_uint_eq(p.c.seed, 7);
  ck_assert_int_eq(p.c.format, PROTOCOL_LINE);
  ck_assert_str_eq(p.c.id_prefix, ""); /* ids 1, 2, ...: an empty prefix is a prefix */
  ck_assert_str_eq(p.c.report_json, "r.json");
  ck_assert_int_eq(p.c.workers, 2);
  ck_assert_int_eq(p.c.health, SIM_HEALTH_IGNORE);
  ck_assert_int_eq(p.c.acks, SIM_ACKS_OFF);
  ck_assert_int_eq(p.c.max_unacked, 50);
  ck_assert_double_eq(p.c.ack_wait_s, 0); /* no waiting: hang up once the duration is over */
  ck_assert_int_eq(p.c.quiet, 1);
  cli_strings_free(&p.strings);
  PARSE(&p, "--connect=localhost:7878", "--format=json", "--health=answer", "--acks=on", "--ack-wait-s=2.5");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_str_eq(p.c.host, "localhost");
  ck_assert_int_eq(p.c.format, PROTOCOL_JSON);
  ck_assert_int_eq(p.c.health, SIM_HEALTH_ANSWER);
  ck_assert_int_eq(p.c.acks, SIM_ACKS_ON);
  ck_assert_double_eq(p.c.ack_wait_s, 2.5);
  cli_strings_free(&p.strings);
}
END_TEST

START_TEST(test_cli_devices_bad_input) {
  struct {
    const char *args[2], *message;
  } cases[] = {
      {{"--count", "0"}, "--count wants an integer from 1 to 1000000, got '0'"},
      {{"--rate", "0"}, "--rate wants a number above 0, at most 1000000000, got '0'"},
      {{"--duration", "-1"}, "--duration wants a number above 0, at most 31536000, got '-1'"},
      {{"--seed", "-3"}, "--seed wants an integer from 0 to 18446744073709551615, got '-3'"},
      {{"--format", "csv"}, "--format wants json or line, got 'csv'"},
      {{"--health", "yes"}, "--health wants answer or ignore, got 'yes'"},
      {{"--acks", "yes"}, "--acks wants on or off, got 'yes'"},
      {{"--max-unacked", "0"}, "--max-unacked wants an integer from 1 to 100000000, got '0'"},
      {{"--ack-wait-s", "-1"}, "--ack-wait-s wants a number from 0 to 86400, got '-1'"},
      {{"--connect", "gateway:7878"},
       "--connect wants HOST:PORT (HOST a numeric IPv4 address, an IPv6 one in brackets or localhost; PORT 0 to "
       "65535), got 'gateway:7878'"},
      {{"--count"}, "--count needs a value: an integer from 1 to 1000000"},
      {{"--devices", "3"}, "unknown flag '--devices'; --help lists the flags"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    parsed p;
    parse_into(&p, cases[i].args[1] ? 2 : 1, (char *const *)cases[i].args);
    ck_assert_int_eq(p.r, -EINVAL);
    ck_assert_str_eq(p.err, cases[i].message);
    cli_strings_free(&p.strings);
  }
}
END_TEST

START_TEST(test_cli_devices_binary_usage_errors) {
  test_cli_usage_error((const char *const[]){"telegate", "devices", "--count", "many", NULL},
                       "--count wants an integer from 1 to 1000000, got 'many'");
  test_cli_usage_error((const char *const[]){"telegate", "devices", "--connect", NULL}, "--connect needs a value");
  test_cli_usage_error((const char *const[]){"telegate", "devices", "--rte", "5", NULL}, "unknown flag '--rte'");
  test_cli_help_lists("devices", &cli_devices);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cli-devices");
  tg_test_add(s, "defaults", test_cli_devices_defaults, 10);
  tg_test_add(s, "every_flag", test_cli_devices_every_flag, 10);
  tg_test_add(s, "bad_input", test_cli_devices_bad_input, 10);
  tg_test_add(s, "binary_usage_errors", test_cli_devices_binary_usage_errors, 20);
  return tg_test_main(s);
}
