/* dashboard-feed.c - the HTTP side on a small simulated pipeline, for the
 * browser test and for looking at the dashboard without serve.
 *
 *   dashboard-feed [--port N] [--duration S] [--devices N]
 *
 * A real pipeline in miniature, on libtg primitives, so every figure the
 * dashboard draws is the primitives' own: device tasks take a bandwidth
 * permit, then send readings into a telemetry mpsc(50); one aggregator
 * publishes snapshots (snapshot_new) to a watch and a broadcast(16) every
 * 100 ms and cuts a batch every 500 ms into a storage mpsc(10); a storage
 * task commits each batch holding one of 2 pool permits. Every 12 s the
 * aggregator and storage slow down for 4 s, so the queues fill, sends
 * wait and the backpressure counters move. Health checks: device 3 never
 * answers (504), device 6 is disconnected (503), the others answer.
 * Prints "listening http://127.0.0.1:PORT" once the api listens. */
#include "api.h"
#include "schema.h"
#include "snapshot.h"
#include "tg/tg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEVICES 64

typedef struct feed {
  int ndevices;
  tg_cancel *stop;
  tg_semaphore *bandwidth, *db_pool;
  tg_mpsc_tx *telemetry_tx;
  tg_mpsc_rx *telemetry_rx;
  tg_mpsc_tx *storage_tx;
  tg_mpsc_rx *storage_rx;
  tg_watch_tx *latest;
  tg_broadcast_tx *updates;
  snapshot_counters counters;
  int64_t t0;
  _Atomic uint64_t received, aggregated, stored, batches_flushed, batches_stored, transactions;
  _Atomic uint64_t published, health_ok, health_timeout, health_disconnected, health_unknown;
  _Atomic int clients;
} feed;

typedef struct reading_msg {
  uint32_t device;
  uint32_t battery;
  double temperature, humidity;
} reading_msg;

typedef struct device_arg {
  feed *f;
  uint32_t id;
} device_arg;

static int64_t run_ms(feed *f) { return (tg_now() - f->t0) / 1000000; }

/* Seconds 4..8 of every 12: the slow phase. */
static int slow_phase(feed *f) { return run_ms(f) % 12000 >= 4000 && run_ms(f) % 12000 < 8000; }

static void *feed_device_task(void *arg) {
  device_arg *d = arg;
  feed *f = d->f;
  double phase = d->id * 0.9;
  uint32_t battery = 100 - d->id * 9;
  for (uint64_t k = 0; !tg_cancel_fired(f->stop); k++) {
    if (tg_semaphore_acquire(f->bandwidth, 1) != 0) break;
    tg_sleep(TG_MS(3)); /* transmitting */
    tg_semaphore_release(f->bandwidth, 1);
    double t = (double)run_ms(f) / 1000.0;
    reading_msg r = {.device = d->id,
                     .battery = battery - (uint32_t)(k / 2000) % 10,
                     .temperature = 21.0 + d->id * 0.7 + 2.5 * sin(t / 3.0 + phase),
                     .humidity = 45.0 + 10.0 * sin(t / 7.0 + phase)};
    tg_case cs[2] = {tg_cancel_case(f->stop), tg_mpsc_send_case(f->telemetry_tx, &r)};
    if (tg_select(cs, 2, TG_FOREVER) != 1 || cs[1].result != 0) break;
    f->received++;
    if (tg_cancel_wait_dl(f->stop, tg_deadline_in(TG_MS(20))) != TG_ETIMEDOUT) break;
  }
  free(d);
  return NULL;
}

static void publish(feed *f, device_metrics *m, uint64_t version, uint64_t total) {
  system_snapshot *s = snapshot_new(&f->counters, version, run_ms(f), total, m, (uint32_t)f->ndevices);
  if (!s) return;
  snapshot_ref(s);
  tg_watch_send(f->latest, &s);
  if (tg_broadcast_send(f->updates, &s, NULL) != 0) snapshot_unref(s);
  f->published = version;
}

