/* nats_publish.c - readings of telegate's own ports published to the
 * JetStream stream, devices acknowledged on the PubAck; see
 * nats_publish.h.
 *
 * Why line protocol written from the parsed reading rather than the
 * line as it came: the line may lack what only the front node knows (a
 * seq it numbered, a time it stamped on arrival, the device of a write
 * that named it in a JSON key of --json-device-key), carry a timestamp
 * in the request's precision, or be one object of a Telegraf batch. A
 * line written from the reading says all of it the same way, with each
 * field's type (1i, 1.5, "x", t) so the consuming node's schema sees
 * what this one saw, and costs a few snprintf per reading.
 *
 * libnats reconnects the connection by itself (the publisher has no
 * consumer to reset); a publish is only attempted while it is connected,
 * and one whose PubAck does not come within ACK_WAIT_MS is reported by
 * libnats as an error, then published again. */
#include "nats_publish.h"

#include "figure.h"
#include "nats_leases.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  PUBLISH_STACK = 128 * 1024,
  /* Messages in flight at most: a few PubAck round trips' worth. With
   * fewer in flight devices wait longer and their messages carry more,
   * and the consumer's cost is per message: bench/nats-publish.sh
   * measured 4.3 readings a message with 512, 8.6 to 13.5 with 128, 19
   * to 20 with 32, and the most readings/s with 32. */
  WINDOW = 32,
  MESSAGE_MAX = 64 * 1024,   /* bytes of lines in one message, at most (NATS' max_payload is 1 MiB) */
  BUFFER_MAX = 32 << 20,     /* bytes of lines held, in flight or waiting: past it no reading is taken */
  TAKE_MAX = 1024,           /* readings taken at once before publishing */
  ACK_WAIT_MS = 2000,        /* a message without a PubAck after this is published again */
  RETRY_MIN_MS = 50,         /* after a failure nothing is published for this long, doubling */
  RETRY_MAX_MS = 2000,       /* up to this */
  POLL_MS = 100,             /* while disconnected with messages waiting, the connection is looked at this often */
  CONNECT_TIMEOUT_MS = 5000, /* one attempt to connect */
  RECONNECT_WAIT_MS = 100,   /* between reconnection attempts */
  PING_INTERVAL_MS = 5000,   /* a server gone silently is noticed after two unanswered pings */
  FAILURE_LOG_MS = 10000,    /* a failure that goes on is said once in this long */
  CLOSE_FLUSH_MS = 1000,     /* what is buffered at the close */
  LINE_OVERHEAD = 96,        /* a line's bytes besides its names and values: ",device=", " seq=i ", digits */
  NUMBER_MAX = 40,           /* a number's text, at most */
  SUBJECT_MAX = 64 + 1 + PROTOCOL_DEVICE_ID_MAX + 1,
};

/* A message of a device: lines, the highest seq among them. */
typedef struct chunk {
  struct chunk *next;
  uint64_t top_seq;
  uint32_t readings;
  size_t len, cap;
  char *data;
} chunk;

/* A device's queue. Invariant: while `sending`, head is the message in
 * flight and nothing is appended to it; `queued` while the device is on
 * the ready list (it has a head not in flight). */
typedef struct device_queue {
  chunk *head, *tail;
  uint32_t next_ready; /* the next device on the ready list; 0: none */
  uint8_t sending, queued;
} device_queue;

/* What libnats' thread passes to the task for each message published. */
typedef struct completion {
  natsMsg *msg;
  natsStatus status; /* NATS_OK: JetStream stored it */
  jsErrCode jerr;
} completion;

/* Invariant: inflight <= WINDOW, so the completions channel (WINDOW
 * slots) always has room for libnats' thread. */
