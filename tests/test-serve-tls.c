/* test-serve-tls.c - the device port over TLS with the real binaries:
 * `telegate devices --tls` has every reading acked and stored once, a
 * plain client and one that does not trust the CA are refused, openssl
 * s_client talks the line protocol, client certificates are required
 * with --tls-client-ca and refused once a CRL revokes them, and SIGHUP
 * reloads the certificate (a bad one is
 * refused) while a connection made before goes on; HTTPS with
 * --http-tls-cert. */
#include "test-serve-process.h"

#include <stdio.h>

/* Certificates for the run, in d->path: ca, server-1, server-2, client. */
static void make_certs(proc_dir *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "bash %s %s server-1 server-2 client", TLS_CERTS_SCRIPT, d->path);
  ck_assert_int_eq(system(cmd), 0);
}

static const char *in_dir(proc_dir *d, const char *name) {
  static char buf[8][200];
  static int next;
  char *p = buf[next++ & 7];
  snprintf(p, sizeof buf[0], "%s/%s", d->path, name);
  return p;
}

/* Polls the file until it holds needle `times` times. */
static void wait_file_has(const char *path, const char *needle, int times) {
  static char text[1 << 16];
  for (int i = 0; i < PROC_PATIENCE_MS / 10; i++) {
    proc_read_file(path, text, sizeof text);
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
    if (n >= times) return;
    proc_sleep_ms(10);
  }
  ck_abort_msg("no '%s' (x%d) in %s: %s", needle, times, path, text);
}

/* Runs a shell command and returns its output. */
static void run_capture(const char *cmd, char *out, size_t len) {
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t n = fread(out, 1, len - 1, p);
  out[n] = '\0';
  pclose(p);
}

/* A short devices run; returns its exit status and stderr; dev says
 * where its report is. */
static int devices_once(proc_dir *d, devices_run *dev, int port, const char *const flags[], char *err, size_t errlen) {
  const char *argv[24] = {"--count", "3", "--rate", "100", "--duration", "0.5", "--ack-wait-s", "30"};
  int n = 8;
  for (int i = 0; flags[i]; i++) argv[n++] = flags[i];
  argv[n] = NULL;
  devices_proc_start(d, dev, port, argv);
  int status = proc_wait(&dev->p);
  proc_read_file(dev->p.err, err, errlen);
  return status;
}

static int serve_tls(proc_dir *d, proc *serve, const char *cert, const char *key, const char *client_ca) {
  const char *extra[12] = {"--tls-cert", cert, "--tls-key", key, "--error-limit", "1"};
  int n = 6;
  if (client_ca) {
    extra[n++] = "--tls-client-ca";
    extra[n++] = client_ca;
  }
  extra[n] = NULL;
  return serve_proc_start(d, serve, 0, extra);
}

START_TEST(test_serve_tls_devices_and_refusals) {
  proc_dir d;
  proc_dir_init(&d);
  make_certs(&d);
  proc serve;
  int port = serve_tls(&d, &serve, in_dir(&d, "server-1.pem"), in_dir(&d, "server-1.key"), NULL);
  char err[2048];
  devices_run dev;
  int status = devices_once(&d, &dev, port, (const char *const[]){"--tls", "--tls-ca", in_dir(&d, "ca.pem"), NULL}, err,
                            sizeof err);
  ck_assert_msg(status == 0, "devices over TLS exited %d: %s", status, err);
  cJSON *report = devices_report_load(dev.report);
  devices_report_all_acked(report);

  /* A device that speaks plain TCP to the TLS port gets nothing in. */
  status = devices_once(&d, &dev, port, (const char *const[]){"--ack-wait-s", "0.5", NULL}, err, sizeof err);
  ck_assert_int_ne(status, 0);
  wait_file_has(serve.out, "TLS handshake failed: wrong version number", 1);

  /* A device that trusts another CA refuses the gateway. */
  status = devices_once(&d, &dev, port, (const char *const[]){"--tls", "--ack-wait-s", "0.5", NULL}, err, sizeof err);
  ck_assert_int_ne(status, 0);
  ck_assert_msg(strstr(err, "certificate verify failed"), "stderr: %s", err);

  /* openssl s_client speaks the line protocol: the hello is answered,
   * the bad line too, and (--error-limit 1) the gateway closes. */
  char cmd[1024], out[8192];
  snprintf(cmd, sizeof cmd,
           "printf '{\"type\":\"hello\",\"health\":true}\\nnot json\\n' | timeout 30 openssl s_client -connect "
           "127.0.0.1:%d -CAfile %s -verify_return_error -verify_ip 127.0.0.1 -quiet -ign_eof 2>&1",
           port, in_dir(&d, "ca.pem"));
  run_capture(cmd, out, sizeof out);
  ck_assert_msg(strstr(out, "\"type\":\"hello\"") && strstr(out, "\"type\":\"error\""), "s_client: %s", out);

  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  ck_assert_uint_eq(db_check_report(d.db, report), json_u64(report, "generated")); /* serve holds it while it runs */
  cJSON_Delete(report);
  proc_dir_cleanup(&d);
}
END_TEST

