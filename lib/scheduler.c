/* scheduler.c - the workers: run queues, the loop phases, parking and
 * waking tasks, the clock, and tg_run. */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Everything the running runtime shares between workers. */
typedef struct runtime {
  int nworkers;
  tg__worker *workers;
  tg_clock_mode clock;
  _Atomic int64_t virtual_now;
  size_t stack_size;
  atomic_uint next_worker; /* round-robin placement of plain threads' spawns */
  atomic_int idle_workers; /* workers out of work, waiting for some */
  tg_task *main_task;      /* its end, however it ends, starts the exit */
  atomic_bool exiting;     /* main returned: abort and drain */
  atomic_uint_fast64_t tasks_alive;
  atomic_uint_fast64_t blocking_in_flight;
  tg_runtime_stats stats; /* counters below are atomics in spirit */
  atomic_uint_fast64_t spawned, panicked, aborted, aborted_at_exit;
} runtime;

static runtime *rt;
static tg_runtime_stats last_stats;
/* Read through tg__worker_current only (see internal.h). */
static _Thread_local tg__worker *current_worker __attribute__((tls_model("initial-exec")));

/* Tasks one loop iteration runs at most before it polls I/O and timers, so
 * a task that yields in a loop cannot starve sockets or deadlines. */
enum { RUN_BUDGET = 256 };

#if defined(__x86_64__)
intptr_t tg__worker_tls_offset;

/* Before main, so that tg__worker_current works on any thread at any
 * time: the thread pointer is the word at %fs:0. */
__attribute__((constructor)) static void measure_tls_offset(void) {
  intptr_t tp;
  __asm__("movq %%fs:0, %0" : "=r"(tp));
  tg__worker_tls_offset = (intptr_t)&current_worker - tp;
}
#else
/* Not inlined, and opaque (the empty asm may touch memory): every call
 * reads the thread-local anew. */
__attribute__((noinline)) tg__worker *tg__worker_current(void) {
  __asm__ volatile("" ::: "memory");
  return current_worker;
}
#endif

tg_task *tg_task_current(void) { return tg__self(); }

int64_t tg_now(void) {
  if (rt && rt->clock == TG_CLOCK_VIRTUAL) return atomic_load_explicit(&rt->virtual_now, memory_order_relaxed);
  return tg__real_now();
}

bool tg__clock_is_virtual(void) { return rt && rt->clock == TG_CLOCK_VIRTUAL; }

/* ------------------------------------------------------------ run queues */

static tg_task *local_pop(tg__worker *w) {
  tg_task *t = w->run_head;
  if (t) {
    w->run_head = t->next_run;
    if (!w->run_head) w->run_tail = NULL;
  }
  return t;
}

/* The remote half of tg__schedule: through the worker's inject queue,
 * waking its loop only if it sleeps. */
void tg__inject(tg__worker *w, tg_task *t) {
  t->next_run = NULL;
  tg__lock_acquire(&w->inject_lock);
  if (w->inject_tail)
    w->inject_tail->next_run = t;
  else
    w->inject_head = t;
  w->inject_tail = t;
  atomic_store_explicit(&w->injected, true, memory_order_seq_cst);
  tg__lock_release(&w->inject_lock);
  if (atomic_load_explicit(&w->sleeping, memory_order_seq_cst)) uv_async_send(&w->wakeup);
}

static __attribute__((noinline)) void inject_take(tg__worker *w) {
  tg__lock_acquire(&w->inject_lock);
  tg_task *head = w->inject_head, *tail = w->inject_tail;
  w->inject_head = w->inject_tail = NULL;
  atomic_store_explicit(&w->injected, false, memory_order_relaxed);
  tg__lock_release(&w->inject_lock);
  if (!head) return;
  if (w->run_tail)
    w->run_tail->next_run = head;
  else
    w->run_head = head;
  w->run_tail = tail;
}

/* An unguarded stack's canary, checked whenever its task leaves the CPU
 * and at its end: an overflow stops the process there, before the
 * corruption spreads further. Guarded stacks need no check (the guard
 * page faults at once), which keeps the usual switch free of it. */
