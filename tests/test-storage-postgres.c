/* test-storage-postgres.c - the PostgreSQL backend under storage.c's
 * marks, against a server of the test's own (test-postgres.h): rows and
 * marks stored exactly, resends dropped across a reopen, seqs keep all 64
 * bits, a commit that fails stores nothing and its retry stores it once,
 * failures named (read-only, a lock held), the server restarted or
 * crashed under a storage that goes on, several connections written
 * from several threads at once keep every device's readings in order;
 * and readings of any measurement with any fields: a table per
 * measurement, a column per field added as fields come (and only then),
 * NULL for a field a reading lacks, the stored types back in the schema
 * at open, a conflict with them refused, the readings table of releases
 * before fields brought up to date. */
#include "test-postgres.h"
#include "test-storage.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

/* Opens the storage with schema sc (NULL: the storage's own). */
static storage *pg_open_schema(const pg_cluster *c, const char *uri, int n, int reset, schema *sc) {
  storage *s = NULL;
  char err[200] = "";
  storage_opts o = {.backend = "postgres", .path = uri ? uri : c->uri, .connections = n, .reset = reset, .schema = sc};
  int r = storage_open(&s, &o, err, sizeof err);
  ck_assert_msg(r == 0, "storage_open(postgres): %d %s", r, err);
  return s;
}

static storage *pg_open(const pg_cluster *c, const char *uri, int n, int reset, storage_durability durability) {
  storage *s = NULL;
  char err[200] = "";
  storage_opts o = {
      .backend = "postgres", .path = uri ? uri : c->uri, .connections = n, .reset = reset, .durability = durability};
  int r = storage_open(&s, &o, err, sizeof err);
  ck_assert_msg(r == 0, "storage_open(postgres): %d %s", r, err);
  return s;
}

/* devices 1..ndev, seqs from..to each. */
static batch make_batch(uint64_t id, uint32_t ndev, uint64_t from, uint64_t to) {
  batch b = {.id = id};
  for (uint64_t q = from; q <= to; q++)
    for (uint32_t d = 1; d <= ndev; d++) storage_test_push(&b, d, q);
  return b;
}

/* storage_write on every connection until each commits; the codes of the
 * failed attempts must be `expect`, at most `tries` of them per
 * connection. Returns the failures. */
static int write_until(storage *s, const batch *b, int expect, int tries, storage_write_result *sum) {
  int failures = 0;
  *sum = (storage_write_result){0};
  for (int c = 0; c < storage_connections(s); c++) {
    storage_write_result res;
    char err[200] = "";
    int r, n = 0;
    while ((r = storage_write(s, c, b, &res, err, sizeof err)) != 0) {
      ck_assert_msg(r == expect, "storage_write: %d (%s), expected %d", r, err, expect);
      ck_assert_uint_eq(res.inserted + res.duplicates, 0);
      ck_assert_msg(++n < tries, "still failing after %d attempts: %s", n, err);
      failures++;
      pg_sleep_ms(20);
    }
    sum->inserted += res.inserted;
    sum->duplicates += res.duplicates;
  }
  return failures;
}

START_TEST(test_rows_and_marks_stored_exactly) {
  pg_cluster c;
  pg_cluster_start(&c);
  storage *s = pg_open(&c, NULL, 3, 1, STORAGE_DURABILITY_NORMAL);
  batch b = make_batch(1, 9, 1, 4);
  storage_test_push(&b, 4, 2); /* a resend inside the batch */
  storage_write_result res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 36);
  ck_assert_uint_eq(res.duplicates, 1);
  batch_free(&b);
  /* Next batch: the last of the previous one again, then new ones. */
  b = make_batch(2, 9, 4, 6);
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 18);
  ck_assert_uint_eq(res.duplicates, 9);
  batch_free(&b);
  ck_assert_uint_eq(storage_test_count(s), 54);

  /* What a row holds, column by column. */
  PGconn *pg = pg_connect(&c);
  PGresult *r = PQexec(pg, "SELECT device, seq, ts_ms, temperature, humidity, battery, batch FROM readings"
                           " WHERE device = '7' AND seq = 5");
  ck_assert_int_eq(PQntuples(r), 1);
  ck_assert_str_eq(PQgetvalue(r, 0, 0), "7");
  ck_assert_str_eq(PQgetvalue(r, 0, 1), "5");
  ck_assert_str_eq(PQgetvalue(r, 0, 2), "1700000000005");
  ck_assert_str_eq(PQgetvalue(r, 0, 3), "21.5");
  ck_assert_str_eq(PQgetvalue(r, 0, 4), "45");
  ck_assert_str_eq(PQgetvalue(r, 0, 5), "90");
  ck_assert_str_eq(PQgetvalue(r, 0, 6), "2");
  PQclear(r);
  /* The marks are in mark_log until a close folds them. */
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM mark_log"), 6);
  storage_close(s);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM mark_log"), 0);
  ck_assert_int_eq(pg_value(pg, "SELECT seq FROM device_hwm WHERE device = '3'"), 6);
  PQfinish(pg);

  /* Reopened: the marks come from device_hwm. */
  s = pg_open(&c, NULL, 2, 0, STORAGE_DURABILITY_FULL);
  b = make_batch(3, 9, 5, 7);
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 9);
  ck_assert_uint_eq(res.duplicates, 18);
  batch_free(&b);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(pg_check_sequences(&c, &rows), 9);
  ck_assert_uint_eq(rows, 63);
  pg_cluster_destroy(&c);
}
END_TEST

/* A process that ends without closing the storage leaves its marks in
 * mark_log; the next open folds them, and drops the resends. Also with
 * more than FOLD_EVERY (256) writes, which fold on the way. */
