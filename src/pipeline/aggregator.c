/* aggregator.c - the aggregator task; see aggregator.h. */
#include "aggregator.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NAME_LEN = 12 };

/* Invariant: metrics[i].device == i + 1 for i < ndevices; ndevices <=
 * cap_devices <= max(max_devices, the initial ndevices). The figures are
 * written by the task alone and read from anywhere. */
struct aggregator {
  aggregator_opts o; /* the channel ends in it are owned until dropped */
  int ndevices;      /* entries of metrics in use */
  int cap_devices;   /* entries allocated */
  device_metrics *metrics;
  char *names;   /* the initial ids "1".."n" */
  batch current; /* readings not yet handed to storage */
  uint64_t next_batch_id;
  uint64_t unpublished; /* readings since the last snapshot */
  int64_t last_publish_ns;
  log_gate full_gate, batch_gate;
  figure aggregated, batches_flushed, readings_flushed, storage_full_waits;
  figure version; /* snapshots built */
  figure snapshots_broadcast, snapshot_failures;
  _Atomic int64_t last_reading_ns;
  int64_t stale_at_ns;                            /* publish then: a device turns stale (INT64_MAX: none) */
  _Atomic uint32_t devices_active, devices_stale; /* of the latest snapshot */
  /* the fleet view, as its latest message said */
  const char *self;
  uint32_t nodes;
  uint64_t remote_total;
};

/* Messages of the fleet view taken per wake at most, so that a burst of
 * them cannot hold the readings back. */
enum { REMOTE_BURST = 16 };

static void drop_channels(aggregator_opts *o) {
  if (o->remote) {
    aggregator_remote *u;
    while (tg_mpsc_try_recv(o->remote, &u) == 0) free(u);
    tg_mpsc_rx_drop(o->remote);
    o->remote = NULL;
  }
  if (o->telemetry) tg_mpsc_rx_drop(o->telemetry);
  if (o->storage) tg_mpsc_tx_drop(o->storage);
  if (o->latest) tg_watch_tx_drop(o->latest);
  if (o->updates) tg_broadcast_tx_drop(o->updates);
  o->telemetry = NULL;
  o->storage = NULL;
  o->latest = NULL;
  o->updates = NULL;
}

int aggregator_new(const aggregator_opts *opts, aggregator **out) {
  *out = NULL;
  aggregator *a = calloc(1, sizeof *a);
  int n = opts->ndevices > 0 ? opts->ndevices : 0;
  if (a) {
    a->o = *opts;
    a->metrics = calloc(n ? (size_t)n : 1, sizeof *a->metrics);
    a->names = calloc(n ? (size_t)n : 1, NAME_LEN);
  }
  if (!a || !a->metrics || !a->names) {
    aggregator_opts o = *opts;
    drop_channels(&o);
    if (a) {
      free(a->metrics);
      free(a->names);
      free(a);
    }
    return TG_ENOMEM;
  }
  a->ndevices = a->cap_devices = n;
  for (int i = 0; i < n; i++) {
    char *name = a->names + (size_t)i * NAME_LEN;
    snprintf(name, NAME_LEN, "%d", i + 1);
    a->metrics[i].device = (uint32_t)i + 1;
    a->metrics[i].id = name;
  }
  if (a->o.publish_every == 0) a->o.publish_every = 1;
  if (a->o.burst < 1) a->o.burst = 1;
  atomic_init(&a->last_reading_ns, -1);
  a->stale_at_ns = INT64_MAX;
  a->nodes = 1;
  *out = a;
  return 0;
}

void aggregator_free(aggregator *a) {
  if (!a) return;
  drop_channels(&a->o);
  free(a->metrics);
  free(a->names);
  batch_free(&a->current);
  free(a);
}

void aggregator_figures_get(const aggregator *a, aggregator_figures *out) {
  *out = (aggregator_figures){.aggregated = figure_get(&a->aggregated),
                              .batches_flushed = figure_get(&a->batches_flushed),
                              .readings_flushed = figure_get(&a->readings_flushed),
                              .storage_full_waits = figure_get(&a->storage_full_waits),
                              .snapshots_built = figure_get(&a->version),
                              .snapshots_broadcast = figure_get(&a->snapshots_broadcast),
                              .snapshot_failures = figure_get(&a->snapshot_failures),
                              .last_reading_ns = atomic_load_explicit(&a->last_reading_ns, memory_order_relaxed),
                              .devices_active = atomic_load_explicit(&a->devices_active, memory_order_relaxed),
                              .devices_stale = atomic_load_explicit(&a->devices_stale, memory_order_relaxed)};
}

