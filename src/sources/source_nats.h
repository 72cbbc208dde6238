/* source_nats.h - readings from a NATS JetStream stream: devices publish
 * to <subject>.<device>, a stream holds the messages durably, and
 * telegate consumes them through durable pull consumers, acknowledging
 * each message only once the readings it carried are committed.
 * docs/cluster.md is the operator's page.
 *
 * Partitions. With --nats-partitions N the NATS server maps each
 * device's subject to <subject>.<partition>.<device> (its deterministic
 * partition mapping, in the server's configuration), the stream holds
 * those, and each partition has a durable consumer of its own,
 * <consumer>-<partition>. A node consumes only the partitions whose lease
 * it holds (nats_leases.h): one node at a time per partition, so a
 * device's readings are committed in order by one writer, and a dead
 * node's partitions are taken over by the others once its leases expire.
 * Without partitions (0) the stream holds <subject>.> and one consumer
 * reads it all, under one lease: a second node waits as a standby.
 *
 * One task, one session at a time with NATS through libnats: it connects
 * to the first server of --nats that answers, creates the stream when
 * missing (file storage, limits retention: the operator sets its limits)
 * and subscribes to an inbox of its own; the lease task has a connection
 * of its own. The task publishes pull requests for the partitions it
 * holds, libnats' delivery thread passes what comes through a channel,
 * and the task selects on it, the commits and the shutdown.
 *
 * Payloads are the lines the MQTT source takes (broker_lines.h): the
 * device is the subject's last part, a line that names no device gets
 * it, one that names another is refused as wrong_device.
 *
 * Order and delivery. A device's readings must reach storage in order,
 * since a seq at or below its committed mark is dropped as a resend. A
 * message JetStream delivered to a session that ended (a restart, a kill,
 * a lost connection, a node that died) is redelivered only after the
 * consumer's ack wait, behind newer messages of the same device - whose
 * commit would then make the older reading a "resend" and lose it. So a
 * consumer is reset to its ack floor whenever a session takes its
 * partition: it is deleted and created again to deliver from the first
 * stream sequence not acknowledged, and everything unacknowledged comes
 * again in stream order before anything newer. Messages at or below the
 * old consumer's delivered sequence are counted as redelivered; what of
 * them was committed is dropped by the high-water marks and acknowledged
 * in turn.
 *
 * Acknowledgements: each message goes at the tail of a FIFO with its
 * device and the highest seq among its accepted readings; after each
 * commit (the registry's commits watch) the head of the FIFO is acked
 * while its device is committed up to that seq, so acks go in delivery
 * order and never before the commit. A message with no accepted reading
 * is acknowledged in its turn: it must not come again.
 *
 * Backpressure: the FIFO holds at most --nats-inflight messages, also
 * each consumer's max_ack_pending; the pull requests out ask together for
 * at most the room left, and none while the FIFO is full. The rest waits
 * in the stream.
 *
 * Reconnecting: a session that fails (no server, the connection lost, a
 * lease not renewed in time) is logged in one line, at most once every
 * 10 s while it keeps failing, and tried again after a backoff from
 * 100 ms doubling to 5 s, with jitter. Its FIFO is dropped unacknowledged
 * (the next reset delivers it again).
 *
 * Shutdown: when the token fires the task asks for no more, drops its
 * telemetry sender, acknowledges what commits until the drain deadline,
 * hands back the partitions it emptied (another node takes them at once)
 * and closes the connection. */
#ifndef TELEGATE_SOURCE_NATS_H
#define TELEGATE_SOURCE_NATS_H

#include "source.h"

/* Wanted when cfg->nats_urls is set (--nats). */
extern const source_kind source_nats;

/* This node's id, the one its leases carry (nats_leases_node), given the
 * source's state; valid until the source is freed. */
const char *source_nats_node(const void *state);

#endif
