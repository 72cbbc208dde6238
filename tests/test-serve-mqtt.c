/* test-serve-mqtt.c - telegate serve subscribed to a real mosquitto,
 * started by the test on 127.0.0.1 on a free port with a generated
 * mosquitto.conf in the test's directory, and stopped after.
 *
 * - mosquitto_pub and a paho-mqtt publisher at QoS 1 (JSON without a
 *   device, the topic's id; line protocol with two readings a message):
 *   every reading stored once, a payload naming another device refused
 *   as wrong_device and acknowledged all the same.
 * - backpressure and kill -9: a window of 100 messages (--mqtt-inflight)
 *   against batches cut by age, so telegate sits at its bound while the
 *   broker holds the rest; serve is killed mid-stream and started again
 *   on the same database and client id: the broker sends what was not
 *   acknowledged again (DUP) and every reading is stored exactly once.
 * - the broker stopped and started again (over MQTT 3.1.1): serve says it
 *   is disconnected, reconnects with its backoff, and goes on storing; a
 *   broker that refuses its credentials is retried, and shown
 *   disconnected.
 * - an idle session kept up by PINGREQ/PINGRESP (--mqtt-keepalive-s 1).
 * - mqtts:// to a mosquitto TLS listener with the test's own CA
 *   (scripts/tls-certs.sh): stored with --mqtt-tls-ca, refused without.
 * - a broker that speaks 3.1.1 only (a fake one in a thread: mosquitto
 *   speaks both) refuses the MQTT 5 CONNECT, and serve goes on in 3.1.1.
 *
 * The broker keeps its default window for 3.1.1 clients, 20 messages:
 * over MQTT 5 telegate's own (--mqtt-inflight) replaces it.
 *
 * Progress is read from serve's /metrics (the database is read only once
 * serve is down); every wait is bounded and on its condition. */
#include "test-serve-process.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>

#define PYTHON "/usr/bin/python3" /* Debian's, where python3-paho-mqtt is */

typedef struct broker {
  proc p;
  int port;
  char conf[200];
} broker;

/* mosquitto.conf in d: a persistent broker with no cap on what it queues
 * for a session (max_queued_messages 0), so that nothing is dropped while
 * telegate is away, and its default window for 3.1.1 clients
 * (max_inflight_messages 20), which MQTT 5's Receive Maximum replaces;
 * `extra` lines are appended. */
static void broker_init(proc_dir *d, broker *b, const char *extra) {
  b->port = proc_free_port();
  snprintf(b->conf, sizeof b->conf, "%s/mosquitto.conf", d->path);
  FILE *f = fopen(b->conf, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f,
          "listener %d 127.0.0.1\npersistence true\npersistence_location %s/\nmax_queued_messages 0\n"
          "log_dest stdout\n%s%s",
          b->port, d->path, extra ? extra : "allow_anonymous true\n",
          geteuid() == 0 ? "user root\n" : ""); /* run as root it would drop to a user that cannot read d */
  fclose(f);
}

static void broker_start(proc_dir *d, broker *b) {
  proc_server_start(d, &b->p, "mosquitto", "/usr/sbin/mosquitto", b->conf, b->port);
}

/* serve with --mqtt to b, and more flags (NULL-ended). */
static void serve_mqtt_start(proc_dir *d, proc *p, const broker *b, const char *const more[]) {
  static char url[64];
  snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", b->port);
  const char *flags[24] = {"--mqtt", url, "--mqtt-client-id", "telegate-test", "--drain-ms", "500"};
  int n = 6;
  for (int i = 0; more && more[i]; i++) flags[n++] = more[i];
  flags[n] = NULL;
  serve_proc_start(d, p, 0, flags);
}

/* Runs a shell command (a publisher) to its end, bounded by timeout(1). */
static void run(const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  char bounded[2100];
  snprintf(bounded, sizeof bounded, "timeout 120 %s", cmd);
  int status = system(bounded);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "failed (%d): %s", status, cmd);
}

/* A file of n JSON readings of seqs from..from+n-1, one a line, without
 * a device (mosquitto_pub -l sends each line as a message). */
