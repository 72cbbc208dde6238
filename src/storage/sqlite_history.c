/* sqlite_history.c - the history index of the SQLite backend; see
 * sqlite_history.h. */
#include "sqlite_history.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The one VFS every connection of the backend uses (storage_sqlite.c). */
#define VFS "unix-excl"

enum {
  READERS = 2,          /* query connections: queries at once (more wait for one) */
  CHUNK = 1000000,      /* rows indexed per transaction at most */
  GATHER_ROWS = 200000, /* fewer new rows wait ... */
  GATHER_MS = 1000,     /* ... this long since the last pass, so that each device has several per chunk */
  IDLE_MS = 200,        /* the indexer looks for new rows this often when it has caught up */
  WAL_FRAMES = 16384,   /* the index file's WAL is emptied when a checkpoint leaves more (64 MiB) */
  EXPIRE_DEVICES = 256, /* devices looked at per expiry transaction at most */
  PROGRESS_OPS = 10000, /* VM steps between two looks at a query's deadline */
};

typedef struct reader {
  pthread_mutex_t lock;
  sqlite3 *db;
} reader;

struct sqlite_history {
  char *path, *index_path;
  pthread_mutex_t *write_lock; /* the writer's: expiry takes its turn on it */
  /* The index file has one writer at a time: the indexer or expiry. */
  pthread_mutex_t index_lock;
  /* The readings table's fields: columns are only ever added, so a field
   * is written once, before nfields is raised past it (under fields_lock). */
  storage_field fields[STORAGE_MAX_FIELDS];
  _Atomic uint32_t nfields;
  pthread_mutex_t fields_lock;
  sqlite3 *indexer; /* the thread's connection */
  sqlite3 *expirer; /* expiry's, used under index_lock */
  /* Expiry's place: the front of the table, then a round over the
   * devices of device_hwm, going on after expire_after ("": the first). */
  int expire_devices;
  char expire_after[256];
  reader readers[READERS];
  pthread_t thread;
  pthread_mutex_t lock; /* guards stop */
  pthread_cond_t wake;
  int stop, running;
  int64_t indexed_ms;     /* the indexer's last pass that indexed (its thread's) */
  _Atomic int64_t behind; /* rows stored and not indexed yet, at the last pass */
};

/* The storage_backend.h code of a SQLite failure, with its message in err. */
static int fail(sqlite3 *db, const char *what, char *err, size_t errlen) {
  int rc = db ? sqlite3_errcode(db) & 0xff : SQLITE_NOMEM;
  int code = rc == SQLITE_FULL                            ? -ENOSPC
             : rc == SQLITE_READONLY || rc == SQLITE_PERM ? -EROFS
             : rc == SQLITE_BUSY || rc == SQLITE_LOCKED   ? -EBUSY
             : rc == SQLITE_NOMEM                         ? -ENOMEM
             : rc == SQLITE_INTERRUPT                     ? -ETIMEDOUT
                                                          : -EIO;
  snprintf(err, errlen, "sqlite history: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
  return code;
}

/* A connection to the database with the index file attached as "h"
 * (created, unless query_only: an ATTACH creates with the flags of the
 * open). */
static int connect(sqlite_history *h, sqlite3 **db, int query_only, char *err, size_t errlen) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (query_only ? 0 : SQLITE_OPEN_CREATE);
  if (sqlite3_open_v2(h->path, db, flags, VFS) != SQLITE_OK) return fail(*db, "open", err, errlen);
  sqlite3_busy_timeout(*db, 10000);
  char *sql = sqlite3_mprintf("PRAGMA mmap_size=0; ATTACH %Q AS h; PRAGMA h.mmap_size=0; PRAGMA h.journal_mode=WAL;"
                              "PRAGMA h.synchronous=NORMAL; PRAGMA query_only=%d;",
                              h->index_path, query_only);
  int r = sql ? sqlite3_exec(*db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
  sqlite3_free(sql);
  return r == SQLITE_OK ? 0 : fail(*db, "attach the history index", err, errlen);
}

/* The readings table's columns but device, seq, ts_ms and batch, those
 * added since the last look appended (fields come as readings bring
 * them, so this is looked at again at each query's start). */
static int read_fields(sqlite_history *h, sqlite3 *db, char *err, size_t errlen) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, "SELECT name, type FROM pragma_table_info('readings') ORDER BY cid", -1, &st, NULL))
    return fail(db, "table_info", err, errlen);
  pthread_mutex_lock(&h->fields_lock);
  uint32_t n = 0, have = atomic_load(&h->nfields);
  while (sqlite3_step(st) == SQLITE_ROW && n < STORAGE_MAX_FIELDS) {
    const char *name = (const char *)sqlite3_column_text(st, 0), *type = (const char *)sqlite3_column_text(st, 1);
    if (!name || strlen(name) > STORAGE_FIELD_NAME_MAX || strcmp(name, "device") == 0 || strcmp(name, "seq") == 0 ||
        strcmp(name, "ts_ms") == 0 || strcmp(name, "batch") == 0)
      continue;
    if (n++ < have) continue;
    storage_field *f = &h->fields[n - 1];
    snprintf(f->name, sizeof f->name, "%s", name);
    /* SQLite's affinity rules, in short */
    f->type = type && strcasestr(type, "INT")                                  ? STORAGE_INTEGER
              : type && (strcasestr(type, "CHAR") || strcasestr(type, "TEXT")) ? STORAGE_TEXT
                                                                               : STORAGE_REAL;
  }
  atomic_store(&h->nfields, n);
  pthread_mutex_unlock(&h->fields_lock);
  sqlite3_finalize(st);
  return 0;
}

