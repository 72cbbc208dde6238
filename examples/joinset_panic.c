/* joinset_panic.c - 7 device tasks in a JoinSet; device 3 panics. Its
 * cleanup runs, the other six run on to their end, and join_next reports
 * each task as it ends - in completion order, with the panic message. */
#include "tg/tg.h"

#include <stdint.h>
#include <stdio.h>

enum { DEVICES = 7, FAULTY = 3 };

static long ms(void) { return (long)(tg_now() / TG_MS(1)); }

/* How many readings each device sends, one per 100 ms, before it ends. */
static const int readings[DEVICES + 1] = {0, 8, 4, 9, 5, 2, 6, 7};

static int cleanups;

/* Deferred by every device: runs however the task ends. */
static void cleanup(void *arg) {
  cleanups++;
  if ((intptr_t)arg == FAULTY) printf("[%4ld ms] device %d: its deferred cleanup runs\n", ms(), FAULTY);
}

static void *device(void *arg) {
  int id = (int)(intptr_t)arg;
  tg_defer(cleanup, arg);
  for (int n = 1; n <= readings[id]; n++) {
    tg_sleep(TG_MS(100));
    if (id == FAULTY && n == 3) tg_panic("device %d: sensor returned garbage at reading %d", id, n);
  }
  return (void *)(intptr_t)readings[id];
}

static void *run(void *arg) {
  (void)arg;
  tg_joinset *set;
  if (tg_joinset_new(&set, "devices") != 0) return NULL;
  uint64_t ids[DEVICES + 1];
  for (int id = 1; id <= DEVICES; id++)
    if (tg_joinset_spawn(set, device, (void *)(intptr_t)id, NULL, &ids[id]) != 0) return NULL;

  tg_outcome out;
  tg_joinset_stats st;
  int r;
  while ((r = tg_joinset_join_next(set, &out)) == 0) {
    int id = 1;
    while (ids[id] != out.task_id) id++;
    tg_joinset_stats_get(set, &st);
    if (out.status == TG_EPANICKED)
      printf("[%4ld ms] join_next: device %d panicked: \"%s\"; %llu devices still running\n", ms(), id, out.message,
             (unsigned long long)st.running);
    else
      printf("[%4ld ms] join_next: device %d returned after %d readings\n", ms(), id, (int)(intptr_t)out.value);
  }
  tg_joinset_stats_get(set, &st);
  printf("[%4ld ms] deferred cleanups ran in %d of %d devices\n", ms(), cleanups, DEVICES);
  printf("[%4ld ms] join_next: %s; spawned %llu, joined %llu, panicked %llu, cancelled %llu\n", ms(), tg_err_name(r),
         (unsigned long long)st.spawned, (unsigned long long)st.joined, (unsigned long long)st.panicked,
         (unsigned long long)st.cancelled);
  tg_joinset_free(set);
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  return tg_run(&opts, run, NULL, NULL) == 0 ? 0 : 1;
}
