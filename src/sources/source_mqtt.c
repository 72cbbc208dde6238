/* source_mqtt.c - the MQTT source: one session with a broker, messages
 * to readings, PUBACKs after the commit; see source_mqtt.h.
 *
 * A note on the view. stream_recv (tg_tcp_recv's semantics, over plain
 * TCP or TLS: stream.h) shows the buffered bytes in place, and
 * they stay put until the task itself calls recv or consume. The task
 * takes packets out of a view one by one and may wait on the way (for
 * room in the telemetry channel); when the FIFO fills in the middle of a
 * view it keeps the view (held) and goes on from there once acks made
 * room, without a recv: recv would wait for bytes it has not shown yet,
 * and the packets left in the view are already shown. A view is consumed
 * only once it is done with, up to the last whole packet.
 *
 * The device id is the topic's '+' level; the payload's lines become
 * readings for it as broker_lines.h says (a line that names no device
 * gets the topic's, one that names another is refused). */
#include "source_mqtt.h"

#include "broker_lines.h"
#include "figure.h"
#include "mqtt.h"
#include "protocol.h"
#include "rng.h"
#include "seq_check.h"
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
  MQTT_STACK = 256 * 1024,
  BACKOFF_MIN_MS = 100,
  BACKOFF_MAX_MS = 5000,
  CONNECT_TIMEOUT_MS = 10000, /* TCP connect and CONNACK */
  FAILURE_LOG_MS = 10000,     /* a broker that stays away is said once in this long */
  SUBSCRIBE_ID = 1,           /* the one SUBSCRIBE of a session */
  TOPIC_MAX = 65535,
  HOST_MAX = 256,
  CLIENT_ID_MAX = 128,
};

/* A message received and not yet acknowledged. */
typedef struct inflight {
  uint32_t device; /* its readings' device; 0: nothing to wait for */
  uint16_t packet_id;
  uint64_t seq; /* the highest seq among its readings */
} inflight;

/* Invariant: fifo[head .. head+len) (mod cap) are the QoS 1 messages of
 * the current session in the order they came, len <= cap; while `held`,
 * view[done .. len) are bytes of the socket not yet taken, and nothing
 * was consumed since the view was shown. */
typedef struct mqtt_source {
  const serve_config *cfg;
  const serve_limits *limits;
  tg_cancel *cancel;
  demo_log *log;
  registry *reg;
  storage *db;
  tg_mpsc_tx *telemetry; /* dropped at the shutdown */
  const _Atomic int64_t *drain_until;
  char host[HOST_MAX];
  int port;
  char *filters_text;   /* the copy filters point into */
  const char **filters; /* NUL-terminated, each checked */
  int nfilters;
  char client_id[CLIENT_ID_MAX];
  int version;       /* MQTT_V5 or MQTT_V311: what the next session asks for */
  int keepalive_s;   /* this session's: ours, or the broker's (5) */
  int broker_reason; /* the reason code of the broker's DISCONNECT (5) */
  char *password;    /* NULL: none */
  size_t password_len;
  registry_conn rc;     /* the current session's: a new one each session */
  tg_watch_rx *commits; /* changes after every commit: the FIFO's head is looked at then */
  seq_check seqs;
  inflight *fifo;
  uint32_t cap, head, len;
  tg_tcp *sock;       /* NULL between sessions */
  stream io;          /* over sock: plain, or TLS with mqtts:// */
  tls_context *tls;   /* mqtts://: the client's context; NULL: plain TCP */
  size_t recv_buffer; /* a packet of max_packet_bytes fits, and a PUBLISH's header */
  uint8_t *out;       /* packets waiting to be written */
  size_t out_len, out_cap;
  tg_tcp_view view; /* while held */
  size_t done;
  int held;
  int io_open;   /* io was opened over sock */
  uint64_t skip; /* bytes of an oversized PUBLISH still to drop */
  int64_t last_write_ns;
  int64_t pong_deadline_ns;    /* a PINGREQ is waiting for its PINGRESP; 0: none */
  broker_lines lines_out;      /* a payload's lines to readings */
  const mqtt_publish *publish; /* while its lines are sent on: what a refusal is logged with */
  rng jitter;
  log_gate fail_gate, bad_gate;
  _Atomic int64_t first_byte_ns;
  figure connected, connects, connect_failures, disconnects, messages, redelivered, acks, inflight_now;
  figure bytes, lines, readings;
  figure bad[SERVE_BAD_REASONS];
} mqtt_source;

/* How a session ends, besides the socket's and the pipeline's codes. */
enum { END_SHUTDOWN = 1, END_PROTOCOL = 2, END_PING = 3, END_PIPELINE = 4, END_BROKER = 5 };

