/* task.c - a task's life after spawn: join, detach, abort, panic, defer,
 * and what its end releases. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

char *tg__strdup_or_null(const char *name) { return name ? strdup(name) : NULL; }

uint64_t tg_task_id(const tg_task *t) { return t->id; }

uint64_t tg_task_current_id(void) {
  tg_task *t = tg__self();
  return t ? t->id : 0;
}

int tg_task_cancelled(void) {
  tg_task *t = tg__self();
  return t && atomic_load_explicit(&t->cancelled, memory_order_relaxed);
}

void tg__task_outcome(const tg_task *t, tg_outcome *out) {
  out->task_id = t->id;
  out->status = t->status;
  out->value = t->value;
  out->message[0] = '\0'; /* most tasks did not panic: no formatting on the join path */
  if (t->extra && t->extra->panic_message) snprintf(out->message, sizeof out->message, "%s", t->extra->panic_message);
}

/* Frees an ended task whose last reference was dropped. */
static void task_destroy(tg_task *t) {
  if (t->extra) {
    free(t->extra->panic_message);
    free(t->extra->held);
    free(t->extra->name);
    free(t->extra);
  }
  tg__task_free(t);
}

void tg__task_release(tg_task *t) {
  tg__lock_acquire(&t->lock);
  int refs = --t->refs;
  tg__lock_release(&t->lock);
  if (refs == 0) task_destroy(t);
}

/* ------------------------------------------------------------ allocation */

/* Task structs - and other small blocks made and freed at a high rate,
 * such as oneshot channels - are recycled rather than malloc'd and freed
 * one by one: a JoinSet of 100,000 short tasks otherwise spends a third of
 * its time in malloc, and a request/response through a oneshot an eighth
 * of its. Each worker keeps the blocks freed on its thread and allocates
 * from them; it refills REFILL at a time from a process-wide pool, which
 * grows by chunks of CHUNK_SLOTS and is never given back to the system
 * (like malloc's arenas: the memory of the most blocks ever alive at once
 * is kept for the next ones). Under ASan, malloc and free, so that a use
 * after the end is caught. */
union tg__task_slot {
  union tg__task_slot *next;
  tg_task task;
};
typedef union tg__task_slot task_slot;

#if defined(TG_ASAN)

static void *slot_take(void) { return malloc(TG__BLOCK_SIZE); }
static void slot_put(void *b) { free(b); }
void tg__task_cache_flush(tg__worker *w) { (void)w; }

#else

enum { CHUNK_SLOTS = 256, REFILL = 64, CACHE_MAX = 4096 };

/* Past HUGE_AFTER bytes of small chunks, the pool grows by chunks of
 * HUGE_CHUNK bytes aligned to it and advised for transparent huge pages:
 * one page fault instead of 512. A JoinSet of 100,000 tasks faulted in
 * 4,000 pages of structs one by one, at 1.7 us each on the development VM
 * (a third of W8's time); a huge page takes 0.4 us per 4 KiB. Programs
 * with fewer tasks never make one, so their resident memory stays small. */
enum { HUGE_CHUNK = 2 << 20, HUGE_AFTER = 2 << 20 };

static tg__lock pool_lock;
static task_slot *pool;   /* under pool_lock */
static size_t pool_bytes; /* in chunks made, under pool_lock */

