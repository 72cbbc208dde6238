/* test-mqtt.c - the MQTT 3.1.1 codec: packets byte for byte as the spec
 * writes them, remaining lengths at every boundary, malformed and
 * truncated packets refused without a read past the end (each decoder
 * reads an allocation of exactly the packet's length, so ASan sees any),
 * and the topic filters that name a device. */
#include "helpers.h"
#include "mqtt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A copy of b[0 .. n) in an allocation of exactly n bytes. */
static uint8_t *exact(const uint8_t *b, size_t n) {
  uint8_t *p = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(p);
  memcpy(p, b, n);
  return p;
}

START_TEST(test_mqtt_remaining_length_boundaries) {
  static const struct {
    uint32_t n;
    int bytes;
    uint8_t enc[4];
  } cases[] = {
      {0, 1, {0x00}},
      {127, 1, {0x7f}},
      {128, 2, {0x80, 0x01}},
      {16383, 2, {0xff, 0x7f}},
      {16384, 3, {0x80, 0x80, 0x01}},
      {2097151, 3, {0xff, 0xff, 0x7f}},
      {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
      {268435455, 4, {0xff, 0xff, 0xff, 0x7f}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint8_t out[4];
    ck_assert_int_eq(mqtt_remaining_length_encode(out, cases[i].n), cases[i].bytes);
    ck_assert_mem_eq(out, cases[i].enc, (size_t)cases[i].bytes);
    /* framed: a PUBLISH header with that length, complete only with the body */
    uint8_t head[5] = {0x30};
    memcpy(head + 1, out, (size_t)cases[i].bytes);
    mqtt_frame_info f;
    int whole = mqtt_frame(head, 1 + (size_t)cases[i].bytes, &f);
    ck_assert_int_eq(whole, cases[i].n == 0);
    ck_assert_uint_eq(f.head, 1 + (unsigned)cases[i].bytes);
    ck_assert_uint_eq(f.body, cases[i].n);
    ck_assert_uint_eq(f.type, MQTT_PUBLISH);
    for (int cut = 0; cut <= cases[i].bytes; cut++) /* a header cut short: wait for more */
      ck_assert_int_eq(mqtt_frame(head, (size_t)cut, &f), 0);
  }
  uint8_t out[4];
  ck_assert_int_eq(mqtt_remaining_length_encode(out, MQTT_REMAINING_MAX + 1), -EINVAL);
  /* a fifth length byte, and types 0 and 15, are malformed */
  static const uint8_t five[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x01};
  mqtt_frame_info f;
  ck_assert_int_eq(mqtt_frame(five, sizeof five, &f), -EBADMSG);
  ck_assert_int_eq(mqtt_frame((const uint8_t[]){0x00, 0x00}, 2, &f), -EBADMSG);
  ck_assert_int_eq(mqtt_frame((const uint8_t[]){0xf0, 0x00}, 2, &f), -EBADMSG);
  /* two packets back to back: the first is framed alone */
  static const uint8_t two[] = {0xd0, 0x00, 0xd0, 0x00};
  ck_assert_int_eq(mqtt_frame(two, sizeof two, &f), 1);
  ck_assert_uint_eq(f.type, MQTT_PINGRESP);
  ck_assert_uint_eq(f.head + f.body, 2);
}
END_TEST

START_TEST(test_mqtt_encode_connect) {
  uint8_t buf[128];
  /* 3.1.1 figure 3.1-3.6: protocol name, level 4, flags, keepalive */
  mqtt_connect c = {.version = MQTT_V311, .client_id = "tg", .keepalive_s = 60, .clean_session = 0};
  static const uint8_t plain[] = {0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, 0, 60, 0, 2, 't', 'g'};
  ck_assert_int_eq(mqtt_encode_connect(buf, sizeof buf, &c), (int)sizeof plain);
  ck_assert_mem_eq(buf, plain, sizeof plain);
  c = (mqtt_connect){.version = MQTT_V311,
                     .client_id = "tg",
                     .username = "u",
                     .password = "p\0w",
                     .password_len = 3,
                     .clean_session = 1};
  static const uint8_t auth[] = {0x10, 22, 0,   4,   'M', 'Q', 'T', 'T', 4, 0xc2, 0, 0,
                                 0,    2,  't', 'g', 0,   1,   'u', 0,   3, 'p',  0, 'w'};
  ck_assert_int_eq(mqtt_encode_connect(buf, sizeof buf, &c), (int)sizeof auth);
  ck_assert_mem_eq(buf, auth, sizeof auth);
  for (size_t cap = 0; cap < sizeof auth; cap++) ck_assert_int_eq(mqtt_encode_connect(buf, cap, &c), -ENOSPC);
  c.username = NULL; /* a password needs a user name (3.1.2.9) */
  ck_assert_int_eq(mqtt_encode_connect(buf, sizeof buf, &c), -EINVAL);
  /* a long client id: a two-byte remaining length */
  static char id[201];
  memset(id, 'a', 200);
  c = (mqtt_connect){.version = MQTT_V311, .client_id = id};
  static uint8_t big[300];
  int n = mqtt_encode_connect(big, sizeof big, &c);
  ck_assert_int_eq(n, 3 + 10 + 2 + 200);
  ck_assert_uint_eq(big[1], (212 & 0x7f) | 0x80);
  ck_assert_uint_eq(big[2], 1);
  ck_assert_uint_eq(big[3 + 10], 0);
  ck_assert_uint_eq(big[3 + 11], 200);
  /* 5: level 5, properties Session Expiry Interval and Receive Maximum (5 3.1.2.11) */
  c = (mqtt_connect){
      .version = MQTT_V5, .client_id = "tg", .keepalive_s = 30, .receive_max = 2000, .session_expiry_s = 0xffffffff};
  static const uint8_t v5[] = {0x10, 23,   0,    4,    'M',  'Q',  'T',  'T',  5, 0x00, 0,   30, 8,
                               0x11, 0xff, 0xff, 0xff, 0xff, 0x21, 0x07, 0xd0, 0, 2,    't', 'g'};
  ck_assert_int_eq(mqtt_encode_connect(buf, sizeof buf, &c), (int)sizeof v5);
  ck_assert_mem_eq(buf, v5, sizeof v5);
  c.receive_max = 0;
  c.session_expiry_s = 0; /* no property: an empty list */
  ck_assert_int_eq(mqtt_encode_connect(buf, sizeof buf, &c), 17);
  ck_assert_uint_eq(buf[12], 0);
  c.version = 3;
  ck_assert_int_eq(mqtt_encode_connect(buf, sizeof buf, &c), -EINVAL);
}
END_TEST

START_TEST(test_mqtt_encode_small_packets) {
  uint8_t buf[64];
  const char *filters[] = {"a/+/b", "c/+"};
  static const uint8_t sub[] = {0x82, 16, 0x12, 0x34, 0, 5, 'a', '/', '+', '/', 'b', 1, 0, 3, 'c', '/', '+', 1};
  ck_assert_int_eq(mqtt_encode_subscribe(buf, sizeof buf, MQTT_V311, 0x1234, filters, 2, 1), (int)sizeof sub);
  ck_assert_mem_eq(buf, sub, sizeof sub);
  ck_assert_int_eq(mqtt_encode_subscribe(buf, sizeof buf, MQTT_V311, 0, filters, 2, 1), -EINVAL);
  ck_assert_int_eq(mqtt_encode_subscribe(buf, sizeof buf, MQTT_V311, 1, filters, 0, 1), -EINVAL);
  ck_assert_int_eq(mqtt_encode_subscribe(buf, 10, MQTT_V311, 1, filters, 2, 1), -ENOSPC);
  /* 5: an empty property list after the packet id */
  ck_assert_int_eq(mqtt_encode_subscribe(buf, sizeof buf, MQTT_V5, 0x1234, filters, 1, 1), 13);
  ck_assert_mem_eq(buf, ((const uint8_t[]){0x82, 11, 0x12, 0x34, 0, 0, 5, 'a', '/', '+', '/', 'b', 0x11}), 13);
  static const uint8_t puback[] = {0x40, 2, 0xbe, 0xef};
  ck_assert_int_eq(mqtt_encode_puback(buf, sizeof buf, 0xbeef), 4);
  ck_assert_mem_eq(buf, puback, 4);
  ck_assert_int_eq(mqtt_encode_puback(buf, 3, 1), -ENOSPC);
  ck_assert_int_eq(mqtt_encode_puback(buf, sizeof buf, 0), -EINVAL);
  ck_assert_int_eq(mqtt_encode_pingreq(buf, sizeof buf), 2);
  ck_assert_mem_eq(buf, ((const uint8_t[]){0xc0, 0}), 2);
  ck_assert_int_eq(mqtt_encode_disconnect(buf, sizeof buf), 2);
  ck_assert_mem_eq(buf, ((const uint8_t[]){0xe0, 0}), 2);
  ck_assert_int_eq(mqtt_encode_pingreq(buf, 1), -ENOSPC);
}
END_TEST

START_TEST(test_mqtt_decode_connack_suback) {
  mqtt_connack c;
  uint8_t *b = exact((const uint8_t[]){0x01, 0x00}, 2);
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V311, 0, b, 2, &c), 0);
  ck_assert_int_eq(c.session_present, 1);
  ck_assert_int_eq(c.code, 0);
  ck_assert_int_eq(c.server_keepalive_s, -1);
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V311, 1, b, 2, &c), -EBADMSG); /* reserved flags */
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V311, 0, b, 1, &c), -EBADMSG); /* truncated */
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V5, 0, b, 2, &c), -EBADMSG);   /* 5 accepts with properties */
  free(b);
  b = exact((const uint8_t[]){0x02, 0x05}, 2); /* reserved bits of the acknowledge flags */
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V311, 0, b, 2, &c), -EBADMSG);
  free(b);
  b = exact((const uint8_t[]){0x00, 0x04}, 2);
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V311, 0, b, 2, &c), 0);
  ck_assert_int_eq(c.code, MQTT_CONNACK_BAD_CREDENTIALS);
  ck_assert_str_eq(mqtt_connack_text(c.code), "bad user name or password");
  free(b);
  /* a 3.1.1 broker refusing a 5 CONNECT: its 2-byte CONNACK, code 1 */
  b = exact((const uint8_t[]){0x00, 0x01}, 2);
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V5, 0, b, 2, &c), 0);
  ck_assert(mqtt_connack_version_refused(c.code));
  free(b);
  ck_assert(mqtt_connack_version_refused(0x84));
  ck_assert(!mqtt_connack_version_refused(0x86));
  ck_assert_str_eq(mqtt_connack_text(0x87), "not authorized");
  /* 5: properties - Receive Maximum, a reason string, a user property, Server Keep Alive */
  static const uint8_t props[] = {0x00, 0x00, 18, 0x21, 0x00, 0x10, 0x1f, 0,    2, 'o', 'k',
                                  0x26, 0,    1,  'k',  0,    1,    'v',  0x13, 0, 10};
  b = exact(props, sizeof props);
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V5, 0, b, sizeof props, &c), 0);
  ck_assert_int_eq(c.server_keepalive_s, 10);
  for (size_t n = 3; n < sizeof props; n++) /* every cut: the property list runs past the packet */
    ck_assert_int_eq(mqtt_decode_connack(MQTT_V5, 0, b, n, &c), -EBADMSG);
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V311, 0, b, sizeof props, &c), -EBADMSG);
  free(b);
  static const uint8_t unknown[] = {0x00, 0x00, 2, 0x7f, 0x00}; /* an identifier 5 does not define */
  b = exact(unknown, sizeof unknown);
  ck_assert_int_eq(mqtt_decode_connack(MQTT_V5, 0, b, sizeof unknown, &c), -EBADMSG);
  free(b);

  uint16_t id;
  uint8_t codes[4];
  b = exact((const uint8_t[]){0x00, 0x07, 0x01, 0x80}, 4);
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V311, 0, b, 4, &id, codes, 4), 2);
  ck_assert_uint_eq(id, 7);
  ck_assert_uint_eq(codes[0], 1);
  ck_assert_uint_eq(codes[1], 0x80);
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V311, 0, b, 4, &id, codes, 1), 2);        /* more codes than room: counted */
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V311, 0, b, 2, &id, codes, 4), -EBADMSG); /* no code */
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V311, 2, b, 4, &id, codes, 4), -EBADMSG);
  free(b);
  b = exact((const uint8_t[]){0x00, 0x07, 0x03}, 3); /* not a QoS nor 0x80 */
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V311, 0, b, 3, &id, codes, 4), -EBADMSG);
  free(b);
  /* 5: properties before the codes, and reason codes 0x80 and up */
  static const uint8_t sub5[] = {0x00, 0x07, 5, 0x1f, 0, 2, 'n', 'o', 0x01, 0x87};
  b = exact(sub5, sizeof sub5);
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V5, 0, b, sizeof sub5, &id, codes, 4), 2);
  ck_assert_uint_eq(codes[0], 1);
  ck_assert_uint_eq(codes[1], 0x87);
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V5, 0, b, 8, &id, codes, 4), -EBADMSG); /* no code after them */
  ck_assert_int_eq(mqtt_decode_suback(MQTT_V5, 0, b, 6, &id, codes, 4), -EBADMSG); /* cut inside them */
  free(b);
  int reason;
  b = exact((const uint8_t[]){0x8e, 0x00}, 2);
  ck_assert_int_eq(mqtt_decode_disconnect(0, b, 0, &reason), 0);
  ck_assert_int_eq(reason, 0);
  ck_assert_int_eq(mqtt_decode_disconnect(0, b, 1, &reason), 0);
  ck_assert_int_eq(reason, 0x8e);
  ck_assert_int_eq(mqtt_decode_disconnect(0, b, 2, &reason), 0);
  ck_assert_int_eq(mqtt_decode_disconnect(1, b, 2, &reason), -EBADMSG);
  free(b);
  ck_assert_int_eq(mqtt_decode_empty(0, 0), 0);
  ck_assert_int_eq(mqtt_decode_empty(1, 0), -EBADMSG);
  ck_assert_int_eq(mqtt_decode_empty(0, 1), -EBADMSG);
}
END_TEST

