/* test-serve-nats-cluster.c - telegate serve nodes on a NATS JetStream
 * stream and one PostgreSQL, the stream in 6 partitions by the server's
 * own partition mapping, each partition consumed by the node holding its
 * lease (tests/test-nats.h, tests/test-postgres.h).
 *
 * node_killed: three nodes share the partitions out, two each. A fleet
 * of 1,000 devices publishes over NATS, a few messages of several
 * readings each per phase, and a few more devices publish with
 * mosquitto_pub through the NATS server's own MQTT listener: 120,480
 * readings in three phases. One node is killed -9 mid-stream; while the
 * other two take its partitions over, the second phase is published and
 * `telegate devices` sends 50 more devices to a survivor's own port,
 * which publishes them into the stream and acks them once JetStream has
 * them. The killed node, started again under the same --node name,
 * waits until its old key expired, then gets its share back. In the end
 * PostgreSQL holds every reading of every device exactly once: seqs
 * 1..N, no gap, no duplicate. A reading committed out of its device's
 * order would have been dropped as a resend (a gap), and one committed
 * by two nodes would be there twice. The redeliveries are counted.
 *
 * nats_server_killed: three NATS servers in a cluster, the stream
 * replicated on all; the server the nodes use is killed -9 mid-stream
 * and started again, with the same result.
 *
 * Progress is read from PostgreSQL (which serve does not hold alone) and
 * the nodes' /metrics; every wait is bounded and on its condition; a
 * wait that gives up says how far each partition got. */
#include "test-nats.h"
#include "test-postgres.h"

#include <inttypes.h>
#include <sys/wait.h>

enum {
  NODES = 3,
  PARTITIONS = 6,
  DEVICES = 1000,   /* over NATS */
  MQTT_DEVICES = 4, /* over MQTT, through the NATS server */
  PHASE = 40,       /* seqs per device and phase */
  LINES = 4,        /* readings a NATS message carries */
  ALL = DEVICES + MQTT_DEVICES,
};

/* Node k (named n<k+1>) on the NATS servers urls, the stream and the
 * lease bucket created with that many replicas, leases of lease_ms.
 * Returns its device port. */
static int node_start(proc_dir *d, proc *p, int k, const char *urls, const char *replicas, const char *lease_ms,
                      const pg_cluster *c) {
  static char name[NODES][16];
  snprintf(name[k], sizeof name[k], "n%d", k + 1);
  const char *const flags[] = {"--storage",
                               "postgres",
                               "--db",
                               c->uri,
                               "--nats",
                               urls,
                               "--nats-replicas",
                               replicas,
                               "--node",
                               name[k],
                               "--nats-partitions",
                               "6",
                               "--nats-lease-ms",
                               lease_ms,
                               "--batch-age-ms",
                               "100",
                               "--drain-ms",
                               "500",
                               NULL};
  return serve_proc_start(d, p, 0, flags);
}

/* Seqs from..to of NATS devices 0..devices-1, LINES readings a message,
 * the devices interleaved. */
static void publish(const nats_server *s, int devices, int from, int to) {
  nats_pub pub;
  nats_pub_open(&pub, s);
  char subject[64], body[LINES * 128];
  for (int seq = from; seq <= to; seq += LINES)
    for (int dev = 0; dev < devices; dev++) {
      snprintf(subject, sizeof subject, "telemetry.dev-%d", dev);
      size_t used = 0;
      for (int k = seq; k < seq + LINES && k <= to; k++) {
        nats_json_reading(body + used, sizeof body - used, k);
        used += strlen(body + used);
        body[used++] = '\n';
      }
      body[used] = '\0';
      nats_pub_send(&pub, subject, body);
    }
  nats_pub_close(&pub);
}

/* Seqs from..to of the MQTT devices, one mosquitto_pub each at QoS 1, a
 * message a line, all at once; returns when every one exited. */
