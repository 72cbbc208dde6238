/* source_nats.c - the NATS JetStream source: durable pull consumers, one
 * per partition this node holds (nats_leases.h), messages to readings,
 * acks after the commit; see source_nats.h.
 *
 * libnats runs its own threads. The task asks for messages with pull
 * requests it publishes itself (a publish only buffers), and libnats
 * hands what comes to a callback on its delivery thread, which passes
 * each message into a channel the task selects on with the commits and
 * the shutdown: nothing waits in a blocking call while acks are due. The
 * calls that do block (connect, the stream and consumer requests, close)
 * run on the blocking pool. */
#include "source_nats.h"

#include "broker_lines.h"
#include "figure.h"
#include "nats_leases.h"
#include "nats_publish.h"
#include "rng.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  NATS_STACK = 128 * 1024,
  BACKOFF_MIN_MS = 100,
  BACKOFF_MAX_MS = 5000,
  CONNECT_TIMEOUT_MS = 5000, /* a server that does not answer, and each JetStream request */
  PING_INTERVAL_MS = 5000,   /* a server gone silently is noticed after two unanswered pings */
  FAILURE_LOG_MS = 10000,    /* a NATS that stays away is said once in this long */
  FETCH_MAX = 512,           /* messages one pull request asks for, at most */
  REQUEST_EXPIRES_MS = 2000, /* a pull request the stream cannot fill ends after this, and is made again;
                                a partition handed back waits for its request to end */
  REQUEST_GRACE_MS = 1000,   /* a request whose end the server did not say is taken as ended this long
                                after it expired */
  RESET_RETRY_MS = 1000,     /* a partition whose consumer could not be reset is tried again after this */
  ACK_WAIT_S = 30,           /* JetStream sends a message again when not acked within this */
  CLOSE_WAIT_MS = 5000,      /* libnats' own threads end within this once every connection is closed */
  NAME_BYTES = 160,          /* a subject or consumer name: the prefix and the names are at most 64 */
};

/* A message fetched and not yet acknowledged. */
typedef struct inflight {
  natsMsg *msg;
  uint32_t device; /* its readings' device; 0: nothing to wait for */
  uint64_t seq;    /* the highest seq among its readings */
  int part;        /* its partition's index */
} inflight;

/* A partition as the task consumes it. Invariant: `active` while this
 * session reset its consumer and the lease says OWNED or RELEASING;
 * `asked` > 0 only while a pull request is outstanding. */
typedef struct part {
  char consumer[NAME_BYTES]; /* <consumer>, or <consumer>-<n> */
  char filter[NAME_BYTES];   /* <subject>.>, or <subject>.<n>.* */
  char next[2 * NAME_BYTES]; /* $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> */
  char reply[NAME_BYTES];    /* <inbox>.<n>: where its messages and statuses come */
  int active;
  int requesting;         /* a pull request is outstanding */
  int64_t requested_ns;   /* tg_now() when it was sent */
  int64_t reset_retry_ns; /* a reset that failed is tried again from then */
  uint32_t asked;         /* messages it may still bring */
  uint32_t unacked;
  uint64_t resent_upto; /* stream sequences up to this were delivered before the reset */
  uint64_t pending;     /* the consumer's lag as last seen */
} part;

/* Invariant: fifo[head .. head+len) (mod cap) are the messages of the
 * current session in the order they came, len + the parts' asked <= cap,
 * so the channel of arrivals (cap + room for statuses) never fills. */
typedef struct nats_source {
  const serve_config *cfg;
  tg_cancel *cancel;
  demo_log *log;
  registry *reg;
  tg_mpsc_tx *telemetry; /* dropped at the shutdown */
  storage *db;           /* whose marks of a partition's devices are forgotten when it is taken; NULL: none kept */
  const _Atomic int64_t *drain_until;
  nats_servers servers; /* --nats */
  char bucket[NAME_BYTES];
  size_t prefix_len; /* of "<subject>." */
  nats_leases *leases;
  part *parts;
  int nparts;
  registry_conn rc;     /* the current session's: a new one each session */
  tg_watch_rx *commits; /* changes after every commit: the FIFO's head is looked at then */
  seq_check seqs;
  broker_lines lines_out;
  const char *subject; /* of the message whose lines are sent on: what a refusal is logged with */
  inflight *fifo;
  uint32_t cap, head, len, asked;
  /* The partition (+1; 0: none yet) each device's messages came from, by
   * device index: a device maps to one partition for good. */
  uint16_t *device_part;
  uint32_t device_parts;
  tg_mpsc_tx *arrivals_tx; /* natsMsg pointers, from libnats' delivery thread; NULL: a connection closed */
  tg_mpsc_rx *arrivals_rx;
  atomic_int overflow; /* an arrival found no room (the channel, or the window): the session's order is lost */
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  char inbox[NAME_BYTES / 2];
  rng jitter;
  log_gate fail_gate, bad_gate, reset_gate;
  _Atomic int64_t first_byte_ns;
  figure connected, connects, connect_failures, disconnects, messages, redelivered, acks, inflight_now, pending;
  figure requests_lost; /* pull requests the server ended without a word */
  figure bytes, lines, readings;
  figure bad[SERVE_BAD_REASONS];
} nats_source;

