/* registry.c - device ids to indexes, and devices to connections; see
 * registry.h. */
#include "registry.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

int registry_init(registry *r, uint32_t max) {
  memset(r, 0, sizeof *r);
  if (max < 1) return TG_EINVAL;
  r->max = max;
  /* calloc of a large array maps zero pages: untouched slots cost nothing. */
  r->entries = calloc((size_t)max + 1, sizeof *r->entries);
  r->nslots = 64;
  r->slots = calloc(r->nslots, sizeof *r->slots);
  uint64_t none = 0;
  if (!r->entries || !r->slots ||
      tg_watch_new(&(tg_watch_opts){.elem_size = sizeof(uint64_t), .name = "commits"}, &none, &r->commits, NULL) != 0) {
    free(r->entries);
    free(r->slots);
    memset(r, 0, sizeof *r);
    return TG_ENOMEM;
  }
  pthread_mutex_init(&r->lock, NULL);
  return 0;
}

void registry_free(registry *r) {
  if (!r->entries) return;
  uint32_t n = atomic_load(&r->count);
  for (uint32_t i = 1; i <= n; i++) free(atomic_load_explicit(&r->entries[i], memory_order_relaxed));
  free(r->entries);
  free(r->slots);
  tg_watch_tx_drop(r->commits);
  pthread_mutex_destroy(&r->lock);
  r->entries = NULL;
  r->slots = NULL;
}

