/* watch.c - the single-value channel whose receivers follow its latest version.
 *
 * Invariants: `value` is the value of version `version`; both change only
 * under the write side of `rw`, so a reader holding the read side sees a
 * matching pair. A receiver's `seen` is at most `version` and is moved
 * only by its own calls, never by a send, so a changed() that does not win
 * marks nothing seen. Under `lock`: a receiver waits only while it has
 * seen `version` and the sender is alive (a send or the sender's drop
 * takes `lock` after changing those, and wakes every waiter). */
#include "tg/watch.h"

#include "internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ rw lock */

/* A reader-writer spin lock: the value is read far more often than it is
 * written, and every hold is a copy or a short borrow. The writer takes
 * WRITER first and then waits for the readers to leave, so a stream of
 * readers cannot starve a send. */
typedef struct rwlock {
  atomic_uint state; /* WRITER bit | number of readers */
} rwlock;

#define WRITER 0x80000000u

static void backoff(unsigned spins) {
  if (spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    sched_yield(); /* the holder may have been preempted */
  }
}

static void read_lock(rwlock *l) {
  for (unsigned spins = 0;; spins++) {
    unsigned s = atomic_load_explicit(&l->state, memory_order_relaxed);
    if (!(s & WRITER) &&
        atomic_compare_exchange_weak_explicit(&l->state, &s, s + 1, memory_order_acquire, memory_order_relaxed))
      return;
    backoff(spins);
  }
}

static void read_unlock(rwlock *l) { atomic_fetch_sub_explicit(&l->state, 1, memory_order_release); }

static void write_lock(rwlock *l) {
  for (unsigned spins = 0;; spins++) {
    unsigned s = atomic_load_explicit(&l->state, memory_order_relaxed);
    if (!(s & WRITER) &&
        atomic_compare_exchange_weak_explicit(&l->state, &s, s | WRITER, memory_order_acquire, memory_order_relaxed))
      break;
    backoff(spins);
  }
  for (unsigned spins = 0; atomic_load_explicit(&l->state, memory_order_acquire) != WRITER; spins++) backoff(spins);
}

static void write_unlock(rwlock *l) { atomic_store_explicit(&l->state, 0, memory_order_release); }

/* ------------------------------------------------------------ channel */

typedef struct tg_watch {
  rwlock rw;
  unsigned char *value;     /* elem_size bytes, malloc'd so it is aligned */
  _Atomic uint64_t version; /* read without a lock by has_changed and changed */
  atomic_bool closed;       /* the sender was dropped */
  tg__lock lock;            /* guards waiters and receivers */
  tg__waitlist waiters;     /* receivers in changed() */
  uint64_t receivers;
  size_t elem_size;
  void (*clone)(void *elem);
  void (*drop)(void *elem);
  char *name;
} tg_watch;

/* Used by one task or thread at a time. */
struct tg_watch_rx {
  tg_watch *ch;
  uint64_t seen; /* the last version this receiver has seen */
};

static tg_watch *of(const tg_watch_tx *tx) { return (tg_watch *)tx; }

static void channel_free(tg_watch *ch) {
  if (ch->drop) ch->drop(ch->value);
  free(ch->value);
  free(ch->name);
  free(ch);
}

static uint64_t version_of(const tg_watch *ch) { return atomic_load_explicit(&ch->version, memory_order_acquire); }

/* ------------------------------------------------------------ handles */

static tg_watch_rx *rx_new(tg_watch *ch, uint64_t seen) {
  tg_watch_rx *rx = malloc(sizeof *rx);
  if (!rx) return NULL;
  rx->ch = ch;
  rx->seen = seen;
  tg__lock_acquire(&ch->lock);
  ch->receivers++;
  tg__lock_release(&ch->lock);
  return rx;
}

int tg_watch_new(const tg_watch_opts *opts, const void *initial, tg_watch_tx **tx, tg_watch_rx **rx) {
  if (!opts || !initial || !tx || opts->elem_size < 1) return TG_EINVAL;
  tg_watch *ch = calloc(1, sizeof *ch);
  if (!ch) return TG_ENOMEM;
  ch->value = malloc(opts->elem_size);
  ch->name = tg__strdup_or_null(opts->name);
  if (!ch->value || (opts->name && !ch->name)) {
    channel_free(ch); /* drop is not set yet: the caller keeps `initial` */
    return TG_ENOMEM;
  }
  ch->elem_size = opts->elem_size;
  if (rx && !(*rx = rx_new(ch, 0))) {
    channel_free(ch);
    return TG_ENOMEM;
  }
  memcpy(ch->value, initial, opts->elem_size);
  ch->clone = opts->clone;
  ch->drop = opts->drop;
  *tx = (tg_watch_tx *)ch;
  return 0;
}

int tg_watch_subscribe(tg_watch_tx *tx, tg_watch_rx **rx) {
  tg_watch *ch = of(tx);
  return (*rx = rx_new(ch, version_of(ch))) ? 0 : TG_ENOMEM;
}

int tg_watch_rx_clone(tg_watch_rx *rx, tg_watch_rx **out) { return (*out = rx_new(rx->ch, rx->seen)) ? 0 : TG_ENOMEM; }

void tg_watch_tx_drop(tg_watch_tx *tx) {
  tg_watch *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  atomic_store_explicit(&ch->closed, true, memory_order_release);
  tg__waiter *woken = tg__waitlist_claim_all(&ch->waiters, TG_EAGAIN); /* to see TG_ECLOSED */
  bool unused = ch->receivers == 0;
  tg__lock_release(&ch->lock);
  tg__wake_chain(woken);
  if (unused) channel_free(ch);
}

