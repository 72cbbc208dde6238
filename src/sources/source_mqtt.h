/* source_mqtt.h - readings from an MQTT broker: telegate subscribes to
 * topic filters whose '+' level is the device id, at QoS 1, and
 * acknowledges each message (PUBACK) only once the readings it carried
 * are committed - with --nats, once they are in the JetStream stream
 * (nats_publish.h). docs/mqtt.md is the operator's page.
 *
 * One task, one MQTT session (mqtt.h is the codec) over a libtg socket,
 * plain or TLS (mqtts://, stream.h):
 * version 5 by default, 3.1.1 when asked or when the broker refuses 5.
 * CONNECT with clean session 0 (5: and a session that never expires)
 * under a stable client id, so the broker keeps the subscription and the
 * unacknowledged QoS 1 messages while telegate is away and sends them
 * again (DUP) when it is back; with 5, Receive Maximum tells the broker
 * the FIFO's bound, so its window is telegate's, whatever its settings;
 * SUBSCRIBE at QoS 1; PUBLISH in, PUBACK out; PINGREQ after keepalive_s
 * without sending, and the session given up when no PINGRESP comes
 * within as long again.
 *
 * Delivery: the source is one registry connection speaking for every
 * device on its topics. Each QoS 1 message received goes at the tail of
 * a FIFO with its packet id and, when it carried accepted readings, its
 * device and the highest seq among them. After each commit (the
 * registry's commits watch) the registry says how far each device is
 * committed or published (registry_durable), whichever source it is on
 * now; the PUBACKs
 * of the head of the FIFO go out while its device is committed up to the
 * message's seq, so they go out in the order the PUBLISHes came (MQTT
 * 3.1.1 section 4.6) and never before the commit. A message whose lines
 * were all refused, or that held no reading, waits its turn in the FIFO
 * and is acknowledged then: the broker must not send it again.
 *
 * Backpressure: the FIFO holds at most inflight_max messages, the window
 * the broker may have outstanding with telegate. When it is full the
 * task stops reading the socket (the bytes wait in its buffer, then in
 * the kernel's, then at the broker, which queues them in the session), as
 * it does while tg_mpsc_send waits for room in the telemetry channel.
 * Nothing in telegate grows with what the broker holds.
 *
 * Reconnecting: a session that fails (connection refused, bad
 * credentials, the broker gone, no PINGRESP, a malformed packet) is
 * logged in one line, at most once every 10 s while it keeps failing,
 * and tried again after a backoff from 100 ms doubling to 5 s, with
 * jitter. The FIFO is emptied then: the readings already sent on are
 * committed as usual, and the broker sends the messages again, which
 * the high-water marks drop as resends and are acknowledged once the
 * originals are committed.
 *
 * Shutdown: when the token fires the task reads no more, drops its
 * telemetry sender, sends the PUBACKs of what commits until the drain
 * deadline, and ends the session with DISCONNECT (the broker keeps it:
 * what was not acknowledged comes again on the next start). */
#ifndef TELEGATE_SOURCE_MQTT_H
#define TELEGATE_SOURCE_MQTT_H

#include "source.h"

/* Wanted when cfg->mqtt_url is set (--mqtt). */
extern const source_kind source_mqtt;

#endif
