/* api_json.c - snapshots and figures as JSON, written by hand into a
 * buffer: they go out on every stream event, and a general JSON library
 * would build a tree only to print it. */
#include "api_internal.h"

#include "figures.h"

#include <stdio.h>
#include <string.h>

static void key(http_buf *b, const char *k) {
  http_buf_append(b, "\"", 1);
  http_buf_puts(b, k);
  http_buf_append(b, "\":", 2);
}

static void kv_u64(http_buf *b, const char *k, uint64_t v, int comma) {
  key(b, k);
  http_buf_u64(b, v);
  if (comma) http_buf_append(b, ",", 1);
}

static void kv_i64(http_buf *b, const char *k, int64_t v, int comma) {
  key(b, k);
  http_buf_i64(b, v);
  if (comma) http_buf_append(b, ",", 1);
}

static void device_json(http_buf *b, const system_snapshot *s, const device_metrics *m) {
  char number[16];
  snprintf(number, sizeof number, "%u", (unsigned)m->device);
  http_buf_append(b, "{", 1);
  kv_u64(b, "id", m->device, 1);
  key(b, "name"); /* the id the device sends, which health checks take */
  http_buf_json_string(b, m->id && m->id[0] ? m->id : number);
  http_buf_append(b, ",", 1);
  if (s->node) { /* in a cluster: the node aggregating it; null before its first reading */
    key(b, "node");
    if (m->count)
      http_buf_json_string(b, m->node ? m->node : s->node);
    else
      http_buf_puts(b, "null");
    http_buf_append(b, ",", 1);
  }
  kv_u64(b, "count", m->count, 1);
  kv_u64(b, "last_seq", m->last_seq, 1);
  key(b, "fields"); /* a float's mean, an integer's or a boolean's last value */
  http_buf_append(b, "{", 1);
  for (int k = 0; k < SNAPSHOT_FIELDS && m->field_name[k]; k++) {
    if (k) http_buf_append(b, ",", 1);
    http_buf_json_string(b, snapshot_field_name(s, m->field_name[k]));
    http_buf_append(b, ":", 1);
    if (m->field_type[k] == FIELD_FLOAT)
      http_buf_json_double(b, m->field_value[k], 2);
    else if (m->field_type[k] == FIELD_BOOL)
      http_buf_puts(b, m->field_value[k] != 0 ? "true" : "false");
    else
      http_buf_i64(b, (int64_t)m->field_value[k]);
  }
  http_buf_append(b, "},", 2);
  kv_i64(b, "last_seen_ms", m->last_seen_ms, 1);
  kv_i64(b, "age_ms", m->count ? s->at_ms - m->last_seen_ms : -1, 1);
  key(b, "stale"); /* silent for longer than stale_after_ms when the snapshot was built */
  http_buf_puts(b, snapshot_device_stale(s, m) ? "true" : "false");
  http_buf_append(b, "}", 1);
}

/* Devices written between two pauses: a snapshot of 100,000 devices is
 * about 13 MB of JSON, tens of milliseconds of work that must not hold
 * the worker the devices' connections share for that long at once. */
#define DEVICES_PER_SLICE 512

/* Steps aside until the worker has polled its sockets. A tg_yield lets
 * only the tasks already runnable go first, and a worker polls once per
 * 256 task switches, so with many clients a device whose line has just
 * arrived would wait behind all of their slices; a short sleep puts this
 * task behind the next poll instead. */
static void pause_for_io(void) { tg_sleep(50 * 1000); }

static void summary_json(http_buf *b, const system_snapshot *s) {
  http_buf_append(b, "{", 1);
  kv_u64(b, "version", s->version, 1);
  kv_i64(b, "at_ms", s->at_ms, 1);
  kv_u64(b, "total_readings", s->total_messages, 1);
  kv_u64(b, "active_devices", s->active_devices, 1);
  kv_u64(b, "stale_devices", s->stale_devices, 1);
  kv_i64(b, "stale_after_ms", s->stale_after_ms, 1);
  if (s->node) { /* in a cluster: this node, and the nodes it heard from (itself included) */
    key(b, "node");
    http_buf_json_string(b, s->node);
    http_buf_append(b, ",", 1);
    kv_u64(b, "nodes", s->nodes, 1);
  }
  key(b, "fleet"); /* the mean over active devices of each float field's mean */
  http_buf_append(b, "{", 1);
  for (int k = 0; k < SNAPSHOT_FIELDS && s->fleet_name[k]; k++) {
    if (k) http_buf_append(b, ",", 1);
    http_buf_json_string(b, snapshot_field_name(s, s->fleet_name[k]));
    http_buf_append(b, ":", 1);
    http_buf_json_double(b, s->fleet_mean[k], 2);
  }
  http_buf_append(b, "},", 2);
}

