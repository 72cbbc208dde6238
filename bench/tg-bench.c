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
  double v = (double)base * scale + 0.5; /* rounded, as the peers do */
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
    fprintf(stderr, "tg-bench: task %llu ended with %s %s\n", (unsigned long long)out.task_id, tg_err_name(out.status),
            out.message);
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
  const char *failure = !s.sent_all ? "send_failed" : !s.in_order ? "out_of_order" : s.received != s.n ? "count" : NULL;
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
    if (m.producer < W2_PRODUCERS && next[m.producer] == m.seq)
      next[m.producer]++;
    else
      good = false;
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
  const char *failure = !sent_all                          ? "send_failed"
                        : !c.good                          ? "sequence"
                        : c.received != per * W2_PRODUCERS ? "count"
                                                           : NULL;
  return (outcome){c.received, failure};
}

/* ------------------------------------------------------------ W3 */

enum { W3_SUBSCRIBERS = 4 };

typedef struct w3_subscriber_state {
  tg_broadcast_rx *rx;
  uint64_t delivered, lagged;
  bool increasing;
} w3_subscriber_state;

typedef struct w3_sender_state {
  tg_broadcast_tx *tx;
  uint64_t n;
} w3_sender_state;

static void *w3_subscriber(void *arg) {
  w3_subscriber_state *s = arg;
  uint64_t v, last = 0, delivered = 0, lagged = 0;
  bool increasing = true;
  for (;;) {
    int r = tg_broadcast_recv(s->rx, &v);
    if (r == 0) {
      if (delivered > 0 && v <= last) increasing = false;
      last = v;
      delivered++;
    } else if (r == TG_ELAGGED) {
      lagged += tg_broadcast_rx_lagged(s->rx);
    } else {
      if (r != TG_ECLOSED) die("tg_broadcast_recv", r);
      break;
    }
  }
  tg_broadcast_rx_drop(s->rx);
  s->delivered = delivered;
  s->lagged = lagged;
  s->increasing = increasing;
  return NULL;
}

static void *w3_sender(void *arg) {
  w3_sender_state *s = arg;
  for (uint64_t i = 0; i < s->n; i++) {
    /* Cannot fail: every subscriber lives until the channel closes. */
    int r = tg_broadcast_send(s->tx, &i, NULL);
    if (r != 0) die("tg_broadcast_send", r);
    if ((i + 1) % 64 == 0) tg_yield();
  }
  tg_broadcast_tx_drop(s->tx); /* closes the channel */
  return NULL;
}

static outcome w3_broadcast_fanout(double scale) {
  w3_sender_state snd = {.n = scaled(1000000, scale)};
  int r = tg_broadcast_new(&(tg_broadcast_opts){.capacity = 100, .elem_size = sizeof(uint64_t)}, &snd.tx, NULL);
  if (r != 0) die("tg_broadcast_new", r);
  w3_subscriber_state subs[W3_SUBSCRIBERS];
  tg_task *subscribers[W3_SUBSCRIBERS];
  for (int i = 0; i < W3_SUBSCRIBERS; i++) {
    subs[i] = (w3_subscriber_state){0};
    r = tg_broadcast_subscribe(snd.tx, &subs[i].rx);
    if (r != 0) die("tg_broadcast_subscribe", r);
    subscribers[i] = spawn(w3_subscriber, &subs[i]);
  }
  tg_task *sender = spawn(w3_sender, &snd);
  join(sender);
  uint64_t delivered = 0, lagged = 0;
  bool increasing = true;
  for (int i = 0; i < W3_SUBSCRIBERS; i++) {
    join(subscribers[i]);
    delivered += subs[i].delivered;
    lagged += subs[i].lagged;
    increasing &= subs[i].increasing;
  }
  const char *failure = !increasing                                    ? "not_increasing"
                        : delivered + lagged != snd.n * W3_SUBSCRIBERS ? "delivered_plus_lagged"
                                                                       : NULL;
  return (outcome){delivered, failure};
}

/* ------------------------------------------------------------ W4 */

enum { W4_RECEIVERS = 4 };

typedef struct w4_receiver_state {
  tg_watch_rx *rx;
  uint64_t last;
  bool seen_any, monotonic;
} w4_receiver_state;

typedef struct w4_sender_state {
  tg_watch_tx *tx;
  uint64_t n, stored;
} w4_sender_state;

