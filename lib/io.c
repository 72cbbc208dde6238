/* io.c - TCP sockets for tasks, on the worker's libuv loop.
 *
 * Everything about a socket happens on its worker's thread: libuv's
 * callbacks and the tasks that use it. Its wait lists therefore need no
 * lock, and every operation is completed by its claimer (the libuv
 * callback) with the result stored in the waiter, so a woken task never
 * touches the socket again before returning - which is what lets a socket
 * be closed and freed right after its waiters were told. */
#include "tg/io.h"

#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { DEFAULT_RECV_BUFFER = 64 * 1024, MIN_RECV_BUFFER = 64 };

struct tg_tcp {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_poll_t poll;
  } h;
  tg__worker *worker;
  bool is_listener;
  bool closing;
  /* listener */
  int fd;
  tg__waitlist acceptors; /* waiter->buf: int *fd */
  /* receiving: buf[start, end) buffered, of which the first `seen` bytes
   * were shown by recv; reading runs while end < cap */
  char *buf;
  size_t cap, start, end, seen;
  bool reading, eof;
  int read_error;
  tg__waitlist readers; /* waiter->buf: tg_tcp_view * */
  /* connecting */
  uv_connect_t connect_req;
  tg__waitlist connectors;
  /* writing: one uv_write in flight; its bytes are owned by the socket */
  uv_write_t write_req;
  char *write_copy;
  bool write_busy;       /* a writer holds the turn */
  tg__waitlist writers;  /* waiting for the turn */
  tg__waitlist flushers; /* waiting for the write in flight */
};

static int check_worker(const tg_tcp *s) {
  if (!tg_task_current()) return TG_ENOTASK;
  return s->worker == tg__worker_current() ? 0 : TG_EWORKER;
}

/* Tasks move between workers, sockets do not: a task that uses a socket
 * moves to the socket's worker (unless it is pinned elsewhere: then
 * check_worker reports TG_EWORKER) and is pinned there from then on. Done
 * at every entry point, before any wait: a wait cannot move. */
static void io_home(const tg_tcp *s) {
  if (tg__self()) (void)tg__task_move_to(s->worker);
}

static int parse_address(const char *host, int port, struct sockaddr_storage *addr) {
  if (port < 0 || port > 65535 || !host) return TG_EINVAL;
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)addr) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr) == 0) return 0;
  return TG_EINVAL;
}

static tg_tcp *socket_new(void) {
  tg_tcp *s = calloc(1, sizeof *s);
  if (s) {
    s->worker = tg__worker_current();
    s->fd = -1;
    io_home(s); /* pins the creating task to this worker */
  }
  return s;
}

/* ------------------------------------------------------------ listening */

static int accept_now(tg_tcp *l, int *fd) {
  if (l->closing) return TG_ECLOSED;
  int c = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (c >= 0) {
    *fd = c;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED || errno == EINTR) return TG_EAGAIN;
  return -errno; /* EMFILE and friends: the caller decides */
}

/* The listener became readable: accept for the waiters, in order. The
 * waiter is claimed before the accept, so a connection is only ever taken
 * for a wait that gets it; if the connection is gone by then (another
 * process took it), the waiter is told TG_EAGAIN and waits again. */
static void on_listener_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  tg_tcp *l = handle->data;
  bool more = true;
  while (more && l->acceptors.head) {
    tg__waiter *w = l->acceptors.head;
    tg__waitlist_remove(&l->acceptors, w);
    if (!tg__waiter_claim(w)) continue;
    w->result = status < 0 ? status : accept_now(l, w->buf);
    more = w->result == 0;
    tg__wait_wake(w->wait);
  }
  if (!l->acceptors.head) uv_poll_stop(&l->h.poll);
}

