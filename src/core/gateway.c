/* gateway.c - serve's default settings and the names of the reasons it
 * refuses input; see gateway.h. */
#include "gateway.h"

#include "schema.h"

#include <arpa/inet.h>
#include <string.h>

int serve_host_is_loopback(const char *host) {
  unsigned char a[16];
  if (strcmp(host, "localhost") == 0) return 1;
  if (inet_pton(AF_INET, host, a) == 1) return a[0] == 127;
  if (inet_pton(AF_INET6, host, a) != 1) return 0;
  static const unsigned char v6_loopback[16] = {[15] = 1}, v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
  return memcmp(a, v6_loopback, 16) == 0 || (memcmp(a, v4_mapped, 12) == 0 && a[12] == 127);
}

void serve_config_defaults(serve_config *c) {
  memset(c, 0, sizeof *c);
  c->listen_host = "127.0.0.1";
  c->listen_port = 7878;
  c->http_host = "127.0.0.1";
  c->http_port = 8080;
  c->http_max_connections = 256;
  c->http_max_header_bytes = 8192;
  c->http_write_timeout_ms = 5000;
  c->http_max_per_client = 16;
  c->http_max_write_bytes = 8 << 20;
  c->http_header_timeout_ms = 5000;
  c->http_idle_timeout_ms = 5000;
  c->max_connections = 10000;
  c->max_per_client = 1000;
  c->handshake_timeout_ms = 10000;
  c->max_line_bytes = PROTOCOL_LINE_MAX_DEFAULT;
  c->max_devices = 100000;
  c->max_fields = SCHEMA_NAMES_DEFAULT;
  c->error_limit = 100;
  c->error_lines_per_s = 10;
  c->recv_buffer = 32 * 1024;
  c->bandwidth_permits = 64;
  c->write_timeout_ms = 5000;
  c->ack_interval_ms = 50;
  c->drain_ms = 2000;
  c->auth = SERVE_AUTH_AUTO;
  c->seq_window = (uint64_t)1 << 40;
  c->max_ids_per_connection = 1000;
  c->health_per_device_per_s = 2;
  c->mqtt_topics = "telemetry/+/readings";
  c->mqtt_keepalive_s = 30;
  c->mqtt_inflight = 2000;
  c->mqtt_max_packet_bytes = 65536;
  c->nats_stream = "telemetry";
  c->nats_subject = "telemetry";
  c->nats_consumer = "telegate";
  c->nats_inflight = 2000;
  c->nats_lease_ms = 6000;
  c->nats_replicas = 1;
  c->workers = 1;
  c->telemetry_capacity = 4096;
  c->storage_capacity = 8;
  c->broadcast_capacity = 16;
  c->batch_size = 1000;
  c->batch_age_ms = 1000;
  c->stale_after_ms = 30000;
  c->snapshot_every = 100000;
  c->snapshot_interval_ms = 100;
  c->storage = "sqlite";
  c->db_path = "telegate.db";
  c->db_pool = 1;
  c->storage_shutdown_timeout_ms = 10000;
  c->health_interval_ms = 3000;
  c->health_timeout_ms = 500;
  c->log_format = LOG_TEXT;
  c->log_level = LOG_INFO;
}

int serve_config_auth(const serve_config *c) {
  if (c->auth != SERVE_AUTH_AUTO) return c->auth;
  return c->credentials_path ? SERVE_AUTH_TOKEN : SERVE_AUTH_NONE;
}

/* The gateway's own reasons, after the parser's (protocol.h). */
static const char *const gateway_reason_names[SERVE_BAD_REASONS - PROTOCOL_REASON_COUNT] = {
    [SERVE_BAD_TOO_MANY_DEVICES - PROTOCOL_REASON_COUNT] = "too_many_devices",
    [SERVE_BAD_TRUNCATED - PROTOCOL_REASON_COUNT] = "truncated",
    [SERVE_BAD_NOT_ALLOWED - PROTOCOL_REASON_COUNT] = "not_allowed",
    [SERVE_BAD_UNKNOWN_TOKEN - PROTOCOL_REASON_COUNT] = "unknown_token",
    [SERVE_BAD_TOO_MANY_IDS - PROTOCOL_REASON_COUNT] = "too_many_ids",
    [SERVE_BAD_SEQ_OUT_OF_WINDOW - PROTOCOL_REASON_COUNT] = "seq_out_of_window",
    [SERVE_BAD_STORAGE_UNAVAILABLE - PROTOCOL_REASON_COUNT] = "storage_unavailable",
    [SERVE_BAD_SEQ_RESTARTED - PROTOCOL_REASON_COUNT] = "seq_restarted",
    [SERVE_BAD_WRONG_DEVICE - PROTOCOL_REASON_COUNT] = "wrong_device",
    [SERVE_BAD_LINE_BREAK - PROTOCOL_REASON_COUNT] = "line_break",
};

const char *serve_bad_reason_name(int reason) {
  if (reason > 0 && reason < PROTOCOL_REASON_COUNT) return protocol_reason_name(reason);
  if (reason >= PROTOCOL_REASON_COUNT && reason < SERVE_BAD_REASONS)
    return gateway_reason_names[reason - PROTOCOL_REASON_COUNT];
  return NULL;
}

void serve_limits_set(serve_limits *l, const serve_config *cfg) {
#define STORE(member, type, option) atomic_store(&l->member, cfg->member);
  SERVE_LIVE_LIMITS(STORE)
#undef STORE
}
