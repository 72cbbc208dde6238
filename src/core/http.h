/* http.h - an HTTP/1.1 server on libtg sockets.
 *
 * A tcp_server (tcp_server.h) accepts connections and runs each in its own
 * task (spread over the workers); requests are parsed by the Debian package's
 * http_parser (libhttp-parser), fed straight from the socket's receive
 * buffer. A connection serves its requests in order (keep-alive and
 * pipelining): for each complete request it calls the handler, which
 * answers with http_respond - or, for a stream, http_stream_begin and then
 * http_conn_write until it returns.
 *
 * Limits, each a config field: connections (one over the limit gets a 503
 * and is closed), connections per client address (one over gets a 503 if
 * it can take it at once, and is closed: see tcp_server.h), bytes of the
 * URL (414), of the request line and headers (431), of a body (413; a
 * POST's may have a limit of its own), of the bodies every connection
 * buffers at once (503: what uploads cost in all stays bounded), time
 * to receive a request's head - from the connection's start for its first
 * request, from the first byte for a later one (408) - and the whole
 * request once started (408), time to wait for the next request on an
 * idle keep-alive connection (closed quietly), and a
 * deadline on every write, so a peer that stops reading costs at most its
 * socket buffers for at most write_timeout_ms before it is dropped. A
 * write hands the socket at most 64 KiB at a time: libtg keeps a copy of
 * what the kernel does not take, and that copy stays that small however
 * big the document (a shared stream event) is. A
 * malformed request gets a 400. After a 4xx for a request the parser could
 * not finish, the connection is closed (its framing is lost); a 404 or 405
 * for a well-formed request keeps it open. Nothing a client sends stops
 * the server.
 *
 * TLS: with cfg.tls, a connection starts with a TLS handshake in its own
 * task (stream.h), due with its first request's head; one that fails or
 * is late is closed and counted (tls_failures). Connections over the
 * limits are then closed without a 503: a plain answer means nothing to
 * a TLS client.
 *
 * Stopping: http_server_stop fires the server's token (a child of
 * cfg->shutdown when one is given, so serve's own shutdown stops it too):
 * the listener closes, idle connections close, a request being handled
 * completes, and a stream sees the token in http_conn_cancel and ends.
 * Connections still open shutdown_grace_ms later are aborted. The call
 * returns once every connection task has ended.
 *
 * Threads: start and stop from a task. The handler runs in the
 * connection's task, on the worker of its socket; http_conn functions are
 * called only from that task. The figures are atomics, readable anywhere. */
#ifndef TELEGATE_HTTP_H
#define TELEGATE_HTTP_H

#include "tg/tg.h"
#include "tls.h"

#include <stddef.h>
#include <stdint.h>

typedef struct http_config {
  const char *host;           /* numeric address or "localhost"; default 127.0.0.1 */
  int port;                   /* default 8080; 0: any free port (see http_server_port) */
  int max_connections;        /* default 256 */
  int max_per_client;         /* connections per client address (tcp_server.h), default 16; 0: no limit */
  size_t max_url_bytes;       /* default 2048 (414) */
  size_t max_header_bytes;    /* request line and headers, default 8192 (431) */
  size_t max_body_bytes;      /* default 8192 (413) */
  size_t max_post_body_bytes; /* a POST's body (the write API's); default 0: max_body_bytes (413) */
  size_t max_bodies_bytes;    /* bodies buffered by all connections at once; past it 503; default 0: no total */
  int max_headers;            /* default 64 (431) */
  int idle_timeout_ms;        /* keep-alive wait for a next request, default 5000 */
  int header_timeout_ms;      /* a request's head must be complete by then, default 5000 (408) */
  int request_timeout_ms;     /* a started request must be complete by then, default 10000 (408) */
  int write_timeout_ms;       /* every write, default 5000; then the peer is dropped */
  int shutdown_grace_ms;      /* stop: connections left after this are aborted, default 2000 */
  int send_buffer;            /* SO_SNDBUF of each connection, default 128 KiB (the kernel doubles it); 0: the
                              kernel's, autotuned up to MBs: what a client that never reads costs */
  tg_cancel *shutdown;        /* optional: firing it stops the server as http_server_stop does */
  tls_context *tls;           /* optional: connections speak TLS (tls.h), its handshake due with the first request's
                              head; the caller keeps it alive and may reload it */
} http_config;

/* Fills the defaults above. */
void http_config_defaults(http_config *c);

/* One header as received; name and value are NUL-terminated. */
typedef struct http_header {
  const char *name, *value;
} http_header;

/* A parsed request; every pointer is valid until the handler returns. */
typedef struct http_request {
  int method;              /* enum http_method of http_parser.h */
  const char *method_name; /* "GET" */
  const char *url;         /* as sent: "/api/stream?every=250" */
  const char *path;        /* "/api/stream", not decoded */
  const char *query;       /* "every=250", or "" */
  int http_minor;          /* 1 for HTTP/1.1 */
  int keep_alive;          /* the client allows another request after this one */
  const http_header *headers;
  int nheaders;
  const char *body; /* NUL-terminated; "" when none */
  size_t body_len;
} http_request;

