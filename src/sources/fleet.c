/* fleet.c - the fleet view: deltas of device states over core NATS,
 * merged into the aggregator, and health checks forwarded to the node a
 * device is connected to; see fleet.h. */
#include "fleet.h"

#include "figure.h"
#include "protocol.h"
#include "snapshot.h"

#include <errno.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
  FLEET_STACK = 128 * 1024,
  ARRIVALS = 1024, /* messages from libnats waiting for the task; more are dropped (a sync is asked) */
  VERSION = 1,     /* of the wire format */
  KIND_DELTA = 1,  /* devices that changed */
  KIND_SYNC = 2,   /* a node asks every other for all its devices */
  HEADER_MAX = 3 + 1 + 10 + 10 + 1 + FLEET_NODE_MAX + 1 + 5, /* up to the names and the count of devices */
  RECORD_MAX = 1 + PROTOCOL_DEVICE_ID_MAX + 1 + 3 * 10 + 1 + SNAPSHOT_FIELDS * (2 + 5 + 8),
  NAMES_MAX = 255,        /* field names a message names */
  FLAG_AGGREGATED = 1,    /* the device's state follows */
  FLAG_CONNECTED = 2,     /* the device is connected to the sender */
  CONN_UNSENT = 2,        /* sent_conn: nothing said of it yet */
  ANSWERING_CHUNK = 1024, /* devices looked up in the registry under one lock */
  PREFIX_MAX = 64,        /* --nats-consumer */
  SUBJECT_MAX = 2 * PREFIX_MAX + FLEET_NODE_MAX,
};
#define AGE_MAX              ((uint64_t)1 << 40) /* ms: decades, and no overflow */
#define CHECK_TIMEOUT_MAX_MS 30000               /* a forwarded check waits this long at most (shutdown joins them) */

/* A node heard from. Its name is pointed at by snapshots: never moved or
 * freed before the fleet. */
typedef struct fleet_node {
  char name[FLEET_NODE_MAX + 1];
  uint64_t instance;
  uint64_t base;  /* what its earlier instances counted */
  uint64_t total; /* what its current instance said last */
} fleet_node;

/* A health check another task asked of a remote node, waiting for the
 * reply; on the asker's stack, in the pending list under `lock`. */
typedef struct ask {
  uint64_t id;
  tg_oneshot_tx *reply; /* natsMsg * */
  struct ask *next;
} ask;

/* Invariants: the task alone touches the publishing state (sent_*,
 * cursor, arena) and the node table's counts; nodes[0 .. nnodes) are
 * published (their names fixed) before any snapshot can point at them;
 * conn_at is written by the task, read by anyone. */
struct fleet {
  fleet_opts o;
  char node[FLEET_NODE_MAX + 1];
  char fleet_subject[SUBJECT_MAX];   /* <prefix>.fleet.<token> */
  char fleet_prefix[PREFIX_MAX + 8]; /* <prefix>.fleet. */
  char health_subject[SUBJECT_MAX];
  char inbox[SUBJECT_MAX / 2]; /* replies to our asks: <inbox>.<id> */
  uint64_t instance;
  natsConnection *nc;
  natsSubscription *subs[3];
  tg_mpsc_tx *arrivals_tx; /* natsMsg *, from libnats' threads */
  tg_mpsc_rx *arrivals_rx;
  atomic_int want_sync; /* publish a sync request: started, reconnected, or messages were lost */
  /* publishing */
  uint64_t *sent_count; /* [index]: the count last published of a device aggregated here */
  uint8_t *sent_conn;   /* [index]: whether it was last said connected here; CONN_UNSENT */
  uint8_t *answering;   /* [index]: connected here over a connection that answers health requests, this round */
  uint32_t cursor;      /* the index the next round starts at */
  uint8_t *arena;       /* a round's messages */
  size_t *msg_len;
  int nmsgs;
  /* merging */
  fleet_node *nodes;
  atomic_uint nnodes;
  _Atomic(const char *) *conn_at; /* [index]: the node the device is connected to, as heard */
  /* health */
  tg_joinset *checks; /* health checks answered for other nodes */
  atomic_int checks_running;
  pthread_mutex_t lock; /* the pending asks */
  ask *pending;
  uint64_t next_ask;
  int closing;
  log_gate drop_gate;
  figure connected, messages_sent, bytes_sent, messages_received, bytes_received, devices_sent, devices_received,
      devices_dropped, syncs, health_asked, health_answered;
};

/* ------------------------------------------------------------ the wire */

typedef struct wbuf {
  uint8_t *p;
  size_t len, cap;
} wbuf;

static int put_u8(wbuf *b, unsigned v) {
  if (b->len >= b->cap) return -1;
  b->p[b->len++] = (uint8_t)v;
  return 0;
}

