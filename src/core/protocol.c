/* protocol.c - the device line protocol: one scanner pass per line for
 * JSON objects and InfluxDB line protocol points; see protocol.h. */
#include "protocol.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every field either kind of message may carry; a bit each in the mask of
 * fields seen. Missing fields are reported in this order, which is the
 * order of each kind's table in docs/protocol.md. */
enum field {
  F_DEVICE,
  F_SEQ,
  F_TS,
  F_TEMPERATURE,
  F_HUMIDITY,
  F_TYPE,
  F_ID,
  F_UPTIME_S,
  F_BATTERY,
  F_ACKS,
  F_HEALTH,
  F_TOKEN,
  F_COUNT,
  F_NONE = -1
};

static const char *const field_names[F_COUNT] = {
    "device", "seq", "ts", "temperature", "humidity", "type", "id", "uptime_s", "battery", "acks", "health", "token",
};

#define BIT(f)         (1u << (f))
#define READING_FIELDS (BIT(F_DEVICE) | BIT(F_SEQ) | BIT(F_TS) | BIT(F_TEMPERATURE) | BIT(F_HUMIDITY) | BIT(F_BATTERY))
#define HEALTH_FIELDS  (BIT(F_TYPE) | BIT(F_ID) | BIT(F_UPTIME_S) | BIT(F_BATTERY))
/* A hello needs its type; what it asks for is optional. */
#define HELLO_FIELDS   (BIT(F_TYPE) | BIT(F_ACKS) | BIT(F_HEALTH) | BIT(F_TOKEN))
/* Line protocol: the device is the one tag, the timestamp comes last, and
 * these are the fields. */
#define LINE_FIELDS    (BIT(F_SEQ) | BIT(F_TEMPERATURE) | BIT(F_HUMIDITY) | BIT(F_BATTERY))

/* Byte classes, one table lookup per byte on the hot loops. */
enum {
  K_ID = 1,     /* may appear in a device id: [A-Za-z0-9_.:-] */
  K_JDELIM = 2, /* may follow a JSON number: blank, ',', '}' */
  K_LDELIM = 4, /* may follow a line-protocol value: ',' ' ' '\t' */
  K_WS = 8,     /* JSON whitespace */
};

#define IS_ID(c)                                                                                           \
  (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || ((c) >= '0' && (c) <= '9') || (c) == '_' || \
   (c) == '.' || (c) == ':' || (c) == '-')
#define IS_WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')
#define CLS(c)                                                                       \
  ((IS_ID(c) ? K_ID : 0) | ((IS_WS(c) || (c) == ',' || (c) == '}') ? K_JDELIM : 0) | \
   (((c) == ',' || (c) == ' ' || (c) == '\t') ? K_LDELIM : 0) | (IS_WS(c) ? K_WS : 0))
#define ROW(b)                                                                                                \
  CLS(b + 0), CLS(b + 1), CLS(b + 2), CLS(b + 3), CLS(b + 4), CLS(b + 5), CLS(b + 6), CLS(b + 7), CLS(b + 8), \
      CLS(b + 9), CLS(b + 10), CLS(b + 11), CLS(b + 12), CLS(b + 13), CLS(b + 14), CLS(b + 15)

static const uint8_t cls[256] = {
    ROW(0),   ROW(16),  ROW(32),  ROW(48),  ROW(64),  ROW(80),  ROW(96),  ROW(112),
    ROW(128), ROW(144), ROW(160), ROW(176), ROW(192), ROW(208), ROW(224), ROW(240),
};

#define CLASS(p) cls[(unsigned char)*(p)]

/* The helpers of the hot path are forced inline: gcc keeps several of them
 * out of line at -O2, and the calls cost a fifth of a line's time
 * (bench/protocol-bench.c). */
#if defined(__GNUC__)
#define HOT static inline __attribute__((always_inline))
#else
#define HOT static inline
#endif

/* The scan of one line. */
typedef struct scan {
  const char *line, *end;
  protocol_error *err;
  /* line protocol's timestamp: nanoseconds per unit written, and the
   * time a point without one takes (-1: it is required) */
  int64_t ts_unit_ns, now_ms;
} scan;

/* Length of the UTF-8 sequence at p (its first byte >= 0x80), or 0 when
 * the bytes are not one: no overlong forms, no surrogates, nothing past
 * U+10FFFF. */
