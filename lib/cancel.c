/* cancel.c - the latched cancellation token and its tree of children.
 *
 * Invariants: `fired` goes from false to true once, under the token's
 * lock and in the same critical section that wakes its waiters, so a wait
 * armed under that lock is either decided at once or woken. A fired
 * token's linked descendants are all fired: a fire walks the whole
 * subtree, and a child of a fired token is born fired and never linked.
 *
 * The tree's links (parent, children, siblings) of every token are guarded
 * by one process-wide `tree_lock`, taken before any token's lock. With a
 * lock per token, freeing a child must lock its parent while the parent's
 * fire or free locks the child: the orders cross, and the parent may be
 * freed in between. Creating, freeing and firing tokens are rare next to
 * waits and checks, which never touch tree_lock. */
#include "tg/cancel.h"

#include "internal.h"

#include <stdlib.h>

struct tg_cancel {
  tg__lock lock; /* guards waiters; fired is set under it */
  atomic_bool fired;
  tg__waitlist waiters;
  struct tg_cancel *parent; /* NULL for a root or once detached */
  struct tg_cancel *first_child, *prev_sibling, *next_sibling;
  char *name;
};

static tg__lock tree_lock;

int tg_cancel_new(tg_cancel **out, const char *name) {
  tg_cancel *c = calloc(1, sizeof *c);
  if (!c) return TG_ENOMEM;
  c->name = tg__strdup_or_null(name);
  if (name && !c->name) {
    free(c);
    return TG_ENOMEM;
  }
  *out = c;
  return 0;
}

/* ------------------------------------------------------------ the tree */

/* tree_lock held. */
static void link_child(tg_cancel *parent, tg_cancel *child) {
  child->parent = parent;
  child->next_sibling = parent->first_child;
  if (parent->first_child) parent->first_child->prev_sibling = child;
  parent->first_child = child;
}

/* tree_lock held. */
static void unlink_from_parent(tg_cancel *c) {
  if (!c->parent) return;
  if (c->prev_sibling)
    c->prev_sibling->next_sibling = c->next_sibling;
  else
    c->parent->first_child = c->next_sibling;
  if (c->next_sibling) c->next_sibling->prev_sibling = c->prev_sibling;
  c->parent = c->prev_sibling = c->next_sibling = NULL;
}

int tg_cancel_child(tg_cancel *parent, tg_cancel **out) {
  tg_cancel *child;
  int r = tg_cancel_new(&child, NULL);
  if (r != 0) return r;
  /* Under tree_lock a fire of the parent is either over (the child is born
   * fired) or not begun (its walk will find the child). */
  tg__lock_acquire(&tree_lock);
  if (tg_cancel_fired(parent))
    atomic_store_explicit(&child->fired, true, memory_order_release);
  else
    link_child(parent, child);
  tg__lock_release(&tree_lock);
  *out = child;
  return 0;
}

void tg_cancel_free(tg_cancel *c) {
  if (!c) return;
  tg__lock_acquire(&tree_lock);
  unlink_from_parent(c);
  while (c->first_child) unlink_from_parent(c->first_child); /* they live on as roots */
  tg__lock_release(&tree_lock);
  free(c->name);
  free(c);
}

/* ------------------------------------------------------------ firing */

static void fire_one(tg_cancel *c) {
  tg__lock_acquire(&c->lock);
  atomic_store_explicit(&c->fired, true, memory_order_release);
  tg__waitlist_wake_all(&c->waiters, 0);
  tg__lock_release(&c->lock);
}

/* The token after c in a pre-order walk of root's subtree, or NULL. A
 * loop, not recursion: a deep chain of children must not overflow a
 * small task stack. tree_lock held. */
static tg_cancel *walk_next(const tg_cancel *root, tg_cancel *c) {
  if (c->first_child) return c->first_child;
  for (; c != root; c = c->parent)
    if (c->next_sibling) return c->next_sibling;
  return NULL;
}

void tg_cancel_fire(tg_cancel *c) {
  if (tg_cancel_fired(c)) return; /* once and for ever */
  tg__lock_acquire(&tree_lock);
  for (tg_cancel *t = c; t; t = walk_next(c, t)) fire_one(t);
  tg__lock_release(&tree_lock);
}

int tg_cancel_fired(const tg_cancel *c) { return atomic_load_explicit(&c->fired, memory_order_acquire); }

/* ------------------------------------------------------------ wait */

static int wait_try(tg_case *c) { return tg_cancel_fired(c->obj) ? 0 : TG_EAGAIN; }

static bool wait_arm(tg_case *c, tg__waiter *w) {
  tg_cancel *tok = c->obj;
  tg__lock_acquire(&tok->lock);
  bool decided = atomic_load_explicit(&tok->fired, memory_order_relaxed);
  if (decided) {
    if (tg__waiter_claim(w)) w->result = 0;
  } else {
    tg__waitlist_push(&tok->waiters, w);
  }
  tg__lock_release(&tok->lock);
  return decided;
}

static void wait_disarm(tg_case *c, tg__waiter *w) {
  tg_cancel *tok = c->obj;
  tg__lock_acquire(&tok->lock);
  tg__waitlist_remove(&tok->waiters, w);
  tg__lock_release(&tok->lock);
}

/* Nothing is consumed: every wait on a fired token completes. */
static const tg__op wait_op = {wait_try, wait_arm, wait_disarm, tg__finish_stored};

int tg_cancel_wait_dl(tg_cancel *c, int64_t deadline_ns) { return tg__wait_one(&wait_op, c, NULL, 0, deadline_ns); }

int tg_cancel_wait(tg_cancel *c) { return tg_cancel_wait_dl(c, TG_FOREVER); }

tg_case tg_cancel_case(tg_cancel *c) { return (tg_case){.op = &wait_op, .obj = c}; }

void tg_cancel_stats_get(tg_cancel *c, tg_cancel_stats *out) {
  tg__lock_acquire(&c->lock);
  *out = (tg_cancel_stats){
      .name = c->name,
      .fired = atomic_load_explicit(&c->fired, memory_order_relaxed),
      .waiters = c->waiters.len,
  };
  tg__lock_release(&c->lock);
}