int tg_tcp_listen(tg_tcp **out, const char *host, int port, int backlog) {
  if (!tg_task_current()) return TG_ENOTASK;
  struct sockaddr_storage addr;
  if (parse_address(host, port, &addr) != 0) return TG_EINVAL;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = addr.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  if (bind(fd, (struct sockaddr *)&addr, len) != 0 || listen(fd, backlog > 0 ? backlog : 511) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  tg_tcp *l = socket_new();
  if (!l) {
    close(fd);
    return TG_ENOMEM;
  }
  l->is_listener = true;
  l->fd = fd;
  int r = uv_poll_init(&l->worker->loop, &l->h.poll, fd);
  l->h.poll.data = l;
  if (r != 0) {
    close(fd);
    free(l);
    return r;
  }
  *out = l;
  return 0;
}

int tg_tcp_port(tg_tcp *s) {
  struct sockaddr_storage addr;
  int len = sizeof addr, r;
  if (s->is_listener) {
    socklen_t slen = sizeof addr;
    r = getsockname(s->fd, (struct sockaddr *)&addr, &slen) == 0 ? 0 : -errno;
  } else {
    r = uv_tcp_getsockname(&s->h.tcp, (struct sockaddr *)&addr, &len);
  }
  if (r != 0) return r;
  return ntohs(addr.ss_family == AF_INET ? ((struct sockaddr_in *)&addr)->sin_port
                                         : ((struct sockaddr_in6 *)&addr)->sin6_port);
}

static int accept_try(tg_case *c) {
  tg_tcp *l = c->obj;
  int r = check_worker(l);
  return r ? r : accept_now(l, c->buf);
}

static bool accept_arm(tg_case *c, tg__waiter *w) {
  tg_tcp *l = c->obj;
  tg__waitlist_push(&l->acceptors, w);
  uv_poll_start(&l->h.poll, UV_READABLE, on_listener_readable);
  return false;
}

static void accept_disarm(tg_case *c, tg__waiter *w) {
  if (!w->linked) return; /* the socket may be gone: do not touch it */
  tg_tcp *l = c->obj;
  tg__waitlist_remove(&l->acceptors, w);
  if (!l->acceptors.head) uv_poll_stop(&l->h.poll);
}

static const tg__op accept_op = {accept_try, accept_arm, accept_disarm, tg__finish_stored};

tg_case tg_tcp_accept_case(tg_tcp *listener, int *fd) {
  io_home(listener);
  return (tg_case){.op = &accept_op, .obj = listener, .buf = fd};
}

int tg_tcp_accept_fd(tg_tcp *listener, int *fd, int64_t deadline_ns) {
  io_home(listener);
  return tg__wait_one(&accept_op, listener, fd, 0, deadline_ns);
}

int tg_tcp_accept_dl(tg_tcp *listener, tg_tcp **conn, int64_t deadline_ns) {
  int fd, r = tg_tcp_accept_fd(listener, &fd, deadline_ns);
  if (r != 0) return r;
  r = tg_tcp_open(conn, fd);
  if (r != 0) close(fd);
  return r;
}

int tg_tcp_accept(tg_tcp *listener, tg_tcp **conn) { return tg_tcp_accept_dl(listener, conn, TG_FOREVER); }

/* ------------------------------------------------------------ receiving */

/* The loop reads into the free tail only. Buffered bytes move (compact)
 * only inside the owner's own calls - consume, or a recv that found the
 * tail full - because a view the owner holds must stay put while it waits
 * elsewhere, e.g. for room in the pipeline. */
static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
  (void)suggested;
  tg_tcp *s = handle->data;
  *out = uv_buf_init(s->buf + s->end, (unsigned)(s->cap - s->end));
}

static void compact(tg_tcp *s) {
  memmove(s->buf, s->buf + s->start, s->end - s->start);
  s->end -= s->start;
  s->start = 0;
}

static void stop_reading(tg_tcp *s) {
  if (s->reading) uv_read_stop(&s->h.stream);
  s->reading = false;
}

/* Whether recv would complete now; changes nothing. */
static bool recv_ready(const tg_tcp *s) {
  size_t buffered = s->end - s->start;
  return s->closing || buffered > s->seen || s->read_error || s->eof || s->end == s->cap;
}

static int start_reading(tg_tcp *s);

/* Completes a recv: shows the buffered bytes and marks them seen. Runs
 * only while the owner is inside recv (holding no view), so it may make
 * room by compacting when the tail is full of bytes already seen. */
