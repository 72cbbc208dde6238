/* test-protocol.c - the device line protocol: every accepted shape (the
 * article's readings, any measurement, field types and tags, the JSON of
 * Telegraf, Fluent Bit and flat objects), every rejection the parser
 * makes, the boundaries, exact number conversion, round trips through the
 * writers, and seeded random mutations of valid lines (replay one with
 * PROTOCOL_SEED=N; PROTOCOL_ITERATIONS=N runs the randomised tests longer
 * than the default 100,000 lines each). What a schema refuses (unknown
 * fields, ranges, types, names) is test-schema.c's. */
#include "helpers.h"
#include "protocol.h"
#include "schema.h"

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

/* The line of the last parse: a point's names and strings point into
 * it, so it is kept until the next parse. */
static char *held;

/* Parses s from an allocation of exactly its length, so that ASan sees a
 * read past the end. */
static int parse_n(const char *s, size_t len, size_t max_len, protocol_msg *m, protocol_error *e) {
  free(held);
  held = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(held);
  memcpy(held, s, len);
  memset(e, 0, sizeof *e);
  return protocol_parse_line(held, len, max_len, m, e);
}

static int parse(const char *s, protocol_msg *m, protocol_error *e) { return parse_n(s, strlen(s), 0, m, e); }

static void accept_reading(const char *s, protocol_msg *m) {
  protocol_error e;
  int r = parse(s, m, &e);
  ck_assert_msg(r == 0, "rejected (%s at %u, field %s): %s", protocol_reason_name(r), e.offset, e.field ? e.field : "-",
                s);
  ck_assert_int_eq(m->kind, PROTOCOL_READING);
}

/* The field of the point named name as written (escapes and all), or
 * NULL. */
static const protocol_field *field_of(const protocol_msg *m, const char *name) {
  size_t n = strlen(name);
  for (uint32_t i = 0; i < m->point.nfields; i++) {
    const protocol_field *f = &m->point.fields[i];
    if (f->name_len == n && memcmp(f->name, name, n) == 0) return f;
  }
  return NULL;
}

/* The value of numeric field name, which must be there. */
static double number_of(const protocol_msg *m, const char *name) {
  const protocol_field *f = field_of(m, name);
  ck_assert_msg(f != NULL, "no field %s", name);
  ck_assert_msg(f->type == FIELD_FLOAT || f->type == FIELD_INT, "%s is of type %d", name, f->type);
  return f->type == FIELD_FLOAT ? f->v.f : (double)f->v.i;
}

/* Field name holds text (FIELD_STRING or FIELD_TAG, as written). */
static void expect_text(const protocol_msg *m, const char *name, int type, const char *text) {
  const protocol_field *f = field_of(m, name);
  ck_assert_msg(f != NULL, "no field %s", name);
  ck_assert_int_eq(f->type, type);
  ck_assert_uint_eq(f->str_len, strlen(text));
  ck_assert_msg(memcmp(f->str, text, f->str_len) == 0, "%s: %.*s, want %s", name, (int)f->str_len, f->str, text);
}

static void expect_measurement(const protocol_msg *m, const char *name) {
  if (!name) {
    ck_assert_ptr_null(m->point.measurement);
    return;
  }
  ck_assert_ptr_nonnull(m->point.measurement);
  ck_assert_uint_eq(m->point.measurement_len, strlen(name));
  ck_assert(memcmp(m->point.measurement, name, m->point.measurement_len) == 0);
}

