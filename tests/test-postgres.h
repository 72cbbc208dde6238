/* test-postgres.h - a PostgreSQL server of the test's own, in a temporary
 * directory: for the tests of the postgres storage backend and of serve
 * on it.
 *
 * The suite's main calls pg_template_init once: initdb makes a cluster
 * (superuser `telegate`, trust authentication) that each test case copies
 * and starts with pg_cluster_start, on 127.0.0.1 at a free port, its unix
 * socket in its own directory, fsync off (durability against power loss
 * is PostgreSQL's, not what these tests check), small buffers.
 * PostgreSQL refuses to run as root, so a root test runs the server as
 * `nobody`. The server is
 * the test process's child and dies with it (PR_SET_PDEATHSIG, SIGQUIT:
 * PostgreSQL's immediate shutdown), so a test that fails or times out
 * leaves nothing running; start and restart it from the test's own thread
 * (the signal follows the thread that forked). Waits are bounded: the
 * server must answer PQping within PG_PATIENCE_MS.
 *
 * Without initdb (looked for in /usr/lib/postgresql/N/bin, then on
 * PATH) the suite says so loudly and exits 77, which CTest counts as
 * skipped; scripts/deps.sh installs it, so it runs in CI. (A suite with
 * other cases, test-storage-backends.c, skips only its postgres case.) */
#ifndef TELEGATE_TEST_POSTGRES_H
#define TELEGATE_TEST_POSTGRES_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG_PATIENCE_MS 60000

/* The skip status CTest knows (SKIP_RETURN_CODE). */
#define PG_SKIP 77

typedef struct pg_template {
  char bin[200]; /* the server's binaries */
  char dir[64];  /* holds data/, the initdb'd cluster */
  uid_t uid;     /* who runs the server */
  gid_t gid;
  pid_t owner; /* the suite's process: forked test cases leave the template alone */
} pg_template;

/* Set by pg_template_init in main, inherited by each forked test case. */
static pg_template pg_tpl;

typedef struct pg_cluster {
  char dir[64]; /* data/, the socket, postgres.log */
  char data[96];
  int port;
  pid_t pid;     /* the postmaster; 0 when stopped */
  char uri[128]; /* postgresql://telegate@127.0.0.1:PORT/postgres */
} pg_cluster;

static inline void pg_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* The directory of initdb and postgres: the newest packaged version's,
 * else initdb's on PATH. 0 or -1 (none). */
static inline int pg_find_bin(char *out, size_t len) {
  glob_t g;
  int found = 0;
  if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0) {
    size_t best = 0;
    long best_v = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
      long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
      if (v > best_v) best_v = v, best = i;
    }
    snprintf(out, len, "%.*s", (int)(strlen(g.gl_pathv[best]) - strlen("/initdb")), g.gl_pathv[best]);
    found = 1;
    globfree(&g);
  }
  const char *path = getenv("PATH");
  while (!found && path && *path) {
    size_t n = strcspn(path, ":");
    char cand[300];
    snprintf(cand, sizeof cand, "%.*s/initdb", (int)n, path);
    if (n && access(cand, X_OK) == 0) {
      snprintf(out, len, "%.*s", (int)n, path);
      found = 1;
    }
    path += n + (path[n] == ':');
  }
  return found ? 0 : -1;
}

/* In a forked child: become the server's user, die with the parent,
 * write to log, exec argv. */
static inline void pg_exec_as_server(const char *log, const char *const argv[]) {
  if (getuid() == 0 && (setgroups(0, NULL) != 0 || setgid(pg_tpl.gid) != 0 || setuid(pg_tpl.uid) != 0)) _exit(125);
  prctl(PR_SET_PDEATHSIG, SIGQUIT); /* after the uid change, which clears it */
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(126);
  close(fd);
  execv(argv[0], (char *const *)argv);
  _exit(127);
}

