/* tls.c - TLS over libtg sockets through OpenSSL's memory BIOs; see tls.h. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  DEFAULT_RECV_BUFFER = 64 * 1024,
  WRITE_CHUNK = 64 * 1024, /* plaintext encrypted at once: bounds the ciphertext held */
  ERROR_MAX = 256,         /* tls_last_error's line */
  REASON_MAX = 120,        /* one OpenSSL reason */
};

/* Invariant: ctx is never NULL; it changes only under lock, and a reader
 * takes its own reference (SSL_new) under the same lock. */
struct tls_context {
  pthread_mutex_t lock;
  SSL_CTX *ctx;
  int server;
};

/* Invariants: buf[start, end) is decrypted plaintext, of which the first
 * `seen` bytes were shown; ciphertext waits in rbio until SSL reads it,
 * and records to send wait in wbio until they are handed to the socket;
 * `raw` is what tls_recv_case showed of the socket and nobody took yet.
 * Once `ended` is set (TG_EOF, -EPROTO, a socket error) SSL_read is not
 * called again. */
struct tls_conn {
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  tg_tcp *sock;
  char *buf;
  size_t cap, start, end, seen;
  int starved; /* the last SSL_read wanted ciphertext that has not come */
  int ended;
  tg_tcp_view raw;
  char *out; /* ciphertext being handed to the socket */
  size_t out_cap;
  char error[ERROR_MAX];
};

/* ------------------------------------------------------------ errors */

/* The newest OpenSSL error of this thread, as a sentence part; clears
 * the queue. */
static void ssl_reason(char *buf, size_t len) {
  unsigned long e, last = 0;
  while ((e = ERR_get_error()) != 0) last = e;
  const char *why = last ? ERR_reason_error_string(last) : NULL;
  snprintf(buf, len, "%s", why ? why : last ? "unknown OpenSSL error" : "no details");
}

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b) {
  if (err && errlen) snprintf(err, errlen, fmt, a, b);
}

/* ------------------------------------------------------------ contexts */

/* A file we cannot open is the likely mistake; say it in errno's words
 * rather than OpenSSL's. */
static int readable(const char *what, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    char why[160];
    snprintf(why, sizeof why, "%s: %s", path, strerror(errno));
    set_err(err, errlen, "cannot read the TLS %s %s", what, why);
    return TG_EINVAL;
  }
  fclose(f);
  return 0;
}

