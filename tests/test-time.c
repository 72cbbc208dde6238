/* test-time.c - the clock: sleeps in deadline order, equal deadlines in
 * the order set, intervals and their missed-tick behaviours, the virtual
 * clock holding still while tasks run, and real sleeps lasting at least
 * as long as asked. */
#include "helpers.h"

#include <string.h>

typedef struct wake_log {
  int order[8];
  int64_t at[8];
  int n;
} wake_log;

typedef struct sleeper {
  wake_log *log;
  int id;
  int64_t ns;
} sleeper;

static void *sleep_then_log(void *arg) {
  sleeper *s = arg;
  ck_assert_int_eq(tg_sleep(s->ns), 0);
  s->log->order[s->log->n] = s->id;
  s->log->at[s->log->n++] = tg_now();
  return NULL;
}

static void *sleep_order_body(void *arg) {
  (void)arg;
  wake_log log = {0};
  /* ids 2 and 3 share a deadline: they wake in the order they slept. */
  sleeper s[4] = {{&log, 0, TG_MS(300)}, {&log, 1, TG_MS(100)}, {&log, 2, TG_MS(200)}, {&log, 3, TG_MS(200)}};
  tg_task *t[4];
  for (int i = 0; i < 4; i++) tg_spawn(&t[i], sleep_then_log, &s[i], NULL);
  for (int i = 0; i < 4; i++) tg_task_join(t[i], NULL);
  int expect[4] = {1, 2, 3, 0};
  int64_t at[4] = {TG_MS(100), TG_MS(200), TG_MS(200), TG_MS(300)};
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(log.order[i], expect[i]);
    ck_assert_int_eq(log.at[i], at[i]);
  }
  return NULL;
}

START_TEST(test_time_sleeps_wake_in_deadline_order) { tg_test_run_virtual(sleep_order_body, NULL); }
END_TEST

/* Virtual time does not pass while a task is busy, only when all wait. */
static void *busy_body(void *arg) {
  (void)arg;
  int64_t start = tg_now();
  volatile unsigned long spin = 0;
  for (int i = 0; i < 1000000; i++) spin += (unsigned long)i;
  (void)spin;
  ck_assert_int_eq(tg_now(), start);
  tg_yield();
  ck_assert_int_eq(tg_now(), start);
  ck_assert_int_eq(tg_sleep(TG_SEC(3600)), 0);
  ck_assert_int_eq(tg_now(), start + TG_SEC(3600));
  ck_assert_int_eq(tg_sleep_until(start), 0); /* in the past: at once */
  ck_assert_int_eq(tg_now(), start + TG_SEC(3600));
  return NULL;
}

START_TEST(test_time_virtual_clock_moves_only_when_idle) { tg_test_run_virtual(busy_body, NULL); }
END_TEST

/* An interval's first tick is immediate; a late tick is handled per the
 * missed-tick behaviour. The task stalls 350 ms at t=0 with a 100 ms
 * period, then ticks four more times. */
static void ticks_after_stall(tg_missed_tick missed, int64_t out[5]) {
  tg_interval iv;
  int64_t start = tg_now();
  ck_assert_int_eq(tg_interval_init(&iv, TG_MS(100), missed), 0);
  ck_assert_int_eq(tg_interval_tick(&iv), 0);
  tg_sleep(TG_MS(350));
  for (int i = 0; i < 5; i++) {
    ck_assert_int_eq(tg_interval_tick(&iv), 0);
    out[i] = (tg_now() - start) / TG_MS(1);
  }
}