struct nats_publish {
  const serve_config *cfg;
  schema *schema;
  registry *reg;
  demo_log *log;
  tg_cancel *cancel;
  const _Atomic int64_t *drain_until;
  nats_servers servers;    /* --nats */
  size_t prefix_len;       /* of "<subject>." */
  tg_mpsc_tx *readings_tx; /* the module's own, until sealed */
  tg_mpsc_rx *readings_rx;
  tg_mpsc_tx *done_tx; /* completions, from libnats' thread */
  tg_mpsc_rx *done_rx;
  tg_notify *wake; /* the connection came back */
  natsConnection *nc;
  jsCtx *js;
  device_queue *devs; /* by device index */
  uint32_t ndevs;
  uint32_t ready_head, ready_tail;
  uint32_t inflight;
  size_t held; /* bytes of the chunks */
  int64_t retry_at;
  int retry_ms;
  log_gate fail_gate;
  figure connected, messages, readings_published, retries, inflight_now, queued, unpublished;
};

/* ------------------------------------------------------------ lines */

/* Appends s[0, n) with line protocol's escapes: a backslash before a
 * blank, ',', '=', '"' and itself (protocol.h reads them back). */
static char *put_escaped(char *o, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == ' ' || c == ',' || c == '=' || c == '"' || c == '\\') *o++ = '\\';
    *o++ = c;
  }
  return o;
}

static char *put_name(char *o, const schema *sc, uint16_t id) {
  const char *name = schema_name(sc, id);
  return put_escaped(o, name, strlen(name));
}

/* The fewest digits of %g that read back as the same double. */
static char *put_double(char *o, double v) {
  char buf[NUMBER_MAX];
  snprintf(buf, sizeof buf, "%.15g", v);
  if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
  size_t n = strlen(buf);
  memcpy(o, buf, n);
  return o + n;
}

/* The most bytes the line of r can take. */
static size_t line_bound(const schema *sc, const reading *r, size_t id_len) {
  size_t n = LINE_OVERHEAD + id_len + 2 * strlen(schema_name(sc, r->measurement));
  const field_value *f = reading_fields(r);
  for (uint32_t i = 0; i < r->nfields; i++)
    n += 2 * strlen(schema_name(sc, f[i].name)) + 4 +
         (f[i].type == FIELD_STRING || f[i].type == FIELD_TAG ? 2 * (size_t)f[i].len : NUMBER_MAX);
  return n;
}

/* Writes r's line at o (line_bound bytes of room); returns its end. */
static char *put_line(char *o, const schema *sc, const reading *r, const char *id, size_t id_len) {
  const field_value *f = reading_fields(r);
  o = put_name(o, sc, r->measurement);
  memcpy(o, ",device=", 8);
  o = put_escaped(o + 8, id, id_len);
  for (uint32_t i = 0; i < r->nfields; i++) {
    if (f[i].type != FIELD_TAG) continue;
    *o++ = ',';
    o = put_name(o, sc, f[i].name);
    *o++ = '=';
    o = put_escaped(o, f[i].v.s, f[i].len);
  }
  char sep = ' ';
  for (uint32_t i = 0; i < r->nfields; i++) {
    if (f[i].type == FIELD_TAG) continue;
    *o++ = sep;
    sep = ',';
    o = put_name(o, sc, f[i].name);
    *o++ = '=';
    switch (f[i].type) {
    case FIELD_FLOAT: o = put_double(o, f[i].v.f); break;
    case FIELD_INT: o += sprintf(o, "%" PRId64 "i", f[i].v.i); break;
    case FIELD_BOOL: *o++ = f[i].v.i ? 't' : 'f'; break;
    default: /* FIELD_STRING */
      *o++ = '"';
      for (uint32_t k = 0; k < f[i].len; k++) {
        if (f[i].v.s[k] == '"' || f[i].v.s[k] == '\\') *o++ = '\\';
        *o++ = f[i].v.s[k];
      }
      *o++ = '"';
    }
  }
  o += sprintf(o, "%cseq=%" PRIu64 "i %" PRId64 "\n", sep, r->seq, r->ts_ms * 1000000);
  return o;
}

/* ------------------------------------------------------------ queues */

static device_queue *queue_of(nats_publish *p, uint32_t device) {
  if (device >= p->ndevs) {
    uint32_t n = p->ndevs ? p->ndevs : 1024;
    while (n <= device) n *= 2;
    device_queue *grown = realloc(p->devs, (size_t)n * sizeof *grown);
    if (!grown) return NULL;
    memset(grown + p->ndevs, 0, (size_t)(n - p->ndevs) * sizeof *grown);
    p->devs = grown;
    p->ndevs = n;
  }
  return &p->devs[device];
}