/* A device's certificate and key, as devices flags. */
#define AS(name) "--tls-cert", in_dir(&d, name ".pem"), "--tls-key", in_dir(&d, name ".key")

/* --tls-client-crl: a revoked certificate is refused at the handshake,
 * from the first connection after the SIGHUP that reads the new list;
 * the others go on. */
START_TEST(test_serve_tls_revoked_certificates) {
  proc_dir d;
  proc_dir_init(&d);
  make_certs(&d);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "bash %s %s other && bash %s %s --crl", TLS_CERTS_SCRIPT, d.path, TLS_CERTS_SCRIPT, d.path);
  ck_assert_int_eq(system(cmd), 0);
  proc serve;
  const char *extra[] = {"--tls-cert",
                         in_dir(&d, "server-1.pem"),
                         "--tls-key",
                         in_dir(&d, "server-1.key"),
                         "--tls-client-ca",
                         in_dir(&d, "ca.pem"),
                         "--tls-client-crl",
                         in_dir(&d, "crl.pem"),
                         NULL};
  int port = serve_proc_start(&d, &serve, 0, extra);
  char err[2048];
  devices_run dev;
  int status =
      devices_once(&d, &dev, port, (const char *const[]){"--tls", "--tls-ca", in_dir(&d, "ca.pem"), AS("client"), NULL},
                   err, sizeof err);
  ck_assert_msg(status == 0, "devices before the revocation exited %d: %s", status, err);

  snprintf(cmd, sizeof cmd, "bash %s %s --crl client", TLS_CERTS_SCRIPT, d.path);
  ck_assert_int_eq(system(cmd), 0);
  kill(serve.pid, SIGHUP);
  wait_file_has(serve.out, "TLS certificate reloaded from", 1);
  status = devices_once(
      &d, &dev, port,
      (const char *const[]){"--tls", "--tls-ca", in_dir(&d, "ca.pem"), AS("client"), "--ack-wait-s", "0.5", NULL}, err,
      sizeof err);
  ck_assert_int_ne(status, 0);
  wait_file_has(serve.out, "certificate revoked", 1);
  status = devices_once(
      &d, &dev, port,
      (const char *const[]){"--tls", "--tls-ca", in_dir(&d, "ca.pem"), AS("other"), "--id-prefix", "other-", NULL}, err,
      sizeof err);
  ck_assert_msg(status == 0, "devices with a certificate not revoked exited %d: %s", status, err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  proc_dir_cleanup(&d);
}
END_TEST

START_TEST(test_serve_tls_client_certificates) {
  proc_dir d;
  proc_dir_init(&d);
  make_certs(&d);
  proc serve;
  int port = serve_tls(&d, &serve, in_dir(&d, "server-1.pem"), in_dir(&d, "server-1.key"), in_dir(&d, "ca.pem"));
  char err[2048];
  devices_run dev;
  int status = devices_once(
      &d, &dev, port, (const char *const[]){"--tls", "--tls-ca", in_dir(&d, "ca.pem"), "--ack-wait-s", "0.5", NULL},
      err, sizeof err);
  ck_assert_int_ne(status, 0);
  wait_file_has(serve.out, "peer did not return a certificate", 1);

  status = devices_once(&d, &dev, port,
                        (const char *const[]){"--tls", "--tls-ca", in_dir(&d, "ca.pem"), "--tls-cert",
                                              in_dir(&d, "client.pem"), "--tls-key", in_dir(&d, "client.key"), NULL},
                        err, sizeof err);
  ck_assert_msg(status == 0, "devices with a certificate exited %d: %s", status, err);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  proc_dir_cleanup(&d);
}
END_TEST

/* The certificate files are replaced and serve gets SIGHUP: new
 * connections see the new certificate, a connection made before goes on
 * with the old one; a bad file then changes nothing. */
