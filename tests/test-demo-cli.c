/* test-demo-cli.c - the command line: presets and overrides, and a bad
 * flag or value answered by one line naming it and exit status 2. */
#include "cli_demo.h"
#include "test-cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The parse's strings are freed at once: these tests read only numbers. */
static int parse(demo_config *cfg, char *err, const char *a0, const char *a1, const char *a2, const char *a3) {
  char *argv[4] = {(char *)a0, (char *)a1, (char *)a2, (char *)a3};
  int argc = 0;
  while (argc < 4 && argv[argc]) argc++;
  cli_strings strings = {0};
  int r = cli_parse_demo(argc, argv, cfg, &strings, err, 256);
  cli_strings_free(&strings);
  return r;
}

/* The default is the tour: pressure's numbers and one of each fault. */
START_TEST(test_demo_cli_defaults_are_the_tour) {
  demo_config c;
  char err[256];
  ck_assert_int_eq(parse(&c, err, NULL, NULL, NULL, NULL), 0);
  ck_assert_int_eq(c.preset, PRESET_TOUR);
  ck_assert_int_eq(c.telemetry_capacity, 5);
  ck_assert_int_eq(c.panic_device, 2);
  ck_assert_int_eq(c.slow_client, 3);
  ck_assert_int_eq(c.slow_health_device, 5);
  ck_assert_int_eq(c.drop_health_device, 6);
  ck_assert_int_eq(c.health_interval_ms, 1000);
  ck_assert_double_eq(c.storage_fail_rate, 0.1);
  ck_assert_double_eq(c.duration_s, 10);
  ck_assert_int_eq(c.clock, TG_CLOCK_REAL);
}
END_TEST

/* --preset blog: the article's numbers, and no fault. */
START_TEST(test_demo_cli_blog_preset) {
  demo_config c;
  char err[256];
  ck_assert_int_eq(parse(&c, err, "--preset", "blog", NULL, NULL), 0);
  ck_assert_int_eq(c.devices, 7);
  ck_assert_int_eq(c.clients, 4);
  ck_assert_int_eq(c.telemetry_capacity, 50);
  ck_assert_int_eq(c.storage_capacity, 10);
  ck_assert_int_eq(c.broadcast_capacity, 100);
  ck_assert_int_eq(c.device_slots, 5);
  ck_assert_int_eq(c.db_pool, 2);
  ck_assert_int_eq(c.device_interval_ms, 1000);
  ck_assert_int_eq(c.batch_interval_ms, 2000);
  ck_assert_int_eq(c.health_interval_ms, 3000);
  ck_assert_int_eq(c.health_timeout_ms, 500);
  ck_assert_int_eq(c.panic_device + c.slow_client + c.slow_health_device + c.drop_health_device, 0);
  ck_assert_double_eq(c.storage_fail_rate, 0);
}
END_TEST

/* A preset sets its numbers first, wherever it stands; flags win. */
START_TEST(test_demo_cli_flag_beats_preset) {
  demo_config c;
  char err[256];
  ck_assert_int_eq(parse(&c, err, "--telemetry-capacity=7", "--preset", "pressure", NULL), 0);
  ck_assert_int_eq(c.preset, PRESET_PRESSURE);
  ck_assert_int_eq(c.telemetry_capacity, 7);
  ck_assert_int_eq(c.storage_capacity, 2);
  ck_assert_int_eq(c.broadcast_capacity, 10);
  ck_assert_int_eq(c.device_slots, 2);
  ck_assert_int_eq(c.db_pool, 1);
  ck_assert_int_eq(c.device_interval_ms, 300);
  ck_assert_int_eq(parse(&c, err, "--clock", "virtual", "--seed=9", NULL), 0);
  ck_assert_int_eq(c.clock, TG_CLOCK_VIRTUAL);
  ck_assert_uint_eq(c.seed, 9);
}
END_TEST

