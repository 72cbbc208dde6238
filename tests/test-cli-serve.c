/* test-cli-serve.c - the command line of `telegate serve`: the two listen
 * addresses independent of each other (down to the sockets the kernel
 * binds), every flag name scripts use, and bad input answered by one line
 * on stderr and exit status 2. */
#include "cli_serve.h"
#include "test-cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

typedef struct parsed {
  serve_config c;
  cli_strings strings;
  char err[256];
  int r;
} parsed;

static void parse_into(parsed *p, int argc, char *const argv[]) {
  memset(p, 0, sizeof *p);
  p->r = cli_parse_serve(argc, argv, &p->c, &p->strings, p->err, sizeof p->err);
}

#define PARSE(p, ...) parse_into((p), TEST_ARGC(__VA_ARGS__), TEST_ARGV(__VA_ARGS__))

/* --listen-devices and --listen-http each keep their own host: a device
 * port meant for 127.0.0.1 must never end up on 0.0.0.0, in either
 * order (they once shared one buffer). */
START_TEST(test_cli_serve_listen_hosts_independent) {
  parsed p;
  PARSE(&p, "--listen-devices", "127.0.0.1:7878", "--listen-http", "0.0.0.0:8080");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_str_eq(p.c.listen_host, "127.0.0.1");
  ck_assert_int_eq(p.c.listen_port, 7878);
  ck_assert_str_eq(p.c.http_host, "0.0.0.0");
  ck_assert_int_eq(p.c.http_port, 8080);
  cli_strings_free(&p.strings);
  PARSE(&p, "--listen-http", "0.0.0.0:8080", "--listen-devices", "127.0.0.1:7878");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_str_eq(p.c.listen_host, "127.0.0.1");
  ck_assert_int_eq(p.c.listen_port, 7878);
  ck_assert_str_eq(p.c.http_host, "0.0.0.0");
  ck_assert_int_eq(p.c.http_port, 8080);
  cli_strings_free(&p.strings);
  /* One of them alone leaves the other at its default. */
  PARSE(&p, "--listen-http=[::1]:0");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_str_eq(p.c.http_host, "::1");
  ck_assert_int_eq(p.c.http_port, 0);
  ck_assert_str_eq(p.c.listen_host, "127.0.0.1");
  ck_assert_int_eq(p.c.listen_port, 7878);
  cli_strings_free(&p.strings);
}
END_TEST

/* No flags: exactly serve's defaults. */
START_TEST(test_cli_serve_defaults) {
  parsed p;
  parse_into(&p, 0, NULL);
  ck_assert_int_eq(p.r, 0);
  serve_config d;
  memset(&d, 0, sizeof d); /* padding compares equal too */
  serve_config_defaults(&d);
  ck_assert(memcmp(&p.c, &d, sizeof d) == 0);
  ck_assert_ptr_null(p.strings.head);
}
END_TEST

/* The flag names scripts, docs and bench/ingest.sh use, each landing in
 * its field. */
