/* snapshot.c - immutable, reference-counted snapshots; see snapshot.h. */
#include "snapshot.h"

#include "schema.h"
#include "tg/error.h"

#include <stdlib.h>
#include <string.h>

system_snapshot *snapshot_new(snapshot_counters *c, uint64_t version, int64_t at_ms, uint64_t total_messages,
                              const device_metrics *devices, uint32_t ndevices) {
  return snapshot_new_windowed(c, version, at_ms, total_messages, devices, ndevices, SNAPSHOT_ACTIVE_MS);
}

system_snapshot *snapshot_new_windowed(snapshot_counters *c, uint64_t version, int64_t at_ms, uint64_t total_messages,
                                       const device_metrics *devices, uint32_t ndevices, int64_t stale_after_ms) {
  system_snapshot *s = malloc(sizeof *s + (size_t)ndevices * sizeof s->devices[0]);
  if (!s) return NULL;
  atomic_init(&s->refs, 1);
  s->counters = c;
  s->version = version;
  s->at_ms = at_ms;
  s->total_messages = total_messages;
  s->ndevices = ndevices;
  if (ndevices) memcpy(s->devices, devices, (size_t)ndevices * sizeof s->devices[0]);
  s->stale_after_ms = stale_after_ms;
  s->next_stale_ms = INT64_MAX;
  double sum[SNAPSHOT_FIELDS] = {0};
  uint32_t n[SNAPSHOT_FIELDS] = {0};
  uint32_t active = 0, stale = 0;
  s->schema = NULL;
  s->node = NULL;
  s->nodes = 1;
  s->node_messages = total_messages;
  memset(s->fleet_name, 0, sizeof s->fleet_name);
  for (uint32_t i = 0; i < ndevices; i++) {
    const device_metrics *m = &devices[i];
    if (m->count == 0) continue;
    if (snapshot_device_stale(s, m)) {
      stale++;
      continue;
    }
    if (m->last_seen_ms + stale_after_ms < s->next_stale_ms) s->next_stale_ms = m->last_seen_ms + stale_after_ms;
    active++;
    for (int k = 0; k < SNAPSHOT_FIELDS && m->field_name[k]; k++) {
      if (m->field_type[k] != FIELD_FLOAT) continue;
      int j = 0;
      while (j < SNAPSHOT_FIELDS && s->fleet_name[j] && s->fleet_name[j] != m->field_name[k]) j++;
      if (j == SNAPSHOT_FIELDS) continue;
      s->fleet_name[j] = m->field_name[k];
      sum[j] += m->field_value[k];
      n[j]++;
    }
  }
  s->active_devices = active;
  s->stale_devices = stale;
  for (int j = 0; j < SNAPSHOT_FIELDS; j++) s->fleet_mean[j] = n[j] ? sum[j] / n[j] : 0;
  atomic_fetch_add_explicit(&c->built, 1, memory_order_relaxed);
  return s;
}

const char *snapshot_field_name(const system_snapshot *s, uint16_t id) {
  static const char *const article[] = {"", "telemetry", "temperature", "humidity", "battery"};
  if (s->schema) return schema_name(s->schema, id);
  return id < sizeof article / sizeof *article ? article[id] : "";
}

double snapshot_fleet_mean(const system_snapshot *s, uint16_t name) {
  for (int j = 0; j < SNAPSHOT_FIELDS && s->fleet_name[j]; j++)
    if (s->fleet_name[j] == name) return s->fleet_mean[j];
  return 0;
}

system_snapshot *snapshot_ref(system_snapshot *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  return s;
}

void snapshot_unref(system_snapshot *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
  atomic_fetch_add_explicit(&s->counters->freed, 1, memory_order_relaxed);
  free(s);
}

void snapshot_elem_clone(void *elem) { snapshot_ref(*(system_snapshot **)elem); }

void snapshot_elem_drop(void *elem) { snapshot_unref(*(system_snapshot **)elem); }

int snapshot_channels_new(snapshot_counters *c, size_t capacity, tg_broadcast_tx **updates, tg_watch_tx **latest) {
  tg_broadcast_opts bo = {.capacity = capacity,
                          .elem_size = sizeof(system_snapshot *),
                          .clone = snapshot_elem_clone,
                          .drop = snapshot_elem_drop,
                          .name = "updates"};
  tg_watch_opts wo = {.elem_size = sizeof(system_snapshot *),
                      .clone = snapshot_elem_clone,
                      .drop = snapshot_elem_drop,
                      .name = "latest"};
  system_snapshot *initial = snapshot_new(c, 0, 0, 0, NULL, 0);
  if (!initial) return TG_ENOMEM;
  int r = tg_broadcast_new(&bo, updates, NULL);
  if (r == 0 && (r = tg_watch_new(&wo, &initial, latest, NULL)) != 0) tg_broadcast_tx_drop(*updates);
  if (r != 0) snapshot_unref(initial);
  return r;
}
