/* test-migrate.c - tasks that move between workers through every
 * primitive: a task woken by a task runs next on the waker's worker, so a
 * chain of unpinned tasks driven in turns from two pinned tasks, one per
 * worker, moves to the other thread every round. After each wait each
 * task checks that it still sees itself (the runtime's thread-local read
 * on the thread it resumed on, not a stale one) and yields; pinned tasks
 * must never change thread. Run under TSan, this is the check that a task
 * resumed on another thread touches nothing of the old one's.
 *
 * The thread is told by gettid, a system call: pthread_self is declared
 * const, and the compiler keeps its value across the waits - the very
 * caching this test is about. */
#include "helpers.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define ROUNDS 300
#else
#define ROUNDS 3000
#endif

/* How one link of the chain passes a round number on. */
typedef enum kind {
  K_MPSC,
  K_NOTIFY,
  K_SEMAPHORE,
  K_WATCH,
  K_BROADCAST,
  K_ONESHOT,
  K_CANCEL,
  K_SELECT,
  K_TIMED,
  K_JOINSET,
  K_BLOCKING,
  K_SLEEP,
  KINDS
} kind;

typedef struct hop {
  kind kind;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  tg_notify *notify, *never;
  tg_semaphore *sem;
  tg_watch_tx *wtx;
  tg_watch_rx *wrx;
  tg_broadcast_tx *btx;
  tg_broadcast_rx *brx;
  tg_oneshot_tx *otx[ROUNDS];
  tg_oneshot_rx *orx[ROUNDS];
  tg_cancel *tokens[ROUNDS];
  tg_joinset *js;
} hop;

static void *return_arg(void *arg) { return arg; }

static int nothing(void *arg) {
  (void)arg;
  return 0;
}

static hop *link_new(kind k) {
  hop *l = calloc(1, sizeof *l);
  ck_assert_ptr_nonnull(l);
  l->kind = k;
  tg_mpsc_opts mo = {.capacity = 4, .elem_size = sizeof(int)};
  switch (k) {
  case K_NOTIFY: ck_assert_int_eq(tg_notify_new(&l->notify, NULL), 0); break;
  case K_SEMAPHORE: ck_assert_int_eq(tg_semaphore_new(&l->sem, 0, NULL), 0); break;
  case K_WATCH: {
    int initial = -1;
    ck_assert_int_eq(tg_watch_new(&(tg_watch_opts){.elem_size = sizeof(int)}, &initial, &l->wtx, &l->wrx), 0);
    break;
  }
  case K_BROADCAST:
    ck_assert_int_eq(tg_broadcast_new(&(tg_broadcast_opts){.capacity = 4, .elem_size = sizeof(int)}, &l->btx, &l->brx),
                     0);
    break;
  case K_ONESHOT:
    for (int r = 0; r < ROUNDS; r++) ck_assert_int_eq(tg_oneshot_new(sizeof(int), &l->otx[r], &l->orx[r]), 0);
    break;
  case K_CANCEL:
    for (int r = 0; r < ROUNDS; r++) ck_assert_int_eq(tg_cancel_new(&l->tokens[r], NULL), 0);
    break;
  case K_JOINSET: /* the notify says that the set has the round's task */
    ck_assert_int_eq(tg_joinset_new(&l->js, NULL), 0);
    ck_assert_int_eq(tg_notify_new(&l->notify, NULL), 0);
    break;
  case K_SELECT: ck_assert_int_eq(tg_notify_new(&l->never, NULL), 0); /* fall through */
  default: ck_assert_int_eq(tg_mpsc_new(&mo, &l->tx, &l->rx), 0); break;
  }
  return l;
}

static void link_free(hop *l) {
  if (l->tx) tg_mpsc_tx_drop(l->tx);
  if (l->rx) tg_mpsc_rx_drop(l->rx);
  tg_notify_free(l->notify);
  tg_notify_free(l->never);
  tg_semaphore_free(l->sem);
  if (l->wtx) tg_watch_tx_drop(l->wtx);
  if (l->wrx) tg_watch_rx_drop(l->wrx);
  if (l->btx) tg_broadcast_tx_drop(l->btx);
  if (l->brx) tg_broadcast_rx_drop(l->brx);
  for (int r = 0; r < ROUNDS; r++) {
    if (l->orx[r]) tg_oneshot_rx_drop(l->orx[r]);
    if (l->tokens[r]) tg_cancel_free(l->tokens[r]);
  }
  if (l->js) tg_joinset_free(l->js);
  free(l);
}