/* The "devices" array and the object's end: every device, or with a base
 * only those that changed since (the base's devices whose entry did not
 * change after base_at_ms are left out, but for those that turned stale
 * since; devices new since the base all go in). A device of another
 * node changes when its state is merged, which may be long after its
 * last reading: hence merged_ms too. */
/* Whether m was active at base_at_ms and is stale in s: a delta carries
 * it, though it sent nothing, so that its "stale" reaches the client. */
static int turned_stale(const system_snapshot *s, const device_metrics *m, int64_t base_at_ms) {
  return snapshot_device_stale(s, m) && base_at_ms - m->last_seen_ms <= s->stale_after_ms;
}

static void devices_json(http_buf *b, const system_snapshot *s, uint32_t base_ndevices, int64_t base_at_ms) {
  key(b, "devices");
  http_buf_append(b, "[", 1);
  int first = 1;
  for (uint32_t i = 0; i < s->ndevices; i++) {
    const device_metrics *m = &s->devices[i];
    if (i % DEVICES_PER_SLICE == DEVICES_PER_SLICE - 1) pause_for_io();
    if (m->device == 0) continue; /* a slot unused yet */
    int64_t changed_ms = m->merged_ms > m->last_seen_ms ? m->merged_ms : m->last_seen_ms;
    if (i < base_ndevices && changed_ms < base_at_ms && !turned_stale(s, m, base_at_ms)) continue;
    if (!first) http_buf_append(b, ",", 1);
    first = 0;
    device_json(b, s, m);
  }
  http_buf_append(b, "]}", 2);
}

void api_json_snapshot(http_buf *b, const system_snapshot *s) {
  summary_json(b, s);
  devices_json(b, s, 0, 0);
}

void api_json_delta(http_buf *b, const system_snapshot *s, uint64_t base_version, int64_t base_at_ms,
                    uint32_t base_ndevices) {
  summary_json(b, s);
  kv_u64(b, "base", base_version, 1);
  kv_u64(b, "ndevices", s->ndevices, 1);
  devices_json(b, s, base_ndevices, base_at_ms);
}

static int named(const device_metrics *m, const char *name) {
  char number[16];
  snprintf(number, sizeof number, "%u", (unsigned)m->device);
  return strcmp(m->id && m->id[0] ? m->id : number, name) == 0;
}

void api_json_snapshot_page(http_buf *b, const system_snapshot *s, const api_page *p) {
  summary_json(b, s);
  kv_u64(b, "ndevices", s->ndevices, 1);
  key(b, "devices");
  http_buf_append(b, "[", 1);
  uint32_t n = 0, last = 0, i = p->device ? 0 : p->after;
  for (; i < s->ndevices && n < p->limit; i++) {
    const device_metrics *m = &s->devices[i];
    if (i % DEVICES_PER_SLICE == DEVICES_PER_SLICE - 1) pause_for_io();
    if (m->device == 0 || (p->device && !named(m, p->device))) continue;
    if (n++) http_buf_append(b, ",", 1);
    device_json(b, s, m);
    last = m->device;
  }
  http_buf_append(b, "],", 2);
  key(b, "next_after");
  if (!p->device && i < s->ndevices)
    http_buf_u64(b, last); /* a full page: there may be more */
  else
    http_buf_puts(b, "null");
  http_buf_append(b, "}", 1);
}

/* The figures as the dashboard draws them: the stages of DESIGN.md's
 * diagram, under the keys figures.c gives them. */
void api_json_pipeline(http_buf *b, api_server *a) {
  serve_figures f = {0};
  if (a->deps.figures) a->deps.figures(a->deps.ctx, &f);
  http_server_stats h;
  stream_figures st;
  uint64_t hr[API_HEALTH_RESULTS];
  api_server_stats(a, &h, &st, hr);

  figure_source src[] = {figures_serve(&f), figures_http(&h), figures_streams(&st)};
  http_buf_puts(b, a->deps.figures ? "{\"has_pipeline\":true," : "{\"has_pipeline\":false,");
  figures_json_members(b, src, 3, FIGURE_JSON_API);
  http_buf_append(b, "}", 1);
}