static void expect_tcpgen_values(const protocol_msg *m) {
  ck_assert_str_eq(m->device.text, "7");
  ck_assert_uint_eq(m->device.len, 1);
  ck_assert_uint_eq(m->device.is_num, 1);
  ck_assert_uint_eq(m->device.num, 7);
  ck_assert_uint_eq(m->point.seq, 123);
  ck_assert_int_eq(m->point.ts_ms, 1732590000123);
  ck_assert_uint_eq(m->point.nfields, 3);
  ck_assert_double_eq(number_of(m, "temperature"), 21.5);
  ck_assert_double_eq(number_of(m, "humidity"), 48.2);
  ck_assert_double_eq(number_of(m, "battery"), 87);
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
  ck_assert_uint_eq(m.point.json, 1);
  expect_measurement(&m, NULL); /* telemetry */
  expect_tcpgen_values(&m);
  /* JSON's numbers carry no type: a whole one is an integer, to be
   * decided by the schema; the others are floats. */
  ck_assert_int_eq(field_of(&m, "battery")->type, FIELD_INT);
  ck_assert_int_eq(field_of(&m, "temperature")->type, FIELD_FLOAT);
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
  /* Its own fields, each a non-negative integer, and nothing else; the
   * first other field in the line is the one named. */
  reject("{\"type\":\"health\",\"uptime_s\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD, "id");
  reject("{\"type\":\"health\",\"id\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD, "uptime_s");
  reject("{\"type\":\"health\",\"id\":1,\"uptime_s\":1}", PROTOCOL_MISSING_FIELD, "battery");
  reject("{\"type\":\"health\"}", PROTOCOL_MISSING_FIELD, "id");
  reject("{\"type\":\"health\",\"id\":\"1\",\"uptime_s\":1,\"battery\":1}", PROTOCOL_WRONG_TYPE, "id");
  reject("{\"type\":\"health\",\"id\":true,\"uptime_s\":1,\"battery\":1}", PROTOCOL_WRONG_TYPE, "id");
  reject("{\"type\":\"health\",\"id\":1.5,\"uptime_s\":1,\"battery\":1}", PROTOCOL_BAD_NUMBER, "id");
  reject("{\"type\":\"health\",\"id\":-1,\"uptime_s\":0,\"battery\":1}", PROTOCOL_OUT_OF_RANGE, "id");
  reject("{\"type\":\"health\",\"id\":1,\"uptime_s\":1,\"battery\":1,\"acks\":true}", PROTOCOL_UNKNOWN_FIELD, "acks");
  reject("{\"device\":\"7\",\"type\":\"health\",\"id\":42,\"uptime_s\":1,\"battery\":1}", PROTOCOL_UNKNOWN_FIELD,
         "device");
  static const char extra[] = "{\"type\":\"health\",\"zz\":1,\"id\":1,\"uptime_s\":1,\"battery\":1,\"yy\":2}";
  protocol_msg m;
  protocol_error e;
  ck_assert_int_eq(parse(extra, &m, &e), -PROTOCOL_UNKNOWN_FIELD);
  ck_assert_uint_eq(e.offset, strstr(extra, "zz") - extra);
  ck_assert_ptr_null(e.field);
  /* id and uptime take all of uint64. */
  ck_assert_int_eq(parse("{\"type\":\"health\",\"id\":18446744073709551615,\"uptime_s\":0,\"battery\":100}", &m, &e),
                   0);
  ck_assert_uint_eq(m.health.id, UINT64_MAX);
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
  reject("{\"type\":\"hello\",\"acks\":truex}", PROTOCOL_WRONG_TYPE, "");
  reject("{\"type\":\"hello\",\"id\":1}", PROTOCOL_UNKNOWN_FIELD, "id");
  reject("{\"type\":\"hello\",\"device\":\"7\"}", PROTOCOL_UNKNOWN_FIELD, "device");
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
  /* A token in a reading would be stored: refused. */
  reject("{\"device\":7,\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,\"token\":\"a\"}",
         PROTOCOL_UNKNOWN_FIELD, "token");
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

/* "type" is the health reply's and the hello's; with any other value it
 * is a field of a reading like any other, and so are the names only
 * those messages give a meaning ("acks", "id", "battery", ...). */
START_TEST(test_protocol_json_type_is_a_field) {
  protocol_msg m;
  accept_reading("{\"device\":\"7\",\"ts\":1732590000000,\"type\":\"reading\",\"v\":1}", &m);
  ck_assert_uint_eq(m.point.nfields, 2);
  expect_text(&m, "type", FIELD_STRING, "reading");
  ck_assert_double_eq(number_of(&m, "v"), 1);
  accept_reading("{\"type\":\"hullo\",\"device\":\"7\",\"ts\":1732590000000}", &m);
  expect_text(&m, "type", FIELD_STRING, "hullo");
  accept_reading(
      "{\"device\":7,\"ts\":1732590000000,\"acks\":true,\"health\":false,\"id\":4,\"uptime_s\":9,\"battery\":1}", &m);
  ck_assert_uint_eq(m.point.nfields, 5);
  ck_assert_int_eq(field_of(&m, "acks")->type, FIELD_BOOL);
  ck_assert_int_eq(field_of(&m, "acks")->v.i, 1);
  ck_assert_int_eq(field_of(&m, "health")->v.i, 0);
  /* A type that is no string is refused wherever it stands. */
  reject("{\"type\":1}", PROTOCOL_WRONG_TYPE, "type");
  reject("{\"device\":\"7\",\"ts\":1732590000000,\"type\":1}", PROTOCOL_WRONG_TYPE, "type");
  /* The other types the gateway writes are no readings of a device. */
  reject("{\"type\":\"error\",\"reason\":\"malformed\",\"line\":1}", PROTOCOL_MISSING_FIELD, "device");
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
    ck_assert_uint_eq(m.point.json, 0);
    expect_measurement(&m, "telemetry");
    expect_tcpgen_values(&m);
  }
  /* Line protocol types every value: 87 is a float, 87i an integer. */
  protocol_msg m;
  accept_reading(same[2], &m);
  ck_assert_int_eq(field_of(&m, "battery")->type, FIELD_FLOAT);
  accept_reading(TCPGEN_LINE, &m);
  ck_assert_int_eq(field_of(&m, "battery")->type, FIELD_INT);
  /* ns floored to ms. */
  accept_reading("telemetry,device=sensor-A.1:x_2 temperature=-21i,humidity=0u,battery=0i,seq=0i 946684800000999999",
                 &m);
  ck_assert_str_eq(m.device.text, "sensor-A.1:x_2");
  ck_assert_uint_eq(m.device.is_num, 0);
  ck_assert_int_eq(field_of(&m, "temperature")->type, FIELD_INT);
  ck_assert_int_eq(field_of(&m, "temperature")->v.i, -21);
  ck_assert_int_eq(field_of(&m, "humidity")->v.i, 0);
  ck_assert_int_eq(m.point.ts_ms, PROTOCOL_TS_MS_MIN); /* ns: the remainder dropped */
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
  accept_reading("{\"device\":\"az_AZ-09.:bcdefghijklmnopqrstuvw\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1}",
                 &m);
  ck_assert_uint_eq(m.device.len, 32);
  ck_assert_str_eq(m.device.text, "az_AZ-09.:bcdefghijklmnopqrstuvw");
  reject("{\"device\":\"az_AZ-09.:bcdefghijklmnopqrstuvwx\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1}",
         PROTOCOL_BAD_DEVICE_ID, "device");
  /* "07" is an id of its own, not the number 7. */
  accept_reading("{\"device\":\"07\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1}", &m);
  ck_assert_str_eq(m.device.text, "07");
  ck_assert_uint_eq(m.device.is_num, 0);
  accept_reading("{\"device\":\"0\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1}", &m);
  ck_assert_uint_eq(m.device.is_num, 1);
  ck_assert_uint_eq(m.device.num, 0);
  /* Numbers up to 2^64-1. */
  accept_reading("{\"device\":18446744073709551615,\"seq\":1,\"ts\":1732590000000,\"temperature\":1}", &m);
  ck_assert_uint_eq(m.device.num, UINT64_MAX);
  ck_assert_str_eq(m.device.text, "18446744073709551615");
  accept_reading("{\"device\":\"18446744073709551616\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1}", &m);
  ck_assert_uint_eq(m.device.is_num, 0); /* a valid string id, but not a number */
  static const char *const bad[] = {
      "\"\"", "\"a b\"", "\"a/b\"", "\"caf\xc3\xa9\"",      "\"a\\u0041\"", "\"a\\\"b\"",
      "-1",   "7.0",     "7e0",     "18446744073709551616", "00",           "07",
      "+7",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char line[256];
    snprintf(line, sizeof line, "{\"device\":%s,\"seq\":1,\"ts\":1732590000000,\"temperature\":1}", bad[i]);
    reject(line, PROTOCOL_BAD_DEVICE_ID, "device");
  }
  reject("{\"device\":null}", PROTOCOL_WRONG_TYPE, "device");
  reject("{\"device\":[7]}", PROTOCOL_WRONG_TYPE, "device");
  /* In line protocol the device is a tag: its value follows the same
   * rule. */
  static const char *const bad_tags[] = {
      "", "a\\ b", "a=b", "caf\xc3\xa9", "a\"b", "123456789012345678901234567890123"};
  for (size_t i = 0; i < sizeof bad_tags / sizeof *bad_tags; i++) {
    char line[256];
    snprintf(line, sizeof line, "telemetry,device=%s temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000",
             bad_tags[i]);
    reject(line, PROTOCOL_BAD_DEVICE_ID, "device");
  }
  /* An empty value of another tag is no tag at all. */
  reject("telemetry,device=7,site= temperature=1 1732590000000000000", PROTOCOL_MALFORMED, "");
}
END_TEST

/* Telegraf names the machine in its "host" tag: that is the device when
 * no "device" tag says otherwise, and then it stays a tag. */
START_TEST(test_protocol_host_tag_is_the_device) {
  protocol_msg m;
  accept_reading("cpu,host=web-1,cpu=cpu0 usage_idle=97.5 1732590000000000000", &m);
  ck_assert_str_eq(m.device.text, "web-1");
  ck_assert_uint_eq(m.point.nfields, 2);
  ck_assert_ptr_null(field_of(&m, "host"));
  expect_text(&m, "cpu", FIELD_TAG, "cpu0");
  accept_reading("cpu,host=web-1,device=d7 usage_idle=97.5 1732590000000000000", &m);
  ck_assert_str_eq(m.device.text, "d7");
  ck_assert_ptr_null(field_of(&m, "device"));
  expect_text(&m, "host", FIELD_TAG, "web-1");
  /* In JSON: "device" first, then the tags of Telegraf's object. */
  accept_reading("{\"name\":\"cpu\",\"fields\":{\"u\":1},\"tags\":{\"host\":\"h1\"},\"timestamp\":1732590000}", &m);
  ck_assert_str_eq(m.device.text, "h1");
  accept_reading("{\"device\":\"d\",\"name\":\"cpu\",\"fields\":{\"u\":1},\"tags\":{\"host\":\"h1\"},"
                 "\"timestamp\":1732590000}",
                 &m);
  ck_assert_str_eq(m.device.text, "d");
  expect_text(&m, "host", FIELD_TAG, "h1");
  /* A host that breaks the id rule is refused, not skipped for another. */
  reject("cpu,host=web\\ 1 usage_idle=97.5 1732590000000000000", PROTOCOL_BAD_DEVICE_ID, "device");
  reject("cpu,site=x usage_idle=97.5 1732590000000000000", PROTOCOL_MISSING_FIELD, "device");
  /* A field named host or device is a field, not the device. */
  reject("cpu host=\"web-1\" 1732590000000000000", PROTOCOL_MISSING_FIELD, "device");
  reject("cpu device=7i 1732590000000000000", PROTOCOL_MISSING_FIELD, "device");
}
END_TEST

/* Any measurement, any tags, every field type, and the escapes of line
 * protocol (the parser points at the escaped text; schema_pack decodes
 * it, see test-schema.c). */
START_TEST(test_protocol_line_any_measurement) {
  protocol_msg m;
  accept_reading(
      "weather,device=7,site=roof,floor=3 temp=21.5,count=3i,big=9223372036854775807u,neg=-9223372036854775808i,"
      "ok=t,bad=FALSE,note=\"all good\",empty=\"\" 1732590000123000000",
      &m);
  expect_measurement(&m, "weather");
  ck_assert_str_eq(m.device.text, "7");
  ck_assert_uint_eq(m.point.seq, READING_SEQ_NONE);
  ck_assert_uint_eq(m.point.nfields, 10);
  expect_text(&m, "site", FIELD_TAG, "roof");
  expect_text(&m, "floor", FIELD_TAG, "3");
  ck_assert_int_eq(field_of(&m, "temp")->type, FIELD_FLOAT);
  ck_assert_double_eq(field_of(&m, "temp")->v.f, 21.5);
  ck_assert_int_eq(field_of(&m, "count")->type, FIELD_INT);
  ck_assert_int_eq(field_of(&m, "count")->v.i, 3);
  ck_assert_int_eq(field_of(&m, "neg")->v.i, INT64_MIN);
  ck_assert_int_eq(field_of(&m, "ok")->type, FIELD_BOOL);
  ck_assert_int_eq(field_of(&m, "ok")->v.i, 1);
  ck_assert_int_eq(field_of(&m, "bad")->v.i, 0);
  expect_text(&m, "note", FIELD_STRING, "all good");
  expect_text(&m, "empty", FIELD_STRING, "");
  /* Every spelling of a boolean. */
  static const char *const bools[] = {"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"};
  for (size_t i = 0; i < sizeof bools / sizeof *bools; i++) {
    char line[128];
    snprintf(line, sizeof line, "m,device=7 b=%s,x=1 1732590000000000000", bools[i]);
    accept_reading(line, &m);
    ck_assert_int_eq(field_of(&m, "b")->type, FIELD_BOOL);
    ck_assert_int_eq(field_of(&m, "b")->v.i, i < 5);
  }
  /* A measurement or tag name is any UTF-8 but the delimiters. */
  accept_reading("m\xc3\xa9t\xc3\xa9o,device=7,\xc3\xa9t\xc3\xa9=chaud v=1 1732590000000000000", &m);
  expect_measurement(&m, "m\xc3\xa9t\xc3\xa9o");
  expect_text(&m, "\xc3\xa9t\xc3\xa9", FIELD_TAG, "chaud");
  /* Integers past 64 bits signed, and an unsigned one that is negative. */
  reject("m,device=7 v=9223372036854775808i 1732590000000000000", PROTOCOL_OUT_OF_RANGE, "");
  reject("m,device=7 v=-9223372036854775809i 1732590000000000000", PROTOCOL_OUT_OF_RANGE, "");
  reject("m,device=7 v=-1u 1732590000000000000", PROTOCOL_BAD_NUMBER, "");
  reject("m,device=7 v=9223372036854775808u 1732590000000000000", PROTOCOL_OUT_OF_RANGE, "");
  /* A string ends at its closing quote, and only a delimiter may follow. */
  reject("m,device=7 s=\"abc 1732590000000000000", PROTOCOL_MALFORMED, "");
  reject("m,device=7 s=\"a\"b 1732590000000000000", PROTOCOL_MALFORMED, "");
  reject("m,device=7 s=\"\xff\" 1732590000000000000", PROTOCOL_NOT_UTF8, "");
  reject("m,device=7 b=tru 1732590000000000000", PROTOCOL_BAD_NUMBER, "");
}
END_TEST

START_TEST(test_protocol_line_escapes) {
  protocol_msg m;
  /* '\ ' and '\,' in a measurement, '\ ', '\,' and '\=' in tag names and
   * values and field names, '\"' and '\\' in a string. */
  accept_reading("my\\ room\\,east,device=7,tag\\ k\\=1=v\\,al\\ ue f\\=x\\ y=1,s=\"say \\\"hi\\\" \\\\o/\" "
                 "1732590000000000000",
                 &m);
  expect_measurement(&m, "my\\ room\\,east");
  ck_assert_uint_eq(m.point.measurement_escaped, 1);
  ck_assert_uint_eq(m.point.nfields, 3);
  const protocol_field *t = field_of(&m, "tag\\ k\\=1");
  ck_assert_ptr_nonnull(t);
  ck_assert_int_eq(t->type, FIELD_TAG);
  ck_assert_uint_eq(t->escaped, PROTOCOL_ESC_NAME | PROTOCOL_ESC_STR);
  const protocol_field *f = field_of(&m, "f\\=x\\ y");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(f->escaped, PROTOCOL_ESC_NAME);
  const protocol_field *s = field_of(&m, "s");
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_eq(s->escaped, PROTOCOL_ESC_STR);
  char buf[64];
  size_t n = protocol_unescape(m.point.measurement, m.point.measurement_len, 0, buf);
  ck_assert_uint_eq(n, 12);
  ck_assert(memcmp(buf, "my room,east", n) == 0);
  n = protocol_unescape(t->name, t->name_len, 0, buf);
  ck_assert(n == 7 && memcmp(buf, "tag k=1", n) == 0);
  n = protocol_unescape(t->str, t->str_len, 0, buf);
  ck_assert(n == 7 && memcmp(buf, "v,al ue", n) == 0);
  n = protocol_unescape(s->str, s->str_len, 0, buf);
  ck_assert_msg(n == 12 && memcmp(buf, "say \"hi\" \\o/", n) == 0, "%.*s", (int)n, buf);
  /* Plain names are not marked. */
  accept_reading(TCPGEN_LINE, &m);
  ck_assert_uint_eq(m.point.measurement_escaped, 0);
  for (uint32_t i = 0; i < m.point.nfields; i++) ck_assert_uint_eq(m.point.fields[i].escaped, 0);
}
END_TEST

/* A reading is its values: one with tags only has nothing to store. */
START_TEST(test_protocol_tags_only_refused) {
  reject("m,device=7,site=x seq=1i 1732590000000000000", PROTOCOL_MISSING_FIELD, "");
  reject("{\"device\":\"7\",\"ts\":1732590000000}", PROTOCOL_MISSING_FIELD, "");
  reject("{\"device\":\"7\",\"ts\":1732590000000,\"seq\":4,\"v\":null}", PROTOCOL_MISSING_FIELD, "");
  reject("{\"name\":\"m\",\"fields\":{},\"tags\":{\"device\":\"7\",\"site\":\"x\"},\"timestamp\":1732590000}",
         PROTOCOL_MISSING_FIELD, "");
}
END_TEST

/* PROTOCOL_FIELDS_MAX fields, tags included, and not one more; the
 * device, seq and time are no fields. */
START_TEST(test_protocol_too_many_fields) {
  char line[4096];
  protocol_msg m;
  protocol_error e;
  for (int tags = 0; tags <= 1; tags++) {
    for (int extra = 0; extra <= 1; extra++) {
      int n = snprintf(line, sizeof line, "m,device=7");
      int nfields = PROTOCOL_FIELDS_MAX + extra, ntags = tags ? nfields / 2 : 0;
      for (int i = 0; i < ntags; i++) n += snprintf(line + n, sizeof line - (size_t)n, ",t%d=x", i);
      for (int i = ntags; i < nfields; i++)
        n += snprintf(line + n, sizeof line - (size_t)n, "%cf%d=%di", i == ntags ? ' ' : ',', i, i);
      n += snprintf(line + n, sizeof line - (size_t)n, ",seq=1i 1732590000000000000"); /* seq is no field */
      int r = parse_n(line, (size_t)n, sizeof line, &m, &e);
      ck_assert_msg(r == (extra ? -PROTOCOL_TOO_MANY_FIELDS : 0), "%d tags, %d fields: %s", ntags, nfields,
                    protocol_reason_name(r));
      if (!extra) ck_assert_uint_eq(m.point.nfields, PROTOCOL_FIELDS_MAX);
      if (extra) ck_assert_int_eq(e.reason, PROTOCOL_TOO_MANY_FIELDS);
    }
  }
  for (int extra = 0; extra <= 1; extra++) {
    int n = snprintf(line, sizeof line, "{\"device\":\"7\",\"ts\":1732590000000");
    for (int i = 0; i < PROTOCOL_FIELDS_MAX + extra; i++)
      n += snprintf(line + n, sizeof line - (size_t)n, ",\"f%d\":%d", i, i);
    n += snprintf(line + n, sizeof line - (size_t)n, "}");
    int r = parse_n(line, (size_t)n, sizeof line, &m, &e);
    ck_assert_int_eq(r, extra ? -PROTOCOL_TOO_MANY_FIELDS : 0);
  }
}
END_TEST

/* Telegraf's JSON serializer: {"fields":{},"name":"","tags":{},
 * "timestamp":seconds} (its json_timestamp_units may make that ms, us or
 * ns). */
START_TEST(test_protocol_json_telegraf) {
  protocol_msg m;
  accept_reading("{\"fields\":{\"usage_idle\":97.5,\"usage_user\":1,\"up\":true,\"state\":\"ok\"},\"name\":\"cpu\","
                 "\"tags\":{\"cpu\":\"cpu-total\",\"host\":\"web-1\"},\"timestamp\":1732590000}",
                 &m);
  ck_assert_int_eq(m.format, PROTOCOL_JSON);
  expect_measurement(&m, "cpu");
  ck_assert_str_eq(m.device.text, "web-1");
  ck_assert_int_eq(m.point.ts_ms, 1732590000000);
  ck_assert_uint_eq(m.point.seq, READING_SEQ_NONE);
  ck_assert_uint_eq(m.point.nfields, 5);
  ck_assert_double_eq(number_of(&m, "usage_idle"), 97.5);
  ck_assert_int_eq(field_of(&m, "usage_user")->type, FIELD_INT);
  ck_assert_int_eq(field_of(&m, "up")->type, FIELD_BOOL);
  expect_text(&m, "state", FIELD_STRING, "ok");
  expect_text(&m, "cpu", FIELD_TAG, "cpu-total");
  /* The same in milliseconds, microseconds and nanoseconds. */
  static const char *const units[] = {"1732590000123", "1732590000123456", "1732590000123456789"};
  for (size_t i = 0; i < 3; i++) {
    char line[256];
    snprintf(line, sizeof line, "{\"fields\":{\"v\":1},\"name\":\"cpu\",\"tags\":{\"host\":\"h\"},\"timestamp\":%s}",
             units[i]);
    accept_reading(line, &m);
    ck_assert_int_eq(m.point.ts_ms, 1732590000123);
  }
  /* "name" beside "fields" is the measurement; alone it is a field. */
  accept_reading("{\"device\":\"7\",\"ts\":1732590000000,\"name\":\"kitchen\",\"v\":1}", &m);
  expect_measurement(&m, NULL);
  expect_text(&m, "name", FIELD_STRING, "kitchen");
  /* "measurement" names it in flat objects, and wins over "name". */
  accept_reading("{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"power\",\"watts\":120.5}", &m);
  expect_measurement(&m, "power");
  accept_reading("{\"measurement\":\"power\",\"name\":\"x\",\"fields\":{\"w\":1},\"tags\":{\"host\":\"h\"},"
                 "\"timestamp\":1732590000}",
                 &m);
  expect_measurement(&m, "power");
  expect_text(&m, "name", FIELD_STRING, "x");
  /* A tag is a string; "fields" and "tags" are objects. */
  reject("{\"name\":\"cpu\",\"fields\":{\"v\":1},\"tags\":{\"host\":\"h\",\"n\":1},\"timestamp\":1732590000}",
         PROTOCOL_WRONG_TYPE, "tags");
  reject("{\"name\":\"cpu\",\"fields\":[1],\"tags\":{\"host\":\"h\"},\"timestamp\":1732590000}", PROTOCOL_WRONG_TYPE,
         "fields");
  reject("{\"name\":\"cpu\",\"fields\":{\"v\":1},\"tags\":\"h\",\"timestamp\":1732590000}", PROTOCOL_WRONG_TYPE,
         "tags");
  reject("{\"name\":\"cpu\",\"fields\":{\"v\":1},\"fields\":{\"w\":1},\"tags\":{\"host\":\"h\"},\"timestamp\":1}",
         PROTOCOL_DUPLICATE_FIELD, "fields");
  reject("{\"name\":\"cpu\",\"fields\":{\"v\":1,},\"tags\":{\"host\":\"h\"},\"timestamp\":1732590000}",
         PROTOCOL_MALFORMED, "");
  reject("{\"name\":7,\"fields\":{\"v\":1},\"tags\":{\"host\":\"h\"},\"timestamp\":1732590000}", PROTOCOL_WRONG_TYPE,
         "name");
  reject("{\"name\":\"\",\"fields\":{\"v\":1},\"tags\":{\"host\":\"h\"},\"timestamp\":1732590000}", PROTOCOL_BAD_NAME,
         "name");
  reject("{\"measurement\":\"\",\"device\":\"7\",\"ts\":1732590000000,\"v\":1}", PROTOCOL_BAD_NAME, "measurement");
}
END_TEST

/* Fluent Bit's json_lines: "date" in float seconds (json_date_format
 * double, the default) or an ISO 8601 string (iso8601), the record's
 * keys flat beside it. */
START_TEST(test_protocol_json_fluent_bit) {
  protocol_msg m;
  accept_reading("{\"date\":1732590000.123456,\"device\":\"pump-3\",\"pressure\":2.5,\"rpm\":1450}", &m);
  ck_assert_int_eq(m.point.ts_ms, 1732590000123);
  ck_assert_str_eq(m.device.text, "pump-3");
  ck_assert_uint_eq(m.point.nfields, 2);
  static const struct {
    const char *date;
    int64_t ms;
  } iso[] = {
      {"2024-11-26T03:00:00.123456Z", 1732590000123},   {"2024-11-26T03:00:00Z", 1732590000000},
      {"2024-11-26T03:00:00.1Z", 1732590000100},        {"2024-11-26 03:00:00.123", 1732590000123},
      {"2024-11-26T04:30:00.123+01:30", 1732590000123}, {"2024-11-25T23:00:00.123-04:00", 1732590000123},
      {"2000-01-01T00:00:00Z", PROTOCOL_TS_MS_MIN},     {"2024-02-29T00:00:00z", 1709164800000},
  };
  for (size_t i = 0; i < sizeof iso / sizeof *iso; i++) {
    char line[256];
    snprintf(line, sizeof line, "{\"date\":\"%s\",\"device\":\"7\",\"v\":1}", iso[i].date);
    accept_reading(line, &m);
    ck_assert_msg(m.point.ts_ms == iso[i].ms, "%s: %" PRId64 ", want %" PRId64, iso[i].date, m.point.ts_ms, iso[i].ms);
  }
  static const char *const bad_iso[] = {
      "2024-11-26",
      "2024-13-26T03:00:00Z",
      "2024-11-26T24:00:00Z",
      "2024-11-26T03:00:00.Z",
      "2024-11-26T03:00:00X",
      "2024-11-26T03:00:00+1",
      "yesterday",
      "2024-11-26T03:00:00\\u005a",
  };
  for (size_t i = 0; i < sizeof bad_iso / sizeof *bad_iso; i++) {
    char line[256];
    snprintf(line, sizeof line, "{\"date\":\"%s\",\"device\":\"7\",\"v\":1}", bad_iso[i]);
    reject(line, PROTOCOL_BAD_NUMBER, "date");
  }
  reject("{\"date\":\"1999-12-31T23:59:59Z\",\"device\":\"7\",\"v\":1}", PROTOCOL_OUT_OF_RANGE, "date");
  reject("{\"date\":true,\"device\":\"7\",\"v\":1}", PROTOCOL_WRONG_TYPE, "date");
  /* One time only, whatever its name. */
  reject("{\"date\":1732590000,\"ts\":1732590000000,\"device\":\"7\",\"v\":1}", PROTOCOL_DUPLICATE_FIELD, "ts");
  reject("{\"time\":1732590000,\"timestamp\":1732590000,\"device\":\"7\",\"v\":1}", PROTOCOL_DUPLICATE_FIELD, "ts");
}
END_TEST

/* Float seconds with milliseconds come out as the milliseconds written,
 * although most of them are no double. */
START_TEST(test_protocol_json_float_seconds_exact) {
  protocol_msg m;
  for (int64_t ms = 1732590000000; ms < 1732590000000 + 2000; ms++) {
    char line[128];
    snprintf(line, sizeof line, "{\"date\":%" PRId64 ".%03" PRId64 ",\"device\":\"7\",\"v\":1}", ms / 1000, ms % 1000);
    accept_reading(line, &m);
    ck_assert_msg(m.point.ts_ms == ms, "%s: %" PRId64, line, m.point.ts_ms);
  }
}
END_TEST

/* A flat object's time: "ts" in milliseconds, or "timestamp", "date" or
 * "time" in seconds, milliseconds, microseconds or nanoseconds, told
 * apart by their size. */
START_TEST(test_protocol_json_times) {
  static const struct {
    const char *key, *value;
    int64_t ms;
  } ok[] = {
      {"timestamp", "1732590000", 1732590000000},
      {"timestamp", "1732590000123", 1732590000123},
      {"timestamp", "1732590000123456", 1732590000123},
      {"timestamp", "1732590000123456789", 1732590000123},
      {"time", "1732590000.5", 1732590000500},
      {"time", "1.7325900001234e12", 1732590000123},
      {"time", "99999999999", 99999999999000},
      {"time", "946684800000", PROTOCOL_TS_MS_MIN},
      {"date", "946684800", PROTOCOL_TS_MS_MIN},
      {"ts", "1732590000123", 1732590000123},
      {"timestamp", "\"2024-11-26T03:00:00.123Z\"", 1732590000123},
  };
  protocol_msg m;
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    char line[256];
    snprintf(line, sizeof line, "{\"device\":\"7\",\"%s\":%s,\"v\":1}", ok[i].key, ok[i].value);
    accept_reading(line, &m);
    ck_assert_msg(m.point.ts_ms == ok[i].ms, "%s: %" PRId64 ", want %" PRId64, line, m.point.ts_ms, ok[i].ms);
    ck_assert_ptr_null(field_of(&m, ok[i].key));
  }
  reject("{\"device\":\"7\",\"timestamp\":946684799,\"v\":1}", PROTOCOL_OUT_OF_RANGE, "timestamp");
  reject("{\"device\":\"7\",\"timestamp\":-1,\"v\":1}", PROTOCOL_OUT_OF_RANGE, "timestamp");
  reject("{\"device\":\"7\",\"timestamp\":NaN,\"v\":1}", PROTOCOL_OUT_OF_RANGE, "timestamp");
  reject("{\"device\":\"7\",\"timestamp\":1e300,\"v\":1}", PROTOCOL_OUT_OF_RANGE, "timestamp");
  reject("{\"device\":\"7\",\"timestamp\":null,\"v\":1}", PROTOCOL_WRONG_TYPE, "timestamp");
  reject("{\"device\":\"7\",\"ts\":1732590000123.5,\"v\":1}", PROTOCOL_BAD_NUMBER, "ts");
  reject("{\"device\":\"7\",\"ts\":\"1732590000123\",\"v\":1}", PROTOCOL_WRONG_TYPE, "ts");
  reject("{\"device\":\"7\",\"v\":1}", PROTOCOL_MISSING_FIELD, "ts");
}
END_TEST

/* A JSON reading's values: null means no value, a nested object or array
 * is no value a column holds. */
START_TEST(test_protocol_json_values) {
  protocol_msg m;
  accept_reading("{\"device\":\"7\",\"ts\":1732590000000,\"a\":null,\"b\":1.5,\"c\":\"x\\n\\u00e9\",\"d\":false,"
                 "\"e\":-0,\"f\":123456789012345678901234567890}",
                 &m);
  ck_assert_ptr_null(field_of(&m, "a"));
  ck_assert_uint_eq(m.point.nfields, 5);
  const protocol_field *c = field_of(&m, "c");
  ck_assert_int_eq(c->type, FIELD_STRING);
  ck_assert_uint_eq(c->escaped, PROTOCOL_ESC_STR);
  char buf[32];
  size_t n = protocol_unescape(c->str, c->str_len, 1, buf);
  ck_assert(n == 4 && memcmp(buf, "x\n\xc3\xa9", 4) == 0);
  ck_assert_int_eq(field_of(&m, "d")->type, FIELD_BOOL);
  ck_assert_int_eq(field_of(&m, "e")->type, FIELD_INT);
  /* A whole number past 64 bits is a float. */
  ck_assert_int_eq(field_of(&m, "f")->type, FIELD_FLOAT);
  ck_assert_double_eq(field_of(&m, "f")->v.f, 123456789012345678901234567890.0);
  static const char *const nested[] = {"{}", "{\"x\":1}", "[]", "[1,2]", "[{}]"};
  for (size_t i = 0; i < sizeof nested / sizeof *nested; i++) {
    char line[128];
    snprintf(line, sizeof line, "{\"device\":\"7\",\"ts\":1732590000000,\"v\":%s}", nested[i]);
    reject(line, PROTOCOL_WRONG_TYPE, "");
  }
  reject("{\"device\":\"7\",\"ts\":1732590000000,\"v\":nul}", PROTOCOL_BAD_NUMBER, "");
  reject("{\"device\":\"7\",\"ts\":1732590000000,\"v\":True}", PROTOCOL_BAD_NUMBER, "");
}
END_TEST

/* protocol_unescape: line protocol's backslash, JSON's escapes with
 * \u, surrogate pairs and the replacement of a lone surrogate. */
START_TEST(test_protocol_unescape) {
  static const struct {
    const char *in, *out;
    int json;
  } cases[] = {
      {"a\\ b\\,c\\=d", "a b,c=d", 0},
      {"\\\\", "\\", 0},
      {"end\\", "end\\", 0},
      {"C:\\Users\\me", "C:\\Users\\me", 0}, /* before other bytes a backslash is plain, as in InfluxDB */
      {"\\\"q\\\"\\\t", "\"q\"\t", 0},
      {"caf\\u00e9", "caf\xc3\xa9", 1},
      {"\\u0041\\u00DF\\u20AC", "A\xc3\x9f\xe2\x82\xac", 1},
      {"\\ud83d\\ude00!", "\xf0\x9f\x98\x80!", 1},
      {"\\uD83D\\uDE00", "\xf0\x9f\x98\x80", 1},
      {"\\ud83d", "\xef\xbf\xbd", 1},
      {"\\ud83dx", "\xef\xbf\xbdx", 1},
      {"\\ude00\\ud83d", "\xef\xbf\xbd\xef\xbf\xbd", 1},
      {"\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t", 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char out[64];
    size_t n = strlen(cases[i].in);
    size_t k = protocol_unescape(cases[i].in, n, cases[i].json, out);
    ck_assert_uint_le(k, n);
    ck_assert_msg(k == strlen(cases[i].out) && memcmp(out, cases[i].out, k) == 0, "%s: %.*s", cases[i].in, (int)k, out);
  }
}
END_TEST

/* Each rejection the parser makes, in JSON and in line protocol where the
 * format can show it. A field of a reading is not named in the error (its
 * name is in the line, not NUL-terminated); the parser's own are. */
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
  reject("{\"v\":\"a\\u12\"}", PROTOCOL_MALFORMED, "");
  reject(TCPGEN_JSON " x", PROTOCOL_MALFORMED, "");
  reject(TCPGEN_JSON "}", PROTOCOL_MALFORMED, "");
  reject("[1,2]", PROTOCOL_MALFORMED, ""); /* not '{': a line-protocol measurement "[1" without fields */
  reject("telemetry", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 ", PROTOCOL_MALFORMED, "");
  reject("telemetry,device", PROTOCOL_MALFORMED, "");
  reject("telemetry,=7 seq=1i", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 temperature", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 temperature=1,", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 =1 1732590000000000000", PROTOCOL_MALFORMED, "");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000 2", PROTOCOL_MALFORMED, "");
  reject(",device=7 temperature=1", PROTOCOL_MALFORMED, "");
  reject("hello", PROTOCOL_MALFORMED, "");

  /* not_utf8 */
  reject("{\"device\":\"\xff\"}", PROTOCOL_NOT_UTF8, "device");
  reject("{\"dev\xc3\x28\":1}", PROTOCOL_NOT_UTF8, "");
  reject("{\"device\":\"7\",\"ts\":1732590000000,\"v\":\"\xed\xa0\x80\"}", PROTOCOL_NOT_UTF8, "");
  reject("telemetry,device=\xe2\x82 seq=1i", PROTOCOL_NOT_UTF8, "device");
  reject("telem\x80try,device=7 seq=1i", PROTOCOL_NOT_UTF8, "");
  reject("m,device=7,t=\xf4\x90\x80\x80 v=1", PROTOCOL_NOT_UTF8, "");
  reject(TCPGEN_JSON "\xfe", PROTOCOL_NOT_UTF8, "");
  reject("\xc0\xaf", PROTOCOL_NOT_UTF8, "");

  /* bad_number */
  static const char *const bad_nums[] = {"1.", ".5", "01", "1e", "1e+", "--1", "1x", "+1", "0x10", "1.5.5", "-"};
  for (size_t i = 0; i < sizeof bad_nums / sizeof *bad_nums; i++) {
    char line[256];
    snprintf(line, sizeof line,
             "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":%s,\"humidity\":1,\"battery\":1}",
             bad_nums[i]);
    reject(line, PROTOCOL_BAD_NUMBER, "");
    snprintf(line, sizeof line, "telemetry,device=7 temperature=%s,humidity=1,battery=1i,seq=1i 1732590000000000000",
             bad_nums[i]);
    reject(line, PROTOCOL_BAD_NUMBER, "");
  }
  reject("{\"device\":\"7\",\"seq\":1.5,\"ts\":1732590000000,\"temperature\":1}", PROTOCOL_BAD_NUMBER, "seq");
  reject("{\"device\":\"7\",\"seq\":1e3,\"ts\":1732590000000,\"temperature\":1}", PROTOCOL_BAD_NUMBER, "seq");
  reject("{\"device\":\"7\",\"seq\":1i,\"ts\":1732590000000,\"temperature\":1}", PROTOCOL_BAD_NUMBER, "seq");
  reject("telemetry,device=7 temperature=1,seq=1.5 1732590000000000000", PROTOCOL_BAD_NUMBER, "seq");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1.5i,seq=1i 1732590000000000000", PROTOCOL_BAD_NUMBER,
         "");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1i", PROTOCOL_BAD_NUMBER, "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 1.5", PROTOCOL_BAD_NUMBER, "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i 12abc", PROTOCOL_BAD_NUMBER, "ts");
  reject("telemetry,device=7 temperature=,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_BAD_NUMBER, "");
  reject("telemetry,device=7 temperature=1.5i,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_BAD_NUMBER,
         "");

  /* out_of_range: a field's NaN or infinity (the ranges of a declared
   * measurement are the schema's), seq and ts; the boundaries have their
   * own test */
  static const char *const special[] = {"NaN", "nan", "-nan", "inf", "-inf", "Infinity", "-Infinity", "INF", "1e999"};
  for (size_t i = 0; i < sizeof special / sizeof *special; i++) {
    char line[256];
    snprintf(line, sizeof line, "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"humidity\":%s}", special[i]);
    reject(line, PROTOCOL_OUT_OF_RANGE, "");
    snprintf(line, sizeof line, "telemetry,device=7 temperature=%s,seq=1i 1732590000000000000", special[i]);
    reject(line, PROTOCOL_OUT_OF_RANGE, "");
  }
  reject("{\"device\":\"7\",\"seq\":NaN,\"ts\":1732590000000,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":-1,\"ts\":1732590000000,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":-1,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE, "ts");
  reject("telemetry,device=7 temperature=1,seq=1i -1", PROTOCOL_OUT_OF_RANGE, "ts");

  /* missing_field: the device, then the time, then a value */
  reject("{}", PROTOCOL_MISSING_FIELD, "device");
  reject("{\"battery\":1}", PROTOCOL_MISSING_FIELD, "device");
  reject("{\"device\":\"7\",\"seq\":1,\"temperature\":1}", PROTOCOL_MISSING_FIELD, "ts");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000}", PROTOCOL_MISSING_FIELD, "");
  reject("telemetry temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_MISSING_FIELD, "device");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i", PROTOCOL_MISSING_FIELD, "ts");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i  ", PROTOCOL_MISSING_FIELD, "ts");
  reject("telemetry,device=7 seq=1i 1732590000000000000", PROTOCOL_MISSING_FIELD, "");

  /* duplicate_field: what the parser reads itself; two fields of one
   * name are the schema's to refuse */
  reject("{\"device\":\"7\",\"device\":\"7\"}", PROTOCOL_DUPLICATE_FIELD, "device");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"seq\":1}", PROTOCOL_DUPLICATE_FIELD,
         "seq");
  reject("{\"device\":\"7\",\"measurement\":\"a\",\"measurement\":\"b\"}", PROTOCOL_DUPLICATE_FIELD, "measurement");
  reject("telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i,seq=2i 1732590000000000000",
         PROTOCOL_DUPLICATE_FIELD, "seq");
  reject("telemetry,device=7,device=8 temperature=1 1732590000000000000", PROTOCOL_DUPLICATE_FIELD, "device");

  /* wrong_type: where the parser wants a number or a string */
  reject("{\"seq\":\"1\"}", PROTOCOL_WRONG_TYPE, "seq");
  reject("{\"seq\":true}", PROTOCOL_WRONG_TYPE, "seq");
  reject("{\"measurement\":1}", PROTOCOL_WRONG_TYPE, "measurement");
  reject("telemetry,device=7 temperature=1,seq=\"1\" 1732590000000000000", PROTOCOL_WRONG_TYPE, "seq");
  reject("telemetry,device=7 temperature=1,seq=t 1732590000000000000", PROTOCOL_WRONG_TYPE, "seq");
}
END_TEST

