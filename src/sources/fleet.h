/* fleet.h - the fleet view of a cluster: every node (--nats) publishes
 * the states of the devices it aggregates and of the devices connected
 * to it on core NATS, and merges the others', so that any node's
 * snapshot, stream, dashboard and /metrics show the whole fleet, each
 * device with the node that aggregates it; and a health check reaches a
 * device through the node it is connected to. docs/cluster.md ("The
 * fleet view") is the operator's page.
 *
 * Publishing. Every FLEET_INTERVAL_MS the task reads the latest snapshot
 * and the registry and publishes, on <prefix>.fleet.<node>, the devices
 * that changed since its last publication: those it aggregates whose
 * count moved, and those whose connection to this node came or went (a
 * connection that answers health requests: a device's own, not the
 * session of a broker it publishes through). A
 * message is at most FLEET_MSG_MAX bytes and a round at most
 * FLEET_ROUND_MAX: what does not fit goes in the next round, the round
 * starting where the last one stopped, so the bandwidth is bounded
 * whatever the fleet does and no device waits behind the others. Core
 * NATS, not JetStream: a state is replaced by the next one, nothing is
 * worth keeping. A node that starts, or whose connection comes back,
 * publishes a sync message; every node that hears it publishes all its
 * devices again at its next rounds, so a newcomer learns the devices
 * that have long gone quiet. A node that drops messages (libnats' slow
 * consumer) asks for a sync the same way.
 *
 * Merging. A message's devices are mapped to this node's indexes by
 * their ids through the registry (so at most --max-devices of them,
 * local and remote together; the others are counted and left out) and
 * handed to the aggregator as one aggregator_remote, which keeps the
 * latest reading of each device by seq (aggregator.h). Ages, not clock
 * readings, cross the wire: a device's last_seen_ms becomes this node's
 * run time minus the age its node sent, off by the message's transit
 * only, whatever the machines' clocks say. Field names travel as text
 * and are mapped to this node's schema ids; a name this node's schema
 * does not know is left out of the view (storage loads the stored
 * columns' names at start, so only fields new since then are missing).
 * Totals: each message carries its node's own count of readings
 * aggregated; the fleet's total is this node's plus each other node's
 * latest, so nothing is counted twice. A node that dies stops
 * publishing: its devices keep their last state and turn stale as any
 * silent device does, and the node that takes them over wins them with
 * its first newer reading.
 *
 * Nodes are known by name (--node, the id of the node's leases; a node
 * started again keeps it, and what its earlier instance counted stays
 * in the total), at most FLEET_MAX_NODES names per run, each kept until
 * the run ends since snapshots point at them: the devices of a node
 * past that bound are merged without their node's name.
 *
 * Health. Each node answers on <prefix>.health.<node> (request/reply):
 * the payload names the device and the timeout, the node checks it
 * locally (the `health` hook) and answers with the result and the
 * device's status. fleet_health_ask asks the node a device is
 * connected to, as the fleet view last heard.
 *
 * The wire format (integers LEB128 varints, str8 a length byte then the
 * bytes, f64 IEEE little-endian):
 *   message := "TF" version(1) kind instance total node:str8
 *              nnames(u8) name:str8* ndevices device*
 *     kind 1 a delta, 2 a sync request (no devices); instance: a number
 *     new at each start of the node; total: its readings aggregated
 *   device  := id:str8 flags(u8) [count last_seq age_ms nfields(u8) field*]
 *     flags bit 1: connected to the sender over a connection that answers
 *     health requests; bit 0: aggregated by the sender, the
 *     bracketed part follows
 *   field   := name(u8, an index into the names) type(u8) count value:f64
 *   health request := timeout_ms id:str8
 *   health reply   := result(u8: 0 ok, 1 timeout, 2 unknown id, 3 not
 *                     connected, 4 does not answer, 5 other) battery
 *                     uptime_ms readings
 *
 * Threads: libnats' delivery thread passes every message through a
 * channel to the task, which decodes, merges, publishes and answers
 * health requests (each in a task of its own, at most FLEET_HEALTH_MAX at
 * once). fleet_connected_at, fleet_health_ask and fleet_figures_get may
 * be called from any task while the fleet exists.
 *
 * Shutdown: when the token fires the task ends the health checks it
 * runs, fails the asks still waiting (TG_ECLOSED), closes its
 * connection and drops its channel ends; fleet_free after the task was
 * joined. */
