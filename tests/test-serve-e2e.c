/* test-serve-e2e.c - simulator -> serve -> SQLite over loopback: after the
 * shutdown the database holds exactly the readings the simulator sent,
 * per device and by seq; a real SIGTERM midway stores everything read and
 * nothing twice; a resend after a restart is stored once; a full channel
 * pushes back on the sockets and loses nothing. */
#include "signals.h"
#include "test-serve.h"

#include <signal.h>

typedef struct e2e {
  serve_test t;
  sim_config sim;
  uint64_t want; /* readings serve receives before the devices are stopped;
                   0: they run sim.duration_s and hang up by themselves */
  sim_report rep;
  int verdict;
} e2e;

static uint64_t fig_known(const serve_figures *f) { return f->devices_known; }

/* The devices send until they are stopped: how many readings a run has
 * is set by `want`, not by how much CPU the devices got in a fixed time,
 * and every device has sent before the end. */
static void e2e_init(e2e *e, int devices, double rate, uint64_t want, const char *prefix) {
  serve_test_init(&e->t);
  /* The devices hang up before shutdown: the drain ends at their EOF,
   * however slow the build (TSan) makes reading what they sent. */
  e->t.cfg.drain_ms = 60000;
  sim_config_defaults(&e->sim);
  e->sim.count = devices;
  e->sim.rate_hz = rate;
  e->sim.duration_s = 3600;
  e->sim.id_prefix = prefix;
  e->sim.quiet = 1;
  e->sim.workers = 2;
  e->want = want;
}

/* Once serve heard from every device and received `want` readings, the
 * devices hang up; shutdown follows at once, while serve may still hold
 * unread bytes. */
static void *exact_body(void *arg) {
  e2e *e = arg;
  serve_test_start(&e->t);
  e->sim.port = serve_port(e->t.s);
  sim *sm;
  ck_assert_int_eq(sim_start(&e->sim, &sm), 0);
  if (e->want > 0) {
    uint64_t devices = (uint64_t)e->sim.count;
    ck_assert_uint_eq(serve_test_wait_for(e->t.s, fig_known, devices, SERVE_TEST_PATIENCE), devices);
    ck_assert_uint_ge(serve_test_wait_for(e->t.s, fig_received, e->want, SERVE_TEST_PATIENCE), e->want);
    sim_stop(sm);
  }
  ck_assert_int_eq(sim_wait(sm, &e->rep), 0);
  e->verdict = serve_test_stop(&e->t);
  return NULL;
}

static void check_exact(e2e *e, const char *prefix) {
  ck_assert_int_eq(e->verdict, 0);
  ck_assert_uint_gt(e->rep.sent, 0);
  ck_assert_uint_eq(e->t.final.readings_received, e->rep.sent);
  ck_assert_uint_eq(e->t.final.readings_aggregated, e->rep.sent);
  ck_assert_uint_eq(e->t.final.readings_stored, e->rep.sent);
  ck_assert_uint_eq(e->t.final.readings_duplicate, 0);
  ck_assert_uint_eq(e->t.final.bad_lines, 0);
  ck_assert_uint_eq(e->t.final.connections_accepted, (uint64_t)e->sim.count);
  uint64_t senders = 0;
  for (int i = 0; i < e->rep.count; i++) senders += e->rep.devices[i].sent > 0;
  ck_assert_uint_eq(e->t.final.devices_known, senders);
  if (e->want > 0) ck_assert_uint_eq(senders, (uint64_t)e->sim.count);
  ck_assert_uint_eq(serve_test_check_db(&e->t, &e->rep, prefix), e->rep.sent);
}

START_TEST(test_serve_e2e_json_exact) {
  e2e e;
  e2e_init(&e, 20, 200, 4000, "dev-");
  tg_test_run(2, 0, exact_body, &e);
  check_exact(&e, "dev-");
  sim_report_free(&e.rep);
  serve_test_cleanup(&e.t);
}
END_TEST

/* Line protocol and the demo's plain numeric ids. */
START_TEST(test_serve_e2e_line_numeric_ids) {
  e2e e;
  e2e_init(&e, 7, 300, 1680, "");
  e.sim.format = PROTOCOL_LINE;
  tg_test_run(2, 0, exact_body, &e);
  check_exact(&e, "");
  sim_report_free(&e.rep);
  serve_test_cleanup(&e.t);
}
END_TEST

/* A telemetry channel of 1 and batches of 7: the connections wait for the
 * aggregator all the time, their sockets stop being read, and still
 * every reading arrives once. */
START_TEST(test_serve_e2e_backpressure) {
  e2e e;
  e2e_init(&e, 10, 1000, 0, "dev-");
  /* Serve reads slowly here by design. Devices stopped only once it had
   * read a count would, meanwhile, fill the kernel's socket buffers with
   * more than a TSan build on a loaded machine drains in a minute; half a
   * second of sending keeps the backlog the same on every machine. */
  e.sim.duration_s = 0.5;
  e.t.cfg.telemetry_capacity = 1;
  e.t.cfg.storage_capacity = 1;
  e.t.cfg.batch_size = 7;
  e.t.cfg.recv_buffer = 2 * (e.t.cfg.max_line_bytes + 1);
  e.t.cfg.bandwidth_permits = 2;
  tg_test_run(2, 0, exact_body, &e);
  check_exact(&e, "dev-");
  ck_assert_uint_gt(e.t.final.telemetry.full_waits, 0);
  /* Whether the storage queue of one also fills depends on how SQLite's
   * commits compare with the aggregator's pace on a loaded machine, so it
   * is not asserted; the demo's pressure preset shows it deterministically. */
  ck_assert_uint_ge(e.t.final.batches_stored, (e.rep.sent + 6) / 7); /* none over 7 */
  sim_report_free(&e.rep);
  serve_test_cleanup(&e.t);
}
END_TEST