START_TEST(test_protocol_first_problem_wins) {
  protocol_msg m;
  protocol_error e;
  /* The bad number comes before the missing time. */
  const char *s = "{\"device\":\"7\",\"seq\":x,\"pressure\":1}";
  ck_assert_int_eq(parse(s, &m, &e), -PROTOCOL_BAD_NUMBER);
  ck_assert_uint_eq(e.offset, 20);
  /* A bad value comes before the device that is missing. */
  s = "m v=1.5.5 1732590000000000000";
  ck_assert_int_eq(parse(s, &m, &e), -PROTOCOL_BAD_NUMBER);
  ck_assert_uint_eq(e.offset, 7); /* the second point */
}
END_TEST

/* seq and ts, the numbers the parser keeps: their limits in each format. */
START_TEST(test_protocol_boundaries) {
  protocol_msg m;
  /* seq: optional (the gateway numbers a reading without one), else
   * 0 .. 2^63 - 1, what SQL's signed 64-bit integers hold. */
  accept_reading("{\"device\":\"7\",\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}", &m);
  ck_assert_uint_eq(m.point.seq, READING_SEQ_NONE);
  accept_reading("telemetry,device=7 temperature=1,humidity=1,battery=1i 1732590000000000000", &m);
  ck_assert_uint_eq(m.point.seq, READING_SEQ_NONE);
  accept_reading("{\"device\":\"7\",\"seq\":9223372036854775807,\"ts\":1732590000000,\"temperature\":1}", &m);
  ck_assert_uint_eq(m.point.seq, INT64_MAX);
  ck_assert_uint_eq(m.point.nfields, 1); /* seq is no field */
  reject("{\"device\":\"7\",\"seq\":9223372036854775808,\"ts\":1732590000000,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE,
         "seq");
  reject("{\"device\":\"7\",\"seq\":18446744073709551615,\"ts\":1732590000000,\"temperature\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  accept_reading("{\"device\":\"7\",\"seq\":0,\"ts\":1732590000000,\"temperature\":1}", &m);
  ck_assert_uint_eq(m.point.seq, 0);
  accept_reading("{\"device\":\"7\",\"seq\":-0,\"ts\":1732590000000,\"temperature\":1}", &m);
  ck_assert_uint_eq(m.point.seq, 0);
  reject("{\"device\":\"7\",\"seq\":18446744073709551616,\"ts\":1732590000000,\"temperature\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":99999999999999999999,\"ts\":1732590000000,\"temperature\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  reject("{\"device\":\"7\",\"seq\":100000000000000000000,\"ts\":1732590000000,\"temperature\":1}",
         PROTOCOL_OUT_OF_RANGE, "seq");
  accept_reading("telemetry,device=7 temperature=1,seq=9223372036854775807u 1732590000000000000", &m);
  ck_assert_uint_eq(m.point.seq, INT64_MAX);
  reject("telemetry,device=7 temperature=1,seq=18446744073709551615u 1732590000000000000", PROTOCOL_OUT_OF_RANGE,
         "seq");
  /* ts: year 2000 .. year 9999 in ms; in ns from year 2000 to the top of
   * int64. Seconds sent for milliseconds fall below 2000. */
  accept_reading("{\"device\":\"7\",\"seq\":1,\"ts\":946684800000,\"temperature\":1}", &m);
  ck_assert_int_eq(m.point.ts_ms, PROTOCOL_TS_MS_MIN);
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":946684799999,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE, "ts");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":1732590000,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE, "ts");
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":0,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE, "ts");
  reject("telemetry,device=7 temperature=1,seq=1i 946684799999999999", PROTOCOL_OUT_OF_RANGE, "ts");
  accept_reading("{\"device\":\"7\",\"seq\":1,\"ts\":253402300799999,\"temperature\":1}", &m);
  ck_assert_int_eq(m.point.ts_ms, PROTOCOL_TS_MS_MAX);
  reject("{\"device\":\"7\",\"seq\":1,\"ts\":253402300800000,\"temperature\":1}", PROTOCOL_OUT_OF_RANGE, "ts");
  accept_reading("telemetry,device=7 temperature=1,seq=1i 9223372036854775807", &m);
  ck_assert_int_eq(m.point.ts_ms, INT64_MAX / 1000000);
  reject("telemetry,device=7 temperature=1,seq=1i 9223372036854775808", PROTOCOL_OUT_OF_RANGE, "ts");
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
      "9007199254740993",
      "1.7976931348623157e308",
  };
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    char line[512];
    protocol_msg m;
    protocol_error e;
    for (int f = PROTOCOL_JSON; f <= PROTOCOL_LINE; f++) {
      if (f == PROTOCOL_JSON)
        snprintf(line, sizeof line, "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":%s}", texts[i]);
      else
        snprintf(line, sizeof line, "telemetry,device=7 temperature=%s 1732590000000000000", texts[i]);
      ck_assert_msg(parse(line, &m, &e) == 0, "%s: %s", line, protocol_reason_name(e.reason));
      double got = number_of(&m, "temperature");
      ck_assert_msg(got == strtod(texts[i], NULL), "%s: %.17g, strtod %.17g", line, got, strtod(texts[i], NULL));
    }
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
 * through the parser and through the schema, and random decimal texts
 * convert as strtod does. */
START_TEST(test_protocol_round_trip) {
  uint64_t s = seed_from_env("round_trip");
  static const char ids[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-";
  schema *sc = schema_new(0);
  ck_assert_ptr_nonnull(sc);
  long n_iter = iterations() / 10;
  for (long i = 0; i < n_iter; i++) {
    protocol_telemetry t = {
        .battery = (uint32_t)(next(&s) % 101),
        .seq = (next(&s) >> 1) >> (next(&s) % 64), /* 0 .. PROTOCOL_SEQ_MAX */
        .ts_ms = PROTOCOL_TS_MS_MIN + (int64_t)(next(&s) % (uint64_t)(INT64_MAX / 1000000 - PROTOCOL_TS_MS_MIN + 1)),
        .temperature = -50 + 200 * unit(&s),
        .humidity = i % 7 ? 100 * unit(&s) : (double)(next(&s) % 101),
    };
    if (i % 5 == 0) t.temperature = round(t.temperature * 10) / 10; /* what sensors send */
    char id[PROTOCOL_DEVICE_ID_MAX + 1];
    size_t idlen = 1 + next(&s) % PROTOCOL_DEVICE_ID_MAX;
    for (size_t k = 0; k < idlen; k++) id[k] = ids[next(&s) % (sizeof ids - 1)];
    id[idlen] = '\0';
    for (int f = PROTOCOL_JSON; f <= PROTOCOL_LINE; f++) {
      char line[256];
      protocol_msg m;
      protocol_error e;
      int n = protocol_format_reading(line, sizeof line, (protocol_format)f, id, &t);
      ck_assert_int_gt(n, 0);
      ck_assert_int_eq(line[n - 1], '\n');
      ck_assert_msg(parse_n(line, (size_t)n - 1, 0, &m, &e) == 0, "%s: %s", line, protocol_reason_name(e.reason));
      ck_assert_int_eq(m.format, f);
      ck_assert_str_eq(m.device.text, id);
      ck_assert_uint_eq(m.point.seq, t.seq);
      ck_assert_int_eq(m.point.ts_ms, t.ts_ms);
      ck_assert_msg(number_of(&m, "temperature") == t.temperature, "%s", line);
      ck_assert_msg(number_of(&m, "humidity") == t.humidity, "%s", line);
      ck_assert_double_eq(number_of(&m, "battery"), t.battery);
      /* The article's measurement: two floats (a JSON 21 too) and an
       * integer, inline. */
      reading r;
      ck_assert_msg(schema_pack(sc, &m.point, &r, &e) == 0, "%s: %s", line, protocol_reason_name(e.reason));
      ck_assert_uint_eq(r.measurement, SCHEMA_TELEMETRY);
      ck_assert_uint_eq(r.on_heap, 0);
      ck_assert_uint_eq(r.seq, t.seq);
      ck_assert_int_eq(r.ts_ms, t.ts_ms);
      const field_value *v = reading_field(&r, SCHEMA_TEMPERATURE);
      ck_assert_msg(v && v->type == FIELD_FLOAT && v->v.f == t.temperature, "%s", line);
      v = reading_field(&r, SCHEMA_HUMIDITY);
      ck_assert_msg(v && v->type == FIELD_FLOAT && v->v.f == t.humidity, "%s", line);
      v = reading_field(&r, SCHEMA_BATTERY);
      ck_assert_msg(v && v->type == FIELD_INT && v->v.i == t.battery, "%s", line);
      reading_free(&r);
    }
    /* A random decimal text: digits, a point, maybe an exponent. */
    char num[64];
    int digits = 1 + (int)(next(&s) % 25), point = (int)(next(&s) % (uint64_t)(digits + 1));
    size_t k = 0;
    for (int d = 0; d < digits; d++) {
      if (d == point && d > 0) num[k++] = '.';
      num[k++] = (char)((d == 0 ? '1' : '0') + (int)(next(&s) % (d == 0 ? 9 : 10)));
    }
    num[k] = '\0';
    if (next(&s) % 3 == 0) snprintf(num + k, sizeof num - k, "e%d", (int)(next(&s) % 40) - 30);
    double want = strtod(num, NULL);
    char line[256];
    protocol_msg m;
    protocol_error e;
    snprintf(line, sizeof line, "telemetry,device=7 humidity=%s,temperature=1,battery=1i,seq=1i 1732590000000000000",
             num);
    ck_assert_msg(parse(line, &m, &e) == 0, "%s: %s", line, protocol_reason_name(e.reason));
    ck_assert_msg(number_of(&m, "humidity") == want, "%s: %.17g, strtod %.17g", num, number_of(&m, "humidity"), want);
  }
  schema_free(sc);
}
END_TEST

/* Accepted lines always obey the rules, whatever the input: every name
 * and string inside the line, numbers finite, the id rule, the time in
 * range; and the schema either packs the reading or refuses it with a
 * reason of its own. */
static void check_accepted(const char *line, size_t len, const protocol_msg *m) {
  if (m->kind == PROTOCOL_BLANK) return;
  if (m->kind == PROTOCOL_HELLO) {
    ck_assert_uint_le(m->hello.token_len, PROTOCOL_TOKEN_MAX);
    ck_assert_uint_eq(strlen(m->hello.token), m->hello.token_len);
    for (size_t i = 0; i < m->hello.token_len; i++)
      ck_assert(m->hello.token[i] > 0x20 && m->hello.token[i] < 0x7f && m->hello.token[i] != '"' &&
                m->hello.token[i] != '\\');
  } else if (m->kind == PROTOCOL_READING) {
    const protocol_point *p = &m->point;
    const char *end = line + len;
    int values = 0;
    ck_assert_uint_le(p->nfields, PROTOCOL_FIELDS_MAX);
    if (p->measurement) ck_assert(p->measurement >= line && p->measurement + p->measurement_len <= end);
    for (uint32_t i = 0; i < p->nfields; i++) {
      const protocol_field *f = &p->fields[i];
      ck_assert_msg(f->name >= line && f->name + f->name_len <= end, "%.*s", (int)len, line);
      ck_assert(f->type >= FIELD_FLOAT && f->type <= FIELD_TAG);
      if (f->type == FIELD_STRING || f->type == FIELD_TAG)
        ck_assert_msg(f->str >= line && f->str + f->str_len <= end, "%.*s", (int)len, line);
      if (f->type == FIELD_FLOAT) ck_assert_msg(isfinite(f->v.f), "%.*s", (int)len, line);
      if (f->type == FIELD_BOOL) ck_assert(f->v.i == 0 || f->v.i == 1);
      values += f->type != FIELD_TAG;
    }
    ck_assert_int_gt(values, 0);
    ck_assert(p->seq == READING_SEQ_NONE || p->seq <= PROTOCOL_SEQ_MAX);
    ck_assert_int_ge(p->ts_ms, PROTOCOL_TS_MS_MIN);
    ck_assert_int_le(p->ts_ms, PROTOCOL_TS_MS_MAX);
    ck_assert_uint_ge(m->device.len, 1);
    ck_assert_uint_le(m->device.len, PROTOCOL_DEVICE_ID_MAX);
    ck_assert_uint_eq(strlen(m->device.text), m->device.len);
    for (size_t i = 0; i < m->device.len; i++)
      ck_assert_msg(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-", m->device.text[i]),
                    "%s", m->device.text);
  } else {
    ck_assert_int_eq(m->kind, PROTOCOL_HEALTH);
  }
  /* An accepted JSON line is JSON, with the same values. */
  if (m->format == PROTOCOL_JSON) {
    cJSON *j = cJSON_ParseWithLength(line, len);
    ck_assert_msg(j != NULL, "accepted but not JSON: %.*s", (int)len, line);
    if (m->kind == PROTOCOL_READING) {
      cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "temperature");
      const protocol_field *f = field_of(m, "temperature");
      if (f && (f->type == FIELD_FLOAT || f->type == FIELD_INT))
        ck_assert_msg(cJSON_IsNumber(t) && t->valuedouble == number_of(m, "temperature"), "%.*s", (int)len, line);
      cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "device");
      if (cJSON_IsString(d)) ck_assert_str_eq(d->valuestring, m->device.text);
    }
    cJSON_Delete(j);
  }
}

