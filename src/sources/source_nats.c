/* source_nats.c - the NATS JetStream source: a durable pull consumer,
 * messages to readings, acks after the commit; see source_nats.h.
 *
 * libnats runs its own threads and its calls block, so the task hands
 * every call that may wait (connect, the stream and consumer requests, a
 * fetch, close) to the blocking pool and waits for it; only the acks,
 * which libnats buffers and its flusher writes, are sent from the task.
 * The task is the one user of the connection, so no two calls overlap. */
#include "source_nats.h"

#include "broker_lines.h"
#include "figure.h"
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
  FETCH_MAX = 512,           /* messages asked for at once, at most */
  FETCH_IDLE_MS = 500,       /* a fetch of an empty stream waits this long: the shutdown waits as long */
  FETCH_BUSY_MS = 50,        /* ... and this long while acks wait for commits */
  ACK_WAIT_S = 30,           /* JetStream sends a message again when not acked within this */
  SUBJECT_MAX = 256,
  CLOSE_WAIT_MS = 5000, /* libnats' own threads end within this once every connection is closed */
};

/* A message fetched and not yet acknowledged. */
typedef struct inflight {
  natsMsg *msg;
  uint32_t device; /* its readings' device; 0: nothing to wait for */
  uint64_t seq;    /* the highest seq among its readings */
} inflight;

/* Invariant: fifo[head .. head+len) (mod cap) are the messages of the
 * current session in the order they were fetched, len <= cap; nc, js and
 * sub are all set during a session and all NULL between sessions. */
typedef struct nats_source {
  const serve_config *cfg;
  tg_cancel *cancel;
  demo_log *log;
  registry *reg;
  tg_mpsc_tx *telemetry; /* dropped at the shutdown */
  const _Atomic int64_t *drain_until;
  char *servers_text;   /* the copy servers point into */
  const char **servers; /* from --nats */
  int nservers;
  char filter[SUBJECT_MAX]; /* <subject>.> */
  size_t prefix_len;        /* of "<subject>." */
  registry_conn rc;         /* the current session's: a new one each session */
  tg_watch_rx *commits;     /* changes after every commit: the FIFO's head is looked at then */
  seq_check seqs;
  broker_lines lines_out;
  const char *subject; /* of the message whose lines are sent on: what a refusal is logged with */
  inflight *fifo;
  uint32_t cap, head, len;
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  uint64_t resent_upto; /* stream sequences up to this were delivered before this session's reset */
  rng jitter;
  log_gate fail_gate, bad_gate;
  _Atomic int64_t first_byte_ns;
  figure connected, connects, connect_failures, disconnects, messages, redelivered, acks, inflight_now, pending;
  figure bytes, lines, readings;
  figure bad[SERVE_BAD_REASONS];
} nats_source;

/* ------------------------------------------------------------ settings */

/* --nats: comma-separated URLs, each nats://HOST:PORT (or tls://). */
static int parse_servers(nats_source *n, const char *text, char *err, size_t errlen) {
  n->servers_text = strdup(text);
  size_t count = 1;
  for (const char *p = text; *p; p++) count += *p == ',';
  n->servers = calloc(count, sizeof *n->servers);
  if (!n->servers_text || !n->servers) {
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  for (char *u = n->servers_text, *next; u; u = next) {
    next = strchr(u, ',');
    if (next) *next++ = '\0';
    if ((strncmp(u, "nats://", 7) != 0 && strncmp(u, "tls://", 6) != 0) || !strchr(u, ':')) {
      snprintf(err, errlen, "--nats wants nats://HOST:PORT[,nats://HOST:PORT...], got '%s'", u);
      return -EINVAL;
    }
    n->servers[n->nservers++] = u;
  }
  return 0;
}

/* ------------------------------------------------------------ NATS calls */

/* A libnats failure in one line: its status, the JetStream error code
 * when there is one, and the library's own words. */
static void nats_why(char *why, size_t whylen, const char *what, natsStatus s, jsErrCode jerr) {
  const char *text = nats_GetLastError(NULL), *status = natsStatus_GetText(s);
  size_t used = (size_t)snprintf(why, whylen, "%s: %s", what, status);
  if (jerr && used < whylen) used += (size_t)snprintf(why + used, whylen - used, " (JetStream error %d)", (int)jerr);
  if (text && *text && strcmp(text, status) != 0 && used < whylen) snprintf(why + used, whylen - used, ": %s", text);
}

/* At the end of each job on the blocking pool: libnats (its error stack)
 * and the OpenSSL under it (its random generator) keep per-thread state
 * until the thread exits, and a pool thread lives as long as the process. */
static int pool_thread_release(int r) {
  nats_ReleaseThreadMemory();
  OPENSSL_thread_stop();
  return r;
}

static void on_lost(natsConnection *nc, void *closure) {
  (void)nc;
  nats_source *n = closure;
  atomic_store_explicit(&n->connected, 0, memory_order_relaxed);
}

typedef struct open_args {
  nats_source *n;
  char why[300];
} open_args;

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
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char *subjects[] = {n->filter};
  sc.Name = n->cfg->nats_stream;
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.Retention = js_LimitsPolicy;
  if ((s = js_AddStream(&si, n->js, &sc, NULL, &jerr)) != NATS_OK) {
    nats_why(why, whylen, "cannot create the stream", s, jerr);
    return s;
  }
  jsStreamInfo_Destroy(si);
  return NATS_OK;
}

