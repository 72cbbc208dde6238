/* test-http-sse.c - /api/stream over loopback: a fast client misses
 * nothing while a slow one falls behind and gets a resync; a client that
 * stops reading is dropped without holding anyone up; ?every= coalesces;
 * pipeline events and keepalives; the stream ends with the pipeline.
 *
 * The slow client is a plain thread on a blocking socket with a 4 KiB
 * receive buffer, and the server's send buffer is 4 KiB too, so a few
 * events fill the path between them and the server's stream blocks in its
 * write: a fixed, small amount of buffering instead of the kernel's
 * autotuned megabytes. */
#include "test-http.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 8192

/* What a client saw, in order. */
typedef struct seen {
  int n;
  struct {
    char kind; /* 's'napshot, 'r'esync, 'p'ipeline */
    uint64_t version;
    uint64_t missed;
  } ev[MAX_EVENTS];
  int comments;
  int eof;
} seen;

static void record(void *arg, sse_event *e) {
  seen *s = arg;
  ck_assert_int_lt(s->n, MAX_EVENTS);
  char kind = e->event[0];
  ck_assert_msg(kind == 's' || kind == 'r' || kind == 'p', "event %s", e->event);
  s->ev[s->n].kind = kind;
  s->ev[s->n].version = e->id;
  if (kind == 'r') {
    cJSON *j = cJSON_Parse(e->data);
    ck_assert_ptr_nonnull(j);
    s->ev[s->n].missed = (uint64_t)cJSON_GetObjectItem(j, "missed")->valuedouble;
    ck_assert_uint_eq((uint64_t)cJSON_GetObjectItem(cJSON_GetObjectItem(j, "snapshot"), "version")->valuedouble, e->id);
    cJSON_Delete(j);
  } else if (kind == 'p') {
    cJSON *j = cJSON_Parse(e->data);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "queues"), "telemetry"));
    cJSON_Delete(j);
  }
  s->n++;
}

/* Splits the response head from the stream; returns 1 once past it. */
static int past_head(sse_reader *rd, int *status) {
  char *end = rd->pending.len ? strstr(rd->pending.data, "\r\n\r\n") : NULL;
  if (!end) return 0;
  *status = atoi(rd->pending.data + 9);
  ck_assert_ptr_nonnull(strstr(rd->pending.data, "Content-Type: text/event-stream"));
  size_t used = (size_t)(end + 4 - rd->pending.data);
  memmove(rd->pending.data, end + 4, rd->pending.len - used + 1);
  rd->pending.len -= used;
  return 1;
}

/* ------------------------------------------------------------ a task client */

typedef struct stream_client {
  int port;
  const char *path;
  seen seen;
  atomic_uint_fast64_t last; /* newest version seen */
  atomic_int events;         /* snapshot and resync events so far */
  atomic_int pipelines;      /* pipeline events so far */
  atomic_int comments;       /* keepalive comments so far */
  atomic_int done;
} stream_client;

static void *stream_task(void *arg) {
  stream_client *sc = arg;
  tg_tcp *sock;
  ck_assert_int_eq(tg_tcp_connect(&sock, "127.0.0.1", sc->port), 0);
  char req[256];
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n", sc->path);
  ck_assert_int_eq(tg_tcp_write(sock, req, strlen(req)), 0);
  sse_reader rd = {0};
  int head = 0, status = 0, r;
  const char *data;
  size_t len;
  while ((r = tg_tcp_recv_dl(sock, &data, &len, tg_deadline_in(TG_SEC(30)))) == 0) {
    http_buf_append(&rd.pending, data, len);
    tg_tcp_consume(sock, len);
    if (!head && !(head = past_head(&rd, &status))) continue;
    ck_assert_int_eq(status, 200);
    int before = sc->seen.n;
    sse_parse(&rd, record, &sc->seen);
    for (int i = before; i < sc->seen.n; i++) {
      if (sc->seen.ev[i].kind == 'p') {
        atomic_fetch_add(&sc->pipelines, 1);
        continue;
      }
      atomic_store(&sc->last, sc->seen.ev[i].version);
      atomic_fetch_add(&sc->events, 1);
    }
    atomic_store(&sc->comments, rd.comments);
  }
  ck_assert_msg(r == TG_EOF, "stream ended with %s", tg_err_name(r));
  sc->seen.eof = 1;
  sc->seen.comments = rd.comments;
  http_buf_free(&rd.pending);
  tg_tcp_close(sock);
  atomic_store(&sc->done, 1);
  return NULL;
}

/* ------------------------------------------------------------ a thread client */

typedef struct slow_client {
  int port;
  pthread_t thread;
  atomic_int phase; /* 1: has the first event; main sets 2: read on; 3: ended */
  seen seen;
  int end_error; /* errno of the read that ended it, 0 for EOF */
} slow_client;

