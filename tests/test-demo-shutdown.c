/* test-demo-shutdown.c - SIGINT in the middle of the run: the ordered
 * shutdown starts at once, finishes within a second and loses nothing;
 * real SIGINT, SIGTERM and SIGHUP (the terminal went away) alike. */
#include "test-demo.h"

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <string.h>
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

/* A real signal, sent once it is safe to send: the demo has installed
 * its handler (before that, SIGINT would end the test process) and has
 * committed readings, so the signal lands in the middle of the run. */
typedef struct sender {
  int signo;
  struct sigaction before; /* the process's own handler, until the demo's */
  const char *db;
  int64_t rows_seen; /* committed before the signal; -1: never sent */
  char failure[128];
} sender;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t committed_rows(const char *path) {
  sqlite3 *db;
  int64_t n = 0;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 1000);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM readings", -1, &st, NULL) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
      sqlite3_finalize(st);
    }
  }
  sqlite3_close(db);
  return n;
}

/* Far more than either wait needs, even under a sanitizer on a loaded
 * machine; the demo runs 60 s, the test may take 90. */
#define READY_WITHIN_S 30

static void *send_when_ready(void *arg) {
  sender *s = arg;
  s->rows_seen = -1;
  double deadline = now_s() + READY_WITHIN_S;
  struct sigaction now;
  for (;;) {
    sigaction(s->signo, NULL, &now);
    if (now.sa_handler != s->before.sa_handler) break;
    if (now_s() > deadline) {
      snprintf(s->failure, sizeof s->failure, "no handler for %s after %d s", strsignal(s->signo), READY_WITHIN_S);
      return NULL;
    }
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  int64_t rows;
  while ((rows = committed_rows(s->db)) == 0) {
    if (now_s() > deadline) {
      snprintf(s->failure, sizeof s->failure, "nothing committed after %d s", READY_WITHIN_S);
      return NULL;
    }
    nanosleep(&(struct timespec){0, 5000000}, NULL);
  }
  s->rows_seen = rows;
  kill(getpid(), s->signo);
  return NULL;
}

/* The demo on the real clock with its signal handling, stopped by a real
 * signo: the handler, the pipe and the watcher thread lead to the same
 * cancel token, and the ordered shutdown loses nothing. */
static void run_until_signal(int signo, demo_stop_reason want) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.clock = TG_CLOCK_REAL;
  t.cfg.duration_s = 60;
  t.cfg.device_interval_ms = 50;
  t.cfg.batch_interval_ms = 100;
  t.cfg.handle_signals = 1;
  struct sigaction before, after;
  sigaction(signo, NULL, &before);
  sender snd = {.signo = signo, .before = before, .db = t.db};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, send_when_ready, &snd), 0);
  demo_test_run(&t);
  pthread_join(th, NULL);
  ck_assert_msg(snd.rows_seen > 0, "the signal was not sent: %s", snd.failure);
  demo_test_invariants_within(&t, 60000);
  ck_assert_int_eq(t.s.stop_reason, want);
  ck_assert_uint_ge(t.s.db_rows, (uint64_t)snd.rows_seen);
  ck_assert_double_lt(t.s.runtime_s, 60);
  sigaction(signo, NULL, &after);
  if (signo == SIGHUP && before.sa_handler == SIG_DFL) /* a later hang-up must not end the process (signals.h) */
    ck_assert(after.sa_handler == SIG_IGN);
  else /* the demo's handler is gone again: the one before it is back */
    ck_assert(after.sa_handler == before.sa_handler);
  demo_test_cleanup(&t);
}

START_TEST(test_demo_real_sigint) { run_until_signal(SIGINT, STOP_SIGINT); }
END_TEST

START_TEST(test_demo_real_sigterm) { run_until_signal(SIGTERM, STOP_SIGTERM); }
END_TEST

/* The terminal the demo runs in hangs up: the same ordered shutdown. */
START_TEST(test_demo_real_sighup) { run_until_signal(SIGHUP, STOP_SIGHUP); }
END_TEST

int main(void) {
  Suite *s = suite_create("demo-shutdown");
  tg_test_add(s, "sigint_midway", test_demo_sigint_midway, 30);
  tg_test_add(s, "sigint_under_pressure", test_demo_sigint_under_pressure, 60);
  tg_test_add(s, "real_sigint", test_demo_real_sigint, 90);
  tg_test_add(s, "real_sigterm", test_demo_real_sigterm, 90);
  tg_test_add(s, "real_sighup", test_demo_real_sighup, 90);
  return tg_test_main(s);
}
