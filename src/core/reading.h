/* reading.h - what a device measures (Reading) and what storage commits in
 * one transaction (Batch).
 *
 * A reading is a device, a seq, a timestamp, the measurement it belongs to
 * and any number of named, typed fields (schema.h names them: a field
 * holds the small id of its name, not the name). Readings of up to
 * READING_INLINE_FIELDS numbers - the article's three, most sensors' few -
 * carry their fields inline and are plain values copied through the
 * telemetry channel. A reading with more fields, or with strings (string
 * fields, tags), keeps its fields and their bytes in one heap block it
 * owns: copying the reading moves that ownership, and whoever holds the
 * last copy frees it with reading_free (a batch frees its readings').
 *
 * A batch owns its array of readings; it is moved by value through the
 * storage channel, so exactly one stage owns it at a time, and the stage
 * that committed it (or found it empty) frees it. */
#ifndef TELEGATE_READING_H
#define TELEGATE_READING_H

#include <stdint.h>
#include <stdlib.h>

/* What a field holds. Storage gives each type its own column type. */
typedef enum field_type {
  FIELD_FLOAT = 1, /* v.f: a finite double */
  FIELD_INT,       /* v.i: a signed 64-bit integer */
  FIELD_BOOL,      /* v.i: 0 or 1 */
  FIELD_STRING,    /* v.s, len: UTF-8 bytes, not NUL-terminated */
  FIELD_TAG,       /* v.s, len: a line-protocol tag (or a JSON "tags" member): a string that says what was measured */
} field_type;

typedef struct field_value {
  uint16_t name; /* schema.h's id of the field's name */
  uint8_t type;  /* field_type */
  uint32_t len;  /* FIELD_STRING, FIELD_TAG: bytes at v.s */
  union {
    double f;
    int64_t i;
    const char *s; /* into the reading's heap block */
  } v;
} field_value;

#define READING_INLINE_FIELDS 3
/* A reading has at most this many fields. */
#define READING_FIELDS_MAX    255

typedef struct reading {
  uint32_t device;      /* 1-based device id */
  uint16_t measurement; /* schema.h's id of its measurement's name */
  uint8_t nfields;
  uint8_t on_heap; /* the fields are in u.heap, which the reading owns */
  uint64_t seq;    /* per device, increasing; READING_SEQ_NONE until the gateway numbers it */
  int64_t ts_ms;   /* when it was measured, Unix milliseconds */
  union {
    field_value inline_fields[READING_INLINE_FIELDS];
    field_value *heap; /* nfields values, then the strings' bytes: one malloc */
  } u;
} reading;

/* A reading the device sent without a seq: the gateway numbers it after
 * the device's highest seq before it goes on (registry_seq_next), so it
 * never passes this value down the pipeline. Devices' seqs stop at
 * PROTOCOL_SEQ_MAX, far below. */
#define READING_SEQ_NONE UINT64_MAX

static inline const field_value *reading_fields(const reading *r) {
  return r->on_heap ? r->u.heap : r->u.inline_fields;
}

/* The field named `name`, or NULL. */
static inline const field_value *reading_field(const reading *r, uint16_t name) {
  const field_value *f = reading_fields(r);
  for (uint32_t i = 0; i < r->nfields; i++)
    if (f[i].name == name) return &f[i];
  return NULL;
}

/* A numeric field's value as a double (a bool as 0 or 1); 0 for strings. */
static inline double field_number(const field_value *f) {
  return f->type == FIELD_FLOAT ? f->v.f : f->type == FIELD_INT || f->type == FIELD_BOOL ? (double)f->v.i : 0;
}

/* For readings made in the process (the demo's devices, tests): appends
 * a float or an integer field of name (a schema id) to r, which must have
 * fewer than READING_INLINE_FIELDS fields and none on the heap. */
static inline void reading_add_float(reading *r, uint16_t name, double v) {
  field_value *f = &r->u.inline_fields[r->nfields++];
  f->name = name;
  f->type = FIELD_FLOAT;
  f->len = 0;
  f->v.f = v;
}

static inline void reading_add_int(reading *r, uint16_t name, int64_t v) {
  field_value *f = &r->u.inline_fields[r->nfields++];
  f->name = name;
  f->type = FIELD_INT;
  f->len = 0;
  f->v.i = v;
}

/* Frees what r owns (its heap block); r is then empty. */
static inline void reading_free(reading *r) {
  if (r->on_heap) free(r->u.heap);
  r->on_heap = 0;
  r->nfields = 0;
}

typedef struct batch {
  uint64_t id;       /* 1, 2, 3 ... in the order the aggregator cut them */
  int64_t opened_ns; /* tg_now() when its first reading reached the aggregator */
  uint32_t n, cap;
  reading *items; /* owned, with what each reading owns; NULL when empty */
} batch;

/* Appends r, taking what it owns; returns 0, or -1 when out of memory (r
 * is then still the caller's). */
static inline int batch_push(batch *b, const reading *r) {
  if (b->n == b->cap) {
    uint32_t cap = b->cap ? b->cap * 2 : 16;
    reading *items = realloc(b->items, (size_t)cap * sizeof *items);
    if (!items) return -1;
    b->items = items;
    b->cap = cap;
  }
  b->items[b->n++] = *r;
  return 0;
}

static inline void batch_free(batch *b) {
  for (uint32_t i = 0; i < b->n; i++) reading_free(&b->items[i]);
  free(b->items);
  b->items = NULL;
  b->n = b->cap = 0;
}

#endif
