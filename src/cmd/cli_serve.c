/* cli_serve.c - the flags of `telegate serve`; see cli_serve.h. */
#include "cli_serve.h"

#include "mqtt.h"
#include "serve.h"
#include "storage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_word log_words[] = {{"text", LOG_TEXT}, {"json", LOG_JSON}, {NULL, 0}};
static const cli_word level_words[] = {
    {"error", LOG_ERROR}, {"warn", LOG_WARN}, {"info", LOG_INFO}, {"debug", LOG_DEBUG}, {NULL, 0}};
static const cli_word durability_words[] = {
    {"normal", STORAGE_DURABILITY_NORMAL}, {"full", STORAGE_DURABILITY_FULL}, {NULL, 0}};
static const cli_word mqtt_version_words[] = {{"auto", 0}, {"5", 5}, {"3.1.1", 4}, {NULL, 0}};
static const cli_word auth_words[] = {
    {"auto", SERVE_AUTH_AUTO}, {"none", SERVE_AUTH_NONE}, {"token", SERVE_AUTH_TOKEN}, {NULL, 0}};

#define INT(name, m, min, max, help) CLI_OPT_INT(serve_config, name, m, min, max, help)

static const cli_option options[] = {
    CLI_OPT_HOSTPORT(serve_config, "listen-devices", listen_host, listen_port,
                     "where devices connect (127.0.0.1:7878; port 0: any)"),
    CLI_OPT_HOSTPORT(serve_config, "listen-http", http_host, http_port,
                     "the dashboard, the API and /metrics (127.0.0.1:8080; port 0: any)"),
    INT("http-max-connections", http_max_connections, 1, 1000000, "HTTP connections at once; more get 503 (256)"),
    INT("http-max-header-bytes", http_max_header_bytes, 256, 1048576,
        "HTTP request line and headers; more get 431 (8192)"),
    INT("http-write-timeout-ms", http_write_timeout_ms, 1, 3600000,
        "an HTTP client that stops reading is dropped after this (5000)"),
    INT("http-max-per-client", http_max_per_client, 0, 1000000,
        "HTTP connections per client address; more get 503; 0: no limit (16)"),
    INT("http-max-write-bytes", http_max_write_bytes, 1024, 1 << 30,
        "a body of the InfluxDB write API (/write, /api/v2/write), as sent and inflated; more get 413 (8388608)"),
    INT("http-header-timeout-ms", http_header_timeout_ms, 1, 3600000,
        "an HTTP request's head must arrive within this, else 408 (5000)"),
    INT("http-idle-timeout-ms", http_idle_timeout_ms, 1, 3600000,
        "an idle keep-alive HTTP connection is closed after this (5000)"),
    CLI_OPT_PATH(serve_config, "http-token-read", http_token_read,
                 "a file of SHA-256s (hex, one a line) of the bearer tokens that may read the API and /metrics"),
    CLI_OPT_PATH(serve_config, "http-token-admin", http_token_admin,
                 "a file of SHA-256s of the tokens that may also ask devices for health"),
    CLI_OPT_STRING(serve_config, "http-allowed-host", http_allowed_hosts, "NAMES",
                   "Host names HTTP clients may use besides IP literals and localhost, comma-separated"),
    CLI_OPT_STRING(serve_config, "storage", storage, "NAME",
                   "a registered storage backend: sqlite | postgres | none (sqlite)"),
    INT("db-pool", db_pool, 1, 16, "DB connections and pool permits; devices are routed to connections (1)"),
    CLI_OPT_STRING(serve_config, "db", db_path, "PATH|URI",
                   "SQLite file, kept across runs (telegate.db); for postgres a libpq connection string "
                   "(postgresql://user@host:port/dbname)"),
    CLI_OPT_ENUM(serve_config, "durability", durability, durability_words,
                 "a commit survives a crash of serve (normal) or also a power loss (full) (normal)"),
    CLI_OPT_DURATION(serve_config, "retention", retention_ms, 1000, 1e15,
                     "delete readings older than this (by their ts) in the background, e.g. 30d; 0: keep all (0)"),
    CLI_OPT_DURATION(serve_config, "stale-after", stale_after_ms, 1, 1e12,
                     "a device not heard from for longer is shown stale (30s)"),
    INT("storage-shutdown-timeout-ms", storage_shutdown_timeout_ms, 0, 3600000,
        "at shutdown, after the drain, storage may take this long to commit; then what is left is counted as "
        "unstored and serve exits 1 (10000)"),
    INT("workers", workers, 1, 64, "worker threads; connections are spread over them (1)"),
    INT("max-connections", max_connections, 1, 1000000, "device connections at once; more are refused (10000)"),
    INT("max-connections-per-client", max_per_client, 0, 1000000,
        "device connections per client address; more are refused; 0: no limit (1000)"),
    INT("handshake-timeout-ms", handshake_timeout_ms, 1, 3600000,
        "a device connection must finish its TLS handshake and, with --auth token, its hello within this (10000)"),
    INT("max-line-bytes", max_line_bytes, 16, 1048576, "longer lines are rejected as oversized (4096)"),
    INT("max-devices", max_devices, 1, 10000000, "distinct device ids; new ones past it are rejected (100000)"),
    INT("max-fields", max_fields, 16, 65535,
        "distinct names of measurements, fields and tags; readings bringing more are refused (1024)"),
    CLI_OPT_STRING(serve_config, "json-device-key", json_device_key, "NAME",
                   "a JSON reading's member that names its device, besides \"device\" (none)"),
    CLI_OPT_STRING(serve_config, "json-time-key", json_time_key, "NAME",
                   "a JSON reading's member with its time (s, ms, us or ns since 1970, or ISO 8601), besides "
                   "ts, timestamp, date and time (none)"),
    CLI_OPT_PATH(serve_config, "schema", schema_path,
                 "declared measurements: MEASUREMENT FIELD TYPE [MIN MAX] [unit=U] [optional] per line; only "
                 "these fields are taken for them (docs/protocol.md)"),
    INT("error-limit", error_limit, 0, 1000000000,
        "close a connection after this many bad lines in a row; 0: never (100)"),
    INT("error-lines-per-s", error_lines_per_s, 0, 1000000000, "error replies per connection per second (10)"),
    INT("recv-buffer", recv_buffer, 64, 64 * 1048576, "receive buffer per connection, bytes (32768)"),
    INT("bandwidth-permits", bandwidth_permits, 1, 1000000, "connections read at once (64)"),
    INT("write-timeout-ms", write_timeout_ms, 1, 3600000, "a device that does not read is closed after (5000)"),
    INT("ack-interval-ms", ack_interval_ms, 0, 60000,
        "acks to one connection go out at most this often, each device's newest standing for the rest (50)"),
    INT("drain-ms", drain_ms, 0, 3600000, "at shutdown, read connections at most this long (2000)"),
    CLI_OPT_ENUM(serve_config, "auth", auth, auth_words,
                 "devices: token (a hello's token must cover each id), none, or auto: token with --credentials (auto)"),
    CLI_OPT_PATH(serve_config, "credentials", credentials_path,
                 "device credentials: NAME SHA256-OF-TOKEN PATTERN... per line; SIGHUP reloads it"),
    CLI_OPT_FLAG(serve_config, "insecure-no-auth", insecure_no_auth,
                 "allow --auth none on a device address other than loopback (anyone there may send for any id)"),
    CLI_OPT_U64(serve_config, "seq-window", seq_window,
                "a seq more than this above the device's known one is refused; 0: none (1099511627776 = 2^40)"),
    INT("max-ids-per-connection", max_ids_per_connection, 0, 10000000,
        "distinct device ids one connection may send for; 0: no limit (1000)"),
    INT("max-ids-per-credential", max_ids_per_credential, 0, 10000000,
        "new device ids the holders of one credential may add in a run; 0: no limit (0)"),
    INT("lines-per-s", lines_per_s, 0, 1000000000,
        "lines read per connection per second, then it waits; 0: no limit (0)"),
    INT("health-per-device-per-s", health_per_device_per_s, 0, 1000000,
        "health requests to one device per second; 0: no limit (2)"),
    CLI_OPT_PATH(serve_config, "tls-cert", tls_cert,
                 "devices connect over TLS with this certificate chain (PEM); SIGHUP reloads it"),
    CLI_OPT_PATH(serve_config, "tls-key", tls_key, "the private key (PEM) of --tls-cert"),
    CLI_OPT_PATH(serve_config, "tls-client-ca", tls_client_ca,
                 "devices must present a certificate signed by these CAs (PEM); SIGHUP reloads it"),
    CLI_OPT_PATH(serve_config, "tls-client-crl", tls_client_crl,
                 "device certificates revoked by these CRLs (PEM, one per CA) are refused; SIGHUP reloads it"),
    CLI_OPT_PATH(serve_config, "http-tls-cert", http_tls_cert,
                 "HTTPS for the dashboard, API and /metrics with this certificate chain (PEM); SIGHUP reloads it"),
    CLI_OPT_PATH(serve_config, "http-tls-key", http_tls_key, "the private key (PEM) of --http-tls-cert"),
    CLI_OPT_STRING(serve_config, "mqtt", mqtt_url, "mqtt://HOST[:PORT]",
                   "also take readings from this MQTT broker (port 1883 by default); docs/mqtt.md"),
    CLI_OPT_STRING(serve_config, "mqtt-topic", mqtt_topics, "FILTERS",
                   "topic filters to subscribe to at QoS 1, comma-separated, each with one '+' level: the device id "
                   "(telemetry/+/readings)"),
    CLI_OPT_STRING(serve_config, "mqtt-client-id", mqtt_client_id, "ID",
                   "the MQTT client id the broker keeps the session under: keep it stable (telegate-HOSTNAME)"),
    CLI_OPT_STRING(serve_config, "mqtt-username", mqtt_username, "NAME", "the MQTT user name (none)"),
    CLI_OPT_PATH(serve_config, "mqtt-password-file", mqtt_password_file,
                 "a file whose first line is the MQTT password (else $TELEGATE_MQTT_PASSWORD, else none)"),
    CLI_OPT_PATH(serve_config, "mqtt-tls-ca", mqtt_tls_ca,
                 "mqtts://: the broker's certificate is checked against these CAs (PEM) (the system's)"),
    CLI_OPT_PATH(serve_config, "mqtt-tls-cert", mqtt_tls_cert, "mqtts://: a client certificate to present (PEM)"),
    CLI_OPT_PATH(serve_config, "mqtt-tls-key", mqtt_tls_key, "the private key (PEM) of --mqtt-tls-cert"),
    CLI_OPT_ENUM(serve_config, "mqtt-version", mqtt_version, mqtt_version_words,
                 "MQTT 5 tells the broker the window (--mqtt-inflight); auto: 5, and 3.1.1 with a broker that "
                 "refuses 5 (auto)"),
    INT("mqtt-keepalive-s", mqtt_keepalive_s, 0, 65535,
        "MQTT keepalive: PINGREQ after this long without sending, the session dropped without PINGRESP; 0: none (30)"),
    INT("mqtt-inflight", mqtt_inflight, 1, 65535,
        "MQTT messages received and not yet acknowledged at most; the socket is not read past it (2000)"),
    INT("mqtt-max-packet-bytes", mqtt_max_packet_bytes, 64, 64 * 1048576,
        "a larger MQTT message is refused as oversized, and acknowledged (65536)"),
    CLI_OPT_STRING(serve_config, "nats", nats_urls, "nats://HOST:PORT[,...]",
                   "also take readings from this NATS JetStream stream, through a durable consumer; docs/cluster.md"),
    CLI_OPT_STRING(serve_config, "node", node_name, "NAME",
                   "this node's id in a cluster, one process at a time: letters, digits, '-', '_' (the host name)"),
    CLI_OPT_STRING(serve_config, "nats-stream", nats_stream, "NAME",
                   "the JetStream stream, created with file storage when missing (telemetry)"),
    CLI_OPT_STRING(serve_config, "nats-subject", nats_subject, "PREFIX",
                   "devices publish to PREFIX.DEVICE; the stream holds PREFIX.> (telemetry)"),
    CLI_OPT_STRING(
        serve_config, "nats-consumer", nats_consumer, "NAME",
        "the durable pull consumer (with partitions, NAME-PARTITION); the leases are in bucket NAME-leases (telegate)"),
    INT("nats-inflight", nats_inflight, 1, 65535,
        "NATS messages delivered and not yet acknowledged at most: the consumer's max_ack_pending (2000)"),
    INT("nats-partitions", nats_partitions, 0, 1024,
        "the stream holds PREFIX.PARTITION.DEVICE (the server's partition mapping); each partition is consumed by "
        "one node at a time; 0: PREFIX.DEVICE, one node (0)"),
    INT("nats-lease-ms", nats_lease_ms, 300, 3600000,
        "a node that stops renewing its partitions' leases loses them after this, and another takes them (6000)"),
    INT("nats-replicas", nats_replicas, 1, 5,
        "the stream's and the lease bucket's replicas over a NATS cluster, when telegate creates them (1)"),
    INT("telemetry-capacity", telemetry_capacity, 1, 10000000, "connections -> aggregator mpsc, readings (4096)"),
    INT("storage-capacity", storage_capacity, 1, 100000, "aggregator -> storage mpsc, batches (8)"),
    INT("broadcast-capacity", broadcast_capacity, 1, 100000, "snapshot broadcast ring (16)"),
    INT("batch-size", batch_size, 1, 10000000, "readings per batch at most (1000)"),
    INT("batch-age-ms", batch_age_ms, 1, 3600000, "a batch is cut this long after the last cut (1000)"),
    INT("snapshot-every", snapshot_every, 1, 1000000000, "a snapshot after this many readings ... (100000)"),
    INT("snapshot-interval-ms", snapshot_interval_ms, 1, 3600000, "... or this long after the last one (100)"),
    INT("health-interval-ms", health_interval_ms, 0, 3600000, "health round period; 0: no rounds (3000)"),
    INT("health-timeout-ms", health_timeout_ms, 1, 3600000, "health reply timeout (500)"),
    CLI_OPT_ENUM(serve_config, "log-format", log_format, log_words, "the event log's format (text)"),
    CLI_OPT_ENUM(serve_config, "log-level", log_level, level_words, "events less severe are not logged (info)"),
    CLI_OPT_FLAG(serve_config, "quiet", quiet, "no event log, only the summary"),
    CLI_OPT_STRING(serve_config, "summary-json", summary_json, "PATH", "write the final figures as JSON to this file"),
};

