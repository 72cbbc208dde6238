/* test-serve-nats-fleet.c - the fleet view of a cluster: two telegate
 * serve nodes on one NATS server (4 partitions, two each) and one
 * PostgreSQL (tests/test-nats.h, tests/test-postgres.h).
 *
 * Devices publish over NATS into partitions the two nodes consume, and
 * one device talks TCP to node A (which publishes its readings to the
 * stream: the node of its partition aggregates them). Every node's
 * /api/snapshot then lists
 * every device, each with the node that aggregates it - the node whose
 * own snapshot says it is its own - the same state everywhere, and the
 * fleet's total readings once each. A health check of the TCP device
 * asked of node B goes to node A over NATS, A asks the device over its
 * socket, and B answers with the device's own figures. Then node B is
 * killed: its devices stay in A's view, and once A has taken its
 * partitions over, each is A's with its next reading.
 *
 * Every wait is bounded and on its condition. */
#include "test-nats.h"
#include "test-postgres.h"

#include <pthread.h>

enum { NODES = 2, PARTITIONS = 4, DEVICES = 24, READINGS = 5 };

static const char mapping[] = "mappings = {\n"
                              "  \"telemetry.*\": \"telemetry.{{partition(4,1)}}.{{wildcard(1)}}\"\n"
                              "}\n";

static int node_start(proc_dir *d, proc *p, const char *name, const nats_server *s, const pg_cluster *c) {
  static char url[64];
  nats_server_url(s, url, sizeof url);
  const char *const flags[] = {"--node",
                               name,
                               "--storage",
                               "postgres",
                               "--db",
                               c->uri,
                               "--nats",
                               url,
                               "--nats-partitions",
                               "4",
                               "--nats-lease-ms",
                               "2000",
                               "--batch-age-ms",
                               "50",
                               "--drain-ms",
                               "500",
                               NULL};
  return serve_proc_start(d, p, 0, flags);
}

/* GET path of node p, its JSON body parsed; NULL unless status 200. */
static cJSON *get_json(const proc *p, const char *path, int *status) {
  static char resp[1 << 20];
  int got = serve_get(p, path, resp, sizeof resp);
  if (status) *status = got;
  const char *body = strstr(resp, "\r\n\r\n");
  return body ? cJSON_Parse(body + 4) : NULL;
}

static const char *str_of(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static double num_of(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const cJSON *device_in(const cJSON *snap, const char *name) {
  const cJSON *d;
  cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(snap, "devices")) if (strcmp(str_of(d, "name"), name) ==
                                                                               0) return d;
  return NULL;
}

/* Polls until the running nodes hold every partition, each its share. */
static void wait_balanced(proc *nodes, int n) {
  int ok = 0;
  int64_t held[NODES] = {0};
  for (int i = 0; i < PROC_PATIENCE_MS / 20 && !ok; i++) {
    int64_t total = 0;
    ok = 1;
    for (int k = 0; k < n; k++) {
      held[k] = serve_metric(&nodes[k], "telegate_nats_partitions_held");
      total += held[k];
      ok = ok && held[k] == PARTITIONS / n;
    }
    ok = ok && total == PARTITIONS;
    if (!ok) proc_sleep_ms(20);
  }
  ck_assert_msg(ok, "partitions held: %lld %lld of %d", (long long)held[0], (long long)held[1], PARTITIONS);
}

/* A device on a TCP connection of its own, in plain blocking sockets. */
typedef struct tcp_device {
  int fd;
  char buf[4096];
  size_t len;
} tcp_device;

static void tcp_send(tcp_device *t, const char *line) {
  size_t n = strlen(line);
  ck_assert_int_eq(write(t->fd, line, n), (ssize_t)n);
}

/* Reads one line into line (without its newline). */
static void tcp_line(tcp_device *t, char *line, size_t cap) {
  for (;;) {
    char *nl = memchr(t->buf, '\n', t->len);
    if (nl) {
      size_t n = (size_t)(nl - t->buf);
      snprintf(line, cap, "%.*s", (int)n, t->buf);
      memmove(t->buf, nl + 1, t->len - n - 1);
      t->len -= n + 1;
      return;
    }
    ssize_t r = read(t->fd, t->buf + t->len, sizeof t->buf - 1 - t->len);
    ck_assert_msg(r > 0, "the gateway closed the device's connection");
    t->len += (size_t)r;
  }
}

static void tcp_open(tcp_device *t, int port) {
  memset(t, 0, sizeof *t);
  t->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(t->fd, (struct sockaddr *)&a, sizeof a), 0);
  struct timeval tv = {PROC_PATIENCE_MS / 1000, 0}; /* a read never hangs the test */
  setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char line[512];
  tcp_send(t, "{\"type\":\"hello\",\"health\":true}\n");
  tcp_line(t, line, sizeof line);
  ck_assert_msg(strstr(line, "\"hello\""), "not a hello: %s", line);
}

/* The health check asked of node B, from a thread of its own while the
 * test answers as the device. */
