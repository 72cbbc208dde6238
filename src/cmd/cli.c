/* cli.c - the table-driven flag parser every command uses; see cli.h. */
#include "cli.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The sections a config file may have: the commands' names. */
static const char *const sections[] = {"demo", "serve", "devices"};

struct cli_string {
  struct cli_string *next;
  char text[];
};

void cli_strings_free(cli_strings *s) {
  while (s->head) {
    struct cli_string *next = s->head->next;
    free(s->head);
    s->head = next;
  }
}

/* A copy of len bytes of text that lives until cli_strings_free; NULL
 * when out of memory. */
static const char *strings_copy(cli_strings *s, const char *text, size_t len) {
  struct cli_string *c = malloc(sizeof *c + len + 1);
  if (!c) return NULL;
  memcpy(c->text, text, len);
  c->text[len] = '\0';
  c->next = s->head;
  s->head = c;
  return c->text;
}

/* What an option wants, as the end of "--NAME wants ...". */
static void describe(const cli_option *opt, char *buf, size_t len) {
  switch (opt->kind) {
  case CLI_FLAG: snprintf(buf, len, "no value"); return;
  case CLI_INT: snprintf(buf, len, "an integer from %.15g to %.15g", opt->min, opt->max); return;
  case CLI_U64: snprintf(buf, len, "an integer from 0 to %" PRIu64, UINT64_MAX); return;
  case CLI_DOUBLE:
    if (opt->min_open)
      snprintf(buf, len, "a number above %.15g, at most %.15g", opt->min, opt->max);
    else
      snprintf(buf, len, "a number from %.15g to %.15g", opt->min, opt->max);
    return;
  case CLI_STRING: snprintf(buf, len, "a value"); return;
  case CLI_PATH: snprintf(buf, len, "a path"); return;
  case CLI_ENUM: {
    size_t used = 0, n = 0;
    buf[0] = '\0';
    while (opt->words[n].word) n++;
    for (size_t i = 0; i < n && used < len; i++)
      used += (size_t)snprintf(buf + used, len - used, "%s%s",
                               i == 0      ? ""
                               : i + 1 < n ? ", "
                                           : " or ",
                               opt->words[i].word);
    return;
  }
  case CLI_HOSTPORT:
    snprintf(buf, len,
             "HOST:PORT (HOST a numeric IPv4 address, an IPv6 one in brackets or localhost; PORT 0 to 65535)");
    return;
  case CLI_DURATION:
    snprintf(buf, len, "a duration with a unit (ms, s, m, h, d) from %.15g ms to %.15g ms, or 0", opt->min, opt->max);
    return;
  }
}

/* The units of a CLI_DURATION, largest first (cli_write_config picks the
 * largest that divides). */
static const struct {
  const char *unit;
  int64_t ms;
} duration_units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};

/* "30d", "250ms", "0": milliseconds, or -1. */
static int64_t parse_duration(const char *value) {
  char *end;
  if (!isdigit((unsigned char)*value)) return -1;
  errno = 0;
  long long n = strtoll(value, &end, 10);
  if (errno) return -1;
  if (*end == '\0') return n == 0 ? 0 : -1; /* a number alone is 0, or it needs its unit */
  for (size_t i = 0; i < sizeof duration_units / sizeof duration_units[0]; i++)
    if (strcmp(end, duration_units[i].unit) == 0)
      return n > INT64_MAX / duration_units[i].ms ? -1 : (int64_t)n * duration_units[i].ms;
  return -1;
}

static int wrong_value(const cli_option *opt, const char *value, char *err, size_t errlen) {
  char want[160];
  describe(opt, want, sizeof want);
  snprintf(err, errlen, "--%s wants %s, got '%s'", opt->name, want, value);
  return -EINVAL;
}

static int is_host(const char *host) {
  unsigned char addr[16];
  if (strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, addr) == 1) return 1;
  /* An IPv6 address may name its interface ("fe80::1%eth0"), which the
   * socket layer accepts and inet_pton does not. */
  char v6[INET6_ADDRSTRLEN];
  size_t len = strcspn(host, "%");
  if (len >= sizeof v6 || (host[len] == '%' && host[len + 1] == '\0')) return 0;
  memcpy(v6, host, len);
  v6[len] = '\0';
  return inet_pton(AF_INET6, v6, addr) == 1;
}

/* HOST:PORT, where HOST may be an IPv6 address in brackets. The host is
 * copied into *strings. */
