/* tg-bench.c - the ten workloads of ../shared/bench/WORKLOADS.md on libtg's
 * public API, with the peers' command line and output line:
 *
 *   tg-bench [--threads N] [--scale F] [--only Wk]
 *   W1 mpsc_spsc ops=1000000 secs=0.0421 ops_per_sec=23752969 check=ok
 *
 * --threads N runs each workload on a runtime of N workers. Each workload's
 * top level is the runtime's main task; the clock runs from before its
 * primitives are created until every task it spawned was joined, as in the
 * peers. Exit status 1 when a check fails, 2 for a bad command line. */
#include "tg/tg.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* What one workload reports: the operations it counted and, when its
 * check failed, why (NULL when it held). */
typedef struct outcome {
  uint64_t ops;
  const char *failure;
} outcome;

static uint64_t scaled(uint64_t base, double scale) {
  double v = round((double)base * scale);
  return v < 1.0 ? 1 : (uint64_t)v;
}

static void die(const char *what, int err) {
  fprintf(stderr, "tg-bench: %s: %s\n", what, tg_strerror(err));
  exit(1);
}

static tg_task *spawn(tg_task_fn fn, void *arg) {
  tg_task *t;
  int r = tg_spawn(&t, fn, arg, NULL);
  if (r != 0) die("tg_spawn", r);
  return t;
}

static void join(tg_task *t) {
  tg_outcome out;
  int r = tg_task_join(t, &out);
  if (r != 0) die("tg_task_join", r);
  if (out.status != 0) {
    fprintf(stderr, "tg-bench: task %llu ended with %s %s\n", (unsigned long long)out.task_id,
            tg_err_name(out.status), out.message);
    exit(1);
  }
}

static tg_mpsc_tx *mpsc_new(size_t capacity, size_t elem_size, tg_mpsc_rx **rx) {
  tg_mpsc_tx *tx;
  int r = tg_mpsc_new(&(tg_mpsc_opts){.capacity = capacity, .elem_size = elem_size}, &tx, rx);
  if (r != 0) die("tg_mpsc_new", r);
  return tx;
}

/* ------------------------------------------------------------ W1 */

typedef struct w1_state {
  uint64_t n;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  bool sent_all;
  uint64_t received;
  bool in_order;
} w1_state;

static void *w1_producer(void *arg) {
  w1_state *s = arg;
  s->sent_all = true;
  for (uint64_t i = 0; i < s->n; i++) {
    if (tg_mpsc_send(s->tx, &i) != 0) {
      s->sent_all = false;
      break;
    }
  }
  tg_mpsc_tx_drop(s->tx);
  return NULL;
}

static void *w1_consumer(void *arg) {
  w1_state *s = arg;
  uint64_t v, expected = 0;
  bool in_order = true;
  while (tg_mpsc_recv(s->rx, &v) == 0) {
    if (v != expected) in_order = false;
    expected++;
  }
  tg_mpsc_rx_drop(s->rx);
  s->received = expected;
  s->in_order = in_order;
  return NULL;
}

static outcome w1_mpsc_spsc(double scale) {
  w1_state s = {.n = scaled(1000000, scale)};
  s.tx = mpsc_new(50, sizeof(uint64_t), &s.rx);
  tg_task *producer = spawn(w1_producer, &s);
  tg_task *consumer = spawn(w1_consumer, &s);
  join(producer);
  join(consumer);
  const char *failure = !s.sent_all ? "send_failed"
                        : !s.in_order ? "out_of_order"
                        : s.received != s.n ? "count"
                                            : NULL;
  return (outcome){s.received, failure};
}

/* ------------------------------------------------------------ W2 */

enum { W2_PRODUCERS = 7 };

typedef struct w2_msg {
  uint32_t producer;
  uint64_t seq;
} w2_msg;

typedef struct w2_producer_state {
  tg_mpsc_tx *tx;
  uint32_t id;
  uint64_t per;
  bool sent_all;
} w2_producer_state;

typedef struct w2_consumer_state {
  tg_mpsc_rx *rx;
  uint64_t per;
  uint64_t received;
  bool good;
} w2_consumer_state;

static void *w2_producer(void *arg) {
  w2_producer_state *p = arg;
  p->sent_all = true;
  for (uint64_t seq = 0; seq < p->per; seq++) {
    w2_msg m = {.producer = p->id, .seq = seq};
    if (tg_mpsc_send(p->tx, &m) != 0) {
      p->sent_all = false;
      break;
    }
  }
  tg_mpsc_tx_drop(p->tx);
  return NULL;
}