/* The backend must be registered; a connection's buffer must hold a
 * whole line and the start of the next. */
static int finish(void *cfg, char *err, size_t errlen) {
  const serve_config *c = cfg;
  if (!storage_backend_exists(c->storage)) {
    char names[128];
    snprintf(err, errlen, "--storage wants a registered backend (%s), got '%s'",
             storage_backend_names(names, sizeof names), c->storage);
    return -EINVAL;
  }
  if (c->auth == SERVE_AUTH_TOKEN && !c->credentials_path) {
    snprintf(err, errlen, "--auth token wants --credentials FILE");
    return -EINVAL;
  }
  int mqtts = c->mqtt_url && strncmp(c->mqtt_url, "mqtts://", 8) == 0;
  if (c->mqtt_url && !mqtts && strncmp(c->mqtt_url, "mqtt://", 7) != 0) {
    snprintf(err, errlen, "--mqtt wants mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got '%s'", c->mqtt_url);
    return -EINVAL;
  }
  if ((c->mqtt_tls_ca || c->mqtt_tls_cert || c->mqtt_tls_key) && !mqtts) {
    snprintf(err, errlen, "--mqtt-tls-ca, --mqtt-tls-cert and --mqtt-tls-key want --mqtt mqtts://HOST[:PORT]");
    return -EINVAL;
  }
  if (!c->mqtt_tls_cert != !c->mqtt_tls_key) {
    snprintf(err, errlen, "--mqtt-tls-cert and --mqtt-tls-key go together");
    return -EINVAL;
  }
  if (c->mqtt_password_file && !c->mqtt_username) {
    snprintf(err, errlen, "--mqtt-password-file wants --mqtt-username");
    return -EINVAL;
  }
  if (c->nats_urls && strncmp(c->nats_urls, "nats://", 7) != 0 && strncmp(c->nats_urls, "tls://", 6) != 0) {
    snprintf(err, errlen, "--nats wants nats://HOST:PORT[,nats://HOST:PORT...], got '%s'", c->nats_urls);
    return -EINVAL;
  }
  if (c->node_name) {
    size_t n = strlen(c->node_name);
    if (n == 0 || n > 63 ||
        strspn(c->node_name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != n) {
      snprintf(err, errlen, "--node wants 1 to 63 letters, digits, '-' or '_' (a NATS subject token), got '%.80s'",
               c->node_name);
      return -EINVAL;
    }
  }
  char filter[1024];
  for (const char *f = c->mqtt_topics; f;) { /* each comma-separated filter has one '+' level */
    size_t n = strcspn(f, ",");
    snprintf(filter, sizeof filter, "%.*s", (int)n, f);
    if (n >= sizeof filter || mqtt_filter_check(filter) != 0) {
      snprintf(err, errlen, "--mqtt-topic '%.*s': a filter wants exactly one '+' level, the device id, and no '#'",
               (int)(n > 200 ? 200 : n), f);
      return -EINVAL;
    }
    f = f[n] ? f + n + 1 : NULL;
  }
  if (c->recv_buffer >= 2 * (c->max_line_bytes + 1)) return 0;
  snprintf(err, errlen, "--recv-buffer wants at least %d bytes, two lines of --max-line-bytes %d, got %d",
           2 * (c->max_line_bytes + 1), c->max_line_bytes, c->recv_buffer);
  return -EINVAL;
}

const cli_command cli_serve = {
    .name = "serve",
    .about = "Accepts devices over TCP (one reading per line, JSON or InfluxDB line protocol), aggregates,\n"
             "stores in SQLite and health-checks them; SIGINT or SIGTERM shuts down without losing a reading.",
    .options = options,
    .noptions = CLI_COUNT(options),
    .finish = finish,
};

int cli_parse_serve(int argc, char *const argv[], serve_config *cfg, cli_strings *strings, char *err, size_t errlen) {
  serve_config_defaults(cfg);
  return cli_parse(&cli_serve, argc, argv, cfg, strings, err, errlen);
}

/* ------------------------------------------------------------ reload */

/* The options as config-file lines, one per option in table order. */
static char *config_text(const serve_config *c) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return NULL;
  cli_write_config(&cli_serve, c, f);
  fclose(f);
  return text;
}

