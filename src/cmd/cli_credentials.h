/* cli_credentials.h - `telegate credentials`: makes the device port's
 * credentials (credentials.h) for the operator.
 *
 *   telegate credentials add FILE NAME PATTERN...
 *       makes a random token (32 bytes from the kernel, as 64 hex digits),
 *       appends "NAME SHA256 PATTERN..." to FILE (created 0600 when
 *       absent), after checking that the file with the new line still
 *       parses, and prints the token on stdout, once: the device sends it
 *       in its hello; the file never holds it.
 *   telegate credentials hash
 *       reads a token on stdin (one trailing newline is not part of it)
 *       and prints its SHA-256 as the file wants it, for tokens made
 *       elsewhere.
 *
 * Exit status: 0, 1 when something failed (said on stderr), 2 for a
 * usage error. */
#ifndef TELEGATE_CLI_CREDENTIALS_H
#define TELEGATE_CLI_CREDENTIALS_H

int cli_credentials_main(int argc, char **argv);

#endif
