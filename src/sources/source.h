/* source.h - where readings come from: the contract every source keeps.
 *
 * A source turns input from outside (a TCP port of devices; later the
 * Influx write API, an MQTT subscription, a JetStream consumer) into
 * readings in the pipeline's telemetry channel. It is one file that
 * defines one `source_kind`, and one line in serve's table of sources
 * registers it.
 *
 * At start a source gets a sink: the settings, the shutdown token, the
 * log, the device registry (ids to the pipeline's indexes, and which
 * connection speaks for a device), the device credentials when the
 * settings ask for authentication, the storage (for devices' committed
 * marks) and its own telemetry sender. It spawns
 * its tasks into the sink's JoinSet and returns once it is ready to take
 * input (its port bound), or fails with a one-line reason.
 *
 * Backpressure: a source sends with tg_mpsc_send, which waits while the
 * telemetry channel is full, and stops taking input meanwhile (a TCP
 * source stops reading its sockets), so memory stays bounded whatever
 * the outside sends.
 *
 * Shutdown: when the token fires a source takes no new input, reads what
 * was already sent to it until *drain_until (tg_now() time, set before
 * the token fires), sends it on, and drops its telemetry sender - the
 * sender and every clone of it - last. The pipeline drains once every
 * source has. Its tasks must then end, since serve joins them.
 *
 * In a cluster (--nats), a source whose kind says `publishes` gets as
 * its telemetry sender one of nats_publish.h's channel instead: its
 * readings, checked as always, are published to the JetStream stream and
 * committed by the node consuming the device's partition; acks follow
 * registry_published as they follow commits (registry.h). Nothing else
 * in the source changes.
 *
 * Figures: source_figures, counted by the source and read from any
 * thread; serve adds up all sources' into its own. Bad input is counted
 * per reason (gateway.h), never silently dropped. */
#ifndef TELEGATE_SOURCE_H
#define TELEGATE_SOURCE_H

#include "credentials.h"
#include "gateway.h"
#include "log.h"
#include "nats_publish.h"
#include "registry.h"
#include "storage.h"
#include "tg/tg.h"
#include "tls.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct source_sink {
  const serve_config *cfg;
  const serve_limits *limits; /* cfg's limits as they are now (a reload may change them) */
  tg_cancel *cancel;          /* the shutdown token */
  demo_log *log;
  schema *schema; /* the readings' names and measurements */
  registry *reg;
  credentials_store *creds;           /* with --auth token; NULL: any connection may send for any id */
  storage *db;                        /* storage_mark_get for the seq window; NULL: marks are not looked up */
  tg_joinset *tasks;                  /* where the source spawns its tasks */
  tg_mpsc_tx *telemetry;              /* reading elements; the source's to drop */
  const _Atomic int64_t *drain_until; /* read what was sent until then */
  tls_context *tls;                   /* a source that listens takes TLS with it; NULL: plain */
  nats_publish *stream;               /* with --nats, for a source that publishes: where telemetry goes; else NULL */
} source_sink;

typedef struct source_figures {
  int port;              /* bound, for a source that listens; 0: none */
  int64_t first_byte_ns; /* tg_now() of the first input; 0: none yet */
  /* connections, for a source that has them */
  uint64_t accepted, rejected, closed, open;
  uint64_t rejected_per_client; /* over the limit per client address */
  uint64_t hello_timeouts;      /* closed without an authenticating hello in time */
  uint64_t closed_errors;       /* closed after --error-limit bad lines in a row */
  uint64_t write_timeouts;      /* closed because the peer did not read */
  /* input */
  uint64_t bytes, lines, readings; /* readings: sent into the telemetry channel */
  uint64_t bad[SERVE_BAD_REASONS]; /* per reason; [0] unused */
  uint64_t error_lines_sent, error_lines_suppressed;
  /* health requests written to devices, and replies nobody waited for */
  uint64_t health_requests, health_unmatched;
  /* hello lines, and ack lines written (one per device per write) */
  uint64_t hellos, acks_sent;
  /* hellos whose token matched a credential; waits of connections over --lines-per-s */
  uint64_t authenticated, line_rate_waits;
  /* TLS handshakes completed, and failed (no TLS, a bad or missing client certificate, a stall) */
  uint64_t tls_handshakes, tls_failures;
  /* bodies of the write API: committed, refused unsent (busy, stopping,
   * no credential), sent but not committed in time */
  uint64_t writes, writes_refused, writes_timed_out;
  /* an MQTT subscription (source_mqtt.h); all 0 for other sources */
  struct {
    uint64_t connected;        /* gauge: 1 while the session with the broker is up */
    uint64_t connects;         /* sessions established (CONNACK accepted) */
    uint64_t connect_failures; /* attempts that failed: no connection, refused, no CONNACK */
    uint64_t disconnects;      /* sessions lost (not counting the shutdown's) */
    uint64_t messages;         /* PUBLISH packets received */
    uint64_t redelivered;      /* of them with the DUP flag: the broker sends them again */
    uint64_t acks;             /* PUBACKs sent, each after its readings were committed */
    uint64_t inflight;         /* gauge: received, not yet acknowledged */
    uint64_t inflight_max;     /* gauge: the bound (--mqtt-inflight); reading stops there */
  } mqtt;
  /* a JetStream consumer (source_nats.h); all 0 for other sources */
  struct {
    uint64_t connected;        /* gauge: 1 while the connection to NATS is up and the consumer bound */
    uint64_t connects;         /* sessions established */
    uint64_t connect_failures; /* attempts that failed: no server, no JetStream, the stream or consumer refused */
    uint64_t disconnects;      /* sessions lost (not counting the shutdown's) */
    uint64_t messages;         /* messages fetched */
    uint64_t redelivered;      /* of them delivered before: not acknowledged by a previous session */
    uint64_t requests_lost;    /* pull requests the server ended without a message or status, asked again */
    uint64_t acks;             /* acks sent, each after its readings were committed */
    uint64_t inflight;         /* gauge: fetched, not yet acknowledged */
    uint64_t inflight_max;     /* gauge: the bound (--nats-inflight, the consumer's max_ack_pending) */
    uint64_t pending;          /* gauge: the consumers' lag, messages in the stream not yet delivered */
    uint64_t partitions_held;  /* gauge: partition leases this node holds (nats_leases.h) */
    uint64_t nodes;            /* gauge: nodes alive, as last counted in the lease bucket */
    uint64_t leases_lost;      /* leases lost: a renewal refused, or not renewed in time */
    uint64_t leases_claimed;   /* leases taken: at the start, from a dead node, or handed back by another */
  } nats;
  /* read permits: inputs read at once */
  uint64_t permits, permits_in_use, permit_waiters, permit_waits;
} source_figures;

typedef struct source_kind {
  const char *name;
  /* With --nats, its readings are published to the stream rather than
   * stored here (nats_publish.h): true of the ports devices reach
   * telegate through, false of the stream's own consumer. */
  int publishes;
  /* Whether cfg asks for this source. */
  int (*wanted)(const serve_config *cfg);
  /* Starts the source on `sink` (which it may keep; the sender is moved
   * into it, even on failure). Returns 0 with *state set, or a negative
   * code with a one-line reason in err (TG_ENOMEM, a bind error such as
   * -EADDRINUSE, ...). */
  int (*start)(const source_sink *sink, void **state, char *err, size_t errlen);
  /* Any thread, from start until free. */
  void (*figures_get)(void *state, source_figures *out);
  /* After every task of the source has been joined. */
  void (*free)(void *state);
} source_kind;

#endif
