/* figures.c - the tables of serve's figures and the renderings made from
 * them; see figures.h. */
#include "figures.h"

#include "tg/tg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the tables */

static int each_bad_input(const void *base, int i, char *label, size_t cap, uint64_t *value) {
  const serve_figures *f = base;
  int reason = i + 1;
  if (reason >= SERVE_BAD_REASONS) return 0;
  snprintf(label, cap, "%s", serve_bad_reason_name(reason));
  *value = f->bad_input[reason];
  return 1;
}

#define SF(field) FIGURE_AT(serve_figures, field)
#define COUNTER   .kind = FIGURE_COUNTER
#define GAUGE     .kind = FIGURE_GAUGE

/* In the order of /metrics; on a text line, rows appear in this order. */
static const figure_def serve_rows[] = {
    {"uptime_seconds", GAUGE, .unit = FIGURE_MS, .help = "Seconds since serve started.", SF(uptime_ms),
     .api = "uptime_ms", .summary = "uptime_ms"},
    {"start_time_seconds", GAUGE, .unit = FIGURE_MS, .help = "When serve started, in seconds since the Unix epoch.",
     SF(started_unix_ms), .api = "started_unix_ms", .summary = "started_unix_ms"},
    {"listen_port", GAUGE, .help = "The port devices connect to.", SF(listen_port), .unexported = 1,
     .summary = "listen_port"},
    {"stopping", GAUGE, .unit = FIGURE_FLAG, .help = "1 once the ordered shutdown has begun.", SF(stopping),
     .api = "stopping"},

    {"device_connections_accepted", COUNTER, .help = "Device connections accepted.", SF(connections_accepted),
     .api = "devices.accepted", .summary = "connections_accepted", .line = FIGURE_LINE_CONNECTIONS,
     .text = "# accepted"},
    {"device_connections_rejected", COUNTER, .help = "Device connections refused over the connection limit.",
     SF(connections_rejected), .api = "devices.rejected", .summary = "connections_rejected",
     .line = FIGURE_LINE_CONNECTIONS, .text = ", # refused"},
    {"device_connections_rejected_per_client", COUNTER,
     .help = "Device connections refused over the limit per client address.", SF(connections_rejected_per_client),
     .api = "devices.rejected_per_client"},
    {"device_hello_timeouts", COUNTER,
     .help = "Device connections closed because no hello with a valid token came within the handshake timeout.",
     SF(hello_timeouts), .api = "devices.hello_timeouts"},
    {"device_connections_closed", COUNTER, .help = "Device connections closed.", SF(connections_closed),
     .summary = "connections_closed"},
    {"device_connections_closed_errors", COUNTER,
     .help = "Device connections closed after too many bad lines in a row.", SF(connections_closed_errors),
     .api = "devices.closed_errors", .summary = "connections_closed_errors", .line = FIGURE_LINE_CONNECTIONS,
     .text = ", # closed after bad lines"},
    {"device_write_timeouts", COUNTER, .help = "Device connections closed because the device did not read.",
     SF(connections_write_timeouts), .api = "devices.write_timeouts", .summary = "connections_write_timeouts",
     .line = FIGURE_LINE_CONNECTIONS, .text = ", # for not reading"},
    {"device_connections", GAUGE, .help = "Device connections open now.", SF(connections_open),
     .api = "devices.connections"},
    {"devices_known", GAUGE, .help = "Distinct device ids seen.", SF(devices_known), .api = "devices.known",
     .summary = "devices_known"},
    {"devices_connected", GAUGE, .help = "Devices whose last connection is open.", SF(devices_connected),
     .api = "devices.connected"},
    {"devices_active", GAUGE, .help = "Devices heard from within --stale-after (the latest snapshot).",
     SF(devices_active), .api = "devices.active", .summary = "devices_active"},
    {"devices_stale", GAUGE, .help = "Devices silent for longer than --stale-after (the latest snapshot).",
     SF(devices_stale), .api = "devices.stale", .summary = "devices_stale"},
    {"device_received_bytes", COUNTER, .unit = FIGURE_BYTES, .help = "Bytes read from device connections.",
     SF(bytes_received), .api = "devices.bytes", .summary = "bytes_received"},
    {"device_lines", COUNTER, .help = "Lines read from device connections.", SF(lines_received), .api = "devices.lines",
     .summary = "lines_received"},

    {"readings_received", COUNTER, .help = "Readings parsed and sent into the telemetry channel.",
     SF(readings_received), .api = "readings.received", .summary = "readings_received", .line = FIGURE_LINE_READINGS,
     .text = "received #"},
    {"readings_aggregated", COUNTER, .help = "Readings aggregated into snapshots.", SF(readings_aggregated),
     .api = "readings.aggregated", .summary = "readings_aggregated", .line = FIGURE_LINE_READINGS,
     .text = ", aggregated #"},
    {"readings_stored", COUNTER, .help = "Readings committed to the database.", SF(readings_stored),
     .api = "readings.stored", .summary = "readings_stored", .line = FIGURE_LINE_READINGS, .text = ", stored #"},
    {"readings_duplicate", COUNTER,
     .help = "Readings resent by a device (seq at or below its high-water mark), dropped.", SF(readings_duplicate),
     .api = "readings.duplicate", .summary = "readings_duplicate", .line = FIGURE_LINE_READINGS,
     .text = " + # resends dropped"},
    {"readings_unstored", GAUGE,
     .help = "Readings read from devices and not committed: in the queues now; at the end of a run, never "
             "acknowledged, so their devices must send them again.",
     SF(readings_unstored), .api = "readings.unstored", .summary = "readings_unstored", .line = FIGURE_LINE_READINGS,
     .text = ", # not committed"},

    {"bad_lines", COUNTER, .help = "Device lines rejected: the sum of bad_input_total.", SF(bad_lines), .unexported = 1,
     .summary = "bad_lines", .line = FIGURE_LINE_BAD_LINES, .text = "#"},
    {"bad_input", COUNTER, .label_key = "reason", .help = "Device lines rejected, by reason.", .each = each_bad_input,
     .api = "bad_input", .summary = "bad_input", .line = FIGURE_LINE_BAD_LINES, .text = " (#)"},
    {"error_lines_sent", COUNTER, .help = "Error lines written back to devices.", SF(error_lines_sent),
     .summary = "error_lines_sent", .line = FIGURE_LINE_BAD_LINES, .text = "; # error lines sent"},
    {"error_lines_suppressed", COUNTER, .help = "Error lines not written because of the per-connection rate limit.",
     SF(error_lines_suppressed), .summary = "error_lines_suppressed", .line = FIGURE_LINE_BAD_LINES,
     .text = ", # held back"},
    {"device_hellos", COUNTER, .help = "Hello lines from devices (asking for acks or health requests).", SF(hellos),
     .api = "devices.hellos", .summary = "hellos"},
    {"acks_sent", COUNTER,
     .help = "Ack lines written to devices: one per device per write, newer ones replacing unsent.", SF(acks_sent),
     .api = "devices.acks_sent", .summary = "acks_sent"},
    {"device_connections_authenticated", COUNTER, .help = "Device hellos whose token matched a credential.",
     SF(connections_authenticated), .api = "devices.authenticated", .summary = "connections_authenticated"},
    {"device_line_rate_waits", COUNTER,
     .help = "Times a device connection was not read for a while, over --lines-per-s.", SF(line_rate_waits),
     .api = "devices.line_rate_waits", .summary = "line_rate_waits"},
    {"credential_reloads", "result", "ok", COUNTER,
     .help = "Reloads of the device credentials file (SIGHUP), by result.", SF(credential_reloads),
     .api = "devices.credential_reloads", .summary = "credential_reloads"},
    {"credential_reloads", "result", "error", COUNTER, SF(credential_reload_errors),
     .api = "devices.credential_reload_errors", .summary = "credential_reload_errors"},
    {"tls_handshakes", COUNTER, .help = "Device connections that completed a TLS handshake.", SF(tls_handshakes),
     .api = "devices.tls_handshakes", .summary = "tls_handshakes"},
    {"tls_failures", COUNTER,
     .help = "Device connections refused at the TLS handshake: not TLS, no or a bad client certificate, a stall.",
     SF(tls_failures), .api = "devices.tls_failures", .summary = "tls_failures"},

    {"http_writes", "result", "committed", COUNTER,
     .help = "Bodies of the InfluxDB write API, by result: committed (answered 204, or 400 naming a bad line once "
             "the good ones were in), refused before anything was sent (busy, stopping, no credential), timeout "
             "(sent, not committed in time).",
     SF(writes), .api = "writes.committed"},
    {"http_writes", "result", "refused", COUNTER, SF(writes_refused), .api = "writes.refused"},
    {"http_writes", "result", "timeout", COUNTER, SF(writes_timed_out), .api = "writes.timeout"},
    {"mqtt_connected", GAUGE, .unit = FIGURE_FLAG,
     .help = "1 while the session with the MQTT broker (--mqtt) is up; 0 while it is being retried, or without --mqtt.",
     SF(mqtt.connected), .api = "mqtt.connected", .summary = "mqtt.connected"},
    {"mqtt_connects", COUNTER, .help = "Sessions established with the MQTT broker (CONNACK accepted).",
     SF(mqtt.connects), .api = "mqtt.connects", .summary = "mqtt.connects"},
    {"mqtt_connect_failures", COUNTER,
     .help = "Attempts to reach the MQTT broker that failed: no connection, refused (credentials), no CONNACK.",
     SF(mqtt.connect_failures), .api = "mqtt.connect_failures", .summary = "mqtt.connect_failures"},
    {"mqtt_disconnects", COUNTER, .help = "Sessions with the MQTT broker lost before the shutdown.",
     SF(mqtt.disconnects), .api = "mqtt.disconnects", .summary = "mqtt.disconnects"},
    {"mqtt_messages", COUNTER, .help = "MQTT PUBLISH packets received.", SF(mqtt.messages), .api = "mqtt.messages",
     .summary = "mqtt.messages"},
    {"mqtt_redelivered", COUNTER,
     .help = "MQTT messages the broker sent again (DUP): not acknowledged before a reconnect.", SF(mqtt.redelivered),
     .api = "mqtt.redelivered", .summary = "mqtt.redelivered"},
    {"mqtt_acks", COUNTER, .help = "MQTT PUBACKs sent, each once its message's readings were committed.", SF(mqtt.acks),
     .api = "mqtt.acks", .summary = "mqtt.acks"},
    {"mqtt_inflight", GAUGE, .help = "MQTT messages received and not yet acknowledged.", SF(mqtt.inflight),
     .api = "mqtt.inflight"},
    {"mqtt_inflight_capacity", GAUGE,
     .help = "The bound on unacknowledged MQTT messages (--mqtt-inflight): the socket is not read past it.",
     SF(mqtt.inflight_max), .api = "mqtt.inflight_max"},
    {"nats_connected", GAUGE, .unit = FIGURE_FLAG,
     .help = "1 while telegate is connected to NATS (--nats) and bound to its JetStream consumer; 0 while it is "
             "being retried (/readyz is 503), or without --nats.",
     SF(nats.connected), .api = "nats.connected", .summary = "nats.connected"},
    {"nats_connects", COUNTER,
     .help = "Sessions established with NATS JetStream (connected, stream and consumer ready).", SF(nats.connects),
     .api = "nats.connects", .summary = "nats.connects"},
    {"nats_connect_failures", COUNTER,
     .help = "Attempts to reach NATS JetStream that failed: no server, no JetStream, the stream or consumer refused.",
     SF(nats.connect_failures), .api = "nats.connect_failures", .summary = "nats.connect_failures"},
    {"nats_disconnects", COUNTER, .help = "Sessions with NATS lost before the shutdown.", SF(nats.disconnects),
     .api = "nats.disconnects", .summary = "nats.disconnects"},
    {"nats_messages", COUNTER, .help = "JetStream messages fetched.", SF(nats.messages), .api = "nats.messages",
     .summary = "nats.messages"},
    {"nats_redelivered", COUNTER,
     .help = "JetStream messages delivered again: not acknowledged by a session that ended (a restart, a lost "
             "connection) or within the ack wait.",
     SF(nats.redelivered), .api = "nats.redelivered", .summary = "nats.redelivered"},
    {"nats_requests_lost", COUNTER,
     .help = "JetStream pull requests still out well past their expiry, which the server ended without a message "
             "or a status: taken as ended, and asked again.",
     SF(nats.requests_lost), .api = "nats.requests_lost"},
    {"nats_acks", COUNTER, .help = "JetStream acks sent, each once its message's readings were committed.",
     SF(nats.acks), .api = "nats.acks", .summary = "nats.acks"},
    {"nats_inflight", GAUGE, .help = "JetStream messages fetched and not yet acknowledged.", SF(nats.inflight),
     .api = "nats.inflight"},
    {"nats_inflight_capacity", GAUGE,
     .help = "The bound on unacknowledged JetStream messages (--nats-inflight, the consumer's max_ack_pending).",
     SF(nats.inflight_max), .api = "nats.inflight_max"},
    {"nats_consumer_pending", GAUGE,
     .help = "The consumers' lag: messages of the partitions held not yet delivered to telegate, as last seen.",
     SF(nats.pending), .api = "nats.pending"},
    {"nats_partitions_held", GAUGE,
     .help = "Partition leases this node holds (--nats-partitions; 1 lease without): it consumes those partitions.",
     SF(nats.partitions_held), .api = "nats.partitions_held", .summary = "nats.partitions_held"},
    {"nats_nodes", GAUGE, .help = "telegate nodes alive in the lease bucket, as last counted.", SF(nats.nodes),
     .api = "nats.nodes"},
    {"nats_leases_claimed", COUNTER,
     .help = "Partition leases taken: at the start, from a node that died, or handed back by another.",
     SF(nats.leases_claimed), .api = "nats.leases_claimed", .summary = "nats.leases_claimed"},
    {"nats_leases_lost", COUNTER,
     .help = "Partition leases lost: a renewal refused (another node holds it), or not renewed in time.",
     SF(nats.leases_lost), .api = "nats.leases_lost", .summary = "nats.leases_lost"},
    {"nats_publish_connected", GAUGE, .unit = FIGURE_FLAG,
     .help = "1 while the connection that publishes this node's own sources' readings to JetStream is up (--nats).",
     SF(nats_publish.connected), .api = "nats_publish.connected"},
    {"nats_publish_messages", COUNTER,
     .help = "Messages of this node's device port, write API and MQTT readings that JetStream acknowledged.",
     SF(nats_publish.messages), .api = "nats_publish.messages", .summary = "nats_publish.messages"},
    {"readings_published", COUNTER,
     .help = "Readings of this node's own sources in the JetStream stream (--nats): committed by the node that "
             "consumes their partition, acknowledged to their devices.",
     SF(nats_publish.readings), .api = "readings.published", .summary = "readings_published"},
    {"nats_publish_retries", COUNTER,
     .help = "Messages published again: JetStream refused one, or its PubAck did not come in time.",
     SF(nats_publish.retries), .api = "nats_publish.retries", .summary = "nats_publish.retries"},
    {"nats_publish_inflight", GAUGE, .help = "Messages published to JetStream and not yet acknowledged by it.",
     SF(nats_publish.inflight), .api = "nats_publish.inflight"},
    {"nats_publish_queued_bytes", GAUGE, .unit = FIGURE_BYTES,
     .help = "Bytes of lines held to be published, in flight or waiting: the sources stop being read past 32 MiB.",
     SF(nats_publish.queued_bytes), .api = "nats_publish.queued_bytes"},
    {"nats_publish_unpublished", COUNTER,
     .help = "Readings dropped at the shutdown before JetStream acknowledged them: never acknowledged to their "
             "devices, which send them again.",
     SF(nats_publish.unpublished), .api = "nats_publish.unpublished", .summary = "nats_publish.unpublished"},
    {"fleet_connected", GAUGE, .unit = FIGURE_FLAG,
     .help = "1 while the fleet view's NATS connection is up (--nats): the other nodes' devices are merged.",
     SF(fleet.connected), .api = "fleet.connected"},
    {"fleet_nodes", GAUGE, .help = "Nodes the fleet view heard from, this one included (--nats).", SF(fleet.nodes),
     .api = "fleet.nodes", .summary = "fleet.nodes"},
    {"fleet_messages_sent", COUNTER, .help = "Fleet view messages published: deltas of this node's devices, syncs.",
     SF(fleet.messages_sent), .api = "fleet.messages_sent", .summary = "fleet.messages_sent"},
    {"fleet_sent_bytes", COUNTER, .unit = FIGURE_BYTES, .help = "Bytes of the fleet view messages published.",
     SF(fleet.bytes_sent), .api = "fleet.bytes_sent", .summary = "fleet.bytes_sent"},
    {"fleet_messages_received", COUNTER, .help = "Fleet view messages of the other nodes received.",
     SF(fleet.messages_received), .api = "fleet.messages_received", .summary = "fleet.messages_received"},
    {"fleet_received_bytes", COUNTER, .unit = FIGURE_BYTES, .help = "Bytes of the other nodes' fleet view messages.",
     SF(fleet.bytes_received), .api = "fleet.bytes_received", .summary = "fleet.bytes_received"},
    {"fleet_devices_sent", COUNTER, .help = "Device states this node published (one per device per change).",
     SF(fleet.devices_sent), .api = "fleet.devices_sent"},
    {"fleet_devices_received", COUNTER, .help = "Device states of other nodes merged.", SF(fleet.devices_received),
     .api = "fleet.devices_received"},
    {"fleet_devices_dropped", COUNTER,
     .help = "Device states of other nodes not merged: past --max-devices, or a malformed message.",
     SF(fleet.devices_dropped), .api = "fleet.devices_dropped", .summary = "fleet.devices_dropped"},
    {"fleet_syncs", COUNTER, .help = "Sync requests heard: a node started or lost messages, and all is sent again.",
     SF(fleet.syncs), .api = "fleet.syncs"},
    {"fleet_health_forwarded", COUNTER,
     .help = "Health checks sent to the node a device is connected to (request/reply over NATS).",
     SF(fleet.health_forwarded), .api = "fleet.health_forwarded", .summary = "fleet.health_forwarded"},
    {"fleet_health_answered", COUNTER, .help = "Health checks answered here for another node.",
     SF(fleet.health_answered), .api = "fleet.health_answered", .summary = "fleet.health_answered"},

    {"backpressure_waits", "stage", "telemetry", COUNTER,
     .help = "Waits at a stage: a send into a full queue or an acquire of a busy semaphore.", SF(telemetry.full_waits),
     .api = "queues.telemetry.full_waits", .summary = "telemetry_full_waits", .line = FIGURE_LINE_BACKPRESSURE,
     .text = "telemetry full #"},
    {"backpressure_waits", "stage", "storage", COUNTER, SF(storage.full_waits), .api = "queues.storage.full_waits",
     .summary = "storage_full_waits", .line = FIGURE_LINE_BACKPRESSURE, .text = ", storage full #"},
    {"backpressure_waits", "stage", "bandwidth", COUNTER, SF(bandwidth.waits), .api = "semaphores.bandwidth.waits",
     .summary = "bandwidth_waits", .line = FIGURE_LINE_BACKPRESSURE, .text = ", bandwidth waits #"},
    {"backpressure_waits", "stage", "db_pool", COUNTER, SF(db_pool.waits), .api = "semaphores.db_pool.waits",
     .summary = "db_pool_waits", .line = FIGURE_LINE_BACKPRESSURE, .text = ", DB pool waits #"},

    {"queue_length", "queue", "telemetry", GAUGE, .help = "Messages in a pipeline queue now.", SF(telemetry.len),
     .api = "queues.telemetry.len"},
    {"queue_length", "queue", "storage", GAUGE, SF(storage.len), .api = "queues.storage.len"},
    {"queue_capacity", "queue", "telemetry", GAUGE, .help = "Capacity of a pipeline queue.", SF(telemetry.capacity),
     .api = "queues.telemetry.capacity"},
    {"queue_capacity", "queue", "storage", GAUGE, SF(storage.capacity), .api = "queues.storage.capacity"},
    {"queue_senders_waiting", "queue", "telemetry", GAUGE, .help = "Senders blocked on a full queue now.",
     SF(telemetry.senders_waiting), .api = "queues.telemetry.senders_waiting"},
    {"queue_senders_waiting", "queue", "storage", GAUGE, SF(storage.senders_waiting),
     .api = "queues.storage.senders_waiting"},

    {"permits_in_use", "semaphore", "bandwidth", GAUGE, .help = "Semaphore permits held now.", SF(bandwidth.in_use),
     .api = "semaphores.bandwidth.in_use"},
    {"permits_in_use", "semaphore", "db_pool", GAUGE, SF(db_pool.in_use), .api = "semaphores.db_pool.in_use"},
    {"permits", "semaphore", "bandwidth", GAUGE, .help = "Semaphore permits configured.", SF(bandwidth.permits),
     .api = "semaphores.bandwidth.permits"},
    {"permits", "semaphore", "db_pool", GAUGE, SF(db_pool.permits), .api = "semaphores.db_pool.permits"},
    {"permit_waiters", "semaphore", "bandwidth", GAUGE, .help = "Tasks waiting for a permit now.",
     SF(bandwidth.waiters), .api = "semaphores.bandwidth.waiters"},
    {"permit_waiters", "semaphore", "db_pool", GAUGE, SF(db_pool.waiters), .api = "semaphores.db_pool.waiters"},

    {"batches_flushed", COUNTER, .help = "Batches cut by the aggregator for storage.", SF(batches_flushed),
     .api = "batches.flushed", .summary = "batches_flushed", .line = FIGURE_LINE_BATCHES, .text = "# cut"},
    {"batches_stored", COUNTER, .help = "Batches committed.", SF(batches_stored), .api = "batches.stored",
     .summary = "batches_stored", .line = FIGURE_LINE_BATCHES, .text = ", # committed"},
    {"transactions", COUNTER, .help = "Database transactions run.", SF(transactions), .api = "batches.transactions",
     .summary = "transactions", .line = FIGURE_LINE_BATCHES, .text = " in # transactions"},
    {"write_retries", COUNTER, .help = "Batch transactions that failed and were retried.", SF(write_retries),
     .api = "batches.retries", .summary = "write_retries", .line = FIGURE_LINE_BATCHES, .text = " (# retried)"},
    {"batches_lost", COUNTER, .help = "Batches that could not be committed.", SF(batches_lost), .api = "batches.lost",
     .summary = "batches_lost", .line = FIGURE_LINE_BATCHES, .text = ", # lost"},
    {"storage_failing", GAUGE, .unit = FIGURE_FLAG,
     .help = "1 while storage cannot commit: a commit failed and none succeeded since (/readyz is 503).",
     SF(storage_failing), .api = "storage.failing", .summary = "storage_failing", .line = FIGURE_LINE_BATCHES,
     .text = "; STORAGE FAILING at the end", .text_unset = ""},
    {"storage_failing_seconds", GAUGE, .unit = FIGURE_MS, .help = "For how long storage has been failing; 0 when not.",
     SF(storage_failing_ms), .api = "storage.failing_ms", .summary = "storage_failing_ms"},
    {"history_index_behind", GAUGE,
     .help = "Readings stored and not yet in the history index; history queries scan those, so this stays small "
             "while the index keeps up.",
     SF(history_behind), .api = "storage.history_behind", .summary = "history_behind"},
    {"retention_deleted", COUNTER, .help = "Readings deleted for being older than --retention.", SF(retention_deleted),
     .api = "storage.retention_deleted", .summary = "retention_deleted"},
    {"retention_passes", COUNTER, .help = "Passes of --retention over the devices.", SF(retention_passes),
     .api = "storage.retention_passes", .summary = "retention_passes"},
    {"retention_last_pass_time_seconds", GAUGE, .unit = FIGURE_MS,
     .help = "When the last pass of --retention ended, in seconds since the Unix epoch; 0: none yet.",
     SF(retention_last_pass_unix_ms), .api = "storage.retention_last_pass_unix_ms"},

    {"snapshots_published", COUNTER, .help = "Snapshots published to the watch and broadcast.", SF(snapshots_published),
     .api = "broadcast.published", .summary = "snapshots_published", .line = FIGURE_LINE_SNAPSHOTS,
     .text = "# published"},
    {"broadcast_retained", GAUGE, .help = "Snapshots retained in the broadcast ring.", SF(broadcast_len),
     .api = "broadcast.len"},
    {"broadcast_capacity", GAUGE, .help = "Capacity of the broadcast ring.", SF(broadcast_capacity),
     .api = "broadcast.capacity"},
    {"broadcast_receivers", GAUGE, .help = "Broadcast receivers subscribed now.", SF(broadcast_receivers),
     .api = "broadcast.receivers"},
    {"broadcast_lag_events", COUNTER, .help = "Times a broadcast receiver fell behind the ring (and had to resync).",
     SF(lag_events), .api = "broadcast.lag_events", .summary = "lag_events"},
    {"broadcast_lagged_messages", COUNTER,
     .help = "Broadcast messages overwritten before a lagging receiver read them.", SF(lagged_messages),
     .api = "broadcast.lagged_messages"},
    {"clients_connected", GAUGE, .help = "Clients following the snapshots now.", SF(clients_connected),
     .api = "broadcast.clients"},

    {"health_rounds", COUNTER, .help = "Rounds of the periodic health checker.", SF(health.rounds),
     .api = "health.rounds", .summary = "health.rounds", .line = FIGURE_LINE_HEALTH, .text = "# rounds"},
    {"health_checks", "result", "ok", COUNTER, .help = "Device health checks (periodic and on demand), by result.",
     SF(health.ok), .api = "health.ok", .summary = "health.ok", .line = FIGURE_LINE_HEALTH, .text = ": # ok"},
    {"health_checks", "result", "timeout", COUNTER, SF(health.timeout), .api = "health.timeout",
     .summary = "health.timeout", .line = FIGURE_LINE_HEALTH, .text = ", # timeout"},
    {"health_checks", "result", "disconnected", COUNTER, SF(health.disconnected), .api = "health.disconnected",
     .summary = "health.disconnected", .line = FIGURE_LINE_HEALTH, .text = ", # disconnected"},
    {"health_checks", "result", "unknown", COUNTER, SF(health.unknown), .api = "health.unknown",
     .summary = "health.unknown"},
    {"health_requests_written", COUNTER, .help = "Health requests written to devices.", SF(health.requests),
     .api = "health.requests", .summary = "health.requests"},
    {"health_unmatched_replies", COUNTER, .help = "Health replies nobody waited for (late, or a wrong id).",
     SF(health.unmatched_replies), .summary = "health.unmatched_replies", .line = FIGURE_LINE_HEALTH,
     .text = ", # late or unmatched replies"},
    {"health_rate_limited", COUNTER, .help = "Health requests not written to a device, over --health-per-device-per-s.",
     SF(health.rate_limited), .api = "health.rate_limited", .summary = "health.rate_limited"},

    {"tasks_alive", GAUGE, .help = "libtg tasks alive now.", SF(tasks_alive)},
    {"workers", GAUGE, .help = "libtg worker threads.", SF(workers)},
};
#undef SF