static inline void pg_print_log(const char *path) {
  char buf[4096];
  FILE *f = fopen(path, "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = 0;
  if (f) fclose(f);
  fprintf(stderr, "--- %s ---\n%s\n", path, buf);
}

/* A temporary directory the server's user owns. */
static inline void pg_mkdir(char *dir, size_t len) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, len, "%s/telegate-pg-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(chown(dir, pg_tpl.uid, pg_tpl.gid), 0);
}

static inline void pg_template_cleanup(void) {
  if (!pg_tpl.dir[0] || getpid() != pg_tpl.owner) return;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", pg_tpl.dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", pg_tpl.dir);
}

/* For main, before the suite: initdb into a template. Returns 0, or
 * PG_SKIP when there is no initdb (said on stderr). Exits on a failure. */
static inline int pg_template_init(void) {
  if (pg_find_bin(pg_tpl.bin, sizeof pg_tpl.bin) != 0) {
    fprintf(stderr, "\n*** SKIPPED: no PostgreSQL server binaries (initdb) on PATH or in /usr/lib/postgresql;"
                    " scripts/deps.sh installs them (Debian package postgresql) ***\n\n");
    return PG_SKIP;
  }
  pg_tpl.uid = getuid();
  pg_tpl.gid = getgid();
  if (pg_tpl.uid == 0) {
    struct passwd *pw = getpwnam("nobody");
    if (!pw) {
      fprintf(stderr, "test-postgres.h: running as root and there is no user 'nobody' to run PostgreSQL as\n");
      exit(1);
    }
    pg_tpl.uid = pw->pw_uid;
    pg_tpl.gid = pw->pw_gid;
  }
  const char *tmp = getenv("TMPDIR");
  snprintf(pg_tpl.dir, sizeof pg_tpl.dir, "%s/telegate-pgtpl-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  if (!mkdtemp(pg_tpl.dir) || chown(pg_tpl.dir, pg_tpl.uid, pg_tpl.gid) != 0) {
    perror("test-postgres.h: template directory");
    exit(1);
  }
  pg_tpl.owner = getpid();
  atexit(pg_template_cleanup);
  char initdb[256], data[96], log[96];
  snprintf(initdb, sizeof initdb, "%s/initdb", pg_tpl.bin);
  snprintf(data, sizeof data, "%s/data", pg_tpl.dir);
  snprintf(log, sizeof log, "%s/initdb.log", pg_tpl.dir);
  /* No locale: the machine's LANG may name one that is not generated. */
  const char *argv[] = {initdb, "-D",   data,          "-U",        "telegate",          "-A", "trust",
                        "-E",   "UTF8", "--no-locale", "--no-sync", "--no-instructions", NULL};
  pid_t pid = fork();
  if (pid == 0) pg_exec_as_server(log, argv);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "test-postgres.h: initdb failed (status %d)\n", status);
    pg_print_log(log);
    exit(1);
  }
  return 0;
}

static inline int pg_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* Starts the postmaster on c's data and port; returns once it accepts
 * connections. */
static inline void pg_cluster_run(pg_cluster *c) {
  char postgres[256], port[16], sock[96], log[96];
  snprintf(postgres, sizeof postgres, "%s/postgres", pg_tpl.bin);
  snprintf(port, sizeof port, "%d", c->port);
  snprintf(sock, sizeof sock, "%s", c->dir);
  snprintf(log, sizeof log, "%s/postgres.log", c->dir);
  /* Small: suites run side by side, under sanitizers. */
  const char *argv[] = {postgres,
                        "-D",
                        c->data,
                        "-p",
                        port,
                        "-k",
                        sock,
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "shared_buffers=32MB",
                        "-c",
                        "max_connections=40",
                        NULL};
  c->pid = fork();
  ck_assert_int_ge(c->pid, 0);
  if (c->pid == 0) pg_exec_as_server(log, argv);
  int up = 0;
  for (int i = 0; i < PG_PATIENCE_MS / 20 && !up; i++) {
    int status;
    if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
      pg_print_log(log);
      ck_abort_msg("postgres exited at start (status %d)", status);
    }
    up = PQping(c->uri) == PQPING_OK;
    if (!up) pg_sleep_ms(20);
  }
  if (!up) pg_print_log(log);
  ck_assert_msg(up, "postgres did not accept connections within %d ms", PG_PATIENCE_MS);
}

