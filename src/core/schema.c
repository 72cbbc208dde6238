/* schema.c - names, measurements and their columns; see schema.h.
 *
 * Lock-free reads: names live in an array indexed by id and in an
 * open-addressing table of ids; a new name is written into the array
 * before its id is stored (release) into the table, so a reader that
 * finds the id (acquire) sees the name. Columns work the same way: a
 * column is written before the measurement's count and its name's slot
 * are published. A column array that fills is copied into one twice as
 * large; the old one stays readable (and is freed with the schema), since
 * a reader may still hold it. */
#include "schema.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct measure {
  int strict; /* declared: only its columns, with their rules */
  _Atomic(schema_column *) cols;
  _Atomic uint32_t ncols;
  uint32_t cap;
  _Atomic uint16_t *col_of;  /* [name id]: column index + 1, 0: none */
  schema_column *retired[8]; /* arrays replaced by larger ones: 16 doubled 7 times passes SCHEMA_COLUMNS_MAX */
  uint32_t nretired;
} measure;

struct schema {
  pthread_mutex_t lock; /* for new names, measurements and columns */
  uint32_t max_names;
  _Atomic uint32_t count; /* ids 1 .. count are handed out */
  char **names;           /* [id] */
  uint16_t *lens;         /* [id]: strlen(names[id]) */
  uint8_t *reserved;      /* [id]: RESERVED_* roles the name may not take */
  _Atomic uint16_t *slots;
  uint32_t mask;
  _Atomic(measure *) *measures; /* [id]: NULL when the name is no measurement */
  char **units;                 /* declared units, freed with the schema */
  uint32_t nunits;
};

static uint32_t hash_name(const char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
  return h;
}

/* Names storage keeps for itself: its tables and its columns. */
enum { RESERVED_MEASUREMENT = 1, RESERVED_FIELD = 2 };

static int reserved_as(const char *n, size_t len) {
  static const struct {
    const char *word;
    int as;
  } words[] = {{"readings", RESERVED_MEASUREMENT},
               {"device_hwm", RESERVED_MEASUREMENT},
               {"mark_log", RESERVED_MEASUREMENT},
               {"device", RESERVED_FIELD},
               {"seq", RESERVED_FIELD},
               {"ts_ms", RESERVED_FIELD},
               {"batch", RESERVED_FIELD}};
  int as = len >= 7 && strncasecmp(n, "sqlite_", 7) == 0 ? RESERVED_MEASUREMENT : 0;
  for (size_t i = 0; i < sizeof words / sizeof *words; i++)
    if (strlen(words[i].word) == len && memcmp(n, words[i].word, len) == 0) as |= words[i].as;
  return as;
}

/* Whether id's name is name[0 .. len). Names are short: eight bytes a
 * step inline beat a call to memcmp. */
static inline int same8(const char *a, const char *b) {
  uint64_t x, y;
  memcpy(&x, a, 8);
  memcpy(&y, b, 8);
  return x == y;
}

static inline int same4(const char *a, const char *b) {
  uint32_t x, y;
  memcpy(&x, a, 4);
  memcpy(&y, b, 4);
  return x == y;
}

static inline int same_name(const schema *s, uint16_t id, const char *name, size_t len) {
  const char *t = s->names[id];
  if (s->lens[id] != len) return 0;
  if (len >= 8) { /* eight at a time, the last eight overlapping */
    for (size_t k = 0; k + 8 < len; k += 8)
      if (!same8(t + k, name + k)) return 0;
    return same8(t + len - 8, name + len - 8);
  }
  if (len >= 4) return same4(t, name) && same4(t + len - 4, name + len - 4);
  for (size_t k = 0; k < len; k++)
    if (t[k] != name[k]) return 0;
  return 1;
}

uint16_t schema_find(const schema *s, const char *name, size_t len) {
  for (uint32_t i = hash_name(name, len) & s->mask;; i = (i + 1) & s->mask) {
    uint16_t id = atomic_load_explicit(&s->slots[i], memory_order_acquire);
    if (id == 0) return 0;
    if (same_name(s, id, name, len)) return id;
  }
}

const char *schema_name(const schema *s, uint16_t id) {
  return id >= 1 && id <= atomic_load_explicit(&s->count, memory_order_acquire) ? s->names[id] : "";
}

