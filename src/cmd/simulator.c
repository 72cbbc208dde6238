/* simulator.c - simulated devices over TCP; see simulator.h. */
#include "simulator.h"

#include "rng.h"
#include "signals.h"
#include "stream.h"
#include "tg/tg.h"
#include "wall_clock.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

enum {
  BURST = 64, /* readings per write at most, when catching up or resending */
  LINE_CAP = 256,
  RECV_BUFFER = 4096,
  DEVICE_STACK = 32 * 1024,
  WINDOW_START = 8, /* slots a window starts with; it doubles up to max_unacked */
  /* Latency histogram: bucket i < 32 holds i microseconds; above, each
   * power of two is split in 32 buckets. */
  LATENCY_BUCKETS = 32 * 40,
};

#define FIRST_CONNECT_PATIENCE TG_SEC(10)
#define CONNECT_PATIENCE       TG_SEC(5)
/* A gateway that took no byte of a write for this long is taken for
 * gone: the device reconnects. Flow control alone never waits this long
 * on a live gateway. */
#define WRITE_PATIENCE         TG_SEC(60)
#define BACKOFF_FIRST          TG_MS(20)
#define BACKOFF_MAX            TG_SEC(1)

/* A reading the gateway has not yet made durable. */
typedef struct pending {
  protocol_telemetry r;
  int64_t first_write; /* tg_now() when it was first written; 0: not yet */
} pending;

/* The readings a device still holds, seqs generated - len + 1 .. generated
 * in order, in a ring of cap slots starting at head. With acks they are
 * the unacked ones; write-only, the ones not yet written. */
typedef struct window {
  pending *slots;
  size_t cap, head, len;
} window;

typedef struct sim_device {
  struct sim *sim;
  sim_device_report *report;
  uint64_t *latency; /* its worker's histogram, NULL without acks */
  rng rng;           /* the values: the same seed gives the same readings */
  rng jitter;        /* the backoff: its own stream, so reconnects shift no value */
  double temperature, humidity, battery;
  tg_tcp *sock;   /* NULL while disconnected */
  stream io;      /* over sock: plain or TLS */
  int acking;     /* acks asked and not refused: hold readings until acked */
  int hello_sent; /* on this connection, and no answer yet */
  int lost;       /* write-only: the connection broke, the run is over */
  int ending;     /* the run's time is over: generating stopped, acks awaited */
  window win;
  uint64_t written;             /* highest seq written on this connection (>= the window's base) */
  int64_t interval, next;       /* the schedule */
  int64_t end_at, ack_deadline; /* end of generating; of waiting for acks (once ending) */
  int64_t retry_at, backoff;    /* the next connect, while disconnected */
  int64_t blocked_since;        /* a due reading waits for room since then; 0: none */
  int64_t blocked_ns;
} sim_device;

