/* test-http-metrics.c - GET /metrics read by a strict parser of the
 * Prometheus text format 0.0.4: every line well-formed, HELP and TYPE
 * once per family and before its samples, a family's samples together, no
 * series twice, counters named *_total with finite non-negative values -
 * and the values equal to the figures behind them. The parser is tested
 * on bad input first, so a lax parser cannot pass the endpoint. */
#include "test-http.h"

#include "build_info.h"

#include <ctype.h>
#include <math.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_FAMILIES 256
#define MAX_SERIES   1024

typedef struct prom {
  int nfam;
  struct {
    char name[128], type[16];
    int help, samples, closed; /* closed: a later family's sample came */
  } fam[MAX_FAMILIES];
  int nseries;
  struct {
    char key[256]; /* name{labels} as written */
    double value;
  } series[MAX_SERIES];
  char error[256];
} prom;

static int prom_fail(prom *p, int line, const char *why) {
  snprintf(p->error, sizeof p->error, "line %d: %s", line, why);
  return -1;
}

static int name_char(int c, int first) { return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c)); }

/* A metric name at s; returns its length (0: none). */
static size_t metric_name(const char *s) {
  size_t n = 0;
  while (name_char((unsigned char)s[n], n == 0)) n++;
  return n;
}

static int family_of(prom *p, const char *name, size_t len) {
  for (int i = 0; i < p->nfam; i++)
    if (strlen(p->fam[i].name) == len && strncmp(p->fam[i].name, name, len) == 0) return i;
  return -1;
}

static int family_add(prom *p, const char *name, size_t len) {
  int f = family_of(p, name, len);
  if (f >= 0 || p->nfam == MAX_FAMILIES) return f;
  snprintf(p->fam[p->nfam].name, sizeof p->fam[0].name, "%.*s", (int)len, name);
  return p->nfam++;
}

/* A float as Go's ParseFloat takes it, or NaN / +Inf / -Inf. */
static int parse_value(const char *s, size_t len, double *out) {
  char buf[64];
  if (len == 0 || len >= sizeof buf) return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (!strcmp(buf, "NaN")) return *out = NAN, 0;
  if (!strcmp(buf, "+Inf") || !strcmp(buf, "Inf")) return *out = INFINITY, 0;
  if (!strcmp(buf, "-Inf")) return *out = -INFINITY, 0;
  size_t i = 0;
  if (buf[i] == '+' || buf[i] == '-') i++;
  size_t digits = 0;
  while (isdigit((unsigned char)buf[i])) i++, digits++;
  if (buf[i] == '.') {
    i++;
    while (isdigit((unsigned char)buf[i])) i++, digits++;
  }
  if (!digits) return -1;
  if (buf[i] == 'e' || buf[i] == 'E') {
    i++;
    if (buf[i] == '+' || buf[i] == '-') i++;
    if (!isdigit((unsigned char)buf[i])) return -1;
    while (isdigit((unsigned char)buf[i])) i++;
  }
  if (buf[i]) return -1;
  *out = strtod(buf, NULL);
  return 0;
}

/* The family of a sample: its name, or for a histogram's samples the name
 * without _bucket, _sum or _count. */
static int sample_family(prom *p, const char *name, size_t len) {
  int f = family_of(p, name, len);
  static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
  for (size_t i = 0; f < 0 && i < 3; i++) {
    size_t sl = strlen(suffixes[i]);
    if (len <= sl || strncmp(name + len - sl, suffixes[i], sl) != 0) continue;
    int h = family_of(p, name, len - sl);
    if (h >= 0 && !strcmp(p->fam[h].type, "histogram")) f = h;
  }
  return f;
}

