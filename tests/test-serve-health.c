/* test-serve-health.c - health checks over the devices' own sockets: the
 * request line goes out on the connection the device's readings came
 * over, the reply line comes back to the waiting oneshot; ok, timeout,
 * dropped (the device hangs up before answering), not connected and
 * unknown are told apart and counted; the periodic checker asks
 * connected devices. */
#include "test-serve.h"

#include <errno.h>
#include <inttypes.h>

typedef struct check {
  serve *s;
  const char *id;
  int64_t timeout_ns;
  int result;
  device_status st;
} check;

static void *ask(void *arg) {
  check *c = arg;
  c->result = serve_health_check(c->s, c->id, c->timeout_ns, &c->st);
  return NULL;
}

/* Starts an on-demand check in its own task (as the HTTP side would). */
static tg_task *ask_async(check *c, serve *s, const char *id, int64_t timeout_ns) {
  *c = (check){.s = s, .id = id, .timeout_ns = timeout_ns};
  tg_task *t;
  ck_assert_int_eq(tg_spawn(&t, ask, c, NULL), 0);
  return t;
}

/* The request line the device got: its id. */
static uint64_t request_id(raw_device *d) {
  ck_assert_int_eq(raw_read_line(d, SERVE_TEST_PATIENCE), 0);
  uint64_t id = 0;
  ck_assert_msg(sscanf(d->line, "{\"type\":\"health\",\"id\":%" SCNu64 "}", &id) == 1, "not a request: %s", d->line);
  return id;
}

static uint64_t fig_ok(const serve_figures *f) { return f->health.ok; }

static void *body(void *arg) {
  serve_test *t = arg;
  serve_test_start(t);
  static raw_device a, b, c, d; /* static: four are too big for a task stack; d never said it answers health requests */
  raw_connect(&a, t->s);
  raw_connect(&b, t->s);
  raw_connect(&c, t->s);
  raw_connect(&d, t->s);
  raw_hello(&a, "\"health\":true");
  raw_hello(&b, "\"health\":true");
  raw_hello(&c, "\"health\":true");
  raw_send(
      &a,
      "{\"device\":\"answers\",\"seq\":1,\"ts\":1732590000000,\"temperature\":21.5,\"humidity\":40,\"battery\":88}\n");
  raw_send(&b, "telemetry,device=silent temperature=20,humidity=41,battery=77i,seq=1i 1732590000000000000\n");
  raw_send(
      &c,
      "{\"device\":\"hangs-up\",\"seq\":1,\"ts\":1732590000000,\"temperature\":22,\"humidity\":42,\"battery\":66}\n");
  raw_send(&d,
           "{\"device\":\"mute\",\"seq\":1,\"ts\":1732590000000,\"temperature\":22,\"humidity\":42,\"battery\":66}\n");
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_connected, 4, SERVE_TEST_PATIENCE), 4);

  /* ok: the request on a's socket, a's answer back. */
  check ca;
  tg_task *ta = ask_async(&ca, t->s, "answers", SERVE_TEST_PATIENCE);
  uint64_t id = request_id(&a);
  char reply[128];
  snprintf(reply, sizeof reply, "{\"type\":\"health\",\"id\":%" PRIu64 ",\"uptime_s\":1234,\"battery\":87}\n", id);
  raw_send(&a, reply);
  tg_task_join(ta, NULL);
  ck_assert_int_eq(ca.result, 0);
  ck_assert_int_eq(ca.st.battery, 87);
  ck_assert_int_eq(ca.st.uptime_ms, 1234000);
  ck_assert_uint_eq(ca.st.readings, 1);

  /* timeout: b gets the request and says nothing. */
  check cb;
  tg_task *tb = ask_async(&cb, t->s, "silent", TG_MS(200));
  uint64_t late = request_id(&b);
  tg_task_join(tb, NULL);
  ck_assert_int_eq(cb.result, TG_ETIMEDOUT);
  /* Its answer after the timeout is counted as unmatched, nothing else. */
  snprintf(reply, sizeof reply, "{\"type\":\"health\",\"id\":%" PRIu64 ",\"uptime_s\":1,\"battery\":1}\n", late);
  raw_send(&b, reply);

  /* dropped: c hangs up holding the request. */
  check cc;
  tg_task *tc = ask_async(&cc, t->s, "hangs-up", SERVE_TEST_PATIENCE);
  request_id(&c);
  raw_close(&c);
  tg_task_join(tc, NULL);
  ck_assert_int_eq(cc.result, TG_ECLOSED);

  /* not connected any more, and never seen. */
  check cd;
  tg_task_join(ask_async(&cd, t->s, "hangs-up", TG_SEC(1)), NULL);
  ck_assert_int_eq(cd.result, TG_ECLOSED);
  tg_task_join(ask_async(&cd, t->s, "nobody", TG_SEC(1)), NULL);
  ck_assert_int_eq(cd.result, -ENOENT);
  /* connected, but it never said it answers: not asked at all. */
  tg_task_join(ask_async(&cd, t->s, "mute", TG_SEC(1)), NULL);
  ck_assert_int_eq(cd.result, -EOPNOTSUPP);

  /* A reading of b and one more check of a still work after all that. */
  raw_send(&b, "telemetry,device=silent temperature=20,humidity=41,battery=77i,seq=2i 1732590001000000000\n");
  ta = ask_async(&ca, t->s, "answers", SERVE_TEST_PATIENCE);
  id = request_id(&a);
  snprintf(reply, sizeof reply, "{\"type\":\"health\",\"id\":%" PRIu64 ",\"uptime_s\":2,\"battery\":86}\n", id);
  raw_send(&a, reply);
  tg_task_join(ta, NULL);
  ck_assert_int_eq(ca.result, 0);

  serve_figures f;
  serve_figures_get(t->s, &f);
  ck_assert_uint_eq(f.health.ok, 2);
  ck_assert_uint_eq(f.health.timeout, 1);
  ck_assert_uint_eq(f.health.disconnected, 2);
  ck_assert_uint_eq(f.health.unknown, 1);
  ck_assert_uint_eq(f.health.requests, 4);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_received, 5, SERVE_TEST_PATIENCE), 5);
  serve_figures_get(t->s, &f);
  ck_assert_uint_eq(f.health.unmatched_replies, 1);
  ck_assert_uint_eq(f.bad_lines, 0);
  raw_close(&a);
  raw_close(&b);
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.readings_stored, 5);
  return NULL;
}

