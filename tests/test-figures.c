/* test-figures.c - the figures are declared once (figures.h): every row of
 * every table is well formed, every field of serve_figures has a row, and
 * every row shows up with its own value in each rendering it names -
 * /metrics, /api/pipeline (over HTTP), the summary JSON and the text
 * summary - for figures filled with distinct values. A figure added to a
 * struct without a row, or a row a renderer leaves out, fails here. */
#include "figures.h"
#include "process_metrics.h"
#include "test-http.h"

#include <cjson/cJSON.h>
#include <ctype.h>

/* ------------------------------------------------------------ the tables */

typedef struct tables {
  serve_figures f;
  serve_run_end e;
  http_server_stats h;
  stream_figures st;
  uint64_t hr[API_HEALTH_RESULTS];
  figure_source src[5];
  size_t size[5]; /* of each source's struct */
} tables;

static void tables_init(tables *t) {
  memset(t, 0, sizeof *t);
  t->src[0] = figures_serve(&t->f);
  t->src[1] = figures_run_end(&t->e);
  t->src[2] = figures_http(&t->h);
  t->src[3] = figures_streams(&t->st);
  t->src[4] = figures_health_requests(t->hr);
  size_t sizes[] = {sizeof t->f, sizeof t->e, sizeof t->h, sizeof t->st, sizeof t->hr};
  memcpy(t->size, sizes, sizeof sizes);
}

#define NSRC 5

static size_t ctype_size(figure_ctype c) { return c == FIGURE_INT ? sizeof(int) : sizeof(uint64_t); }

static void set_value(const figure_def *d, const void *base, uint64_t v) {
  char *p = (char *)base + d->offset;
  if (d->ctype == FIGURE_INT) {
    int n = (int)v;
    memcpy(p, &n, sizeof n);
  } else {
    memcpy(p, &v, sizeof v);
  }
}