static int put_var(wbuf *b, uint64_t v) {
  do {
    if (put_u8(b, (unsigned)(v & 0x7f) | (v > 0x7f ? 0x80 : 0)) != 0) return -1;
    v >>= 7;
  } while (v);
  return 0;
}

static int put_str8(wbuf *b, const char *s, size_t len) {
  if (len > 255 || put_u8(b, (unsigned)len) != 0 || b->cap - b->len < len) return -1;
  memcpy(b->p + b->len, s, len);
  b->len += len;
  return 0;
}

static int put_f64(wbuf *b, double v) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  for (int i = 0; i < 8; i++)
    if (put_u8(b, (unsigned)(u >> (8 * i)) & 0xff) != 0) return -1;
  return 0;
}

/* A reader: `bad` once anything was out of bounds, and then all reads
 * give 0. */
typedef struct rbuf {
  const uint8_t *p, *end;
  int bad;
} rbuf;

static unsigned get_u8(rbuf *b) {
  if (b->p >= b->end) {
    b->bad = 1;
    return 0;
  }
  return *b->p++;
}

static uint64_t get_var(rbuf *b) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    unsigned c = get_u8(b);
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return b->bad ? 0 : v;
  }
  b->bad = 1;
  return 0;
}

static const char *get_str8(rbuf *b, size_t *len) {
  *len = get_u8(b);
  if (b->bad || (size_t)(b->end - b->p) < *len) {
    b->bad = 1;
    *len = 0;
    return "";
  }
  const char *s = (const char *)b->p;
  b->p += *len;
  return s;
}

static double get_f64(rbuf *b) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u |= (uint64_t)get_u8(b) << (8 * i);
  double v;
  memcpy(&v, &u, sizeof v);
  return b->bad ? 0 : v;
}

/* A device id as the protocol's rule has it (protocol.h). */
static int id_valid(const char *s, size_t len) {
  if (len < 1 || len > PROTOCOL_DEVICE_ID_MAX) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == ':' || c == '-'))
      return 0;
  }
  return 1;
}

/* A node's name as one token of a subject. */
static void subject_token(char *out, size_t cap, const char *name) {
  size_t i = 0;
  for (; name[i] && i + 1 < cap; i++) {
    char c = name[i];
    out[i] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ? c : '_';
  }
  out[i] = '\0';
}

/* ------------------------------------------------------------ libnats' threads */

static int pool_thread_release(int r) {
  nats_ReleaseThreadMemory();
  OPENSSL_thread_stop();
  return r;
}

static void on_message(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)nc;
  (void)sub;
  fleet *f = closure;
  if (tg_mpsc_try_send(f->arrivals_tx, &msg) != 0) {
    natsMsg_Destroy(msg);
    atomic_store(&f->want_sync, 1); /* a state was lost: everyone again */
  }
}

static void on_connected(natsConnection *nc, void *closure) {
  (void)nc;
  fleet *f = closure;
  atomic_store(&f->connected, 1);
  atomic_store(&f->want_sync, 1); /* what was published meanwhile is lost to us */
}

static void on_disconnected(natsConnection *nc, void *closure) {
  (void)nc;
  fleet *f = closure;
  atomic_store(&f->connected, 0);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure) {
  (void)nc;
  (void)sub;
  fleet *f = closure;
  if (err == NATS_SLOW_CONSUMER) atomic_store(&f->want_sync, 1);
}

/* ------------------------------------------------------------ publishing */

/* The field names of the message being built. */
typedef struct names {
  uint16_t id[NAMES_MAX];
  int n;
  size_t bytes; /* as encoded */
} names;

static int name_index(names *t, const schema *s, uint16_t id) {
  for (int i = 0; i < t->n; i++)
    if (t->id[i] == id) return i;
  if (t->n == NAMES_MAX) return -1;
  t->id[t->n] = id;
  t->bytes += 1 + strlen(schema_name(s, id));
  return t->n++;
}

typedef struct builder {
  fleet *f;
  names names;
  uint8_t body[FLEET_MSG_MAX];
  wbuf b; /* over body */
  uint32_t ndevices;
} builder;

/* Puts the message built so far in the arena; returns its length. */
static size_t message_end(builder *m, uint64_t total, int kind) {
  fleet *f = m->f;
  if (kind == KIND_DELTA && m->ndevices == 0) return 0;
  size_t off = 0;
  for (int i = 0; i < f->nmsgs; i++) off += f->msg_len[i];
  wbuf out = {f->arena + off, 0, FLEET_MSG_MAX};
  put_u8(&out, 'T');
  put_u8(&out, 'F');
  put_u8(&out, VERSION);
  put_u8(&out, (unsigned)kind);
  put_var(&out, f->instance);
  put_var(&out, total);
  put_str8(&out, f->node, strlen(f->node));
  put_u8(&out, (unsigned)m->names.n);
  for (int i = 0; i < m->names.n; i++) {
    const char *name = schema_name(f->o.schema, m->names.id[i]);
    put_str8(&out, name, strlen(name));
  }
  put_var(&out, m->ndevices);
  memcpy(out.p + out.len, m->body, m->b.len); /* fits: the caller measured */
  size_t len = out.len + m->b.len;
  f->msg_len[f->nmsgs++] = len;
  figure_add(&f->devices_sent, m->ndevices);
  m->names = (names){0};
  m->b = (wbuf){m->body, 0, sizeof m->body};
  m->ndevices = 0;
  return len;
}

