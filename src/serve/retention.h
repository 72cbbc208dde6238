/* retention.h - serve's retention: readings older than --retention (by
 * their ts, against the wall clock) are deleted in the background.
 *
 * One task: a pass every retention / 10 (at least 1 s, at most a minute),
 * the first one at start. A pass calls storage_expire on the blocking
 * pool, RETENTION_CHUNK rows at a time, each chunk one short transaction
 * that takes its turn with the writer's on the backend's lock (a few
 * milliseconds: the rows are neighbours), with a pause between chunks:
 * ingest waits at most one chunk, never a whole pass. Device marks (device_hwm) are kept, so a device's old seqs stay
 * resends. A chunk that fails is logged (once a minute at most) and the
 * pass ends; the next pass tries again.
 *
 * The task ends when the shutdown token fires; it may be in a chunk then
 * (a transaction, committed or rolled back, of a few milliseconds). */
#ifndef TELEGATE_RETENTION_H
#define TELEGATE_RETENTION_H

#include "figure.h"
#include "log.h"
#include "storage.h"
#include "tg/tg.h"

#include <stdint.h>

enum { RETENTION_CHUNK = 5000 };

typedef struct retention {
  storage *db;
  int64_t keep_ms; /* > 0 */
  tg_cancel *cancel;
  demo_log *log;
  figure deleted, passes;
  _Atomic int64_t last_pass_unix_ms; /* the end of the last pass; 0: none yet */
  log_gate errors;
} retention;

/* The task: arg is a retention * the caller keeps alive until it is
 * joined. Returns NULL. */
void *retention_task(void *arg);

#endif