#define RE(field) FIGURE_AT(serve_run_end, field)
static const figure_def run_end_rows[] = {
    {"first_byte_unix_ns", GAUGE, .unit = FIGURE_NS, .help = "When the first byte from a device came.",
     RE(first_byte_unix_ns), .unexported = 1, .summary = "first_byte_unix_ns"},
    {"last_aggregated_unix_ns", GAUGE, .unit = FIGURE_NS, .help = "When the last reading was aggregated.",
     RE(last_aggregated_unix_ns), .unexported = 1, .summary = "last_aggregated_unix_ns"},
    {"last_commit_unix_ns", GAUGE, .unit = FIGURE_NS, .help = "When the last batch was committed.",
     RE(last_commit_unix_ns), .unexported = 1, .summary = "last_commit_unix_ns"},
    {"db_rows", GAUGE, .help = "Rows in the database after the run.", RE(db_rows), .unexported = 1,
     .summary = "db_rows", .line = FIGURE_LINE_READINGS, .text = "; rows in the database #"},
    {"shutdown_ms", GAUGE, .unit = FIGURE_MS, .help = "From the shutdown request to the last join.", RE(shutdown_ms),
     .unexported = 1, .summary = "shutdown_ms", .line = FIGURE_LINE_SHUTDOWN,
     .text = "# ms from the request to the last join"},
    {"lossless", GAUGE, .unit = FIGURE_FLAG, .help = "Every reading read from a socket was aggregated and committed.",
     RE(lossless), .unexported = 1, .summary = "lossless", .line = FIGURE_LINE_SHUTDOWN,
     .text = "; nothing lost: every reading read from a socket was aggregated and committed",
     .text_unset = "; READINGS LOST or tasks aborted"},
};
#undef RE