/* The id of name, handing out a new one when there is room: 0 when the
 * schema is full or out of memory. */
static uint16_t intern(schema *s, const char *name, size_t len) {
  uint16_t id = schema_find(s, name, len);
  if (id) return id;
  pthread_mutex_lock(&s->lock);
  id = schema_find(s, name, len);
  uint32_t n = atomic_load_explicit(&s->count, memory_order_relaxed);
  char *copy = id || n == s->max_names ? NULL : strndup(name, len);
  if (copy) {
    id = (uint16_t)(n + 1);
    s->names[id] = copy;
    s->lens[id] = (uint16_t)len;
    s->reserved[id] = (uint8_t)reserved_as(name, len);
    atomic_store_explicit(&s->count, id, memory_order_release);
    uint32_t i = hash_name(name, len) & s->mask;
    while (atomic_load_explicit(&s->slots[i], memory_order_relaxed)) i = (i + 1) & s->mask;
    atomic_store_explicit(&s->slots[i], id, memory_order_release);
  }
  pthread_mutex_unlock(&s->lock);
  return id;
}

static measure *measure_of(const schema *s, uint16_t m) {
  return atomic_load_explicit(&s->measures[m], memory_order_acquire);
}

/* Measurement m, made one when it is not yet: NULL when out of memory.
 * Under the lock. */
static measure *measure_make(schema *s, uint16_t m) {
  measure *ms = measure_of(s, m);
  if (ms) return ms;
  ms = calloc(1, sizeof *ms);
  schema_column *cols = malloc(16 * sizeof *cols);
  _Atomic uint16_t *col_of = calloc((size_t)s->max_names + 1, sizeof *col_of);
  if (!ms || !cols || !col_of) {
    free(ms);
    free(cols);
    free(col_of);
    return NULL;
  }
  ms->cap = 16;
  atomic_init(&ms->cols, cols);
  atomic_init(&ms->ncols, 0);
  ms->col_of = col_of;
  atomic_store_explicit(&s->measures[m], ms, memory_order_release);
  return ms;
}

/* Appends a column to ms: its index, or -1 when the measurement has
 * SCHEMA_COLUMNS_MAX or memory is out. Under the lock. */
static int column_add(measure *ms, const schema_column *c) {
  uint32_t n = atomic_load_explicit(&ms->ncols, memory_order_relaxed);
  uint16_t have = atomic_load_explicit(&ms->col_of[c->name], memory_order_relaxed);
  if (have) return have - 1;
  if (n == SCHEMA_COLUMNS_MAX) return -1;
  schema_column *cols = atomic_load_explicit(&ms->cols, memory_order_relaxed);
  if (n == ms->cap) {
    uint32_t cap = ms->cap * 2 > SCHEMA_COLUMNS_MAX ? SCHEMA_COLUMNS_MAX : ms->cap * 2;
    schema_column *grown = malloc((size_t)cap * sizeof *grown);
    if (!grown) return -1;
    memcpy(grown, cols, (size_t)n * sizeof *cols);
    ms->retired[ms->nretired++] = cols; /* readers may hold it still */
    cols = grown;
    ms->cap = cap;
    atomic_store_explicit(&ms->cols, cols, memory_order_release);
  }
  cols[n] = *c;
  atomic_store_explicit(&ms->ncols, n + 1, memory_order_release);
  atomic_store_explicit(&ms->col_of[c->name], (uint16_t)(n + 1), memory_order_release);
  return (int)n;
}

/* Column c of ms, with the lock or after its index was read (acquire). */
static const schema_column *column_at(measure *ms, int c) {
  return &atomic_load_explicit(&ms->cols, memory_order_acquire)[c];
}

static const schema_column free_float = {.type = FIELD_FLOAT, .min = -INFINITY, .max = INFINITY};

uint32_t schema_columns(const schema *s, uint16_t m, const schema_column **cols) {
  measure *ms = m <= s->max_names ? measure_of(s, m) : NULL;
  if (!ms) return 0;
  uint32_t n = atomic_load_explicit(&ms->ncols, memory_order_acquire);
  *cols = atomic_load_explicit(&ms->cols, memory_order_acquire);
  return n;
}

int schema_column_of(const schema *s, uint16_t m, uint16_t name) {
  measure *ms = m <= s->max_names ? measure_of(s, m) : NULL;
  return ms ? (int)atomic_load_explicit(&ms->col_of[name], memory_order_acquire) - 1 : -1;
}

