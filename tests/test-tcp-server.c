/* test-tcp-server.c - the accept loop shared by the device port and HTTP,
 * over real loopback sockets: figures, the cap and its reject, cancel,
 * the grace that aborts a handler, bind errors, panics and the back-off
 * when descriptors run out. Every wait polls its condition, bounded. */
#include "helpers.h"
#include "tcp_server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef enum mode { ECHO, ECHO_TO_EOF, IGNORE_CANCEL, PANIC } mode;

typedef struct fixture {
  atomic_int mode; /* a mode; handlers on other workers read it */
  tg_cancel *cancel;
  tcp_server *srv;
  tcp_server_config cfg;
  atomic_int started;       /* handlers that began */
  atomic_int ended;         /* handlers that returned */
  atomic_int saw_canceled;  /* handlers whose wait ended with TG_ECANCELED */
  atomic_uint_fast64_t ids; /* bit id-1 of every connection seen */
  atomic_int peer_ok;       /* handlers whose peer was 127.0.0.1:port */
  tg_notify *never;         /* nobody notifies it */
} fixture;

/* ECHO: answers each line until the peer closes or the token fires.
 * ECHO_TO_EOF: the same, but only the peer's close ends it. IGNORE_CANCEL:
 * waits for a notification that never comes, so only an abort ends it.
 * PANIC: panics at once. */
static void handler(void *ctx, tcp_server_conn *c) {
  fixture *f = ctx;
  atomic_fetch_add(&f->started, 1);
  atomic_fetch_or(&f->ids, (uint64_t)1 << ((c->id - 1) & 63));
  if (strncmp(c->peer, "127.0.0.1:", 10) == 0 && atoi(c->peer + 10) > 0) atomic_fetch_add(&f->peer_ok, 1);
  if (f->mode == PANIC) tg_panic("handler panics on purpose");
  if (f->mode == IGNORE_CANCEL) {
    if (tg_notify_wait(f->never) == TG_ECANCELED) atomic_fetch_add(&f->saw_canceled, 1);
    atomic_fetch_add(&f->ended, 1);
    return;
  }
  for (;;) {
    tg_tcp_view v;
    tg_case cs[2] = {tg_cancel_case(f->cancel), tg_tcp_recv_case(c->sock, &v)};
    /* ECHO_TO_EOF leaves the token out of the select */
    int w = f->mode == ECHO_TO_EOF ? 1 + tg_select(cs + 1, 1, TG_FOREVER) : tg_select(cs, 2, TG_FOREVER);
    if (w != 1 || cs[1].result != 0) break;
    const char *nl = memchr(v.data, '\n', v.len);
    if (!nl) continue;
    size_t n = (size_t)(nl - v.data) + 1;
    if (tg_tcp_write(c->sock, v.data, n) != 0) break;
    tg_tcp_consume(c->sock, n);
  }
  atomic_fetch_add(&f->ended, 1);
}

/* Refuses with one line, without waiting. */
static void refuse(void *ctx, int fd) {
  (void)ctx;
  static const char no[] = "busy\n";
  ssize_t n = write(fd, no, sizeof no - 1);
  (void)n;
  close(fd);
}

static void fx_init(fixture *f, mode m) {
  memset(f, 0, sizeof *f);
  f->mode = m;
  ck_assert_int_eq(tg_cancel_new(&f->cancel, "test"), 0);
  ck_assert_int_eq(tg_notify_new(&f->never, "never"), 0);
  f->cfg = (tcp_server_config){.name = "test",
                               .host = "127.0.0.1",
                               .port = 0,
                               .max_connections = 64,
                               .workers = 2,
                               .grace_ms = 2000,
                               .cancel = f->cancel,
                               .handler = handler,
                               .reject = refuse,
                               .ctx = f};
}

static void fx_start(fixture *f) {
  ck_assert_int_eq(tcp_server_new(&f->srv, &f->cfg), 0);
  ck_assert_int_eq(tcp_server_start(f->srv), 0);
  ck_assert_int_gt(tcp_server_port(f->srv), 0);
}

