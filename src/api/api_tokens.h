/* api_tokens.h - bearer tokens from files, for api_config.authorize.
 *
 * Two files, each optional: the read tokens and the admin tokens. A file
 * holds one token per line as the SHA-256 of the token in hex (64 digits,
 * as `printf %s "$TOKEN" | sha256sum` prints it); blank lines and lines
 * starting with '#' are skipped. Only the hashes are kept, so neither the
 * files nor serve's memory hold a token itself.
 *
 * api_tokens_authorize grants:
 *   API_ACCESS_OPEN   always;
 *   API_ACCESS_READ   a read or an admin token; anyone when no read
 *                     token is configured;
 *   API_ACCESS_ADMIN  an admin token; when no admin token is configured
 *                     but read tokens are, a read token; anyone when no
 *                     token is configured at all.
 * A presented token is hashed and compared with each hash in constant
 * time, so the time taken does not tell how much of a guess was right.
 *
 * Threads: the set never changes after load; authorize runs from any
 * worker at once. */
#ifndef TELEGATE_API_TOKENS_H
#define TELEGATE_API_TOKENS_H

#include "api.h"

#include <stddef.h>

typedef struct api_tokens api_tokens;

/* Reads the files (either path may be NULL). Returns 0, -errno of a file
 * that cannot be read, TG_EINVAL (a line that is not 64 hex digits, with
 * the file and line in err) or TG_ENOMEM. */
int api_tokens_load(api_tokens **out, const char *read_path, const char *admin_path, char *err, size_t errlen);

/* api_config.authorize with ctx an api_tokens: 0, -EACCES (no token, or
 * one it does not know) or -EPERM (a read token where admin is needed). */
int api_tokens_authorize(void *ctx, const char *bearer, api_access need);

/* Nonzero when any token is configured. */
int api_tokens_any(const api_tokens *t);

void api_tokens_free(api_tokens *t);

#endif