static void ready_push(nats_publish *p, uint32_t device) {
  device_queue *q = &p->devs[device];
  if (q->queued || q->sending || !q->head) return;
  q->queued = 1;
  q->next_ready = 0;
  if (p->ready_tail)
    p->devs[p->ready_tail].next_ready = device;
  else
    p->ready_head = device;
  p->ready_tail = device;
}

static uint32_t ready_pop(nats_publish *p) {
  uint32_t device = p->ready_head;
  if (!device) return 0;
  device_queue *q = &p->devs[device];
  p->ready_head = q->next_ready;
  if (!p->ready_head) p->ready_tail = 0;
  q->queued = 0;
  return device;
}

static void held_add(nats_publish *p, ptrdiff_t n) {
  p->held = (size_t)((ptrdiff_t)p->held + n);
  atomic_store_explicit(&p->queued, p->held, memory_order_relaxed);
}

static void chunk_free(nats_publish *p, chunk *c) {
  held_add(p, -(ptrdiff_t)c->cap);
  free(c->data);
  free(c);
}

/* Appends the line of r to its device's last message, or a new one.
 * Takes r (freed). Returns 0 or TG_ENOMEM (the reading is then lost:
 * counted unpublished, its device never acked for it). */
static int take_reading(nats_publish *p, reading *r) {
  const char *id = registry_name(p->reg, r->device);
  device_queue *q = id ? queue_of(p, r->device) : NULL;
  if (!q) {
    reading_free(r);
    return TG_ENOMEM;
  }
  size_t id_len = strlen(id), need = line_bound(p->schema, r, id_len);
  chunk *c = q->tail;
  if (!c || (q->sending && c == q->head) || (c->len + need > MESSAGE_MAX && c->len > 0)) {
    c = calloc(1, sizeof *c);
    if (!c) {
      reading_free(r);
      return TG_ENOMEM;
    }
    if (q->tail)
      q->tail->next = c;
    else
      q->head = c;
    q->tail = c;
  }
  if (c->len + need > c->cap) {
    size_t cap = c->cap ? c->cap : 512;
    while (cap < c->len + need) cap *= 2;
    char *grown = realloc(c->data, cap);
    if (!grown) {
      reading_free(r);
      return TG_ENOMEM;
    }
    held_add(p, (ptrdiff_t)(cap - c->cap));
    c->data = grown;
    c->cap = cap;
  }
  char *end = put_line(c->data + c->len, p->schema, r, id, id_len);
  c->len = (size_t)(end - c->data);
  if (r->seq > c->top_seq) c->top_seq = r->seq;
  c->readings++;
  reading_free(r);
  ready_push(p, r->device);
  return 0;
}

/* ------------------------------------------------------------ NATS */

/* At the end of each job on the blocking pool (source_nats.c says why). */
static int pool_thread_release(int r) {
  nats_ReleaseThreadMemory();
  OPENSSL_thread_stop();
  return r;
}

/* libnats' thread: a PubAck, or the failure of a publish. */
static void on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
  (void)js;
  nats_publish *p = closure;
  /* A JetStream error (the stream refused it) may come with Err NATS_OK
   * and only ErrCode set. */
  natsStatus status = pae ? (pae->Err != NATS_OK ? pae->Err : NATS_ERR) : pa ? NATS_OK : NATS_ERR;
  completion d = {.msg = msg, .status = status, .jerr = pae ? pae->ErrCode : 0};
  if (tg_mpsc_try_send(p->done_tx, &d) != 0) natsMsg_Destroy(msg); /* the task is gone: the shutdown */
}

/* libnats' thread: the connection is up (again). */
static void on_connected(natsConnection *nc, void *closure) {
  (void)nc;
  nats_publish *p = closure;
  atomic_store_explicit(&p->connected, 1, memory_order_relaxed);
  tg_notify_one(p->wake);
}

static void on_disconnected(natsConnection *nc, void *closure) {
  (void)nc;
  nats_publish *p = closure;
  atomic_store_explicit(&p->connected, 0, memory_order_relaxed);
}

typedef struct open_args {
  nats_publish *p;
  char why[300];
} open_args;

