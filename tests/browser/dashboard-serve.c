/* dashboard-serve.c - telegate serve with its HTTP side attached, as
 * `telegate serve --listen-http` will run it once cli_serve wires
 * api_serve_attach into serve's on_start hook; for the browser test on
 * the real gateway, fed by the real simulator (`telegate devices`).
 *
 *   dashboard-serve [--duration S] [--telemetry-capacity N] [--stale-after-ms MS] [--token-file PATH]
 *
 * With --token-file, reads need one of its tokens (api_tokens.h).
 * Storage is off (--storage none: everything but the database). Prints
 * "listening http://127.0.0.1:HTTP_PORT devices 127.0.0.1:DEVICE_PORT". */
#include "api.h"
#include "api_tokens.h"
#include "serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct options {
  int duration_s, telemetry_capacity, stale_after_ms;
  api_tokens *tokens; /* NULL: no --token-file */
} options;

static int attach_http(serve *s, void *arg, char *err, size_t errlen) {
  const options *o = arg;
  api_config cfg;
  api_config_defaults(&cfg);
  cfg.http.port = 0;
  if (o->tokens) {
    cfg.authorize = api_tokens_authorize;
    cfg.authorize_ctx = o->tokens;
  }
  int port = 0, r = api_serve_attach(s, &cfg, &port);
  if (r != 0) {
    snprintf(err, errlen, "cannot listen for HTTP: %s", tg_strerror(r));
    return r;
  }
  printf("listening http://127.0.0.1:%d devices 127.0.0.1:%d\n", port, serve_port(s));
  fflush(stdout);
  return 0;
}

static void *serve_main(void *arg) {
  const options *o = arg;
  serve_config cfg;
  serve_config_defaults(&cfg);
  cfg.listen_port = 0;
  cfg.storage = "none";
  cfg.quiet = 1;
  cfg.out = stderr;
  cfg.telemetry_capacity = o->telemetry_capacity;
  if (o->stale_after_ms) cfg.stale_after_ms = o->stale_after_ms;
  cfg.on_start = attach_http;
  cfg.on_start_arg = (void *)o;
  serve *s;
  char err[256];
  if (serve_start(&cfg, &s, err, sizeof err) != 0) {
    fprintf(stderr, "dashboard-serve: %s\n", err);
    return (void *)1;
  }
  tg_sleep(TG_SEC(o->duration_s));
  serve_stop(s);
  return (void *)(intptr_t)serve_wait(s, NULL);
}

int main(int argc, char **argv) {
  options o = {.duration_s = 60, .telemetry_capacity = 4096};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--duration"))
      o.duration_s = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--telemetry-capacity"))
      o.telemetry_capacity = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--stale-after-ms"))
      o.stale_after_ms = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--token-file")) {
      char err[256];
      if (api_tokens_load(&o.tokens, argv[i + 1], NULL, err, sizeof err) != 0) {
        fprintf(stderr, "dashboard-serve: %s\n", err);
        return 2;
      }
    } else {
      fprintf(stderr, "usage: dashboard-serve [--duration S] [--telemetry-capacity N] [--stale-after-ms MS] "
                      "[--token-file PATH]\n");
      return 2;
    }
  }
  void *r = NULL;
  tg_runtime_opts ro = {.workers = 1};
  int failed = tg_run(&ro, serve_main, &o, &r) != 0 || r;
  api_tokens_free(o.tokens);
  return failed;
}
