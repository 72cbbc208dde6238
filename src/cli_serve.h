/* cli_serve.h - the command lines of `telegate serve` and `telegate devices`.
 *
 * Flags take their value as the next argument or after '=', as for
 * `telegate demo` (cli.h). HOST:PORT takes a numeric IPv4 address, an IPv6
 * one in brackets, or "localhost". */
#ifndef TELEGATE_CLI_SERVE_H
#define TELEGATE_CLI_SERVE_H

#include "serve.h"
#include "simulator.h"

#include <stdio.h>

/* Parse the arguments after the command into *cfg (first set to the
 * defaults). Return CLI_OK, CLI_HELP or CLI_ERROR (cli.h) with a one-line
 * message naming the flag in err. */
int cli_parse_serve(int argc, char **argv, serve_config *cfg, char *err, size_t errlen);
int cli_parse_devices(int argc, char **argv, sim_config *cfg, char *err, size_t errlen);

void cli_serve_usage(FILE *out);
void cli_devices_usage(FILE *out);

#endif
