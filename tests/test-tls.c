/* test-tls.c - TLS over libtg sockets with real OpenSSL and certificates
 * made for the run (scripts/tls-certs.sh): an echo of lines through the
 * select path, a large transfer through a small buffer, client
 * certificates required, bad files, a wrong CA, reload with old and new
 * connections, a stalled and a plain-text peer, openssl s_client, a
 * try-write that writes all or nothing, and the stream calls over plain
 * TCP. */
#include "helpers.h"
#include "stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char certs[256]; /* made once in main, before the cases fork */

static const char *path(const char *name) {
  static char buf[4][320];
  static int next;
  char *p = buf[next++ & 3];
  snprintf(p, sizeof buf[0], "%s/%s", certs, name);
  return p;
}

static tls_context *server_ctx(const char *cert, const char *ca) {
  char pem[64], key[64], err[256] = "";
  snprintf(pem, sizeof pem, "%s.pem", cert);
  snprintf(key, sizeof key, "%s.key", cert);
  char pem_path[320], key_path[320];
  snprintf(pem_path, sizeof pem_path, "%s", path(pem));
  snprintf(key_path, sizeof key_path, "%s", path(key));
  tls_context *ctx;
  tls_options o = {.server = 1, .cert_file = pem_path, .key_file = key_path, .ca_file = ca ? path(ca) : NULL};
  ck_assert_msg(tls_context_new(&ctx, &o, err, sizeof err) == 0, "server context: %s", err);
  return ctx;
}

/* A client that verifies against ca.pem, presenting `cert` if not NULL. */
static tls_context *client_ctx(const char *cert) {
  char pem[320] = "", key[320] = "", err[256] = "";
  if (cert) {
    snprintf(pem, sizeof pem, "%s/%s.pem", certs, cert);
    snprintf(key, sizeof key, "%s/%s.key", certs, cert);
  }
  tls_context *ctx;
  tls_options o = {.cert_file = cert ? pem : NULL, .key_file = cert ? key : NULL, .ca_file = path("ca.pem")};
  ck_assert_msg(tls_context_new(&ctx, &o, err, sizeof err) == 0, "client context: %s", err);
  return ctx;
}

/* ------------------------------------------------------------ the echo server */

typedef struct server {
  tls_context *ctx;
  tg_tcp *listener;
  int port;
  tg_cancel *stop;
  size_t recv_buffer; /* 0: the default */
  int accept_result;  /* of the last handshake */
  char accept_error[256];
  char peer[256]; /* the client certificate's subject */
  size_t echoed;
  int close_after; /* lines after which the server closes; 0: never */
  int lines;
  int end; /* how the last connection ended */
} server;

static server server_start(tls_context *ctx) {
  server s = {.ctx = ctx};
  ck_assert_int_eq(tg_tcp_listen(&s.listener, "127.0.0.1", 0, 16), 0);
  s.port = tg_tcp_port(s.listener);
  ck_assert_int_eq(tg_cancel_new(&s.stop, "stop"), 0);
  return s;
}

static void server_free(server *s) {
  tg_tcp_close(s->listener);
  tg_cancel_free(s->stop);
}

/* Waits for plaintext the way a connection task that also selects on
 * other things does (tls.h's note on select). */
static int recv_selecting(server *s, stream *io, tg_tcp_view *v) {
  for (;;) {
    if (!stream_ready(io)) {
      tg_case cs[2] = {tg_cancel_case(s->stop), stream_recv_case(io)};
      int w = tg_select(cs, 2, tg_deadline_in(TG_MS(20000)));
      if (w == 0) return TG_ECANCELED;
      if (w < 0) return w;
    }
    int r = stream_recv_dl(io, v, 0);
    if (r != TG_ETIMEDOUT) return r;
  }
}

/* One connection: handshake, then every complete line written back,
 * until the peer closes or the stop token fires. */
