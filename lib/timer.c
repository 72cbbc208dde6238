/* timer.c - the per-worker timer heap, the clock, sleeps and intervals. */
#include "internal.h"

#include <stdlib.h>
#include <time.h>

static bool earlier(const tg__timer *a, const tg__timer *b) {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void place(tg__timer_heap *h, size_t i, tg__timer *t) {
  h->items[i] = t;
  t->heap_index = i;
}

static void sift_up(tg__timer_heap *h, size_t i) {
  tg__timer *t = h->items[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(t, h->items[parent])) break;
    place(h, i, h->items[parent]);
    i = parent;
  }
  place(h, i, t);
}

static void sift_down(tg__timer_heap *h, size_t i) {
  tg__timer *t = h->items[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= h->len) break;
    if (child + 1 < h->len && earlier(h->items[child + 1], h->items[child])) child++;
    if (!earlier(h->items[child], t)) break;
    place(h, i, h->items[child]);
    i = child;
  }
  place(h, i, t);
}

int tg__timer_heap_push(tg__timer_heap *h, tg__timer *t) {
  if (h->len == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    tg__timer **items = realloc(h->items, cap * sizeof *items);
    if (!items) return TG_ENOMEM;
    h->items = items;
    h->cap = cap;
  }
  t->seq = h->next_seq++;
  place(h, h->len++, t);
  sift_up(h, h->len - 1);
  atomic_store_explicit(&h->published_len, h->len, memory_order_relaxed);
  return 0;
}

void tg__timer_heap_remove(tg__timer_heap *h, tg__timer *t) {
  size_t i = t->heap_index;
  if (i == SIZE_MAX) return;
  t->heap_index = SIZE_MAX;
  tg__timer *last = h->items[--h->len];
  atomic_store_explicit(&h->published_len, h->len, memory_order_relaxed);
  if (i == h->len) return;
  place(h, i, last);
  if (i > 0 && earlier(last, h->items[(i - 1) / 2]))
    sift_up(h, i);
  else
    sift_down(h, i);
}

tg__timer *tg__timer_heap_top(const tg__timer_heap *h) { return h->len ? h->items[0] : NULL; }

/* published_len keeps the count of timers still armed, so the last run's
 * figures say whether any was left behind. */
void tg__timer_heap_free(tg__timer_heap *h) {
  free(h->items);
  h->items = NULL;
  h->len = h->cap = 0;
}

int64_t tg__real_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t tg_deadline_in(int64_t ns) {
  int64_t now = tg_now();
  if (ns >= TG_FOREVER - now) return TG_FOREVER;
  return now + ns;
}

static int never_try(tg_case *c) {
  (void)c;
  return TG_EAGAIN;
}
static bool never_arm(tg_case *c, tg__waiter *w) {
  (void)c, (void)w;
  return false;
}
static void never_disarm(tg_case *c, tg__waiter *w) { (void)c, (void)w; }

/* A case that never completes: a sleep is a wait on it with a deadline. */
static const tg__op never_op = {never_try, never_arm, never_disarm, tg__finish_stored};

int tg_sleep_until(int64_t deadline_ns) {
  int r = tg__wait_one(&never_op, NULL, NULL, 0, deadline_ns);
  return r == TG_ETIMEDOUT ? 0 : r;
}

int tg_sleep(int64_t ns) { return tg_sleep_until(tg_deadline_in(ns)); }

int tg_interval_init(tg_interval *iv, int64_t period_ns, tg_missed_tick missed) {
  if (period_ns <= 0 || (missed != TG_MISSED_BURST && missed != TG_MISSED_DELAY && missed != TG_MISSED_SKIP)) {
    *iv = (tg_interval){.period_ns = 0};
    return TG_EINVAL;
  }
  iv->period_ns = period_ns;
  iv->next_ns = tg_now();
  iv->missed = missed;
  return 0;
}

int tg_interval_tick(tg_interval *iv) {
  if (iv->period_ns <= 0) return TG_EINVAL; /* its init failed */
  int r = tg_sleep_until(iv->next_ns);
  if (r != 0) return r;
  int64_t now = tg_now(), due = iv->next_ns;
  switch (iv->missed) {
  case TG_MISSED_BURST: iv->next_ns = due + iv->period_ns; break;
  case TG_MISSED_DELAY: iv->next_ns = (now > due ? now : due) + iv->period_ns; break;
  case TG_MISSED_SKIP: iv->next_ns = due + ((now - due) / iv->period_ns + 1) * iv->period_ns; break;
  }
  return 0;
}