static int set_hostport(const cli_option *opt, const char *value, void *cfg, cli_strings *strings, char *err,
                        size_t errlen) {
  const char *colon = strrchr(value, ':');
  if (!colon) return wrong_value(opt, value, err, errlen);
  const char *host = value, *port = colon + 1;
  size_t host_len = (size_t)(colon - value);
  if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
    host++;
    host_len -= 2;
  }
  size_t digits = strspn(port, "0123456789");
  long port_number = digits > 0 && digits <= 5 && port[digits] == '\0' ? atol(port) : -1;
  if (host_len == 0 || port_number < 0 || port_number > 65535) return wrong_value(opt, value, err, errlen);
  const char *copy = strings_copy(strings, host, host_len);
  if (!copy) return -ENOMEM;
  if (!is_host(copy)) return wrong_value(opt, value, err, errlen);
  *(const char **)((char *)cfg + opt->field) = copy;
  *(int *)((char *)cfg + opt->port_field) = (int)port_number;
  return 0;
}

int cli_option_set(const cli_option *opt, const char *value, void *cfg, cli_strings *strings, char *err,
                   size_t errlen) {
  void *field = (char *)cfg + opt->field;
  if (opt->kind == CLI_FLAG) {
    if (value) {
      snprintf(err, errlen, "--%s takes no value, got '%s'", opt->name, value);
      return -EINVAL;
    }
    *(int *)field = 1;
    return 0;
  }
  if (!value) {
    char want[160];
    describe(opt, want, sizeof want);
    snprintf(err, errlen, "--%s needs a value: %s", opt->name, want);
    return -EINVAL;
  }
  char *end;
  errno = 0;
  switch (opt->kind) {
  case CLI_INT: {
    long n = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || errno || n < opt->min || n > opt->max)
      return wrong_value(opt, value, err, errlen);
    *(int *)field = (int)n;
    break;
  }
  case CLI_U64: {
    unsigned long long n = strtoull(value, &end, 10);
    /* strtoull takes "-1" as the largest value: a sign is refused. */
    if (!isdigit((unsigned char)*value) || *end != '\0' || errno) return wrong_value(opt, value, err, errlen);
    *(uint64_t *)field = n;
    break;
  }
  case CLI_DOUBLE: {
    double x = strtod(value, &end);
    int low_ok = opt->min_open ? x > opt->min : x >= opt->min;
    if (*value == '\0' || *end != '\0' || errno || !isfinite(x) || !low_ok || x > opt->max)
      return wrong_value(opt, value, err, errlen);
    *(double *)field = x;
    break;
  }
  case CLI_PATH:
    if (*value == '\0') return wrong_value(opt, value, err, errlen);
    /* fall through */
  case CLI_STRING: {
    const char *copy = strings_copy(strings, value, strlen(value));
    if (!copy) return -ENOMEM;
    *(const char **)field = copy;
    break;
  }
  case CLI_ENUM: {
    const cli_word *w = opt->words;
    while (w->word && strcmp(w->word, value) != 0) w++;
    if (!w->word) return wrong_value(opt, value, err, errlen);
    *(int *)field = w->value;
    break;
  }
  case CLI_HOSTPORT: {
    int r = set_hostport(opt, value, cfg, strings, err, errlen);
    if (r != 0) return r;
    break;
  }
  case CLI_DURATION: {
    int64_t ms = parse_duration(value);
    if (ms < 0 || (ms != 0 && ((double)ms < opt->min || (double)ms > opt->max)))
      return wrong_value(opt, value, err, errlen);
    *(int64_t *)field = ms;
    break;
  }
  case CLI_FLAG: break; /* set above */
  }
  if (opt->preset) opt->preset(cfg);
  return 0;
}

const cli_option *cli_option_find(const cli_command *cmd, const char *name, size_t len) {
  for (size_t i = 0; i < cmd->noptions; i++)
    if (strlen(cmd->options[i].name) == len && memcmp(cmd->options[i].name, name, len) == 0) return &cmd->options[i];
  return NULL;
}

/* The options every command has besides its table's. */
static int is_builtin(const char *arg, size_t len, const char *name) {
  return len == strlen(name) + 2 && strncmp(arg, "--", 2) == 0 && memcmp(arg + 2, name, len - 2) == 0;
}

/* ------------------------------------------------------------ config files */

typedef struct file_pass {
  const cli_command *cmd;
  void *cfg;
  cli_strings *strings;
  int presets;
  char *err;
  size_t errlen;
  int failed;
} file_pass;

/* The entry failed (fp->err says why). Returning 0 makes inih keep the
 * line number of the first failure. */
static int entry_failed(file_pass *fp) {
  fp->failed = 1;
  return 0;
}

static int is_section(const char *name) {
  for (size_t i = 0; i < sizeof sections / sizeof *sections; i++)
    if (strcmp(sections[i], name) == 0) return 1;
  return 0;
}

