/* serve.c - `telegate serve`: wiring, the run, the ordered shutdown, the
 * figures and the summary; see serve.h. */
#include "serve.h"

#include "figures.h"
#include "fleet.h"
#include "pipeline.h"
#include "registry.h"
#include "retention.h"
#include "signals.h"
#include "source.h"
#include "source_mqtt.h"
#include "source_nats.h"
#include "source_tcp.h"
#include "source_write.h"
#include "storage.h"
#include "wall_clock.h"
#include "writer.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Pipeline tasks run SQLite under nothing heavier than the blocking pool. */
#define PIPELINE_STACK ((size_t)128 * 1024)
/* How long a start that failed may take to stop what it started. */
#define GRACE_NS       TG_SEC(5)

/* The sources serve can run, each asked whether the settings want it. */
static const source_kind *const sources[] = {
    &source_tcp,   /* devices over TCP: --listen-devices */
    &source_write, /* the InfluxDB write API, over HTTP: --listen-http */
    &source_mqtt,  /* devices through an MQTT broker: --mqtt */
    &source_nats,  /* devices through a NATS JetStream stream: --nats */
};
enum { NSOURCES = sizeof sources / sizeof sources[0] };

struct serve {
  serve_config cfg;
  demo_log log;
  schema *schema; /* the readings' names and measurements, for the sources, the aggregator and storage */
  tg_cancel *cancel;
  atomic_int stopping;
  _Atomic int64_t stop_at_ns;
  int stop_signal;
  int64_t t0, started_unix_ms, started_unix_ns;
  serve_limits limits; /* the connections' limits: cfg's, then a reload's */
  registry reg;
  credentials_store creds; /* with --auth token; its path is NULL otherwise */
  tls_context *device_tls; /* with --tls-cert; NULL: devices connect in plain TCP */
  tls_context *http_tls;   /* with --http-tls-cert; NULL: plain HTTP */
  storage *db;
  pipeline *pipe;
  tg_joinset *tasks;            /* the sources' and the HTTP side's; the pipeline has its own */
  void *source_state[NSOURCES]; /* NULL: not wanted, or its start failed */
  nats_publish *stream;         /* with --nats: where the sources that publish send their readings */
  _Atomic int64_t drain_until;  /* when the token fired + drain_ms */
  figure health_unknown;
  figure credential_reloads, credential_reload_errors;
  _Atomic int64_t clients;
  uint64_t joined, panicked, aborted;
  int64_t last_join_ns;
  uint64_t db_rows;
  retention retention; /* with --retention */
  fleet *fleet;        /* the fleet view, with --nats; set before the HTTP side starts */
};

/* ------------------------------------------------------------ hooks */

static const char *device_name(void *ctx, uint32_t index) { return registry_name(ctx, index); }

/* A batch is committed: its devices are owed acks (registry.h). */
static void acks_owed(void *ctx, const batch *b) { registry_committed(ctx, b); }

static int health_pick(void *ctx, rng *g, uint32_t *out, int k) { return registry_pick_connected(ctx, g, out, k); }

static int health_ask_hook(void *ctx, uint32_t index, const health_request *req) {
  return registry_ask_index(ctx, index, req);
}

/* ------------------------------------------------------------ shutdown */

static void request_stop(serve *s, const char *why) {
  int no = 0;
  if (!atomic_compare_exchange_strong(&s->stopping, &no, 1)) return;
  int64_t now = tg_now();
  atomic_store(&s->stop_at_ns, now);
  atomic_store(&s->drain_until, now + TG_MS(s->cfg.drain_ms));
  log_event(&s->log, "🛑", "serve", 0, "shutdown_requested",
            "Shutdown requested (%s): no new connections; each connection reads what its device already sent "
            "(at most %d ms), then every stage drains and commits",
            why, s->cfg.drain_ms);
  tg_cancel_fire(s->cancel);
}

void serve_stop(serve *s) { request_stop(s, "serve_stop"); }

/* SIGHUP reloads the device credentials, when there are some: the new
 * set applies to every connection's next reading, a bad file keeps the
 * old set (both logged). No data is at risk. */
static void reload_credentials(serve *s) {
  char changes[512], err[300];
  if (serve_credentials_reload(s, changes, sizeof changes, err, sizeof err) == 0)
    log_event(&s->log, "🔑", "serve", 0, "credentials_reloaded", "SIGHUP: credentials reloaded from %s: %s",
              s->creds.path, changes);
  else
    log_event(&s->log, "❌", "serve", 0, "credentials_reload_failed",
              "SIGHUP: credentials NOT reloaded, the previous ones stay: %s", err);
}

int serve_credentials_reload(serve *s, char *changes, size_t changeslen, char *err, size_t errlen) {
  if (!s->creds.path) {
    snprintf(err, errlen, "no credentials file (serve runs without --credentials)");
    return -ENOENT;
  }
  int r = credentials_reload(&s->creds, changes, changeslen, err, errlen);
  figure_add_shared(r == 0 ? &s->credential_reloads : &s->credential_reload_errors, 1);
  return r;
}

/* The signal watcher's target. The watch starts before serve does, so
 * that a SIGINT or SIGTERM that comes while serve starts is kept and acted
 * on once it runs, instead of killing the process the default way; and it
 * ends after serve_wait, so that a second SIGINT or SIGTERM during a
 * drain that hangs still kills the process (SA_RESETHAND, signals.h). The
 * lock keeps serve alive while the watcher acts on it. */
typedef struct signal_target {
  pthread_mutex_t lock;
  serve *s;    /* set once serve started, NULL again once its shutdown began */
  int pending; /* a stop signal that came before serve started */
} signal_target;

static void stop_on(serve *s, int signo) { request_stop(s, signo == SIGTERM ? "SIGTERM" : "SIGINT"); }