/* Fires the token and waits for the server; its figures stay readable. */
static void fx_stop(fixture *f) {
  tg_cancel_fire(f->cancel);
  ck_assert_int_eq(tcp_server_wait(f->srv), 0);
}

static void fx_free(fixture *f) {
  tcp_server_free(f->srv);
  tg_notify_free(f->never);
  tg_cancel_free(f->cancel);
}

static tcp_server_figures figs(fixture *f) {
  tcp_server_figures t;
  tcp_server_figures_get(f->srv, &t);
  return t;
}

/* Polls until field `field` of the figures equals want, at most ~10 s. */
#define WAIT_FIGURE(f, field, want)                                                            \
  do {                                                                                         \
    for (int i_ = 0; i_ < 5000 && figs(f).field != (uint64_t)(want); i_++) tg_sleep(TG_MS(2)); \
    ck_assert_uint_eq(figs(f).field, (uint64_t)(want));                                        \
  } while (0)

static tg_tcp *cl_connect(fixture *f) {
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect_dl(&c, "127.0.0.1", tcp_server_port(f->srv), tg_deadline_in(TG_SEC(10))), 0);
  return c;
}

/* Reads one line into out (without '\n'); returns 0, TG_EOF or an error. */
static int cl_read_line(tg_tcp *c, char *out, size_t cap) {
  int64_t until = tg_deadline_in(TG_SEC(10));
  for (;;) {
    const char *data;
    size_t len;
    int r = tg_tcp_recv_dl(c, &data, &len, until);
    if (r != 0) return r;
    const char *nl = memchr(data, '\n', len);
    if (!nl) continue;
    size_t n = (size_t)(nl - data);
    ck_assert_uint_lt(n, cap);
    memcpy(out, data, n);
    out[n] = '\0';
    tg_tcp_consume(c, n + 1);
    return 0;
  }
}

static void cl_ping(tg_tcp *c) {
  char line[32];
  ck_assert_int_eq(tg_tcp_write(c, "ping\n", 5), 0);
  ck_assert_int_eq(cl_read_line(c, line, sizeof line), 0);
  ck_assert_str_eq(line, "ping");
}

/* ------------------------------------------------------------ tests */

static void *figures_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, ECHO);
  fx_start(&f);
  tg_tcp *c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = cl_connect(&f);
    cl_ping(c[i]);
  }
  tcp_server_figures t = figs(&f);
  ck_assert_uint_eq(t.accepted, 3);
  ck_assert_uint_eq(t.open, 3);
  ck_assert_uint_eq(t.closed, 0);
  ck_assert_uint_eq(t.rejected, 0);
  ck_assert_uint_eq(atomic_load(&f.ids), 0x7); /* ids 1, 2, 3 */
  ck_assert_int_eq(atomic_load(&f.peer_ok), 3);
  for (int i = 0; i < 3; i++) tg_tcp_close(c[i]);
  WAIT_FIGURE(&f, closed, 3);
  t = figs(&f);
  ck_assert_uint_eq(t.open, 0);
  ck_assert_uint_eq(t.accepted, t.open + t.closed);
  fx_stop(&f);
  ck_assert_uint_eq(figs(&f).aborted, 0);
  ck_assert_int_eq(atomic_load(&f.ended), 3);
  fx_free(&f);
  return NULL;
}

START_TEST(test_tcp_server_figures) { tg_test_run(2, 0, figures_body, NULL); }
END_TEST

