/* sse.c - one Server-Sent Events stream of snapshots; see sse.h. */
#include "sse.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A stream's state. Invariant: `seen` is the version of the newest
 * snapshot sent or pending; a broadcast message not newer is stale
 * (already covered by a resync or the first event) and skipped. */
typedef struct stream {
  api_server *a;
  http_conn *c;
  tg_broadcast_rx *updates;
  http_buf out; /* the head of the event being written, or a whole small one */
  uint64_t seen;
  system_snapshot *pending; /* the newest not sent yet: held by ?every=, or put off */
  int pending_resync;       /* pending is a resync's: send it as one */
  uint64_t pending_missed;  /* ... that missed this many */
  int64_t every_ns, pipeline_ns, keepalive_ns;
  int64_t next_send; /* no snapshot event before */
  int64_t next_pipeline, next_keepalive;
  /* ?deltas=1: what the client holds, the base of the next delta */
  int deltas;
  int has_base;
  uint64_t base_version;
  int64_t base_at_ms;
  uint32_t base_ndevices;
  int64_t full_ns, next_full; /* a whole snapshot again by then */
} stream;

enum {
  DEFER_MS = 50,           /* a snapshot that cannot be serialized now is tried again after */
  DEVICE_JSON_BYTES = 160, /* about what a device takes in a snapshot's JSON */
};

static void count(atomic_uint_fast64_t *f, uint64_t n) { atomic_fetch_add_explicit(f, n, memory_order_relaxed); }

/* ------------------------------------------------------------ shared JSON */

static void json_unref(api_server *a, sse_json *j) {
  if (!j || atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) != 1) return;
  atomic_fetch_sub_explicit(&a->json_bytes, j->len, memory_order_relaxed);
  free(j->data);
  free(j);
}

/* The base a delta is taken from: the snapshot the client holds. */
typedef struct delta_base {
  uint64_t version;
  int64_t at_ms;
  uint32_t ndevices;
} delta_base;

/* The serialization of s that every stream shares - the whole snapshot,
 * or its delta from base when base is not NULL: a reference, or NULL
 * when it cannot be had now - another is being built, the streams hold
 * sse_json_max_bytes already, or memory ran out - and the caller tries
 * again later. One build at a time and the limit bound what streams hold
 * to sse_json_max_bytes plus one snapshot, whatever the number of
 * streams or how slowly they read. */
static sse_json *json_get(api_server *a, const system_snapshot *s, const delta_base *base) {
  uint64_t want_base = base ? base->version : SSE_FULL;
  pthread_mutex_lock(&a->json_lock);
  sse_json **slot = base ? &a->json_delta : &a->json_latest, *j = *slot;
  if (j && j->version == s->version && j->base == want_base) {
    atomic_fetch_add_explicit(&j->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&a->json_lock);
    return j;
  }
  if (a->json_building || atomic_load_explicit(&a->json_bytes, memory_order_relaxed) >= a->cfg.sse_json_max_bytes) {
    pthread_mutex_unlock(&a->json_lock);
    count(&a->deferred, 1);
    return NULL;
  }
  a->json_building = 1;
  pthread_mutex_unlock(&a->json_lock);

  http_buf b = {0};
  if (base) {
    api_json_delta(&b, s, base->version, base->at_ms, base->ndevices); /* yields: the lock is not held */
  } else {
    http_buf_reserve(&b, (size_t)s->ndevices * DEVICE_JSON_BYTES + 256); /* one allocation, no copies growing it */
    api_json_snapshot(&b, s);
  }
  j = http_buf_failed(&b) ? NULL : malloc(sizeof *j);
  if (j) {
    atomic_init(&j->refs, 1);
    j->version = s->version;
    j->base = want_base;
    j->len = b.len;
    j->data = b.data; /* taken over */
    b = (http_buf){0};
    count(&a->json_bytes, j->len);
    count(&a->json_builds, 1);
  }
  http_buf_free(&b);

  sse_json *old = NULL;
  pthread_mutex_lock(&a->json_lock);
  a->json_building = 0;
  if (j && (!*slot || (*slot)->version <= j->version)) {
    old = *slot;
    *slot = j;
    atomic_fetch_add_explicit(&j->refs, 1, memory_order_relaxed); /* the cache's */
  }
  pthread_mutex_unlock(&a->json_lock);
  json_unref(a, old);
  return j;
}

void sse_json_release(api_server *a) {
  json_unref(a, a->json_latest);
  json_unref(a, a->json_delta);
  a->json_latest = a->json_delta = NULL;
}

/* ------------------------------------------------------------ events */

