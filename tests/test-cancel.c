/* test-cancel.c - the latched cancellation token: seen by tasks that were
 * busy when it fired, wakes every waiter, fires its children, and holds up
 * under concurrent fires, children and frees on several threads. */
#include "helpers.h"

#include <pthread.h>
#include <stdlib.h>

static tg_cancel_stats stats_of(tg_cancel *c) {
  tg_cancel_stats st;
  tg_cancel_stats_get(c, &st);
  return st;
}

typedef struct busy {
  tg_cancel *token;
  tg_notify *ready; /* holds a permit: a select case that is ready too */
  int working;      /* cleared by main once the token fired */
  int seen_by_check, wait_result, winner;
  int64_t waited;
} busy;

static void *work_then_check(void *arg) {
  busy *b = arg;
  while (b->working) tg_yield(); /* busy: not waiting on the token */
  b->seen_by_check = tg_cancel_fired(b->token);
  int64_t start = tg_now();
  b->wait_result = tg_cancel_wait(b->token);
  b->waited = tg_now() - start;
  tg_case cases[] = {tg_cancel_case(b->token), tg_notify_wait_case(b->ready)};
  b->winner = tg_select(cases, 2, TG_FOREVER);
  return NULL;
}

/* A task that was busy when the token fired sees it at its next check,
 * wait or select - where notify_waiters at that moment reached nobody. */
static void *busy_body(void *arg) {
  (void)arg;
  tg_cancel *token;
  tg_notify *shutdown_notify, *ready;
  ck_assert_int_eq(tg_cancel_new(&token, "shutdown"), 0);
  ck_assert_int_eq(tg_notify_new(&shutdown_notify, NULL), 0);
  ck_assert_int_eq(tg_notify_new(&ready, NULL), 0);
  tg_notify_one(ready);
  busy b = {.token = token, .ready = ready, .working = 1, .winner = -1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, work_then_check, &b, NULL), 0);
  tg_yield(); /* the task is running its loop now */
  ck_assert_uint_eq(tg_notify_waiters(shutdown_notify), 0);
  tg_cancel_fire(token);
  ck_assert_uint_eq(stats_of(token).waiters, 0);
  b.working = 0;
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_ne(b.seen_by_check, 0);
  ck_assert_int_eq(b.wait_result, 0);
  ck_assert_int_eq(b.waited, 0);
  ck_assert_int_eq(b.winner, 0);
  tg_notify_stats nst;
  tg_notify_stats_get(ready, &nst);
  ck_assert_int_eq(nst.permit, 1); /* the losing case took nothing */
  tg_notify_free(ready);
  tg_notify_free(shutdown_notify);
  tg_cancel_free(token);
  return NULL;
}

START_TEST(test_cancel_busy_task_sees_it_later) { tg_test_run_virtual(busy_body, NULL); }
END_TEST

typedef struct waiter {
  tg_cancel *token;
  int result;
  int64_t woke_at;
} waiter;

static void *wait_token(void *arg) {
  waiter *w = arg;
  w->result = tg_cancel_wait(w->token);
  w->woke_at = tg_now();
  return NULL;
}

/* One fire wakes 100 waiting tasks at once; it is idempotent, and waits
 * after it complete at once. */
static void *hundred_body(void *arg) {
  (void)arg;
  enum { N = 100 };
  tg_cancel *token;
  ck_assert_int_eq(tg_cancel_new(&token, "shutdown"), 0);
  waiter ws[N];
  tg_task *ts[N];
  for (int i = 0; i < N; i++) {
    ws[i] = (waiter){.token = token, .result = 1};
    ck_assert_int_eq(tg_spawn(&ts[i], wait_token, &ws[i], NULL), 0);
  }
  tg_sleep(TG_MS(10));
  tg_cancel_stats st = stats_of(token);
  ck_assert_uint_eq(st.waiters, N);
  ck_assert_int_eq(st.fired, 0);
  ck_assert_str_eq(st.name, "shutdown");
  int64_t fired_at = tg_now();
  tg_cancel_fire(token);
  tg_cancel_fire(token);
  for (int i = 0; i < N; i++) {
    ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
    ck_assert_int_eq(ws[i].result, 0);
    ck_assert_int_eq(ws[i].woke_at, fired_at);
  }
  st = stats_of(token);
  ck_assert_uint_eq(st.waiters, 0);
  ck_assert_int_ne(st.fired, 0);
  ck_assert_int_eq(tg_cancel_wait(token), 0);
  ck_assert_int_eq(tg_cancel_wait_dl(token, tg_now()), 0);
  tg_cancel_free(token);
  return NULL;
}

START_TEST(test_cancel_hundred_waiters_wake) { tg_test_run_virtual(hundred_body, NULL); }
END_TEST

