/* pipeline.c - the channels and stages of the gateway, their start, their
 * ordered end and their figures; see pipeline.h. */
#include "pipeline.h"

#include "snapshot.h"
#include "writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A stage's task runs `fn` and reports its end: an end before the
 * shutdown token is a fault. */
typedef struct stage {
  pipeline *p;
  const char *name;
  uint64_t task_id;
  tg_task_fn fn;
  void *arg;
} stage;

enum { STAGE_STORAGE, STAGE_AGGREGATOR, STAGE_HEALTH, STAGES };

/* Invariant: the *_ref pointers are set while their channel is open and
 * are read for figures under fig_lock; once a stage closes its channel
 * it stores the channel's last figures in *_last and clears the ref. */
struct pipeline {
  pipeline_opts o;
  snapshot_counters snapshots;
  tg_joinset *tasks;
  tg_mpsc_tx *telemetry; /* ours until pipeline_seal */
  aggregator *agg;
  storage_stage *store;
  _Atomic(health_checker *) health;
  stage stages[STAGES];
  atomic_int faulted;
  figure joined, panicked, aborted; /* pipeline_join writes them, figures readers read them */
  _Atomic int64_t last_join_ns;
  pthread_mutex_t fig_lock;
  tg_mpsc_tx *telemetry_ref, *storage_ref;
  tg_broadcast_tx *updates_ref;
  tg_watch_tx *latest_ref;
  tg_mpsc_stats telemetry_last, storage_last;
  tg_broadcast_stats updates_last;
};

/* ------------------------------------------------------------ stages */

static void stage_ended(void *arg) {
  stage *st = arg;
  pipeline *p = st->p;
  if (tg_cancel_fired(p->o.cancel) || atomic_exchange(&p->faulted, 1)) return;
  log_event(p->o.log, "💥", "pipeline", 0, "stage_ended", "The %s stage ended before shutdown", st->name);
  if (p->o.on_fault) p->o.on_fault(p->o.on_fault_ctx, st->name);
}

static void *stage_main(void *arg) {
  stage *st = arg;
  tg_defer(stage_ended, st); /* TG_ENOMEM: the fault would go unreported, the stage still runs */
  return st->fn(st->arg);
}

static int spawn_stage(pipeline *p, int which, const char *name, tg_task_fn fn, void *arg) {
  stage *st = &p->stages[which];
  *st = (stage){.p = p, .name = name, .fn = fn, .arg = arg};
  tg_spawn_opts opts = {.stack_size = p->o.stack_size, .pin = p->o.pin, .worker = p->o.worker, .name = name};
  int r = tg_joinset_spawn(p->tasks, stage_main, st, &opts, &st->task_id);
  if (r != 0) log_event(p->o.log, "❌", "pipeline", 0, "spawn_failed", "Could not start %s: %s", name, tg_strerror(r));
  return r;
}

/* The aggregator closes telemetry, watch and broadcast; storage its channel. */
static void aggregator_closing(void *ctx) {
  pipeline *p = ctx;
  pthread_mutex_lock(&p->fig_lock);
  tg_mpsc_stats_get(p->telemetry_ref, &p->telemetry_last);
  tg_broadcast_stats_get(p->updates_ref, &p->updates_last);
  p->telemetry_ref = NULL;
  p->updates_ref = NULL;
  p->latest_ref = NULL;
  pthread_mutex_unlock(&p->fig_lock);
}

static void storage_closing(void *ctx) {
  pipeline *p = ctx;
  pthread_mutex_lock(&p->fig_lock);
  tg_mpsc_stats_get(p->storage_ref, &p->storage_last);
  p->storage_ref = NULL;
  pthread_mutex_unlock(&p->fig_lock);
}

/* ------------------------------------------------------------ building */

