/* test-http.h - what the HTTP tests share: a pipeline stand-in made of the
 * real parts (a watch and a broadcast of real snapshots built by
 * snapshot_new, the api started on port 0), and clients over loopback
 * that parse responses with http_parser and event streams line by line.
 *
 * The stand-in answers the api's callbacks as serve does (serve.h): its
 * figures are a struct the test sets, and its health checks answer by
 * device id: "1".."9" ok, "slow" after the timeout (TG_ETIMEDOUT), "gone"
 * disconnected (TG_ECLOSED), anything else unknown (-ENOENT). */
#ifndef TELEGATE_TEST_HTTP_H
#define TELEGATE_TEST_HTTP_H

#include "api.h"
#include "helpers.h"
#include "http_buf.h"
#include "schema.h"
#include "snapshot.h"

#include <errno.h>
#include <http_parser.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FX_MAX_DEVICES 256

typedef struct fixture {
  snapshot_counters counters;
  tg_watch_tx *latest;
  tg_broadcast_tx *updates;
  uint64_t version;
  uint32_t ndevices;
  device_metrics devices[FX_MAX_DEVICES];
  int closed;            /* the pipeline ended: subscribe fails */
  serve_figures figures; /* what deps.figures reports */
  int no_figures;        /* start the api without deps.figures */
  atomic_int clients;    /* what deps.clients_add counted */
  api_config cfg;
  api_server *api;
  int port;
} fixture;

static int fx_subscribe(void *ctx, tg_watch_rx **latest, tg_broadcast_rx **updates) {
  fixture *f = ctx;
  if (f->closed) return TG_ECLOSED;
  if (latest) ck_assert_int_eq(tg_watch_subscribe(f->latest, latest), 0);
  if (updates) ck_assert_int_eq(tg_broadcast_subscribe(f->updates, updates), 0);
  return 0;
}

static void fx_figures(void *ctx, serve_figures *out) { *out = ((fixture *)ctx)->figures; }

static int fx_health(void *ctx, const char *id, int64_t timeout_ns, device_status *out) {
  (void)ctx;
  if (strlen(id) == 1 && id[0] >= '1' && id[0] <= '9') {
    *out = (device_status){.device = (uint32_t)(id[0] - '0'), .battery = 80, .uptime_ms = 12345, .readings = 7};
    return 0;
  }
  if (strcmp(id, "slow") == 0) {
    tg_sleep(timeout_ns); /* no answer comes */
    return TG_ETIMEDOUT;
  }
  if (strcmp(id, "gone") == 0) return TG_ECLOSED;
  return -ENOENT;
}

static void fx_clients_add(void *ctx, int delta) { atomic_fetch_add(&((fixture *)ctx)->clients, delta); }

/* Channels, an initial empty snapshot (version 0) and the config's
 * defaults on port 0; the caller may change f->cfg, then fx_start. */
static inline void fx_init(fixture *f, size_t broadcast_capacity, uint32_t ndevices) {
  memset(f, 0, sizeof *f);
  ck_assert_uint_le(ndevices, FX_MAX_DEVICES);
  f->ndevices = ndevices;
  for (uint32_t i = 0; i < ndevices; i++)
    f->devices[i] = (device_metrics){.device = i + 1,
                                     .field_name = {SCHEMA_TEMPERATURE, SCHEMA_HUMIDITY, SCHEMA_BATTERY},
                                     .field_type = {FIELD_FLOAT, FIELD_FLOAT, FIELD_INT},
                                     .field_count = {1, 1, 1},
                                     .field_value = {21.5, 48.25, 90}};
  system_snapshot *s0 = snapshot_new(&f->counters, 0, 0, 0, f->devices, ndevices);
  ck_assert_ptr_nonnull(s0);
  tg_watch_opts wo = {
      .elem_size = sizeof s0, .clone = snapshot_elem_clone, .drop = snapshot_elem_drop, .name = "latest"};
  ck_assert_int_eq(tg_watch_new(&wo, &s0, &f->latest, NULL), 0);
  tg_broadcast_opts bo = {.capacity = broadcast_capacity,
                          .elem_size = sizeof s0,
                          .clone = snapshot_elem_clone,
                          .drop = snapshot_elem_drop,
                          .name = "updates"};
  ck_assert_int_eq(tg_broadcast_new(&bo, &f->updates, NULL), 0);
  api_config_defaults(&f->cfg);
  f->cfg.http.port = 0;
  f->cfg.sse_pipeline_ms = 0; /* streams carry snapshots only unless a test asks */
  f->cfg.allowed_hosts = "t"; /* the tests' requests say Host: t */
}

