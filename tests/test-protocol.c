/* test-protocol.c - the device line protocol: every accepted shape, every
 * rejection reason, the boundaries, exact number conversion, round trips
 * through the writers, and seeded random mutations of valid lines (replay
 * one with PROTOCOL_SEED=N; PROTOCOL_ITERATIONS=N runs the randomised
 * tests longer than the default 100,000 lines each). */
#include "helpers.h"
#include "protocol.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TCPGEN_JSON \
  "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}"
#define TCPGEN_LINE "telemetry,device=7 temperature=21.5,humidity=48.2,battery=87i,seq=123i 1732590000123000000"

/* Parses s from an allocation of exactly its length, so that ASan sees a
 * read past the end. */
static int parse_n(const char *s, size_t len, size_t max_len, protocol_msg *m, protocol_error *e) {
  char *copy = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(copy);
  memcpy(copy, s, len);
  memset(e, 0, sizeof *e);
  int r = protocol_parse_line(copy, len, max_len, m, e);
  free(copy);
  return r;
}

static int parse(const char *s, protocol_msg *m, protocol_error *e) { return parse_n(s, strlen(s), 0, m, e); }

static void accept_reading(const char *s, protocol_msg *m) {
  protocol_error e;
  int r = parse(s, m, &e);
  ck_assert_msg(r == 0, "rejected (%s at %u, field %s): %s", protocol_reason_name(r), e.offset, e.field ? e.field : "-",
                s);
  ck_assert_int_eq(m->kind, PROTOCOL_READING);
}

static void expect_tcpgen_values(const protocol_msg *m) {
  ck_assert_str_eq(m->device.text, "7");
  ck_assert_uint_eq(m->device.len, 1);
  ck_assert_uint_eq(m->device.is_num, 1);
  ck_assert_uint_eq(m->device.num, 7);
  ck_assert_uint_eq(m->reading.device, 0);
  ck_assert_uint_eq(m->reading.seq, 123);
  ck_assert_int_eq(m->reading.ts_ms, 1732590000123);
  ck_assert_double_eq(m->reading.temperature, 21.5);
  ck_assert_double_eq(m->reading.humidity, 48.2);
  ck_assert_uint_eq(m->reading.battery, 87);
}

/* The rejection of s: its reason, and its field when field is not NULL
 * ("" for none). */
static void reject(const char *s, protocol_reason want, const char *field) {
  protocol_msg m;
  protocol_error e;
  int r = parse(s, &m, &e);
  ck_assert_msg(r == -(int)want, "want %s, got %s (at %u, field %s): %s", protocol_reason_name(want),
                protocol_reason_name(r), e.offset, e.field ? e.field : "-", s);
  ck_assert_int_eq(e.reason, want);
  ck_assert_uint_le(e.offset, strlen(s));
  if (field)
    ck_assert_msg(*field ? e.field && strcmp(e.field, field) == 0 : e.field == NULL, "field %s, want %s: %s",
                  e.field ? e.field : "-", *field ? field : "-", s);
}

START_TEST(test_protocol_json_tcpgen_shape) {
  protocol_msg m;
  accept_reading(TCPGEN_JSON, &m);
  ck_assert_int_eq(m.format, PROTOCOL_JSON);
  expect_tcpgen_values(&m);
}
END_TEST

START_TEST(test_protocol_json_device_number_order_whitespace) {
  static const char *const same[] = {
      "{\"device\":7,\"seq\":123,\"ts\":1732590000123,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}",
      "{\"battery\":87,\"humidity\":48.2,\"temperature\":21.5,\"ts\":1732590000123,\"seq\":123,\"device\":\"7\"}",
      (" \t{ \"seq\" : 123 ,\t\"device\" :7 , \"ts\": 1732590000123,\"humidity\":482e-1,"
       "\"temperature\":0.215E2,\"battery\":87 }  \t"),
      "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.50,\"humidity\":48.20,\"battery\":87}\r",
  };
  for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
    protocol_msg m;
    accept_reading(same[i], &m);
    ck_assert_int_eq(m.format, PROTOCOL_JSON);
    expect_tcpgen_values(&m);
  }
}
END_TEST

START_TEST(test_protocol_json_health_reply) {
  static const char *const lines[] = {
      "{\"type\":\"health\",\"id\":42,\"uptime_s\":3600,\"battery\":87}",
      "{ \"battery\" : 87, \"uptime_s\":3600 ,\"id\":42, \"type\":\"health\" }",
  };
  for (size_t i = 0; i < 2; i++) {
    protocol_msg m;
    protocol_error e;
    ck_assert_int_eq(parse(lines[i], &m, &e), 0);
    ck_assert_int_eq(m.kind, PROTOCOL_HEALTH);
    ck_assert_int_eq(m.format, PROTOCOL_JSON);
    ck_assert_uint_eq(m.health.id, 42);
    ck_assert_uint_eq(m.health.uptime_s, 3600);
    ck_assert_uint_eq(m.health.battery, 87);
  }
}
END_TEST

