/* tg/mpsc.h - bounded multi-producer, single-consumer channel.
 *
 * A queue of `capacity` fixed-size elements, copied in and out by value.
 * tg_mpsc_send waits while the queue is full: that wait is the pipeline's
 * backpressure. Blocked senders are served in the order they started
 * waiting, and each producer's messages arrive in the order it sent them.
 * tg_mpsc_try_send never waits: TG_EFULL or TG_ECLOSED.
 *
 * Closing: the channel has one receiver handle and any number of sender
 * handles (tg_mpsc_tx_clone). Once every sender is dropped, recv returns
 * what is still queued, then TG_ECLOSED. Once the receiver is dropped,
 * every send (and every sender waiting) fails with TG_ECLOSED, and the
 * queued elements are discarded. The channel is freed when both sides are
 * gone. The receiver is used by one task or thread at a time.
 *
 * Cancellation: a send or recv that times out, is aborted or loses a
 * tg_select leaves the channel as it was - nothing sent, nothing taken.
 */
#ifndef TG_MPSC_H
#define TG_MPSC_H

#include "tg/select.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tg_mpsc_tx tg_mpsc_tx;
typedef struct tg_mpsc_rx tg_mpsc_rx;

typedef struct tg_mpsc_opts {
  size_t capacity;  /* >= 1 */
  size_t elem_size; /* >= 1 */
  const char *name; /* for figures and dumps; copied; may be NULL */
} tg_mpsc_opts;

/* Creates a channel. Returns 0, TG_EINVAL or TG_ENOMEM. */
int tg_mpsc_new(const tg_mpsc_opts *opts, tg_mpsc_tx **tx, tg_mpsc_rx **rx);

/* Another sender handle of the same channel (the same pointer, counted). */
tg_mpsc_tx *tg_mpsc_tx_clone(tg_mpsc_tx *tx);
void tg_mpsc_tx_drop(tg_mpsc_tx *tx);
void tg_mpsc_rx_drop(tg_mpsc_rx *rx);

/* Copies elem_size bytes from `elem` into the channel, waiting while it is
 * full. Returns 0, TG_ECLOSED (receiver gone), TG_ETIMEDOUT (_dl) or
 * TG_ECANCELED. */
int tg_mpsc_send(tg_mpsc_tx *tx, const void *elem);
int tg_mpsc_send_dl(tg_mpsc_tx *tx, const void *elem, int64_t deadline_ns);
/* Returns 0, TG_EFULL or TG_ECLOSED. */
int tg_mpsc_try_send(tg_mpsc_tx *tx, const void *elem);

/* Takes the oldest element into `out`, waiting while the queue is empty.
 * Returns 0, TG_ECLOSED (every sender gone and the queue drained),
 * TG_ETIMEDOUT (_dl) or TG_ECANCELED. */
int tg_mpsc_recv(tg_mpsc_rx *rx, void *out);
int tg_mpsc_recv_dl(tg_mpsc_rx *rx, void *out, int64_t deadline_ns);
/* Returns 0, TG_EEMPTY or TG_ECLOSED. */
int tg_mpsc_try_recv(tg_mpsc_rx *rx, void *out);

tg_case tg_mpsc_recv_case(tg_mpsc_rx *rx, void *out);
tg_case tg_mpsc_send_case(tg_mpsc_tx *tx, const void *elem);

typedef struct tg_mpsc_stats {
  const char *name;
  size_t len, capacity;
  uint64_t senders_waiting; /* blocked in send right now */
  uint64_t full_waits;      /* sends that had to wait, ever */
  uint64_t sent, received;
  uint64_t senders; /* live sender handles */
  int closed;       /* no senders, or no receiver */
} tg_mpsc_stats;

/* Figures of the channel; either handle's pointer works. */
void tg_mpsc_stats_get(const void *tx_or_rx, tg_mpsc_stats *out);

#endif