static void *slow_thread(void *arg) {
  slow_client *sc = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int rcvbuf = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sc->port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    sc->end_error = errno;
    atomic_store(&sc->phase, 3);
    return NULL;
  }
  static const char req[] = "GET /api/stream HTTP/1.1\r\nHost: t\r\n\r\n";
  ssize_t w = write(fd, req, sizeof req - 1);
  (void)w;
  sse_reader rd = {0};
  int head = 0, status = 0;
  char buf[1024]; /* small reads: a slow reader */
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
      sc->end_error = n == 0 ? 0 : errno;
      break;
    }
    http_buf_append(&rd.pending, buf, (size_t)n);
    if (!head && !(head = past_head(&rd, &status))) continue;
    sse_parse(&rd, record, &sc->seen);
    if (atomic_load(&sc->phase) == 0 && sc->seen.n > 0) {
      atomic_store(&sc->phase, 1);
      while (atomic_load(&sc->phase) != 2) usleep(1000); /* stop reading until told */
    }
  }
  sc->seen.eof = 1;
  http_buf_free(&rd.pending);
  close(fd);
  atomic_store(&sc->phase, 3);
  return NULL;
}

/* ------------------------------------------------------------ helpers */

/* How long a condition may take to come true: far more than any needs on
 * a quiet machine, enough for TSan on a loaded one. */
#define PATIENCE TG_SEC(30)

/* Waits until *v reaches want, polling every millisecond; fails naming
 * the caller's line and the value seen after PATIENCE. */
#define WAIT_UNTIL(v, want) wait_until_at((v), (want), #v, __LINE__)
static void wait_until_at(atomic_int *v, int want, const char *what, int line) {
  int64_t deadline = tg_deadline_in(PATIENCE);
  while (atomic_load(v) < want && tg_now() < deadline) tg_sleep(TG_MS(1));
  ck_assert_msg(atomic_load(v) >= want, "line %d: %s is %d after 30 s, want %d", line, what, atomic_load(v), want);
}

/* Publishes one snapshot and waits until the fast client has it, so the
 * fast client is never more than one message behind. */
static uint64_t publish_paced(fixture *f, stream_client *fast) {
  uint64_t v = fx_publish(f);
  int64_t deadline = tg_deadline_in(PATIENCE);
  while (atomic_load(&fast->last) < v && tg_now() < deadline) tg_sleep(TG_MS(1));
  ck_assert_uint_eq(atomic_load(&fast->last), v);
  return v;
}

static stream_figures figures(fixture *f);

/* Waits until the api has counted one of(): 0 after PATIENCE. */
static uint64_t wait_figure(fixture *f, uint64_t (*of)(const stream_figures *)) {
  int64_t deadline = tg_deadline_in(PATIENCE);
  for (;;) {
    stream_figures st = figures(f);
    if (of(&st) > 0 || tg_now() >= deadline) return of(&st);
    tg_sleep(TG_MS(1));
  }
}

static uint64_t resyncs_of(const stream_figures *st) { return st->resyncs; }

static stream_figures figures(fixture *f) {
  stream_figures st;
  api_server_stats(f->api, NULL, &st, NULL);
  return st;
}

/* Every snapshot event from the first to `last`, none missing, no resync. */
static void check_complete(const seen *s, uint64_t last) {
  uint64_t want = 0;
  for (int i = 0; i < s->n; i++) {
    if (s->ev[i].kind == 'p') continue;
    ck_assert_msg(s->ev[i].kind == 's', "the fast client got a %c event", s->ev[i].kind);
    ck_assert_uint_eq(s->ev[i].version, want);
    want++;
  }
  ck_assert_uint_eq(want, last + 1);
}

/* ------------------------------------------------------------ fast and slow */

