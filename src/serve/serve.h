/* serve.h - `telegate serve`: the demo's pipeline with real devices over TCP.
 *
 * Devices connect to --listen-devices and send one reading per line (JSON
 * or InfluxDB line protocol, docs/protocol.md). Each connection is a task
 * that parses lines in place from the socket's buffer and sends readings
 * into the telemetry mpsc; when that channel is full the task waits in
 * tg_mpsc_send and stops reading its socket, so TCP pushes back on the
 * device. From there on the pipeline is the demo's: one aggregator
 * (coalesced snapshots to a watch and a broadcast, batches cut by size or
 * age), one storage stage (batch writers through the DB pool semaphore and
 * tg_blocking_run), a health checker that asks devices over their own
 * connections, and one latched cancel token for the ordered shutdown.
 *
 * Shutdown (serve_stop, SIGINT, SIGTERM): the listener closes; every
 * connection reads what its device already sent (until it hangs up or
 * the drain time is over); the aggregator drains the telemetry
 * channel until the last connection dropped its sender and hands over the
 * final batch; storage commits every batch; every task is joined. Every
 * reading read from a socket is then in the database (or counted as a
 * resend the high-water mark dropped). Storage that cannot commit gets
 * storage_shutdown_timeout_ms after the drain; then what is left is
 * aborted, and every reading read but not committed - in the telemetry
 * channel, the aggregator's batch, the storage channel or a writer - is
 * counted (readings_unstored), logged and in the summary: those were
 * never acknowledged, and their devices must send them again.
 *
 * Threads: serve_stop, serve_figures_get and serve_health_check may be
 * called from any task on any worker (serve_stop also from a plain
 * thread) while serve runs, that is between serve_start and the return of
 * serve_wait. Everything else is called from one task. */
#ifndef TELEGATE_SERVE_H
#define TELEGATE_SERVE_H

#include "gateway.h"
#include "health.h"
#include "histogram.h"
#include "log.h"
#include "source_write.h"
#include "storage.h"
#include "tg/tg.h"
#include "tls.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A bounded channel between two stages. */
typedef struct serve_queue_figures {
  uint64_t len, capacity;
  uint64_t senders_waiting; /* blocked in send right now */
  uint64_t full_waits;      /* sends that had to wait: backpressure events, ever */
} serve_queue_figures;

typedef struct serve_permit_figures {
  uint64_t permits, in_use, waiters;
  uint64_t waits; /* acquires that had to wait, ever */
} serve_permit_figures;

/* The MQTT source's (source.h has what each one means); 0 without --mqtt. */
typedef struct serve_mqtt_figures {
  uint64_t connected; /* gauge */
  uint64_t connects, connect_failures, disconnects;
  uint64_t messages, redelivered, acks;
  uint64_t inflight, inflight_max; /* gauges */
} serve_mqtt_figures;

/* The NATS source's (source.h has what each one means); 0 without --nats. */
typedef struct serve_nats_figures {
  uint64_t connected; /* gauge */
  uint64_t connects, connect_failures, disconnects;
  uint64_t messages, redelivered, acks, requests_lost;
  uint64_t inflight, inflight_max, pending; /* gauges */
  uint64_t partitions_held, nodes;          /* gauges */
  uint64_t leases_lost, leases_claimed;
} serve_nats_figures;

/* What this node's own sources published to the stream
 * (nats_publish.h); 0 without --nats. */
typedef struct serve_nats_publish_figures {
  uint64_t connected; /* gauge */
  uint64_t messages, readings, retries;
  uint64_t inflight, queued_bytes; /* gauges */
  uint64_t unpublished;
} serve_nats_publish_figures;

/* The fleet view's (sources/fleet.h has what each one means); 0 without --nats. */
typedef struct serve_fleet_figures {
  uint64_t connected, nodes; /* gauges */
  uint64_t messages_sent, bytes_sent, messages_received, bytes_received;
  uint64_t devices_sent, devices_received, devices_dropped, syncs;
  uint64_t health_forwarded, health_answered;
} serve_fleet_figures;

/* Everything serve counts, for /metrics and /api/snapshot. Counters only
 * grow; gauges are marked. Stable: fields are only ever added. */