struct sim {
  sim_config cfg;
  tg_cancel *stop;
  tg_joinset *tasks;
  sim_device *devices;
  sim_report report;
  uint64_t *latency; /* LATENCY_BUCKETS per worker, with acks */
  tls_context *tls;  /* with cfg.tls */
  atomic_int tls_failures_told, restarts_told;
  int workers;
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
  c->acks = SIM_ACKS_ON;
  c->max_unacked = 10000;
  c->ack_wait_s = 10;
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
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* --- latency histogram ------------------------------------------------- */

static size_t latency_bucket(uint64_t us) {
  if (us < 32) return (size_t)us;
  int shift = 63 - __builtin_clzll(us) - 5;
  size_t i = (size_t)(shift + 1) * 32 + (size_t)((us >> shift) - 32);
  return i < LATENCY_BUCKETS ? i : LATENCY_BUCKETS - 1;
}

/* The middle of bucket i, in microseconds. */
static double latency_bucket_us(size_t i) {
  if (i < 32) return (double)i;
  int shift = (int)(i / 32) - 1;
  return (double)((32 + i % 32) << shift) + (double)((uint64_t)1 << shift) / 2;
}

static double latency_percentile_ms(const uint64_t *counts, uint64_t total, double p) {
  if (total == 0) return 0;
  uint64_t rank = (uint64_t)ceil(p * (double)total), seen = 0;
  if (rank < 1) rank = 1;
  for (size_t i = 0; i < LATENCY_BUCKETS; i++)
    if ((seen += counts[i]) >= rank) return latency_bucket_us(i) / 1000;
  return 0;
}

/* --- the window -------------------------------------------------------- */

static pending *window_at(window *w, size_t k) { return &w->slots[(w->head + k) % w->cap]; }

static int window_push(window *w, const protocol_telemetry *r) {
  if (w->len == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : WINDOW_START;
    pending *slots = malloc(cap * sizeof *slots);
    if (!slots) return TG_ENOMEM;
    for (size_t k = 0; k < w->len; k++) slots[k] = *window_at(w, k);
    free(w->slots);
    w->slots = slots;
    w->cap = cap;
    w->head = 0;
  }
  *window_at(w, w->len++) = (pending){.r = *r};
  return 0;
}

static void window_pop(window *w) {
  w->head = (w->head + 1) % w->cap;
  w->len--;
}

/* Readings a device may hold: write-only, only those it is about to write. */
static size_t window_limit(const sim_device *d) { return d->acking ? (size_t)d->sim->cfg.max_unacked : BURST; }

/* The seq just before the window's first. */
static uint64_t window_base(const sim_device *d) { return d->report->generated - d->win.len; }

/* --- readings ---------------------------------------------------------- */

static protocol_telemetry measure(sim_device *d, int64_t ts_ms) {
  d->temperature = clamp(d->temperature + rng_range(&d->rng, -0.3, 0.3), 15.0, 35.0);
  d->humidity = clamp(d->humidity + rng_range(&d->rng, -1.0, 1.0), 20.0, 80.0);
  d->battery = clamp(d->battery - 0.01, 0.0, 100.0);
  return (protocol_telemetry){
      .seq = d->report->generated + 1,
      .ts_ms = ts_ms,
      .temperature = round(d->temperature * 100) / 100, /* short lines */
      .humidity = round(d->humidity * 100) / 100,
      .battery = (uint32_t)d->battery,
  };
}

/* Generates the readings due by now, at most a burst, while the window
 * has room; a full window blocks the device and its schedule slips. */
static void generate_due(sim_device *d, int64_t now) {
  for (int made = 0; d->next <= now && made < BURST; made++) {
    if (d->win.len >= window_limit(d)) {
      if (!d->blocked_since) d->blocked_since = now;
      return;
    }
    if (d->blocked_since) {
      d->blocked_ns += now - d->blocked_since;
      d->blocked_since = 0;
    }
    protocol_telemetry r = measure(d, d->sim->epoch_ms + (now - d->sim->t0) / 1000000);
    d->next += d->interval;
    if (window_push(&d->win, &r) != 0) continue; /* no memory: this one is skipped, the seqs stay gapless */
    d->report->generated++;
  }
  if (d->next <= now - TG_SEC(1)) d->next = now; /* far behind: no endless catching up */
}

/* Acks cover seqs <= seq: they leave the window, their latency counted. */
static void on_ack(sim_device *d, uint64_t seq) {
  if (!d->acking) return;
  if (seq > d->report->generated) seq = d->report->generated; /* a mark left by an earlier run */
  uint64_t base = window_base(d);
  if (seq <= base) return;
  int64_t now = tg_now();
  for (uint64_t s = base; s < seq; s++) {
    pending *p = window_at(&d->win, 0);
    if (p->first_write && d->latency) d->latency[latency_bucket((uint64_t)(now - p->first_write) / 1000)]++;
    window_pop(&d->win);
  }
  d->report->acked = seq;
  d->report->acks = 1;
  if (d->written < seq) d->written = seq; /* written on an earlier connection */
  d->backoff = BACKOFF_FIRST;
}

/* The gateway will not ack: what was written is done, the rest is
 * written once, and nothing is resent. */
static void stop_acking(sim_device *d) {
  d->acking = 0;
  d->report->acks = 0;
  while (window_base(d) < d->written) window_pop(&d->win);
}

/* --- the connection ---------------------------------------------------- */

/* The hello this device sends, or 0 bytes: nothing to ask for. */
static int format_hello(char *buf, size_t cap, const sim_config *c) {
  protocol_hello h = {.acks = c->acks == SIM_ACKS_ON, .health = c->health == SIM_HEALTH_ANSWER};
  return h.acks || h.health ? protocol_format_hello(buf, cap, &h) : 0;
}

static int connect_gateway(sim_device *d, int64_t deadline) {
  const sim_config *c = &d->sim->cfg;
  int r = tg_tcp_connect_dl(&d->sock, c->host, c->port, deadline);
  if (r != 0) return r;
  char err[256];
  stream_opts o = {.tls = d->sim->tls, .host = c->host, .recv_buffer = RECV_BUFFER, .deadline_ns = deadline};
  if ((r = stream_open(&d->io, d->sock, &o, err, sizeof err)) != 0) {
    if (atomic_fetch_add(&d->sim->tls_failures_told, 1) == 0) /* the same reason for every device: once */
      fprintf(stderr, "telegate devices: %s: %s\n", d->report->id, err);
    tg_tcp_close(d->sock);
    d->sock = NULL;
    return r;
  }
  char hello[LINE_CAP];
  int n = format_hello(hello, sizeof hello, c);
  d->hello_sent = n > 0;
  if (n > 0 && (r = stream_write_dl(&d->io, hello, (size_t)n, deadline)) != 0) {
    stream_close(&d->io, 0);
    tg_tcp_close(d->sock);
    d->sock = NULL;
    return r;
  }
  d->written = window_base(d); /* everything held is written again */
  return 0;
}

/* The connection broke. Write-only, the run ends with it; with acks the
 * device reconnects after a jittered backoff. */
static void drop_connection(sim_device *d, sim_end why) {
  stream_close(&d->io, 0);
  tg_tcp_close(d->sock);
  d->sock = NULL;
  d->hello_sent = 0;
  if (!d->acking) {
    d->report->end = why;
    d->lost = 1;
    return;
  }
  d->retry_at = tg_now() + d->backoff / 2 + (int64_t)((double)d->backoff / 2 * rng_unit(&d->jitter));
  d->backoff = min64(d->backoff * 2, BACKOFF_MAX);
}

static int64_t write_deadline(const sim_device *d) {
  if (!d->acking) return TG_FOREVER; /* as before acks: the kernel tells when the peer is gone */
  int64_t dl = tg_deadline_in(WRITE_PATIENCE);
  return d->ending ? min64(dl, d->ack_deadline) : dl;
}

/* Writes the next burst of held readings after d->written. */
static int write_burst(sim_device *d, char *buf) {
  const sim_config *c = &d->sim->cfg;
  uint64_t base = window_base(d);
  size_t from = (size_t)(d->written - base), len = 0;
  int n = 0;
  for (size_t k = from; k < d->win.len && n < BURST; k++, n++) {
    int w = protocol_format_reading(buf + len, LINE_CAP, c->format, d->report->id, &window_at(&d->win, k)->r);
    if (w < 0) return w;
    len += (size_t)w;
  }
  int64_t now = tg_now();
  int r = stream_write_dl(&d->io, buf, len, write_deadline(d));
  if (r != 0) return r;
  for (size_t k = from; k < from + (size_t)n; k++) {
    pending *p = window_at(&d->win, k);
    if (p->first_write)
      d->report->resent++;
    else
      p->first_write = now;
  }
  d->written += (uint64_t)n;
  if (!d->acking)
    while (d->win.len) window_pop(&d->win);
  return 0;
}

/* The unsigned integer member `key` ("\"seq\":") of a line cJSON found
 * well-formed, exact to 64 bits where cJSON's double is exact to 53. Keys
 * cannot hide in the gateway's strings: device ids hold no quote. */
static int member_u64(const char *p, size_t n, const char *key, uint64_t *out) {
  size_t k = strlen(key);
  for (size_t i = 0; i + k < n; i++)
    if (memcmp(p + i, key, k) == 0) {
      const char *q = p + i + k;
      while (q < p + n && (*q == ' ' || *q == '\t')) q++;
      if (q == p + n || *q < '0' || *q > '9') return -1;
      for (*out = 0; q < p + n && *q >= '0' && *q <= '9'; q++) *out = *out * 10 + (uint64_t)(*q - '0');
      return 0;
    }
  return -1;
}

/* One line from the gateway. Returns 0 or the error of a failed write. */
static int on_gateway_line(sim_device *d, const char *p, size_t n) {
  cJSON *o = cJSON_ParseWithLength(p, n);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
  int r = 0;
  if (!cJSON_IsString(type)) {
    cJSON_Delete(o);
    return 0;
  }
  const char *t = type->valuestring;
  if (strcmp(t, "ack") == 0) {
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(o, "device");
    uint64_t seq;
    if (cJSON_IsString(dev) && strcmp(dev->valuestring, d->report->id) == 0 && member_u64(p, n, "\"seq\":", &seq) == 0)
      on_ack(d, seq);
  } else if (strcmp(t, "health") == 0) {
    uint64_t id;
    if (d->sim->cfg.health == SIM_HEALTH_ANSWER && member_u64(p, n, "\"id\":", &id) == 0) {
      char line[LINE_CAP];
      protocol_health_reply h = {
          .id = id, .uptime_s = (uint64_t)((tg_now() - d->sim->t0) / TG_SEC(1)), .battery = (uint32_t)d->battery};
      int len = protocol_format_health_reply(line, sizeof line, &h);
      if (len > 0 && (r = stream_write_dl(&d->io, line, (size_t)len, write_deadline(d))) == 0)
        d->report->health_answered++;
    }
  } else if (strcmp(t, "hello") == 0) {
    d->hello_sent = 0;
    if (d->acking && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "acks")))
      stop_acking(d);
    else if (d->acking)
      d->report->acks = 1;
    d->backoff = BACKOFF_FIRST;
  } else if (strcmp(t, "error") == 0) {
    const cJSON *line = cJSON_GetObjectItemCaseSensitive(o, "line");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(o, "reason");
    if (d->hello_sent && cJSON_IsNumber(line) && line->valuedouble == 1 && cJSON_IsString(reason) &&
        strcmp(reason->valuestring, "unknown_type") == 0) {
      d->hello_sent = 0; /* a gateway from before hello */
      if (d->acking) stop_acking(d);
    } else {
      d->report->errors_received++;
      if (cJSON_IsString(reason) && strcmp(reason->valuestring, "seq_restarted") == 0 &&
          atomic_fetch_add(&d->sim->restarts_told, 1) == 0)
        fprintf(stderr,
                "telegate devices: the gateway refuses %s's readings as seq_restarted: it has readings of that id "
                "with higher seqs from an earlier run; use another --id-prefix\n",
                d->report->id);
    }
  }
  cJSON_Delete(o);
  return r;
}

