/* writer.c - the storage task and its batch writers; see writer.h. */
#include "writer.h"

#include "reading.h"
#include "rng.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* Writers run SQLite on their own stacks under the virtual clock. */
#define WRITER_STACK ((size_t)256 * 1024)

typedef struct write_job {
  storage_stage *stage;
  batch b;
  uint64_t ticket; /* its place in the commit order */
} write_job;

typedef struct db_call {
  storage *db;
  int conn, fail;
  const batch *b;
  storage_write_result res;
  char err[160];
} db_call;

static int db_write(void *arg) {
  db_call *c = arg;
  return storage_write(c->db, c->conn, c->b, c->fail, &c->res, c->err, sizeof c->err);
}

/* Waits until it is `ticket`'s turn to commit. Returns 0, or TG_ECANCELED
 * when the writer was aborted. The turn may move on another worker between
 * the check and the wait, which notify_waiters would miss: the wait is
 * bounded and the check repeated. */
static int wait_commit_turn(storage_stage *st, uint64_t ticket) {
  while (atomic_load(&st->commit_turn) != ticket) {
    int r = tg_notify_wait_dl(st->turn_moved, tg_deadline_in(TG_MS(50)));
    if (r != 0 && r != TG_ETIMEDOUT) return r;
  }
  return 0;
}

static void pass_commit_turn(storage_stage *st, uint64_t ticket) {
  atomic_store(&st->commit_turn, ticket + 1);
  tg_notify_waiters(st->turn_moved);
}

static void *writer_task(void *arg) {
  write_job *j = arg;
  storage_stage *st = j->stage;
  batch *b = &j->b;
  int64_t start = tg_now();
  int lost = 1, my_turn = 0;
  if (tg_semaphore_try_acquire(st->pool, 1) != 0) {
    st->pool_waits++;
    uint64_t held;
    if (log_gate_pass(&st->pool_gate, start, TG_MS(1000), &held)) {
      tg_semaphore_stats ps;
      tg_semaphore_stats_get(st->pool, &ps);
      log_event(st->log, "💾", "storage", 0, "db_pool_wait",
                "All DB connections busy, waiting... (batch #%" PRIu64 ", %" PRIu64 "/%d in use)%s", b->id,
                ps.in_use, st->pool_size, log_held_note(held).s);
    }
    if (tg_semaphore_acquire(st->pool, 1) != 0) goto out;
  }
  int conn = 0;
  while (conn < st->pool_size && st->conn_busy[conn]) conn++;
  tg_assert(conn < st->pool_size); /* one permit per connection */
  st->conn_busy[conn] = 1;
  for (int attempt = 1;; attempt++) {
    if (st->write_ns > 0 && tg_sleep(st->write_ns) != 0) break;
    if (!my_turn && wait_commit_turn(st, j->ticket) != 0) break;
    my_turn = 1;
    rng fr = rng_stream(st->seed, (b->id << 8) ^ (uint64_t)attempt);
    db_call call = {.db = st->db, .conn = conn, .b = b, .fail = rng_unit(&fr) < st->fail_rate};
    st->transactions++;
    int r = tg_blocking_run(db_write, &call);
    if (r == 0) {
      st->last_commit_ns = tg_now();
      st->batches_stored++;
      st->readings_stored += call.res.inserted;
      st->duplicates += call.res.duplicates;
      lost = 0;
      uint64_t held = 0;
      if (attempt > 1 || log_gate_pass(&st->stored_gate, tg_now(), TG_MS(1000), &held))
        log_event(st->log, "💾", "storage", 0, "batch_stored",
                  "Batch #%" PRIu64 " stored: %" PRIu64 " readings in one transaction (connection %d, %" PRId64
                  " ms since it arrived%s)%s",
                  b->id, call.res.inserted, conn + 1, (tg_now() - start) / 1000000,
                  attempt > 1 ? ", after retries" : "", attempt > 1 ? "" : log_held_note(held).s);
      break;
    }
    st->write_retries++;
    log_event(st->log, "⚠️", "storage", 0, "write_retry",
              "Batch #%" PRIu64 " write failed (attempt %d: %s) - retrying, never dropping", b->id,
              attempt, call.err);
    int64_t backoff = TG_MS(20) * attempt;
    if (tg_sleep(backoff < TG_MS(200) ? backoff : TG_MS(200)) != 0) break;
  }
  st->conn_busy[conn] = 0;
  tg_semaphore_release(st->pool, 1);
out:
  /* A writer that had its turn passes it on, committed or not (aborted:
   * the run is over, and the writers after it are being aborted too). */
  if (my_turn) pass_commit_turn(st, j->ticket);
  if (lost) {
    st->batches_lost++;
    log_event(st->log, "❌", "storage", 0, "batch_lost", "Batch #%" PRIu64 " (%" PRIu32 " readings) lost: writer aborted",
              b->id, b->n);
  }
  batch_free(b);
  free(j);
  return NULL;
}

