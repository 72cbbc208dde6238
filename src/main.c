/* main.c - the telegate command: `telegate demo` today; `serve` and
 * `devices` share this entry point when they come. */
#include "cli.h"
#include "demo.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
  fprintf(out, "usage: telegate <command> [flags]\n\n"
               "commands:\n"
               "  demo    run the reference telemetry scenario and report what each primitive did\n\n"
               "`telegate demo --help` lists its flags.\n");
}

static int cmd_demo(int argc, char **argv) {
  demo_config cfg;
  char err[256];
  switch (cli_parse_demo(argc, argv, &cfg, err, sizeof err)) {
  case CLI_HELP:
    cli_demo_usage(stdout);
    return 0;
  case CLI_ERROR:
    fprintf(stderr, "telegate demo: %s\n", err);
    return 2;
  default:
    break;
  }
  cfg.handle_signals = 1;
  demo_summary s;
  int r = demo_run(&cfg, &s);
  if (r != 0) return 1;
  return s.lossless && s.tasks.aborted == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "demo") == 0) return cmd_demo(argc - 2, argv + 2);
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "telegate: unknown command '%s'\n", argv[1]);
  return 2;
}