/* The TLS options of the device port and of HTTP, from the settings. */
static tls_options device_tls_options(const serve_config *c) {
  return (tls_options){.server = 1,
                       .cert_file = c->tls_cert,
                       .key_file = c->tls_key,
                       .ca_file = c->tls_client_ca,
                       .crl_file = c->tls_client_crl};
}

static tls_options http_tls_options(const serve_config *c) {
  return (tls_options){.server = 1, .cert_file = c->http_tls_cert, .key_file = c->http_tls_key};
}

/* SIGHUP reads a port's certificate, key, client CA and CRL files again: new
 * connections get the new ones, open connections keep theirs, and files
 * that do not load change nothing (both logged). */
static void reload_tls(serve *s, tls_context *ctx, tls_options o, const char *port) {
  char err[300], desc[300];
  if (tls_context_reload(ctx, &o, err, sizeof err) == 0) {
    tls_context_describe(ctx, desc, sizeof desc);
    log_event(&s->log, "🔐", "serve", 0, "tls_reloaded", "SIGHUP: %s TLS certificate reloaded from %s: %s", port,
              o.cert_file, desc);
  } else {
    log_event(&s->log, "❌", "serve", 0, "tls_reload_failed",
              "SIGHUP: %s TLS certificate NOT reloaded, new connections keep the previous one: %s", port, err);
  }
}

tls_context *serve_http_tls(serve *s) { return s->http_tls; }

static void on_signal(void *ctx, int signo) {
  signal_target *t = ctx;
  pthread_mutex_lock(&t->lock);
  serve *s = t->s;
  if (signo == SIGHUP) { /* a daemon's reload: never a stop (signals.h) */
    if (s && s->creds.path) reload_credentials(s);
    if (s && s->device_tls) reload_tls(s, s->device_tls, device_tls_options(&s->cfg), "device port");
    if (s && s->http_tls) reload_tls(s, s->http_tls, http_tls_options(&s->cfg), "HTTP");
    if (s && s->cfg.on_reload)
      s->cfg.on_reload(s, s->cfg.on_reload_arg);
    else if (s && !s->creds.path && !s->device_tls && !s->http_tls)
      log_event(&s->log, "🔁", "serve", 0, "sighup", "SIGHUP: nothing to reload (no config file), serve goes on");
  } else if (s) {
    stop_on(s, signo);
  } else {
    t->pending = signo;
  }
  pthread_mutex_unlock(&t->lock);
}

static void pipeline_fault(void *ctx, const char *why) {
  (void)why; /* the pipeline logged it */
  request_stop(ctx, "a pipeline stage ended");
}

/* ------------------------------------------------------------ setup */

void serve_set_log_level(serve *s, log_level level) { log_set_level(&s->log, level); }

void serve_set_limits(serve *s, const serve_config *cfg) {
  serve_limits_set(&s->limits, cfg);
  registry_set_health_rate(&s->reg, (uint32_t)cfg->health_per_device_per_s);
}

int serve_set_health_cadence(serve *s, int interval_ms, int timeout_ms) {
  return pipeline_set_health_cadence(s->pipe, TG_MS(interval_ms), TG_MS(timeout_ms));
}

int serve_spawn(serve *s, tg_task_fn fn, void *arg, const char *name) {
  tg_spawn_opts opts = {.stack_size = PIPELINE_STACK, .name = name};
  return tg_joinset_spawn(s->tasks, fn, arg, &opts, NULL);
}

static int check_config(const serve_config *c, char *err, size_t len) {
  if (c->listen_host && serve_config_auth(c) == SERVE_AUTH_NONE && !c->insecure_no_auth &&
      !serve_host_is_loopback(c->listen_host))
    snprintf(err, len,
             "refusing to take devices on %s without authentication: anyone who reaches it could send for any device "
             "id; give --credentials FILE, or --insecure-no-auth to accept that",
             c->listen_host);
  else if (serve_config_auth(c) == SERVE_AUTH_TOKEN && !c->credentials_path)
    snprintf(err, len, "--auth token needs --credentials FILE");
  else if (!c->tls_cert != !c->tls_key)
    snprintf(err, len, "TLS wants both a certificate and its key (--tls-cert, --tls-key)");
  else if (c->tls_client_ca && !c->tls_cert)
    snprintf(err, len, "client certificates (--tls-client-ca) want TLS: give --tls-cert and --tls-key");
  else if (c->tls_client_crl && !c->tls_client_ca)
    snprintf(err, len, "a CRL (--tls-client-crl) checks client certificates: give --tls-client-ca too");
  else if (!c->http_tls_cert != !c->http_tls_key)
    snprintf(err, len, "HTTPS wants both a certificate and its key (--http-tls-cert, --http-tls-key)");
  else if (c->workers < 1)
    snprintf(err, len, "workers must be at least 1");
  else if (c->max_line_bytes < 16)
    snprintf(err, len, "max line bytes must be at least 16");
  else if (c->recv_buffer < 2 * (c->max_line_bytes + 1))
    snprintf(err, len, "the receive buffer must hold two lines (%d bytes)", 2 * (c->max_line_bytes + 1));
  else if (c->max_connections < 1 || c->max_devices < 1 || c->bandwidth_permits < 1)
    snprintf(err, len, "limits must be at least 1");
  else if (c->telemetry_capacity < 1 || c->storage_capacity < 1 || c->broadcast_capacity < 1)
    snprintf(err, len, "capacities must be at least 1");
  else if (c->health_interval_ms < 0 || c->health_timeout_ms < 1)
    snprintf(err, len, "bad health check timing");
  else if (c->batch_size < 1 || c->batch_age_ms < 1)
    snprintf(err, len, "batch size and age must be at least 1");
  else if (c->stale_after_ms < 1)
    snprintf(err, len, "stale-after must be at least 1 ms");
  else if (c->retention_ms < 0 || (c->retention_ms > 0 && c->storage && strcmp(c->storage, "sqlite") != 0))
    snprintf(err, len, "--retention needs a storage that keeps a history index (sqlite; not yet postgres)");
  else if (c->storage_shutdown_timeout_ms < 0)
    snprintf(err, len, "the storage shutdown timeout must be at least 0");
  else if (c->durability != STORAGE_DURABILITY_NORMAL && c->durability != STORAGE_DURABILITY_FULL)
    snprintf(err, len, "durability is normal or full");
  else if (c->db_pool < 1 || c->db_pool > WRITER_MAX_POOL)
    snprintf(err, len, "the DB pool is 1 to %d connections", WRITER_MAX_POOL);
  else if (!storage_backend_exists(c->storage)) {
    char names[200];
    snprintf(err, len, "no storage backend '%s' (registered: %s)", c->storage ? c->storage : "(none)",
             storage_backend_names(names, sizeof names));
  } else
    return 0;
  return TG_EINVAL;
}