/* Encodes device i's record into r; returns 0, or -1 when its names do
 * not fit the message's table. */
static int record(builder *m, wbuf *r, const system_snapshot *s, uint32_t i, int agg, int conn, int64_t now_ms) {
  const device_metrics *d = agg ? &s->devices[i - 1] : NULL;
  const char *id = registry_name(m->f->o.reg, i);
  put_str8(r, id, strlen(id));
  put_u8(r, (agg ? FLAG_AGGREGATED : 0) | (conn ? FLAG_CONNECTED : 0));
  if (!d) return 0;
  put_var(r, d->count);
  put_var(r, d->last_seq);
  put_var(r, now_ms > d->last_seen_ms ? (uint64_t)(now_ms - d->last_seen_ms) : 0);
  int n = 0;
  while (n < SNAPSHOT_FIELDS && d->field_name[n]) n++;
  put_u8(r, (unsigned)n);
  for (int k = 0; k < n; k++) {
    int x = name_index(&m->names, m->f->o.schema, d->field_name[k]);
    if (x < 0) return -1;
    put_u8(r, (unsigned)x);
    put_u8(r, d->field_type[k]);
    put_var(r, d->field_count[k]);
    put_f64(r, d->field_value[k]);
  }
  return 0;
}

/* Adds device i to the round; returns 0, or -1 when the round is full. */
static int add_device(builder *m, const system_snapshot *s, uint32_t i, int agg, int conn, int64_t now_ms,
                      uint64_t total, size_t *round) {
  uint8_t tmp[RECORD_MAX];
  for (int attempt = 0; attempt < 2; attempt++) {
    names before = m->names;
    wbuf r = {tmp, 0, sizeof tmp};
    int fits =
        record(m, &r, s, i, agg, conn, now_ms) == 0 && HEADER_MAX + m->names.bytes + m->b.len + r.len <= FLEET_MSG_MAX;
    if (fits) {
      if (*round + HEADER_MAX + m->names.bytes + m->b.len + r.len > FLEET_ROUND_MAX) {
        m->names = before;
        return -1;
      }
      memcpy(m->body + m->b.len, tmp, r.len);
      m->b.len += r.len;
      m->ndevices++;
      return 0;
    }
    m->names = before;
    *round += message_end(m, total, KIND_DELTA);
    if (*round >= FLEET_ROUND_MAX) return -1;
  }
  return -1; /* a record alone never outgrows a message: not reached */
}

/* Every message of the round. A publish only buffers (libnats' flusher
 * thread writes; a full buffer is written out at once, without waiting
 * for the socket, and kept for the reconnect while disconnected), so it
 * runs here: on the blocking pool it would queue behind the NATS
 * source's and the leases' requests, which wait seconds when a server
 * dies, and push their rounds late. */
static void publish_all(fleet *f) {
  size_t off = 0;
  for (int i = 0; i < f->nmsgs; i++) {
    if (natsConnection_Publish(f->nc, f->fleet_subject, f->arena + off, (int)f->msg_len[i]) == NATS_OK) {
      figure_add(&f->messages_sent, 1);
      figure_add(&f->bytes_sent, f->msg_len[i]);
    }
    off += f->msg_len[i];
  }
}

/* One round: the devices that changed since the last, from `cursor` on,
 * within FLEET_ROUND_MAX. */
static void publish_round(fleet *f, builder *m) {
  system_snapshot *s;
  tg_watch_get(f->o.latest, &s);
  int64_t now_ms = (tg_now() - f->o.t0) / 1000000;
  uint64_t total = s->node_messages;
  f->nmsgs = 0;
  m->f = f;
  m->names = (names){0};
  m->b = (wbuf){m->body, 0, sizeof m->body};
  m->ndevices = 0;
  size_t round = 0;
  if (atomic_exchange(&f->want_sync, 0)) round += message_end(m, total, KIND_SYNC);
  uint32_t count = registry_count(f->o.reg);
  for (uint32_t at = 1; at <= count; at += ANSWERING_CHUNK)
    registry_answering(f->o.reg, at, ANSWERING_CHUNK, f->answering + at);
  for (uint32_t k = 0; k < count; k++) {
    uint32_t i = (f->cursor + k) % count + 1;
    const device_metrics *d = i <= s->ndevices ? &s->devices[i - 1] : NULL;
    int agg = d && d->device == i && d->count && !d->node;
    int conn = f->answering[i];
    int send_agg = agg && d->count != f->sent_count[i];
    int send_conn = conn != f->sent_conn[i] && !(!conn && f->sent_conn[i] == CONN_UNSENT);
    if (!send_agg && !send_conn) continue;
    if (add_device(m, s, i, agg, conn, now_ms, total, &round) != 0) {
      f->cursor = i - 1; /* this one first, next round */
      break;
    }
    if (agg) f->sent_count[i] = d->count;
    f->sent_conn[i] = (uint8_t)conn;
  }
  message_end(m, total, KIND_DELTA);
  snapshot_unref(s);
  publish_all(f);
}