/* The key of a config line ("batch-size = 7", "# db ="), into key. */
static void key_of(const char *line, size_t len, char *key, size_t cap) {
  if (len >= 2 && line[0] == '#') line += 2, len -= 2;
  size_t n = 0;
  while (n < len && n + 1 < cap && line[n] != ' ') n++;
  memcpy(key, line, n);
  key[n] = '\0';
}

/* Applies one changed option if it can change live; returns whether it
 * did. A new log level is only noted here (see cli_serve_reload). */
static int apply_live(serve *s, const char *key, cli_serve_reloader *r, const serve_config *fresh) {
  if (strcmp(key, "log-level") == 0) {
    r->running.log_level = fresh->log_level;
    return 1;
  }
#define OPTION(member, type, option) option,
  static const char *const limits[] = {SERVE_LIVE_LIMITS(OPTION) "health-per-device-per-s"};
#undef OPTION
  for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
    if (strcmp(key, limits[i]) != 0) continue;
    serve_config *run = &r->running;
#define COPY(member, type, option) run->member = fresh->member;
    SERVE_LIVE_LIMITS(COPY)
#undef COPY
    run->health_per_device_per_s = fresh->health_per_device_per_s;
    serve_set_limits(s, run);
    return 1;
  }
  if (strcmp(key, "health-interval-ms") == 0 || strcmp(key, "health-timeout-ms") == 0) {
    if (serve_set_health_cadence(s, fresh->health_interval_ms, fresh->health_timeout_ms) != 0) return 0;
    r->running.health_interval_ms = fresh->health_interval_ms;
    r->running.health_timeout_ms = fresh->health_timeout_ms;
    return 1;
  }
  return 0;
}

