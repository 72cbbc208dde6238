/* cli_serve.c - flag parsing for `telegate serve` and `telegate devices`;
 * see cli_serve.h. */
#include "cli_serve.h"

#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum kind { K_INT, K_STR, K_U64, K_SECONDS, K_RATE, K_ADDR, K_LOG, K_PROTO, K_HEALTH, K_FLAG } kind;

typedef struct flag {
  const char *name;
  kind kind;
  size_t offset, offset2; /* K_ADDR: host, then port */
  long min, max;          /* K_INT */
  const char *help;
} flag;

#define S(name, kind, field, min, max, help) {name, kind, offsetof(serve_config, field), 0, min, max, help}
#define D(name, kind, field, min, max, help) {name, kind, offsetof(sim_config, field), 0, min, max, help}

static const flag serve_flags[] = {
    {"listen-devices", K_ADDR, offsetof(serve_config, listen_host), offsetof(serve_config, listen_port), 0, 0,
     "HOST:PORT devices connect to (127.0.0.1:7878; port 0: any)"},
    {"listen-http", K_ADDR, offsetof(serve_config, http_host), offsetof(serve_config, http_port), 0, 0,
     "HOST:PORT of the dashboard, the API and /metrics (127.0.0.1:8080; port 0: any)"},
    S("http-max-connections", K_INT, http_max_connections, 1, 1000000, "HTTP connections at once; more get 503 (256)"),
    S("http-max-header-bytes", K_INT, http_max_header_bytes, 256, 1048576, "HTTP request line and headers; more get 431 (8192)"),
    S("http-write-timeout-ms", K_INT, http_write_timeout_ms, 1, 3600000, "an HTTP client that stops reading is dropped after this (5000)"),
    S("storage", K_STR, storage, 0, 0, "a storage backend: sqlite | none (sqlite)"),
    S("db-pool", K_INT, db_pool, 1, 16, "DB connections and pool permits; devices are routed to connections (1)"),
    S("db", K_STR, db_path, 0, 0, "SQLite file, kept across runs (telegate.db)"),
    S("workers", K_INT, workers, 1, 64, "worker threads; connections are spread over them (1)"),
    S("max-connections", K_INT, max_connections, 1, 1000000, "device connections at once; more are refused (10000)"),
    S("max-line-bytes", K_INT, max_line_bytes, 16, 1048576, "longer lines are rejected as oversized (4096)"),
    S("max-devices", K_INT, max_devices, 1, 10000000, "distinct device ids; new ones past it are rejected (100000)"),
    S("error-limit", K_INT, error_limit, 0, 1000000000, "close a connection after this many bad lines in a row; 0: never (100)"),
    S("error-lines-per-s", K_INT, error_lines_per_s, 0, 1000000000, "error replies per connection per second (10)"),
    S("recv-buffer", K_INT, recv_buffer, 64, 64 * 1048576, "receive buffer per connection, bytes (32768)"),
    S("bandwidth-permits", K_INT, bandwidth_permits, 1, 1000000, "connections read at once (64)"),
    S("write-timeout-ms", K_INT, write_timeout_ms, 1, 3600000, "a device that does not read is closed after (5000)"),
    S("drain-ms", K_INT, drain_ms, 0, 3600000, "at shutdown, read connections at most this long (2000)"),
    S("telemetry-capacity", K_INT, telemetry_capacity, 1, 10000000, "connections -> aggregator mpsc, readings (4096)"),
    S("storage-capacity", K_INT, storage_capacity, 1, 100000, "aggregator -> storage mpsc, batches (8)"),
    S("broadcast-capacity", K_INT, broadcast_capacity, 1, 100000, "snapshot broadcast ring (16)"),
    S("batch-size", K_INT, batch_size, 1, 10000000, "readings per batch at most (1000)"),
    S("batch-age-ms", K_INT, batch_age_ms, 1, 3600000, "a batch is cut this long after the last cut (1000)"),
    S("snapshot-every", K_INT, snapshot_every, 1, 1000000000, "a snapshot after this many readings ... (100000)"),
    S("snapshot-interval-ms", K_INT, snapshot_interval_ms, 1, 3600000, "... or this long after the last one (100)"),
    S("health-interval-ms", K_INT, health_interval_ms, 0, 3600000, "health round period; 0: no rounds (3000)"),
    S("health-timeout-ms", K_INT, health_timeout_ms, 1, 3600000, "health reply timeout (500)"),
    S("log-format", K_LOG, log_format, 0, 0, "text | json (text)"),
    S("quiet", K_FLAG, quiet, 0, 0, "no event log, only the summary"),
    S("summary-json", K_STR, summary_json, 0, 0, "write the final figures as JSON to this file"),
};