static void teardown(serve *s) {
  if (s->tasks) tg_joinset_free(s->tasks);
  pipeline_free(s->pipe);
  if (s->cancel) tg_cancel_free(s->cancel);
  storage_close(s->db);
  registry_free(&s->reg);
  credentials_store_close(&s->creds);
  nats_publish_free(s->stream); /* before the NATS source's free ends libnats */
  for (int i = 0; i < NSOURCES; i++)
    if (s->source_state[i]) sources[i]->free(s->source_state[i]);
  fleet_free(s->fleet);            /* after the NATS source's free, which waits for libnats' threads to end */
  tls_context_free(s->device_tls); /* after the sources and HTTP: their connections were joined */
  tls_context_free(s->http_tls);
  schema_free(s->schema); /* after everything that reads names: sources, snapshots, storage */
  log_destroy(&s->log);
  free(s);
}

/* This node's name in the cluster: the NATS leases' id; NULL without
 * --nats. The one place that says which. */
static const char *node_name(serve *s) {
  for (int i = 0; i < NSOURCES; i++)
    if (sources[i] == &source_nats && s->source_state[i]) return source_nats_node(s->source_state[i]);
  return NULL;
}

static int health_local(void *ctx, const char *device_id, int64_t timeout_ns, device_status *out);

/* The fleet view (fleet.h), with --nats: it hands the aggregator the
 * other nodes' devices through `remote`, whose other end is in the
 * pipeline. */
static int fleet_begin(serve *s, tg_mpsc_tx *remote, char *err, size_t errlen) {
  tg_watch_rx *latest = NULL;
  const char *node = node_name(s);
  int r = node ? pipeline_subscribe(s->pipe, &latest, NULL) : TG_EINVAL;
  if (r != 0) {
    tg_mpsc_tx_drop(remote);
    snprintf(err, errlen, "cannot start the fleet view: %s", tg_strerror(r));
    return r;
  }
  fleet_opts fo = {.urls = s->cfg.nats_urls,
                   .prefix = s->cfg.nats_consumer,
                   .node = node,
                   .cancel = s->cancel,
                   .log = &s->log,
                   .reg = &s->reg,
                   .schema = s->schema,
                   .t0 = s->t0,
                   .latest = latest,
                   .remote = remote,
                   .health = health_local,
                   .health_ctx = s};
  return fleet_start(s->tasks, &fo, &s->fleet, err, errlen);
}

/* The pipeline and the tasks; the listener is bound by the acceptor. */
static int build(serve *s, char *err, size_t errlen) {
  const serve_config *c = &s->cfg;
  /* The fleet view's states of other nodes' devices, into the aggregator. */
  tg_mpsc_tx *remote = NULL;
  tg_mpsc_rx *remote_rx = NULL;
  int r;
  if (c->nats_urls &&
      (r = tg_mpsc_new(&(tg_mpsc_opts){.capacity = 64, .elem_size = sizeof(aggregator_remote *), .name = "fleet"},
                       &remote, &remote_rx)) != 0) {
    snprintf(err, errlen, "cannot start the pipeline: %s", tg_strerror(r));
    return r;
  }
  pipeline_opts po = {.cancel = s->cancel,
                      .log = &s->log,
                      .t0 = s->t0,
                      .stack_size = PIPELINE_STACK,
                      .pin = 1,
                      .worker = 0,
                      .telemetry_capacity = c->telemetry_capacity,
                      .storage_capacity = c->storage_capacity,
                      .broadcast_capacity = c->broadcast_capacity,
                      .max_devices = c->max_devices,
                      .remote = remote_rx,
                      .schema = s->schema,
                      .device_name = device_name,
                      .device_name_ctx = &s->reg,
                      .batch_interval_ns = TG_MS(c->batch_age_ms),
                      .batch_max = (uint32_t)c->batch_size,
                      .publish_every = (uint64_t)c->snapshot_every,
                      .publish_interval_ns = TG_MS(c->snapshot_interval_ms),
                      .stale_after_ns = TG_MS(c->stale_after_ms),
                      .burst = 256,
                      .db = s->db,
                      .db_pool = c->db_pool,
                      .health_interval_ns = TG_MS(c->health_interval_ms),
                      .health_timeout_ns = TG_MS(c->health_timeout_ms),
                      .health_rng = rng_stream((uint64_t)s->started_unix_ms, 2),
                      .on_commit = acks_owed,
                      .on_commit_ctx = &s->reg,
                      .on_fault = pipeline_fault,
                      .on_fault_ctx = s};
  if ((r = pipeline_new(&po, &s->pipe)) != 0 || (r = pipeline_start(s->pipe)) != 0) {
    if (remote) tg_mpsc_tx_drop(remote);
    snprintf(err, errlen, "cannot start the pipeline: %s", tg_strerror(r));
    return r;
  }

  /* In a cluster, the readings of this node's own ports go to the stream
   * (nats_publish.h): the node consuming a device's partition commits
   * them, so a device has one writer whichever node it talks to. */
  if (c->nats_urls) {
    nats_publish_opts no = {.cfg = c,
                            .schema = s->schema,
                            .reg = &s->reg,
                            .log = &s->log,
                            .cancel = s->cancel,
                            .drain_until = &s->drain_until};
    r = nats_publish_start(s->tasks, &no, &s->stream, err, errlen);
  }
  for (int i = 0; i < NSOURCES && r == 0; i++) {
    if (!sources[i]->wanted(c)) continue;
    source_sink sink = {.cfg = c,
                        .limits = &s->limits,
                        .cancel = s->cancel,
                        .log = &s->log,
                        .schema = s->schema,
                        .reg = &s->reg,
                        .creds = s->creds.path ? &s->creds : NULL,
                        .db = s->db,
                        .tasks = s->tasks,
                        .drain_until = &s->drain_until,
                        .tls = s->device_tls,
                        .stream = sources[i]->publishes ? s->stream : NULL};
    if ((r = sink.stream ? nats_publish_sender(sink.stream, &sink.telemetry)
                         : pipeline_sender(s->pipe, &sink.telemetry)) != 0)
      snprintf(err, errlen, "cannot start the %s source: %s", sources[i]->name, tg_strerror(r));
    else
      r = sources[i]->start(&sink, &s->source_state[i], err, errlen);
  }
  pipeline_seal(s->pipe); /* the sources hold the only senders now */
  if (s->stream) nats_publish_seal(s->stream);
  if (r == 0 && remote) {
    r = fleet_begin(s, remote, err, errlen);
    remote = NULL;
  }
  if (remote) tg_mpsc_tx_drop(remote);
  if (r != 0) return r;
  r = pipeline_start_health(
      s->pipe, &(pipeline_devices){.pick = health_pick, .ask = health_ask_hook, .name = device_name, .ctx = &s->reg});
  if (r != 0) snprintf(err, errlen, "cannot start the health checker: %s", tg_strerror(r));
  return r;
}

