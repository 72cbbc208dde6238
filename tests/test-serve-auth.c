/* test-serve-auth.c - the device port's attacks, replayed over real
 * sockets against an in-process serve and its SQLite file, each one
 * failing: silencing a device with a huge seq (refused, also after a
 * restart, and the genuine readings stored), taking over a device's id
 * (refused without a credential that covers it; the victim keeps its
 * health checks), exhausting the device ids from one connection (capped;
 * new genuine devices still accepted; one credential's budget of new
 * ids shared by its connections), a credentials reload (what a
 * connection may send changes at once; a bad file keeps the old set),
 * no authentication off loopback (refused), the per-connection line
 * rate and per-device health rate, and connection slots (a cap per client
 * address; a connection that does not authenticate in time is closed). */
#include "credentials.h"
#include "test-serve.h"

#include <errno.h>
#include <inttypes.h>

#define TOKEN_VICTIM   "victim-0123456789abcdef0123456789abcdef"
#define TOKEN_ATTACKER "attacker-fedcba9876543210fedcba9876543210"

static void send_reading(raw_device *d, const char *id, uint64_t seq) {
  char line[256];
  snprintf(line, sizeof line,
           "{\"device\":\"%s\",\"seq\":%" PRIu64 ",\"ts\":1732590000000,\"temperature\":21.5,\"humidity\":40,"
           "\"battery\":88}\n",
           id, seq);
  raw_send(d, line);
}

/* The next line is an error line with this reason. */
static void expect_error(raw_device *d, const char *reason) {
  ck_assert_int_eq(raw_read_line(d, SERVE_TEST_PATIENCE), 0);
  char want[96];
  snprintf(want, sizeof want, "{\"type\":\"error\",\"reason\":\"%s\",", reason);
  ck_assert_msg(strncmp(d->line, want, strlen(want)) == 0, "want %s, got %s", reason, d->line);
}

static uint64_t fig_stored(const serve_figures *f) { return f->readings_stored; }
static uint64_t fig_known(const serve_figures *f) { return f->devices_known; }

/* The committed mark of a device in the database (-1: none). */
static int64_t mark_of(const serve_test *t, const char *id) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT seq FROM device_hwm WHERE device = ?1", -1, &st, NULL), SQLITE_OK);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int64_t mark = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return mark;
}

/* Writes the credentials file of the test: one line per (name, token,
 * patterns), the token hashed. */
static void write_credentials(const serve_test *t, const char *path, const char *const (*lines)[3], int n) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f, "# test credentials\n\n");
  for (int i = 0; i < n; i++) {
    char hex[2 * CREDENTIAL_HASH_SIZE + 1];
    credentials_hash_hex(lines[i][1], strlen(lines[i][1]), hex);
    fprintf(f, "%s  %s %s\n", lines[i][0], hex, lines[i][2]);
  }
  ck_assert_int_eq(fclose(f), 0);
  (void)t;
}

static void hello_token(raw_device *d, const char *token, const char *more) {
  char members[100];
  snprintf(members, sizeof members, "\"token\":\"%s\"%s%s", token, more ? "," : "", more ? more : "");
  raw_hello(d, members);
}

/* ------------------------------------------------------------ silencing */

