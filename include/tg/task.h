/* tg/task.h - tasks: spawn, join, abort, yield, panic, defer.
 *
 * A task is a stackful coroutine: it runs a plain C function top to bottom
 * and suspends inside libtg calls that wait. Its stack is a slot of an
 * mmap'd slab (up to 256 stacks a mapping) and reused from a per-worker
 * pool; it has a guard page below it until 24,000 guarded slots exist
 * (vm.max_map_count allows ~32,000 guard pages), after which new stacks
 * get a canary instead, checked whenever the task yields, waits or ends
 * (TG_STACK_GUARD_ALWAYS and _NEVER force one or the other). Only the
 * pages a task touches cost memory.
 *
 * A switch between tasks saves only what a function call must preserve
 * apart from the floating-point control state: tasks running on one
 * worker share its thread's rounding mode and exception masks, as the
 * futures one tokio thread polls do, so a task that changes them restores
 * them before it waits or yields.
 *
 * A task ends when its function returns (the value is its result), when
 * it calls tg_panic (its deferred cleanups run, LIFO, on its own stack and
 * the rest of the program goes on), or after tg_task_abort. Abort does not
 * unwind the task: it makes the task's current wait, and every wait it
 * starts afterwards, fail with TG_ECANCELED, so code written as
 * `while (tg_mpsc_recv(rx, &v) == 0)` leaves its loop and cleans up as on
 * any error. A task that ends after an abort is reported as cancelled.
 * A task aborted before its first run never runs at all (as tokio drops a
 * task it never polled): its outcome is TG_ECANCELED with value NULL, and
 * its function does not see its argument - a task whose argument owns
 * something (a socket, a buffer) names a `drop` function in its spawn
 * options, which then gets the argument instead. Tasks still unstarted
 * when `main` returns are aborted that way too.
 *
 * Handles: tg_spawn gives a tg_task * when asked for one; it must be
 * joined or detached exactly once. Spawning without a handle detaches.
 * Tasks in a JoinSet (tg/joinset.h) are owned by the set instead.
 */
#ifndef TG_TASK_H
#define TG_TASK_H

#include "tg/runtime.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define TG_STACK_DEFAULT ((size_t)64 * 1024)
#define TG_STACK_MIN     ((size_t)16 * 1024)

typedef struct tg_task tg_task;

typedef enum tg_stack_guard {
  TG_STACK_GUARD_AUTO = 0, /* guard page while few stacks live, then canary */
  TG_STACK_GUARD_ALWAYS,
  TG_STACK_GUARD_NEVER,
} tg_stack_guard;

typedef struct tg_spawn_opts {
  size_t stack_size; /* 0: the runtime's default */
  int pin;           /* nonzero: run on `worker`, always; else the task
                           starts on the spawner's worker and may move
                           (see tg/runtime.h) */
  int worker;        /* 0 .. workers-1, read only when pin is set */
  tg_stack_guard guard;
  const char *name;        /* shown in dumps; copied */
  void (*drop)(void *arg); /* called with arg instead of fn if the task is
                              aborted before its first run; may be NULL */
} tg_spawn_opts;

/* How a task ended. */
typedef struct tg_outcome {
  uint64_t task_id;
  int status;        /* 0, TG_EPANICKED or TG_ECANCELED */
  void *value;       /* the function's return value (also when cancelled) */
  char message[128]; /* the panic message, truncated; "" otherwise */
} tg_outcome;

/* Starts fn(arg) as a new task. With `handle` NULL the task is detached.
 * opts may be NULL. Returns 0, TG_ENOMEM, TG_EINVAL (no runtime running,
 * bad worker or stack size) or a negative errno from mmap. */
int tg_spawn(tg_task **handle, tg_task_fn fn, void *arg, const tg_spawn_opts *opts);

/* Waits until the task ends, fills *out (may be NULL; out->status tells
 * how it ended) and frees the handle. Returns 0, or TG_ETIMEDOUT /
 * TG_ECANCELED when the caller's own wait ended first - then the handle
 * stays valid and may be joined again. */
int tg_task_join(tg_task *t, tg_outcome *out);
int tg_task_join_dl(tg_task *t, tg_outcome *out, int64_t deadline_ns);

/* Lets the task run on without a handle. */
void tg_task_detach(tg_task *t);

/* Requests cancellation: see the paragraph above. Idempotent; safe from
 * any thread; a task that already ended is left as it was. */
void tg_task_abort(tg_task *t);

uint64_t tg_task_id(const tg_task *t);

/* The calling task, or NULL on a plain thread. */
tg_task *tg_task_current(void);
uint64_t tg_task_current_id(void);

/* Nonzero once the calling task was aborted. */
int tg_task_cancelled(void);

/* Lets every other runnable task on this worker run once first (the task
 * may then resume on another worker, unless pinned).
 * Returns 0, TG_ECANCELED if the task was aborted, or TG_ENOTASK outside
 * a task. */
int tg_yield(void);

/* Ends the calling task as panicked with a formatted message; its
 * deferred cleanups run first. On a plain thread, aborts the process. */
_Noreturn void tg_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Panics with the failed expression when `cond` is false. */
#define tg_assert(cond) ((cond) ? (void)0 : tg_panic("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__))

/* Registers fn(arg) to run when the calling task ends, however it ends
 * (return, panic or abort), last registered first. Returns 0, TG_ENOMEM,
 * or TG_ENOTASK outside a task. */
int tg_defer(void (*fn)(void *), void *arg);

#endif
