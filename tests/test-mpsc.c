/* test-mpsc.c - the bounded mpsc channel: backpressure, order, close,
 * timeouts, select and use across workers and plain threads. */
#include "helpers.h"

#include <pthread.h>

typedef struct producer {
  tg_mpsc_tx *tx;
  int first, count;
  int sent; /* how many sends have completed */
  int last_result;
} producer;

/* The running runtime's workers: stress bodies pin their tasks over all
 * of them, so that with two every hand-over crosses threads. */
static int workers(void) {
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  return st.workers;
}
static void *produce(void *arg) {
  producer *p = arg;
  for (int i = 0; i < p->count; i++) {
    int v = p->first + i;
    p->last_result = tg_mpsc_send(p->tx, &v);
    if (p->last_result != 0) break;
    p->sent++;
  }
  tg_mpsc_tx_drop(p->tx);
  return NULL;
}

/* The reference scenario's channel: 50 sends complete at once, the 51st
 * waits until the receiver takes one. */
static void *fifty_first_body(void *arg) {
  (void)arg;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 50, .elem_size = sizeof(int)}, &tx, &rx), 0);
  producer p = {.tx = tx, .first = 0, .count = 51};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, produce, &p, NULL), 0);
  tg_sleep(TG_SEC(1)); /* virtual: every task is idle long before */
  ck_assert_int_eq(p.sent, 50);
  tg_mpsc_stats st;
  tg_mpsc_stats_get(rx, &st);
  ck_assert_uint_eq(st.len, 50);
  ck_assert_uint_eq(st.senders_waiting, 1);
  ck_assert_uint_eq(st.full_waits, 1);
  int v;
  ck_assert_int_eq(tg_mpsc_recv(rx, &v), 0);
  ck_assert_int_eq(v, 0);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(p.sent, 51);
  for (int i = 1; i <= 50; i++) {
    ck_assert_int_eq(tg_mpsc_recv(rx, &v), 0);
    ck_assert_int_eq(v, i);
  }
  ck_assert_int_eq(tg_mpsc_recv(rx, &v), TG_ECLOSED);
  tg_mpsc_rx_drop(rx);
  return NULL;
}

START_TEST(test_mpsc_51st_send_waits) { tg_test_run_virtual(fifty_first_body, NULL); }
END_TEST

/* Several producers: each one's messages arrive in order, nothing is lost,
 * and recv reports closed only after the queue is drained. */
static void *fan_in_body(void *arg) {
  (void)arg;
  /* A full channel makes producers and the consumer wake each other across threads; on a loaded machine every crossing
   * can wait for the OS to run the other worker, so the count stays small
   * enough for the timeout while a lost wake still hangs the test. */
  enum { PRODUCERS = 5, EACH = 2000 };
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 7, .elem_size = sizeof(int)}, &tx, &rx), 0);
  producer ps[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) {
    ps[i] = (producer){.tx = tg_mpsc_tx_clone(tx), .first = i * EACH, .count = EACH};
    ck_assert_int_eq(tg_spawn(NULL, produce, &ps[i], &(tg_spawn_opts){.pin = 1, .worker = i % workers()}), 0);
  }
  tg_mpsc_tx_drop(tx);
  int next[PRODUCERS] = {0}, v, total = 0, out_of_order = 0;
  while (tg_mpsc_recv(rx, &v) == 0) { /* one ck_assert per message would dominate the run */
    int who = v / EACH;
    if (v % EACH != next[who]) out_of_order++;
    next[who] = v % EACH + 1;
    total++;
  }
  ck_assert_int_eq(out_of_order, 0);
  ck_assert_int_eq(total, PRODUCERS * EACH);
  tg_mpsc_rx_drop(rx);
  return NULL;
}

START_TEST(test_mpsc_fan_in_order_one_worker) { tg_test_run(1, 0, fan_in_body, NULL); }
END_TEST

START_TEST(test_mpsc_fan_in_order_two_workers) { tg_test_run(2, 0, fan_in_body, NULL); }
END_TEST

