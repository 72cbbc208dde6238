/* gateway.h - what every part of `telegate serve` shares: its settings
 * and the reasons it refuses input. The sources read the settings that
 * concern them, serve all of them; the reasons label error lines to
 * devices, the figures and /metrics.
 *
 * The settings are plain data, filled with serve_config_defaults and then
 * by the command line; nothing here checks them (serve_start does). */
#ifndef TELEGATE_GATEWAY_H
#define TELEGATE_GATEWAY_H

#include "log.h"
#include "protocol.h"

#include <stddef.h>
#include <stdio.h>

typedef struct serve serve;

typedef struct serve_config {
  /* devices */
  const char *listen_host;     /* "127.0.0.1" */
  int listen_port;             /* 7878; 0: any free port (serve_port tells) */
  int max_connections;         /* more are accepted, told so and closed (10000) */
  int max_per_client;          /* connections per client address; more are told so and closed (1000; 0: no limit) */
  int handshake_timeout_ms;    /* the TLS handshake and, with auth, the hello must be done within this (10000) */
  int max_line_bytes;          /* longer lines are rejected as oversized (4096) */
  int max_devices;             /* distinct device ids; more are rejected (100000) */
  int max_fields;              /* distinct names of measurements, fields and tags; more are refused (1024) */
  const char *schema_path;     /* declared measurements (schema.h); NULL: none, every measurement takes any field */
  const char *json_device_key; /* a JSON member naming the device, besides "device"; NULL: none */
  const char *json_time_key;   /* a JSON member with the time, besides ts, timestamp, date, time; NULL: none */
  int error_limit;             /* close after this many bad lines in a row; 0: never (100) */
  int error_lines_per_s;       /* error replies per connection per second; more are counted only (10) */
  int recv_buffer;             /* bytes per connection (32768; at least 2 lines) */
  int bandwidth_permits;       /* connections read at once (64) */
  int write_timeout_ms;        /* a write to a device that does not read gives up and closes (5000) */
  int ack_interval_ms;         /* acks to one connection go out at most this often (50) */
  int drain_ms;                /* at shutdown, connections are read at most this long (2000) */
  /* devices: who may send what (docs/security.md) */
  int auth;                     /* SERVE_AUTH_*: AUTO is TOKEN with credentials_path, else NONE */
  const char *credentials_path; /* the credentials file (credentials.h); NULL: none */
  int insecure_no_auth;         /* allow auth none on an address other than loopback */
  uint64_t seq_window;          /* a seq more than this above the device's known one is refused; 0: no window (2^40) */
  int max_ids_per_connection;   /* distinct device ids one connection may send for; 0: no limit (1000) */
  int max_ids_per_credential;   /* new device ids the holders of one credential may add; 0: no limit (0) */
  int lines_per_s;              /* lines read per connection per second, then it waits; 0: no limit (0) */
  int health_per_device_per_s;  /* health requests to one device per second; 0: no limit (2) */
  /* devices over TLS (tls.h); SIGHUP reloads the files */
  const char *tls_cert;       /* PEM certificate chain of the device port; NULL: plain TCP */
  const char *tls_key;        /* its private key */
  const char *tls_client_ca;  /* devices must present a certificate from these CAs; NULL: none asked */
  const char *tls_client_crl; /* with tls_client_ca: certificates these CRLs revoke are refused; NULL: no check */
  /* MQTT (docs/mqtt.md): readings from a broker's topics */
  const char *mqtt_url;           /* mqtt://HOST[:PORT] (1883); NULL: no MQTT source */
  const char *mqtt_topics;        /* comma-separated filters, each with one '+' level: the device id */
  const char *mqtt_client_id;     /* the broker keeps the session under it; NULL: "telegate-" + host name */
  const char *mqtt_username;      /* NULL: none */
  const char *mqtt_password_file; /* its first line is the password; NULL: $TELEGATE_MQTT_PASSWORD, or none */
  const char *mqtt_tls_ca;   /* mqtts://: the broker's certificate is checked against these CAs; NULL: the system's */
  const char *mqtt_tls_cert; /* mqtts://: a client certificate to present (PEM); NULL: none */
  const char *mqtt_tls_key;  /* its private key */
  int mqtt_version;          /* 0: 5, falling back to 3.1.1 when the broker refuses 5; MQTT_V5; MQTT_V311 (mqtt.h) */
  int mqtt_keepalive_s;      /* PINGREQ when nothing was sent for this long; 0: none (30) */
  int mqtt_inflight;         /* messages received and not yet acknowledged (PUBACK) at most (2000) */
  int mqtt_max_packet_bytes; /* a larger PUBLISH is refused as oversized, and acknowledged (65536) */
  /* NATS JetStream (docs/cluster.md): readings from a stream */
  const char *nats_urls;     /* nats://HOST:PORT[,...]; NULL: no NATS source */
  const char *node_name;     /* this node's id in a cluster: one process at a time; NULL: the host name */
  const char *nats_stream;   /* the stream, created at start when missing (telemetry) */
  const char *nats_subject;  /* devices publish to <subject>.<device> (telemetry) */
  const char *nats_consumer; /* the durable pull consumer (telegate) */
  int nats_inflight;         /* messages delivered and not yet acknowledged at most: max_ack_pending (2000) */
  int nats_partitions;       /* the stream holds <subject>.<partition>.<device>; 0: <subject>.<device>, unpartitioned */
  int nats_lease_ms;         /* a partition's lease expires this long after its holder last renewed it (6000) */
  int nats_replicas;         /* the stream's and the lease bucket's replicas when telegate creates them (1) */
  /* pipeline */
  int workers;              /* libtg workers; connections are spread over them (1) */
  int telemetry_capacity;   /* connections -> aggregator mpsc, readings (4096) */
  int storage_capacity;     /* aggregator -> storage mpsc, batches (8) */
  int broadcast_capacity;   /* snapshot broadcast ring (16) */
  int batch_size;           /* a batch is cut at this many readings ... (1000) */
  int batch_age_ms;         /* ... or when its first reading is this old (1000) */
  int snapshot_every;       /* a snapshot is published after this many readings ... (100000) */
  int snapshot_interval_ms; /* ... or this long after the last one, if anything changed (100) */
  /* storage */
  const char *storage; /* a storage backend's name (storage.h): "sqlite" (default), "none" */
  const char *db_path; /* "telegate.db" */
  int db_pool;         /* connections and pool permits (1); devices are routed to connections */
  int durability;      /* storage_durability: 0 NORMAL (a commit survives a crash), 1 FULL (also a power loss) */
  int storage_shutdown_timeout_ms; /* at shutdown, after the drain, storage has this long to commit (10000) */
  /* history (docs/http-api.md): how long readings are kept, when a device is stale */
  int64_t retention_ms;   /* readings older than this (by their ts) are deleted in the background; 0: kept (0) */
  int64_t stale_after_ms; /* a device not heard from for longer is shown stale (30000) */
  /* health */
  int health_interval_ms; /* a round of checks every ... (3000; 0: no rounds) */
  int health_timeout_ms;  /* ... each answered within (500) */
  /* output */
  log_format log_format;
  log_level log_level;      /* events above it are dropped (info) */
  int quiet;                /* no event log, only the final summary */
  FILE *out;                /* log and summary; NULL: stdout */
  const char *summary_json; /* write the final figures here; NULL: none */
  int handle_signals; /* serve_run: SIGINT/SIGTERM call serve_stop; SIGHUP reloads the credentials, calls on_reload */
  /* the HTTP side (api.h): clients, the dashboard, /metrics */
  const char *http_host;          /* "127.0.0.1" */
  const char *http_tls_cert;      /* HTTPS with this PEM certificate chain; NULL: plain HTTP */
  const char *http_tls_key;       /* its private key */
  int http_port;                  /* 8080; 0: any free port */
  int http_max_connections;       /* more get 503 (256) */
  int http_max_header_bytes;      /* request line and headers; more get 431 (8192) */
  int http_write_timeout_ms;      /* an HTTP client that stops reading is dropped (5000) */
  int http_max_per_client;        /* HTTP connections per client address; more get 503 (16; 0: no limit) */
  int http_max_write_bytes;       /* a body of the InfluxDB write API, sent or inflated; more get 413 (8 MiB) */
  int http_header_timeout_ms;     /* a request's head must arrive within (5000; 408) */
  int http_idle_timeout_ms;       /* an idle keep-alive connection is closed after (5000) */
  const char *http_token_read;    /* a file of read tokens' SHA-256s; NULL: reads are open */
  const char *http_token_admin;   /* a file of admin tokens' SHA-256s (health checks); NULL: none */
  const char *http_allowed_hosts; /* Host names besides IP literals and localhost, comma-separated */
  /* Called once the pipeline runs and the listener is bound, from the
   * task that called serve_start: where the HTTP side starts its tasks
   * (serve_spawn). A nonzero return, with a one-line reason in err, stops
   * serve. */
  int (*on_start)(serve *s, void *arg, char *err, size_t errlen);
  void *on_start_arg;
  /* Called on SIGHUP (with handle_signals), from the signal watcher's
   * thread, while serve runs: re-reads the configuration and applies
   * what can change live (serve_set_*), saying in the log what it did.
   * NULL: SIGHUP is logged and changes nothing. */
  void (*on_reload)(serve *s, void *arg);
  void *on_reload_arg;
} serve_config;

