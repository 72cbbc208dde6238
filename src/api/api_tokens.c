/* api_tokens.c - bearer tokens stored as SHA-256 hashes; see api_tokens.h. */
#include "api_tokens.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HASH_BYTES = 32 };

typedef struct token_list {
  unsigned char (*hash)[HASH_BYTES];
  size_t n;
} token_list;

struct api_tokens {
  token_list read, admin;
};

static int hex_digit(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* 64 hex digits, then only blanks. Returns 0 or -1. */
static int parse_hash(const char *line, unsigned char out[HASH_BYTES]) {
  for (int i = 0; i < HASH_BYTES; i++) {
    int hi = hex_digit((unsigned char)line[2 * i]), lo = hi < 0 ? -1 : hex_digit((unsigned char)line[2 * i + 1]);
    if (lo < 0) return -1;
    out[i] = (unsigned char)(hi * 16 + lo);
  }
  return strspn(line + 2 * HASH_BYTES, " \t\r\n") == strlen(line + 2 * HASH_BYTES) ? 0 : -1;
}

static int load_list(token_list *l, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "cannot read the token file %s: %s", path, strerror(e));
    return -e;
  }
  char line[256];
  int r = 0;
  for (int lineno = 1; r == 0 && fgets(line, sizeof line, f); lineno++) {
    const char *p = line + strspn(line, " \t");
    if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0') continue;
    unsigned char h[HASH_BYTES];
    if (parse_hash(p, h) != 0) {
      snprintf(err, errlen, "%s:%d: want the token's SHA-256 as 64 hex digits (printf %%s TOKEN | sha256sum)", path,
               lineno);
      r = TG_EINVAL;
      break;
    }
    void *grown = realloc(l->hash, (l->n + 1) * sizeof l->hash[0]);
    if (!grown) {
      r = TG_ENOMEM;
      break;
    }
    l->hash = grown;
    memcpy(l->hash[l->n++], h, HASH_BYTES);
  }
  fclose(f);
  return r;
}

int api_tokens_load(api_tokens **out, const char *read_path, const char *admin_path, char *err, size_t errlen) {
  api_tokens *t = calloc(1, sizeof *t);
  if (!t) return TG_ENOMEM;
  int r = read_path ? load_list(&t->read, read_path, err, errlen) : 0;
  if (r == 0 && admin_path) r = load_list(&t->admin, admin_path, err, errlen);
  if (r != 0) {
    api_tokens_free(t);
    return r;
  }
  *out = t;
  return 0;
}

/* Whether the token's hash is in l; every entry is compared, in constant
 * time, whatever matched. */
static int listed(const token_list *l, const unsigned char h[HASH_BYTES]) {
  int found = 0;
  for (size_t i = 0; i < l->n; i++) found |= CRYPTO_memcmp(l->hash[i], h, HASH_BYTES) == 0;
  return found;
}

int api_tokens_authorize(void *ctx, const char *bearer, api_access need) {
  const api_tokens *t = ctx;
  const token_list *enough = NULL; /* besides admin tokens, which grant everything */
  if (need == API_ACCESS_OPEN) return 0;
  if (need == API_ACCESS_READ) {
    if (t->read.n == 0) return 0;
    enough = &t->read;
  } else {
    if (t->admin.n == 0 && t->read.n == 0) return 0;
    if (t->admin.n == 0) enough = &t->read;
  }
  if (!bearer || !*bearer) return -EACCES;
  unsigned char h[HASH_BYTES];
  unsigned int hlen = 0;
  if (EVP_Digest(bearer, strlen(bearer), h, &hlen, EVP_sha256(), NULL) != 1 || hlen != HASH_BYTES) return -EACCES;
  if (listed(&t->admin, h) || (enough && listed(enough, h))) return 0;
  return need == API_ACCESS_ADMIN && listed(&t->read, h) ? -EPERM : -EACCES;
}

int api_tokens_any(const api_tokens *t) { return t && (t->read.n || t->admin.n); }

void api_tokens_free(api_tokens *t) {
  if (!t) return;
  OPENSSL_cleanse(t->read.hash, t->read.n * HASH_BYTES);
  OPENSSL_cleanse(t->admin.hash, t->admin.n * HASH_BYTES);
  free(t->read.hash);
  free(t->admin.hash);
  free(t);
}