static int load_files(SSL_CTX *x, const tls_options *o, char *err, size_t errlen) {
  char why[REASON_MAX];
  if (o->server && (!o->cert_file || !o->key_file)) {
    set_err(err, errlen, "a TLS server needs a certificate and a key%s%s", "", "");
    return TG_EINVAL;
  }
  if (!o->cert_file != !o->key_file) {
    set_err(err, errlen, "a TLS certificate needs its key and a key its certificate%s%s", "", "");
    return TG_EINVAL;
  }
  if (o->cert_file) {
    int r = readable("certificate", o->cert_file, err, errlen);
    if (r == 0) r = readable("key", o->key_file, err, errlen);
    if (r != 0) return r;
    if (SSL_CTX_use_certificate_chain_file(x, o->cert_file) != 1) {
      ssl_reason(why, sizeof why);
      set_err(err, errlen, "bad TLS certificate %s: %s", o->cert_file, why);
      return TG_EINVAL;
    }
    if (SSL_CTX_use_PrivateKey_file(x, o->key_file, SSL_FILETYPE_PEM) != 1) {
      ssl_reason(why, sizeof why);
      set_err(err, errlen, "bad TLS key %s: %s", o->key_file, why);
      return TG_EINVAL;
    }
  }
  if (o->ca_file) {
    int r = readable("CA file", o->ca_file, err, errlen);
    if (r != 0) return r;
    if (SSL_CTX_load_verify_locations(x, o->ca_file, NULL) != 1) {
      ssl_reason(why, sizeof why);
      set_err(err, errlen, "bad TLS CA file %s: %s", o->ca_file, why);
      return TG_EINVAL;
    }
  }
  if (o->crl_file) {
    int r = readable("CRL file", o->crl_file, err, errlen);
    if (r != 0) return r;
    X509_STORE *store = SSL_CTX_get_cert_store(x);
    X509_LOOKUP *file = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (!file || X509_load_crl_file(file, o->crl_file, X509_FILETYPE_PEM) < 1) {
      ssl_reason(why, sizeof why);
      set_err(err, errlen, "bad TLS CRL file %s: %s", o->crl_file, why);
      return TG_EINVAL;
    }
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK); /* the peer's certificate; its CA's are trusted as given */
  }
  if (o->server && o->ca_file) { /* client certificates required, from these CAs */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
    if (!names) {
      ssl_reason(why, sizeof why);
      set_err(err, errlen, "bad TLS CA file %s: %s", o->ca_file, why);
      return TG_EINVAL;
    }
    SSL_CTX_set_client_CA_list(x, names);
    SSL_CTX_set_verify(x, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  } else if (!o->server) {
    if (!o->ca_file && !o->insecure && SSL_CTX_set_default_verify_paths(x) != 1) {
      ssl_reason(why, sizeof why);
      set_err(err, errlen, "cannot load the system's CAs: %s%s", why, "");
      return TG_EINVAL;
    }
    SSL_CTX_set_verify(x, o->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
  }
  return 0;
}

static int build(SSL_CTX **out, const tls_options *o, char *err, size_t errlen) {
  ERR_clear_error();
  SSL_CTX *x = SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
  if (!x) {
    ERR_clear_error();
    set_err(err, errlen, "out of memory%s%s", "", "");
    return TG_ENOMEM;
  }
  SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
  /* Devices keep one long connection: no resumption, so no tickets to
   * send after each handshake and no session cache to share. */
  SSL_CTX_set_num_tickets(x, 0);
  SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(x, SSL_OP_NO_TICKET);
  /* OpenSSL's record buffers (about 34 KiB) are freed while no record is
   * in flight: most of a fleet's connections are idle most of the time. */
  SSL_CTX_set_mode(x, SSL_MODE_RELEASE_BUFFERS);
  int r = load_files(x, o, err, errlen);
  if (r != 0) {
    ERR_clear_error();
    SSL_CTX_free(x);
    return r;
  }
  *out = x;
  return 0;
}

int tls_context_new(tls_context **out, const tls_options *o, char *err, size_t errlen) {
  *out = NULL;
  tls_context *c = calloc(1, sizeof *c);
  if (!c) {
    set_err(err, errlen, "out of memory%s%s", "", "");
    return TG_ENOMEM;
  }
  int r = build(&c->ctx, o, err, errlen);
  if (r != 0) {
    free(c);
    return r;
  }
  c->server = o->server;
  pthread_mutex_init(&c->lock, NULL);
  *out = c;
  return 0;
}

int tls_open_call(void *args) {
  tls_open_args *a = args;
  int r = tls_context_new(a->ctx, &a->opts, a->err, sizeof a->err);
  /* OpenSSL keeps per-thread state (the error queue, random generators)
   * until the thread exits, and a pool thread lives as long as the
   * process: free it now. */
  OPENSSL_thread_stop();
  return r;
}

int tls_context_reload(tls_context *c, const tls_options *o, char *err, size_t errlen) {
  if (!o->server != !c->server) {
    set_err(err, errlen, "a TLS context cannot change between server and client%s%s", "", "");
    return TG_EINVAL;
  }
  SSL_CTX *fresh;
  int r = build(&fresh, o, err, errlen);
  if (r != 0) return r;
  pthread_mutex_lock(&c->lock);
  SSL_CTX *old = c->ctx;
  c->ctx = fresh;
  pthread_mutex_unlock(&c->lock);
  SSL_CTX_free(old); /* connections that use it hold their own reference */
  return 0;
}

/* Copies what was printed into a memory BIO to buf. */
static void bio_to_buf(BIO *b, char *buf, size_t len) {
  char *p;
  long n = BIO_get_mem_data(b, &p);
  if (n < 0) n = 0;
  if ((size_t)n >= len) n = (long)len - 1;
  memcpy(buf, p, (size_t)n);
  buf[n] = '\0';
}

static void name_to_buf(X509 *x, char *buf, size_t len) {
  if (len) buf[0] = '\0';
  BIO *b = BIO_new(BIO_s_mem());
  if (!x || !b || !len) {
    BIO_free(b);
    return;
  }
  X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
  bio_to_buf(b, buf, len);
  BIO_free(b);
}

void tls_context_describe(tls_context *c, char *buf, size_t len) {
  pthread_mutex_lock(&c->lock);
  X509 *x = SSL_CTX_get0_certificate(c->ctx);
  if (x) X509_up_ref(x);
  pthread_mutex_unlock(&c->lock);
  if (!x) {
    snprintf(buf, len, "no certificate");
    return;
  }
  char subject[256], expires[64] = "";
  name_to_buf(x, subject, sizeof subject);
  BIO *b = BIO_new(BIO_s_mem());
  if (b && ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) bio_to_buf(b, expires, sizeof expires);
  BIO_free(b);
  X509_free(x);
  snprintf(buf, len, "%s, expires %s", subject, expires);
}

int tls_context_is_server(const tls_context *c) { return c->server; }

void tls_context_free(tls_context *c) {
  if (!c) return;
  SSL_CTX_free(c->ctx);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

/* ------------------------------------------------------------ moving ciphertext */

/* Hands the records waiting in wbio to the socket, waiting until the
 * deadline (try: without waiting; the socket must have no write in
 * flight, which the caller checked). */
static int flush(tls_conn *c, int try, int64_t deadline) {
  size_t n = BIO_ctrl_pending(c->wbio);
  if (n == 0) return 0;
  if (n > c->out_cap) {
    char *grown = realloc(c->out, n);
    if (!grown) return TG_ENOMEM;
    c->out = grown;
    c->out_cap = n;
  }
  if (BIO_read(c->wbio, c->out, (int)n) != (int)n) return TG_ENOMEM; /* a memory BIO gives all it holds */
  return try ? tg_tcp_try_write(c->sock, c->out, n) : tg_tcp_write_dl(c->sock, c->out, n, deadline);
}

/* Moves ciphertext the socket showed into rbio. */
static int absorb(tls_conn *c, const char *data, size_t len) {
  if (len && BIO_write(c->rbio, data, (int)len) != (int)len) return TG_ENOMEM;
  tg_tcp_consume(c->sock, len);
  c->starved = 0;
  return 0;
}

/* Waits for ciphertext until the deadline (or cancel) and takes it. */
static int take_ciphertext(tls_conn *c, tg_cancel *cancel, int64_t deadline) {
  tg_tcp_view v;
  int r;
  if (cancel) {
    tg_case cs[2] = {tg_cancel_case(cancel), tg_tcp_recv_case(c->sock, &v)};
    int w = tg_select(cs, 2, deadline);
    if (w < 0) return w;
    if (w == 0) return TG_ECANCELED;
    r = cs[1].result;
  } else {
    r = tg_tcp_recv_dl(c->sock, &v.data, &v.len, deadline);
  }
  return r != 0 ? r : absorb(c, v.data, v.len);
}

/* ------------------------------------------------------------ handshakes */

static void handshake_error(tls_conn *c, char *err, size_t errlen) {
  char why[REASON_MAX];
  ssl_reason(why, sizeof why);
  long v = SSL_get_verify_result(c->ssl);
  snprintf(c->error, sizeof c->error, "TLS handshake failed: %s%s%s%s", why, v != X509_V_OK ? " (" : "",
           v != X509_V_OK ? X509_verify_cert_error_string(v) : "", v != X509_V_OK ? ")" : "");
  set_err(err, errlen, "%s%s", c->error, "");
}

static void conn_free(tls_conn *c) {
  SSL_free(c->ssl);
  free(c->buf);
  free(c->out);
  free(c);
}

static int conn_new(tls_conn **out, tls_context *ctx, tg_tcp *sock, char *err, size_t errlen) {
  tls_conn *c = calloc(1, sizeof *c);
  if (c) c->buf = malloc(DEFAULT_RECV_BUFFER);
  if (c && c->buf) {
    c->cap = DEFAULT_RECV_BUFFER;
    c->sock = sock;
    pthread_mutex_lock(&ctx->lock);
    c->ssl = SSL_new(ctx->ctx); /* takes its own reference to the context */
    pthread_mutex_unlock(&ctx->lock);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
  }
  if (!c || !c->buf || !c->ssl || !c->rbio || !c->wbio) {
    if (c) {
      BIO_free(c->rbio);
      BIO_free(c->wbio);
      SSL_free(c->ssl);
      free(c->buf);
      free(c);
    }
    ERR_clear_error();
    set_err(err, errlen, "out of memory%s%s", "", "");
    return TG_ENOMEM;
  }
  /* An empty rbio means "more later", not end of file. */
  BIO_set_mem_eof_return(c->rbio, -1);
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  *out = c;
  return 0;
}

/* Drives the handshake: each step's records go out, then the task waits
 * for the peer's. */
static int handshake(tls_conn *c, tg_cancel *cancel, int64_t deadline, char *err, size_t errlen) {
  for (;;) {
    ERR_clear_error();
    int n = SSL_do_handshake(c->ssl);
    int e = n == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
      handshake_error(c, err, errlen);
      flush(c, 0, deadline); /* the alert, so the peer learns why */
      return -EPROTO;
    }
    int r = flush(c, 0, deadline);
    if (r == 0 && e == SSL_ERROR_NONE) return 0;
    if (r == 0) r = take_ciphertext(c, cancel, deadline);
    if (r != 0) {
      set_err(err, errlen, "TLS handshake: %s%s",
              r == TG_EOF         ? "the peer closed the connection"
              : r == TG_ETIMEDOUT ? "timed out"
                                  : tg_strerror(r),
              "");
      return r;
    }
  }
}

static int start(tls_conn **out, tls_context *ctx, tg_tcp *sock, const char *host, tg_cancel *cancel, int64_t deadline,
                 char *err, size_t errlen) {
  *out = NULL;
  tls_conn *c;
  int r = conn_new(&c, ctx, sock, err, errlen);
  if (r != 0) return r;
  if (ctx->server) {
    SSL_set_accept_state(c->ssl);
  } else {
    SSL_set_connect_state(c->ssl);
    if (host) {
      unsigned char ip[16];
      int numeric = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
      if (!numeric) SSL_set_tlsext_host_name(c->ssl, host);
      if (SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE) {
        X509_VERIFY_PARAM *p = SSL_get0_param(c->ssl);
        int ok = numeric ? X509_VERIFY_PARAM_set1_ip_asc(p, host) : X509_VERIFY_PARAM_set1_host(p, host, 0);
        if (ok != 1) {
          ERR_clear_error();
          conn_free(c);
          set_err(err, errlen, "cannot check the TLS server's name against %s%s", host, "");
          return TG_EINVAL;
        }
      }
    }
  }
  r = handshake(c, cancel, deadline, err, errlen);
  if (r != 0) {
    conn_free(c);
    return r;
  }
  *out = c;
  return 0;
}

int tls_accept_dl(tls_conn **out, tls_context *ctx, tg_tcp *sock, tg_cancel *cancel, int64_t deadline, char *err,
                  size_t errlen) {
  if (!ctx->server) return TG_EINVAL;
  return start(out, ctx, sock, NULL, cancel, deadline, err, errlen);
}

int tls_connect_dl(tls_conn **out, tls_context *ctx, tg_tcp *sock, const char *host, tg_cancel *cancel,
                   int64_t deadline, char *err, size_t errlen) {
  if (ctx->server) return TG_EINVAL;
  return start(out, ctx, sock, host, cancel, deadline, err, errlen);
}

/* ------------------------------------------------------------ reading */

int tls_set_recv_buffer(tls_conn *c, size_t size) {
  if (size < 64 || c->end > c->start) return TG_EINVAL;
  char *b = realloc(c->buf, size);
  if (!b) return TG_ENOMEM;
  c->buf = b;
  c->cap = size;
  c->start = c->end = c->seen = 0;
  return 0;
}

/* Decrypts into the buffer's free tail until it is full or SSL wants
 * more ciphertext. Returns 0 or why the stream ended. */
static int decrypt(tls_conn *c) {
  if (c->start > 0 && c->end == c->cap && c->end - c->start == c->seen) { /* room, as tg_tcp makes it */
    memmove(c->buf, c->buf + c->start, c->seen);
    c->start = 0;
    c->end = c->seen;
  }
  while (c->end < c->cap) {
    ERR_clear_error();
    size_t room = c->cap - c->end;
    int n = SSL_read(c->ssl, c->buf + c->end, room > INT32_MAX ? INT32_MAX : (int)room);
    if (n > 0) {
      c->end += (size_t)n;
      continue;
    }
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ) {
      c->starved = 1;
      return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) return TG_EOF; /* close_notify */
    char why[REASON_MAX];
    ssl_reason(why, sizeof why);
    snprintf(c->error, sizeof c->error, "TLS: %s", why);
    return -EPROTO;
  }
  return 0;
}

