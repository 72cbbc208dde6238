/* api.c - the endpoints of telegate serve's client side; see api.h. */
#include "api_internal.h"

#include "sse.h"

#include <http_parser.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NO_STORE "Cache-Control: no-store\r\n"
#define ALLOW    "Allow: GET, HEAD\r\n"
/* The dashboard needs nothing from elsewhere, and the browser is told so. */
#define PAGE_HEADERS                                                                     \
  "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"                       \
  "Content-Security-Policy: default-src 'self'; img-src 'self' data:; base-uri 'none'; " \
  "frame-ancestors 'none'\r\n"

void api_config_defaults(api_config *c) {
  *c = (api_config){
      .sse_keepalive_ms = 15000,
      .sse_pipeline_ms = 500,
      .sse_every_max_ms = 60000,
      .sse_retry_ms = 1000,
      .health_timeout_ms = 1000,
      .health_timeout_max_ms = 30000,
      .sse_json_max_bytes = 64u << 20,
      .sse_full_every_ms = 30000,
      .snapshot_page = 1000,
      .snapshot_page_max = 10000,
      .snapshot_builders = 2,
      .write_max_bytes = 8u << 20,
      .write_commit_timeout_ms = 10000,
      .history_limit = 1000,
      .history_limit_max = 10000,
      .history_timeout_ms = 2000,
      .history_queries = 2,
  };
  http_config_defaults(&c->http);
}

system_snapshot *api_latest(api_server *a) {
  system_snapshot *s;
  tg_watch_get(a->latest, &s); /* a read lock and a reference: safe from any worker */
  return s;
}

static void count(atomic_uint_fast64_t *f) { atomic_fetch_add_explicit(f, 1, memory_order_relaxed); }

/* ------------------------------------------------------------ answers */

static void send_json(http_conn *c, int status, const http_buf *b) {
  if (http_buf_failed(b)) {
    static const char oom[] = "{\"error\":\"out of memory\",\"status\":500}\n";
    http_respond(c, 500, "application/json", NO_STORE, oom, sizeof oom - 1);
    return;
  }
  http_respond(c, status, "application/json", NO_STORE, b->data, b->len);
}

/* {"error":msg,"status":N} plus the fields in `more` (",\"k\":v..." or ""). */
static void send_error(http_conn *c, int status, const char *msg, const char *more, const char *extra_headers) {
  http_buf b = {0};
  http_buf_puts(&b, "{\"error\":");
  http_buf_json_string(&b, msg);
  http_buf_printf(&b, ",\"status\":%d%s}\n", status, more ? more : "");
  if (http_buf_failed(&b))
    http_respond(c, 500, NULL, NULL, NULL, 0);
  else
    http_respond(c, status, "application/json", extra_headers ? extra_headers : NO_STORE, b.data, b.len);
  http_buf_free(&b);
}

/* The two above for the endpoints of other files (api_internal.h). */
void api_send_json(http_conn *c, int status, const http_buf *b) { send_json(c, status, b); }

void api_send_error(http_conn *c, int status, const char *msg, const char *more, const char *extra_headers) {
  send_error(c, status, msg, more, extra_headers);
}

/* Reads an unsigned query parameter in [min, max] into *out (unchanged
 * when absent). Returns 0, or -1 when malformed or out of range. */
static int param_u32(const http_request *req, const char *name, uint32_t min, uint32_t max, uint32_t *out) {
  char v[16];
  int n = http_query_param(req->query, name, v, sizeof v);
  if (n == -1) return 0;
  if (n <= 0 || v[0] < '0' || v[0] > '9') return -1; /* strtoul would take "-1" or " 1" */
  char *end;
  unsigned long x = strtoul(v, &end, 10);
  if (*end || x < min || x > max) return -1;
  *out = (uint32_t)x;
  return 0;
}