START_TEST(test_protocol_json_hello) {
  static const struct {
    const char *line;
    int acks, health;
  } ok[] = {
      {"{\"type\":\"hello\",\"acks\":true,\"health\":true}", 1, 1},
      {"{ \"health\" : false , \"type\":\"hello\", \"acks\":true }", 1, 0},
      {"{\"type\":\"hello\",\"health\":true}", 0, 1},
      {"{\"type\":\"hello\"}", 0, 0},
  };
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    protocol_msg m;
    protocol_error e;
    ck_assert_msg(parse(ok[i].line, &m, &e) == 0, "%s: %s", ok[i].line, protocol_reason_name(e.reason));
    ck_assert_int_eq(m.kind, PROTOCOL_HELLO);
    ck_assert_int_eq(m.hello.acks, ok[i].acks);
    ck_assert_int_eq(m.hello.health, ok[i].health);
  }
  reject("{\"type\":\"hello\",\"acks\":1}", PROTOCOL_WRONG_TYPE, "acks");
  reject("{\"type\":\"hello\",\"acks\":\"true\"}", PROTOCOL_WRONG_TYPE, "acks");
  reject("{\"type\":\"hello\",\"acks\":truex}", PROTOCOL_WRONG_TYPE, "acks");
  reject("{\"type\":\"hello\",\"acks\":true,\"acks\":false}", PROTOCOL_DUPLICATE_FIELD, "acks");
  reject("{\"type\":\"hello\",\"id\":1}", PROTOCOL_UNKNOWN_FIELD, "id");
  /* The token: printable ASCII without quote or backslash, 1 to 128 bytes, never unescaped. */
  {
    protocol_msg m;
    protocol_error e;
    ck_assert_int_eq(parse("{\"type\":\"hello\",\"token\":\"s3cr3t-+/=~!\",\"acks\":true}", &m, &e), 0);
    ck_assert_int_eq(m.kind, PROTOCOL_HELLO);
    ck_assert_int_eq(m.hello.acks, 1);
    ck_assert_uint_eq(m.hello.token_len, 12);
    ck_assert_str_eq(m.hello.token, "s3cr3t-+/=~!");
    ck_assert_int_eq(parse("{\"type\":\"hello\",\"acks\":true}", &m, &e), 0);
    ck_assert_uint_eq(m.hello.token_len, 0);
    char line[300], tok[PROTOCOL_TOKEN_MAX + 2];
    memset(tok, 'k', sizeof tok - 1);
    tok[PROTOCOL_TOKEN_MAX] = 0;
    snprintf(line, sizeof line, "{\"type\":\"hello\",\"token\":\"%s\"}", tok);
    ck_assert_int_eq(parse(line, &m, &e), 0);
    ck_assert_uint_eq(m.hello.token_len, PROTOCOL_TOKEN_MAX);
    tok[PROTOCOL_TOKEN_MAX] = 'k';
    tok[PROTOCOL_TOKEN_MAX + 1] = 0;
    snprintf(line, sizeof line, "{\"type\":\"hello\",\"token\":\"%s\"}", tok);
    reject(line, PROTOCOL_BAD_TOKEN, "token");
    /* The device side writes it; the gateway's answer never carries one. */
    protocol_hello h = {.acks = 1, .token_len = 3};
    memcpy(h.token, "abc", 4);
    char buf[256];
    ck_assert_int_gt(protocol_format_hello(buf, sizeof buf, &h), 0);
    ck_assert_str_eq(buf, "{\"type\":\"hello\",\"token\":\"abc\",\"acks\":true,\"health\":false}\n");
  }
  reject("{\"type\":\"hello\",\"token\":\"\"}", PROTOCOL_BAD_TOKEN, "token");
  reject("{\"type\":\"hello\",\"token\":\"a b\"}", PROTOCOL_BAD_TOKEN, "token");
  reject("{\"type\":\"hello\",\"token\":\"a\\u0041\"}", PROTOCOL_BAD_TOKEN, "token");
  reject("{\"type\":\"hello\",\"token\":\"a\\q\"}", PROTOCOL_MALFORMED, "token");
  reject("{\"type\":\"hello\",\"token\":\"\xc3\xa9\"}", PROTOCOL_BAD_TOKEN, "token");
  reject("{\"type\":\"hello\",\"token\":\"abc", PROTOCOL_MALFORMED, "token");
  reject("{\"type\":\"hello\",\"token\":7}", PROTOCOL_WRONG_TYPE, "token");
  reject("{\"type\":\"hello\",\"token\":\"a\",\"token\":\"b\"}", PROTOCOL_DUPLICATE_FIELD, "token");
  reject("{\"device\":7,\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,\"token\":\"a\"}",
         PROTOCOL_UNKNOWN_FIELD, "token");
  reject("{\"type\":\"hullo\"}", PROTOCOL_UNKNOWN_TYPE, "type");
  /* acks and health belong to a hello only */
  reject("{\"type\":\"health\",\"id\":1,\"uptime_s\":1,\"battery\":1,\"acks\":true}", PROTOCOL_UNKNOWN_FIELD, "acks");
  reject("{\"device\":7,\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,\"health\":true}",
         PROTOCOL_UNKNOWN_FIELD, "health");
  /* The gateway's answer and its acks. */
  char buf[128];
  ck_assert_int_eq(protocol_format_hello(buf, sizeof buf, &(protocol_hello){.acks = 1}), 44);
  ck_assert_str_eq(buf, "{\"type\":\"hello\",\"acks\":true,\"health\":false}\n");
  ck_assert_int_gt(protocol_format_ack(buf, sizeof buf, "dev-7", UINT64_MAX), 0);
  ck_assert_str_eq(buf, "{\"type\":\"ack\",\"device\":\"dev-7\",\"seq\":18446744073709551615}\n");
  char id[PROTOCOL_DEVICE_ID_MAX + 1];
  memset(id, 'x', PROTOCOL_DEVICE_ID_MAX);
  id[PROTOCOL_DEVICE_ID_MAX] = 0;
  ck_assert_int_lt(protocol_format_ack(buf, 96, id, UINT64_MAX), 96); /* the longest fits in 96 */
}
END_TEST

START_TEST(test_protocol_line_shapes) {
  static const char *const same[] = {
      TCPGEN_LINE,
      "telemetry,device=7 seq=123i,battery=87i,humidity=48.2,temperature=21.5 1732590000123000000",
      "telemetry,device=7 seq=123u,battery=87,humidity=482e-1,temperature=0.215e+2 1732590000123999999",
      "  telemetry,device=7\t  temperature=21.5,humidity=48.2,battery=87u,seq=123   1732590000123000000 \r",
  };
  for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
    protocol_msg m;
    accept_reading(same[i], &m);
    ck_assert_int_eq(m.format, PROTOCOL_LINE);
    expect_tcpgen_values(&m);
  }
  /* Integers with a suffix for the fractional fields; ns floored to ms. */
  protocol_msg m;
  accept_reading("telemetry,device=sensor-A.1:x_2 temperature=-21i,humidity=0u,battery=0i,seq=0i 946684800000999999",
                 &m);
  ck_assert_str_eq(m.device.text, "sensor-A.1:x_2");
  ck_assert_uint_eq(m.device.is_num, 0);
  ck_assert_double_eq(m.reading.temperature, -21.0);
  ck_assert_double_eq(m.reading.humidity, 0.0);
  ck_assert_int_eq(m.reading.ts_ms, PROTOCOL_TS_MS_MIN); /* ns: the remainder dropped */
}
END_TEST

START_TEST(test_protocol_blank_lines) {
  static const char *const blank[] = {"", " ", "\t \r", "\r", "# a comment", "   # indented comment {"};
  for (size_t i = 0; i < sizeof blank / sizeof *blank; i++) {
    protocol_msg m;
    protocol_error e;
    ck_assert_int_eq(parse(blank[i], &m, &e), 0);
    ck_assert_int_eq(m.kind, PROTOCOL_BLANK);
  }
}
END_TEST

START_TEST(test_protocol_device_ids) {
  protocol_msg m;
  /* Every byte of the id set, 32 of them: the longest id. */
  accept_reading("{\"device\":\"az_AZ-09.:bcdefghijklmnopqrstuvw\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,"
                 "\"humidity\":1,\"battery\":1}",
                 &m);
  ck_assert_uint_eq(m.device.len, 32);
  ck_assert_str_eq(m.device.text, "az_AZ-09.:bcdefghijklmnopqrstuvw");
  reject("{\"device\":\"az_AZ-09.:bcdefghijklmnopqrstuvwx\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,"
         "\"humidity\":1,\"battery\":1}",
         PROTOCOL_BAD_DEVICE_ID, "device");
  /* "07" is an id of its own, not the number 7. */
  accept_reading("{\"device\":\"07\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
                 &m);
  ck_assert_str_eq(m.device.text, "07");
  ck_assert_uint_eq(m.device.is_num, 0);
  accept_reading("{\"device\":\"0\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
                 &m);
  ck_assert_uint_eq(m.device.is_num, 1);
  ck_assert_uint_eq(m.device.num, 0);
  /* Numbers up to 2^64-1. */
  accept_reading(
      "{\"device\":18446744073709551615,\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
      &m);
  ck_assert_uint_eq(m.device.num, UINT64_MAX);
  ck_assert_str_eq(m.device.text, "18446744073709551615");
  accept_reading("{\"device\":\"18446744073709551616\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,"
                 "\"battery\":1}",
                 &m);
  ck_assert_uint_eq(m.device.is_num, 0); /* a valid string id, but not a number */
  static const char *const bad[] = {
      "\"\"", "\"a b\"", "\"a/b\"", "\"caf\xc3\xa9\"",      "\"a\\u0041\"", "\"a\\\"b\"",
      "-1",   "7.0",     "7e0",     "18446744073709551616", "00",           "07",
      "+7",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char line[256];
    snprintf(line, sizeof line,
             "{\"device\":%s,\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}", bad[i]);
    reject(line, PROTOCOL_BAD_DEVICE_ID, "device");
  }
  static const char *const bad_tags[] = {
      "", "a\\ b", "a=b", "caf\xc3\xa9", "a\"b", "123456789012345678901234567890123"};
  for (size_t i = 0; i < sizeof bad_tags / sizeof *bad_tags; i++) {
    char line[256];
    snprintf(line, sizeof line, "telemetry,device=%s temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000",
             bad_tags[i]);
    reject(line, PROTOCOL_BAD_DEVICE_ID, "device");
  }
}
END_TEST

