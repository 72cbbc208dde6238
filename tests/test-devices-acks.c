/* test-devices-acks.c - `telegate devices` as the reference client of
 * acks, against a gateway written here line by line: the hello it sends,
 * readings held until acked and resent byte for byte after a broken
 * connection, a full window that blocks generating but not answering
 * health requests, a gateway that does not know hello, and a run whose
 * last readings were never acked. */
#include "test-serve.h"

#include <cjson/cJSON.h>

#define PATIENCE TG_SEC(30)

/* The seq of a JSON reading line; -1 for any other line. */
static int64_t reading_seq(const char *line) {
  cJSON *o = cJSON_Parse(line);
  const cJSON *seq = cJSON_GetObjectItemCaseSensitive(o, "seq");
  int64_t r = cJSON_GetObjectItemCaseSensitive(o, "device") && cJSON_IsNumber(seq) ? (int64_t)seq->valuedouble : -1;
  cJSON_Delete(o);
  return r;
}

static void send_ack(raw_device *c, const char *id, int64_t seq) {
  char line[128];
  snprintf(line, sizeof line, "{\"type\":\"ack\",\"device\":\"%s\",\"seq\":%lld}\n", id, (long long)seq);
  raw_send(c, line);
}

/* The next line, which must come within PATIENCE. */
static void next_line(raw_device *c) {
  int r = raw_read_line(c, PATIENCE);
  ck_assert_msg(r == 0, "reading a line: %s", tg_err_name(r));
}

/* The next line, which must be the reading with this seq. */
static void expect_reading(raw_device *c, int64_t seq) {
  next_line(c);
  ck_assert_msg(reading_seq(c->line) == seq, "wanted reading %lld, got '%s'", (long long)seq, c->line);
}

static void accept_device(tg_tcp *listener, raw_device *c) {
  memset(c, 0, sizeof *c);
  ck_assert_int_eq(tg_tcp_accept_dl(listener, &c->sock, tg_deadline_in(PATIENCE)), 0);
  ck_assert_int_eq(tg_tcp_set_recv_buffer(c->sock, sizeof c->buf / 2), 0); /* what recv shows fits in buf */
}

/* Acks every reading until the device hangs up; returns the readings. */
static uint64_t ack_until_eof(raw_device *c, const char *id) {
  uint64_t n = 0;
  int r;
  while ((r = raw_read_line(c, PATIENCE)) == 0) {
    int64_t seq = reading_seq(c->line);
    if (seq >= 0) {
      n++;
      send_ack(c, id, seq);
    }
  }
  ck_assert_msg(r == TG_EOF, "waiting for the hang-up: %s", tg_err_name(r));
  return n;
}

typedef struct fake {
  tg_tcp *listener;
  sim_config sc;
  sim *sm;
  sim_report rep;
  int verdict;
} fake;

static void fake_start(fake *f) {
  ck_assert_int_eq(tg_tcp_listen(&f->listener, "127.0.0.1", 0, 16), 0);
  f->sc.port = tg_tcp_port(f->listener);
  ck_assert_int_eq(sim_start(&f->sc, &f->sm), 0);
}

static void fake_finish(fake *f) {
  f->verdict = sim_wait(f->sm, &f->rep);
  tg_tcp_close(f->listener);
}

static void fake_init(fake *f, int devices, double rate, double duration) {
  memset(f, 0, sizeof *f);
  sim_config_defaults(&f->sc);
  f->sc.count = devices;
  f->sc.rate_hz = rate;
  f->sc.duration_s = duration;
  f->sc.quiet = 1;
  f->sc.workers = 2;
}

/* One connection of a gateway that grants acks and acks every reading. */
typedef struct acking_conn {
  raw_device c;
  uint64_t readings;
} acking_conn;

