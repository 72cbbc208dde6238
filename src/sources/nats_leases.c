/* nats_leases.c - partition leases in a JetStream key-value bucket; see
 * nats_leases.h.
 *
 * One task: each round is one job on the blocking pool (libnats' calls
 * block), then a wait of a quarter of the lease time or the shutdown.
 * The consumer stops using a lease not renewed for two thirds of the
 * lease time, and looks every sixth: it has stopped before the key can
 * expire and another node claim it. */
#include "nats_leases.h"

#include "figure.h"
#include "registry.h"
#include "rng.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
  LEASES_STACK = 64 * 1024,
  CONNECT_TIMEOUT_MS = 5000,
  BACKOFF_MIN_MS = 100,
  BACKOFF_MAX_MS = 5000,
  FAILURE_LOG_MS = 10000,
  NODE_MAX = 96,
  KEY_MAX = 128,
  DONE_GRACE_MS = 2000, /* after the drain deadline, the consumer's last acks */
};

/* Invariant: state[p] moves only as nats_leases.h draws it; rev[p] is
 * the revision this node wrote last to p.<p>, valid while state[p] is
 * CLAIMED, OWNED, RELEASING or DRAINED. The task alone touches nc, js,
 * kv and rev. */
struct nats_leases {
  nats_leases_opts o;
  int count;
  char node[NODE_MAX];
  char instance[40];       /* this process: the value of node.<id>, so that two processes of one name are told apart */
  uint64_t node_rev;       /* the revision this process wrote last to node.<id>; 0: it holds no such key */
  int64_t node_written_ns; /* tg_now() of that write */
  _Atomic int *state;
  _Atomic int64_t *renewed_ns; /* tg_now() of p's last write */
  uint64_t *rev;
  tg_notify *changed;
  tg_notify *done; /* the consumer drained */
  tg_notify *kick; /* the consumer connected: a round now, to claim */
  atomic_int consumer_done;
  natsConnection *nc;
  jsCtx *js;
  kvStore *kv;
  rng jitter;
  log_gate fail_gate;
  figure held, nodes, lost, claimed;
};

static void key_of(const nats_leases *l, int p, char *key, size_t len) {
  if (l->o.partitions == 0)
    snprintf(key, len, "p.all");
  else
    snprintf(key, len, "p.%d", p);
}

/* ------------------------------------------------------------ the bucket */

/* libnats' last error on this thread without its "(file.c:123): "; "" if none. */
static const char *nats_error_text(void) {
  const char *text = nats_GetLastError(NULL);
  if (!text) return "";
  if (text[0] == '(') {
    const char *end = strstr(text, "): ");
    if (end) text = end + 3;
  }
  return text;
}

/* A libnats failure in one line: its status, the JetStream error code
 * when there is one, and the library's own words. */
void nats_why(char *why, size_t whylen, const char *what, natsStatus s, jsErrCode jerr) {
  const char *text = nats_error_text(), *status = natsStatus_GetText(s);
  size_t used = (size_t)snprintf(why, whylen, "%s: %s", what, status);
  if (jerr && used < whylen) used += (size_t)snprintf(why + used, whylen - used, " (JetStream error %d)", (int)jerr);
  if (text && *text && strcmp(text, status) != 0 && used < whylen) snprintf(why + used, whylen - used, ": %s", text);
}