/* ------------------------------------------------------------ settings */

/* Names of the partitions' consumers and subjects. */
static int parts_init(nats_source *n, char *err, size_t errlen) {
  const serve_config *c = n->cfg;
  if (strpbrk(c->nats_subject, "*> \t") || !*c->nats_subject || strlen(c->nats_subject) > 64) {
    snprintf(err, errlen, "--nats-subject wants a subject prefix without wildcards, got '%s'", c->nats_subject);
    return -EINVAL;
  }
  if (strpbrk(c->nats_stream, ".*> \t") || !*c->nats_stream || strlen(c->nats_stream) > 64) {
    snprintf(err, errlen, "--nats-stream wants a name of at most 64 bytes without '.', '*', '>' or blanks, got '%s'",
             c->nats_stream);
    return -EINVAL;
  }
  if (strpbrk(c->nats_consumer, ".*> \t") || !*c->nats_consumer || strlen(c->nats_consumer) > 64) {
    snprintf(err, errlen, "--nats-consumer wants a name without '.', '*', '>' or blanks, got '%s'", c->nats_consumer);
    return -EINVAL;
  }
  n->prefix_len = strlen(c->nats_subject) + 1;
  n->nparts = c->nats_partitions > 0 ? c->nats_partitions : 1;
  n->parts = calloc((size_t)n->nparts, sizeof *n->parts);
  if (!n->parts) {
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  for (int p = 0; p < n->nparts; p++) {
    part *t = &n->parts[p];
    if (c->nats_partitions > 0) {
      snprintf(t->consumer, sizeof t->consumer, "%s-%d", c->nats_consumer, p);
      snprintf(t->filter, sizeof t->filter, "%s.%d.*", c->nats_subject, p);
    } else {
      snprintf(t->consumer, sizeof t->consumer, "%s", c->nats_consumer);
      snprintf(t->filter, sizeof t->filter, "%s.>", c->nats_subject);
    }
    snprintf(t->next, sizeof t->next, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", c->nats_stream, t->consumer);
  }
  snprintf(n->bucket, sizeof n->bucket, "%s-leases", c->nats_consumer);
  return 0;
}

/* ------------------------------------------------------------ NATS calls */

/* At the end of each job on the blocking pool: libnats (its error stack)
 * and the OpenSSL under it (its random generator) keep per-thread state
 * until the thread exits, and a pool thread lives as long as the process. */
static int pool_thread_release(int r) {
  nats_ReleaseThreadMemory();
  OPENSSL_thread_stop();
  return r;
}

/* libnats' delivery thread: each message (or pull status) to the task. */
static void on_delivery(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)nc;
  (void)sub;
  nats_source *n = closure;
  if (tg_mpsc_try_send(n->arrivals_tx, &msg) != 0) {
    natsMsg_Destroy(msg);
    atomic_store(&n->overflow, 1);
  }
}

/* libnats' thread: a connection closed; the task is woken by a NULL. It
 * may come late, from the connection of a session already ended: the
 * task asks its own connection whether it closed. */
/* libnats' thread: an error it met on its own (a slow consumer: it
 * dropped messages, which the next reset delivers again). */
static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure) {
  (void)nc;
  (void)sub;
  nats_source *n = closure;
  log_event(n->log, "⚠️", "nats", 0, "nats_async_error", "NATS: %s", natsStatus_GetText(err));
}

static void on_lost(natsConnection *nc, void *closure) {
  (void)nc;
  nats_source *n = closure;
  natsMsg *none = NULL;
  tg_mpsc_try_send(n->arrivals_tx, &none); /* full: the task is busy, and looks at the connection anyway */
}

typedef struct call_args {
  nats_source *n;
  int part;
  char why[300];
} call_args;

/* The stream: looked up, and created when missing. */
static natsStatus stream_ensure(nats_source *n, char *why, size_t whylen) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, n->js, n->cfg->nats_stream, NULL, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return s;
  }
  if (s != NATS_NOT_FOUND) {
    nats_why(why, whylen, "cannot look up the stream", s, jerr);
    return s;
  }
  char subject[NAME_BYTES];
  snprintf(subject, sizeof subject, n->cfg->nats_partitions > 0 ? "%s.*.*" : "%s.>", n->cfg->nats_subject);
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char *subjects[] = {subject};
  sc.Name = n->cfg->nats_stream;
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.Retention = js_LimitsPolicy;
  sc.Replicas = n->cfg->nats_replicas > 0 ? n->cfg->nats_replicas : 1;
  if ((s = js_AddStream(&si, n->js, &sc, NULL, &jerr)) != NATS_OK) {
    nats_why(why, whylen, "cannot create the stream", s, jerr);
    return s;
  }
  jsStreamInfo_Destroy(si);
  return NATS_OK;
}

/* On the blocking pool: connects, makes sure of the stream, and
 * subscribes to the session's inbox. */
