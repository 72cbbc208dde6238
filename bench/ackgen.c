/* ackgen.c - a load generator for telegate's device port that can ask for
 * acks: the same pre-rendered JSON lines as the neutral generator (K
 * connections, D devices each, seq 0, 1, 2 ... per device), written by one
 * thread per connection, optionally paced, and with -a a hello asking for
 * acks first and a reader thread per connection that takes the acks in.
 *
 *   ackgen [-h host] [-p port] [-k conns] [-n lines] [-d devices per conn]
 *          [-r lines/s in all, 0: as fast as possible] [-a] [-t]
 *
 * -t: over TLS (OpenSSL, blocking, the server's certificate not checked:
 * this measures the cost, not the trust), each connection's handshake
 * done before the start; with -a not supported (a writer and a reader
 * thread cannot share one blocking SSL object).
 *
 * Latency: a connection writes its lines in chunks and notes when each
 * chunk was handed to the kernel; an ack {"device":"D","seq":S} is matched
 * to the chunk that held that reading, and the ack's latency is its
 * arrival minus that moment - how long the newest reading it covers took
 * from the generator to durable. With -a the generator ends once every
 * device's last seq is acked (or after 60 s without a new ack), shuts its
 * sockets down and reads them to the end, so no reset loses anything.
 *
 * Prints start_epoch_ns=, sent=, and with -a acked_all=, ack_done_epoch_ns=,
 * acks=, ack_p50_ms=, ack_p99_ms=, ack_max_ms=. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CHUNK_LINES = 100 };

typedef struct conn {
  int idx, fd, devices;
  SSL *ssl; /* with -t */
  char *buf;
  size_t len;
  size_t *chunk_end;   /* byte offset where each chunk of CHUNK_LINES ends */
  int64_t *chunk_sent; /* when it was handed to the kernel, ns; 0: not yet */
  long lines, nchunks;
  long *acked;       /* per device: the highest seq acked, -1: none */
  double *latencies; /* one per ack */
  long nlat, caplat;
  double last_ack;
  int done; /* every device's last seq acked */
  int err;
} conn;

static int want_acks;
static SSL_CTX *tls; /* with -t */
static double rate;  /* lines/s for each connection; 0: unpaced */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double now_mono(void) { return (double)now_ns() / 1e9; }

/* Line i of connection c (device c*D + i%D, seq i/D), as the neutral
 * generator writes it. */
static size_t render_line(char *out, size_t cap, const conn *c, long i) {
  long dev = (long)c->idx * c->devices + i % c->devices, seq = i / c->devices;
  int t10 = 150 + (int)((i * 7) % 200), h10 = 300 + (int)((i * 13) % 400), bat = 100 - (int)(seq % 100);
  return (size_t)snprintf(out, cap,
                          "{\"device\":\"%ld\",\"seq\":%ld,\"ts\":%lld,\"temperature\":%d.%d,\"humidity\":%d.%d,"
                          "\"battery\":%d}\n",
                          dev, seq, 1732590000123LL + i, t10 / 10, t10 % 10, h10 / 10, h10 % 10, bat);
}

static void render(conn *c) {
  size_t cap = (size_t)c->lines * 128 + 1, off = 0;
  c->buf = malloc(cap);
  c->nchunks = (c->lines + CHUNK_LINES - 1) / CHUNK_LINES;
  c->chunk_end = calloc((size_t)c->nchunks, sizeof *c->chunk_end);
  c->chunk_sent = calloc((size_t)c->nchunks, sizeof *c->chunk_sent);
  if (!c->buf || !c->chunk_end || !c->chunk_sent) {
    perror("malloc");
    exit(1);
  }
  for (long i = 0; i < c->lines; i++) {
    off += render_line(c->buf + off, cap - off, c, i);
    if ((i + 1) % CHUNK_LINES == 0 || i + 1 == c->lines) c->chunk_end[i / CHUNK_LINES] = off;
  }
  c->len = off;
}