int nats_servers_parse(const char *list, nats_servers *out, char *err, size_t errlen) {
  *out = (nats_servers){.text = strdup(list)};
  size_t count = 1;
  for (const char *c = list; *c; c++) count += *c == ',';
  out->urls = calloc(count, sizeof *out->urls);
  if (!out->text || !out->urls) {
    nats_servers_free(out);
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  for (char *u = out->text, *next; u; u = next) {
    next = strchr(u, ',');
    if (next) *next++ = '\0';
    if ((strncmp(u, "nats://", 7) != 0 && strncmp(u, "tls://", 6) != 0) || !strchr(u + 6, ':')) {
      snprintf(err, errlen, "--nats wants nats://HOST:PORT[,nats://HOST:PORT...], got '%.200s'", u);
      nats_servers_free(out);
      return -EINVAL;
    }
    out->urls[out->count++] = u;
  }
  return 0;
}

void nats_servers_free(nats_servers *s) {
  free(s->urls);
  free(s->text);
  *s = (nats_servers){0};
}

static void disconnect(nats_leases *l) {
  kvStore_Destroy(l->kv);
  jsCtx_Destroy(l->js);
  natsConnection_Destroy(l->nc);
  l->kv = NULL;
  l->js = NULL;
  l->nc = NULL;
}

typedef struct round_args {
  nats_leases *l;
  int stopping;
  int moved;        /* a state moved: the consumer looks again */
  int handing_back; /* the partition this round hands back; -1: none */
  int nodes, share; /* as this round counted */
  char why[400];
} round_args;

/* Connects and binds the bucket, creating it when missing. */
static int connect_bucket(round_args *a) {
  nats_leases *l = a->l;
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetServers(o, (const char **)l->o.servers, l->o.nservers);
  if (s == NATS_OK) s = natsOptions_SetName(o, "telegate-leases");
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, false);
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, CONNECT_TIMEOUT_MS);
  if (s == NATS_OK) s = natsConnection_Connect(&l->nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    l->nc = NULL;
    nats_why(a->why, sizeof a->why, "cannot connect", s, 0);
    return -ECONNREFUSED;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = CONNECT_TIMEOUT_MS;
  if ((s = natsConnection_JetStream(&l->js, l->nc, &jo)) != NATS_OK) {
    l->js = NULL;
    nats_why(a->why, sizeof a->why, "no JetStream context", s, 0);
    return -EPROTO;
  }
  s = js_KeyValue(&l->kv, l->js, l->o.bucket);
  if (s == NATS_NOT_FOUND) {
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = l->o.bucket;
    kc.History = 1;
    kc.TTL = (int64_t)l->o.lease_ms * 1000000; /* nanoseconds, as the server has it */
    kc.StorageType = js_FileStorage;
    kc.Replicas = l->o.replicas > 0 ? l->o.replicas : 1;
    s = js_CreateKeyValue(&l->kv, l->js, &kc);
  }
  if (s != NATS_OK) {
    l->kv = NULL;
    nats_why(a->why, sizeof a->why, "cannot bind the lease bucket", s, 0);
    return -EPROTO;
  }
  return 0;
}

/* Claims p: its key is missing, empty or ours. Returns 1 when held now. */
static int claim(nats_leases *l, int p) {
  char key[KEY_MAX];
  key_of(l, p, key, sizeof key);
  kvEntry *e = NULL;
  uint64_t rev = 0;
  natsStatus s = kvStore_Get(&e, l->kv, key);
  if (s == NATS_NOT_FOUND) {
    s = kvStore_CreateString(&rev, l->kv, key, l->node);
  } else if (s == NATS_OK) {
    const char *v = kvEntry_ValueString(e);
    if (!v || !*v || strcmp(v, l->node) == 0)
      s = kvStore_UpdateString(&rev, l->kv, key, l->node, kvEntry_Revision(e));
    else
      s = NATS_ERR; /* another node's */
    kvEntry_Destroy(e);
  }
  if (s != NATS_OK) return 0;
  l->rev[p] = rev;
  atomic_store(&l->renewed_ns[p], tg_now());
  return 1;
}

/* Writes p's key again (value ours, or "" to hand it back); 0 or -1 when
 * the write was refused: another node holds it now. */
static int renew(nats_leases *l, int p, const char *value) {
  char key[KEY_MAX];
  key_of(l, p, key, sizeof key);
  uint64_t rev = 0;
  if (kvStore_UpdateString(&rev, l->kv, key, value, l->rev[p]) != NATS_OK) return -1;
  l->rev[p] = rev;
  atomic_store(&l->renewed_ns[p], tg_now());
  return 0;
}

static int is_held(int st) { return st == LEASE_CLAIMED || st == LEASE_OWNED || st == LEASE_RELEASING; }

/* The nodes alive: the node.* keys, this one's among them; 0 when they
 * could not be listed (the round then neither claims nor hands back). */
static int nodes_alive(nats_leases *l) {
  kvKeysList keys = {0};
  int n = 0;
  if (kvStore_Keys(&keys, l->kv, NULL) == NATS_OK)
    for (int i = 0; i < keys.Count; i++) n += strncmp(keys.Keys[i], "node.", 5) == 0;
  kvKeysList_Destroy(&keys);
  return n;
}

/* Looks key up: NATS_OK with *rev its revision when it holds this
 * process's instance (0: another's), NATS_NOT_FOUND, or why the bucket
 * could not be read. */
