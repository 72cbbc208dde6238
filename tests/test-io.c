/* test-io.c - TCP sockets over loopback: echo, lines read in place,
 * backpressure when the reader stops, EOF, errors, and a connection
 * handed to another worker. */
#include "helpers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct server {
  tg_tcp *listener;
  int port;
  size_t bytes; /* received in total */
  int lines;
  int oversized;  /* TG_EFULL seen */
  size_t corrupt; /* bytes that were not what was sent */
  size_t recv_buffer;
  tg_mpsc_tx *start; /* the server waits for a token before reading */
  tg_mpsc_rx *start_rx;
} server;

static server server_new(void) {
  server s = {0};
  ck_assert_int_eq(tg_tcp_listen(&s.listener, "127.0.0.1", 0, 16), 0);
  s.port = tg_tcp_port(s.listener);
  ck_assert_int_gt(s.port, 0);
  return s;
}

/* Echoes every complete line back until EOF. */
static void *echo_lines(void *arg) {
  server *s = arg;
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_accept(s->listener, &c), 0);
  const char *data;
  size_t len;
  int r;
  while ((r = tg_tcp_recv(c, &data, &len)) == 0) {
    const char *nl;
    size_t used = 0;
    while ((nl = memchr(data + used, '\n', len - used))) {
      size_t line = (size_t)(nl - (data + used)) + 1;
      ck_assert_int_eq(tg_tcp_write(c, data + used, line), 0);
      used += line;
      s->lines++;
    }
    tg_tcp_consume(c, used);
  }
  ck_assert_int_eq(r, TG_EOF);
  tg_tcp_close(c);
  return NULL;
}

static void read_exactly(tg_tcp *c, char *out, size_t want) {
  size_t got = 0;
  while (got < want) {
    const char *data;
    size_t len;
    ck_assert_int_eq(tg_tcp_recv(c, &data, &len), 0);
    size_t take = len < want - got ? len : want - got;
    memcpy(out + got, data, take);
    tg_tcp_consume(c, take);
    got += take;
  }
}

static void *echo_body(void *arg) {
  (void)arg;
  server s = server_new();
  tg_task *t;
  tg_spawn(&t, echo_lines, &s, NULL);
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect(&c, "localhost", s.port), 0);
  /* Lines split across writes must still come back whole. */
  const char *msg = "{\"device\":\"7\",\"seq\":1}\n{\"device\":\"7\",";
  ck_assert_int_eq(tg_tcp_write(c, msg, strlen(msg)), 0);
  ck_assert_int_eq(tg_tcp_write(c, "\"seq\":2}\n", 9), 0);
  char back[64] = {0};
  read_exactly(c, back, strlen(msg) + 9);
  ck_assert_str_eq(back, "{\"device\":\"7\",\"seq\":1}\n{\"device\":\"7\",\"seq\":2}\n");
  tg_tcp_close(c);
  tg_task_join(t, NULL);
  ck_assert_int_eq(s.lines, 2);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_echo_lines) { tg_test_run(1, 0, echo_body, NULL); }
END_TEST

/* A reader that does not read makes the writer wait: the receive buffer
 * fills, reading stops, the kernel's buffers fill and the write cannot
 * finish. Once the reader goes on, every byte arrives. */
static void *slow_reader(void *arg) {
  server *s = arg;
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_accept(s->listener, &c), 0);
  int token;
  ck_assert_int_eq(tg_mpsc_recv(s->start_rx, &token), 0);
  const char *data;
  size_t len;
  while (tg_tcp_recv(c, &data, &len) == 0) {
    for (size_t i = 0; i < len; i++) /* no ck_assert per byte: each one is a write to Check's pipe */
      if ((unsigned char)data[i] != (s->bytes + i) % 251) s->corrupt++;
    s->bytes += len;
    tg_tcp_consume(c, len);
  }
  tg_tcp_close(c);
  return NULL;
}

static void *backpressure_body(void *arg) {
  (void)arg;
  enum { TOTAL = 32 * 1024 * 1024 };
  server s = server_new();
  tg_mpsc_new(&(tg_mpsc_opts){.capacity = 1, .elem_size = sizeof(int)}, &s.start, &s.start_rx);
  tg_task *t;
  tg_spawn(&t, slow_reader, &s, NULL);
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect(&c, "127.0.0.1", s.port), 0);
  unsigned char *payload = malloc(TOTAL);
  for (size_t i = 0; i < TOTAL; i++) payload[i] = (unsigned char)(i % 251);
  ck_assert_int_eq(tg_tcp_write_dl(c, payload, TOTAL, tg_deadline_in(TG_MS(200))), TG_ETIMEDOUT);
  int token = 1;
  tg_mpsc_send(s.start, &token); /* let the reader go on */
  /* The timed-out write still delivers everything (its rest is owned by
   * the socket); wait for that through a zero-length write's turn. */
  ck_assert_int_eq(tg_tcp_write(c, "", 0), 0);
  tg_tcp_close(c);
  tg_task_join(t, NULL);
  ck_assert_uint_eq(s.bytes, TOTAL);
  ck_assert_uint_eq(s.corrupt, 0);
  free(payload);
  tg_mpsc_tx_drop(s.start);
  tg_mpsc_rx_drop(s.start_rx);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_backpressure_stops_writer) { tg_test_run(1, 0, backpressure_body, NULL); }