/* Each reason, in JSON and in line protocol where the format can show it. */
START_TEST(test_protocol_rejections) {
  /* malformed */
  reject("{", PROTOCOL_MALFORMED, "");
  reject("{\"device\":\"7\"", PROTOCOL_MALFORMED, "");
  reject("{\"device\":\"7\",}", PROTOCOL_MALFORMED, "");
  reject("{\"device\" \"7\"}", PROTOCOL_MALFORMED, "");
  reject("{\"device\":\"7\" \"seq\":1}", PROTOCOL_MALFORMED, "");
  reject("{\"device\":\"7}", PROTOCOL_MALFORMED, "device");
  reject("{\"device\":\"7\\x\"}", PROTOCOL_MALFORMED, "device");
  reject("{\"device\":\"a\tb\"}", PROTOCOL_MALFORMED, "device");
  reject("{device:7}", PROTOCOL_MALFORMED, "");
  reject("{\"device\":}", PROTOCOL_MALFORMED, "device");
  reject("[1,2]", PROTOCOL_UNKNOWN_TYPE, ""); /* not '{': a line-protocol measurement named "[1" */
  reject(TCPGEN_JSON " x", PROTOCOL_MALFORMED, "");
  reject("{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}}",
         PROTOCOL_MALFORMED, "");
  reject("telemetry", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 ", PROTOCOL_MALFORMED, "");
  reject("telemetry,device", PROTOCOL_MALFORMED, "");
  reject("telemetry,=7 seq=1i", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 temperature", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 temperature=1,", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000 2", PROTOCOL_MALFORMED, "");
  reject(",device=7 temperature=1", PROTOCOL_MALFORMED, "");

  /* oversized: below */

  /* not_utf8 */
  reject("{\"device\":\"\xff\"}", PROTOCOL_NOT_UTF8, "device");
  reject("{\"dev\xc3\x28\":1}", PROTOCOL_NOT_UTF8, "");
  reject("telemetry,device=\xe2\x82 seq=1i", PROTOCOL_NOT_UTF8, "device");
  reject("telem\x80try,device=7 seq=1i", PROTOCOL_NOT_UTF8, "");
  reject(TCPGEN_JSON "\xfe", PROTOCOL_NOT_UTF8, "");
  reject("\xc0\xaf", PROTOCOL_NOT_UTF8, "");

  /* bad_number */
  static const char *const bad_nums[] = {"1.", ".5", "01", "1e", "1e+", "--1", "1x", "+1", "0x10", "1.5.5", "-"};
  for (size_t i = 0; i < sizeof bad_nums / sizeof *bad_nums; i++) {
    char line[256];
    snprintf(line, sizeof line,
             "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":%s,\"humidity\":1,\"battery\":1}",
             bad_nums[i]);
    reject(line, PROTOCOL_BAD_NUMBER, "temperature");
    snprintf(line, sizeof line, "telemetry,device=7 temperature=%s,humidity=1,battery=1i,seq=1i 1732590000000000000",
             bad_nums[i]);
    reject(line, PROTOCOL_BAD_NUMBER, "temperature");
  }
  reject("{\"device\":\"7\",\"seq\":1.5,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_BAD_NUMBER, "seq");
  reject("{\"device\":\"7\",\"seq\":1e3,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_BAD_NUMBER, "seq");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":87.0}",
         PROTOCOL_BAD_NUMBER, "battery");
  reject("{\"device\":\"7\",\"seq\":1i,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_BAD_NUMBER, "seq");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1.5i,seq=1i 1732590000000000000", PROTOCOL_BAD_NUMBER,
         "battery");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1i", PROTOCOL_BAD_NUMBER, "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1.5", PROTOCOL_BAD_NUMBER, "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 12abc", PROTOCOL_BAD_NUMBER, "ts");
  reject("telemetry,device=7 temperature=,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_BAD_NUMBER,
         "temperature");
  reject("telemetry,device=7 temperature=1.5i,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_BAD_NUMBER,
         "temperature");

  /* out_of_range: the boundaries have their own test */
  static const char *const special[] = {"NaN", "nan", "-nan", "inf", "-inf", "Infinity", "-Infinity", "INF", "1e999"};
  for (size_t i = 0; i < sizeof special / sizeof *special; i++) {
    char line[256];
    snprintf(line, sizeof line,
             "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":%s,\"battery\":1}",
             special[i]);
    reject(line, PROTOCOL_OUT_OF_RANGE, "humidity");
    snprintf(line, sizeof line, "telemetry,device=7 temperature=%s,humidity=1,battery=1i,seq=1i 1732590000000000000",
             special[i]);
    reject(line, PROTOCOL_OUT_OF_RANGE, "temperature");
  }
  reject("{\"device\":\"7\",\"seq\":NaN,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":-1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":-1,\"temperature\":1,\"humidity\":1,\"battery\":1}", PROTOCOL_OUT_OF_RANGE,
         "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i -1", PROTOCOL_OUT_OF_RANGE, "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=-1i,seq=1i 1732590000000000000", PROTOCOL_OUT_OF_RANGE,
         "battery");

  /* missing_field: each in turn, reported in the fixed order */
  reject("{}", PROTOCOL_MISSING_FIELD, "device");
  reject("{\"device\":\"7\",\"seq\":1,\"temperature\":1,\"humidity\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD, "ts");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"humidity\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD,
         "temperature");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD,
         "humidity");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1}", PROTOCOL_MISSING_FIELD,
         "battery");
  reject("{\"type\":\"health\",\"uptime_s\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD, "id");
  reject("{\"type\":\"health\",\"id\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD, "uptime_s");
  reject("{\"type\":\"health\",\"id\":1,\"uptime_s\":1}", PROTOCOL_MISSING_FIELD, "battery");
  reject("{\"type\":\"health\"}", PROTOCOL_MISSING_FIELD, "id");
  reject("{\"battery\":1}", PROTOCOL_MISSING_FIELD, "device");
  reject("telemetry temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_MISSING_FIELD, "device");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i", PROTOCOL_MISSING_FIELD, "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i  ", PROTOCOL_MISSING_FIELD, "ts");
  reject("telemetry,device=7 humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_MISSING_FIELD, "temperature");

  /* unknown_field */
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,\"pressure\":"
         "1013}",
         PROTOCOL_UNKNOWN_FIELD, "");
  reject("{\"Device\":\"7\"}", PROTOCOL_UNKNOWN_FIELD, "");
  reject("{\"devic\\u0065\":\"7\"}", PROTOCOL_UNKNOWN_FIELD, ""); /* names are not unescaped */
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,\"id\":4}",
         PROTOCOL_UNKNOWN_FIELD, "id");
  reject("{\"device\":\"7\",\"type\":\"health\",\"id\":42,\"uptime_s\":1,\"battery\":1}", PROTOCOL_UNKNOWN_FIELD,
         "device");
  reject("telemetry,device=7,site=x temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000",
         PROTOCOL_UNKNOWN_FIELD, "");
  reject("telemetry,seq=7 temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_UNKNOWN_FIELD,
         "seq");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i,pressure=1013 1", PROTOCOL_UNKNOWN_FIELD, "");
  reject("telemetry,device=7 device=7i,temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000",
         PROTOCOL_UNKNOWN_FIELD, "device");
  reject("telemetry,device=7 ts=1i,temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000",
         PROTOCOL_UNKNOWN_FIELD, "ts");

  /* duplicate_field */
  reject("{\"device\":\"7\",\"device\":\"7\"}", PROTOCOL_DUPLICATE_FIELD, "device");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,\"seq\":1}",
         PROTOCOL_DUPLICATE_FIELD, "seq");
  reject("telemetry,device=7,device=8 temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000",
         PROTOCOL_DUPLICATE_FIELD, "device");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i,seq=2i 1732590000000000000",
         PROTOCOL_DUPLICATE_FIELD, "seq");

  /* wrong_type */
  static const char *const wrong[] = {"\"21.5\"", "true", "false", "null", "{}", "[21.5]"};
  for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
    char line[256];
    snprintf(line, sizeof line,
             "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":%s,\"humidity\":1,\"battery\":1}",
             wrong[i]);
    reject(line, PROTOCOL_WRONG_TYPE, "temperature");
  }
  reject("{\"device\":null}", PROTOCOL_WRONG_TYPE, "device");
  reject("{\"device\":[7]}", PROTOCOL_WRONG_TYPE, "device");
  reject("{\"type\":1}", PROTOCOL_WRONG_TYPE, "type");
  reject("{\"seq\":\"1\"}", PROTOCOL_WRONG_TYPE, "seq");
  static const char *const lp_wrong[] = {"\"21.5\"", "t", "T",     "true",  "True", "TRUE",
                                         "f",        "F", "false", "False", "FALSE"};
  for (size_t i = 0; i < sizeof lp_wrong / sizeof *lp_wrong; i++) {
    char line[256];
    snprintf(line, sizeof line, "telemetry,device=7 temperature=%s,humidity=1,battery=1i,seq=1i 1732590000000000000",
             lp_wrong[i]);
    reject(line, PROTOCOL_WRONG_TYPE, "temperature");
  }

  /* unknown_type */
  reject("{\"type\":\"error\",\"reason\":\"malformed\",\"line\":1}", PROTOCOL_UNKNOWN_TYPE, "type");
  reject("{\"type\":\"reading\",\"device\":\"7\"}", PROTOCOL_UNKNOWN_TYPE, "type");
  reject("weather,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_UNKNOWN_TYPE, "");
  reject("Telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_UNKNOWN_TYPE,
         "");
  reject("hello", PROTOCOL_UNKNOWN_TYPE, "");
}
END_TEST