/* Handles the complete lines of v. Returns 0 or the error of a failed
 * write, and then leaves the socket to be closed. */
static int on_input(sim_device *d, tg_tcp_view v) {
  size_t used = 0;
  const char *nl;
  /* Copy first: answering writes, and the view must not be held across it. */
  char *copy = malloc(v.len ? v.len : 1);
  if (!copy) return TG_ENOMEM;
  memcpy(copy, v.data, v.len);
  while ((nl = memchr(copy + used, '\n', v.len - used))) {
    size_t n = (size_t)(nl - (copy + used));
    used += n + 1;
    int r = on_gateway_line(d, nl - n, n);
    if (r != 0) {
      free(copy);
      return r;
    }
  }
  stream_consume(&d->io, used);
  free(copy);
  return 0;
}

/* Reads what the gateway has sent, without waiting; drops a connection
 * that ended. */
static void read_pending(sim_device *d) {
  tg_tcp_view v;
  int r;
  while (d->sock && (r = stream_recv_dl(&d->io, &v, 0)) != TG_ETIMEDOUT)
    if (r != 0 || on_input(d, v) != 0) drop_connection(d, r == 0 ? SIM_END_ERROR : SIM_END_CLOSED);
}

/* Reads what the gateway sent and closes, so the close is a clean FIN:
 * a socket closed with unread bytes is reset. */
