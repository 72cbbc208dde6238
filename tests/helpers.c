/* helpers.c - see helpers.h. */
#include "helpers.h"

#include <stdlib.h>

void *tg_test_run(int workers, int virtual_clock, tg_task_fn fn, void *arg) {
  tg_runtime_opts opts = {.workers = workers, .clock = virtual_clock ? TG_CLOCK_VIRTUAL : TG_CLOCK_REAL};
  void *result = NULL;
  int r = tg_run(&opts, fn, arg, &result);
  ck_assert_msg(r == 0, "tg_run returned %s", tg_err_name(r));
  tg_runtime_stats st;
  tg_runtime_stats_get(&st);
  ck_assert_uint_eq(st.tasks_alive, 0);
  ck_assert_uint_eq(st.timers_pending, 0);
  ck_assert_uint_eq(st.tasks_aborted_at_exit, 0);
  ck_assert_uint_eq(st.stacks_guarded + st.stacks_unguarded, 0);
  ck_assert_uint_eq(st.stack_slabs, 0);
  ck_assert_uint_eq(st.blocking_in_flight, 0);
  return result;
}

void tg_test_add(Suite *s, const char *name, const TTest *test, double timeout_s) {
  TCase *tc = tcase_create(name);
  tcase_set_timeout(tc, timeout_s);
  tcase_add_test(tc, test);
  suite_add_tcase(s, tc);
}

int tg_test_main(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