/* More descriptors for many devices: the soft limit up to the hard one. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* Ends a serve whose start failed: what was spawned is stopped and
 * joined, without a summary, since no run happened. */
static void abandon(serve *s) {
  if (s->cancel) request_stop(s, "start failed");
  int64_t grace = tg_now() + TG_MS(s->cfg.drain_ms) + GRACE_NS;
  tg_outcome o;
  if (s->tasks) {
    if (tg_joinset_join_next_dl(s->tasks, &o, grace) == TG_ETIMEDOUT) tg_joinset_abort_all(s->tasks);
    while (tg_joinset_join_next(s->tasks, &o) == 0) {
    }
  }
  if (s->pipe) pipeline_join(s->pipe, grace);
  teardown(s);
}

int serve_start(const serve_config *cfg, serve **out, char *err, size_t errlen) {
  *out = NULL;
  if (check_config(cfg, err, errlen) != 0) return TG_EINVAL;
  serve *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  s->cfg = *cfg;
  s->t0 = tg_now();
  s->started_unix_ns = wall_clock_ns();
  s->started_unix_ms = s->started_unix_ns / 1000000;
  FILE *log_out = cfg->out ? cfg->out : stdout;
  log_init(&s->log, log_out, cfg->log_format, cfg->quiet, s->t0);
  /* An operator's log: the time of day on each line; under systemd the
   * journal's priorities (and its own time); errors also on stderr when
   * the log goes to a file or a pipe, where nobody watches it live. */
  int journal = getenv("JOURNAL_STREAM") != NULL;
  int watched = isatty(fileno(log_out)) || fileno(log_out) == STDERR_FILENO;
  log_configure(&s->log, cfg->log_level, 1, journal, journal || watched ? NULL : stderr);
  raise_fd_limit();
  signal(SIGPIPE, SIG_IGN); /* a device that hung up is an error code, not the end of the process */
  int r;
  if ((r = registry_init(&s->reg, (uint32_t)cfg->max_devices)) != 0) {
    snprintf(err, errlen, "out of memory for %d devices", cfg->max_devices);
    teardown(s);
    return r;
  }
  s->reg.health_per_s = (uint32_t)cfg->health_per_device_per_s;
  serve_limits_set(&s->limits, cfg);
  if (serve_config_auth(cfg) == SERVE_AUTH_TOKEN &&
      (r = credentials_store_open(&s->creds, cfg->credentials_path, err, errlen)) != 0) {
    teardown(s);
    return r;
  }
  tls_open_args to = {.ctx = &s->device_tls, .opts = device_tls_options(cfg)};
  if (cfg->tls_cert && (r = tg_blocking_run(tls_open_call, &to)) != 0) {
    snprintf(err, errlen, "%s", to.err);
    teardown(s);
    return r;
  }
  to = (tls_open_args){.ctx = &s->http_tls, .opts = http_tls_options(cfg)};
  if (cfg->http_tls_cert && (r = tg_blocking_run(tls_open_call, &to)) != 0) {
    snprintf(err, errlen, "%s", to.err);
    teardown(s);
    return r;
  }
  if (!(s->schema = schema_new((uint32_t)cfg->max_fields))) {
    snprintf(err, errlen, "out of memory");
    teardown(s);
    return TG_ENOMEM;
  }
  if (cfg->schema_path && (r = schema_declare_file(s->schema, cfg->schema_path, err, errlen)) != 0) {
    teardown(s);
    return TG_EINVAL;
  }
  storage_open_args oc = {.db = &s->db,
                          .opts = {.backend = cfg->storage,
                                   .schema = s->schema,
                                   .path = cfg->db_path,
                                   .connections = cfg->db_pool,
                                   .durability = (storage_durability)cfg->durability,
                                   .device_name = device_name,
                                   .device_name_ctx = &s->reg,
                                   .history = 1}};
  if ((r = tg_blocking_run(storage_open_call, &oc)) != 0) {
    char shown[256];
    snprintf(err, errlen, "cannot open the database %s: %s", storage_path_shown(cfg->db_path, shown, sizeof shown),
             oc.err);
    teardown(s);
    return r;
  }
  if ((r = tg_cancel_new(&s->cancel, "shutdown")) || (r = tg_joinset_new(&s->tasks, "serve"))) {
    snprintf(err, errlen, "cannot start: %s", tg_strerror(r));
    teardown(s);
    return r;
  }
  if ((r = build(s, err, errlen)) != 0) {
    abandon(s);
    return r;
  }
  char shown[256];
  log_event(&s->log, "🚀", "serve", 0, "listening",
            "telegate serve: devices on %s:%d -> mpsc(%d) -> aggregator -> watch + broadcast(%d); batches of %d or "
            "every %d ms -> mpsc(%d) -> storage (%s%s%s, pool %d); %d bandwidth permits, %d workers; health checks "
            "every %d ms",
            cfg->listen_host, serve_port(s), cfg->telemetry_capacity, cfg->broadcast_capacity, cfg->batch_size,
            cfg->batch_age_ms, cfg->storage_capacity, cfg->storage, strcmp(cfg->storage, "none") == 0 ? "" : " ",
            strcmp(cfg->storage, "none") == 0 ? "" : storage_path_shown(cfg->db_path, shown, sizeof shown),
            cfg->db_pool, cfg->bandwidth_permits, cfg->workers, cfg->health_interval_ms);
  if (s->creds.path) {
    credentials *set = credentials_current(&s->creds);
    log_event(&s->log, "🔑", "serve", 0, "auth",
              "Devices authenticate: %u credentials from %s; a connection sends only for the ids its hello's token "
              "covers",
              (unsigned)set->n, s->creds.path);
    credentials_unref(set);
  } else {
    log_event(&s->log, "⚠️", "serve", 0, "auth",
              "Devices do NOT authenticate (--auth none): any connection to %s:%d may send for any device id%s",
              cfg->listen_host, serve_port(s),
              serve_host_is_loopback(cfg->listen_host) ? " (loopback only)"
                                                       : ", and --insecure-no-auth accepts that off loopback");
  }
  if (s->device_tls) {
    char desc[300];
    tls_context_describe(s->device_tls, desc, sizeof desc);
    log_event(&s->log, "🔐", "serve", 0, "tls",
              "Devices connect over TLS 1.2+ only: certificate %s%s%s; SIGHUP reloads it", desc,
              cfg->tls_client_ca ? "; client certificates required, from the CAs in " : "",
              cfg->tls_client_ca ? cfg->tls_client_ca : "");
  }
  if (cfg->retention_ms > 0) {
    s->retention = (retention){.db = s->db, .keep_ms = cfg->retention_ms, .cancel = s->cancel, .log = &s->log};
    if ((r = serve_spawn(s, retention_task, &s->retention, "retention")) != 0) {
      snprintf(err, errlen, "cannot start retention: %s", tg_strerror(r));
      abandon(s);
      return r;
    }
  }
  if (cfg->on_start && (r = cfg->on_start(s, cfg->on_start_arg, err, errlen)) != 0) {
    abandon(s);
    return r;
  }
  *out = s;
  return 0;
}

