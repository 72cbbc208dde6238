/* test-joinset.c - JoinSet: completion order, panic isolation, abort_all,
 * and freeing a set with tasks still running. */
#include "helpers.h"

#include <stdint.h>

typedef struct nap {
  int64_t ms;
  int id;
} nap;

static void *nap_then_return(void *arg) {
  nap *n = arg;
  tg_sleep(TG_MS(n->ms));
  return (void *)(intptr_t)n->id;
}

static void *completion_order_body(void *arg) {
  (void)arg;
  tg_joinset *js;
  ck_assert_int_eq(tg_joinset_new(&js, "naps"), 0);
  nap naps[4] = {{400, 0}, {100, 1}, {300, 2}, {200, 3}};
  uint64_t ids[4];
  for (int i = 0; i < 4; i++) ck_assert_int_eq(tg_joinset_spawn(js, nap_then_return, &naps[i], NULL, &ids[i]), 0);
  ck_assert_uint_eq(tg_joinset_len(js), 4);
  int expect[4] = {1, 3, 2, 0};
  for (int i = 0; i < 4; i++) {
    tg_outcome o;
    ck_assert_int_eq(tg_joinset_join_next(js, &o), 0);
    ck_assert_int_eq(o.status, 0);
    ck_assert_int_eq((int)(intptr_t)o.value, expect[i]);
    ck_assert_uint_eq(o.task_id, ids[expect[i]]);
    ck_assert_int_eq(tg_now(), TG_MS(100 * (i + 1)));
  }
  ck_assert_int_eq(tg_joinset_join_next(js, NULL), TG_EEMPTY);
  ck_assert_int_eq(tg_joinset_try_join_next(js, NULL), TG_EEMPTY);
  tg_joinset_free(js);
  return NULL;
}

START_TEST(test_joinset_completion_order) { tg_test_run_virtual(completion_order_body, NULL); }
END_TEST

/* Seven device-like tasks; one panics at 250 ms. The other six keep
 * making progress after it, and the set reports exactly one panic. */
typedef struct device {
  int id, panic_at_ms;
  int ticks;
} device;

static void *device_loop(void *arg) {
  device *d = arg;
  for (int64_t t = 0; t < TG_SEC(1); t += TG_MS(100)) {
    if (tg_sleep(TG_MS(100)) != 0) break;
    d->ticks++;
    if (d->panic_at_ms && tg_now() >= TG_MS(d->panic_at_ms)) tg_panic("device %d failed", d->id);
  }
  return NULL;
}

static void *panic_isolation_body(void *arg) {
  (void)arg;
  tg_joinset *js;
  tg_joinset_new(&js, "devices");
  device devs[7];
  for (int i = 0; i < 7; i++) {
    devs[i] = (device){.id = i, .panic_at_ms = i == 3 ? 250 : 0};
    tg_joinset_spawn(js, device_loop, &devs[i], NULL, NULL);
  }
  tg_outcome o;
  ck_assert_int_eq(tg_joinset_join_next(js, &o), 0);
  ck_assert_int_eq(o.status, TG_EPANICKED);
  ck_assert_str_eq(o.message, "device 3 failed");
  ck_assert_int_eq(tg_now(), TG_MS(300));
  int ok = 0;
  while (tg_joinset_join_next(js, &o) == 0) {
    ck_assert_int_eq(o.status, 0);
    ok++;
  }
  ck_assert_int_eq(ok, 6);
  for (int i = 0; i < 7; i++) ck_assert_int_eq(devs[i].ticks, i == 3 ? 3 : 10);
  tg_joinset_stats st;
  tg_joinset_stats_get(js, &st);
  ck_assert_uint_eq(st.panicked, 1);
  ck_assert_uint_eq(st.joined, 7);
  tg_joinset_free(js);
  return NULL;
}

START_TEST(test_joinset_one_panic_of_seven) { tg_test_run_virtual(panic_isolation_body, NULL); }
END_TEST

