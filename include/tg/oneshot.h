/* tg/oneshot.h - a channel for exactly one value: request/response.
 *
 * The sender sends once (tg_oneshot_send) or is dropped without sending
 * (tg_oneshot_tx_drop); either call consumes it. The receiver tells the
 * three endings apart: the value (0), the sender dropped without sending
 * (TG_ECLOSED), and no answer in time (TG_ETIMEDOUT from the _dl form, after
 * which it may wait again). Once it got the value or TG_ECLOSED, later
 * recvs return TG_ECLOSED. A send after the receiver was dropped fails
 * with TG_ECLOSED and the caller keeps its value; tg_oneshot_tx_closed
 * lets a responder skip work nobody awaits.
 *
 * The channel is freed when both sides are done: the sender sent or was
 * dropped, and the receiver was dropped. Cancellation: a recv that times
 * out, is aborted or loses a select leaves a sent value in the channel.
 */
#ifndef TG_ONESHOT_H
#define TG_ONESHOT_H

#include "tg/select.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tg_oneshot_tx tg_oneshot_tx;
typedef struct tg_oneshot_rx tg_oneshot_rx;

/* Returns 0, TG_EINVAL (elem_size 0) or TG_ENOMEM. */
int tg_oneshot_new(size_t elem_size, tg_oneshot_tx **tx, tg_oneshot_rx **rx);

/* Delivers the value and consumes tx, whatever it returns: 0, or
 * TG_ECLOSED when the receiver was dropped (nothing was delivered). */
int tg_oneshot_send(tg_oneshot_tx *tx, const void *value);
/* Consumes tx without sending: the receiver gets TG_ECLOSED. */
void tg_oneshot_tx_drop(tg_oneshot_tx *tx);
/* Nonzero once the receiver was dropped. */
int tg_oneshot_tx_closed(tg_oneshot_tx *tx);

/* Returns 0, TG_ECLOSED, TG_ETIMEDOUT (_dl) or TG_ECANCELED. */
int tg_oneshot_recv(tg_oneshot_rx *rx, void *out);
int tg_oneshot_recv_dl(tg_oneshot_rx *rx, void *out, int64_t deadline_ns);
/* Returns 0, TG_EEMPTY or TG_ECLOSED. */
int tg_oneshot_try_recv(tg_oneshot_rx *rx, void *out);
tg_case tg_oneshot_recv_case(tg_oneshot_rx *rx, void *out);
void tg_oneshot_rx_drop(tg_oneshot_rx *rx);

#endif
