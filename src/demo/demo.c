/* demo.c - `telegate demo`: wiring, the run, the ordered shutdown and the
 * summary; see demo.h. */
#include "demo.h"

#include "client.h"
#include "device.h"
#include "pipeline.h"
#include "rng.h"
#include "signals.h"
#include "storage.h"
#include "summary.h"
#include "tg/tg.h"
#include "wall_clock.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* SQLite runs on task stacks under the virtual clock. */
#define TASK_STACK       ((size_t)256 * 1024)
/* How long the ordered shutdown may take before what is left is aborted. */
#define GRACE_NS         TG_SEC(5)
/* The Unix time a virtual run starts at, so readings carry no real time. */
#define VIRTUAL_EPOCH_MS INT64_C(1732590000000)

enum task_kind { KIND_DEVICE, KIND_CLIENT };

typedef struct task_label {
  uint64_t id;
  enum task_kind kind;
  int index; /* device or client id */
} task_label;

/* One run. Components get pointers into it, never the whole. */
typedef struct demo {
  const demo_config *cfg;
  demo_log log;
  tg_cancel *cancel;
  atomic_int stop_reason;
  _Atomic int64_t stop_at_ns;
  int64_t t0;
  storage *db;
  pipeline *pipe;
  tg_semaphore *slots;
  tg_joinset *tasks; /* the devices and the clients; the pipeline has its own */
  device_fleet fleet;
  device devices[DEMO_MAX_DEVICES];
  client clients[DEMO_MAX_CLIENTS];
  int device_panicked[DEMO_MAX_DEVICES];
  tg_mpsc_tx *health_tx[DEMO_MAX_DEVICES];
  task_label labels[DEMO_MAX_DEVICES + DEMO_MAX_CLIENTS];
  int nlabels;
  uint64_t joined, panicked, aborted;
  int64_t last_join_ns;
} demo;

/* ------------------------------------------------------------ config */

void demo_config_preset(demo_config *c, demo_preset p) {
  c->preset = p;
  c->slow_client = c->client_delay_ms = 0;
  c->panic_device = c->slow_health_device = c->drop_health_device = 0;
  c->panic_at_s = 3;
  c->health_interval_ms = 3000;
  c->storage_fail_rate = 0;
  if (p == PRESET_PRESSURE || p == PRESET_TOUR) {
    /* The reference code's tight numbers, plus the costs that make every
     * kind of pressure happen within seconds: a device holds its slot for
     * a third of its period (7 devices want 2.3 of 2 slots), the
     * aggregator takes longer per reading than the devices' combined rate
     * allows, each transaction outlasts the batch interval, and client 3
     * is slower than the updates. */
    c->telemetry_capacity = 5;
    c->storage_capacity = 2;
    c->broadcast_capacity = 10;
    c->device_slots = 2;
    c->db_pool = 1;
    c->device_interval_ms = 300;
    c->batch_interval_ms = 100;
    c->transmit_ms = 100;
    c->aggregator_delay_ms = 60;
    c->storage_delay_ms = 120;
    c->slow_client = 3;
    c->client_delay_ms = 250;
    if (p == PRESET_TOUR) {
      /* One of each fault, early enough to be seen within 10 s: a device
       * task panics (the JoinSet ends it alone), one answers health
       * checks too late (a oneshot timeout), one drops its reply sender
       * (the asker sees it closed), and some transactions fail and are
       * retried. Health rounds every second give each several chances. */
      c->panic_device = 2;
      c->panic_at_s = 1.5;
      c->slow_health_device = 5;
      c->drop_health_device = 6;
      c->health_interval_ms = 1000;
      c->storage_fail_rate = 0.1;
    }
  } else {
    /* The reference article's published numbers. */
    c->telemetry_capacity = 50;
    c->storage_capacity = 10;
    c->broadcast_capacity = 100;
    c->device_slots = 5;
    c->db_pool = 2;
    c->device_interval_ms = 1000;
    c->batch_interval_ms = 2000;
    c->transmit_ms = 20;
    c->aggregator_delay_ms = 0;
    c->storage_delay_ms = 20;
  }
}

void demo_config_defaults(demo_config *c) {
  memset(c, 0, sizeof *c);
  c->duration_s = 10;
  c->clock = TG_CLOCK_REAL;
  c->seed = 42;
  c->db_path = "telegate-demo.db";
  c->log_format = LOG_TEXT;
  c->devices = 7;
  c->clients = 4;
  c->health_timeout_ms = 500;
  c->client_display_ms = 2000;
  demo_config_preset(c, PRESET_TOUR);
}

