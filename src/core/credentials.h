/* credentials.h - who may speak for which device ids on the device port.
 *
 * A credential is a name, the SHA-256 of a secret token, and the device
 * ids its holder may send readings for: exact ids ("pump-1") and prefix
 * patterns ("sensor-*" is every id that starts with "sensor-", "*" alone
 * every id). A device proves it holds one by the token in its hello
 * (protocol.h); the gateway hashes the token and looks the hash up.
 *
 * The operator keeps the credentials in a text file, one per line:
 *
 *     # NAME  SHA256-OF-TOKEN (64 hex digits)  PATTERN...
 *     plant-a 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 sensor-* pump-1
 *
 * Fields are separated by blanks; blank lines and lines starting with
 * '#' are skipped. A name is 1 to 64 bytes of [A-Za-z0-9_.:-] and unique;
 * a hash appears once (two credentials with one token could not be told
 * apart); each credential has at least one pattern, and a pattern is a
 * device id (protocol.h's rule) or such an id's prefix, possibly empty,
 * followed by '*'. Only hashes are stored, so the file does not hold
 * anything that lets its reader speak for a device; `telegate
 * credentials add` makes a token and its line, and `printf %s TOKEN |
 * sha256sum` gives the hash by hand.
 *
 * A credentials set is immutable once loaded and reference-counted: a
 * connection keeps the set it authenticated against for as long as it
 * looks at it. A store holds the current set; credentials_reload reads
 * the file again and swaps the new set in at once (a connection sees it
 * at its next look, by the generation number), or keeps the old set
 * when the file is bad. Tokens are never logged, and token hashes are
 * compared in constant time.
 *
 * Threads: every call may come from any thread; a set is read without a
 * lock, the store's swap takes one mutex. */
#ifndef TELEGATE_CREDENTIALS_H
#define TELEGATE_CREDENTIALS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CREDENTIAL_NAME_MAX  64
#define CREDENTIAL_HASH_SIZE 32 /* SHA-256 */

/* An id, or an id's prefix when is_prefix (then it matches every id that
 * starts with it). */
typedef struct credential_pattern {
  uint8_t len;
  uint8_t is_prefix;
  char text[33]; /* NUL-terminated, without the '*' */
} credential_pattern;

typedef struct credential {
  char name[CREDENTIAL_NAME_MAX + 1];
  uint8_t hash[CREDENTIAL_HASH_SIZE];
  uint32_t npatterns;
  credential_pattern *patterns;
  atomic_uint *ids_added; /* in a store: device ids its holders added to the registry, kept across reloads by name;
                             NULL outside a store */
} credential;

/* An immutable set of credentials. */
typedef struct credentials {
  atomic_uint refs;
  uint32_t n;
  credential *items;
} credentials;

/* Parses a credentials file's text (len bytes; no NUL needed). Returns 0
 * with *out holding one reference, -EINVAL with "line N: why" in err, or
 * -ENOMEM. */
int credentials_parse(const char *text, size_t len, credentials **out, char *err, size_t errlen);

/* Reads and parses the file at path (at most 16 MiB). Returns 0, -EINVAL
 * (the file's content, "PATH: line N: why" in err), -EFBIG, -ENOMEM or
 * the -errno of opening or reading it, with a reason in err. */
int credentials_load(const char *path, credentials **out, char *err, size_t errlen);

/* Adds a reference to set (NULL is allowed) and returns it. */
credentials *credentials_ref(credentials *set);

/* Drops a reference; the last frees the set. NULL is allowed. */
void credentials_unref(credentials *set);

/* The credential whose token is token[0 .. len), or NULL. Every
 * credential's hash is compared, in constant time, whatever matches. */
const credential *credentials_find(const credentials *set, const char *token, size_t len);

/* The credential of set called name, or NULL. */
const credential *credentials_named(const credentials *set, const char *name);

/* Whether c covers device id[0 .. len). */
int credential_allows(const credential *c, const char *id, size_t len);

/* SHA-256 of token[0 .. len), as 64 lowercase hex digits and a NUL. */
void credentials_hash_hex(const char *token, size_t len, char hex[2 * CREDENTIAL_HASH_SIZE + 1]);

/* A store's count per credential name (credential.ids_added). */
typedef struct credential_count {
  struct credential_count *next;
  atomic_uint ids_added;
  char name[CREDENTIAL_NAME_MAX + 1];
} credential_count;

/* The current set, swapped whole by a reload. */
typedef struct credentials_store {
  pthread_mutex_t lock;
  credential_count *counts; /* one per name ever loaded, under the lock; freed at close */
  credentials *current;     /* under the lock */
  atomic_uint_fast64_t gen; /* rises with every swap */
  char *path;               /* the file reloads read */
} credentials_store;

/* Loads path into a new store. Returns credentials_load's codes. */
int credentials_store_open(credentials_store *st, const char *path, char *err, size_t errlen);
void credentials_store_close(credentials_store *st);

/* The current set, with a reference the caller drops with
 * credentials_unref. */
credentials *credentials_current(credentials_store *st);

/* The generation of the current set: a caller holding a set from an
 * older one should take the current one again. */
uint64_t credentials_generation(credentials_store *st);

/* Reads the store's file again and swaps the new set in. On success
 * writes into changes a one-line account of what changed by credential
 * name ("2 credentials: added plant-b; removed old-1; changed plant-a"
 * or "... no change"), without tokens or hashes. On failure the current
 * set stays and err says why. Returns credentials_load's codes. */
int credentials_reload(credentials_store *st, char *changes, size_t changeslen, char *err, size_t errlen);

#endif