START_TEST(test_demo_cli_errors_name_the_flag) {
  demo_config c;
  char err[256];
  ck_assert_int_eq(parse(&c, err, "--bogus", NULL, NULL, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--bogus"));
  ck_assert_int_eq(parse(&c, err, "--devices", "0", NULL, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--devices"));
  ck_assert_int_eq(parse(&c, err, "--duration", "ten", NULL, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--duration"));
  ck_assert_int_eq(parse(&c, err, "--clock", "fast", NULL, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--clock"));
  ck_assert_int_eq(parse(&c, err, "--db-pool", NULL, NULL, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--db-pool"));
  ck_assert_int_eq(parse(&c, err, "--quiet=yes", NULL, NULL, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--quiet"));
  ck_assert_int_eq(parse(&c, err, "--devices", "3", "--panic-device", "5"), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--panic-device"));
  ck_assert_int_eq(parse(&c, err, "--storage-fail-rate", "1.5", NULL, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "--storage-fail-rate"));
  ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

START_TEST(test_demo_cli_exit_status_2) {
  test_cli_usage_error((const char *const[]){"telegate", "demo", "--nope", NULL}, "--nope");
  test_cli_usage_error((const char *const[]){"telegate", "demo", "--broadcast-capacity", "-1", NULL},
                       "--broadcast-capacity wants an integer from 1 to 1000000, got '-1'");
  test_cli_usage_error((const char *const[]){"telegate", "demo", "--devices", "3", "--slow-health-device", "4", NULL},
                       "--slow-health-device wants a device from 1 to 3 (--devices), got 4");
  test_cli_run run;
  test_cli_run_binary((const char *const[]){"telegate", "dmeo", NULL}, &run);
  ck_assert_int_eq(run.status, 2);
  ck_assert_ptr_nonnull(strstr(run.err, "unknown command 'dmeo'"));
  test_cli_help_lists("demo", &cli_demo);
}
END_TEST

/* --summary-json writes the object other tools rely on. */
START_TEST(test_demo_cli_summary_json) {
  char dir[] = "/tmp/telegate-cli-XXXXXX", db[64], json[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(db, sizeof db, "%s/d.db", dir);
  snprintf(json, sizeof json, "%s/s.json", dir);
  const char *const argv[] = {"telegate", "demo", "--clock", "virtual",        "--duration", "2",
                              "--quiet",  "--db", db,        "--summary-json", json,         NULL};
  test_cli_run run;
  test_cli_run_binary(argv, &run);
  ck_assert_msg(run.status == 0, "exit %d: %s", run.status, run.err);
  FILE *f = fopen(json, "r");
  ck_assert_ptr_nonnull(f);
  char buf[16384];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  cJSON *o = cJSON_Parse(buf);
  ck_assert_ptr_nonnull(o);
  const char *numbers[] = {"readings_sent",     "readings_aggregated", "readings_stored",      "db_rows",
                           "batches_flushed",   "batches_stored",      "telemetry_full_waits", "storage_full_waits",
                           "device_slot_waits", "db_pool_waits",       "snapshots_broadcast",  "shutdown_ms",
                           "runtime_s"};
  for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
    ck_assert_msg(cJSON_IsNumber(cJSON_GetObjectItem(o, numbers[i])), "no %s", numbers[i]);
  double sent = cJSON_GetObjectItem(o, "readings_sent")->valuedouble;
  ck_assert_double_gt(sent, 0);
  ck_assert_double_eq(cJSON_GetObjectItem(o, "db_rows")->valuedouble, sent);
  cJSON *clients = cJSON_GetObjectItem(o, "clients");
  ck_assert_int_eq(cJSON_GetArraySize(clients), 4);
  const char *client_keys[] = {"id", "received", "lagged_events", "lagged_messages", "resyncs"};
  for (size_t i = 0; i < sizeof client_keys / sizeof client_keys[0]; i++)
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetArrayItem(clients, 0), client_keys[i])));
  const char *health_keys[] = {"ok", "timeout", "dropped"};
  for (size_t i = 0; i < 3; i++)
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "health"), health_keys[i])));
  const char *task_keys[] = {"spawned", "joined", "panicked", "aborted"};
  for (size_t i = 0; i < 4; i++)
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "tasks"), task_keys[i])));
  cJSON_Delete(o);
  const char *suffix[] = {"", "-wal", "-shm"};
  char path[96];
  for (size_t i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s%s", db, suffix[i]);
    unlink(path);
  }
  unlink(json);
  rmdir(dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("demo-cli");
  tg_test_add(s, "defaults_are_the_tour", test_demo_cli_defaults_are_the_tour, 10);
  tg_test_add(s, "blog_preset", test_demo_cli_blog_preset, 10);
  tg_test_add(s, "flag_beats_preset", test_demo_cli_flag_beats_preset, 10);
  tg_test_add(s, "errors_name_the_flag", test_demo_cli_errors_name_the_flag, 10);
  tg_test_add(s, "exit_status_2", test_demo_cli_exit_status_2, 10);
  tg_test_add(s, "summary_json", test_demo_cli_summary_json, 20);
  return tg_test_main(s);
}
