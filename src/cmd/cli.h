/* cli.h - one flag parser for every telegate command.
 *
 * A command is a table of options. Each option has a long name, a kind of
 * value, where the value goes (an offset into the command's config
 * struct) and a help line. The same table parses the command line,
 * generates `--help`, and is what a config file reader looks its keys up
 * in (cli_option_find, cli_option_set), so flags and file cannot drift
 * apart.
 *
 * On the command line an option is `--NAME VALUE` or `--NAME=VALUE`; a
 * CLI_FLAG takes no value. Options are set left to right, so the last of
 * a repeated option wins. An option with a `preset` hook (the demo's
 * --preset) is set before all the others wherever it stands, so an
 * explicit option always wins over the numbers a preset sets. `--help` or
 * `-h` asks for the usage text. Anything else - an unknown option, a
 * missing value, a value of the wrong kind or out of range, an argument
 * that is not an option - is a usage error, told in one line that names
 * the option, what it wants and what it got:
 *
 *     --batch-size wants an integer from 1 to 10000000, got 'x'
 *
 * A config file sets the same options: `--config FILE` (any command)
 * reads an INI file (parsed by inih) before the command line, so every
 * flag given wins over the file. The file has one section per command,
 * named as the command ([serve], [devices], [demo]); a command reads its
 * own section and skips the others, so one file can serve them all. Keys
 * are the long option names without "--", values are written as on the
 * command line, and a flag's value is true or false:
 *
 *     [serve]
 *     listen-devices = 0.0.0.0:7878
 *     batch-age-ms = 200
 *     quiet = false
 *
 * A key outside a section, an unknown section or key, or a bad value is
 * an error naming the file, the line and the key:
 *
 *     telegate.ini:3: batch-age-ms wants an integer from 1 to 3600000, got 'x'
 *
 * `--check` (any command) parses everything, runs the command's checks
 * and, instead of running, asks for the effective configuration to be
 * printed (cli_write_config) - itself a valid config file.
 *
 * Strings: every string value (CLI_STRING, CLI_PATH and the host of
 * CLI_HOSTPORT) is copied into a cli_strings the caller owns, so a config
 * depends neither on argv nor on a file's buffer, and no two options
 * share storage. The config's strings stay valid until cli_strings_free;
 * strings the config held before parsing (its defaults) are not owned. */
#ifndef TELEGATE_CLI_H
#define TELEGATE_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* cli_parse's answers that are not errors: --help was asked (nothing
 * after it was looked at), or --check (everything was, and is valid). */
enum { CLI_HELP = 1, CLI_CHECK = 2 };

typedef enum cli_kind {
  CLI_FLAG,     /* no value: sets an int to 1 */
  CLI_INT,      /* an int from min to max */
  CLI_U64,      /* a uint64_t, any unsigned decimal */
  CLI_DOUBLE,   /* a double from min to max (above min with min_open) */
  CLI_STRING,   /* a const char *, any text, even empty */
  CLI_PATH,     /* a const char *, not empty */
  CLI_ENUM,     /* an int-sized enum: one of `words` */
  CLI_HOSTPORT, /* HOST:PORT: a const char * host and an int port */
  CLI_DURATION, /* an int64_t of milliseconds, written with a unit: 250ms, 30s, 5m, 12h, 30d; or 0 */
} cli_kind;

/* A word a CLI_ENUM accepts and the value it stands for. */
typedef struct cli_word {
  const char *word;
  int value;
} cli_word;

typedef struct cli_option {
  const char *name; /* --NAME on the command line; the key in a config file */
  cli_kind kind;
  size_t field;              /* offset of the value in the command's config struct */
  size_t port_field;         /* CLI_HOSTPORT: offset of the int port */
  double min, max;           /* CLI_INT, CLI_DOUBLE, CLI_DURATION (ms): the range, inclusive ... */
  int min_open;              /* ... but above min itself when set (a duration) */
  const cli_word *words;     /* CLI_ENUM: the accepted words, ending with {NULL, 0} */
  const char *arg;           /* the value's name in --help ("SECONDS"); NULL: from the kind */
  const char *help;          /* one line of --help */
  void (*preset)(void *cfg); /* set first, then this sets the numbers it names */
} cli_option;

typedef struct cli_command {
  const char *name;  /* "serve": in the usage text */
  const char *about; /* what the command does, for the usage text */
  const cli_option *options;
  size_t noptions;
  /* Runs once every option is set: checks what involves several options
   * and fills what depends on others. Returns 0 or -EINVAL with a
   * one-line message in err. NULL: nothing to check. */
  int (*finish)(void *cfg, char *err, size_t errlen);
} cli_command;