static void get_snapshot(api_server *a, http_conn *c, const http_request *req) {
  char device[PROTOCOL_DEVICE_ID_MAX + 1];
  api_page page = {.limit = (uint32_t)a->cfg.snapshot_page};
  int dn = http_query_param(req->query, "device", device, sizeof device);
  if (param_u32(req, "limit", 1, (uint32_t)a->cfg.snapshot_page_max, &page.limit) != 0 ||
      param_u32(req, "after", 0, UINT32_MAX, &page.after) != 0 || dn == -2 || dn == 0) {
    char more[64];
    snprintf(more, sizeof more, ",\"max_limit\":%d", a->cfg.snapshot_page_max);
    send_error(c, 400, "limit takes 1..max_limit devices, after a device index, device a device's name", more, NULL);
    return;
  }
  if (dn > 0) page.device = device;
  if (tg_semaphore_acquire_dl(a->builders, 1, tg_deadline_in(TG_SEC(5))) != 0) {
    send_error(c, 503, "too many snapshot requests at once; try again", NULL, NO_STORE "Retry-After: 1\r\n");
    return;
  }
  system_snapshot *s = api_latest(a);
  http_buf b = {0};
  api_json_snapshot_page(&b, s, &page);
  snapshot_unref(s);
  tg_semaphore_release(a->builders, 1);
  if (b.len) b.len--; /* the closing brace: the figures go inside */
  http_buf_puts(&b, ",\"pipeline\":");
  api_json_pipeline(&b, a);
  http_buf_puts(&b, "}\n");
  send_json(c, 200, &b);
  http_buf_free(&b);
}

static void get_pipeline(api_server *a, http_conn *c) {
  http_buf b = {0};
  api_json_pipeline(&b, a);
  http_buf_puts(&b, "\n");
  send_json(c, 200, &b);
  http_buf_free(&b);
}

static void get_metrics(api_server *a, http_conn *c) {
  serve_figures f;
  if (a->deps.figures) a->deps.figures(a->deps.ctx, &f);
  http_server_stats h;
  stream_figures st;
  uint64_t hr[API_HEALTH_RESULTS];
  api_server_stats(a, &h, &st, hr);
  http_buf b = {0};
  metrics_write(&b, a->deps.figures ? &f : NULL, &h, &st, hr);
  if (http_buf_failed(&b))
    http_respond(c, 500, NULL, NULL, NULL, 0);
  else
    http_respond(c, 200, METRICS_CONTENT_TYPE, NO_STORE, b.data, b.len);
  http_buf_free(&b);
}

static void get_readyz(api_server *a, http_conn *c) {
  const char *why = NULL;
  char storage_why[256];
  tg_watch_stats ws;
  tg_watch_rx_stats_get(a->latest, &ws);
  if (ws.closed) why = "the pipeline has ended";
  if (!why && a->deps.figures) {
    serve_figures f;
    a->deps.figures(a->deps.ctx, &f);
    if (f.stopping) why = "shutting down";
    /* With --nats (its capacity is set then), nothing comes in while NATS is away. */
    if (!why && f.nats.inflight_max && !f.nats.connected) why = "NATS is unreachable (--nats)";
  }
  if (tg_cancel_fired(http_conn_cancel(c))) why = "shutting down";
  /* Storage that cannot commit: readings pile up in the queues and are
   * not acknowledged, so devices are better sent elsewhere until then. */
  if (!why && a->deps.storage_failing && a->deps.storage_failing(a->deps.ctx, storage_why, sizeof storage_why))
    why = storage_why;
  if (why)
    send_error(c, 503, why, NULL, NULL);
  else
    http_respond(c, 200, "text/plain; charset=utf-8", NO_STORE, "ready\n", 6);
}

/* /api/devices/{id}/health: the id as the device sends it, percent-
 * encoded in the URL. */