static void *silencing_body(void *arg) {
  serve_test *t = arg;
  static raw_device dev, evil;
  const char *id = "dev-1";
  serve_test_start(t);
  raw_connect(&dev, t->s);
  raw_connect(&evil, t->s);
  for (uint64_t seq = 1; seq <= 3; seq++) send_reading(&dev, id, seq);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 3, SERVE_TEST_PATIENCE), 3);
  /* The attack: one line at the top of the seq range, or past it. */
  send_reading(&evil, id, UINT64_MAX);
  expect_error(&evil, "out_of_range");
  send_reading(&evil, id, INT64_MAX);
  expect_error(&evil, "seq_out_of_window");
  /* Just inside the window is a reading like any other; one past it is not. */
  send_reading(&evil, id, 3 + t->cfg.seq_window + 1);
  expect_error(&evil, "seq_out_of_window");
  for (uint64_t seq = 4; seq <= 6; seq++) send_reading(&dev, id, seq);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 6, SERVE_TEST_PATIENCE), 6);
  /* A device without a mark takes its first seq as the reference (one
   * that starts from the time in ms: above the window) ... */
  uint64_t ms = UINT64_C(1732590000000), w = t->cfg.seq_window;
  send_reading(&dev, "fresh", ms);
  send_reading(&dev, "fresh", ms + w + 1);
  expect_error(&dev, "seq_out_of_window");
  send_reading(&dev, "fresh", ms + 1);
  /* ... or, after seqs up to the window, the window itself. */
  send_reading(&dev, "counter", 1);
  send_reading(&dev, "counter", 2 * w + 1);
  expect_error(&dev, "seq_out_of_window");
  send_reading(&dev, "counter", 2);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 10, SERVE_TEST_PATIENCE), 10);
  raw_close(&dev);
  raw_close(&evil);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_SEQ_OUT_OF_WINDOW], 4);

  /* After a restart the gateway knows the stored mark before any reading
   * of this run: the attack is refused as the first line of the run. */
  serve_test_start(t);
  raw_connect(&evil, t->s);
  raw_connect(&dev, t->s);
  send_reading(&evil, id, INT64_MAX);
  expect_error(&evil, "seq_out_of_window");
  send_reading(&dev, id, 7);
  send_reading(&dev, id, 8);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 2, SERVE_TEST_PATIENCE), 2);
  raw_close(&dev);
  raw_close(&evil);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_int_eq(serve_test_rows_of(t, id), 8);
  ck_assert_int_eq(mark_of(t, id), 8);
  return NULL;
}

START_TEST(test_serve_auth_silencing) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  ck_assert_uint_eq(t.cfg.seq_window, UINT64_C(1) << 40);
  tg_test_run(2, 0, silencing_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* ------------------------------------------------------------ takeover */

typedef struct check {
  serve *s;
  const char *id;
  int result;
  device_status st;
} check;

static void *ask(void *arg) {
  check *c = arg;
  c->result = serve_health_check(c->s, c->id, SERVE_TEST_PATIENCE, &c->st);
  return NULL;
}

static void *takeover_body(void *arg) {
  serve_test *t = arg;
  static raw_device victim, bare, other;
  serve_test_start(t);
  raw_connect(&victim, t->s);
  hello_token(&victim, TOKEN_VICTIM, "\"health\":true");
  send_reading(&victim, "dev-1", 1);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_connected, 1, SERVE_TEST_PATIENCE), 1);

  /* Without a token, and with another device's token: refused, not
   * attached, nothing interned. */
  raw_connect(&bare, t->s);
  send_reading(&bare, "dev-1", 2);
  expect_error(&bare, "not_allowed");
  send_reading(&bare, "brand-new", 1);
  expect_error(&bare, "not_allowed");
  raw_send(&bare, "{\"type\":\"hello\",\"token\":\"guess\",\"health\":true}\n");
  expect_error(&bare, "unknown_token");
  raw_connect(&other, t->s);
  hello_token(&other, TOKEN_ATTACKER, "\"health\":true");
  send_reading(&other, "dev-1", 3);
  expect_error(&other, "not_allowed");
  send_reading(&other, "attacker-1", 1); /* its own device is fine */
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_known, 2, SERVE_TEST_PATIENCE), 2);

  /* The victim's health checks still go to the victim. */
  check c = {.s = t->s, .id = "dev-1"};
  tg_task *task;
  ck_assert_int_eq(tg_spawn(&task, ask, &c, NULL), 0);
  ck_assert_int_eq(raw_read_line(&victim, SERVE_TEST_PATIENCE), 0);
  uint64_t req = 0;
  ck_assert_msg(sscanf(victim.line, "{\"type\":\"health\",\"id\":%" SCNu64 "}", &req) == 1, "%s", victim.line);
  char reply[128];
  snprintf(reply, sizeof reply, "{\"type\":\"health\",\"id\":%" PRIu64 ",\"uptime_s\":5,\"battery\":77}\n", req);
  raw_send(&victim, reply);
  tg_task_join(task, NULL);
  ck_assert_int_eq(c.result, 0);
  ck_assert_int_eq(c.st.battery, 77);
  ck_assert_int_eq(raw_read_line(&other, TG_MS(100)), TG_ETIMEDOUT); /* nothing went to the impostor */

  send_reading(&victim, "dev-1", 4);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 3, SERVE_TEST_PATIENCE), 3);
  raw_close(&victim);
  raw_close(&bare);
  raw_close(&other);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_int_eq(serve_test_rows_of(t, "dev-1"), 2); /* seqs 1 and 4, the victim's */
  ck_assert_int_eq(serve_test_rows_of(t, "brand-new"), 0);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_NOT_ALLOWED], 3);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_UNKNOWN_TOKEN], 1);
  ck_assert_uint_eq(t->final.connections_authenticated, 2);
  ck_assert_uint_eq(t->final.devices_known, 2);
  return NULL;
}

