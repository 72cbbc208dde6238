/* storage_sqlite.c - the SQLite backend (storage_backend.h): one file,
 * WAL mode, one transaction per write, synchronous=NORMAL or FULL as the
 * storage's durability says.
 *
 * The process holds the database alone: every connection is opened
 * through SQLite's "unix-excl" VFS, which takes a lock on the file that
 * other processes cannot pass while any connection of this process is
 * open, and in exchange keeps the WAL index in heap memory, shared by
 * the process's connections, instead of an mmapped -shm file. A mapped
 * file is touched by plain loads and stores, so anything that makes a
 * page of it unbackable - the file truncated by another program, a page
 * the filesystem cannot allocate or read back - is a SIGBUS that kills
 * the gateway with every reading in its queues, before a line is logged.
 * Without the mapping (and with mmap_size=0 for the database file) every
 * storage failure is an error code, which the storage stage retries.
 * The price: another process (a sqlite3 shell, a backup) cannot open the
 * database while serve runs; it reads it after. Connections of this
 * process - the pool, the checkpointer, a test's in-process reader - work
 * as with the -shm file, WAL readers not blocking the writer.
 *
 * SQLite has one writer per file, so several connections give nothing
 * but correct turns: transactions of all connections take turns on a
 * mutex of this backend (serve's default is one connection).
 *
 * Seqs are unsigned 64-bit; SQLite's INTEGER is signed 64-bit. Devices'
 * seqs stop at 2^63 - 1 (protocol.h), so every seq stored now reads in
 * SQL as itself. Marks stored by earlier versions may be higher: seqs are
 * kept as the same 64 bits in two's complement (readings.seq and
 * device_hwm.seq), 2^64 - 1 reading as -1, and reading the column back as
 * unsigned gives the seq exactly. In SQL the unsigned order is
 * `ORDER BY seq < 0, seq`; the fold below compares marks that way.
 *
 * Speed: a statement step costs more than the row it inserts, so rows go
 * in ROWS at a time (one INSERT with ROWS value lists) and the marks
 * MARKS at a time; connections are opened without SQLite's own mutex
 * (each is used by one thread at a time, storage.h) and without its
 * memory statistics, which take a global lock per allocation.
 *
 * The marks of a batch are persisted in its own transaction, but not
 * always as one device_hwm row each: with thousands of devices per batch
 * that costs as much again as the readings. When a batch moved more than
 * FOLD_MAX devices' marks, they go as one row of mark_log (a blob of
 * (id, seq) pairs); every FOLD_EVERY transactions, and when the storage
 * closes or opens, the marks moved since are written to device_hwm and
 * mark_log is emptied, in one transaction. device_hwm plus mark_log
 * always hold every committed mark, so a crash loses none; opening folds
 * what a crash left in mark_log.
 *
 * After a crash (a -wal file left behind: a clean close checkpoints and
 * removes it) opening runs PRAGMA quick_check before anything else and
 * refuses a damaged database. SQLite's WAL recovery makes a killed
 * process's database whole by design; the check is for what that cannot
 * cover (a lying disk, a copy taken mid-write), and it runs only then
 * because it reads the whole file (docs/serve.md has its cost).
 *
 * Checkpoints - copying the WAL's pages into the database file - run on a
 * thread of their own with a connection of their own, not on the writer:
 * a commit that finds CHECKPOINT_FRAMES frames in the WAL wakes it for a
 * PASSIVE checkpoint, which copies what it can without holding writers
 * up, so the writer spends its time on rows. Only if the checkpointer
 * falls far behind (WAL_FRAMES_MAX) does a commit checkpoint itself. */
#include "sqlite_history.h"
#include "storage_backend.h"

#include "protocol.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_MARK_GET,
  ST_MARK_SET,
  ST_COUNT,
  ST_MARK_SET_MANY,
  ST_LOG_ADD,
  ST_LOG_CLEAR,
  ST_LOG_READ,
  ST_MARK_MAX,
  ST_N
};

/* Bytes of an id in a mark_log entry (a length byte says how many). */
#define PROTOCOL_ID_ROOM 255

enum { ROWS = 32, MARKS = 64, FOLD_MAX = 64, FOLD_EVERY = 256 };

/* The columns every measurement's table starts with; its fields follow. */
enum { FIXED_COLUMNS = 4 };
#define MARK_HEAD "INSERT INTO device_hwm(device, seq) VALUES "
#define MARK_TAIL " ON CONFLICT(device) DO UPDATE SET seq = excluded.seq"

static const char *const sql_text[ST_N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_MARK_GET] = "SELECT seq FROM device_hwm WHERE device = ?1",
    [ST_MARK_SET] = "INSERT INTO device_hwm(device, seq) VALUES (?1, ?2) "
                    "ON CONFLICT(device) DO UPDATE SET seq = excluded.seq",
    [ST_COUNT] = "SELECT COUNT(*) FROM readings",
    [ST_LOG_ADD] = "INSERT INTO mark_log(batch, marks) VALUES (?1, ?2)",
    [ST_LOG_CLEAR] = "DELETE FROM mark_log",
    [ST_LOG_READ] = "SELECT marks FROM mark_log",
    [ST_MARK_MAX] = "INSERT INTO device_hwm(device, seq) VALUES (?1, ?2) "
                    "ON CONFLICT(device) DO UPDATE SET seq = CASE WHEN (excluded.seq < 0) > (seq < 0) OR "
                    "((excluded.seq < 0) = (seq < 0) AND excluded.seq > seq) THEN excluded.seq ELSE seq END",
    /* ST_MARK_SET_MANY is written by many_sql; the inserts, per measurement, by insert_sql. */
};

/* "HEAD (?,?,...),(?,?,...) ... TAIL" for n rows of k parameters. */
static char *many_sql(const char *head, int n, int k, const char *tail) {
  size_t cap = strlen(head) + strlen(tail) + (size_t)n * (size_t)(2 * k + 3) + 1;
  char *sql = malloc(cap), *p = sql;
  if (!sql) return NULL;
  p += sprintf(p, "%s", head);
  for (int i = 0; i < n; i++) {
    *p++ = i ? ',' : ' ';
    *p++ = '(';
    for (int j = 0; j < k; j++) {
      if (j) *p++ = ',';
      *p++ = '?';
    }
    *p++ = ')';
  }
  sprintf(p, "%s", tail);
  return sql;
}