/* ------------------------------------------------------------ merging */

static fleet_node *node_of(fleet *f, const char *name, size_t len, uint64_t instance, uint64_t total) {
  unsigned n = atomic_load(&f->nnodes);
  fleet_node *x = NULL;
  for (unsigned i = 0; i < n && !x; i++)
    if (strlen(f->nodes[i].name) == len && memcmp(f->nodes[i].name, name, len) == 0) x = &f->nodes[i];
  if (!x) {
    if (n == FLEET_MAX_NODES) return NULL;
    x = &f->nodes[n];
    memcpy(x->name, name, len);
    x->name[len] = '\0';
    x->instance = instance;
    atomic_store(&f->nnodes, n + 1);
  }
  if (x->instance != instance) { /* started again: what it counted before stays counted */
    x->base += x->total;
    x->instance = instance;
    x->total = 0;
  }
  x->total = total;
  return x;
}

static uint64_t remote_total(fleet *f) {
  uint64_t t = 0;
  unsigned n = atomic_load(&f->nnodes);
  for (unsigned i = 0; i < n; i++) t += f->nodes[i].base + f->nodes[i].total;
  return t;
}

/* A node asked for everything: every device is said again. */
static void resend_all(fleet *f) {
  uint32_t max = f->o.reg->max;
  memset(f->sent_count, 0xff, ((size_t)max + 1) * sizeof *f->sent_count);
  memset(f->sent_conn, CONN_UNSENT, (size_t)max + 1);
}

/* A delta or a sync of another node: its devices to the aggregator as
 * one aggregator_remote (*out; NULL when there is nothing to merge). */
static void merge(fleet *f, natsMsg *msg, aggregator_remote **out) {
  *out = NULL;
  int len = natsMsg_GetDataLength(msg);
  rbuf b = {(const uint8_t *)natsMsg_GetData(msg), (const uint8_t *)natsMsg_GetData(msg) + len, 0};
  figure_add(&f->messages_received, 1);
  figure_add(&f->bytes_received, (uint64_t)len);
  if (get_u8(&b) != 'T' || get_u8(&b) != 'F' || get_u8(&b) != VERSION) return;
  unsigned kind = get_u8(&b);
  uint64_t instance = get_var(&b), total = get_var(&b);
  size_t nlen;
  const char *name = get_str8(&b, &nlen);
  if (b.bad || nlen == 0 || nlen > FLEET_NODE_MAX || (nlen == strlen(f->node) && memcmp(name, f->node, nlen) == 0))
    return;
  fleet_node *node = node_of(f, name, nlen, instance, total);
  uint16_t field[NAMES_MAX] = {0};
  unsigned nnames = get_u8(&b);
  for (unsigned k = 0; k < nnames; k++) {
    const char *fname = get_str8(&b, &nlen);
    field[k] = nlen ? schema_find(f->o.schema, fname, nlen) : 0;
  }
  uint64_t ndevices = get_var(&b);
  if (kind == KIND_SYNC) {
    figure_add(&f->syncs, 1);
    resend_all(f);
  }
  if (b.bad || ndevices > (uint64_t)len / 2) return;
  aggregator_remote *u = malloc(sizeof *u + (size_t)ndevices * sizeof u->devices[0]);
  if (!u) return;
  *u = (aggregator_remote){.self = f->node, .nodes = atomic_load(&f->nnodes) + 1, .remote_total = remote_total(f)};
  int64_t now_ms = (tg_now() - f->o.t0) / 1000000;
  for (uint64_t k = 0; k < ndevices && !b.bad; k++) {
    const char *id = get_str8(&b, &nlen);
    char idz[PROTOCOL_DEVICE_ID_MAX + 1];
    int valid = id_valid(id, nlen);
    if (valid) {
      memcpy(idz, id, nlen);
      idz[nlen] = '\0';
    }
    unsigned flags = get_u8(&b);
    device_metrics d = {0};
    if (flags & FLAG_AGGREGATED) {
      d.count = get_var(&b);
      d.last_seq = get_var(&b);
      uint64_t age = get_var(&b);
      d.last_seen_ms = now_ms - (int64_t)(age < AGE_MAX ? age : AGE_MAX);
      unsigned nf = get_u8(&b), slot = 0;
      for (unsigned j = 0; j < nf; j++) {
        unsigned x = get_u8(&b), type = get_u8(&b);
        uint64_t count = get_var(&b);
        double value = get_f64(&b);
        if (x >= nnames || !field[x] || slot == SNAPSHOT_FIELDS) continue; /* a name unknown here */
        d.field_name[slot] = field[x];
        d.field_type[slot] = (uint8_t)type;
        d.field_count[slot] = (uint32_t)count;
        d.field_value[slot++] = value;
      }
    }
    uint32_t index = 0;
    if (b.bad || !valid || registry_intern(f->o.reg, idz, nlen, registry_hash(idz, nlen), &index, NULL) != 0) {
      figure_add(&f->devices_dropped, 1);
      continue;
    }
    figure_add(&f->devices_received, 1);
    const char *was = atomic_load(&f->conn_at[index]);
    if (flags & FLAG_CONNECTED)
      atomic_store(&f->conn_at[index], node ? node->name : NULL);
    else if (node && was == node->name)
      atomic_store(&f->conn_at[index], NULL);
    if (!(flags & FLAG_AGGREGATED) || !node) continue;
    d.device = index;
    d.node = node->name;
    u->devices[u->n++] = d;
  }
  *out = u;
}

