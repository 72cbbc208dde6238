/* test-broadcast.c - the broadcast channel: lag, subscribe, close, owned
 * values, cancellation, and use across workers and plain threads. */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* The running runtime's workers: stress bodies pin their tasks over all
 * of them, so that with two every hand-over crosses threads. */
static int workers(void) {
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  return st.workers;
}
static void make(size_t capacity, tg_broadcast_tx **tx, tg_broadcast_rx **rx) {
  tg_broadcast_opts o = {.capacity = capacity, .elem_size = sizeof(int), .name = "test"};
  ck_assert_int_eq(tg_broadcast_new(&o, tx, rx), 0);
}

static void send_range(tg_broadcast_tx *tx, int first, int count) {
  for (int v = first; v < first + count; v++) ck_assert_int_eq(tg_broadcast_send(tx, &v, NULL), 0);
}

static void expect_range(tg_broadcast_rx *rx, int first, int count) {
  for (int want = first, v; want < first + count; want++) {
    ck_assert_int_eq(tg_broadcast_try_recv(rx, &v), 0);
    ck_assert_int_eq(v, want);
  }
}

/* A receiver 20 messages past a full ring of 100 misses exactly 20, once,
 * then reads the 100 retained ones in order. */
static void *lag_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx;
  tg_broadcast_rx *slow, *fast;
  make(100, &tx, &slow);
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &fast), 0);
  send_range(tx, 0, 50);
  expect_range(fast, 0, 50);
  send_range(tx, 50, 70);
  int v = -1;
  ck_assert_int_eq(tg_broadcast_recv(slow, &v), TG_ELAGGED);
  ck_assert_int_eq(v, -1); /* untouched */
  ck_assert_uint_eq(tg_broadcast_rx_lagged(slow), 20);
  expect_range(slow, 20, 100);
  ck_assert_int_eq(tg_broadcast_try_recv(slow, &v), TG_EEMPTY);
  expect_range(fast, 50, 70); /* never lagged: it kept up */
  tg_broadcast_stats st;
  tg_broadcast_stats_get(tx, &st);
  ck_assert_str_eq(st.name, "test");
  ck_assert_uint_eq(st.len, 100);
  ck_assert_uint_eq(st.capacity, 100);
  ck_assert_uint_eq(st.sent, 120);
  ck_assert_uint_eq(st.receivers, 2);
  ck_assert_uint_eq(st.senders, 1);
  ck_assert_uint_eq(st.lag_events, 1);
  ck_assert_uint_eq(st.lagged_messages, 20);
  tg_broadcast_rx_drop(slow);
  tg_broadcast_rx_drop(fast);
  tg_broadcast_tx_drop(tx);
  return NULL;
}

START_TEST(test_broadcast_lag_exact) { tg_test_run_virtual(lag_body, NULL); }
END_TEST

/* A lag found by a waiting receiver, and a lag over several ring laps. */
typedef struct waiter_arg {
  tg_broadcast_rx *rx;
  int result, value;
} waiter_arg;

static void *recv_once(void *arg) {
  waiter_arg *a = arg;
  a->result = tg_broadcast_recv(a->rx, &a->value);
  return NULL;
}

static void *lag_laps_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx;
  tg_broadcast_rx *rx;
  make(3, &tx, &rx);
  send_range(tx, 0, 3 * 7 + 2); /* the ring went round 7 times and more */
  int v;
  ck_assert_int_eq(tg_broadcast_recv(rx, &v), TG_ELAGGED);
  ck_assert_uint_eq(tg_broadcast_rx_lagged(rx), 20);
  expect_range(rx, 20, 3);
  /* A receiver waiting at the tail is woken and reads the first message. */
  waiter_arg a = {.rx = rx};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, recv_once, &a, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_broadcast_stats st;
  tg_broadcast_stats_get(tx, &st);
  ck_assert_uint_eq(st.receivers_waiting, 1);
  send_range(tx, 23, 5); /* more than the ring before it runs: lagged */
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(a.result, TG_ELAGGED);
  ck_assert_uint_eq(tg_broadcast_rx_lagged(rx), 2);
  expect_range(rx, 25, 3);
  tg_broadcast_rx_drop(rx);
  tg_broadcast_tx_drop(tx);
  return NULL;
}

