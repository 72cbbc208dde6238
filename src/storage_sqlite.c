/* storage_sqlite.c - the SQLite backend of storage.h: one file, WAL mode,
 * synchronous=NORMAL, one transaction per batch. */
#include "storage.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

enum { ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_INSERT, ST_MARK_GET, ST_MARK_SET, ST_COUNT, ST_N };

static const char *const sql_text[ST_N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INSERT] = "INSERT INTO readings(device, seq, ts_ms, temperature, humidity, battery, batch) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_MARK_GET] = "SELECT seq FROM device_hwm WHERE device = ?1",
    [ST_MARK_SET] = "INSERT INTO device_hwm(device, seq) VALUES (?1, ?2) "
                    "ON CONFLICT(device) DO UPDATE SET seq = excluded.seq",
    [ST_COUNT] = "SELECT COUNT(*) FROM readings",
};

static const char schema_reset[] = "DROP TABLE IF EXISTS readings;"
                                   "DROP TABLE IF EXISTS device_hwm;";

/* Append-only: no key, so a transaction appends to the table's last pages
 * whatever the devices; resends are caught by device_hwm instead. A device
 * is its id as text. */
static const char schema[] = "CREATE TABLE IF NOT EXISTS readings ("
                             " device TEXT NOT NULL, seq INTEGER NOT NULL,"
                             " ts_ms INTEGER NOT NULL, temperature REAL NOT NULL,"
                             " humidity REAL NOT NULL, battery INTEGER NOT NULL,"
                             " batch INTEGER NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS device_hwm ("
                             " device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;";

typedef struct conn {
  sqlite3 *db;
  sqlite3_stmt *st[ST_N];
} conn;

typedef struct sqlite_impl {
  int n;
  conn conns[];
} sqlite_impl;