static void get_health(api_server *a, http_conn *c, const http_request *req, const char *id_enc, size_t id_len) {
  char id[PROTOCOL_DEVICE_ID_MAX + 1];
  int n = http_decode(id_enc, id_len, id, sizeof id, 0);
  if (n <= 0 || memchr(id, '\0', (size_t)n)) {
    send_error(c, 400, "bad device id", NULL, NULL);
    return;
  }
  int timeout_ms = a->cfg.health_timeout_ms;
  char v[16];
  int vn = http_query_param(req->query, "timeout_ms", v, sizeof v);
  if (vn != -1) {
    char *end;
    long t = vn > 0 ? strtol(v, &end, 10) : -1;
    if (vn <= 0 || *end || t < 1 || t > a->cfg.health_timeout_max_ms) {
      char more[64];
      snprintf(more, sizeof more, ",\"max_timeout_ms\":%d", a->cfg.health_timeout_max_ms);
      send_error(c, 400, "timeout_ms takes milliseconds, at least 1", more, NULL);
      return;
    }
    timeout_ms = (int)t;
  }
  if (!a->deps.health_check) {
    send_error(c, 501, "health checks are not available", NULL, NULL);
    return;
  }
  device_status st = {0};
  int64_t t0 = tg_now();
  int r = a->deps.health_check(a->deps.ctx, id, TG_MS(timeout_ms), &st);
  double latency_ms = (double)(tg_now() - t0) / 1e6;
  http_buf more = {0};
  http_buf_puts(&more, ",\"device\":");
  http_buf_json_string(&more, id);
  api_health_result result;
  int status;
  const char *msg;
  switch (r) {
  case 0: {
    http_buf b = {0};
    count(&a->health_requests[API_HEALTH_RESULT_OK]);
    http_buf_puts(&b, "{\"device\":");
    http_buf_json_string(&b, id);
    http_buf_printf(&b,
                    ",\"result\":\"ok\",\"uptime_ms\":%lld,\"battery\":%u,\"readings\":%llu,"
                    "\"latency_ms\":",
                    (long long)st.uptime_ms, (unsigned)st.battery, (unsigned long long)st.readings);
    http_buf_json_double(&b, latency_ms, 3);
    http_buf_puts(&b, "}\n");
    send_json(c, 200, &b);
    http_buf_free(&b);
    http_buf_free(&more);
    return;
  }
  case TG_ETIMEDOUT:
    result = API_HEALTH_RESULT_TIMEOUT, status = 504, msg = "the device did not answer in time";
    http_buf_printf(&more, ",\"timeout_ms\":%d", timeout_ms);
    break;
  case -ENOENT: result = API_HEALTH_RESULT_UNKNOWN, status = 404, msg = "no device has sent this id"; break;
  case TG_ECLOSED: result = API_HEALTH_RESULT_DISCONNECTED, status = 503, msg = "the device is not connected"; break;
  case -EOPNOTSUPP:
    result = API_HEALTH_RESULT_NOT_ANSWERING, status = 409,
    msg = "the device's hello did not say it answers health requests";
    break;
  default: result = API_HEALTH_RESULT_ERROR, status = 500, msg = tg_strerror(r); break;
  }
  count(&a->health_requests[result]);
  http_buf_printf(&more, ",\"result\":\"%s\"", metrics_health_result_name(result));
  send_error(c, status, msg, http_buf_failed(&more) ? NULL : more.data, NULL);
  http_buf_free(&more);
}

static const api_asset *find_asset(const char *path) {
  if (strcmp(path, "/") == 0) path = "/index.html";
  for (size_t i = 0; i < api_assets_count; i++)
    if (strcmp(api_assets[i].path, path) == 0) return &api_assets[i];
  return NULL;
}

/* ------------------------------------------------------------ routing */