static int each_http_status(const void *base, int i, char *label, size_t cap, uint64_t *value) {
  const http_server_stats *h = base;
  if (i >= h->nstatus) return 0;
  if (h->status[i].code)
    snprintf(label, cap, "%d", h->status[i].code);
  else
    snprintf(label, cap, "other");
  *value = h->status[i].count;
  return 1;
}

#define HS(field) FIGURE_AT(http_server_stats, field)
static const figure_def http_rows[] = {
    {"http_connections", GAUGE, .help = "HTTP connections open now.", HS(connections_open), .api = "http.connections"},
    {"http_connections_accepted", COUNTER, .help = "HTTP connections accepted.", HS(connections_accepted),
     .api = "http.accepted"},
    {"http_connections_rejected", COUNTER, .help = "HTTP connections answered 503 over the connection limit.",
     HS(connections_rejected), .api = "http.rejected"},
    {"http_connections_rejected_per_client", COUNTER,
     .help = "HTTP connections refused because their client address held --http-max-per-client already.",
     HS(connections_rejected_per_client), .api = "http.rejected_per_client"},
    {"http_clients", GAUGE, .help = "Client addresses holding HTTP connections now.", HS(clients),
     .api = "http.clients"},
    {"http_header_timeouts", COUNTER, .help = "HTTP requests answered 408 because their head came too slowly.",
     HS(header_timeouts), .api = "http.header_timeouts"},
    {"http_tls_failures", COUNTER, .help = "HTTPS connections whose TLS handshake failed or did not finish in time.",
     HS(tls_failures), .api = "http.tls_failures"},
    {"http_refused_host", COUNTER, .help = "HTTP requests answered 421: a Host this server does not answer to.",
     HS(refused_host), .api = "http.refused_host"},
    {"http_refused_origin", COUNTER, .help = "HTTP requests answered 403: sent from another origin.",
     HS(refused_origin), .api = "http.refused_origin"},
    {"http_refused_token", COUNTER, .help = "HTTP requests answered 401 or 403: no bearer token, or not the right one.",
     HS(refused_token), .api = "http.refused_token"},
    {"http_idle_closed", COUNTER,
     .help = "HTTP connections closed quietly: idle (keep-alive) or silent (new) too long.", HS(idle_closed),
     .api = "http.idle_closed"},
    {"http_requests", COUNTER, .help = "Complete HTTP requests handled.", HS(requests), .api = "http.requests"},
    {"http_responses", COUNTER, .label_key = "code", .help = "HTTP responses, by status code.",
     .each = each_http_status},
    {"http_write_timeouts", COUNTER, .help = "HTTP clients dropped because they stopped reading.", HS(write_timeouts),
     .api = "http.write_timeouts"},
    {"http_written_bytes", COUNTER, .unit = FIGURE_BYTES, .help = "Bytes written to HTTP clients.", HS(bytes_written)},
};
#undef HS