static void *acking_conn_task(void *arg) {
  acking_conn *a = arg;
  next_line(&a->c);
  ck_assert_str_eq(a->c.line, "{\"type\":\"hello\",\"acks\":true,\"health\":true}");
  raw_send(&a->c, "{\"type\":\"hello\",\"acks\":true,\"health\":true}\n");
  /* Each reading's id, from the line itself: the connection says nothing. */
  int r;
  while ((r = raw_read_line(&a->c, PATIENCE)) == 0) {
    cJSON *o = cJSON_Parse(a->c.line);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "device");
    ck_assert(cJSON_IsString(id));
    send_ack(&a->c, id->valuestring, reading_seq(a->c.line));
    cJSON_Delete(o);
    a->readings++;
  }
  ck_assert_int_eq(r, TG_EOF);
  raw_close(&a->c);
  return NULL;
}

static void *every_reading_body(void *arg) {
  fake *f = arg;
  fake_start(f);
  acking_conn conns[3];
  tg_task *tasks[3];
  for (int i = 0; i < 3; i++) {
    accept_device(f->listener, &conns[i].c);
    conns[i].readings = 0;
    ck_assert_int_eq(tg_spawn(&tasks[i], acking_conn_task, &conns[i], NULL), 0);
  }
  fake_finish(f);
  uint64_t readings = 0;
  for (int i = 0; i < 3; i++) {
    tg_task_join(tasks[i], NULL);
    readings += conns[i].readings;
  }
  ck_assert_uint_eq(readings, f->rep.generated);
  return NULL;
}

/* Every reading acked: exit status 0, nothing resent, latencies measured. */
START_TEST(test_devices_acks_every_reading) {
  fake f;
  fake_init(&f, 3, 200, 0.3);
  tg_test_run(2, 0, every_reading_body, &f);
  ck_assert_int_eq(f.verdict, 0);
  ck_assert_uint_gt(f.rep.generated, 0);
  ck_assert_int_eq(f.rep.acking_devices, 3);
  ck_assert_uint_eq(f.rep.acked, f.rep.generated);
  ck_assert_uint_eq(f.rep.unacked, 0);
  ck_assert_uint_eq(f.rep.resent, 0);
  ck_assert_uint_eq(f.rep.reconnects, 0);
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(f.rep.devices[i].acks, 1);
    ck_assert_uint_eq(f.rep.devices[i].acked, f.rep.devices[i].generated);
    ck_assert_uint_eq(f.rep.devices[i].sent, f.rep.devices[i].generated);
  }
  ck_assert(f.rep.latency_p50_ms > 0);
  ck_assert(f.rep.latency_p99_ms >= f.rep.latency_p50_ms);
  sim_report_free(&f.rep);
}
END_TEST

/* Connection 1 gets readings 1..30 and an ack of 10, then is closed. The
 * device reconnects, says hello and writes 11, 12, ... again, byte for
 * byte as the first time, before anything new. */
static void *resend_body(void *arg) {
  fake *f = arg;
  fake_start(f);
  raw_device c;
  accept_device(f->listener, &c);
  next_line(&c);
  raw_send(&c, "{\"type\":\"hello\",\"acks\":true,\"health\":true}\n");
  enum { FIRST = 30, ACKED = 10 };
  static char first[FIRST + 1][512];
  for (int seq = 1; seq <= FIRST; seq++) {
    expect_reading(&c, seq);
    memcpy(first[seq], c.line, sizeof c.line);
  }
  send_ack(&c, "dev-1", ACKED);
  /* Lines are handled in order: once the health reply is back, so is the ack. */
  raw_send(&c, "{\"type\":\"health\",\"id\":5}\n");
  do next_line(&c);
  while (reading_seq(c.line) >= 0);
  ck_assert_ptr_nonnull(strstr(c.line, "\"id\":5"));
  raw_close(&c);

  accept_device(f->listener, &c);
  next_line(&c);
  ck_assert_str_eq(c.line, "{\"type\":\"hello\",\"acks\":true,\"health\":true}");
  raw_send(&c, "{\"type\":\"hello\",\"acks\":true,\"health\":true}\n");
  for (int seq = ACKED + 1; seq <= FIRST; seq++) {
    next_line(&c);
    ck_assert_str_eq(c.line, first[seq]);
    send_ack(&c, "dev-1", seq);
  }
  expect_reading(&c, FIRST + 1);
  send_ack(&c, "dev-1", FIRST + 1);
  sim_stop(f->sm);
  ack_until_eof(&c, "dev-1");
  raw_close(&c);
  fake_finish(f);
  return NULL;
}

