/* cli_credentials.c - `telegate credentials add | hash`; see
 * cli_credentials.h. */
#include "cli_credentials.h"

#include "credentials.h"
#include "protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: telegate credentials add FILE NAME PATTERN...   a new token for devices PATTERN...: the line goes\n"
    "                                                        into FILE, the token (shown once) to stdout\n"
    "       telegate credentials hash                       the SHA-256 of the token on stdin, as FILE wants it\n"
    "\n"
    "A PATTERN is a device id (pump-1) or an id's prefix and '*' (sensor-*; '*' alone: every id).\n"
    "serve reads FILE with --credentials FILE and again on SIGHUP.\n";

static int hash_cmd(void) {
  char token[PROTOCOL_TOKEN_MAX + 2];
  size_t n = fread(token, 1, sizeof token, stdin);
  if (n > 0 && token[n - 1] == '\n') n--;
  if (n > 0 && token[n - 1] == '\r') n--;
  if (n == 0 || n > PROTOCOL_TOKEN_MAX) {
    fprintf(stderr, "telegate credentials hash: a token is 1 to %d bytes\n", PROTOCOL_TOKEN_MAX);
    return 1;
  }
  for (size_t i = 0; i < n; i++)
    if (token[i] <= 0x20 || token[i] >= 0x7f || token[i] == '"' || token[i] == '\\') {
      fprintf(stderr, "telegate credentials hash: a token is printable ASCII without blanks, '\"' or '\\'\n");
      return 1;
    }
  char hex[2 * CREDENTIAL_HASH_SIZE + 1];
  credentials_hash_hex(token, n, hex);
  printf("%s\n", hex);
  return 0;
}

static int add_cmd(int argc, char **argv) {
  const char *path = argv[0], *name = argv[1];
  unsigned char raw[32];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
    fprintf(stderr, "telegate credentials add: no random bytes: %s\n", strerror(errno));
    return 1;
  }
  char token[2 * sizeof raw + 1], hex[2 * CREDENTIAL_HASH_SIZE + 1];
  for (size_t i = 0; i < sizeof raw; i++) snprintf(token + 2 * i, 3, "%02x", raw[i]);
  credentials_hash_hex(token, strlen(token), hex);
  /* The line, then the whole file with it must parse. */
  char line[4096];
  size_t at = (size_t)snprintf(line, sizeof line, "%s %s", name, hex);
  for (int i = 2; i < argc && at < sizeof line; i++)
    at += (size_t)snprintf(line + at, sizeof line - at, " %s", argv[i]);
  if (at + 2 > sizeof line) {
    fprintf(stderr, "telegate credentials add: too many patterns\n");
    return 2;
  }
  line[at++] = '\n';
  line[at] = 0;
  FILE *f = fopen(path, "r");
  char *text = NULL;
  size_t len = 0;
  if (f) {
    FILE *mem = open_memstream(&text, &len);
    char buf[8192];
    size_t n;
    while (mem && (n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, mem);
    if (mem) fclose(mem);
    fclose(f);
  } else if (errno != ENOENT) {
    fprintf(stderr, "telegate credentials add: cannot read %s: %s\n", path, strerror(errno));
    return 1;
  }
  int needs_newline = len > 0 && text[len - 1] != '\n';
  size_t total = len + (size_t)needs_newline + at;
  char *all = malloc(total + 1);
  if (!all) {
    free(text);
    return 1;
  }
  if (len) memcpy(all, text, len);
  if (needs_newline) all[len] = '\n';
  memcpy(all + len + (size_t)needs_newline, line, at + 1);
  free(text);
  credentials *set;
  char err[300];
  int r = credentials_parse(all, total, &set, err, sizeof err);
  free(all);
  if (r != 0) {
    fprintf(stderr, "telegate credentials add: %s with the new line would not read: %s\n", path, err);
    return r == -EINVAL ? 2 : 1;
  }
  credentials_unref(set);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
  FILE *out = fd >= 0 ? fdopen(fd, "a") : NULL;
  if (!out || (needs_newline && fputc('\n', out) == EOF) || fputs(line, out) == EOF || fclose(out) != 0) {
    fprintf(stderr, "telegate credentials add: cannot write %s: %s\n", path, strerror(errno));
    if (!out && fd >= 0) close(fd);
    return 1;
  }
  printf("%s\n", token);
  fflush(stdout); /* before the note on stderr, when both go to one file */
  fprintf(stderr,
          "telegate credentials add: %s added to %s; the token above is shown once: give it to the device(s), which "
          "send it in their hello; SIGHUP makes a running serve read the file again\n",
          name, path);
  return 0;
}

int cli_credentials_main(int argc, char **argv) {
  if (argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (argc == 1 && strcmp(argv[0], "hash") == 0) return hash_cmd();
  if (argc >= 4 && strcmp(argv[0], "add") == 0) return add_cmd(argc - 1, argv + 1);
  fputs(usage_text, stderr);
  return 2;
}
