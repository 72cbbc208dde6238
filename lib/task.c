/* task.c - a task's life after spawn: join, detach, abort, panic, defer,
 * and what its end releases. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *tg__strdup_or_null(const char *name) { return name ? strdup(name) : NULL; }

uint64_t tg_task_id(const tg_task *t) { return t->id; }

uint64_t tg_task_current_id(void) {
  tg_task *t = tg__self();
  return t ? t->id : 0;
}

int tg_task_cancelled(void) {
  tg_task *t = tg__self();
  return t && atomic_load_explicit(&t->cancelled, memory_order_relaxed);
}

void tg__task_outcome(const tg_task *t, tg_outcome *out) {
  out->task_id = t->id;
  out->status = t->status;
  out->value = t->value;
  out->message[0] = '\0'; /* most tasks did not panic: no formatting on the join path */
  if (t->panic_message) snprintf(out->message, sizeof out->message, "%s", t->panic_message);
}

void tg__task_release(tg_task *t) {
  tg__lock_acquire(&t->lock);
  int refs = --t->refs;
  tg__lock_release(&t->lock);
  if (refs > 0) return;
  free(t->panic_message);
  free(t->held);
  free(t->name);
  free(t);
}

/* ------------------------------------------------------------ the end */

static void run_defers(tg_task *t) {
  while (t->defers) {
    tg__defer *d = t->defers;
    t->defers = d->next;
    d->fn(d->arg);
    free(d);
  }
}

static void return_held_permits(tg_task *t) {
  for (size_t i = 0; i < t->held_len; i++)
    if (t->held[i].n) tg__semaphore_return_permits(t->held[i].sem, t->held[i].n);
  t->held_len = 0;
}

_Noreturn void tg__task_exit(tg_task *t, void *value) {
  t->value = value;
  run_defers(t);
  return_held_permits(t);
  if (t->status == 0 && atomic_load(&t->cancelled)) t->status = TG_ECANCELED;
  t->worker->switch_reason = TG__SWITCH_END;
  tg__switch_to_scheduler(t, true);
  abort(); /* an ended task is never resumed */
}

void tg__task_finish(tg_task *t) {
  tg__lock_acquire(&t->lock);
  t->ended = true;
  tg__waitlist_wake_all(&t->joiners, 0);
  struct tg_joinset *set = t->set;
  tg__lock_release(&t->lock);
  if (set) tg__joinset_task_ended(set, t);
  tg__task_release(t);
}

_Noreturn void tg_panic(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  tg_task *t = tg__self();
  if (!t) {
    fprintf(stderr, "libtg: panic outside a task: %s\n", buf);
    abort();
  }
  t->status = TG_EPANICKED;
  t->panic_message = strdup(buf);
  tg__task_exit(t, NULL);
}

int tg_defer(void (*fn)(void *), void *arg) {
  tg_task *t = tg__self();
  if (!t) return TG_ENOTASK;
  tg__defer *d = malloc(sizeof *d);
  if (!d) return TG_ENOMEM;
  *d = (tg__defer){.next = t->defers, .fn = fn, .arg = arg};
  t->defers = d;
  return 0;
}

/* ------------------------------------------------------------ join */

/* Waiting for a task's end is a wait on its joiners list. */
static int join_try(tg_case *c) {
  tg_task *t = c->obj;
  tg__lock_acquire(&t->lock);
  bool ended = t->ended;
  tg__lock_release(&t->lock);
  return ended ? 0 : TG_EAGAIN;
}

static bool join_arm(tg_case *c, tg__waiter *w) {
  tg_task *t = c->obj;
  tg__lock_acquire(&t->lock);
  bool ended = t->ended;
  if (ended) {
    if (tg__waiter_claim(w)) w->result = 0;
  } else {
    tg__waitlist_push(&t->joiners, w);
  }
  tg__lock_release(&t->lock);
  return ended;
}

static void join_disarm(tg_case *c, tg__waiter *w) {
  tg_task *t = c->obj;
  tg__lock_acquire(&t->lock);
  tg__waitlist_remove(&t->joiners, w);
  tg__lock_release(&t->lock);
}

static const tg__op join_op = {join_try, join_arm, join_disarm, tg__finish_stored};

int tg_task_join_dl(tg_task *t, tg_outcome *out, int64_t deadline_ns) {
  int r = tg__wait_one(&join_op, t, NULL, 0, deadline_ns);
  if (r != 0) return r;
  if (out) tg__task_outcome(t, out);
  tg__task_release(t);
  return 0;
}

int tg_task_join(tg_task *t, tg_outcome *out) { return tg_task_join_dl(t, out, TG_FOREVER); }

void tg_task_detach(tg_task *t) { tg__task_release(t); }

void tg_task_abort(tg_task *t) {
  tg__lock_acquire(&t->lock);
  if (!t->ended && !atomic_exchange(&t->cancelled, true) && t->cur_wait) {
    int pending = TG__PENDING;
    if (atomic_compare_exchange_strong(&t->cur_wait->winner, &pending, TG__WON_BY_ABORT))
      tg__wait_wake(t->cur_wait);
  }
  tg__lock_release(&t->lock);
}

/* ------------------------------------------------------------ permits */

static tg__held_permits *held_entry(tg_task *t, struct tg_semaphore *sem) {
  for (size_t i = 0; i < t->held_len; i++)
    if (t->held[i].sem == sem) return &t->held[i];
  return NULL;
}

int tg__task_hold_permits(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  if (!t) return 0; /* plain threads release by hand */
  tg__held_permits *e = held_entry(t, sem);
  if (!e) {
    if (t->held_len == t->held_cap) {
      size_t cap = t->held_cap ? t->held_cap * 2 : 4;
      tg__held_permits *held = realloc(t->held, cap * sizeof *held);
      if (!held) return TG_ENOMEM;
      t->held = held;
      t->held_cap = cap;
    }
    e = &t->held[t->held_len++];
    *e = (tg__held_permits){.sem = sem};
  }
  e->n += n;
  return 0;
}

int tg__task_drop_permits(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  if (!t) return 0;
  tg__held_permits *e = held_entry(t, sem);
  if (!e || e->n < n) return TG_ENOPERM;
  e->n -= n;
  if (e->n == 0) {
    tg__held_permits *last = &t->held[--t->held_len];
    if (e != last) *e = *last;
  }
  return 0;
}
