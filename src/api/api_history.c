/* api_history.c - GET /api/devices/{id}/readings: what storage holds of
 * one device, raw or in buckets, as JSON or CSV (docs/http-api.md). The
 * query runs on the blocking pool (deps.history), at most
 * history_queries at once, each bounded in rows and time. */
#include "api_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NO_STORE "Cache-Control: no-store\r\n"

/* ------------------------------------------------------------ parameters */

/* A time: Unix milliseconds ("1733212800000", may be negative), or RFC
 * 3339 ("2026-12-03T07:00:00Z", "2026-12-03T08:00:00.250+01:00"). 0 or
 * -1. */
static int parse_time(const char *v, int64_t *out) {
  char *end;
  if ((v[0] == '-' && v[1] >= '0' && v[1] <= '9') || (v[0] >= '0' && v[0] <= '9')) {
    errno = 0;
    long long ms = strtoll(v, &end, 10);
    if (*end == '\0') {
      if (errno) return -1;
      *out = ms;
      return 0;
    }
  }
  struct tm tm = {0};
  int n = 0;
  if (sscanf(v, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
             &tm.tm_sec, &n) != 6 ||
      n != 19)
    return -1;
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
      tm.tm_sec > 60)
    return -1;
  const char *p = v + n;
  int64_t frac_ms = 0;
  if (*p == '.') { /* fractional seconds: milliseconds kept, the rest dropped */
    int digits = 0;
    for (p++; *p >= '0' && *p <= '9'; p++, digits++)
      if (digits < 3) frac_ms = frac_ms * 10 + (*p - '0');
    if (digits == 0) return -1;
    for (; digits < 3; digits++) frac_ms *= 10;
  }
  int64_t offset_s = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om, k = 0;
    if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59) return -1;
    offset_s = (int64_t)(oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
    p += 6;
  } else {
    return -1;
  }
  if (*p) return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  time_t t = timegm(&tm);
  *out = ((int64_t)t - offset_s) * 1000 + frac_ms;
  return 0;
}

/* A duration: "1m", "30s", "250ms", "1h", "1d", or milliseconds. > 0 or -1. */
static int64_t parse_every(const char *v) {
  char *end;
  if (v[0] < '0' || v[0] > '9') return -1;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(end, units[i].unit) == 0)
      return errno || n < 1 || n > INT64_MAX / units[i].ms ? -1 : (int64_t)n * units[i].ms;
  return -1;
}

/* A raw cursor "TS:ROW", or a bucket's start "TS". 0 or -1. */
static int parse_after(const char *v, int64_t *ts, int64_t *row, int *has_row) {
  char *end;
  errno = 0;
  *ts = strtoll(v, &end, 10);
  if (end == v || errno) return -1;
  *has_row = *end == ':';
  if (!*has_row) return *end ? -1 : 0;
  const char *r = end + 1;
  *row = strtoll(r, &end, 10);
  return end == r || *end || errno ? -1 : 0;
}

/* The request's format: CSV with ?format=csv or an Accept that names
 * text/csv (and no ?format=json). 1 CSV, 0 JSON, -1 a bad format. */
static int wants_csv(const http_request *req) {
  char f[8];
  int n = http_query_param(req->query, "format", f, sizeof f);
  if (n >= 0) return strcmp(f, "csv") == 0 ? 1 : strcmp(f, "json") == 0 ? 0 : -1;
  if (n == -2) return -1;
  const char *accept = http_request_header(req, "Accept");
  return accept && strstr(accept, "text/csv") != NULL;
}

/* ------------------------------------------------------------ output */

/* A double as the shortest of %.15g and %.17g that reads back the same;
 * JSON has no NaN or infinity: null. */
static void put_double(http_buf *b, double d, const char *nonfinite) {
  if (!isfinite(d)) {
    http_buf_puts(b, nonfinite);
    return;
  }
  char s[40];
  snprintf(s, sizeof s, "%.15g", d);
  if (strtod(s, NULL) != d) snprintf(s, sizeof s, "%.17g", d);
  http_buf_puts(b, s);
}

static void put_text_json(http_buf *b, const storage_history_result *res, const storage_value *v) {
  char small[256];
  char *s = v->v.s.len < sizeof small ? small : malloc((size_t)v->v.s.len + 1);
  if (!s) {
    http_buf_puts(b, "null");
    return;
  }
  memcpy(s, res->text + v->v.s.off, v->v.s.len);
  s[v->v.s.len] = '\0';
  http_buf_json_string(b, s);
  if (s != small) free(s);
}

