/* test-serve-nats.c - telegate serve consuming a real nats-server's
 * JetStream stream (tests/test-nats.h), readings published through
 * libnats.
 *
 * - JSON without a device (the subject's id) and line protocol with two
 *   readings a message, published while serve is down, waiting in
 *   the stream: every reading stored once, a payload naming another device
 *   refused as wrong_device and acknowledged all the same.
 * - backpressure and kill -9: a window of 100 messages (--nats-inflight)
 *   against batches cut by age; 20 devices interleaved; serve is killed
 *   mid-stream with its window unacknowledged, started again with a wide
 *   window and no batch cut, so that it takes the rest without committing
 *   it, killed again (now fewer messages are unacknowledged than the
 *   consumer's max_ack_pending, so JetStream would hand out newer ones
 *   first), more is published while it is down, and the restarted serve
 *   gets what was not acknowledged again before anything newer: every
 *   reading of every device stored exactly once, in order (a reading
 *   overtaken by a newer one of its device would have been dropped as a
 *   resend), and the redeliveries counted.
 * - one name, one process: a second serve started with the --node of one
 *   running waits, saying so, and consumes nothing; once the first stops
 *   (its key deleted), it runs as that node and takes the lease.
 * - a lease lost while its partition's consumer could not be reset yet
 *   is freed, claimed again and consumed, in a session that stays up.
 * - NATS away: serve started before the server retries with its backoff
 *   and /readyz says 503; it connects once the server is up, notices the
 *   server stopping, reconnects when it is back, and goes on storing.
 *
 * Progress is read from serve's /metrics (the database is read only once
 * serve is down); every wait is bounded and on its condition. */
#include "test-nats.h"

/* serve with --nats to s, and more flags (NULL-ended). */
static void serve_nats_start(proc_dir *d, proc *p, const nats_server *s, const char *const more[]) {
  static char url[64];
  nats_server_url(s, url, sizeof url);
  /* A killed node's leases expire after 2 s: the next one waits as long. */
  const char *flags[24] = {"--nats", url, "--drain-ms", "500", "--nats-lease-ms", "2000"};
  int n = 6;
  for (int i = 0; more && more[i]; i++) flags[n++] = more[i];
  flags[n] = NULL;
  serve_proc_start(d, p, 0, flags);
}

/* Readings of seqs from..to (inclusive) of devices dev-0 .. dev-(devices-1),
 * interleaved: each seq for every device, then the next. */
static void publish_interleaved(nats_pub *p, int devices, int from, int to) {
  char subject[64], body[256];
  for (int seq = from; seq <= to; seq++)
    for (int dev = 0; dev < devices; dev++) {
      snprintf(subject, sizeof subject, "telemetry.dev-%d", dev);
      nats_json_reading(body, sizeof body, seq);
      nats_pub_send(p, subject, body);
    }
}

