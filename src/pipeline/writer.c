/* writer.c - the storage stage and its batch writers; see writer.h. */
#include "writer.h"

#include "figure.h"
#include "reading.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* Writers run SQLite on their own stacks under the virtual clock. */
#define WRITER_STACK ((size_t)256 * 1024)

struct storage_stage {
  storage_stage_opts o;
  tg_semaphore *pool;
  tg_notify *turn_moved;
  int connections;
  atomic_uint_fast64_t *turn; /* per connection: the ticket that may write on it now */
  uint64_t next_ticket;       /* the stage task's next ticket */
  log_gate pool_gate, stored_gate;
  /* Writers are tasks of their own: every figure has several writers. */
  figure batches_received, batches_stored, readings_stored, duplicates;
  figure transactions, write_retries, pool_waits;
  figure writers_spawned, writers_joined, writers_panicked, writers_aborted;
  figure batches_lost;
  _Atomic int64_t last_commit_ns;
  histogram commit_time, reading_commit;
  /* Failing (writer.h): set by the first failed attempt, cleared by the
   * next commit, read by /readyz from any thread. */
  pthread_mutex_t failing_lock;
  int64_t failing_since_ns; /* 0: not failing */
  uint64_t failing_attempts;
  int failing_code; /* the latest attempt's error code */
  char failing_why[160];
};

typedef struct write_job {
  storage_stage *stage;
  batch b;
  uint64_t ticket; /* its place in every connection's order */
} write_job;

typedef struct db_call {
  storage *db;
  int conn;
  const batch *b;
  storage_write_result res;
  char err[160];
} db_call;

static int db_write(void *arg) {
  db_call *c = arg;
  return storage_write(c->db, c->conn, c->b, &c->res, c->err, sizeof c->err);
}

int storage_stage_new(const storage_stage_opts *opts, storage_stage **out) {
  *out = NULL;
  if (!opts->batches || !opts->db || opts->pool < 1 || opts->pool > WRITER_MAX_POOL) return TG_EINVAL;
  storage_stage *st = calloc(1, sizeof *st);
  if (!st) return TG_ENOMEM;
  st->o = *opts;
  st->connections = storage_connections(opts->db);
  st->turn = calloc((size_t)st->connections, sizeof *st->turn);
  int r = st->turn ? 0 : TG_ENOMEM;
  if (r == 0) r = tg_semaphore_new(&st->pool, (uint64_t)opts->pool, "db-pool");
  if (r == 0 && (r = tg_notify_new(&st->turn_moved, "commit-turn")) != 0) tg_semaphore_free(st->pool);
  if (r != 0) {
    free(st->turn);
    free(st);
    return r;
  }
  for (int i = 0; i < st->connections; i++) atomic_init(&st->turn[i], 0);
  pthread_mutex_init(&st->failing_lock, NULL);
  *out = st;
  return 0;
}

void storage_stage_free(storage_stage *st) {
  if (!st) return;
  if (st->o.batches) tg_mpsc_rx_drop(st->o.batches);
  tg_semaphore_free(st->pool);
  tg_notify_free(st->turn_moved);
  pthread_mutex_destroy(&st->failing_lock);
  free(st->turn);
  free(st);
}

void storage_stage_figures_get(storage_stage *st, storage_stage_figures *f) {
  *f = (storage_stage_figures){.batches_received = figure_get(&st->batches_received),
                               .batches_stored = figure_get(&st->batches_stored),
                               .batches_lost = figure_get(&st->batches_lost),
                               .readings_stored = figure_get(&st->readings_stored),
                               .duplicates = figure_get(&st->duplicates),
                               .transactions = figure_get(&st->transactions),
                               .write_retries = figure_get(&st->write_retries),
                               .pool_waits = figure_get(&st->pool_waits),
                               .writers_spawned = figure_get(&st->writers_spawned),
                               .writers_joined = figure_get(&st->writers_joined),
                               .writers_panicked = figure_get(&st->writers_panicked),
                               .writers_aborted = figure_get(&st->writers_aborted),
                               .last_commit_ns = atomic_load(&st->last_commit_ns)};
  pthread_mutex_lock(&st->failing_lock);
  f->failing_since_ns = st->failing_since_ns;
  f->failing_attempts = st->failing_attempts;
  pthread_mutex_unlock(&st->failing_lock);
  tg_semaphore_stats_get(st->pool, &f->pool);
  histogram_get(&st->commit_time, &f->commit_time);
  histogram_get(&st->reading_commit, &f->reading_commit);
}