START_TEST(test_protocol_first_problem_wins) {
  protocol_msg m;
  protocol_error e;
  /* The bad number comes before the unknown field. */
  const char *s = "{\"device\":\"7\",\"seq\":x,\"pressure\":1}";
  ck_assert_int_eq(parse(s, &m, &e), -PROTOCOL_BAD_NUMBER);
  ck_assert_uint_eq(e.offset, 20);
  /* Fields that do not belong to the kind are found once the line is
   * read, and the first of them in the line is named. */
  s = "{\"uptime_s\":1,\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,"
      "\"id\":2}";
  ck_assert_int_eq(parse(s, &m, &e), -PROTOCOL_UNKNOWN_FIELD);
  ck_assert_str_eq(e.field, "uptime_s");
  ck_assert_uint_eq(e.offset, 1);
}
END_TEST

START_TEST(test_protocol_boundaries) {
  struct {
    const char *temperature, *humidity, *battery;
    int ok;
  } cases[] = {
      {"-50", "0", "0", 1},
      {"150", "100", "100", 1},
      {"-50.0", "0.0", "0", 1},
      {"150.0", "100.0", "100", 1},
      {"-0", "-0", "-0", 1},
      {"-50.000001", "1", "1", 0},
      {"150.000001", "1", "1", 0},
      {"1", "-0.0000001", "1", 0},
      {"1", "100.00000000001", "1", 0},
      {"1", "1", "101", 0},
      {"1", "1", "-1", 0},
      {"-5e1", "1e2", "1", 1},
      {"1.5e2", "1", "1", 1},
      {"1.500000000000001e2", "1", "1", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char line[256];
    protocol_msg m;
    protocol_error e;
    snprintf(line, sizeof line,
             "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":%s,\"humidity\":%s,\"battery\":%s}",
             cases[i].temperature, cases[i].humidity, cases[i].battery);
    int r = parse(line, &m, &e);
    ck_assert_msg(cases[i].ok ? r == 0 : r == -PROTOCOL_OUT_OF_RANGE, "%s: %s", line, protocol_reason_name(r));
    snprintf(line, sizeof line, "telemetry,device=7 temperature=%s,humidity=%s,battery=%si,seq=1i 1732590000000000000",
             cases[i].temperature, cases[i].humidity, cases[i].battery);
    r = parse(line, &m, &e);
    ck_assert_msg(cases[i].ok ? r == 0 : r == -PROTOCOL_OUT_OF_RANGE, "%s: %s", line, protocol_reason_name(r));
  }
  protocol_msg m;
  protocol_error e;
  /* seq: optional (the gateway numbers a reading without one), else
   * 0 .. 2^63 - 1, what SQL's signed 64-bit integers hold. */
  accept_reading("{\"device\":\"7\",\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}", &m);
  ck_assert_uint_eq(m.reading.seq, READING_SEQ_NONE);
  accept_reading("telemetry,device=7 temperature=1,humidity=1,battery=1i 1732590000000000000", &m);
  ck_assert_uint_eq(m.reading.seq, READING_SEQ_NONE);
  accept_reading("{\"device\":\"7\",\"seq\":9223372036854775807,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,"
                 "\"battery\":1}",
                 &m);
  ck_assert_uint_eq(m.reading.seq, INT64_MAX);
  reject("{\"device\":\"7\",\"seq\":9223372036854775808,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,"
         "\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":18446744073709551615,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,"
         "\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  accept_reading("{\"device\":\"7\",\"seq\":0,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
                 &m);
  ck_assert_uint_eq(m.reading.seq, 0);
  accept_reading("{\"device\":\"7\",\"seq\":-0,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
                 &m);
  ck_assert_uint_eq(m.reading.seq, 0);
  reject("{\"device\":\"7\",\"seq\":18446744073709551616,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,"
         "\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":99999999999999999999,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,"
         "\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":100000000000000000000,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,"
         "\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  accept_reading("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=9223372036854775807u 1732590000000000000",
                 &m);
  ck_assert_uint_eq(m.reading.seq, INT64_MAX);
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=18446744073709551615u 1732590000000000000",
         PROTOCOL_OUT_OF_RANGE, "seq");
  /* ts: year 2000 .. year 9999 in ms; in ns from year 2000 to the top of
   * int64. Seconds sent for milliseconds fall below 2000. */
  accept_reading("{\"device\":\"7\",\"seq\":1,\"ts\":946684800000,\"temperature\":1,\"humidity\":1,\"battery\":1}", &m);
  ck_assert_int_eq(m.reading.ts_ms, PROTOCOL_TS_MS_MIN);
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":946684799999,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "ts");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "ts");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":0,\"temperature\":1,\"humidity\":1,\"battery\":1}", PROTOCOL_OUT_OF_RANGE,
         "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 946684799999999999", PROTOCOL_OUT_OF_RANGE,
         "ts");
  accept_reading("{\"device\":\"7\",\"seq\":1,\"ts\":253402300799999,\"temperature\":1,\"humidity\":1,\"battery\":1}",
                 &m);
  ck_assert_int_eq(m.reading.ts_ms, PROTOCOL_TS_MS_MAX);
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":253402300800000,\"temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "ts");
  accept_reading("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 9223372036854775807", &m);
  ck_assert_int_eq(m.reading.ts_ms, INT64_MAX / 1000000);
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 9223372036854775808", PROTOCOL_OUT_OF_RANGE,
         "ts");
  /* health: all of uint64 for id and uptime, battery 0..100 */
  ck_assert_int_eq(parse("{\"type\":\"health\",\"id\":18446744073709551615,\"uptime_s\":0,\"battery\":100}", &m, &e),
                   0);
  ck_assert_uint_eq(m.health.id, UINT64_MAX);
  reject("{\"type\":\"health\",\"id\":1,\"uptime_s\":0,\"battery\":101}", PROTOCOL_OUT_OF_RANGE, "battery");
  reject("{\"type\":\"health\",\"id\":-1,\"uptime_s\":0,\"battery\":1}", PROTOCOL_OUT_OF_RANGE, "id");
}
END_TEST

