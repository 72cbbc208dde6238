/* broadcast.c - the one-to-many channel whose slow receivers lag.
 *
 * Invariants, under `lock`: message number s (counting from 0) lives in
 * slot s % capacity, and seqs[slot] says which message a slot holds, so a
 * receiver knows at one glance whether its next message is there, not sent
 * yet or overwritten; messages tail - min(tail, capacity) .. tail - 1 are
 * retained, each slot owning one copy; a receiver's cursor is at most
 * tail; a receiver waits only while its cursor is at tail and a sender is
 * alive. A receiver's cursor is moved only by its own recv (under the
 * lock), never by a send, so a recv that does not win consumes nothing. */
#include "tg/broadcast.h"

#include "internal.h"

#include <stdlib.h>

#define EMPTY_SLOT UINT64_MAX /* in seqs: no message was ever stored there */

typedef struct tg_broadcast {
  tg__lock lock;
  size_t capacity, elem_size;
  unsigned char *elems;      /* capacity slots of elem_size bytes */
  uint64_t *seqs;            /* the message number each slot holds */
  uint64_t tail;             /* number of the next message; == sent */
  size_t tail_slot;          /* tail % capacity, kept to avoid a division */
  tg__waitlist recv_waiters; /* receivers whose cursor is at tail */
  uint64_t senders, receivers;
  uint64_t lag_events, lagged_messages;
  void (*clone)(void *elem);
  void (*drop)(void *elem);
  char *name;
} tg_broadcast;

/* Used by one task or thread at a time, so its fields need no lock of
 * their own; they are read and written under the channel's lock. */
struct tg_broadcast_rx {
  tg_broadcast *ch;
  uint64_t next;   /* number of the next message to read */
  size_t slot;     /* next % capacity */
  uint64_t lagged; /* missed messages reported by the last TG_ELAGGED */
};

static tg_broadcast *of(const tg_broadcast_tx *tx) { return (tg_broadcast *)tx; }

static void channel_free(tg_broadcast *ch) {
  for (size_t i = 0; ch->drop && i < ch->capacity; i++)
    if (ch->seqs[i] != EMPTY_SLOT) ch->drop(ch->elems + i * ch->elem_size);
  free(ch->elems);
  free(ch->seqs);
  free(ch->name);
  free(ch);
}

/* ------------------------------------------------------------ handles */

int tg_broadcast_new(const tg_broadcast_opts *opts, tg_broadcast_tx **tx, tg_broadcast_rx **rx) {
  if (!opts || !tx || opts->capacity < 1 || opts->elem_size < 1 || opts->capacity > SIZE_MAX / opts->elem_size ||
      opts->capacity > SIZE_MAX / sizeof(uint64_t))
    return TG_EINVAL;
  tg_broadcast *ch = calloc(1, sizeof *ch);
  if (!ch) return TG_ENOMEM;
  ch->elems = malloc(opts->capacity * opts->elem_size);
  ch->seqs = malloc(opts->capacity * sizeof *ch->seqs);
  ch->name = tg__strdup_or_null(opts->name);
  if (!ch->elems || !ch->seqs || (opts->name && !ch->name)) {
    channel_free(ch);
    return TG_ENOMEM;
  }
  for (size_t i = 0; i < opts->capacity; i++) ch->seqs[i] = EMPTY_SLOT;
  ch->capacity = opts->capacity;
  ch->elem_size = opts->elem_size;
  ch->clone = opts->clone;
  ch->drop = opts->drop;
  ch->senders = 1;
  *tx = (tg_broadcast_tx *)ch;
  if (!rx) return 0;
  int r = tg_broadcast_subscribe(*tx, rx);
  if (r != 0) {
    channel_free(ch);
    *tx = NULL;
  }
  return r;
}

int tg_broadcast_subscribe(tg_broadcast_tx *tx, tg_broadcast_rx **rx) {
  tg_broadcast *ch = of(tx);
  tg_broadcast_rx *r = calloc(1, sizeof *r);
  if (!r) return TG_ENOMEM;
  r->ch = ch;
  tg__lock_acquire(&ch->lock);
  r->next = ch->tail;
  r->slot = ch->tail_slot;
  ch->receivers++;
  tg__lock_release(&ch->lock);
  *rx = r;
  return 0;
}

tg_broadcast_tx *tg_broadcast_tx_clone(tg_broadcast_tx *tx) {
  tg_broadcast *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  ch->senders++;
  tg__lock_release(&ch->lock);
  return tx;
}

void tg_broadcast_tx_drop(tg_broadcast_tx *tx) {
  tg_broadcast *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  bool last = --ch->senders == 0;
  /* Waiting receivers are at tail: they wake to see TG_ECLOSED. */
  tg__waiter *woken = last ? tg__waitlist_claim_all(&ch->recv_waiters, TG_EAGAIN) : NULL;
  bool unused = last && ch->receivers == 0;
  tg__lock_release(&ch->lock);
  tg__wake_chain(woken);
  if (unused) channel_free(ch);
}

void tg_broadcast_rx_drop(tg_broadcast_rx *rx) {
  tg_broadcast *ch = rx->ch;
  tg__lock_acquire(&ch->lock);
  bool unused = --ch->receivers == 0 && ch->senders == 0;
  tg__lock_release(&ch->lock);
  free(rx);
  if (unused) channel_free(ch);
}

/* ------------------------------------------------------------ send */

