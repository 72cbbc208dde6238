/* internal.h - what libtg's files share: locks, wait lists, the wait
 * protocol, workers, tasks and timers. Nothing here is public API. */
#ifndef TG_INTERNAL_H
#define TG_INTERNAL_H

#include "tg/error.h"
#include "tg/runtime.h"
#include "tg/select.h"
#include "tg/task.h"
#include "tg/time.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "context.h"

/* ------------------------------------------------------------ spin lock */

/* Primitives hold their lock for a few dozen instructions, never across a
 * wait, so a test-and-test-and-set lock beats a mutex; a waiter that spins
 * too long yields its CPU in case the holder was preempted. */
typedef struct tg__lock {
  atomic_int held;
} tg__lock;

void tg__lock_slow(tg__lock *l);

static inline void tg__lock_acquire(tg__lock *l) {
  if (!atomic_exchange_explicit(&l->held, 1, memory_order_acquire)) return;
  tg__lock_slow(l);
}

static inline void tg__lock_release(tg__lock *l) { atomic_store_explicit(&l->held, 0, memory_order_release); }

/* ------------------------------------------------------------ copies */

/* Copies one channel element; elements of a few words (the usual u64,
 * pairs and small structs) are moved a word at a time instead of by a
 * call to memcpy, which the hot paths of mpsc, broadcast and oneshot
 * would otherwise pay for an 8-byte value. */
static inline void tg__copy_elem(void *dst, const void *src, size_t size) {
  if (size == 8) { /* the usual u64 or pointer: one move, no loop */
    __builtin_memcpy(dst, src, 8);
  } else if ((size & 7) == 0 && size <= 64) {
    for (size_t i = 0; i < size; i += 8) {
      uint64_t word;
      __builtin_memcpy(&word, (const char *)src + i, 8);
      __builtin_memcpy((char *)dst + i, &word, 8);
    }
  } else {
    __builtin_memcpy(dst, src, size);
  }
}

/* ------------------------------------------------------------ timers */

/* A timer lives in its worker's heap ordered by (deadline, seq); seq makes
 * timers with equal deadlines fire in the order they were set. */
typedef struct tg__timer {
  int64_t deadline;
  uint64_t seq;
  size_t heap_index;           /* position in the heap; SIZE_MAX when not armed */
  struct tg__timer_heap *heap; /* the heap it was armed in */
  void (*fire)(struct tg__timer *t);
} tg__timer;

typedef struct tg__timer_heap {
  tg__timer **items;
  size_t len, cap;
  uint64_t next_seq;
  atomic_size_t published_len; /* len, for tg_runtime_stats_get on other threads */
} tg__timer_heap;

int tg__timer_heap_push(tg__timer_heap *h, tg__timer *t);
void tg__timer_heap_remove(tg__timer_heap *h, tg__timer *t);
tg__timer *tg__timer_heap_top(const tg__timer_heap *h);
void tg__timer_heap_free(tg__timer_heap *h);

/* ------------------------------------------------------------ waits */

/* A wait is one call that suspends: a plain wait or a tg_select. It lives
 * on the waiting caller's stack. Each case it waits on links one waiter
 * into the primitive's wait list. Whoever completes a case first (a
 * primitive, the deadline timer, an abort) *claims* the wait by moving
 * `winner` from TG__PENDING to the case's index, atomically; only the
 * claimer may complete the operation and wake the waiter, so exactly one
 * case wins and the others consume nothing. */
enum { TG__PENDING = -1, TG__WON_BY_TIMEOUT = -2, TG__WON_BY_ABORT = -3 };

typedef struct tg__wait {
  atomic_int winner;
  struct tg_task *task;     /* the waiting task, or NULL for a plain thread */
  atomic_uint thread_woken; /* futex word of a waiting plain thread */
  tg__timer deadline;       /* armed when the wait has a deadline */
} tg__wait;

typedef struct tg__waiter {
  struct tg__waiter *prev, *next; /* in the primitive's wait list */
  tg__wait *wait;
  int index;   /* this case's index in the select */
  bool linked; /* on a wait list; read and written under the list's lock */
  int result;  /* set by the claimer for operations it completes */
  void *buf;   /* the case's buffer */
  uint64_t n;  /* the case's count */
} tg__waiter;