static const char tables_reset[] = "DROP TABLE IF EXISTS readings;"
                                   "DROP TABLE IF EXISTS device_hwm;"
                                   "DROP TABLE IF EXISTS mark_log;";

/* Append-only: no key, so a transaction appends to the table's last pages
 * whatever the devices; resends are caught by device_hwm instead. A device
 * is its id as text. The readings table is the measurement telemetry's,
 * born with the article's fields; every other measurement's table is
 * made as it first comes (measure_table), and each field a measurement
 * gains becomes a column (ALTER TABLE ... ADD COLUMN). */
static const char tables[] = "CREATE TABLE IF NOT EXISTS readings ("
                             " device TEXT NOT NULL, seq INTEGER NOT NULL,"
                             " ts_ms INTEGER NOT NULL, temperature REAL,"
                             " humidity REAL, battery INTEGER,"
                             " batch INTEGER NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS device_hwm ("
                             " device TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;"
                             "CREATE TABLE IF NOT EXISTS mark_log (batch INTEGER NOT NULL, marks BLOB NOT NULL);";

/* The column type of each field type. A tag is text; "TAG TEXT" keeps
 * text affinity and tells it from a string field when the table is read
 * back at open. */
static const char *const column_types[] = {
    [FIELD_FLOAT] = "REAL",  [FIELD_INT] = "INTEGER",  [FIELD_BOOL] = "BOOLEAN",
    [FIELD_STRING] = "TEXT", [FIELD_TAG] = "TAG TEXT",
};

/* A connection's inserts into one measurement's table, for the columns
 * it had when they were prepared. */
typedef struct inserts {
  sqlite3_stmt *one, *many;
  uint32_t ncols; /* fields */
} inserts;

typedef struct conn {
  sqlite3 *db;
  sqlite3_stmt *st[ST_N];
  inserts *ins; /* by measurement id */
  uint32_t nins;
} conn;

enum { CHECKPOINT_FRAMES = 1000, WAL_FRAMES_MAX = 100000 };

typedef struct checkpointer {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  sqlite3 *db; /* its own connection, opened by the thread */
  char *path;
  int due, stop; /* under lock */
  int running;
} checkpointer;

/* A committed mark not yet folded into device_hwm. */
typedef struct dirty_mark {
  uint32_t device;
  uint64_t seq;
} dirty_mark;

typedef struct sqlite_impl {
  checkpointer cp;
  sqlite_history *history; /* with opts->history: the index of readings by device and time */
  storage_namer names;
  /* SQLite has one writer per file: a second connection's BEGIN IMMEDIATE
   * would only wait for the first's COMMIT. Transactions take turns here
   * instead, which also guards the fold bookkeeping below. */
  pthread_mutex_t write_lock;
  dirty_mark *dirty; /* marks moved since the last fold */
  uint32_t ndirty, capdirty;
  uint32_t *dirty_at; /* by device: 1 + its index in dirty, 0: clean */
  uint32_t ndirty_at;
  unsigned since_fold; /* transactions */
  int logged;          /* mark_log has rows */
  unsigned char *blob; /* a mark_log row being built */
  size_t blobcap;
  schema *schema;
  /* Expiry's place among the measurements' tables but readings, after
   * the history's round over readings: the table, and the rowid reached. */
  int expiring_tables;
  uint16_t expire_table;
  int64_t expire_after;
  uint32_t *have; /* by measurement: 1 + its columns known to be in the database; 0: its table not yet checked */
  uint32_t nhave;
  int n;
  conn conns[];
} sqlite_impl;

/* The one VFS every connection is opened with: see the top. */
#define VFS "unix-excl"

/* The primary result codes a storage failure comes with, named as
 * SQLite's documentation does, with the errno a caller sees. */
static const struct {
  int rc, code;
  const char *name;
} failures[] = {
    {SQLITE_FULL, -ENOSPC, "SQLITE_FULL"},      {SQLITE_READONLY, -EROFS, "SQLITE_READONLY"},
    {SQLITE_BUSY, -EBUSY, "SQLITE_BUSY"},       {SQLITE_LOCKED, -EBUSY, "SQLITE_LOCKED"},
    {SQLITE_IOERR, -EIO, "SQLITE_IOERR"},       {SQLITE_CANTOPEN, -EIO, "SQLITE_CANTOPEN"},
    {SQLITE_CORRUPT, -EIO, "SQLITE_CORRUPT"},   {SQLITE_NOTADB, -EIO, "SQLITE_NOTADB"},
    {SQLITE_PERM, -EROFS, "SQLITE_PERM"},       {SQLITE_NOMEM, -ENOMEM, "SQLITE_NOMEM"},
    {SQLITE_PROTOCOL, -EIO, "SQLITE_PROTOCOL"}, {SQLITE_CONSTRAINT, -EIO, "SQLITE_CONSTRAINT"},
};

/* "sqlite: WHAT: SQLite's message (SQLITE_CODE)" into err; returns the
 * errno of storage_backend.h. */
static int fail_db(sqlite3 *db, const char *what, char *err, size_t errlen) {
  int rc = db ? sqlite3_errcode(db) & 0xff : SQLITE_NOMEM, code = -EIO;
  const char *name = NULL;
  for (size_t i = 0; i < sizeof failures / sizeof failures[0]; i++)
    if (failures[i].rc == rc) code = failures[i].code, name = failures[i].name;
  snprintf(err, errlen, "sqlite: %s: %s%s%s%s", what, db ? sqlite3_errmsg(db) : "out of memory", name ? " (" : "",
           name ? name : "", name ? ")" : "");
  return code;
}

static void inserts_drop(inserts *in) {
  sqlite3_finalize(in->one);
  sqlite3_finalize(in->many);
  *in = (inserts){0};
}

static void conn_close(conn *c) {
  for (int i = 0; i < ST_N; i++) sqlite3_finalize(c->st[i]);
  for (uint32_t m = 0; m < c->nins; m++) inserts_drop(&c->ins[m]);
  free(c->ins);
  sqlite3_close(c->db);
}

/* Whether the last run left a WAL behind: it did not close (a clean
 * close checkpoints the WAL and removes it). */
static int crashed(const char *path) {
  char wal[4096];
  struct stat st;
  int n = snprintf(wal, sizeof wal, "%s-wal", path);
  return n > 0 && (size_t)n < sizeof wal && stat(wal, &st) == 0 && st.st_size > 0;
}

