/* joinset.c - tasks joined in completion order.
 *
 * Invariants, under `lock`: each task of the set is on exactly one of
 * `running` and `ended` (FIFO in the order the tasks ended); every task
 * on either list holds a reference on the set (refs), as does the owner
 * until tg_joinset_free, so a task that ends after the owner let go still
 * finds the set. Lock order: set, then task. */
#include "tg/joinset.h"

#include "internal.h"

#include <stdlib.h>

typedef struct task_list {
  tg_task *head, *tail;
  uint64_t len;
} task_list;

struct tg_joinset {
  tg__lock lock;
  task_list running, ended;
  tg__waitlist waiters;
  uint64_t refs;
  bool owner_gone;
  uint64_t spawned, joined, panicked, cancelled;
  char *name;
};

static void list_push(task_list *l, tg_task *t) {
  t->set_next = NULL;
  t->set_prev = l->tail;
  if (l->tail)
    l->tail->set_next = t;
  else
    l->head = t;
  l->tail = t;
  l->len++;
}

static void list_remove(task_list *l, tg_task *t) {
  if (t->set_prev)
    t->set_prev->set_next = t->set_next;
  else
    l->head = t->set_next;
  if (t->set_next)
    t->set_next->set_prev = t->set_prev;
  else
    l->tail = t->set_prev;
  t->set_prev = t->set_next = NULL;
  l->len--;
}

int tg_joinset_new(tg_joinset **out, const char *name) {
  tg_joinset *js = calloc(1, sizeof *js);
  if (!js) return TG_ENOMEM;
  js->name = tg__strdup_or_null(name);
  if (name && !js->name) {
    free(js);
    return TG_ENOMEM;
  }
  js->refs = 1;
  *out = js;
  return 0;
}

/* Drops one reference, under the lock; true when the set must be freed. */
static bool unref_locked(tg_joinset *js) { return --js->refs == 0; }

static void destroy(tg_joinset *js) {
  free(js->name);
  free(js);
}

int tg_joinset_spawn(tg_joinset *js, tg_task_fn fn, void *arg, const tg_spawn_opts *opts, uint64_t *id) {
  tg_task *t;
  int r = tg__task_new(&t, fn, arg, opts);
  if (r != 0) return r;
  t->set = js;
  t->in_set = true;
  tg__lock_acquire(&js->lock);
  list_push(&js->running, t);
  js->refs++;
  js->spawned++;
  tg__lock_release(&js->lock);
  if (id) *id = t->id;
  tg__task_launch(t);
  return 0;
}

void tg__joinset_task_ended(tg_joinset *js, tg_task *t) {
  tg__lock_acquire(&js->lock);
  list_remove(&js->running, t);
  if (t->status == TG_EPANICKED) js->panicked++;
  if (t->status == TG_ECANCELED) js->cancelled++;
  bool gone = false;
  if (js->owner_gone) {
    tg__task_release(t); /* nobody will join it */
    gone = unref_locked(js);
  } else {
    list_push(&js->ended, t);
    tg__waitlist_wake_one(&js->waiters, TG_EAGAIN);
  }
  tg__lock_release(&js->lock);
  if (gone) destroy(js);
}

/* Takes the first ended task's outcome. Lock held. */
static int take_locked(tg_joinset *js, tg_outcome *out) {
  tg_task *t = js->ended.head;
  if (!t) return js->running.len ? TG_EAGAIN : TG_EEMPTY;
  list_remove(&js->ended, t);
  js->refs--; /* never the last: the owner holds one */
  js->joined++;
  if (out) tg__task_outcome(t, out);
  tg__task_release(t);
  return 0;
}

static int join_try(tg_case *c) {
  tg_joinset *js = c->obj;
  tg__lock_acquire(&js->lock);
  int r = take_locked(js, c->buf);
  tg__lock_release(&js->lock);
  return r;
}

static bool join_arm(tg_case *c, tg__waiter *w) {
  tg_joinset *js = c->obj;
  tg__lock_acquire(&js->lock);
  bool decided = js->ended.head || !js->running.len;
  if (decided) {
    if (tg__waiter_claim(w)) w->result = take_locked(js, c->buf);
  } else {
    tg__waitlist_push(&js->waiters, w);
  }
  tg__lock_release(&js->lock);
  return decided;
}

static void join_disarm(tg_case *c, tg__waiter *w) {
  tg_joinset *js = c->obj;
  tg__lock_acquire(&js->lock);
  tg__waitlist_remove(&js->waiters, w);
  tg__lock_release(&js->lock);
}

static const tg__op join_op = {join_try, join_arm, join_disarm, tg__finish_retry};

/* The wait of join_next, with its operation's functions called directly;
 * out of line, so that the inline first attempt stays small. */
static __attribute__((noinline)) int join_wait(tg_joinset *js, tg_outcome *out, int64_t deadline_ns) {
  return tg__wait_single(&join_op, js, out, 0, deadline_ns, true);
}

int tg_joinset_join_next_dl(tg_joinset *js, tg_outcome *out, int64_t deadline_ns) {
  /* The first attempt inline, as tg__wait_one would make it: a task that
   * ended already is taken without the wait machinery. */
  if (tg__self_cancelled()) return TG_ECANCELED;
  tg__lock_acquire(&js->lock);
  int r = take_locked(js, out);
  tg__lock_release(&js->lock);
  if (r != TG_EAGAIN) return r;
  return join_wait(js, out, deadline_ns);
}

int tg_joinset_join_next(tg_joinset *js, tg_outcome *out) { return tg_joinset_join_next_dl(js, out, TG_FOREVER); }

int tg_joinset_try_join_next(tg_joinset *js, tg_outcome *out) {
  tg_case c = {.obj = js, .buf = out};
  return join_try(&c);
}

tg_case tg_joinset_join_next_case(tg_joinset *js, tg_outcome *out) {
  return (tg_case){.op = &join_op, .obj = js, .buf = out};
}

void tg_joinset_abort_all(tg_joinset *js) {
  tg__lock_acquire(&js->lock);
  for (tg_task *t = js->running.head; t; t = t->set_next) tg_task_abort(t);
  tg__lock_release(&js->lock);
}

void tg_joinset_free(tg_joinset *js) {
  if (!js) return;
  tg__lock_acquire(&js->lock);
  js->owner_gone = true;
  for (tg_task *t = js->running.head; t; t = t->set_next) tg_task_abort(t);
  while (js->ended.head) {
    tg_task *t = js->ended.head;
    list_remove(&js->ended, t);
    js->refs--;
    tg__task_release(t);
  }
  bool gone = unref_locked(js);
  tg__lock_release(&js->lock);
  if (gone) destroy(js);
}

size_t tg_joinset_len(tg_joinset *js) {
  tg__lock_acquire(&js->lock);
  size_t len = js->running.len + js->ended.len;
  tg__lock_release(&js->lock);
  return len;
}

void tg_joinset_stats_get(tg_joinset *js, tg_joinset_stats *out) {
  tg__lock_acquire(&js->lock);
  *out = (tg_joinset_stats){
      .name = js->name,
      .running = js->running.len,
      .ended_unjoined = js->ended.len,
      .spawned = js->spawned,
      .joined = js->joined,
      .panicked = js->panicked,
      .cancelled = js->cancelled,
  };
  tg__lock_release(&js->lock);
}
