/* test-schema.c - what schema_pack makes of a parsed line: a declared
 * measurement's strictness (the rules the article's telemetry had before
 * readings carried any fields), the type a field keeps, the bound on
 * names, the names storage keeps for itself, duplicates, escaped names
 * decoded, and strings copied into the reading's own block (run under
 * ASan: nothing of the reading may point into the line). */
#include "helpers.h"
#include "protocol.h"
#include "schema.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The article's rules as a declaration file. */
static const char telemetry_decl[] = "# the article's reading\n"
                                     "telemetry temperature float -50 150 unit=celsius\n"
                                     "telemetry humidity float 0 100\n"
                                     "telemetry battery integer 0 100\n";

/* A schema of max_names with the measurements of text declared. */
static schema *declared(uint32_t max_names, const char *text) {
  char path[] = "/tmp/test-schema-XXXXXX", err[256] = "";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  schema *s = schema_new(max_names);
  ck_assert_ptr_nonnull(s);
  int r = schema_declare_file(s, path, err, sizeof err);
  unlink(path);
  ck_assert_msg(r == 0, "%s", err);
  return s;
}

/* Parses line from a copy of its own and packs it; the copy is gone (and
 * its bytes overwritten) before the caller sees the reading. Returns 0
 * or the negative reason, with *e filled. */
static int pack(schema *s, const char *line, reading *r, protocol_error *e) {
  size_t n = strlen(line);
  char *copy = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(copy);
  memcpy(copy, line, n);
  protocol_msg m;
  memset(e, 0, sizeof *e);
  int rc = protocol_parse_line(copy, n, 0, &m, e);
  ck_assert_msg(rc == 0, "parser: %s: %s", protocol_reason_name(rc), line);
  ck_assert_int_eq(m.kind, PROTOCOL_READING);
  rc = schema_pack(s, &m.point, r, e);
  memset(copy, 'X', n);
  free(copy);
  return rc;
}

static void pack_ok(schema *s, const char *line, reading *r) {
  protocol_error e;
  int rc = pack(s, line, r, &e);
  ck_assert_msg(rc == 0, "refused (%s, field %s): %s", protocol_reason_name(rc), e.field ? e.field : "-", line);
}

/* The refusal of line: its reason and, when field is not NULL, the field
 * named ("" for none). */
static void refuse(schema *s, const char *line, protocol_reason want, const char *field) {
  reading r;
  protocol_error e;
  int rc = pack(s, line, &r, &e);
  ck_assert_msg(rc == -(int)want, "want %s, got %s (field %s): %s", protocol_reason_name(want),
                protocol_reason_name(rc), e.field ? e.field : "-", line);
  ck_assert_int_eq(e.reason, want);
  if (field)
    ck_assert_msg(*field ? e.field && strcmp(e.field, field) == 0 : e.field == NULL, "field %s, want %s: %s",
                  e.field ? e.field : "-", *field ? field : "-", line);
}

/* The field of r named name, which must be there. */
static const field_value *field_named(const schema *s, const reading *r, const char *name) {
  uint16_t id = schema_find(s, name, strlen(name));
  ck_assert_msg(id != 0, "no name %s", name);
  const field_value *f = reading_field(r, id);
  ck_assert_msg(f != NULL, "no field %s", name);
  return f;
}

static void expect_float(const schema *s, const reading *r, const char *name, double v) {
  const field_value *f = field_named(s, r, name);
  ck_assert_int_eq(f->type, FIELD_FLOAT);
  ck_assert_double_eq(f->v.f, v);
}

static void expect_int(const schema *s, const reading *r, const char *name, int64_t v) {
  const field_value *f = field_named(s, r, name);
  ck_assert_int_eq(f->type, FIELD_INT);
  ck_assert_int_eq(f->v.i, v);
}