static void *echo_one(void *arg) {
  server *s = arg;
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_accept(s->listener, &c), 0);
  stream io;
  stream_opts o = {
      .tls = s->ctx, .recv_buffer = s->recv_buffer, .cancel = s->stop, .deadline_ns = tg_deadline_in(TG_MS(20000))};
  s->accept_result = stream_open(&io, c, &o, s->accept_error, sizeof s->accept_error);
  if (s->accept_result != 0) {
    tg_tcp_close(c);
    return NULL;
  }
  if (io.tls) tls_peer_subject(io.tls, s->peer, sizeof s->peer);
  tg_tcp_view v;
  int r;
  while ((r = recv_selecting(s, &io, &v)) == 0) {
    const char *nl = memrchr(v.data, '\n', v.len);
    if (!nl) continue;
    size_t n = (size_t)(nl - v.data) + 1;
    ck_assert_int_eq(stream_write_dl(&io, v.data, n, tg_deadline_in(TG_MS(20000))), 0);
    s->echoed += n;
    for (size_t i = 0; i < n; i++) s->lines += v.data[i] == '\n';
    stream_consume(&io, n);
    if (s->close_after && s->lines >= s->close_after) break;
  }
  s->end = r;
  stream_close(&io, tg_deadline_in(TG_MS(1000)));
  tg_tcp_close(c);
  return NULL;
}

static tg_task *serve_one(server *s) {
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, echo_one, s, NULL), 0);
  return t;
}

/* ------------------------------------------------------------ the client */

typedef struct client {
  tg_tcp *sock;
  stream io;
} client;

/* Connects, over TLS with ctx, plain without. */
static int client_connect(client *c, tls_context *ctx, int port, const char *host, char *err, size_t errlen) {
  *c = (client){0};
  ck_assert_int_eq(tg_tcp_connect(&c->sock, "127.0.0.1", port), 0);
  stream_opts o = {.tls = ctx, .host = host, .deadline_ns = tg_deadline_in(TG_MS(20000))};
  int r = stream_open(&c->io, c->sock, &o, err, errlen);
  if (r != 0) {
    tg_tcp_close(c->sock);
    c->sock = NULL;
  }
  return r;
}

static void client_close(client *c) {
  stream_close(&c->io, tg_deadline_in(TG_MS(1000)));
  tg_tcp_close(c->sock);
}

/* Reads exactly want bytes. */
static void read_exactly(stream *io, char *out, size_t want) {
  size_t got = 0;
  while (got < want) {
    tg_tcp_view v;
    int r = stream_recv_dl(io, &v, tg_deadline_in(TG_MS(20000)));
    ck_assert_msg(r == 0, "recv: %s %s", tg_err_name(r), io->tls ? tls_last_error(io->tls) : "");
    size_t take = v.len < want - got ? v.len : want - got;
    memcpy(out + got, v.data, take);
    stream_consume(io, take);
    got += take;
  }
}

static void echo_check(stream *io, const char *line) {
  ck_assert_int_eq(stream_write_dl(io, line, strlen(line), tg_deadline_in(TG_MS(20000))), 0);
  char back[256] = {0};
  read_exactly(io, back, strlen(line));
  ck_assert_str_eq(back, line);
}

/* ------------------------------------------------------------ cases */

/* Lines split across writes come back whole; the client verified the
 * server by CA and by name, and knows whom it talks to. */
static void *echo_body(void *arg) {
  (void)arg;
  tls_context *sctx = server_ctx("server-1", NULL), *cctx = client_ctx(NULL);
  server s = server_start(sctx);
  tg_task *task = serve_one(&s);
  client c;
  char err[256] = "";
  ck_assert_msg(client_connect(&c, cctx, s.port, "127.0.0.1", err, sizeof err) == 0, "%s", err);
  char subject[256], desc[128];
  tls_peer_subject(c.io.tls, subject, sizeof subject);
  ck_assert_str_eq(subject, "CN=server-1");
  tls_describe(c.io.tls, desc, sizeof desc);
  ck_assert_msg(strncmp(desc, "TLSv1.3 ", 8) == 0, "%s", desc);
  const char *a = "{\"device\":\"7\",\"seq\":1}\n{\"device\":\"7\",";
  const char *want = "{\"device\":\"7\",\"seq\":1}\n{\"device\":\"7\",\"seq\":2}\n";
  char back[64] = {0};
  ck_assert_int_eq(tls_write_dl(c.io.tls, a, strlen(a), tg_deadline_in(TG_MS(20000))), 0);
  read_exactly(&c.io, back, 23);
  /* The last write went out whole, so a try-write finds the socket idle. */
  ck_assert_int_eq(tls_try_write(c.io.tls, "\"seq\":2}\n", 9), 0);
  read_exactly(&c.io, back + 23, strlen(want) - 23);
  ck_assert_str_eq(back, want);
  client_close(&c);
  tg_task_join(task, NULL);
  ck_assert_int_eq(s.accept_result, 0);
  ck_assert_int_eq(s.end, TG_EOF); /* close_notify */
  ck_assert_str_eq(s.peer, "");
  server_free(&s);
  tls_context_free(sctx);
  tls_context_free(cctx);
  return NULL;
}

