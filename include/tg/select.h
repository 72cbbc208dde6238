/* tg/select.h - waiting on several operations at once.
 *
 * tg_select(cases, n, deadline) completes exactly one of the cases: the
 * first one (in array order) that can complete at once, else the first
 * that becomes able to while the caller waits. The order is the priority:
 * put a shutdown case first so it is never starved by a busy channel.
 * A case that did not win consumes nothing: no message leaves a channel,
 * no permit is taken, no notification is used up (tokio's "cancel safety").
 *
 * The deadline only bounds the waiting: a case that can complete at once
 * wins even when the deadline has passed, so a loop that selects on a
 * busy channel with "the next batch time" as deadline never times out
 * while the channel has data - compare tg_now() with that time yourself.
 *
 * Cases are built by the primitives' *_case() functions (for instance
 * tg_mpsc_recv_case, tg_cancel_case, tg_joinset_join_next_case). The
 * winner's own result (0, TG_ECLOSED, TG_ELAGGED, ...) is left in its
 * `result` field; its output buffer was written only if it won.
 */
#ifndef TG_SELECT_H
#define TG_SELECT_H

#include <stdint.h>

struct tg__op;

typedef struct tg_case {
  const struct tg__op *op; /* which operation (set by the *_case builders) */
  void *obj;               /* the primitive */
  void *buf;               /* where the operation reads or writes its value */
  uint64_t n;              /* a count, for operations that take one */
  int result;              /* the winner's result, set by tg_select */
} tg_case;

/* Returns the index of the winning case, TG_ETIMEDOUT if the deadline came
 * first, TG_ECANCELED if the calling task was aborted, TG_EINVAL for n < 1
 * or a case with no operation, TG_ENOMEM when a select over more than 16
 * cases must wait and the heap has no room for its waiters (one per case,
 * 56 bytes; up to 16 live on the caller's stack). Any number of cases
 * works otherwise: nothing of size n goes on the task's stack. */
int tg_select(tg_case *cases, int n, int64_t deadline_ns);

#endif