static void publish(aggregator *a, int64_t now_ns) {
  int64_t window_ms = a->o.stale_after_ns ? a->o.stale_after_ns / 1000000 : SNAPSHOT_ACTIVE_MS;
  system_snapshot *s =
      snapshot_new_windowed(a->o.snapshots, figure_get(&a->version) + 1, (now_ns - a->o.t0) / 1000000,
                            figure_get(&a->aggregated) + a->remote_total, a->metrics, (uint32_t)a->ndevices, window_ms);
  a->unpublished = 0;
  a->last_publish_ns = now_ns;
  if (!s) {
    figure_add(&a->snapshot_failures, 1);
    return;
  }
  s->schema = a->o.schema;
  s->node = a->self;
  s->nodes = a->nodes;
  s->node_messages = figure_get(&a->aggregated);
  atomic_store_explicit(&a->devices_active, s->active_devices, memory_order_relaxed);
  atomic_store_explicit(&a->devices_stale, s->stale_devices, memory_order_relaxed);
  /* The next device to turn stale does so a millisecond after its window. */
  a->stale_at_ns =
      a->o.stale_after_ns && s->next_stale_ms != INT64_MAX ? a->o.t0 + (s->next_stale_ms + 1) * 1000000 : INT64_MAX;
  figure_add(&a->version, 1);
  /* Two references: one moves into the watch, one into the broadcast
   * ring, whose receivers each take another - never a copy. */
  snapshot_ref(s);
  tg_watch_send(a->o.latest, &s);
  if (tg_broadcast_send(a->o.updates, &s, NULL) == 0)
    figure_add(&a->snapshots_broadcast, 1);
  else
    snapshot_unref(s); /* no client subscribed: ours to drop */
}

/* The state of device `id`, growing the table up to max_devices. */
static device_metrics *metrics_of(aggregator *a, uint32_t id) {
  if (id >= 1 && id <= (uint32_t)a->ndevices) return &a->metrics[id - 1];
  if (id < 1 || id > (uint32_t)a->o.max_devices) return NULL;
  if (id > (uint32_t)a->cap_devices) {
    uint32_t cap = a->cap_devices > 0 ? (uint32_t)a->cap_devices : 64;
    while (cap < id) cap *= 2;
    if (cap > (uint32_t)a->o.max_devices) cap = (uint32_t)a->o.max_devices;
    device_metrics *m = realloc(a->metrics, (size_t)cap * sizeof *m);
    if (!m) return NULL;
    a->metrics = m;
    a->cap_devices = (int)cap;
  }
  for (uint32_t i = (uint32_t)a->ndevices + 1; i <= id; i++) {
    const char *name = a->o.device_name ? a->o.device_name(a->o.device_name_ctx, i) : NULL;
    a->metrics[i - 1] = (device_metrics){.device = i, .id = name ? name : "?"};
  }
  a->ndevices = (int)id;
  return &a->metrics[id - 1];
}

/* Adds a reading's numeric fields to its device's: each takes the slot
 * of its name, or a free one while there is one. */
static void fields_add(device_metrics *m, const reading *r) {
  const field_value *f = reading_fields(r);
  for (uint32_t i = 0; i < r->nfields; i++) {
    if (f[i].type != FIELD_FLOAT && f[i].type != FIELD_INT && f[i].type != FIELD_BOOL) continue;
    /* its slot is most often its place: a device sends its fields in one order */
    int k = i < SNAPSHOT_FIELDS && m->field_name[i] == f[i].name ? (int)i : 0;
    while (k < SNAPSHOT_FIELDS && m->field_name[k] && m->field_name[k] != f[i].name) k++;
    if (k == SNAPSHOT_FIELDS) continue;
    m->field_name[k] = f[i].name;
    m->field_type[k] = f[i].type;
    double x = field_number(&f[i]);
    m->field_count[k]++;
    m->field_value[k] = f[i].type == FIELD_FLOAT ? m->field_value[k] + (x - m->field_value[k]) / m->field_count[k] : x;
  }
}

