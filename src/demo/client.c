/* client.c - a client task; see client.h. */
#include "client.h"

#include "schema.h"
#include "snapshot.h"

#include <inttypes.h>

static void display(client *c, const system_snapshot *s) {
  int64_t now = tg_now();
  if (now < c->next_display) return;
  c->next_display = now + c->display_ns;
  log_event(c->log, "📺", "client", c->id, "client_update",
            "Client %d: update #%" PRIu64 " - %" PRIu32 " devices active, %" PRIu64 " readings, avg %.1f°C / %.1f%%",
            c->id, s->version, s->active_devices, s->total_messages, snapshot_fleet_mean(s, SCHEMA_TEMPERATURE),
            snapshot_fleet_mean(s, SCHEMA_HUMIDITY));
}

static void resync(client *c, uint64_t missed) {
  system_snapshot *s;
  tg_watch_get_and_update(c->latest, &s);
  c->resyncs++;
  if (s->version > c->seen_version) c->seen_version = s->version;
  log_event(c->log, "⚠️", "client", c->id, "client_lagged",
            "Client %d lagged by %" PRIu64 " messages - resynced from watch (update #%" PRIu64
            "), skipping the stale backlog",
            c->id, missed, s->version);
  c->next_display = tg_now() + c->display_ns;
  snapshot_unref(s);
}

void *client_task(void *arg) {
  client *c = arg;
  int draining = 0;
  for (;;) {
    system_snapshot *s = NULL;
    int r;
    if (!draining) {
      tg_case cs[2] = {tg_cancel_case(c->cancel), tg_broadcast_recv_case(c->updates, &s)};
      int w = tg_select(cs, 2, TG_FOREVER);
      if (w == 0) {
        draining = 1;
        continue;
      }
      r = w == 1 ? cs[1].result : w;
    } else {
      r = tg_broadcast_recv(c->updates, &s);
    }
    if (r == TG_ELAGGED) {
      uint64_t missed = tg_broadcast_rx_lagged(c->updates);
      c->lagged_events++;
      c->lagged_messages += missed;
      resync(c, missed);
      continue;
    }
    if (r != 0) break; /* TG_ECLOSED: the aggregator is done */
    c->received++;
    if (s->version <= c->seen_version) {
      c->skipped_stale++; /* already covered by a resync */
      snapshot_unref(s);
      continue;
    }
    c->seen_version = s->version;
    if (!draining) {
      c->processed++;
      if (c->delay_ns > 0 && tg_cancel_wait_dl(c->cancel, tg_now() + c->delay_ns) != TG_ETIMEDOUT) draining = 1;
      display(c, s);
    }
    snapshot_unref(s);
  }
  system_snapshot *last;
  tg_watch_get(c->latest, &last);
  c->final_version = last->version;
  c->final_messages = last->total_messages;
  log_event(c->log, "📺", "client", c->id, "client_closed",
            "Client %d closed: %" PRIu64 " updates received, %" PRIu64 " lag events, final state #%" PRIu64 " (%" PRIu64
            " readings)",
            c->id, c->received, c->lagged_events, last->version, last->total_messages);
  snapshot_unref(last);
  tg_broadcast_rx_drop(c->updates);
  tg_watch_rx_drop(c->latest);
  c->updates = NULL;
  c->latest = NULL;
  return NULL;
}