#define ST(field) FIGURE_AT(stream_figures, field)
static const figure_def stream_rows[] = {
    {"sse_clients", GAUGE, .help = "Server-Sent Events streams open now.", ST(clients), .api = "sse.clients"},
    {"sse_streams", COUNTER, .help = "Server-Sent Events streams opened.", ST(streams), .api = "sse.streams"},
    {"sse_events", COUNTER, .help = "Snapshot events sent to stream clients.", ST(events), .api = "sse.events"},
    {"sse_resyncs", COUNTER, .help = "Resync events: a stream client fell behind and got the full current snapshot.",
     ST(resyncs), .api = "sse.resyncs"},
    {"sse_lagged_messages", COUNTER, .help = "Snapshots stream clients missed while they lagged.", ST(lagged_messages),
     .api = "sse.lagged_messages"},
    {"sse_skipped_stale", COUNTER, .help = "Backlog snapshots skipped after a resync because they were older.",
     ST(skipped_stale), .api = "sse.skipped_stale"},
    {"sse_coalesced", COUNTER, .help = "Snapshots replaced by a newer one within a stream's ?every= period.",
     ST(coalesced), .api = "sse.coalesced"},
    {"sse_json_builds", COUNTER, .help = "Snapshots serialized for streams: once per version, shared by every stream.",
     ST(json_builds), .api = "sse.json_builds"},
    {"sse_json_bytes", GAUGE, .unit = FIGURE_BYTES,
     .help = "Bytes of serialized snapshots that streams hold now (bounded by the api's sse_json_max_bytes).",
     ST(json_bytes), .api = "sse.json_bytes"},
    {"sse_deferred", COUNTER, .help = "Stream events put off because serialized snapshots held their memory limit.",
     ST(deferred), .api = "sse.deferred"},
    {"sse_deltas", COUNTER, .help = "Delta events: the devices changed since the stream's last event (?deltas=1).",
     ST(deltas), .api = "sse.deltas"},
    {"sse_dropped", COUNTER, .help = "Streams ended because the client stopped reading.", ST(dropped),
     .api = "sse.dropped"},
};
#undef ST

