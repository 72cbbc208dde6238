/* select_cancel_safe.c - an aggregator selects over a shutdown token
 * (first), a command channel and a busy readings channel. A case that
 * loses keeps its message; the command is served ahead of the queued
 * readings, shutdown wins over them, and the drain still finds every one. */
#include "tg/tg.h"

#include <stdio.h>

static tg_cancel *shutdown_token;
static tg_mpsc_rx *commands, *readings;

static long ms(void) { return (long)(tg_now() / TG_MS(1)); }

static size_t queued(tg_mpsc_rx *rx) {
  tg_mpsc_stats st;
  tg_mpsc_stats_get(rx, &st);
  return st.len;
}

/* A reading every 10 ms until shutdown. */
static void *device(void *arg) {
  tg_mpsc_tx *tx = arg;
  int seq = 0;
  while (tg_cancel_wait_dl(shutdown_token, tg_deadline_in(TG_MS(10))) == TG_ETIMEDOUT) {
    seq++;
    tg_mpsc_send(tx, &seq);
  }
  tg_mpsc_tx_drop(tx);
  return NULL;
}

/* Needs 25 ms per reading, so readings pile up. */
static void *aggregator(void *arg) {
  (void)arg;
  int cmd, seq, last = 0, handled = 0, drained = 0, in_order = 1, won;
  tg_case cases[] = {tg_cancel_case(shutdown_token), tg_mpsc_recv_case(commands, &cmd),
                     tg_mpsc_recv_case(readings, &seq)};
  while ((won = tg_select(cases, 3, TG_FOREVER)) > 0 && cases[won].result == 0) {
    if (won == 1) {
      printf("[%4ld ms] aggregator: command %d wins; the readings case lost and keeps all %zu\n", ms(), cmd,
             queued(readings));
    } else {
      in_order &= seq == ++last;
      handled++;
      tg_sleep(TG_MS(25));
    }
  }
  if (won == 0) printf("[%4ld ms] aggregator: shutdown wins over %zu queued\n", ms(), queued(readings));
  while (tg_mpsc_recv(readings, &seq) == 0) { /* until the device has dropped its sender */
    in_order &= seq == ++last;
    drained++;
  }
  printf("[%4ld ms] aggregator: handled %d + drained %d = %d readings sent, %s\n", ms(), handled, drained, last,
         in_order ? "in order, none lost" : "OUT OF ORDER");
  tg_mpsc_rx_drop(commands);
  tg_mpsc_rx_drop(readings);
  return NULL;
}

static void *run(void *arg) {
  (void)arg;
  tg_mpsc_tx *cmd_tx, *readings_tx;
  if (tg_cancel_new(&shutdown_token, "shutdown") != 0 ||
      tg_mpsc_new(&(tg_mpsc_opts){.capacity = 4, .elem_size = sizeof(int)}, &cmd_tx, &commands) != 0 ||
      tg_mpsc_new(&(tg_mpsc_opts){.capacity = 100, .elem_size = sizeof(int)}, &readings_tx, &readings) != 0)
    return NULL;
  tg_task *tasks[2];
  tg_spawn(&tasks[0], device, readings_tx, NULL);
  tg_spawn(&tasks[1], aggregator, NULL, NULL);
  tg_sleep(TG_MS(300));
  printf("[%4ld ms] main: sends command 7 while %zu readings wait\n", ms(), queued(readings));
  int command = 7;
  tg_mpsc_send(cmd_tx, &command);
  tg_sleep(TG_MS(300));
  printf("[%4ld ms] main: fires the shutdown token\n", ms());
  tg_cancel_fire(shutdown_token);
  for (int i = 0; i < 2; i++) tg_task_join(tasks[i], NULL);
  tg_mpsc_tx_drop(cmd_tx);
  tg_cancel_free(shutdown_token);
  return NULL;
}

int main(void) {
  tg_runtime_opts opts = {.workers = 1, .clock = TG_CLOCK_VIRTUAL};
  return tg_run(&opts, run, NULL, NULL) == 0 ? 0 : 1;
}
