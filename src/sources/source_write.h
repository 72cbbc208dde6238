/* source_write.h - the InfluxDB write API's source: bodies of line
 * protocol handed in by HTTP requests (POST /write, /api/v2/write), or of
 * agents' JSON (POST /api/readings), each answered once every point of it
 * is committed.
 *
 * A body is parsed line by line (protocol_parse_influx: the request's
 * precision, a point without a timestamp taken at its arrival). Its
 * points go into the telemetry channel as a device's readings do, through
 * seq_check (numbered when they carry no seq, judged when they do); then
 * the request follows the registry's commits watch until, for every
 * device it wrote, the readings up to the last seq it sent are committed.
 * So a success means committed, as an ack does on the device port. With
 * --nats the points are published to the stream instead (nats_publish.h)
 * and a success means JetStream has them all; while NATS is away bodies
 * are refused (-EBUSY) before anything of them is sent.
 *
 * Bad lines, as InfluxDB takes them: the lines that parse are written,
 * the others are counted per reason, and the first is named in the
 * result, which the API answers with a 400 once the good ones are in.
 *
 * Who may write: with device credentials (--credentials) the request's
 * token must match one, and each point's device must be one it covers
 * (else the line is refused as not_allowed), with the per-credential
 * budget of new ids of the device port. Without credentials, writes are
 * open only when the HTTP port listens on loopback or --insecure-no-auth
 * says so: nobody speaks for a device without its credential.
 *
 * Bounds: at most WRITE_TURNS bodies are parsed and sent at once; one
 * more waits up to a second for a turn, then is refused (-EBUSY: a 503
 * with Retry-After) before anything of it is sent, so a body is never
 * half taken for want of a turn. A body that began goes in whole: a full
 * telemetry channel makes it wait, the backpressure of the device port.
 * The wait for the commit holds no turn.
 *
 * Shutdown: once the token fires, new bodies are refused (TG_ECLOSED),
 * those being sent finish, and then the source drops its sender; bodies
 * already sent are committed by the pipeline's drain, and their requests
 * answered. */
#ifndef TELEGATE_SOURCE_WRITE_H
#define TELEGATE_SOURCE_WRITE_H

#include "protocol.h"
#include "source.h"

#include <stddef.h>
#include <stdint.h>

extern const source_kind source_write;

enum { WRITE_TURNS = 4, WRITE_BAD_LINE_MAX = 120 };

typedef struct write_request {
  const char *body; /* line protocol, one point a line; with json, agents' JSON */
  size_t len;
  protocol_precision precision;
  /* The body is JSON objects (protocol_parse, json_only), one after another
   * (JSON lines: Fluent Bit's json_lines, Vector's), in an array (Fluent
   * Bit's json), or in Telegraf's batch {"metrics":[...]}. A "line" of
   * the result is then an object, counted from 1. */
  int json;
  const char *token;   /* the client's, to match a device credential; NULL: none given */
  int64_t deadline_ns; /* tg_now() time to give up waiting for the commit */
} write_request;

typedef struct write_result {
  uint64_t points; /* sent into the pipeline */
  uint64_t bad;    /* lines refused */
  /* the first line refused: its number (from 1), reason and start */
  uint64_t first_bad_line;
  int first_bad_reason; /* SERVE_BAD_* or protocol_reason */
  char first_bad_text[WRITE_BAD_LINE_MAX + 1];
} write_result;

/* Writes rq's points and waits for their commit. Returns 0 (every point
 * sent is committed, or with --nats published; res->bad lines were
 * refused), TG_ETIMEDOUT (sent, not all committed by the deadline),
 * -EBUSY (no turn within a second, or with --nats NATS is away: nothing
 * sent), TG_ECLOSED (serve is stopping: nothing sent), -EACCES
 * (no credential matches the token, or writes need one: nothing sent).
 * From a task; state is the source's. */
int source_write_points(void *state, const write_request *rq, write_result *res);

#endif