static const char index_schema[] =
    "CREATE TABLE IF NOT EXISTS h.readings_index (device TEXT NOT NULL, ts_ms INTEGER NOT NULL, row INTEGER NOT NULL,"
    " PRIMARY KEY (device, ts_ms, row)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS h.indexed (upto INTEGER NOT NULL);"
    "INSERT INTO h.indexed SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM h.indexed);";

/* ------------------------------------------------------------ indexing */

static int64_t one_int(sqlite3 *db, const char *sql, int *ok) {
  sqlite3_stmt *st;
  int64_t v = 0;
  *ok = 0;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    v = sqlite3_column_int64(st, 0);
    *ok = 1;
  }
  sqlite3_finalize(st);
  return v;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Indexes the next chunk of rows. The cost of a chunk is a page per
 * device more than its rows: a few new rows wait up to GATHER_MS for
 * more. Returns 1 when a whole chunk was done (more may wait), 0 when it
 * has caught up for now, -1 on an error (tried again at the next pass). */
static int index_chunk(sqlite_history *h) {
  sqlite3 *db = h->indexer;
  int ok1, ok2, more = 0, failed = 0;
  pthread_mutex_lock(&h->index_lock);
  if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
    pthread_mutex_unlock(&h->index_lock);
    return -1;
  }
  int64_t upto = one_int(db, "SELECT upto FROM h.indexed", &ok1);
  int64_t top = one_int(db, "SELECT COALESCE(MAX(rowid), 0) FROM main.readings", &ok2);
  if (!ok1 || !ok2) failed = 1;
  /* Every row was deleted and rowids start again: so does the index. */
  if (!failed && top < upto) upto = top;
  if (!failed) atomic_store_explicit(&h->behind, top > upto ? top - upto : 0, memory_order_relaxed);
  int gather = top - upto < GATHER_ROWS && now_ms() - h->indexed_ms < GATHER_MS;
  if (!failed && top > upto && !gather) {
    h->indexed_ms = now_ms();
    int64_t hi = top - upto > CHUNK ? upto + CHUNK : top;
    sqlite3_stmt *st;
    failed = sqlite3_prepare_v2(db,
                                "INSERT OR IGNORE INTO h.readings_index (device, ts_ms, row) SELECT device, ts_ms, "
                                "rowid FROM main.readings WHERE rowid > ?1 AND rowid <= ?2 ORDER BY 1, 2, 3",
                                -1, &st, NULL) != SQLITE_OK;
    if (!failed) {
      sqlite3_bind_int64(st, 1, upto);
      sqlite3_bind_int64(st, 2, hi);
      failed = sqlite3_step(st) != SQLITE_DONE;
      sqlite3_finalize(st);
    }
    char sql[64];
    snprintf(sql, sizeof sql, "UPDATE h.indexed SET upto = %" PRId64, hi);
    if (!failed) failed = sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK;
    more = hi < top;
  } else if (!failed && top < one_int(db, "SELECT upto FROM h.indexed", &ok1)) {
    char sql[64];
    snprintf(sql, sizeof sql, "UPDATE h.indexed SET upto = %" PRId64, top);
    failed = sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK;
  }
  if (failed || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    failed = 1;
  }
  pthread_mutex_unlock(&h->index_lock);
  /* A chunk dirties a page per device, tens of MB of the index file's
   * WAL, copied back after each. When queries come often, one is always
   * reading, a passive checkpoint never lets the WAL start over, and
   * every query pays for its length: past WAL_FRAMES the checkpoint
   * waits for the queries reading (each bounded in time) and empties it. */
  int frames = 0;
  if (!failed) sqlite3_wal_checkpoint_v2(db, "h", SQLITE_CHECKPOINT_PASSIVE, &frames, NULL);
  if (!failed && frames > WAL_FRAMES) sqlite3_wal_checkpoint_v2(db, "h", SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
  return failed ? -1 : more;
}