/* The value of a header (name compared case-insensitively), or NULL. */
const char *http_request_header(const http_request *req, const char *name);

/* The value of a query parameter, percent-decoded into out (NUL-
 * terminated). Returns its length, -1 when absent, -2 when it does not
 * fit in cap bytes or is badly encoded. */
int http_query_param(const char *query, const char *name, char *out, size_t cap);

/* Percent-decodes in[0 .. len) into out (cap bytes, NUL-terminated);
 * with plus_space, '+' becomes a space (query strings). Returns the
 * length, or -1 when it does not fit or a %XX is malformed. */
int http_decode(const char *in, size_t len, char *out, size_t cap, int plus_space);

typedef struct http_conn http_conn;
typedef struct http_server http_server;

/* Called for each complete request. It must answer: http_respond once, or
 * http_stream_begin and then writes. A handler that returns without
 * answering gets a 500 sent for it. It may wait (a health check, a
 * stream); it should watch http_conn_cancel while it waits long. */
typedef void (*http_handler)(void *ctx, http_conn *c, const http_request *req);

/* Sends a whole response: status line, Content-Type (if not NULL),
 * Content-Length, Connection, extra_headers (NULL or lines each ending in
 * "\r\n") and the body (omitted for HEAD). Returns 0, or the write's error
 * (TG_ETIMEDOUT, TG_ECLOSED, TG_ECANCELED, -errno), after which the
 * connection is closed when the handler returns. */
int http_respond(http_conn *c, int status, const char *content_type, const char *extra_headers, const void *body,
                 size_t len);

/* A response of unknown length (Server-Sent Events): the head only, with
 * "Connection: close"; the body follows through http_conn_write and ends
 * when the handler returns and the connection closes. Returns as
 * http_respond. */
int http_stream_begin(http_conn *c, int status, const char *content_type, const char *extra_headers);

/* Writes bytes of a stream under the write deadline. Returns 0,
 * TG_ETIMEDOUT (the peer stopped reading: it is dropped), TG_ECLOSED,
 * TG_ECANCELED or -errno. */
int http_conn_write(http_conn *c, const void *data, size_t len);

/* For a stream's select: a case that completes when the peer sends bytes
 * or closes. Pass its result to http_conn_peer_event, which drops what
 * was sent and returns 0 while the connection is usable, or the error
 * (TG_EOF when the peer closed). */
tg_case http_conn_peer_case(http_conn *c);
int http_conn_peer_event(http_conn *c, int result);

/* The token that fires when the server stops. */
tg_cancel *http_conn_cancel(http_conn *c);

/* The server's configuration (with defaults filled in). */
const http_config *http_conn_config(const http_conn *c);

/* Starts listening on cfg->host:cfg->port and accepting. From a task.
 * Returns 0, TG_EINVAL (bad address or limits), TG_ENOMEM, the
 * listener's -errno (-EADDRINUSE), or TG_ECANCELED when the calling task
 * was aborted meanwhile. */
int http_server_start(http_server **out, const http_config *cfg, http_handler handler, void *ctx);

/* The port the server listens on. */
int http_server_port(const http_server *s);

/* Stops the server as described above and frees it. From a task. */
void http_server_stop(http_server *s);

/* Response status codes the server counts one by one; others are "other". */
#define HTTP_COUNTED_STATUS(X) \
  X(200) X(204) X(400) X(401) X(403) X(404) X(405) X(408) X(409) X(413) X(414) X(421) X(431) X(500) X(501) X(503) X(504)

typedef struct http_server_stats {
  uint64_t connections_open;                /* now */
  uint64_t connections_accepted;            /* ever, the rejected ones included */
  uint64_t connections_rejected;            /* over max_connections */
  uint64_t connections_rejected_per_client; /* over max_per_client */
  uint64_t clients;                         /* client addresses holding connections now */
  uint64_t header_timeouts;                 /* 408s: a request's head came too slowly */
  uint64_t idle_closed;                     /* connections closed before a byte of a request: idle or silent too long */
  uint64_t tls_failures;                    /* with TLS: handshakes that failed or did not finish in time */
  /* The handler's refusals, counted by the api (api_server_stats); 0 here. */
  uint64_t refused_host;   /* 421: a Host we do not answer to */
  uint64_t refused_origin; /* 403: another origin */
  uint64_t refused_token;  /* 401 or 403: no token, or not the right one */
  uint64_t requests;       /* complete requests handled */
  uint64_t write_timeouts; /* peers dropped because they stopped reading */
  uint64_t bytes_written;
  int nstatus;
  struct {
    int code; /* 0: any other code */
    uint64_t count;
  } status[24];
} http_server_stats;

void http_server_stats_get(const http_server *s, http_server_stats *out);

#endif
