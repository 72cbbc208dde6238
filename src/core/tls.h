/* tls.h - TLS over libtg sockets (OpenSSL): a context that reloads its
 * certificates, and connections that read and write like tg_tcp.
 *
 * No OpenSSL call ever waits on the network. Each connection's SSL object
 * talks to two memory BIOs; the task that owns the connection moves
 * ciphertext between them and its tg_tcp socket with libtg's own waits,
 * so a handshake or a read from a slow peer suspends that task, never a
 * worker, and every wait takes a deadline.
 *
 * Reading mirrors tg_tcp_recv and tg_tcp_consume: a connection decrypts
 * into its own receive buffer (64 KiB unless set); tls_recv waits for
 * plaintext the caller has not seen yet and shows everything buffered, in
 * place; tls_consume drops what the caller is done with. Ciphertext is
 * taken from the socket only while that buffer has room, so a reader that
 * stops reading stops the socket too and TCP slows the peer down, as with
 * plain sockets. Buffered bytes move only inside tls_recv and
 * tls_consume, so a view stays valid while its owner waits on something
 * else. A peer's close_notify ends the stream with TG_EOF; so does a TCP
 * close without one (a truncation the line protocol sees as a cut line).
 *
 * Waiting in a select: a socket readable says nothing about plaintext (a
 * record may be incomplete) and plaintext may be ready with nothing on the
 * socket (decrypted earlier, past a full buffer). So: when tls_ready is 0,
 * select on tls_recv_case; when it wins, or when tls_ready is 1, call
 * tls_recv_dl with deadline 0, which returns TG_ETIMEDOUT when what came
 * was only part of a record.
 *
 * Writing mirrors tg_tcp_write and tg_tcp_try_write: bytes are encrypted
 * and the records handed to the socket, in call order. tls_try_write
 * encrypts nothing while a previous write is still going out, so it
 * either writes everything (the rest goes out in the background) or
 * nothing. A write that timed out may have sent part of a record: close
 * the connection.
 *
 * Certificates: a tls_context holds the SSL_CTX that new connections use.
 * tls_context_reload builds a new one from the files and swaps it in
 * under a lock; connections keep a reference to the one they started
 * with, so old connections go on with the old certificate and new ones
 * get the new. A reload whose files are bad changes nothing and says why.
 * TLS 1.2 and 1.3 only, OpenSSL's default ciphers.
 *
 * Threads: a context is shared by every thread. A connection's tasks run
 * on its socket's worker (tg/io.h); as with tg_tcp, one task may read
 * (tls_recv_dl, tls_consume) while another writes (tls_write_dl,
 * tls_try_write), but no two may read, or write, at once, and nothing
 * may wait on a connection that is being closed. The context must outlive its connections'
 * handshakes; afterwards they hold their own reference. Loading
 * certificates reads files: tls_context_new and tls_context_reload block
 * for as long as that takes (small local files); call them from a plain
 * thread or through tg_blocking_run.
 *
 * Errors: 0 or a negative code; a TLS failure (a bad handshake, a bad
 * record, a peer's alert) is -EPROTO; calls that can fail for a reason a
 * person must read also write a one-line reason into err. */
#ifndef TELEGATE_TLS_H
#define TELEGATE_TLS_H

#include "tg/tg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tls_context tls_context;
typedef struct tls_conn tls_conn;

/* What a context is built from. Paths are PEM files. */
typedef struct tls_options {
  int server;            /* 1: accepts connections; 0: makes them */
  const char *cert_file; /* a server's certificate chain (required); a client's own, to present (optional) */
  const char *key_file;  /* the private key of cert_file */
  const char *ca_file;   /* server: client certificates are required and verified against these CAs (NULL: not
                            asked for); client: the server's certificate is verified against these (NULL: the
                            system's CAs) */
  int insecure;          /* client: do not verify the server at all (self-signed testing only) */
  const char *crl_file;  /* server, with ca_file: client certificates revoked by these CRLs (PEM, one per issuing CA)
                            are refused, and so is one whose issuer has no CRL here; NULL: no revocation check */
} tls_options;

/* Builds a context from the files. Returns 0, TG_EINVAL (a file missing,
 * unreadable or not what it should be, a key that does not match its
 * certificate: err says which and why) or TG_ENOMEM. */
int tls_context_new(tls_context **ctx, const tls_options *opts, char *err, size_t errlen);

/* tls_context_new through tg_blocking_run, for a task, so reading the
 * files does not hold up a worker:
 *   tls_open_args a = {.ctx = &ctx, .opts = {...}};
 *   r = tg_blocking_run(tls_open_call, &a);   (a.err says why) */
