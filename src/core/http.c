/* http.c - the HTTP/1.1 server: connections on a tcp_server, parsing with
 * http_parser, limits, responses; see http.h. */
#include "http.h"

#include "http_buf.h"
#include "stream.h"
#include "tcp_server.h"

#include <http_parser.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
  RECV_BUFFER = 16 * 1024, /* per connection; requests are small */
  LINGER_MS = 1000,        /* after an error answer, how long unread input is drained */
  LINGER_BYTES = 256 * 1024,
  REJECT_MS = 50,          /* a rejected connection's request is read for this long */
  WRITE_PIECE = 64 * 1024, /* the most a write hands the socket at once: see write_all */
};

#define COUNT_STATUS(code) code,
static const int counted_status[] = {HTTP_COUNTED_STATUS(COUNT_STATUS)};
#undef COUNT_STATUS
#define NCOUNTED (sizeof counted_status / sizeof counted_status[0])

struct http_server {
  http_config cfg;
  http_handler handler;
  void *ctx;
  tg_cancel *cancel; /* stops everything; a child of cfg.shutdown when given */
  tcp_server *tcp;   /* the listener and the connection tasks */
  atomic_uint_fast64_t requests, write_timeouts, bytes_written, header_timeouts, idle_closed, tls_failures;
  atomic_size_t bodies_bytes;                /* buffered by every connection now: at most cfg.max_bodies_bytes */
  atomic_uint_fast64_t status[NCOUNTED + 1]; /* the last: any other code */
};

typedef enum piece { PIECE_NONE, PIECE_URL, PIECE_FIELD, PIECE_VALUE } piece;

/* A connection and the request it is receiving.
 *
 * Invariants: the arena holds the URL, then each header's name and value,
 * every piece NUL-terminated once the next one starts, in arrival order;
 * an append leaves room for that NUL, so a piece never outgrows the
 * arena unnoticed. `carry` holds bytes received after a complete request
 * (pipelining): they were consumed from the socket, whose view cannot be
 * kept across the waits of the handler, and are parsed before anything
 * new is read. */
struct http_conn {
  http_server *srv;
  int fd;
  stream io; /* over the tcp_server's socket: plain, or TLS with cfg.tls */
  http_parser parser;
  http_parser_settings *settings;
  /* the request */
  char *arena;
  size_t arena_len, arena_cap;
  size_t url_len;
  piece piece;
  struct {
    size_t name, value; /* arena offsets; value SIZE_MAX when empty */
  } * hdr;
  http_header *headers; /* hdr as pointers, for the handler */
  int nheaders;
  http_buf body;
  size_t body_charged; /* of body, counted in srv->bodies_bytes */
  int started, head_done, complete;
  int64_t opened;   /* when the connection started: its first request's head is due header_timeout_ms later */
  int first;        /* the first request of the connection is being received */
  int error_status; /* a limit broke or the input is malformed: answer this and close */
  char *carry;
  size_t carry_len;
  /* the answer */
  int responded, keep_alive, close_after, is_head, write_failed;
};

void http_config_defaults(http_config *c) {
  *c = (http_config){
      .host = "127.0.0.1",
      .port = 8080,
      .max_connections = 256,
      .max_per_client = 16,
      .max_url_bytes = 2048,
      .max_header_bytes = 8192,
      .max_body_bytes = 8192,
      .max_headers = 64,
      .idle_timeout_ms = 5000,
      .header_timeout_ms = 5000,
      .request_timeout_ms = 10000,
      .write_timeout_ms = 5000,
      .shutdown_grace_ms = 2000,
      .send_buffer = 128 * 1024,
  };
}

/* ------------------------------------------------------------ helpers */

static const char *status_text(int status) {
  switch (status) {
  case 200: return "OK";
  case 204: return "No Content";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 421: return "Misdirected Request";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  default: return "Unknown";
  }
}

static void count_status(http_server *s, int status) {
  size_t i = 0;
  while (i < NCOUNTED && counted_status[i] != status) i++;
  atomic_fetch_add_explicit(&s->status[i], 1, memory_order_relaxed);
}

const char *http_request_header(const http_request *req, const char *name) {
  for (int i = 0; i < req->nheaders; i++)
    if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
  return NULL;
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

int http_decode(const char *in, size_t len, char *out, size_t cap, int plus_space) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int ch = (unsigned char)in[i];
    if (ch == '%') {
      int hi = i + 2 < len ? hexval(in[i + 1]) : -1, lo = hi >= 0 ? hexval(in[i + 2]) : -1;
      if (lo < 0) return -1;
      ch = hi * 16 + lo;
      i += 2;
    } else if (ch == '+' && plus_space) {
      ch = ' ';
    }
    if (o + 1 >= cap) return -1;
    out[o++] = (char)ch;
  }
  if (cap == 0) return -1;
  out[o] = '\0';
  return (int)o;
}

