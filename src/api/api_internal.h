/* api_internal.h - what the endpoints (api.c, api_json.c) and the event
 * streams (sse.c) share: the server's state and the JSON writers. */
#ifndef TELEGATE_API_INTERNAL_H
#define TELEGATE_API_INTERNAL_H

#include "api.h"
#include "api_assets.h"
#include "http_buf.h"
#include "snapshot.h"

#include <pthread.h>
#include <stdatomic.h>

#define SSE_FULL UINT64_MAX

/* One snapshot serialized once (api_json_snapshot) and shared by every
 * stream that sends it; freed with its last reference. */
typedef struct sse_json {
  atomic_uint refs;
  uint64_t version;
  uint64_t base; /* a delta's base version; SSE_FULL for a whole snapshot */
  size_t len;
  char *data; /* the buffer it was written into, kept as it is */
} sse_json;

struct api_server {
  api_config cfg;
  api_deps deps;
  http_server *http;
  tg_watch_rx *latest;    /* ours, never marked seen: requests clone it */
  tg_semaphore *builders; /* snapshot_builders permits */
  tg_semaphore *history;  /* history_queries permits */
  /* stream_figures and on-demand health results, as atomics: requests
   * and streams run on every worker */
  atomic_uint_fast64_t clients, streams, events, resyncs, lagged_messages, skipped_stale, coalesced, dropped;
  atomic_uint_fast64_t health_requests[API_HEALTH_RESULTS];
  atomic_uint_fast64_t refused_host, refused_origin, refused_token; /* http_server_stats' */
  /* The streams' serialized snapshots (sse.c). Invariant: json_bytes is
   * the sum of the lengths of the sse_json alive; json_latest and
   * json_delta, when not NULL, are the newest whole snapshot and the
   * newest delta built, each holding one reference; at most one build
   * runs at a time (json_building). */
  pthread_mutex_t json_lock;
  sse_json *json_latest, *json_delta;
  int json_building;
  atomic_uint_fast64_t json_bytes, json_builds, deferred, deltas;
};

/* Drops the api's reference to its cached serialized snapshot. */
void sse_json_release(api_server *a);

/* The snapshot as JSON, every device; it yields now and then (from a
 * task only). */
void api_json_snapshot(http_buf *b, const system_snapshot *s);

/* The changes of s since its base, as JSON: the summary, "base", 
 * "ndevices" and the devices whose last reading is at or after the
 * base's at_ms (a reading after a snapshot was built is stamped no
 * earlier than it) or whose slot is new since the base. Yields now and
 * then (from a task only). */
void api_json_delta(http_buf *b, const system_snapshot *s, uint64_t base_version, int64_t base_at_ms,
                    uint32_t base_ndevices);

/* Which devices a page of /api/snapshot holds. */
typedef struct api_page {
  uint32_t after;     /* devices with a larger index (`id`) ... */
  uint32_t limit;     /* ... at most this many, >= 1 */
  const char *device; /* or only the device of this name; NULL: any */
} api_page;

/* The snapshot as JSON with one page of its devices, "ndevices" (every
 * slot) and "next_after": the `after` of the next page, null after the
 * last. Yields now and then (from a task only). */
void api_json_snapshot_page(http_buf *b, const system_snapshot *s, const api_page *p);

/* The pipeline's figures (deps.figures) and the HTTP side's, as JSON. */
void api_json_pipeline(http_buf *b, api_server *a);

/* The write endpoints: POST /write, /api/v2/write (InfluxDB's line
 * protocol) and /api/readings (agents' JSON), in api_write.c. */
typedef enum api_write_kind { API_WRITE_V1, API_WRITE_V2, API_WRITE_JSON } api_write_kind;
void api_write(api_server *a, http_conn *c, const http_request *req, api_write_kind kind);

/* GET or POST /query: InfluxQL's CREATE DATABASE succeeds, nothing else is taken. */
void api_query(api_server *a, http_conn *c, const http_request *req);

/* The latest snapshot, an owned reference (snapshot_unref it). */
system_snapshot *api_latest(api_server *a);

/* Answers with b as JSON (500 if b failed). */
void api_send_json(http_conn *c, int status, const http_buf *b);

/* Answers {"error":msg,"status":N} plus the members in `more`
 * (",\"k\":v..." or NULL), with extra_headers (NULL: no-store). */
void api_send_error(http_conn *c, int status, const char *msg, const char *more, const char *extra_headers);

/* GET /api/devices/{id}/readings (api_history.c): id_enc is the id
 * segment of the path, percent-encoded. */
void api_history_serve(api_server *a, http_conn *c, const http_request *req, const char *id_enc, size_t id_len);

#endif
