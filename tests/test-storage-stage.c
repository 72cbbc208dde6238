/* test-storage-stage.c - the storage stage (writer.h) over several
 * connections at once, with injected failures: every batch commits, each
 * device's readings land in order, resends are dropped, nothing is lost;
 * and the stage's arguments are checked. */
#include "test-storage.h"
#include "writer.h"

enum { DEVICES = 37, BATCHES = 80, PER_BATCH = 2 };

typedef struct stage_run {
  const char *db;
  int connections, pool, workers;
  double fail_rate;
  storage_stage_figures f;
  uint64_t rows;
} stage_run;

static int open_call(void *arg) { return storage_open_call(arg); }

static void *stage_main(void *arg) {
  stage_run *run = arg;
  storage *db = NULL;
  storage_faults_opts faults = {.fail_rate = run->fail_rate, .seed = 5};
  storage_open_args oa = {.db = &db,
                          .opts = {.backend = "sqlite",
                                   .path = run->db,
                                   .connections = run->connections,
                                   .reset = 1,
                                   .faults = run->fail_rate > 0 ? &faults : NULL}};
  ck_assert_msg(tg_blocking_run(open_call, &oa) == 0, "%s", oa.err);
  demo_log log;
  FILE *devnull = fopen("/dev/null", "w");
  ck_assert_ptr_nonnull(devnull);
  log_init(&log, devnull, LOG_TEXT, 1, tg_now());
  tg_cancel *cancel;
  ck_assert_int_eq(tg_cancel_new(&cancel, "stop"), 0);
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 4, .elem_size = sizeof(batch), .name = "batches"}, &tx, &rx),
                   0);
  storage_stage *st;
  storage_stage_opts so = {.cancel = cancel, .log = &log, .batches = rx, .db = db, .pool = run->pool, .pin_writers = 1};
  ck_assert_int_eq(storage_stage_new(&so, &st), 0);
  tg_task *task;
  ck_assert_int_eq(tg_spawn(&task, storage_stage_task, st, &(tg_spawn_opts){.name = "storage"}), 0);
  for (uint64_t id = 1; id <= BATCHES; id++) {
    batch b = {.id = id};
    for (uint32_t d = 1; d <= DEVICES; d++) {
      if (id > 1) storage_test_push(&b, d, (id - 1) * PER_BATCH); /* a resend of the batch before's last */
      for (uint64_t q = 1; q <= PER_BATCH; q++) storage_test_push(&b, d, (id - 1) * PER_BATCH + q);
    }
    ck_assert_int_eq(tg_mpsc_send(tx, &b), 0);
  }
  tg_mpsc_tx_drop(tx);
  tg_outcome o;
  ck_assert_int_eq(tg_task_join(task, &o), 0);
  ck_assert_int_eq(o.status, 0);
  storage_stage_figures_get(st, &run->f);
  storage_stage_free(st);
  storage_count_args ca = {.db = db};
  ck_assert_int_eq(tg_blocking_run(storage_count_call, &ca), 0);
  run->rows = ca.rows;
  storage_close(db);
  tg_cancel_free(cancel);
  log_destroy(&log);
  fclose(devnull);
  return NULL;
}

static void check_run(const stage_run *run) {
  const storage_stage_figures *f = &run->f;
  uint64_t want = (uint64_t)DEVICES * BATCHES * PER_BATCH;
  ck_assert_uint_eq(f->batches_received, BATCHES);
  ck_assert_uint_eq(f->batches_stored, BATCHES);
  ck_assert_uint_eq(f->batches_lost, 0);
  ck_assert_uint_eq(f->readings_stored, want);
  ck_assert_uint_eq(f->duplicates, (uint64_t)DEVICES * (BATCHES - 1));
  ck_assert_uint_eq(f->writers_spawned, BATCHES);
  ck_assert_uint_eq(f->writers_joined, BATCHES);
  ck_assert_uint_eq(f->writers_aborted + f->writers_panicked, 0);
  ck_assert_uint_eq(f->pool.permits, (uint64_t)run->pool);
  ck_assert_uint_eq(f->pool.in_use, 0);
  ck_assert_int_gt(f->last_commit_ns, 0);
  /* every device has rows on its one connection: one transaction per
   * connection per batch, plus the retries */
  ck_assert_uint_eq(f->transactions, (uint64_t)BATCHES * (uint64_t)run->connections + f->write_retries);
  ck_assert_uint_eq(run->rows, want);
  uint64_t rows;
  ck_assert_int_eq(storage_test_check_sequences(run->db, &rows), DEVICES);
  ck_assert_uint_eq(rows, want);
}

/* Four connections written at once on two workers, 30% of the
 * transactions failing: retries hold their connection's turn. */
START_TEST(test_stage_connections_in_parallel_with_failures) {
  storage_test t;
  storage_test_init(&t);
  stage_run run = {.db = t.db, .connections = 4, .pool = 4, .fail_rate = 0.3};
  tg_test_run(2, 0, stage_main, &run);
  check_run(&run);
  ck_assert_uint_gt(run.f.write_retries, 0);
  storage_test_cleanup(&t);
}
END_TEST

/* Fewer permits than connections, and more: either is correct. */
START_TEST(test_stage_pool_sizes) {
  const int pools[][2] = {{3, 1}, {2, 5}};
  for (int i = 0; i < 2; i++) {
    storage_test t;
    storage_test_init(&t);
    stage_run run = {.db = t.db, .connections = pools[i][0], .pool = pools[i][1], .fail_rate = 0.2};
    tg_test_run(2, 0, stage_main, &run);
    check_run(&run);
    storage_test_cleanup(&t);
  }
}
END_TEST

static void *bad_opts_main(void *arg) {
  (void)arg;
  storage *db = NULL;
  storage_open_args oa = {.db = &db, .opts = {.backend = "none", .connections = 1}};
  ck_assert_int_eq(tg_blocking_run(open_call, &oa), 0);
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  ck_assert_int_eq(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 1, .elem_size = sizeof(batch)}, &tx, &rx), 0);
  storage_stage *st = (storage_stage *)&oa;
  storage_stage_opts so = {.batches = rx, .db = db, .pool = 0};
  ck_assert_int_eq(storage_stage_new(&so, &st), TG_EINVAL);
  ck_assert_ptr_null(st);
  so.pool = WRITER_MAX_POOL + 1;
  ck_assert_int_eq(storage_stage_new(&so, &st), TG_EINVAL);
  so = (storage_stage_opts){.batches = rx, .pool = 1};
  ck_assert_int_eq(storage_stage_new(&so, &st), TG_EINVAL);
  /* Never spawned: freeing it drops its channel. */
  so.db = db;
  ck_assert_int_eq(storage_stage_new(&so, &st), 0);
  storage_stage_free(st);
  batch b = {.id = 1};
  ck_assert_int_eq(tg_mpsc_send(tx, &b), TG_ECLOSED);
  tg_mpsc_tx_drop(tx);
  storage_close(db);
  return NULL;
}

START_TEST(test_stage_bad_opts) { tg_test_run_virtual(bad_opts_main, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("storage-stage");
  tg_test_add(s, "connections_in_parallel_with_failures", test_stage_connections_in_parallel_with_failures, 90);
  tg_test_add(s, "pool_sizes", test_stage_pool_sizes, 90);
  tg_test_add(s, "bad_opts", test_stage_bad_opts, 30);
  return tg_test_main(s);
}
