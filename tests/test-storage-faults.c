/* test-storage-faults.c - serve's storage failing under it, as it fails
 * in the field: the disk fills up (then is freed), the filesystem turns
 * read-only (ext4 does on an I/O error), another program truncates the
 * WAL index. serve must not crash, must say so (/readyz 503 with the
 * reason, the storage_failing gauge), must commit everything once the
 * storage is back, and at a SIGTERM while it still fails must exit 1
 * with the exact number of readings it read and did not commit - the
 * ones devices must send again.
 *
 * Real processes, real sockets, real SQLite on real filesystems: the
 * telegate binary, a device that writes a known sequence of readings
 * over TCP (a forked child), tmpfs and ext4 mounts made in a mount
 * namespace of the test's own, so that whatever a failed test leaves
 * mounted goes with it. Mounting needs root (CAP_SYS_ADMIN): without
 * it the cases say so and pass without running. Every wait is on a
 * condition (a log line, an HTTP answer, an exit) with a deadline. */

#include "helpers.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long any one condition may take: far more than it needs on a quiet
 * machine, enough for a sanitizer build on a loaded one. */
#define PATIENCE_S 40
/* The device's readings go to this many device ids, round robin. */
#define DEVICES    10

static char dir[72];       /* the test's directory; the mount point */
static char db[160];       /* the database in it */
static char log_path[128]; /* serve's log, outside the mount */
static char sumf[128];     /* serve's --summary-json, outside the mount */
static char gateway[128];

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pause_ms(int ms) { nanosleep(&(struct timespec){0, ms * 1000000L}, NULL); }

/* ------------------------------------------------------------ the place */

/* A mount namespace of this test's own (Check forks each case): mounts
 * made here vanish with its last process. 0, or -1 when not permitted. */
static int private_mounts(void) {
  if (unshare(CLONE_NEWNS) != 0) return -1;
  return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 ? 0 : -1;
}

static void skip(const char *why) { fprintf(stderr, "test-storage-faults: SKIPPED: %s\n", why); }

/* The directories and the binary, run through a link of its own name
 * (a `pkill telegate` meant for another gateway must not end this one). */
static void place_init(void) {
  const char *tmp = getenv("TMPDIR");
  char base[64];
  snprintf(base, sizeof base, "%s/tg-sf-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(base));
  snprintf(dir, sizeof dir, "%s/m", base);
  ck_assert_int_eq(mkdir(dir, 0755), 0);
  snprintf(db, sizeof db, "%s/serve.db", dir);
  snprintf(log_path, sizeof log_path, "%s/serve.log", base);
  snprintf(sumf, sizeof sumf, "%s/summary.json", base);
  char self[512], bin[600];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ck_assert_int_gt(n, 0);
  self[n] = '\0';
  snprintf(bin, sizeof bin, "%s/../src/telegate", dirname(self));
  snprintf(gateway, sizeof gateway, "%s/tg-sf-gateway", base);
  ck_assert_int_eq(symlink(bin, gateway), 0);
}

static int run(const char *cmd) {
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A file of `bytes` zeros: what leaves a disk nearly full. */
static void fill(const char *path, long bytes) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert_int_ge(fd, 0);
  static char zeros[65536];
  for (long left = bytes; left > 0;) {
    ssize_t w = write(fd, zeros, left < (long)sizeof zeros ? (size_t)left : sizeof zeros);
    ck_assert_int_gt(w, 0);
    left -= w;
  }
  close(fd);
}

/* ------------------------------------------------------------ processes */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return strdup("");
  size_t cap = 1 << 16, len = 0, n;
  char *buf = malloc(cap);
  ck_assert_ptr_nonnull(buf);
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 == cap) {
      buf = realloc(buf, cap *= 2);
      ck_assert_ptr_nonnull(buf);
    }
  }
  buf[len] = '\0';
  fclose(f);
  return buf;
}

static int occurrences(const char *path, const char *needle) {
  char *text = slurp(path);
  int n = 0;
  for (const char *at = text; (at = strstr(at, needle)) != NULL; at += strlen(needle)) n++;
  free(text);
  return n;
}

/* The end of the log, short enough for a Check message. */
static char tail_buf[1600];
static const char *log_tail(void) {
  char *text = slurp(log_path);
  size_t len = strlen(text);
  snprintf(tail_buf, sizeof tail_buf, "%s", len > 1500 ? text + len - 1500 : text);
  free(text);
  return tail_buf;
}

