/* storage.h - where committed readings live: one interface, one file per
 * database backend (storage_backend.h says what a backend provides),
 * chosen by name in storage_open and nowhere else.
 *
 * A storage has a fixed number of connections, numbered 0..n-1, and every
 * device is routed to one of them for good: storage_route(s, device),
 * the device index modulo n. storage_write(s, conn, b) writes only the
 * readings of b whose device is routed to conn, in one transaction of
 * that connection. A connection is used by one caller at a time (the
 * storage stage, writer.h, makes it so; a per-connection lock catches a
 * caller that does not), but that caller may be any thread: the calls
 * below block, so the pipeline runs them through tg_blocking_run.
 * Different connections may run at once, as far as the database lets
 * them (SQLite has one writer per file and takes turns; PostgreSQL runs
 * them in parallel).
 *
 * Exactly once: the storage keeps each device's high-water mark, the
 * highest seq committed for it, loaded from the database the first time
 * the device appears. A reading whose seq is not above its device's mark
 * (nor above an earlier reading of the same write) is a resend and is
 * skipped, so a retried batch can never store a reading twice, without a
 * composite key on the hot table (DESIGN.md has the measurements). The
 * backend gets only the fresh rows and the (device, new mark) pairs to
 * persist in the same transaction; the marks in memory advance after the
 * commit, and not at all when the write fails.
 *
 * Order: the rule needs each device's readings committed in the order
 * they were cut, or a later batch's seqs would make the mark skip an
 * earlier batch's readings as resends. A device's rows and its mark are
 * only ever touched through its one connection, and its marks in memory
 * belong to that connection (no lock is shared between connections), so
 * it is enough that the caller writes the batches on each connection in
 * the order they were cut: writer.h does. Connections never need to wait
 * for each other.
 *
 * Devices are stored by their id as text ("7", "dev-42"); readings carry
 * the pipeline's numeric index, which opts.device_name turns into that
 * text. Seqs use all 64 bits (storage_sqlite.c says how SQLite holds the
 * ones above 2^63 - 1).
 *
 * Every call returns 0 or a negative code and, on error, writes a
 * one-line reason into `err`. */
#ifndef TELEGATE_STORAGE_H
#define TELEGATE_STORAGE_H

#include "reading.h"
#include "schema.h"

#include <stddef.h>
#include <stdint.h>

typedef struct storage storage;

/* The demo's fault injection, a decorator around the chosen backend
 * (storage_faults.c); never used by serve. */
typedef struct storage_faults_opts {
  int64_t write_ns; /* simulated time of one transaction, waited on the writer's task */
  double fail_rate; /* share of transactions that fail: nothing stored, the write reports -EIO */
  uint64_t seed;    /* which ones: a stream per (batch, attempt), so a run replays */
} storage_faults_opts;

/* What a commit survives (SQLite's synchronous setting): NORMAL, a crash
 * of the process (the commit is in the WAL, written but not yet synced);
 * FULL, also a power loss (the WAL is synced at every commit). */
typedef enum storage_durability { STORAGE_DURABILITY_NORMAL, STORAGE_DURABILITY_FULL } storage_durability;

typedef struct storage_opts {
  const char *backend; /* a registered backend's name (storage_backend_names); NULL: "sqlite" */
  const char *path;    /* the database: for SQLite a file name */
  int connections;     /* 1..STORAGE_MAX_CONNECTIONS */
  int reset;           /* nonzero: start from empty tables (the demo) */
  storage_durability durability;
  /* The id text of a device index, or NULL: the index in decimal. Called
   * from the thread running a write; must be thread-safe, and the text
   * must stay valid while the storage is open. */
  const char *(*device_name)(void *ctx, uint32_t device);
  void *device_name_ctx;
  const storage_faults_opts *faults; /* NULL, or wrap the backend in fault injection */
  int history; /* nonzero: keep the history index that storage_history reads (serve's; see below) */
  /* The readings' names and their measurements' fields: each measurement
   * is a table (telemetry's is `readings`) with a column per field, added
   * as fields appear; at open, the tables found are added to it. NULL: a
   * schema of the storage's own, with only the article's fields. */
  schema *schema;
} storage_opts;

#define STORAGE_MAX_CONNECTIONS 64

typedef struct storage_write_result {
  uint64_t inserted;   /* rows added to readings */
  uint64_t duplicates; /* readings at or below their device's mark, skipped */
} storage_write_result;