/* FIFO of waiters, protected by its primitive's lock. */
typedef struct tg__waitlist {
  tg__waiter *head, *tail;
  uint64_t len;
} tg__waitlist;

void tg__waitlist_push(tg__waitlist *l, tg__waiter *w);
void tg__waitlist_remove(tg__waitlist *l, tg__waiter *w);

/* Unlinks and returns the head of l, which is not empty: what every wake
 * does, without the general unlink's cases. Lock held. */
static inline tg__waiter *tg__waitlist_pop(tg__waitlist *l) {
  tg__waiter *w = l->head;
  l->head = w->next;
  if (l->head)
    l->head->prev = NULL;
  else
    l->tail = NULL;
  w->linked = false;
  l->len--;
  return w;
}

/* Claims w's wait for w's case; false if another case, the deadline or an
 * abort got there first. */
static inline bool tg__waiter_claim(tg__waiter *w) {
  int pending = TG__PENDING;
  return atomic_compare_exchange_strong_explicit(&w->wait->winner, &pending, w->index, memory_order_acq_rel,
                                                 memory_order_acquire);
}

/* Wakes the owner of a claimed wait. */
void tg__wait_wake(tg__wait *wait);

/* Unlinks waiters from the head of l until one can be claimed; sets its
 * result, wakes it and returns it - as a token only: once woken, its owner
 * may leave the wait at once. NULL when no waiter could be claimed. Lock
 * held.
 *
 * Every claimer unlinks a waiter before claiming it and touches it no more
 * after waking it, so a woken wait skips the winner's disarm (and its
 * lock) when the winner is no longer linked. */
tg__waiter *tg__waitlist_wake_one(tg__waitlist *l, int result);

/* Claims and unlinks every waiter of l, setting `result`, and returns
 * the claimed ones chained by `next`, to be woken with tg__wake_chain once
 * the lock is released: a send may wake thousands of waiters, some on
 * other workers, and that should not hold the lock. A claimed waiter stays
 * valid until woken. Lock held. */
tg__waiter *tg__waitlist_claim_all(tg__waitlist *l, int result);
void tg__wake_chain(tg__waiter *chain);

/* Claims, unlinks and wakes every waiter of l with `result`; returns how
 * many were woken. Lock held. */
uint64_t tg__waitlist_wake_all(tg__waitlist *l, int result);

/* An operation that tg_select can wait on. Every function gets the case;
 * arm and disarm take the primitive's lock themselves.
 *   try:    complete now if possible and return the result (0 or an
 *           error that ends the operation), else TG_EAGAIN having changed
 *           nothing.
 *   arm:    under the lock, complete now if that became possible (claiming
 *           w first; return true), or link w and return false. Return
 *           true also when the claim fails: the wait is already decided.
 *   disarm: unlink w if it is still linked.
 *   finish: the result of the case after w won (w->result for operations
 *           the claimer completed, or a fresh try). */
typedef struct tg__op {
  int (*try_)(tg_case *c);
  bool (*arm)(tg_case *c, tg__waiter *w);
  void (*disarm)(tg_case *c, tg__waiter *w);
  int (*finish)(tg_case *c, tg__waiter *w);
} tg__op;

/* The one wait loop behind every suspending call: tries each case in
 * order, then arms them all and suspends until one wins, the deadline
 * passes or the task is aborted. Returns the winning index (the case's
 * result in cases[i].result), TG_ETIMEDOUT or TG_ECANCELED. */
int tg__wait_cases(tg_case *cases, int n, int64_t deadline);

/* Shorthand for a single operation: the operation's result, or
 * TG_ETIMEDOUT / TG_ECANCELED. It is tg__wait_single (below) with an
 * operation it does not know; a primitive whose waits are hot calls
 * tg__wait_single itself, from a function of its own, so that its
 * operation's functions are called directly (and inlined) instead of
 * through the table. */
int tg__wait_one(const tg__op *op, void *obj, void *buf, uint64_t n, int64_t deadline);

