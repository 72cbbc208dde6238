/* test-http-security.c - the HTTP side against clients that mean harm,
 * over loopback: slow and idle connections from one address while
 * another address probes /readyz, the per-client cap, the head deadline,
 * Host, Origin and Sec-Fetch-Site, bearer tokens from files, snapshot
 * paging, and a stream that never reads against a small memory limit. */
#include "test-http.h"

#include "api_tokens.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

static cJSON *json_of(const response *r) {
  cJSON *j = cJSON_Parse(r->body.data);
  ck_assert_msg(j != NULL, "not JSON: %s", r->body.data);
  return j;
}

static int int_of(const cJSON *j, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", key);
  return (int)v->valuedouble;
}

/* A client connected from `source` (127.0.0.2: another address of the
 * loopback), so the per-client cap counts it apart. */
static void cl_connect_from(client *c, const char *source, int port) {
  memset(c, 0, sizeof *c);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  inet_pton(AF_INET, source, &sa.sin_addr);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  sa.sin_port = htons((uint16_t)port);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0); /* loopback: at once */
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  ck_assert_int_eq(tg_tcp_open(&c->sock, fd), 0);
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
}

static http_server_stats stats_of(fixture *f) {
  http_server_stats h;
  api_server_stats(f->api, &h, NULL, NULL);
  return h;
}

/* ------------------------------------------------------------ slowloris */

/* 40 connections from 127.0.0.1 that send half a request head and then
 * nothing: 8 hold slots (the per-client cap), the rest are refused at
 * once; a client from 127.0.0.2 gets /readyz and /metrics meanwhile; the
 * 8 are answered 408 once their head is overdue. */
static void *slowloris_body(void *arg) {
  (void)arg;
  enum { ATTACKERS = 40, CAP = 8 };
  fixture f;
  fx_init(&f, 16, 1);
  f.cfg.http.max_connections = 32;
  f.cfg.http.max_per_client = CAP;
  f.cfg.http.header_timeout_ms = 3000;
  fx_start(&f);
  client *slow = calloc(ATTACKERS, sizeof *slow);
  for (int i = 0; i < ATTACKERS; i++) {
    static const char half[] = "GET /readyz HTTP/1.1\r\nHost: t\r\nX-Slow: "; /* never finished */
    cl_connect(&slow[i], f.port);
    tg_tcp_write(slow[i].sock, half, sizeof half - 1); /* a refused one may be closed already */
  }
  int64_t deadline = tg_deadline_in(TG_SEC(30));
  while (stats_of(&f).connections_rejected_per_client < ATTACKERS - CAP && tg_now() < deadline) tg_sleep(TG_MS(2));
  http_server_stats h = stats_of(&f);
  ck_assert_uint_eq(h.connections_rejected_per_client, ATTACKERS - CAP);
  ck_assert_uint_le(h.connections_open, CAP);
  ck_assert_uint_le(h.clients, 1);

  for (int round = 0; round < 3; round++) {
    client probe;
    cl_connect_from(&probe, "127.0.0.2", f.port);
    cl_send(&probe, GET("/readyz") GET("/metrics"));
    ck_assert_int_eq(cl_read(&probe, 2), 0);
    ck_assert_int_eq(probe.r[0].status, 200);
    ck_assert_int_eq(probe.r[1].status, 200);
    ck_assert_ptr_nonnull(strstr(probe.r[1].body.data, "telegate_http_connections_rejected_per_client_total"));
    cl_close(&probe);
  }

  /* the held ones: 408 once the head is overdue, and their slots free */
  int timed_out = 0;
  for (int i = 0; i < ATTACKERS; i++) {
    if (cl_read(&slow[i], 1) == 0 && slow[i].r[0].status == 408) timed_out++;
    cl_close(&slow[i]);
  }
  ck_assert_int_eq(timed_out, CAP);
  ck_assert_uint_ge(stats_of(&f).header_timeouts, CAP);
  free(slow);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_slowloris_other_client_served) { tg_test_run(2, 0, slowloris_body, NULL); }
END_TEST

/* A connection that never sends a byte is closed quietly after the head
 * deadline (it is its first request), and a keep-alive one after the
 * idle timeout. */
