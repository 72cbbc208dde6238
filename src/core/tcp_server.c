/* tcp_server.c - the listener, the connection tasks and their shutdown;
 * see tcp_server.h. */
#include "tcp_server.h"

#include "figure.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
  /* Room in the kernel for connections the acceptor has not taken yet:
   * enough for a fleet of devices reconnecting at once after a restart. */
  BACKLOG = 1024,
  BACKOFF_FIRST_MS = 10,
  BACKOFF_MAX_MS = 1000,
  CLIENT_BUCKETS = 1024, /* of the per-client table; chains stay short for thousands of clients */
};

/* A client address as the per-client cap counts it: the IPv4 address, or
 * the first 64 bits of an IPv6 one. */
typedef struct client_key {
  unsigned char family;
  unsigned char addr[16];
} client_key;

/* A client holding connection tasks; freed when its count drops to 0. */
typedef struct client_entry {
  struct client_entry *next;
  client_key key;
  int count;
} client_entry;

/* The per-client counts. Invariant: an entry's count is the number of
 * connection tasks whose slot names its key (conn_slot.counted); entries
 * with count 0 do not exist. The acceptor adds, any worker's conn_end
 * removes, under the lock. */
typedef struct client_table {
  pthread_mutex_t lock;
  client_entry *buckets[CLIENT_BUCKETS];
  figure clients;
} client_table;

/* Invariants: open counts the connection tasks spawned and not yet ended
 * (it is raised before the spawn, so the cap is never overshot); a
 * connection task ends by conn_end, which closes its descriptor and moves
 * it from open to closed, however the task ends. Only the acceptor writes
 * the other figures, and the fields marked as the acceptor's. */
struct tcp_server {
  tcp_server_config cfg;
  char name[32];
  tg_tcp *listener;     /* the acceptor's, on its worker */
  tg_joinset *conns;    /* the connection tasks, reaped by the acceptor */
  tg_task *acceptor;    /* NULL once joined */
  tg_oneshot_tx *bound; /* the acceptor sends the bind result here */
  _Atomic int port;
  int started;
  int orphaned;         /* connection tasks may outlive the acceptor: never free */
  unsigned next_worker; /* the acceptor's */
  uint64_t next_id;     /* the acceptor's */
  int backoff_ms;       /* the acceptor's: the next back-off, 0 after a success */
  log_gate error_gate;  /* the acceptor's */
  figure accepted, rejected, rejected_per_client, open, closed, accept_errors, panicked, aborted;
  client_table clients; /* with cfg.max_per_client */
};

/* What a connection task owns; freed by conn_end. */
typedef struct conn_slot {
  tcp_server *srv;
  tcp_server_conn conn;
  int counted; /* key is counted in srv->clients */
  client_key key;
} conn_slot;

int tcp_server_new(tcp_server **out, const tcp_server_config *cfg) {
  if (!cfg || !cfg->handler || !cfg->cancel || !cfg->host || cfg->port < 0 || cfg->port > 65535 ||
      cfg->max_connections < 1 || cfg->max_per_client < 0 || cfg->workers < 0)
    return TG_EINVAL;
  tcp_server *s = calloc(1, sizeof *s);
  if (!s) return TG_ENOMEM;
  s->cfg = *cfg;
  snprintf(s->name, sizeof s->name, "%s", cfg->name ? cfg->name : "tcp");
  s->cfg.name = s->name;
  s->next_worker = 1; /* worker 0 runs the acceptor (and, in serve, the pipeline) */
  if (tg_joinset_new(&s->conns, s->name) != 0) {
    free(s);
    return TG_ENOMEM;
  }
  pthread_mutex_init(&s->clients.lock, NULL);
  *out = s;
  return 0;
}

/* ------------------------------------------------------------ clients */

/* The client of a connection; 0, or -1 when its address is unknown (not
 * counted, as a Unix socket would not be). */
