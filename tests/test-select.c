/* test-select.c - tg_select: priority in array order, the deadline, the
 * caller's abort, and the rule that a losing case consumes nothing. */
#include "helpers.h"

#include <stdbool.h>
#include <stdlib.h>

typedef struct chan {
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
} chan;

static chan chan_new(size_t capacity) {
  chan c;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = capacity, .elem_size = sizeof(int)}, &c.tx, &c.rx), 0);
  return c;
}

static void chan_drop(chan c) {
  tg_mpsc_tx_drop(c.tx);
  tg_mpsc_rx_drop(c.rx);
}

/* Both ready: the first case wins and the second keeps its message. */
static void *priority_body(void *arg) {
  (void)arg;
  chan a = chan_new(4), b = chan_new(4);
  int one = 1, two = 2, out_a = 0, out_b = 0;
  tg_mpsc_send(a.tx, &one);
  tg_mpsc_send(b.tx, &two);
  tg_case cases[] = {tg_mpsc_recv_case(a.rx, &out_a), tg_mpsc_recv_case(b.rx, &out_b)};
  ck_assert_int_eq(tg_select(cases, 2, TG_FOREVER), 0);
  ck_assert_int_eq(cases[0].result, 0);
  ck_assert_int_eq(out_a, 1);
  ck_assert_int_eq(out_b, 0); /* untouched */
  ck_assert_int_eq(tg_mpsc_try_recv(b.rx, &out_b), 0);
  ck_assert_int_eq(out_b, 2);
  chan_drop(a);
  chan_drop(b);
  return NULL;
}

START_TEST(test_select_first_ready_wins) { tg_test_run_virtual(priority_body, NULL); }
END_TEST

typedef struct delayed_send {
  tg_mpsc_tx *tx;
  int value;
  int64_t after;
} delayed_send;

static void *send_later(void *arg) {
  delayed_send *d = arg;
  tg_sleep(d->after);
  tg_mpsc_send(d->tx, &d->value);
  return NULL;
}

/* Waiting: the case that becomes ready first wins; the other one's
 * message, sent while the select was deciding, stays queued. */
static void *wait_body(void *arg) {
  (void)arg;
  chan a = chan_new(1), b = chan_new(1);
  delayed_send da = {a.tx, 10, TG_MS(20)}, db = {b.tx, 20, TG_MS(10)};
  tg_task *ta, *tb;
  tg_spawn(&ta, send_later, &da, NULL);
  tg_spawn(&tb, send_later, &db, NULL);
  int out_a = 0, out_b = 0;
  tg_case cases[] = {tg_mpsc_recv_case(a.rx, &out_a), tg_mpsc_recv_case(b.rx, &out_b)};
  ck_assert_int_eq(tg_select(cases, 2, TG_FOREVER), 1);
  ck_assert_int_eq(out_b, 20);
  ck_assert_int_eq(tg_now(), TG_MS(10));
  tg_task_join(ta, NULL);
  tg_task_join(tb, NULL);
  ck_assert_int_eq(out_a, 0);
  ck_assert_int_eq(tg_mpsc_try_recv(a.rx, &out_a), 0); /* the loser's message */
  ck_assert_int_eq(out_a, 10);
  chan_drop(a);
  chan_drop(b);
  return NULL;
}

START_TEST(test_select_losing_branch_keeps_message) { tg_test_run_virtual(wait_body, NULL); }
END_TEST

/* A send case that loses puts nothing in its channel. */
static void *send_case_body(void *arg) {
  (void)arg;
  chan full = chan_new(1), ready = chan_new(1);
  int x = 5, y = 6, out;
  tg_mpsc_send(full.tx, &x);
  tg_case cases[] = {tg_mpsc_send_case(full.tx, &y), tg_mpsc_recv_case(ready.rx, &out)};
  delayed_send d = {ready.tx, 7, TG_MS(1)};
  tg_task *t;
  tg_spawn(&t, send_later, &d, NULL);
  ck_assert_int_eq(tg_select(cases, 2, TG_FOREVER), 1);
  tg_task_join(t, NULL);
  tg_mpsc_stats st;
  tg_mpsc_stats_get(full.rx, &st);
  ck_assert_uint_eq(st.len, 1);
  ck_assert_uint_eq(st.senders_waiting, 0);
  chan_drop(full);
  chan_drop(ready);
  return NULL;
}

START_TEST(test_select_losing_send_sends_nothing) { tg_test_run_virtual(send_case_body, NULL); }
END_TEST

static void *deadline_body(void *arg) {
  (void)arg;
  chan a = chan_new(1);
  int out;
  tg_case cases[] = {tg_mpsc_recv_case(a.rx, &out)};
  ck_assert_int_eq(tg_select(cases, 1, tg_deadline_in(TG_MS(500))), TG_ETIMEDOUT);
  ck_assert_int_eq(tg_now(), TG_MS(500));
  ck_assert_int_eq(tg_select(cases, 0, TG_FOREVER), TG_EINVAL);
  chan_drop(a);
  return NULL;
}

START_TEST(test_select_deadline) { tg_test_run_virtual(deadline_body, NULL); }
END_TEST

