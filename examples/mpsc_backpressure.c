/* mpsc_backpressure.c - a channel of capacity 50 between a device and a
 * busy aggregator: 50 sends complete at once, the 51st waits until the
 * aggregator takes one reading, and the channel's figures show it. */
#include "tg/tg.h"

#include <stdio.h>

enum { CAPACITY = 50, READINGS = 51 };

static long ms(void) { return (long)(tg_now() / TG_MS(1)); }

static void show(const char *when, tg_mpsc_rx *rx) {
  tg_mpsc_stats st;
  tg_mpsc_stats_get(rx, &st);
  printf("[%4ld ms] %s: %s len %zu/%zu, senders waiting %llu, full waits %llu, sent %llu, received %llu\n", ms(), when,
         st.name, st.len, st.capacity, (unsigned long long)st.senders_waiting, (unsigned long long)st.full_waits,
         (unsigned long long)st.sent, (unsigned long long)st.received);
}

static void *device(void *arg) {
  tg_mpsc_tx *tx = arg;
  for (int seq = 1; seq <= READINGS; seq++) {
    int64_t start = tg_now();
    if (tg_mpsc_send(tx, &seq) != 0) break;
    if (seq == CAPACITY) printf("[%4ld ms] device: sends 1-%d completed at once\n", ms(), CAPACITY);
    if (tg_now() > start)
      printf("[%4ld ms] device: send %d waited %ld ms for room\n", ms(), seq, (long)((tg_now() - start) / TG_MS(1)));
  }
  tg_mpsc_tx_drop(tx); /* the aggregator sees TG_ECLOSED once it has read everything */
  return NULL;
}

static void *run(void *arg) {
  (void)arg;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  tg_mpsc_opts opts = {.capacity = CAPACITY, .elem_size = sizeof(int), .name = "telemetry"};
  if (tg_mpsc_new(&opts, &tx, &rx) != 0) return NULL;
  tg_task *dev;
  tg_spawn(&dev, device, tg_mpsc_tx_clone(tx), NULL);
  tg_sleep(TG_SEC(1)); /* the aggregator is busy: the device fills the channel and waits */
  show("aggregator busy", rx);
  int extra = 0;
  printf("[%4ld ms] meanwhile try_send: %s\n", ms(), tg_err_name(tg_mpsc_try_send(tx, &extra)));
  tg_mpsc_tx_drop(tx);

  int seq, taken = 1;
  tg_mpsc_recv(rx, &seq);
  printf("[%4ld ms] aggregator: takes reading %d; the waiting send's reading moves in\n", ms(), seq);
  show("after one recv", rx);
  while (tg_mpsc_recv(rx, &seq) == 0) taken++;
  printf("[%4ld ms] aggregator: took %d readings, the last one %d, then TG_ECLOSED\n", ms(), taken, seq);
  show("at the end", rx);
  tg_task_join(dev, NULL);
  tg_mpsc_rx_drop(rx);
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  return tg_run(&opts, run, NULL, NULL) == 0 ? 0 : 1;
}