static void *feed_aggregator_task(void *arg) {
  feed *f = arg;
  device_metrics m[MAX_DEVICES] = {0};
  for (int i = 0; i < f->ndevices; i++) m[i].device = (uint32_t)i + 1;
  uint64_t version = 0, total = 0, in_batch = 0;
  int64_t next_publish = tg_now(), next_batch = tg_now() + TG_MS(500);
  for (;;) {
    reading_msg r;
    int64_t due = next_publish < next_batch ? next_publish : next_batch;
    tg_case cs[2] = {tg_cancel_case(f->stop), tg_mpsc_recv_case(f->telemetry_rx, &r)};
    int w = tg_select(cs, 2, due);
    if (w == 0 || (w == 1 && cs[1].result != 0)) break;
    if (w == 1) {
      device_metrics *d = &m[r.device - 1];
      d->count++;
      d->last_seq = d->count;
      /* temperature and humidity: moving means; battery: the last */
      double *v = d->field_value;
      d->field_name[0] = SCHEMA_TEMPERATURE, d->field_type[0] = FIELD_FLOAT;
      d->field_name[1] = SCHEMA_HUMIDITY, d->field_type[1] = FIELD_FLOAT;
      d->field_name[2] = SCHEMA_BATTERY, d->field_type[2] = FIELD_INT;
      v[0] = d->count == 1 ? r.temperature : 0.8 * v[0] + 0.2 * r.temperature;
      v[1] = d->count == 1 ? r.humidity : 0.8 * v[1] + 0.2 * r.humidity;
      v[2] = r.battery;
      d->last_seen_ms = run_ms(f);
      total++;
      in_batch++;
      f->aggregated++;
      tg_sleep(slow_phase(f) ? TG_MS(4) : TG_MS(0)); /* processing */
    }
    int64_t now = tg_now();
    if (now >= next_publish) {
      publish(f, m, ++version, total);
      next_publish = now + TG_MS(100);
    }
    if (now >= next_batch) {
      tg_case ss[2] = {tg_cancel_case(f->stop), tg_mpsc_send_case(f->storage_tx, &in_batch)};
      if (tg_select(ss, 2, TG_FOREVER) != 1) break;
      f->batches_flushed++;
      in_batch = 0;
      next_batch = tg_now() + TG_MS(500);
    }
  }
  tg_broadcast_tx_drop(f->updates);
  tg_watch_tx_drop(f->latest);
  return NULL;
}

static void *feed_writer_task(void *arg) {
  feed *f = arg;
  uint64_t n;
  for (;;) {
    tg_case cs[2] = {tg_cancel_case(f->stop), tg_mpsc_recv_case(f->storage_rx, &n)};
    if (tg_select(cs, 2, TG_FOREVER) != 1 || cs[1].result != 0) break;
    if (tg_semaphore_acquire(f->db_pool, 1) != 0) break;
    tg_sleep(slow_phase(f) ? TG_MS(900) : TG_MS(30)); /* the transaction */
    tg_semaphore_release(f->db_pool, 1);
    f->stored += n;
    f->batches_stored++;
    f->transactions++;
  }
  return NULL;
}

/* ------------------------------------------------------------ the api's deps */

static int subscribe(void *ctx, tg_watch_rx **latest, tg_broadcast_rx **updates) {
  feed *f = ctx;
  if (tg_cancel_fired(f->stop)) return TG_ECLOSED;
  if (latest && tg_watch_subscribe(f->latest, latest) != 0) return TG_ENOMEM;
  if (updates && tg_broadcast_subscribe(f->updates, updates) != 0) return TG_ENOMEM;
  return 0;
}

static void queue_figures(const void *ch, serve_queue_figures *q) {
  tg_mpsc_stats st;
  tg_mpsc_stats_get(ch, &st);
  *q = (serve_queue_figures){st.len, st.capacity, st.senders_waiting, st.full_waits};
}

static void permit_figures(tg_semaphore *s, serve_permit_figures *p) {
  tg_semaphore_stats st;
  tg_semaphore_stats_get(s, &st);
  *p = (serve_permit_figures){st.permits, st.in_use, st.waiters, st.waits};
}

static void figures(void *ctx, serve_figures *out) {
  feed *f = ctx;
  memset(out, 0, sizeof *out);
  out->uptime_ms = run_ms(f);
  out->connections_open = out->devices_connected = out->devices_known = (uint64_t)f->ndevices - 1;
  out->connections_accepted = (uint64_t)f->ndevices;
  out->readings_received = f->received;
  out->lines_received = f->received + 3;
  out->readings_aggregated = f->aggregated;
  out->readings_stored = f->stored;
  out->bad_input[PROTOCOL_MALFORMED] = 2;
  out->bad_input[PROTOCOL_OUT_OF_RANGE] = 1;
  out->bad_lines = 3;
  queue_figures(f->telemetry_rx, &out->telemetry);
  queue_figures(f->storage_rx, &out->storage);
  permit_figures(f->bandwidth, &out->bandwidth);
  permit_figures(f->db_pool, &out->db_pool);
  out->batches_flushed = f->batches_flushed;
  out->batches_stored = f->batches_stored;
  out->transactions = f->transactions;
  out->snapshots_published = f->published;
  if (!tg_cancel_fired(f->stop)) {
    tg_broadcast_stats b;
    tg_broadcast_stats_get(f->updates, &b);
    out->broadcast_len = b.len;
    out->broadcast_capacity = b.capacity;
    out->broadcast_receivers = b.receivers;
    out->lag_events = b.lag_events;
    out->lagged_messages = b.lagged_messages;
  }
  out->clients_connected = (uint64_t)f->clients;
  out->health.ok = f->health_ok;
  out->health.timeout = f->health_timeout;
  out->health.disconnected = f->health_disconnected;
  out->health.unknown = f->health_unknown;
  out->health.requests = f->health_ok + f->health_timeout;
  out->workers = 1;
}

