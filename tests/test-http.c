/* test-http.c - the HTTP endpoints over loopback: every endpoint, every
 * error status, keep-alive and pipelining, the connection limit, and a
 * server that goes on after each bad request. */
#include "test-http.h"

#include <cjson/cJSON.h>

static cJSON *json_of(const response *r) {
  cJSON *j = cJSON_Parse(r->body.data);
  ck_assert_msg(j != NULL, "not JSON: %s", r->body.data);
  return j;
}

static double num(const cJSON *j, const char *path) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", path);
  const cJSON *at = j;
  for (char *k = strtok(buf, "."); k; k = strtok(NULL, ".")) {
    at = cJSON_GetObjectItemCaseSensitive(at, k);
    ck_assert_msg(at != NULL, "no %s in JSON", path);
  }
  ck_assert_msg(cJSON_IsNumber(at), "%s is not a number", path);
  return at->valuedouble;
}

/* A request on a fresh connection, its status and Content-Type checked. */
static void expect(fixture *f, client *c, const char *raw, int status, const char *type_prefix) {
  cl_request(c, f->port, raw);
  ck_assert_msg(c->r[0].status == status, "%s -> %d, want %d: %s", raw, c->r[0].status, status, c->r[0].body.data);
  if (type_prefix)
    ck_assert_msg(strncmp(c->r[0].content_type, type_prefix, strlen(type_prefix)) == 0, "Content-Type %s, want %s",
                  c->r[0].content_type, type_prefix);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* ------------------------------------------------------------ endpoints */

static void *snapshot_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 3);
  f.figures.telemetry = (serve_queue_figures){.len = 7, .capacity = 50, .senders_waiting = 2, .full_waits = 11};
  f.figures.readings_received = 42;
  fx_start(&f);
  fx_publish(&f);
  fx_publish(&f);
  client c;
  expect(&f, &c, GET("/api/snapshot"), 200, "application/json");
  cJSON *j = json_of(&c.r[0]);
  ck_assert_int_eq((int)num(j, "version"), 2);
  ck_assert_int_eq((int)num(j, "total_readings"), 6);
  const cJSON *devs = cJSON_GetObjectItem(j, "devices");
  ck_assert_int_eq(cJSON_GetArraySize(devs), 3);
  const cJSON *d2 = cJSON_GetArrayItem(devs, 1);
  ck_assert_int_eq((int)num(d2, "id"), 2);
  ck_assert_int_eq((int)num(d2, "count"), 2);
  const cJSON *fields = cJSON_GetObjectItem(d2, "fields"); /* the device's fields, whatever their names */
  ck_assert_int_eq(cJSON_GetArraySize(fields), 3);
  ck_assert_int_eq((int)num(fields, "battery"), 90);
  ck_assert_double_eq_tol(num(fields, "temperature"), 20.3, 1e-9);
  ck_assert_double_eq_tol(num(fields, "humidity"), 48.25, 1e-9);
  const cJSON *fleet = cJSON_GetObjectItem(j, "fleet"); /* float fields' means over the active devices */
  ck_assert_int_eq(cJSON_GetArraySize(fleet), 2);
  ck_assert_double_eq_tol(num(fleet, "humidity"), 48.25, 1e-9);
  ck_assert_int_eq((int)num(d2, "last_seen_ms"), 20);
  ck_assert_int_eq((int)num(j, "pipeline.queues.telemetry.len"), 7);
  ck_assert_int_eq((int)num(j, "pipeline.queues.telemetry.full_waits"), 11);
  ck_assert_int_eq((int)num(j, "pipeline.readings.received"), 42);
  cJSON_Delete(j);
  cl_close(&c);

  expect(&f, &c, GET("/api/pipeline"), 200, "application/json");
  j = json_of(&c.r[0]);
  ck_assert_int_eq((int)num(j, "queues.telemetry.capacity"), 50);
  ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "has_pipeline")));
  cJSON_Delete(j);
  cl_close(&c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_snapshot_and_pipeline) { tg_test_run(1, 0, snapshot_body, NULL); }
END_TEST