static const char *end_text(int r) {
  switch (r) {
  case END_SHUTDOWN: return "shutdown";
  case END_PROTOCOL: return "the broker broke the protocol";
  case END_PING: return "no PINGRESP within the keepalive";
  case END_PIPELINE: return "the pipeline closed";
  case END_BROKER: return "the broker disconnected us";
  case TG_EOF: return "the broker closed the connection";
  default: return tg_strerror(r);
  }
}

/* ------------------------------------------------------------ settings */

/* mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS), HOST an IPv4
 * address, a name, or [IPv6]; *tls says which. */
static int parse_url(mqtt_source *m, const char *url, int *tls, char *err, size_t errlen) {
  *tls = strncmp(url, "mqtts://", 8) == 0;
  if (!*tls && strncmp(url, "mqtt://", 7) != 0) {
    snprintf(err, errlen, "--mqtt wants mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got '%s'", url);
    return -EINVAL;
  }
  const char *h = url + (*tls ? 8 : 7), *end, *colon;
  if (*h == '[') {
    end = strchr(h, ']');
    colon = end && end[1] == ':' ? end + 1 : NULL;
    if (!end || (end[1] && !colon)) goto bad;
    h++;
  } else {
    colon = strrchr(h, ':');
    end = colon ? colon : h + strlen(h);
  }
  if (end == h || (size_t)(end - h) >= sizeof m->host || strchr(h, '/')) goto bad;
  memcpy(m->host, h, (size_t)(end - h));
  m->host[end - h] = '\0';
  m->port = *tls ? 8883 : 1883;
  if (colon) {
    char *stop;
    long p = strtol(colon + 1, &stop, 10);
    if (*stop || p < 1 || p > 65535 || colon[1] == '\0') goto bad;
    m->port = (int)p;
  }
  return 0;
bad:
  snprintf(err, errlen, "--mqtt wants mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (port 1 .. 65535), got '%s'", url);
  return -EINVAL;
}

