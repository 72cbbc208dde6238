/* test-demo-faults.c - injected faults: a slow client, slow and silent
 * health devices, a panicking device, failing transactions. Each fault
 * shows, is counted, and costs no reading. */
#include "test-demo.h"

/* A client slower than the updates lags, resyncs from the watch once per
 * lag and skips the stale backlog; the others never lag. */
START_TEST(test_demo_slow_client_resyncs) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.broadcast_capacity = 20;
  t.cfg.slow_client = 2;
  t.cfg.client_delay_ms = 500; /* 2 updates/s for ~7 */
  demo_test_run(&t);
  demo_test_invariants(&t);
  const demo_client_summary *slow = &t.s.clients[1];
  ck_assert_uint_gt(slow->lagged_events, 0);
  ck_assert_uint_eq(slow->resyncs, slow->lagged_events);
  ck_assert_uint_gt(slow->lagged_messages, 0);
  ck_assert_uint_gt(slow->skipped_stale, 0);
  /* After a resync the client does not replay what it skipped. */
  ck_assert_uint_lt(slow->processed, slow->received);
  for (int i = 0; i < t.s.nclients; i++)
    if (i != 1) {
      ck_assert_uint_eq(t.s.clients[i].lagged_events, 0);
      ck_assert_uint_eq(t.s.clients[i].processed, t.s.snapshots_broadcast);
    }
  demo_test_cleanup(&t);
}
END_TEST

/* With 3 devices every round asks 2 or 3 of them: the slow one times
 * out, the silent one drops its reply sender, the third answers. */
START_TEST(test_demo_health_timeout_and_dropped) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.devices = 3;
  t.cfg.health_interval_ms = 1000;
  t.cfg.slow_health_device = 1;
  t.cfg.drop_health_device = 2;
  demo_test_run(&t);
  demo_test_invariants(&t);
  ck_assert_uint_ge(t.s.health.rounds, 9);
  ck_assert_uint_gt(t.s.health.timeout, 0);
  ck_assert_uint_gt(t.s.health.dropped, 0);
  ck_assert_uint_gt(t.s.health.ok, 0);
  ck_assert_uint_eq(t.s.health.unreachable, 0);
  demo_test_cleanup(&t);
}
END_TEST

/* A device task panics at 3 s holding a bandwidth slot: the JoinSet
 * reports it, its slot and sender go back, the other devices send on to
 * the end, and every reading it did send is stored. */
START_TEST(test_demo_panicking_device) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.panic_device = 3;
  t.cfg.panic_at_s = 3;
  t.cfg.device_slots = 1; /* its slot must come back or everyone stalls */
  demo_test_run(&t);
  demo_test_invariants(&t);
  const demo_summary *s = &t.s;
  ck_assert_uint_eq(s->tasks.panicked, 1);
  ck_assert_int_eq(s->devices[2].panicked, 1);
  ck_assert_uint_gt(s->devices[2].sent, 0);
  ck_assert_int_lt(s->devices[2].last_sent_ms, 3000);
  for (int i = 0; i < s->ndevices; i++) {
    if (i == 2) continue;
    ck_assert_int_eq(s->devices[i].panicked, 0);
    ck_assert_int_gt(s->devices[i].last_sent_ms, 9000);
  }
  ck_assert_int_gt(s->last_reading_ms, 9000);
  ck_assert_uint_eq(s->tasks.joined, s->tasks.spawned);
  demo_test_cleanup(&t);
}
END_TEST

/* A health check of a device whose task has ended finds it unreachable
 * instead of waiting on it. */
START_TEST(test_demo_panicked_device_unreachable) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.devices = 2;
  t.cfg.panic_device = 1;
  t.cfg.panic_at_s = 0.5;
  demo_test_run(&t);
  demo_test_invariants(&t);
  ck_assert_uint_eq(t.s.tasks.panicked, 1);
  ck_assert_uint_gt(t.s.health.unreachable, 0);
  demo_test_cleanup(&t);
}
END_TEST

/* Transactions that fail are rolled back and retried until they commit:
 * no batch is dropped, no reading stored twice. */
START_TEST(test_demo_failed_writes_are_retried) {
  demo_test t;
  demo_test_init(&t);
  demo_config_preset(&t.cfg, PRESET_PRESSURE);
  t.cfg.storage_fail_rate = 0.3;
  demo_test_run(&t);
  demo_test_invariants_within(&t, 2000);
  ck_assert_uint_gt(t.s.write_retries, 0);
  ck_assert_uint_eq(t.s.transactions, t.s.batches_stored + t.s.write_retries);
  demo_test_cleanup(&t);
}
END_TEST

/* Two connections write at once and some transactions fail: a later batch
 * then reaches the database while an earlier one waits to retry. Commits
 * still happen in arrival order, or the later batch's seqs would make the
 * high-water marks skip the earlier batch's readings as resends. */
START_TEST(test_demo_concurrent_retried_writes_commit_in_order) {
  demo_test t;
  demo_test_init(&t);
  t.cfg.seed = 2; /* lost 6 readings before commits took turns */
  t.cfg.db_pool = 2;
  t.cfg.batch_interval_ms = 1000;
  t.cfg.storage_delay_ms = 400;
  t.cfg.storage_fail_rate = 0.4;
  demo_test_run(&t);
  demo_test_invariants_within(&t, 2000);
  ck_assert_uint_gt(t.s.write_retries, 0);
  ck_assert_uint_gt(t.s.db_pool_waits, 0);
  demo_test_cleanup(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("demo-faults");
  tg_test_add(s, "slow_client_resyncs", test_demo_slow_client_resyncs, 30);
  tg_test_add(s, "health_timeout_and_dropped", test_demo_health_timeout_and_dropped, 30);
  tg_test_add(s, "panicking_device", test_demo_panicking_device, 30);
  tg_test_add(s, "panicked_device_unreachable", test_demo_panicked_device_unreachable, 30);
  tg_test_add(s, "failed_writes_are_retried", test_demo_failed_writes_are_retried, 30);
  tg_test_add(s, "concurrent_retried_writes_commit_in_order", test_demo_concurrent_retried_writes_commit_in_order, 30);
  return tg_test_main(s);
}
