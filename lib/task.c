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
  if (t->extra && t->extra->panic_message)
    snprintf(out->message, sizeof out->message, "%s", t->extra->panic_message);
}

void tg__task_release(tg_task *t) {
  tg__lock_acquire(&t->lock);
  int refs = --t->refs;
  tg__lock_release(&t->lock);
  if (refs > 0) return;
  if (t->extra) {
    free(t->extra->panic_message);
    free(t->extra->held);
    free(t->extra->name);
    free(t->extra);
  }
  free(t);
}

tg__task_extra *tg__task_extra_get(tg_task *t) {
  if (!t->extra) t->extra = calloc(1, sizeof *t->extra);
  return t->extra;
}

/* ------------------------------------------------------------ the end */

static void run_defers(tg__task_extra *x) {
  while (x->defers) {
    tg__defer *d = x->defers;
    x->defers = d->next;
    d->fn(d->arg);
    free(d);
  }
}

static void return_held_permits(tg__task_extra *x) {
  for (size_t i = 0; i < x->held_len; i++)
    if (x->held[i].n) tg__semaphore_return_permits(x->held[i].sem, x->held[i].n);
  x->held_len = 0;
}

_Noreturn void tg__task_exit(tg_task *t, void *value) {
  t->value = value;
  if (t->extra) {
    run_defers(t->extra);
    return_held_permits(t->extra);
  }
  if (t->status == 0 && atomic_load(&t->cancelled)) t->status = TG_ECANCELED;
  t->worker->switch_reason = TG__SWITCH_END;
  tg__switch_to_scheduler(t, true);
  abort(); /* an ended task is never resumed */
}

void tg__task_finish(tg_task *t) {
  tg__lock_acquire(&t->lock);
  t->ended = true;
  while (t->joiners) { /* normally one: a handle is joined once */
    tg__waiter *w = t->joiners;
    t->joiners = w->next;
    w->next = NULL;
    w->linked = false;
    if (tg__waiter_claim(w)) {
      w->result = 0;
      tg__wait_wake(w->wait);
    }
  }
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
  tg__task_extra *x = tg__task_extra_get(t);
  if (x) x->panic_message = strdup(buf); /* out of memory: no message */
  tg__task_exit(t, NULL);
}

int tg_defer(void (*fn)(void *), void *arg) {
  tg_task *t = tg__self();
  if (!t) return TG_ENOTASK;
  tg__task_extra *x = tg__task_extra_get(t);
  tg__defer *d = x ? malloc(sizeof *d) : NULL;
  if (!d) return TG_ENOMEM;
  *d = (tg__defer){.next = x->defers, .fn = fn, .arg = arg};
  x->defers = d;
  return 0;
}

/* ------------------------------------------------------------ join */

/* Waiting for a task's end is a wait on its joiners list, a LIFO chain
 * (one joiner is the rule; the order among several does not matter). */
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
    w->prev = NULL;
    w->next = t->joiners;
    w->linked = true;
    t->joiners = w;
  }
  tg__lock_release(&t->lock);
  return ended;
}

static void join_disarm(tg_case *c, tg__waiter *w) {
  tg_task *t = c->obj;
  tg__lock_acquire(&t->lock);
  if (w->linked) {
    tg__waiter **p = &t->joiners;
    while (*p != w) p = &(*p)->next;
    *p = w->next;
    w->next = NULL;
    w->linked = false;
  }
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

static tg__held_permits *held_entry(tg__task_extra *x, struct tg_semaphore *sem) {
  for (size_t i = 0; i < x->held_len; i++)
    if (x->held[i].sem == sem) return &x->held[i];
  return NULL;
}

int tg__task_hold_permits(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  if (!t) return 0; /* plain threads release by hand */
  tg__task_extra *x = tg__task_extra_get(t);
  if (!x) return TG_ENOMEM;
  tg__held_permits *e = held_entry(x, sem);
  if (!e) {
    if (x->held_len == x->held_cap) {
      size_t cap = x->held_cap ? x->held_cap * 2 : 4;
      tg__held_permits *held = realloc(x->held, cap * sizeof *held);
      if (!held) return TG_ENOMEM;
      x->held = held;
      x->held_cap = cap;
    }
    e = &x->held[x->held_len++];
    *e = (tg__held_permits){.sem = sem};
  }
  e->n += n;
  return 0;
}

int tg__task_drop_permits(struct tg_semaphore *sem, uint64_t n) {
  tg_task *t = tg__self();
  if (!t) return 0;
  tg__held_permits *e = t->extra ? held_entry(t->extra, sem) : NULL;
  if (!e || e->n < n) return TG_ENOPERM;
  e->n -= n;
  if (e->n == 0) {
    tg__held_permits *last = &t->extra->held[--t->extra->held_len];
    if (e != last) *e = *last; /* no self-copy: a store-forwarding stall */
  }
  return 0;
}