typedef enum route {
  ROUTE_NONE = 0,
  ROUTE_ASSET,
  ROUTE_SNAPSHOT,
  ROUTE_STREAM,
  ROUTE_PIPELINE,
  ROUTE_HEALTH,
  ROUTE_HISTORY,
  ROUTE_METRICS,
  ROUTE_HEALTHZ,
  ROUTE_READYZ,
  ROUTE_WRITE_V1,
  ROUTE_WRITE_V2,
  ROUTE_WRITE_JSON,
  ROUTE_PING,
  ROUTE_INFLUX_HEALTH,
  ROUTE_QUERY,
} route;

/* What each endpoint needs (api.h says why). */
static const api_access route_access[] = {
    [ROUTE_ASSET] = API_ACCESS_OPEN,        [ROUTE_SNAPSHOT] = API_ACCESS_READ,
    [ROUTE_STREAM] = API_ACCESS_READ,       [ROUTE_PIPELINE] = API_ACCESS_READ,
    [ROUTE_HEALTH] = API_ACCESS_ADMIN,      [ROUTE_METRICS] = API_ACCESS_READ,
    [ROUTE_HEALTHZ] = API_ACCESS_OPEN,      [ROUTE_READYZ] = API_ACCESS_OPEN,
    [ROUTE_WRITE_V1] = API_ACCESS_DEVICE,   [ROUTE_WRITE_V2] = API_ACCESS_DEVICE,
    [ROUTE_PING] = API_ACCESS_OPEN,         [ROUTE_HISTORY] = API_ACCESS_READ,
    [ROUTE_WRITE_JSON] = API_ACCESS_DEVICE, [ROUTE_INFLUX_HEALTH] = API_ACCESS_OPEN,
    [ROUTE_QUERY] = API_ACCESS_OPEN,
};

static const struct {
  const char *path;
  route route;
} fixed_routes[] = {
    {"/api/snapshot", ROUTE_SNAPSHOT},   {"/api/stream", ROUTE_STREAM},     {"/api/pipeline", ROUTE_PIPELINE},
    {"/metrics", ROUTE_METRICS},         {"/healthz", ROUTE_HEALTHZ},       {"/readyz", ROUTE_READYZ},
    {"/write", ROUTE_WRITE_V1},          {"/api/v2/write", ROUTE_WRITE_V2}, {"/ping", ROUTE_PING},
    {"/api/readings", ROUTE_WRITE_JSON}, {"/health", ROUTE_INFLUX_HEALTH},  {"/query", ROUTE_QUERY},
};

/* The endpoints under /api/devices/{id}/. */
static const struct {
  const char *suffix;
  route route;
} device_routes[] = {{"/health", ROUTE_HEALTH}, {"/readings", ROUTE_HISTORY}};

/* Which endpoint a path names; for a device's, *id and *id_len locate
 * the device id segment. */
static route match(const char *path, const api_asset **asset, const char **id, size_t *id_len) {
  for (size_t i = 0; i < sizeof fixed_routes / sizeof fixed_routes[0]; i++)
    if (strcmp(path, fixed_routes[i].path) == 0) return fixed_routes[i].route;
  static const char prefix[] = "/api/devices/";
  size_t len = strlen(path), plen = sizeof prefix - 1;
  for (size_t i = 0; i < sizeof device_routes / sizeof device_routes[0]; i++) {
    const char *suffix = device_routes[i].suffix;
    size_t slen = strlen(suffix);
    if (len > plen + slen && strncmp(path, prefix, plen) == 0 && strcmp(path + len - slen, suffix) == 0) {
      *id = path + plen;
      *id_len = len - plen - slen;
      if (!memchr(*id, '/', *id_len)) return device_routes[i].route;
    }
  }
  if ((*asset = find_asset(path))) return ROUTE_ASSET;
  return ROUTE_NONE;
}

/* ------------------------------------------------------------ who may ask */

/* Whether `name` (a host without its port) is one of the names we
 * answer to. An IP literal always is: DNS rebinding needs a name. */