/* Every source's figures added up; the port is the first one bound. */
static void sources_figures_get(serve *s, source_figures *sum) {
  *sum = (source_figures){0};
  for (int i = 0; i < NSOURCES; i++) {
    if (!s->source_state[i]) continue;
    source_figures f;
    sources[i]->figures_get(s->source_state[i], &f);
    if (!sum->port) sum->port = f.port;
    if (f.first_byte_ns && (!sum->first_byte_ns || f.first_byte_ns < sum->first_byte_ns))
      sum->first_byte_ns = f.first_byte_ns;
    sum->accepted += f.accepted;
    sum->rejected += f.rejected;
    sum->rejected_per_client += f.rejected_per_client;
    sum->hello_timeouts += f.hello_timeouts;
    sum->closed += f.closed;
    sum->open += f.open;
    sum->closed_errors += f.closed_errors;
    sum->write_timeouts += f.write_timeouts;
    sum->bytes += f.bytes;
    sum->lines += f.lines;
    sum->readings += f.readings;
    for (int r = 1; r < SERVE_BAD_REASONS; r++) sum->bad[r] += f.bad[r];
    sum->error_lines_sent += f.error_lines_sent;
    sum->error_lines_suppressed += f.error_lines_suppressed;
    sum->health_requests += f.health_requests;
    sum->health_unmatched += f.health_unmatched;
    sum->hellos += f.hellos;
    sum->acks_sent += f.acks_sent;
    sum->authenticated += f.authenticated;
    sum->line_rate_waits += f.line_rate_waits;
    sum->tls_handshakes += f.tls_handshakes;
    sum->tls_failures += f.tls_failures;
    sum->writes += f.writes;
    sum->writes_refused += f.writes_refused;
    sum->writes_timed_out += f.writes_timed_out;
    sum->permits += f.permits;
    sum->permits_in_use += f.permits_in_use;
    sum->permit_waiters += f.permit_waiters;
    sum->permit_waits += f.permit_waits;
    if (sources[i] == &source_mqtt) sum->mqtt = f.mqtt;
    if (sources[i] == &source_nats) sum->nats = f.nats;
  }
}

int serve_port(serve *s) {
  source_figures in;
  sources_figures_get(s, &in);
  return in.port;
}

