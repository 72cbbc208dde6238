/* storage_postgres.c - the PostgreSQL backend (storage_backend.h), on
 * libpq: one server session per connection, one transaction per write,
 * rows sent with COPY in binary, the marks logged as one row.
 *
 * The connection string (--db) is libpq's, a URI or key=value pairs; the
 * password is best left to ~/.pgpass or PGPASSWORD, as serve logs --db.
 * Unless the string says otherwise, connecting gives up after 10 s, TCP
 * keepalives and a 30 s user timeout bound how long a call waits on a
 * server that vanished from the network, and a lock is waited for at most
 * 10 s (lock_timeout, in `options`; then -EBUSY).
 *
 * Connections write in parallel, each its own devices (storage.c routes
 * them), so no lock is shared between them: a device's rows and its mark
 * are only ever touched by its connection's session.
 *
 * Schema: the same as SQLite's. readings is append-only, without a key on
 * (device, seq) - the key costs 4-5 times the rate - and device_hwm holds
 * each device's highest stored seq. The marks of a write are persisted in
 * its transaction, but not as device_hwm rows: with thousands of devices
 * interleaved, a batch of 1,000 readings moves about 1,000 marks, and
 * upserting them cost 6 times the COPY of the rows (116,000 readings/s
 * where a bare COPY took 1,070,000). A write appends them instead as one
 * mark_log row (the writing connection's id, the batch, and two arrays).
 * Every FOLD_EVERY writes of a connection, and when it closes, the latest
 * mark of each device it moved since its last fold - kept in memory, as
 * SQLite's backend does - goes to device_hwm and its mark_log rows are
 * deleted, in the transaction of that write (which logs nothing); opening
 * folds from mark_log what any writer left (a crash). device_hwm plus
 * mark_log hold every committed mark; a mark is only read (mark_load) for
 * a device this process has not written yet, from both: in a cluster the
 * device may have been another node's, which died before its fold.
 *
 * Measurements: each is a table (storage.h), telemetry's readings and
 * any other measurement M's the table "M", with device, seq, ts_ms and
 * batch, then a column per field of the measurement (schema.h) typed by
 * the field's type: double precision, bigint, boolean, text; a tag is
 * text with the comment 'tag', which is how open tells it from a string.
 * Before a write, its connection adds the columns the write needs (CREATE
 * TABLE, ALTER TABLE ... ADD COLUMN IF NOT EXISTS, in a transaction of
 * their own: a column left by a write that then failed does no harm) and
 * remembers per measurement how many exist, so this DDL runs only when a
 * measurement gained fields. A write copies each measurement's rows with
 * a COPY of its own (its columns listed), all in the write's transaction.
 * At open, the columns of every table so shaped go into the schema, so a
 * field keeps the type it was stored with; one the schema has with
 * another type fails the open. readings before any fields had its three
 * NOT NULL and battery an integer: open drops the NOT NULLs and makes
 * battery a bigint, as every integer field is (a rewrite of the table,
 * once; the bigint takes no more room in a row, where the integer was
 * padded to batch's 8 bytes).
 *
 * XXX: PostgreSQL cuts identifiers at 63 bytes and names may have 128, so
 * two measurements (or fields) alike in their first 63 bytes share a
 * table (or a column).
 *
 * Tables are created at open if missing, and columns added, under an
 * advisory lock so that gateways starting together do not race; readings
 * and device_hwm are checked for the columns this backend writes. Seqs
 * are unsigned 64-bit and stored in bigint as the same 64 bits (two's
 * complement), as in SQLite: every seq below 2^63 is itself.
 *
 * A write is three round trips: "BEGIN; SELECT txid_current(); COPY ...
 * FROM STDIN" in one simple query; the rows; the mark_log row, or the fold
 * when due, and COMMIT in one pipeline. A write of several measurements
 * takes two more per measurement after the first (its COPY, its rows).
 *
 * Durability (synchronous_commit, set per session): a COMMIT that returned
 * is in the server, so it survives any crash of serve either way. With
 * `normal` (off) the server acknowledges before its WAL is flushed: a
 * crash of PostgreSQL or of its machine loses the commits of its last 3 x
 * wal_writer_delay (600 ms by default); `full` (on) waits for the flush,
 * and for synchronous standbys if the server has some.
 *
 * A lost connection fails the call with -EIO; the next call on that
 * connection connects again (the writer retries, so a restarted server is
 * picked up within its backoff). One case is in doubt: the link broke
 * after COMMIT was sent, so the transaction may have committed. The
 * connection then remembers the write and, before anything else on its
 * next session, looks for the write's mark_log row, or, had the write
 * folded, for its first device's mark in device_hwm (a seq only this
 * connection moves), to know whether the commit happened. If it did, the
 * retry of that same write returns 0 without writing (storage.c then moves
 * its marks as for any commit); if not, the retry writes. While the old
 * session's transaction is still in progress on the server, the call fails
 * with -EBUSY. */
#include "storage_backend.h"

#include <endian.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Writes of a connection between folds of its mark_log rows. */
enum { FOLD_EVERY = 256 };

/* The columns every measurement's table starts with; its fields follow. */
#define FIXED_COLUMNS "device, seq, ts_ms, batch"
enum { NFIXED = 4 };

static const char tables[] = "CREATE TABLE IF NOT EXISTS readings ("
                             " device text NOT NULL, seq bigint NOT NULL, ts_ms bigint NOT NULL,"
                             " temperature double precision, humidity double precision,"
                             " battery bigint, batch bigint NOT NULL);"
                             /* A fold updates thousands of its rows: room on each page lets
                              * an update stay on the page (HOT), the index untouched. */
                             "CREATE TABLE IF NOT EXISTS device_hwm ("
                             " device text PRIMARY KEY, seq bigint NOT NULL) WITH (fillfactor = 50);"
                             "CREATE TABLE IF NOT EXISTS mark_log ("
                             " id bigint GENERATED ALWAYS AS IDENTITY, writer bigint NOT NULL,"
                             " batch bigint NOT NULL, devices text[] NOT NULL, seqs bigint[] NOT NULL);"
                             /* Read back once per fold: not worth compressing. */
                             "ALTER TABLE mark_log ALTER devices SET STORAGE EXTERNAL,"
                             " ALTER seqs SET STORAGE EXTERNAL;";

/* The column type of each field type, and its name in messages (schema.h's). */
static const char *const column_types[] = {
    [FIELD_FLOAT] = "double precision",
    [FIELD_INT] = "bigint",
    [FIELD_BOOL] = "boolean",
    [FIELD_STRING] = "text",
    [FIELD_TAG] = "text",
};
static const char *const type_names[] = {
    [FIELD_FLOAT] = "float",   [FIELD_INT] = "integer", [FIELD_BOOL] = "boolean",
    [FIELD_STRING] = "string", [FIELD_TAG] = "tag",
};

/* The columns of the tables of the session's schema (where CREATE TABLE
 * puts them), table by table in column order: the table, the column, its
 * type's oid, whether it is a tag. A table named telemetry is no
 * measurement's: telemetry's is readings. */
static const char catalog[] =
    "SELECT c.relname, a.attname, a.atttypid::int8, col_description(c.oid, a.attnum) IS NOT DISTINCT FROM 'tag'"
    " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
    " WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
    " AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped"
    " AND c.relname NOT IN ('device_hwm', 'mark_log', 'telemetry')"
    " ORDER BY c.relname, a.attnum";

/* A fold never moves a mark back: with several nodes, one may fold marks
 * older than another's already in device_hwm (unsigned, as below). */
#define KEEP_GREATER                                                                                              \
  "CASE WHEN (excluded.seq # '-9223372036854775808'::bigint) > (device_hwm.seq # '-9223372036854775808'::bigint)" \
  " THEN excluded.seq ELSE device_hwm.seq END"