START_TEST(test_protocol_oversized) {
  char line[PROTOCOL_LINE_MAX_DEFAULT + 2];
  size_t n = strlen(TCPGEN_JSON);
  protocol_msg m;
  protocol_error e;
  /* Exactly the limit, padded with blanks: accepted. */
  memset(line, ' ', sizeof line);
  memcpy(line, TCPGEN_JSON, n);
  ck_assert_int_eq(parse_n(line, PROTOCOL_LINE_MAX_DEFAULT, 0, &m, &e), 0);
  expect_tcpgen_values(&m);
  ck_assert_int_eq(parse_n(line, PROTOCOL_LINE_MAX_DEFAULT + 1, 0, &m, &e), -PROTOCOL_OVERSIZED);
  ck_assert_int_eq(e.reason, PROTOCOL_OVERSIZED);
  ck_assert_uint_eq(e.offset, PROTOCOL_LINE_MAX_DEFAULT);
  /* Even garbage is oversized first. */
  memset(line, 0xff, sizeof line);
  ck_assert_int_eq(parse_n(line, PROTOCOL_LINE_MAX_DEFAULT + 1, 0, &m, &e), -PROTOCOL_OVERSIZED);
  /* Another limit. */
  ck_assert_int_eq(parse_n(TCPGEN_JSON, n, n, &m, &e), 0);
  ck_assert_int_eq(parse_n(TCPGEN_JSON, n, n - 1, &m, &e), -PROTOCOL_OVERSIZED);
}
END_TEST

/* Conversions to double match strtod, which rounds correctly, on the fast
 * path and off it. */
START_TEST(test_protocol_numbers_exact) {
  static const char *const texts[] = {
      "21.5",
      "48.2",
      "0.1",
      "0.2",
      "0.3",
      "99.99999999999999",
      "1e-5",
      "1.5e1",
      "123456789012345678e-16",
      "1234567890123456789e-17",
      "12345678901234567890e-18",
      "0.000000000000000000000000000001",
      "149.99999999999999999999999999999999999999999999",
      "9007199254740993e-14",
      "0.1e1",
      "100e-0",
      "-49.999999999999999",
      "3.0000000000000004",
      "2.2250738585072014e-308",
      "4.9e-324",
      "1e-400",
      "0.00000000000000000000000000000000000000000000000000000000000000001234",
      "14.999999999999998223643160599749535322189331054687500000001",
  };
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    char line[512];
    protocol_msg m;
    protocol_error e;
    snprintf(line, sizeof line,
             "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":%s,\"humidity\":1,\"battery\":1}",
             texts[i]);
    ck_assert_int_eq(parse(line, &m, &e), 0);
    ck_assert_msg(m.reading.temperature == strtod(texts[i], NULL), "%s: %.17g, strtod %.17g", texts[i],
                  m.reading.temperature, strtod(texts[i], NULL));
  }
}
END_TEST