static void stack_overflowed(const tg_task *t) {
  fprintf(stderr, "libtg: task %llu overflowed its %zu-byte stack\n", (unsigned long long)t->id, t->stack->usable);
  abort();
}

static inline void check_stack(const tg_task *t) {
  if (!t->stack->guarded && !tg__stack_canary_ok(t->stack)) stack_overflowed(t);
}

/* ------------------------------------------------------------ switching */

/* A task that gives up its worker (yield, park) hands it straight to the
 * next runnable task, without a detour through the scheduler's context:
 * one jump instead of two. It goes back to the scheduler only when nothing
 * is runnable, when the loop's budget is spent (so sockets and timers are
 * polled every RUN_BUDGET switches), and at its end (its stack must not be
 * in use while it is released).
 *
 * fcontext tells the party that resumes who jumped to it: the transfer's
 * data is the task that left, or NULL for the scheduler, and its fctx is
 * where that one resumes later. Whoever resumes records it, and only then
 * completes what the task that left asked for (w->switch_reason): until
 * its context is saved, no worker may resume it, and with several workers
 * any of them could. */
static inline __attribute__((always_inline)) void hand_over(tg__worker *w, tg_task *from) {
  int reason = w->switch_reason;
  w->switch_reason = TG__SWITCH_NONE;
  if (reason == TG__SWITCH_PARK) {
    int running = TG__RUNNING;
    if (!atomic_compare_exchange_strong(&from->park_state, &running, TG__PARKED))
      tg__local_push(w, from);              /* woken while it was leaving: runnable again */
    else if (atomic_load(&from->cancelled)) /* aborted while it was leaving (see tg_task_abort) */
      tg__task_abort_wait(from);
  } else if (reason == TG__SWITCH_YIELD) {
    tg__local_push(w, from);
  } else if (reason == TG__SWITCH_MOVE) {
    tg__inject(from->worker, from);
  }
}

static inline __attribute__((always_inline)) void resumed(tg__worker *w, tg__transfer back) {
  tg_task *from = back.data;
  if (!from) {
    w->sched_ctx = back.fctx;
    return;
  }
  from->ctx = back.fctx;
  if (w->switch_reason != TG__SWITCH_NONE) hand_over(w, from);
}