void cli_serve_reload(serve *s, void *arg) {
  cli_serve_reloader *r = arg;
  demo_log *log = serve_log(s);
  serve_config fresh;
  cli_strings strings = {0};
  char err[256];
  int rc = cli_parse_serve(r->argc, r->argv, &fresh, &strings, err, sizeof err);
  char *was = rc == 0 ? config_text(&r->running) : NULL, *now = rc == 0 ? config_text(&fresh) : NULL;
  if (rc != 0 || !was || !now) {
    log_event(log, "⚠️", "serve", 0, "reload_refused", "SIGHUP: reload refused, nothing changed: %s",
              rc == -EINVAL ? err : tg_strerror(rc ? rc : -ENOMEM));
  } else {
    int changes = 0, applied = 0;
    /* The reload's own lines go out at the more verbose of the two levels:
     * a level raised is set first, a level lowered last. */
    if (fresh.log_level > r->running.log_level) serve_set_log_level(s, fresh.log_level);
    /* Both texts list the same options in the same order: line by line. */
    for (const char *a = was, *b = now; *a && *b;) {
      size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
      if (la != lb || memcmp(a, b, la) != 0) {
        char key[64];
        key_of(b, lb, key, sizeof key);
        changes++;
        if (apply_live(s, key, r, &fresh)) {
          applied++;
          log_event(log, "🔁", "serve", 0, "reloaded", "SIGHUP: %.*s (was: %.*s)", (int)lb, b, (int)la, a);
        } else {
          log_event(log, "⚠️", "serve", 0, "reload_needs_restart",
                    "SIGHUP: %.*s takes a restart, not applied (running: %.*s)", (int)lb, b, (int)la, a);
        }
      }
      a += la + (a[la] == '\n');
      b += lb + (b[lb] == '\n');
    }
    log_event(log, "🔁", "serve", 0, "reload_done", "SIGHUP: configuration reloaded: %d changed, %d applied live",
              changes, applied);
    serve_set_log_level(s, r->running.log_level);
  }
  free(was);
  free(now);
  cli_strings_free(&strings);
}