int pipeline_new(const pipeline_opts *o, pipeline **out) {
  *out = NULL;
  if (o->telemetry_capacity < 1 || o->storage_capacity < 1 || o->broadcast_capacity < 1 || o->db_pool < 1 ||
      o->db_pool > WRITER_MAX_POOL) {
    if (o->remote) tg_mpsc_rx_drop(o->remote);
    return TG_EINVAL;
  }
  pipeline *p = calloc(1, sizeof *p);
  if (!p) {
    if (o->remote) tg_mpsc_rx_drop(o->remote);
    return TG_ENOMEM;
  }
  p->o = *o;
  pthread_mutex_init(&p->fig_lock, NULL);
  tg_mpsc_rx *telemetry_rx = NULL, *storage_rx = NULL;
  tg_mpsc_tx *storage_tx = NULL;
  tg_broadcast_tx *updates = NULL;
  tg_watch_tx *latest = NULL;
  int r;
  if ((r = tg_joinset_new(&p->tasks, "pipeline")) ||
      (r = tg_mpsc_new(&(tg_mpsc_opts){.capacity = (size_t)o->telemetry_capacity,
                                       .elem_size = sizeof(reading),
                                       .name = "telemetry"},
                       &p->telemetry, &telemetry_rx)) ||
      (r = tg_mpsc_new(
           &(tg_mpsc_opts){.capacity = (size_t)o->storage_capacity, .elem_size = sizeof(batch), .name = "storage"},
           &storage_tx, &storage_rx)) ||
      (r = snapshot_channels_new(&p->snapshots, (size_t)o->broadcast_capacity, &updates, &latest))) {
    if (telemetry_rx) tg_mpsc_rx_drop(telemetry_rx);
    if (storage_rx) tg_mpsc_rx_drop(storage_rx);
    if (storage_tx) tg_mpsc_tx_drop(storage_tx);
    if (o->remote) tg_mpsc_rx_drop(o->remote);
    pipeline_free(p);
    return r;
  }
  p->telemetry_ref = p->telemetry;
  p->storage_ref = storage_tx;
  p->updates_ref = updates;
  p->latest_ref = latest;
  aggregator_opts ao = {.cancel = o->cancel,
                        .log = o->log,
                        .snapshots = &p->snapshots,
                        .schema = o->schema,
                        .telemetry = telemetry_rx,
                        .storage = storage_tx,
                        .latest = latest,
                        .updates = updates,
                        .remote = o->remote,
                        .ndevices = o->ndevices,
                        .max_devices = o->max_devices,
                        .device_name = o->device_name,
                        .device_name_ctx = o->device_name_ctx,
                        .on_close = aggregator_closing,
                        .on_close_ctx = p,
                        .t0 = o->t0,
                        .batch_interval_ns = o->batch_interval_ns,
                        .delay_ns = o->delay_ns,
                        .batch_max = o->batch_max,
                        .publish_every = o->publish_every,
                        .publish_interval_ns = o->publish_interval_ns,
                        .stale_after_ns = o->stale_after_ns,
                        .burst = o->burst,
                        .storage_capacity = (size_t)o->storage_capacity};
  if ((r = aggregator_new(&ao, &p->agg)) != 0) {
    /* aggregator_new dropped the channel ends it was given */
    p->telemetry_ref = p->storage_ref = NULL;
    p->updates_ref = NULL;
    p->latest_ref = NULL;
    tg_mpsc_rx_drop(storage_rx);
    pipeline_free(p);
    return r;
  }
  storage_stage_opts so = {.cancel = o->cancel,
                           .log = o->log,
                           .batches = storage_rx,
                           .db = o->db,
                           .pool = o->db_pool,
                           .pin_writers = o->pin,
                           .worker = o->worker,
                           .on_close = storage_closing,
                           .on_close_ctx = p,
                           .on_commit = o->on_commit,
                           .on_commit_ctx = o->on_commit_ctx};
  if ((r = storage_stage_new(&so, &p->store)) != 0) {
    tg_mpsc_rx_drop(storage_rx);
    pipeline_free(p);
    return r;
  }
  *out = p;
  return 0;
}

int pipeline_start(pipeline *p) {
  int r = spawn_stage(p, STAGE_STORAGE, "storage", storage_stage_task, p->store);
  if (r != 0) return r; /* the aggregator is not started: its channels go in pipeline_free */
  if ((r = spawn_stage(p, STAGE_AGGREGATOR, "aggregator", aggregator_task, p->agg)) != 0) {
    aggregator_closing(p);
    aggregator_free(p->agg); /* closes the storage channel: storage ends */
    p->agg = NULL;
  }
  return r;
}

int pipeline_sender(pipeline *p, tg_mpsc_tx **out) {
  if (!p->telemetry) return TG_ECLOSED;
  *out = tg_mpsc_tx_clone(p->telemetry);
  return *out ? 0 : TG_ENOMEM;
}

void pipeline_seal(pipeline *p) {
  if (p->telemetry) tg_mpsc_tx_drop(p->telemetry);
  p->telemetry = NULL;
}

int pipeline_start_health(pipeline *p, const pipeline_devices *d) {
  health_opts ho = {.cancel = p->o.cancel,
                    .log = p->o.log,
                    .t0 = p->o.t0,
                    .interval_ns = p->o.health_interval_ns,
                    .timeout_ns = p->o.health_timeout_ns,
                    .rng = p->o.health_rng,
                    .ndevices = d->ndevices,
                    .devices = d->requests,
                    .pick = d->pick,
                    .ask = d->ask,
                    .name = d->name,
                    .ctx = d->ctx};
  health_checker *hc;
  int r = health_checker_new(&ho, &hc);
  if (r != 0) return r;
  atomic_store(&p->health, hc);
  if (p->o.health_interval_ns <= 0) return 0;
  return spawn_stage(p, STAGE_HEALTH, "health", health_task, hc);
}

/* ------------------------------------------------------------ using */

int pipeline_subscribe(pipeline *p, tg_watch_rx **latest, tg_broadcast_rx **updates) {
  int r = 0;
  pthread_mutex_lock(&p->fig_lock);
  if (!p->updates_ref) {
    r = TG_ECLOSED;
  } else {
    if (latest && (r = tg_watch_subscribe(p->latest_ref, latest)) != 0) latest = NULL;
    if (r == 0 && updates && (r = tg_broadcast_subscribe(p->updates_ref, updates)) != 0 && latest)
      tg_watch_rx_drop(*latest);
  }
  pthread_mutex_unlock(&p->fig_lock);
  return r;
}

