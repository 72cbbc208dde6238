/* protocol-bench.c - how fast protocol_parse_line takes tcpgen's lines,
 * and schema_pack after it.
 *
 *   protocol-bench [--lines N] [--devices D] [--rounds R] [--format json|line|both]
 *
 * Renders N lines (default 20,000) exactly as ../shared/bench/ingest/
 * tcpgen.c does (one connection, D devices), then parses the buffer R
 * times (default 201) per format and prints the best and the median
 * round: once with the line boundaries found beforehand (the parser
 * alone), once finding each '\n' with memchr as a connection does, and
 * once packing each point into a reading as the gateway does (interned
 * names, the telemetry measurement's types, reading_free). The
 * default buffer, under 2 MB, stays in cache as a socket's receive buffer
 * does; a million lines measure memory bandwidth as well. Every line must
 * be accepted and the checksum of what was parsed must match the one of
 * what was rendered; otherwise the exit status is 1.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Isrc/core bench/protocol-bench.c \
 *      src/core/protocol.c src/core/schema.c -lpthread -lm -o protocol-bench */
#include "protocol.h"
#include "schema.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* tcpgen's render(): same values, same text, for connection 0. */
static char *render(long n, int devices, int line_format, size_t *out_len, double *sum) {
  size_t cap = (size_t)n * 128 + 1, off = 0;
  char *buf = malloc(cap);
  if (!buf) {
    perror("malloc");
    exit(1);
  }
  *sum = 0;
  for (long i = 0; i < n; i++) {
    long dev = i % devices;
    long seq = i / devices;
    long long ts = 1732590000123LL + i;
    int t10 = 150 + (int)((i * 7) % 200);
    int h10 = 300 + (int)((i * 13) % 400);
    int bat = 100 - (int)(seq % 100);
    int k = line_format ? snprintf(buf + off, cap - off,
                                   "telemetry,device=%ld temperature=%d.%d,humidity=%d.%d,"
                                   "battery=%di,seq=%ldi %lld000000\n",
                                   dev, t10 / 10, t10 % 10, h10 / 10, h10 % 10, bat, seq, ts)
                        : snprintf(buf + off, cap - off,
                                   "{\"device\":\"%ld\",\"seq\":%ld,\"ts\":%lld,"
                                   "\"temperature\":%d.%d,\"humidity\":%d.%d,"
                                   "\"battery\":%d}\n",
                                   dev, seq, ts, t10 / 10, t10 % 10, h10 / 10, h10 % 10, bat);
    off += (size_t)k;
    *sum += (double)seq + (double)(ts % 1000) + t10 / 10.0 + h10 / 10.0 + bat + (double)dev;
  }
  *out_len = off;
  return buf;
}

/* The parsed point's seq, time, device and values. */
static double checksum_add(const protocol_msg *m) {
  const protocol_point *p = &m->point;
  double sum = (double)p->seq + (double)(p->ts_ms % 1000) + (double)m->device.num;
  for (uint32_t i = 0; i < p->nfields; i++)
    sum += p->fields[i].type == FIELD_FLOAT ? p->fields[i].v.f : (double)p->fields[i].v.i;
  return sum;
}

