/* pgcopy.c - the ceiling bench/postgres.sh holds telegate's PostgreSQL
 * backend against: a bare COPY of rows already encoded, with nothing
 * else in its transactions.
 *
 *   pgcopy CONNINFO TABLE FILE [CONNECTIONS [ROWS_PER_TRANSACTION [WHERE]]]
 *
 * FILE is COPY's binary format (psql's \copy TABLE to FILE (format
 * binary)), its first column the device as text. The rows are split over
 * CONNECTIONS sessions by device, as serve routes them (a numeric id
 * modulo the count, any other by a hash), and each session sends its
 * rows in transactions of ROWS_PER_TRANSACTION rows (0, the default: one
 * transaction for all of them): "BEGIN; COPY TABLE FROM STDIN (FORMAT
 * binary)", the rows, COMMIT - the round trips a write of serve's costs,
 * less its marks. WHERE, when given, follows each COPY's options (serve's
 * "WHERE random() >= 0" makes PostgreSQL insert the rows one at a time).
 * Everything is read, split and encoded, and every
 * session connected (with synchronous_commit off, as serve's are), before
 * the clock starts. Prints "rows seconds rows/s". */
#include <endian.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char header[] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
enum { HEADER_LEN = sizeof header - 1 };

typedef struct session {
  PGconn *pg;
  const char *copy; /* "BEGIN; COPY ..." */
  char **chunks;    /* each transaction's COPY data */
  size_t *lens;
  size_t nchunks, cap;
  char *cur; /* the chunk being filled */
  size_t curlen, curcap, currows;
  size_t rows;
  const char *error;
} session;

static void die(const char *what) {
  fprintf(stderr, "pgcopy: %s\n", what);
  exit(1);
}

static uint32_t get32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return be32toh(v);
}

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n);
  if (!p) die("out of memory");
  return p;
}

static void chunk_end(session *s) {
  if (!s->currows) return;
  s->cur = xrealloc(s->cur, s->curlen + 2);
  memcpy(s->cur + s->curlen, "\377\377", 2);
  s->curlen += 2;
  if (s->nchunks == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 64;
    s->chunks = xrealloc(s->chunks, s->cap * sizeof *s->chunks);
    s->lens = xrealloc(s->lens, s->cap * sizeof *s->lens);
  }
  s->chunks[s->nchunks] = s->cur;
  s->lens[s->nchunks++] = s->curlen;
  s->cur = NULL;
  s->curlen = s->curcap = s->currows = 0;
}

static void chunk_add(session *s, const unsigned char *row, size_t len, size_t per) {
  if (!s->cur) {
    s->curcap = 1 << 16;
    s->cur = xrealloc(NULL, s->curcap);
    memcpy(s->cur, header, HEADER_LEN);
    s->curlen = HEADER_LEN;
  }
  if (s->curlen + len + 2 > s->curcap) {
    while (s->curlen + len + 2 > s->curcap) s->curcap *= 2;
    s->cur = xrealloc(s->cur, s->curcap);
  }
  memcpy(s->cur + s->curlen, row, len);
  s->curlen += len;
  s->rows++;
  if (++s->currows == per) chunk_end(s);
}

static int route(const unsigned char *dev, uint32_t len, int n) {
  char *end, buf[32];
  if (len > 0 && len < sizeof buf) {
    memcpy(buf, dev, len);
    buf[len] = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (*end == 0) return (int)(v % (unsigned long)n);
  }
  uint32_t h = 2166136261u;
  for (uint32_t i = 0; i < len; i++) h = (h ^ dev[i]) * 16777619u;
  return (int)(h % (uint32_t)n);
}

static int ok(PGresult *res, ExecStatusType want, session *s) {
  int good = PQresultStatus(res) == want;
  if (!good && !s->error) s->error = strdup(PQresultErrorMessage(res));
  PQclear(res);
  return good;
}

