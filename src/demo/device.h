/* device.h - a simulated sensor device: one task per device.
 *
 * A device takes a reading every interval (each device a slightly
 * different one), queues for one of the fleet's bandwidth slots (a FIFO
 * Semaphore), holds the slot for the transmit time, and sends the reading
 * into the telemetry mpsc - waiting, slot still held, while the channel is
 * full. A reading counts as sent once the channel accepted it; one
 * measured when shutdown came and never accepted is not counted anywhere.
 * Between readings the device answers health requests that arrive on its
 * own small mpsc, each carrying a oneshot reply sender. It does not answer
 * while it queues for a slot or for channel space: leaving a wait queue
 * to answer would cost it its place in line.
 *
 * Shutdown: every wait selects on the cancel token first. When the task
 * ends - by shutdown, by its own panic (--panic-device) or by abort - a
 * deferred cleanup drops its telemetry sender and every reply sender it
 * still holds, so the aggregator's channel closes when the last device is
 * gone and no health check waits on a dead device. */
#ifndef TELEGATE_DEVICE_H
#define TELEGATE_DEVICE_H

#include "health.h"
#include "log.h"
#include "reading.h"
#include "rng.h"
#include "tg/tg.h"

#include <stdint.h>

typedef enum device_health_fault {
  HEALTH_ANSWER = 0, /* answers at once */
  HEALTH_SLOW,       /* answers after the checker's timeout (--slow-health-device) */
  HEALTH_DROP,       /* drops the reply sender unanswered (--drop-health-device) */
} device_health_fault;

/* What all devices share: the bandwidth slots and their bookkeeping. */
typedef struct device_fleet {
  tg_semaphore *slots;
  int nslots;
  tg_cancel *cancel;
  demo_log *log;
  size_t telemetry_capacity;
  int64_t t0;           /* run start, tg_now() */
  int64_t epoch_ms;     /* Unix time of t0, for reading timestamps */
  int64_t transmit_ns;  /* how long a send holds its slot */
  uint64_t next_ticket; /* slot waits in arrival order ... */
  uint64_t last_served; /* ... and the last one served, to check FIFO */
  uint64_t fifo_violations;
  log_gate slot_gate, full_gate;
} device_fleet;

#define DEVICE_MAX_LATE_REPLIES 4
/* Capacity of each device's health request channel. */
#define DEVICE_HEALTH_QUEUE     4

typedef struct device {
  device_fleet *fleet;
  uint32_t id;
  tg_mpsc_tx *telemetry; /* owned: dropped when the task ends */
  tg_mpsc_rx *health;    /* owned: drained and dropped when the task ends */
  int64_t interval_ns;
  int64_t phase_ns;    /* first reading this long after the start */
  int64_t panic_at_ns; /* run time of the simulated panic; < 0: never */
  device_health_fault fault;
  int64_t slow_reply_ns; /* HEALTH_SLOW: answer this long after the request */
  rng rng;
  /* state */
  uint64_t seq; /* last accepted */
  double temperature, humidity, battery;
  int health_open; /* the checker still holds its sender */
  struct late_reply {
    health_request req;
    int64_t due_ns;
  } late[DEVICE_MAX_LATE_REPLIES];
  int nlate;
  /* figures */
  uint64_t sent, slot_waits, full_waits;
  uint64_t health_answered, health_late, health_dropped;
  int64_t last_sent_ns; /* run time of the last accepted reading; -1 none */
  int ended;
} device;

/* Prepares d (state from its rng); the channels are set by the caller. */
void device_init(device *d, device_fleet *fleet, uint32_t id, uint64_t seed);

/* The task: arg is a device *. Returns NULL. */
void *device_task(void *arg);

#endif