static int parse_sample(prom *p, int ln, const char *s, const char *end) {
  size_t nl = metric_name(s);
  if (!nl) return prom_fail(p, ln, "no metric name");
  int f = sample_family(p, s, nl);
  if (f < 0 || !p->fam[f].type[0]) return prom_fail(p, ln, "sample before its # TYPE");
  if (p->fam[f].closed) return prom_fail(p, ln, "family's samples not together");
  for (int i = 0; i < p->nfam; i++)
    if (i != f && p->fam[i].samples) p->fam[i].closed = 1;
  const char *c = s + nl;
  if (*c == '{') {
    c++;
    while (*c != '}') {
      size_t ll = 0;
      while (isalnum((unsigned char)c[ll]) || c[ll] == '_') ll++;
      if (!ll || isdigit((unsigned char)c[0])) return prom_fail(p, ln, "bad label name");
      if (ll >= 2 && c[0] == '_' && c[1] == '_') return prom_fail(p, ln, "reserved label name");
      c += ll;
      if (*c++ != '=' || *c++ != '"') return prom_fail(p, ln, "label without =\"");
      while (*c != '"') {
        if (c >= end) return prom_fail(p, ln, "unterminated label value");
        if (*c == '\\') {
          c++;
          if (*c != '\\' && *c != '"' && *c != 'n') return prom_fail(p, ln, "bad escape in label value");
        }
        c++;
      }
      c++;
      if (*c == ',')
        c++;
      else if (*c != '}')
        return prom_fail(p, ln, "labels not separated by ,");
    }
    c++;
  }
  if (*c++ != ' ') return prom_fail(p, ln, "no space before the value");
  const char *v = c;
  while (c < end && *c != ' ') c++;
  double value;
  if (parse_value(v, (size_t)(c - v), &value) != 0) return prom_fail(p, ln, "bad value");
  if (c < end) { /* a timestamp: an integer */
    c++;
    if (*c == '-') c++;
    if (c == end) return prom_fail(p, ln, "bad timestamp");
    for (; c < end; c++)
      if (!isdigit((unsigned char)*c)) return prom_fail(p, ln, "bad timestamp");
  }
  if (!strcmp(p->fam[f].type, "counter") && (!isfinite(value) || value < 0))
    return prom_fail(p, ln, "counter not finite and >= 0");
  size_t klen = (size_t)(v - 1 - s);
  if (klen >= sizeof p->series[0].key || p->nseries == MAX_SERIES) return prom_fail(p, ln, "too long");
  for (int i = 0; i < p->nseries; i++)
    if (strlen(p->series[i].key) == klen && !strncmp(p->series[i].key, s, klen))
      return prom_fail(p, ln, "series twice");
  snprintf(p->series[p->nseries].key, sizeof p->series[0].key, "%.*s", (int)klen, s);
  p->series[p->nseries++].value = value;
  p->fam[f].samples++;
  return 0;
}

/* Parses the whole exposition; 0, or -1 with p->error set. */
static int prom_parse(prom *p, const char *text) {
  memset(p, 0, sizeof *p);
  size_t len = strlen(text);
  if (len == 0 || text[len - 1] != '\n') return prom_fail(p, 0, "does not end with a newline");
  int ln = 0;
  for (const char *s = text; *s;) {
    const char *end = strchr(s, '\n');
    ln++;
    if (end == s) return prom_fail(p, ln, "empty line");
    if (memchr(s, '\r', (size_t)(end - s))) return prom_fail(p, ln, "carriage return");
    if (*s == '#') {
      int help = !strncmp(s, "# HELP ", 7), type = !strncmp(s, "# TYPE ", 7);
      if (help || type) {
        const char *n = s + 7;
        size_t nl = metric_name(n);
        if (!nl || n[nl] != ' ') return prom_fail(p, ln, "HELP/TYPE without a name and text");
        int f = family_add(p, n, nl);
        if (f < 0) return prom_fail(p, ln, "too many families");
        if (p->fam[f].samples) return prom_fail(p, ln, "HELP/TYPE after the family's samples");
        const char *rest = n + nl + 1;
        if (help) {
          if (p->fam[f].help++) return prom_fail(p, ln, "HELP twice");
          for (const char *c = rest; c < end; c++) {
            if (*c != '\\') continue;
            if (c[1] != '\\' && c[1] != 'n') return prom_fail(p, ln, "bad escape in HELP");
            c++;
          }
        } else {
          if (p->fam[f].type[0]) return prom_fail(p, ln, "TYPE twice");
          size_t tl = (size_t)(end - rest);
          static const char *types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
          int ok = 0;
          for (int i = 0; i < 5; i++) ok |= strlen(types[i]) == tl && !strncmp(rest, types[i], tl);
          if (!ok) return prom_fail(p, ln, "unknown TYPE");
          snprintf(p->fam[f].type, sizeof p->fam[f].type, "%.*s", (int)tl, rest);
          if (!strcmp(p->fam[f].type, "counter") && (nl < 6 || strncmp(n + nl - 6, "_total", 6) != 0))
            return prom_fail(p, ln, "counter not named *_total");
        }
      }
    } else if (parse_sample(p, ln, s, end) != 0) {
      return -1;
    }
    s = end + 1;
  }
  for (int i = 0; i < p->nfam; i++) {
    if (!p->fam[i].help) return prom_fail(p, 0, "a family without HELP");
    if (!p->fam[i].samples) return prom_fail(p, 0, "a family without samples");
  }
  return 0;
}

/* The value of a series (name{labels} exactly as written); fails if absent. */
static double value_of(const prom *p, const char *key) {
  for (int i = 0; i < p->nseries; i++)
    if (!strcmp(p->series[i].key, key)) return p->series[i].value;
  ck_abort_msg("no series %s", key);
  return 0;
}