static const flag device_flags[] = {
    {"connect", K_ADDR, offsetof(sim_config, host), offsetof(sim_config, port), 0, 0,
     "HOST:PORT of the gateway (127.0.0.1:7878)"},
    D("count", K_INT, count, 1, 1000000, "simulated devices, one connection each (10)"),
    D("rate", K_RATE, rate_hz, 0, 0, "readings per second per device (1)"),
    D("duration", K_SECONDS, duration_s, 0, 0, "seconds to send (10)"),
    D("seed", K_U64, seed, 0, 0, "seed of the simulated values (42)"),
    D("format", K_PROTO, format, 0, 0, "json | line (json)"),
    D("id-prefix", K_STR, id_prefix, 0, 0, "device ids are this prefix and 1, 2, ... (dev-)"),
    D("report-json", K_STR, report_json, 0, 0, "write the per-device report as JSON to this file"),
    D("workers", K_INT, workers, 1, 64, "worker threads (1)"),
    D("health", K_HEALTH, health, 0, 0, "answer | ignore health requests (answer)"),
    D("quiet", K_FLAG, quiet, 0, 0, "no summary line"),
};

#define NFLAGS(t) (sizeof t / sizeof t[0])

static void usage(FILE *out, const char *what, const flag *flags, size_t n) {
  fprintf(out, "%s\n\nflags:\n", what);
  for (size_t i = 0; i < n; i++) {
    char left[48];
    snprintf(left, sizeof left, "--%s%s", flags[i].name, flags[i].kind == K_FLAG ? "" : " V");
    fprintf(out, "  %-26s %s\n", left, flags[i].help);
  }
  fprintf(out, "  %-26s %s\n", "--help", "this text");
}

void cli_serve_usage(FILE *out) {
  usage(out,
        "usage: telegate serve [flags]\n\n"
        "Accepts devices over TCP (one reading per line, JSON or InfluxDB line protocol), aggregates,\n"
        "stores in SQLite and health-checks them; SIGINT or SIGTERM shuts down without losing a reading.",
        serve_flags, NFLAGS(serve_flags));
}

void cli_devices_usage(FILE *out) {
  usage(out,
        "usage: telegate devices [flags]\n\n"
        "Simulated devices over real TCP connections: readings at a rate, health checks answered,\n"
        "a report of the readings each device sent.",
        device_flags, NFLAGS(device_flags));
}

static int bad(char *err, size_t errlen, const flag *f, const char *value, const char *want) {
  snprintf(err, errlen, "--%s: '%s' is not %s", f->name, value, want);
  return CLI_ERROR;
}

/* HOST:PORT into a static copy of the host (one per table) and the port. */
static int set_addr(void *base, const flag *f, const char *v, char *hostbuf, size_t hostlen, char *err, size_t errlen) {
  const char *colon = strrchr(v, ':');
  if (!colon || colon == v || colon[1] == '\0') return bad(err, errlen, f, v, "HOST:PORT");
  const char *h = v;
  size_t hl = (size_t)(colon - v);
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (*end || errno || port < 0 || port > 65535 || hl == 0 || hl >= hostlen) return bad(err, errlen, f, v, "HOST:PORT");
  memcpy(hostbuf, h, hl);
  hostbuf[hl] = '\0';
  *(const char **)((char *)base + f->offset) = hostbuf;
  *(int *)((char *)base + f->offset2) = (int)port;
  return CLI_OK;
}

