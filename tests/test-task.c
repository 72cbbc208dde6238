/* test-task.c - tasks: spawn and join, yield order, abort, panic with
 * deferred cleanups, many live tasks, and the runtime's own checks. */
#include "helpers.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

static void *return_arg(void *arg) { return arg; }

static void *spawn_join_body(void *arg) {
  (void)arg;
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, return_arg, (void *)(intptr_t)42, NULL), 0);
  ck_assert_uint_ne(tg_task_id(t), 0);
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(t, &o), 0);
  ck_assert_int_eq(o.status, 0);
  ck_assert_ptr_eq(o.value, (void *)(intptr_t)42);
  ck_assert_str_eq(o.message, "");
  return (void *)(intptr_t)7;
}

START_TEST(test_task_spawn_join) { ck_assert_ptr_eq(tg_test_run_virtual(spawn_join_body, NULL), (void *)(intptr_t)7); }
END_TEST

/* tg_yield lets every other runnable task run once: round-robin order. */
typedef struct trace {
  char log[64];
  int len;
} trace;

typedef struct yielder {
  trace *tr;
  char name;
} yielder;

static void *yield_three_times(void *arg) {
  yielder *y = arg;
  for (int i = 0; i < 3; i++) {
    y->tr->log[y->tr->len++] = y->name;
    tg_yield();
  }
  return NULL;
}

static void *yield_order_body(void *arg) {
  (void)arg;
  trace tr = {0};
  yielder a = {&tr, 'a'}, b = {&tr, 'b'}, c = {&tr, 'c'};
  tg_task *ts[3];
  tg_spawn(&ts[0], yield_three_times, &a, NULL);
  tg_spawn(&ts[1], yield_three_times, &b, NULL);
  tg_spawn(&ts[2], yield_three_times, &c, NULL);
  for (int i = 0; i < 3; i++) tg_task_join(ts[i], NULL);
  ck_assert_str_eq(tr.log, "abcabcabc");
  return NULL;
}

START_TEST(test_task_yield_round_robin) { tg_test_run_virtual(yield_order_body, NULL); }
END_TEST

/* A panicking task ends alone: its deferred cleanups run (last first),
 * the joiner sees the message, and the caller goes on. */
typedef struct cleanup_log {
  char order[8];
  int n;
} cleanup_log;

static void note_a(void *arg) {
  cleanup_log *l = arg;
  l->order[l->n++] = 'a';
}
static void note_b(void *arg) {
  cleanup_log *l = arg;
  l->order[l->n++] = 'b';
}

static void *panicker(void *arg) {
  tg_defer(note_a, arg);
  tg_defer(note_b, arg);
  tg_sleep(TG_MS(5));
  tg_panic("sensor %d on fire", 3);
}

static void *panic_body(void *arg) {
  (void)arg;
  cleanup_log l = {0};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, panicker, &l, NULL), 0);
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(t, &o), 0);
  ck_assert_int_eq(o.status, TG_EPANICKED);
  ck_assert_str_eq(o.message, "sensor 3 on fire");
  ck_assert_str_eq(l.order, "ba");
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_panicked, 1);
  return NULL;
}

START_TEST(test_task_panic_runs_defers) { tg_test_run_virtual(panic_body, NULL); }
END_TEST

static void *assert_fails(void *arg) {
  int *x = arg;
  tg_assert(*x == 2);
  return NULL;
}

static void *assert_body(void *arg) {
  (void)arg;
  int one = 1;
  tg_task *t;
  tg_spawn(&t, assert_fails, &one, NULL);
  tg_outcome o;
  tg_task_join(t, &o);
  ck_assert_int_eq(o.status, TG_EPANICKED);
  ck_assert_msg(strstr(o.message, "*x == 2") != NULL, "message: %s", o.message);
  return NULL;
}

START_TEST(test_task_assert_panics) { tg_test_run_virtual(assert_body, NULL); }
END_TEST

/* Abort: the current wait and every later one fail with TG_ECANCELED; a
 * task that then returns is reported as cancelled. */
typedef struct sleeper {
  int first, second;
} sleeper;

static void *sleep_twice(void *arg) {
  sleeper *s = arg;
  s->first = tg_sleep(TG_SEC(100));
  s->second = tg_sleep(TG_SEC(100));
  return NULL;
}