static size_t utf8_seq(const char *p, const char *end) {
  const unsigned char *u = (const unsigned char *)p;
  unsigned c = u[0], lo = 0x80, hi = 0xBF;
  size_t n;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if ((size_t)(end - p) < n || u[1] < lo || u[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if ((u[i] & 0xC0) != 0x80) return 0;
  return n;
}

/* Records a rejection found at `at`. Wherever the scan stops, a byte that
 * begins no UTF-8 sequence is the problem, whatever the scan expected. */
static int fail(const scan *s, const char *at, protocol_reason r, int field) {
  if (at < s->end && (unsigned char)*at >= 0x80 && !utf8_seq(at, s->end)) r = PROTOCOL_NOT_UTF8;
  if (s->err) {
    s->err->reason = r;
    s->err->offset = (uint32_t)(at - s->line);
    s->err->field = field == F_NONE ? NULL : field_names[field];
  }
  return -(int)r;
}

HOT const char *skip_ws(const char *p, const char *end) {
  while (p < end && (CLASS(p) & K_WS)) p++;
  return p;
}

HOT const char *skip_blanks(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  return p;
}

/* The field a name stands for, or F_NONE. */
static int field_lookup(const char *k, size_t n) {
  switch (n) {
  case 2:
    if (k[0] == 't' && k[1] == 's') return F_TS;
    if (k[0] == 'i' && k[1] == 'd') return F_ID;
    return F_NONE;
  case 3: return memcmp(k, "seq", 3) == 0 ? F_SEQ : F_NONE;
  case 4:
    if (memcmp(k, "type", 4) == 0) return F_TYPE;
    if (memcmp(k, "acks", 4) == 0) return F_ACKS;
    return F_NONE;
  case 5: return memcmp(k, "token", 5) == 0 ? F_TOKEN : F_NONE;
  case 6:
    if (memcmp(k, "device", 6) == 0) return F_DEVICE;
    if (memcmp(k, "health", 6) == 0) return F_HEALTH;
    return F_NONE;
  case 7: return memcmp(k, "battery", 7) == 0 ? F_BATTERY : F_NONE;
  case 8:
    if (memcmp(k, "humidity", 8) == 0) return F_HUMIDITY;
    if (memcmp(k, "uptime_s", 8) == 0) return F_UPTIME_S;
    return F_NONE;
  case 11: return memcmp(k, "temperature", 11) == 0 ? F_TEMPERATURE : F_NONE;
  default: return F_NONE;
  }
}

/* The field whose name starts at p and ends just before a `term` byte,
 * for names as devices write them, with *next at the terminator; F_NONE
 * sends the name to the full scan. One compare of a known length instead
 * of a pass over the name's bytes. */
#define NAME(lit, field)                                                                                        \
  if ((size_t)(end - p) > sizeof lit - 1 && memcmp(p, lit, sizeof lit - 1) == 0 && p[sizeof lit - 1] == term) { \
    *next = p + sizeof lit - 1;                                                                                 \
    return field;                                                                                               \
  }

HOT int name_quick(const char *p, const char *end, char term, const char **next) {
  if (p == end) return F_NONE;
  switch (*p) {
  case 'd': NAME("device", F_DEVICE) break;
  case 's': NAME("seq", F_SEQ) break;
  case 't':
    NAME("ts", F_TS)
    NAME("temperature", F_TEMPERATURE)
    NAME("type", F_TYPE)
    break;
  case 'h':
    NAME("humidity", F_HUMIDITY)
    NAME("health", F_HEALTH)
    break;
  case 'a': NAME("acks", F_ACKS) break;
  case 'b': NAME("battery", F_BATTERY) break;
  case 'i': NAME("id", F_ID) break;
  case 'u': NAME("uptime_s", F_UPTIME_S) break;
  default: break;
  }
  return F_NONE;
}
#undef NAME

/* ---- numbers ---- */

/* A number as scanned: value = mant * 10^exp10, or NaN/infinity. */
typedef struct number {
  uint64_t mant; /* the first 19 significant digits */
  int32_t exp10;
  uint8_t neg;
  uint8_t is_int;           /* no fraction, no exponent */
  uint8_t inexact;          /* a nonzero digit beyond the 19th was dropped */
  uint8_t special;          /* 1: NaN, 2: infinity */
  uint8_t int_digits;       /* digits before the point, capped at 255 */
  uint8_t digit20;          /* the 20th integer digit, when there are exactly 20 */
  const char *start, *stop; /* the token, sign and suffix included */
} number;

/* Where a number stands: what may follow it and whether an integer
 * suffix is allowed. */
enum {
  NUM_JSON,    /* a JSON value */
  NUM_LINE,    /* a line-protocol field: 'i' or 'u' may end an integer */
  NUM_LINE_TS, /* a line-protocol timestamp: no suffix */
};

static int match_ci(const char *p, const char *end, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 0; i < n; i++)
    if ((p[i] | 0x20) != word[i]) return 0;
  return 1;
}

/* The mantissa of a number with more than 19 digits: the first 19
 * significant ones, and what the rest do to the exponent. */
static void number_long(number *n, const char *p, const char *point, const char *stop) {
  uint64_t mant = 0;
  int32_t exp10 = 0;
  unsigned sig = 0, nint = 0;
  for (; p < stop; p++) {
    if (p == point) continue;
    unsigned d = (unsigned)(*p - '0');
    if (p < point) nint++;
    if (sig < 19) {
      mant = mant * 10 + d;
      sig += mant != 0;
      if (p > point) exp10--;
    } else {
      if (p < point) {
        exp10++;
        if (nint == 20) n->digit20 = (uint8_t)d;
      }
      n->inexact |= d != 0;
    }
  }
  n->mant = mant;
  n->exp10 = exp10;
}

/* Scans a number at p: JSON's grammar (no leading zeros, digits on both
 * sides of a point), and in line protocol an integer may end in 'i' or
 * 'u'. NaN and infinity in C's spellings are numbers too, so that they can
 * be rejected as out of range rather than as garbage. The token must end
 * at a delimiter of its format. Returns 0 or -PROTOCOL_BAD_NUMBER. */
static int number_scan(const scan *s, const char *p, int mode, int field, number *n) {
  const char *end = s->end, *digits, *point;
  uint64_t mant = 0;
  size_t nint, nfrac = 0;
  n->start = p;
  n->neg = 0;
  n->is_int = 1;
  n->inexact = 0;
  n->special = 0;
  n->digit20 = 0;
  n->exp10 = 0;
  if (p < end && *p == '-') {
    n->neg = 1;
    p++;
  }
  /* Digits, a point, digits: the mantissa is redone by number_long when
   * there are more than 19 of them. */
  for (digits = p; p < end && (unsigned)(*p - '0') <= 9; p++) mant = mant * 10 + (unsigned)(*p - '0');
  nint = (size_t)(p - digits);
  point = p;
  if (nint == 0) {
    if (match_ci(p, end, "nan")) {
      n->special = 1;
      p += 3;
    } else if (match_ci(p, end, "infinity")) {
      n->special = 2;
      p += 8;
    } else if (match_ci(p, end, "inf")) {
      n->special = 2;
      p += 3;
    } else {
      return fail(s, p, PROTOCOL_BAD_NUMBER, field);
    }
    n->is_int = 0;
    n->mant = 0;
    n->int_digits = 0;
    goto delimiter;
  }
  if (*digits == '0' && nint > 1) return fail(s, digits, PROTOCOL_BAD_NUMBER, field); /* leading zero */
  if (p < end && *p == '.') {
    const char *frac = ++p;
    for (; p < end && (unsigned)(*p - '0') <= 9; p++) mant = mant * 10 + (unsigned)(*p - '0');
    nfrac = (size_t)(p - frac);
    if (nfrac == 0) return fail(s, p, PROTOCOL_BAD_NUMBER, field);
    n->is_int = 0;
    n->exp10 = -(int32_t)nfrac;
  }
  n->mant = mant;
  n->int_digits = nint > 255 ? 255 : (uint8_t)nint;
  if (nint + nfrac > 19) number_long(n, digits, point, p);
  if (p < end && (*p | 0x20) == 'e') {
    int eneg = 0;
    int32_t e = 0;
    n->is_int = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    if (p == end || (unsigned)(*p - '0') > 9) return fail(s, p, PROTOCOL_BAD_NUMBER, field);
    for (; p < end && (unsigned)(*p - '0') <= 9; p++)
      if (e < 100000) e = e * 10 + (*p - '0'); /* far past any double */
    n->exp10 += eneg ? -e : e;
  }
  if (mode == NUM_LINE && n->is_int && p < end && (*p == 'i' || *p == 'u')) p++;
delimiter:
  if (p < end && !(CLASS(p) & (mode == NUM_JSON ? K_JDELIM : K_LDELIM))) return fail(s, p, PROTOCOL_BAD_NUMBER, field);
  n->stop = p;
  return 0;
}

/* The value of an integer field: 0, -PROTOCOL_BAD_NUMBER for a fraction or
 * exponent, -PROTOCOL_OUT_OF_RANGE for NaN, infinity, a negative value or
 * one past max. */
static int number_u64(const scan *s, const number *n, uint64_t max, int field, uint64_t *out) {
  uint64_t v = n->mant;
  if (n->special) return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
  if (!n->is_int) return fail(s, n->start, PROTOCOL_BAD_NUMBER, field);
  if (n->int_digits > 20) return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
  if (n->int_digits == 20) {
    if (v > (UINT64_MAX - n->digit20) / 10) return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
    v = v * 10 + n->digit20;
  }
  if ((n->neg && v != 0) || v > max) return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
  *out = v;
  return 0;
}

static const double pow10_exact[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* Significant digits number_slow hands strtod. A decimal exactly halfway
 * between two doubles has at most 767 significant digits, so the first
 * 768 and a sticky 1 standing for any nonzero digit after them round as
 * the whole number does. */
#define SLOW_DIGITS 768

/* The nearest double to a number the fast path cannot take: its digits
 * again, at most SLOW_DIGITS significant ones and a sticky 1 for any
 * dropped nonzero digit, written as integer digits and an exponent (no
 * point, so no locale) for strtod, which rounds correctly. */
static double number_slow(const number *n) {
  char buf[SLOW_DIGITS + 32];
  size_t k = 0, kept = 0;
  long e = 0;
  int point = 0, sticky = 0;
  const char *p = n->start;
  if (n->neg) buf[k++] = '-';
  if (*p == '-') p++;
  for (; p < n->stop; p++) {
    if (*p == '.') {
      point = 1;
      continue;
    }
    if ((unsigned)(*p - '0') > 9) break; /* the exponent or a suffix */
    if (point) e--;
    if (kept == 0 && *p == '0') continue;
    if (kept < SLOW_DIGITS) {
      buf[k++] = *p;
      kept++;
    } else {
      e++;
      sticky |= *p != '0';
    }
  }
  if (kept == 0) return n->neg ? -0.0 : 0.0;
  if (sticky) {
    buf[k++] = '1';
    e--;
  }
  if (p < n->stop && (*p | 0x20) == 'e') {
    int eneg = 0;
    long x = 0;
    p++;
    if (*p == '+' || *p == '-') eneg = *p++ == '-';
    for (; p < n->stop && (unsigned)(*p - '0') <= 9; p++)
      if (x < 100000) x = x * 10 + (*p - '0');
    e += eneg ? -x : x;
  }
  snprintf(buf + k, sizeof buf - k, "e%ld", e);
  return strtod(buf, NULL);
}

/* The value of a fractional field. Returns 0 or -PROTOCOL_OUT_OF_RANGE
 * for NaN, infinity or a value outside lo .. hi. */
static int number_double(const scan *s, const number *n, double lo, double hi, int field, double *out) {
  double v;
  if (n->special) return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
#if FLT_EVAL_METHOD == 0
  if (!n->inexact && n->mant <= (UINT64_C(1) << 53) && n->exp10 >= -22 && n->exp10 <= 22) {
    /* Both operands exact, one correctly rounded operation (Clinger). */
    v = (double)n->mant;
    v = n->exp10 < 0 ? v / pow10_exact[-n->exp10] : v * pow10_exact[n->exp10];
    if (n->neg) v = -v;
  } else
#endif
  {
    v = n->mant == 0 ? (n->neg ? -0.0 : 0.0) : number_slow(n);
  }
  if (!(v >= lo && v <= hi)) return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
  *out = v;
  return 0;
}

/* The numbers devices send, in one short pass: -?digits(.digits)? with at
 * most 19 digits and no leading zero, in line protocol an integer suffix,
 * then a delimiter of the format. Returns the end of the token, or NULL
 * for anything else, which number_scan then judges. */
HOT const char *number_quick(const char *p, const char *end, int mode, uint64_t *mant, unsigned *nfrac, int *neg) {
  const char *digits;
  uint64_t m = 0;
  size_t nint, nf = 0;
  *neg = p < end && *p == '-';
  p += *neg;
  for (digits = p; p < end && (unsigned)(*p - '0') <= 9; p++) m = m * 10 + (unsigned)(*p - '0');
  nint = (size_t)(p - digits);
  if (nint == 0 || (*digits == '0' && nint > 1)) return NULL;
  if (p < end && *p == '.') {
    const char *frac = ++p;
    for (; p < end && (unsigned)(*p - '0') <= 9; p++) m = m * 10 + (unsigned)(*p - '0');
    nf = (size_t)(p - frac);
    if (nf == 0) return NULL;
  } else if (mode == NUM_LINE && p < end && (*p == 'i' || *p == 'u')) {
    p++;
  }
  if (nint + nf > 19 || (p < end && !(CLASS(p) & (mode == NUM_JSON ? K_JDELIM : K_LDELIM)))) return NULL;
  *mant = m;
  *nfrac = (unsigned)nf;
  return p;
}

/* JSON literals true, false and null, objects and arrays. */
static int json_literal(const char *p, const char *end) {
  return *p == '{' || *p == '[' || ((size_t)(end - p) >= 4 && (!memcmp(p, "true", 4) || !memcmp(p, "null", 4))) ||
         ((size_t)(end - p) >= 5 && !memcmp(p, "false", 5));
}

/* Strings and booleans in line protocol. */
static int line_not_number(const char *p, const char *end) {
  static const char *const words[] = {"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"};
  if (*p == '"') return 1;
  if (*p != 't' && *p != 'T' && *p != 'f' && *p != 'F') return 0;
  for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(end - p) >= n && memcmp(p, words[i], n) == 0 && (p + n == end || (CLASS(p + n) & K_LDELIM))) return 1;
  }
  return 0;
}