const char *demo_stop_reason_name(demo_stop_reason r) {
  switch (r) {
  case STOP_DURATION: return "duration";
  case STOP_SIGINT: return "SIGINT";
  case STOP_SIGTERM: return "SIGTERM";
  case STOP_SIGHUP: return "SIGHUP";
  case STOP_ALL_ENDED: return "all tasks ended";
  case STOP_NONE: break;
  }
  return "none";
}

const char *demo_preset_name(demo_preset p) {
  return p == PRESET_TOUR ? "tour" : p == PRESET_PRESSURE ? "pressure" : "blog";
}

/* ------------------------------------------------------------ shutdown */

static void request_stop(demo *d, demo_stop_reason why) {
  int none = STOP_NONE;
  if (!atomic_compare_exchange_strong(&d->stop_reason, &none, (int)why)) return;
  atomic_store(&d->stop_at_ns, tg_now());
  log_event(&d->log, "🛑", "demo", 0, "shutdown_requested",
            "Shutdown requested (%s): cancel token fired - every task sees it at its next wait",
            demo_stop_reason_name(why));
  tg_cancel_fire(d->cancel);
}

void demo_signal(void *ctx, int signo) {
  request_stop(ctx, signo == SIGTERM ? STOP_SIGTERM : signo == SIGHUP ? STOP_SIGHUP : STOP_SIGINT);
}

/* ------------------------------------------------------------ tasks */

static int spawn(demo *d, tg_task_fn fn, void *arg, enum task_kind kind, int index, const char *name) {
  tg_spawn_opts opts = {.stack_size = TASK_STACK, .name = name};
  uint64_t id;
  int r = tg_joinset_spawn(d->tasks, fn, arg, &opts, &id);
  if (r != 0) {
    log_event(&d->log, "❌", "demo", 0, "spawn_failed", "Could not start %s: %s", name, tg_strerror(r));
    return r;
  }
  d->labels[d->nlabels++] = (task_label){id, kind, index};
  return 0;
}

static const task_label *label_of(const demo *d, uint64_t id) {
  for (int i = 0; i < d->nlabels; i++)
    if (d->labels[i].id == id) return &d->labels[i];
  return NULL;
}

static void label_name(const task_label *l, char *buf, size_t len) {
  if (!l)
    snprintf(buf, len, "A task");
  else
    snprintf(buf, len, "%s %d", l->kind == KIND_DEVICE ? "Device" : "Client", l->index);
}

/* Counts one joined task, and tells how it ended if not by returning. */
static void account(demo *d, const tg_outcome *o) {
  d->joined++;
  d->last_join_ns = tg_now();
  const task_label *l = label_of(d, o->task_id);
  char name[32];
  label_name(l, name, sizeof name);
  if (o->status == TG_EPANICKED) {
    d->panicked++;
    int others = 0;
    if (l && l->kind == KIND_DEVICE) {
      d->device_panicked[l->index - 1] = 1;
      for (int i = 0; i < d->cfg->devices; i++) others += !d->devices[i].ended;
      log_event(&d->log, "💥", "demo", l->index, "task_panicked",
                "JoinSet: %s panicked (%s) - its slot went back, its sender was dropped; the other %d "
                "devices keep sending",
                name, o->message, others);
    } else {
      log_event(&d->log, "💥", "demo", 0, "task_panicked", "JoinSet: %s panicked (%s)", name, o->message);
    }
  } else if (o->status == TG_ECANCELED) {
    d->aborted++;
    log_event(&d->log, "⛔", "demo", 0, "task_aborted", "JoinSet: %s was aborted", name);
  }
}

/* ------------------------------------------------------------ setup */

static int64_t epoch_ms_now(const demo_config *cfg) {
  return cfg->clock == TG_CLOCK_VIRTUAL ? VIRTUAL_EPOCH_MS : wall_clock_ms();
}

