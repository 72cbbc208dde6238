/* test-demo-cli.c - the command line: presets and overrides, and a bad
 * flag or value answered by one line naming it and exit status 2. */
#include "cli.h"
#include "helpers.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int parse(demo_config *cfg, char *err, const char *a0, const char *a1, const char *a2, const char *a3) {
  char *argv[4] = {(char *)a0, (char *)a1, (char *)a2, (char *)a3};
  int argc = 0;
  while (argc < 4 && argv[argc]) argc++;
  return cli_parse_demo(argc, argv, cfg, err, 256);
}

START_TEST(test_demo_cli_defaults_are_the_blog) {
  demo_config c;
  char err[256];
  ck_assert_int_eq(parse(&c, err, NULL, NULL, NULL, NULL), CLI_OK);
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
  ck_assert_double_eq(c.duration_s, 10);
  ck_assert_int_eq(c.clock, TG_CLOCK_REAL);
}
END_TEST

/* A preset sets its numbers first, wherever it stands; flags win. */
START_TEST(test_demo_cli_flag_beats_preset) {
  demo_config c;
  char err[256];
  ck_assert_int_eq(parse(&c, err, "--telemetry-capacity=7", "--preset", "pressure", NULL), CLI_OK);
  ck_assert_int_eq(c.preset, PRESET_PRESSURE);
  ck_assert_int_eq(c.telemetry_capacity, 7);
  ck_assert_int_eq(c.storage_capacity, 2);
  ck_assert_int_eq(c.broadcast_capacity, 10);
  ck_assert_int_eq(c.device_slots, 2);
  ck_assert_int_eq(c.db_pool, 1);
  ck_assert_int_eq(c.device_interval_ms, 300);
  ck_assert_int_eq(parse(&c, err, "--clock", "virtual", "--seed=9", NULL), CLI_OK);
  ck_assert_int_eq(c.clock, TG_CLOCK_VIRTUAL);
  ck_assert_uint_eq(c.seed, 9);
}
END_TEST

START_TEST(test_demo_cli_errors_name_the_flag) {
  demo_config c;
  char err[256];
  ck_assert_int_eq(parse(&c, err, "--bogus", NULL, NULL, NULL), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--bogus"));
  ck_assert_int_eq(parse(&c, err, "--devices", "0", NULL, NULL), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--devices"));
  ck_assert_int_eq(parse(&c, err, "--duration", "ten", NULL, NULL), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--duration"));
  ck_assert_int_eq(parse(&c, err, "--clock", "fast", NULL, NULL), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--clock"));
  ck_assert_int_eq(parse(&c, err, "--db-pool", NULL, NULL, NULL), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--db-pool"));
  ck_assert_int_eq(parse(&c, err, "--quiet=yes", NULL, NULL, NULL), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--quiet"));
  ck_assert_int_eq(parse(&c, err, "--devices", "3", "--panic-device", "5"), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--panic-device"));
  ck_assert_int_eq(parse(&c, err, "--storage-fail-rate", "1.5", NULL, NULL), CLI_ERROR);
  ck_assert_ptr_nonnull(strstr(err, "--storage-fail-rate"));
  ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

/* Runs the telegate binary next to this test; returns its exit status
 * and its first line of stderr. */
static int run_binary(const char *const argv[], char *line, size_t len) {
  char self[512], bin[600];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ck_assert_int_gt(n, 0);
  self[n] = '\0';
  snprintf(bin, sizeof bin, "%s/../src/telegate", dirname(self));
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    close(fds[0]);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  close(fds[1]);
  FILE *f = fdopen(fds[0], "r");
  line[0] = '\0';
  if (!fgets(line, (int)len, f)) line[0] = '\0';
  fclose(f);
  int status;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

START_TEST(test_demo_cli_exit_status_2) {
  char line[512];
  const char *const bad_flag[] = {"telegate", "demo", "--nope", NULL};
  ck_assert_int_eq(run_binary(bad_flag, line, sizeof line), 2);
  ck_assert_ptr_nonnull(strstr(line, "--nope"));
  const char *const bad_value[] = {"telegate", "demo", "--broadcast-capacity", "-1", NULL};
  ck_assert_int_eq(run_binary(bad_value, line, sizeof line), 2);
  ck_assert_ptr_nonnull(strstr(line, "--broadcast-capacity"));
  const char *const bad_command[] = {"telegate", "dmeo", NULL};
  ck_assert_int_eq(run_binary(bad_command, line, sizeof line), 2);
}
END_TEST

/* --summary-json writes the object other tools rely on. */
START_TEST(test_demo_cli_summary_json) {
  char dir[] = "/tmp/telegate-cli-XXXXXX", db[64], json[64], line[512];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(db, sizeof db, "%s/d.db", dir);
  snprintf(json, sizeof json, "%s/s.json", dir);
  const char *const argv[] = {"telegate", "demo", "--clock", "virtual", "--duration", "2", "--quiet",
                              "--db", db, "--summary-json", json, NULL};
  ck_assert_int_eq(run_binary(argv, line, sizeof line), 0);
  FILE *f = fopen(json, "r");
  ck_assert_ptr_nonnull(f);
  char buf[16384];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  cJSON *o = cJSON_Parse(buf);
  ck_assert_ptr_nonnull(o);
  const char *numbers[] = {"readings_sent", "readings_aggregated", "readings_stored", "db_rows",
                           "batches_flushed", "batches_stored", "telemetry_full_waits", "storage_full_waits",
                           "device_slot_waits", "db_pool_waits", "snapshots_broadcast", "shutdown_ms", "runtime_s"};
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
  for (size_t i = 0; i < 3; i++) ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "health"), health_keys[i])));
  const char *task_keys[] = {"spawned", "joined", "panicked", "aborted"};
  for (size_t i = 0; i < 4; i++) ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "tasks"), task_keys[i])));
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
  tg_test_add(s, "defaults_are_the_blog", test_demo_cli_defaults_are_the_blog, 10);
  tg_test_add(s, "flag_beats_preset", test_demo_cli_flag_beats_preset, 10);
  tg_test_add(s, "errors_name_the_flag", test_demo_cli_errors_name_the_flag, 10);
  tg_test_add(s, "exit_status_2", test_demo_cli_exit_status_2, 10);
  tg_test_add(s, "summary_json", test_demo_cli_summary_json, 20);
  return tg_test_main(s);
}
