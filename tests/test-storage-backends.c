/* test-storage-backends.c - backends are looked up by name, an unknown
 * name says which exist, `none` counts what it was given and drops
 * resends like a database would, and the fault decorator's failed writes
 * store nothing, so a retried batch is stored exactly once - on SQLite
 * and on PostgreSQL (a server of the test's own, test-postgres.h; without
 * PostgreSQL's binaries that case says so and passes). */
#include "test-postgres.h"
#include "test-storage.h"

START_TEST(test_backends_by_name) {
  storage_test t;
  storage_test_init(&t);
  char names[200];
  ck_assert_str_eq(storage_backend_names(names, sizeof names), "sqlite, postgres, none");
  ck_assert_int_eq(storage_backend_exists("sqlite"), 1);
  ck_assert_int_eq(storage_backend_exists("postgres"), 1);
  ck_assert_int_eq(storage_backend_exists("none"), 1);
  ck_assert_int_eq(storage_backend_exists("faults"), 0); /* a decorator, not a database */
  ck_assert_int_eq(storage_backend_exists("mysql"), 0);
  ck_assert_int_eq(storage_backend_exists(NULL), 0);

  storage *s = storage_test_open(t.db, NULL, 1, 1, NULL); /* NULL: sqlite */
  ck_assert_int_eq(access(t.db, F_OK), 0);
  storage_close(s);
  storage_close(storage_test_open(t.db, "none", 2, 0, NULL));

  storage_opts o = {.backend = "mysql", .path = t.db, .connections = 1};
  char err[200] = "";
  s = (storage *)&o; /* must be reset to NULL on failure */
  ck_assert_int_eq(storage_open(&s, &o, err, sizeof err), -EINVAL);
  ck_assert_ptr_null(s);
  ck_assert_str_eq(err, "no storage backend 'mysql' (registered: sqlite, postgres, none)");

  o = (storage_opts){.backend = "none", .connections = 0};
  ck_assert_int_eq(storage_open(&s, &o, err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "connections"));
  o.connections = STORAGE_MAX_CONNECTIONS + 1;
  ck_assert_int_eq(storage_open(&s, &o, err, sizeof err), -EINVAL);
  storage_test_cleanup(&t);
}
END_TEST

START_TEST(test_none_counts_and_drops_resends) {
  storage *s = storage_test_open(NULL, "none", 3, 0, NULL);
  batch b = {.id = 1};
  for (uint32_t d = 1; d <= 9; d++)
    for (uint64_t q = 1; q <= 4; q++) storage_test_push(&b, d, q);
  storage_test_push(&b, 4, 2); /* a resend inside the batch */
  storage_write_result res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 36);
  ck_assert_uint_eq(res.duplicates, 1);
  ck_assert_uint_eq(storage_test_count(s), 36);
  /* The same batch again: every reading a resend. */
  b.id = 2;
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 0);
  ck_assert_uint_eq(res.duplicates, 37);
  /* Each connection writes only the devices routed to it. */
  batch_free(&b);
  b = (batch){.id = 3};
  for (uint32_t d = 1; d <= 9; d++) storage_test_push(&b, d, 5);
  char err[200];
  for (int c = 0; c < 3; c++) {
    ck_assert_int_eq(storage_batch_touches(s, &b, c), 1);
    ck_assert_int_eq(storage_write(s, c, &b, &res, err, sizeof err), 0);
    ck_assert_uint_eq(res.inserted, 3);
    for (uint32_t i = 0; i < b.n; i++)
      ck_assert_int_eq(storage_route(s, b.items[i].device) == c, b.items[i].device % 3 == (uint32_t)c);
  }
  ck_assert_int_eq(storage_write(s, 3, &b, &res, err, sizeof err), -EINVAL);
  ck_assert_uint_eq(storage_test_count(s), 45);
  batch_free(&b);
  storage_close(s);
}
END_TEST

/* Half the writes fail: each batch is retried until it commits, and the
 * database holds every reading once, in order. */