/* What schema_pack made of an accepted reading: its fields' types and
 * strings as the reading says, nothing shared with the line. */
static int check_packed(schema *sc, const protocol_msg *m) {
  reading r;
  protocol_error e;
  int rc = schema_pack(sc, &m->point, &r, &e);
  if (rc != 0) {
    ck_assert_int_eq(e.reason, -rc);
    ck_assert(-rc == PROTOCOL_TYPE_CONFLICT || -rc == PROTOCOL_TOO_MANY_FIELDS || -rc == PROTOCOL_DUPLICATE_FIELD ||
              -rc == PROTOCOL_BAD_NAME || -rc == PROTOCOL_MALFORMED); /* malformed: a NUL in a string */
    return rc;
  }
  ck_assert_uint_eq(r.nfields, m->point.nfields);
  const field_value *f = reading_fields(&r);
  for (uint32_t i = 0; i < r.nfields; i++) {
    ck_assert(schema_name(sc, f[i].name)[0] != 0);
    if (f[i].type == FIELD_STRING || f[i].type == FIELD_TAG) {
      ck_assert_uint_eq(r.on_heap, 1);
      ck_assert(f[i].len == 0 || (f[i].v.s >= (const char *)(r.u.heap + r.nfields)));
      ck_assert_uint_le(f[i].len, m->point.fields[i].str_len);
    }
  }
  reading_free(&r);
  return 0;
}

