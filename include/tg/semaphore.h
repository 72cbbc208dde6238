/* tg/semaphore.h - a counting semaphore, fair in arrival order.
 *
 * Holds a number of permits. tg_semaphore_acquire(sem, n) takes n permits
 * or waits; waiters are served strictly in the order they arrived, a large
 * request at the head holding back smaller ones behind it (tokio's
 * Semaphore), and try_acquire fails while anyone waits, so nobody barges.
 *
 * Permits a task acquires belong to that task: it returns them with
 * tg_semaphore_release, and whatever it still holds when it ends (returns,
 * panics or is aborted) goes back by itself. A task may release only what
 * it holds (TG_ENOPERM otherwise). Plain threads are not tracked and
 * release by hand. tg_semaphore_add_permits adds new permits.
 *
 * Close: waiters fail with TG_ECLOSED and so does every later acquire;
 * releases still count. Cancellation: an acquire that times out, is
 * aborted or loses a select takes no permit.
 */
#ifndef TG_SEMAPHORE_H
#define TG_SEMAPHORE_H

#include "tg/select.h"

#include <stdint.h>

typedef struct tg_semaphore tg_semaphore;

/* Returns 0, TG_ENOMEM. name may be NULL. */
int tg_semaphore_new(tg_semaphore **sem, uint64_t permits, const char *name);
/* Frees it; nobody may wait on it or hold its permits any more. */
void tg_semaphore_free(tg_semaphore *sem);

/* Returns 0, TG_ECLOSED, TG_EINVAL (n == 0), TG_ETIMEDOUT (_dl),
 * TG_ECANCELED, TG_ENOMEM (the task's record of held permits). */
int tg_semaphore_acquire(tg_semaphore *sem, uint64_t n);
int tg_semaphore_acquire_dl(tg_semaphore *sem, uint64_t n, int64_t deadline_ns);
/* Returns 0, TG_EAGAIN (not enough permits, or others wait), TG_ECLOSED,
 * TG_EINVAL (n == 0) or TG_ENOMEM (the task's record of held permits). */
int tg_semaphore_try_acquire(tg_semaphore *sem, uint64_t n);
/* Returns 0, or TG_ENOPERM when the calling task holds fewer than n. */
int tg_semaphore_release(tg_semaphore *sem, uint64_t n);
void tg_semaphore_add_permits(tg_semaphore *sem, uint64_t n);
void tg_semaphore_close(tg_semaphore *sem);

/* A select case acquiring n permits. */
tg_case tg_semaphore_acquire_case(tg_semaphore *sem, uint64_t n);

typedef struct tg_semaphore_stats {
  const char *name;
  uint64_t permits; /* configured: initial + added */
  uint64_t available;
  uint64_t in_use;   /* permits - available */
  uint64_t waiters;  /* waiting right now */
  uint64_t waits;    /* acquires that had to wait, ever */
  uint64_t acquired; /* acquires that succeeded, ever */
  int closed;
} tg_semaphore_stats;

void tg_semaphore_stats_get(tg_semaphore *sem, tg_semaphore_stats *out);

#endif
