/* mpsc.c - the bounded multi-producer, single-consumer channel.
 *
 * Invariants, under `lock`: 0 <= len <= capacity; senders wait only while
 * len == capacity; a waiting sender's element is moved into the ring by
 * the receive that makes room (so blocked senders keep their order and a
 * new send cannot overtake them); the receiver waits only while len == 0. */
#include "tg/mpsc.h"

#include "internal.h"

#include <stdlib.h>

typedef struct tg_mpsc {
  tg__lock lock;
  size_t capacity, elem_size;
  size_t head, len; /* ring: oldest at head */
  unsigned char *ring;
  tg__waitlist send_waiters; /* waiter->buf points at the element */
  tg__waitlist recv_waiters; /* the receiver, at most once */
  uint64_t senders;          /* live sender handles */
  bool rx_alive;
  uint64_t full_waits, sent, received;
  char *name;
} tg_mpsc;

static tg_mpsc *of(const void *handle) { return (tg_mpsc *)handle; }

int tg_mpsc_new(const tg_mpsc_opts *opts, tg_mpsc_tx **tx, tg_mpsc_rx **rx) {
  if (!opts || opts->capacity < 1 || opts->elem_size < 1 || opts->capacity > SIZE_MAX / opts->elem_size)
    return TG_EINVAL;
  tg_mpsc *ch = calloc(1, sizeof *ch);
  if (!ch) return TG_ENOMEM;
  ch->ring = malloc(opts->capacity * opts->elem_size);
  ch->name = tg__strdup_or_null(opts->name);
  if (!ch->ring || (opts->name && !ch->name)) {
    free(ch->ring);
    free(ch->name);
    free(ch);
    return TG_ENOMEM;
  }
  ch->capacity = opts->capacity;
  ch->elem_size = opts->elem_size;
  ch->senders = 1;
  ch->rx_alive = true;
  *tx = (tg_mpsc_tx *)ch;
  *rx = (tg_mpsc_rx *)ch;
  return 0;
}

static void free_if_unused(tg_mpsc *ch) {
  free(ch->ring);
  free(ch->name);
  free(ch);
}

tg_mpsc_tx *tg_mpsc_tx_clone(tg_mpsc_tx *tx) {
  tg_mpsc *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  ch->senders++;
  tg__lock_release(&ch->lock);
  return tx;
}

void tg_mpsc_tx_drop(tg_mpsc_tx *tx) {
  tg_mpsc *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  bool last = --ch->senders == 0;
  if (last) tg__waitlist_wake_all(&ch->recv_waiters, TG_EAGAIN); /* to see TG_ECLOSED */
  bool unused = last && !ch->rx_alive;
  tg__lock_release(&ch->lock);
  if (unused) free_if_unused(ch);
}

void tg_mpsc_rx_drop(tg_mpsc_rx *rx) {
  tg_mpsc *ch = of(rx);
  tg__lock_acquire(&ch->lock);
  ch->rx_alive = false;
  ch->len = 0;
  tg__waitlist_wake_all(&ch->send_waiters, TG_ECLOSED);
  bool unused = ch->senders == 0;
  tg__lock_release(&ch->lock);
  if (unused) free_if_unused(ch);
}

static void ring_push(tg_mpsc *ch, const void *elem) {
  size_t tail = ch->head + ch->len;
  if (tail >= ch->capacity) tail -= ch->capacity;
  tg__copy_elem(ch->ring + tail * ch->elem_size, elem, ch->elem_size);
  ch->len++;
  ch->sent++;
}

static void ring_pop(tg_mpsc *ch, void *out) {
  tg__copy_elem(out, ch->ring + ch->head * ch->elem_size, ch->elem_size);
  if (++ch->head == ch->capacity) ch->head = 0;
  ch->len--;
  ch->received++;
}

/* ------------------------------------------------------------ send */

/* Under the lock: pushes and wakes the receiver, or says why it cannot.
 * The element goes to the ring even when the receiver waits (and the
 * woken receiver pops it): handing it straight to the receiver would save
 * the receiver a lock round trip, but the length tg_mpsc_stats_get
 * reports (and telegate logs) would no longer count it until the
 * receiver ran. */
static int send_locked(tg_mpsc *ch, const void *elem) {
  if (!ch->rx_alive) return TG_ECLOSED;
  if (ch->len == ch->capacity) return TG_EAGAIN;
  ring_push(ch, elem);
  if (ch->recv_waiters.head) tg__waitlist_wake_one(&ch->recv_waiters, TG_EAGAIN);
  return 0;
}

static int send_try(tg_case *c) {
  tg_mpsc *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  int r = send_locked(ch, c->buf);
  tg__lock_release(&ch->lock);
  return r;
}

static bool send_arm(tg_case *c, tg__waiter *w) {
  tg_mpsc *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  bool decided = !ch->rx_alive || ch->len < ch->capacity;
  if (decided) {
    if (tg__waiter_claim(w)) w->result = send_locked(ch, c->buf);
  } else {
    ch->full_waits++;
    tg__waitlist_push(&ch->send_waiters, w);
  }
  tg__lock_release(&ch->lock);
  return decided;
}

static void send_disarm(tg_case *c, tg__waiter *w) {
  tg_mpsc *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  tg__waitlist_remove(&ch->send_waiters, w);
  tg__lock_release(&ch->lock);
}

