/* stream.h - a connection's bytes, plain TCP or TLS, behind one set of
 * calls, so a protocol reads and writes the same way over both.
 *
 * A stream wraps a connected tg_tcp socket, which it uses but does not
 * own. Without a TLS context the calls are tg_tcp's own (tg/io.h); with
 * one, stream_open runs the handshake and the calls are tls.h's. The
 * semantics are tg_tcp's in both cases: recv waits for bytes not yet seen
 * and shows all that are buffered, in place; consume drops what the
 * caller is done with; views stay put while the caller waits elsewhere;
 * try_write writes everything or nothing without waiting.
 *
 * Waiting in a select (as tls.h explains, TLS plaintext can be ready with
 * nothing on the socket, and the socket readable with no plaintext):
 * when stream_ready is 0, select on stream_recv_case; when it wins, or
 * when stream_ready is 1, call stream_recv_dl with deadline 0, which
 * returns TG_ETIMEDOUT if nothing came that can be shown yet. A plain
 * stream is never ready before its case wins, and then shows what the
 * case saw.
 *
 * Threads: as tg_tcp and tls_conn, one reader and one writer at a time,
 * on the socket's worker. */
#ifndef TELEGATE_STREAM_H
#define TELEGATE_STREAM_H

#include "tls.h"

typedef struct stream {
  tg_tcp *sock;
  tls_conn *tls;   /* NULL: plain */
  tg_tcp_view raw; /* plain: what the recv case showed, not yet handed out */
} stream;

typedef struct stream_opts {
  tls_context *tls;    /* NULL: plain TCP */
  const char *host;    /* a client's server name, for SNI and the certificate check (tls_connect_dl) */
  size_t recv_buffer;  /* bytes buffered for reading (TLS: ciphertext and plaintext, each); 0: libtg's 64 KiB */
  tg_cancel *cancel;   /* ends the handshake when it fires; may be NULL */
  int64_t deadline_ns; /* of the handshake */
} stream_opts;

/* Starts a stream over sock, which no one has read from yet: plain, or
 * with a TLS context the server's or the client's handshake, by the
 * context's role. Returns 0, TG_EINVAL (recv_buffer < 64) or what
 * tls_accept_dl / tls_connect_dl return, with the reason in err; on error
 * the stream is not open. */
int stream_open(stream *s, tg_tcp *sock, const stream_opts *opts, char *err, size_t errlen);

/* As tg_tcp_recv_dl (TLS adds -EPROTO, a bad record or alert). */
int stream_recv_dl(stream *s, tg_tcp_view *v, int64_t deadline_ns);

/* 1 when stream_recv_dl would not wait on the socket. */
int stream_ready(const stream *s);

/* A select case that wins when the socket has bytes (only while
 * stream_ready is 0); follow it with stream_recv_dl(s, v, 0). */
tg_case stream_recv_case(stream *s);

/* As tg_tcp_consume. */
void stream_consume(stream *s, size_t n);

/* As tg_tcp_write_dl and tg_tcp_try_write (TLS adds -EPROTO). */
int stream_write_dl(stream *s, const void *buf, size_t len, int64_t deadline_ns);
int stream_try_write(stream *s, const void *buf, size_t len);

/* One line for logs: "TLS TLSv1.3 TLS_AES_256_GCM_SHA384, peer CN=x" or
 * "plain TCP". */
void stream_describe(const stream *s, char *buf, size_t len);

/* Ends the stream: a TLS stream sends close_notify if the socket takes it
 * by the deadline (0: at once or not at all). The socket stays open. */
void stream_close(stream *s, int64_t deadline_ns);

#endif