static void hang_up(sim_device *d) {
  tg_tcp_view v;
  while (stream_recv_dl(&d->io, &v, 0) == 0 && on_input(d, v) == 0) {
  }
  stream_close(&d->io, 0);
  tg_tcp_close(d->sock);
  d->sock = NULL;
}

/* Waits for input, the stop, the next due reading, the end or the next
 * connect, whichever comes first. */
static void wait_event(sim_device *d) {
  int64_t deadline = d->ack_deadline;
  if (!d->ending) {
    deadline = d->end_at;
    if (d->win.len < window_limit(d)) deadline = min64(deadline, d->next);
  }
  if (!d->sock) deadline = min64(deadline, d->retry_at);
  tg_case cs[2];
  tg_tcp_view v;
  int n = 0, recv_case = -1;
  if (d->sock && stream_ready(&d->io)) return; /* TLS: decrypted bytes wait, read_pending takes them */
  if (!d->ending) cs[n++] = tg_cancel_case(d->sim->stop);
  if (d->sock) {
    recv_case = n;
    cs[n++] = stream_recv_case(&d->io);
  }
  if (n == 0) {
    tg_sleep_until(deadline);
    return;
  }
  int w = tg_select(cs, n, deadline);
  if (w == recv_case) {
    int r = stream_recv_dl(&d->io, &v, 0); /* TG_ETIMEDOUT: part of a TLS record */
    if (r != TG_ETIMEDOUT && (r != 0 || on_input(d, v) != 0))
      drop_connection(d, r == 0 ? SIM_END_ERROR : SIM_END_CLOSED);
  }
}