static void with_credentials(serve_test *t, char *path, size_t cap) {
  snprintf(path, cap, "%s/credentials", t->dir);
  static const char *const lines[][3] = {
      {"victim", TOKEN_VICTIM, "dev-1"},
      {"attacker", TOKEN_ATTACKER, "attacker-*"},
  };
  write_credentials(t, path, lines, 2);
  t->cfg.credentials_path = path;
}

START_TEST(test_serve_auth_takeover) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  char path[160];
  with_credentials(&t, path, sizeof path);
  ck_assert_int_eq(serve_config_auth(&t.cfg), SERVE_AUTH_TOKEN);
  tg_test_run(2, 0, takeover_body, &t);
  unlink(path);
  serve_test_cleanup(&t);
}
END_TEST

/* ------------------------------------------------------------ slots */

enum { PER_CLIENT = 3, HELLO_MS = 3000 };

/* Connection slots: one address holds PER_CLIENT at most, and with
 * credentials a connection that does not authenticate in time is closed,
 * so idle connections cannot keep genuine devices out. */
static void *slots_body(void *arg) {
  serve_test *t = arg;
  static raw_device genuine, idle[PER_CLIENT - 1], over, later;
  serve_test_start(t);
  raw_connect(&genuine, t->s);
  for (int i = 0; i < PER_CLIENT - 1; i++) raw_connect(&idle[i], t->s);
  hello_token(&genuine, TOKEN_VICTIM, NULL);
  raw_connect(&over, t->s);
  ck_assert_int_eq(raw_read_line(&over, SERVE_TEST_PATIENCE), 0);
  ck_assert_str_eq(over.line, "{\"type\":\"error\",\"reason\":\"too_many_connections_per_client\"}");
  ck_assert_int_eq(raw_read_line(&over, SERVE_TEST_PATIENCE), TG_EOF);
  raw_close(&over);
  for (int i = 0; i < PER_CLIENT - 1; i++) {
    ck_assert_int_eq(raw_read_line(&idle[i], SERVE_TEST_PATIENCE), 0);
    ck_assert_str_eq(idle[i].line, "{\"type\":\"error\",\"reason\":\"hello_timeout\"}");
    ck_assert_int_eq(raw_read_line(&idle[i], SERVE_TEST_PATIENCE), TG_EOF);
    raw_close(&idle[i]);
  }
  /* The authenticated connection outlived the timeout; the freed slots
   * take new devices (once their tasks have ended: retried until then). */
  send_reading(&genuine, "dev-1", 1);
  /* Stored before the next comes from another connection: two
   * connections' lines of one device have no order between them, and a
   * seq 1 taken after seq 2 would be a resend. */
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 1, SERVE_TEST_PATIENCE), 1);
  int64_t deadline = tg_deadline_in(SERVE_TEST_PATIENCE);
  for (;;) {
    raw_connect(&later, t->s);
    char line[128];
    snprintf(line, sizeof line, "{\"type\":\"hello\",\"token\":\"%s\"}\n", TOKEN_VICTIM);
    raw_send(&later, line);
    ck_assert_int_eq(raw_read_line(&later, SERVE_TEST_PATIENCE), 0);
    if (strncmp(later.line, "{\"type\":\"hello\",", 16) == 0) break;
    ck_assert_str_eq(later.line, "{\"type\":\"error\",\"reason\":\"too_many_connections_per_client\"}");
    ck_assert_int_lt(tg_now(), deadline);
    raw_close(&later);
    tg_sleep(TG_MS(10));
  }
  send_reading(&later, "dev-1", 2);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 2, SERVE_TEST_PATIENCE), 2);
  raw_close(&genuine);
  raw_close(&later);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_ge(t->final.connections_rejected_per_client, 1);
  ck_assert_uint_eq(t->final.hello_timeouts, PER_CLIENT - 1);
  ck_assert_int_eq(serve_test_rows_of(t, "dev-1"), 2);
  return NULL;
}

