/* storage_faults.c - the demo's fault injection, as a decorator around a
 * real backend: each transaction first waits the simulated write time on
 * the writer's task (the `pause` of storage_backend.h: under the virtual
 * clock that is virtual time, the database's latency the real call does
 * not take), then fails a seeded share of the writes before they reach
 * the backend, which is what a rolled-back transaction leaves: nothing.
 * serve never wraps its storage in it.
 *
 * Which writes fail is drawn from a stream per (batch, attempt), so a
 * seeded run replays, and a retry of the same batch draws again (the
 * connection is in the stream too, above bit 56: 0 for the first). A
 * batch's attempts on one connection follow each other (writer.h), so
 * the attempt is counted per connection. */
#include "storage_backend.h"

#include "rng.h"
#include "tg/tg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct attempts {
  uint64_t batch_id;
  uint64_t attempt; /* of batch_id on this connection */
} attempts;

typedef struct faults_impl {
  const storage_backend *inner;
  void *inner_impl;
  storage_faults_opts opts;
  attempts conns[];
} faults_impl;

static int faults_open(const storage_backend_opts *opts, void **impl, char *err, size_t errlen) {
  faults_impl *im = calloc(1, sizeof *im + (size_t)opts->connections * sizeof im->conns[0]);
  if (!im) return -ENOMEM;
  im->inner = opts->inner;
  im->opts = *opts->faults;
  int r = im->inner->open(opts, &im->inner_impl, err, errlen);
  if (r != 0) {
    free(im);
    return r;
  }
  *impl = im;
  return 0;
}

static int faults_mark_load(void *impl, int conn, const char *device, int *found, uint64_t *seq, char *err,
                            size_t errlen) {
  faults_impl *im = impl;
  return im->inner->mark_load(im->inner_impl, conn, device, found, seq, err, errlen);
}

static int faults_pause(void *impl, int conn) {
  faults_impl *im = impl;
  int r = im->inner->pause ? im->inner->pause(im->inner_impl, conn) : 0;
  if (r == 0 && im->opts.write_ns > 0) r = tg_sleep(im->opts.write_ns);
  return r;
}

static int faults_write(void *impl, int conn, const storage_rows *w, char *err, size_t errlen) {
  faults_impl *im = impl;
  attempts *a = &im->conns[conn];
  if (a->batch_id != w->batch_id || a->attempt == 0) *a = (attempts){w->batch_id, 0};
  a->attempt++;
  rng fr = rng_stream(im->opts.seed, (w->batch_id << 8) ^ a->attempt ^ ((uint64_t)conn << 56));
  if (rng_unit(&fr) < im->opts.fail_rate) {
    snprintf(err, errlen, "simulated write failure, rolled back");
    return -EIO;
  }
  return im->inner->write(im->inner_impl, conn, w, err, errlen);
}

static int faults_count_rows(void *impl, uint64_t *rows, char *err, size_t errlen) {
  faults_impl *im = impl;
  return im->inner->count_rows(im->inner_impl, rows, err, errlen);
}

static void faults_close(void *impl) {
  faults_impl *im = impl;
  im->inner->close(im->inner_impl);
  free(im);
}

const storage_backend storage_faults_backend = {
    .name = "faults",
    .open = faults_open,
    .mark_load = faults_mark_load,
    .write = faults_write,
    .pause = faults_pause,
    .count_rows = faults_count_rows,
    .close = faults_close,
};
