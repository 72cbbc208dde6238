/* mqtt.c - the MQTT 3.1.1 packet codec; see mqtt.h. */
#include "mqtt.h"

#include <errno.h>
#include <string.h>

int mqtt_remaining_length_encode(uint8_t out[4], uint32_t n) {
  if (n > MQTT_REMAINING_MAX) return -EINVAL;
  int i = 0;
  do {
    uint8_t b = n & 0x7f;
    n >>= 7;
    out[i++] = n ? (uint8_t)(b | 0x80) : b;
  } while (n);
  return i;
}

int mqtt_frame(const uint8_t *buf, size_t len, mqtt_frame_info *f) {
  if (len < 1) return 0;
  uint8_t type = buf[0] >> 4;
  if (type == 0 || type == 15) return -EBADMSG;
  uint32_t n = 0;
  for (size_t i = 1;; i++) {
    if (i > 4) return -EBADMSG; /* a fifth length byte (2.2.3) */
    if (i >= len) return 0;
    n |= (uint32_t)(buf[i] & 0x7f) << (7 * (i - 1));
    if (buf[i] & 0x80) continue;
    *f = (mqtt_frame_info){.type = type, .flags = buf[0] & 0x0f, .head = (uint32_t)i + 1, .body = n};
    return len - f->head >= n;
  }
}

/* ------------------------------------------------------------ encoding */

/* A packet being written into buf: the fixed header is written last,
 * once the body's length is known, in front of it (the body starts at
 * 5, the longest header). */
typedef struct writer {
  uint8_t *buf;
  size_t cap, at;
  int overflow;
} writer;

static void put(writer *w, const void *p, size_t n) {
  if (w->overflow || w->cap - w->at < n) {
    w->overflow = 1;
    return;
  }
  memcpy(w->buf + w->at, p, n);
  w->at += n;
}

static void put_u8(writer *w, uint8_t v) { put(w, &v, 1); }

static void put_u16(writer *w, uint16_t v) {
  uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  put(w, b, 2);
}

/* A UTF-8 string or binary field: a 16-bit length, then the bytes. */
static int put_field(writer *w, const void *p, size_t n) {
  if (n > 0xffff) return -EINVAL;
  put_u16(w, (uint16_t)n);
  put(w, p, n);
  return 0;
}

/* Starts a packet: room for the longest fixed header. */
static writer begin(uint8_t *buf, size_t cap) {
  writer w = {buf, cap, 0, cap < 5};
  if (!w.overflow) w.at = 5;
  return w;
}

/* Writes the fixed header in front of the body and moves the packet to
 * buf's start. Returns its length or -ENOSPC. */
static int finish(writer *w, uint8_t first) {
  if (w->overflow) return -ENOSPC;
  uint32_t body = (uint32_t)(w->at - 5);
  uint8_t head[5] = {first};
  int n = mqtt_remaining_length_encode(head + 1, body);
  if (n < 0) return -ENOSPC;
  memmove(w->buf + 1 + n, w->buf + 5, body);
  memcpy(w->buf, head, (size_t)n + 1);
  return 1 + n + (int)body;
}

int mqtt_encode_connect(uint8_t *buf, size_t cap, const mqtt_connect *c) {
  if (!c->client_id || (c->password && !c->username)) return -EINVAL;
  writer w = begin(buf, cap);
  put_field(&w, "MQTT", 4);
  put_u8(&w, 4); /* protocol level: 3.1.1 */
  uint8_t flags = c->clean_session ? 0x02 : 0;
  if (c->username) flags |= 0x80;
  if (c->password) flags |= 0x40;
  put_u8(&w, flags);
  put_u16(&w, c->keepalive_s);
  int r = put_field(&w, c->client_id, strlen(c->client_id));
  if (r == 0 && c->username) r = put_field(&w, c->username, strlen(c->username));
  if (r == 0 && c->password) r = put_field(&w, c->password, c->password_len);
  return r ? r : finish(&w, MQTT_CONNECT << 4);
}

int mqtt_encode_subscribe(uint8_t *buf, size_t cap, uint16_t packet_id, const char *const *filters, int n, int qos) {
  if (packet_id == 0 || n < 1 || qos < 0 || qos > 2) return -EINVAL;
  writer w = begin(buf, cap);
  put_u16(&w, packet_id);
  for (int i = 0; i < n; i++) {
    size_t len = strlen(filters[i]);
    if (len == 0 || put_field(&w, filters[i], len) != 0) return -EINVAL;
    put_u8(&w, (uint8_t)qos);
  }
  return finish(&w, MQTT_SUBSCRIBE << 4 | 0x2); /* reserved flags 0010 (3.8.1) */
}

int mqtt_encode_puback(uint8_t *buf, size_t cap, uint16_t packet_id) {
  if (packet_id == 0) return -EINVAL;
  if (cap < 4) return -ENOSPC;
  buf[0] = MQTT_PUBACK << 4;
  buf[1] = 2;
  buf[2] = (uint8_t)(packet_id >> 8);
  buf[3] = (uint8_t)packet_id;
  return 4;
}

static int encode_empty(uint8_t *buf, size_t cap, mqtt_type type) {
  if (cap < 2) return -ENOSPC;
  buf[0] = (uint8_t)(type << 4);
  buf[1] = 0;
  return 2;
}