START_TEST(test_serve_auth_slots) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  t.cfg.max_per_client = PER_CLIENT;
  t.cfg.handshake_timeout_ms = HELLO_MS;
  char path[160];
  with_credentials(&t, path, sizeof path);
  tg_test_run(2, 0, slots_body, &t);
  unlink(path);
  serve_test_cleanup(&t);
}
END_TEST

/* ------------------------------------------------------------ exhaustion */

enum { EXHAUST_IDS = 60, IDS_PER_CONN = 10, MAX_DEVICES = 40 };

static void *exhaustion_body(void *arg) {
  serve_test *t = arg;
  static raw_device evil, good[3];
  serve_test_start(t);
  raw_connect(&evil, t->s);
  char id[32];
  for (int i = 0; i < EXHAUST_IDS; i++) {
    snprintf(id, sizeof id, "junk-%d", i);
    send_reading(&evil, id, 1);
  }
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_bad, EXHAUST_IDS - IDS_PER_CONN, SERVE_TEST_PATIENCE),
                    EXHAUST_IDS - IDS_PER_CONN);
  /* The ids it already has go on working. */
  send_reading(&evil, "junk-0", 2);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_received, IDS_PER_CONN + 1, SERVE_TEST_PATIENCE), IDS_PER_CONN + 1);
  /* New genuine devices are still accepted. */
  for (int i = 0; i < 3; i++) {
    raw_connect(&good[i], t->s);
    snprintf(id, sizeof id, "genuine-%d", i);
    send_reading(&good[i], id, 1);
  }
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, IDS_PER_CONN + 4, SERVE_TEST_PATIENCE), IDS_PER_CONN + 4);
  raw_close(&evil);
  for (int i = 0; i < 3; i++) raw_close(&good[i]);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_TOO_MANY_IDS], EXHAUST_IDS - IDS_PER_CONN);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_TOO_MANY_DEVICES], 0);
  ck_assert_uint_eq(t->final.devices_known, IDS_PER_CONN + 3);
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "genuine-%d", i);
    ck_assert_int_eq(serve_test_rows_of(t, id), 1);
  }
  return NULL;
}

START_TEST(test_serve_auth_id_exhaustion) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  t.cfg.max_devices = MAX_DEVICES;
  t.cfg.max_ids_per_connection = IDS_PER_CONN;
  tg_test_run(2, 0, exhaustion_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* Two connections of one credential share its budget of new ids; ids
 * that exist stay open to them, and other credentials are not touched. */
static void *credential_budget_body(void *arg) {
  serve_test *t = arg;
  static raw_device a, b, victim;
  serve_test_start(t);
  raw_connect(&a, t->s);
  raw_connect(&b, t->s);
  raw_connect(&victim, t->s);
  hello_token(&a, TOKEN_ATTACKER, NULL);
  hello_token(&b, TOKEN_ATTACKER, NULL);
  hello_token(&victim, TOKEN_VICTIM, NULL);
  char id[32];
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "attacker-a%d", i);
    send_reading(&a, id, 1);
  }
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_known, 3, SERVE_TEST_PATIENCE), 3);
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "attacker-b%d", i);
    send_reading(&b, id, 1);
  }
  expect_error(&b, "too_many_ids"); /* the budget of 4 is spent by b's second id */
  expect_error(&b, "too_many_ids");
  send_reading(&b, "attacker-a0", 2); /* an id that exists */
  send_reading(&victim, "dev-1", 1);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 6, SERVE_TEST_PATIENCE), 6);
  raw_close(&a);
  raw_close(&b);
  raw_close(&victim);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.devices_known, 5);
  ck_assert_uint_eq(t->final.bad_input[SERVE_BAD_TOO_MANY_IDS], 2);
  return NULL;
}

