/* source_write.c - the InfluxDB write API's source; see source_write.h. */
#include "source_write.h"

#include "figure.h"
#include "seq_check.h"
#include "wall_clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { CLOSER_STACK = 64 * 1024 };

/* Invariant: telemetry is dropped (NULL) only once closed is set and
 * every turn is back, so no body is ever half sent. */
typedef struct writer_state {
  const serve_config *cfg;
  const serve_limits *limits;
  tg_cancel *cancel;
  registry *reg;
  credentials_store *creds; /* NULL: no credentials */
  int open_to_all;          /* without credentials, whether writes are allowed (loopback, or told) */
  seq_check seqs;
  nats_publish *stream; /* with --nats: the points are published, not stored here */
  tg_semaphore *turns;  /* WRITE_TURNS bodies sent at once */
  pthread_mutex_t lock;
  tg_mpsc_tx *telemetry; /* under lock */
  int closed;            /* under lock */
  figure lines, points, bad[SERVE_BAD_REASONS];
  figure writes, refused, timed_out;
} writer_state;

/* The last device a body wrote for: a body's points usually come a
 * device at a time, so most lines skip the registry's lock. */
typedef struct last_device {
  char id[PROTOCOL_DEVICE_ID_MAX + 1];
  uint8_t len;
  const device_entry *e;
} last_device;

/* A device a body wrote for, and the last seq it sent for it. */
typedef struct sent {
  uint32_t device;
  uint64_t seq;
} sent;

typedef struct body_state {
  writer_state *w;
  const credential *cred; /* NULL: no credentials */
  last_device last;
  sent *sent;
  size_t nsent, capsent;
  write_result *res;
} body_state;

static void refuse_line(body_state *b, uint64_t line_no, int reason, const char *p, size_t n) {
  write_result *res = b->res;
  figure_add_shared(&b->w->bad[reason], 1);
  if (res->bad++) return;
  res->first_bad_line = line_no;
  res->first_bad_reason = reason;
  if (n > WRITE_BAD_LINE_MAX) n = WRITE_BAD_LINE_MAX;
  memcpy(res->first_bad_text, p, n);
  res->first_bad_text[n] = '\0';
}

/* The registry entry of id, if this body may write for it. Returns 0 or
 * the SERVE_BAD_* reason. */
static int device_of(body_state *b, const protocol_device_id *id, const device_entry **out) {
  if (b->last.e && b->last.len == id->len && memcmp(b->last.id, id->text, id->len) == 0) {
    *out = b->last.e;
    return 0;
  }
  if (b->w->creds && !credential_allows(b->cred, id->text, id->len)) return SERVE_BAD_NOT_ALLOWED;
  registry *reg = b->w->reg;
  uint32_t index;
  int r = registry_intern_for(reg, b->cred, SERVE_LIMIT(b->w->limits, max_ids_per_credential), id,
                              registry_hash(id->text, id->len), &index);
  if (r != 0) return r;
  b->last.e = *out = registry_entry(reg, index);
  b->last.len = id->len;
  memcpy(b->last.id, id->text, id->len);
  return 0;
}

/* Remembers that seq of device went out; the last one counts. */
static int note_sent(body_state *b, uint32_t device, uint64_t seq) {
  if (b->nsent && b->sent[b->nsent - 1].device == device) {
    b->sent[b->nsent - 1].seq = seq;
    return 0;
  }
  if (b->nsent == b->capsent) {
    size_t cap = b->capsent ? b->capsent * 2 : 16;
    sent *grown = realloc(b->sent, cap * sizeof *grown);
    if (!grown) return TG_ENOMEM;
    b->sent = grown;
    b->capsent = cap;
  }
  b->sent[b->nsent++] = (sent){device, seq};
  return 0;
}

/* One line of the body. Returns 0, or a negative code when the pipeline
 * is gone or memory ran out (the rest of the body is not sent). */
