/* log.h - the demo's live event log: one event per line.
 *
 * Text lines read like the reference's ("[  3.000s] 📱 Device 3 waiting for
 * bandwidth slot"); JSON lines carry the same event for machines:
 * {"t":3.0,"component":"device","id":3,"event":"slot_wait","msg":"..."}.
 * Times are seconds since the run started on the runtime's clock, so a
 * run under the virtual clock prints the same bytes every time. Lines are
 * written whole under a mutex: a plain thread (the signal watcher) may log
 * while a worker does. --quiet drops the live lines, not the summary. */
#ifndef TELEGATE_LOG_H
#define TELEGATE_LOG_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

typedef enum log_format { LOG_TEXT = 0, LOG_JSON = 1 } log_format;

typedef struct demo_log {
  FILE *out;
  log_format format;
  int quiet;
  int64_t t0;           /* tg_now() at the start of the run */
  pthread_mutex_t lock; /* one line at a time */
} demo_log;

void log_init(demo_log *l, FILE *out, log_format format, int quiet, int64_t t0);
void log_destroy(demo_log *l);

/* Logs one event. `emoji` starts the text line; `component`, `id` (omitted
 * when 0) and `event` are the JSON line's keys; fmt is the message. */
void log_event(demo_log *l, const char *emoji, const char *component, int id, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Writes preformatted text (the summary) under the lock, even when quiet. */
void log_write(demo_log *l, const char *text);

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
