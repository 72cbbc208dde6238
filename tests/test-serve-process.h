/* test-serve-process.h - `telegate serve` and `telegate devices` as the
 * real binary in child processes, for tests that kill the gateway
 * (SIGKILL included) and start it again on the same database and port,
 * and read what the devices reported and what the database holds.
 *
 * Each child's stdout and stderr go to files in the test's directory, so
 * a child never blocks on a full pipe. Children die with the test
 * process (PR_SET_PDEATHSIG). Every wait is bounded: conditions are
 * polled a bounded number of times; waiting for a child's end is bounded
 * by the test's own timeout. No runtime is needed: these are plain
 * functions of the test process.
 *
 * serve holds its database alone while it runs (storage_sqlite.c says
 * why): the rows are read while it is down, and its commits followed
 * through /metrics while it runs. */
#ifndef TELEGATE_TEST_SERVE_PROCESS_H
#define TELEGATE_TEST_SERVE_PROCESS_H

#include "test-cli.h"

#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long a condition may take: generous for TSan on a loaded machine. */
#define PROC_PATIENCE_MS 60000

typedef struct proc {
  pid_t pid;
  char out[200], err[200]; /* where its stdout and stderr go */
  int http_port;           /* serve's /metrics */
} proc;

typedef struct proc_dir {
  char path[64];
  char db[128];
  int runs; /* children started, for unique log names */
} proc_dir;

static inline void proc_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* A fresh temporary directory with a database path in it. */
static inline void proc_dir_init(proc_dir *d) {
  memset(d, 0, sizeof *d);
  const char *tmp = getenv("TMPDIR");
  snprintf(d->path, sizeof d->path, "%s/telegate-proc-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(d->path));
  snprintf(d->db, sizeof d->db, "%s/serve.db", d->path);
}

static inline void proc_dir_cleanup(proc_dir *d) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->path);
  ck_assert_int_eq(system(cmd), 0);
}

/* Starts the telegate binary with argv (argv[0] included, NULL-ended). */
static inline void proc_start(proc_dir *d, proc *p, const char *const argv[]) {
  char bin[600];
  test_cli_binary(bin, sizeof bin);
  int run = ++d->runs;
  snprintf(p->out, sizeof p->out, "%s/%s-%d.out", d->path, argv[1], run);
  snprintf(p->err, sizeof p->err, "%s/%s-%d.err", d->path, argv[1], run);
  p->pid = fork();
  ck_assert_int_ge(p->pid, 0);
  if (p->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion leaves nothing running */
    if (!freopen(p->out, "w", stdout) || !freopen(p->err, "w", stderr)) _exit(126);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
}

/* Waits for the child's end: its exit status, or -signal. */
static inline int proc_wait(proc *p) {
  int status;
  ck_assert_int_eq(waitpid(p->pid, &status, 0), p->pid);
  p->pid = 0;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* Sends sig and waits for the end. */
static inline int proc_signal_wait(proc *p, int sig) {
  ck_assert_int_eq(kill(p->pid, sig), 0);
  return proc_wait(p);
}

/* Whether the child runs telegate and catches sig yet (its SigCgt mask
 * in /proc). Before its exec the child is a copy of the test, whose
 * handlers are Check's: its name tells the two apart. */
static inline int proc_catches(const proc *p, int sig) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)p->pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  unsigned long long mask = 0;
  int exec_done = 0;
  while (fgets(line, sizeof line, f)) {
    if (strcmp(line, "Name:\ttelegate\n") == 0) exec_done = 1;
    if (strncmp(line, "SigCgt:", 7) == 0) mask = strtoull(line + 7, NULL, 16);
  }
  fclose(f);
  return exec_done && ((mask >> (sig - 1)) & 1);
}

/* Waits until the child handles sig itself, so that sending it asks for
 * an orderly end rather than killing. */
static inline void proc_wait_catches(const proc *p, int sig) {
  for (int i = 0; i < PROC_PATIENCE_MS / 5 && !proc_catches(p, sig); i++) proc_sleep_ms(5);
  ck_assert_msg(proc_catches(p, sig), "pid %d does not catch signal %d", (int)p->pid, sig);
}

/* The first "MARKER<ipv4>:<port>" in the file; 0 if none yet. */
static inline int proc_port_in(const char *path, const char *marker) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[4096];
  int port = 0;
  while (!port && fgets(line, sizeof line, f)) {
    const char *at = strstr(line, marker);
    if (at && sscanf(at + strlen(marker), "%*[0-9.]:%d", &port) != 1) port = 0;
  }
  fclose(f);
  return port;
}

