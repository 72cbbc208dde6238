/* test-serve-crash.c - kill -9 of serve under load, at several points of
 * a batch cycle, each time restarted a second later on the same database:
 * the devices reconnect and resend what was not acked, and in the end
 * every reading they generated is stored exactly once, every one of them
 * acked, and the database passes SQLite's integrity check.
 *
 * 10 devices at 500 readings/s each (5,000/s) against batches of at most
 * 200 ms; the kills come 0, 40, 80, 120 and 160 ms after a commit was
 * seen, so they land in every part of the cycle: a batch being filled,
 * one in its transaction, acks on their way. */
#include "test-serve-process.h"

enum { KILLS = 5, CYCLE_MS = 200 };

static int64_t integrity_ok(const char *path) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return ok;
}

START_TEST(test_serve_crash_kill_points) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  const char *const flags[] = {"--batch-age-ms", "200", "--drain-ms", "300", NULL};
  int port = serve_proc_start(&d, &serve, 0, flags);
  devices_run dev;
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "10", "--rate", "500", "--duration", "3600", "--ack-wait-s", "60", NULL});
  proc_wait_catches(&dev.p, SIGINT);
  for (int kill = 0; kill < KILLS; kill++) {
    /* A commit of this run: the cycle's origin. */
    serve_wait_stored(&serve, serve_stored(&serve) + 1);
    proc_sleep_ms(kill * CYCLE_MS / KILLS);
    ck_assert_int_eq(proc_signal_wait(&serve, SIGKILL), -SIGKILL);
    proc_sleep_ms(1000); /* down a while: connects are refused, readings pile up */
    ck_assert_msg(integrity_ok(d.db), "kill %d: the database fails its integrity check", kill);
    serve_proc_start(&d, &serve, port, flags);
  }
  serve_wait_stored(&serve, serve_stored(&serve) + 1000);
  int status = proc_signal_wait(&dev.p, SIGINT);
  char err[1024];
  proc_read_file(dev.p.err, err, sizeof err);
  ck_assert_msg(status == 0, "devices exited %d: %s", status, err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  cJSON *report = devices_report_load(dev.report);
  devices_report_all_acked(report);
  uint64_t generated = json_u64(report, "generated");
  ck_assert_uint_ge(generated, 5000); /* at least a second of 5,000/s */
  /* Each kill was felt (a device still in its backoff when the next came
   * reconnects once for both). */
  ck_assert_uint_ge(json_u64(report, "reconnects"), KILLS);
  const cJSON *one;
  cJSON_ArrayForEach(one, cJSON_GetObjectItemCaseSensitive(report, "devices"))
      ck_assert_uint_ge(json_u64(one, "reconnects"), 1);
  ck_assert_uint_eq(db_check_report(d.db, report), generated); /* each exactly once */
  ck_assert(integrity_ok(d.db));
  cJSON_Delete(report);
  proc_dir_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-crash");
  tg_test_add(s, "kill_points", test_serve_crash_kill_points, 300);
  return tg_test_main(s);
}