static void *run(void *arg) {
  session *s = arg;
  for (size_t i = 0; i < s->nchunks && !s->error; i++) {
    if (!PQsendQuery(s->pg, s->copy)) break;
    PGresult *res;
    while ((res = PQgetResult(s->pg)) != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) PQclear(res);
    if (!ok(res, PGRES_COPY_IN, s)) break;
    if (PQputCopyData(s->pg, s->chunks[i], (int)s->lens[i]) != 1 || PQputCopyEnd(s->pg, NULL) != 1) break;
    if (!ok(PQgetResult(s->pg), PGRES_COMMAND_OK, s)) break;
    while ((res = PQgetResult(s->pg)) != NULL) PQclear(res);
    if (!ok(PQexec(s->pg, "COMMIT"), PGRES_COMMAND_OK, s)) break;
  }
  if (!s->error && PQstatus(s->pg) != CONNECTION_OK) s->error = "connection lost";
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 7) die("usage: pgcopy CONNINFO TABLE FILE [CONNECTIONS [ROWS_PER_TRANSACTION [WHERE]]]");
  int n = argc > 4 ? atoi(argv[4]) : 1;
  size_t per = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;
  if (n < 1 || n > 64) die("CONNECTIONS: 1 to 64");
  FILE *f = fopen(argv[3], "rb");
  if (!f) die("cannot open FILE");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *data = xrealloc(NULL, (size_t)size + 1);
  if (fread(data, 1, (size_t)size, f) != (size_t)size) die("cannot read FILE");
  fclose(f);
  if (size < HEADER_LEN + 2 || memcmp(data, header, 11) != 0) die("FILE is not COPY's binary format");
  size_t at = HEADER_LEN + get32(data + 15); /* its header extension skipped */

  char copy[512];
  snprintf(copy, sizeof copy, "BEGIN; COPY %s FROM STDIN (FORMAT binary) %s", argv[2], argc > 6 ? argv[6] : "");
  session *ss = calloc((size_t)n, sizeof *ss);
  if (!ss) die("out of memory");
  for (int i = 0; i < n; i++) ss[i].copy = copy;
  size_t rows = 0;
  while (at + 2 <= (size_t)size) {
    uint16_t nf = (uint16_t)(data[at] << 8 | data[at + 1]);
    if (nf == 0xffff) break;
    size_t p = at + 2;
    uint32_t devlen = get32(data + p);
    int to = route(data + p + 4, devlen, n);
    for (uint16_t k = 0; k < nf; k++) {
      uint32_t len = get32(data + p);
      p += 4 + (len == UINT32_MAX ? 0 : len);
      if (p > (size_t)size) die("FILE is cut short");
    }
    chunk_add(&ss[to], data + at, p - at, per);
    rows++;
    at = p;
  }
  free(data);
  for (int i = 0; i < n; i++) {
    chunk_end(&ss[i]);
    ss[i].pg = PQconnectdb(argv[1]);
    if (PQstatus(ss[i].pg) != CONNECTION_OK) die(PQerrorMessage(ss[i].pg));
    if (!ok(PQexec(ss[i].pg, "SET synchronous_commit = off"), PGRES_COMMAND_OK, &ss[i])) die(ss[i].error);
  }

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pthread_t *th = calloc((size_t)n, sizeof *th);
  if (!th) die("out of memory");
  for (int i = 0; i < n; i++)
    if (pthread_create(&th[i], NULL, run, &ss[i])) die("cannot start a thread");
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  for (int i = 0; i < n; i++)
    if (ss[i].error) die(ss[i].error);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%zu %.3f %.0f\n", rows, secs, (double)rows / secs);
  for (int i = 0; i < n; i++) {
    PQfinish(ss[i].pg);
    for (size_t c = 0; c < ss[i].nchunks; c++) free(ss[i].chunks[c]);
    free(ss[i].chunks);
    free(ss[i].lens);
  }
  free(ss);
  free(th);
  return 0;
}