/* PRAGMA quick_check: 0, or -EIO with its first finding in err. */
static int quick_check(conn *c, char *err, size_t errlen) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(c->db, "PRAGMA quick_check(1)", -1, &st, NULL) != SQLITE_OK)
    return fail_db(c->db, "quick_check", err, errlen);
  int r = sqlite3_step(st), ok = r == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
  if (r == SQLITE_ROW && !ok)
    snprintf(err, errlen, "sqlite: the database is damaged (quick_check: %s); restore it or move it aside",
             (const char *)sqlite3_column_text(st, 0));
  int e = r == SQLITE_ROW ? (ok ? 0 : -EIO) : fail_db(c->db, "quick_check", err, errlen);
  sqlite3_finalize(st);
  return e;
}

/* ---- measurements' tables ---- */

/* The table of measurement m. */
static const char *table_of(const schema *sc, uint16_t m) {
  return m == SCHEMA_TELEMETRY ? "readings" : schema_name(sc, m);
}

/* Calls fn for every measurement's table of the database (a table with
 * the fixed columns), with its fields' names and declared types. */
typedef int (*table_fn)(conn *c, const char *table, int nfields, char **names, char **types, void *arg, char *err,
                        size_t errlen);

static int tables_each(conn *c, table_fn fn, void *arg, char *err, size_t errlen) {
  /* The names first: a table cannot be dropped while sqlite_schema is being read. */
  sqlite3_stmt *list;
  if (sqlite3_prepare_v2(c->db,
                         "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'"
                         " AND name NOT IN ('device_hwm', 'mark_log') ORDER BY name",
                         -1, &list, NULL) != SQLITE_OK)
    return fail_db(c->db, "tables", err, errlen);
  char **names_of = NULL;
  size_t ntables = 0;
  int r = 0;
  while (r == 0 && sqlite3_step(list) == SQLITE_ROW) {
    char **grown = realloc(names_of, (ntables + 1) * sizeof *names_of);
    if (grown) names_of = grown;
    if (!grown || !(names_of[ntables++] = strdup((const char *)sqlite3_column_text(list, 0))))
      r = fail_db(NULL, "tables", err, errlen);
  }
  sqlite3_finalize(list);
  for (size_t t = 0; r == 0 && t < ntables; t++) {
    char *sql = sqlite3_mprintf("PRAGMA table_info(\"%w\")", names_of[t]);
    sqlite3_stmt *info = NULL;
    char *names[SCHEMA_COLUMNS_MAX], *types[SCHEMA_COLUMNS_MAX];
    int n = 0, fixed = 0;
    if (!sql || sqlite3_prepare_v2(c->db, sql, -1, &info, NULL) != SQLITE_OK) {
      r = fail_db(sql ? c->db : NULL, "table_info", err, errlen);
    } else {
      while (sqlite3_step(info) == SQLITE_ROW && n < SCHEMA_COLUMNS_MAX) {
        const char *name = (const char *)sqlite3_column_text(info, 1),
                   *type = (const char *)sqlite3_column_text(info, 2);
        if (!strcmp(name, "device") || !strcmp(name, "seq") || !strcmp(name, "ts_ms") || !strcmp(name, "batch")) {
          fixed++;
          continue;
        }
        names[n] = strdup(name);
        types[n] = strdup(type ? type : "");
        n++;
      }
      sqlite3_finalize(info);
      if (fixed == FIXED_COLUMNS) r = fn(c, names_of[t], n, names, types, arg, err, errlen);
      for (int i = 0; i < n; i++) {
        free(names[i]);
        free(types[i]);
      }
    }
    sqlite3_free(sql);
  }
  for (size_t t = 0; t < ntables; t++) free(names_of[t]);
  free(names_of);
  return r;
}

static int table_drop(conn *c, const char *table, int nfields, char **names, char **types, void *arg, char *err,
                      size_t errlen) {
  (void)nfields, (void)names, (void)types, (void)arg;
  char *sql = sqlite3_mprintf("DROP TABLE \"%w\"", table);
  int r = sql && sqlite3_exec(c->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : fail_db(c->db, "reset", err, errlen);
  sqlite3_free(sql);
  return r;
}

/* Drops every table of ours: the measurements' and the marks'. */
static int tables_drop(conn *c, char *err, size_t errlen) {
  int r = tables_each(c, table_drop, NULL, err, errlen);
  if (r == 0 && sqlite3_exec(c->db, tables_reset, NULL, NULL, NULL)) r = fail_db(c->db, "reset", err, errlen);
  return r;
}

static int type_of_column(const char *declared) {
  for (int t = FIELD_FLOAT; t <= FIELD_TAG; t++)
    if (strcasecmp(declared, column_types[t]) == 0) return t;
  return 0;
}

/* A stored table's fields into the schema, with their stored types. */
static int table_learn(conn *c, const char *table, int nfields, char **names, char **types, void *arg, char *err,
                       size_t errlen) {
  (void)c;
  const char *m = strcmp(table, "readings") == 0 ? "telemetry" : table;
  for (int i = 0; i < nfields; i++) {
    int t = type_of_column(types[i]);
    int r = t ? schema_add_column(arg, m, names[i], t) : 0;
    if (r == -EEXIST) {
      snprintf(err, errlen, "sqlite: %s.%s is %s in the database but not in the schema; declare it so or drop it",
               table, names[i], types[i]);
      return -EINVAL;
    }
    if (r != 0) {
      snprintf(err, errlen, "sqlite: %s.%s: more names or fields than the schema holds (--max-fields)", table,
               names[i]);
      return -EINVAL;
    }
  }
  return 0;
}

/* What the database holds, into the schema. */
static int tables_read(conn *c, schema *sc, char *err, size_t errlen) {
  return tables_each(c, table_learn, sc, err, errlen);
}

/* The readings table of releases before any fields had its three NOT
 * NULL; a telemetry reading may now lack any of them. Dropping a NOT NULL
 * changes no stored byte, so it is the table's text in sqlite_schema that
 * changes (the procedure SQLite's documentation gives for such a change),
 * not a copy of every row. */
static int readings_nullable(conn *c, char *err, size_t errlen) {
  static const char *const from[] = {"temperature REAL NOT NULL", "humidity REAL NOT NULL", "battery INTEGER NOT NULL"};
  static const char *const to[] = {"temperature REAL", "humidity REAL", "battery INTEGER"};
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(c->db, "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'readings'", -1, &st,
                         NULL) != SQLITE_OK)
    return fail_db(c->db, "readings schema", err, errlen);
  char sql[1024] = "";
  if (sqlite3_step(st) == SQLITE_ROW) snprintf(sql, sizeof sql, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  int changed = 0;
  for (int i = 0; i < 3; i++) {
    char *at = strstr(sql, from[i]);
    if (!at) continue;
    memmove(at + strlen(to[i]), at + strlen(from[i]), strlen(at + strlen(from[i])) + 1);
    changed = 1;
  }
  if (!changed) return 0;
  int version = 0;
  if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(c->db, "PRAGMA schema_version", -1, &st, NULL) != SQLITE_OK)
    return fail_db(c->db, "readings migration", err, errlen);
  if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  char *update = sqlite3_mprintf("PRAGMA writable_schema = ON;"
                                 "UPDATE sqlite_schema SET sql = %Q WHERE type = 'table' AND name = 'readings';"
                                 "PRAGMA schema_version = %d; PRAGMA writable_schema = OFF; COMMIT",
                                 sql, version + 1);
  int r = update && sqlite3_exec(c->db, update, NULL, NULL, NULL) == SQLITE_OK
              ? 0
              : fail_db(c->db, "readings migration", err, errlen);
  sqlite3_free(update);
  if (r) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
  return r;
}

