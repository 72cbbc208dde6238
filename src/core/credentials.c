/* credentials.c - the device port's credentials file, its sets and their
 * reload; see credentials.h. */
#include "credentials.h"

#include "protocol.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_MAX ((long)16 << 20)

static int is_id_byte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == ':' || c == '-';
}

static void set_free(credentials *set) {
  for (uint32_t i = 0; i < set->n; i++) free(set->items[i].patterns);
  free(set->items);
  free(set);
}

credentials *credentials_ref(credentials *set) {
  if (set) atomic_fetch_add(&set->refs, 1);
  return set;
}

void credentials_unref(credentials *set) {
  if (set && atomic_fetch_sub(&set->refs, 1) == 1) set_free(set);
}

static void sha256(const char *data, size_t len, uint8_t out[CREDENTIAL_HASH_SIZE]) {
  unsigned n = 0;
  if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != CREDENTIAL_HASH_SIZE)
    memset(out, 0, CREDENTIAL_HASH_SIZE); /* matches no credential: a parsed hash is never all zero bits by chance */
}

void credentials_hash_hex(const char *token, size_t len, char hex[2 * CREDENTIAL_HASH_SIZE + 1]) {
  uint8_t h[CREDENTIAL_HASH_SIZE];
  sha256(token, len, h);
  for (int i = 0; i < CREDENTIAL_HASH_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
}

/* ------------------------------------------------------------ parsing */

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = (char)(c | 0x20);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The next blank-separated word of [*p, end), or 0 at the end. */
static size_t word(const char **p, const char *end, const char **w) {
  const char *q = *p;
  while (q < end && (*q == ' ' || *q == '\t')) q++;
  *w = q;
  while (q < end && *q != ' ' && *q != '\t') q++;
  *p = q;
  return (size_t)(q - *w);
}

static int line_error(char *err, size_t errlen, unsigned line_no, const char *fmt, ...) {
  char why[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  snprintf(err, errlen, "line %u: %s", line_no, why);
  return -EINVAL;
}

/* One credential's line, words after the first two being patterns. */
static int parse_line(const char *p, const char *end, unsigned line_no, credential *c, char *err, size_t errlen) {
  const char *w;
  size_t n = word(&p, end, &w);
  if (n > CREDENTIAL_NAME_MAX)
    return line_error(err, errlen, line_no, "a name longer than %d bytes", CREDENTIAL_NAME_MAX);
  for (size_t i = 0; i < n; i++)
    if (!is_id_byte(w[i])) return line_error(err, errlen, line_no, "a name of other bytes than A-Z a-z 0-9 _ . : -");
  memcpy(c->name, w, n);
  c->name[n] = 0;
  n = word(&p, end, &w);
  if (n != 2 * CREDENTIAL_HASH_SIZE)
    return line_error(err, errlen, line_no, "%s: the token's SHA-256 must follow the name, as 64 hex digits", c->name);
  for (int i = 0; i < CREDENTIAL_HASH_SIZE; i++) {
    int hi = hex_digit(w[2 * i]), lo = hex_digit(w[2 * i + 1]);
    if (hi < 0 || lo < 0) return line_error(err, errlen, line_no, "%s: the hash is not hex", c->name);
    c->hash[i] = (uint8_t)(hi << 4 | lo);
  }
  const char *rest = p;
  uint32_t count = 0;
  while (word(&p, end, &w)) count++;
  if (count == 0) return line_error(err, errlen, line_no, "%s: no device id or pattern", c->name);
  c->patterns = calloc(count, sizeof *c->patterns);
  if (!c->patterns) return -ENOMEM;
  for (p = rest; (n = word(&p, end, &w)) != 0;) {
    credential_pattern *pat = &c->patterns[c->npatterns++];
    pat->is_prefix = w[n - 1] == '*';
    size_t len = n - pat->is_prefix;
    int ok = len <= PROTOCOL_DEVICE_ID_MAX && (len > 0 || pat->is_prefix);
    for (size_t i = 0; ok && i < len; i++) ok = is_id_byte(w[i]);
    if (!ok)
      return line_error(err, errlen, line_no, "%s: '%.*s' is neither a device id nor an id's prefix and '*'", c->name,
                        (int)(n > 40 ? 40 : n), w);
    memcpy(pat->text, w, len);
    pat->len = (uint8_t)len;
  }
  return 0;
}

int credentials_parse(const char *text, size_t len, credentials **out, char *err, size_t errlen) {
  *out = NULL;
  credentials *set = calloc(1, sizeof *set);
  if (!set) return -ENOMEM;
  atomic_init(&set->refs, 1);
  uint32_t cap = 0;
  unsigned line_no = 0;
  int r = 0;
  for (const char *p = text, *end = text + len; p < end && r == 0;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *stop = nl ? nl : end;
    line_no++;
    const char *q = p;
    while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
    const char *e = stop;
    while (e > q && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
    p = nl ? nl + 1 : end;
    if (q == e || *q == '#') continue;
    if (set->n == cap) {
      cap = cap ? 2 * cap : 16;
      credential *grown = realloc(set->items, cap * sizeof *grown);
      if (!grown) {
        r = -ENOMEM;
        break;
      }
      set->items = grown;
    }
    credential *c = &set->items[set->n++];
    memset(c, 0, sizeof *c);
    r = parse_line(q, e, line_no, c, err, errlen);
    for (uint32_t i = 0; r == 0 && i + 1 < set->n; i++) {
      if (strcmp(set->items[i].name, c->name) == 0)
        r = line_error(err, errlen, line_no, "%s: a second credential of this name", c->name);
      else if (memcmp(set->items[i].hash, c->hash, CREDENTIAL_HASH_SIZE) == 0)
        r = line_error(err, errlen, line_no, "%s: the same token as %s", c->name, set->items[i].name);
    }
  }
  if (r != 0) {
    if (r == -ENOMEM) snprintf(err, errlen, "out of memory");
    set_free(set);
    return r;
  }
  *out = set;
  return 0;
}

int credentials_load(const char *path, credentials **out, char *err, size_t errlen) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
    return -e;
  }
  char *buf = malloc((size_t)FILE_MAX + 1);
  size_t n = buf ? fread(buf, 1, (size_t)FILE_MAX + 1, f) : 0;
  int r = !buf ? -ENOMEM : ferror(f) ? -EIO : n > (size_t)FILE_MAX ? -EFBIG : 0;
  fclose(f);
  if (r != 0) {
    snprintf(err, errlen, "cannot read %s: %s", path,
             r == -EFBIG    ? "larger than 16 MiB"
             : r == -ENOMEM ? "out of memory"
                            : "read error");
    free(buf);
    return r;
  }
  char why[256];
  r = credentials_parse(buf, n, out, why, sizeof why);
  free(buf);
  if (r != 0) snprintf(err, errlen, "%s: %s", path, why);
  return r;
}

/* ------------------------------------------------------------ lookups */

const credential *credentials_find(const credentials *set, const char *token, size_t len) {
  if (!set || len == 0) return NULL;
  uint8_t h[CREDENTIAL_HASH_SIZE];
  sha256(token, len, h);
  const credential *found = NULL;
  for (uint32_t i = 0; i < set->n; i++) {
    int same = CRYPTO_memcmp(set->items[i].hash, h, CREDENTIAL_HASH_SIZE) == 0;
    if (same) found = &set->items[i]; /* hashes are unique: at most one matches */
  }
  return found;
}

const credential *credentials_named(const credentials *set, const char *name) {
  for (uint32_t i = 0; set && i < set->n; i++)
    if (strcmp(set->items[i].name, name) == 0) return &set->items[i];
  return NULL;
}

int credential_allows(const credential *c, const char *id, size_t len) {
  for (uint32_t i = 0; i < c->npatterns; i++) {
    const credential_pattern *p = &c->patterns[i];
    if (p->is_prefix ? len >= p->len && memcmp(id, p->text, p->len) == 0
                     : len == p->len && memcmp(id, p->text, len) == 0)
      return 1;
  }
  return 0;
}

/* ------------------------------------------------------------ the store */

/* Under the lock, or before the store is shared: points every credential
 * of set at its name's count, made on first sight. Returns 0 or -ENOMEM. */
static int attach_counts(credentials_store *st, credentials *set) {
  for (uint32_t i = 0; i < set->n; i++) {
    credential *c = &set->items[i];
    credential_count *k = st->counts;
    while (k && strcmp(k->name, c->name) != 0) k = k->next;
    if (!k) {
      if (!(k = calloc(1, sizeof *k))) return -ENOMEM;
      memcpy(k->name, c->name, sizeof k->name);
      atomic_init(&k->ids_added, 0);
      k->next = st->counts;
      st->counts = k;
    }
    c->ids_added = &k->ids_added;
  }
  return 0;
}

int credentials_store_open(credentials_store *st, const char *path, char *err, size_t errlen) {
  memset(st, 0, sizeof *st);
  st->path = strdup(path);
  if (!st->path) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  int r = credentials_load(path, &st->current, err, errlen);
  if (r == 0 && (r = attach_counts(st, st->current)) != 0) snprintf(err, errlen, "out of memory");
  if (r != 0) {
    credentials_unref(st->current);
    while (st->counts) {
      credential_count *k = st->counts;
      st->counts = k->next;
      free(k);
    }
    free(st->path);
    st->path = NULL;
    return r;
  }
  pthread_mutex_init(&st->lock, NULL);
  atomic_init(&st->gen, 1);
  return 0;
}

void credentials_store_close(credentials_store *st) {
  if (!st->path) return;
  credentials_unref(st->current);
  while (st->counts) {
    credential_count *k = st->counts;
    st->counts = k->next;
    free(k);
  }
  pthread_mutex_destroy(&st->lock);
  free(st->path);
  memset(st, 0, sizeof *st);
}

credentials *credentials_current(credentials_store *st) {
  pthread_mutex_lock(&st->lock);
  credentials *set = credentials_ref(st->current);
  pthread_mutex_unlock(&st->lock);
  return set;
}

uint64_t credentials_generation(credentials_store *st) { return atomic_load(&st->gen); }

static int same_credential(const credential *a, const credential *b) {
  if (memcmp(a->hash, b->hash, CREDENTIAL_HASH_SIZE) != 0 || a->npatterns != b->npatterns) return 0;
  for (uint32_t i = 0; i < a->npatterns; i++)
    if (a->patterns[i].is_prefix != b->patterns[i].is_prefix || strcmp(a->patterns[i].text, b->patterns[i].text) != 0)
      return 0;
  return 1;
}

/* Appends " WHAT name, name" for the names of `from` that `pick` says. */
static void list_names(char *buf, size_t cap, const char *what, const credentials *from, const credentials *other,
                       int (*pick)(const credential *c, const credentials *other)) {
  size_t at = strlen(buf);
  int first = 1;
  for (uint32_t i = 0; i < from->n && at < cap; i++) {
    if (!pick(&from->items[i], other)) continue;
    int n = snprintf(buf + at, cap - at, "%s%s%s",
                     !first               ? ", "
                     : buf[at - 1] == ':' ? " "
                                          : "; ",
                     first ? what : "", from->items[i].name);
    if (n < 0) return;
    at += (size_t)n;
    first = 0;
  }
}

static int absent(const credential *c, const credentials *other) { return credentials_named(other, c->name) == NULL; }

static int changed(const credential *c, const credentials *other) {
  const credential *o = credentials_named(other, c->name);
  return o && !same_credential(c, o);
}

int credentials_reload(credentials_store *st, char *changes, size_t changeslen, char *err, size_t errlen) {
  credentials *fresh;
  int r = credentials_load(st->path, &fresh, err, errlen);
  if (r != 0) return r;
  pthread_mutex_lock(&st->lock);
  if (attach_counts(st, fresh) != 0) {
    pthread_mutex_unlock(&st->lock);
    credentials_unref(fresh);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  credentials *old = st->current;
  st->current = fresh;
  atomic_fetch_add(&st->gen, 1);
  pthread_mutex_unlock(&st->lock);
  snprintf(changes, changeslen, "%u credential%s:", (unsigned)fresh->n, fresh->n == 1 ? "" : "s");
  size_t before = strlen(changes);
  list_names(changes, changeslen, "added ", fresh, old, absent);
  list_names(changes, changeslen, "removed ", old, fresh, absent);
  list_names(changes, changeslen, "changed ", fresh, old, changed);
  if (strlen(changes) == before) snprintf(changes + before, changeslen - before, " no change");
  credentials_unref(old);
  return 0;
}
