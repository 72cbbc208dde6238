/* summary.c - the end-of-run report; see summary.h. */
#include "summary.h"

#include "device.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* "name(n)" padded to a column. */
static void label(FILE *f, const char *name, int n) {
  int w = fprintf(f, "%s(%d)", name, n);
  fprintf(f, "%*s", w < 15 ? 15 - w : 1, "");
}

static void seconds(FILE *f, int64_t ms) { fprintf(f, "%" PRId64 ".%03" PRId64 " s", ms / 1000, ms % 1000); }

char *summary_text(const demo_summary *s, const demo_config *c) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return NULL;
  uint64_t lags = 0, resyncs = 0;
  for (int i = 0; i < s->nclients; i++) {
    lags += s->clients[i].lagged_events;
    resyncs += s->clients[i].resyncs;
  }
  fprintf(f, "\n=== telegate demo: summary ===\n");
  fprintf(f, "run           %.3f s on the %s clock, seed %" PRIu64 ", preset %s; stopped by %s at ", s->runtime_s,
          c->clock == TG_CLOCK_VIRTUAL ? "virtual" : "real", c->seed, demo_preset_name(c->preset),
          demo_stop_reason_name(s->stop_reason));
  seconds(f, s->stop_at_ms);
  fprintf(f,
          "\nreadings      sent %" PRIu64 ", aggregated %" PRIu64 ", stored %" PRIu64 ", rows in the database %" PRIu64
          ": %s\n",
          s->readings_sent, s->readings_aggregated, s->readings_stored, s->db_rows,
          s->lossless ? "nothing lost" : "MISMATCH - readings were lost");
  if (s->lossless)
    fprintf(f, "              (on a graceful stop; across a crash it takes acks: devices keep what is not\n"
               "              committed yet and resend it - telegate serve does, see docs/demo.md)\n");
  fprintf(f,
          "batches       %" PRIu64 " cut, %" PRIu64 " committed in %" PRIu64 " transactions (%" PRIu64
          " failed and were retried, %" PRIu64 " lost)\n",
          s->batches_flushed, s->batches_stored, s->transactions, s->write_retries, s->batches_lost);
  fprintf(f, "backpressure  telemetry channel full %6" PRIu64 " waits  (mpsc of %d)\n", s->telemetry_full_waits,
          c->telemetry_capacity);
  fprintf(f, "              storage queue full     %6" PRIu64 " waits  (mpsc of %d)\n", s->storage_full_waits,
          c->storage_capacity);
  fprintf(f,
          "              bandwidth slot         %6" PRIu64 " waits  (Semaphore of %d, %" PRIu64
          " served out of FIFO order)\n",
          s->device_slot_waits, c->device_slots, s->slot_fifo_violations);
  fprintf(f, "              DB connection          %6" PRIu64 " waits  (Semaphore of %d)\n", s->db_pool_waits,
          c->db_pool);
  if (!s->telemetry_full_waits && !s->storage_full_waits && !s->device_slot_waits && !s->db_pool_waits)
    fprintf(f, "              (these numbers leave headroom everywhere; --preset pressure shows each wait)\n");
  fprintf(f,
          "snapshots     %" PRIu64 " built once each, %" PRIu64 " broadcast, shared by reference count; %" PRIu64
          " leaked\n",
          s->snapshots_built, s->snapshots_broadcast, s->snapshots_leaked);
  fprintf(f, "clients       id  received  processed  lag events  lagged msgs  resyncs  stale skipped\n");
  for (int i = 0; i < s->nclients; i++) {
    const demo_client_summary *cl = &s->clients[i];
    fprintf(
        f, "              %2d  %8" PRIu64 "  %9" PRIu64 "  %10" PRIu64 "  %11" PRIu64 "  %7" PRIu64 "  %13" PRIu64 "\n",
        cl->id, cl->received, cl->processed, cl->lagged_events, cl->lagged_messages, cl->resyncs, cl->skipped_stale);
  }
  fprintf(f, "devices       id  sent  slot waits  full waits  last reading\n");
  for (int i = 0; i < s->ndevices; i++) {
    const demo_device_summary *dv = &s->devices[i];
    fprintf(f, "              %2d  %4" PRIu64 "  %10" PRIu64 "  %10" PRIu64 "  ", dv->id, dv->sent, dv->slot_waits,
            dv->full_waits);
    if (dv->last_sent_ms < 0)
      fprintf(f, "none");
    else
      seconds(f, dv->last_sent_ms);
    fprintf(f, "%s\n", dv->panicked ? "  (panicked)" : "");
  }
  fprintf(f,
          "health        %" PRIu64 " rounds: %" PRIu64 " ok, %" PRIu64 " timeout, %" PRIu64 " dropped, %" PRIu64
          " unreachable\n",
          s->health.rounds, s->health.ok, s->health.timeout, s->health.dropped, s->health.unreachable);
  fprintf(f,
          "tasks         %" PRIu64 " spawned, %" PRIu64 " joined, %" PRIu64 " panicked, %" PRIu64 " aborted (%" PRIu64
          " pipeline tasks in one JoinSet + %" PRIu64 " batch writers in storage's)\n",
          s->tasks.spawned, s->tasks.joined, s->tasks.panicked, s->tasks.aborted, s->tasks.pipeline, s->tasks.writers);
  fprintf(f, "shutdown      %" PRId64 " ms from the request to the last join\n", s->shutdown_ms);

  fprintf(f, "\n=== primitives and the role each played ===\n");
  label(f, "mpsc", c->telemetry_capacity);
  fprintf(f, "devices -> aggregator: %" PRIu64 " readings, %" PRIu64 " sends waited for space\n", s->readings_sent,
          s->telemetry_full_waits);
  label(f, "mpsc", c->storage_capacity);
  fprintf(f, "aggregator -> storage: %" PRIu64 " batches, %" PRIu64 " sends waited for space\n", s->batches_flushed,
          s->storage_full_waits);
  label(f, "broadcast", c->broadcast_capacity);
  fprintf(f, "aggregator -> %d clients: %" PRIu64 " snapshots, %" PRIu64 " lag events\n", s->nclients,
          s->snapshots_broadcast, lags);
  fprintf(f,
          "%-15s"
          "the latest snapshot (version %" PRIu64 "): read by %" PRIu64 " resyncs and each client's final view\n",
          "watch", s->snapshots_built, resyncs);
  fprintf(f,
          "%-15s"
          "health replies: %" PRIu64 " ok, %" PRIu64 " timeout, %" PRIu64 " sender dropped\n",
          "oneshot", s->health.ok, s->health.timeout, s->health.dropped);
  label(f, "mpsc", DEVICE_HEALTH_QUEUE);
  fprintf(f, "health requests, one channel per device, each carrying a oneshot sender\n");
  label(f, "Semaphore", c->device_slots);
  fprintf(f, "bandwidth slots, held while transmitting: %" PRIu64 " waits, served first come first served\n",
          s->device_slot_waits);
  label(f, "Semaphore", c->db_pool);
  fprintf(f, "DB pool in front of %d SQLite connections: %" PRIu64 " waits\n", c->db_pool, s->db_pool_waits);
  fprintf(f,
          "%-15s"
          "shutdown: latched, fired at ",
          "cancel token");
  seconds(f, s->stop_at_ms);
  fprintf(f, ", seen by every task at its next wait\n");
  fprintf(f,
          "%-15s"
          "%" PRIu64 " pipeline tasks joined in completion order; a panic ends one task alone\n",
          "JoinSet", s->tasks.pipeline);
  fprintf(f,
          "%-15s"
          "%" PRIu64 " SQLite transactions run off the workers (tg_blocking_run)\n",
          "blocking pool", s->transactions);
  fprintf(f,
          "%-15s"
          "not used: notify_waiters misses a task busy elsewhere, so shutdown is a cancel token\n",
          "Notify");
  fprintf(f, "\n=== where to look in the code ===\n"
             "mpsc           src/demo/device.c sends (and waits for space), src/pipeline/aggregator.c receives\n"
             "broadcast      src/pipeline/aggregator.c publishes, src/demo/client.c receives and resyncs on a lag\n"
             "watch          src/core/snapshot.c holds the latest, src/demo/client.c reads it\n"
             "oneshot        src/pipeline/health.c asks and times out, src/demo/device.c answers\n"
             "Semaphore      src/demo/device.c (bandwidth slots), src/pipeline/writer.c (DB pool)\n"
             "cancel token   src/demo/demo.c fires it; every task's tg_select has it as a case\n"
             "JoinSet        src/pipeline/pipeline.c (the stages), src/pipeline/writer.c (batch writers)\n"
             "blocking pool  src/pipeline/writer.c runs each transaction through tg_blocking_run\n"
             "docs/primitives.md has each one's contract, docs/demo.md the scenario\n");
  fclose(f);
  return text;
}