tg_cancel *serve_shutdown_token(serve *s) { return s->cancel; }

demo_log *serve_log(serve *s) { return &s->log; }

void serve_clients_add(serve *s, int delta) { atomic_fetch_add(&s->clients, delta); }

/* ------------------------------------------------------------ history */

int serve_history_fields(serve *s, const storage_field **fields, uint32_t *n) {
  return storage_fields(s->db, fields, n);
}

int serve_history(serve *s, const storage_history_query *q, storage_history_result *res, char *err, size_t errlen) {
  storage_history_args a = {.db = s->db, .q = q};
  int r = tg_blocking_run(storage_history_call, &a);
  *res = a.res;
  if (r != 0) snprintf(err, errlen, "%s", a.err);
  return r;
}

int serve_subscribe(serve *s, tg_watch_rx **latest, tg_broadcast_rx **updates) {
  return pipeline_subscribe(s->pipe, latest, updates);
}

int serve_write(serve *s, const write_request *rq, write_result *res) {
  for (int i = 0; i < NSOURCES; i++)
    if (sources[i] == &source_write && s->source_state[i]) return source_write_points(s->source_state[i], rq, res);
  *res = (write_result){0};
  return TG_ECLOSED;
}

/* A health check of a device connected here, or of none: never forwarded. */
static int health_local(void *ctx, const char *device_id, int64_t timeout_ns, device_status *out) {
  serve *s = ctx;
  uint32_t index = registry_find(&s->reg, device_id);
  if (!index) {
    figure_add_shared(&s->health_unknown, 1);
    return -ENOENT;
  }
  int r = pipeline_health(s->pipe, index, timeout_ns, out);
  if (r == 0 && out) out->device = index;
  return r;
}

/* A device connected to another node of the cluster (and not here over
 * a connection that answers health requests) is asked through that
 * node, as the fleet view last heard; any other here. */
int serve_health_check(serve *s, const char *device_id, int64_t timeout_ns, device_status *out) {
  uint32_t index = s->fleet ? registry_find(&s->reg, device_id) : 0;
  uint8_t here = 0;
  if (index) registry_answering(&s->reg, index, 1, &here);
  const char *node = index && !here ? fleet_connected_at(s->fleet, index) : NULL;
  if (!node) return health_local(s, device_id, timeout_ns, out);
  int r = fleet_health_ask(s->fleet, node, device_id, timeout_ns, out);
  if (r == 0 && out) out->device = index;
  return r;
}

/* ------------------------------------------------------------ figures */

static serve_queue_figures queue_figures(const tg_mpsc_stats *st) {
  return (serve_queue_figures){st->len, st->capacity, st->senders_waiting, st->full_waits};
}

static serve_permit_figures permit_figures(const tg_semaphore_stats *st) {
  return (serve_permit_figures){st->permits, st->in_use, st->waiters, st->waits};
}

