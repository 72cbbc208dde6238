/* cli.c - flag parsing for `telegate demo`; see cli.h. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum kind { K_INT, K_SECONDS, K_RATE, K_U64, K_STR, K_CLOCK, K_PRESET, K_FORMAT, K_FLAG } kind;

typedef struct flag {
  const char *name;
  kind kind;
  size_t offset;
  long min, max; /* K_INT */
  const char *help;
} flag;

#define F(name, kind, field, min, max, help) {name, kind, offsetof(demo_config, field), min, max, help}

static const flag flags[] = {
    F("duration", K_SECONDS, duration_s, 0, 0, "run time in seconds (10)"),
    F("clock", K_CLOCK, clock, 0, 0, "real | virtual (real); virtual replays exactly"),
    F("seed", K_U64, seed, 0, 0, "seed of the simulated devices and faults (42)"),
    F("preset", K_PRESET, preset, 0, 0, "blog | pressure (blog)"),
    F("db", K_STR, db_path, 0, 0, "SQLite file, tables reset each run (telegate-demo.db)"),
    F("summary-json", K_STR, summary_json, 0, 0, "write the summary as JSON to this file"),
    F("log-format", K_FORMAT, log_format, 0, 0, "text | json (text)"),
    F("quiet", K_FLAG, quiet, 0, 0, "no live log, only the summary"),
    F("devices", K_INT, devices, 1, DEMO_MAX_DEVICES, "device tasks (7)"),
    F("clients", K_INT, clients, 0, DEMO_MAX_CLIENTS, "client tasks (4)"),
    F("telemetry-capacity", K_INT, telemetry_capacity, 1, 1000000, "devices -> aggregator mpsc (50)"),
    F("storage-capacity", K_INT, storage_capacity, 1, 1000000, "aggregator -> storage mpsc (10)"),
    F("broadcast-capacity", K_INT, broadcast_capacity, 1, 1000000, "snapshot broadcast ring (100)"),
    F("device-slots", K_INT, device_slots, 1, 1000, "bandwidth Semaphore permits (5)"),
    F("db-pool", K_INT, db_pool, 1, DEMO_MAX_POOL, "DB connections and pool permits (2)"),
    F("device-interval-ms", K_INT, device_interval_ms, 1, 3600000, "a device's reading period, +-10% (1000)"),
    F("batch-interval-ms", K_INT, batch_interval_ms, 1, 3600000, "aggregator batch period (2000)"),
    F("health-interval-ms", K_INT, health_interval_ms, 1, 3600000, "health round period (3000)"),
    F("health-timeout-ms", K_INT, health_timeout_ms, 1, 3600000, "health reply timeout (500)"),
    F("transmit-ms", K_INT, transmit_ms, 0, 3600000, "time a send holds its bandwidth slot (20)"),
    F("aggregator-delay-ms", K_INT, aggregator_delay_ms, 0, 3600000, "processing time per reading (0)"),
    F("storage-delay-ms", K_INT, storage_delay_ms, 0, 3600000, "time of one batch transaction (20)"),
    F("panic-device", K_INT, panic_device, 1, DEMO_MAX_DEVICES, "this device task panics ..."),
    F("panic-at", K_SECONDS, panic_at_s, 0, 0, "... at this run time in seconds (3)"),
    F("slow-client", K_INT, slow_client, 1, DEMO_MAX_CLIENTS, "this client processes slowly and lags ..."),
    F("client-delay-ms", K_INT, client_delay_ms, 0, 3600000, "... taking this long per update (250)"),
    F("slow-health-device", K_INT, slow_health_device, 1, DEMO_MAX_DEVICES, "answers health checks too late"),
    F("drop-health-device", K_INT, drop_health_device, 1, DEMO_MAX_DEVICES, "drops the reply sender unanswered"),
    F("storage-fail-rate", K_RATE, storage_fail_rate, 0, 0, "share of transactions that fail, 0..0.9 (0)"),
};

#define NFLAGS (sizeof flags / sizeof flags[0])

void cli_demo_usage(FILE *out) {
  fprintf(out, "usage: telegate demo [flags]\n\n"
               "Runs the reference telemetry scenario: devices -> aggregator -> clients and storage,\n"
               "printing what each primitive does, then a summary.\n\nflags:\n");
  for (size_t i = 0; i < NFLAGS; i++) {
    char left[48];
    snprintf(left, sizeof left, "--%s%s", flags[i].name, flags[i].kind == K_FLAG ? "" : " V");
    fprintf(out, "  %-24s %s\n", left, flags[i].help);
  }
  fprintf(out, "  %-24s %s\n", "--help", "this text");
}

