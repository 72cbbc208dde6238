/* api_json.c - snapshots and figures as JSON, written by hand into a
 * buffer: they go out on every stream event, and a general JSON library
 * would build a tree only to print it. */
#include "api_internal.h"

#include <stdio.h>
#include <string.h>

static void key(http_buf *b, const char *k) {
  http_buf_append(b, "\"", 1);
  http_buf_puts(b, k);
  http_buf_append(b, "\":", 2);
}

static void kv_u64(http_buf *b, const char *k, uint64_t v, int comma) {
  key(b, k);
  http_buf_u64(b, v);
  if (comma) http_buf_append(b, ",", 1);
}

static void kv_i64(http_buf *b, const char *k, int64_t v, int comma) {
  key(b, k);
  http_buf_i64(b, v);
  if (comma) http_buf_append(b, ",", 1);
}

static void kv_num(http_buf *b, const char *k, double v, int decimals, int comma) {
  key(b, k);
  http_buf_json_double(b, v, decimals);
  if (comma) http_buf_append(b, ",", 1);
}

static void device_json(http_buf *b, const system_snapshot *s, const device_metrics *m) {
  char number[16];
  snprintf(number, sizeof number, "%u", (unsigned)m->device);
  http_buf_append(b, "{", 1);
  kv_u64(b, "id", m->device, 1);
  key(b, "name"); /* the id the device sends, which health checks take */
  http_buf_json_string(b, m->id && m->id[0] ? m->id : number);
  http_buf_append(b, ",", 1);
  kv_u64(b, "count", m->count, 1);
  kv_u64(b, "last_seq", m->last_seq, 1);
  kv_num(b, "temperature", m->avg_temperature, 2, 1);
  kv_num(b, "humidity", m->avg_humidity, 2, 1);
  kv_u64(b, "battery", m->battery, 1);
  kv_i64(b, "last_seen_ms", m->last_seen_ms, 1);
  kv_i64(b, "age_ms", m->count ? s->at_ms - m->last_seen_ms : -1, 0);
  http_buf_append(b, "}", 1);
}

void api_json_snapshot(http_buf *b, const system_snapshot *s) {
  http_buf_append(b, "{", 1);
  kv_u64(b, "version", s->version, 1);
  kv_i64(b, "at_ms", s->at_ms, 1);
  kv_u64(b, "total_readings", s->total_messages, 1);
  kv_u64(b, "active_devices", s->active_devices, 1);
  kv_num(b, "avg_temperature", s->avg_temperature, 2, 1);
  kv_num(b, "avg_humidity", s->avg_humidity, 2, 1);
  key(b, "devices");
  http_buf_append(b, "[", 1);
  int first = 1;
  for (uint32_t i = 0; i < s->ndevices; i++) {
    const device_metrics *m = &s->devices[i];
    if (m->device == 0) continue; /* a slot no device has used yet */
    if (!first) http_buf_append(b, ",", 1);
    first = 0;
    device_json(b, s, m);
  }
  http_buf_append(b, "]}", 2);
}

static void kv_bool(http_buf *b, const char *k, int v, int comma) {
  key(b, k);
  http_buf_puts(b, v ? "true" : "false");
  if (comma) http_buf_append(b, ",", 1);
}

static void queue(http_buf *b, const char *name, const serve_queue_figures *q, int comma) {
  key(b, name);
  http_buf_append(b, "{", 1);
  kv_u64(b, "len", q->len, 1);
  kv_u64(b, "capacity", q->capacity, 1);
  kv_u64(b, "senders_waiting", q->senders_waiting, 1);
  kv_u64(b, "full_waits", q->full_waits, 0);
  http_buf_puts(b, comma ? "}," : "}");
}

static void semaphore(http_buf *b, const char *name, const serve_permit_figures *s, int comma) {
  key(b, name);
  http_buf_append(b, "{", 1);
  kv_u64(b, "permits", s->permits, 1);
  kv_u64(b, "in_use", s->in_use, 1);
  kv_u64(b, "waiters", s->waiters, 1);
  kv_u64(b, "waits", s->waits, 0);
  http_buf_puts(b, comma ? "}," : "}");
}

/* The figures as the dashboard draws them: the stages of DESIGN.md's
 * diagram, left to right. */
