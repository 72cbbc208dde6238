/* test-notify.c - Notify: notify_waiters wakes only who waits, notify_one
 * stores one permit and wakes in arrival order, no wait that is cancelled
 * uses a notification up, and ping-pong across workers and threads. */
#include "helpers.h"

#include <pthread.h>
#include <stdbool.h>

typedef struct waiter {
  tg_notify *n;
  int64_t deadline;
  int id;
  int result;
  int *order; /* where woken waiters write their ids, in turn */
  int *woken;
} waiter;

static void *wait_notified(void *arg) {
  waiter *w = arg;
  w->result = tg_notify_wait_dl(w->n, w->deadline);
  if (w->order && w->result == 0) w->order[(*w->woken)++] = w->id;
  return NULL;
}

static tg_notify_stats stats_of(tg_notify *n) {
  tg_notify_stats st;
  tg_notify_stats_get(n, &st);
  return st;
}

/* The 12 tasks waiting when notify_waiters runs all wake; a 13th that
 * comes later finds nothing stored and waits on. */
static void *waiters_body(void *arg) {
  (void)arg;
  enum { WAITING = 12 };
  tg_notify *n;
  ck_assert_int_eq(tg_notify_new(&n, "shutdown"), 0);
  waiter ws[WAITING + 1];
  tg_task *ts[WAITING + 1];
  for (int i = 0; i < WAITING; i++) {
    ws[i] = (waiter){.n = n, .deadline = TG_FOREVER, .result = 1};
    ck_assert_int_eq(tg_spawn(&ts[i], wait_notified, &ws[i], NULL), 0);
  }
  tg_sleep(TG_MS(1));
  ck_assert_uint_eq(stats_of(n).waiters, WAITING);
  ck_assert_uint_eq(tg_notify_waiters(n), WAITING);
  for (int i = 0; i < WAITING; i++) {
    ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
    ck_assert_int_eq(ws[i].result, 0);
  }
  tg_notify_stats st = stats_of(n);
  ck_assert_int_eq(st.permit, 0);
  ck_assert_uint_eq(st.notified, WAITING);

  ws[WAITING] = (waiter){.n = n, .deadline = TG_FOREVER, .result = 1};
  ck_assert_int_eq(tg_spawn(&ts[WAITING], wait_notified, &ws[WAITING], NULL), 0);
  tg_sleep(TG_SEC(1));
  ck_assert_int_eq(ws[WAITING].result, 1); /* missed it */
  ck_assert_uint_eq(stats_of(n).waiters, 1);
  tg_notify_one(n);
  ck_assert_int_eq(tg_task_join(ts[WAITING], NULL), 0);
  ck_assert_int_eq(ws[WAITING].result, 0);
  ck_assert_uint_eq(tg_notify_waiters(n), 0); /* nobody waits: a no-op */
  ck_assert_int_eq(stats_of(n).permit, 0);
  tg_notify_free(n);
  return NULL;
}

START_TEST(test_notify_waiters_wakes_only_current) { tg_test_run_virtual(waiters_body, NULL); }
END_TEST

static void *notify_later(void *arg) {
  tg_sleep(TG_MS(300));
  tg_notify_one(arg);
  return NULL;
}

/* Two notify_one with nobody waiting store one permit: the first wait
 * returns at once, the second waits for the next notify_one. */
static void *one_permit_body(void *arg) {
  (void)arg;
  tg_notify *n;
  ck_assert_int_eq(tg_notify_new(&n, NULL), 0);
  tg_notify_one(n);
  tg_notify_one(n);
  tg_notify_stats st = stats_of(n);
  ck_assert_int_eq(st.permit, 1);
  ck_assert_ptr_null(st.name);
  int64_t start = tg_now();
  ck_assert_int_eq(tg_notify_wait(n), 0);
  ck_assert_int_eq(tg_now(), start);
  ck_assert_int_eq(stats_of(n).permit, 0);
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, notify_later, n, NULL), 0);
  ck_assert_int_eq(tg_notify_wait(n), 0);
  ck_assert_int_eq(tg_now() - start, TG_MS(300));
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  st = stats_of(n);
  ck_assert_uint_eq(st.notified, 2);
  ck_assert_int_eq(st.permit, 0);
  tg_notify_free(n);
  return NULL;
}