static void *fast_and_slow_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 8, 100); /* events of ~15 KB: a few fill 4 KiB buffers */
  f.cfg.http.send_buffer = 4096;
  f.cfg.http.write_timeout_ms = 60000; /* slow, not dead: it must not be dropped */
  fx_start(&f);
  stream_client *fast = calloc(1, sizeof *fast);
  slow_client *slow = calloc(1, sizeof *slow);
  fast->port = slow->port = f.port;
  fast->path = "/api/stream";
  tg_task *ft;
  ck_assert_int_eq(tg_spawn(&ft, stream_task, fast, NULL), 0);
  WAIT_UNTIL(&fast->events, 1);
  ck_assert_int_eq(pthread_create(&slow->thread, NULL, slow_thread, slow), 0);
  WAIT_UNTIL(&slow->phase, 1);

  /* The slow client reads nothing now. 200 messages through a ring of 8:
   * its stream blocks in a write within a few and falls far behind, while
   * the fast client keeps up message by message. */
  for (int i = 0; i < 200; i++) publish_paced(&f, fast);
  ck_assert_uint_eq(figures(&f).resyncs, 0); /* the slow stream is stuck in its write */
  atomic_store(&slow->phase, 2);
  ck_assert_uint_ge(wait_figure(&f, resyncs_of), 1);
  for (int i = 0; i < 20; i++) publish_paced(&f, fast);
  fx_close(&f); /* the streams drain and end */
  WAIT_UNTIL(&fast->done, 1);
  WAIT_UNTIL(&slow->phase, 3);
  pthread_join(slow->thread, NULL);
  tg_task_join(ft, NULL);

  check_complete(&fast->seen, 220);
  ck_assert(fast->seen.eof);

  /* the slow one: snapshots, a resync that says how much it missed and
   * carries the current state (not the backlog), then only newer
   * snapshots, up to the last (a later lag would resync again) */
  const seen *s = &slow->seen;
  ck_assert_int_eq(slow->end_error, 0);
  int first_resync = -1;
  uint64_t prev = 0, missed = 0;
  for (int i = 0; i < s->n; i++) {
    if (i > 0)
      ck_assert_msg(s->ev[i].version > prev, "version %llu after %llu", (unsigned long long)s->ev[i].version,
                    (unsigned long long)prev);
    prev = s->ev[i].version;
    if (s->ev[i].kind != 'r') continue;
    ck_assert_uint_gt(s->ev[i].missed, 0);
    missed += s->ev[i].missed;
    if (first_resync < 0) first_resync = i;
  }
  ck_assert_int_gt(first_resync, 0);
  ck_assert_uint_ge(s->ev[first_resync].version, 200);
  ck_assert_uint_eq(prev, 220);
  stream_figures st = figures(&f);
  ck_assert_uint_eq(st.lagged_messages, missed);
  ck_assert_uint_eq(st.dropped, 0);
  ck_assert_uint_eq(st.clients, 0);
  free(fast);
  free(slow);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_sse_fast_client_misses_nothing_slow_client_resyncs) { tg_test_run(1, 0, fast_and_slow_body, NULL); }
END_TEST

START_TEST(test_sse_fast_and_slow_two_workers) { tg_test_run(2, 0, fast_and_slow_body, NULL); }
END_TEST

/* ------------------------------------------------------------ dropped */

static void *dropped_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 8, 100);
  f.cfg.http.send_buffer = 4096;
  f.cfg.http.write_timeout_ms = 300;
  fx_start(&f);
  stream_client *fast = calloc(1, sizeof *fast);
  slow_client *slow = calloc(1, sizeof *slow);
  fast->port = slow->port = f.port;
  fast->path = "/api/stream";
  tg_task *ft;
  ck_assert_int_eq(tg_spawn(&ft, stream_task, fast, NULL), 0);
  WAIT_UNTIL(&fast->events, 1);
  ck_assert_int_eq(pthread_create(&slow->thread, NULL, slow_thread, slow), 0);
  WAIT_UNTIL(&slow->phase, 1);

  /* The slow client never reads again: after write_timeout_ms its stream
   * is dropped, and the fast one went on all along. */
  int64_t t0 = tg_now(), deadline = tg_deadline_in(PATIENCE);
  uint64_t last = 0;
  /* One snapshot every 5 ms or so: the fast client's record of them
   * (MAX_EVENTS) holds the 30 s of patience. */
  while (figures(&f).dropped == 0 && tg_now() < deadline) {
    last = publish_paced(&f, fast);
    tg_sleep(TG_MS(5));
  }
  ck_assert_uint_eq(figures(&f).dropped, 1);
  ck_assert_int_ge(tg_now() - t0, TG_MS(300));
  for (int i = 0; i < 10; i++) last = publish_paced(&f, fast);
  atomic_store(&slow->phase, 2);
  WAIT_UNTIL(&slow->phase, 3);
  pthread_join(slow->thread, NULL);
  ck_assert(slow->seen.eof); /* the server closed it */
  fx_close(&f);
  WAIT_UNTIL(&fast->done, 1);
  tg_task_join(ft, NULL);
  check_complete(&fast->seen, last);
  http_server_stats h;
  api_server_stats(f.api, &h, NULL, NULL);
  ck_assert_uint_eq(h.write_timeouts, 1);
  free(fast);
  free(slow);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_sse_client_that_stops_reading_is_dropped) { tg_test_run(1, 0, dropped_body, NULL); }
END_TEST

/* ------------------------------------------------------------ every */