/* The consumer, reset to its ack floor (source_nats.h says why): what it
 * delivered and was not acknowledged comes again first, in stream order. */
static natsStatus consumer_reset(nats_source *n, char *why, size_t whylen) {
  const char *stream = n->cfg->nats_stream, *name = n->cfg->nats_consumer;
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  uint64_t floor = 0;
  natsStatus s = js_GetConsumerInfo(&ci, n->js, stream, name, NULL, &jerr);
  if (s == NATS_OK) {
    floor = ci->AckFloor.Stream;
    n->resent_upto = ci->Delivered.Stream;
    jsConsumerInfo_Destroy(ci);
    if ((s = js_DeleteConsumer(n->js, stream, name, NULL, &jerr)) != NATS_OK) {
      nats_why(why, whylen, "cannot reset the consumer", s, jerr);
      return s;
    }
  } else if (s != NATS_NOT_FOUND) {
    nats_why(why, whylen, "cannot look up the consumer", s, jerr);
    return s;
  }
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = name;
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = (int64_t)ACK_WAIT_S * 1000000000;
  cc.MaxAckPending = n->cap;
  cc.MaxDeliver = -1;
  cc.FilterSubject = n->filter;
  cc.DeliverPolicy = floor ? js_DeliverByStartSequence : js_DeliverAll;
  cc.OptStartSeq = floor ? floor + 1 : 0;
  if ((s = js_AddConsumer(&ci, n->js, stream, &cc, NULL, &jerr)) != NATS_OK) {
    nats_why(why, whylen, "cannot create the consumer", s, jerr);
    return s;
  }
  jsConsumerInfo_Destroy(ci);
  return NATS_OK;
}

/* On the blocking pool: connects, makes sure of the stream, resets the
 * consumer and binds a pull subscription to it. */
static int open_session(void *arg) {
  open_args *a = arg;
  nats_source *n = a->n;
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetServers(o, n->servers, n->nservers);
  if (s == NATS_OK) s = natsOptions_SetName(o, "telegate");
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, false); /* the task reconnects, and resets the consumer */
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, CONNECT_TIMEOUT_MS);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(o, PING_INTERVAL_MS);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(o, 2);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_lost, n);
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
    return -ENOMEM;
  }
  if (stream_ensure(n, a->why, sizeof a->why) != NATS_OK) return -EPROTO;
  if (consumer_reset(n, a->why, sizeof a->why) != NATS_OK) return -EPROTO;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = n->cfg->nats_stream;
  so.Consumer = n->cfg->nats_consumer;
  so.ManualAck = true;
  jsErrCode jerr = 0;
  if ((s = js_PullSubscribe(&n->sub, n->js, n->filter, n->cfg->nats_consumer, NULL, &so, &jerr)) != NATS_OK) {
    n->sub = NULL;
    nats_why(a->why, sizeof a->why, "cannot bind to the consumer", s, jerr);
    return -EPROTO;
  }
  return 0;
}

typedef struct fetch_args {
  nats_source *n;
  int batch;
  int64_t wait_ms;
  natsMsgList list;
  natsStatus status;
  jsErrCode jerr;
  char why[300];
} fetch_args;

/* On the blocking pool: up to batch messages, those already in the stream
 * at once, else waiting at most wait_ms for one. */
static int fetch_batch(void *arg) {
  fetch_args *a = arg;
  a->status = natsSubscription_Fetch(&a->list, a->n->sub, a->batch, a->wait_ms, &a->jerr);
  if (a->status == NATS_OK || a->status == NATS_TIMEOUT) return 0;
  nats_why(a->why, sizeof a->why, "fetch failed", a->status, a->jerr);
  return -EIO;
}