static void *idle_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  f.cfg.http.header_timeout_ms = 300;
  f.cfg.http.idle_timeout_ms = 300;
  fx_start(&f);
  client silent, kept;
  cl_connect(&silent, f.port);
  int64_t t0 = tg_now();
  ck_assert_int_eq(cl_wait_closed(&silent), 0);
  ck_assert_int_ge(tg_now() - t0, TG_MS(250));
  cl_close(&silent);
  cl_request(&kept, f.port, GET("/healthz"));
  ck_assert_int_eq(kept.r[0].status, 200);
  ck_assert_int_eq(cl_wait_closed(&kept), 0);
  cl_close(&kept);
  ck_assert_uint_ge(stats_of(&f).idle_closed, 2);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_idle_and_silent_closed) { tg_test_run(1, 0, idle_body, NULL); }
END_TEST

/* ------------------------------------------------------------ origins */

static void expect_status(fixture *f, const char *raw, int status) {
  client c;
  cl_request(&c, f->port, raw);
  ck_assert_msg(c.r[0].status == status, "%s -> %d, want %d: %s", raw, c.r[0].status, status, c.r[0].body.data);
  cl_close(&c);
}

static void *hosts_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  f.cfg.allowed_hosts = "gw.example.org,t";
  fx_start(&f);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", 200);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n", 200);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: GW.example.org:80\r\n\r\n", 200);
  expect_status(&f, "GET /readyz HTTP/1.0\r\n\r\n", 200);
  /* a rebound name, and names that only look like ours */
  expect_status(&f, "GET /api/snapshot HTTP/1.1\r\nHost: attacker.example:8080\r\n\r\n", 421);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: localhost.attacker.example\r\n\r\n", 421);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1.nip.io\r\n\r\n", 421);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: [::1\r\n\r\n", 421);
  /* origins: our own is fine, another is not, nor a cross-site fetch */
  expect_status(&f, "GET /api/stream HTTP/1.1\r\nHost: t:1\r\nOrigin: http://evil.example\r\n\r\n", 403);
  expect_status(&f, "GET /api/snapshot HTTP/1.1\r\nHost: t:1\r\nOrigin: null\r\n\r\n", 403);
  expect_status(&f, "GET /api/snapshot HTTP/1.1\r\nHost: t:1\r\nOrigin: http://t:1\r\n\r\n", 200);
  expect_status(&f, "GET /api/devices/1/health HTTP/1.1\r\nHost: t\r\nSec-Fetch-Site: cross-site\r\n\r\n", 403);
  expect_status(&f, "GET /api/devices/1/health HTTP/1.1\r\nHost: t\r\nSec-Fetch-Site: same-site\r\n\r\n", 403);
  expect_status(&f, "GET /api/devices/1/health HTTP/1.1\r\nHost: t\r\nSec-Fetch-Site: same-origin\r\n\r\n", 200);
  /* a link from another site opens the dashboard, and probes answer anyone */
  expect_status(&f, "GET / HTTP/1.1\r\nHost: t\r\nSec-Fetch-Site: cross-site\r\n\r\n", 200);
  expect_status(&f, "GET /readyz HTTP/1.1\r\nHost: t\r\nOrigin: http://evil.example\r\n\r\n", 200);
  expect_status(&f, "GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n", 421);
  /* no CORS: nothing tells a browser another origin may read */
  client c;
  cl_request(&c, f.port, "GET /api/snapshot HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 200);
  cl_close(&c);
  http_server_stats h = stats_of(&f);
  ck_assert_uint_eq(h.refused_host, 5);
  ck_assert_uint_eq(h.refused_origin, 4);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_host_and_origin) { tg_test_run(1, 0, hosts_body, NULL); }
END_TEST

/* ------------------------------------------------------------ tokens */

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  ck_assert_ptr_nonnull(fp);
  fputs(text, fp);
  fclose(fp);
}

/* sha256("reader") and sha256("admin") */
#define SHA_READER "3d0941964aa3ebdcb00ccef58b1bb399f9f898465e9886d5aec7f31090a0fb30"
#define SHA_ADMIN  "8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918"