static inline void fx_start(fixture *f) {
  api_deps d = {.ctx = f,
                .subscribe = fx_subscribe,
                .figures = f->no_figures ? NULL : fx_figures,
                .health_check = fx_health,
                .clients_add = fx_clients_add};
  ck_assert_int_eq(api_server_start(&f->api, &f->cfg, &d), 0);
  f->port = api_server_port(f->api);
  ck_assert_int_gt(f->port, 0);
}

/* The aggregator's step: every device gets one more reading, and the new
 * snapshot goes to the watch and the broadcast. Returns its version. */
static inline uint64_t fx_publish(fixture *f) {
  f->version++;
  int64_t at = (int64_t)f->version * 10;
  for (uint32_t i = 0; i < f->ndevices; i++) {
    device_metrics *m = &f->devices[i];
    m->count++;
    m->last_seq = m->count;
    m->last_seen_ms = at;
    m->field_value[0] = 20.0 + (double)((f->version + i) % 50) / 10.0; /* temperature */
  }
  system_snapshot *s = snapshot_new(&f->counters, f->version, at, f->version * f->ndevices, f->devices, f->ndevices);
  ck_assert_ptr_nonnull(s);
  snapshot_ref(s);
  tg_watch_send(f->latest, &s);
  if (tg_broadcast_send(f->updates, &s, NULL) != 0) snapshot_unref(s); /* no receiver */
  return f->version;
}

/* The aggregator's end: both senders dropped, streams drain and end. */
static inline void fx_close(fixture *f) {
  if (f->closed) return;
  f->closed = 1;
  tg_broadcast_tx_drop(f->updates);
  tg_watch_tx_drop(f->latest);
}

/* Stops the api and checks that every snapshot was freed. */
static inline void fx_stop(fixture *f) {
  api_server_stop(f->api);
  fx_close(f);
  ck_assert_uint_eq(atomic_load(&f->counters.built), atomic_load(&f->counters.freed));
  ck_assert_int_eq(atomic_load(&f->clients), 0);
}

/* ------------------------------------------------------------ a client */

#define CL_MAX_RESPONSES 8

typedef struct response {
  int status;
  char content_type[96], connection[32], allow[64], content_length[24];
  http_buf body;
} response;

typedef struct client {
  tg_tcp *sock;
  http_parser parser;
  unsigned head; /* bit i: response i answers a HEAD, so has no body */
  response r[CL_MAX_RESPONSES];
  int done; /* complete responses */
  char field[64];
  char *value; /* where the current header's value goes, or NULL */
  size_t value_cap;
} client;

static int cl_on_status(http_parser *p, const char *at, size_t len) {
  (void)at;
  (void)len;
  client *c = p->data;
  c->r[c->done].status = (int)p->status_code;
  return 0;
}

static int cl_on_field(http_parser *p, const char *at, size_t len) {
  client *c = p->data;
  snprintf(c->field, sizeof c->field, "%.*s", (int)len, at);
  response *r = &c->r[c->done];
  c->value = NULL;
  if (strcasecmp(c->field, "content-type") == 0) c->value = r->content_type, c->value_cap = sizeof r->content_type;
  if (strcasecmp(c->field, "connection") == 0) c->value = r->connection, c->value_cap = sizeof r->connection;
  if (strcasecmp(c->field, "allow") == 0) c->value = r->allow, c->value_cap = sizeof r->allow;
  if (strcasecmp(c->field, "content-length") == 0)
    c->value = r->content_length, c->value_cap = sizeof r->content_length;
  return 0;
}

static int cl_on_value(http_parser *p, const char *at, size_t len) {
  client *c = p->data;
  if (c->value) snprintf(c->value, c->value_cap, "%.*s", (int)len, at);
  return 0;
}

static int cl_on_headers_complete(http_parser *p) {
  client *c = p->data;
  c->r[c->done].status = (int)p->status_code;
  return (c->head >> c->done) & 1; /* 1: no body follows */
}

static int cl_on_body(http_parser *p, const char *at, size_t len) {
  client *c = p->data;
  http_buf_append(&c->r[c->done].body, at, len);
  return 0;
}

static int cl_on_complete(http_parser *p) {
  client *c = p->data;
  if (!c->r[c->done].body.data) http_buf_append(&c->r[c->done].body, "", 0);
  c->done++;
  return 0;
}