START_TEST(test_serve_auth_credential_budget) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  t.cfg.max_ids_per_credential = 4;
  char path[160];
  with_credentials(&t, path, sizeof path);
  tg_test_run(2, 0, credential_budget_body, &t);
  unlink(path);
  serve_test_cleanup(&t);
}
END_TEST

/* ------------------------------------------------------------ reload */

static void *reload_body(void *arg) {
  serve_test *t = arg;
  static raw_device d;
  char changes[256] = "", err[256] = "";
  serve_test_start(t);
  raw_connect(&d, t->s);
  hello_token(&d, TOKEN_VICTIM, NULL);
  send_reading(&d, "dev-1", 1);
  send_reading(&d, "dev-2", 1);
  expect_error(&d, "not_allowed");

  /* The victim's credential now covers dev-2 and not dev-1; a third one comes. */
  static const char *const moved[][3] = {
      {"victim", TOKEN_VICTIM, "dev-2"},
      {"attacker", TOKEN_ATTACKER, "attacker-*"},
      {"later", "later-0123456789abcdef0123456789", "later-1"},
  };
  write_credentials(t, t->cfg.credentials_path, moved, 3);
  ck_assert_int_eq(serve_credentials_reload(t->s, changes, sizeof changes, err, sizeof err), 0);
  ck_assert_str_eq(changes, "3 credentials: added later; changed victim");
  send_reading(&d, "dev-1", 2);
  expect_error(&d, "not_allowed");
  send_reading(&d, "dev-2", 2);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 2, SERVE_TEST_PATIENCE), 2);

  /* A bad file changes nothing. */
  FILE *f = fopen(t->cfg.credentials_path, "w");
  fprintf(f, "victim not-a-hash dev-2\n");
  fclose(f);
  ck_assert_int_eq(serve_credentials_reload(t->s, changes, sizeof changes, err, sizeof err), -EINVAL);
  ck_assert_msg(strstr(err, "line 1") != NULL, "%s", err);
  send_reading(&d, "dev-2", 3);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_stored, 3, SERVE_TEST_PATIENCE), 3);

  /* A credential removed: its connections may send nothing more. */
  write_credentials(t, t->cfg.credentials_path, moved + 1, 2);
  ck_assert_int_eq(serve_credentials_reload(t->s, changes, sizeof changes, err, sizeof err), 0);
  ck_assert_str_eq(changes, "2 credentials: removed victim");
  send_reading(&d, "dev-2", 4);
  expect_error(&d, "not_allowed");
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.credential_reloads, 2);
  ck_assert_uint_eq(t->final.credential_reload_errors, 1);
  ck_assert_int_eq(serve_test_rows_of(t, "dev-2"), 2);
  ck_assert_int_eq(serve_test_rows_of(t, "dev-1"), 1);
  return NULL;
}

START_TEST(test_serve_auth_reload) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  char path[160];
  with_credentials(&t, path, sizeof path);
  tg_test_run(2, 0, reload_body, &t);
  unlink(path);
  serve_test_cleanup(&t);
}
END_TEST

/* ------------------------------------------------------------ loopback */