void tg_watch_rx_drop(tg_watch_rx *rx) {
  tg_watch *ch = rx->ch;
  tg__lock_acquire(&ch->lock);
  bool unused = --ch->receivers == 0 && atomic_load_explicit(&ch->closed, memory_order_relaxed);
  tg__lock_release(&ch->lock);
  free(rx);
  if (unused) channel_free(ch);
}

/* ------------------------------------------------------------ send */

int tg_watch_send(tg_watch_tx *tx, const void *value) {
  tg_watch *ch = of(tx);
  write_lock(&ch->rw);
  /* Dropped under the write lock: a reader may be cloning it otherwise. */
  if (ch->drop) ch->drop(ch->value);
  tg__copy_elem(ch->value, value, ch->elem_size);
  atomic_store_explicit(&ch->version, atomic_load_explicit(&ch->version, memory_order_relaxed) + 1,
                        memory_order_release);
  write_unlock(&ch->rw);
  tg__lock_acquire(&ch->lock);
  tg__waiter *woken = ch->waiters.head ? tg__waitlist_claim_all(&ch->waiters, TG_EAGAIN) : NULL;
  tg__lock_release(&ch->lock);
  tg__wake_chain(woken);
  return 0;
}

/* ------------------------------------------------------------ changed */

/* Marks a newer version seen, or says why there is none. */
static int changed_try(tg_case *c) {
  tg_watch_rx *rx = c->obj;
  tg_watch *ch = rx->ch;
  uint64_t v = version_of(ch);
  if (v == rx->seen) {
    if (!atomic_load_explicit(&ch->closed, memory_order_acquire)) return TG_EAGAIN;
    v = version_of(ch); /* a send just before the close is still news */
    if (v == rx->seen) return TG_ECLOSED;
  }
  rx->seen = v;
  return 0;
}

static bool changed_arm(tg_case *c, tg__waiter *w) {
  tg_watch_rx *rx = c->obj;
  tg_watch *ch = rx->ch;
  tg__lock_acquire(&ch->lock);
  bool decided = version_of(ch) != rx->seen || atomic_load_explicit(&ch->closed, memory_order_acquire);
  if (decided) {
    if (tg__waiter_claim(w)) w->result = changed_try(c);
  } else {
    tg__waitlist_push(&ch->waiters, w);
  }
  tg__lock_release(&ch->lock);
  return decided;
}

static void changed_disarm(tg_case *c, tg__waiter *w) {
  tg_watch_rx *rx = c->obj;
  tg__lock_acquire(&rx->ch->lock);
  tg__waitlist_remove(&rx->ch->waiters, w);
  tg__lock_release(&rx->ch->lock);
}

/* A woken receiver marks the version seen itself (the sender leaves
 * TG_EAGAIN), so a changed() that loses a select marks nothing. */
static const tg__op changed_op = {changed_try, changed_arm, changed_disarm, tg__finish_retry};

int tg_watch_changed_dl(tg_watch_rx *rx, int64_t deadline_ns) {
  return tg__wait_single(&changed_op, rx, NULL, 0, deadline_ns, false);
}

int tg_watch_changed(tg_watch_rx *rx) { return tg_watch_changed_dl(rx, TG_FOREVER); }

tg_case tg_watch_changed_case(tg_watch_rx *rx) { return (tg_case){.op = &changed_op, .obj = rx}; }

int tg_watch_has_changed(const tg_watch_rx *rx) { return version_of(rx->ch) != rx->seen; }

/* ------------------------------------------------------------ reading */

const void *tg_watch_borrow(tg_watch_rx *rx) {
  read_lock(&rx->ch->rw);
  return rx->ch->value;
}

const void *tg_watch_borrow_and_update(tg_watch_rx *rx) {
  read_lock(&rx->ch->rw);
  rx->seen = atomic_load_explicit(&rx->ch->version, memory_order_relaxed);
  return rx->ch->value;
}

void tg_watch_borrow_end(tg_watch_rx *rx) { read_unlock(&rx->ch->rw); }

static void copy_out(tg_watch *ch, void *out) {
  tg__copy_elem(out, ch->value, ch->elem_size);
  if (ch->clone) ch->clone(out);
}

void tg_watch_get(tg_watch_rx *rx, void *out) {
  read_lock(&rx->ch->rw);
  copy_out(rx->ch, out);
  read_unlock(&rx->ch->rw);
}

void tg_watch_get_and_update(tg_watch_rx *rx, void *out) {
  read_lock(&rx->ch->rw);
  copy_out(rx->ch, out);
  rx->seen = atomic_load_explicit(&rx->ch->version, memory_order_relaxed);
  read_unlock(&rx->ch->rw);
}

/* ------------------------------------------------------------ figures */

void tg_watch_stats_get(const tg_watch_tx *tx, tg_watch_stats *out) {
  tg_watch *ch = of(tx);
  tg__lock_acquire(&ch->lock);
  *out = (tg_watch_stats){
      .name = ch->name,
      .version = version_of(ch),
      .receivers = ch->receivers,
      .receivers_waiting = ch->waiters.len,
      .closed = atomic_load_explicit(&ch->closed, memory_order_relaxed),
  };
  tg__lock_release(&ch->lock);
}

void tg_watch_rx_stats_get(const tg_watch_rx *rx, tg_watch_stats *out) {
  tg_watch_stats_get((const tg_watch_tx *)rx->ch, out);
}