/* inih's handler: one `key = value` of the file. */
static int on_entry(void *user, const char *section, const char *key, const char *value) {
  file_pass *fp = user;
  if (fp->failed) return 1;
  if (!*section) {
    snprintf(fp->err, fp->errlen, "%s: a key outside a [section]", key);
    return entry_failed(fp);
  }
  if (!is_section(section)) {
    snprintf(fp->err, fp->errlen, "[%s]: no such section (a command's name)", section);
    return entry_failed(fp);
  }
  if (strcmp(section, fp->cmd->name) != 0) return 1;
  const cli_option *opt = cli_option_find(fp->cmd, key, strlen(key));
  if (!opt) {
    snprintf(fp->err, fp->errlen, "%s: no such key in [%s]; telegate %s --help lists them", key, section, section);
    return entry_failed(fp);
  }
  if ((opt->preset != NULL) != fp->presets) return 1;
  if (opt->kind == CLI_FLAG) {
    int on = strcmp(value, "true") == 0;
    if (!on && strcmp(value, "false") != 0) {
      snprintf(fp->err, fp->errlen, "%s wants true or false, got '%s'", key, value);
      return entry_failed(fp);
    }
    *(int *)((char *)fp->cfg + opt->field) = on;
    return 1;
  }
  int r = cli_option_set(opt, value, fp->cfg, fp->strings, fp->err, fp->errlen);
  if (r == 0) return 1;
  if (r == -EINVAL && strncmp(fp->err, "--", 2) == 0) /* the flag's message, about a key */
    memmove(fp->err, fp->err + 2, strlen(fp->err + 2) + 1);
  return entry_failed(fp);
}

/* Sets the options of the file at path: the presets, or the others. */
static int file_pass_run(const cli_command *cmd, const char *path, void *cfg, cli_strings *strings, int presets,
                         char *err, size_t errlen) {
  char why[200] = "";
  file_pass fp = {cmd, cfg, strings, presets, why, sizeof why, 0};
  int line = ini_parse(path, on_entry, &fp);
  if (line == 0) return 0;
  if (line == -1)
    snprintf(err, errlen, "--config: cannot read %s: %s", path, strerror(errno));
  else if (line < 0)
    return -ENOMEM;
  else if (fp.failed)
    snprintf(err, errlen, "%s:%d: %s", path, line, why);
  else
    snprintf(err, errlen, "%s:%d: neither a [section] nor a key = value line", path, line);
  return -EINVAL;
}

/* The value of the last --config in argv, or NULL; -EINVAL in *r when
 * one has no value. */
static const char *config_path(int argc, char *const argv[], int *r, char *err, size_t errlen) {
  const char *path = NULL;
  *r = 0;
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "--config=", 9) == 0) {
      path = argv[i] + 9;
    } else if (strcmp(argv[i], "--config") == 0) {
      if (i + 1 == argc) {
        snprintf(err, errlen, "--config needs a value: a path");
        *r = -EINVAL;
        return NULL;
      }
      path = argv[++i];
    }
  }
  return path;
}

/* ------------------------------------------------------------ the command line */

/* One pass over argv. Both passes check every argument's form; the first
 * sets only the presets, the second everything else. */
static int parse_pass(const cli_command *cmd, int argc, char *const argv[], void *cfg, cli_strings *strings,
                      int presets, char *err, size_t errlen) {
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) return CLI_HELP;
    if (arg[0] != '-') {
      snprintf(err, errlen, "unexpected argument '%s': each value follows its flag", arg);
      return -EINVAL;
    }
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (is_builtin(arg, len, "config")) { /* read before: config_path */
      i += !eq;
      continue;
    }
    if (is_builtin(arg, len, "check") && !eq) continue;
    const cli_option *opt = len > 2 && strncmp(arg, "--", 2) == 0 ? cli_option_find(cmd, arg + 2, len - 2) : NULL;
    if (!opt) {
      snprintf(err, errlen, "unknown flag '%.*s'; --help lists the flags", (int)len, arg);
      return -EINVAL;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (!eq && opt->kind != CLI_FLAG && i + 1 < argc) value = argv[++i];
    /* A value where none belongs, or none where one does, is told in the
     * first pass, wherever the option stands. */
    int malformed = (opt->kind == CLI_FLAG) != (value == NULL);
    if (malformed || (opt->preset != NULL) == presets) {
      int r = cli_option_set(opt, value, cfg, strings, err, errlen);
      if (r != 0) return r;
    }
  }
  return 0;
}

int cli_parse(const cli_command *cmd, int argc, char *const argv[], void *cfg, cli_strings *strings, char *err,
              size_t errlen) {
  int r;
  const char *config = config_path(argc, argv, &r, err, errlen);
  /* Presets first, then the rest; in each, the file first. */
  for (int presets = 1; r == 0 && presets >= 0; presets--) {
    if (config) r = file_pass_run(cmd, config, cfg, strings, presets, err, errlen);
    if (r == 0) r = parse_pass(cmd, argc, argv, cfg, strings, presets, err, errlen);
  }
  if (r == 0 && cmd->finish) r = cmd->finish(cfg, err, errlen);
  for (int i = 0; r == 0 && i < argc; i++)
    if (strcmp(argv[i], "--check") == 0) r = CLI_CHECK;
  return r;
}

