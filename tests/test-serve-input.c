/* test-serve-input.c - bad input on a device connection: each kind is
 * counted under its reason and answered with one error line naming it,
 * the good lines around it are stored, and the connection goes on; a
 * connection of nothing but garbage is closed after --error-limit; error
 * lines are rate-limited; new ids past --max-devices and connections past
 * --max-connections are refused. */
#include "test-serve.h"

#include <inttypes.h>

static const char *good(int seq) {
  static char line[160];
  snprintf(
      line, sizeof line,
      "{\"device\":\"good\",\"seq\":%d,\"ts\":1732590000000,\"temperature\":21.5,\"humidity\":40,\"battery\":88}\n",
      seq);
  return line;
}

typedef struct bad_case {
  const char *line;
  const char *reason;
  int index;
} bad_case;

static char oversized[6000];

static void *kinds_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  memset(oversized, 0, sizeof oversized);
  memcpy(oversized, "{\"device\":\"big\",\"x\":\"", 21);
  memset(oversized + 21, 'a', 5000);
  strcat(oversized, "\"}\n");
  const bad_case cases[] = {
      {"{\"device\":\n", "malformed", PROTOCOL_MALFORMED},
      {oversized, "oversized", PROTOCOL_OVERSIZED},
      {"{\"device\":\"caf\xc3\",\"seq\":1,\"ts\":1,\"temperature\":1,\"humidity\":1,\"battery\":1}\n", "not_utf8",
       PROTOCOL_NOT_UTF8},
      {"{\"device\":\"nan\",\"seq\":1,\"ts\":1732590000000,\"temperature\":NaN,\"humidity\":40,\"battery\":88}\n", NULL,
       0}, /* NaN is not JSON: malformed or bad_number, the parser says which */
      {"{\"device\":\"hot\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1e300,\"humidity\":40,\"battery\":88}\n",
       "out_of_range", PROTOCOL_OUT_OF_RANGE},
      {"telemetry,device=nan temperature=nan,humidity=40,battery=88i,seq=1i 1732590000000000000\n", NULL, 0},
      {"{\"device\":\"x\",\"seq\":1,\"ts\":1732590000000,\"temperature\":21,\"humidity\":40,\"battery\":88,\"colour\":"
       "1}\n",
       "unknown_field", PROTOCOL_UNKNOWN_FIELD},
  };
  int n = (int)(sizeof cases / sizeof cases[0]);
  raw_device d;
  raw_connect(&d, t->s);
  raw_send(&d, good(1));
  for (int i = 0; i < n; i++) {
    raw_send(&d, cases[i].line);
    ck_assert_int_eq(raw_read_line(&d, SERVE_TEST_PATIENCE), 0);
    ck_assert_msg(strncmp(d.line, "{\"type\":\"error\",\"reason\":\"", 26) == 0, "case %d: %s", i, d.line);
    if (cases[i].reason) {
      char want[96];
      snprintf(want, sizeof want, "{\"type\":\"error\",\"reason\":\"%s\",\"line\":%d}", cases[i].reason, 2 * i + 2);
      ck_assert_str_eq(d.line, want);
    }
    raw_send(&d, good(i + 2)); /* the connection goes on */
  }
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_received, (uint64_t)n + 1, SERVE_TEST_PATIENCE), (uint64_t)n + 1);
  serve_figures f;
  serve_figures_get(t->s, &f);
  ck_assert_uint_eq(f.bad_lines, (uint64_t)n);
  ck_assert_uint_eq(f.error_lines_sent, (uint64_t)n);
  ck_assert_uint_eq(
      f.bad_input[PROTOCOL_MALFORMED] + f.bad_input[PROTOCOL_BAD_NUMBER] + f.bad_input[PROTOCOL_OUT_OF_RANGE], 4);
  ck_assert_uint_ge(f.bad_input[PROTOCOL_OUT_OF_RANGE], 1);
  for (int i = 0; i < n; i++)
    if (cases[i].reason) ck_assert_uint_ge(f.bad_input[cases[i].index], 1);
  ck_assert_uint_eq(f.connections_closed, 0);
  ck_assert_uint_eq(f.devices_known, 1); /* only "good": a bad line registers nobody */
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.readings_stored, (uint64_t)n + 1);
  ck_assert_int_eq(serve_test_rows_of(t, "good"), n + 1);
  return NULL;
}

START_TEST(test_serve_input_each_kind) {
  serve_test t;
  serve_test_init(&t);
  serve_test_declare_article(&t); /* out_of_range and unknown_field are the declared measurement's */
  t.cfg.error_lines_per_s = 1000;
  tg_test_run(2, 0, kinds_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* A line cut by the device hanging up is counted as truncated, not
 * parsed (its last field would be short). */
static void *truncated_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  raw_device d;
  raw_connect(&d, t->s);
  raw_send(&d, good(1));
  raw_send(&d, "telemetry,device=good temperature=20,humidity=41,battery=77i,seq=2i 17325900");
  raw_close(&d);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_bad, 1, SERVE_TEST_PATIENCE), 1);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_TRUNCATED], 1);
  ck_assert_uint_eq(t->final.readings_stored, 1);
  return NULL;
}

