/* schema-bench.c - how to store readings with any fields in SQLite, and
 * what each way costs: the rows per second one connection commits in
 * transactions of 1,000 readings, as the gateway's writer does, for
 * readings of the article's three fields and for readings of twelve
 * (Telegraf's cpu plugin sends ten fields and two tags).
 *
 *   wide     one column per field, added as fields appear (ALTER TABLE
 *            ADD COLUMN): today's schema for three fields; absent fields
 *            are NULL, which a row stores in one byte of its header
 *   narrow   one row per field: (device, seq, ts_ms, field, value)
 *   json     one TEXT column holding the fields as a JSON object,
 *            queried with JSON1's json_extract / ->>
 *
 * Then one query per schema, on an index made after the inserts: the
 * mean of one field of one device over all its rows, as a dashboard's
 * history would ask.
 *
 *   cc -O2 -o schema-bench bench/schema-bench.c -lsqlite3
 *   ./schema-bench [readings] [dir]     # 1,000,000 in /tmp by default
 *
 * journal_mode=WAL, synchronous=NORMAL, multi-row INSERTs of 32 rows, as
 * storage_sqlite.c writes. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BATCH = 1000, ROWS = 32, DEVICES = 1000, MAXF = 12 };

static const char *const names[MAXF] = {"temperature", "humidity", "battery",    "usage_user",
                                        "usage_system", "usage_idle", "usage_iowait", "usage_irq",
                                        "usage_softirq", "usage_steal", "usage_guest", "usage_nice"};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "%s: %s\n", sql, err);
    exit(1);
  }
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
    exit(1);
  }
  return st;
}

/* "INSERT INTO t(cols) VALUES (?,..),(?,..)..." for n rows of k params. */
static char *many(const char *head, int n, int k) {
  size_t cap = strlen(head) + (size_t)n * ((size_t)k * 2 + 4) + 1;
  char *s = malloc(cap), *p = s;
  p += sprintf(p, "%s", head);
  for (int i = 0; i < n; i++) {
    *p++ = i ? ',' : ' ';
    *p++ = '(';
    for (int j = 0; j < k; j++) p += sprintf(p, j ? ",?" : "?");
    *p++ = ')';
  }
  *p = 0;
  return s;
}

static double value(long i, int f) { return (double)((i * 7 + f * 13) % 1000) / 10.0; }

typedef enum { WIDE, NARROW, JSON } schema;
static const char *const schema_names[] = {"wide", "narrow", "json"};

static double run(sqlite3 *db, schema s, int nf, long n) {
  char head[1024], cols[512] = "";
  int k;
  if (s == WIDE) {
    for (int f = 0; f < nf; f++) strcat(strcat(cols, ", "), names[f]);
    snprintf(head, sizeof head, "INSERT INTO readings(device, seq, ts_ms%s) VALUES", cols);
    k = 3 + nf;
  } else if (s == NARROW) {
    snprintf(head, sizeof head, "INSERT INTO points(device, seq, ts_ms, field, value) VALUES");
    k = 5;
  } else {
    snprintf(head, sizeof head, "INSERT INTO readings_json(device, seq, ts_ms, fields) VALUES");
    k = 4;
  }
  char *sql = many(head, ROWS, k);
  sqlite3_stmt *st = prepare(db, sql);
  free(sql);
  char json[1024];
  double t0 = now_s();
  long pending = 0; /* rows bound in st */
  int param = 1;
  exec(db, "BEGIN");
  for (long i = 0; i < n; i++) {
    long dev = i % DEVICES, seq = i / DEVICES + 1;
    int per = s == NARROW ? nf : 1;
    for (int r = 0; r < per; r++) {
      sqlite3_bind_int64(st, param++, dev);
      sqlite3_bind_int64(st, param++, seq);
      sqlite3_bind_int64(st, param++, 1732590000000 + i);
      if (s == WIDE) {
        for (int f = 0; f < nf; f++)
          if (f == 2)
            sqlite3_bind_int64(st, param++, (i % 101));
          else
            sqlite3_bind_double(st, param++, value(i, f));
      } else if (s == NARROW) {
        sqlite3_bind_int(st, param++, r + 1);
        sqlite3_bind_double(st, param++, value(i, r));
      } else {
        char *p = json;
        *p++ = '{';
        for (int f = 0; f < nf; f++)
          if (f == 2)
            p += sprintf(p, ",\"%s\":%ld", names[f], i % 101);
          else
            p += sprintf(p, "%s\"%s\":%.1f", f ? "," : "", names[f], value(i, f));
        *p++ = '}';
        sqlite3_bind_text(st, param++, json, (int)(p - json), SQLITE_TRANSIENT);
      }
      if (++pending == ROWS) {
        if (sqlite3_step(st) != SQLITE_DONE) {
          fprintf(stderr, "step: %s\n", sqlite3_errmsg(db));
          exit(1);
        }
        sqlite3_reset(st);
        pending = 0;
        param = 1;
      }
    }
    if ((i + 1) % BATCH == 0) {
      exec(db, "COMMIT");
      exec(db, "BEGIN");
    }
  }
  exec(db, "COMMIT");
  sqlite3_finalize(st);
  return (double)n / (now_s() - t0);
}