/* At open, what mark_log holds goes into device_hwm: per device the
 * largest mark, as unsigned (x # MIN turns the unsigned order of
 * bigint's bits into the signed one), aggregated in a hash: marks only
 * grow, so it is the latest. */
static const char fold_log[] =
    "WITH gone AS (DELETE FROM mark_log RETURNING devices, seqs)"
    " INSERT INTO device_hwm (device, seq)"
    " SELECT m.device, max(m.seq # '-9223372036854775808'::bigint) # '-9223372036854775808'::bigint"
    " FROM gone, unnest(gone.devices, gone.seqs) AS m(device, seq) GROUP BY m.device"
    " ON CONFLICT (device) DO UPDATE SET seq = " KEEP_GREATER;

/* A connection's fold: its marks from memory, its mark_log rows gone.
 * (Unnesting its rows instead took 0.18 s per 256 writes of 1,000 marks,
 * four times this.) */
static const char fold_marks[] = "WITH gone AS (DELETE FROM mark_log WHERE writer = $1)"
                                 " INSERT INTO device_hwm (device, seq) SELECT * FROM unnest($2::text[], $3::int8[])"
                                 " ON CONFLICT (device) DO UPDATE SET seq = " KEEP_GREATER;

/* Any number, the same in every gateway: the lock taken while creating
 * the schema. */
#define SCHEMA_LOCK "7878020417"

/* What a write's first COPY comes after, in the same message. */
#define WRITE_BEGIN "BEGIN; SELECT txid_current(); "

/* What makes a COPY insert its rows one at a time. COPY otherwise
 * gathers them in a buffer of up to 1,000 (its multi-insert), and
 * PostgreSQL before 17 pins the table's tuple descriptor once per
 * buffered row in a resource owner that finds them all alike, a cost
 * that grows with the square of the rows buffered: 3M rows in COPYs of
 * 1,000 cost the server 5.6 to 7.3 CPU s buffered, 2.6 to 3.4 s one at a
 * time, and 1.7 to 2.1 s in one COPY (bench/postgres.sh). A volatile
 * WHERE turns the buffer off. */
#define ONE_AT_A_TIME " WHERE random() >= 0"
enum { PG_PINS_FAST = 170000 }; /* the server version from which the buffer costs no more */

enum { OID_BOOL = 16, OID_INT8 = 20, OID_TEXT = 25, OID_FLOAT8 = 701, OID_TEXT_ARRAY = 1009, OID_INT8_ARRAY = 1016 };

/* A write whose COMMIT was sent on a link that then broke. */
typedef struct doubt {
  int active;
  int fold;          /* it folded instead of logging */
  int64_t txid;      /* its transaction */
  uint64_t batch_id; /* the write, to know its retry */
  uint32_t nrows, nmarks;
  char device[256]; /* its first mark: the seq there says whether it committed */
  uint64_t seq;
} doubt;

/* What a connection knows of a measurement's table. */
typedef struct pg_table {
  uint32_t ncols;     /* the measurement's first ncols columns are in the table */
  uint32_t copy_cols; /* copy is for that many */
  char *copy;         /* WRITE_BEGIN, then the COPY of copy_cols columns; NULL: none yet */
} pg_table;

/* The rows of one measurement in a write, and their COPY data. */
typedef struct write_group {
  uint16_t m;
  uint32_t ncols; /* the measurement's columns when the write began */
  const schema_column *cols;
  size_t off, len; /* its data in the connection's buf */
} write_group;

typedef struct pg_conn {
  PGconn *pg;
  int ready;           /* the session is set up and its statements prepared */
  int one_at_a_time;   /* its server's COPYs do better without their multi-insert buffer */
  int64_t writer;      /* its mark_log rows', for this open */
  unsigned since_fold; /* writes committed since its last fold */
  doubt doubt;
  char *buf; /* the COPY data, then the marks' arrays */
  size_t cap;
  /* The latest committed mark of each device moved since the last fold,
   * one entry per device; dirty_at by device index: 1 + its entry, or 0. */
  storage_mark_update *dirty;
  uint32_t ndirty, capdirty;
  uint32_t *dirty_at;
  uint32_t ndirty_at;
  /* The dirty devices' names, hashed (never 0), open addressing: the
   * devices this connection's mark_log rows may name. */
  uint64_t *named;
  uint32_t capnamed; /* a power of two, at least twice the dirty ones */
  /* A fold's marks: the dirty ones, the write's over them. */
  const char **names;
  uint64_t *seqs;
  char (*decimal)[16];
  uint32_t capfold;
  pg_table *tables; /* by measurement id */
  uint32_t ntables;
  write_group *groups;
  uint32_t ngroups, capgroups;
  const field_value **slot; /* a row's value of each column, or NULL */
  uint32_t capslot;
} pg_conn;

typedef struct pg_impl {
  storage_namer names;
  char *conninfo;
  int synchronous; /* --durability full */
  schema *schema;
  /* By measurement id: how many of its columns open found in its table
   * (every connection's starting knowledge). */
  uint32_t *found;
  uint32_t nfound;
  char *writers; /* the connections' writer ids, an int8[] in text */
  int n;
  pg_conn conns[];
} pg_impl;

/* SQLSTATEs a storage failure comes with, by code or class (two
 * characters), with the errno a caller sees. */
static const struct {
  const char *state, *name;
  int code;
} failures[] = {
    {"53100", "disk_full", -ENOSPC},
    {"53200", "out_of_memory", -ENOMEM},
    {"25006", "read_only_sql_transaction", -EROFS},
    {"42501", "insufficient_privilege", -EROFS},
    {"55P03", "lock_not_available", -EBUSY},
    {"40P01", "deadlock_detected", -EBUSY},
    {"40001", "serialization_failure", -EBUSY},
    {"53300", "too_many_connections", -EBUSY},
    {"53", "insufficient_resources", -EIO},
};

/* The first line of a libpq message, without its "ERROR:  " prefix. */
static void first_line(char *out, size_t len, const char *msg) {
  if (!msg || !*msg) msg = "unknown error";
  if (strncmp(msg, "ERROR:  ", 8) == 0) msg += 8;
  size_t n = strcspn(msg, "\n");
  snprintf(out, len, "%.*s", (int)n, msg);
}

/* "postgres: WHAT: the server's message (SQLSTATE name)" into err;
 * returns the errno of storage_backend.h. res may be NULL (the message is
 * then the connection's). A connection found broken is marked for a new
 * session. */
static int fail_pg(pg_conn *c, const PGresult *res, const char *what, char *err, size_t errlen) {
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  char msg[200];
  first_line(msg, sizeof msg, primary ? primary : c->pg ? PQerrorMessage(c->pg) : "out of memory");
  /* Lost, or about to be: the server ends sessions with class 57P
   * (shutting down, terminated) or 08 before it closes them. */
  int lost = !c->pg || PQstatus(c->pg) == CONNECTION_BAD ||
             (state && (strncmp(state, "57P", 3) == 0 || strncmp(state, "08", 2) == 0));
  if (lost) {
    c->ready = 0;
    snprintf(err, errlen, "postgres: %s: %s (connection lost%s%s)", what, msg, state ? ", SQLSTATE " : "",
             state ? state : "");
    return c->pg ? -EIO : -ENOMEM;
  }
  int code = -EIO;
  const char *name = NULL;
  for (size_t i = 0; state && i < sizeof failures / sizeof failures[0]; i++)
    if (strncmp(state, failures[i].state, strlen(failures[i].state)) == 0) {
      code = failures[i].code;
      name = failures[i].name;
      break;
    }
  snprintf(err, errlen, "postgres: %s: %s (SQLSTATE %s%s%s)", what, msg, state ? state : "none", name ? " " : "",
           name ? name : "");
  return code;
}