static int each_health_request(const void *base, int i, char *label, size_t cap, uint64_t *value) {
  const uint64_t *per_result = base;
  if (i >= API_HEALTH_RESULTS) return 0;
  snprintf(label, cap, "%s", metrics_health_result_name((api_health_result)i));
  *value = per_result[i];
  return 1;
}

static const figure_def health_request_rows[] = {
    {"http_health_requests", COUNTER, .label_key = "result",
     .help = "On-demand health checks requested over HTTP, by result.", .each = each_health_request},
};

#undef COUNTER
#undef GAUGE

#define SOURCE(rows, base) ((figure_source){(rows), sizeof(rows) / sizeof((rows)[0]), (base), "telegate_"})

figure_source figures_serve(const serve_figures *f) { return SOURCE(serve_rows, f); }
figure_source figures_http(const http_server_stats *h) { return SOURCE(http_rows, h); }
figure_source figures_streams(const stream_figures *s) { return SOURCE(stream_rows, s); }
figure_source figures_health_requests(const uint64_t *per_result) { return SOURCE(health_request_rows, per_result); }
figure_source figures_run_end(const serve_run_end *e) { return SOURCE(run_end_rows, e); }

/* ------------------------------------------------------------ values */

/* A row's value, for rows with a place. */
typedef struct value {
  int is_signed;
  uint64_t u;
  int64_t i;
} value;

