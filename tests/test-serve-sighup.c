/* test-serve-sighup.c - the telegate binary as an operator runs it: SIGHUP
 * while devices send costs nothing - serve logs it, goes on reading and
 * storing - and the SIGTERM after it (with a hang-up on its heels, as
 * systemd's SendSIGHUP= sends) ends serve in order: exit 0, the summary,
 * and every reading the simulator sent in the database, once.
 *
 * Real processes throughout: serve and two fleets of `telegate devices`.
 * Every wait is on a condition (a log line, the signal mask in /proc, a
 * row count, an exit) with a generous deadline, never a fixed sleep. */
#include "helpers.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long any one condition may take: far more than it needs on a quiet
 * machine, enough for a sanitizer build on a loaded one. */
#define PATIENCE_S 40

/* The run's directory and the files in it, removed at the end. */
static char run_dir[64];
static char run_files[12][128];
static int run_nfiles;

static const char *dir_file(const char *name) {
  ck_assert_int_lt(run_nfiles, 12);
  char *p = run_files[run_nfiles++];
  snprintf(p, sizeof run_files[0], "%s/%s", run_dir, name);
  return p;
}

static void dir_init(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(run_dir, sizeof run_dir, "%s/tg-hup-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(run_dir));
}

static void dir_cleanup(void) {
  for (int i = 0; i < run_nfiles; i++) unlink(run_files[i]);
  rmdir(run_dir);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pause_ms(int ms) { nanosleep(&(struct timespec){0, ms * 1000000L}, NULL); }

/* The telegate binary next to this test, run through a link of another
 * name: the machine this runs on is shared, and a `pkill telegate` or
 * `pkill -f "telegate serve"` meant for someone else's gateway must not
 * end this one midway. */
static char gateway[128];

static void link_binary(void) {
  char self[512], bin[600];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ck_assert_int_gt(n, 0);
  self[n] = '\0';
  snprintf(bin, sizeof bin, "%s/../src/telegate", dirname(self));
  snprintf(gateway, sizeof gateway, "%s", dir_file("tg-hup-gateway"));
  ck_assert_int_eq(symlink(bin, gateway), 0);
}

/* Starts the binary with argv (argv[0] is set here), stdout and stderr
 * into `log`. The child stays in the test's process group, which Check
 * kills when the test ends: a failed test leaves no gateway behind. */
static pid_t start(const char *argv[], const char *log) {
  argv[0] = "tg-hup-gateway";
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(gateway, (char *const *)argv);
    _exit(127);
  }
  return pid;
}

/* The whole log so far; the caller frees it. */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return strdup("");
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  ck_assert_ptr_nonnull(buf);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      ck_assert_ptr_nonnull(buf);
    }
  }
  buf[len] = '\0';
  fclose(f);
  return buf;
}

/* How often `needle` occurs in the log. */
static int occurrences(const char *log, const char *needle) {
  char *text = slurp(log);
  int n = 0;
  for (const char *at = text; (at = strstr(at, needle)) != NULL; at += strlen(needle)) n++;
  free(text);
  return n;
}

/* Waits until the log of process pid holds `needle` `times` times; fails
 * naming it and showing the log if it does not come, or if the process
 * ended first. */
static void wait_for_log(pid_t pid, const char *log, const char *needle, int times) {
  double deadline = now_s() + PATIENCE_S;
  while (occurrences(log, needle) < times) {
    int status;
    int ended = waitpid(pid, &status, WNOHANG) == pid;
    if (ended || now_s() > deadline) {
      char why[64];
      if (!ended)
        snprintf(why, sizeof why, "after %d s", PATIENCE_S);
      else if (WIFSIGNALED(status))
        snprintf(why, sizeof why, "the process was killed by %s", strsignal(WTERMSIG(status)));
      else
        snprintf(why, sizeof why, "the process exited with %d", WEXITSTATUS(status));
      char *text = slurp(log);
      ck_abort_msg("%s, the log has %d of %d \"%s\":\n%s", why, occurrences(log, needle), times, needle, text);
    }
    pause_ms(10);
  }
}

/* Whether pid has a handler for signo (SigCgt in /proc/PID/status): the
 * moment a signal sent to it is caught rather than acted on by default. */
