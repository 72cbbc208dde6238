/* test-semaphore.c - the FIFO-fair semaphore: arrival order, big requests
 * at the head, no barging, close, permits returned by a task's end, what a
 * task may release, cancel safety, and a stress run on two workers. */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>

static tg_semaphore_stats stats_of(tg_semaphore *sem) {
  tg_semaphore_stats st;
  tg_semaphore_stats_get(sem, &st);
  return st;
}

/* A task that takes `n` permits, notes its turn, holds them until told
 * to let go and releases them. */
typedef struct holder {
  tg_semaphore *sem;
  uint64_t n;
  int id;
  int *order, *served; /* ids in the order they were served */
  tg_notify *let_go;
  int result;
} holder;

static void *hold_until_told(void *arg) {
  holder *h = arg;
  h->result = tg_semaphore_acquire(h->sem, h->n);
  if (h->result != 0) return NULL;
  h->order[(*h->served)++] = h->id;
  tg_notify_wait(h->let_go);
  ck_assert_int_eq(tg_semaphore_release(h->sem, h->n), 0);
  return NULL;
}

static void spawn_holder(holder *h, tg_task **t) {
  ck_assert_int_eq(tg_notify_new(&h->let_go, NULL), 0);
  ck_assert_int_eq(tg_spawn(t, hold_until_told, h, NULL), 0);
  tg_sleep(TG_MS(1)); /* it acquires or queues before the next one arrives */
}

static void join_holder(holder *h, tg_task *t) {
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  tg_notify_free(h->let_go);
}

/* The reference scenario's bandwidth slots: 7 tasks, 5 permits. Five get
 * one at once, two wait and are served in the order they arrived. */
static void *arrival_order_body(void *arg) {
  (void)arg;
  enum { TASKS = 7, PERMITS = 5 };
  tg_semaphore *sem;
  ck_assert_int_eq(tg_semaphore_new(&sem, PERMITS, "bandwidth"), 0);
  int order[TASKS], served = 0;
  holder hs[TASKS];
  tg_task *ts[TASKS];
  for (int i = 0; i < TASKS; i++) {
    hs[i] = (holder){.sem = sem, .n = 1, .id = i, .order = order, .served = &served};
    spawn_holder(&hs[i], &ts[i]);
  }
  tg_semaphore_stats st = stats_of(sem);
  ck_assert_int_eq(served, PERMITS);
  ck_assert_uint_eq(st.in_use, PERMITS);
  ck_assert_uint_eq(st.waiters, 2);
  ck_assert_uint_eq(st.waits, 2);
  ck_assert_str_eq(st.name, "bandwidth");

  tg_notify_one(hs[3].let_go);
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(served, 6);
  ck_assert_int_eq(order[5], 5); /* the first to wait */
  tg_notify_one(hs[0].let_go);
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(served, 7);
  ck_assert_int_eq(order[6], 6);

  for (int i = 0; i < TASKS; i++) {
    if (i != 0 && i != 3) tg_notify_one(hs[i].let_go);
    join_holder(&hs[i], ts[i]);
  }
  st = stats_of(sem);
  ck_assert_uint_eq(st.available, PERMITS);
  ck_assert_uint_eq(st.acquired, TASKS);
  tg_semaphore_free(sem);
  return NULL;
}

START_TEST(test_semaphore_waiters_served_in_arrival_order) { tg_test_run_virtual(arrival_order_body, NULL); }
END_TEST

/* A request for several permits at the head holds back smaller ones
 * behind it even when they would fit, and try_acquire does not barge. */
static void *acquire_many_body(void *arg) {
  (void)arg;
  tg_semaphore *sem;
  ck_assert_int_eq(tg_semaphore_new(&sem, 5, NULL), 0);
  ck_assert_int_eq(tg_semaphore_acquire(sem, 4), 0);
  int order[2], served = 0;
  holder big = {.sem = sem, .n = 3, .id = 0, .order = order, .served = &served};
  holder small = {.sem = sem, .n = 1, .id = 1, .order = order, .served = &served};
  tg_task *tb, *ts;
  spawn_holder(&big, &tb);
  spawn_holder(&small, &ts);
  tg_semaphore_stats st = stats_of(sem);
  ck_assert_uint_eq(st.available, 1);
  ck_assert_uint_eq(st.waiters, 2);
  ck_assert_int_eq(served, 0);
  ck_assert_int_eq(tg_semaphore_try_acquire(sem, 1), TG_EAGAIN);

  ck_assert_int_eq(tg_semaphore_release(sem, 2), 0); /* 3 free: the big one fits */
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(served, 1);
  ck_assert_int_eq(order[0], 0);
  ck_assert_uint_eq(stats_of(sem).available, 0);

  tg_notify_one(big.let_go);
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(served, 2);
  ck_assert_int_eq(order[1], 1);
  tg_notify_one(small.let_go);
  join_holder(&big, tb);
  join_holder(&small, ts);
  ck_assert_int_eq(tg_semaphore_release(sem, 2), 0);
  ck_assert_uint_eq(stats_of(sem).available, 5);
  tg_semaphore_free(sem);
  return NULL;
}