/* The strings a parse copied, freed together. Zero-initialise it. */
typedef struct cli_strings {
  struct cli_string *head;
} cli_strings;

void cli_strings_free(cli_strings *s);

/* Sets the options of the --config file, if any, then those in argv (the
 * arguments after the command's name) into *cfg on top of what it holds
 * (the caller sets the defaults first), then runs the command's finish.
 * Returns 0; CLI_HELP when --help or -h came before any error; CLI_CHECK
 * when --check came and everything is valid; -EINVAL with a one-line
 * message in err (no newline, no command name) for a usage error or a bad
 * file; -ENOMEM. On an error *cfg may be partly set. */
int cli_parse(const cli_command *cmd, int argc, char *const argv[], void *cfg, cli_strings *strings, char *err,
              size_t errlen);

/* The option called `name` (len bytes, no "--"); NULL if there is none. */
const cli_option *cli_option_find(const cli_command *cmd, const char *name, size_t len);

/* Sets one option from its value as text (NULL for a CLI_FLAG; a flag
 * given a value is an error), copying strings into *strings, and runs its
 * preset hook. Returns 0, -EINVAL with a one-line message naming the
 * option in err, or -ENOMEM. */
int cli_option_set(const cli_option *opt, const char *value, void *cfg, cli_strings *strings, char *err, size_t errlen);

/* Writes the usage text of the command, generated from its table. */
void cli_usage(const cli_command *cmd, FILE *out);

/* Writes *cfg as the command's section of a config file: every option,
 * an unset string as a comment. */
void cli_write_config(const cli_command *cmd, const void *cfg, FILE *out);

/* Table entries. T is the config struct; each macro checks at compile
 * time that the member has the type its kind writes, so a table cannot
 * write an int into a double. */
#define CLI_MEMBER(T, m, ctype) _Generic(((T *)0)->m, ctype : offsetof(T, m))
/* An enum has no fixed type to match; its size must be an int's. */
#define CLI_ENUM_MEMBER(T, m)   (offsetof(T, m) + 0 * sizeof(char[sizeof(((T *)0)->m) == sizeof(int) ? 1 : -1]))

#define CLI_OPT_FLAG(T, name_, m, help_) \
  { name_, CLI_FLAG, CLI_MEMBER(T, m, int), .help = help_ }
#define CLI_OPT_INT(T, name_, m, min_, max_, help_) \
  { name_, CLI_INT, CLI_MEMBER(T, m, int), .min = min_, .max = max_, .help = help_ }
#define CLI_OPT_U64(T, name_, m, help_) \
  { name_, CLI_U64, CLI_MEMBER(T, m, uint64_t), .help = help_ }
#define CLI_OPT_DOUBLE(T, name_, m, min_, max_, arg_, help_) \
  { name_, CLI_DOUBLE, CLI_MEMBER(T, m, double), .min = min_, .max = max_, .arg = arg_, .help = help_ }
#define CLI_OPT_DOUBLE_ABOVE(T, name_, m, min_, max_, arg_, help_) \
  { name_, CLI_DOUBLE, CLI_MEMBER(T, m, double), .min = min_, .max = max_, .min_open = 1, .arg = arg_, .help = help_ }
#define CLI_OPT_STRING(T, name_, m, arg_, help_) \
  { name_, CLI_STRING, CLI_MEMBER(T, m, const char *), .arg = arg_, .help = help_ }
#define CLI_OPT_PATH(T, name_, m, help_) \
  { name_, CLI_PATH, CLI_MEMBER(T, m, const char *), .help = help_ }
#define CLI_OPT_ENUM(T, name_, m, words_, help_) \
  { name_, CLI_ENUM, CLI_ENUM_MEMBER(T, m), .words = words_, .help = help_ }
#define CLI_OPT_HOSTPORT(T, name_, host_, port_, help_) \
  { name_, CLI_HOSTPORT, CLI_MEMBER(T, host_, const char *), CLI_MEMBER(T, port_, int), .help = help_ }

#define CLI_OPT_DURATION(T, name_, m, min_, max_, help_) \
  { name_, CLI_DURATION, CLI_MEMBER(T, m, int64_t), .min = min_, .max = max_, .help = help_ }

#define CLI_COUNT(table) (sizeof(table) / sizeof((table)[0]))

#endif