/* ------------------------------------------------------------ health, answered */

static unsigned result_code(int r) {
  switch (r) {
  case 0: return 0;
  case TG_ETIMEDOUT: return 1;
  case -ENOENT: return 2;
  case TG_ECLOSED: return 3;
  case -EOPNOTSUPP: return 4;
  default: return 5;
  }
}

static int result_of(unsigned code) {
  static const int results[] = {0, TG_ETIMEDOUT, -ENOENT, TG_ECLOSED, -EOPNOTSUPP};
  return code < sizeof results / sizeof *results ? results[code] : -EIO;
}

typedef struct check {
  fleet *f;
  natsMsg *msg;
} check;

/* A health check another node forwarded: checked here, answered. */
static void *check_task(void *arg) {
  check *c = arg;
  fleet *f = c->f;
  rbuf b = {(const uint8_t *)natsMsg_GetData(c->msg),
            (const uint8_t *)natsMsg_GetData(c->msg) + natsMsg_GetDataLength(c->msg), 0};
  uint64_t timeout_ms = get_var(&b);
  size_t len;
  const char *id = get_str8(&b, &len);
  device_status st = {0};
  int r = -ENOENT;
  if (!b.bad && id_valid(id, len) && timeout_ms >= 1 && timeout_ms <= CHECK_TIMEOUT_MAX_MS) {
    char idz[PROTOCOL_DEVICE_ID_MAX + 1];
    memcpy(idz, id, len);
    idz[len] = '\0';
    r = f->o.health(f->o.health_ctx, idz, TG_MS((int64_t)timeout_ms), &st);
  }
  uint8_t out[64];
  wbuf w = {out, 0, sizeof out};
  put_u8(&w, result_code(r));
  put_var(&w, st.battery);
  put_var(&w, st.uptime_ms > 0 ? (uint64_t)st.uptime_ms : 0);
  put_var(&w, st.readings);
  const char *reply = natsMsg_GetReply(c->msg);
  if (reply) { /* counted first: the asker may read the figure as soon as it has the reply */
    figure_add_shared(&f->health_answered, 1);
    natsConnection_Publish(f->nc, reply, out, (int)w.len);
  }
  natsMsg_Destroy(c->msg);
  free(c);
  atomic_fetch_sub(&f->checks_running, 1);
  return NULL;
}

static void answer_busy(fleet *f, natsMsg *msg) {
  uint8_t out[4] = {1, 0, 0, 0}; /* timeout */
  const char *reply = natsMsg_GetReply(msg);
  if (reply) natsConnection_Publish(f->nc, reply, out, sizeof out);
  natsMsg_Destroy(msg);
}

static void check_forwarded(fleet *f, natsMsg *msg) {
  check *c = malloc(sizeof *c);
  if (!c || atomic_load(&f->checks_running) >= FLEET_HEALTH_MAX) {
    free(c);
    answer_busy(f, msg);
    return;
  }
  *c = (check){f, msg};
  atomic_fetch_add(&f->checks_running, 1);
  tg_spawn_opts so = {.stack_size = FLEET_STACK, .name = "fleet-health"};
  if (tg_joinset_spawn(f->checks, check_task, c, &so, NULL) != 0) {
    atomic_fetch_sub(&f->checks_running, 1);
    free(c);
    answer_busy(f, msg);
  }
}