static void *abort_body(void *arg) {
  (void)arg;
  sleeper s = {1, 1};
  tg_task *t;
  tg_spawn(&t, sleep_twice, &s, NULL);
  tg_sleep(TG_SEC(1));
  tg_task_abort(t);
  tg_task_abort(t); /* idempotent */
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(t, &o), 0);
  ck_assert_int_eq(o.status, TG_ECANCELED);
  ck_assert_int_eq(s.first, TG_ECANCELED);
  ck_assert_int_eq(s.second, TG_ECANCELED);
  ck_assert_int_eq(tg_now(), TG_SEC(1)); /* nobody slept the 100 s */
  return NULL;
}

START_TEST(test_task_abort_cancels_waits) { tg_test_run_virtual(abort_body, NULL); }
END_TEST

/* A join that times out leaves the handle valid. */
static void *join_timeout_body(void *arg) {
  (void)arg;
  tg_task *t;
  tg_spawn(&t, sleep_twice, &(sleeper){0}, NULL);
  ck_assert_int_eq(tg_task_join_dl(t, NULL, tg_deadline_in(TG_SEC(1))), TG_ETIMEDOUT);
  tg_task_abort(t);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  return NULL;
}

START_TEST(test_task_join_timeout) { tg_test_run_virtual(join_timeout_body, NULL); }
END_TEST

/* Tasks left alive when main returns are aborted and waited for. */
static void *forever(void *arg) {
  int *ended = arg;
  while (tg_sleep(TG_SEC(1)) == 0) {
  }
  (*ended)++;
  return NULL;
}

static int left_ended;

static void *leave_tasks_body(void *arg) {
  (void)arg;
  for (int i = 0; i < 3; i++) tg_spawn(NULL, forever, &left_ended, NULL);
  tg_sleep(TG_SEC(2));
  return NULL;
}

START_TEST(test_task_exit_aborts_leftovers) {
  tg_runtime_opts opts = {.clock = TG_CLOCK_VIRTUAL};
  ck_assert_int_eq(tg_run(&opts, leave_tasks_body, NULL, NULL), 0);
  ck_assert_int_eq(left_ended, 3);
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_aborted_at_exit, 3);
  ck_assert_uint_eq(st.tasks_alive, 0);
}
END_TEST

/* Past the guarded-stack limit, stacks switch to canaries, so far more
 * tasks than vm.max_map_count allows guard pages for can be alive.
 * ThreadSanitizer counts each task as a thread and stops at 8,128, so
 * there the test forces canaries on fewer tasks. */
#if defined(__SANITIZE_THREAD__)
#define MANY_TASKS 4000
#define MANY_GUARD TG_STACK_GUARD_NEVER
#else
#define MANY_TASKS 40000
#define MANY_GUARD TG_STACK_GUARD_AUTO
#endif
typedef struct park_all {
  tg_semaphore *gate;
  int parked;
} park_all;

static void *park_on_gate(void *arg) {
  park_all *p = arg;
  p->parked++;
  tg_semaphore_acquire(p->gate, 1);
  tg_semaphore_release(p->gate, 1);
  return NULL;
}

static void *many_tasks_body(void *arg) {
  int n = *(int *)arg;
  park_all p = {0};
  ck_assert_int_eq(tg_semaphore_new(&p.gate, 0, "gate"), 0);
  tg_joinset *js;
  tg_joinset_new(&js, NULL);
  for (int i = 0; i < n; i++)
    ck_assert_int_eq(
        tg_joinset_spawn(js, park_on_gate, &p, &(tg_spawn_opts){.stack_size = 16384, .guard = MANY_GUARD}, NULL), 0);
  while (p.parked < n) tg_yield();
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.stacks_guarded + st.stacks_unguarded, (uint64_t)n + 1);
  ck_assert_uint_gt(st.stacks_unguarded, 0);
  ck_assert_uint_le(st.stacks_guarded, 24000); /* the map-count budget */
  /* stacks come in slabs of up to 256: a few hundred mappings, not n */
  ck_assert_uint_gt(st.stack_slabs, 0);
  ck_assert_uint_le(st.stack_slabs, (uint64_t)n / 100);
  tg_semaphore_add_permits(p.gate, 1);
  tg_outcome o;
  int joined = 0;
  while (tg_joinset_join_next(js, &o) == 0) joined++;
  ck_assert_int_eq(joined, n);
  tg_joinset_free(js);
  tg_semaphore_free(p.gate);
  return NULL;
}

START_TEST(test_task_many_live_tasks) {
  int n = MANY_TASKS;
  tg_test_run_virtual(many_tasks_body, &n);
}
END_TEST