static void *probes_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  fx_start(&f);
  client c;
  expect(&f, &c, GET("/healthz"), 200, "text/plain");
  ck_assert_str_eq(c.r[0].body.data, "ok\n");
  cl_close(&c);
  expect(&f, &c, GET("/readyz"), 200, "text/plain");
  cl_close(&c);
  f.figures.stopping = 1;
  expect(&f, &c, GET("/readyz"), 503, "application/json");
  ck_assert_ptr_nonnull(strstr(c.r[0].body.data, "shutting down"));
  cl_close(&c);
  f.figures.stopping = 0;
  fx_close(&f); /* the pipeline ended: not ready, but the snapshot stays readable */
  expect(&f, &c, GET("/readyz"), 503, "application/json");
  cl_close(&c);
  expect(&f, &c, GET("/api/snapshot"), 200, "application/json");
  cl_close(&c);
  expect(&f, &c, GET("/api/stream"), 503, "application/json");
  cl_close(&c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_healthz_readyz) { tg_test_run(1, 0, probes_body, NULL); }
END_TEST

static void *health_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  fx_start(&f);
  client c;
  expect(&f, &c, GET("/api/devices/7/health"), 200, "application/json");
  cJSON *j = json_of(&c.r[0]);
  ck_assert_str_eq(cJSON_GetObjectItem(j, "device")->valuestring, "7");
  ck_assert_str_eq(cJSON_GetObjectItem(j, "result")->valuestring, "ok");
  ck_assert_int_eq((int)num(j, "battery"), 80);
  ck_assert_int_eq((int)num(j, "uptime_ms"), 12345);
  cJSON_Delete(j);
  cl_close(&c);

  int64_t t0 = tg_now();
  expect(&f, &c, GET("/api/devices/slow/health?timeout_ms=50"), 504, "application/json");
  ck_assert_int_ge(tg_now() - t0, TG_MS(50));
  j = json_of(&c.r[0]);
  ck_assert_str_eq(cJSON_GetObjectItem(j, "result")->valuestring, "timeout");
  ck_assert_int_eq((int)num(j, "timeout_ms"), 50);
  cJSON_Delete(j);
  cl_close(&c);

  expect(&f, &c, GET("/api/devices/nobody/health"), 404, "application/json");
  ck_assert_ptr_nonnull(strstr(c.r[0].body.data, "\"result\":\"unknown\""));
  cl_close(&c);
  expect(&f, &c, GET("/api/devices/gone/health"), 503, "application/json");
  ck_assert_ptr_nonnull(strstr(c.r[0].body.data, "\"result\":\"disconnected\""));
  cl_close(&c);
  /* percent-encoded ids are decoded: %67one is "gone" */
  expect(&f, &c, GET("/api/devices/%67one/health"), 503, "application/json");
  cl_close(&c);
  expect(&f, &c, GET("/api/devices/7/health?timeout_ms=0"), 400, "application/json");
  cl_close(&c);
  expect(&f, &c, GET("/api/devices/7/health?timeout_ms=abc"), 400, "application/json");
  cl_close(&c);
  expect(&f, &c, GET("/api/devices/7/health?timeout_ms=999999999"), 400, "application/json");
  cl_close(&c);
  expect(&f, &c, GET("/api/devices/%zz/health"), 400, "application/json");
  cl_close(&c);
  expect(&f, &c, GET("/api/devices/a/b/health"), 404, "application/json");
  cl_close(&c);

  http_server_stats h;
  stream_figures st;
  uint64_t hr[API_HEALTH_RESULTS];
  api_server_stats(f.api, &h, &st, hr);
  ck_assert_uint_eq(hr[API_HEALTH_RESULT_OK], 1);
  ck_assert_uint_eq(hr[API_HEALTH_RESULT_TIMEOUT], 1);
  ck_assert_uint_eq(hr[API_HEALTH_RESULT_UNKNOWN], 1);
  ck_assert_uint_eq(hr[API_HEALTH_RESULT_DISCONNECTED], 2);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_device_health) { tg_test_run(1, 0, health_body, NULL); }
END_TEST