START_TEST(test_serve_nats_all_stored_once) {
  enum { N = 400 };
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns;
  nats_server_init(&d, &ns, NULL);
  nats_server_start(&d, &ns);
  proc serve;
  serve_nats_start(&d, &serve, &ns, (const char *const[]){"--batch-age-ms", "50", NULL});
  serve_wait_metric(&serve, "telegate_nats_connected", 1); /* the stream exists from then on */
  serve_wait_ready(&serve, 200);
  /* Stopped while everything is published: it all waits in the stream. */
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  nats_pub pub;
  nats_pub_open(&pub, &ns);
  char body[512];
  for (int seq = 1; seq <= N; seq++) { /* JSON, the device from the subject */
    nats_json_reading(body, sizeof body, seq);
    nats_pub_send(&pub, "telemetry.json-1", body);
  }
  for (int seq = 1; seq <= N; seq += 2) { /* line protocol naming its device, two lines a message */
    snprintf(body, sizeof body,
             "telemetry,device=lp-1 temperature=21.5,humidity=48.2,battery=87i,seq=%di %lld000000\n"
             "telemetry,device=lp-1 temperature=21.5,humidity=48.2,battery=87i,seq=%di %lld000000",
             seq, 1732590000000LL + seq, seq + 1, 1732590000001LL + seq);
    nats_pub_send(&pub, "telemetry.lp-1", body);
  }
  /* another device in the payload than in the subject */
  nats_pub_send(&pub, "telemetry.json-1",
                "{\"device\":\"other\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}");
  nats_pub_close(&pub);
  serve_nats_start(&d, &serve, &ns, (const char *const[]){"--batch-age-ms", "50", NULL});
  int64_t messages = N + N / 2 + 1;
  ck_assert_int_eq(serve_wait_nats_idle(&serve, messages), messages);
  ck_assert_int_eq(serve_metric(&serve, "telegate_readings_stored_total"), 2 * N);
  ck_assert_int_eq(serve_metric(&serve, "telegate_bad_input_total{reason=\"wrong_device\"}"), 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_nats_redelivered_total"), 0);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  db_has_seqs(d.db, "json-1", N);
  db_has_seqs(d.db, "lp-1", N);
  ck_assert_int_eq(db_rows(d.db), 2 * N);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

START_TEST(test_serve_nats_backpressure_kill_redelivery) {
  enum { DEVICES = 20, BEFORE = 150, AFTER = 250, WINDOW = 100 };
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns;
  nats_server_init(&d, &ns, NULL);
  nats_server_start(&d, &ns);
  /* Batches are cut by age, after the window filled: telegate waits at
   * its bound for most of each cycle. */
  const char *const flags[] = {"--nats-inflight", "100", "--batch-size", "1000", "--batch-age-ms", "150", NULL};
  proc serve;
  serve_nats_start(&d, &serve, &ns, flags);
  serve_wait_metric(&serve, "telegate_nats_connected", 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_nats_inflight_capacity"), WINDOW);
  nats_pub pub;
  nats_pub_open(&pub, &ns);
  publish_interleaved(&pub, DEVICES, 1, BEFORE);
  nats_pub_close(&pub);
  int64_t inflight = 0, at_bound = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 5 && !at_bound; i++) {
    inflight = serve_metric(&serve, "telegate_nats_inflight");
    ck_assert_int_le(inflight, WINDOW);
    at_bound = inflight == WINDOW;
    if (!at_bound) proc_sleep_ms(5);
  }
  ck_assert_msg(at_bound, "telegate never held its window of %d messages (last %lld)", WINDOW, (long long)inflight);
  /* The rest waits in the stream: the lag, as the next message fetched says it. */
  serve_wait_metric(&serve, "telegate_nats_consumer_pending", 1);
  /* Mid-stream: killed with a full window unacknowledged. */
  serve_wait_metric(&serve, "telegate_readings_stored_total", 400);
  ck_assert_int_lt(serve_metric(&serve, "telegate_readings_stored_total"), DEVICES * BEFORE);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGKILL), -SIGKILL);
  /* Again, with a window larger than what is left and no batch cut: it
   * takes all the rest and commits none of it, then is killed. Fewer
   * messages are unacknowledged than the consumer's max_ack_pending, so
   * JetStream would deliver newer ones before these came again. */
  const char *const hold[] = {"--nats-inflight", "5000", "--batch-size", "1000000", "--batch-age-ms", "600000", NULL};
  serve_nats_start(&d, &serve, &ns, hold);
  serve_wait_metric(&serve, "telegate_nats_redelivered_total", 1); /* the first run's window, first */
  static char resp[1 << 18];
  int64_t pending = -1, held = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && !(pending == 0 && held > 0); i++) {
    serve_get(&serve, "/metrics", resp, sizeof resp);
    pending = metric_in(resp, "telegate_nats_consumer_pending");
    held = metric_in(resp, "telegate_nats_inflight");
    if (!(pending == 0 && held > 0)) proc_sleep_ms(10);
  }
  ck_assert_msg(pending == 0 && held > 0, "the rest was not all taken: %lld pending, %lld held", (long long)pending,
                (long long)held);
  ck_assert_int_eq(serve_metric(&serve, "telegate_readings_stored_total"), 0);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGKILL), -SIGKILL);
  /* More while it is down: it goes behind what was not acknowledged. */
  nats_pub_open(&pub, &ns);
  publish_interleaved(&pub, DEVICES, BEFORE + 1, AFTER);
  nats_pub_close(&pub);
  serve_nats_start(&d, &serve, &ns, flags);
  serve_wait_nats_idle(&serve, 1);
  ck_assert_int_ge(serve_metric(&serve, "telegate_nats_redelivered_total"), held);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  char id[32];
  for (int dev = 0; dev < DEVICES; dev++) {
    snprintf(id, sizeof id, "dev-%d", dev);
    db_has_seqs(d.db, id, AFTER);
  }
  ck_assert_int_eq(db_rows(d.db), DEVICES * AFTER);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

