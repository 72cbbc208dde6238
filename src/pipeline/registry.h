/* registry.h - device ids as the devices send them, mapped to the
 * pipeline's numeric ids, and the connection each device talks over.
 *
 * A device id is a string (protocol.h: up to 32 bytes of [A-Za-z0-9_.:-]).
 * The first time serve sees one it gets the next index, 1, 2, 3 ...: the
 * aggregator's per-device state, the storage's high-water marks and the
 * readings in the channels all use that index, and registry_name turns it
 * back into the string for snapshots and the database. Indexes are never
 * reused; there are at most `max` of them, so memory stays bounded
 * whatever ids devices invent.
 *
 * A device is attached to the connection its latest reading came over.
 * Health requests for it go into that connection's outbox (an mpsc its
 * task selects on), so only the connection's own tasks ever write to the
 * socket, and only to a connection that said in its hello that it
 * answers them. A connection that ends detaches all its devices first;
 * from then on nothing can be put in its outbox, which it then drains.
 *
 * Those who wait for the commit of readings of many devices at once (an
 * HTTP write, answered once its points are committed) follow the commits
 * watch instead: every registry_committed sends on it, and
 * registry_acked tells whether a device's readings up to a seq are in.
 *
 * With --nats, what came in over this node's own ports is not committed
 * here but published to the stream (nats_publish.h), and the node that
 * consumes the device's partition commits it: registry_published is the
 * commit of a front node, raising what is acked to the device and
 * waking the commits watch as a commit does. registry_acked still says
 * only what this node committed (the NATS source acks JetStream on it);
 * registry_durable says either.
 *
 * Acknowledgements: once a batch is committed, registry_committed raises
 * each of its devices' acked seq and puts the device on the ack list of
 * the connection it is attached to now, if that connection asked for
 * acks. A device is on one list at most, however many batches commit
 * before its connection takes it off (registry_take_acks), so the acks
 * due coalesce: a connection whose device reads slowly is owed one line
 * per device, never a queue that grows.
 *
 * The seq window: a reading whose seq is more than a window above what
 * the gateway knows of its device is refused (registry_seq_admit), so
 * that one line cannot move a device's high-water mark to the top and
 * have every later reading dropped as a resend. What it knows, the
 * reference: the device's mark in the database, raised by every commit
 * (registry_committed); for a device that has no mark yet, the first seq
 * admitted this run. Readings admitted but not committed do not raise
 * it, so a run of readings can climb by at most a window per commit.
 * The mark is looked up by the caller (registry_seq_stored) only when
 * the registry needs it: for a seq above the window before the device's
 * first commit of the run. A seq up to the window is within the window
 * of any mark, so devices that count from 0 are never looked up; after
 * such readings, a device found without a mark takes the window itself
 * as its reference.
 *
 * Readings without a seq: the gateway numbers them (registry_seq_next)
 * after the highest seq it knows of the device - its stored mark, looked
 * up first when it is not known yet, and every seq admitted or numbered
 * this run (registry_seq_seen) - so a numbered reading is never taken for
 * a resend, and the readings of a device are stored in arrival order.
 *
 * A seq that restarts: a reading whose seq is at or below the highest
 * seq its device sent this run, but whose timestamp is later than that
 * reading's, is no resend (a resend is an older reading again): the
 * device started counting again, and every reading it sends until its
 * seq passes the old top would be dropped as a resend. It is refused
 * (registry_seq_restarted) so the device hears of it. Only what this run
 * saw is known: after a restart of serve, a device's first readings are
 * judged against its stored mark alone, which has no timestamp.
 *
 * Health requests to one device are rate-limited (health_per_s): an
 * on-demand check cannot be turned into a flood of lines to a device.
 *
 * Threads: every call may come from any task or thread. Lookups of a
 * known index take no lock (entries are immutable once published); the
 * map, attach and detach take one mutex. */
#ifndef TELEGATE_REGISTRY_H
#define TELEGATE_REGISTRY_H

#include "credentials.h"
#include "gateway.h"
#include "health.h"
#include "protocol.h"
#include "reading.h"
#include "rng.h"
#include "tg/tg.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct device_entry device_entry;

/* A connection as the registry sees it. Owned by the connection; the
 * fields below outbox are the registry's, under its lock. */
typedef struct registry_conn {
  tg_mpsc_tx *outbox;    /* health_request elements */
  tg_notify *acks_ready; /* woken when `acks` becomes non-empty; NULL: no acks wanted */
  device_entry *devices; /* attached devices, linked through the entries */
  device_entry *acks;    /* devices owed an ack, linked through ack_next */
  int answers_health;    /* said so in its hello */
  int closed;            /* detached: no more requests or acks */
} registry_conn;