static int open_session(call_args *a) {
  nats_source *n = a->n;
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetServers(o, n->servers.urls, n->servers.count);
  if (s == NATS_OK) s = natsOptions_SetName(o, "telegate");
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, false); /* the task reconnects, and resets the consumers */
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, CONNECT_TIMEOUT_MS);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(o, PING_INTERVAL_MS);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(o, 2);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(o, on_lost, n);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_error, n);
  if (s != NATS_OK) {
    nats_why(a->why, sizeof a->why, "cannot set the connection's options", s, 0);
    natsOptions_Destroy(o);
    return -EINVAL;
  }
  s = natsConnection_Connect(&n->nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    n->nc = NULL;
    nats_why(a->why, sizeof a->why, "cannot connect", s, 0);
    return -ECONNREFUSED;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = CONNECT_TIMEOUT_MS;
  if ((s = natsConnection_JetStream(&n->js, n->nc, &jo)) != NATS_OK) {
    n->js = NULL;
    nats_why(a->why, sizeof a->why, "no JetStream context", s, 0);
    return -EPROTO;
  }
  if (stream_ensure(n, a->why, sizeof a->why) != NATS_OK) return -EPROTO;
  natsInbox *inbox = NULL;
  if ((s = natsInbox_Create(&inbox)) == NATS_OK) {
    snprintf(n->inbox, sizeof n->inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    char wildcard[NAME_BYTES];
    snprintf(wildcard, sizeof wildcard, "%s.*", n->inbox);
    s = natsConnection_Subscribe(&n->sub, n->nc, wildcard, on_delivery, n);
  }
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(n->sub, -1, -1); /* the pull requests bound it */
  if (s != NATS_OK) {
    nats_why(a->why, sizeof a->why, "cannot subscribe to an inbox", s, 0);
    return -EPROTO;
  }
  for (int p = 0; p < n->nparts; p++) snprintf(n->parts[p].reply, sizeof n->parts[p].reply, "%s.%d", n->inbox, p);
  return 0;
}

/* On the blocking pool: partition a->part's consumer, reset to its ack
 * floor (source_nats.h says why): what it delivered and was not
 * acknowledged comes again first, in stream order. */
static int reset_consumer(call_args *a) {
  nats_source *n = a->n;
  part *t = &n->parts[a->part];
  const char *stream = n->cfg->nats_stream;
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  uint64_t floor = 0;
  natsStatus s = js_GetConsumerInfo(&ci, n->js, stream, t->consumer, NULL, &jerr);
  t->resent_upto = 0;
  if (s == NATS_OK) {
    floor = ci->AckFloor.Stream;
    t->resent_upto = ci->Delivered.Stream;
    jsConsumerInfo_Destroy(ci);
    if ((s = js_DeleteConsumer(n->js, stream, t->consumer, NULL, &jerr)) != NATS_OK) {
      nats_why(a->why, sizeof a->why, "cannot reset the consumer", s, jerr);
      return -EPROTO;
    }
  } else if (s != NATS_NOT_FOUND) {
    nats_why(a->why, sizeof a->why, "cannot look up the consumer", s, jerr);
    return -EPROTO;
  }
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = t->consumer;
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = (int64_t)ACK_WAIT_S * 1000000000;
  cc.MaxAckPending = n->cap;
  cc.MaxDeliver = -1;
  cc.FilterSubject = t->filter;
  cc.DeliverPolicy = floor ? js_DeliverByStartSequence : js_DeliverAll;
  cc.OptStartSeq = floor ? floor + 1 : 0;
  if ((s = js_AddConsumer(&ci, n->js, stream, &cc, NULL, &jerr)) != NATS_OK) {
    nats_why(a->why, sizeof a->why, "cannot create the consumer", s, jerr);
    return -EPROTO;
  }
  jsConsumerInfo_Destroy(ci);
  return 0;
}

/* On the blocking pool: sends the acks still buffered, then closes. */
static int close_session(call_args *a) {
  nats_source *n = a->n;
  if (n->nc) natsConnection_FlushTimeout(n->nc, 1000);
  natsSubscription_Destroy(n->sub);
  jsCtx_Destroy(n->js);
  natsConnection_Destroy(n->nc); /* closes first */
  n->sub = NULL;
  n->js = NULL;
  n->nc = NULL;
  return 0;
}

static int open_call(void *arg) { return pool_thread_release(open_session(arg)); }
static int reset_call(void *arg) { return pool_thread_release(reset_consumer(arg)); }
static int close_call(void *arg) { return pool_thread_release(close_session(arg)); }

/* ------------------------------------------------------------ acks */

static void fifo_push(nats_source *n, inflight e) {
  n->fifo[(n->head + n->len) % n->cap] = e;
  n->len++;
  n->parts[e.part].unacked++;
  atomic_store_explicit(&n->inflight_now, n->len, memory_order_relaxed);
}

/* Acks the head of the FIFO while it is committed (see the header): the
 * registry says how far each device is committed, whichever source it is
 * on now. Returns 0, or an error when the connection is gone. */
static int acks_pass(nats_source *n) {
  uint64_t sent = 0;
  int r = 0;
  while (n->len) {
    inflight *e = &n->fifo[n->head];
    if (e->device && !registry_acked(n->reg, e->device, e->seq)) break;
    /* JetStream's ack is a publish to the message's reply subject (the
     * messages come through a plain subscription, which natsMsg_Ack does
     * not take); not acked, it comes again, and is a resend. */
    if (natsConnection_Publish(n->nc, natsMsg_GetReply(e->msg), "+ACK", 4) != NATS_OK) r = -EPIPE;
    natsMsg_Destroy(e->msg);
    n->parts[e->part].unacked--;
    n->head = (n->head + 1) % n->cap;
    n->len--;
    sent += r == 0;
  }
  if (sent) figure_add(&n->acks, sent);
  atomic_store_explicit(&n->inflight_now, n->len, memory_order_relaxed);
  return r;
}

/* ------------------------------------------------------------ messages */

/* Logs a refused line, at most once a second. */
static void log_refused(nats_source *n, const char *subject, uint64_t line_no, int reason) {
  uint64_t held;
  if (log_gate_pass(&n->bad_gate, tg_now(), TG_MS(1000), &held))
    log_event(n->log, "🚫", "nats", 0, "nats_refused",
              "NATS message on %.200s: line %" PRIu64 " refused: %s; acknowledged all the same%s", subject, line_no,
              serve_bad_reason_name(reason), log_held_note(held).s);
}

/* broker_lines' hook: a refused line of the message being taken. */
static void line_refused(void *ctx, uint64_t line_no, int reason) {
  nats_source *n = ctx;
  log_refused(n, n->subject, line_no, reason);
}

/* Partition t's lag as last seen; the figure is the sum over the
 * partitions consumed. */
static void pending_set(nats_source *n, part *t, uint64_t v) {
  uint64_t sum = figure_get(&n->pending) - (t->active ? t->pending : 0);
  t->pending = v;
  atomic_store_explicit(&n->pending, sum + (t->active ? v : 0), memory_order_relaxed);
}

/* The device of a message's subject: what follows "<subject>." (and the
 * partition's token); NULL when that is no device id. */
static const char *subject_device(const nats_source *n, const char *subject, size_t *len) {
  const char *d = strlen(subject) > n->prefix_len ? subject + n->prefix_len : "";
  if (n->cfg->nats_partitions > 0) d = strchr(d, '.') ? strchr(d, '.') + 1 : "";
  *len = strlen(d);
  return broker_lines_device_ok(d, *len) ? d : NULL;
}

/* A status of partition p's pull request (no messages, the request
 * expired, the consumer went): the request is over. The lag stays what
 * the last message said: a request may also expire unfilled while the
 * consumer waited for acks (max_ack_pending), the stream not drained. */
static void on_status(nats_source *n, natsMsg *msg) {
  const char *s = strrchr(natsMsg_GetSubject(msg), '.'), *code = NULL;
  int p = s ? atoi(s + 1) : -1;
  natsMsgHeader_Get(msg, "Status", &code);
  if (p >= 0 && p < n->nparts && !(code && strcmp(code, "100") == 0)) {
    part *t = &n->parts[p];
    n->asked -= t->asked;
    t->asked = 0;
    t->requesting = 0;
  }
  natsMsg_Destroy(msg);
}

/* Notes that device's messages come from partition p. Past the memory
 * to note it the device is simply not noted, and its mark not forgotten
 * at a takeover: the registry bounds devices, so this only happens when
 * memory is short. */
static void device_part_note(nats_source *n, uint32_t device, int p) {
  if (device >= n->device_parts) {
    uint32_t cap = n->device_parts ? n->device_parts : 1024;
    while (cap <= device) cap *= 2;
    uint16_t *m = realloc(n->device_part, cap * sizeof *m);
    if (!m) return;
    memset(m + n->device_parts, 0, (cap - n->device_parts) * sizeof *m);
    n->device_part = m;
    n->device_parts = cap;
  }
  n->device_part[device] = (uint16_t)(p + 1);
}

/* Partition p is being taken: the storage forgets the marks it holds of
 * p's devices, which load again from the database at their next write.
 * Another node may have consumed p since this one last did and committed
 * readings it never acknowledged; those come again after the reset, and
 * against this node's older marks they would look fresh and be stored a
 * second time. */
static void partition_marks_forget(nats_source *n, int p) {
  if (!n->db) return;
  uint32_t *devices = NULL, count = 0, cap = 0;
  for (uint32_t d = 0; d < n->device_parts; d++) {
    if (n->device_part[d] != p + 1) continue;
    if (count == cap) {
      cap = cap ? 2 * cap : 256;
      uint32_t *m = realloc(devices, cap * sizeof *m);
      if (!m) break; /* out of memory: the marks not forgotten stay, as before the fix */
      devices = m;
    }
    devices[count++] = d;
  }
  storage_forget_args a = {.db = n->db, .devices = devices, .n = count};
  if (count) tg_blocking_run(storage_marks_forget_call, &a);
  free(devices);
}

/* A message: its lines to readings, then its place in the FIFO, which
 * owns it from then on. Returns 0, or TG_ECLOSED when the pipeline
 * closed (the message is then destroyed unacknowledged). */
static int on_message(nats_source *n, natsMsg *msg) {
  jsMsgMetaData *meta = NULL;
  if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) { /* not a JetStream message: not ours to ack */
    natsMsg_Destroy(msg);
    return 0;
  }
  int p = 0;
  if (n->cfg->nats_partitions > 0) {
    const char *dash = strrchr(meta->Consumer, '-');
    p = dash ? atoi(dash + 1) : -1;
  }
  if (p < 0 || p >= n->nparts || !n->parts[p].active) { /* a partition given up: its next owner gets it */
    jsMsgMetaData_Destroy(meta);
    natsMsg_Destroy(msg);
    return 0;
  }
  part *t = &n->parts[p];
  if (t->asked) {
    t->asked--;
    n->asked--;
    if (!t->asked) t->requesting = 0; /* the request is filled */
  }
  figure_add(&n->messages, 1);
  if (atomic_load_explicit(&n->first_byte_ns, memory_order_relaxed) == 0)
    atomic_store_explicit(&n->first_byte_ns, tg_now(), memory_order_relaxed);
  if (meta->NumDelivered > 1 || meta->Sequence.Stream <= t->resent_upto) figure_add(&n->redelivered, 1);
  pending_set(n, t, meta->NumPending);
  jsMsgMetaData_Destroy(meta);
  const char *subject = natsMsg_GetSubject(msg), *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  figure_add(&n->bytes, (uint64_t)len);
  inflight e = {.msg = msg, .part = p};
  size_t id_len;
  const char *device = subject_device(n, subject, &id_len);
  if (!device) {
    figure_add(&n->lines, 1);
    figure_add(&n->bad[PROTOCOL_BAD_DEVICE_ID], 1);
    log_refused(n, subject, 1, PROTOCOL_BAD_DEVICE_ID);
  } else {
    char id[PROTOCOL_DEVICE_ID_MAX + 1];
    memcpy(id, device, id_len);
    id[id_len] = '\0';
    const char *judged = NULL;
    n->subject = subject;
    n->lines_out.judged = natsMsgHeader_Get(msg, NATS_PUBLISH_JUDGED, &judged) == NATS_OK;
    int r = broker_lines_send(&n->lines_out, id, data ? data : "", (size_t)len, &e.device, &e.seq);
    n->subject = NULL;
    if (r != 0) {
      natsMsg_Destroy(msg);
      return r;
    }
    if (e.device) device_part_note(n, e.device, p);
  }
  if (n->len == n->cap) { /* more than asked for came: the session's order can no longer be kept */
    natsMsg_Destroy(msg);
    atomic_store(&n->overflow, 1);
    return 0;
  }
  fifo_push(n, e);
  return 0;
}