static void *every_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 64, 3);
  fx_start(&f);
  stream_client *c = calloc(1, sizeof *c);
  c->port = f.port;
  c->path = "/api/stream?every=100";
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, stream_task, c, NULL), 0);
  WAIT_UNTIL(&c->events, 1);
  int64_t t0 = tg_now();
  /* 300 updates as fast as the aggregator can, with a yield between so
   * the stream reads them from the ring as they come */
  for (int i = 0; i < 300; i++) {
    fx_publish(&f);
    tg_yield();
  }
  int64_t deadline = tg_deadline_in(PATIENCE);
  while (atomic_load(&c->last) < 300 && tg_now() < deadline) tg_sleep(TG_MS(1));
  ck_assert_uint_eq(atomic_load(&c->last), 300); /* the newest always arrives */
  int64_t elapsed_ms = (tg_now() - t0) / 1000000;
  fx_close(&f);
  WAIT_UNTIL(&c->done, 1);
  tg_task_join(t, NULL);
  /* at most one snapshot event per 100 ms (plus the first), newest last */
  int events = atomic_load(&c->events);
  ck_assert_int_le(events, 2 + (int)(elapsed_ms / 100));
  stream_figures st = figures(&f);
  ck_assert_uint_eq(st.coalesced + (uint64_t)events - 1, 300);
  ck_assert_uint_eq(st.resyncs, 0);
  free(c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_sse_every_coalesces) { tg_test_run(1, 0, every_body, NULL); }
END_TEST

/* ------------------------------------------------------------ pipeline, keepalive, end */

static void *pipeline_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 2);
  f.cfg.sse_keepalive_ms = 30;
  f.figures.telemetry.capacity = 50;
  fx_start(&f);
  stream_client *c = calloc(1, sizeof *c);
  c->port = f.port;
  c->path = "/api/stream?pipeline_ms=40";
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, stream_task, c, NULL), 0);
  WAIT_UNTIL(&c->events, 1);
  /* Idle: pipeline events and keepalive comments only, every 40 ms. */
  WAIT_UNTIL(&c->pipelines, 3);
  ck_assert_int_eq(atomic_load(&f.clients), 1);
  fx_publish(&f);
  fx_close(&f);
  WAIT_UNTIL(&c->done, 1);
  tg_task_join(t, NULL);
  int pipelines = 0;
  for (int i = 0; i < c->seen.n; i++) pipelines += c->seen.ev[i].kind == 'p';
  ck_assert_int_ge(pipelines, 3);
  ck_assert_uint_eq(atomic_load(&c->last), 1);
  free(c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_sse_pipeline_events_and_end) { tg_test_run(1, 0, pipeline_body, NULL); }
END_TEST

static void *keepalive_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  f.cfg.sse_keepalive_ms = 20;
  fx_start(&f);
  stream_client *c = calloc(1, sizeof *c);
  c->port = f.port;
  c->path = "/api/stream";
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, stream_task, c, NULL), 0);
  WAIT_UNTIL(&c->events, 1);
  WAIT_UNTIL(&c->comments, 2); /* idle: a comment every 20 ms */
  fx_close(&f);
  WAIT_UNTIL(&c->done, 1);
  tg_task_join(t, NULL);
  ck_assert_int_ge(c->seen.comments, 2);
  free(c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_sse_keepalive_comments) { tg_test_run(1, 0, keepalive_body, NULL); }
END_TEST

static void *bad_params_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 1);
  fx_start(&f);
  client c;
  cl_request(&c, f.port, "GET /api/stream?every=-5 HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 400);
  cl_close(&c);
  cl_request(&c, f.port, "GET /api/stream?every=99999999 HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 400);
  cl_close(&c);
  cl_request(&c, f.port, "HEAD /api/stream HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 200);
  ck_assert_str_eq(c.r[0].content_type, "text/event-stream; charset=utf-8");
  cl_close(&c);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_sse_bad_parameters) { tg_test_run(1, 0, bad_params_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("http-sse");
  tg_test_add(s, "fast_client_misses_nothing_slow_client_resyncs",
              test_sse_fast_client_misses_nothing_slow_client_resyncs, 120);
  tg_test_add(s, "fast_and_slow_two_workers", test_sse_fast_and_slow_two_workers, 120);
  tg_test_add(s, "client_that_stops_reading_is_dropped", test_sse_client_that_stops_reading_is_dropped, 120);
  tg_test_add(s, "every_coalesces", test_sse_every_coalesces, 90);
  tg_test_add(s, "pipeline_events_and_end", test_sse_pipeline_events_and_end, 90);
  tg_test_add(s, "keepalive_comments", test_sse_keepalive_comments, 90);
  tg_test_add(s, "bad_parameters", test_sse_bad_parameters, 90);
  return tg_test_main(s);
}
