/* test-nats.h - a real nats-server with JetStream for the tests, and a
 * publisher that speaks for devices through libnats.
 *
 * The server listens on 127.0.0.1 on a free port and keeps its JetStream
 * store in the test's directory, so stopping it and starting it again on
 * the same port and directory keeps the stream. It dies with the test
 * (PR_SET_PDEATHSIG). Without /usr/sbin/nats-server (Debian's
 * nats-server) the suite says so and exits 77, which CTest counts as
 * skipped; scripts/deps.sh installs it, so it runs in CI.
 *
 * The publisher publishes to JetStream asynchronously and, when closed,
 * waits until the server acknowledged every message: then they are in
 * the stream. It runs libnats' threads inside the test process. */
#ifndef TELEGATE_TEST_NATS_H
#define TELEGATE_TEST_NATS_H

#include "test-serve-process.h"

#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>

#define NATS_SERVER_BIN "/usr/sbin/nats-server"
#define NATS_SKIP       77 /* the skip status CTest knows (SKIP_RETURN_CODE) */

typedef struct nats_server {
  proc p;
  int port;
  char conf[160];
} nats_server;

/* Exits 77 with a clear message when nats-server is not installed. */
static inline void nats_server_required(void) {
  if (access(NATS_SERVER_BIN, X_OK) == 0) return;
  fprintf(stderr, "SKIPPED: no %s - install Debian's nats-server (scripts/deps.sh does) to run the NATS tests\n",
          NATS_SERVER_BIN);
  exit(NATS_SKIP);
}

/* A server to be started on a free port, its configuration and its
 * JetStream store in d (named by the port: several servers may share d); `extra` (NULL: none) is appended to the
 * configuration (the partition mapping). */
static inline void nats_server_init(proc_dir *d, nats_server *s, const char *extra) {
  s->port = proc_free_port();
  snprintf(s->conf, sizeof s->conf, "%s/nats-server-%d.conf", d->path, s->port);
  FILE *f = fopen(s->conf, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f, "listen: 127.0.0.1:%d\njetstream { store_dir: \"%s/jetstream-%d\" }\n%s", s->port, d->path, s->port,
          extra ? extra : "");
  fclose(f);
}

/* Starts it and returns once it takes connections. */
static inline void nats_server_start(proc_dir *d, nats_server *s) {
  proc_server_start(d, &s->p, "nats-server", NATS_SERVER_BIN, s->conf, s->port);
}

static inline void nats_server_url(const nats_server *s, char *url, size_t len) {
  snprintf(url, len, "nats://127.0.0.1:%d", s->port);
}

/* A JetStream context through server s, for the test's own looks and
 * settings. */
static inline void nats_js_connect(const nats_server *s, natsConnection **nc, jsCtx **js) {
  char url[64];
  nats_server_url(s, url, sizeof url);
  ck_assert_int_eq(natsConnection_ConnectTo(nc, url), NATS_OK);
  ck_assert_int_eq(natsConnection_JetStream(js, *nc, NULL), NATS_OK);
}

typedef struct nats_pub {
  natsConnection *nc;
  jsCtx *js;
  atomic_int failed; /* messages JetStream did not store */
  char failure[256]; /* the first one's reason */
} nats_pub;

/* libnats' thread: a message JetStream refused or did not acknowledge. */
static inline void nats_pub_failed(jsCtx *js, jsPubAckErr *pae, void *closure) {
  (void)js;
  nats_pub *p = closure;
  if (atomic_fetch_add(&p->failed, 1) == 0)
    snprintf(p->failure, sizeof p->failure, "%s (%d): %s", natsStatus_GetText(pae->Err), (int)pae->ErrCode,
             pae->ErrText ? pae->ErrText : "");
}

static inline void nats_pub_open(nats_pub *p, const nats_server *s) {
  char url[64];
  nats_server_url(s, url, sizeof url);
  ck_assert_msg(natsConnection_ConnectTo(&p->nc, url) == NATS_OK, "cannot connect to %s: %s", url,
                nats_GetLastError(NULL));
  jsOptions o;
  jsOptions_Init(&o);
  o.PublishAsync.MaxPending = 1024; /* publishing waits past this many unacknowledged */
  o.PublishAsync.ErrHandler = nats_pub_failed;
  o.PublishAsync.ErrHandlerClosure = p;
  atomic_store(&p->failed, 0);
  ck_assert_int_eq(natsConnection_JetStream(&p->js, p->nc, &o), NATS_OK);
}

static inline void nats_pub_send(nats_pub *p, const char *subject, const char *payload) {
  natsStatus s = js_PublishAsync(p->js, subject, payload, (int)strlen(payload), NULL);
  ck_assert_msg(s == NATS_OK, "publish to %s: %s", subject, nats_GetLastError(NULL));
}

/* Waits until the stream holds every message sent, then disconnects. */
static inline void nats_pub_close(nats_pub *p) {
  jsPubOptions o;
  jsPubOptions_Init(&o);
  o.MaxWait = PROC_PATIENCE_MS;
  natsStatus s = js_PublishAsyncComplete(p->js, &o);
  ck_assert_msg(s == NATS_OK, "messages not acknowledged by JetStream: %s", nats_GetLastError(NULL));
  natsMsgList failed = {0};
  if (js_PublishAsyncGetPendingList(&failed, p->js) == NATS_OK) {
    int n = failed.Count;
    natsMsgList_Destroy(&failed);
    ck_assert_msg(n == 0, "%d messages were not stored", n);
  }
  ck_assert_msg(atomic_load(&p->failed) == 0, "%d messages not stored, the first: %s", atomic_load(&p->failed),
                p->failure);
  jsCtx_Destroy(p->js);
  natsConnection_Destroy(p->nc);
}

/* A JSON reading of seq, without a device: the subject names it. */
static inline void nats_json_reading(char *buf, size_t len, int seq) {
  snprintf(buf, len, "{\"seq\":%d,\"ts\":%lld,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}", seq,
           1732590000000LL + seq);
}

/* Polls until serve's /readyz answers status. */
static inline void serve_wait_ready(const proc *p, int status) {
  static char resp[4096];
  int got = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && (got = serve_get(p, "/readyz", resp, sizeof resp)) != status; i++)
    proc_sleep_ms(10);
  ck_assert_msg(got == status, "/readyz is %d, waited for %d: %s", got, status, resp);
}

/* Polls until serve has fetched at least `messages` and acknowledged
 * every message it fetched, with nothing left in the stream for it: with
 * no more publishing, all the stream holds is committed. Returns the
 * messages fetched. */
static inline int64_t serve_wait_nats_idle(const proc *p, int64_t messages) {
  static char resp[1 << 18];
  int64_t fetched = -1, acks = -1, pending = -1, inflight = -1;
  for (int i = 0; i < PROC_PATIENCE_MS / 10; i++) {
    serve_get(p, "/metrics", resp, sizeof resp);
    fetched = metric_in(resp, "telegate_nats_messages_total");
    acks = metric_in(resp, "telegate_nats_acks_total");
    pending = metric_in(resp, "telegate_nats_consumer_pending");
    inflight = metric_in(resp, "telegate_nats_inflight");
    if (fetched >= messages && acks == fetched && pending == 0 && inflight == 0) return fetched;
    proc_sleep_ms(10);
  }
  ck_abort_msg("NATS not idle: %lld fetched (waited for %lld), %lld acked, %lld pending, %lld in flight",
               (long long)fetched, (long long)messages, (long long)acks, (long long)pending, (long long)inflight);
  return -1;
}

#endif
