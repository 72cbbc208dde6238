/* tg-microbench.c - the bare costs under the workloads: a context switch,
 * a spawn and join, an uncontended mpsc send+recv pair, a wake across
 * workers. Each figure is the median of 5 runs, in ns per operation.
 *
 *   tg-microbench [--scale F] [--only NAME] */
#include "tg/tg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Boost.Context's fcontext C ABI, declared by hand as lib/context.h does,
 * and on x86-64 libtg's own switch (lib/context.c: the same frame, without
 * the floating-point control state, resumed by `ret`): the raw switch,
 * without libtg's scheduler around it. The two contexts here switch from
 * two different call sites, so libtg's `ret` mispredicts every time; in
 * the scheduler tasks switch from one call site and it does not (see
 * yield_switch_ns). */
typedef void *fcontext_t;
typedef struct {
  fcontext_t fctx;
  void *data;
} transfer_t;
extern transfer_t jump_fcontext(fcontext_t const to, void *vp);
extern fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));
#if defined(__x86_64__) && defined(__ELF__)
#define TG_OWN_CONTEXT 1
extern transfer_t tg__context_jump(fcontext_t const to, void *data);
extern fcontext_t tg__context_make(void *sp, size_t size, void (*fn)(transfer_t));
#endif

enum { REPS = 5 };

static double scale = 1.0;