/* Opens the storage: the backend named by opts->backend, wrapped in fault
 * injection when opts->faults is set. Returns 0, -EINVAL (an unknown
 * backend: err lists the registered ones; a connection count out of
 * range), -ENOMEM, or the backend's code (storage_backend.h). */
int storage_open(storage **out, const storage_opts *opts, char *err, size_t errlen);

/* The registered backends' names, ", "-separated, into buf (for help
 * texts and errors). Returns buf. */
const char *storage_backend_names(char *buf, size_t len);

/* Whether a backend of that name is registered. */
int storage_backend_exists(const char *name);

/* path (--db) as it may be shown in a log or an error: a password in it
 * (a URI's user:password@, a key=value password=...) replaced by ***.
 * Returns buf, NUL-terminated, cut to cap. */
const char *storage_path_shown(const char *path, char *buf, size_t cap);

int storage_connections(const storage *s);

/* The connection a device's readings and mark go through, for good. */
static inline int storage_route_of(uint32_t dev, int connections) { return (int)(dev % (uint32_t)connections); }
int storage_route(const storage *s, uint32_t dev);

/* Whether batch b has a reading routed to conn. */
int storage_batch_touches(const storage *s, const batch *b, int conn);

/* For the writer's task, before each storage_write attempt: waits what the
 * fault-injection decorator simulates (tg_sleep, so virtual time under the
 * virtual clock); returns 0 at once for every real backend. Returns 0 or
 * TG_ECANCELED (the task was aborted). */
int storage_write_pause(storage *s, int conn);

/* One transaction on connection conn (0..connections-1): the readings of
 * b routed to conn, resends dropped, their marks persisted, commit. On
 * failure nothing is stored, no mark moves, and the same call may be
 * retried. Returns 0, -EINVAL (no such connection), -ENOMEM, or the
 * backend's code (storage_backend.h: -ENOSPC disk full, -EROFS read-only,
 * -EBUSY locked, -EIO any other database error or an injected fault). */
int storage_write(storage *s, int conn, const batch *b, storage_write_result *res, char *err, size_t errlen);

/* Device dev's committed mark: *found 0 when none of its readings is
 * stored. Waits for a write on the device's connection to end, and loads
 * the mark from the database the first time, as a write would. Returns 0,
 * -ENOMEM or the backend's code (-EIO). */
int storage_mark_get(storage *s, uint32_t dev, int *found, uint64_t *seq, char *err, size_t errlen);

/* Forgets the marks in memory of the n devices in devs: the next write or
 * storage_mark_get of each loads its mark from the database again. For a
 * caller that knows another process may have written those devices since
 * (a cluster node taking over a partition another node consumed: its own
 * marks of those devices may be behind the database's, and a redelivered
 * reading the other node committed would look fresh). Waits for a write
 * on each device's connection to end. */
void storage_marks_forget(storage *s, const uint32_t *devs, size_t n);

/* The rows stored in readings (SELECT COUNT(*), or the none backend's
 * count). Returns 0 or -EIO. */
int storage_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen);

void storage_close(storage *s);

/* ------------------------------------------------------------ history
 *
 * Reading back what was stored: one device's readings in a time range,
 * raw or in buckets, and deleting what is older than a cutoff. Only a
 * backend that keeps a history index (opts.history, the SQLite one)
 * answers; the others return -EOPNOTSUPP.
 *
 * The fields are the readings table's columns other than the device,
 * seq, ts_ms and batch, read from the database when it opens, so a
 * schema with more columns needs no change here. Values come back as
 * integers, reals or text, as stored.
 *
 * These calls block (a query reads the database; storage_history's
 * time is bounded by q->timeout_ms), run on any thread, and may run
 * while writes go on: a query reads a consistent snapshot through a
 * connection of its own and never waits for a write; storage_expire
 * takes its turn with the writes, one short transaction per call. */

typedef enum storage_field_type { STORAGE_INTEGER, STORAGE_REAL, STORAGE_TEXT } storage_field_type;

#define STORAGE_MAX_FIELDS     64
#define STORAGE_FIELD_NAME_MAX 63

typedef struct storage_field {
  char name[STORAGE_FIELD_NAME_MAX + 1];
  storage_field_type type; /* as declared; a value may still come as another */
} storage_field;

/* A value of a result: STORAGE_NULL for SQL NULL (a bucket with no value). */
typedef struct storage_value {
  enum {
    STORAGE_NULL = -1,
    STORAGE_INT = STORAGE_INTEGER,
    STORAGE_DOUBLE = STORAGE_REAL,
    STORAGE_STR = STORAGE_TEXT
  } type;
  union {
    int64_t i;
    double d;
    struct {
      uint32_t off, len; /* into the result's text */
    } s;
  } v;
} storage_value;