static void publish_mqtt(const proc_dir *d, int mqtt_port, int from, int to) {
  pid_t pids[MQTT_DEVICES];
  for (int m = 0; m < MQTT_DEVICES; m++) {
    char path[256], topic[64], port[16], id[32];
    snprintf(path, sizeof path, "%s/mqtt-%d.lines", d->path, m);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int seq = from; seq <= to; seq++) {
      char line[160];
      nats_json_reading(line, sizeof line, seq);
      fprintf(f, "%s\n", line);
    }
    fclose(f);
    snprintf(topic, sizeof topic, "telemetry/mq-%d", m);
    snprintf(port, sizeof port, "%d", mqtt_port);
    snprintf(id, sizeof id, "mq-%d", m);
    pids[m] = fork();
    ck_assert_int_ge(pids[m], 0);
    if (pids[m] == 0) {
      if (!freopen(path, "r", stdin)) _exit(126);
      execlp("timeout", "timeout", "120", "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-i", id, "-t",
             topic, "-l", (char *)NULL);
      _exit(127);
    }
  }
  for (int m = 0; m < MQTT_DEVICES; m++) {
    int status = 0;
    ck_assert_int_eq(waitpid(pids[m], &status, 0), pids[m]);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "mosquitto_pub of mq-%d: status %d", m, status);
  }
}

/* Both kinds of devices, seqs from..to. */
static void phase(const proc_dir *d, const nats_server *s, int mqtt_port, int from, int to) {
  publish_mqtt(d, mqtt_port, from, to);
  publish(s, DEVICES, from, to);
}

/* What a wait that gave up saw, to tell a stalled partition from a slow
 * machine: how far the devices got, and each partition's consumer. */
static void stall_report(PGconn *pg, const nats_server *s) {
  PGresult *res = PQexec(pg, "SELECT m, count(*), min(d) FROM (SELECT device d, max(seq) m FROM readings "
                             "GROUP BY device) x GROUP BY m ORDER BY m");
  for (int i = 0; i < PQntuples(res); i++)
    fprintf(stderr, "stored up to seq %s: %s devices (%s, ...)\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
            PQgetvalue(res, i, 2));
  PQclear(res);
  char url[64];
  nats_server_url(s, url, sizeof url);
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  if (natsConnection_ConnectTo(&nc, url) == NATS_OK && natsConnection_JetStream(&js, nc, NULL) == NATS_OK)
    for (int p = 0; p < PARTITIONS; p++) {
      char name[32];
      snprintf(name, sizeof name, "telegate-%d", p);
      jsConsumerInfo *ci = NULL;
      if (js_GetConsumerInfo(&ci, js, "telemetry", name, NULL, NULL) != NATS_OK) continue;
      fprintf(stderr, "%s: %" PRIu64 " pending, %" PRId64 " unacknowledged, %" PRId64 " pull requests waiting\n", name,
              ci->NumPending, ci->NumAckPending, ci->NumWaiting);
      jsConsumerInfo_Destroy(ci);
    }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
}

/* Polls until PostgreSQL holds at least want readings, for at most
 * `patience` times the usual bound; returns them. */