static void banner(demo *d) {
  const demo_config *c = d->cfg;
  log_event(&d->log, "🚀", "demo", 0, "start",
            "telegate demo: %d devices -> mpsc(%d) -> aggregator -> watch + broadcast(%d) -> %d "
            "clients; batches every %d ms -> mpsc(%d) -> storage -> pool of %d SQLite connections; "
            "%d bandwidth slots; health checks every %d ms",
            c->devices, c->telemetry_capacity, c->broadcast_capacity, c->clients, c->batch_interval_ms,
            c->storage_capacity, c->db_pool, c->device_slots, c->health_interval_ms);
  log_event(&d->log, "🚀", "demo", 0, "run", "Preset %s, %.3f s on the %s clock, seed %" PRIu64,
            demo_preset_name(c->preset), c->duration_s, c->clock == TG_CLOCK_VIRTUAL ? "virtual" : "real", c->seed);
  if (c->panic_device)
    log_event(&d->log, "🧪", "demo", 0, "fault", "Fault: device %d panics at %.3f s", c->panic_device, c->panic_at_s);
  if (c->slow_client)
    log_event(&d->log, "🧪", "demo", 0, "fault", "Fault: client %d takes %d ms per update", c->slow_client,
              c->client_delay_ms);
  if (c->slow_health_device)
    log_event(&d->log, "🧪", "demo", 0, "fault", "Fault: device %d answers health checks too late",
              c->slow_health_device);
  if (c->drop_health_device)
    log_event(&d->log, "🧪", "demo", 0, "fault", "Fault: device %d drops health check reply senders",
              c->drop_health_device);
  if (c->storage_fail_rate > 0)
    log_event(&d->log, "🧪", "demo", 0, "fault", "Fault: %.0f%% of transactions fail and are retried",
              c->storage_fail_rate * 100);
}

static void pipeline_fault(void *ctx, const char *why) {
  (void)why; /* the pipeline logged it */
  request_stop(ctx, STOP_ALL_ENDED);
}

/* Builds the pipeline and spawns every task: the clients, the pipeline's
 * stages, the devices, the health checker. Returns 0 or a negative code;
 * on failure what was spawned still runs and is joined. */
static int build(demo *d) {
  const demo_config *c = d->cfg;
  pipeline_opts po = {.cancel = d->cancel,
                      .log = &d->log,
                      .t0 = d->t0,
                      .stack_size = TASK_STACK,
                      .telemetry_capacity = c->telemetry_capacity,
                      .storage_capacity = c->storage_capacity,
                      .broadcast_capacity = c->broadcast_capacity,
                      .ndevices = c->devices,
                      .batch_interval_ns = TG_MS(c->batch_interval_ms),
                      .delay_ns = TG_MS(c->aggregator_delay_ms),
                      .db = d->db,
                      .db_pool = c->db_pool,
                      .health_interval_ns = TG_MS(c->health_interval_ms),
                      .health_timeout_ns = TG_MS(c->health_timeout_ms),
                      .health_rng = rng_stream(c->seed, 2),
                      .on_fault = pipeline_fault,
                      .on_fault_ctx = d};
  int r = pipeline_new(&po, &d->pipe);
  if (r != 0) return r;

  for (int i = 0; i < c->clients; i++) {
    client *cl = &d->clients[i];
    *cl = (client){.id = i + 1,
                   .cancel = d->cancel,
                   .log = &d->log,
                   .t0 = d->t0,
                   .delay_ns = c->slow_client == i + 1 ? TG_MS(c->client_delay_ms) : 0,
                   .display_ns = TG_MS(c->client_display_ms)};
    if (pipeline_subscribe(d->pipe, &cl->latest, &cl->updates) != 0) continue;
    char name[24];
    snprintf(name, sizeof name, "client-%d", i + 1);
    if (spawn(d, client_task, cl, KIND_CLIENT, i + 1, name) != 0) {
      tg_broadcast_rx_drop(cl->updates);
      tg_watch_rx_drop(cl->latest);
    }
  }
  if ((r = pipeline_start(d->pipe)) != 0) return r;

  device_fleet *f = &d->fleet;
  *f = (device_fleet){.slots = d->slots,
                      .nslots = c->device_slots,
                      .cancel = d->cancel,
                      .log = &d->log,
                      .telemetry_capacity = (size_t)c->telemetry_capacity,
                      .t0 = d->t0,
                      .epoch_ms = epoch_ms_now(c),
                      .transmit_ns = TG_MS(c->transmit_ms)};
  rng timing = rng_stream(c->seed, 1);
  for (int i = 0; i < c->devices; i++) {
    device *dv = &d->devices[i];
    uint32_t id = (uint32_t)i + 1;
    device_init(dv, f, id, c->seed);
    /* ~1 reading per interval, each device a little different (±10%). */
    dv->interval_ns = (int64_t)(TG_MS(c->device_interval_ms) * rng_range(&timing, 0.9, 1.1));
    dv->phase_ns = (int64_t)(dv->interval_ns * rng_unit(&timing));
    if (c->panic_device == (int)id) dv->panic_at_ns = d->t0 + (int64_t)(c->panic_at_s * 1e9);
    if (c->slow_health_device == (int)id) dv->fault = HEALTH_SLOW;
    if (c->drop_health_device == (int)id) dv->fault = HEALTH_DROP;
    dv->slow_reply_ns = TG_MS(c->health_timeout_ms + 300);
    tg_mpsc_rx *hrx;
    if (tg_mpsc_new(
            &(tg_mpsc_opts){.capacity = DEVICE_HEALTH_QUEUE, .elem_size = sizeof(health_request), .name = "health"},
            &d->health_tx[i], &hrx) != 0) {
      d->health_tx[i] = NULL;
      dv->ended = 1;
      continue;
    }
    dv->health = hrx;
    if (pipeline_sender(d->pipe, &dv->telemetry) != 0) {
      tg_mpsc_rx_drop(dv->health);
      dv->ended = 1;
      continue;
    }
    char name[24];
    snprintf(name, sizeof name, "device-%u", (unsigned)id);
    if (spawn(d, device_task, dv, KIND_DEVICE, (int)id, name) != 0) {
      tg_mpsc_rx_drop(dv->health);
      tg_mpsc_tx_drop(dv->telemetry);
      dv->ended = 1;
    }
  }
  pipeline_seal(d->pipe); /* the devices hold the only senders now */

  int missing = 0;
  for (int i = 0; i < c->devices; i++) missing |= d->health_tx[i] == NULL;
  if (missing) {
    for (int i = 0; i < c->devices; i++)
      if (d->health_tx[i]) tg_mpsc_tx_drop(d->health_tx[i]);
    return TG_ENOMEM;
  }
  /* The checker owns the request senders from here on, even on failure. */
  return pipeline_start_health(d->pipe, &(pipeline_devices){.ndevices = c->devices, .requests = d->health_tx});
}