static void json_lines(const char *path, int from, int n) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  for (int s = from; s < from + n; s++)
    fprintf(f, "{\"seq\":%d,\"ts\":%lld,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}\n", s,
            1732590000000LL + s);
  fclose(f);
}

/* The paho-mqtt publisher: n readings of device `dev` at QoS 1, two
 * line-protocol lines a message; waits until the broker acknowledged
 * every message. */
static const char paho_script[] =
    "import sys, time\n"
    "import paho.mqtt.client as mqtt\n"
    "port, dev, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])\n"
    "c = mqtt.Client(client_id='paho-' + dev, clean_session=True)\n"
    "c.max_inflight_messages_set(100)\n"
    "c.connect('127.0.0.1', port)\n"
    "c.loop_start()\n"
    "line = 'telemetry,device={} temperature=21.5,humidity=48.2,battery=87i,seq={}i {}000000'\n"
    "infos = [c.publish('telemetry/{}/readings'.format(dev),\n"
    "                   '\\n'.join(line.format(dev, s, 1732590000000 + s) for s in (i, i + 1)), qos=1)\n"
    "         for i in range(1, n + 1, 2)]\n"
    "deadline = time.time() + 60\n"
    "while not all(i.is_published() for i in infos):\n"
    "    if time.time() > deadline: sys.exit('not all published')\n"
    "    time.sleep(0.01)\n"
    "c.disconnect()\n"
    "c.loop_stop()\n";