START_TEST(test_marks_survive_crash) {
  pg_cluster c;
  pg_cluster_start(&c);
  const uint64_t writes[] = {3, 300};
  for (int k = 0; k < 2; k++) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* a serve that dies: no close */
      storage *s = pg_open(&c, NULL, 2, 1, STORAGE_DURABILITY_NORMAL);
      for (uint64_t id = 1; id <= writes[k]; id++) {
        batch b = make_batch(id, 50, id, id);
        storage_test_write(s, &b);
        batch_free(&b);
      }
      _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_int_eq(status, 0);
    PGconn *pg = pg_connect(&c);
    ck_assert_int_gt(pg_value(pg, "SELECT count(*) FROM mark_log"), 0);
    storage *s = pg_open(&c, NULL, 3, 0, STORAGE_DURABILITY_NORMAL);
    ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM mark_log"), 0);
    PQfinish(pg);
    batch b = make_batch(writes[k] + 1, 50, writes[k], writes[k] + 1);
    storage_write_result res = storage_test_write(s, &b);
    ck_assert_uint_eq(res.inserted, 50);
    ck_assert_uint_eq(res.duplicates, 50);
    batch_free(&b);
    storage_close(s);
    uint64_t rows;
    ck_assert_int_eq(pg_check_sequences(&c, &rows), 50);
    ck_assert_uint_eq(rows, 50 * (writes[k] + 1));
  }
  pg_cluster_destroy(&c);
}
END_TEST

START_TEST(test_seq_full_64_bits) {
  pg_cluster c;
  pg_cluster_start(&c);
  const uint64_t top = UINT64_MAX, half = (uint64_t)1 << 63;
  storage *s = pg_open(&c, NULL, 1, 1, STORAGE_DURABILITY_NORMAL);
  batch b = {.id = 1};
  const uint64_t seqs[] = {half - 1, half, top - 1, top};
  for (int i = 0; i < 4; i++) storage_test_push(&b, 1, seqs[i]);
  storage_test_push(&b, 1, half); /* a resend */
  storage_write_result res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 4);
  ck_assert_uint_eq(res.duplicates, 1);
  batch_free(&b);
  storage_close(s);
  PGconn *pg = pg_connect(&c);
  ck_assert_uint_eq((uint64_t)pg_value(pg, "SELECT seq FROM device_hwm WHERE device = '1'"), top);
  ck_assert_uint_eq((uint64_t)pg_value(pg, "SELECT seq FROM readings ORDER BY seq < 0, seq LIMIT 1"), half - 1);
  PQfinish(pg);
  s = pg_open(&c, NULL, 1, 0, STORAGE_DURABILITY_NORMAL);
  b = (batch){.id = 2};
  storage_test_push(&b, 1, top);
  storage_test_push(&b, 1, 5);
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 0);
  ck_assert_uint_eq(res.duplicates, 2);
  batch_free(&b);
  ck_assert_uint_eq(storage_test_count(s), 4);
  storage_close(s);
  pg_cluster_destroy(&c);
}
END_TEST

/* A transaction that fails - in the COPY of the rows, or in the marks
 * after the rows went in - stores nothing and moves no mark; once the
 * cause is gone, the same batch retried is stored once. */
START_TEST(test_failed_commit_stores_nothing) {
  pg_cluster c;
  pg_cluster_start(&c);
  storage *s = pg_open(&c, NULL, 2, 1, STORAGE_DURABILITY_NORMAL);
  batch b = make_batch(1, 4, 1, 3);
  storage_write_result res;
  write_until(s, &b, 0, 1, &res);
  batch_free(&b);
  PGconn *pg = pg_connect(&c);
  /* Seq 5 refused by readings, then batch 3's marks by mark_log. */
  const char *const causes[][2] = {
      {"ALTER TABLE readings ADD CONSTRAINT no_5 CHECK (seq <> 5)", "ALTER TABLE readings DROP CONSTRAINT no_5"},
      {"ALTER TABLE mark_log ADD CONSTRAINT no_3 CHECK (batch <> 3)", "ALTER TABLE mark_log DROP CONSTRAINT no_3"},
  };
  for (uint64_t k = 0; k < 2; k++) {
    pg_exec(pg, causes[k][0]);
    b = make_batch(2 + k, 4, 4 + 2 * k, 5 + 2 * k);
    char err[200] = "";
    for (int conn = 0; conn < 2; conn++) {
      int r = storage_write(s, conn, &b, &res, err, sizeof err);
      ck_assert_msg(r == -EIO, "%d %s", r, err);
      ck_assert_msg(strstr(err, "(SQLSTATE 23514)"), "%s", err);
      ck_assert_uint_eq(res.inserted + res.duplicates, 0);
    }
    ck_assert_uint_eq(storage_test_count(s), 12 + 8 * k);
    int found;
    uint64_t seq;
    ck_assert_int_eq(storage_mark_get(s, 2, &found, &seq, err, sizeof err), 0);
    ck_assert_uint_eq(seq, 3 + 2 * k);
    pg_exec(pg, causes[k][1]);
    write_until(s, &b, 0, 1, &res);
    ck_assert_uint_eq(res.inserted, 8);
    batch_free(&b);
  }
  PQfinish(pg);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(pg_check_sequences(&c, &rows), 4);
  ck_assert_uint_eq(rows, 28);
  pg_cluster_destroy(&c);
}
END_TEST

/* Failures say what a person must fix: a database turned read-only is
 * -EROFS, a lock held past lock_timeout -EBUSY; both commit once lifted. */