START_TEST(test_serve_input_truncated) {
  serve_test t;
  serve_test_init(&t);
  tg_test_run(2, 0, truncated_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* Garbage only: closed after --error-limit bad lines in a row; error
 * lines past the rate are counted, not sent. */
static void *garbage_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  raw_device d;
  raw_connect(&d, t->s);
  /* All 50 in one write, handed to the kernel before serve can close the
   * connection after its 20th: 50 separate writes raced that close and
   * one could fail with EPIPE. */
  char garbage[50 * 8 + 1] = "";
  for (int i = 0; i < 50; i++) strcat(garbage, "garbage\n");
  int64_t t0 = tg_now();
  raw_send(&d, garbage);
  int lines = 0, r;
  while ((r = raw_read_line(&d, SERVE_TEST_PATIENCE)) == 0) lines++;
  ck_assert_int_eq(r, TG_EOF); /* closed by serve */
  /* The rate: 3 a second, a burst of 3. Serve reads the 20 lines in one
   * go, so 3 is what a run sees - unless its worker was preempted for a
   * third of a second in between, when the bucket refilled: the bound is
   * what the time actually taken allows. */
  int allowed = 3 + (int)((tg_now() - t0) * 3 / TG_SEC(1));
  ck_assert_int_ge(lines, 3);
  ck_assert_int_le(lines, allowed);
  raw_close(&d);
  serve_figures f;
  serve_figures_get(t->s, &f);
  ck_assert_uint_eq(f.bad_lines, 20);
  ck_assert_uint_eq(f.error_lines_sent, (uint64_t)lines);
  ck_assert_uint_eq(f.error_lines_suppressed, 20 - (uint64_t)lines);
  ck_assert_uint_eq(f.connections_closed_errors, 1);
  ck_assert_int_eq(serve_test_stop(t), 0);
  return NULL;
}

START_TEST(test_serve_input_garbage_closed) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.error_limit = 20;
  t.cfg.error_lines_per_s = 3;
  tg_test_run(2, 0, garbage_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* --max-devices 2: a third id is refused, the first two go on. */
static void *devices_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  raw_device d;
  raw_connect(&d, t->s);
  raw_send(&d, "telemetry,device=a temperature=20,humidity=41,battery=77i,seq=1i 1732590000000000000\n"
               "telemetry,device=b temperature=20,humidity=41,battery=77i,seq=1i 1732590000000000000\n"
               "telemetry,device=c temperature=20,humidity=41,battery=77i,seq=1i 1732590000000000000\n"
               "telemetry,device=a temperature=20,humidity=41,battery=77i,seq=2i 1732590000000000000\n");
  ck_assert_int_eq(raw_read_line(&d, SERVE_TEST_PATIENCE), 0);
  ck_assert_str_eq(d.line, "{\"type\":\"error\",\"reason\":\"too_many_devices\",\"line\":3}");
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_received, 3, SERVE_TEST_PATIENCE), 3);
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_TOO_MANY_DEVICES], 1);
  ck_assert_uint_eq(t->final.devices_known, 2);
  ck_assert_int_eq(serve_test_rows_of(t, "a"), 2);
  ck_assert_int_eq(serve_test_rows_of(t, "c"), 0);
  return NULL;
}

START_TEST(test_serve_input_max_devices) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.max_devices = 2;
  tg_test_run(2, 0, devices_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* --max-connections 2: the third is told and closed; the two go on. */
static void *conns_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  raw_device a, b, c;
  raw_connect(&a, t->s);
  raw_connect(&b, t->s);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_open, 2, SERVE_TEST_PATIENCE), 2);
  raw_connect(&c, t->s);
  ck_assert_int_eq(raw_read_line(&c, SERVE_TEST_PATIENCE), 0);
  ck_assert_str_eq(c.line, "{\"type\":\"error\",\"reason\":\"too_many_connections\"}");
  ck_assert_int_eq(raw_read_line(&c, SERVE_TEST_PATIENCE), TG_EOF);
  raw_close(&c);
  raw_send(&a, good(1));
  raw_send(
      &b,
      "{\"device\":\"other\",\"seq\":1,\"ts\":1732590000000,\"temperature\":21.5,\"humidity\":40,\"battery\":88}\n");
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_received, 2, SERVE_TEST_PATIENCE), 2);
  raw_close(&a);
  raw_close(&b);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.connections_rejected, 1);
  ck_assert_uint_eq(t->final.connections_accepted, 2);
  ck_assert_uint_eq(t->final.readings_stored, 2);
  return NULL;
}