static natsStatus node_key_read(nats_leases *l, const char *key, uint64_t *rev) {
  kvEntry *e = NULL;
  natsStatus s = kvStore_Get(&e, l->kv, key);
  *rev = 0;
  if (s == NATS_OK) {
    const char *v = kvEntry_ValueString(e);
    if (v && strcmp(v, l->instance) == 0) *rev = kvEntry_Revision(e);
    kvEntry_Destroy(e);
  }
  return s;
}

/* Holds node.<id> for this process, or lets it go when stopping. The
 * first write creates the key and fails while it exists: another process
 * runs under this node's name (or one killed a moment ago, whose key
 * expires within the lease time). Later writes are checked against the
 * revision written last, so a process whose key expired (its rounds were
 * late) or was taken learns it and gives up the leases it held: another
 * process may claim them now. A write that failed may still have been
 * made (a timeout while the cluster elects a leader): the key then holds
 * this process's instance, and its revision is taken from there. Reads
 * may come from a replica behind the others (the bucket allows direct
 * gets): a key not found is taken as expired only once the lease time
 * has passed since this process last wrote it, by its own clock; before
 * that, the round goes on and the next one writes again. Returns 0,
 * -EEXIST with why, or -EPIPE (the bucket could not be reached). */
static int node_key_write(nats_leases *l, int stopping, char *why, size_t whylen) {
  char key[KEY_MAX];
  snprintf(key, sizeof key, "node.%s", l->node);
  uint64_t rev = 0, ours = 0;
  natsStatus s;
  if (stopping) {
    s = l->node_rev ? kvStore_Delete(l->kv, key) : NATS_OK;
    l->node_rev = 0;
  } else if (!l->node_rev) {
    s = kvStore_CreateString(&rev, l->kv, key, l->instance);
    natsStatus now = s == NATS_OK ? NATS_OK : node_key_read(l, key, &ours);
    if (s != NATS_OK && now == NATS_OK && ours) {
      s = NATS_OK;
      rev = ours;
    } else if (s != NATS_OK && now == NATS_OK) {
      snprintf(why, whylen,
               "another process runs as node %.63s (its key node.%.63s is in the bucket): give each node its own "
               "--node; waiting until that key goes (a killed node's expires within the lease time)",
               l->node, l->node);
      return -EEXIST;
    }
  } else {
    s = kvStore_UpdateString(&rev, l->kv, key, l->instance, l->node_rev);
    natsStatus now = s == NATS_OK ? NATS_OK : node_key_read(l, key, &ours);
    int expired = tg_now() - l->node_written_ns >= TG_MS(l->o.lease_ms);
    if (s != NATS_OK && now == NATS_OK && ours) {
      s = NATS_OK;
      rev = ours;
    } else if (s != NATS_OK && now == NATS_NOT_FOUND && !expired) {
      return 0; /* a replica behind, or a write that failed in flight: the next round tells */
    } else if (s != NATS_OK && (now == NATS_NOT_FOUND || now == NATS_OK)) {
      l->node_rev = 0;
      for (int p = 0; p < l->count; p++) {
        int st = atomic_load(&l->state[p]);
        if (is_held(st) && nats_leases_move(l, p, st, LEASE_LOST) == 0) figure_add_shared(&l->lost, 1);
      }
      snprintf(why, whylen, "the key node.%.63s %s: the leases held are given up", l->node,
               now == NATS_OK ? "was written by another process" : "expired (its rounds came too late)");
      return -EEXIST;
    }
  }
  if (s != NATS_OK) {
    nats_why(why, whylen, "cannot write the node's key", s, 0);
    disconnect(l);
    return -EPIPE;
  }
  if (!stopping) {
    l->node_rev = rev;
    l->node_written_ns = tg_now();
  }
  return 0;
}