START_TEST(test_tls_echo_lines) { tg_test_run(1, 0, echo_body, NULL); }
END_TEST

/* 8 MiB of numbered lines through a 256-byte buffer, over TLS and plain
 * (the same stream calls): plaintext waits past a full buffer (ready with
 * nothing on the socket) and every byte comes back in order, while the
 * client writes and reads at once. */
typedef struct bulk {
  stream *io;
  size_t total;
} bulk;

static void *bulk_writer(void *arg) {
  bulk *b = arg;
  char line[48];
  size_t sent = 0;
  for (uint32_t i = 0; sent < b->total; i++) {
    int n = snprintf(line, sizeof line, "%08u-abcdefghijklmnopq\n", i);
    ck_assert_int_eq(stream_write_dl(b->io, line, (size_t)n, tg_deadline_in(TG_MS(20000))), 0);
    sent += (size_t)n;
  }
  return NULL;
}

static void *bulk_body(void *arg) {
  int over_tls = arg != NULL;
  tls_context *sctx = over_tls ? server_ctx("server-1", NULL) : NULL, *cctx = over_tls ? client_ctx(NULL) : NULL;
  server s = server_start(sctx);
  s.recv_buffer = 256;
  tg_task *task = serve_one(&s);
  client c;
  char err[256] = "";
  ck_assert_msg(client_connect(&c, cctx, s.port, "localhost", err, sizeof err) == 0, "%s", err);
  bulk b = {.io = &c.io, .total = 8u << 20};
  b.total -= b.total % 27; /* whole lines */
  /* The writer and this reader share the connection on one worker, one
   * at a time: each waits in libtg, never inside OpenSSL. */
  tg_task *w;
  ck_assert_int_eq(tg_spawn(&w, bulk_writer, &b, NULL), 0);
  size_t got = 0, wrong = 0;
  char expect[48];
  while (got < b.total) {
    tg_tcp_view v;
    int r = stream_recv_dl(&c.io, &v, tg_deadline_in(TG_MS(30000)));
    ck_assert_msg(r == 0, "recv: %s", tg_err_name(r));
    size_t whole = v.len - v.len % 27;
    for (size_t i = 0; i < whole; i += 27) {
      snprintf(expect, sizeof expect, "%08zu-abcdefghijklmnopq\n", (got + i) / 27);
      if (memcmp(v.data + i, expect, 27) != 0) wrong++;
    }
    stream_consume(&c.io, whole);
    got += whole;
  }
  tg_task_join(w, NULL);
  ck_assert_uint_eq(wrong, 0);
  client_close(&c);
  tg_task_join(task, NULL);
  ck_assert_uint_eq(s.echoed, b.total);
  ck_assert_int_eq(s.end, TG_EOF);
  server_free(&s);
  if (sctx) tls_context_free(sctx);
  if (cctx) tls_context_free(cctx);
  return NULL;
}

START_TEST(test_tls_bulk_small_buffer) { tg_test_run(1, 0, bulk_body, (void *)1); }
END_TEST

START_TEST(test_tls_bulk_plain_stream) { tg_test_run(1, 0, bulk_body, NULL); }
END_TEST

/* With a client CA, a client without a certificate is refused (the
 * server's handshake fails; the client learns it at its first read, as
 * TLS 1.3 has it), and one with a certificate from that CA gets in and is
 * known by its subject. */