typedef struct storage_history_query {
  const char *device;     /* its id text */
  int64_t from_ms, to_ms; /* ts_ms in [from_ms, to_ms) */
  const uint32_t *fields; /* indexes into storage_fields' list */
  uint32_t nfields;
  uint32_t limit;              /* rows (or buckets) at most, >= 1 */
  int64_t every_ms;            /* 0: raw rows; > 0: buckets of this width, aligned on multiples of it */
  int64_t after_ts, after_row; /* raw: only rows after this place in the order (a `next` cursor); INT64_MIN: none */
  int64_t timeout_ms;          /* the query is interrupted after this long */
} storage_history_query;

/* What storage_history found. Raw: columns ts, seq (the stored 64 bits:
 * read it as unsigned), then the fields asked; rows in (ts, arrival)
 * order. Buckets: columns ts (the bucket's start), count, then min, max
 * and mean of each field asked; in ts order, only buckets with rows. */
typedef struct storage_history_result {
  uint32_t ncols, nrows;
  storage_value *values; /* nrows * ncols, row by row */
  char *text;            /* the text values' bytes */
  size_t textlen;
  int more;                  /* rows past the limit exist */
  int64_t next_ts, next_row; /* raw: the cursor after the last row (the query's after_ts, after_row) */
  uint32_t cap;              /* rows allocated */
  size_t textcap;
} storage_history_result;

void storage_history_result_free(storage_history_result *r);

/* The fields the readings table has (the backend's list, valid while
 * the storage is open). Returns 0 or -EOPNOTSUPP. */
int storage_fields(storage *s, const storage_field **fields, uint32_t *n);

/* Runs q. Returns 0 with *res filled (free it with
 * storage_history_result_free), -EOPNOTSUPP (no history kept),
 * -ETIMEDOUT (q->timeout_ms passed), -ENOMEM or -EIO, with err set. */
int storage_history(storage *s, const storage_history_query *q, storage_history_result *res, char *err, size_t errlen);

/* One step of deleting the readings whose ts_ms is below cutoff_ms: at
 * most max_rows of them, found without holding up the writes and deleted
 * in one short transaction that takes its turn with them; device marks
 * are kept. *deleted gets the rows deleted; *more is 0 once a round over
 * every device has ended, so calls until *more is 0 delete every older
 * reading stored up to the moments before (the last ones, not indexed
 * yet, go at the next round). Returns 0, -EOPNOTSUPP, or the backend's
 * codes (-EBUSY, -ENOSPC, -EIO); on an error nothing was deleted. */
int storage_expire(storage *s, int64_t cutoff_ms, uint32_t max_rows, uint64_t *deleted, int *more, char *err,
                   size_t errlen);

/* Rows stored and not yet in the history index (a query reads those by
 * a scan, so this says whether the index keeps up with ingest); -1 when
 * there is no index. Does not block; any thread. */
int64_t storage_history_behind(storage *s);

/* storage_history and storage_expire for tg_blocking_run. */
typedef struct storage_history_args {
  storage *db;
  const storage_history_query *q;
  storage_history_result res;
  char err[200];
} storage_history_args;
int storage_history_call(void *args);

typedef struct storage_expire_args {
  storage *db;
  int64_t cutoff_ms;
  uint32_t max_rows;
  uint64_t deleted;
  int more;
  char err[200];
} storage_expire_args;
int storage_expire_call(void *args);

/* storage_open and storage_count_rows with their arguments in one struct,
 * for tg_blocking_run (a database call never blocks a worker):
 *   storage_open_args a = {.db = &db, .opts = {...}};
 *   r = tg_blocking_run(storage_open_call, &a);   (a.err says why) */
typedef struct storage_open_args {
  storage **db;
  storage_opts opts;
  char err[200];
} storage_open_args;
int storage_open_call(void *args);

typedef struct storage_count_args {
  storage *db;
  uint64_t rows;
  char err[200];
} storage_count_args;
int storage_count_call(void *args);

typedef struct storage_mark_args {
  storage *db;
  uint32_t device;
  int found;
  uint64_t seq;
  char err[200];
} storage_mark_args;
int storage_mark_get_call(void *args);

typedef struct storage_forget_args {
  storage *db;
  const uint32_t *devices;
  size_t n;
} storage_forget_args;
int storage_marks_forget_call(void *args);

#endif