/* On the blocking pool: the connection, retried in the background by
 * libnats when NATS is away now. */
static int open_connection(open_args *a) {
  nats_publish *p = a->p;
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetServers(o, p->servers.urls, p->servers.count);
  if (s == NATS_OK) s = natsOptions_SetName(o, "telegate-publish");
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, CONNECT_TIMEOUT_MS);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(o, PING_INTERVAL_MS);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(o, 2);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, RECONNECT_WAIT_MS);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, p);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_connected, p);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, p);
  if (s != NATS_OK) {
    nats_why(a->why, sizeof a->why, "cannot set the connection's options", s, 0);
    natsOptions_Destroy(o);
    return -EINVAL;
  }
  s = natsConnection_Connect(&p->nc, o);
  natsOptions_Destroy(o);
  if (s == NATS_OK) on_connected(p->nc, p);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    p->nc = NULL;
    nats_why(a->why, sizeof a->why, "cannot connect", s, 0);
    return -ECONNREFUSED;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.AckHandler = on_puback;
  jo.PublishAsync.AckHandlerClosure = p;
  jo.PublishAsync.MaxPending = WINDOW + 1; /* the task keeps to WINDOW: a publish never stalls */
  if ((s = natsConnection_JetStream(&p->js, p->nc, &jo)) != NATS_OK) {
    p->js = NULL;
    nats_why(a->why, sizeof a->why, "no JetStream context", s, 0);
    return -EPROTO;
  }
  return 0;
}

static int open_call(void *arg) { return pool_thread_release(open_connection(arg)); }

/* On the blocking pool: what is buffered goes out, then the close. */
static int close_call(void *arg) {
  nats_publish *p = arg;
  if (p->nc) natsConnection_FlushTimeout(p->nc, CLOSE_FLUSH_MS);
  jsCtx_Destroy(p->js);
  natsConnection_Destroy(p->nc); /* closes first */
  p->js = NULL;
  p->nc = NULL;
  return pool_thread_release(0);
}

/* ------------------------------------------------------------ the task */

static void failed(nats_publish *p, const char *what, natsStatus s, jsErrCode jerr) {
  int64_t now = tg_now();
  p->retry_ms = p->retry_ms ? (p->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : p->retry_ms * 2) : RETRY_MIN_MS;
  p->retry_at = now + TG_MS(p->retry_ms);
  uint64_t held;
  if (log_gate_pass(&p->fail_gate, now, TG_MS(FAILURE_LOG_MS), &held)) {
    char why[300];
    nats_why(why, sizeof why, what, s, jerr);
    log_event(p->log, "⚠️", "nats", 0, "nats_publish_failed",
              "NATS publish: %s; published again, its device not acknowledged meanwhile%s", why, log_held_note(held).s);
  }
}

/* A PubAck, or a failure: the device is acknowledged, or its message
 * goes out again before anything newer of it. */
static void on_done(nats_publish *p, completion *d) {
  const char *subject = natsMsg_GetSubject(d->msg);
  uint32_t device = strlen(subject) > p->prefix_len ? registry_find(p->reg, subject + p->prefix_len) : 0;
  natsMsg_Destroy(d->msg);
  p->inflight--;
  atomic_store_explicit(&p->inflight_now, p->inflight, memory_order_relaxed);
  device_queue *q = device && device < p->ndevs ? &p->devs[device] : NULL;
  if (!q || !q->sending) return; /* not ours: cannot be */
  q->sending = 0;
  if (d->status == NATS_OK) {
    chunk *c = q->head;
    registry_published(p->reg, device, c->top_seq);
    figure_add(&p->messages, 1);
    figure_add(&p->readings_published, c->readings);
    q->head = c->next;
    if (!q->head) q->tail = NULL;
    chunk_free(p, c);
    p->retry_ms = 0;
  } else {
    figure_add(&p->retries, 1);
    failed(p, "no PubAck", d->status, d->jerr);
  }
  ready_push(p, device);
}

/* Publishes the ready devices' next messages, while connected, within
 * the window and not while a failure's pause lasts. */