static void *indexer_thread(void *arg) {
  sqlite_history *h = arg;
  /* Ingest first: the indexer runs only on a core nothing else wants
   * (SCHED_IDLE; where that is refused, at the lowest nice). With every
   * core busy the index falls behind - queries scan what it has not taken
   * yet, and /metrics shows how far - and catches up when ingest calms.
   * At nice 10 it still took a tenth of a busy core: 0.7 CPU-s per
   * million readings that ingest then lacked. */
  struct sched_param idle = {0};
  if (sched_setscheduler((pid_t)syscall(SYS_gettid), SCHED_IDLE, &idle) != 0)
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
  pthread_mutex_lock(&h->lock);
  while (!h->stop) {
    pthread_mutex_unlock(&h->lock);
    int more = index_chunk(h);
    pthread_mutex_lock(&h->lock);
    if (more == 1 || h->stop) continue;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)IDLE_MS * 1000000;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    pthread_cond_timedwait(&h->wake, &h->lock, &until);
  }
  pthread_mutex_unlock(&h->lock);
  return NULL;
}

/* ------------------------------------------------------------ open, close */

void sqlite_history_close(sqlite_history *h) {
  if (!h) return;
  if (h->running) {
    pthread_mutex_lock(&h->lock);
    h->stop = 1;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
  }
  sqlite3_close(h->indexer);
  sqlite3_close(h->expirer);
  for (int i = 0; i < READERS; i++) {
    sqlite3_close(h->readers[i].db);
    pthread_mutex_destroy(&h->readers[i].lock);
  }
  pthread_mutex_destroy(&h->index_lock);
  pthread_mutex_destroy(&h->fields_lock);
  pthread_mutex_destroy(&h->lock);
  pthread_cond_destroy(&h->wake);
  free(h->path);
  free(h->index_path);
  free(h);
}