static void *interval_body(void *arg) {
  (void)arg;
  int64_t got[5];
  ticks_after_stall(TG_MISSED_BURST, got); /* catch up at once, keep the grid */
  int64_t burst[5] = {350, 350, 350, 400, 500};
  for (int i = 0; i < 5; i++) ck_assert_int_eq(got[i], burst[i]);

  ticks_after_stall(TG_MISSED_DELAY, got); /* one period after the late tick */
  int64_t delay[5] = {350, 450, 550, 650, 750};
  for (int i = 0; i < 5; i++) ck_assert_int_eq(got[i], delay[i]);

  ticks_after_stall(TG_MISSED_SKIP, got); /* back on the grid, skipping */
  int64_t skip[5] = {350, 400, 500, 600, 700};
  for (int i = 0; i < 5; i++) ck_assert_int_eq(got[i], skip[i]);
  return NULL;
}

START_TEST(test_time_interval_missed_ticks) { tg_test_run_virtual(interval_body, NULL); }
END_TEST

/* Real clock: a sleep lasts at least what was asked (lower bound only). */
static void *real_sleep_body(void *arg) {
  (void)arg;
  int64_t start = tg_now();
  ck_assert_int_eq(tg_sleep(TG_MS(20)), 0);
  ck_assert_int_ge(tg_now() - start, TG_MS(20));
  return NULL;
}

START_TEST(test_time_real_sleep_lower_bound) { tg_test_run(1, 0, real_sleep_body, NULL); }
END_TEST

/* Two identical virtual runs produce the same trace. */
static void *trace_body(void *arg) {
  wake_log *log = arg;
  sleeper s[4] = {{log, 0, TG_MS(7)}, {log, 1, TG_MS(3)}, {log, 2, TG_MS(5)}, {log, 3, TG_MS(3)}};
  tg_task *t[4];
  for (int i = 0; i < 4; i++) tg_spawn(&t[i], sleep_then_log, &s[i], NULL);
  for (int i = 0; i < 4; i++) tg_task_join(t[i], NULL);
  return NULL;
}

START_TEST(test_time_virtual_runs_repeat) {
  wake_log a = {0}, b = {0};
  tg_test_run_virtual(trace_body, &a);
  tg_test_run_virtual(trace_body, &b);
  ck_assert_int_eq(a.n, 4);
  ck_assert_mem_eq(&a, &b, sizeof a);
}
END_TEST

/* A zero or negative period, or an unknown missed-tick mode, is refused
 * (tokio panics on a zero period) rather than clamped; ticking such an
 * interval fails too instead of spinning. */
static void *bad_interval_body(void *arg) {
  (void)arg;
  tg_interval iv;
  ck_assert_int_eq(tg_interval_init(&iv, 0, TG_MISSED_BURST), TG_EINVAL);
  ck_assert_int_eq(tg_interval_tick(&iv), TG_EINVAL);
  ck_assert_int_eq(tg_interval_init(&iv, -TG_MS(1), TG_MISSED_DELAY), TG_EINVAL);
  ck_assert_int_eq(tg_interval_init(&iv, TG_MS(1), (tg_missed_tick)7), TG_EINVAL);
  ck_assert_int_eq(tg_interval_tick(&iv), TG_EINVAL);
  ck_assert_int_eq(tg_interval_init(&iv, 1, TG_MISSED_SKIP), 0); /* 1 ns is a period */
  ck_assert_int_eq(tg_interval_tick(&iv), 0);
  return NULL;
}

START_TEST(test_time_interval_rejects_bad_period) { tg_test_run_virtual(bad_interval_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("time");
  tg_test_add(s, "sleeps_wake_in_deadline_order", test_time_sleeps_wake_in_deadline_order, 10);
  tg_test_add(s, "virtual_clock_moves_only_when_idle", test_time_virtual_clock_moves_only_when_idle, 10);
  tg_test_add(s, "interval_missed_ticks", test_time_interval_missed_ticks, 10);
  tg_test_add(s, "real_sleep_lower_bound", test_time_real_sleep_lower_bound, 10);
  tg_test_add(s, "virtual_runs_repeat", test_time_virtual_runs_repeat, 10);
  tg_test_add(s, "interval_rejects_bad_period", test_time_interval_rejects_bad_period, 10);
  return tg_test_main(s);
}
