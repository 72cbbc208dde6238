/* watch_latest.c - a busy reader of a watch channel wakes once per batch of
 * changes and reads only the latest value; the ones in between are never
 * queued. */
#include "tg/tg.h"

#include <stdio.h>

enum { READINGS = 50 };

/* A sensor publishing a new reading every 10 ms. */
static void *sensor(void *arg) {
  tg_watch_tx *tx = arg;
  for (int reading = 1; reading <= READINGS; reading++) {
    tg_sleep(TG_MS(10));
    tg_watch_send(tx, &reading);
  }
  printf("%4lld ms  sensor: published %d readings, stops\n", (long long)(tg_now() / TG_MS(1)), READINGS);
  tg_watch_tx_drop(tx);
  return NULL;
}

/* A dashboard that needs 100 ms to draw each reading it takes. */
static void *dashboard(void *arg) {
  tg_watch_rx *rx = arg;
  int draws = 0, reading;
  while (tg_watch_changed(rx) == 0) {
    tg_watch_get(rx, &reading);
    printf("%4lld ms  dashboard: draws reading %d\n", (long long)(tg_now() / TG_MS(1)), reading);
    draws++;
    tg_sleep(TG_MS(100));
  }
  printf("%4lld ms  dashboard: sensor gone after %d draws for %d readings\n", (long long)(tg_now() / TG_MS(1)), draws,
         READINGS);
  tg_watch_rx_drop(rx);
  return NULL;
}

static char setup_failed[] = "setup failed";

static void *run(void *arg) {
  (void)arg;
  tg_watch_tx *tx;
  tg_watch_rx *rx;
  int none = 0;
  if (tg_watch_new(&(tg_watch_opts){.elem_size = sizeof(int), .name = "latest"}, &none, &tx, &rx) != 0)
    return setup_failed;
  tg_task *tasks[2];
  tg_spawn(&tasks[0], sensor, tx, NULL);
  tg_spawn(&tasks[1], dashboard, rx, NULL);
  for (int i = 0; i < 2; i++) tg_task_join(tasks[i], NULL);
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  void *failure = NULL;
  int r = tg_run(&opts, run, NULL, &failure);
  if (r != 0 || failure) {
    fprintf(stderr, "%s\n", failure ? (char *)failure : tg_strerror(r));
    return 1;
  }
  return 0;
}