/* Invariant: an entry is on the device list of exactly the connection in
 * `conn`, or on none when conn is NULL; it is on one ack list at most
 * (ack_due), usually its connection's. */
struct device_entry {
  uint32_t index;            /* 1-based */
  _Atomic uint8_t seq_state; /* SEQ_*: how much the gateway knows of the device's seqs */
  _Atomic uint8_t seq_low;   /* SEQ_UNLOOKED: a seq at most the window was admitted without a look-up */
  _Atomic uint64_t seq_ref;  /* when SEQ_KNOWN: the seq the window is measured from; raised under the lock */
  _Atomic uint64_t seq_top;  /* the highest seq admitted or numbered this run, or the stored mark */
  _Atomic int64_t top_ts;    /* the ts of the reading that brought seq_top; 0: not known */
  _Atomic uint8_t top_known; /* the stored mark was looked up and is in seq_top */
  int64_t health_tat;        /* the rate limit's next free time (GCRA), under the lock */
  uint8_t len;
  uint8_t has_acked, ack_due; /* under the lock */
  char id[PROTOCOL_DEVICE_ID_MAX + 1];
  _Atomic(registry_conn *) conn; /* written under the lock, read anywhere */
  device_entry *prev, *next;     /* on conn's list; under the lock */
  device_entry *ack_next;        /* on an ack list; under the lock */
  uint64_t acked;                /* the highest seq committed, when has_acked; under the lock */
  uint64_t published;            /* the highest seq JetStream took from this node, when has_published; under the lock */
  uint8_t has_published;         /* under the lock */
};

/* What device_entry.seq_ref holds. */
enum {
  SEQ_UNLOOKED = 0, /* the stored mark was not looked up yet: only seqs up to the window pass */
  SEQ_NONE,         /* no stored mark, nothing admitted yet: the next seq becomes the reference */
  SEQ_KNOWN,        /* seq_ref is the reference */
};

/* One ack owed to a connection, from registry_take_acks. */
typedef struct registry_ack {
  const char *id; /* the entry's, valid while the registry is */
  uint64_t seq;
} registry_ack;

typedef struct registry {
  pthread_mutex_t lock;
  uint32_t max;
  atomic_uint count;                /* entries published: indexes 1..count */
  _Atomic(device_entry *) *entries; /* max + 1 slots, [0] unused */
  uint32_t *slots;                  /* open addressing: index, 0 = empty */
  uint32_t nslots;                  /* power of two, > 2 * count */
  atomic_uint connected;            /* entries attached to a connection */
  uint32_t health_per_s;            /* health requests per device per second; 0: no limit. Under the lock */
  _Atomic uint64_t health_limited;  /* requests refused by that limit */
  tg_watch_tx *commits;             /* uint64_t: batches committed so far */
  uint64_t ncommits;                /* under the lock */
} registry;

/* Returns 0 or TG_ENOMEM. */
int registry_init(registry *r, uint32_t max);
void registry_free(registry *r);

/* A 64-bit hash of an id's bytes (FNV-1a), also for callers' caches. */
uint64_t registry_hash(const char *id, size_t len);

/* The index of id, adding it if new (then *created, when not NULL, is
 * 1). Returns 0 with *index set, or TG_EFULL when it is new and `max` ids
 * exist, TG_ENOMEM. */
int registry_intern(registry *r, const char *id, size_t len, uint64_t hash, uint32_t *index, int *created);

/* The index of id on behalf of a holder of cred (NULL: credentials are
 * not in use; its patterns are the caller's to check), adding id if new -
 * unless the holders of cred have already added per_cred new ids (0: no
 * such budget), counted in cred->ids_added. Returns 0 with *index set,
 * or the reason it is refused: SERVE_BAD_TOO_MANY_IDS (the budget),
 * SERVE_BAD_TOO_MANY_DEVICES (max ids, or out of memory). */
int registry_intern_for(registry *r, const credential *cred, int per_cred, const protocol_device_id *id, uint64_t hash,
                        uint32_t *index);

/* The index of a known id (NUL-terminated), or 0. */
uint32_t registry_find(registry *r, const char *id);

/* The entry of a known index (1..count), or NULL. No lock. */
const device_entry *registry_entry(registry *r, uint32_t index);

/* The id of a known index, or NULL. No lock. */
const char *registry_name(registry *r, uint32_t index);

uint32_t registry_count(registry *r);
uint32_t registry_connected(registry *r);

/* Attaches device `index` to c (moving it from its previous connection);
 * nothing if c is closed. */
void registry_attach(registry *r, uint32_t index, registry_conn *c);

/* Attaches device index to c only when it is attached to no connection:
 * for a broker's session, which relays a device's readings and must not
 * take it from the connection it talks over (whose readings this node
 * may consume again from the stream, nats_publish.h). */
void registry_attach_free(registry *r, uint32_t index, registry_conn *c);