START_TEST(test_semaphore_acquire_many_fifo) { tg_test_run_virtual(acquire_many_body, NULL); }
END_TEST

/* When the big request at the head gives up (its deadline passes), the
 * smaller one behind it is served at once: nobody waits while the head
 * could proceed. */
typedef struct timed {
  tg_semaphore *sem;
  uint64_t n;
  int64_t deadline;
  int result;
  int64_t done_at;
} timed;

static void *acquire_timed(void *arg) {
  timed *a = arg;
  a->result = tg_semaphore_acquire_dl(a->sem, a->n, a->deadline);
  a->done_at = tg_now();
  return NULL; /* what it got goes back as it ends */
}

static void *head_gives_up_body(void *arg) {
  (void)arg;
  tg_semaphore *sem;
  ck_assert_int_eq(tg_semaphore_new(&sem, 2, NULL), 0);
  ck_assert_int_eq(tg_semaphore_acquire(sem, 1), 0);
  timed big = {.sem = sem, .n = 2, .deadline = tg_deadline_in(TG_MS(500)), .result = 1};
  timed small = {.sem = sem, .n = 1, .deadline = TG_FOREVER, .result = 1};
  tg_task *tb, *ts;
  ck_assert_int_eq(tg_spawn(&tb, acquire_timed, &big, NULL), 0);
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(tg_spawn(&ts, acquire_timed, &small, NULL), 0);
  ck_assert_int_eq(tg_task_join(tb, NULL), 0);
  ck_assert_int_eq(big.result, TG_ETIMEDOUT);
  ck_assert_int_eq(tg_task_join(ts, NULL), 0);
  ck_assert_int_eq(small.result, 0);
  ck_assert_int_eq(small.done_at, big.done_at);
  ck_assert_uint_eq(stats_of(sem).available, 1); /* small's permit came back */
  ck_assert_int_eq(tg_semaphore_release(sem, 1), 0);
  tg_semaphore_free(sem);
  return NULL;
}

START_TEST(test_semaphore_head_timeout_serves_next) { tg_test_run_virtual(head_gives_up_body, NULL); }
END_TEST

/* Close fails every waiter and every later acquire with TG_ECLOSED;
 * releases still count. */
static void *close_body(void *arg) {
  (void)arg;
  tg_semaphore *sem;
  ck_assert_int_eq(tg_semaphore_new(&sem, 1, NULL), 0);
  ck_assert_int_eq(tg_semaphore_acquire(sem, 1), 0);
  timed ws[3];
  tg_task *ts[3];
  for (int i = 0; i < 3; i++) {
    ws[i] = (timed){.sem = sem, .n = 1, .deadline = TG_FOREVER, .result = 1};
    ck_assert_int_eq(tg_spawn(&ts[i], acquire_timed, &ws[i], NULL), 0);
  }
  tg_sleep(TG_MS(1));
  ck_assert_uint_eq(stats_of(sem).waiters, 3);
  tg_semaphore_close(sem);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
    ck_assert_int_eq(ws[i].result, TG_ECLOSED);
  }
  ck_assert_int_eq(tg_semaphore_acquire(sem, 1), TG_ECLOSED);
  ck_assert_int_eq(tg_semaphore_try_acquire(sem, 1), TG_ECLOSED);
  tg_semaphore_stats st = stats_of(sem);
  ck_assert_int_ne(st.closed, 0);
  ck_assert_uint_eq(st.waiters, 0);
  ck_assert_uint_eq(st.in_use, 1);
  ck_assert_int_eq(tg_semaphore_release(sem, 1), 0);
  ck_assert_uint_eq(stats_of(sem).in_use, 0);
  tg_semaphore_free(sem);
  return NULL;
}

START_TEST(test_semaphore_close_wakes_waiters) { tg_test_run_virtual(close_body, NULL); }
END_TEST

/* However a holding task ends - panic, abort, or a return without a
 * release - its permits go back. */
static void *acquire_and_panic(void *arg) {
  ck_assert_int_eq(tg_semaphore_acquire(arg, 2), 0);
  tg_panic("device %d failed", 3);
}