static void *w2_consumer(void *arg) {
  w2_consumer_state *c = arg;
  uint64_t next[W2_PRODUCERS] = {0}, received = 0;
  bool good = true;
  w2_msg m;
  while (tg_mpsc_recv(c->rx, &m) == 0) {
    received++;
    if (m.producer < W2_PRODUCERS && next[m.producer] == m.seq) next[m.producer]++;
    else good = false;
  }
  tg_mpsc_rx_drop(c->rx);
  for (int i = 0; i < W2_PRODUCERS; i++)
    if (next[i] != c->per) good = false;
  c->received = received;
  c->good = good;
  return NULL;
}

static outcome w2_mpsc_fanin(double scale) {
  uint64_t per = scaled(200000, scale);
  w2_consumer_state c = {.per = per};
  tg_mpsc_tx *tx = mpsc_new(50, sizeof(w2_msg), &c.rx);
  w2_producer_state ps[W2_PRODUCERS];
  tg_task *producers[W2_PRODUCERS];
  for (uint32_t i = 0; i < W2_PRODUCERS; i++) {
    ps[i] = (w2_producer_state){.tx = tg_mpsc_tx_clone(tx), .id = i, .per = per};
    producers[i] = spawn(w2_producer, &ps[i]);
  }
  tg_mpsc_tx_drop(tx);
  tg_task *consumer = spawn(w2_consumer, &c);
  bool sent_all = true;
  for (int i = 0; i < W2_PRODUCERS; i++) {
    join(producers[i]);
    sent_all &= ps[i].sent_all;
  }
  join(consumer);
  const char *failure = !sent_all ? "send_failed"
                        : !c.good ? "sequence"
                        : c.received != per * W2_PRODUCERS ? "count"
                                                           : NULL;
  return (outcome){c.received, failure};
}

/* ------------------------------------------------------------ W6 */

enum { W6_PERMITS = 5, W6_WORKERS = 7 };

typedef struct w6_shared {
  tg_semaphore *sem;
  uint64_t per;
  atomic_uint_fast64_t in_use; /* tasks between acquire and release */
  atomic_bool overrun;
} w6_shared;

typedef struct w6_worker_state {
  w6_shared *shared;
  uint64_t acquired;
} w6_worker_state;

static void *w6_worker(void *arg) {
  w6_worker_state *ws = arg;
  w6_shared *s = ws->shared;
  for (uint64_t i = 0; i < s->per; i++) {
    int r = tg_semaphore_acquire(s->sem, 1);
    if (r != 0) die("tg_semaphore_acquire", r);
    if (atomic_fetch_add_explicit(&s->in_use, 1, memory_order_acq_rel) + 1 > W6_PERMITS)
      atomic_store_explicit(&s->overrun, true, memory_order_relaxed);
    tg_yield(); /* holding the permit */
    atomic_fetch_sub_explicit(&s->in_use, 1, memory_order_acq_rel);
    r = tg_semaphore_release(s->sem, 1);
    if (r != 0) die("tg_semaphore_release", r);
    ws->acquired++;
  }
  return NULL;
}

static outcome w6_semaphore_pool(double scale) {
  w6_shared s = {.per = scaled(200000, scale)};
  int r = tg_semaphore_new(&s.sem, W6_PERMITS, NULL);
  if (r != 0) die("tg_semaphore_new", r);
  w6_worker_state ws[W6_WORKERS];
  tg_task *workers[W6_WORKERS];
  for (int i = 0; i < W6_WORKERS; i++) {
    ws[i] = (w6_worker_state){.shared = &s};
    workers[i] = spawn(w6_worker, &ws[i]);
  }
  uint64_t acquired = 0;
  for (int i = 0; i < W6_WORKERS; i++) {
    join(workers[i]);
    acquired += ws[i].acquired;
  }
  tg_semaphore_stats st;
  tg_semaphore_stats_get(s.sem, &st);
  tg_semaphore_free(s.sem);
  const char *failure = atomic_load(&s.overrun) ? "overrun"
                        : atomic_load(&s.in_use) != 0 || st.available != W6_PERMITS ? "permits_not_back"
                        : acquired != s.per * W6_WORKERS ? "count"
                                                         : NULL;
  return (outcome){acquired, failure};
}

/* ------------------------------------------------------------ W8 */