/* A server of the test's own, from the template. */
static inline void pg_cluster_start(pg_cluster *c) {
  memset(c, 0, sizeof *c);
  pg_mkdir(c->dir, sizeof c->dir);
  snprintf(c->data, sizeof c->data, "%s/data", c->dir);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "cp -a '%s/data' '%s'", pg_tpl.dir, c->data);
  ck_assert_int_eq(system(cmd), 0);
  c->port = pg_free_port();
  snprintf(c->uri, sizeof c->uri, "postgresql://telegate@127.0.0.1:%d/postgres", c->port);
  pg_cluster_run(c);
}

/* Stops the server: SIGINT is PostgreSQL's fast shutdown (sessions
 * ended, everything flushed), SIGQUIT its immediate one (a crash: the next
 * start recovers from the WAL). */
static inline void pg_cluster_stop(pg_cluster *c, int sig) {
  if (!c->pid) return;
  ck_assert_int_eq(kill(c->pid, sig), 0);
  int status;
  ck_assert_int_eq(waitpid(c->pid, &status, 0), c->pid);
  c->pid = 0;
}

static inline void pg_cluster_destroy(pg_cluster *c) {
  pg_cluster_stop(c, SIGINT);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* A connection of the test's own, to look behind the storage's back. */
static inline PGconn *pg_connect(const pg_cluster *c) {
  PGconn *pg = PQconnectdb(c->uri);
  ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "connect %s: %s", c->uri, PQerrorMessage(pg));
  return pg;
}

/* Runs sql; fails the test unless it succeeds. */
static inline void pg_exec(PGconn *pg, const char *sql) {
  PGresult *res = PQexec(pg, sql);
  ExecStatusType st = PQresultStatus(res);
  ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
  PQclear(res);
}

/* The one value sql returns, as an integer. */
static inline long long pg_value(PGconn *pg, const char *sql) {
  PGresult *res = PQexec(pg, sql);
  ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1, "%s: %s", sql, PQerrorMessage(pg));
  long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
  PQclear(res);
  return v;
}

/* Checks what the database holds: per device, the seqs 1, 2, 3 ... once
 * each and nothing else, their batches in the order of their seqs, and
 * device_hwm at the last. Returns the devices; the rows into *rows. */
static inline int pg_check_sequences(const pg_cluster *c, uint64_t *rows) {
  PGconn *pg = pg_connect(c);
  long long bad = pg_value(pg, "SELECT count(*) FROM (SELECT device, seq, batch,"
                               " row_number() OVER (PARTITION BY device ORDER BY seq) AS n,"
                               " lag(batch) OVER (PARTITION BY device ORDER BY seq) AS before"
                               " FROM readings) r WHERE seq <> n OR batch < before");
  ck_assert_msg(bad == 0, "%lld rows out of their device's sequence", bad);
  long long marks = pg_value(pg, "SELECT count(*) FROM device_hwm h WHERE h.seq IS DISTINCT FROM"
                                 " (SELECT max(seq) FROM readings r WHERE r.device = h.device)");
  ck_assert_msg(marks == 0, "%lld marks are not their device's last seq", marks);
  long long unmarked = pg_value(pg, "SELECT count(DISTINCT device) FROM readings r WHERE NOT EXISTS"
                                    " (SELECT 1 FROM device_hwm h WHERE h.device = r.device)");
  ck_assert_int_eq(unmarked, 0);
  *rows = (uint64_t)pg_value(pg, "SELECT count(*) FROM readings");
  int devices = (int)pg_value(pg, "SELECT count(DISTINCT device) FROM readings");
  PQfinish(pg);
  return devices;
}

#endif
