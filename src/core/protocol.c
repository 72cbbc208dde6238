/* protocol.c - the device line protocol: one scanner pass per line for
 * JSON objects and InfluxDB line protocol points; see protocol.h. */
#include "protocol.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The names the parser knows: a JSON object's members with a meaning of
 * their own (every other member of a reading is a field), and the fields
 * of health replies and hellos. A bit each in the mask of those seen;
 * missing ones are reported in this order. */
enum field {
  F_DEVICE,
  F_SEQ,
  F_TS,
  F_TYPE,
  F_ID,
  F_UPTIME_S,
  F_BATTERY,
  F_ACKS,
  F_HEALTH,
  F_TOKEN,
  F_MEASUREMENT, /* a JSON reading's measurement */
  F_NAME,        /* Telegraf's: the measurement, beside "fields" */
  F_FIELDS,      /* Telegraf's object of fields */
  F_TAGS,        /* Telegraf's object of tags */
  F_TIMESTAMP,   /* agents' times: seconds to nanoseconds, or ISO 8601 */
  F_DATE,
  F_TIME,
  F_COUNT,
  F_NONE = -1
};

static const char *const field_names[F_COUNT] = {
    "device", "seq",         "ts",   "type",   "id",   "uptime_s",  "battery", "acks", "health",
    "token",  "measurement", "name", "fields", "tags", "timestamp", "date",    "time",
};

#define BIT(f)        (1u << (f))
#define HEALTH_FIELDS (BIT(F_TYPE) | BIT(F_ID) | BIT(F_UPTIME_S) | BIT(F_BATTERY))
/* A hello needs its type; what it asks for is optional. */
#define HELLO_FIELDS  (BIT(F_TYPE) | BIT(F_ACKS) | BIT(F_HEALTH) | BIT(F_TOKEN))
#define TIME_FIELDS   (BIT(F_TS) | BIT(F_TIMESTAMP) | BIT(F_DATE) | BIT(F_TIME))

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
  const char *device_key, *time_key; /* protocol_opts' */
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

/* Past the bytes of the id set from p: names, ids and most of JSON's
 * strings are made of them, so four are looked at per step. */
HOT const char *skip_id(const char *p, const char *end) {
  while (end - p >= 4 && (CLASS(p) & CLASS(p + 1) & CLASS(p + 2) & CLASS(p + 3) & K_ID)) p += 4;
  while (p < end && (CLASS(p) & K_ID)) p++;
  return p;
}

HOT const char *skip_ws(const char *p, const char *end) {
  while (p < end && (CLASS(p) & K_WS)) p++;
  return p;
}

HOT const char *skip_blanks(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  return p;
}

/* The known name k[0 .. n), or F_NONE: one compare, picked by length. */
static int field_lookup(const char *k, size_t n) {
  int f;
  switch (n) {
  case 2: f = k[0] == 't' ? F_TS : F_ID; break;
  case 3: f = F_SEQ; break;
  case 4:
    f = k[0] == 't'   ? (k[1] == 'y'   ? F_TYPE
                         : k[1] == 'a' ? F_TAGS
                                       : F_TIME)
        : k[0] == 'a' ? F_ACKS
        : k[0] == 'n' ? F_NAME
                      : F_DATE;
    break;
  case 5: f = F_TOKEN; break;
  case 6: f = k[0] == 'd' ? F_DEVICE : k[0] == 'h' ? F_HEALTH : F_FIELDS; break;
  case 7: f = F_BATTERY; break;
  case 8: f = F_UPTIME_S; break;
  case 9: f = F_TIMESTAMP; break;
  case 11: f = F_MEASUREMENT; break;
  default: return F_NONE;
  }
  return memcmp(k, field_names[f], n) == 0 ? f : F_NONE;
}

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
/* Eight ASCII digits at p as their number, or -1 when they are not all
 * digits: one load, no loop (timestamps have 13 to 19 digits). */
HOT int64_t eight_digits(const char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  if ((v & 0xF0F0F0F0F0F0F0F0u) != 0x3030303030303030u ||
      ((v + 0x0606060606060606u) & 0xF0F0F0F0F0F0F0F0u) != 0x3030303030303030u)
    return -1;
  v -= 0x3030303030303030u;
  if (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__) v = __builtin_bswap64(v);
  v = v * 10 + (v >> 8); /* pairs of digits */
  v = ((v & 0x000000FF000000FFu) * (100 + (UINT64_C(1000000) << 32)) +
       ((v >> 16) & 0x000000FF000000FFu) * (1 + (UINT64_C(10000) << 32))) >>
      32;
  return (int64_t)v;
}