START_TEST(test_failures_named) {
  pg_cluster c;
  pg_cluster_start(&c);
  char uri[200];
  snprintf(uri, sizeof uri, "%s?options=-c%%20lock_timeout%%3D200", c.uri);
  storage *s = pg_open(&c, uri, 1, 1, STORAGE_DURABILITY_NORMAL);
  PGconn *pg = pg_connect(&c);
  batch b = make_batch(1, 3, 1, 2);
  storage_write_result res;
  write_until(s, &b, 0, 1, &res);
  batch_free(&b);

  /* Read-only: a reload reaches the storage's session at its next
   * statement, so the first attempts may still commit. */
  pg_exec(pg, "ALTER SYSTEM SET default_transaction_read_only = on");
  pg_exec(pg, "SELECT pg_reload_conf()");
  char err[200] = "";
  int r = 0;
  uint64_t id = 2, seq = 3;
  for (int i = 0; i < PG_PATIENCE_MS / 20; i++, id++, seq++) {
    b = make_batch(id, 3, seq, seq);
    r = storage_write(s, 0, &b, &res, err, sizeof err);
    batch_free(&b);
    if (r != 0) break;
    pg_sleep_ms(20);
  }
  ck_assert_msg(r == -EROFS, "%d %s", r, err);
  ck_assert_ptr_nonnull(strstr(err, "read_only_sql_transaction"));
  pg_exec(pg, "SET default_transaction_read_only = off");
  pg_exec(pg, "ALTER SYSTEM RESET default_transaction_read_only");
  pg_exec(pg, "SELECT pg_reload_conf()");
  b = make_batch(id, 3, seq, seq);
  write_until(s, &b, -EROFS, PG_PATIENCE_MS / 20, &res);
  ck_assert_uint_eq(res.inserted, 3);

  /* A lock another session holds. */
  pg_exec(pg, "BEGIN");
  pg_exec(pg, "LOCK TABLE readings IN ACCESS EXCLUSIVE MODE");
  batch_free(&b);
  b = make_batch(id + 1, 3, seq + 1, seq + 1);
  r = storage_write(s, 0, &b, &res, err, sizeof err);
  ck_assert_msg(r == -EBUSY, "%d %s", r, err);
  ck_assert_ptr_nonnull(strstr(err, "lock_not_available"));
  pg_exec(pg, "COMMIT");
  write_until(s, &b, 0, 1, &res);
  ck_assert_uint_eq(res.inserted, 3);
  batch_free(&b);
  PQfinish(pg);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(pg_check_sequences(&c, &rows), 3);
  pg_cluster_destroy(&c);
}
END_TEST

/* The server stops (fast, then as a crash) under an open storage: writes
 * fail with -EIO and a reason while it is down, the storage connects
 * again once it is back, and every reading is stored once. With
 * durability full, a crash loses no commit that returned. */
START_TEST(test_server_restart_reconnects) {
  pg_cluster c;
  pg_cluster_start(&c);
  storage *s = pg_open(&c, NULL, 2, 1, STORAGE_DURABILITY_FULL);
  uint64_t id = 1, seq = 1, stored = 0;
  storage_write_result res;
  const int stops[] = {SIGINT, SIGQUIT};
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < 3; i++, id++, seq += 2) {
      batch b = make_batch(id, 6, seq, seq + 1);
      write_until(s, &b, 0, 1, &res);
      stored += res.inserted;
      batch_free(&b);
    }
    pg_cluster_stop(&c, stops[k]);
    batch b = make_batch(id++, 6, seq, seq + 1);
    seq += 2;
    char err[200] = "";
    int r = storage_write(s, 0, &b, &res, err, sizeof err);
    ck_assert_msg(r == -EIO, "%d %s", r, err);
    ck_assert_msg(strstr(err, "connection lost") || strstr(err, "cannot connect"), "%s", err);
    r = storage_write(s, 0, &b, &res, err, sizeof err); /* a new connection is tried, and refused */
    ck_assert_msg(r == -EIO && strstr(err, "cannot connect"), "%d %s", r, err);
    pg_cluster_run(&c);
    write_until(s, &b, -EIO, PG_PATIENCE_MS / 20, &res);
    stored += res.inserted;
    batch_free(&b);
  }
  ck_assert_uint_eq(stored, 8 * 12);
  ck_assert_uint_eq(storage_test_count(s), stored);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(pg_check_sequences(&c, &rows), 6);
  ck_assert_uint_eq(rows, stored);
  pg_cluster_destroy(&c);
}
END_TEST

/* No server at all: open fails at once with the reason. */
START_TEST(test_open_refused) {
  storage *s = NULL;
  char err[200] = "", uri[128];
  pg_cluster c;
  pg_cluster_start(&c);
  snprintf(uri, sizeof uri, "%s", c.uri);
  pg_cluster_destroy(&c);
  storage_opts o = {.backend = "postgres", .path = uri, .connections = 1};
  ck_assert_int_eq(storage_open(&s, &o, err, sizeof err), -EIO);
  ck_assert_ptr_null(s);
  ck_assert_msg(strncmp(err, "postgres: cannot connect: ", 26) == 0, "%s", err);
  o.path = "postgresql://nobody@127.0.0.1:1/x?connect_timeout=bad";
  ck_assert_int_eq(storage_open(&s, &o, err, sizeof err), -EIO);
}
END_TEST

/* A TCP proxy in front of the server that can break a session around its
 * COMMIT: on the way in (the server never sees the COMMIT: it rolls back)
 * or on the way back (the server committed; the storage never hears it),
 * and refuse sessions meanwhile. */
enum { PROXY_PAIRS = 8 };

