/* api.h - telegate serve's client side: the HTTP endpoints.
 *
 *   GET /                          the dashboard (web/, embedded at build time)
 *   GET /api/snapshot[?limit=N&after=ID&device=NAME]
 *                                  the latest snapshot (the watch value) as JSON,
 *                                  with the pipeline's figures; its devices a
 *                                  page at a time: at most limit (default
 *                                  snapshot_page, at most snapshot_page_max),
 *                                  those with an index above after, or the one
 *                                  named device; "next_after" continues
 *   GET /api/stream[?every=MS&deltas=1]
 *                                  Server-Sent Events: see sse.h
 *   GET /api/pipeline              the pipeline's figures alone
 *   GET /api/devices/{id}/readings[?from=&to=&fields=&limit=&after=&every=&format=]
 *                                  what storage holds of one device, raw or
 *                                  in buckets, JSON or CSV (api_history.c,
 *                                  docs/http-api.md)
 *   GET /api/devices/{id}/health[?timeout_ms=N]
 *                                  an on-demand health check: 200 with the
 *                                  answer, 504 timeout, 404 unknown device,
 *                                  503 disconnected
 *   GET /metrics                   Prometheus text (metrics.h)
 *   POST /write, POST /api/v2/write
 *                                  the InfluxDB write API (v1, v2): line
 *                                  protocol, answered once committed
 *                                  (api_write.c)
 *   GET /ping                      204: InfluxDB clients' check that the
 *                                  server is there
 *   GET /healthz                   200 while the server runs (liveness: a
 *                                  storage fault is not cured by a restart,
 *                                  which would only drop what is queued)
 *   GET /readyz                    200 while serve accepts, is not stopping
 *                                  and storage commits, else 503 with the
 *                                  reason (storage: since when, and why)
 * HEAD works wherever GET does; other methods get 405 with Allow, other
 * paths 404, bad parameters 400; errors are JSON {"error":..,"status":..}.
 *
 * Cost: a snapshot page is built by at most snapshot_builders requests
 * at once, and stream JSON by one (sse.h); building yields every few
 * hundred devices. The others wait without running, so however many
 * clients ask, the workers the devices share see at most a few short
 * slices of HTTP work between their turns.
 *
 * Two checks against DNS rebinding and pages of other sites: every
 * request's Host must name us - an IP literal, "localhost", cfg.http.host
 * or one of cfg.allowed_hosts - or it gets 421; and on every endpoint but
 * the open ones below, an Origin header must be this server's own origin
 * ("http://" or "https://" + Host), and a browser's Sec-Fetch-Site
 * same-origin or none, or the request gets 403. No Access-Control-Allow-Origin is ever sent: no other
 * origin may read the API from a browser. Then access: the dashboard's
 * files, /healthz and /readyz are open; /metrics and /api/snapshot,
 * /api/stream, /api/pipeline and the readings need API_ACCESS_READ; the health endpoint,
 * which makes serve write to a device, API_ACCESS_ADMIN. The token comes
 * as "Authorization: Bearer T" or, for EventSource, which cannot set
 * headers, as ?access_token=T. A refused token gets 401 with
 * WWW-Authenticate, a token without the right 403.
 *
 * The api reaches the pipeline only through api_deps: callbacks with the
 * signatures of serve's functions (serve.h), so serve wires it with
 * api_deps_serve, and the tests with a real watch and broadcast of their
 * own. At start the api subscribes once to the watch and keeps that
 * receiver: /api/snapshot and the streams' first events and resyncs read
 * it, and its value stays readable after the pipeline has ended. Each
 * stream subscribes to the broadcast for itself.
 *
 * The values in both channels are `system_snapshot *` (snapshot.h), owned
 * references; the api never changes a snapshot. Callbacks run in
 * connection tasks, on any worker, concurrently. */
#ifndef TELEGATE_API_H
#define TELEGATE_API_H

#include "http.h"
#include "metrics.h"
#include "serve.h"
#include "storage.h"
#include "tg/tg.h"

#include <stdint.h>