static const flag *find(const char *name, size_t len) {
  for (size_t i = 0; i < NFLAGS; i++)
    if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0) return &flags[i];
  return NULL;
}

static int bad(char *err, size_t errlen, const flag *f, const char *value, const char *want) {
  snprintf(err, errlen, "--%s: '%s' is not %s", f->name, value, want);
  return CLI_ERROR;
}

static int set(demo_config *cfg, const flag *f, const char *v, char *err, size_t errlen) {
  void *field = (char *)cfg + f->offset;
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
    if (*v == '\0' || *end || errno || !isfinite(s) || s <= 0 || s > 86400)
      return bad(err, errlen, f, v, "a number of seconds in (0, 86400]");
    *(double *)field = s;
    return CLI_OK;
  }
  case K_RATE: {
    double r = strtod(v, &end);
    if (*v == '\0' || *end || errno || !(r >= 0 && r <= 0.9)) return bad(err, errlen, f, v, "a share in 0..0.9");
    *(double *)field = r;
    return CLI_OK;
  }
  case K_STR:
    if (*v == '\0') return bad(err, errlen, f, v, "a path");
    *(const char **)field = v;
    return CLI_OK;
  case K_CLOCK:
    if (strcmp(v, "real") == 0) *(tg_clock_mode *)field = TG_CLOCK_REAL;
    else if (strcmp(v, "virtual") == 0) *(tg_clock_mode *)field = TG_CLOCK_VIRTUAL;
    else return bad(err, errlen, f, v, "real or virtual");
    return CLI_OK;
  case K_PRESET:
    if (strcmp(v, "blog") == 0) *(demo_preset *)field = PRESET_BLOG;
    else if (strcmp(v, "pressure") == 0) *(demo_preset *)field = PRESET_PRESSURE;
    else return bad(err, errlen, f, v, "blog or pressure");
    return CLI_OK;
  case K_FORMAT:
    if (strcmp(v, "text") == 0) *(log_format *)field = LOG_TEXT;
    else if (strcmp(v, "json") == 0) *(log_format *)field = LOG_JSON;
    else return bad(err, errlen, f, v, "text or json");
    return CLI_OK;
  case K_FLAG:
    *(int *)field = 1;
    return CLI_OK;
  }
  return CLI_ERROR;
}

/* One pass over argv: with `preset_only` only --preset is applied (so the
 * preset's numbers come first), otherwise everything but --preset. */
static int pass(int argc, char **argv, demo_config *cfg, int preset_only, char *err, size_t errlen) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return CLI_HELP;
    if (strncmp(a, "--", 2) != 0) {
      snprintf(err, errlen, "unexpected argument '%s'", a);
      return CLI_ERROR;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const flag *f = find(name, len);
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
    if ((f->kind == K_PRESET) != preset_only) continue;
    int r = set(cfg, f, value, err, errlen);
    if (r != CLI_OK) return r;
    if (f->kind == K_PRESET) demo_config_preset(cfg, cfg->preset);
  }
  return CLI_OK;
}

static int check_id(const char *flag_name, int id, int max, const char *what, char *err, size_t errlen) {
  if (id == 0 || id <= max) return CLI_OK;
  snprintf(err, errlen, "--%s: %d is not a %s (there are %d)", flag_name, id, what, max);
  return CLI_ERROR;
}

int cli_parse_demo(int argc, char **argv, demo_config *cfg, char *err, size_t errlen) {
  demo_config_defaults(cfg);
  int r = pass(argc, argv, cfg, 1, err, errlen);
  if (r == CLI_OK) r = pass(argc, argv, cfg, 0, err, errlen);
  if (r != CLI_OK) return r;
  if ((r = check_id("panic-device", cfg->panic_device, cfg->devices, "device", err, errlen)) ||
      (r = check_id("slow-client", cfg->slow_client, cfg->clients, "client", err, errlen)) ||
      (r = check_id("slow-health-device", cfg->slow_health_device, cfg->devices, "device", err, errlen)) ||
      (r = check_id("drop-health-device", cfg->drop_health_device, cfg->devices, "device", err, errlen)))
    return r;
  if (cfg->panic_device && cfg->panic_at_s == 0) cfg->panic_at_s = 3;
  if (cfg->slow_client && cfg->client_delay_ms == 0) cfg->client_delay_ms = 250;
  return CLI_OK;
}