/* Seeded random mutations of valid lines never crash, never read past
 * the line, and never get a value accepted that breaks the rules. */
START_TEST(test_protocol_fuzz_mutations) {
  uint64_t s = seed_from_env("fuzz_mutations");
  static const char *const seeds[] = {
      "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}",
      "{\"device\":7,\"seq\":123,\"ts\":1732590000123,\"temperature\":-49.9,\"humidity\":0,\"battery\":100}",
      "{\"type\":\"health\",\"id\":42,\"uptime_s\":3600,\"battery\":87}",
      "{\"type\":\"hello\",\"token\":\"k3y\",\"acks\":true}",
      "telemetry,device=7 temperature=21.5,humidity=48.2,battery=87i,seq=123i 1732590000123000000",
      "telemetry,device=abc temperature=149.99,humidity=99.9e0,battery=0i,seq=0i 0",
      ("{\"fields\":{\"u\":97.5,\"s\":\"ok\"},\"name\":\"cpu\",\"tags\":{\"host\":\"h1\",\"c\":\"x\"},"
       "\"timestamp\":1732590000}"),
      "{\"date\":\"2024-11-26T03:00:00.123Z\",\"device\":\"p\",\"measurement\":\"m\",\"v\":1,\"w\":null,\"b\":true}",
      "w\\ x,device=7,site=r\\,f ok=t,s=\"a\\\"b\",n=-3i,u=4u,f=1.5 1732590000123000000",
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
      "\"measurement\":\"\",",
      "\"measurement\":\"\\u0041\",",
      "\"token\":\"t\",",
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
      ",host=h",
      ",seq=1",
      "temperature=",
      "telemetry",
      "readings",
      "\"s\"",
  };
  char buf[1024];
  long accepted = 0, rejected[PROTOCOL_REASON_COUNT] = {0}, refused[PROTOCOL_REASON_COUNT] = {0};
  long n_iter = iterations();
  /* A small schema, so that it fills up too. */
  schema *sc = schema_new(64);
  ck_assert_ptr_nonnull(sc);
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
      check_accepted(held, len, &m);
      if (m.kind == PROTOCOL_READING) refused[-check_packed(sc, &m)]++;
    } else {
      ck_assert_int_lt(r, 0);
      ck_assert_int_lt(-r, PROTOCOL_REASON_COUNT);
      ck_assert_int_eq(e.reason, -r);
      ck_assert_uint_le(e.offset, len);
      rejected[-r]++;
    }
  }
  schema_free(sc);
  printf("fuzz_mutations: %ld accepted", accepted);
  for (int i = 1; i < PROTOCOL_REASON_COUNT; i++)
    if (rejected[i]) printf(", %ld %s", rejected[i], protocol_reason_name(i));
  printf("; schema: %ld packed", refused[0]);
  for (int i = 1; i < PROTOCOL_REASON_COUNT; i++)
    if (refused[i]) printf(", %ld %s", refused[i], protocol_reason_name(i));
  printf("\n");
  /* Every reason of the parser came up, but oversized (longer lines than
   * these) and too_many_fields (more fields than these have). */
  static const protocol_reason parser_reasons[] = {
      PROTOCOL_MALFORMED,     PROTOCOL_NOT_UTF8,      PROTOCOL_BAD_NUMBER,      PROTOCOL_OUT_OF_RANGE,
      PROTOCOL_MISSING_FIELD, PROTOCOL_UNKNOWN_FIELD, PROTOCOL_DUPLICATE_FIELD, PROTOCOL_BAD_DEVICE_ID,
      PROTOCOL_WRONG_TYPE,    PROTOCOL_BAD_TOKEN,     PROTOCOL_BAD_NAME,
  };
  for (size_t i = 0; i < sizeof parser_reasons / sizeof *parser_reasons; i++)
    ck_assert_msg(rejected[parser_reasons[i]] > 0, "no %s", protocol_reason_name(parser_reasons[i]));
  ck_assert_int_gt(accepted, 0);
  ck_assert_int_gt(refused[0], 0);
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
      check_accepted(held, len, &m);
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
  if (r == 0) *out = number_of(&m, "humidity");
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
  ck_assert_int_eq(protocol_format_error(buf, sizeof buf, -PROTOCOL_TYPE_CONFLICT, 1), 51);
  ck_assert_str_eq(buf, "{\"type\":\"error\",\"reason\":\"type_conflict\",\"line\":1}\n");
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
  protocol_telemetry t = {.battery = 87, .seq = 123, .ts_ms = 1732590000123, .temperature = 21.5, .humidity = 48.2};
  ck_assert_int_gt(protocol_format_reading(buf, sizeof buf, PROTOCOL_JSON, "7", &t), 0);
  ck_assert_str_eq(buf, "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.5,\"humidity\":48.2,"
                        "\"battery\":87}\n");
  ck_assert_int_gt(protocol_format_reading(buf, sizeof buf, PROTOCOL_LINE, "7", &t), 0);
  ck_assert_str_eq(buf, "telemetry,device=7 temperature=21.5,humidity=48.2,battery=87i,seq=123i "
                        "1732590000123000000\n");
  ck_assert_int_eq(protocol_format_reading(buf, sizeof buf, PROTOCOL_JSON, "a b", &t), -EINVAL);
  ck_assert_int_eq(protocol_format_reading(buf, sizeof buf, PROTOCOL_JSON, "", &t), -EINVAL);
  ck_assert_int_eq(protocol_format_reading(buf, 20, PROTOCOL_JSON, "7", &t), -ENOSPC);
  t.ts_ms = -1;
  ck_assert_int_eq(protocol_format_reading(buf, sizeof buf, PROTOCOL_LINE, "7", &t), -EINVAL);
}
END_TEST