START_TEST(test_notify_one_stores_one_permit) { tg_test_run_virtual(one_permit_body, NULL); }
END_TEST

/* notify_one wakes the longest waiter first. */
static void *fifo_body(void *arg) {
  (void)arg;
  enum { N = 4 };
  tg_notify *n;
  ck_assert_int_eq(tg_notify_new(&n, NULL), 0);
  int order[N], woken = 0;
  waiter ws[N];
  tg_task *ts[N];
  for (int i = 0; i < N; i++) {
    ws[i] = (waiter){.n = n, .deadline = TG_FOREVER, .id = i, .order = order, .woken = &woken};
    ck_assert_int_eq(tg_spawn(&ts[i], wait_notified, &ws[i], NULL), 0);
    tg_sleep(TG_MS(1)); /* arrival order: 0, 1, 2, 3 */
  }
  tg_notify_one(n);
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(woken, 1);
  ck_assert_int_eq(order[0], 0);
  for (int i = 1; i < N; i++) tg_notify_one(n);
  for (int i = 0; i < N; i++) ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
  for (int i = 0; i < N; i++) ck_assert_int_eq(order[i], i);
  ck_assert_int_eq(stats_of(n).permit, 0);
  tg_notify_free(n);
  return NULL;
}

START_TEST(test_notify_one_wakes_in_arrival_order) { tg_test_run_virtual(fifo_body, NULL); }
END_TEST

typedef struct pair_selector {
  tg_notify *a, *b;
  int winner;
} pair_selector;

static void *select_a_or_b(void *arg) {
  pair_selector *s = arg;
  tg_case cases[] = {tg_notify_wait_case(s->a), tg_notify_wait_case(s->b)};
  s->winner = tg_select(cases, 2, TG_FOREVER);
  return NULL;
}

/* A wait case that loses a select leaves the permit stored: when both
 * cases are ready at once, and when both are notified while it waits. */
static void *lost_select_body(void *arg) {
  (void)arg;
  tg_notify *a, *b;
  ck_assert_int_eq(tg_notify_new(&a, "a"), 0);
  ck_assert_int_eq(tg_notify_new(&b, "b"), 0);
  pair_selector s = {.a = a, .b = b, .winner = -1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, select_a_or_b, &s, NULL), 0);
  tg_sleep(TG_MS(1));
  ck_assert_uint_eq(stats_of(b).waiters, 1);
  tg_notify_one(a); /* claims the select */
  tg_notify_one(b); /* finds its claim taken: stores the permit */
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(s.winner, 0);
  tg_notify_stats st = stats_of(b);
  ck_assert_int_eq(st.permit, 1);
  ck_assert_uint_eq(st.waiters, 0);
  ck_assert_uint_eq(st.notified, 0);

  tg_notify_one(a);
  select_a_or_b(&s); /* both ready: the first wins, b keeps its permit */
  ck_assert_int_eq(s.winner, 0);
  ck_assert_int_eq(stats_of(a).permit, 0);
  ck_assert_int_eq(stats_of(b).permit, 1);
  ck_assert_int_eq(tg_notify_wait_dl(b, tg_now()), 0);
  tg_notify_free(a);
  tg_notify_free(b);
  return NULL;
}

START_TEST(test_notify_lost_select_keeps_permit) { tg_test_run_virtual(lost_select_body, NULL); }
END_TEST

/* A wait that timed out or was aborted is not notified in anyone's place:
 * the notification is stored for the next wait. */
