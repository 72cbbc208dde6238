/* source_tcp.c - the device port: the TCP source, its acceptor and its
 * connection tasks; see source_tcp.h.
 *
 * A note on views. tg_tcp_recv points into the socket's buffer, and the
 * socket goes on reading into the free end of that buffer while the task
 * waits (for channel space, a permit). Before a read, libtg slides the
 * unconsumed bytes to the buffer's start when its tail is full and some
 * bytes were consumed; a view held across a wait would then point at
 * moved bytes. So a round consumes nothing until it is done: the buffer is
 * empty when it begins, recv shows bytes from offset 0, the round parses
 * them (waiting as it must), asks again without waiting for what arrived
 * meanwhile (appended after the view, which stays put while nothing is
 * consumed), and only then consumes everything, which leaves the buffer
 * empty again. The partial last line is copied aside (the carry) and
 * completed in the next round.
 *
 * Acks. When the registry says acks are owed to a connection whose device
 * asked for them (registry.h), its task writes them - at most once every
 * --ack-interval-ms, so that a device whose readings land in every batch
 * gets one ack per interval rather than one per commit, its newest seq
 * standing for the rest - without waiting (tg_tcp_try_write): if the
 * previous write is still going out, the
 * formatted lines stay in the connection's ack buffer and are tried again
 * on the next wake-up: 10 ms later at most, doubling to 1 s while the
 * device reads nothing, so a connection that never reads costs one
 * wake-up a second, not a hundred. Meanwhile the task goes on
 * reading, and the acks owed pile up in the registry as one per device,
 * each with its newest seq: a device that reads its acks slowly slows
 * down nothing but its acks.
 *
 * Who may send what (docs/security.md). With credentials, a connection
 * sends readings only for the ids the credential of its hello's token
 * covers; anything else is refused as not_allowed before the id is even
 * interned, so a connection without a token can neither take a device
 * over nor fill the registry. A reload of the credentials is seen by the
 * generation number at the next reading: the connection takes the new
 * set and its credential of the same name and token, or none, and its
 * cached ids are checked again. Each connection may send for at most
 * max_ids_per_connection distinct ids, and each reading's seq must be
 * within the seq window of what the registry knows of its device (the
 * stored mark is looked up, through tg_blocking_run, at most once per
 * device and run, and only for a seq above the window). */
#include "source_tcp.h"

#include "credentials.h"
#include "figure.h"
#include "protocol.h"
#include "seq_check.h"
#include "stream.h"
#include "tcp_server.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
  OUTBOX_CAPACITY = 8, /* health requests queued for one connection */
  MAX_PENDING = 16,    /* health requests written and not yet answered */
  OUT_CAP = 8192,      /* error lines and requests waiting to be written */
  CACHE_MAX = 8192,    /* device ids one connection remembers */
  ACKS_PER_WRITE = 64, /* ack lines formatted at once */
  ACK_LINE_MAX = 96,
  CONN_STACK = 64 * 1024,
  ACCEPTOR_STACK = 128 * 1024,
};

/* Invariant: the figures only grow; `server` is set before `ready` is
 * sent and stays until ingest_free. */
typedef struct ingest {
  const serve_config *cfg;
  const serve_limits *limits; /* cfg's limits, as a reload leaves them */
  tg_cancel *cancel;
  demo_log *log;
  registry *reg;
  tg_mpsc_tx *telemetry;              /* the acceptor's; each connection gets a clone */
  credentials_store *creds;           /* NULL: no authentication */
  seq_check seqs;                     /* readings' seqs, numbered or judged */
  const _Atomic int64_t *drain_until; /* when the token fired + drain_ms */
  tg_semaphore *bandwidth;            /* connections read at once */
  tls_context *tls;                   /* NULL: plain TCP */
  tcp_server *server;
  tg_oneshot_tx *ready;          /* the acceptor tells bind's result here (int) */
  int port;                      /* bound */
  _Atomic int64_t first_byte_ns; /* tg_now() when the first bytes were read; 0: none yet */
  pthread_mutex_t gate_lock;     /* the gates: connections run on every worker */
  log_gate open_gate, close_gate, accept_gate, auth_gate, tls_gate;
  /* figures, added by every connection; the connection counts are the server's */
  figure closed_errors, write_timeouts;
  figure bytes, lines, readings;
  figure bad[SERVE_BAD_REASONS];
  figure error_lines_sent, error_lines_suppressed;
  figure health_requests, health_unmatched;
  figure hellos, acks_sent;
  figure authenticated, line_rate_waits;
  figure tls_handshakes, tls_failures;
  figure hello_timeouts;
} ingest;

/* How a round ends, besides TG_EOF and socket errors. */
enum { GO_ON = 0, STOP_ERRORS = 1, STOP_PIPELINE = 2, STOP_WRITE = 3, STOP_NO_HELLO = 4 };

/* An id this connection sent for, and the credentials generation it was
 * last allowed under. */
typedef struct cache_slot {
  uint64_t hash;
  const device_entry *e; /* NULL: empty */
  uint64_t allowed_gen;
} cache_slot;

typedef struct pending {
  tg_oneshot_tx *reply;
  uint64_t id;
} pending;

