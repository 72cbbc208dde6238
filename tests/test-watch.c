/* test-watch.c - the watch channel: latest value only, one change per
 * version, close, borrowing, owned values, cancellation, and use across
 * workers and plain threads. */
#include "helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static void make(int initial, tg_watch_tx **tx, tg_watch_rx **rx) {
  tg_watch_opts o = {.elem_size = sizeof(int), .name = "test"};
  ck_assert_int_eq(tg_watch_new(&o, &initial, tx, rx), 0);
}

static void send(tg_watch_tx *tx, int v) { ck_assert_int_eq(tg_watch_send(tx, &v), 0); }

static int get(tg_watch_rx *rx) {
  int v;
  tg_watch_get(rx, &v);
  return v;
}

/* A reader busy while 1..1000 are sent wakes once and reads 1000. */
typedef struct reader {
  tg_watch_rx *rx;
  int wakes, last, result;
} reader;

static void *busy_reader(void *arg) {
  reader *r = arg;
  tg_sleep(TG_SEC(1)); /* busy while the sends happen */
  while ((r->result = tg_watch_changed(r->rx)) == 0) {
    r->wakes++;
    r->last = get(r->rx);
  }
  return NULL;
}

static void *latest_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx;
  make(0, &tx, &rx);
  reader r = {.rx = rx};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, busy_reader, &r, NULL), 0);
  for (int v = 1; v <= 1000; v++) send(tx, v);
  tg_sleep(TG_SEC(2)); /* the reader has read and waits again */
  ck_assert_int_eq(r.wakes, 1);
  ck_assert_int_eq(r.last, 1000);
  tg_watch_stats st;
  tg_watch_stats_get(tx, &st);
  ck_assert_str_eq(st.name, "test");
  ck_assert_uint_eq(st.version, 1000);
  ck_assert_uint_eq(st.receivers, 1);
  ck_assert_uint_eq(st.receivers_waiting, 1);
  ck_assert_int_eq(st.closed, 0);
  tg_watch_tx_drop(tx);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(r.result, TG_ECLOSED);
  ck_assert_int_eq(r.wakes, 1);
  tg_watch_rx_drop(rx);
  return NULL;
}

START_TEST(test_watch_busy_reader_sees_latest) { tg_test_run_virtual(latest_body, NULL); }
END_TEST

/* changed() returns once per new version, however many sends made it. */
static void *once_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx;
  make(7, &tx, &rx);
  ck_assert_int_eq(tg_watch_has_changed(rx), 0);
  ck_assert_int_eq(tg_watch_changed_dl(rx, tg_deadline_in(TG_MS(10))), TG_ETIMEDOUT);
  send(tx, 8);
  ck_assert_int_ne(tg_watch_has_changed(rx), 0);
  ck_assert_int_ne(tg_watch_has_changed(rx), 0); /* asking marks nothing */
  ck_assert_int_eq(tg_watch_changed(rx), 0);
  ck_assert_int_eq(tg_watch_has_changed(rx), 0);
  ck_assert_int_eq(tg_watch_changed_dl(rx, tg_deadline_in(TG_MS(10))), TG_ETIMEDOUT);
  send(tx, 9);
  send(tx, 9); /* the same value is still a new version */
  ck_assert_int_eq(tg_watch_changed(rx), 0);
  ck_assert_int_eq(tg_watch_changed_dl(rx, tg_deadline_in(TG_MS(10))), TG_ETIMEDOUT);
  ck_assert_int_eq(get(rx), 9);
  /* A waiting receiver is woken by each send. */
  reader r = {.rx = rx};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, busy_reader, &r, NULL), 0);
  tg_sleep(TG_SEC(1) + TG_MS(1));
  for (int v = 10; v < 15; v++) {
    send(tx, v);
    tg_sleep(TG_MS(1));
    ck_assert_int_eq(r.wakes, v - 9);
    ck_assert_int_eq(r.last, v);
  }
  tg_watch_tx_drop(tx);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(r.wakes, 5);
  tg_watch_rx_drop(rx);
  return NULL;
}

START_TEST(test_watch_changed_once_per_version) { tg_test_run_virtual(once_body, NULL); }
END_TEST

/* After the sender goes: an unseen version is still reported, then
 * TG_ECLOSED; the value stays readable; a waiting receiver is woken. */