/* Suspends the caller until its wait is claimed (by a case, the deadline
 * or an abort): a task parks, a plain thread blocks. */
void tg__wait_suspend(struct tg_task *self, tg__wait *wait, int64_t deadline);
/* A plain thread's part of it. */
void tg__wait_block(tg__wait *wait, int64_t deadline);

/* finish() of operations whose claimer stored the result. */
int tg__finish_stored(tg_case *c, tg__waiter *w);
/* finish() of operations that the woken waiter completes itself: the
 * claimer leaves TG_EAGAIN in w->result and the case is tried again. */
int tg__finish_retry(tg_case *c, tg__waiter *w);

/* ------------------------------------------------------------ tasks */

typedef struct tg__defer {
  struct tg__defer *next;
  void (*fn)(void *);
  void *arg;
} tg__defer;

typedef struct tg__held_permits {
  struct tg_semaphore *sem;
  uint64_t n;
} tg__held_permits;

struct tg_joinset;
struct tg__worker;

/* What few tasks use - cleanups, semaphore permits, a name, a panic
 * message - lives apart, allocated on first use, so that the struct of
 * every task stays small (100,000 tasks in a JoinSet cost 100,000 of them). */
typedef struct tg__task_extra {
  tg__defer *defers;
  tg__held_permits *held; /* permits this task holds, per semaphore */
  size_t held_len, held_cap;
  char *name;
  char *panic_message;     /* malloc'd, NULL unless panicked */
  void (*drop)(void *arg); /* tg_spawn_opts.drop */
} tg__task_extra;

/* Invariants: a task is on at most one run queue, and only once it is
 * completely switched out (its ctx saved) and not PARKED; it waits in at
 * most one tg__wait (cur_wait), written by the task itself and read by
 * others only while they hold it in TG__ABORTING (see tg__task_abort_wait); `worker`
 * is the worker that runs it or will run it next, changed only by whoever
 * queues it (a task never changes worker while it runs, waits with a
 * deadline timer armed, or is pinned). Its stack exists from its first run
 * to its end; the struct lives until it has ended and its handle (or
 * JoinSet) let go of it.
 *
 * 128 bytes, two cache lines (W8 keeps 100,000 alive and runs through
 * them three times, and its time grows with the struct's size): words
 * whose uses never overlap in a task's life share their place. What the
 * first run needs (fn, arg, the stack's size and guard) is read before
 * what takes its place is written: the context when the stack is made,
 * the current wait (task_entry clears it; an abort reads it only while
 * the task is parked in a wait), and fn's result at the end (a task that
 * never starts ends with NULL). A task has a handle's joiners or a
 * JoinSet (`in_set`), never both. Fields are ordered to leave no
 * padding. */
typedef struct tg_task {
  union {
    void *ctx; /* saved fcontext while not running */
    struct {
      uint32_t stack_size; /* before the first run */
      uint8_t guard;       /* a tg_stack_guard, before the first run */
    };
  };
  struct tg__worker *worker;
  struct tg_task *next_run; /* run queue link */
  union {
    tg_task_fn fn; /* until the first run */
    void *value;   /* fn's result, once ended */
  };
  union {
    void *arg;          /* until the first run */
    tg__wait *cur_wait; /* the wait it is in, or NULL */
  };
  uint64_t id;
  struct tg__stack *stack; /* NULL before the first run and after the end */
  union {
    tg__waiter *joiners;    /* tasks in tg_task_join, chained by next */
    struct tg_joinset *set; /* owning JoinSet, when in_set */
  };
  struct tg_task *set_prev, *set_next;   /* in the set's running or done list */
  struct tg_task *live_prev, *live_next; /* in live_worker's live list */
  tg__task_extra *extra;                 /* NULL until needed */
  atomic_int park_state;                 /* TG__RUNNING, TG__PARKED, TG__NOTIFIED, TG__ABORTING */
  int status;                            /* 0, TG_EPANICKED, TG_ECANCELED once ended */
  tg__lock lock;                         /* guards ended, refs, joiners */
  uint32_t live_worker;                  /* index of the worker whose live list holds it */
  uint16_t refs;                         /* 1 while running + 1 for the handle/set */
  atomic_bool cancelled;
  bool ended;       /* under lock */
  bool pinned;      /* never moves: pinned at spawn, or uses sockets */
  bool timer_armed; /* a wait's deadline sits in worker's heap */
  bool in_set;      /* spawned into a JoinSet: `set`, not `joiners` */
#if defined(TG_TSAN)
  void *tsan_fiber;
#endif
} tg_task;