static void *client_cert_body(void *arg) {
  (void)arg;
  tls_context *sctx = server_ctx("server-1", "ca.pem");
  tls_context *anon = client_ctx(NULL), *device = client_ctx("client");
  server s = server_start(sctx);
  tg_task *task = serve_one(&s);
  client c;
  char err[256] = "";
  int r = client_connect(&c, anon, s.port, "127.0.0.1", err, sizeof err);
  if (r == 0) {
    const char *d;
    size_t n;
    tls_write_dl(c.io.tls, "x\n", 2, tg_deadline_in(TG_MS(20000)));
    r = tls_recv_dl(c.io.tls, &d, &n, tg_deadline_in(TG_MS(20000)));
    ck_assert_msg(r == -EPROTO || r == TG_EOF || r == -ECONNRESET, "read: %s", tg_err_name(r));
    if (r == -EPROTO)
      ck_assert_msg(strstr(tls_last_error(c.io.tls), "certificate required"), "%s", tls_last_error(c.io.tls));
    client_close(&c);
  }
  tg_task_join(task, NULL);
  ck_assert_int_eq(s.accept_result, -EPROTO);
  ck_assert_msg(strstr(s.accept_error, "certificate"), "%s", s.accept_error);

  task = serve_one(&s);
  ck_assert_msg(client_connect(&c, device, s.port, "127.0.0.1", err, sizeof err) == 0, "%s", err);
  echo_check(&c.io, "hello\n");
  client_close(&c);
  tg_task_join(task, NULL);
  ck_assert_int_eq(s.accept_result, 0);
  ck_assert_str_eq(s.peer, "CN=client");
  server_free(&s);
  tls_context_free(sctx);
  tls_context_free(anon);
  tls_context_free(device);
  return NULL;
}

START_TEST(test_tls_client_cert_required) { tg_test_run(1, 0, client_cert_body, NULL); }
END_TEST

/* Files that are missing, swapped or do not match are refused with a
 * reason that names them. */
static void *bad_files_body(void *arg) {
  (void)arg;
  char err[256];
  tls_context *ctx = NULL;
  tls_options o = {.server = 1, .cert_file = "/nonexistent/cert.pem", .key_file = path("server-1.key")};
  ck_assert_int_eq(tls_context_new(&ctx, &o, err, sizeof err), TG_EINVAL);
  ck_assert_ptr_null(ctx);
  ck_assert_msg(strstr(err, "/nonexistent/cert.pem") && strstr(err, "No such file"), "%s", err);

  char cert[320];
  snprintf(cert, sizeof cert, "%s", path("server-1.pem"));
  o = (tls_options){.server = 1, .cert_file = cert, .key_file = path("server-2.key")};
  ck_assert_int_eq(tls_context_new(&ctx, &o, err, sizeof err), TG_EINVAL);
  ck_assert_msg(strstr(err, "server-2.key") && strstr(err, "mismatch"), "%s", err);

  o = (tls_options){.server = 1, .cert_file = path("server-1.key"), .key_file = path("server-1.key")};
  ck_assert_int_eq(tls_context_new(&ctx, &o, err, sizeof err), TG_EINVAL);
  ck_assert_msg(strstr(err, "bad TLS certificate"), "%s", err);

  o = (tls_options){.server = 1};
  ck_assert_int_eq(tls_context_new(&ctx, &o, err, sizeof err), TG_EINVAL);
  ck_assert_msg(strstr(err, "needs a certificate"), "%s", err);
  return NULL;
}

START_TEST(test_tls_bad_files) { tg_test_run(1, 0, bad_files_body, NULL); }
END_TEST

/* A client that trusts another CA, or checks another name, refuses the
 * server; one that is told to be insecure does not check at all. */
static void *verify_body(void *arg) {
  (void)arg;
  tls_context *sctx = server_ctx("server-1", NULL);
  char other_ca[320], err[256] = "";
  snprintf(other_ca, sizeof other_ca, "%s/other/ca.pem", certs);
  tls_context *wrong_ca, *insecure, *right = client_ctx(NULL);
  ck_assert_int_eq(tls_context_new(&wrong_ca, &(tls_options){.ca_file = other_ca}, err, sizeof err), 0);
  ck_assert_int_eq(tls_context_new(&insecure, &(tls_options){.insecure = 1}, err, sizeof err), 0);
  server s = server_start(sctx);
  client c;

  tg_task *task = serve_one(&s);
  ck_assert_int_eq(client_connect(&c, wrong_ca, s.port, "127.0.0.1", err, sizeof err), -EPROTO);
  ck_assert_msg(strstr(err, "certificate verify failed"), "%s", err);
  tg_task_join(task, NULL);
  ck_assert_int_eq(s.accept_result, -EPROTO); /* the client's alert */

  task = serve_one(&s);
  ck_assert_int_eq(client_connect(&c, right, s.port, "gateway.example", err, sizeof err), -EPROTO);
  ck_assert_msg(strstr(err, "hostname mismatch"), "%s", err);
  tg_task_join(task, NULL);

  task = serve_one(&s);
  ck_assert_msg(client_connect(&c, insecure, s.port, "gateway.example", err, sizeof err) == 0, "%s", err);
  echo_check(&c.io, "trusting\n");
  client_close(&c);
  tg_task_join(task, NULL);

  server_free(&s);
  tls_context_free(sctx);
  tls_context_free(wrong_ca);
  tls_context_free(insecure);
  tls_context_free(right);
  return NULL;
}

