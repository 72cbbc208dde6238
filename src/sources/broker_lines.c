/* broker_lines.c - a broker message's lines to readings; see broker_lines.h. */
#include "broker_lines.h"

#include <stdio.h>
#include <string.h>

size_t broker_lines_scratch_bytes(const serve_config *cfg) {
  return (size_t)cfg->max_line_bytes + PROTOCOL_DEVICE_ID_MAX + 16;
}

int broker_lines_device_ok(const char *id, size_t len) {
  if (len < 1 || len > PROTOCOL_DEVICE_ID_MAX) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == ':' || c == '-'))
      return 0;
  }
  return 1;
}

static void refuse(broker_lines *b, uint64_t line_no, int reason) {
  figure_add(&b->bad[reason], 1);
  b->refused(b->ctx, line_no, reason);
}

/* A JSON or line-protocol line that names no device, with id put in;
 * its length, or 0 when it does not fit. */
static size_t with_device(broker_lines *b, const char *line, size_t n, const char *id) {
  size_t cap = broker_lines_scratch_bytes(b->cfg), i = 0, at;
  while (i < n && (line[i] == ' ' || line[i] == '\t')) i++;
  char insert[PROTOCOL_DEVICE_ID_MAX + 16];
  int k;
  if (i < n && line[i] == '{') {
    at = i + 1;
    size_t j = at;
    while (j < n && (line[j] == ' ' || line[j] == '\t')) j++;
    k = snprintf(insert, sizeof insert, "\"device\":\"%s\"%s", id, j < n && line[j] == '}' ? "" : ",");
  } else {
    at = i; /* after the measurement */
    while (at < n && line[at] != ',' && line[at] != ' ' && line[at] != '\t') at++;
    k = snprintf(insert, sizeof insert, ",device=%s", id);
  }
  if (n + (size_t)k > cap) return 0;
  memcpy(b->line, line, at);
  memcpy(b->line + at, insert, (size_t)k);
  memcpy(b->line + at + k, line + at, n - at);
  return n + (size_t)k;
}

/* One line, for device id. Returns 0 with *index and *seq set when a
 * reading went on, 1 when there was none (a blank line, or refused),
 * TG_ECLOSED. */
static int send_line(broker_lines *b, uint64_t line_no, const char *line, size_t n, const char *id, uint32_t *index,
                     uint64_t *seq) {
  figure_add(b->lines, 1);
  protocol_msg msg;
  protocol_error e = {0};
  size_t max = (size_t)b->cfg->max_line_bytes;
  protocol_opts o = {
      .max_len = max, .now_ms = -1, .device_key = b->cfg->json_device_key, .time_key = b->cfg->json_time_key};
  int r = protocol_parse(line, n, &o, &msg, &e);
  if (r == -PROTOCOL_MISSING_FIELD && e.field && strcmp(e.field, "device") == 0 && n <= max) {
    size_t len = with_device(b, line, n, id);
    o.max_len = broker_lines_scratch_bytes(b->cfg);
    if (len) r = protocol_parse(b->line, len, &o, &msg, &e);
  }
  if (r < 0) {
    refuse(b, line_no, -r);
    return 1;
  }
  if (msg.kind == PROTOCOL_BLANK) return 1;
  if (msg.kind != PROTOCOL_READING) { /* hellos and health replies belong to the device port */
    refuse(b, line_no, PROTOCOL_UNKNOWN_TYPE);
    return 1;
  }
  if (strcmp(msg.device.text, id) != 0) {
    refuse(b, line_no, SERVE_BAD_WRONG_DEVICE);
    return 1;
  }
  reading rd;
  if ((r = seq_check_pack(b->seqs, &msg.point, &rd)) != 0) {
    refuse(b, line_no, r);
    return 1;
  }
  size_t id_len = strlen(id);
  if (registry_intern(b->reg, id, id_len, registry_hash(id, id_len), index, NULL) != 0) {
    reading_free(&rd);
    refuse(b, line_no, SERVE_BAD_TOO_MANY_DEVICES);
    return 1;
  }
  const device_entry *d = registry_entry(b->reg, *index);
  r = b->judged ? seq_check_judged(b->seqs, d, &rd) : seq_check_reading(b->seqs, d, &rd);
  if (r != 0) {
    refuse(b, line_no, r);
    return 1;
  }
  /* A broker relays: it takes a device that has no connection, never one
   * from the connection the device talks over (the device port of this
   * node, whose readings it may consume again from the stream: that
   * connection is owed the device's acks). */
  if (atomic_load_explicit(&((device_entry *)d)->conn, memory_order_relaxed) == NULL)
    registry_attach_free(b->reg, *index, b->rc);
  *seq = rd.seq;
  /* A full channel makes this wait, and the caller reads nothing meanwhile. */
  if (seq_check_send(b->telemetry, &rd) != 0) return TG_ECLOSED;
  figure_add(b->readings, 1);
  return 0;
}

int broker_lines_send(broker_lines *b, const char *id, const char *payload, size_t len, uint32_t *device,
                      uint64_t *seq) {
  *device = 0;
  *seq = 0;
  const char *s = payload, *end = s + len;
  for (uint64_t line_no = 1; s < end; line_no++) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    size_t n = (size_t)((nl ? nl : end) - s);
    uint32_t index;
    uint64_t line_seq;
    int r = send_line(b, line_no, s, n, id, &index, &line_seq);
    if (r < 0) return r;
    if (r == 0 && (!*device || line_seq > *seq)) {
      *device = index;
      *seq = line_seq;
    }
    s = nl ? nl + 1 : end;
  }
  return 0;
}