int tls_recv_dl(tls_conn *c, const char **data, size_t *len, int64_t deadline) {
  int r = 0;
  if (c->raw.data) {
    tg_tcp_view v = c->raw;
    c->raw = (tg_tcp_view){0};
    if ((r = absorb(c, v.data, v.len)) != 0) return r;
  }
  for (;;) {
    if (!c->ended && (r = decrypt(c)) != 0) c->ended = r;
    size_t buffered = c->end - c->start;
    if (buffered > c->seen) {
      c->seen = buffered;
      *data = c->buf + c->start;
      *len = buffered;
      return 0;
    }
    if (c->ended) return c->ended;
    if (c->end == c->cap) return TG_EFULL;
    tg_tcp_view v;
    r = tg_tcp_recv_dl(c->sock, &v.data, &v.len, deadline);
    if (r == TG_EOF || (r != 0 && r != TG_ETIMEDOUT && r != TG_ECANCELED)) c->ended = r;
    if (r != 0) return r;
    if ((r = absorb(c, v.data, v.len)) != 0) return r;
  }
}

int tls_ready(const tls_conn *c) {
  /* Room to decrypt into: a free tail, or consumed bytes to slide over. */
  int room = c->end < c->cap || c->start > 0;
  return c->raw.data || c->end - c->start > c->seen || c->ended || (!c->starved && room);
}

