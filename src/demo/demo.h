/* demo.h - `telegate demo`: the reference scenario, wired, run, summarised.
 *
 * demo_run starts a one-worker runtime (real or virtual clock) and runs
 * demo_main in it. demo_main builds the pipeline of DESIGN.md - devices ->
 * mpsc -> aggregator -> watch + broadcast -> clients, aggregator -> mpsc of
 * batches -> storage -> Semaphore pool -> SQLite, a health checker talking
 * oneshot to the devices - runs it for the configured duration or until a
 * shutdown request (SIGINT/SIGTERM), shuts it down in order and fills a
 * demo_summary. Every pipeline task is spawned into one JoinSet and joined
 * through it; the storage task joins its batch writers through its own.
 *
 * Shutdown: one latched cancel token. Devices stop and drop their senders;
 * the aggregator drains until its channel closes, flushes the last batch
 * and closes storage, watch and broadcast; storage commits everything and
 * joins its writers; clients read until the broadcast closes. Tasks that
 * have not ended 5 s after the signal are aborted and counted as such.
 *
 * Lossless means readings_sent == readings_aggregated == readings_stored ==
 * db_rows, the last counted with SELECT COUNT(*) after every task ended. */
#ifndef TELEGATE_DEMO_H
#define TELEGATE_DEMO_H

#include "log.h"
#include "tg/runtime.h"

#include <stdint.h>
#include <stdio.h>

#define DEMO_MAX_DEVICES 64
#define DEMO_MAX_CLIENTS 64
#define DEMO_MAX_POOL    16

/* blog: the article's published numbers, where every primitive has
 * headroom; pressure: tight numbers and costs that make each kind of
 * waiting happen; tour (the default): pressure plus one of each fault, so
 * that one 10 s run shows every primitive at work. */
typedef enum demo_preset { PRESET_BLOG = 0, PRESET_PRESSURE = 1, PRESET_TOUR = 2 } demo_preset;

typedef struct demo_config {
  double duration_s;
  tg_clock_mode clock;
  uint64_t seed;
  demo_preset preset;
  const char *db_path;
  const char *summary_json; /* NULL: none */
  log_format log_format;
  int quiet;
  /* the topology and its numbers */
  int devices, clients;
  int telemetry_capacity, storage_capacity, broadcast_capacity;
  int device_slots, db_pool;
  int device_interval_ms, batch_interval_ms, health_interval_ms, health_timeout_ms;
  /* simulated costs, in virtual or real time */
  int transmit_ms;         /* a device holds its bandwidth slot this long */
  int aggregator_delay_ms; /* processing time per reading */
  int storage_delay_ms;    /* time of one batch transaction */
  int client_display_ms;   /* a client shows its state at most this often */
  /* fault injection; device and client ids are 1-based, 0 means none */
  int panic_device;
  double panic_at_s;
  int slow_client, client_delay_ms;
  int slow_health_device, drop_health_device;
  double storage_fail_rate; /* share of transactions that fail and are retried */
  /* embedding and tests */
  FILE *out;           /* log and summary; NULL: stdout */
  int handle_signals;  /* SIGINT/SIGTERM/SIGHUP request the ordered shutdown */
  int interrupt_at_ms; /* > 0: request shutdown as SIGINT does, at this run time */
} demo_config;

/* The tour preset, 10 s on the real clock, seed 42. */
void demo_config_defaults(demo_config *c);
/* Sets the numbers of a preset (not the run options: clock, seed, paths). */
void demo_config_preset(demo_config *c, demo_preset p);

typedef struct demo_client_summary {
  int id;
  uint64_t received, processed, lagged_events, lagged_messages, resyncs, skipped_stale;
} demo_client_summary;

typedef struct demo_device_summary {
  int id;
  uint64_t sent, slot_waits, full_waits;
  int64_t last_sent_ms; /* run time of the last accepted reading; -1 none */
  int panicked;
} demo_device_summary;

typedef enum demo_stop_reason {
  STOP_NONE = 0,
  STOP_DURATION,
  STOP_SIGINT,
  STOP_SIGTERM,
  STOP_ALL_ENDED, /* every task ended by itself */
  STOP_SIGHUP,    /* the terminal hung up (signals.h) */
} demo_stop_reason;

typedef struct demo_summary {
  uint64_t readings_sent, readings_aggregated, readings_stored, db_rows;
  uint64_t batches_flushed, batches_stored, batches_lost, write_retries, transactions, duplicates;
  uint64_t telemetry_full_waits, storage_full_waits, device_slot_waits, db_pool_waits;
  uint64_t slot_fifo_violations;
  uint64_t snapshots_built, snapshots_broadcast, snapshots_leaked;
  int nclients, ndevices;
  demo_client_summary clients[DEMO_MAX_CLIENTS];
  demo_device_summary devices[DEMO_MAX_DEVICES];
  struct {
    uint64_t rounds, ok, timeout, dropped, unreachable;
  } health;
  struct {
    uint64_t spawned, joined, panicked, aborted; /* all tasks, writers included */
    uint64_t pipeline, writers;                  /* spawned, by JoinSet */
  } tasks;
  demo_stop_reason stop_reason;
  int64_t stop_at_ms;      /* run time of the shutdown request */
  int64_t shutdown_ms;     /* from the request to the last join */
  int64_t last_reading_ms; /* run time of the last reading aggregated */
  double runtime_s;
  int lossless;    /* sent == aggregated == stored == db_rows */
  char error[256]; /* why the run could not start; "" when it ran */
} demo_summary;

/* Runs the demo inside a task of a running runtime. Returns 0 when the
 * run completed (see summary->lossless), or a negative code when it could
 * not start, with a one-line reason naming the cause in summary->error:
 * TG_EINVAL (a setting out of range), TG_ENOMEM, -EIO (the database). */
int demo_main(const demo_config *cfg, demo_summary *summary);

/* Starts the runtime the config asks for and runs demo_main in it; also
 * returns the runtime's start errors (summary->error says so). */
int demo_run(const demo_config *cfg, demo_summary *summary);

/* The path a SIGINT or SIGTERM takes, and what tests call to simulate
 * one: logs the request and fires the run's cancel token. Safe from any
 * thread. `ctx` is the running demo. */
void demo_signal(void *ctx, int signo);

/* Writes the summary as one JSON object. Returns 0 or -errno. */
int demo_summary_write_json(const demo_summary *s, const demo_config *cfg, const char *path);

const char *demo_stop_reason_name(demo_stop_reason r);
const char *demo_preset_name(demo_preset p);

#endif