static void *device_task(void *arg) {
  sim_device *d = arg;
  sim *s = d->sim;
  const sim_config *c = &s->cfg;
  sim_device_report *rep = d->report;
  if (connect_gateway(d, tg_deadline_in(FIRST_CONNECT_PATIENCE)) != 0) {
    rep->end = SIM_END_CONNECT;
    return NULL;
  }
  d->interval = (int64_t)(1e9 / c->rate_hz);
  if (d->interval < 1) d->interval = 1;
  d->next = tg_now() + (int64_t)((double)d->interval * rng_unit(&d->rng));
  d->end_at = tg_now() + (int64_t)(c->duration_s * 1e9); /* its own time, from its connection */
  char *buf = malloc(BURST * LINE_CAP);
  rep->end = SIM_END_DURATION;
  while (buf && !d->lost) {
    if (d->sock) read_pending(d); /* acks first: they may end the wait at the end */
    if (d->lost) break;
    int64_t now = tg_now();
    if (!d->ending && (now >= d->end_at || tg_cancel_fired(s->stop))) {
      d->ending = 1;
      d->ack_deadline = now + (int64_t)(c->ack_wait_s * 1e9);
      if (d->blocked_since) d->blocked_ns += now - d->blocked_since;
      d->blocked_since = 0;
      if (now < d->end_at) rep->end = SIM_END_STOPPED;
    }
    if (d->ending && (d->win.len == 0 || !d->acking || now >= d->ack_deadline)) break;
    if (!d->ending) generate_due(d, now);
    if (!d->sock && now >= d->retry_at) {
      int64_t dl = now + CONNECT_PATIENCE;
      if (connect_gateway(d, d->ending ? min64(dl, d->ack_deadline) : dl) == 0)
        rep->reconnects++;
      else
        drop_connection(d, SIM_END_CLOSED);
      continue;
    }
    if (d->sock && d->written < rep->generated) {
      int r = write_burst(d, buf);
      if (r != 0) drop_connection(d, SIM_END_ERROR);
      continue;
    }
    wait_event(d);
  }
  if (d->sock) hang_up(d);
  rep->sent = rep->generated;
  rep->blocked_ms = (uint64_t)(d->blocked_ns / 1000000);
  free(buf);
  return NULL;
}

