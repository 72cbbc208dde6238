/* test-demo-shutdown.c - SIGINT in the middle of the run: the ordered
 * shutdown starts at once, finishes within a second and loses nothing. */
#include "test-demo.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

/* The path the SIGINT handler's watcher takes, at a chosen virtual time. */
START_TEST(test_demo_sigint_midway) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.interrupt_at_ms = 4321;
  demo_test_run(&t);
  demo_test_invariants(&t);
  ck_assert_int_eq(t.s.stop_reason, STOP_SIGINT);
  ck_assert_int_eq(t.s.stop_at_ms, 4321);
  ck_assert_double_lt(t.s.runtime_s, 5.4);
  demo_test_cleanup(&t);
}
END_TEST

/* SIGINT under full pressure, at every moment of a batch cycle: batches
 * queued, waiting for the pool, being written - all of them commit. */
START_TEST(test_demo_sigint_under_pressure) {
  for (int at = 5000; at < 5100; at += 7) {
    demo_test t;
    demo_test_init(&t);
    demo_config_preset(&t.cfg, PRESET_PRESSURE);
    t.cfg.interrupt_at_ms = at;
    demo_test_run(&t);
    demo_test_invariants(&t);
    ck_assert_int_eq(t.s.stop_reason, STOP_SIGINT);
    ck_assert_int_eq(t.s.stop_at_ms, at);
    demo_test_cleanup(&t);
  }
}
END_TEST

static void *send_sigint(void *arg) {
  (void)arg;
  nanosleep(&(struct timespec){0, 300 * 1000000}, NULL);
  kill(getpid(), SIGINT);
  return NULL;
}

/* A real SIGINT on the real clock goes through the handler, the pipe and
 * the watcher thread to the same cancel token. */
START_TEST(test_demo_real_sigint) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.clock = TG_CLOCK_REAL;
  t.cfg.duration_s = 60;
  t.cfg.device_interval_ms = 50;
  t.cfg.batch_interval_ms = 100;
  t.cfg.handle_signals = 1;
  struct sigaction before, after;
  sigaction(SIGINT, NULL, &before);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, send_sigint, NULL), 0);
  demo_test_run(&t);
  pthread_join(th, NULL);
  demo_test_invariants_within(&t, 60000);
  ck_assert_int_eq(t.s.stop_reason, STOP_SIGINT);
  ck_assert_double_ge(t.s.runtime_s, 0.3);
  /* The demo's handler is gone again: the one before it is back. */
  sigaction(SIGINT, NULL, &after);
  ck_assert(after.sa_handler == before.sa_handler);
  demo_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("demo-shutdown");
  tg_test_add(s, "sigint_midway", test_demo_sigint_midway, 30);
  tg_test_add(s, "sigint_under_pressure", test_demo_sigint_under_pressure, 60);
  tg_test_add(s, "real_sigint", test_demo_real_sigint, 30);
  return tg_test_main(s);
}