static void *spawn_bad_opts_body(void *arg) {
  (void)arg;
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, return_arg, NULL, &(tg_spawn_opts){.stack_size = 100}), TG_EINVAL);
  ck_assert_ptr_null(t);
  ck_assert_int_eq(tg_spawn(&t, return_arg, NULL, &(tg_spawn_opts){.pin = 1, .worker = 5}), TG_EINVAL);
  ck_assert_int_eq(tg_spawn(&t, NULL, NULL, NULL), TG_EINVAL);
  return NULL;
}

START_TEST(test_task_spawn_rejects_bad_options) { tg_test_run_virtual(spawn_bad_opts_body, NULL); }
END_TEST

START_TEST(test_runtime_rejects_virtual_multi_worker) {
  tg_runtime_opts opts = {.workers = 2, .clock = TG_CLOCK_VIRTUAL};
  ck_assert_int_eq(tg_run(&opts, return_arg, NULL, NULL), TG_EINVAL);
  ck_assert_int_eq(tg_spawn(NULL, return_arg, NULL, NULL), TG_EINVAL); /* no runtime */
}
END_TEST

/* Tasks spread over two workers and wake each other across them. */
typedef struct pingpong {
  tg_mpsc_tx *to_peer;
  tg_mpsc_rx *from_peer;
  int rounds;
} pingpong;

static void *bounce(void *arg) {
  pingpong *p = arg;
  int v;
  for (int i = 0; i < p->rounds; i++) {
    if (tg_mpsc_send(p->to_peer, &i) != 0 || tg_mpsc_recv(p->from_peer, &v) != 0) break;
    tg_assert(v == i);
  }
  return NULL;
}

static void *echo(void *arg) {
  pingpong *p = arg;
  int v;
  while (tg_mpsc_recv(p->from_peer, &v) == 0)
    if (tg_mpsc_send(p->to_peer, &v) != 0) break;
  return NULL;
}

static void *cross_worker_body(void *arg) {
  (void)arg;
  tg_mpsc_tx *a_tx, *b_tx;
  tg_mpsc_rx *a_rx, *b_rx;
  tg_mpsc_new(&(tg_mpsc_opts){.capacity = 1, .elem_size = sizeof(int)}, &a_tx, &a_rx);
  tg_mpsc_new(&(tg_mpsc_opts){.capacity = 1, .elem_size = sizeof(int)}, &b_tx, &b_rx);
  /* Each round crosses threads twice; on a loaded machine every crossing
   * can wait for the OS to run the other worker, so the count stays small
   * enough for the timeout while a lost wake still hangs the test. */
  pingpong ping = {a_tx, b_rx, 2000}, pong = {b_tx, a_rx, 0};
  tg_task *t1, *t2;
  tg_spawn(&t1, bounce, &ping, &(tg_spawn_opts){.pin = 1, .worker = 0});
  tg_spawn(&t2, echo, &pong, &(tg_spawn_opts){.pin = 1, .worker = 1});
  tg_outcome o;
  tg_task_join(t1, &o);
  ck_assert_int_eq(o.status, 0);
  tg_mpsc_tx_drop(a_tx);
  tg_task_join(t2, &o);
  ck_assert_int_eq(o.status, 0);
  tg_mpsc_rx_drop(a_rx);
  tg_mpsc_rx_drop(b_rx);
  tg_mpsc_tx_drop(b_tx);
  return NULL;
}

START_TEST(test_task_cross_worker_pingpong) { tg_test_run(2, 0, cross_worker_body, NULL); }
END_TEST

/* A main that panics ends the run like one that returns: its deferred
 * cleanups run, the tasks it left are aborted, and tg_run reports
 * TG_EPANICKED - with one worker and with two. */
static int main_defer_ran;
static atomic_int main_leftover_ended; /* the two tasks may end on two workers at once */

static void count_defer(void *arg) { (*(int *)arg)++; }

static atomic_int main_leftover_started;

static void *started_then_forever(void *arg) {
  (void)arg;
  atomic_fetch_add(&main_leftover_started, 1);
  while (tg_sleep(TG_SEC(1)) == 0) {
  }
  atomic_fetch_add(&main_leftover_ended, 1);
  return NULL;
}

static void *panicking_main(void *arg) {
  (void)arg;
  tg_defer(count_defer, &main_defer_ran);
  tg_spawn(NULL, started_then_forever, NULL, NULL);
  tg_spawn(NULL, started_then_forever, NULL, NULL);
  /* both running (a task aborted before its start would never run) */
  for (int i = 0; i < 10000 && atomic_load(&main_leftover_started) < 2; i++) tg_sleep(TG_MS(1));
  tg_panic("main gives up");
}