START_TEST(test_protocol_reason_names) {
  static const char *const names[] = {
      "ok",           "malformed",     "oversized",     "not_utf8",        "bad_number",
      "out_of_range", "missing_field", "unknown_field", "duplicate_field", "bad_device_id",
      "wrong_type",   "unknown_type",  "bad_token",     "type_conflict",   "too_many_fields",
      "bad_name",     "no_memory"};
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
    int n = snprintf(line, sizeof line, "cpu,host=h1 usage=1,n=2i %s", cases[i].ts);
    ck_assert_int_eq(protocol_parse_influx(line, (size_t)n, 0, cases[i].precision, -1, &m, &e), 0);
    ck_assert_int_eq(m.point.ts_ms, want[i]);
    ck_assert_uint_eq(m.point.seq, READING_SEQ_NONE);
    ck_assert_str_eq(m.device.text, "h1");
    ck_assert_uint_eq(m.point.nfields, 2);
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
  ck_assert_int_eq(m.point.ts_ms, 1732590009999);
  ck_assert_int_eq(protocol_parse_influx(none, sizeof none - 1, 0, PROTOCOL_NS, -1, &m, &e), -PROTOCOL_MISSING_FIELD);
  /* JSON is the device port's, not the write API's. */
  static const char json[] = "{\"device\":\"7\",\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}";
  ck_assert_int_eq(protocol_parse_influx(json, sizeof json - 1, 0, PROTOCOL_MS, -1, &m, &e), -PROTOCOL_MALFORMED);
  static const char blank[] = "# a comment";
  ck_assert_int_eq(protocol_parse_influx(blank, sizeof blank - 1, 0, PROTOCOL_MS, -1, &m, &e), 0);
  ck_assert_int_eq(m.kind, PROTOCOL_BLANK);
}
END_TEST

