/* sse.h - GET /api/stream: the snapshots as Server-Sent Events.
 *
 * The stream starts with `retry:` and one `snapshot` event holding the
 * latest snapshot (the watch value), then sends one `snapshot` event per
 * broadcast message newer than what the client has. Each event's `id:` is
 * the snapshot's version and its data one line of JSON (api_json_snapshot):
 *
 *   event: snapshot            one per broadcast message
 *   event: resync              {"missed":N,"snapshot":{...}}: the client fell
 *                              behind the ring and missed N messages; this is
 *                              the full current snapshot (from the watch), and
 *                              the stale backlog still in the ring is skipped
 *   event: pipeline            the pipeline's figures (api_json_pipeline),
 *                              every sse_pipeline_ms (?pipeline_ms=, 0: none)
 *   : keepalive                a comment, after sse_keepalive_ms of silence
 *
 * ?every=MS coalesces: at most one snapshot event per MS, carrying the
 * newest snapshot received meanwhile (older ones are counted as coalesced).
 *
 * Bounds: the broadcast never waits for a stream, so neither the
 * aggregator nor other clients wait for a slow one; what a stream keeps is
 * its place in the ring (which overwrites, and then the stream resyncs),
 * one pending snapshot, and the bytes of one event being written. Every
 * write has the server's write deadline: a client that stops reading is
 * dropped when it passes.
 *
 * The stream ends when the client closes, when a write fails, when the
 * server stops (its token) or when the pipeline has ended (the watch
 * closed and the broadcast drained). */
#ifndef TELEGATE_SSE_H
#define TELEGATE_SSE_H

#include "api_internal.h"
#include "http.h"

/* Serves one stream on c until it ends; the handler of /api/stream. */
void sse_serve(api_server *a, http_conn *c, const http_request *req);

#endif