static void *cancelled_waits_body(void *arg) {
  (void)arg;
  tg_notify *n;
  ck_assert_int_eq(tg_notify_new(&n, NULL), 0);
  int64_t start = tg_now();
  ck_assert_int_eq(tg_notify_wait_dl(n, tg_deadline_in(TG_MS(500))), TG_ETIMEDOUT);
  ck_assert_int_eq(tg_now() - start, TG_MS(500));
  ck_assert_uint_eq(stats_of(n).waiters, 0);

  waiter w = {.n = n, .deadline = TG_FOREVER, .result = 1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, wait_notified, &w, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_task_abort(t);
  tg_notify_one(n); /* before the aborted task runs again */
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(w.result, TG_ECANCELED);
  tg_notify_stats st = stats_of(n);
  ck_assert_int_eq(st.permit, 1);
  ck_assert_uint_eq(st.notified, 0);
  ck_assert_int_eq(tg_notify_wait(n), 0);
  tg_notify_free(n);
  return NULL;
}

START_TEST(test_notify_cancelled_wait_keeps_notification) { tg_test_run_virtual(cancelled_waits_body, NULL); }
END_TEST

/* Two sides of a ping-pong (benchmark W7): a task on each worker, or a
 * task and a plain thread. */
typedef struct player {
  tg_notify *serve, *answer;
  int rounds;
  int first; /* serves first */
  int done;
} player;

static void *play(void *arg) {
  player *p = arg;
  for (int i = 0; i < p->rounds; i++) {
    if (p->first) tg_notify_one(p->serve);
    ck_assert_int_eq(tg_notify_wait(p->answer), 0);
    if (!p->first) tg_notify_one(p->serve);
    p->done++;
  }
  return NULL;
}

static void ping_pong(int rounds, bool other_is_thread) {
  tg_notify *a, *b;
  ck_assert_int_eq(tg_notify_new(&a, "a"), 0);
  ck_assert_int_eq(tg_notify_new(&b, "b"), 0);
  player p1 = {.serve = a, .answer = b, .rounds = rounds, .first = 1};
  player p2 = {.serve = b, .answer = a, .rounds = rounds};
  tg_task *t1, *t2 = NULL;
  pthread_t th;
  ck_assert_int_eq(tg_spawn(&t1, play, &p1, &(tg_spawn_opts){.pin = 1, .worker = 0}), 0);
  if (other_is_thread)
    ck_assert_int_eq(pthread_create(&th, NULL, play, &p2), 0);
  else
    ck_assert_int_eq(tg_spawn(&t2, play, &p2, &(tg_spawn_opts){.pin = 1, .worker = 1}), 0);
  ck_assert_int_eq(tg_task_join(t1, NULL), 0);
  if (other_is_thread)
    pthread_join(th, NULL);
  else
    ck_assert_int_eq(tg_task_join(t2, NULL), 0);
  ck_assert_int_eq(p1.done, rounds);
  ck_assert_int_eq(p2.done, rounds);
  ck_assert_int_eq(stats_of(a).permit + stats_of(b).permit, 0);
  tg_notify_free(a);
  tg_notify_free(b);
}

static void *ping_pong_workers_body(void *arg) {
  (void)arg;
  /* Each round crosses threads twice; on a loaded machine every crossing
   * can wait for the OS to run the other worker, so the count stays small
   * enough for the timeout while a lost wake still hangs the test. */
  ping_pong(2000, false);
  return NULL;
}

static void *ping_pong_thread_body(void *arg) {
  (void)arg;
  ping_pong(5000, true);
  return NULL;
}

START_TEST(test_notify_ping_pong_two_workers) { tg_test_run(2, 0, ping_pong_workers_body, NULL); }
END_TEST

START_TEST(test_notify_ping_pong_plain_thread) { tg_test_run(1, 0, ping_pong_thread_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("notify");
  tg_test_add(s, "waiters_wakes_only_current", test_notify_waiters_wakes_only_current, 10);
  tg_test_add(s, "one_stores_one_permit", test_notify_one_stores_one_permit, 10);
  tg_test_add(s, "one_wakes_in_arrival_order", test_notify_one_wakes_in_arrival_order, 10);
  tg_test_add(s, "lost_select_keeps_permit", test_notify_lost_select_keeps_permit, 10);
  tg_test_add(s, "cancelled_wait_keeps_notification", test_notify_cancelled_wait_keeps_notification, 10);
  tg_test_add(s, "ping_pong_two_workers", test_notify_ping_pong_two_workers, 120);
  tg_test_add(s, "ping_pong_plain_thread", test_notify_ping_pong_plain_thread, 120);
  return tg_test_main(s);
}
