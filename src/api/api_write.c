/* api_write.c - the InfluxDB write API: POST /write (v1) and
 * POST /api/v2/write (v2), and the agents' JSON endpoint POST
 * /api/readings, each answered once its points are committed
 * (source_write.h has the rest of the contract).
 *
 * POST /query answers CREATE DATABASE with success and every other
 * InfluxQL statement with a 400: Telegraf's outputs.influxdb creates its
 * database at start, and telegate has one. GET /health is InfluxDB 2's
 * probe (Vector's and the influx CLI's), answered as /ping is.
 *
 * /api/readings takes what Telegraf's outputs.http (data_format json),
 * Fluent Bit's http output (json, json_lines) and Vector's http sink
 * (json) send; it takes the token, gzip and the limit as v2 does, answers
 * as v2 does, and has no precision: its times say their own units.
 *
 * What InfluxDB's clients and agents send, taken as they send it:
 *   - precision: v1 n, u, ms, s, m, h (ns and us too), v2 ns, us, ms, s;
 *     nanoseconds when absent. An unknown one is a 400.
 *   - db, rp (v1), org, bucket (v2): accepted and not used: telegate has
 *     one database.
 *   - the token: v2's "Authorization: Token T" (or Bearer T); v1's
 *     password, as the Basic password, the "Token user:password" form or
 *     ?p=. It is a device credential's token (--credentials).
 *   - Content-Encoding: gzip (Telegraf's default), inflated up to the
 *     body limit (413 past it).
 * Answers: 204 when every point is committed; 400 naming the first bad
 * line once the good ones are committed (InfluxDB's partial write); 401
 * without a valid token; 413 past the limit; 503 with Retry-After when
 * busy, stopping, or when the commit was not seen within
 * write_commit_timeout_ms (the points were taken and will be committed; a
 * retry stores points without seq again). Errors are InfluxDB's shapes:
 * {"error": ...} for v1, {"code": ..., "message": ...} for v2. */
#include "api_internal.h"

#include <errno.h>
#include <http_parser.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define RETRY "Cache-Control: no-store\r\nRetry-After: 1\r\n"

static void write_error(http_conn *c, int v2, int status, const char *code, const char *msg, const char *headers) {
  http_buf b = {0};
  if (v2) {
    http_buf_puts(&b, "{\"code\":");
    http_buf_json_string(&b, code);
    http_buf_puts(&b, ",\"message\":");
  } else {
    http_buf_puts(&b, "{\"error\":");
  }
  http_buf_json_string(&b, msg);
  http_buf_puts(&b, "}\n");
  if (http_buf_failed(&b))
    http_respond(c, 500, NULL, NULL, NULL, 0);
  else
    http_respond(c, status, "application/json", headers ? headers : "Cache-Control: no-store\r\n", b.data, b.len);
  http_buf_free(&b);
}

/* The precision parameter; -1 for one InfluxDB does not have. */
static int precision_of(const http_request *req, int v2) {
  char v[8];
  int n = http_query_param(req->query, "precision", v, sizeof v);
  if (n == -1) return PROTOCOL_NS;
  static const struct {
    const char *name;
    protocol_precision p;
    int v1_only;
  } units[] = {{"ns", PROTOCOL_NS, 0}, {"n", PROTOCOL_NS, 1}, {"us", PROTOCOL_US, 0}, {"u", PROTOCOL_US, 1},
               {"ms", PROTOCOL_MS, 0}, {"s", PROTOCOL_S, 0},  {"m", PROTOCOL_MIN, 1}, {"h", PROTOCOL_H, 1}};
  for (size_t i = 0; n > 0 && i < sizeof units / sizeof *units; i++)
    if (strcmp(v, units[i].name) == 0 && !(v2 && units[i].v1_only)) return (int)units[i].p;
  return -1;
}

/* The client's token into buf (NUL-terminated), or NULL when it gave
 * none. */
static const char *token_of(const http_request *req, int v2, char *buf, size_t cap) {
  const char *h = http_request_header(req, "Authorization");
  if (h && (strncasecmp(h, "Token ", 6) == 0 || strncasecmp(h, "Bearer ", 7) == 0)) {
    const char *t = h + strcspn(h, " ");
    t += strspn(t, " ");
    const char *colon = v2 ? NULL : strchr(t, ':'); /* v1's "Token user:password"; v2's token is whole */
    snprintf(buf, cap, "%s", colon ? colon + 1 : t);
    return buf;
  }
  if (h && strncasecmp(h, "Basic ", 6) == 0) {
    const char *b64 = h + 6 + strspn(h + 6, " ");
    size_t len = strlen(b64);
    unsigned char plain[512];
    if (len == 0 || len % 4 || len / 4 * 3 >= sizeof plain) return NULL;
    int n = EVP_DecodeBlock(plain, (const unsigned char *)b64, (int)len);
    if (n < 0) return NULL;
    while (n > 0 && b64[len - 1] == '=' && plain[n - 1] == 0) n--, len--; /* the padding decodes to NULs */
    plain[n] = 0;
    const char *colon = memchr(plain, ':', (size_t)n);
    if (!colon) return NULL;
    snprintf(buf, cap, "%s", colon + 1);
    return buf;
  }
  return http_query_param(req->query, "p", buf, cap) > 0 ? buf : NULL;
}

/* Inflates a gzip body into *out (malloc'd) of at most max bytes.
 * Returns 0, -EFBIG past max, or -EINVAL for bytes that are not gzip. */
