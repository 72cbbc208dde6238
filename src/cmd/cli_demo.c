/* cli_demo.c - the flags of `telegate demo`; see cli_demo.h. */
#include "cli_demo.h"

#include <errno.h>

static const cli_word clock_words[] = {{"real", TG_CLOCK_REAL}, {"virtual", TG_CLOCK_VIRTUAL}, {NULL, 0}};
static const cli_word preset_words[] = {
    {"tour", PRESET_TOUR}, {"blog", PRESET_BLOG}, {"pressure", PRESET_PRESSURE}, {NULL, 0}};
static const cli_word log_words[] = {{"text", LOG_TEXT}, {"json", LOG_JSON}, {NULL, 0}};

static void apply_preset(void *cfg) {
  demo_config *c = cfg;
  demo_config_preset(c, c->preset);
}

#define FLAG(name, m, help)          CLI_OPT_FLAG(demo_config, name, m, help)
#define INT(name, m, min, max, help) CLI_OPT_INT(demo_config, name, m, min, max, help)
#define SECONDS(name, m, help)       CLI_OPT_DOUBLE_ABOVE(demo_config, name, m, 0, 86400, "SECONDS", help)
#define PATH(name, m, help)          CLI_OPT_PATH(demo_config, name, m, help)
#define ENUM(name, m, words, help)   CLI_OPT_ENUM(demo_config, name, m, words, help)

static const cli_option options[] = {
    SECONDS("duration", duration_s, "run time in seconds (10)"),
    ENUM("clock", clock, clock_words, "the clock (real); virtual replays exactly"),
    CLI_OPT_U64(demo_config, "seed", seed, "seed of the simulated devices and faults (42)"),
    {"preset", CLI_ENUM, CLI_ENUM_MEMBER(demo_config, preset), .words = preset_words,
     .help = "the numbers to start from (tour: every primitive at work; blog: the article's); flags override",
     .preset = apply_preset},
    PATH("db", db_path, "SQLite file, tables reset each run (telegate-demo.db)"),
    PATH("summary-json", summary_json, "write the summary as JSON to this file"),
    ENUM("log-format", log_format, log_words, "the live log's format (text)"),
    FLAG("quiet", quiet, "no live log, only the summary"),
    INT("devices", devices, 1, DEMO_MAX_DEVICES, "device tasks (7)"),
    INT("clients", clients, 0, DEMO_MAX_CLIENTS, "client tasks (4)"),
    INT("telemetry-capacity", telemetry_capacity, 1, 1000000, "devices -> aggregator mpsc (tour 5, blog 50)"),
    INT("storage-capacity", storage_capacity, 1, 1000000, "aggregator -> storage mpsc (tour 2, blog 10)"),
    INT("broadcast-capacity", broadcast_capacity, 1, 1000000, "snapshot broadcast ring (tour 10, blog 100)"),
    INT("device-slots", device_slots, 1, 1000, "bandwidth Semaphore permits (tour 2, blog 5)"),
    INT("db-pool", db_pool, 1, DEMO_MAX_POOL, "DB connections and pool permits (tour 1, blog 2)"),
    INT("device-interval-ms", device_interval_ms, 1, 3600000, "a device's reading period, +-10% (tour 300, blog 1000)"),
    INT("batch-interval-ms", batch_interval_ms, 1, 3600000, "aggregator batch period (tour 100, blog 2000)"),
    INT("health-interval-ms", health_interval_ms, 1, 3600000, "health round period (tour 1000, blog 3000)"),
    INT("health-timeout-ms", health_timeout_ms, 1, 3600000, "health reply timeout (500)"),
    INT("transmit-ms", transmit_ms, 0, 3600000, "time a send holds its bandwidth slot (tour 100, blog 20)"),
    INT("aggregator-delay-ms", aggregator_delay_ms, 0, 3600000, "processing time per reading (tour 60, blog 0)"),
    INT("storage-delay-ms", storage_delay_ms, 0, 3600000, "time of one batch transaction (tour 120, blog 20)"),
    INT("panic-device", panic_device, 1, DEMO_MAX_DEVICES, "this device task panics ... (tour 2)"),
    SECONDS("panic-at", panic_at_s, "... at this run time in seconds (tour 1.5, else 3)"),
    INT("slow-client", slow_client, 1, DEMO_MAX_CLIENTS, "this client processes slowly and lags ... (tour 3)"),
    INT("client-delay-ms", client_delay_ms, 0, 3600000, "... taking this long per update (tour 250)"),
    INT("slow-health-device", slow_health_device, 1, DEMO_MAX_DEVICES, "answers health checks too late (tour 5)"),
    INT("drop-health-device", drop_health_device, 1, DEMO_MAX_DEVICES, "drops the reply sender unanswered (tour 6)"),
    CLI_OPT_DOUBLE(demo_config, "storage-fail-rate", storage_fail_rate, 0, 0.9, "SHARE",
                   "share of transactions that fail, 0..0.9 (tour 0.1, blog 0)"),
};

/* A fault flag's id (0: not given) against the final count. */
static int check_id(const char *flag, int id, int count, const char *what, const char *count_flag, char *err,
                    size_t errlen) {
  if (id <= count) return 0;
  snprintf(err, errlen, "--%s wants a %s from 1 to %d (--%s), got %d", flag, what, count, count_flag, id);
  return -EINVAL;
}

static int finish(void *cfg, char *err, size_t errlen) {
  demo_config *c = cfg;
  int r;
  if ((r = check_id("panic-device", c->panic_device, c->devices, "device", "devices", err, errlen)) ||
      (r = check_id("slow-client", c->slow_client, c->clients, "client", "clients", err, errlen)) ||
      (r = check_id("slow-health-device", c->slow_health_device, c->devices, "device", "devices", err, errlen)) ||
      (r = check_id("drop-health-device", c->drop_health_device, c->devices, "device", "devices", err, errlen)))
    return r;
  if (c->panic_device && c->panic_at_s == 0) c->panic_at_s = 3;
  if (c->slow_client && c->client_delay_ms == 0) c->client_delay_ms = 250;
  return 0;
}

const cli_command cli_demo = {
    .name = "demo",
    .about = "Runs the reference telemetry scenario: devices -> aggregator -> clients and storage,\n"
             "printing what each primitive does, then a summary.",
    .options = options,
    .noptions = CLI_COUNT(options),
    .finish = finish,
};

int cli_parse_demo(int argc, char *const argv[], demo_config *cfg, cli_strings *strings, char *err, size_t errlen) {
  demo_config_defaults(cfg);
  return cli_parse(&cli_demo, argc, argv, cfg, strings, err, errlen);
}
