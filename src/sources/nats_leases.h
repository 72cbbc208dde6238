/* nats_leases.h - which partitions of the NATS source's stream this node
 * consumes: a lease per partition in a JetStream key-value bucket, so
 * that one node at a time consumes a partition, and another takes it
 * over when its owner dies. docs/cluster.md is the operator's page.
 *
 * The bucket (created when missing, file storage, history 1) has a TTL,
 * the lease time: a key nobody writes again within it disappears. Each
 * node writes, every quarter of the lease time,
 *   node.<id>     its liveness (the nodes alive are the keys of this form),
 *                 created by the node's first round and then written
 *                 against its revision: one process at a time runs as a
 *                 node id, a second one waits, saying so, until the
 *                 first's key goes;
 *   p.<n>         <id> for each partition n it holds, each write checked
 *                 against the revision it wrote last (kvStore_Update), so
 *                 a node that lost a lease learns it at its next write.
 * A partition whose key is missing, empty (released) or names this node
 * may be claimed; a node claims partitions until it holds its share,
 * ceil(partitions / nodes alive), and hands one back per round while it
 * holds more (a node joined); it claims only while its consumer is
 * connected, so a node that cannot consume takes nothing new. With no
 * partitions (0) there is one lease,
 * p.all, and the other nodes wait as standbys.
 *
 * The consumer (source_nats.c) and this task share one table of states,
 * each moved by compare-and-swap, by one side for each move:
 *
 *   FREE -lease-> CLAIMED -consumer-> OWNED -lease-> RELEASING
 *   RELEASING -consumer-> DRAINED -lease-> FREE        (handed back)
 *   CLAIMED, OWNED, RELEASING -lease or consumer-> LOST -consumer-> FREE
 *
 * The consumer resets a partition's JetStream consumer when it takes it
 * (CLAIMED to OWNED) and stops consuming a partition as soon as its
 * lease was not renewed for two thirds of the lease time, before any
 * other node can have claimed it. The lease task has a connection of its own,
 * so a consumer waiting for room in the telemetry channel (backpressure)
 * keeps its leases: a slow node is not a dead one.
 *
 * Shutdown: when the token fires the task waits until the consumer says
 * it drained (nats_leases_consumer_done), releases the DRAINED
 * partitions (empty value: another node takes them at once), removes its
 * node key and ends; what is still held expires after the lease time. */
#ifndef TELEGATE_NATS_LEASES_H
#define TELEGATE_NATS_LEASES_H

#include "log.h"
#include "tg/tg.h"

#include <nats/nats.h>

#include <stdint.h>

enum { LEASE_FREE, LEASE_CLAIMED, LEASE_OWNED, LEASE_RELEASING, LEASE_DRAINED, LEASE_LOST };

typedef struct nats_leases nats_leases;

typedef struct nats_leases_opts {
  const char *node;           /* this node's id (--node): one process at a time holds it */
  const char *const *servers; /* nats:// URLs, kept by the caller until free */
  int nservers;
  const char *bucket; /* the key-value bucket's name */
  int partitions;     /* 0: one lease over the whole stream */
  int lease_ms;       /* the bucket's TTL */
  int replicas;       /* the bucket's, when it is created (0: 1) */
  tg_cancel *cancel;
  demo_log *log;
  const _Atomic int64_t *drain_until;  /* the consumer's drain ends by then */
  const _Atomic uint64_t *consumer_up; /* nonzero while the consumer is connected: it claims only then */
} nats_leases_opts;

/* Creates the table and spawns the task into tasks. Returns 0, or
 * TG_ENOMEM or a spawn error with a one-line reason in err. */
int nats_leases_start(tg_joinset *tasks, const nats_leases_opts *o, nats_leases **out, char *err, size_t errlen);

/* The number of leases: partitions, or 1. */
int nats_leases_count(const nats_leases *l);

/* This node's id: the value of its keys. */
const char *nats_leases_node(const nats_leases *l);

/* Any thread: partition p's state. */
int nats_leases_state(nats_leases *l, int p);

/* Moves p from `from` to `to`; 0, or TG_EAGAIN when it was not in `from`. */
int nats_leases_move(nats_leases *l, int p, int from, int to);

/* Whether p's lease was written within two thirds of the lease time. */
int nats_leases_fresh(nats_leases *l, int p, int64_t now_ns);

/* Fires whenever the task moved a state: the consumer looks again. */
tg_notify *nats_leases_changed(nats_leases *l);

/* The consumer connected: a round now rather than at the next tick, so
 * that it gets its partitions without waiting a quarter of the lease. */
void nats_leases_kick(nats_leases *l);

/* The consumer drained and acked what it will: the leases may go. */
void nats_leases_consumer_done(nats_leases *l);

/* Figures, any thread: leases held (CLAIMED, OWNED, RELEASING), nodes
 * alive as last counted, leases lost (a write refused, or not renewed in
 * time), leases claimed. */
void nats_leases_figures(nats_leases *l, uint64_t *held, uint64_t *nodes, uint64_t *lost, uint64_t *claimed);

/* Counts a lease the consumer found stale. */
void nats_leases_count_lost(nats_leases *l);

/* After the task was joined. */
void nats_leases_free(nats_leases *l);

/* --nats: comma-separated URLs, each nats://HOST:PORT or tls://HOST:PORT,
 * as libnats takes them (urls point into text, a copy). Every NATS
 * connection of the node (the consumer, the leases, the publisher, the
 * fleet view) is made to the same list. */
typedef struct nats_servers {
  char *text;
  const char **urls;
  int count;
} nats_servers;

/* Returns 0, TG_ENOMEM, or -EINVAL with the URL that is not one in err. */
int nats_servers_parse(const char *list, nats_servers *out, char *err, size_t errlen);
void nats_servers_free(nats_servers *s);

/* A libnats failure in one line, for both of the node's connections:
 * what failed, the status, the JetStream error code when there is one
 * (0: none), and libnats' own words from this thread's last error. */
void nats_why(char *why, size_t whylen, const char *what, natsStatus s, jsErrCode jerr);

#endif