/* Hands round r on; 0 or the failing call's error. */
static int pass(hop *l, int r) {
  switch (l->kind) {
  case K_NOTIFY: tg_notify_one(l->notify); return 0;
  case K_SEMAPHORE: tg_semaphore_add_permits(l->sem, 1); return 0;
  case K_WATCH: return tg_watch_send(l->wtx, &r);
  case K_BROADCAST: return tg_broadcast_send(l->btx, &r, NULL);
  case K_ONESHOT: return tg_oneshot_send(l->otx[r], &r);
  case K_CANCEL: tg_cancel_fire(l->tokens[r]); return 0;
  case K_JOINSET: {
    int e = tg_joinset_spawn(l->js, return_arg, (void *)(intptr_t)r, NULL, NULL);
    if (e == 0) tg_notify_one(l->notify);
    return e;
  }
  default: return tg_mpsc_send(l->tx, &r);
  }
}

/* Waits for round r; 0, or an error or a wrong value as -1000 - got. */
static int await(hop *l, int r) {
  int v = r, e = 0;
  switch (l->kind) {
  case K_NOTIFY: e = tg_notify_wait(l->notify); break;
  case K_SEMAPHORE: e = tg_semaphore_acquire(l->sem, 1); break; /* returned at the task's end */
  case K_WATCH:
    e = tg_watch_changed(l->wrx);
    tg_watch_get_and_update(l->wrx, &v);
    break;
  case K_BROADCAST: e = tg_broadcast_recv(l->brx, &v); break;
  case K_ONESHOT: e = tg_oneshot_recv(l->orx[r], &v); break;
  case K_CANCEL: e = tg_cancel_wait(l->tokens[r]); break;
  case K_SELECT: {
    tg_case cs[] = {tg_notify_wait_case(l->never), tg_mpsc_recv_case(l->rx, &v)};
    e = tg_select(cs, 2, TG_FOREVER);
    e = e == 1 ? cs[1].result : e < 0 ? e : -999;
    break;
  }
  case K_TIMED: e = tg_mpsc_recv_dl(l->rx, &v, tg_deadline_in(TG_SEC(60))); break;
  case K_JOINSET: {
    tg_outcome o = {0};
    e = tg_notify_wait(l->notify);
    if (e == 0) e = tg_joinset_join_next(l->js, &o);
    v = (int)(intptr_t)o.value;
    break;
  }
  case K_BLOCKING:
    e = tg_mpsc_recv(l->rx, &v);
    if (e == 0) e = tg_blocking_run(nothing, NULL);
    break;
  case K_SLEEP:
    e = tg_mpsc_recv(l->rx, &v);
    if (e == 0) e = tg_sleep(1000);
    break;
  default: e = tg_mpsc_recv(l->rx, &v); break;
  }
  if (e != 0) return e;
  return v == r ? 0 : -1000 - v;
}

typedef struct member {
  hop *in, *out;
  int errors; /* wrong values, failed calls, a wrong self after a wait */
  int moves;  /* rounds resumed on another thread than the last */
  int first_error;
} member;

/* After a wait: the task must still see itself, whichever thread it is
 * on now, and a yield (which may move it too) must not change that. */
static long thread_id(void) { return syscall(SYS_gettid); }

static void check_self(member *m, tg_task *me, uint64_t id, long *last) {
  for (int i = 0; i < 2; i++) {
    if (tg_task_current() != me || tg_task_current_id() != id) m->errors++;
    long now = thread_id();
    if (now != *last) m->moves++;
    *last = now;
    if (i == 0 && tg_yield() != 0) m->errors++;
  }
}

static void note(member *m, int r) {
  if (r != 0 && !m->errors++) m->first_error = r;
}

static void *chain_member(void *arg) {
  member *m = arg;
  tg_task *me = tg_task_current();
  uint64_t id = tg_task_current_id();
  long last = thread_id();
  for (int r = 0; r < ROUNDS; r++) {
    note(m, await(m->in, r));
    check_self(m, me, id, &last);
    note(m, pass(m->out, r));
  }
  return NULL;
}

