/* test-cli.h - what the command-line tests share: argv from string
 * literals, and running the real telegate binary to see what a user sees
 * (exit status, stdout, stderr). */
#ifndef TELEGATE_TEST_CLI_H
#define TELEGATE_TEST_CLI_H

#include "cli.h"
#include "helpers.h"

#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The literals as the argv a parser takes. The parser never writes to
 * argv, so dropping the const is safe. */
#define TEST_ARGV(...) ((char *const *)(const char *const[]){__VA_ARGS__})
#define TEST_ARGC(...) ((int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)))

typedef struct test_cli_run {
  int status; /* exit status; -1 if killed by a signal */
  char out[16384], err[4096];
} test_cli_run;

static inline void test_cli_read(FILE *f, char *buf, size_t len) {
  rewind(f);
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
}

/* The path of the telegate binary this build made, beside the tests. */
static inline void test_cli_binary(char *bin, size_t len) {
  char self[512];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ck_assert_int_gt(n, 0);
  self[n] = '\0';
  snprintf(bin, len, "%s/../src/telegate", dirname(self));
}

/* Runs the telegate binary with argv (argv[0] included, NULL-ended) to its
 * end, its stdout and stderr caught in files. */
static inline void test_cli_run_binary(const char *const argv[], test_cli_run *run) {
  char bin[600];
  test_cli_binary(bin, sizeof bin);
  FILE *out = tmpfile(), *err = tmpfile();
  ck_assert(out && err);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(fileno(out), 1);
    dup2(fileno(err), 2);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  run->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  test_cli_read(out, run->out, sizeof run->out);
  test_cli_read(err, run->err, sizeof run->err);
}

/* A usage error as a user meets it: exit status 2, nothing on stdout, one
 * line on stderr that starts with "telegate COMMAND: " and contains
 * `needle`. */
static inline void test_cli_usage_error(const char *const argv[], const char *needle) {
  test_cli_run run;
  test_cli_run_binary(argv, &run);
  ck_assert_int_eq(run.status, 2);
  ck_assert_str_eq(run.out, "");
  char prefix[64];
  snprintf(prefix, sizeof prefix, "telegate %s: ", argv[1]);
  ck_assert_msg(strncmp(run.err, prefix, strlen(prefix)) == 0, "stderr '%s' does not start with '%s'", run.err, prefix);
  ck_assert_msg(strstr(run.err, needle) != NULL, "stderr '%s' does not name '%s'", run.err, needle);
  char *newline = strchr(run.err, '\n');
  ck_assert_ptr_nonnull(newline);
  ck_assert_str_eq(newline, "\n");
}

/* `telegate COMMAND --help`: exit 0, the usage on stdout listing every
 * option of the table, nothing on stderr. */
static inline void test_cli_help_lists(const char *command, const cli_command *cmd) {
  const char *const argv[] = {"telegate", command, "--help", NULL};
  test_cli_run run;
  test_cli_run_binary(argv, &run);
  ck_assert_int_eq(run.status, 0);
  ck_assert_str_eq(run.err, "");
  ck_assert_ptr_nonnull(strstr(run.out, "usage: telegate "));
  for (size_t i = 0; i < cmd->noptions; i++) {
    char flag[80];
    snprintf(flag, sizeof flag, "  --%s ", cmd->options[i].name);
    ck_assert_msg(strstr(run.out, flag) != NULL, "--help does not list --%s", cmd->options[i].name);
  }
}

#endif