static void *w8_task(void *arg) { return arg; }

static outcome w8_joinset_spawn(double scale) {
  uint64_t n = scaled(100000, scale);
  tg_joinset *js;
  int r = tg_joinset_new(&js, NULL);
  if (r != 0) die("tg_joinset_new", r);
  for (uint64_t i = 0; i < n; i++) {
    r = tg_joinset_spawn(js, w8_task, (void *)(uintptr_t)i, NULL, NULL);
    if (r != 0) die("tg_joinset_spawn", r);
  }
  uint64_t joined = 0, sum = 0;
  bool errors = false;
  tg_outcome out;
  while ((r = tg_joinset_join_next(js, &out)) == 0) {
    if (out.status != 0) {
      errors = true;
      continue;
    }
    sum += (uint64_t)(uintptr_t)out.value;
    joined++;
  }
  if (r != TG_EEMPTY) errors = true;
  tg_joinset_free(js);
  uint64_t expected = n % 2 ? (n - 1) / 2 * n : n / 2 * (n - 1);
  const char *failure = errors ? "join_error" : sum != expected || joined != n ? "sum" : NULL;
  return (outcome){joined, failure};
}

/* ------------------------------------------------------------ driver */

typedef struct workload {
  const char *id, *name;
  outcome (*run)(double scale);
} workload;

static const workload workloads[] = {
    {"W1", "mpsc_spsc", w1_mpsc_spsc},
    {"W2", "mpsc_fanin", w2_mpsc_fanin},
    {"W6", "semaphore_pool", w6_semaphore_pool},
    {"W8", "joinset_spawn", w8_joinset_spawn},
};

typedef struct run_call {
  const workload *w;
  double scale;
  outcome result;
  double secs;
} run_call;

static double now_secs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run_main(void *arg) {
  run_call *call = arg;
  double start = now_secs();
  call->result = call->w->run(call->scale);
  call->secs = now_secs() - start;
  return NULL;
}

static int usage(void) {
  fprintf(stderr, "usage: tg-bench [--threads N] [--scale F] [--only W1..W10]\n");
  return 2;
}

int main(int argc, char **argv) {
  int threads = 1;
  double scale = 1.0;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *value = NULL;
    char key[32];
    const char *eq = strchr(arg, '=');
    if (eq && (size_t)(eq - arg) < sizeof key) {
      memcpy(key, arg, (size_t)(eq - arg));
      key[eq - arg] = '\0';
      value = eq + 1;
    } else {
      snprintf(key, sizeof key, "%s", arg);
    }
    if (!strcmp(key, "-h") || !strcmp(key, "--help")) {
      usage();
      return 0;
    }
    if (!value && i + 1 < argc) value = argv[++i];
    if (!value) return usage();
    char *end;
    if (!strcmp(key, "--threads")) {
      long t = strtol(value, &end, 10);
      if (*end || t < 1 || t > 1024) return usage();
      threads = (int)t;
    } else if (!strcmp(key, "--scale")) {
      scale = strtod(value, &end);
      if (*end || !(scale > 0) || !isfinite(scale)) return usage();
    } else if (!strcmp(key, "--only")) {
      only = value;
    } else {
      return usage();
    }
  }
  size_t count = sizeof workloads / sizeof workloads[0];
  if (only) {
    size_t i = 0;
    while (i < count && strcasecmp(workloads[i].id, only) != 0) i++;
    if (i == count) {
      fprintf(stderr, "unknown workload %s\n", only);
      return usage();
    }
  }

  bool all_ok = true;
  for (size_t i = 0; i < count; i++) {
    const workload *w = &workloads[i];
    if (only && strcasecmp(w->id, only) != 0) continue;
    run_call call = {.w = w, .scale = scale};
    int r = tg_run(&(tg_runtime_opts){.workers = threads}, run_main, &call, NULL);
    if (r != 0) die("tg_run", r);
    double rate = call.secs > 0 ? (double)call.result.ops / call.secs : 0;
    char check[64] = "ok";
    if (call.result.failure) {
      all_ok = false;
      snprintf(check, sizeof check, "FAIL:%s", call.result.failure);
    }
    printf("%s %s ops=%llu secs=%.4f ops_per_sec=%.0f check=%s\n", w->id, w->name,
           (unsigned long long)call.result.ops, call.secs, rate, check);
    fflush(stdout);
  }
  return all_ok ? 0 : 1;
}