static void *w4_receiver(void *arg) {
  w4_receiver_state *s = arg;
  uint64_t v, last = 0;
  bool seen_any = false, monotonic = true;
  /* changed() reports a version not yet seen before it reports the close,
   * so the last value read is the last one stored. */
  while (tg_watch_changed(s->rx) == 0) {
    tg_watch_get_and_update(s->rx, &v);
    if (seen_any && v < last) monotonic = false;
    last = v;
    seen_any = true;
  }
  tg_watch_rx_drop(s->rx);
  s->last = last;
  s->seen_any = seen_any;
  s->monotonic = monotonic;
  return NULL;
}

static void *w4_sender(void *arg) {
  w4_sender_state *s = arg;
  for (uint64_t i = 0; i < s->n; i++) {
    if (tg_watch_send(s->tx, &i) == 0) s->stored++;
    tg_yield();
  }
  tg_watch_tx_drop(s->tx);
  return NULL;
}

static outcome w4_watch_state(double scale) {
  w4_sender_state snd = {.n = scaled(1000000, scale)};
  uint64_t initial = 0;
  tg_watch_rx *rx0;
  int r = tg_watch_new(&(tg_watch_opts){.elem_size = sizeof(uint64_t)}, &initial, &snd.tx, &rx0);
  if (r != 0) die("tg_watch_new", r);
  w4_receiver_state recv[W4_RECEIVERS];
  tg_task *receivers[W4_RECEIVERS];
  for (int i = 0; i < W4_RECEIVERS; i++) {
    recv[i] = (w4_receiver_state){0};
    r = tg_watch_rx_clone(rx0, &recv[i].rx);
    if (r != 0) die("tg_watch_rx_clone", r);
    receivers[i] = spawn(w4_receiver, &recv[i]);
  }
  tg_watch_rx_drop(rx0);
  tg_task *sender = spawn(w4_sender, &snd);
  join(sender);
  const char *failure = NULL;
  for (int i = 0; i < W4_RECEIVERS; i++) {
    join(receivers[i]);
    if (!recv[i].monotonic)
      failure = "not_monotonic";
    else if ((!recv[i].seen_any || recv[i].last != snd.n - 1) && !failure)
      failure = "final_value";
  }
  if (snd.stored != snd.n && !failure) failure = "store_failed";
  return (outcome){snd.stored, failure};
}

/* ------------------------------------------------------------ W5 */

typedef struct w5_request {
  uint64_t value;
  tg_oneshot_tx *reply;
} w5_request;

typedef struct w5_state {
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  uint64_t n, good;
  bool all_right;
} w5_state;

static void *w5_responder(void *arg) {
  w5_state *s = arg;
  w5_request req;
  while (tg_mpsc_recv(s->rx, &req) == 0) {
    uint64_t answer = req.value + 1;
    tg_oneshot_send(req.reply, &answer); /* consumes the sender either way */
  }
  tg_mpsc_rx_drop(s->rx);
  return NULL;
}

static void *w5_requester(void *arg) {
  w5_state *s = arg;
  s->all_right = true;
  for (uint64_t i = 0; i < s->n; i++) {
    w5_request req = {.value = i};
    tg_oneshot_rx *reply;
    int r = tg_oneshot_new(sizeof(uint64_t), &req.reply, &reply);
    if (r != 0) die("tg_oneshot_new", r);
    if (tg_mpsc_send(s->tx, &req) != 0) {
      tg_oneshot_tx_drop(req.reply);
      tg_oneshot_rx_drop(reply);
      s->all_right = false;
      break;
    }
    uint64_t answer;
    if (tg_oneshot_recv(reply, &answer) == 0 && answer == i + 1)
      s->good++;
    else
      s->all_right = false;
    tg_oneshot_rx_drop(reply);
  }
  tg_mpsc_tx_drop(s->tx);
  return NULL;
}

static outcome w5_oneshot_rpc(double scale) {
  w5_state s = {.n = scaled(200000, scale)};
  s.tx = mpsc_new(5, sizeof(w5_request), &s.rx);
  tg_task *responder = spawn(w5_responder, &s);
  tg_task *requester = spawn(w5_requester, &s);
  join(requester);
  join(responder);
  const char *failure = !s.all_right || s.good != s.n ? "bad_reply" : NULL;
  return (outcome){s.good, failure};
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
  const char *failure = atomic_load(&s.overrun)                                     ? "overrun"
                        : atomic_load(&s.in_use) != 0 || st.available != W6_PERMITS ? "permits_not_back"
                        : acquired != s.per * W6_WORKERS                            ? "count"
                                                                                    : NULL;
  return (outcome){acquired, failure};
}

/* ------------------------------------------------------------ W7 */

typedef struct w7_state {
  tg_notify *a, *b;
  uint64_t n, pings, pongs;
} w7_state;

