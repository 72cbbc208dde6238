/* tg/runtime.h - starting and stopping libtg, and its figures.
 *
 * tg_run() starts the runtime, runs `main` as the first task and returns
 * when that task returns. The runtime has `workers` OS threads (the calling
 * thread is worker 0), each with its own libuv loop, run queue and timer
 * heap. Where tasks run, with several workers (see tg/task.h for pinning):
 *   - a spawn goes to the spawner's worker (a plain thread's spawns go
 *     round-robin);
 *   - a task woken by a task runs next on the waker's worker (tokio's LIFO
 *     slot): tasks that talk to each other end up on one thread instead of
 *     crossing threads at every hand-over; at most three such tasks run in
 *     a row before the rest of the queue gets its turn;
 *   - a worker that runs out of work gets every other task of a busy
 *     worker's queue, handed over by the busy worker at its next switch
 *     (nobody steals from a queue: a task that runs long without waiting
 *     or yielding holds up the tasks queued behind it on its worker);
 *   - a task does not move while it waits with a deadline (its timer is in
 *     its worker's heap), nor once it is pinned or has used a socket (see
 *     tg/io.h). A woken task therefore may resume on another thread than
 *     the one it suspended on: thread-local storage, thread ids and locks
 *     held across a wait do not carry over.
 * With one worker none of this applies and tasks run in the order they
 * became runnable. Every primitive may be used from any worker and from
 * plain threads (which then block the thread instead of suspending a
 * task).
 *
 * When `main` returns, tasks still alive are aborted (their waits fail
 * with TG_ECANCELED from then on) and tg_run waits for them to end before
 * it tears the workers down, so the process is left with no task, timer
 * or handle; their number is reported in tg_runtime_stats.tasks_aborted_at_exit.
 *
 * With `clock = TG_CLOCK_VIRTUAL` time does not pass by itself: whenever no
 * task is runnable and no blocking job is in flight, the clock jumps to the
 * next deadline. A 10 s scenario then runs in milliseconds and, since it
 * has one worker (the virtual clock requires workers == 1, as tokio's
 * paused time requires its current-thread runtime), identically every time.
 * Sockets do not hold the virtual clock back.
 *
 * Only one runtime exists at a time in a process; tg_run may be called
 * again after it returned.
 */
#ifndef TG_RUNTIME_H
#define TG_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

typedef void *(*tg_task_fn)(void *arg);

typedef enum tg_clock_mode { TG_CLOCK_REAL = 0, TG_CLOCK_VIRTUAL = 1 } tg_clock_mode;

typedef struct tg_runtime_opts {
  int workers;              /* worker threads; 0 means 1 */
  tg_clock_mode clock;      /* real (default) or virtual */
  int64_t virtual_start_ns; /* virtual clock's reading at start (default 0) */
  size_t stack_size;        /* default task stack; 0 means TG_STACK_DEFAULT */
} tg_runtime_opts;

/* Runs main(arg) as a task on worker 0 and returns after it and every other
 * task have ended. *result (if not NULL) receives main's return value.
 * A main that panics ends the run as one that returns does (its deferred
 * cleanups run, the other tasks are aborted and drained). Returns 0,
 * TG_EPANICKED if main panicked (*result is then NULL), TG_EINVAL for bad
 * options (workers < 0, a clock mode that is not TG_CLOCK_REAL or
 * TG_CLOCK_VIRTUAL, virtual clock with several workers, a stack size below
 * TG_STACK_MIN, a runtime already running), or a
 * negative errno when a thread or loop could not be created. */
int tg_run(const tg_runtime_opts *opts, tg_task_fn main, void *arg, void **result);

typedef struct tg_runtime_stats {
  int workers;
  uint64_t tasks_spawned;
  uint64_t tasks_alive;
  uint64_t tasks_panicked;
  uint64_t tasks_aborted;         /* tasks that ended after tg_task_abort */
  uint64_t tasks_aborted_at_exit; /* alive (started or not) when main returned */
  uint64_t context_switches;
  uint64_t stacks_guarded;   /* stacks in use or pooled with a guard page */
  uint64_t stacks_unguarded; /* stacks in use or pooled with a canary instead */
  uint64_t stacks_pooled;    /* free stacks kept for reuse */
  uint64_t stack_slabs;      /* mappings the stacks are carved from */
  uint64_t timers_pending;
  uint64_t blocking_in_flight;
} tg_runtime_stats;

/* Figures of the running runtime (or of the last run, after tg_run
 * returned). Safe from any thread. */
void tg_runtime_stats_get(tg_runtime_stats *out);

#endif
