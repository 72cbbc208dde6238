/* test-demo-pressure.c - the tight numbers: every kind of backpressure
 * happens, is counted, and still nothing is lost. */
#include "test-demo.h"

START_TEST(test_demo_pressure_every_wait_happens) {
  demo_test t;
  demo_test_init(&t);
  demo_config_preset(&t.cfg, PRESET_PRESSURE);
  demo_test_run(&t);
  demo_test_invariants(&t);
  const demo_summary *s = &t.s;
  ck_assert_uint_gt(s->telemetry_full_waits, 0);
  ck_assert_uint_gt(s->storage_full_waits, 0);
  ck_assert_uint_gt(s->device_slot_waits, 0);
  ck_assert_uint_gt(s->db_pool_waits, 0);
  /* Client 3 is the preset's slow client: it lags and resyncs; the
   * others keep up with the ring of 10. */
  ck_assert_uint_gt(s->clients[2].lagged_events, 0);
  ck_assert_uint_gt(s->clients[2].skipped_stale, 0);
  for (int i = 0; i < s->nclients; i++)
    if (i != 2) ck_assert_uint_eq(s->clients[i].lagged_events, 0);
  /* Every device got slots, in FIFO order, and kept sending to the end. */
  for (int i = 0; i < s->ndevices; i++) {
    ck_assert_uint_gt(s->devices[i].sent, 5);
    ck_assert_int_gt(s->devices[i].last_sent_ms, 9000);
  }
  demo_test_cleanup(&t);
}
END_TEST

/* The default, the tour: in one 10 s run every primitive is seen at work -
 * each wait, lag, timeout, dropped sender, panic and retry counted above
 * zero - and still nothing is lost. */
START_TEST(test_demo_tour_shows_every_primitive) {
  demo_test t;
  demo_test_init(&t);
  demo_config_preset(&t.cfg, PRESET_TOUR);
  demo_test_run(&t);
  demo_test_invariants(&t);
  const demo_summary *s = &t.s;
  ck_assert_uint_gt(s->telemetry_full_waits, 0); /* mpsc filling */
  ck_assert_uint_gt(s->storage_full_waits, 0);   /* the storage queue full */
  ck_assert_uint_gt(s->device_slot_waits, 0);    /* Semaphores making tasks wait */
  ck_assert_uint_gt(s->db_pool_waits, 0);
  ck_assert_uint_gt(s->clients[2].lagged_events, 0); /* a broadcast lag and its resync */
  ck_assert_uint_gt(s->clients[2].resyncs, 0);
  ck_assert_uint_gt(s->health.timeout, 0); /* a oneshot timeout */
  ck_assert_uint_gt(s->health.dropped, 0); /* a dropped oneshot sender */
  ck_assert_uint_eq(s->tasks.panicked, 1); /* a JoinSet panic, isolated */
  ck_assert_uint_gt(s->write_retries, 0);
  ck_assert_int_eq(s->stop_reason, STOP_DURATION); /* the latched shutdown */
  demo_test_cleanup(&t);
}
END_TEST

/* Pressure from one side only: a slow aggregator alone fills the
 * telemetry channel - the 51st send of the blog's numbers waits. */
START_TEST(test_demo_slow_aggregator_fills_telemetry) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.duration_s = 4;
  t.cfg.device_interval_ms = 100; /* 70 readings/s ... */
  t.cfg.aggregator_delay_ms = 25; /* ... for an aggregator that takes 40 */
  demo_test_run(&t);
  /* Draining up to 50 queued readings at 25 ms each takes what it takes. */
  demo_test_invariants_within(&t, 2000);
  ck_assert_uint_gt(t.s.telemetry_full_waits, 0);
  ck_assert_uint_eq(t.s.storage_full_waits, 0);
  demo_test_cleanup(&t);
}
END_TEST

/* Slow storage alone: the storage queue fills and writers wait for the
 * pool - two batches really are written at once. */
START_TEST(test_demo_slow_storage_uses_the_pool) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.duration_s = 8;
  t.cfg.batch_interval_ms = 200;
  t.cfg.storage_capacity = 2;
  t.cfg.storage_delay_ms = 500; /* 2 connections: 4 batches/s for 5 */
  demo_test_run(&t);
  demo_test_invariants_within(&t, 3000);
  ck_assert_uint_gt(t.s.storage_full_waits, 0);
  ck_assert_uint_gt(t.s.db_pool_waits, 0);
  demo_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("demo-pressure");
  tg_test_add(s, "pressure_every_wait_happens", test_demo_pressure_every_wait_happens, 30);
  tg_test_add(s, "tour_shows_every_primitive", test_demo_tour_shows_every_primitive, 30);
  tg_test_add(s, "slow_aggregator_fills_telemetry", test_demo_slow_aggregator_fills_telemetry, 30);
  tg_test_add(s, "slow_storage_uses_the_pool", test_demo_slow_storage_uses_the_pool, 30);
  return tg_test_main(s);
}
