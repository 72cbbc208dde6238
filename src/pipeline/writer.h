/* writer.h - the storage stage: batches from the storage channel into the
 * storage (storage.h), through a pool of connections.
 *
 * The stage's task takes batches off the storage mpsc and starts one
 * batch writer task per batch, in its own JoinSet, keeping at most
 * pool + 1 writers alive: while that many are busy it stops taking
 * batches, so the storage channel fills and the aggregator waits
 * (backpressure). Each writer acquires a permit of the DB pool Semaphore,
 * so up to `pool` batches are being written at once and the next writer
 * waits. Holding the permit, it writes its batch connection by
 * connection: on each connection the batch's readings routed there
 * (storage_route), as one transaction on the blocking pool
 * (tg_blocking_run), so a database call never blocks a worker. A failed
 * transaction is retried until it commits, with a backoff that doubles
 * from 10 ms up to 1 s: a batch is never dropped. Batches whose devices
 * all route to one connection (always, with one connection) take one
 * transaction.
 *
 * Failing: from the first failed attempt until the next commit the
 * storage is failing (storage_stage_failing says since when and why).
 * The stage logs the change into it, a change of cause (a full disk
 * that becomes a read-only one), and the recovery, with how long it took
 * and how many attempts failed; not each retry. While it fails, writers
 * hold their batches, the stage stops taking more, the storage channel
 * fills, the aggregator waits, the telemetry channel fills and the
 * sources stop reading their sockets: memory stays bounded by the
 * capacities, and devices are slowed down by TCP.
 *
 * Order: the high-water mark rule (storage.h) needs each device's
 * readings committed in the order the batches were cut. Every device is
 * routed to one connection for good, so it is enough that each
 * connection commits batches in cut order, and nothing is needed between
 * connections. Each writer gets a ticket in arrival order (the order the
 * aggregator cut the batches: one channel, one receiver), and each
 * connection has a turn: the ticket that may write on it now. A writer
 * goes through the connections in one order, 0 to n-1, waits for its turn
 * on each, writes there (retrying while holding the turn, so no later
 * batch overtakes a failed one), and passes the turn on, whether its
 * batch had rows there or not. So writer t+1 can write on connection 0
 * while writer t writes on connection 1: with PostgreSQL the connections
 * commit in parallel. A writer holds a connection only on its turn, so
 * the pool's size may be anything: it bounds how many batches are in
 * flight, not which connection is whose. Writers acquire permits in
 * ticket order (they start in spawn order - one worker in the demo, the
 * storage task's worker in serve - and the Semaphore is FIFO), so the
 * writer whose turn it is always holds or gets a permit.
 *
 * Shutdown: the task drains its channel until the aggregator drops its
 * sender (TG_ECLOSED), then joins every writer: when it returns, every
 * batch it was given is committed. On a cancel it keeps draining; an
 * aborted writer (the runtime's shutdown) counts its batch as lost.
 *
 * Figures may be read from any thread while the task runs. Calls return
 * 0 or a negative code (TG_E*). */
#ifndef TELEGATE_WRITER_H
#define TELEGATE_WRITER_H

#include "histogram.h"
#include "log.h"
#include "storage.h"
#include "tg/tg.h"

#include <stdint.h>

#define WRITER_MAX_POOL 16

typedef struct storage_stage storage_stage;

typedef struct storage_stage_opts {
  tg_cancel *cancel; /* shutdown: the task starts draining */
  demo_log *log;
  tg_mpsc_rx *batches;     /* the stage owns it once storage_stage_new succeeded */
  storage *db;             /* the caller's; must outlive the stage */
  int pool;                /* DB pool permits, 1..WRITER_MAX_POOL (usually the connections) */
  int pin_writers, worker; /* run the writers on this worker (serve: the storage task's) */
  /* Called once the stage is done, before it drops its channel. */
  void (*on_close)(void *ctx);
  void *on_close_ctx;
  /* Called with each batch once all of it is committed (inserted or a
   * duplicate of a stored reading), from the writer's task, before the
   * batch is freed: the acknowledgements' source. Batches of one device
   * come in the order they were cut. NULL: none. */
  void (*on_commit)(void *ctx, const batch *b);
  void *on_commit_ctx;
} storage_stage_opts;

typedef struct storage_stage_figures {
  uint64_t batches_received, batches_stored, batches_lost;
  uint64_t readings_stored, duplicates;
  uint64_t transactions, write_retries;
  uint64_t pool_waits;     /* writers that found every permit taken */
  tg_semaphore_stats pool; /* the DB pool Semaphore */
  uint64_t writers_spawned, writers_joined, writers_panicked, writers_aborted;
  int64_t last_commit_ns;           /* tg_now() of the latest commit; 0: none */
  histogram_figures commit_time;    /* each transaction, retries included */
  histogram_figures reading_commit; /* per reading: from its batch's first reading to the batch's commit */
  int64_t failing_since_ns;         /* tg_now() of the first failed attempt since the last commit; 0: not failing */
  uint64_t failing_attempts;        /* failed attempts since then */
} storage_stage_figures;

/* A stage for opts (copied). Returns 0, TG_EINVAL (no batches or db, a
 * pool out of range) or TG_ENOMEM; on failure the caller still owns
 * opts->batches. Call from a task (it creates the pool Semaphore). */
int storage_stage_new(const storage_stage_opts *opts, storage_stage **out);

/* The stage's task: arg is the storage_stage *. Returns NULL. */
void *storage_stage_task(void *arg);

/* The figures now; from any thread, while the task runs or after. */
void storage_stage_figures_get(storage_stage *st, storage_stage_figures *f);

/* Whether the storage is failing: 0, or tg_now() of the first failed
 * attempt since the last commit, with the latest attempt's reason in why
 * (when not NULL). Any thread. */
int64_t storage_stage_failing(storage_stage *st, char *why, size_t whylen);

/* Frees the stage: after its task returned, or when it was never spawned
 * (then its channel is dropped here). NULL is ignored. */
void storage_stage_free(storage_stage *st);

#endif