static int alive(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == 0;
}

static void wait_for_log(pid_t pid, const char *needle) {
  double deadline = now_s() + PATIENCE_S;
  while (occurrences(log_path, needle) == 0) {
    ck_assert_msg(alive(pid) && now_s() < deadline, "no \"%s\" in serve's log; it ends:\n%s", needle, log_tail());
    pause_ms(10);
  }
}

/* Waits for pid to end: its exit status, or 128 + the killing signal. */
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

typedef struct gw {
  pid_t pid;
  int devices_port, http_port;
} gw;

/* Starts serve on db with the extra flags (NULL-terminated); waits for
 * both listeners. The child stays in the test's process group, which
 * Check kills when the case ends. */
static gw serve_start(const char *const *extra) {
  const char *argv[32] = {"tg-sf-gateway",
                          "serve",
                          "--listen-devices",
                          "127.0.0.1:0",
                          "--listen-http",
                          "127.0.0.1:0",
                          "--db",
                          db,
                          "--batch-size",
                          "200",
                          "--batch-age-ms",
                          "20",
                          "--health-interval-ms",
                          "0",
                          "--summary-json",
                          sumf};
  int n = 16;
  for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  unlink(sumf);
  unlink(log_path); /* the last serve's: its ports are not this one's */
  gw g = {0};
  g.pid = fork();
  ck_assert_int_ge(g.pid, 0);
  if (g.pid == 0) {
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(gateway, (char *const *)argv);
    _exit(127);
  }
  wait_for_log(g.pid, "/metrics on http://127.0.0.1:");
  char *text = slurp(log_path);
  g.devices_port = atoi(strstr(text, "devices on 127.0.0.1:") + strlen("devices on 127.0.0.1:"));
  g.http_port = atoi(strstr(text, "/metrics on http://127.0.0.1:") + strlen("/metrics on http://127.0.0.1:"));
  free(text);
  ck_assert_int_gt(g.devices_port, 0);
  ck_assert_int_gt(g.http_port, 0);
  return g;
}

/* ------------------------------------------------------------ the device */

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
  close(fd);
  return -1;
}

/* A device process: writes readings [0, n) as fast as the socket takes
 * them (reading i is device f-(i % DEVICES), seq i / DEVICES + 1), then
 * closes. It never reads: serve's backpressure stops its writes. */
static pid_t device_start(int port, int n) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid > 0) return pid;
  signal(SIGPIPE, SIG_IGN);
  int fd = connect_to(port);
  if (fd < 0) _exit(2);
  char buf[16384];
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    len += (size_t)snprintf(buf + len, sizeof buf - len,
                            "{\"device\":\"f-%d\",\"seq\":%d,\"ts\":%lld,\"temperature\":21.5,\"humidity\":40,"
                            "\"battery\":80}\n",
                            i % DEVICES, i / DEVICES + 1, 1732590000000LL + i);
    if (len > sizeof buf - 200 || i == n - 1) {
      for (size_t at = 0; at < len;) {
        ssize_t w = write(fd, buf + at, len - at);
        if (w <= 0) _exit(1);
        at += (size_t)w;
      }
      len = 0;
    }
  }
  close(fd);
  _exit(0);
}

/* ------------------------------------------------------------ HTTP */

/* GET path: the status, the body into body. -1: no answer. */
static int http_get(int port, const char *path, char *body, size_t cap) {
  int fd = connect_to(port);
  snprintf(body, cap, "(no answer)");
  if (fd < 0) return -1;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char req[256], resp[65536];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
  ck_assert_int_eq(write(fd, req, (size_t)n), n);
  size_t len = 0;
  ssize_t r;
  while (len < sizeof resp - 1 && (r = read(fd, resp + len, sizeof resp - 1 - len)) > 0) len += (size_t)r;
  close(fd);
  resp[len] = '\0';
  int status = -1;
  if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) return -1;
  const char *b = strstr(resp, "\r\n\r\n");
  snprintf(body, cap, "%s", b ? b + 4 : "");
  return status;
}