/* Before it fires: a deadline ends a wait with TG_ETIMEDOUT and an abort
 * with TG_ECANCELED, and neither leaves a waiter behind. */
static void *unfired_body(void *arg) {
  (void)arg;
  tg_cancel *token;
  ck_assert_int_eq(tg_cancel_new(&token, NULL), 0);
  ck_assert_int_eq(tg_cancel_fired(token), 0);
  int64_t start = tg_now();
  ck_assert_int_eq(tg_cancel_wait_dl(token, tg_deadline_in(TG_MS(500))), TG_ETIMEDOUT);
  ck_assert_int_eq(tg_now() - start, TG_MS(500));
  waiter w = {.token = token, .result = 1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, wait_token, &w, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_task_abort(t);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(w.result, TG_ECANCELED);
  tg_cancel_stats st = stats_of(token);
  ck_assert_uint_eq(st.waiters, 0);
  ck_assert_int_eq(st.fired, 0);
  tg_cancel_free(token);
  return NULL;
}

START_TEST(test_cancel_timeout_and_abort_before_fire) { tg_test_run_virtual(unfired_body, NULL); }
END_TEST

/* The tree: a parent fires its children and theirs (waking their
 * waiters); a child fires alone; a child of a fired token is born fired. */
static void *tree_body(void *arg) {
  (void)arg;
  tg_cancel *root, *a, *b, *a1, *a2, *b1;
  ck_assert_int_eq(tg_cancel_new(&root, "root"), 0);
  ck_assert_int_eq(tg_cancel_child(root, &a), 0);
  ck_assert_int_eq(tg_cancel_child(root, &b), 0);
  ck_assert_int_eq(tg_cancel_child(a, &a1), 0);
  ck_assert_int_eq(tg_cancel_child(a, &a2), 0);
  ck_assert_int_eq(tg_cancel_child(b, &b1), 0);
  ck_assert_ptr_null(stats_of(a).name);

  tg_cancel_fire(a);
  ck_assert(tg_cancel_fired(a) && tg_cancel_fired(a1) && tg_cancel_fired(a2));
  ck_assert(!tg_cancel_fired(root) && !tg_cancel_fired(b) && !tg_cancel_fired(b1));

  waiter w = {.token = b1, .result = 1};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, wait_token, &w, NULL), 0);
  tg_sleep(TG_MS(1));
  tg_cancel_fire(root);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(w.result, 0);
  ck_assert(tg_cancel_fired(b) && tg_cancel_fired(b1));

  tg_cancel *late;
  ck_assert_int_eq(tg_cancel_child(b1, &late), 0);
  ck_assert_int_ne(tg_cancel_fired(late), 0);
  ck_assert_int_eq(tg_cancel_wait(late), 0);

  tg_cancel_free(late);
  tg_cancel_free(a1); /* children may go first */
  tg_cancel_free(a);  /* or after their children */
  tg_cancel_free(root);
  tg_cancel_free(b1);
  tg_cancel_free(a2);
  tg_cancel_free(b);
  return NULL;
}

START_TEST(test_cancel_children_fire_with_parent) { tg_test_run_virtual(tree_body, NULL); }
END_TEST

/* Freeing a parent detaches its children: they live on unfired, fire on
 * their own, and outlive it. A freed child is no longer reached. */
static void *detach_body(void *arg) {
  (void)arg;
  tg_cancel *parent, *kept, *gone, *grandchild;
  ck_assert_int_eq(tg_cancel_new(&parent, NULL), 0);
  ck_assert_int_eq(tg_cancel_child(parent, &kept), 0);
  ck_assert_int_eq(tg_cancel_child(parent, &gone), 0);
  ck_assert_int_eq(tg_cancel_child(kept, &grandchild), 0);
  tg_cancel_free(gone);
  tg_cancel_free(parent);
  ck_assert_int_eq(tg_cancel_fired(kept), 0);
  ck_assert_int_eq(tg_cancel_wait_dl(kept, tg_deadline_in(TG_MS(10))), TG_ETIMEDOUT);
  tg_cancel_fire(kept);
  ck_assert_int_ne(tg_cancel_fired(grandchild), 0); /* its own subtree stays */
  tg_cancel_free(kept);
  tg_cancel_free(grandchild);

  /* A deep chain fires without recursion and frees in any order. */
  enum { DEPTH = 10000 };
  tg_cancel **chain = calloc(DEPTH, sizeof *chain);
  ck_assert_ptr_nonnull(chain);
  ck_assert_int_eq(tg_cancel_new(&chain[0], NULL), 0);
  for (int i = 1; i < DEPTH; i++) ck_assert_int_eq(tg_cancel_child(chain[i - 1], &chain[i]), 0);
  tg_cancel_fire(chain[0]);
  ck_assert_int_ne(tg_cancel_fired(chain[DEPTH - 1]), 0);
  for (int i = 0; i < DEPTH; i++) tg_cancel_free(chain[i]);
  free(chain);
  return NULL;
}

