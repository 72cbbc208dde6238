/* http_buf.h - a growable byte buffer for building responses.
 *
 * Appends never fail loudly: the first allocation failure sets `failed`,
 * after which every append is a no-op, so a writer of a long JSON or
 * metrics document checks once, at the end. The data is NUL-terminated
 * whenever len > 0 and nothing failed. A zeroed struct is an empty
 * buffer; http_buf_free releases it and leaves it empty again. */
#ifndef TELEGATE_HTTP_BUF_H
#define TELEGATE_HTTP_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct http_buf {
  char *data;
  size_t len, cap;
  int failed; /* an allocation failed: the content is incomplete */
} http_buf;

void http_buf_free(http_buf *b);
/* Empties the buffer, keeping its memory. */
void http_buf_reset(http_buf *b);

/* Makes room for n more bytes at once, so a writer that knows about how
 * much it will write grows the buffer once rather than by doubling. */
void http_buf_reserve(http_buf *b, size_t n);

void http_buf_append(http_buf *b, const void *p, size_t n);
void http_buf_puts(http_buf *b, const char *s);
void http_buf_printf(http_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void http_buf_u64(http_buf *b, uint64_t v);
void http_buf_i64(http_buf *b, int64_t v);

/* s as a JSON string, quoted and escaped (control characters as \u00XX;
 * bytes >= 0x80 are copied as they are). */
void http_buf_json_string(http_buf *b, const char *s);
/* A JSON number with up to `decimals` decimals, trailing zeros kept;
 * null for NaN and infinities, which JSON cannot carry. */
void http_buf_json_double(http_buf *b, double v, int decimals);

/* Nonzero when an append failed. */
static inline int http_buf_failed(const http_buf *b) { return b->failed; }

#endif