static int catches(pid_t pid, int signo) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  unsigned long long mask = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "SigCgt: %llx", &mask) == 1) break;
  fclose(f);
  return (int)((mask >> (signo - 1)) & 1);
}

static void wait_until_caught(pid_t pid, int signo) {
  double deadline = now_s() + PATIENCE_S;
  while (!catches(pid, signo)) {
    ck_assert_msg(now_s() < deadline, "after %d s process %d has no handler for signal %d (%s)", PATIENCE_S, (int)pid,
                  signo, strsignal(signo));
    pause_ms(5);
  }
}

/* Waits for pid to exit; returns its exit status, or 128 + the signal
 * that killed it. */
static int wait_exit(pid_t pid) {
  double deadline = now_s() + PATIENCE_S;
  int status;
  pid_t r;
  while ((r = waitpid(pid, &status, WNOHANG)) == 0) {
    ck_assert_msg(now_s() < deadline, "process %d still running after %d s", (int)pid, PATIENCE_S);
    pause_ms(10);
  }
  ck_assert_int_eq(r, pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int running(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == 0;
}

/* Rows in the readings table (0 while it does not exist yet). */
static int64_t db_rows(const char *db_path) {
  sqlite3 *db;
  int64_t n = 0;
  if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM readings", -1, &st, NULL) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
      sqlite3_finalize(st);
    }
  }
  sqlite3_close(db);
  return n;
}

static int64_t wait_rows_above(const char *db_path, int64_t floor) {
  double deadline = now_s() + PATIENCE_S;
  int64_t n;
  while ((n = db_rows(db_path)) <= floor) {
    ck_assert_msg(now_s() < deadline, "after %d s the database has %" PRId64 " rows, not more than %" PRId64,
                  PATIENCE_S, n, floor);
    pause_ms(10);
  }
  return n;
}

/* A fleet's report (--report-json): the rows the database must hold, per
 * device 1..sent. Returns the readings sent. */
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

/* The end of a log, short enough for a Check message (which has a limit
 * of a few KiB: past it the test dies with "Message string too long"). */
static const char *log_tail(const char *text) {
  size_t len = strlen(text);
  return len > 1500 ? text + len - 1500 : text;
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

  const char *serve_argv[] = {
      NULL, "serve", "--listen-devices", "127.0.0.1:0", "--listen-http", "127.0.0.1:0", "--db", db, "--batch-age-ms",
      "50", NULL};
  pid_t serve = start(serve_argv, serve_log);
  wait_for_log(serve, serve_log, "telegate serve: devices on 127.0.0.1:", 1);
  char *text = slurp(serve_log);
  int port = atoi(strstr(text, "devices on 127.0.0.1:") + strlen("devices on 127.0.0.1:"));
  free(text);
  ck_assert_int_gt(port, 0);
  char connect[32];
  snprintf(connect, sizeof connect, "127.0.0.1:%d", port);
  wait_until_caught(serve, SIGHUP); /* its handlers are installed */

  /* A fleet sends; once its readings are being committed, two hang-ups. */
  const char *before_argv[] = {
      NULL,         "devices", "--connect",   connect,   "--count",       "5",         "--rate",  "200",
      "--duration", "3",       "--id-prefix", "before-", "--report-json", before_json, "--quiet", NULL};
  pid_t before = start(before_argv, before_log);
  wait_rows_above(db, 0);
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  wait_for_log(serve, serve_log, "SIGHUP: reload requested; nothing is reloadable yet, serve goes on", 1);
  int64_t rows_at_hup = db_rows(db);
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  wait_for_log(serve, serve_log, "SIGHUP: reload requested", 2);
  ck_assert_msg(running(serve), "serve ended after SIGHUP");
  ck_assert_int_eq(wait_exit(before), 0);

  /* Serve goes on: a second fleet, connected after the hang-ups, is read
   * and stored like the first. */
  const char *after_argv[] = {
      NULL,         "devices", "--connect",   connect,  "--count",       "3",        "--rate",  "100",
      "--duration", "1",       "--id-prefix", "after-", "--report-json", after_json, "--quiet", NULL};
  pid_t after = start(after_argv, after_log);
  ck_assert_int_eq(wait_exit(after), 0);
  ck_assert_msg(running(serve), "serve ended");
  wait_rows_above(db, rows_at_hup);

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
