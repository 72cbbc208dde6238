/* test-serve.h - what the end-to-end tests of `telegate serve` share: a
 * serve on 127.0.0.1 with port 0 and its SQLite database in a fresh
 * temporary directory, devices as libtg sockets in the same runtime, and
 * a look into the database itself. Every wait is bounded: a condition is
 * polled a bounded number of times, never slept on and hoped for. */
#ifndef TELEGATE_TEST_SERVE_H
#define TELEGATE_TEST_SERVE_H

#include "helpers.h"
#include "serve.h"
#include "simulator.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct serve_test {
  char dir[64];
  char db[128];
  char schema[128]; /* serve_test_declare_article's file */
  serve_config cfg;
  serve *s;
  serve_figures final;
} serve_test;

/* SQLite storage in a temporary directory, any free port, health rounds
 * off (tests that want them set an interval), log thrown away. */
/* Declares the article's measurement as examples/telemetry.schema does:
 * telemetry takes only its three fields, each required and in range. */
static inline void serve_test_declare_article(serve_test *t) {
  snprintf(t->schema, sizeof t->schema, "%s/telemetry.schema", t->dir);
  FILE *f = fopen(t->schema, "w");
  ck_assert_ptr_nonnull(f);
  fputs("telemetry temperature float -50 150 unit=celsius\n"
        "telemetry humidity float 0 100 unit=percent\n"
        "telemetry battery integer 0 100 unit=percent\n",
        f);
  fclose(f);
  t->cfg.schema_path = t->schema;
}

static inline void serve_test_init(serve_test *t) {
  memset(t, 0, sizeof *t);
  const char *tmp = getenv("TMPDIR");
  snprintf(t->dir, sizeof t->dir, "%s/telegate-serve-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(t->dir));
  snprintf(t->db, sizeof t->db, "%s/serve.db", t->dir);
  serve_config_defaults(&t->cfg);
  t->cfg.listen_port = 0;
  t->cfg.db_path = t->db;
  t->cfg.workers = 2;
  t->cfg.health_interval_ms = 0;
  t->cfg.quiet = 1;
  t->cfg.out = fopen("/dev/null", "w");
  ck_assert_ptr_nonnull(t->cfg.out);
}

static inline void serve_test_cleanup(serve_test *t) {
  const char *suffix[] = {"", "-wal", "-shm", "-journal"};
  char path[160];
  for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
    snprintf(path, sizeof path, "%s%s", t->db, suffix[i]);
    unlink(path);
  }
  if (t->schema[0]) unlink(t->schema);
  rmdir(t->dir);
  if (t->cfg.out) fclose(t->cfg.out);
  t->cfg.out = NULL;
}

/* Inside a task: starts serve. */
static inline void serve_test_start(serve_test *t) {
  char err[256] = "";
  int r = serve_start(&t->cfg, &t->s, err, sizeof err);
  ck_assert_msg(r == 0, "serve_start: %s: %s", tg_err_name(r), err);
  ck_assert_int_gt(serve_port(t->s), 0);
}

/* Inside a task: the ordered shutdown (what SIGTERM does); returns
 * serve_wait's verdict (0: nothing lost). */
static inline int serve_test_stop(serve_test *t) {
  serve_stop(t->s);
  int r = serve_wait(t->s, &t->final);
  t->s = NULL;
  return r;
}

/* How long a condition may take to come true: far more than any needs on
 * a quiet machine, enough for TSan on a loaded one. A test that waits for
 * it fails with the value it saw, it does not hang. */
#define SERVE_TEST_PATIENCE TG_SEC(30)

/* Polls fig() every 5 ms until it reaches want or timeout_ns passed.
 * Returns the last value seen. */
static inline uint64_t serve_test_wait_for(serve *s, uint64_t (*fig)(const serve_figures *), uint64_t want,
                                           int64_t timeout_ns) {
  int64_t deadline = tg_deadline_in(timeout_ns);
  serve_figures f;
  for (;;) {
    serve_figures_get(s, &f);
    if (fig(&f) >= want || tg_now() >= deadline) return fig(&f);
    tg_sleep(TG_MS(5));
  }
}

static inline uint64_t fig_received(const serve_figures *f) { return f->readings_received; }
static inline uint64_t fig_open(const serve_figures *f) { return f->connections_open; }
static inline uint64_t fig_bad(const serve_figures *f) { return f->bad_lines; }
static inline uint64_t fig_connected(const serve_figures *f) { return f->devices_connected; }

/* The database must hold, for every device of the report, exactly the
 * seqs 1..sent, once each, and a high-water mark of sent; and nothing
 * else. Returns the rows. */
