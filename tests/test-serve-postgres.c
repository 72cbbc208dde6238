/* test-serve-postgres.c - the real `telegate serve --storage postgres`
 * with the real `telegate devices`, against a PostgreSQL server of the
 * test's own (test-postgres.h): every reading acked and stored once over
 * two pool connections; and the server stopped under serve - shut down,
 * then crashed - and started again while the devices go on sending:
 * serve retries until it is back, and with --durability full every
 * reading is stored exactly once, none of the acked ones lost; and
 * line protocol of several measurements, each stored in its own table,
 * whose types a restarted serve keeps. */
#include "test-postgres.h"
#include "test-serve-process.h"

/* The database holds, for every device of the report, exactly its seqs
 * 1..generated, once each, and nothing of any other device. Returns the
 * rows. */
static uint64_t pg_check_report(const pg_cluster *c, const cJSON *report) {
  PGconn *pg = pg_connect(c);
  PGresult *res =
      PQprepare(pg, "per_device",
                "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings WHERE device = $1", 1, NULL);
  ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
  PQclear(res);
  uint64_t rows = 0;
  const cJSON *dev;
  cJSON_ArrayForEach(dev, cJSON_GetObjectItemCaseSensitive(report, "devices")) {
    const char *id = cJSON_GetObjectItemCaseSensitive(dev, "id")->valuestring;
    long long generated = (long long)json_u64(dev, "generated");
    res = PQexecPrepared(pg, "per_device", 1, &id, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10), distinct = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    ck_assert_msg(n == generated, "%s: %lld stored, %lld generated", id, n, generated);
    ck_assert_msg(distinct == n, "%s: %lld rows, %lld distinct seqs", id, n, distinct);
    if (n) {
      ck_assert_int_eq(strtoll(PQgetvalue(res, 0, 2), NULL, 10), 1);
      ck_assert_int_eq(strtoll(PQgetvalue(res, 0, 3), NULL, 10), generated);
    }
    PQclear(res);
    rows += (uint64_t)n;
  }
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM readings"), (long long)rows); /* no unknown device */
  PQfinish(pg);
  return rows;
}

START_TEST(test_serve_postgres_all_acked) {
  pg_cluster c;
  pg_cluster_start(&c);
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  const char *const flags[] = {"--storage", "postgres", "--db", c.uri, "--db-pool", "2", NULL};
  int port = serve_proc_start(&d, &serve, 0, flags);
  devices_run dev;
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "20", "--rate", "100", "--duration", "1", "--ack-wait-s", "60", NULL});
  int status = proc_wait(&dev.p);
  char err[1024];
  proc_read_file(dev.p.err, err, sizeof err);
  ck_assert_msg(status == 0, "devices exited %d: %s", status, err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  cJSON *report = devices_report_load(dev.report);
  devices_report_all_acked(report);
  ck_assert_uint_eq(pg_check_report(&c, report), json_u64(report, "generated"));
  cJSON_Delete(report);
  proc_dir_cleanup(&d);
  pg_cluster_destroy(&c);
}
END_TEST

START_TEST(test_serve_postgres_server_restarts) {
  pg_cluster c;
  pg_cluster_start(&c);
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  const char *const flags[] = {"--storage", "postgres", "--db", c.uri, "--db-pool", "2", "--durability", "full", NULL};
  int port = serve_proc_start(&d, &serve, 0, flags);
  devices_run dev;
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "10", "--rate", "200", "--duration", "3600", "--ack-wait-s", "60", NULL});
  proc_wait_catches(&dev.p, SIGINT);
  int64_t stored = 300;
  serve_wait_stored(&serve, stored);
  const int stops[] = {SIGINT, SIGQUIT}; /* PostgreSQL's fast shutdown, then a crash */
  for (int k = 0; k < 2; k++) {
    pg_cluster_stop(&c, stops[k]);
    pg_sleep_ms(300); /* down a while: commits fail, readings pile up */
    pg_cluster_run(&c);
    int64_t now = serve_stored(&serve);
    ck_assert_int_ge(now, stored);
    stored = now + 300; /* commits again after the server came back */
    serve_wait_stored(&serve, stored);
  }
  int status = proc_signal_wait(&dev.p, SIGINT);
  char err[1024];
  proc_read_file(dev.p.err, err, sizeof err);
  ck_assert_msg(status == 0, "devices exited %d: %s", status, err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  static char out[1 << 18];
  proc_read_file(serve.out, out, sizeof out);
  ck_assert_msg(strstr(out, "Storage failing") && strstr(out, "Storage recovered"), "serve's log: %s", out);
  cJSON *report = devices_report_load(dev.report);
  devices_report_all_acked(report);
  ck_assert_uint_eq(pg_check_report(&c, report), json_u64(report, "generated"));
  cJSON_Delete(report);
  proc_dir_cleanup(&d);
  pg_cluster_destroy(&c);
}
END_TEST

/* Sends text to serve's device port and waits until serve has committed
 * `stored` readings in all. */
static void send_lines(const proc *serve, int port, const char *text, int64_t stored) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  serve_wait_stored(serve, stored);
  close(fd);
}

/* Line protocol of three measurements through serve: each in its own
 * table, a column per field. Restarted, serve reads the stored types
 * back: a JSON number for an integer field stays an integer. */
START_TEST(test_serve_postgres_measurements) {
  pg_cluster c;
  pg_cluster_start(&c);
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  const char *const flags[] = {"--storage", "postgres", "--db", c.uri, "--db-pool", "2", NULL};
  int port = serve_proc_start(&d, &serve, 0, flags);
  send_lines(&serve, port,
             "weather,device=w1,room=kitchen temp=21.5,count=3i,seq=1i 1700000000001000000\n"
             "telemetry,device=w1 temperature=20.5,humidity=40,battery=80i,seq=2i 1700000000002000000\n"
             "door,device=w2 open=t,note=\"front\",seq=1i 1700000000003000000\n",
             3);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  PGconn *pg = pg_connect(&c);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM weather WHERE device = 'w1' AND room = 'kitchen'"
                                " AND temp = 21.5 AND count = 3"),
                   1);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM readings WHERE device = 'w1' AND battery = 80"), 1);
  ck_assert_int_eq(pg_value(pg, "SELECT count(*) FROM door WHERE device = 'w2' AND open AND note = 'front'"), 1);

  port = serve_proc_start(&d, &serve, port, flags);
  send_lines(&serve, port,
             "{\"measurement\":\"weather\",\"device\":\"w1\",\"seq\":3,\"ts\":1700000000004,\"count\":12}\n", 1);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  ck_assert_int_eq(pg_value(pg, "SELECT count FROM weather WHERE seq = 3"), 12);
  PQfinish(pg);
  proc_dir_cleanup(&d);
  pg_cluster_destroy(&c);
}
END_TEST

int main(void) {
  int r = pg_template_init();
  if (r != 0) return r;
  Suite *s = suite_create("serve-postgres");
  tg_test_add(s, "all_acked", test_serve_postgres_all_acked, 300);
  tg_test_add(s, "server_restarts", test_serve_postgres_server_restarts, 300);
  tg_test_add(s, "measurements", test_serve_postgres_measurements, 300);
  return tg_test_main(s);
}
