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
 * ?deltas=1 sends, after a whole first snapshot, `delta` events instead:
 *
 *   event: delta               {"version":V,"base":B,...,"ndevices":N,
 *                              "devices":[...]}: the summary of V and the
 *                              devices read (or turned stale) since B -
 *                              the stream's previous event, which the
 *                              client holds - to be put
 *                              in place by id (a device may come again
 *                              unchanged: those read in the millisecond B
 *                              was built)
 *
 * and a whole `snapshot` again every sse_full_every_ms, so that a client
 * that lost track is put right. A resync is always whole. With a fleet
 * that changes little between events, a delta is a fraction of a
 * snapshot (a 100,000-device snapshot is about 13 MB of JSON).
 *
 * Bounds: the broadcast never waits for a stream, so neither the
 * aggregator nor other clients wait for a slow one; what a stream keeps is
 * its place in the ring (which overwrites, and then the stream resyncs),
 * one pending snapshot, and the small head of the event being written.
 * The JSON of a snapshot is built once per version and shared by every
 * stream that sends it (sse_json, reference-counted): however many
 * streams there are and however slowly they read, they hold at most
 * sse_json_max_bytes of it plus one snapshot's. An event whose JSON
 * cannot be had at once (another stream is building it, or the limit is
 * reached while slow readers hold older ones) is put off and tried again
 * a little later, newer snapshots replacing it meanwhile. Building yields
 * every few hundred devices, so a big fleet's JSON never holds a worker
 * long. Every write has the server's write deadline: a client that stops
 * reading is dropped when it passes, and its references go with it.
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
