/* client.h - a client following the gateway's state.
 *
 * A client receives every snapshot from the broadcast, in order, and
 * shows the latest one about once a second. A client slower than the
 * updates (--slow-client) falls behind the ring: recv reports TG_ELAGGED
 * with how many updates were overwritten. The client then resyncs from
 * the watch - the latest snapshot, whatever happened in between - and
 * skips the stale updates still buffered for it (those not newer than the
 * snapshot it resynced to) instead of replaying them.
 *
 * Shutdown: the cancel token is the first case of its select. After it
 * fires the client stops its (possibly slow) processing and reads on,
 * without delay, until the aggregator drops the broadcast sender
 * (TG_ECLOSED); then it shows the final state from the watch. */
#ifndef TELEGATE_CLIENT_H
#define TELEGATE_CLIENT_H

#include "log.h"
#include "tg/tg.h"

#include <stdint.h>

typedef struct client {
  int id;
  tg_cancel *cancel;
  demo_log *log;
  tg_broadcast_rx *updates; /* owned */
  tg_watch_rx *latest;      /* owned */
  int64_t t0;
  int64_t delay_ns;   /* processing time per update */
  int64_t display_ns; /* at most one display line per this */
  /* state */
  uint64_t seen_version; /* newest snapshot processed or resynced to */
  int64_t next_display;
  /* figures */
  uint64_t received, processed, lagged_events, lagged_messages, resyncs, skipped_stale;
  uint64_t final_version, final_messages;
} client;

/* The task: arg is a client *. Returns NULL. */
void *client_task(void *arg);

#endif