static void expect_text(const schema *s, const reading *r, const char *name, int type, const char *text) {
  const field_value *f = field_named(s, r, name);
  ck_assert_int_eq(f->type, type);
  ck_assert_msg(f->len == strlen(text) && memcmp(f->v.s, text, f->len) == 0, "%s: %.*s, want %s", name, (int)f->len,
                f->v.s, text);
}

/* The column of measurement m named name: its type. */
static int column_type(const schema *s, const char *m, const char *name) {
  const schema_column *cols;
  uint16_t mid = schema_find(s, m, strlen(m)), fid = schema_find(s, name, strlen(name));
  ck_assert(mid && fid);
  int c = schema_column_of(s, mid, fid);
  ck_assert_int_ge(c, 0);
  ck_assert_uint_gt(schema_columns(s, mid, &cols), (uint32_t)c);
  return cols[c].type;
}

/* The article's reading, in both formats, as every schema starts: three
 * inline fields of fixed ids, battery an integer, the others floats. */
START_TEST(test_schema_telemetry) {
  schema *s = schema_new(0);
  ck_assert_ptr_nonnull(s);
  static const char *const lines[] = {
      "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21,\"humidity\":48.2,\"battery\":87}",
      "telemetry,device=7 temperature=21i,humidity=48.2,battery=87i,seq=123i 1732590000123000000",
      "telemetry,device=7 temperature=21,humidity=48.2,battery=87,seq=123i 1732590000123000000",
      "{\"device\":\"7\",\"seq\":123,\"ts\":1732590000123,\"temperature\":21.0,\"humidity\":48.2,\"battery\":87.0}",
  };
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
    reading r;
    pack_ok(s, lines[i], &r);
    ck_assert_uint_eq(r.device, 0); /* the caller's to set */
    ck_assert_uint_eq(r.measurement, SCHEMA_TELEMETRY);
    ck_assert_uint_eq(r.seq, 123);
    ck_assert_int_eq(r.ts_ms, 1732590000123);
    ck_assert_uint_eq(r.nfields, 3);
    ck_assert_uint_eq(r.on_heap, 0);
    expect_float(s, &r, "temperature", 21);
    expect_float(s, &r, "humidity", 48.2);
    expect_int(s, &r, "battery", 87);
    ck_assert_ptr_nonnull(reading_field(&r, SCHEMA_BATTERY));
    reading_free(&r);
  }
  ck_assert_str_eq(schema_name(s, SCHEMA_TELEMETRY), "telemetry");
  ck_assert_str_eq(schema_name(s, SCHEMA_BATTERY), "battery");
  ck_assert_str_eq(schema_name(s, 9999), "");
  ck_assert(schema_is_measurement(s, SCHEMA_TELEMETRY));
  ck_assert(!schema_is_measurement(s, SCHEMA_BATTERY));
  /* Not declared: any other field is a new column. */
  reading r;
  pack_ok(s, "{\"device\":\"7\",\"ts\":1732590000123,\"temperature\":1,\"pressure\":1013}", &r);
  expect_float(s, &r, "pressure", 1013);
  reading_free(&r);
  schema_free(s);
}
END_TEST

/* A declared measurement keeps the article's old rules: only its fields,
 * each required one present, numbers in range. */
