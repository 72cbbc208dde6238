/* test-serve-load.c - many devices and a misbehaving one: a device that
 * stops reading its socket stalls only its own connection (which is
 * closed after --write-timeout-ms) while the others' readings and health
 * checks go on; 1,000 devices connected at once all get every reading
 * stored exactly. */
#include "test-serve.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t fig_write_timeouts(const serve_figures *f) { return f->connections_write_timeouts; }

typedef struct deaf {
  int port;
  uint64_t bytes;
  int ended; /* its writes failed: serve closed it */
} deaf;

/* A device with a tiny receive buffer that never reads, sending bad
 * lines: every one is answered, and the answers pile up unread. */
static void *deaf_device(void *arg) {
  deaf *d = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0); /* loopback: at once */
  tg_tcp *sock;
  ck_assert_int_eq(tg_tcp_open(&sock, fd), 0);
  char chunk[4096];
  for (size_t i = 0; i < sizeof chunk; i += 2) memcpy(chunk + i, "x\n", 2);
  while (d->bytes < (size_t)256 * 1024 * 1024) {
    if (tg_tcp_write_dl(sock, chunk, sizeof chunk, tg_deadline_in(TG_SEC(10))) != 0) {
      d->ended = 1;
      break;
    }
    d->bytes += sizeof chunk;
  }
  tg_tcp_close(sock);
  return NULL;
}

typedef struct slow {
  serve_test t;
  sim_report rep;
  deaf d;
  int health;
  uint64_t timeouts_during;
} slow;

static void *deaf_body(void *arg) {
  slow *x = arg;
  serve_test_start(&x->t);
  x->d.port = serve_port(x->t.s);
  tg_task *deaf_task;
  ck_assert_int_eq(tg_spawn(&deaf_task, deaf_device, &x->d, NULL), 0);
  sim_config sc;
  sim_config_defaults(&sc);
  sc.port = serve_port(x->t.s);
  sc.count = 5;
  sc.rate_hz = 100;
  sc.duration_s = 3600; /* until sim_stop: they are still there for the health check */
  sc.quiet = 1;
  sim *sm;
  ck_assert_int_eq(sim_start(&sc, &sm), 0);
  /* While the deaf device's connection waits on its write, the others
   * answer health checks ... */
  ck_assert_uint_ge(serve_test_wait_for(x->t.s, fig_received, 20, SERVE_TEST_PATIENCE), 20);
  device_status st;
  x->health = serve_health_check(x->t.s, "dev-1", TG_SEC(10), &st);
  /* ... and it is closed for not reading: once the error lines fill its
   * socket, which takes the server tens of thousands of lines - seconds
   * under TSan on a loaded machine, hence the generous bound. */
  x->timeouts_during = serve_test_wait_for(x->t.s, fig_write_timeouts, 1, TG_SEC(60));
  sim_stop(sm);
  ck_assert_int_eq(sim_wait(sm, &x->rep), 0);
  tg_task_join(deaf_task, NULL);
  ck_assert_int_eq(serve_test_stop(&x->t), 0);
  return NULL;
}

START_TEST(test_serve_load_deaf_device) {
  slow x;
  memset(&x, 0, sizeof x);
  serve_test_init(&x.t);
  x.t.cfg.error_limit = 0;               /* never closed for its bad lines ... */
  x.t.cfg.error_lines_per_s = 100000000; /* ... and each one answered */
  x.t.cfg.write_timeout_ms = 300;
  x.t.cfg.bandwidth_permits = 1; /* a stalled holder would stall everyone */
  tg_test_run(2, 0, deaf_body, &x);
  ck_assert_int_eq(x.health, 0);
  ck_assert_uint_eq(x.timeouts_during, 1);
  ck_assert_int_eq(x.d.ended, 1);
  ck_assert_uint_eq(x.t.final.connections_write_timeouts, 1);
  ck_assert_uint_gt(x.t.final.bad_lines, 1000);
  ck_assert_uint_eq(serve_test_check_db(&x.t, &x.rep, "dev-"), x.rep.sent);
  ck_assert_uint_eq(x.t.final.readings_stored, x.rep.sent);
  sim_report_free(&x.rep);
  serve_test_cleanup(&x.t);
}
END_TEST

typedef struct many {
  serve_test t;
  sim_config sc;
  sim_report rep;
  uint64_t open_at_once, known;
} many;

static uint64_t fig_known(const serve_figures *f) { return f->devices_known; }

/* The devices stay connected until they are stopped, so "all connected
 * at once" and "every device sent" are facts of the run, not of how fast
 * the machine connected them. */
static void *many_body(void *arg) {
  many *m = arg;
  serve_test_start(&m->t);
  m->sc.port = serve_port(m->t.s);
  sim *sm;
  ck_assert_int_eq(sim_start(&m->sc, &sm), 0);
  uint64_t n = (uint64_t)m->sc.count;
  m->open_at_once = serve_test_wait_for(m->t.s, fig_open, n, TG_SEC(60));
  m->known = serve_test_wait_for(m->t.s, fig_known, n, TG_SEC(60));
  sim_stop(sm);
  ck_assert_int_eq(sim_wait(sm, &m->rep), 0);
  ck_assert_int_eq(serve_test_stop(&m->t), 0);
  return NULL;
}

/* ThreadSanitizer keeps shadow state per task (a fiber to it) and makes
 * every switch far dearer: 2,000 tasks there (1,000 devices and their
 * 1,000 connections in one process) take longer than a test may. Its
 * build runs the same test with 250; the plain and ASan builds with 1,000. */
#if defined(__SANITIZE_THREAD__)
#define MANY 250
#else
#define MANY 1000
#endif

START_TEST(test_serve_load_1000_connections) {
  struct rlimit rl; /* two descriptors per device in this process */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2200) {
    rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  many m;
  memset(&m, 0, sizeof m);
  serve_test_init(&m.t);
  sim_config_defaults(&m.sc);
  m.sc.count = MANY;
  m.sc.rate_hz = 5;
  m.sc.duration_s = 3600; /* until sim_stop */
  m.sc.quiet = 1;
  m.sc.workers = 2;
  tg_test_run(2, 0, many_body, &m);
  ck_assert_uint_eq(m.open_at_once, MANY);
  ck_assert_uint_eq(m.known, MANY);
  ck_assert_uint_eq(m.t.final.connections_accepted, MANY);
  ck_assert_uint_eq(m.t.final.devices_known, MANY);
  for (int i = 0; i < m.rep.count; i++)
    ck_assert_msg(m.rep.devices[i].sent > 0, "%s sent nothing", m.rep.devices[i].id);
  ck_assert_uint_ge(m.rep.sent, MANY);
  ck_assert_uint_eq(serve_test_check_db(&m.t, &m.rep, "dev-"), m.rep.sent);
  sim_report_free(&m.rep);
  serve_test_cleanup(&m.t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-load");
  tg_test_add(s, "deaf_device", test_serve_load_deaf_device, 150);
  tg_test_add(s, "1000_connections", test_serve_load_1000_connections, 150);
  return tg_test_main(s);
}