static void publish_ready(nats_publish *p) {
  if (tg_now() < p->retry_at || !atomic_load_explicit(&p->connected, memory_order_relaxed)) return;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = ACK_WAIT_MS;
  char subject[SUBJECT_MAX + 1];
  while (p->inflight < WINDOW) {
    uint32_t device = ready_pop(p);
    if (!device) return;
    device_queue *q = &p->devs[device];
    snprintf(subject, sizeof subject, "%s.%s", p->cfg->nats_subject, registry_name(p->reg, device));
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, q->head->data, (int)q->head->len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, NATS_PUBLISH_JUDGED, "1");
    if (s == NATS_OK) {
      q->sending = 1; /* before the publish: its PubAck may come at once */
      p->inflight++;
      s = js_PublishMsgAsync(p->js, &m, &po);
      if (s != NATS_OK) {
        q->sending = 0;
        p->inflight--;
      }
    }
    natsMsg_Destroy(m); /* NULL once libnats took it */
    atomic_store_explicit(&p->inflight_now, p->inflight, memory_order_relaxed);
    if (s != NATS_OK) {
      ready_push(p, device);
      failed(p, "cannot publish", s, 0);
      return;
    }
  }
}

/* Drops every message held: at the shutdown, past its time. */
static void drop_all(nats_publish *p) {
  for (uint32_t i = 0; i < p->ndevs; i++) {
    device_queue *q = &p->devs[i];
    while (q->head) {
      chunk *c = q->head;
      q->head = c->next;
      figure_add(&p->unpublished, c->readings);
      chunk_free(p, c);
    }
    q->tail = NULL;
  }
}

static void *publish_task(void *arg) {
  nats_publish *p = arg;
  open_args oa = {.p = p};
  if (tg_blocking_run(open_call, &oa) != 0)
    log_event(p->log, "❌", "nats", 0, "nats_publish_failed", "NATS publish %s: %s", p->cfg->nats_urls, oa.why);
  int closed = 0, stopping = 0;
  int64_t give_up = TG_FOREVER;
  for (;;) {
    completion d;
    while (tg_mpsc_try_recv(p->done_rx, &d) == 0) on_done(p, &d);
    if (p->js) publish_ready(p);
    if (closed && !p->ready_head && p->inflight == 0) break;
    if (stopping && tg_now() >= give_up) break;
    reading r;
    int take = !closed && p->held < BUFFER_MAX;
    int64_t wake = give_up;
    if (p->ready_head && p->inflight < WINDOW) {
      int64_t at = p->retry_at > tg_now() ? p->retry_at : tg_deadline_in(TG_MS(POLL_MS));
      if (at < wake) wake = at;
    }
    tg_case cs[4] = {tg_mpsc_recv_case(p->done_rx, &d), tg_notify_wait_case(p->wake)};
    int n = 2, at_cancel = stopping ? -1 : n++, at_reading = take ? n++ : -1;
    if (at_cancel > 0) cs[at_cancel] = tg_cancel_case(p->cancel);
    if (at_reading > 0) cs[at_reading] = tg_mpsc_recv_case(p->readings_rx, &r);
    int w = tg_select(cs, n, wake);
    if (w == 0) {
      on_done(p, &d);
    } else if (w == at_cancel) {
      stopping = 1;
      give_up = atomic_load(p->drain_until) + TG_MS(p->cfg->storage_shutdown_timeout_ms / 2);
    } else if (w == at_reading) {
      if (cs[w].result != 0) {
        closed = 1;
        continue;
      }
      for (int taken = 1;; taken++) {
        if (take_reading(p, &r) != 0) figure_add(&p->unpublished, 1);
        if (taken == TAKE_MAX || p->held >= BUFFER_MAX || tg_mpsc_try_recv(p->readings_rx, &r) != 0) break;
      }
    }
  }
  /* Past its time: what is left is dropped (the devices were not
   * acknowledged for it), and the sources still sending are let go. */
  drop_all(p);
  tg_mpsc_rx_drop(p->readings_rx);
  p->readings_rx = NULL;
  tg_blocking_run(close_call, p);
  completion d;
  while (tg_mpsc_try_recv(p->done_rx, &d) == 0) natsMsg_Destroy(d.msg);
  atomic_store_explicit(&p->connected, 0, memory_order_relaxed);
  atomic_store_explicit(&p->inflight_now, 0, memory_order_relaxed);
  return NULL;
}

