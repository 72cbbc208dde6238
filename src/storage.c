/* storage.c - the storage interface: picks the backend, forwards calls,
 * and keeps the high-water marks in memory for every backend. */
#include "storage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int storage_open(storage **out, const storage_opts *opts, char *err, size_t errlen) {
  *out = NULL;
  if (opts->connections < 1) {
    snprintf(err, errlen, "storage needs at least one connection");
    return -EINVAL;
  }
  const storage_backend *backend;
  /* The one place a backend is chosen. */
  if (!opts->backend || strcmp(opts->backend, "sqlite") == 0) {
    backend = &storage_sqlite_backend;
  } else if (strcmp(opts->backend, "none") == 0) {
    backend = &storage_none_backend;
  } else {
    snprintf(err, errlen, "no storage backend '%s'", opts->backend);
    return -EINVAL;
  }
  storage *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->backend = backend;
  s->connections = opts->connections;
  s->device_name = opts->device_name;
  s->device_name_ctx = opts->device_name_ctx;
  pthread_mutex_init(&s->write_lock, NULL);
  int r = s->backend->open(s, opts, err, errlen);
  if (r != 0) {
    pthread_mutex_destroy(&s->write_lock);
    free(s);
    return r;
  }
  *out = s;
  return 0;
}

const char *storage_device_name(storage *s, uint32_t device, char buf[16]) {
  const char *name = s->device_name ? s->device_name(s->device_name_ctx, device) : NULL;
  if (name) return name;
  snprintf(buf, 16, "%u", (unsigned)device);
  return buf;
}

static storage_mark *mark_of(storage *s, uint32_t device) {
  if (device >= s->nmarks) {
    uint32_t n = s->nmarks ? s->nmarks : 64;
    while (n <= device) n *= 2;
    storage_mark *m = realloc(s->marks, (size_t)n * sizeof *m);
    if (!m) return NULL;
    memset(m + s->nmarks, 0, (size_t)(n - s->nmarks) * sizeof *m);
    s->marks = m;
    s->nmarks = n;
  }
  return &s->marks[device];
}

int storage_mark_check(storage *s, int conn, const reading *r, char *err, size_t errlen) {
  storage_mark *m = mark_of(s, r->device);
  if (!m) return -ENOMEM;
  if (!m->loaded) {
    char buf[16];
    int found = 0;
    int rc = s->backend->mark_load(s, conn, storage_device_name(s, r->device, buf), &found, &m->seq, err, errlen);
    if (rc != 0) return rc;
    m->loaded = 1;
    m->has = found != 0;
  }
  if (m->stamp == s->stamp ? r->seq <= m->pending : m->has && r->seq <= m->seq) return 0;
  if (m->stamp != s->stamp) {
    if (s->nchanged == s->capchanged) {
      uint32_t cap = s->capchanged ? s->capchanged * 2 : 256;
      uint32_t *c = realloc(s->changed, (size_t)cap * sizeof *c);
      if (!c) return -ENOMEM;
      s->changed = c;
      s->capchanged = cap;
    }
    s->changed[s->nchanged++] = r->device;
    m->stamp = s->stamp;
  }
  m->pending = r->seq;
  return 1;
}

int storage_write(storage *s, int conn, const batch *b, int fail, storage_write_result *res,
                  char *err, size_t errlen) {
  if (conn < 0 || conn >= s->connections) {
    snprintf(err, errlen, "no connection %d", conn);
    return -EINVAL;
  }
  pthread_mutex_lock(&s->write_lock);
  s->stamp++;
  s->nchanged = 0;
  int r = s->backend->write(s, conn, b, fail, res, err, errlen);
  if (r == 0) /* committed: the pending marks are the marks now */
    for (uint32_t i = 0; i < s->nchanged; i++) {
      storage_mark *m = &s->marks[s->changed[i]];
      m->seq = m->pending;
      m->has = 1;
    }
  s->nchanged = 0;
  pthread_mutex_unlock(&s->write_lock);
  return r;
}

int storage_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen) {
  pthread_mutex_lock(&s->write_lock);
  int r = s->backend->count_rows(s, rows, err, errlen);
  pthread_mutex_unlock(&s->write_lock);
  return r;
}

void storage_close(storage *s) {
  if (!s) return;
  s->backend->close(s);
  pthread_mutex_destroy(&s->write_lock);
  free(s->marks);
  free(s->changed);
  free(s);
}

int storage_open_call(void *args) {
  storage_open_args *a = args;
  return storage_open(a->db, &a->opts, a->err, sizeof a->err);
}

int storage_count_call(void *args) {
  storage_count_args *a = args;
  return storage_count_rows(a->db, &a->rows, a->err, sizeof a->err);
}