START_TEST(test_broadcast_lag_while_waiting) { tg_test_run_virtual(lag_laps_body, NULL); }
END_TEST

/* A receiver sees only what is sent after it subscribed, whenever that is. */
static void *subscribe_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx;
  tg_broadcast_rx *first, *late, *later;
  make(4, &tx, &first);
  send_range(tx, 0, 3);
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &late), 0);
  int v;
  ck_assert_int_eq(tg_broadcast_try_recv(late, &v), TG_EEMPTY);
  send_range(tx, 3, 6); /* the ring is full and has wrapped */
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &later), 0);
  ck_assert_int_eq(tg_broadcast_try_recv(later, &v), TG_EEMPTY);
  send_range(tx, 9, 2);
  expect_range(later, 9, 2);
  ck_assert_int_eq(tg_broadcast_recv(late, &v), TG_ELAGGED);
  ck_assert_uint_eq(tg_broadcast_rx_lagged(late), 4);
  expect_range(late, 7, 4);
  ck_assert_int_eq(tg_broadcast_recv(first, &v), TG_ELAGGED);
  ck_assert_uint_eq(tg_broadcast_rx_lagged(first), 7);
  expect_range(first, 7, 4);
  tg_broadcast_rx_drop(first);
  tg_broadcast_rx_drop(late);
  tg_broadcast_rx_drop(later);
  tg_broadcast_tx_drop(tx);
  return NULL;
}

START_TEST(test_broadcast_subscribe_sees_later_only) { tg_test_run_virtual(subscribe_body, NULL); }
END_TEST

/* Receivers drain what is left after the last sender goes, then get
 * TG_ECLOSED; a waiting receiver is woken to get it; a send with no
 * receiver fails and stores nothing. */
static void *close_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx, *tx2;
  tg_broadcast_rx *rx, *idle;
  make(8, &tx, &rx);
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &idle), 0);
  tx2 = tg_broadcast_tx_clone(tx);
  int v = 1;
  size_t n = 0;
  ck_assert_int_eq(tg_broadcast_send(tx, &v, &n), 0);
  ck_assert_uint_eq(n, 2);
  tg_broadcast_tx_drop(tx);
  v = 2;
  ck_assert_int_eq(tg_broadcast_send(tx2, &v, NULL), 0);
  expect_range(rx, 1, 2);
  waiter_arg a = {.rx = rx};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, recv_once, &a, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_broadcast_tx_drop(tx2);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(a.result, TG_ECLOSED);
  ck_assert_int_eq(tg_broadcast_recv(rx, &v), TG_ECLOSED);
  ck_assert_int_eq(tg_broadcast_try_recv(rx, &v), TG_ECLOSED);
  /* The receiver that read nothing still gets both, then closed. */
  expect_range(idle, 1, 2);
  ck_assert_int_eq(tg_broadcast_recv_dl(idle, &v, tg_deadline_in(TG_SEC(1))), TG_ECLOSED);
  tg_broadcast_rx_drop(rx);
  tg_broadcast_rx_drop(idle);
  return NULL;
}

START_TEST(test_broadcast_close_drains_then_closed) { tg_test_run_virtual(close_body, NULL); }
END_TEST

