/* histogram.h - a latency histogram for /metrics: fixed buckets in
 * seconds, counts that any thread adds to without a lock, read whole by a
 * scraper.
 *
 * Prometheus histograms are cumulative (bucket `le` counts every
 * observation up to its bound); the counts kept here are per bucket and
 * made cumulative when written, so that an observation is one atomic add
 * to one bucket plus one to the sum, and the count is the buckets' total. A scrape reads the buckets one by
 * one while observations go on, so one exposition may be off by the
 * observations made during it - the usual contract of a metrics scrape,
 * and each counter still only grows. The bounds (1 ms to 30 s) cover both
 * a commit (milliseconds) and a reading's wait for one (up to the batch
 * age and any storage outage). */
#ifndef TELEGATE_HISTOGRAM_H
#define TELEGATE_HISTOGRAM_H

#include "http_buf.h"

#include <stdatomic.h>
#include <stdint.h>

#define HISTOGRAM_BUCKETS 15

extern const double histogram_bounds_s[HISTOGRAM_BUCKETS];

typedef struct histogram {
  _Atomic uint64_t counts[HISTOGRAM_BUCKETS + 1]; /* the last: above every bound (+Inf) */
  _Atomic uint64_t sum_ns;
} histogram;

/* What a scrape reads. */
typedef struct histogram_figures {
  uint64_t counts[HISTOGRAM_BUCKETS + 1];
  uint64_t sum_ns;
} histogram_figures;

/* Counts `weight` observations of ns nanoseconds (a batch's readings all
 * waited for one commit). Any thread. A zeroed histogram is empty. */
void histogram_observe(histogram *h, int64_t ns, uint64_t weight);

void histogram_get(const histogram *h, histogram_figures *out);

/* Appends the family `name` (a _seconds histogram) in the text format:
 * # HELP, # TYPE, the cumulative _bucket lines, _sum and _count. */
void histogram_prometheus(http_buf *b, const char *name, const char *help, const histogram_figures *f);

#endif
