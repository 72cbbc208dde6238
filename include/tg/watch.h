/* tg/watch.h - a single value that changes, and receivers that follow it.
 *
 * The channel holds only the latest value and a version number that each
 * send increments. Each receiver remembers the version it has seen:
 * tg_watch_changed waits until a newer version exists and marks it seen,
 * so a receiver that was busy while several sends happened wakes once and
 * reads the latest value - intermediate values are never queued.
 *
 * Reading: tg_watch_borrow gives a pointer to the value under a read lock
 * (no copy; a send spins until tg_watch_borrow_end, so keep it short and
 * never wait in between: a sender on the same worker would spin forever);
 * tg_watch_get copies it out (with `clone`, for reference-counted values).
 * The *_and_update forms also mark the current version seen.
 *
 * Ownership: with `clone`/`drop` set, send moves the caller's value in and
 * the channel drop()s the value it replaces. Unlike tokio's send, a send
 * with no receiver still stores the value (tokio's send_replace), so a
 * receiver subscribing later sees it.
 *
 * Closing: after the sender is dropped, changed() returns 0 for a version
 * not yet seen, then TG_ECLOSED; the value stays readable. The channel is
 * freed with its last handle. Cancellation: a changed() that times out,
 * is aborted or loses a select marks nothing seen.
 */
#ifndef TG_WATCH_H
#define TG_WATCH_H

#include "tg/select.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tg_watch_tx tg_watch_tx;
typedef struct tg_watch_rx tg_watch_rx;

typedef struct tg_watch_opts {
  size_t elem_size;
  void (*clone)(void *elem); /* optional */
  void (*drop)(void *elem);  /* optional */
  const char *name;          /* copied; may be NULL */
} tg_watch_opts;

/* Creates the channel holding `initial` (moved in), version 0, and if rx
 * is not NULL a first receiver that has seen version 0.
 * Returns 0, TG_EINVAL or TG_ENOMEM. */
int tg_watch_new(const tg_watch_opts *opts, const void *initial, tg_watch_tx **tx, tg_watch_rx **rx);

/* A new receiver that has seen the current version. 0 or TG_ENOMEM. */
int tg_watch_subscribe(tg_watch_tx *tx, tg_watch_rx **rx);
/* A new receiver that has seen what rx has seen. 0 or TG_ENOMEM. */
int tg_watch_rx_clone(tg_watch_rx *rx, tg_watch_rx **out);

void tg_watch_tx_drop(tg_watch_tx *tx);
void tg_watch_rx_drop(tg_watch_rx *rx);

/* Replaces the value and wakes every receiver waiting in changed().
 * Returns 0 (never waits). */
int tg_watch_send(tg_watch_tx *tx, const void *value);

/* Waits for a version the receiver has not seen and marks it seen.
 * Returns 0, TG_ECLOSED (sender gone, nothing new), TG_ETIMEDOUT (_dl)
 * or TG_ECANCELED. */
int tg_watch_changed(tg_watch_rx *rx);
int tg_watch_changed_dl(tg_watch_rx *rx, int64_t deadline_ns);
tg_case tg_watch_changed_case(tg_watch_rx *rx);
/* Nonzero when a version newer than the one seen exists. */
int tg_watch_has_changed(const tg_watch_rx *rx);

/* The value under a read lock, until tg_watch_borrow_end(rx). */
const void *tg_watch_borrow(tg_watch_rx *rx);
const void *tg_watch_borrow_and_update(tg_watch_rx *rx);
void tg_watch_borrow_end(tg_watch_rx *rx);

/* Copies the value (cloned) into out. */
void tg_watch_get(tg_watch_rx *rx, void *out);
void tg_watch_get_and_update(tg_watch_rx *rx, void *out);

typedef struct tg_watch_stats {
  const char *name;
  uint64_t version; /* sends so far */
  uint64_t receivers;
  uint64_t receivers_waiting;
  int closed; /* sender gone */
} tg_watch_stats;

void tg_watch_stats_get(const tg_watch_tx *tx, tg_watch_stats *out);
void tg_watch_rx_stats_get(const tg_watch_rx *rx, tg_watch_stats *out);

#endif
