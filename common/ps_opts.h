/*
 * ps_opts: table-driven command-line parsing shared by both binaries.
 *
 * A program describes its flags once (name, kind, where to store, default
 * text, help); ps_opts_parse fills the targets, refuses unknown flags and
 * malformed values with a message naming the flag, and ps_opts_help prints
 * every flag with its default.  Both `--flag value` and `--flag=value` are
 * accepted.  The caller owns the targets and sets their defaults before
 * parsing; string targets point into argv.
 */
#ifndef PS_OPTS_H
#define PS_OPTS_H

#include <stdio.h>

typedef enum {
    PS_OPT_BOOL,   /* no value: sets int target to 1 */
    PS_OPT_INT,    /* int, decimal */
    PS_OPT_LONG,   /* long long, decimal */
    PS_OPT_DOUBLE, /* finite double */
    PS_OPT_STRING, /* const char * */
} ps_opt_kind_t;

typedef struct {
    const char *name; /* without the leading "--" */
    ps_opt_kind_t kind;
    void *target;
    const char *metavar; /* e.g. "F", "PATH"; NULL for BOOL */
    const char *help;    /* the default is appended from the target's value */
} ps_opt_t;

enum { PS_OPTS_HELP = 1, PS_OPTS_VERSION = 2 };

/* Returns 0, PS_OPTS_HELP / PS_OPTS_VERSION when --help / --version was
 * given (nothing else is parsed then), or PS_EINVAL with a detail. */
int ps_opts_parse(const ps_opt_t *opts, int nopts, int argc, char **argv);
/* ps_opts_parse, after first applying `--config FILE` (an INI file read
 * with libinih) when argv has one: keys of section [section] are flag
 * names without the dashes (a BOOL takes true/false/yes/no/1/0); the other
 * role's section is skipped; an unknown key or section is an error naming
 * FILE:LINE.  Flags on the command line override the file.  The table
 * should list "config" (a STRING) so --help shows it. */
int ps_opts_parse_config(const ps_opt_t *opts, int nopts, int argc, char **argv,
                         const char *section);
/* One line per flag: "  --name METAVAR   help (default: X)". */
void ps_opts_help(FILE *out, const char *usage, const ps_opt_t *opts, int nopts);
/* Parse "256,128" into at most `max` positive ints; returns the count or
 * PS_EINVAL. */
int ps_opts_int_list(const char *s, int *out, int max);

#define PS_VERSION_STRING "0.4.0"

#endif