uint64_t registry_hash(const char *id, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)id[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

static device_entry *entry_at(registry *r, uint32_t index) {
  return atomic_load_explicit(&r->entries[index], memory_order_acquire);
}

/* Under the lock: the slot holding id, or the empty slot where it goes. */
static uint32_t *slot_for(registry *r, const char *id, size_t len, uint64_t hash) {
  uint32_t mask = r->nslots - 1;
  for (uint32_t i = (uint32_t)hash & mask;; i = (i + 1) & mask) {
    uint32_t *s = &r->slots[i];
    if (*s == 0) return s;
    const device_entry *e = entry_at(r, *s);
    if (e->len == len && memcmp(e->id, id, len) == 0) return s;
  }
}

static int grow(registry *r) {
  uint32_t n = r->nslots * 2;
  uint32_t *slots = calloc(n, sizeof *slots);
  if (!slots) return TG_ENOMEM;
  uint32_t *old = r->slots, oldn = r->nslots;
  r->slots = slots;
  r->nslots = n;
  for (uint32_t i = 0; i < oldn; i++) {
    if (!old[i]) continue;
    const device_entry *e = entry_at(r, old[i]);
    *slot_for(r, e->id, e->len, registry_hash(e->id, e->len)) = old[i];
  }
  free(old);
  return 0;
}

int registry_intern(registry *r, const char *id, size_t len, uint64_t hash, uint32_t *index, int *created) {
  if (created) *created = 0;
  if (len < 1 || len > PROTOCOL_DEVICE_ID_MAX) return TG_EINVAL;
  pthread_mutex_lock(&r->lock);
  uint32_t *s = slot_for(r, id, len, hash);
  int rc = 0;
  if (*s) {
    *index = *s;
  } else {
    uint32_t n = atomic_load_explicit(&r->count, memory_order_relaxed);
    device_entry *e = n < r->max ? calloc(1, sizeof *e) : NULL;
    if (n >= r->max)
      rc = TG_EFULL;
    else if (!e)
      rc = TG_ENOMEM;
    if (rc == 0 && 2 * (n + 1) >= r->nslots) {
      if ((rc = grow(r)) == 0)
        s = slot_for(r, id, len, hash);
      else
        free(e);
    }
    if (rc == 0) {
      e->index = n + 1;
      e->len = (uint8_t)len;
      memcpy(e->id, id, len);
      *s = e->index;
      *index = e->index;
      atomic_store_explicit(&r->entries[e->index], e, memory_order_release);
      atomic_store_explicit(&r->count, n + 1, memory_order_release);
      if (created) *created = 1;
    }
  }
  pthread_mutex_unlock(&r->lock);
  return rc;
}

int registry_intern_for(registry *r, const credential *cred, int per_cred, const protocol_device_id *id, uint64_t hash,
                        uint32_t *index) {
  atomic_uint *added = cred ? cred->ids_added : NULL;
  /* Over its budget a credential may still send for ids that exist. */
  if (added && per_cred > 0 && atomic_load(added) >= (unsigned)per_cred && !registry_find(r, id->text))
    return SERVE_BAD_TOO_MANY_IDS;
  int created;
  if (registry_intern(r, id->text, id->len, hash, index, &created) != 0) return SERVE_BAD_TOO_MANY_DEVICES;
  if (created && added) atomic_fetch_add(added, 1);
  return 0;
}

uint32_t registry_find(registry *r, const char *id) {
  size_t len = strlen(id);
  if (len < 1 || len > PROTOCOL_DEVICE_ID_MAX) return 0;
  pthread_mutex_lock(&r->lock);
  uint32_t at = *slot_for(r, id, len, registry_hash(id, len));
  pthread_mutex_unlock(&r->lock);
  return at;
}

const device_entry *registry_entry(registry *r, uint32_t index) {
  if (index < 1 || index > r->max) return NULL;
  return entry_at(r, index);
}

const char *registry_name(registry *r, uint32_t index) {
  const device_entry *e = registry_entry(r, index);
  return e ? e->id : NULL;
}

uint32_t registry_count(registry *r) { return atomic_load(&r->count); }

uint32_t registry_connected(registry *r) { return atomic_load(&r->connected); }

/* Under the lock. */
static void unlink_entry(registry *r, device_entry *e) {
  registry_conn *c = atomic_load_explicit(&e->conn, memory_order_relaxed);
  if (!c) return;
  if (e->prev)
    e->prev->next = e->next;
  else
    c->devices = e->next;
  if (e->next) e->next->prev = e->prev;
  e->prev = e->next = NULL;
  atomic_store_explicit(&e->conn, NULL, memory_order_relaxed);
  atomic_fetch_sub(&r->connected, 1);
}

static void attach(registry *r, uint32_t index, registry_conn *c, int only_if_free) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return;
  pthread_mutex_lock(&r->lock);
  registry_conn *now = atomic_load_explicit(&e->conn, memory_order_relaxed);
  if (!c->closed && now != c && (!only_if_free || !now)) {
    unlink_entry(r, e);
    e->next = c->devices;
    if (c->devices) c->devices->prev = e;
    c->devices = e;
    atomic_store_explicit(&e->conn, c, memory_order_relaxed);
    atomic_fetch_add(&r->connected, 1);
  }
  pthread_mutex_unlock(&r->lock);
}

void registry_attach(registry *r, uint32_t index, registry_conn *c) { attach(r, index, c, 0); }

void registry_attach_free(registry *r, uint32_t index, registry_conn *c) { attach(r, index, c, 1); }

/* Under the lock: the seq window's reference rises to at least seq. */
static void raise_ref(device_entry *e, uint64_t seq) {
  if (atomic_load_explicit(&e->seq_state, memory_order_relaxed) != SEQ_KNOWN ||
      seq > atomic_load_explicit(&e->seq_ref, memory_order_relaxed))
    atomic_store_explicit(&e->seq_ref, seq, memory_order_relaxed);
  atomic_store_explicit(&e->seq_state, SEQ_KNOWN, memory_order_release);
}

int registry_seq_needs_mark(registry *r, uint32_t index, uint64_t seq, uint64_t window) {
  const device_entry *e = registry_entry(r, index);
  return e && seq > window && atomic_load_explicit(&e->seq_state, memory_order_acquire) == SEQ_UNLOOKED;
}

/* Under the lock: a device of SEQ_UNLOOKED turns out to have no mark. The
 * seqs it was admitted with were at most the window: that is its
 * reference, if there were any. */