/* ------------------------------------------------------------ the parser itself */

START_TEST(test_metrics_parser_rejects_bad_text) {
  static const struct {
    const char *text, *why;
  } bad[] = {
      {"# HELP a_total x\n# TYPE a_total counter\na_total 1", "newline"},
      {"a 1\n", "TYPE"},
      {"# HELP a x\n# TYPE a gauge\na 1\na 2\n", "twice"},
      {"# HELP a x\n# TYPE a gauge\n# TYPE a gauge\na 1\n", "TYPE twice"},
      {"# HELP a x\n# TYPE a counter\na 1\n", "_total"},
      {"# HELP a_total x\n# TYPE a_total counter\na_total -1\n", "counter"},
      {"# HELP a x\n# TYPE a gauge\na{l=\"\\q\"} 1\n", "escape"},
      {"# HELP a x\n# TYPE a gauge\na{l=\"v\" m=\"w\"} 1\n", "separated"},
      {"# HELP a x\n# TYPE a gauge\na{__l=\"v\"} 1\n", "reserved"},
      {"# HELP a x\n# TYPE a gauge\na one\n", "bad value"},
      {"# HELP a x\n# TYPE a gauge\na  1\n", "bad value"},
      {"# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\na{l=\"1\"} 1\nb 1\na{l=\"2\"} 1\n", "together"},
      {"# HELP a x\n# TYPE a gauge\na 1\n# HELP a y\n", "after"},
      {"# HELP a x\n# TYPE a gauge\n\na 1\n", "empty line"},
      {"# HELP a x\n# TYPE a gauge\na 1\r\n", "carriage"},
      {"# HELP a x\n# TYPE a nonsense\na 1\n", "unknown TYPE"},
      {"# TYPE a gauge\na 1\n", "HELP"},
      {"# HELP a x \\q\n# TYPE a gauge\na 1\n", "escape in HELP"},
      {"# HELP a x\n# TYPE a gauge\n", "without samples"},
  };
  prom *p = malloc(sizeof *p);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_msg(prom_parse(p, bad[i].text) != 0, "accepted: %s", bad[i].text);
    ck_assert_msg(strstr(p->error, bad[i].why), "%s: rejected for '%s', not '%s'", bad[i].text, p->error, bad[i].why);
  }
  ck_assert_int_eq(
      prom_parse(p,
                 "# HELP a_total x \\\\ \\n\n# TYPE a_total counter\na_total{l=\"a\\\"b\",m=\"\"} 1.5e3 1700000000000\n"
                 "# HELP g x\n# TYPE g gauge\ng NaN\ng{x=\"1\",} -Inf\n"),
      0);
  ck_assert_double_eq(value_of(p, "a_total{l=\"a\\\"b\",m=\"\"}"), 1500);
  free(p);
}
END_TEST

/* ------------------------------------------------------------ the endpoint */

/* telegate_build_info names this build; the process_* figures are this
 * process's (each test case is a process of its own, forked just now). */
static void check_build_and_process(const prom *p) {
  build_info b = build_info_get();
  char key[256];
  snprintf(key, sizeof key, "telegate_build_info{version=\"%s\",revision=\"%s\",libtg=\"%s\"}", b.version, b.revision,
           b.libtg);
  ck_assert_double_eq(value_of(p, key), 1);
  struct rlimit rl;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  ck_assert_double_eq(value_of(p, "process_max_fds"), (double)rl.rlim_cur);
  ck_assert_double_ge(value_of(p, "process_open_fds"), 4); /* stdio, the listener, the connection */
  ck_assert_double_le(value_of(p, "process_open_fds"), value_of(p, "process_max_fds"));
  ck_assert_double_gt(value_of(p, "process_resident_memory_bytes"), 0);
  ck_assert_double_ge(value_of(p, "process_virtual_memory_bytes"), value_of(p, "process_resident_memory_bytes"));
  ck_assert_double_ge(value_of(p, "process_cpu_seconds_total"), 0);
  double now = (double)time(NULL), started = value_of(p, "process_start_time_seconds");
  ck_assert_double_le(started, now + 1);
  ck_assert_double_ge(started, now - 600);
}