START_TEST(test_cancel_free_parent_detaches_children) { tg_test_run_virtual(detach_body, NULL); }
END_TEST

/* Many threads at once: tasks on two workers and plain threads wait; tasks
 * keep making and freeing children and grandchildren; two plain threads
 * fire the root together. Run under TSan. */
typedef struct churn {
  tg_cancel *root;
  int born_fired_wrong; /* a child made after the root fired that was not fired */
} churn;

static void *churn_children(void *arg) {
  churn *c = arg;
  for (int i = 0; !tg_cancel_fired(c->root) || i < 2000; i++) {
    int root_fired = tg_cancel_fired(c->root);
    tg_cancel *child, *grandchild;
    ck_assert_int_eq(tg_cancel_child(c->root, &child), 0);
    ck_assert_int_eq(tg_cancel_child(child, &grandchild), 0);
    if (root_fired && !tg_cancel_fired(grandchild)) c->born_fired_wrong++;
    if (tg_cancel_wait_dl(grandchild, tg_now()) == 0) ck_assert_int_ne(tg_cancel_fired(grandchild), 0);
    if (i % 2) tg_cancel_free(child);
    tg_cancel_free(grandchild);
    if (!(i % 2)) tg_cancel_free(child);
    tg_yield();
  }
  return NULL;
}

static void *thread_wait(void *arg) {
  waiter *w = arg;
  w->result = tg_cancel_wait(w->token);
  return NULL;
}

static void *thread_fire(void *arg) {
  tg_cancel_fire(arg);
  return NULL;
}

static void *threads_body(void *arg) {
  (void)arg;
  enum { WAITERS = 40, THREADS = 3, CHURNERS = 4 };
  tg_cancel *root;
  ck_assert_int_eq(tg_cancel_new(&root, NULL), 0);
  waiter ws[WAITERS + THREADS];
  tg_task *ts[WAITERS];
  pthread_t th[THREADS], firers[2];
  for (int i = 0; i < WAITERS; i++) {
    ws[i] = (waiter){.token = root, .result = 1};
    ck_assert_int_eq(tg_spawn(&ts[i], wait_token, &ws[i], &(tg_spawn_opts){.pin = 1, .worker = i % 2}), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    ws[WAITERS + i] = (waiter){.token = root, .result = 1};
    ck_assert_int_eq(pthread_create(&th[i], NULL, thread_wait, &ws[WAITERS + i]), 0);
  }
  churn cs[CHURNERS];
  tg_task *cts[CHURNERS];
  for (int i = 0; i < CHURNERS; i++) {
    cs[i] = (churn){.root = root};
    ck_assert_int_eq(tg_spawn(&cts[i], churn_children, &cs[i], &(tg_spawn_opts){.pin = 1, .worker = i % 2}), 0);
  }
  int tries = 0;
  while (stats_of(root).waiters < WAITERS + THREADS && tries++ < 5000) tg_sleep(TG_MS(1));
  ck_assert_uint_eq(stats_of(root).waiters, WAITERS + THREADS);
  for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&firers[i], NULL, thread_fire, root), 0);
  for (int i = 0; i < 2; i++) pthread_join(firers[i], NULL);
  for (int i = 0; i < WAITERS; i++) {
    ck_assert_int_eq(tg_task_join(ts[i], NULL), 0);
    ck_assert_int_eq(ws[i].result, 0);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    ck_assert_int_eq(ws[WAITERS + i].result, 0);
  }
  for (int i = 0; i < CHURNERS; i++) {
    ck_assert_int_eq(tg_task_join(cts[i], NULL), 0);
    ck_assert_int_eq(cs[i].born_fired_wrong, 0);
  }
  tg_cancel_free(root);
  return NULL;
}

START_TEST(test_cancel_threads_and_workers) { tg_test_run(2, 0, threads_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("cancel");
  tg_test_add(s, "busy_task_sees_it_later", test_cancel_busy_task_sees_it_later, 10);
  tg_test_add(s, "hundred_waiters_wake", test_cancel_hundred_waiters_wake, 10);
  tg_test_add(s, "timeout_and_abort_before_fire", test_cancel_timeout_and_abort_before_fire, 10);
  tg_test_add(s, "children_fire_with_parent", test_cancel_children_fire_with_parent, 10);
  tg_test_add(s, "free_parent_detaches_children", test_cancel_free_parent_detaches_children, 10);
  tg_test_add(s, "threads_and_workers", test_cancel_threads_and_workers, 30);
  return tg_test_main(s);
}
