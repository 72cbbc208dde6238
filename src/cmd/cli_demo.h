/* cli_demo.h - the command line of `telegate demo` (cli.h parses it).
 *
 * --preset sets its numbers first, wherever it stands, so an explicit
 * flag always wins over the preset. Fault flags that name a device or a
 * client are checked against the final counts. */
#ifndef TELEGATE_CLI_DEMO_H
#define TELEGATE_CLI_DEMO_H

#include "cli.h"
#include "demo.h"

extern const cli_command cli_demo;

/* Sets *cfg to the defaults, then parses the arguments after "demo" into
 * it; strings go into *strings. Returns as cli_parse does. */
int cli_parse_demo(int argc, char *const argv[], demo_config *cfg, cli_strings *strings, char *err, size_t errlen);

#endif