START_TEST(test_serve_mqtt_publishers_all_stored) {
  enum { N = 400 };
  proc_dir d;
  proc_dir_init(&d);
  broker b;
  broker_init(&d, &b, NULL);
  broker_start(&d, &b);
  proc serve;
  serve_mqtt_start(&d, &serve, &b, (const char *const[]){"--batch-age-ms", "50", NULL});
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  char path[200];
  snprintf(path, sizeof path, "%s/readings.txt", d.path);
  json_lines(path, 1, N);
  run("mosquitto_pub -p %d -q 1 -i pub-test -t telemetry/pub-1/readings -l < %s", b.port, path);
  snprintf(path, sizeof path, "%s/publish-paho.py", d.path); /* not paho.py: it would hide the package */
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(paho_script, f);
  fclose(f);
  run(PYTHON " %s %d paho-1 %d", path, b.port, N);
  /* another device in the payload than in the topic */
  run("mosquitto_pub -p %d -q 1 -t telemetry/pub-1/readings -m "
      "'{\"device\":\"pub-2\",\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}'",
      b.port);
  serve_wait_metric(&serve, "telegate_readings_stored_total", 2 * N);
  /* every message acknowledged: mosquitto_pub's N, paho's N/2, the refused one */
  serve_wait_metric(&serve, "telegate_mqtt_acks_total", N + N / 2 + 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_messages_total"), N + N / 2 + 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_bad_input_total{reason=\"wrong_device\"}"), 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_inflight"), 0);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  db_has_seqs(d.db, "pub-1", N);
  db_has_seqs(d.db, "paho-1", N);
  ck_assert_int_eq(db_rows(d.db), 2 * N);
  proc_signal_wait(&b.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

START_TEST(test_serve_mqtt_backpressure_kill_redelivery) {
  enum { N = 2000, WINDOW = 100 };
  proc_dir d;
  proc_dir_init(&d);
  broker b;
  broker_init(&d, &b, NULL);
  broker_start(&d, &b);
  /* Batches are cut by age, after the window filled: telegate waits at
   * its bound for most of each cycle. */
  const char *const flags[] = {"--mqtt-inflight", "100", "--batch-size", "1000", "--batch-age-ms", "150", NULL};
  proc serve;
  serve_mqtt_start(&d, &serve, &b, flags);
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_inflight_capacity"), WINDOW);
  char path[200];
  snprintf(path, sizeof path, "%s/readings.txt", d.path);
  json_lines(path, 1, N);
  /* All N go to the broker, which acknowledges them to the publisher and
   * holds them for telegate. */
  run("mosquitto_pub -p %d -q 1 -t telemetry/bp/readings -l < %s", b.port, path);
  int64_t inflight = 0, at_bound = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 5 && !at_bound; i++) {
    inflight = serve_metric(&serve, "telegate_mqtt_inflight");
    ck_assert_int_le(inflight, WINDOW);
    at_bound = inflight == WINDOW;
    if (!at_bound) proc_sleep_ms(5);
  }
  ck_assert_msg(at_bound, "telegate never held its window of %d messages (last %lld)", WINDOW, (long long)inflight);
  /* Mid-stream: killed with a full window unacknowledged. */
  serve_wait_metric(&serve, "telegate_readings_stored_total", 400);
  int64_t stored = serve_metric(&serve, "telegate_readings_stored_total");
  ck_assert_int_lt(stored, N);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGKILL), -SIGKILL);
  serve_mqtt_start(&d, &serve, &b, flags);
  /* The broker sends the unacknowledged again, then the rest; a message
   * published now comes after all of them. */
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  run("mosquitto_pub -p %d -q 1 -t telemetry/last/readings -m "
      "'{\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}'",
      b.port);
  serve_wait_metric(&serve, "telegate_devices_known", 2);
  int64_t messages = serve_wait_metric(&serve, "telegate_mqtt_messages_total", 1);
  serve_wait_metric(&serve, "telegate_mqtt_acks_total", messages);
  ck_assert_int_ge(serve_metric(&serve, "telegate_mqtt_redelivered_total"), 1);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  db_has_seqs(d.db, "bp", N);
  db_has_seqs(d.db, "last", 1);
  proc_signal_wait(&b.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

START_TEST(test_serve_mqtt_broker_restart_and_refusal) {
  proc_dir d;
  proc_dir_init(&d);
  broker b;
  broker_init(&d, &b, NULL);
  broker_start(&d, &b);
  proc serve;
  serve_mqtt_start(&d, &serve, &b, (const char *const[]){"--batch-age-ms", "50", "--mqtt-version", "3.1.1", NULL});
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  ck_assert_int_eq(proc_signal_wait(&b.p, SIGTERM), 0);
  int64_t down = 1;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && (down = serve_metric(&serve, "telegate_mqtt_connected")) != 0; i++)
    proc_sleep_ms(10);
  ck_assert_int_eq(down, 0);
  serve_wait_metric(&serve, "telegate_mqtt_connect_failures_total", 1); /* retrying while it is away */
  broker_start(&d, &b);
  serve_wait_metric(&serve, "telegate_mqtt_connects_total", 2);
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  run("mosquitto_pub -p %d -q 1 -t telemetry/after/readings -m "
      "'{\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}'",
      b.port);
  serve_wait_metric(&serve, "telegate_readings_stored_total", 1);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  ck_assert_int_eq(proc_signal_wait(&b.p, SIGTERM), 0);

  /* A broker that wants a password telegate does not have. */
  char pw[200], cmd[400];
  snprintf(pw, sizeof pw, "%s/passwd", d.path);
  snprintf(cmd, sizeof cmd, "mosquitto_passwd -c -b %s telegate right-password", pw);
  ck_assert_int_eq(system(cmd), 0);
  char extra[300];
  snprintf(extra, sizeof extra, "allow_anonymous false\npassword_file %s\n", pw);
  broker_init(&d, &b, extra);
  broker_start(&d, &b);
  char wrong[200];
  snprintf(wrong, sizeof wrong, "%s/wrong", d.path);
  FILE *f = fopen(wrong, "w");
  ck_assert_ptr_nonnull(f);
  fputs("wrong-password\n", f);
  fclose(f);
  serve_mqtt_start(&d, &serve, &b,
                   (const char *const[]){"--mqtt-username", "telegate", "--mqtt-password-file", wrong, NULL});
  serve_wait_metric(&serve, "telegate_mqtt_connect_failures_total", 2);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_connected"), 0);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_connects_total"), 0);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  char log[1 << 14];
  proc_read_file(serve.out, log, sizeof log);
  ck_assert_msg(strstr(log, "the broker refused the connection"), "no reason in the log: %s", log);
  proc_signal_wait(&b.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

/* Occurrences of needle in the file at path. */
static int count_in_file(const char *path, const char *needle) {
  static char text[1 << 20];
  proc_read_file(path, text, sizeof text);
  int n = 0;
  for (const char *at = text; (at = strstr(at, needle)); at += strlen(needle)) n++;
  return n;
}

/* An idle session stays up: telegate pings within its keepalive and the
 * broker answers (both seen in the broker's log). */
START_TEST(test_serve_mqtt_keepalive) {
  proc_dir d;
  proc_dir_init(&d);
  broker b;
  char log[200], extra[300];
  snprintf(log, sizeof log, "%s/broker.log", d.path); /* a file is flushed line by line, stdout is not */
  snprintf(extra, sizeof extra, "allow_anonymous true\nlog_type all\nlog_dest file %s\n", log);
  broker_init(&d, &b, extra);
  broker_start(&d, &b);
  proc serve;
  serve_mqtt_start(&d, &serve, &b, (const char *const[]){"--mqtt-keepalive-s", "1", NULL});
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  int pings = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && (pings = count_in_file(log, "Received PINGREQ from telegate-test")) < 3;
       i++)
    proc_sleep_ms(10);
  ck_assert_int_ge(pings, 3);
  ck_assert_int_ge(count_in_file(log, "Sending PINGRESP to telegate-test"), 2);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_disconnects_total"), 0);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_connected"), 1);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  proc_signal_wait(&b.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

/* mqtts://: the broker's certificate checked against --mqtt-tls-ca, and
 * refused without it (a CA of the test's own is not the system's). */
START_TEST(test_serve_mqtt_tls) {
  proc_dir d;
  proc_dir_init(&d);
  char certs[200], cmd[400];
  snprintf(certs, sizeof certs, "%s/certs", d.path);
  snprintf(cmd, sizeof cmd, "bash %s %s server >/dev/null", TLS_CERTS_SCRIPT, certs);
  ck_assert_int_eq(system(cmd), 0);
  char extra[800];
  snprintf(extra, sizeof extra,
           "allow_anonymous true\ncafile %s/ca.pem\ncertfile %s/server.pem\nkeyfile %s/server.key\n", certs, certs,
           certs);
  broker b;
  broker_init(&d, &b, extra);
  broker_start(&d, &b);
  char url[64], ca[240];
  snprintf(url, sizeof url, "mqtts://127.0.0.1:%d", b.port);
  snprintf(ca, sizeof ca, "%s/ca.pem", certs);
  proc serve;
  const char *argv_flags[] = {"--mqtt",   url, "--mqtt-tls-ca", ca, "--batch-age-ms", "50", "--mqtt-client-id",
                              "tls-test", NULL};
  serve_proc_start(&d, &serve, 0, argv_flags);
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  run("mosquitto_pub -h 127.0.0.1 -p %d --cafile %s -q 1 -t telemetry/tls-1/readings -m "
      "'{\"seq\":1,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}'",
      b.port, ca);
  serve_wait_metric(&serve, "telegate_readings_stored_total", 1);
  serve_wait_metric(&serve, "telegate_mqtt_acks_total", 1);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  char log[1 << 14];
  proc_read_file(serve.out, log, sizeof log);
  ck_assert_msg(strstr(log, "(TLS TLSv1."), "no TLS in the log: %s", log);
  /* Without the CA: the handshake is refused, retried, said in the log. */
  serve_proc_start(&d, &serve, 0, (const char *const[]){"--mqtt", url, NULL});
  serve_wait_metric(&serve, "telegate_mqtt_connect_failures_total", 2);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_connected"), 0);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  proc_read_file(serve.out, log, sizeof log);
  ck_assert_msg(strstr(log, "certificate verify failed"), "log: %s", log);
  proc_signal_wait(&b.p, SIGTERM);
  proc_dir_cleanup(&d);
}
END_TEST

/* A broker that speaks 3.1.1 only: it answers a CONNECT of level 5 with
 * 3.1.1's "unacceptable protocol version" and closes; a level 4 one is
 * accepted and its SUBSCRIBE granted, then it waits for the end. */
typedef struct fake_broker {
  int listener, port;
  int levels[4]; /* the protocol level of each CONNECT */
  int connects;
} fake_broker;

static int read_exact(int fd, uint8_t *buf, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* One packet's first byte and body (at most cap bytes); -1 at the end. */
static int read_packet(int fd, uint8_t *first, uint8_t *body, size_t cap) {
  uint8_t b;
  if (read_exact(fd, first, 1) != 0) return -1;
  size_t len = 0;
  for (int shift = 0;; shift += 7) {
    if (read_exact(fd, &b, 1) != 0) return -1;
    len |= (size_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) break;
  }
  return len <= cap && read_exact(fd, body, len) == 0 ? (int)len : -1;
}

static void *fake_broker_run(void *arg) {
  fake_broker *f = arg;
  for (int i = 0; i < 2; i++) {
    int fd = accept(f->listener, NULL, NULL);
    if (fd < 0) return NULL;
    uint8_t first, body[512];
    if (read_packet(fd, &first, body, sizeof body) < 7 || first != 0x10) {
      close(fd);
      return NULL;
    }
    int level = body[6]; /* after the protocol name "MQTT" */
    f->levels[f->connects++] = level;
    static const uint8_t refused[] = {0x20, 2, 0, 1}, accepted[] = {0x20, 2, 0, 0};
    if (level != 4) {
      ssize_t w = write(fd, refused, sizeof refused); /* no assertion off the test's thread */
      (void)w;
      close(fd);
      continue;
    }
    int n = write(fd, accepted, sizeof accepted) == (ssize_t)sizeof accepted
                ? read_packet(fd, &first, body, sizeof body)
                : -1;
    if (n >= 2 && first == 0x82) {
      uint8_t suback[] = {0x90, 3, body[0], body[1], 1};
      if (write(fd, suback, sizeof suback) != (ssize_t)sizeof suback) n = -1;
    }
    while (read_packet(fd, &first, body, sizeof body) >= 0) { /* pings, until serve ends */
      static const uint8_t pong[] = {0xd0, 0};
      if (first == 0xc0 && write(fd, pong, sizeof pong) != (ssize_t)sizeof pong) break;
    }
    close(fd);
  }
  return NULL;
}

START_TEST(test_serve_mqtt_falls_back_to_311) {
  proc_dir d;
  proc_dir_init(&d);
  fake_broker f = {0};
  f.listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(f.listener, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  ck_assert_int_eq(getsockname(f.listener, (struct sockaddr *)&a, &len), 0);
  ck_assert_int_eq(listen(f.listener, 4), 0);
  broker b = {.port = ntohs(a.sin_port)};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, fake_broker_run, &f), 0);
  proc serve;
  serve_mqtt_start(&d, &serve, &b, NULL);
  serve_wait_metric(&serve, "telegate_mqtt_connected", 1);
  ck_assert_int_eq(serve_metric(&serve, "telegate_mqtt_connect_failures_total"), 1);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  pthread_join(t, NULL);
  close(f.listener);
  ck_assert_int_eq(f.connects, 2);
  ck_assert_int_eq(f.levels[0], 5);
  ck_assert_int_eq(f.levels[1], 4);
  char log[1 << 14];
  proc_read_file(serve.out, log, sizeof log);
  ck_assert_msg(strstr(log, "does not speak MQTT 5") && strstr(log, "MQTT 3.1.1: connected"), "log: %s", log);
  proc_dir_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-mqtt");
  tg_test_add(s, "publishers_all_stored", test_serve_mqtt_publishers_all_stored, 300);
  tg_test_add(s, "backpressure_kill_redelivery", test_serve_mqtt_backpressure_kill_redelivery, 300);
  tg_test_add(s, "broker_restart_and_refusal", test_serve_mqtt_broker_restart_and_refusal, 300);
  tg_test_add(s, "falls_back_to_311", test_serve_mqtt_falls_back_to_311, 300);
  tg_test_add(s, "keepalive", test_serve_mqtt_keepalive, 300);
  tg_test_add(s, "tls", test_serve_mqtt_tls, 300);
  return tg_test_main(s);
}