/* The same of the packed reading. */
static double checksum_reading(const protocol_msg *m, const reading *r) {
  double sum = (double)r->seq + (double)(r->ts_ms % 1000) + (double)m->device.num;
  const field_value *f = reading_fields(r);
  for (uint32_t i = 0; i < r->nfields; i++) sum += field_number(&f[i]);
  return sum;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int run(const char *name, int line_format, long n, int devices, int rounds) {
  size_t len;
  double want;
  char *buf = render(n, devices, line_format, &len, &want);
  uint32_t *starts = malloc(((size_t)n + 1) * sizeof *starts);
  double *split = malloc((size_t)rounds * sizeof *split), *inline_nl = malloc((size_t)rounds * sizeof *inline_nl);
  double *packed = malloc((size_t)rounds * sizeof *packed);
  schema *sc = schema_new(0);
  if (!starts || !split || !inline_nl || !packed || !sc) {
    perror("malloc");
    exit(1);
  }
  long k = 0;
  for (size_t off = 0; off < len; off = (size_t)((const char *)memchr(buf + off, '\n', len - off) - buf) + 1)
    starts[k++] = (uint32_t)off;
  starts[k] = (uint32_t)len;
  int bad = 0;
  for (int round = 0; round < rounds; round++) {
    protocol_msg m;
    protocol_error err;
    double got = 0, t0 = now_s();
    for (long i = 0; i < n; i++) {
      const char *line = buf + starts[i];
      size_t ll = starts[i + 1] - starts[i] - 1;
      if (protocol_parse_line(line, ll, 0, &m, &err) != 0) {
        if (!bad) fprintf(stderr, "%s: line %ld rejected: %s\n", name, i + 1, protocol_reason_name(err.reason));
        bad = 1;
        continue;
      }
      got += checksum_add(&m);
    }
    split[round] = now_s() - t0;
    if (got != want) {
      fprintf(stderr, "%s: checksum %.1f, rendered %.1f\n", name, got, want);
      bad = 1;
    }

    got = 0;
    t0 = now_s();
    const char *p = buf, *end = buf + len;
    while (p < end) {
      const char *nl = memchr(p, '\n', (size_t)(end - p));
      if (protocol_parse_line(p, (size_t)(nl - p), 0, &m, &err) == 0) got += checksum_add(&m);
      p = nl + 1;
    }
    inline_nl[round] = now_s() - t0;
    if (got != want) bad = 1;

    got = 0;
    t0 = now_s();
    for (long i = 0; i < n; i++) {
      const char *line = buf + starts[i];
      reading r;
      if (protocol_parse_line(line, starts[i + 1] - starts[i] - 1, 0, &m, &err) != 0 ||
          schema_pack(sc, &m.point, &r, &err) != 0) {
        if (!bad) fprintf(stderr, "%s: line %ld refused: %s\n", name, i + 1, protocol_reason_name(err.reason));
        bad = 1;
        continue;
      }
      got += checksum_reading(&m, &r);
      reading_free(&r);
    }
    packed[round] = now_s() - t0;
    if (got != want) {
      fprintf(stderr, "%s: packed checksum %.1f, rendered %.1f\n", name, got, want);
      bad = 1;
    }
  }
  qsort(split, (size_t)rounds, sizeof *split, cmp_double);
  qsort(inline_nl, (size_t)rounds, sizeof *inline_nl, cmp_double);
  qsort(packed, (size_t)rounds, sizeof *packed, cmp_double);
  printf("%-4s %ld lines of %.1f bytes, %d rounds\n", name, n, (double)len / (double)n, rounds);
  printf("     parser alone:  best %6.1f ns/line  %6.2fM lines/s  %5.0f MB/s   median %6.1f ns/line\n",
         split[0] * 1e9 / (double)n, (double)n / split[0] / 1e6, (double)len / split[0] / 1e6,
         split[rounds / 2] * 1e9 / (double)n);
  printf("     memchr+parser: best %6.1f ns/line  %6.2fM lines/s  %5.0f MB/s   median %6.1f ns/line\n",
         inline_nl[0] * 1e9 / (double)n, (double)n / inline_nl[0] / 1e6, (double)len / inline_nl[0] / 1e6,
         inline_nl[rounds / 2] * 1e9 / (double)n);
  printf("     parser+pack:   best %6.1f ns/line  %6.2fM lines/s  %5.0f MB/s   median %6.1f ns/line\n",
         packed[0] * 1e9 / (double)n, (double)n / packed[0] / 1e6, (double)len / packed[0] / 1e6,
         packed[rounds / 2] * 1e9 / (double)n);
  schema_free(sc);
  free(packed);
  free(buf);
  free(starts);
  free(split);
  free(inline_nl);
  return bad;
}

int main(int argc, char **argv) {
  long n = 20000;
  int devices = 1000, rounds = 201, json = 1, line = 1;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--lines") && v)
      n = atol(argv[++i]);
    else if (!strcmp(argv[i], "--devices") && v)
      devices = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && v)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--format") && v) {
      json = strcmp(v, "line") != 0;
      line = strcmp(v, "json") != 0;
      i++;
    } else {
      fprintf(stderr, "usage: protocol-bench [--lines N] [--devices D] [--rounds R] [--format json|line|both]\n");
      return 2;
    }
  }
  if (n < 1 || n > 20000000 || devices < 1 || rounds < 1) {
    fprintf(stderr, "protocol-bench: --lines 1..20000000, --devices and --rounds >= 1\n");
    return 2;
  }
  int bad = 0;
  if (json) bad |= run("json", 0, n, devices, rounds);
  if (line) bad |= run("line", 1, n, devices, rounds);
  return bad;
}