static int recv_now(tg_tcp *s, tg_tcp_view *view) {
  if (s->closing) return TG_ECLOSED;
  size_t buffered = s->end - s->start;
  if (s->start > 0 && s->end == s->cap && buffered == s->seen) {
    compact(s);
    start_reading(s);
  }
  if (buffered > s->seen) {
    s->seen = buffered;
    *view = (tg_tcp_view){s->buf + s->start, buffered};
    return 0;
  }
  if (s->read_error) return s->read_error;
  if (s->eof) return TG_EOF;
  if (buffered == s->cap) return TG_EFULL;
  return TG_EAGAIN;
}

/* Claims before completing, so bytes are marked seen only for a wait
 * that is shown them. */
static void wake_readers(tg_tcp *s) {
  while (s->readers.head && recv_ready(s)) {
    tg__waiter *w = s->readers.head;
    tg__waitlist_remove(&s->readers, w);
    if (tg__waiter_claim(w)) {
      w->result = recv_now(s, w->buf);
      tg__wait_wake(w->wait);
    }
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  tg_tcp *s = stream->data;
  if (nread > 0) {
    s->end += (size_t)nread;
    if (s->end == s->cap) stop_reading(s); /* full: push back */
  } else if (nread == UV_EOF) {
    s->eof = true;
    stop_reading(s);
  } else if (nread == UV_ENOBUFS) {
    stop_reading(s);
  } else if (nread < 0) {
    s->read_error = (int)nread;
    stop_reading(s);
  }
  wake_readers(s);
}

static int start_reading(tg_tcp *s) {
  if (s->reading || s->eof || s->read_error || s->closing) return 0;
  if (!s->buf) {
    s->buf = malloc(s->cap);
    if (!s->buf) return TG_ENOMEM;
  }
  if (s->end == s->cap) return 0; /* no room until the owner consumes */
  int r = uv_read_start(&s->h.stream, on_alloc, on_read);
  if (r == 0)
    s->reading = true;
  else
    s->read_error = r;
  return r;
}

int tg_tcp_set_recv_buffer(tg_tcp *conn, size_t size) {
  if (size < MIN_RECV_BUFFER || conn->buf) return TG_EINVAL;
  conn->cap = size;
  return 0;
}

static int recv_try(tg_case *c) {
  tg_tcp *s = c->obj;
  int r = check_worker(s);
  if (r == 0) r = start_reading(s);
  return r ? r : recv_now(s, c->buf);
}

static bool recv_arm(tg_case *c, tg__waiter *w) {
  tg_tcp *s = c->obj;
  tg__waitlist_push(&s->readers, w);
  return false;
}

static void recv_disarm(tg_case *c, tg__waiter *w) {
  if (w->linked) tg__waitlist_remove(&((tg_tcp *)c->obj)->readers, w);
}

static const tg__op recv_op = {recv_try, recv_arm, recv_disarm, tg__finish_stored};

tg_case tg_tcp_recv_case(tg_tcp *conn, tg_tcp_view *view) {
  io_home(conn);
  return (tg_case){.op = &recv_op, .obj = conn, .buf = view};
}

int tg_tcp_recv_dl(tg_tcp *conn, const char **data, size_t *len, int64_t deadline_ns) {
  tg_tcp_view view = {0};
  io_home(conn);
  int r = tg__wait_one(&recv_op, conn, &view, 0, deadline_ns);
  *data = view.data;
  *len = view.len;
  return r;
}

int tg_tcp_recv(tg_tcp *conn, const char **data, size_t *len) { return tg_tcp_recv_dl(conn, data, len, TG_FOREVER); }

void tg_tcp_consume(tg_tcp *s, size_t n) {
  io_home(s);
  size_t buffered = s->end - s->start;
  if (n > buffered) n = buffered;
  s->start += n;
  s->seen = n < s->seen ? s->seen - n : 0;
  if (s->start == s->end)
    s->start = s->end = 0;
  else if (s->cap - s->end < s->cap / 2)
    compact(s);     /* views end here anyway */
  start_reading(s); /* there may be room again */
}

/* ------------------------------------------------------------ connections */

static int conn_init(tg_tcp *s) {
  s->cap = DEFAULT_RECV_BUFFER;
  int r = uv_tcp_init(&s->worker->loop, &s->h.tcp);
  s->h.tcp.data = s;
  return r;
}

int tg_tcp_open(tg_tcp **out, int fd) {
  if (!tg_task_current()) return TG_ENOTASK;
  tg_tcp *s = socket_new();
  if (!s) return TG_ENOMEM;
  int r = conn_init(s);
  if (r != 0) {
    free(s);
    return r;
  }
  r = uv_tcp_open(&s->h.tcp, fd);
  if (r != 0) {
    tg_tcp_close(s);
    return r;
  }
  uv_tcp_nodelay(&s->h.tcp, 1);
  *out = s;
  return 0;
}

static void on_connect(uv_connect_t *req, int status) {
  tg_tcp *s = req->data;
  tg__waiter *w = s->connectors.head;
  if (!w) return; /* the connecting task gave up */
  tg__waitlist_remove(&s->connectors, w);
  if (tg__waiter_claim(w)) {
    w->result = status;
    tg__wait_wake(w->wait);
  }
}

static int connect_try(tg_case *c) {
  (void)c;
  return TG_EAGAIN;
}

static bool connect_arm(tg_case *c, tg__waiter *w) {
  tg__waitlist_push(&((tg_tcp *)c->obj)->connectors, w);
  return false;
}

static void connect_disarm(tg_case *c, tg__waiter *w) {
  if (w->linked) tg__waitlist_remove(&((tg_tcp *)c->obj)->connectors, w);
}

static const tg__op connect_op = {connect_try, connect_arm, connect_disarm, tg__finish_stored};

int tg_tcp_connect_dl(tg_tcp **out, const char *host, int port, int64_t deadline_ns) {
  if (!tg_task_current()) return TG_ENOTASK;
  struct sockaddr_storage addr;
  if (parse_address(host, port, &addr) != 0) return TG_EINVAL;
  tg_tcp *s = socket_new();
  if (!s) return TG_ENOMEM;
  int r = conn_init(s);
  if (r != 0) {
    free(s);
    return r;
  }
  s->connect_req.data = s;
  r = uv_tcp_connect(&s->connect_req, &s->h.tcp, (struct sockaddr *)&addr, on_connect);
  if (r == 0) r = tg__wait_one(&connect_op, s, NULL, 0, deadline_ns);
  if (r != 0) {
    tg_tcp_close(s); /* cancels a connect still in flight */
    return r;
  }
  *out = s;
  return 0;
}

int tg_tcp_connect(tg_tcp **out, const char *host, int port) { return tg_tcp_connect_dl(out, host, port, TG_FOREVER); }

/* ------------------------------------------------------------ writing */

/* Gives the write turn to the next waiting writer, or frees it. */
static void pass_write_turn(tg_tcp *s) {
  s->write_busy = false;
  while (s->writers.head) {
    tg__waiter *w = s->writers.head;
    tg__waitlist_remove(&s->writers, w);
    if (tg__waiter_claim(w)) {
      s->write_busy = true;
      w->result = 0;
      tg__wait_wake(w->wait);
      return;
    }
  }
}

static void on_write(uv_write_t *req, int status) {
  tg_tcp *s = req->data;
  free(s->write_copy);
  s->write_copy = NULL;
  tg__waitlist_wake_one(&s->flushers, status);
  pass_write_turn(s);
}

static int turn_try(tg_case *c) {
  tg_tcp *s = c->obj;
  int r = check_worker(s);
  if (r) return r;
  if (s->closing) return TG_ECLOSED;
  if (s->write_busy) return TG_EAGAIN;
  s->write_busy = true;
  return 0;
}

static bool turn_arm(tg_case *c, tg__waiter *w) {
  tg__waitlist_push(&((tg_tcp *)c->obj)->writers, w);
  return false;
}

static void turn_disarm(tg_case *c, tg__waiter *w) {
  if (w->linked) tg__waitlist_remove(&((tg_tcp *)c->obj)->writers, w);
}

static const tg__op turn_op = {turn_try, turn_arm, turn_disarm, tg__finish_stored};

static int flush_try(tg_case *c) {
  (void)c;
  return TG_EAGAIN; /* uv_write never completes before the loop runs */
}

static bool flush_arm(tg_case *c, tg__waiter *w) {
  tg__waitlist_push(&((tg_tcp *)c->obj)->flushers, w);
  return false;
}

static void flush_disarm(tg_case *c, tg__waiter *w) {
  if (w->linked) tg__waitlist_remove(&((tg_tcp *)c->obj)->flushers, w);
}

static const tg__op flush_op = {flush_try, flush_arm, flush_disarm, tg__finish_stored};

/* Writes buf, holding the write turn: what the kernel does not take at
 * once goes out from a copy the socket owns, and the turn passes on when
 * it has. Returns 0 (handed over: *queued says whether a rest is still
 * going out) or an error, with the turn passed on. */
static int write_holding_turn(tg_tcp *s, const void *buf, size_t len, bool *queued) {
  *queued = false;
  uv_buf_t whole = uv_buf_init((char *)buf, (unsigned)len);
  int n = len ? uv_try_write(&s->h.stream, &whole, 1) : 0;
  if (n < 0 && n != UV_EAGAIN) {
    pass_write_turn(s);
    return n;
  }
  size_t done = n > 0 ? (size_t)n : 0;
  if (done == len) {
    pass_write_turn(s);
    return 0;
  }
  /* The kernel took part of it: the rest goes out through the loop from
   * a copy the socket owns, so a caller that stops waiting loses nothing. */
  s->write_copy = malloc(len - done);
  if (!s->write_copy) {
    pass_write_turn(s);
    return TG_ENOMEM;
  }
  memcpy(s->write_copy, (const char *)buf + done, len - done);
  uv_buf_t rest = uv_buf_init(s->write_copy, (unsigned)(len - done));
  s->write_req.data = s;
  int r = uv_write(&s->write_req, &s->h.stream, &rest, 1, on_write);
  if (r != 0) {
    free(s->write_copy);
    s->write_copy = NULL;
    pass_write_turn(s);
    return r;
  }
  *queued = true;
  return 0;
}

int tg_tcp_write_dl(tg_tcp *s, const void *buf, size_t len, int64_t deadline_ns) {
  io_home(s);
  int r = tg__wait_one(&turn_op, s, NULL, 0, deadline_ns);
  if (r != 0) return r;
  bool queued;
  r = write_holding_turn(s, buf, len, &queued);
  return r == 0 && queued ? tg__wait_one(&flush_op, s, NULL, 0, deadline_ns) : r;
}

int tg_tcp_try_write(tg_tcp *s, const void *buf, size_t len) {
  io_home(s);
  tg_case c = {.op = &turn_op, .obj = s};
  int r = turn_try(&c);
  if (r != 0) return r;
  bool queued;
  return write_holding_turn(s, buf, len, &queued);
}

int tg_tcp_write(tg_tcp *s, const void *buf, size_t len) { return tg_tcp_write_dl(s, buf, len, TG_FOREVER); }

/* ------------------------------------------------------------ closing */

static void on_closed(uv_handle_t *handle) {
  tg_tcp *s = handle->data;
  if (s->is_listener) close(s->fd);
  free(s->buf);
  free(s);
}

void tg_tcp_close(tg_tcp *s) {
  if (!s || s->closing) return;
  io_home(s);
  s->closing = true;
  tg__waitlist_wake_all(&s->acceptors, TG_ECLOSED);
  tg__waitlist_wake_all(&s->readers, TG_ECLOSED);
  tg__waitlist_wake_all(&s->connectors, TG_ECLOSED);
  tg__waitlist_wake_all(&s->writers, TG_ECLOSED);
  tg__waitlist_wake_all(&s->flushers, TG_ECLOSED);
  if (!s->is_listener) stop_reading(s);
  uv_close(&s->h.handle, on_closed);
}
