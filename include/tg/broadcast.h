/* tg/broadcast.h - one-to-many channel where slow receivers lag.
 *
 * A ring of `capacity` fixed-size elements. Every receiver has its own
 * cursor and sees every message sent after it subscribed, in order. Send
 * never waits: when the ring is full the oldest message is overwritten, and
 * a receiver whose cursor pointed at an overwritten message gets
 * TG_ELAGGED once, with tg_broadcast_rx_lagged() telling exactly how many
 * it missed; its cursor then moves to the oldest message still retained
 * and the next recv returns it (tokio's RecvError::Lagged(n)).
 *
 * Ownership: with `clone` and `drop` set (for reference-counted values),
 * a successful send moves the caller's value into the ring, each receiver
 * gets its own clone() of it, and the ring drop()s a value when it is
 * overwritten or the channel is freed. Without them, values are plain
 * bytes. A send with no receiver fails with TG_ECLOSED and the caller
 * keeps its value.
 *
 * Closing: once every sender handle is dropped, receivers get what they
 * have not read yet, then TG_ECLOSED. The channel is freed when the last
 * handle of either kind is dropped. A receiver is used by one task or
 * thread at a time. Cancellation: a recv that times out, is aborted or
 * loses a select leaves the receiver's cursor where it was.
 */
#ifndef TG_BROADCAST_H
#define TG_BROADCAST_H

#include "tg/select.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tg_broadcast_tx tg_broadcast_tx;
typedef struct tg_broadcast_rx tg_broadcast_rx;

typedef struct tg_broadcast_opts {
  size_t capacity;           /* >= 1 */
  size_t elem_size;          /* >= 1 */
  void (*clone)(void *elem); /* optional: make `elem` an owned copy (e.g. incref) */
  void (*drop)(void *elem);  /* optional: release an owned copy */
  const char *name;          /* copied; may be NULL */
} tg_broadcast_opts;

/* Creates a channel and, if rx is not NULL, a first receiver.
 * Returns 0, TG_EINVAL or TG_ENOMEM. */
int tg_broadcast_new(const tg_broadcast_opts *opts, tg_broadcast_tx **tx, tg_broadcast_rx **rx);

/* A new receiver that sees messages sent from now on. 0 or TG_ENOMEM. */
int tg_broadcast_subscribe(tg_broadcast_tx *tx, tg_broadcast_rx **rx);

tg_broadcast_tx *tg_broadcast_tx_clone(tg_broadcast_tx *tx);
void tg_broadcast_tx_drop(tg_broadcast_tx *tx);
void tg_broadcast_rx_drop(tg_broadcast_rx *rx);

/* Publishes a message; never waits. *receivers (may be NULL) gets the
 * number of receivers it was published to. Returns 0 or TG_ECLOSED (no
 * receiver: nothing stored, the caller keeps its value). */
int tg_broadcast_send(tg_broadcast_tx *tx, const void *elem, size_t *receivers);

/* Copies the next message into `out`, waiting while there is none.
 * Returns 0, TG_ELAGGED (see above; `out` untouched), TG_ECLOSED (every
 * sender gone and everything read), TG_ETIMEDOUT (_dl) or TG_ECANCELED. */
int tg_broadcast_recv(tg_broadcast_rx *rx, void *out);
int tg_broadcast_recv_dl(tg_broadcast_rx *rx, void *out, int64_t deadline_ns);
/* Returns 0, TG_EEMPTY, TG_ELAGGED or TG_ECLOSED. */
int tg_broadcast_try_recv(tg_broadcast_rx *rx, void *out);
tg_case tg_broadcast_recv_case(tg_broadcast_rx *rx, void *out);

/* How many messages the receiver missed at its last TG_ELAGGED. */
uint64_t tg_broadcast_rx_lagged(const tg_broadcast_rx *rx);

typedef struct tg_broadcast_stats {
  const char *name;
  size_t len, capacity; /* messages retained in the ring */
  uint64_t receivers, senders;
  uint64_t receivers_waiting;
  uint64_t sent;
  uint64_t lag_events;      /* TG_ELAGGED returned, all receivers */
  uint64_t lagged_messages; /* messages missed, all receivers */
} tg_broadcast_stats;

/* Figures of the channel; a sender or receiver pointer. */
void tg_broadcast_stats_get(const tg_broadcast_tx *tx, tg_broadcast_stats *out);
void tg_broadcast_rx_stats_get(const tg_broadcast_rx *rx, tg_broadcast_stats *out);

#endif