int64_t storage_stage_failing(storage_stage *st, char *why, size_t whylen) {
  pthread_mutex_lock(&st->failing_lock);
  int64_t since = st->failing_since_ns;
  if (why && whylen) snprintf(why, whylen, "%s", since ? st->failing_why : "");
  pthread_mutex_unlock(&st->failing_lock);
  return since;
}

/* A failed attempt: the storage is failing from the first one on. Logs
 * the change into failing and a change of cause, not each attempt. */
static void note_failure(storage_stage *st, const batch *b, int code, const char *why) {
  pthread_mutex_lock(&st->failing_lock);
  int64_t now = tg_now();
  int first = st->failing_since_ns == 0, changed = !first && code != st->failing_code;
  if (first) {
    st->failing_since_ns = now;
    st->failing_attempts = 0;
  }
  st->failing_attempts++;
  st->failing_code = code;
  snprintf(st->failing_why, sizeof st->failing_why, "%s", why);
  double for_s = (double)(now - st->failing_since_ns) / 1e9;
  pthread_mutex_unlock(&st->failing_lock);
  if (first)
    log_event(st->o.log, "⚠️", "storage", 0, "storage_failing",
              "Storage failing: batch #%" PRIu64 " cannot be committed (%s); retrying with backoff, never dropping; "
              "readings wait in the queues and devices are slowed down",
              b->id, why);
  else if (changed)
    log_event(st->o.log, "⚠️", "storage", 0, "storage_failing",
              "Storage still failing after %.1f s, now: %s (batch #%" PRIu64 ")", for_s, why, b->id);
}

/* A commit: the storage is not failing any more. */
static void note_commit(storage_stage *st) {
  pthread_mutex_lock(&st->failing_lock);
  int64_t since = st->failing_since_ns;
  uint64_t attempts = st->failing_attempts;
  st->failing_since_ns = 0;
  pthread_mutex_unlock(&st->failing_lock);
  if (since)
    log_event(st->o.log, "✅", "storage", 0, "storage_recovered",
              "Storage recovered after %.1f s and %" PRIu64 " failed attempts: committing again",
              (double)(tg_now() - since) / 1e9, attempts);
}

/* Waits until it is `ticket`'s turn on connection conn. Returns 0, or
 * TG_ECANCELED when the writer was aborted. The turn may move on another
 * worker between the check and the wait, which notify_waiters would miss:
 * the wait is bounded and the check repeated. */
static int wait_turn(storage_stage *st, int conn, uint64_t ticket) {
  while (atomic_load(&st->turn[conn]) != ticket) {
    int r = tg_notify_wait_dl(st->turn_moved, tg_deadline_in(TG_MS(50)));
    if (r != 0 && r != TG_ETIMEDOUT) return r;
  }
  return 0;
}

static void pass_turn(storage_stage *st, int conn, uint64_t ticket) {
  atomic_store(&st->turn[conn], ticket + 1);
  tg_notify_waiters(st->turn_moved);
}

static int acquire_permit(storage_stage *st, const batch *b, int64_t start) {
  if (tg_semaphore_try_acquire(st->pool, 1) == 0) return 0;
  figure_add_shared(&st->pool_waits, 1);
  uint64_t held;
  if (log_gate_pass(&st->pool_gate, start, TG_MS(1000), &held)) {
    tg_semaphore_stats ps;
    tg_semaphore_stats_get(st->pool, &ps);
    log_event(st->o.log, "💾", "storage", 0, "db_pool_wait",
              "All DB connections busy, waiting... (batch #%" PRIu64 ", %" PRIu64 "/%d in use)%s", b->id, ps.in_use,
              st->o.pool, log_held_note(held).s);
  }
  return tg_semaphore_acquire(st->pool, 1);
}

/* Writes the part of b routed to conn, holding conn's turn, retrying until
 * it commits; the first attempt's pause is behind it. Adds to *done; sets
 * *retried. Returns 0, or TG_ECANCELED when the writer was aborted. */
