/* histogram.c - latency histograms; see histogram.h. */
#include "histogram.h"

const double histogram_bounds_s[HISTOGRAM_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                      0.5,   1,      2.5,   5,    10,    20,   30};

void histogram_observe(histogram *h, int64_t ns, uint64_t weight) {
  if (ns < 0) ns = 0;
  int i = 0;
  while (i < HISTOGRAM_BUCKETS && (double)ns > histogram_bounds_s[i] * 1e9) i++;
  atomic_fetch_add_explicit(&h->counts[i], weight, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)ns * weight, memory_order_relaxed);
}

void histogram_get(const histogram *h, histogram_figures *out) {
  for (int i = 0; i <= HISTOGRAM_BUCKETS; i++)
    out->counts[i] = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
  out->sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}

void histogram_prometheus(http_buf *b, const char *name, const char *help, const histogram_figures *f) {
  http_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  uint64_t below = 0;
  for (int i = 0; i < HISTOGRAM_BUCKETS; i++) {
    below += f->counts[i];
    http_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, histogram_bounds_s[i], (unsigned long long)below);
  }
  /* The count is the buckets' total, so that +Inf is at or above every
   * bucket however a scrape raced the observations. */
  below += f->counts[HISTOGRAM_BUCKETS];
  http_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)below);
  http_buf_printf(b, "%s_sum %.9f\n%s_count %llu\n", name, (double)f->sum_ns / 1e9, name, (unsigned long long)below);
}
