/* tcp_server.h - the accept loop that the device port and HTTP share: a
 * listener, one task per connection spread over the workers, a connection
 * cap, back-off when descriptors run out, and a shutdown with a grace.
 *
 * tcp_server_start spawns the acceptor task, which binds host:port itself
 * (a listener belongs to the worker of the task that created it, so the
 * task that accepts must be the one that binds) and reports the result
 * before start returns. The acceptor takes each connection's raw
 * descriptor (tg_tcp_accept_fd) and spawns a connection task for it,
 * pinned round-robin to the workers (or placed by the runtime), which
 * opens the socket there (tg_tcp_open) and runs the handler with it.
 * Connection ids follow accept order; the handlers of different
 * connections run independently of each other.
 *
 * The cap: while max_connections connection tasks run, a new connection
 * goes to the reject callback instead, in the acceptor, so each protocol
 * says no its own way (a line, a 503) and a flood costs no task each. The
 * kernel's backlog holds what the acceptor has not taken yet; a handler
 * that waits (on its peer, on a full channel) holds its slot, and that is
 * the backpressure new connections see.
 *
 * The per-client cap: with max_per_client > 0, a client address (an IPv4
 * address, or an IPv6 /64, which one host usually holds whole) may hold
 * at most that many connection tasks; one more goes to reject_client (or
 * reject), so that a single client holding idle or slow connections
 * cannot take every slot of the cap from the others. It is checked in the
 * acceptor, before any task exists.
 *
 * Accept errors (EMFILE, ENFILE, ENOMEM: any but the listener's close or
 * the acceptor's abort, which end it) are counted, logged at most once a
 * second, and each followed by a back-off that doubles from 10 ms to at
 * most 1 s and restarts after a success; it ends early when a connection
 * task ends (its descriptor is free again) or the token fires.
 *
 * Cancel: when cfg->cancel fires, the acceptor closes the listener (new
 * connections are refused by the kernel), then joins every connection
 * task. The token is the handler's to watch as well: a handler sees it
 * and ends on its own. Those still running grace_ms after it fired are
 * aborted (their waits fail with TG_ECANCELED) and joined; grace_ms < 0
 * waits for every one, for handlers that bound their own drain.
 *
 * Ownership: the server copies cfg and its name, not what else it points
 * to: host, the token, the log and ctx must outlive it. The handler does not own the
 * socket: the server closes it when the handler returns, also when the
 * handler panics (the panic is counted and logged, the server goes on).
 * The reject callback owns the descriptor it is given and must close it.
 *
 * Threads: new, figures_get and free from anywhere; start and wait from a
 * task. The handler runs on its connection's worker, reject on the
 * acceptor's (worker 0); several handlers run at once on different
 * workers. The figures are atomics, readable from any thread. */
#ifndef TELEGATE_TCP_SERVER_H
#define TELEGATE_TCP_SERVER_H

#include "log.h"
#include "tg/tg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tcp_server tcp_server;

/* One accepted connection, as its handler sees it. */
typedef struct tcp_server_conn {
  tg_tcp *sock;  /* opened on the handler's worker; the server closes it */
  int fd;        /* sock's descriptor, for setsockopt and shutdown; never closed by the handler */
  uint64_t id;   /* 1, 2, 3 ... in accept order */
  char peer[64]; /* "address:port" of the peer, "?:0" when unknown */
} tcp_server_conn;

/* Serves one connection, in its own task; the connection ends when it
 * returns. */
typedef void (*tcp_server_handler)(void *ctx, tcp_server_conn *conn);

/* Tells a connection over the cap that it is refused and closes fd (a
 * non-blocking descriptor). Runs in the acceptor: whatever it waits
 * delays the next accept, so it waits briefly or not at all. */
typedef void (*tcp_server_reject)(void *ctx, int fd);

typedef struct tcp_server_config {
  const char *name;    /* the log's component and the tasks' names: "ingest", "http" */
  const char *host;    /* numeric address or "localhost" */
  int port;            /* 0: any free port (see tcp_server_port) */
  int max_connections; /* connection tasks at once, >= 1 */
  int max_per_client;  /* connection tasks at once per client address; 0: no limit */
  int workers;         /* pin connections round-robin to workers 1, 2 .. workers-1, 0, 1 ...;
                                  0: let the runtime place them */
  size_t stack_size;   /* of each connection task; 0: the runtime's default */
  int grace_ms;        /* after cancel, then abort; < 0: wait for every connection */
  tg_cancel *cancel;   /* firing it stops the server */
  tcp_server_handler handler;
  tcp_server_reject reject;        /* NULL: a refused connection is just closed */
  tcp_server_reject reject_client; /* over max_per_client; NULL: reject */
  void *ctx;                       /* passed to handler and reject */
  demo_log *log;                   /* accept errors, failed spawns, panics; NULL: not logged */
} tcp_server_config;

typedef struct tcp_server_figures {
  uint64_t accepted;            /* connections given a task, ever */
  uint64_t rejected;            /* connections refused over max_connections, ever */
  uint64_t rejected_per_client; /* connections refused over max_per_client, ever */
  uint64_t clients;             /* client addresses holding a connection now (with max_per_client) */
  uint64_t open;                /* connection tasks running now */
  uint64_t closed;              /* connection tasks ended, ever (accepted = open + closed) */
  uint64_t accept_errors;       /* failed accepts, each followed by a back-off */
  uint64_t panicked;            /* handlers that panicked (their connections are in closed) */
  uint64_t aborted;             /* connection tasks aborted when the grace ran out */
} tcp_server_figures;

/* Checks and copies cfg; binds nothing yet. Returns 0, TG_EINVAL (no
 * handler, cancel or host, a port outside 0..65535, max_connections < 1,
 * max_per_client or workers < 0) or TG_ENOMEM. */
int tcp_server_new(tcp_server **out, const tcp_server_config *cfg);

/* Spawns the acceptor (pinned to worker 0), which binds and starts
 * accepting; returns once the bind is done. From a task, once per server.
 * Returns 0, TG_EINVAL (a bad address), TG_ENOMEM, the listener's -errno
 * (-EADDRINUSE, -EACCES, -EADDRNOTAVAIL), or TG_ECANCELED when the caller
 * was aborted while waiting (the acceptor is aborted too, and the server
 * is left allocated, as after wait's TG_ECANCELED). After any other error
 * no task of the server runs. */
int tcp_server_start(tcp_server *s);

/* The bound port; 0 before a successful start. */
int tcp_server_port(const tcp_server *s);

/* Waits until the acceptor ended: after cfg->cancel fired, the listener
 * is closed and every connection task joined (see the grace above). From
 * a task. Returns 0, TG_EINVAL when start did not succeed, or TG_ECANCELED
 * when the caller or the acceptor was aborted first: then the acceptor
 * and every connection task are aborted too, but may still be running
 * the handler, so ctx must stay allocated (and tcp_server_free keeps the
 * server). */
int tcp_server_wait(tcp_server *s);

void tcp_server_figures_get(const tcp_server *s, tcp_server_figures *out);

/* Frees the server: before start, after a failed start, or after wait
 * returned 0. XXX: after wait's TG_ECANCELED (the runtime is ending with
 * connection tasks that still use the server) it is left allocated. */
void tcp_server_free(tcp_server *s);

#endif