static int conn_open(conn *c, const char *path, int first, const storage_backend_opts *o, char *err, size_t errlen) {
  int check = first && !o->reset && crashed(path);
  int r = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, VFS);
  if (r != SQLITE_OK) return fail_db(c->db, "open", err, errlen);
  /* A second connection that finds the write lock taken waits for it. */
  sqlite3_busy_timeout(c->db, 10000);
  const char *pragmas = o->durability == STORAGE_DURABILITY_FULL
                            ? "PRAGMA mmap_size=0; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                            : "PRAGMA mmap_size=0; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
  if (sqlite3_exec(c->db, pragmas, NULL, NULL, NULL)) return fail_db(c->db, "pragmas", err, errlen);
  if (check && (r = quick_check(c, err, errlen)) != 0) return r;
  if (first && o->reset && (r = tables_drop(c, err, errlen)) != 0) return r;
  if (first && sqlite3_exec(c->db, tables, NULL, NULL, NULL)) return fail_db(c->db, "schema", err, errlen);
  if (first && ((r = readings_nullable(c, err, errlen)) != 0 || (r = tables_read(c, o->schema, err, errlen)) != 0))
    return r;
  for (int i = 0; i < ST_N; i++) {
    char *many = i == ST_MARK_SET_MANY ? many_sql(MARK_HEAD, MARKS, 2, MARK_TAIL) : NULL;
    const char *sql = many ? many : sql_text[i];
    if (!sql) return fail_db(NULL, "prepare", err, errlen);
    r = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL);
    free(many);
    if (r != SQLITE_OK) return fail_db(c->db, "prepare", err, errlen);
  }
  return 0;
}

/* Runs a statement that returns no row. */
static int step_done(conn *c, int which) {
  int r = sqlite3_step(c->st[which]);
  sqlite3_reset(c->st[which]);
  return r == SQLITE_DONE ? 0 : r;
}

/* Folds what mark_log holds into device_hwm, in one transaction (at open:
 * what a crash left). 0 or -EIO. */
static int fold_log(conn *c, char *err, size_t errlen) {
  if (step_done(c, ST_BEGIN)) return fail_db(c->db, "begin", err, errlen);
  sqlite3_stmt *rd = c->st[ST_LOG_READ];
  int r, bad = 0;
  while (!bad && (r = sqlite3_step(rd)) == SQLITE_ROW) {
    const unsigned char *p = sqlite3_column_blob(rd, 0);
    size_t n = (size_t)sqlite3_column_bytes(rd, 0), at = 0;
    while (!bad && p && at + 1 < n) {
      size_t len = p[at++];
      uint64_t seq = 0;
      if (at + len + 8 > n) break;
      for (int i = 0; i < 8; i++) seq |= (uint64_t)p[at + len + (size_t)i] << (8 * i);
      sqlite3_bind_text(c->st[ST_MARK_MAX], 1, (const char *)p + at, (int)len, SQLITE_TRANSIENT);
      sqlite3_bind_int64(c->st[ST_MARK_MAX], 2, (sqlite3_int64)seq);
      bad = step_done(c, ST_MARK_MAX) != 0;
      at += len + 8;
    }
  }
  sqlite3_reset(rd);
  if (bad || step_done(c, ST_LOG_CLEAR) || step_done(c, ST_COMMIT)) {
    int e = fail_db(c->db, "folding mark_log", err, errlen);
    if (!sqlite3_get_autocommit(c->db)) step_done(c, ST_ROLLBACK);
    return e;
  }
  return 0;
}

static void *checkpoint_thread(void *arg) {
  checkpointer *cp = arg;
  pthread_mutex_lock(&cp->lock);
  for (;;) {
    while (!cp->due && !cp->stop) pthread_cond_wait(&cp->wake, &cp->lock);
    if (cp->stop) break;
    cp->due = 0;
    pthread_mutex_unlock(&cp->lock);
    /* Its connection is opened on the first job: an idle gateway does
     * not pay for it. */
    if (!cp->db && sqlite3_open_v2(cp->path, &cp->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, VFS) == SQLITE_OK)
      sqlite3_busy_timeout(cp->db, 1000);
    if (cp->db) sqlite3_wal_checkpoint_v2(cp->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    pthread_mutex_lock(&cp->lock);
  }
  pthread_mutex_unlock(&cp->lock);
  return NULL;
}

/* After each commit of a writer connection: frames in the WAL. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames) {
  checkpointer *cp = arg;
  if (frames >= WAL_FRAMES_MAX) { /* the checkpointer is far behind */
    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  } else if (frames >= CHECKPOINT_FRAMES) {
    pthread_mutex_lock(&cp->lock);
    cp->due = 1;
    pthread_cond_signal(&cp->wake);
    pthread_mutex_unlock(&cp->lock);
  }
  return SQLITE_OK;
}

/* Starts the checkpointer; without it, SQLite's own automatic checkpoints
 * stay on. */
