/* figures.h - every figure serve reports, declared once, and the four
 * renderings made from the declarations.
 *
 * Each struct of figures (serve_figures, the HTTP server's, the event
 * streams', the on-demand health checks' and serve_run_end, what only the
 * end of a run knows) has one table in figures.c. A row of a table is one
 * figure: its stable name, kind, unit, help, where its value is, and in
 * which renderings it appears under which key. The renderings are made
 * from the rows and nothing else: the Prometheus text of /metrics
 * (metrics.h), the dashboard's JSON at /api/pipeline (api.h), the object
 * serve writes to --summary-json, and the text summary serve logs at the
 * end of a run. tests/test-figures.c checks that every row shows up, with
 * its value, in each rendering it names, and that every field of
 * serve_figures has a row.
 *
 * Labelled families. The rows of a Prometheus family share `name` and
 * `label_key` and differ in `label` (queue_length: queue="telemetry",
 * queue="storage"); exactly one of them carries the family's help, and
 * all have the same kind and unit. A family whose members come from the
 * data (bad input per reason, HTTP responses per status code) is a single
 * row with an `each` accessor instead of a place.
 *
 * The renderings:
 * - Prometheus: for each name, in order of first appearance, `# HELP` and
 *   `# TYPE` then every row of it: the source's prefix (telegate_) and the
 *   name, plus _total for a counter. A value kept in ms or ns is exposed
 *   in seconds, as the name (..._seconds) says. Rows marked `unexported`
 *   are left out.
 * - JSON: `api` and `summary` are dotted paths ("queues.telemetry.len" is
 *   key len in object telemetry in object queues); objects open in order
 *   of first appearance. A family with `each` is an object of its members.
 *   A FIGURE_FLAG is true or false; every other value an exact integer.
 * - Text: the summary has a fixed set of lines (figure_line); a row with a
 *   line appends its `text` to it, in table order, '#' standing for the
 *   value. A family with `each` puts its nonzero members there as
 *   "label value, ..." and its text is left out when all are zero; a flag
 *   shows `text` when set and `text_unset` when not.
 *
 * To add a figure: the field in its struct (serve.h for serve_figures),
 * and one row in its table in figures.c: name, kind, unit and help, the
 * place (the field), and the keys of the renderings it belongs to. No
 * renderer changes.
 *
 * The process_* figures are such a table too (process_metrics.c), over
 * their own struct and with the prefix "", so process_cpu_seconds_total
 * keeps its standard name. telegate_build_info (one sample with three
 * labels, process_metrics.c) and the histograms (core/histogram.h) are
 * written by hand, next to the tables, by metrics_write. */
#ifndef TELEGATE_FIGURES_H
#define TELEGATE_FIGURES_H

#include "http.h"
#include "http_buf.h"
#include "log.h"
#include "metrics.h"
#include "serve.h"

#include <stddef.h>
#include <stdint.h>

typedef enum figure_kind { FIGURE_COUNTER, FIGURE_GAUGE } figure_kind;

typedef enum figure_unit {
  FIGURE_ONE, /* a count */
  FIGURE_BYTES,
  FIGURE_MS,   /* milliseconds; seconds in Prometheus */
  FIGURE_NS,   /* nanoseconds (the Unix times of the summary) */
  FIGURE_FLAG, /* 0 or 1; true or false in JSON */
} figure_unit;

/* The C type of a figure's field; FIGURE_AT picks it from the field. */
typedef enum figure_ctype { FIGURE_U64, FIGURE_I64, FIGURE_INT } figure_ctype;

/* The lines of serve's text summary, in the order they are written. */
typedef enum figure_line {
  FIGURE_LINE_NONE = 0,
  FIGURE_LINE_CONNECTIONS,
  FIGURE_LINE_READINGS,
  FIGURE_LINE_BAD_LINES,
  FIGURE_LINE_BATCHES,
  FIGURE_LINE_BACKPRESSURE,
  FIGURE_LINE_HEALTH,
  FIGURE_LINE_SNAPSHOTS,
  FIGURE_LINE_SHUTDOWN,
  FIGURE_LINES
} figure_line;