/* On the blocking pool: sends the acks still buffered, then closes. */
static int close_session(void *arg) {
  nats_source *n = arg;
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
static int fetch_call(void *arg) { return pool_thread_release(fetch_batch(arg)); }
static int close_call(void *arg) { return pool_thread_release(close_session(arg)); }

/* ------------------------------------------------------------ acks */

static void fifo_push(nats_source *n, inflight e) {
  n->fifo[(n->head + n->len) % n->cap] = e;
  n->len++;
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
    if (natsMsg_Ack(e->msg, NULL) != NATS_OK) r = -EPIPE; /* not acked: it comes again, and is a resend */
    natsMsg_Destroy(e->msg);
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

/* A fetched message: its lines to readings, then its place in the FIFO,
 * which owns it from then on. Returns 0, or TG_ECLOSED when the pipeline
 * closed (the message is then destroyed unacknowledged). */
static int on_message(nats_source *n, natsMsg *msg) {
  figure_add(&n->messages, 1);
  if (atomic_load_explicit(&n->first_byte_ns, memory_order_relaxed) == 0)
    atomic_store_explicit(&n->first_byte_ns, tg_now(), memory_order_relaxed);
  jsMsgMetaData *meta = NULL;
  if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
    if (meta->NumDelivered > 1 || meta->Sequence.Stream <= n->resent_upto) figure_add(&n->redelivered, 1);
    atomic_store_explicit(&n->pending, meta->NumPending, memory_order_relaxed);
    jsMsgMetaData_Destroy(meta);
  }
  const char *subject = natsMsg_GetSubject(msg);
  const char *data = natsMsg_GetData(msg);
  int len = natsMsg_GetDataLength(msg);
  figure_add(&n->bytes, (uint64_t)len);
  inflight e = {.msg = msg};
  size_t id_len = strlen(subject) > n->prefix_len ? strlen(subject) - n->prefix_len : 0;
  if (!broker_lines_device_ok(subject + n->prefix_len, id_len)) {
    figure_add(&n->lines, 1);
    figure_add(&n->bad[PROTOCOL_BAD_DEVICE_ID], 1);
    log_refused(n, subject, 1, PROTOCOL_BAD_DEVICE_ID);
  } else {
    char id[PROTOCOL_DEVICE_ID_MAX + 1];
    memcpy(id, subject + n->prefix_len, id_len);
    id[id_len] = '\0';
    n->subject = subject;
    int r = broker_lines_send(&n->lines_out, id, data ? data : "", (size_t)len, &e.device, &e.seq);
    n->subject = NULL;
    if (r != 0) {
      natsMsg_Destroy(msg);
      return r;
    }
  }
  fifo_push(n, e);
  return 0;
}

/* ------------------------------------------------------------ sessions */

/* How a session ends, besides a failed call's code. */
enum { END_SHUTDOWN = 1, END_PIPELINE = 2 };

/* The session until it fails or the shutdown: fetches while the FIFO has
 * room, acknowledges what is committed. Returns why it ended, with a
 * one-line reason in why for a failure. */
static int session_run(nats_source *n, char *why, size_t whylen) {
  int drained = 0; /* the last fetch found the stream empty */
  for (;;) {
    if (acks_pass(n) != 0 || natsConnection_IsClosed(n->nc)) {
      snprintf(why, whylen, "the connection closed");
      return -ECONNRESET;
    }
    if (tg_cancel_fired(n->cancel)) return END_SHUTDOWN;
    if (n->len == n->cap || (n->len && drained)) {
      /* Nothing to fetch, or nothing new: wait for a commit to ack. */
      tg_case cs[2] = {tg_cancel_case(n->cancel), tg_watch_changed_case(n->commits)};
      int w = tg_select(cs, 2, tg_deadline_in(TG_MS(FETCH_IDLE_MS)));
      if (w == 0) return END_SHUTDOWN;
      if (w == 1 && cs[1].result != 0) return END_PIPELINE; /* the registry's watch closed */
      drained = 0;
      continue;
    }
    uint32_t room = n->cap - n->len;
    fetch_args fa = {.n = n, .batch = room < FETCH_MAX ? (int)room : FETCH_MAX};
    fa.wait_ms = n->len ? FETCH_BUSY_MS : FETCH_IDLE_MS;
    int r = tg_blocking_run(fetch_call, &fa);
    if (r != 0) {
      natsMsgList_Destroy(&fa.list);
      snprintf(why, whylen, "%s", fa.why);
      return r;
    }
    drained = fa.list.Count == 0;
    if (drained) atomic_store_explicit(&n->pending, 0, memory_order_relaxed);
    for (int i = 0; i < fa.list.Count; i++) {
      natsMsg *msg = fa.list.Msgs[i];
      fa.list.Msgs[i] = NULL; /* the FIFO's now, or destroyed */
      if (on_message(n, msg) != 0) {
        natsMsgList_Destroy(&fa.list);
        return END_PIPELINE;
      }
    }
    natsMsgList_Destroy(&fa.list);
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
 * not acknowledged comes again in the next session. */
static void session_end(nats_source *n) {
  registry_detach_all(n->reg, &n->rc);
  n->rc = (registry_conn){0};
  for (; n->len; n->len--, n->head = (n->head + 1) % n->cap) natsMsg_Destroy(n->fifo[n->head].msg);
  n->head = 0;
  if (n->nc) tg_blocking_run(close_call, n);
  atomic_store_explicit(&n->inflight_now, 0, memory_order_relaxed);
  atomic_store_explicit(&n->connected, 0, memory_order_relaxed);
}

static void *nats_task(void *arg) {
  nats_source *n = arg;
  int backoff = BACKOFF_MIN_MS;
  while (!tg_cancel_fired(n->cancel)) {
    open_args oa = {.n = n};
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
    char url[200] = "?";
    natsConnection_GetConnectedUrl(n->nc, url, sizeof url);
    log_event(n->log, "📡", "nats", 0, "nats_connected",
              "NATS: connected to %s; consuming %s of stream %s through durable consumer %s, reset to its ack floor "
              "(what was not acknowledged comes again first, up to stream sequence %" PRIu64
              "); at most %u messages unacknowledged",
              url, n->filter, n->cfg->nats_stream, n->cfg->nats_consumer, n->resent_upto, n->cap);
    char why[300] = "";
    r = session_run(n, why, sizeof why);
    if (r == END_SHUTDOWN) {
      tg_mpsc_tx_drop(n->telemetry);
      n->telemetry = NULL;
      session_drain(n);
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
  registry_detach_all(n->reg, &n->rc);
  if (n->telemetry) tg_mpsc_tx_drop(n->telemetry);
  n->telemetry = NULL;
  tg_watch_rx_drop(n->commits);
  n->commits = NULL;
  return NULL;
}

/* ------------------------------------------------------------ the source */

static void nats_free(void *state) {
  nats_source *n = state;
  if (!n) return;
  if (n->telemetry) tg_mpsc_tx_drop(n->telemetry);
  if (n->commits) tg_watch_rx_drop(n->commits); /* the task never ran */
  free(n->servers);
  free(n->servers_text);
  free(n->fifo);
  free(n->lines_out.line);
  free(n);
  /* The task ended and closed its connection: libnats' threads and what
   * it keeps for the process (its OpenSSL state among it) go now. */
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
                     .drain_until = sink->drain_until,
                     .cap = (uint32_t)cfg->nats_inflight,
                     .seqs = {.reg = sink->reg, .db = sink->db, .limits = sink->limits},
                     .jitter = rng_stream((uint64_t)tg_now(), 11)};
  int r = parse_servers(n, cfg->nats_urls, err, errlen);
  if (r == 0) {
    int k = snprintf(n->filter, sizeof n->filter, "%s.>", cfg->nats_subject);
    if (k <= 2 || (size_t)k >= sizeof n->filter || strpbrk(cfg->nats_subject, "*> \t")) {
      snprintf(err, errlen, "--nats-subject wants a subject prefix without wildcards, got '%s'", cfg->nats_subject);
      r = -EINVAL;
    }
    n->prefix_len = (size_t)k - 1; /* "<subject>." */
  }
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
    if (!n->fifo || !n->lines_out.line || registry_commits_subscribe(n->reg, &n->commits) != 0) {
      snprintf(err, errlen, "out of memory");
      r = TG_ENOMEM;
    }
  }
  if (r == 0) {
    tg_spawn_opts opts = {.stack_size = NATS_STACK, .name = "nats"};
    if ((r = tg_joinset_spawn(sink->tasks, nats_task, n, &opts, NULL)) != 0)
      snprintf(err, errlen, "cannot start the NATS source: %s", tg_strerror(r));
  }
  if (r != 0) {
    nats_free(n);
    return r;
  }
  *state = n;
  return 0;
}

static void nats_figures_get(void *state, source_figures *f) {
  const nats_source *n = state;
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
  f->nats.acks = figure_get(&n->acks);
  f->nats.inflight = figure_get(&n->inflight_now);
  f->nats.inflight_max = n->cap;
  f->nats.pending = figure_get(&n->pending);
}

static int nats_wanted(const serve_config *cfg) { return cfg->nats_urls != NULL; }

const source_kind source_nats = {
    .name = "nats",
    .wanted = nats_wanted,
    .start = nats_start,
    .figures_get = nats_figures_get,
    .free = nats_free,
};