/* ------------------------------------------------------------ the module */

void nats_publish_free(nats_publish *p) {
  if (!p) return;
  if (p->nc) tg_blocking_run(close_call, p); /* the task never ran */
  if (p->readings_tx) tg_mpsc_tx_drop(p->readings_tx);
  if (p->readings_rx) {
    reading r;
    while (tg_mpsc_try_recv(p->readings_rx, &r) == 0) reading_free(&r);
    tg_mpsc_rx_drop(p->readings_rx);
  }
  if (p->done_rx) {
    completion d;
    while (tg_mpsc_try_recv(p->done_rx, &d) == 0) natsMsg_Destroy(d.msg);
    tg_mpsc_rx_drop(p->done_rx);
  }
  if (p->done_tx) tg_mpsc_tx_drop(p->done_tx);
  if (p->wake) tg_notify_free(p->wake);
  drop_all(p);
  free(p->devs);
  nats_servers_free(&p->servers);
  free(p);
}

int nats_publish_start(tg_joinset *tasks, const nats_publish_opts *o, nats_publish **out, char *err, size_t errlen) {
  const serve_config *cfg = o->cfg;
  *out = NULL;
  nats_publish *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  *p = (nats_publish){.cfg = cfg,
                      .schema = o->schema,
                      .reg = o->reg,
                      .log = o->log,
                      .cancel = o->cancel,
                      .drain_until = o->drain_until,
                      .prefix_len = strlen(cfg->nats_subject) + 1};
  int r = nats_servers_parse(cfg->nats_urls, &p->servers, err, errlen);
  if (r == 0 && (strpbrk(cfg->nats_subject, "*> \t") || !*cfg->nats_subject || strlen(cfg->nats_subject) > 64)) {
    snprintf(err, errlen, "--nats-subject wants a subject prefix without wildcards, got '%s'", cfg->nats_subject);
    r = -EINVAL;
  }
  if (r == 0) {
    tg_mpsc_opts ro = {
        .capacity = (size_t)cfg->telemetry_capacity, .elem_size = sizeof(reading), .name = "nats-publish"};
    tg_mpsc_opts dop = {.capacity = WINDOW, .elem_size = sizeof(completion), .name = "nats-pubacks"};
    if (tg_mpsc_new(&ro, &p->readings_tx, &p->readings_rx) != 0 || tg_mpsc_new(&dop, &p->done_tx, &p->done_rx) != 0 ||
        tg_notify_new(&p->wake, "nats-publish") != 0) {
      snprintf(err, errlen, "out of memory");
      r = TG_ENOMEM;
    }
  }
  tg_spawn_opts so = {.stack_size = PUBLISH_STACK, .name = "nats-publish"};
  if (r == 0 && (r = tg_joinset_spawn(tasks, publish_task, p, &so, NULL)) != 0)
    snprintf(err, errlen, "cannot start publishing to NATS: %s", tg_strerror(r));
  if (r != 0) {
    nats_publish_free(p);
    return r;
  }
  *out = p;
  return 0;
}

int nats_publish_sender(nats_publish *p, tg_mpsc_tx **tx) {
  if (!p->readings_tx) return TG_ECLOSED;
  *tx = tg_mpsc_tx_clone(p->readings_tx);
  return 0;
}

void nats_publish_seal(nats_publish *p) {
  if (p->readings_tx) tg_mpsc_tx_drop(p->readings_tx);
  p->readings_tx = NULL;
}

int nats_publish_connected(const nats_publish *p) { return figure_get(&p->connected) != 0; }

void nats_publish_figures_get(const nats_publish *p, nats_publish_figures *f) {
  *f = (nats_publish_figures){.connected = figure_get(&p->connected),
                              .messages = figure_get(&p->messages),
                              .readings = figure_get(&p->readings_published),
                              .retries = figure_get(&p->retries),
                              .inflight = figure_get(&p->inflight_now),
                              .queued = figure_get(&p->queued),
                              .unpublished = figure_get(&p->unpublished)};
}