START_TEST(test_tls_verify) { tg_test_run(1, 0, verify_body, NULL); }
END_TEST

/* Reload: a connection made before goes on with the old certificate, a
 * new one sees the new certificate; bad files change nothing. */
static void *reload_body(void *arg) {
  (void)arg;
  tls_context *sctx = server_ctx("server-1", NULL), *cctx = client_ctx(NULL);
  server before = server_start(sctx), after = server_start(sctx);
  tg_task *t1 = serve_one(&before);
  client old;
  char err[256] = "", subject[256], desc[256];
  ck_assert_msg(client_connect(&old, cctx, before.port, "127.0.0.1", err, sizeof err) == 0, "%s", err);
  echo_check(&old.io, "before\n");

  char cert[320];
  snprintf(cert, sizeof cert, "%s", path("server-2.pem"));
  ck_assert_msg(tls_context_reload(sctx,
                                   &(tls_options){.server = 1, .cert_file = cert, .key_file = path("server-2.key")},
                                   err, sizeof err) == 0,
                "%s", err);
  tls_context_describe(sctx, desc, sizeof desc);
  ck_assert_msg(strncmp(desc, "CN=server-2, expires ", 21) == 0, "%s", desc);
  ck_assert_int_eq(tls_context_reload(sctx, &(tls_options){.server = 1, .cert_file = cert, .key_file = "/nonexistent"},
                                      err, sizeof err),
                   TG_EINVAL);
  ck_assert_msg(strstr(err, "/nonexistent"), "%s", err);

  tg_task *t2 = serve_one(&after);
  client fresh;
  ck_assert_msg(client_connect(&fresh, cctx, after.port, "127.0.0.1", err, sizeof err) == 0, "%s", err);
  tls_peer_subject(fresh.io.tls, subject, sizeof subject);
  ck_assert_str_eq(subject, "CN=server-2");
  echo_check(&fresh.io, "after\n");
  echo_check(&old.io, "still there\n");
  tls_peer_subject(old.io.tls, subject, sizeof subject);
  ck_assert_str_eq(subject, "CN=server-1");
  client_close(&fresh);
  client_close(&old);
  tg_task_join(t1, NULL);
  tg_task_join(t2, NULL);
  server_free(&before);
  server_free(&after);
  tls_context_free(sctx);
  tls_context_free(cctx);
  return NULL;
}

START_TEST(test_tls_reload) { tg_test_run(1, 0, reload_body, NULL); }
END_TEST

/* A peer that connects and says nothing costs the handshake its deadline,
 * not more; a peer that speaks plain text is refused; the stop token
 * ends a waiting handshake. */
typedef struct stalled {
  tls_context *ctx;
  tg_tcp *listener;
  tg_cancel *cancel;
  int64_t deadline;
  int result;
  char err[256];
} stalled;

static void *accept_once(void *arg) {
  stalled *st = arg;
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_accept(st->listener, &c), 0);
  tls_conn *t = NULL;
  st->result = tls_accept_dl(&t, st->ctx, c, st->cancel, st->deadline, st->err, sizeof st->err);
  ck_assert_ptr_null(t);
  tg_tcp_close(c);
  return NULL;
}