static int host_name_allowed(const api_server *a, const char *name, size_t len) {
  char host[256];
  if (len == 0 || len >= sizeof host) return 0;
  memcpy(host, name, len);
  host[len] = '\0';
  if (host[len - 1] == '.') host[--len] = '\0'; /* "localhost." is localhost */
  unsigned char addr[16];
  if (inet_pton(AF_INET, host, addr) == 1) return 1;
  if (strcasecmp(host, "localhost") == 0) return 1;
  if (a->cfg.http.host && strcasecmp(host, a->cfg.http.host) == 0) return 1;
  for (const char *p = a->cfg.allowed_hosts; p && *p;) {
    size_t n = strcspn(p, ",");
    if (n == len && strncasecmp(p, host, len) == 0) return 1;
    p += n + (p[n] == ',');
  }
  return 0;
}

/* A Host header's value: "name", "name:port", "[v6]" or "[v6]:port". */
static int host_allowed(const api_server *a, const char *host) {
  if (host[0] == '[') { /* an IPv6 literal */
    const char *end = strchr(host, ']');
    unsigned char addr[16];
    char v6[64];
    size_t n = end ? (size_t)(end - host - 1) : 0;
    if (!end || n >= sizeof v6 || (end[1] && end[1] != ':')) return 0;
    memcpy(v6, host + 1, n);
    v6[n] = '\0';
    return inet_pton(AF_INET6, v6, addr) == 1;
  }
  return host_name_allowed(a, host, strcspn(host, ":"));
}

/* Checks Host (api.h); answers and returns nonzero when it is refused. */
static int refuse_host(api_server *a, http_conn *c, const http_request *req) {
  const char *host = http_request_header(req, "Host"); /* HTTP/1.0 clients may leave it out */
  if (!host || host_allowed(a, host)) return 0;
  count(&a->refused_host);
  send_error(c, 421, "this server does not answer to that Host; see --http-allowed-host", NULL, NULL);
  return 1;
}

/* Checks Origin and Sec-Fetch-Site (api.h); answers and returns nonzero
 * when the request comes from another site. */
static int refuse_origin(api_server *a, http_conn *c, const http_request *req) {
  const char *host = http_request_header(req, "Host");
  const char *origin = http_request_header(req, "Origin");
  const char *site = http_request_header(req, "Sec-Fetch-Site");
  int same_origin = 1;
  if (origin) {
    const char *authority = strncmp(origin, "http://", 7) == 0    ? origin + 7
                            : strncmp(origin, "https://", 8) == 0 ? origin + 8 /* behind a TLS proxy */
                                                                  : NULL;
    same_origin = host && authority && strcasecmp(authority, host) == 0;
  }
  if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0) same_origin = 0;
  if (same_origin) return 0;
  count(&a->refused_origin);
  send_error(c, 403, "requests from other origins are refused", NULL, NULL);
  return 1;
}

/* The bearer token: the Authorization header's, else ?access_token= (for
 * EventSource, which cannot set headers). Returns NULL when none, or
 * `buf` or a pointer into the header. */