/* Aggregates one reading at `now` (tg_now()), which goes into the batch. */
static void process(aggregator *a, reading *r, int64_t now) {
  if (a->o.delay_ns > 0) { /* simulated parsing work */
    tg_sleep(a->o.delay_ns);
    now = tg_now();
  }
  int64_t run = now - a->o.t0;
  device_metrics *m = metrics_of(a, r->device);
  if (m) {
    m->count++;
    fields_add(m, r);
    m->last_seen_ms = run / 1000000;
    m->last_seq = r->seq;
    m->node = NULL; /* ours now, whoever had it */
  }
  figure_add(&a->aggregated, 1);
  atomic_store_explicit(&a->last_reading_ns, run, memory_order_relaxed);
  if (a->current.n == 0) a->current.opened_ns = now;
  if (batch_push(&a->current, r) != 0) {
    log_event(a->o.log, "❌", "aggregator", 0, "out_of_memory", "Aggregator out of memory for the batch");
    reading_free(r);
  }
  if (++a->unpublished >= a->o.publish_every) publish(a, now);
}

/* Merges one message of the fleet view (see the note in aggregator.h on
 * which state wins) and frees it. */
static void merge_remote(aggregator *a, aggregator_remote *u, int64_t now) {
  a->self = u->self;
  a->nodes = u->nodes;
  a->remote_total = u->remote_total;
  for (uint32_t i = 0; i < u->n; i++) {
    const device_metrics *d = &u->devices[i];
    device_metrics *m = metrics_of(a, d->device);
    if (!m) continue;
    if (m->count && (d->last_seq < m->last_seq || (d->last_seq == m->last_seq && !m->node))) continue;
    const char *id = m->id;
    *m = *d;
    m->id = id;
    m->merged_ms = (now - a->o.t0) / 1000000;
  }
  a->unpublished++; /* published by the interval, as readings are */
  free(u);
}

static size_t storage_len(aggregator *a) {
  tg_mpsc_stats st;
  tg_mpsc_stats_get(a->o.storage, &st);
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
  int r = tg_mpsc_try_send(a->o.storage, b);
  if (r == TG_EFULL) {
    figure_add(&a->storage_full_waits, 1);
    uint64_t held;
    if (log_gate_pass(&a->full_gate, tg_now(), TG_MS(1000), &held))
      log_event(a->o.log, "📦", "aggregator", 0, "storage_full",
                "Storage queue full (%zu/%zu) - applying backpressure: batch #%" PRIu64 " waits%s",
                a->o.storage_capacity, a->o.storage_capacity, b->id, log_held_note(held).s);
    if (wait_for_shutdown) {
      tg_case cs[2] = {tg_cancel_case(a->o.cancel), tg_mpsc_send_case(a->o.storage, b)};
      int w = tg_select(cs, 2, TG_FOREVER);
      if (w != 1) return w == 0 ? 1 : w;
      r = cs[1].result;
    } else {
      r = tg_mpsc_send(a->o.storage, b);
    }
  }
  if (r != 0) return r;
  figure_add(&a->batches_flushed, 1);
  figure_add(&a->readings_flushed, b->n);
  uint64_t held;
  if (log_gate_pass(&a->batch_gate, tg_now(), TG_MS(1000), &held))
    log_event(a->o.log, "📦", "aggregator", 0, "batch_flushed",
              "Batch #%" PRIu64 ": %" PRIu32 " readings -> storage queue (%zu/%zu)%s", b->id, b->n, storage_len(a),
              a->o.storage_capacity, log_held_note(held).s);
  *b = (batch){0};          /* the items moved with the batch */
  if (a->o.batch_max > 0) { /* the next one will be as large: allocate it once */
    b->items = malloc((size_t)a->o.batch_max * sizeof *b->items);
    b->cap = b->items ? a->o.batch_max : 0;
  }
  return 0;
}

static void start_draining(aggregator *a, int *draining) {
  if (*draining) return;
  *draining = 1;
  log_event(a->o.log, "🛑", "aggregator", 0, "aggregator_draining",
            "Aggregator sees shutdown: draining telemetry until every device has hung up");
}

