/* test-http-history.c - the real `telegate serve` with real SQLite: the
 * readings endpoint returns exactly what was stored (compared with the
 * database read after serve stopped), picks fields, pages, writes CSV
 * and buckets, and refuses bad parameters with 400 naming them;
 * --retention deletes what is older and only that, marks kept;
 * --stale-after shows a silent device stale in /api/snapshot and
 * /metrics. Readings are sent by hand over TCP with the timestamps each
 * case needs, so nothing waits on the wall clock. */
#include "test-serve-process.h"

#include <poll.h>
#include <stdint.h>

/* GET path from serve's HTTP port: the status, the body into body. */
static int http_get(const proc *p, const char *path, char *body, size_t cap) {
  char req[1024], resp[1 << 20];
  size_t len = 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->http_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
  ck_assert_int_eq(write(fd, req, (size_t)n), n);
  ssize_t r;
  while (len < sizeof resp - 1 && (r = read(fd, resp + len, sizeof resp - 1 - len)) > 0) len += (size_t)r;
  close(fd);
  resp[len] = '\0';
  int status = 0;
  ck_assert_int_eq(sscanf(resp, "HTTP/1.1 %d", &status), 1);
  const char *at = strstr(resp, "\r\n\r\n");
  ck_assert_ptr_nonnull(at);
  snprintf(body, cap, "%s", at + 4);
  return status;
}

static cJSON *get_json(const proc *p, const char *path, int want_status) {
  static char body[1 << 20];
  int status = http_get(p, path, body, sizeof body);
  ck_assert_msg(status == want_status, "%s: %d, not %d: %s", path, status, want_status, body);
  cJSON *j = cJSON_Parse(body);
  ck_assert_msg(j != NULL, "%s: not JSON: %s", path, body);
  return j;
}

/* Sends lines to serve's device port, then reads its acks until it
 * closes: every line has been read by then. */
static void send_lines(int port, const char *lines) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  size_t len = strlen(lines), off = 0;
  while (off < len) {
    ssize_t w = write(fd, lines + off, len - off);
    ck_assert_int_gt(w, 0);
    off += (size_t)w;
  }
  shutdown(fd, SHUT_WR);
  char buf[4096];
  while (read(fd, buf, sizeof buf) > 0) {
  }
  close(fd);
}

/* One reading's line; temperature and humidity vary with seq. */
static size_t reading_line(char *out, size_t cap, const char *device, int seq, int64_t ts) {
  return (size_t)snprintf(out, cap,
                          "{\"device\":\"%s\",\"seq\":%d,\"ts\":%lld,\"temperature\":%.1f,\"humidity\":%.2f,"
                          "\"battery\":%d}\n",
                          device, seq, (long long)ts, 10.0 + seq * 0.5, 40.25 + seq, 100 - seq);
}

enum { N = 30 };
static const int64_t T0 = 1732590000000; /* ts of seq 1; one reading a second */

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  ck_assert_msg(cJSON_IsNumber(v), "no number %s", k);
  return v->valuedouble;
}