/* The value's placeholder in --help: "N", "HOST:PORT", "text|json", or
 * the option's own. */
static void placeholder(const cli_option *opt, char *buf, size_t len) {
  static const char *const names[] = {
      [CLI_FLAG] = "",
      [CLI_INT] = " N",
      [CLI_U64] = " N",
      [CLI_DOUBLE] = " X",
      [CLI_STRING] = " TEXT",
      [CLI_PATH] = " PATH",
      [CLI_HOSTPORT] = " HOST:PORT",
      [CLI_DURATION] = " DURATION",
  };
  if (opt->arg) {
    snprintf(buf, len, " %s", opt->arg);
    return;
  }
  if (opt->kind != CLI_ENUM) {
    snprintf(buf, len, "%s", names[opt->kind]);
    return;
  }
  size_t used = 0;
  for (const cli_word *w = opt->words; w->word && used < len; w++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", w == opt->words ? " " : "|", w->word);
}

void cli_usage(const cli_command *cmd, FILE *out) {
  char left[96], arg[64];
  int width = (int)strlen("--help");
  for (size_t i = 0; i < cmd->noptions; i++) {
    placeholder(&cmd->options[i], arg, sizeof arg);
    int w = snprintf(left, sizeof left, "--%s%s", cmd->options[i].name, arg);
    if (w > width) width = w;
  }
  fprintf(out, "usage: telegate %s [flags]\n\n%s\n\nflags:\n", cmd->name, cmd->about);
  for (size_t i = 0; i < cmd->noptions; i++) {
    placeholder(&cmd->options[i], arg, sizeof arg);
    snprintf(left, sizeof left, "--%s%s", cmd->options[i].name, arg);
    fprintf(out, "  %-*s  %s\n", width, left, cmd->options[i].help);
  }
  char config_help[96];
  snprintf(config_help, sizeof config_help, "read these options from the [%s] section of an INI file; flags win",
           cmd->name);
  fprintf(out, "  %-*s  %s\n", width, "--config FILE", config_help);
  fprintf(out, "  %-*s  %s\n", width, "--check", "check everything, print the effective config, run nothing");
  fprintf(out, "  %-*s  %s\n", width, "--help", "this text");
}

void cli_write_config(const cli_command *cmd, const void *cfg, FILE *out) {
  fprintf(out, "[%s]\n", cmd->name);
  for (size_t i = 0; i < cmd->noptions; i++) {
    const cli_option *opt = &cmd->options[i];
    const void *field = (const char *)cfg + opt->field;
    switch (opt->kind) {
    case CLI_FLAG: fprintf(out, "%s = %s\n", opt->name, *(const int *)field ? "true" : "false"); break;
    case CLI_INT: fprintf(out, "%s = %d\n", opt->name, *(const int *)field); break;
    case CLI_U64: fprintf(out, "%s = %" PRIu64 "\n", opt->name, *(const uint64_t *)field); break;
    case CLI_DOUBLE: fprintf(out, "%s = %.17g\n", opt->name, *(const double *)field); break;
    case CLI_STRING:
    case CLI_PATH: {
      const char *s = *(const char *const *)field;
      if (s)
        fprintf(out, "%s = %s\n", opt->name, s);
      else
        fprintf(out, "# %s =\n", opt->name);
      break;
    }
    case CLI_ENUM: {
      const cli_word *w = opt->words;
      while (w->word && w->value != *(const int *)field) w++;
      fprintf(out, "%s = %s\n", opt->name, w->word ? w->word : "?");
      break;
    }
    case CLI_DURATION: {
      int64_t ms = *(const int64_t *)field;
      size_t u = 0;
      while (ms && ms % duration_units[u].ms) u++;
      fprintf(out, "%s = %" PRId64 "%s\n", opt->name, ms ? ms / duration_units[u].ms : 0,
              ms ? duration_units[u].unit : "");
      break;
    }
    case CLI_HOSTPORT: {
      const char *host = *(const char *const *)field;
      int port = *(const int *)((const char *)cfg + opt->port_field);
      if (!host)
        fprintf(out, "# %s =\n", opt->name);
      else if (strchr(host, ':'))
        fprintf(out, "%s = [%s]:%d\n", opt->name, host, port);
      else
        fprintf(out, "%s = %s:%d\n", opt->name, host, port);
      break;
    }
    }
  }
}