typedef struct proxy {
  int listen_fd, port, target;
  pthread_t thread;
  int fds[PROXY_PAIRS][2]; /* client, server; -1: free (the proxy thread's own) */
  _Atomic int cut_request, cut_reply, refuse, stop, cuts;
} proxy;

static int proxy_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

static int has_commit(const char *buf, size_t n) { return memmem(buf, n, "COMMIT", sizeof "COMMIT") != NULL; }

static void proxy_close_pair(proxy *p, int i) {
  close(p->fds[i][0]);
  close(p->fds[i][1]);
  p->fds[i][0] = p->fds[i][1] = -1;
}

static void *proxy_run(void *arg) {
  proxy *p = arg;
  char buf[1 << 16];
  while (!atomic_load(&p->stop)) {
    struct pollfd pf[1 + 2 * PROXY_PAIRS];
    int n = 0;
    pf[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
    for (int i = 0; i < PROXY_PAIRS; i++)
      for (int k = 0; k < 2; k++) pf[n++] = (struct pollfd){.fd = p->fds[i][k], .events = POLLIN};
    if (poll(pf, (nfds_t)n, 20) <= 0) continue;
    if (pf[0].revents & POLLIN) {
      int c = accept(p->listen_fd, NULL, NULL), slot = -1;
      for (int i = 0; i < PROXY_PAIRS && slot < 0; i++)
        if (p->fds[i][0] < 0) slot = i;
      int s = c >= 0 && slot >= 0 && !atomic_load(&p->refuse) ? proxy_connect(p->target) : -1;
      if (s < 0) {
        if (c >= 0) close(c);
      } else {
        p->fds[slot][0] = c;
        p->fds[slot][1] = s;
      }
    }
    for (int i = 0; i < PROXY_PAIRS; i++)
      for (int k = 0; k < 2; k++) {
        if (p->fds[i][k] < 0 || !(pf[1 + 2 * i + k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t got = read(p->fds[i][k], buf, sizeof buf);
        _Atomic int *cut = k == 0 ? &p->cut_request : &p->cut_reply;
        if (got > 0 && atomic_load(cut) && has_commit(buf, (size_t)got)) {
          atomic_store(cut, 0);
          atomic_fetch_add(&p->cuts, 1);
          got = 0;
        }
        if (got <= 0 || write(p->fds[i][1 - k], buf, (size_t)got) != got) proxy_close_pair(p, i);
      }
  }
  for (int i = 0; i < PROXY_PAIRS; i++)
    if (p->fds[i][0] >= 0) proxy_close_pair(p, i);
  return NULL;
}

static void proxy_start(proxy *p, int target) {
  memset(p, 0, sizeof *p);
  memset(p->fds, -1, sizeof p->fds);
  p->target = target;
  p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ck_assert_int_eq(bind(p->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_eq(listen(p->listen_fd, 16), 0);
  ck_assert_int_eq(getsockname(p->listen_fd, (struct sockaddr *)&a, &len), 0);
  p->port = ntohs(a.sin_port);
  ck_assert_int_eq(pthread_create(&p->thread, NULL, proxy_run, p), 0);
}

static void proxy_stop(proxy *p) {
  atomic_store(&p->stop, 1);
  pthread_join(p->thread, NULL);
  close(p->listen_fd);
}

/* The session breaks around a COMMIT: after the server committed, the
 * storage cannot know; its retry of the same batch finds the commit and
 * stores nothing twice. Before the server saw it, the retry writes.
 * Either way, while the server cannot be reached, the retries fail. */
enum { LOST_SESSION_TRIES = 1000 }; /* 20 s at 20 ms a try */

START_TEST(test_commit_lost_in_flight) {
  pg_cluster c;
  pg_cluster_start(&c);
  proxy px;
  proxy_start(&px, c.port);
  char uri[160];
  snprintf(uri, sizeof uri, "postgresql://telegate@127.0.0.1:%d/postgres", px.port);
  storage *s = pg_open(&c, uri, 1, 1, STORAGE_DURABILITY_NORMAL);
  PGconn *pg = pg_connect(&c);
  storage_write_result res;
  batch b = make_batch(1, 5, 1, 2);
  write_until(s, &b, 0, 1, &res);
  batch_free(&b);
  uint64_t id = 2, seq = 3, stored = 10;
  for (int k = 0; k < 4; k++, id++, seq += 2) {
    int reply = k % 2 == 0, refuse = k >= 2;
    atomic_store(reply ? &px.cut_reply : &px.cut_request, 1);
    b = make_batch(id, 5, seq, seq + 1);
    char err[200] = "";
    int r = storage_write(s, 0, &b, &res, err, sizeof err);
    ck_assert_msg(r == -EIO && strstr(err, "connection lost"), "%d %s", r, err);
    ck_assert_int_eq(atomic_load(&px.cuts), k + 1);
    ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM readings"), (long long)(stored + (reply ? 10 : 0)));
    if (refuse) {
      atomic_store(&px.refuse, 1);
      r = storage_write(s, 0, &b, &res, err, sizeof err);
      ck_assert_msg(r == -EIO && strstr(err, "cannot connect"), "%d %s", r, err);
      atomic_store(&px.refuse, 0);
    }
    /* The server may not have finished the lost session's transaction
     * yet (a loaded machine): -EBUSY until it has, as the writer retries. */
    write_until(s, &b, -EBUSY, LOST_SESSION_TRIES, &res);
    ck_assert_uint_eq(res.inserted, 10); /* committed by the lost attempt, or by this one */
    stored += 10;
    ck_assert_uint_eq(storage_test_count(s), stored);
    batch_free(&b);
  }
  /* The same for a write that folds (the 256th of the connection): its
   * mark_log row is gone with the others, its marks are in device_hwm. */
  for (int k = 0; k < 250; k++, id++, seq += 2) {
    b = make_batch(id, 5, seq, seq + 1);
    write_until(s, &b, 0, 1, &res);
    stored += 10;
    batch_free(&b);
  }
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM mark_log"), 255);
  atomic_store(&px.cut_reply, 1);
  b = make_batch(id, 5, seq, seq + 1);
  char err[200] = "";
  int r = storage_write(s, 0, &b, &res, err, sizeof err);
  ck_assert_msg(r == -EIO && strstr(err, "connection lost"), "%d %s", r, err);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM mark_log"), 0);
  write_until(s, &b, -EBUSY, LOST_SESSION_TRIES, &res);
  ck_assert_uint_eq(res.inserted, 10);
  stored += 10;
  ck_assert_uint_eq(storage_test_count(s), stored);
  batch_free(&b);
  PQfinish(pg);
  storage_close(s);
  proxy_stop(&px);
  uint64_t rows;
  ck_assert_int_eq(pg_check_sequences(&c, &rows), 5);
  ck_assert_uint_eq(rows, stored);
  pg_cluster_destroy(&c);
}
END_TEST

START_TEST(test_connections_in_parallel_keep_order) {
  pg_cluster c;
  pg_cluster_start(&c);
  storage *s = pg_open(&c, NULL, PARALLEL_CONNS, 1, STORAGE_DURABILITY_NORMAL);
  pthread_t th[PARALLEL_CONNS];
  parallel_writer w[PARALLEL_CONNS];
  for (int k = 0; k < PARALLEL_CONNS; k++) {
    w[k] = (parallel_writer){.s = s, .conn = k};
    ck_assert_int_eq(pthread_create(&th[k], NULL, parallel_write_conn, &w[k]), 0);
  }
  uint64_t inserted = 0, duplicates = 0;
  for (int k = 0; k < PARALLEL_CONNS; k++) {
    pthread_join(th[k], NULL);
    ck_assert_int_eq(w[k].failed, 0);
    ck_assert_uint_eq(w[k].inserted,
                      (uint64_t)(PARALLEL_DEVICES / PARALLEL_CONNS) * PARALLEL_BATCHES * PARALLEL_PER_BATCH);
    inserted += w[k].inserted;
    duplicates += w[k].duplicates;
  }
  ck_assert_uint_eq(inserted, (uint64_t)PARALLEL_DEVICES * PARALLEL_BATCHES * PARALLEL_PER_BATCH);
  ck_assert_uint_eq(duplicates, (uint64_t)PARALLEL_DEVICES * (PARALLEL_BATCHES - 1));
  ck_assert_uint_eq(storage_test_count(s), inserted);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(pg_check_sequences(&c, &rows), PARALLEL_DEVICES);
  ck_assert_uint_eq(rows, inserted);
  pg_cluster_destroy(&c);
}
END_TEST

/* A line of line protocol (its device tag, its seq field) as the gateway
 * makes it a reading, pushed onto b. */
static void push_line(schema *sc, batch *b, uint32_t device, const char *line) {
  protocol_msg msg;
  protocol_error perr;
  reading r;
  int e = protocol_parse_line(line, strlen(line), 0, &msg, &perr);
  ck_assert_msg(e == 0, "%s: %s", line, protocol_reason_name(e));
  e = schema_pack(sc, &msg.point, &r, &perr);
  ck_assert_msg(e == 0, "%s: %s", line, protocol_reason_name(e));
  r.device = device;
  ck_assert_int_eq(batch_push(b, &r), 0);
}

/* The value of a one-row, one-column query as text ("NULL" for NULL). */
static const char *pg_text(PGconn *pg, const char *sql, char *buf, size_t len) {
  PGresult *r = PQexec(pg, sql);
  ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql, PQerrorMessage(pg));
  snprintf(buf, len, "%s", PQgetisnull(r, 0, 0) ? "NULL" : PQgetvalue(r, 0, 0));
  PQclear(r);
  return buf;
}

#define ck_pg_text(pg, sql, want)                                \
  do {                                                           \
    char got_[256];                                              \
    ck_assert_str_eq(pg_text(pg, sql, got_, sizeof got_), want); \
  } while (0)

/* The columns of a table, "name type[ tag], ...", in order. */
#define COLUMNS_OF(table)                                                          \
  "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) ||"        \
  " coalesce(' ' || col_description(attrelid, attnum), ''), ', ' ORDER BY attnum)" \
  " FROM pg_attribute WHERE attrelid = '" table "'::regclass AND attnum > 0 AND NOT attisdropped"

/* The type schema sc has for field f of measurement m, or 0. */
static int schema_type(const schema *sc, const char *m, const char *f) {
  const schema_column *cols;
  uint16_t mid = schema_find(sc, m, strlen(m));
  uint32_t n = schema_columns(sc, mid, &cols);
  int k = schema_column_of(sc, mid, schema_find(sc, f, strlen(f)));
  return k >= 0 && (uint32_t)k < n ? cols[k].type : 0;
}

/* Readings of three measurements, mixed in batches, with every type of
 * field; fields that come later become columns then; a field a reading
 * lacks is NULL. Reopened with a schema of its own, the storage gives it
 * the stored types; a reset drops every measurement's table. */
START_TEST(test_measurements_any_fields) {
  pg_cluster c;
  pg_cluster_start(&c);
  schema *sc = schema_new(0);
  storage *s = pg_open_schema(&c, NULL, 2, 1, sc);
  batch b = {.id = 1};
  push_line(sc, &b, 1, "weather,device=1,room=kitchen temp=21.5,count=3i,seq=1i 1700000000001000000");
  push_line(sc, &b, 2, "telemetry,device=2 temperature=20.5,humidity=40,battery=80i,seq=1i 1700000000002000000");
  push_line(sc, &b, 1, "door,device=1 open=t,note=\"front \\\"door\\\"\",seq=2i 1700000000003000000");
  push_line(sc, &b, 2, "weather,device=2,room=hall temp=19,count=-4i,seq=2i 1700000000004000000");
  storage_write_result res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 4);
  batch_free(&b);

  PGconn *pg = pg_connect(&c);
  ck_pg_text(pg, COLUMNS_OF("weather"),
             "device text, seq bigint, ts_ms bigint, batch bigint, room text tag, temp double precision, count bigint");
  ck_pg_text(pg, COLUMNS_OF("door"), "device text, seq bigint, ts_ms bigint, batch bigint, open boolean, note text");
  ck_pg_text(pg,
             "SELECT format('%s %s %s %s %s %s %s', device, seq, ts_ms, batch, room, temp, count) FROM weather"
             " WHERE device = '1'",
             "1 1 1700000000001 1 kitchen 21.5 3");
  ck_pg_text(pg, "SELECT format('%s %s %s', seq, open, note) FROM door", "2 t front \"door\"");
  ck_pg_text(pg, "SELECT format('%s %s %s', temperature, humidity, battery) FROM readings", "20.5 40 80");

  /* Fields that come later: a column each, added as they come; a
   * reading's absent fields are NULL. */
  b = (batch){.id = 2};
  push_line(sc, &b, 1, "weather,device=1,room=hall temp=19i,wind=3.5,seq=3i 1700000000005000000");
  push_line(sc, &b, 2, "weather,device=2 count=7i,seq=3i 1700000000006000000");
  push_line(sc, &b, 3, "telemetry,device=3 battery=50i,label=\"spare\",seq=1i 1700000000007000000");
  push_line(sc, &b, 1, "door,device=1 open=f,seq=4i 1700000000008000000");
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 4);
  batch_free(&b);
  ck_pg_text(pg, COLUMNS_OF("weather"),
             "device text, seq bigint, ts_ms bigint, batch bigint, room text tag, temp double precision,"
             " count bigint, wind double precision");
  ck_pg_text(pg, "SELECT format('%s %s %s', room, temp, wind) FROM weather WHERE seq = 3 AND device = '1'",
             "hall 19 3.5");
  ck_pg_text(pg,
             "SELECT format('%s %s %s %s', room IS NULL, temp IS NULL, count, wind IS NULL) FROM weather"
             " WHERE seq = 3 AND device = '2'",
             "t t 7 t");
  ck_pg_text(pg,
             "SELECT format('%s %s %s %s', temperature IS NULL, humidity IS NULL, battery, label) FROM readings"
             " WHERE device = '3'",
             "t t 50 spare");
  ck_pg_text(pg, "SELECT format('%s %s', open, note IS NULL) FROM door WHERE seq = 4", "f t");
  ck_assert_uint_eq(storage_test_count(s), 2); /* readings' rows */
  storage_close(s);
  schema_free(sc);

  /* Reopened: the stored fields, their types, back in a new schema. */
  sc = schema_new(0);
  s = pg_open_schema(&c, NULL, 1, 0, sc);
  ck_assert_int_eq(schema_type(sc, "weather", "room"), FIELD_TAG);
  ck_assert_int_eq(schema_type(sc, "weather", "temp"), FIELD_FLOAT);
  ck_assert_int_eq(schema_type(sc, "weather", "count"), FIELD_INT);
  ck_assert_int_eq(schema_type(sc, "weather", "wind"), FIELD_FLOAT);
  ck_assert_int_eq(schema_type(sc, "door", "open"), FIELD_BOOL);
  ck_assert_int_eq(schema_type(sc, "door", "note"), FIELD_STRING);
  ck_assert_int_eq(schema_type(sc, "telemetry", "label"), FIELD_STRING);
  ck_assert_int_eq(schema_type(sc, "telemetry", "battery"), FIELD_INT);
  /* ... so a JSON number to an integer field stays an integer. */
  b = (batch){.id = 3};
  push_line(sc, &b, 2, "{\"measurement\":\"weather\",\"device\":2,\"seq\":4,\"ts\":1700000000009,\"count\":12}");
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 1);
  batch_free(&b);
  ck_pg_text(pg, "SELECT count FROM weather WHERE seq = 4", "12");
  storage_close(s);
  schema_free(sc);

  /* A reset drops every measurement's table. */
  s = pg_open(&c, NULL, 1, 1, STORAGE_DURABILITY_NORMAL);
  ck_pg_text(pg, "SELECT format('%s %s', to_regclass('weather') IS NULL, to_regclass('door') IS NULL)", "t t");
  ck_pg_text(pg, COLUMNS_OF("readings"),
             "device text, seq bigint, ts_ms bigint, temperature double precision, humidity double precision,"
             " battery bigint, batch bigint");
  storage_close(s);
  PQfinish(pg);
  pg_cluster_destroy(&c);
}
END_TEST

/* A write adds columns only when its measurement gained fields: with a
 * reader holding the table, a write of the known fields commits at once
 * (no DDL waits for the reader), one with a new field waits for it -
 * -EBUSY past lock_timeout, stored once the reader is gone. Also after a
 * reopen, which starts from the columns the tables have. */
START_TEST(test_columns_added_only_when_needed) {
  pg_cluster c;
  pg_cluster_start(&c);
  char uri[200];
  snprintf(uri, sizeof uri, "%s?options=-c%%20lock_timeout%%3D200", c.uri);
  schema *sc = schema_new(0);
  storage *s = pg_open_schema(&c, uri, 1, 1, sc);
  batch b = {.id = 1};
  push_line(sc, &b, 1, "weather,device=1 temp=1.5,seq=1i 1700000000001000000");
  storage_test_write(s, &b);
  batch_free(&b);
  PGconn *pg = pg_connect(&c);
  for (int reopened = 0; reopened < 2; reopened++) {
    uint64_t seq = 2 + 2 * (uint64_t)reopened;
    pg_exec(pg, "BEGIN");
    ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM weather"), (long long)seq - 1);
    b = (batch){.id = seq};
    char line[200];
    snprintf(line, sizeof line, "weather,device=1 temp=2.5,seq=%lui 1700000000002000000", (unsigned long)seq);
    push_line(sc, &b, 1, line);
    storage_test_write(s, &b);
    batch_free(&b);
    b = (batch){.id = seq + 1};
    snprintf(line, sizeof line, "weather,device=1 temp=3.5,gust%d=9i,seq=%lui 1700000000003000000", reopened,
             (unsigned long)seq + 1);
    push_line(sc, &b, 1, line);
    char err[200] = "";
    storage_write_result res;
    int r = storage_write(s, 0, &b, &res, err, sizeof err);
    ck_assert_msg(r == -EBUSY && strstr(err, "adding columns"), "%d %s", r, err);
    pg_exec(pg, "COMMIT");
    res = storage_test_write(s, &b);
    ck_assert_uint_eq(res.inserted, 1);
    batch_free(&b);
    storage_close(s);
    schema_free(sc);
    sc = schema_new(0);
    s = pg_open_schema(&c, uri, 1, 0, sc);
  }
  ck_pg_text(pg, "SELECT format('%s %s %s', count(*), sum(gust0), sum(gust1)) FROM weather", "5 9 9");
  storage_close(s);
  schema_free(sc);
  PQfinish(pg);
  pg_cluster_destroy(&c);
}
END_TEST

/* A stored field whose type the schema has otherwise fails the open,
 * saying which column and both types. */
START_TEST(test_type_conflict_refused) {
  pg_cluster c;
  pg_cluster_start(&c);
  schema *sc = schema_new(0);
  storage *s = pg_open_schema(&c, NULL, 1, 1, sc);
  batch b = {.id = 1};
  push_line(sc, &b, 1, "weather,device=1 count=3i,seq=1i 1700000000001000000");
  storage_test_write(s, &b);
  batch_free(&b);
  storage_close(s);
  schema_free(sc);

  sc = schema_new(0);
  b = (batch){.id = 1};
  push_line(sc, &b, 1, "weather,device=1 count=3.5,seq=1i 1700000000001000000"); /* count: a float here */
  batch_free(&b);
  storage_opts o = {.backend = "postgres", .path = c.uri, .connections = 1, .schema = sc};
  char err[200] = "";
  s = NULL;
  ck_assert_int_eq(storage_open(&s, &o, err, sizeof err), -EINVAL);
  ck_assert_ptr_null(s);
  ck_assert_str_eq(err, "postgres: weather.count is integer in the database but float in the schema;"
                        " declare it so or drop it");
  schema_free(sc);
  pg_cluster_destroy(&c);
}
END_TEST

/* The readings table of releases before fields (three NOT NULL, battery
 * an integer) is brought up to date at open, its rows kept; then a
 * telemetry reading may lack any of the three. */
START_TEST(test_old_readings_migrated) {
  pg_cluster c;
  pg_cluster_start(&c);
  PGconn *pg = pg_connect(&c);
  pg_exec(pg, "CREATE TABLE readings (device text NOT NULL, seq bigint NOT NULL, ts_ms bigint NOT NULL,"
              " temperature double precision NOT NULL, humidity double precision NOT NULL,"
              " battery integer NOT NULL, batch bigint NOT NULL)");
  pg_exec(pg, "INSERT INTO readings VALUES ('1', 1, 1700000000001, 20.5, 41, 77, 1)");
  schema *sc = schema_new(0);
  storage *s = pg_open_schema(&c, NULL, 1, 0, sc);
  ck_pg_text(pg, COLUMNS_OF("readings"),
             "device text, seq bigint, ts_ms bigint, temperature double precision, humidity double precision,"
             " battery bigint, batch bigint");
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'readings'::regclass"
                                " AND attnotnull AND attname IN ('temperature', 'humidity', 'battery')"),
                   0);
  batch b = {.id = 2};
  push_line(sc, &b, 1, "telemetry,device=1 humidity=50,battery=5000000000i,seq=2i 1700000000002000000");
  storage_write_result res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 1);
  batch_free(&b);
  ck_pg_text(pg,
             "SELECT string_agg(format('%s %s %s', temperature IS NULL, humidity, battery), ', ' ORDER BY seq)"
             " FROM readings",
             "f 41 77, t 50 5000000000");
  storage_close(s);
  schema_free(sc);
  PQfinish(pg);
  pg_cluster_destroy(&c);
}
END_TEST