static void no_mark(device_entry *e, uint64_t window) {
  if (atomic_load(&e->seq_low))
    raise_ref(e, window);
  else
    atomic_store_explicit(&e->seq_state, SEQ_NONE, memory_order_release);
}

/* Raises e's seq_top to at least seq. */
static void raise_top(device_entry *e, uint64_t seq) {
  uint64_t top = atomic_load_explicit(&e->seq_top, memory_order_relaxed);
  while (seq > top &&
         !atomic_compare_exchange_weak_explicit(&e->seq_top, &top, seq, memory_order_relaxed, memory_order_relaxed)) {
  }
}

void registry_seq_stored(registry *r, uint32_t index, int found, uint64_t mark, uint64_t window) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return;
  pthread_mutex_lock(&r->lock);
  if (found)
    raise_ref(e, mark);
  else if (atomic_load_explicit(&e->seq_state, memory_order_relaxed) == SEQ_UNLOOKED)
    no_mark(e, window);
  if (found && mark > atomic_load_explicit(&e->seq_top, memory_order_relaxed)) {
    raise_top(e, mark);
    atomic_store_explicit(&e->top_ts, 0, memory_order_relaxed); /* the mark's reading's ts is not stored */
  }
  atomic_store_explicit(&e->top_known, 1, memory_order_release);
  pthread_mutex_unlock(&r->lock);
}

static int within(uint64_t ref, uint64_t seq, uint64_t window) { return seq <= ref || seq - ref <= window; }

int registry_seq_admit(registry *r, uint32_t index, uint64_t seq, uint64_t window) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return -ERANGE;
  int state = atomic_load_explicit(&e->seq_state, memory_order_acquire);
  if (state == SEQ_KNOWN)
    return within(atomic_load_explicit(&e->seq_ref, memory_order_relaxed), seq, window) ? 0 : -ERANGE;
  if (state == SEQ_UNLOOKED && seq <= window) { /* within the window of any mark */
    if (!atomic_load_explicit(&e->seq_low, memory_order_relaxed)) atomic_store(&e->seq_low, 1);
    if (atomic_load(&e->seq_state) == SEQ_UNLOOKED) return 0; /* else a look-up ended meanwhile: judge again */
  }
  pthread_mutex_lock(&r->lock);
  if (atomic_load_explicit(&e->seq_state, memory_order_relaxed) == SEQ_UNLOOKED) no_mark(e, window);
  int rc = 0;
  if (atomic_load_explicit(&e->seq_state, memory_order_relaxed) == SEQ_KNOWN)
    rc = within(atomic_load_explicit(&e->seq_ref, memory_order_relaxed), seq, window) ? 0 : -ERANGE;
  else
    raise_ref(e, seq); /* the first seq of a device without a mark */
  pthread_mutex_unlock(&r->lock);
  return rc;
}

/* Under the lock: e is owed an ack on its connection, if it wants acks. */
static void owe_ack(device_entry *e) {
  registry_conn *c = atomic_load_explicit(&e->conn, memory_order_relaxed);
  if (e->ack_due || !c || c->closed || !c->acks_ready) return;
  e->ack_due = 1;
  e->ack_next = c->acks;
  if (!c->acks) tg_notify_one(c->acks_ready);
  c->acks = e;
}

/* Under the lock: the seq e's acks say, committed or published. */
static uint64_t durable_seq(const device_entry *e) {
  if (!e->has_published) return e->acked;
  return e->has_acked && e->acked > e->published ? e->acked : e->published;
}

/* Under the lock: takes up to max acks off c's list. An entry that moved
 * to another connection since it was put there goes to that one's. */
static int take_acks(registry_conn *c, registry_ack *out, int max) {
  int n = 0;
  while (c->acks && n < max) {
    device_entry *e = c->acks;
    c->acks = e->ack_next;
    e->ack_next = NULL;
    e->ack_due = 0;
    if (atomic_load_explicit(&e->conn, memory_order_relaxed) == c)
      out[n++] = (registry_ack){e->id, durable_seq(e)};
    else
      owe_ack(e);
  }
  return n;
}