static void *closed_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx, *waiting, *fresh;
  make(1, &tx, &rx);
  ck_assert_int_eq(tg_watch_subscribe(tx, &waiting), 0);
  reader r = {.rx = waiting};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, busy_reader, &r, NULL), 0);
  tg_sleep(TG_SEC(2));
  send(tx, 2);
  ck_assert_int_eq(tg_watch_subscribe(tx, &fresh), 0); /* has seen version 1 */
  tg_watch_tx_drop(tx);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(r.wakes, 1);
  ck_assert_int_eq(r.last, 2);
  ck_assert_int_eq(r.result, TG_ECLOSED);
  ck_assert_int_eq(tg_watch_changed(rx), 0);
  ck_assert_int_eq(tg_watch_changed(rx), TG_ECLOSED);
  ck_assert_int_eq(tg_watch_changed_dl(rx, tg_deadline_in(TG_SEC(1))), TG_ECLOSED);
  ck_assert_int_eq(tg_watch_changed(fresh), TG_ECLOSED);
  ck_assert_int_eq(get(fresh), 2);
  tg_watch_stats st;
  tg_watch_rx_stats_get(rx, &st);
  ck_assert_int_eq(st.closed, 1);
  ck_assert_uint_eq(st.receivers, 3);
  tg_watch_rx_drop(rx);
  tg_watch_rx_drop(waiting);
  tg_watch_rx_drop(fresh);
  return NULL;
}

START_TEST(test_watch_closed_after_last_version) { tg_test_run_virtual(closed_body, NULL); }
END_TEST

/* Borrowing reads in place; the _and_update forms mark the version seen;
 * subscribe and rx_clone start from the right version. */
typedef struct pair {
  int a, b;
} pair;

static void *borrow_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx, *sub, *copy;
  ck_assert_int_eq(tg_watch_new(&(tg_watch_opts){.elem_size = sizeof(pair)}, &(pair){1, 2}, &tx, &rx), 0);
  const pair *p = tg_watch_borrow(rx);
  ck_assert_int_eq(p->a + p->b, 3);
  tg_watch_borrow_end(rx);
  ck_assert_int_eq(tg_watch_send(tx, &(pair){3, 4}), 0);
  ck_assert_int_eq(tg_watch_subscribe(tx, &sub), 0);
  ck_assert_int_eq(tg_watch_has_changed(sub), 0);
  ck_assert_int_eq(tg_watch_rx_clone(rx, &copy), 0);
  ck_assert_int_ne(tg_watch_has_changed(copy), 0);
  p = tg_watch_borrow(rx);
  ck_assert_int_eq(p->a * p->b, 12);
  tg_watch_borrow_end(rx);
  ck_assert_int_ne(tg_watch_has_changed(rx), 0);
  p = tg_watch_borrow_and_update(rx);
  ck_assert_int_eq(p->a, 3);
  tg_watch_borrow_end(rx);
  ck_assert_int_eq(tg_watch_has_changed(rx), 0);
  pair out;
  tg_watch_get(copy, &out);
  ck_assert_int_ne(tg_watch_has_changed(copy), 0);
  tg_watch_get_and_update(copy, &out);
  ck_assert_int_eq(out.b, 4);
  ck_assert_int_eq(tg_watch_has_changed(copy), 0);
  tg_watch_rx_drop(rx);
  tg_watch_rx_drop(sub);
  tg_watch_rx_drop(copy);
  /* With no receiver left, a send still stores the value. */
  ck_assert_int_eq(tg_watch_send(tx, &(pair){5, 6}), 0);
  ck_assert_int_eq(tg_watch_subscribe(tx, &sub), 0);
  tg_watch_get(sub, &out);
  ck_assert_int_eq(out.a, 5);
  tg_watch_tx_drop(tx);
  tg_watch_rx_drop(sub);
  ck_assert_int_eq(tg_watch_new(&(tg_watch_opts){.elem_size = 0}, &out, &tx, &rx), TG_EINVAL);
  return NULL;
}

START_TEST(test_watch_borrow_and_update) { tg_test_run_virtual(borrow_body, NULL); }
END_TEST

/* ------------------------------------------------------------ owned values */

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