typedef struct fields_writer {
  storage *s;
  schema *sc;
  int conn, failed;
} fields_writer;

enum { FIELD_BATCHES = 20, FIELD_DEVICES = 8 };

/* One connection's writer of readings whose fields change batch by
 * batch, the same as the other threads': the connections race to add the
 * same columns while the others copy rows. */
static void *write_fields(void *arg) {
  fields_writer *w = arg;
  for (uint64_t id = 1; id <= FIELD_BATCHES; id++) {
    batch b = {.id = id};
    for (uint32_t d = 1; d <= FIELD_DEVICES; d++) {
      char line[200];
      snprintf(line, sizeof line, "%s,device=%u f%lu=%lui,g=%u.5,seq=%lui 1700000000000000000",
               d % 2 ? "weather" : "telemetry", d, (unsigned long)id % 7, (unsigned long)id, d, (unsigned long)id);
      protocol_msg msg;
      reading r;
      if (protocol_parse_line(line, strlen(line), 0, &msg, NULL) != 0 ||
          schema_pack(w->sc, &msg.point, &r, NULL) != 0) {
        w->failed = 1;
        continue;
      }
      r.device = d;
      if (batch_push(&b, &r) != 0) w->failed = 1;
    }
    storage_write_result res;
    char err[200];
    /* No deadlock: a DDL transaction holds the schema lock and one table. */
    if (storage_write(w->s, w->conn, &b, &res, err, sizeof err) != 0) {
      fprintf(stderr, "conn %d: %s\n", w->conn, err);
      w->failed = 1;
    }
    batch_free(&b);
  }
  return NULL;
}