HOT const char *number_quick(const char *p, const char *end, int mode, uint64_t *mant, unsigned *nfrac, int *neg) {
  const char *digits;
  uint64_t m = 0;
  size_t nint, nf = 0;
  int64_t eight;
  *neg = p < end && *p == '-';
  p += *neg;
  for (digits = p; end - p >= 8 && (eight = eight_digits(p)) >= 0; p += 8) m = m * 100000000 + (uint64_t)eight;
  for (; p < end && (unsigned)(*p - '0') <= 9; p++) m = m * 10 + (unsigned)(*p - '0');
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
    p = skip_id(p, end);
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

/* ---- field values ---- */

/* A signed integer's value: 0, -PROTOCOL_BAD_NUMBER for a fraction or an
 * exponent, -PROTOCOL_OUT_OF_RANGE for NaN, infinity or a value past
 * 64 bits signed. */
static int number_i64(const scan *s, const number *n, int field, int64_t *out) {
  if (n->special) return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
  if (!n->is_int) return fail(s, n->start, PROTOCOL_BAD_NUMBER, field);
  if (n->int_digits > 19 || n->mant > (uint64_t)INT64_MAX + n->neg)
    return fail(s, n->start, PROTOCOL_OUT_OF_RANGE, field);
  *out = n->neg ? (int64_t)(0 - n->mant) : (int64_t)n->mant;
  return 0;
}

/* A number's value as a float: finite, or -PROTOCOL_OUT_OF_RANGE. */
static int number_float(const scan *s, const number *n, double *out) {
  return number_double(s, n, -DBL_MAX, DBL_MAX, F_NONE, out);
}

/* A line-protocol boolean at p (t, T, true, True, TRUE and the same of
 * false) that ends at a delimiter: its length, with *v set; 0 when p is
 * none. */
static size_t line_bool(const char *p, const char *end, int *v) {
  static const char *const words[] = {"true", "True", "TRUE", "t", "T", "false", "False", "FALSE", "f", "F"};
  for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(end - p) >= n && memcmp(p, words[i], n) == 0 && (p + n == end || (CLASS(p + n) & K_LDELIM))) {
      *v = i < 5;
      return n;
    }
  }
  return 0;
}

/* A line-protocol string field at p (its opening quote): up to the next
 * '"' not escaped by a backslash, which escapes only '"' and '\\'. */
static int line_string(const scan *s, const char *p, protocol_field *f, const char **next) {
  const char *end = s->end, *body = ++p;
  for (;;) {
    if (p == end) return fail(s, p, PROTOCOL_MALFORMED, F_NONE); /* unterminated */
    unsigned char c = (unsigned char)*p;
    if (c == '"') break;
    if (c == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\')) {
      f->escaped |= PROTOCOL_ESC_STR;
      p += 2;
    } else if (c >= 0x80) {
      size_t k = utf8_seq(p, end);
      if (!k) return fail(s, p, PROTOCOL_NOT_UTF8, F_NONE);
      p += k;
    } else {
      p++;
    }
  }
  if (p + 1 < end && !(CLASS(p + 1) & K_LDELIM)) return fail(s, p + 1, PROTOCOL_MALFORMED, F_NONE);
  f->type = FIELD_STRING;
  f->str = body;
  f->str_len = (uint32_t)(p - body);
  *next = p + 1;
  return 0;
}

/* The float of a number number_quick took, into f when its digits
 * convert exactly (one rounding of exact operands): 1, else 0. */
HOT int quick_float(uint64_t m, unsigned nf, int neg, protocol_field *f) {
#if FLT_EVAL_METHOD == 0
  if (m <= (UINT64_C(1) << 53)) {
    double v = nf ? (double)m / pow10_exact[nf] : (double)m;
    f->type = FIELD_FLOAT;
    f->v.f = neg ? -v : v;
    return 1;
  }
#endif
  (void)m, (void)nf, (void)neg, (void)f;
  return 0;
}

/* A line-protocol field's value at p into f: a float (1.5, 1, -2e3), an
 * integer (1i, 1u), a string ("on") or a boolean (t, false, ...). */
HOT int line_value(const scan *s, const char *p, protocol_field *f, const char **next) {
  const char *end = s->end;
  if (p == end || (CLASS(p) & K_LDELIM)) return fail(s, p, PROTOCOL_BAD_NUMBER, F_NONE);
  if (*p == '"') return line_string(s, p, f, next);
  int b;
  size_t n = (*p | 0x20) == 't' || (*p | 0x20) == 'f' ? line_bool(p, end, &b) : 0;
  if (n) {
    f->type = FIELD_BOOL;
    f->v.i = b;
    *next = p + n;
    return 0;
  }
  uint64_t m;
  unsigned nf;
  int neg;
  const char *q = number_quick(p, end, NUM_LINE, &m, &nf, &neg);
  if (q && (q[-1] == 'i' || q[-1] == 'u')) {
    if (q[-1] == 'u' && neg) return fail(s, p, PROTOCOL_BAD_NUMBER, F_NONE);
    if (m > (uint64_t)INT64_MAX + (uint64_t)neg) return fail(s, p, PROTOCOL_OUT_OF_RANGE, F_NONE);
    f->type = FIELD_INT;
    f->v.i = neg ? (int64_t)(0 - m) : (int64_t)m;
    *next = q;
    return 0;
  }
  if (q && quick_float(m, nf, neg, f)) {
    *next = q;
    return 0;
  }
  number num;
  int r = number_scan(s, p, NUM_LINE, F_NONE, &num);
  if (r) return r;
  *next = num.stop;
  if (num.is_int && (num.stop[-1] == 'i' || num.stop[-1] == 'u')) {
    if (num.stop[-1] == 'u' && num.neg) return fail(s, p, PROTOCOL_BAD_NUMBER, F_NONE);
    f->type = FIELD_INT;
    return number_i64(s, &num, F_NONE, &f->v.i);
  }
  f->type = FIELD_FLOAT;
  return number_float(s, &num, &f->v.f);
}