static int write_part(storage_stage *st, const batch *b, int conn, storage_write_result *done, int *retried) {
  for (int attempt = 1;; attempt++) {
    int r = attempt > 1 ? storage_write_pause(st->o.db, conn) : 0;
    if (r != 0) return r;
    db_call call = {.db = st->o.db, .conn = conn, .b = b};
    figure_add_shared(&st->transactions, 1);
    int64_t began = tg_now();
    r = tg_blocking_run(db_write, &call);
    histogram_observe(&st->commit_time, tg_now() - began, 1);
    if (r == 0) {
      note_commit(st);
      /* Counted per transaction: a batch cut short between connections
       * (the run aborted) has its committed part counted exactly. */
      figure_add_shared(&st->readings_stored, call.res.inserted);
      figure_add_shared(&st->duplicates, call.res.duplicates);
      done->inserted += call.res.inserted;
      done->duplicates += call.res.duplicates;
      *retried |= attempt > 1;
      return 0;
    }
    figure_add_shared(&st->write_retries, 1);
    note_failure(st, b, r, call.err);
    /* Soon for a blip, then no faster than once a second: a full disk or
     * a read-only filesystem is fixed by a person. */
    int64_t backoff = attempt < 8 ? TG_MS(10) << (attempt - 1) : TG_SEC(1);
    if ((r = tg_sleep(backoff < TG_SEC(1) ? backoff : TG_SEC(1))) != 0) return r;
  }
}

/* A writer aborted before it ran (the run is over): its batch is lost,
 * and counted as such. */
static void writer_dropped(void *arg) {
  write_job *j = arg;
  figure_add_shared(&j->stage->batches_lost, 1);
  log_event(j->stage->o.log, "❌", "storage", 0, "batch_lost",
            "Batch #%" PRIu64 " (%" PRIu32 " readings) lost: writer aborted before it started", j->b.id, j->b.n);
  batch_free(&j->b);
  free(j);
}

static void *writer_task(void *arg) {
  write_job *j = arg;
  storage_stage *st = j->stage;
  batch *b = &j->b;
  int64_t start = tg_now();
  int lost = 1, parts = 0, last_conn = 0, retried = 0, paused = 0;
  int conn = 0;    /* the connection being written */
  int holding = 0; /* conn's turn is this writer's */
  storage_write_result done = {0};
  if (acquire_permit(st, b, start) != 0) goto out;
  for (; conn < st->connections; conn++) {
    /* Every batch is at least one transaction, as with one connection. */
    int has_rows = storage_batch_touches(st->o.db, b, conn) || (b->n == 0 && conn == 0);
    /* The simulated write time is spent once per batch, before the turn:
     * the batch's transactions on other connections would overlap it. */
    if (has_rows && !paused && storage_write_pause(st->o.db, conn) != 0) break;
    paused |= has_rows;
    if (wait_turn(st, conn, j->ticket) != 0) break;
    holding = 1;
    if (has_rows) {
      if (write_part(st, b, conn, &done, &retried) != 0) break;
      parts++;
      last_conn = conn;
    }
    pass_turn(st, conn, j->ticket);
    holding = 0;
  }
  if (conn == st->connections) {
    if (st->o.on_commit) st->o.on_commit(st->o.on_commit_ctx, b);
    int64_t committed = tg_now();
    atomic_store(&st->last_commit_ns, committed);
    if (b->n) histogram_observe(&st->reading_commit, committed - b->opened_ns, b->n);
    figure_add_shared(&st->batches_stored, 1);
    lost = 0;
    uint64_t held = 0;
    if (retried || log_gate_pass(&st->stored_gate, tg_now(), TG_MS(1000), &held)) {
      char where[48];
      if (parts == 1)
        snprintf(where, sizeof where, "one transaction (connection %d", last_conn + 1);
      else
        snprintf(where, sizeof where, "%d transactions (one per connection", parts);
      log_event(st->o.log, "💾", "storage", 0, "batch_stored",
                "Batch #%" PRIu64 " stored: %" PRIu64 " readings in %s, %" PRId64 " ms since it arrived%s)%s", b->id,
                done.inserted, where, (tg_now() - start) / 1000000, retried ? ", after retries" : "",
                retried ? "" : log_held_note(held).s);
    }
  }
  tg_semaphore_release(st->pool, 1);
out:
  /* A writer that holds a turn passes it on, committed or not (aborted:
   * the run is over, and the writers after it are being aborted too). */
  if (holding) pass_turn(st, conn, j->ticket);
  if (lost) {
    figure_add_shared(&st->batches_lost, 1);
    log_event(st->o.log, "❌", "storage", 0, "batch_lost",
              "Batch #%" PRIu64 " (%" PRIu32 " readings) lost: writer aborted", b->id, b->n);
  }
  batch_free(b);
  free(j);
  return NULL;
}

