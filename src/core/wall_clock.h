/* wall_clock.h - the time of day, for what is stamped with it: readings
 * without a timestamp, retention's cutoff, a start time shown to people.
 * Durations and deadlines use tg_now (monotonic, virtual in the demo),
 * never this: the wall clock may jump. */
#ifndef TELEGATE_WALL_CLOCK_H
#define TELEGATE_WALL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds since the Unix epoch. */
static inline int64_t wall_clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds since the Unix epoch. */
static inline int64_t wall_clock_ms(void) { return wall_clock_ns() / 1000000; }

#endif