static long long wait_rows(const pg_cluster *c, const nats_server *s, long long want, int patience) {
  PGconn *pg = pg_connect(c);
  long long n = -1;
  for (int i = 0; i < patience * PROC_PATIENCE_MS / 20; i++) {
    /* The table exists once a node opened storage. */
    PGresult *res = PQexec(pg, "SELECT count(*) FROM readings WHERE device NOT LIKE 'tcp-%'");
    n = PQresultStatus(res) == PGRES_TUPLES_OK ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    if (n >= want) break;
    proc_sleep_ms(20);
  }
  if (n < want) stall_report(pg, s);
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

/* Every reading of the devices published to NATS exactly once: `devices`
 * devices, each seqs 1..seqs, in order; those of `telegate devices`
 * (tcp-...) are not counted here. */
static void stored_once(const pg_cluster *c, long long devices, long long seqs) {
  PGconn *pg = pg_connect(c);
  long long rows = pg_value(pg, "SELECT count(*) FROM readings WHERE device NOT LIKE 'tcp-%'"),
            distinct = pg_value(pg, "SELECT count(*) FROM (SELECT DISTINCT device, seq FROM readings "
                                    "WHERE device NOT LIKE 'tcp-%') r");
  ck_assert_msg(distinct == devices * seqs, "%lld distinct readings stored of %lld: some were lost", distinct,
                devices * seqs);
  ck_assert_msg(rows == distinct, "%lld readings stored twice", rows - distinct);
  ck_assert_int_eq(pg_value(pg, "SELECT count(DISTINCT device) FROM readings WHERE device NOT LIKE 'tcp-%'"), devices);
  long long off = pg_value(pg, "SELECT count(*) FROM (SELECT seq, row_number() OVER (PARTITION BY device "
                               "ORDER BY seq) AS n FROM readings) r WHERE seq <> n");
  ck_assert_msg(off == 0, "%lld readings out of their device's sequence 1, 2, 3...", off);
  PQfinish(pg);
}

/* What `telegate devices` reported: every reading it generated (and got
 * an ack for) stored exactly once, seqs 1..generated per device. */
static void report_stored_once(const pg_cluster *c, const char *path) {
  cJSON *report = devices_report_load(path);
  devices_report_all_acked(report);
  PGconn *pg = pg_connect(c);
  const cJSON *dev;
  char sql[256];
  long long total = 0;
  cJSON_ArrayForEach(dev, cJSON_GetObjectItemCaseSensitive(report, "devices")) {
    const char *id = cJSON_GetObjectItemCaseSensitive(dev, "id")->valuestring;
    long long generated = (long long)json_u64(dev, "generated");
    snprintf(sql, sizeof sql,
             "SELECT count(*) * 1000000000 + count(DISTINCT seq) * 1000 + max(seq) - min(seq) + 1 - count(*) "
             "FROM readings WHERE device = '%s'",
             id);
    ck_assert_msg(pg_value(pg, sql) == generated * 1000000000 + generated * 1000,
                  "%s: not its %lld readings once each, seqs 1..%lld", id, generated, generated);
    total += generated;
  }
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM readings WHERE device LIKE 'tcp-%'"), total);
  PQfinish(pg);
  cJSON_Delete(report);
}

START_TEST(test_serve_nats_cluster_node_killed) {
  pg_cluster c;
  pg_cluster_start(&c);
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns;
  int mqtt_port = proc_free_port();
  char conf[512];
  snprintf(conf, sizeof conf,
           "server_name: cluster-test\n"
           "mqtt { listen: 127.0.0.1:%d }\n"
           "mappings = {\n"
           "  \"telemetry.*\": \"telemetry.{{partition(6,1)}}.{{wildcard(1)}}\"\n"
           "}\n",
           mqtt_port);
  nats_server_init(&d, &ns, conf);
  nats_server_start(&d, &ns);
  char url[64];
  nats_server_url(&ns, url, sizeof url);
  proc node[NODES];
  proc *running[NODES] = {&node[0], &node[1], &node[2]};
  int port[NODES];
  for (int k = 0; k < NODES; k++) port[k] = node_start(&d, &node[k], k, url, "1", "2000", &c);
  wait_balanced(running, NODES);
  phase(&d, &ns, mqtt_port, 1, PHASE);
  /* Mid-stream: node 2 dies with what it had in flight. */
  wait_rows(&c, &ns, (long long)ALL * PHASE / 3, 1);
  ck_assert_int_eq(proc_signal_wait(&node[1], SIGKILL), -SIGKILL);
  /* Devices on a survivor's own port meanwhile: it publishes what they
   * send to the stream and acks them once JetStream has it; whichever
   * node consumes their partitions stores it. */
  devices_run tcp;
  const char *const tcp_flags[] = {"--count",     "50",   "--rate",       "100", "--duration", "2",
                                   "--id-prefix", "tcp-", "--ack-wait-s", "60",  NULL};
  devices_proc_start(&d, &tcp, port[0], tcp_flags);
  phase(&d, &ns, mqtt_port, PHASE + 1, 2 * PHASE);
  /* Once its leases expired, the two others hold all six. */
  proc *survivors[] = {&node[0], &node[2]};
  wait_balanced(survivors, 2);
  wait_rows(&c, &ns, (long long)ALL * 2 * PHASE, 1);
  ck_assert_int_eq(proc_wait(&tcp.p), 0); /* every reading acked */
  /* Started again under its name: once its old key expired, it gets its
   * share back. */
  node_start(&d, &node[1], 1, url, "1", "2000", &c);
  wait_balanced(running, NODES);
  phase(&d, &ns, mqtt_port, 2 * PHASE + 1, 3 * PHASE);
  wait_rows(&c, &ns, (long long)ALL * 3 * PHASE, 1);
  int64_t redelivered = 0, claimed = 0;
  for (int k = 0; k < NODES; k++) {
    claimed += serve_metric(&node[k], "telegate_nats_leases_claimed_total");
    if (k != 1) redelivered += serve_metric(&node[k], "telegate_nats_redelivered_total");
  }
  ck_assert_int_ge(claimed, PARTITIONS + 2); /* at least the dead node's two, taken over */
  for (int k = 0; k < NODES; k++) ck_assert_int_eq(proc_signal_wait(&node[k], SIGTERM), 0);
  /* Every reading exactly once: per device, seqs 1..3 * PHASE. */
  stored_once(&c, ALL, 3 * PHASE);
  report_stored_once(&c, tcp.report);
  PGconn *pg = pg_connect(&c);
  ck_assert_int_eq(pg_value(pg, "SELECT count(DISTINCT device) FROM readings WHERE device LIKE 'mq-%'"), MQTT_DEVICES);
  PQfinish(pg);
  /* The dead node had unacknowledged messages: its heirs got them again. */
  ck_assert_int_ge(redelivered, 1);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
  pg_cluster_destroy(&c);
}
END_TEST

#if !defined(__SANITIZE_THREAD__) /* nats_server_killed: see main() */
/* Polls, through server s, until the stream has a leader other than the
 * server named `dead` (NULL: any) and `replicas` servers current with it,
 * the leader among them: it takes writes again. */
static void wait_stream_healthy(const nats_server *s, int replicas, const char *dead) {
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  nats_js_connect(s, &nc, &js);
  int ok = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 50 && !ok; i++) {
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, js, "telemetry", NULL, NULL) == NATS_OK) {
      int current = 0;
      if (si->Cluster && si->Cluster->Leader)
        for (int r = 0; r < si->Cluster->ReplicasLen; r++) current += si->Cluster->Replicas[r]->Current;
      ok = si->Cluster && si->Cluster->Leader && (!dead || strcmp(si->Cluster->Leader, dead) != 0) &&
           current + 1 >= replicas;
      jsStreamInfo_Destroy(si);
    }
    if (!ok) proc_sleep_ms(50);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  ck_assert_msg(ok, "the stream has no leader with %d current replicas", replicas);
}

