/* reading.h - what a device measures (Reading) and what storage commits in
 * one transaction (Batch).
 *
 * A reading is a plain value copied through the telemetry channel. A batch
 * owns its array of readings; it is moved by value through the storage
 * channel, so exactly one stage owns it at a time, and the stage that
 * committed it (or found it empty) frees it. */
#ifndef TELEGATE_READING_H
#define TELEGATE_READING_H

#include <stdint.h>
#include <stdlib.h>

typedef struct reading {
  uint32_t device;    /* 1-based device id */
  uint32_t battery;   /* percent */
  uint64_t seq;       /* per device, increasing; READING_SEQ_NONE until the gateway numbers it */
  int64_t ts_ms;      /* when it was measured, Unix milliseconds */
  double temperature; /* degrees Celsius, 18..33 */
  double humidity;    /* percent, 30..70 */
} reading;

/* A reading the device sent without a seq: the gateway numbers it after
 * the device's highest seq before it goes on (registry_seq_next), so it
 * never passes this value down the pipeline. Devices' seqs stop at
 * PROTOCOL_SEQ_MAX, far below. */
#define READING_SEQ_NONE UINT64_MAX

typedef struct batch {
  uint64_t id;       /* 1, 2, 3 ... in the order the aggregator cut them */
  int64_t opened_ns; /* tg_now() when its first reading reached the aggregator */
  uint32_t n, cap;
  reading *items; /* owned; NULL when empty */
} batch;

/* Appends a copy of r; returns 0 or -1 when out of memory. */
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
  free(b->items);
  b->items = NULL;
  b->n = b->cap = 0;
}

#endif
