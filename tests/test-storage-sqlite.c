/* test-storage-sqlite.c - the SQLite backend under storage.c's marks:
 * resends are dropped across a reopen and across a crash (the marks left
 * in mark_log), marks forgotten are loaded anew from what another writer
 * committed, seqs keep all 64 bits, and several connections written
 * from several threads at once keep every device's readings in order. */
#include "test-storage.h"

#include <pthread.h>

/* Copies src (and its WAL) to dst while src is open: what a crash leaves. */
static void copy_file(const char *src, const char *dst) {
  FILE *in = fopen(src, "rb");
  if (!in) return; /* no WAL yet */
  FILE *out = fopen(dst, "wb");
  ck_assert_ptr_nonnull(out);
  char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
  fclose(in);
  fclose(out);
}

static void crash_copy(const char *db, const char *copy) {
  char a[200], b[200];
  copy_file(db, copy);
  snprintf(a, sizeof a, "%s-wal", db);
  snprintf(b, sizeof b, "%s-wal", copy);
  copy_file(a, b);
}

/* devices 1..ndev, seqs from..to each. */
static batch make_batch(uint64_t id, uint32_t ndev, uint64_t from, uint64_t to) {
  batch b = {.id = id};
  for (uint64_t q = from; q <= to; q++)
    for (uint32_t d = 1; d <= ndev; d++) storage_test_push(&b, d, q);
  return b;
}

START_TEST(test_marks_survive_reopen) {
  storage_test t;
  storage_test_init(&t);
  /* 5 devices: marks folded into device_hwm at once; 200: logged. */
  const uint32_t sizes[] = {5, 200};
  for (int k = 0; k < 2; k++) {
    uint32_t n = sizes[k];
    storage *s = storage_test_open(t.db, "sqlite", 1, 1, NULL);
    batch b = make_batch(1, n, 1, 3);
    ck_assert_uint_eq(storage_test_write(s, &b).inserted, 3 * n);
    batch_free(&b);
    storage_close(s);
    s = storage_test_open(t.db, "sqlite", 1, 0, NULL);
    b = make_batch(2, n, 1, 4);
    storage_write_result res = storage_test_write(s, &b);
    ck_assert_uint_eq(res.inserted, n);
    ck_assert_uint_eq(res.duplicates, 3 * n);
    batch_free(&b);
    ck_assert_uint_eq(storage_test_count(s), 4 * n);
    storage_close(s);
    uint64_t rows;
    ck_assert_int_eq(storage_test_check_sequences(t.db, &rows), (int)n);
    ck_assert_uint_eq(rows, 4 * n);
  }
  storage_test_cleanup(&t);
}
END_TEST

/* Marks of many devices go to mark_log, not device_hwm; a crash before the
 * fold must lose none of them. */
START_TEST(test_marks_survive_crash) {
  storage_test t;
  storage_test_init(&t);
  char copy[160];
  snprintf(copy, sizeof copy, "%s/copy.db", t.dir);
  storage *s = storage_test_open(t.db, "sqlite", 2, 1, NULL);
  for (uint64_t id = 1; id <= 3; id++) {
    batch b = make_batch(id, 300, id * 2 - 1, id * 2);
    ck_assert_uint_eq(storage_test_write(s, &b).inserted, 600);
    batch_free(&b);
  }
  crash_copy(t.db, copy);
  storage_close(s);
  s = storage_test_open(copy, "sqlite", 2, 0, NULL);
  batch b = make_batch(4, 300, 5, 7);
  storage_write_result res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.duplicates, 600);
  ck_assert_uint_eq(res.inserted, 300);
  batch_free(&b);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(storage_test_check_sequences(copy, &rows), 300);
  ck_assert_uint_eq(rows, 300 * 7);
  storage_test_cleanup(&t);
}
END_TEST

/* Another writer moved the devices' marks in the database (a cluster
 * node that consumed their partition meanwhile): a storage whose marks in
 * memory are older stores that writer's readings again - until it
 * forgets them and loads them anew. */
START_TEST(test_marks_forgotten_reload) {
  storage_test t;
  storage_test_init(&t);
  storage *mine = storage_test_open(t.db, "sqlite", 2, 1, NULL);
  batch b = make_batch(1, 4, 1, 5);
  ck_assert_uint_eq(storage_test_write(mine, &b).inserted, 20);
  batch_free(&b);
  storage *other = storage_test_open(t.db, "sqlite", 1, 0, NULL);
  b = make_batch(2, 4, 6, 10);
  ck_assert_uint_eq(storage_test_write(other, &b).inserted, 20);
  batch_free(&b);
  storage_close(other);
  /* Devices 1 and 2 forgotten, 3 and 4 not: the same batch again. */
  const uint32_t forget[] = {1, 2};
  storage_marks_forget(mine, forget, 2);
  b = make_batch(3, 4, 6, 10);
  storage_write_result res = storage_test_write(mine, &b);
  batch_free(&b);
  ck_assert_uint_eq(res.duplicates, 10);
  ck_assert_uint_eq(res.inserted, 10); /* 3 and 4's, stored twice: what forgetting prevents */
  int found = 0;
  uint64_t seq = 0;
  char err[200];
  ck_assert_int_eq(storage_mark_get(mine, 1, &found, &seq, err, sizeof err), 0);
  ck_assert(found && seq == 10);
  storage_close(mine);
  storage_test_cleanup(&t);
}
END_TEST