static http_parser_settings cl_settings = {
    .on_status = cl_on_status,
    .on_header_field = cl_on_field,
    .on_header_value = cl_on_value,
    .on_headers_complete = cl_on_headers_complete,
    .on_body = cl_on_body,
    .on_message_complete = cl_on_complete,
};

static inline void cl_connect(client *c, int port) {
  memset(c, 0, sizeof *c);
  ck_assert_int_eq(tg_tcp_connect(&c->sock, "127.0.0.1", port), 0);
  http_parser_init(&c->parser, HTTP_RESPONSE);
  c->parser.data = c;
}

static inline void cl_reset(client *c) {
  for (int i = 0; i < CL_MAX_RESPONSES; i++) {
    http_buf_free(&c->r[i].body);
    memset(&c->r[i], 0, sizeof c->r[i]);
  }
  c->done = 0;
}

static inline void cl_close(client *c) {
  cl_reset(c);
  if (c->sock) tg_tcp_close(c->sock);
  c->sock = NULL;
}

static inline void cl_send(client *c, const char *raw) { ck_assert_int_eq(tg_tcp_write(c->sock, raw, strlen(raw)), 0); }

/* Reads until n responses are complete (within 10 s). Returns 0, or the
 * socket's error (TG_EOF when the server closed first). */
static inline int cl_read(client *c, int n) {
  int64_t deadline = tg_deadline_in(TG_SEC(10));
  while (c->done < n) {
    const char *data;
    size_t len;
    int r = tg_tcp_recv_dl(c->sock, &data, &len, deadline);
    if (r == TG_EOF) http_parser_execute(&c->parser, &cl_settings, NULL, 0); /* a close-delimited body ends */
    if (r != 0) return c->done >= n ? 0 : r;
    size_t used = http_parser_execute(&c->parser, &cl_settings, data, len);
    ck_assert_msg(used == len, "bad response: %s", http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
    tg_tcp_consume(c->sock, len);
  }
  return 0;
}

/* Waits for the server to close the connection: 0 on EOF or a reset. */
static inline int cl_wait_closed(client *c) {
  int64_t deadline = tg_deadline_in(TG_SEC(10));
  for (;;) {
    const char *data;
    size_t len;
    int r = tg_tcp_recv_dl(c->sock, &data, &len, deadline);
    if (r == TG_EOF || r == -ECONNRESET) return 0;
    if (r != 0) return r;
    tg_tcp_consume(c->sock, len);
  }
}

/* One request on a fresh connection; the response is c->r[0]. */
static inline void cl_request(client *c, int port, const char *raw) {
  cl_connect(c, port);
  c->head = strncmp(raw, "HEAD ", 5) == 0 ? 1u : 0u;
  cl_send(c, raw);
  ck_assert_int_eq(cl_read(c, 1), 0);
}

/* ------------------------------------------------------------ events */

typedef struct sse_event {
  char event[16];
  uint64_t id;
  char *data; /* owned */
} sse_event;

typedef struct sse_reader {
  http_buf pending; /* bytes of an event not complete yet */
  int comments;
  int retry_ms;
} sse_reader;

/* Takes the complete events out of r->pending, calling fn for each. */
static inline void sse_parse(sse_reader *r, void (*fn)(void *arg, sse_event *e), void *arg) {
  for (;;) {
    char *end = r->pending.len ? strstr(r->pending.data, "\n\n") : NULL;
    if (!end) return;
    *end = '\0';
    sse_event e = {0};
    int fields = 0;
    for (char *line = r->pending.data, *next; line; line = next) {
      next = strchr(line, '\n');
      if (next) *next++ = '\0';
      if (line[0] == ':')
        r->comments++;
      else if (strncmp(line, "event: ", 7) == 0)
        snprintf(e.event, sizeof e.event, "%s", line + 7), fields++;
      else if (strncmp(line, "id: ", 4) == 0)
        e.id = strtoull(line + 4, NULL, 10), fields++;
      else if (strncmp(line, "data: ", 6) == 0)
        e.data = strdup(line + 6), fields++;
      else if (strncmp(line, "retry: ", 7) == 0)
        r->retry_ms = atoi(line + 7);
      else
        ck_abort_msg("unexpected stream line: %s", line);
    }
    if (fields) {
      if (!e.event[0]) snprintf(e.event, sizeof e.event, "message");
      fn(arg, &e);
    }
    free(e.data);
    size_t used = (size_t)(end + 2 - r->pending.data);
    memmove(r->pending.data, end + 2, r->pending.len - used);
    r->pending.len -= used;
    r->pending.data[r->pending.len] = '\0';
  }
}

#endif