static const tg__op send_op = {send_try, send_arm, send_disarm, tg__finish_stored};

int tg_mpsc_try_send(tg_mpsc_tx *tx, const void *elem) {
  tg_case c = {.obj = tx, .buf = (void *)elem};
  int r = send_try(&c);
  return r == TG_EAGAIN ? TG_EFULL : r;
}

/* The waits of send and recv, with their operations' functions called
 * directly; out of line, so that the inline first attempts stay small. */
static __attribute__((noinline)) int send_wait(tg_mpsc_tx *tx, const void *elem, int64_t deadline_ns) {
  return tg__wait_single(&send_op, tx, (void *)elem, 0, deadline_ns, true);
}

int tg_mpsc_send_dl(tg_mpsc_tx *tx, const void *elem, int64_t deadline_ns) {
  /* The first attempt inline, as tg__wait_one would make it: most sends
   * find room and never need the wait machinery. */
  if (tg__self_cancelled()) return TG_ECANCELED;
  tg_mpsc *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  int r = send_locked(ch, elem);
  tg__lock_release(&ch->lock);
  if (r != TG_EAGAIN) return r;
  return send_wait(tx, elem, deadline_ns);
}

int tg_mpsc_send(tg_mpsc_tx *tx, const void *elem) { return tg_mpsc_send_dl(tx, elem, TG_FOREVER); }

tg_case tg_mpsc_send_case(tg_mpsc_tx *tx, const void *elem) {
  return (tg_case){.op = &send_op, .obj = tx, .buf = (void *)elem};
}

/* ------------------------------------------------------------ recv */

/* After a pop made room: moves the first waiting sender's element in. */
static void admit_waiting_sender(tg_mpsc *ch) {
  while (ch->send_waiters.head) {
    tg__waiter *w = tg__waitlist_pop(&ch->send_waiters);
    if (tg__waiter_claim(w)) {
      ring_push(ch, w->buf);
      w->result = 0;
      tg__wait_wake(w->wait);
      return;
    }
  }
}

static int recv_locked(tg_mpsc *ch, void *out) {
  if (ch->len == 0) return ch->senders == 0 ? TG_ECLOSED : TG_EAGAIN;
  ring_pop(ch, out);
  if (ch->send_waiters.head) admit_waiting_sender(ch);
  return 0;
}

static int recv_try(tg_case *c) {
  tg_mpsc *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  int r = recv_locked(ch, c->buf);
  tg__lock_release(&ch->lock);
  return r;
}

static bool recv_arm(tg_case *c, tg__waiter *w) {
  tg_mpsc *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  bool decided = ch->len > 0 || ch->senders == 0;
  if (decided) {
    if (tg__waiter_claim(w)) w->result = recv_locked(ch, c->buf);
  } else {
    tg__waitlist_push(&ch->recv_waiters, w);
  }
  tg__lock_release(&ch->lock);
  return decided;
}

static void recv_disarm(tg_case *c, tg__waiter *w) {
  tg_mpsc *ch = c->obj;
  tg__lock_acquire(&ch->lock);
  tg__waitlist_remove(&ch->recv_waiters, w);
  tg__lock_release(&ch->lock);
}

/* A woken receiver takes its element itself (the claimer leaves
 * TG_EAGAIN), so a receive that loses a select leaves it queued. */
static const tg__op recv_op = {recv_try, recv_arm, recv_disarm, tg__finish_retry};

int tg_mpsc_try_recv(tg_mpsc_rx *rx, void *out) {
  tg_case c = {.obj = rx, .buf = out};
  int r = recv_try(&c);
  return r == TG_EAGAIN ? TG_EEMPTY : r;
}

static __attribute__((noinline)) int recv_wait(tg_mpsc_rx *rx, void *out, int64_t deadline_ns) {
  return tg__wait_single(&recv_op, rx, out, 0, deadline_ns, true);
}

int tg_mpsc_recv_dl(tg_mpsc_rx *rx, void *out, int64_t deadline_ns) {
  if (tg__self_cancelled()) return TG_ECANCELED; /* the first attempt inline, as for send */
  tg_mpsc *ch = of(rx);
  tg__lock_acquire(&ch->lock);
  int r = recv_locked(ch, out);
  tg__lock_release(&ch->lock);
  if (r != TG_EAGAIN) return r;
  return recv_wait(rx, out, deadline_ns);
}

int tg_mpsc_recv(tg_mpsc_rx *rx, void *out) { return tg_mpsc_recv_dl(rx, out, TG_FOREVER); }

tg_case tg_mpsc_recv_case(tg_mpsc_rx *rx, void *out) { return (tg_case){.op = &recv_op, .obj = rx, .buf = out}; }

void tg_mpsc_stats_get(const void *tx_or_rx, tg_mpsc_stats *out) {
  tg_mpsc *ch = of(tx_or_rx);
  tg__lock_acquire(&ch->lock);
  *out = (tg_mpsc_stats){
      .name = ch->name,
      .len = ch->len,
      .capacity = ch->capacity,
      .senders_waiting = ch->send_waiters.len,
      .full_waits = ch->full_waits,
      .sent = ch->sent,
      .received = ch->received,
      .senders = ch->senders,
      .closed = ch->senders == 0 || !ch->rx_alive,
  };
  tg__lock_release(&ch->lock);
}