void serve_figures_get(serve *s, serve_figures *f) {
  memset(f, 0, sizeof *f);
  source_figures in;
  sources_figures_get(s, &in);
  f->uptime_ms = (tg_now() - s->t0) / 1000000;
  f->started_unix_ms = s->started_unix_ms;
  f->listen_port = in.port;
  f->stopping = atomic_load(&s->stopping);
  f->connections_accepted = in.accepted;
  f->connections_rejected = in.rejected;
  f->connections_rejected_per_client = in.rejected_per_client;
  f->hello_timeouts = in.hello_timeouts;
  f->connections_closed = in.closed;
  f->connections_closed_errors = in.closed_errors;
  f->connections_write_timeouts = in.write_timeouts;
  f->connections_open = in.open;
  f->devices_known = registry_count(&s->reg);
  f->devices_connected = registry_connected(&s->reg);
  f->bytes_received = in.bytes;
  f->lines_received = in.lines;
  f->readings_received = in.readings;
  pipeline_figures pf = {0};
  if (s->pipe) pipeline_figures_get(s->pipe, &pf);
  f->readings_aggregated = pf.aggregator.aggregated;
  f->readings_stored = pf.readings_stored;
  f->readings_duplicate = pf.duplicates;
  /* Read after received, so a reading may be counted in stored and not
   * yet in received: never below 0. */
  nats_publish_figures np = {0};
  if (s->stream) nats_publish_figures_get(s->stream, &np);
  f->nats_publish = (serve_nats_publish_figures){np.connected, np.messages, np.readings,   np.retries,
                                                 np.inflight,  np.queued,   np.unpublished};
  uint64_t settled = f->readings_stored + f->readings_duplicate + np.readings;
  f->readings_unstored = f->readings_received > settled ? f->readings_received - settled : 0;
  for (int i = 1; i < SERVE_BAD_REASONS; i++) {
    f->bad_input[i] = in.bad[i];
    f->bad_lines += f->bad_input[i];
  }
  f->error_lines_sent = in.error_lines_sent;
  f->error_lines_suppressed = in.error_lines_suppressed;
  f->hellos = in.hellos;
  f->acks_sent = in.acks_sent;
  f->connections_authenticated = in.authenticated;
  f->line_rate_waits = in.line_rate_waits;
  f->credential_reloads = figure_get(&s->credential_reloads);
  f->credential_reload_errors = figure_get(&s->credential_reload_errors);
  f->health.rate_limited = atomic_load(&s->reg.health_limited);
  f->tls_handshakes = in.tls_handshakes;
  f->tls_failures = in.tls_failures;
  f->writes = in.writes;
  f->writes_refused = in.writes_refused;
  f->writes_timed_out = in.writes_timed_out;
  f->mqtt = (serve_mqtt_figures){in.mqtt.connected,   in.mqtt.connects, in.mqtt.connect_failures,
                                 in.mqtt.disconnects, in.mqtt.messages, in.mqtt.redelivered,
                                 in.mqtt.acks,        in.mqtt.inflight, in.mqtt.inflight_max};
  f->nats = (serve_nats_figures){.connected = in.nats.connected,
                                 .connects = in.nats.connects,
                                 .connect_failures = in.nats.connect_failures,
                                 .disconnects = in.nats.disconnects,
                                 .messages = in.nats.messages,
                                 .redelivered = in.nats.redelivered,
                                 .requests_lost = in.nats.requests_lost,
                                 .acks = in.nats.acks,
                                 .inflight = in.nats.inflight,
                                 .inflight_max = in.nats.inflight_max,
                                 .pending = in.nats.pending,
                                 .partitions_held = in.nats.partitions_held,
                                 .nodes = in.nats.nodes,
                                 .leases_lost = in.nats.leases_lost,
                                 .leases_claimed = in.nats.leases_claimed};
  if (s->fleet) {
    fleet_figures ff;
    fleet_figures_get(s->fleet, &ff);
    f->fleet = (serve_fleet_figures){.connected = ff.connected,
                                     .nodes = ff.nodes,
                                     .messages_sent = ff.messages_sent,
                                     .bytes_sent = ff.bytes_sent,
                                     .messages_received = ff.messages_received,
                                     .bytes_received = ff.bytes_received,
                                     .devices_sent = ff.devices_sent,
                                     .devices_received = ff.devices_received,
                                     .devices_dropped = ff.devices_dropped,
                                     .syncs = ff.syncs,
                                     .health_forwarded = ff.health_asked,
                                     .health_answered = ff.health_answered};
  }
  f->telemetry = queue_figures(&pf.telemetry);
  f->storage = queue_figures(&pf.storage);
  f->bandwidth = (serve_permit_figures){in.permits, in.permits_in_use, in.permit_waiters, in.permit_waits};
  f->db_pool = permit_figures(&pf.db_pool);
  f->batches_flushed = pf.aggregator.batches_flushed;
  f->batches_stored = pf.batches_stored;
  f->batches_lost = pf.batches_lost;
  f->transactions = pf.transactions;
  f->write_retries = pf.write_retries;
  f->commit_time = pf.commit_time;
  f->reading_commit = pf.reading_commit;
  f->storage_failing = pf.storage_failing_since_ns != 0;
  f->storage_failing_ms = f->storage_failing ? (tg_now() - pf.storage_failing_since_ns) / 1000000 : 0;
  f->snapshots_published = pf.aggregator.snapshots_built;
  f->devices_active = pf.aggregator.devices_active;
  f->devices_stale = pf.aggregator.devices_stale;
  int64_t behind = s->db ? storage_history_behind(s->db) : -1;
  f->history_behind = behind > 0 ? (uint64_t)behind : 0;
  f->retention_deleted = figure_get(&s->retention.deleted);
  f->retention_passes = figure_get(&s->retention.passes);
  f->retention_last_pass_unix_ms = atomic_load_explicit(&s->retention.last_pass_unix_ms, memory_order_relaxed);
  f->broadcast_len = pf.updates.len;
  f->broadcast_capacity = pf.updates.capacity;
  f->broadcast_receivers = pf.updates.receivers;
  f->lag_events = pf.updates.lag_events;
  f->lagged_messages = pf.updates.lagged_messages;
  int64_t clients = atomic_load(&s->clients);
  f->clients_connected = clients > 0 ? (uint64_t)clients : 0;
  f->health.rounds = pf.health.rounds;
  f->health.requests = in.health_requests;
  f->health.ok = pf.health.ok;
  f->health.timeout = pf.health.timeout;
  f->health.disconnected = pf.health.dropped + pf.health.unreachable;
  f->health.unknown = figure_get(&s->health_unknown);
  f->health.unmatched_replies = in.health_unmatched;
  f->workers = s->cfg.workers;
  tg_runtime_stats rs;
  tg_runtime_stats_get(&rs);
  f->tasks_alive = rs.tasks_alive;
}

int serve_storage_failing(serve *s, char *why, size_t whylen) {
  char reason[160];
  int64_t since = s->pipe ? pipeline_storage_failing(s->pipe, reason, sizeof reason) : 0;
  if (!since) return 0;
  snprintf(why, whylen, "storage failing since %.1f s: %s", (double)(tg_now() - since) / 1e9, reason);
  return 1;
}

/* ------------------------------------------------------------ summary */

static int64_t first_byte_ns(serve *s) {
  source_figures in;
  sources_figures_get(s, &in);
  return in.first_byte_ns;
}

/* A tg_now() reading as Unix nanoseconds (0 stays 0). */
static int64_t to_unix_ns(const serve *s, int64_t mono) { return mono ? s->started_unix_ns + (mono - s->t0) : 0; }

/* The text summary to the log, the JSON one to --summary-json (figures.h). */
static void summary(serve *s, const serve_figures *f, int lossless) {
  pipeline_figures pf = {0};
  if (s->pipe) pipeline_figures_get(s->pipe, &pf);
  int64_t last_reading = pf.aggregator.last_reading_ns;
  serve_run_end end = {
      .first_byte_unix_ns = to_unix_ns(s, first_byte_ns(s)),
      .last_aggregated_unix_ns = last_reading < 0 ? 0 : to_unix_ns(s, s->t0 + last_reading),
      .last_commit_unix_ns = to_unix_ns(s, pf.last_commit_ns),
      .db_rows = s->db_rows,
      .shutdown_ms = (s->last_join_ns - atomic_load(&s->stop_at_ns)) / 1000000,
      .lossless = lossless,
  };
  figures_summary_write(&s->log, f, &end, s->cfg.summary_json);
}

/* ------------------------------------------------------------ the run */

