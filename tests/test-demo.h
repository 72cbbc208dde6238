/* test-demo.h - what the scenario tests of `telegate demo` share: a config
 * on the virtual clock with its database in a fresh temporary directory,
 * a run that checks the runtime closed clean, the invariants every run
 * must keep, and a look into the database itself. */
#ifndef TELEGATE_TEST_DEMO_H
#define TELEGATE_TEST_DEMO_H

#include "demo.h"
#include "helpers.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct demo_test {
  char dir[64];
  char db[128];
  demo_config cfg;
  demo_summary s;
} demo_test;

/* The blog preset on the virtual clock, seed 42, log thrown away. */
static inline void demo_test_init(demo_test *t) {
  const char *tmp = getenv("TMPDIR");
  snprintf(t->dir, sizeof t->dir, "%s/telegate-demo-XXXXXX", tmp && strlen(tmp) < 30 ? tmp : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(t->dir));
  snprintf(t->db, sizeof t->db, "%s/demo.db", t->dir);
  demo_config_defaults(&t->cfg);
  demo_config_preset(&t->cfg, PRESET_BLOG);
  t->cfg.clock = TG_CLOCK_VIRTUAL;
  t->cfg.db_path = t->db;
  t->cfg.quiet = 1;
  t->cfg.out = fopen("/dev/null", "w");
  ck_assert_ptr_nonnull(t->cfg.out);
}

static inline void demo_test_cleanup(demo_test *t) {
  const char *suffix[] = {"", "-wal", "-shm", "-journal"};
  char path[160];
  for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
    snprintf(path, sizeof path, "%s%s", t->db, suffix[i]);
    unlink(path);
  }
  rmdir(t->dir);
  if (t->cfg.out && t->cfg.out != stdout) fclose(t->cfg.out);
  t->cfg.out = NULL;
}

/* Runs the demo in its own runtime and checks that the runtime closed
 * clean: no task, timer, stack or blocking job left behind. */
static inline void demo_test_run(demo_test *t) {
  int r = demo_run(&t->cfg, &t->s);
  ck_assert_msg(r == 0, "demo_run returned %s", tg_err_name(r));
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_alive, 0);
  ck_assert_uint_eq(st.timers_pending, 0);
  ck_assert_uint_eq(st.tasks_aborted_at_exit, 0);
  ck_assert_uint_eq(st.stacks_guarded + st.stacks_unguarded, 0);
  ck_assert_uint_eq(st.blocking_in_flight, 0);
}

/* Reads the database behind the summary's back: per device, the stored
 * seqs must be exactly 1..sent (nothing lost, nothing twice), and the
 * high-water marks must match. Returns the row count. */
static inline uint64_t demo_test_check_db(const demo_test *t) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open_v2(t->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "SELECT r.device, COUNT(*), COUNT(DISTINCT r.seq), MIN(r.seq), MAX(r.seq), "
                                      "(SELECT seq FROM device_hwm h WHERE h.device = r.device) "
                                      "FROM readings r GROUP BY r.device ORDER BY r.device",
                                      -1, &st, NULL),
                   SQLITE_OK);
  uint64_t rows = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    int device = sqlite3_column_int(st, 0);
    int64_t n = sqlite3_column_int64(st, 1), distinct = sqlite3_column_int64(st, 2);
    int64_t lo = sqlite3_column_int64(st, 3), hi = sqlite3_column_int64(st, 4), mark = sqlite3_column_int64(st, 5);
    ck_assert_int_ge(device, 1);
    ck_assert_int_le(device, t->s.ndevices);
    ck_assert_int_eq(n, distinct);
    ck_assert_int_eq(lo, 1);
    ck_assert_int_eq(hi, n);
    ck_assert_int_eq(mark, hi);
    ck_assert_uint_eq((uint64_t)n, t->s.devices[device - 1].sent);
    rows += (uint64_t)n;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

/* What every run keeps, whatever went wrong in it. Shutdown is bounded by
 * `max_shutdown_ms`: 1 s, unless a test makes storage deliberately slow,
 * when committing the backlog takes what it takes. */
static inline void demo_test_invariants_within(demo_test *t, int64_t max_shutdown_ms) {
  const demo_summary *s = &t->s;
  ck_assert_uint_gt(s->readings_sent, 0);
  ck_assert_uint_eq(s->readings_sent, s->readings_aggregated);
  ck_assert_uint_eq(s->readings_aggregated, s->readings_stored);
  ck_assert_uint_eq(s->readings_stored, s->db_rows);
  ck_assert_int_eq(s->lossless, 1);
  ck_assert_uint_eq(demo_test_check_db(t), s->db_rows);
  ck_assert_uint_eq(s->batches_flushed, s->batches_stored);
  ck_assert_uint_eq(s->batches_lost, 0);
  ck_assert_uint_eq(s->duplicates, 0);
  ck_assert_uint_eq(s->tasks.spawned, s->tasks.joined);
  ck_assert_uint_eq(s->tasks.aborted, 0);
  ck_assert_uint_eq(s->tasks.pipeline, (uint64_t)(s->ndevices + s->nclients + 3));
  ck_assert_uint_eq(s->snapshots_leaked, 0);
  ck_assert_uint_eq(s->slot_fifo_violations, 0);
  ck_assert_int_lt(s->shutdown_ms, max_shutdown_ms);
  for (int i = 0; i < s->nclients; i++) {
    const demo_client_summary *c = &s->clients[i];
    ck_assert_uint_eq(c->resyncs, c->lagged_events);
    /* Every update was either received or reported missed. */
    ck_assert_uint_eq(c->received + c->lagged_messages, s->snapshots_broadcast);
  }
}

static inline void demo_test_invariants(demo_test *t) { demo_test_invariants_within(t, 1000); }

#endif