START_TEST(test_history_as_stored) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  int port = serve_proc_start(&d, &serve, 0, NULL);
  static char lines[1 << 16];
  size_t at = 0;
  for (int i = 1; i <= N; i++) {
    at += reading_line(lines + at, sizeof lines - at, "dev-a", i, T0 + (i - 1) * 1000);
    at += reading_line(lines + at, sizeof lines - at, "b", i, T0 + (i - 1) * 1000);
  }
  send_lines(port, lines);
  serve_wait_stored(&serve, 2 * N);

  /* Everything of one device, in ts order (its id percent-encoded). */
  cJSON *all = get_json(&serve, "/api/devices/dev%2Da/readings", 200);
  ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(all, "device")->valuestring, "dev-a");
  ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(all, "next")));
  const cJSON *rows = cJSON_GetObjectItemCaseSensitive(all, "readings");
  ck_assert_int_eq(cJSON_GetArraySize(rows), N);
  for (int i = 0; i < N; i++) {
    const cJSON *r = cJSON_GetArrayItem(rows, i);
    ck_assert_int_eq((int)num(r, "seq"), i + 1);
    ck_assert(num(r, "ts") == (double)(T0 + i * 1000));
    ck_assert(num(r, "temperature") == 10.0 + (i + 1) * 0.5);
    ck_assert(num(r, "humidity") == 40.25 + (i + 1));
    ck_assert_int_eq((int)num(r, "battery"), 100 - (i + 1));
  }

  /* fields=, from/to (RFC 3339 and Unix ms), a page at a time. */
  cJSON *one =
      get_json(&serve, "/api/devices/b/readings?fields=humidity&from=2024-11-26T03:00:05Z&to=1732590010000", 200);
  rows = cJSON_GetObjectItemCaseSensitive(one, "readings");
  ck_assert_int_eq(cJSON_GetArraySize(rows), 5); /* ts 5 s .. 9 s: seqs 6..10 */
  const cJSON *first = cJSON_GetArrayItem(rows, 0);
  ck_assert_int_eq((int)num(first, "seq"), 6);
  ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(first, "temperature"));
  ck_assert(num(first, "humidity") == 46.25);
  cJSON_Delete(one);
  char path[256], next[64] = "";
  int seen = 0;
  for (int page = 0; page < N; page++) {
    snprintf(path, sizeof path, "/api/devices/b/readings?limit=7%s%s", next[0] ? "&after=" : "", next);
    cJSON *p = get_json(&serve, path, 200);
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(p, "readings")) ck_assert_int_eq((int)num(r, "seq"), ++seen);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(p, "next");
    snprintf(next, sizeof next, "%s", cJSON_IsString(n) ? n->valuestring : "");
    cJSON_Delete(p);
    if (!next[0]) break;
  }
  ck_assert_int_eq(seen, N);

  /* CSV, and buckets of 10 s: 10 readings each. */
  static char body[1 << 16];
  ck_assert_int_eq(http_get(&serve, "/api/devices/b/readings?format=csv&fields=battery,temperature", body, sizeof body),
                   200);
  ck_assert_msg(strncmp(body, "ts,seq,battery,temperature\r\n1732590000000,1,99,10.5\r\n", 52) == 0, "%s", body);
  int csv_lines = 0;
  for (const char *p = body; (p = strchr(p, '\n')); p++) csv_lines++;
  ck_assert_int_eq(csv_lines, N + 1);
  cJSON *b = get_json(&serve, "/api/devices/b/readings?every=10s&fields=temperature", 200);
  const cJSON *buckets = cJSON_GetObjectItemCaseSensitive(b, "buckets");
  ck_assert_int_eq(cJSON_GetArraySize(buckets), 3);
  const cJSON *b0 = cJSON_GetArrayItem(buckets, 0), *t = cJSON_GetObjectItemCaseSensitive(b0, "temperature");
  ck_assert(num(b0, "ts") == (double)T0);
  ck_assert_int_eq((int)num(b0, "count"), 10);
  ck_assert(num(t, "min") == 10.5 && num(t, "max") == 15.0 && num(t, "mean") == 12.75);
  cJSON_Delete(b);

  /* Errors: 400 with the reason; an unknown field named. */
  cJSON *e = get_json(&serve, "/api/devices/b/readings?fields=temperature,pressure", 400);
  ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(e, "field")->valuestring, "pressure");
  ck_assert_ptr_nonnull(strstr(cJSON_GetObjectItemCaseSensitive(e, "error")->valuestring, "pressure"));
  cJSON_Delete(e);
  static const char *const bad[] = {
      "from=yesterday", "to=2026-13-01T00:00:00Z", "limit=0", "limit=100000", "every=1w", "after=x", "format=xml",
      "from=5&to=5"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(path, sizeof path, "/api/devices/b/readings?%s", bad[i]);
    cJSON_Delete(get_json(&serve, path, 400));
  }
  cJSON *none = get_json(&serve, "/api/devices/nobody/readings", 200);
  ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(none, "readings")), 0);
  cJSON_Delete(none);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);

  /* What the endpoint said is what the database holds. */
  sqlite3 *db;
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "SELECT seq, ts_ms, temperature, humidity, battery FROM readings "
                                      "WHERE device = 'dev-a' ORDER BY ts_ms",
                                      -1, &st, NULL),
                   SQLITE_OK);
  rows = cJSON_GetObjectItemCaseSensitive(all, "readings");
  int i = 0;
  for (; sqlite3_step(st) == SQLITE_ROW; i++) {
    const cJSON *r = cJSON_GetArrayItem(rows, i);
    ck_assert_ptr_nonnull(r);
    ck_assert(num(r, "seq") == (double)sqlite3_column_int64(st, 0));
    ck_assert(num(r, "ts") == (double)sqlite3_column_int64(st, 1));
    ck_assert(num(r, "temperature") == sqlite3_column_double(st, 2));
    ck_assert(num(r, "humidity") == sqlite3_column_double(st, 3));
    ck_assert(num(r, "battery") == (double)sqlite3_column_int64(st, 4));
  }
  ck_assert_int_eq(i, N);
  sqlite3_finalize(st);
  sqlite3_close(db);
  cJSON_Delete(all);
  proc_dir_cleanup(&d);
}
END_TEST