static int fail_db(sqlite3 *db, const char *what, char *err, size_t errlen) {
  snprintf(err, errlen, "sqlite: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
  return -EIO;
}

static void conn_close(conn *c) {
  for (int i = 0; i < ST_N; i++) sqlite3_finalize(c->st[i]);
  sqlite3_close(c->db);
}

static int conn_open(conn *c, const char *path, int first, int reset, char *err, size_t errlen) {
  int r = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (r != SQLITE_OK) return fail_db(c->db, "open", err, errlen);
  /* A second connection that finds the write lock taken waits for it. */
  sqlite3_busy_timeout(c->db, 10000);
  if (sqlite3_exec(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL))
    return fail_db(c->db, "pragmas", err, errlen);
  if (first && reset && sqlite3_exec(c->db, schema_reset, NULL, NULL, NULL))
    return fail_db(c->db, "reset", err, errlen);
  if (first && sqlite3_exec(c->db, schema, NULL, NULL, NULL))
    return fail_db(c->db, "schema", err, errlen);
  for (int i = 0; i < ST_N; i++)
    if (sqlite3_prepare_v2(c->db, sql_text[i], -1, &c->st[i], NULL) != SQLITE_OK)
      return fail_db(c->db, sql_text[i], err, errlen);
  return 0;
}

static void sqlite_close(storage *s) {
  sqlite_impl *im = s->impl;
  if (!im) return;
  for (int i = 0; i < im->n; i++) conn_close(&im->conns[i]);
  free(im);
  s->impl = NULL;
}

static int sqlite_open(storage *s, const storage_opts *opts, char *err, size_t errlen) {
  sqlite_impl *im = calloc(1, sizeof *im + (size_t)opts->connections * sizeof im->conns[0]);
  if (!im) return -ENOMEM;
  s->impl = im;
  for (int i = 0; i < opts->connections; i++) {
    im->n = i + 1;
    int r = conn_open(&im->conns[i], opts->path, i == 0, opts->reset, err, errlen);
    if (r != 0) {
      sqlite_close(s);
      return r;
    }
  }
  return 0;
}

/* Runs a statement that returns no row. */
static int step_done(conn *c, int which) {
  int r = sqlite3_step(c->st[which]);
  sqlite3_reset(c->st[which]);
  return r == SQLITE_DONE ? 0 : r;
}

static int sqlite_mark_load(storage *s, int ci, const char *device, int *found, uint64_t *seq, char *err,
                            size_t errlen) {
  conn *c = &((sqlite_impl *)s->impl)->conns[ci];
  sqlite3_stmt *st = c->st[ST_MARK_GET];
  sqlite3_bind_text(st, 1, device, -1, SQLITE_TRANSIENT);
  int r = sqlite3_step(st);
  *found = r == SQLITE_ROW;
  *seq = r == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  return r == SQLITE_ROW || r == SQLITE_DONE ? 0 : fail_db(c->db, "high-water mark", err, errlen);
}

/* Binds a device's id: names from the caller's table stay put for the
 * statement's life; a decimal index is copied. */
static void bind_device(storage *s, sqlite3_stmt *st, uint32_t device) {
  char buf[16];
  const char *name = storage_device_name(s, device, buf);
  sqlite3_bind_text(st, 1, name, -1, name == buf ? SQLITE_TRANSIENT : SQLITE_STATIC);
}

static int sqlite_write(storage *s, int ci, const batch *b, int fail, storage_write_result *res,
                        char *err, size_t errlen) {
  conn *c = &((sqlite_impl *)s->impl)->conns[ci];
  *res = (storage_write_result){0};
  if (step_done(c, ST_BEGIN)) return fail_db(c->db, "begin", err, errlen);
  const char *what = NULL;
  int rc = 0;
  for (uint32_t i = 0; i < b->n && !what; i++) {
    const reading *r = &b->items[i];
    int fresh = storage_mark_check(s, ci, r, err, errlen);
    if (fresh < 0) {
      rc = fresh;
      what = "";
      break;
    }
    if (!fresh) {
      res->duplicates++;
      continue;
    }
    sqlite3_stmt *st = c->st[ST_INSERT];
    bind_device(s, st, r->device);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)r->seq);
    sqlite3_bind_int64(st, 3, r->ts_ms);
    sqlite3_bind_double(st, 4, r->temperature);
    sqlite3_bind_double(st, 5, r->humidity);
    sqlite3_bind_int64(st, 6, r->battery);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)b->id);
    if (step_done(c, ST_INSERT)) what = "insert";
    res->inserted++;
  }
  for (uint32_t i = 0; i < s->nchanged && !what; i++) {
    sqlite3_stmt *st = c->st[ST_MARK_SET];
    bind_device(s, st, s->changed[i]);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)s->marks[s->changed[i]].pending);
    if (step_done(c, ST_MARK_SET)) what = "high-water mark";
  }
  if (!what && fail) {
    step_done(c, ST_ROLLBACK);
    *res = (storage_write_result){0};
    snprintf(err, errlen, "simulated write failure, rolled back");
    return -EIO;
  }
  if (!what && step_done(c, ST_COMMIT)) what = "commit";
  if (what) {
    int r = rc ? rc : fail_db(c->db, what, err, errlen);
    if (!sqlite3_get_autocommit(c->db)) step_done(c, ST_ROLLBACK);
    *res = (storage_write_result){0};
    return r;
  }
  return 0;
}

static int sqlite_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen) {
  conn *c = &((sqlite_impl *)s->impl)->conns[0];
  sqlite3_stmt *st = c->st[ST_COUNT];
  int r = sqlite3_step(st);
  if (r == SQLITE_ROW) *rows = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return r == SQLITE_ROW ? 0 : fail_db(c->db, "count", err, errlen);
}

const storage_backend storage_sqlite_backend = {
    .name = "sqlite",
    .open = sqlite_open,
    .mark_load = sqlite_mark_load,
    .write = sqlite_write,
    .count_rows = sqlite_count_rows,
    .close = sqlite_close,
};
