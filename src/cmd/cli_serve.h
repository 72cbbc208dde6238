/* cli_serve.h - the command line of `telegate serve` (cli.h parses it).
 *
 * --listen-devices and --listen-http each take HOST:PORT and keep their
 * own copy of the host: HOST is a numeric IPv4 address, an IPv6 one in
 * brackets, or "localhost"; port 0 means any free port. */
#ifndef TELEGATE_CLI_SERVE_H
#define TELEGATE_CLI_SERVE_H

#include "cli.h"
#include "gateway.h"

extern const cli_command cli_serve;

/* Sets *cfg to the defaults, then parses the arguments after "serve" into
 * it; strings go into *strings. Returns as cli_parse does. */
int cli_parse_serve(int argc, char *const argv[], serve_config *cfg, cli_strings *strings, char *err, size_t errlen);

/* serve's reload on SIGHUP (serve_config.on_reload, arg a
 * cli_serve_reloader): parses the same command line again - the config
 * file as it is now, the flags still winning - and compares every option
 * with the running configuration. What can change live changes (the log
 * level, the health rounds' period and timeout, the limits on a device
 * connection of serve_limits and the health requests per device); every
 * other change is
 * logged as taking a restart, not applied; a file that does not parse
 * changes nothing and says why. */
typedef struct cli_serve_reloader {
  int argc;
  char *const *argv;
  serve_config running; /* what serve runs with: its live options follow each reload */
} cli_serve_reloader;

void cli_serve_reload(serve *s, void *arg);

#endif