/* ------------------------------------------------------------ sessions */

/* How a session ends, besides a failed call's code. */
enum { END_SHUTDOWN = 1, END_PIPELINE = 2 };

/* Pull requests for the partitions consumed that have none out, sharing
 * the room left in the window. A request normally ends filled or with a
 * status (408 when it expired), but right after a consumer was reset
 * nats-server 2.9 was seen to drop a waiting request without either: it
 * would have been waited for forever, the partition stalled (and, were it
 * being handed back, never drained). So a request still out well past
 * its expiry is taken as ended. */
static void requests_send(nats_source *n) {
  int64_t now = tg_now();
  for (int p = 0; p < n->nparts; p++) {
    part *t = &n->parts[p];
    if (t->requesting && now - t->requested_ns > TG_MS(REQUEST_EXPIRES_MS + REQUEST_GRACE_MS)) {
      figure_add(&n->requests_lost, 1);
      n->asked -= t->asked;
      t->asked = 0;
      t->requesting = 0;
    }
  }
  int idle = 0;
  for (int p = 0; p < n->nparts; p++)
    idle += n->parts[p].active && !n->parts[p].requesting && nats_leases_state(n->leases, p) == LEASE_OWNED;
  uint32_t room = n->cap - n->len - n->asked;
  for (int p = 0; p < n->nparts && idle && room; p++) {
    part *t = &n->parts[p];
    if (!t->active || t->requesting || nats_leases_state(n->leases, p) != LEASE_OWNED) continue;
    uint32_t want = room / (uint32_t)idle;
    want = want < 1 ? 1 : want > FETCH_MAX ? FETCH_MAX : want;
    char req[96];
    int len =
        snprintf(req, sizeof req, "{\"batch\":%u,\"expires\":%lld}", want, (long long)REQUEST_EXPIRES_MS * 1000000);
    if (natsConnection_PublishRequest(n->nc, t->next, t->reply, req, len) != NATS_OK) return; /* closing */
    t->requesting = 1;
    t->requested_ns = tg_now();
    t->asked = want;
    n->asked += want;
    room -= want;
    idle--;
  }
}

