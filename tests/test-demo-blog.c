/* test-demo-blog.c - the reference article's numbers: the scenario runs
 * its 10 s, loses nothing, and (honestly) never has to wait. */
#include "test-demo.h"

START_TEST(test_demo_blog_preset) {
  demo_test t;
  demo_test_init(&t);
  demo_test_run(&t);
  demo_test_invariants(&t);
  const demo_summary *s = &t.s;
  ck_assert_int_eq(s->stop_reason, STOP_DURATION);
  ck_assert_int_eq(s->stop_at_ms, 10000);
  /* 7 devices at ~1 Hz for 10 s. */
  ck_assert_uint_ge(s->readings_sent, 60);
  ck_assert_uint_le(s->readings_sent, 80);
  /* A batch every 2 s: at 2, 4, 6, 8 and the final one. */
  ck_assert_uint_ge(s->batches_flushed, 5);
  ck_assert_uint_eq(s->tasks.pipeline, 14);
  ck_assert_uint_eq(s->tasks.panicked, 0);
  /* One snapshot per reading, published once, every client sees all. */
  ck_assert_uint_eq(s->snapshots_built, s->readings_aggregated);
  ck_assert_uint_eq(s->snapshots_broadcast, s->snapshots_built);
  for (int i = 0; i < s->nclients; i++) {
    ck_assert_uint_eq(s->clients[i].received, s->snapshots_broadcast);
    ck_assert_uint_eq(s->clients[i].lagged_events, 0);
  }
  /* Health rounds at 3, 6 and 9 s, 2-3 distinct devices each, all fine. */
  ck_assert_uint_eq(s->health.rounds, 3);
  ck_assert_uint_ge(s->health.ok, 6);
  ck_assert_uint_le(s->health.ok, 9);
  ck_assert_uint_eq(s->health.timeout + s->health.dropped + s->health.unreachable, 0);
  /* The published numbers leave headroom everywhere (REFERENCE.md). */
  ck_assert_uint_eq(s->telemetry_full_waits + s->storage_full_waits + s->device_slot_waits + s->db_pool_waits, 0);
  demo_test_cleanup(&t);
}
END_TEST

/* The same run with another seed still keeps every invariant. */
START_TEST(test_demo_blog_other_seeds) {
  for (uint64_t seed = 1; seed <= 3; seed++) {
    demo_test t;
    demo_test_init(&t);
    t.cfg.seed = seed;
    t.cfg.duration_s = 4;
    demo_test_run(&t);
    demo_test_invariants(&t);
    demo_test_cleanup(&t);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("demo-blog");
  tg_test_add(s, "blog_preset", test_demo_blog_preset, 30);
  tg_test_add(s, "blog_other_seeds", test_demo_blog_other_seeds, 30);
  return tg_test_main(s);
}