/* ------------------------------------------------------------ the run */

/* Runs until the duration ends or a shutdown request, reporting tasks
 * that end early (a panicking device) as the JoinSet hands them over. */
static void run_until_stop(demo *d) {
  const demo_config *c = d->cfg;
  int64_t end = d->t0 + (int64_t)(c->duration_s * 1e9);
  int64_t interrupt = c->interrupt_at_ms > 0 ? d->t0 + TG_MS(c->interrupt_at_ms) : TG_FOREVER;
  for (;;) {
    tg_outcome o;
    tg_case cs[2] = {tg_cancel_case(d->cancel), tg_joinset_join_next_case(d->tasks, &o)};
    int w = tg_select(cs, 2, interrupt < end ? interrupt : end);
    if (w == 0) return;
    if (w == 1 && cs[1].result == 0) {
      account(d, &o);
      continue;
    }
    if (w == 1) { /* TG_EEMPTY: nothing left to run */
      request_stop(d, STOP_ALL_ENDED);
      return;
    }
    if (w == TG_ETIMEDOUT && tg_now() >= interrupt && interrupt < end) {
      demo_signal(d, SIGINT); /* what the SIGINT handler's watcher calls */
      interrupt = TG_FOREVER;
      continue;
    }
    request_stop(d, STOP_DURATION);
    return;
  }
}

/* Joins every task; aborts those still running after the grace period. */
static void join_all(demo *d) {
  int64_t grace = atomic_load(&d->stop_at_ns) + GRACE_NS;
  if (d->pipe) pipeline_join(d->pipe, grace);
  tg_outcome o;
  int r;
  while ((r = tg_joinset_join_next_dl(d->tasks, &o, grace)) == 0) account(d, &o);
  if (r == TG_ETIMEDOUT) {
    log_event(&d->log, "⏱️", "demo", 0, "shutdown_timeout",
              "Shutdown took longer than %d s: aborting the %zu tasks left", (int)(GRACE_NS / TG_SEC(1)),
              tg_joinset_len(d->tasks));
    tg_joinset_abort_all(d->tasks);
    while (tg_joinset_join_next(d->tasks, &o) == 0) account(d, &o);
  }
}

/* ------------------------------------------------------------ summary */

static uint64_t joined_writers(demo *d) {
  pipeline_figures pf = {0};
  if (d->pipe) pipeline_figures_get(d->pipe, &pf);
  return pf.writers_joined;
}