static int client_of(int fd, client_key *k) {
  struct sockaddr_storage sa;
  socklen_t sl = sizeof sa;
  memset(k, 0, sizeof *k);
  if (getpeername(fd, (struct sockaddr *)&sa, &sl) != 0) return -1;
  if (sa.ss_family == AF_INET) {
    k->family = AF_INET;
    memcpy(k->addr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
    return 0;
  }
  if (sa.ss_family != AF_INET6) return -1;
  const unsigned char *a = ((struct sockaddr_in6 *)&sa)->sin6_addr.s6_addr;
  static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(a, v4mapped, 12) == 0) {
    k->family = AF_INET;
    memcpy(k->addr, a + 12, 4);
  } else {
    k->family = AF_INET6;
    memcpy(k->addr, a, 8); /* a host usually holds a whole /64 */
  }
  return 0;
}

static client_entry **client_find(client_table *t, const client_key *k) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < sizeof k->addr; i++) h = (h ^ k->addr[i]) * 16777619u;
  client_entry **e = &t->buckets[(h ^ k->family) % CLIENT_BUCKETS];
  while (*e && memcmp(&(*e)->key, k, sizeof *k) != 0) e = &(*e)->next;
  return e;
}

/* Counts one more connection of k, unless it holds max already. Returns
 * 0, TG_EFULL (at its cap) or TG_ENOMEM. */
static int client_add(client_table *t, const client_key *k, int max) {
  int r = 0;
  pthread_mutex_lock(&t->lock);
  client_entry **e = client_find(t, k);
  if (*e && (*e)->count >= max) {
    r = TG_EFULL;
  } else if (*e) {
    (*e)->count++;
  } else if ((*e = calloc(1, sizeof **e))) {
    (*e)->key = *k;
    (*e)->count = 1;
    figure_add_shared(&t->clients, 1);
  } else {
    r = TG_ENOMEM;
  }
  pthread_mutex_unlock(&t->lock);
  return r;
}

static void client_remove(client_table *t, const client_key *k) {
  pthread_mutex_lock(&t->lock);
  client_entry **e = client_find(t, k), *gone = *e;
  if (gone && --gone->count == 0) {
    *e = gone->next;
    free(gone);
    figure_add_shared(&t->clients, (uint64_t)-1);
  }
  pthread_mutex_unlock(&t->lock);
}

/* ------------------------------------------------------------ connections */

static void peer_name(int fd, char *buf, size_t len) {
  struct sockaddr_storage sa;
  socklen_t sl = sizeof sa;
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0) {
    if (sa.ss_family == AF_INET) {
      inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof host);
      port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
    } else if (sa.ss_family == AF_INET6) {
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host, sizeof host);
      port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    }
  }
  snprintf(buf, len, "%s:%d", host, port);
}

/* Deferred: runs however the connection task ends - return, panic or
 * abort - so the socket is closed and the figures stay true; also the
 * spawn's drop, for a task aborted before it ever ran. */
static void conn_end(void *arg) {
  conn_slot *cs = arg;
  tcp_server *s = cs->srv;
  if (cs->conn.sock)
    tg_tcp_close(cs->conn.sock);
  else
    close(cs->conn.fd);
  if (cs->counted) client_remove(&s->clients, &cs->key);
  free(cs);
  figure_add_shared(&s->closed, 1);
  figure_add_shared(&s->open, (uint64_t)-1);
}

static void *conn_task(void *arg) {
  conn_slot *cs = arg;
  tcp_server *s = cs->srv;
  if (tg_defer(conn_end, cs) != 0) {
    conn_end(cs);
    return NULL;
  }
  peer_name(cs->conn.fd, cs->conn.peer, sizeof cs->conn.peer);
  if (tg_tcp_open(&cs->conn.sock, cs->conn.fd) != 0) return NULL;
  s->cfg.handler(s->cfg.ctx, &cs->conn);
  return NULL;
}

/* ------------------------------------------------------------ the acceptor */

static void account(tcp_server *s, const tg_outcome *o) {
  if (o->status == TG_ECANCELED) figure_add(&s->aborted, 1);
  if (o->status != TG_EPANICKED) return;
  figure_add(&s->panicked, 1);
  if (s->cfg.log)
    log_event(s->cfg.log, "💥", s->name, 0, "connection_panicked", "A connection task panicked: %s", o->message);
}

/* Joins every connection task that ended, so a stream of new connections
 * (accept is ready first in the select) cannot pile ended tasks up. */
static void reap(tcp_server *s) {
  tg_outcome o;
  while (tg_joinset_try_join_next(s->conns, &o) == 0) account(s, &o);
}

