/* storage.c - the storage interface: picks the backend, forwards calls. */
#include "storage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int storage_open(storage **out, const storage_opts *opts, char *err, size_t errlen) {
  *out = NULL;
  if (opts->connections < 1) {
    snprintf(err, errlen, "storage needs at least one connection");
    return -EINVAL;
  }
  storage *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  /* The one place a backend is chosen: SQLite until PostgreSQL exists. */
  s->backend = &storage_sqlite_backend;
  s->connections = opts->connections;
  int r = s->backend->open(s, opts, err, errlen);
  if (r != 0) {
    free(s);
    return r;
  }
  *out = s;
  return 0;
}

int storage_write(storage *s, int conn, const batch *b, int fail, storage_write_result *res,
                  char *err, size_t errlen) {
  if (conn < 0 || conn >= s->connections) {
    snprintf(err, errlen, "no connection %d", conn);
    return -EINVAL;
  }
  return s->backend->write(s, conn, b, fail, res, err, errlen);
}

int storage_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen) {
  return s->backend->count_rows(s, rows, err, errlen);
}

void storage_close(storage *s) {
  if (!s) return;
  s->backend->close(s);
  free(s);
}