END_TEST

/* tg_tcp_try_write never waits: a payload the kernel cannot take goes out
 * in the background, and until it has, a second try writes nothing. */
static void *try_write_body(void *arg) {
  (void)arg;
  enum { TOTAL = 32 * 1024 * 1024 };
  server s = server_new();
  tg_mpsc_new(&(tg_mpsc_opts){.capacity = 1, .elem_size = sizeof(int)}, &s.start, &s.start_rx);
  tg_task *t;
  tg_spawn(&t, slow_reader, &s, NULL);
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect(&c, "127.0.0.1", s.port), 0);
  unsigned char *payload = malloc(TOTAL + 1);
  for (size_t i = 0; i <= TOTAL; i++) payload[i] = (unsigned char)(i % 251);
  ck_assert_int_eq(tg_tcp_try_write(c, payload, TOTAL), 0); /* far more than the kernel buffers */
  ck_assert_int_eq(tg_tcp_try_write(c, payload + TOTAL, 1), TG_EAGAIN);
  int token = 1;
  tg_mpsc_send(s.start, &token);
  ck_assert_int_eq(tg_tcp_write(c, payload + TOTAL, 1), 0); /* waits its turn */
  tg_tcp_close(c);
  tg_task_join(t, NULL);
  ck_assert_uint_eq(s.bytes, TOTAL + 1); /* the refused byte was not sent twice */
  ck_assert_uint_eq(s.corrupt, 0);
  free(payload);
  tg_mpsc_tx_drop(s.start);
  tg_mpsc_rx_drop(s.start_rx);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_try_write) { tg_test_run(1, 0, try_write_body, NULL); }
END_TEST

/* A line longer than the receive buffer: recv says TG_EFULL. */
static void *full_reader(void *arg) {
  server *s = arg;
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_accept(s->listener, &c), 0);
  ck_assert_int_eq(tg_tcp_set_recv_buffer(c, 64), 0);
  const char *data;
  size_t len;
  int r;
  while ((r = tg_tcp_recv(c, &data, &len)) == 0 || r == TG_EFULL) {
    if (r == TG_EFULL) {
      s->oversized++;
      tg_tcp_consume(c, 64); /* drop the oversized line's head */
      continue;
    }
    s->bytes += len;
  }
  ck_assert_int_eq(r, TG_EOF);
  tg_tcp_close(c);
  return NULL;
}

static void *full_body(void *arg) {
  (void)arg;
  server s = server_new();
  tg_task *t;
  tg_spawn(&t, full_reader, &s, NULL);
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect(&c, "127.0.0.1", s.port), 0);
  char big[100];
  memset(big, 'x', sizeof big);
  ck_assert_int_eq(tg_tcp_write(c, big, sizeof big), 0);
  tg_tcp_close(c);
  tg_task_join(t, NULL);
  ck_assert_int_eq(s.oversized, 1);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_recv_full_buffer) { tg_test_run(1, 0, full_body, NULL); }
END_TEST

static void *errors_body(void *arg) {
  (void)arg;
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect(&c, "not-an-address", 1), TG_EINVAL);
  ck_assert_int_eq(tg_tcp_listen(&c, "127.0.0.1", 70000, 1), TG_EINVAL);
  /* A port nobody listens on: bind one, close it, connect to it. */
  server s = server_new();
  int port = s.port;
  tg_tcp_close(s.listener);
  tg_sleep(TG_MS(1)); /* the loop closes the descriptor */
  ck_assert_int_eq(tg_tcp_connect(&c, "127.0.0.1", port), -ECONNREFUSED);
  s = server_new();
  ck_assert_int_eq(tg_tcp_accept_dl(s.listener, &c, tg_deadline_in(TG_MS(20))), TG_ETIMEDOUT);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_errors) { tg_test_run(1, 0, errors_body, NULL); }
END_TEST

/* Worker 0 accepts; a task on worker 1 serves the connection; a task on
 * worker 1 touching worker 0's listener is told TG_EWORKER. */
typedef struct handoff {
  tg_tcp *listener;
  int fd;
  int wrong_worker;
} handoff;

static void *serve_on_worker_1(void *arg) {
  handoff *h = arg;
  int fd;
  h->wrong_worker = tg_tcp_accept_fd(h->listener, &fd, TG_FOREVER);
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_open(&c, h->fd), 0);
  const char *data;
  size_t len;
  ck_assert_int_eq(tg_tcp_recv(c, &data, &len), 0);
  ck_assert_int_eq(tg_tcp_write(c, data, len), 0);
  tg_tcp_consume(c, len);
  tg_tcp_close(c);
  return NULL;
}

