/* storage.c - the storage interface of storage.h: the table of backends,
 * the routing of devices to connections, and the high-water marks, kept
 * here once for every backend. */
#include "storage_backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The registered backends, one line each: X(name) registers the
 * `storage_<name>_backend` defined in storage_<name>.c under the name
 * --storage looks up. */
#define STORAGE_BACKENDS(X) \
  X(sqlite)                 \
  X(postgres)               \
  X(none)

#define DECLARE_BACKEND(name) extern const storage_backend storage_##name##_backend;
STORAGE_BACKENDS(DECLARE_BACKEND)
#define LIST_BACKEND(name) &storage_##name##_backend,
static const storage_backend *const backends[] = {STORAGE_BACKENDS(LIST_BACKEND)};

/* The demo's decorator: wraps the chosen backend, never chosen itself. */
extern const storage_backend storage_faults_backend;

/* A device's high-water mark in memory. */
typedef struct mark {
  uint64_t seq;     /* committed, when `has` */
  uint64_t pending; /* in the write `stamp`, not yet committed */
  uint64_t stamp;
  uint32_t row;   /* in the write `stamp`: the index of its last fresh row */
  uint8_t loaded; /* looked up in the database */
  uint8_t has;    /* a reading of the device is stored: seq is its mark */
} mark;

/* What one connection owns: the marks of the devices routed to it,
 * indexed by device / connections, and the buffers of its writes. */
typedef struct conn_state {
  pthread_mutex_t lock; /* uncontended when the caller keeps storage.h's rule */
  mark *marks;
  uint32_t nmarks;
  uint64_t stamp;    /* writes begun */
  uint32_t *changed; /* devices whose mark the write moves */
  uint32_t nchanged, capchanged;
  storage_row *rows;
  storage_mark_update *updates;
  char (*decimal)[16]; /* rows' id texts when there is no namer */
  uint32_t caprows;
} conn_state;

struct storage {
  const storage_backend *backend;
  void *impl;
  int connections;
  storage_namer names;
  schema *own_schema; /* made when the opener gave none */
  conn_state conns[];
};

const char *storage_backend_names(char *buf, size_t len) {
  size_t at = 0;
  buf[0] = 0;
  for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
    int n = snprintf(buf + at, len - at, "%s%s", i ? ", " : "", backends[i]->name);
    if (n < 0 || (size_t)n >= len - at) break;
    at += (size_t)n;
  }
  return buf;
}

static const storage_backend *backend_named(const char *name) {
  for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
    if (strcmp(backends[i]->name, name) == 0) return backends[i];
  return NULL;
}

const char *storage_device_name(const storage_namer *n, uint32_t device, char buf[16]) {
  const char *name = n->device_name ? n->device_name(n->ctx, device) : NULL;
  if (name) return name;
  snprintf(buf, 16, "%u", (unsigned)device);
  return buf;
}

static void conns_free(storage *s) {
  for (int i = 0; i < s->connections; i++) {
    conn_state *c = &s->conns[i];
    pthread_mutex_destroy(&c->lock);
    free(c->marks);
    free(c->changed);
    free(c->rows);
    free(c->updates);
    free(c->decimal);
  }
}