static void *w7_pinger(void *arg) {
  w7_state *s = arg;
  for (uint64_t i = 0; i < s->n; i++) {
    tg_notify_one(s->a);
    int r = tg_notify_wait(s->b);
    if (r != 0) die("tg_notify_wait", r);
    s->pings++;
  }
  return NULL;
}

static void *w7_ponger(void *arg) {
  w7_state *s = arg;
  for (uint64_t i = 0; i < s->n; i++) {
    int r = tg_notify_wait(s->a);
    if (r != 0) die("tg_notify_wait", r);
    tg_notify_one(s->b);
    s->pongs++;
  }
  return NULL;
}

static outcome w7_notify_pingpong(double scale) {
  w7_state s = {.n = scaled(500000, scale)};
  int r = tg_notify_new(&s.a, NULL);
  if (r == 0) r = tg_notify_new(&s.b, NULL);
  if (r != 0) die("tg_notify_new", r);
  tg_task *pinger = spawn(w7_pinger, &s);
  tg_task *ponger = spawn(w7_ponger, &s);
  join(pinger);
  join(ponger);
  tg_notify_free(s.a);
  tg_notify_free(s.b);
  const char *failure = s.pings != s.n || s.pongs != s.n ? "count" : NULL;
  return (outcome){s.pings, failure};
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

/* ------------------------------------------------------------ W9 */

enum { W9_DEVICES = 7, W9_CLIENTS = 4, W9_SNAPSHOT_EVERY = 100, W9_BATCH = 1000 };

typedef struct w9_reading {
  uint32_t device_id;
  uint64_t seq;
  uint64_t timestamp;
  double temperature;
  double humidity;
  uint8_t battery;
} w9_reading;

typedef struct w9_snapshot {
  uint32_t active_devices;
  uint64_t total;
  double mean_temperature[W9_DEVICES];
} w9_snapshot;

/* A batch travels through the batch channel as a pointer, as tokio's Vec. */
typedef struct w9_batch {
  size_t len;
  w9_reading readings[W9_BATCH];
} w9_batch;

typedef struct w9_state {
  uint64_t per;
  tg_mpsc_tx *reading_tx;
  tg_mpsc_rx *reading_rx;
  tg_mpsc_tx *batch_tx;
  tg_mpsc_rx *batch_rx;
  tg_watch_tx *watch_tx;
  tg_broadcast_tx *bcast_tx;
  tg_semaphore *device_sem, *storage_sem;
  /* results */
  uint64_t aggregated, stored, stored_seq_sum;
  bool bad;
} w9_state;

typedef struct w9_client_state {
  tg_broadcast_rx *rx;
  tg_watch_rx *latest;
  uint64_t seen_total, updates, resyncs;
} w9_client_state;

typedef struct w9_device_state {
  w9_state *s;
  tg_mpsc_tx *tx;
  uint32_t id;
  uint64_t sent, seq_sum;
} w9_device_state;

static w9_batch *w9_batch_new(void) {
  w9_batch *b = malloc(sizeof *b);
  if (!b) die("malloc", TG_ENOMEM);
  b->len = 0;
  return b;
}

/* Clients follow the broadcast and resync from the watch after a lag. */
static void *w9_client(void *arg) {
  w9_client_state *c = arg;
  w9_snapshot snap;
  for (;;) {
    int r = tg_broadcast_recv(c->rx, &snap);
    if (r == 0) {
      if (snap.total > c->seen_total) c->seen_total = snap.total;
      c->updates++;
    } else if (r == TG_ELAGGED) {
      tg_watch_get_and_update(c->latest, &snap);
      if (snap.total > c->seen_total) c->seen_total = snap.total;
      c->resyncs++;
    } else {
      if (r != TG_ECLOSED) die("tg_broadcast_recv", r);
      break;
    }
  }
  tg_broadcast_rx_drop(c->rx);
  tg_watch_rx_drop(c->latest);
  return NULL;
}

/* Storage takes one permit of the 2-permit pool per batch and "writes" it. */
static void *w9_storage(void *arg) {
  w9_state *s = arg;
  w9_batch *b;
  uint64_t stored = 0, seq_sum = 0;
  while (tg_mpsc_recv(s->batch_rx, &b) == 0) {
    int r = tg_semaphore_acquire(s->storage_sem, 1);
    if (r != 0) die("tg_semaphore_acquire", r);
    for (size_t i = 0; i < b->len; i++) seq_sum += b->readings[i].seq;
    stored += b->len;
    tg_semaphore_release(s->storage_sem, 1);
    free(b);
  }
  tg_mpsc_rx_drop(s->batch_rx);
  s->stored = stored;
  s->stored_seq_sum = seq_sum;
  return NULL;
}

static void *w9_aggregator(void *arg) {
  w9_state *s = arg;
  uint64_t count[W9_DEVICES] = {0}, total = 0;
  double mean[W9_DEVICES] = {0};
  w9_batch *batch = w9_batch_new();
  w9_reading r;
  while (tg_mpsc_recv(s->reading_rx, &r) == 0) {
    uint32_t d = r.device_id;
    if (d >= W9_DEVICES) {
      s->bad = true;
      continue;
    }
    count[d]++;
    mean[d] += (r.temperature - mean[d]) / (double)count[d];
    total++;
    batch->readings[batch->len++] = r;
    if (total % W9_SNAPSHOT_EVERY == 0) {
      w9_snapshot snap = {.total = total};
      for (int i = 0; i < W9_DEVICES; i++) {
        snap.active_devices += count[i] > 0;
        snap.mean_temperature[i] = mean[i];
      }
      tg_watch_send(s->watch_tx, &snap);
      tg_broadcast_send(s->bcast_tx, &snap, NULL); /* fails only with no client left */
    }
    if (batch->len == W9_BATCH) {
      if (tg_mpsc_send(s->batch_tx, &batch) != 0) {
        s->bad = true;
        free(batch);
      }
      batch = w9_batch_new();
    }
  }
  if (batch->len > 0 && tg_mpsc_send(s->batch_tx, &batch) == 0)
    batch = NULL;
  else if (batch->len > 0)
    s->bad = true;
  free(batch);
  /* closes storage and the clients */
  tg_mpsc_rx_drop(s->reading_rx);
  tg_mpsc_tx_drop(s->batch_tx);
  tg_broadcast_tx_drop(s->bcast_tx);
  tg_watch_tx_drop(s->watch_tx);
  s->aggregated = total;
  return NULL;
}

/* Each device holds a permit of the 5-permit pool for each send. */
static void *w9_device(void *arg) {
  w9_device_state *d = arg;
  w9_state *s = d->s;
  for (uint64_t seq = 0; seq < s->per; seq++) {
    w9_reading reading = {
        .device_id = d->id,
        .seq = seq,
        .timestamp = 1700000000000ull + seq * 10,
        .temperature = 18.0 + d->id + (double)(seq % 100) * 0.05,
        .humidity = 40.0 + (double)(seq % 50) * 0.4,
        .battery = (uint8_t)(100 - seq % 100),
    };
    int r = tg_semaphore_acquire(s->device_sem, 1);
    if (r != 0) die("tg_semaphore_acquire", r);
    bool ok = tg_mpsc_send(d->tx, &reading) == 0;
    tg_semaphore_release(s->device_sem, 1);
    if (!ok) break;
    d->sent++;
    d->seq_sum += seq;
  }
  tg_mpsc_tx_drop(d->tx);
  return NULL;
}

static outcome w9_gateway_pipeline(double scale) {
  w9_state s = {.per = scaled(200000, scale)};
  s.reading_tx = mpsc_new(50, sizeof(w9_reading), &s.reading_rx);
  s.batch_tx = mpsc_new(10, sizeof(w9_batch *), &s.batch_rx);
  w9_snapshot empty = {0};
  tg_watch_rx *watch_rx;
  int r = tg_watch_new(&(tg_watch_opts){.elem_size = sizeof(w9_snapshot)}, &empty, &s.watch_tx, &watch_rx);
  if (r != 0) die("tg_watch_new", r);
  r = tg_broadcast_new(&(tg_broadcast_opts){.capacity = 100, .elem_size = sizeof(w9_snapshot)}, &s.bcast_tx, NULL);
  if (r != 0) die("tg_broadcast_new", r);
  if ((r = tg_semaphore_new(&s.device_sem, 5, NULL)) != 0 || (r = tg_semaphore_new(&s.storage_sem, 2, NULL)) != 0)
    die("tg_semaphore_new", r);

  w9_client_state cs[W9_CLIENTS];
  tg_task *clients[W9_CLIENTS];
  for (int i = 0; i < W9_CLIENTS; i++) {
    cs[i] = (w9_client_state){0};
    if ((r = tg_broadcast_subscribe(s.bcast_tx, &cs[i].rx)) != 0) die("tg_broadcast_subscribe", r);
    if ((r = tg_watch_rx_clone(watch_rx, &cs[i].latest)) != 0) die("tg_watch_rx_clone", r);
    clients[i] = spawn(w9_client, &cs[i]);
  }
  tg_watch_rx_drop(watch_rx);
  tg_task *storage = spawn(w9_storage, &s);
  tg_task *aggregator = spawn(w9_aggregator, &s);
  w9_device_state ds[W9_DEVICES];
  tg_task *devices[W9_DEVICES];
  for (uint32_t i = 0; i < W9_DEVICES; i++) {
    ds[i] = (w9_device_state){.s = &s, .tx = tg_mpsc_tx_clone(s.reading_tx), .id = i};
    devices[i] = spawn(w9_device, &ds[i]);
  }
  tg_mpsc_tx_drop(s.reading_tx);

  uint64_t sent = 0, sent_seq_sum = 0;
  for (int i = 0; i < W9_DEVICES; i++) {
    join(devices[i]);
    sent += ds[i].sent;
    sent_seq_sum += ds[i].seq_sum;
  }
  join(aggregator);
  join(storage);
  for (int i = 0; i < W9_CLIENTS; i++) join(clients[i]);
  tg_semaphore_free(s.device_sem);
  tg_semaphore_free(s.storage_sem);
  const char *failure = s.bad                                      ? "aggregator"
                        : s.stored != sent || s.aggregated != sent ? "stored_ne_sent"
                        : s.stored_seq_sum != sent_seq_sum         ? "seq_sum"
                                                                   : NULL;
  return (outcome){s.stored, failure};
}

/* ------------------------------------------------------------ W10 */

/* Memory per live task: every task parks at once on one latched
 * cancellation token; the spawner fires it once all of them wait. */
typedef struct w10_state {
  tg_cancel *release;
  atomic_uint_fast64_t parked;
} w10_state;

static w10_state w10;

static void *w10_task(void *arg) {
  atomic_fetch_add_explicit(&w10.parked, 1, memory_order_relaxed);
  if (tg_cancel_wait(w10.release) != 0) return (void *)UINTPTR_MAX;
  return arg;
}

static outcome w10_idle_tasks(double scale) {
  uint64_t n = scaled(100000, scale);
  atomic_store(&w10.parked, 0);
  int r = tg_cancel_new(&w10.release, NULL);
  if (r != 0) die("tg_cancel_new", r);
  tg_joinset *js;
  if ((r = tg_joinset_new(&js, NULL)) != 0) die("tg_joinset_new", r);
  for (uint64_t i = 0; i < n; i++) {
    r = tg_joinset_spawn(js, w10_task, (void *)(uintptr_t)i, NULL, NULL);
    if (r != 0) die("tg_joinset_spawn", r);
  }
  /* Every task counts itself and then waits: the token's own figure of
   * waiters says when all of them are parked. */
  tg_cancel_stats st;
  for (;;) {
    tg_cancel_stats_get(w10.release, &st);
    if (st.waiters >= n) break;
    tg_yield();
  }
  bool all_parked = atomic_load(&w10.parked) == n && st.waiters == n;
  tg_cancel_fire(w10.release);
  uint64_t joined = 0, sum = 0;
  bool errors = false;
  tg_outcome out;
  while ((r = tg_joinset_join_next(js, &out)) == 0) {
    uintptr_t v = (uintptr_t)out.value;
    if (out.status != 0 || v == UINTPTR_MAX) {
      errors = true;
      continue;
    }
    sum += v;
    joined++;
  }
  if (r != TG_EEMPTY) errors = true;
  tg_joinset_free(js);
  tg_cancel_free(w10.release);
  uint64_t expected = n % 2 ? (n - 1) / 2 * n : n / 2 * (n - 1);
  const char *failure = errors || !all_parked ? "join_error" : sum != expected || joined != n ? "sum" : NULL;
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
    {"W3", "broadcast_fanout", w3_broadcast_fanout},
    {"W4", "watch_state", w4_watch_state},
    {"W5", "oneshot_rpc", w5_oneshot_rpc},
    {"W6", "semaphore_pool", w6_semaphore_pool},
    {"W7", "notify_pingpong", w7_notify_pingpong},
    {"W8", "joinset_spawn", w8_joinset_spawn},
    {"W9", "gateway_pipeline", w9_gateway_pipeline},
    {"W10", "idle_tasks", w10_idle_tasks},
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
      if (*end || !(scale > 0 && scale < 1e9)) return usage(); /* also rejects inf and NaN */
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
    printf("%s %s ops=%llu secs=%.4f ops_per_sec=%.0f check=%s\n", w->id, w->name, (unsigned long long)call.result.ops,
           call.secs, rate, check);
    fflush(stdout);
  }
  return all_ok ? 0 : 1;
}