static uint64_t seed_from_env(const char *test) {
  const char *env = getenv("PROTOCOL_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
  printf("%s: seed %" PRIu64 " (PROTOCOL_SEED=%" PRIu64 " replays it)\n", test, seed, seed);
  fflush(stdout);
  return seed;
}

static long iterations(void) {
  const char *env = getenv("PROTOCOL_ITERATIONS");
  long n = env ? atol(env) : 0;
  return n > 0 ? n : 100000;
}

static uint64_t next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double unit(uint64_t *s) { return (double)(next(s) >> 11) * 0x1.0p-53; }

/* Random readings written by protocol_format_reading come back exactly,
 * and random decimal texts convert as strtod does. */
START_TEST(test_protocol_round_trip) {
  uint64_t s = seed_from_env("round_trip");
  static const char ids[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-";
  long n_iter = iterations() / 10;
  for (long i = 0; i < n_iter; i++) {
    reading r = {
        .battery = (uint32_t)(next(&s) % 101),
        .seq = (next(&s) >> 1) >> (next(&s) % 64), /* 0 .. PROTOCOL_SEQ_MAX */
        .ts_ms = PROTOCOL_TS_MS_MIN + (int64_t)(next(&s) % (uint64_t)(INT64_MAX / 1000000 - PROTOCOL_TS_MS_MIN + 1)),
        .temperature = -50 + 200 * unit(&s),
        .humidity = i % 7 ? 100 * unit(&s) : (double)(next(&s) % 101),
    };
    if (i % 5 == 0) r.temperature = round(r.temperature * 10) / 10; /* what sensors send */
    char id[PROTOCOL_DEVICE_ID_MAX + 1];
    size_t idlen = 1 + next(&s) % PROTOCOL_DEVICE_ID_MAX;
    for (size_t k = 0; k < idlen; k++) id[k] = ids[next(&s) % (sizeof ids - 1)];
    id[idlen] = '\0';
    for (int f = PROTOCOL_JSON; f <= PROTOCOL_LINE; f++) {
      char line[256];
      protocol_msg m;
      protocol_error e;
      int n = protocol_format_reading(line, sizeof line, (protocol_format)f, id, &r);
      ck_assert_int_gt(n, 0);
      ck_assert_int_eq(line[n - 1], '\n');
      ck_assert_msg(parse_n(line, (size_t)n - 1, 0, &m, &e) == 0, "%s: %s", line, protocol_reason_name(e.reason));
      ck_assert_int_eq(m.format, f);
      ck_assert_str_eq(m.device.text, id);
      ck_assert_uint_eq(m.reading.seq, r.seq);
      ck_assert_int_eq(m.reading.ts_ms, r.ts_ms);
      ck_assert_uint_eq(m.reading.battery, r.battery);
      ck_assert_msg(m.reading.temperature == r.temperature, "%s", line);
      ck_assert_msg(m.reading.humidity == r.humidity, "%s", line);
    }
    /* A random decimal text in range: digits, a point, maybe an exponent. */
    char num[64];
    int digits = 1 + (int)(next(&s) % 25), point = (int)(next(&s) % (uint64_t)(digits + 1));
    size_t k = 0;
    for (int d = 0; d < digits; d++) {
      if (d == point && d > 0) num[k++] = '.';
      num[k++] = (char)((d == 0 ? '1' : '0') + (int)(next(&s) % (d == 0 ? 9 : 10)));
    }
    num[k] = '\0';
    double want = strtod(num, NULL);
    if (next(&s) % 3 == 0) {
      int ex = (int)(next(&s) % 40) - 30;
      snprintf(num + k, sizeof num - k, "e%d", ex);
      want = strtod(num, NULL);
    }
    if (!(want >= 0 && want <= 100)) continue;
    char line[256];
    protocol_msg m;
    protocol_error e;
    snprintf(line, sizeof line, "telemetry,device=7 humidity=%s,temperature=1,battery=1i,seq=1i 1732590000000000000",
             num);
    ck_assert_msg(parse(line, &m, &e) == 0, "%s: %s", line, protocol_reason_name(e.reason));
    ck_assert_msg(m.reading.humidity == want, "%s: %.17g, strtod %.17g", num, m.reading.humidity, want);
  }
}
END_TEST

/* Accepted values always obey the rules, whatever the input. */
static void check_accepted(const char *line, size_t len, const protocol_msg *m) {
  if (m->kind == PROTOCOL_BLANK) return;
  if (m->kind == PROTOCOL_HEALTH) {
    ck_assert_uint_le(m->health.battery, PROTOCOL_BATTERY_MAX);
  } else if (m->kind == PROTOCOL_HELLO) {
    ck_assert_uint_le(m->hello.token_len, PROTOCOL_TOKEN_MAX);
    ck_assert_uint_eq(strlen(m->hello.token), m->hello.token_len);
    for (size_t i = 0; i < m->hello.token_len; i++)
      ck_assert(m->hello.token[i] > 0x20 && m->hello.token[i] < 0x7f && m->hello.token[i] != '"' &&
                m->hello.token[i] != '\\');
  } else {
    ck_assert_int_eq(m->kind, PROTOCOL_READING);
    const reading *r = &m->reading;
    ck_assert_msg(r->temperature >= PROTOCOL_TEMPERATURE_MIN && r->temperature <= PROTOCOL_TEMPERATURE_MAX, "%.*s",
                  (int)len, line);
    ck_assert_msg(r->humidity >= PROTOCOL_HUMIDITY_MIN && r->humidity <= PROTOCOL_HUMIDITY_MAX, "%.*s", (int)len, line);
    ck_assert_uint_le(r->battery, PROTOCOL_BATTERY_MAX);
    ck_assert_int_ge(r->ts_ms, 0);
    ck_assert_uint_ge(m->device.len, 1);
    ck_assert_uint_le(m->device.len, PROTOCOL_DEVICE_ID_MAX);
    ck_assert_uint_eq(strlen(m->device.text), m->device.len);
    for (size_t i = 0; i < m->device.len; i++)
      ck_assert_msg(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-", m->device.text[i]),
                    "%s", m->device.text);
  }
  /* An accepted JSON line is JSON, with the same values. */
  if (m->format == PROTOCOL_JSON) {
    cJSON *j = cJSON_ParseWithLength(line, len);
    ck_assert_msg(j != NULL, "accepted but not JSON: %.*s", (int)len, line);
    if (m->kind == PROTOCOL_READING) {
      cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "temperature");
      ck_assert_msg(cJSON_IsNumber(t) && t->valuedouble == m->reading.temperature, "%.*s", (int)len, line);
      cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "device");
      ck_assert(cJSON_IsString(d) || cJSON_IsNumber(d));
      if (cJSON_IsString(d)) ck_assert_str_eq(d->valuestring, m->device.text);
    }
    cJSON_Delete(j);
  }
}

/* Seeded random mutations of valid lines never crash, never read past
 * the line, and never get an out-of-range value accepted. */
START_TEST(test_protocol_fuzz_mutations) {
  uint64_t s = seed_from_env("fuzz_mutations");
  static const char *const seeds[] = {
      "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}",
      "{\"device\":7,\"seq\":123,\"ts\":1732590000123,\"temperature\":-49.9,\"humidity\":0,\"battery\":100}",
      "{\"type\":\"health\",\"id\":42,\"uptime_s\":3600,\"battery\":87}",
      "{\"type\":\"hello\",\"token\":\"k3y\",\"acks\":true}",
      "telemetry,device=7 temperature=21.5,humidity=48.2,battery=87i,seq=123i 1732590000123000000",
      "telemetry,device=abc temperature=149.99,humidity=99.9e0,battery=0i,seq=0i 0",
  };
  static const char *const tokens[] = {
      "\"",
      "\\",
      "{",
      "}",
      ",",
      ":",
      "=",
      " ",
      "\t",
      "-",
      ".",
      "e",
      "E+",
      "9",
      "0",
      "i",
      "u",
      "nan",
      "inf",
      "1e308",
      "1e-400",
      "99999999999999999999",
      "\xc3\xa9",
      "\xff",
      "\xe2\x82",
      "\xed\xa0\x80",
      "\xf4\x90\x80\x80",
      "\"device\":",
      "\"seq\":",
      "\"type\":\"health\"",
      "true",
      "null",
      "[",
      "]",
      "\\u00",
      "#",
      "\r",
      "\n",
      "\0",
      "151",
      "-51",
      "101",
      "100.0000001",
      ",device=1",
      "temperature=",
      "telemetry",
  };
  char buf[1024];
  long accepted = 0, rejected[PROTOCOL_REASON_COUNT] = {0};
  long n_iter = iterations();
  for (long iter = 0; iter < n_iter; iter++) {
    const char *base = seeds[next(&s) % (sizeof seeds / sizeof *seeds)];
    size_t len = strlen(base);
    memcpy(buf, base, len);
    int rounds = 1 + (int)(next(&s) % 4);
    for (int k = 0; k < rounds; k++) {
      size_t at = len ? next(&s) % (len + 1) : 0;
      switch (next(&s) % 6) {
      case 0: /* flip a byte */
        if (at < len) buf[at] = (char)next(&s);
        break;
      case 1: /* delete a span */
        if (at < len) {
          size_t n = 1 + next(&s) % 8;
          if (n > len - at) n = len - at;
          memmove(buf + at, buf + at + n, len - at - n);
          len -= n;
        }
        break;
      case 2: /* insert a token */
      case 3: {
        const char *t = tokens[next(&s) % (sizeof tokens / sizeof *tokens)];
        size_t n = strlen(t) ? strlen(t) : 1;
        if (len + n < sizeof buf) {
          memmove(buf + at + n, buf + at, len - at);
          memcpy(buf + at, t, n);
          len += n;
        }
        break;
      }
      case 4: /* replace a digit */
        if (at < len && buf[at] >= '0' && buf[at] <= '9') buf[at] = (char)('0' + next(&s) % 10);
        break;
      default: /* truncate */ len = at; break;
      }
    }
    protocol_msg m;
    protocol_error e;
    int r = parse_n(buf, len, 0, &m, &e);
    if (r == 0) {
      accepted++;
      check_accepted(buf, len, &m);
    } else {
      ck_assert_int_lt(r, 0);
      ck_assert_int_lt(-r, PROTOCOL_REASON_COUNT);
      ck_assert_int_eq(e.reason, -r);
      ck_assert_uint_le(e.offset, len);
      rejected[-r]++;
    }
  }
  printf("fuzz_mutations: %ld accepted", accepted);
  for (int i = 1; i < PROTOCOL_REASON_COUNT; i++) printf(", %ld %s", rejected[i], protocol_reason_name(i));
  printf("\n");
  /* Every reason but oversized came up. */
  for (int i = 1; i < PROTOCOL_REASON_COUNT; i++)
    if (i != PROTOCOL_OVERSIZED) ck_assert_msg(rejected[i] > 0, "no %s", protocol_reason_name(i));
  ck_assert_int_gt(accepted, 0);
}
END_TEST