static void request_with(fixture *f, const char *path, const char *token, int status) {
  char raw[512];
  if (token)
    snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n", path, token);
  else
    snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
  expect_status(f, raw, status);
}

static void *tokens_body(void *arg) {
  (void)arg;
  char dir[] = "/tmp/telegate-tokens-XXXXXX", rpath[64], apath[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(rpath, sizeof rpath, "%s/read", dir);
  snprintf(apath, sizeof apath, "%s/admin", dir);
  write_file(rpath, "# readers\n" SHA_READER "\n\n");
  write_file(apath, SHA_ADMIN "\n");
  api_tokens *t;
  char err[256];
  ck_assert_int_eq(api_tokens_load(&t, rpath, apath, err, sizeof err), 0);

  fixture f;
  fx_init(&f, 16, 2);
  f.cfg.authorize = api_tokens_authorize;
  f.cfg.authorize_ctx = t;
  fx_start(&f);
  /* open: the probes and the dashboard's files */
  request_with(&f, "/readyz", NULL, 200);
  request_with(&f, "/healthz", NULL, 200);
  request_with(&f, "/", NULL, 200);
  /* read */
  request_with(&f, "/api/snapshot", NULL, 401);
  request_with(&f, "/api/snapshot", "wrong", 401);
  request_with(&f, "/api/snapshot", "reader", 200);
  request_with(&f, "/api/snapshot", "admin", 200);
  request_with(&f, "/metrics", NULL, 401);
  request_with(&f, "/metrics", "reader", 200);
  request_with(&f, "/api/snapshot?access_token=reader", NULL, 200);
  request_with(&f, "/api/pipeline?access_token=wrong", NULL, 401);
  /* admin: the health check writes to a device */
  request_with(&f, "/api/devices/1/health", NULL, 401);
  request_with(&f, "/api/devices/1/health", "readerX", 401);
  request_with(&f, "/api/devices/1/health", "reader", 403);
  request_with(&f, "/api/devices/1/health", "admin", 200);
  client c;
  cl_request(&c, f.port, GET("/api/devices/1/health"));
  ck_assert_int_eq(c.r[0].status, 401);
  cl_close(&c);
  ck_assert_uint_eq(stats_of(&f).refused_token, 8);
  fx_stop(&f);

  /* only an admin file: reads are open, health needs admin */
  api_tokens_free(t);
  ck_assert_int_eq(api_tokens_load(&t, NULL, apath, err, sizeof err), 0);
  ck_assert_int_eq(api_tokens_authorize(t, NULL, API_ACCESS_READ), 0);
  ck_assert_int_eq(api_tokens_authorize(t, NULL, API_ACCESS_ADMIN), -EACCES);
  ck_assert_int_eq(api_tokens_authorize(t, "admin", API_ACCESS_ADMIN), 0);
  api_tokens_free(t);
  /* only a read file: health needs at least a read token */
  ck_assert_int_eq(api_tokens_load(&t, rpath, NULL, err, sizeof err), 0);
  ck_assert_int_eq(api_tokens_authorize(t, NULL, API_ACCESS_ADMIN), -EACCES);
  ck_assert_int_eq(api_tokens_authorize(t, "reader", API_ACCESS_ADMIN), 0);
  api_tokens_free(t);
  /* a file that holds a token itself, not its hash, is refused */
  write_file(rpath, "reader\n");
  ck_assert_int_eq(api_tokens_load(&t, rpath, NULL, err, sizeof err), TG_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, ":1:"));
  ck_assert_int_eq(api_tokens_load(&t, "/nonexistent/tokens", NULL, err, sizeof err), -ENOENT);
  unlink(rpath);
  unlink(apath);
  rmdir(dir);
  return NULL;
}

START_TEST(test_http_tokens) { tg_test_run(1, 0, tokens_body, NULL); }
END_TEST

/* ------------------------------------------------------------ paging */

