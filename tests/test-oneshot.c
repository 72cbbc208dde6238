/* test-oneshot.c - the one-value channel: the three endings a receiver
 * tells apart, waiting again after a timeout, sends nobody awaits, cancel
 * safety, and request/response across workers and plain threads. */
#include "helpers.h"

#include <pthread.h>

typedef struct receiver {
  tg_oneshot_rx *rx;
  int value;
  int result;
} receiver;

static void *receive(void *arg) {
  receiver *r = arg;
  r->result = tg_oneshot_recv(r->rx, &r->value);
  return NULL;
}

/* A sender dropped without sending is reported as TG_ECLOSED to the
 * waiting receiver, and so is every later recv. */
static void *tx_dropped_body(void *arg) {
  (void)arg;
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  ck_assert_int_eq(tg_oneshot_new(sizeof(int), &tx, &rx), 0);
  receiver r = {.rx = rx, .result = 1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, receive, &r, NULL), 0);
  tg_sleep(TG_MS(1));
  ck_assert_int_eq(r.result, 1); /* still waiting */
  tg_oneshot_tx_drop(tx);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(r.result, TG_ECLOSED);
  int v;
  ck_assert_int_eq(tg_oneshot_recv(rx, &v), TG_ECLOSED);
  ck_assert_int_eq(tg_oneshot_try_recv(rx, &v), TG_ECLOSED);
  tg_oneshot_rx_drop(rx);
  return NULL;
}

START_TEST(test_oneshot_tx_dropped_is_closed) { tg_test_run_virtual(tx_dropped_body, NULL); }
END_TEST

typedef struct responder {
  tg_oneshot_tx *tx;
  int64_t delay;
  int value;
  int result;
} responder;

static void *respond_late(void *arg) {
  responder *p = arg;
  tg_sleep(p->delay);
  ck_assert_int_eq(tg_oneshot_tx_closed(p->tx), 0);
  p->result = tg_oneshot_send(p->tx, &p->value);
  return NULL;
}

/* No answer within 500 ms: TG_ETIMEDOUT after exactly 500 ms of virtual
 * time; the answer that comes at 700 ms is still there for a second wait. */
static void *timeout_body(void *arg) {
  (void)arg;
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  ck_assert_int_eq(tg_oneshot_new(sizeof(int), &tx, &rx), 0);
  responder p = {.tx = tx, .delay = TG_MS(700), .value = 42, .result = 1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, respond_late, &p, NULL), 0);
  int64_t start = tg_now();
  int v = -1;
  ck_assert_int_eq(tg_oneshot_recv_dl(rx, &v, tg_deadline_in(TG_MS(500))), TG_ETIMEDOUT);
  ck_assert_int_eq(tg_now() - start, TG_MS(500));
  ck_assert_int_eq(v, -1);
  ck_assert_int_eq(tg_oneshot_try_recv(rx, &v), TG_EEMPTY);
  ck_assert_int_eq(tg_oneshot_recv(rx, &v), 0);
  ck_assert_int_eq(v, 42);
  ck_assert_int_eq(tg_now() - start, TG_MS(700));
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(p.result, 0);
  ck_assert_int_eq(tg_oneshot_recv(rx, &v), TG_ECLOSED); /* the one value is gone */
  tg_oneshot_rx_drop(rx);
  return NULL;
}

START_TEST(test_oneshot_timeout_then_late_answer) { tg_test_run_virtual(timeout_body, NULL); }
END_TEST

/* Once the receiver is gone the responder can tell, and a send fails
 * (consuming the sender, which frees the channel). */
static void *rx_dropped_body(void *arg) {
  (void)arg;
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  ck_assert_int_eq(tg_oneshot_new(sizeof(int), &tx, &rx), 0);
  ck_assert_int_eq(tg_oneshot_tx_closed(tx), 0);
  tg_oneshot_rx_drop(rx);
  ck_assert_int_ne(tg_oneshot_tx_closed(tx), 0);
  int v = 7;
  ck_assert_int_eq(tg_oneshot_send(tx, &v), TG_ECLOSED);
  ck_assert_int_eq(v, 7);
  return NULL;
}

START_TEST(test_oneshot_send_after_rx_drop_fails) { tg_test_run_virtual(rx_dropped_body, NULL); }
END_TEST

/* A value sent before anyone waits is taken at once; a value nobody
 * receives is freed with the channel. */
