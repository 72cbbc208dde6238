/* tg/io.h - TCP sockets for tasks.
 *
 * Sockets sit on libuv. A socket belongs to the worker of the task that
 * created, accepted or opened it: libuv handles are not thread-safe. Tasks
 * move between workers (tg/runtime.h), sockets do not: a task that
 * creates or uses a socket moves to the socket's worker if it is not
 * there and stays on it from then on, as if pinned; a task pinned to
 * another worker gets TG_EWORKER. To spread connections over workers,
 * accept with tg_tcp_accept_fd on the listener's worker and tg_tcp_open
 * the descriptor from a task pinned to another.
 *
 * Reading is buffered and pushes back. Each connection has a receive
 * buffer (64 KiB unless set): while it has room the socket reads from the
 * kernel; when it is full, reading stops, the kernel's receive window
 * fills and TCP slows the sender down. tg_tcp_recv waits for bytes the
 * caller has not seen yet and shows everything buffered, in place;
 * tg_tcp_consume drops what the caller is done with, which makes room.
 * Buffered bytes move only inside the owner's own calls (consume, recv),
 * so a view stays valid while its owner waits on something else.
 * A parser of lines thus reads without copying: it consumes the complete
 * lines and calls recv again for the rest of a partial one.
 *
 * Writing: tg_tcp_write returns when the bytes are handed to the kernel.
 * One write is in flight per socket; other writers wait their turn. A
 * write to a peer that reset the connection raises SIGPIPE, which ends
 * the process unless the program ignores it (signal(SIGPIPE, SIG_IGN));
 * libtg leaves the process's signal dispositions alone, so do that in
 * any program that writes to sockets. The write then fails with -EPIPE.
 *
 * Waits (accept, connect, recv, write) take deadlines, end with
 * TG_ECANCELED on abort, and accept and recv can be select cases; a lost
 * or cancelled wait consumes nothing. Closing a socket ends the waits of
 * other tasks on it with TG_ECLOSED; every socket must be closed before
 * the runtime ends.
 *
 * Addresses are numeric IPv4 or IPv6, or "localhost" (127.0.0.1).
 */
#ifndef TG_IO_H
#define TG_IO_H

#include "tg/select.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tg_tcp tg_tcp;

/* Listens on host:port (port 0: any free port; see tg_tcp_port).
 * Returns 0, TG_EINVAL (bad address), TG_ENOMEM, TG_ENOTASK or -errno. */
int tg_tcp_listen(tg_tcp **listener, const char *host, int port, int backlog);

/* The local port of a listener or connection, or a negative error. */
int tg_tcp_port(tg_tcp *s);

/* Waits for a connection and opens it on this worker. Returns 0,
 * TG_ECLOSED, TG_ETIMEDOUT (_dl), TG_ECANCELED, TG_EWORKER, -errno. */
int tg_tcp_accept(tg_tcp *listener, tg_tcp **conn);
int tg_tcp_accept_dl(tg_tcp *listener, tg_tcp **conn, int64_t deadline_ns);
/* The same, giving the raw non-blocking descriptor, for tg_tcp_open. */
int tg_tcp_accept_fd(tg_tcp *listener, int *fd, int64_t deadline_ns);
/* A select case for tg_tcp_accept_fd (buf: int *fd). */
tg_case tg_tcp_accept_case(tg_tcp *listener, int *fd);

/* Wraps a connected descriptor, which the socket owns once this returned
 * 0. Returns 0, TG_ENOTASK, TG_ENOMEM or -errno. */
int tg_tcp_open(tg_tcp **conn, int fd);

/* Connects to host:port. Returns 0, TG_EINVAL, TG_ETIMEDOUT (_dl),
 * TG_ECANCELED, TG_ENOMEM or -errno (e.g. -ECONNREFUSED). */
int tg_tcp_connect(tg_tcp **conn, const char *host, int port);
int tg_tcp_connect_dl(tg_tcp **conn, const char *host, int port, int64_t deadline_ns);

/* Sets the receive buffer size (before the first recv; >= 64 bytes). */
int tg_tcp_set_recv_buffer(tg_tcp *conn, size_t size);

/* Waits until bytes not yet seen are buffered, then points *data at all
 * *len buffered bytes (valid until the next call on this socket).
 * Returns 0, TG_EOF (the peer closed and every byte was seen),
 * TG_EFULL (the buffer is full of seen bytes: consume some first),
 * TG_ECLOSED, TG_ETIMEDOUT (_dl), TG_ECANCELED, TG_EWORKER, -errno. */
int tg_tcp_recv(tg_tcp *conn, const char **data, size_t *len);
int tg_tcp_recv_dl(tg_tcp *conn, const char **data, size_t *len, int64_t deadline_ns);
/* A select case for recv; its buffer is a tg_tcp_view. */
typedef struct tg_tcp_view {
  const char *data;
  size_t len;
} tg_tcp_view;
tg_case tg_tcp_recv_case(tg_tcp *conn, tg_tcp_view *view);

/* Drops the first n buffered bytes (n <= what recv showed). */
void tg_tcp_consume(tg_tcp *conn, size_t n);

/* Writes all of buf. Returns 0, TG_ECLOSED, TG_ETIMEDOUT (_dl: the bytes
 * may still go out later; close the connection), TG_ECANCELED,
 * TG_EWORKER, TG_ENOTASK, TG_ENOMEM or -errno. */
int tg_tcp_write(tg_tcp *conn, const void *buf, size_t len);
int tg_tcp_write_dl(tg_tcp *conn, const void *buf, size_t len, int64_t deadline_ns);

/* Writes all of buf without waiting, if no write is in flight: what the
 * kernel does not take at once goes out in the background, from a copy
 * the socket owns. For output that may lag but must never hold its
 * writer up (a peer that reads slowly). Returns 0, TG_EAGAIN (a write is
 * still going out: nothing was written), TG_ECLOSED, TG_EWORKER,
 * TG_ENOMEM or -errno. */
int tg_tcp_try_write(tg_tcp *conn, const void *buf, size_t len);

/* Closes and frees the socket (from a task on its worker). */
void tg_tcp_close(tg_tcp *s);

#endif