static void refuse(tcp_server *s, int fd) {
  figure_add(&s->rejected, 1);
  if (s->cfg.reject)
    s->cfg.reject(s->cfg.ctx, fd);
  else
    close(fd);
}

static void refuse_client(tcp_server *s, int fd) {
  figure_add(&s->rejected_per_client, 1);
  tcp_server_reject reject = s->cfg.reject_client ? s->cfg.reject_client : s->cfg.reject;
  if (reject)
    reject(s->cfg.ctx, fd);
  else
    close(fd);
}

static void spawn_conn(tcp_server *s, int fd, const client_key *key) {
  conn_slot *cs = malloc(sizeof *cs);
  tg_spawn_opts opts = {.stack_size = s->cfg.stack_size, .name = s->name, .drop = conn_end};
  if (s->cfg.workers > 0) {
    opts.pin = 1;
    opts.worker = (int)(s->next_worker++ % (unsigned)s->cfg.workers);
  }
  figure_add_shared(&s->open, 1);
  if (cs) *cs = (conn_slot){.srv = s, .conn = {.fd = fd, .id = s->next_id + 1}, .counted = key != NULL};
  if (cs && key) cs->key = *key;
  int r = cs ? tg_joinset_spawn(s->conns, conn_task, cs, &opts, NULL) : TG_ENOMEM;
  if (r != 0) {
    if (key) client_remove(&s->clients, key);
    free(cs);
    close(fd);
    figure_add_shared(&s->open, (uint64_t)-1);
    if (s->cfg.log)
      log_event(s->cfg.log, "❌", s->name, 0, "spawn_failed", "No task for a connection: %s", tg_strerror(r));
    return;
  }
  s->next_id++;
  figure_add(&s->accepted, 1);
}

/* After a failed accept: waits until the back-off passed, a connection
 * ended (a descriptor is free again) or the token fired. Returns 0 to go
 * on accepting, nonzero to stop. */
static int back_off(tcp_server *s, int error) {
  figure_add(&s->accept_errors, 1);
  s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_FIRST_MS;
  if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
  uint64_t held;
  if (s->cfg.log && log_gate_pass(&s->error_gate, tg_now(), TG_MS(1000), &held))
    log_event(s->cfg.log, "⚠️", s->name, 0, "accept_failed",
              "Accepting a connection failed: %s; next try within %d ms%s", tg_strerror(error), s->backoff_ms,
              log_held_note(held).s);
  tg_outcome o;
  tg_case cs[2] = {tg_cancel_case(s->cfg.cancel), tg_joinset_join_next_case(s->conns, &o)};
  int w = tg_select(cs, tg_joinset_len(s->conns) > 0 ? 2 : 1, tg_deadline_in(TG_MS(s->backoff_ms)));
  if (w == 1 && cs[1].result == 0) account(s, &o);
  return w == 0 || (w < 0 && w != TG_ETIMEDOUT);
}

static void accept_loop(tcp_server *s) {
  for (;;) {
    reap(s);
    int fd = -1;
    tg_outcome o;
    tg_case cs[3] = {tg_cancel_case(s->cfg.cancel), tg_tcp_accept_case(s->listener, &fd),
                     tg_joinset_join_next_case(s->conns, &o)};
    /* join_next on an empty set completes at once: only wait on it while
     * some connection runs */
    int w = tg_select(cs, tg_joinset_len(s->conns) > 0 ? 3 : 2, TG_FOREVER);
    if (w <= 0) return; /* the token fired, or this task was aborted */
    if (w == 2) {
      if (cs[2].result == 0) account(s, &o);
      continue;
    }
    int r = cs[1].result;
    if (r == TG_ECLOSED || r == TG_ECANCELED) return;
    if (r != 0) {
      if (back_off(s, r)) return;
      continue;
    }
    s->backoff_ms = 0;
    if (figure_get(&s->open) >= (uint64_t)s->cfg.max_connections) {
      refuse(s, fd);
      continue;
    }
    client_key key;
    int counted = s->cfg.max_per_client > 0 && client_of(fd, &key) == 0;
    if (counted && client_add(&s->clients, &key, s->cfg.max_per_client) != 0) {
      refuse_client(s, fd);
      continue;
    }
    spawn_conn(s, fd, counted ? &key : NULL);
  }
}

