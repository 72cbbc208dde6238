/* mqtt.h - the MQTT 3.1.1 packets a subscriber exchanges with its
 * broker: encoders for what it sends (CONNECT, SUBSCRIBE, PUBACK,
 * PINGREQ, DISCONNECT), decoders for what it receives (CONNACK, PUBLISH,
 * SUBACK, PINGRESP), and the topic filters that name a device.
 *
 * Pure functions over byte buffers: no I/O, no allocation, no state, safe
 * on any thread. A decoder reads nothing outside buf[0 .. len) and the
 * structs it fills point into buf, so they live as long as the caller's
 * bytes do. Every length is checked against the packet's own before a
 * byte is read: a truncated or malformed packet is an error, never a read
 * past the end (the broker is trusted to speak MQTT, not to be correct).
 *
 * Framing: a packet is a fixed header (type and flags in one byte, then
 * the remaining length in 1 to 4 bytes of 7 bits each, least significant
 * first, 0 .. 268,435,455) and that many bytes of body. mqtt_frame says
 * whether a whole packet is in a buffer, so a reader can take packets out
 * of a socket's buffer in place.
 *
 * Versions: 3.1.1 (protocol level 4) and 5 (level 5), told apart by the
 * `version` the encoders and decoders take. What 5 adds here is
 * properties (a length, then identifier-value pairs, skipped on decoding
 * except those named), the CONNECT's Receive Maximum - how many QoS 1
 * messages the broker may send before an acknowledgement, which a 3.1.1
 * client can only leave to the broker's configuration - and Session
 * Expiry Interval, and reason codes in CONNACK, SUBACK and a broker's
 * DISCONNECT.
 *
 * The specs are OASIS MQTT Version 3.1.1 (2014) and MQTT Version 5.0
 * (2019); section numbers below are 3.1.1's unless they say 5. */
#ifndef TELEGATE_MQTT_H
#define TELEGATE_MQTT_H

#include <stddef.h>
#include <stdint.h>

/* The largest remaining length a fixed header can say (2.2.3). */
#define MQTT_REMAINING_MAX 268435455u

typedef enum mqtt_type {
  MQTT_CONNECT = 1,
  MQTT_CONNACK = 2,
  MQTT_PUBLISH = 3,
  MQTT_PUBACK = 4,
  MQTT_PUBREC = 5,
  MQTT_PUBREL = 6,
  MQTT_PUBCOMP = 7,
  MQTT_SUBSCRIBE = 8,
  MQTT_SUBACK = 9,
  MQTT_UNSUBSCRIBE = 10,
  MQTT_UNSUBACK = 11,
  MQTT_PINGREQ = 12,
  MQTT_PINGRESP = 13,
  MQTT_DISCONNECT = 14,
} mqtt_type;

/* Protocol levels (3.1.2.2). */
enum { MQTT_V311 = 4, MQTT_V5 = 5 };

/* A packet found by mqtt_frame. */
typedef struct mqtt_frame_info {
  uint8_t type;  /* mqtt_type */
  uint8_t flags; /* the low 4 bits of the first byte */
  uint32_t head; /* bytes of the fixed header: 2 .. 5 */
  uint32_t body; /* the remaining length */
} mqtt_frame_info;

/* Reads the fixed header at buf[0 .. len). Returns 1 with *f set when the
 * whole packet (f->head + f->body bytes) is there; 0 when more bytes are
 * needed (*f set once the header is complete, so a caller can see how
 * big the packet will be); -EBADMSG for a remaining length longer than 4
 * bytes or a type of 0 or 15. */
int mqtt_frame(const uint8_t *buf, size_t len, mqtt_frame_info *f);

/* Writes a remaining length; returns its bytes (1 .. 4), or -EINVAL past
 * MQTT_REMAINING_MAX. */
int mqtt_remaining_length_encode(uint8_t out[4], uint32_t n);

typedef struct mqtt_connect {
  int version;           /* MQTT_V311 or MQTT_V5 */
  const char *client_id; /* 1 .. 23 bytes of [0-9a-zA-Z] are what every broker must take; most take more */
  const char *username;  /* NULL: none */
  const char *password;  /* NULL: none (only with a username, 3.1.2.9) */
  size_t password_len;
  uint16_t keepalive_s; /* 0: none */
  int clean_session;    /* 0: the broker keeps the session (subscriptions, QoS 1 messages) while we are away */
  /* 5 only */
  uint16_t receive_max;      /* QoS 1 messages the broker may have unacknowledged; 0: the default, 65,535 */
  uint32_t session_expiry_s; /* how long the broker keeps the session after a disconnect; 0xffffffff: for ever */
} mqtt_connect;

