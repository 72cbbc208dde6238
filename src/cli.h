/* cli.h - the command line of `telegate demo`.
 *
 * Flags take their value as the next argument or after '='. A preset sets
 * its numbers first, wherever --preset stands, so an explicit flag always
 * wins over the preset. Fault flags that name a device or client are
 * checked against the final counts. */
#ifndef TELEGATE_CLI_H
#define TELEGATE_CLI_H

#include "demo.h"

#include <stdio.h>

enum { CLI_OK = 0, CLI_HELP = 1, CLI_ERROR = 2 };

/* Parses the arguments after "demo" into *cfg (which it first sets to the
 * defaults). Returns CLI_OK, CLI_HELP (--help seen) or CLI_ERROR with a
 * one-line message naming the flag in err. */
int cli_parse_demo(int argc, char **argv, demo_config *cfg, char *err, size_t errlen);

/* The usage text of `telegate demo`. */
void cli_demo_usage(FILE *out);

#endif