static void *loopback_body(void *arg) {
  serve_test *t = arg;
  char err[512] = "";
  serve *s = NULL;
  t->cfg.listen_host = "0.0.0.0";
  ck_assert_int_eq(serve_start(&t->cfg, &s, err, sizeof err), TG_EINVAL);
  ck_assert_ptr_null(s);
  ck_assert_msg(strstr(err, "without authentication") && strstr(err, "--insecure-no-auth"), "%s", err);
  t->cfg.listen_host = "::";
  ck_assert_int_eq(serve_start(&t->cfg, &s, err, sizeof err), TG_EINVAL);
  /* Said explicitly, it starts; so does any loopback address. */
  t->cfg.listen_host = "0.0.0.0";
  t->cfg.insecure_no_auth = 1;
  serve_test_start(t);
  ck_assert_int_eq(serve_test_stop(t), 0);
  t->cfg.insecure_no_auth = 0;
  t->cfg.listen_host = "127.0.0.2";
  serve_test_start(t);
  ck_assert_int_eq(serve_test_stop(t), 0);
  /* A credentials file that cannot be read stops the start. */
  t->cfg.listen_host = "0.0.0.0";
  t->cfg.credentials_path = "/nonexistent/credentials";
  ck_assert_int_eq(serve_start(&t->cfg, &s, err, sizeof err), -ENOENT);
  ck_assert_msg(strstr(err, "/nonexistent/credentials") != NULL, "%s", err);
  return NULL;
}

START_TEST(test_serve_auth_loopback_only) {
  serve_test t;
  serve_test_init(&t);
  tg_test_run(2, 0, loopback_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* ------------------------------------------------------------ rates */

/* A receive buffer of 1024 bytes holds at most 12 of these lines. */
enum { RATE = 200, RATE_LINES = 500, RECV_BUFFER = 1024, ROUND_LINES = 12 };

static uint64_t fig_limited(const serve_figures *f) { return f->health.rate_limited; }

static void *rates_body(void *arg) {
  serve_test *t = arg;
  static raw_device d;
  serve_test_start(t);
  raw_connect(&d, t->s);
  raw_hello(&d, "\"health\":true");
  int64_t t0 = tg_now();
  static char lines[RATE_LINES * 128];
  size_t at = 0;
  for (int i = 1; i <= RATE_LINES; i++)
    at += (size_t)snprintf(
        lines + at, sizeof lines - at,
        "{\"device\":\"fast\",\"seq\":%d,\"ts\":1732590000000,\"temperature\":1,\"humidity\":1,\"battery\":1}\n", i);
  raw_send(&d, lines);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_received, RATE_LINES, SERVE_TEST_PATIENCE), RATE_LINES);
  /* A second's worth at once, the rest at the rate, give or take one
   * receive buffer read ahead (ROUND_LINES): a lower bound only. */
  ck_assert_int_ge(tg_now() - t0, TG_SEC(RATE_LINES - RATE - ROUND_LINES) / RATE);
  serve_figures f;
  serve_figures_get(t->s, &f);
  ck_assert_uint_gt(f.line_rate_waits, 0);
  ck_assert_uint_eq(f.bad_lines, 0);

  /* Health requests: one a second for this device; the second at once is
   * not written. */
  check c = {.s = t->s, .id = "fast"};
  tg_task *task;
  ck_assert_int_eq(tg_spawn(&task, ask, &c, NULL), 0);
  ck_assert_int_eq(raw_read_line(&d, SERVE_TEST_PATIENCE), 0);
  uint64_t req = 0;
  ck_assert_msg(sscanf(d.line, "{\"type\":\"health\",\"id\":%" SCNu64 "}", &req) == 1, "%s", d.line);
  check again = {.s = t->s, .id = "fast"};
  ask(&again);
  ck_assert_int_eq(again.result, TG_ETIMEDOUT);
  ck_assert_uint_eq(serve_test_wait_for(t->s, fig_limited, 1, SERVE_TEST_PATIENCE), 1);
  char reply[128];
  snprintf(reply, sizeof reply, "{\"type\":\"health\",\"id\":%" PRIu64 ",\"uptime_s\":5,\"battery\":77}\n", req);
  raw_send(&d, reply);
  tg_task_join(task, NULL);
  ck_assert_int_eq(c.result, 0);
  raw_close(&d);
  ck_assert_int_eq(serve_test_stop(t), 0);
  ck_assert_uint_eq(t->final.readings_stored, RATE_LINES);
  return NULL;
}