int sim_start(const sim_config *cfg, sim **out) {
  *out = NULL;
  if (cfg->count < 1 || !(cfg->rate_hz > 0) || !(cfg->duration_s > 0) || !cfg->id_prefix ||
      strlen(cfg->id_prefix) + 10 > PROTOCOL_DEVICE_ID_MAX || cfg->max_unacked < 1 || !(cfg->ack_wait_s >= 0))
    return TG_EINVAL;
  sim *s = calloc(1, sizeof *s);
  if (!s) return TG_ENOMEM;
  s->cfg = *cfg;
  s->devices = calloc((size_t)cfg->count, sizeof *s->devices);
  s->report.devices = calloc((size_t)cfg->count, sizeof *s->report.devices);
  s->report.count = cfg->count;
  s->workers = cfg->workers > 0 ? cfg->workers : 1;
  if (cfg->acks == SIM_ACKS_ON) s->latency = calloc((size_t)s->workers * LATENCY_BUCKETS, sizeof *s->latency);
  int nomem = !s->devices || !s->report.devices || (cfg->acks == SIM_ACKS_ON && !s->latency);
  if (nomem || tg_cancel_new(&s->stop, "sim-stop") != 0 || tg_joinset_new(&s->tasks, "devices") != 0) {
    if (s->stop) tg_cancel_free(s->stop);
    free(s->devices);
    free(s->latency);
    sim_report_free(&s->report);
    free(s);
    return TG_ENOMEM;
  }
  if (cfg->tls) {
    char err[300];
    tls_options to = {
        .cert_file = cfg->tls_cert, .key_file = cfg->tls_key, .ca_file = cfg->tls_ca, .insecure = cfg->tls_insecure};
    int r = tls_context_new(&s->tls, &to, err, sizeof err);
    if (r != 0) {
      fprintf(stderr, "telegate devices: %s\n", err);
      tg_joinset_free(s->tasks);
      tg_cancel_free(s->stop);
      free(s->devices);
      free(s->latency);
      sim_report_free(&s->report);
      free(s);
      return r;
    }
  }
  signal(SIGPIPE, SIG_IGN); /* a write to a closed connection is an error, not the end of the process */
  struct rlimit rl;         /* a descriptor per device */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  s->t0 = tg_now();
  s->epoch_ms = wall_clock_ms();
  for (int i = 0; i < cfg->count; i++) {
    sim_device *d = &s->devices[i];
    d->sim = s;
    d->report = &s->report.devices[i];
    snprintf(d->report->id, sizeof d->report->id, "%s%d", cfg->id_prefix, i + 1);
    d->rng = rng_stream(cfg->seed, 1000 + (uint64_t)i);
    d->jitter = rng_stream(cfg->seed, 1000000000 + (uint64_t)i);
    d->temperature = rng_range(&d->rng, 19, 27);
    d->humidity = rng_range(&d->rng, 35, 60);
    d->battery = rng_range(&d->rng, 70, 100);
    d->acking = cfg->acks == SIM_ACKS_ON;
    d->backoff = BACKOFF_FIRST;
    if (s->latency) d->latency = &s->latency[(size_t)(i % s->workers) * LATENCY_BUCKETS];
    tg_spawn_opts opts = {.stack_size = DEVICE_STACK, .pin = 1, .worker = i % s->workers, .name = "sim-device"};
    if (tg_joinset_spawn(s->tasks, device_task, d, &opts, NULL) != 0) d->report->end = SIM_END_CONNECT;
  }
  *out = s;
  return 0;
}