/* One round on the blocking pool: liveness, renewals, the share. */
static int round_run(round_args *a) {
  nats_leases *l = a->l;
  if (!l->kv) {
    int r = connect_bucket(a);
    if (r != 0) {
      disconnect(l);
      return r;
    }
  }
  int r = node_key_write(l, a->stopping, a->why, sizeof a->why);
  if (r != 0) return r;
  int held = 0;
  for (int p = 0; p < l->count; p++) {
    int st = atomic_load(&l->state[p]);
    if (st == LEASE_DRAINED) { /* handed back: another node may take it at once */
      renew(l, p, "");
      nats_leases_move(l, p, LEASE_DRAINED, LEASE_FREE);
      a->moved = 1;
    } else if (is_held(st) && !a->stopping) {
      if (renew(l, p, l->node) != 0 && nats_leases_move(l, p, st, LEASE_LOST) == 0) {
        figure_add_shared(&l->lost, 1);
        a->moved = 1;
      }
    }
    held += is_held(atomic_load(&l->state[p])) && atomic_load(&l->state[p]) != LEASE_RELEASING;
  }
  int nodes = a->stopping ? 0 : nodes_alive(l);
  if (nodes == 0) return 0;
  int share = (l->count + nodes - 1) / nodes;
  atomic_store_explicit(&l->nodes, (uint64_t)nodes, memory_order_relaxed);
  a->nodes = nodes;
  a->share = share;
  if (held > share) /* a node joined: one back per round, the highest */
    for (int p = l->count - 1; p >= 0; p--)
      if (nats_leases_move(l, p, LEASE_OWNED, LEASE_RELEASING) == 0) {
        a->moved = 1;
        a->handing_back = p;
        break;
      }
  /* Each node starts looking at a place of its own, so that nodes
   * starting together do not all race for the same partitions. */
  int start = (int)(registry_hash(l->node, strlen(l->node)) % (uint64_t)l->count);
  for (int i = 0; i < l->count && held < share && atomic_load(l->o.consumer_up); i++) {
    int p = (start + i) % l->count;
    if (atomic_load(&l->state[p]) != LEASE_FREE || !claim(l, p)) continue;
    if (nats_leases_move(l, p, LEASE_FREE, LEASE_CLAIMED) == 0) {
      figure_add_shared(&l->claimed, 1);
      held++;
      a->moved = 1;
    }
  }
  return 0;
}

static int round_call(void *arg) {
  int r = round_run(arg);
  nats_ReleaseThreadMemory();
  OPENSSL_thread_stop();
  return r;
}

static int disconnect_call(void *arg) {
  disconnect(arg);
  nats_ReleaseThreadMemory();
  OPENSSL_thread_stop();
  return 0;
}

static void held_update(nats_leases *l) {
  uint64_t n = 0;
  for (int p = 0; p < l->count; p++) n += is_held(atomic_load(&l->state[p]));
  atomic_store_explicit(&l->held, n, memory_order_relaxed);
}

static void *leases_task(void *arg) {
  nats_leases *l = arg;
  int backoff = BACKOFF_MIN_MS, was_up = 0;
  while (!tg_cancel_fired(l->o.cancel)) {
    round_args a = {.l = l, .handing_back = -1};
    int r = tg_blocking_run(round_call, &a);
    if (a.handing_back >= 0)
      log_event(l->o.log, "🔑", "nats", 0, "nats_lease_handing_back",
                "NATS leases: %d nodes alive, a share of %d partitions each: handing partition %d back once drained",
                a.nodes, a.share, a.handing_back);
    if (a.moved) tg_notify_one(l->changed);
    held_update(l);
    int64_t wait = TG_MS(l->o.lease_ms / 4);
    if (r != 0) {
      uint64_t held_back;
      if (log_gate_pass(&l->fail_gate, tg_now(), TG_MS(FAILURE_LOG_MS), &held_back))
        log_event(l->o.log, "❌", "nats", 0, "nats_leases_failed",
                  "NATS leases (bucket %s): %s; retrying - partitions whose lease is not renewed in time are not "
                  "consumed%s",
                  l->o.bucket, a.why, log_held_note(held_back).s);
      wait = TG_MS(backoff / 2) + (int64_t)(rng_unit(&l->jitter) * (double)TG_MS(backoff / 2));
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      was_up = 0;
    } else if (!was_up) {
      l->fail_gate = (log_gate){0};
      backoff = BACKOFF_MIN_MS;
      was_up = 1;
      log_event(l->o.log, "🔑", "nats", 0, "nats_leases",
                "NATS leases: node %s in bucket %s, %d lease%s of %d ms; %" PRIu64 " node%s alive", l->node,
                l->o.bucket, l->count, l->count == 1 ? "" : "s", l->o.lease_ms, figure_get(&l->nodes),
                figure_get(&l->nodes) == 1 ? "" : "s");
    }
    /* The next round after the wait, or at once when the consumer came up. */
    tg_case cs[2] = {tg_cancel_case(l->o.cancel), tg_notify_wait_case(l->kick)};
    tg_select(cs, 2, tg_deadline_in(wait));
  }
  /* The consumer's drain, then the leases it emptied go back at once. */
  int64_t until = atomic_load(l->o.drain_until) + TG_MS(DONE_GRACE_MS);
  while (!atomic_load(&l->consumer_done) && tg_notify_wait_dl(l->done, until) == 0) {
  }
  if (l->kv) {
    round_args a = {.l = l, .stopping = 1};
    tg_blocking_run(round_call, &a);
  }
  tg_blocking_run(disconnect_call, l);
  for (int p = 0; p < l->count; p++) atomic_store(&l->state[p], LEASE_FREE);
  held_update(l);
  return NULL;
}