/* A JSON value of a reading's field at p into f. A whole number is
 * FIELD_INT (schema_pack decides what it becomes), any other number
 * FIELD_FLOAT. Returns 0, 1 for null (no value: the field is left out),
 * or the reason. */
static int json_value(const scan *s, const char *p, protocol_field *f, const char **next) {
  const char *end = s->end;
  if (*p == '"') {
    const char *body = NULL;
    size_t n = 0;
    unsigned flags = 0;
    int r = json_string(s, p, F_NONE, &body, &n, &flags, next);
    if (r) return r;
    f->type = FIELD_STRING;
    f->str = body;
    f->str_len = (uint32_t)n;
    if (flags & STR_ESCAPE) f->escaped |= PROTOCOL_ESC_STR;
    return 0;
  }
  if (*p == 't' || *p == 'f') {
    int b = 0;
    int r = json_bool(s, p, F_NONE, &b, next);
    if (r) return r;
    f->type = FIELD_BOOL;
    f->v.i = b;
    return 0;
  }
  if ((size_t)(end - p) >= 4 && memcmp(p, "null", 4) == 0 && (p + 4 == end || (CLASS(p + 4) & K_JDELIM))) {
    *next = p + 4;
    return 1;
  }
  if (*p == '{' || *p == '[') return fail(s, p, PROTOCOL_WRONG_TYPE, F_NONE);
  uint64_t m;
  unsigned nf;
  int neg;
  const char *q = number_quick(p, end, NUM_JSON, &m, &nf, &neg);
  if (q && nf == 0 && m <= (uint64_t)INT64_MAX) {
    f->type = FIELD_INT;
    f->v.i = neg ? -(int64_t)m : (int64_t)m;
    *next = q;
    return 0;
  }
  if (q && quick_float(m, nf, neg, f)) {
    *next = q;
    return 0;
  }
  number num;
  int r = number_scan(s, p, NUM_JSON, F_NONE, &num);
  if (r) return r;
  *next = num.stop;
  if (num.is_int && !num.special && num.int_digits <= 19 && num.mant <= (uint64_t)INT64_MAX + num.neg) {
    f->type = FIELD_INT;
    return number_i64(s, &num, F_NONE, &f->v.i);
  }
  f->type = FIELD_FLOAT; /* a whole number past 64 bits too: JSON's numbers are not typed */
  return number_float(s, &num, &f->v.f);
}

/* ---- times ---- */

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

/* n digits at p as a number, or -1. */
static int64_t digits_at(const char *p, const char *end, int n) {
  int64_t v = 0;
  if (end - p < n) return -1;
  for (int i = 0; i < n; i++) {
    if ((unsigned)(p[i] - '0') > 9) return -1;
    v = v * 10 + (p[i] - '0');
  }
  return v;
}

/* An ISO 8601 / RFC 3339 time, YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|+HH:MM],
 * in [p, end) (no zone: UTC), as Unix milliseconds; -1 when it is not one. */
static int64_t iso8601_ms(const char *p, const char *end) {
  int64_t y = digits_at(p, end, 4), mo = digits_at(p + 5, end, 2), d = digits_at(p + 8, end, 2);
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || p[4] != '-' || p[7] != '-') return -1;
  if (end - p < 19 || (p[10] != 'T' && p[10] != 't' && p[10] != ' ') || p[13] != ':' || p[16] != ':') return -1;
  int64_t h = digits_at(p + 11, end, 2), mi = digits_at(p + 14, end, 2), sec = digits_at(p + 17, end, 2);
  if (h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60) return -1;
  int64_t ms = ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 24 + h) * 60 + mi) * 60000 + sec * 1000;
  p += 19;
  if (p < end && (*p == '.' || *p == ',')) {
    int64_t scale = 100;
    if (++p == end || (unsigned)(*p - '0') > 9) return -1;
    for (; p < end && (unsigned)(*p - '0') <= 9; p++, scale /= 10) ms += (*p - '0') * scale;
  }
  if (p < end && (*p == 'Z' || *p == 'z')) {
    p++;
  } else if (p < end && (*p == '+' || *p == '-')) {
    int64_t zh = digits_at(p + 1, end, 2), zm = p + 3 < end && p[3] == ':' ? digits_at(p + 4, end, 2) : -1;
    if (zh < 0 || zh > 23 || zm < 0 || zm > 59) return -1;
    int64_t off = (zh * 60 + zm) * 60000;
    ms += *p == '+' ? -off : off;
    p += 6;
  }
  return p == end ? ms : -1;
}