static void *cap_body(void *arg) {
  int with_reject = arg != NULL;
  fixture f;
  fx_init(&f, ECHO);
  f.cfg.max_connections = 2;
  if (!with_reject) f.cfg.reject = NULL;
  fx_start(&f);
  tg_tcp *a = cl_connect(&f), *b = cl_connect(&f);
  cl_ping(a);
  cl_ping(b);
  /* the third hears the server's own refusal (or nothing), then the close */
  tg_tcp *c = cl_connect(&f);
  char line[32];
  if (with_reject) {
    ck_assert_int_eq(cl_read_line(c, line, sizeof line), 0);
    ck_assert_str_eq(line, "busy");
  }
  ck_assert_int_eq(cl_read_line(c, line, sizeof line), TG_EOF);
  tg_tcp_close(c);
  ck_assert_uint_eq(figs(&f).rejected, 1);
  ck_assert_uint_eq(figs(&f).accepted, 2);
  ck_assert_int_eq(atomic_load(&f.started), 2);
  /* a slot freed is a slot taken again */
  tg_tcp_close(a);
  WAIT_FIGURE(&f, open, 1);
  c = cl_connect(&f);
  cl_ping(c);
  ck_assert_uint_eq(figs(&f).accepted, 3);
  ck_assert_uint_eq(figs(&f).rejected, 1);
  tg_tcp_close(c);
  tg_tcp_close(b);
  fx_stop(&f);
  tcp_server_figures t = figs(&f);
  ck_assert_uint_eq(t.closed, 3);
  ck_assert_uint_eq(t.open, 0);
  fx_free(&f);
  return NULL;
}

START_TEST(test_tcp_server_cap_reject) { tg_test_run(2, 0, cap_body, (void *)1); }
END_TEST

START_TEST(test_tcp_server_cap_no_reject_callback) { tg_test_run(2, 0, cap_body, NULL); }
END_TEST

/* Cancel: the listener closes (a new connect is refused), the handlers
 * see the token and end, and wait returns after joining them. */
static void *cancel_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, ECHO);
  fx_start(&f);
  int port = tcp_server_port(f.srv);
  tg_tcp *a = cl_connect(&f), *b = cl_connect(&f);
  cl_ping(a);
  cl_ping(b);
  fx_stop(&f);
  tcp_server_figures t = figs(&f);
  ck_assert_int_eq(atomic_load(&f.ended), 2);
  ck_assert_uint_eq(t.closed, 2);
  ck_assert_uint_eq(t.open, 0);
  ck_assert_uint_eq(t.aborted, 0);
  char line[32];
  ck_assert_int_eq(cl_read_line(a, line, sizeof line), TG_EOF);
  ck_assert_int_eq(cl_read_line(b, line, sizeof line), TG_EOF);
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect(&c, "127.0.0.1", port), -ECONNREFUSED);
  tg_tcp_close(a);
  tg_tcp_close(b);
  fx_free(&f);
  return NULL;
}

START_TEST(test_tcp_server_cancel_joins) { tg_test_run(2, 0, cancel_body, NULL); }
END_TEST

/* Handlers that ignore the token are aborted when the grace runs out. */
static void *grace_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, IGNORE_CANCEL);
  f.cfg.grace_ms = 50;
  fx_start(&f);
  tg_tcp *a = cl_connect(&f), *b = cl_connect(&f);
  for (int i = 0; i < 5000 && atomic_load(&f.started) < 2; i++) tg_sleep(TG_MS(2));
  ck_assert_int_eq(atomic_load(&f.started), 2);
  fx_stop(&f);
  tcp_server_figures t = figs(&f);
  ck_assert_uint_eq(t.aborted, 2);
  ck_assert_uint_eq(t.closed, 2);
  ck_assert_uint_eq(t.open, 0);
  ck_assert_int_eq(atomic_load(&f.saw_canceled), 2);
  ck_assert_int_eq(atomic_load(&f.ended), 2);
  char line[32];
  ck_assert_int_eq(cl_read_line(a, line, sizeof line), TG_EOF);
  tg_tcp_close(a);
  tg_tcp_close(b);
  fx_free(&f);
  return NULL;
}

START_TEST(test_tcp_server_grace_aborts) { tg_test_run(2, 0, grace_body, NULL); }
END_TEST

typedef struct waiter {
  fixture *f;
  atomic_int done;
} waiter;

static void *wait_task(void *arg) {
  waiter *w = arg;
  ck_assert_int_eq(tcp_server_wait(w->f->srv), 0);
  atomic_store(&w->done, 1);
  return NULL;
}