static void *sent_first_body(void *arg) {
  (void)arg;
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  ck_assert_int_eq(tg_oneshot_new(sizeof(double), &tx, &rx), 0);
  double d = 0;
  ck_assert_int_eq(tg_oneshot_try_recv(rx, &d), TG_EEMPTY);
  double sent = 2.5;
  ck_assert_int_eq(tg_oneshot_send(tx, &sent), 0);
  int64_t start = tg_now();
  ck_assert_int_eq(tg_oneshot_recv(rx, &d), 0);
  ck_assert(d == 2.5);
  ck_assert_int_eq(tg_now(), start);
  ck_assert_int_eq(tg_oneshot_try_recv(rx, &d), TG_ECLOSED);
  tg_oneshot_rx_drop(rx);

  ck_assert_int_eq(tg_oneshot_new(sizeof(double), &tx, &rx), 0);
  ck_assert_int_eq(tg_oneshot_send(tx, &sent), 0);
  tg_oneshot_rx_drop(rx); /* never received: ASan sees it freed */
  return NULL;
}

START_TEST(test_oneshot_sent_before_recv) { tg_test_run_virtual(sent_first_body, NULL); }
END_TEST

typedef struct selector {
  tg_cancel *stop;
  tg_oneshot_rx *rx;
  int winner;
  int value;
} selector;

static void *select_stop_or_value(void *arg) {
  selector *s = arg;
  tg_case cases[] = {tg_cancel_case(s->stop), tg_oneshot_recv_case(s->rx, &s->value)};
  s->winner = tg_select(cases, 2, TG_FOREVER);
  return NULL;
}

/* A recv case that loses a select leaves the value: both when both cases
 * are ready at once and when both complete while the select waits. */
static void *lost_select_body(void *arg) {
  (void)arg;
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  ck_assert_int_eq(tg_oneshot_new(sizeof(int), &tx, &rx), 0);
  tg_cancel *stop;
  ck_assert_int_eq(tg_cancel_new(&stop, "stop"), 0);
  selector s = {.stop = stop, .rx = rx, .winner = -1, .value = -1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, select_stop_or_value, &s, NULL), 0);
  tg_sleep(TG_MS(1));
  /* The task is parked; both its cases become ready before it runs. */
  tg_cancel_fire(stop);
  int v = 5;
  ck_assert_int_eq(tg_oneshot_send(tx, &v), 0);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(s.winner, 0);
  ck_assert_int_eq(s.value, -1);

  select_stop_or_value(&s); /* both ready now: the first case wins again */
  ck_assert_int_eq(s.winner, 0);
  ck_assert_int_eq(s.value, -1);

  int out = 0;
  ck_assert_int_eq(tg_oneshot_try_recv(rx, &out), 0);
  ck_assert_int_eq(out, 5);
  tg_oneshot_rx_drop(rx);
  tg_cancel_free(stop);
  return NULL;
}

START_TEST(test_oneshot_lost_select_keeps_value) { tg_test_run_virtual(lost_select_body, NULL); }
END_TEST

/* An aborted receiver takes nothing; whoever receives next gets the value. */
static void *abort_body(void *arg) {
  (void)arg;
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  ck_assert_int_eq(tg_oneshot_new(sizeof(int), &tx, &rx), 0);
  receiver r = {.rx = rx, .result = 1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, receive, &r, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_task_abort(t);
  int v = 9;
  ck_assert_int_eq(tg_oneshot_send(tx, &v), 0); /* before the aborted task runs */
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(t, &o), 0);
  ck_assert_int_eq(o.status, TG_ECANCELED);
  ck_assert_int_eq(r.result, TG_ECANCELED);
  int out = 0;
  ck_assert_int_eq(tg_oneshot_recv(rx, &out), 0);
  ck_assert_int_eq(out, 9);
  tg_oneshot_rx_drop(rx);
  return NULL;
}

START_TEST(test_oneshot_aborted_recv_keeps_value) { tg_test_run_virtual(abort_body, NULL); }
END_TEST

START_TEST(test_oneshot_new_rejects_zero_size) {
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  ck_assert_int_eq(tg_oneshot_new(0, &tx, &rx), TG_EINVAL);
}
END_TEST

/* Request/response as the health checker uses it: each request carries a
 * fresh oneshot sender to a responder on the other worker. */
typedef struct request {
  tg_oneshot_tx *reply;
  int value;
} request;