static void *acquire_and_wait(void *arg) {
  ck_assert_int_eq(tg_semaphore_acquire(arg, 1), 0);
  tg_sleep(TG_SEC(3600)); /* until aborted */
  return NULL;
}

static void *acquire_and_return(void *arg) {
  ck_assert_int_eq(tg_semaphore_acquire(arg, 1), 0);
  ck_assert_int_eq(tg_semaphore_acquire(arg, 1), 0);
  return NULL;
}

static void *ended_holders_body(void *arg) {
  (void)arg;
  tg_semaphore *sem;
  ck_assert_int_eq(tg_semaphore_new(&sem, 5, NULL), 0);
  tg_task *panics, *aborted, *returns;
  ck_assert_int_eq(tg_spawn(&panics, acquire_and_panic, sem, NULL), 0);
  ck_assert_int_eq(tg_spawn(&aborted, acquire_and_wait, sem, NULL), 0);
  ck_assert_int_eq(tg_spawn(&returns, acquire_and_return, sem, NULL), 0);
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(panics, &o), 0);
  ck_assert_int_eq(o.status, TG_EPANICKED);
  ck_assert_str_eq(o.message, "device 3 failed");
  ck_assert_int_eq(tg_task_join(returns, &o), 0);
  ck_assert_int_eq(o.status, 0);
  ck_assert_uint_eq(stats_of(sem).in_use, 1); /* the sleeper's */
  tg_task_abort(aborted);
  ck_assert_int_eq(tg_task_join(aborted, &o), 0);
  ck_assert_int_eq(o.status, TG_ECANCELED);
  tg_semaphore_stats st = stats_of(sem);
  ck_assert_uint_eq(st.in_use, 0);
  ck_assert_uint_eq(st.available, 5);
  ck_assert_uint_eq(st.acquired, 4);
  tg_semaphore_free(sem);
  return NULL;
}

START_TEST(test_semaphore_permits_return_when_holder_ends) { tg_test_run_virtual(ended_holders_body, NULL); }
END_TEST

/* A task may release only what it holds itself. */
static void *hold_one(void *arg) {
  ck_assert_int_eq(tg_semaphore_acquire(arg, 1), 0);
  tg_sleep(TG_SEC(1));
  ck_assert_int_eq(tg_semaphore_release(arg, 1), 0);
  return NULL;
}

static void *release_not_held_body(void *arg) {
  (void)arg;
  tg_semaphore *sem;
  ck_assert_int_eq(tg_semaphore_new(&sem, 3, NULL), 0);
  ck_assert_int_eq(tg_semaphore_release(sem, 1), TG_ENOPERM);
  ck_assert_int_eq(tg_semaphore_acquire(sem, 2), 0);
  ck_assert_int_eq(tg_semaphore_release(sem, 3), TG_ENOPERM);
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, hold_one, sem, NULL), 0);
  tg_sleep(TG_MS(1));
  ck_assert_uint_eq(stats_of(sem).in_use, 3);
  ck_assert_int_eq(tg_semaphore_release(sem, 3), TG_ENOPERM); /* one is the task's */
  ck_assert_int_eq(tg_semaphore_release(sem, 2), 0);
  ck_assert_int_eq(tg_semaphore_release(sem, 1), TG_ENOPERM);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_uint_eq(stats_of(sem).available, 3);
  ck_assert_int_eq(tg_semaphore_acquire(sem, 0), TG_EINVAL);
  tg_semaphore_free(sem);
  return NULL;
}

START_TEST(test_semaphore_release_not_held) { tg_test_run_virtual(release_not_held_body, NULL); }
END_TEST

typedef struct selector {
  tg_cancel *stop;
  tg_semaphore *sem;
  int winner;
} selector;

static void *select_stop_or_permit(void *arg) {
  selector *s = arg;
  tg_case cases[] = {tg_cancel_case(s->stop), tg_semaphore_acquire_case(s->sem, 1)};
  s->winner = tg_select(cases, 2, TG_FOREVER);
  return NULL;
}

/* An acquire case that loses a select takes no permit: neither when both
 * cases are ready at once nor when both complete while it waits. */