void sim_stop(sim *s) { tg_cancel_fire(s->stop); }

/* Waits for every device to end. */
static void sim_join(sim *s) {
  tg_outcome o;
  while (tg_joinset_join_next(s->tasks, &o) == 0) {
  }
}

/* Totals, the verdict and the report; frees s. */
static int sim_finish(sim *s, sim_report *report) {
  sim_report *r = &s->report;
  r->elapsed_s = (double)(tg_now() - s->t0) / 1e9;
  uint64_t latency_n = 0; /* the workers' histograms, added up into the first */
  for (size_t b = 0; s->latency && b < (size_t)s->workers * LATENCY_BUCKETS; b++) {
    if (b >= LATENCY_BUCKETS) s->latency[b % LATENCY_BUCKETS] += s->latency[b];
    latency_n += s->latency[b];
  }
  int unacked_devices = 0;
  for (int i = 0; i < r->count; i++) {
    sim_device_report *d = &r->devices[i];
    free(s->devices[i].win.slots);
    r->generated += d->generated;
    r->sent += d->sent;
    r->resent += d->resent;
    r->reconnects += d->reconnects;
    r->blocked_ms += d->blocked_ms;
    r->health_answered += d->health_answered;
    r->errors_received += d->errors_received;
    r->connect_failures += d->end == SIM_END_CONNECT;
    r->write_failures += d->end == SIM_END_ERROR;
    if (s->devices[i].acking && d->end != SIM_END_CONNECT) {
      d->acks = 1;
      r->acking_devices++;
      r->acked += d->acked;
      r->unacked += d->generated - d->acked;
      unacked_devices += d->generated > d->acked;
    }
  }
  r->latency_p50_ms = s->latency ? latency_percentile_ms(s->latency, latency_n, 0.50) : 0;
  r->latency_p99_ms = s->latency ? latency_percentile_ms(s->latency, latency_n, 0.99) : 0;
  free(s->latency);
  int ok = r->connect_failures == 0 && r->write_failures == 0 && r->unacked == 0;
  FILE *out = s->cfg.out ? s->cfg.out : stdout;
  if (!s->cfg.quiet) {
    fprintf(out,
            "telegate devices: %d devices generated %" PRIu64 " readings in %.3f s; %d acking devices had %" PRIu64
            " acked (p50 %.1f ms, p99 %.1f ms from first write), %" PRIu64 " resent, %" PRIu64
            " reconnects, blocked %" PRIu64 " ms; answered %" PRIu64 " health checks, got %" PRIu64
            " error lines; %" PRIu64 " could not connect, %" PRIu64 " writes failed\n",
            r->count, r->generated, r->elapsed_s, r->acking_devices, r->acked, r->latency_p50_ms, r->latency_p99_ms,
            r->resent, r->reconnects, r->blocked_ms, r->health_answered, r->errors_received, r->connect_failures,
            r->write_failures);
    if (s->cfg.acks == SIM_ACKS_ON && r->acking_devices < r->count - (int)r->connect_failures)
      fprintf(out, "telegate devices: the gateway refused acks to %d devices; their readings were written once\n",
              r->count - (int)r->connect_failures - r->acking_devices);
  }
  if (r->unacked)
    fprintf(stderr,
            "telegate devices: %" PRIu64 " of %" PRIu64 " readings unacked after %.1f s of waiting (%d devices)\n",
            r->unacked, r->generated, s->cfg.ack_wait_s, unacked_devices);
  if (s->cfg.report_json && sim_report_write_json(r, s->cfg.report_json) != 0) {
    fprintf(stderr, "telegate devices: cannot write %s\n", s->cfg.report_json);
    ok = 0;
  }
  if (report)
    *report = *r;
  else
    sim_report_free(r);
  tg_joinset_free(s->tasks);
  tg_cancel_free(s->stop);
  tls_context_free(s->tls);
  free(s->devices);
  free(s);
  return ok ? 0 : 1;
}