/* Detaches every device of c and closes it for requests and acks; the
 * acks owed to c for devices now on another connection move there. */
void registry_detach_all(registry *r, registry_conn *c);

/* What c's hello asked for: health requests (answers_health) and acks
 * (acks_ready is then woken whenever acks are owed to c). A later hello
 * may add what an earlier one did not ask for, never take it back. */
void registry_hello(registry *r, registry_conn *c, int answers_health, tg_notify *acks_ready);

/* Batch b is committed: each device's acked seq rises to its highest seq
 * in b (a duplicate's too: it was stored before), and the device is owed
 * an ack on its connection, if that connection wants acks. */
void registry_committed(registry *r, const batch *b);

/* Device index's readings up to seq are in the JetStream stream
 * (nats_publish.h): the device is owed an ack as after a commit, its
 * seq window's reference rises, and the commits watch changes. */
void registry_published(registry *r, uint32_t index, uint64_t seq);

/* A receiver of the commits watch: it changes after every
 * registry_committed and registry_published. Returns 0 or TG_ENOMEM. */
int registry_commits_subscribe(registry *r, tg_watch_rx **rx);

/* Whether every reading of device index with a seq up to seq that the
 * gateway received is committed. */
int registry_acked(registry *r, uint32_t index, uint64_t seq);

/* Whether every reading of device index with a seq up to seq that the
 * gateway received is committed here or published to the stream: what
 * a device may be acknowledged for. */
int registry_durable(registry *r, uint32_t index, uint64_t seq);

/* Takes up to max of the acks owed to c into out, each with its device's
 * acked seq now (the higher of committed and published). Returns how
 * many. */
int registry_take_acks(registry *r, registry_conn *c, registry_ack *out, int max);

/* Puts req in the outbox of the connection of the device with this id
 * (NUL-terminated) or index. Returns 0 (req->reply now belongs to the
 * connection), -ENOENT (unknown id), TG_ECLOSED (not connected),
 * -EOPNOTSUPP (its connection did not say it answers health requests),
 * TG_EFULL (its outbox is full), -EBUSY (the device was asked
 * health_per_s times in the last second: counted in health_limited); on
 * error the caller keeps req. */
int registry_ask(registry *r, const char *id, const health_request *req, uint32_t *index);
int registry_ask_index(registry *r, uint32_t index, const health_request *req);

/* Whether device index's stored mark has to be looked up (and given to
 * registry_seq_stored) before seq can be judged against window. */
int registry_seq_needs_mark(registry *r, uint32_t index, uint64_t seq, uint64_t window);

/* The device's mark in the database: found 0 when it has none. The
 * reference rises to it, and so do the numbers of registry_seq_next. */
void registry_seq_stored(registry *r, uint32_t index, int found, uint64_t mark, uint64_t window);

/* Whether a reading of device index with this seq may go on: it may when
 * seq is at most `window` above the reference (see the note on the seq
 * window; a device without a reference takes seq as its reference). A
 * device whose stored mark registry_seq_needs_mark asked for and did not
 * get is judged as one without.
 * Returns 0, or -ERANGE: refused, nothing changed. No lock when the
 * reference is known. */
int registry_seq_admit(registry *r, uint32_t index, uint64_t seq, uint64_t window);

/* Whether device index's stored mark has to be looked up (and given to
 * registry_seq_stored) before a reading without seq can be numbered: once
 * a run, whatever else is known of the device. */
int registry_seq_unlooked(registry *r, uint32_t index);

/* A reading of device index with this seq and ts was admitted: later
 * numbers go above it. No lock. */
void registry_seq_seen(registry *r, uint32_t index, uint64_t seq, int64_t ts_ms);

/* Whether a reading of device index with this seq and ts means the
 * device's seq restarted (see the note above). No lock. */
int registry_seq_restarted(registry *r, uint32_t index, uint64_t seq, int64_t ts_ms);

/* The seq of a reading of device index that came without one: one above
 * the stored mark and every seq seen and numbered this run. Only once
 * registry_seq_unlooked says 0. No lock. */
uint64_t registry_seq_next(registry *r, uint32_t index);

/* For the devices first .. first + n - 1 (those known), whether each is
 * attached to a connection that answers health requests: out[k] 1 or 0
 * for device first + k. Returns how many it filled. One lock for them
 * all: the caller bounds n. */
uint32_t registry_answering(registry *r, uint32_t first, uint32_t n, uint8_t *out);

/* Picks up to k distinct devices at random among those connected over
 * connections that answer health requests. Returns how many. */
int registry_pick_connected(registry *r, rng *g, uint32_t *out, int k);

/* Health requests per device per second from now on; 0: no limit. */
void registry_set_health_rate(registry *r, uint32_t per_s);

#endif