/* Runs sql (no parameters, results discarded); 0 or the code of the
 * first failure. */
static int exec_ok(pg_conn *c, const char *sql, const char *what, char *err, size_t errlen) {
  PGresult *res = PQexec(c->pg, sql);
  ExecStatusType st = PQresultStatus(res);
  int r = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : fail_pg(c, res, what, err, errlen);
  PQclear(res);
  return r;
}

static int prepare(pg_conn *c, const char *name, const char *sql, int nparams, const Oid *types, char *err,
                   size_t errlen) {
  PGresult *res = PQprepare(c->pg, name, sql, nparams, types);
  int r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : fail_pg(c, res, "prepare", err, errlen);
  PQclear(res);
  return r;
}

/* The session's prepared statements (a session's own), once the tables
 * exist. */
static int session_prepare(pg_conn *c, char *err, size_t errlen) {
  const Oid text = OID_TEXT, log[] = {OID_INT8, OID_INT8, OID_TEXT_ARRAY, OID_INT8_ARRAY}, int8 = OID_INT8;
  const Oid fold[] = {OID_INT8, OID_TEXT_ARRAY, OID_INT8_ARRAY}, others[] = {OID_TEXT, OID_INT8_ARRAY};
  int r = prepare(c, "mark_get", "SELECT seq FROM device_hwm WHERE device = $1", 1, &text, err, errlen);
  /* A device new to this process may be another node's, whose latest
   * marks are still in its mark_log rows (it died before its fold): the
   * greater of device_hwm's and the log's. The log is short (a writer
   * folds every FOLD_EVERY writes), and a mark is read once a run. */
  if (!r)
    r = prepare(c, "mark_load",
                "SELECT GREATEST((SELECT seq FROM device_hwm WHERE device = $1), (SELECT max(u.s) FROM mark_log m "
                "CROSS JOIN LATERAL unnest(m.devices, m.seqs) AS u(d, s) WHERE m.devices @> ARRAY[$1] AND u.d = $1))",
                1, &text, err, errlen);
  /* The same without the rows of this process's writers ($2), for a
   * device none of them names: looking through every array of the log
   * for each device new to the process cost the server more than the
   * COPYs of 600,000 readings (7,000 devices). The CASE makes the server
   * test the writer first, which it takes to cost more than the arrays. */
  if (!r)
    r = prepare(c, "mark_load_others",
                "SELECT GREATEST((SELECT seq FROM device_hwm WHERE device = $1), (SELECT max(u.s) FROM mark_log m "
                "CROSS JOIN LATERAL unnest(m.devices, m.seqs) AS u(d, s) "
                "WHERE CASE WHEN m.writer = ANY($2) THEN false ELSE m.devices @> ARRAY[$1] END AND u.d = $1))",
                2, others, err, errlen);
  if (!r)
    r = prepare(c, "log_add", "INSERT INTO mark_log (writer, batch, devices, seqs) VALUES ($1, $2, $3, $4)", 4, log,
                err, errlen);
  if (!r)
    r = prepare(c, "log_has", "SELECT count(*) FROM mark_log WHERE writer = $1 AND batch = $2", 2, log, err, errlen);
  if (!r) r = prepare(c, "fold", fold_marks, 3, fold, err, errlen);
  if (!r) r = prepare(c, "xact_status", "SELECT txid_status($1)", 1, &int8, err, errlen);
  if (!r) r = prepare(c, "count", "SELECT count(*) FROM readings", 0, NULL, err, errlen);
  c->ready = r == 0;
  return r;
}

/* The server's notices ("relation already exists, skipping") are not
 * for serve's log; libpq would print them on stderr. */
static void ignore_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

/* Connects c anew, with the session's durability; prepares nothing. */
static int session_connect(pg_impl *im, pg_conn *c, char *err, size_t errlen) {
  PQfinish(c->pg);
  c->ready = 0;
  /* Defaults first: the user's string, expanded from dbname, overrides
   * them. */
  const char *keys[] = {"connect_timeout",  "keepalives_idle",  "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout", "application_name",
                        "options",          "dbname",           NULL};
  const char *values[] = {"10", "10", "5", "3", "30000", "telegate", "-c lock_timeout=10s", im->conninfo, NULL};
  c->pg = PQconnectdbParams(keys, values, 1);
  if (PQstatus(c->pg) != CONNECTION_OK) {
    char msg[200];
    first_line(msg, sizeof msg, c->pg ? PQerrorMessage(c->pg) : "out of memory");
    snprintf(err, errlen, "postgres: cannot connect: %s", msg);
    return c->pg ? -EIO : -ENOMEM;
  }
  PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
  c->one_at_a_time = PQserverVersion(c->pg) < PG_PINS_FAST;
  /* Readings' strings are UTF-8, whatever the database's encoding. */
  return exec_ok(c,
                 im->synchronous ? "SET synchronous_commit = on; SET client_encoding = 'UTF8'"
                                 : "SET synchronous_commit = off; SET client_encoding = 'UTF8'",
                 "session settings", err, errlen);
}

/* A session on c, ready for every call: connected, or connected anew
 * after a loss. */
static int session(pg_impl *im, pg_conn *c, char *err, size_t errlen) {
  if (c->ready && PQstatus(c->pg) == CONNECTION_OK) return 0;
  int r = session_connect(im, c, err, errlen);
  return r ? r : session_prepare(c, err, errlen);
}

/* SQL being put together; out of memory once, it stays so. */
typedef struct sql_text {
  char *p;
  size_t n, cap;
  int oom;
} sql_text;

static void sql_add(sql_text *t, const char *s, size_t n) {
  if (t->oom) return;
  if (t->n + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->n + n + 1) cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p) {
      t->oom = 1;
      return;
    }
    t->p = p;
    t->cap = cap;
  }
  memcpy(t->p + t->n, s, n);
  t->n += n;
  t->p[t->n] = 0;
}

static void sql_str(sql_text *t, const char *s) { sql_add(t, s, strlen(s)); }

/* A name as a quoted identifier: any name, none a keyword. */
static void sql_ident(sql_text *t, const char *name) {
  sql_add(t, "\"", 1);
  for (const char *q; (q = strchr(name, '"')) != NULL; name = q + 1) {
    sql_add(t, name, (size_t)(q - name) + 1);
    sql_add(t, "\"", 1);
  }
  sql_str(t, name);
  sql_add(t, "\"", 1);
}

/* Runs t's SQL (then frees it); 0, -ENOMEM, or the failure's code. */
static int sql_run(pg_conn *c, sql_text *t, const char *what, char *err, size_t errlen) {
  int r = 0;
  if (t->oom) {
    snprintf(err, errlen, "postgres: out of memory");
    r = -ENOMEM;
  } else if (t->n) {
    r = exec_ok(c, t->p, what, err, errlen);
  }
  free(t->p);
  *t = (sql_text){0};
  return r;
}

/* The table of measurement m. */
static const char *table_of(const schema *sc, uint16_t m) {
  return m == SCHEMA_TELEMETRY ? "readings" : schema_name(sc, m);
}

static int is_fixed(const char *col) {
  return !strcmp(col, "device") || !strcmp(col, "seq") || !strcmp(col, "ts_ms") || !strcmp(col, "batch");
}

/* In the catalog's rows, the table of row *at: its rows up to *end, and
 * whether it is a measurement's (it has the fixed columns). */
