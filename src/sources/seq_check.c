/* seq_check.c - a reading's seq, numbered or judged; see seq_check.h. */
#include "seq_check.h"

#include "tg/tg.h"

#include <string.h>

/* Asks storage for e's mark and tells the registry. Returns 0 or the
 * look-up's error. */
static int look_up_mark(const seq_check *c, const device_entry *e, uint64_t window) {
  storage_mark_args a = {.db = c->db, .device = e->index};
  int r = a.db ? tg_blocking_run(storage_mark_get_call, &a) : 0;
  if (r == 0) registry_seq_stored(c->reg, e->index, a.found, a.seq, window);
  return r;
}

static int seq_judge(const seq_check *c, const device_entry *e, reading *r) {
  uint64_t window = SERVE_LIMIT(c->limits, seq_window);
  if (r->seq == READING_SEQ_NONE) {
    if (registry_seq_unlooked(c->reg, e->index) && look_up_mark(c, e, window) != 0)
      return SERVE_BAD_STORAGE_UNAVAILABLE;
    r->seq = registry_seq_next(c->reg, e->index);
    return 0;
  }
  if (registry_seq_restarted(c->reg, e->index, r->seq, r->ts_ms)) return SERVE_BAD_SEQ_RESTARTED;
  if (window) {
    /* A failed look-up leaves the device judged as one without a mark. */
    if (registry_seq_needs_mark(c->reg, e->index, r->seq, window)) look_up_mark(c, e, window);
    if (registry_seq_admit(c->reg, e->index, r->seq, window) != 0) return SERVE_BAD_SEQ_OUT_OF_WINDOW;
  }
  registry_seq_seen(c->reg, e->index, r->seq, r->ts_ms);
  return 0;
}

/* Whether a string or tag of r holds a line break. */
static int has_line_break(const reading *r) {
  const field_value *f = reading_fields(r);
  for (uint32_t i = 0; i < r->nfields; i++)
    if ((f[i].type == FIELD_STRING || f[i].type == FIELD_TAG) &&
        (memchr(f[i].v.s, '\n', f[i].len) || memchr(f[i].v.s, '\r', f[i].len)))
      return 1;
  return 0;
}

int seq_check_pack(const seq_check *c, const protocol_point *p, reading *out) {
  int r = schema_pack(c->schema, p, out, NULL);
  if (r < 0) return -r;
  if (c->to_stream && out->on_heap && has_line_break(out)) {
    reading_free(out);
    return SERVE_BAD_LINE_BREAK;
  }
  return 0;
}

int seq_check_judged(const seq_check *c, const device_entry *e, reading *r) {
  if (r->seq == READING_SEQ_NONE) return seq_check_reading(c, e, r);
  registry_seq_seen(c->reg, e->index, r->seq, r->ts_ms);
  r->device = e->index;
  return 0;
}

int seq_check_reading(const seq_check *c, const device_entry *e, reading *r) {
  int why = c->one_token_ids && memchr(e->id, '.', e->len) ? PROTOCOL_BAD_DEVICE_ID : seq_judge(c, e, r);
  if (why != 0) {
    reading_free(r);
    return why;
  }
  r->device = e->index;
  return 0;
}