static void *stalled_body(void *arg) {
  (void)arg;
  stalled st = {.ctx = server_ctx("server-1", NULL)};
  ck_assert_int_eq(tg_tcp_listen(&st.listener, "127.0.0.1", 0, 4), 0);
  int port = tg_tcp_port(st.listener);
  tg_tcp *peer;

  int64_t t0 = tg_now();
  st.deadline = tg_deadline_in(TG_MS(200));
  tg_task *t;
  tg_spawn(&t, accept_once, &st, NULL);
  ck_assert_int_eq(tg_tcp_connect(&peer, "127.0.0.1", port), 0);
  tg_task_join(t, NULL);
  ck_assert_int_eq(st.result, TG_ETIMEDOUT);
  ck_assert_int_ge(tg_now() - t0, TG_MS(200));
  ck_assert_msg(strstr(st.err, "timed out"), "%s", st.err);
  tg_tcp_close(peer);

  st.deadline = tg_deadline_in(TG_MS(20000));
  tg_spawn(&t, accept_once, &st, NULL);
  ck_assert_int_eq(tg_tcp_connect(&peer, "127.0.0.1", port), 0);
  const char *plain = "{\"device\":\"7\",\"seq\":1,\"temp\":20}\n";
  ck_assert_int_eq(tg_tcp_write(peer, plain, strlen(plain)), 0);
  tg_task_join(t, NULL);
  ck_assert_int_eq(st.result, -EPROTO);
  ck_assert_msg(strstr(st.err, "TLS handshake failed"), "%s", st.err);
  tg_tcp_close(peer);

  ck_assert_int_eq(tg_cancel_new(&st.cancel, "stop"), 0);
  tg_spawn(&t, accept_once, &st, NULL);
  ck_assert_int_eq(tg_tcp_connect(&peer, "127.0.0.1", port), 0);
  tg_cancel_fire(st.cancel);
  tg_task_join(t, NULL);
  ck_assert_int_eq(st.result, TG_ECANCELED);
  tg_tcp_close(peer);

  tg_cancel_free(st.cancel);
  tg_tcp_close(st.listener);
  tls_context_free(st.ctx);
  return NULL;
}

START_TEST(test_tls_stalled_handshake) { tg_test_run(1, 0, stalled_body, NULL); }
END_TEST

/* tls_try_write writes all or nothing: a write bigger than the socket
 * buffers, to a peer that is not reading yet, goes out in the background;
 * the next try finds it still going and encrypts nothing (TG_EAGAIN);
 * once the peer reads, a try goes through, and the peer gets exactly the
 * first write and the last, in order. */
enum { BIG = 32 << 20 };

typedef struct late_reader {
  tls_context *ctx;
  tg_tcp *listener;
  tg_notify *go;
  size_t got, wrong;
  int end;
} late_reader;

/* The byte at offset `at` of what the peer should get. */
static char expected(size_t at) { return at < BIG ? (char)(at % 251) : "last\n"[at - BIG]; }

static void *read_late(void *arg) {
  late_reader *lr = arg;
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_accept(lr->listener, &c), 0);
  stream io;
  char err[256] = "";
  stream_opts o = {.tls = lr->ctx, .deadline_ns = tg_deadline_in(TG_MS(20000))};
  ck_assert_msg(stream_open(&io, c, &o, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(tg_notify_wait(lr->go), 0);
  tg_tcp_view v;
  while ((lr->end = stream_recv_dl(&io, &v, tg_deadline_in(TG_MS(20000)))) == 0) {
    for (size_t i = 0; i < v.len; i++, lr->got++) lr->wrong += lr->got >= BIG + 5 || v.data[i] != expected(lr->got);
    stream_consume(&io, v.len);
  }
  stream_close(&io, 0);
  tg_tcp_close(c);
  return NULL;
}

static void *try_write_body(void *arg) {
  (void)arg;
  late_reader lr = {.ctx = server_ctx("server-1", NULL)};
  tls_context *cctx = client_ctx(NULL);
  ck_assert_int_eq(tg_tcp_listen(&lr.listener, "127.0.0.1", 0, 4), 0);
  ck_assert_int_eq(tg_notify_new(&lr.go, "go"), 0);
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, read_late, &lr, NULL), 0);
  client c;
  char err[256] = "";
  ck_assert_msg(client_connect(&c, cctx, tg_tcp_port(lr.listener), "127.0.0.1", err, sizeof err) == 0, "%s", err);
  char *big = malloc(BIG);
  ck_assert_ptr_nonnull(big);
  for (size_t i = 0; i < BIG; i++) big[i] = (char)(i % 251);
  ck_assert_int_eq(stream_try_write(&c.io, big, BIG), 0);
  free(big); /* what did not go out at once is the socket's own copy */
  ck_assert_int_eq(stream_try_write(&c.io, "x", 1), TG_EAGAIN);
  tg_notify_one(lr.go);
  int r = TG_EAGAIN;
  for (int i = 0; i < 4000 && r == TG_EAGAIN; i++) /* until the peer has taken the big write: 40 s at most */
    if ((r = stream_try_write(&c.io, "last\n", 5)) == TG_EAGAIN) tg_sleep(TG_MS(10));
  ck_assert_int_eq(r, 0);
  client_close(&c);
  tg_task_join(t, NULL);
  ck_assert_int_eq(lr.end, TG_EOF);
  ck_assert_uint_eq(lr.got, (size_t)BIG + 5);
  ck_assert_uint_eq(lr.wrong, 0);
  tg_notify_free(lr.go);
  tg_tcp_close(lr.listener);
  tls_context_free(lr.ctx);
  tls_context_free(cctx);
  return NULL;
}