static void *no_receiver_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx;
  tg_broadcast_rx *rx;
  make(2, &tx, &rx);
  tg_broadcast_rx_drop(rx);
  int v = 5;
  size_t n = 99;
  ck_assert_int_eq(tg_broadcast_send(tx, &v, &n), TG_ECLOSED);
  ck_assert_uint_eq(n, 0);
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &rx), 0);
  ck_assert_int_eq(tg_broadcast_try_recv(rx, &v), TG_EEMPTY); /* nothing was stored */
  tg_broadcast_stats st;
  tg_broadcast_rx_stats_get(rx, &st);
  ck_assert_uint_eq(st.sent, 0);
  ck_assert_uint_eq(st.len, 0);
  tg_broadcast_tx_drop(tx);
  ck_assert_int_eq(tg_broadcast_try_recv(rx, &v), TG_ECLOSED);
  tg_broadcast_rx_drop(rx);
  /* Bad options fail without creating anything. */
  ck_assert_int_eq(tg_broadcast_new(&(tg_broadcast_opts){.capacity = 0, .elem_size = 4}, &tx, &rx), TG_EINVAL);
  ck_assert_int_eq(tg_broadcast_new(&(tg_broadcast_opts){.capacity = 4, .elem_size = 0}, &tx, &rx), TG_EINVAL);
  return NULL;
}

START_TEST(test_broadcast_send_without_receiver) { tg_test_run_virtual(no_receiver_body, NULL); }
END_TEST

/* ------------------------------------------------------------ owned values */

/* Reference-counted messages: every copy made (one per send, one per
 * clone) is dropped exactly once, whether a receiver read it, the ring
 * overwrote it or the channel was freed holding it. */
typedef struct counted {
  atomic_int refs;
  int value;
} counted;

static atomic_int created, clones, drops, freed;

static counted *counted_new(int value) {
  counted *c = malloc(sizeof *c);
  ck_assert_ptr_nonnull(c);
  atomic_init(&c->refs, 1);
  c->value = value;
  created++;
  return c;
}

static void counted_clone(void *elem) {
  atomic_fetch_add(&(*(counted **)elem)->refs, 1);
  clones++;
}

static void counted_drop(void *elem) {
  counted *c = *(counted **)elem;
  drops++;
  if (atomic_fetch_sub(&c->refs, 1) == 1) {
    free(c);
    freed++;
  }
}

static void *refcount_body(void *arg) {
  (void)arg;
  tg_broadcast_opts o = {.capacity = 4, .elem_size = sizeof(counted *), .clone = counted_clone, .drop = counted_drop};
  tg_broadcast_tx *tx;
  tg_broadcast_rx *reader, *lagger, *idle;
  ck_assert_int_eq(tg_broadcast_new(&o, &tx, &reader), 0);
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &lagger), 0);
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &idle), 0);
  counted *c;
  for (int i = 0; i < 10; i++) {
    c = counted_new(i);
    ck_assert_int_eq(tg_broadcast_send(tx, &c, NULL), 0);
    ck_assert_int_eq(tg_broadcast_try_recv(reader, &c), 0); /* an own copy */
    ck_assert_int_eq(c->value, i);
    counted_drop(&c);
  }
  ck_assert_int_eq(tg_broadcast_recv(lagger, &c), TG_ELAGGED);
  ck_assert_int_eq(tg_broadcast_recv(lagger, &c), 0);
  ck_assert_int_eq(c->value, 6);
  ck_assert_int_eq(atomic_load(&c->refs), 2); /* the ring's and ours */
  counted_drop(&c);
  ck_assert_int_eq(freed, 6); /* the overwritten ones */
  /* A failed send leaves the value with its caller. */
  tg_broadcast_rx_drop(reader);
  tg_broadcast_rx_drop(lagger);
  tg_broadcast_rx_drop(idle);
  c = counted_new(99);
  ck_assert_int_eq(tg_broadcast_send(tx, &c, NULL), TG_ECLOSED);
  ck_assert_int_eq(atomic_load(&c->refs), 1);
  counted_drop(&c);
  tg_broadcast_tx_drop(tx); /* frees the ring and its 4 copies */
  ck_assert_int_eq(freed, created);
  ck_assert_int_eq(created + clones, drops);
  return NULL;
}

START_TEST(test_broadcast_refcount_balanced) { tg_test_run_virtual(refcount_body, NULL); }
END_TEST

/* ------------------------------------------------------------ cancellation */