void api_json_pipeline(http_buf *b, api_server *a) {
  serve_figures f = {0};
  if (a->deps.figures) a->deps.figures(a->deps.ctx, &f);
  http_server_stats h;
  stream_figures st;
  uint64_t hr[API_HEALTH_RESULTS];
  api_server_stats(a, &h, &st, hr);

  http_buf_append(b, "{", 1);
  kv_bool(b, "has_pipeline", a->deps.figures != NULL, 1);
  kv_i64(b, "uptime_ms", f.uptime_ms, 1);
  kv_bool(b, "stopping", f.stopping, 1);
  key(b, "devices");
  http_buf_append(b, "{", 1);
  kv_u64(b, "connected", f.devices_connected, 1);
  kv_u64(b, "known", f.devices_known, 1);
  kv_u64(b, "connections", f.connections_open, 1);
  kv_u64(b, "accepted", f.connections_accepted, 1);
  kv_u64(b, "rejected", f.connections_rejected, 1);
  kv_u64(b, "closed_errors", f.connections_closed_errors, 1);
  kv_u64(b, "write_timeouts", f.connections_write_timeouts, 1);
  kv_u64(b, "lines", f.lines_received, 1);
  kv_u64(b, "bytes", f.bytes_received, 0);
  http_buf_puts(b, "},");
  key(b, "readings");
  http_buf_append(b, "{", 1);
  kv_u64(b, "received", f.readings_received, 1);
  kv_u64(b, "aggregated", f.readings_aggregated, 1);
  kv_u64(b, "stored", f.readings_stored, 1);
  kv_u64(b, "duplicate", f.readings_duplicate, 0);
  http_buf_puts(b, "},");
  key(b, "bad_input");
  http_buf_append(b, "{", 1);
  for (int r = 1; r < SERVE_BAD_REASONS; r++)
    kv_u64(b, metrics_bad_reason_name(r), f.bad_input[r], r + 1 < SERVE_BAD_REASONS);
  http_buf_puts(b, "},");
  key(b, "queues");
  http_buf_append(b, "{", 1);
  queue(b, "telemetry", &f.telemetry, 1);
  queue(b, "storage", &f.storage, 0);
  http_buf_puts(b, "},");
  key(b, "semaphores");
  http_buf_append(b, "{", 1);
  semaphore(b, "bandwidth", &f.bandwidth, 1);
  semaphore(b, "db_pool", &f.db_pool, 0);
  http_buf_puts(b, "},");
  key(b, "batches");
  http_buf_append(b, "{", 1);
  kv_u64(b, "flushed", f.batches_flushed, 1);
  kv_u64(b, "stored", f.batches_stored, 1);
  kv_u64(b, "lost", f.batches_lost, 1);
  kv_u64(b, "transactions", f.transactions, 1);
  kv_u64(b, "retries", f.write_retries, 0);
  http_buf_puts(b, "},");
  key(b, "broadcast");
  http_buf_append(b, "{", 1);
  kv_u64(b, "published", f.snapshots_published, 1);
  kv_u64(b, "len", f.broadcast_len, 1);
  kv_u64(b, "capacity", f.broadcast_capacity, 1);
  kv_u64(b, "receivers", f.broadcast_receivers, 1);
  kv_u64(b, "lag_events", f.lag_events, 1);
  kv_u64(b, "lagged_messages", f.lagged_messages, 1);
  kv_u64(b, "clients", f.clients_connected, 0);
  http_buf_puts(b, "},");
  key(b, "health");
  http_buf_append(b, "{", 1);
  kv_u64(b, "rounds", f.health.rounds, 1);
  kv_u64(b, "requests", f.health.requests, 1);
  kv_u64(b, "ok", f.health.ok, 1);
  kv_u64(b, "timeout", f.health.timeout, 1);
  kv_u64(b, "disconnected", f.health.disconnected, 1);
  kv_u64(b, "unknown", f.health.unknown, 0);
  http_buf_puts(b, "},");
  key(b, "http");
  http_buf_append(b, "{", 1);
  kv_u64(b, "connections", h.connections_open, 1);
  kv_u64(b, "accepted", h.connections_accepted, 1);
  kv_u64(b, "rejected", h.connections_rejected, 1);
  kv_u64(b, "requests", h.requests, 1);
  kv_u64(b, "write_timeouts", h.write_timeouts, 0);
  http_buf_puts(b, "},");
  key(b, "sse");
  http_buf_append(b, "{", 1);
  kv_u64(b, "clients", st.clients, 1);
  kv_u64(b, "streams", st.streams, 1);
  kv_u64(b, "events", st.events, 1);
  kv_u64(b, "resyncs", st.resyncs, 1);
  kv_u64(b, "lagged_messages", st.lagged_messages, 1);
  kv_u64(b, "skipped_stale", st.skipped_stale, 1);
  kv_u64(b, "coalesced", st.coalesced, 1);
  kv_u64(b, "dropped", st.dropped, 0);
  http_buf_puts(b, "}}");
}