void serve_config_defaults(serve_config *c);

/* Whether host is a loopback address: only this machine can reach it. */
int serve_host_is_loopback(const char *host);

/* The limits on a device connection that a reload may change while serve
 * runs: the sources read them at each use, so a change applies to every
 * connection's next line. Set with serve_limits_set; any thread.
 * X(serve_config member, its type, its option) - the one list that the
 * struct, serve_limits_set and a reload's key check are made from. */
#define SERVE_LIVE_LIMITS(X)                               \
  X(error_limit, int, "error-limit")                       \
  X(error_lines_per_s, int, "error-lines-per-s")           \
  X(write_timeout_ms, int, "write-timeout-ms")             \
  X(ack_interval_ms, int, "ack-interval-ms")               \
  X(lines_per_s, int, "lines-per-s")                       \
  X(max_ids_per_connection, int, "max-ids-per-connection") \
  X(max_ids_per_credential, int, "max-ids-per-credential") \
  X(seq_window, uint64_t, "seq-window")

typedef struct serve_limits {
#define SERVE_LIMIT_MEMBER(member, type, option) _Atomic type member;
  SERVE_LIVE_LIMITS(SERVE_LIMIT_MEMBER)
#undef SERVE_LIMIT_MEMBER
} serve_limits;

void serve_limits_set(serve_limits *l, const serve_config *cfg);

