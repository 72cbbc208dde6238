/* writer.h - the storage writer: batches from the storage channel into the
 * database, through a pool of connections.
 *
 * The storage task takes batches off the storage mpsc and starts one batch
 * writer task per batch, in its own JoinSet, keeping at most pool + 1
 * writers alive: while that many are busy it stops taking batches, so the
 * storage channel fills and the aggregator waits (backpressure). Each
 * writer acquires a permit of the DB pool Semaphore (one per real
 * connection), so up to `pool` batches are written at once and the next
 * writer waits for a connection. Holding the permit, it spends the
 * simulated write time (virtual time models the database's latency, since
 * under the virtual clock the real call takes none), then runs the
 * transaction on the blocking pool (tg_blocking_run), so a database call
 * never blocks a worker. A failed transaction is rolled back and retried
 * with a short backoff until it commits: a batch is never dropped.
 *
 * Order: the high-water mark rule (storage.h) needs a device's batches to
 * commit in the order they were cut, or a later batch's seqs would make
 * the marks skip an earlier batch's readings as resends. Each writer gets
 * a ticket in arrival order and commits only on its turn: with several
 * connections the simulated write times overlap (which is what makes the
 * pool matter) but the transactions take turns, and a failed write is
 * retried while holding its turn, so no later batch overtakes it.
 *
 * Shutdown: the storage task drains its channel until the aggregator
 * drops its sender (TG_ECLOSED), then joins every writer: when it returns,
 * every batch it was given is committed. */
#ifndef TELEGATE_WRITER_H
#define TELEGATE_WRITER_H

#include "figure.h"
#include "log.h"
#include "storage.h"
#include "tg/tg.h"

#include <stdint.h>

#define WRITER_MAX_POOL 16

typedef struct storage_stage {
  tg_cancel *cancel;
  demo_log *log;
  tg_mpsc_rx *batches;   /* owned */
  tg_semaphore *pool;    /* one permit per connection */
  storage *db;
  int pool_size;         /* <= WRITER_MAX_POOL, == db's connections */
  int64_t write_ns;      /* simulated time of one transaction */
  double fail_rate;      /* share of transactions that fail (fault injection) */
  uint64_t seed;
  int64_t t0;
  int pin_writers, worker;  /* run the writers on this worker (serve: the storage task's) */
  /* Called once storage is done, before it drops its channel. */
  void (*on_close)(void *ctx);
  void *on_close_ctx;
  int conn_busy[WRITER_MAX_POOL];
  tg_notify *turn_moved;          /* set up and freed by the pipeline's owner */
  atomic_uint_fast64_t commit_turn; /* the ticket that may commit now */
  uint64_t next_ticket;             /* the storage task's next ticket */
  log_gate pool_gate, stored_gate;
  /* figures: writers may run on any worker, and serve reads them live */
  figure batches_received, batches_stored, readings_stored, duplicates;
  figure transactions, write_retries, pool_waits;
  figure writers_spawned, writers_joined, writers_panicked, writers_aborted;
  figure batches_lost;
  _Atomic int64_t last_commit_ns;  /* tg_now() of the latest commit; 0: none */
} storage_stage;

/* The storage task: arg is a storage_stage *. Returns NULL. */
void *storage_task(void *arg);

#endif