static inline uint64_t serve_test_check_db(const serve_test *t, const sim_report *rep, const char *prefix) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "SELECT r.device, COUNT(*), COUNT(DISTINCT r.seq), MIN(r.seq), MAX(r.seq), "
                                      "(SELECT seq FROM device_hwm h WHERE h.device = r.device) "
                                      "FROM readings r GROUP BY r.device",
                                      -1, &st, NULL),
                   SQLITE_OK);
  uint64_t rows = 0;
  int devices = 0;
  size_t plen = strlen(prefix);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *id = (const char *)sqlite3_column_text(st, 0);
    int64_t n = sqlite3_column_int64(st, 1), distinct = sqlite3_column_int64(st, 2);
    int64_t lo = sqlite3_column_int64(st, 3), hi = sqlite3_column_int64(st, 4), mark = sqlite3_column_int64(st, 5);
    ck_assert_msg(strncmp(id, prefix, plen) == 0, "unexpected device %s", id);
    int i = atoi(id + plen) - 1;
    ck_assert_int_ge(i, 0);
    ck_assert_int_lt(i, rep->count);
    ck_assert_str_eq(rep->devices[i].id, id);
    ck_assert_int_eq(n, distinct);
    ck_assert_int_eq(lo, 1);
    ck_assert_int_eq(hi, n);
    ck_assert_int_eq(mark, hi);
    ck_assert_msg((uint64_t)n == rep->devices[i].sent, "device %s: %lld stored, %llu sent", id, (long long)n,
                  (unsigned long long)rep->devices[i].sent);
    rows += (uint64_t)n;
    devices++;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  for (int i = 0; i < rep->count; i++)
    if (rep->devices[i].sent) devices--;
  ck_assert_int_eq(devices, 0); /* every device that sent is there */
  return rows;
}

/* A hand-made device: a socket and line reading with a deadline. */
typedef struct raw_device {
  tg_tcp *sock;
  char line[512];
  char buf[16384]; /* bytes read and not yet returned as lines */
  size_t len;
} raw_device;

static inline void raw_connect(raw_device *d, serve *s) {
  memset(d, 0, sizeof *d);
  ck_assert_int_eq(tg_tcp_connect(&d->sock, "127.0.0.1", serve_port(s)), 0);
  /* recv shows a byte once: everything it shows must fit in buf, next
   * to a partial line */
  ck_assert_int_eq(tg_tcp_set_recv_buffer(d->sock, sizeof d->buf / 2), 0);
}

static inline void raw_send(raw_device *d, const char *text) {
  ck_assert_int_eq(tg_tcp_write(d->sock, text, strlen(text)), 0);
}

/* The next line from the gateway, without its '\n', into d->line.
 * Returns 0, TG_ETIMEDOUT, TG_EOF or an error. Bytes are copied out of
 * the socket as they come: recv waits for bytes not seen yet, so lines
 * already shown must be kept here. */
static inline int raw_read_line(raw_device *d, int64_t timeout_ns) {
  int64_t deadline = tg_deadline_in(timeout_ns);
  for (;;) {
    char *nl = memchr(d->buf, '\n', d->len);
    if (nl) {
      size_t n = (size_t)(nl - d->buf);
      size_t keep = n < sizeof d->line - 1 ? n : sizeof d->line - 1;
      memcpy(d->line, d->buf, keep);
      d->line[keep] = '\0';
      memmove(d->buf, nl + 1, d->len - n - 1);
      d->len -= n + 1;
      return 0;
    }
    const char *data;
    size_t len;
    int r = tg_tcp_recv_dl(d->sock, &data, &len, deadline);
    if (r != 0) return r;
    size_t take = len < sizeof d->buf - d->len ? len : sizeof d->buf - d->len;
    memcpy(d->buf + d->len, data, take);
    d->len += take;
    tg_tcp_consume(d->sock, take);
  }
}

/* Sends a hello with these members ("\"acks\":true", ...) and reads
 * the gateway's answer. */
static inline void raw_hello(raw_device *d, const char *members) {
  char line[128];
  snprintf(line, sizeof line, "{\"type\":\"hello\",%s}\n", members);
  raw_send(d, line);
  ck_assert_int_eq(raw_read_line(d, SERVE_TEST_PATIENCE), 0);
  static const char answer[] = "{\"type\":\"hello\",";
  ck_assert_msg(strncmp(d->line, answer, sizeof answer - 1) == 0, "not a hello: %s", d->line);
}

static inline void raw_close(raw_device *d) {
  if (d->sock) tg_tcp_close(d->sock);
  d->sock = NULL;
}

/* Rows of one device in the database (-1: cannot read it). */
static inline int64_t serve_test_rows_of(const serve_test *t, const char *id) {
  sqlite3 *db;
  if (sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return -1;
  sqlite3_stmt *st;
  int64_t n = -1;
  if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM readings WHERE device = ?1", -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

#endif