/* Joins the connection tasks, aborting those left after the grace.
 * Returns 0, or TG_ECANCELED when this task was aborted first. */
static int join_all(tcp_server *s) {
  int64_t until = s->cfg.grace_ms < 0 ? TG_FOREVER : tg_deadline_in(TG_MS(s->cfg.grace_ms));
  tg_outcome o;
  int r;
  while ((r = tg_joinset_join_next_dl(s->conns, &o, until)) == 0) account(s, &o);
  if (r == TG_ETIMEDOUT) {
    tg_joinset_abort_all(s->conns);
    while ((r = tg_joinset_join_next(s->conns, &o)) == 0) account(s, &o);
  }
  if (r == TG_ECANCELED) tg_joinset_abort_all(s->conns); /* they end soon, unjoined */
  return r == TG_EEMPTY ? 0 : r;
}

static void *acceptor_task(void *arg) {
  tcp_server *s = arg;
  int r = tg_tcp_listen(&s->listener, s->cfg.host, s->cfg.port, BACKLOG);
  if (r == 0) atomic_store(&s->port, tg_tcp_port(s->listener));
  tg_oneshot_send(s->bound, &r);
  s->bound = NULL;
  if (r != 0) return NULL;
  accept_loop(s);
  tg_tcp_close(s->listener);
  s->listener = NULL;
  /* TG_ECANCELED: this task was aborted (the runtime is ending) and can
   * wait no more; the connections, aborted too, still use the server */
  s->orphaned = join_all(s) != 0;
  return NULL;
}

int tcp_server_start(tcp_server *s) {
  if (s->started) return TG_EINVAL;
  tg_oneshot_rx *bound;
  int r = tg_oneshot_new(sizeof(int), &s->bound, &bound);
  if (r != 0) return r;
  char name[48];
  snprintf(name, sizeof name, "%s-accept", s->name);
  tg_spawn_opts opts = {.pin = 1, .worker = 0, .name = name};
  if ((r = tg_spawn(&s->acceptor, acceptor_task, s, &opts)) != 0) {
    tg_oneshot_tx_drop(s->bound);
    s->bound = NULL;
    tg_oneshot_rx_drop(bound);
    s->acceptor = NULL;
    return r;
  }
  int result = TG_ECLOSED;
  r = tg_oneshot_recv(bound, &result);
  tg_oneshot_rx_drop(bound);
  if (r == TG_ECANCELED) { /* we cannot wait for the acceptor: it must not outlive us unseen */
    tg_task_abort(s->acceptor);
    tg_task_detach(s->acceptor);
    s->acceptor = NULL;
    s->orphaned = 1;
    return TG_ECANCELED;
  }
  if (result != 0) {
    tg_task_join(s->acceptor, NULL);
    s->acceptor = NULL;
    return result;
  }
  s->started = 1;
  return 0;
}

int tcp_server_port(const tcp_server *s) { return atomic_load(&((tcp_server *)s)->port); }

int tcp_server_wait(tcp_server *s) {
  if (!s->started) return TG_EINVAL;
  if (s->acceptor) {
    if (tg_task_join(s->acceptor, NULL) != 0) { /* we were aborted: so is the server */
      tg_task_abort(s->acceptor);
      tg_task_detach(s->acceptor);
      s->orphaned = 1;
    }
    s->acceptor = NULL;
  }
  return s->orphaned ? TG_ECANCELED : 0;
}

void tcp_server_figures_get(const tcp_server *s, tcp_server_figures *out) {
  *out = (tcp_server_figures){
      .accepted = figure_get(&s->accepted),
      .rejected = figure_get(&s->rejected),
      .rejected_per_client = figure_get(&s->rejected_per_client),
      .clients = figure_get(&s->clients.clients),
      .open = figure_get(&s->open),
      .closed = figure_get(&s->closed),
      .accept_errors = figure_get(&s->accept_errors),
      .panicked = figure_get(&s->panicked),
      .aborted = figure_get(&s->aborted),
  };
}

void tcp_server_free(tcp_server *s) {
  if (!s || s->orphaned || s->acceptor) return;
  tg_joinset_free(s->conns);
  pthread_mutex_destroy(&s->clients.lock); /* empty: every connection task has ended */
  free(s);
}