static void *assets_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  fx_start(&f);
  client c;
  expect(&f, &c, GET("/"), 200, "text/html");
  ck_assert_ptr_nonnull(strstr(c.r[0].body.data, "<title>telegate"));
  size_t page = c.r[0].body.len;
  cl_close(&c);
  expect(&f, &c, GET("/index.html"), 200, "text/html");
  ck_assert_uint_eq(c.r[0].body.len, page);
  cl_close(&c);
  expect(&f, &c, GET("/app.js"), 200, "text/javascript");
  ck_assert_ptr_nonnull(strstr(c.r[0].body.data, "EventSource"));
  cl_close(&c);
  expect(&f, &c, GET("/style.css"), 200, "text/css");
  cl_close(&c);
  /* HEAD: the same head, no body */
  expect(&f, &c, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", 200, "text/html");
  ck_assert_uint_eq(c.r[0].body.len, 0);
  ck_assert_uint_eq(strtoull(c.r[0].content_length, NULL, 10), page);
  cl_close(&c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_dashboard_assets) { tg_test_run(1, 0, assets_body, NULL); }
END_TEST

/* ------------------------------------------------------------ errors */

static uint64_t open_connections(fixture *f) {
  http_server_stats h;
  api_server_stats(f->api, &h, NULL, NULL);
  return h.connections_open;
}

/* Waits until the server has closed its side of connections the client
 * closed, down to `want` open ones: at most 30 s, then the count seen. */
static uint64_t wait_open_connections(fixture *f, uint64_t want) {
  int64_t deadline = tg_deadline_in(TG_SEC(30));
  uint64_t n;
  while ((n = open_connections(f)) > want && tg_now() < deadline) tg_sleep(TG_MS(2));
  return n;
}

static void *errors_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  f.cfg.http.max_url_bytes = 256;
  f.cfg.http.max_header_bytes = 1024;
  f.cfg.http.max_body_bytes = 64;
  f.cfg.write_max_bytes = 64; /* POST bodies: the write API's limit */
  f.cfg.http.request_timeout_ms = 200;
  fx_start(&f);
  client c;

  /* well-formed requests that are refused keep the connection open */
  cl_connect(&c, f.port);
  cl_send(&c, "POST /api/snapshot HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
  ck_assert_int_eq(cl_read(&c, 1), 0);
  ck_assert_int_eq(c.r[0].status, 405);
  ck_assert_str_eq(c.r[0].allow, "GET, HEAD");
  ck_assert_str_eq(c.r[0].connection, "keep-alive");
  cl_send(&c, GET("/nowhere"));
  ck_assert_int_eq(cl_read(&c, 2), 0);
  ck_assert_int_eq(c.r[1].status, 404);
  cl_send(&c, "DELETE /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(cl_read(&c, 3), 0);
  ck_assert_int_eq(c.r[2].status, 405);
  cl_send(&c, GET("/healthz"));
  ck_assert_int_eq(cl_read(&c, 4), 0);
  ck_assert_int_eq(c.r[3].status, 200);
  cl_close(&c);

  /* a request the parser cannot finish: answered, then closed */
  cl_request(&c, f.port, "GARBAGE\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 400);
  ck_assert_str_eq(c.r[0].connection, "close");
  ck_assert_int_eq(cl_wait_closed(&c), 0);
  cl_close(&c);
  cl_request(&c, f.port, "GET / HTTP/1.1\r\nBad Header\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 400);
  cl_close(&c);
  cl_request(&c, f.port, "BREW /pot HTTP/1.1\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 400);
  cl_close(&c);

  /* oversized: URL, headers, body (announced and chunked) */
  char big[4096];
  snprintf(big, sizeof big, "GET /%0300d HTTP/1.1\r\nHost: t\r\n\r\n", 0);
  cl_request(&c, f.port, big);
  ck_assert_int_eq(c.r[0].status, 414);
  ck_assert_int_eq(cl_wait_closed(&c), 0);
  cl_close(&c);
  snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: %02000d\r\n\r\n", 0);
  cl_request(&c, f.port, big);
  ck_assert_int_eq(c.r[0].status, 431);
  cl_close(&c);
  cl_request(&c, f.port, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 413);
  cl_close(&c);
  snprintf(big, sizeof big, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n%080d\r\n0\r\n\r\n",
           0);
  cl_request(&c, f.port, big);
  ck_assert_int_eq(c.r[0].status, 413);
  cl_close(&c);

  /* a request that never completes: 408 after request_timeout_ms */
  int64_t t0 = tg_now();
  cl_request(&c, f.port, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
  ck_assert_int_eq(c.r[0].status, 408);
  ck_assert_int_ge(tg_now() - t0, TG_MS(200));
  cl_close(&c);

  /* and the server goes on */
  expect(&f, &c, GET("/healthz"), 200, "text/plain");
  cl_close(&c);
  ck_assert_uint_eq(wait_open_connections(&f, 0), 0);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_errors_and_limits) { tg_test_run(1, 0, errors_body, NULL); }
END_TEST

/* ------------------------------------------------------------ connections */

static void *keepalive_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 2);
  fx_start(&f);
  client c;
  /* three pipelined requests in one write: three answers, in order */
  cl_connect(&c, f.port);
  cl_send(&c, GET("/healthz") GET("/api/snapshot") "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  c.head = 1u << 2; /* the third answers a HEAD */
  ck_assert_int_eq(cl_read(&c, 3), 0);
  ck_assert_int_eq(c.r[0].status, 200);
  ck_assert_str_eq(c.r[0].body.data, "ok\n");
  ck_assert_str_eq(c.r[1].content_type, "application/json");
  ck_assert_int_eq(c.r[2].status, 200);
  ck_assert_uint_eq(c.r[2].body.len, 0);
  c.head = 0;
  /* the same connection serves on, request after request */
  for (int i = 0; i < 3; i++) {
    cl_reset(&c);
    cl_send(&c, GET("/api/pipeline"));
    ck_assert_int_eq(cl_read(&c, 1), 0);
    ck_assert_int_eq(c.r[0].status, 200);
  }
  /* Connection: close is honoured */
  cl_reset(&c);
  cl_send(&c, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  ck_assert_int_eq(cl_read(&c, 1), 0);
  ck_assert_str_eq(c.r[0].connection, "close");
  ck_assert_int_eq(cl_wait_closed(&c), 0);
  cl_close(&c);
  /* HTTP/1.0 closes unless asked otherwise */
  cl_request(&c, f.port, "GET /healthz HTTP/1.0\r\n\r\n");
  ck_assert_str_eq(c.r[0].connection, "close");
  ck_assert_int_eq(cl_wait_closed(&c), 0);
  cl_close(&c);
  cl_request(&c, f.port, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ck_assert_str_eq(c.r[0].connection, "keep-alive");
  cl_close(&c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_keepalive_pipelining) { tg_test_run(1, 0, keepalive_body, NULL); }
END_TEST

/* The same over two workers: each connection's task runs where its
 * socket was opened, wherever the listener is. */
START_TEST(test_http_keepalive_two_workers) { tg_test_run(2, 0, keepalive_body, NULL); }
END_TEST

static void *limit_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  f.cfg.http.max_connections = 2;
  fx_start(&f);
  client a, b, c;
  cl_request(&a, f.port, GET("/healthz"));
  cl_request(&b, f.port, GET("/healthz"));
  ck_assert_uint_eq(open_connections(&f), 2);
  cl_request(&c, f.port, GET("/healthz"));
  ck_assert_int_eq(c.r[0].status, 503);
  ck_assert_int_eq(cl_wait_closed(&c), 0);
  cl_close(&c);
  cl_close(&a);
  ck_assert_uint_eq(wait_open_connections(&f, 1), 1);
  cl_request(&c, f.port, GET("/healthz"));
  ck_assert_int_eq(c.r[0].status, 200);
  cl_close(&c);
  cl_close(&b);
  http_server_stats h;
  api_server_stats(f.api, &h, NULL, NULL);
  ck_assert_uint_eq(h.connections_rejected, 1);
  ck_assert_uint_eq(h.connections_accepted, 4);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_http_connection_limit) { tg_test_run(1, 0, limit_body, NULL); }
END_TEST

/* Stopping with connections open: idle keep-alive ones and a stream are
 * closed, and nothing is left behind (tg_test_run checks the runtime). */
static void *stop_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  fx_start(&f);
  client idle, stream;
  cl_request(&idle, f.port, GET("/healthz"));
  cl_connect(&stream, f.port);
  cl_send(&stream, GET("/api/stream"));
  const char *data;
  size_t len;
  ck_assert_int_eq(tg_tcp_recv(stream.sock, &data, &len), 0); /* the stream has begun */
  api_server_stop(f.api);
  ck_assert_int_eq(cl_wait_closed(&idle), 0);
  ck_assert_int_eq(cl_wait_closed(&stream), 0);
  cl_close(&idle);
  cl_close(&stream);
  fx_close(&f);
  ck_assert_uint_eq(atomic_load(&f.counters.built), atomic_load(&f.counters.freed));
  return NULL;
}

START_TEST(test_http_stop_closes_connections) { tg_test_run(1, 0, stop_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("http");
  tg_test_add(s, "snapshot_and_pipeline", test_http_snapshot_and_pipeline, 20);
  tg_test_add(s, "healthz_readyz", test_http_healthz_readyz, 20);
  tg_test_add(s, "device_health", test_http_device_health, 20);
  tg_test_add(s, "dashboard_assets", test_http_dashboard_assets, 20);
  tg_test_add(s, "errors_and_limits", test_http_errors_and_limits, 30);
  tg_test_add(s, "keepalive_pipelining", test_http_keepalive_pipelining, 20);
  tg_test_add(s, "keepalive_two_workers", test_http_keepalive_two_workers, 20);
  tg_test_add(s, "connection_limit", test_http_connection_limit, 20);
  tg_test_add(s, "stop_closes_connections", test_http_stop_closes_connections, 20);
  return tg_test_main(s);
}
