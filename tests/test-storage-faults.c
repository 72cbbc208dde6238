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

#include "test-process.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

/* The device's readings go to this many device ids, round robin. */
#define DEVICES 10

static const char *dir;      /* the mount point */
static const char *db;       /* the database in it */
static const char *sumf;     /* serve's --summary-json, outside the mount */
static const char *log_path; /* the log of the serve that runs now */

/* ------------------------------------------------------------ the place */

/* A mount namespace of this test's own (Check forks each case): mounts
 * made here vanish with its last process. 0, or -1 when not permitted. */
static int private_mounts(void) {
  if (unshare(CLONE_NEWNS) != 0) return -1;
  return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 ? 0 : -1;
}

static void skip(const char *why) { fprintf(stderr, "test-storage-faults: SKIPPED: %s\n", why); }

static void place_init(void) {
  dir_init();
  link_binary();
  dir = dir_file("m");
  ck_assert_int_eq(mkdir(dir, 0755), 0);
  db = dir_file("m/serve.db");
  dir_file("m/serve.db-wal");
  dir_file("m/serve.db-shm");
  sumf = dir_file("summary.json");
}

/* Unmounts what is on dir (the namespace would, at the end) and removes
 * the files. */
static void place_cleanup(void) {
  umount2(dir, MNT_DETACH);
  for (int i = 0; i < run_nfiles; i++) unlink(run_files[i]);
  rmdir(dir);
  dir_cleanup();
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

/* ------------------------------------------------------------ serve */

typedef struct gw {
  pid_t pid;
  int devices_port, http_port;
} gw;

/* Starts serve on db with the extra flags (NULL-terminated), its log in
 * a file of its own (`name`), and waits for both listeners. */
static gw serve_start(const char *name, const char *const *extra) {
  const char *argv[32] = {NULL,
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
  log_path = dir_file(name);
  gw g = {.pid = start(argv, log_path)};
  wait_for_log(g.pid, log_path, "/metrics on http://127.0.0.1:", 1);
  char *text = slurp(log_path);
  g.devices_port = atoi(strstr(text, "devices on 127.0.0.1:") + strlen("devices on 127.0.0.1:"));
  free(text);
  g.http_port = http_port_of(log_path);
  ck_assert_int_gt(g.devices_port, 0);
  ck_assert_int_gt(g.http_port, 0);
  return g;
}

/* The end of the running serve's log, for a failure's message. */
static char tail_buf[1600];
static const char *serve_tail(void) {
  char *text = slurp(log_path);
  snprintf(tail_buf, sizeof tail_buf, "%s", log_tail(text));
  free(text);
  return tail_buf;
}

/* ------------------------------------------------------------ the device */

/* A device process: writes readings [0, n) as fast as the socket takes
 * them (reading i is device f-(i % DEVICES), seq i / DEVICES + 1), then
 * closes. It never reads: serve's backpressure stops its writes. */
static pid_t device_start(int port, int n) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid > 0) return pid;
  signal(SIGPIPE, SIG_IGN);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) _exit(2);
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

/* Waits until /readyz answers `status`; its body into body. */
static void wait_readyz(const gw *g, int status, char *body, size_t cap) {
  double deadline = now_s() + PATIENCE_S;
  while (http_get(g->http_port, "/readyz", body, cap) != status) {
    ck_assert_msg(running(g->pid), "serve ended waiting for /readyz %d; its log ends:\n%s", status, serve_tail());
    ck_assert_msg(now_s() < deadline, "/readyz is not %d after %d s: %s", status, PATIENCE_S, body);
    pause_ms(20);
  }
}

/* Waits until serve has committed some readings. */
static void wait_committing(const gw *g) {
  double deadline = now_s() + PATIENCE_S;
  while (metric(g->http_port, "telegate_readings_stored_total") < 1000) {
    ck_assert_msg(running(g->pid), "serve ended; its log ends:\n%s", serve_tail());
    ck_assert_msg(now_s() < deadline, "nothing committed after %d s", PATIENCE_S);
    pause_ms(10);
  }
}

/* ------------------------------------------------------------ checks */

typedef struct summary {
  long long received, stored, duplicate, unstored, db_rows;
} summary;