/* Waits until /readyz answers `status`; its body into body. */
static void wait_readyz(const gw *g, int status, char *body, size_t cap) {
  double deadline = now_s() + PATIENCE_S;
  while (http_get(g->http_port, "/readyz", body, cap) != status) {
    ck_assert_msg(alive(g->pid), "serve died waiting for /readyz %d; its log ends:\n%s", status, log_tail());
    ck_assert_msg(now_s() < deadline, "/readyz is not %d after %d s: %s", status, PATIENCE_S, body);
    pause_ms(20);
  }
}

/* A value of /metrics ("telegate_readings_stored_total"). */
static double metric(const gw *g, const char *name) {
  static char body[65536];
  int status = http_get(g->http_port, "/metrics", body, sizeof body);
  ck_assert_msg(status == 200, "/metrics answered %d; serve's log ends:\n%s", status, log_tail());
  char key[128];
  snprintf(key, sizeof key, "\n%s ", name);
  const char *at = strstr(body, key);
  ck_assert_msg(at != NULL, "no %s in /metrics", name);
  return atof(at + strlen(key));
}

/* ------------------------------------------------------------ checks */

typedef struct summary {
  long long received, stored, duplicate, unstored, db_rows;
} summary;

static summary read_summary(void) {
  char *text = slurp(sumf);
  cJSON *j = cJSON_Parse(text);
  ck_assert_msg(j != NULL, "no summary JSON; serve's log ends:\n%s", log_tail());
  free(text);
  summary s = {
      .received = (long long)cJSON_GetObjectItem(j, "readings_received")->valuedouble,
      .stored = (long long)cJSON_GetObjectItem(j, "readings_stored")->valuedouble,
      .duplicate = (long long)cJSON_GetObjectItem(j, "readings_duplicate")->valuedouble,
      .unstored = (long long)cJSON_GetObjectItem(j, "readings_unstored")->valuedouble,
      .db_rows = (long long)cJSON_GetObjectItem(j, "db_rows")->valuedouble,
  };
  cJSON_Delete(j);
  return s;
}

/* The readings table, after serve ended: rows, and whether every row is
 * a reading the device sent, each once; and the database is whole. */
