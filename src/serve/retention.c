/* retention.c - the retention task; see retention.h. */
#include "retention.h"

#include "wall_clock.h"

#include <inttypes.h>

/* Waits ns or until the token fires; nonzero when it fired. */
static int rest(retention *r, int64_t ns) {
  tg_case cs[1] = {tg_cancel_case(r->cancel)};
  return tg_select(cs, 1, tg_deadline_in(ns)) == 0 || tg_cancel_fired(r->cancel);
}

/* One pass: chunks until a round over the devices deleted all it could. */
static void pass(retention *r) {
  storage_expire_args a = {.db = r->db, .cutoff_ms = wall_clock_ms() - r->keep_ms, .max_rows = RETENTION_CHUNK};
  uint64_t total = 0;
  do {
    int e = tg_blocking_run(storage_expire_call, &a);
    if (e != 0) {
      uint64_t held;
      if (log_gate_pass(&r->errors, tg_now(), TG_SEC(60), &held))
        log_event(r->log, "❌", "retention", 0, "retention_failed", "Retention: cannot delete old readings: %s%s", a.err,
                  log_held_note(held).s);
      return;
    }
    total += a.deleted;
    figure_add_shared(&r->deleted, a.deleted);
    /* The writer's turn: it may be waiting for the lock this chunk held. */
  } while (a.more && !rest(r, TG_MS(1)));
  figure_add_shared(&r->passes, 1);
  atomic_store_explicit(&r->last_pass_unix_ms, wall_clock_ms(), memory_order_relaxed);
  if (total)
    log_event(r->log, "🧹", "retention", 0, "retention_pass",
              "Retention: %" PRIu64 " readings older than %" PRId64 " ms deleted", total, r->keep_ms);
}

void *retention_task(void *arg) {
  retention *r = arg;
  int64_t every = TG_MS(r->keep_ms / 10);
  if (every < TG_SEC(1)) every = TG_SEC(1);
  if (every > TG_SEC(60)) every = TG_SEC(60);
  do pass(r);
  while (!rest(r, every));
  return NULL;
}