static void checkpointer_start(sqlite_impl *im, const char *path) {
  checkpointer *cp = &im->cp;
  if (!(cp->path = strdup(path))) return;
  pthread_mutex_init(&cp->lock, NULL);
  pthread_cond_init(&cp->wake, NULL);
  if (pthread_create(&cp->thread, NULL, checkpoint_thread, cp) != 0) {
    pthread_mutex_destroy(&cp->lock);
    pthread_cond_destroy(&cp->wake);
    free(cp->path);
    cp->path = NULL;
    return;
  }
  cp->running = 1;
  for (int i = 0; i < im->n; i++) sqlite3_wal_hook(im->conns[i].db, on_wal_commit, cp);
}

static void checkpointer_stop(checkpointer *cp) {
  if (!cp->running) return;
  pthread_mutex_lock(&cp->lock);
  cp->stop = 1;
  pthread_cond_signal(&cp->wake);
  pthread_mutex_unlock(&cp->lock);
  pthread_join(cp->thread, NULL);
  pthread_mutex_destroy(&cp->lock);
  pthread_cond_destroy(&cp->wake);
  sqlite3_close(cp->db);
  free(cp->path);
  cp->running = 0;
}

/* Binds a mark's device and seq (see the seq note at the top). */
static void bind_mark(sqlite3_stmt *st, int at, const char *device, int transient, uint64_t seq) {
  sqlite3_bind_text(st, at, device, -1, transient ? SQLITE_TRANSIENT : SQLITE_STATIC);
  sqlite3_bind_int64(st, at + 1, (sqlite3_int64)seq);
}

/* Writes marks to device_hwm, MARKS at a time: first the folded ones of
 * `dirty` (named through the namer), then `up`, which override them. 0
 * or -1. */
static int write_marks(sqlite_impl *im, conn *c, const dirty_mark *dirty, uint32_t ndirty,
                       const storage_mark_update *up, uint32_t nup) {
  char bufs[MARKS][16];
  uint32_t total = ndirty + nup, k = 0;
  sqlite3_stmt *many = c->st[ST_MARK_SET_MANY];
  for (uint32_t i = 0; i < total; i++) {
    const char *name;
    uint64_t seq;
    if (i < ndirty) {
      name = storage_device_name(&im->names, dirty[i].device, bufs[k]);
      seq = dirty[i].seq;
    } else {
      name = up[i - ndirty].name;
      seq = up[i - ndirty].seq;
    }
    if (total - (i - k) >= MARKS) { /* this group of MARKS is whole */
      bind_mark(many, 1 + 2 * (int)k, name, 1, seq);
      if (++k == MARKS) {
        if (step_done(c, ST_MARK_SET_MANY)) return -1;
        k = 0;
      }
    } else {
      bind_mark(c->st[ST_MARK_SET], 1, name, 1, seq);
      if (step_done(c, ST_MARK_SET)) return -1;
    }
  }
  return 0;
}

static void sqlite_close(void *impl) {
  sqlite_impl *im = impl;
  if (!im) return;
  sqlite_history_close(im->history); /* its indexer reads, expiry writes: before the connections go */
  checkpointer_stop(&im->cp);
  /* The marks moved since the last fold, into device_hwm: after a clean
   * close mark_log is empty. On failure they stay in mark_log. */
  conn *c = &im->conns[0];
  if ((im->ndirty || im->logged) && c->db && step_done(c, ST_BEGIN) == 0) {
    if (write_marks(im, c, im->dirty, im->ndirty, NULL, 0) || step_done(c, ST_LOG_CLEAR) || step_done(c, ST_COMMIT))
      step_done(c, ST_ROLLBACK);
  }
  for (int i = 0; i < im->n; i++) conn_close(&im->conns[i]);
  pthread_mutex_destroy(&im->write_lock);
  free(im->have);
  free(im->dirty);
  free(im->dirty_at);
  free(im->blob);
  free(im);
}

static int sqlite_open(const storage_backend_opts *opts, void **impl, char *err, size_t errlen) {
  /* Only takes effect before SQLite's first use in the process; later
   * calls fail harmlessly. */
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  sqlite_impl *im = calloc(1, sizeof *im + (size_t)opts->connections * sizeof im->conns[0]);
  if (!im) return -ENOMEM;
  im->names = opts->names;
  im->schema = opts->schema;
  pthread_mutex_init(&im->write_lock, NULL);
  for (int i = 0; i < opts->connections; i++) {
    im->n = i + 1;
    int r = conn_open(&im->conns[i], opts->path, i == 0, opts, err, errlen);
    if (r == 0 && i == 0) r = fold_log(&im->conns[0], err, errlen);
    if (r != 0) {
      sqlite_close(im);
      return r;
    }
  }
  if (opts->history) {
    int r = sqlite_history_open(&im->history, opts->path, &im->write_lock, err, errlen);
    if (r != 0) {
      sqlite_close(im);
      return r;
    }
  }
  checkpointer_start(im, opts->path);
  *impl = im;
  return 0;
}

static int sqlite_mark_load(void *impl, int ci, const char *device, int *found, uint64_t *seq, char *err,
                            size_t errlen) {
  conn *c = &((sqlite_impl *)impl)->conns[ci];
  sqlite3_stmt *st = c->st[ST_MARK_GET];
  sqlite3_bind_text(st, 1, device, -1, SQLITE_TRANSIENT);
  int r = sqlite3_step(st);
  *found = r == SQLITE_ROW;
  *seq = r == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  return r == SQLITE_ROW || r == SQLITE_DONE ? 0 : fail_db(c->db, "high-water mark", err, errlen);
}

/* Grows a zeroed array of `size`-byte items to hold index i. 0 or -1. */
static int grow_to(void **items, uint32_t *n, uint32_t i, size_t size) {
  if (i < *n) return 0;
  uint32_t cap = *n ? *n : 16;
  while (cap <= i) cap *= 2;
  char *p = realloc(*items, cap * size);
  if (!p) return -1;
  memset(p + *n * size, 0, (cap - *n) * size);
  *items = p;
  *n = cap;
  return 0;
}

/* Makes measurement m's table and every column its schema has now, under
 * the write lock and outside a transaction (a column that a transaction
 * rolled back would be missing while thought there). 0 or the error. */