static int catalog_table(const PGresult *res, int at, int *end) {
  const char *table = PQgetvalue(res, at, 0);
  int fixed = 0, i = at;
  for (; i < PQntuples(res) && strcmp(PQgetvalue(res, i, 0), table) == 0; i++) fixed += is_fixed(PQgetvalue(res, i, 1));
  *end = i;
  return fixed == NFIXED;
}

static int catalog_read(pg_conn *c, PGresult **res, char *err, size_t errlen) {
  *res = PQexec(c->pg, catalog);
  return PQresultStatus(*res) == PGRES_TUPLES_OK ? 0 : fail_pg(c, *res, "catalog", err, errlen);
}

/* --reset: drops every measurement's table, and the marks'. */
static int tables_drop(pg_conn *c, char *err, size_t errlen) {
  PGresult *res;
  int r = catalog_read(c, &res, err, errlen);
  sql_text t = {0};
  sql_str(&t, "DROP TABLE IF EXISTS readings, device_hwm, mark_log");
  for (int i = 0, end; !r && i < PQntuples(res); i = end)
    if (catalog_table(res, i, &end) && strcmp(PQgetvalue(res, i, 0), "readings") != 0) {
      sql_str(&t, ", ");
      sql_ident(&t, PQgetvalue(res, i, 0));
    }
  PQclear(res);
  if (r) free(t.p);
  return r ? r : sql_run(c, &t, "reset", err, errlen);
}

/* readings as this backend writes it (see the top): its fields nullable,
 * battery a bigint. */
static int readings_migrate(pg_conn *c, char *err, size_t errlen) {
  PGresult *res = PQexec(c->pg, "SELECT attname, attnotnull, atttypid = 'integer'::regtype FROM pg_attribute"
                                " WHERE attrelid = 'readings'::regclass AND NOT attisdropped"
                                " AND attname IN ('temperature', 'humidity', 'battery')");
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    int r = fail_pg(c, res, "readings", err, errlen);
    PQclear(res);
    return r;
  }
  sql_text t = {0};
  for (int i = 0; i < PQntuples(res); i++) {
    const char *col = PQgetvalue(res, i, 0);
    for (int k = 1; k <= 2; k++) {
      if (strcmp(PQgetvalue(res, i, k), "t") != 0) continue;
      sql_str(&t, t.n ? ", ALTER " : "ALTER TABLE readings ALTER ");
      sql_str(&t, col);
      sql_str(&t, k == 1 ? " DROP NOT NULL" : " TYPE bigint");
    }
  }
  PQclear(res);
  return sql_run(c, &t, "readings", err, errlen);
}

/* The field type of a stored column, or 0: a type this backend does not
 * write (the column is left alone). */
static int field_type_of(const PGresult *res, int row) {
  long long oid = strtoll(PQgetvalue(res, row, 2), NULL, 10);
  int tag = strcmp(PQgetvalue(res, row, 3), "t") == 0;
  return oid == OID_FLOAT8 ? FIELD_FLOAT
         : oid == OID_INT8 ? FIELD_INT
         : oid == OID_BOOL ? FIELD_BOOL
         : oid == OID_TEXT ? (tag ? FIELD_TAG : FIELD_STRING)
                           : 0;
}

/* Remembers that measurement m's first n columns are in its table. 0 or
 * -1. */
static int found_set(pg_impl *im, uint16_t m, uint32_t n) {
  if (m >= im->nfound) {
    uint32_t *f = realloc(im->found, ((size_t)m + 1) * sizeof *f);
    if (!f) return -1;
    memset(f + im->nfound, 0, ((size_t)m + 1 - im->nfound) * sizeof *f);
    im->found = f;
    im->nfound = (uint32_t)m + 1;
  }
  im->found[m] = n;
  return 0;
}

/* One measurement table's fields (catalog rows from..end) into the
 * schema, and whether the table has all of the measurement's columns. */
static int table_learn(pg_impl *im, const PGresult *res, int from, int end, char *err, size_t errlen) {
  schema *sc = im->schema;
  const char *table = PQgetvalue(res, from, 0), *m = strcmp(table, "readings") == 0 ? "telemetry" : table;
  for (int i = from; i < end; i++) {
    const char *col = PQgetvalue(res, i, 1);
    int type = field_type_of(res, i), r = type && !is_fixed(col) ? schema_add_column(sc, m, col, type) : 0;
    if (r == -EEXIST) {
      const schema_column *cols;
      uint16_t mid = schema_find(sc, m, strlen(m));
      schema_columns(sc, mid, &cols);
      int k = schema_column_of(sc, mid, schema_find(sc, col, strlen(col)));
      snprintf(err, errlen, "postgres: %s.%s is %s in the database but %s in the schema; declare it so or drop it",
               table, col, type_names[type], type_names[cols[k].type]);
      return -EINVAL;
    }
    if (r != 0) {
      snprintf(err, errlen, "postgres: %s.%s: %s", table, col,
               r == -ENOMEM ? "out of memory" : "more names or fields than the schema holds (--max-fields)");
      return r == -ENOMEM ? r : -EINVAL;
    }
  }
  /* The DDL of a connection's first write to it is needed only when not. */
  const schema_column *cols;
  uint16_t mid = schema_find(sc, m, strlen(m));
  uint32_t n = schema_columns(sc, mid, &cols), have = 0;
  for (int i = from; i < end; i++) {
    const char *col = PQgetvalue(res, i, 1);
    have +=
        field_type_of(res, i) && !is_fixed(col) && schema_column_of(sc, mid, schema_find(sc, col, strlen(col))) >= 0;
  }
  if (mid && have == n && found_set(im, mid, n)) {
    snprintf(err, errlen, "postgres: out of memory");
    return -ENOMEM;
  }
  return 0;
}

/* Creates the tables if missing (dropping every measurement's first with
 * reset), brings readings up to date, puts what the tables hold into the
 * schema, and checks readings and device_hwm have the columns written
 * here. */