typedef struct conn {
  ingest *in;
  const serve_config *cfg;
  uint64_t id; /* 1, 2, 3 ... in accept order */
  char peer[64];
  stream io;             /* over the tcp_server's socket: plain or TLS */
  tg_mpsc_tx *telemetry; /* owned clone */
  tg_mpsc_rx *outbox;    /* health requests; the sender is rc.outbox */
  registry_conn rc;
  tg_notify *acks_ready; /* rc.acks_ready once the device asked for acks */
  char *ack_buf;         /* ACKS_PER_WRITE lines not yet written, once asked */
  size_t ack_len;
  int ack_lines;
  int ack_retry_ms;     /* while ack_len: the next try's delay */
  int acks_due;         /* the registry said acks are owed, not all written yet */
  int64_t acks_next_ns; /* the earliest time for the next acks (--ack-interval-ms) */
  protocol_hello wants; /* what the device's hellos asked for */
  cache_slot *cache;
  uint32_t nslots, used;
  uint32_t ids;                            /* distinct ids sent for, at most max_ids_per_connection */
  credentials *set;                        /* the set cred is in, held; NULL: no valid token yet */
  const credential *cred;                  /* what this connection may send for; NULL: nothing (with auth) */
  uint64_t set_gen;                        /* the store's generation set came from */
  int64_t hello_by;                        /* with auth, until a hello's token matched: closed at this time */
  char cred_name[CREDENTIAL_NAME_MAX + 1]; /* the credential's, kept to find it again after a reload */
  uint8_t cred_hash[CREDENTIAL_HASH_SIZE];
  double line_tokens; /* lines that may be read now, over lines_per_s */
  int64_t line_tokens_ns;
  char *carry; /* a partial line, max_line_bytes at most */
  size_t carry_len;
  int skipping; /* inside an oversized line, up to its '\n' */
  uint64_t line_no;
  int errors_in_row;
  double tokens; /* error lines that may go out now */
  int64_t tokens_ns;
  char out[OUT_CAP];
  size_t out_len;
  pending pend[MAX_PENDING];
  int npend;
  int draining;
  int mute; /* writing failed: the device does not listen any more */
  /* figures, added to the shared ones after every round */
  uint64_t bytes, lines, readings, bad[SERVE_BAD_REASONS], errors_sent, errors_held, requests, unmatched, hellos;
  uint64_t authenticated;
  uint64_t total_readings, total_bad;
} conn;

/* log_gate_pass for gates that tasks on several workers share. */
static int gate_pass(ingest *in, log_gate *g, uint64_t *held) {
  pthread_mutex_lock(&in->gate_lock);
  int pass = log_gate_pass(g, tg_now(), TG_MS(1000), held);
  pthread_mutex_unlock(&in->gate_lock);
  return pass;
}

/* The error line of a bad-input reason, with the line number; returns
 * its length or -ENOSPC. */