static int health_check(void *ctx, const char *id, int64_t timeout_ns, device_status *out) {
  feed *f = ctx;
  char *end;
  long d = strtol(id, &end, 10);
  if (*end || d < 1 || d > f->ndevices) {
    f->health_unknown++;
    return -ENOENT;
  }
  if (d == 6) {
    f->health_disconnected++;
    return TG_ECLOSED;
  }
  if (d == 3) {
    tg_sleep(timeout_ns);
    f->health_timeout++;
    return TG_ETIMEDOUT;
  }
  tg_sleep(TG_MS(2));
  *out =
      (device_status){.device = (uint32_t)d, .battery = 90, .uptime_ms = run_ms(f) + 3600000, .readings = f->received};
  f->health_ok++;
  return 0;
}

static void clients_add(void *ctx, int delta) { ((feed *)ctx)->clients += delta; }

/* ------------------------------------------------------------ main */

typedef struct options {
  int port, duration_s, devices;
} options;

static void *feed_main(void *arg) {
  const options *o = arg;
  feed *f = calloc(1, sizeof *f);
  f->ndevices = o->devices;
  f->t0 = tg_now();
  tg_cancel_new(&f->stop, "stop");
  tg_semaphore_new(&f->bandwidth, 5, "bandwidth");
  tg_semaphore_new(&f->db_pool, 2, "db_pool");
  tg_mpsc_new(&(tg_mpsc_opts){.capacity = 50, .elem_size = sizeof(reading_msg), .name = "telemetry"}, &f->telemetry_tx,
              &f->telemetry_rx);
  tg_mpsc_new(&(tg_mpsc_opts){.capacity = 10, .elem_size = sizeof(uint64_t), .name = "storage"}, &f->storage_tx,
              &f->storage_rx);
  device_metrics none[MAX_DEVICES] = {0};
  for (int i = 0; i < f->ndevices; i++) none[i].device = (uint32_t)i + 1;
  system_snapshot *s0 = snapshot_new(&f->counters, 0, 0, 0, none, (uint32_t)f->ndevices);
  tg_watch_new(&(tg_watch_opts){.elem_size = sizeof s0, .clone = snapshot_elem_clone, .drop = snapshot_elem_drop}, &s0,
               &f->latest, NULL);
  tg_broadcast_new(&(tg_broadcast_opts){.capacity = 16,
                                        .elem_size = sizeof s0,
                                        .clone = snapshot_elem_clone,
                                        .drop = snapshot_elem_drop,
                                        .name = "updates"},
                   &f->updates, NULL);

  api_config cfg;
  api_config_defaults(&cfg);
  cfg.http.port = o->port;
  api_server *api;
  api_deps deps = {
      .ctx = f, .subscribe = subscribe, .figures = figures, .health_check = health_check, .clients_add = clients_add};
  int r = api_server_start(&api, &cfg, &deps);
  if (r != 0) {
    fprintf(stderr, "dashboard-feed: cannot listen: %s\n", tg_strerror(r));
    exit(1);
  }
  printf("listening http://127.0.0.1:%d\n", api_server_port(api));
  fflush(stdout);

  tg_joinset *tasks;
  tg_joinset_new(&tasks, "feed");
  for (int i = 0; i < f->ndevices; i++) {
    device_arg *d = malloc(sizeof *d);
    *d = (device_arg){f, (uint32_t)i + 1};
    tg_joinset_spawn(tasks, feed_device_task, d, NULL, NULL);
  }
  tg_joinset_spawn(tasks, feed_aggregator_task, f, NULL, NULL);
  tg_joinset_spawn(tasks, feed_writer_task, f, NULL, NULL);

  tg_sleep(TG_SEC(o->duration_s));
  tg_cancel_fire(f->stop);
  api_server_stop(api);
  tg_outcome out;
  while (tg_joinset_join_next(tasks, &out) == 0) {
  }
  tg_joinset_free(tasks);
  tg_mpsc_tx_drop(f->telemetry_tx);
  tg_mpsc_rx_drop(f->telemetry_rx);
  tg_mpsc_tx_drop(f->storage_tx);
  tg_mpsc_rx_drop(f->storage_rx);
  tg_semaphore_free(f->bandwidth);
  tg_semaphore_free(f->db_pool);
  tg_cancel_free(f->stop);
  int leaked = f->counters.built != f->counters.freed;
  printf("done: %llu readings, %llu snapshots%s\n", (unsigned long long)f->aggregated, (unsigned long long)f->published,
         leaked ? ", SNAPSHOTS LEAKED" : "");
  free(f);
  return (void *)(intptr_t)leaked;
}

int main(int argc, char **argv) {
  options o = {.port = 0, .duration_s = 60, .devices = 7};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--port"))
      o.port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--duration"))
      o.duration_s = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--devices"))
      o.devices = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "usage: dashboard-feed [--port N] [--duration S] [--devices N]\n");
      return 2;
    }
  }
  if (o.devices < 1 || o.devices > MAX_DEVICES) o.devices = 7;
  void *leaked = NULL;
  tg_runtime_opts ro = {.workers = 1};
  int r = tg_run(&ro, feed_main, &o, &leaked);
  return r != 0 || leaked ? 1 : 0;
}
