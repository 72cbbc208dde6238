/* protocol.h - the device line protocol: one line in, one reading, health
 * reply or precise rejection out.
 *
 * A device connection carries one message per line. protocol_parse_line
 * takes one line (without its '\n') and tells, from its first non-blank
 * byte, which format it is in: '{' is a JSON object, anything else is
 * InfluxDB line protocol. A JSON object with "type":"health" is a device's
 * answer to a health request, one with "type":"hello" says what the
 * device wants from the gateway (acks, health requests); every other
 * accepted line is a reading: a device, an optional seq, a timestamp, a
 * measurement and any fields. docs/protocol.md has the full wire
 * protocol, and the JSON shapes of the agents it takes (Telegraf's
 * serializer, Fluent Bit's json_lines, flat objects).
 *
 * The parser is a single left-to-right pass over the line: no allocation,
 * no general JSON library, no state between calls, safe on any thread. It
 * reads nothing outside line[0 .. len) (no NUL needed). A reading's
 * names and strings point into the line (schema_pack copies them into
 * the reading), everything else is copied out. A line is rejected for
 * the first problem the scan meets, so every rejection has exactly one
 * reason and a stable name for metrics. What fields a measurement may
 * have, and their types and ranges, are schema.h's, not the parser's.
 *
 * Not here: the per-device high-water mark of seq (a reading whose seq is
 * not above it is a resend and is dropped, not an error), mapping device
 * ids to the pipeline's numeric ids, rate limits on error lines. Those are
 * connection state; the parser only says what a line is.
 *
 * Numbers: integers are exact to 64 bits. Decimal fractions are converted
 * to the nearest double, exactly as strtod rounds; the rare number that
 * needs more than 19 significant digits or an exponent beyond +-22 goes
 * through strtod on a stack copy of its first 768 significant digits (and
 * a sticky digit for the rest: enough for any halfway case), written
 * without a decimal point, so the C locale is not needed either. */
#ifndef TELEGATE_PROTOCOL_H
#define TELEGATE_PROTOCOL_H

#include "reading.h"

#include <stddef.h>
#include <stdint.h>

/* The default line length limit in bytes, not counting the '\n'. */
#define PROTOCOL_LINE_MAX_DEFAULT 4096
/* A device id is at most this many bytes. */
#define PROTOCOL_DEVICE_ID_MAX    32
/* A hello's token is at most this many bytes. */
#define PROTOCOL_TOKEN_MAX        128

/* Timestamps (Unix milliseconds) outside these are rejected as
 * out_of_range. Before 2000-01-01 a ts is almost surely seconds (or a
 * clock never set) where milliseconds were meant, and would be stored as
 * January 1970. */
#define PROTOCOL_TS_MS_MIN  946684800000
#define PROTOCOL_TS_MS_MAX  253402300799999 /* 9999-12-31T23:59:59.999Z */
/* seq and integer fields are at most 2^63 - 1: SQL's integers (SQLite's,
 * PostgreSQL's bigint) are signed 64-bit, and a larger value would read
 * back negative in SQL. */
#define PROTOCOL_SEQ_MAX    INT64_MAX
/* A reading carries at most this many fields (tags included). */
#define PROTOCOL_FIELDS_MAX 64

/* Why a line was rejected: X(code, metric name, description). The names
 * are stable: metrics, logs and the error line sent back all use them. */
#define PROTOCOL_REASON_MAP(X)                                                                               \
  X(MALFORMED, "malformed", "neither a JSON object nor a line-protocol point")                               \
  X(OVERSIZED, "oversized", "line longer than the limit")                                                    \
  X(NOT_UTF8, "not_utf8", "bytes that are not UTF-8")                                                        \
  X(BAD_NUMBER, "bad_number", "a numeric field's value is not a number of its kind")                         \
  X(OUT_OF_RANGE, "out_of_range", "a number outside its field's range, NaN or infinite")                     \
  X(MISSING_FIELD, "missing_field", "a required field is absent")                                            \
  X(UNKNOWN_FIELD, "unknown_field", "a field this kind of message does not have")                            \
  X(DUPLICATE_FIELD, "duplicate_field", "a field given twice")                                               \
  X(BAD_DEVICE_ID, "bad_device_id", "a device id that breaks the id rule")                                   \
  X(WRONG_TYPE, "wrong_type", "a value of the wrong type (string, boolean, null, object, array)")            \
  X(UNKNOWN_TYPE, "unknown_type", "a message that does not belong where it came (a hello over MQTT)")        \
  X(BAD_TOKEN, "bad_token", "a hello's token that breaks the token rule")                                    \
  X(TYPE_CONFLICT, "type_conflict", "a field's value of another type than the field has")                    \
  X(TOO_MANY_FIELDS, "too_many_fields", "more fields than a reading, a measurement or the gateway may have") \
  X(BAD_NAME, "bad_name", "a measurement, field or tag name that is empty, too long or reserved")            \
  X(NO_MEMORY, "no_memory", "the gateway could not allocate the reading")

