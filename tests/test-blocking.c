/* test-blocking.c - blocking calls run off the worker: other tasks keep
 * running meanwhile, and results come back. */
#include "helpers.h"

#include <pthread.h>

typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open;
} gate;

/* Blocks its pool thread until a task on the worker opens the gate: it
 * can only return if the worker went on running tasks meanwhile. */
static int wait_for_gate(void *arg) {
  gate *g = arg;
  pthread_mutex_lock(&g->mu);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  return 42;
}

static void *open_gate(void *arg) {
  gate *g = arg;
  tg_yield();
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

static void *off_worker_body(void *arg) {
  (void)arg;
  gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
  tg_task *t;
  tg_spawn(&t, open_gate, &g, NULL);
  ck_assert_int_eq(tg_blocking_run(wait_for_gate, &g), 42);
  tg_task_join(t, NULL);
  return NULL;
}

START_TEST(test_blocking_does_not_block_the_worker) { tg_test_run(1, 0, off_worker_body, NULL); }
END_TEST

static int add_one(void *arg) { return *(int *)arg + 1; }

static void *inline_body(void *arg) {
  (void)arg;
  int x = 4;
  ck_assert_int_eq(tg_blocking_run(add_one, &x), 5);
  return NULL;
}

START_TEST(test_blocking_virtual_clock_inline) { tg_test_run_virtual(inline_body, NULL); }
END_TEST

START_TEST(test_blocking_plain_thread) {
  int x = 1;
  ck_assert_int_eq(tg_blocking_run(add_one, &x), 2);
}
END_TEST

int main(void) {
  Suite *s = suite_create("blocking");
  tg_test_add(s, "does_not_block_the_worker", test_blocking_does_not_block_the_worker, 20);
  tg_test_add(s, "virtual_clock_inline", test_blocking_virtual_clock_inline, 10);
  tg_test_add(s, "plain_thread", test_blocking_plain_thread, 10);
  return tg_test_main(s);
}