START_TEST(test_serve_health_ok_timeout_dropped) {
  serve_test t;
  serve_test_init(&t);
  tg_test_run(2, 0, body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* The periodic checker: rounds every 50 ms ask connected devices over
 * their sockets; a simulated fleet answers them. */
static void *rounds_body(void *arg) {
  serve_test *t = arg;
  t->cfg.health_interval_ms = 50;
  t->cfg.health_timeout_ms = 2000;
  serve_test_start(t);
  sim_config sc;
  sim_config_defaults(&sc);
  sc.port = serve_port(t->s);
  sc.count = 5;
  sc.rate_hz = 20;
  sc.duration_s = 30;
  sc.quiet = 1;
  sim *sm;
  ck_assert_int_eq(sim_start(&sc, &sm), 0);
  ck_assert_uint_ge(serve_test_wait_for(t->s, fig_ok, 5, SERVE_TEST_PATIENCE), 5);
  sim_stop(sm);
  sim_report rep;
  sim_wait(sm, &rep);
  ck_assert_uint_ge(rep.health_answered, 5);
  sim_report_free(&rep);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_ge(t->final.health.rounds, 2);
  ck_assert_uint_ge(t->final.health.ok, 5);
  return NULL;
}

START_TEST(test_serve_health_rounds) {
  serve_test t;
  serve_test_init(&t);
  tg_test_run(2, 0, rounds_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-health");
  tg_test_add(s, "ok_timeout_dropped", test_serve_health_ok_timeout_dropped, 90);
  tg_test_add(s, "rounds", test_serve_health_rounds, 90);
  return tg_test_main(s);
}