/* An agent's time at p ("timestamp", "date", "time"): a number of
 * seconds, milliseconds, microseconds or nanoseconds since 1970 - told
 * apart by size, since a time after 2000 in one unit is below 2000 in the
 * next (seconds < 1e11 <= milliseconds < 1e14 <= microseconds < 1e17) -
 * or an ISO 8601 string. */
static int json_time(const scan *s, const char *p, int field, int64_t *ts_ms, const char **next) {
  int64_t ms;
  if (*p == '"') {
    const char *body = NULL;
    size_t n = 0;
    unsigned flags = 0;
    int r = json_string(s, p, field, &body, &n, &flags, next);
    if (r) return r;
    if (flags & STR_ESCAPE || (ms = iso8601_ms(body, body + n)) < 0) return fail(s, p, PROTOCOL_BAD_NUMBER, field);
  } else {
    if (json_literal(p, s->end)) return fail(s, p, PROTOCOL_WRONG_TYPE, field);
    number num;
    int r = number_scan(s, p, NUM_JSON, field, &num);
    if (r) return r;
    *next = num.stop;
    double v;
    if ((r = number_double(s, &num, 0, 9.3e18, field, &v)) != 0) return r;
    if (num.is_int && num.int_digits <= 19) { /* exact: nanoseconds do not fit a double */
      uint64_t u;
      if ((r = number_u64(s, &num, INT64_MAX, field, &u)) != 0) return r;
      ms = u < UINT64_C(100000000000)         ? (int64_t)u * 1000
           : u < UINT64_C(100000000000000)    ? (int64_t)u
           : u < UINT64_C(100000000000000000) ? (int64_t)(u / 1000)
                                              : (int64_t)(u / 1000000);
    } else {
      ms = (int64_t)(v < 1e11 ? v * 1000 : v < 1e14 ? v : v < 1e17 ? v / 1e3 : v / 1e6);
    }
  }
  if (ms < PROTOCOL_TS_MS_MIN || ms > PROTOCOL_TS_MS_MAX) return fail(s, p, PROTOCOL_OUT_OF_RANGE, field);
  *ts_ms = ms;
  return 0;
}

/* ---- readings ---- */

/* The next free field of the point, or NULL (too many, reported). */
static protocol_field *field_add(const scan *s, protocol_point *pt, const char *at) {
  if (pt->nfields == PROTOCOL_FIELDS_MAX) {
    fail(s, at, PROTOCOL_TOO_MANY_FIELDS, F_NONE);
    return NULL;
  }
  protocol_field *f = &pt->fields[pt->nfields];
  f->escaped = 0;
  return f;
}

/* The members of a JSON object at p (its '{') as fields of the point:
 * Telegraf's "fields" (any values) or "tags" (strings). *next past its
 * '}'. */
static int json_object_fields(const scan *s, const char *p, int tags, protocol_point *pt, const char **next) {
  const char *end = s->end;
  int r;
  p = skip_ws(p + 1, end);
  if (p < end && *p == '}') {
    *next = p + 1;
    return 0;
  }
  for (;;) {
    const char *key = p, *body = NULL;
    size_t klen = 0;
    unsigned flags = 0;
    if (p == end || *p != '"') return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    if ((r = json_string(s, p, F_NONE, &body, &klen, &flags, &p)) != 0) return r;
    p = skip_ws(p, end);
    if (p == end || *p != ':') return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    p = skip_ws(p + 1, end);
    if (p == end) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    protocol_field *f = field_add(s, pt, key);
    if (!f) return -PROTOCOL_TOO_MANY_FIELDS;
    if (tags && *p != '"') return fail(s, p, PROTOCOL_WRONG_TYPE, F_TAGS);
    if ((r = json_value(s, p, f, &p)) < 0) return r;
    if (r == 0) {
      f->name = body;
      f->name_len = (uint16_t)(klen > UINT16_MAX ? UINT16_MAX : klen);
      if (flags & STR_ESCAPE) f->escaped |= PROTOCOL_ESC_NAME;
      if (tags) f->type = FIELD_TAG;
      pt->nfields++;
    }
    p = skip_ws(p, end);
    if (p < end && *p == ',') {
      p = skip_ws(p + 1, end);
      continue;
    }
    if (p < end && *p == '}') {
      *next = p + 1;
      return 0;
    }
    return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
  }
}

/* The field of the point named `name` (of type `type`, or any when 0),
 * taken out of its fields; NULL when there is none. */
