/* log.c - text and JSON event lines; see log.h. */
#include "log.h"

#include "tg/time.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>

void log_init(demo_log *l, FILE *out, log_format format, int quiet, int64_t t0) {
  l->out = out;
  l->format = format;
  l->quiet = quiet;
  l->t0 = t0;
  pthread_mutex_init(&l->lock, NULL);
}

void log_destroy(demo_log *l) { pthread_mutex_destroy(&l->lock); }

void log_event(demo_log *l, const char *emoji, const char *component, int id, const char *event, const char *fmt, ...) {
  if (l->quiet) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int64_t ms = (tg_now() - l->t0) / 1000000;
  if (ms < 0) ms = 0;
  pthread_mutex_lock(&l->lock);
  if (l->format == LOG_TEXT) {
    fprintf(l->out, "[%3lld.%03llds] %s %s\n", (long long)(ms / 1000), (long long)(ms % 1000), emoji, msg);
  } else {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "t", (double)ms / 1000.0);
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
  pthread_mutex_unlock(&l->lock);
}

void log_write(demo_log *l, const char *text) {
  pthread_mutex_lock(&l->lock);
  fputs(text, l->out);
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