static int tables_open(pg_impl *im, pg_conn *c, int reset, char *err, size_t errlen) {
  PGresult *res = NULL;
  int r = exec_ok(c, "BEGIN; SELECT pg_advisory_xact_lock(" SCHEMA_LOCK ")", "schema lock", err, errlen);
  if (!r && reset) r = tables_drop(c, err, errlen);
  if (!r) r = exec_ok(c, tables, "schema", err, errlen);
  if (!r) r = readings_migrate(c, err, errlen);
  if (!r) r = catalog_read(c, &res, err, errlen);
  for (int i = 0, end; !r && i < PQntuples(res); i = end)
    if (catalog_table(res, i, &end)) r = table_learn(im, res, i, end, err, errlen);
  PQclear(res);
  if (!r) r = exec_ok(c, "COMMIT", "schema", err, errlen);
  if (!r) r = exec_ok(c, "SELECT " FIXED_COLUMNS " FROM readings LIMIT 0", "readings", err, errlen);
  if (!r) r = exec_ok(c, "SELECT device, seq FROM device_hwm LIMIT 0", "device_hwm", err, errlen);
  if (r && c->pg && PQstatus(c->pg) == CONNECTION_OK && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
    PQclear(PQexec(c->pg, "ROLLBACK"));
  return r;
}

/* Runs a prepared statement with text parameters that returns at most
 * one row of one column; *value is that column (NULL: no row or SQL
 * NULL), valid until *res is cleared. 0 or the code of the failure. */
static int query_one(pg_conn *c, const char *stmt, int nparams, const char *const *params, PGresult **res,
                     const char **value, const char *what, char *err, size_t errlen) {
  *res = PQexecPrepared(c->pg, stmt, nparams, params, NULL, NULL, 0);
  *value = NULL;
  if (PQresultStatus(*res) != PGRES_TUPLES_OK) return fail_pg(c, *res, what, err, errlen);
  if (PQntuples(*res) == 1 && !PQgetisnull(*res, 0, 0)) *value = PQgetvalue(*res, 0, 0);
  return 0;
}

static int maybe_named(const pg_conn *c, const char *name);

/* A device is routed to one connection, so of this process's mark_log
 * rows only its connection's may name it, and only if it is dirty there
 * (a mark forgotten and loaded again). */
static int pg_mark_load(void *impl, int ci, const char *device, int *found, uint64_t *seq, char *err, size_t errlen) {
  pg_impl *im = impl;
  pg_conn *c = &im->conns[ci];
  int r = session(im, c, err, errlen);
  PGresult *res = NULL;
  const char *v = NULL, *params[2] = {device, im->writers};
  if (!r)
    r = maybe_named(c, device) ? query_one(c, "mark_load", 1, params, &res, &v, "high-water mark", err, errlen)
                               : query_one(c, "mark_load_others", 2, params, &res, &v, "high-water mark", err, errlen);
  *found = v != NULL;
  *seq = v ? (uint64_t)strtoll(v, NULL, 10) : 0;
  PQclear(res);
  return r;
}

/* Room for n more bytes at c->buf + at. 0 or -1. */
static int reserve(pg_conn *c, size_t at, size_t n) {
  if (at + n <= c->cap) return 0;
  size_t cap = c->cap ? c->cap : 65536;
  while (cap < at + n) cap *= 2;
  char *b = realloc(c->buf, cap);
  if (!b) return -1;
  c->buf = b;
  c->cap = cap;
  return 0;
}

static size_t put16(char *p, uint16_t v) {
  v = htobe16(v);
  memcpy(p, &v, 2);
  return 2;
}
static size_t put32(char *p, uint32_t v) {
  v = htobe32(v);
  memcpy(p, &v, 4);
  return 4;
}
static size_t put64(char *p, uint64_t v) {
  v = htobe64(v);
  memcpy(p, &v, 8);
  return 8;
}
static size_t put_double(char *p, double d) {
  uint64_t v;
  memcpy(&v, &d, 8);
  return put64(p, v);
}

/* A value of a column of that type, as COPY's binary format has it: its
 * length (-1: NULL) and its bytes. A field of another type than its
 * column's - a reading made in the process - is converted between
 * numbers, or NULL. */
static size_t put_value(char *p, int type, const field_value *f) {
  int text = f && (f->type == FIELD_STRING || f->type == FIELD_TAG);
  if (!f || text != (type == FIELD_STRING || type == FIELD_TAG)) return put32(p, UINT32_MAX);
  switch (type) {
  case FIELD_FLOAT: put32(p, 8); return 4 + put_double(p + 4, field_number(f));
  case FIELD_INT: put32(p, 8); return 4 + put64(p + 4, (uint64_t)(f->type == FIELD_FLOAT ? (int64_t)f->v.f : f->v.i));
  case FIELD_BOOL:
    put32(p, 1);
    p[4] = field_number(f) != 0;
    return 5;
  default:
    put32(p, f->len);
    memcpy(p + 4, f->v.s, f->len);
    return 4 + f->len;
  }
}

/* The rows of w of g's measurement in COPY's binary format (a header,
 * then per row the field count and each field as its length and
 * big-endian bytes, then -1), into c->buf from `at`: g->off and g->len
 * set. Returns the end, or 0 out of memory. */
static size_t copy_data(const pg_impl *im, pg_conn *c, const storage_rows *w, write_group *g, size_t at) {
  static const char header[] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0"; /* signature, flags 0, no extension */
  if (reserve(c, at, sizeof header - 1 + 2)) return 0;
  g->off = at;
  memcpy(c->buf + at, header, sizeof header - 1);
  at += sizeof header - 1;
  for (uint32_t i = 0; i < w->nrows; i++) {
    const reading *r = w->rows[i].r;
    if (r->measurement != g->m) continue;
    /* Each column's field, by its name's column index. */
    const field_value *f = reading_fields(r);
    size_t len = strlen(w->rows[i].device), need = 2 + 4 * 4 + len + 8 * 3 + (size_t)g->ncols * 4 + 2;
    memset(c->slot, 0, g->ncols * sizeof *c->slot);
    for (uint32_t k = 0; k < r->nfields; k++) {
      int col = schema_column_of(im->schema, g->m, f[k].name);
      if (col < 0 || (uint32_t)col >= g->ncols) continue;
      c->slot[col] = &f[k];
      need += 8 + f[k].len;
    }
    if (reserve(c, at, need)) return 0;
    char *p = c->buf + at;
    p += put16(p, (uint16_t)(NFIXED + g->ncols));
    p += put32(p, (uint32_t)len);
    memcpy(p, w->rows[i].device, len);
    p += len;
    p += put32(p, 8);
    p += put64(p, r->seq);
    p += put32(p, 8);
    p += put64(p, (uint64_t)r->ts_ms);
    p += put32(p, 8);
    p += put64(p, w->batch_id);
    for (uint32_t k = 0; k < g->ncols; k++) p += put_value(p, g->cols[k].type, c->slot[k]);
    at = (size_t)(p - c->buf);
  }
  at += put16(c->buf + at, 0xffff);
  g->len = at - g->off;
  return at;
}

/* w's measurements into c->groups, in the order they first come, each
 * with its columns as they are now (every field of w's readings has its
 * column by now: schema_pack made it before the reading was sent). 0 or
 * -1. */
static int write_groups(const pg_impl *im, pg_conn *c, const storage_rows *w) {
  c->ngroups = 0;
  uint32_t at = 0;
  for (uint32_t i = 0; i < w->nrows; i++) {
    uint16_t m = w->rows[i].r->measurement;
    if (c->ngroups && c->groups[at].m == m) continue; /* as the row before */
    at = 0;
    while (at < c->ngroups && c->groups[at].m != m) at++;
    if (at < c->ngroups) continue;
    if (c->ngroups == c->capgroups) {
      uint32_t cap = c->capgroups ? 2 * c->capgroups : 8;
      write_group *g = realloc(c->groups, cap * sizeof *g);
      if (!g) return -1;
      c->groups = g;
      c->capgroups = cap;
    }
    write_group *g = &c->groups[c->ngroups++];
    *g = (write_group){.m = m};
    g->ncols = schema_columns(im->schema, m, &g->cols);
    if (g->ncols > c->capslot) {
      const field_value **slot = realloc(c->slot, g->ncols * sizeof *slot);
      if (!slot) return -1;
      c->slot = slot;
      c->capslot = g->ncols;
    }
  }
  return 0;
}

/* What c knows of m's table. NULL when out of memory. */
static pg_table *table_get(const pg_impl *im, pg_conn *c, uint16_t m) {
  if (m >= c->ntables) {
    uint32_t n = c->ntables ? c->ntables : 16;
    while (n <= m) n *= 2;
    pg_table *t = realloc(c->tables, n * sizeof *t);
    if (!t) return NULL;
    for (uint32_t i = c->ntables; i < n; i++) t[i] = (pg_table){.ncols = i < im->nfound ? im->found[i] : 0};
    c->tables = t;
    c->ntables = n;
  }
  return &c->tables[m];
}

/* g's table given g's columns (see the top), in a transaction of its own
 * that holds the lock of no other table: a write's transaction, which
 * may hold one, never waits for a DDL that waits for it. */
static int table_extend(const pg_impl *im, pg_conn *c, pg_table *t, const write_group *g, char *err, size_t errlen) {
  const char *table = table_of(im->schema, g->m);
  sql_text q = {0};
  sql_str(&q, "BEGIN; SELECT pg_advisory_xact_lock(" SCHEMA_LOCK "); CREATE TABLE IF NOT EXISTS ");
  sql_ident(&q, table);
  sql_str(&q, " (device text NOT NULL, seq bigint NOT NULL, ts_ms bigint NOT NULL, batch bigint NOT NULL);"
              /* A table of that name that is no measurement's is left alone. */
              " SELECT " FIXED_COLUMNS " FROM ");
  sql_ident(&q, table);
  sql_str(&q, " LIMIT 0; ALTER TABLE ");
  sql_ident(&q, table);
  for (uint32_t k = t->ncols; k < g->ncols; k++) {
    sql_str(&q, k > t->ncols ? ", ADD COLUMN IF NOT EXISTS " : " ADD COLUMN IF NOT EXISTS ");
    sql_ident(&q, schema_name(im->schema, g->cols[k].name));
    sql_str(&q, " ");
    sql_str(&q, column_types[g->cols[k].type]);
  }
  for (uint32_t k = t->ncols; k < g->ncols; k++) {
    if (g->cols[k].type != FIELD_TAG) continue;
    sql_str(&q, "; COMMENT ON COLUMN ");
    sql_ident(&q, table);
    sql_str(&q, ".");
    sql_ident(&q, schema_name(im->schema, g->cols[k].name));
    sql_str(&q, " IS 'tag'");
  }
  sql_str(&q, "; COMMIT");
  int r = sql_run(c, &q, "adding columns", err, errlen);
  if (r == 0) t->ncols = g->ncols;
  return r;
}

/* t's COPY for g's columns, made when they changed. 0 or -1. */
static int table_copy(const pg_impl *im, const pg_conn *c, pg_table *t, const write_group *g) {
  if (t->copy && t->copy_cols == g->ncols) return 0;
  sql_text q = {0};
  sql_str(&q, WRITE_BEGIN "COPY ");
  sql_ident(&q, table_of(im->schema, g->m));
  sql_str(&q, " (" FIXED_COLUMNS);
  for (uint32_t k = 0; k < g->ncols; k++) {
    sql_str(&q, ", ");
    sql_ident(&q, schema_name(im->schema, g->cols[k].name));
  }
  sql_str(&q, c->one_at_a_time ? ") FROM STDIN (FORMAT binary)" ONE_AT_A_TIME : ") FROM STDIN (FORMAT binary)");
  if (q.oom) return -1;
  free(t->copy);
  t->copy = q.p;
  t->copy_cols = g->ncols;
  return 0;
}

/* n marks as two one-dimensional arrays in binary (text[] and int8[]),
 * after `at` in c->buf: their offsets and sizes into off and len. 0 or
 * -1. */
static int marks_arrays(pg_conn *c, size_t at, const char *const *names, const uint64_t *seqs, uint32_t n,
                        size_t off[2], int len[2]) {
  size_t bytes = 0;
  for (uint32_t i = 0; i < n; i++) bytes += strlen(names[i]);
  if (reserve(c, at, 2 * 20 + (size_t)n * (4 + 4 + 8) + bytes)) return -1;
  for (int k = 0; k < 2; k++) {
    char *p = c->buf + at;
    p += put32(p, 1); /* dimensions */
    p += put32(p, 0); /* no NULLs */
    p += put32(p, k == 0 ? OID_TEXT : OID_INT8);
    p += put32(p, n);
    p += put32(p, 1); /* lower bound */
    for (uint32_t i = 0; i < n; i++) {
      if (k == 0) {
        size_t len_i = strlen(names[i]);
        p += put32(p, (uint32_t)len_i);
        memcpy(p, names[i], len_i);
        p += len_i;
      } else {
        p += put32(p, 8);
        p += put64(p, seqs[i]);
      }
    }
    off[k] = at;
    len[k] = (int)(p - (c->buf + at));
    at = (size_t)(p - c->buf);
  }
  return 0;
}

/* Room for a fold of n marks. 0 or -1. */
static int reserve_fold(pg_conn *c, uint32_t n) {
  if (n <= c->capfold) return 0;
  const char **names = realloc(c->names, (size_t)n * sizeof *names);
  if (names) c->names = names;
  uint64_t *seqs = realloc(c->seqs, (size_t)n * sizeof *seqs);
  if (seqs) c->seqs = seqs;
  char(*dec)[16] = realloc(c->decimal, (size_t)n * sizeof *dec);
  if (dec) c->decimal = dec;
  if (!names || !seqs || !dec) return -1;
  c->capfold = n;
  return 0;
}

static int is_dirty(const pg_conn *c, uint32_t device) { return device < c->ndirty_at && c->dirty_at[device]; }

static uint64_t name_hash(const char *name) {
  uint64_t h = 14695981039346656037u;
  for (; *name; name++) h = (h ^ (unsigned char)*name) * 1099511628211u;
  return h | 1;
}

/* Whether a dirty device may be named name (a collision says yes). */
static int maybe_named(const pg_conn *c, const char *name) {
  if (!c->capnamed) return 0;
  uint64_t h = name_hash(name);
  for (uint32_t i = (uint32_t)h & (c->capnamed - 1); c->named[i]; i = (i + 1) & (c->capnamed - 1))
    if (c->named[i] == h) return 1;
  return 0;
}

static void name_add(pg_conn *c, const char *name) {
  uint64_t h = name_hash(name);
  uint32_t i = (uint32_t)h & (c->capnamed - 1);
  while (c->named[i] && c->named[i] != h) i = (i + 1) & (c->capnamed - 1);
  c->named[i] = h;
}

/* Room in the dirty set for w's marks, taken before its commit so that
 * remembering them after it cannot fail. 0 or -1. */
static int reserve_dirty(const pg_impl *im, pg_conn *c, const storage_rows *w) {
  uint32_t top = 0;
  for (uint32_t i = 0; i < w->nmarks; i++)
    if (w->marks[i].device > top) top = w->marks[i].device;
  if (top >= c->ndirty_at) {
    uint32_t n = c->ndirty_at ? c->ndirty_at : 1024;
    while (n <= top) n *= 2;
    uint32_t *at = realloc(c->dirty_at, (size_t)n * sizeof *at);
    if (!at) return -1;
    memset(at + c->ndirty_at, 0, (size_t)(n - c->ndirty_at) * sizeof *at);
    c->dirty_at = at;
    c->ndirty_at = n;
  }
  if (c->ndirty + w->nmarks > c->capdirty) {
    uint32_t cap = c->capdirty ? c->capdirty : 1024;
    while (cap < c->ndirty + w->nmarks) cap *= 2;
    storage_mark_update *d = realloc(c->dirty, (size_t)cap * sizeof *d);
    if (!d) return -1;
    c->dirty = d;
    c->capdirty = cap;
  }
  if (2 * (c->ndirty + w->nmarks) > c->capnamed) { /* grown, and filled again from the dirty set */
    uint32_t cap = c->capnamed ? c->capnamed : 2048;
    while (cap < 2 * (c->ndirty + w->nmarks)) cap *= 2;
    uint64_t *named = calloc(cap, sizeof *named);
    if (!named) return -1;
    free(c->named);
    c->named = named;
    c->capnamed = cap;
    char decimal[16];
    for (uint32_t i = 0; i < c->ndirty; i++) name_add(c, storage_device_name(&im->names, c->dirty[i].device, decimal));
  }
  return reserve_fold(c, c->ndirty + w->nmarks);
}

/* After a commit that logged w's marks. Names are not kept: the namer
 * gives them again at the fold. */
static void remember_dirty(pg_conn *c, const storage_rows *w) {
  for (uint32_t i = 0; i < w->nmarks; i++) {
    uint32_t d = w->marks[i].device;
    if (is_dirty(c, d)) {
      c->dirty[c->dirty_at[d] - 1].seq = w->marks[i].seq;
    } else {
      c->dirty[c->ndirty++] = (storage_mark_update){d, NULL, w->marks[i].seq};
      c->dirty_at[d] = c->ndirty;
      name_add(c, w->marks[i].name);
    }
  }
}

static void forget_dirty(pg_conn *c) {
  for (uint32_t i = 0; i < c->ndirty; i++) c->dirty_at[c->dirty[i].device] = 0;
  c->ndirty = 0;
  if (c->capnamed) memset(c->named, 0, c->capnamed * sizeof *c->named);
}

/* The marks a fold writes into c->names and c->seqs: the dirty ones, w's
 * (NULL: none) over them. Returns how many. */
static uint32_t fold_list(const pg_impl *im, pg_conn *c, const storage_rows *w) {
  uint32_t n = 0;
  for (; n < c->ndirty; n++) {
    c->names[n] = storage_device_name(&im->names, c->dirty[n].device, c->decimal[n]);
    c->seqs[n] = c->dirty[n].seq;
  }
  for (uint32_t i = 0; w && i < w->nmarks; i++) {
    uint32_t d = w->marks[i].device;
    uint32_t at = is_dirty(c, d) ? c->dirty_at[d] - 1 : n++;
    c->names[at] = w->marks[i].name;
    c->seqs[at] = w->marks[i].seq;
  }
  return n;
}

/* Reads the results of one query (the COPY, or one of a pipeline) up to
 * the NULL that ends them, or, with sync, the pipeline's sync, which
 * comes alone. Returns 0 when they all succeeded, else the code of the
 * first failure (the rest is left to rollback). */
static int drain(pg_conn *c, int sync, const char *what, char *err, size_t errlen) {
  PGresult *res;
  int r = 0, seen = 0;
  while (!r && (res = PQgetResult(c->pg)) != NULL) {
    ExecStatusType st = PQresultStatus(res);
    int ok = sync ? st == PGRES_PIPELINE_SYNC : st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) r = fail_pg(c, res, what, err, errlen);
    PQclear(res);
    seen = 1;
    if (sync) break;
  }
  return !r && !seen ? fail_pg(c, NULL, what, err, errlen) : r;
}