static void *serve_requests(void *arg) {
  tg_mpsc_rx *rx = arg;
  request req;
  while (tg_mpsc_recv(rx, &req) == 0) {
    int answer = req.value + 1;
    if (req.value % 3 == 0)
      tg_oneshot_tx_drop(req.reply); /* some go unanswered */
    else
      ck_assert_int_eq(tg_oneshot_send(req.reply, &answer), 0);
  }
  tg_mpsc_rx_drop(rx);
  return NULL;
}

static void *rpc_body(void *arg) {
  (void)arg;
  /* Each round crosses threads twice; on a loaded machine every crossing
   * can wait for the OS to run the other worker, so the count stays small
   * enough for the timeout while a lost wake still hangs the test. */
  enum { REQUESTS = 2000 };
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 5, .elem_size = sizeof(request)}, &tx, &rx), 0);
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, serve_requests, rx, &(tg_spawn_opts){.pin = 1, .worker = 1}), 0);
  int answered = 0, dropped = 0;
  for (int i = 0; i < REQUESTS; i++) {
    tg_oneshot_rx *reply;
    request req = {.value = i};
    ck_assert_int_eq(tg_oneshot_new(sizeof(int), &req.reply, &reply), 0);
    ck_assert_int_eq(tg_mpsc_send(tx, &req), 0);
    int v, r = tg_oneshot_recv(reply, &v);
    if (r == 0) {
      ck_assert_int_eq(v, i + 1);
      answered++;
    } else {
      ck_assert_int_eq(r, TG_ECLOSED);
      dropped++;
    }
    tg_oneshot_rx_drop(reply);
  }
  tg_mpsc_tx_drop(tx);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(dropped, (REQUESTS + 2) / 3);
  ck_assert_int_eq(answered + dropped, REQUESTS);
  return NULL;
}

START_TEST(test_oneshot_rpc_two_workers) { tg_test_run(2, 0, rpc_body, NULL); }
END_TEST

/* A plain thread waits (blocking the thread) for a task's value and
 * answers the task through a second oneshot. */
typedef struct echo {
  tg_oneshot_rx *in;
  tg_oneshot_tx *out;
} echo;

static void *thread_echo(void *arg) {
  echo *e = arg;
  int v;
  ck_assert_int_eq(tg_oneshot_recv(e->in, &v), 0);
  tg_oneshot_rx_drop(e->in);
  v *= 2;
  ck_assert_int_eq(tg_oneshot_send(e->out, &v), 0);
  return NULL;
}

static void *thread_body(void *arg) {
  (void)arg;
  tg_oneshot_tx *to_thread;
  tg_oneshot_rx *rx;
  echo e;
  ck_assert_int_eq(tg_oneshot_new(sizeof(int), &to_thread, &e.in), 0);
  ck_assert_int_eq(tg_oneshot_new(sizeof(int), &e.out, &rx), 0);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, thread_echo, &e), 0);
  /* Gives the thread time to block in its recv; the outcome is the same
   * if it has not, only the path differs. */
  tg_sleep(TG_MS(20));
  int v = 21;
  ck_assert_int_eq(tg_oneshot_send(to_thread, &v), 0);
  ck_assert_int_eq(tg_oneshot_recv(rx, &v), 0);
  ck_assert_int_eq(v, 42);
  tg_oneshot_rx_drop(rx);
  pthread_join(th, NULL);
  return NULL;
}

START_TEST(test_oneshot_plain_thread) { tg_test_run(1, 0, thread_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("oneshot");
  tg_test_add(s, "tx_dropped_is_closed", test_oneshot_tx_dropped_is_closed, 10);
  tg_test_add(s, "timeout_then_late_answer", test_oneshot_timeout_then_late_answer, 10);
  tg_test_add(s, "send_after_rx_drop_fails", test_oneshot_send_after_rx_drop_fails, 10);
  tg_test_add(s, "sent_before_recv", test_oneshot_sent_before_recv, 10);
  tg_test_add(s, "lost_select_keeps_value", test_oneshot_lost_select_keeps_value, 10);
  tg_test_add(s, "aborted_recv_keeps_value", test_oneshot_aborted_recv_keeps_value, 10);
  tg_test_add(s, "new_rejects_zero_size", test_oneshot_new_rejects_zero_size, 10);
  tg_test_add(s, "rpc_two_workers", test_oneshot_rpc_two_workers, 120);
  tg_test_add(s, "plain_thread", test_oneshot_plain_thread, 30);
  return tg_test_main(s);
}