static void *try_ops_body(void *arg) {
  (void)arg;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 2, .elem_size = sizeof(int)}, &tx, &rx), 0);
  int v = 1, out;
  ck_assert_int_eq(tg_mpsc_try_recv(rx, &out), TG_EEMPTY);
  ck_assert_int_eq(tg_mpsc_try_send(tx, &v), 0);
  ck_assert_int_eq(tg_mpsc_try_send(tx, &v), 0);
  ck_assert_int_eq(tg_mpsc_try_send(tx, &v), TG_EFULL);
  /* A timed-out send leaves the queue as it was. */
  v = 99;
  ck_assert_int_eq(tg_mpsc_send_dl(tx, &v, tg_deadline_in(TG_MS(500))), TG_ETIMEDOUT);
  ck_assert_int_eq(tg_now(), TG_MS(500));
  ck_assert_int_eq(tg_mpsc_try_recv(rx, &out), 0);
  ck_assert_int_eq(tg_mpsc_try_recv(rx, &out), 0);
  ck_assert_int_eq(out, 1);
  ck_assert_int_eq(tg_mpsc_recv_dl(rx, &out, tg_deadline_in(TG_MS(10))), TG_ETIMEDOUT);
  tg_mpsc_rx_drop(rx);
  ck_assert_int_eq(tg_mpsc_try_send(tx, &v), TG_ECLOSED);
  ck_assert_int_eq(tg_mpsc_send(tx, &v), TG_ECLOSED);
  tg_mpsc_tx_drop(tx);
  return NULL;
}

START_TEST(test_mpsc_try_and_timeouts) { tg_test_run_virtual(try_ops_body, NULL); }
END_TEST

/* Dropping the receiver fails the senders that are waiting. */
static void *rx_drop_body(void *arg) {
  (void)arg;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 1, .elem_size = sizeof(int)}, &tx, &rx), 0);
  producer p = {.tx = tx, .count = 3};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, produce, &p, NULL), 0);
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(p.sent, 1);
  tg_mpsc_rx_drop(rx);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(p.last_result, TG_ECLOSED);
  ck_assert_int_eq(p.sent, 1);
  return NULL;
}

START_TEST(test_mpsc_rx_drop_fails_waiting_senders) { tg_test_run_virtual(rx_drop_body, NULL); }
END_TEST

/* An aborted sender gives up its place and enqueues nothing. */
static void *abort_body(void *arg) {
  (void)arg;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 1, .elem_size = sizeof(int)}, &tx, &rx), 0);
  producer p = {.tx = tx, .first = 10, .count = 2};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, produce, &p, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_task_abort(t);
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(t, &o), 0);
  ck_assert_int_eq(o.status, TG_ECANCELED);
  ck_assert_int_eq(p.last_result, TG_ECANCELED);
  int v;
  ck_assert_int_eq(tg_mpsc_recv(rx, &v), 0);
  ck_assert_int_eq(v, 10);
  ck_assert_int_eq(tg_mpsc_recv(rx, &v), TG_ECLOSED);
  tg_mpsc_rx_drop(rx);
  return NULL;
}

START_TEST(test_mpsc_abort_waiting_sender) { tg_test_run_virtual(abort_body, NULL); }
END_TEST

/* A plain thread can send (blocking the thread) to a task. */
static void *thread_producer(void *arg) {
  producer *p = arg;
  return produce(p);
}

static void *thread_body(void *arg) {
  (void)arg;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 4, .elem_size = sizeof(int)}, &tx, &rx), 0);
  producer p = {.tx = tx, .count = 10000};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, thread_producer, &p), 0);
  int v, expect = 0;
  while (tg_mpsc_recv(rx, &v) == 0) ck_assert_int_eq(v, expect++);
  ck_assert_int_eq(expect, 10000);
  pthread_join(th, NULL);
  tg_mpsc_rx_drop(rx);
  return NULL;
}

START_TEST(test_mpsc_plain_thread_sender) { tg_test_run(1, 0, thread_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("mpsc");
  tg_test_add(s, "51st_send_waits", test_mpsc_51st_send_waits, 10);
  tg_test_add(s, "fan_in_order_one_worker", test_mpsc_fan_in_order_one_worker, 30);
  tg_test_add(s, "fan_in_order_two_workers", test_mpsc_fan_in_order_two_workers, 120);
  tg_test_add(s, "try_and_timeouts", test_mpsc_try_and_timeouts, 10);
  tg_test_add(s, "rx_drop_fails_waiting_senders", test_mpsc_rx_drop_fails_waiting_senders, 10);
  tg_test_add(s, "abort_waiting_sender", test_mpsc_abort_waiting_sender, 10);
  tg_test_add(s, "plain_thread_sender", test_mpsc_plain_thread_sender, 30);
  return tg_test_main(s);
}