static int measure_table(sqlite_impl *im, conn *c, uint16_t m, char *err, size_t errlen) {
  const schema_column *cols;
  uint32_t n = schema_columns(im->schema, m, &cols);
  if (grow_to((void **)&im->have, &im->nhave, m, sizeof *im->have)) return fail_db(NULL, "columns", err, errlen);
  uint32_t have = im->have[m];
  if (have == n + 1) return 0;
  const char *table = table_of(im->schema, m);
  char *sql = NULL;
  int r = 0;
  if (have == 0) {
    sql = sqlite3_mprintf("CREATE TABLE IF NOT EXISTS \"%w\" (device TEXT NOT NULL, seq INTEGER NOT NULL,"
                          " ts_ms INTEGER NOT NULL, batch INTEGER NOT NULL)",
                          table);
    if (!sql || sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK)
      r = fail_db(sql ? c->db : NULL, "table", err, errlen);
    sqlite3_free(sql);
    have = 1;
  }
  for (uint32_t k = have - 1; r == 0 && k < n; k++) {
    sql = sqlite3_mprintf("ALTER TABLE \"%w\" ADD COLUMN \"%w\" %s", table, schema_name(im->schema, cols[k].name),
                          column_types[cols[k].type]);
    /* A column there already (the tables read at open) is what we want. */
    if (!sql ||
        (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK && !strstr(sqlite3_errmsg(c->db), "duplicate column")))
      r = fail_db(sql ? c->db : NULL, "add column", err, errlen);
    sqlite3_free(sql);
  }
  if (r == 0) im->have[m] = n + 1;
  return r;
}

/* INSERT INTO "table"(device, seq, ts_ms, batch, "field", ...) VALUES
 * (?, ...), ... for `rows` rows. */
static char *insert_sql(const schema *sc, uint16_t m, const schema_column *cols, uint32_t ncols, int rows) {
  sqlite3_str *q = sqlite3_str_new(NULL);
  sqlite3_str_appendf(q, "INSERT INTO \"%w\"(device, seq, ts_ms, batch", table_of(sc, m));
  for (uint32_t k = 0; k < ncols; k++) sqlite3_str_appendf(q, ", \"%w\"", schema_name(sc, cols[k].name));
  sqlite3_str_appendall(q, ") VALUES ");
  for (int i = 0; i < rows; i++) {
    sqlite3_str_appendall(q, i ? ",(?" : "(?");
    for (uint32_t k = 1; k < FIXED_COLUMNS + ncols; k++) sqlite3_str_appendall(q, ",?");
    sqlite3_str_appendchar(q, 1, ')');
  }
  return sqlite3_str_finish(q);
}

/* The connection's inserts into measurement m's table with its ncols
 * fields, prepared anew when the table gained columns. NULL on error. */
static inserts *inserts_for(sqlite_impl *im, conn *c, uint16_t m, char *err, size_t errlen) {
  const schema_column *cols;
  uint32_t ncols = schema_columns(im->schema, m, &cols);
  if (grow_to((void **)&c->ins, &c->nins, m, sizeof *c->ins)) {
    fail_db(NULL, "insert", err, errlen);
    return NULL;
  }
  inserts *in = &c->ins[m];
  if (in->one && in->ncols == ncols) return in;
  inserts_drop(in);
  char *one = insert_sql(im->schema, m, cols, ncols, 1), *many = insert_sql(im->schema, m, cols, ncols, ROWS);
  int ok = one && many && sqlite3_prepare_v3(c->db, one, -1, SQLITE_PREPARE_PERSISTENT, &in->one, NULL) == SQLITE_OK &&
           sqlite3_prepare_v3(c->db, many, -1, SQLITE_PREPARE_PERSISTENT, &in->many, NULL) == SQLITE_OK;
  sqlite3_free(one);
  sqlite3_free(many);
  if (!ok) {
    fail_db(c->db, "prepare insert", err, errlen);
    inserts_drop(in);
    return NULL;
  }
  in->ncols = ncols;
  return in;
}

/* Binds a row at parameter `at`: the fixed columns, then each field in
 * its column's place; columns the reading has no field for are NULL. */
static void bind_reading(const schema *sc, sqlite3_stmt *st, int at, const storage_row *row, uint64_t batch_id,
                         uint32_t ncols) {
  const reading *r = row->r;
  sqlite3_bind_text(st, at, row->device, -1, SQLITE_STATIC); /* valid until the write returns */
  sqlite3_bind_int64(st, at + 1, (sqlite3_int64)r->seq);
  sqlite3_bind_int64(st, at + 2, r->ts_ms);
  sqlite3_bind_int64(st, at + 3, (sqlite3_int64)batch_id);
  at += FIXED_COLUMNS;
  if (r->nfields < ncols) /* fields are unique: with as many as columns, every column gets one */
    for (uint32_t k = 0; k < ncols; k++) sqlite3_bind_null(st, at + (int)k);
  const field_value *f = reading_fields(r);
  for (uint32_t i = 0; i < r->nfields; i++) {
    int k = at + schema_column_of(sc, r->measurement, f[i].name);
    switch (f[i].type) {
    case FIELD_FLOAT: sqlite3_bind_double(st, k, f[i].v.f); break;
    case FIELD_INT:
    case FIELD_BOOL: sqlite3_bind_int64(st, k, f[i].v.i); break;
    default: sqlite3_bind_text(st, k, f[i].v.s, (int)f[i].len, SQLITE_STATIC); break;
    }
  }
}

/* Inserts the rows of measurement m: ROWS at a time, the rest one by
 * one. 0 or -1. */
static int insert_measurement(sqlite_impl *im, conn *c, const storage_rows *w, uint16_t m, char *err, size_t errlen) {
  inserts *in = inserts_for(im, c, m, err, errlen);
  if (!in) return -1;
  uint32_t chunk[ROWS], k = 0;
  int params = FIXED_COLUMNS + (int)in->ncols;
  for (uint32_t i = 0; i < w->nrows; i++) {
    if (w->rows[i].r->measurement != m) continue;
    chunk[k++] = i;
    if (k < ROWS) continue;
    for (uint32_t j = 0; j < ROWS; j++)
      bind_reading(im->schema, in->many, 1 + (int)j * params, &w->rows[chunk[j]], w->batch_id, in->ncols);
    k = 0;
    int r = sqlite3_step(in->many);
    sqlite3_reset(in->many);
    if (r != SQLITE_DONE) return -1;
  }
  for (uint32_t j = 0; j < k; j++) {
    bind_reading(im->schema, in->one, 1, &w->rows[chunk[j]], w->batch_id, in->ncols);
    int r = sqlite3_step(in->one);
    sqlite3_reset(in->one);
    if (r != SQLITE_DONE) return -1;
  }
  return 0;
}

/* Calls fn for each measurement the rows have, in id order: one pass per
 * measurement (a batch has few). 0 or fn's first error. */