static int on_line(body_state *b, tg_mpsc_tx *tx, const write_request *rq, uint64_t line_no, const char *p, size_t n,
                   int64_t now_ms) {
  writer_state *w = b->w;
  protocol_msg m;
  protocol_opts o = {.max_len = (size_t)w->cfg->max_line_bytes,
                     .now_ms = now_ms,
                     .json_only = 1,
                     .device_key = w->cfg->json_device_key,
                     .time_key = w->cfg->json_time_key};
  int r = rq->json ? protocol_parse(p, n, &o, &m, NULL)
                   : protocol_parse_influx(p, n, (size_t)w->cfg->max_line_bytes, rq->precision, now_ms, &m, NULL);
  if (r == 0 && m.kind == PROTOCOL_BLANK) return 0;
  figure_add_shared(&w->lines, 1);
  if (r < 0 || m.kind != PROTOCOL_READING) { /* a hello or a health reply is the device port's */
    refuse_line(b, line_no, r < 0 ? -r : PROTOCOL_UNKNOWN_TYPE, p, n);
    return 0;
  }
  const device_entry *e;
  reading rd;
  if ((r = seq_check_pack(&w->seqs, &m.point, &rd)) == 0 && (r = device_of(b, &m.device, &e)) != 0) reading_free(&rd);
  if (r == 0) r = seq_check_reading(&w->seqs, e, &rd);
  if (r != 0) {
    refuse_line(b, line_no, r, p, n);
    return 0;
  }
  if (note_sent(b, e->index, rd.seq) != 0) {
    reading_free(&rd);
    return TG_ENOMEM;
  }
  if ((r = seq_check_send(tx, &rd)) != 0) return r;
  b->res->points++;
  return 0;
}

static int by_device(const void *a, const void *b) {
  const sent *x = a, *y = b;
  return x->device != y->device ? (x->device < y->device ? -1 : 1) : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

/* Whether everything b sent is committed. Devices are looked at with
 * the highest seq each was sent, once. */
static int all_committed(body_state *b) {
  for (size_t i = 0; i < b->nsent; i++) {
    if (i + 1 < b->nsent && b->sent[i + 1].device == b->sent[i].device) continue;
    if (!registry_durable(b->w->reg, b->sent[i].device, b->sent[i].seq)) return 0;
  }
  return 1;
}

/* Waits until every point b sent is committed, or the deadline. */
static int wait_committed(body_state *b, int64_t deadline_ns) {
  if (b->nsent) qsort(b->sent, b->nsent, sizeof *b->sent, by_device);
  tg_watch_rx *commits;
  if (registry_commits_subscribe(b->w->reg, &commits) != 0) return TG_ENOMEM;
  int r = 0;
  while (!all_committed(b)) {
    if ((r = tg_watch_changed_dl(commits, deadline_ns)) != 0) break;
  }
  tg_watch_rx_drop(commits);
  return r == TG_ECLOSED ? TG_ETIMEDOUT : r;
}

/* The end of the JSON object or array at p, or NULL when it does not
 * close before end: brackets counted outside strings. */
static const char *json_end(const char *p, const char *end) {
  int depth = 0;
  for (; p < end; p++) {
    if (*p == '"') {
      for (p++; p < end && *p != '"'; p++)
        if (*p == '\\') p++;
      if (p >= end) return NULL;
    } else if (*p == '{' || *p == '[') {
      depth++;
    } else if ((*p == '}' || *p == ']') && --depth == 0) {
      return p + 1;
    }
  }
  return NULL;
}

static const char *skip_space(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == ',')) p++;
  return p;
}

/* Where the objects of a JSON body begin, and end: inside a top-level
 * array, inside Telegraf's {"metrics":[...]}, or the whole body. */
static void json_objects(const char *body, size_t len, const char **from, const char **to) {
  const char *p = skip_space(body, body + len), *end = body + len;
  *from = p;
  *to = end;
  if (p < end && *p == '[') {
    *from = p + 1;
    *to = json_end(p, end) ? json_end(p, end) - 1 : end;
    return;
  }
  static const char metrics[] = "\"metrics\"";
  const char *q = p < end ? skip_space(p + 1, end) : end;
  if (p < end && *p == '{' && (size_t)(end - q) > sizeof metrics && memcmp(q, metrics, sizeof metrics - 1) == 0) {
    q = skip_space(q + sizeof metrics - 1, end);
    if (q < end && *q == ':') q = skip_space(q + 1, end);
    if (q < end && *q == '[') {
      *from = q + 1;
      *to = json_end(q, end) ? json_end(q, end) - 1 : end;
    }
  }
}

/* The body's points into the telemetry channel, within a turn. */
static int send_body(body_state *b, const write_request *rq) {
  writer_state *w = b->w;
  if (tg_semaphore_acquire_dl(w->turns, 1, tg_deadline_in(TG_SEC(1))) != 0) return -EBUSY;
  pthread_mutex_lock(&w->lock);
  tg_mpsc_tx *tx = w->closed ? NULL : tg_mpsc_tx_clone(w->telemetry);
  pthread_mutex_unlock(&w->lock);
  int r = tx ? 0 : TG_ECLOSED;
  int64_t now_ms = wall_clock_ms();
  uint64_t line_no = 0;
  if (rq->json) {
    const char *p, *end;
    json_objects(rq->body, rq->len, &p, &end);
    for (p = skip_space(p, end); r == 0 && p < end; line_no++, p = skip_space(p, end)) {
      const char *stop = *p == '{' ? json_end(p, end) : NULL;
      if (!stop) { /* not an object, or one cut short: the rest is refused as one */
        r = on_line(b, tx, rq, line_no + 1, p, (size_t)(end - p), now_ms);
        break;
      }
      r = on_line(b, tx, rq, line_no + 1, p, (size_t)(stop - p), now_ms);
      p = stop;
    }
  }
  for (const char *p = rq->body, *end = rq->body + rq->len; !rq->json && r == 0 && p < end; line_no++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    r = on_line(b, tx, rq, line_no + 1, p, n, now_ms);
    p += n + 1;
  }
  if (tx) tg_mpsc_tx_drop(tx);
  tg_semaphore_release(w->turns, 1);
  return r;
}