static double query(sqlite3 *db, schema s) {
  const char *sql = s == WIDE     ? "SELECT avg(humidity) FROM readings WHERE device = 7"
                    : s == NARROW ? "SELECT avg(value) FROM points WHERE device = 7 AND field = 2"
                                  : "SELECT avg(fields->>'humidity') FROM readings_json WHERE device = 7";
  sqlite3_stmt *st = prepare(db, sql);
  double t0 = now_s();
  if (sqlite3_step(st) != SQLITE_ROW) exit(1);
  double ms = (now_s() - t0) * 1000;
  sqlite3_finalize(st);
  return ms;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  const char *dir = argc > 2 ? argv[2] : "/tmp";
  printf("%ld readings of %d devices, transactions of %d, %d-row INSERTs\n", n, DEVICES, BATCH, ROWS);
  printf("| schema | fields | readings/s | MB on disk | mean of one field of one device |\n|---|---:|---:|---:|---:|\n");
  for (int nf = 3; nf <= MAXF; nf += MAXF - 3) {
    for (schema s = WIDE; s <= JSON; s++) {
      char path[512];
      snprintf(path, sizeof path, "%s/schema-bench-%d.db", dir, getpid());
      unlink(path);
      sqlite3 *db;
      if (sqlite3_open(path, &db) != SQLITE_OK) return 1;
      exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
      char ddl[1024] = "CREATE TABLE readings(device INTEGER, seq INTEGER, ts_ms INTEGER";
      for (int f = 0; f < MAXF; f++) strcat(strcat(ddl, ", "), names[f]); /* typeless: values keep their type */
      strcat(ddl, "); CREATE TABLE points(device INTEGER, seq INTEGER, ts_ms INTEGER, field INTEGER, value);"
                  "CREATE TABLE readings_json(device INTEGER, seq INTEGER, ts_ms INTEGER, fields TEXT);");
      exec(db, ddl);
      double rate = run(db, s, nf, n);
      /* The query's index, made after the timed inserts: what an index
       * costs the writer is another question (bench/ingest.sh). */
      exec(db, "CREATE INDEX r_dev ON readings(device, ts_ms); CREATE INDEX p_dev ON points(device, field, ts_ms);"
               "CREATE INDEX j_dev ON readings_json(device, ts_ms);");
      double ms = query(db, s);
      sqlite3_close(db);
      char wal[520];
      snprintf(wal, sizeof wal, "%s-wal", path);
      FILE *f = fopen(path, "r");
      fseek(f, 0, SEEK_END);
      double mb = (double)ftell(f) / 1e6;
      fclose(f);
      printf("| %s | %d | %.0f | %.0f | %.1f ms |\n", schema_names[s], nf, rate, mb, ms);
      fflush(stdout);
      unlink(path);
      unlink(wal);
    }
  }
  return 0;
}
