/* broker_lines.h - the lines of a message from a broker (an MQTT topic, a
 * NATS subject) to readings, for the device the topic or subject names.
 *
 * A broker's message carries one or more JSON or line-protocol lines;
 * the device is the one its topic or subject names, since the broker's
 * ACL on topics says who may publish for a device (docs/security.md). A
 * line that names no device gets it from there (the id is put in the
 * line and the line parsed again); one that names another device is
 * refused as wrong_device. Every admitted reading is packed through the
 * schema (seq_check_pack), has its seq judged (seq_check_reading), its
 * device attached to the source's registry connection unless it is on
 * another one (registry_attach_free), and is sent into
 * the telemetry channel: the sources that take messages from a
 * broker (source_mqtt.c, source_nats.c) share this so that a device gets
 * the same answer whichever broker it comes through.
 *
 * Backpressure: the send waits while the telemetry channel is full, and
 * the caller reads nothing meanwhile.
 *
 * Figures: lines, readings and refusals per reason are counted into the
 * caller's figures (their one writer is the caller's task); each refusal
 * is also handed to the caller's `refused` hook, which logs it. */
#ifndef TELEGATE_BROKER_LINES_H
#define TELEGATE_BROKER_LINES_H

#include "figure.h"
#include "gateway.h"
#include "protocol.h"
#include "registry.h"
#include "seq_check.h"
#include "tg/tg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct broker_lines {
  const serve_config *cfg;
  registry *reg;
  registry_conn *rc; /* the source's connection: the devices it speaks for */
  const seq_check *seqs;
  tg_mpsc_tx *telemetry;
  int judged; /* the message being sent on was judged by a front node (nats_publish.h): seqs are not judged again */
  char *line; /* scratch: broker_lines_scratch_bytes(cfg) */
  figure *lines, *readings;
  figure *bad; /* [SERVE_BAD_REASONS] */
  void (*refused)(void *ctx, uint64_t line_no, int reason);
  void *ctx;
} broker_lines;

/* Bytes of the scratch line: the longest line with a device id put in. */
size_t broker_lines_scratch_bytes(const serve_config *cfg);

/* Whether id[0 .. len) keeps the device id rule (protocol.h's). */
int broker_lines_device_ok(const char *id, size_t len);

/* Sends on the readings of payload[0 .. len) for device id (NUL-
 * terminated, a valid id). Returns 0 with *device and *seq set to the
 * device and the highest seq of the readings sent (*device 0: none was),
 * or TG_ECLOSED when the telemetry channel closed. */
int broker_lines_send(broker_lines *b, const char *id, const char *payload, size_t len, uint32_t *device,
                      uint64_t *seq);

#endif
