/* test-process.h - what the tests that run the telegate binary share: a
 * temporary directory whose files are removed at the end, the binary
 * started under a name of the test's own, its log read back, and waits on
 * conditions (a log line, a handler installed, an exit, a figure of
 * /metrics), each with a generous deadline and never a fixed sleep.
 *
 * serve holds its database alone while it runs (storage_sqlite.c says
 * why): another process reads the rows once it has exited, and follows
 * the commits before through /metrics.
 *
 * Each test file includes it once; the state is per process (Check runs
 * each case in its own). */
#ifndef TELEGATE_TEST_PROCESS_H
#define TELEGATE_TEST_PROCESS_H

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long any one condition may take: far more than it needs on a quiet
 * machine, enough for a sanitizer build on a loaded one (60,000 readings
 * through TSan's serve with both cores busy took over 40 s). */
#define PATIENCE_S 90

/* The run's directory and the files in it, removed at the end. */
static char run_dir[64];
static char run_files[16][128];
static int run_nfiles;

static inline const char *dir_file(const char *name) {
  ck_assert_int_lt(run_nfiles, 16);
  char *p = run_files[run_nfiles++];
  snprintf(p, sizeof run_files[0], "%s/%s", run_dir, name);
  return p;
}

static inline void dir_init(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(run_dir, sizeof run_dir, "%s/tg-proc-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(run_dir));
}

static inline void dir_cleanup(void) {
  for (int i = 0; i < run_nfiles; i++) unlink(run_files[i]);
  rmdir(run_dir);
}

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void pause_ms(int ms) { nanosleep(&(struct timespec){0, ms * 1000000L}, NULL); }

/* The telegate binary next to this test, run through a link of another
 * name: the machine this runs on is shared, and a `pkill telegate` or
 * `pkill -f "telegate serve"` meant for someone else's gateway must not
 * end this one midway. */
static char gateway[128];

static inline void link_binary(void) {
  char self[512], bin[600];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ck_assert_int_gt(n, 0);
  self[n] = '\0';
  snprintf(bin, sizeof bin, "%s/../src/telegate", dirname(self));
  snprintf(gateway, sizeof gateway, "%s", dir_file("tg-proc-gateway"));
  ck_assert_int_eq(symlink(bin, gateway), 0);
}

/* Starts the binary with argv (argv[0] is set here), stdout and stderr
 * into `log`. The child stays in the test's process group, which Check
 * kills when the test ends: a failed test leaves no gateway behind. */
static inline pid_t start(const char *argv[], const char *log) {
  argv[0] = "tg-proc-gateway";
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
static inline char *slurp(const char *path) {
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
static inline int occurrences(const char *log, const char *needle) {
  char *text = slurp(log);
  int n = 0;
  for (const char *at = text; (at = strstr(at, needle)) != NULL; at += strlen(needle)) n++;
  free(text);
  return n;
}

/* Waits until the log of process pid holds `needle` `times` times; fails
 * naming it and showing the log if it does not come, or if the process
 * ended first. */
static inline void wait_for_log(pid_t pid, const char *log, const char *needle, int times) {
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

/* Whether pid runs the gateway and has a handler for signo (SigCgt in
 * /proc/PID/status): the moment a signal sent to it is caught rather than
 * acted on by default. Before its exec the child is a copy of the test,
 * whose handlers are Check's: its name tells the two apart. */
static inline int catches(pid_t pid, int signo) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  unsigned long long mask = 0;
  int exec_done = 0;
  while (fgets(line, sizeof line, f)) {
    if (strcmp(line, "Name:\ttg-proc-gateway\n") == 0) exec_done = 1;
    if (sscanf(line, "SigCgt: %llx", &mask) == 1) break;
  }
  fclose(f);
  return exec_done && (int)((mask >> (signo - 1)) & 1);
}

static inline void wait_until_caught(pid_t pid, int signo) {
  double deadline = now_s() + PATIENCE_S;
  while (!catches(pid, signo)) {
    ck_assert_msg(now_s() < deadline, "after %d s process %d has no handler for signal %d (%s)", PATIENCE_S, (int)pid,
                  signo, strsignal(signo));
    pause_ms(5);
  }
}

/* Waits for pid to exit; returns its exit status, or 128 + the signal
 * that killed it. */
static inline int wait_exit(pid_t pid) {
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

static inline int running(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == 0;
}

/* Rows in the readings table of a database no process holds: -1 when
 * it cannot be read. */
static inline int64_t db_rows(const char *db_path) {
  sqlite3 *db;
  int64_t n = -1;
  if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM readings", -1, &st, NULL) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
      sqlite3_finalize(st);
    }
  }
  sqlite3_close(db);
  return n;
}

/* The HTTP port serve's log names (0 before it does). */
static inline int http_port_of(const char *log) {
  static const char at[] = "/metrics on http://127.0.0.1:";
  char *text = slurp(log);
  const char *p = strstr(text, at);
  int port = p ? atoi(p + sizeof at - 1) : 0;
  free(text);
  return port;
}

/* GET path on 127.0.0.1:port: the status (-1: no answer), the body into
 * body (cap bytes with its NUL). */
static inline int http_get(int port, const char *path, char *body, size_t cap) {
  snprintf(body, cap, "(no answer)");
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static char resp[1 << 17];
  char req[256];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
  size_t len = 0;
  ssize_t r = write(fd, req, (size_t)n);
  while (r > 0 && len < sizeof resp - 1 && (r = read(fd, resp + len, sizeof resp - 1 - len)) > 0) len += (size_t)r;
  close(fd);
  resp[len] = '\0';
  int status = -1;
  if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) return -1;
  const char *b = strstr(resp, "\r\n\r\n");
  snprintf(body, cap, "%s", b ? b + 4 : "");
  return status;
}

/* A sample of serve's /metrics ("telegate_readings_stored_total"); -1
 * when there is no answer or no such sample. */
static inline double metric(int http_port, const char *name) {
  static char body[1 << 17];
  if (http_get(http_port, "/metrics", body, sizeof body) != 200) return -1;
  char key[128];
  snprintf(key, sizeof key, "\n%s ", name);
  const char *at = strstr(body, key);
  return at ? atof(at + strlen(key)) : -1;
}

/* Waits until serve has committed more than floor readings; returns how
 * many. */
static inline int64_t wait_stored_above(int http_port, int64_t floor) {
  double deadline = now_s() + PATIENCE_S;
  int64_t n;
  while ((n = (int64_t)metric(http_port, "telegate_readings_stored_total")) <= floor) {
    ck_assert_msg(now_s() < deadline, "after %d s serve has committed %" PRId64 " readings, not more than %" PRId64,
                  PATIENCE_S, n, floor);
    pause_ms(10);
  }
  return n;
}

/* The end of a log, short enough for a Check message (which has a limit
 * of a few KiB: past it the test dies with "Message string too long"). */
static inline const char *log_tail(const char *text) {
  size_t len = strlen(text);
  return len > 1500 ? text + len - 1500 : text;
}

#endif