/* Walks the snapshot's devices page by page; returns how many pages. */
static int walk(fixture *f, int limit, uint32_t ndevices) {
  uint32_t expect_next = 1;
  int pages = 0;
  char path[96];
  snprintf(path, sizeof path, "/api/snapshot?limit=%d", limit);
  for (;;) {
    client c;
    char raw[160];
    snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    cl_request(&c, f->port, raw);
    ck_assert_int_eq(c.r[0].status, 200);
    cJSON *j = json_of(&c.r[0]);
    ck_assert_int_eq(int_of(j, "ndevices"), (int)ndevices);
    const cJSON *devs = cJSON_GetObjectItem(j, "devices");
    int n = cJSON_GetArraySize(devs);
    ck_assert_int_le(n, limit);
    for (int i = 0; i < n; i++) ck_assert_int_eq(int_of(cJSON_GetArrayItem(devs, i), "id"), (int)expect_next++);
    pages++;
    const cJSON *next = cJSON_GetObjectItem(j, "next_after");
    if (cJSON_IsNull(next)) {
      cJSON_Delete(j);
      cl_close(&c);
      break;
    }
    ck_assert_int_eq(n, limit);
    snprintf(path, sizeof path, "/api/snapshot?limit=%d&after=%d", limit, (int)next->valuedouble);
    cJSON_Delete(j);
    cl_close(&c);
  }
  ck_assert_uint_eq(expect_next, ndevices + 1);
  return pages;
}

static void *paging_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 25);
  f.cfg.snapshot_page = 10;
  f.cfg.snapshot_page_max = 20;
  fx_start(&f);
  fx_publish(&f);
  ck_assert_int_eq(walk(&f, 10, 25), 3);
  ck_assert_int_eq(walk(&f, 5, 25), 5); /* the last page is full: it says null, nothing more */
  ck_assert_int_eq(walk(&f, 20, 25), 2);
  client c;
  cl_request(&c, f.port, GET("/api/snapshot")); /* the default page */
  cJSON *j = json_of(&c.r[0]);
  ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "devices")), 10);
  ck_assert_int_eq(int_of(j, "next_after"), 10);
  cJSON_Delete(j);
  cl_close(&c);
  cl_request(&c, f.port, GET("/api/snapshot?device=17"));
  j = json_of(&c.r[0]);
  const cJSON *devs = cJSON_GetObjectItem(j, "devices");
  ck_assert_int_eq(cJSON_GetArraySize(devs), 1);
  ck_assert_int_eq(int_of(cJSON_GetArrayItem(devs, 0), "id"), 17);
  ck_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "next_after")));
  cJSON_Delete(j);
  cl_close(&c);
  cl_request(&c, f.port, GET("/api/snapshot?after=1000"));
  j = json_of(&c.r[0]);
  ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "devices")), 0);
  cJSON_Delete(j);
  cl_close(&c);
  expect_status(&f, GET("/api/snapshot?limit=0"), 400);
  expect_status(&f, GET("/api/snapshot?limit=21"), 400);
  expect_status(&f, GET("/api/snapshot?after=-1"), 400);
  expect_status(&f, GET("/api/snapshot?after=x"), 400);
  expect_status(&f, GET("/api/snapshot?device="), 400);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_snapshot_paging) { tg_test_run(1, 0, paging_body, NULL); }
END_TEST

/* ------------------------------------------------------------ streams */

static stream_figures streams_of(fixture *f) {
  stream_figures st;
  api_server_stats(f->api, NULL, &st, NULL);
  return st;
}

/* Streams that never read, each stuck on a different version, against a
 * JSON limit of about two snapshots: what they hold stays under the
 * limit plus one snapshot (the others' events are put off), each is
 * dropped at the write deadline, and then only the cached JSON is left. */