static int field_take(protocol_point *pt, const char *name, int type, protocol_field *out) {
  size_t n = strlen(name);
  for (uint32_t i = 0; i < pt->nfields; i++) {
    protocol_field *f = &pt->fields[i];
    if (f->name_len != n || memcmp(f->name, name, n) != 0 || (f->escaped & PROTOCOL_ESC_NAME)) continue;
    if (type && f->type != type) continue;
    *out = *f;
    memmove(f, f + 1, (pt->nfields - i - 1) * sizeof *f);
    pt->nfields--;
    return 1;
  }
  return 0;
}

/* The device of a reading that names none itself: its tag "device", else
 * its tag "host" (Telegraf's), taken out of its fields. 0, or the
 * reason. */
static int device_from_tags(const scan *s, protocol_point *pt, protocol_device_id *d) {
  protocol_field f;
  if (!field_take(pt, "device", FIELD_TAG, &f) && !field_take(pt, "host", FIELD_TAG, &f))
    return fail(s, s->end, PROTOCOL_MISSING_FIELD, F_DEVICE);
  if ((f.escaped & PROTOCOL_ESC_STR) || f.str_len == 0 || f.str_len > PROTOCOL_DEVICE_ID_MAX)
    return fail(s, f.str, PROTOCOL_BAD_DEVICE_ID, F_DEVICE);
  for (uint32_t i = 0; i < f.str_len; i++)
    if (!(CLASS(f.str + i) & K_ID)) return fail(s, f.str + i, PROTOCOL_BAD_DEVICE_ID, F_DEVICE);
  device_set(d, f.str, f.str_len);
  return 0;
}

/* A reading has a value besides its tags: 0, or -PROTOCOL_MISSING_FIELD. */
static int has_values(const scan *s, const protocol_point *pt) {
  for (uint32_t i = 0; i < pt->nfields; i++)
    if (pt->fields[i].type != FIELD_TAG) return 0;
  return fail(s, s->end, PROTOCOL_MISSING_FIELD, F_NONE);
}

/* A health reply's or a hello's field, taken out of the point's fields
 * (where the scan put it, not knowing the message's type yet). */
static int known_u64(const scan *s, protocol_point *pt, int field, uint64_t *out) {
  protocol_field f;
  if (!field_take(pt, field_names[field], 0, &f)) return fail(s, s->end, PROTOCOL_MISSING_FIELD, field);
  if (f.type == FIELD_STRING || f.type == FIELD_BOOL) return fail(s, f.name, PROTOCOL_WRONG_TYPE, field);
  if (f.type == FIELD_FLOAT) { /* a fraction, or a whole number past 2^63 - 1: its text says which */
    const char *colon = skip_ws(f.name + f.name_len + 1, s->end), *next;
    return value_u64(s, skip_ws(colon + 1, s->end), NUM_JSON, UINT64_MAX, field, out, &next);
  }
  if (f.v.i < 0) return fail(s, f.name, PROTOCOL_OUT_OF_RANGE, field);
  *out = (uint64_t)f.v.i;
  return 0;
}

static int known_bool(const scan *s, protocol_point *pt, int field, uint8_t *out) {
  protocol_field f;
  *out = 0;
  if (!field_take(pt, field_names[field], 0, &f)) return 0;
  if (f.type != FIELD_BOOL) return fail(s, f.name, PROTOCOL_WRONG_TYPE, field);
  *out = (uint8_t)f.v.i;
  return 0;
}

/* A health reply or a hello: its own fields and nothing else. */
static int json_control(const scan *s, unsigned seen, const uint32_t *at, int hello, protocol_msg *out) {
  protocol_point *pt = &out->point;
  unsigned allowed = hello ? HELLO_FIELDS : HEALTH_FIELDS;
  for (int f = 0; f < F_COUNT; f++)
    if ((seen & BIT(f)) && !(allowed & BIT(f))) return fail(s, s->line + at[f], PROTOCOL_UNKNOWN_FIELD, f);
  int r;
  if (hello) {
    out->kind = PROTOCOL_HELLO;
    if ((r = known_bool(s, pt, F_ACKS, &out->hello.acks)) || (r = known_bool(s, pt, F_HEALTH, &out->hello.health)))
      return r;
  } else {
    uint64_t battery = 0;
    out->kind = PROTOCOL_HEALTH;
    if ((r = known_u64(s, pt, F_ID, &out->health.id)) || (r = known_u64(s, pt, F_UPTIME_S, &out->health.uptime_s)) ||
        (r = known_u64(s, pt, F_BATTERY, &battery)))
      return r;
    if (battery > 100) return fail(s, s->end, PROTOCOL_OUT_OF_RANGE, F_BATTERY); /* percent */
    out->health.battery = (uint32_t)battery;
  }
  if (pt->nfields) {
    int f = field_lookup(pt->fields[0].name, pt->fields[0].name_len);
    return fail(s, pt->fields[0].name, PROTOCOL_UNKNOWN_FIELD, f);
  }
  return 0;
}