/* The full scan of a numeric field's value, for what the quick one did
 * not take: a value of another type, or any number. */
static int value_number(const scan *s, const char *p, int mode, int field, number *n) {
  if (mode == NUM_JSON) {
    if (*p == '"' || json_literal(p, s->end)) return fail(s, p, PROTOCOL_WRONG_TYPE, field);
  } else {
    if (p == s->end || (CLASS(p) & K_LDELIM)) return fail(s, p, PROTOCOL_BAD_NUMBER, field);
    if (line_not_number(p, s->end)) return fail(s, p, PROTOCOL_WRONG_TYPE, field);
  }
  return number_scan(s, p, mode, field, n);
}

/* A fractional field's value at p, in lo .. hi; *next past it. */
HOT int value_double(const scan *s, const char *p, int mode, double lo, double hi, int field, double *out,
                     const char **next) {
  number n;
  int r;
#if FLT_EVAL_METHOD == 0
  uint64_t m;
  unsigned nf;
  int neg;
  const char *q = number_quick(p, s->end, mode, &m, &nf, &neg);
  if (q && m <= (UINT64_C(1) << 53)) {
    double v = nf ? (double)m / pow10_exact[nf] : (double)m; /* exact operands, one rounding */
    if (neg) v = -v;
    if (!(v >= lo && v <= hi)) return fail(s, p, PROTOCOL_OUT_OF_RANGE, field);
    *out = v;
    *next = q;
    return 0;
  }
#endif
  r = value_number(s, p, mode, field, &n);
  if (r) return r;
  *next = n.stop;
  return number_double(s, &n, lo, hi, field, out);
}