/* A recv that loses a select, at once or while waiting, leaves its
 * message for the next recv. */
typedef struct select_arg {
  tg_broadcast_rx *rx1, *rx2;
  int v1, v2, winner;
} select_arg;

static void *select_both(void *arg) {
  select_arg *a = arg;
  tg_case cases[2] = {tg_broadcast_recv_case(a->rx1, &a->v1), tg_broadcast_recv_case(a->rx2, &a->v2)};
  a->winner = tg_select(cases, 2, TG_FOREVER);
  ck_assert_int_eq(cases[a->winner].result, 0);
  return NULL;
}

static void *select_loser_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx1, *tx2;
  tg_broadcast_rx *rx1, *rx2;
  make(4, &tx1, &rx1);
  make(4, &tx2, &rx2);
  send_range(tx1, 10, 1);
  send_range(tx2, 20, 1);
  int v1 = 0, v2 = 0;
  tg_case cases[2] = {tg_broadcast_recv_case(rx1, &v1), tg_broadcast_recv_case(rx2, &v2)};
  ck_assert_int_eq(tg_select(cases, 2, TG_FOREVER), 0);
  ck_assert_int_eq(cases[0].result, 0);
  ck_assert_int_eq(v1, 10);
  ck_assert_int_eq(v2, 0);
  expect_range(rx2, 20, 1);
  /* Both become ready while the select waits: only the winner reads. */
  select_arg a = {.rx1 = rx1, .rx2 = rx2};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, select_both, &a, NULL), 0);
  tg_sleep(TG_MS(1));
  send_range(tx2, 21, 1); /* claims the waiting select for case 1 */
  send_range(tx1, 11, 1);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(a.winner, 1);
  ck_assert_int_eq(a.v2, 21);
  ck_assert_int_eq(a.v1, 0);
  expect_range(rx1, 11, 1);
  /* Neither a timeout nor an abort moves the cursor. */
  ck_assert_int_eq(tg_broadcast_recv_dl(rx1, &v1, tg_deadline_in(TG_MS(5))), TG_ETIMEDOUT);
  waiter_arg w = {.rx = rx1};
  ck_assert_int_eq(tg_spawn(&t, recv_once, &w, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_task_abort(t);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(w.result, TG_ECANCELED);
  send_range(tx1, 12, 1);
  expect_range(rx1, 12, 1);
  tg_broadcast_rx_drop(rx1);
  tg_broadcast_rx_drop(rx2);
  tg_broadcast_tx_drop(tx1);
  tg_broadcast_tx_drop(tx2);
  return NULL;
}

START_TEST(test_broadcast_select_loser_keeps_message) { tg_test_run_virtual(select_loser_body, NULL); }
END_TEST

/* ------------------------------------------------------------ threads */

enum { STRESS_N = 100000, STRESS_RECEIVERS = 4 };

/* Follows a channel of 0, 1, 2, ... until it closes: every message is
 * either delivered in order or counted as lagged, never both, never lost.
 * The hot loops count faults instead of asserting, because each passed
 * Check assertion writes to a pipe in fork mode. */
typedef struct follower {
  tg_broadcast_rx *rx;
  uint64_t delivered, lagged, expect;
  int faults;
} follower;

static void *follow(void *arg) {
  follower *f = arg;
  int v, r;
  while ((r = tg_broadcast_recv(f->rx, &v)) != TG_ECLOSED) {
    if (r == TG_ELAGGED && tg_broadcast_rx_lagged(f->rx) > 0) {
      f->lagged += tg_broadcast_rx_lagged(f->rx);
      f->expect += tg_broadcast_rx_lagged(f->rx);
    } else if (r == 0 && (uint64_t)v == f->expect) {
      f->expect++;
      f->delivered++;
    } else {
      f->faults++;
      break;
    }
  }
  tg_broadcast_rx_drop(f->rx);
  return NULL;
}

static void check_follower(const follower *f) {
  ck_assert_int_eq(f->faults, 0);
  ck_assert_uint_eq(f->expect, STRESS_N);
  ck_assert_uint_eq(f->delivered + f->lagged, STRESS_N);
}

/* Sends 0 .. STRESS_N-1, letting the other tasks of its worker run now
 * and then, as the W3 benchmark does. */
static void *publish(void *arg) {
  tg_broadcast_tx *tx = arg;
  int faults = 0;
  for (int v = 0; v < STRESS_N; v++) {
    faults += tg_broadcast_send(tx, &v, NULL) != 0;
    if (v % 64 == 63) tg_yield();
  }
  tg_broadcast_tx_drop(tx);
  ck_assert_int_eq(faults, 0);
  return NULL;
}

static void *fan_out_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx;
  tg_broadcast_rx *rx;
  make(100, &tx, &rx);
  follower fs[STRESS_RECEIVERS] = {{.rx = rx}};
  for (int i = 1; i < STRESS_RECEIVERS; i++) ck_assert_int_eq(tg_broadcast_subscribe(tx, &fs[i].rx), 0);
  tg_task *ts[STRESS_RECEIVERS + 1];
  /* pinned over both workers: every send crosses threads */
  for (int i = 0; i < STRESS_RECEIVERS; i++)
    ck_assert_int_eq(tg_spawn(&ts[i], follow, &fs[i], &(tg_spawn_opts){.pin = 1, .worker = i % workers()}), 0);
  tg_broadcast_stats st;
  tg_broadcast_stats_get(tx, &st); /* before the sender may drop it */
  ck_assert_uint_eq(st.receivers, STRESS_RECEIVERS);
  ck_assert_int_eq(tg_spawn(&ts[STRESS_RECEIVERS], publish, tx, &(tg_spawn_opts){.pin = 1, .worker = workers() - 1}),
                   0);
  for (int i = 0; i <= STRESS_RECEIVERS; i++) ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
  for (int i = 0; i < STRESS_RECEIVERS; i++) check_follower(&fs[i]);
  return NULL;
}

