/* storage_backend.h - what a storage backend provides (storage.h is what
 * the pipeline uses).
 *
 * A backend is one file defining one `const storage_backend` and one line
 * in the table of storage.c, which looks it up by name (--storage NAME).
 * It stores rows and marks and nothing else: storage.c routes devices to
 * connections, keeps the high-water marks in memory, drops resends, and
 * hands the backend, per transaction, the fresh rows and the marks to
 * persist with them. The backend never compares seqs with marks, except
 * to merge marks of its own (a fold, storage_sqlite.c).
 *
 * Calls on one connection come one at a time, on any thread; calls on
 * different connections may come at once (a backend whose database has
 * one writer, as SQLite, makes them take turns itself). Every call
 * returns 0 or a negative code and on error writes a one-line reason
 * into `err`: -ENOSPC (the disk is full), -EROFS (the database or its
 * files cannot be written), -EBUSY (another holds the database's lock),
 * -ENOMEM, -EIO (any other database error). Callers retry all of them
 * alike; the code only tells a person what to fix. */
#ifndef TELEGATE_STORAGE_BACKEND_H
#define TELEGATE_STORAGE_BACKEND_H

#include "storage.h"

/* The id text of a device index: opts.device_name's, else decimal. */
typedef struct storage_namer {
  const char *(*device_name)(void *ctx, uint32_t device);
  void *ctx;
} storage_namer;

/* The id text of device: the namer's (valid while the storage is open),
 * else its decimal index written into buf. */
const char *storage_device_name(const storage_namer *n, uint32_t device, char buf[16]);

typedef struct storage_backend_opts {
  const char *path;
  int connections;
  int reset;
  storage_durability durability;
  storage_namer names;
  int history;                         /* keep the history index (storage.h) */
  schema *schema;                      /* storage_opts.schema, or the storage's own */
  const storage_faults_opts *faults;   /* for the fault decorator only */
  const struct storage_backend *inner; /* for the fault decorator only: what it wraps */
} storage_backend_opts;

typedef struct storage_row {
  const reading *r;
  const char *device; /* its id text, valid during the call */
} storage_row;

typedef struct storage_mark_update {
  uint32_t device;  /* the index, for a backend's own bookkeeping */
  const char *name; /* its id text, valid during the call */
  uint64_t seq;     /* the new mark: above the committed one */
} storage_mark_update;

/* One transaction's work, on one connection. */
typedef struct storage_rows {
  uint64_t batch_id;
  const storage_row *rows; /* fresh, in the batch's order */
  uint32_t nrows;
  const storage_mark_update *marks; /* one per device with fresh rows */
  uint32_t nmarks;
} storage_rows;

typedef struct storage_backend {
  const char *name;
  /* Opens opts->connections connections, creating the schema (dropping
   * it first with opts->reset). Sets *impl, the backend's state. */
  int (*open)(const storage_backend_opts *opts, void **impl, char *err, size_t errlen);
  /* The committed mark of a device: *found 0 when it has none (any seq,
   * 0 included, is then fresh). */
  int (*mark_load)(void *impl, int conn, const char *device, int *found, uint64_t *seq, char *err, size_t errlen);
  /* One transaction: insert the rows, persist the marks, commit; or, on
   * any error, roll back and store nothing. */
  int (*write)(void *impl, int conn, const storage_rows *w, char *err, size_t errlen);
  /* Optional (NULL for a database): waits on the writer's task before a
   * write attempt. 0 or TG_ECANCELED. */
  int (*pause)(void *impl, int conn);
  int (*count_rows)(void *impl, uint64_t *rows, char *err, size_t errlen);
  /* Optional (NULL: -EOPNOTSUPP), the history of storage.h: the fields
   * of the readings table, a query, and one chunk of deletion. */
  int (*fields)(void *impl, const storage_field **fields, uint32_t *n);
  int (*history)(void *impl, const storage_history_query *q, storage_history_result *res, char *err, size_t errlen);
  int64_t (*behind)(void *impl); /* rows not indexed yet; -1: no index */
  int (*expire)(void *impl, int64_t cutoff_ms, uint32_t max_rows, uint64_t *deleted, int *more, char *err,
                size_t errlen);
  /* Persists what it deferred, closes everything. impl may be half open. */
  void (*close)(void *impl);
} storage_backend;

#endif