static summary read_summary(void) {
  char *text = slurp(sumf);
  cJSON *j = cJSON_Parse(text);
  ck_assert_msg(j != NULL, "no summary JSON; serve's log ends:\n%s", serve_tail());
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
  const char *filler = dir_file("m/filler");
  char body[512];
  fill(filler, 11L << 20);
  gw g = serve_start("serve.log", NULL);
  enum { N = 60000 };
  pid_t dev = device_start(g.devices_port, N);

  wait_readyz(&g, 503, body, sizeof body);
  ck_assert_msg(strstr(body, "storage failing since") && strstr(body, "SQLITE_FULL"), "503 says: %s", body);
  ck_assert_int_eq((int)metric(g.http_port, "telegate_storage_failing"), 1);
  ck_assert_int_eq(unlink(filler), 0);
  wait_readyz(&g, 200, body, sizeof body);
  ck_assert_int_eq(wait_exit(dev), 0);
  /* Everything committed before the SIGTERM: a drain of what the socket
   * still holds would race the drain's deadline on a loaded machine. */
  wait_stored_above(g.http_port, N - 1);

  ck_assert_int_eq(kill(g.pid, SIGTERM), 0);
  int status = wait_exit(g.pid);
  ck_assert_msg(status == 0, "serve exited with %d; its log ends:\n%s", status, serve_tail());
  summary s = read_summary();
  ck_assert_int_eq(s.received, N);
  ck_assert_int_eq(s.stored, N);
  ck_assert_int_eq(s.unstored, 0);
  ck_assert_int_eq(db_check(N), N);
  failing_episodes(1);
  place_cleanup();
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
  const char *filler = dir_file("m/filler");
  char body[512];
  fill(filler, 11L << 20);
  const char *flags[] = {"--drain-ms", "300", "--storage-shutdown-timeout-ms", "1000", NULL};
  gw g = serve_start("serve.log", flags);
  enum { N = 60000 };
  pid_t dev = device_start(g.devices_port, N);
  wait_readyz(&g, 503, body, sizeof body);

  ck_assert_int_eq(kill(g.pid, SIGTERM), 0);
  int status = wait_exit(g.pid);
  ck_assert_msg(status == 1, "serve exited with %d; its log ends:\n%s", status, serve_tail());
  kill(dev, SIGKILL);
  wait_exit(dev);
  summary s = read_summary();
  ck_assert_int_gt(s.unstored, 0);
  ck_assert_int_le(s.received, N);
  ck_assert_int_eq(s.unstored, s.received - s.stored - s.duplicate);
  ck_assert_int_ge(occurrences(log_path, "readings read from devices were not committed"), 1);

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
  gw again = serve_start("again.log", NULL);
  wait_readyz(&again, 200, body, sizeof body);
  ck_assert_int_eq(wait_exit(device_start(again.devices_port, N)), 0);
  wait_stored_above(again.http_port, N - rows - 1); /* not left to the drain's deadline, as above */
  ck_assert_int_eq(kill(again.pid, SIGTERM), 0);
  status = wait_exit(again.pid);
  ck_assert_msg(status == 0, "serve exited with %d; its log ends:\n%s", status, serve_tail());
  summary s2 = read_summary();
  ck_assert_int_eq(s2.duplicate, rows);
  ck_assert_int_eq(s2.stored, N - rows);
  ck_assert_int_eq(db_check(N), N);
  place_cleanup();
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
  const char *img = dir_file("ext4.img");
  char cmd[1024], body[512];
  snprintf(cmd, sizeof cmd, "truncate -s 64m %s && mkfs.ext4 -q -F %s >/dev/null 2>&1 && mount -o loop %s %s", img, img,
           img, dir);
  if (run(cmd) != 0) {
    unlink(img);
    skip("cannot make and mount an ext4 image (needs root, mkfs.ext4 and a loop device)");
    return;
  }
  const char *flags[] = {"--durability", "full", "--drain-ms", "300", "--storage-shutdown-timeout-ms", "1000", NULL};
  gw g = serve_start("serve.log", flags);
  enum { N = 20000 };
  pid_t dev = device_start(g.devices_port, N);
  wait_committing(&g);
  snprintf(cmd, sizeof cmd, "mount -o remount,abort %s", dir);
  ck_assert_int_eq(run(cmd), 0);
  wait_readyz(&g, 503, body, sizeof body);
  ck_assert_msg(strstr(body, "storage failing since"), "503 says: %s", body);

  ck_assert_int_eq(kill(g.pid, SIGTERM), 0);
  int status = wait_exit(g.pid);
  ck_assert_msg(status == 1, "serve exited with %d; its log ends:\n%s", status, serve_tail());
  kill(dev, SIGKILL);
  wait_exit(dev);
  summary s = read_summary();
  ck_assert_int_gt(s.unstored, 0);
  ck_assert_int_eq(s.unstored, s.received - s.stored - s.duplicate);
  failing_episodes(0);

  ck_assert_int_eq(s.db_rows, s.stored); /* what serve's own connection counts at the end */
  place_cleanup();
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
  const char *shm = dir_file("m/serve.db-shm");
  char body[512];
  gw g = serve_start("serve.log", NULL);
  enum { N = 30000 };
  pid_t dev = device_start(g.devices_port, N);
  wait_committing(&g);
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
  ck_assert_msg(status == 0, "serve exited with %d; its log ends:\n%s", status, serve_tail());
  ck_assert_int_eq(read_summary().stored, N);
  ck_assert_int_eq(db_check(N), N);
  place_cleanup();
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
