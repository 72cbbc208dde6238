/* health.h - the health checker: request/response over oneshot channels.
 *
 * Every interval it picks 2-3 distinct devices at random and asks each, in
 * turn: a fresh oneshot pair, the sender half put on the device's own
 * request mpsc, then a wait of at most the timeout on the receiver half.
 * Each check ends one of four ways, each counted: an answer (ok), no
 * answer in time (timeout), the device dropped the reply sender (dropped),
 * or the device's task has ended and its request channel is closed
 * (unreachable). The cancel token is the first case of every wait.
 *
 * Devices that come and go (serve's connections) are reached through
 * hooks instead of the fixed `devices` array: `pick` chooses whom to ask
 * among those connected, `ask` delivers a request (as try_send would) and
 * `name` gives the id to log. health_ask is one exchange, for the rounds
 * and for on-demand checks from other tasks. */
#ifndef TELEGATE_HEALTH_H
#define TELEGATE_HEALTH_H

#include "figure.h"
#include "log.h"
#include "rng.h"
#include "tg/tg.h"

#include <stdint.h>

/* What the health checker sends a device: where to answer. */
typedef struct health_request {
  tg_oneshot_tx *reply; /* owned by whoever holds the request */
  uint64_t id;
} health_request;

/* A device's answer. */
typedef struct device_status {
  uint32_t device;
  uint32_t battery; /* percent */
  int64_t uptime_ms;
  uint64_t readings; /* sent so far */
} device_status;

typedef struct health_checker health_checker;

typedef struct health_opts {
  tg_cancel *cancel;
  demo_log *log;
  int64_t t0, interval_ns, timeout_ns;
  rng rng; /* whom to ask: a stream of its own */
  /* The demo's fixed devices: request senders, index = device id - 1,
   * moved into the checker (it drops them when it ends, or in
   * health_checker_free). */
  int ndevices;
  tg_mpsc_tx *const *devices;
  /* Or serve's devices that come and go: the hooks, all or none. */
  int (*pick)(void *ctx, rng *g, uint32_t *out, int k); /* returns how many */
  int (*ask)(void *ctx, uint32_t device,
             const health_request *req); /* 0, TG_ECLOSED, TG_EFULL, -EBUSY (asked too often), -ENOENT, -EOPNOTSUPP */
  const char *(*name)(void *ctx, uint32_t device);
  void *ctx;
} health_opts;

/* The rounds' and health_ask's results, counted from any worker. */
typedef struct health_figures {
  uint64_t rounds, ok, timeout, dropped, unreachable;
} health_figures;

/* Returns 0 or TG_ENOMEM (the device senders are dropped then). */
int health_checker_new(const health_opts *opts, health_checker **out);

/* The rounds' period and timeout from the next round on (a reload); any
 * thread. interval_ns > 0: rounds that were off stay off. */
void health_checker_set_cadence(health_checker *hc, int64_t interval_ns, int64_t timeout_ns);

/* Frees hc once its task has ended (or never ran) and no health_ask is
 * in progress. */
void health_checker_free(health_checker *hc);

void health_figures_get(const health_checker *hc, health_figures *out);

/* One request/response exchange with `device`, waiting at most timeout_ns;
 * with `watch_cancel` the cancel token ends the wait too. Counted and
 * logged as the rounds' checks. Returns 0 with *out filled, TG_ETIMEDOUT
 * (also when `ask` said -EBUSY: nothing was written, nothing counted here),
 * TG_ECLOSED (dropped, or unreachable), -ENOENT (no such device),
 * -EOPNOTSUPP (the device does not answer health requests),
 * TG_ECANCELED (the token fired, or the caller was aborted). Any task. */
int health_ask(health_checker *hc, uint32_t device, int64_t timeout_ns, int watch_cancel, device_status *out);

/* The task: arg is a health_checker *. Returns NULL. */
void *health_task(void *arg);

#endif