static void *huge_chunk(void) {
  char *map = mmap(NULL, 2 * HUGE_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return NULL;
  char *chunk = (char *)(((uintptr_t)map + HUGE_CHUNK - 1) & ~(uintptr_t)(HUGE_CHUNK - 1));
  if (chunk > map) munmap(map, (size_t)(chunk - map));
  munmap(chunk + HUGE_CHUNK, (size_t)(map + HUGE_CHUNK - chunk));
  madvise(chunk, HUGE_CHUNK, MADV_HUGEPAGE); /* a hint: without it, small pages */
  return chunk;
}

/* Takes up to `want` slots from the pool, chained; NULL when out of memory. */
static task_slot *pool_take(size_t want, size_t *got) {
  tg__lock_acquire(&pool_lock);
  if (!pool) {
    bool huge = pool_bytes >= HUGE_AFTER;
    size_t slots = huge ? HUGE_CHUNK / sizeof(task_slot) : CHUNK_SLOTS;
    task_slot *chunk = huge ? huge_chunk() : malloc(slots * sizeof *chunk);
    if (!chunk) {
      tg__lock_release(&pool_lock);
      return NULL;
    }
    pool_bytes += huge ? HUGE_CHUNK : slots * sizeof *chunk;
    for (size_t i = 0; i < slots; i++) chunk[i].next = i + 1 < slots ? &chunk[i + 1] : NULL;
    pool = chunk;
  }
  task_slot *head = pool, *last = pool;
  size_t n = 1;
  while (n < want && last->next) {
    last = last->next;
    n++;
  }
  pool = last->next;
  last->next = NULL;
  tg__lock_release(&pool_lock);
  *got = n;
  return head;
}

static void pool_give(task_slot *head, task_slot *last) {
  tg__lock_acquire(&pool_lock);
  last->next = pool;
  pool = head;
  tg__lock_release(&pool_lock);
}

static inline void *slot_take(void) {
  tg__worker *w = tg__worker_current();
  task_slot *s;
  if (w && w->task_cache) {
    s = w->task_cache;
    w->task_cache = s->next;
    w->task_cache_len--;
  } else {
    size_t got;
    s = pool_take(w ? REFILL : 1, &got);
    if (!s) return NULL;
    if (w) {
      w->task_cache = s->next;
      w->task_cache_len = got - 1;
    }
  }
  return s;
}

static inline void slot_put(void *b) {
  task_slot *s = b;
  tg__worker *w = tg__worker_current();
  if (!w) {
    pool_give(s, s);
    return;
  }
  s->next = w->task_cache;
  w->task_cache = s;
  if (++w->task_cache_len > CACHE_MAX) { /* keep half, pool the rest */
    task_slot *last = s;
    for (size_t i = 1; i < CACHE_MAX / 2; i++) last = last->next;
    task_slot *rest = last->next, *rest_last = rest;
    while (rest_last->next) rest_last = rest_last->next;
    last->next = NULL;
    w->task_cache_len = CACHE_MAX / 2;
    pool_give(rest, rest_last);
  }
}

void tg__task_cache_flush(tg__worker *w) {
  task_slot *head = w->task_cache;
  if (!head) return;
  task_slot *last = head;
  while (last->next) last = last->next;
  pool_give(head, last);
  w->task_cache = NULL;
  w->task_cache_len = 0;
}

#endif

void *tg__block_alloc(void) { return slot_take(); }
void tg__block_free(void *b) { slot_put(b); }

tg_task *tg__task_alloc(void) {
  tg_task *t = slot_take();
  if (t) memset(t, 0, sizeof *t);
  return t;
}

void tg__task_free(tg_task *t) { slot_put(t); }

tg__task_extra *tg__task_extra_get(tg_task *t) {
  if (!t->extra) t->extra = calloc(1, sizeof *t->extra);
  return t->extra;
}

/* ------------------------------------------------------------ the end */

static void run_defers(tg__task_extra *x) {
  while (x->defers) {
    tg__defer *d = x->defers;
    x->defers = d->next;
    d->fn(d->arg);
    free(d);
  }
}

static void return_held_permits(tg__task_extra *x) {
  for (size_t i = 0; i < x->held_len; i++)
    if (x->held[i].n) tg__semaphore_return_permits(x->held[i].sem, x->held[i].n);
  x->held_len = 0;
}

_Noreturn void tg__task_exit(tg_task *t, void *value) {
  t->value = value;
  if (t->extra) {
    run_defers(t->extra);
    return_held_permits(t->extra);
  }
  if (t->status == 0 && atomic_load(&t->cancelled)) t->status = TG_ECANCELED;
  tg__worker_current()->switch_reason = TG__SWITCH_END;
  tg__switch_to_scheduler(t, true);
  abort(); /* an ended task is never resumed */
}

void tg__task_finish(tg_task *t) {
  tg__lock_acquire(&t->lock);
  t->ended = true;
  while (!t->in_set && t->joiners) { /* normally one: a handle is joined once; a JoinSet's task has none */
    tg__waiter *w = t->joiners;
    t->joiners = w->next;
    w->next = NULL;
    w->linked = false;
    if (tg__waiter_claim(w)) {
      w->result = 0;
      tg__wait_wake(w->wait);
    }
  }
  struct tg_joinset *set = t->in_set ? t->set : NULL;
  int refs = --t->refs; /* the running task's, in the same lock round trip */
  tg__lock_release(&t->lock);
  /* A JoinSet's task keeps the set's reference until it is joined, which
   * needs it on the set's ended list first: t lives through this call. */
  if (set)
    tg__joinset_task_ended(set, t);
  else if (refs == 0)
    task_destroy(t);
}

_Noreturn void tg_panic(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  tg_task *t = tg__self();
  if (!t) {
    fprintf(stderr, "libtg: panic outside a task: %s\n", buf);
    abort();
  }
  t->status = TG_EPANICKED;
  tg__task_extra *x = tg__task_extra_get(t);
  if (x) x->panic_message = strdup(buf); /* out of memory: no message */
  tg__task_exit(t, NULL);
}

int tg_defer(void (*fn)(void *), void *arg) {
  tg_task *t = tg__self();
  if (!t) return TG_ENOTASK;
  tg__task_extra *x = tg__task_extra_get(t);
  tg__defer *d = x ? malloc(sizeof *d) : NULL;
  if (!d) return TG_ENOMEM;
  *d = (tg__defer){.next = x->defers, .fn = fn, .arg = arg};
  x->defers = d;
  return 0;
}

/* ------------------------------------------------------------ join */

/* Waiting for a task's end is a wait on its joiners list, a LIFO chain
 * (one joiner is the rule; the order among several does not matter). */
static int join_try(tg_case *c) {
  tg_task *t = c->obj;
  tg__lock_acquire(&t->lock);
  bool ended = t->ended;
  tg__lock_release(&t->lock);
  return ended ? 0 : TG_EAGAIN;
}

static bool join_arm(tg_case *c, tg__waiter *w) {
  tg_task *t = c->obj;
  tg__lock_acquire(&t->lock);
  bool ended = t->ended;
  if (ended) {
    if (tg__waiter_claim(w)) w->result = 0;
  } else {
    w->prev = NULL;
    w->next = t->joiners;
    w->linked = true;
    t->joiners = w;
  }
  tg__lock_release(&t->lock);
  return ended;
}

static void join_disarm(tg_case *c, tg__waiter *w) {
  tg_task *t = c->obj;
  tg__lock_acquire(&t->lock);
  if (w->linked) {
    tg__waiter **p = &t->joiners;
    while (*p != w) p = &(*p)->next;
    *p = w->next;
    w->next = NULL;
    w->linked = false;
  }
  tg__lock_release(&t->lock);
}

static const tg__op join_op = {join_try, join_arm, join_disarm, tg__finish_stored};

int tg_task_join_dl(tg_task *t, tg_outcome *out, int64_t deadline_ns) {
  int r = tg__wait_one(&join_op, t, NULL, 0, deadline_ns);
  if (r != 0) return r;
  if (out) tg__task_outcome(t, out);
  tg__task_release(t);
  return 0;
}

int tg_task_join(tg_task *t, tg_outcome *out) { return tg_task_join_dl(t, out, TG_FOREVER); }

void tg_task_detach(tg_task *t) { tg__task_release(t); }

/* The cancelled flag is set before the park state is read, and parking
 * sets the park state before it reads the flag (both sequentially
 * consistent): a task that parks while it is aborted is seen parked by
 * the abort or sees itself cancelled, and one of the two claims its wait. */
void tg_task_abort(tg_task *t) {
  tg__lock_acquire(&t->lock);
  bool first = !t->ended && !atomic_exchange(&t->cancelled, true);
  tg__lock_release(&t->lock);
  if (first) tg__task_abort_wait(t);
}

void tg__task_abort_wait(tg_task *t) {
  int parked = TG__PARKED;
  if (!atomic_compare_exchange_strong(&t->park_state, &parked, TG__ABORTING)) return; /* not parked: sees the flag */
  tg__wait *wait = t->cur_wait;
  int pending = TG__PENDING;
  bool claimed = wait && atomic_compare_exchange_strong(&wait->winner, &pending, TG__WON_BY_ABORT);
  int aborting = TG__ABORTING;
  /* Unclaimed by the abort, t parks on - unless a case claimed its wait
   * meanwhile and its wake found t held here: then the wake is ours to
   * deliver. */
  if (claimed || !atomic_compare_exchange_strong(&t->park_state, &aborting, TG__PARKED)) {
    atomic_store(&t->park_state, TG__NOTIFIED);
    tg__schedule(t);
  }
}

/* ------------------------------------------------------------ permits */

/* The record of permits a task holds has one entry per semaphore; an
 * entry whose count drops to zero stays, and is taken over by the next
 * semaphore not in the record, so a task that acquires and releases one
 * semaphore in a loop (the common case) finds its entry at once and never
 * moves entries. The array is as long as the most semaphores the task
 * held at once. */
static tg__held_permits *held_entry(tg__task_extra *x, struct tg_semaphore *sem) {
  for (size_t i = 0; i < x->held_len; i++)
    if (x->held[i].sem == sem) return &x->held[i];
  return NULL;
}

int tg__task_hold_permits_slow(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  tg__task_extra *x = tg__task_extra_get(t);
  if (!x) return TG_ENOMEM;
  tg__held_permits *e = held_entry(x, sem);
  for (size_t i = 0; !e && i < x->held_len; i++)
    if (x->held[i].n == 0) (e = &x->held[i])->sem = sem;
  if (!e) {
    if (x->held_len == x->held_cap) {
      size_t cap = x->held_cap ? x->held_cap * 2 : 4;
      tg__held_permits *held = realloc(x->held, cap * sizeof *held);
      if (!held) return TG_ENOMEM;
      x->held = held;
      x->held_cap = cap;
    }
    e = &x->held[x->held_len++];
    *e = (tg__held_permits){.sem = sem};
  }
  e->n += n;
  return 0;
}

int tg__task_drop_permits_slow(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  tg__held_permits *e = t->extra ? held_entry(t->extra, sem) : NULL;
  if (!e || e->n < n) return TG_ENOPERM;
  e->n -= n;
  return 0;
}