static uint64_t scaled(uint64_t base) {
  double v = (double)base * scale + 0.5;
  return v < 1.0 ? 1 : (uint64_t)v;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void check(int r, const char *what) {
  if (r != 0) {
    fprintf(stderr, "tg-microbench: %s: %s\n", what, tg_strerror(r));
    exit(1);
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Runs fn REPS times on a fresh runtime of `workers` and returns the
 * median of the ns per operation it reports. */
typedef double (*bench_fn)(void);

static void *bench_main(void *arg) {
  double *out = arg;
  bench_fn fn = *(bench_fn *)(out + 1);
  out[0] = fn();
  return NULL;
}

static double median_run(bench_fn fn, int workers) {
  double ns[REPS];
  for (int i = 0; i < REPS; i++) {
    struct {
      double result;
      bench_fn fn;
    } call = {0, fn};
    _Static_assert(sizeof(bench_fn) <= sizeof(double), "fn fits after the result");
    check(tg_run(&(tg_runtime_opts){.workers = workers}, bench_main, &call, NULL), "tg_run");
    ns[i] = call.result;
  }
  qsort(ns, REPS, sizeof ns[0], cmp_double);
  return ns[REPS / 2];
}

/* ------------------------------------------------------------ raw switch */

typedef transfer_t (*jump_fn)(fcontext_t const to, void *vp);
typedef fcontext_t (*make_fn)(void *sp, size_t size, void (*fn)(transfer_t));

static fcontext_t raw_main;
static jump_fn raw_jump;

static void raw_entry(transfer_t t) {
  raw_main = t.fctx;
  for (;;) raw_main = raw_jump(raw_main, NULL).fctx;
}

static double raw_switch_with(make_fn make, jump_fn jump) {
  enum { SIZE = 64 * 1024 };
  char *stack = malloc(SIZE);
  raw_jump = jump;
  fcontext_t ctx = make(stack + SIZE, SIZE, raw_entry);
  uint64_t n = scaled(10000000);
  ctx = jump(ctx, NULL).fctx;
  int64_t t0 = now_ns();
  for (uint64_t i = 0; i < n; i++) ctx = jump(ctx, NULL).fctx;
  double ns = (double)(now_ns() - t0) / (double)(2 * n); /* two switches a round */
  free(stack);
  return ns;
}

static double raw_switch(void) { return raw_switch_with(make_fcontext, jump_fcontext); }

#if defined(TG_OWN_CONTEXT)
static double own_switch(void) { return raw_switch_with(tg__context_make, tg__context_jump); }
#endif

/* ------------------------------------------------------------ yield */

static void *yielder(void *arg) {
  uint64_t n = *(uint64_t *)arg;
  for (uint64_t i = 0; i < n; i++) tg_yield();
  return NULL;
}

/* Two tasks yielding to each other: each yield is a switch to the
 * scheduler and one to the other task. */
static double yield_pair(void) {
  uint64_t n = scaled(2000000);
  tg_task *a, *b;
  int64_t t0 = now_ns();
  check(tg_spawn(&a, yielder, &n, NULL), "spawn");
  check(tg_spawn(&b, yielder, &n, NULL), "spawn");
  check(tg_task_join(a, NULL), "join");
  check(tg_task_join(b, NULL), "join");
  return (double)(now_ns() - t0) / (double)(2 * n);
}

/* ------------------------------------------------------------ spawn+join */

static void *nothing(void *arg) { return arg; }

static double spawn_join(void) {
  uint64_t n = scaled(300000);
  int64_t t0 = now_ns();
  for (uint64_t i = 0; i < n; i++) {
    tg_task *t;
    check(tg_spawn(&t, nothing, NULL, NULL), "spawn");
    check(tg_task_join(t, NULL), "join");
  }
  return (double)(now_ns() - t0) / (double)n;
}

/* ------------------------------------------------------------ mpsc pair */

static double mpsc_pair(void) {
  uint64_t n = scaled(10000000);
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  check(tg_mpsc_new(&(tg_mpsc_opts){.capacity = 50, .elem_size = sizeof(uint64_t)}, &tx, &rx), "mpsc");
  uint64_t sum = 0;
  int64_t t0 = now_ns();
  for (uint64_t i = 0; i < n; i++) {
    uint64_t v;
    check(tg_mpsc_send(tx, &i), "send");
    check(tg_mpsc_recv(rx, &v), "recv");
    sum += v;
  }
  double ns = (double)(now_ns() - t0) / (double)n;
  tg_mpsc_tx_drop(tx);
  tg_mpsc_rx_drop(rx);
  if (sum != n / 2 * (n - 1) + (n % 2 ? (n - 1) / 2 : 0) && n > 1) {
    fprintf(stderr, "tg-microbench: mpsc pair lost values\n");
    exit(1);
  }
  return ns;
}

/* ------------------------------------------------------------ cross-worker */

typedef struct pingpong {
  tg_mpsc_tx *to_tx;
  tg_mpsc_rx *from_rx;
  uint64_t n;
  int first;
} pingpong;

static void *pinger(void *arg) {
  pingpong *p = arg;
  uint64_t v = 0;
  for (uint64_t i = 0; i < p->n; i++) {
    if (p->first) check(tg_mpsc_send(p->to_tx, &i), "send");
    check(tg_mpsc_recv(p->from_rx, &v), "recv");
    if (!p->first) check(tg_mpsc_send(p->to_tx, &v), "send");
  }
  return NULL;
}

/* Two tasks on two workers pass a token back and forth through two mpsc
 * channels of capacity 1: every hop wakes a task on the other worker. */
static double cross_wake(void) {
  uint64_t n = scaled(200000);
  tg_mpsc_tx *ab_tx, *ba_tx;
  tg_mpsc_rx *ab_rx, *ba_rx;
  tg_mpsc_opts o = {.capacity = 1, .elem_size = sizeof(uint64_t)};
  check(tg_mpsc_new(&o, &ab_tx, &ab_rx), "mpsc");
  check(tg_mpsc_new(&o, &ba_tx, &ba_rx), "mpsc");
  pingpong a = {ab_tx, ba_rx, n, 1}, b = {ba_tx, ab_rx, n, 0};
  tg_task *ta, *tb;
  int64_t t0 = now_ns();
  check(tg_spawn(&ta, pinger, &a, &(tg_spawn_opts){.pin = 1, .worker = 0}), "spawn");
  check(tg_spawn(&tb, pinger, &b, &(tg_spawn_opts){.pin = 1, .worker = 1}), "spawn");
  check(tg_task_join(ta, NULL), "join");
  check(tg_task_join(tb, NULL), "join");
  double ns = (double)(now_ns() - t0) / (double)(2 * n);
  tg_mpsc_tx_drop(ab_tx);
  tg_mpsc_tx_drop(ba_tx);
  tg_mpsc_rx_drop(ab_rx);
  tg_mpsc_rx_drop(ba_rx);
  return ns;
}

static const struct {
  const char *name;
  bench_fn fn;
  int workers;
} benches[] = {
    {"fcontext_switch_ns", raw_switch, 1},
#if defined(TG_OWN_CONTEXT)
    {"context_switch_ns", own_switch, 1},
#endif
    {"yield_switch_ns", yield_pair, 1},       {"spawn_join_ns", spawn_join, 1},
    {"mpsc_send_recv_pair_ns", mpsc_pair, 1}, {"cross_worker_wake_ns", cross_wake, 2},
};

int main(int argc, char **argv) {
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
      scale = strtod(argv[++i], NULL);
      if (!(scale > 0)) return 2;
    } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else {
      fprintf(stderr, "usage: tg-microbench [--scale F] [--only NAME]\n");
      return 2;
    }
  }
  for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++) {
    if (only && !strstr(benches[i].name, only)) continue;
    printf("%s=%.1f\n", benches[i].name, median_run(benches[i].fn, benches[i].workers));
    fflush(stdout);
  }
  return 0;
}