START_TEST(test_serve_tls_sighup_reload) {
  proc_dir d;
  proc_dir_init(&d);
  make_certs(&d);
  char cmd[1024], out[8192];
  snprintf(cmd, sizeof cmd, "cp %s %s && cp %s %s", in_dir(&d, "server-1.pem"), in_dir(&d, "live.pem"),
           in_dir(&d, "server-1.key"), in_dir(&d, "live.key"));
  ck_assert_int_eq(system(cmd), 0);
  proc serve;
  int port = serve_tls(&d, &serve, in_dir(&d, "live.pem"), in_dir(&d, "live.key"), NULL);
  devices_run old;
  devices_proc_start(&d, &old, port,
                     (const char *const[]){"--tls", "--tls-ca", in_dir(&d, "ca.pem"), "--count", "2", "--rate", "50",
                                           "--duration", "3600", "--ack-wait-s", "30", NULL});
  proc_wait_catches(&old.p, SIGINT);
  serve_wait_stored(&serve, 20);

  snprintf(cmd, sizeof cmd, "cp %s %s && cp %s %s", in_dir(&d, "server-2.pem"), in_dir(&d, "live.pem"),
           in_dir(&d, "server-2.key"), in_dir(&d, "live.key"));
  ck_assert_int_eq(system(cmd), 0);
  kill(serve.pid, SIGHUP);
  wait_file_has(serve.out, "TLS certificate reloaded from", 1);
  wait_file_has(serve.out, "CN=server-2, expires", 1);
  snprintf(cmd, sizeof cmd,
           "timeout 30 openssl s_client -connect 127.0.0.1:%d -CAfile %s -verify_return_error </dev/null 2>&1", port,
           in_dir(&d, "ca.pem"));
  run_capture(cmd, out, sizeof out);
  ck_assert_msg(strstr(out, "CN = server-2") && !strstr(out, "CN = server-1"), "s_client: %s", out);

  FILE *f = fopen(in_dir(&d, "live.pem"), "w");
  ck_assert_ptr_nonnull(f);
  fputs("not a certificate\n", f);
  fclose(f);
  kill(serve.pid, SIGHUP);
  wait_file_has(serve.out, "TLS certificate NOT reloaded", 1);
  run_capture(cmd, out, sizeof out);
  ck_assert_msg(strstr(out, "CN = server-2"), "s_client after a bad reload: %s", out);

  serve_wait_stored(&serve, serve_stored(&serve) + 20); /* the connection from before the reloads still sends */
  int status = proc_signal_wait(&old.p, SIGINT);
  char err[2048];
  proc_read_file(old.p.err, err, sizeof err);
  ck_assert_msg(status == 0, "devices exited %d: %s", status, err);
  cJSON *report = devices_report_load(old.report);
  devices_report_all_acked(report);
  ck_assert_uint_eq(json_u64(report, "reconnects"), 0);
  cJSON_Delete(report);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  proc_dir_cleanup(&d);
}
END_TEST

/* HTTPS: the dashboard's port with --http-tls-cert answers over TLS, and
 * its TLS failures are counted in /metrics; the device port stays plain. */
START_TEST(test_serve_tls_https) {
  proc_dir d;
  proc_dir_init(&d);
  make_certs(&d);
  proc serve;
  /* Not serve_proc_start: it waits for an http:// address. */
  const char *argv[] = {"telegate",
                        "serve",
                        "--listen-devices",
                        "127.0.0.1:0",
                        "--listen-http",
                        "127.0.0.1:0",
                        "--db",
                        d.db,
                        "--http-tls-cert",
                        in_dir(&d, "server-1.pem"),
                        "--http-tls-key",
                        in_dir(&d, "server-1.key"),
                        NULL};
  proc_start(&d, &serve, argv);
  int http = 0;
  for (int i = 0; i < PROC_PATIENCE_MS / 10 && !(http = proc_port_in(serve.out, "/metrics on https://")); i++) {
    int status;
    ck_assert_msg(waitpid(serve.pid, &status, WNOHANG) == 0, "serve ended before it listened (see %s)", serve.err);
    proc_sleep_ms(10);
  }
  ck_assert_int_gt(http, 0);
  proc_wait_catches(&serve, SIGTERM);
  char cmd[1024];
  static char out[1 << 17]; /* all of /metrics, which grows with every figure */
  /* Plain HTTP to the HTTPS port gets no answer, and is counted. */
  snprintf(cmd, sizeof cmd,
           "bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d && printf \"GET /readyz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\" >&3 "
           "&& timeout 30 cat <&3' 2>&1",
           http);
  run_capture(cmd, out, sizeof out);
  ck_assert_msg(!strstr(out, "HTTP/1.1"), "plain HTTP got: %s", out);
  snprintf(cmd, sizeof cmd,
           "printf 'GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' | "
           "timeout 30 openssl s_client -connect 127.0.0.1:%d -CAfile %s -verify_return_error -quiet -ign_eof 2>&1",
           http, in_dir(&d, "ca.pem"));
  run_capture(cmd, out, sizeof out);
  ck_assert_msg(strstr(out, "HTTP/1.1 200 OK") && strstr(out, "telegate_http_tls_failures_total 1"),
                "s_client: %.2000s", out);
  ck_assert_int_eq(proc_signal_wait(&serve, SIGTERM), 0);
  proc_dir_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-tls");
  tg_test_add(s, "devices_and_refusals", test_serve_tls_devices_and_refusals, 240);
  tg_test_add(s, "revoked_certificates", test_serve_tls_revoked_certificates, 300);
  tg_test_add(s, "client_certificates", test_serve_tls_client_certificates, 240);
  tg_test_add(s, "sighup_reload", test_serve_tls_sighup_reload, 240);
  tg_test_add(s, "https", test_serve_tls_https, 240);
  return tg_test_main(s);
}