/* The same devices again after a restart, from seq 1: all resends. */
static void *restart_body(void *arg) {
  e2e *e = arg;
  exact_body(e);
  sim_report first = e->rep;
  exact_body(e);
  /* Seqs up to what the first run stored are resends; the database holds
   * per device 1..the larger of the two. */
  uint64_t resent = 0;
  for (int i = 0; i < first.count; i++) {
    uint64_t a = first.devices[i].sent, b = e->rep.devices[i].sent;
    resent += a < b ? a : b;
    if (a > b) e->rep.devices[i].sent = a;
  }
  sim_report_free(&first);
  ck_assert_uint_gt(resent, 0);
  ck_assert_uint_eq(e->t.final.readings_duplicate, resent);
  return NULL;
}

START_TEST(test_serve_e2e_restart_resends_stored_once) {
  e2e e;
  e2e_init(&e, 5, 200, 500, "dev-");
  tg_test_run(2, 0, restart_body, &e);
  ck_assert_int_eq(e.verdict, 0);
  uint64_t expect = 0;
  for (int i = 0; i < e.rep.count; i++) expect += e.rep.devices[i].sent;
  ck_assert_uint_eq(serve_test_check_db(&e.t, &e.rep, "dev-"), expect);
  ck_assert_uint_eq(e.t.final.readings_stored + e.t.final.readings_duplicate, e.t.final.readings_received);
  sim_report_free(&e.rep);
  serve_test_cleanup(&e.t);
}
END_TEST

/* A real SIGTERM while devices send: the handler's watcher calls
 * serve_stop; serve reads what is delivered, commits, and the database
 * holds every reading it read - per device a gapless prefix of what the
 * device sent - and none twice. */
static void on_signal(void *ctx, int signo) {
  (void)signo;
  serve_stop(ctx);
}

static void *sigterm_body(void *arg) {
  e2e *e = arg;
  serve_test_start(&e->t);
  e->sim.port = serve_port(e->t.s);
  signal_watch sw;
  ck_assert_int_eq(signal_watch_start(&sw, on_signal, e->t.s), 0);
  sim *sm;
  ck_assert_int_eq(sim_start(&e->sim, &sm), 0);
  ck_assert_uint_ge(serve_test_wait_for(e->t.s, fig_received, e->want, SERVE_TEST_PATIENCE), e->want);
  kill(getpid(), SIGTERM);
  e->verdict = serve_wait(e->t.s, &e->t.final);
  e->t.s = NULL;
  signal_watch_stop(&sw);
  sim_stop(sm);
  sim_wait(sm, &e->rep);
  return NULL;
}

START_TEST(test_serve_e2e_sigterm_midway) {
  e2e e;
  e2e_init(&e, 20, 500, 2000, "dev-");
  e.t.cfg.drain_ms = 300; /* the devices go on sending: the drain runs its time */
  e.sim.ack_wait_s = 0;   /* serve is gone when they are stopped: no ack will come */
  tg_test_run(2, 0, sigterm_body, &e);
  ck_assert_int_eq(e.verdict, 0);
  ck_assert_uint_ge(e.t.final.readings_received, e.want);
  ck_assert_uint_eq(e.t.final.readings_stored, e.t.final.readings_received);
  /* Stored: per device 1..k with k <= sent, once each. */
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(e.t.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(
                       db,
                       "SELECT device, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM readings GROUP BY device",
                       -1, &st, NULL),
                   SQLITE_OK);
  uint64_t rows = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    int i = atoi((const char *)sqlite3_column_text(st, 0) + 4) - 1;
    int64_t n = sqlite3_column_int64(st, 1);
    ck_assert_int_eq(n, sqlite3_column_int64(st, 2));
    ck_assert_int_eq(sqlite3_column_int64(st, 3), 1);
    ck_assert_int_eq(sqlite3_column_int64(st, 4), n);
    ck_assert_uint_le((uint64_t)n, e.rep.devices[i].sent);
    rows += (uint64_t)n;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  ck_assert_uint_eq(rows, e.t.final.readings_received);
  sim_report_free(&e.rep);
  serve_test_cleanup(&e.t);
}
END_TEST

/* --storage none: the pipeline alone, counted the same way. */
START_TEST(test_serve_e2e_storage_none) {
  e2e e;
  e2e_init(&e, 10, 200, 1000, "dev-");
  e.t.cfg.storage = "none";
  tg_test_run(2, 0, exact_body, &e);
  ck_assert_int_eq(e.verdict, 0);
  ck_assert_uint_eq(e.t.final.readings_stored, e.rep.sent);
  ck_assert_int_eq(access(e.t.db, F_OK), -1); /* no database was made */
  sim_report_free(&e.rep);
  serve_test_cleanup(&e.t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-e2e");
  tg_test_add(s, "json_exact", test_serve_e2e_json_exact, 90);
  tg_test_add(s, "line_numeric_ids", test_serve_e2e_line_numeric_ids, 90);
  tg_test_add(s, "backpressure", test_serve_e2e_backpressure, 90);
  tg_test_add(s, "restart_resends_stored_once", test_serve_e2e_restart_resends_stored_once, 90);
  tg_test_add(s, "sigterm_midway", test_serve_e2e_sigterm_midway, 90);
  tg_test_add(s, "storage_none", test_serve_e2e_storage_none, 90);
  return tg_test_main(s);
}