/* `telegate serve` on 127.0.0.1:port (0: any free one) with SQLite at
 * d->db, HTTP on any free port, health rounds off unless extra says
 * otherwise; extra (NULL or NULL-ended) flags are appended. Returns once
 * it listens for devices and handles SIGTERM, with its device port. */
static inline int serve_proc_start(proc_dir *d, proc *p, int port, const char *const extra[]) {
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  const char *argv[32] = {"telegate", "serve", "--listen-devices",     listen, "--listen-http", "127.0.0.1:0",
                          "--db",     d->db,   "--health-interval-ms", "0"};
  int n = 10;
  for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
  ck_assert_int_lt(n, 32);
  argv[n] = NULL;
  proc_start(d, p, argv);
  int got = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 5 && !(got = proc_port_in(p->out, "devices on ")); i++) {
    int status;
    ck_assert_msg(waitpid(p->pid, &status, WNOHANG) == 0, "serve ended before it listened (see %s)", p->err);
    proc_sleep_ms(5);
  }
  ck_assert_msg(got > 0, "serve did not say where it listens");
  if (port) ck_assert_int_eq(got, port);
  for (int i = 0; i < PROC_PATIENCE_MS / 5 && !(p->http_port = proc_port_in(p->out, "/metrics on http://")); i++)
    proc_sleep_ms(5);
  ck_assert_msg(p->http_port > 0, "serve did not say where /metrics is");
  proc_wait_catches(p, SIGTERM);
  return got;
}

/* A port nobody listens on now, and none this process was given lately:
 * ports picked before any of them is bound (a server's client, route and
 * MQTT ports) would otherwise now and then be the same one. */
static inline int proc_free_port(void) {
  static int given[64], next;
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    int port = ntohs(a.sin_port), seen = 0;
    for (int i = 0; i < 64; i++) seen |= given[i] == port;
    if (seen) continue;
    given[next++ % 64] = port;
    return port;
  }
}

/* Whether something listens on port of the loopback. */
static inline int proc_port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

/* Starts `bin -c conf` (a broker: mosquitto, nats-server) as p, its
 * output in d, and returns once it takes connections on port. */
static inline void proc_server_start(proc_dir *d, proc *p, const char *name, const char *bin, const char *conf,
                                     int port) {
  int run = ++d->runs;
  snprintf(p->out, sizeof p->out, "%s/%s-%d.out", d->path, name, run);
  snprintf(p->err, sizeof p->err, "%s/%s-%d.err", d->path, name, run);
  p->pid = fork();
  ck_assert_int_ge(p->pid, 0);
  if (p->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!freopen(p->out, "w", stdout) || !freopen(p->err, "w", stderr)) _exit(126);
    execl(bin, name, "-c", conf, (char *)NULL);
    _exit(127);
  }
  int up = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && !(up = proc_port_open(port)); i++) {
    int status;
    ck_assert_msg(waitpid(p->pid, &status, WNOHANG) == 0, "%s ended (see %s and %s)", name, p->out, p->err);
    proc_sleep_ms(10);
  }
  ck_assert_msg(up, "%s does not listen on %d", name, port);
}

/* serve's /metrics, or its /readyz: the HTTP status, and the body in
 * resp (NUL-terminated); 0 when serve does not answer. */
static inline int serve_get(const proc *p, const char *path, char *resp, size_t cap) {
  size_t len = 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->http_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    ssize_t r = write(fd, req, (size_t)n);
    while (r > 0 && len < cap - 1 && (r = read(fd, resp + len, cap - 1 - len)) > 0) len += (size_t)r;
  }
  if (fd >= 0) close(fd);
  resp[len] = '\0';
  int status = 0;
  if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) status = 0;
  return status;
}

/* A figure of serve's /metrics in resp: the value of the line starting
 * with `series` and a blank; -1 when there is none. */
static inline int64_t metric_in(const char *resp, const char *series) {
  char key[200];
  snprintf(key, sizeof key, "\n%s ", series);
  const char *at = strstr(resp, key);
  return at ? strtoll(at + strlen(key), NULL, 10) : -1;
}

static inline int64_t serve_metric(const proc *p, const char *series) {
  static char resp[1 << 18];
  serve_get(p, "/metrics", resp, sizeof resp);
  return metric_in(resp, series);
}

/* Polls until serve_metric(series) >= want; returns the value. */
static inline int64_t serve_wait_metric(const proc *p, const char *series, int64_t want) {
  int64_t v = -1;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && (v = serve_metric(p, series)) < want; i++) proc_sleep_ms(10);
  ck_assert_msg(v >= want, "%s is %lld, waited for %lld", series, (long long)v, (long long)want);
  return v;
}