static void count_switch(tg__worker *w) {
  atomic_store_explicit(&w->switches, atomic_load_explicit(&w->switches, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

static bool task_start(tg__worker *w, tg_task *t);
static void task_end(tg__worker *w, tg_task *t);
static void share_work(tg__worker *w);

/* pick_next's rare case: t was popped before its first run. */
static __attribute__((noinline)) tg_task *pick_unstarted(tg__worker *w, tg_task *t) {
  for (;;) {
    if (task_start(w, t)) return t;
    task_end(w, t); /* aborted before its start, or no stack for it */
    t = local_pop(w);
    if (!t || t->stack) return t;
  }
}

/* A task in the LIFO slot runs before the queue, but at most LIFO_MAX
 * times in a row: two tasks waking each other would otherwise keep the
 * slot forever and starve the queue. */
enum { LIFO_MAX = 3 };

/* The next task to run on w, started (with a stack) if it was new; NULL
 * when none is runnable. Tasks other workers made runnable are taken
 * first into the local queue. With several workers, a worker that has
 * more runnable tasks than the one it picks shares them with an idle
 * one. */
static inline tg_task *pick_next(tg__worker *w) {
  if (atomic_load_explicit(&w->injected, memory_order_relaxed)) inject_take(w);
  tg_task *t = w->lifo;
  if (t && w->lifo_streak < LIFO_MAX) {
    w->lifo = NULL;
    w->lifo_streak++;
  } else {
    if (t) { /* its turn is over: behind the others */
      tg__local_push(w, t);
      w->lifo = NULL;
    }
    w->lifo_streak = 0;
    t = local_pop(w);
  }
  if (t && !t->stack) t = pick_unstarted(w, t);
  if (w->run_head && w->migrate && atomic_load_explicit(&rt->idle_workers, memory_order_relaxed) > 0) share_work(w);
  return t;
}

/* Whether anything besides the running task is runnable on w. */
static inline bool others_runnable(tg__worker *w) {
  if (atomic_load_explicit(&w->injected, memory_order_relaxed)) inject_take(w);
  return w->run_head || w->lifo;
}

/* From the scheduler to t, until some task gives the worker back. */
static void switch_to_task(tg__worker *w, tg_task *t) {
  w->current = t;
  count_switch(w);
  void *fake_stack = NULL;
  TG_ASAN_START(&fake_stack, t->stack->base, t->stack->map_size);
#if defined(TG_TSAN)
  __tsan_switch_to_fiber(t->tsan_fiber, 0);
#endif
  tg__transfer back = tg__context_jump(t->ctx, NULL);
  TG_ASAN_FINISH(fake_stack);
  tg_task *from = back.data; /* not necessarily t: tasks switch among themselves */
  from->ctx = back.fctx;
  w->current = NULL;
  if (w->switch_reason == TG__SWITCH_END) {
    w->switch_reason = TG__SWITCH_NONE;
    task_end(w, from);
  } else if (w->switch_reason != TG__SWITCH_NONE) {
    hand_over(w, from);
  }
}

/* The one place from which a task gives up its worker (parks, yields,
 * moves), so that the context switch's `ret` and the returns after it are
 * predicted (context.c): never inlined, and called by the waits with no
 * frame of their own in between (tg__wait_park). */
__attribute__((noinline)) void tg__switch_away(tg__worker *w, tg_task *self, int reason) {
  w->switch_reason = reason;
  check_stack(self);
  tg_task *next = NULL;
  if (w->budget > 0) {
    w->budget--;
    next = pick_next(w);
  }
  w->current = next;
  void *fake_stack = NULL;
  if (next) {
    count_switch(w);
    TG_ASAN_START(&fake_stack, next->stack->base, next->stack->map_size);
#if defined(TG_TSAN)
    __tsan_switch_to_fiber(next->tsan_fiber, 0);
#endif
  } else {
    TG_ASAN_START(&fake_stack, w->loop_stack_bottom, w->loop_stack_size);
#if defined(TG_TSAN)
    __tsan_switch_to_fiber(w->tsan_fiber, 0);
#endif
  }
  tg__transfer back = tg__context_jump(next ? next->ctx : w->sched_ctx, self);
  TG_ASAN_FINISH(fake_stack);
  resumed(tg__worker_current(), back); /* not w: self may have moved */
}

/* The last switch of a task: to the scheduler, which releases its stack. */
void tg__switch_to_scheduler(tg_task *t, bool ending) {
  tg__worker *w = tg__worker_current();
  void *fake_stack = NULL;
  TG_ASAN_START(ending ? NULL : &fake_stack, w->loop_stack_bottom, w->loop_stack_size);
#if defined(TG_TSAN)
  __tsan_switch_to_fiber(w->tsan_fiber, 0);
#endif
  w->current = NULL;
  tg__transfer back = tg__context_jump(w->sched_ctx, t);
  TG_ASAN_FINISH(fake_stack);
  resumed(tg__worker_current(), back);
}

void tg__task_park(void) {
  tg__worker *w = tg__worker_current();
  tg_task *t = w->current;
  if (atomic_load_explicit(&t->park_state, memory_order_acquire) != TG__NOTIFIED)
    tg__switch_away(w, t, TG__SWITCH_PARK);
  atomic_store_explicit(&t->park_state, TG__RUNNING, memory_order_relaxed);
}

static void deadline_fired(tg__timer *timer) {
  tg__wait *wait = (tg__wait *)((char *)timer - offsetof(tg__wait, deadline));
  int pending = TG__PENDING;
  if (atomic_compare_exchange_strong(&wait->winner, &pending, TG__WON_BY_TIMEOUT)) tg__wait_wake(wait);
}

/* Suspends until the wait is claimed: by a case, the deadline or an abort.
 * Untimed waits of tasks park inline (tg__wait_park); this is the rest. */
void tg__wait_suspend(tg_task *self, tg__wait *wait, int64_t deadline) {
  if (!self) {
    tg__wait_block(wait, deadline);
    return;
  }
  bool timed = deadline != TG_FOREVER;
  if (timed) { /* the timer is in this worker's heap: the task stays here */
    self->timer_armed = true;
    wait->deadline.fire = deadline_fired;
    tg__timer_start(&wait->deadline, deadline);
  }
  tg__wait_park(self, wait);
  if (timed) {
    tg__timer_stop(&wait->deadline);
    self->timer_armed = false;
  }
}

int tg_yield(void) {
  tg_task *t = tg__self();
  if (!t) return TG_ENOTASK;
  if (atomic_load_explicit(&t->cancelled, memory_order_relaxed)) return TG_ECANCELED;
  tg__worker *w = t->worker;
  if (!others_runnable(w) && w->budget > 0) {
    w->budget--; /* nobody to let run first: go on, but not past the budget */
  } else {
    tg__switch_away(w, t, TG__SWITCH_YIELD); /* behind every task runnable now */
  }
  return atomic_load_explicit(&t->cancelled, memory_order_relaxed) ? TG_ECANCELED : 0;
}

int tg__task_move_to(tg__worker *to) {
  tg__worker *w = tg__worker_current();
  tg_task *t = w->current;
  if (w == to) {
    t->pinned = true;
    return 0;
  }
  if (t->pinned) return TG_EWORKER;
  t->pinned = true;
  t->worker = to;
  tg__switch_away(w, t, TG__SWITCH_MOVE);
  return 0;
}

/* ------------------------------------------------------------ sharing */

/* w has more runnable tasks than it can run at once and some worker is
 * idle: w gives every other movable task of its queue to that worker (at
 * most half: w keeps the rest, and the task it picked). A pushed task may
 * have its deadline timer armed in w's heap or be pinned: those stay. */
static __attribute__((noinline)) void share_work(tg__worker *w) {
  tg__worker *to = NULL;
  for (int i = 1; i < rt->nworkers && !to; i++) {
    tg__worker *v = &rt->workers[(w->index + i) % rt->nworkers];
    bool idle = true;
    if (atomic_load_explicit(&v->idle, memory_order_relaxed) &&
        atomic_compare_exchange_strong(&v->idle, &idle, false)) {
      atomic_fetch_sub(&rt->idle_workers, 1);
      to = v;
    }
  }
  if (!to) return;
  tg_task *keep_head = NULL, *keep_tail = NULL, *t = w->run_head;
  bool give = true;
  while (t) {
    tg_task *next = t->next_run;
    if (give && !t->pinned && !t->timer_armed) {
      t->worker = to;
      tg__inject(to, t);
    } else {
      t->next_run = NULL;
      if (keep_tail)
        keep_tail->next_run = t;
      else
        keep_head = t;
      keep_tail = t;
    }
    give = !give;
    t = next;
  }
  w->run_head = keep_head;
  w->run_tail = keep_tail;
}

/* ------------------------------------------------------------ tasks */

static void task_entry(tg__transfer from) {
  TG_ASAN_FINISH(NULL);
  tg__worker *w = tg__worker_current();
  tg_task *t = w->current;
  resumed(w, from);
  tg_task_fn fn = t->fn;
  void *arg = t->arg;
  t->cur_wait = NULL; /* in arg's place: not in a wait */
  tg__task_exit(t, fn(arg));
}

/* A task is on the live list of the worker it started on, and may end on
 * another: with several workers the list has a lock. With one, only its
 * thread ever touches it (tasks start and end there, and abort_live runs
 * there), and a locked instruction at each start and end is saved. */
static void live_link(tg__worker *w, tg_task *t) {
  t->live_worker = (uint32_t)w->index;
  if (w->migrate) tg__lock_acquire(&w->live_lock);
  t->live_prev = NULL;
  t->live_next = w->live;
  if (w->live) w->live->live_prev = t;
  w->live = t;
  if (w->migrate) tg__lock_release(&w->live_lock);
}

static void live_unlink(tg_task *t) {
  tg__worker *w = &rt->workers[t->live_worker];
  if (w->migrate) tg__lock_acquire(&w->live_lock);
  if (t->live_prev)
    t->live_prev->live_next = t->live_next;
  else
    w->live = t->live_next;
  if (t->live_next) t->live_next->live_prev = t->live_prev;
  if (w->migrate) tg__lock_release(&w->live_lock);
}

/* A task's first run: its stack is taken only now, so spawning many tasks
 * that have not run yet costs their structs alone. A task aborted before
 * this point is not started at all (as tokio drops a future it never
 * polled): it ends as cancelled, and its `drop` hook (if any) releases its
 * argument. False when the task did not start; then it is to be ended. */
static bool task_start(tg__worker *w, tg_task *t) {
  live_link(w, t);
  if (atomic_load(&rt->exiting)) { /* spawned before or while main returned */
    atomic_fetch_add(&rt->aborted_at_exit, 1);
    tg_task_abort(t);
  }
  if (atomic_load_explicit(&t->cancelled, memory_order_acquire)) {
    t->status = TG_ECANCELED;
    if (t->extra && t->extra->drop) t->extra->drop(t->arg);
    t->value = NULL; /* in fn's place */
    return false;
  }
  int err = 0;
  t->stack = tg__stack_get(w, t->stack_size, t->guard, &err);
  if (!t->stack) {
    fprintf(stderr, "libtg: no stack for task %llu: %s\n", (unsigned long long)t->id, tg_strerror(err));
    t->status = TG_EPANICKED;
    tg__task_extra *x = tg__task_extra_get(t);
    if (x) x->panic_message = tg__strdup_or_null("no memory for the task's stack");
    t->value = NULL; /* in fn's place */
    return false;
  }
  t->ctx = tg__context_make(tg__stack_top(t->stack), t->stack->usable, task_entry);
#if defined(TG_TSAN)
  t->tsan_fiber = __tsan_create_fiber(0);
#endif
  return true;
}

static void wake_all_workers(void) {
  for (int i = 0; i < rt->nworkers; i++) uv_async_send(&rt->workers[i].wakeup);
}

static void task_end(tg__worker *w, tg_task *t) {
  if (t->stack) {
#if defined(TG_TSAN)
    __tsan_destroy_fiber(t->tsan_fiber);
#endif
    check_stack(t);
    tg__stack_put(w, t->stack);
    t->stack = NULL;
  }
  live_unlink(t);
  if (t->status == TG_EPANICKED) atomic_fetch_add(&rt->panicked, 1);
  if (t->status == TG_ECANCELED) atomic_fetch_add(&rt->aborted, 1);
  if (t == rt->main_task) { /* returned or panicked: the runtime exits */
    atomic_store(&rt->exiting, true);
    wake_all_workers();
  }
  tg__task_finish(t);
  if (atomic_fetch_sub(&rt->tasks_alive, 1) == 1 && atomic_load(&rt->exiting)) wake_all_workers();
}

int tg__task_new(tg_task **out, tg_task_fn fn, void *arg, const tg_spawn_opts *opts) {
  static const tg_spawn_opts defaults = {0};
  if (!opts) opts = &defaults;
  if (!rt || !fn) return TG_EINVAL;
  if (opts->pin && (opts->worker < 0 || opts->worker >= rt->nworkers)) return TG_EINVAL;
  size_t stack_size = opts->stack_size ? opts->stack_size : rt->stack_size;
  if (stack_size < TG_STACK_MIN || stack_size > UINT32_MAX) return TG_EINVAL;
  tg_task *t = tg__task_alloc();
  if (!t) return TG_ENOMEM;
  if ((opts->name || opts->drop) && !tg__task_extra_get(t)) {
    tg__task_free(t);
    return TG_ENOMEM;
  }
  if (opts->drop) t->extra->drop = opts->drop;
  if (opts->name && !(t->extra->name = tg__strdup_or_null(opts->name))) {
    free(t->extra);
    tg__task_free(t);
    return TG_ENOMEM;
  }
  /* Spawns stay on the spawner's worker (idle workers take a share of its
   * queue); a plain thread's go round-robin. */
  tg__worker *here = tg__worker_current();
  if (opts->pin)
    t->worker = &rt->workers[opts->worker];
  else if (here)
    t->worker = here;
  else
    t->worker =
        &rt->workers[atomic_fetch_add_explicit(&rt->next_worker, 1, memory_order_relaxed) % (unsigned)rt->nworkers];
  t->pinned = opts->pin != 0;
  t->fn = fn;
  t->arg = arg;
  t->stack_size = (uint32_t)stack_size;
  t->guard = (uint8_t)opts->guard;
  t->refs = 2; /* the running task, and its handle or JoinSet */
  t->id = atomic_fetch_add_explicit(&rt->spawned, 1, memory_order_relaxed) + 1;
  atomic_init(&t->park_state, TG__RUNNING);
  *out = t;
  return 0;
}

/* A new task goes to the back of its worker's queue (not the LIFO slot:
 * the spawner is not waiting for it). */
void tg__task_launch(tg_task *t) {
  atomic_fetch_add(&rt->tasks_alive, 1);
  if (t->worker == tg__worker_current())
    tg__local_push(t->worker, t);
  else
    tg__inject(t->worker, t);
}

int tg_spawn(tg_task **handle, tg_task_fn fn, void *arg, const tg_spawn_opts *opts) {
  tg_task *t;
  if (handle) *handle = NULL;
  int r = tg__task_new(&t, fn, arg, opts);
  if (r != 0) return r;
  if (!handle)
    t->refs = 1;
  else
    *handle = t;
  tg__task_launch(t);
  return 0;
}

/* ------------------------------------------------------------ timers */

int tg__timer_start(tg__timer *t, int64_t deadline) {
  t->deadline = deadline;
  t->heap = &tg__worker_current()->timers;
  return tg__timer_heap_push(t->heap, t);
}

void tg__timer_stop(tg__timer *t) { tg__timer_heap_remove(t->heap, t); }

void tg__blocking_begin(void) { atomic_fetch_add(&rt->blocking_in_flight, 1); }
void tg__blocking_end(void) { atomic_fetch_sub(&rt->blocking_in_flight, 1); }

/* ------------------------------------------------------------ the loop */

/* Runs tasks until none is runnable or RUN_BUDGET switches were made
 * (counting those tasks make among themselves). */
static void run_ready(tg__worker *w) {
  w->budget = RUN_BUDGET;
  while (w->budget > 0) {
    w->budget--;
    tg_task *t = pick_next(w);
    if (!t) return;
    switch_to_task(w, t);
  }
}

static void fire_due_timers(tg__worker *w) {
  int64_t now = tg_now();
  tg__timer *t;
  while ((t = tg__timer_heap_top(&w->timers)) && t->deadline <= now) {
    tg__timer_heap_remove(&w->timers, t);
    t->fire(t);
  }
}

static void abort_live(tg__worker *w) {
  w->aborted_all = true;
  if (w->migrate) tg__lock_acquire(&w->live_lock);
  for (tg_task *t = w->live; t; t = t->live_next) {
    atomic_fetch_add(&rt->aborted_at_exit, 1);
    tg_task_abort(t);
  }
  if (w->migrate) tg__lock_release(&w->live_lock);
}

static void on_wakeup(uv_async_t *handle) { (void)handle; }
static void on_sleep_timer(uv_timer_t *handle) { (void)handle; }

/* The loop's timeout in ms when nothing is runnable, -1 for none. With the
 * virtual clock, time jumps to the next deadline instead of passing. */
static int64_t idle_timeout_ms(tg__worker *w) {
  tg__timer *next = tg__timer_heap_top(&w->timers);
  if (rt->clock == TG_CLOCK_VIRTUAL) {
    if (!next || atomic_load(&rt->blocking_in_flight) > 0) return -1;
    if (next->deadline > atomic_load(&rt->virtual_now)) atomic_store(&rt->virtual_now, next->deadline);
    return 0;
  }
  if (!next) return -1;
  int64_t left = next->deadline - tg__real_now();
  return left <= 0 ? 0 : (left + 999999) / 1000000; /* round up: never wake early */
}

static bool exit_ready(void) { return atomic_load(&rt->exiting) && atomic_load(&rt->tasks_alive) == 0; }

/* With several workers, an idle worker first watches its inject queue for
 * up to SPIN_NS: a task on another worker usually wakes one of ours within
 * a microsecond, while a wake through the loop's eventfd costs a system
 * call on the waker's side and a sleep and wake-up of this thread (tens of
 * microseconds on a virtual machine). True when work arrived. */
enum { SPIN_NS = 50000, SPIN_PAUSE_NS = 5000 };

static bool spin_for_work(tg__worker *w, int64_t timeout_ms) {
  int64_t start = tg__real_now(), limit = SPIN_NS;
  if (timeout_ms > 0 && timeout_ms * 1000000 < limit) limit = timeout_ms * 1000000;
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(&w->injected, memory_order_relaxed)) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    int64_t spent = tg__real_now() - start;
    if (exit_ready() || spent >= limit) return false;
    if (spent >= SPIN_PAUSE_NS) sched_yield(); /* the waker may wait for this CPU */
  }
}

/* An idle worker is counted, so that busy ones know to share (pick_next);
 * a sharer takes the flag down itself when it picks this worker. */
static void set_idle(tg__worker *w, bool idle) {
  bool was = !idle;
  if (atomic_compare_exchange_strong(&w->idle, &was, idle)) atomic_fetch_add(&rt->idle_workers, idle ? 1 : -1);
}

/* Polls sockets and other handles; sleeps when no task is runnable. */
static void poll_io(tg__worker *w) {
  if (w->run_head || w->lifo) {
    uv_run(&w->loop, UV_RUN_NOWAIT); /* once per RUN_BUDGET tasks at most */
    return;
  }
  int64_t timeout = idle_timeout_ms(w);
  if (timeout == 0) {
    uv_run(&w->loop, UV_RUN_NOWAIT);
    return;
  }
  if (rt->nworkers > 1) {
    set_idle(w, true); /* busy workers may now share their queues with this one */
    bool work = spin_for_work(w, timeout);
    if (work) {
      set_idle(w, false);
      return;
    }
  }
  atomic_store_explicit(&w->sleeping, true, memory_order_seq_cst);
  if (!atomic_load_explicit(&w->injected, memory_order_seq_cst) && !exit_ready()) {
    /* libuv times the timer from its cached clock, which may be a whole
     * busy iteration old: refresh it, and repeat the timer so that one
     * expiring before the poll cannot leave the poll without a timeout. */
    if (timeout > 0) {
      uv_update_time(&w->loop);
      uv_timer_start(&w->sleep_timer, on_sleep_timer, (uint64_t)timeout, (uint64_t)timeout);
    }
    uv_run(&w->loop, UV_RUN_ONCE);
    uv_timer_stop(&w->sleep_timer);
  }
  atomic_store_explicit(&w->sleeping, false, memory_order_relaxed);
  if (rt->nworkers > 1) set_idle(w, false);
}

static void worker_loop(tg__worker *w) {
  current_worker = w;
  for (;;) {
    if (atomic_load_explicit(&w->injected, memory_order_relaxed)) inject_take(w);
    if (!w->aborted_all && atomic_load_explicit(&rt->exiting, memory_order_relaxed)) abort_live(w);
    run_ready(w);
    fire_due_timers(w);
    if (exit_ready()) break;
    poll_io(w);
  }
  current_worker = NULL;
}

static int worker_init(tg__worker *w, int index, int nworkers) {
  w->index = index;
  w->migrate = nworkers > 1;
  int r = uv_loop_init(&w->loop);
  if (r) return r;
  uv_async_init(&w->loop, &w->wakeup, on_wakeup);
  uv_timer_init(&w->loop, &w->sleep_timer);
  uv_unref((uv_handle_t *)&w->sleep_timer);
  return 0;
}

static void worker_close(tg__worker *w) {
  uv_close((uv_handle_t *)&w->wakeup, NULL);
  uv_close((uv_handle_t *)&w->sleep_timer, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&w->loop) != 0) fprintf(stderr, "libtg: worker %d closed with handles open\n", w->index);
  tg__timer_heap_free(&w->timers);
  tg__stack_pool_drain(w);
  tg__task_cache_flush(w);
}