static void add_u64(cJSON *o, const char *k, uint64_t v) { cJSON_AddNumberToObject(o, k, (double)v); }

char *summary_json(const demo_summary *s, const demo_config *c, int pretty) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  add_u64(o, "readings_sent", s->readings_sent);
  add_u64(o, "readings_aggregated", s->readings_aggregated);
  add_u64(o, "readings_stored", s->readings_stored);
  add_u64(o, "db_rows", s->db_rows);
  cJSON_AddBoolToObject(o, "lossless", s->lossless);
  add_u64(o, "batches_flushed", s->batches_flushed);
  add_u64(o, "batches_stored", s->batches_stored);
  add_u64(o, "batches_lost", s->batches_lost);
  add_u64(o, "transactions", s->transactions);
  add_u64(o, "write_retries", s->write_retries);
  add_u64(o, "telemetry_full_waits", s->telemetry_full_waits);
  add_u64(o, "storage_full_waits", s->storage_full_waits);
  add_u64(o, "device_slot_waits", s->device_slot_waits);
  add_u64(o, "db_pool_waits", s->db_pool_waits);
  add_u64(o, "slot_fifo_violations", s->slot_fifo_violations);
  add_u64(o, "snapshots_built", s->snapshots_built);
  add_u64(o, "snapshots_broadcast", s->snapshots_broadcast);
  add_u64(o, "snapshots_leaked", s->snapshots_leaked);
  cJSON *clients = cJSON_AddArrayToObject(o, "clients");
  for (int i = 0; i < s->nclients; i++) {
    const demo_client_summary *cl = &s->clients[i];
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "id", cl->id);
    add_u64(e, "received", cl->received);
    add_u64(e, "processed", cl->processed);
    add_u64(e, "lagged_events", cl->lagged_events);
    add_u64(e, "lagged_messages", cl->lagged_messages);
    add_u64(e, "resyncs", cl->resyncs);
    add_u64(e, "skipped_stale", cl->skipped_stale);
    cJSON_AddItemToArray(clients, e);
  }
  cJSON *devices = cJSON_AddArrayToObject(o, "devices");
  for (int i = 0; i < s->ndevices; i++) {
    const demo_device_summary *dv = &s->devices[i];
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "id", dv->id);
    add_u64(e, "sent", dv->sent);
    add_u64(e, "slot_waits", dv->slot_waits);
    add_u64(e, "full_waits", dv->full_waits);
    cJSON_AddNumberToObject(e, "last_sent_ms", (double)dv->last_sent_ms);
    cJSON_AddBoolToObject(e, "panicked", dv->panicked);
    cJSON_AddItemToArray(devices, e);
  }
  cJSON *h = cJSON_AddObjectToObject(o, "health");
  add_u64(h, "rounds", s->health.rounds);
  add_u64(h, "ok", s->health.ok);
  add_u64(h, "timeout", s->health.timeout);
  add_u64(h, "dropped", s->health.dropped);
  add_u64(h, "unreachable", s->health.unreachable);
  cJSON *t = cJSON_AddObjectToObject(o, "tasks");
  add_u64(t, "spawned", s->tasks.spawned);
  add_u64(t, "joined", s->tasks.joined);
  add_u64(t, "panicked", s->tasks.panicked);
  add_u64(t, "aborted", s->tasks.aborted);
  add_u64(t, "pipeline", s->tasks.pipeline);
  add_u64(t, "batch_writers", s->tasks.writers);
  cJSON_AddStringToObject(o, "stop_reason", demo_stop_reason_name(s->stop_reason));
  cJSON_AddNumberToObject(o, "stop_at_ms", (double)s->stop_at_ms);
  cJSON_AddNumberToObject(o, "shutdown_ms", (double)s->shutdown_ms);
  cJSON_AddNumberToObject(o, "runtime_s", s->runtime_s);
  cJSON_AddStringToObject(o, "preset", demo_preset_name(c->preset));
  cJSON_AddStringToObject(o, "clock", c->clock == TG_CLOCK_VIRTUAL ? "virtual" : "real");
  add_u64(o, "seed", c->seed);
  char *out = pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return out;
}

int demo_summary_write_json(const demo_summary *s, const demo_config *cfg, const char *path) {
  char *json = summary_json(s, cfg, 1);
  if (!json) return -ENOMEM;
  FILE *f = fopen(path, "w");
  if (!f) {
    free(json);
    return -errno;
  }
  int ok = fputs(json, f) >= 0 && fputc('\n', f) != EOF;
  ok = (fclose(f) == 0) && ok;
  free(json);
  return ok ? 0 : -EIO;
}
