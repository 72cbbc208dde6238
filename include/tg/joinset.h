/* tg/joinset.h - a set of tasks joined in the order they finish.
 *
 * tg_joinset_spawn starts a task owned by the set. tg_joinset_join_next
 * waits for the next task to end - in completion order, not spawn order -
 * and reports how it ended: returned a value, panicked (with its message)
 * or was cancelled. A panicking task ends alone; the others run on.
 * When the set holds no task, join_next returns TG_EEMPTY at once.
 *
 * tg_joinset_abort_all aborts every task still running (they are joined
 * as usual, as cancelled unless they had already finished). Freeing the
 * set aborts what is left and forgets it: those tasks end on their own.
 * Cancellation of the caller: a join_next that times out, is aborted or
 * loses a select leaves every finished task in the set.
 */
#ifndef TG_JOINSET_H
#define TG_JOINSET_H

#include "tg/select.h"
#include "tg/task.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tg_joinset tg_joinset;

/* Returns 0 or TG_ENOMEM. name may be NULL. */
int tg_joinset_new(tg_joinset **js, const char *name);
/* Aborts the tasks left and frees the set. */
void tg_joinset_free(tg_joinset *js);

/* Spawns fn(arg) into the set; *id (may be NULL) gets its task id.
 * Returns 0 or tg_spawn's errors. */
int tg_joinset_spawn(tg_joinset *js, tg_task_fn fn, void *arg, const tg_spawn_opts *opts, uint64_t *id);

/* Waits for the next task to end and fills *out (out->status: 0,
 * TG_EPANICKED or TG_ECANCELED). Returns 0, TG_EEMPTY (no task in the
 * set), TG_ETIMEDOUT (_dl) or TG_ECANCELED (the caller was aborted). */
int tg_joinset_join_next(tg_joinset *js, tg_outcome *out);
int tg_joinset_join_next_dl(tg_joinset *js, tg_outcome *out, int64_t deadline_ns);
/* Returns 0, TG_EAGAIN (tasks run but none ended) or TG_EEMPTY. */
int tg_joinset_try_join_next(tg_joinset *js, tg_outcome *out);
tg_case tg_joinset_join_next_case(tg_joinset *js, tg_outcome *out);

void tg_joinset_abort_all(tg_joinset *js);

/* Tasks in the set: running plus ended but not yet joined. */
size_t tg_joinset_len(tg_joinset *js);

typedef struct tg_joinset_stats {
  const char *name;
  uint64_t running, ended_unjoined;
  uint64_t spawned, joined, panicked, cancelled;
} tg_joinset_stats;

void tg_joinset_stats_get(tg_joinset *js, tg_joinset_stats *out);

#endif
