/* storage_none.c - the `none` backend: every step of a write but the
 * database (storage.c still keeps the marks and drops resends), so the
 * pipeline can be measured alone. It counts the rows it was given; no
 * mark survives the process. */
#include "storage_backend.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct none_impl {
  _Atomic uint64_t rows; /* connections may write at once */
} none_impl;

static int none_open(const storage_backend_opts *opts, void **impl, char *err, size_t errlen) {
  (void)opts;
  (void)err;
  (void)errlen;
  none_impl *im = calloc(1, sizeof *im);
  if (!im) return -ENOMEM;
  *impl = im;
  return 0;
}

static int none_mark_load(void *impl, int conn, const char *device, int *found, uint64_t *seq, char *err,
                          size_t errlen) {
  (void)impl;
  (void)conn;
  (void)device;
  (void)err;
  (void)errlen;
  *found = 0;
  *seq = 0;
  return 0;
}

static int none_write(void *impl, int conn, const storage_rows *w, char *err, size_t errlen) {
  (void)conn;
  (void)err;
  (void)errlen;
  none_impl *im = impl;
  atomic_fetch_add_explicit(&im->rows, w->nrows, memory_order_relaxed);
  return 0;
}

static int none_count_rows(void *impl, uint64_t *rows, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  none_impl *im = impl;
  *rows = atomic_load_explicit(&im->rows, memory_order_relaxed);
  return 0;
}

static void none_close(void *impl) { free(impl); }

const storage_backend storage_none_backend = {
    .name = "none",
    .open = none_open,
    .mark_load = none_mark_load,
    .write = none_write,
    .count_rows = none_count_rows,
    .close = none_close,
};
