/* storage.h - where committed readings live: one small interface, one file
 * per database (storage_sqlite.c now, PostgreSQL later), chosen in
 * storage_open and nowhere else.
 *
 * A storage has a fixed number of connections, numbered 0..n-1. A
 * connection is used by one caller at a time - the pipeline guarantees it
 * by holding a pool permit and marking the connection busy - but that
 * caller may be any thread: the calls below block, so the pipeline runs
 * them through tg_blocking_run.
 *
 * Schema: an append-only `readings` table, and `device_hwm`, the highest
 * seq stored per device, updated in the same transaction. A reading whose
 * seq is not above its device's mark is a resend and is skipped, so a
 * retried batch can never store a reading twice, without a composite key
 * on the hot table (DESIGN.md has the measurements). Devices are stored
 * by their id as text ("7", "dev-42"); readings carry the pipeline's
 * numeric index, which opts.device_name turns into that text.
 *
 * The marks are also kept in memory, loaded from device_hwm the first
 * time a device appears, so a batch costs no lookup per device; they are
 * advanced only after a commit. Transactions of one storage run one at a
 * time (a mutex; SQLite has one writer anyway), so the marks in memory
 * always equal the committed ones. The rule needs a device's batches to
 * commit in the order they were cut: with one connection (serve's
 * default) the FIFO pool semaphore guarantees it.
 *
 * Every call returns 0 or a negative code (-EIO for a database error) and,
 * on error, writes a one-line reason into `err`. */
#ifndef TELEGATE_STORAGE_H
#define TELEGATE_STORAGE_H

#include "reading.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct storage storage;

typedef struct storage_opts {
  const char *backend; /* "sqlite" (NULL too) or "none" (counts, stores nothing) */
  const char *path;    /* the database: for SQLite a file name */
  int connections;     /* >= 1 */
  int reset;           /* nonzero: start from empty tables (the demo) */
  /* The id text of a device index, or NULL: the index in decimal. Called
   * from the thread running the write; must be thread-safe. */
  const char *(*device_name)(void *ctx, uint32_t device);
  void *device_name_ctx;
} storage_opts;

typedef struct storage_write_result {
  uint64_t inserted;   /* rows added to readings */
  uint64_t duplicates; /* readings at or below their device's mark, skipped */
} storage_write_result;

/* The operations a backend provides; each backend file defines one. */
typedef struct storage_backend {
  const char *name;
  int (*open)(storage *s, const storage_opts *opts, char *err, size_t errlen);
  /* The committed mark of a device not yet in memory: *found 0 when the
   * device has none (any seq, 0 included, is then new). */
  int (*mark_load)(storage *s, int conn, const char *device, int *found, uint64_t *seq, char *err, size_t errlen);
  /* One transaction: insert the batch, advance the marks, commit. With
   * `fail` set, roll back instead of committing and report a failure (the
   * demo's fault injection; nothing is stored). */
  int (*write)(storage *s, int conn, const batch *b, int fail, storage_write_result *res,
               char *err, size_t errlen);
  int (*count_rows)(storage *s, uint64_t *rows, char *err, size_t errlen);
  void (*close)(storage *s);
} storage_backend;

extern const storage_backend storage_sqlite_backend;
extern const storage_backend storage_none_backend;

/* A device's high-water mark in memory. */
typedef struct storage_mark {
  uint64_t seq;     /* committed, when `has` */
  uint64_t pending; /* in the transaction `stamp`, not yet committed */
  uint64_t stamp;
  uint8_t loaded;   /* looked up in the database */
  uint8_t has;      /* a reading of the device is stored: seq is its mark */
  uint8_t dirty;    /* for the backend: the mark moved since it last wrote it in full */
} storage_mark;

struct storage {
  const storage_backend *backend;
  int connections;
  void *impl; /* the backend's own state */
  const char *(*device_name)(void *ctx, uint32_t device);
  void *device_name_ctx;
  pthread_mutex_t write_lock; /* one transaction at a time; guards the marks */
  storage_mark *marks;        /* by device index */
  uint32_t nmarks;
  uint64_t stamp;             /* transactions begun */
  uint32_t *changed;          /* devices whose mark the transaction moves */
  uint32_t nchanged, capchanged;
  uint64_t none_rows;         /* the none backend's count */
};

/* For backends, inside write: the id text of device (valid until the
 * next call on this storage from this thread). */
const char *storage_device_name(storage *s, uint32_t device, char buf[16]);

/* For backends, inside write: whether reading r is above its device's
 * mark (then it is recorded as pending and must be inserted). Returns 1,
 * 0 for a resend, or a negative code when the mark could not be loaded. */
int storage_mark_check(storage *s, int conn, const reading *r, char *err, size_t errlen);

/* Opens the storage. Returns 0, -ENOMEM or -EIO. */
int storage_open(storage **out, const storage_opts *opts, char *err, size_t errlen);
/* See storage_backend.write. conn is 0..connections-1. */
int storage_write(storage *s, int conn, const batch *b, int fail, storage_write_result *res,
                  char *err, size_t errlen);
/* SELECT COUNT(*) of readings, on connection 0. */
int storage_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen);
void storage_close(storage *s);

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

#endif