static void put_text_csv(http_buf *b, const storage_history_result *res, const storage_value *v) {
  const char *t = res->text + v->v.s.off;
  size_t n = v->v.s.len;
  if (!memchr(t, ',', n) && !memchr(t, '"', n) && !memchr(t, '\n', n) && !memchr(t, '\r', n)) {
    http_buf_append(b, t, n);
    return;
  }
  http_buf_append(b, "\"", 1);
  for (size_t i = 0; i < n; i++) http_buf_append(b, t[i] == '"' ? "\"\"" : &t[i], t[i] == '"' ? 2 : 1);
  http_buf_append(b, "\"", 1);
}

static void put_value(http_buf *b, const storage_history_result *res, const storage_value *v, int csv) {
  switch (v->type) {
  case STORAGE_INT: http_buf_i64(b, v->v.i); break;
  case STORAGE_DOUBLE: put_double(b, v->v.d, csv ? "" : "null"); break;
  case STORAGE_STR: csv ? put_text_csv(b, res, v) : put_text_json(b, res, v); break;
  case STORAGE_NULL:
    if (!csv) http_buf_puts(b, "null");
    break;
  }
}

/* The seq column: the stored 64 bits read as unsigned (storage.h). */
static void put_seq(http_buf *b, const storage_value *v) {
  if (v->type == STORAGE_INT)
    http_buf_u64(b, (uint64_t)v->v.i);
  else
    http_buf_puts(b, "null");
}

typedef struct request {
  const char *device;
  const storage_field *fields;
  const uint32_t *pick;
  uint32_t npick;
  int64_t from, to, every;
  int csv;
} request;

static void csv_out(http_buf *b, const request *rq, const storage_history_result *res) {
  static const char *const stats[] = {"min", "max", "mean"};
  http_buf_puts(b, rq->every ? "ts,count" : "ts,seq");
  for (uint32_t f = 0; f < rq->npick; f++)
    for (int k = 0; k < (rq->every ? 3 : 1); k++)
      http_buf_printf(b, rq->every ? ",%s_%s" : ",%s", rq->fields[rq->pick[f]].name, stats[k]);
  http_buf_puts(b, "\r\n");
  for (uint32_t i = 0; i < res->nrows; i++) {
    const storage_value *row = &res->values[(size_t)i * res->ncols];
    put_value(b, res, &row[0], 1);
    http_buf_append(b, ",", 1);
    if (rq->every)
      put_value(b, res, &row[1], 1);
    else
      put_seq(b, &row[1]);
    for (uint32_t c = 2; c < res->ncols; c++) {
      http_buf_append(b, ",", 1);
      put_value(b, res, &row[c], 1);
    }
    http_buf_puts(b, "\r\n");
  }
}

static void json_out(http_buf *b, const request *rq, const storage_history_result *res, const char *next) {
  http_buf_puts(b, "{\"device\":");
  http_buf_json_string(b, rq->device);
  http_buf_puts(b, ",\"from\":");
  if (rq->from == INT64_MIN)
    http_buf_puts(b, "null");
  else
    http_buf_i64(b, rq->from);
  http_buf_puts(b, ",\"to\":");
  if (rq->to == INT64_MAX)
    http_buf_puts(b, "null");
  else
    http_buf_i64(b, rq->to);
  if (rq->every) http_buf_printf(b, ",\"every_ms\":%" PRId64, rq->every);
  http_buf_puts(b, ",\"fields\":[");
  for (uint32_t f = 0; f < rq->npick; f++) {
    if (f) http_buf_append(b, ",", 1);
    http_buf_json_string(b, rq->fields[rq->pick[f]].name);
  }
  http_buf_puts(b, rq->every ? "],\"buckets\":[" : "],\"readings\":[");
  for (uint32_t i = 0; i < res->nrows; i++) {
    const storage_value *row = &res->values[(size_t)i * res->ncols];
    http_buf_puts(b, i ? ",{\"ts\":" : "{\"ts\":");
    put_value(b, res, &row[0], 0);
    if (rq->every) {
      http_buf_puts(b, ",\"count\":");
      put_value(b, res, &row[1], 0);
    } else {
      http_buf_puts(b, ",\"seq\":");
      put_seq(b, &row[1]);
    }
    for (uint32_t f = 0; f < rq->npick; f++) {
      http_buf_append(b, ",", 1);
      http_buf_json_string(b, rq->fields[rq->pick[f]].name);
      http_buf_append(b, ":", 1);
      if (!rq->every) {
        put_value(b, res, &row[2 + f], 0);
        continue;
      }
      http_buf_puts(b, "{\"min\":");
      put_value(b, res, &row[2 + 3 * f], 0);
      http_buf_puts(b, ",\"max\":");
      put_value(b, res, &row[3 + 3 * f], 0);
      http_buf_puts(b, ",\"mean\":");
      put_value(b, res, &row[4 + 3 * f], 0);
      http_buf_append(b, "}", 1);
    }
    http_buf_append(b, "}", 1);
  }
  http_buf_puts(b, "],\"next\":");
  if (next)
    http_buf_json_string(b, next);
  else
    http_buf_puts(b, "null");
  http_buf_puts(b, "}\n");
}

