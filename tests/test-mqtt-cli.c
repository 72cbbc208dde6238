/* test-mqtt-cli.c - the MQTT flags of `telegate serve`: each one parsed,
 * the defaults, the same keys in a [serve] section of a config file, and
 * bad values refused before anything starts (exit status 2, one line on
 * stderr naming the flag). */
#include "cli_serve.h"
#include "mqtt.h"
#include "test-cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_mqtt_cli_flags_and_defaults) {
  serve_config c;
  cli_strings strings = {0};
  char err[256] = "";
  ck_assert_int_eq(cli_parse_serve(0, TEST_ARGV(NULL), &c, &strings, err, sizeof err), 0);
  ck_assert_ptr_null(c.mqtt_url); /* no MQTT source unless asked */
  ck_assert_str_eq(c.mqtt_topics, "telemetry/+/readings");
  ck_assert_ptr_null(c.mqtt_client_id);
  ck_assert_int_eq(c.mqtt_version, 0);
  ck_assert_int_eq(c.mqtt_keepalive_s, 30);
  ck_assert_int_eq(c.mqtt_inflight, 2000);
  ck_assert_int_eq(c.mqtt_max_packet_bytes, 65536);
  cli_strings_free(&strings);
#define ARGS                                                                                                        \
  "--mqtt", "mqtt://[::1]:1884", "--mqtt-topic", "a/+/up,b/+", "--mqtt-client-id", "gw-1", "--mqtt-username", "gw", \
      "--mqtt-password-file", "/run/pw", "--mqtt-version", "3.1.1", "--mqtt-keepalive-s", "0", "--mqtt-inflight",   \
      "65535", "--mqtt-max-packet-bytes", "1024"
  ck_assert_msg(cli_parse_serve(TEST_ARGC(ARGS), TEST_ARGV(ARGS), &c, &strings, err, sizeof err) == 0, "%s", err);
#undef ARGS
  ck_assert_str_eq(c.mqtt_url, "mqtt://[::1]:1884");
  ck_assert_str_eq(c.mqtt_topics, "a/+/up,b/+");
  ck_assert_str_eq(c.mqtt_client_id, "gw-1");
  ck_assert_str_eq(c.mqtt_username, "gw");
  ck_assert_str_eq(c.mqtt_password_file, "/run/pw");
  ck_assert_int_eq(c.mqtt_version, MQTT_V311);
  ck_assert_int_eq(c.mqtt_keepalive_s, 0);
  ck_assert_int_eq(c.mqtt_inflight, 65535);
  ck_assert_int_eq(c.mqtt_max_packet_bytes, 1024);
  cli_strings_free(&strings);
  ck_assert_int_eq(cli_parse_serve(TEST_ARGC("--mqtt-version", "5"), TEST_ARGV("--mqtt-version", "5"), &c, &strings,
                                   err, sizeof err),
                   0);
  ck_assert_int_eq(c.mqtt_version, MQTT_V5);
  cli_strings_free(&strings);
#define TLS \
  "--mqtt", "mqtts://broker:8883", "--mqtt-tls-ca", "ca.pem", "--mqtt-tls-cert", "c.pem", "--mqtt-tls-key", "c.key"
  ck_assert_msg(cli_parse_serve(TEST_ARGC(TLS), TEST_ARGV(TLS), &c, &strings, err, sizeof err) == 0, "%s", err);
#undef TLS
  ck_assert_str_eq(c.mqtt_tls_ca, "ca.pem");
  ck_assert_str_eq(c.mqtt_tls_cert, "c.pem");
  ck_assert_str_eq(c.mqtt_tls_key, "c.key");
  cli_strings_free(&strings);
  ck_assert_int_eq(cli_parse_serve(TEST_ARGC("--mqtt", "mqtts://b", "--mqtt-tls-cert", "c.pem"),
                                   TEST_ARGV("--mqtt", "mqtts://b", "--mqtt-tls-cert", "c.pem"), &c, &strings, err,
                                   sizeof err),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "go together"));
  cli_strings_free(&strings);
}
END_TEST

/* What a user sees for a bad value: exit status 2 and the flag named. */
static void refused(const char *flag, const char *value, const char *says) {
  test_cli_run run;
  test_cli_run_binary((const char *[]){"telegate", "serve", "--mqtt", "mqtt://127.0.0.1", flag, value, NULL}, &run);
  ck_assert_msg(run.status == 2, "%s %s: exit %d", flag, value, run.status);
  ck_assert_msg(strstr(run.err, says), "%s %s: stderr %s", flag, value, run.err);
}

START_TEST(test_mqtt_cli_refused) {
  refused("--mqtt-topic", "telemetry/readings", "exactly one '+' level");
  refused("--mqtt-topic", "a/+/b/+", "exactly one '+' level");
  refused("--mqtt-topic", "a/+/#", "exactly one '+' level");
  refused("--mqtt-topic", "a/+,", "exactly one '+' level"); /* an empty filter after the comma */
  refused("--mqtt-inflight", "0", "mqtt-inflight");
  refused("--mqtt-inflight", "65536", "mqtt-inflight"); /* packet ids are 16 bits */
  refused("--mqtt-version", "4", "mqtt-version");
  refused("--mqtt-password-file", "/run/pw", "wants --mqtt-username");
  refused("--mqtt-tls-ca", "/etc/ca.pem", "want --mqtt mqtts://"); /* TLS files on a plain URL */
  test_cli_run run;
  test_cli_run_binary((const char *[]){"telegate", "serve", "--mqtt", "tcp://127.0.0.1:1883", NULL}, &run);
  ck_assert_int_eq(run.status, 2);
  ck_assert_ptr_nonnull(strstr(run.err, "mqtt://HOST[:PORT]"));
}
END_TEST

START_TEST(test_mqtt_cli_config_file) {
  char path[] = "/tmp/telegate-mqtt-cli-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  static const char text[] = "[serve]\nmqtt = mqtt://10.0.0.5:1883\nmqtt-topic = site-a/+/up,site-b/+/up\n"
                             "mqtt-inflight = 500\nmqtt-version = 5\n";
  ck_assert_int_eq(write(fd, text, sizeof text - 1), (int)sizeof text - 1);
  close(fd);
  test_cli_run run;
  test_cli_run_binary((const char *[]){"telegate", "serve", "--config", path, "--check", NULL}, &run);
  unlink(path);
  ck_assert_msg(run.status == 0, "%s", run.err);
  ck_assert_ptr_nonnull(strstr(run.out, "mqtt = mqtt://10.0.0.5:1883\n"));
  ck_assert_ptr_nonnull(strstr(run.out, "mqtt-topic = site-a/+/up,site-b/+/up\n"));
  ck_assert_ptr_nonnull(strstr(run.out, "mqtt-inflight = 500\n"));
  ck_assert_ptr_nonnull(strstr(run.out, "mqtt-version = 5\n"));
}
END_TEST

int main(void) {
  Suite *s = suite_create("mqtt-cli");
  tg_test_add(s, "flags_and_defaults", test_mqtt_cli_flags_and_defaults, 10);
  tg_test_add(s, "refused", test_mqtt_cli_refused, 30);
  tg_test_add(s, "config_file", test_mqtt_cli_config_file, 30);
  return tg_test_main(s);
}