static void *lost_select_body(void *arg) {
  (void)arg;
  tg_semaphore *sem;
  tg_cancel *stop;
  ck_assert_int_eq(tg_semaphore_new(&sem, 1, NULL), 0);
  ck_assert_int_eq(tg_cancel_new(&stop, NULL), 0);
  ck_assert_int_eq(tg_semaphore_acquire(sem, 1), 0);
  selector s = {.stop = stop, .sem = sem, .winner = -1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, select_stop_or_permit, &s, NULL), 0);
  tg_sleep(TG_MS(1));
  ck_assert_uint_eq(stats_of(sem).waiters, 1);
  tg_cancel_fire(stop);                              /* claims the select */
  ck_assert_int_eq(tg_semaphore_release(sem, 1), 0); /* finds the claim taken */
  ck_assert_uint_eq(stats_of(sem).available, 1);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(s.winner, 0);

  select_stop_or_permit(&s); /* both ready: the first wins */
  ck_assert_int_eq(s.winner, 0);
  tg_semaphore_stats st = stats_of(sem);
  ck_assert_uint_eq(st.available, 1);
  ck_assert_uint_eq(st.waiters, 0);
  ck_assert_uint_eq(st.acquired, 1);
  ck_assert_int_eq(tg_semaphore_release(sem, 1), TG_ENOPERM);
  tg_cancel_free(stop);
  tg_semaphore_free(sem);
  return NULL;
}

START_TEST(test_semaphore_lost_select_takes_nothing) { tg_test_run_virtual(lost_select_body, NULL); }
END_TEST

/* Benchmark W6's shape on two workers, plus a plain thread that releases
 * by hand: permits in use never exceed the limit, and all come back. */
enum { STRESS_PERMITS = 5, STRESS_TASKS = 7, STRESS_ROUNDS = 20000, THREAD_ROUNDS = 2000 };

typedef struct pool {
  tg_semaphore *sem;
  atomic_int in_use;
  atomic_int peak;
} pool;

static void use_one(pool *p) {
  int now = atomic_fetch_add(&p->in_use, 1) + 1;
  int peak = atomic_load(&p->peak);
  while (now > peak && !atomic_compare_exchange_weak(&p->peak, &peak, now)) {
  }
}

static void *pool_task(void *arg) {
  pool *p = arg;
  for (int i = 0; i < STRESS_ROUNDS; i++) {
    ck_assert_int_eq(tg_semaphore_acquire(p->sem, 1), 0);
    use_one(p);
    tg_yield();
    atomic_fetch_sub(&p->in_use, 1);
    ck_assert_int_eq(tg_semaphore_release(p->sem, 1), 0);
  }
  return NULL;
}

static void *pool_thread(void *arg) {
  pool *p = arg;
  for (int i = 0; i < THREAD_ROUNDS; i++) {
    ck_assert_int_eq(tg_semaphore_acquire(p->sem, 1), 0);
    use_one(p);
    atomic_fetch_sub(&p->in_use, 1);
    ck_assert_int_eq(tg_semaphore_release(p->sem, 1), 0);
  }
  return NULL;
}

static void *stress_body(void *arg) {
  (void)arg;
  pool p = {.in_use = 0, .peak = 0};
  ck_assert_int_eq(tg_semaphore_new(&p.sem, STRESS_PERMITS, "pool"), 0);
  tg_task *ts[STRESS_TASKS];
  for (int i = 0; i < STRESS_TASKS; i++) /* pinned over both workers */
    ck_assert_int_eq(tg_spawn(&ts[i], pool_task, &p, &(tg_spawn_opts){.pin = 1, .worker = i % 2}), 0);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, pool_thread, &p), 0);
  for (int i = 0; i < STRESS_TASKS; i++) ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
  pthread_join(th, NULL);
  ck_assert_int_le(atomic_load(&p.peak), STRESS_PERMITS);
  tg_semaphore_stats st = stats_of(p.sem);
  ck_assert_uint_eq(st.available, STRESS_PERMITS);
  ck_assert_uint_eq(st.waiters, 0);
  ck_assert_uint_eq(st.acquired, STRESS_TASKS * STRESS_ROUNDS + THREAD_ROUNDS);
  tg_semaphore_free(p.sem);
  return NULL;
}

START_TEST(test_semaphore_stress_two_workers) { tg_test_run(2, 0, stress_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("semaphore");
  tg_test_add(s, "waiters_served_in_arrival_order", test_semaphore_waiters_served_in_arrival_order, 10);
  tg_test_add(s, "acquire_many_fifo", test_semaphore_acquire_many_fifo, 10);
  tg_test_add(s, "head_timeout_serves_next", test_semaphore_head_timeout_serves_next, 10);
  tg_test_add(s, "close_wakes_waiters", test_semaphore_close_wakes_waiters, 10);
  tg_test_add(s, "permits_return_when_holder_ends", test_semaphore_permits_return_when_holder_ends, 10);
  tg_test_add(s, "release_not_held", test_semaphore_release_not_held, 10);
  tg_test_add(s, "lost_select_takes_nothing", test_semaphore_lost_select_takes_nothing, 10);
  tg_test_add(s, "stress_two_workers", test_semaphore_stress_two_workers, 60);
  return tg_test_main(s);
}