/* An integer field's value at p, in 0 .. max; *next past it. */
HOT int value_u64(const scan *s, const char *p, int mode, uint64_t max, int field, uint64_t *out, const char **next) {
  uint64_t m;
  unsigned nf;
  int neg, r;
  number n;
  const char *q = number_quick(p, s->end, mode, &m, &nf, &neg);
  if (q && nf == 0 && !neg) {
    if (m > max) return fail(s, p, PROTOCOL_OUT_OF_RANGE, field);
    *out = m;
    *next = q;
    return 0;
  }
  r = value_number(s, p, mode, field, &n);
  if (r) return r;
  *next = n.stop;
  return number_u64(s, &n, max, field, out);
}

/* ---- device ids ---- */

/* Fills d from id text already checked against the id rule. */
HOT void device_set(protocol_device_id *d, const char *p, size_t n) {
  uint64_t v = 0;
  int is_num = n <= 20 && (p[0] != '0' || n == 1);
  for (size_t i = 0; i < n && is_num; i++) {
    unsigned c = (unsigned)(p[i] - '0');
    if (c > 9 || v > (UINT64_MAX - c) / 10)
      is_num = 0;
    else
      v = v * 10 + c;
  }
  memcpy(d->text, p, n);
  d->text[n] = '\0';
  d->len = (uint8_t)n;
  d->is_num = (uint8_t)is_num;
  d->num = is_num ? v : 0;
}

/* ---- JSON ---- */

enum { STR_ESCAPE = 1, STR_NONID = 2 };

/* Scans the JSON string whose opening quote is at p, checking its escapes
 * and its UTF-8. On success *body and *n are its raw bytes, *flags says
 * whether it holds an escape or a byte outside the id set, and *next is
 * past the closing quote. */