START_TEST(test_devices_acks_resend_after_close) {
  fake f;
  fake_init(&f, 1, 500, 3600);
  tg_test_run(2, 0, resend_body, &f);
  ck_assert_int_eq(f.verdict, 0);
  const sim_device_report *d = &f.rep.devices[0];
  ck_assert_uint_eq(d->reconnects, 1);
  ck_assert_uint_ge(d->resent, 20);
  ck_assert_uint_eq(d->acked, d->generated);
  ck_assert_int_eq(d->end, SIM_END_STOPPED);
  sim_report_free(&f.rep);
}
END_TEST

/* A window of 5 unacked readings: after 5 the device writes nothing new,
 * yet answers a health request; an ack lets it go on, and the wait is
 * counted as blocked. */
static void *blocked_body(void *arg) {
  fake *f = arg;
  fake_start(f);
  raw_device c;
  accept_device(f->listener, &c);
  next_line(&c);
  raw_send(&c, "{\"type\":\"hello\",\"acks\":true,\"health\":true}\n");
  for (int seq = 1; seq <= 5; seq++) expect_reading(&c, seq);
  raw_send(&c, "{\"type\":\"health\",\"id\":7}\n");
  next_line(&c);
  ck_assert_msg(strstr(c.line, "\"type\":\"health\"") && strstr(c.line, "\"id\":7"), "got '%s'", c.line);
  tg_sleep(TG_MS(200)); /* blocked all along: a reading now would come before the next health reply */
  raw_send(&c, "{\"type\":\"health\",\"id\":18446744073709551615}\n"); /* echoed exactly, all 64 bits */
  next_line(&c);
  ck_assert_msg(strstr(c.line, "\"id\":18446744073709551615,"), "got '%s' while the window was full", c.line);
  send_ack(&c, "dev-1", 5);
  for (int seq = 6; seq <= 10; seq++) expect_reading(&c, seq);
  sim_stop(f->sm);
  send_ack(&c, "dev-1", 10);
  ack_until_eof(&c, "dev-1");
  raw_close(&c);
  fake_finish(f);
  return NULL;
}

START_TEST(test_devices_acks_full_window_blocks) {
  fake f;
  fake_init(&f, 1, 1000, 3600);
  f.sc.max_unacked = 5;
  tg_test_run(2, 0, blocked_body, &f);
  ck_assert_int_eq(f.verdict, 0);
  const sim_device_report *d = &f.rep.devices[0];
  ck_assert_uint_ge(d->blocked_ms, 150); /* real time: a lower bound only */
  ck_assert_uint_eq(d->health_answered, 2);
  ck_assert_uint_eq(d->acked, d->generated);
  ck_assert_uint_ge(d->generated, 10);
  sim_report_free(&f.rep);
}
END_TEST

/* A gateway from before hello refuses line 1: the device writes on
 * without holding anything, as before acks, and its run succeeds. */
static void *old_gateway_body(void *arg) {
  fake *f = arg;
  fake_start(f);
  raw_device c;
  accept_device(f->listener, &c);
  next_line(&c);
  raw_send(&c, "{\"type\":\"error\",\"reason\":\"unknown_type\",\"line\":1}\n");
  for (int seq = 1; seq <= 20; seq++) expect_reading(&c, seq);
  sim_stop(f->sm);
  int64_t last = 20;
  int r;
  while ((r = raw_read_line(&c, PATIENCE)) == 0) ck_assert_int_eq(reading_seq(c.line), ++last);
  ck_assert_int_eq(r, TG_EOF);
  raw_close(&c);
  fake_finish(f);
  ck_assert_uint_eq(f->rep.devices[0].generated, (uint64_t)last);
  return NULL;
}

