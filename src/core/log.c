/* log.c - text and JSON event lines; see log.h. */
#include "log.h"

#include "tg/time.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void log_init(demo_log *l, FILE *out, log_format format, int quiet, int64_t t0) {
  l->out = out;
  l->format = format;
  l->quiet = quiet;
  l->t0 = t0;
  atomic_init(&l->level, LOG_INFO);
  l->wall_clock = l->journal = 0;
  l->errors = NULL;
  pthread_mutex_init(&l->lock, NULL);
}

void log_destroy(demo_log *l) { pthread_mutex_destroy(&l->lock); }

void log_configure(demo_log *l, log_level level, int wall_clock, int journal, FILE *errors) {
  atomic_store(&l->level, (int)level);
  l->wall_clock = wall_clock;
  l->journal = journal;
  l->errors = errors;
}

void log_set_level(demo_log *l, log_level level) { atomic_store(&l->level, (int)level); }

const char *log_level_name(log_level level) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  return level >= LOG_ERROR && level <= LOG_DEBUG ? names[level] : "info";
}

/* The level of an event, from its emoji: see log.h. */
static log_level level_of(const char *emoji) {
  static const char *const errors[] = {"❌", "💥", "⛔"}, *const warnings[] = {"⚠️", "🐢", "🚫", "🔇"};
  for (size_t i = 0; i < sizeof errors / sizeof *errors; i++)
    if (strcmp(emoji, errors[i]) == 0) return LOG_ERROR;
  for (size_t i = 0; i < sizeof warnings / sizeof *warnings; i++)
    if (strcmp(emoji, warnings[i]) == 0) return LOG_WARN;
  return LOG_INFO;
}

/* The wall-clock time as 2026-12-03T04:20:44.123Z. */
static void utc_now(char buf[32]) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* The syslog priority journald reads from a line's "<N>" prefix. */
static int priority_of(log_level level) { return level == LOG_ERROR ? 3 : level == LOG_WARN ? 4 : 6; }

void log_event(demo_log *l, const char *emoji, const char *component, int id, const char *event, const char *fmt, ...) {
  log_level level = level_of(emoji);
  if (l->quiet || (int)level > atomic_load_explicit(&l->level, memory_order_relaxed)) return;
  char msg[512], when[32] = "";
  if (l->wall_clock) utc_now(when);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int64_t ms = (tg_now() - l->t0) / 1000000;
  if (ms < 0) ms = 0;
  pthread_mutex_lock(&l->lock);
  if (l->format == LOG_TEXT) {
    if (l->journal) fprintf(l->out, "<%d>", priority_of(level));
    if (l->wall_clock && !l->journal) fprintf(l->out, "%s ", when); /* the journal has its own */
    fprintf(l->out, "[%3lld.%03llds] %s %s\n", (long long)(ms / 1000), (long long)(ms % 1000), emoji, msg);
  } else {
    cJSON *o = cJSON_CreateObject();
    if (l->wall_clock) cJSON_AddStringToObject(o, "time", when);
    cJSON_AddNumberToObject(o, "t", (double)ms / 1000.0);
    if (l->wall_clock) cJSON_AddStringToObject(o, "level", log_level_name(level));
    cJSON_AddStringToObject(o, "component", component);
    if (id) cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "event", event);
    cJSON_AddStringToObject(o, "msg", msg);
    char *s = cJSON_PrintUnformatted(o);
    if (s) fprintf(l->out, "%s\n", s);
    free(s);
    cJSON_Delete(o);
  }
  fflush(l->out);
  if (l->errors && level == LOG_ERROR) {
    fprintf(l->errors, "telegate: %s: %s\n", component, msg);
    fflush(l->errors);
  }
  pthread_mutex_unlock(&l->lock);
}

void log_write(demo_log *l, const char *text) {
  pthread_mutex_lock(&l->lock);
  fputs(text, l->out);
  fflush(l->out);
  pthread_mutex_unlock(&l->lock);
}

void log_write_json(demo_log *l, const char *component, const char *event, const char *key, const char *json) {
  char when[32] = "";
  if (l->wall_clock) utc_now(when);
  int64_t ms = (tg_now() - l->t0) / 1000000;
  pthread_mutex_lock(&l->lock);
  fprintf(l->out, "{");
  if (l->wall_clock) fprintf(l->out, "\"time\":\"%s\",", when);
  fprintf(l->out, "\"t\":%.3f,", (double)(ms < 0 ? 0 : ms) / 1000.0);
  if (l->wall_clock) fprintf(l->out, "\"level\":\"info\",");
  fprintf(l->out, "\"component\":\"%s\",\"event\":\"%s\",\"%s\":%s}\n", component, event, key, json);
  fflush(l->out);
  pthread_mutex_unlock(&l->lock);
}

int log_gate_pass(log_gate *g, int64_t now_ns, int64_t period_ns, uint64_t *held_back) {
  if (now_ns < g->next_ns) {
    g->held_back++;
    return 0;
  }
  *held_back = g->held_back;
  g->held_back = 0;
  g->next_ns = now_ns + period_ns;
  return 1;
}

log_note log_held_note(uint64_t held) {
  log_note n = {""};
  if (held) snprintf(n.s, sizeof n.s, " (+%llu more since the last line)", (unsigned long long)held);
  return n;
}