static int measurements_each(sqlite_impl *im, conn *c, const storage_rows *w,
                             int (*fn)(sqlite_impl *, conn *, const storage_rows *, uint16_t, char *, size_t),
                             char *err, size_t errlen) {
  for (uint32_t lo = 0;;) {
    uint32_t m = UINT32_MAX;
    for (uint32_t i = 0; i < w->nrows; i++) {
      uint32_t x = w->rows[i].r->measurement;
      if (x >= lo && x < m) m = x;
    }
    if (m == UINT32_MAX) return 0;
    int r = fn(im, c, w, (uint16_t)m, err, errlen);
    if (r) return r;
    lo = m + 1;
  }
}

static int measure_table_of(sqlite_impl *im, conn *c, const storage_rows *w, uint16_t m, char *err, size_t errlen) {
  (void)w;
  return measure_table(im, c, m, err, errlen);
}

/* This transaction's marks as one mark_log row. 0 or -1. */
static int log_marks(sqlite_impl *im, conn *c, const storage_rows *w) {
  size_t need = (size_t)w->nmarks * (1 + PROTOCOL_ID_ROOM + 8), at = 0;
  if (need > im->blobcap) {
    unsigned char *b = realloc(im->blob, need);
    if (!b) return -1;
    im->blob = b;
    im->blobcap = need;
  }
  for (uint32_t i = 0; i < w->nmarks; i++) {
    const char *name = w->marks[i].name;
    size_t len = strlen(name);
    if (len > PROTOCOL_ID_ROOM) len = PROTOCOL_ID_ROOM;
    uint64_t seq = w->marks[i].seq;
    im->blob[at++] = (unsigned char)len;
    memcpy(im->blob + at, name, len);
    at += len;
    for (int j = 0; j < 8; j++) im->blob[at++] = (unsigned char)(seq >> (8 * j));
  }
  sqlite3_bind_int64(c->st[ST_LOG_ADD], 1, (sqlite3_int64)w->batch_id);
  sqlite3_bind_blob(c->st[ST_LOG_ADD], 2, im->blob, (int)at, SQLITE_STATIC);
  return step_done(c, ST_LOG_ADD) ? -1 : 0;
}

/* Whether device's mark is in the dirty set. */
static int is_dirty(const sqlite_impl *im, uint32_t device) {
  return device < im->ndirty_at && im->dirty_at[device] != 0;
}

/* Room in the dirty set for the transaction's marks, taken before its
 * commit so that remembering them after it cannot fail. 0 or -1. */
static int reserve_dirty(sqlite_impl *im, const storage_rows *w, uint32_t fresh) {
  uint32_t top = 0;
  for (uint32_t i = 0; i < w->nmarks; i++)
    if (w->marks[i].device > top) top = w->marks[i].device;
  if (top >= im->ndirty_at) {
    uint32_t n = im->ndirty_at ? im->ndirty_at : 1024;
    while (n <= top) n *= 2;
    uint32_t *at = realloc(im->dirty_at, (size_t)n * sizeof *at);
    if (!at) return -1;
    memset(at + im->ndirty_at, 0, (size_t)(n - im->ndirty_at) * sizeof *at);
    im->dirty_at = at;
    im->ndirty_at = n;
  }
  if (im->ndirty + fresh > im->capdirty) {
    uint32_t cap = im->capdirty ? im->capdirty : 1024;
    while (cap < im->ndirty + fresh) cap *= 2;
    dirty_mark *dm = realloc(im->dirty, (size_t)cap * sizeof *dm);
    if (!dm) return -1;
    im->dirty = dm;
    im->capdirty = cap;
  }
  return 0;
}

/* After a commit that logged its marks: they join the dirty set, to be
 * folded later (reserve_dirty made the room). */
static void remember_dirty(sqlite_impl *im, const storage_rows *w) {
  for (uint32_t i = 0; i < w->nmarks; i++) {
    uint32_t d = w->marks[i].device;
    if (is_dirty(im, d)) {
      im->dirty[im->dirty_at[d] - 1].seq = w->marks[i].seq;
      continue;
    }
    im->dirty[im->ndirty++] = (dirty_mark){d, w->marks[i].seq};
    im->dirty_at[d] = im->ndirty;
  }
}

static void forget_dirty(sqlite_impl *im) {
  for (uint32_t i = 0; i < im->ndirty; i++) im->dirty_at[im->dirty[i].device] = 0;
  im->ndirty = 0;
}

/* Persists the transaction's marks: folded into device_hwm (with every
 * mark moved since the last fold) when few moved or it is time to fold,
 * else logged. Sets *folded. 0 or -1. */
static int persist_marks(sqlite_impl *im, conn *c, const storage_rows *w, int *folded) {
  uint32_t fresh = 0;
  for (uint32_t i = 0; i < w->nmarks; i++) fresh += !is_dirty(im, w->marks[i].device);
  *folded = im->ndirty + fresh <= FOLD_MAX || im->since_fold + 1 >= FOLD_EVERY;
  if (!*folded) return reserve_dirty(im, w, fresh) || log_marks(im, c, w) ? -1 : 0;
  if (write_marks(im, c, im->dirty, im->ndirty, w->marks, w->nmarks)) return -1;
  return im->logged && step_done(c, ST_LOG_CLEAR) ? -1 : 0;
}

static int sqlite_write(void *impl, int ci, const storage_rows *w, char *err, size_t errlen) {
  sqlite_impl *im = impl;
  conn *c = &im->conns[ci];
  pthread_mutex_lock(&im->write_lock);
  const char *what = NULL;
  int folded = 0, r = measurements_each(im, c, w, measure_table_of, err, errlen);
  if (r) {
    pthread_mutex_unlock(&im->write_lock);
    return r;
  }
  if (step_done(c, ST_BEGIN))
    what = "begin";
  else if (measurements_each(im, c, w, insert_measurement, err, errlen))
    what = "insert";
  else if (persist_marks(im, c, w, &folded))
    what = "high-water mark";
  else if (step_done(c, ST_COMMIT))
    what = "commit";
  if (what) {
    r = fail_db(c->db, what, err, errlen);
    if (!sqlite3_get_autocommit(c->db)) step_done(c, ST_ROLLBACK);
    pthread_mutex_unlock(&im->write_lock);
    return r;
  }
  if (folded) {
    forget_dirty(im);
    im->since_fold = 0;
    im->logged = 0;
  } else {
    im->since_fold++;
    im->logged = 1;
    remember_dirty(im, w);
  }
  pthread_mutex_unlock(&im->write_lock);
  return 0;
}