static int format_error(char *buf, size_t cap, int reason, uint64_t line_no) {
  if (reason > 0 && reason < PROTOCOL_REASON_COUNT) return protocol_format_error(buf, cap, reason, line_no);
  int n = snprintf(buf, cap, "{\"type\":\"error\",\"reason\":\"%s\",\"line\":%" PRIu64 "}\n",
                   serve_bad_reason_name(reason), line_no);
  return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

/* ------------------------------------------------------------ figures */

static void flush_figures(conn *c) {
  ingest *in = c->in;
  if (c->bytes) figure_add_shared(&in->bytes, c->bytes);
  if (c->lines) figure_add_shared(&in->lines, c->lines);
  if (c->readings) figure_add_shared(&in->readings, c->readings);
  for (int i = 1; i < SERVE_BAD_REASONS; i++)
    if (c->bad[i]) figure_add_shared(&in->bad[i], c->bad[i]);
  if (c->errors_sent) figure_add_shared(&in->error_lines_sent, c->errors_sent);
  if (c->errors_held) figure_add_shared(&in->error_lines_suppressed, c->errors_held);
  if (c->requests) figure_add_shared(&in->health_requests, c->requests);
  if (c->unmatched) figure_add_shared(&in->health_unmatched, c->unmatched);
  if (c->hellos) figure_add_shared(&in->hellos, c->hellos);
  if (c->authenticated) figure_add_shared(&in->authenticated, c->authenticated);
  c->total_readings += c->readings;
  for (int i = 1; i < SERVE_BAD_REASONS; i++) c->total_bad += c->bad[i];
  c->bytes = c->lines = c->readings = c->errors_sent = c->errors_held = c->requests = c->unmatched = c->hellos = 0;
  c->authenticated = 0;
  memset(c->bad, 0, sizeof c->bad);
}

/* ------------------------------------------------------------ writing */

static void out_append(conn *c, const char *s, size_t n) {
  memcpy(c->out + c->out_len, s, n);
  c->out_len += n;
}

/* Writes what is queued for the device. Never called with a permit held.
 * Returns GO_ON, or STOP_WRITE when the device did not take it in time.
 * A device that closed its side (EPIPE, reset) is not written to again,
 * but what it sent before is still read. */
static int out_flush(conn *c, int64_t deadline) {
  if (c->out_len == 0) return GO_ON;
  int r = c->mute ? 0 : stream_write_dl(&c->io, c->out, c->out_len, deadline);
  c->out_len = 0;
  if (r == TG_ETIMEDOUT) {
    figure_add_shared(&c->in->write_timeouts, 1);
    return STOP_WRITE;
  }
  if (r != 0) c->mute = 1;
  return GO_ON;
}

static int64_t write_deadline(conn *c) {
  int64_t d = tg_deadline_in(TG_MS(SERVE_LIMIT(c->in->limits, write_timeout_ms)));
  if (c->draining) {
    int64_t until = atomic_load(c->in->drain_until);
    if (until < d) d = until;
  }
  return d;
}

/* ------------------------------------------------------------ lines */

/* Counts a bad line and answers it, within the rate limit. Returns GO_ON
 * or STOP_ERRORS once error_limit bad lines came in a row. */
static int bad(conn *c, int reason) {
  const serve_limits *lim = c->in->limits;
  c->bad[reason]++;
  c->errors_in_row++;
  int64_t now = tg_now();
  double rate = SERVE_LIMIT(lim, error_lines_per_s);
  c->tokens += (double)(now - c->tokens_ns) / 1e9 * rate;
  c->tokens_ns = now;
  if (c->tokens > (rate < 1 ? 1 : rate)) c->tokens = rate < 1 ? 1 : rate;
  char line[160];
  int n = format_error(line, sizeof line, reason, c->line_no);
  if (c->tokens >= 1 && n > 0 && c->out_len + (size_t)n <= OUT_CAP) {
    c->tokens -= 1;
    out_append(c, line, (size_t)n);
    c->errors_sent++;
  } else {
    c->errors_held++;
  }
  int limit = SERVE_LIMIT(lim, error_limit);
  if (limit > 0 && c->errors_in_row >= limit) return STOP_ERRORS;
  return GO_ON;
}

/* Takes the current credentials set if a reload swapped it: the
 * credential of the same name and token in it, or none. */
static void credentials_refresh(conn *c) {
  credentials_store *st = c->in->creds;
  if (!c->set || credentials_generation(st) == c->set_gen) return;
  uint64_t gen = credentials_generation(st);
  credentials *fresh = credentials_current(st);
  const credential *same = credentials_named(fresh, c->cred_name);
  if (same && memcmp(same->hash, c->cred_hash, CREDENTIAL_HASH_SIZE) != 0) same = NULL;
  credentials_unref(c->set);
  c->set = fresh;
  c->cred = same;
  c->set_gen = gen;
}

/* Whether this connection may send for id now. */
static int allowed(conn *c, const protocol_device_id *id) {
  if (!c->in->creds) return 1;
  return c->cred && credential_allows(c->cred, id->text, id->len);
}

/* Room for one more id in the cache: it grows to hold every id the
 * connection may send for; without a per-connection limit it starts over
 * past CACHE_MAX. Returns 0 or TG_ENOMEM. */
static int cache_room(conn *c) {
  if ((c->used + 1) * 2 <= c->nslots) return 0;
  uint32_t n = c->nslots * 2, limit = CACHE_MAX;
  int per_connection = SERVE_LIMIT(c->in->limits, max_ids_per_connection);
  while (per_connection > 0 && (uint64_t)limit < 2 * (uint64_t)per_connection) limit *= 2;
  cache_slot *grown = n <= limit ? calloc(n, sizeof *grown) : NULL;
  if (grown) { /* rehash */
    for (uint32_t j = 0; j < c->nslots; j++) {
      if (!c->cache[j].e) continue;
      uint32_t k = (uint32_t)c->cache[j].hash & (n - 1);
      while (grown[k].e) k = (k + 1) & (n - 1);
      grown[k] = c->cache[j];
    }
    free(c->cache);
    c->cache = grown;
    c->nslots = n;
    return 0;
  }
  if (n <= limit) return TG_ENOMEM;
  memset(c->cache, 0, c->nslots * sizeof *c->cache); /* a connection of very many devices: start over */
  c->used = 0;
  return 0;
}

/* The registry entry of a device id this connection may send for,
 * through its cache. Returns 0 with *out set, or the bad-input reason:
 * SERVE_BAD_NOT_ALLOWED, SERVE_BAD_TOO_MANY_IDS, SERVE_BAD_TOO_MANY_DEVICES. */
static int lookup(conn *c, const protocol_device_id *id, const device_entry **out) {
  uint64_t gen = c->set_gen;
  uint64_t h = registry_hash(id->text, id->len);
  uint32_t mask = c->nslots - 1, i = (uint32_t)h & mask;
  for (;; i = (i + 1) & mask) {
    cache_slot *s = &c->cache[i];
    if (!s->e) break;
    if (s->hash == h && s->e->len == id->len && memcmp(s->e->id, id->text, id->len) == 0) {
      if (s->allowed_gen != gen) { /* the credentials were reloaded since */
        if (!allowed(c, id)) return SERVE_BAD_NOT_ALLOWED;
        s->allowed_gen = gen;
      }
      *out = s->e;
      return 0;
    }
  }
  if (!allowed(c, id)) return SERVE_BAD_NOT_ALLOWED;
  int limit = SERVE_LIMIT(c->in->limits, max_ids_per_connection);
  if (limit > 0 && c->ids >= (uint32_t)limit) return SERVE_BAD_TOO_MANY_IDS;
  uint32_t index;
  int r = registry_intern_for(c->in->reg, c->cred, SERVE_LIMIT(c->in->limits, max_ids_per_credential), id, h, &index);
  if (r != 0) return r;
  const device_entry *e = registry_entry(c->in->reg, index);
  c->ids++;
  *out = e;
  if (cache_room(c) != 0) return 0; /* found, just not cached */
  mask = c->nslots - 1;
  for (i = (uint32_t)h & mask; c->cache[i].e; i = (i + 1) & mask) {
  }
  c->cache[i] = (cache_slot){h, e, gen};
  c->used++;
  return 0;
}

static void on_health_reply(conn *c, const protocol_health_reply *h) {
  for (int i = 0; i < c->npend; i++) {
    if (c->pend[i].id != h->id) continue;
    device_status st = {
        .battery = h->battery, .uptime_ms = (int64_t)(h->uptime_s * 1000), .readings = c->total_readings + c->readings};
    if (tg_oneshot_send(c->pend[i].reply, &st) != 0) c->unmatched++; /* the checker gave up: late */
    c->pend[i] = c->pend[--c->npend];
    return;
  }
  c->unmatched++;
}

/* ------------------------------------------------------------ acks */

/* Writes the acks owed, as far as the socket takes them without waiting
 * (see the note on acks). */
static void send_acks(conn *c) {
  for (;;) {
    if (c->ack_len == 0) {
      registry_ack due[ACKS_PER_WRITE];
      int n = registry_take_acks(c->in->reg, &c->rc, due, ACKS_PER_WRITE);
      if (n == 0 || c->mute) { /* all written: the next ones after the interval */
        c->acks_due = 0;
        c->acks_next_ns = tg_now() + TG_MS(SERVE_LIMIT(c->in->limits, ack_interval_ms));
        return;
      }
      for (int i = 0; i < n; i++)
        c->ack_len += (size_t)protocol_format_ack(c->ack_buf + c->ack_len, ACK_LINE_MAX, due[i].id, due[i].seq);
      c->ack_lines = n;
    }
    int r = stream_try_write(&c->io, c->ack_buf, c->ack_len);
    if (r == TG_EAGAIN) {
      int next = c->ack_retry_ms * 2;
      c->ack_retry_ms = next < 10 ? 10 : next > 1000 ? 1000 : next;
      return;
    }
    c->ack_retry_ms = 0;
    if (r == 0) figure_add_shared(&c->in->acks_sent, (uint64_t)c->ack_lines);
    if (r != 0) c->mute = 1;
    c->ack_len = 0;
  }
}

/* A hello: what the device asked for from now on, and the answer saying
 * what the gateway will do. Returns GO_ON. */
static int on_hello(conn *c, const protocol_hello *h) {
  c->hellos++;
  if (h->token_len && c->in->creds) { /* without authentication a token is ignored */
    credentials_store *st = c->in->creds;
    uint64_t gen = credentials_generation(st);
    credentials *set = credentials_current(st);
    const credential *cred = credentials_find(set, h->token, h->token_len);
    uint64_t held;
    if (!cred) {
      credentials_unref(set);
      if (gate_pass(c->in, &c->in->auth_gate, &held))
        log_event(c->in->log, "🚫", "ingest", 0, "unknown_token",
                  "Connection #%" PRIu64 " from %s: a hello whose token matches no credential%s", c->id, c->peer,
                  log_held_note(held).s);
      return bad(c, SERVE_BAD_UNKNOWN_TOKEN); /* nothing of this hello applies */
    }
    credentials_unref(c->set);
    c->set = set;
    c->cred = cred;
    c->set_gen = gen;
    memcpy(c->cred_name, cred->name, sizeof c->cred_name);
    memcpy(c->cred_hash, cred->hash, sizeof c->cred_hash);
    for (uint32_t i = 0; i < c->nslots; i++) c->cache[i].allowed_gen = 0; /* checked against the new credential */
    c->authenticated++;
    c->hello_by = 0;
    if (gate_pass(c->in, &c->in->auth_gate, &held))
      log_event(c->in->log, "🔑", "ingest", 0, "authenticated", "Connection #%" PRIu64 " from %s speaks as %s%s", c->id,
                c->peer, cred->name, log_held_note(held).s);
  }
  if (h->acks && !c->acks_ready && !c->draining) {
    c->ack_buf = malloc(ACKS_PER_WRITE * ACK_LINE_MAX);
    if (!c->ack_buf || tg_notify_new(&c->acks_ready, "acks") != 0) { /* no acks, and the answer says so */
      free(c->ack_buf);
      c->ack_buf = NULL;
    }
  }
  c->wants.acks = c->acks_ready != NULL;
  c->wants.health |= h->health;
  registry_hello(c->in->reg, &c->rc, c->wants.health, c->acks_ready);
  char line[64];
  int n = protocol_format_hello(line, sizeof line, &c->wants);
  if ((h->acks || h->health || h->token_len) && n > 0 && c->out_len + (size_t)n <= OUT_CAP)
    out_append(c, line, (size_t)n);
  return GO_ON;
}

/* One complete line (without its '\n'). Returns GO_ON, STOP_ERRORS or
 * STOP_PIPELINE. */
static int on_line(conn *c, const char *p, size_t n) {
  c->line_no++;
  c->lines++;
  protocol_msg m;
  protocol_opts o = {.max_len = (size_t)c->cfg->max_line_bytes,
                     .now_ms = -1,
                     .device_key = c->cfg->json_device_key,
                     .time_key = c->cfg->json_time_key};
  int r = protocol_parse(p, n, &o, &m, NULL);
  if (r < 0) return bad(c, -r);
  if (m.kind == PROTOCOL_BLANK) return GO_ON;
  c->errors_in_row = 0;
  if (m.kind == PROTOCOL_HEALTH) {
    on_health_reply(c, &m.health);
    return GO_ON;
  }
  if (m.kind == PROTOCOL_HELLO) return on_hello(c, &m.hello);
  if (c->set) credentials_refresh(c);
  const device_entry *e;
  reading rd;
  if ((r = seq_check_pack(&c->in->seqs, &m.point, &rd)) != 0) return bad(c, r);
  if ((r = lookup(c, &m.device, &e)) != 0) {
    reading_free(&rd);
    return bad(c, r);
  }
  if ((r = seq_check_reading(&c->in->seqs, e, &rd)) != 0) return bad(c, r);
  if (atomic_load_explicit(&((device_entry *)e)->conn, memory_order_relaxed) != &c->rc)
    registry_attach(c->in->reg, e->index, &c->rc);
  /* A full channel makes this wait, and so stops the reading of this
   * socket: the backpressure that reaches the device. */
  if (seq_check_send(c->telemetry, &rd) != 0) return STOP_PIPELINE;
  c->readings++;
  return GO_ON;
}

/* Parses the complete lines of base[*done, len), finishing the carried
 * partial line first. Returns GO_ON or why to stop; *done is how far it
 * got. */
static int parse(conn *c, const char *base, size_t *done, size_t len) {
  const char *p = base + *done, *end = base + len, *nl;
  size_t max = (size_t)c->cfg->max_line_bytes;
  int r = GO_ON;
  if (c->carry_len || c->skipping) {
    if (!(nl = memchr(p, '\n', (size_t)(end - p)))) return GO_ON;
    size_t take = (size_t)(nl - p);
    if (c->skipping) {
      c->skipping = 0;
    } else if (c->carry_len + take > max) {
      c->line_no++;
      c->lines++;
      r = bad(c, PROTOCOL_OVERSIZED);
    } else {
      memcpy(c->carry + c->carry_len, p, take);
      r = on_line(c, c->carry, c->carry_len + take);
    }
    c->carry_len = 0;
    p = nl + 1;
  }
  while (r == GO_ON && p < end && (nl = memchr(p, '\n', (size_t)(end - p)))) {
    r = on_line(c, p, (size_t)(nl - p));
    p = nl + 1;
  }
  *done = (size_t)(p - base);
  return r;
}

/* Keeps the partial line base[done, len) for the next round. */
static int carry_rest(conn *c, const char *base, size_t done, size_t len) {
  size_t rest = len - done, max = (size_t)c->cfg->max_line_bytes;
  if (c->skipping || rest == 0) return GO_ON;
  if (c->carry_len + rest > max) {
    c->carry_len = 0;
    c->skipping = 1;
    c->line_no++;
    c->lines++;
    return bad(c, PROTOCOL_OVERSIZED);
  }
  memcpy(c->carry + c->carry_len, base + done, rest);
  c->carry_len += rest;
  return GO_ON;
}

/* Over --lines-per-s, a connection is not read for a while (a token
 * bucket of a second's worth of lines): the bytes wait in the kernel and
 * TCP slows the device down, as when the pipeline is full. Nothing is
 * dropped. Not while draining: what was sent before the shutdown is read
 * until the drain time is over. */
static void line_rate_wait(conn *c, uint64_t lines) {
  double rate = SERVE_LIMIT(c->in->limits, lines_per_s);
  if (rate <= 0 || c->draining) return;
  int64_t now = tg_now();
  c->line_tokens += (double)(now - c->line_tokens_ns) / 1e9 * rate - (double)lines;
  c->line_tokens_ns = now;
  if (c->line_tokens > rate) c->line_tokens = rate;
  if (c->line_tokens >= 0) return;
  figure_add_shared(&c->in->line_rate_waits, 1);
  int64_t wait_ns = (int64_t)(-c->line_tokens / rate * 1e9) + 1;
  tg_cancel_wait_dl(c->in->cancel, now + wait_ns); /* the shutdown ends the wait */
}

/* One round over the bytes recv showed in v (see the note on views).
 * Returns GO_ON, a STOP_ reason, TG_EOF or a socket error. */
static int round_of(conn *c, tg_tcp_view v) {
  ingest *in = c->in;
  if (atomic_load_explicit(&in->first_byte_ns, memory_order_relaxed) == 0) {
    int64_t zero = 0;
    atomic_compare_exchange_strong(&in->first_byte_ns, &zero, tg_now());
  }
  int held = tg_semaphore_acquire(in->bandwidth, 1) == 0;
  size_t done = 0;
  int r, end = GO_ON;
  for (;;) {
    r = parse(c, v.data, &done, v.len);
    if (r != GO_ON) break;
    tg_tcp_view more;
    int got = stream_recv_dl(&c->io, &more, 0);
    if (got == 0) {
      v = more;
      continue;
    }
    if (got != TG_ETIMEDOUT && got != TG_EFULL) end = got;
    break;
  }
  if (r == GO_ON) r = carry_rest(c, v.data, done, v.len);
  c->bytes += v.len;
  stream_consume(&c->io, v.len);
  if (held) tg_semaphore_release(in->bandwidth, 1);
  uint64_t lines = c->lines;
  flush_figures(c);
  if (r != GO_ON) return r;
  line_rate_wait(c, lines);
  if (out_flush(c, write_deadline(c)) != GO_ON) return STOP_WRITE;
  return end;
}

/* ------------------------------------------------------------ health */

static void on_request(conn *c, const health_request *req) {
  if (c->npend == MAX_PENDING) { /* make room: forget requests nobody waits for */
    for (int i = 0; i < c->npend;) {
      if (tg_oneshot_tx_closed(c->pend[i].reply)) {
        tg_oneshot_tx_drop(c->pend[i].reply);
        c->pend[i] = c->pend[--c->npend];
      } else {
        i++;
      }
    }
  }
  char line[64];
  int n = protocol_format_health_request(line, sizeof line, req->id);
  if (c->npend == MAX_PENDING || n < 0 || c->out_len + (size_t)n > OUT_CAP) {
    tg_oneshot_tx_drop(req->reply); /* the asker sees it dropped */
    return;
  }
  c->pend[c->npend++] = (pending){req->reply, req->id};
  out_append(c, line, (size_t)n);
  c->requests++;
}

/* No more requests: detached from the registry, the queued ones dropped. */
static void close_outbox(conn *c) {
  registry_detach_all(c->in->reg, &c->rc);
  health_request req;
  while (tg_mpsc_try_recv(c->outbox, &req) == 0) tg_oneshot_tx_drop(req.reply);
}

/* ------------------------------------------------------------ the task */

static const char *end_name(int r) {
  switch (r) {
  case TG_EOF: return "device hung up";
  case STOP_ERRORS: return "too many bad lines";
  case STOP_PIPELINE: return "pipeline closed";
  case STOP_WRITE: return "device not reading";
  case STOP_NO_HELLO: return "no hello with a valid token in time";
  default: return tg_err_name(r);
  }
}

/* Reads what the device already sent: until it hangs up or the drain
 * time is over. (Not "until it is quiet for a while": a busy worker can
 * see a deadline pass before it polled bytes that had long arrived.)
 * Nothing is written: a device that closed its socket while its last
 * bytes were still on the way would have its kernel reset the connection
 * on receiving anything, and drop those bytes. */
static int drain(conn *c) {
  c->draining = 1;
  close_outbox(c);
  int64_t until = atomic_load(c->in->drain_until);
  for (;;) {
    tg_tcp_view v;
    int r = stream_recv_dl(&c->io, &v, until);
    if (r != 0) return r;
    if ((r = round_of(c, v)) != GO_ON) return r;
  }
}

/* Waits for what comes first: the shutdown, a health request, bytes, acks
 * owed. When a TLS stream has decrypted bytes waiting, it does not wait:
 * the shutdown and requests still come first (stream.h). */
static int serve_conn(conn *c) {
  for (;;) {
    tg_tcp_view v;
    health_request req;
    if (c->hello_by && tg_now() >= c->hello_by) return STOP_NO_HELLO;
    /* Acks due go out first, so a device that never stops sending gets
     * them too; owed ones wait for their time (see the note on acks). */
    if ((c->acks_due && tg_now() >= c->acks_next_ns) || c->ack_len) send_acks(c);
    tg_case cs[4] = {tg_cancel_case(c->in->cancel), tg_mpsc_recv_case(c->outbox, &req), stream_recv_case(&c->io),
                     c->acks_ready ? tg_notify_wait_case(c->acks_ready) : (tg_case){0}};
    int64_t ack_at = c->ack_len ? tg_deadline_in(TG_MS(c->ack_retry_ms)) : c->acks_due ? c->acks_next_ns : TG_FOREVER;
    int64_t wake = c->hello_by && c->hello_by < ack_at ? c->hello_by : ack_at;
    int ready = stream_ready(&c->io);
    int w = ready ? tg_select(cs, 2, 0) : tg_select(cs, c->acks_ready && !c->acks_due ? 4 : 3, wake);
    if (ready && w == TG_ETIMEDOUT) w = 2;
    if (w == 0) return drain(c);
    if (w == TG_ETIMEDOUT && wake != ack_at) continue; /* the hello's time: checked above */
    if (w == 3 || w == TG_ETIMEDOUT) {
      c->acks_due = 1;
      continue;
    }
    if (w < 0) return w;
    if (w == 1) {
      if (cs[1].result != 0) return cs[1].result;
      on_request(c, &req);
      flush_figures(c);
      if (out_flush(c, write_deadline(c)) != GO_ON) return STOP_WRITE;
      continue;
    }
    int r = stream_recv_dl(&c->io, &v, 0);
    if (r == TG_ETIMEDOUT) continue; /* TLS: only part of a record came */
    if (r != 0) return r;
    r = round_of(c, v);
    if (r != GO_ON) return r;
  }
}

/* Opens the connection's stream, with its receive buffer: plain, or after
 * the TLS handshake when the port has TLS. Returns 0 or why it failed,
 * counted and logged (at most once a second). */
static int handshake(conn *c, tcp_server_conn *tc, int64_t deadline_ns) {
  ingest *in = c->in;
  char err[256];
  stream_opts o = {
      .tls = in->tls, .recv_buffer = (size_t)c->cfg->recv_buffer, .cancel = in->cancel, .deadline_ns = deadline_ns};
  int r = stream_open(&c->io, tc->sock, &o, err, sizeof err);
  if (!in->tls) return r;
  figure_add_shared(r == 0 ? &in->tls_handshakes : &in->tls_failures, 1);
  uint64_t held;
  if (r != 0 && r != TG_ECANCELED && gate_pass(in, &in->tls_gate, &held))
    log_event(in->log, "🔒", "ingest", 0, "tls_failed", "Connection #%" PRIu64 " from %s: %s%s", c->id, c->peer, err,
              log_held_note(held).s);
  return r;
}

/* The tcp_server's handler: one device connection. */
static void serve_device(void *arg, tcp_server_conn *tc) {
  ingest *in = arg;
  tcp_server_figures tf;
  tcp_server_figures_get(in->server, &tf);
  uint64_t held;
  if (gate_pass(in, &in->open_gate, &held))
    log_event(in->log, "🔌", "ingest", 0, "connection_open",
              "Device connection #%" PRIu64 " from %s (%" PRIu64 " open)%s", tc->id, tc->peer, tf.open,
              log_held_note(held).s);
  conn *c = calloc(1, sizeof *c);
  tg_mpsc_tx *outbox_tx = NULL;
  if (c) {
    c->carry = malloc((size_t)in->cfg->max_line_bytes + 1);
    c->cache = calloc(16, sizeof *c->cache);
    c->nslots = 16;
  }
  if (!c || !c->carry || !c->cache) {
    if (c) {
      free(c->carry);
      free(c->cache);
      free(c);
    }
    return;
  }
  c->in = in;
  c->cfg = in->cfg;
  c->id = tc->id;
  memcpy(c->peer, tc->peer, sizeof c->peer);
  int error_rate = SERVE_LIMIT(in->limits, error_lines_per_s);
  c->tokens = error_rate > 0 ? error_rate : 1;
  c->tokens_ns = tg_now();
  c->line_tokens = SERVE_LIMIT(in->limits, lines_per_s);
  c->line_tokens_ns = c->tokens_ns;
  /* A connection proves who it is (its TLS handshake, its hello when
   * devices authenticate) within the handshake timeout, so one that never
   * does holds its slot that long at most. */
  int64_t proven_by = tg_deadline_in(TG_MS(in->cfg->handshake_timeout_ms));
  c->hello_by = in->creds ? proven_by : 0;
  int r = handshake(c, tc, proven_by);
  if (r == 0) {
    if (tg_mpsc_new(&(tg_mpsc_opts){.capacity = OUTBOX_CAPACITY, .elem_size = sizeof(health_request), .name = "outbox"},
                    &outbox_tx, &c->outbox) != 0) {
      r = TG_ENOMEM;
    } else {
      c->rc.outbox = outbox_tx;
      c->telemetry = tg_mpsc_tx_clone(in->telemetry);
      r = tg_cancel_fired(in->cancel) ? drain(c) : serve_conn(c);
    }
  }
  if (r == TG_EOF && c->carry_len) { /* the device hung up inside a line */
    c->line_no++;
    c->lines++;
    c->carry_len = 0;
    bad(c, SERVE_BAD_TRUNCATED);
  }
  /* Whatever ended it: no more requests or acks, every waiting asker told. */
  if (c->outbox) close_outbox(c);
  if (c->acks_ready) tg_notify_free(c->acks_ready);
  free(c->ack_buf);
  for (int i = 0; i < c->npend; i++) tg_oneshot_tx_drop(c->pend[i].reply);
  c->npend = 0;
  flush_figures(c);
  if (r == STOP_ERRORS) figure_add_shared(&in->closed_errors, 1);
  if (r == STOP_ERRORS) out_flush(c, write_deadline(c)); /* the last error line, best effort */
  if (r == STOP_NO_HELLO) {
    static const char line[] = "{\"type\":\"error\",\"reason\":\"hello_timeout\"}\n";
    figure_add_shared(&in->hello_timeouts, 1);
    if (c->out_len + sizeof line - 1 <= OUT_CAP) out_append(c, line, sizeof line - 1);
    out_flush(c, write_deadline(c));
  }
  if (c->outbox) tg_mpsc_rx_drop(c->outbox);
  if (outbox_tx) tg_mpsc_tx_drop(outbox_tx);
  if (c->telemetry) tg_mpsc_tx_drop(c->telemetry);
  if (gate_pass(in, &in->close_gate, &held))
    log_event(in->log, "🔌", "ingest", 0, "connection_closed",
              "Connection #%" PRIu64 " from %s closed (%s): %" PRIu64 " readings, %" PRIu64 " bad lines%s", c->id,
              c->peer,
              c->draining && r == TG_EOF         ? "drained, device hung up"
              : c->draining && r == TG_ETIMEDOUT ? "drain time over"
                                                 : end_name(r),
              c->total_readings, c->total_bad, log_held_note(held).s);
  credentials_unref(c->set);
  stream_close(&c->io, 0); /* close_notify, if the socket takes it at once */
  free(c->carry);
  free(c->cache);
  free(c);
}

/* ------------------------------------------------------------ the acceptor */

/* Over max_connections or max_per_client: one line, sent without waiting
 * (the device learns it either way when the socket closes). */
static void refuse(ingest *in, int fd, const char *line, size_t len, const char *why, int limit) {
  ssize_t n = send(fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)n;
  close(fd);
  uint64_t held;
  if (gate_pass(in, &in->accept_gate, &held))
    log_event(in->log, "🚫", "ingest", 0, "connection_rejected",
              "Connection refused: %d connections open %s, the limit%s", limit, why, log_held_note(held).s);
}

static void refuse_device(void *arg, int fd) {
  static const char line[] = "{\"type\":\"error\",\"reason\":\"too_many_connections\"}\n";
  ingest *in = arg;
  refuse(in, fd, line, sizeof line - 1, "in all", in->cfg->max_connections);
}

static void refuse_client(void *arg, int fd) {
  static const char line[] = "{\"type\":\"error\",\"reason\":\"too_many_connections_per_client\"}\n";
  ingest *in = arg;
  refuse(in, fd, line, sizeof line - 1, "from its address", in->cfg->max_per_client);
}

static void *acceptor_task(void *arg) {
  ingest *in = arg;
  tcp_server_config sc = {
      .name = "ingest",
      .host = in->cfg->listen_host,
      .port = in->cfg->listen_port,
      .max_connections = in->cfg->max_connections,
      .max_per_client = in->cfg->max_per_client,
      .workers = in->cfg->workers > 0 ? in->cfg->workers : 1,
      .stack_size = CONN_STACK,
      .grace_ms = -1, /* each connection ends its drain by drain_until */
      .cancel = in->cancel,
      .handler = serve_device,
      .reject = refuse_device,
      .reject_client = refuse_client,
      .ctx = in,
      .log = in->log,
  };
  tcp_server *server;
  int r = tcp_server_new(&server, &sc);
  if (r == 0) {
    in->server = server;
    r = tcp_server_start(server);
  }
  if (r == 0) in->port = tcp_server_port(server);
  tg_oneshot_send(in->ready, &r);
  in->ready = NULL;
  if (r == 0) tcp_server_wait(server);
  tg_mpsc_tx_drop(in->telemetry);
  in->telemetry = NULL;
  return NULL;
}

static void ingest_free(void *state) {
  ingest *in = state;
  if (!in) return;
  if (in->telemetry) tg_mpsc_tx_drop(in->telemetry);
  tcp_server_free(in->server);
  if (in->bandwidth) tg_semaphore_free(in->bandwidth);
  pthread_mutex_destroy(&in->gate_lock);
  free(in);
}

static int ingest_start(const source_sink *sink, void **state, char *err, size_t errlen) {
  const serve_config *cfg = sink->cfg;
  *state = NULL;
  ingest *in = calloc(1, sizeof *in);
  if (!in) {
    tg_mpsc_tx_drop(sink->telemetry);
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  *in = (ingest){.cfg = cfg,
                 .limits = sink->limits,
                 .cancel = sink->cancel,
                 .log = sink->log,
                 .reg = sink->reg,
                 .telemetry = sink->telemetry,
                 .creds = sink->creds,
                 .seqs = {sink->schema, sink->reg, sink->db, sink->limits, sink->stream != NULL,
                          sink->stream && cfg->nats_partitions > 0},
                 .drain_until = sink->drain_until,
                 .tls = sink->tls};
  pthread_mutex_init(&in->gate_lock, NULL);
  tg_oneshot_rx *ready = NULL;
  int r = tg_semaphore_new(&in->bandwidth, (uint64_t)cfg->bandwidth_permits, "bandwidth");
  if (r == 0) r = tg_oneshot_new(sizeof(int), &in->ready, &ready);
  tg_spawn_opts opts = {.stack_size = ACCEPTOR_STACK, .pin = 1, .worker = 0, .name = "acceptor"};
  if (r == 0 && (r = tg_joinset_spawn(sink->tasks, acceptor_task, in, &opts, NULL)) != 0) tg_oneshot_tx_drop(in->ready);
  if (r != 0) {
    if (ready) tg_oneshot_rx_drop(ready);
    ingest_free(in);
    snprintf(err, errlen, "cannot start the device listener: %s", tg_strerror(r));
    return r;
  }
  *state = in; /* the acceptor uses it until it is joined */
  int bound = TG_ECLOSED;
  tg_oneshot_recv(ready, &bound);
  tg_oneshot_rx_drop(ready);
  if (bound != 0)
    snprintf(err, errlen, "cannot listen for devices on %s:%d: %s", cfg->listen_host, cfg->listen_port,
             tg_strerror(bound));
  return bound;
}

static void ingest_figures_get(void *state, source_figures *f) {
  const ingest *in = state;
  *f = (source_figures){0};
  tcp_server_figures tf = {0};
  if (in->server) tcp_server_figures_get(in->server, &tf);
  f->port = in->port;
  f->first_byte_ns = atomic_load(&in->first_byte_ns);
  f->accepted = tf.accepted;
  f->rejected = tf.rejected;
  f->rejected_per_client = tf.rejected_per_client;
  f->hello_timeouts = figure_get(&in->hello_timeouts);
  f->closed = tf.closed;
  f->open = tf.open;
  f->closed_errors = figure_get(&in->closed_errors);
  f->write_timeouts = figure_get(&in->write_timeouts);
  f->bytes = figure_get(&in->bytes);
  f->lines = figure_get(&in->lines);
  f->readings = figure_get(&in->readings);
  for (int i = 1; i < SERVE_BAD_REASONS; i++) f->bad[i] = figure_get(&in->bad[i]);
  f->error_lines_sent = figure_get(&in->error_lines_sent);
  f->error_lines_suppressed = figure_get(&in->error_lines_suppressed);
  f->health_requests = figure_get(&in->health_requests);
  f->health_unmatched = figure_get(&in->health_unmatched);
  f->hellos = figure_get(&in->hellos);
  f->acks_sent = figure_get(&in->acks_sent);
  f->authenticated = figure_get(&in->authenticated);
  f->line_rate_waits = figure_get(&in->line_rate_waits);
  f->tls_handshakes = figure_get(&in->tls_handshakes);
  f->tls_failures = figure_get(&in->tls_failures);
  tg_semaphore_stats bw = {0};
  if (in->bandwidth) tg_semaphore_stats_get(in->bandwidth, &bw);
  f->permits = bw.permits;
  f->permits_in_use = bw.in_use;
  f->permit_waiters = bw.waiters;
  f->permit_waits = bw.waits;
}

static int ingest_wanted(const serve_config *cfg) { return cfg->listen_host != NULL; }

const source_kind source_tcp = {
    .name = "tcp",
    .publishes = 1,
    .wanted = ingest_wanted,
    .start = ingest_start,
    .figures_get = ingest_figures_get,
    .free = ingest_free,
};