/* Resolves a write in doubt (see the top): *committed set when its
 * commit happened. 0, -EBUSY while it is still running, or a failure. */
static int doubt_resolve(pg_conn *c, int *committed, char *err, size_t errlen) {
  char txid[24];
  const char *p = txid, *name = c->doubt.device, *v = NULL;
  PGresult *res = NULL;
  *committed = 0;
  snprintf(txid, sizeof txid, "%lld", (long long)c->doubt.txid);
  int r = query_one(c, "xact_status", 1, &p, &res, &v, "commit in doubt", err, errlen);
  if (!r && v && strcmp(v, "in progress") == 0) {
    snprintf(err, errlen, "postgres: the commit of batch #%llu is still in progress in a lost session",
             (unsigned long long)c->doubt.batch_id);
    r = -EBUSY;
  }
  PQclear(res);
  if (r) return r;
  char writer[24], batch_id[24];
  const char *log[2] = {writer, batch_id};
  snprintf(writer, sizeof writer, "%lld", (long long)c->writer);
  snprintf(batch_id, sizeof batch_id, "%lld", (long long)c->doubt.batch_id);
  r = query_one(c, "log_has", 2, log, &res, &v, "commit in doubt", err, errlen);
  *committed = !r && v && strtoll(v, NULL, 10) > 0;
  PQclear(res);
  if (r || *committed) return r;
  r = query_one(c, "mark_get", 1, &name, &res, &v, "commit in doubt", err, errlen); /* the write folded */
  *committed = !r && v && (uint64_t)strtoll(v, NULL, 10) == c->doubt.seq;
  PQclear(res);
  return r;
}

