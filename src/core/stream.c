/* stream.c - plain TCP or TLS behind one set of calls; see stream.h. */
#include "stream.h"

#include <stdio.h>

int stream_open(stream *s, tg_tcp *sock, const stream_opts *o, char *err, size_t errlen) {
  *s = (stream){.sock = sock};
  /* The socket's buffer is sized before its first read, the handshake's. */
  if (o->recv_buffer && tg_tcp_set_recv_buffer(sock, o->recv_buffer) != 0) {
    if (err && errlen) snprintf(err, errlen, "bad receive buffer size %zu", o->recv_buffer);
    return TG_EINVAL;
  }
  if (!o->tls) return 0;
  tls_context *t = o->tls;
  int r = tls_context_is_server(t) ? tls_accept_dl(&s->tls, t, sock, o->cancel, o->deadline_ns, err, errlen)
                                   : tls_connect_dl(&s->tls, t, sock, o->host, o->cancel, o->deadline_ns, err, errlen);
  if (r == 0 && o->recv_buffer && (r = tls_set_recv_buffer(s->tls, o->recv_buffer)) != 0) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    tls_close_dl(s->tls, 0);
    s->tls = NULL;
  }
  return r;
}

int stream_recv_dl(stream *s, tg_tcp_view *v, int64_t deadline) {
  if (s->tls) return tls_recv_dl(s->tls, &v->data, &v->len, deadline);
  if (s->raw.data) { /* the case already waited: what it saw, without asking again */
    *v = s->raw;
    s->raw = (tg_tcp_view){0};
    return 0;
  }
  return tg_tcp_recv_dl(s->sock, &v->data, &v->len, deadline);
}

int stream_ready(const stream *s) { return s->tls ? tls_ready(s->tls) : s->raw.data != NULL; }

tg_case stream_recv_case(stream *s) { return s->tls ? tls_recv_case(s->tls) : tg_tcp_recv_case(s->sock, &s->raw); }

void stream_consume(stream *s, size_t n) {
  if (s->tls)
    tls_consume(s->tls, n);
  else
    tg_tcp_consume(s->sock, n);
}

int stream_write_dl(stream *s, const void *buf, size_t len, int64_t deadline) {
  return s->tls ? tls_write_dl(s->tls, buf, len, deadline) : tg_tcp_write_dl(s->sock, buf, len, deadline);
}

int stream_try_write(stream *s, const void *buf, size_t len) {
  return s->tls ? tls_try_write(s->tls, buf, len) : tg_tcp_try_write(s->sock, buf, len);
}

void stream_describe(const stream *s, char *buf, size_t len) {
  if (!s->tls) {
    snprintf(buf, len, "plain TCP");
    return;
  }
  char proto[96], peer[160];
  tls_describe(s->tls, proto, sizeof proto);
  tls_peer_subject(s->tls, peer, sizeof peer);
  snprintf(buf, len, "TLS %s%s%s", proto, peer[0] ? ", peer " : "", peer);
}

void stream_close(stream *s, int64_t deadline) {
  if (s->tls) tls_close_dl(s->tls, deadline);
  s->tls = NULL;
  s->raw = (tg_tcp_view){0};
}
