/* simulator.h - `telegate devices`: simulated devices over real TCP, the
 * reference client of the gateway's acknowledgements.
 *
 * Runs `count` devices in one process on libtg, one task and one TCP
 * connection each. A device sends a reading every 1/rate seconds (JSON or
 * line protocol, as protocol_format_reading writes them), seq 1, 2, 3 ...
 * with no gap, for `duration` seconds from its first connection; a late
 * device catches up in bursts of at most 64 readings per write, and one
 * more than a second behind skips what it missed (the seqs stay
 * gapless). It answers {"type":"health","id":N} at once with
 * {"type":"health","id":N,"uptime_s":...,"battery":...} and counts the
 * gateway's error lines.
 *
 * Hello. The first line on every connection says what the device wants:
 * {"type":"hello","acks":A,"health":H} (protocol_format_hello), A with
 * acks on, H when it answers health requests; nothing when it asks for
 * neither. A gateway answers with {"type":"hello","acks":B,...}; one that
 * does not know hello refuses line 1 as unknown_type. Either refusal of
 * acks turns the device into a write-only one for the rest of its run
 * (below): nothing it sends is then held back or resent.
 *
 * With acks (the default), a reading stays in the device's window from
 * the moment it is generated until an ack covers it: {"type":"ack",
 * "device":ID,"seq":N} makes every seq <= N durable. The window holds at
 * most `max_unacked` readings; a device whose window is full generates
 * nothing until acks make room - it is blocked, as a real device with
 * bounded memory is, its schedule falls behind, and the time is counted.
 * Generation is scheduled by time alone: readings due while the device is
 * disconnected go into the window too. When the connection breaks (a
 * failed write, the gateway closing it, a refused connect), the device
 * reconnects after a backoff of 20 ms doubling to 1 s, jittered from its
 * own seeded stream, says hello again and writes every unacked reading
 * again in seq order before any new one; the readings are kept, not
 * regenerated, so a resend is byte for byte the first write. The gateway
 * stores a seq once and acks a duplicate like a fresh one. The first
 * connect is tried once: a device that never reached its gateway ends as
 * connect_failed at once.
 *
 * The end. When `duration` has passed or sim_stop was called, a device
 * stops generating and waits, up to `ack_wait_s`, for the acks of
 * everything it generated, reconnecting and resending as needed; then it
 * reads what the gateway sent and hangs up (a socket closed with unread
 * bytes would be reset, and readings still on their way dropped). A
 * write-only device hangs up at once, as it did before acks existed, and
 * ends its run when its connection breaks.
 *
 * Latency: from the first write of a reading to the ack that covered it,
 * in a histogram per worker (buckets 1/32 of a power of two wide, so a
 * percentile is good to about 3 %; devices are pinned, so a worker's
 * histogram is only ever touched by its own thread).
 *
 * Threads: devices run on the runtime's workers; sim_stop may be called
 * from any thread; the report is complete once sim_wait returned. */
#ifndef TELEGATE_SIMULATOR_H
#define TELEGATE_SIMULATOR_H

#include "protocol.h"

#include <stdint.h>
#include <stdio.h>

typedef enum sim_health { SIM_HEALTH_ANSWER = 0, SIM_HEALTH_IGNORE = 1 } sim_health;
typedef enum sim_acks { SIM_ACKS_ON = 0, SIM_ACKS_OFF = 1 } sim_acks;

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
  sim_acks acks;           /* ask for acks and resend what is not acked (default) */
  int max_unacked;         /* readings a device holds unacked before it blocks (10000) */
  double ack_wait_s;       /* at the end, how long to wait for the last acks (10) */
  int quiet;               /* no summary line, only the report */
  FILE *out;               /* NULL: stdout */
  /* TLS (tls.h): the gateway is verified against tls_ca (NULL: the
   * system's CAs) by the host name or address in `host` */
  int tls;              /* connect over TLS */
  const char *tls_ca;   /* PEM CA file */
  int tls_insecure;     /* do not verify the gateway (self-signed testing only) */
  const char *tls_cert; /* a client certificate to present, with tls_key (NULL: none) */
  const char *tls_key;
} sim_config;

void sim_config_defaults(sim_config *c);

typedef enum sim_end {
  SIM_END_DURATION = 0, /* ran its time and hung up */
  SIM_END_CLOSED,       /* write-only: the gateway closed the connection */
  SIM_END_CONNECT,      /* could not connect the first time */
  SIM_END_ERROR,        /* write-only: a write failed */
  SIM_END_STOPPED,      /* sim_stop */
} sim_end;

typedef struct sim_device_report {
  char id[PROTOCOL_DEVICE_ID_MAX + 1];
  uint64_t generated;       /* seqs 1..generated were made */
  uint64_t sent;            /* = generated; the name tests and scripts know */
  int acks;                 /* 1: it asked for acks and the gateway did not refuse them */
  uint64_t acked;           /* with acks: seqs 1..acked are durable */
  uint64_t resent;          /* writes of a reading after its first */
  uint64_t reconnects;      /* connections after the first */
  uint64_t blocked_ms;      /* time a due reading waited for room in the window */
  uint64_t health_answered; /* health requests answered */
  uint64_t errors_received; /* {"type":"error"} lines, hello refusals excepted */
  sim_end end;
} sim_device_report;

typedef struct sim_report {
  int count;
  sim_device_report *devices; /* count entries, index i is id prefix + (i + 1) */
  uint64_t generated, sent, acked, unacked, resent, reconnects, blocked_ms, health_answered, errors_received;
  uint64_t connect_failures, write_failures;
  int acking_devices;                    /* devices with acks (sim_device_report.acks) */
  double latency_p50_ms, latency_p99_ms; /* first write to ack, over every acked reading */
  double elapsed_s;
} sim_report;

typedef struct sim sim;

/* Starts the devices from a task of a running runtime; they connect and
 * run on their own. Sets SIGPIPE to be ignored (a write to a connection
 * the gateway closed fails with EPIPE instead of ending the process).
 * Returns 0, TG_EINVAL (also TLS files that do not load: the reason goes
 * to stderr) or TG_ENOMEM. */
int sim_start(const sim_config *cfg, sim **out);

/* Ends the devices' runs now, as if their duration had passed: they stop
 * generating, wait up to ack_wait_s for their last acks and hang up. Any
 * thread. */
void sim_stop(sim *s);

/* Waits for every device to end, fills *report (free it with
 * sim_report_free) and frees s. Returns 0 when every device connected,
 * every acking device had all it generated acked, and no write of a
 * write-only device failed (one the gateway closed ended its run, as
 * before acks, without failing it); 1 otherwise, and then, for unacked
 * readings, says how many in one line on stderr. */
int sim_wait(sim *s, sim_report *report);

/* Starts a runtime, runs the devices, writes the report; for main.
 * SIGINT and SIGTERM call sim_stop (a second one ends the process). */
int sim_run(const sim_config *cfg, sim_report *report);

void sim_report_free(sim_report *r);
/* The report as JSON: totals and, per device, id, generated (and sent,
 * the same), seqs [[1, generated]], acks, acked, unacked, resent,
 * reconnects, blocked_ms, health answered, errors received and how it
 * ended; the latency percentiles in the totals. 0 or -errno. */
int sim_report_write_json(const sim_report *r, const char *path);
const char *sim_end_name(sim_end e);

#endif