static int64_t unix_ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

START_TEST(test_retention_deletes_only_older) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  int port = serve_proc_start(&d, &serve, 0, (const char *const[]){"--retention", "10s", NULL});
  static char lines[1 << 16];
  size_t at = 0;
  int64_t now = unix_ms_now();
  /* 20 readings an hour old, then 10 an hour ahead: only the first go. */
  for (int i = 1; i <= 30; i++)
    at += reading_line(lines + at, sizeof lines - at, "r", i, i <= 20 ? now - 3600000 + i : now + 3600000 + i);
  at += reading_line(lines + at, sizeof lines - at, "keep", 1, now + 3600000);
  /* Another measurement's table too: 5 old, then 5 ahead. */
  for (int i = 1; i <= 10; i++)
    at += (size_t)snprintf(lines + at, sizeof lines - at,
                           "{\"measurement\":\"env\",\"device\":\"e\",\"ts\":%lld,\"co2\":%d}\n",
                           (long long)(i <= 5 ? now - 3600000 + i : now + 3600000 + i), 400 + i);
  send_lines(port, lines);
  serve_wait_stored(&serve, 41);
  int64_t deleted = -1;
  for (int i = 0;
       i < PROC_PATIENCE_MS / 20 && (deleted = serve_metric(&serve, "telegate_retention_deleted_total")) < 25; i++)
    proc_sleep_ms(20);
  ck_assert_int_eq(deleted, 25);
  cJSON *h = get_json(&serve, "/api/devices/r/readings", 200);
  const cJSON *rows = cJSON_GetObjectItemCaseSensitive(h, "readings");
  ck_assert_int_eq(cJSON_GetArraySize(rows), 10);
  ck_assert_int_eq((int)num(cJSON_GetArrayItem(rows, 0), "seq"), 21);
  cJSON_Delete(h);
  ck_assert_int_eq(serve_metric(&serve, "telegate_retention_deleted_total"), 25);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);

  sqlite3 *db;
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "SELECT (SELECT COUNT(*) FROM readings WHERE device = 'r'), (SELECT MIN(seq) "
                                      "FROM readings WHERE device = 'r'), (SELECT COUNT(*) FROM readings WHERE "
                                      "device = 'keep'), (SELECT seq FROM device_hwm WHERE device = 'r'), "
                                      "(SELECT COUNT(*) FROM env), (SELECT MIN(co2) FROM env)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_int_eq(sqlite3_column_int(st, 0), 10);
  ck_assert_int_eq(sqlite3_column_int(st, 1), 21);
  ck_assert_int_eq(sqlite3_column_int(st, 2), 1);
  ck_assert_int_eq(sqlite3_column_int(st, 3), 30); /* the mark stays */
  ck_assert_int_eq(sqlite3_column_int(st, 4), 5);  /* env's young half */
  ck_assert_int_eq(sqlite3_column_int(st, 5), 406);
  sqlite3_finalize(st);
  sqlite3_close(db);
  proc_dir_cleanup(&d);
}
END_TEST

