/* cli_devices.c - the flags of `telegate devices`; see cli_devices.h. */
#include "cli_devices.h"

#include <errno.h>
#include <stdio.h>

static const cli_word format_words[] = {{"json", PROTOCOL_JSON}, {"line", PROTOCOL_LINE}, {NULL, 0}};
static const cli_word health_words[] = {{"answer", SIM_HEALTH_ANSWER}, {"ignore", SIM_HEALTH_IGNORE}, {NULL, 0}};
static const cli_word acks_words[] = {{"on", SIM_ACKS_ON}, {"off", SIM_ACKS_OFF}, {NULL, 0}};

static const cli_option options[] = {
    CLI_OPT_HOSTPORT(sim_config, "connect", host, port, "the gateway (127.0.0.1:7878)"),
    CLI_OPT_INT(sim_config, "count", count, 1, 1000000, "simulated devices, one connection each (10)"),
    CLI_OPT_DOUBLE_ABOVE(sim_config, "rate", rate_hz, 0, 1e9, "HZ", "readings per second per device (1)"),
    CLI_OPT_DOUBLE_ABOVE(sim_config, "duration", duration_s, 0, 31536000, "SECONDS", "seconds to send (10)"),
    CLI_OPT_U64(sim_config, "seed", seed, "seed of the simulated values (42)"),
    CLI_OPT_ENUM(sim_config, "format", format, format_words, "the wire format (json)"),
    CLI_OPT_STRING(sim_config, "id-prefix", id_prefix, "PREFIX", "device ids are this prefix and 1, 2, ... (dev-)"),
    CLI_OPT_STRING(sim_config, "report-json", report_json, "PATH", "write the per-device report as JSON to this file"),
    CLI_OPT_INT(sim_config, "workers", workers, 1, 64, "worker threads (1)"),
    CLI_OPT_ENUM(sim_config, "health", health, health_words, "what to do with health requests (answer)"),
    CLI_OPT_ENUM(sim_config, "acks", acks, acks_words,
                 "ask for acks, hold readings until acked, reconnect and resend the rest (on); off: write only"),
    CLI_OPT_INT(sim_config, "max-unacked", max_unacked, 1, 100000000,
                "readings a device holds unacked; a full window blocks it until acks come (10000)"),
    CLI_OPT_DOUBLE(sim_config, "ack-wait-s", ack_wait_s, 0, 86400, "SECONDS",
                   "at the end, how long to wait for the last acks, reconnecting if needed (10)"),
    CLI_OPT_FLAG(sim_config, "tls", tls, "connect over TLS, verifying the gateway's certificate and name"),
    CLI_OPT_PATH(sim_config, "tls-ca", tls_ca, "CAs (PEM) to verify the gateway against (the system's)"),
    CLI_OPT_FLAG(sim_config, "tls-insecure", tls_insecure, "do not verify the gateway's certificate (testing only)"),
    CLI_OPT_PATH(sim_config, "tls-cert", tls_cert, "a client certificate (PEM) to present, for --tls-client-ca"),
    CLI_OPT_PATH(sim_config, "tls-key", tls_key, "the key (PEM) of --tls-cert"),
    CLI_OPT_FLAG(sim_config, "quiet", quiet, "no summary line"),
};

/* TLS's settings mean nothing without --tls: most likely it was forgotten. */
static int finish(void *cfg, char *err, size_t errlen) {
  const sim_config *c = cfg;
  if (!c->tls && (c->tls_ca || c->tls_insecure || c->tls_cert || c->tls_key)) {
    snprintf(err, errlen, "--tls-ca, --tls-insecure, --tls-cert and --tls-key want --tls");
    return -EINVAL;
  }
  if (!c->tls_cert != !c->tls_key) {
    snprintf(err, errlen, "--tls-cert and --tls-key go together");
    return -EINVAL;
  }
  return 0;
}

const cli_command cli_devices = {
    .name = "devices",
    .about = "Simulated devices over real TCP connections: readings at a rate, held until the gateway acks\n"
             "them and resent after a reconnect, health checks answered, a report of what each device sent\n"
             "and had acked. The exit status is 0 when every reading was acked.",
    .options = options,
    .noptions = CLI_COUNT(options),
    .finish = finish,
};

int cli_parse_devices(int argc, char *const argv[], sim_config *cfg, cli_strings *strings, char *err, size_t errlen) {
  sim_config_defaults(cfg);
  return cli_parse(&cli_devices, argc, argv, cfg, strings, err, errlen);
}