/* Random bytes, and random bytes after a valid opening. */
START_TEST(test_protocol_fuzz_random_bytes) {
  uint64_t s = seed_from_env("fuzz_random_bytes");
  char buf[300];
  long n_iter = iterations();
  for (long iter = 0; iter < n_iter; iter++) {
    size_t len = next(&s) % sizeof buf, start = 0;
    if (iter % 2) {
      const char *open = iter % 4 == 1 ? "{\"device\":\"" : "telemetry,device=";
      start = strlen(open);
      memcpy(buf, open, start);
      if (len < start) len = start;
    }
    for (size_t i = start; i < len; i++) {
      uint64_t v = next(&s);
      buf[i] = v % 4 ? (char)(' ' + v % 95) : (char)(v >> 8); /* mostly printable */
    }
    protocol_msg m;
    protocol_error e;
    int r = parse_n(buf, len, 0, &m, &e);
    if (r == 0)
      check_accepted(buf, len, &m);
    else
      ck_assert_uint_le(e.offset, len);
  }
}
END_TEST

/* The humidity field of a reading holding text, parsed; 0 or the reason. */
static int humidity_of(const char *text, double *out) {
  char line[2048];
  protocol_msg m;
  protocol_error e;
  int n = snprintf(line, sizeof line,
                   "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":0,\"humidity\":%s,\"battery\":1}",
                   text);
  ck_assert_int_lt(n, (int)sizeof line);
  int r = parse_n(line, (size_t)n, sizeof line, &m, &e);
  *out = m.reading.humidity;
  return r;
}

/* text converts exactly as strtod does, bit for bit. */
static void same_as_strtod(const char *text) {
  double got, want = strtod(text, NULL);
  ck_assert_msg(humidity_of(text, &got) == 0, "rejected: %s", text);
  ck_assert_msg(memcmp(&got, &want, sizeof got) == 0, "%s: got %a, strtod %a", text, got, want);
}

/* The exact decimal of a long double (glibc prints every digit), without
 * trailing zeros: a midpoint between two doubles is exact in x87's 64-bit
 * mantissa. */
static void exact_decimal(char *buf, size_t cap, long double v) {
  int n = snprintf(buf, cap, "%.800Le", v);
  ck_assert_int_lt(n, (int)cap);
  char *e = strchr(buf, 'e'), *z = e;
  while (z[-1] == '0') z--;
  if (z[-1] == '.') z--;
  memmove(z, e, strlen(e) + 1);
}

/* Decimals strtod rounds correctly and a short cut would not: exactly
 * halfway between two doubles (ties to even), a hair above or below
 * halfway after more than 40 digits, subnormals, and random texts of up to
 * 60 digits; replay with PROTOCOL_SEED. */
START_TEST(test_protocol_numbers_differential) {
  ck_assert_msg(sizeof(long double) > sizeof(double) && LDBL_MANT_DIG >= 64, "needs x87 long double");
  uint64_t s = seed_from_env("numbers_differential");
  static char text[1024], tail[1100];
  /* The fixed hard cases: halfway below the least subnormal, and at the
   * least normal. */
  exact_decimal(text, sizeof text, (long double)0x1p-1075L);
  same_as_strtod(text);
  exact_decimal(text, sizeof text, (long double)0x1p-1022L - (long double)0x1p-1075L);
  same_as_strtod(text);
  long n = iterations() / 10;
  for (long i = 0; i < n; i++) {
    double d;
    if (i % 4 == 0) { /* a subnormal */
      uint64_t bits = next(&s) & ((UINT64_C(1) << 52) - 1);
      memcpy(&d, &bits, sizeof d);
    } else {
      d = unit(&s) * 100.0;
    }
    double up = nextafter(d, 200.0);
    if (up > 100.0) continue;
    long double mid = ((long double)d + (long double)up) / 2;
    exact_decimal(text, sizeof text, mid);
    ck_assert_uint_gt(strlen(text), 20);
    same_as_strtod(text); /* exactly halfway */
    /* A nonzero digit far past the halfway point's last one: just above. */
    char *e = strchr(text, 'e');
    snprintf(tail, sizeof tail, "%.*s%s0000000000000000000001%s", (int)(e - text), text, strchr(text, '.') ? "" : ".",
             e);
    same_as_strtod(tail);
    /* And just below: the last digit one less, then nines. */
    snprintf(tail, sizeof tail, "%.*s", (int)(e - text), text);
    size_t k = strlen(tail);
    if (tail[k - 1] > '0' && tail[k - 1] <= '9' && strchr(tail, '.')) {
      tail[k - 1]--;
      snprintf(tail + k, sizeof tail - k, "99999999999999999999%s", e);
      same_as_strtod(tail);
    }
    /* Random digits: up to 60 of them, a point anywhere, an exponent. */
    int digits = 1 + (int)(next(&s) % 60), point = (int)(next(&s) % (uint64_t)digits);
    size_t at = 0;
    for (int j = 0; j < digits; j++) {
      text[at++] = (char)('0' + (j == 0 ? 1 + next(&s) % 9 : next(&s) % 10));
      if (j == point && j + 1 < digits) text[at++] = '.';
    }
    snprintf(text + at, sizeof text - at, "e%d", -(int)(next(&s) % 340));
    double v = strtod(text, NULL);
    if (v <= 100.0) same_as_strtod(text);
  }
}
END_TEST

