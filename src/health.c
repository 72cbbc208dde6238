/* health.c - the health checker task; see health.h. */
#include "health.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

enum { CHECK_DONE = 0, CHECK_SHUTDOWN = 1 };

/* "3" for the demo's devices, the id as sent for serve's. */
typedef struct label {
  char s[40];
} label;

static label device_label(health_checker *hc, uint32_t id) {
  label l;
  const char *name = hc->name ? hc->name(hc->ctx, id) : NULL;
  if (name) snprintf(l.s, sizeof l.s, "%s", name);
  else snprintf(l.s, sizeof l.s, "%u", (unsigned)id);
  return l;
}

int health_ask(health_checker *hc, uint32_t id, int64_t timeout_ns, int watch_cancel, device_status *out) {
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  if (tg_oneshot_new(sizeof(device_status), &tx, &rx) != 0) return TG_ENOMEM;
  health_request req = {.reply = tx, .id = atomic_fetch_add(&hc->next_id, 1) + 1};
  int64_t asked = tg_now();
  label l = device_label(hc, id);
  int r = hc->ask ? hc->ask(hc->ctx, id, &req) : tg_mpsc_try_send(hc->devices[id - 1], &req);
  if (r != 0) { /* the request never left: the sender is still ours */
    tg_oneshot_tx_drop(tx);
    tg_oneshot_rx_drop(rx);
    if (r == -ENOENT) return r;
    if (r == TG_ECLOSED) {
      hc->unreachable++;
      log_event(hc->log, "🏥", "health", (int)id, "health_unreachable",
                hc->ask ? "Device %s unreachable: not connected" : "Device %s unreachable: its task has ended", l.s);
      return TG_ECLOSED;
    }
    hc->timeout++;
    log_event(hc->log, "🏥", "health", (int)id, "health_timeout",
              "Device %s health check timeout: its request queue is full", l.s);
    return TG_ETIMEDOUT;
  }
  device_status st;
  tg_case cs[2] = {tg_cancel_case(hc->cancel), tg_oneshot_recv_case(rx, &st)};
  int w;
  if (watch_cancel) {
    w = tg_select(cs, 2, asked + timeout_ns);
  } else if ((w = tg_select(cs + 1, 1, asked + timeout_ns)) == 0) {
    w = 1; /* numbered as in the two-case array */
  }
  int result;
  if (w == 1 && cs[1].result == 0) {
    hc->ok++;
    if (out) *out = st;
    log_event(hc->log, "🏥", "health", (int)id, "health_ok",
              "Device %s health: uptime=%" PRId64 "s, battery=%" PRIu32 "%%, %" PRIu64
              " readings (answered in %" PRId64 " ms)",
              l.s, st.uptime_ms / 1000, st.battery, st.readings, (tg_now() - asked) / 1000000);
    result = 0;
  } else if (w == 1) {
    hc->dropped++;
    log_event(hc->log, "🏥", "health", (int)id, "health_dropped",
              "Device %s health check failed - sender dropped", l.s);
    result = TG_ECLOSED;
  } else if (w == TG_ETIMEDOUT) {
    hc->timeout++;
    log_event(hc->log, "🏥", "health", (int)id, "health_timeout",
              "Device %s health check timeout (no answer in %" PRId64 " ms)", l.s, timeout_ns / 1000000);
    result = TG_ETIMEDOUT;
  } else {
    result = TG_ECANCELED;
  }
  tg_oneshot_rx_drop(rx);
  return result;
}

static int check_round(health_checker *hc) {
  if (tg_cancel_fired(hc->cancel)) return CHECK_SHUTDOWN; /* its timer raced the token */
  int k = 2 + (int)rng_below(&hc->rng, 2);
  uint32_t pick[64];
  if (hc->pick) {
    k = hc->pick(hc->ctx, &hc->rng, pick, k);
    if (k == 0) return CHECK_DONE; /* nobody to ask */
  } else {
    int n = hc->ndevices;
    if (k > n) k = n;
    for (int i = 0; i < n; i++) pick[i] = (uint32_t)i + 1;
    for (int i = 0; i < k; i++) { /* a partial shuffle: k distinct devices */
      int j = i + (int)rng_below(&hc->rng, (uint32_t)(n - i));
      uint32_t t = pick[i];
      pick[i] = pick[j];
      pick[j] = t;
    }
  }
  char list[160] = "";
  for (int i = 0; i < k; i++) {
    size_t len = 0;
    while (list[len]) len++;
    snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", device_label(hc, pick[i]).s);
  }
  hc->rounds++;
  log_event(hc->log, "🏥", "health", 0, "health_round", "Health round #%" PRIu64 ": asking devices %s",
            (uint64_t)hc->rounds, list);
  for (int i = 0; i < k; i++) {
    if (tg_cancel_fired(hc->cancel)) return CHECK_SHUTDOWN;
    if (health_ask(hc, pick[i], hc->timeout_ns, 1, NULL) == TG_ECANCELED) return CHECK_SHUTDOWN;
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
  for (int i = 0; hc->devices && i < hc->ndevices; i++) {
    tg_mpsc_tx_drop(hc->devices[i]);
    hc->devices[i] = NULL;
  }
  log_event(hc->log, "🏥", "health", 0, "health_stopped",
            "Health checker stopped: %" PRIu64 " ok, %" PRIu64 " timeout, %" PRIu64 " dropped, %" PRIu64
            " unreachable",
            (uint64_t)hc->ok, (uint64_t)hc->timeout, (uint64_t)hc->dropped, (uint64_t)hc->unreachable);
  return NULL;
}
