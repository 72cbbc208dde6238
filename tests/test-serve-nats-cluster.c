/* test-serve-nats-cluster.c - three telegate serve nodes on one NATS
 * JetStream stream and one PostgreSQL, the stream in 6 partitions by the
 * server's own partition mapping, each partition consumed by the node
 * holding its lease (tests/test-nats.h, tests/test-postgres.h).
 *
 * The nodes share the partitions out, two each; 60 devices publish
 * interleaved readings; one node is killed -9 mid-stream, the other two
 * take its partitions over once its leases expire while more is
 * published, and the killed node, started again, gets its share back.
 * In the end PostgreSQL holds every reading of every device exactly once:
 * seqs 1..N, no gap, no duplicate. A reading committed out of its
 * device's order would have been dropped as a resend (a gap), and one
 * committed by two nodes would be there twice. The redeliveries are
 * counted.
 *
 * Progress is read from PostgreSQL (which serve does not hold alone) and
 * the nodes' /metrics; every wait is bounded and on its condition. */
#include "test-nats.h"
#include "test-postgres.h"

enum { NODES = 3, PARTITIONS = 6, DEVICES = 60, PHASE = 100 };

static const char mapping[] = "mappings = {\n"
                              "  \"telemetry.*\": \"telemetry.{{partition(6,1)}}.{{wildcard(1)}}\"\n"
                              "}\n";

static void node_start(proc_dir *d, proc *p, const nats_server *s, const pg_cluster *c) {
  static char url[64];
  nats_server_url(s, url, sizeof url);
  const char *const flags[] = {
      "--storage", "postgres",       "--db", c->uri,       "--nats", url, "--nats-partitions", "6", "--nats-lease-ms",
      "2000",      "--batch-age-ms", "100",  "--drain-ms", "500",    NULL};
  serve_proc_start(d, p, 0, flags);
}

static void publish(const nats_server *s, int from, int to) {
  nats_pub pub;
  nats_pub_open(&pub, s);
  char subject[64], body[256];
  for (int seq = from; seq <= to; seq++)
    for (int dev = 0; dev < DEVICES; dev++) {
      snprintf(subject, sizeof subject, "telemetry.dev-%d", dev);
      nats_json_reading(body, sizeof body, seq);
      nats_pub_send(&pub, subject, body);
    }
  nats_pub_close(&pub);
}

/* Polls until PostgreSQL holds at least want readings; returns them. */
static long long wait_rows(const pg_cluster *c, long long want) {
  PGconn *pg = pg_connect(c);
  long long n = -1;
  for (int i = 0; i < PROC_PATIENCE_MS / 20; i++) {
    /* The table exists once a node opened storage. */
    PGresult *res = PQexec(pg, "SELECT count(*) FROM readings");
    n = PQresultStatus(res) == PGRES_TUPLES_OK ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    if (n >= want) break;
    proc_sleep_ms(20);
  }
  PQfinish(pg);
  ck_assert_msg(n >= want, "PostgreSQL holds %lld readings, waited for %lld", n, want);
  return n;
}

/* Polls until the running nodes hold every partition between them, each
 * its share. */
static void wait_balanced(proc *nodes[], int n) {
  int64_t held[NODES] = {0}, total = 0;
  int share = (PARTITIONS + n - 1) / n, ok = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 20 && !ok; i++) {
    total = 0;
    ok = 1;
    for (int k = 0; k < n; k++) {
      held[k] = serve_metric(nodes[k], "telegate_nats_partitions_held");
      total += held[k];
      ok = ok && held[k] >= PARTITIONS / n && held[k] <= share;
    }
    ok = ok && total == PARTITIONS;
    if (!ok) proc_sleep_ms(20);
  }
  ck_assert_msg(ok, "partitions held: %lld %lld %lld of %d", (long long)held[0], (long long)held[1],
                (long long)(n > 2 ? held[2] : 0), PARTITIONS);
}

START_TEST(test_serve_nats_cluster_node_killed) {
  pg_cluster c;
  pg_cluster_start(&c);
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns;
  nats_server_init(&d, &ns, mapping);
  nats_server_start(&d, &ns);
  proc node[NODES];
  proc *running[NODES] = {&node[0], &node[1], &node[2]};
  for (int k = 0; k < NODES; k++) node_start(&d, &node[k], &ns, &c);
  wait_balanced(running, NODES);
  publish(&ns, 1, PHASE);
  /* Mid-stream: node 1 dies with what it had in flight. */
  wait_rows(&c, DEVICES * PHASE / 3);
  ck_assert_int_eq(proc_signal_wait(&node[1], SIGKILL), -SIGKILL);
  publish(&ns, PHASE + 1, 2 * PHASE);
  /* Once its leases expired, the two others hold all six. */
  proc *survivors[] = {&node[0], &node[2]};
  wait_balanced(survivors, 2);
  wait_rows(&c, (long long)DEVICES * 2 * PHASE);
  /* Started again (a new node): it gets its share back. */
  node_start(&d, &node[1], &ns, &c);
  wait_balanced(running, NODES);
  publish(&ns, 2 * PHASE + 1, 3 * PHASE);
  wait_rows(&c, (long long)DEVICES * 3 * PHASE);
  int64_t redelivered = 0, claimed = 0;
  for (int k = 0; k < NODES; k++) {
    claimed += serve_metric(&node[k], "telegate_nats_leases_claimed_total");
    if (k != 1) redelivered += serve_metric(&node[k], "telegate_nats_redelivered_total");
  }
  ck_assert_int_ge(claimed, PARTITIONS + 2); /* at least the dead node's two, taken over */
  for (int k = 0; k < NODES; k++) ck_assert_int_eq(proc_signal_wait(&node[k], SIGTERM), 0);
  /* Every reading exactly once: per device, seqs 1..3 * PHASE. */
  PGconn *pg = pg_connect(&c);
  long long rows = pg_value(pg, "SELECT count(*) FROM readings"),
            distinct = pg_value(pg, "SELECT count(*) FROM (SELECT DISTINCT device, seq FROM readings) r");
  ck_assert_msg(distinct == (long long)DEVICES * 3 * PHASE, "%lld distinct readings stored of %d: some were lost",
                distinct, DEVICES * 3 * PHASE);
  ck_assert_msg(rows == distinct,
                "%lld readings stored twice: the killed node's heir did not see its latest marks (the known gap of "
                "docs/cluster.md: storage_postgres loads a mark from device_hwm, not from mark_log)",
                rows - distinct);
  ck_assert_int_eq(pg_value(pg, "SELECT count(DISTINCT device) FROM readings"), DEVICES);
  long long off = pg_value(pg, "SELECT count(*) FROM (SELECT seq, row_number() OVER (PARTITION BY device "
                               "ORDER BY seq) AS n FROM readings) r WHERE seq <> n");
  ck_assert_msg(off == 0, "%lld readings out of their device's sequence 1, 2, 3...", off);
  PQfinish(pg);
  /* The dead node had unacknowledged messages: its heirs got them again. */
  ck_assert_int_ge(redelivered, 1);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
  pg_cluster_destroy(&c);
}
END_TEST

int main(void) {
  nats_server_required();
  int r = pg_template_init();
  if (r != 0) return r;
  Suite *s = suite_create("serve-nats-cluster");
  tg_test_add(s, "node_killed", test_serve_nats_cluster_node_killed, 500);
  return tg_test_main(s);
}
