/* storage_none.c - the `none` backend of storage.h: every step of a write
 * but the database (the marks are kept and resends dropped as with
 * SQLite), so the pipeline can be measured alone. */
#include "storage.h"

#include <errno.h>
#include <stdio.h>

static int none_open(storage *s, const storage_opts *opts, char *err, size_t errlen) {
  (void)s;
  (void)opts;
  (void)err;
  (void)errlen;
  return 0;
}

static int none_mark_load(storage *s, int conn, const char *device, int *found, uint64_t *seq, char *err,
                          size_t errlen) {
  (void)s;
  *found = 0;
  (void)conn;
  (void)device;
  (void)err;
  (void)errlen;
  *seq = 0;
  return 0;
}

static int none_write(storage *s, int conn, const batch *b, int fail, storage_write_result *res, char *err,
                      size_t errlen) {
  *res = (storage_write_result){0};
  for (uint32_t i = 0; i < b->n; i++) {
    int r = storage_mark_check(s, conn, &b->items[i], err, errlen);
    if (r < 0) {
      *res = (storage_write_result){0};
      return r;
    }
    if (r == 0) res->duplicates++;
    else res->inserted++;
  }
  if (fail) {
    *res = (storage_write_result){0};
    snprintf(err, errlen, "simulated write failure");
    return -EIO;
  }
  s->none_rows += res->inserted;
  return 0;
}

static int none_count_rows(storage *s, uint64_t *rows, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  *rows = s->none_rows;
  return 0;
}

static void none_close(storage *s) { (void)s; }

const storage_backend storage_none_backend = {
    .name = "none",
    .open = none_open,
    .mark_load = none_mark_load,
    .write = none_write,
    .count_rows = none_count_rows,
    .close = none_close,
};