#if !defined(TG_TSAN) && UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(tg_task) == 128, "tg_task is meant to fill two cache lines");
#endif

/* The task's extra part, allocated if need be; NULL when out of memory. */
tg__task_extra *tg__task_extra_get(tg_task *t);

/* A zeroed task struct, or NULL; and its return. Any thread. */
tg_task *tg__task_alloc(void);
void tg__task_free(tg_task *t);

/* A block of TG__BLOCK_SIZE bytes (not zeroed), or NULL; and its return,
 * on any thread. Recycled through per-worker caches (task.c): for small
 * things made and freed at a high rate. */
enum { TG__BLOCK_SIZE = sizeof(tg_task) };
void *tg__block_alloc(void);
void tg__block_free(void *b);

/* A task's park state. RUNNING: running, or queued to run. PARKED: off
 * every queue until someone unparks it. NOTIFIED: unparked (and queued, if
 * it was parked). ABORTING: parked, and held by tg__task_abort_wait, which
 * reads its cur_wait meanwhile and queues it if need be. */
enum { TG__RUNNING = 0, TG__PARKED = 1, TG__NOTIFIED = 2, TG__ABORTING = 3 };

/* Why the running task gives up its worker; whoever is resumed next on
 * that worker completes the hand-over (after the switch saved the task's
 * context, so that no other worker can resume it half-saved): PARK parks
 * it unless it was woken meanwhile, YIELD queues it again, MOVE queues it
 * on the worker it moves to, END ends it (the scheduler does that, off
 * its stack). */
enum { TG__SWITCH_NONE, TG__SWITCH_PARK, TG__SWITCH_YIELD, TG__SWITCH_MOVE, TG__SWITCH_END };

/* A new task, not yet running, with two references (running + owner). */
int tg__task_new(tg_task **out, tg_task_fn fn, void *arg, const tg_spawn_opts *opts);
/* Gives the task its id and makes it runnable. */
void tg__task_launch(tg_task *t);
/* The end of a task's function (or a panic): runs its deferred cleanups,
 * returns its permits and switches away for good. */
_Noreturn void tg__task_exit(tg_task *t, void *value);
/* After the last switch, off the task's stack: marks it ended and tells
 * its joiner or JoinSet. */
void tg__task_finish(tg_task *t);
/* Back to the worker's loop for the task's last switch (`ending`). */
void tg__switch_to_scheduler(tg_task *t, bool ending);

/* Suspends the current task until tg__task_unpark. */
void tg__task_park(void);

/* The running task gives up its worker for `reason` (a TG__SWITCH_*)
 * and returns once it is resumed - possibly on another worker's thread.
 * Every switch of a task goes through this one function (see context.c:
 * the switch's returns are predicted when the tasks left from one place). */
void tg__switch_away(struct tg__worker *w, tg_task *self, int reason);

/* The other half of tg_task_abort, for a cancelled task t that is parked:
 * claims its wait (if it waits and nobody claimed it yet) for the abort
 * and wakes it. An abort does not take a lock that every wait would pay
 * for: the aborter runs this when it finds t parked, and the parking side
 * (scheduler.c's hand_over) when it parked t and then finds it cancelled;
 * whichever moves t from PARKED to ABORTING does the work, and t cannot
 * resume and leave its wait meanwhile. Any thread. */
void tg__task_abort_wait(tg_task *t);

/* Moves the running task, unless pinned, to worker `to` and pins it there
 * (sockets use this: they live on one worker's loop). Returns 0, or
 * TG_EWORKER when the task is pinned elsewhere. Never inside a wait. */
int tg__task_move_to(struct tg__worker *to);

/* Drops one reference; frees the struct at zero. */
void tg__task_release(tg_task *t);

