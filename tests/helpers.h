/* helpers.h - running a test body as the main task of a fresh runtime and
 * checking that the runtime closed clean. */
#ifndef TG_TEST_HELPERS_H
#define TG_TEST_HELPERS_H

#include "tg/tg.h"

#include <check.h>

/* Runs fn(arg) as main on `workers` workers (virtual clock when virtual_
 * clock is nonzero, which needs workers == 1), asserts that it returned
 * normally and that no task, timer or stack was left behind; returns
 * main's value. */
void *tg_test_run(int workers, int virtual_clock, tg_task_fn fn, void *arg);

/* The same with one worker and the virtual clock: the usual case. */
#define tg_test_run_virtual(fn, arg) tg_test_run(1, 1, (fn), (arg))

/* Adds a test case with its own timeout in seconds. */
void tg_test_add(Suite *s, const char *name, const TTest *test, double timeout_s);

/* Runs the suite (each test forked) and returns the process exit status. */
int tg_test_main(Suite *s);

#endif
