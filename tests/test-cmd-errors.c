/* test-cmd-errors.c - a run that cannot start says why on stderr, in one
 * line naming the cause, exits 1 with or without --quiet, and prints no
 * summary pretending that a run happened. Runs the real binary. */
#include "test-cli.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Exactly one line on stderr, containing every one of `words`. */
static void assert_one_line(const test_cli_run *o, const char *const words[]) {
  ck_assert_msg(o->status == 1, "exit status %d, stderr: %s", o->status, o->err);
  const char *nl = strchr(o->err, '\n');
  ck_assert_msg(nl && nl[1] == '\0', "not one line on stderr: '%s'", o->err);
  for (int i = 0; words[i]; i++) ck_assert_msg(strstr(o->err, words[i]), "'%s' not in '%s'", words[i], o->err);
  ck_assert_msg(!strstr(o->out, "nothing lost"), "a summary after a failed start: %s", o->out);
  ck_assert_msg(!strstr(o->out, "readings      received"), "a summary after a failed start: %s", o->out);
}

/* A socket listening on a free loopback port, which stays taken. */
static int hold_port(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  ck_assert_int_eq(listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

START_TEST(test_cmd_errors_database_is_a_directory) {
  char dir[] = "/tmp/telegate-err-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  const char *const words[] = {"telegate serve:", "database", dir, NULL};
  for (int quiet = 0; quiet < 2; quiet++) {
    const char *const argv[] = {
        "telegate", "serve", "--listen-devices",       "127.0.0.1:0", "--listen-http", "127.0.0.1:0",
        "--db",     dir,     quiet ? "--quiet" : NULL, NULL};
    test_cli_run o;
    test_cli_run_binary(argv, &o);
    assert_one_line(&o, words);
  }
  const char *const demo_words[] = {"telegate demo:", "database", dir, NULL};
  const char *const demo[] = {"telegate", "demo", "--clock", "virtual", "--quiet", "--db", dir, NULL};
  test_cli_run o;
  test_cli_run_binary(demo, &o);
  assert_one_line(&o, demo_words);
  rmdir(dir);
}
END_TEST

START_TEST(test_cmd_errors_device_port_in_use) {
  int port, fd = hold_port(&port);
  char addr[32], db[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  snprintf(db, sizeof db, "/tmp/telegate-err-%d.db", (int)getpid());
  const char *const words[] = {"telegate serve:", "devices", addr, "in use", NULL};
  const char *const argv[] = {"telegate", "serve", "--listen-devices", addr, "--listen-http", "127.0.0.1:0", "--db",
                              db,         NULL};
  test_cli_run o;
  test_cli_run_binary(argv, &o);
  assert_one_line(&o, words);
  const char *const http_words[] = {"telegate serve:", "HTTP", addr, "in use", NULL};
  const char *const http[] = {"telegate", "serve", "--listen-devices", "127.0.0.1:0", "--listen-http", addr,
                              "--db",     db,      "--quiet",          NULL};
  test_cli_run_binary(http, &o);
  assert_one_line(&o, http_words);
  close(fd);
  const char *suffix[] = {"", "-wal", "-shm"};
  char path[96];
  for (int i = 0; i < 3; i++) {
    snprintf(path, sizeof path, "%s%s", db, suffix[i]);
    unlink(path);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("cmd-errors");
  tg_test_add(s, "database_is_a_directory", test_cmd_errors_database_is_a_directory, 60);
  tg_test_add(s, "device_port_in_use", test_cmd_errors_device_port_in_use, 60);
  return tg_test_main(s);
}
