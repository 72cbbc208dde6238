/* snapshot.h - the SystemSnapshot: the gateway's state after one update.
 *
 * The aggregator builds one snapshot per update and never touches it
 * again: it is immutable and reference-counted. The watch (latest value),
 * the broadcast ring and every client share that one object; publishing
 * to n receivers costs n reference increments, not n copies. The last
 * snapshot_unref frees it. The channel callbacks below let tg_broadcast
 * and tg_watch hold `system_snapshot *` elements as owned references.
 *
 * Counting: each snapshot points at the demo's snapshot_counters, which
 * tell how many were built and freed, so the summary (and the tests) can
 * see that none leaked and none was copied. */
#ifndef TELEGATE_SNAPSHOT_H
#define TELEGATE_SNAPSHOT_H

#include "tg/broadcast.h"
#include "tg/watch.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The numeric fields a snapshot shows of each device: the first ones it
 * sent. Its other fields are stored all the same (and read through the
 * history API); a snapshot stays small whatever the devices send, since
 * it is copied at every update. */
#define SNAPSHOT_FIELDS 4

/* What the aggregator knows about one device. */
typedef struct device_metrics {
  const char *id;  /* the device's id as sent ("7", "dev-42"); lives as long as the run */
  uint32_t device; /* the pipeline's 1-based index */
  uint64_t count;  /* readings aggregated */
  uint64_t last_seq;
  int64_t last_seen_ms; /* run time of the last reading, ms (this process's, also for another node's device) */
  const char *node;     /* the node aggregating it (the fleet view); NULL: this one. Lives as long as the run */
  int64_t merged_ms;    /* run time another node's state was last merged into it; 0: never */
  /* Its first SNAPSHOT_FIELDS numeric fields: schema ids (0: slot unused),
   * types, and values - a float's running mean, an integer's or a
   * boolean's last value - over the `field_count` readings that had it. */
  uint16_t field_name[SNAPSHOT_FIELDS];
  uint8_t field_type[SNAPSHOT_FIELDS];
  uint32_t field_count[SNAPSHOT_FIELDS];
  double field_value[SNAPSHOT_FIELDS];
} device_metrics;

typedef struct snapshot_counters {
  atomic_uint_fast64_t built, freed;
} snapshot_counters;

typedef struct system_snapshot {
  atomic_uint refs;
  snapshot_counters *counters;
  uint64_t version;        /* 0 for the initial empty state, then 1, 2, ... */
  int64_t at_ms;           /* run time of the update */
  uint64_t total_messages; /* readings aggregated so far */
  uint32_t active_devices; /* devices heard from within stale_after_ms of at_ms */
  uint32_t stale_devices;  /* devices heard from before that: silent, shown stale */
  int64_t stale_after_ms;
  int64_t next_stale_ms;       /* the at_ms at which an active device turns stale if it stays silent; INT64_MAX: none */
  const struct schema *schema; /* the names of the fields' ids; NULL: only the article's are named */
  /* In a cluster (the fleet view): this node's name, and the nodes heard
   * from, this one included; NULL and 1 otherwise. total_messages is then
   * the fleet's: each node's own count once. */
  const char *node;
  uint32_t nodes;
  uint64_t node_messages; /* readings this node aggregated itself: total_messages less the other nodes' */
  /* The fleet's means: of the first SNAPSHOT_FIELDS float fields, the mean
   * of the active devices' means (0: slot unused). */
  uint16_t fleet_name[SNAPSHOT_FIELDS];
  double fleet_mean[SNAPSHOT_FIELDS];
  uint32_t ndevices;
  device_metrics devices[]; /* ndevices entries, [i].device = i + 1 */
} system_snapshot;

/* A new snapshot with one reference, copying `devices`, whose devices
 * are active when heard from within stale_after_ms of at_ms, stale when
 * heard from before; its schema and node are NULL (nodes 1) until the
 * caller sets them, before anyone else sees it. NULL when out of memory. */
system_snapshot *snapshot_new_windowed(snapshot_counters *c, uint64_t version, int64_t at_ms, uint64_t total_messages,
                                       const device_metrics *devices, uint32_t ndevices, int64_t stale_after_ms);

/* snapshot_new_windowed with the window of the demo, SNAPSHOT_ACTIVE_MS. */
system_snapshot *snapshot_new(snapshot_counters *c, uint64_t version, int64_t at_ms, uint64_t total_messages,
                              const device_metrics *devices, uint32_t ndevices);

#define SNAPSHOT_ACTIVE_MS 3000

/* Whether device m of snapshot s is stale (heard from, then silent for
 * longer than s->stale_after_ms at s->at_ms). */
static inline int snapshot_device_stale(const system_snapshot *s, const device_metrics *m) {
  return m->count && s->at_ms - m->last_seen_ms > s->stale_after_ms;
}
/* The name of a field id of s ("" when unknown). */
const char *snapshot_field_name(const system_snapshot *s, uint16_t id);

/* The fleet's mean of float field `name`; 0 when no active device has it. */
double snapshot_fleet_mean(const system_snapshot *s, uint16_t name);

system_snapshot *snapshot_ref(system_snapshot *s);
void snapshot_unref(system_snapshot *s);

/* Channel callbacks: `elem` points at a system_snapshot *. */
void snapshot_elem_clone(void *elem);
void snapshot_elem_drop(void *elem);

/* The aggregator's two outputs, holding `system_snapshot *` references:
 * the broadcast of every update ("updates", `capacity` deep) and the watch
 * of the latest one ("latest"), which starts with an empty version-0
 * snapshot. Returns 0, TG_ENOMEM or TG_EINVAL; on failure nothing is left
 * allocated. */
int snapshot_channels_new(snapshot_counters *c, size_t capacity, tg_broadcast_tx **updates, tg_watch_tx **latest);

#endif