static int flush(stream *st) {
  int r = http_buf_failed(&st->out) ? TG_ENOMEM : http_conn_write(st->c, st->out.data, st->out.len);
  http_buf_reset(&st->out);
  if (r == TG_ETIMEDOUT) count(&st->a->dropped, 1);
  st->next_keepalive = tg_now() + st->keepalive_ns;
  return r;
}

/* Keeps s (a reference it takes) to be sent once the shared JSON can be
 * had; an older pending one is replaced. */
static void defer(stream *st, system_snapshot *s, int resync, uint64_t missed) {
  if (st->pending && st->pending != s) snapshot_unref(st->pending);
  st->pending = s;
  st->pending_resync = resync;
  st->pending_missed = missed;
  st->next_send = tg_now() + TG_MS(DEFER_MS);
}

/* Sends s as a snapshot event, as a resync that missed `missed`, or -
 * on a ?deltas=1 stream that holds a base and is not due for a whole
 * snapshot - as a delta from that base; puts it off (keeping the
 * reference) when its JSON cannot be had now. Consumes the reference. */
static int send_full(stream *st, system_snapshot *s, int resync, uint64_t missed) {
  int64_t now = tg_now();
  int delta = !resync && st->deltas && st->has_base && now < st->next_full;
  delta_base base = {st->base_version, st->base_at_ms, st->base_ndevices};
  sse_json *j = json_get(st->a, s, delta ? &base : NULL);
  if (!j) {
    defer(st, s, resync, missed);
    return 0;
  }
  if (resync)
    http_buf_printf(&st->out, "event: resync\nid: %" PRIu64 "\ndata: {\"missed\":%" PRIu64 ",\"snapshot\":", s->version,
                    missed);
  else
    http_buf_printf(&st->out, "event: %s\nid: %" PRIu64 "\ndata: ", delta ? "delta" : "snapshot", s->version);
  st->has_base = 1;
  st->base_version = s->version;
  st->base_at_ms = s->at_ms;
  st->base_ndevices = s->ndevices;
  if (!delta) st->next_full = now + st->full_ns;
  snapshot_unref(s);
  int r = flush(st);
  if (r == 0) r = http_conn_write(st->c, j->data, j->len);
  if (r == TG_ETIMEDOUT) count(&st->a->dropped, 1);
  json_unref(st->a, j);
  if (r == 0) {
    http_buf_puts(&st->out, resync ? "}\n\n" : "\n\n");
    r = flush(st);
  }
  count(resync ? &st->a->resyncs : &st->a->events, 1);
  if (delta) count(&st->a->deltas, 1);
  st->next_send = tg_now() + st->every_ns;
  return r;
}

/* The client fell behind the ring: the full current snapshot instead of
 * the messages it missed. */
static int resync(stream *st, uint64_t missed) {
  system_snapshot *s = api_latest(st->a);
  if (st->pending) {
    snapshot_unref(st->pending); /* older than the watch's */
    st->pending = NULL;
  }
  if (s->version > st->seen) st->seen = s->version;
  count(&st->a->lagged_messages, missed);
  return send_full(st, s, 1, missed);
}

static int send_pipeline(stream *st) {
  http_buf_puts(&st->out, "event: pipeline\ndata: ");
  api_json_pipeline(&st->out, st->a);
  http_buf_puts(&st->out, "\n\n");
  st->next_pipeline = tg_now() + st->pipeline_ns;
  return flush(st);
}

/* A broadcast message: sent now, or kept as the pending one. Consumes
 * the reference. */
static int on_update(stream *st, system_snapshot *s) {
  if (s->version <= st->seen) {
    count(&st->a->skipped_stale, 1);
    snapshot_unref(s);
    return 0;
  }
  st->seen = s->version;
  if (st->pending) {
    count(&st->a->coalesced, 1);
    snapshot_unref(st->pending);
    st->pending = NULL; /* a pending resync's missed count is superseded by a newer full snapshot */
  }
  if (st->every_ns == 0 && tg_now() >= st->next_send) return send_full(st, s, 0, 0);
  st->pending = s;
  st->pending_resync = 0;
  return 0;
}

static int send_pending(stream *st) {
  system_snapshot *s = st->pending;
  st->pending = NULL;
  return send_full(st, s, st->pending_resync, st->pending_missed);
}

static int64_t earliest(const stream *st) {
  int64_t t = st->next_keepalive;
  if (st->pipeline_ns && st->next_pipeline < t) t = st->next_pipeline;
  if (st->pending && st->next_send < t) t = st->next_send;
  return t;
}