/* A member the scan set aside ("type", "name") that turned out to be a
 * field of the reading: its key's opening quote at key, its string value
 * at v. */
static int json_member_field(const scan *s, protocol_point *pt, int field, const char *key, const char *v) {
  protocol_field *fv = field_add(s, pt, v);
  if (!fv) return -PROTOCOL_TOO_MANY_FIELDS;
  const char *next;
  int r = json_value(s, v, fv, &next);
  if (r) return r;
  fv->name = key + 1; /* written without escapes, or it would not have been set aside */
  fv->name_len = (uint16_t)strlen(field_names[field]);
  pt->nfields++;
  return 0;
}

/* A member named as the settings name the device or the time: F_DEVICE,
 * F_TIMESTAMP (a time of any unit, or ISO 8601), or F_NONE. */
static int custom_key(const scan *s, const char *k, size_t n) {
  if (s->device_key && strlen(s->device_key) == n && memcmp(k, s->device_key, n) == 0) return F_DEVICE;
  if (s->time_key && strlen(s->time_key) == n && memcmp(k, s->time_key, n) == 0) return F_TIMESTAMP;
  return F_NONE;
}

static int parse_json(const scan *s, const char *p, protocol_msg *out) {
  const char *end = s->end;
  protocol_point *pt = &out->point;
  unsigned seen = 0;
  uint32_t at[F_COUNT];
  const char *value_at[F_COUNT];
  int r, has_fields = 0;
  out->hello.token_len = 0;
  out->hello.token[0] = 0;
  pt->measurement = NULL;
  pt->measurement_escaped = 0;
  pt->json = 1;
  pt->nfields = 0;
  pt->seq = READING_SEQ_NONE;
  pt->ts_ms = -1;

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
    if ((r = json_string(s, key, F_NONE, &body, &klen, &flags, &p)) != 0) return r;
    int f = (flags & STR_ESCAPE) ? F_NONE : field_lookup(body, klen);
    if (f == F_NONE && !(flags & STR_ESCAPE)) f = custom_key(s, body, klen);
    p = skip_ws(p, end);
    if (p == end || *p != ':') return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    p = skip_ws(p + 1, end);
    if (p == end) return fail(s, p, PROTOCOL_MALFORMED, f);
    /* The health reply's and the hello's own fields go with the others
     * until the type says what the object is. */
    if (f == F_ID || f == F_UPTIME_S || f == F_BATTERY || f == F_ACKS || f == F_HEALTH) f = F_NONE;
    if (f != F_NONE) {
      if (seen & BIT(f)) return fail(s, key, PROTOCOL_DUPLICATE_FIELD, f);
      if ((TIME_FIELDS & BIT(f)) && (seen & TIME_FIELDS)) return fail(s, key, PROTOCOL_DUPLICATE_FIELD, F_TS);
      seen |= BIT(f);
      at[f] = (uint32_t)(key - s->line);
    }
    switch (f) {
    case F_DEVICE: r = json_device(s, p, &out->device, &p); break;
    case F_SEQ: r = value_u64(s, p, NUM_JSON, PROTOCOL_SEQ_MAX, f, &pt->seq, &p); break;
    case F_TS: {
      uint64_t ts = 0;
      const char *v = p;
      if ((r = value_u64(s, p, NUM_JSON, PROTOCOL_TS_MS_MAX, f, &ts, &p)) == 0 && ts < PROTOCOL_TS_MS_MIN)
        r = fail(s, v, PROTOCOL_OUT_OF_RANGE, f);
      pt->ts_ms = (int64_t)ts;
      break;
    }
    case F_TIMESTAMP:
    case F_DATE:
    case F_TIME: r = json_time(s, p, f, &pt->ts_ms, &p); break;
    case F_TOKEN: r = json_token(s, p, &out->hello, &p); break;
    case F_FIELDS:
    case F_TAGS:
      if (*p != '{') return fail(s, p, PROTOCOL_WRONG_TYPE, f);
      r = json_object_fields(s, p, f == F_TAGS, pt, &p);
      has_fields |= f == F_FIELDS;
      break;
    case F_TYPE:
    case F_MEASUREMENT:
    case F_NAME: /* strings read again once the whole object is known */
      if (*p != '"') return fail(s, p, PROTOCOL_WRONG_TYPE, f);
      value_at[f] = p;
      r = json_string(s, p, f, &body, &klen, &flags, &p);
      break;
    default: {
      protocol_field *fv = field_add(s, pt, key);
      if (!fv) return -PROTOCOL_TOO_MANY_FIELDS;
      if ((r = json_value(s, p, fv, &p)) == 1) {
        r = 0; /* null: no value */
      } else if (r == 0) {
        fv->name = body;
        fv->name_len = (uint16_t)(klen > UINT16_MAX ? UINT16_MAX : klen);
        if (flags & STR_ESCAPE) fv->escaped |= PROTOCOL_ESC_NAME;
        pt->nfields++;
      }
      break;
    }
    }
    if (r) return r;
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
  out->format = PROTOCOL_JSON;

  const char *body = NULL, *stop;
  size_t blen = 0;
  unsigned flags = 0;
  if (seen & BIT(F_TYPE)) {
    json_string(s, value_at[F_TYPE], F_TYPE, &body, &blen, &flags, &stop);
    int hello = !flags && blen == 5 && memcmp(body, "hello", 5) == 0;
    if (hello || (!flags && blen == 6 && memcmp(body, "health", 6) == 0)) return json_control(s, seen, at, hello, out);
    if ((r = json_member_field(s, pt, F_TYPE, s->line + at[F_TYPE], value_at[F_TYPE])) != 0)
      return r; /* any other type: a field */
  }
  if (seen & BIT(F_TOKEN)) return fail(s, s->line + at[F_TOKEN], PROTOCOL_UNKNOWN_FIELD, F_TOKEN);
  /* "name" is the measurement beside Telegraf's "fields"; elsewhere a field. */
  int m = (seen & BIT(F_MEASUREMENT)) ? F_MEASUREMENT : has_fields && (seen & BIT(F_NAME)) ? F_NAME : F_NONE;
  if ((seen & BIT(F_NAME)) && m != F_NAME &&
      (r = json_member_field(s, pt, F_NAME, s->line + at[F_NAME], value_at[F_NAME])) != 0)
    return r;
  if (m != F_NONE) {
    json_string(s, value_at[m], m, &body, &blen, &flags, &stop);
    if (blen == 0) return fail(s, value_at[m], PROTOCOL_BAD_NAME, m);
    pt->measurement_escaped = (flags & STR_ESCAPE) != 0; /* decoded by the schema, as field names are */
    pt->measurement = body;
    pt->measurement_len = (uint16_t)(blen > UINT16_MAX ? UINT16_MAX : blen);
  }
  if (!(seen & BIT(F_DEVICE)) && (r = device_from_tags(s, pt, &out->device)) != 0) return r;
  if (pt->ts_ms < 0) {
    if (s->now_ms < 0) return fail(s, end, PROTOCOL_MISSING_FIELD, F_TS);
    pt->ts_ms = s->now_ms;
  }
  out->kind = PROTOCOL_READING;
  return has_values(s, pt);
}