static value value_of(const figure_def *d, const void *base) {
  const char *p = (const char *)base + d->offset;
  value v = {0};
  switch (d->ctype) {
  case FIGURE_U64: memcpy(&v.u, p, sizeof v.u); break;
  case FIGURE_I64:
    v.is_signed = 1;
    memcpy(&v.i, p, sizeof v.i);
    break;
  case FIGURE_INT: {
    int n;
    memcpy(&n, p, sizeof n);
    v.is_signed = 1;
    v.i = n;
    break;
  }
  }
  return v;
}

static int value_is_zero(value v) { return v.is_signed ? v.i == 0 : v.u == 0; }

static void put_integer(http_buf *b, value v) {
  if (v.is_signed)
    http_buf_i64(b, v.i);
  else
    http_buf_u64(b, v.u);
}

/* ------------------------------------------------------------ Prometheus */

static void metric_name(char *out, size_t cap, const char *prefix, const figure_def *d) {
  snprintf(out, cap, "%s%s%s", prefix, d->name, d->kind == FIGURE_COUNTER ? "_total" : "");
}

/* One sample; label values here are fixed words or numbers, which need
 * no escaping. */
static void sample(http_buf *b, const char *metric, const figure_def *d, const char *label) {
  http_buf_puts(b, metric);
  if (d->label_key) http_buf_printf(b, "{%s=\"%s\"}", d->label_key, label);
  http_buf_append(b, " ", 1);
}