/* Called by a task's end: hands it to its JoinSet (tg/joinset.c). */
void tg__joinset_task_ended(struct tg_joinset *set, tg_task *t);

/* Fills an outcome from an ended task. */
void tg__task_outcome(const tg_task *t, tg_outcome *out);

/* The record of semaphore permits the current task holds, beyond its
 * first entry (tg__task_hold_permits and _drop_permits below; the task's
 * end returns what is left). */
int tg__task_hold_permits_slow(struct tg_semaphore *sem, uint64_t n);
int tg__task_drop_permits_slow(struct tg_semaphore *sem, uint64_t n);
void tg__semaphore_return_permits(struct tg_semaphore *sem, uint64_t n);

/* ------------------------------------------------------------ workers */

typedef struct tg__worker {
  int index;
  uv_thread_t thread;
  uv_loop_t loop;
  uv_async_t wakeup;      /* other threads' pushes and stop requests */
  uv_timer_t sleep_timer; /* bounds the loop's sleep by the next deadline */
  void *sched_ctx;        /* the scheduler's fcontext while a task runs */
  tg_task *current;
  tg_task *run_head, *run_tail; /* local run queue: this thread only */
  tg_task *lifo;                /* woken by a task here: runs next (multi-worker) */
  int lifo_streak;              /* LIFO picks in a row, bounded */
  bool migrate;                 /* several workers: tasks may move here */
  atomic_bool idle;             /* out of work: busy workers share theirs */
  tg__lock live_lock;           /* guards live with several workers: tasks end anywhere */
  tg__lock inject_lock;
  tg_task *inject_head, *inject_tail; /* pushes from other threads */
  atomic_bool injected;               /* inject queue non-empty: a lock-free peek */
  int switch_reason;                  /* why the current task returned to the loop */
  int budget;                         /* switches left before the loop polls I/O */
  atomic_uint_fast64_t switches;      /* written by this thread only */
  const void *loop_stack_bottom;      /* the thread's own stack, for ASan */
  size_t loop_stack_size;
  atomic_bool sleeping;  /* in uv_run waiting: pushers must send wakeup */
  tg__timer_heap timers; /* this thread only */
  tg_task *live;         /* tasks that have started here and not ended */
  struct tg__stack *stack_pool;
  size_t stack_pool_len;
  union tg__task_slot *task_cache; /* freed task structs, for this thread's spawns */
  size_t task_cache_len;
  bool aborted_all; /* exit: the live tasks were aborted */
  int start_error;
#if defined(TG_TSAN)
  void *tsan_fiber;
#endif
} tg__worker;

/* ------------------------------------------------------------ stacks */

/* A task stack: one slot of a slab, [guard page or canary][usable ... top].
 * The struct sits at the top of its own slot, so a pooled stack costs no
 * allocation. */
typedef struct tg__stack {
  struct tg__stack *next_free; /* in a worker's pool or its slab's free list */
  void *base;                  /* start of the slot */
  size_t map_size;             /* whole slot */
  size_t usable;               /* bytes available to the task */
  struct tg__slab *slab;       /* the mapping it was carved from */
  bool guarded;
} tg__stack;

/* A stack of at least `size` usable bytes from w's pool or a slab.
 * Returns NULL and sets *err (TG_ENOMEM or -errno of mmap/mprotect). */
tg__stack *tg__stack_get(tg__worker *w, size_t size, tg_stack_guard guard, int *err);
/* Back to w's pool, or to its slab when the pool is full (any worker). */
void tg__stack_put(tg__worker *w, tg__stack *s);
/* False when an unguarded stack's canary was overwritten (overflow). */
bool tg__stack_canary_ok(const tg__stack *s);
void tg__stack_pool_drain(tg__worker *w);
/* Mapped stacks (in use or pooled) by kind, and those in pools. */
void tg__stack_counts(uint64_t *guarded, uint64_t *unguarded, uint64_t *in_pool);
/* Slabs mapped now. */
uint64_t tg__stack_slabs(void);
/* The top of the usable area, where the task's first frame goes. */
static inline void *tg__stack_top(tg__stack *s) { return s; }

/* Gives w's cached task structs back to the process-wide pool. */
void tg__task_cache_flush(tg__worker *w);

