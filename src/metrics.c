/* metrics.c - Prometheus text exposition of the gateway's figures; see
 * metrics.h. Every family is written whole (HELP, TYPE, all its samples)
 * before the next starts, as the format requires. */
#include "metrics.h"

#include <stdio.h>

const char *metrics_bad_reason_name(int reason) {
  if (reason > 0 && reason < PROTOCOL_REASON_COUNT) return protocol_reason_name(reason);
  /* XXX: serve_bad_reason_name says the same; it is not called so that
   * the HTTP side links (and is tested) without the whole of serve. */
  switch (reason) {
  case SERVE_BAD_TOO_MANY_DEVICES: return "too_many_devices";
  case SERVE_BAD_TRUNCATED: return "truncated";
  default: return NULL;
  }
}

const char *metrics_health_result_name(api_health_result r) {
  static const char *names[API_HEALTH_RESULTS] = {"ok", "timeout", "unknown", "disconnected",
                                                  "error"};
  return r >= 0 && r < API_HEALTH_RESULTS ? names[r] : "error";
}

static void family(http_buf *b, const char *name, const char *type, const char *help) {
  http_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample; `labels` is NULL or the inside of the braces. */
static void sample(http_buf *b, const char *name, const char *labels, uint64_t v) {
  http_buf_puts(b, name);
  if (labels) http_buf_printf(b, "{%s}", labels);
  http_buf_append(b, " ", 1);
  http_buf_u64(b, v);
  http_buf_append(b, "\n", 1);
}

static void counter(http_buf *b, const char *name, const char *help, uint64_t v) {
  family(b, name, "counter", help);
  sample(b, name, NULL, v);
}

static void gauge(http_buf *b, const char *name, const char *help, uint64_t v) {
  family(b, name, "gauge", help);
  sample(b, name, NULL, v);
}

/* A sample with one label; label values here are fixed words or numbers,
 * which need no escaping. */
static void labelled(http_buf *b, const char *name, const char *label, const char *value, uint64_t v) {
  char l[96];
  snprintf(l, sizeof l, "%s=\"%s\"", label, value);
  sample(b, name, l, v);
}

static void pipeline(http_buf *b, const serve_figures *f) {
  family(b, "telegate_uptime_seconds", "gauge", "Seconds since serve started.");
  http_buf_printf(b, "telegate_uptime_seconds %.3f\n", (double)f->uptime_ms / 1000.0);
  gauge(b, "telegate_stopping", "1 once the ordered shutdown has begun.", f->stopping ? 1 : 0);

  counter(b, "telegate_device_connections_accepted_total", "Device connections accepted.",
          f->connections_accepted);
  counter(b, "telegate_device_connections_rejected_total",
          "Device connections refused over the connection limit.", f->connections_rejected);
  counter(b, "telegate_device_connections_closed_total", "Device connections closed.",
          f->connections_closed);
  counter(b, "telegate_device_connections_closed_errors_total",
          "Device connections closed after too many bad lines in a row.", f->connections_closed_errors);
  counter(b, "telegate_device_write_timeouts_total",
          "Device connections closed because the device did not read.", f->connections_write_timeouts);
  gauge(b, "telegate_device_connections", "Device connections open now.", f->connections_open);
  gauge(b, "telegate_devices_known", "Distinct device ids seen.", f->devices_known);
  gauge(b, "telegate_devices_connected", "Devices whose last connection is open.", f->devices_connected);
  counter(b, "telegate_device_received_bytes_total", "Bytes read from device connections.",
          f->bytes_received);
  counter(b, "telegate_device_lines_total", "Lines read from device connections.", f->lines_received);

  counter(b, "telegate_readings_received_total",
          "Readings parsed and sent into the telemetry channel.", f->readings_received);
  counter(b, "telegate_readings_aggregated_total", "Readings aggregated into snapshots.",
          f->readings_aggregated);
  counter(b, "telegate_readings_stored_total", "Readings committed to the database.",
          f->readings_stored);
  counter(b, "telegate_readings_duplicate_total",
          "Readings resent by a device (seq at or below its high-water mark), dropped.",
          f->readings_duplicate);

  family(b, "telegate_bad_input_total", "counter", "Device lines rejected, by reason.");
  for (int r = 1; r < SERVE_BAD_REASONS; r++)
    labelled(b, "telegate_bad_input_total", "reason", metrics_bad_reason_name(r), f->bad_input[r]);
  counter(b, "telegate_error_lines_sent_total", "Error lines written back to devices.",
          f->error_lines_sent);
  counter(b, "telegate_error_lines_suppressed_total",
          "Error lines not written because of the per-connection rate limit.",
          f->error_lines_suppressed);

  family(b, "telegate_backpressure_waits_total", "counter",
         "Waits at a stage: a send into a full queue or an acquire of a busy semaphore.");
  labelled(b, "telegate_backpressure_waits_total", "stage", "telemetry", f->telemetry.full_waits);
  labelled(b, "telegate_backpressure_waits_total", "stage", "storage", f->storage.full_waits);
  labelled(b, "telegate_backpressure_waits_total", "stage", "bandwidth", f->bandwidth.waits);
  labelled(b, "telegate_backpressure_waits_total", "stage", "db_pool", f->db_pool.waits);

  family(b, "telegate_queue_length", "gauge", "Messages in a pipeline queue now.");
  labelled(b, "telegate_queue_length", "queue", "telemetry", f->telemetry.len);
  labelled(b, "telegate_queue_length", "queue", "storage", f->storage.len);
  family(b, "telegate_queue_capacity", "gauge", "Capacity of a pipeline queue.");
  labelled(b, "telegate_queue_capacity", "queue", "telemetry", f->telemetry.capacity);
  labelled(b, "telegate_queue_capacity", "queue", "storage", f->storage.capacity);
  family(b, "telegate_queue_senders_waiting", "gauge", "Senders blocked on a full queue now.");
  labelled(b, "telegate_queue_senders_waiting", "queue", "telemetry", f->telemetry.senders_waiting);
  labelled(b, "telegate_queue_senders_waiting", "queue", "storage", f->storage.senders_waiting);

  family(b, "telegate_permits_in_use", "gauge", "Semaphore permits held now.");
  labelled(b, "telegate_permits_in_use", "semaphore", "bandwidth", f->bandwidth.in_use);
  labelled(b, "telegate_permits_in_use", "semaphore", "db_pool", f->db_pool.in_use);
  family(b, "telegate_permits", "gauge", "Semaphore permits configured.");
  labelled(b, "telegate_permits", "semaphore", "bandwidth", f->bandwidth.permits);
  labelled(b, "telegate_permits", "semaphore", "db_pool", f->db_pool.permits);
  family(b, "telegate_permit_waiters", "gauge", "Tasks waiting for a permit now.");
  labelled(b, "telegate_permit_waiters", "semaphore", "bandwidth", f->bandwidth.waiters);
  labelled(b, "telegate_permit_waiters", "semaphore", "db_pool", f->db_pool.waiters);

  counter(b, "telegate_batches_flushed_total", "Batches cut by the aggregator for storage.",
          f->batches_flushed);
  counter(b, "telegate_batches_stored_total", "Batches committed.", f->batches_stored);
  counter(b, "telegate_batches_lost_total", "Batches that could not be committed.", f->batches_lost);
  counter(b, "telegate_transactions_total", "Database transactions run.", f->transactions);
  counter(b, "telegate_write_retries_total", "Batch transactions that failed and were retried.",
          f->write_retries);

  counter(b, "telegate_snapshots_published_total", "Snapshots published to the watch and broadcast.",
          f->snapshots_published);
  gauge(b, "telegate_broadcast_retained", "Snapshots retained in the broadcast ring.", f->broadcast_len);
  gauge(b, "telegate_broadcast_capacity", "Capacity of the broadcast ring.", f->broadcast_capacity);
  gauge(b, "telegate_broadcast_receivers", "Broadcast receivers subscribed now.", f->broadcast_receivers);
  counter(b, "telegate_broadcast_lag_events_total",
          "Times a broadcast receiver fell behind the ring (and had to resync).", f->lag_events);
  counter(b, "telegate_broadcast_lagged_messages_total",
          "Broadcast messages overwritten before a lagging receiver read them.", f->lagged_messages);
  gauge(b, "telegate_clients_connected", "Clients following the snapshots now.", f->clients_connected);

  family(b, "telegate_health_checks_total", "counter",
         "Device health checks (periodic and on demand), by result.");
  labelled(b, "telegate_health_checks_total", "result", "ok", f->health.ok);
  labelled(b, "telegate_health_checks_total", "result", "timeout", f->health.timeout);
  labelled(b, "telegate_health_checks_total", "result", "disconnected", f->health.disconnected);
  labelled(b, "telegate_health_checks_total", "result", "unknown", f->health.unknown);
  counter(b, "telegate_health_rounds_total", "Rounds of the periodic health checker.", f->health.rounds);
  counter(b, "telegate_health_requests_written_total", "Health requests written to devices.",
          f->health.requests);
  counter(b, "telegate_health_unmatched_replies_total",
          "Health replies nobody waited for (late, or a wrong id).", f->health.unmatched_replies);

  gauge(b, "telegate_tasks_alive", "libtg tasks alive now.", f->tasks_alive);
  gauge(b, "telegate_workers", "libtg worker threads.", (uint64_t)f->workers);
}

static void http_side(http_buf *b, const http_server_stats *h) {
  gauge(b, "telegate_http_connections", "HTTP connections open now.", h->connections_open);
  counter(b, "telegate_http_connections_accepted_total", "HTTP connections accepted.",
          h->connections_accepted);
  counter(b, "telegate_http_connections_rejected_total",
          "HTTP connections answered 503 over the connection limit.", h->connections_rejected);
  counter(b, "telegate_http_requests_total", "Complete HTTP requests handled.", h->requests);
  family(b, "telegate_http_responses_total", "counter", "HTTP responses, by status code.");
  for (int i = 0; i < h->nstatus; i++) {
    char code[16];
    if (h->status[i].code) snprintf(code, sizeof code, "%d", h->status[i].code);
    else snprintf(code, sizeof code, "other");
    labelled(b, "telegate_http_responses_total", "code", code, h->status[i].count);
  }
  counter(b, "telegate_http_write_timeouts_total",
          "HTTP clients dropped because they stopped reading.", h->write_timeouts);
  counter(b, "telegate_http_written_bytes_total", "Bytes written to HTTP clients.", h->bytes_written);
}

static void streams(http_buf *b, const stream_figures *s, const uint64_t *health_requests) {
  gauge(b, "telegate_sse_clients", "Server-Sent Events streams open now.", s->clients);
  counter(b, "telegate_sse_streams_total", "Server-Sent Events streams opened.", s->streams);
  counter(b, "telegate_sse_events_total", "Snapshot events sent to stream clients.", s->events);
  counter(b, "telegate_sse_resyncs_total",
          "Resync events: a stream client fell behind and got the full current snapshot.", s->resyncs);
  counter(b, "telegate_sse_lagged_messages_total",
          "Snapshots stream clients missed while they lagged.", s->lagged_messages);
  counter(b, "telegate_sse_skipped_stale_total",
          "Backlog snapshots skipped after a resync because they were older.", s->skipped_stale);
  counter(b, "telegate_sse_coalesced_total",
          "Snapshots replaced by a newer one within a stream's ?every= period.", s->coalesced);
  counter(b, "telegate_sse_dropped_total", "Streams ended because the client stopped reading.",
          s->dropped);
  if (!health_requests) return;
  family(b, "telegate_http_health_requests_total", "counter",
         "On-demand health checks requested over HTTP, by result.");
  for (int i = 0; i < API_HEALTH_RESULTS; i++)
    labelled(b, "telegate_http_health_requests_total", "result",
             metrics_health_result_name((api_health_result)i), health_requests[i]);
}

void metrics_write(http_buf *b, const serve_figures *f, const http_server_stats *h,
                   const stream_figures *s, const uint64_t *health_requests) {
  if (f) pipeline(b, f);
  if (h) http_side(b, h);
  if (s) streams(b, s, health_requests);
}