START_TEST(test_schema_declared_strictness) {
  schema *s = declared(0, telemetry_decl);
  const schema_column *cols;
  ck_assert_uint_eq(schema_columns(s, SCHEMA_TELEMETRY, &cols), 3);
  ck_assert_str_eq(cols[0].unit, "celsius");
  ck_assert_double_eq(cols[0].min, -50);
  ck_assert_double_eq(cols[0].max, 150);
  ck_assert_int_eq(cols[2].type, FIELD_INT);
  ck_assert_uint_eq(cols[1].required, 1);
  /* unknown_field */
  refuse(s,
         "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1,\"pressure\":"
         "1013}",
         PROTOCOL_UNKNOWN_FIELD, "pressure");
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"Temperature\":1,\"humidity\":1,\"battery\":1}",
         PROTOCOL_UNKNOWN_FIELD, "Temperature");
  refuse(s, "telemetry,device=7,site=x temperature=1,humidity=1,battery=1i,seq=1i 1732590000000000000",
         PROTOCOL_UNKNOWN_FIELD, "site");
  refuse(s, "telemetry,device=7 temperature=1,humidity=1,battery=1i,seq=1i,pressure=1013 1732590000000000000",
         PROTOCOL_UNKNOWN_FIELD, "pressure");
  /* missing_field: each in turn, named */
  refuse(s, "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"humidity\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD,
         "temperature");
  refuse(s, "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"battery\":1}", PROTOCOL_MISSING_FIELD,
         "humidity");
  refuse(s, "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1}",
         PROTOCOL_MISSING_FIELD, "battery");
  refuse(s, "telemetry,device=7 humidity=1,battery=1i,seq=1i 1732590000000000000", PROTOCOL_MISSING_FIELD,
         "temperature");
  /* out_of_range: the boundaries, in both formats */
  static const struct {
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
    reading r;
    protocol_error e;
    snprintf(line, sizeof line,
             "{\"device\":\"7\",\"seq\":1,\"ts\":1732590000000,\"temperature\":%s,\"humidity\":%s,\"battery\":%s}",
             cases[i].temperature, cases[i].humidity, cases[i].battery);
    int rc = pack(s, line, &r, &e);
    ck_assert_msg(cases[i].ok ? rc == 0 : rc == -PROTOCOL_OUT_OF_RANGE, "%s: %s", line, protocol_reason_name(rc));
    if (rc == 0) reading_free(&r);
    snprintf(line, sizeof line, "telemetry,device=7 temperature=%s,humidity=%s,battery=%si,seq=1i 1732590000000000000",
             cases[i].temperature, cases[i].humidity, cases[i].battery);
    rc = pack(s, line, &r, &e);
    ck_assert_msg(cases[i].ok ? rc == 0 : rc == -PROTOCOL_OUT_OF_RANGE, "%s: %s", line, protocol_reason_name(rc));
    if (rc == 0) reading_free(&r);
  }
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"temperature\":151,\"humidity\":1,\"battery\":1}",
         PROTOCOL_OUT_OF_RANGE, "temperature");
  /* Its types too: a fraction is no battery level, a string no
   * temperature. */
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":87.5}",
         PROTOCOL_TYPE_CONFLICT, "battery");
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"temperature\":\"21.5\",\"humidity\":1,\"battery\":1}",
         PROTOCOL_TYPE_CONFLICT, "temperature");
  refuse(s, "telemetry,device=7 temperature=t,humidity=1,battery=1i 1732590000000000000", PROTOCOL_TYPE_CONFLICT,
         "temperature");
  /* Other measurements stay free. */
  reading r;
  pack_ok(s, "weather,device=7 temperature=300,wind=\"NE\" 1732590000000000000", &r);
  reading_free(&r);
  schema_free(s);
}
END_TEST

