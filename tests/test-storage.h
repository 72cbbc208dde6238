/* test-storage.h - what the storage tests share: a database in a fresh
 * temporary directory, batches built reading by reading, and a look into
 * the SQLite file behind the storage's back. */
#ifndef TELEGATE_TEST_STORAGE_H
#define TELEGATE_TEST_STORAGE_H

#include "helpers.h"
#include "storage.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct storage_test {
  char dir[64];
  char db[128];
} storage_test;

static inline void storage_test_init(storage_test *t) {
  const char *tmp = getenv("TMPDIR");
  snprintf(t->dir, sizeof t->dir, "%s/telegate-storage-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(t->dir));
  snprintf(t->db, sizeof t->db, "%s/test.db", t->dir);
}

static inline void storage_test_remove_db(const char *db) {
  const char *suffix[] = {"", "-wal", "-shm", "-journal"};
  char path[200];
  for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
    snprintf(path, sizeof path, "%s%s", db, suffix[i]);
    unlink(path);
  }
}

static inline void storage_test_cleanup(storage_test *t) {
  storage_test_remove_db(t->db);
  char copy[160];
  snprintf(copy, sizeof copy, "%s/copy.db", t->dir);
  storage_test_remove_db(copy);
  ck_assert_int_eq(rmdir(t->dir), 0);
}

/* Opens path with `backend` and n connections, failing the test on error. */
static inline storage *storage_test_open(const char *path, const char *backend, int n, int reset,
                                         const storage_faults_opts *faults) {
  storage *s = NULL;
  char err[200] = "";
  storage_opts o = {.backend = backend, .path = path, .connections = n, .reset = reset, .faults = faults};
  int r = storage_open(&s, &o, err, sizeof err);
  ck_assert_msg(r == 0, "storage_open(%s): %d %s", backend ? backend : "default", r, err);
  return s;
}

static inline void storage_test_push(batch *b, uint32_t device, uint64_t seq) {
  reading r = {
      .device = device, .measurement = SCHEMA_TELEMETRY, .seq = seq, .ts_ms = 1700000000000 + (int64_t)seq % 1000000};
  reading_add_float(&r, SCHEMA_TEMPERATURE, 21.5);
  reading_add_float(&r, SCHEMA_HUMIDITY, 45.0);
  reading_add_int(&r, SCHEMA_BATTERY, 90);
  ck_assert_int_eq(batch_push(b, &r), 0);
}

/* Writes b on every connection, in order; returns the sums. */
static inline storage_write_result storage_test_write(storage *s, const batch *b) {
  storage_write_result sum = {0};
  for (int c = 0; c < storage_connections(s); c++) {
    storage_write_result res;
    char err[200] = "";
    int r = storage_write(s, c, b, &res, err, sizeof err);
    ck_assert_msg(r == 0, "storage_write: %d %s", r, err);
    sum.inserted += res.inserted;
    sum.duplicates += res.duplicates;
  }
  return sum;
}

static inline uint64_t storage_test_count(storage *s) {
  uint64_t rows = 0;
  char err[200] = "";
  ck_assert_int_eq(storage_count_rows(s, &rows, err, sizeof err), 0);
  return rows;
}

/* Reads the SQLite file: per device, the seqs in insertion (rowid) order
 * must be exactly 1, 2, 3 ... (nothing lost, nothing twice, in order),
 * and device_hwm must hold the last. Returns the devices seen; the row
 * count into *rows. */
static inline int storage_test_check_sequences(const char *path, uint64_t *rows) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(
      sqlite3_prepare_v2(db, "SELECT device, seq FROM readings ORDER BY CAST(device AS INTEGER), rowid", -1, &st, NULL),
      SQLITE_OK);
  int devices = 0;
  int64_t last_device = -1, expect = 0;
  *rows = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    int64_t device = sqlite3_column_int64(st, 0), seq = sqlite3_column_int64(st, 1);
    if (device != last_device) {
      devices++;
      last_device = device;
      expect = 1;
    }
    ck_assert_msg(seq == expect, "device %lld: seq %lld where %lld was due", (long long)device, (long long)seq,
                  (long long)expect);
    expect++;
    (*rows)++;
  }
  sqlite3_finalize(st);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "SELECT COUNT(*) FROM device_hwm h WHERE h.seq <> "
                                      "(SELECT MAX(seq) FROM readings r WHERE r.device = h.device)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_int_eq(sqlite3_column_int64(st, 0), 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return devices;
}

/* Connections writing in parallel, each in its own thread (the backends'
 * connections_in_parallel_keep_order cases). */
enum { PARALLEL_CONNS = 4, PARALLEL_DEVICES = 40, PARALLEL_BATCHES = 60, PARALLEL_PER_BATCH = 3 };

typedef struct parallel_writer {
  storage *s;
  int conn;
  uint64_t inserted, duplicates;
  int failed;
} parallel_writer;

/* One connection's writer: every batch in cut order, the same batches as
 * the other threads; storage_write picks the devices routed here. */
static inline void *parallel_write_conn(void *arg) {
  parallel_writer *w = arg;
  for (uint64_t id = 1; id <= PARALLEL_BATCHES; id++) {
    batch b = {.id = id};
    for (uint64_t q = 1; q <= PARALLEL_PER_BATCH; q++)
      for (uint32_t d = 1; d <= PARALLEL_DEVICES; d++) {
        reading r = {.device = d, .measurement = SCHEMA_TELEMETRY, .seq = (id - 1) * PARALLEL_PER_BATCH + q};
        if (batch_push(&b, &r) != 0) w->failed = 1;
        if (q == 1 && id > 1) { /* the device's last reading of the batch before: a resend */
          r.seq--;
          if (batch_push(&b, &r) != 0) w->failed = 1;
        }
      }
    storage_write_result res;
    char err[200];
    if (storage_write(w->s, w->conn, &b, &res, err, sizeof err) != 0) w->failed = 1;
    w->inserted += res.inserted;
    w->duplicates += res.duplicates;
    batch_free(&b);
  }
  return NULL;
}

#endif