typedef struct api_deps {
  void *ctx; /* passed to every callback */
  /* Required. serve_subscribe: *latest (if asked) follows the watch of
   * the latest snapshot, *updates (if asked) gets every one published from
   * now on. Returns 0, TG_ENOMEM or TG_ECLOSED (the pipeline ended). */
  int (*subscribe)(void *ctx, tg_watch_rx **latest, tg_broadcast_rx **updates);
  /* Optional. serve_figures_get: the pipeline's figures now. */
  void (*figures)(void *ctx, serve_figures *out);
  /* Optional (without it, 501). serve_health_check: asks device_id (as the
   * device sends it) and waits at most timeout_ns. Returns 0 with *out
   * filled, TG_ETIMEDOUT, -ENOENT (unknown id) or TG_ECLOSED (not
   * connected); anything else is a 500. */
  int (*health_check)(void *ctx, const char *device_id, int64_t timeout_ns, device_status *out);
  /* Optional. serve_storage_failing: 1 with the reason in why while
   * storage cannot commit (/readyz answers 503 with it), else 0. */
  int (*storage_failing)(void *ctx, char *why, size_t whylen);
  /* Optional. serve_clients_add: +1 when a stream opens, -1 when it ends. */
  void (*clients_add)(void *ctx, int delta);
  /* Optional (without it, 501). serve_write: the write API's body, its
   * commit waited for (source_write.h). */
  int (*write)(void *ctx, const write_request *rq, write_result *res);
  /* Optional (without them, the readings endpoint answers 501).
   * serve_history_fields: the stored fields, or -EOPNOTSUPP when storage
   * keeps no history. serve_history: runs q (blocking, so off the
   * caller's worker); returns as storage_history. */
  int (*fields)(void *ctx, const storage_field **fields, uint32_t *n);
  int (*history)(void *ctx, const storage_history_query *q, storage_history_result *res, char *err, size_t errlen);
} api_deps;

/* What an endpoint needs of a client (api_config.authorize). */
typedef enum api_access {
  API_ACCESS_OPEN = 0, /* the dashboard's files, /healthz, /readyz */
  API_ACCESS_READ,     /* the snapshot, the stream, the figures, /metrics */
  API_ACCESS_ADMIN,    /* on-demand health checks: serve writes to a device */
  API_ACCESS_DEVICE,   /* the write API: a device credential's token, which the write source checks */
} api_access;

/* The deps that reach a running serve. */
void api_deps_serve(api_deps *d, serve *s);

typedef struct api_config {
  http_config http;
  int sse_keepalive_ms;      /* a comment line on an idle stream, default 15000 */
  int sse_pipeline_ms;       /* a `pipeline` event this often, default 500; 0: none */
  int sse_every_max_ms;      /* ?every= up to this, default 60000 */
  int sse_retry_ms;          /* the reconnection delay a stream asks of EventSource, 1000 */
  int health_timeout_ms;     /* the default ?timeout_ms=, 1000 */
  int health_timeout_max_ms; /* the largest accepted, 30000 */
  size_t sse_json_max_bytes; /* serialized snapshots streams may hold at once (sse.h), 64 MiB */
  int sse_full_every_ms;     /* a ?deltas=1 stream gets a whole snapshot this often, 30000 */
  int snapshot_page;         /* devices per /api/snapshot page by default, 1000 */
  int snapshot_page_max;     /* the largest ?limit=, 10000 */
  int snapshot_builders;     /* snapshot pages built at once; more requests wait (up to 5 s, then 503), 2 */
  size_t write_max_bytes;    /* a write body, as sent and inflated, 8 MiB (413); WRITE_TURNS of them buffered at once */
  int write_commit_timeout_ms; /* a write waits this long for its commit, then 503, 10000 */
  int history_limit;           /* readings (or buckets) per history page by default, 1000 */
  int history_limit_max;       /* the largest ?limit=, 10000 */
  int history_timeout_ms;      /* a history query is interrupted after this (503), 2000 */
  int history_queries;         /* history queries at once; more wait (up to 5 s, then 503), 2 */
  /* Host names clients may use besides IP literals, "localhost" and
   * http.host: comma-separated ("gw.example.org,gw"); NULL: none. */
  const char *allowed_hosts;
  /* Whether bearer (NULL when the request has none) grants need: 0, or
   * -EACCES (401) or -EPERM (403). Runs in connection tasks, on any
   * worker, concurrently. NULL: every request is allowed (api_tokens.h
   * has one reading token files). */
  int (*authorize)(void *ctx, const char *bearer, api_access need);
  void *authorize_ctx;
} api_config;

/* Fills the defaults above (and http_config_defaults). */
void api_config_defaults(api_config *c);

typedef struct api_server api_server;

/* Starts the server, from a task. Returns 0, TG_EINVAL (no subscribe
 * callback, bad config), TG_ECLOSED (the pipeline has ended), TG_ENOMEM
 * or http_server_start's errors (-EADDRINUSE). */
int api_server_start(api_server **out, const api_config *cfg, const api_deps *deps);

/* The port it listens on. */
int api_server_port(const api_server *a);

/* Stops it (see http_server_stop), drops its receiver and frees it. From
 * a task. */
void api_server_stop(api_server *a);

/* For serve's on_start hook: starts the api on a running serve, with
 * cfg->http.shutdown set to serve's shutdown token, and a task (through
 * serve_spawn) that stops it once that token fires; *port (may be NULL)
 * gets the port it listens on. Returns as api_server_start, or
 * serve_spawn's errors. */
int api_serve_attach(serve *s, const api_config *cfg, int *port);

/* Figures of the HTTP side; health_requests (may be NULL) gets
 * API_HEALTH_RESULTS counts. */
void api_server_stats(const api_server *a, http_server_stats *http, stream_figures *streams, uint64_t *health_requests);

#endif