void registry_detach_all(registry *r, registry_conn *c) {
  pthread_mutex_lock(&r->lock);
  c->closed = 1;
  while (c->devices) unlink_entry(r, c->devices);
  /* No device is on c now: every ack still listed goes to its device's
   * new connection, or nowhere, and none is taken for c. */
  take_acks(c, NULL, INT_MAX);
  pthread_mutex_unlock(&r->lock);
}

void registry_hello(registry *r, registry_conn *c, int answers_health, tg_notify *acks_ready) {
  pthread_mutex_lock(&r->lock);
  c->answers_health |= answers_health;
  if (acks_ready) c->acks_ready = acks_ready;
  pthread_mutex_unlock(&r->lock);
}

void registry_committed(registry *r, const batch *b) {
  pthread_mutex_lock(&r->lock);
  for (uint32_t i = 0; i < b->n; i++) {
    device_entry *e = (device_entry *)registry_entry(r, b->items[i].device);
    if (!e) continue;
    uint64_t seq = b->items[i].seq;
    if (!e->has_acked || seq > e->acked) e->acked = seq;
    e->has_acked = 1;
    raise_ref(e, seq);
    owe_ack(e);
  }
  r->ncommits++;
  tg_watch_send(r->commits, &r->ncommits);
  pthread_mutex_unlock(&r->lock);
}

void registry_published(registry *r, uint32_t index, uint64_t seq) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return;
  pthread_mutex_lock(&r->lock);
  if (!e->has_published || seq > e->published) e->published = seq;
  e->has_published = 1;
  raise_ref(e, seq);
  owe_ack(e);
  r->ncommits++;
  tg_watch_send(r->commits, &r->ncommits);
  pthread_mutex_unlock(&r->lock);
}

int registry_commits_subscribe(registry *r, tg_watch_rx **rx) { return tg_watch_subscribe(r->commits, rx); }

int registry_acked(registry *r, uint32_t index, uint64_t seq) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return 0;
  pthread_mutex_lock(&r->lock);
  int in = e->has_acked && e->acked >= seq;
  pthread_mutex_unlock(&r->lock);
  return in;
}

int registry_durable(registry *r, uint32_t index, uint64_t seq) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return 0;
  pthread_mutex_lock(&r->lock);
  int in = (e->has_acked || e->has_published) && durable_seq(e) >= seq;
  pthread_mutex_unlock(&r->lock);
  return in;
}

int registry_take_acks(registry *r, registry_conn *c, registry_ack *out, int max) {
  pthread_mutex_lock(&r->lock);
  int n = take_acks(c, out, max);
  pthread_mutex_unlock(&r->lock);
  return n;
}

int registry_seq_unlooked(registry *r, uint32_t index) {
  const device_entry *e = registry_entry(r, index);
  return e && !atomic_load_explicit(&e->top_known, memory_order_acquire);
}

void registry_seq_seen(registry *r, uint32_t index, uint64_t seq, int64_t ts_ms) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e || seq <= atomic_load_explicit(&e->seq_top, memory_order_relaxed)) return;
  raise_top(e, seq);
  atomic_store_explicit(&e->top_ts, ts_ms, memory_order_relaxed);
}

int registry_seq_restarted(registry *r, uint32_t index, uint64_t seq, int64_t ts_ms) {
  const device_entry *e = registry_entry(r, index);
  if (!e) return 0;
  int64_t top_ts = atomic_load_explicit(&e->top_ts, memory_order_relaxed);
  return top_ts && ts_ms > top_ts && seq <= atomic_load_explicit(&e->seq_top, memory_order_relaxed);
}