static int sqlite_count_rows(void *impl, uint64_t *rows, char *err, size_t errlen) {
  conn *c = &((sqlite_impl *)impl)->conns[0];
  sqlite3_stmt *st = c->st[ST_COUNT];
  int r = sqlite3_step(st);
  if (r == SQLITE_ROW) *rows = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return r == SQLITE_ROW ? 0 : fail_db(c->db, "count", err, errlen);
}

static int sqlite_fields(void *impl, const storage_field **fields, uint32_t *n) {
  sqlite_impl *im = impl;
  return im->history ? sqlite_history_fields(im->history, fields, n) : -EOPNOTSUPP;
}

static int sqlite_history_read(void *impl, const storage_history_query *q, storage_history_result *res, char *err,
                               size_t errlen) {
  sqlite_impl *im = impl;
  if (im->history) return sqlite_history_query(im->history, q, res, err, errlen);
  snprintf(err, errlen, "the database was opened without its history index");
  return -EOPNOTSUPP;
}

static int64_t sqlite_behind(void *impl) {
  sqlite_impl *im = impl;
  return im->history ? sqlite_history_behind(im->history) : -1;
}

/* One window of a measurement's table: its next max_rows rows by rowid,
 * the ones older than cutoff_ms deleted, in a transaction on the write
 * lock. *done once the table's round is over: its end, or a window
 * without an old row (rows are stored as they arrive, so what follows is
 * younger still; a reading that came late behind a young window stays
 * until a later round finds it in front). */
static int expire_window(sqlite_impl *im, uint16_t m, int64_t cutoff_ms, uint32_t max_rows, uint64_t *deleted,
                         int *done, char *err, size_t errlen) {
  conn *c = &im->conns[0];
  const char *table = schema_name(im->schema, m);
  char *look = sqlite3_mprintf("SELECT MAX(rowid), COUNT(*), TOTAL(ts_ms < ?3) FROM (SELECT rowid, ts_ms FROM "
                               "\"%w\" WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
                               table);
  char *drop = sqlite3_mprintf("DELETE FROM \"%w\" WHERE rowid > ?1 AND rowid <= ?2 AND ts_ms < ?3", table);
  sqlite3_stmt *st = NULL;
  int r = 0;
  *done = 1;
  pthread_mutex_lock(&im->write_lock);
  if (!look || !drop || step_done(c, ST_BEGIN)) {
    r = fail_db(look && drop ? c->db : NULL, "expire", err, errlen);
  } else if (sqlite3_prepare_v2(c->db, look, -1, &st, NULL) != SQLITE_OK) {
    r = strstr(sqlite3_errmsg(c->db), "no such table") ? 0 : fail_db(c->db, "expire", err, errlen); /* no reading yet */
  } else {
    sqlite3_bind_int64(st, 1, im->expire_after);
    sqlite3_bind_int64(st, 2, max_rows);
    sqlite3_bind_int64(st, 3, cutoff_ms);
    if (sqlite3_step(st) != SQLITE_ROW) r = fail_db(c->db, "expire", err, errlen);
    int64_t last = r ? 0 : sqlite3_column_int64(st, 0), n = r ? 0 : sqlite3_column_int64(st, 1);
    int64_t old = r ? 0 : (int64_t)sqlite3_column_double(st, 2);
    sqlite3_finalize(st);
    st = NULL;
    if (r == 0 && old > 0) {
      if (sqlite3_prepare_v2(c->db, drop, -1, &st, NULL) != SQLITE_OK) {
        r = fail_db(c->db, "expire", err, errlen);
      } else {
        sqlite3_bind_int64(st, 1, im->expire_after);
        sqlite3_bind_int64(st, 2, last);
        sqlite3_bind_int64(st, 3, cutoff_ms);
        if (sqlite3_step(st) != SQLITE_DONE) r = fail_db(c->db, "expire", err, errlen);
        *deleted += r ? 0 : (uint64_t)sqlite3_changes(c->db);
      }
    }
    if (r == 0) {
      im->expire_after = last;
      *done = n < max_rows || old == 0;
    }
  }
  sqlite3_finalize(st);
  if (r == 0 && step_done(c, ST_COMMIT)) r = fail_db(c->db, "expire", err, errlen);
  if (r != 0 && !sqlite3_get_autocommit(c->db)) step_done(c, ST_ROLLBACK);
  pthread_mutex_unlock(&im->write_lock);
  sqlite3_free(look);
  sqlite3_free(drop);
  return r;
}

/* After the history's round over readings, one window of the other
 * measurements' tables, in id order. */
static int sqlite_expire(void *impl, int64_t cutoff_ms, uint32_t max_rows, uint64_t *deleted, int *more, char *err,
                         size_t errlen) {
  sqlite_impl *im = impl;
  if (!im->history) {
    snprintf(err, errlen, "the database was opened without its history index");
    return -EOPNOTSUPP;
  }
  if (!im->expiring_tables) {
    int r = sqlite_history_expire(im->history, cutoff_ms, max_rows, deleted, more, err, errlen);
    if (r != 0 || *more) return r;
    im->expiring_tables = 1;
    im->expire_table = 0;
    im->expire_after = 0;
  }
  uint16_t m = im->expire_table;
  while (++m && (m == SCHEMA_TELEMETRY || !schema_is_measurement(im->schema, m)))
    if (!*schema_name(im->schema, m)) m = UINT16_MAX; /* past the last name */
  if (m == 0 || m == UINT16_MAX) { /* every table's round is over */
    im->expiring_tables = 0;
    *more = 0;
    return 0;
  }
  int done = 0;
  im->expire_table = (uint16_t)(m - 1); /* the same table again, unless its round ends */
  int r = expire_window(im, m, cutoff_ms, max_rows, deleted, &done, err, errlen);
  if (r == 0 && done) {
    im->expire_table = m;
    im->expire_after = 0;
  }
  *more = 1;
  return r;
}

const storage_backend storage_sqlite_backend = {
    .name = "sqlite",
    .open = sqlite_open,
    .mark_load = sqlite_mark_load,
    .write = sqlite_write,
    .count_rows = sqlite_count_rows,
    .fields = sqlite_fields,
    .history = sqlite_history_read,
    .behind = sqlite_behind,
    .expire = sqlite_expire,
    .close = sqlite_close,
};