/* Follows the leases: resets the consumers of partitions taken, lets go
 * of those handed back once drained. Returns 0, or why the session ends
 * (a lease lost, a reset refused) with the reason in why. */
static int leases_follow(nats_source *n, char *why, size_t whylen) {
  int64_t now = tg_now();
  for (int p = 0; p < n->nparts; p++) {
    part *t = &n->parts[p];
    int st = nats_leases_state(n->leases, p);
    if (t->active && (st == LEASE_LOST || !nats_leases_fresh(n->leases, p, now))) {
      if (st != LEASE_LOST) nats_leases_count_lost(n->leases);
      nats_leases_move(n->leases, p, st, LEASE_LOST);
      snprintf(why, whylen, "the lease of partition %d was not renewed in time: another node may take it", p);
      return -ETIMEDOUT;
    }
    if (!t->active && st == LEASE_LOST) {
      /* Lost before its consumer was reset (a renewal refused or timed
       * out while the reset is retried): nothing of it is in flight, so
       * it is free at once. Left LOST until the session ends, a session
       * that stays up would hold it forever: this node could not claim
       * it again, and the others, holding their share, would not. The
       * same holds for one handed back before it was consumed, below. */
      nats_leases_move(n->leases, p, LEASE_LOST, LEASE_FREE);
      log_event(n->log, "⚠️", "nats", 0, "nats_lease_lost",
                "NATS: partition %d lost its lease before it was consumed; it is claimed again once free", p);
      continue;
    }
    if (!t->active && (st == LEASE_CLAIMED || st == LEASE_OWNED) && nats_leases_fresh(n->leases, p, now) &&
        now >= t->reset_retry_ns) {
      partition_marks_forget(n, p);
      call_args a = {.n = n, .part = p};
      if (tg_blocking_run(reset_call, &a) != 0) {
        /* JetStream did not answer in time (a NATS cluster electing
         * leaders is slow): the others go on, this one is tried again. */
        if (natsConnection_IsClosed(n->nc)) {
          snprintf(why, whylen, "partition %d: %.250s", p, a.why);
          return -ECONNRESET;
        }
        uint64_t held_back;
        if (log_gate_pass(&n->reset_gate, tg_now(), TG_MS(FAILURE_LOG_MS), &held_back))
          log_event(n->log, "⚠️", "nats", 0, "nats_reset_failed", "NATS: partition %d: %s; trying again in %d ms%s",
                    p, a.why, RESET_RETRY_MS, log_held_note(held_back).s);
        t->reset_retry_ns = tg_now() + TG_MS(RESET_RETRY_MS);
        continue;
      }
      pending_set(n, t, 0);
      t->active = 1;
      if (st == LEASE_CLAIMED) nats_leases_move(n->leases, p, LEASE_CLAIMED, LEASE_OWNED);
      log_event(n->log, "🧩", "nats", 0, "nats_partition_taken",
                "NATS: consuming %s through %s, reset to its ack floor (what was not acknowledged comes again "
                "first, up to stream sequence %" PRIu64 ")",
                t->filter, t->consumer, t->resent_upto);
    }
    /* Handed back once nothing of it is in flight; at once when this
     * session never consumed it (its reset was still to succeed). */
    if (st == LEASE_RELEASING && !t->requesting && t->unacked == 0) {
      pending_set(n, t, 0);
      t->active = 0;
      nats_leases_move(n->leases, p, LEASE_RELEASING, LEASE_DRAINED);
      log_event(n->log, "🧩", "nats", 0, "nats_partition_released",
                "NATS: partition %s handed back, every message of it acknowledged", t->filter);
    }
  }
  return 0;
}

