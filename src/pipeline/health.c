/* health.c - the health checker task; see health.h. */
#include "health.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

enum { CHECK_DONE = 0, CHECK_SHUTDOWN = 1 };

struct health_checker {
  health_opts o;        /* o.devices points at `devices` */
  tg_mpsc_tx **devices; /* owned until the task drops them */
  _Atomic uint64_t next_id;
  _Atomic int64_t interval_ns, timeout_ns;          /* the rounds' cadence, which may change live */
  figure rounds, ok, timeout, dropped, unreachable; /* on-demand checks count from any worker */
};

int health_checker_new(const health_opts *opts, health_checker **out) {
  *out = NULL;
  health_checker *hc = calloc(1, sizeof *hc);
  size_t n = opts->ndevices > 0 ? (size_t)opts->ndevices : 0;
  if (hc && n && !(hc->devices = calloc(n, sizeof *hc->devices))) {
    free(hc);
    hc = NULL;
  }
  if (!hc) {
    for (size_t i = 0; i < n; i++)
      if (opts->devices[i]) tg_mpsc_tx_drop(opts->devices[i]);
    return TG_ENOMEM;
  }
  hc->o = *opts;
  for (size_t i = 0; i < n; i++) hc->devices[i] = opts->devices[i];
  hc->o.devices = hc->devices;
  atomic_init(&hc->interval_ns, opts->interval_ns);
  atomic_init(&hc->timeout_ns, opts->timeout_ns);
  *out = hc;
  return 0;
}

static void drop_devices(health_checker *hc) {
  for (int i = 0; hc->devices && i < hc->o.ndevices; i++) {
    if (hc->devices[i]) tg_mpsc_tx_drop(hc->devices[i]);
    hc->devices[i] = NULL;
  }
}

void health_checker_free(health_checker *hc) {
  if (!hc) return;
  drop_devices(hc);
  free(hc->devices);
  free(hc);
}

void health_checker_set_cadence(health_checker *hc, int64_t interval_ns, int64_t timeout_ns) {
  atomic_store(&hc->interval_ns, interval_ns);
  atomic_store(&hc->timeout_ns, timeout_ns);
}

void health_figures_get(const health_checker *hc, health_figures *out) {
  *out = (health_figures){figure_get(&hc->rounds), figure_get(&hc->ok), figure_get(&hc->timeout),
                          figure_get(&hc->dropped), figure_get(&hc->unreachable)};
}

/* "3" for the demo's devices, the id as sent for serve's. */
typedef struct label {
  char s[40];
} label;

static label device_label(health_checker *hc, uint32_t id) {
  label l;
  const char *name = hc->o.name ? hc->o.name(hc->o.ctx, id) : NULL;
  if (name)
    snprintf(l.s, sizeof l.s, "%s", name);
  else
    snprintf(l.s, sizeof l.s, "%u", (unsigned)id);
  return l;
}