static void prom_row(http_buf *b, const char *metric, const figure_def *d, const void *base) {
  if (d->each) {
    char label[64];
    uint64_t v;
    for (int i = 0; d->each(base, i, label, sizeof label, &v); i++) {
      sample(b, metric, d, label);
      http_buf_u64(b, v);
      http_buf_append(b, "\n", 1);
    }
    return;
  }
  value v = value_of(d, base);
  sample(b, metric, d, d->label);
  double n = v.is_signed ? (double)v.i : (double)v.u;
  if (d->unit == FIGURE_MS)
    http_buf_printf(b, "%.3f", n / 1e3);
  else if (d->unit == FIGURE_NS)
    http_buf_printf(b, "%.9f", n / 1e9);
  else if (d->unit == FIGURE_FLAG)
    http_buf_puts(b, value_is_zero(v) ? "0" : "1");
  else
    put_integer(b, v);
  http_buf_append(b, "\n", 1);
}

/* Whether a row of the sources before (s, r) has the same name. */
static int name_seen(const figure_source *src, int s, size_t r) {
  for (int si = 0; si <= s; si++)
    for (size_t ri = 0; ri < (si == s ? r : src[si].nrows); ri++)
      if (!src[si].rows[ri].unexported && !strcmp(src[si].rows[ri].name, src[s].rows[r].name)) return 1;
  return 0;
}

void figures_prometheus(http_buf *b, const figure_source *src, int nsrc) {
  for (int s = 0; s < nsrc; s++) {
    for (size_t r = 0; r < src[s].nrows; r++) {
      const figure_def *first = &src[s].rows[r];
      if (first->unexported || name_seen(src, s, r)) continue;
      /* The family: its help (on one of its rows), then every row of it. */
      const char *help = NULL;
      for (int s2 = s; s2 < nsrc; s2++)
        for (size_t r2 = 0; r2 < src[s2].nrows; r2++)
          if (!strcmp(src[s2].rows[r2].name, first->name) && src[s2].rows[r2].help) help = src[s2].rows[r2].help;
      char metric[128];
      metric_name(metric, sizeof metric, src[s].prefix, first);
      http_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", metric, help ? help : first->name, metric,
                      first->kind == FIGURE_COUNTER ? "counter" : "gauge");
      for (int s2 = s; s2 < nsrc; s2++)
        for (size_t r2 = 0; r2 < src[s2].nrows; r2++) {
          const figure_def *d = &src[s2].rows[r2];
          if (!d->unexported && !strcmp(d->name, first->name)) prom_row(b, metric, d, src[s2].base);
        }
    }
  }
}

/* ------------------------------------------------------------ JSON */

static const char *json_path(const figure_def *d, figure_json which) {
  return which == FIGURE_JSON_API ? d->api : d->summary;
}

static void json_key(http_buf *b, const char *k, size_t len) {
  http_buf_append(b, "\"", 1);
  http_buf_append(b, k, len);
  http_buf_append(b, "\":", 2);
}

static void json_value(http_buf *b, const figure_def *d, const void *base) {
  if (d->each) {
    char label[64];
    uint64_t v;
    http_buf_append(b, "{", 1);
    for (int i = 0; d->each(base, i, label, sizeof label, &v); i++) {
      if (i) http_buf_append(b, ",", 1);
      json_key(b, label, strlen(label));
      http_buf_u64(b, v);
    }
    http_buf_append(b, "}", 1);
    return;
  }
  value v = value_of(d, base);
  if (d->unit == FIGURE_FLAG)
    http_buf_puts(b, value_is_zero(v) ? "false" : "true");
  else
    put_integer(b, v);
}

/* The rows' paths, flattened over the sources, for the walk below. */
typedef struct json_item {
  const char *path;
  const figure_def *def;
  const void *base;
} json_item;

/* Writes the members of the object at `prefix` (plen bytes, ending in a
 * dot, or empty for the top): each key once, in order of first
 * appearance; a key with more path after it is an object of its own. */