typedef enum protocol_reason {
  PROTOCOL_OK = 0,
#define PROTOCOL_REASON_ENUM(code, name, text) PROTOCOL_##code,
  PROTOCOL_REASON_MAP(PROTOCOL_REASON_ENUM)
#undef PROTOCOL_REASON_ENUM
      PROTOCOL_REASON_COUNT
} protocol_reason;

typedef enum protocol_kind {
  PROTOCOL_READING = 1, /* a measurement: msg.point and msg.device */
  PROTOCOL_HEALTH,      /* an answer to a health request: msg.health */
  PROTOCOL_HELLO,       /* what the device wants: msg.hello */
  PROTOCOL_BLANK,       /* empty, only blanks, or a line-protocol # comment: skip it */
} protocol_kind;

typedef enum protocol_format {
  PROTOCOL_JSON = 1,
  PROTOCOL_LINE, /* InfluxDB line protocol */
} protocol_format;

/* A device id as sent. "7", 7 and device=7 are the same id, "7"; "07" is
 * another one. */
typedef struct protocol_device_id {
  uint64_t num;                          /* the id's value when is_num */
  uint8_t len;                           /* 1 .. PROTOCOL_DEVICE_ID_MAX */
  uint8_t is_num;                        /* text is a decimal integer 0 .. 2^64-1 without leading zeros */
  char text[PROTOCOL_DEVICE_ID_MAX + 1]; /* NUL-terminated */
} protocol_device_id;

typedef struct protocol_health_reply {
  uint64_t id;       /* the request's id, echoed */
  uint64_t uptime_s; /* seconds since the device started */
  uint32_t battery;  /* percent */
} protocol_health_reply;

/* A device's hello: {"type":"hello","token":"...","acks":true,"health":true},
 * each optional (false, no token, when absent). The token is the device's
 * secret: whoever holds the parsed message must not log it. */
typedef struct protocol_hello {
  uint8_t acks;                       /* wants an ack line for what is committed */
  uint8_t health;                     /* answers health requests */
  uint8_t token_len;                  /* 0: no token */
  char token[PROTOCOL_TOKEN_MAX + 1]; /* printable ASCII but '"' and backslash; NUL-terminated */
} protocol_hello;

/* One field of a reading as written: its name and, for a string or a
 * tag, its value point into the line, escapes and all (schema_pack
 * reads them there, decoding the escapes of the point's format). */
typedef struct protocol_field {
  const char *name;
  const char *str; /* FIELD_STRING, FIELD_TAG */
  uint32_t str_len;
  uint16_t name_len;
  uint8_t type;    /* field_type (reading.h) */
  uint8_t escaped; /* PROTOCOL_ESC_NAME | PROTOCOL_ESC_STR: the text has escapes to decode */
  union {
    double f;  /* FIELD_FLOAT */
    int64_t i; /* FIELD_INT, FIELD_BOOL */
  } v;
} protocol_field;

enum { PROTOCOL_ESC_NAME = 1, PROTOCOL_ESC_STR = 2 };

/* A reading as parsed, before schema_pack gives its names ids. */
typedef struct protocol_point {
  const char *measurement; /* into the line; NULL: "telemetry" */
  uint16_t measurement_len;
  uint8_t measurement_escaped;
  uint8_t json; /* JSON's escapes; its numbers carry no type (a whole number is FIELD_INT, marked loose) */
  uint8_t nfields;
  uint64_t seq; /* READING_SEQ_NONE: none sent */
  int64_t ts_ms;
  protocol_field fields[PROTOCOL_FIELDS_MAX];
} protocol_point;

/* What a line is. Only the members of its kind are written. */
typedef struct protocol_msg {
  protocol_kind kind;
  protocol_format format;       /* not set for PROTOCOL_BLANK */
  protocol_point point;         /* READING: the line must outlive it (see protocol_field) */
  protocol_device_id device;    /* READING */
  protocol_health_reply health; /* HEALTH */
  protocol_hello hello;         /* HELLO */
} protocol_msg;

typedef struct protocol_error {
  protocol_reason reason;
  uint32_t offset;   /* byte of the line where the problem was found */
  const char *field; /* the field concerned ("temperature"), or NULL */
} protocol_error;

/* Parses line[0 .. len) (no '\n'; one trailing '\r' is ignored). Lines
 * longer than max_len bytes are rejected as oversized; max_len 0 means
 * PROTOCOL_LINE_MAX_DEFAULT. Returns 0 with *out filled, or the negative
 * reason (-PROTOCOL_MALFORMED, -PROTOCOL_OVERSIZED, -PROTOCOL_NOT_UTF8,
 * -PROTOCOL_BAD_NUMBER, -PROTOCOL_OUT_OF_RANGE, -PROTOCOL_MISSING_FIELD,
 * -PROTOCOL_UNKNOWN_FIELD, -PROTOCOL_DUPLICATE_FIELD,
 * -PROTOCOL_BAD_DEVICE_ID, -PROTOCOL_WRONG_TYPE, -PROTOCOL_BAD_TOKEN,
 * -PROTOCOL_TOO_MANY_FIELDS, -PROTOCOL_BAD_NAME)
 * with *err filled when err is not NULL; *out is then unspecified. */