/* The current thread's worker, or NULL on a plain thread. A task may
 * resume on another thread than the one it left (tasks move between
 * workers), and a compiler may keep a thread-local's address - the thread
 * pointer - in a register across the call that switched: so the
 * thread-local is never read as a plain C variable, and code in a task
 * calls this again after anything that may switch. On x86-64 it is two
 * instructions in a volatile asm that the compiler can neither merge with
 * another read nor move across a switch: the variable is in the static
 * TLS block (initial-exec), at the same offset from every thread's %fs
 * base, measured once at startup. Elsewhere it is a call that is never
 * inlined (scheduler.c). */
#if defined(__x86_64__)
extern intptr_t tg__worker_tls_offset;
static inline tg__worker *tg__worker_current(void) {
  tg__worker *w;
  __asm__ volatile("movq %%fs:(%1), %0" : "=r"(w) : "r"(tg__worker_tls_offset) : "memory");
  return w;
}
#else
tg__worker *tg__worker_current(void);
#endif

/* The running task, or NULL on a plain thread or a worker's loop. */
static inline tg_task *tg__self(void) {
  tg__worker *w = tg__worker_current();
  return w ? w->current : NULL;
}

/* True when the calling task was aborted: every wait it starts fails with
 * TG_ECANCELED before trying its operation. */
static inline bool tg__self_cancelled(void) {
  tg_task *t = tg__self();
  return t && atomic_load_explicit(&t->cancelled, memory_order_relaxed);
}

/* Appends t to w's own run queue; w's thread only. */
static inline void tg__local_push(tg__worker *w, tg_task *t) {
  t->next_run = NULL;
  if (w->run_tail)
    w->run_tail->next_run = t;
  else
    w->run_head = t;
  w->run_tail = t;
}

/* Appends t to the inject queue of w, another thread's worker. */
void tg__inject(tg__worker *w, tg_task *t);

/* Puts t in w's LIFO slot, where it runs next; the task it displaces goes
 * to the back of the queue. w's thread only. */
static inline void tg__lifo_push(tg__worker *w, tg_task *t) {
  if (w->lifo) tg__local_push(w, w->lifo);
  w->lifo = t;
}

/* Makes t runnable; any thread. A task woken by a task runs next on the
 * waker's worker (with several workers: the two are talking, so they
 * share a CPU's caches instead of crossing threads), unless t is pinned
 * or waits with a deadline in its worker's timer heap; other wakes go to
 * t's worker. Inline: a wake on the waker's worker is a few stores. */
static inline void tg__schedule(tg_task *t) {
  tg__worker *here = tg__worker_current();
  if (here && here->migrate && here->current && !t->pinned && !t->timer_armed) {
    t->worker = here;
    tg__lifo_push(here, t);
  } else if (t->worker == here) {
    tg__local_push(here, t);
  } else {
    tg__inject(t->worker, t);
  }
}

/* Makes a parked (or parking) task runnable again. Safe from any thread. */
static inline void tg__task_unpark(tg_task *t) {
  if (atomic_exchange_explicit(&t->park_state, TG__NOTIFIED, memory_order_acq_rel) == TG__PARKED) tg__schedule(t);
}

/* A task's untimed wait parks here, inline, so that between the wait and
 * tg__switch_away there is no frame of its own. Parking is completed by
 * whoever runs next on this worker (hand_over), once this task's context
 * is saved; a task woken before that simply runs again, and one already
 * woken does not switch at all. The wait is published in the task for
 * tg__task_abort_wait, which reads it only while the task is parked. */
static inline __attribute__((always_inline)) void tg__wait_park(tg_task *self, tg__wait *wait) {
  self->cur_wait = wait;
  if (atomic_load_explicit(&self->park_state, memory_order_acquire) != TG__NOTIFIED)
    tg__switch_away(tg__worker_current(), self, TG__SWITCH_PARK);
  atomic_store_explicit(&self->park_state, TG__RUNNING, memory_order_relaxed);
  self->cur_wait = NULL;
}