/* The members of a family labelled from the data: member i's label (at
 * most cap bytes with its NUL) and value. Returns 1, or 0 past the last. */
typedef int (*figure_each_fn)(const void *base, int i, char *label, size_t cap, uint64_t *value);

typedef struct figure_def {
  const char *name;      /* snake_case, stable: the Prometheus family without telegate_ and _total */
  const char *label_key; /* a labelled family's label ("queue"); NULL: none */
  const char *label;     /* this row's value of it ("telemetry"); NULL with `each` */
  figure_kind kind;
  figure_unit unit;
  const char *help; /* one sentence; on one row of each family */
  size_t offset;    /* where the value is in the table's struct ... */
  figure_ctype ctype;
  figure_each_fn each;    /* ... or the members of a family labelled from the data */
  int unexported;         /* not in /metrics: a sum of other series, or not a measurement */
  const char *api;        /* path in /api/pipeline; NULL: not there */
  const char *summary;    /* path in the summary JSON; NULL: not there */
  figure_line line;       /* the text summary's line; FIGURE_LINE_NONE: not there */
  const char *text;       /* what the row adds to it, '#' for the value */
  const char *text_unset; /* a flag's text when it is 0 */
} figure_def;

/* The place of a figure: its offset in `type` and its C type (a field of
 * another type does not compile). */
#define FIGURE_AT(type, field)                                                    \
  .offset = offsetof(type, field), .ctype = _Generic(((type *)0)->field, uint64_t \
                                                     : FIGURE_U64, int64_t        \
                                                     : FIGURE_I64, int            \
                                                     : FIGURE_INT)

/* A table and the struct (or array, for `each`) its rows read. */
typedef struct figure_source {
  const figure_def *rows;
  size_t nrows;
  const void *base;
  const char *prefix; /* of its Prometheus names: "telegate_" ("" keeps a standard name such as process_*) */
} figure_source;

/* What only the end of a serve run knows, for its summary. */
typedef struct serve_run_end {
  int64_t first_byte_unix_ns;      /* when the first byte from a device came; 0: none */
  int64_t last_aggregated_unix_ns; /* when the last reading was aggregated; 0: none */
  int64_t last_commit_unix_ns;     /* when the last batch was committed; 0: none */
  uint64_t db_rows;                /* rows in the database after the run */
  int64_t shutdown_ms;             /* from the shutdown request to the last join */
  int lossless;                    /* received == aggregated == stored + duplicates, nothing aborted */
} serve_run_end;

/* The tables, each over the struct it is named for. */
figure_source figures_serve(const serve_figures *f);
figure_source figures_http(const http_server_stats *h);
figure_source figures_streams(const stream_figures *s);
/* On-demand health checks over HTTP: API_HEALTH_RESULTS counts. */
figure_source figures_health_requests(const uint64_t *per_result);
figure_source figures_run_end(const serve_run_end *e);

/* Which JSON rendering: the dashboard's or the summary's. */
typedef enum figure_json { FIGURE_JSON_API, FIGURE_JSON_SUMMARY } figure_json;

/* Appends the Prometheus text of the sources' exported rows. */
void figures_prometheus(http_buf *b, const figure_source *src, int nsrc);

/* Appends the members of a JSON object (`"key":value,...`, no braces)
 * made of the rows the rendering names; nothing when none does. */
void figures_json_members(http_buf *b, const figure_source *src, int nsrc, figure_json which);

/* Appends the text summary's lines, after an empty line. */
void figures_text(http_buf *b, const figure_source *src, int nsrc);

/* serve's summary: the text to log, the JSON object to --summary-json. */
void figures_summary_text(http_buf *b, const serve_figures *f, const serve_run_end *e);
void figures_summary_json(http_buf *b, const serve_figures *f, const serve_run_end *e);

/* Writes the text summary to log and, when json_path is not NULL, the
 * JSON summary to that file. Returns 0, TG_ENOMEM, or -errno of opening
 * or writing the file (also logged, naming the file). */
int figures_summary_write(demo_log *log, const serve_figures *f, const serve_run_end *e, const char *json_path);

#endif
