/* semaphore_fifo.c - 7 devices share 5 bandwidth slots: five get one at
 * once, two wait and are served in the order they arrived. */
#include "tg/tg.h"

#include <stdio.h>

enum { DEVICES = 7, SLOTS = 5 };

typedef struct device {
  int id;
  tg_semaphore *slots;
} device;

static long ms(void) { return (long)(tg_now() / TG_MS(1)); }

static uint64_t in_use(tg_semaphore *sem) {
  tg_semaphore_stats st;
  tg_semaphore_stats_get(sem, &st);
  return st.in_use;
}

static void *send_readings(void *arg) {
  device *d = arg;
  if (tg_semaphore_try_acquire(d->slots, 1) != 0) {
    printf("[%4ld ms] device %d: no slot free, waits\n", ms(), d->id);
    if (tg_semaphore_acquire(d->slots, 1) != 0) return NULL;
  }
  printf("[%4ld ms] device %d: got a slot (%llu/%d in use)\n", ms(), d->id, (unsigned long long)in_use(d->slots),
         SLOTS);
  tg_sleep(TG_MS(100 + 50 * d->id)); /* sending */
  tg_semaphore_release(d->slots, 1);
  printf("[%4ld ms] device %d: done, slot released\n", ms(), d->id);
  return NULL;
}

static void *run(void *arg) {
  (void)arg;
  tg_semaphore *slots;
  if (tg_semaphore_new(&slots, SLOTS, "bandwidth") != 0) return NULL;
  device devices[DEVICES];
  tg_task *tasks[DEVICES];
  for (int i = 0; i < DEVICES; i++) {
    devices[i] = (device){.id = i + 1, .slots = slots};
    tg_spawn(&tasks[i], send_readings, &devices[i], NULL);
    tg_sleep(TG_MS(1)); /* they arrive one after another */
  }
  for (int i = 0; i < DEVICES; i++) tg_task_join(tasks[i], NULL);
  tg_semaphore_stats st;
  tg_semaphore_stats_get(slots, &st);
  printf("[%4ld ms] %llu acquires, %llu had to wait, %llu/%d slots free\n", ms(), (unsigned long long)st.acquired,
         (unsigned long long)st.waits, (unsigned long long)st.available, SLOTS);
  tg_semaphore_free(slots);
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  return tg_run(&opts, run, NULL, NULL) == 0 ? 0 : 1;
}
