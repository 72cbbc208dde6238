/* sse.c - one Server-Sent Events stream of snapshots; see sse.h. */
#include "sse.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* A stream's state. Invariant: `seen` is the version of the newest
 * snapshot sent or pending; a broadcast message not newer is stale
 * (already covered by a resync or the first event) and skipped. */
typedef struct stream {
  api_server *a;
  http_conn *c;
  tg_broadcast_rx *updates;
  http_buf out; /* the event being written */
  uint64_t seen;
  system_snapshot *pending; /* with ?every=: the newest not yet sent */
  int64_t every_ns, pipeline_ns, keepalive_ns;
  int64_t next_send; /* with ?every=: no snapshot event before */
  int64_t next_pipeline, next_keepalive;
} stream;

static void count(atomic_uint_fast64_t *f, uint64_t n) { atomic_fetch_add_explicit(f, n, memory_order_relaxed); }

static int flush(stream *st) {
  int r = http_buf_failed(&st->out) ? TG_ENOMEM : http_conn_write(st->c, st->out.data, st->out.len);
  http_buf_reset(&st->out);
  if (r == TG_ETIMEDOUT) count(&st->a->dropped, 1);
  st->next_keepalive = tg_now() + st->keepalive_ns;
  return r;
}

static int send_snapshot(stream *st, system_snapshot *s) {
  http_buf_printf(&st->out, "event: snapshot\nid: %" PRIu64 "\ndata: ", s->version);
  api_json_snapshot(&st->out, s);
  http_buf_puts(&st->out, "\n\n");
  count(&st->a->events, 1);
  st->next_send = tg_now() + st->every_ns;
  return flush(st);
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
  http_buf_printf(&st->out, "event: resync\nid: %" PRIu64 "\ndata: {\"missed\":%" PRIu64 ",\"snapshot\":", s->version,
                  missed);
  api_json_snapshot(&st->out, s);
  http_buf_puts(&st->out, "}\n\n");
  snapshot_unref(s);
  count(&st->a->resyncs, 1);
  count(&st->a->lagged_messages, missed);
  st->next_send = tg_now() + st->every_ns;
  return flush(st);
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
  if (st->every_ns == 0) {
    int r = send_snapshot(st, s);
    snapshot_unref(s);
    return r;
  }
  if (st->pending) {
    count(&st->a->coalesced, 1);
    snapshot_unref(st->pending);
  }
  st->pending = s;
  return 0;
}

static int send_pending(stream *st) {
  system_snapshot *s = st->pending;
  st->pending = NULL;
  int r = send_snapshot(st, s);
  snapshot_unref(s);
  return r;
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
  int every = 0, pipeline = a->cfg.sse_pipeline_ms;
  if (param_ms(req, "every", a->cfg.sse_every_max_ms, &every) != 0 ||
      param_ms(req, "pipeline_ms", 3600 * 1000, &pipeline) != 0) {
    static const char body[] = "{\"error\":\"every and pipeline_ms take milliseconds\",\"status\":400}\n";
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
  int64_t now = tg_now();
  st.next_pipeline = now;
  st.next_keepalive = now + st.keepalive_ns;

  system_snapshot *first = api_latest(a);
  st.seen = first->version;
  http_buf_printf(&st.out, "retry: %d\n\n", a->cfg.sse_retry_ms);
  r = send_snapshot(&st, first);
  snapshot_unref(first);
  if (r == 0 && st.pipeline_ns) r = send_pipeline(&st);
  if (r == 0) run(&st);

  if (st.pending) snapshot_unref(st.pending);
  tg_broadcast_rx_drop(st.updates);
  http_buf_free(&st.out);
  atomic_fetch_sub_explicit(&a->clients, 1, memory_order_relaxed);
  if (a->deps.clients_add) a->deps.clients_add(a->deps.ctx, -1);
}
