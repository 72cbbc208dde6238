/* notify_waiters.c - notify_waiters wakes the 12 tasks waiting at that
 * moment and stores nothing, so a 13th that arrives later misses it;
 * notify_one would have stored a permit for it. */
#include "tg/tg.h"

#include <stdio.h>

enum { WAITING = 12 };

static long ms(void) { return (long)(tg_now() / TG_MS(1)); }

typedef struct waiter {
  tg_notify *n;
  int id;
} waiter;

static void *wait_for_signal(void *arg) {
  waiter *w = arg;
  if (tg_notify_wait(w->n) == 0) printf("[%4ld ms] task %d woken\n", ms(), w->id);
  return NULL;
}

static void *late_task(void *arg) {
  tg_notify *n = arg;
  printf("[%4ld ms] task 13 arrives late and waits\n", ms());
  if (tg_notify_wait_dl(n, tg_deadline_in(TG_SEC(1))) == TG_ETIMEDOUT)
    printf("[%4ld ms] task 13: nothing came in 1 s - notify_waiters stored nothing\n", ms());
  tg_notify_one(n); /* nobody waits: stores one permit */
  if (tg_notify_wait(n) == 0) printf("[%4ld ms] task 13: notify_one's stored permit is used at once\n", ms());
  return NULL;
}

static void *run(void *arg) {
  (void)arg;
  tg_notify *n;
  if (tg_notify_new(&n, "signal") != 0) return NULL;
  tg_task *tasks[WAITING + 1];
  waiter ws[WAITING];
  for (int i = 0; i < WAITING; i++) {
    ws[i] = (waiter){.n = n, .id = i + 1};
    tg_spawn(&tasks[i], wait_for_signal, &ws[i], NULL);
  }
  tg_sleep(TG_MS(10));
  tg_notify_stats st;
  tg_notify_stats_get(n, &st);
  printf("[%4ld ms] %llu tasks wait; notify_waiters()\n", ms(), (unsigned long long)st.waiters);
  uint64_t woken = tg_notify_waiters(n);
  for (int i = 0; i < WAITING; i++) tg_task_join(tasks[i], NULL);
  printf("[%4ld ms] notify_waiters woke %llu\n", ms(), (unsigned long long)woken);
  tg_sleep(TG_MS(100));
  tg_spawn(&tasks[WAITING], late_task, n, NULL);
  tg_task_join(tasks[WAITING], NULL);
  tg_notify_stats_get(n, &st);
  printf("[%4ld ms] waits completed: %llu\n", ms(), (unsigned long long)st.notified);
  tg_notify_free(n);
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  return tg_run(&opts, run, NULL, NULL) == 0 ? 0 : 1;
}