/* Polls, through server s, until JetStream answers: the cluster has
 * elected its meta leader, and a stream can be created. */
static void wait_jetstream(const nats_server *s) {
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  nats_js_connect(s, &nc, &js);
  int ok = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 50 && !ok; i++) {
    jsAccountInfo *ai = NULL;
    ok = js_GetAccountInfo(&ai, js, NULL, NULL) == NATS_OK;
    jsAccountInfo_Destroy(ai);
    if (!ok) proc_sleep_ms(50);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  ck_assert_msg(ok, "JetStream does not answer: the NATS cluster elected no leader");
}

/* The index in servers of the one node p connected to first (its log's
 * "NATS: connected to" line). */
static int server_of(const proc *p, const nats_server *servers, int n) {
  static char log[1 << 16];
  proc_read_file(p->out, log, sizeof log);
  const char *at = strstr(log, "NATS: connected to nats://127.0.0.1:");
  ck_assert_msg(at != NULL, "no connection in the log: %s", log);
  int port = atoi(at + strlen("NATS: connected to nats://127.0.0.1:"));
  for (int i = 0; i < n; i++)
    if (servers[i].port == port) return i;
  ck_abort_msg("connected to port %d, none of the servers", port);
  return -1;
}

/* Three NATS servers in a cluster, the stream and the lease bucket
 * replicated on all three; two telegate nodes, and the server the first
 * one uses is killed -9 mid-stream. The leases are of 15 s: while
 * the cluster elects new leaders a round of the lease task's writes, and
 * each consumer's reset, take seconds on a loaded 2-core machine (with
 * 6 s, under TSan beside the rest of the suite, the nodes kept losing
 * their leases and resetting every consumer again). The stream elects another
 * leader, the nodes reconnect to the servers left (--nats lists all
 * three), reset their consumers and go on; the server started again
 * catches up. Every reading once, in order. */