START_TEST(test_mqtt_decode_publish) {
  /* QoS 1, DUP, topic "t/7", id 9, payload "hi" */
  static const uint8_t body[] = {0, 3, 't', '/', '7', 0, 9, 'h', 'i'};
  uint8_t *b = exact(body, sizeof body);
  mqtt_publish p;
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x0a, b, sizeof body, &p), 0);
  ck_assert_uint_eq(p.qos, 1);
  ck_assert_uint_eq(p.dup, 1);
  ck_assert_uint_eq(p.retain, 0);
  ck_assert_uint_eq(p.packet_id, 9);
  ck_assert_uint_eq(p.topic_len, 3);
  ck_assert_mem_eq(p.topic, "t/7", 3);
  ck_assert_uint_eq(p.payload_len, 2);
  ck_assert_mem_eq(p.payload, "hi", 2);
  /* QoS 0: no packet id, the payload is the rest */
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x01, b, sizeof body, &p), 0);
  ck_assert_uint_eq(p.packet_id, 0);
  ck_assert_uint_eq(p.retain, 1);
  ck_assert_uint_eq(p.payload_len, 4);
  /* every truncation of the header is malformed; of the payload, shorter */
  for (size_t n = 0; n < 7; n++) {
    uint8_t *cut = exact(body, n);
    ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x02, cut, n, &p), -EBADMSG);
    int start = mqtt_decode_publish_start(0x02, cut, n, &p);
    ck_assert_int_eq(start, 1); /* the start of a long one: wait for more */
    free(cut);
  }
  ck_assert_int_eq(mqtt_decode_publish_start(0x02, b, 7, &p), 0);
  ck_assert_uint_eq(p.packet_id, 9);
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x06, b, sizeof body, &p), -EBADMSG); /* QoS 3 */
  free(b);
  static const uint8_t zero_id[] = {0, 1, 't', 0, 0};
  b = exact(zero_id, sizeof zero_id);
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x02, b, sizeof zero_id, &p), -EBADMSG);
  free(b);
  static const uint8_t empty_topic[] = {0, 0, 0, 1};
  b = exact(empty_topic, sizeof empty_topic);
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x02, b, sizeof empty_topic, &p), -EBADMSG);
  free(b);
  static const uint8_t wild[] = {0, 3, 't', '/', '+', 0, 1};
  b = exact(wild, sizeof wild);
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x02, b, sizeof wild, &p), -EBADMSG);
  free(b);
  /* 5: properties between the packet id and the payload */
  static const uint8_t body5[] = {0, 1, 't', 0, 9, 3, 0x01, 0x01, 0x23, 'h', 'i'};
  b = exact(body5, sizeof body5);
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V5, 0x02, b, sizeof body5, &p), 0);
  ck_assert_uint_eq(p.payload_len, 2);
  ck_assert_mem_eq(p.payload, "hi", 2);
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V5, 0x02, b, 7, &p), -EBADMSG); /* the properties cut */
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V5, 0x02, b, 5, &p), -EBADMSG); /* no property length */
  free(b);
  static const uint8_t long_topic[] = {0xff, 0xff, 't'}; /* a topic length past the packet */
  b = exact(long_topic, sizeof long_topic);
  ck_assert_int_eq(mqtt_decode_publish(MQTT_V311, 0x00, b, sizeof long_topic, &p), -EBADMSG);
  free(b);
}
END_TEST