static int same_write(const doubt *d, const storage_rows *w) {
  return d->batch_id == w->batch_id && d->nrows == w->nrows && d->nmarks == w->nmarks && w->nmarks &&
         d->seq == w->marks[0].seq && strcmp(d->device, w->marks[0].name) == 0;
}

/* Drops the session: the server rolls back what it had open, and the
 * next call connects again. */
static void session_drop(pg_conn *c) {
  PQfinish(c->pg);
  c->pg = NULL;
  c->ready = 0;
}

/* After a failed write: the session back to idle, or dropped when its
 * state is anything but a plain failed transaction. */
static void rollback(pg_conn *c) {
  if (!c->pg) return;
  if (PQstatus(c->pg) != CONNECTION_OK || PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF) {
    session_drop(c);
    return;
  }
  if (PQtransactionStatus(c->pg) == PQTRANS_IDLE) return;
  PGresult *res = PQexec(c->pg, "ROLLBACK"); /* discards the results left, first */
  if (PQresultStatus(res) != PGRES_COMMAND_OK) session_drop(c);
  PQclear(res);
}

/* Sends sql, which ends with a COPY (after BEGIN and txid_current(),
 * whose result goes into *txid, for a write's first), and the data. 0 or
 * the code of the first failure. */
static int copy_rows(pg_conn *c, const char *sql, const char *data, size_t len, int64_t *txid, char *err,
                     size_t errlen) {
  PGresult *res;
  int r = 0;
  const char *what = txid ? "begin" : "copy";
  if (!PQsendQuery(c->pg, sql)) return fail_pg(c, NULL, what, err, errlen);
  /* BEGIN's result, txid_current()'s, then COPY's invitation. */
  while ((res = PQgetResult(c->pg)) != NULL) {
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK && PQntuples(res) == 1 && txid) *txid = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    if (st == PGRES_COPY_IN) break;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      r = fail_pg(c, res, what, err, errlen);
      break;
    }
    PQclear(res);
  }
  if (!r && !res) r = fail_pg(c, NULL, "copy", err, errlen);
  PQclear(res);
  if (r) return r;
  if (PQputCopyData(c->pg, data, (int)len) != 1 || PQputCopyEnd(c->pg, NULL) != 1)
    return fail_pg(c, NULL, "copy", err, errlen);
  return drain(c, 0, "copy", err, errlen);
}