static int gunzip(const char *in, size_t len, size_t max, char **out, size_t *outlen) {
  z_stream z = {0};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return -ENOMEM;
  size_t cap = len * 4 < max ? (len * 4 > 4096 ? len * 4 : 4096) : max;
  char *buf = malloc(cap + 1);
  int r = buf ? 0 : -ENOMEM, zr = Z_OK;
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)len;
  while (r == 0) {
    z.next_out = (Bytef *)buf + z.total_out;
    z.avail_out = (uInt)(cap - z.total_out);
    zr = inflate(&z, Z_NO_FLUSH);
    if (zr == Z_STREAM_END) break;
    if (zr != Z_OK && zr != Z_BUF_ERROR) {
      r = -EINVAL;
    } else if (z.avail_out == 0) {
      if (cap == max) {
        r = -EFBIG;
      } else {
        cap = cap * 2 < max ? cap * 2 : max;
        char *grown = realloc(buf, cap + 1);
        if (grown)
          buf = grown;
        else
          r = -ENOMEM;
      }
    } else if (z.avail_in == 0) {
      r = -EINVAL; /* truncated */
    }
  }
  *outlen = z.total_out;
  inflateEnd(&z);
  if (r != 0) {
    free(buf);
    return r;
  }
  *out = buf;
  return 0;
}

void api_write(api_server *a, http_conn *c, const http_request *req, api_write_kind kind) {
  int v2 = kind != API_WRITE_V1; /* the JSON endpoint answers as v2 does */
  if (!a->deps.write) {
    write_error(c, v2, 501, "internal error", "this server takes no writes", NULL);
    return;
  }
  int precision = precision_of(req, v2);
  if (precision < 0) {
    write_error(c, v2, 400, "invalid", v2 ? "precision takes ns, us, ms or s" : "precision takes n, u, ms, s, m or h",
                NULL);
    return;
  }
  char *inflated = NULL;
  const char *body = req->body;
  size_t len = req->body_len;
  const char *encoding = http_request_header(req, "Content-Encoding");
  if (encoding && strcasecmp(encoding, "gzip") == 0) {
    int r = gunzip(req->body, req->body_len, a->cfg.write_max_bytes, &inflated, &len);
    if (r != 0) {
      if (r == -EFBIG)
        write_error(c, v2, 413, "request too large", "the body inflates past the limit", NULL);
      else
        write_error(c, v2, r == -EINVAL ? 400 : 500, "invalid", "the body is not valid gzip", NULL);
      return;
    }
    body = inflated;
  } else if (encoding && strcasecmp(encoding, "identity") != 0) {
    write_error(c, v2, 415, "invalid", "Content-Encoding takes gzip or identity", NULL);
    return;
  }
  char token[256];
  write_request rq = {.body = body,
                      .len = len,
                      .precision = (protocol_precision)precision,
                      .json = kind == API_WRITE_JSON,
                      .token = token_of(req, v2, token, sizeof token),
                      .deadline_ns = tg_deadline_in(TG_MS(a->cfg.write_commit_timeout_ms))};
  write_result res;
  int r = a->deps.write(a->deps.ctx, &rq, &res);
  free(inflated);
  char msg[WRITE_BAD_LINE_MAX + 200];
  switch (r) {
  case 0:
    if (!res.bad) {
      http_respond(c, 204, NULL, "Cache-Control: no-store\r\n", NULL, 0);
      return;
    }
    snprintf(msg, sizeof msg, "partial write: unable to parse '%s': %s (line %llu); %llu points written, %llu dropped",
             res.first_bad_text, serve_bad_reason_name(res.first_bad_reason), (unsigned long long)res.first_bad_line,
             (unsigned long long)res.points, (unsigned long long)res.bad);
    write_error(c, v2, 400, "invalid", msg, NULL);
    return;
  case -EACCES: write_error(c, v2, 401, "unauthorized", "a device credential's token is needed to write", NULL); return;
  case -EBUSY: write_error(c, v2, 503, "unavailable", "too many writes at once; try again", RETRY); return;
  case TG_ETIMEDOUT:
    snprintf(msg, sizeof msg,
             "%llu points taken, their commit not seen within %d ms; a retry stores again points without seq",
             (unsigned long long)res.points, a->cfg.write_commit_timeout_ms);
    write_error(c, v2, 503, "unavailable", msg, RETRY);
    return;
  case TG_ECLOSED: write_error(c, v2, 503, "unavailable", "the server is stopping", RETRY); return;
  default: write_error(c, v2, 500, "internal error", tg_strerror(r), NULL); return;
  }
}

void api_query(api_server *a, http_conn *c, const http_request *req) {
  (void)a;
  char q[256];
  /* InfluxDB 1.x takes q in the URL or, as Telegraf sends it, the form body. */
  int n = http_query_param(req->query, "q", q, sizeof q);
  if (n < 0 && req->method == HTTP_POST) n = http_query_param(req->body, "q", q, sizeof q);
  const char *p = q + (n > 0 ? strspn(q, " \t") : 0);
  if (n > 0 && strncasecmp(p, "CREATE DATABASE", 15) == 0) {
    static const char ok[] = "{\"results\":[{\"statement_id\":0}]}";
    http_respond(c, 200, "application/json", "Cache-Control: no-store\r\n", ok, sizeof ok - 1);
    return;
  }
  write_error(c, 0, 400, "invalid",
              "telegate takes writes, not InfluxQL queries: read the readings with SQL or "
              "GET /api/devices/{id}/readings",
              NULL);
}
