/* pipeline.h - the gateway's core, built in one place for `telegate demo`
 * and `telegate serve`: the channels, the aggregator, the storage stage
 * and the health checker, their order of shutdown and their figures.
 *
 *   sources --telemetry mpsc--> aggregator --watch + broadcast--> clients
 *                                   '--batches mpsc--> storage --pool--> database
 *   health checker --request--> device ... oneshot reply
 *
 * Life: pipeline_new builds the channels and the stages and runs nothing.
 * Clients may subscribe (pipeline_subscribe) from then until the
 * aggregator has drained. pipeline_start spawns storage and the
 * aggregator into the pipeline's own JoinSet. Each source takes a
 * telemetry sender (pipeline_sender) and drops it when it has drained;
 * pipeline_seal drops the pipeline's own, once every source has one, so
 * the aggregator sees the channel close when the last source is done.
 * pipeline_start_health starts the health checker last, when the devices
 * it asks exist.
 *
 * Shutdown: the owner fires the cancel token it passed in. Sources stop
 * and drop their senders; the aggregator drains the telemetry channel
 * until it closes, hands over the final batch and closes storage, watch
 * and broadcast; storage commits every batch; the health checker stops.
 * pipeline_join then joins the stages, aborting those still running at
 * its deadline. A stage that ends before the token fired (it returned or
 * panicked) is a fault: opts.on_fault is called, once, so the owner can
 * start the shutdown.
 *
 * Threads: pipeline_figures_get, pipeline_subscribe and pipeline_health
 * may be called from any task or thread while the pipeline exists;
 * everything else from the owner's task. */
#ifndef TELEGATE_PIPELINE_H
#define TELEGATE_PIPELINE_H

#include "aggregator.h"
#include "health.h"
#include "histogram.h"
#include "log.h"
#include "storage.h"
#include "tg/tg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pipeline pipeline;

typedef struct pipeline_opts {
  tg_cancel *cancel; /* the shutdown token, the owner's */
  demo_log *log;
  int64_t t0; /* tg_now() at the start of the run */
  /* where the stages run */
  size_t stack_size;
  int pin, worker; /* pin the stages (and storage's writers) to this worker */
  /* channels */
  int telemetry_capacity; /* readings */
  int storage_capacity;   /* batches */
  int broadcast_capacity; /* snapshots */
  /* aggregator: see aggregator_opts */
  int ndevices, max_devices;
  const struct schema *schema; /* the readings' names, for the snapshots; NULL: the article's */
  const char *(*device_name)(void *ctx, uint32_t device);
  void *device_name_ctx;
  /* The fleet view's states of other nodes' devices (aggregator_remote *):
   * moved into the aggregator by pipeline_new, also when it fails; NULL:
   * none. */
  tg_mpsc_rx *remote;
  int64_t batch_interval_ns, delay_ns, publish_interval_ns, stale_after_ns;
  uint32_t batch_max;
  uint64_t publish_every;
  int burst;
  /* storage: the database stays the owner's and must outlive the pipeline */
  storage *db;
  int db_pool; /* connections written at once */
  /* health: a round every interval (0: no rounds), each check answered within the timeout */
  int64_t health_interval_ns, health_timeout_ns;
  rng health_rng;
  /* Each batch once committed: see storage_stage_opts.on_commit. */
  void (*on_commit)(void *ctx, const batch *b);
  void *on_commit_ctx;
  /* A stage ended before shutdown: `why` names it. Called once, from the
   * stage's task. */
  void (*on_fault)(void *ctx, const char *why);
  void *on_fault_ctx;
} pipeline_opts;

/* Whom the health checker asks: see health_opts (the demo's fixed request
 * senders, moved into the checker, or serve's hooks). */
typedef struct pipeline_devices {
  int ndevices;
  tg_mpsc_tx *const *requests;
  int (*pick)(void *ctx, rng *g, uint32_t *out, int k);
  int (*ask)(void *ctx, uint32_t device, const health_request *req);
  const char *(*name)(void *ctx, uint32_t device);
  void *ctx;
} pipeline_devices;