int schema_is_measurement(const schema *s, uint16_t id) { return id <= s->max_names && measure_of(s, id) != NULL; }

int schema_add_column(schema *s, const char *measurement, const char *field, int type) {
  uint16_t m = intern(s, measurement, strlen(measurement)), f = intern(s, field, strlen(field));
  if (!m || !f) return -ENOSPC;
  pthread_mutex_lock(&s->lock);
  measure *ms = measure_make(s, m);
  int c = ms ? (int)atomic_load(&ms->col_of[f]) - 1 : -1, r = 0;
  if (!ms) {
    r = -ENOMEM;
  } else if (c >= 0) {
    r = column_at(ms, c)->type == type ? 0 : -EEXIST;
  } else if (!ms->strict) {
    schema_column col = free_float;
    col.name = f;
    col.type = (uint8_t)type;
    r = column_add(ms, &col) < 0 ? -ENOSPC : 0;
  }
  pthread_mutex_unlock(&s->lock);
  return r;
}

schema *schema_new(uint32_t max_names) {
  if (max_names == 0) max_names = SCHEMA_NAMES_DEFAULT;
  if (max_names > SCHEMA_NAMES_LIMIT) max_names = SCHEMA_NAMES_LIMIT;
  schema *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  uint32_t slots = 16;
  while (slots < 2 * max_names) slots *= 2;
  s->max_names = max_names;
  s->mask = slots - 1;
  s->names = calloc((size_t)max_names + 1, sizeof *s->names);
  s->lens = calloc((size_t)max_names + 1, sizeof *s->lens);
  s->reserved = calloc((size_t)max_names + 1, sizeof *s->reserved);
  s->slots = calloc(slots, sizeof *s->slots);
  s->measures = calloc((size_t)max_names + 1, sizeof *s->measures);
  pthread_mutex_init(&s->lock, NULL);
  if (!s->names || !s->lens || !s->reserved || !s->slots || !s->measures) goto fail;
  /* The article's measurement and fields, in the order of their ids. */
  static const char *const first[] = {"telemetry", "temperature", "humidity", "battery"};
  for (size_t i = 0; i < sizeof first / sizeof *first; i++)
    if (intern(s, first[i], strlen(first[i])) != i + 1) goto fail;
  measure *t = measure_make(s, SCHEMA_TELEMETRY);
  if (!t) goto fail;
  schema_column c = free_float;
  c.name = SCHEMA_TEMPERATURE;
  column_add(t, &c);
  c.name = SCHEMA_HUMIDITY;
  column_add(t, &c);
  c.name = SCHEMA_BATTERY;
  c.type = FIELD_INT;
  column_add(t, &c);
  return s;
fail:
  schema_free(s);
  return NULL;
}