/* The value a row with a place holds, as the renderings print it. */
static uint64_t get_value(const figure_def *d, const void *base) {
  const char *p = (const char *)base + d->offset;
  if (d->ctype == FIGURE_INT) {
    int n;
    memcpy(&n, p, sizeof n);
    return (uint64_t)n;
  }
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* Distinct values everywhere: row k of the places gets 1000 + 17 k (a
 * flag gets 1), member i of a family 50000 + 101 k + i; every HTTP
 * status its own count. */
static void tables_fill(tables *t) {
  uint64_t k = 0;
  for (int s = 0; s < NSRC; s++)
    for (size_t r = 0; r < t->src[s].nrows; r++, k++) {
      const figure_def *d = &t->src[s].rows[r];
      if (!d->each) set_value(d, t->src[s].base, d->unit == FIGURE_FLAG ? 1 : 1000 + 17 * k);
    }
  for (int i = 1; i < SERVE_BAD_REASONS; i++) t->f.bad_input[i] = 50000 + (uint64_t)i;
  static const int codes[] = {200, 404, 503, 0};
  t->h.nstatus = 4;
  for (int i = 0; i < 4; i++) t->h.status[i].code = codes[i], t->h.status[i].count = 60000 + (uint64_t)i;
  for (int i = 0; i < API_HEALTH_RESULTS; i++) t->hr[i] = 70000 + (uint64_t)i;
}

static int snake_case(const char *s) {
  if (!s || !islower((unsigned char)s[0])) return 0;
  for (; *s; s++)
    if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_') return 0;
  return 1;
}

/* Two JSON paths clash when equal, or when one is an object the other
 * puts a key in ("a.b" and "a.b.c"). */
static int paths_clash(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  size_t n = la < lb ? la : lb;
  return strncmp(a, b, n) == 0 && (la == lb || (la < lb ? b[la] == '.' : a[lb] == '.'));
}

START_TEST(test_figures_rows_are_well_formed) {
  tables t;
  tables_init(&t);
  int rows = 0;
  for (int s = 0; s < NSRC; s++)
    for (size_t r = 0; r < t.src[s].nrows; r++, rows++) {
      const figure_def *d = &t.src[s].rows[r];
      ck_assert_msg(snake_case(d->name), "row %d: name '%s' is not snake_case", rows, d->name);
      ck_assert_msg(!d->unexported || d->help, "%s: no help", d->name);
      ck_assert_msg(!d->unexported || !d->label_key, "%s: a family that is not exported", d->name);
      ck_assert_msg(!d->label_key || snake_case(d->label_key), "%s: label key", d->name);
      ck_assert_msg(d->each ? !d->label && d->label_key : !d->label == !d->label_key, "%s: label and key", d->name);
      ck_assert_msg(d->kind != FIGURE_COUNTER || d->unit != FIGURE_FLAG, "%s: a counter flag", d->name);
      ck_assert_msg(!d->unexported || d->api || d->summary || d->line, "%s: in no rendering", d->name);
      ck_assert_msg(!d->line == !d->text, "%s: a text line without text, or text without a line", d->name);
      ck_assert_msg(d->line >= FIGURE_LINE_NONE && d->line < FIGURE_LINES, "%s: line", d->name);
      ck_assert_msg(d->unit == FIGURE_FLAG ? !d->line || d->text_unset
                                           : !d->text_unset && (!d->text || strchr(d->text, '#')),
                    "%s: text", d->name);
      ck_assert_msg(!d->each || (d->unit == FIGURE_ONE || d->unit == FIGURE_BYTES), "%s: family unit", d->name);
      if (!d->each) ck_assert_uint_le(d->offset + ctype_size(d->ctype), t.size[s]);
      /* against every later row */
      int helps = d->help != NULL;
      for (int s2 = 0; s2 < NSRC; s2++)
        for (size_t r2 = 0; r2 < t.src[s2].nrows; r2++) {
          const figure_def *o = &t.src[s2].rows[r2];
          if (o == d) continue;
          if (!strcmp(o->name, d->name)) {
            ck_assert_msg(!d->unexported && !o->unexported, "%s: name used twice", d->name);
            ck_assert_msg(d->label_key && o->label_key && !strcmp(d->label_key, o->label_key),
                          "%s: one name, two figures without a label to tell them apart", d->name);
            ck_assert_msg(!d->each && !o->each && strcmp(d->label, o->label) != 0, "%s{%s}: twice", d->name,
                          d->label ? d->label : "each");
            ck_assert_msg(d->kind == o->kind && d->unit == o->unit, "%s: a family of two kinds or units", d->name);
            helps += o->help != NULL;
          }
          if (d->api && o->api) ck_assert_msg(!paths_clash(d->api, o->api), "api %s and %s clash", d->api, o->api);
          if (d->summary && o->summary)
            ck_assert_msg(!paths_clash(d->summary, o->summary), "summary %s and %s clash", d->summary, o->summary);
        }
      ck_assert_msg(helps == 1, "%s: the family's help is on %d rows, not one", d->name, helps);
    }
  ck_assert_int_gt(rows, 60);
}
END_TEST

/* Every byte of serve_figures is read by some row, except padding (less
 * than 8 bytes, up to the next 8-byte boundary) and bad_input[0], which
 * is no reason. A byte is read when setting it changes a row's value. */
START_TEST(test_figures_every_serve_field_has_a_row) {
  static serve_figures f;
  figure_source src = figures_serve(&f);
  unsigned char read[sizeof f] = {0};
  for (size_t byte = 0; byte < sizeof f; byte++) {
    memset(&f, 0, sizeof f);
    ((unsigned char *)&f)[byte] = 0x5a;
    for (size_t r = 0; r < src.nrows; r++) {
      const figure_def *d = &src.rows[r];
      if (!d->each) {
        read[byte] |= get_value(d, &f) != 0;
        continue;
      }
      char label[64];
      uint64_t v;
      for (int i = 0; d->each(&f, i, label, sizeof label, &v); i++) read[byte] |= v != 0;
    }
  }
  size_t unused = offsetof(serve_figures, bad_input);
  for (size_t b = unused; b < unused + sizeof f.bad_input[0]; b++) {
    ck_assert_msg(!read[b], "bad_input[0] is read");
    read[b] = 1;
  }
  /* The histograms are families of their own (histogram.h, metrics.c). */
  for (size_t b = offsetof(serve_figures, commit_time);
       b < offsetof(serve_figures, reading_commit) + sizeof f.reading_commit; b++)
    read[b] = 1;
  for (size_t b = 0; b < sizeof f;) {
    if (read[b]) {
      b++;
      continue;
    }
    size_t end = b;
    while (end < sizeof f && !read[end]) end++;
    ck_assert_msg(end - b < 8 && end % 8 == 0,
                  "serve_figures bytes %zu..%zu are in no row of figures.c: a field without its figure", b, end);
    b = end;
  }
}
END_TEST

START_TEST(test_figures_reason_names_once) {
  for (int i = 1; i < SERVE_BAD_REASONS; i++) {
    const char *n = serve_bad_reason_name(i);
    ck_assert_msg(snake_case(n), "reason %d: '%s'", i, n ? n : "(null)");
    if (i < PROTOCOL_REASON_COUNT) ck_assert_str_eq(n, protocol_reason_name(i));
    for (int j = 1; j < i; j++) ck_assert_str_ne(n, serve_bad_reason_name(j));
  }
  ck_assert_ptr_null(serve_bad_reason_name(0));
  ck_assert_ptr_null(serve_bad_reason_name(SERVE_BAD_REASONS));
  ck_assert_str_eq(serve_bad_reason_name(SERVE_BAD_TRUNCATED), "truncated");
  ck_assert_str_eq(serve_bad_reason_name(SERVE_BAD_TOO_MANY_DEVICES), "too_many_devices");
}
END_TEST

/* ------------------------------------------------------------ Prometheus */

/* The sample line a row (or member) must render as. */
static void prom_line(char *out, size_t cap, const char *prefix, const figure_def *d, const char *label, uint64_t v) {
  char labels[96] = "";
  if (d->label_key) snprintf(labels, sizeof labels, "{%s=\"%s\"}", d->label_key, label);
  char value[32];
  if (d->unit == FIGURE_MS)
    snprintf(value, sizeof value, "%.3f", (double)v / 1e3);
  else if (d->unit == FIGURE_NS)
    snprintf(value, sizeof value, "%.9f", (double)v / 1e9);
  else
    snprintf(value, sizeof value, "%llu", (unsigned long long)v);
  snprintf(out, cap, "\n%s%s%s%s %s\n", prefix, d->name, d->kind == FIGURE_COUNTER ? "_total" : "", labels, value);
}

static int count_samples(const char *text) {
  int n = 0;
  for (const char *l = text; *l; l = strchr(l, '\n') + 1)
    if (*l != '#') n++;
  return n;
}

/* Observations land in the first bucket at or above them; the exposition
 * is cumulative, +Inf and _count being the total. */
START_TEST(test_figures_histogram) {
  static histogram h;
  histogram_observe(&h, 500000, 1);                   /* 0.5 ms: le 0.001 */
  histogram_observe(&h, 1000000, 2);                  /* 1 ms exactly: le 0.001 */
  histogram_observe(&h, 70000000, 10);                /* 70 ms: le 0.1 */
  histogram_observe(&h, (int64_t)60 * 1000000000, 1); /* a minute: only +Inf */
  histogram_figures f;
  histogram_get(&h, &f);
  http_buf b = {0};
  histogram_prometheus(&b, "x_seconds", "help", &f);
  ck_assert(!b.failed);
  ck_assert_ptr_nonnull(strstr(b.data, "# HELP x_seconds help\n# TYPE x_seconds histogram\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "x_seconds_bucket{le=\"0.001\"} 3\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "x_seconds_bucket{le=\"0.05\"} 3\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "x_seconds_bucket{le=\"0.1\"} 13\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "x_seconds_bucket{le=\"30\"} 13\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "x_seconds_bucket{le=\"+Inf\"} 14\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "x_seconds_sum 60.702500000\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "x_seconds_count 14\n"));
  http_buf_free(&b);
}
END_TEST

START_TEST(test_figures_prometheus_has_every_row) {
  tables t;
  tables_init(&t);
  tables_fill(&t);
  http_buf b = {0};
  http_buf_append(&b, "\n", 1); /* so that every sample line is "\n...\n" */
  metrics_write(&b, &t.f, &t.h, &t.st, t.hr);
  ck_assert(!b.failed);
  int want = 0;
  for (int s = 0; s < NSRC; s++)
    for (size_t r = 0; r < t.src[s].nrows; r++) {
      const figure_def *d = &t.src[s].rows[r];
      if (d->unexported) {
        char name[128];
        snprintf(name, sizeof name, "\n%s%s", t.src[s].prefix, d->name);
        ck_assert_msg(!strstr(b.data, name), "%s is in /metrics", name);
        continue;
      }
      char line[256], help[256];
      snprintf(help, sizeof help, "\n# TYPE %s%s%s %s\n", t.src[s].prefix, d->name,
               d->kind == FIGURE_COUNTER ? "_total" : "", d->kind == FIGURE_COUNTER ? "counter" : "gauge");
      ck_assert_msg(strstr(b.data, help), "no%s", help);
      if (d->each) {
        char label[64];
        uint64_t v;
        int i = 0;
        for (; d->each(t.src[s].base, i, label, sizeof label, &v); i++, want++) {
          prom_line(line, sizeof line, t.src[s].prefix, d, label, v);
          ck_assert_msg(strstr(b.data, line), "no%s", line);
        }
        ck_assert_int_gt(i, 0);
      } else {
        prom_line(line, sizeof line, t.src[s].prefix, d, d->label, get_value(d, t.src[s].base));
        ck_assert_msg(strstr(b.data, line), "no%s", line);
        want++;
      }
    }
  /* the two histograms: their buckets, +Inf, _sum and _count */
  ck_assert_ptr_nonnull(strstr(b.data, "\n# TYPE telegate_batch_commit_seconds histogram\n"));
  ck_assert_ptr_nonnull(strstr(b.data, "\n# TYPE telegate_reading_commit_latency_seconds histogram\n"));
  want += 2 * (HISTOGRAM_BUCKETS + 3);
  /* and the build's and the process's (process_metrics.h), whose values
   * are this process's: test-http-metrics checks those */
  ck_assert_ptr_nonnull(strstr(b.data, "\ntelegate_build_info{version=\""));
  want++;
  figure_source process = figures_process(NULL);
  for (size_t r = 0; r < process.nrows; r++, want++) {
    char type[256];
    snprintf(type, sizeof type, "\n# TYPE %s%s", process.rows[r].name,
             process.rows[r].kind == FIGURE_COUNTER ? "_total counter\n" : " gauge\n");
    ck_assert_msg(strstr(b.data, type), "no%s", type);
  }
  /* nothing else: no sample the tables do not declare */
  ck_assert_int_eq(count_samples(b.data + 1), want);
  http_buf_free(&b);
}
END_TEST

/* ------------------------------------------------------------ JSON */

static const cJSON *at_path(const cJSON *o, const char *path) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", path);
  char *save = NULL;
  for (char *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
    o = cJSON_GetObjectItemCaseSensitive(o, k);
  return o;
}

/* Every row of src the rendering names is at its path with its value;
 * returns how many values that was. */
static int json_has_rows(const cJSON *o, const figure_source *src, int nsrc, figure_json which) {
  int n = 0;
  for (int s = 0; s < nsrc; s++)
    for (size_t r = 0; r < src[s].nrows; r++) {
      const figure_def *d = &src[s].rows[r];
      const char *path = which == FIGURE_JSON_API ? d->api : d->summary;
      if (!path) continue;
      const cJSON *v = at_path(o, path);
      ck_assert_msg(v != NULL, "no %s", path);
      if (d->each) {
        char label[64];
        uint64_t want;
        int i = 0;
        for (; d->each(src[s].base, i, label, sizeof label, &want); i++, n++) {
          const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, label);
          ck_assert_msg(cJSON_IsNumber(m) && m->valuedouble == (double)want, "%s.%s", path, label);
        }
        ck_assert_int_eq(cJSON_GetArraySize(v), i);
      } else if (d->unit == FIGURE_FLAG) {
        ck_assert_msg(cJSON_IsBool(v) && cJSON_IsTrue(v) == (get_value(d, src[s].base) != 0), "%s", path);
        n++;
      } else {
        ck_assert_msg(cJSON_IsNumber(v) && v->valuedouble == (double)get_value(d, src[s].base), "%s: %g, not %llu",
                      path, v->valuedouble, (unsigned long long)get_value(d, src[s].base));
        n++;
      }
    }
  return n;
}

/* The values in a JSON tree (objects walked, leaves counted). */
static int json_leaves(const cJSON *o) {
  if (!cJSON_IsObject(o)) return 1;
  int n = 0;
  for (const cJSON *c = o->child; c; c = c->next) n += json_leaves(c);
  return n;
}

START_TEST(test_figures_summary_json_has_every_row) {
  tables t;
  tables_init(&t);
  tables_fill(&t);
  http_buf b = {0};
  figures_summary_json(&b, &t.f, &t.e);
  ck_assert(!b.failed);
  cJSON *o = cJSON_Parse(b.data);
  ck_assert_msg(o != NULL, "not JSON: %s", b.data);
  int n = json_has_rows(o, t.src, 2, FIGURE_JSON_SUMMARY);
  ck_assert_int_eq(json_leaves(o), n);
  /* the keys bench/ingest.sh and the tests read */
  static const char *const kept[] = {"connections_accepted",
                                     "readings_received",
                                     "db_rows",
                                     "lossless",
                                     "first_byte_unix_ns",
                                     "last_commit_unix_ns",
                                     "bad_input.truncated",
                                     "health.unmatched_replies",
                                     "telemetry_full_waits"};
  for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) ck_assert_msg(at_path(o, kept[i]), "no %s", kept[i]);
  cJSON_Delete(o);
  http_buf_free(&b);
}
END_TEST

/* /api/pipeline over HTTP: serve's rows with the values the fixture
 * reports; the HTTP side's rows are live counts, so their values are
 * checked on the renderer with filled structs. */
static void *pipeline_body(void *arg) {
  (void)arg;
  tables t;
  tables_init(&t);
  tables_fill(&t);
  fixture *fx = malloc(sizeof *fx);
  fx_init(fx, 16, 1);
  fx->figures = t.f;
  fx_start(fx);
  client c;
  cl_request(&c, fx->port, "GET /api/pipeline HTTP/1.1\r\nHost: t\r\n\r\n");
  ck_assert_int_eq(c.r[0].status, 200);
  cJSON *o = cJSON_Parse(c.r[0].body.data);
  ck_assert_msg(o != NULL, "not JSON: %s", c.r[0].body.data);
  ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(o, "has_pipeline")));
  int n = json_has_rows(o, t.src, 1, FIGURE_JSON_API);
  int http_side = 0;
  for (int s = 2; s < NSRC; s++)
    for (size_t r = 0; r < t.src[s].nrows; r++)
      if (t.src[s].rows[r].api) {
        ck_assert_msg(cJSON_IsNumber(at_path(o, t.src[s].rows[r].api)), "no %s", t.src[s].rows[r].api);
        http_side++;
      }
  ck_assert_int_eq(json_leaves(o), 1 + n + http_side);
  cJSON_Delete(o);
  cl_close(&c);
  fx_stop(fx);
  free(fx);

  http_buf b = {0};
  http_buf_append(&b, "{", 1);
  figures_json_members(&b, t.src + 2, NSRC - 2, FIGURE_JSON_API);
  http_buf_append(&b, "}", 1);
  o = cJSON_Parse(b.data);
  ck_assert_msg(o != NULL, "not JSON: %s", b.data);
  ck_assert_int_eq(json_has_rows(o, t.src + 2, NSRC - 2, FIGURE_JSON_API), http_side);
  cJSON_Delete(o);
  http_buf_free(&b);
  return NULL;
}

START_TEST(test_figures_api_pipeline_has_every_row) { tg_test_run(1, 0, pipeline_body, NULL); }
END_TEST

/* ------------------------------------------------------------ text */

/* The line of the summary that starts with `name`; fails if absent. */
static void text_line(const char *text, const char *name, char *out, size_t cap) {
  char head[32];
  snprintf(head, sizeof head, "\n%-14s", name);
  const char *l = strstr(text, head);
  ck_assert_msg(l != NULL, "no line %s in\n%s", name, text);
  l++;
  size_t len = (size_t)(strchr(l, '\n') - l);
  snprintf(out, cap, "%.*s", (int)len, l);
}

static const char *const line_name[FIGURE_LINES] = {
    [FIGURE_LINE_CONNECTIONS] = "connections",   [FIGURE_LINE_READINGS] = "readings",
    [FIGURE_LINE_BAD_LINES] = "bad lines",       [FIGURE_LINE_BATCHES] = "batches",
    [FIGURE_LINE_BACKPRESSURE] = "backpressure", [FIGURE_LINE_HEALTH] = "health",
    [FIGURE_LINE_SNAPSHOTS] = "snapshots",       [FIGURE_LINE_SHUTDOWN] = "shutdown",
};

/* A row's text with '#' replaced by `value`. */
static void fragment(char *out, size_t cap, const figure_def *d, const char *value) {
  const char *mark = strchr(d->text, '#');
  snprintf(out, cap, "%.*s%s%s", (int)(mark - d->text), d->text, value, mark + 1);
}

START_TEST(test_figures_text_summary_has_every_row) {
  tables t;
  tables_init(&t);
  tables_fill(&t);
  for (int lossless = 1; lossless >= 0; lossless--) {
    t.e.lossless = lossless;
    http_buf b = {0};
    figures_summary_text(&b, &t.f, &t.e);
    ck_assert(!b.failed);
    char line[1024], want[512];
    for (int s = 0; s < 2; s++)
      for (size_t r = 0; r < t.src[s].nrows; r++) {
        const figure_def *d = &t.src[s].rows[r];
        if (!d->line) continue;
        text_line(b.data, line_name[d->line], line, sizeof line);
        if (d->unit == FIGURE_FLAG) {
          snprintf(want, sizeof want, "%s", lossless ? d->text : d->text_unset);
        } else if (d->each) {
          char list[512] = "", label[64];
          uint64_t v;
          size_t len = 0;
          for (int i = 0; d->each(t.src[s].base, i, label, sizeof label, &v); i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s %llu", i ? ", " : "", label,
                                    (unsigned long long)v);
          fragment(want, sizeof want, d, list);
        } else {
          char value[32];
          snprintf(value, sizeof value, "%llu", (unsigned long long)get_value(d, t.src[s].base));
          fragment(want, sizeof want, d, value);
        }
        ck_assert_msg(strstr(line, want), "'%s' not in '%s'", want, line);
      }
    http_buf_free(&b);
  }
  /* the layout the log has always had */
  t.e.lossless = 1;
  memset(&t.f, 0, sizeof t.f);
  t.f.bad_lines = 3;
  t.f.bad_input[PROTOCOL_MISSING_FIELD] = 2;
  t.f.bad_input[SERVE_BAD_TRUNCATED] = 1;
  http_buf b = {0};
  figures_summary_text(&b, &t.f, &t.e);
  char line[1024];
  text_line(b.data, "bad lines", line, sizeof line);
  ck_assert_str_eq(line, "bad lines     3 (missing_field 2, truncated 1); 0 error lines sent, 0 held back");
  t.f.bad_input[PROTOCOL_MISSING_FIELD] = t.f.bad_input[SERVE_BAD_TRUNCATED] = t.f.bad_lines = 0;
  http_buf_reset(&b);
  figures_summary_text(&b, &t.f, &t.e);
  text_line(b.data, "bad lines", line, sizeof line);
  ck_assert_str_eq(line, "bad lines     0; 0 error lines sent, 0 held back");
  text_line(b.data, "readings", line, sizeof line);
  char want[256];
  snprintf(
      want, sizeof want,
      "readings      received 0, aggregated 0, stored 0 + 0 resends dropped, 0 not committed; rows in the database "
      "%llu",
      (unsigned long long)t.e.db_rows);
  ck_assert_str_eq(line, want);
  http_buf_free(&b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("figures");
  tg_test_add(s, "rows_are_well_formed", test_figures_rows_are_well_formed, 10);
  tg_test_add(s, "every_serve_field_has_a_row", test_figures_every_serve_field_has_a_row, 10);
  tg_test_add(s, "reason_names_once", test_figures_reason_names_once, 10);
  tg_test_add(s, "prometheus_has_every_row", test_figures_prometheus_has_every_row, 10);
  tg_test_add(s, "histogram", test_figures_histogram, 10);
  tg_test_add(s, "summary_json_has_every_row", test_figures_summary_json_has_every_row, 10);
  tg_test_add(s, "api_pipeline_has_every_row", test_figures_api_pipeline_has_every_row, 20);
  tg_test_add(s, "text_summary_has_every_row", test_figures_text_summary_has_every_row, 10);
  return tg_test_main(s);
}