static void thread_stack_bounds(tg__worker *w) {
  pthread_attr_t attr;
  void *addr;
  size_t size;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
      w->loop_stack_bottom = addr;
      w->loop_stack_size = size;
    }
    pthread_attr_destroy(&attr);
  }
}

static void worker_main(void *arg) {
  tg__worker *w = arg;
  thread_stack_bounds(w);
#if defined(TG_TSAN)
  w->tsan_fiber = __tsan_get_current_fiber();
#endif
  worker_loop(w);
  worker_close(w);
}

static void fill_stats(tg_runtime_stats *out) {
  uint64_t switches = 0;
  for (int i = 0; i < rt->nworkers; i++)
    switches += atomic_load_explicit(&rt->workers[i].switches, memory_order_relaxed);
  *out = (tg_runtime_stats){
      .workers = rt->nworkers,
      .tasks_spawned = atomic_load(&rt->spawned),
      .tasks_alive = atomic_load(&rt->tasks_alive),
      .tasks_panicked = atomic_load(&rt->panicked),
      .tasks_aborted = atomic_load(&rt->aborted),
      .tasks_aborted_at_exit = atomic_load(&rt->aborted_at_exit),
      .context_switches = switches,
      .blocking_in_flight = atomic_load(&rt->blocking_in_flight),
  };
  tg__stack_counts(&out->stacks_guarded, &out->stacks_unguarded, &out->stacks_pooled);
  out->stack_slabs = tg__stack_slabs();
  for (int i = 0; i < rt->nworkers; i++)
    out->timers_pending += atomic_load_explicit(&rt->workers[i].timers.published_len, memory_order_relaxed);
}