/* A reply to one of our asks: to the asker. */
static void reply_arrived(fleet *f, natsMsg *msg) {
  const char *subject = natsMsg_GetSubject(msg);
  uint64_t id = strtoull(subject + strlen(f->inbox) + 1, NULL, 10);
  tg_oneshot_tx *tx = NULL;
  pthread_mutex_lock(&f->lock);
  for (ask **p = &f->pending; *p; p = &(*p)->next)
    if ((*p)->id == id) {
      tx = (*p)->reply;
      *p = (*p)->next;
      break;
    }
  pthread_mutex_unlock(&f->lock);
  if (!tx || tg_oneshot_send(tx, &msg) != 0) natsMsg_Destroy(msg);
}

/* ------------------------------------------------------------ the task */

static int connect_call(void *arg) {
  fleet *f = arg;
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, f->o.urls);
  if (s == NATS_OK) s = natsOptions_SetName(o, "telegate-fleet");
  if (s == NATS_OK) s = natsOptions_SetNoEcho(o, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 250);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, f);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_connected, f);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, f);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_error, f);
  if (s == NATS_OK) {
    s = natsConnection_Connect(&f->nc, o);
    if (s == NATS_OK) on_connected(f->nc, f);
    if (s == NATS_NOT_YET_CONNECTED) s = NATS_OK; /* libnats goes on trying */
  }
  natsOptions_Destroy(o);
  char all[SUBJECT_MAX + 2], replies[SUBJECT_MAX];
  snprintf(all, sizeof all, "%s*", f->fleet_prefix);
  snprintf(replies, sizeof replies, "%s.*", f->inbox);
  const char *subjects[3] = {all, f->health_subject, replies};
  for (int i = 0; i < 3 && s == NATS_OK; i++) {
    s = natsConnection_Subscribe(&f->subs[i], f->nc, subjects[i], on_message, f);
    /* the states of a large fleet at once: room rather than a slow consumer */
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(f->subs[i], 65536, 256 * 1024 * 1024);
  }
  return pool_thread_release(s == NATS_OK ? 0 : -ECONNREFUSED);
}

static int close_call(void *arg) {
  fleet *f = arg;
  for (int i = 0; i < 3; i++) natsSubscription_Destroy(f->subs[i]);
  natsConnection_Destroy(f->nc); /* closes it */
  f->nc = NULL;
  return pool_thread_release(0);
}

/* Sends the aggregator a message of the fleet view; 0, or the token fired. */
static int hand_over(fleet *f, aggregator_remote *u) {
  tg_case cs[2] = {tg_cancel_case(f->o.cancel), tg_mpsc_send_case(f->o.remote, &u)};
  int w = tg_select(cs, 2, TG_FOREVER);
  if (w == 1 && cs[1].result == 0) return 0;
  free(u);
  return -1;
}

static void reap(fleet *f) {
  tg_outcome o;
  while (tg_joinset_try_join_next(f->checks, &o) == 0) {
  }
}

static void *fleet_task(void *arg) {
  fleet *f = arg;
  builder *m = malloc(sizeof *m);
  aggregator_remote *hello = malloc(sizeof *hello);
  if (hello) *hello = (aggregator_remote){.self = f->node, .nodes = 1};
  if (m && hello && hand_over(f, hello) == 0) {
    log_event(f->o.log, "🛰️", "fleet", 0, "fleet_view",
              "Fleet view: node %s publishes on %s every %d ms, merges %s*, answers health checks on %s", f->node,
              f->fleet_subject, FLEET_INTERVAL_MS, f->fleet_prefix, f->health_subject);
    int64_t next_round = tg_now();
    size_t prefix_len = strlen(f->fleet_prefix), inbox_len = strlen(f->inbox);
    for (;;) {
      reap(f);
      natsMsg *msg;
      tg_case cs[2] = {tg_cancel_case(f->o.cancel), tg_mpsc_recv_case(f->arrivals_rx, &msg)};
      int w = tg_select(cs, 2, next_round);
      if (w == 0 || (w == 1 && cs[1].result != 0)) break;
      if (w == TG_ETIMEDOUT) {
        publish_round(f, m);
        next_round = tg_now() + TG_MS(FLEET_INTERVAL_MS);
        continue;
      }
      const char *subject = natsMsg_GetSubject(msg);
      if (strncmp(subject, f->fleet_prefix, prefix_len) == 0) {
        aggregator_remote *u;
        merge(f, msg, &u);
        natsMsg_Destroy(msg);
        if (u && hand_over(f, u) != 0) break;
      } else if (strncmp(subject, f->inbox, inbox_len) == 0) {
        reply_arrived(f, msg);
      } else {
        check_forwarded(f, msg);
      }
    }
  } else {
    free(hello);
  }
  free(m);
  /* The asks still waiting end now; the checks answered for others too. */
  pthread_mutex_lock(&f->lock);
  f->closing = 1;
  for (ask *a = f->pending; a; a = a->next) tg_oneshot_tx_drop(a->reply);
  f->pending = NULL;
  pthread_mutex_unlock(&f->lock);
  tg_outcome o; /* each ends within its timeout */
  while (tg_joinset_join_next(f->checks, &o) == 0) {
  }
  tg_blocking_run(close_call, f);
  tg_mpsc_tx_drop(f->o.remote);
  f->o.remote = NULL;
  tg_watch_rx_drop(f->o.latest);
  f->o.latest = NULL;
  return NULL;
}