void *aggregator_task(void *arg) {
  aggregator *a = arg;
  int64_t next_cut = a->o.t0 + a->o.batch_interval_ns;
  int draining = 0;
  const char *end = "every device hung up";
  a->last_publish_ns = tg_now();
  for (;;) {
    reading r;
    int got;
    int64_t now = tg_now();
    if ((a->unpublished && a->o.publish_interval_ns > 0 && now >= a->last_publish_ns + a->o.publish_interval_ns) ||
        now >= a->stale_at_ns)
      publish(a, now);
    if (!draining) {
      /* The fleet view's messages first, a few per wake: under load the
       * telemetry channel is always ready and would win every select. */
      aggregator_remote *u;
      for (int i = 0; a->o.remote && i < REMOTE_BURST && tg_mpsc_try_recv(a->o.remote, &u) == 0; i++)
        merge_remote(a, u, tg_now());
      /* A select completes a ready case without looking at its deadline,
       * and under load the channel is always ready: so the batch timer is
       * checked here, not left to the select's timeout alone. */
      int w = TG_ETIMEDOUT;
      tg_case cs[3] = {tg_cancel_case(a->o.cancel), tg_mpsc_recv_case(a->o.telemetry, &r)};
      if (a->o.remote) cs[2] = tg_mpsc_recv_case(a->o.remote, &u);
      int64_t deadline = next_cut;
      if (a->unpublished && a->o.publish_interval_ns > 0 && a->last_publish_ns + a->o.publish_interval_ns < deadline)
        deadline = a->last_publish_ns + a->o.publish_interval_ns;
      if (a->stale_at_ns < deadline) deadline = a->stale_at_ns;
      if (now < next_cut) w = tg_select(cs, a->o.remote ? 3 : 2, deadline);
      if (w == 2) {
        if (cs[2].result == 0) {
          merge_remote(a, u, tg_now());
        } else { /* the fleet view ended: what is there stays */
          tg_mpsc_rx_drop(a->o.remote);
          a->o.remote = NULL;
        }
        continue;
      }
      /* A batch tick that fell due with the token already fired (they
       * may share an instant) is no tick: the token comes first. */
      if (w == 0 || (w == TG_ETIMEDOUT && tg_cancel_fired(a->o.cancel))) {
        start_draining(a, &draining);
        continue;
      }
      if (w == TG_ETIMEDOUT) {
        if (tg_now() < next_cut) continue; /* a snapshot fell due */
        int f = flush(a, 1);
        if (f == 1)
          start_draining(a, &draining);
        else if (f != 0)
          end = tg_err_name(f);
        next_cut += a->o.batch_interval_ns;
        if (next_cut <= tg_now()) next_cut = tg_now() + a->o.batch_interval_ns;
        continue;
      }
      got = w == 1 ? cs[1].result : w;
    } else {
      got = tg_mpsc_recv(a->o.telemetry, &r);
    }
    if (got != 0) {
      if (got != TG_ECLOSED) end = tg_err_name(got);
      break;
    }
    now = tg_now();
    /* A full batch can still be current when the token ended its wait for
     * queue space: hand it over (draining, so waiting) before it grows. */
    if (a->o.batch_max && a->current.n >= a->o.batch_max) {
      int f = flush(a, 0);
      if (f != 0) end = tg_err_name(f);
    }
    process(a, &r, now);
    /* Under load, take what is queued without a select per reading. */
    for (int i = 1; i < a->o.burst && !(a->o.batch_max && a->current.n >= a->o.batch_max) &&
                    tg_mpsc_try_recv(a->o.telemetry, &r) == 0;
         i++)
      process(a, &r, now);
    if (a->o.batch_max && a->current.n >= a->o.batch_max) {
      int f = flush(a, !draining);
      if (f == 1)
        start_draining(a, &draining);
      else if (f != 0)
        end = tg_err_name(f);
      if (!draining) next_cut = tg_now() + a->o.batch_interval_ns;
    }
  }
  if (a->unpublished) publish(a, tg_now());
  uint64_t final_id = a->current.n ? (a->current.id ? a->current.id : a->next_batch_id + 1) : 0;
  uint32_t final_n = a->current.n;
  int f = flush(a, 0);
  if (f != 0)
    log_event(a->o.log, "❌", "aggregator", 0, "final_batch_lost", "Final batch #%" PRIu64 " not handed to storage: %s",
              final_id, tg_strerror(f));
  if (a->o.on_close) a->o.on_close(a->o.on_close_ctx);
  drop_channels(&a->o);
  if (final_n)
    log_event(a->o.log, "📦", "aggregator", 0, "aggregator_drained",
              "Aggregator drained (%s): %" PRIu64 " readings aggregated, final batch #%" PRIu64 " with %" PRIu32
              " readings; storage, watch and broadcast closed",
              end, figure_get(&a->aggregated), final_id, final_n);
  else
    log_event(a->o.log, "📦", "aggregator", 0, "aggregator_drained",
              "Aggregator drained (%s): %" PRIu64 " readings aggregated, no partial batch left; "
              "storage, watch and broadcast closed",
              end, figure_get(&a->aggregated));
  return NULL;
}