typedef struct asked {
  const proc *node;
  int status;
  char body[4096];
} asked;

static void *ask_health(void *arg) {
  asked *a = arg;
  static char resp[4096];
  a->status = serve_get(a->node, "/api/devices/tcp-1/health?timeout_ms=20000", resp, sizeof resp);
  const char *body = strstr(resp, "\r\n\r\n");
  snprintf(a->body, sizeof a->body, "%s", body ? body + 4 : resp);
  return NULL;
}

/* Polls until every node's snapshot shows every device with the node
 * that aggregates it, with all its readings, and the same fleet total. */
static void wait_fleet(proc node[], const char *names[], int want_devices, long long want_total) {
  char why[512] = "";
  for (int i = 0; i < PROC_PATIENCE_MS / 50; i++) {
    cJSON *snap[NODES] = {0};
    int ok = 1;
    for (int k = 0; k < NODES; k++) snap[k] = get_json(&node[k], "/api/snapshot", NULL);
    for (int k = 0; k < NODES && ok; k++) {
      if (!snap[k]) {
        ok = 0, snprintf(why, sizeof why, "node %d: no snapshot", k);
        break;
      }
      int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(snap[k], "devices"));
      if (n != want_devices)
        ok = 0, snprintf(why, sizeof why, "node %d lists %d devices of %d", k, n, want_devices);
      else if (num_of(snap[k], "total_readings") != (double)want_total)
        ok = 0, snprintf(why, sizeof why, "node %d: total_readings %.0f, want %lld", k,
                         num_of(snap[k], "total_readings"), want_total);
      else if (num_of(snap[k], "nodes") != NODES)
        ok = 0, snprintf(why, sizeof why, "node %d: nodes %.0f", k, num_of(snap[k], "nodes"));
    }
    /* Each device: the node whose own snapshot calls it its own; every
     * other node names that one, with the same count. */
    const cJSON *d;
    if (ok) cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(snap[0], "devices")) {
        const char *name = str_of(d, "name");
        int owners = 0, owner = -1;
        for (int k = 0; k < NODES; k++) {
          const cJSON *e = device_in(snap[k], name);
          if (e && strcmp(str_of(e, "node"), names[k]) == 0) owners++, owner = k;
        }
        if (owners != 1) {
          ok = 0, snprintf(why, sizeof why, "device %s is its own on %d nodes", name, owners);
          break;
        }
        for (int k = 0; k < NODES && ok; k++) {
          const cJSON *e = device_in(snap[k], name);
          if (!e || strcmp(str_of(e, "node"), names[owner]) != 0 || num_of(e, "count") != num_of(d, "count") ||
              num_of(e, "last_seq") != num_of(d, "last_seq"))
            ok = 0,
            snprintf(why, sizeof why, "device %s on node %d: node %s count %.0f, its owner says %s %.0f", name, k,
                     e ? str_of(e, "node") : "(absent)", e ? num_of(e, "count") : -1, names[owner], num_of(d, "count"));
        }
        if (!ok) break;
      }
    for (int k = 0; k < NODES; k++) cJSON_Delete(snap[k]);
    if (ok) return;
    proc_sleep_ms(50);
  }
  ck_abort_msg("the fleet view is not whole: %s", why);
}

/* Polls until node p's snapshot shows every NATS device as its own, at
 * its latest reading. */
static void wait_taken_over(const proc *p, const char *name) {
  char why[256] = "";
  for (int i = 0; i < PROC_PATIENCE_MS / 50; i++) {
    cJSON *snap = get_json(p, "/api/snapshot", NULL);
    int ok = snap != NULL;
    for (int dev = 0; dev < DEVICES && ok; dev++) {
      char id[32];
      snprintf(id, sizeof id, "fleet-%d", dev);
      const cJSON *d = device_in(snap, id);
      if (!d || strcmp(str_of(d, "node"), name) != 0 || num_of(d, "last_seq") != READINGS + 1)
        ok = 0, snprintf(why, sizeof why, "%s: node %s, last_seq %.0f", id, d ? str_of(d, "node") : "(absent)",
                         d ? num_of(d, "last_seq") : -1);
    }
    cJSON_Delete(snap);
    if (ok) return;
    proc_sleep_ms(50);
  }
  ck_abort_msg("the dead node's devices were not taken over: %s", why);
}