/* Random bytes through the framer and every decoder: no crash, no read
 * past the end, and a frame never claims more than it has. */
START_TEST(test_mqtt_random_bytes) {
  unsigned seed = (unsigned)(getenv("MQTT_SEED") ? strtoul(getenv("MQTT_SEED"), NULL, 10) : 12345);
  printf("test_mqtt_random_bytes: MQTT_SEED=%u\n", seed);
  srand(seed);
  for (int i = 0; i < 200000; i++) {
    size_t n = (size_t)(rand() % 24);
    uint8_t raw[24];
    for (size_t j = 0; j < n; j++) raw[j] = (uint8_t)rand();
    uint8_t *b = exact(raw, n);
    mqtt_frame_info f;
    int r = mqtt_frame(b, n, &f);
    ck_assert(r == 0 || r == 1 || r == -EBADMSG);
    if (r == 1) {
      ck_assert_uint_le((size_t)f.head + f.body, n);
      const uint8_t *body = b + f.head;
      mqtt_publish p;
      mqtt_connack c;
      uint16_t id;
      uint8_t codes[4];
      int reason;
      for (int v = MQTT_V311; v <= MQTT_V5; v++) {
        if (mqtt_decode_publish(v, f.flags, body, f.body, &p) == 0) {
          ck_assert_ptr_eq(p.payload + p.payload_len, body + f.body);
          ck_assert(p.qos == 0 || p.packet_id != 0);
        }
        mqtt_decode_connack(v, f.flags, body, f.body, &c);
        mqtt_decode_suback(v, f.flags, body, f.body, &id, codes, 4);
      }
      mqtt_decode_publish_start(f.flags, body, f.body, &p);
      mqtt_decode_disconnect(f.flags, body, f.body, &reason);
    }
    free(b);
  }
}
END_TEST