/* The session until it fails or the shutdown. Returns why it ended, with
 * a one-line reason in why for a failure. */
static int session_run(nats_source *n, char *why, size_t whylen) {
  int64_t check = TG_MS(n->cfg->nats_lease_ms / 6); /* leases are looked at this often, at least */
  for (;;) {
    int r = acks_pass(n);
    if (r != 0 || atomic_load(&n->overflow) || natsConnection_IsClosed(n->nc)) {
      snprintf(why, whylen, "%s", atomic_load(&n->overflow) ? "arrivals overflowed" : "the connection closed");
      return -ECONNRESET;
    }
    if (tg_cancel_fired(n->cancel)) return END_SHUTDOWN;
    if ((r = leases_follow(n, why, whylen)) != 0) return r;
    requests_send(n);
    natsMsg *msg = NULL;
    tg_case cs[4] = {tg_cancel_case(n->cancel), tg_watch_changed_case(n->commits),
                     tg_mpsc_recv_case(n->arrivals_rx, &msg), tg_notify_wait_case(nats_leases_changed(n->leases))};
    int w = tg_select(cs, 4, tg_deadline_in(check));
    if (w == 0) return END_SHUTDOWN;
    if (w == 1 && cs[1].result != 0) return END_PIPELINE; /* the registry's watch closed */
    if (w != 2) continue;
    /* What came, up to FETCH_MAX, before the acks are looked at again. */
    for (int taken = 1;; taken++) {
      const char *reply = msg ? natsMsg_GetReply(msg) : NULL;
      if (!msg && natsConnection_IsClosed(n->nc)) {
        snprintf(why, whylen, "the connection closed");
        return -ECONNRESET;
      } else if (reply && strncmp(reply, "$JS.ACK.", 8) == 0) {
        if (on_message(n, msg) != 0) return END_PIPELINE;
      } else if (msg) {
        on_status(n, msg);
      }
      if (taken == FETCH_MAX || tg_mpsc_try_recv(n->arrivals_rx, &msg) != 0) break;
    }
  }
}

/* After the shutdown: the acks of what commits until the drain deadline.
 * The telemetry sender is already dropped. */
static void session_drain(nats_source *n) {
  int64_t until = atomic_load(n->drain_until);
  for (;;) {
    if (acks_pass(n) != 0 || n->len == 0 || tg_now() >= until) break;
    if (tg_watch_changed_dl(n->commits, until) != 0) break;
  }
}

/* Ends a session: its devices are no longer connected, and what it had
 * not acknowledged comes again when a consumer is next reset. */