/* BEGIN, COPY the rows, log the marks (and fold), COMMIT. */
static int write_transaction(const pg_impl *im, pg_conn *c, const storage_rows *w, int fold, char *err, size_t errlen) {
  int r = 0;
  int64_t txid = 0;
  /* Everything is encoded before the first message: the server then never
   * waits for this thread mid-transaction, which on a busy machine may not
   * be running. */
  uint32_t nmarks = w->nmarks;
  if (fold) {
    nmarks = fold_list(im, c, w);
  } else {
    for (uint32_t i = 0; i < nmarks; i++) {
      c->names[i] = w->marks[i].name;
      c->seqs[i] = w->marks[i].seq;
    }
  }
  size_t n = 0, off[2];
  for (uint32_t g = 0; g < c->ngroups && (g == 0 || n); g++) n = copy_data(im, c, w, &c->groups[g], n);
  int len[4] = {8, 8};
  if (n == 0 || marks_arrays(c, n, c->names, c->seqs, nmarks, off, &len[2])) {
    snprintf(err, errlen, "postgres: out of memory");
    return -ENOMEM;
  }
  /* The first COPY after BEGIN, in one message; one more per measurement. */
  for (uint32_t g = 0; g < c->ngroups && !r; g++) {
    const write_group *wg = &c->groups[g];
    const char *copy = c->tables[wg->m].copy + (g ? strlen(WRITE_BEGIN) : 0);
    r = copy_rows(c, copy, c->buf + wg->off, wg->len, g ? NULL : &txid, err, errlen);
  }
  if (r) return r;

  char writer[8], batch_id[8];
  put64(writer, (uint64_t)c->writer);
  put64(batch_id, w->batch_id);
  const char *params[4] = {writer, batch_id, c->buf + off[0], c->buf + off[1]};
  const int formats[4] = {1, 1, 1, 1};
  /* Logged, or folded: the fold's parameters are the log's but the batch. */
  const char *fold_params[3] = {writer, params[2], params[3]};
  const int fold_len[3] = {8, len[2], len[3]};
  /* From here the commit may happen without our hearing of it. */
  c->doubt = (doubt){.active = 1,
                     .fold = fold,
                     .txid = txid,
                     .batch_id = w->batch_id,
                     .nrows = w->nrows,
                     .nmarks = w->nmarks,
                     .seq = w->marks[0].seq};
  snprintf(c->doubt.device, sizeof c->doubt.device, "%s", w->marks[0].name);
  if (!PQenterPipelineMode(c->pg) ||
      !(fold ? PQsendQueryPrepared(c->pg, "fold", 3, fold_params, fold_len, formats, 0)
             : PQsendQueryPrepared(c->pg, "log_add", 4, params, len, formats, 0)) ||
      !PQsendQueryParams(c->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
    return fail_pg(c, NULL, "high-water mark", err, errlen);
  if (!PQpipelineSync(c->pg)) return fail_pg(c, NULL, "commit", err, errlen);
  const char *steps[] = {fold ? "folding marks" : "high-water mark", "commit"};
  for (int i = 0; i < 2 && !r; i++) r = drain(c, 0, steps[i], err, errlen);
  if (!r) r = drain(c, 1, "commit", err, errlen);
  /* Heard back on a live session: committed, or failed before the commit
   * was made. A session that ended (even with an error sent first, as a
   * server shutting down does) leaves it in doubt. */
  if (c->ready) c->doubt.active = 0;
  if (!r && !PQexitPipelineMode(c->pg)) r = fail_pg(c, NULL, "commit", err, errlen);
  return r;
}

/* After a commit of w: its marks are in device_hwm (a fold) or in
 * mark_log, and in the dirty set until the next fold. */
static void committed(pg_conn *c, const storage_rows *w, int fold) {
  if (fold) {
    forget_dirty(c);
    c->since_fold = 0;
  } else {
    remember_dirty(c, w);
    c->since_fold++;
  }
}

static int pg_write(void *impl, int ci, const storage_rows *w, char *err, size_t errlen) {
  pg_impl *im = impl;
  pg_conn *c = &im->conns[ci];
  if (w->nrows == 0) return 0; /* nothing to store, no mark moved */
  if (reserve_dirty(im, c, w)) {
    snprintf(err, errlen, "postgres: out of memory");
    return -ENOMEM;
  }
  int r = session(im, c, err, errlen);
  if (r) return r;
  if (c->doubt.active) {
    int done = 0;
    if ((r = doubt_resolve(c, &done, err, errlen)) != 0) return r;
    c->doubt.active = 0;
    if (done && same_write(&c->doubt, w)) { /* the lost attempt was the commit */
      committed(c, w, c->doubt.fold);
      return 0;
    }
  }
  if (write_groups(im, c, w)) {
    snprintf(err, errlen, "postgres: out of memory");
    return -ENOMEM;
  }
  for (uint32_t g = 0; g < c->ngroups; g++) {
    pg_table *t = table_get(im, c, c->groups[g].m);
    if (t && t->ncols < c->groups[g].ncols && (r = table_extend(im, c, t, &c->groups[g], err, errlen)) != 0) {
      rollback(c);
      return r;
    }
    if (!t || table_copy(im, c, t, &c->groups[g])) {
      snprintf(err, errlen, "postgres: out of memory");
      return -ENOMEM;
    }
  }
  int fold = c->since_fold + 1 >= FOLD_EVERY;
  r = write_transaction(im, c, w, fold, err, errlen);
  if (r) {
    rollback(c);
    return r;
  }
  committed(c, w, fold);
  return 0;
}

/* A connection's mark_log id for this open: random, so that no other
 * writer of the database - another gateway, a run before - has it. */
static int64_t writer_id(int conn) {
  uint64_t id;
  if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
    id = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) << 8 ^ (uint64_t)conn;
  return (int64_t)(id >> 1);
}

static void pg_close(void *impl) {
  pg_impl *im = impl;
  if (!im) return;
  for (int i = 0; i < im->n; i++) {
    pg_conn *c = &im->conns[i];
    /* A clean close leaves mark_log empty; on failure the next open folds. */
    if (c->ready && PQstatus(c->pg) == CONNECTION_OK && c->ndirty) {
      uint32_t n = fold_list(im, c, NULL);
      size_t off[2];
      int len[3] = {8};
      char writer[8];
      put64(writer, (uint64_t)c->writer);
      if (marks_arrays(c, 0, c->names, c->seqs, n, off, &len[1]) == 0) {
        const char *params[3] = {writer, c->buf + off[0], c->buf + off[1]};
        const int formats[3] = {1, 1, 1};
        PQclear(PQexecPrepared(c->pg, "fold", 3, params, len, formats, 0));
      }
    }
    PQfinish(c->pg);
    free(c->buf);
    free(c->dirty);
    free(c->dirty_at);
    free(c->named);
    free(c->names);
    free(c->seqs);
    free(c->decimal);
    for (uint32_t m = 0; m < c->ntables; m++) free(c->tables[m].copy);
    free(c->tables);
    free(c->groups);
    free(c->slot);
  }
  free(im->found);
  free(im->writers);
  free(im->conninfo);
  free(im);
}

static int pg_open(const storage_backend_opts *opts, void **impl, char *err, size_t errlen) {
  pg_impl *im = calloc(1, sizeof *im + (size_t)opts->connections * sizeof im->conns[0]);
  if (!im) return -ENOMEM;
  im->conninfo = strdup(opts->path ? opts->path : "");
  if (!im->conninfo) {
    free(im);
    return -ENOMEM;
  }
  im->synchronous = opts->durability == STORAGE_DURABILITY_FULL;
  im->names = opts->names;
  im->schema = opts->schema;
  im->n = opts->connections;
  int r = 0;
  im->writers = malloc(2 + (size_t)im->n * 21);
  if (!im->writers) {
    pg_close(im);
    return -ENOMEM;
  }
  size_t at = 0;
  for (int i = 0; i < im->n; i++) {
    im->conns[i].writer = writer_id(i);
    at += (size_t)sprintf(im->writers + at, "%c%lld", i ? ',' : '{', (long long)im->conns[i].writer);
  }
  sprintf(im->writers + at, "}");
  pg_conn *first = &im->conns[0];
  if (!(r = session_connect(im, first, err, errlen)) && !(r = tables_open(im, first, opts->reset, err, errlen)) &&
      !(r = exec_ok(first, fold_log, "folding mark_log", err, errlen)))
    r = session_prepare(first, err, errlen);
  for (int i = 1; i < im->n && r == 0; i++) r = session(im, &im->conns[i], err, errlen);
  if (r != 0) {
    pg_close(im);
    return r;
  }
  *impl = im;
  return 0;
}

static int pg_count_rows(void *impl, uint64_t *rows, char *err, size_t errlen) {
  pg_impl *im = impl;
  pg_conn *c = &im->conns[0];
  PGresult *res = NULL;
  const char *v = NULL;
  int r = session(im, c, err, errlen);
  if (!r) r = query_one(c, "count", 0, NULL, &res, &v, "count", err, errlen);
  *rows = v ? strtoull(v, NULL, 10) : 0;
  PQclear(res);
  return r;
}

const storage_backend storage_postgres_backend = {
    .name = "postgres",
    .open = pg_open,
    .mark_load = pg_mark_load,
    .write = pg_write,
    .count_rows = pg_count_rows,
    .close = pg_close,
};
