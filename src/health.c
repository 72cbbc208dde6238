/* health.c - the health checker task; see health.h. */
#include "health.h"

#include "device.h"

#include <inttypes.h>
#include <stdio.h>

enum { CHECK_DONE = 0, CHECK_SHUTDOWN = 1 };

/* One request/response exchange with device `id`. */
static int check_device(health_checker *hc, int id) {
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  if (tg_oneshot_new(sizeof(device_status), &tx, &rx) != 0) return CHECK_DONE;
  health_request req = {.reply = tx, .id = ++hc->next_id};
  int64_t asked = tg_now();
  int r = tg_mpsc_try_send(hc->devices[id - 1], &req);
  if (r != 0) { /* the request never left: the sender is still ours */
    tg_oneshot_tx_drop(tx);
    tg_oneshot_rx_drop(rx);
    if (r == TG_ECLOSED) {
      hc->unreachable++;
      log_event(hc->log, "🏥", "health", id, "health_unreachable",
                "Device %d unreachable: its task has ended", id);
    } else {
      hc->timeout++;
      log_event(hc->log, "🏥", "health", id, "health_timeout",
                "Device %d health check timeout: its request queue is full", id);
    }
    return CHECK_DONE;
  }
  device_status st;
  tg_case cs[2] = {tg_cancel_case(hc->cancel), tg_oneshot_recv_case(rx, &st)};
  int w = tg_select(cs, 2, asked + hc->timeout_ns);
  int result = CHECK_DONE;
  if (w == 1 && cs[1].result == 0) {
    hc->ok++;
    log_event(hc->log, "🏥", "health", id, "health_ok",
              "Device %d health: uptime=%" PRId64 "s, battery=%" PRIu32 "%%, %" PRIu64
              " readings (answered in %" PRId64 " ms)",
              id, st.uptime_ms / 1000, st.battery, st.readings, (tg_now() - asked) / 1000000);
  } else if (w == 1) {
    hc->dropped++;
    log_event(hc->log, "🏥", "health", id, "health_dropped",
              "Device %d health check failed - sender dropped", id);
  } else if (w == TG_ETIMEDOUT) {
    hc->timeout++;
    log_event(hc->log, "🏥", "health", id, "health_timeout",
              "Device %d health check timeout (no answer in %" PRId64 " ms)", id,
              hc->timeout_ns / 1000000);
  } else {
    result = CHECK_SHUTDOWN;
  }
  tg_oneshot_rx_drop(rx);
  return result;
}

static int check_round(health_checker *hc) {
  if (tg_cancel_fired(hc->cancel)) return CHECK_SHUTDOWN; /* its timer raced the token */
  int n = hc->ndevices, k = 2 + (int)rng_below(&hc->rng, 2);
  if (k > n) k = n;
  int pick[64];
  for (int i = 0; i < n; i++) pick[i] = i + 1;
  for (int i = 0; i < k; i++) { /* a partial shuffle: k distinct devices */
    int j = i + (int)rng_below(&hc->rng, (uint32_t)(n - i));
    int t = pick[i];
    pick[i] = pick[j];
    pick[j] = t;
  }
  char list[64] = "";
  for (int i = 0; i < k; i++) {
    size_t len = 0;
    while (list[len]) len++;
    snprintf(list + len, sizeof list - len, "%s%d", i ? ", " : "", pick[i]);
  }
  hc->rounds++;
  log_event(hc->log, "🏥", "health", 0, "health_round", "Health round #%" PRIu64 ": asking devices %s",
            hc->rounds, list);
  for (int i = 0; i < k; i++) {
    if (tg_cancel_fired(hc->cancel)) return CHECK_SHUTDOWN;
    if (check_device(hc, pick[i]) != CHECK_DONE) return CHECK_SHUTDOWN;
  }
  return CHECK_DONE;
}

void *health_task(void *arg) {
  health_checker *hc = arg;
  int64_t next = hc->t0 + hc->interval_ns;
  while (tg_cancel_wait_dl(hc->cancel, next) == TG_ETIMEDOUT) {
    if (check_round(hc) != CHECK_DONE) break;
    next += hc->interval_ns;
    if (next <= tg_now()) next = tg_now() + hc->interval_ns;
  }
  for (int i = 0; i < hc->ndevices; i++) {
    tg_mpsc_tx_drop(hc->devices[i]);
    hc->devices[i] = NULL;
  }
  log_event(hc->log, "🏥", "health", 0, "health_stopped",
            "Health checker stopped: %" PRIu64 " ok, %" PRIu64 " timeout, %" PRIu64 " dropped, %" PRIu64
            " unreachable",
            hc->ok, hc->timeout, hc->dropped, hc->unreachable);
  return NULL;
}