/* Connections writing in parallel, adding the same columns at once. */
START_TEST(test_columns_added_in_parallel) {
  pg_cluster c;
  pg_cluster_start(&c);
  schema *sc = schema_new(0);
  storage *s = pg_open_schema(&c, NULL, PARALLEL_CONNS, 1, sc);
  pthread_t th[PARALLEL_CONNS];
  fields_writer w[PARALLEL_CONNS];
  for (int k = 0; k < PARALLEL_CONNS; k++) {
    w[k] = (fields_writer){.s = s, .sc = sc, .conn = k};
    ck_assert_int_eq(pthread_create(&th[k], NULL, write_fields, &w[k]), 0);
  }
  for (int k = 0; k < PARALLEL_CONNS; k++) {
    pthread_join(th[k], NULL);
    ck_assert_int_eq(w[k].failed, 0);
  }
  storage_close(s);
  schema_free(sc);
  PGconn *pg = pg_connect(&c);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM weather"), FIELD_BATCHES * FIELD_DEVICES / 2);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM readings"), FIELD_BATCHES * FIELD_DEVICES / 2);
  /* Each row has its batch's field and g, the others NULL. */
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM weather WHERE num_nonnulls(f0, f1, f2, f3, f4, f5, f6) = 1"
                                " AND g = device::int + 0.5 AND seq = coalesce(f0, f1, f2, f3, f4, f5, f6)"),
                   FIELD_BATCHES * FIELD_DEVICES / 2);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM readings WHERE num_nonnulls(f0, f1, f2, f3, f4, f5, f6) = 1"
                                " AND temperature IS NULL AND g = device::int + 0.5"),
                   FIELD_BATCHES * FIELD_DEVICES / 2);
  PQfinish(pg);
  pg_cluster_destroy(&c);
}
END_TEST