int storage_open(storage **out, const storage_opts *opts, char *err, size_t errlen) {
  *out = NULL;
  if (opts->connections < 1 || opts->connections > STORAGE_MAX_CONNECTIONS) {
    snprintf(err, errlen, "storage needs 1 to %d connections, not %d", STORAGE_MAX_CONNECTIONS, opts->connections);
    return -EINVAL;
  }
  const char *name = opts->backend ? opts->backend : "sqlite";
  const storage_backend *backend = backend_named(name);
  if (!backend) {
    char names[200];
    snprintf(err, errlen, "no storage backend '%s' (registered: %s)", name, storage_backend_names(names, sizeof names));
    return -EINVAL;
  }
  schema *own = opts->schema ? NULL : schema_new(0);
  if (!opts->schema && !own) return -ENOMEM;
  storage_backend_opts bo = {.path = opts->path,
                             .schema = opts->schema ? opts->schema : own,
                             .connections = opts->connections,
                             .reset = opts->reset,
                             .durability = opts->durability,
                             .history = opts->history,
                             .names = {opts->device_name, opts->device_name_ctx}};
  if (opts->faults) {
    bo.faults = opts->faults;
    bo.inner = backend;
    backend = &storage_faults_backend;
  }
  storage *s = calloc(1, sizeof *s + (size_t)opts->connections * sizeof s->conns[0]);
  if (!s) {
    schema_free(own);
    return -ENOMEM;
  }
  s->own_schema = own;
  s->backend = backend;
  s->connections = opts->connections;
  s->names = bo.names;
  for (int i = 0; i < s->connections; i++) pthread_mutex_init(&s->conns[i].lock, NULL);
  int r = backend->open(&bo, &s->impl, err, errlen);
  if (r != 0) {
    schema_free(own);
    conns_free(s);
    free(s);
    return r;
  }
  *out = s;
  return 0;
}

int storage_backend_exists(const char *name) { return name && backend_named(name); }

int storage_connections(const storage *s) { return s->connections; }

int storage_route(const storage *s, uint32_t device) { return storage_route_of(device, s->connections); }

int storage_batch_touches(const storage *s, const batch *b, int conn) {
  for (uint32_t i = 0; i < b->n; i++)
    if (storage_route_of(b->items[i].device, s->connections) == conn) return 1;
  return 0;
}

int storage_write_pause(storage *s, int conn) { return s->backend->pause ? s->backend->pause(s->impl, conn) : 0; }

static mark *mark_of(conn_state *c, uint32_t slot) {
  if (slot >= c->nmarks) {
    uint32_t n = c->nmarks ? c->nmarks : 64;
    while (n <= slot) n *= 2;
    mark *m = realloc(c->marks, (size_t)n * sizeof *m);
    if (!m) return NULL;
    memset(m + c->nmarks, 0, (size_t)(n - c->nmarks) * sizeof *m);
    c->marks = m;
    c->nmarks = n;
  }
  return &c->marks[slot];
}

/* Room for n rows (and as many marks) in c's buffers. 0 or -ENOMEM. */
static int reserve_rows(conn_state *c, uint32_t n) {
  if (n <= c->caprows) return 0;
  storage_row *rows = realloc(c->rows, (size_t)n * sizeof *rows);
  if (rows) c->rows = rows;
  storage_mark_update *up = realloc(c->updates, (size_t)n * sizeof *up);
  if (up) c->updates = up;
  char(*dec)[16] = realloc(c->decimal, (size_t)n * sizeof *dec);
  if (dec) c->decimal = dec;
  if (!rows || !up || !dec) return -ENOMEM;
  c->caprows = n;
  return 0;
}

static int push_changed(conn_state *c, uint32_t device) {
  if (c->nchanged == c->capchanged) {
    uint32_t cap = c->capchanged ? c->capchanged * 2 : 256;
    uint32_t *d = realloc(c->changed, (size_t)cap * sizeof *d);
    if (!d) return -ENOMEM;
    c->changed = d;
    c->capchanged = cap;
  }
  c->changed[c->nchanged++] = device;
  return 0;
}

/* Picks the fresh rows of b routed to conn into c->rows, recording each
 * moved mark as pending. Returns the number of rows, or a negative code
 * (a mark that could not be loaded, -ENOMEM). */
