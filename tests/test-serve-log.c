/* test-serve-log.c - serve's log as an operator reads it: in JSON every
 * line parses, the summary included; each line has the time of day and a
 * level; --log-level drops what is less severe; and an error also goes to
 * stderr when the log goes to a file, where nobody watches it live. */
#include "test-process.h"

#include <cjson/cJSON.h>

/* Runs serve with the extra flags until it catches SIGTERM (a SIGTERM
 * during its start is kept for when it runs), stops it with SIGTERM and
 * returns its exit status; stdout goes to out, stderr to err. */
static int run_serve(const char *extra[], const char *out, const char *err) {
  const char *argv[24] = {"tg-proc-gateway", "serve", "--listen-devices",  "127.0.0.1:0", "--listen-http",
                          "127.0.0.1:0",     "--db",  dir_file("serve.db")};
  int n = 8;
  for (int i = 0; extra[i]; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  dir_file("serve.db-wal");
  dir_file("serve.db-shm");
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) _exit(126);
    dup2(o, 1);
    dup2(e, 2);
    execv(gateway, (char *const *)argv);
    _exit(127);
  }
  wait_until_caught(pid, SIGTERM);
  ck_assert_int_eq(kill(pid, SIGTERM), 0);
  return wait_exit(pid);
}

/* Every line of the file, parsed; the number of lines, the last one's
 * event, and how many have each level. */
static int json_lines(const char *path, char *last_event, size_t cap, int levels[4]) {
  char *text = slurp(path);
  int lines = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    cJSON *j = cJSON_Parse(line);
    ck_assert_msg(j != NULL, "line %d is not JSON: %s", lines + 1, line);
    const cJSON *time = cJSON_GetObjectItem(j, "time"), *level = cJSON_GetObjectItem(j, "level");
    ck_assert_msg(cJSON_IsString(time) && strlen(time->valuestring) == 24, "no time of day: %s", line);
    ck_assert_msg(cJSON_IsString(level), "no level: %s", line);
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) levels[i] += strcmp(level->valuestring, names[i]) == 0;
    snprintf(last_event, cap, "%s", cJSON_GetObjectItem(j, "event")->valuestring);
    cJSON_Delete(j);
    lines++;
  }
  free(text);
  return lines;
}

START_TEST(test_serve_log_json_and_levels) {
  dir_init();
  link_binary();
  const char *out = dir_file("out.log"), *err = dir_file("err.log");
  /* An error at the end: the summary file cannot be written. */
  const char *json_info[] = {"--log-format", "json", "--summary-json", "/nonexistent/dir/summary.json", NULL};
  run_serve(json_info, out, err); /* its exit status is about the readings, not the file */
  char last[64];
  int levels[4] = {0};
  int lines = json_lines(out, last, sizeof last, levels);
  ck_assert_int_gt(lines, 3);
  ck_assert_str_eq(last, "summary"); /* the summary is a line of the log too */
  ck_assert_int_eq(levels[0], 1);    /* the one error */
  ck_assert_int_gt(levels[2], 2);
  char *errors = slurp(err);
  ck_assert_msg(strstr(errors, "telegate: serve: Cannot write /nonexistent/dir/summary.json"), "stderr: %s", errors);
  free(errors);

  /* --log-level error: the information is gone, the error and the
   * summary stay. */
  const char *json_error[] = {
      "--log-format", "json", "--log-level", "error", "--summary-json", "/nonexistent/dir/summary.json", NULL};
  run_serve(json_error, out, err);
  memset(levels, 0, sizeof levels);
  lines = json_lines(out, last, sizeof last, levels);
  ck_assert_int_eq(levels[0], 1);
  ck_assert_int_eq(levels[1] + levels[3], 0);
  ck_assert_int_eq(levels[2], 1); /* the summary */
  ck_assert_str_eq(last, "summary");
  dir_cleanup();
}
END_TEST

/* Text lines start with the time of day. */
START_TEST(test_serve_log_text_wall_clock) {
  dir_init();
  link_binary();
  const char *out = dir_file("out.log"), *err = dir_file("err.log");
  const char *none[] = {NULL};
  ck_assert_int_eq(run_serve(none, out, err), 0);
  char *text = slurp(out);
  int stamped = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    int y, mo, d, h, mi, s, ms;
    if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ [", &y, &mo, &d, &h, &mi, &s, &ms) == 7) stamped++;
  }
  free(text);
  ck_assert_int_gt(stamped, 2);
  char *errors = slurp(err);
  ck_assert_str_eq(errors, ""); /* no error, nothing on stderr */
  free(errors);
  dir_cleanup();
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-log");
  tg_test_add(s, "json_and_levels", test_serve_log_json_and_levels, 120);
  tg_test_add(s, "text_wall_clock", test_serve_log_text_wall_clock, 120);
  return tg_test_main(s);
}