static int parse_filters(mqtt_source *m, const char *text, char *err, size_t errlen) {
  m->filters_text = strdup(text);
  size_t n = 1;
  for (const char *p = text; *p; p++) n += *p == ',';
  m->filters = calloc(n, sizeof *m->filters);
  if (!m->filters_text || !m->filters) {
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  for (char *f = m->filters_text, *next; f; f = next) {
    next = strchr(f, ',');
    if (next) *next++ = '\0';
    if (mqtt_filter_check(f) != 0) {
      snprintf(err, errlen,
               "--mqtt-topic '%s': a topic filter wants exactly one '+' level, the device id, and no '#' "
               "(telemetry/+/readings)",
               f);
      return -EINVAL;
    }
    m->filters[m->nfilters++] = f;
  }
  return 0;
}

/* The password: the first line of --mqtt-password-file, or
 * $TELEGATE_MQTT_PASSWORD; never from the command line, where any user
 * of the machine could read it. */
static int read_password(mqtt_source *m, char *err, size_t errlen) {
  const char *path = m->cfg->mqtt_password_file, *env = getenv("TELEGATE_MQTT_PASSWORD");
  if (!path && !env) return 0;
  if ((path || env) && !m->cfg->mqtt_username) {
    snprintf(err, errlen, "an MQTT password wants --mqtt-username");
    return -EINVAL;
  }
  if (!path) {
    m->password = strdup(env);
    m->password_len = m->password ? strlen(env) : 0;
    return m->password ? 0 : TG_ENOMEM;
  }
  FILE *f = fopen(path, "r");
  char buf[1024];
  if (!f || !fgets(buf, sizeof buf, f)) {
    snprintf(err, errlen, "cannot read --mqtt-password-file %s: %s", path, f ? "empty" : strerror(errno));
    if (f) fclose(f);
    return f ? -EINVAL : -errno;
  }
  fclose(f);
  size_t n = strcspn(buf, "\r\n");
  m->password = malloc(n + 1);
  if (!m->password) return TG_ENOMEM;
  memcpy(m->password, buf, n);
  m->password[n] = '\0';
  m->password_len = n;
  return 0;
}

/* ------------------------------------------------------------ writing */

/* Queues a packet to write. Returns 0, or TG_EFULL: out_cap holds every
 * PUBACK of a full FIFO and a PINGREQ, so only a caller that did not
 * flush in between sees it. */
static int out_append(mqtt_source *m, const uint8_t *p, size_t n) {
  if (m->out_len + n > m->out_cap) return TG_EFULL;
  memcpy(m->out + m->out_len, p, n);
  m->out_len += n;
  return 0;
}

static int out_flush(mqtt_source *m) {
  if (m->out_len == 0) return 0;
  int64_t deadline = tg_deadline_in(TG_MS(SERVE_LIMIT(m->limits, write_timeout_ms)));
  int r = stream_write_dl(&m->io, m->out, m->out_len, deadline);
  m->out_len = 0;
  m->last_write_ns = tg_now();
  return r;
}

/* ------------------------------------------------------------ acks */

static void fifo_push(mqtt_source *m, inflight e) {
  m->fifo[(m->head + m->len) % m->cap] = e;
  m->len++;
  atomic_store_explicit(&m->inflight_now, m->len, memory_order_relaxed);
}

/* PUBACKs for the head of the FIFO while it is committed (see the header),
 * after a commit: the registry says how far each device is committed,
 * whichever source it is on now. */
static void acks_pass(mqtt_source *m) {
  uint64_t sent = 0;
  while (m->len) {
    inflight *e = &m->fifo[m->head];
    if (e->device && !registry_durable(m->reg, e->device, e->seq)) break;
    uint8_t p[4];
    mqtt_encode_puback(p, sizeof p, e->packet_id);
    if (out_append(m, p, sizeof p) != 0) break; /* after the next flush */
    m->head = (m->head + 1) % m->cap;
    m->len--;
    sent++;
  }
  if (sent) {
    figure_add(&m->acks, sent);
    atomic_store_explicit(&m->inflight_now, m->len, memory_order_relaxed);
  }
}

/* ------------------------------------------------------------ messages */

/* Logs a refused line, at most once a second. */
static void log_refused(mqtt_source *m, const mqtt_publish *p, uint64_t line_no, int reason) {
  uint64_t held;
  if (log_gate_pass(&m->bad_gate, tg_now(), TG_MS(1000), &held))
    log_event(m->log, "🚫", "mqtt", 0, "mqtt_refused",
              "MQTT message on %.*s (packet id %u): line %" PRIu64 " refused: %s; acknowledged all the same%s",
              (int)(p->topic_len > 200 ? 200 : p->topic_len), p->topic, p->packet_id, line_no,
              serve_bad_reason_name(reason), log_held_note(held).s);
}

/* Counts a refused line, and logs it. */
static void refuse(mqtt_source *m, const mqtt_publish *p, uint64_t line_no, int reason) {
  figure_add(&m->bad[reason], 1);
  log_refused(m, p, line_no, reason);
}

/* broker_lines' hook: a refused line of the message being taken. */
static void line_refused(void *ctx, uint64_t line_no, int reason) {
  mqtt_source *m = ctx;
  log_refused(m, m->publish, line_no, reason);
}

/* The device id of a topic, NUL-terminated into id; 0 or the reason. */
static int topic_device(mqtt_source *m, const mqtt_publish *p, char id[PROTOCOL_DEVICE_ID_MAX + 1]) {
  for (int i = 0; i < m->nfilters; i++) {
    const char *at;
    size_t len;
    if (!mqtt_topic_device(m->filters[i], p->topic, p->topic_len, &at, &len)) continue;
    if (!broker_lines_device_ok(at, len)) return PROTOCOL_BAD_DEVICE_ID;
    memcpy(id, at, len);
    id[len] = '\0';
    return 0;
  }
  return PROTOCOL_BAD_DEVICE_ID; /* a topic none of ours matches: its level cannot be known */
}

/* A PUBLISH: its lines to readings, then its place in the FIFO. Returns
 * 0 or END_PIPELINE. */
static int on_publish(mqtt_source *m, const mqtt_publish *p) {
  figure_add(&m->messages, 1);
  if (p->dup) figure_add(&m->redelivered, 1);
  if (atomic_load_explicit(&m->first_byte_ns, memory_order_relaxed) == 0)
    atomic_store_explicit(&m->first_byte_ns, tg_now(), memory_order_relaxed);
  inflight e = {.packet_id = p->packet_id};
  char id[PROTOCOL_DEVICE_ID_MAX + 1];
  int reason = topic_device(m, p, id);
  if (reason) {
    figure_add(&m->lines, 1);
    refuse(m, p, 1, reason);
  } else {
    m->publish = p;
    int r = broker_lines_send(&m->lines_out, id, (const char *)p->payload, p->payload_len, &e.device, &e.seq);
    m->publish = NULL;
    if (r != 0) return END_PIPELINE;
  }
  if (p->qos == 1) fifo_push(m, e);
  return 0;
}

/* One whole packet of the session. Returns 0 or why the session ends. */
static int on_packet(mqtt_source *m, const mqtt_frame_info *f, const uint8_t *body) {
  switch (f->type) {
  case MQTT_PUBLISH: {
    mqtt_publish p;
    if (mqtt_decode_publish(m->version, f->flags, body, f->body, &p) != 0 || p.qos > 1) return END_PROTOCOL;
    return on_publish(m, &p);
  }
  case MQTT_SUBACK: {
    uint16_t id;
    uint8_t codes[64];
    int n = mqtt_decode_suback(m->version, f->flags, body, f->body, &id, codes, 64);
    if (n < 0 || id != SUBSCRIBE_ID) return END_PROTOCOL;
    for (int i = 0; i < n && i < m->nfilters && i < 64; i++)
      if (codes[i] >= 0x80)
        log_event(m->log, "❌", "mqtt", 0, "mqtt_subscribe_refused",
                  "MQTT: the broker refused the subscription to %s (%s; its ACL?): nothing comes from it",
                  m->filters[i], codes[i] == 0x80 ? "refused" : mqtt_connack_text(codes[i]));
      else if (codes[i] == 0)
        log_event(m->log, "⚠️", "mqtt", 0, "mqtt_subscribe_qos0",
                  "MQTT: the broker granted %s at QoS 0 only: its messages are not redelivered if lost", m->filters[i]);
    return 0;
  }
  case MQTT_PINGRESP:
    if (mqtt_decode_empty(f->flags, f->body) != 0) return END_PROTOCOL;
    m->pong_deadline_ns = 0;
    return 0;
  case MQTT_DISCONNECT: /* 5: the broker says why it ends the session */
    if (m->version != MQTT_V5 || mqtt_decode_disconnect(f->flags, body, f->body, &m->broker_reason) != 0)
      return END_PROTOCOL;
    return END_BROKER;
  default: return END_PROTOCOL; /* nothing else comes to a QoS 1 subscriber */
  }
}

/* Takes packets out of the held view while the FIFO has room. Returns 0
 * or why the session ends; the view is consumed once done with. */
static int take_packets(mqtt_source *m) {
  const uint8_t *v = (const uint8_t *)m->view.data;
  size_t len = m->view.len;
  if (m->skip) {
    size_t n = len - m->done < m->skip ? len - m->done : (size_t)m->skip;
    m->skip -= n;
    m->done += n;
  }
  while (m->len < m->cap && m->done < len) {
    mqtt_frame_info f = {0};
    int r = mqtt_frame(v + m->done, len - m->done, &f);
    if (r < 0) return END_PROTOCOL;
    uint64_t size = (uint64_t)f.head + f.body;
    if (f.head && f.type == MQTT_PUBLISH && f.body > (uint32_t)m->cfg->mqtt_max_packet_bytes) {
      /* Too large to hold: refused as oversized, acknowledged in turn, its bytes dropped as they come. */
      mqtt_publish p;
      size_t avail = len - m->done - f.head;
      int s = mqtt_decode_publish_start(f.flags, v + m->done + f.head, avail < f.body ? avail : f.body, &p);
      if (s < 0 || p.qos > 1) return END_PROTOCOL;
      if (s > 0) break; /* its topic is not all here yet */
      figure_add(&m->messages, 1);
      figure_add(&m->lines, 1);
      refuse(m, &p, 1, PROTOCOL_OVERSIZED);
      if (p.qos == 1) fifo_push(m, (inflight){.packet_id = p.packet_id});
      size_t here = len - m->done < size ? len - m->done : (size_t)size;
      m->skip = size - here;
      m->done += here;
      continue;
    }
    if (r == 0) {
      if (f.head && size > m->recv_buffer) return END_PROTOCOL; /* another packet that cannot fit */
      break;
    }
    if ((r = on_packet(m, &f, v + m->done + f.head)) != 0) return r;
    m->done += (size_t)size;
  }
  if (m->len < m->cap || m->done == len) { /* done with this view: the rest is a partial packet */
    figure_add(&m->bytes, m->done);
    stream_consume(&m->io, m->done);
    m->held = 0;
    m->done = 0;
  }
  return 0;
}

/* ------------------------------------------------------------ sessions */

typedef struct resolve_args {
  const char *host;
  char addr[64];
  int err; /* getaddrinfo's */
} resolve_args;

/* On the blocking pool: the broker's first address, numeric. */
static int resolve_call(void *arg) {
  resolve_args *a = arg;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  a->err = getaddrinfo(a->host, NULL, &hints, &res);
  if (a->err != 0) return -EHOSTUNREACH;
  int r = getnameinfo(res->ai_addr, res->ai_addrlen, a->addr, sizeof a->addr, NULL, 0, NI_NUMERICHOST);
  freeaddrinfo(res);
  return r == 0 ? 0 : -EHOSTUNREACH;
}

/* Reads the first packet before the deadline (the CONNACK): returns 0
 * with *f and its body copied into body (at most cap), or an error. The
 * view stays held past it: a broker that kept our session sends the
 * messages it holds right behind the CONNACK, in bytes recv has shown. */
static int read_first_packet(mqtt_source *m, mqtt_frame_info *f, uint8_t *body, size_t cap, int64_t deadline) {
  for (;;) {
    int r = stream_recv_dl(&m->io, &m->view, deadline);
    if (r != 0) return r;
    r = mqtt_frame((const uint8_t *)m->view.data, m->view.len, f);
    if (r < 0) return END_PROTOCOL;
    if (r == 0) continue;
    if (f->body > cap) return END_PROTOCOL;
    memcpy(body, m->view.data + f->head, f->body);
    m->held = 1;
    m->done = f->head + f->body;
    return 0;
  }
}

/* Connects, logs in and subscribes. Returns 0, or an error with a
 * one-line reason in why. */
static int session_open(mqtt_source *m, int *session_present, char *why, size_t whylen) {
  int64_t deadline = tg_deadline_in(TG_MS(CONNECT_TIMEOUT_MS));
  resolve_args ra = {.host = m->host};
  int r = tg_blocking_run(resolve_call, &ra);
  if (r != 0) {
    snprintf(why, whylen, "cannot resolve %s: %s", m->host, gai_strerror(ra.err));
    return r;
  }
  if ((r = tg_tcp_connect_dl(&m->sock, ra.addr, m->port, deadline)) != 0) {
    m->sock = NULL;
    snprintf(why, whylen, "cannot connect: %s", tg_strerror(r));
    return r;
  }
  stream_opts so = {
      .tls = m->tls, .host = m->host, .recv_buffer = m->recv_buffer, .cancel = m->cancel, .deadline_ns = deadline};
  char err[256];
  if ((r = stream_open(&m->io, m->sock, &so, err, sizeof err)) != 0) {
    snprintf(why, whylen, "%s", err);
    return r;
  }
  m->io_open = 1;
  /* Clean session 0, and with 5 a session that never expires: the broker
   * keeps it, as 3.1.1 does, until a session with clean start ends it. */
  mqtt_connect c = {.version = m->version,
                    .receive_max = (uint16_t)m->cap,
                    .session_expiry_s = 0xffffffff,
                    .client_id = m->client_id,
                    .username = m->cfg->mqtt_username,
                    .password = m->password,
                    .password_len = m->password_len,
                    .keepalive_s = (uint16_t)m->cfg->mqtt_keepalive_s,
                    .clean_session = 0};
  int n = mqtt_encode_connect(m->out, m->out_cap, &c);
  if (n < 0) {
    snprintf(why, whylen, "cannot encode CONNECT: %s", tg_strerror(n));
    return n;
  }
  m->out_len = (size_t)n;
  if ((r = stream_write_dl(&m->io, m->out, m->out_len, deadline)) != 0) {
    m->out_len = 0;
    snprintf(why, whylen, "cannot send CONNECT: %s", tg_strerror(r));
    return r;
  }
  m->out_len = 0;
  mqtt_frame_info f;
  uint8_t body[1024]; /* a CONNACK's properties: a reason string, user properties */
  mqtt_connack ack;
  r = read_first_packet(m, &f, body, sizeof body, deadline);
  if (r == 0 && (f.type != MQTT_CONNACK || mqtt_decode_connack(m->version, f.flags, body, f.body, &ack) != 0))
    r = END_PROTOCOL;
  if (r != 0) {
    snprintf(why, whylen, "no CONNACK: %s", r == TG_ETIMEDOUT ? "timed out" : end_text(r));
    return r;
  }
  if (ack.code != MQTT_CONNACK_ACCEPTED) {
    if (m->version == MQTT_V5 && m->cfg->mqtt_version == 0 && mqtt_connack_version_refused(ack.code)) {
      m->version = MQTT_V311;
      snprintf(why, whylen,
               "the broker does not speak MQTT 5: 3.1.1 from now on, whose window is the broker's "
               "max_inflight_messages, not --mqtt-inflight");
      return -EPROTONOSUPPORT;
    }
    snprintf(why, whylen, "the broker refused the connection: %s (CONNACK %d)", mqtt_connack_text(ack.code), ack.code);
    return -ECONNREFUSED;
  }
  *session_present = ack.session_present;
  m->keepalive_s = ack.server_keepalive_s >= 0 ? ack.server_keepalive_s : m->cfg->mqtt_keepalive_s;
  n = mqtt_encode_subscribe(m->out, m->out_cap, m->version, SUBSCRIBE_ID, m->filters, m->nfilters, 1);
  if (n < 0) {
    snprintf(why, whylen, "cannot encode SUBSCRIBE: %s", tg_strerror(n));
    return n;
  }
  m->out_len = (size_t)n;
  if ((r = out_flush(m)) != 0) snprintf(why, whylen, "cannot send SUBSCRIBE: %s", tg_strerror(r));
  return r;
}

/* The session until it fails or the shutdown: reads while the FIFO has
 * room, acknowledges what is committed, keeps the connection alive.
 * Returns why it ended. */
static int session_run(mqtt_source *m) {
  int64_t keepalive = TG_MS(1000) * m->keepalive_s;
  for (;;) {
    acks_pass(m);
    int r = out_flush(m);
    if (r != 0) return r;
    if (m->held && m->len < m->cap) {
      if ((r = take_packets(m)) != 0) return r;
      continue;
    }
    int64_t now = tg_now(), wake = TG_FOREVER;
    int listening = !m->held && m->len < m->cap;
    if (keepalive && !m->pong_deadline_ns) wake = m->last_write_ns + keepalive;
    if (keepalive && m->pong_deadline_ns && listening) wake = m->pong_deadline_ns;
    /* TLS may hold decrypted bytes with nothing on the socket: then the
     * other cases are only looked at, and the bytes read (stream.h). */
    int ready = listening && stream_ready(&m->io);
    tg_case cs[3] = {tg_cancel_case(m->cancel), tg_watch_changed_case(m->commits),
                     listening && !ready ? stream_recv_case(&m->io) : (tg_case){0}};
    int w = tg_select(cs, listening && !ready ? 3 : 2, ready ? 0 : wake);
    if (ready && w == TG_ETIMEDOUT) w = 2;
    if (w == 0) return END_SHUTDOWN;
    if (w == 1) {
      if (cs[1].result != 0) return END_PIPELINE; /* the registry's watch closed */
      continue;
    }
    if (w == TG_ETIMEDOUT) {
      now = tg_now();
      /* A PINGRESP behind messages the full FIFO keeps unread is not late. */
      if (m->pong_deadline_ns && now >= m->pong_deadline_ns && listening) return END_PING;
      if (keepalive && !m->pong_deadline_ns && now >= m->last_write_ns + keepalive) {
        uint8_t p[2];
        mqtt_encode_pingreq(p, sizeof p);
        if (out_append(m, p, sizeof p) == 0) m->pong_deadline_ns = now + keepalive;
      }
      continue;
    }
    if (w < 0) return w;
    r = stream_recv_dl(&m->io, &m->view, 0);
    if (r == TG_ETIMEDOUT) continue; /* TLS: only part of a record came */
    if (r != 0) return r;
    m->held = 1;
    m->done = 0;
    if ((r = take_packets(m)) != 0) return r;
  }
}

/* After the shutdown: the PUBACKs of what commits until the drain
 * deadline, then DISCONNECT. The telemetry sender is already dropped. */
static void session_close(mqtt_source *m) {
  int64_t until = atomic_load(m->drain_until);
  for (;;) {
    acks_pass(m);
    if (m->len == 0 || tg_now() >= until) break;
    if (out_flush(m) != 0) return;
    if (tg_watch_changed_dl(m->commits, until) != 0) break;
  }
  uint8_t p[2];
  mqtt_encode_disconnect(p, sizeof p);
  out_append(m, p, sizeof p);
  out_flush(m);
}

/* Ends a session: its devices are no longer connected (a new session is
 * a new registry connection), and what it had not acknowledged the
 * broker sends again. */
static void session_end(mqtt_source *m) {
  registry_detach_all(m->reg, &m->rc);
  m->rc = (registry_conn){0};
  if (m->io_open) stream_close(&m->io, 0); /* close_notify, if the socket takes it at once */
  m->io_open = 0;
  if (m->sock) tg_tcp_close(m->sock);
  m->sock = NULL;
  m->head = m->len = 0;
  m->held = 0;
  m->done = 0;
  m->skip = 0;
  m->out_len = 0;
  m->pong_deadline_ns = 0;
  atomic_store_explicit(&m->inflight_now, 0, memory_order_relaxed);
  atomic_store_explicit(&m->connected, 0, memory_order_relaxed);
}

static void *mqtt_task(void *arg) {
  mqtt_source *m = arg;
  int backoff = BACKOFF_MIN_MS;
  while (!tg_cancel_fired(m->cancel)) {
    char why[300];
    int present = 0;
    int r = session_open(m, &present, why, sizeof why);
    if (r != 0) {
      figure_add(&m->connect_failures, 1);
      session_end(m);
      uint64_t held;
      if (log_gate_pass(&m->fail_gate, tg_now(), TG_MS(FAILURE_LOG_MS), &held))
        log_event(m->log, "❌", "mqtt", 0, "mqtt_connect_failed", "MQTT broker %s:%d: %s; retrying%s", m->host, m->port,
                  why, log_held_note(held).s);
      if (r == -EPROTONOSUPPORT) continue; /* again at once, in 3.1.1 */
      int64_t delay = TG_MS(backoff / 2) + (int64_t)(rng_unit(&m->jitter) * (double)TG_MS(backoff / 2));
      tg_cancel_wait_dl(m->cancel, tg_deadline_in(delay));
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      continue;
    }
    m->fail_gate = (log_gate){0}; /* the next failure is said at once */
    char link[200];
    stream_describe(&m->io, link, sizeof link);
    backoff = BACKOFF_MIN_MS;
    figure_add(&m->connects, 1);
    atomic_store_explicit(&m->connected, 1, memory_order_relaxed);
    log_event(m->log, "📡", "mqtt", 0, "mqtt_connected",
              "MQTT %s: connected to %s:%d (%s) as %s (%s), subscribing at QoS 1 to %s; %s",
              m->version == MQTT_V5 ? "5" : "3.1.1", m->host, m->port, link, m->client_id,
              present ? "the broker kept our session" : "a new session", m->cfg->mqtt_topics,
              m->version == MQTT_V5 ? "the broker may send --mqtt-inflight messages before an acknowledgement"
                                    : "the broker's max_inflight_messages is the window");
    r = session_run(m);
    if (r == END_BROKER)
      snprintf(why, sizeof why, "the broker disconnected us: %s (reason %d)",
               m->broker_reason ? mqtt_connack_text(m->broker_reason) : "normal", m->broker_reason);
    else
      snprintf(why, sizeof why, "%s", end_text(r));
    if (r == END_SHUTDOWN) {
      tg_mpsc_tx_drop(m->telemetry);
      m->telemetry = NULL;
      session_close(m);
      session_end(m);
      break;
    }
    figure_add(&m->disconnects, 1);
    uint64_t unacked = m->len;
    session_end(m);
    log_event(m->log, "⚠️", "mqtt", 0, "mqtt_disconnected",
              "MQTT: session with %s:%d lost (%s); %" PRIu64
              " messages not yet acknowledged will come again; reconnecting",
              m->host, m->port, why, unacked);
    if (r == END_PIPELINE) break;
  }
  registry_detach_all(m->reg, &m->rc);
  if (m->telemetry) tg_mpsc_tx_drop(m->telemetry);
  m->telemetry = NULL;
  tg_watch_rx_drop(m->commits);
  m->commits = NULL;
  return NULL;
}

/* ------------------------------------------------------------ the source */

static void mqtt_free(void *state) {
  mqtt_source *m = state;
  if (!m) return;
  if (m->telemetry) tg_mpsc_tx_drop(m->telemetry);
  if (m->commits) tg_watch_rx_drop(m->commits); /* the task never ran */
  tls_context_free(m->tls);
  if (m->password) memset(m->password, 0, m->password_len);
  free(m->password);
  free(m->filters);
  free(m->filters_text);
  free(m->fifo);
  free(m->out);
  free(m->lines_out.line);
  free(m);
}

static int mqtt_start(const source_sink *sink, void **state, char *err, size_t errlen) {
  const serve_config *cfg = sink->cfg;
  *state = NULL;
  mqtt_source *m = calloc(1, sizeof *m);
  if (!m) {
    tg_mpsc_tx_drop(sink->telemetry);
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  *m = (mqtt_source){.cfg = cfg,
                     .limits = sink->limits,
                     .cancel = sink->cancel,
                     .log = sink->log,
                     .reg = sink->reg,
                     .db = sink->db,
                     .telemetry = sink->telemetry,
                     .drain_until = sink->drain_until,
                     .cap = (uint32_t)cfg->mqtt_inflight,
                     .version = cfg->mqtt_version == MQTT_V311 ? MQTT_V311 : MQTT_V5,
                     .seqs = {.schema = sink->schema,
                              .reg = sink->reg,
                              .db = sink->db,
                              .limits = sink->limits,
                              .to_stream = sink->stream != NULL,
                              .one_token_ids = sink->stream && cfg->nats_partitions > 0},
                     .jitter = rng_stream((uint64_t)tg_now(), 7)};
  int tls = 0;
  int r = parse_url(m, cfg->mqtt_url, &tls, err, errlen);
  if (r == 0 && tls) { /* the broker's certificate checked against --mqtt-tls-ca, or the system's CAs */
    tls_open_args to = {
        .ctx = &m->tls,
        .opts = {
            .server = 0, .ca_file = cfg->mqtt_tls_ca, .cert_file = cfg->mqtt_tls_cert, .key_file = cfg->mqtt_tls_key}};
    if ((r = tg_blocking_run(tls_open_call, &to)) != 0) snprintf(err, errlen, "--mqtt %s: %s", cfg->mqtt_url, to.err);
  }
  if (r == 0) r = parse_filters(m, cfg->mqtt_topics ? cfg->mqtt_topics : "", err, errlen);
  if (r == 0) r = read_password(m, err, errlen);
  if (r == 0) {
    if (cfg->mqtt_client_id) {
      snprintf(m->client_id, sizeof m->client_id, "%s", cfg->mqtt_client_id);
    } else {
      char host[64] = "host";
      gethostname(host, sizeof host - 1);
      snprintf(m->client_id, sizeof m->client_id, "telegate-%s", host);
    }
    /* A PUBLISH of the largest size, and the header of a larger one (its topic), fit. */
    size_t packet = (size_t)cfg->mqtt_max_packet_bytes + 5;
    m->recv_buffer = packet > TOPIC_MAX + 16 ? packet : TOPIC_MAX + 16;
    m->out_cap = 4 * (size_t)m->cap + 4096; /* every PUBACK of a full FIFO, a ping, the CONNECT */
    for (int i = 0; i < m->nfilters; i++) m->out_cap += strlen(m->filters[i]) + 3;
    m->out_cap += strlen(m->client_id) + (cfg->mqtt_username ? strlen(cfg->mqtt_username) : 0) + m->password_len;
    m->fifo = calloc(m->cap, sizeof *m->fifo);
    m->out = malloc(m->out_cap);
    m->lines_out = (broker_lines){.cfg = cfg,
                                  .reg = m->reg,
                                  .rc = &m->rc,
                                  .seqs = &m->seqs,
                                  .telemetry = m->telemetry,
                                  .line = malloc(broker_lines_scratch_bytes(cfg)),
                                  .lines = &m->lines,
                                  .readings = &m->readings,
                                  .bad = m->bad,
                                  .refused = line_refused,
                                  .ctx = m};
    if (!m->fifo || !m->out || !m->lines_out.line || registry_commits_subscribe(m->reg, &m->commits) != 0) {
      snprintf(err, errlen, "out of memory");
      r = TG_ENOMEM;
    }
  }
  if (r == 0) {
    tg_spawn_opts opts = {.stack_size = MQTT_STACK, .name = "mqtt"};
    if ((r = tg_joinset_spawn(sink->tasks, mqtt_task, m, &opts, NULL)) != 0)
      snprintf(err, errlen, "cannot start the MQTT source: %s", tg_strerror(r));
  }
  if (r != 0) {
    mqtt_free(m);
    return r;
  }
  if (cfg->mqtt_inflight < cfg->batch_size)
    log_event(m->log, "⚠️", "mqtt", 0, "mqtt_window",
              "MQTT: --mqtt-inflight %d is below --batch-size %d: with the broker's messages in flight capped there, "
              "batches are cut by --batch-age-ms (%d ms) and MQTT ingest is bounded by %d messages per batch age",
              cfg->mqtt_inflight, cfg->batch_size, cfg->batch_age_ms, cfg->mqtt_inflight);
  *state = m;
  return 0;
}

static void mqtt_figures_get(void *state, source_figures *f) {
  const mqtt_source *m = state;
  *f = (source_figures){0};
  f->first_byte_ns = atomic_load(&m->first_byte_ns);
  f->bytes = figure_get(&m->bytes);
  f->lines = figure_get(&m->lines);
  f->readings = figure_get(&m->readings);
  for (int i = 1; i < SERVE_BAD_REASONS; i++) f->bad[i] = figure_get(&m->bad[i]);
  f->mqtt.connected = figure_get(&m->connected);
  f->mqtt.connects = figure_get(&m->connects);
  f->mqtt.connect_failures = figure_get(&m->connect_failures);
  f->mqtt.disconnects = figure_get(&m->disconnects);
  f->mqtt.messages = figure_get(&m->messages);
  f->mqtt.redelivered = figure_get(&m->redelivered);
  f->mqtt.acks = figure_get(&m->acks);
  f->mqtt.inflight = figure_get(&m->inflight_now);
  f->mqtt.inflight_max = m->cap;
}

static int mqtt_wanted(const serve_config *cfg) { return cfg->mqtt_url != NULL; }

const source_kind source_mqtt = {
    .name = "mqtt",
    .publishes = 1,
    .wanted = mqtt_wanted,
    .start = mqtt_start,
    .figures_get = mqtt_figures_get,
    .free = mqtt_free,
};