static void faults_retried_batch_stored_once(const char *backend) {
  storage_test t;
  storage_test_init(&t);
  pg_cluster pg;
  int postgres = strcmp(backend, "postgres") == 0;
  if (postgres) {
    if (!pg_tpl.bin[0]) {
      fprintf(stderr, "*** faults_retried_batch_stored_once on postgres SKIPPED: no PostgreSQL binaries ***\n");
      storage_test_cleanup(&t);
      return;
    }
    pg_cluster_start(&pg);
  }
  storage_faults_opts faults = {.fail_rate = 0.5, .seed = 11};
  storage *s = storage_test_open(postgres ? pg.uri : t.db, backend, 2, 1, &faults);
  uint64_t failures = 0, inserted = 0;
  for (uint64_t id = 1; id <= 40; id++) {
    batch b = {.id = id};
    for (uint32_t d = 1; d <= 6; d++) {
      if (id > 1) storage_test_push(&b, d, (id - 1) * 3); /* the previous batch's last: a resend */
      for (uint64_t q = 1; q <= 3; q++) storage_test_push(&b, d, (id - 1) * 3 + q);
    }
    for (int c = 0; c < 2; c++) {
      storage_write_result res;
      char err[200];
      int r;
      while ((r = storage_write(s, c, &b, &res, err, sizeof err)) != 0) {
        ck_assert_int_eq(r, -EIO);
        ck_assert_str_eq(err, "simulated write failure, rolled back");
        ck_assert_uint_eq(res.inserted + res.duplicates, 0);
        failures++;
      }
      ck_assert_uint_eq(res.inserted, 9);
      ck_assert_uint_eq(res.duplicates, id > 1 ? 3 : 0);
      inserted += res.inserted;
    }
    batch_free(&b);
  }
  ck_assert_uint_gt(failures, 10);
  ck_assert_uint_eq(storage_test_count(s), inserted);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(postgres ? pg_check_sequences(&pg, &rows) : storage_test_check_sequences(t.db, &rows), 6);
  ck_assert_uint_eq(rows, 6 * 40 * 3);
  if (postgres) pg_cluster_destroy(&pg);
  storage_test_cleanup(&t);
}

START_TEST(test_faults_retried_batch_stored_once) { faults_retried_batch_stored_once("sqlite"); }
END_TEST

START_TEST(test_faults_retried_batch_stored_once_postgres) { faults_retried_batch_stored_once("postgres"); }
END_TEST

/* --db as logs and errors show it: never a password. */
START_TEST(test_path_shown) {
  static const char *const cases[][2] = {
      {"telegate.db", "telegate.db"},
      {"postgresql://gw@127.0.0.1:5432/tg", "postgresql://gw@127.0.0.1:5432/tg"},
      {"postgresql://gw:s3cret@127.0.0.1:5432/tg", "postgresql://gw:***@127.0.0.1:5432/tg"},
      {"postgresql://gw:@db/tg", "postgresql://gw:***@db/tg"},
      {"host=db user=gw password=s3cret dbname=tg", "host=db user=gw password=*** dbname=tg"},
      {"postgresql://db/tg?user=gw&password=s3cret&sslmode=require",
       "postgresql://db/tg?user=gw&password=***&sslmode=require"},
      {"host=db old_password=x", "host=db old_password=x"},
  };
  char buf[128];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    ck_assert_str_eq(storage_path_shown(cases[i][0], buf, sizeof buf), cases[i][1]);
  ck_assert_str_eq(storage_path_shown("postgresql://gw:s3cret@db/tg", buf, 12), "postgresql:");
}
END_TEST

int main(void) {
  pg_template_init(); /* or none: the postgres case says it skips */
  Suite *s = suite_create("storage-backends");
  tg_test_add(s, "backends_by_name", test_backends_by_name, 30);
  tg_test_add(s, "path_shown", test_path_shown, 10);
  tg_test_add(s, "none_counts_and_drops_resends", test_none_counts_and_drops_resends, 30);
  tg_test_add(s, "faults_retried_batch_stored_once", test_faults_retried_batch_stored_once, 60);
  tg_test_add(s, "faults_retried_batch_stored_once_postgres", test_faults_retried_batch_stored_once_postgres, 120);
  return tg_test_main(s);
}
