/* test-serve-acks.c - acknowledgements on the device port: a device that
 * asked for them in its hello learns, per device, the highest seq that is
 * committed; a duplicate is acked too; a device that did not ask hears
 * nothing; a device that never reads its acks is read on as fast as
 * before, its acks coalescing; acks follow a device to its new
 * connection. */
#include "test-serve.h"

#include <inttypes.h>

/* The readings of device `id`, seqs first..last, as JSON lines. */
static void send_readings(raw_device *d, const char *id, uint64_t first, uint64_t last) {
  char line[160];
  for (uint64_t seq = first; seq <= last; seq++) {
    snprintf(line, sizeof line,
             "{\"device\":\"%s\",\"seq\":%" PRIu64 ",\"ts\":1732590000000,\"temperature\":21,\"humidity\":40,"
             "\"battery\":90}\n",
             id, seq);
    raw_send(d, line);
  }
}

/* Reads lines until an ack of device `id` with seq `want` came; acks of
 * lower seqs and of other devices may come first, and are skipped. */
static void await_ack(raw_device *d, const char *id, uint64_t want) {
  char prefix[64];
  snprintf(prefix, sizeof prefix, "{\"type\":\"ack\",\"device\":\"%s\",\"seq\":", id);
  for (;;) {
    int r = raw_read_line(d, SERVE_TEST_PATIENCE);
    ck_assert_msg(r == 0, "no ack of %s %" PRIu64 ": %s", id, want, tg_err_name(r));
    if (strncmp(d->line, prefix, strlen(prefix)) != 0) continue;
    uint64_t seq = strtoull(d->line + strlen(prefix), NULL, 10);
    ck_assert_uint_le(seq, want);
    if (seq == want) return;
  }
}

/* Whether the database holds device id's reading seq. */
static int stored(const serve_test *t, const char *id, uint64_t seq) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM readings WHERE device = ? AND seq = ?", -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (int64_t)seq);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

static uint64_t fig_stored(const serve_figures *f) { return f->readings_stored + f->readings_duplicate; }

static void *acks_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  static raw_device a, quiet; /* static: too big for a task stack together */
  raw_connect(&a, t->s);
  raw_connect(&quiet, t->s);
  raw_hello(&a, "\"acks\":true");
  send_readings(&a, "a1", 1, 3);
  send_readings(&quiet, "q1", 1, 5);
  await_ack(&a, "a1", 3);
  ck_assert_int_eq(stored(t, "a1", 3), 1); /* acked: committed */
  send_readings(&a, "a2", 7, 7);
  await_ack(&a, "a2", 7);
  ck_assert_int_eq(stored(t, "a2", 7), 1);
  /* A resend at or below the mark is acked too, with the mark. */
  send_readings(&a, "a1", 2, 2);
  await_ack(&a, "a1", 3);
  /* The device that did not ask is told nothing, though its readings
   * are committed. */
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 10, SERVE_TEST_PATIENCE), 10);
  ck_assert_int_eq(raw_read_line(&quiet, TG_MS(300)), TG_ETIMEDOUT);
  raw_close(&a);
  raw_close(&quiet);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.readings_stored, 9);
  ck_assert_uint_eq(t->final.readings_duplicate, 1);
  ck_assert_uint_eq(t->final.hellos, 1);
  return NULL;
}

START_TEST(test_serve_acks_after_commit) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  tg_test_run(2, 0, acks_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

enum { SLOW_DEVICES = 2000, SLOW_SEQS = 10 };

/* A device that asked for acks and does not read them: every reading is
 * read and committed all the same (the gateway never waits on writing an
 * ack), and once it reads, the last ack of every device is its last seq. */
static void *slow_reader_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  static raw_device d;
  raw_connect(&d, t->s);
  raw_hello(&d, "\"acks\":true");
  char id[16];
  for (uint64_t seq = 1; seq <= SLOW_SEQS; seq++) /* every batch touches many devices: many acks */
    for (int i = 0; i < SLOW_DEVICES; i++) {
      snprintf(id, sizeof id, "s%d", i);
      send_readings(&d, id, seq, seq);
    }
  uint64_t want = (uint64_t)SLOW_DEVICES * SLOW_SEQS;
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, want, SERVE_TEST_PATIENCE), want);
  /* Now read: lines keep coming until every device's ack says SLOW_SEQS. */
  static uint64_t last[SLOW_DEVICES];
  int done = 0;
  uint64_t lines = 0;
  while (done < SLOW_DEVICES) {
    int r = raw_read_line(&d, SERVE_TEST_PATIENCE);
    ck_assert_msg(r == 0, "%d devices fully acked after %" PRIu64 " lines: %s", done, lines, tg_err_name(r));
    lines++;
    int i;
    uint64_t seq;
    ck_assert_msg(sscanf(d.line, "{\"type\":\"ack\",\"device\":\"s%d\",\"seq\":%" SCNu64 "}", &i, &seq) == 2,
                  "not an ack: %s", d.line);
    ck_assert_uint_ge(seq, last[i]); /* cumulative: never backwards */
    if (seq == SLOW_SEQS && last[i] != SLOW_SEQS) done++;
    last[i] = seq;
  }
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.readings_stored, want);
  return NULL;
}

START_TEST(test_serve_acks_slow_reader) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  t.cfg.batch_size = 500;
  t.cfg.max_ids_per_connection = SLOW_DEVICES; /* one connection speaks for them all */
  tg_test_run(2, 0, slow_reader_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* A device that reconnects gets the acks of its readings on the new
 * connection. */
static void *moves_body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  static raw_device a, b;
  raw_connect(&a, t->s);
  raw_hello(&a, "\"acks\":true");
  send_readings(&a, "m", 1, 1);
  await_ack(&a, "m", 1);
  raw_connect(&b, t->s);
  raw_hello(&b, "\"acks\":true");
  send_readings(&b, "m", 1, 2); /* a resend, then a new one */
  await_ack(&b, "m", 2);
  raw_close(&a);
  raw_close(&b);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.readings_stored, 2);
  return NULL;
}

START_TEST(test_serve_acks_follow_the_device) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  tg_test_run(2, 0, moves_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-acks");
  tg_test_add(s, "after_commit", test_serve_acks_after_commit, 120);
  tg_test_add(s, "slow_reader", test_serve_acks_slow_reader, 120);
  tg_test_add(s, "follow_the_device", test_serve_acks_follow_the_device, 120);
  return tg_test_main(s);
}
