/* simulator.h - `telegate devices`: simulated devices over real TCP.
 *
 * Runs `count` devices in one process on libtg, one task and one TCP
 * connection each. A device sends a reading every 1/rate seconds (JSON or
 * line protocol, as protocol_format_reading writes them), seq 1, 2, 3 ...
 * with no gap, for `duration` seconds from its connection; a late device catches up in bursts
 * of at most 64 readings per write. It answers {"type":"health","id":N}
 * at once with {"type":"health","id":N,"uptime_s":...,"battery":...} and
 * counts the gateway's error lines. At the end it reads what the gateway
 * sent and hangs up: a socket closed with unread bytes would be reset,
 * and the readings still on their way dropped.
 *
 * A reading counts as sent once tg_tcp_write handed it to the kernel. The
 * report lists per device the seqs sent (one range, first..last), so a
 * test can compare the database with it exactly. */
#ifndef TELEGATE_SIMULATOR_H
#define TELEGATE_SIMULATOR_H

#include "protocol.h"

#include <stdint.h>
#include <stdio.h>

typedef enum sim_health { SIM_HEALTH_ANSWER = 0, SIM_HEALTH_IGNORE = 1 } sim_health;

typedef struct sim_config {
  const char *host;        /* "127.0.0.1" */
  int port;                /* 7878 */
  int count;               /* devices (10) */
  double rate_hz;          /* readings per second per device (1) */
  double duration_s;       /* (10) */
  uint64_t seed;           /* (42) */
  protocol_format format;  /* JSON (default) or line protocol */
  const char *id_prefix;   /* ids are prefix + 1, 2, ... ("dev-") */
  const char *report_json; /* NULL: none */
  int workers;             /* libtg workers (1) */
  sim_health health;       /* answer health checks (default) or not */
  int quiet;               /* no per-run lines, only the report */
  FILE *out;               /* NULL: stdout */
} sim_config;

void sim_config_defaults(sim_config *c);

typedef enum sim_end {
  SIM_END_DURATION = 0, /* ran its time and hung up */
  SIM_END_CLOSED,       /* the gateway closed the connection */
  SIM_END_CONNECT,      /* could not connect */
  SIM_END_ERROR,        /* a write failed */
  SIM_END_STOPPED,      /* sim_stop */
} sim_end;

typedef struct sim_device_report {
  char id[PROTOCOL_DEVICE_ID_MAX + 1];
  uint64_t sent; /* seqs 1..sent */
  uint64_t health_answered;
  uint64_t errors_received; /* {"type":"error"} lines */
  sim_end end;
} sim_device_report;

typedef struct sim_report {
  int count;
  sim_device_report *devices; /* count entries, index i is id prefix + (i + 1) */
  uint64_t sent, health_answered, errors_received;
  uint64_t connect_failures, write_failures;
  double elapsed_s;
} sim_report;

typedef struct sim sim;

/* Starts the devices from a task of a running runtime; they connect and
 * run on their own. Sets SIGPIPE to be ignored (a write to a connection
 * the gateway closed fails with EPIPE instead of ending the process).
 * Returns 0, TG_EINVAL or TG_ENOMEM. */
int sim_start(const sim_config *cfg, sim **out);

/* Asks every device to stop sending and hang up now; any thread. */
void sim_stop(sim *s);

/* Waits for every device to end, fills *report (free it with
 * sim_report_free) and frees s. Returns 0 when every device connected and
 * ended without a failed write, 1 otherwise. */
int sim_wait(sim *s, sim_report *report);

/* Starts a runtime, runs the devices, writes the report; for main. */
int sim_run(const sim_config *cfg, sim_report *report);

void sim_report_free(sim_report *r);
/* The report as JSON: totals and, per device, id, sent, seqs [[1, sent]],
 * health answered, errors received and how it ended. 0 or -errno. */
int sim_report_write_json(const sim_report *r, const char *path);
const char *sim_end_name(sim_end e);

#endif