static void account(storage_stage *st, const tg_outcome *o) {
  st->writers_joined++;
  if (o->status == TG_EPANICKED) {
    st->writers_panicked++;
    log_event(st->log, "💥", "storage", 0, "writer_panicked", "Batch writer panicked: %s", o->message);
  } else if (o->status == TG_ECANCELED) {
    st->writers_aborted++;
  }
}

static void start_draining(storage_stage *st, int *draining) {
  *draining = 1;
  log_event(st->log, "🛑", "storage", 0, "storage_draining",
            "Storage sees shutdown: committing every batch until the aggregator hangs up");
}

void *storage_task(void *arg) {
  storage_stage *st = arg;
  tg_joinset *writers;
  if (tg_joinset_new(&writers, "batch-writers") != 0) {
    tg_mpsc_rx_drop(st->batches);
    st->batches = NULL;
    return NULL;
  }
  int draining = 0, stopped = 0;
  tg_outcome o;
  for (;;) {
    while (tg_joinset_try_join_next(writers, &o) == 0) account(st, &o);
    /* At most pool + 1 writers: one more than can write waits for a
     * connection; beyond that the batches stay in the channel. */
    while (tg_joinset_len(writers) > (size_t)st->pool_size) {
      int w;
      if (!draining) {
        tg_case cs[2] = {tg_cancel_case(st->cancel), tg_joinset_join_next_case(writers, &o)};
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
      tg_case cs[2] = {tg_cancel_case(st->cancel), tg_mpsc_recv_case(st->batches, &b)};
      int w = tg_select(cs, 2, TG_FOREVER);
      if (w == 0) {
        start_draining(st, &draining);
        continue;
      }
      r = w == 1 ? cs[1].result : w;
    } else {
      r = tg_mpsc_recv(st->batches, &b);
    }
    if (r != 0) {
      stopped = r;
      break;
    }
    st->batches_received++;
    write_job *j = malloc(sizeof *j);
    char name[32];
    snprintf(name, sizeof name, "writer-%" PRIu64, b.id);
    tg_spawn_opts opts = {.stack_size = WRITER_STACK, .pin = st->pin_writers, .worker = st->worker, .name = name};
    if (!j || (*j = (write_job){st, b, st->next_ticket}, tg_joinset_spawn(writers, writer_task, j, &opts, NULL)) != 0) {
      free(j);
      st->batches_lost++;
      log_event(st->log, "❌", "storage", 0, "batch_lost", "Batch #%" PRIu64 " lost: no memory for its writer",
                b.id);
      batch_free(&b);
      continue;
    }
    st->writers_spawned++;
    st->next_ticket++;
  }
  while (tg_joinset_join_next(writers, &o) == 0) account(st, &o);
  tg_joinset_free(writers);
  if (st->on_close) st->on_close(st->on_close_ctx);
  tg_mpsc_rx_drop(st->batches);
  st->batches = NULL;
  log_event(st->log, "💾", "storage", 0, "storage_drained",
            "Storage %s: %" PRIu64 " batches, %" PRIu64 " readings committed (%" PRIu64
            " transactions, %" PRIu64 " retried)",
            stopped != TG_ECLOSED ? "stopped before the aggregator hung up" : "drained", st->batches_stored,
            st->readings_stored, st->transactions, st->write_retries);
  return NULL;
}