START_TEST(test_serve_nats_cluster_nats_server_killed) {
  enum { SERVERS = 3, TWO = 2, FLEET = 200, SEQS = 20 };
  pg_cluster c;
  pg_cluster_start(&c);
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns[SERVERS];
  int route[SERVERS];
  for (int i = 0; i < SERVERS; i++) route[i] = proc_free_port();
  char urls[256] = "";
  for (int i = 0; i < SERVERS; i++) {
    char conf[1024];
    snprintf(conf, sizeof conf,
             "server_name: s%d\n"
             "cluster { name: telegate-test, listen: 127.0.0.1:%d, routes: [nats-route://127.0.0.1:%d, "
             "nats-route://127.0.0.1:%d, nats-route://127.0.0.1:%d] }\n"
             "mappings = {\n"
             "  \"telemetry.*\": \"telemetry.{{partition(6,1)}}.{{wildcard(1)}}\"\n"
             "}\n",
             i + 1, route[i], route[0], route[1], route[2]);
    nats_server_init(&d, &ns[i], conf);
    nats_server_start(&d, &ns[i]);
    size_t used = strlen(urls);
    snprintf(urls + used, sizeof urls - used, "%snats://127.0.0.1:%d", i ? "," : "", ns[i].port);
  }
  wait_jetstream(&ns[0]);
  proc node[TWO];
  proc *both[TWO] = {&node[0], &node[1]};
  for (int k = 0; k < TWO; k++) node_start(&d, &node[k], k, urls, "3", "15000", &c);
  wait_balanced(both, TWO);
  /* libnats picks the servers in a random order: the one to kill is the
   * one node n1 uses, the others publish and answer. */
  int dead = server_of(&node[0], ns, SERVERS), live = (dead + 1) % SERVERS;
  char dead_name[16];
  snprintf(dead_name, sizeof dead_name, "s%d", dead + 1);
  wait_stream_healthy(&ns[live], SERVERS, NULL);
  publish(&ns[live], FLEET, 1, SEQS);
  wait_rows(&c, &ns[live], FLEET * SEQS / 3, 1);
  /* n1's server dies mid-stream. */
  proc_signal_wait(&ns[dead].p, SIGKILL);
  serve_wait_metric(&node[0], "telegate_nats_connects_total", 2);
  wait_stream_healthy(&ns[live], SERVERS - 1, dead_name);
  publish(&ns[live], FLEET, SEQS + 1, 2 * SEQS);
  /* A NATS cluster that lost a server elects leaders for the stream, the
   * bucket and every consumer, and the nodes reset their consumers: on a
   * loaded 2-core machine under TSan that took up to a minute. */
  wait_rows(&c, &ns[live], FLEET * 2 * SEQS, 3);
  /* Back: it catches up, and the stream is whole again. */
  nats_server_start(&d, &ns[dead]);
  wait_stream_healthy(&ns[live], SERVERS, NULL);
  publish(&ns[dead], FLEET, 2 * SEQS + 1, 3 * SEQS);
  wait_rows(&c, &ns[live], FLEET * 3 * SEQS, 1);
  for (int k = 0; k < TWO; k++) ck_assert_int_eq(proc_signal_wait(&node[k], SIGTERM), 0);
  stored_once(&c, FLEET, 3 * SEQS);
  for (int i = 0; i < SERVERS; i++) proc_signal_wait(&ns[i].p, SIGTERM);
  proc_dir_cleanup(&d);
  pg_cluster_destroy(&c);
}
END_TEST
#endif /* !__SANITIZE_THREAD__ */

int main(void) {
  nats_server_required();
  int r = pg_template_init();
  if (r != 0) return r;
  Suite *s = suite_create("serve-nats-cluster");
  tg_test_add(s, "node_killed", test_serve_nats_cluster_node_killed, 500);
  /* Not in the TSan build, the suite's longest stage, where it would add
   * 42 s on an idle machine; node_killed and test-serve-nats run the
   * same consumer code under TSan. */
#if !defined(__SANITIZE_THREAD__)
  tg_test_add(s, "nats_server_killed", test_serve_nats_cluster_nats_server_killed, 500);
#endif
  return tg_test_main(s);
}