/* ------------------------------------------------------------ the API */

const char *fleet_connected_at(fleet *f, uint32_t index) {
  if (!f || index < 1 || index > f->o.reg->max) return NULL;
  return atomic_load(&f->conn_at[index]);
}

int fleet_health_ask(fleet *f, const char *node, const char *device_id, int64_t timeout_ns, device_status *out) {
  tg_oneshot_tx *tx;
  tg_oneshot_rx *rx;
  if (tg_oneshot_new(sizeof(natsMsg *), &tx, &rx) != 0) return TG_ENOMEM;
  char subject[SUBJECT_MAX], token[FLEET_NODE_MAX + 1], reply[SUBJECT_MAX];
  subject_token(token, sizeof token, node);
  snprintf(subject, sizeof subject, "%s.health.%s", f->o.prefix, token);
  uint8_t req[16 + PROTOCOL_DEVICE_ID_MAX];
  wbuf w = {req, 0, sizeof req};
  int64_t timeout_ms = timeout_ns / 1000000 > 0 ? timeout_ns / 1000000 : 1;
  put_var(&w, (uint64_t)timeout_ms);
  put_str8(&w, device_id, strlen(device_id));
  ask a = {.reply = tx};
  figure_add_shared(&f->health_asked, 1);
  pthread_mutex_lock(&f->lock);
  int r = f->closing ? TG_ECLOSED : 0;
  if (r == 0) {
    a.id = ++f->next_ask;
    snprintf(reply, sizeof reply, "%s.%llu", f->inbox, (unsigned long long)a.id);
    if (natsConnection_PublishRequest(f->nc, subject, reply, req, (int)w.len) == NATS_OK) {
      a.next = f->pending;
      f->pending = &a;
    } else {
      r = TG_ECLOSED;
    }
  }
  pthread_mutex_unlock(&f->lock);
  if (r != 0) {
    tg_oneshot_tx_drop(tx);
    tg_oneshot_rx_drop(rx);
    return r;
  }
  natsMsg *msg = NULL;
  r = tg_oneshot_recv_dl(rx, &msg, tg_deadline_in(timeout_ns + TG_MS(FLEET_HEALTH_MARGIN_MS)));
  if (r == TG_ETIMEDOUT || r == TG_ECANCELED) {
    int mine = 0;
    pthread_mutex_lock(&f->lock);
    for (ask **p = &f->pending; *p; p = &(*p)->next)
      if (*p == &a) {
        *p = a.next;
        mine = 1;
        break;
      }
    pthread_mutex_unlock(&f->lock);
    if (mine)
      tg_oneshot_tx_drop(tx);
    else if (tg_oneshot_recv(rx, &msg) == 0) /* the reply was on its way: it is sent at once */
      natsMsg_Destroy(msg);
    tg_oneshot_rx_drop(rx);
    return r == TG_ECANCELED ? r : TG_ETIMEDOUT;
  }
  tg_oneshot_rx_drop(rx);
  if (r != 0) return TG_ECLOSED; /* the fleet is closing */
  rbuf b = {(const uint8_t *)natsMsg_GetData(msg), (const uint8_t *)natsMsg_GetData(msg) + natsMsg_GetDataLength(msg),
            0};
  /* No responders (the node is gone) come as an empty message with a status. */
  if (natsMsg_GetDataLength(msg) == 0) {
    natsMsg_Destroy(msg);
    return TG_ECLOSED;
  }
  unsigned code = get_u8(&b);
  device_status st = {.battery = (uint32_t)get_var(&b)};
  st.uptime_ms = (int64_t)(get_var(&b) & INT64_MAX);
  st.readings = get_var(&b);
  natsMsg_Destroy(msg);
  if (b.bad) return -EIO;
  if (code == 0 && out) *out = st;
  return result_of(code);
}

void fleet_figures_get(fleet *f, fleet_figures *out) {
  *out = (fleet_figures){.connected = figure_get(&f->connected),
                         .nodes = atomic_load(&f->nnodes) + 1,
                         .messages_sent = figure_get(&f->messages_sent),
                         .bytes_sent = figure_get(&f->bytes_sent),
                         .messages_received = figure_get(&f->messages_received),
                         .bytes_received = figure_get(&f->bytes_received),
                         .devices_sent = figure_get(&f->devices_sent),
                         .devices_received = figure_get(&f->devices_received),
                         .devices_dropped = figure_get(&f->devices_dropped),
                         .syncs = figure_get(&f->syncs),
                         .health_asked = figure_get(&f->health_asked),
                         .health_answered = figure_get(&f->health_answered)};
}