void tg_runtime_stats_get(tg_runtime_stats *out) {
  if (rt)
    fill_stats(out);
  else
    *out = last_stats;
}

static int runtime_create(const tg_runtime_opts *opts) {
  int nworkers = opts->workers > 0 ? opts->workers : 1;
  if (rt || opts->workers < 0 || (opts->clock != TG_CLOCK_REAL && opts->clock != TG_CLOCK_VIRTUAL) ||
      (opts->clock == TG_CLOCK_VIRTUAL && nworkers != 1))
    return TG_EINVAL;
  if (opts->stack_size && opts->stack_size < TG_STACK_MIN) return TG_EINVAL;
  runtime *r = calloc(1, sizeof *r);
  tg__worker *workers = calloc((size_t)nworkers, sizeof *workers);
  if (!r || !workers) {
    free(r);
    free(workers);
    return TG_ENOMEM;
  }
  r->nworkers = nworkers;
  r->workers = workers;
  r->clock = opts->clock;
  r->virtual_now = opts->virtual_start_ns;
  r->stack_size = opts->stack_size ? opts->stack_size : TG_STACK_DEFAULT;
  for (int i = 0; i < nworkers; i++) {
    int err = worker_init(&workers[i], i, nworkers);
    if (err) {
      while (i-- > 0) worker_close(&workers[i]);
      free(workers);
      free(r);
      return err;
    }
  }
  rt = r;
  return 0;
}