int sqlite_history_open(sqlite_history **out, const char *path, pthread_mutex_t *write_lock, char *err, size_t errlen) {
  *out = NULL;
  sqlite_history *h = calloc(1, sizeof *h);
  size_t len = strlen(path);
  if (h) h->path = strdup(path);
  if (h) h->index_path = malloc(len + sizeof "-history");
  if (!h || !h->path || !h->index_path) {
    if (h) free(h->path);
    free(h);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  memcpy(h->index_path, path, len);
  memcpy(h->index_path + len, "-history", sizeof "-history");
  h->write_lock = write_lock;
  pthread_mutex_init(&h->index_lock, NULL);
  pthread_mutex_init(&h->fields_lock, NULL);
  pthread_mutex_init(&h->lock, NULL);
  pthread_cond_init(&h->wake, NULL);
  for (int i = 0; i < READERS; i++) pthread_mutex_init(&h->readers[i].lock, NULL);
  int r = connect(h, &h->indexer, 0, err, errlen);
  if (r == 0 && sqlite3_exec(h->indexer, index_schema, NULL, NULL, NULL) != SQLITE_OK)
    r = fail(h->indexer, "create the history index", err, errlen);
  if (r == 0) r = read_fields(h, h->indexer, err, errlen);
  if (r == 0) r = connect(h, &h->expirer, 0, err, errlen);
  for (int i = 0; r == 0 && i < READERS; i++) r = connect(h, &h->readers[i].db, 1, err, errlen);
  if (r == 0 && pthread_create(&h->thread, NULL, indexer_thread, h) != 0) {
    snprintf(err, errlen, "sqlite history: cannot start the indexing thread");
    r = -ENOMEM;
  }
  if (r != 0) {
    sqlite_history_close(h);
    return r;
  }
  h->running = 1;
  *out = h;
  return 0;
}

int64_t sqlite_history_behind(sqlite_history *h) { return atomic_load_explicit(&h->behind, memory_order_relaxed); }

int sqlite_history_fields(sqlite_history *h, const storage_field **fields, uint32_t *n) {
  /* A look for new columns, unless a query holds the connection (this is
   * called from the HTTP task, which must not wait on one): a failed or
   * skipped look keeps the fields known. */
  char err[160];
  if (pthread_mutex_trylock(&h->readers[0].lock) == 0) {
    read_fields(h, h->readers[0].db, err, sizeof err);
    pthread_mutex_unlock(&h->readers[0].lock);
  }
  *fields = h->fields;
  *n = atomic_load(&h->nfields);
  return 0;
}

/* ------------------------------------------------------------ queries */

/* Room for one more row in res. 0 or -1. */
static int grow(storage_history_result *res) {
  if (res->nrows < res->cap) return 0;
  uint32_t cap = res->cap ? res->cap * 2 : 64;
  storage_value *v = realloc(res->values, (size_t)cap * res->ncols * sizeof *v);
  if (!v) return -1;
  res->values = v;
  res->cap = cap;
  return 0;
}

static int keep_text(storage_history_result *res, storage_value *out, const unsigned char *text, int n) {
  if (res->textlen + (size_t)n > res->textcap) {
    size_t cap = res->textcap ? res->textcap : 4096;
    while (cap < res->textlen + (size_t)n) cap *= 2;
    char *t = realloc(res->text, cap);
    if (!t) return -1;
    res->text = t;
    res->textcap = cap;
  }
  memcpy(res->text + res->textlen, text, (size_t)n);
  out->type = STORAGE_STR;
  out->v.s.off = (uint32_t)res->textlen;
  out->v.s.len = (uint32_t)n;
  res->textlen += (size_t)n;
  return 0;
}

static int column_value(storage_history_result *res, storage_value *out, sqlite3_stmt *st, int col) {
  switch (sqlite3_column_type(st, col)) {
  case SQLITE_INTEGER: out->type = STORAGE_INT, out->v.i = sqlite3_column_int64(st, col); return 0;
  case SQLITE_FLOAT: out->type = STORAGE_DOUBLE, out->v.d = sqlite3_column_double(st, col); return 0;
  case SQLITE_NULL: out->type = STORAGE_NULL; return 0;
  default: return keep_text(res, out, sqlite3_column_text(st, col), sqlite3_column_bytes(st, col));
  }
}

static int past_deadline(void *arg) { return now_ms() > *(const int64_t *)arg; }

/* The SQL of q. The index gives the rows indexed in (ts, row) order and
 * the tail (rowid > upto, ?6) the rest; ORDER BY over the UNION ALL
 * merges the two sorted sides, so a LIMIT reads only what it returns
 * from the index. Field names come from the table itself, quoted. */
static char *query_sql(const sqlite_history *h, const storage_history_query *q) {
  sqlite3_str *cols = sqlite3_str_new(NULL), *aggs = sqlite3_str_new(NULL);
  for (uint32_t i = 0; i < q->nfields; i++) {
    const char *name = h->fields[q->fields[i]].name; /* %w: quoted as an identifier */
    sqlite3_str_appendf(cols, ", r.\"%w\"", name);
    sqlite3_str_appendf(aggs, ", MIN(\"%w\"), MAX(\"%w\"), AVG(\"%w\")", name, name, name);
  }
  int failed = sqlite3_str_errcode(cols) || sqlite3_str_errcode(aggs);
  char *c = sqlite3_str_finish(cols), *g = sqlite3_str_finish(aggs), *sql = NULL; /* NULL: empty, or no memory */
  const char *rows_fmt =
      "SELECT x.row, x.ts_ms, r.seq%s FROM h.readings_index AS x JOIN main.readings AS r ON r.rowid = x.row "
      "WHERE x.device = ?1 AND x.ts_ms >= ?2 AND x.ts_ms < ?3 AND (x.ts_ms, x.row) > (?4, ?5) AND x.row <= ?6 "
      "AND r.device = ?1 "
      "UNION ALL SELECT r.rowid, r.ts_ms, r.seq%s FROM main.readings AS r "
      "WHERE r.rowid > ?6 AND r.device = ?1 AND r.ts_ms >= ?2 AND r.ts_ms < ?3 AND (r.ts_ms, r.rowid) > (?4, ?5)";
  char *rows = failed ? NULL : sqlite3_mprintf(rows_fmt, c ? c : "", c ? c : "");
  if (rows && q->every_ms == 0)
    sql = sqlite3_mprintf("%s ORDER BY 2, 1 LIMIT ?7", rows);
  else if (rows) /* buckets: ts - ts mod every, rounded down for negative ts too */
    sql = sqlite3_mprintf("SELECT ts_ms - (((ts_ms %% ?8) + ?8) %% ?8) AS b, COUNT(*)%s FROM (%s) GROUP BY b "
                          "ORDER BY b LIMIT ?7",
                          g ? g : "", rows);
  sqlite3_free(rows);
  sqlite3_free(c);
  sqlite3_free(g);
  return sql;
}

int sqlite_history_query(sqlite_history *h, const storage_history_query *q, storage_history_result *res, char *err,
                         size_t errlen) {
  for (uint32_t i = 0; i < q->nfields; i++)
    if (q->fields[i] >= h->nfields) {
      snprintf(err, errlen, "no field %u", (unsigned)q->fields[i]);
      return -EINVAL;
    }
  /* Any free connection; when both are taken (the api admits no more
   * queries than READERS at once, so rarely), wait for the first. */
  reader *rd = NULL;
  for (int i = 0; i < READERS && !rd; i++)
    if (pthread_mutex_trylock(&h->readers[i].lock) == 0) rd = &h->readers[i];
  if (!rd) {
    rd = &h->readers[0];
    pthread_mutex_lock(&rd->lock);
  }
  sqlite3 *db = rd->db;
  int64_t deadline = now_ms() + q->timeout_ms;
  sqlite3_progress_handler(db, PROGRESS_OPS, past_deadline, &deadline);
  char *sql = query_sql(h, q);
  sqlite3_stmt *st = NULL;
  int r = 0, ok;
  res->ncols = q->every_ms ? 2 + 3 * q->nfields : 2 + q->nfields;
  /* One read transaction: the index, its frontier and the tail agree. */
  if (!sql || sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
    r = fail(db, "begin", err, errlen);
  } else {
    int64_t upto = one_int(db, "SELECT upto FROM h.indexed", &ok);
    if (!ok || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) r = fail(db, "query", err, errlen);
    if (r == 0) {
      sqlite3_bind_text(st, 1, q->device, -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 2, q->from_ms);
      sqlite3_bind_int64(st, 3, q->to_ms);
      sqlite3_bind_int64(st, 4, q->every_ms ? INT64_MIN : q->after_ts);
      sqlite3_bind_int64(st, 5, q->every_ms ? INT64_MIN : q->after_row);
      sqlite3_bind_int64(st, 6, upto);
      sqlite3_bind_int64(st, 7, (int64_t)q->limit + 1); /* one more tells whether there is more */
      if (q->every_ms) sqlite3_bind_int64(st, 8, q->every_ms);
      int s;
      while (r == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
        if (res->nrows == q->limit) {
          res->more = 1;
          break;
        }
        if (grow(res) != 0) {
          r = -ENOMEM;
          snprintf(err, errlen, "out of memory");
          break;
        }
        storage_value *row = &res->values[(size_t)res->nrows * res->ncols];
        int first = q->every_ms ? 0 : 1; /* raw rows begin with the rowid, kept as the cursor */
        for (uint32_t c = 0; r == 0 && c < res->ncols; c++)
          if (column_value(res, &row[c], st, first + (int)c) != 0) {
            r = -ENOMEM;
            snprintf(err, errlen, "out of memory");
          }
        if (!q->every_ms) {
          res->next_row = sqlite3_column_int64(st, 0);
          res->next_ts = sqlite3_column_int64(st, 1);
        }
        res->nrows++;
      }
      if (r == 0 && s != SQLITE_ROW && s != SQLITE_DONE) r = fail(db, "query", err, errlen);
      if (r == -ETIMEDOUT)
        snprintf(err, errlen, "the query took longer than %" PRId64 " ms: ask for a shorter range", q->timeout_ms);
    }
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  }
  sqlite3_free(sql);
  sqlite3_progress_handler(db, 0, NULL, NULL);
  pthread_mutex_unlock(&rd->lock);
  return r;
}

/* ------------------------------------------------------------ expiry */

/* A reading to delete and its index entry. */
typedef struct victim {
  int64_t row, ts;
  uint32_t off, len; /* its device, in the victims' text */
} victim;

typedef struct victims {
  victim *v;
  uint32_t n, cap;
  char *text;
  size_t textlen, textcap;
} victims;

static int victim_add(victims *vs, int64_t row, int64_t ts, const unsigned char *device, int len) {
  if (vs->n == vs->cap) {
    uint32_t cap = vs->cap ? vs->cap * 2 : 256;
    victim *v = realloc(vs->v, (size_t)cap * sizeof *v);
    if (!v) return -1;
    vs->v = v;
    vs->cap = cap;
  }
  if (vs->textlen + (size_t)len > vs->textcap) {
    size_t cap = vs->textcap ? vs->textcap * 2 : 4096;
    while (cap < vs->textlen + (size_t)len) cap *= 2;
    char *t = realloc(vs->text, cap);
    if (!t) return -1;
    vs->text = t;
    vs->textcap = cap;
  }
  memcpy(vs->text + vs->textlen, device, (size_t)len);
  vs->v[vs->n++] = (victim){row, ts, (uint32_t)vs->textlen, (uint32_t)len};
  vs->textlen += (size_t)len;
  return 0;
}

static int by_row(const void *a, const void *b) {
  int64_t x = ((const victim *)a)->row, y = ((const victim *)b)->row;
  return (x > y) - (x < y);
}

/* Runs each v through st, binding what bind says, in one transaction of
 * db. 0 or -1 (rolled back). */
static int delete_each(sqlite3 *db, const char *sql, const victims *vs, int with_entry) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
  int r = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
  for (uint32_t i = 0; r == 0 && i < vs->n; i++) {
    const victim *v = &vs->v[i];
    sqlite3_bind_int64(st, 1, v->row);
    if (with_entry) {
      sqlite3_bind_text(st, 2, vs->text + v->off, (int)v->len, SQLITE_STATIC);
      sqlite3_bind_int64(st, 3, v->ts);
    }
    r = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  if (r == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return 0;
  sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* Deletes the readings, in rowid order (neighbours share pages), in a
 * transaction that holds the writer's lock and nothing else; then their
 * index entries, in one of the index file, which the writer never waits
 * for. A crash between the two leaves entries of deleted rows: queries
 * find no row for them, and the next round deletes them. 0 or -1. */
static int delete_victims(sqlite_history *h, victims *vs) {
  if (vs->n == 0) return 0;
  qsort(vs->v, vs->n, sizeof vs->v[0], by_row);
  pthread_mutex_lock(h->write_lock);
  int r = delete_each(h->expirer, "DELETE FROM main.readings WHERE rowid = ?1", vs, 0);
  pthread_mutex_unlock(h->write_lock);
  if (r != 0) return -1;
  pthread_mutex_lock(&h->index_lock);
  r = delete_each(h->expirer, "DELETE FROM h.readings_index WHERE row = ?1 AND device = ?2 AND ts_ms = ?3", vs, 1);
  pthread_mutex_unlock(&h->index_lock);
  return r;
}

/* The front: readings are appended as they arrive, so the oldest are
 * the first rows. Up to max_rows of them from the start of the table;
 * those older than the cutoff become victims. *done when none of them
 * is: the rest of the old readings, if any, arrived late, and the round
 * over the devices finds them. */
static int front_victims(sqlite_history *h, int64_t cutoff_ms, uint32_t max_rows, victims *vs, int *done) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->expirer, "SELECT rowid, ts_ms, device FROM main.readings ORDER BY rowid LIMIT ?1", -1, &st,
                         NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_int64(st, 1, max_rows);
  int r = 0, s;
  while (r == 0 && (s = sqlite3_step(st)) == SQLITE_ROW)
    if (sqlite3_column_int64(st, 1) < cutoff_ms)
      r = victim_add(vs, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_text(st, 2),
                     sqlite3_column_bytes(st, 2));
  if (r == 0 && s != SQLITE_DONE && s != SQLITE_ROW) r = -1;
  sqlite3_finalize(st);
  *done = vs->n == 0;
  return r;
}

/* The round over the devices (device_hwm's order, from the device after
 * h->expire_after, EXPIRE_DEVICES at most): each one's readings older
 * than the cutoff, through the index, up to max_rows in all. *done when
 * the round has ended. */
static int device_victims(sqlite_history *h, int64_t cutoff_ms, uint32_t max_rows, victims *vs, int *done) {
  sqlite3 *db = h->expirer;
  sqlite3_stmt *devs = NULL, *old = NULL;
  int r = sqlite3_prepare_v2(db, "SELECT device FROM main.device_hwm WHERE device > ?1 ORDER BY device LIMIT ?2", -1,
                             &devs, NULL) != SQLITE_OK ||
                  sqlite3_prepare_v2(db,
                                     "SELECT row, ts_ms FROM h.readings_index WHERE device = ?1 AND ts_ms < ?2 "
                                     "ORDER BY ts_ms LIMIT ?3",
                                     -1, &old, NULL) != SQLITE_OK
              ? -1
              : 0;
  int looked = 0, stopped = 0;
  char after[sizeof h->expire_after];
  snprintf(after, sizeof after, "%s", h->expire_after);
  if (r == 0) {
    sqlite3_bind_text(devs, 1, after, -1, SQLITE_STATIC);
    sqlite3_bind_int(devs, 2, EXPIRE_DEVICES);
    while (r == 0 && !stopped && sqlite3_step(devs) == SQLITE_ROW) {
      looked++;
      const unsigned char *device = sqlite3_column_text(devs, 0);
      int len = sqlite3_column_bytes(devs, 0);
      uint32_t room = max_rows - vs->n, got = 0;
      sqlite3_bind_text(old, 1, (const char *)device, len, SQLITE_STATIC);
      sqlite3_bind_int64(old, 2, cutoff_ms);
      sqlite3_bind_int64(old, 3, room);
      while (r == 0 && sqlite3_step(old) == SQLITE_ROW) {
        r = victim_add(vs, sqlite3_column_int64(old, 0), sqlite3_column_int64(old, 1), device, len);
        got++;
      }
      sqlite3_reset(old);
      if (got == room) /* the device may have more: the next call starts with it */
        stopped = 1;
      else
        snprintf(h->expire_after, sizeof h->expire_after, "%.*s", len, (const char *)device);
    }
  }
  *done = r == 0 && !stopped && looked < EXPIRE_DEVICES;
  sqlite3_finalize(devs);
  sqlite3_finalize(old);
  return r;
}

int sqlite_history_expire(sqlite_history *h, int64_t cutoff_ms, uint32_t max_rows, uint64_t *deleted, int *more,
                          char *err, size_t errlen) {
  *deleted = 0;
  *more = 1;
  victims vs = {0};
  char after[sizeof h->expire_after];
  memcpy(after, h->expire_after, sizeof after);
  int done = 0, r;
  /* The candidates are read in a read transaction, without a lock: the
   * writer goes on meanwhile; only deleting takes turns with it. */
  if (sqlite3_exec(h->expirer, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return fail(h->expirer, "begin", err, errlen);
  r = h->expire_devices ? device_victims(h, cutoff_ms, max_rows, &vs, &done)
                        : front_victims(h, cutoff_ms, max_rows, &vs, &done);
  sqlite3_exec(h->expirer, "COMMIT", NULL, NULL, NULL);
  if (r == 0) r = delete_victims(h, &vs);
  if (r != 0) {
    r = fail(h->expirer, "expire", err, errlen);
    memcpy(h->expire_after, after, sizeof after); /* nothing was deleted: the round resumes where it was */
  } else {
    *deleted = vs.n;
    if (done && h->expire_devices) { /* the round has ended: the next pass begins at the front */
      h->expire_after[0] = '\0';
      h->expire_devices = 0;
      *more = 0;
    } else if (done) {
      h->expire_devices = 1;
    }
  }
  free(vs.v);
  free(vs.text);
  return r;
}