void schema_free(schema *s) {
  if (!s) return;
  for (uint32_t id = 1; s->measures && s->names && id <= s->max_names && s->names[id]; id++) {
    measure *ms = measure_of(s, id);
    if (ms) {
      for (uint32_t i = 0; i < ms->nretired; i++) free(ms->retired[i]);
      free(atomic_load(&ms->cols));
      free(ms->col_of);
      free(ms);
    }
    free(s->names[id]);
  }
  for (uint32_t i = 0; i < s->nunits; i++) free(s->units[i]);
  free(s->units);
  free(s->names);
  free(s->lens);
  free(s->reserved);
  free((void *)s->slots);
  free((void *)s->measures);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

/* ---- declared measurements ---- */

static int line_error(char *err, size_t errlen, const char *path, int line_no, const char *fmt, ...) {
  int n = snprintf(err, errlen, "%s:%d: ", path, line_no);
  va_list ap;
  va_start(ap, fmt);
  if (n >= 0 && (size_t)n < errlen) vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

static const char *const type_names[] = {[FIELD_FLOAT] = "float",
                                         [FIELD_INT] = "integer",
                                         [FIELD_BOOL] = "boolean",
                                         [FIELD_STRING] = "string",
                                         [FIELD_TAG] = "tag"};

static int type_named(const char *w) {
  for (int t = FIELD_FLOAT; t <= FIELD_TAG; t++)
    if (strcmp(w, type_names[t]) == 0) return t;
  return 0;
}

static int number_word(const char *w, double *v) {
  char *end;
  *v = strtod(w, &end);
  return *w && !*end && isfinite(*v);
}

/* One declaration line's words into a column of its measurement. */
static int declare(schema *s, char **w, int n, const char *path, int line_no, char *err, size_t errlen) {
  if (n < 3) return line_error(err, errlen, path, line_no, "want MEASUREMENT FIELD TYPE [MIN MAX] [unit=U] [optional]");
  schema_column c = {.required = 1, .min = -INFINITY, .max = INFINITY};
  if (!(c.type = (uint8_t)type_named(w[2])))
    return line_error(err, errlen, path, line_no, "unknown type '%s' (float, integer, boolean, string, tag)", w[2]);
  int i = 3;
  if (i + 1 < n && number_word(w[i], &c.min)) {
    if (!number_word(w[i + 1], &c.max) || c.min > c.max)
      return line_error(err, errlen, path, line_no, "a range is MIN MAX, two numbers, MIN <= MAX");
    if (c.type != FIELD_FLOAT && c.type != FIELD_INT)
      return line_error(err, errlen, path, line_no, "a range is for float and integer fields");
    i += 2;
  }
  for (; i < n; i++) {
    if (strcmp(w[i], "optional") == 0) {
      c.required = 0;
    } else if (strncmp(w[i], "unit=", 5) == 0 && w[i][5]) {
      char **units = realloc(s->units, (s->nunits + 1) * sizeof *units);
      if (!units) return -ENOMEM;
      s->units = units;
      if (!(units[s->nunits] = strdup(w[i] + 5))) return -ENOMEM;
      c.unit = units[s->nunits++];
    } else {
      return line_error(err, errlen, path, line_no, "unexpected '%s'", w[i]);
    }
  }
  if (strlen(w[0]) > SCHEMA_NAME_MAX || strlen(w[1]) > SCHEMA_NAME_MAX)
    return line_error(err, errlen, path, line_no, "a name is at most %d bytes", SCHEMA_NAME_MAX);
  uint16_t m = intern(s, w[0], strlen(w[0])), f = intern(s, w[1], strlen(w[1]));
  if (!m || !f) return line_error(err, errlen, path, line_no, "more names than the schema holds");
  pthread_mutex_lock(&s->lock);
  measure *ms = measure_make(s, m);
  int r = 0;
  if (!ms) {
    r = -ENOMEM;
  } else {
    int have = (int)atomic_load(&ms->col_of[f]) - 1;
    /* A first declaration replaces what a measurement was born with. */
    if (!ms->strict) {
      ms->strict = 1;
      for (uint32_t k = 0; k < atomic_load(&ms->ncols); k++) atomic_store(&ms->col_of[column_at(ms, (int)k)->name], 0);
      atomic_store(&ms->ncols, 0);
      have = -1;
    }
    c.name = f;
    if (have >= 0)
      r = line_error(err, errlen, path, line_no, "%s.%s declared twice", w[0], w[1]);
    else if (column_add(ms, &c) < 0)
      r = line_error(err, errlen, path, line_no, "more than %d fields in %s", SCHEMA_COLUMNS_MAX, w[0]);
  }
  pthread_mutex_unlock(&s->lock);
  return r;
}

int schema_declare_file(schema *s, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return errno == ENOENT ? -ENOENT : -EINVAL;
  }
  char buf[1024];
  int line_no = 0, r = 0, declared = 0;
  while (r == 0 && fgets(buf, sizeof buf, f)) {
    line_no++;
    char *hash = strchr(buf, '#');
    if (hash) *hash = 0;
    char *w[16], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(buf, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
      if (n == 16) {
        r = line_error(err, errlen, path, line_no, "too many words");
        break;
      }
      w[n++] = t;
    }
    if (r == 0 && n > 0) {
      r = declare(s, w, n, path, line_no, err, errlen);
      declared++;
    }
  }
  fclose(f);
  if (r == 0 && declared == 0) r = line_error(err, errlen, path, line_no, "declares no field");
  return r;
}

/* ---- readings ---- */

static int refuse(protocol_error *err, int reason, const char *field) {
  if (err) {
    err->reason = (protocol_reason)reason;
    err->offset = 0;
    err->field = field;
  }
  return -reason;
}

/* The id of a name as written: decoded, checked, interned. 0 with the
 * reason in *why. */
static uint16_t name_id(schema *s, const char *text, size_t len, int escaped, int json, int measurement, int *why) {
  char buf[SCHEMA_NAME_MAX * 6];
  if (escaped) {
    if (len > sizeof buf) {
      *why = PROTOCOL_BAD_NAME;
      return 0;
    }
    len = protocol_unescape(text, len, json, buf);
    text = buf;
  }
  if (len == 0 || len > SCHEMA_NAME_MAX) {
    *why = PROTOCOL_BAD_NAME;
    return 0;
  }
  uint16_t id = schema_find(s, text, len);
  if (!id) { /* a new name: checked once */
    for (size_t i = 0; i < len; i++)
      if ((unsigned char)text[i] < 0x20) {
        *why = PROTOCOL_BAD_NAME;
        return 0;
      }
    if (!(id = intern(s, text, len))) {
      *why = PROTOCOL_TOO_MANY_FIELDS;
      return 0;
    }
  }
  if (s->reserved[id] & (measurement ? RESERVED_MEASUREMENT : RESERVED_FIELD)) {
    *why = PROTOCOL_BAD_NAME;
    return 0;
  }
  return id;
}

/* Whether a JSON string as written holds \u0000. */
static int has_nul_escape(const char *p, size_t n) {
  for (size_t i = 0; i + 5 < n; i++) {
    if (p[i] != '\\') continue;
    if (p[i + 1] == 'u' && p[i + 2] == '0' && p[i + 3] == '0' && p[i + 4] == '0' && p[i + 5] == '0') return 1;
    i++; /* the escaped byte, which may be a backslash */
  }
  return 0;
}

/* The type a measurement's new field takes from its first value: a JSON
 * whole number is a float, since JSON does not say. */
static int new_type(const protocol_point *p, const protocol_field *f) {
  return f->type == FIELD_INT && p->json ? FIELD_FLOAT : f->type;
}

/* f's value as column c's type into v; 0 or PROTOCOL_TYPE_CONFLICT. */
static int convert(const schema_column *c, const protocol_field *f, field_value *v) {
  v->type = c->type;
  switch (c->type) {
  case FIELD_FLOAT:
    if (f->type == FIELD_FLOAT)
      v->v.f = f->v.f;
    else if (f->type == FIELD_INT)
      v->v.f = (double)f->v.i;
    else
      return PROTOCOL_TYPE_CONFLICT;
    return 0;
  case FIELD_INT:
    if (f->type == FIELD_INT) {
      v->v.i = f->v.i;
    } else if (f->type == FIELD_FLOAT && f->v.f == floor(f->v.f) && fabs(f->v.f) < 9.2e18) {
      v->v.i = (int64_t)f->v.f; /* a whole number, written 87 or 87.0 */
    } else {
      return PROTOCOL_TYPE_CONFLICT;
    }
    return 0;
  default:
    if (f->type != c->type) return PROTOCOL_TYPE_CONFLICT;
    v->v.i = f->v.i;
    return 0;
  }
}

int schema_pack(schema *s, const protocol_point *p, reading *out, protocol_error *err) {
  field_value many[PROTOCOL_FIELDS_MAX];
  /* A reading of few fields is written in place; strings move it to the heap below. */
  field_value *vals = p->nfields <= READING_INLINE_FIELDS ? out->u.inline_fields : many;
  int why = 0;
  uint16_t m = SCHEMA_TELEMETRY;
  if (p->measurement && !(p->measurement_len == 9 && memcmp(p->measurement, "telemetry", 9) == 0) &&
      !(m = name_id(s, p->measurement, p->measurement_len, p->measurement_escaped, p->json, 1, &why)))
    return refuse(err, why, NULL);
  measure *ms = measure_of(s, m);
  if (!ms) {
    pthread_mutex_lock(&s->lock);
    ms = measure_make(s, m);
    pthread_mutex_unlock(&s->lock);
    if (!ms) return refuse(err, PROTOCOL_NO_MEMORY, NULL);
  }
  size_t text = 0; /* the strings' bytes */
  int strings = 0;
  uint32_t required = 0;
  /* A device sends its fields in the same order reading after reading,
   * which is the order they became columns: field i is most often column
   * i, a compare instead of a lookup. */
  uint32_t known = atomic_load_explicit(&ms->ncols, memory_order_acquire);
  const schema_column *cols = atomic_load_explicit(&ms->cols, memory_order_acquire);
  int in_order = 1; /* every field so far was the column of its place: no two alike */
  for (uint32_t i = 0; i < p->nfields; i++) {
    const protocol_field *f = &p->fields[i];
    uint16_t id = i < known && !(f->escaped & PROTOCOL_ESC_NAME) ? cols[i].name : 0;
    int c = (int)i;
    if (!id || !same_name(s, id, f->name, f->name_len)) {
      in_order = 0;
      if (!(id = name_id(s, f->name, f->name_len, f->escaped & PROTOCOL_ESC_NAME, p->json, 0, &why)))
        return refuse(err, why, NULL);
      c = (int)atomic_load_explicit(&ms->col_of[id], memory_order_acquire) - 1;
    }
    const char *name = s->names[id];
    if (!in_order)
      for (uint32_t k = 0; k < i; k++)
        if (vals[k].name == id) return refuse(err, PROTOCOL_DUPLICATE_FIELD, name);
    if (c < 0) {
      if (ms->strict) return refuse(err, PROTOCOL_UNKNOWN_FIELD, name);
      schema_column col = free_float;
      col.name = id;
      col.type = (uint8_t)new_type(p, f);
      pthread_mutex_lock(&s->lock);
      c = column_add(ms, &col);
      pthread_mutex_unlock(&s->lock);
      if (c < 0) return refuse(err, PROTOCOL_TOO_MANY_FIELDS, name);
    }
    const schema_column *col = column_at(ms, c);
    field_value *v = &vals[i];
    v->name = id;
    v->len = 0;
    if (convert(col, f, v) != 0) return refuse(err, PROTOCOL_TYPE_CONFLICT, name);
    if (v->type == FIELD_FLOAT || v->type == FIELD_INT) {
      double x = field_number(v);
      if (!(x >= col->min && x <= col->max)) return refuse(err, PROTOCOL_OUT_OF_RANGE, name);
    } else if (v->type == FIELD_STRING || v->type == FIELD_TAG) {
      /* A NUL (a raw byte, or JSON's \u0000) is no character of SQL
       * text: PostgreSQL refuses the whole batch for it. */
      if (memchr(f->str, 0, f->str_len) ||
          ((f->escaped & PROTOCOL_ESC_STR) && p->json && has_nul_escape(f->str, f->str_len)))
        return refuse(err, PROTOCOL_MALFORMED, name);
      text += f->str_len;
      strings++;
    }
    required += col->required;
  }
  if (ms->strict) { /* every required column given? (a declared measurement gains no column) */
    uint32_t want = 0;
    for (uint32_t k = 0; k < known; k++) want += cols[k].required;
    if (required < want)
      for (uint32_t k = 0; k < known; k++) {
        int given = 0;
        for (uint32_t i = 0; i < p->nfields && !given; i++) given = vals[i].name == cols[k].name;
        if (cols[k].required && !given) return refuse(err, PROTOCOL_MISSING_FIELD, s->names[cols[k].name]);
      }
  }

  out->device = 0;
  out->measurement = m;
  out->nfields = (uint8_t)p->nfields;
  out->seq = p->seq;
  out->ts_ms = p->ts_ms;
  if (p->nfields <= READING_INLINE_FIELDS && !strings) { /* an empty string too points into the block */
    out->on_heap = 0;
    return 0;
  }
  field_value *heap = malloc(p->nfields * sizeof *heap + text);
  if (!heap) return refuse(err, PROTOCOL_NO_MEMORY, NULL);
  char *bytes = (char *)(heap + p->nfields);
  for (uint32_t i = 0; i < p->nfields; i++) {
    heap[i] = vals[i];
    if (vals[i].type != FIELD_STRING && vals[i].type != FIELD_TAG) continue;
    const protocol_field *f = &p->fields[i];
    size_t n = f->escaped & PROTOCOL_ESC_STR ? protocol_unescape(f->str, f->str_len, p->json, bytes)
                                             : (memcpy(bytes, f->str, f->str_len), f->str_len);
    heap[i].v.s = bytes;
    heap[i].len = (uint32_t)n;
    bytes += n;
  }
  out->on_heap = 1;
  out->u.heap = heap;
  return 0;
}