/* protocol_parse's options: a time of arrival for readings without one,
 * nothing but JSON objects (an agent's HTTP body), another line limit,
 * and members that name the device or carry the time by other names. */
START_TEST(test_protocol_parse_opts) {
  static const char obj[] = "{\"device\":\"7\",\"v\":1}";
  static const char line[] = "m,device=7 v=1";
  protocol_opts o = {.now_ms = 1732590009999};
  protocol_msg m;
  protocol_error e;
  ck_assert_int_eq(protocol_parse(obj, sizeof obj - 1, &o, &m, &e), 0);
  ck_assert_int_eq(m.kind, PROTOCOL_READING);
  ck_assert_int_eq(m.point.ts_ms, 1732590009999);
  ck_assert_int_eq(protocol_parse(line, sizeof line - 1, &o, &m, &e), 0);
  ck_assert_int_eq(m.point.ts_ms, 1732590009999);
  static const char timed[] = "{\"device\":\"7\",\"v\":1,\"timestamp\":1732590000}";
  ck_assert_int_eq(protocol_parse(timed, sizeof timed - 1, &o, &m, &e), 0);
  ck_assert_int_eq(m.point.ts_ms, 1732590000000);
  o.json_only = 1;
  ck_assert_int_eq(protocol_parse(line, sizeof line - 1, &o, &m, &e), -PROTOCOL_MALFORMED);
  o.max_len = 8;
  ck_assert_int_eq(protocol_parse(obj, sizeof obj - 1, &o, &m, &e), -PROTOCOL_OVERSIZED);
  o = (protocol_opts){.now_ms = -1};
  ck_assert_int_eq(protocol_parse(obj, sizeof obj - 1, &o, &m, &e), -PROTOCOL_MISSING_FIELD);
  ck_assert_str_eq(e.field, "ts");
  /* --json-device-key serial --json-time-key when */
  o = (protocol_opts){.now_ms = -1, .device_key = "serial", .time_key = "when"};
  static const char renamed[] = "{\"serial\":\"pump-3\",\"when\":\"2024-11-26T03:00:00.123Z\",\"p\":2.5}";
  ck_assert_int_eq(protocol_parse(renamed, sizeof renamed - 1, &o, &m, &e), 0);
  ck_assert_str_eq(m.device.text, "pump-3");
  ck_assert_int_eq(m.point.ts_ms, 1732590000123);
  ck_assert_uint_eq(m.point.nfields, 1);
  static const char millis[] = "{\"serial\":17,\"when\":1732590000123,\"p\":2.5}";
  ck_assert_int_eq(protocol_parse(millis, sizeof millis - 1, &o, &m, &e), 0);
  ck_assert_uint_eq(m.device.num, 17);
  ck_assert_int_eq(m.point.ts_ms, 1732590000123);
  static const char both[] = "{\"serial\":\"a\",\"device\":\"b\",\"ts\":1732590000123,\"p\":2.5}";
  ck_assert_int_eq(protocol_parse(both, sizeof both - 1, &o, &m, &e), -PROTOCOL_DUPLICATE_FIELD);
  static const char two_times[] = "{\"serial\":\"a\",\"when\":1732590000,\"ts\":1732590000123,\"p\":2.5}";
  ck_assert_int_eq(protocol_parse(two_times, sizeof two_times - 1, &o, &m, &e), -PROTOCOL_DUPLICATE_FIELD);
  static const char bad[] = "{\"serial\":\"a b\",\"when\":1732590000,\"p\":2.5}";
  ck_assert_int_eq(protocol_parse(bad, sizeof bad - 1, &o, &m, &e), -PROTOCOL_BAD_DEVICE_ID);
  /* Without the options these are fields like any other. */
  ck_assert_int_eq(protocol_parse_line(millis, sizeof millis - 1, 0, &m, &e), -PROTOCOL_MISSING_FIELD);
  ck_assert_str_eq(e.field, "device");
}
END_TEST