/* ------------------------------------------------------------ the endpoint */

static void bad(http_conn *c, const char *msg) { api_send_error(c, 400, msg, NULL, NULL); }

/* Picks the fields named in ?fields= (all when absent). Answers and
 * returns -1 on an unknown one. */
static int pick_fields(http_conn *c, const http_request *req, const storage_field *fields, uint32_t nfields,
                       uint32_t *pick, uint32_t *npick, int every) {
  char list[STORAGE_MAX_FIELDS * (STORAGE_FIELD_NAME_MAX + 1)];
  int n = http_query_param(req->query, "fields", list, sizeof list);
  *npick = 0;
  if (n == -2) {
    bad(c, "fields: too long or badly encoded");
    return -1;
  }
  for (uint32_t i = 0; n == -1 && i < nfields; i++)
    if (!every || fields[i].type != STORAGE_TEXT) pick[(*npick)++] = i;
  for (char *p = n >= 0 ? list : NULL; p && *p;) {
    size_t len = strcspn(p, ",");
    char *next = p[len] ? p + len + 1 : p + len;
    p[len] = '\0';
    uint32_t i = 0;
    while (i < nfields && strcmp(fields[i].name, p) != 0) i++;
    http_buf more = {0};
    if (i == nfields || (every && fields[i].type == STORAGE_TEXT)) {
      http_buf_puts(&more, ",\"field\":");
      http_buf_json_string(&more, p);
      http_buf_puts(&more, ",\"fields\":[");
      for (uint32_t k = 0; k < nfields; k++) {
        if (k) http_buf_append(&more, ",", 1);
        http_buf_json_string(&more, fields[k].name);
      }
      http_buf_puts(&more, "]");
      char msg[STORAGE_FIELD_NAME_MAX + 80];
      snprintf(msg, sizeof msg, i == nfields ? "unknown field '%.64s'" : "field '%.64s' is text: every= takes numbers",
               p);
      api_send_error(c, 400, msg, http_buf_failed(&more) ? NULL : more.data, NULL);
      http_buf_free(&more);
      return -1;
    }
    int dup = 0;
    for (uint32_t k = 0; k < *npick; k++) dup |= pick[k] == i;
    if (!dup) pick[(*npick)++] = i;
    p = next;
  }
  return 0;
}