/* Many rounds of racing selects over two workers: every message is
 * received exactly once, whichever branch wins. */
typedef struct racer {
  tg_mpsc_tx *tx;
  int first, count;
} racer;

static void *race_send(void *arg) {
  racer *r = arg;
  for (int i = 0; i < r->count; i++) {
    int v = r->first + i;
    tg_mpsc_send(r->tx, &v);
  }
  tg_mpsc_tx_drop(r->tx);
  return NULL;
}

static void *stress_body(void *arg) {
  (void)arg;
  enum { EACH = 30000 };
  chan a = chan_new(3), b = chan_new(3);
  racer ra = {a.tx, 0, EACH}, rb = {b.tx, EACH, EACH};
  tg_task *ta, *tb;
  tg_spawn(&ta, race_send, &ra, &(tg_spawn_opts){.pin = 1, .worker = 1});
  tg_spawn(&tb, race_send, &rb, &(tg_spawn_opts){.pin = 1, .worker = 1});
  static unsigned char seen[2 * EACH];
  int open = 2, out, got = 0;
  bool a_open = true, b_open = true;
  while (open > 0) {
    tg_case cases[2];
    int n = 0, which[2];
    if (a_open) which[n] = 0, cases[n++] = tg_mpsc_recv_case(a.rx, &out);
    if (b_open) which[n] = 1, cases[n++] = tg_mpsc_recv_case(b.rx, &out);
    int i = tg_select(cases, n, TG_FOREVER);
    ck_assert_int_ge(i, 0);
    if (cases[i].result == TG_ECLOSED) {
      if (which[i] == 0)
        a_open = false;
      else
        b_open = false;
      open--;
      continue;
    }
    ck_assert_int_eq(cases[i].result, 0);
    ck_assert_int_eq(seen[out], 0);
    seen[out] = 1;
    got++;
  }
  ck_assert_int_eq(got, 2 * EACH);
  tg_task_join(ta, NULL);
  tg_task_join(tb, NULL);
  tg_mpsc_rx_drop(a.rx);
  tg_mpsc_rx_drop(b.rx);
  return NULL;
}

START_TEST(test_select_stress_two_workers) { tg_test_run(2, 0, stress_body, NULL); }
END_TEST

/* A select over thousands of cases waits like one over two: its waiters
 * (56 bytes a case) do not go on the 64 KiB task stack, which 1,200 of
 * them overflowed. The winner is found, and every loser is disarmed. */
enum { MANY_CASES = 4096, MANY_WINNER = 4000 };

typedef struct late_notify {
  tg_notify *n;
} late_notify;

static void *notify_later(void *arg) {
  late_notify *l = arg;
  tg_sleep(TG_MS(5));
  tg_notify_one(l->n);
  return NULL;
}

static void *many_cases_body(void *arg) {
  (void)arg;
  tg_notify **ns = calloc(MANY_CASES, sizeof *ns);
  tg_case *cases = calloc(MANY_CASES, sizeof *cases);
  ck_assert(ns && cases);
  for (int i = 0; i < MANY_CASES; i++) {
    ck_assert_int_eq(tg_notify_new(&ns[i], NULL), 0);
    cases[i] = tg_notify_wait_case(ns[i]);
  }
  late_notify l = {ns[MANY_WINNER]};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, notify_later, &l, NULL), 0);
  ck_assert_int_eq(tg_select(cases, MANY_CASES, TG_FOREVER), MANY_WINNER);
  ck_assert_int_eq(cases[MANY_WINNER].result, 0);
  ck_assert_int_eq(tg_now(), TG_MS(5));
  tg_task_join(t, NULL);
  for (int i = 0; i < MANY_CASES; i++) {
    tg_notify_stats st;
    tg_notify_stats_get(ns[i], &st);
    ck_assert_uint_eq(st.waiters, 0);
    tg_notify_free(ns[i]);
  }
  /* and with a deadline, where every case loses */
  tg_notify *one;
  ck_assert_int_eq(tg_notify_new(&one, NULL), 0);
  for (int i = 0; i < MANY_CASES; i++) cases[i] = tg_notify_wait_case(one);
  ck_assert_int_eq(tg_select(cases, MANY_CASES, tg_deadline_in(TG_MS(1))), TG_ETIMEDOUT);
  tg_notify_stats st;
  tg_notify_stats_get(one, &st);
  ck_assert_uint_eq(st.waiters, 0);
  tg_notify_free(one);
  free(cases);
  free(ns);
  return NULL;
}

START_TEST(test_select_many_cases) { tg_test_run_virtual(many_cases_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("select");
  tg_test_add(s, "first_ready_wins", test_select_first_ready_wins, 10);
  tg_test_add(s, "losing_branch_keeps_message", test_select_losing_branch_keeps_message, 10);
  tg_test_add(s, "losing_send_sends_nothing", test_select_losing_send_sends_nothing, 10);
  tg_test_add(s, "deadline", test_select_deadline, 10);
  tg_test_add(s, "stress_two_workers", test_select_stress_two_workers, 60);
  tg_test_add(s, "many_cases", test_select_many_cases, 30);
  return tg_test_main(s);
}