START_TEST(test_serve_nats_fleet_view) {
  pg_cluster c;
  pg_cluster_start(&c);
  proc_dir d;
  proc_dir_init(&d);
  nats_server ns;
  nats_server_init(&d, &ns, mapping);
  nats_server_start(&d, &ns);
  proc node[NODES];
  int port_a = node_start(&d, &node[0], "fleet-a", &ns, &c);
  node_start(&d, &node[1], "fleet-b", &ns, &c);
  wait_balanced(node, NODES);
  const char *names[NODES];
  char name_buf[NODES][128];
  for (int k = 0; k < NODES; k++) {
    cJSON *snap = NULL;
    for (int i = 0; i < PROC_PATIENCE_MS / 20 && !(snap && *str_of(snap, "node")); i++) {
      cJSON_Delete(snap);
      snap = get_json(&node[k], "/api/snapshot", NULL);
      if (!(snap && *str_of(snap, "node"))) proc_sleep_ms(20);
    }
    ck_assert_msg(snap && *str_of(snap, "node"), "node %d does not say its name", k);
    snprintf(name_buf[k], sizeof name_buf[k], "%s", str_of(snap, "node"));
    names[k] = name_buf[k];
    cJSON_Delete(snap);
  }
  ck_assert_str_ne(names[0], names[1]);

  /* Devices over NATS, into partitions both nodes consume. */
  nats_pub pub;
  nats_pub_open(&pub, &ns);
  char subject[64], body[256];
  for (int seq = 1; seq <= READINGS; seq++)
    for (int dev = 0; dev < DEVICES; dev++) {
      snprintf(subject, sizeof subject, "telemetry.fleet-%d", dev);
      nats_json_reading(body, sizeof body, seq);
      nats_pub_send(&pub, subject, body);
    }
  nats_pub_close(&pub);
  /* And one over TCP to node A. */
  tcp_device t;
  tcp_open(&t, port_a);
  tcp_send(&t, "{\"device\":\"tcp-1\",\"seq\":1,\"ts\":1732590000001,\"temperature\":19.5,\"battery\":77}\n"
               "{\"device\":\"tcp-1\",\"seq\":2,\"ts\":1732590000002,\"temperature\":20.5,\"battery\":76}\n");
  wait_fleet(node, names, DEVICES + 1, (long long)DEVICES * READINGS + 2);
  /* Each node aggregated some NATS devices itself: the partitions are shared. */
  for (int k = 0; k < NODES; k++) ck_assert_int_gt(serve_metric(&node[k], "telegate_readings_aggregated_total"), 0);

  /* Health, asked of node B: forwarded to A, which asks the device. */
  asked a = {.node = &node[1]};
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, ask_health, &a), 0);
  char line[512];
  tcp_line(&t, line, sizeof line);
  unsigned long long id;
  ck_assert_msg(sscanf(line, "{\"type\":\"health\",\"id\":%llu}", &id) == 1, "not a health request: %s", line);
  char reply[160];
  snprintf(reply, sizeof reply, "{\"type\":\"health\",\"id\":%llu,\"uptime_s\":4321,\"battery\":66}\n", id);
  tcp_send(&t, reply);
  pthread_join(th, NULL);
  ck_assert_msg(a.status == 200, "health of tcp-1 on node B: %d %s", a.status, a.body);
  cJSON *h = cJSON_Parse(a.body);
  ck_assert_ptr_nonnull(h);
  ck_assert_str_eq(str_of(h, "result"), "ok");
  ck_assert_int_eq((int)num_of(h, "battery"), 66);
  ck_assert_int_eq((long long)num_of(h, "uptime_ms"), 4321000);
  cJSON_Delete(h);
  ck_assert_int_eq(serve_metric(&node[1], "telegate_fleet_health_forwarded_total"), 1);
  ck_assert_int_eq(serve_metric(&node[0], "telegate_fleet_health_answered_total"), 1);
  ck_assert_int_eq(serve_metric(&node[0], "telegate_fleet_nodes"), NODES);
  /* An id nobody sent: unknown on B as on A. */
  int status;
  cJSON_Delete(get_json(&node[1], "/api/devices/nobody/health", &status));
  ck_assert_int_eq(status, 404);
  close(t.fd);

  /* Node B dies. Its devices stay in A's view with their last state; A
   * takes its partitions over, and each device with its next reading. */
  ck_assert_int_eq(proc_signal_wait(&node[1], SIGKILL), -SIGKILL);
  cJSON *snap = get_json(&node[0], "/api/snapshot", NULL);
  ck_assert_ptr_nonnull(snap);
  ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(snap, "devices")), DEVICES + 1);
  cJSON_Delete(snap);
  wait_balanced(node, 1);
  nats_pub_open(&pub, &ns);
  for (int dev = 0; dev < DEVICES; dev++) {
    snprintf(subject, sizeof subject, "telemetry.fleet-%d", dev);
    nats_json_reading(body, sizeof body, READINGS + 1);
    nats_pub_send(&pub, subject, body);
  }
  nats_pub_close(&pub);
  wait_taken_over(&node[0], names[0]);

  ck_assert_int_eq(proc_signal_wait(&node[0], SIGTERM), 0);
  proc_signal_wait(&ns.p, SIGTERM);
  proc_dir_cleanup(&d);
  pg_cluster_destroy(&c);
}
END_TEST

int main(void) {
  nats_server_required();
  int r = pg_template_init();
  if (r != 0) return r;
  Suite *s = suite_create("serve-nats-fleet");
  tg_test_add(s, "view", test_serve_nats_fleet_view, 300);
  return tg_test_main(s);
}
