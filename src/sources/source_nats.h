/* source_nats.h - readings from a NATS JetStream stream: devices publish
 * to <subject>.<device>, a stream holds the messages durably, and
 * telegate consumes them through a durable pull consumer, acknowledging
 * each message only once the readings it carried are committed.
 * docs/cluster.md is the operator's page.
 *
 * One task, one session at a time with NATS through libnats (its own
 * threads; every call that may block runs on the blocking pool). A
 * session connects to the first server of --nats that answers, creates
 * the stream when missing (subjects <subject>.>, file storage, limits
 * retention: the operator sets its limits), resets the durable consumer
 * (below), binds a pull subscription to it and fetches.
 *
 * Payloads are the lines the MQTT source takes (broker_lines.h): the
 * device is the subject's part after "<subject>.", a line that names no
 * device gets it, one that names another is refused as wrong_device.
 *
 * Order and delivery. A device's readings must reach storage in order,
 * since a seq at or below its committed mark is dropped as a resend. A
 * message JetStream delivered to a session that ended (a restart, a kill,
 * a lost connection) is redelivered only after the consumer's ack wait,
 * behind newer messages of the same device - whose commit would then make
 * the older reading a "resend" and lose it. So each session starts by
 * resetting the consumer to its ack floor: it is deleted and created
 * again to deliver from the first stream sequence not acknowledged, and
 * everything unacknowledged comes again in stream order before anything
 * newer. Messages at or below the old consumer's delivered sequence are
 * counted as redelivered; what of them was committed is dropped by the
 * high-water marks and acknowledged in turn. Because of this reset, one
 * serve consumes a consumer (--nats-consumer) at a time: two on the same
 * consumer would reset each other's.
 *
 * Acknowledgements: each message fetched goes at the tail of a FIFO with
 * its device and the highest seq among its accepted readings; after each
 * commit (the registry's commits watch) the head of the FIFO is acked
 * while its device is committed up to that seq, so acks go in delivery
 * order and never before the commit. A message with no accepted reading
 * is acknowledged in its turn: it must not come again.
 *
 * Backpressure: the FIFO holds at most --nats-inflight messages, which is
 * also the consumer's max_ack_pending; a fetch asks for at most the room
 * left, and none while the FIFO is full. The rest waits in the stream.
 *
 * Reconnecting: a session that fails is logged in one line, at most once
 * every 10 s while it keeps failing, and tried again after a backoff from
 * 100 ms doubling to 5 s, with jitter. Its FIFO is dropped unacknowledged
 * (the next session's reset delivers it again).
 *
 * Shutdown: when the token fires the task fetches no more, drops its
 * telemetry sender, acknowledges what commits until the drain deadline,
 * flushes the acks and closes the connection. */
#ifndef TELEGATE_SOURCE_NATS_H
#define TELEGATE_SOURCE_NATS_H

#include "source.h"

/* Wanted when cfg->nats_urls is set (--nats). */
extern const source_kind source_nats;

#endif