int http_query_param(const char *query, const char *name, char *out, size_t cap) {
  size_t nlen = strlen(name);
  for (const char *p = query; p && *p;) {
    const char *end = strchr(p, '&');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    size_t klen = eq ? (size_t)(eq - p) : len;
    if (klen == nlen && memcmp(p, name, nlen) == 0) {
      const char *v = eq ? eq + 1 : p + len;
      int r = http_decode(v, (size_t)(p + len - v), out, cap, 1);
      return r < 0 ? -2 : r;
    }
    p = end ? end + 1 : NULL;
  }
  return -1;
}

/* ------------------------------------------------------------ parsing */

/* Stops the parser with the status to answer. */
static int fail(http_conn *c, int status) {
  if (!c->error_status) c->error_status = status;
  http_parser_pause(&c->parser, 1);
  return 0;
}

static void end_piece(http_conn *c) {
  if (c->piece != PIECE_NONE) c->arena[c->arena_len++] = '\0';
  c->piece = PIECE_NONE;
}

static int append(http_conn *c, const char *at, size_t len) {
  if (len + 1 > c->arena_cap - c->arena_len) return fail(c, 431);
  memcpy(c->arena + c->arena_len, at, len);
  c->arena_len += len;
  return 0;
}

static int on_message_begin(http_parser *p) {
  ((http_conn *)p->data)->started = 1;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  c->piece = PIECE_URL; /* the URL is the arena's first piece, at offset 0 */
  c->url_len += len;
  if (c->url_len > c->srv->cfg.max_url_bytes) return fail(c, 414);
  return append(c, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  if (c->piece != PIECE_FIELD) {
    end_piece(c);
    if (c->nheaders == c->srv->cfg.max_headers) return fail(c, 431);
    c->hdr[c->nheaders].name = c->arena_len;
    c->hdr[c->nheaders].value = SIZE_MAX;
    c->nheaders++;
    c->piece = PIECE_FIELD;
  }
  return append(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  if (c->piece != PIECE_VALUE) {
    end_piece(c);
    c->hdr[c->nheaders - 1].value = c->arena_len;
    c->piece = PIECE_VALUE;
  }
  return append(c, at, len);
}

static size_t body_limit(const http_conn *c) {
  const http_config *cfg = &c->srv->cfg;
  return c->parser.method == HTTP_POST && cfg->max_post_body_bytes ? cfg->max_post_body_bytes : cfg->max_body_bytes;
}

static int on_headers_complete(http_parser *p) {
  http_conn *c = p->data;
  if (c->url_len == 0) return fail(c, 400);
  end_piece(c);
  c->head_done = 1;
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > body_limit(c)) return fail(c, 413);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  http_server *s = c->srv;
  if (len > body_limit(c) - c->body.len) return fail(c, 413);
  if (s->cfg.max_bodies_bytes && atomic_fetch_add(&s->bodies_bytes, len) + len > s->cfg.max_bodies_bytes) {
    atomic_fetch_sub(&s->bodies_bytes, len);
    return fail(c, 503);
  }
  c->body_charged += len;
  http_buf_append(&c->body, at, len);
  return http_buf_failed(&c->body) ? fail(c, 500) : 0;
}

/* The request's body leaves the total of buffered bodies. */
static void body_release(http_conn *c) {
  if (c->body_charged) atomic_fetch_sub(&c->srv->bodies_bytes, c->body_charged);
  c->body_charged = 0;
}

static int on_message_complete(http_parser *p) {
  http_conn *c = p->data;
  c->complete = 1;
  http_parser_pause(p, 1); /* one request at a time: the rest waits in carry */
  return 0;
}

static http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Parses what it can of data; returns the bytes taken. A parser error
 * that no callback explained is a malformed request. */
static size_t feed(http_conn *c, const char *data, size_t len) {
  size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (e != HPE_OK && e != HPE_PAUSED && !c->error_status) c->error_status = 400;
  return n;
}

static void request_reset(http_conn *c) {
  c->arena_len = c->url_len = 0;
  c->piece = PIECE_NONE;
  c->nheaders = 0;
  http_buf_reset(&c->body);
  body_release(c);
  c->started = c->head_done = c->complete = c->responded = c->is_head = 0;
}

/* Waits for one complete request. Returns 0 when one is complete, 1 when
 * c->error_status tells what to answer, or a negative code when the
 * connection is to be closed without an answer (the peer closed, the
 * server stops, an idle keep-alive connection timed out).
 *
 * The deadlines: a first request's head is due header_timeout_ms after
 * the connection started, a later one's that long after its first byte
 * (until then the connection is idle: idle_timeout_ms); a whole request
 * is due request_timeout_ms after its first byte. So a peer that sends
 * nothing, or a byte now and then, holds its connection a bounded time. */
static int receive_request(http_conn *c) {
  const http_config *cfg = &c->srv->cfg;
  int64_t head_due = c->first ? c->opened + TG_MS(cfg->header_timeout_ms) : TG_FOREVER;
  int64_t deadline = c->first ? head_due : tg_deadline_in(TG_MS(cfg->idle_timeout_ms));
  int timing_request = 0;
  for (;;) {
    if (c->carry_len) {
      size_t n = feed(c, c->carry, c->carry_len);
      memmove(c->carry, c->carry + n, c->carry_len - n);
      c->carry_len -= n;
    }
    if (c->error_status) return 1;
    if (c->complete) return 0;
    if (c->started && !timing_request) {
      timing_request = 1;
      int64_t now = tg_now();
      if (!c->first) head_due = now + TG_MS(cfg->header_timeout_ms);
      deadline = now + TG_MS(cfg->request_timeout_ms);
    }
    int64_t until = c->head_done || head_due > deadline ? deadline : head_due;
    if (c->carry_len) continue;
    tg_tcp_view view = {0};
    tg_case cs[2] = {tg_cancel_case(c->srv->cancel), stream_recv_case(&c->io)};
    /* TLS bytes decrypted earlier need no wait (stream.h); the shutdown still comes first */
    int w = stream_ready(&c->io) ? (tg_cancel_fired(c->srv->cancel) ? 0 : 1) : tg_select(cs, 2, until);
    if (w == 0) return TG_ECANCELED;
    if (w == TG_ETIMEDOUT && c->started) {
      if (!c->head_done) atomic_fetch_add_explicit(&c->srv->header_timeouts, 1, memory_order_relaxed);
      fail(c, 408);
      return 1;
    }
    if (w == TG_ETIMEDOUT) /* not a byte of a request: closed quietly */
      atomic_fetch_add_explicit(&c->srv->idle_closed, 1, memory_order_relaxed);
    if (w < 0) return w;
    int r = stream_recv_dl(&c->io, &view, 0);
    if (r == TG_ETIMEDOUT) continue; /* TLS: only part of a record came */
    if (r != 0) return r;            /* TG_EOF, -ECONNRESET, ... */
    size_t n = feed(c, view.data, view.len);
    if (n < view.len && HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED && c->complete) {
      memcpy(c->carry, view.data + n, view.len - n); /* the next request(s) */
      c->carry_len = view.len - n;
    }
    stream_consume(&c->io, view.len);
  }
}

/* ------------------------------------------------------------ answering */

/* Writes in pieces of at most WRITE_PIECE bytes under one deadline: what
 * the kernel does not take at once, tg_tcp_write copies, and a piece
 * bounds that copy - a big shared document (sse.h) sent to a peer that
 * reads slowly must not cost a copy of itself per peer. */
static int write_all(http_conn *c, const void *data, size_t len) {
  if (c->write_failed) return TG_ECLOSED;
  int64_t deadline = tg_deadline_in(TG_MS(c->srv->cfg.write_timeout_ms));
  const char *p = data;
  int r = 0;
  for (size_t done = 0; r == 0 && done < len;) {
    size_t n = len - done < WRITE_PIECE ? len - done : WRITE_PIECE;
    r = stream_write_dl(&c->io, p + done, n, deadline);
    if (r == 0) {
      done += n;
      atomic_fetch_add_explicit(&c->srv->bytes_written, n, memory_order_relaxed);
    }
  }
  if (r == 0) return 0;
  if (r == TG_ETIMEDOUT) atomic_fetch_add_explicit(&c->srv->write_timeouts, 1, memory_order_relaxed);
  c->write_failed = 1;
  c->close_after = 1;
  return r;
}

static void head(http_buf *b, int status, const char *content_type, const char *extra_headers) {
  http_buf_printf(b, "HTTP/1.1 %d %s\r\nServer: telegate\r\n", status, status_text(status));
  if (content_type) http_buf_printf(b, "Content-Type: %s\r\n", content_type);
  if (extra_headers) http_buf_puts(b, extra_headers);
}

int http_respond(http_conn *c, int status, const char *content_type, const char *extra_headers, const void *body,
                 size_t len) {
  if (c->responded) return TG_EINVAL;
  c->responded = 1;
  count_status(c->srv, status);
  if (!c->keep_alive || tg_cancel_fired(c->srv->cancel)) c->close_after = 1;
  http_buf b = {0};
  head(&b, status, content_type, extra_headers);
  http_buf_printf(&b, "Content-Length: %zu\r\nConnection: %s\r\n\r\n", len, c->close_after ? "close" : "keep-alive");
  if (!c->is_head) http_buf_append(&b, body, len);
  int r = http_buf_failed(&b) ? TG_ENOMEM : write_all(c, b.data, b.len);
  http_buf_free(&b);
  if (r != 0) c->close_after = 1;
  return r;
}

int http_stream_begin(http_conn *c, int status, const char *content_type, const char *extra_headers) {
  if (c->responded) return TG_EINVAL;
  c->responded = 1;
  c->close_after = 1; /* the stream's end is the connection's */
  count_status(c->srv, status);
  http_buf b = {0};
  head(&b, status, content_type, extra_headers);
  http_buf_puts(&b, "Connection: close\r\n\r\n");
  int r = http_buf_failed(&b) ? TG_ENOMEM : write_all(c, b.data, b.len);
  http_buf_free(&b);
  return r;
}

int http_conn_write(http_conn *c, const void *data, size_t len) { return write_all(c, data, len); }

tg_case http_conn_peer_case(http_conn *c) { return stream_recv_case(&c->io); }

int http_conn_peer_event(http_conn *c, int result) {
  if (result != 0 && result != TG_EFULL) return result;
  tg_tcp_view v;
  int r = stream_recv_dl(&c->io, &v, 0);
  if (r == 0) stream_consume(&c->io, v.len); /* a stream reads nothing more */
  return r == 0 || r == TG_ETIMEDOUT || r == TG_EFULL ? 0 : r;
}

tg_cancel *http_conn_cancel(http_conn *c) { return c->srv->cancel; }

const http_config *http_conn_config(const http_conn *c) { return &c->srv->cfg; }

static void respond_error(http_conn *c, int status) {
  char body[128];
  int n = snprintf(body, sizeof body, "{\"error\":\"%s\",\"status\":%d}\n", status_text(status), status);
  c->close_after = 1;
  http_respond(c, status, "application/json", NULL, body, (size_t)n);
}

/* Calls the handler with the request received. */
static void dispatch(http_conn *c) {
  http_server *s = c->srv;
  const char *url = c->arena;
  struct http_parser_url u;
  http_parser_url_init(&u);
  int is_connect = c->parser.method == HTTP_CONNECT;
  if (http_parser_parse_url(url, c->url_len, is_connect, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
    respond_error(c, 400);
    return;
  }
  /* path and query as strings of their own, after the headers */
  char *pq = malloc(c->url_len + 2);
  if (!pq) {
    respond_error(c, 500);
    return;
  }
  size_t plen = u.field_data[UF_PATH].len;
  memcpy(pq, url + u.field_data[UF_PATH].off, plen);
  pq[plen] = '\0';
  char *query = pq + plen + 1;
  size_t qlen = (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0;
  memcpy(query, url + u.field_data[UF_QUERY].off, qlen);
  query[qlen] = '\0';

  for (int i = 0; i < c->nheaders; i++) {
    c->headers[i].name = c->arena + c->hdr[i].name;
    c->headers[i].value = c->hdr[i].value == SIZE_MAX ? "" : c->arena + c->hdr[i].value;
  }
  http_request req = {
      .method = c->parser.method,
      .method_name = http_method_str(c->parser.method),
      .url = url,
      .path = pq,
      .query = query,
      .http_minor = c->parser.http_minor,
      .keep_alive = http_should_keep_alive(&c->parser) && !c->parser.upgrade,
      .headers = c->headers,
      .nheaders = c->nheaders,
      .body = c->body.data ? c->body.data : "",
      .body_len = c->body.len,
  };
  c->keep_alive = req.keep_alive;
  c->is_head = req.method == HTTP_HEAD;
  atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
  s->handler(s->ctx, c, &req);
  if (!c->responded) respond_error(c, 500);
  free(pq);
}

/* After an error answer: tell the peer we are done writing and read what
 * it still sends (for a short while), so that closing does not reset the
 * connection and destroy the answer before the peer has read it. */
static void linger(http_conn *c) {
  if (c->write_failed) return;
  stream_close(&c->io, tg_deadline_in(TG_MS(LINGER_MS))); /* TLS: close_notify; what follows is read raw */
  if (shutdown(c->fd, SHUT_WR) != 0) return;
  int64_t deadline = tg_deadline_in(TG_MS(LINGER_MS));
  size_t drained = 0;
  while (drained < LINGER_BYTES) {
    tg_tcp_view view = {0};
    tg_case cs[2] = {tg_cancel_case(c->srv->cancel), stream_recv_case(&c->io)};
    int w = tg_select(cs, 2, deadline);
    if (w != 1 || (cs[1].result != 0 && cs[1].result != TG_EFULL) || stream_recv_dl(&c->io, &view, 0) != 0) return;
    stream_consume(&c->io, view.len);
    drained += view.len;
  }
}

static void conn_free(http_conn *c) {
  http_buf_free(&c->body);
  body_release(c);
  free(c->arena);
  free(c->hdr);
  free(c->headers);
  free(c->carry);
  free(c);
}

/* The tcp_server's handler: one HTTP connection, request after request. */
static void serve_http(void *arg, tcp_server_conn *tc) {
  http_server *s = arg;
  if (s->cfg.send_buffer > 0) /* bounds what the kernel holds for a slow reader */
    setsockopt(tc->fd, SOL_SOCKET, SO_SNDBUF, &s->cfg.send_buffer, sizeof s->cfg.send_buffer);
  http_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = s;
  c->fd = tc->fd;
  c->arena_cap = s->cfg.max_header_bytes;
  c->arena = malloc(c->arena_cap);
  c->hdr = malloc((size_t)s->cfg.max_headers * sizeof *c->hdr);
  c->headers = malloc((size_t)s->cfg.max_headers * sizeof *c->headers);
  c->carry = malloc(RECV_BUFFER);
  if (!c->arena || !c->hdr || !c->headers || !c->carry) {
    conn_free(c);
    return;
  }
  c->opened = tg_now();
  /* The handshake is part of the first request's head, and due with it. */
  stream_opts o = {.tls = s->cfg.tls,
                   .recv_buffer = RECV_BUFFER,
                   .cancel = s->cancel,
                   .deadline_ns = c->opened + TG_MS(s->cfg.header_timeout_ms)};
  if (stream_open(&c->io, tc->sock, &o, NULL, 0) != 0) {
    if (s->cfg.tls) atomic_fetch_add_explicit(&s->tls_failures, 1, memory_order_relaxed);
    conn_free(c);
    return;
  }
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  for (c->first = 1;; c->first = 0) {
    request_reset(c);
    int r = receive_request(c);
    if (r < 0) break;
    if (r == 1) {
      respond_error(c, c->error_status);
      linger(c);
      break;
    }
    dispatch(c);
    if (c->close_after) break;
    http_parser_pause(&c->parser, 0);
  }
  stream_close(&c->io, 0); /* TLS: close_notify, if the socket takes it at once */
  conn_free(c);
}

/* ------------------------------------------------------------ accepting */

/* Over the connection limit: read what the client already sent, answer
 * 503 and close - quickly, in the acceptor itself, so that a flood of
 * connections costs no task each. */
static void refuse_http(void *arg, int fd) {
  http_server *s = arg;
  if (s->cfg
          .tls) { /* a plain answer means nothing to a TLS client, and a handshake per refusal is what a flood wants */
    count_status(s, 503);
    close(fd);
    return;
  }
  tg_tcp *sock;
  if (tg_tcp_open(&sock, fd) != 0) {
    close(fd);
    return;
  }
  const char *data;
  size_t len;
  if (tg_tcp_recv_dl(sock, &data, &len, tg_deadline_in(TG_MS(REJECT_MS))) == 0) tg_tcp_consume(sock, len);
  static const char body[] = "{\"error\":\"too many connections\",\"status\":503}\n";
  char msg[256];
  int n = snprintf(msg, sizeof msg,
                   "HTTP/1.1 503 Service Unavailable\r\nServer: telegate\r\n"
                   "Content-Type: application/json\r\nRetry-After: 1\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                   sizeof body - 1, body);
  count_status(s, 503);
  if (tg_tcp_write_dl(sock, msg, (size_t)n, tg_deadline_in(TG_MS(REJECT_MS))) == 0) shutdown(fd, SHUT_WR);
  tg_tcp_close(sock);
}

/* Over the per-client limit: a 503 if the socket takes it at once, and
 * close. Nothing is read or waited for: the client that provokes this
 * may be flooding the acceptor. */
static void refuse_client_http(void *arg, int fd) {
  http_server *s = arg;
  static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nServer: telegate\r\n"
                            "Content-Type: application/json\r\nRetry-After: 1\r\n"
                            "Content-Length: 55\r\nConnection: close\r\n\r\n"
                            "{\"error\":\"too many connections from you\",\"status\":503}\n";
  count_status(s, 503);
  if (!s->cfg.tls && send(fd, msg, sizeof msg - 1, MSG_DONTWAIT | MSG_NOSIGNAL) > 0) shutdown(fd, SHUT_WR);
  close(fd);
}

int http_server_start(http_server **out, const http_config *cfg, http_handler handler, void *ctx) {
  if (!cfg || !handler || cfg->max_connections < 1 || cfg->max_per_client < 0 || cfg->max_header_bytes < 64 ||
      cfg->max_headers < 1 || cfg->idle_timeout_ms < 1 || cfg->header_timeout_ms < 1 || cfg->request_timeout_ms < 1 ||
      cfg->write_timeout_ms < 1 || cfg->shutdown_grace_ms < 0)
    return TG_EINVAL;
  http_server *s = calloc(1, sizeof *s);
  if (!s) return TG_ENOMEM;
  s->cfg = *cfg;
  s->handler = handler;
  s->ctx = ctx;
  int r = cfg->shutdown ? tg_cancel_child(cfg->shutdown, &s->cancel) : tg_cancel_new(&s->cancel, "http");
  if (r == 0) {
    tcp_server_config tc = {
        .name = "http",
        .host = cfg->host ? cfg->host : "127.0.0.1",
        .port = cfg->port,
        .max_connections = cfg->max_connections,
        .max_per_client = cfg->max_per_client,
        .grace_ms = cfg->shutdown_grace_ms,
        .cancel = s->cancel,
        .handler = serve_http,
        .reject = refuse_http,
        .reject_client = refuse_client_http,
        .ctx = s,
    };
    r = tcp_server_new(&s->tcp, &tc);
  }
  if (r == 0) r = tcp_server_start(s->tcp);
  if (r == TG_ECANCELED) return r; /* XXX: the acceptor, aborted with us, may still use the server: leaked */
  if (r != 0) {
    tcp_server_free(s->tcp);
    if (s->cancel) tg_cancel_free(s->cancel);
    free(s);
    return r;
  }
  *out = s;
  return 0;
}

int http_server_port(const http_server *s) { return tcp_server_port(s->tcp); }

void http_server_stop(http_server *s) {
  if (!s) return;
  tg_cancel_fire(s->cancel);
  if (tcp_server_wait(s->tcp) != 0) return; /* XXX: we or the acceptor were aborted; the server is leaked */
  tcp_server_free(s->tcp);
  tg_cancel_free(s->cancel);
  free(s);
}

void http_server_stats_get(const http_server *s, http_server_stats *out) {
  http_server *m = (http_server *)s; /* atomics are read, never changed */
  tcp_server_figures tf;
  tcp_server_figures_get(s->tcp, &tf);
  *out = (http_server_stats){
      .connections_open = tf.open,
      .connections_accepted = tf.accepted + tf.rejected + tf.rejected_per_client,
      .connections_rejected = tf.rejected,
      .connections_rejected_per_client = tf.rejected_per_client,
      .clients = tf.clients,
      .header_timeouts = atomic_load_explicit(&m->header_timeouts, memory_order_relaxed),
      .tls_failures = atomic_load_explicit(&m->tls_failures, memory_order_relaxed),
      .idle_closed = atomic_load_explicit(&m->idle_closed, memory_order_relaxed),
      .requests = atomic_load_explicit(&m->requests, memory_order_relaxed),
      .write_timeouts = atomic_load_explicit(&m->write_timeouts, memory_order_relaxed),
      .bytes_written = atomic_load_explicit(&m->bytes_written, memory_order_relaxed),
  };
  for (size_t i = 0; i <= NCOUNTED; i++) {
    out->status[i].code = i < NCOUNTED ? counted_status[i] : 0;
    out->status[i].count = atomic_load_explicit(&m->status[i], memory_order_relaxed);
  }
  out->nstatus = (int)NCOUNTED + 1;
}