START_TEST(test_cli_serve_every_flag) {
  parsed p;
  PARSE(&p, "--listen-devices", "127.0.0.1:1", "--listen-http", "0.0.0.0:2", "--http-max-connections", "3",
        "--http-max-header-bytes", "1024", "--http-write-timeout-ms", "5", "--storage", "none", "--db", "d.db",
        "--workers", "6", "--max-connections", "7", "--max-line-bytes", "100", "--max-devices", "9", "--error-limit",
        "0", "--error-lines-per-s", "11", "--recv-buffer", "1200", "--bandwidth-permits", "13", "--write-timeout-ms",
        "14", "--drain-ms", "600000", "--telemetry-capacity", "16", "--storage-capacity", "17", "--broadcast-capacity",
        "18", "--batch-size", "19", "--batch-age-ms", "20", "--snapshot-every", "21", "--snapshot-interval-ms", "22",
        "--health-interval-ms", "0", "--health-timeout-ms", "24", "--log-format", "json", "--quiet", "--summary-json",
        "s.json");
  ck_assert_msg(p.r == 0, "%s", p.err);
  const serve_config *c = &p.c;
  ck_assert_int_eq(c->listen_port, 1);
  ck_assert_int_eq(c->http_port, 2);
  ck_assert_int_eq(c->http_max_connections, 3);
  ck_assert_int_eq(c->http_max_header_bytes, 1024);
  ck_assert_int_eq(c->http_write_timeout_ms, 5);
  ck_assert_str_eq(c->storage, "none");
  ck_assert_str_eq(c->db_path, "d.db");
  ck_assert_int_eq(c->workers, 6);
  ck_assert_int_eq(c->max_connections, 7);
  ck_assert_int_eq(c->max_line_bytes, 100);
  ck_assert_int_eq(c->max_devices, 9);
  ck_assert_int_eq(c->error_limit, 0);
  ck_assert_int_eq(c->error_lines_per_s, 11);
  ck_assert_int_eq(c->recv_buffer, 1200);
  ck_assert_int_eq(c->bandwidth_permits, 13);
  ck_assert_int_eq(c->write_timeout_ms, 14);
  ck_assert_int_eq(c->drain_ms, 600000);
  ck_assert_int_eq(c->telemetry_capacity, 16);
  ck_assert_int_eq(c->storage_capacity, 17);
  ck_assert_int_eq(c->broadcast_capacity, 18);
  ck_assert_int_eq(c->batch_size, 19);
  ck_assert_int_eq(c->batch_age_ms, 20);
  ck_assert_int_eq(c->snapshot_every, 21);
  ck_assert_int_eq(c->snapshot_interval_ms, 22);
  ck_assert_int_eq(c->health_interval_ms, 0);
  ck_assert_int_eq(c->health_timeout_ms, 24);
  ck_assert_int_eq(c->log_format, LOG_JSON);
  ck_assert_int_eq(c->quiet, 1);
  ck_assert_str_eq(c->summary_json, "s.json");
  cli_strings_free(&p.strings);
  /* The device port's protections. */
  PARSE(&p, "--auth", "token", "--credentials", "c.txt", "--insecure-no-auth", "--seq-window", "18446744073709551615",
        "--max-ids-per-connection", "0", "--max-ids-per-credential", "5", "--lines-per-s", "100",
        "--health-per-device-per-s", "0");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_int_eq(p.c.auth, SERVE_AUTH_TOKEN);
  ck_assert_str_eq(p.c.credentials_path, "c.txt");
  ck_assert_int_eq(p.c.insecure_no_auth, 1);
  ck_assert_uint_eq(p.c.seq_window, UINT64_MAX);
  ck_assert_int_eq(p.c.max_ids_per_connection, 0);
  ck_assert_int_eq(p.c.max_ids_per_credential, 5);
  ck_assert_int_eq(p.c.lines_per_s, 100);
  ck_assert_int_eq(p.c.health_per_device_per_s, 0);
  cli_strings_free(&p.strings);
  PARSE(&p, "--credentials", "c.txt");
  ck_assert_int_eq(serve_config_auth(&p.c), SERVE_AUTH_TOKEN); /* auto: token with credentials */
  cli_strings_free(&p.strings);
  PARSE(&p, "--auth", "none", "--credentials", "c.txt");
  ck_assert_int_eq(serve_config_auth(&p.c), SERVE_AUTH_NONE);
  cli_strings_free(&p.strings);
  PARSE(&p, "--storage=sqlite", "--log-format=text");
  ck_assert_msg(p.r == 0, "%s", p.err);
  ck_assert_str_eq(p.c.storage, "sqlite");
  ck_assert_int_eq(p.c.log_format, LOG_TEXT);
  cli_strings_free(&p.strings);
}
END_TEST

START_TEST(test_cli_serve_bad_input) {
  struct {
    const char *args[4], *message;
  } cases[] = {
      {{"--batch-size", "x"}, "--batch-size wants an integer from 1 to 10000000, got 'x'"},
      {{"--batch-size", "0"}, "--batch-size wants an integer from 1 to 10000000, got '0'"},
      {{"--workers", "65"}, "--workers wants an integer from 1 to 64, got '65'"},
      {{"--quiet", "--batch-size"}, "--batch-size needs a value: an integer from 1 to 10000000"},
      {{"--batchsize", "5"}, "unknown flag '--batchsize'; --help lists the flags"},
      {{"--storage", "mysql"}, "--storage wants a registered backend (sqlite, postgres, none), got 'mysql'"},
      {{"--listen-devices", "127.0.0.1"},
       "--listen-devices wants HOST:PORT (HOST a numeric IPv4 address, an IPv6 one in brackets or localhost; PORT 0 "
       "to 65535), got '127.0.0.1'"},
      {{"--listen-http", "example.com:80"},
       "--listen-http wants HOST:PORT (HOST a numeric IPv4 address, an IPv6 one in brackets or localhost; PORT 0 "
       "to 65535), got 'example.com:80'"},
      {{"--max-line-bytes", "4096", "--recv-buffer", "8000"},
       "--recv-buffer wants at least 8194 bytes, two lines of --max-line-bytes 4096, got 8000"},
      {{"7878"}, "unexpected argument '7878': each value follows its flag"},
      {{"--auth", "token"}, "--auth token wants --credentials FILE"},
      {{"--auth", "password"}, "--auth wants auto, none or token, got 'password'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int argc = 0;
    while (argc < 4 && cases[i].args[argc]) argc++;
    parsed p;
    parse_into(&p, argc, (char *const *)cases[i].args);
    ck_assert_int_eq(p.r, -EINVAL);
    ck_assert_str_eq(p.err, cases[i].message);
    cli_strings_free(&p.strings);
  }
}
END_TEST

/* What a user sees: exit status 2 and one line naming the flag. */
START_TEST(test_cli_serve_binary_usage_errors) {
  test_cli_usage_error((const char *const[]){"telegate", "serve", "--bogus", NULL}, "unknown flag '--bogus'");
  test_cli_usage_error((const char *const[]){"telegate", "serve", "--db", NULL}, "--db needs a value");
  test_cli_usage_error((const char *const[]){"telegate", "serve", "--batch-size", "0", NULL},
                       "--batch-size wants an integer from 1 to 10000000, got '0'");
  test_cli_usage_error((const char *const[]){"telegate", "serve", "--listen-devices", "127.0.0.1:99999", NULL},
                       "--listen-devices wants HOST:PORT");
  test_cli_usage_error((const char *const[]){"telegate", "serve", "--quiet=no", NULL}, "--quiet takes no value");
  test_cli_help_lists("serve", &cli_serve);
}
END_TEST

/* The local address of the listening IPv4 socket on `port`, from
 * /proc/net/tcp as hex ("0100007F" is 127.0.0.1); 0 if there is none. */
static int listening_address(int port, char *addr, size_t len) {
  FILE *f = fopen("/proc/net/tcp", "r");
  ck_assert_ptr_nonnull(f);
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    char local[64], state[8];
    unsigned local_port;
    if (sscanf(line, " %*d: %63[0-9A-F]:%x %*s %7s", local, &local_port, state) == 3 && (int)local_port == port &&
        strcmp(state, "0A") == 0) {
      snprintf(addr, len, "%s", local);
      found = 1;
    }
  }
  fclose(f);
  return found;
}

