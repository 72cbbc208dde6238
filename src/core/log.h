/* log.h - the demo's live event log: one event per line.
 *
 * Text lines read like the reference's ("[  3.000s] 📱 Device 3 waiting for
 * bandwidth slot"); JSON lines carry the same event for machines:
 * {"t":3.0,"component":"device","id":3,"event":"slot_wait","msg":"..."}.
 * Times are seconds since the run started on the runtime's clock, so a
 * run under the virtual clock prints the same bytes every time. Lines are
 * written whole under a mutex: a plain thread (the signal watcher) may log
 * while a worker does. --quiet drops the live lines, not the summary.
 *
 * Levels: the emoji names the kind of event, and the kind its level -
 * ❌ 💥 ⛔ (something lost, a panic, a refusal that ends something) are
 * errors; ⚠️ 🐢 🚫 🔇 (a retry, a slow or refused peer, a muted one) are
 * warnings; the rest is information. Lines below the level set are
 * dropped. A serve adds what an operator's log needs (log_configure):
 * the wall-clock time, errors copied to a second stream (stderr, when
 * the log goes to a file or a pipe), and under systemd the journal's
 * priority prefix. The demo keeps the defaults, so its lines are the
 * same bytes on every run. */
#ifndef TELEGATE_LOG_H
#define TELEGATE_LOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

typedef enum log_format { LOG_TEXT = 0, LOG_JSON = 1 } log_format;

typedef enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG } log_level;

typedef struct demo_log {
  FILE *out;
  log_format format;
  int quiet;
  int64_t t0;           /* tg_now() at the start of the run */
  _Atomic int level;    /* a log_level: lines above it are dropped; changes live */
  int wall_clock;       /* each line says the UTC time */
  int journal;          /* text lines start with the journal's <priority> */
  FILE *errors;         /* error lines are copied here too; NULL: not */
  pthread_mutex_t lock; /* one line at a time */
} demo_log;

/* Level info, no wall clock, no journal, no second stream. */
void log_init(demo_log *l, FILE *out, log_format format, int quiet, int64_t t0);
void log_destroy(demo_log *l);

/* An operator's log: see the note on levels. Before the first line. */
void log_configure(demo_log *l, log_level level, int wall_clock, int journal, FILE *errors);

/* The level from now on; any thread. */
void log_set_level(demo_log *l, log_level level);

/* "error", "warn", "info", "debug". */
const char *log_level_name(log_level level);

/* Logs one event. `emoji` starts the text line; `component`, `id` (omitted
 * when 0) and `event` are the JSON line's keys; fmt is the message. */
void log_event(demo_log *l, const char *emoji, const char *component, int id, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Writes preformatted text (the summary) under the lock, even when quiet. */
void log_write(demo_log *l, const char *text);

/* One JSON line, even when quiet: the event's keys as log_event writes
 * them, and `key` holding json, a JSON value on one line (the summary in
 * a JSON log, so that every line of the log parses). */
void log_write_json(demo_log *l, const char *component, const char *event, const char *key, const char *json);

/* A limit of one line per `period` for a noisy event; what it held back is
 * counted and told on the next line it lets through. */
typedef struct log_gate {
  int64_t next_ns;    /* the first time the next line may go out */
  uint64_t held_back; /* events not logged since the last line */
} log_gate;

/* Returns nonzero when a line may go out now; then *held_back gets the
 * number held back since the last line and the count restarts. */
int log_gate_pass(log_gate *g, int64_t now_ns, int64_t period_ns, uint64_t *held_back);

/* " (+N more since the last line)", or "" when nothing was held back. */
typedef struct log_note {
  char s[64];
} log_note;
log_note log_held_note(uint64_t held);

#endif