int pipeline_health(pipeline *p, uint32_t index, int64_t timeout_ns, device_status *out) {
  health_checker *hc = atomic_load(&p->health);
  if (!hc) return TG_ECLOSED;
  return health_ask(hc, index, timeout_ns, 0, out);
}

/* ------------------------------------------------------------ the end */

static const char *stage_name(const pipeline *p, uint64_t task_id) {
  for (int i = 0; i < STAGES; i++)
    if (p->stages[i].name && p->stages[i].task_id == task_id) return p->stages[i].name;
  return "pipeline";
}

static void account(pipeline *p, const tg_outcome *o) {
  figure_add(&p->joined, 1);
  atomic_store(&p->last_join_ns, tg_now());
  if (o->status == TG_EPANICKED) {
    figure_add(&p->panicked, 1);
    log_event(p->o.log, "💥", "pipeline", 0, "task_panicked", "JoinSet: the %s stage panicked (%s)",
              stage_name(p, o->task_id), o->message);
  } else if (o->status == TG_ECANCELED) {
    figure_add(&p->aborted, 1);
  }
}

void pipeline_join(pipeline *p, int64_t deadline_ns) {
  tg_outcome o;
  int r;
  while ((r = tg_joinset_join_next_dl(p->tasks, &o, deadline_ns)) == 0) account(p, &o);
  if (r == TG_ETIMEDOUT) {
    log_event(p->o.log, "⏱️", "pipeline", 0, "shutdown_timeout",
              "The pipeline is taking too long to drain: aborting the %zu stages left", tg_joinset_len(p->tasks));
    tg_joinset_abort_all(p->tasks);
    while (tg_joinset_join_next(p->tasks, &o) == 0) account(p, &o);
  }
}

int pipeline_set_health_cadence(pipeline *p, int64_t interval_ns, int64_t timeout_ns) {
  health_checker *hc = atomic_load(&p->health);
  if (!hc || p->o.health_interval_ns <= 0 || interval_ns <= 0) return TG_ECLOSED;
  health_checker_set_cadence(hc, interval_ns, timeout_ns);
  return 0;
}

void pipeline_figures_get(pipeline *p, pipeline_figures *f) {
  memset(f, 0, sizeof *f);
  if (p->agg) aggregator_figures_get(p->agg, &f->aggregator);
  health_checker *hc = atomic_load(&p->health);
  if (hc) health_figures_get(hc, &f->health);
  pthread_mutex_lock(&p->fig_lock);
  f->telemetry = p->telemetry_last;
  f->storage = p->storage_last;
  f->updates = p->updates_last;
  if (p->telemetry_ref) tg_mpsc_stats_get(p->telemetry_ref, &f->telemetry);
  if (p->storage_ref) tg_mpsc_stats_get(p->storage_ref, &f->storage);
  if (p->updates_ref) tg_broadcast_stats_get(p->updates_ref, &f->updates);
  pthread_mutex_unlock(&p->fig_lock);
  storage_stage_figures sf;
  storage_stage_figures_get(p->store, &sf);
  f->db_pool = sf.pool;
  f->batches_stored = sf.batches_stored;
  f->batches_lost = sf.batches_lost;
  f->readings_stored = sf.readings_stored;
  f->duplicates = sf.duplicates;
  f->transactions = sf.transactions;
  f->write_retries = sf.write_retries;
  f->pool_waits = sf.pool_waits;
  f->writers_spawned = sf.writers_spawned;
  f->writers_joined = sf.writers_joined;
  f->writers_panicked = sf.writers_panicked;
  f->writers_aborted = sf.writers_aborted;
  f->last_commit_ns = sf.last_commit_ns;
  f->commit_time = sf.commit_time;
  f->reading_commit = sf.reading_commit;
  f->storage_failing_since_ns = sf.failing_since_ns;
  f->storage_failing_attempts = sf.failing_attempts;
  tg_joinset_stats js;
  tg_joinset_stats_get(p->tasks, &js);
  f->tasks_spawned = js.spawned;
  f->tasks_joined = figure_get(&p->joined);
  f->tasks_panicked = figure_get(&p->panicked);
  f->tasks_aborted = figure_get(&p->aborted);
  f->last_join_ns = atomic_load(&p->last_join_ns);
  f->snapshots_live = atomic_load(&p->snapshots.built) - atomic_load(&p->snapshots.freed);
}

int64_t pipeline_storage_failing(pipeline *p, char *why, size_t whylen) {
  return storage_stage_failing(p->store, why, whylen);
}

void pipeline_free(pipeline *p) {
  if (!p) return;
  if (p->telemetry) tg_mpsc_tx_drop(p->telemetry);
  aggregator_free(p->agg);
  health_checker_free(atomic_load(&p->health));
  if (p->tasks) tg_joinset_free(p->tasks);
  storage_stage_free(p->store); /* after its task was joined, or never started: then it drops its channel */
  pthread_mutex_destroy(&p->fig_lock);
  free(p);
}