uint64_t registry_seq_next(registry *r, uint32_t index) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return 0;
  atomic_store_explicit(&e->top_ts, 0, memory_order_relaxed); /* a numbered top says nothing of restarts */
  return atomic_fetch_add_explicit(&e->seq_top, 1, memory_order_relaxed) + 1;
}

/* Under the lock: whether e may be asked now, at most health_per_s times
 * a second with bursts of as many (GCRA: health_tat is when the budget
 * is whole again). */
static int health_allowed(registry *r, device_entry *e) {
  if (r->health_per_s == 0) return 1;
  int64_t now = tg_now(), interval = TG_SEC(1) / r->health_per_s;
  int64_t tat = e->health_tat > now ? e->health_tat : now;
  if (tat - now > TG_SEC(1) - interval) {
    atomic_fetch_add(&r->health_limited, 1);
    return 0;
  }
  e->health_tat = tat + interval;
  return 1;
}

/* Under the lock. */
static int ask_entry(registry *r, device_entry *e, const health_request *req) {
  registry_conn *c = atomic_load_explicit(&e->conn, memory_order_relaxed);
  if (!c || c->closed) return TG_ECLOSED;
  if (!c->answers_health) return -EOPNOTSUPP;
  if (!health_allowed(r, e)) return -EBUSY;
  int rc = tg_mpsc_try_send(c->outbox, req);
  return rc == TG_EFULL ? TG_EFULL : rc != 0 ? TG_ECLOSED : 0;
}

int registry_ask(registry *r, const char *id, const health_request *req, uint32_t *index) {
  size_t len = strlen(id);
  if (len < 1 || len > PROTOCOL_DEVICE_ID_MAX) return -ENOENT;
  pthread_mutex_lock(&r->lock);
  uint32_t at = *slot_for(r, id, len, registry_hash(id, len));
  int rc = at ? ask_entry(r, entry_at(r, at), req) : -ENOENT;
  pthread_mutex_unlock(&r->lock);
  if (index) *index = at;
  return rc;
}

int registry_ask_index(registry *r, uint32_t index, const health_request *req) {
  device_entry *e = (device_entry *)registry_entry(r, index);
  if (!e) return -ENOENT;
  pthread_mutex_lock(&r->lock);
  int rc = ask_entry(r, e, req);
  pthread_mutex_unlock(&r->lock);
  return rc;
}

uint32_t registry_answering(registry *r, uint32_t first, uint32_t n, uint8_t *out) {
  uint32_t count = registry_count(r), done = 0;
  pthread_mutex_lock(&r->lock);
  for (; done < n && first + done >= 1 && first + done <= count; done++) {
    const registry_conn *c = atomic_load_explicit(&entry_at(r, first + done)->conn, memory_order_relaxed);
    out[done] = c && c->answers_health && !c->closed;
  }
  pthread_mutex_unlock(&r->lock);
  return done;
}

int registry_pick_connected(registry *r, rng *g, uint32_t *out, int k) {
  uint32_t n = registry_count(r);
  int got = 0;
  if (n == 0 || k < 1) return 0;
  pthread_mutex_lock(&r->lock);
  /* Each pick: the first connected device not yet picked at or after a
   * random index; bounded by n steps. */
  for (int pick = 0; pick < k; pick++) {
    uint32_t start = rng_below(g, n);
    for (uint32_t step = 0; step < n; step++) {
      const device_entry *e = entry_at(r, 1 + (start + step) % n);
      int taken = 0;
      for (int i = 0; i < got; i++) taken |= out[i] == e->index;
      const registry_conn *c = atomic_load_explicit(&e->conn, memory_order_relaxed);
      if (!taken && c && c->answers_health) {
        out[got++] = e->index;
        break;
      }
    }
  }
  pthread_mutex_unlock(&r->lock);
  return got;
}

void registry_set_health_rate(registry *r, uint32_t per_s) {
  pthread_mutex_lock(&r->lock);
  r->health_per_s = per_s;
  pthread_mutex_unlock(&r->lock);
}