/* What the file may say, and what it may not. */
START_TEST(test_schema_declare_file) {
  schema *s = declared(0, "power watts float 0 5000 unit=W\npower phase tag\npower note string optional\n"
                          "power on boolean\n");
  reading r;
  pack_ok(s, "power,device=7,phase=L1 watts=120.5,on=t 1732590000000000000", &r);
  expect_text(s, &r, "phase", FIELD_TAG, "L1");
  reading_free(&r);
  refuse(s, "power,device=7 watts=120.5,on=t 1732590000000000000", PROTOCOL_MISSING_FIELD, "phase");
  refuse(s, "power,device=7,phase=L1 watts=120.5,on=1i 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "on");
  refuse(s, "power,device=7,phase=L1 watts=120.5,on=t,note=1i 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "note");
  refuse(s, "power,device=7 watts=120.5,on=t,phase=\"L1\" 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "phase");
  schema_free(s);
  static const char *const bad[] = {
      "m f\n",         "m f decimal\n", "m f float 1\n",        "m f float 2 1\n",        "m f string 0 1\n",
      "m f float x\n", "# nothing\n",   "m f float\nm f int\n", "m f float\nm f float\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char path[] = "/tmp/test-schema-XXXXXX", err[256] = "";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
    close(fd);
    s = schema_new(0);
    int rc = schema_declare_file(s, path, err, sizeof err);
    unlink(path);
    ck_assert_msg(rc == -EINVAL, "%s: %d", bad[i], rc);
    ck_assert_msg(strstr(err, path) != NULL, "%s", err);
    schema_free(s);
  }
  char err[256];
  s = schema_new(0);
  ck_assert_int_eq(schema_declare_file(s, "/nonexistent/decl", err, sizeof err), -ENOENT);
  schema_free(s);
}
END_TEST

/* A field keeps the type its first value gave it. */
START_TEST(test_schema_types) {
  schema *s = schema_new(0);
  reading r;
  pack_ok(s, "m,device=7 f=1.5,i=1i,b=t,s=\"x\" 1732590000000000000", &r);
  reading_free(&r);
  ck_assert_int_eq(column_type(s, "m", "f"), FIELD_FLOAT);
  ck_assert_int_eq(column_type(s, "m", "i"), FIELD_INT);
  ck_assert_int_eq(column_type(s, "m", "b"), FIELD_BOOL);
  ck_assert_int_eq(column_type(s, "m", "s"), FIELD_STRING);
  /* An integer into a float field is converted; a whole float into an
   * integer field too (87.0 is 87); nothing else. */
  pack_ok(s, "m,device=7 f=3i,i=87.0 1732590000000000000", &r);
  expect_float(s, &r, "f", 3);
  expect_int(s, &r, "i", 87);
  reading_free(&r);
  pack_ok(s, "m,device=7 i=-9.1e18 1732590000000000000", &r);
  expect_int(s, &r, "i", -9100000000000000000);
  reading_free(&r);
  refuse(s, "m,device=7 i=1.5 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "i");
  refuse(s, "m,device=7 i=1e19 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "i");
  refuse(s, "m,device=7 f=\"1.5\" 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "f");
  refuse(s, "m,device=7 f=t 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "f");
  refuse(s, "m,device=7 b=1i 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "b");
  refuse(s, "m,device=7 s=1 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "s");
  refuse(s, "m,device=7,s=x v=1 1732590000000000000", PROTOCOL_TYPE_CONFLICT, "s"); /* a tag is no string field */
  /* JSON's numbers say no type: a new field's whole number is a float;
   * an integer field takes a JSON whole number. */
  pack_ok(s, "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"j\",\"w\":5,\"x\":2.5,\"on\":true}", &r);
  expect_float(s, &r, "w", 5);
  reading_free(&r);
  ck_assert_int_eq(column_type(s, "j", "w"), FIELD_FLOAT);
  ck_assert_int_eq(column_type(s, "j", "on"), FIELD_BOOL);
  pack_ok(s, "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"m\",\"i\":42,\"f\":7}", &r);
  expect_int(s, &r, "i", 42);
  expect_float(s, &r, "f", 7);
  reading_free(&r);
  /* A column storage found in the database. */
  ck_assert_int_eq(schema_add_column(s, "m", "i", FIELD_INT), 0);
  ck_assert_int_eq(schema_add_column(s, "m", "i", FIELD_FLOAT), -EEXIST);
  ck_assert_int_eq(schema_add_column(s, "m", "k", FIELD_INT), 0);
  pack_ok(s, "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"m\",\"k\":1}", &r);
  expect_int(s, &r, "k", 1);
  reading_free(&r);
  /* The same name in another measurement is a column of its own. */
  pack_ok(s, "n,device=7 f=\"text\" 1732590000000000000", &r);
  reading_free(&r);
  ck_assert_int_eq(column_type(s, "n", "f"), FIELD_STRING);
  ck_assert_int_eq(column_type(s, "m", "f"), FIELD_FLOAT);
  schema_free(s);
}
END_TEST

/* Names are bounded: a device that invents a name per line runs out of
 * them, and what is known goes on working. */
START_TEST(test_schema_bounded_names) {
  schema *s = schema_new(16);
  reading r;
  char line[128];
  int refused = 0, n;
  for (n = 0; n < 20; n++) {
    protocol_error e;
    snprintf(line, sizeof line, "m,device=7 f%d=1 1732590000000000000", n);
    int rc = pack(s, line, &r, &e);
    if (rc == 0) {
      reading_free(&r);
      continue;
    }
    ck_assert_int_eq(rc, -PROTOCOL_TOO_MANY_FIELDS);
    refused++;
  }
  ck_assert_int_eq(refused, 20 - (16 - 5)); /* 4 names of the article's, "m", then 11 fields */
  pack_ok(s, "m,device=7 f0=2,f10=3 1732590000000000000", &r);
  reading_free(&r);
  pack_ok(s, "telemetry,device=7 temperature=1 1732590000000000000", &r);
  reading_free(&r);
  refuse(s, "other,device=7 f0=1 1732590000000000000", PROTOCOL_TOO_MANY_FIELDS, "");
  schema_free(s);

  /* A measurement has at most SCHEMA_COLUMNS_MAX fields. */
  s = schema_new(SCHEMA_COLUMNS_MAX + 100);
  int cols = 0;
  for (int round = 0; cols < SCHEMA_COLUMNS_MAX; round++) {
    char big[4096];
    int k = snprintf(big, sizeof big, "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"wide\"");
    for (int i = 0; i < PROTOCOL_FIELDS_MAX && cols < SCHEMA_COLUMNS_MAX; i++, cols++)
      k += snprintf(big + k, sizeof big - (size_t)k, ",\"c%d\":1", cols);
    snprintf(big + k, sizeof big - (size_t)k, "}");
    pack_ok(s, big, &r);
    reading_free(&r);
  }
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"wide\",\"one_more\":1}", PROTOCOL_TOO_MANY_FIELDS,
         "one_more");
  pack_ok(s, "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"wide\",\"c0\":1}", &r);
  reading_free(&r);
  schema_free(s);
}
END_TEST

/* Storage's own tables and columns are no one's measurement or field;
 * names are 1 .. SCHEMA_NAME_MAX bytes without control characters. */
START_TEST(test_schema_names) {
  schema *s = schema_new(0);
  static const char *const bad[] = {
      "readings,device=7 v=1 1732590000000000000",
      "device_hwm,device=7 v=1 1732590000000000000",
      "mark_log,device=7 v=1 1732590000000000000",
      "sqlite_master,device=7 v=1 1732590000000000000",
      "SQLITE_x,device=7 v=1 1732590000000000000",
      "m,device=7 ts_ms=1 1732590000000000000",
      "m,device=7 batch=1 1732590000000000000",
      "m,device=7 device=1 1732590000000000000",
      "m,device=7,seq=3 v=1 1732590000000000000",
      "{\"device\":\"7\",\"ts\":1732590000000,\"\":1}",
      "{\"device\":\"7\",\"ts\":1732590000000,\"a\\u0001\":1}",
      "{\"device\":\"7\",\"ts\":1732590000000,\"a\\u0000b\":1}",
      "{\"device\":\"7\",\"ts\":1732590000000,\"a\\nb\":1}",
      "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"readings\",\"v\":1}",
      "{\"device\":\"7\",\"ts\":1732590000000,\"tags\":{\"ts_ms\":\"x\"},\"v\":1}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) refuse(s, bad[i], PROTOCOL_BAD_NAME, "");
  char line[512], name[SCHEMA_NAME_MAX + 2];
  memset(name, 'n', sizeof name);
  name[SCHEMA_NAME_MAX] = 0;
  reading r;
  snprintf(line, sizeof line, "m,device=7 %s=1 1732590000000000000", name);
  pack_ok(s, line, &r);
  reading_free(&r);
  name[SCHEMA_NAME_MAX] = 'n';
  name[SCHEMA_NAME_MAX + 1] = 0;
  snprintf(line, sizeof line, "m,device=7 %s=1 1732590000000000000", name);
  refuse(s, line, PROTOCOL_BAD_NAME, "");
  snprintf(line, sizeof line, "%s,device=7 v=1 1732590000000000000", name);
  refuse(s, line, PROTOCOL_BAD_NAME, "");
  /* A NUL is no character of SQL text, in a name or in a string. */
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"s\":\"a\\u0000b\"}", PROTOCOL_MALFORMED, "s");
  {
    static const char raw[] = "m,device=7,t=a\0b v=1,s=\"x\0y\" 1732590000000000000";
    protocol_msg m;
    protocol_error e;
    ck_assert_int_eq(protocol_parse_line(raw, sizeof raw - 1, 0, &m, &e), 0);
    ck_assert_int_eq(schema_pack(s, &m.point, &r, &e), -PROTOCOL_MALFORMED);
    ck_assert_str_eq(e.field, "t");
  }
  /* The names storage reserves are fine as measurements' names for
   * fields and the other way round. */
  pack_ok(s, "batch,device=7 readings=1 1732590000000000000", &r);
  reading_free(&r);
  schema_free(s);
}
END_TEST

/* Two fields of one name in one reading, however written. */
START_TEST(test_schema_duplicate_fields) {
  schema *s = schema_new(0);
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"v\":1,\"v\":2}", PROTOCOL_DUPLICATE_FIELD, "v");
  refuse(s, "m,device=7 v=1,v=2 1732590000000000000", PROTOCOL_DUPLICATE_FIELD, "v");
  refuse(s, "m2,device=7,v=x v=2 1732590000000000000", PROTOCOL_DUPLICATE_FIELD, "v");
  refuse(s, "m,device=7 v\\ w=1,v\\ w=2 1732590000000000000", PROTOCOL_DUPLICATE_FIELD, "v w");
  refuse(s, "{\"device\":\"7\",\"ts\":1732590000000,\"caf\\u00e9\":1,\"caf\xc3\xa9\":2}", PROTOCOL_DUPLICATE_FIELD,
         "caf\xc3\xa9");
  refuse(s, "{\"name\":\"m\",\"fields\":{\"v\":1},\"tags\":{\"host\":\"h\",\"v\":\"x\"},\"timestamp\":1732590000}",
         PROTOCOL_DUPLICATE_FIELD, "v");
  refuse(s, "{\"name\":\"m\",\"fields\":{\"v\":1},\"tags\":{\"host\":\"h\"},\"timestamp\":1732590000,\"v\":1}",
         PROTOCOL_DUPLICATE_FIELD, "v");
  schema_free(s);
}
END_TEST

/* Escaped names are decoded before they are names: line protocol's
 * backslashes, JSON's \u escapes and surrogate pairs. */
START_TEST(test_schema_escaped_names) {
  schema *s = schema_new(0);
  reading r;
  pack_ok(s,
          "my\\ room\\,east,device=7,tag\\ k\\=1=v\\,al\\ ue f\\=x\\ y=1,s=\"say \\\"hi\\\" \\\\o/\" "
          "1732590000000000000",
          &r);
  ck_assert_str_eq(schema_name(s, r.measurement), "my room,east");
  expect_text(s, &r, "tag k=1", FIELD_TAG, "v,al ue");
  expect_float(s, &r, "f=x y", 1);
  expect_text(s, &r, "s", FIELD_STRING, "say \"hi\" \\o/");
  reading_free(&r);
  pack_ok(s,
          "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"m\xc3\xa9t\xc3\xa9o\",\"caf\\u00e9\":1,"
          "\"\\ud83d\\ude00\":2,\"s\":\"a\\tb\\u00e9\\ud83d\\ude00\\\"\"}",
          &r);
  ck_assert_str_eq(schema_name(s, r.measurement), "m\xc3\xa9t\xc3\xa9o");
  expect_float(s, &r, "caf\xc3\xa9", 1);
  expect_float(s, &r, "\xf0\x9f\x98\x80", 2);
  expect_text(s, &r, "s", FIELD_STRING, "a\tb\xc3\xa9\xf0\x9f\x98\x80\"");
  reading_free(&r);
  /* A backslash before any other byte is a plain backslash, as InfluxDB
   * reads it: Windows paths and regular expressions come through. */
  pack_ok(s, "m,device=7,path=C:\\Users\\me a\\b=1,s=\"C:\\temp \\\"x\\\"\",re=\"^\\d+\\.\\d\\\\\" 1732590000000000000",
          &r);
  expect_text(s, &r, "path", FIELD_TAG, "C:\\Users\\me");
  expect_float(s, &r, "a\\b", 1);
  expect_text(s, &r, "s", FIELD_STRING, "C:\\temp \"x\"");
  expect_text(s, &r, "re", FIELD_STRING, "^\\d+\\.\\d\\");
  reading_free(&r);
  /* The same name however written is one id. */
  pack_ok(s, "{\"device\":\"7\",\"ts\":1732590000000,\"measurement\":\"m\",\"caf\xc3\xa9\":3}", &r);
  ck_assert_uint_eq(reading_fields(&r)[0].name, schema_find(s, "caf\xc3\xa9", 5));
  reading_free(&r);
  schema_free(s);
}
END_TEST

/* Strings and tags live in the reading's one heap block, so the line can
 * go (pack() overwrites and frees it before the checks); numbers only,
 * up to READING_INLINE_FIELDS, stay inline. */
START_TEST(test_schema_heap_block) {
  schema *s = schema_new(0);
  reading r;
  pack_ok(s, "m,device=7,room=kitchen,floor=2 t=21.5,note=\"door open\",n=3i,empty=\"\" 1732590000000000000", &r);
  ck_assert_uint_eq(r.on_heap, 1);
  ck_assert_uint_eq(r.nfields, 6);
  expect_text(s, &r, "room", FIELD_TAG, "kitchen");
  expect_text(s, &r, "floor", FIELD_TAG, "2");
  expect_text(s, &r, "note", FIELD_STRING, "door open");
  expect_text(s, &r, "empty", FIELD_STRING, "");
  expect_float(s, &r, "t", 21.5);
  expect_int(s, &r, "n", 3);
  const field_value *f = reading_fields(&r);
  ck_assert_ptr_eq(f, r.u.heap);
  const char *bytes = (const char *)(r.u.heap + r.nfields);
  size_t text = strlen("kitchen") + strlen("2") + strlen("door open");
  for (uint32_t i = 0; i < r.nfields; i++)
    if (f[i].type == FIELD_STRING || f[i].type == FIELD_TAG)
      ck_assert(f[i].v.s >= bytes && f[i].v.s + f[i].len <= bytes + text);
  /* The reading moves by value: the copy owns the block. */
  reading moved = r;
  reading_free(&moved);
  ck_assert_uint_eq(moved.on_heap, 0);
  ck_assert_uint_eq(moved.nfields, 0);
  /* Three numbers stay inline, four do not. */
  pack_ok(s, "m,device=7 a=1,b=2i,c=t 1732590000000000000", &r);
  ck_assert_uint_eq(r.on_heap, 0);
  reading_free(&r);
  pack_ok(s, "m,device=7 a=1,b=2i,c=t,d=4 1732590000000000000", &r);
  ck_assert_uint_eq(r.on_heap, 1);
  expect_float(s, &r, "d", 4);
  reading_free(&r);
  /* One tag is enough for the heap. */
  pack_ok(s, "m,device=7,room=x a=1 1732590000000000000", &r);
  ck_assert_uint_eq(r.on_heap, 1);
  expect_text(s, &r, "room", FIELD_TAG, "x");
  /* A batch frees what its readings own. */
  batch b = {0};
  ck_assert_int_eq(batch_push(&b, &r), 0);
  pack_ok(s, "m,device=7 note=\"x\" 1732590000000000000", &r);
  ck_assert_int_eq(batch_push(&b, &r), 0);
  batch_free(&b);
  schema_free(s);
}
END_TEST

enum { PACKERS = 4, PACKED_LINES = 3000, NAMES = 200 };

typedef struct packer {
  schema *s;
  int id;
  long refused;
} packer;

/* Packs lines of two measurements whose fields appear in another order
 * in each thread, so that new names and columns race. */
static void *pack_lines(void *arg) {
  packer *p = arg;
  for (int i = 0; i < PACKED_LINES; i++) {
    char line[256];
    int f = (i * (p->id + 1) * 7 + p->id) % NAMES;
    int n = snprintf(line, sizeof line, "m%d,device=%d f%d=%di,g%d=%d.5,s%d=\"x\" 1732590000000000000", i % 2, p->id, f,
                     i, (f + 1) % NAMES, i, (f + 2) % NAMES);
    protocol_msg m;
    protocol_error e;
    reading r;
    if (protocol_parse_line(line, (size_t)n, 0, &m, &e) != 0 || schema_pack(p->s, &m.point, &r, &e) != 0) {
      p->refused++;
      continue;
    }
    if (r.nfields != 3 || !schema_is_measurement(p->s, r.measurement)) p->refused++;
    reading_free(&r);
  }
  return NULL;
}

/* Names and columns are made by whoever meets them first, from any
 * thread at once (under TSan, this is the test of the schema's
 * lock-free reads): every line packs, and each name has one id and
 * each measurement one column per name. */
START_TEST(test_schema_threads) {
  schema *s = schema_new(0);
  pthread_t t[PACKERS];
  packer p[PACKERS];
  for (int i = 0; i < PACKERS; i++) {
    p[i] = (packer){.s = s, .id = i};
    ck_assert_int_eq(pthread_create(&t[i], NULL, pack_lines, &p[i]), 0);
  }
  for (int i = 0; i < PACKERS; i++) {
    pthread_join(t[i], NULL);
    ck_assert_int_eq(p[i].refused, 0);
  }
  for (int k = 0; k < 2; k++) {
    char name[16];
    snprintf(name, sizeof name, "m%d", k);
    uint16_t m = schema_find(s, name, strlen(name));
    ck_assert(schema_is_measurement(s, m));
    const schema_column *cols;
    uint32_t n = schema_columns(s, m, &cols);
    for (uint32_t i = 0; i < n; i++) {
      ck_assert_int_eq(schema_column_of(s, m, cols[i].name), (int)i);
      const char *col = schema_name(s, cols[i].name);
      ck_assert_int_eq(cols[i].type, col[0] == 'f' ? FIELD_INT : col[0] == 'g' ? FIELD_FLOAT : FIELD_STRING);
      ck_assert_uint_eq(schema_find(s, col, strlen(col)), cols[i].name);
      for (uint32_t j = 0; j < i; j++) ck_assert_uint_ne(cols[j].name, cols[i].name);
    }
  }
  schema_free(s);
}
END_TEST

int main(void) {
  Suite *s = suite_create("schema");
  tg_test_add(s, "telemetry", test_schema_telemetry, 10);
  tg_test_add(s, "declared_strictness", test_schema_declared_strictness, 10);
  tg_test_add(s, "declare_file", test_schema_declare_file, 10);
  tg_test_add(s, "types", test_schema_types, 10);
  tg_test_add(s, "bounded_names", test_schema_bounded_names, 10);
  tg_test_add(s, "names", test_schema_names, 10);
  tg_test_add(s, "duplicate_fields", test_schema_duplicate_fields, 10);
  tg_test_add(s, "escaped_names", test_schema_escaped_names, 10);
  tg_test_add(s, "heap_block", test_schema_heap_block, 10);
  tg_test_add(s, "threads", test_schema_threads, 60);
  return tg_test_main(s);
}