static const char *bearer_of(const http_request *req, char *buf, size_t cap) {
  const char *h = http_request_header(req, "Authorization");
  if (h) {
    if (strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    return h + 7 + strspn(h + 7, " ");
  }
  return http_query_param(req->query, "access_token", buf, cap) > 0 ? buf : NULL;
}

/* Answers and returns nonzero when the request lacks the access it needs. */
static int refuse_access(api_server *a, http_conn *c, const http_request *req, api_access need) {
  if (need == API_ACCESS_OPEN || need == API_ACCESS_DEVICE || !a->cfg.authorize) return 0;
  char buf[256];
  int r = a->cfg.authorize(a->cfg.authorize_ctx, bearer_of(req, buf, sizeof buf), need);
  if (r == 0) return 0;
  count(&a->refused_token);
  if (r == -EPERM)
    send_error(c, 403, "this token may not do that", NULL, NULL);
  else
    send_error(c, 401, "a valid bearer token is needed", NULL,
               NO_STORE "WWW-Authenticate: Bearer realm=\"telegate\"\r\n");
  return 1;
}

static void handle(void *ctx, http_conn *c, const http_request *req) {
  api_server *a = ctx;
  const api_asset *asset = NULL;
  const char *id = NULL;
  size_t id_len = 0;
  if (refuse_host(a, c, req)) return;
  route r = match(req->path, &asset, &id, &id_len);
  if (r == ROUTE_NONE) {
    send_error(c, 404, "no such endpoint", NULL, NULL);
    return;
  }
  int writes = r == ROUTE_WRITE_V1 || r == ROUTE_WRITE_V2 || r == ROUTE_WRITE_JSON;
  if (writes && req->method != HTTP_POST) {
    send_error(c, 405, "only POST", NULL, NO_STORE "Allow: POST\r\n");
    return;
  }
  if (!writes && req->method != HTTP_GET && req->method != HTTP_HEAD &&
      !(r == ROUTE_QUERY && req->method == HTTP_POST)) {
    send_error(c, 405, "only GET and HEAD", NULL, NO_STORE ALLOW);
    return;
  }
  /* The dashboard's files and the probes tell nothing and change nothing:
   * a link from another site to the dashboard must open it. */
  if (route_access[r] != API_ACCESS_OPEN && refuse_origin(a, c, req)) return;
  if (refuse_access(a, c, req, route_access[r])) return;
  switch (r) {
  case ROUTE_ASSET: http_respond(c, 200, asset->content_type, PAGE_HEADERS, asset->data, asset->len); break;
  case ROUTE_SNAPSHOT: get_snapshot(a, c, req); break;
  case ROUTE_STREAM:
    if (req->method == HTTP_HEAD)
      http_respond(c, 200, "text/event-stream; charset=utf-8", NO_STORE, NULL, 0);
    else
      sse_serve(a, c, req);
    break;
  case ROUTE_PIPELINE: get_pipeline(a, c); break;
  case ROUTE_HEALTH: get_health(a, c, req, id, id_len); break;
  case ROUTE_HISTORY: api_history_serve(a, c, req, id, id_len); break;
  case ROUTE_METRICS: get_metrics(a, c); break;
  case ROUTE_HEALTHZ: http_respond(c, 200, "text/plain; charset=utf-8", NO_STORE, "ok\n", 3); break;
  case ROUTE_READYZ: get_readyz(a, c); break;
  case ROUTE_WRITE_V1: api_write(a, c, req, API_WRITE_V1); break;
  case ROUTE_WRITE_V2: api_write(a, c, req, API_WRITE_V2); break;
  case ROUTE_WRITE_JSON: api_write(a, c, req, API_WRITE_JSON); break;
  case ROUTE_PING: http_respond(c, 204, NULL, NO_STORE, NULL, 0); break;
  case ROUTE_INFLUX_HEALTH: {
    static const char pass[] = "{\"name\":\"telegate\",\"message\":\"ready for writes\",\"status\":\"pass\"}";
    http_respond(c, 200, "application/json", NO_STORE, pass, sizeof pass - 1);
    break;
  }
  case ROUTE_QUERY: api_query(a, c, req); break;
  case ROUTE_NONE: break;
  }
}

/* ------------------------------------------------------------ the server */

int api_server_start(api_server **out, const api_config *cfg, const api_deps *deps) {
  if (!cfg || !deps || !deps->subscribe || cfg->sse_keepalive_ms < 1 || cfg->sse_pipeline_ms < 0 ||
      cfg->sse_every_max_ms < 0 || cfg->sse_retry_ms < 0 || cfg->health_timeout_ms < 1 ||
      cfg->health_timeout_max_ms < cfg->health_timeout_ms || cfg->snapshot_page < 1 ||
      cfg->snapshot_page_max < cfg->snapshot_page || cfg->sse_json_max_bytes < 1 || cfg->snapshot_builders < 1 ||
      cfg->sse_full_every_ms < 0 || cfg->history_limit < 1 || cfg->history_limit_max < cfg->history_limit ||
      cfg->history_timeout_ms < 1 || cfg->history_queries < 1)
    return TG_EINVAL;
  api_server *a = calloc(1, sizeof *a);
  if (!a) return TG_ENOMEM;
  a->cfg = *cfg;
  a->deps = *deps;
  /* Write bodies are the only big ones: their own limit, and a bound on
   * what all connections buffer at once (what the write turns take). */
  a->cfg.http.max_post_body_bytes = cfg->write_max_bytes;
  a->cfg.http.max_bodies_bytes = WRITE_TURNS * cfg->write_max_bytes;
  pthread_mutex_init(&a->json_lock, NULL);
  int r = tg_semaphore_new(&a->builders, (uint64_t)cfg->snapshot_builders, "snapshot-builders");
  if (r == 0 && (r = tg_semaphore_new(&a->history, (uint64_t)cfg->history_queries, "history-queries")) != 0)
    tg_semaphore_free(a->builders);
  if (r != 0) {
    pthread_mutex_destroy(&a->json_lock);
    free(a);
    return r;
  }
  r = deps->subscribe(deps->ctx, &a->latest, NULL);
  if (r == 0) {
    r = http_server_start(&a->http, &a->cfg.http, handle, a);
    if (r != 0) tg_watch_rx_drop(a->latest);
  }
  if (r != 0) {
    tg_semaphore_free(a->builders);
    tg_semaphore_free(a->history);
    pthread_mutex_destroy(&a->json_lock);
    free(a);
    return r;
  }
  *out = a;
  return 0;
}

int api_server_port(const api_server *a) { return http_server_port(a->http); }

void api_server_stop(api_server *a) {
  if (!a) return;
  http_server_stop(a->http);
  tg_watch_rx_drop(a->latest);
  sse_json_release(a);
  tg_semaphore_free(a->builders);
  tg_semaphore_free(a->history);
  pthread_mutex_destroy(&a->json_lock);
  free(a);
}

void api_server_stats(const api_server *a, http_server_stats *http, stream_figures *streams,
                      uint64_t *health_requests) {
  api_server *m = (api_server *)a; /* atomics are only read */
  if (http) {
    http_server_stats_get(m->http, http);
    http->refused_host = atomic_load_explicit(&m->refused_host, memory_order_relaxed);
    http->refused_origin = atomic_load_explicit(&m->refused_origin, memory_order_relaxed);
    http->refused_token = atomic_load_explicit(&m->refused_token, memory_order_relaxed);
  }
  if (streams) {
    *streams = (stream_figures){
        .clients = atomic_load_explicit(&m->clients, memory_order_relaxed),
        .streams = atomic_load_explicit(&m->streams, memory_order_relaxed),
        .events = atomic_load_explicit(&m->events, memory_order_relaxed),
        .resyncs = atomic_load_explicit(&m->resyncs, memory_order_relaxed),
        .lagged_messages = atomic_load_explicit(&m->lagged_messages, memory_order_relaxed),
        .skipped_stale = atomic_load_explicit(&m->skipped_stale, memory_order_relaxed),
        .coalesced = atomic_load_explicit(&m->coalesced, memory_order_relaxed),
        .dropped = atomic_load_explicit(&m->dropped, memory_order_relaxed),
        .json_builds = atomic_load_explicit(&m->json_builds, memory_order_relaxed),
        .json_bytes = atomic_load_explicit(&m->json_bytes, memory_order_relaxed),
        .deferred = atomic_load_explicit(&m->deferred, memory_order_relaxed),
        .deltas = atomic_load_explicit(&m->deltas, memory_order_relaxed),
    };
  }
  for (int i = 0; health_requests && i < API_HEALTH_RESULTS; i++)
    health_requests[i] = atomic_load_explicit(&m->health_requests[i], memory_order_relaxed);
}
