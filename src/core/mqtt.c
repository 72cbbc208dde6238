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

/* A Variable Byte Integer (5 1.5.5, the remaining length's encoding) at
 * p[0 .. len). Returns its bytes with *v set, or -EBADMSG when it runs
 * past len or past 4 bytes. */
static int varint_decode(const uint8_t *p, size_t len, uint32_t *v) {
  *v = 0;
  for (size_t i = 0; i < 4; i++) {
    if (i >= len) return -EBADMSG;
    *v |= (uint32_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) return (int)i + 1;
  }
  return -EBADMSG;
}

/* The bytes of the properties at p[0 .. len), their length included;
 * -EBADMSG when they run past len. */
static int properties_skip(const uint8_t *p, size_t len) {
  uint32_t n;
  int head = varint_decode(p, len, &n);
  if (head < 0 || n > len - (size_t)head) return -EBADMSG;
  return head + (int)n;
}

/* One property at p[0 .. len): its identifier, and its value when it is
 * an integer. Returns its bytes, or -EBADMSG for an unknown identifier or
 * a value running past len (5 2.2.2.2). */
static int property_next(const uint8_t *p, size_t len, uint32_t *id, uint32_t *value) {
  int n = varint_decode(p, len, id);
  if (n < 0) return n;
  size_t at = (size_t)n, need;
  *value = 0;
  switch (*id) {
  case 0x01:
  case 0x17:
  case 0x19:
  case 0x24:
  case 0x25:
  case 0x28:
  case 0x29:
  case 0x2a: need = 1; break;
  case 0x13:
  case 0x21:
  case 0x22:
  case 0x23: need = 2; break;
  case 0x02:
  case 0x11:
  case 0x18:
  case 0x27: need = 4; break;
  case 0x0b: {
    int v = varint_decode(p + at, len - at, value);
    return v < 0 ? v : (int)at + v;
  }
  case 0x03:
  case 0x08:
  case 0x09:
  case 0x12:
  case 0x15:
  case 0x16:
  case 0x1a:
  case 0x1c:
  case 0x1f:
  case 0x26:
    /* a string or binary field; a user property is two strings */
    for (int strings = *id == 0x26 ? 2 : 1; strings > 0; strings--) {
      if (len - at < 2 || len - at - 2 < (size_t)(p[at] << 8 | p[at + 1])) return -EBADMSG;
      at += 2 + (size_t)(p[at] << 8 | p[at + 1]);
    }
    return (int)at;
  default: return -EBADMSG;
  }
  if (len - at < need) return -EBADMSG;
  for (size_t i = 0; i < need; i++) *value = *value << 8 | p[at + i];
  return (int)(at + need);
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

static void put_u32(writer *w, uint32_t v) {
  uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  put(w, b, 4);
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
  if (c->version != MQTT_V311 && c->version != MQTT_V5) return -EINVAL;
  writer w = begin(buf, cap);
  put_field(&w, "MQTT", 4);
  put_u8(&w, (uint8_t)c->version);
  uint8_t flags = c->clean_session ? 0x02 : 0;
  if (c->username) flags |= 0x80;
  if (c->password) flags |= 0x40;
  put_u8(&w, flags);
  put_u16(&w, c->keepalive_s);
  if (c->version == MQTT_V5) { /* properties: Session Expiry Interval, Receive Maximum (5 3.1.2.11) */
    put_u8(&w, (uint8_t)(c->session_expiry_s ? 5 : 0) + (c->receive_max ? 3 : 0));
    if (c->session_expiry_s) {
      put_u8(&w, 0x11);
      put_u32(&w, c->session_expiry_s);
    }
    if (c->receive_max) {
      put_u8(&w, 0x21);
      put_u16(&w, c->receive_max);
    }
  }
  int r = put_field(&w, c->client_id, strlen(c->client_id));
  if (r == 0 && c->username) r = put_field(&w, c->username, strlen(c->username));
  if (r == 0 && c->password) r = put_field(&w, c->password, c->password_len);
  return r ? r : finish(&w, MQTT_CONNECT << 4);
}

int mqtt_encode_subscribe(uint8_t *buf, size_t cap, int version, uint16_t packet_id, const char *const *filters, int n,
                          int qos) {
  if (packet_id == 0 || n < 1 || qos < 0 || qos > 2) return -EINVAL;
  writer w = begin(buf, cap);
  put_u16(&w, packet_id);
  if (version == MQTT_V5) put_u8(&w, 0); /* no properties */
  for (int i = 0; i < n; i++) {
    size_t len = strlen(filters[i]);
    if (len == 0 || put_field(&w, filters[i], len) != 0) return -EINVAL;
    /* 5: Retain Handling 1 - retained messages only when the subscription
     * is new, not again at each resubscription of a kept session (5 3.8.3.1) */
    put_u8(&w, (uint8_t)(qos | (version == MQTT_V5 ? 0x10 : 0)));
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
  case 0x80: return "unspecified error";
  case 0x81: return "malformed packet";
  case 0x82: return "protocol error";
  case 0x83: return "implementation specific error";
  case 0x84: return "protocol version not supported by the broker";
  case 0x85: return "client id not valid";
  case 0x86: return "bad user name or password";
  case 0x87: return "not authorized";
  case 0x88: return "server unavailable";
  case 0x89: return "server busy";
  case 0x8a: return "banned";
  case 0x8c: return "bad authentication method";
  case 0x8e: return "session taken over";
  case 0x90: return "topic name invalid";
  case 0x93: return "receive maximum exceeded";
  case 0x95: return "packet too large";
  case 0x97: return "quota exceeded";
  case 0x99: return "payload format invalid";
  case 0x9c: return "use another server";
  case 0x9d: return "server moved";
  case 0x9f: return "connection rate exceeded";
  case MQTT_CONNACK_ACCEPTED: return "accepted";
  case MQTT_CONNACK_BAD_PROTOCOL: return "protocol version not supported by the broker";
  case MQTT_CONNACK_ID_REJECTED: return "client id rejected";
  case MQTT_CONNACK_UNAVAILABLE: return "server unavailable";
  case MQTT_CONNACK_BAD_CREDENTIALS: return "bad user name or password";
  case MQTT_CONNACK_NOT_AUTHORIZED: return "not authorized";
  default: return "unknown return code";
  }
}

int mqtt_connack_version_refused(int code) { return code == MQTT_CONNACK_BAD_PROTOCOL || code == 0x84; }

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

int mqtt_decode_connack(int version, uint8_t flags, const uint8_t *body, size_t len, mqtt_connack *c) {
  if (flags != 0 || len < 2 || (body[0] & 0xfe)) return -EBADMSG;
  *c = (mqtt_connack){.session_present = body[0] & 1, .code = body[1], .server_keepalive_s = -1};
  if (len == 2) return version == MQTT_V311 || c->code != 0 ? 0 : -EBADMSG;
  if (version != MQTT_V5) return -EBADMSG;
  uint32_t n;
  int at = varint_decode(body + 2, len - 2, &n);
  if (at < 0 || n != len - 2 - (size_t)at) return -EBADMSG;
  for (size_t i = 2 + (size_t)at; i < len;) {
    uint32_t id, value;
    int k = property_next(body + i, len - i, &id, &value);
    if (k < 0) return k;
    if (id == 0x13) c->server_keepalive_s = (int)value; /* the broker's keepalive wins (5 3.2.2.3.14) */
    i += (size_t)k;
  }
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

int mqtt_decode_publish(int version, uint8_t flags, const uint8_t *body, size_t len, mqtt_publish *p) {
  int head = publish_head(flags, body, len, p);
  if (head <= 0) return -EBADMSG; /* a whole packet too short for its header is malformed */
  if (version == MQTT_V5) {
    int props = properties_skip(body + head, len - (size_t)head);
    if (props < 0) return -EBADMSG;
    head += props;
  }
  p->payload = body + head;
  p->payload_len = len - (size_t)head;
  return 0;
}

int mqtt_decode_publish_start(uint8_t flags, const uint8_t *body, size_t avail, mqtt_publish *p) {
  int head = publish_head(flags, body, avail, p);
  return head < 0 ? head : head == 0 ? 1 : 0;
}

int mqtt_decode_suback(int version, uint8_t flags, const uint8_t *body, size_t len, uint16_t *packet_id, uint8_t *codes,
                       int cap) {
  if (flags != 0 || len < 3) return -EBADMSG;
  *packet_id = get_u16(body);
  size_t at = 2;
  if (version == MQTT_V5) {
    int props = properties_skip(body + at, len - at);
    if (props < 0) return -EBADMSG;
    at += (size_t)props;
  }
  size_t n = len - at;
  if (n == 0 || n > 0xffff) return -EBADMSG;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = body[at + i];
    if (c > 2 && (version == MQTT_V5 ? c < 0x80 : c != 0x80)) return -EBADMSG;
    if ((int)i < cap) codes[i] = c;
  }
  return (int)n;
}

int mqtt_decode_disconnect(uint8_t flags, const uint8_t *body, size_t len, int *reason) {
  if (flags != 0) return -EBADMSG;
  *reason = len ? body[0] : 0;
  return len <= 1 || properties_skip(body + 1, len - 1) == (int)(len - 1) ? 0 : -EBADMSG;
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