#ifndef TELEGATE_FLEET_H
#define TELEGATE_FLEET_H

#include "aggregator.h"
#include "health.h"
#include "log.h"
#include "registry.h"
#include "schema.h"
#include "tg/tg.h"

#include <stdint.h>

enum {
  FLEET_INTERVAL_MS = 250,       /* a round of publishing at most this often */
  FLEET_MSG_MAX = 64 * 1024,     /* bytes of a message at most (NATS takes 1 MB by default) */
  FLEET_ROUND_MAX = 1024 * 1024, /* bytes of a round at most: 4 MB/s per node */
  FLEET_MAX_NODES = 1024,        /* node names a run keeps */
  FLEET_NODE_MAX = 64,           /* bytes of a node's name */
  FLEET_HEALTH_MAX = 64,         /* health checks answered at once; more are answered "timeout" */
  FLEET_HEALTH_MARGIN_MS = 250,  /* an ask waits for the device's timeout and this */
};

typedef struct fleet fleet;

typedef struct fleet_opts {
  const char *urls;   /* --nats: nats://HOST:PORT[,...] */
  const char *prefix; /* subjects <prefix>.fleet.* and <prefix>.health.*: --nats-consumer */
  const char *node;   /* this node's name, copied */
  tg_cancel *cancel;
  demo_log *log;
  registry *reg;
  const schema *schema;
  int64_t t0;          /* tg_now() at the start of the run: the snapshots' time */
  tg_watch_rx *latest; /* the snapshots (system_snapshot *), moved in */
  tg_mpsc_tx *remote;  /* the aggregator's remote channel (aggregator_remote *), moved in */
  /* A health check of a device connected here (never forwarded): serve's. */
  int (*health)(void *ctx, const char *device_id, int64_t timeout_ns, device_status *out);
  void *health_ctx;
} fleet_opts;

typedef struct fleet_figures {
  uint64_t connected;                         /* gauge */
  uint64_t nodes;                             /* gauge: nodes heard from, this one included */
  uint64_t messages_sent, bytes_sent;         /* deltas and syncs published */
  uint64_t messages_received, bytes_received; /* the other nodes' */
  uint64_t devices_sent, devices_received;    /* device states in them */
  uint64_t devices_dropped;                   /* not merged: over --max-devices, or a bad message */
  uint64_t syncs;                             /* sync requests heard, and asked for after a loss */
  uint64_t health_asked, health_answered;     /* forwarded to another node; answered for one */
} fleet_figures;

/* Connects (libnats retries in the background when no server answers),
 * subscribes and spawns the task into tasks. The ends in opts are moved
 * in, also when it fails. Returns 0, or TG_ENOMEM, -EINVAL (a name too
 * long) or a spawn error, with a one-line reason in err. */
int fleet_start(tg_joinset *tasks, const fleet_opts *o, fleet **out, char *err, size_t errlen);

/* The node device `index` is connected to, as the fleet view last heard;
 * NULL: none but maybe this one. Any task. */
const char *fleet_connected_at(fleet *f, uint32_t index);

/* Asks node `node` to check device_id's health, waiting at most
 * timeout_ns for the device and FLEET_HEALTH_MARGIN_MS more for the
 * reply. Returns the node's answer as serve_health_check's codes: 0
 * with *out filled (out->device is left 0), TG_ETIMEDOUT, -ENOENT,
 * TG_ECLOSED (also: the node is gone, or the fleet is closing),
 * -EOPNOTSUPP, -EIO (another failure); or TG_ENOMEM. Any task. */
int fleet_health_ask(fleet *f, const char *node, const char *device_id, int64_t timeout_ns, device_status *out);

void fleet_figures_get(fleet *f, fleet_figures *out);

/* After the task was joined (or when fleet_start failed: nothing to do). */
void fleet_free(fleet *f);

#endif