/* One of them, read at its use. */
#define SERVE_LIMIT(l, name) atomic_load_explicit(&(l)->name, memory_order_relaxed)

/* serve_config.auth */
enum {
  SERVE_AUTH_AUTO = 0, /* token when a credentials file is given, else none */
  SERVE_AUTH_NONE,     /* any connection may send for any id */
  SERVE_AUTH_TOKEN,    /* a connection sends only for the ids its hello's token covers */
};

/* The auth c asks for, AUTO resolved. */
int serve_config_auth(const serve_config *c);

/* Bad input, per reason: the parser's reasons (protocol.h, indexed by
 * protocol_reason) and the gateway's own, after them. */
enum {
  SERVE_BAD_TOO_MANY_DEVICES = PROTOCOL_REASON_COUNT, /* a new id past --max-devices */
  SERVE_BAD_TRUNCATED,                                /* bytes without '\n' before the device hung up */
  SERVE_BAD_NOT_ALLOWED,         /* a reading for an id the connection's credential does not cover */
  SERVE_BAD_UNKNOWN_TOKEN,       /* a hello whose token matches no credential */
  SERVE_BAD_TOO_MANY_IDS,        /* a new id past --max-ids-per-connection on one connection */
  SERVE_BAD_SEQ_OUT_OF_WINDOW,   /* a seq more than --seq-window above the device's known one */
  SERVE_BAD_STORAGE_UNAVAILABLE, /* a reading without seq while the device's stored mark cannot be read */
  SERVE_BAD_SEQ_RESTARTED,       /* a seq at or below the device's top this run, with a later ts */
  SERVE_BAD_WRONG_DEVICE,        /* an MQTT payload naming another device than its topic */
  SERVE_BAD_LINE_BREAK,          /* with --nats, a string with a line break, which the stream's lines cannot carry */
  SERVE_BAD_REASONS
};

/* The stable name of a bad-input reason ("malformed", "too_many_devices");
 * NULL for 0 and past the end. */
const char *serve_bad_reason_name(int reason);

#endif