int sim_wait(sim *s, sim_report *report) {
  sim_join(s);
  return sim_finish(s, report);
}

void sim_report_free(sim_report *r) {
  free(r->devices);
  r->devices = NULL;
}

int sim_report_write_json(const sim_report *r, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return -errno;
  fprintf(f,
          "{\"devices_count\":%d,\"generated\":%" PRIu64 ",\"sent\":%" PRIu64
          ",\"acking_devices\":%d,\"acked\":%" PRIu64 ",\"unacked\":%" PRIu64 ",\"resent\":%" PRIu64
          ",\"reconnects\":%" PRIu64 ",\"blocked_ms\":%" PRIu64
          ",\"ack_latency_ms\":{\"p50\":%.3f,\"p99\":%.3f},\"health_answered\":%" PRIu64 ",\"errors_received\":%" PRIu64
          ",\"connect_failures\":%" PRIu64 ",\"write_failures\":%" PRIu64 ",\"elapsed_s\":%.3f,\"devices\":[",
          r->count, r->generated, r->sent, r->acking_devices, r->acked, r->unacked, r->resent, r->reconnects,
          r->blocked_ms, r->latency_p50_ms, r->latency_p99_ms, r->health_answered, r->errors_received,
          r->connect_failures, r->write_failures, r->elapsed_s);
  for (int i = 0; i < r->count; i++) {
    const sim_device_report *d = &r->devices[i];
    fprintf(f, "%s{\"id\":\"%s\",\"generated\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"seqs\":[", i ? "," : "", d->id,
            d->generated, d->sent);
    if (d->generated) fprintf(f, "[1,%" PRIu64 "]", d->generated);
    fprintf(f,
            "],\"acks\":%s,\"acked\":%" PRIu64 ",\"unacked\":%" PRIu64 ",\"resent\":%" PRIu64 ",\"reconnects\":%" PRIu64
            ",\"blocked_ms\":%" PRIu64 ",\"health_answered\":%" PRIu64 ",\"errors_received\":%" PRIu64
            ",\"end\":\"%s\"}",
            d->acks ? "true" : "false", d->acked, d->acks ? d->generated - d->acked : 0, d->resent, d->reconnects,
            d->blocked_ms, d->health_answered, d->errors_received, sim_end_name(d->end));
  }
  fprintf(f, "]}\n");
  return fclose(f) == 0 ? 0 : -errno;
}

typedef struct run_call {
  const sim_config *cfg;
  sim_report *report;
  int result;
} run_call;

static void on_signal(void *ctx, int signo) {
  (void)signo;
  sim_stop(ctx);
}

static void *run_main(void *arg) {
  run_call *rc = arg;
  sim *s;
  rc->result = sim_start(rc->cfg, &s);
  if (rc->result != 0) return NULL;
  signal_watch sw;
  int watching = signal_watch_start(&sw, on_signal, s) == 0;
  sim_join(s);
  if (watching) signal_watch_stop(&sw); /* before s is freed: no late sim_stop */
  rc->result = sim_finish(s, rc->report);
  return NULL;
}

int sim_run(const sim_config *cfg, sim_report *report) {
  tg_runtime_opts opts = {.workers = cfg->workers > 0 ? cfg->workers : 1};
  run_call rc = {cfg, report, 0};
  int r = tg_run(&opts, run_main, &rc, NULL);
  return r != 0 ? r : rc.result;
}