static long long db_check(int sent) {
  sqlite3 *h;
  ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(h, "PRAGMA quick_check", -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  ck_assert_int_eq(sqlite3_prepare_v2(h,
                                      "SELECT COUNT(*), COUNT(DISTINCT device || '/' || seq), "
                                      "SUM(CAST(substr(device, 3) AS INTEGER) + (seq - 1) * ?1 >= ?2) "
                                      "FROM readings",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_int(st, 1, DEVICES);
  sqlite3_bind_int(st, 2, sent);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  long long rows = sqlite3_column_int64(st, 0);
  ck_assert_int_eq(sqlite3_column_int64(st, 1), rows); /* none twice */
  ck_assert_int_eq(sqlite3_column_int64(st, 2), 0);    /* none the device did not send */
  sqlite3_finalize(st);
  sqlite3_close(h);
  return rows;
}

/* The failing and recovered lines pair up: one line per change of state,
 * not per retry. Returns how many times storage failed. */
static int failing_episodes(int recovered) {
  int failing = occurrences(log_path, "Storage failing: "), back = occurrences(log_path, "Storage recovered after ");
  ck_assert_int_ge(failing, 1);
  ck_assert_int_eq(back, recovered ? failing : failing - 1);
  return failing;
}

/* ------------------------------------------------------------ the cases */

/* A full disk while a device streams: 503 with the reason, no crash;
 * space freed: 200 again, and every reading stored exactly once. */
START_TEST(test_disk_full_then_freed) {
  if (private_mounts() != 0) {
    skip("cannot make a mount namespace (needs root)");
    return;
  }
  place_init();
  if (mount("tmpfs", dir, "tmpfs", 0, "size=12m") != 0) {
    skip("cannot mount a tmpfs (needs root)");
    return;
  }
  char filler[200], body[512];
  snprintf(filler, sizeof filler, "%s/filler", dir);
  fill(filler, 11L << 20);
  gw g = serve_start(NULL);
  enum { N = 60000 };
  pid_t dev = device_start(g.devices_port, N);

  wait_readyz(&g, 503, body, sizeof body);
  ck_assert_msg(strstr(body, "storage failing since") && strstr(body, "SQLITE_FULL"), "503 says: %s", body);
  ck_assert_int_eq((int)metric(&g, "telegate_storage_failing"), 1);
  ck_assert_int_eq(unlink(filler), 0);
  wait_readyz(&g, 200, body, sizeof body);
  ck_assert_int_eq(wait_exit(dev), 0);

  ck_assert_int_eq(kill(g.pid, SIGTERM), 0);
  int status = wait_exit(g.pid);
  ck_assert_msg(status == 0, "serve exited with %d; its log ends:\n%s", status, log_tail());
  summary s = read_summary();
  ck_assert_int_eq(s.received, N);
  ck_assert_int_eq(s.stored, N);
  ck_assert_int_eq(s.unstored, 0);
  ck_assert_int_eq(db_check(N), N);
  failing_episodes(1);
}
END_TEST

/* SIGTERM while the disk is still full: serve waits its storage timeout,
 * exits 1, and counts exactly the readings it read and did not commit:
 * read - rows in the database, as found once the disk has room again. */
START_TEST(test_disk_full_at_sigterm) {
  if (private_mounts() != 0) {
    skip("cannot make a mount namespace (needs root)");
    return;
  }
  place_init();
  if (mount("tmpfs", dir, "tmpfs", 0, "size=12m") != 0) {
    skip("cannot mount a tmpfs (needs root)");
    return;
  }
  char filler[200], body[512];
  snprintf(filler, sizeof filler, "%s/filler", dir);
  fill(filler, 11L << 20);
  const char *flags[] = {"--drain-ms", "300", "--storage-shutdown-timeout-ms", "1000", NULL};
  gw g = serve_start(flags);
  enum { N = 60000 };
  pid_t dev = device_start(g.devices_port, N);
  wait_readyz(&g, 503, body, sizeof body);

  ck_assert_int_eq(kill(g.pid, SIGTERM), 0);
  int status = wait_exit(g.pid);
  ck_assert_msg(status == 1, "serve exited with %d; its log ends:\n%s", status, log_tail());
  kill(dev, SIGKILL);
  wait_exit(dev);
  summary s = read_summary();
  ck_assert_int_gt(s.unstored, 0);
  ck_assert_int_le(s.received, N);
  ck_assert_int_eq(s.unstored, s.received - s.stored - s.duplicate);
  ck_assert_int_eq(occurrences(log_path, "readings read from devices were not committed"), 1);

  /* What the database holds, read with room on the disk again. */
  ck_assert_int_eq(mount("tmpfs", dir, "tmpfs", MS_REMOUNT, "size=64m"), 0);
  long long rows = db_check(N);
  ck_assert_int_eq(rows, s.stored);
  ck_assert_int_eq(rows, s.db_rows);
  ck_assert_int_eq(s.unstored, s.received - rows);
  failing_episodes(0);

  /* The device sends everything again, as it must for what was never
   * acknowledged: what was stored is dropped as a resend, the rest is
   * stored, and each reading is in the database once. */
  gw again = serve_start(NULL);
  wait_readyz(&again, 200, body, sizeof body);
  ck_assert_int_eq(wait_exit(device_start(again.devices_port, N)), 0);
  ck_assert_int_eq(kill(again.pid, SIGTERM), 0);
  status = wait_exit(again.pid);
  ck_assert_msg(status == 0, "serve exited with %d; its log ends:\n%s", status, log_tail());
  summary s2 = read_summary();
  ck_assert_int_eq(s2.duplicate, rows);
  ck_assert_int_eq(s2.stored, N - rows);
  ck_assert_int_eq(db_check(N), N);
}
END_TEST

/* The filesystem turns read-only under serve, as ext4 does when its disk
 * fails (mount -o remount,abort is that, on demand): no crash, 503 with
 * the reason, and at SIGTERM exit 1 with the exact count. (What the disk
 * holds after such an abort is the filesystem's word: the transaction
 * whose sync failed may have reached it, and then the device's resend of
 * it is dropped as a duplicate, as disk_full_at_sigterm shows.) */
START_TEST(test_filesystem_read_only) {
  if (private_mounts() != 0) {
    skip("cannot make a mount namespace (needs root)");
    return;
  }
  place_init();
  char img[200], cmd[1024], body[512];
  snprintf(img, sizeof img, "%s.img", dir);
  snprintf(cmd, sizeof cmd, "truncate -s 64m %s && mkfs.ext4 -q -F %s >/dev/null 2>&1 && mount -o loop %s %s", img, img,
           img, dir);
  if (run(cmd) != 0) {
    unlink(img);
    skip("cannot make and mount an ext4 image (needs root, mkfs.ext4 and a loop device)");
    return;
  }
  const char *flags[] = {"--durability", "full", "--drain-ms", "300", "--storage-shutdown-timeout-ms", "1000", NULL};
  gw g = serve_start(flags);
  enum { N = 20000 };
  pid_t dev = device_start(g.devices_port, N);
  double deadline = now_s() + PATIENCE_S;
  while (metric(&g, "telegate_readings_stored_total") < 1000) {
    ck_assert_msg(now_s() < deadline, "nothing committed after %d s", PATIENCE_S);
    pause_ms(10);
  }
  snprintf(cmd, sizeof cmd, "mount -o remount,abort %s", dir);
  ck_assert_int_eq(run(cmd), 0);
  wait_readyz(&g, 503, body, sizeof body);
  ck_assert_msg(strstr(body, "storage failing since"), "503 says: %s", body);

  ck_assert_int_eq(kill(g.pid, SIGTERM), 0);
  int status = wait_exit(g.pid);
  ck_assert_msg(status == 1, "serve exited with %d; its log ends:\n%s", status, log_tail());
  kill(dev, SIGKILL);
  wait_exit(dev);
  summary s = read_summary();
  ck_assert_int_gt(s.unstored, 0);
  ck_assert_int_eq(s.unstored, s.received - s.stored - s.duplicate);
  failing_episodes(0);

  ck_assert_int_eq(s.db_rows, s.stored); /* what serve's own connection counts at the end */
  snprintf(cmd, sizeof cmd, "umount %s", dir);
  run(cmd);
  unlink(img);
}
END_TEST

/* Whether pid maps any file of the database (the WAL index of SQLite's
 * default VFS is an mmapped -shm file). */
static int maps_db(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  char *maps = slurp(path);
  int hit = strstr(maps, db) != NULL;
  free(maps);
  return hit;
}

/* The WAL index as a user can break it: another program truncates the
 * -shm file (a restore, a copy, a tool that opens the database without
 * locks). With the index in an mmapped file that was a SIGBUS; serve now
 * keeps it in its own memory and maps nothing of the database, so the
 * file is not its own, and another process is kept out while it runs. */
START_TEST(test_wal_index_truncated) {
  place_init();
  char shm[200], body[512];
  snprintf(shm, sizeof shm, "%s-shm", db);
  gw g = serve_start(NULL);
  enum { N = 30000 };
  pid_t dev = device_start(g.devices_port, N);
  double deadline = now_s() + PATIENCE_S;
  while (metric(&g, "telegate_readings_stored_total") < 1000) {
    ck_assert_msg(now_s() < deadline, "nothing committed after %d s", PATIENCE_S);
    pause_ms(10);
  }
  ck_assert_int_eq(maps_db(g.pid), 0);
  ck_assert_int_ne(access(shm, F_OK), 0);
  fill(shm, 32768); /* a stale index a user's tool left, then cut short */
  ck_assert_int_eq(truncate(shm, 0), 0);

  sqlite3 *other;
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_open_v2(db, &other, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(other, "SELECT COUNT(*) FROM readings", -1, &st, NULL), SQLITE_BUSY);
  sqlite3_close(other);

  ck_assert_int_eq(wait_exit(dev), 0);
  wait_readyz(&g, 200, body, sizeof body);
  ck_assert_int_eq(kill(g.pid, SIGTERM), 0);
  int status = wait_exit(g.pid);
  ck_assert_msg(status == 0, "serve exited with %d; its log ends:\n%s", status, log_tail());
  ck_assert_int_eq(read_summary().stored, N);
  ck_assert_int_eq(db_check(N), N);
  unlink(shm);
}
END_TEST

int main(void) {
  Suite *s = suite_create("storage-faults");
  tg_test_add(s, "disk_full_then_freed", test_disk_full_then_freed, 100);
  tg_test_add(s, "disk_full_at_sigterm", test_disk_full_at_sigterm, 100);
  tg_test_add(s, "filesystem_read_only", test_filesystem_read_only, 100);
  tg_test_add(s, "wal_index_truncated", test_wal_index_truncated, 100);
  return tg_test_main(s);
}