/* The readings this run of serve has committed
 * (telegate_readings_stored_total); -1 when it does not answer. */
static inline int64_t serve_stored(const proc *p) { return serve_metric(p, "telegate_readings_stored_total"); }

/* Polls serve until this run has committed at least want readings. */
static inline void serve_wait_stored(const proc *p, int64_t want) {
  int64_t n = -1;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && (n = serve_stored(p)) < want; i++) proc_sleep_ms(10);
  ck_assert_msg(n >= want, "serve has committed %lld readings, waited for %lld", (long long)n, (long long)want);
}

/* Readings stored in the database, read while no serve runs; -1 when it
 * cannot be read. */
static inline int64_t db_rows(const char *path) {
  sqlite3 *db;
  int64_t n = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM readings", -1, &st, NULL) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
      sqlite3_finalize(st);
    }
  }
  sqlite3_close(db);
  return n;
}

/* A `telegate devices --report-json` report, parsed. */
static inline cJSON *devices_report_load(const char *path) {
  FILE *f = fopen(path, "r");
  ck_assert_msg(f != NULL, "no report at %s", path);
  static char text[1 << 20];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  cJSON *j = cJSON_Parse(text);
  ck_assert_msg(j != NULL, "the report is not JSON");
  return j;
}

static inline uint64_t json_u64(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  ck_assert_msg(cJSON_IsNumber(v), "no number %s in the report", name);
  return (uint64_t)v->valuedouble;
}

/* The database holds exactly seqs 1..n of device id, once each (none
 * when n is 0). */
static inline void db_has_seqs(const char *path, const char *id, int64_t n) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM readings "
                                      "WHERE device = ?1",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t rows = sqlite3_column_int64(st, 0), distinct = sqlite3_column_int64(st, 1);
  ck_assert_msg(rows == n && distinct == n, "%s: %lld rows, %lld distinct seqs, want %lld", id, (long long)rows,
                (long long)distinct, (long long)n);
  if (n) {
    ck_assert_int_eq(sqlite3_column_int64(st, 2), 1);
    ck_assert_int_eq(sqlite3_column_int64(st, 3), n);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* The database holds, for every device of the report, exactly its seqs
 * 1..generated, once each, and nothing of any other device. Returns the
 * rows. */
static inline uint64_t db_check_report(const char *path, const cJSON *report) {
  uint64_t rows = 0;
  const cJSON *dev;
  cJSON_ArrayForEach(dev, cJSON_GetObjectItemCaseSensitive(report, "devices")) {
    uint64_t generated = json_u64(dev, "generated");
    db_has_seqs(path, cJSON_GetObjectItemCaseSensitive(dev, "id")->valuestring, (int64_t)generated);
    rows += generated;
  }
  ck_assert_int_eq(db_rows(path), (int64_t)rows); /* no device the report does not know */
  return rows;
}

/* A `telegate devices` process and where its report goes. */
typedef struct devices_run {
  proc p;
  char report[160];
  char connect[32]; /* argv of the child points here */
} devices_run;

/* `telegate devices --quiet --report-json` against 127.0.0.1:port with
 * more flags (NULL-ended); the report goes to r->report. */
static inline void devices_proc_start(proc_dir *d, devices_run *r, int port, const char *const flags[]) {
  snprintf(r->connect, sizeof r->connect, "127.0.0.1:%d", port);
  snprintf(r->report, sizeof r->report, "%s/report-%d.json", d->path, d->runs + 1);
  const char *argv[32] = {"telegate", "devices", "--connect", r->connect, "--report-json", r->report, "--quiet"};
  int n = 7;
  for (int i = 0; flags[i]; i++) argv[n++] = flags[i];
  ck_assert_int_lt(n, 32);
  argv[n] = NULL;
  proc_start(d, &r->p, argv);
}

/* A file's text (a child's stderr), "" if it cannot be read. */
static inline void proc_read_file(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  size_t n = f ? fread(buf, 1, len - 1, f) : 0;
  buf[n] = '\0';
  if (f) fclose(f);
}

/* Every device acked all it generated. */
static inline void devices_report_all_acked(const cJSON *report) {
  ck_assert_uint_gt(json_u64(report, "generated"), 0);
  ck_assert_uint_eq(json_u64(report, "unacked"), 0);
  ck_assert_uint_eq(json_u64(report, "acked"), json_u64(report, "generated"));
  const cJSON *dev;
  cJSON_ArrayForEach(dev, cJSON_GetObjectItemCaseSensitive(report, "devices")) {
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(dev, "acks")));
    ck_assert_uint_eq(json_u64(dev, "acked"), json_u64(dev, "generated"));
  }
}

#endif
