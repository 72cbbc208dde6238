/* metrics.c - Prometheus text exposition of the gateway's figures; see
 * metrics.h. The families are declared in figures.c. */
#include "metrics.h"

#include "figures.h"
#include "process_metrics.h"

const char *metrics_health_result_name(api_health_result r) {
  static const char *names[API_HEALTH_RESULTS] = {"ok", "timeout", "unknown", "disconnected", "not_answering", "error"};
  return r >= 0 && r < API_HEALTH_RESULTS ? names[r] : "error";
}

void metrics_write(http_buf *b, const serve_figures *f, const http_server_stats *h, const stream_figures *s,
                   const uint64_t *health_requests) {
  build_info info = build_info_get();
  metrics_build_info(b, &info);
  figure_source src[4];
  int n = 0;
  if (f) src[n++] = figures_serve(f);
  if (h) src[n++] = figures_http(h);
  if (s) src[n++] = figures_streams(s);
  if (s && health_requests) src[n++] = figures_health_requests(health_requests);
  figures_prometheus(b, src, n);
  if (f) {
    histogram_prometheus(b, "telegate_batch_commit_seconds", "Time of one storage transaction, retries included.",
                         &f->commit_time);
    histogram_prometheus(b, "telegate_reading_commit_latency_seconds",
                         "Per reading, from its batch's first reading reaching the aggregator to the batch's commit "
                         "(an upper bound of each reading's wait).",
                         &f->reading_commit);
  }
  process_figures proc;
  if (process_figures_get(&proc) == 0) {
    figure_source p = figures_process(&proc);
    figures_prometheus(b, &p, 1);
  }
}
