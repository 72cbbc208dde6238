/* seq_check.h - what every source does with a parsed reading before it
 * goes on into the telemetry channel: its fields given their ids and
 * types (schema_pack), its seq numbered or judged.
 *
 * For the seq, in order: a reading without seq is numbered (registry_seq_next, after
 * the device's stored mark, looked up once a run); a seq that went back
 * with a later timestamp is refused as seq_restarted; a seq beyond the
 * seq window is refused as seq_out_of_window; an admitted seq raises what
 * the registry knows of the device. The rules are registry.h's and
 * docs/protocol.md's; this is the one place that applies them, so a
 * device gets the same answer whichever source it comes through.
 *
 * Looking up a mark is a blocking call (tg_blocking_run): the caller must
 * be a task. It happens at most once a run per device for readings
 * without seq, and for seqs only above the window before the device's
 * first commit (devices that count from 0 never cost one). */
#ifndef TELEGATE_SEQ_CHECK_H
#define TELEGATE_SEQ_CHECK_H

#include "gateway.h"
#include "reading.h"
#include "registry.h"
#include "storage.h"
#include "tg/tg.h"

typedef struct seq_check {
  schema *schema; /* the readings' names and measurements */
  registry *reg;
  storage *db;                /* where marks are looked up; NULL: none is stored */
  const serve_limits *limits; /* the seq window, as a reload leaves it */
  int to_stream;              /* readings go to the stream as line protocol (nats_publish.h) */
  int one_token_ids;          /* and with --nats-partitions: an id must be one subject token, without '.' */
} seq_check;

/* Makes the reading of a parsed point (schema_pack): its names given
 * ids, its fields their types. Returns 0 with *out set (the caller owns
 * it: reading_free, or send it on), or the protocol reason it is refused
 * for (type_conflict, unknown_field, ...), or SERVE_BAD_LINE_BREAK when
 * to_stream and a string or tag holds a line break. Before the device
 * is looked up, so that a refused line registers no device. */
int seq_check_pack(const seq_check *c, const protocol_point *p, reading *out);

/* Numbers or judges the seq of r, a reading of device e, and sets its
 * device. Returns 0, or the reason it is refused for, with r freed:
 * PROTOCOL_BAD_DEVICE_ID (one_token_ids and an id with a '.': the
 * server's partition mapping takes one token, and the rest of such an id
 * would be taken for a partition), SERVE_BAD_SEQ_RESTARTED,
 * SERVE_BAD_SEQ_OUT_OF_WINDOW,
 * SERVE_BAD_STORAGE_UNAVAILABLE (a reading without seq whose device's
 * mark could not be read: numbered blindly it could take a seq already
 * stored and be dropped as a resend). */
int seq_check_reading(const seq_check *c, const device_entry *e, reading *r);

/* seq_check_reading for a reading a front node judged already and
 * published to the stream (nats_publish.h): one with a seq only raises
 * what the registry knows of its device; judged a second time against
 * the same registry, an earlier reading of a device whose clock went back
 * would look like a restart. One without a seq (not a front node's) is
 * judged as any. */
int seq_check_judged(const seq_check *c, const device_entry *e, reading *r);

/* Sends r into the telemetry channel, waiting while it is full (the
 * source stops taking input meanwhile: the backpressure). 0, or the
 * channel's error with r freed. */
static inline int seq_check_send(tg_mpsc_tx *tx, reading *r) {
  int e = tg_mpsc_try_send(tx, r);
  if (e == TG_EFULL) e = tg_mpsc_send(tx, r);
  if (e != 0) reading_free(r);
  return e;
}

#endif