typedef struct serve_figures {
  int64_t uptime_ms;
  int64_t started_unix_ms; /* wall clock at serve_start */
  int listen_port;
  int stopping; /* gauge: shutdown has begun */
  /* device connections */
  uint64_t connections_accepted;
  uint64_t connections_rejected;            /* over --max-connections */
  uint64_t connections_rejected_per_client; /* over --max-connections-per-client */
  uint64_t hello_timeouts;                  /* closed without an authenticating hello in time */
  uint64_t connections_closed;
  uint64_t connections_closed_errors;  /* closed after --error-limit bad lines */
  uint64_t connections_write_timeouts; /* closed because the device did not read */
  uint64_t connections_open;           /* gauge */
  uint64_t devices_known;              /* gauge: distinct device ids seen */
  uint64_t devices_connected;          /* gauge: devices whose last connection is open */
  uint64_t devices_active;             /* gauge: heard from within --stale-after, in the latest snapshot */
  uint64_t devices_stale;              /* gauge: silent for longer, in the latest snapshot */
  uint64_t bytes_received;
  uint64_t lines_received;
  /* readings through the pipeline: received == aggregated once drained;
   * aggregated == stored + duplicates once committed */
  uint64_t readings_received; /* parsed and sent into the telemetry channel */
  uint64_t readings_aggregated;
  uint64_t readings_stored;    /* committed (counted, with --storage none) */
  uint64_t readings_duplicate; /* resends at or below the device's high-water mark */
  uint64_t readings_unstored;  /* gauge: received - stored - duplicate - published; at the end, what was lost */
  uint64_t bad_lines;          /* sum of bad_input */
  uint64_t bad_input[SERVE_BAD_REASONS]; /* per reason; [0] unused */
  uint64_t error_lines_sent;
  uint64_t error_lines_suppressed;                   /* over --error-lines-per-s */
  uint64_t hellos;                                   /* hello lines from devices */
  uint64_t acks_sent;                                /* ack lines written (one per device per write) */
  uint64_t connections_authenticated;                /* hellos whose token matched a credential */
  uint64_t line_rate_waits;                          /* connections not read for a while, over --lines-per-s */
  uint64_t credential_reloads;                       /* credentials files reloaded (SIGHUP) */
  uint64_t credential_reload_errors;                 /* reloads refused: the file was bad, the old set stayed */
  uint64_t tls_handshakes;                           /* device connections that completed a TLS handshake */
  uint64_t tls_failures;                             /* device connections refused at the handshake */
  uint64_t writes, writes_refused, writes_timed_out; /* write API bodies: source.h */
  serve_mqtt_figures mqtt;                           /* the MQTT subscription (--mqtt) */
  serve_nats_figures nats;                           /* the JetStream consumer (--nats) */
  serve_nats_publish_figures nats_publish;           /* the sources' readings published to it (--nats) */
  serve_fleet_figures fleet;                         /* the fleet view (--nats) */
  /* stages and backpressure */
  serve_queue_figures telemetry;  /* readings, connections -> aggregator */
  serve_queue_figures storage;    /* batches, aggregator -> storage */
  serve_permit_figures bandwidth; /* connections being read */
  serve_permit_figures db_pool;
  uint64_t batches_flushed, batches_stored, batches_lost;
  uint64_t transactions, write_retries;
  histogram_figures commit_time;       /* each transaction, retries included */
  histogram_figures reading_commit;    /* per reading: its batch's first reading to the commit */
  int storage_failing;                 /* gauge: a commit failed and none succeeded since */
  uint64_t history_behind;             /* gauge: rows stored and not yet in the history index */
  uint64_t retention_deleted;          /* readings deleted by --retention */
  uint64_t retention_passes;           /* its passes over the devices */
  int64_t retention_last_pass_unix_ms; /* gauge: when the last pass ended; 0: none */
  int64_t storage_failing_ms;          /* gauge: for how long; 0 when not failing */
  /* snapshots and clients */
  uint64_t snapshots_published;               /* = the latest snapshot's version */
  uint64_t broadcast_len, broadcast_capacity; /* gauge */
  uint64_t broadcast_receivers;               /* gauge: subscribed clients */
  uint64_t lag_events, lagged_messages;       /* over all broadcast receivers */
  uint64_t clients_connected;                 /* gauge: what serve_clients_add says */
  /* health checks: the checker's rounds and on-demand ones together */
  struct {
    uint64_t rounds;   /* the checker's */
    uint64_t requests; /* written to a device */
    uint64_t ok, timeout;
    uint64_t disconnected;      /* not connected when asked, or hung up before answering */
    uint64_t unknown;           /* no such device id */
    uint64_t unmatched_replies; /* a reply nobody waits for (late, or wrong id) */
    uint64_t rate_limited;      /* requests not written: over --health-per-device-per-s */
  } health;
  /* the runtime */
  uint64_t tasks_alive; /* gauge */
  int workers;
} serve_figures;

/* Builds the pipeline, binds the listener and starts every task; called
 * from a task (the runtime must have cfg->workers workers). *out is the
 * running serve. Sets SIGPIPE to be ignored and raises the soft limit of
 * descriptors to the hard one. Returns 0, or a negative code with a
 * one-line reason in err naming the cause (the path, the address, the
 * error's text): TG_EINVAL (a setting out of range), TG_ENOMEM, -EIO
 * (the database), or the listener's bind error (-EADDRINUSE, ...). A
 * start that fails has stopped and joined whatever it had started, and
 * writes no summary: no run happened. */