START_TEST(test_serve_auth_rates) {
  serve_test t;
  serve_test_init(&t);
  t.cfg.batch_age_ms = 20;
  t.cfg.lines_per_s = RATE;
  t.cfg.max_line_bytes = 256;
  t.cfg.recv_buffer = RECV_BUFFER;
  t.cfg.health_per_device_per_s = 1;
  tg_test_run(2, 0, rates_body, &t);
  serve_test_cleanup(&t);
}
END_TEST

/* ------------------------------------------------------------ the file */

START_TEST(test_serve_auth_credentials_file) {
  char err[256] = "";
  credentials *set;
  char hex[65];
  credentials_hash_hex("abc", 3, hex);
  ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  char text[512];
  snprintf(text, sizeof text, "# comment\n\n  a %s sensor-* pump-1\r\nall\t%s *\n", hex,
           "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AE");
  ck_assert_int_eq(credentials_parse(text, strlen(text), &set, err, sizeof err), 0);
  ck_assert_uint_eq(set->n, 2);
  const credential *a = credentials_find(set, "abc", 3);
  ck_assert_ptr_nonnull(a);
  ck_assert_str_eq(a->name, "a");
  ck_assert_ptr_null(credentials_find(set, "abd", 3));
  ck_assert_ptr_null(credentials_find(set, "", 0));
  ck_assert(credential_allows(a, "sensor-1", 8));
  ck_assert(credential_allows(a, "sensor-", 7));
  ck_assert(!credential_allows(a, "sensor", 6));
  ck_assert(credential_allows(a, "pump-1", 6));
  ck_assert(!credential_allows(a, "pump-10", 7));
  ck_assert(credential_allows(credentials_named(set, "all"), "x", 1));
  credentials_unref(set);
  static const struct {
    const char *text, *why;
  } bad[] = {
      {"a\n", "line 1: a: the token's SHA-256"},
      {"a 123 x\n", "line 1: a: the token's SHA-256"},
      {"a ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015zz x\n", "line 1: a: the hash is not hex"},
      {"a ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n", "line 1: a: no device id"},
      {"\na ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad x/y\n", "line 2: a: 'x/y'"},
      {"a ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad a*b\n", "line 1: a: 'a*b'"},
      {"a/b ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad x\n", "line 1: a name"},
      {"a ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad x\n"
       "a ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ae x\n",
       "line 2: a: a second credential"},
      {"a ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad x\n"
       "b ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad x\n",
       "line 2: b: the same token as a"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ck_assert_int_eq(credentials_parse(bad[i].text, strlen(bad[i].text), &set, err, sizeof err), -EINVAL);
    ck_assert_msg(strncmp(err, bad[i].why, strlen(bad[i].why)) == 0, "%s: got '%s'", bad[i].why, err);
    ck_assert_ptr_null(set);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("serve-auth");
  tg_test_add(s, "credentials_file", test_serve_auth_credentials_file, 10);
  tg_test_add(s, "silencing", test_serve_auth_silencing, 60);
  tg_test_add(s, "takeover", test_serve_auth_takeover, 60);
  tg_test_add(s, "slots", test_serve_auth_slots, 60);
  tg_test_add(s, "id_exhaustion", test_serve_auth_id_exhaustion, 60);
  tg_test_add(s, "credential_budget", test_serve_auth_credential_budget, 60);
  tg_test_add(s, "reload", test_serve_auth_reload, 60);
  tg_test_add(s, "loopback_only", test_serve_auth_loopback_only, 60);
  tg_test_add(s, "rates", test_serve_auth_rates, 60);
  return tg_test_main(s);
}