START_TEST(test_mqtt_filters_and_topics) {
  ck_assert_int_eq(mqtt_filter_check("telemetry/+/readings"), 0);
  ck_assert_int_eq(mqtt_filter_check("+"), 0);
  ck_assert_int_eq(mqtt_filter_check("+/x"), 0);
  ck_assert_int_eq(mqtt_filter_check(""), -EINVAL);
  ck_assert_int_eq(mqtt_filter_check("telemetry/readings"), -EINVAL); /* no device level */
  ck_assert_int_eq(mqtt_filter_check("a/+/+"), -EINVAL);              /* two */
  ck_assert_int_eq(mqtt_filter_check("a/+/#"), -EINVAL);
  ck_assert_int_eq(mqtt_filter_check("a/x+/b"), -EINVAL);
  const char *id;
  size_t len;
  const char *f = "telemetry/+/readings";
#define MATCH(topic) mqtt_topic_device(f, topic, strlen(topic), &id, &len)
  ck_assert_int_eq(MATCH("telemetry/7/readings"), 1);
  ck_assert_uint_eq(len, 1);
  ck_assert_mem_eq(id, "7", 1);
  ck_assert_int_eq(MATCH("telemetry/sensor-a.1/readings"), 1);
  ck_assert_uint_eq(len, 10);
  ck_assert_int_eq(MATCH("telemetry//readings"), 1); /* an empty level matches; its id is then refused */
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(MATCH("telemetry/7/readings/x"), 0);
  ck_assert_int_eq(MATCH("telemetry/7"), 0);
  ck_assert_int_eq(MATCH("telemetry/7/reading"), 0);
  ck_assert_int_eq(MATCH("other/7/readings"), 0);
  f = "+/up";
  ck_assert_int_eq(MATCH("d1/up"), 1);
  ck_assert_int_eq(MATCH("$SYS/up"), 0); /* 4.7.2 */
  f = "+";
  ck_assert_int_eq(MATCH("d1"), 1);
  ck_assert_int_eq(MATCH("d1/x"), 0);
#undef MATCH
}
END_TEST

int main(void) {
  Suite *s = suite_create("mqtt");
  tg_test_add(s, "remaining_length_boundaries", test_mqtt_remaining_length_boundaries, 10);
  tg_test_add(s, "encode_connect", test_mqtt_encode_connect, 10);
  tg_test_add(s, "encode_small_packets", test_mqtt_encode_small_packets, 10);
  tg_test_add(s, "decode_connack_suback", test_mqtt_decode_connack_suback, 10);
  tg_test_add(s, "decode_publish", test_mqtt_decode_publish, 10);
  tg_test_add(s, "random_bytes", test_mqtt_random_bytes, 60);
  tg_test_add(s, "filters_and_topics", test_mqtt_filters_and_topics, 10);
  return tg_test_main(s);
}
