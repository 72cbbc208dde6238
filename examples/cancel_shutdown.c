/* cancel_shutdown.c - one shutdown token, tasks in different states when
 * it fires: waiting on it, in a select, sleeping between ticks, busy, and
 * not started yet. The token latches, so every one of them sees it. */
#include "tg/tg.h"

#include <stdio.h>

static tg_cancel *shutdown_token;

static long ms(void) { return (long)(tg_now() / TG_MS(1)); }

static void *waiter(void *arg) {
  (void)arg;
  tg_cancel_wait(shutdown_token);
  printf("[%4ld ms] waiter: woken by the token\n", ms());
  return NULL;
}

static void *consumer(void *arg) {
  tg_mpsc_rx *rx = arg;
  int reading;
  tg_case cases[] = {tg_cancel_case(shutdown_token), tg_mpsc_recv_case(rx, &reading)};
  int handled = 0;
  while (tg_select(cases, 2, TG_FOREVER) == 1 && cases[1].result == 0) handled++;
  tg_mpsc_stats st;
  tg_mpsc_stats_get(rx, &st);
  printf("[%4ld ms] consumer: took %d, then the token (its select's first case) won over %zu queued\n", ms(), handled,
         st.len);
  tg_mpsc_rx_drop(rx);
  return NULL;
}

static void *ticker(void *arg) {
  tg_cancel *group = arg; /* a child of the shutdown token */
  int ticks = 0;
  while (tg_cancel_wait_dl(group, tg_deadline_in(TG_MS(300))) == TG_ETIMEDOUT) ticks++;
  printf("[%4ld ms] ticker: its child token fired with the parent after %d ticks\n", ms(), ticks);
  return NULL;
}

static void *busy(void *arg) {
  (void)arg;
  for (int i = 0; i < 1000; i++) tg_yield(); /* works without waiting: misses any wake-up */
  if (tg_cancel_fired(shutdown_token))
    printf("[%4ld ms] busy: done working, and its check finds the token fired\n", ms());
  return NULL;
}

static void *late(void *arg) {
  (void)arg;
  if (tg_cancel_wait(shutdown_token) == 0) printf("[%4ld ms] late: started after the fire, sees it at once\n", ms());
  return NULL;
}

static void *run(void *arg) {
  (void)arg;
  tg_cancel *group;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  if (tg_cancel_new(&shutdown_token, "shutdown") != 0 || tg_cancel_child(shutdown_token, &group) != 0 ||
      tg_mpsc_new(&(tg_mpsc_opts){.capacity = 10, .elem_size = sizeof(int)}, &tx, &rx) != 0)
    return NULL;
  tg_task *tasks[5];
  tg_spawn(&tasks[0], waiter, NULL, NULL);
  tg_spawn(&tasks[1], consumer, rx, NULL);
  tg_spawn(&tasks[2], ticker, group, NULL);
  tg_sleep(TG_MS(1000));
  tg_spawn(&tasks[3], busy, NULL, NULL);
  tg_yield(); /* busy is in its loop now */
  for (int reading = 1; reading <= 3; reading++)
    tg_mpsc_try_send(tx, &reading); /* the consumer has work too when the token fires */
  printf("[%4ld ms] main: fire the shutdown token\n", ms());
  tg_cancel_fire(shutdown_token);
  tg_spawn(&tasks[4], late, NULL, NULL);
  for (int i = 0; i < 5; i++) tg_task_join(tasks[i], NULL);
  printf("[%4ld ms] main: all 5 tasks saw the shutdown\n", ms());
  tg_mpsc_tx_drop(tx);
  tg_cancel_free(group);
  tg_cancel_free(shutdown_token);
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  return tg_run(&opts, run, NULL, NULL) == 0 ? 0 : 1;
}