START_TEST(test_serve_nats_server_away) {
  enum { N = 100 };
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns;
  nats_server_init(&d, &ns, NULL);
  proc serve;
  serve_nats_start(&d, &serve, &ns, (const char *const[]){"--batch-age-ms", "50", NULL});
  serve_wait_metric(&serve, "telegate_nats_connect_failures_total", 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_nats_connected"), 0);
  serve_wait_ready(&serve, 503);
  nats_server_start(&d, &ns);
  serve_wait_metric(&serve, "telegate_nats_connected", 1);
  serve_wait_ready(&serve, 200);
  nats_pub pub;
  nats_pub_open(&pub, &ns);
  publish_interleaved(&pub, 1, 1, N);
  nats_pub_close(&pub);
  serve_wait_nats_idle(&serve, N);
  /* The server stops: serve says so, and retries until it is back. */
  proc_signal_wait(&ns.p, SIGTERM); /* nats-server exits 1 then */
  serve_wait_metric(&serve, "telegate_nats_disconnects_total", 1);
  serve_wait_ready(&serve, 503);
  nats_server_start(&d, &ns);
  serve_wait_metric(&serve, "telegate_nats_connects_total", 2);
  serve_wait_ready(&serve, 200);
  nats_pub_open(&pub, &ns);
  publish_interleaved(&pub, 1, N + 1, 2 * N);
  nats_pub_close(&pub);
  serve_wait_metric(&serve, "telegate_readings_stored_total", 2 * N);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  db_has_seqs(d.db, "dev-0", 2 * N);
  char log[1 << 15];
  proc_read_file(serve.out, log, sizeof log);
  ck_assert_msg(strstr(log, "NATS nats://127.0.0.1:"), "log: %s", log); /* the failure, said once */
  ck_assert_msg(strstr(log, "NATS: session lost"), "log: %s", log);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

/* Polls until p's log has text. */
static void wait_log(const proc *p, const char *text) {
  static char log[1 << 16];
  int found = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && !found; i++) {
    proc_read_file(p->out, log, sizeof log);
    if (!(found = strstr(log, text) != NULL)) proc_sleep_ms(10);
  }
  ck_assert_msg(found, "not in the log: %s", text);
}

START_TEST(test_serve_nats_node_name_taken) {
  proc_dir d, d2; /* a database each: the second must not need the first's */
  proc_dir_init(&d);
  proc_dir_init(&d2);
  nats_server ns;
  nats_server_init(&d, &ns, NULL);
  nats_server_start(&d, &ns);
  const char *const name[] = {"--node", "plant-a", NULL};
  proc first, second;
  serve_nats_start(&d, &first, &ns, name);
  serve_wait_metric(&first, "telegate_nats_partitions_held", 1);
  serve_nats_start(&d2, &second, &ns, name);
  wait_log(&second, "another process runs as node plant-a");
  ck_assert_int_eq(serve_metric(&second, "telegate_nats_partitions_held"), 0);
  ck_assert_int_eq(serve_metric(&first, "telegate_nats_partitions_held"), 1);
  /* The first stops, deleting its key: the second is plant-a now. */
  ck_assert_int_eq(proc_signal_wait(&first, SIGTERM), 0);
  serve_wait_metric(&second, "telegate_nats_partitions_held", 1);
  wait_log(&second, "NATS leases: node plant-a");
  ck_assert_int_eq(proc_signal_wait(&second, SIGTERM), 0);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
  proc_dir_cleanup(&d2);
}
END_TEST

/* A lease lost while its partition waits for its consumer (the reset
 * refused: the stream has room for one consumer more, and the test holds
 * a second one): the node frees it at once, claims it again once the
 * other writer's key expired, and consumes it as soon as the reset
 * succeeds. Held as lost until its session ended, a partition of a
 * session that stays up was consumed by nobody. */
START_TEST(test_serve_nats_lease_lost_before_reset) {
  enum { N = 50 };
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns;
  nats_server_init(&d, &ns, NULL);
  nats_server_start(&d, &ns);
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  nats_js_connect(&ns, &nc, &js);
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char *subjects[] = {"telemetry.*.*"};
  sc.Name = "telemetry";
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.MaxConsumers = 2;
  ck_assert_int_eq(js_AddStream(NULL, js, &sc, NULL, NULL), NATS_OK);
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = "blocker";
  cc.AckPolicy = js_AckExplicit;
  ck_assert_int_eq(js_AddConsumer(NULL, js, "telemetry", &cc, NULL, NULL), NATS_OK);
  proc serve;
  /* Leases of 6 s: no renewal comes late on a loaded machine, so that
   * the one lost is the one the test takes. */
  serve_nats_start(
      &d, &serve, &ns,
      (const char *const[]){"--nats-partitions", "2", "--nats-lease-ms", "6000", "--batch-age-ms", "50", NULL});
  wait_log(&serve, "2 leases of 6000 ms");
  wait_log(&serve, "cannot create the consumer");
  static char log[1 << 16];
  proc_read_file(serve.out, log, sizeof log);
  const char *at = strstr(log, "NATS: partition ");
  ck_assert_ptr_nonnull(at);
  int waiting = atoi(at + strlen("NATS: partition ")), other = 1 - waiting;
  /* Another writer's value in its key: the node's next renewal is refused. */
  kvStore *kv = NULL;
  ck_assert_int_eq(js_KeyValue(&kv, js, "telegate-leases"), NATS_OK);
  char key[16];
  snprintf(key, sizeof key, "p.%d", waiting);
  ck_assert_int_eq(kvStore_PutString(NULL, kv, key, "intruder"), NATS_OK);
  serve_wait_metric(&serve, "telegate_nats_leases_lost_total", 1);
  wait_log(&serve, "lost its lease before it was consumed");
  ck_assert_int_eq(js_DeleteConsumer(js, "telemetry", "blocker", NULL, NULL), NATS_OK);
  nats_pub pub;
  nats_pub_open(&pub, &ns);
  char subject[64], body[256];
  for (int seq = 1; seq <= N; seq++)
    for (int p = 0; p < 2; p++) {
      snprintf(subject, sizeof subject, "telemetry.%d.dev-%d", p, p);
      nats_json_reading(body, sizeof body, seq);
      nats_pub_send(&pub, subject, body);
    }
  nats_pub_close(&pub);
  serve_wait_metric(&serve, "telegate_nats_partitions_held", 2);
  serve_wait_metric(&serve, "telegate_readings_stored_total", 2 * N);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  snprintf(key, sizeof key, "dev-%d", waiting);
  db_has_seqs(d.db, key, N);
  snprintf(key, sizeof key, "dev-%d", other);
  db_has_seqs(d.db, key, N);
  kvStore_Destroy(kv);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

int main(void) {
  nats_server_required();
  Suite *s = suite_create("serve-nats");
  tg_test_add(s, "all_stored_once", test_serve_nats_all_stored_once, 300);
  tg_test_add(s, "backpressure_kill_redelivery", test_serve_nats_backpressure_kill_redelivery, 300);
  tg_test_add(s, "lease_lost_before_reset", test_serve_nats_lease_lost_before_reset, 300);
  tg_test_add(s, "node_name_taken", test_serve_nats_node_name_taken, 300);
  tg_test_add(s, "server_away", test_serve_nats_server_away, 300);
  return tg_test_main(s);
}
