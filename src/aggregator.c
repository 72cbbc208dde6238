/* aggregator.c - the aggregator task; see aggregator.h. */
#include "aggregator.h"

#include <inttypes.h>
#include <stdlib.h>

int aggregator_init(aggregator *a, int ndevices) {
  a->ndevices = ndevices;
  a->metrics = calloc((size_t)ndevices, sizeof *a->metrics);
  if (!a->metrics) return -1;
  for (int i = 0; i < ndevices; i++) a->metrics[i].device = (uint32_t)i + 1;
  a->last_reading_ns = -1;
  return 0;
}

void aggregator_free(aggregator *a) {
  free(a->metrics);
  a->metrics = NULL;
  batch_free(&a->current);
}

static void publish(aggregator *a, int64_t now_ms) {
  system_snapshot *s = snapshot_new(a->snapshots, a->version + 1, now_ms, a->aggregated, a->metrics,
                                    (uint32_t)a->ndevices);
  if (!s) {
    a->snapshot_failures++;
    return;
  }
  a->version++;
  /* Two references: one moves into the watch, one into the broadcast
   * ring, whose receivers each take another - never a copy. */
  snapshot_ref(s);
  tg_watch_send(a->latest, &s);
  if (tg_broadcast_send(a->updates, &s, NULL) == 0) a->snapshots_broadcast++;
  else snapshot_unref(s); /* no client subscribed: ours to drop */
}

static void process(aggregator *a, const reading *r) {
  if (a->delay_ns > 0) tg_sleep(a->delay_ns); /* simulated parsing work */
  int64_t now = tg_now() - a->t0;
  if (r->device >= 1 && r->device <= (uint32_t)a->ndevices) {
    device_metrics *m = &a->metrics[r->device - 1];
    m->count++;
    m->avg_temperature += (r->temperature - m->avg_temperature) / (double)m->count;
    m->avg_humidity += (r->humidity - m->avg_humidity) / (double)m->count;
    m->last_seen_ms = now / 1000000;
    m->last_seq = r->seq;
    m->battery = r->battery;
  }
  a->aggregated++;
  a->last_reading_ns = now;
  if (batch_push(&a->current, r) != 0)
    log_event(a->log, "❌", "aggregator", 0, "out_of_memory", "Aggregator out of memory for the batch");
  publish(a, now / 1000000);
}

static size_t storage_len(aggregator *a) {
  tg_mpsc_stats st;
  tg_mpsc_stats_get(a->storage, &st);
  return st.len;
}

/* Hands the current batch to storage. With `wait_for_shutdown` the wait
 * for queue space also ends when the token fires: the batch then stays
 * current and goes out with the final one. Returns 0, 1 when the token
 * ended the wait, or TG_ECLOSED / TG_ECANCELED. */
static int flush(aggregator *a, int wait_for_shutdown) {
  batch *b = &a->current;
  if (b->n == 0) return 0;
  if (b->id == 0) b->id = ++a->next_batch_id;
  int r = tg_mpsc_try_send(a->storage, b);
  if (r == TG_EFULL) {
    a->storage_full_waits++;
    uint64_t held;
    if (log_gate_pass(&a->full_gate, tg_now(), TG_MS(1000), &held))
      log_event(a->log, "📦", "aggregator", 0, "storage_full",
                "Storage queue full (%zu/%zu) - applying backpressure: batch #%" PRIu64 " waits%s",
                a->storage_capacity, a->storage_capacity, b->id, log_held_note(held).s);
    if (wait_for_shutdown) {
      tg_case cs[2] = {tg_cancel_case(a->cancel), tg_mpsc_send_case(a->storage, b)};
      int w = tg_select(cs, 2, TG_FOREVER);
      if (w != 1) return w == 0 ? 1 : w;
      r = cs[1].result;
    } else {
      r = tg_mpsc_send(a->storage, b);
    }
  }
  if (r != 0) return r;
  a->batches_flushed++;
  a->readings_flushed += b->n;
  uint64_t held;
  if (log_gate_pass(&a->batch_gate, tg_now(), TG_MS(1000), &held))
    log_event(a->log, "📦", "aggregator", 0, "batch_flushed",
              "Batch #%" PRIu64 ": %" PRIu32 " readings -> storage queue (%zu/%zu)%s", b->id, b->n,
              storage_len(a), a->storage_capacity, log_held_note(held).s);
  *b = (batch){0}; /* the items moved with the batch */
  return 0;
}

static void start_draining(aggregator *a, int *draining) {
  if (*draining) return;
  *draining = 1;
  log_event(a->log, "🛑", "aggregator", 0, "aggregator_draining",
            "Aggregator sees shutdown: draining telemetry until every device has hung up");
}

void *aggregator_task(void *arg) {
  aggregator *a = arg;
  int64_t next_cut = a->t0 + a->batch_interval_ns;
  int draining = 0;
  const char *end = "every device hung up";
  for (;;) {
    reading r;
    int got;
    if (!draining) {
      /* A select completes a ready case without looking at its deadline,
       * and under load the channel is always ready: so the batch timer is
       * checked here, not left to the select's timeout alone. */
      int w = TG_ETIMEDOUT;
      tg_case cs[2] = {tg_cancel_case(a->cancel), tg_mpsc_recv_case(a->telemetry, &r)};
      if (tg_now() < next_cut) w = tg_select(cs, 2, next_cut);
      /* A batch tick that fell due with the token already fired (they
       * may share an instant) is no tick: the token comes first. */
      if (w == 0 || (w == TG_ETIMEDOUT && tg_cancel_fired(a->cancel))) {
        start_draining(a, &draining);
        continue;
      }
      if (w == TG_ETIMEDOUT) {
        int f = flush(a, 1);
        if (f == 1) start_draining(a, &draining);
        else if (f != 0) end = tg_err_name(f);
        next_cut += a->batch_interval_ns;
        if (next_cut <= tg_now()) next_cut = tg_now() + a->batch_interval_ns;
        continue;
      }
      got = w == 1 ? cs[1].result : w;
    } else {
      got = tg_mpsc_recv(a->telemetry, &r);
    }
    if (got != 0) {
      if (got != TG_ECLOSED) end = tg_err_name(got);
      break;
    }
    process(a, &r);
  }
  uint64_t final_id = a->current.n ? (a->current.id ? a->current.id : a->next_batch_id + 1) : 0;
  uint32_t final_n = a->current.n;
  int f = flush(a, 0);
  if (f != 0)
    log_event(a->log, "❌", "aggregator", 0, "final_batch_lost", "Final batch #%" PRIu64 " not handed to storage: %s",
              final_id, tg_strerror(f));
  tg_mpsc_tx_drop(a->storage);
  tg_watch_tx_drop(a->latest);
  tg_broadcast_tx_drop(a->updates);
  tg_mpsc_rx_drop(a->telemetry);
  a->storage = NULL;
  a->latest = NULL;
  a->updates = NULL;
  a->telemetry = NULL;
  if (final_n)
    log_event(a->log, "📦", "aggregator", 0, "aggregator_drained",
              "Aggregator drained (%s): %" PRIu64 " readings aggregated, final batch #%" PRIu64
              " with %" PRIu32 " readings; storage, watch and broadcast closed",
              end, a->aggregated, final_id, final_n);
  else
    log_event(a->log, "📦", "aggregator", 0, "aggregator_drained",
              "Aggregator drained (%s): %" PRIu64 " readings aggregated, no partial batch left; "
              "storage, watch and broadcast closed",
              end, a->aggregated);
  return NULL;
}
