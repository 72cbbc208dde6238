/* seq_check.h - what every source does with a reading's seq before the
 * reading goes on into the telemetry channel.
 *
 * In order: a reading without seq is numbered (registry_seq_next, after
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

typedef struct seq_check {
  registry *reg;
  storage *db;                /* where marks are looked up; NULL: none is stored */
  const serve_limits *limits; /* the seq window, as a reload leaves it */
} seq_check;

/* Checks r (of device e, r->device not needed), numbering it when it
 * came without seq. Returns 0 (r->seq is then the seq to store), or the
 * SERVE_BAD_* reason it is refused for: SERVE_BAD_SEQ_RESTARTED,
 * SERVE_BAD_SEQ_OUT_OF_WINDOW, SERVE_BAD_STORAGE_UNAVAILABLE (a reading
 * without seq whose device's mark could not be read: numbered blindly it
 * could take a seq already stored and be dropped as a resend). */
int seq_check_reading(const seq_check *c, const device_entry *e, reading *r);

#endif