static void session_end(nats_source *n) {
  registry_detach_all(n->reg, &n->rc);
  n->rc = (registry_conn){0};
  for (; n->len; n->len--, n->head = (n->head + 1) % n->cap) natsMsg_Destroy(n->fifo[n->head].msg);
  n->head = 0;
  if (n->nc) {
    call_args a = {.n = n};
    tg_blocking_run(close_call, &a);
  }
  natsMsg *msg;
  while (tg_mpsc_try_recv(n->arrivals_rx, &msg) == 0) natsMsg_Destroy(msg);
  atomic_store(&n->overflow, 0);
  n->asked = 0;
  for (int p = 0; p < n->nparts; p++) {
    part *t = &n->parts[p];
    pending_set(n, t, 0);
    t->active = t->requesting = 0;
    t->asked = t->unacked = 0;
    nats_leases_move(n->leases, p, LEASE_LOST, LEASE_FREE);
    /* Being handed back: what it had unacknowledged is dropped with the
     * session, and comes again to the next owner, whose reset starts at
     * the ack floor. Left RELEASING, the next session would neither
     * consume it nor finish handing it back. */
    nats_leases_move(n->leases, p, LEASE_RELEASING, LEASE_DRAINED);
  }
  atomic_store_explicit(&n->inflight_now, 0, memory_order_relaxed);
  atomic_store_explicit(&n->connected, 0, memory_order_relaxed);
}

static void *nats_task(void *arg) {
  nats_source *n = arg;
  int backoff = BACKOFF_MIN_MS;
  while (!tg_cancel_fired(n->cancel)) {
    call_args oa = {.n = n};
    int r = tg_blocking_run(open_call, &oa);
    if (r != 0) {
      figure_add(&n->connect_failures, 1);
      session_end(n);
      uint64_t held;
      if (log_gate_pass(&n->fail_gate, tg_now(), TG_MS(FAILURE_LOG_MS), &held))
        log_event(n->log, "❌", "nats", 0, "nats_connect_failed", "NATS %s: %s; retrying%s", n->cfg->nats_urls, oa.why,
                  log_held_note(held).s);
      int64_t delay = TG_MS(backoff / 2) + (int64_t)(rng_unit(&n->jitter) * (double)TG_MS(backoff / 2));
      tg_cancel_wait_dl(n->cancel, tg_deadline_in(delay));
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      continue;
    }
    n->fail_gate = (log_gate){0}; /* the next failure is said at once */
    backoff = BACKOFF_MIN_MS;
    figure_add(&n->connects, 1);
    atomic_store_explicit(&n->connected, 1, memory_order_relaxed);
    nats_leases_kick(n->leases);
    char url[200] = "?";
    natsConnection_GetConnectedUrl(n->nc, url, sizeof url);
    log_event(n->log, "📡", "nats", 0, "nats_connected",
              "NATS: connected to %s as node %s; stream %s, %d partition%s%s, at most %u messages unacknowledged", url,
              nats_leases_node(n->leases), n->cfg->nats_stream, n->nparts, n->nparts == 1 ? "" : "s",
              n->cfg->nats_partitions > 0 ? " (each consumed by the node holding its lease)" : " (no partitioning)",
              n->cap);
    char why[300] = "";
    r = session_run(n, why, sizeof why);
    if (r == END_SHUTDOWN) {
      tg_mpsc_tx_drop(n->telemetry);
      n->telemetry = NULL;
      session_drain(n);
      for (int p = 0; p < n->nparts; p++) /* emptied: hand it back at once */
        if (n->parts[p].active && n->parts[p].unacked == 0) {
          int st = nats_leases_state(n->leases, p);
          if (st == LEASE_OWNED || st == LEASE_RELEASING) nats_leases_move(n->leases, p, st, LEASE_DRAINED);
        }
      session_end(n);
      break;
    }
    figure_add(&n->disconnects, 1);
    uint64_t unacked = n->len;
    session_end(n);
    if (r == END_PIPELINE) break;
    log_event(n->log, "⚠️", "nats", 0, "nats_disconnected",
              "NATS: session lost (%s); %" PRIu64 " messages not yet acknowledged will come again; reconnecting", why,
              unacked);
  }
  nats_leases_consumer_done(n->leases);
  registry_detach_all(n->reg, &n->rc);
  if (n->telemetry) tg_mpsc_tx_drop(n->telemetry);
  n->telemetry = NULL;
  tg_watch_rx_drop(n->commits);
  n->commits = NULL;
  return NULL;
}

/* ------------------------------------------------------------ the source */

const char *source_nats_node(const void *state) { return nats_leases_node(((const nats_source *)state)->leases); }

static void nats_free(void *state) {
  nats_source *n = state;
  if (!n) return;
  if (n->telemetry) tg_mpsc_tx_drop(n->telemetry);
  if (n->commits) tg_watch_rx_drop(n->commits); /* the task never ran */
  if (n->arrivals_rx) {
    natsMsg *msg;
    while (tg_mpsc_try_recv(n->arrivals_rx, &msg) == 0) natsMsg_Destroy(msg);
    tg_mpsc_rx_drop(n->arrivals_rx);
  }
  if (n->arrivals_tx) tg_mpsc_tx_drop(n->arrivals_tx);
  nats_leases_free(n->leases);
  nats_servers_free(&n->servers);
  free(n->parts);
  free(n->fifo);
  free(n->device_part);
  free(n->lines_out.line);
  free(n);
  /* Both tasks ended and closed their connections: libnats' threads and
   * what it keeps for the process go now. */
  nats_CloseAndWait(CLOSE_WAIT_MS);
}

