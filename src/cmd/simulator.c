/* simulator.c - simulated devices over TCP; see simulator.h. */
#include "simulator.h"

#include "rng.h"
#include "tg/tg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

enum {
  BURST = 64, /* readings per write at most, when catching up */
  LINE_CAP = 256,
  RECV_BUFFER = 4096,
  DEVICE_STACK = 32 * 1024,
};

typedef struct sim_device {
  struct sim *sim;
  int index;
  sim_device_report *report;
  rng rng;
  double temperature, humidity, battery;
} sim_device;

struct sim {
  sim_config cfg;
  tg_cancel *stop;
  tg_joinset *tasks;
  sim_device *devices;
  sim_report report;
  int64_t t0, epoch_ms;
};

void sim_config_defaults(sim_config *c) {
  memset(c, 0, sizeof *c);
  c->host = "127.0.0.1";
  c->port = 7878;
  c->count = 10;
  c->rate_hz = 1;
  c->duration_s = 10;
  c->seed = 42;
  c->format = PROTOCOL_JSON;
  c->id_prefix = "dev-";
  c->workers = 1;
}

const char *sim_end_name(sim_end e) {
  switch (e) {
  case SIM_END_DURATION: return "duration";
  case SIM_END_CLOSED: return "closed";
  case SIM_END_CONNECT: return "connect_failed";
  case SIM_END_ERROR: return "write_failed";
  case SIM_END_STOPPED: return "stopped";
  }
  return "?";
}

