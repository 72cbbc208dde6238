/* device.c - a simulated device task; see device.h. */
#include "device.h"

#include "schema.h"

#include <inttypes.h>

enum { WAIT_DONE = 0, WAIT_SHUTDOWN = 1 };

#define GATE_NS TG_MS(1000)

static int64_t run_ms(const device *d) { return (tg_now() - d->fleet->t0) / 1000000; }

void device_init(device *d, device_fleet *fleet, uint32_t id, uint64_t seed) {
  *d = (device){.fleet = fleet, .id = id, .panic_at_ns = -1, .last_sent_ns = -1, .health_open = 1};
  d->rng = rng_stream(seed, 100 + id);
  d->temperature = rng_range(&d->rng, 20.0, 28.0);
  d->humidity = rng_range(&d->rng, 40.0, 60.0);
  d->battery = rng_range(&d->rng, 80.0, 100.0);
}

static double clamp(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

static reading measure(device *d) {
  d->temperature = clamp(d->temperature + rng_range(&d->rng, -0.6, 0.6), 18.0, 33.0);
  d->humidity = clamp(d->humidity + rng_range(&d->rng, -1.5, 1.5), 30.0, 70.0);
  d->battery = clamp(d->battery - 0.05, 0.0, 100.0);
  reading r = {
      .device = d->id, .measurement = SCHEMA_TELEMETRY, .seq = d->seq + 1, .ts_ms = d->fleet->epoch_ms + run_ms(d)};
  reading_add_float(&r, SCHEMA_TEMPERATURE, d->temperature);
  reading_add_float(&r, SCHEMA_HUMIDITY, d->humidity);
  reading_add_int(&r, SCHEMA_BATTERY, (int64_t)d->battery);
  return r;
}

static void reply(device *d, const health_request *req, int late) {
  device_status st = {
      .device = d->id,
      .battery = (uint32_t)d->battery,
      .uptime_ms = run_ms(d),
      .readings = d->sent,
  };
  if (tg_oneshot_send(req->reply, &st) == 0) {
    d->health_answered++;
    return;
  }
  d->health_late++;
  if (late)
    log_event(d->fleet->log, "🐢", "device", (int)d->id, "health_late_reply",
              "Device %" PRIu32 " answers health check #%" PRIu64 " too late: the checker gave up", d->id, req->id);
}

static void on_health_request(device *d, const health_request *req) {
  switch (d->fault) {
  case HEALTH_DROP:
    tg_oneshot_tx_drop(req->reply);
    d->health_dropped++;
    log_event(d->fleet->log, "🔇", "device", (int)d->id, "health_drop",
              "Device %" PRIu32 " drops health check #%" PRIu64 " without answering", d->id, req->id);
    return;
  case HEALTH_SLOW:
    if (d->nlate < DEVICE_MAX_LATE_REPLIES) {
      d->late[d->nlate++] = (struct late_reply){*req, tg_now() + d->slow_reply_ns};
      return;
    }
    break;
  case HEALTH_ANSWER: break;
  }
  reply(d, req, 0);
}

/* Sends the slow replies that are due (they are in due order). */
static void send_due_replies(device *d) {
  int64_t now = tg_now();
  int i = 0;
  while (i < d->nlate && d->late[i].due_ns <= now) reply(d, &d->late[i++].req, 1);
  for (int j = i; j < d->nlate; j++) d->late[j - i] = d->late[j];
  d->nlate -= i;
}

/* Waits until `op` completes (its result left in op->result) or until
 * `deadline`, answering health requests meanwhile if `serve_health`.
 * Returns WAIT_DONE, TG_ETIMEDOUT, or WAIT_SHUTDOWN (token fired, or the
 * task was aborted). */
static int device_wait(device *d, tg_case *op, int64_t deadline, int serve_health) {
  for (;;) {
    int64_t dl = deadline;
    if (serve_health && d->nlate && d->late[0].due_ns < dl) dl = d->late[0].due_ns;
    health_request req;
    tg_case cs[3];
    int n = 0, iop = -1, ihealth = -1;
    cs[n++] = tg_cancel_case(d->fleet->cancel);
    if (op) {
      iop = n;
      cs[n++] = *op;
    }
    if (serve_health && d->health_open) {
      ihealth = n;
      cs[n++] = tg_mpsc_recv_case(d->health, &req);
    }
    int w = tg_select(cs, n, dl);
    if (w == TG_ETIMEDOUT) {
      if (serve_health) send_due_replies(d);
      if (tg_now() >= deadline) return TG_ETIMEDOUT;
      continue;
    }
    if (iop >= 0 && w == iop) {
      op->result = cs[iop].result;
      return WAIT_DONE;
    }
    if (w >= 0 && w == ihealth) {
      if (cs[ihealth].result == 0)
        on_health_request(d, &req);
      else
        d->health_open = 0; /* the checker has gone */
      continue;
    }
    return WAIT_SHUTDOWN;
  }
}

/* Runs however the task ends, panic included. */
static void device_cleanup(void *arg) {
  device *d = arg;
  for (int i = 0; i < d->nlate; i++) tg_oneshot_tx_drop(d->late[i].req.reply);
  d->nlate = 0;
  /* Requests still queued hold reply senders: the channel would discard
   * them without dropping them. One worker runs this without a switch, so
   * nothing is queued between the drain and the drop. */
  health_request req;
  while (tg_mpsc_try_recv(d->health, &req) == 0) tg_oneshot_tx_drop(req.reply);
  tg_mpsc_rx_drop(d->health);
  tg_mpsc_tx_drop(d->telemetry);
  d->health = NULL;
  d->telemetry = NULL;
  d->ended = 1;
}

/* Takes a bandwidth slot, queueing in FIFO order if none is free.
 * Returns WAIT_DONE or WAIT_SHUTDOWN. */
static int take_slot(device *d) {
  device_fleet *f = d->fleet;
  if (tg_semaphore_try_acquire(f->slots, 1) == 0) return WAIT_DONE;
  uint64_t ticket = ++f->next_ticket;
  d->slot_waits++;
  uint64_t held;
  if (log_gate_pass(&f->slot_gate, tg_now(), GATE_NS, &held)) {
    tg_semaphore_stats st;
    tg_semaphore_stats_get(f->slots, &st);
    log_event(f->log, "📱", "device", (int)d->id, "slot_wait",
              "Device %" PRIu32 " waiting for bandwidth slot (%" PRIu64 "/%d busy, %" PRIu64 " queued ahead)%s", d->id,
              st.in_use, f->nslots, st.waiters, log_held_note(held).s);
  }
  tg_case c = tg_semaphore_acquire_case(f->slots, 1);
  if (device_wait(d, &c, TG_FOREVER, 0) != WAIT_DONE || c.result != 0) return WAIT_SHUTDOWN;
  if (ticket < f->last_served)
    f->fifo_violations++;
  else
    f->last_served = ticket;
  return WAIT_DONE;
}

/* Sends r, waiting while the channel is full. Returns WAIT_DONE with
 * *result 0 or TG_ECLOSED, or WAIT_SHUTDOWN. */
static int send_reading(device *d, const reading *r, int *result) {
  device_fleet *f = d->fleet;
  *result = tg_mpsc_try_send(d->telemetry, r);
  if (*result != TG_EFULL) return WAIT_DONE;
  d->full_waits++;
  uint64_t held;
  if (log_gate_pass(&f->full_gate, tg_now(), GATE_NS, &held))
    log_event(f->log, "📱", "device", (int)d->id, "telemetry_full",
              "Device %" PRIu32 " waiting: telemetry channel full (%zu/%zu), reading #%" PRIu64
              " must wait - backpressure%s",
              d->id, f->telemetry_capacity, f->telemetry_capacity, r->seq, log_held_note(held).s);
  tg_case c = tg_mpsc_send_case(d->telemetry, r);
  if (device_wait(d, &c, TG_FOREVER, 0) != WAIT_DONE) return WAIT_SHUTDOWN;
  *result = c.result;
  return WAIT_DONE;
}

void *device_task(void *arg) {
  device *d = arg;
  device_fleet *f = d->fleet;
  if (tg_defer(device_cleanup, d) != 0) {
    device_cleanup(d);
    return NULL;
  }
  const char *why = "shutdown";
  int64_t next = f->t0 + d->phase_ns;
  for (;;) {
    if (device_wait(d, NULL, next, 1) != TG_ETIMEDOUT) break;
    reading r = measure(d);
    if (take_slot(d) != WAIT_DONE) break;
    if (d->panic_at_ns >= 0 && tg_now() >= d->panic_at_ns)
      tg_panic("Device %" PRIu32 " sensor fault (simulated by --panic-device)", d->id);
    int result = 0;
    int w = f->transmit_ns > 0 ? device_wait(d, NULL, tg_now() + f->transmit_ns, 1) : TG_ETIMEDOUT;
    if (w == TG_ETIMEDOUT) w = send_reading(d, &r, &result);
    tg_semaphore_release(f->slots, 1);
    if (w != WAIT_DONE) break;
    if (result != 0) {
      why = "the aggregator has gone";
      break;
    }
    d->seq = r.seq;
    d->sent++;
    d->last_sent_ns = tg_now() - f->t0;
    /* A device that was held up sends its next reading one interval
     * later, not a burst of the readings it missed. */
    next += d->interval_ns;
    if (next <= tg_now()) next = tg_now() + d->interval_ns;
  }
  log_event(f->log, "📱", "device", (int)d->id, "device_stopped",
            "Device %" PRIu32 " stopped (%s): %" PRIu64 " readings sent", d->id, why, d->sent);
  return NULL;
}