int tg_broadcast_send(tg_broadcast_tx *tx, const void *elem, size_t *receivers) {
  tg_broadcast *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  uint64_t n = ch->receivers;
  if (n == 0) {
    tg__lock_release(&ch->lock);
    if (receivers) *receivers = 0;
    return TG_ECLOSED;
  }
  size_t slot = ch->tail_slot;
  unsigned char *dst = ch->elems + slot * ch->elem_size;
  /* The overwritten copy is dropped under the lock: a receiver may be
   * cloning it right now otherwise. */
  if (ch->drop && ch->seqs[slot] != EMPTY_SLOT) ch->drop(dst);
  tg__copy_elem(dst, elem, ch->elem_size);
  ch->seqs[slot] = ch->tail++;
  ch->tail_slot = slot + 1 == ch->capacity ? 0 : slot + 1;
  tg__waiter *woken = ch->recv_waiters.head ? tg__waitlist_claim_all(&ch->recv_waiters, TG_EAGAIN) : NULL;
  tg__lock_release(&ch->lock);
  tg__wake_chain(woken);
  if (receivers) *receivers = (size_t)n;
  return 0;
}

/* ------------------------------------------------------------ recv */

/* Reads the receiver's next message, or reports that it was overwritten
 * (moving the cursor to the oldest retained one), or that there is none
 * yet. Lock held. */
static int recv_locked(tg_broadcast_rx *rx, void *out) {
  tg_broadcast *ch = rx->ch;
  if (ch->seqs[rx->slot] == rx->next) {
    tg__copy_elem(out, ch->elems + rx->slot * ch->elem_size, ch->elem_size);
    if (ch->clone) ch->clone(out);
    rx->next++;
    rx->slot = rx->slot + 1 == ch->capacity ? 0 : rx->slot + 1;
    return 0;
  }
  if (rx->next == ch->tail) return ch->senders == 0 ? TG_ECLOSED : TG_EAGAIN;
  /* The slot holds a later message: the ring is full, and its oldest
   * message sits in the slot the next send will overwrite. */
  uint64_t oldest = ch->tail - ch->capacity;
  rx->lagged = oldest - rx->next;
  rx->next = oldest;
  rx->slot = ch->tail_slot;
  ch->lag_events++;
  ch->lagged_messages += rx->lagged;
  return TG_ELAGGED;
}

static int recv_try(tg_case *c) {
  tg_broadcast_rx *rx = c->obj;
  tg__lock_acquire(&rx->ch->lock);
  int r = recv_locked(rx, c->buf);
  tg__lock_release(&rx->ch->lock);
  return r;
}

static bool recv_arm(tg_case *c, tg__waiter *w) {
  tg_broadcast_rx *rx = c->obj;
  tg_broadcast *ch = rx->ch;
  tg__lock_acquire(&ch->lock);
  bool decided = rx->next != ch->tail || ch->senders == 0;
  if (decided) {
    if (tg__waiter_claim(w)) w->result = recv_locked(rx, c->buf);
  } else {
    tg__waitlist_push(&ch->recv_waiters, w);
  }
  tg__lock_release(&ch->lock);
  return decided;
}

static void recv_disarm(tg_case *c, tg__waiter *w) {
  tg_broadcast_rx *rx = c->obj;
  tg__lock_acquire(&rx->ch->lock);
  tg__waitlist_remove(&rx->ch->recv_waiters, w);
  tg__lock_release(&rx->ch->lock);
}

/* A woken receiver reads for itself (the sender leaves TG_EAGAIN), so a
 * recv that loses a select leaves its cursor where it was. */
static const tg__op recv_op = {recv_try, recv_arm, recv_disarm, tg__finish_retry};

int tg_broadcast_try_recv(tg_broadcast_rx *rx, void *out) {
  tg_case c = {.obj = rx, .buf = out};
  int r = recv_try(&c);
  return r == TG_EAGAIN ? TG_EEMPTY : r;
}

/* The wait of recv, with its operation's functions called directly; out
 * of line, so that the inline first attempt stays small. */
static __attribute__((noinline)) int recv_wait(tg_broadcast_rx *rx, void *out, int64_t deadline_ns) {
  return tg__wait_single(&recv_op, rx, out, 0, deadline_ns, false);
}

int tg_broadcast_recv_dl(tg_broadcast_rx *rx, void *out, int64_t deadline_ns) {
  /* The first attempt inline, as tg__wait_one would make it: a receiver
   * that keeps up finds its message without the wait machinery. */
  if (!tg_task_cancelled()) {
    tg_case c = {.obj = rx, .buf = out};
    int r = recv_try(&c);
    if (r != TG_EAGAIN) return r;
  }
  return recv_wait(rx, out, deadline_ns);
}

int tg_broadcast_recv(tg_broadcast_rx *rx, void *out) { return tg_broadcast_recv_dl(rx, out, TG_FOREVER); }

tg_case tg_broadcast_recv_case(tg_broadcast_rx *rx, void *out) {
  return (tg_case){.op = &recv_op, .obj = rx, .buf = out};
}

uint64_t tg_broadcast_rx_lagged(const tg_broadcast_rx *rx) { return rx->lagged; }

/* ------------------------------------------------------------ figures */

void tg_broadcast_stats_get(const tg_broadcast_tx *tx, tg_broadcast_stats *out) {
  tg_broadcast *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  *out = (tg_broadcast_stats){
      .name = ch->name,
      .len = ch->tail < ch->capacity ? (size_t)ch->tail : ch->capacity,
      .capacity = ch->capacity,
      .receivers = ch->receivers,
      .senders = ch->senders,
      .receivers_waiting = ch->recv_waiters.len,
      .sent = ch->tail,
      .lag_events = ch->lag_events,
      .lagged_messages = ch->lagged_messages,
  };
  tg__lock_release(&ch->lock);
}

void tg_broadcast_rx_stats_get(const tg_broadcast_rx *rx, tg_broadcast_stats *out) {
  tg_broadcast_stats_get((const tg_broadcast_tx *)rx->ch, out);
}