static int64_t filter(storage *s, int conn, const batch *b, storage_write_result *res, char *err, size_t errlen) {
  conn_state *c = &s->conns[conn];
  uint32_t nrows = 0;
  for (uint32_t i = 0; i < b->n; i++) {
    const reading *r = &b->items[i];
    if (storage_route_of(r->device, s->connections) != conn) continue;
    mark *m = mark_of(c, r->device / (uint32_t)s->connections);
    if (!m) return -ENOMEM;
    const char *name = storage_device_name(&s->names, r->device, c->decimal[nrows]);
    if (!m->loaded) {
      int found = 0;
      int rc = s->backend->mark_load(s->impl, conn, name, &found, &m->seq, err, errlen);
      if (rc != 0) return rc;
      m->loaded = 1;
      m->has = found != 0;
    }
    int fresh = m->stamp == c->stamp ? r->seq > m->pending : !m->has || r->seq > m->seq;
    if (!fresh) {
      res->duplicates++;
      continue;
    }
    if (m->stamp != c->stamp) {
      if (push_changed(c, r->device) != 0) return -ENOMEM;
      m->stamp = c->stamp;
    }
    m->pending = r->seq;
    m->row = nrows;
    c->rows[nrows++] = (storage_row){r, name};
  }
  return nrows;
}

int storage_write(storage *s, int conn, const batch *b, storage_write_result *res, char *err, size_t errlen) {
  *res = (storage_write_result){0};
  if (conn < 0 || conn >= s->connections) {
    snprintf(err, errlen, "no connection %d", conn);
    return -EINVAL;
  }
  conn_state *c = &s->conns[conn];
  pthread_mutex_lock(&c->lock);
  c->stamp++;
  c->nchanged = 0;
  int64_t nrows = reserve_rows(c, b->n);
  if (nrows == 0) nrows = filter(s, conn, b, res, err, errlen);
  int r = nrows < 0 ? (int)nrows : 0;
  if (r == -ENOMEM) snprintf(err, errlen, "out of memory");
  if (r == 0) {
    for (uint32_t i = 0; i < c->nchanged; i++) {
      uint32_t d = c->changed[i];
      const mark *m = &c->marks[d / (uint32_t)s->connections];
      c->updates[i] = (storage_mark_update){d, c->rows[m->row].device, m->pending};
    }
    storage_rows w = {b->id, c->rows, (uint32_t)nrows, c->updates, c->nchanged};
    r = s->backend->write(s->impl, conn, &w, err, errlen);
  }
  if (r == 0) { /* committed: the pending marks are the marks now */
    for (uint32_t i = 0; i < c->nchanged; i++) {
      mark *m = &c->marks[c->changed[i] / (uint32_t)s->connections];
      m->seq = m->pending;
      m->has = 1;
    }
    res->inserted = (uint64_t)nrows;
  } else {
    *res = (storage_write_result){0};
  }
  pthread_mutex_unlock(&c->lock);
  return r;
}

int storage_mark_get(storage *s, uint32_t dev, int *found, uint64_t *seq, char *err, size_t errlen) {
  int conn = storage_route(s, dev);
  conn_state *c = &s->conns[conn];
  char decimal[16];
  pthread_mutex_lock(&c->lock);
  mark *m = mark_of(c, dev / (uint32_t)s->connections);
  int r = m ? 0 : -ENOMEM;
  if (r == -ENOMEM) snprintf(err, errlen, "out of memory");
  if (r == 0 && !m->loaded) { /* loaded as a write would, which then finds it loaded */
    int f = 0;
    r = s->backend->mark_load(s->impl, conn, storage_device_name(&s->names, dev, decimal), &f, &m->seq, err, errlen);
    if (r == 0) {
      m->loaded = 1;
      m->has = f != 0;
    }
  }
  if (r == 0) {
    *found = m->has;
    *seq = m->has ? m->seq : 0;
  }
  pthread_mutex_unlock(&c->lock);
  return r;
}

void storage_marks_forget(storage *s, const uint32_t *devs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    conn_state *c = &s->conns[storage_route(s, devs[i])];
    uint32_t slot = devs[i] / (uint32_t)s->connections;
    pthread_mutex_lock(&c->lock);
    if (slot < c->nmarks) c->marks[slot] = (mark){0};
    pthread_mutex_unlock(&c->lock);
  }
}