int source_write_points(void *state, const write_request *rq, write_result *res) {
  writer_state *w = state;
  *res = (write_result){0};
  body_state b = {.w = w, .res = res};
  credentials *set = NULL;
  int r = 0;
  if (w->creds) {
    set = credentials_current(w->creds);
    b.cred = rq->token ? credentials_find(set, rq->token, strlen(rq->token)) : NULL;
    if (!b.cred) r = -EACCES;
  } else if (!w->open_to_all) {
    r = -EACCES;
  }
  if (r == 0 && w->stream && !nats_publish_connected(w->stream)) r = -EBUSY; /* held until NATS is back */
  if (r == 0) r = send_body(&b, rq);
  if (set) credentials_unref(set);
  if (r == 0) r = wait_committed(&b, rq->deadline_ns);
  free(b.sent);
  figure_add_shared(r == 0 ? &w->writes : r == TG_ETIMEDOUT ? &w->timed_out : &w->refused, 1);
  figure_add_shared(&w->points, res->points);
  return r;
}

/* ------------------------------------------------------------ the source */

/* Once the token fires: no new body, the ones being sent finish, then
 * the sender goes. */
static void *closer_task(void *arg) {
  writer_state *w = arg;
  tg_cancel_wait(w->cancel);
  pthread_mutex_lock(&w->lock);
  w->closed = 1;
  pthread_mutex_unlock(&w->lock);
  tg_semaphore_acquire(w->turns, WRITE_TURNS);
  tg_mpsc_tx_drop(w->telemetry);
  w->telemetry = NULL;
  return NULL;
}

static int writer_wanted(const serve_config *cfg) { return cfg->http_host != NULL; }

static int writer_start(const source_sink *sink, void **state, char *err, size_t errlen) {
  *state = NULL;
  writer_state *w = calloc(1, sizeof *w);
  int r = w ? tg_semaphore_new(&w->turns, WRITE_TURNS, "write turns") : TG_ENOMEM;
  if (r != 0) {
    if (w) free(w);
    tg_mpsc_tx_drop(sink->telemetry);
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  const serve_config *cfg = sink->cfg;
  w->cfg = cfg;
  w->limits = sink->limits;
  w->cancel = sink->cancel;
  w->reg = sink->reg;
  w->creds = sink->creds;
  w->open_to_all = cfg->insecure_no_auth || serve_host_is_loopback(cfg->http_host);
  w->seqs = (seq_check){
      sink->schema, sink->reg, sink->db, sink->limits, sink->stream != NULL, sink->stream && cfg->nats_partitions > 0};
  w->telemetry = sink->telemetry;
  w->stream = sink->stream;
  pthread_mutex_init(&w->lock, NULL);
  *state = w;
  tg_spawn_opts opts = {.stack_size = CLOSER_STACK, .name = "write closer"};
  if ((r = tg_joinset_spawn(sink->tasks, closer_task, w, &opts, NULL)) != 0) {
    snprintf(err, errlen, "cannot start the write API: %s", tg_strerror(r));
    return r;
  }
  return 0;
}

static void writer_figures_get(void *state, source_figures *f) {
  writer_state *w = state;
  *f = (source_figures){0};
  f->lines = figure_get(&w->lines);
  f->readings = figure_get(&w->points);
  for (int i = 1; i < SERVE_BAD_REASONS; i++) f->bad[i] = figure_get(&w->bad[i]);
  f->writes = figure_get(&w->writes);
  f->writes_refused = figure_get(&w->refused);
  f->writes_timed_out = figure_get(&w->timed_out);
}

static void writer_free(void *state) {
  writer_state *w = state;
  if (!w) return;
  if (w->telemetry) tg_mpsc_tx_drop(w->telemetry);
  tg_semaphore_free(w->turns);
  pthread_mutex_destroy(&w->lock);
  free(w);
}

const source_kind source_write = {
    .name = "write",
    .publishes = 1,
    .wanted = writer_wanted,
    .start = writer_start,
    .figures_get = writer_figures_get,
    .free = writer_free,
};
