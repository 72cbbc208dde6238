/* test-serve-auth-process.c - device authentication as an operator runs
 * it, with real processes: `telegate credentials add` makes a token and
 * its line, serve reads the file, a device speaks with the token, SIGHUP
 * reloads the file and the log says what changed; and serve refuses to
 * take devices on a non-loopback address without authentication unless
 * told --insecure-no-auth. Every wait is on a condition with a deadline. */
#include "test-process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

/* Runs `telegate credentials add FILE NAME PATTERN` to its end and
 * returns the token it printed (static storage). */
static const char *credentials_add(const char *file, const char *name, const char *pattern, const char *log) {
  const char *argv[] = {NULL, "credentials", "add", file, name, pattern, NULL};
  ck_assert_int_eq(wait_exit(start(argv, log)), 0);
  static char token[160];
  char *text = slurp(log);
  ck_assert_int_eq(sscanf(text, "%159s", token), 1);
  free(text);
  ck_assert_uint_eq(strlen(token), 64);
  return token;
}

static int device_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

static void device_send(int fd, const char *text) {
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

/* The next line from serve, within PATIENCE_S. */
static void device_line(int fd, char *line, size_t cap) {
  size_t n = 0;
  double until = now_s() + PATIENCE_S;
  while (n + 1 < cap) {
    struct pollfd p = {fd, POLLIN, 0};
    int left = (int)((until - now_s()) * 1000);
    ck_assert_msg(left > 0 && poll(&p, 1, left) == 1, "no line from serve");
    ck_assert_int_eq(read(fd, line + n, 1), 1);
    if (line[n] == '\n') break;
    n++;
  }
  line[n] = 0;
}

static void reading(int fd, const char *id, int seq) {
  char line[200];
  snprintf(line, sizeof line,
           "{\"device\":\"%s\",\"seq\":%d,\"ts\":1732590000000,\"temperature\":20,\"humidity\":50,\"battery\":90}\n",
           id, seq);
  device_send(fd, line);
}

START_TEST(test_serve_auth_process_sighup_reload) {
  dir_init();
  link_binary();
  const char *db = dir_file("serve.db");
  dir_file("serve.db-wal");
  dir_file("serve.db-shm");
  const char *creds = dir_file("credentials"), *serve_log = dir_file("serve.log");
  char token[160];
  snprintf(token, sizeof token, "%s", credentials_add(creds, "plant-a", "dev-*", dir_file("add1.log")));

  const char *serve_argv[] = {NULL,   "serve", "--listen-devices", "127.0.0.1:0", "--listen-http",  "127.0.0.1:0",
                              "--db", db,      "--credentials",    creds,         "--batch-age-ms", "20",
                              NULL};
  pid_t serve = start(serve_argv, serve_log);
  wait_for_log(serve, serve_log, "telegate serve: devices on 127.0.0.1:", 1);
  wait_for_log(serve, serve_log, "Devices authenticate: 1 credentials from", 1);
  char *text = slurp(serve_log);
  int port = atoi(strstr(text, "devices on 127.0.0.1:") + strlen("devices on 127.0.0.1:"));
  free(text);
  wait_until_caught(serve, SIGHUP);

  int fd = device_connect(port);
  char line[256];
  snprintf(line, sizeof line, "{\"type\":\"hello\",\"token\":\"%s\",\"acks\":true}\n", token);
  device_send(fd, line);
  device_line(fd, line, sizeof line);
  ck_assert_str_eq(line, "{\"type\":\"hello\",\"acks\":true,\"health\":false}");
  reading(fd, "dev-1", 1);
  device_line(fd, line, sizeof line);
  ck_assert_str_eq(line, "{\"type\":\"ack\",\"device\":\"dev-1\",\"seq\":1}");
  reading(fd, "pump-1", 1);
  device_line(fd, line, sizeof line);
  ck_assert_str_eq(line, "{\"type\":\"error\",\"reason\":\"not_allowed\",\"line\":3}");

  /* A second credential, then SIGHUP: the log names it, never a token. */
  const char *other = credentials_add(creds, "plant-b", "pump-1", dir_file("add2.log"));
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  wait_for_log(serve, serve_log, "2 credentials: added plant-b", 1);
  text = slurp(serve_log);
  ck_assert_msg(strstr(text, token) == NULL && strstr(text, other) == NULL, "a token in the log");
  free(text);
  /* A broken file: said, and the credentials stay. */
  FILE *f = fopen(creds, "a");
  fputs("broken\n", f);
  fclose(f);
  ck_assert_int_eq(kill(serve, SIGHUP), 0);
  wait_for_log(serve, serve_log, "credentials NOT reloaded, the previous ones stay", 1);
  reading(fd, "dev-1", 2);
  device_line(fd, line, sizeof line);
  ck_assert_str_eq(line, "{\"type\":\"ack\",\"device\":\"dev-1\",\"seq\":2}");

  shutdown(fd, SHUT_WR);
  close(fd);
  ck_assert_int_eq(kill(serve, SIGTERM), 0);
  ck_assert_int_eq(wait_exit(serve), 0);
  ck_assert_int_eq(db_rows(db), 2);
  dir_cleanup();
}
END_TEST

START_TEST(test_serve_auth_process_no_auth_off_loopback) {
  dir_init();
  link_binary();
  const char *db = dir_file("serve.db");
  dir_file("serve.db-wal");
  dir_file("serve.db-shm");
  const char *serve_log = dir_file("serve.log");
  const char *argv[] = {NULL, "serve", "--listen-devices", "0.0.0.0:0", "--listen-http", "127.0.0.1:0", "--db", db,
                        NULL, NULL};
  ck_assert_int_eq(wait_exit(start(argv, serve_log)), 1);
  char *text = slurp(serve_log);
  ck_assert_msg(strstr(text, "refusing to take devices on 0.0.0.0 without authentication"), "%s", log_tail(text));
  free(text);
  argv[8] = "--insecure-no-auth";
  pid_t serve = start(argv, serve_log);
  wait_for_log(serve, serve_log, "Devices do NOT authenticate (--auth none)", 1);
  ck_assert_int_eq(kill(serve, SIGTERM), 0);
  ck_assert_int_eq(wait_exit(serve), 0);
  dir_cleanup();
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-auth-process");
  tg_test_add(s, "sighup_reload", test_serve_auth_process_sighup_reload, 120);
  tg_test_add(s, "no_auth_off_loopback", test_serve_auth_process_no_auth_off_loopback, 120);
  return tg_test_main(s);
}