START_TEST(test_serve_input_max_connections) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.max_connections = 2;
  tg_test_run(2, 0, conns_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* The seqs stored for one device, in order, as "1,2,3" (-1 when the
 * database cannot be read). */
static const char *stored_seqs(const serve_test *t, const char *id) {
  static char out[256];
  sqlite3 *db;
  out[0] = 0;
  if (sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return "-1";
  sqlite3_stmt *st;
  sqlite3_prepare_v2(db, "SELECT seq FROM readings WHERE device = ?1 ORDER BY rowid", -1, &st, NULL);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  while (sqlite3_step(st) == SQLITE_ROW)
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s%lld", out[0] ? "," : "", sqlite3_column_int64(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

static uint64_t fig_stored(const serve_figures *f) { return f->readings_stored; }

#define NO_SEQ(id)      "{\"device\":\"" id "\",\"ts\":1732590000000,\"temperature\":21.5,\"humidity\":40,\"battery\":88}\n"
#define NO_SEQ_LINE(id) "telemetry,device=" id " temperature=20,humidity=41,battery=77i 1732590000000000000\n"

/* Readings without seq: numbered after the device's stored mark and
 * every seq it sent, never taken for resends (the same line twice is
 * stored twice), across a restart too. */
static void *no_seq_body(void *arg) {
  serve_test *t = arg;
  raw_device d;
  serve_test_start(t);
  raw_connect(&d, t->s);
  raw_send(&d, NO_SEQ("plain") NO_SEQ("plain") NO_SEQ_LINE("plain"));
  raw_send(&d, "{\"device\":\"mixed\",\"seq\":10,\"ts\":1732590000000,\"temperature\":21.5,\"humidity\":40,"
               "\"battery\":88}\n" NO_SEQ("mixed"));
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 5, SERVE_TEST_PATIENCE), 5);
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_str_eq(stored_seqs(t, "plain"), "1,2,3");
  ck_assert_str_eq(stored_seqs(t, "mixed"), "10,11");

  serve_test_start(t);
  raw_connect(&d, t->s);
  raw_send(&d, NO_SEQ_LINE("plain") NO_SEQ("mixed"));
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 2, SERVE_TEST_PATIENCE), 2);
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_str_eq(stored_seqs(t, "plain"), "1,2,3,4");
  ck_assert_str_eq(stored_seqs(t, "mixed"), "10,11,12");
  ck_assert_uint_eq(t->final.readings_duplicate, 0);
  return NULL;
}

START_TEST(test_serve_input_no_seq) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  tg_test_run(2, 0, no_seq_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

#define AT(id, seq, ts) \
  "{\"device\":\"" id "\",\"seq\":" #seq ",\"ts\":" #ts ",\"temperature\":21.5,\"humidity\":40,\"battery\":88}\n"

/* A seq that goes back with a later ts is a device counting again, not a
 * resend: refused as seq_restarted instead of dropped in silence. An
 * older reading sent again is still a resend. */
static void *restart_body(void *arg) {
  serve_test *t = arg;
  raw_device d;
  serve_test_start(t);
  raw_connect(&d, t->s);
  raw_send(&d, AT("r", 1, 1732590000000) AT("r", 2, 1732590001000) AT("r", 3, 1732590002000));
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 3, SERVE_TEST_PATIENCE), 3);
  raw_send(&d, AT("r", 2, 1732590001000) AT("r", 1, 1732590010000));
  ck_assert_int_eq(raw_read_line(&d, SERVE_TEST_PATIENCE), 0);
  ck_assert_str_eq(d.line, "{\"type\":\"error\",\"reason\":\"seq_restarted\",\"line\":5}");
  raw_send(&d, AT("r", 4, 1732590011000));
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 4, SERVE_TEST_PATIENCE), 4);
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_SEQ_RESTARTED], 1);
  ck_assert_uint_eq(t->final.readings_duplicate, 1);
  ck_assert_str_eq(stored_seqs(t, "r"), "1,2,3,4");
  return NULL;
}

START_TEST(test_serve_input_seq_restarted) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  tg_test_run(2, 0, restart_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-input");
  tg_test_add(s, "each_kind", test_serve_input_each_kind, 90);
  tg_test_add(s, "truncated", test_serve_input_truncated, 90);
  tg_test_add(s, "garbage_closed", test_serve_input_garbage_closed, 90);
  tg_test_add(s, "max_devices", test_serve_input_max_devices, 90);
  tg_test_add(s, "max_connections", test_serve_input_max_connections, 90);
  tg_test_add(s, "no_seq", test_serve_input_no_seq, 90);
  tg_test_add(s, "seq_restarted", test_serve_input_seq_restarted, 90);
  return tg_test_main(s);
}