/* The encoders write one packet into buf and return its length, or
 * -ENOSPC when cap is too small, -EINVAL for a field the packet cannot
 * carry (a string over 65,535 bytes, a packet id of 0, no topic). */
int mqtt_encode_connect(uint8_t *buf, size_t cap, const mqtt_connect *c);
/* SUBSCRIBE of n filters, each at qos; with 5, retained messages are
 * asked for only when the subscription is new (Retain Handling 1). */
int mqtt_encode_subscribe(uint8_t *buf, size_t cap, int version, uint16_t packet_id, const char *const *filters, int n,
                          int qos);
int mqtt_encode_puback(uint8_t *buf, size_t cap, uint16_t packet_id);
int mqtt_encode_pingreq(uint8_t *buf, size_t cap);
int mqtt_encode_disconnect(uint8_t *buf, size_t cap);

/* CONNACK return codes (3.2.2.3). */
enum {
  MQTT_CONNACK_ACCEPTED = 0,
  MQTT_CONNACK_BAD_PROTOCOL = 1,
  MQTT_CONNACK_ID_REJECTED = 2,
  MQTT_CONNACK_UNAVAILABLE = 3,
  MQTT_CONNACK_BAD_CREDENTIALS = 4,
  MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

/* What a CONNACK return code (3.1.1) or reason code (5, 0x80 and up)
 * means, in a few words. */
const char *mqtt_connack_text(int code);

/* Whether a CONNACK code says the broker does not speak the version asked
 * (3.1.1's 1, 5's 0x84): a 3.1.1 broker answers a version 5 CONNECT so. */
int mqtt_connack_version_refused(int code);

/* The decoders take a packet's flags and body as mqtt_frame found them
 * (body = buf + f.head, len = f.body). Each returns 0, or -EBADMSG for a
 * packet that breaks the spec: wrong reserved flags, a length that does
 * not match, a field running past the end. */
typedef struct mqtt_connack {
  int session_present;    /* the broker kept our session */
  int code;               /* 0: accepted; see mqtt_connack_text */
  int server_keepalive_s; /* 5: the keepalive the broker wants instead of ours; -1: none */
} mqtt_connack;

/* A CONNACK. With version 5 its properties are checked (each one known
 * and within the packet) and Server Keep Alive is read; a 3.1.1-sized
 * CONNACK refusing the connection is taken too (a 3.1.1 broker refusing
 * version 5). */
int mqtt_decode_connack(int version, uint8_t flags, const uint8_t *body, size_t len, mqtt_connack *c);

typedef struct mqtt_publish {
  const char *topic; /* not NUL-terminated */
  size_t topic_len;
  const uint8_t *payload;
  size_t payload_len;
  uint16_t packet_id; /* with qos > 0; never 0 then */
  uint8_t qos, dup, retain;
} mqtt_publish;

/* Also -EBADMSG for QoS 3, an empty topic (5: a topic alias, which a
 * client that allows none never gets), a topic holding a wildcard ('+',
 * '#') or a NUL, a packet id of 0, properties running past the end. */
int mqtt_decode_publish(int version, uint8_t flags, const uint8_t *body, size_t len, mqtt_publish *p);

/* The start of a PUBLISH too large to hold: its topic and packet id from
 * the first bytes of its body (avail of them, the body being longer).
 * Returns 0, 1 when more bytes are needed, -EBADMSG. */
int mqtt_decode_publish_start(uint8_t flags, const uint8_t *body, size_t avail, mqtt_publish *p);

/* A SUBACK: its packet id, and up to cap return codes into codes (0, 1,
 * 2: the QoS granted; 0x80 and up: refused, with 5's reason). Returns how many codes the packet
 * holds (may be more than cap), or -EBADMSG. */
int mqtt_decode_suback(int version, uint8_t flags, const uint8_t *body, size_t len, uint16_t *packet_id, uint8_t *codes,
                       int cap);

/* A broker's DISCONNECT (5 only: in 3.1.1 only a client sends one): its
 * reason code (0 when the body is empty). */
int mqtt_decode_disconnect(uint8_t flags, const uint8_t *body, size_t len, int *reason);

/* A packet with no body and no flags: PINGRESP. */
int mqtt_decode_empty(uint8_t flags, size_t len);

/* Topic filters that name a device: levels separated by '/', exactly one
 * of them the single-level wildcard '+' (the device id), the others plain
 * (no '#', no '+' inside a level), not empty, at most 65,535 bytes.
 * Returns 0 or -EINVAL. */
int mqtt_filter_check(const char *filter);

/* Whether topic[0 .. len) matches filter (which passed mqtt_filter_check);
 * then *id and *id_len are the level the '+' matched (possibly empty).
 * Returns 1 or 0. */
int mqtt_topic_device(const char *filter, const char *topic, size_t len, const char **id, size_t *id_len);

#endif
