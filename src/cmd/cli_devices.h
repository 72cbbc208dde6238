/* cli_devices.h - the command line of `telegate devices`, the fleet
 * simulator (cli.h parses it). --connect takes HOST:PORT as serve's
 * listen flags do (cli_serve.h). */
#ifndef TELEGATE_CLI_DEVICES_H
#define TELEGATE_CLI_DEVICES_H

#include "cli.h"
#include "simulator.h"

extern const cli_command cli_devices;

/* Sets *cfg to the defaults, then parses the arguments after "devices"
 * into it; strings go into *strings. Returns as cli_parse does. */
int cli_parse_devices(int argc, char *const argv[], sim_config *cfg, cli_strings *strings, char *err, size_t errlen);

#endif