/* What is due at `now`. */
static int on_timer(stream *st, int64_t now) {
  int r = 0;
  if (st->pending && now >= st->next_send) r = send_pending(st);
  if (r == 0 && st->pipeline_ns && now >= st->next_pipeline) r = send_pipeline(st);
  if (r == 0 && now >= st->next_keepalive) {
    http_buf_puts(&st->out, ": keepalive\n\n");
    r = flush(st);
  }
  return r;
}

static void run(stream *st) {
  tg_cancel *stop = http_conn_cancel(st->c);
  for (;;) {
    system_snapshot *s = NULL;
    tg_case cs[3] = {tg_cancel_case(stop), http_conn_peer_case(st->c), tg_broadcast_recv_case(st->updates, &s)};
    int w = tg_select(cs, 3, earliest(st));
    int r;
    if (w == TG_ETIMEDOUT) {
      r = on_timer(st, tg_now());
    } else if (w == 1) {
      r = http_conn_peer_event(st->c, cs[1].result);
    } else if (w == 2 && cs[2].result == 0) {
      r = on_update(st, s);
      if (r == 0 && st->pending && tg_now() >= st->next_send) r = send_pending(st);
    } else if (w == 2 && cs[2].result == TG_ELAGGED) {
      r = resync(st, tg_broadcast_rx_lagged(st->updates));
    } else if (w == 2 && cs[2].result == TG_ECLOSED) {
      if (st->pending) send_pending(st); /* the pipeline's last word */
      return;
    } else {
      return; /* the server stops (w == 0), or we were aborted */
    }
    if (r != 0) return;
  }
}

/* Reads an integer query parameter in [0, max] into *out (unchanged when
 * absent). Returns 0 or -1 when malformed or out of range. */
static int param_ms(const http_request *req, const char *name, int max, int *out) {
  char v[16];
  int n = http_query_param(req->query, name, v, sizeof v);
  if (n == -1) return 0;
  if (n <= 0) return -1;
  char *end;
  long ms = strtol(v, &end, 10);
  if (*end || ms < 0 || ms > max) return -1;
  *out = (int)ms;
  return 0;
}

void sse_serve(api_server *a, http_conn *c, const http_request *req) {
  int every = 0, pipeline = a->cfg.sse_pipeline_ms, deltas = 0;
  if (param_ms(req, "every", a->cfg.sse_every_max_ms, &every) != 0 ||
      param_ms(req, "pipeline_ms", 3600 * 1000, &pipeline) != 0 || param_ms(req, "deltas", 1, &deltas) != 0) {
    static const char body[] =
        "{\"error\":\"every and pipeline_ms take milliseconds, deltas 0 or 1\",\"status\":400}\n";
    http_respond(c, 400, "application/json", NULL, body, sizeof body - 1);
    return;
  }
  stream st = {.a = a, .c = c};
  /* Subscribe before reading the watch: whatever is published from here
   * on reaches the ring, and what the first event already covers is
   * skipped as stale. */
  int r = a->deps.subscribe(a->deps.ctx, NULL, &st.updates);
  if (r != 0) {
    static const char body[] = "{\"error\":\"the pipeline has ended\",\"status\":503}\n";
    http_respond(c, 503, "application/json", NULL, body, sizeof body - 1);
    return;
  }
  if (http_stream_begin(c, 200, "text/event-stream; charset=utf-8",
                        "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n") != 0) {
    tg_broadcast_rx_drop(st.updates);
    return;
  }
  count(&a->streams, 1);
  count(&a->clients, 1);
  if (a->deps.clients_add) a->deps.clients_add(a->deps.ctx, +1);
  st.every_ns = TG_MS(every);
  st.pipeline_ns = TG_MS(pipeline);
  st.keepalive_ns = TG_MS(a->cfg.sse_keepalive_ms);
  st.deltas = deltas;
  st.full_ns = TG_MS(a->cfg.sse_full_every_ms);
  int64_t now = tg_now();
  st.next_pipeline = now;
  st.next_keepalive = now + st.keepalive_ns;

  system_snapshot *first = api_latest(a);
  st.seen = first->version;
  http_buf_printf(&st.out, "retry: %d\n\n", a->cfg.sse_retry_ms);
  r = flush(&st);
  if (r == 0) r = send_full(&st, first, 0, 0);
  if (r == 0 && st.pipeline_ns) r = send_pipeline(&st);
  if (r == 0) run(&st);

  if (st.pending) snapshot_unref(st.pending);
  tg_broadcast_rx_drop(st.updates);
  http_buf_free(&st.out);
  atomic_fetch_sub_explicit(&a->clients, 1, memory_order_relaxed);
  if (a->deps.clients_add) a->deps.clients_add(a->deps.ctx, -1);
}