int health_ask(health_checker *hc, uint32_t id, int64_t timeout_ns, int watch_cancel, device_status *out) {
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  if (tg_oneshot_new(sizeof(device_status), &tx, &rx) != 0) return TG_ENOMEM;
  health_request req = {.reply = tx, .id = atomic_fetch_add(&hc->next_id, 1) + 1};
  int64_t asked = tg_now();
  label l = device_label(hc, id);
  int r = hc->o.ask ? hc->o.ask(hc->o.ctx, id, &req) : tg_mpsc_try_send(hc->devices[id - 1], &req);
  if (r != 0) { /* the request never left: the sender is still ours */
    tg_oneshot_tx_drop(tx);
    tg_oneshot_rx_drop(rx);
    if (r == -ENOENT || r == -EOPNOTSUPP) return r;
    if (r == -EBUSY) { /* asked too often (the registry counts it): as good as no answer, and nothing was written */
      log_event(hc->o.log, "🏥", "health", (int)id, "health_rate_limited",
                "Device %s not asked: asked too often already (--health-per-device-per-s)", l.s);
      return TG_ETIMEDOUT;
    }
    if (r == TG_ECLOSED) {
      figure_add_shared(&hc->unreachable, 1);
      log_event(hc->o.log, "🏥", "health", (int)id, "health_unreachable",
                hc->o.ask ? "Device %s unreachable: not connected" : "Device %s unreachable: its task has ended", l.s);
      return TG_ECLOSED;
    }
    figure_add_shared(&hc->timeout, 1);
    log_event(hc->o.log, "🏥", "health", (int)id, "health_timeout",
              "Device %s health check timeout: its request queue is full", l.s);
    return TG_ETIMEDOUT;
  }
  device_status st;
  tg_case cs[2] = {tg_cancel_case(hc->o.cancel), tg_oneshot_recv_case(rx, &st)};
  int w;
  if (watch_cancel) {
    w = tg_select(cs, 2, asked + timeout_ns);
  } else if ((w = tg_select(cs + 1, 1, asked + timeout_ns)) == 0) {
    w = 1; /* numbered as in the two-case array */
  }
  int result;
  if (w == 1 && cs[1].result == 0) {
    figure_add_shared(&hc->ok, 1);
    if (out) *out = st;
    log_event(hc->o.log, "🏥", "health", (int)id, "health_ok",
              "Device %s health: uptime=%" PRId64 "s, battery=%" PRIu32 "%%, %" PRIu64 " readings (answered in %" PRId64
              " ms)",
              l.s, st.uptime_ms / 1000, st.battery, st.readings, (tg_now() - asked) / 1000000);
    result = 0;
  } else if (w == 1) {
    figure_add_shared(&hc->dropped, 1);
    log_event(hc->o.log, "🏥", "health", (int)id, "health_dropped", "Device %s health check failed - sender dropped",
              l.s);
    result = TG_ECLOSED;
  } else if (w == TG_ETIMEDOUT) {
    figure_add_shared(&hc->timeout, 1);
    log_event(hc->o.log, "🏥", "health", (int)id, "health_timeout",
              "Device %s health check timeout (no answer in %" PRId64 " ms)", l.s, timeout_ns / 1000000);
    result = TG_ETIMEDOUT;
  } else {
    result = TG_ECANCELED;
  }
  tg_oneshot_rx_drop(rx);
  return result;
}

static int check_round(health_checker *hc) {
  if (tg_cancel_fired(hc->o.cancel)) return CHECK_SHUTDOWN; /* its timer raced the token */
  int k = 2 + (int)rng_below(&hc->o.rng, 2);
  uint32_t pick[64];
  if (hc->o.pick) {
    k = hc->o.pick(hc->o.ctx, &hc->o.rng, pick, k);
    if (k == 0) return CHECK_DONE; /* nobody to ask */
  } else {
    int n = hc->o.ndevices;
    if (k > n) k = n;
    for (int i = 0; i < n; i++) pick[i] = (uint32_t)i + 1;
    for (int i = 0; i < k; i++) { /* a partial shuffle: k distinct devices */
      int j = i + (int)rng_below(&hc->o.rng, (uint32_t)(n - i));
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
  figure_add_shared(&hc->rounds, 1);
  log_event(hc->o.log, "🏥", "health", 0, "health_round", "Health round #%" PRIu64 ": asking devices %s",
            figure_get(&hc->rounds), list);
  for (int i = 0; i < k; i++) {
    if (tg_cancel_fired(hc->o.cancel)) return CHECK_SHUTDOWN;
    if (health_ask(hc, pick[i], atomic_load(&hc->timeout_ns), 1, NULL) == TG_ECANCELED) return CHECK_SHUTDOWN;
  }
  return CHECK_DONE;
}

void *health_task(void *arg) {
  health_checker *hc = arg;
  int64_t next = hc->o.t0 + atomic_load(&hc->interval_ns);
  while (tg_cancel_wait_dl(hc->o.cancel, next) == TG_ETIMEDOUT) {
    if (check_round(hc) != CHECK_DONE) break;
    int64_t interval = atomic_load(&hc->interval_ns);
    next += interval;
    if (next <= tg_now()) next = tg_now() + interval;
  }
  drop_devices(hc);
  log_event(hc->o.log, "🏥", "health", 0, "health_stopped",
            "Health checker stopped: %" PRIu64 " ok, %" PRIu64 " timeout, %" PRIu64 " dropped, %" PRIu64 " unreachable",
            figure_get(&hc->ok), figure_get(&hc->timeout), figure_get(&hc->dropped), figure_get(&hc->unreachable));
  return NULL;
}