/* The port of "MARKER IPV4:PORT" in line; 0 if the line has none. */
static int port_after(const char *line, const char *marker) {
  const char *at = strstr(line, marker);
  int port = 0;
  if (at && sscanf(at + strlen(marker), "%*[0-9.]:%d", &port) != 1) port = 0;
  return port;
}

/* Whether process pid catches sig (its SigCgt mask in /proc). */
static int catches(pid_t pid, int sig) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  unsigned long long mask = 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "SigCgt:", 7) == 0) mask = strtoull(line + 7, NULL, 16);
  fclose(f);
  return (mask >> (sig - 1)) & 1;
}

/* The real serve binds its device port on loopback and its HTTP port on
 * every address, as told: the defect was a device port on 0.0.0.0. */
START_TEST(test_cli_serve_binds_each_host) {
  char bin[600];
  test_cli_binary(bin, sizeof bin);
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* a failed assertion leaves no serve behind */
    dup2(fds[1], 1);
    close(fds[0]);
    execl(bin, "telegate", "serve", "--listen-devices", "127.0.0.1:0", "--listen-http", "0.0.0.0:0", "--storage",
          "none", "--health-interval-ms", "0", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  FILE *out = fdopen(fds[0], "r");
  ck_assert_ptr_nonnull(out);
  /* Serve logs each listener once bound (the log is flushed per line);
   * the test's timeout bounds the wait. */
  int device_port = 0, http_port = 0;
  char line[4096];
  while ((device_port == 0 || http_port == 0) && fgets(line, sizeof line, out)) {
    if (!device_port) device_port = port_after(line, "devices on ");
    if (!http_port) http_port = port_after(line, "/metrics on http://");
  }
  ck_assert_int_gt(device_port, 0);
  ck_assert_int_gt(http_port, 0);
  char addr[64];
  ck_assert_msg(listening_address(device_port, addr, sizeof addr), "nothing listens on port %d", device_port);
  ck_assert_str_eq(addr, "0100007F");
  ck_assert_msg(listening_address(http_port, addr, sizeof addr), "nothing listens on port %d", http_port);
  ck_assert_str_eq(addr, "00000000");
  /* Serve installs its SIGTERM handler after it logs its listeners; a
   * SIGTERM before that would end it the default way. */
  for (int tries = 0; tries < 2000 && !catches(pid, SIGTERM); tries++) usleep(5000);
  ck_assert(catches(pid, SIGTERM));
  ck_assert_int_eq(kill(pid, SIGTERM), 0);
  while (fgets(line, sizeof line, out)) {
  }
  fclose(out);
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status), "serve ended by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cli-serve");
  tg_test_add(s, "listen_hosts_independent", test_cli_serve_listen_hosts_independent, 10);
  tg_test_add(s, "defaults", test_cli_serve_defaults, 10);
  tg_test_add(s, "every_flag", test_cli_serve_every_flag, 10);
  tg_test_add(s, "bad_input", test_cli_serve_bad_input, 10);
  tg_test_add(s, "binary_usage_errors", test_cli_serve_binary_usage_errors, 20);
  tg_test_add(s, "binds_each_host", test_cli_serve_binds_each_host, 30);
  return tg_test_main(s);
}