static void fill_summary(demo *d, demo_summary *s, uint64_t db_rows) {
  const demo_config *c = d->cfg;
  memset(s, 0, sizeof *s);
  s->ndevices = c->devices;
  for (int i = 0; i < c->devices; i++) {
    const device *dv = &d->devices[i];
    s->devices[i] = (demo_device_summary){.id = i + 1,
                                          .sent = dv->sent,
                                          .slot_waits = dv->slot_waits,
                                          .full_waits = dv->full_waits,
                                          .last_sent_ms = dv->last_sent_ns < 0 ? -1 : dv->last_sent_ns / 1000000,
                                          .panicked = d->device_panicked[i]};
    s->readings_sent += dv->sent;
    s->device_slot_waits += dv->slot_waits;
    s->telemetry_full_waits += dv->full_waits;
  }
  s->slot_fifo_violations = d->fleet.fifo_violations;
  s->nclients = c->clients;
  for (int i = 0; i < c->clients; i++) {
    const client *cl = &d->clients[i];
    s->clients[i] = (demo_client_summary){.id = i + 1,
                                          .received = cl->received,
                                          .processed = cl->processed,
                                          .lagged_events = cl->lagged_events,
                                          .lagged_messages = cl->lagged_messages,
                                          .resyncs = cl->resyncs,
                                          .skipped_stale = cl->skipped_stale};
  }
  pipeline_figures pf = {0};
  if (d->pipe) pipeline_figures_get(d->pipe, &pf);
  const aggregator_figures *a = &pf.aggregator;
  s->readings_aggregated = a->aggregated;
  s->batches_flushed = a->batches_flushed;
  s->storage_full_waits = a->storage_full_waits;
  s->snapshots_built = a->snapshots_built;
  s->snapshots_broadcast = a->snapshots_broadcast;
  s->last_reading_ms = a->last_reading_ns < 0 ? -1 : a->last_reading_ns / 1000000;
  s->readings_stored = pf.readings_stored;
  s->batches_stored = pf.batches_stored;
  s->batches_lost = pf.batches_lost;
  s->write_retries = pf.write_retries;
  s->transactions = pf.transactions;
  s->duplicates = pf.duplicates;
  s->db_pool_waits = pf.pool_waits;
  s->db_rows = db_rows;
  s->health.rounds = pf.health.rounds;
  s->health.ok = pf.health.ok;
  s->health.timeout = pf.health.timeout;
  s->health.dropped = pf.health.dropped;
  s->health.unreachable = pf.health.unreachable;
  tg_joinset_stats js;
  tg_joinset_stats_get(d->tasks, &js);
  s->tasks.pipeline = js.spawned + pf.tasks_spawned;
  s->tasks.writers = pf.writers_spawned;
  s->tasks.spawned = s->tasks.pipeline + pf.writers_spawned;
  s->tasks.joined = d->joined + pf.tasks_joined + pf.writers_joined;
  s->tasks.panicked = d->panicked + pf.tasks_panicked + pf.writers_panicked;
  s->tasks.aborted = d->aborted + pf.tasks_aborted + pf.writers_aborted;
  s->snapshots_leaked = pf.snapshots_live; /* every holder has ended by now */
  s->stop_reason = (demo_stop_reason)atomic_load(&d->stop_reason);
  int64_t stop = atomic_load(&d->stop_at_ns);
  int64_t last_join = d->last_join_ns > pf.last_join_ns ? d->last_join_ns : pf.last_join_ns;
  s->stop_at_ms = (stop - d->t0) / 1000000;
  s->shutdown_ms = last_join > stop ? (last_join - stop) / 1000000 : 0;
  s->runtime_s = (double)(tg_now() - d->t0) / 1e9;
  s->lossless = s->readings_sent == s->readings_aggregated && s->readings_aggregated == s->readings_stored &&
                s->readings_stored == s->db_rows;
}

/* ------------------------------------------------------------ main */

static void teardown(demo *d) {
  if (d->tasks) tg_joinset_free(d->tasks);
  pipeline_free(d->pipe);
  if (d->slots) tg_semaphore_free(d->slots);
  if (d->cancel) tg_cancel_free(d->cancel);
  storage_close(d->db);
}