static int nats_start(const source_sink *sink, void **state, char *err, size_t errlen) {
  const serve_config *cfg = sink->cfg;
  *state = NULL;
  nats_source *n = calloc(1, sizeof *n);
  if (!n) {
    tg_mpsc_tx_drop(sink->telemetry);
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  *n = (nats_source){.cfg = cfg,
                     .cancel = sink->cancel,
                     .log = sink->log,
                     .reg = sink->reg,
                     .telemetry = sink->telemetry,
                     .db = sink->db,
                     .drain_until = sink->drain_until,
                     .cap = (uint32_t)cfg->nats_inflight,
                     .seqs = {.schema = sink->schema, .reg = sink->reg, .db = sink->db, .limits = sink->limits},
                     .jitter = rng_stream((uint64_t)tg_now(), 11)};
  int r = nats_servers_parse(cfg->nats_urls, &n->servers, err, errlen);
  if (r == 0) r = parts_init(n, err, errlen);
  if (r == 0) {
    n->fifo = calloc(n->cap, sizeof *n->fifo);
    n->lines_out = (broker_lines){.cfg = cfg,
                                  .reg = n->reg,
                                  .rc = &n->rc,
                                  .seqs = &n->seqs,
                                  .telemetry = n->telemetry,
                                  .line = malloc(broker_lines_scratch_bytes(cfg)),
                                  .lines = &n->lines,
                                  .readings = &n->readings,
                                  .bad = n->bad,
                                  .refused = line_refused,
                                  .ctx = n};
    /* Room for a full window of messages, a status per request and the
     * connection's end: the window bounds what the requests bring. */
    tg_mpsc_opts co = {
        .capacity = n->cap + 2 * (size_t)n->nparts + 16, .elem_size = sizeof(natsMsg *), .name = "nats-arrivals"};
    if (!n->fifo || !n->lines_out.line || registry_commits_subscribe(n->reg, &n->commits) != 0 ||
        tg_mpsc_new(&co, &n->arrivals_tx, &n->arrivals_rx) != 0) {
      snprintf(err, errlen, "out of memory");
      r = TG_ENOMEM;
    }
  }
  if (r == 0) {
    nats_leases_opts lo = {.node = cfg->node_name,
                           .replicas = cfg->nats_replicas,
                           .servers = n->servers.urls,
                           .nservers = n->servers.count,
                           .bucket = n->bucket,
                           .partitions = cfg->nats_partitions,
                           .lease_ms = cfg->nats_lease_ms,
                           .cancel = sink->cancel,
                           .log = sink->log,
                           .drain_until = sink->drain_until,
                           .consumer_up = &n->connected};
    r = nats_leases_start(sink->tasks, &lo, &n->leases, err, errlen);
  }
  if (r == 0) {
    tg_spawn_opts opts = {.stack_size = NATS_STACK, .name = "nats"};
    if ((r = tg_joinset_spawn(sink->tasks, nats_task, n, &opts, NULL)) != 0) {
      snprintf(err, errlen, "cannot start the NATS source: %s", tg_strerror(r));
      nats_leases_consumer_done(n->leases); /* the lease task, already running, ends at the shutdown */
      *state = n;                           /* serve frees a failed start's state too, once it joined the tasks */
      return r;
    }
  }
  if (r != 0) {
    nats_free(n);
    return r;
  }
  *state = n;
  return 0;
}

static void nats_figures_get(void *state, source_figures *f) {
  nats_source *n = state;
  *f = (source_figures){0};
  f->first_byte_ns = atomic_load(&n->first_byte_ns);
  f->bytes = figure_get(&n->bytes);
  f->lines = figure_get(&n->lines);
  f->readings = figure_get(&n->readings);
  for (int i = 1; i < SERVE_BAD_REASONS; i++) f->bad[i] = figure_get(&n->bad[i]);
  f->nats.connected = figure_get(&n->connected);
  f->nats.connects = figure_get(&n->connects);
  f->nats.connect_failures = figure_get(&n->connect_failures);
  f->nats.disconnects = figure_get(&n->disconnects);
  f->nats.messages = figure_get(&n->messages);
  f->nats.redelivered = figure_get(&n->redelivered);
  f->nats.requests_lost = figure_get(&n->requests_lost);
  f->nats.acks = figure_get(&n->acks);
  f->nats.inflight = figure_get(&n->inflight_now);
  f->nats.inflight_max = n->cap;
  f->nats.pending = figure_get(&n->pending);
  nats_leases_figures(n->leases, &f->nats.partitions_held, &f->nats.nodes, &f->nats.leases_lost,
                      &f->nats.leases_claimed);
}

static int nats_wanted(const serve_config *cfg) { return cfg->nats_urls != NULL; }

const source_kind source_nats = {
    .name = "nats",
    .wanted = nats_wanted,
    .start = nats_start,
    .figures_get = nats_figures_get,
    .free = nats_free,
};