static void *sender(void *arg) {
  conn *c = arg;
  static const char hello[] = "{\"type\":\"hello\",\"acks\":true}\n";
  if (want_acks && send(c->fd, hello, sizeof hello - 1, MSG_NOSIGNAL) < 0) c->err = errno;
  double t0 = now_mono();
  size_t off = 0;
  for (long k = 0; k < c->nchunks && !c->err; k++) {
    if (rate > 0) { /* chunk k is due at t0 + k * CHUNK_LINES / rate */
      double due = t0 + (double)k * CHUNK_LINES / rate, wait = due - now_mono();
      if (wait > 0) nanosleep(&(struct timespec){(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)}, NULL);
    }
    if (c->ssl) { /* a blocking SSL_write writes it all */
      if (SSL_write(c->ssl, c->buf + off, (int)(c->chunk_end[k] - off)) <= 0) c->err = EPROTO;
      off = c->chunk_end[k];
    }
    while (off < c->chunk_end[k]) {
      ssize_t w = send(c->fd, c->buf + off, c->chunk_end[k] - off, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        c->err = errno;
        break;
      }
      off += (size_t)w;
    }
    __atomic_store_n(&c->chunk_sent[k], now_ns(), __ATOMIC_RELEASE);
  }
  if (!want_acks) {
    if (c->ssl) SSL_shutdown(c->ssl); /* close_notify: the end of the stream, not a cut */
    shutdown(c->fd, SHUT_WR);
    close(c->fd);
    SSL_free(c->ssl);
  }
  return NULL;
}

static void on_ack(conn *c, const char *line) {
  long dev, seq;
  if (sscanf(line, "{\"type\":\"ack\",\"device\":\"%ld\",\"seq\":%ld}", &dev, &seq) != 2) return;
  long d = dev - (long)c->idx * c->devices;
  if (d < 0 || d >= c->devices) return;
  double now = now_mono();
  long i = seq * c->devices + d; /* the line of that reading */
  int64_t sent = i < c->lines ? __atomic_load_n(&c->chunk_sent[i / CHUNK_LINES], __ATOMIC_ACQUIRE) : 0;
  if (sent > 0) {
    if (c->nlat == c->caplat) {
      c->caplat = c->caplat ? c->caplat * 2 : 4096;
      c->latencies = realloc(c->latencies, (size_t)c->caplat * sizeof *c->latencies);
      if (!c->latencies) exit(1);
    }
    c->latencies[c->nlat++] = now - (double)sent / 1e9;
  }
  if (seq > c->acked[d]) c->acked[d] = seq;
  c->last_ack = now;
}

/* Reads acks until every device's last seq is acked, or 60 s pass
 * without one. */
