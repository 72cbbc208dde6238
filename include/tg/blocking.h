/* tg/blocking.h - running blocking calls off the workers.
 *
 * tg_blocking_run(fn, arg) runs fn(arg) on libuv's thread pool
 * (UV_THREADPOOL_SIZE threads, 4 by default) while the calling task waits,
 * so a database or file call never blocks a worker. The wait cannot be
 * cancelled: fn runs to its end and its result is returned, as with
 * tokio's spawn_blocking. Called from a plain thread, fn simply runs on
 * that thread. Under the virtual clock fn runs on the worker itself: no
 * virtual time passes during it anyway, and finishing at a real moment
 * would make the order of events, and so the run, differ between runs.
 */
#ifndef TG_BLOCKING_H
#define TG_BLOCKING_H

/* Returns fn's result, or TG_ENOTASK when called on a worker's loop
 * outside a task, or a negative errno if the job could not be queued. */
int tg_blocking_run(int (*fn)(void *arg), void *arg);

#endif