static int64_t stored_seq(const char *path, const char *sql) {
  sqlite3 *db;
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* Seqs up to 2^64 - 1, stored as two's complement: exact both ways, and
 * ordered as unsigned, also where a crash left marks above 2^63 in
 * mark_log over marks below it in device_hwm. */
START_TEST(test_seq_full_64_bits) {
  storage_test t;
  storage_test_init(&t);
  const uint64_t top = UINT64_MAX, half = (uint64_t)1 << 63;
  storage *s = storage_test_open(t.db, "sqlite", 1, 1, NULL);
  batch b = {.id = 1};
  const uint64_t seqs[] = {half - 1, half, top - 1, top};
  for (int i = 0; i < 4; i++) storage_test_push(&b, 1, seqs[i]);
  storage_test_push(&b, 1, half); /* a resend */
  storage_write_result res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 4);
  ck_assert_uint_eq(res.duplicates, 1);
  batch_free(&b);
  storage_close(s);
  ck_assert_uint_eq((uint64_t)stored_seq(t.db, "SELECT seq FROM device_hwm WHERE device = '1'"), top);
  ck_assert_uint_eq((uint64_t)stored_seq(t.db, "SELECT seq FROM readings ORDER BY seq < 0, seq LIMIT 1"), half - 1);
  ck_assert_uint_eq((uint64_t)stored_seq(t.db, "SELECT seq FROM readings ORDER BY seq < 0 DESC, seq DESC LIMIT 1"),
                    top);
  s = storage_test_open(t.db, "sqlite", 1, 0, NULL);
  b = (batch){.id = 2};
  storage_test_push(&b, 1, top);
  storage_test_push(&b, 1, 5);
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 0);
  ck_assert_uint_eq(res.duplicates, 2);
  batch_free(&b);
  ck_assert_uint_eq(storage_test_count(s), 4);
  storage_close(s);

  /* 100 devices at seq 5 in device_hwm (a clean close folds), then seq
   * 2^63 + 1 in mark_log only: opening the crashed copy must keep the
   * larger, as unsigned. */
  char copy[160];
  snprintf(copy, sizeof copy, "%s/copy.db", t.dir);
  s = storage_test_open(t.db, "sqlite", 1, 1, NULL);
  b = make_batch(1, 100, 5, 5);
  ck_assert_uint_eq(storage_test_write(s, &b).inserted, 100);
  batch_free(&b);
  storage_close(s);
  s = storage_test_open(t.db, "sqlite", 1, 0, NULL);
  b = make_batch(2, 100, half + 1, half + 1);
  ck_assert_uint_eq(storage_test_write(s, &b).inserted, 100);
  batch_free(&b);
  crash_copy(t.db, copy);
  storage_close(s);
  ck_assert_int_eq(stored_seq(copy, "SELECT COUNT(*) FROM mark_log"), 1);
  s = storage_test_open(copy, "sqlite", 1, 0, NULL);
  b = make_batch(3, 100, 6, 6);
  storage_test_push(&b, 7, half + 2);
  res = storage_test_write(s, &b);
  ck_assert_uint_eq(res.inserted, 1);
  ck_assert_uint_eq(res.duplicates, 100);
  batch_free(&b);
  storage_close(s);
  ck_assert_uint_eq((uint64_t)stored_seq(copy, "SELECT seq FROM device_hwm WHERE device = '8'"), half + 1);
  ck_assert_uint_eq((uint64_t)stored_seq(copy, "SELECT seq FROM device_hwm WHERE device = '7'"), half + 2);
  storage_test_cleanup(&t);
}
END_TEST

START_TEST(test_connections_in_parallel_keep_order) {
  storage_test t;
  storage_test_init(&t);
  storage *s = storage_test_open(t.db, "sqlite", PARALLEL_CONNS, 1, NULL);
  pthread_t th[PARALLEL_CONNS];
  parallel_writer w[PARALLEL_CONNS];
  for (int c = 0; c < PARALLEL_CONNS; c++) {
    w[c] = (parallel_writer){.s = s, .conn = c};
    ck_assert_int_eq(pthread_create(&th[c], NULL, parallel_write_conn, &w[c]), 0);
  }
  uint64_t inserted = 0, duplicates = 0;
  for (int c = 0; c < PARALLEL_CONNS; c++) {
    pthread_join(th[c], NULL);
    ck_assert_int_eq(w[c].failed, 0);
    ck_assert_uint_eq(w[c].inserted,
                      (uint64_t)(PARALLEL_DEVICES / PARALLEL_CONNS) * PARALLEL_BATCHES * PARALLEL_PER_BATCH);
    inserted += w[c].inserted;
    duplicates += w[c].duplicates;
  }
  ck_assert_uint_eq(inserted, (uint64_t)PARALLEL_DEVICES * PARALLEL_BATCHES * PARALLEL_PER_BATCH);
  ck_assert_uint_eq(duplicates, (uint64_t)PARALLEL_DEVICES * (PARALLEL_BATCHES - 1));
  ck_assert_uint_eq(storage_test_count(s), inserted);
  storage_close(s);
  uint64_t rows;
  ck_assert_int_eq(storage_test_check_sequences(t.db, &rows), PARALLEL_DEVICES);
  ck_assert_uint_eq(rows, inserted);
  storage_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("storage-sqlite");
  tg_test_add(s, "marks_survive_reopen", test_marks_survive_reopen, 60);
  tg_test_add(s, "marks_survive_crash", test_marks_survive_crash, 60);
  tg_test_add(s, "marks_forgotten_reload", test_marks_forgotten_reload, 60);
  tg_test_add(s, "seq_full_64_bits", test_seq_full_64_bits, 60);
  tg_test_add(s, "connections_in_parallel_keep_order", test_connections_in_parallel_keep_order, 60);
  return tg_test_main(s);
}