static double clamp(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

static reading measure(sim_device *d, int64_t ts_ms) {
  d->temperature = clamp(d->temperature + rng_range(&d->rng, -0.3, 0.3), 15.0, 35.0);
  d->humidity = clamp(d->humidity + rng_range(&d->rng, -1.0, 1.0), 20.0, 80.0);
  d->battery = clamp(d->battery - 0.01, 0.0, 100.0);
  return (reading){
      .seq = d->report->sent + 1,
      .ts_ms = ts_ms,
      .temperature = round(d->temperature * 100) / 100, /* short lines */
      .humidity = round(d->humidity * 100) / 100,
      .battery = (uint32_t)d->battery,
  };
}

/* One line from the gateway. */
static void on_gateway_line(sim_device *d, tg_tcp *sock, const char *p, size_t n) {
  cJSON *o = cJSON_ParseWithLength(p, n);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
  if (cJSON_IsString(type)) {
    if (strcmp(type->valuestring, "health") == 0 && d->sim->cfg.health == SIM_HEALTH_ANSWER) {
      const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
      if (cJSON_IsNumber(id)) {
        char line[LINE_CAP];
        protocol_health_reply h = {.id = (uint64_t)id->valuedouble,
                                   .uptime_s = (uint64_t)((tg_now() - d->sim->t0) / TG_SEC(1)),
                                   .battery = (uint32_t)d->battery};
        int len = protocol_format_health_reply(line, sizeof line, &h);
        if (len > 0 && tg_tcp_write(sock, line, (size_t)len) == 0) d->report->health_answered++;
      }
    } else if (strcmp(type->valuestring, "error") == 0) {
      d->report->errors_received++;
    }
  }
  cJSON_Delete(o);
}

/* Handles the complete lines of v. */
static void on_input(sim_device *d, tg_tcp *sock, tg_tcp_view v) {
  size_t used = 0;
  const char *nl;
  /* Copy first: answering writes, and the view must not be held across it. */
  char *copy = malloc(v.len ? v.len : 1);
  if (!copy) return;
  memcpy(copy, v.data, v.len);
  while ((nl = memchr(copy + used, '\n', v.len - used))) {
    size_t n = (size_t)(nl - (copy + used));
    used += n + 1;
    on_gateway_line(d, sock, nl - n, n);
  }
  tg_tcp_consume(sock, used);
  free(copy);
}

/* Reads what the gateway has sent, without waiting. */
static void read_pending(sim_device *d, tg_tcp *sock) {
  tg_tcp_view v;
  while (tg_tcp_recv_dl(sock, &v.data, &v.len, 0) == 0) on_input(d, sock, v);
}

static void *device_task(void *arg) {
  sim_device *d = arg;
  sim *s = d->sim;
  const sim_config *c = &s->cfg;
  sim_device_report *rep = d->report;
  tg_tcp *sock;
  if (tg_tcp_connect_dl(&sock, c->host, c->port, tg_deadline_in(TG_SEC(10))) != 0) {
    rep->end = SIM_END_CONNECT;
    return NULL;
  }
  tg_tcp_set_recv_buffer(sock, RECV_BUFFER);
  /* Health requests come only to a device that says it answers them. */
  static const char hello[] = "{\"type\":\"hello\",\"health\":true}\n";
  if (c->health == SIM_HEALTH_ANSWER && tg_tcp_write(sock, hello, sizeof hello - 1) != 0) {
    rep->end = SIM_END_ERROR;
    tg_tcp_close(sock);
    return NULL;
  }
  int64_t interval = (int64_t)(1e9 / c->rate_hz);
  if (interval < 1) interval = 1;
  int64_t next = tg_now() + (int64_t)(interval * rng_unit(&d->rng));
  int64_t end = tg_now() + (int64_t)(c->duration_s * 1e9); /* its own time, from its connection */
  char *buf = malloc(BURST * LINE_CAP);
  rep->end = SIM_END_DURATION;
  while (buf) {
    tg_tcp_view v;
    tg_case cs[2] = {tg_cancel_case(s->stop), tg_tcp_recv_case(sock, &v)};
    int w = tg_select(cs, 2, next < end ? next : end);
    if (w == 0) {
      rep->end = SIM_END_STOPPED;
      break;
    }
    if (w == 1) {
      if (cs[1].result != 0) {
        rep->end = SIM_END_CLOSED;
        break;
      }
      on_input(d, sock, v);
      continue;
    }
    int64_t now = tg_now();
    if (now >= end) break;
    /* Due readings, in one write. */
    size_t len = 0;
    int n = 0;
    uint64_t first = rep->sent;
    while (next <= now && n < BURST) {
      reading r = measure(d, s->epoch_ms + (now - s->t0) / 1000000);
      rep->sent++; /* tentatively: the seq of the next reading */
      int k = protocol_format_reading(buf + len, LINE_CAP, c->format, rep->id, &r);
      if (k < 0) break;
      len += (size_t)k;
      n++;
      next += interval;
    }
    if (next <= now - TG_SEC(1)) next = now; /* far behind: no endless catching up */
    rep->sent = first;
    if (tg_tcp_write(sock, buf, len) != 0) {
      rep->end = SIM_END_ERROR;
      break;
    }
    rep->sent = first + (uint64_t)n;
  }
  /* Hang up with nothing unread, so the close is a clean FIN. */
  if (rep->end == SIM_END_DURATION || rep->end == SIM_END_STOPPED) read_pending(d, sock);
  free(buf);
  tg_tcp_close(sock);
  return NULL;
}

int sim_start(const sim_config *cfg, sim **out) {
  *out = NULL;
  if (cfg->count < 1 || !(cfg->rate_hz > 0) || !(cfg->duration_s > 0) || !cfg->id_prefix ||
      strlen(cfg->id_prefix) + 10 > PROTOCOL_DEVICE_ID_MAX)
    return TG_EINVAL;
  sim *s = calloc(1, sizeof *s);
  if (!s) return TG_ENOMEM;
  s->cfg = *cfg;
  s->devices = calloc((size_t)cfg->count, sizeof *s->devices);
  s->report.devices = calloc((size_t)cfg->count, sizeof *s->report.devices);
  s->report.count = cfg->count;
  if (!s->devices || !s->report.devices || tg_cancel_new(&s->stop, "sim-stop") != 0 ||
      tg_joinset_new(&s->tasks, "devices") != 0) {
    if (s->stop) tg_cancel_free(s->stop);
    free(s->devices);
    free(s->report.devices);
    free(s);
    return TG_ENOMEM;
  }
  signal(SIGPIPE, SIG_IGN); /* a write to a closed connection is an error, not the end of the process */
  struct rlimit rl;         /* a descriptor per device */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  s->t0 = tg_now();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  s->epoch_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  int workers = cfg->workers > 0 ? cfg->workers : 1;
  for (int i = 0; i < cfg->count; i++) {
    sim_device *d = &s->devices[i];
    d->sim = s;
    d->index = i;
    d->report = &s->report.devices[i];
    snprintf(d->report->id, sizeof d->report->id, "%s%d", cfg->id_prefix, i + 1);
    d->rng = rng_stream(cfg->seed, 1000 + (uint64_t)i);
    d->temperature = rng_range(&d->rng, 19, 27);
    d->humidity = rng_range(&d->rng, 35, 60);
    d->battery = rng_range(&d->rng, 70, 100);
    tg_spawn_opts opts = {.stack_size = DEVICE_STACK, .pin = 1, .worker = i % workers, .name = "sim-device"};
    if (tg_joinset_spawn(s->tasks, device_task, d, &opts, NULL) != 0) d->report->end = SIM_END_CONNECT;
  }
  *out = s;
  return 0;
}

void sim_stop(sim *s) { tg_cancel_fire(s->stop); }

int sim_wait(sim *s, sim_report *report) {
  tg_outcome o;
  while (tg_joinset_join_next(s->tasks, &o) == 0) {
  }
  sim_report *r = &s->report;
  r->elapsed_s = (double)(tg_now() - s->t0) / 1e9;
  for (int i = 0; i < r->count; i++) {
    const sim_device_report *d = &r->devices[i];
    r->sent += d->sent;
    r->health_answered += d->health_answered;
    r->errors_received += d->errors_received;
    r->connect_failures += d->end == SIM_END_CONNECT;
    r->write_failures += d->end == SIM_END_ERROR;
  }
  int ok = r->connect_failures == 0 && r->write_failures == 0;
  if (!s->cfg.quiet)
    fprintf(s->cfg.out ? s->cfg.out : stdout,
            "telegate devices: %d devices sent %" PRIu64 " readings in %.3f s, answered %" PRIu64
            " health checks, got %" PRIu64 " error lines; %" PRIu64 " could not connect, %" PRIu64 " writes failed\n",
            r->count, r->sent, r->elapsed_s, r->health_answered, r->errors_received, r->connect_failures,
            r->write_failures);
  if (s->cfg.report_json && sim_report_write_json(r, s->cfg.report_json) != 0) {
    fprintf(stderr, "telegate devices: cannot write %s\n", s->cfg.report_json);
    ok = 0;
  }
  if (report)
    *report = *r;
  else
    free(r->devices);
  tg_joinset_free(s->tasks);
  tg_cancel_free(s->stop);
  free(s->devices);
  free(s);
  return ok ? 0 : 1;
}

void sim_report_free(sim_report *r) {
  free(r->devices);
  r->devices = NULL;
}

int sim_report_write_json(const sim_report *r, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return -errno;
  fprintf(f,
          "{\"devices_count\":%d,\"sent\":%" PRIu64 ",\"health_answered\":%" PRIu64 ",\"errors_received\":%" PRIu64
          ",\"connect_failures\":%" PRIu64 ",\"write_failures\":%" PRIu64 ",\"elapsed_s\":%.3f,\"devices\":[",
          r->count, r->sent, r->health_answered, r->errors_received, r->connect_failures, r->write_failures,
          r->elapsed_s);
  for (int i = 0; i < r->count; i++) {
    const sim_device_report *d = &r->devices[i];
    fprintf(f, "%s{\"id\":\"%s\",\"sent\":%" PRIu64 ",\"seqs\":[", i ? "," : "", d->id, d->sent);
    if (d->sent) fprintf(f, "[1,%" PRIu64 "]", d->sent);
    fprintf(f, "],\"health_answered\":%" PRIu64 ",\"errors_received\":%" PRIu64 ",\"end\":\"%s\"}", d->health_answered,
            d->errors_received, sim_end_name(d->end));
  }
  fprintf(f, "]}\n");
  return fclose(f) == 0 ? 0 : -errno;
}

typedef struct run_call {
  const sim_config *cfg;
  sim_report *report;
  int result;
} run_call;

static void *run_main(void *arg) {
  run_call *rc = arg;
  sim *s;
  rc->result = sim_start(rc->cfg, &s);
  if (rc->result == 0) rc->result = sim_wait(s, rc->report);
  return NULL;
}

int sim_run(const sim_config *cfg, sim_report *report) {
  tg_runtime_opts opts = {.workers = cfg->workers > 0 ? cfg->workers : 1};
  run_call rc = {cfg, report, 0};
  int r = tg_run(&opts, run_main, &rc, NULL);
  return r != 0 ? r : rc.result;
}