/* grace_ms < 0: after cancel the listener closes, and the server waits
 * for a handler that ends only when its peer hangs up - never aborts it. */
static void *no_grace_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, ECHO_TO_EOF);
  f.cfg.grace_ms = -1;
  fx_start(&f);
  int port = tcp_server_port(f.srv);
  tg_tcp *a = cl_connect(&f);
  cl_ping(a);
  tg_cancel_fire(f.cancel);
  waiter w = {.f = &f};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, wait_task, &w, NULL), 0);
  /* the listener closed: the acceptor is joining */
  tg_tcp *c = NULL;
  int r = 0;
  for (int i = 0; i < 5000; i++) {
    if ((r = tg_tcp_connect(&c, "127.0.0.1", port)) != 0) break;
    tg_tcp_close(c);
    tg_sleep(TG_MS(2));
  }
  ck_assert_int_eq(r, -ECONNREFUSED);
  cl_ping(a);               /* still served, after cancel */
  WAIT_FIGURE(&f, open, 1); /* the probes above, if any got in, saw their EOF */
  ck_assert_int_eq(atomic_load(&w.done), 0);
  tg_tcp_close(a);
  ck_assert_int_eq(tg_task_join(t, NULL), 0);
  ck_assert_int_eq(atomic_load(&w.done), 1);
  tcp_server_figures tf = figs(&f);
  ck_assert_uint_eq(tf.aborted, 0);
  ck_assert_uint_eq(tf.open, 0);
  ck_assert_uint_eq(tf.closed, tf.accepted);
  fx_free(&f);
  return NULL;
}

START_TEST(test_tcp_server_no_grace_waits) { tg_test_run(2, 0, no_grace_body, NULL); }
END_TEST

/* Binding a port in use fails at start with -EADDRINUSE, and a bad
 * configuration or address with TG_EINVAL; the first server runs on. */
static void *bind_body(void *arg) {
  (void)arg;
  fixture f, g;
  fx_init(&f, ECHO);
  f.cfg.workers = 0; /* the runtime places them: one worker here */
  fx_start(&f);
  fx_init(&g, ECHO);
  g.cfg.port = tcp_server_port(f.srv);
  ck_assert_int_eq(tcp_server_new(&g.srv, &g.cfg), 0);
  ck_assert_int_eq(tcp_server_start(g.srv), -EADDRINUSE);
  ck_assert_int_eq(tcp_server_port(g.srv), 0);
  ck_assert_int_eq(tcp_server_wait(g.srv), TG_EINVAL);
  tcp_server_free(g.srv);
  g.cfg.port = 0;
  g.cfg.host = "not-an-address";
  ck_assert_int_eq(tcp_server_new(&g.srv, &g.cfg), 0);
  ck_assert_int_eq(tcp_server_start(g.srv), TG_EINVAL);
  tcp_server_free(g.srv);
  tcp_server *bad;
  g.cfg.host = "127.0.0.1";
  g.cfg.handler = NULL;
  ck_assert_int_eq(tcp_server_new(&bad, &g.cfg), TG_EINVAL);
  g.cfg.handler = handler;
  g.cfg.max_connections = 0;
  ck_assert_int_eq(tcp_server_new(&bad, &g.cfg), TG_EINVAL);
  g.cfg.max_connections = 1;
  g.cfg.port = 65536;
  ck_assert_int_eq(tcp_server_new(&bad, &g.cfg), TG_EINVAL);
  g.srv = NULL;
  fx_free(&g);
  tg_tcp *c = cl_connect(&f);
  cl_ping(c);
  tg_tcp_close(c);
  fx_stop(&f);
  fx_free(&f);
  return NULL;
}

START_TEST(test_tcp_server_bind_errors) { tg_test_run(1, 0, bind_body, NULL); }
END_TEST

/* A handler that panics closes its connection and is counted; the
 * server accepts on. */
