/* aggregator.h - the one consumer of the telemetry channel.
 *
 * For each reading: an optional simulated processing time (the reference's
 * "JSON parsing"; a slow aggregator is what fills the telemetry channel),
 * then per-device count, running means and last-seen, then - every
 * `publish_every` readings, or `publish_interval_ns` after the last
 * snapshot if anything changed - one new SystemSnapshot published to the
 * watch (latest value) and the broadcast (every update). The demo
 * publishes after every reading; at ingest rates a snapshot per reading
 * would cost more than the reading (serve coalesces). Every batch
 * interval, or as soon as it holds `batch_max` readings, it cuts the
 * readings gathered so far into a Batch for the storage channel, waiting
 * when that queue is full - the backpressure that reaches back to the
 * devices (and, in serve, to their sockets).
 *
 * Devices are the pipeline's 1-based indexes. The table of per-device
 * state has `ndevices` entries to begin with and grows up to
 * `max_devices` as higher indexes arrive (serve's registry hands them
 * out); readings of devices beyond are counted but not tabled.
 *
 * Shutdown: the cancel token is the first case of its select; once it has
 * fired the aggregator stops cutting batches by time and drains the
 * telemetry channel until every sender is gone (TG_ECLOSED), then
 * publishes a last snapshot if one is pending, sends everything left as
 * one final batch and drops its storage, watch and broadcast senders -
 * which is how storage and clients learn that the run is over. A batch
 * that was waiting for queue space when the token fired is not lost: it
 * stays the current batch and goes out last.
 *
 * The fleet view (in a cluster, sources/fleet.h): the states of devices
 * other nodes aggregate come in on the `remote` channel and take their
 * places in the same table, by this node's index of the device (the
 * registry's, so bounded by max_devices like the local ones). Whichever
 * reading is latest wins, by the device's seq, which is monotonic across
 * nodes (the high-water marks): a remote state replaces a device's entry
 * only when its seq is above the entry's, or equal and the entry is
 * another node's too, so an older message of a node that has since lost
 * the device never overwrites what this node aggregates; a local reading
 * always makes the device this node's again. Remote readings are not
 * aggregated, batched or counted in `aggregated`: the snapshot's
 * total_messages adds the other nodes' own counts as they last said. */
#ifndef TELEGATE_AGGREGATOR_H
#define TELEGATE_AGGREGATOR_H

#include "figure.h"
#include "log.h"
#include "reading.h"
#include "snapshot.h"
#include "tg/tg.h"

#include <stdint.h>

typedef struct aggregator aggregator;

/* One message of the fleet view, owned by whoever holds it (free()). */
typedef struct aggregator_remote {
  const char *self;      /* this node's name, for the snapshots; lives as long as the run */
  uint32_t nodes;        /* nodes heard from, this one included */
  uint64_t remote_total; /* readings the other nodes aggregated, each counted once, as they said last */
  uint32_t n;
  /* .device: this node's index of it; .node: the node aggregating it;
   * .last_seen_ms: in this run's time; .id is the aggregator's to set. */
  device_metrics devices[];
} aggregator_remote;

typedef struct aggregator_opts {
  tg_cancel *cancel;
  demo_log *log;
  snapshot_counters *snapshots;
  const struct schema *schema; /* the names of the readings' fields, for the snapshots; NULL: the article's */
  /* The channel ends, moved into the aggregator by aggregator_new (also
   * when it fails): it drops them when it ends, or in aggregator_free if
   * it never ran. */
  tg_mpsc_rx *telemetry;    /* reading elements */
  tg_mpsc_tx *storage;      /* batch elements */
  tg_watch_tx *latest;      /* system_snapshot * */
  tg_broadcast_tx *updates; /* system_snapshot * */
  tg_mpsc_rx *remote;       /* aggregator_remote *, the fleet view's; NULL: none (one node) */
  int ndevices;             /* devices 1..ndevices named "1".."n" from the start (the demo's) */
  int max_devices;          /* the table grows up to this index; 0: ndevices is fixed */
  /* The id of a device index the table grows to (serve's registry). */
  const char *(*device_name)(void *ctx, uint32_t device);
  void *device_name_ctx;
  /* Called once the aggregator is done, before it drops its channels
   * (the pipeline takes their last figures). */
  void (*on_close)(void *ctx);
  void *on_close_ctx;
  int64_t t0;                  /* tg_now() at the start of the run */
  int64_t batch_interval_ns;   /* cut a batch at least this often */
  int64_t delay_ns;            /* simulated processing time per reading (the demo's) */
  uint32_t batch_max;          /* cut a batch at this many readings; 0: by time only */
  uint64_t publish_every;      /* readings per snapshot at most; 0 or 1: every one */
  int64_t publish_interval_ns; /* a pending change is published this long after the last snapshot */
  /* A device silent for longer is stale (snapshot.h); when set, a snapshot
   * is also published the moment a device turns stale, readings or not,
   * so the latest one never shows a silent device as active. 0: the
   * window of the demo, SNAPSHOT_ACTIVE_MS, and no such snapshots. */
  int64_t stale_after_ns;
  int burst;               /* readings taken per wake before looking at the clock; <= 1: one */
  size_t storage_capacity; /* for the log lines */
} aggregator_opts;

/* What the aggregator counted. Any thread, while it runs or after. */
typedef struct aggregator_figures {
  uint64_t aggregated;
  uint64_t batches_flushed, readings_flushed;
  uint64_t storage_full_waits; /* batches that waited for storage queue space */
  uint64_t snapshots_built;    /* = the latest snapshot's version */
  uint64_t snapshots_broadcast, snapshot_failures;
  int64_t last_reading_ns;                /* run time of the last reading aggregated; -1: none */
  uint32_t devices_active, devices_stale; /* in the latest snapshot */
} aggregator_figures;

/* A new aggregator taking over opts' channel ends. Returns 0 or
 * TG_ENOMEM (the ends are dropped then). */
int aggregator_new(const aggregator_opts *opts, aggregator **out);

/* Frees a that has ended or never ran. */
void aggregator_free(aggregator *a);

/* The task: arg is an aggregator *. Returns NULL. */
void *aggregator_task(void *arg);

void aggregator_figures_get(const aggregator *a, aggregator_figures *out);

#endif
