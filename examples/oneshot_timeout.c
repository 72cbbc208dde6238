/* oneshot_timeout.c - a health check's three endings: a device answers, a
 * device drops the request (TG_ECLOSED), a device answers too late
 * (TG_ETIMEDOUT at 500 ms, and the late answer is still there). */
#include "tg/tg.h"

#include <stdio.h>

typedef struct device {
  const char *name;
  int64_t delay; /* how long it takes to answer */
  int drops;     /* drops the request instead of answering */
  tg_oneshot_tx *reply;
} device;

static long ms(void) { return (long)(tg_now() / TG_MS(1)); }

static void *answer_health_check(void *arg) {
  device *d = arg;
  tg_sleep(d->delay);
  if (d->drops) {
    printf("[%4ld ms] %s: fails and drops the request\n", ms(), d->name);
    tg_oneshot_tx_drop(d->reply);
    return NULL;
  }
  int battery = 87;
  if (tg_oneshot_send(d->reply, &battery) == 0) printf("[%4ld ms] %s: answers\n", ms(), d->name);
  return NULL;
}

static void *check(void *arg) {
  (void)arg;
  device devices[] = {
      {"device 7", TG_MS(100), 0, NULL},
      {"device 3", TG_MS(50), 1, NULL},
      {"device 5", TG_MS(800), 0, NULL},
  };
  for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
    device *d = &devices[i];
    tg_oneshot_rx *rx;
    if (tg_oneshot_new(sizeof(int), &d->reply, &rx) != 0) return NULL;
    int64_t start = tg_now();
    tg_task *t;
    if (tg_spawn(&t, answer_health_check, d, NULL) != 0) return NULL;
    int battery, r = tg_oneshot_recv_dl(rx, &battery, start + TG_MS(500));
    if (r == 0)
      printf("[%4ld ms] checker: %s is healthy, battery %d%%\n", ms(), d->name, battery);
    else if (r == TG_ECLOSED)
      printf("[%4ld ms] checker: %s dropped the request (TG_ECLOSED)\n", ms(), d->name);
    else
      printf("[%4ld ms] checker: %s timed out after %ld ms (TG_ETIMEDOUT)\n", ms(), d->name,
             (long)((tg_now() - start) / TG_MS(1)));
    if (r == TG_ETIMEDOUT && tg_oneshot_recv(rx, &battery) == 0)
      printf("[%4ld ms] checker: a second recv still gets %s's late answer\n", ms(), d->name);
    tg_oneshot_rx_drop(rx);
    tg_task_join(t, NULL);
  }
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  return tg_run(&opts, check, NULL, NULL) == 0 ? 0 : 1;
}