void api_history_serve(api_server *a, http_conn *c, const http_request *req, const char *id_enc, size_t id_len) {
  char id[PROTOCOL_DEVICE_ID_MAX + 1], v[64];
  int n = http_decode(id_enc, id_len, id, sizeof id, 0);
  if (n <= 0 || memchr(id, '\0', (size_t)n)) {
    bad(c, "bad device id");
    return;
  }
  if (!a->deps.history || !a->deps.fields) {
    api_send_error(c, 501, "history is not available", NULL, NULL);
    return;
  }
  const storage_field *fields;
  uint32_t nfields;
  if (a->deps.fields(a->deps.ctx, &fields, &nfields) != 0) {
    api_send_error(c, 501, "this storage keeps no history (--storage none)", NULL, NULL);
    return;
  }
  request rq = {.device = id, .fields = fields, .from = INT64_MIN, .to = INT64_MAX};
  storage_history_query q = {.device = id,
                             .limit = (uint32_t)a->cfg.history_limit,
                             .after_ts = INT64_MIN,
                             .after_row = INT64_MIN,
                             .timeout_ms = a->cfg.history_timeout_ms};
  static const char *const times[] = {"from", "to"};
  int64_t *slots[] = {&rq.from, &rq.to};
  for (int i = 0; i < 2; i++) {
    int vn = http_query_param(req->query, times[i], v, sizeof v);
    if (vn == -1) continue;
    if (vn <= 0 || parse_time(v, slots[i]) != 0) {
      char msg[120];
      snprintf(msg, sizeof msg, "%s takes Unix milliseconds or an RFC 3339 time (2026-12-03T07:00:00Z)", times[i]);
      bad(c, msg);
      return;
    }
  }
  if (rq.from >= rq.to) {
    bad(c, "from must be before to");
    return;
  }
  int vn = http_query_param(req->query, "every", v, sizeof v);
  if (vn != -1 && (vn <= 0 || (rq.every = parse_every(v)) <= 0)) {
    bad(c, "every takes a duration: 500ms, 10s, 1m, 1h, 1d");
    return;
  }
  vn = http_query_param(req->query, "limit", v, sizeof v);
  if (vn != -1) {
    char *end;
    long l = vn > 0 && v[0] >= '0' && v[0] <= '9' ? strtol(v, &end, 10) : -1;
    if (l < 1 || *end || l > a->cfg.history_limit_max) {
      char more[64];
      snprintf(more, sizeof more, ",\"max_limit\":%d", a->cfg.history_limit_max);
      api_send_error(c, 400, "limit takes a count from 1", more, NULL);
      return;
    }
    q.limit = (uint32_t)l;
  }
  vn = http_query_param(req->query, "after", v, sizeof v);
  if (vn != -1) {
    int64_t ts = 0, row = 0;
    int has_row = 0;
    if (vn <= 0 || parse_after(v, &ts, &row, &has_row) != 0 || has_row != (rq.every == 0)) {
      bad(c, "after takes the `next` of the previous page");
      return;
    }
    if (has_row) {
      q.after_ts = ts, q.after_row = row;
    } else if (ts > rq.from) {
      rq.from = ts; /* buckets: the next page starts at the next bucket */
    }
  }
  if ((rq.csv = wants_csv(req)) < 0) {
    bad(c, "format is json or csv");
    return;
  }
  uint32_t pick[STORAGE_MAX_FIELDS];
  if (pick_fields(c, req, fields, nfields, pick, &rq.npick, rq.every != 0) != 0) return;
  rq.pick = pick;
  q.fields = pick;
  q.nfields = rq.npick;
  q.from_ms = rq.from;
  q.to_ms = rq.to;
  q.every_ms = rq.every;

  if (tg_semaphore_acquire_dl(a->history, 1, tg_deadline_in(TG_SEC(5))) != 0) {
    api_send_error(c, 503, "too many history queries at once; try again", NULL, NO_STORE "Retry-After: 1\r\n");
    return;
  }
  storage_history_result res;
  char err[200] = "";
  int r = a->deps.history(a->deps.ctx, &q, &res, err, sizeof err);
  tg_semaphore_release(a->history, 1);
  if (r != 0) {
    if (r == -ETIMEDOUT)
      api_send_error(c, 503, err, NULL, NULL);
    else if (r == -EOPNOTSUPP)
      api_send_error(c, 501, err, NULL, NULL);
    else
      api_send_error(c, 500, err[0] ? err : tg_strerror(r), NULL, NULL);
    return;
  }
  char next[48] = "";
  if (res.more && rq.every && res.nrows)
    snprintf(next, sizeof next, "%" PRId64, res.values[(size_t)(res.nrows - 1) * res.ncols].v.i + rq.every);
  else if (res.more)
    snprintf(next, sizeof next, "%" PRId64 ":%" PRId64, res.next_ts, res.next_row);
  http_buf b = {0};
  if (rq.csv) {
    csv_out(&b, &rq, &res);
    char headers[128];
    snprintf(headers, sizeof headers, NO_STORE "%s%s%s", next[0] ? "X-Next-After: " : "", next, next[0] ? "\r\n" : "");
    if (http_buf_failed(&b))
      api_send_error(c, 500, "out of memory", NULL, NULL);
    else
      http_respond(c, 200, "text/csv; charset=utf-8", headers, b.data, b.len);
  } else {
    json_out(&b, &rq, &res, next[0] ? next : NULL);
    api_send_json(c, 200, &b);
  }
  http_buf_free(&b);
  storage_history_result_free(&res);
}