/* Reads the stream into buf (cap bytes, *got so far) until after, found
 * from the start, is followed by want; bounded. Returns where after is. */
static const char *stream_until(int fd, char *buf, size_t cap, size_t *got, const char *after, const char *want) {
  const char *at = NULL;
  for (int i = 0; i < PROC_PATIENCE_MS / 100 && !(at && strstr(at, want)); i++) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 100) == 1) {
      ssize_t r = read(fd, buf + *got, cap - 1 - *got);
      ck_assert_int_gt(r, 0);
      *got += (size_t)r;
      buf[*got] = '\0';
    }
    at = strstr(buf, after);
  }
  ck_assert_msg(at && strstr(at, want), "the stream has no %s then %s: %s", after, want, buf);
  return at;
}

START_TEST(test_stale_device_shown_stale) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  int port = serve_proc_start(&d, &serve, 0, (const char *const[]){"--stale-after", "300ms", NULL});
  /* A stream of deltas, open before the device sends: every event after
   * the first (the empty snapshot) is a delta. */
  int stream = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)serve.http_port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(stream, (struct sockaddr *)&sa, sizeof sa), 0);
  static const char get[] = "GET /api/stream?deltas=1&pipeline_ms=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  ck_assert_int_eq(write(stream, get, sizeof get - 1), (ssize_t)sizeof get - 1);
  static char events[1 << 16];
  size_t got = 0;
  stream_until(stream, events, sizeof events, &got, "event: snapshot", "\n\n");
  char line[256];
  reading_line(line, sizeof line, "s", 1, unix_ms_now());
  send_lines(port, line);
  serve_wait_stored(&serve, 1);
  /* No reading comes any more: the device turns stale on its own. */
  int stale = 0;
  cJSON *snap = NULL;
  for (int i = 0; i < PROC_PATIENCE_MS / 20 && !stale; i++) {
    cJSON_Delete(snap);
    snap = get_json(&serve, "/api/snapshot", 200);
    const cJSON *dev = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(snap, "devices"), 0);
    stale = dev && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(dev, "stale"));
    if (!stale) proc_sleep_ms(20);
  }
  ck_assert_msg(stale, "the device is not shown stale");
  ck_assert_int_eq((int)num(snap, "stale_devices"), 1);
  ck_assert_int_eq((int)num(snap, "active_devices"), 0);
  ck_assert_int_eq((int)num(snap, "stale_after_ms"), 300);
  const cJSON *dev = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(snap, "devices"), 0);
  ck_assert_int_gt((int)num(dev, "age_ms"), 300);
  cJSON_Delete(snap);
  ck_assert_int_eq(serve_metric(&serve, "telegate_devices_stale"), 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_devices_active"), 0);
  /* The stream says so in a delta, though the device sent nothing. */
  stream_until(stream, events, sizeof events, &got, "event: delta", "\"stale\":true");
  close(stream);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  proc_dir_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("http-history");
  tg_test_add(s, "as_stored", test_history_as_stored, 120);
  tg_test_add(s, "retention", test_retention_deletes_only_older, 120);
  tg_test_add(s, "stale", test_stale_device_shown_stale, 120);
  return tg_test_main(s);
}