tg_case tls_recv_case(tls_conn *c) { return tg_tcp_recv_case(c->sock, &c->raw); }

void tls_consume(tls_conn *c, size_t n) {
  c->start += n;
  c->seen = n < c->seen ? c->seen - n : 0;
  if (c->start == c->end) c->start = c->end = 0;
}

/* ------------------------------------------------------------ writing */

/* Encrypts buf into wbio. */
static int encrypt(tls_conn *c, const char *buf, size_t len) {
  ERR_clear_error();
  int n = SSL_write(c->ssl, buf, (int)len); /* a memory BIO takes every record */
  if (n == (int)len) return 0;
  char why[REASON_MAX];
  ssl_reason(why, sizeof why);
  snprintf(c->error, sizeof c->error, "TLS: %s", why);
  return -EPROTO;
}

int tls_write_dl(tls_conn *c, const void *buf, size_t len, int64_t deadline) {
  const char *p = buf;
  int r = flush(c, 0, deadline); /* records SSL_read left (a key update's answer) go first */
  while (r == 0 && len > 0) {
    size_t n = len < WRITE_CHUNK ? len : WRITE_CHUNK;
    r = encrypt(c, p, n);
    if (r == 0) r = flush(c, 0, deadline);
    p += n;
    len -= n;
  }
  return r;
}

