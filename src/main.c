/* main.c - the telegate command: `telegate demo`, `serve` and `devices`. */
#include "cli.h"
#include "api.h"
#include "cli_serve.h"
#include "demo.h"
#include "serve.h"
#include "simulator.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
  fprintf(out, "usage: telegate <command> [flags]\n\n"
               "commands:\n"
               "  demo     run the reference telemetry scenario and report what each primitive did\n"
               "  serve    the gateway: devices over TCP, aggregation, SQLite, health checks\n"
               "  devices  simulated devices over TCP, for trying serve and for load\n\n"
               "`telegate <command> --help` lists its flags.\n");
}

static int cmd_demo(int argc, char **argv) {
  demo_config cfg;
  char err[256];
  switch (cli_parse_demo(argc, argv, &cfg, err, sizeof err)) {
  case CLI_HELP:
    cli_demo_usage(stdout);
    return 0;
  case CLI_ERROR:
    fprintf(stderr, "telegate demo: %s\n", err);
    return 2;
  default:
    break;
  }
  cfg.handle_signals = 1;
  demo_summary s;
  int r = demo_run(&cfg, &s);
  if (r != 0) {
    fprintf(stderr, "telegate demo: %s\n", s.error);
    return 1;
  }
  return s.lossless && s.tasks.aborted == 0 ? 0 : 1;
}

/* serve's on_start hook: the HTTP side on the running pipeline. */
static int attach_http(serve *s, void *arg, char *err, size_t errlen) {
  const serve_config *c = arg;
  api_config a;
  api_config_defaults(&a);
  a.http.host = c->http_host;
  a.http.port = c->http_port;
  a.http.max_connections = c->http_max_connections;
  a.http.max_header_bytes = (size_t)c->http_max_header_bytes;
  a.http.write_timeout_ms = c->http_write_timeout_ms;
  int port = 0, r = api_serve_attach(s, &a, &port);
  if (r == 0)
    log_event(serve_log(s), "🌐", "http", 0, "http_listening", "Dashboard, API and /metrics on http://%s:%d/",
              c->http_host, port);
  else
    snprintf(err, errlen, "cannot listen for HTTP on %s:%d: %s", c->http_host, c->http_port, tg_strerror(r));
  return r;
}

static int cmd_serve(int argc, char **argv) {
  serve_config cfg;
  char err[256];
  switch (cli_parse_serve(argc, argv, &cfg, err, sizeof err)) {
  case CLI_HELP:
    cli_serve_usage(stdout);
    return 0;
  case CLI_ERROR:
    fprintf(stderr, "telegate serve: %s\n", err);
    return 2;
  default:
    break;
  }
  cfg.handle_signals = 1;
  cfg.on_start = attach_http;
  cfg.on_start_arg = &cfg;
  int r = serve_run(&cfg, NULL, err, sizeof err);
  if (r < 0) fprintf(stderr, "telegate serve: %s\n", err);
  return r == 0 ? 0 : 1;
}

static int cmd_devices(int argc, char **argv) {
  sim_config cfg;
  char err[256];
  switch (cli_parse_devices(argc, argv, &cfg, err, sizeof err)) {
  case CLI_HELP:
    cli_devices_usage(stdout);
    return 0;
  case CLI_ERROR:
    fprintf(stderr, "telegate devices: %s\n", err);
    return 2;
  default:
    break;
  }
  int r = sim_run(&cfg, NULL);
  return r == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "demo") == 0) return cmd_demo(argc - 2, argv + 2);
  if (strcmp(argv[1], "serve") == 0) return cmd_serve(argc - 2, argv + 2);
  if (strcmp(argv[1], "devices") == 0) return cmd_devices(argc - 2, argv + 2);
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "telegate: unknown command '%s'\n", argv[1]);
  return 2;
}
