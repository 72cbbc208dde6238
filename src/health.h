/* health.h - the health checker: request/response over oneshot channels.
 *
 * Every interval it picks 2-3 distinct devices at random and asks each, in
 * turn: a fresh oneshot pair, the sender half put on the device's own
 * request mpsc, then a wait of at most the timeout on the receiver half.
 * Each check ends one of four ways, each counted: an answer (ok), no
 * answer in time (timeout), the device dropped the reply sender (dropped),
 * or the device's task has ended and its request channel is closed
 * (unreachable). The cancel token is the first case of every wait. */
#ifndef TELEGATE_HEALTH_H
#define TELEGATE_HEALTH_H

#include "figure.h"
#include "log.h"
#include "rng.h"
#include "tg/tg.h"

#include <stdint.h>

typedef struct health_checker {
  tg_cancel *cancel;
  demo_log *log;
  int ndevices;
  tg_mpsc_tx **devices;  /* request senders, index = device id - 1; owned */
  int64_t t0, interval_ns, timeout_ns;
  rng rng;
  uint64_t next_id;
  /* figures: serve's on-demand checks count here too, from any worker */
  figure rounds, ok, timeout, dropped, unreachable;
} health_checker;

/* The task: arg is a health_checker *. Returns NULL. */
void *health_task(void *arg);

#endif