static void account(storage_stage *st, const tg_outcome *o) {
  figure_add_shared(&st->writers_joined, 1);
  if (o->status == TG_EPANICKED) {
    figure_add_shared(&st->writers_panicked, 1);
    log_event(st->o.log, "💥", "storage", 0, "writer_panicked", "Batch writer panicked: %s", o->message);
  } else if (o->status == TG_ECANCELED) {
    figure_add_shared(&st->writers_aborted, 1);
  }
}

static void start_draining(storage_stage *st, int *draining) {
  *draining = 1;
  log_event(st->o.log, "🛑", "storage", 0, "storage_draining",
            "Storage sees shutdown: committing every batch until the aggregator hangs up");
}

void *storage_stage_task(void *arg) {
  storage_stage *st = arg;
  tg_joinset *writers;
  if (tg_joinset_new(&writers, "batch-writers") != 0) {
    tg_mpsc_rx_drop(st->o.batches);
    st->o.batches = NULL;
    return NULL;
  }
  int draining = 0, stopped = 0;
  tg_outcome o;
  for (;;) {
    while (tg_joinset_try_join_next(writers, &o) == 0) account(st, &o);
    /* At most pool + 1 writers: one more than can write waits for a
     * permit; beyond that the batches stay in the channel. */
    while (tg_joinset_len(writers) > (size_t)st->o.pool) {
      int w;
      if (!draining) {
        tg_case cs[2] = {tg_cancel_case(st->o.cancel), tg_joinset_join_next_case(writers, &o)};
        w = tg_select(cs, 2, TG_FOREVER);
        if (w == 0) {
          start_draining(st, &draining);
          continue;
        }
        w = w == 1 ? cs[1].result : w;
      } else {
        w = tg_joinset_join_next(writers, &o);
      }
      if (w != 0) break;
      account(st, &o);
    }
    batch b;
    int r;
    if (!draining) {
      tg_case cs[2] = {tg_cancel_case(st->o.cancel), tg_mpsc_recv_case(st->o.batches, &b)};
      int w = tg_select(cs, 2, TG_FOREVER);
      if (w == 0) {
        start_draining(st, &draining);
        continue;
      }
      r = w == 1 ? cs[1].result : w;
    } else {
      r = tg_mpsc_recv(st->o.batches, &b);
    }
    if (r != 0) {
      stopped = r;
      break;
    }
    figure_add_shared(&st->batches_received, 1);
    write_job *j = malloc(sizeof *j);
    char name[32];
    snprintf(name, sizeof name, "writer-%" PRIu64, b.id);
    tg_spawn_opts opts = {.stack_size = WRITER_STACK,
                          .pin = st->o.pin_writers,
                          .worker = st->o.worker,
                          .name = name,
                          .drop = writer_dropped};
    if (!j || (*j = (write_job){st, b, st->next_ticket}, tg_joinset_spawn(writers, writer_task, j, &opts, NULL)) != 0) {
      free(j);
      figure_add_shared(&st->batches_lost, 1);
      log_event(st->o.log, "❌", "storage", 0, "batch_lost", "Batch #%" PRIu64 " lost: no memory for its writer", b.id);
      batch_free(&b);
      continue;
    }
    figure_add_shared(&st->writers_spawned, 1);
    st->next_ticket++;
  }
  while (tg_joinset_join_next(writers, &o) == 0) account(st, &o);
  tg_joinset_free(writers);
  if (st->o.on_close) st->o.on_close(st->o.on_close_ctx);
  tg_mpsc_rx_drop(st->o.batches);
  st->o.batches = NULL;
  log_event(
      st->o.log, "💾", "storage", 0, "storage_drained",
      "Storage %s: %" PRIu64 " batches, %" PRIu64 " readings committed (%" PRIu64 " transactions, %" PRIu64 " retried)",
      stopped != TG_ECLOSED ? "stopped before the aggregator hung up" : "drained", figure_get(&st->batches_stored),
      figure_get(&st->readings_stored), figure_get(&st->transactions), figure_get(&st->write_retries));
  return NULL;
}
