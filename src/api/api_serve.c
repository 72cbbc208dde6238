/* api_serve.c - the api wired to a running serve (serve.h). A file of its
 * own so that the HTTP side links, and is tested, without serve. */
#include "api_internal.h"

static int subscribe(void *ctx, tg_watch_rx **latest, tg_broadcast_rx **updates) {
  return serve_subscribe(ctx, latest, updates);
}

static void figures(void *ctx, serve_figures *out) { serve_figures_get(ctx, out); }

static int health_check(void *ctx, const char *device_id, int64_t timeout_ns, device_status *out) {
  return serve_health_check(ctx, device_id, timeout_ns, out);
}

static void clients_add(void *ctx, int delta) { serve_clients_add(ctx, delta); }

static int storage_failing(void *ctx, char *why, size_t whylen) { return serve_storage_failing(ctx, why, whylen); }

static int write(void *ctx, const write_request *rq, write_result *res) { return serve_write(ctx, rq, res); }
static int fields(void *ctx, const storage_field **out, uint32_t *n) { return serve_history_fields(ctx, out, n); }

static int history(void *ctx, const storage_history_query *q, storage_history_result *res, char *err, size_t errlen) {
  return serve_history(ctx, q, res, err, errlen);
}

void api_deps_serve(api_deps *d, serve *s) {
  *d = (api_deps){
      .ctx = s,
      .subscribe = subscribe,
      .figures = figures,
      .health_check = health_check,
      .clients_add = clients_add,
      .storage_failing = storage_failing,
      .write = write,
      .fields = fields,
      .history = history,
  };
}

/* Serves until serve's shutdown begins, then stops the api. */
static void *api_task(void *arg) {
  api_server *a = arg;
  tg_cancel_wait(a->cfg.http.shutdown);
  api_server_stop(a);
  return NULL;
}

int api_serve_attach(serve *s, const api_config *cfg, int *port) {
  api_config c = *cfg;
  c.http.shutdown = serve_shutdown_token(s);
  api_deps d;
  api_deps_serve(&d, s);
  api_server *a;
  int r = api_server_start(&a, &c, &d);
  if (r != 0) return r;
  if (port) *port = api_server_port(a);
  r = serve_spawn(s, api_task, a, "http");
  if (r != 0) api_server_stop(a);
  return r;
}