static int set(void *base, const flag *f, const char *v, char *hostbuf, size_t hostlen, char *err, size_t errlen) {
  void *field = (char *)base + f->offset;
  char *end;
  errno = 0;
  switch (f->kind) {
  case K_INT: {
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end || errno || n < f->min || n > f->max) {
      char want[64];
      snprintf(want, sizeof want, "an integer in %ld..%ld", f->min, f->max);
      return bad(err, errlen, f, v, want);
    }
    *(int *)field = (int)n;
    return CLI_OK;
  }
  case K_U64: {
    unsigned long long n = strtoull(v, &end, 10);
    if (*v == '\0' || *v == '-' || *end || errno) return bad(err, errlen, f, v, "an unsigned integer");
    *(uint64_t *)field = n;
    return CLI_OK;
  }
  case K_SECONDS: {
    double s = strtod(v, &end);
    if (*v == '\0' || *end || errno || !isfinite(s) || s <= 0 || s > 31536000)
      return bad(err, errlen, f, v, "a number of seconds in (0, 31536000]");
    *(double *)field = s;
    return CLI_OK;
  }
  case K_RATE: {
    double r = strtod(v, &end);
    if (*v == '\0' || *end || errno || !isfinite(r) || r <= 0 || r > 1e9)
      return bad(err, errlen, f, v, "a rate in (0, 1e9] per second");
    *(double *)field = r;
    return CLI_OK;
  }
  case K_STR:
    *(const char **)field = v;
    return CLI_OK;
  case K_ADDR: return set_addr(base, f, v, hostbuf, hostlen, err, errlen);
  case K_LOG:
    if (strcmp(v, "text") == 0) *(log_format *)field = LOG_TEXT;
    else if (strcmp(v, "json") == 0) *(log_format *)field = LOG_JSON;
    else return bad(err, errlen, f, v, "text or json");
    return CLI_OK;
  case K_PROTO:
    if (strcmp(v, "json") == 0) *(protocol_format *)field = PROTOCOL_JSON;
    else if (strcmp(v, "line") == 0) *(protocol_format *)field = PROTOCOL_LINE;
    else return bad(err, errlen, f, v, "json or line");
    return CLI_OK;
  case K_HEALTH:
    if (strcmp(v, "answer") == 0) *(sim_health *)field = SIM_HEALTH_ANSWER;
    else if (strcmp(v, "ignore") == 0) *(sim_health *)field = SIM_HEALTH_IGNORE;
    else return bad(err, errlen, f, v, "answer or ignore");
    return CLI_OK;
  case K_FLAG:
    *(int *)field = 1;
    return CLI_OK;
  }
  return CLI_ERROR;
}

static int parse(int argc, char **argv, void *base, const flag *flags, size_t nflags, char *hostbuf, size_t hostlen,
                 char *err, size_t errlen) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return CLI_HELP;
    if (strncmp(a, "--", 2) != 0) {
      snprintf(err, errlen, "unexpected argument '%s'", a);
      return CLI_ERROR;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const flag *f = NULL;
    for (size_t k = 0; k < nflags && !f; k++)
      if (strlen(flags[k].name) == len && strncmp(flags[k].name, name, len) == 0) f = &flags[k];
    if (!f) {
      snprintf(err, errlen, "unknown flag '--%.*s'", (int)len, name);
      return CLI_ERROR;
    }
    const char *value = NULL;
    if (f->kind == K_FLAG) {
      if (eq) {
        snprintf(err, errlen, "--%s takes no value", f->name);
        return CLI_ERROR;
      }
    } else if (eq) {
      value = eq + 1;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      snprintf(err, errlen, "--%s needs a value", f->name);
      return CLI_ERROR;
    }
    int r = set(base, f, value, hostbuf, hostlen, err, errlen);
    if (r != CLI_OK) return r;
  }
  return CLI_OK;
}

int cli_parse_serve(int argc, char **argv, serve_config *cfg, char *err, size_t errlen) {
  static char host[64];
  serve_config_defaults(cfg);
  int r = parse(argc, argv, cfg, serve_flags, NFLAGS(serve_flags), host, sizeof host, err, errlen);
  if (r == CLI_OK && cfg->recv_buffer < 2 * (cfg->max_line_bytes + 1)) {
    snprintf(err, errlen, "--recv-buffer: %d bytes do not hold two lines of --max-line-bytes %d", cfg->recv_buffer,
             cfg->max_line_bytes);
    return CLI_ERROR;
  }
  return r;
}

int cli_parse_devices(int argc, char **argv, sim_config *cfg, char *err, size_t errlen) {
  static char host[64];
  sim_config_defaults(cfg);
  return parse(argc, argv, cfg, device_flags, NFLAGS(device_flags), host, sizeof host, err, errlen);
}
