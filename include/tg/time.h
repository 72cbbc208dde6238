/* tg/time.h - the clock, sleeping, deadlines and intervals.
 *
 * Times are int64 nanoseconds on a monotonic clock: the real
 * CLOCK_MONOTONIC, or the runtime's virtual clock (tg/runtime.h), which
 * only moves when every task waits. Every call that can suspend has a
 * deadline form `_dl(..., deadline_ns)` taking an absolute time from
 * tg_now(); TG_FOREVER means no deadline, and a deadline in the past makes
 * the call a non-waiting attempt that fails with TG_ETIMEDOUT. Timers with
 * equal deadlines fire in the order they were set.
 *
 * Deadlines are on the runtime's clock for plain threads too: under the
 * virtual clock a thread's deadline passes when the tasks' idleness moves
 * virtual time past it, not after that much real time.
 */
#ifndef TG_TIME_H
#define TG_TIME_H

#include <stdint.h>

#define TG_FOREVER INT64_MAX
#define TG_MS(n)   ((int64_t)(n)*1000000)
#define TG_SEC(n)  ((int64_t)(n)*1000000000)

/* The runtime's clock (virtual when so configured); CLOCK_MONOTONIC
 * outside a runtime. */
int64_t tg_now(void);

/* A deadline `ns` from now, saturating at TG_FOREVER. */
int64_t tg_deadline_in(int64_t ns);

/* Suspends the calling task (or thread) for `ns` / until `deadline_ns`.
 * Returns 0 when the time has passed, TG_ECANCELED if the task was aborted. */
int tg_sleep(int64_t ns);
int tg_sleep_until(int64_t deadline_ns);

/* What an interval does when a tick is late (tokio's MissedTickBehavior). */
typedef enum tg_missed_tick {
  TG_MISSED_BURST = 0, /* fire the missed ticks at once until caught up (default) */
  TG_MISSED_DELAY,     /* next tick one period after the late one */
  TG_MISSED_SKIP,      /* next tick at the next multiple of the period */
} tg_missed_tick;

/* A periodic timer. The first tick completes at once, then every
 * `period_ns`. A plain struct owned by the caller. */
typedef struct tg_interval {
  int64_t period_ns;
  int64_t next_ns; /* when the next tick is due */
  tg_missed_tick missed;
} tg_interval;

/* Returns 0, or TG_EINVAL for a period <= 0 (a zero period would tick in a
 * busy loop; tokio panics there) or an unknown missed-tick mode; ticks of
 * such an interval then fail with TG_EINVAL too. */
int tg_interval_init(tg_interval *iv, int64_t period_ns, tg_missed_tick missed);

/* Waits for the next tick. Returns 0, TG_ECANCELED, or TG_EINVAL for an
 * interval whose init failed. */
int tg_interval_tick(tg_interval *iv);

#endif