/* ------------------------------------------------------------ the table */

int nats_leases_count(const nats_leases *l) { return l->count; }

const char *nats_leases_node(const nats_leases *l) { return l->node; }

int nats_leases_state(nats_leases *l, int p) { return atomic_load(&l->state[p]); }

int nats_leases_move(nats_leases *l, int p, int from, int to) {
  return atomic_compare_exchange_strong(&l->state[p], &from, to) ? 0 : TG_EAGAIN;
}

int nats_leases_fresh(nats_leases *l, int p, int64_t now_ns) {
  return now_ns - atomic_load(&l->renewed_ns[p]) < TG_MS(2 * l->o.lease_ms / 3);
}

tg_notify *nats_leases_changed(nats_leases *l) { return l->changed; }

void nats_leases_kick(nats_leases *l) { tg_notify_one(l->kick); }

void nats_leases_consumer_done(nats_leases *l) {
  atomic_store(&l->consumer_done, 1);
  tg_notify_one(l->done);
}

void nats_leases_figures(nats_leases *l, uint64_t *held, uint64_t *nodes, uint64_t *lost, uint64_t *claimed) {
  *held = figure_get(&l->held);
  *nodes = figure_get(&l->nodes);
  *lost = figure_get(&l->lost);
  *claimed = figure_get(&l->claimed);
}

void nats_leases_count_lost(nats_leases *l) { figure_add_shared(&l->lost, 1); }

void nats_leases_free(nats_leases *l) {
  if (!l) return;
  if (l->changed) tg_notify_free(l->changed);
  if (l->done) tg_notify_free(l->done);
  if (l->kick) tg_notify_free(l->kick);
  free(l->state);
  free(l->renewed_ns);
  free(l->rev);
  free(l);
}

/* The node's id is --node's, else the host name up to its first dot,
 * other characters than --node takes made '-'; this process's instance
 * is its process id and a random part, new at each start. */
static void node_id(nats_leases *l) {
  if (l->o.node) {
    snprintf(l->node, sizeof l->node, "%s", l->o.node);
  } else {
    char host[NODE_MAX] = "telegate";
    gethostname(host, sizeof host - 1);
    host[strcspn(host, ".")] = '\0';
    for (char *c = host; *c; c++)
      if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) *c = '-';
    snprintf(l->node, sizeof l->node, "%.63s", host[0] ? host : "telegate");
  }
  snprintf(l->instance, sizeof l->instance, "%d-%016" PRIx64, (int)getpid(), rng_next(&l->jitter));
}

int nats_leases_start(tg_joinset *tasks, const nats_leases_opts *o, nats_leases **out, char *err, size_t errlen) {
  *out = NULL;
  nats_leases *l = calloc(1, sizeof *l);
  if (!l) {
    snprintf(err, errlen, "out of memory");
    return TG_ENOMEM;
  }
  l->o = *o;
  l->count = o->partitions > 0 ? o->partitions : 1;
  l->jitter = rng_stream((uint64_t)tg_now() ^ (uint64_t)getpid(), 13);
  node_id(l);
  l->state = calloc((size_t)l->count, sizeof *l->state);
  l->renewed_ns = calloc((size_t)l->count, sizeof *l->renewed_ns);
  l->rev = calloc((size_t)l->count, sizeof *l->rev);
  int r = !l->state || !l->renewed_ns || !l->rev ? TG_ENOMEM : 0;
  if (r == 0) r = tg_notify_new(&l->changed, "nats-leases");
  if (r == 0) r = tg_notify_new(&l->done, "nats-consumer-done");
  if (r == 0) r = tg_notify_new(&l->kick, "nats-leases-kick");
  if (r != 0) {
    snprintf(err, errlen, "out of memory");
    nats_leases_free(l);
    return r;
  }
  tg_spawn_opts so = {.stack_size = LEASES_STACK, .name = "nats-leases"};
  if ((r = tg_joinset_spawn(tasks, leases_task, l, &so, NULL)) != 0) {
    snprintf(err, errlen, "cannot start the NATS leases: %s", tg_strerror(r));
    nats_leases_free(l);
    return r;
  }
  *out = l;
  return 0;
}