START_TEST(test_protocol_writers) {
  char buf[256];
  ck_assert_int_eq(protocol_format_health_request(buf, sizeof buf, 42), 26);
  ck_assert_str_eq(buf, "{\"type\":\"health\",\"id\":42}\n");
  ck_assert_int_eq(protocol_format_error(buf, sizeof buf, -PROTOCOL_OUT_OF_RANGE, 17), 51);
  ck_assert_str_eq(buf, "{\"type\":\"error\",\"reason\":\"out_of_range\",\"line\":17}\n");
  ck_assert_int_eq(protocol_format_error(buf, 10, PROTOCOL_MALFORMED, 1), -ENOSPC);
  /* The gateway's own lines, read back by a device, are valid JSON. */
  protocol_format_health_request(buf, sizeof buf, UINT64_MAX);
  cJSON *j = cJSON_Parse(buf);
  ck_assert_ptr_nonnull(j);
  cJSON_Delete(j);
  /* A device's reply parses as one. */
  protocol_health_reply h = {.id = 42, .uptime_s = 3600, .battery = 87};
  int n = protocol_format_health_reply(buf, sizeof buf, &h);
  ck_assert_int_gt(n, 0);
  protocol_msg m;
  protocol_error e;
  ck_assert_int_eq(parse_n(buf, (size_t)n - 1, 0, &m, &e), 0);
  ck_assert_int_eq(m.kind, PROTOCOL_HEALTH);
  ck_assert_uint_eq(m.health.id, 42);
  /* tcpgen's exact lines. */
  reading r = {.battery = 87, .seq = 123, .ts_ms = 1732590000123, .temperature = 21.5, .humidity = 48.2};
  ck_assert_int_gt(protocol_format_reading(buf, sizeof buf, PROTOCOL_JSON, "7", &r), 0);
  ck_assert_str_eq(buf, "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.5,\"humidity\":48.2,"
                        "\"battery\":87}\n");
  ck_assert_int_gt(protocol_format_reading(buf, sizeof buf, PROTOCOL_LINE, "7", &r), 0);
  ck_assert_str_eq(buf, "telemetry,device=7 temperature=21.5,humidity=48.2,battery=87i,seq=123i "
                        "1732590000123000000\n");
  ck_assert_int_eq(protocol_format_reading(buf, sizeof buf, PROTOCOL_JSON, "a b", &r), -EINVAL);
  ck_assert_int_eq(protocol_format_reading(buf, sizeof buf, PROTOCOL_JSON, "", &r), -EINVAL);
  ck_assert_int_eq(protocol_format_reading(buf, 20, PROTOCOL_JSON, "7", &r), -ENOSPC);
}
END_TEST

START_TEST(test_protocol_reason_names) {
  static const char *const names[] = {
      "ok",           "malformed",     "oversized",     "not_utf8",        "bad_number",
      "out_of_range", "missing_field", "unknown_field", "duplicate_field", "bad_device_id",
      "wrong_type",   "unknown_type",  "bad_token"};
  ck_assert_int_eq(PROTOCOL_REASON_COUNT, sizeof names / sizeof *names);
  for (int i = 0; i < PROTOCOL_REASON_COUNT; i++) {
    ck_assert_str_eq(protocol_reason_name(i), names[i]);
    ck_assert_str_eq(protocol_reason_name(-i), names[i]);
    ck_assert_ptr_nonnull(protocol_reason_text(i));
  }
  ck_assert_str_eq(protocol_reason_name(PROTOCOL_REASON_COUNT), "unknown");
  ck_assert_str_eq(protocol_reason_name(-1000), "unknown");
}
END_TEST

/* The InfluxDB write API's lines: the timestamp in each precision, a
 * point without one measured at the time given, nothing but line
 * protocol. */
START_TEST(test_protocol_influx_precision) {
  static const struct {
    protocol_precision precision;
    const char *ts;
  } cases[] = {
      {PROTOCOL_NS, "1732590000123456789"}, {PROTOCOL_US, "1732590000123456"}, {PROTOCOL_MS, "1732590000123"},
      {PROTOCOL_S, "1732590000"},           {PROTOCOL_MIN, "28876500"},        {PROTOCOL_H, "481275"},
  };
  static const int64_t want[] = {1732590000123, 1732590000123, 1732590000123,
                                 1732590000000, 1732590000000, 1732590000000};
  char line[200];
  protocol_msg m;
  protocol_error e;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int n = snprintf(line, sizeof line, "telemetry,device=7 temperature=1,humidity=2,battery=3i %s", cases[i].ts);
    ck_assert_int_eq(protocol_parse_influx(line, (size_t)n, 0, cases[i].precision, -1, &m, &e), 0);
    ck_assert_int_eq(m.reading.ts_ms, want[i]);
    ck_assert_uint_eq(m.reading.seq, READING_SEQ_NONE);
  }
  /* Seconds where nanoseconds are expected: before 2000, refused. */
  static const char secs[] = "telemetry,device=7 temperature=1,humidity=2,battery=3i 1732590000";
  ck_assert_int_eq(protocol_parse_influx(secs, sizeof secs - 1, 0, PROTOCOL_NS, -1, &m, &e), -PROTOCOL_OUT_OF_RANGE);
  ck_assert_str_eq(e.field, "ts");
  /* Hours past int64 nanoseconds: refused, not wrapped. */
  static const char far[] = "telemetry,device=7 temperature=1,humidity=2,battery=3i 9223372036854775807";
  ck_assert_int_eq(protocol_parse_influx(far, sizeof far - 1, 0, PROTOCOL_H, -1, &m, &e), -PROTOCOL_OUT_OF_RANGE);
  /* No timestamp: the time of arrival, or missing when none is given. */
  static const char none[] = "telemetry,device=7 temperature=1,humidity=2,battery=3i";
  ck_assert_int_eq(protocol_parse_influx(none, sizeof none - 1, 0, PROTOCOL_NS, 1732590009999, &m, &e), 0);
  ck_assert_int_eq(m.reading.ts_ms, 1732590009999);
  ck_assert_int_eq(protocol_parse_influx(none, sizeof none - 1, 0, PROTOCOL_NS, -1, &m, &e), -PROTOCOL_MISSING_FIELD);
  /* JSON is the device port's, not the write API's. */
  static const char json[] = "{\"device\":\"7\",\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}";
  ck_assert_int_eq(protocol_parse_influx(json, sizeof json - 1, 0, PROTOCOL_MS, -1, &m, &e), -PROTOCOL_MALFORMED);
  static const char blank[] = "# a comment";
  ck_assert_int_eq(protocol_parse_influx(blank, sizeof blank - 1, 0, PROTOCOL_MS, -1, &m, &e), 0);
  ck_assert_int_eq(m.kind, PROTOCOL_BLANK);
}
END_TEST

int main(void) {
  Suite *s = suite_create("protocol");
  tg_test_add(s, "json_tcpgen_shape", test_protocol_json_tcpgen_shape, 10);
  tg_test_add(s, "json_device_number_order_whitespace", test_protocol_json_device_number_order_whitespace, 10);
  tg_test_add(s, "json_health_reply", test_protocol_json_health_reply, 10);
  tg_test_add(s, "json_hello", test_protocol_json_hello, 10);
  tg_test_add(s, "line_shapes", test_protocol_line_shapes, 10);
  tg_test_add(s, "blank_lines", test_protocol_blank_lines, 10);
  tg_test_add(s, "device_ids", test_protocol_device_ids, 10);
  tg_test_add(s, "rejections", test_protocol_rejections, 10);
  tg_test_add(s, "first_problem_wins", test_protocol_first_problem_wins, 10);
  tg_test_add(s, "boundaries", test_protocol_boundaries, 10);
  tg_test_add(s, "oversized", test_protocol_oversized, 10);
  tg_test_add(s, "numbers_exact", test_protocol_numbers_exact, 10);
  tg_test_add(s, "numbers_differential", test_protocol_numbers_differential, 60);
  tg_test_add(s, "round_trip", test_protocol_round_trip, 60);
  tg_test_add(s, "fuzz_mutations", test_protocol_fuzz_mutations, 90);
  tg_test_add(s, "fuzz_random_bytes", test_protocol_fuzz_random_bytes, 90);
  tg_test_add(s, "writers", test_protocol_writers, 10);
  tg_test_add(s, "reason_names", test_protocol_reason_names, 10);
  tg_test_add(s, "influx_precision", test_protocol_influx_precision, 10);
  return tg_test_main(s);
}
