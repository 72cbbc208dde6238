/* oneshot.c - the channel for exactly one value (request/response).
 *
 * Invariants, under `lock`: `has_value` is set by the one send that
 * finds no waiting receiver to claim and cleared by the recv that copies
 * the value out (or by the receiver's drop); the receiver waits only while
 * nothing was sent and the sender is alive; a send that claims a waiting
 * receiver copies the value into its buffer, and a recv that lost a
 * select or timed out is not claimed, so the value stays in place. One
 * allocation holds the struct and the value - a recycled block
 * (tg__block_alloc) when they fit in one, as in a request/response they
 * usually do; it lives until the sender is done (sent or dropped) and the
 * receiver dropped, and whichever side comes last frees it. */
#include "tg/oneshot.h"

#include "internal.h"

#include <stdlib.h>

typedef struct tg_oneshot {
  tg__lock lock;
  tg__waitlist recv_waiters; /* the receiver, at most once */
  atomic_bool tx_done;       /* sent or dropped; set under the lock, peeked without it */
  bool has_value;            /* sent and not yet received */
  bool rx_alive;
  bool in_block; /* from tg__block_alloc, else malloc */
  size_t elem_size;
  unsigned char value[];
} tg_oneshot;

static tg_oneshot *of(const void *handle) { return (tg_oneshot *)handle; }

static void oneshot_free(tg_oneshot *ch) {
  if (ch->in_block)
    tg__block_free(ch);
  else
    free(ch);
}

int tg_oneshot_new(size_t elem_size, tg_oneshot_tx **tx, tg_oneshot_rx **rx) {
  if (elem_size < 1 || elem_size > SIZE_MAX - sizeof(tg_oneshot)) return TG_EINVAL;
  /* the fields set, not zeroed: the value is read only after a send
   * wrote it */
  bool in_block = sizeof(tg_oneshot) + elem_size <= TG__BLOCK_SIZE;
  tg_oneshot *ch = in_block ? tg__block_alloc() : malloc(sizeof *ch + elem_size);
  if (!ch) return TG_ENOMEM;
  ch->in_block = in_block;
  atomic_init(&ch->lock.held, 0);
  ch->recv_waiters = (tg__waitlist){0};
  atomic_init(&ch->tx_done, false);
  ch->has_value = false;
  ch->rx_alive = true;
  ch->elem_size = elem_size;
  *tx = (tg_oneshot_tx *)ch;
  *rx = (tg_oneshot_rx *)ch;
  return 0;
}

/* ------------------------------------------------------------ sender */

/* Ends the sender's side and lets a waiting receiver look again (it finds
 * the value or TG_ECLOSED). Lock held; true when the channel must be freed. */
static bool tx_end_locked(tg_oneshot *ch) {
  atomic_store_explicit(&ch->tx_done, true, memory_order_relaxed);
  if (ch->recv_waiters.head) tg__waitlist_wake_one(&ch->recv_waiters, TG_EAGAIN);
  return !ch->rx_alive;
}

/* A receiver that waits gets the value straight into its buffer: the
 * woken receiver finds its receive done instead of taking the lock again
 * to copy it out. A receive that lost a select or timed out is not
 * claimed, and the value stays in the channel. Lock held; false when no
 * receiver could be claimed. */
static bool hand_to_receiver(tg_oneshot *ch, const void *value) {
  while (ch->recv_waiters.head) {
    tg__waiter *w = tg__waitlist_pop(&ch->recv_waiters);
    if (tg__waiter_claim(w)) {
      tg__copy_elem(w->buf, value, ch->elem_size);
      w->result = 0;
      tg__wait_wake(w->wait);
      return true;
    }
  }
  return false;
}

int tg_oneshot_send(tg_oneshot_tx *tx, const void *value) {
  tg_oneshot *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  int r = ch->rx_alive ? 0 : TG_ECLOSED;
  if (r == 0 && !hand_to_receiver(ch, value)) {
    tg__copy_elem(ch->value, value, ch->elem_size);
    ch->has_value = true;
  }
  bool unused = tx_end_locked(ch);
  tg__lock_release(&ch->lock);
  if (unused) oneshot_free(ch);
  return r;
}

void tg_oneshot_tx_drop(tg_oneshot_tx *tx) {
  tg_oneshot *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  bool unused = tx_end_locked(ch);
  tg__lock_release(&ch->lock);
  if (unused) oneshot_free(ch);
}

int tg_oneshot_tx_closed(tg_oneshot_tx *tx) {
  tg_oneshot *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  bool closed = !ch->rx_alive;
  tg__lock_release(&ch->lock);
  return closed;
}

/* ------------------------------------------------------------ receiver */

static int recv_locked(tg_oneshot *ch, void *out) {
  if (ch->has_value) {
    tg__copy_elem(out, ch->value, ch->elem_size);
    ch->has_value = false;
    return 0;
  }
  return atomic_load_explicit(&ch->tx_done, memory_order_relaxed) ? TG_ECLOSED : TG_EAGAIN;
}

static int recv_try(tg_case *c) {
  tg_oneshot *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  int r = recv_locked(ch, c->buf);
  tg__lock_release(&ch->lock);
  return r;
}

static bool recv_arm(tg_case *c, tg__waiter *w) {
  tg_oneshot *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  bool decided = atomic_load_explicit(&ch->tx_done, memory_order_relaxed);
  if (decided) {
    if (tg__waiter_claim(w)) w->result = recv_locked(ch, c->buf);
  } else {
    tg__waitlist_push(&ch->recv_waiters, w);
  }
  tg__lock_release(&ch->lock);
  return decided;
}

static void recv_disarm(tg_case *c, tg__waiter *w) {
  tg_oneshot *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  tg__waitlist_remove(&ch->recv_waiters, w);
  tg__lock_release(&ch->lock);
}

/* A send completes the claimed receive (hand_to_receiver); a drop leaves
 * TG_EAGAIN, and the woken receiver looks again and finds TG_ECLOSED. */
static const tg__op recv_op = {recv_try, recv_arm, recv_disarm, tg__finish_retry};

int tg_oneshot_recv_dl(tg_oneshot_rx *rx, void *out, int64_t deadline_ns) {
  /* Until the sender is done there is nothing to take: a receive that
   * sees so goes straight to its arm, which looks again under the lock,
   * instead of taking the lock once more for a first attempt. */
  if (tg__self_cancelled()) return TG_ECANCELED;
  bool nothing_yet = !atomic_load_explicit(&of(rx)->tx_done, memory_order_relaxed);
  return tg__wait_single(&recv_op, rx, out, 0, deadline_ns, nothing_yet);
}

int tg_oneshot_recv(tg_oneshot_rx *rx, void *out) { return tg_oneshot_recv_dl(rx, out, TG_FOREVER); }

int tg_oneshot_try_recv(tg_oneshot_rx *rx, void *out) {
  tg_case c = {.obj = rx, .buf = out};
  int r = recv_try(&c);
  return r == TG_EAGAIN ? TG_EEMPTY : r;
}

tg_case tg_oneshot_recv_case(tg_oneshot_rx *rx, void *out) { return (tg_case){.op = &recv_op, .obj = rx, .buf = out}; }

void tg_oneshot_rx_drop(tg_oneshot_rx *rx) {
  tg_oneshot *ch = of(rx);
  tg__lock_acquire(&ch->lock);
  ch->rx_alive = false;
  ch->has_value = false; /* the value, if any, is discarded */
  bool unused = atomic_load_explicit(&ch->tx_done, memory_order_relaxed);
  tg__lock_release(&ch->lock);
  if (unused) oneshot_free(ch);
}
