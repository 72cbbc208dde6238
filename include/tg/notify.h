/* tg/notify.h - wake one waiting task, or all of them, without data.
 *
 * tg_notify_one wakes the longest-waiting caller of tg_notify_wait; when
 * nobody waits it stores a single permit (several calls still store one),
 * which the next wait consumes at once. tg_notify_waiters wakes every
 * caller waiting at that moment and stores nothing: a task that was busy
 * elsewhere when it fired misses it. That is why shutdown uses a
 * cancellation token (tg/cancel.h), which latches, and not notify_waiters.
 *
 * Cancellation: a wait that times out, is aborted or loses a select
 * consumes no permit. Unlike tokio, a task counts as waiting only once it
 * is inside tg_notify_wait (there is no separate "enable" step).
 */
#ifndef TG_NOTIFY_H
#define TG_NOTIFY_H

#include "tg/select.h"

#include <stdint.h>

typedef struct tg_notify tg_notify;

/* Returns 0 or TG_ENOMEM. name may be NULL. */
int tg_notify_new(tg_notify **n, const char *name);
/* Frees it; nobody may wait on it any more. */
void tg_notify_free(tg_notify *n);

void tg_notify_one(tg_notify *n);
/* Returns how many waiters it woke. */
uint64_t tg_notify_waiters(tg_notify *n);

/* Returns 0 when notified, TG_ETIMEDOUT (_dl) or TG_ECANCELED. */
int tg_notify_wait(tg_notify *n);
int tg_notify_wait_dl(tg_notify *n, int64_t deadline_ns);
tg_case tg_notify_wait_case(tg_notify *n);

typedef struct tg_notify_stats {
  const char *name;
  uint64_t waiters;  /* waiting right now */
  int permit;        /* a stored notify_one */
  uint64_t notified; /* waits that completed, ever */
} tg_notify_stats;

void tg_notify_stats_get(tg_notify *n, tg_notify_stats *out);

#endif
