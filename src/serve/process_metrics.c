/* process_metrics.c - the build and the process as Prometheus sees any
 * process; see process_metrics.h. */
#include "process_metrics.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define PF(field) FIGURE_AT(process_figures, field)

/* The names, units and help texts of the Prometheus client libraries. */
static const figure_def process_rows[] = {
    {"process_cpu_seconds", .kind = FIGURE_COUNTER, .unit = FIGURE_MS,
     .help = "Total user and system CPU time spent in seconds.", PF(cpu_ms)},
    {"process_resident_memory_bytes", .kind = FIGURE_GAUGE, .unit = FIGURE_BYTES,
     .help = "Resident memory size in bytes.", PF(resident_bytes)},
    {"process_virtual_memory_bytes", .kind = FIGURE_GAUGE, .unit = FIGURE_BYTES,
     .help = "Virtual memory size in bytes.", PF(virtual_bytes)},
    {"process_open_fds", .kind = FIGURE_GAUGE, .help = "Number of open file descriptors.", PF(open_fds)},
    {"process_max_fds", .kind = FIGURE_GAUGE, .help = "Maximum number of open file descriptors.", PF(max_fds)},
    {"process_start_time_seconds", .kind = FIGURE_GAUGE, .unit = FIGURE_MS,
     .help = "Start time of the process since unix epoch in seconds.", PF(started_unix_ms)},
};
#undef PF

figure_source figures_process(const process_figures *p) {
  return (figure_source){process_rows, sizeof process_rows / sizeof process_rows[0], p, ""};
}

/* The fields of /proc/self/stat (proc(5)) after the command name, which
 * is in parentheses and may itself hold spaces and parentheses. */
static int read_stat(uint64_t *ticks, uint64_t *start_ticks, uint64_t *vsize, uint64_t *rss_pages) {
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return -errno;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *after = strrchr(buf, ')');
  if (!after) return -EIO;
  uint64_t utime, stime;
  /* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
   * utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss */
  int got = sscanf(after + 1,
                   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %" SCNu64 " %" SCNu64
                   " %*d %*d %*d %*d %*d %*d %" SCNu64 " %" SCNu64 " %" SCNu64,
                   &utime, &stime, start_ticks, vsize, rss_pages);
  if (got != 5) return -EIO;
  *ticks = utime + stime;
  return 0;
}

/* The boot time, seconds since the epoch: what /proc's start ticks count from. */
static int read_boot_time(int64_t *btime) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -errno;
  char line[256];
  int r = -EIO;
  while (fgets(line, sizeof line, f)) /* a longer line is read in pieces; none starts with btime */
    if (sscanf(line, "btime %" SCNd64, btime) == 1) {
      r = 0;
      break;
    }
  fclose(f);
  return r;
}

static int count_fds(uint64_t *out) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -errno;
  uint64_t n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  *out = n;
  return 0;
}

int process_figures_get(process_figures *out) {
  uint64_t ticks, start_ticks, vsize, rss_pages;
  int64_t btime;
  int r = read_stat(&ticks, &start_ticks, &vsize, &rss_pages);
  if (r == 0) r = read_boot_time(&btime);
  if (r == 0) r = count_fds(&out->open_fds);
  struct rlimit rl;
  if (r == 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0) r = -errno;
  if (r != 0) return r;
  uint64_t hz = (uint64_t)sysconf(_SC_CLK_TCK);
  out->cpu_ms = ticks * 1000 / hz;
  out->started_unix_ms = btime * 1000 + (int64_t)(start_ticks * 1000 / hz);
  out->virtual_bytes = vsize;
  out->resident_bytes = rss_pages * (uint64_t)sysconf(_SC_PAGESIZE);
  out->max_fds = rl.rlim_cur;
  return 0;
}

/* A label value as the text format wants it: \, " and newline escaped. */
static void label_value(http_buf *b, const char *s) {
  for (; *s; s++) {
    if (*s == '\\' || *s == '"')
      http_buf_printf(b, "\\%c", *s);
    else if (*s == '\n')
      http_buf_puts(b, "\\n");
    else
      http_buf_append(b, s, 1);
  }
}

void metrics_build_info(http_buf *b, const build_info *info) {
  http_buf_puts(b, "# HELP telegate_build_info The build that runs: its version, git revision and libtg version.\n"
                   "# TYPE telegate_build_info gauge\n"
                   "telegate_build_info{version=\"");
  label_value(b, info->version);
  http_buf_puts(b, "\",revision=\"");
  label_value(b, info->revision);
  http_buf_puts(b, "\",libtg=\"");
  label_value(b, info->libtg);
  http_buf_puts(b, "\"} 1\n");
}