/* Every copy (the initial value, each send, each get) is dropped once. */
static void *refcount_body(void *arg) {
  (void)arg;
  tg_watch_opts o = {.elem_size = sizeof(counted *), .clone = counted_clone, .drop = counted_drop};
  tg_watch_tx *tx;
  tg_watch_rx *rx;
  counted *c = counted_new(0);
  ck_assert_int_eq(tg_watch_new(&o, &c, &tx, &rx), 0);
  for (int i = 1; i <= 5; i++) {
    c = counted_new(i);
    ck_assert_int_eq(tg_watch_send(tx, &c), 0);
    ck_assert_int_eq(freed, i); /* the replaced value */
  }
  tg_watch_get_and_update(rx, &c);
  ck_assert_int_eq(c->value, 5);
  ck_assert_int_eq(atomic_load(&c->refs), 2);
  tg_watch_tx_drop(tx);
  tg_watch_rx_drop(rx); /* frees the channel's copy */
  ck_assert_int_eq(atomic_load(&c->refs), 1);
  counted_drop(&c);
  ck_assert_int_eq(freed, created);
  ck_assert_int_eq(created + clones, drops);
  return NULL;
}

START_TEST(test_watch_refcount_balanced) { tg_test_run_virtual(refcount_body, NULL); }
END_TEST

/* ------------------------------------------------------------ cancellation */

/* A changed() that loses a select, times out or is aborted marks nothing. */
typedef struct select_arg {
  tg_watch_rx *rx1, *rx2;
  int winner;
} select_arg;

static void *select_both(void *arg) {
  select_arg *a = arg;
  tg_case cases[2] = {tg_watch_changed_case(a->rx1), tg_watch_changed_case(a->rx2)};
  a->winner = tg_select(cases, 2, TG_FOREVER);
  ck_assert_int_eq(cases[a->winner].result, 0);
  return NULL;
}

/* Waits once on the receiver `arg`; its result is the task's value. */
static void *changed_once(void *arg) { return (void *)(intptr_t)tg_watch_changed(arg); }

static void *select_loser_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx1, *tx2;
  tg_watch_rx *rx1, *rx2;
  make(0, &tx1, &rx1);
  make(0, &tx2, &rx2);
  send(tx1, 1);
  send(tx2, 1);
  tg_case cases[2] = {tg_watch_changed_case(rx1), tg_watch_changed_case(rx2)};
  ck_assert_int_eq(tg_select(cases, 2, TG_FOREVER), 0);
  ck_assert_int_eq(tg_watch_has_changed(rx1), 0);
  ck_assert_int_ne(tg_watch_has_changed(rx2), 0);
  ck_assert_int_eq(tg_watch_changed(rx2), 0);
  /* Both change while the select waits: only the winner marks. */
  select_arg a = {.rx1 = rx1, .rx2 = rx2};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, select_both, &a, NULL), 0);
  tg_sleep(TG_MS(1));
  send(tx2, 2);
  send(tx1, 2);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(a.winner, 1);
  ck_assert_int_ne(tg_watch_has_changed(rx1), 0);
  ck_assert_int_eq(tg_watch_changed(rx1), 0);
  /* An aborted wait marks nothing either. */
  ck_assert_int_eq(tg_spawn(&t, changed_once, rx1, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_task_abort(t);
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(t, &o), 0);
  ck_assert_int_eq((int)(intptr_t)o.value, TG_ECANCELED);
  send(tx1, 3);
  ck_assert_int_eq(tg_watch_changed(rx1), 0);
  tg_watch_stats st;
  tg_watch_stats_get(tx1, &st);
  ck_assert_uint_eq(st.receivers_waiting, 0);
  tg_watch_rx_drop(rx1);
  tg_watch_rx_drop(rx2);
  tg_watch_tx_drop(tx1);
  tg_watch_tx_drop(tx2);
  return NULL;
}

START_TEST(test_watch_select_loser_marks_nothing) { tg_test_run_virtual(select_loser_body, NULL); }
END_TEST

/* One send wakes every waiting receiver (the W10 pattern: many tasks
 * parked on one signal). */
enum { PARKED = 300 };

static void *many_waiters_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx;
  make(0, &tx, &rx);
  tg_watch_rx *rxs[PARKED];
  tg_task *ts[PARKED];
  for (int i = 0; i < PARKED; i++) {
    ck_assert_int_eq(tg_watch_rx_clone(rx, &rxs[i]), 0);
    ck_assert_int_eq(tg_spawn(&ts[i], changed_once, rxs[i], NULL), 0);
  }
  tg_sleep(TG_MS(1));
  tg_watch_stats st;
  tg_watch_stats_get(tx, &st);
  ck_assert_uint_eq(st.receivers_waiting, PARKED);
  send(tx, 1);
  int faults = 0;
  for (int i = 0; i < PARKED; i++) {
    tg_outcome o;
    faults += tg_task_join(ts[i], &o) != 0 || o.value != NULL;
    tg_watch_rx_drop(rxs[i]);
  }
  ck_assert_int_eq(faults, 0);
  tg_watch_rx_drop(rx);
  tg_watch_tx_drop(tx);
  return NULL;
}

