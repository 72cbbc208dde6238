/* test-serve-sighup.c - the telegate binary as an operator runs it: SIGHUP
 * while devices send reloads the config file and costs nothing - the new
 * log level takes effect, a change that needs a restart is reported, not
 * ignored, and serve goes on reading and storing - and the SIGTERM after
 * it (with a hang-up on its heels, as systemd's SendSIGHUP= sends) ends
 * serve in order: exit 0, the summary, and every reading the simulator
 * sent in the database, once.
 *
 * Real processes throughout: serve and two fleets of `telegate devices`.
 * Every wait is on a condition (a log line, the signal mask in /proc, a
 * figure of /metrics, an exit) with a generous deadline, never a fixed sleep. */
#include "test-process.h"

#include <cjson/cJSON.h>

/* A fleet's report (--report-json): the rows the database must hold, per
 * device 1..sent. Returns the readings sent. */
static void write_config(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_ge(fputs(text, f), 0);
  ck_assert_int_eq(fclose(f), 0);
}

/* Whether serve closes a device connection that sends `bad` lines of
 * garbage: reads until the end, within the patience. */
static int closed_after_bad_lines(int port, int bad) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct timeval tv = {PATIENCE_S, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (int i = 0; i < bad; i++) ck_assert_int_eq(write(fd, "garbage\n", 8), 8);
  char buf[512];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) { /* the error lines */
  }
  close(fd);
  return n == 0;
}

