/* wait.c - the wait protocol: wait lists, claiming, and the one loop that
 * every suspending call (and tg_select) goes through. */
#include "internal.h"

#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void tg__lock_slow(tg__lock *l) {
  for (unsigned spins = 0;; spins++) {
    if (!atomic_load_explicit(&l->held, memory_order_relaxed) &&
        !atomic_exchange_explicit(&l->held, 1, memory_order_acquire))
      return;
    if (spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      sched_yield(); /* the holder may have been preempted */
    }
  }
}

void tg__waitlist_push(tg__waitlist *l, tg__waiter *w) {
  w->next = NULL;
  w->prev = l->tail;
  if (l->tail)
    l->tail->next = w;
  else
    l->head = w;
  l->tail = w;
  w->linked = true;
  l->len++;
}

void tg__waitlist_remove(tg__waitlist *l, tg__waiter *w) {
  if (!w->linked) return;
  if (w->prev)
    w->prev->next = w->next;
  else
    l->head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    l->tail = w->prev;
  w->prev = w->next = NULL;
  w->linked = false;
  l->len--;
}

static long futex(atomic_uint *word, int op, unsigned val, const struct timespec *ts) {
  return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

void tg__wait_wake(tg__wait *wait) {
  if (wait->task) {
    tg__task_unpark(wait->task);
    return;
  }
  atomic_store_explicit(&wait->thread_woken, 1, memory_order_release);
  futex(&wait->thread_woken, FUTEX_WAKE_PRIVATE, 1, NULL);
}

tg__waiter *tg__waitlist_wake_one(tg__waitlist *l, int result) {
  while (l->head) {
    tg__waiter *w = tg__waitlist_pop(l);
    if (tg__waiter_claim(w)) {
      w->result = result;
      tg__wait_wake(w->wait);
      return w;
    }
  }
  return NULL;
}

tg__waiter *tg__waitlist_claim_all(tg__waitlist *l, int result) {
  tg__waiter *chain = NULL, **link = &chain;
  for (tg__waiter *w = l->head, *next; w; w = next) {
    next = w->next;
    w->prev = w->next = NULL;
    w->linked = false;
    if (tg__waiter_claim(w)) {
      w->result = result;
      *link = w;
      link = &w->next;
    }
  }
  *l = (tg__waitlist){0};
  return chain;
}

void tg__wake_chain(tg__waiter *w) {
  while (w) {
    tg__waiter *next = w->next; /* w dies once its owner runs */
    tg__wait_wake(w->wait);
    w = next;
  }
}

uint64_t tg__waitlist_wake_all(tg__waitlist *l, int result) {
  uint64_t woken = 0;
  while (tg__waitlist_wake_one(l, result)) woken++;
  return woken;
}

int tg__finish_stored(tg_case *c, tg__waiter *w) {
  (void)c;
  return w->result;
}

int tg__finish_retry(tg_case *c, tg__waiter *w) { return w->result == TG_EAGAIN ? c->op->try_(c) : w->result; }

/* ------------------------------------------------------------ suspending */

/* A plain thread sleeps on its futex word; with a deadline it claims the
 * wait itself when the time is up. Under the virtual clock nothing tells
 * it that time jumped, so it looks again every millisecond. */
void tg__wait_block(tg__wait *wait, int64_t deadline) {
  while (!atomic_load_explicit(&wait->thread_woken, memory_order_acquire)) {
    struct timespec ts, *tsp = NULL;
    if (deadline != TG_FOREVER) {
      int64_t left = deadline - tg_now();
      if (left <= 0) {
        int pending = TG__PENDING;
        if (atomic_compare_exchange_strong(&wait->winner, &pending, TG__WON_BY_TIMEOUT)) return;
        left = 1000000; /* claimed by someone else: their wake is imminent */
      }
      if (tg__clock_is_virtual() && left > 1000000) left = 1000000;
      ts.tv_sec = left / 1000000000;
      ts.tv_nsec = left % 1000000000;
      tsp = &ts;
    }
    futex(&wait->thread_woken, FUTEX_WAIT_PRIVATE, 0, tsp);
  }
}

static int try_all(tg_case *cases, int n) {
  for (int i = 0; i < n; i++) {
    int r = cases[i].op->try_(&cases[i]);
    if (r != TG_EAGAIN) {
      cases[i].result = r;
      return i;
    }
  }
  return TG__PENDING;
}

static int wait_once(tg_task *self, tg_case *cases, int n, int64_t deadline, bool tried);

/* Waiters of a select live on the caller's stack up to INLINE_WAITERS
 * (about 1 KiB); more go to the heap, since a task's stack is 64 KiB by
 * default and a waiter is 56 bytes: 1,200 cases would overflow it. */
enum { INLINE_WAITERS = 16 };

/* `tried`: the caller has just tried every case and found none ready, so
 * the first round goes straight to arming (the arms check again under
 * their locks). */
static int wait_cases(tg_case *cases, int n, int64_t deadline, bool tried) {
  tg_task *self = tg__self();
  for (;;) {
    int r = wait_once(self, cases, n, deadline, tried);
    /* A woken case that finds nothing to take after all (another consumer
     * was faster) waits again; the deadline still holds. */
    if (r < 0 || cases[r].result != TG_EAGAIN) return r;
    tried = false;
  }
}

int tg__wait_cases(tg_case *cases, int n, int64_t deadline) { return wait_cases(cases, n, deadline, false); }

static int wait_once(tg_task *self, tg_case *cases, int n, int64_t deadline, bool tried) {
  if (self && atomic_load_explicit(&self->cancelled, memory_order_relaxed)) return TG_ECANCELED;
  if (!tried) {
    int ready = try_all(cases, n);
    if (ready != TG__PENDING) return ready;
  }
  if (deadline != TG_FOREVER && deadline <= tg_now()) return TG_ETIMEDOUT;
  if (!self && tg__worker_current()) return TG_ENOTASK;

  tg__wait wait = {.task = self};
  atomic_init(&wait.winner, TG__PENDING);
  atomic_init(&wait.thread_woken, 0);
  tg__waiter inline_waiters[INLINE_WAITERS];
  tg__waiter *waiters = inline_waiters;
  if (n > INLINE_WAITERS && !(waiters = malloc((size_t)n * sizeof *waiters))) return TG_ENOMEM;
  int armed = 0, decided_at_arm = TG__PENDING;
  while (armed < n) {
    tg__waiter *w = &waiters[armed];
    *w = (tg__waiter){.wait = &wait, .index = armed, .buf = cases[armed].buf, .n = cases[armed].n};
    armed++;
    if (cases[armed - 1].op->arm(&cases[armed - 1], w)) {
      decided_at_arm = armed - 1;
      break;
    }
  }
  int winner = atomic_load(&wait.winner);
  if (winner == TG__PENDING) {
    tg__wait_suspend(self, &wait, deadline);
  } else if (winner != decided_at_arm) {
    /* Another party claimed an earlier case and its wake is on the way:
     * take it, so it cannot end a later wait or touch a dead stack. */
    if (self)
      tg__task_park();
    else
      tg__wait_block(&wait, TG_FOREVER);
  }
  /* The winner was unlinked by whoever claimed it, who touches it no more
   * once it woke us (or by nobody, if its arm claimed it): only the other
   * cases, and a winner still linked, need their primitive's lock. */
  winner = atomic_load(&wait.winner);
  for (int i = 0; i < armed; i++)
    if (i != winner || waiters[i].linked) cases[i].op->disarm(&cases[i], &waiters[i]);

  int r = winner == TG__WON_BY_TIMEOUT ? TG_ETIMEDOUT : winner == TG__WON_BY_ABORT ? TG_ECANCELED : winner;
  if (r >= 0) cases[winner].result = cases[winner].op->finish(&cases[winner], &waiters[winner]);
  if (waiters != inline_waiters) free(waiters);
  return r;
}

int tg__wait_one(const tg__op *op, void *obj, void *buf, uint64_t n, int64_t deadline) {
  return tg__wait_single(op, obj, buf, n, deadline, false);
}

int tg_select(tg_case *cases, int n, int64_t deadline_ns) {
  if (n < 1) return TG_EINVAL;
  for (int i = 0; i < n; i++)
    if (!cases[i].op) return TG_EINVAL;
  return tg__wait_cases(cases, n, deadline_ns);
}
