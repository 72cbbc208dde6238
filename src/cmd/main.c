/* main.c - the telegate command: `telegate demo`, `serve`, `devices` and
 * `credentials`. */
#include "api.h"
#include "api_tokens.h"
#include "build_info.h"
#include "cli.h"
#include "cli_credentials.h"
#include "cli_demo.h"
#include "cli_devices.h"
#include "cli_serve.h"
#include "demo.h"
#include "serve.h"
#include "simulator.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* What a parse that did not end in a run means for the process: the exit
 * status; -1 when the command is to run. */
static int parse_outcome(const cli_command *cmd, int r, const void *cfg, const char *err) {
  if (r == 0) return -1;
  if (r == CLI_HELP) {
    cli_usage(cmd, stdout);
    return 0;
  }
  if (r == CLI_CHECK) {
    cli_write_config(cmd, cfg, stdout);
    return 0;
  }
  fprintf(stderr, "telegate %s: %s\n", cmd->name, r == -EINVAL ? err : tg_strerror(r));
  return r == -EINVAL ? 2 : 1;
}

static int cmd_demo(int argc, char **argv) {
  demo_config cfg;
  cli_strings strings = {0};
  char err[256];
  int status = parse_outcome(&cli_demo, cli_parse_demo(argc, argv, &cfg, &strings, err, sizeof err), &cfg, err);
  if (status < 0) {
    cfg.handle_signals = 1;
    demo_summary s;
    int r = demo_run(&cfg, &s);
    if (r != 0) fprintf(stderr, "telegate demo: %s\n", s.error);
    status = r == 0 && s.lossless && s.tasks.aborted == 0 ? 0 : 1;
  }
  cli_strings_free(&strings);
  return status;
}

/* What serve's on_start hook needs for the HTTP side. */
typedef struct http_side {
  const serve_config *cfg;
  api_tokens *tokens; /* NULL: no token configured */
} http_side;

/* serve's on_start hook: the HTTP side on the running pipeline. */
static int attach_http(serve *s, void *arg, char *err, size_t errlen) {
  const http_side *h = arg;
  const serve_config *c = h->cfg;
  api_config a;
  api_config_defaults(&a);
  a.http.host = c->http_host;
  a.http.port = c->http_port;
  a.http.max_connections = c->http_max_connections;
  a.http.max_per_client = c->http_max_per_client;
  a.write_max_bytes = (size_t)c->http_max_write_bytes;
  a.http.max_header_bytes = (size_t)c->http_max_header_bytes;
  a.http.write_timeout_ms = c->http_write_timeout_ms;
  a.http.header_timeout_ms = c->http_header_timeout_ms;
  a.http.idle_timeout_ms = c->http_idle_timeout_ms;
  a.allowed_hosts = c->http_allowed_hosts;
  a.http.tls = serve_http_tls(s);
  if (h->tokens) {
    a.authorize = api_tokens_authorize;
    a.authorize_ctx = h->tokens;
  }
  int port = 0, r = api_serve_attach(s, &a, &port);
  if (r != 0) {
    snprintf(err, errlen, "cannot listen for HTTP on %s:%d: %s", c->http_host, c->http_port, tg_strerror(r));
    return r;
  }
  log_event(serve_log(s), "🌐", "http", 0, "http_listening", "Dashboard, API and /metrics on %s://%s:%d/%s",
            a.http.tls ? "https" : "http", c->http_host, port, h->tokens ? " (bearer tokens required)" : "");
  if (!h->tokens && strcmp(c->http_host, "127.0.0.1") != 0 && strcmp(c->http_host, "localhost") != 0 &&
      strcmp(c->http_host, "::1") != 0)
    log_event(serve_log(s), "⚠️", "http", 0, "http_open",
              "HTTP listens beyond this host without tokens: anyone who reaches it may read the API and "
              "ask devices for health (--http-token-read, --http-token-admin)");
  return 0;
}

static int cmd_serve(int argc, char **argv) {
  serve_config cfg;
  cli_strings strings = {0};
  char err[256];
  int status = parse_outcome(&cli_serve, cli_parse_serve(argc, argv, &cfg, &strings, err, sizeof err), &cfg, err);
  cli_serve_reloader reloader = {argc, argv, cfg};
  http_side http = {.cfg = &cfg};
  if (status < 0 && (cfg.http_token_read || cfg.http_token_admin)) {
    int r = api_tokens_load(&http.tokens, cfg.http_token_read, cfg.http_token_admin, err, sizeof err);
    if (r != 0) {
      fprintf(stderr, "telegate serve: %s\n", r == TG_ENOMEM ? tg_strerror(r) : err);
      status = 1;
    }
  }
  if (status < 0) {
    cfg.handle_signals = 1;
    cfg.on_start = attach_http;
    cfg.on_start_arg = &http;
    cfg.on_reload = cli_serve_reload;
    cfg.on_reload_arg = &reloader;
    int r = serve_run(&cfg, NULL, err, sizeof err);
    if (r < 0) fprintf(stderr, "telegate serve: %s\n", err);
    status = r == 0 ? 0 : 1;
  }
  api_tokens_free(http.tokens);
  cli_strings_free(&strings);
  return status;
}

static int cmd_devices(int argc, char **argv) {
  sim_config cfg;
  cli_strings strings = {0};
  char err[256];
  int status = parse_outcome(&cli_devices, cli_parse_devices(argc, argv, &cfg, &strings, err, sizeof err), &cfg, err);
  if (status < 0) status = sim_run(&cfg, NULL) == 0 ? 0 : 1;
  cli_strings_free(&strings);
  return status;
}

static const struct command {
  const char *name, *summary;
  int (*run)(int argc, char **argv);
} commands[] = {
    {"demo", "run the reference telemetry scenario and report what each primitive did", cmd_demo},
    {"serve", "the gateway: devices over TCP, aggregation, SQLite, health checks", cmd_serve},
    {"devices", "simulated devices over TCP, for trying serve and for load", cmd_devices},
    {"credentials", "make tokens for devices and the lines of serve's --credentials file", cli_credentials_main},
};

static void usage(FILE *out) {
  fprintf(out, "usage: telegate <command> [flags]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "\n`telegate <command> --help` lists its flags; `telegate --version` says which build this is.\n");
}

/* One line, for bug reports and packaging scripts: the version first. */
static void version(void) {
  build_info b = build_info_get();
  printf("telegate %s (libtg %s, git %s, %s)\n", b.version, b.libtg, b.revision, b.build_type);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    version();
    return 0;
  }
  fprintf(stderr, "telegate: unknown command '%s'; telegate --help lists them\n", argv[1]);
  return 2;
}