static uint64_t check_fleet(const char *report, const char *db_path) {
  char *text = slurp(report);
  cJSON *j = cJSON_Parse(text);
  free(text);
  ck_assert_msg(j != NULL, "no report in %s", report);
  ck_assert_int_eq((int)cJSON_GetObjectItem(j, "connect_failures")->valuedouble, 0);
  ck_assert_int_eq((int)cJSON_GetObjectItem(j, "write_failures")->valuedouble, 0);
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(
      sqlite3_prepare_v2(db, "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM readings WHERE device = ?1",
                         -1, &st, NULL),
      SQLITE_OK);
  uint64_t sent = 0;
  const cJSON *d;
  cJSON_ArrayForEach(d, cJSON_GetObjectItem(j, "devices")) {
    const char *id = cJSON_GetObjectItem(d, "id")->valuestring;
    int64_t n = (int64_t)cJSON_GetObjectItem(d, "sent")->valuedouble;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_msg(sqlite3_column_int64(st, 0) == n, "%s: %lld rows, %lld sent", id,
                  (long long)sqlite3_column_int64(st, 0), (long long)n);
    ck_assert_int_eq(sqlite3_column_int64(st, 1), n);
    if (n > 0) {
      ck_assert_int_eq(sqlite3_column_int64(st, 2), 1);
      ck_assert_int_eq(sqlite3_column_int64(st, 3), n);
    }
    sqlite3_reset(st);
    sent += (uint64_t)n;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  ck_assert_uint_eq(sent, (uint64_t)cJSON_GetObjectItem(j, "sent")->valuedouble);
  cJSON_Delete(j);
  return sent;
}

START_TEST(test_serve_sighup_loses_nothing) {
  dir_init();
  link_binary();
  const char *db = dir_file("serve.db");
  dir_file("serve.db-wal");
  dir_file("serve.db-shm");
  const char *serve_log = dir_file("serve.log");
  const char *before_log = dir_file("before.log"), *before_json = dir_file("before.json");
  const char *after_log = dir_file("after.log"), *after_json = dir_file("after.json");

  const char *config = dir_file("serve.ini");
  write_config(config, "[serve]\nbatch-age-ms = 50\nlog-level = info\n");
  const char *serve_argv[] = {
      NULL,   "serve", "--listen-devices", "127.0.0.1:0", "--listen-http", "127.0.0.1:0", "--db", db, "--config",
      config, NULL};
  pid_t serve = start(serve_argv, serve_log);
  wait_for_log(serve, serve_log, "telegate serve: devices on 127.0.0.1:", 1);
  char *text = slurp(serve_log);
  int port = atoi(strstr(text, "devices on 127.0.0.1:") + strlen("devices on 127.0.0.1:"));
  free(text);
  ck_assert_int_gt(port, 0);
  wait_for_log(serve, serve_log, "/metrics on http://127.0.0.1:", 1);
  int http_port = http_port_of(serve_log);
  char connect[32];
  snprintf(connect, sizeof connect, "127.0.0.1:%d", port);
  wait_until_caught(serve, SIGHUP); /* its handlers are installed */

  /* A fleet sends; once its readings are being committed, the file
   * changes and two hang-ups come. */
  const char *before_argv[] = {
      NULL,         "devices", "--connect",   connect,   "--count",       "5",         "--rate",  "200",
      "--duration", "3",       "--id-prefix", "before-", "--report-json", before_json, "--quiet", NULL};
  pid_t before = start(before_argv, before_log);
  wait_stored_above(http_port, 0);
  write_config(config, "[serve]\nbatch-age-ms = 50\nlog-level = warn\nbatch-size = 500\nerror-limit = 3\n");
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  wait_for_log(serve, serve_log, "SIGHUP: configuration reloaded: 3 changed, 2 applied live", 1);
  /* The new limit holds for a connection: three bad lines and it is closed. */
  ck_assert(closed_after_bad_lines(port, 3));
  ck_assert_int_eq(occurrences(serve_log, "SIGHUP: log-level = warn (was: log-level = info)"), 1);
  ck_assert_int_eq(
      occurrences(serve_log, "SIGHUP: batch-size = 500 takes a restart, not applied (running: batch-size = 1000)"), 1);
  int64_t stored_at_hup = (int64_t)metric(http_port, "telegate_readings_stored_total");
  /* The second: the level is warn now, so only the warning is logged. */
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  wait_for_log(serve, serve_log, "SIGHUP: batch-size = 500 takes a restart", 2);
  ck_assert_int_eq(occurrences(serve_log, "SIGHUP: configuration reloaded"), 1);
  ck_assert_msg(running(serve), "serve ended after SIGHUP");
  ck_assert_int_eq(wait_exit(before), 0);

  /* Serve goes on: a second fleet, connected after the hang-ups, is read
   * and stored like the first - and, at level warn, its connections are
   * not logged. */
  int connections_logged = occurrences(serve_log, "Device connection #");
  const char *after_argv[] = {
      NULL,         "devices", "--connect",   connect,  "--count",       "3",        "--rate",  "100",
      "--duration", "1",       "--id-prefix", "after-", "--report-json", after_json, "--quiet", NULL};
  pid_t after = start(after_argv, after_log);
  ck_assert_int_eq(wait_exit(after), 0);
  ck_assert_msg(running(serve), "serve ended");
  wait_stored_above(http_port, stored_at_hup);
  ck_assert_int_eq(occurrences(serve_log, "Device connection #"), connections_logged);

  /* Back to info, for the shutdown's lines. */
  write_config(config, "[serve]\nbatch-age-ms = 50\nlog-level = info\nbatch-size = 500\nerror-limit = 3\n");
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  wait_for_log(serve, serve_log, "SIGHUP: log-level = info (was: log-level = warn)", 1);
  wait_for_log(serve, serve_log, "SIGHUP: configuration reloaded", 2);

  ck_assert_msg(occurrences(serve_log, "Shutdown requested") == 0,
                "serve shut down before the test's SIGTERM: another process signalled it");

  /* SIGTERM with a hang-up right behind it: the ordered shutdown. */
  ck_assert_int_eq(kill(serve, SIGTERM), 0);
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  int status = wait_exit(serve);
  text = slurp(serve_log);
  ck_assert_msg(status == 0, "serve exited with %d; its log ends:\n%s", status, log_tail(text));
  ck_assert_ptr_nonnull(strstr(text, "Shutdown requested (SIGTERM)"));
  ck_assert_msg(strstr(text, "nothing lost: every reading read from a socket was aggregated and committed"),
                "no lossless summary; the log ends:\n%s", log_tail(text));
  free(text);

  uint64_t sent_before = check_fleet(before_json, db), sent_after = check_fleet(after_json, db);
  ck_assert_uint_gt(sent_before, 0);
  ck_assert_uint_gt(sent_after, 0);
  ck_assert_int_eq(db_rows(db), (int64_t)(sent_before + sent_after));
  char summary_rows[64];
  snprintf(summary_rows, sizeof summary_rows, "rows in the database %" PRIu64 "\n", sent_before + sent_after);
  ck_assert_int_eq(occurrences(serve_log, summary_rows), 1);
  dir_cleanup();
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-sighup");
  tg_test_add(s, "loses_nothing", test_serve_sighup_loses_nothing, 110);
  return tg_test_main(s);
}