int protocol_parse_line(const char *line, size_t len, size_t max_len, protocol_msg *out, protocol_error *err);

/* The units of a line-protocol timestamp: the precision of the InfluxDB
 * write API (n, u, ms, s, m, h in v1; ns, us, ms, s in v2). */
typedef enum protocol_precision {
  PROTOCOL_NS = 0,
  PROTOCOL_US,
  PROTOCOL_MS,
  PROTOCOL_S,
  PROTOCOL_MIN,
  PROTOCOL_H,
} protocol_precision;

/* One line of an InfluxDB write body, as protocol_parse_line parses line
 * protocol, but: nothing but line protocol (a JSON object is malformed),
 * the timestamp in `precision` units, and a point without one measured at
 * now_ms (Unix milliseconds), as InfluxDB takes it. */
int protocol_parse_influx(const char *line, size_t len, size_t max_len, protocol_precision precision, int64_t now_ms,
                          protocol_msg *out, protocol_error *err);

/* The text of a name or string as written (s[0 .. n), escapes and all)
 * decoded into out, which needs n bytes: JSON's escapes when json, else
 * line protocol's (a backslash makes a blank, ',', '=', '"' or a
 * backslash plain, and is itself plain before anything else). Returns the
 * decoded length, never more than n (a \uXXXX of JSON is 6 bytes and
 * becomes at most 3; a surrogate pair, 12, at most 4). */
size_t protocol_unescape(const char *s, size_t n, int json, char *out);

/* How protocol_parse takes a line. */
typedef struct protocol_opts {
  size_t max_len; /* 0: PROTOCOL_LINE_MAX_DEFAULT */
  int64_t now_ms; /* a reading without a time is measured then (Unix ms); -1: a time is required */
  int json_only;  /* anything but a JSON object is malformed (an agent's HTTP body) */
  /* JSON members that name the device or carry the time, besides
   * "device" and "ts", "timestamp", "date", "time" (serve's
   * --json-device-key, --json-time-key); NULL: none. */
  const char *device_key, *time_key;
} protocol_opts;

/* protocol_parse_line with the options o. */
int protocol_parse(const char *line, size_t len, const protocol_opts *o, protocol_msg *out, protocol_error *err);

/* The stable name of a reason ("out_of_range"), given as either sign;
 * "ok" for 0 and "unknown" for anything else. */
const char *protocol_reason_name(int reason);

/* A one-line description of a reason, given as either sign. */
const char *protocol_reason_text(int reason);

/* Writers of the lines the two sides send, each ending in '\n' and
 * NUL-terminated. Each returns the line's length (with the '\n', without
 * the NUL) or -ENOSPC when buf is too small (64 bytes always do for the
 * hello, the health request and the error line, 96 for the ack, 256 for
 * the others). */

/* A hello, sent by a device (with its token, when token_len is set) and
 * echoed by the gateway without one (what it will do):
 * {"type":"hello","acks":true,"health":false}. 64 bytes do without a
 * token, 64 + PROTOCOL_TOKEN_MAX with one. */
int protocol_format_hello(char *buf, size_t cap, const protocol_hello *h);

/* The gateway's ack: every reading of device_id with a seq up to seq that
 * it received is committed. {"type":"ack","device":"7","seq":N} */
int protocol_format_ack(char *buf, size_t cap, const char *device_id, uint64_t seq);

/* The gateway's health request: {"type":"health","id":N} */
int protocol_format_health_request(char *buf, size_t cap, uint64_t id);

/* The gateway's answer to a rejected line:
 * {"type":"error","reason":"<name>","line":N}; line_no counts the lines
 * of the connection from 1. */
int protocol_format_error(char *buf, size_t cap, int reason, uint64_t line_no);

/* The article's reading, as the simulated devices send it. */
typedef struct protocol_telemetry {
  uint64_t seq;
  int64_t ts_ms;
  double temperature, humidity; /* degrees Celsius, percent */
  uint32_t battery;             /* percent */
} protocol_telemetry;

/* A device's reading of measurement telemetry in the given format.
 * Fractions are written in the fewest digits that parse back
 * to the same double (with snprintf and strtod, so LC_NUMERIC must be "C",
 * as it is in a program that never calls setlocale). Also -EINVAL for an
 * id that breaks the id rule, or in line protocol a ts_ms outside
 * 0 .. INT64_MAX / 1000000. */
int protocol_format_reading(char *buf, size_t cap, protocol_format format, const char *device_id,
                            const protocol_telemetry *r);

/* A device's answer to health request id. */
int protocol_format_health_reply(char *buf, size_t cap, const protocol_health_reply *h);

#endif