START_TEST(test_devices_acks_old_gateway) {
  fake f;
  fake_init(&f, 1, 500, 3600);
  tg_test_run(2, 0, old_gateway_body, &f);
  ck_assert_int_eq(f.verdict, 0);
  ck_assert_int_eq(f.rep.devices[0].acks, 0);
  ck_assert_uint_eq(f.rep.devices[0].errors_received, 0); /* the refused hello is no error */
  ck_assert_uint_eq(f.rep.acking_devices, 0);
  ck_assert_uint_eq(f.rep.unacked, 0);
  sim_report_free(&f.rep);
}
END_TEST

/* Acks granted, none sent: after --ack-wait-s the run fails, every
 * reading counted unacked. */
static void *never_acked_body(void *arg) {
  fake *f = arg;
  fake_start(f);
  raw_device c;
  accept_device(f->listener, &c);
  next_line(&c);
  raw_send(&c, "{\"type\":\"hello\",\"acks\":true,\"health\":true}\n");
  int r;
  while ((r = raw_read_line(&c, PATIENCE)) == 0) {
  }
  ck_assert_int_eq(r, TG_EOF);
  raw_close(&c);
  fake_finish(f);
  return NULL;
}

START_TEST(test_devices_acks_never_acked) {
  fake f;
  fake_init(&f, 1, 100, 0.2);
  f.sc.ack_wait_s = 0.2;
  tg_test_run(2, 0, never_acked_body, &f);
  ck_assert_int_eq(f.verdict, 1);
  ck_assert_uint_gt(f.rep.generated, 0);
  ck_assert_uint_eq(f.rep.unacked, f.rep.generated);
  ck_assert_uint_eq(f.rep.devices[0].acked, 0);
  sim_report_free(&f.rep);
}
END_TEST

/* The first line for each choice of --acks and --health. */
typedef struct hello_case {
  sim_acks acks;
  sim_health health;
  const char *first; /* NULL: a reading, no hello */
} hello_case;

static void *hello_body(void *arg) {
  fake *f = arg;
  static const hello_case cases[] = {
      {SIM_ACKS_ON, SIM_HEALTH_IGNORE, "{\"type\":\"hello\",\"acks\":true,\"health\":false}"},
      {SIM_ACKS_OFF, SIM_HEALTH_ANSWER, "{\"type\":\"hello\",\"acks\":false,\"health\":true}"},
      {SIM_ACKS_OFF, SIM_HEALTH_IGNORE, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    f->sc.acks = cases[i].acks;
    f->sc.health = cases[i].health;
    f->sc.ack_wait_s = 0;
    fake_start(f);
    raw_device c;
    accept_device(f->listener, &c);
    next_line(&c);
    if (cases[i].first)
      ck_assert_str_eq(c.line, cases[i].first);
    else
      ck_assert_int_eq(reading_seq(c.line), 1);
    sim_stop(f->sm);
    while (raw_read_line(&c, PATIENCE) == 0) {
    }
    raw_close(&c);
    fake_finish(f);
    sim_report_free(&f->rep);
  }
  return NULL;
}

START_TEST(test_devices_acks_hello_lines) {
  fake f;
  fake_init(&f, 1, 100, 3600);
  tg_test_run(2, 0, hello_body, &f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("devices-acks");
  tg_test_add(s, "every_reading", test_devices_acks_every_reading, 60);
  tg_test_add(s, "resend_after_close", test_devices_acks_resend_after_close, 60);
  tg_test_add(s, "full_window_blocks", test_devices_acks_full_window_blocks, 60);
  tg_test_add(s, "old_gateway", test_devices_acks_old_gateway, 60);
  tg_test_add(s, "never_acked", test_devices_acks_never_acked, 60);
  tg_test_add(s, "hello_lines", test_devices_acks_hello_lines, 60);
  return tg_test_main(s);
}