/* A table that is no measurement's, named as one: a write of that
 * measurement fails, saying why, and leaves the table as it was. */
START_TEST(test_foreign_table_left_alone) {
  pg_cluster c;
  pg_cluster_start(&c);
  PGconn *pg = pg_connect(&c);
  pg_exec(pg, "CREATE TABLE orders (id integer)");
  schema *sc = schema_new(0);
  storage *s = pg_open_schema(&c, NULL, 1, 1, sc);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM orders"), 0); /* not a measurement's: no reset */
  batch b = {.id = 1};
  push_line(sc, &b, 1, "orders,device=1 total=3.5,seq=1i 1700000000001000000");
  char err[200] = "";
  storage_write_result res;
  int r = storage_write(s, 0, &b, &res, err, sizeof err);
  ck_assert_msg(r == -EIO && strstr(err, "adding columns: column \"device\" does not exist"), "%d %s", r, err);
  batch_free(&b);
  ck_pg_text(pg, COLUMNS_OF("orders"), "id integer");
  storage_close(s);
  schema_free(sc);
  PQfinish(pg);
  pg_cluster_destroy(&c);
}
END_TEST

int main(void) {
  int r = pg_template_init();
  if (r != 0) return r;
  Suite *s = suite_create("storage-postgres");
  tg_test_add(s, "rows_and_marks_stored_exactly", test_rows_and_marks_stored_exactly, 120);
  tg_test_add(s, "marks_survive_crash", test_marks_survive_crash, 120);
  tg_test_add(s, "seq_full_64_bits", test_seq_full_64_bits, 120);
  tg_test_add(s, "failed_commit_stores_nothing", test_failed_commit_stores_nothing, 120);
  tg_test_add(s, "failures_named", test_failures_named, 120);
  tg_test_add(s, "server_restart_reconnects", test_server_restart_reconnects, 180);
  tg_test_add(s, "open_refused", test_open_refused, 120);
  tg_test_add(s, "commit_lost_in_flight", test_commit_lost_in_flight, 120);
  tg_test_add(s, "connections_in_parallel_keep_order", test_connections_in_parallel_keep_order, 120);
  tg_test_add(s, "measurements_any_fields", test_measurements_any_fields, 120);
  tg_test_add(s, "columns_added_only_when_needed", test_columns_added_only_when_needed, 120);
  tg_test_add(s, "columns_added_in_parallel", test_columns_added_in_parallel, 120);
  tg_test_add(s, "foreign_table_left_alone", test_foreign_table_left_alone, 120);
  tg_test_add(s, "type_conflict_refused", test_type_conflict_refused, 120);
  tg_test_add(s, "old_readings_migrated", test_old_readings_migrated, 120);
  return tg_test_main(s);
}