/* The wait behind tg__wait_one: tg__wait_cases for a single case, which
 * nearly every wait is - the same steps without the arrays and loops over
 * cases, and no zeroing of the deadline timer an untimed wait never arms.
 * `tried`: the caller has just checked that it was not cancelled, tried
 * the operation and found it not ready (or knows it is not).
 * Returns the operation's result, TG_ETIMEDOUT or TG_ECANCELED. */
static inline __attribute__((always_inline)) int tg__wait_single(const tg__op *op, void *obj, void *buf, uint64_t n,
                                                                 int64_t deadline, bool tried) {
  tg_case c = {.op = op, .obj = obj, .buf = buf, .n = n};
  tg_task *self = tg__self();
  for (;;) {
    if (!tried) {
      if (self && atomic_load_explicit(&self->cancelled, memory_order_relaxed)) return TG_ECANCELED;
      int r = op->try_(&c);
      if (r != TG_EAGAIN) return r;
    }
    tried = false;
    if (deadline != TG_FOREVER && deadline <= tg_now()) return TG_ETIMEDOUT;
    if (!self && tg__worker_current()) return TG_ENOTASK;

    tg__wait wait;
    wait.task = self;
    atomic_init(&wait.winner, TG__PENDING);
    atomic_init(&wait.thread_woken, 0);
    tg__waiter w = {.wait = &wait, .index = 0, .buf = buf, .n = n};
    bool decided = op->arm(&c, &w);
    int winner = atomic_load_explicit(&wait.winner, memory_order_acquire);
    if (winner == TG__PENDING) {
      if (self && deadline == TG_FOREVER)
        tg__wait_park(self, &wait);
      else
        tg__wait_suspend(self, &wait, deadline);
    } else if (!decided) {
      /* claimed between the arm and here: its wake is on the way */
      if (self)
        tg__task_park();
      else
        tg__wait_block(&wait, TG_FOREVER);
    }
    /* The winner was unlinked by whoever claimed it, who touches it no
     * more once it woke us (or by nobody, if its arm claimed it): only a
     * loser, or a winner still linked, needs its primitive's lock. */
    winner = atomic_load_explicit(&wait.winner, memory_order_acquire);
    if (winner != 0 || w.linked) op->disarm(&c, &w);
    if (winner == TG__WON_BY_TIMEOUT) return TG_ETIMEDOUT;
    if (winner == TG__WON_BY_ABORT) return TG_ECANCELED;
    int r = op->finish(&c, &w);
    if (r != TG_EAGAIN) return r;
    /* woken, but another consumer was faster: wait again */
  }
}

/* Records n more permits of sem as held by the calling task, and drops
 * n; a plain thread holds none (it releases by hand). Inline, the first
 * entry of the record: a task that uses one semaphore at a time (the
 * usual case) finds it there. Returns 0, TG_ENOMEM (hold), TG_ENOPERM
 * (drop: the task holds fewer). */
static inline int tg__task_hold_permits(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  tg__task_extra *x = t ? t->extra : NULL;
  if (x && x->held_len && x->held[0].sem == sem) {
    x->held[0].n += n;
    return 0;
  }
  return t ? tg__task_hold_permits_slow(sem, n) : 0;
}

static inline int tg__task_drop_permits(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  tg__task_extra *x = t ? t->extra : NULL;
  if (x && x->held_len && x->held[0].sem == sem && x->held[0].n >= n) {
    x->held[0].n -= n;
    return 0;
  }
  return t ? tg__task_drop_permits_slow(sem, n) : 0;
}

/* CLOCK_MONOTONIC in nanoseconds, whatever the runtime's clock. */
int64_t tg__real_now(void);

/* Arms a timer on the current worker; disarms it in the heap it was armed
 * in (its task does not move while it is armed). */
int tg__timer_start(tg__timer *t, int64_t deadline);
void tg__timer_stop(tg__timer *t);

/* True when the running runtime uses the virtual clock. */
bool tg__clock_is_virtual(void);

/* Count of jobs on the blocking pool; the virtual clock holds still while
 * any runs. */
void tg__blocking_begin(void);
void tg__blocking_end(void);

/* A copy of `name` or NULL; primitives keep their names this way. */
char *tg__strdup_or_null(const char *name);

#endif