START_TEST(test_watch_send_wakes_every_waiter) { tg_test_run_virtual(many_waiters_body, NULL); }
END_TEST

/* ------------------------------------------------------------ threads */

enum { STRESS_N = 50000, STRESS_RECEIVERS = 4 };

/* Follows the value until the sender goes: what it reads only grows, and
 * the last value is the last one sent. Counts faults instead of asserting
 * in the loop, since each passed Check assertion writes to a pipe. */
typedef struct follower {
  tg_watch_rx *rx;
  int last, reads, faults;
} follower;

static void *follow(void *arg) {
  follower *f = arg;
  int r;
  while ((r = tg_watch_changed(f->rx)) == 0) {
    const int *v = tg_watch_borrow_and_update(f->rx);
    f->faults += *v <= f->last;
    f->last = *v;
    tg_watch_borrow_end(f->rx);
    f->reads++;
  }
  f->faults += r != TG_ECLOSED;
  tg_watch_rx_drop(f->rx);
  return NULL;
}

static void *publish(void *arg) {
  tg_watch_tx *tx = arg;
  for (int v = 1; v <= STRESS_N; v++) {
    tg_watch_send(tx, &v);
    tg_yield();
  }
  tg_watch_tx_drop(tx);
  return NULL;
}

static void check_follower(const follower *f) {
  ck_assert_int_eq(f->faults, 0);
  ck_assert_int_eq(f->last, STRESS_N);
  ck_assert_int_gt(f->reads, 0);
}

static void *stress_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx;
  make(0, &tx, &rx);
  follower fs[STRESS_RECEIVERS] = {{.rx = rx}};
  for (int i = 1; i < STRESS_RECEIVERS; i++) ck_assert_int_eq(tg_watch_subscribe(tx, &fs[i].rx), 0);
  tg_task *ts[STRESS_RECEIVERS + 1];
  /* pinned over both workers: every store crosses threads */
  for (int i = 0; i < STRESS_RECEIVERS; i++)
    ck_assert_int_eq(tg_spawn(&ts[i], follow, &fs[i], &(tg_spawn_opts){.pin = 1, .worker = i % 2}), 0);
  ck_assert_int_eq(tg_spawn(&ts[STRESS_RECEIVERS], publish, tx, &(tg_spawn_opts){.pin = 1, .worker = 1}), 0);
  for (int i = 0; i <= STRESS_RECEIVERS; i++) ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
  for (int i = 0; i < STRESS_RECEIVERS; i++) check_follower(&fs[i]);
  return NULL;
}

START_TEST(test_watch_followers_two_workers) { tg_test_run(2, 0, stress_body, NULL); }
END_TEST

/* Plain threads follow a task's sends, blocking. */
static void *thread_follow(void *arg) { return follow(arg); }

static void *thread_body(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx;
  make(0, &tx, &rx);
  follower fs[2] = {{.rx = rx}};
  ck_assert_int_eq(tg_watch_subscribe(tx, &fs[1].rx), 0);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, thread_follow, &fs[i]), 0);
  publish(tx);
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    check_follower(&fs[i]);
  }
  return NULL;
}

START_TEST(test_watch_plain_thread_followers) { tg_test_run(1, 0, thread_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("watch");
  tg_test_add(s, "busy_reader_sees_latest", test_watch_busy_reader_sees_latest, 10);
  tg_test_add(s, "changed_once_per_version", test_watch_changed_once_per_version, 10);
  tg_test_add(s, "closed_after_last_version", test_watch_closed_after_last_version, 10);
  tg_test_add(s, "borrow_and_update", test_watch_borrow_and_update, 10);
  tg_test_add(s, "refcount_balanced", test_watch_refcount_balanced, 10);
  tg_test_add(s, "select_loser_marks_nothing", test_watch_select_loser_marks_nothing, 10);
  tg_test_add(s, "send_wakes_every_waiter", test_watch_send_wakes_every_waiter, 10);
  tg_test_add(s, "followers_two_workers", test_watch_followers_two_workers, 30);
  tg_test_add(s, "plain_thread_followers", test_watch_plain_thread_followers, 30);
  return tg_test_main(s);
}