/* The two drivers take turns: driver d starts rounds d, d+2, ... into the
 * chain, waits for the round to come back on its own link and gives the
 * turn to the other. */
typedef struct driver {
  int parity;
  hop *chain_in, *back;
  tg_mpsc_tx *turn_out;
  tg_mpsc_rx *turn_in;
  member stats;
} driver;

static void *drive(void *arg) {
  driver *d = arg;
  long home = thread_id();
  for (int r = d->parity; r < ROUNDS; r += 2) {
    int turn;
    if (r > 0) note(&d->stats, tg_mpsc_recv(d->turn_in, &turn));
    note(&d->stats, pass(d->chain_in, r));
    note(&d->stats, await(d->back, r));
    if (thread_id() != home) d->stats.moves++;
    note(&d->stats, tg_mpsc_send(d->turn_out, &r));
  }
  return NULL;
}

static void *migrate_body(void *arg) {
  (void)arg;
  hop *links[KINDS];
  for (int k = 0; k < KINDS; k++) links[k] = link_new((kind)k);
  /* member k waits on links[k] and passes to links[k + 1]; the last one
   * passes to last_out, and main routes round r back to driver r % 2 */
  hop *back[2] = {link_new(K_MPSC), link_new(K_MPSC)};
  member members[KINDS];
  tg_task *ts[KINDS];
  tg_mpsc_opts mo = {.capacity = 1, .elem_size = sizeof(int)};
  tg_mpsc_tx *t01, *t10;
  tg_mpsc_rx *r01, *r10;
  ck_assert_int_eq(tg_mpsc_new(&mo, &t01, &r01), 0);
  ck_assert_int_eq(tg_mpsc_new(&mo, &t10, &r10), 0);
  driver d[2] = {{0, links[0], back[0], t01, r10, {0}}, {1, links[0], back[1], t10, r01, {0}}};
  hop *last_out = link_new(K_MPSC);
  for (int k = 0; k < KINDS; k++) {
    members[k] = (member){.in = links[k], .out = k + 1 < KINDS ? links[k + 1] : last_out};
    ck_assert_int_eq(tg_spawn(&ts[k], chain_member, &members[k], NULL), 0);
  }
  tg_task *dt[2];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(tg_spawn(&dt[i], drive, &d[i], &(tg_spawn_opts){.pin = 1, .worker = i}), 0);
  /* the router: round r goes back to driver r % 2 (pinned to worker 0,
   * so it also wakes chain members from a third place) */
  for (int r = 0; r < ROUNDS; r++) {
    int v;
    ck_assert_int_eq(tg_mpsc_recv(last_out->rx, &v), 0);
    ck_assert_int_eq(v, r);
    ck_assert_int_eq(pass(back[r % 2], r), 0);
  }
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(tg_task_join(dt[i], NULL), 0);
    ck_assert_msg(d[i].stats.errors == 0, "driver %d: %d errors, first %d", i, d[i].stats.errors,
                  d[i].stats.first_error);
    ck_assert_int_eq(d[i].stats.moves, 0); /* pinned: never moved */
  }
  for (int k = 0; k < KINDS; k++) {
    tg_outcome o;
    ck_assert_int_eq(tg_task_join(ts[k], &o), 0);
    ck_assert_int_eq(o.status, 0);
    ck_assert_msg(members[k].errors == 0, "member %d: %d errors, first %d", k, members[k].errors,
                  members[k].first_error);
  }
  /* the first member is woken by the two drivers in turn, one per worker:
   * it runs on the other thread every round */
  ck_assert_int_ge(members[0].moves, ROUNDS / 2);
  for (int k = 0; k < KINDS; k++) link_free(links[k]);
  link_free(back[0]);
  link_free(back[1]);
  link_free(last_out);
  tg_mpsc_tx_drop(t01);
  tg_mpsc_tx_drop(t10);
  tg_mpsc_rx_drop(r01);
  tg_mpsc_rx_drop(r10);
  return NULL;
}

START_TEST(test_migrate_through_every_primitive) { tg_test_run(2, 0, migrate_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("migrate");
  tg_test_add(s, "through_every_primitive", test_migrate_through_every_primitive, 120);
  return tg_test_main(s);
}
