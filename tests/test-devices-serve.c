/* test-devices-serve.c - the real `telegate devices` against the real
 * `telegate serve`, both as processes: every reading acked and stored
 * once; serve killed with SIGKILL (or stopped with SIGTERM) mid-run and
 * started again on the same database and port, after which the devices
 * have resent what was not acked and the database holds every reading
 * exactly once; serve killed for good, which the devices' exit status
 * and stderr report; and the same devices run twice, whose second run is
 * refused as seq_restarted, loudly. */
#include "test-serve-process.h"

START_TEST(test_devices_serve_all_acked) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  int port = serve_proc_start(&d, &serve, 0, NULL);
  devices_run dev;
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "4", "--rate", "100", "--duration", "1", "--ack-wait-s", "60", NULL});
  int status = proc_wait(&dev.p);
  char err[1024];
  proc_read_file(dev.p.err, err, sizeof err);
  ck_assert_msg(status == 0, "devices exited %d: %s", status, err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  cJSON *report = devices_report_load(dev.report);
  devices_report_all_acked(report);
  ck_assert_uint_eq(json_u64(report, "reconnects"), 0);
  ck_assert_uint_eq(db_check_report(d.db, report), json_u64(report, "generated"));
  cJSON_Delete(report);
  proc_dir_cleanup(&d);
}
END_TEST

/* serve is stopped by sig while the devices send and comes back a second
 * later on the same database and port. The devices reconnect, resend
 * everything not acked, and once stopped (SIGINT: stop generating, wait
 * for the acks) exit 0; the database holds every reading they generated,
 * once. */
static void restart_midway(int sig, int serve_status) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  const char *const drain[] = {"--drain-ms", "300", NULL}; /* the devices go on sending: it runs its time */
  int port = serve_proc_start(&d, &serve, 0, drain);
  devices_run dev;
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "5", "--rate", "200", "--duration", "3600", "--ack-wait-s", "60", NULL});
  proc_wait_catches(&dev.p, SIGINT);
  serve_wait_stored(&serve, 300);
  ck_assert_int_eq(proc_signal_wait(&serve, sig), serve_status);
  proc_sleep_ms(1000); /* down a while: connects are refused, readings pile up */
  serve_proc_start(&d, &serve, port, drain);
  serve_wait_stored(&serve, 300); /* this run's */
  int status = proc_signal_wait(&dev.p, SIGINT);
  char err[1024];
  proc_read_file(dev.p.err, err, sizeof err);
  ck_assert_msg(status == 0, "devices exited %d: %s", status, err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  cJSON *report = devices_report_load(dev.report);
  devices_report_all_acked(report);
  const cJSON *one;
  cJSON_ArrayForEach(one, cJSON_GetObjectItemCaseSensitive(report, "devices")) {
    ck_assert_uint_ge(json_u64(one, "reconnects"), 1);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(one, "end")->valuestring, "stopped");
  }
  /* After a SIGTERM, what serve read during its drain was stored and never
   * acked: resent for sure. After a SIGKILL, most likely, but a kill right
   * after an ack and before the next write leaves nothing to resend. */
  if (sig == SIGTERM) ck_assert_uint_gt(json_u64(report, "resent"), 0);
  ck_assert_uint_eq(db_check_report(d.db, report), json_u64(report, "generated"));
  cJSON_Delete(report);
  proc_dir_cleanup(&d);
}

/* SIGKILL: nothing of serve runs, no drain, no last commit. */
START_TEST(test_devices_serve_sigkill_restart) { restart_midway(SIGKILL, -SIGKILL); }
END_TEST

/* SIGTERM: serve drains and commits what it read but acks none of it;
 * the devices learn it is stored when their resends are acked as
 * duplicates. */
START_TEST(test_devices_serve_sigterm_restart) { restart_midway(SIGTERM, 0); }
END_TEST

/* serve killed and not started again: the devices wait --ack-wait-s for
 * their acks, then exit 1 and say on stderr how many readings were never
 * acked; the report has them too. */
START_TEST(test_devices_serve_gone_for_good) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  int port = serve_proc_start(&d, &serve, 0, NULL);
  devices_run dev;
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "2", "--rate", "100", "--duration", "3600", "--ack-wait-s", "0.3", NULL});
  proc_wait_catches(&dev.p, SIGINT);
  serve_wait_stored(&serve, 20);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGKILL), -SIGKILL);
  proc_sleep_ms(100); /* at 100 Hz, readings nobody can ack any more */
  int status = proc_signal_wait(&dev.p, SIGINT);
  ck_assert_int_eq(status, 1);
  char err[1024];
  proc_read_file(dev.p.err, err, sizeof err);
  ck_assert_msg(strstr(err, "readings unacked") != NULL, "stderr: '%s'", err);
  cJSON *report = devices_report_load(dev.report);
  ck_assert_uint_gt(json_u64(report, "unacked"), 0);
  ck_assert_uint_eq(json_u64(report, "acked") + json_u64(report, "unacked"), json_u64(report, "generated"));
  cJSON_Delete(report);
  proc_dir_cleanup(&d);
}
END_TEST

/* The same devices run twice against one serve: the second run's seqs
 * start again at 1 with later timestamps, so its readings are refused as
 * seq_restarted - said on stderr and in the exit status - instead of
 * being dropped in silence as resends. */
START_TEST(test_devices_serve_twice) {
  proc_dir d;
  proc_dir_init(&d);
  proc serve;
  int port = serve_proc_start(&d, &serve, 0, NULL);
  devices_run dev;
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "2", "--rate", "100", "--duration", "1", "--ack-wait-s", "60", NULL});
  ck_assert_int_eq(proc_wait(&dev.p), 0);
  cJSON *first = devices_report_load(dev.report);
  devices_report_all_acked(first);
  devices_proc_start(
      &d, &dev, port,
      (const char *const[]){"--count", "2", "--rate", "100", "--duration", "0.2", "--ack-wait-s", "0.5", NULL});
  ck_assert_int_eq(proc_wait(&dev.p), 1);
  char err[1024];
  proc_read_file(dev.p.err, err, sizeof err);
  ck_assert_msg(strstr(err, "as seq_restarted") != NULL, "stderr: '%s'", err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  ck_assert_uint_eq(db_check_report(d.db, first), json_u64(first, "generated"));
  cJSON_Delete(first);
  proc_dir_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("devices-serve");
  tg_test_add(s, "all_acked", test_devices_serve_all_acked, 120);
  tg_test_add(s, "sigkill_restart", test_devices_serve_sigkill_restart, 240);
  tg_test_add(s, "sigterm_restart", test_devices_serve_sigterm_restart, 240);
  tg_test_add(s, "gone_for_good", test_devices_serve_gone_for_good, 120);
  tg_test_add(s, "twice", test_devices_serve_twice, 120);
  return tg_test_main(s);
}
