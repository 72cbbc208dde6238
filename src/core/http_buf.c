/* http_buf.c - a growable byte buffer; see http_buf.h. */
#include "http_buf.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void http_buf_free(http_buf *b) {
  free(b->data);
  *b = (http_buf){0};
}

void http_buf_reset(http_buf *b) {
  b->len = 0;
  b->failed = 0;
  if (b->data) b->data[0] = '\0';
}

/* Makes room for n more bytes and the NUL. */
static int reserve(http_buf *b, size_t n) {
  if (b->failed) return -1;
  if (n > SIZE_MAX / 2 - b->len) {
    b->failed = 1;
    return -1;
  }
  size_t need = b->len + n + 1;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    b->failed = 1;
    return -1;
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

void http_buf_reserve(http_buf *b, size_t n) { reserve(b, n); }

void http_buf_append(http_buf *b, const void *p, size_t n) {
  if (reserve(b, n) != 0) return;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void http_buf_puts(http_buf *b, const char *s) { http_buf_append(b, s, strlen(s)); }

void http_buf_printf(http_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = 1;
    return;
  }
  if ((size_t)n < sizeof small) {
    http_buf_append(b, small, (size_t)n);
    return;
  }
  if (reserve(b, (size_t)n) != 0) return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void http_buf_u64(http_buf *b, uint64_t v) {
  char d[24];
  int i = (int)sizeof d;
  do {
    d[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  http_buf_append(b, d + i, sizeof d - (size_t)i);
}

void http_buf_i64(http_buf *b, int64_t v) {
  if (v < 0) {
    http_buf_append(b, "-", 1);
    http_buf_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    http_buf_u64(b, (uint64_t)v);
  }
}

void http_buf_json_string(http_buf *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  http_buf_append(b, "\"", 1);
  const char *run = s;
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
    http_buf_append(b, run, (size_t)(s - run));
    run = s + 1;
    switch (ch) {
    case '"': http_buf_append(b, "\\\"", 2); break;
    case '\\': http_buf_append(b, "\\\\", 2); break;
    case '\n': http_buf_append(b, "\\n", 2); break;
    case '\r': http_buf_append(b, "\\r", 2); break;
    case '\t': http_buf_append(b, "\\t", 2); break;
    default: {
      char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
      http_buf_append(b, esc, sizeof esc);
    }
    }
  }
  http_buf_append(b, run, (size_t)(s - run));
  http_buf_append(b, "\"", 1);
}

void http_buf_json_double(http_buf *b, double v, int decimals) {
  if (!isfinite(v)) {
    http_buf_append(b, "null", 4);
    return;
  }
  /* %f writes no exponent; telegate never leaves the C locale, so the
   * decimal separator is a point. */
  http_buf_printf(b, "%.*f", decimals, v);
}
