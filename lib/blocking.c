/* blocking.c - blocking calls on libuv's thread pool. */
#include "tg/blocking.h"

#include "internal.h"

typedef struct job {
  uv_work_t req;
  int (*fn)(void *);
  void *arg;
  int result;
  tg_task *task;
  atomic_bool done;
} job;

static void job_work(uv_work_t *req) {
  job *j = req->data;
  j->result = j->fn(j->arg);
}

static void job_after(uv_work_t *req, int status) {
  job *j = req->data;
  if (status != 0) j->result = status;
  atomic_store(&j->done, true);
  tg__blocking_end();
  tg__task_unpark(j->task);
}

int tg_blocking_run(int (*fn)(void *arg), void *arg) {
  tg_task *self = tg_task_current();
  if (!self) return tg__worker_current() ? TG_ENOTASK : fn(arg);
  if (tg__clock_is_virtual()) return fn(arg); /* see tg/blocking.h */
  job j = {.fn = fn, .arg = arg, .task = self};
  j.req.data = &j;
  tg__blocking_begin();
  int r = uv_queue_work(&self->worker->loop, &j.req, job_work, job_after);
  if (r != 0) {
    tg__blocking_end();
    return r;
  }
  /* Not cancellable: j lives on this stack until the pool is done with it. */
  while (!atomic_load(&j.done)) tg__task_park();
  return j.result;
}
