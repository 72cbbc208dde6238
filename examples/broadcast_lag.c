/* broadcast_lag.c - a slow broadcast receiver lags by exactly the number of
 * messages it missed, then resumes at the oldest one still retained. */
#include "tg/tg.h"

#include <stdio.h>

enum { CAPACITY = 8, SENT = 20 };

/* Busy for a second while all 20 messages go out: only the last 8 are
 * still in the ring when it comes back. */
static void *slow_client(void *arg) {
  tg_broadcast_rx *rx = arg;
  tg_sleep(TG_SEC(1));
  int v, r;
  while ((r = tg_broadcast_recv(rx, &v)) != TG_ECLOSED) {
    if (r == TG_ELAGGED)
      printf("slow client: lagged, missed %llu messages\n", (unsigned long long)tg_broadcast_rx_lagged(rx));
    else
      printf("slow client: got %d\n", v);
  }
  tg_broadcast_stats st;
  tg_broadcast_rx_stats_get(rx, &st);
  printf("slow client: channel closed; lag events %llu, messages missed %llu\n", (unsigned long long)st.lag_events,
         (unsigned long long)st.lagged_messages);
  tg_broadcast_rx_drop(rx);
  return NULL;
}

static void *fast_client(void *arg) {
  tg_broadcast_rx *rx = arg;
  int v, got = 0;
  while (tg_broadcast_recv(rx, &v) == 0) got++;
  printf("fast client: got all %d messages, then closed\n", got);
  tg_broadcast_rx_drop(rx);
  return NULL;
}

static char setup_failed[] = "setup failed";

static void *run(void *arg) {
  (void)arg;
  tg_broadcast_tx *tx;
  tg_broadcast_rx *fast, *slow;
  tg_broadcast_opts opts = {.capacity = CAPACITY, .elem_size = sizeof(int), .name = "snapshots"};
  if (tg_broadcast_new(&opts, &tx, &fast) != 0 || tg_broadcast_subscribe(tx, &slow) != 0) return setup_failed;
  tg_task *tasks[2];
  tg_spawn(&tasks[0], fast_client, fast, NULL);
  tg_spawn(&tasks[1], slow_client, slow, NULL);
  size_t receivers = 0;
  for (int i = 0; i < SENT; i++) {
    tg_broadcast_send(tx, &i, &receivers);
    tg_sleep(TG_MS(10));
  }
  printf("sender: sent %d messages to %zu receivers through a ring of %d\n", SENT, receivers, CAPACITY);
  tg_broadcast_tx_drop(tx); /* receivers drain what is left, then see closed */
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