int serve_start(const serve_config *cfg, serve **out, char *err, size_t errlen);

/* The port devices connect to (useful with listen_port 0). */
int serve_port(serve *s);

/* Requests the ordered shutdown; idempotent; any thread. */
void serve_stop(serve *s);

/* Waits until serve has shut down and every task is joined, writes the
 * summary, and frees s. *final (may be NULL) gets the last figures.
 * Returns 0 when nothing was lost (received == aggregated == stored +
 * duplicates, no batch lost, no task aborted), 1 otherwise. */
int serve_wait(serve *s, serve_figures *final);

/* Starts a runtime of cfg->workers workers, runs serve until SIGINT or
 * SIGTERM (with handle_signals) or serve_stop, and returns serve_wait's
 * result, or a negative code with err set when it could not start
 * (serve_start's, or the runtime's). */
int serve_run(const serve_config *cfg, serve_figures *final, char *err, size_t errlen);

/* The figures right now. Any task or thread, while serve runs. */
void serve_figures_get(serve *s, serve_figures *out);

/* Whether storage is failing: 0, or 1 with "storage failing since 3.2 s:
 * <the latest reason>" in why. Any task or thread, while serve runs. */
int serve_storage_failing(serve *s, char *why, size_t whylen);

/* Asks device `device_id` for its health over its connection and waits
 * at most timeout_ns for the answer. Returns 0 with *out filled,
 * TG_ETIMEDOUT (no answer in time, the connection's request queue is
 * full, or the device was asked too often: --health-per-device-per-s), -ENOENT (no device has sent this id), -EOPNOTSUPP (its hello did
 * not say it answers health requests), TG_ECLOSED (the device is
 * not connected, or hung up before answering) or TG_ECANCELED (the caller
 * was aborted). Counted in figures.health. Any task, any worker. */
int serve_health_check(serve *s, const char *device_id, int64_t timeout_ns, device_status *out);

/* Writes an InfluxDB write API body and waits for its commit: see
 * source_write.h, whose codes it returns (TG_ECLOSED also when serve has
 * no HTTP side). Any task. */
int serve_write(serve *s, const write_request *rq, write_result *res);

/* Reads the credentials file again and swaps it in (credentials.h),
 * as SIGHUP does; changes gets what changed by credential name. Returns
 * 0, -ENOENT (serve runs without credentials) or credentials_reload's
 * codes with err set; the previous credentials then stay. Any thread. */
int serve_credentials_reload(serve *s, char *changes, size_t changeslen, char *err, size_t errlen);

/* For the HTTP side. The shutdown token: fired when shutdown begins. */
tg_cancel *serve_shutdown_token(serve *s);

/* The HTTP side's TLS context (--http-tls-cert), which serve owns and
 * reloads on SIGHUP; NULL: plain HTTP. */
tls_context *serve_http_tls(serve *s);

/* Subscribes to the snapshots: *latest (may be NULL) follows the watch of
 * the latest one, *updates (may be NULL) gets every published one from
 * now on; both hold `system_snapshot *` (snapshot.h) and close when the
 * aggregator has drained. Returns 0, TG_ENOMEM, or TG_ECLOSED once the
 * aggregator has ended. */
int serve_subscribe(serve *s, tg_watch_rx **latest, tg_broadcast_rx **updates);

/* Starts fn(arg) as a task that serve joins at shutdown, before the
 * summary; such a task must end once the shutdown token fired. Returns 0
 * or tg_spawn's errors. */
int serve_spawn(serve *s, tg_task_fn fn, void *arg, const char *name);

/* The history of storage (storage.h): the stored fields, or
 * -EOPNOTSUPP when the backend keeps none; and a query, run on the
 * blocking pool so that no worker waits for the database. Any task. */
int serve_history_fields(serve *s, const storage_field **fields, uint32_t *n);
int serve_history(serve *s, const storage_history_query *q, storage_history_result *res, char *err, size_t errlen);

/* Adds delta (+1 or -1) to the clients_connected gauge. */
void serve_clients_add(serve *s, int delta);

/* The log serve writes its events to. */
demo_log *serve_log(serve *s);

/* What a reload (serve_config.on_reload) changes while serve runs; any
 * thread. The health rounds' cadence returns 0, or TG_ECLOSED when the
 * rounds were off at start, or are to be turned off: that takes a
 * restart. */
void serve_set_log_level(serve *s, log_level level);
/* The limits of serve_limits and the health requests per device per
 * second, from cfg. */
void serve_set_limits(serve *s, const serve_config *cfg);
int serve_set_health_cadence(serve *s, int interval_ms, int timeout_ms);

#endif