static void *never_reads_body(void *arg) {
  (void)arg;
  enum { STREAMS = 6 };
  fixture f;
  fx_init(&f, 4, FX_MAX_DEVICES);
  f.cfg.http.send_buffer = 4096;
  f.cfg.http.write_timeout_ms = 400;
  f.cfg.http.max_per_client = STREAMS + 2;
  fx_start(&f);
  fx_publish(&f);
  client c;
  cl_request(&c, f.port, GET("/api/snapshot?limit=10000"));
  size_t one = c.r[0].body.len; /* about one snapshot's JSON, with the figures */
  cl_close(&c);
  /* the limit: two snapshots */
  api_server_stop(f.api);
  f.cfg.sse_json_max_bytes = 2 * one;
  fx_start(&f);

  client s[STREAMS];
  for (int i = 0; i < STREAMS; i++) {
    memset(&s[i], 0, sizeof s[i]);
    int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    ck_assert_int_eq(tg_tcp_open(&s[i].sock, fd), 0);
    cl_send(&s[i], GET("/api/stream"));
    /* its first event is on its way, or put off: the next one gets a newer version */
    int64_t until = tg_deadline_in(TG_SEC(30));
    stream_figures now;
    while ((now = streams_of(&f), now.json_builds + now.deferred) < (uint64_t)i + 1 && tg_now() < until)
      tg_sleep(TG_MS(1));
    fx_publish(&f);
  }
  uint64_t most = 0;
  int64_t deadline = tg_deadline_in(TG_SEC(60));
  while (streams_of(&f).dropped < STREAMS && tg_now() < deadline) {
    fx_publish(&f);
    uint64_t held = streams_of(&f).json_bytes;
    if (held > most) most = held;
    tg_sleep(TG_MS(5));
  }
  stream_figures st = streams_of(&f);
  ck_assert_uint_gt(st.deferred, 0);
  ck_assert_uint_eq(st.dropped, STREAMS);
  ck_assert_uint_le(most, 3 * one);
  ck_assert_uint_le(st.json_builds, f.version); /* at most once per version, not per stream */
  deadline = tg_deadline_in(TG_SEC(30));
  while (streams_of(&f).clients > 0 && tg_now() < deadline) tg_sleep(TG_MS(2));
  ck_assert_uint_le(streams_of(&f).json_bytes, one); /* the cached one, at most */
  for (int i = 0; i < STREAMS; i++) cl_close(&s[i]);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_stream_never_reads_bounded) { tg_test_run(2, 0, never_reads_body, NULL); }
END_TEST

/* ------------------------------------------------------------ deltas */

/* The aggregator's step for one device only: its last reading is now. */
static uint64_t publish_one(fixture *f, uint32_t device) {
  f->version++;
  int64_t at = (int64_t)f->version * 10;
  device_metrics *m = &f->devices[device - 1];
  m->count++;
  m->last_seq = m->count;
  m->last_seen_ms = at;
  system_snapshot *s = snapshot_new(&f->counters, f->version, at, f->version, f->devices, f->ndevices);
  ck_assert_ptr_nonnull(s);
  snapshot_ref(s);
  tg_watch_send(f->latest, &s);
  if (tg_broadcast_send(f->updates, &s, NULL) != 0) snapshot_unref(s);
  return f->version;
}

typedef struct event_log {
  int n;
  struct {
    char kind[16];
    uint64_t id;
    cJSON *data;
  } ev[16];
} event_log;

static void log_event_of(void *arg, sse_event *e) {
  event_log *l = arg;
  if (strcmp(e->event, "pipeline") == 0) return;
  ck_assert_int_lt(l->n, 16);
  snprintf(l->ev[l->n].kind, sizeof l->ev[l->n].kind, "%s", e->event);
  l->ev[l->n].id = e->id;
  l->ev[l->n].data = cJSON_Parse(e->data);
  ck_assert_ptr_nonnull(l->ev[l->n].data);
  l->n++;
}

/* Reads the stream until the log holds n events (within 10 s). */
static void read_events(client *c, sse_reader *rd, int *head_done, event_log *l, int n) {
  int64_t deadline = tg_deadline_in(TG_SEC(10));
  while (l->n < n) {
    const char *data;
    size_t len;
    ck_assert_int_eq(tg_tcp_recv_dl(c->sock, &data, &len, deadline), 0);
    http_buf_append(&rd->pending, data, len);
    tg_tcp_consume(c->sock, len);
    if (!*head_done) {
      char *end = strstr(rd->pending.data, "\r\n\r\n");
      if (!end) continue;
      size_t used = (size_t)(end + 4 - rd->pending.data);
      memmove(rd->pending.data, end + 4, rd->pending.len - used + 1);
      rd->pending.len -= used;
      *head_done = 1;
    }
    sse_parse(rd, log_event_of, l);
  }
}