START_TEST(test_broadcast_fan_out_two_workers) { tg_test_run(2, 0, fan_out_body, NULL); }
END_TEST

START_TEST(test_broadcast_fan_out_one_worker) { tg_test_run(1, 0, fan_out_body, NULL); }
END_TEST

/* Plain threads receive, blocking, from a task's sends. */
static void *thread_follow(void *arg) { return follow(arg); }

static void *thread_body(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx;
  tg_broadcast_rx *rx;
  make(16, &tx, &rx);
  follower fs[2] = {{.rx = rx}};
  ck_assert_int_eq(tg_broadcast_subscribe(tx, &fs[1].rx), 0);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, thread_follow, &fs[i]), 0);
  publish(tx);
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    check_follower(&fs[i]);
  }
  return NULL;
}

START_TEST(test_broadcast_plain_thread_receivers) { tg_test_run(1, 0, thread_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("broadcast");
  tg_test_add(s, "lag_exact", test_broadcast_lag_exact, 10);
  tg_test_add(s, "lag_while_waiting", test_broadcast_lag_while_waiting, 10);
  tg_test_add(s, "subscribe_sees_later_only", test_broadcast_subscribe_sees_later_only, 10);
  tg_test_add(s, "close_drains_then_closed", test_broadcast_close_drains_then_closed, 10);
  tg_test_add(s, "send_without_receiver", test_broadcast_send_without_receiver, 10);
  tg_test_add(s, "refcount_balanced", test_broadcast_refcount_balanced, 10);
  tg_test_add(s, "select_loser_keeps_message", test_broadcast_select_loser_keeps_message, 10);
  tg_test_add(s, "fan_out_one_worker", test_broadcast_fan_out_one_worker, 30);
  tg_test_add(s, "fan_out_two_workers", test_broadcast_fan_out_two_workers, 30);
  tg_test_add(s, "plain_thread_receivers", test_broadcast_plain_thread_receivers, 30);
  return tg_test_main(s);
}