/* Everything the pipeline counts; counters only grow. */
typedef struct pipeline_figures {
  aggregator_figures aggregator;
  health_figures health;
  tg_mpsc_stats telemetry; /* the channel's figures, its last ones once closed */
  tg_mpsc_stats storage;
  tg_broadcast_stats updates;
  tg_semaphore_stats db_pool;
  /* storage */
  uint64_t batches_stored, batches_lost, readings_stored, duplicates;
  uint64_t transactions, write_retries, pool_waits;
  uint64_t writers_spawned, writers_joined, writers_panicked, writers_aborted;
  int64_t last_commit_ns;                        /* tg_now() of the latest commit; 0: none */
  histogram_figures commit_time, reading_commit; /* storage_stage_figures' */
  int64_t storage_failing_since_ns;              /* see storage_stage_failing; 0: not failing */
  uint64_t storage_failing_attempts;             /* failed attempts since then */
  /* the stages' tasks */
  uint64_t tasks_spawned, tasks_joined, tasks_panicked, tasks_aborted;
  int64_t last_join_ns;    /* tg_now() when the last stage was joined; 0: not yet */
  uint64_t snapshots_live; /* snapshots built and not yet freed */
} pipeline_figures;

/* Builds the channels and the stages. Returns 0, TG_EINVAL (a capacity
 * below 1, or a pool larger than the storage stage allows) or TG_ENOMEM. */
int pipeline_new(const pipeline_opts *opts, pipeline **out);

/* Spawns storage and the aggregator. Returns 0 or tg_spawn's errors (what
 * did not start is not run; pipeline_join still ends what did). */
int pipeline_start(pipeline *p);

/* A telemetry sender for one source, which drops it once it has drained.
 * Returns 0, TG_ECLOSED after pipeline_seal, or TG_ENOMEM. */
int pipeline_sender(pipeline *p, tg_mpsc_tx **out);

/* Every source has its sender: drops the pipeline's own. */
void pipeline_seal(pipeline *p);

/* Starts the health checker (when opts.health_interval_ns > 0; on-demand
 * checks through pipeline_health work either way). Returns 0, TG_ENOMEM
 * or tg_spawn's errors; the request senders are dropped on failure. */
int pipeline_start_health(pipeline *p, const pipeline_devices *devices);

/* Subscribes a client: *latest (may be NULL) follows the watch of the
 * latest snapshot, *updates (may be NULL) gets every one published from
 * now on; both hold `system_snapshot *`. Returns 0, TG_ENOMEM, or
 * TG_ECLOSED once the aggregator has drained. */
int pipeline_subscribe(pipeline *p, tg_watch_rx **latest, tg_broadcast_rx **updates);

/* One on-demand health check of device `index`, waiting at most
 * timeout_ns: health_ask's results (0, TG_ETIMEDOUT, TG_ECLOSED,
 * -ENOENT, -EOPNOTSUPP, TG_ECANCELED). TG_ECLOSED when the checker is not built yet. */
int pipeline_health(pipeline *p, uint32_t index, int64_t timeout_ns, device_status *out);

/* Joins the stages; those still running at deadline_ns are aborted and
 * joined. Logs each stage that panicked or was aborted. */
void pipeline_join(pipeline *p, int64_t deadline_ns);

void pipeline_figures_get(pipeline *p, pipeline_figures *out);

/* The health rounds' cadence from now on (health_checker_set_cadence).
 * Returns 0, or TG_ECLOSED when there are no rounds (interval 0 at start,
 * or the checker not started): they cannot start live. Any thread. */
int pipeline_set_health_cadence(pipeline *p, int64_t interval_ns, int64_t timeout_ns);
/* storage_stage_failing: 0, or tg_now() of the first failed commit
 * attempt since the last commit, its reason in why. Any thread. */
int64_t pipeline_storage_failing(pipeline *p, char *why, size_t whylen);

/* Frees p after pipeline_join (or before pipeline_start). */
void pipeline_free(pipeline *p);

#endif
