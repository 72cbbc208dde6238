/* tg/cancel.h - a latched cancellation token, for shutdown.
 *
 * A token starts unfired; tg_cancel_fire fires it once and for ever. Every
 * task waiting on it wakes, and every later wait, check or select case on
 * it completes at once - so a task that was busy when the token fired
 * still sees it at its next check (a Notify's notify_waiters would be
 * missed). Put tg_cancel_case first in a select so shutdown wins over a
 * busy channel.
 *
 * A child token (tg_cancel_child) fires when its parent fires, or by
 * itself without touching the parent. A token is freed by its owner after
 * nobody waits on it; freeing a parent detaches its children.
 */
#ifndef TG_CANCEL_H
#define TG_CANCEL_H

#include "tg/select.h"

#include <stdint.h>

typedef struct tg_cancel tg_cancel;

/* Returns 0 or TG_ENOMEM. name may be NULL (children have none). */
int tg_cancel_new(tg_cancel **c, const char *name);
/* A token fired with its parent (at once if the parent already fired).
 * Returns 0 or TG_ENOMEM. */
int tg_cancel_child(tg_cancel *parent, tg_cancel **child);
void tg_cancel_free(tg_cancel *c);

/* Fires the token and its children; idempotent, any thread. */
void tg_cancel_fire(tg_cancel *c);
/* Nonzero once fired. */
int tg_cancel_fired(const tg_cancel *c);

/* Returns 0 once fired, TG_ETIMEDOUT (_dl) or TG_ECANCELED. */
int tg_cancel_wait(tg_cancel *c);
int tg_cancel_wait_dl(tg_cancel *c, int64_t deadline_ns);
tg_case tg_cancel_case(tg_cancel *c);

typedef struct tg_cancel_stats {
  const char *name;
  int fired;
  uint64_t waiters; /* waiting right now */
} tg_cancel_stats;

void tg_cancel_stats_get(tg_cancel *c, tg_cancel_stats *out);

#endif