/* ---- line protocol ---- */

/* Scans a name or tag value from p to the first unescaped byte of `stop`
 * (K_LTOK minus what the caller accepts), checking UTF-8. *flags as for
 * JSON strings; a backslash escapes the next byte. */
HOT int line_token(const scan *s, const char *p, int equals_ends, int field, unsigned *flags, const char **next) {
  const char *end = s->end;
  unsigned f = 0;
  for (;;) {
    p = skip_id(p, end);
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
  const char *end = s->end, *q = p;
  protocol_point *pt = &out->point;
  unsigned flags = 0;
  int r, has_seq = 0;
  pt->json = 0;
  pt->nfields = 0;
  pt->seq = READING_SEQ_NONE;

  r = line_token(s, p, 0, F_NONE, &flags, &q);
  if (r) return r;
  if (q == p) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
  pt->measurement = p;
  pt->measurement_len = (uint16_t)(q - p > UINT16_MAX ? UINT16_MAX : q - p);
  pt->measurement_escaped = (flags & STR_ESCAPE) != 0;
  p = q;

  /* Tags; the device is one of them. */
  int has_device = 0;
  while (p < end && *p == ',') {
    const char *key = ++p;
    unsigned vflags = 0;
    r = line_token(s, p, 1, F_NONE, &flags, &q);
    if (r) return r;
    if (q == key || q == end || *q != '=') return fail(s, q, PROTOCOL_MALFORMED, F_NONE);
    p = q + 1;
    if (!flags && q - key == 6 && key[0] == 'd' && memcmp(key, "device", 6) == 0) {
      if (has_device) return fail(s, key, PROTOCOL_DUPLICATE_FIELD, F_DEVICE);
      has_device = 1;
      r = line_token(s, p, 0, F_DEVICE, &vflags, &q);
      if (r) return r;
      size_t len = (size_t)(q - p);
      if (vflags || len == 0 || len > PROTOCOL_DEVICE_ID_MAX) return fail(s, p, PROTOCOL_BAD_DEVICE_ID, F_DEVICE);
      device_set(&out->device, p, len);
      p = q;
      continue;
    }
    protocol_field *f = field_add(s, pt, key);
    if (!f) return -PROTOCOL_TOO_MANY_FIELDS;
    f->name = key;
    f->name_len = (uint16_t)(q - key > UINT16_MAX ? UINT16_MAX : q - key);
    if (flags & STR_ESCAPE) f->escaped |= PROTOCOL_ESC_NAME;
    r = line_token(s, p, 0, F_NONE, &vflags, &q);
    if (r) return r;
    if (q == p) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
    f->type = FIELD_TAG;
    f->str = p;
    f->str_len = (uint32_t)(q - p);
    if (vflags & STR_ESCAPE) f->escaped |= PROTOCOL_ESC_STR;
    pt->nfields++;
    p = q;
  }
  if (p == end || (*p != ' ' && *p != '\t')) return fail(s, p, PROTOCOL_MALFORMED, F_NONE);
  p = skip_blanks(p, end);

  /* Fields; "seq" is the reading's own. */
  for (;;) {
    const char *key = p;
    r = line_token(s, p, 1, F_NONE, &flags, &q);
    if (r) return r;
    if (q == key || q == end || *q != '=') return fail(s, q, PROTOCOL_MALFORMED, F_NONE);
    p = q + 1;
    if (!flags && q - key == 3 && key[0] == 's' && key[1] == 'e' && key[2] == 'q') {
      if (has_seq) return fail(s, key, PROTOCOL_DUPLICATE_FIELD, F_SEQ);
      has_seq = 1;
      r = value_u64(s, p, NUM_LINE, PROTOCOL_SEQ_MAX, F_SEQ, &pt->seq, &p);
    } else {
      protocol_field *f = field_add(s, pt, key);
      if (!f) return -PROTOCOL_TOO_MANY_FIELDS;
      f->name = key;
      f->name_len = (uint16_t)(q - key > UINT16_MAX ? UINT16_MAX : q - key);
      if (flags & STR_ESCAPE) f->escaped |= PROTOCOL_ESC_NAME;
      if ((r = line_value(s, p, f, &p)) == 0) pt->nfields++;
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
    uint64_t ns;
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
  } else if (ts_ms < 0) {
    return fail(s, end, PROTOCOL_MISSING_FIELD, F_TS);
  }
  if (!has_device && (r = device_from_tags(s, pt, &out->device)) != 0) return r;
  pt->ts_ms = ts_ms;
  out->kind = PROTOCOL_READING;
  out->format = PROTOCOL_LINE;
  return has_values(s, pt);
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

int protocol_parse(const char *line, size_t len, const protocol_opts *o, protocol_msg *out, protocol_error *err) {
  scan s = {line, line + len, err, 1, o->now_ms, o->device_key, o->time_key};
  int r;
  const char *p = line_start(&s, len, o->max_len, out, &r);
  if (!p) return r;
  if (*p == '{') return parse_json(&s, p, out);
  return o->json_only ? fail(&s, p, PROTOCOL_MALFORMED, F_NONE) : parse_line(&s, p, out);
}

int protocol_parse_line(const char *line, size_t len, size_t max_len, protocol_msg *out, protocol_error *err) {
  scan s = {line, line + len, err, 1, -1, NULL, NULL};
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
  scan s = {line, line + len, err, unit_ns[precision], now_ms, NULL, NULL};
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

int protocol_format_reading(char *buf, size_t cap, protocol_format format, const char *device_id,
                            const protocol_telemetry *r) {
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

size_t protocol_unescape(const char *s, size_t n, int json, char *out) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '\\' || i + 1 == n) {
      out[k++] = s[i];
      continue;
    }
    char c = s[++i];
    if (!json) {
      /* line protocol: a backslash escapes a blank, ',', '=', '"' or itself;
       * before any other byte it is plain, as InfluxDB reads C:\Users */
      if (!memchr(" \t,=\"\\", c, 6)) out[k++] = '\\';
      out[k++] = c;
      continue;
    }
    if (c != 'u') {
      out[k++] = c == 'b' ? '\b' : c == 'f' ? '\f' : c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
      continue;
    }
    /* \uXXXX, and a surrogate pair's second half; the scan checked the digits */
    unsigned cp = (unsigned)strtoul((char[5]){s[i + 1], s[i + 2], s[i + 3], s[i + 4], 0}, NULL, 16);
    i += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 < n && s[i + 1] == '\\' && s[i + 2] == 'u') {
      unsigned lo = (unsigned)strtoul((char[5]){s[i + 3], s[i + 4], s[i + 5], s[i + 6], 0}, NULL, 16);
      if (lo >= 0xDC00 && lo <= 0xDFFF) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        i += 6;
      }
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate is no character */
    if (cp < 0x80) {
      out[k++] = (char)cp;
    } else if (cp < 0x800) {
      out[k++] = (char)(0xC0 | cp >> 6);
      out[k++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out[k++] = (char)(0xE0 | cp >> 12);
      out[k++] = (char)(0x80 | (cp >> 6 & 0x3F));
      out[k++] = (char)(0x80 | (cp & 0x3F));
    } else {
      out[k++] = (char)(0xF0 | cp >> 18);
      out[k++] = (char)(0x80 | (cp >> 12 & 0x3F));
      out[k++] = (char)(0x80 | (cp >> 6 & 0x3F));
      out[k++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  return k;
}