int tls_try_write(tls_conn *c, const void *buf, size_t len) {
  /* An empty write takes and passes the socket's write turn: TG_EAGAIN
   * while a write is going out, so nothing gets encrypted that would
   * have to wait. */
  int r = tg_tcp_try_write(c->sock, NULL, 0);
  if (r != 0) return r;
  const char *p = buf;
  while (len > 0) {
    size_t n = len < WRITE_CHUNK ? len : WRITE_CHUNK;
    if ((r = encrypt(c, p, n)) != 0) return r;
    p += n;
    len -= n;
  }
  return flush(c, 1, 0);
}

/* ------------------------------------------------------------ the rest */

void tls_peer_subject(const tls_conn *c, char *buf, size_t len) {
  name_to_buf(SSL_get0_peer_certificate(c->ssl), buf, len);
}

void tls_describe(const tls_conn *c, char *buf, size_t len) {
  snprintf(buf, len, "%s %s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
}

const char *tls_last_error(const tls_conn *c) { return c->error; }

void tls_close_dl(tls_conn *c, int64_t deadline) {
  if (!c) return;
  if (c->ended != -EPROTO) {
    ERR_clear_error();
    SSL_shutdown(c->ssl); /* queues close_notify; the peer's answer is not awaited */
    ERR_clear_error();
    if (deadline == 0) {
      if (tg_tcp_try_write(c->sock, NULL, 0) == 0) flush(c, 1, 0);
    } else {
      flush(c, 0, deadline);
    }
  }
  conn_free(c);
}