/* The devices of an event by id: count each, into counts[id]. */
static void apply(const cJSON *snapshot, uint64_t *counts) {
  const cJSON *d;
  cJSON_ArrayForEach(d, cJSON_GetObjectItem(snapshot, "devices")) counts[int_of(d, "id")] =
      (uint64_t)int_of(d, "count");
}

/* ?deltas=1: a whole snapshot first, then only the devices read since
 * the last event (based on it), and a whole one again once
 * sse_full_every_ms passed; what the client builds from them is the
 * snapshot. */
static void *deltas_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 6);
  f.cfg.sse_full_every_ms = 400;
  fx_start(&f);
  client c;
  cl_connect(&c, f.port);
  cl_send(&c, GET("/api/stream?deltas=1"));
  sse_reader rd = {0};
  event_log l = {0};
  int head_done = 0;
  uint64_t counts[8] = {0};
  read_events(&c, &rd, &head_done, &l, 1);
  ck_assert_str_eq(l.ev[0].kind, "snapshot");
  int64_t full_at = tg_now();
  apply(l.ev[0].data, counts);

  fx_publish(&f); /* every device */
  read_events(&c, &rd, &head_done, &l, 2);
  publish_one(&f, 3);
  read_events(&c, &rd, &head_done, &l, 3);
  publish_one(&f, 5);
  read_events(&c, &rd, &head_done, &l, 4);
  int deltas_seen = 0;
  for (int i = 1; i < 4; i++) {
    if (strcmp(l.ev[i].kind, "snapshot") == 0) continue; /* only when 400 ms passed on a slow machine */
    ck_assert_str_eq(l.ev[i].kind, "delta");
    ck_assert_uint_eq((uint64_t)int_of(l.ev[i].data, "base"), l.ev[i - 1].id);
    ck_assert_int_eq(int_of(l.ev[i].data, "ndevices"), 6);
    deltas_seen++;
    apply(l.ev[i].data, counts);
  }
  if (tg_now() - full_at < TG_MS(400)) {
    /* a delta holds the devices read at or after its base's time: after
     * v2 (at 20, device 3), v3 (at 30) holds 3 and 5, not those last read
     * at 10 */
    ck_assert_int_eq(deltas_seen, 3);
    const cJSON *v3 = cJSON_GetObjectItem(l.ev[3].data, "devices");
    ck_assert_int_eq(cJSON_GetArraySize(v3), 2);
    ck_assert_int_eq(int_of(cJSON_GetArrayItem(v3, 0), "id"), 3);
    ck_assert_int_eq(int_of(cJSON_GetArrayItem(v3, 1), "id"), 5);
  }
  for (uint32_t id = 1; id <= 6; id++) ck_assert_uint_eq(counts[id], f.devices[id - 1].count);

  /* a whole snapshot again once sse_full_every_ms passed */
  tg_sleep(TG_MS(450));
  publish_one(&f, 2);
  read_events(&c, &rd, &head_done, &l, 5);
  ck_assert_str_eq(l.ev[4].kind, "snapshot");
  ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(l.ev[4].data, "devices")), 6);
  ck_assert_uint_ge(streams_of(&f).deltas, 1);
  for (int i = 0; i < l.n; i++) cJSON_Delete(l.ev[i].data);
  http_buf_free(&rd.pending);
  cl_close(&c);
  expect_status(&f, GET("/api/stream?deltas=2"), 400);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_stream_deltas) { tg_test_run(1, 0, deltas_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("http-security");
  tg_test_add(s, "slowloris_other_client_served", test_http_slowloris_other_client_served, 60);
  tg_test_add(s, "idle_and_silent_closed", test_http_idle_and_silent_closed, 30);
  tg_test_add(s, "host_and_origin", test_http_host_and_origin, 30);
  tg_test_add(s, "tokens", test_http_tokens, 30);
  tg_test_add(s, "snapshot_paging", test_http_snapshot_paging, 30);
  tg_test_add(s, "stream_never_reads_bounded", test_http_stream_never_reads_bounded, 120);
  tg_test_add(s, "stream_deltas", test_http_stream_deltas, 30);
  return tg_test_main(s);
}