static void main_panics_on(int workers) {
  main_defer_ran = 0;
  atomic_store(&main_leftover_ended, 0);
  atomic_store(&main_leftover_started, 0);
  tg_runtime_opts opts = {.workers = workers};
  void *result = (void *)1;
  ck_assert_int_eq(tg_run(&opts, panicking_main, NULL, &result), TG_EPANICKED);
  ck_assert_ptr_null(result);
  ck_assert_int_eq(main_defer_ran, 1);
  ck_assert_int_eq(atomic_load(&main_leftover_ended), 2);
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_alive, 0);
  ck_assert_uint_eq(st.tasks_panicked, 1);
  ck_assert_uint_eq(st.stacks_guarded + st.stacks_unguarded, 0);
}

START_TEST(test_runtime_main_panic_returns) {
  main_panics_on(1);
  main_panics_on(2);
}
END_TEST

START_TEST(test_runtime_rejects_bad_options) {
  ck_assert_int_eq(tg_run(&(tg_runtime_opts){.workers = -1}, return_arg, NULL, NULL), TG_EINVAL);
  ck_assert_int_eq(tg_run(&(tg_runtime_opts){.clock = (tg_clock_mode)2}, return_arg, NULL, NULL), TG_EINVAL);
  ck_assert_int_eq(tg_run(&(tg_runtime_opts){.stack_size = 1024}, return_arg, NULL, NULL), TG_EINVAL);
  void *result = NULL; /* and the runtime still starts after those */
  ck_assert_int_eq(tg_run(NULL, return_arg, (void *)(intptr_t)3, &result), 0);
  ck_assert_ptr_eq(result, (void *)(intptr_t)3);
}
END_TEST

/* A task aborted before its first run never runs (tokio drops a task it
 * never polled): its outcome is cancelled with no value, its drop hook
 * gets the argument instead, and a task without a hook is just gone. */
typedef struct start_probe {
  int ran;
  int dropped;
} start_probe;

static void *note_run(void *arg) {
  ((start_probe *)arg)->ran++;
  return arg;
}

static void note_drop(void *arg) { ((start_probe *)arg)->dropped++; }

static void *abort_unstarted_body(void *arg) {
  (void)arg;
  start_probe with_hook = {0}, without = {0}, started = {0};
  tg_task *a, *b, *c;
  ck_assert_int_eq(tg_spawn(&a, note_run, &with_hook, &(tg_spawn_opts){.drop = note_drop}), 0);
  ck_assert_int_eq(tg_spawn(&b, note_run, &without, NULL), 0);
  ck_assert_int_eq(tg_spawn(&c, note_run, &started, &(tg_spawn_opts){.drop = note_drop}), 0);
  tg_task_abort(a);
  tg_task_abort(b);
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(a, &o), 0);
  ck_assert_int_eq(o.status, TG_ECANCELED);
  ck_assert_ptr_null(o.value);
  ck_assert_int_eq(tg_task_join(b, &o), 0);
  ck_assert_int_eq(o.status, TG_ECANCELED);
  /* fn's word holds the result: cleared for a task that never ran */
  ck_assert_ptr_null(o.value);
  ck_assert_int_eq(tg_task_join(c, &o), 0); /* not aborted: runs, no drop */
  ck_assert_int_eq(o.status, 0);
  ck_assert_ptr_eq(o.value, &started);
  ck_assert_int_eq(with_hook.ran + without.ran, 0);
  ck_assert_int_eq(with_hook.dropped, 1);
  ck_assert_int_eq(started.ran, 1);
  ck_assert_int_eq(started.dropped, 0);
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_aborted, 2);
  return NULL;
}

START_TEST(test_task_abort_before_start_never_runs) { tg_test_run_virtual(abort_unstarted_body, NULL); }
END_TEST

/* Tasks spawned as main returns never start either; their hooks run. */
static start_probe at_exit_probe;

static void *spawn_and_leave(void *arg) {
  (void)arg;
  for (int i = 0; i < 3; i++) tg_spawn(NULL, note_run, &at_exit_probe, &(tg_spawn_opts){.drop = note_drop});
  return NULL;
}

START_TEST(test_task_unstarted_at_exit_never_run) {
  ck_assert_int_eq(tg_run(&(tg_runtime_opts){.clock = TG_CLOCK_VIRTUAL}, spawn_and_leave, NULL, NULL), 0);
  ck_assert_int_eq(at_exit_probe.ran, 0);
  ck_assert_int_eq(at_exit_probe.dropped, 3);
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_aborted_at_exit, 3);
  ck_assert_uint_eq(st.tasks_alive, 0);
}
END_TEST