static void *reader(void *arg) {
  conn *c = arg;
  char buf[65536];
  size_t have = 0;
  long complete = 0;
  struct timeval tv = {1, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  c->last_ack = now_mono();
  while (complete < c->devices && now_mono() - c->last_ack < 60) {
    ssize_t r = recv(c->fd, buf + have, sizeof buf - have, 0);
    if (r == 0) break;
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      break;
    }
    have += (size_t)r;
    char *p = buf, *nl;
    while ((nl = memchr(p, '\n', (size_t)(buf + have - p)))) {
      *nl = '\0';
      on_ack(c, p);
      p = nl + 1;
    }
    have -= (size_t)(p - buf);
    memmove(buf, p, have);
    complete = 0;
    for (long d = 0; d < c->devices; d++) /* device d's last line is the last i < lines with i % D == d */
      complete += d >= c->lines || c->acked[d] >= (c->lines - 1 - d) / c->devices;
  }
  c->done = complete == c->devices;
  shutdown(c->fd, SHUT_WR);
  while (recv(c->fd, buf, sizeof buf, 0) > 0) { /* to the end: no reset */
  }
  close(c->fd);
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 7878, k = 1, devices = 1000, opt;
  long n = 1000000;
  double total_rate = 0;
  while ((opt = getopt(argc, argv, "h:p:k:n:d:r:at")) != -1) {
    switch (opt) {
    case 'h': host = optarg; break;
    case 'p': port = atoi(optarg); break;
    case 'k': k = atoi(optarg); break;
    case 'n': n = atol(optarg); break;
    case 'd': devices = atoi(optarg); break;
    case 'r': total_rate = atof(optarg); break;
    case 'a': want_acks = 1; break;
    case 't': tls = SSL_CTX_new(TLS_client_method()); break;
    default:
      fprintf(stderr, "usage: %s [-h host] [-p port] [-k conns] [-n lines] [-d devices] [-r lines/s] [-a] [-t]\n",
              argv[0]);
      return 2;
    }
  }
  if (tls && want_acks) {
    fprintf(stderr, "ackgen: -t and -a do not go together\n");
    return 2;
  }
  if (k < 1 || devices < 1 || n < k) {
    fprintf(stderr, "ackgen: bad -k, -d or -n\n");
    return 2;
  }
  rate = total_rate / k;
  conn *conns = calloc((size_t)k, sizeof *conns);
  pthread_t *send_th = calloc((size_t)k, sizeof *send_th), *read_th = calloc((size_t)k, sizeof *read_th);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, host, &sa.sin_addr);
  for (int i = 0; i < k; i++) {
    conn *c = &conns[i];
    c->idx = i;
    c->devices = devices;
    c->lines = n / k + (i < n % k);
    render(c);
    c->acked = malloc((size_t)devices * sizeof *c->acked);
    for (int d = 0; d < devices; d++) c->acked[d] = -1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      perror("connect");
      return 1;
    }
    if (tls && (!(c->ssl = SSL_new(tls)) || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_connect(c->ssl) != 1)) {
      fprintf(stderr, "ackgen: TLS handshake failed\n");
      ERR_print_errors_fp(stderr);
      return 1;
    }
  }
  struct timespec wall;
  clock_gettime(CLOCK_REALTIME, &wall);
  printf("start_epoch_ns=%lld\n", (long long)wall.tv_sec * 1000000000LL + wall.tv_nsec);
  for (int i = 0; i < k; i++) {
    pthread_create(&send_th[i], NULL, sender, &conns[i]);
    if (want_acks) pthread_create(&read_th[i], NULL, reader, &conns[i]);
  }
  long sent = 0, nlat = 0;
  int acked_all = 1, errors = 0;
  for (int i = 0; i < k; i++) {
    pthread_join(send_th[i], NULL);
    if (want_acks) pthread_join(read_th[i], NULL);
    sent += conns[i].err ? 0 : conns[i].lines;
    errors += conns[i].err != 0;
    acked_all &= conns[i].done;
    nlat += conns[i].nlat;
  }
  clock_gettime(CLOCK_REALTIME, &wall);
  double wall_mono = now_mono(); /* the same moment as wall, on the other clock */
  printf("sent=%ld\nerrors=%d\n", sent, errors);
  if (want_acks) {
    double *all = malloc((size_t)(nlat ? nlat : 1) * sizeof *all), last = 0;
    long at = 0;
    for (int i = 0; i < k; i++) {
      memcpy(all + at, conns[i].latencies, (size_t)conns[i].nlat * sizeof *all);
      at += conns[i].nlat;
      if (conns[i].last_ack > last) last = conns[i].last_ack;
    }
    qsort(all, (size_t)nlat, sizeof *all, cmp_double);
    /* The last ack's wall time: wall minus how long before it came. */
    long long done_ns = (long long)wall.tv_sec * 1000000000LL + wall.tv_nsec - (long long)((wall_mono - last) * 1e9);
    printf("acked_all=%d\nack_done_epoch_ns=%lld\nacks=%ld\n", acked_all, done_ns, nlat);
    if (nlat)
      printf("ack_p50_ms=%.1f\nack_p99_ms=%.1f\nack_max_ms=%.1f\n", all[nlat / 2] * 1e3,
             all[(long)((double)nlat * 0.99)] * 1e3, all[nlat - 1] * 1e3);
  }
  return errors || (want_acks && !acked_all) ? 1 : 0;
}
