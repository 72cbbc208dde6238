/* nats_publish.h - the stream as the sink of telegate's own device-facing
 * sources. With --nats, a reading that comes in over this node's device
 * port, write API or MQTT subscription is not stored here: it is
 * published to JetStream subject <subject>.<device>, where devices that
 * speak NATS publish too, and the node that consumes the device's
 * partition commits it (source_nats.h). So a device's readings have one
 * writer whichever node it talks to. docs/cluster.md is the operator's
 * page.
 *
 * The seam: those sources get, instead of the pipeline's telemetry
 * sender, a sender of this module's channel (nats_publish_sender); they
 * check credentials, seqs and ids as on the local path (seq_check.h),
 * and their readings come here in the order they admitted them. One task
 * takes them, writes each as a line of line protocol (measurement,
 * device tag, every field with its type, seq, ts: everything the
 * consuming node needs, with the seq the front node gave a reading that
 * had none and the time it gave one that came without), and appends it
 * to its device's queue of messages (at most MESSAGE_MAX bytes each).
 *
 * Order and delivery. A device has at most one message in flight: its
 * next one is published only once JetStream acknowledged the previous
 * (a PubAck), and a message that fails (an error, no PubAck within
 * ACK_WAIT_MS, the connection lost) is published again before anything
 * newer of the device (with what the device sent since appended, room
 * permitting). So the stream holds a device's
 * readings in the order they came, perhaps with a message twice (the
 * consumer drops the second by the high-water marks), never a later
 * message before an earlier one that was lost - which the marks would
 * turn into a loss. What piles up behind a message in flight goes out
 * as one message: the more a device sends, the more readings a message
 * carries, and the consumer's cost is per message.
 *
 * Each message carries the header NATS_PUBLISH_JUDGED ("Telegate-Judged:
 * 1"): its seqs were judged here (seq_check.h), so the consuming node
 * does not judge them again - were it this node, a device whose clock
 * went back between two readings would have the earlier one refused as
 * seq_restarted there after it was acknowledged here.
 *
 * Acks. Once JetStream acknowledged a message, registry_published marks
 * its device published up to the message's highest seq: the device port
 * owes the device its ack line, an HTTP write waiting on the commits
 * watch is answered, an MQTT message gets its PUBACK - exactly as after a
 * commit on the local path. Nothing is acknowledged to a device before
 * JetStream has it.
 *
 * Backpressure and bounds: at most WINDOW messages are in flight, and
 * the messages waiting hold at most BUFFER_MAX bytes; past that the task
 * stops taking readings, the channel (the telemetry channel's capacity)
 * fills, and the sources stop reading their sockets, as when storage
 * lags on the local path. While NATS is away nothing is published
 * (libnats reconnects by itself), so the same happens after a while; the
 * write API refuses bodies meanwhile (nats_publish_connected).
 *
 * Shutdown: the channel closes once every source dropped its sender
 * (after their drain); the task publishes what it holds and waits for
 * the PubAcks until the drain deadline plus half
 * --storage-shutdown-timeout-ms, then drops what is left (counted as
 * unpublished: never acknowledged, so the devices send it again) and
 * closes its connection.
 *
 * Threads: the task owns the queues. libnats' threads only pass the
 * PubAcks into a channel and wake the task when the connection comes
 * back; figures are read from any thread. */
#ifndef TELEGATE_NATS_PUBLISH_H
#define TELEGATE_NATS_PUBLISH_H

#include "gateway.h"
#include "log.h"
#include "registry.h"
#include "schema.h"
#include "tg/tg.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The header of every message this module publishes (see above). */
#define NATS_PUBLISH_JUDGED "Telegate-Judged"

typedef struct nats_publish nats_publish;

typedef struct nats_publish_opts {
  const serve_config *cfg; /* nats_urls, nats_subject, telemetry_capacity, drain and shutdown times */
  schema *schema;          /* the readings' names */
  registry *reg;           /* device names; registry_published */
  demo_log *log;
  tg_cancel *cancel;                  /* the shutdown token */
  const _Atomic int64_t *drain_until; /* set before the token fires */
} nats_publish_opts;

typedef struct nats_publish_figures {
  uint64_t connected;   /* gauge: 1 while the publishing connection is up */
  uint64_t messages;    /* messages JetStream acknowledged */
  uint64_t readings;    /* readings in them */
  uint64_t retries;     /* messages published again: an error, no PubAck in time */
  uint64_t inflight;    /* gauge: messages published and not yet acknowledged */
  uint64_t queued;      /* gauge: bytes of lines waiting, in flight or not */
  uint64_t unpublished; /* readings dropped at the shutdown without a PubAck */
} nats_publish_figures;

/* Starts the task in tasks (the connection is made in the background:
 * a NATS that is away is retried). Returns 0 with *out set, or a
 * negative code with a one-line reason: -EINVAL (--nats or
 * --nats-subject malformed), TG_ENOMEM. */
int nats_publish_start(tg_joinset *tasks, const nats_publish_opts *o, nats_publish **out, char *err, size_t errlen);

/* A new sender of the channel, for a source: readings (reading.h, with
 * device and seq set) it hands over. 0 or TG_ECLOSED (sealed). */
int nats_publish_sender(nats_publish *p, tg_mpsc_tx **tx);

/* Drops the module's own sender, once every source has its own: the
 * channel closes when the last source drops its. */
void nats_publish_seal(nats_publish *p);

/* Whether the connection to NATS is up. Any thread. */
int nats_publish_connected(const nats_publish *p);

/* Any thread, from start until free. */
void nats_publish_figures_get(const nats_publish *p, nats_publish_figures *out);

/* After the task was joined. */
void nats_publish_free(nats_publish *p);

#endif