void fleet_free(fleet *f) {
  if (!f) return;
  if (f->o.remote) tg_mpsc_tx_drop(f->o.remote);
  if (f->o.latest) tg_watch_rx_drop(f->o.latest);
  if (f->arrivals_rx) {
    natsMsg *msg;
    while (tg_mpsc_try_recv(f->arrivals_rx, &msg) == 0) natsMsg_Destroy(msg);
    tg_mpsc_rx_drop(f->arrivals_rx);
  }
  if (f->arrivals_tx) tg_mpsc_tx_drop(f->arrivals_tx);
  if (f->checks) tg_joinset_free(f->checks);
  pthread_mutex_destroy(&f->lock);
  free(f->sent_count);
  free(f->sent_conn);
  free(f->answering);
  free(f->conn_at);
  free(f->nodes);
  free(f->arena);
  free(f->msg_len);
  free(f);
}

int fleet_start(tg_joinset *tasks, const fleet_opts *o, fleet **out, char *err, size_t errlen) {
  *out = NULL;
  fleet *f = calloc(1, sizeof *f);
  if (!f) {
    tg_mpsc_tx_drop(o->remote);
    tg_watch_rx_drop(o->latest);
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  f->o = *o;
  pthread_mutex_init(&f->lock, NULL);
  if (strlen(o->node) > FLEET_NODE_MAX || strlen(o->prefix) > PREFIX_MAX) {
    snprintf(err, errlen, "the fleet view wants a node name of at most %d bytes, got '%s'", FLEET_NODE_MAX, o->node);
    fleet_free(f);
    return -EINVAL;
  }
  snprintf(f->node, sizeof f->node, "%s", o->node);
  f->o.node = f->node;
  char token[FLEET_NODE_MAX + 1];
  subject_token(token, sizeof token, f->node);
  snprintf(f->fleet_prefix, sizeof f->fleet_prefix, "%s.fleet.", o->prefix);
  snprintf(f->fleet_subject, sizeof f->fleet_subject, "%s%s", f->fleet_prefix, token);
  snprintf(f->health_subject, sizeof f->health_subject, "%s.health.%s", o->prefix, token);
  f->instance = (uint64_t)tg_now() ^ ((uint64_t)getpid() << 32);
  atomic_init(&f->want_sync, 1);
  size_t slots = (size_t)o->reg->max + 1;
  f->sent_count = calloc(slots, sizeof *f->sent_count);
  f->sent_conn = malloc(slots);
  f->answering = calloc(slots, 1);
  f->conn_at = calloc(slots, sizeof *f->conn_at);
  f->nodes = calloc(FLEET_MAX_NODES, sizeof *f->nodes);
  f->arena = malloc(FLEET_ROUND_MAX + FLEET_MSG_MAX);
  f->msg_len = calloc(FLEET_ROUND_MAX / HEADER_MAX + 2, sizeof *f->msg_len);
  int r = !f->sent_count || !f->sent_conn || !f->answering || !f->conn_at || !f->nodes || !f->arena || !f->msg_len
              ? TG_ENOMEM
              : 0;
  if (r == 0) r = tg_joinset_new(&f->checks, "fleet-health");
  if (r == 0)
    r = tg_mpsc_new(&(tg_mpsc_opts){.capacity = ARRIVALS, .elem_size = sizeof(natsMsg *), .name = "fleet-arrivals"},
                    &f->arrivals_tx, &f->arrivals_rx);
  if (r != 0) {
    snprintf(err, errlen, "out of memory");
    fleet_free(f);
    return r;
  }
  memset(f->sent_conn, CONN_UNSENT, slots);
  char inbox[SUBJECT_MAX / 2];
  natsInbox *ib = NULL;
  if (natsInbox_Create(&ib) == NATS_OK) {
    snprintf(inbox, sizeof inbox, "%s", (const char *)ib);
    natsInbox_Destroy(ib);
  } else {
    snprintf(inbox, sizeof inbox, "_INBOX.fleet-%llx", (unsigned long long)f->instance);
  }
  snprintf(f->inbox, sizeof f->inbox, "%s", inbox);
  if ((r = tg_blocking_run(connect_call, f)) != 0) {
    snprintf(err, errlen, "the fleet view cannot connect to NATS (%s): %s", o->urls, nats_GetLastError(NULL));
    if (f->nc) tg_blocking_run(close_call, f);
    fleet_free(f);
    return r;
  }
  tg_spawn_opts so = {.stack_size = FLEET_STACK, .name = "fleet"};
  if ((r = tg_joinset_spawn(tasks, fleet_task, f, &so, NULL)) != 0) {
    snprintf(err, errlen, "cannot start the fleet view: %s", tg_strerror(r));
    tg_blocking_run(close_call, f);
    fleet_free(f);
    return r;
  }
  *out = f;
  return 0;
}