int storage_marks_forget_call(void *args) {
  storage_forget_args *a = args;
  storage_marks_forget(a->db, a->devices, a->n);
  return 0;
}

int storage_mark_get_call(void *args) {
  storage_mark_args *a = args;
  return storage_mark_get(a->db, a->device, &a->found, &a->seq, a->err, sizeof a->err);
}

int storage_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen) {
  pthread_mutex_lock(&s->conns[0].lock);
  int r = s->backend->count_rows(s->impl, rows, err, errlen);
  pthread_mutex_unlock(&s->conns[0].lock);
  return r;
}

void storage_close(storage *s) {
  if (!s) return;
  s->backend->close(s->impl);
  schema_free(s->own_schema);
  conns_free(s);
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

/* Appends n bytes of p to buf (cap bytes, *len used), as far as they fit. */
static void put(char *buf, size_t cap, size_t *len, const char *p, size_t n) {
  if (*len + n >= cap) n = cap - *len - 1;
  memcpy(buf + *len, p, n);
  *len += n;
}

const char *storage_path_shown(const char *path, char *buf, size_t cap) {
  size_t len = 0;
  const char *scheme = strstr(path, "://");
  const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
  const char *colon = at ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) : NULL;
  for (const char *p = path; *p;) {
    const char *secret_end = NULL;
    size_t keep = 1;
    if (colon && p == colon + 1) { /* a URI's user:password@ */
      secret_end = at;
      keep = 0;
      colon = NULL;
    } else if (strncmp(p, "password=", 9) == 0 && (p == path || strchr(" ?&", p[-1]))) { /* key=value, ?password= */
      keep = 9;
      secret_end = p + 9 + strcspn(p + 9, " &");
    }
    put(buf, cap, &len, p, keep);
    p += keep;
    if (secret_end) {
      put(buf, cap, &len, "***", 3);
      p = secret_end;
    }
  }
  buf[len] = '\0';
  return buf;
}

/* ------------------------------------------------------------ history */

void storage_history_result_free(storage_history_result *r) {
  free(r->values);
  free(r->text);
  *r = (storage_history_result){0};
}

int storage_fields(storage *s, const storage_field **fields, uint32_t *n) {
  return s->backend->fields ? s->backend->fields(s->impl, fields, n) : -EOPNOTSUPP;
}

int storage_history(storage *s, const storage_history_query *q, storage_history_result *res, char *err, size_t errlen) {
  *res = (storage_history_result){0};
  if (!s->backend->history) {
    snprintf(err, errlen, "the %s backend keeps no history", s->backend->name);
    return -EOPNOTSUPP;
  }
  int r = s->backend->history(s->impl, q, res, err, errlen);
  if (r != 0) storage_history_result_free(res);
  return r;
}

int storage_expire(storage *s, int64_t cutoff_ms, uint32_t max_rows, uint64_t *deleted, int *more, char *err,
                   size_t errlen) {
  *deleted = 0;
  *more = 0;
  if (!s->backend->expire) {
    snprintf(err, errlen, "the %s backend keeps no history", s->backend->name);
    return -EOPNOTSUPP;
  }
  return s->backend->expire(s->impl, cutoff_ms, max_rows, deleted, more, err, errlen);
}

int64_t storage_history_behind(storage *s) { return s->backend->behind ? s->backend->behind(s->impl) : -1; }

int storage_history_call(void *args) {
  storage_history_args *a = args;
  return storage_history(a->db, a->q, &a->res, a->err, sizeof a->err);
}

int storage_expire_call(void *args) {
  storage_expire_args *a = args;
  return storage_expire(a->db, a->cutoff_ms, a->max_rows, &a->deleted, &a->more, a->err, sizeof a->err);
}