typedef struct tls_open_args {
  tls_context **ctx;
  tls_options opts;
  char err[300];
} tls_open_args;
int tls_open_call(void *args);

/* Rebuilds the context from opts (the same role) and swaps it in for new
 * connections. On error the old one stays. Returns what tls_context_new
 * does. */
int tls_context_reload(tls_context *ctx, const tls_options *opts, char *err, size_t errlen);

/* One line about the context's own certificate: its subject and when it
 * expires ("CN=gateway, expires 2027-12-03 10:00:00 GMT"), or "no
 * certificate". */
void tls_context_describe(tls_context *ctx, char *buf, size_t len);

/* 1 for a server's context, 0 for a client's. */
int tls_context_is_server(const tls_context *ctx);

/* Frees the context; connections that started keep their reference. */
void tls_context_free(tls_context *ctx);

/* The server's and the client's handshake over a connected socket, which
 * the connection uses but does not own (close it after tls_close). host
 * (client only) is sent as SNI and checked against the server's
 * certificate unless opts.insecure; a numeric host is checked as an IP
 * address. cancel (may be NULL) ends the handshake when it fires.
 * Returns 0, -EPROTO (the handshake failed: err says why, for instance a
 * certificate that does not verify or a peer that does not speak TLS),
 * TG_EOF (the peer closed during it), TG_ETIMEDOUT, TG_ECANCELED (cancel
 * fired or the task was aborted), TG_ECLOSED, TG_ENOMEM, TG_EWORKER or
 * -errno. On error nothing is left to close. */
int tls_accept_dl(tls_conn **conn, tls_context *ctx, tg_tcp *sock, tg_cancel *cancel, int64_t deadline_ns, char *err,
                  size_t errlen);
int tls_connect_dl(tls_conn **conn, tls_context *ctx, tg_tcp *sock, const char *host, tg_cancel *cancel,
                   int64_t deadline_ns, char *err, size_t errlen);

/* Sets the receive buffer size (before the first recv; >= 64 bytes).
 * Returns 0, TG_EINVAL or TG_ENOMEM. */
int tls_set_recv_buffer(tls_conn *conn, size_t size);

/* Waits until plaintext not yet seen is buffered, then points *data at
 * all *len buffered bytes (valid until the next tls_recv or tls_consume).
 * Returns 0, TG_EOF (the peer closed and every byte was seen), TG_EFULL
 * (the buffer is full of seen bytes: consume some first), -EPROTO (a bad
 * record or a peer's alert; see tls_last_error), TG_ECLOSED, TG_ETIMEDOUT,
 * TG_ECANCELED, TG_EWORKER or -errno. An error other than TG_ETIMEDOUT
 * and TG_EFULL ends the stream: later calls return it again. */
int tls_recv_dl(tls_conn *conn, const char **data, size_t *len, int64_t deadline_ns);

/* 1 when tls_recv_dl would not wait on the socket: see the note on select. */
int tls_ready(const tls_conn *conn);

/* A select case that wins when the socket has ciphertext; only valid
 * while tls_ready is 0. Its result is the socket's (0 or an error that
 * the next tls_recv_dl returns as well). */
tg_case tls_recv_case(tls_conn *conn);

/* Drops the first n buffered bytes (n <= what recv showed). */
void tls_consume(tls_conn *conn, size_t n);

/* Encrypts and writes all of buf. Returns 0, TG_ETIMEDOUT (close the
 * connection), -EPROTO, TG_ECLOSED, TG_ECANCELED, TG_EWORKER, TG_ENOMEM
 * or -errno. */
int tls_write_dl(tls_conn *conn, const void *buf, size_t len, int64_t deadline_ns);

/* The same without waiting: TG_EAGAIN (a write is still going out:
 * nothing was encrypted or written), or what tls_write_dl returns but
 * TG_ETIMEDOUT. */
int tls_try_write(tls_conn *conn, const void *buf, size_t len);

/* The subject of the peer's certificate (RFC 2253, "CN=device-7,O=acme"),
 * or "" when it presented none. */
void tls_peer_subject(const tls_conn *conn, char *buf, size_t len);

/* The protocol and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384"). */
void tls_describe(const tls_conn *conn, char *buf, size_t len);

/* Why the last -EPROTO happened, in one line ("" if none did). */
const char *tls_last_error(const tls_conn *conn);

/* Sends close_notify if the socket takes it by the deadline (0: only if
 * it can at once), then frees the connection. The socket stays open. */
void tls_close_dl(tls_conn *conn, int64_t deadline_ns);

#endif