int tg_run(const tg_runtime_opts *opts, tg_task_fn main, void *arg, void **result) {
  static const tg_runtime_opts defaults = {0};
  if (!main) return TG_EINVAL;
  int err = runtime_create(opts ? opts : &defaults);
  if (err) return err;
  tg_task *main_task = NULL;
  int started = 1;
  for (; started < rt->nworkers; started++) {
    err = uv_thread_create(&rt->workers[started].thread, worker_main, &rt->workers[started]);
    if (err) break;
  }
  tg_spawn_opts pin0 = {.pin = 1, .worker = 0, .name = "main"};
  if (!err) err = tg_spawn(&main_task, main, arg, &pin0);
  rt->main_task = main_task;
  if (err) { /* nothing runs: let the started workers find the exit */
    atomic_store(&rt->exiting, true);
    wake_all_workers();
  }
  worker_main(&rt->workers[0]);
  for (int i = 1; i < started; i++) uv_thread_join(&rt->workers[i].thread);
  for (int i = started; i < rt->nworkers; i++) worker_close(&rt->workers[i]);
  tg_outcome outcome = {0};
  if (main_task) {
    tg__task_outcome(main_task, &outcome);
    tg__task_release(main_task);
  }
  if (result) *result = outcome.value;
  fill_stats(&last_stats);
  free(rt->workers);
  free(rt);
  rt = NULL;
  return err ? err : outcome.status;
}
