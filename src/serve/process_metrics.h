/* process_metrics.h - what /metrics says about the process rather than
 * the pipeline: which build it is (telegate_build_info) and what the
 * kernel counts for it, under the names every Prometheus client library
 * uses (process_cpu_seconds_total, process_resident_memory_bytes, ...), so
 * the usual dashboards and alerts work on telegate unchanged.
 *
 * The process figures are read from /proc/self (and the boot time from
 * /proc/stat) whenever they are asked for: a few small reads, from
 * whatever task or thread renders /metrics. Where /proc is missing they
 * are left out, as client libraries do. */
#ifndef TELEGATE_PROCESS_METRICS_H
#define TELEGATE_PROCESS_METRICS_H

#include "build_info.h"
#include "figures.h"
#include "http_buf.h"

#include <stdint.h>

typedef struct process_figures {
  uint64_t cpu_ms;         /* user and system CPU time, in clock ticks' resolution */
  uint64_t resident_bytes; /* resident set */
  uint64_t virtual_bytes;  /* address space */
  uint64_t open_fds;       /* entries of /proc/self/fd, the one reading it included */
  uint64_t max_fds;        /* the soft RLIMIT_NOFILE */
  int64_t started_unix_ms; /* when the process started */
} process_figures;

/* Reads the figures of the calling process. Returns 0, -errno of opening
 * or reading a /proc file, or -EIO when one does not read as expected. */
int process_figures_get(process_figures *out);

/* Their table, with no prefix: the standard process_* names. */
figure_source figures_process(const process_figures *p);

/* Appends the telegate_build_info family: one sample of value 1 labelled
 * with the version, the git revision and libtg's version. */
void metrics_build_info(http_buf *b, const build_info *info);

#endif
