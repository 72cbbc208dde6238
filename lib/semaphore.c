/* semaphore.c - the FIFO-fair counting semaphore.
 *
 * Invariants, under `lock`: available <= permits; a waiter is on the list
 * only while it could not be served, and the head is served as soon as
 * enough permits are available, so nobody waits while the head could
 * proceed; permits handed to a waiter are taken by its claimer, never by
 * the woken task, so a lost select case takes nothing. */
#include "tg/semaphore.h"

#include "internal.h"

#include <stdlib.h>

struct tg_semaphore {
  tg__lock lock;
  uint64_t permits, available;
  tg__waitlist waiters; /* waiter->n is the request */
  bool closed;
  uint64_t waits, acquired;
  char *name;
};

int tg_semaphore_new(tg_semaphore **out, uint64_t permits, const char *name) {
  tg_semaphore *sem = calloc(1, sizeof *sem);
  if (!sem) return TG_ENOMEM;
  sem->name = tg__strdup_or_null(name);
  if (name && !sem->name) {
    free(sem);
    return TG_ENOMEM;
  }
  sem->permits = sem->available = permits;
  *out = sem;
  return 0;
}

void tg_semaphore_free(tg_semaphore *sem) {
  if (!sem) return;
  free(sem->name);
  free(sem);
}

/* Hands permits to waiters from the head while they suffice. Lock held. */
static void serve_waiters(tg_semaphore *sem) {
  while (sem->waiters.head && sem->waiters.head->n <= sem->available) {
    tg__waiter *w = tg__waitlist_pop(&sem->waiters);
    if (!tg__waiter_claim(w)) continue;
    sem->available -= w->n;
    sem->acquired++;
    w->result = 0;
    tg__wait_wake(w->wait);
  }
}

static int take_locked(tg_semaphore *sem, uint64_t n) {
  if (sem->closed) return TG_ECLOSED;
  if (sem->waiters.head || sem->available < n) return TG_EAGAIN;
  sem->available -= n;
  sem->acquired++;
  return 0;
}

/* Records permits just taken as held by the calling task. */
static int hold(tg_semaphore *sem, uint64_t n) {
  int r = tg__task_hold_permits(sem, n);
  if (r != 0) tg__semaphore_return_permits(sem, n);
  return r;
}

static int acquire_try(tg_case *c) {
  tg_semaphore *sem = c->obj;
  if (c->n == 0) return TG_EINVAL;
  tg__lock_acquire(&sem->lock);
  int r = take_locked(sem, c->n);
  tg__lock_release(&sem->lock);
  return r == 0 ? hold(sem, c->n) : r;
}

static bool acquire_arm(tg_case *c, tg__waiter *w) {
  tg_semaphore *sem = c->obj;
  tg__lock_acquire(&sem->lock);
  bool decided = sem->closed || (!sem->waiters.head && sem->available >= c->n);
  if (decided) {
    if (tg__waiter_claim(w)) w->result = take_locked(sem, c->n);
  } else {
    sem->waits++;
    tg__waitlist_push(&sem->waiters, w);
  }
  tg__lock_release(&sem->lock);
  return decided;
}

static void acquire_disarm(tg_case *c, tg__waiter *w) {
  tg_semaphore *sem = c->obj;
  tg__lock_acquire(&sem->lock);
  bool was_head = sem->waiters.head == w;
  tg__waitlist_remove(&sem->waiters, w);
  if (was_head) serve_waiters(sem); /* a big request leaving may unblock others */
  tg__lock_release(&sem->lock);
}

/* The claimer took the permits for the winner; they are its task's now. */
static int acquire_finish(tg_case *c, tg__waiter *w) { return w->result == 0 ? hold(c->obj, c->n) : w->result; }

static const tg__op acquire_op = {acquire_try, acquire_arm, acquire_disarm, acquire_finish};

void tg__semaphore_return_permits(tg_semaphore *sem, uint64_t n) {
  tg__lock_acquire(&sem->lock);
  sem->available += n;
  serve_waiters(sem);
  tg__lock_release(&sem->lock);
}

/* The wait of acquire, with its operation's functions called directly;
 * out of line, so that the inline first attempt stays small. */
static __attribute__((noinline)) int acquire_wait(tg_semaphore *sem, uint64_t n, int64_t deadline_ns) {
  return tg__wait_single(&acquire_op, sem, NULL, n, deadline_ns, true);
}

int tg_semaphore_acquire_dl(tg_semaphore *sem, uint64_t n, int64_t deadline_ns) {
  /* The first attempt inline, as tg__wait_one would make it. */
  if (tg__self_cancelled()) return TG_ECANCELED;
  if (n == 0) return TG_EINVAL;
  tg__lock_acquire(&sem->lock);
  int r = take_locked(sem, n);
  tg__lock_release(&sem->lock);
  if (r == 0) return hold(sem, n);
  if (r != TG_EAGAIN) return r;
  return acquire_wait(sem, n, deadline_ns);
}

int tg_semaphore_acquire(tg_semaphore *sem, uint64_t n) { return tg_semaphore_acquire_dl(sem, n, TG_FOREVER); }

int tg_semaphore_try_acquire(tg_semaphore *sem, uint64_t n) {
  tg_case c = {.obj = sem, .n = n};
  return acquire_try(&c);
}

int tg_semaphore_release(tg_semaphore *sem, uint64_t n) {
  int r = tg__task_drop_permits(sem, n);
  if (r == 0) tg__semaphore_return_permits(sem, n);
  return r;
}

void tg_semaphore_add_permits(tg_semaphore *sem, uint64_t n) {
  tg__lock_acquire(&sem->lock);
  sem->permits += n;
  sem->available += n;
  serve_waiters(sem);
  tg__lock_release(&sem->lock);
}

void tg_semaphore_close(tg_semaphore *sem) {
  tg__lock_acquire(&sem->lock);
  sem->closed = true;
  tg__waitlist_wake_all(&sem->waiters, TG_ECLOSED);
  tg__lock_release(&sem->lock);
}

tg_case tg_semaphore_acquire_case(tg_semaphore *sem, uint64_t n) {
  return (tg_case){.op = &acquire_op, .obj = sem, .n = n};
}

void tg_semaphore_stats_get(tg_semaphore *sem, tg_semaphore_stats *out) {
  tg__lock_acquire(&sem->lock);
  *out = (tg_semaphore_stats){
      .name = sem->name,
      .permits = sem->permits,
      .available = sem->available,
      .in_use = sem->permits - sem->available,
      .waiters = sem->waiters.len,
      .waits = sem->waits,
      .acquired = sem->acquired,
      .closed = sem->closed,
  };
  tg__lock_release(&sem->lock);
}