static void *panic_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, PANIC);
  fx_start(&f);
  tg_tcp *a = cl_connect(&f);
  char line[32];
  ck_assert_int_eq(cl_read_line(a, line, sizeof line), TG_EOF);
  tg_tcp_close(a);
  WAIT_FIGURE(&f, panicked, 1);
  atomic_store(&f.mode, ECHO);
  tg_tcp *b = cl_connect(&f);
  cl_ping(b);
  tg_tcp_close(b);
  fx_stop(&f);
  tcp_server_figures t = figs(&f);
  ck_assert_uint_eq(t.accepted, 2);
  ck_assert_uint_eq(t.closed, 2);
  ck_assert_uint_eq(t.open, 0);
  ck_assert_uint_eq(t.panicked, 1);
  fx_free(&f);
  return NULL;
}

START_TEST(test_tcp_server_panic) { tg_test_run(2, 0, panic_body, NULL); }
END_TEST

/* Out of descriptors: accept fails with EMFILE, is counted and logged,
 * and the server backs off and retries; once descriptors are free again
 * the waiting connection is served. */
static void *emfile_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, ECHO);
  FILE *logf = tmpfile();
  ck_assert_ptr_nonnull(logf);
  demo_log log;
  log_init(&log, logf, LOG_TEXT, 0, tg_now());
  f.cfg.log = &log;
  f.cfg.workers = 1;
  fx_start(&f);
  tg_tcp *a = cl_connect(&f);
  cl_ping(a);
  /* Take every descriptor but one, which the next client's socket gets:
   * the server's accept then has none. */
  struct rlimit old, low;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
  low = old;
  low.rlim_cur = 256;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  int fill[256], nfill = 0, fd, devnull = open("/dev/null", O_RDONLY);
  ck_assert_int_ge(devnull, 0);
  while (nfill < 256 && (fd = dup(devnull)) >= 0) fill[nfill++] = fd;
  ck_assert_int_eq(errno, EMFILE);
  ck_assert_int_gt(nfill, 0);
  close(fill[--nfill]);
  tg_tcp *b = cl_connect(&f); /* the kernel completes it; the backlog holds it */
  for (int i = 0; i < 5000 && figs(&f).accept_errors == 0; i++) tg_sleep(TG_MS(2));
  ck_assert_uint_ge(figs(&f).accept_errors, 1);
  ck_assert_uint_eq(figs(&f).accepted, 1);
  while (nfill > 0) close(fill[--nfill]);
  close(devnull);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  cl_ping(b);
  ck_assert_uint_eq(figs(&f).accepted, 2);
  tg_tcp_close(a);
  tg_tcp_close(b);
  fx_stop(&f);
  fx_free(&f);
  fflush(logf);
  rewind(logf);
  char text[4096];
  size_t n = fread(text, 1, sizeof text - 1, logf);
  text[n] = '\0';
  ck_assert_msg(strstr(text, "accept_failed") || strstr(text, "Accepting a connection failed"), "log: %s", text);
  ck_assert_ptr_nonnull(strstr(text, "Too many open files"));
  log_destroy(&log);
  fclose(logf);
  return NULL;
}

START_TEST(test_tcp_server_emfile_backoff) { tg_test_run(1, 0, emfile_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("tcp_server");
  tg_test_add(s, "figures", test_tcp_server_figures, 30);
  tg_test_add(s, "cap_reject", test_tcp_server_cap_reject, 30);
  tg_test_add(s, "cap_no_reject_callback", test_tcp_server_cap_no_reject_callback, 30);
  tg_test_add(s, "cancel_joins", test_tcp_server_cancel_joins, 30);
  tg_test_add(s, "grace_aborts", test_tcp_server_grace_aborts, 30);
  tg_test_add(s, "no_grace_waits", test_tcp_server_no_grace_waits, 30);
  tg_test_add(s, "bind_errors", test_tcp_server_bind_errors, 30);
  tg_test_add(s, "panic", test_tcp_server_panic, 30);
  tg_test_add(s, "emfile_backoff", test_tcp_server_emfile_backoff, 30);
  return tg_test_main(s);
}
