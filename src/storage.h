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
 * on the hot table (DESIGN.md has the measurements).
 *
 * Every call returns 0 or a negative code (-EIO for a database error) and,
 * on error, writes a one-line reason into `err`. */
#ifndef TELEGATE_STORAGE_H
#define TELEGATE_STORAGE_H

#include "reading.h"

#include <stddef.h>
#include <stdint.h>

typedef struct storage storage;

typedef struct storage_opts {
  const char *path;  /* the database: for SQLite a file name */
  int connections;   /* >= 1 */
  int reset;         /* nonzero: start from empty tables (the demo) */
} storage_opts;

typedef struct storage_write_result {
  uint64_t inserted;   /* rows added to readings */
  uint64_t duplicates; /* readings at or below their device's mark, skipped */
} storage_write_result;

/* The operations a backend provides; each backend file defines one. */
typedef struct storage_backend {
  const char *name;
  int (*open)(storage *s, const storage_opts *opts, char *err, size_t errlen);
  /* One transaction: insert the batch, advance the marks, commit. With
   * `fail` set, roll back instead of committing and report a failure (the
   * demo's fault injection; nothing is stored). */
  int (*write)(storage *s, int conn, const batch *b, int fail, storage_write_result *res,
               char *err, size_t errlen);
  int (*count_rows)(storage *s, uint64_t *rows, char *err, size_t errlen);
  void (*close)(storage *s);
} storage_backend;

extern const storage_backend storage_sqlite_backend;

struct storage {
  const storage_backend *backend;
  int connections;
  void *impl; /* the backend's own state */
};

/* Opens the storage. Returns 0, -ENOMEM or -EIO. */
int storage_open(storage **out, const storage_opts *opts, char *err, size_t errlen);
/* See storage_backend.write. conn is 0..connections-1. */
int storage_write(storage *s, int conn, const batch *b, int fail, storage_write_result *res,
                  char *err, size_t errlen);
/* SELECT COUNT(*) of readings, on connection 0. */
int storage_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen);
void storage_close(storage *s);

#endif