static void json_object(http_buf *b, const json_item *it, size_t n, const char *prefix, size_t plen) {
  int first = 1;
  for (size_t k = 0; k < n; k++) {
    if (strncmp(it[k].path, prefix, plen) != 0) continue;
    const char *seg = it[k].path + plen;
    const char *dot = strchr(seg, '.');
    size_t slen = dot ? (size_t)(dot - seg) : strlen(seg);
    size_t upto = plen + slen; /* the path of this key */
    int seen = 0;
    for (size_t j = 0; j < k && !seen; j++)
      seen = strncmp(it[j].path, it[k].path, upto) == 0 && (it[j].path[upto] == '.' || it[j].path[upto] == '\0');
    if (seen) continue;
    if (!first) http_buf_append(b, ",", 1);
    first = 0;
    json_key(b, seg, slen);
    if (!dot) {
      json_value(b, it[k].def, it[k].base);
    } else {
      http_buf_append(b, "{", 1);
      json_object(b, it, n, it[k].path, upto + 1);
      http_buf_append(b, "}", 1);
    }
  }
}

void figures_json_members(http_buf *b, const figure_source *src, int nsrc, figure_json which) {
  size_t n = 0;
  for (int s = 0; s < nsrc; s++) n += src[s].nrows;
  json_item *it = n ? calloc(n, sizeof *it) : NULL;
  if (n && !it) {
    b->failed = 1;
    return;
  }
  size_t m = 0;
  for (int s = 0; s < nsrc; s++)
    for (size_t r = 0; r < src[s].nrows; r++)
      if (json_path(&src[s].rows[r], which))
        it[m++] = (json_item){json_path(&src[s].rows[r], which), &src[s].rows[r], src[s].base};
  json_object(b, it, m, "", 0);
  free(it);
}

/* ------------------------------------------------------------ text */

static const char *const line_names[FIGURE_LINES] = {
    [FIGURE_LINE_CONNECTIONS] = "connections",   [FIGURE_LINE_READINGS] = "readings",
    [FIGURE_LINE_BAD_LINES] = "bad lines",       [FIGURE_LINE_BATCHES] = "batches",
    [FIGURE_LINE_BACKPRESSURE] = "backpressure", [FIGURE_LINE_HEALTH] = "health",
    [FIGURE_LINE_SNAPSHOTS] = "snapshots",       [FIGURE_LINE_SHUTDOWN] = "shutdown",
};

/* The nonzero members of a family as "label value, ..."; 0 when none. */
static int each_nonzero(http_buf *b, const figure_def *d, const void *base) {
  char label[64];
  uint64_t v;
  int listed = 0;
  for (int i = 0; d->each(base, i, label, sizeof label, &v); i++) {
    if (!v) continue;
    http_buf_printf(b, "%s%s %llu", listed ? ", " : "", label, (unsigned long long)v);
    listed++;
  }
  return listed;
}

static void text_row(http_buf *b, const figure_def *d, const void *base) {
  if (d->unit == FIGURE_FLAG) {
    http_buf_puts(b, value_is_zero(value_of(d, base)) ? d->text_unset : d->text);
    return;
  }
  const char *mark = strchr(d->text, '#');
  size_t before = mark ? (size_t)(mark - d->text) : strlen(d->text);
  if (d->each) {
    http_buf list = {0};
    if (each_nonzero(&list, d, base)) {
      http_buf_append(b, d->text, before);
      http_buf_append(b, list.data, list.len);
      if (mark) http_buf_puts(b, mark + 1);
    }
    if (list.failed) b->failed = 1;
    http_buf_free(&list);
    return;
  }
  http_buf_append(b, d->text, before);
  if (!mark) return;
  put_integer(b, value_of(d, base));
  http_buf_puts(b, mark + 1);
}

void figures_text(http_buf *b, const figure_source *src, int nsrc) {
  http_buf_append(b, "\n", 1);
  for (int line = 1; line < FIGURE_LINES; line++) {
    http_buf_printf(b, "%-14s", line_names[line]);
    for (int s = 0; s < nsrc; s++)
      for (size_t r = 0; r < src[s].nrows; r++)
        if ((int)src[s].rows[r].line == line) text_row(b, &src[s].rows[r], src[s].base);
    http_buf_append(b, "\n", 1);
  }
}

/* ------------------------------------------------------------ serve's summary */

void figures_summary_text(http_buf *b, const serve_figures *f, const serve_run_end *e) {
  figure_source src[] = {figures_serve(f), figures_run_end(e)};
  figures_text(b, src, 2);
}

void figures_summary_json(http_buf *b, const serve_figures *f, const serve_run_end *e) {
  figure_source src[] = {figures_serve(f), figures_run_end(e)};
  http_buf_append(b, "{", 1);
  figures_json_members(b, src, 2, FIGURE_JSON_SUMMARY);
  http_buf_append(b, "}", 1);
}

static int write_file(const char *path, const http_buf *b) {
  FILE *out = fopen(path, "w");
  if (!out) return -errno;
  int ok = fwrite(b->data, 1, b->len, out) == b->len && fputc('\n', out) != EOF;
  int err = ok ? 0 : errno ? -errno : -EIO;
  if (fclose(out) != 0 && !err) err = errno ? -errno : -EIO;
  return err;
}

int figures_summary_write(demo_log *log, const serve_figures *f, const serve_run_end *e, const char *json_path) {
  http_buf b = {0};
  int r = 0;
  figures_summary_json(&b, f, e);
  if (json_path) { /* first, so that the summary stays the log's last line */
    int w = b.failed ? TG_ENOMEM : write_file(json_path, &b);
    if (w != 0) {
      log_event(log, "❌", "serve", 0, "summary_json", "Cannot write %s: %s", json_path, tg_strerror(w));
      r = w;
    }
  }
  if (log->format == LOG_JSON) { /* every line of a JSON log parses */
    if (!b.failed) log_write_json(log, "serve", "summary", "summary", b.data);
  } else {
    http_buf_reset(&b);
    figures_summary_text(&b, f, e);
    if (!b.failed) log_write(log, b.data);
  }
  if (b.failed) r = TG_ENOMEM;
  http_buf_free(&b);
  return r;
}