int main(void) {
  Suite *s = suite_create("protocol");
  tg_test_add(s, "json_tcpgen_shape", test_protocol_json_tcpgen_shape, 10);
  tg_test_add(s, "json_device_number_order_whitespace", test_protocol_json_device_number_order_whitespace, 10);
  tg_test_add(s, "json_health_reply", test_protocol_json_health_reply, 10);
  tg_test_add(s, "json_hello", test_protocol_json_hello, 10);
  tg_test_add(s, "json_type_is_a_field", test_protocol_json_type_is_a_field, 10);
  tg_test_add(s, "json_telegraf", test_protocol_json_telegraf, 10);
  tg_test_add(s, "json_fluent_bit", test_protocol_json_fluent_bit, 10);
  tg_test_add(s, "json_float_seconds_exact", test_protocol_json_float_seconds_exact, 10);
  tg_test_add(s, "json_times", test_protocol_json_times, 10);
  tg_test_add(s, "json_values", test_protocol_json_values, 10);
  tg_test_add(s, "line_shapes", test_protocol_line_shapes, 10);
  tg_test_add(s, "line_any_measurement", test_protocol_line_any_measurement, 10);
  tg_test_add(s, "line_escapes", test_protocol_line_escapes, 10);
  tg_test_add(s, "host_tag_is_the_device", test_protocol_host_tag_is_the_device, 10);
  tg_test_add(s, "tags_only_refused", test_protocol_tags_only_refused, 10);
  tg_test_add(s, "too_many_fields", test_protocol_too_many_fields, 10);
  tg_test_add(s, "unescape", test_protocol_unescape, 10);
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
  tg_test_add(s, "parse_opts", test_protocol_parse_opts, 10);
  return tg_test_main(s);
}
