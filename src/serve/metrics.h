/* metrics.h - the Prometheus text exposition of the gateway's figures.
 *
 * metrics_write renders telegate_build_info, serve's figures (serve.h),
 * the HTTP server's and the event streams', and the standard process_*
 * figures, in the text format 0.0.4: for each family a # HELP and a
 * # TYPE line, then all its samples; counters end in _total; one family
 * per quantity, told apart by labels (reason="malformed",
 * stage="telemetry", queue="storage"). The same numbers feed the dashboard
 * and the tests. The families and what each means are declared once: the
 * gateway's in figures.c (figures.h), the build's and the process's in
 * process_metrics.c. */
#ifndef TELEGATE_METRICS_H
#define TELEGATE_METRICS_H

#include "http.h"
#include "http_buf.h"
#include "serve.h"

#include <stdint.h>

/* The event streams' figures, kept by sse.c. */
typedef struct stream_figures {
  uint64_t clients;         /* streams open now */
  uint64_t streams;         /* streams opened, ever */
  uint64_t events;          /* snapshot events sent */
  uint64_t resyncs;         /* resync events sent to clients that fell behind */
  uint64_t lagged_messages; /* broadcast messages those clients missed */
  uint64_t skipped_stale;   /* backlog messages skipped after a resync */
  uint64_t coalesced;       /* snapshots replaced by a newer one within ?every= */
  uint64_t dropped;         /* streams ended because the client stopped reading */
  uint64_t json_builds;     /* snapshots serialized for streams (once per version, shared) */
  uint64_t json_bytes;      /* bytes of serialized snapshots held by streams now */
  uint64_t deferred;        /* events put off because json_bytes was at its limit */
  uint64_t deltas;          /* delta events (?deltas=1), counted in events too */
} stream_figures;

/* On-demand health checks over HTTP, by answer. */
typedef enum api_health_result {
  API_HEALTH_RESULT_OK = 0,
  API_HEALTH_RESULT_TIMEOUT,
  API_HEALTH_RESULT_UNKNOWN,
  API_HEALTH_RESULT_DISCONNECTED,
  API_HEALTH_RESULT_NOT_ANSWERING,
  API_HEALTH_RESULT_ERROR,
  API_HEALTH_RESULTS
} api_health_result;

/* Appends the exposition to b. f may be NULL (no pipeline: only the HTTP
 * side, the build and the process are reported). health_requests has
 * API_HEALTH_RESULTS entries. */
void metrics_write(http_buf *b, const serve_figures *f, const http_server_stats *h, const stream_figures *s,
                   const uint64_t *health_requests);

/* The label of an on-demand health result ("ok", "timeout", ...). */
const char *metrics_health_result_name(api_health_result r);

/* The Content-Type of the exposition. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
