/* aggregator.h - the one consumer of the telemetry channel.
 *
 * For each reading: an optional simulated processing time (the reference's
 * "JSON parsing"; a slow aggregator is what fills the telemetry channel),
 * then per-device count, running means and last-seen, then one new
 * SystemSnapshot published to the watch (latest value) and the broadcast
 * (every update). Every batch interval it cuts the readings gathered so
 * far into a Batch for the storage channel, waiting when that queue is
 * full - the backpressure that reaches back to the devices.
 *
 * Shutdown: the cancel token is the first case of its select; once it has
 * fired the aggregator stops cutting batches and drains the telemetry
 * channel until every device has dropped its sender (TG_ECLOSED), then
 * sends everything left as one final batch and drops its storage,
 * watch and broadcast senders - which is how storage and clients learn
 * that the run is over. A batch that was waiting for queue space when the
 * token fired is not lost: it stays the current batch and goes out last. */
#ifndef TELEGATE_AGGREGATOR_H
#define TELEGATE_AGGREGATOR_H

#include "log.h"
#include "reading.h"
#include "snapshot.h"
#include "tg/tg.h"

#include <stdint.h>

typedef struct aggregator {
  tg_cancel *cancel;
  demo_log *log;
  snapshot_counters *snapshots;
  tg_mpsc_rx *telemetry;      /* owned */
  tg_mpsc_tx *storage;        /* owned */
  tg_watch_tx *latest;        /* owned */
  tg_broadcast_tx *updates;   /* owned */
  int ndevices;
  device_metrics *metrics;    /* ndevices entries; owned */
  int64_t t0, batch_interval_ns, delay_ns;
  size_t storage_capacity;
  batch current;              /* readings not yet handed to storage */
  uint64_t next_batch_id;
  log_gate full_gate, batch_gate;
  /* figures */
  uint64_t aggregated, batches_flushed, readings_flushed, storage_full_waits;
  uint64_t version;           /* snapshots built */
  uint64_t snapshots_broadcast, snapshot_failures;
  int64_t last_reading_ns;    /* run time of the last reading aggregated */
} aggregator;

/* Allocates the metrics table. Returns 0 or -1. */
int aggregator_init(aggregator *a, int ndevices);
void aggregator_free(aggregator *a);

/* The task: arg is an aggregator *. Returns NULL. */
void *aggregator_task(void *arg);

#endif
