/* notify.c - wake one waiting task (or store one permit), or all of them.
 *
 * Invariants, under `lock`: a stored permit means nobody waits, because
 * notify_one stores it only when it found no waiter it could claim, and an
 * arm that finds it takes it instead of linking; a notification reaches a
 * waiter only through its claim, so a wait that times out, is aborted or
 * loses a select is skipped and the notification goes to the next waiter
 * or becomes the permit. `permit` is atomic because a wait's first try
 * takes it without the lock: a stored permit is all that try looks for,
 * and two tasks ping-ponging pay for that try on every turn. */
#include "tg/notify.h"

#include "internal.h"

#include <stdlib.h>

struct tg_notify {
  tg__lock lock;
  atomic_bool permit; /* set under the lock, taken with or without it */
  tg__waitlist waiters;
  uint64_t woken;  /* waiters a notify woke, ever */
  uint64_t stored; /* permits stored, ever; stored - permit were taken */
  char *name;
};

int tg_notify_new(tg_notify **out, const char *name) {
  tg_notify *n = calloc(1, sizeof *n);
  if (!n) return TG_ENOMEM;
  n->name = tg__strdup_or_null(name);
  if (name && !n->name) {
    free(n);
    return TG_ENOMEM;
  }
  *out = n;
  return 0;
}

void tg_notify_free(tg_notify *n) {
  if (!n) return;
  free(n->name);
  free(n);
}

void tg_notify_one(tg_notify *n) {
  tg__lock_acquire(&n->lock);
  if (n->waiters.head && tg__waitlist_wake_one(&n->waiters, 0))
    n->woken++;
  else if (!atomic_exchange_explicit(&n->permit, true, memory_order_release))
    n->stored++;
  tg__lock_release(&n->lock);
}

uint64_t tg_notify_waiters(tg_notify *n) {
  tg__lock_acquire(&n->lock);
  uint64_t woken = tg__waitlist_wake_all(&n->waiters, 0);
  n->woken += woken;
  tg__lock_release(&n->lock);
  return woken;
}

/* ------------------------------------------------------------ wait */

static bool take_permit(tg_notify *n) {
  return atomic_load_explicit(&n->permit, memory_order_relaxed) &&
         atomic_exchange_explicit(&n->permit, false, memory_order_acquire);
}

static int wait_try(tg_case *c) { return take_permit(c->obj) ? 0 : TG_EAGAIN; }

static bool wait_arm(tg_case *c, tg__waiter *w) {
  tg_notify *n = c->obj;
  tg__lock_acquire(&n->lock);
  bool decided = take_permit(n);
  if (decided) {
    if (tg__waiter_claim(w))
      w->result = 0;
    else
      atomic_store_explicit(&n->permit, true, memory_order_release); /* not ours to use */
  } else {
    tg__waitlist_push(&n->waiters, w);
  }
  tg__lock_release(&n->lock);
  return decided;
}

static void wait_disarm(tg_case *c, tg__waiter *w) {
  tg_notify *n = c->obj;
  tg__lock_acquire(&n->lock);
  tg__waitlist_remove(&n->waiters, w);
  tg__lock_release(&n->lock);
}

/* The notifier's claim is the notification: the woken waiter has it. */
static const tg__op wait_op = {wait_try, wait_arm, wait_disarm, tg__finish_stored};

int tg_notify_wait_dl(tg_notify *n, int64_t deadline_ns) {
  /* The first attempt inline, as tg__wait_one would make it: a stored
   * permit is taken without the wait machinery. */
  if (tg__self_cancelled()) return TG_ECANCELED;
  if (take_permit(n)) return 0;
  return tg__wait_single(&wait_op, n, NULL, 0, deadline_ns, true);
}

int tg_notify_wait(tg_notify *n) { return tg_notify_wait_dl(n, TG_FOREVER); }

tg_case tg_notify_wait_case(tg_notify *n) { return (tg_case){.op = &wait_op, .obj = n}; }

void tg_notify_stats_get(tg_notify *n, tg_notify_stats *out) {
  tg__lock_acquire(&n->lock);
  int permit = atomic_load_explicit(&n->permit, memory_order_relaxed);
  *out = (tg_notify_stats){
      .name = n->name,
      .waiters = n->waiters.len,
      .permit = permit,
      .notified = n->woken + n->stored - (uint64_t)permit,
  };
  tg__lock_release(&n->lock);
}