START_TEST(test_tls_try_write_all_or_nothing) { tg_test_run(1, 0, try_write_body, NULL); }
END_TEST

/* openssl s_client, another TLS implementation's view of ours: it
 * verifies the server against the CA, sends a line, gets it back. */
typedef struct s_client {
  int port;
  char out[4096];
} s_client;

static int run_s_client(void *arg) {
  s_client *sc = arg;
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "printf 'ping from s_client\\n' | timeout 30 openssl s_client -connect 127.0.0.1:%d -CAfile %s "
           "-verify_return_error -verify_ip 127.0.0.1 -quiet -ign_eof 2>&1",
           sc->port, path("ca.pem"));
  FILE *p = popen(cmd, "r");
  if (!p) return -errno;
  size_t n = fread(sc->out, 1, sizeof sc->out - 1, p);
  sc->out[n] = '\0';
  return pclose(p);
}

static void *s_client_body(void *arg) {
  (void)arg;
  tls_context *sctx = server_ctx("server-1", NULL);
  server s = server_start(sctx);
  s.close_after = 1; /* s_client -ign_eof reads until the server closes */
  tg_task *task = serve_one(&s);
  s_client sc = {.port = s.port};
  int status = tg_blocking_run(run_s_client, &sc); /* the worker goes on serving meanwhile */
  tg_task_join(task, NULL);
  ck_assert_msg(status == 0, "s_client exited with %d: %s", status, sc.out);
  ck_assert_msg(strstr(sc.out, "ping from s_client\n"), "%s", sc.out);
  ck_assert_int_eq(s.accept_result, 0);
  server_free(&s);
  tls_context_free(sctx);
  return NULL;
}

START_TEST(test_tls_s_client) { tg_test_run(1, 0, s_client_body, NULL); }
END_TEST

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(certs, sizeof certs, "%s/test-tls-XXXXXX", tmp && strlen(tmp) < 200 ? tmp : "/tmp");
  if (!mkdtemp(certs)) return 1;
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "bash %s %s server-1 server-2 client && bash %s %s/other server-1", TLS_CERTS_SCRIPT, certs,
           TLS_CERTS_SCRIPT, certs);
  if (system(cmd) != 0) {
    fprintf(stderr, "test-tls: cannot make certificates (%s)\n", cmd);
    return 1;
  }
  Suite *s = suite_create("tls");
  tg_test_add(s, "echo_lines", test_tls_echo_lines, 60);
  tg_test_add(s, "bulk_small_buffer", test_tls_bulk_small_buffer, 120);
  tg_test_add(s, "bulk_plain_stream", test_tls_bulk_plain_stream, 120);
  tg_test_add(s, "client_cert_required", test_tls_client_cert_required, 60);
  tg_test_add(s, "bad_files", test_tls_bad_files, 60);
  tg_test_add(s, "verify", test_tls_verify, 60);
  tg_test_add(s, "reload", test_tls_reload, 60);
  tg_test_add(s, "stalled_handshake", test_tls_stalled_handshake, 60);
  tg_test_add(s, "s_client", test_tls_s_client, 60);
  tg_test_add(s, "try_write_all_or_nothing", test_tls_try_write_all_or_nothing, 120);
  int status = tg_test_main(s);
  snprintf(cmd, sizeof cmd, "rm -rf %s", certs);
  if (system(cmd) != 0) fprintf(stderr, "test-tls: cannot remove %s\n", certs);
  return status;
}