HOT int json_string(const scan *s, const char *p, int field, const char **body, size_t *n, unsigned *flags,
                    const char **next) {
  const char *end = s->end, *start = ++p;
  unsigned f = 0;
  for (;;) {
    while (p < end && (CLASS(p) & K_ID)) p++;
    if (p == end) return fail(s, p, PROTOCOL_MALFORMED, field); /* unterminated */
    unsigned char c = (unsigned char)*p;
    if (c == '"') break;
    f |= STR_NONID;
    if (c == '\\') {
      f |= STR_ESCAPE;
      if (++p == end) return fail(s, p, PROTOCOL_MALFORMED, field);
      if (*p == 'u') {
        for (int i = 1; i <= 4; i++)
          if (p + i >= end || !((p[i] >= '0' && p[i] <= '9') || ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f')))
            return fail(s, p + i, PROTOCOL_MALFORMED, field);
        p += 5;
      } else if (*p && strchr("\"\\/bfnrt", *p)) {
        p++;
      } else {
        return fail(s, p, PROTOCOL_MALFORMED, field);
      }
    } else if (c >= 0x80) {
      size_t k = utf8_seq(p, end);
      if (!k) return fail(s, p, PROTOCOL_NOT_UTF8, field);
      p += k;
    } else if (c < 0x20) {
      return fail(s, p, PROTOCOL_MALFORMED, field); /* control characters are escaped in JSON */
    } else {
      p++;
    }
  }
  *body = start;
  *n = (size_t)(p - start);
  *flags = f;
  *next = p + 1;
  return 0;
}

HOT int json_device(const scan *s, const char *p, protocol_device_id *d, const char **next) {
  const char *end = s->end;
  if (*p == '"') {
    const char *body = NULL;
    size_t n = 0;
    unsigned flags = 0;
    int r = json_string(s, p, F_DEVICE, &body, &n, &flags, next);
    if (r) return r;
    if (flags || n == 0 || n > PROTOCOL_DEVICE_ID_MAX) return fail(s, p, PROTOCOL_BAD_DEVICE_ID, F_DEVICE);
    device_set(d, body, n);
    return 0;
  }
  if (json_literal(p, end)) return fail(s, p, PROTOCOL_WRONG_TYPE, F_DEVICE);
  /* A number: a plain non-negative integer that fits 64 bits. */
  const char *q = p;
  while (q < end && (unsigned)(*q - '0') <= 9) q++;
  size_t n = (size_t)(q - p);
  if (q < end && (*q == '.' || (*q | 0x20) == 'e' || *q == '-' || *q == '+'))
    return fail(s, p, PROTOCOL_BAD_DEVICE_ID, F_DEVICE);
  if (n == 0 && (*p == '-' || *p == '+')) return fail(s, p, PROTOCOL_BAD_DEVICE_ID, F_DEVICE);
  if (n == 0 || (q < end && !(CLASS(q) & K_JDELIM))) return fail(s, q, PROTOCOL_MALFORMED, F_DEVICE);
  if (n > 20 || (p[0] == '0' && n > 1)) return fail(s, p, PROTOCOL_BAD_DEVICE_ID, F_DEVICE);
  device_set(d, p, n);
  if (!d->is_num) return fail(s, p, PROTOCOL_BAD_DEVICE_ID, F_DEVICE); /* past 2^64-1 */
  *next = q;
  return 0;
}

/* A JSON true or false at p, into *out; *next past it. */
static int json_bool(const scan *s, const char *p, int field, int *out, const char **next) {
  size_t left = (size_t)(s->end - p);
  size_t n = left >= 4 && !memcmp(p, "true", 4) ? 4 : left >= 5 && !memcmp(p, "false", 5) ? 5 : 0;
  if (!n || (p + n < s->end && !(CLASS(p + n) & K_JDELIM))) return fail(s, p, PROTOCOL_WRONG_TYPE, field);
  *out = n == 4;
  *next = p + n;
  return 0;
}

/* A hello's token: a JSON string of 1 to PROTOCOL_TOKEN_MAX printable
 * ASCII bytes other than '"' and '\\', taken as written (no escapes). */
static int json_token(const scan *s, const char *p, protocol_hello *h, const char **next) {
  if (*p != '"') return fail(s, p, PROTOCOL_WRONG_TYPE, F_TOKEN);
  const char *end = s->end, *body = p + 1, *q = body;
  while (q < end && *q != '"' && *q != '\\' && *q > 0x20 && *q < 0x7f) q++;
  size_t n = (size_t)(q - body);
  if (q == end || *q != '"' || n == 0 || n > PROTOCOL_TOKEN_MAX) {
    const char *stop;
    const char *b;
    size_t bn;
    unsigned flags;
    int r = json_string(s, p, F_TOKEN, &b, &bn, &flags, &stop); /* a broken string is malformed, as anywhere */
    return r ? r : fail(s, p, PROTOCOL_BAD_TOKEN, F_TOKEN);
  }
  memcpy(h->token, body, n);
  h->token[n] = 0;
  h->token_len = (uint8_t)n;
  *next = q + 1;
  return 0;
}

/* The first field in `mask` by position in the line. */
static int first_by_offset(unsigned mask, const uint32_t *at) {
  int best = F_NONE;
  for (int f = 0; f < F_COUNT; f++)
    if ((mask & BIT(f)) && (best == F_NONE || at[f] < at[best])) best = f;
  return best;
}

static int first_by_order(unsigned mask) {
  for (int f = 0; f < F_COUNT; f++)
    if (mask & BIT(f)) return f;
  return F_NONE;
}

static int parse_json(const scan *s, const char *p, protocol_msg *out) {
  const char *end = s->end;
  unsigned seen = 0;
  uint32_t at[F_COUNT];
  uint64_t seq = 0, ts = 0, battery = 0, id = 0, uptime = 0;
  double temperature = 0, humidity = 0;
  int r, hello = 0, acks = 0, health = 0;
  out->hello.token_len = 0;
  out->hello.token[0] = 0;

  p = skip_ws(p + 1, end);
  if (p < end && *p == '}') {
    p++;
    goto closed;
  }
  for (;;) {
    const char *key = p, *body = NULL;
    size_t klen = 0;
    unsigned flags = 0;
    if (p == end || *p != '"') return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    int f = name_quick(p + 1, end, '"', &p);
    if (f != F_NONE) {
      p++;
    } else {
      r = json_string(s, key, F_NONE, &body, &klen, &flags, &p);
      if (r) return r;
      /* Names are matched as written: no accepted name needs an escape. */
      f = (flags & STR_ESCAPE) ? F_NONE : field_lookup(body, klen);
      if (f == F_NONE) return fail(s, key, PROTOCOL_UNKNOWN_FIELD, F_NONE);
    }
    if (seen & BIT(f)) return fail(s, key, PROTOCOL_DUPLICATE_FIELD, f);
    seen |= BIT(f);
    at[f] = (uint32_t)(key - s->line);
    p = skip_ws(p, end);
    if (p == end || *p != ':') return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    p = skip_ws(p + 1, end);
    if (p == end) return fail(s, p, PROTOCOL_MALFORMED, f);
    switch (f) {
    case F_DEVICE:
      r = json_device(s, p, &out->device, &p);
      if (r) return r;
      break;
    case F_TYPE:
      if (*p != '"') return fail(s, p, PROTOCOL_WRONG_TYPE, f);
      key = p;
      r = json_string(s, p, f, &body, &klen, &flags, &p);
      if (r) return r;
      hello = !flags && klen == 5 && memcmp(body, "hello", 5) == 0;
      if (!hello && (flags || klen != 6 || memcmp(body, "health", 6) != 0))
        return fail(s, key, PROTOCOL_UNKNOWN_TYPE, f);
      break;
    case F_ACKS:
    case F_HEALTH:
      r = json_bool(s, p, f, f == F_ACKS ? &acks : &health, &p);
      if (r) return r;
      break;
    case F_TOKEN:
      r = json_token(s, p, &out->hello, &p);
      if (r) return r;
      break;
    case F_TEMPERATURE:
      r = value_double(s, p, NUM_JSON, PROTOCOL_TEMPERATURE_MIN, PROTOCOL_TEMPERATURE_MAX, f, &temperature, &p);
      if (r) return r;
      break;
    case F_HUMIDITY:
      r = value_double(s, p, NUM_JSON, PROTOCOL_HUMIDITY_MIN, PROTOCOL_HUMIDITY_MAX, f, &humidity, &p);
      if (r) return r;
      break;
    case F_SEQ:
      r = value_u64(s, p, NUM_JSON, PROTOCOL_SEQ_MAX, f, &seq, &p);
      if (r) return r;
      break;
    case F_TS:
      key = p;
      r = value_u64(s, p, NUM_JSON, PROTOCOL_TS_MS_MAX, f, &ts, &p);
      if (r) return r;
      if (ts < PROTOCOL_TS_MS_MIN) return fail(s, key, PROTOCOL_OUT_OF_RANGE, f);
      break;
    case F_BATTERY:
      r = value_u64(s, p, NUM_JSON, PROTOCOL_BATTERY_MAX, f, &battery, &p);
      if (r) return r;
      break;
    case F_ID:
      r = value_u64(s, p, NUM_JSON, UINT64_MAX, f, &id, &p);
      if (r) return r;
      break;
    default:
      r = value_u64(s, p, NUM_JSON, UINT64_MAX, f, &uptime, &p);
      if (r) return r;
      break;
    }
    p = skip_ws(p, end);
    if (p < end && *p == ',') {
      p = skip_ws(p + 1, end);
      continue;
    }
    if (p < end && *p == '}') {
      p++;
      break;
    }
    return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
  }
closed:
  p = skip_ws(p, end);
  if (p != end) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);

  unsigned allowed = hello ? HELLO_FIELDS : (seen & BIT(F_TYPE)) ? HEALTH_FIELDS : READING_FIELDS;
  unsigned want = hello ? BIT(F_TYPE) : allowed & ~BIT(F_SEQ); /* a reading's seq is optional */
  if (seen & ~allowed) {
    int f = first_by_offset(seen & ~allowed, at);
    return fail(s, s->line + at[f], PROTOCOL_UNKNOWN_FIELD, f);
  }
  if (want & ~seen) return fail(s, end, PROTOCOL_MISSING_FIELD, first_by_order(want & ~seen));
  out->format = PROTOCOL_JSON;
  if (hello) {
    out->kind = PROTOCOL_HELLO;
    out->hello.acks = (uint8_t)acks;
    out->hello.health = (uint8_t)health;
  } else if (seen & BIT(F_TYPE)) {
    out->kind = PROTOCOL_HEALTH;
    out->health.id = id;
    out->health.uptime_s = uptime;
    out->health.battery = (uint32_t)battery;
  } else {
    out->kind = PROTOCOL_READING;
    out->reading.device = 0;
    out->reading.battery = (uint32_t)battery;
    out->reading.seq = (seen & BIT(F_SEQ)) ? seq : READING_SEQ_NONE;
    out->reading.ts_ms = (int64_t)ts;
    out->reading.temperature = temperature;
    out->reading.humidity = humidity;
  }
  return 0;
}

/* ---- line protocol ---- */

/* Scans a name or tag value from p to the first unescaped byte of `stop`
 * (K_LTOK minus what the caller accepts), checking UTF-8. *flags as for
 * JSON strings; a backslash escapes the next byte. */
HOT int line_token(const scan *s, const char *p, int equals_ends, int field, unsigned *flags, const char **next) {
  const char *end = s->end;
  unsigned f = 0;
  for (;;) {
    while (p < end && (CLASS(p) & K_ID)) p++;
    if (p == end) break;
    unsigned char c = (unsigned char)*p;
    if (CLASS(p) & K_LDELIM) break;
    if (c == '=' && equals_ends) break;
    f |= STR_NONID;
    if (c == '\\') {
      f |= STR_ESCAPE;
      p++;
      if (p < end && (unsigned char)*p < 0x80) p++; /* a non-ASCII byte is checked as one */
    } else if (c >= 0x80) {
      size_t k = utf8_seq(p, end);
      if (!k) return fail(s, p, PROTOCOL_NOT_UTF8, field);
      p += k;
    } else {
      p++;
    }
  }
  *flags = f;
  *next = p;
  return 0;
}

static int parse_line(const scan *s, const char *p, protocol_msg *out) {
  const char *end = s->end, *start = p, *q = p;
  unsigned seen = 0, flags = 0;
  uint64_t seq = 0, battery = 0, ns = 0;
  double temperature = 0, humidity = 0;
  int r;

  /* The measurement names the kind of message. */
  if ((size_t)(end - p) > 9 && memcmp(p, "telemetry", 9) == 0 && (CLASS(p + 9) & K_LDELIM)) {
    p += 9;
  } else {
    r = line_token(s, p, 0, F_NONE, &flags, &q);
    if (r) return r;
    if (q == start) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    if (flags || q - start != 9 || memcmp(start, "telemetry", 9) != 0)
      return fail(s, start, PROTOCOL_UNKNOWN_TYPE, F_NONE);
    p = q;
  }

  /* Tags: the device, nothing else. */
  while (p < end && *p == ',') {
    const char *key = ++p;
    int f = name_quick(p, end, '=', &q);
    if (f == F_NONE) {
      r = line_token(s, p, 1, F_NONE, &flags, &q);
      if (r) return r;
      if (q == key || q == end || *q != '=') return fail(s, q, PROTOCOL_MALFORMED, F_NONE);
      f = flags ? F_NONE : field_lookup(key, (size_t)(q - key));
    }
    if (f != F_DEVICE) return fail(s, key, PROTOCOL_UNKNOWN_FIELD, f);
    if (seen & BIT(f)) return fail(s, key, PROTOCOL_DUPLICATE_FIELD, f);
    seen |= BIT(f);
    p = q + 1;
    r = line_token(s, p, 0, f, &flags, &q);
    if (r) return r;
    size_t len = (size_t)(q - p);
    if (flags || len == 0 || len > PROTOCOL_DEVICE_ID_MAX) return fail(s, p, PROTOCOL_BAD_DEVICE_ID, f);
    device_set(&out->device, p, len);
    p = q;
  }
  if (p == end || (*p != ' ' && *p != '\t')) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
  p = skip_blanks(p, end);

  /* Fields. */
  for (;;) {
    const char *key = p;
    int f = name_quick(p, end, '=', &q);
    if (f == F_NONE) {
      r = line_token(s, p, 1, F_NONE, &flags, &q);
      if (r) return r;
      if (q == key || q == end || *q != '=') return fail(s, q, PROTOCOL_MALFORMED, F_NONE);
      f = flags ? F_NONE : field_lookup(key, (size_t)(q - key));
    }
    if (f == F_NONE || !(BIT(f) & LINE_FIELDS)) return fail(s, key, PROTOCOL_UNKNOWN_FIELD, f);
    if (seen & BIT(f)) return fail(s, key, PROTOCOL_DUPLICATE_FIELD, f);
    seen |= BIT(f);
    p = q + 1;
    switch (f) {
    case F_TEMPERATURE:
      r = value_double(s, p, NUM_LINE, PROTOCOL_TEMPERATURE_MIN, PROTOCOL_TEMPERATURE_MAX, f, &temperature, &p);
      break;
    case F_HUMIDITY:
      r = value_double(s, p, NUM_LINE, PROTOCOL_HUMIDITY_MIN, PROTOCOL_HUMIDITY_MAX, f, &humidity, &p);
      break;
    case F_BATTERY: r = value_u64(s, p, NUM_LINE, PROTOCOL_BATTERY_MAX, f, &battery, &p); break;
    default: r = value_u64(s, p, NUM_LINE, PROTOCOL_SEQ_MAX, f, &seq, &p); break;
    }
    if (r) return r;
    if (p < end && *p == ',') {
      p++;
      continue;
    }
    break;
  }

  /* The timestamp, in ts_unit_ns units (nanoseconds unless told). */
  p = skip_blanks(p, end);
  int64_t ts_ms = s->now_ms;
  if (p < end) {
    seen |= BIT(F_TS);
    const char *at = p;
    r = value_u64(s, p, NUM_LINE_TS, INT64_MAX, F_TS, &ns, &p);
    if (r) return r;
    if (ns > (uint64_t)(INT64_MAX / s->ts_unit_ns)) return fail(s, at, PROTOCOL_OUT_OF_RANGE, F_TS);
    ts_ms = s->ts_unit_ns == 1         ? (int64_t)ns / 1000000 /* the common case: a constant divisor */
            : s->ts_unit_ns >= 1000000 ? (int64_t)ns * (s->ts_unit_ns / 1000000)
                                       : (int64_t)ns / (1000000 / s->ts_unit_ns);
    if (ts_ms < PROTOCOL_TS_MS_MIN || ts_ms > PROTOCOL_TS_MS_MAX) return fail(s, at, PROTOCOL_OUT_OF_RANGE, F_TS);
    p = skip_blanks(p, end);
    if (p != end) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
  } else if (s->now_ms >= 0) {
    seen |= BIT(F_TS);
  }
  unsigned want = READING_FIELDS & ~BIT(F_SEQ);
  if (want & ~seen) return fail(s, end, PROTOCOL_MISSING_FIELD, first_by_order(want & ~seen));
  out->kind = PROTOCOL_READING;
  out->format = PROTOCOL_LINE;
  out->reading.device = 0;
  out->reading.battery = (uint32_t)battery;
  out->reading.seq = (seen & BIT(F_SEQ)) ? seq : READING_SEQ_NONE;
  out->reading.ts_ms = ts_ms;
  out->reading.temperature = temperature;
  out->reading.humidity = humidity;
  return 0;
}

/* ---- the entry points ---- */

/* The line's first non-blank byte, after the checks every line gets;
 * NULL with *r set when the line is oversized (r < 0) or blank (r 0). */
static const char *line_start(scan *s, size_t len, size_t max_len, protocol_msg *out, int *r) {
  if (max_len == 0) max_len = PROTOCOL_LINE_MAX_DEFAULT;
  if (len > max_len) {
    s->end = s->line; /* nothing of it is read */
    *r = fail(s, s->line + max_len, PROTOCOL_OVERSIZED, F_NONE);
    return NULL;
  }
  if (len > 0 && s->line[len - 1] == '\r') s->end--;
  const char *p = skip_ws(s->line, s->end);
  if (p == s->end || *p == '#') {
    out->kind = PROTOCOL_BLANK;
    *r = 0;
    return NULL;
  }
  return p;
}

int protocol_parse_line(const char *line, size_t len, size_t max_len, protocol_msg *out, protocol_error *err) {
  scan s = {line, line + len, err, 1, -1};
  int r;
  const char *p = line_start(&s, len, max_len, out, &r);
  if (!p) return r;
  return *p == '{' ? parse_json(&s, p, out) : parse_line(&s, p, out);
}

int protocol_parse_influx(const char *line, size_t len, size_t max_len, protocol_precision precision, int64_t now_ms,
                          protocol_msg *out, protocol_error *err) {
  static const int64_t unit_ns[] = {
      [PROTOCOL_NS] = 1,         [PROTOCOL_US] = 1000,         [PROTOCOL_MS] = 1000000,
      [PROTOCOL_S] = 1000000000, [PROTOCOL_MIN] = 60000000000, [PROTOCOL_H] = 3600000000000};
  scan s = {line, line + len, err, unit_ns[precision], now_ms};
  int r;
  const char *p = line_start(&s, len, max_len, out, &r);
  if (!p) return r;
  if (*p == '{') return fail(&s, p, PROTOCOL_MALFORMED, F_NONE);
  return parse_line(&s, p, out);
}

static const char *const reason_names[PROTOCOL_REASON_COUNT] = {"ok",
#define PROTOCOL_REASON_NAME(code, name, text) name,
                                                                PROTOCOL_REASON_MAP(PROTOCOL_REASON_NAME)
#undef PROTOCOL_REASON_NAME
};

static const char *const reason_texts[PROTOCOL_REASON_COUNT] = {"accepted",
#define PROTOCOL_REASON_TEXT(code, name, text) text,
                                                                PROTOCOL_REASON_MAP(PROTOCOL_REASON_TEXT)
#undef PROTOCOL_REASON_TEXT
};

const char *protocol_reason_name(int reason) {
  if (reason < 0) reason = -reason;
  return reason < PROTOCOL_REASON_COUNT ? reason_names[reason] : "unknown";
}

const char *protocol_reason_text(int reason) {
  if (reason < 0) reason = -reason;
  return reason < PROTOCOL_REASON_COUNT ? reason_texts[reason] : "unknown reason";
}

static int fitted(int n, size_t cap) { return n < 0 || (size_t)n >= cap ? -ENOSPC : n; }

int protocol_format_hello(char *buf, size_t cap, const protocol_hello *h) {
  if (h->token_len)
    return fitted(snprintf(buf, cap, "{\"type\":\"hello\",\"token\":\"%.*s\",\"acks\":%s,\"health\":%s}\n",
                           (int)h->token_len, h->token, h->acks ? "true" : "false", h->health ? "true" : "false"),
                  cap);
  return fitted(snprintf(buf, cap, "{\"type\":\"hello\",\"acks\":%s,\"health\":%s}\n", h->acks ? "true" : "false",
                         h->health ? "true" : "false"),
                cap);
}

int protocol_format_ack(char *buf, size_t cap, const char *device_id, uint64_t seq) {
  return fitted(snprintf(buf, cap, "{\"type\":\"ack\",\"device\":\"%s\",\"seq\":%" PRIu64 "}\n", device_id, seq), cap);
}

int protocol_format_health_request(char *buf, size_t cap, uint64_t id) {
  return fitted(snprintf(buf, cap, "{\"type\":\"health\",\"id\":%" PRIu64 "}\n", id), cap);
}

int protocol_format_error(char *buf, size_t cap, int reason, uint64_t line_no) {
  return fitted(snprintf(buf, cap, "{\"type\":\"error\",\"reason\":\"%s\",\"line\":%" PRIu64 "}\n",
                         protocol_reason_name(reason), line_no),
                cap);
}

int protocol_format_health_reply(char *buf, size_t cap, const protocol_health_reply *h) {
  return fitted(snprintf(buf, cap,
                         "{\"type\":\"health\",\"id\":%" PRIu64 ",\"uptime_s\":%" PRIu64 ",\"battery\":%" PRIu32 "}\n",
                         h->id, h->uptime_s, h->battery),
                cap);
}

/* The fewest significant digits that read back as v. */
static void format_double(char *buf, size_t cap, double v) {
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

int protocol_format_reading(char *buf, size_t cap, protocol_format format, const char *device_id, const reading *r) {
  char t[32], h[32];
  size_t n = strlen(device_id);
  if (n == 0 || n > PROTOCOL_DEVICE_ID_MAX) return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!(cls[(unsigned char)device_id[i]] & K_ID)) return -EINVAL;
  format_double(t, sizeof t, r->temperature);
  format_double(h, sizeof h, r->humidity);
  if (format == PROTOCOL_LINE) {
    if (r->ts_ms < 0 || r->ts_ms > INT64_MAX / 1000000) return -EINVAL;
    return fitted(snprintf(buf, cap,
                           "telemetry,device=%s temperature=%s,humidity=%s,battery=%" PRIu32 "i,seq=%" PRIu64
                           "i %" PRId64 "\n",
                           device_id, t, h, r->battery, r->seq, r->ts_ms * 1000000),
                  cap);
  }
  return fitted(snprintf(buf, cap,
                         "{\"device\":\"%s\",\"seq\":%" PRIu64 ",\"ts\":%" PRId64
                         ",\"temperature\":%s,\"humidity\":%s,\"battery\":%" PRIu32 "}\n",
                         device_id, r->seq, r->ts_ms, t, h, r->battery),
                cap);
}