int demo_main(const demo_config *cfg, demo_summary *summary) {
  demo_summary local;
  demo_summary *s = summary ? summary : &local;
  memset(s, 0, sizeof *s);
  if (cfg->devices < 1 || cfg->devices > DEMO_MAX_DEVICES || cfg->clients < 0 || cfg->clients > DEMO_MAX_CLIENTS ||
      cfg->db_pool < 1 || cfg->db_pool > DEMO_MAX_POOL || cfg->device_slots < 1) {
    snprintf(s->error, sizeof s->error, "a setting is out of range (devices, clients, DB pool or slots)");
    return TG_EINVAL;
  }
  demo *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(s->error, sizeof s->error, "out of memory");
    return TG_ENOMEM;
  }
  d->cfg = cfg;
  d->t0 = tg_now();
  log_init(&d->log, cfg->out ? cfg->out : stdout, cfg->log_format, cfg->quiet, d->t0);
  banner(d);

  int r = 0;
  /* The simulated write time and failures: a decorator around SQLite. */
  storage_faults_opts faults = {
      .write_ns = TG_MS(cfg->storage_delay_ms), .fail_rate = cfg->storage_fail_rate, .seed = cfg->seed};
  storage_open_args oc = {.db = &d->db,
                          .opts = {.path = cfg->db_path, .connections = cfg->db_pool, .reset = 1, .faults = &faults}};
  if ((r = tg_blocking_run(storage_open_call, &oc)) != 0) {
    snprintf(s->error, sizeof s->error, "cannot open the database %s: %s", cfg->db_path, oc.err);
    goto out;
  }
  if ((r = tg_cancel_new(&d->cancel, "shutdown")) ||
      (r = tg_semaphore_new(&d->slots, (uint64_t)cfg->device_slots, "bandwidth")) ||
      (r = tg_joinset_new(&d->tasks, "demo"))) {
    snprintf(s->error, sizeof s->error, "cannot start: %s", tg_strerror(r));
    goto out;
  }

  signal_watch sw = {0};
  if (cfg->handle_signals && signal_watch_start(&sw, demo_signal, d) != 0)
    log_event(&d->log, "⚠️", "demo", 0, "signals", "SIGINT/SIGTERM handling unavailable");
  r = build(d);
  if (r != 0) request_stop(d, STOP_ALL_ENDED);
  run_until_stop(d);
  join_all(d);
  signal_watch_stop(&sw);

  storage_count_args cc = {.db = d->db};
  if (tg_blocking_run(storage_count_call, &cc) != 0)
    log_event(&d->log, "❌", "demo", 0, "count_failed", "Cannot count the stored rows: %s", cc.err);
  fill_summary(d, s, cc.rows);
  log_event(&d->log, "✅", "demo", 0, "joined",
            "All %" PRIu64 " pipeline tasks joined, %" PRId64
            " ms after the shutdown request; the database holds %" PRIu64 " readings",
            s->tasks.joined - joined_writers(d), s->shutdown_ms, cc.rows);
  if (cfg->log_format == LOG_JSON) {
    /* One more event line, so every line of a JSON log has the same keys. */
    char *json = summary_json(s, cfg, 0), *line = NULL;
    if (json && asprintf(&line, "{\"t\":%.3f,\"component\":\"demo\",\"event\":\"summary\",\"summary\":%s}\n",
                         s->runtime_s, json) >= 0)
      log_write(&d->log, line);
    free(line);
    free(json);
  } else {
    char *text = summary_text(s, cfg);
    if (text) log_write(&d->log, text);
    free(text);
  }
  if (cfg->summary_json && demo_summary_write_json(s, cfg, cfg->summary_json) != 0)
    log_event(&d->log, "❌", "demo", 0, "summary_json", "Cannot write %s", cfg->summary_json);
  r = 0;
out:
  teardown(d);
  log_destroy(&d->log);
  free(d);
  return r;
}

typedef struct run_call {
  const demo_config *cfg;
  demo_summary *summary;
  int result;
} run_call;

static void *run_main(void *arg) {
  run_call *rc = arg;
  rc->result = demo_main(rc->cfg, rc->summary);
  return NULL;
}

int demo_run(const demo_config *cfg, demo_summary *summary) {
  tg_runtime_opts opts = {.workers = 1, .clock = cfg->clock, .stack_size = TASK_STACK};
  run_call rc = {cfg, summary, 0};
  sigset_t old;
  if (cfg->handle_signals) signal_block(&old); /* the watcher's alone (signals.h) */
  int r = tg_run(&opts, run_main, &rc, NULL);
  if (cfg->handle_signals) signal_restore(&old);
  if (r != 0 && summary)
    snprintf(summary->error, sizeof summary->error, "cannot start the runtime: %s", tg_strerror(r));
  return r != 0 ? r : rc.result;
}