static void account(serve *s, const tg_outcome *o) {
  s->joined++;
  s->last_join_ns = tg_now();
  if (o->status == TG_EPANICKED) {
    s->panicked++;
    log_event(&s->log, "💥", "serve", 0, "task_panicked", "A pipeline task panicked: %s", o->message);
  } else if (o->status == TG_ECANCELED) {
    s->aborted++;
  }
}

int serve_wait(serve *s, serve_figures *final) {
  /* Until shutdown; a task that ends before is a fault (the pipeline
   * reports its own stages through pipeline_fault). */
  while (!tg_cancel_fired(s->cancel)) {
    tg_outcome o;
    tg_case cs[2] = {tg_cancel_case(s->cancel), tg_joinset_join_next_case(s->tasks, &o)};
    int w = tg_select(cs, 2, TG_FOREVER);
    if (w == 1 && cs[1].result == 0) {
      account(s, &o);
      request_stop(s, "a task ended");
    } else if (w != 0) {
      request_stop(s, "no task left");
    }
  }
  /* Sources wait on a full channel while storage cannot commit, so they
   * and the pipeline have the same deadline. */
  int64_t grace = atomic_load(&s->stop_at_ns) + TG_MS(s->cfg.drain_ms) + TG_MS(s->cfg.storage_shutdown_timeout_ms);
  tg_outcome o;
  int r;
  while ((r = tg_joinset_join_next_dl(s->tasks, &o, grace)) == 0) account(s, &o);
  if (r == TG_ETIMEDOUT) {
    log_event(&s->log, "⏱️", "serve", 0, "shutdown_timeout",
              "Shutdown is taking too long: aborting the %zu tasks left", tg_joinset_len(s->tasks));
    tg_joinset_abort_all(s->tasks);
    while (tg_joinset_join_next(s->tasks, &o) == 0) account(s, &o);
  }
  if (s->pipe) pipeline_join(s->pipe, grace);
  pipeline_figures pf = {0};
  if (s->pipe) pipeline_figures_get(s->pipe, &pf);
  if (pf.last_join_ns > s->last_join_ns) s->last_join_ns = pf.last_join_ns;
  if (s->last_join_ns == 0) s->last_join_ns = tg_now();
  storage_count_args cc = {.db = s->db};
  if (s->db && tg_blocking_run(storage_count_call, &cc) != 0)
    log_event(&s->log, "❌", "serve", 0, "count_failed", "Cannot count the stored rows: %s", cc.err);
  s->db_rows = cc.rows;
  serve_figures f;
  serve_figures_get(s, &f);
  if (f.readings_unstored) {
    char why[200] = "";
    int failing = serve_storage_failing(s, why, sizeof why);
    log_event(&s->log, "❌", "serve", 0, "readings_unstored",
              "%" PRIu64 " readings read from devices were not committed%s%s: never acknowledged, their devices must "
              "send them again",
              f.readings_unstored, failing ? " - " : "", failing ? why : "");
  }
  int lossless = f.readings_unstored == 0 && f.readings_received == f.readings_aggregated + f.nats_publish.readings &&
                 f.readings_aggregated == f.readings_stored + f.readings_duplicate && f.batches_lost == 0 &&
                 s->aborted == 0 && pf.tasks_aborted == 0 && pf.writers_aborted == 0;
  log_event(&s->log, "✅", "serve", 0, "joined",
            "All tasks joined, %" PRId64 " ms after the shutdown request; %" PRIu64 " readings received, %" PRIu64
            " committed",
            (s->last_join_ns - atomic_load(&s->stop_at_ns)) / 1000000, f.readings_received, f.readings_stored);
  summary(s, &f, lossless);
  if (final) *final = f;
  teardown(s);
  return lossless ? 0 : 1;
}

typedef struct run_call {
  const serve_config *cfg;
  serve_figures *final;
  char *err;
  size_t errlen;
  int result;
} run_call;

/* Sets the serve the signals act on (NULL: none); returns a stop signal
 * that came while there was none. */
static int target_set(signal_target *t, serve *s) {
  pthread_mutex_lock(&t->lock);
  t->s = s;
  int early = t->pending;
  pthread_mutex_unlock(&t->lock);
  return early;
}

static void *run_main(void *arg) {
  run_call *rc = arg;
  signal_target target = {.s = NULL, .pending = 0};
  pthread_mutex_init(&target.lock, NULL);
  signal_watch sw = {0};
  int watching = rc->cfg->handle_signals && signal_watch_start(&sw, on_signal, &target) == 0;
  serve *s;
  rc->result = serve_start(rc->cfg, &s, rc->err, rc->errlen);
  if (rc->result == 0) {
    int early = target_set(&target, s);
    if (early) stop_on(s, early);
    if (rc->cfg->handle_signals && !watching)
      log_event(&s->log, "⚠️", "serve", 0, "signals", "SIGINT/SIGTERM/SIGHUP handling unavailable");
    tg_cancel_wait(serve_shutdown_token(s));
    target_set(&target, NULL); /* the shutdown began: no more reloads, and serve_wait frees s */
    rc->result = serve_wait(s, rc->final);
  }
  signal_watch_stop(&sw);
  pthread_mutex_destroy(&target.lock);
  return NULL;
}

int serve_run(const serve_config *cfg, serve_figures *final, char *err, size_t errlen) {
  tg_runtime_opts opts = {.workers = cfg->workers};
  run_call rc = {cfg, final, err, errlen, 0};
  sigset_t old;
  if (cfg->handle_signals) signal_block(&old); /* the watcher's alone (signals.h) */
  int r = tg_run(&opts, run_main, &rc, NULL);
  if (cfg->handle_signals) signal_restore(&old);
  if (r != 0) snprintf(err, errlen, "cannot start the runtime: %s", tg_strerror(r));
  return r != 0 ? r : rc.result;
}