static void *handoff_body(void *arg) {
  (void)arg;
  server s = server_new();
  handoff h = {.listener = s.listener};
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_connect(&c, "127.0.0.1", s.port), 0);
  ck_assert_int_eq(tg_tcp_accept_fd(s.listener, &h.fd, TG_FOREVER), 0);
  tg_task *t;
  tg_spawn(&t, serve_on_worker_1, &h, &(tg_spawn_opts){.pin = 1, .worker = 1});
  ck_assert_int_eq(tg_tcp_write(c, "ping", 4), 0);
  char back[5] = {0};
  read_exactly(c, back, 4);
  ck_assert_str_eq(back, "ping");
  tg_task_join(t, NULL);
  ck_assert_int_eq(h.wrong_worker, TG_EWORKER);
  tg_tcp_close(c);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_handoff_to_other_worker) { tg_test_run(2, 0, handoff_body, NULL); }
END_TEST

/* A recv that times out in the same loop iteration as its bytes arrive
 * must not hide them: the deadline wins the wait, and the next recv shows
 * the bytes. A task hogs the worker past the deadline after the bytes were
 * sent, so the timer and the read land in one iteration. */
typedef struct hog {
  tg_tcp *client;
} hog;

static void *send_then_hog(void *arg) {
  hog *h = arg;
  ck_assert_int_eq(tg_tcp_write(h->client, "late\n", 5), 0);
  int64_t until = tg_now() + TG_MS(30);
  while (tg_now() < until) {
  }
  return NULL;
}

static void *lost_recv_body(void *arg) {
  (void)arg;
  server s = server_new();
  hog h;
  ck_assert_int_eq(tg_tcp_connect(&h.client, "127.0.0.1", s.port), 0);
  tg_tcp *c;
  ck_assert_int_eq(tg_tcp_accept(s.listener, &c), 0);
  tg_task *t;
  tg_spawn(&t, send_then_hog, &h, NULL);
  const char *data;
  size_t len;
  ck_assert_int_eq(tg_tcp_recv_dl(c, &data, &len, tg_deadline_in(TG_MS(10))), TG_ETIMEDOUT);
  ck_assert_int_eq(tg_tcp_recv_dl(c, &data, &len, tg_deadline_in(TG_SEC(5))), 0);
  ck_assert_uint_eq(len, 5);
  tg_task_join(t, NULL);
  tg_tcp_close(c);
  tg_tcp_close(h.client);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_timed_out_recv_loses_nothing) { tg_test_run(1, 0, lost_recv_body, NULL); }
END_TEST

/* A view stays where it is while its owner waits for something else,
 * even when the peer fills the rest of the buffer meanwhile: bytes move
 * only inside the owner's own calls. */
static void *view_body(void *arg) {
  (void)arg;
  server s = server_new();
  tg_tcp *client, *c;
  ck_assert_int_eq(tg_tcp_connect(&client, "127.0.0.1", s.port), 0);
  ck_assert_int_eq(tg_tcp_accept(s.listener, &c), 0);
  ck_assert_int_eq(tg_tcp_set_recv_buffer(c, 64), 0);
  const char *data;
  size_t len;
  ck_assert_int_eq(tg_tcp_write(client, "line-one\npart", 13), 0);
  ck_assert_int_eq(tg_tcp_recv(c, &data, &len), 0);
  while (len < 13) ck_assert_int_eq(tg_tcp_recv(c, &data, &len), 0);
  tg_tcp_consume(c, 9); /* "line-one\n": "part" stays, not at the start */
  ck_assert_int_eq(tg_tcp_write(client, "ial", 3), 0);
  ck_assert_int_eq(tg_tcp_recv(c, &data, &len), 0);
  char before[64];
  memcpy(before, data, len);
  size_t held = len;
  /* Hold the view and wait elsewhere while the peer fills the buffer. */
  char fill[64];
  memset(fill, 'z', sizeof fill);
  ck_assert_int_eq(tg_tcp_write(client, fill, sizeof fill), 0);
  tg_sleep(TG_MS(50));
  ck_assert_mem_eq(data, before, held);
  tg_tcp_close(c);
  tg_tcp_close(client);
  tg_tcp_close(s.listener);
  return NULL;
}

START_TEST(test_io_view_stays_while_owner_waits) { tg_test_run(1, 0, view_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("io");
  tg_test_add(s, "echo_lines", test_io_echo_lines, 10);
  tg_test_add(s, "backpressure_stops_writer", test_io_backpressure_stops_writer, 30);
  tg_test_add(s, "try_write", test_io_try_write, 30);
  tg_test_add(s, "recv_full_buffer", test_io_recv_full_buffer, 10);
  tg_test_add(s, "errors", test_io_errors, 10);
  tg_test_add(s, "handoff_to_other_worker", test_io_handoff_to_other_worker, 10);
  tg_test_add(s, "timed_out_recv_loses_nothing", test_io_timed_out_recv_loses_nothing, 10);
  tg_test_add(s, "view_stays_while_owner_waits", test_io_view_stays_while_owner_waits, 10);
  return tg_test_main(s);
}
