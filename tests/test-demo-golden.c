/* test-demo-golden.c - the log of one seeded run, pinned byte for byte,
 * and the same run replayed: under the virtual clock a seed gives one
 * log. Set TELEGATE_UPDATE_GOLDEN=1 to rewrite the golden file after an
 * intended change, and read the diff before committing it. */
#include "test-demo.h"

#include <cjson/cJSON.h>
#include <libgen.h>

/* Pressure and every fault at once, 3 s: each kind of line appears. */
static void golden_config(demo_test *t) {
  demo_config_preset(&t->cfg, PRESET_PRESSURE);
  t->cfg.duration_s = 3;
  t->cfg.seed = 7;
  t->cfg.quiet = 0;
  t->cfg.health_interval_ms = 1000;
  t->cfg.slow_health_device = 5;
  t->cfg.drop_health_device = 6;
  t->cfg.panic_device = 2;
  t->cfg.panic_at_s = 1.5;
}

/* Runs t and returns its whole output. */
static char *run_captured(demo_test *t) {
  char *text = NULL;
  size_t len = 0;
  fclose(t->cfg.out);
  t->cfg.out = open_memstream(&text, &len);
  ck_assert_ptr_nonnull(t->cfg.out);
  demo_test_run(t);
  fclose(t->cfg.out);
  t->cfg.out = NULL;
  return text;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *text = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&text, &len);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, m);
  fclose(m);
  fclose(f);
  return text;
}

START_TEST(test_demo_golden_log) {
  demo_test t;
  demo_test_init(&t);
  golden_config(&t);
  char *log = run_captured(&t);
  demo_test_invariants(&t);
  char src[512], path[600];
  snprintf(src, sizeof src, "%s", __FILE__);
  snprintf(path, sizeof path, "%s/golden/demo-pressure-faults-seed7.log", dirname(src));
  if (getenv("TELEGATE_UPDATE_GOLDEN")) {
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(log, f);
    fclose(f);
  }
  char *want = read_file(path);
  ck_assert_msg(want != NULL, "no golden file %s", path);
  if (strcmp(want, log) != 0) {
    /* Point at the first line that differs. */
    const char *a = want, *b = log;
    int line = 1;
    while (*a && *a == *b) line += *a++ == '\n', b++;
    while (a > want && a[-1] != '\n') a--;
    while (b > log && b[-1] != '\n') b--;
    ck_abort_msg("log differs from %s at line %d:\nwant: %.200s\ngot:  %.200s", path, line, a, b);
  }
  free(want);
  free(log);
  demo_test_cleanup(&t);
}
END_TEST

START_TEST(test_demo_same_seed_same_log) {
  char *logs[2];
  for (int i = 0; i < 2; i++) {
    demo_test t;
    demo_test_init(&t);
    golden_config(&t);
    t.cfg.seed = 12345;
    logs[i] = run_captured(&t);
    demo_test_invariants(&t);
    demo_test_cleanup(&t);
  }
  ck_assert_str_eq(logs[0], logs[1]);
  free(logs[0]);
  free(logs[1]);
}
END_TEST

/* --log-format json: every line is one JSON object with the event keys,
 * the last one carrying the summary. */
START_TEST(test_demo_json_log) {
  demo_test t;
  demo_test_init(&t);
  golden_config(&t);
  t.cfg.log_format = LOG_JSON;
  char *log = run_captured(&t);
  demo_test_invariants(&t);
  int lines = 0, summaries = 0;
  for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
    cJSON *o = cJSON_Parse(line);
    ck_assert_msg(o != NULL, "not JSON: %s", line);
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(o, "t")));
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(o, "component")));
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(o, "event")));
    cJSON *sum = cJSON_GetObjectItem(o, "summary");
    if (sum) {
      summaries++;
      ck_assert_double_eq(cJSON_GetObjectItem(sum, "db_rows")->valuedouble, (double)t.s.db_rows);
      ck_assert(cJSON_IsArray(cJSON_GetObjectItem(sum, "clients")));
    } else {
      ck_assert(cJSON_IsString(cJSON_GetObjectItem(o, "msg")));
    }
    cJSON_Delete(o);
    lines++;
  }
  ck_assert_int_gt(lines, 20);
  ck_assert_int_eq(summaries, 1);
  free(log);
  demo_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("demo-golden");
  tg_test_add(s, "golden_log", test_demo_golden_log, 30);
  tg_test_add(s, "same_seed_same_log", test_demo_same_seed_same_log, 30);
  tg_test_add(s, "json_log", test_demo_json_log, 30);
  return tg_test_main(s);
}
