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

#endif