static void *metrics_body(void *arg) {
  (void)arg;
  fixture f;
  fx_init(&f, 16, 2);
  serve_figures *g = &f.figures;
  g->uptime_ms = 12500;
  g->readings_received = 1000;
  g->readings_aggregated = 990;
  g->readings_stored = 900;
  g->bad_input[PROTOCOL_MALFORMED] = 3;
  g->bad_input[PROTOCOL_OUT_OF_RANGE] = 5;
  g->bad_input[SERVE_BAD_TRUNCATED] = 1;
  g->telemetry = (serve_queue_figures){.len = 50, .capacity = 50, .senders_waiting = 4, .full_waits = 77};
  g->storage = (serve_queue_figures){.len = 2, .capacity = 10, .full_waits = 6};
  g->bandwidth = (serve_permit_figures){.permits = 5, .in_use = 5, .waiters = 2, .waits = 31};
  g->db_pool = (serve_permit_figures){.permits = 2, .in_use = 1};
  g->lag_events = 9;
  g->lagged_messages = 123;
  g->health.ok = 10;
  g->health.timeout = 2;
  g->devices_connected = 7;
  g->clients_connected = 1;
  fx_start(&f);

  client c;
  cl_request(&c, f.port, "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 404);
  cl_close(&c);
  cl_request(&c, f.port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 200);
  ck_assert_str_eq(c.r[0].content_type, METRICS_CONTENT_TYPE);
  prom *p = malloc(sizeof *p);
  ck_assert_msg(prom_parse(p, c.r[0].body.data) == 0, "%s", p->error);
  ck_assert_double_eq(value_of(p, "telegate_uptime_seconds"), 12.5);
  ck_assert_double_eq(value_of(p, "telegate_readings_received_total"), 1000);
  ck_assert_double_eq(value_of(p, "telegate_readings_stored_total"), 900);
  ck_assert_double_eq(value_of(p, "telegate_bad_input_total{reason=\"malformed\"}"), 3);
  ck_assert_double_eq(value_of(p, "telegate_bad_input_total{reason=\"out_of_range\"}"), 5);
  ck_assert_double_eq(value_of(p, "telegate_bad_input_total{reason=\"truncated\"}"), 1);
  ck_assert_double_eq(value_of(p, "telegate_bad_input_total{reason=\"not_utf8\"}"), 0);
  ck_assert_double_eq(value_of(p, "telegate_backpressure_waits_total{stage=\"telemetry\"}"), 77);
  ck_assert_double_eq(value_of(p, "telegate_backpressure_waits_total{stage=\"storage\"}"), 6);
  ck_assert_double_eq(value_of(p, "telegate_backpressure_waits_total{stage=\"bandwidth\"}"), 31);
  ck_assert_double_eq(value_of(p, "telegate_queue_length{queue=\"telemetry\"}"), 50);
  ck_assert_double_eq(value_of(p, "telegate_queue_capacity{queue=\"storage\"}"), 10);
  ck_assert_double_eq(value_of(p, "telegate_permits_in_use{semaphore=\"bandwidth\"}"), 5);
  ck_assert_double_eq(value_of(p, "telegate_broadcast_lag_events_total"), 9);
  ck_assert_double_eq(value_of(p, "telegate_health_checks_total{result=\"ok\"}"), 10);
  ck_assert_double_eq(value_of(p, "telegate_health_checks_total{result=\"timeout\"}"), 2);
  ck_assert_double_eq(value_of(p, "telegate_devices_connected"), 7);
  ck_assert_double_eq(value_of(p, "telegate_http_responses_total{code=\"404\"}"), 1);
  ck_assert_double_eq(value_of(p, "telegate_http_connections_accepted_total"), 2);
  ck_assert_double_eq(value_of(p, "telegate_sse_clients"), 0);
  ck_assert_double_eq(value_of(p, "telegate_http_health_requests_total{result=\"ok\"}"), 0);
  check_build_and_process(p);
  cl_close(&c);

  /* without the pipeline's figures: only the HTTP side, still valid */
  fx_stop(&f);
  fx_init(&f, 16, 1);
  f.no_figures = 1;
  fx_start(&f);
  cl_request(&c, f.port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_msg(prom_parse(p, c.r[0].body.data) == 0, "%s", p->error);
  ck_assert_int_eq(family_of(p, "telegate_readings_received_total", 32), -1);
  ck_assert_double_eq(value_of(p, "telegate_http_requests_total"), 1);
  check_build_and_process(p);
  cl_close(&c);
  free(p);
  fx_stop(&f);
  return NULL;
}

START_TEST(test_metrics_endpoint_is_valid_prometheus_text) { tg_test_run(1, 0, metrics_body, NULL); }
END_TEST

int main(void) {
  Suite *s = suite_create("http-metrics");
  tg_test_add(s, "parser_rejects_bad_text", test_metrics_parser_rejects_bad_text, 10);
  tg_test_add(s, "endpoint_is_valid_prometheus_text", test_metrics_endpoint_is_valid_prometheus_text, 20);
  return tg_test_main(s);
}