/* A task that yields in a loop with nothing else runnable still returns
 * the worker to its loop every so often, so timers fire and sockets are
 * polled: the sleeper below ends the loop. */
static void *sleep_then_flag(void *arg) {
  tg_sleep(TG_MS(2));
  atomic_store((atomic_int *)arg, 1);
  return NULL;
}

static void *lone_yielder_body(void *arg) {
  (void)arg;
  atomic_int flag = 0;
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, sleep_then_flag, &flag, NULL), 0);
  while (!atomic_load(&flag)) ck_assert_int_eq(tg_yield(), 0);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  return NULL;
}

START_TEST(test_task_yield_loop_lets_timers_fire) { tg_test_run(1, 0, lone_yielder_body, NULL); }
END_TEST

/* An abort racing with a wake from another thread: the waiter on worker
 * 1 either took the notification or was cancelled having consumed
 * nothing (the permit is then stored), and nothing hangs - whichever of
 * the aborter, the notifier and the parking worker gets there first. */
#if defined(__SANITIZE_THREAD__)
#define ABORT_RACE_ROUNDS 300
#else
#define ABORT_RACE_ROUNDS 3000
#endif
enum { GOT_NOTIFIED = 1, GOT_CANCELLED = 2 };

static void *wait_notified(void *arg) {
  return (void *)(intptr_t)(tg_notify_wait(arg) == 0 ? GOT_NOTIFIED : GOT_CANCELLED);
}

static void *abort_race_body(void *arg) {
  (void)arg;
  for (int i = 0; i < ABORT_RACE_ROUNDS; i++) {
    tg_notify *n;
    ck_assert_int_eq(tg_notify_new(&n, NULL), 0);
    tg_task *t;
    ck_assert_int_eq(tg_spawn(&t, wait_notified, n, &(tg_spawn_opts){.pin = 1, .worker = 1}), 0);
    for (int y = 0; y < i % 5; y++) tg_yield();
    if (i & 1) {
      tg_notify_one(n);
      tg_task_abort(t);
    } else {
      tg_task_abort(t);
      tg_notify_one(n);
    }
    tg_outcome o;
    ck_assert_int_eq(tg_task_join(t, &o), 0);
    tg_notify_stats st;
    tg_notify_stats_get(n, &st);
    intptr_t got = (intptr_t)o.value; /* 0: aborted before it ran */
    ck_assert_int_eq(st.permit, got == GOT_NOTIFIED ? 0 : 1);
    ck_assert_uint_eq(st.waiters, 0);
    tg_notify_free(n);
  }
  return NULL;
}

START_TEST(test_task_abort_races_wake) { tg_test_run(2, 0, abort_race_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("task");
  tg_test_add(s, "spawn_join", test_task_spawn_join, 10);
  tg_test_add(s, "yield_round_robin", test_task_yield_round_robin, 10);
  tg_test_add(s, "panic_runs_defers", test_task_panic_runs_defers, 10);
  tg_test_add(s, "assert_panics", test_task_assert_panics, 10);
  tg_test_add(s, "abort_cancels_waits", test_task_abort_cancels_waits, 10);
  tg_test_add(s, "join_timeout", test_task_join_timeout, 10);
  tg_test_add(s, "exit_aborts_leftovers", test_task_exit_aborts_leftovers, 10);
  tg_test_add(s, "many_live_tasks", test_task_many_live_tasks, 60);
  tg_test_add(s, "spawn_rejects_bad_options", test_task_spawn_rejects_bad_options, 10);
  tg_test_add(s, "runtime_rejects_virtual_multi_worker", test_runtime_rejects_virtual_multi_worker, 10);
  tg_test_add(s, "cross_worker_pingpong", test_task_cross_worker_pingpong, 120);
  tg_test_add(s, "yield_loop_lets_timers_fire", test_task_yield_loop_lets_timers_fire, 10);
  tg_test_add(s, "runtime_main_panic_returns", test_runtime_main_panic_returns, 20);
  tg_test_add(s, "runtime_rejects_bad_options", test_runtime_rejects_bad_options, 10);
  tg_test_add(s, "abort_before_start_never_runs", test_task_abort_before_start_never_runs, 10);
  tg_test_add(s, "unstarted_at_exit_never_run", test_task_unstarted_at_exit_never_run, 10);
  tg_test_add(s, "abort_races_wake", test_task_abort_races_wake, 120);
  return tg_test_main(s);
}