int mqtt_encode_pingreq(uint8_t *buf, size_t cap) { return encode_empty(buf, cap, MQTT_PINGREQ); }

int mqtt_encode_disconnect(uint8_t *buf, size_t cap) { return encode_empty(buf, cap, MQTT_DISCONNECT); }

/* ------------------------------------------------------------ decoding */

const char *mqtt_connack_text(int code) {
  switch (code) {
  case MQTT_CONNACK_ACCEPTED: return "accepted";
  case MQTT_CONNACK_BAD_PROTOCOL: return "protocol version 3.1.1 not supported by the broker";
  case MQTT_CONNACK_ID_REJECTED: return "client id rejected";
  case MQTT_CONNACK_UNAVAILABLE: return "server unavailable";
  case MQTT_CONNACK_BAD_CREDENTIALS: return "bad user name or password";
  case MQTT_CONNACK_NOT_AUTHORIZED: return "not authorized";
  default: return "unknown return code";
  }
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

int mqtt_decode_connack(uint8_t flags, const uint8_t *body, size_t len, int *session_present, int *code) {
  if (flags != 0 || len != 2 || (body[0] & 0xfe)) return -EBADMSG;
  *session_present = body[0] & 1;
  *code = body[1];
  return 0;
}

/* The variable header of a PUBLISH in body[0 .. avail): topic and packet
 * id. Returns the bytes it took, 0 when avail is too short, -EBADMSG. */
static int publish_head(uint8_t flags, const uint8_t *body, size_t avail, mqtt_publish *p) {
  memset(p, 0, sizeof *p);
  p->qos = (flags >> 1) & 3;
  p->dup = (flags >> 3) & 1;
  p->retain = flags & 1;
  if (p->qos == 3) return -EBADMSG;
  if (avail < 2) return 0;
  size_t tlen = get_u16(body), need = 2 + tlen + (p->qos ? 2 : 0);
  if (tlen == 0) return -EBADMSG;
  if (avail < need) return 0;
  p->topic = (const char *)body + 2;
  p->topic_len = tlen;
  for (size_t i = 0; i < tlen; i++)
    if (p->topic[i] == '+' || p->topic[i] == '#' || p->topic[i] == '\0') return -EBADMSG;
  if (p->qos) {
    p->packet_id = get_u16(body + 2 + tlen);
    if (p->packet_id == 0) return -EBADMSG;
  }
  return (int)need;
}

int mqtt_decode_publish(uint8_t flags, const uint8_t *body, size_t len, mqtt_publish *p) {
  int head = publish_head(flags, body, len, p);
  if (head <= 0) return -EBADMSG; /* a whole packet too short for its header is malformed */
  p->payload = body + head;
  p->payload_len = len - (size_t)head;
  return 0;
}

int mqtt_decode_publish_start(uint8_t flags, const uint8_t *body, size_t avail, mqtt_publish *p) {
  int head = publish_head(flags, body, avail, p);
  return head < 0 ? head : head == 0 ? 1 : 0;
}

int mqtt_decode_suback(uint8_t flags, const uint8_t *body, size_t len, uint16_t *packet_id, uint8_t *codes, int cap) {
  if (flags != 0 || len < 3) return -EBADMSG;
  *packet_id = get_u16(body);
  size_t n = len - 2;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = body[2 + i];
    if (c > 2 && c != 0x80) return -EBADMSG;
    if ((int)i < cap) codes[i] = c;
  }
  return n > 0xffff ? -EBADMSG : (int)n;
}

int mqtt_decode_empty(uint8_t flags, size_t len) { return flags == 0 && len == 0 ? 0 : -EBADMSG; }

/* ------------------------------------------------------------ topics */

int mqtt_filter_check(const char *filter) {
  size_t len = strlen(filter);
  if (len == 0 || len > 0xffff) return -EINVAL;
  int plus = 0;
  for (const char *level = filter;;) {
    const char *end = strchr(level, '/');
    size_t n = end ? (size_t)(end - level) : strlen(level);
    if (n == 1 && level[0] == '+')
      plus++;
    else if (memchr(level, '+', n) || memchr(level, '#', n))
      return -EINVAL;
    if (!end) break;
    level = end + 1;
  }
  return plus == 1 ? 0 : -EINVAL;
}

int mqtt_topic_device(const char *filter, const char *topic, size_t len, const char **id, size_t *id_len) {
  /* A wildcard first level does not match topics starting with '$' (4.7.2). */
  if (filter[0] == '+' && len > 0 && topic[0] == '$') return 0;
  const char *t = topic, *tend = topic + len;
  for (const char *f = filter;;) {
    const char *fend = strchr(f, '/');
    size_t fn = fend ? (size_t)(fend - f) : strlen(f);
    const char *slash = memchr(t, '/', (size_t)(tend - t));
    const char *level_end = slash ? slash : tend;
    size_t tn = (size_t)(level_end - t);
    if (fn == 1 && f[0] == '+') {
      *id = t;
      *id_len = tn;
    } else if (fn != tn || memcmp(f, t, fn) != 0) {
      return 0;
    }
    if (!fend || !slash) return !fend && !slash;
    f = fend + 1;
    t = slash + 1;
  }
}