static void *abort_all_body(void *arg) {
  (void)arg;
  tg_joinset *js;
  tg_joinset_new(&js, NULL);
  nap quick = {10, 1}, slow[3] = {{5000, 2}, {5000, 3}, {5000, 4}};
  tg_joinset_spawn(js, nap_then_return, &quick, NULL, NULL);
  for (int i = 0; i < 3; i++) tg_joinset_spawn(js, nap_then_return, &slow[i], NULL, NULL);
  tg_sleep(TG_MS(100));
  tg_joinset_abort_all(js);
  int done = 0, cancelled = 0;
  tg_outcome o;
  while (tg_joinset_join_next(js, &o) == 0) {
    if (o.status == 0) done++;
    if (o.status == TG_ECANCELED) cancelled++;
  }
  ck_assert_int_eq(done, 1);
  ck_assert_int_eq(cancelled, 3);
  ck_assert_int_eq(tg_now(), TG_MS(100));
  tg_joinset_free(js);
  return NULL;
}

START_TEST(test_joinset_abort_all) { tg_test_run_virtual(abort_all_body, NULL); }
END_TEST

/* Freeing a set aborts what runs; those tasks end by themselves. */
static void *free_running_body(void *arg) {
  (void)arg;
  tg_joinset *js;
  tg_joinset_new(&js, NULL);
  nap slow[3] = {{5000, 1}, {5000, 2}, {1, 3}};
  for (int i = 0; i < 3; i++) tg_joinset_spawn(js, nap_then_return, &slow[i], NULL, NULL);
  tg_sleep(TG_MS(10)); /* the third has ended, unjoined */
  tg_joinset_free(js);
  tg_sleep(TG_MS(10));
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_alive, 1); /* main only */
  return NULL;
}

START_TEST(test_joinset_free_with_running_tasks) { tg_test_run_virtual(free_running_body, NULL); }
END_TEST

/* join_next as a select case, against a deadline. */
static void *select_body(void *arg) {
  (void)arg;
  tg_joinset *js;
  tg_joinset_new(&js, NULL);
  nap n = {300, 9};
  tg_joinset_spawn(js, nap_then_return, &n, NULL, NULL);
  tg_outcome o = {0};
  tg_case c[] = {tg_joinset_join_next_case(js, &o)};
  ck_assert_int_eq(tg_select(c, 1, tg_deadline_in(TG_MS(100))), TG_ETIMEDOUT);
  ck_assert_uint_eq(tg_joinset_len(js), 1);
  ck_assert_int_eq(tg_select(c, 1, TG_FOREVER), 0);
  ck_assert_int_eq(c[0].result, 0);
  ck_assert_int_eq((int)(intptr_t)o.value, 9);
  tg_joinset_free(js);
  return NULL;
}

START_TEST(test_joinset_select_case) { tg_test_run_virtual(select_body, NULL); }
END_TEST

/* Spawning into one set from two workers, joined from one. */
static void *tiny(void *arg) { return arg; }

static void *multi_worker_body(void *arg) {
  (void)arg;
  enum { N = 20000 };
  tg_joinset *js;
  tg_joinset_new(&js, NULL);
  for (intptr_t i = 0; i < N; i++) /* pinned over both workers */
    tg_joinset_spawn(js, tiny, (void *)i, &(tg_spawn_opts){.pin = 1, .worker = (int)(i % 2)}, NULL);
  long long sum = 0;
  tg_outcome o;
  while (tg_joinset_join_next(js, &o) == 0) sum += (intptr_t)o.value;
  ck_assert_int_eq(sum, (long long)N * (N - 1) / 2);
  tg_joinset_free(js);
  return NULL;
}

START_TEST(test_joinset_two_workers) { tg_test_run(2, 0, multi_worker_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("joinset");
  tg_test_add(s, "completion_order", test_joinset_completion_order, 10);
  tg_test_add(s, "one_panic_of_seven", test_joinset_one_panic_of_seven, 10);
  tg_test_add(s, "abort_all", test_joinset_abort_all, 10);
  tg_test_add(s, "free_with_running_tasks", test_joinset_free_with_running_tasks, 10);
  tg_test_add(s, "select_case", test_joinset_select_case, 10);
  tg_test_add(s, "two_workers", test_joinset_two_workers, 60);
  return tg_test_main(s);
}
