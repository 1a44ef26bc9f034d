#include "ps_opts.h"

#include "ps_err.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const ps_opt_t *find(const ps_opt_t *opts, int nopts, const char *name, size_t len)
{
    for (int i = 0; i < nopts; i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

static int set_value(const ps_opt_t *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case PS_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno || x < INT_MIN || x > INT_MAX) {
            goto bad;
        }
        *(int *)o->target = (int)x;
        return 0;
    }
    case PS_OPT_LONG: {
        long long x = strtoll(v, &end, 10);
        if (*v == '\0' || *end != '\0' || errno) {
            goto bad;
        }
        *(long long *)o->target = x;
        return 0;
    }
    case PS_OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (*v == '\0' || *end != '\0' || errno || !isfinite(x)) {
            goto bad;
        }
        *(double *)o->target = x;
        return 0;
    }
    case PS_OPT_STRING: *(const char **)o->target = v; return 0;
    case PS_OPT_BOOL: break;
    }
bad:
    ps_error_set("--%s: bad value '%s' (want %s)", o->name, v,
                 o->kind == PS_OPT_DOUBLE ? "a finite number" : "an integer");
    return PS_EINVAL;
}

static int parse_one(const ps_opt_t *opts, int nopts, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
        ps_error_set("unexpected argument '%s' (flags start with --; see --help)", a);
        return PS_EINVAL;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const ps_opt_t *o = find(opts, nopts, name, len);
    if (!o) {
        ps_error_set("unknown flag '--%.*s' (see --help)", (int)len, name);
        return PS_EINVAL;
    }
    if (o->kind == PS_OPT_BOOL) {
        if (eq) {
            ps_error_set("--%s takes no value", o->name);
            return PS_EINVAL;
        }
        *(int *)o->target = 1;
        return 0;
    }
    if (eq) {
        return set_value(o, eq + 1);
    }
    if (*i + 1 >= argc) {
        ps_error_set("--%s needs a value", o->name);
        return PS_EINVAL;
    }
    return set_value(o, argv[++*i]);
}

int ps_opts_parse(const ps_opt_t *opts, int nopts, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return PS_OPTS_HELP;
        }
        if (strcmp(argv[i], "--version") == 0) {
            return PS_OPTS_VERSION;
        }
    }
    for (int i = 1; i < argc; i++) {
        int rv = parse_one(opts, nopts, argc, argv, &i);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static void default_text(const ps_opt_t *o, char *buf, size_t cap)
{
    switch (o->kind) {
    case PS_OPT_BOOL: snprintf(buf, cap, "%s", *(int *)o->target ? "on" : "off"); break;
    case PS_OPT_INT: snprintf(buf, cap, "%d", *(int *)o->target); break;
    case PS_OPT_LONG: snprintf(buf, cap, "%lld", *(long long *)o->target); break;
    case PS_OPT_DOUBLE: snprintf(buf, cap, "%g", *(double *)o->target); break;
    case PS_OPT_STRING: {
        const char *s = *(const char **)o->target;
        snprintf(buf, cap, "%s", s ? s : "none");
        break;
    }
    }
}

void ps_opts_help(FILE *out, const char *usage, const ps_opt_t *opts, int nopts)
{
    fprintf(out, "%s\n\nFlags:\n", usage);
    for (int i = 0; i < nopts; i++) {
        char left[64], def[256];
        snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
                 opts[i].metavar ? opts[i].metavar : "");
        default_text(&opts[i], def, sizeof def);
        fprintf(out, "  %-26s %s (default: %s)\n", left, opts[i].help, def);
    }
    fprintf(out, "  %-26s %s\n  %-26s %s\n", "--help", "show this help and exit", "--version",
            "print the version and exit");
}

int ps_opts_int_list(const char *s, int *out, int max)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > INT_MAX || n >= max || (*end && *end != ',') ||
            (*end == ',' && end[1] == '\0')) {
            ps_error_set("bad list '%s' (want up to %d positive integers, comma-separated)", s,
                         max);
            return PS_EINVAL;
        }
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        ps_error_set("empty list");
        return PS_EINVAL;
    }
    return n;
}

/* Values read from a config file outlive the parse: string flags point
 * into them. */
static char *config_strings[512];
static int nconfig_strings;

typedef struct {
    const ps_opt_t *opts;
    int nopts;
    const char *section, *path;
    char why[300];
} config_ctx_t;

static int set_bool(const ps_opt_t *o, const char *v)
{
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *(int *)o->target = strcasecmp(v, yes[i]) == 0;
            return 0;
        }
    }
    ps_error_set("%s: bad value '%s' (want true or false)", o->name, v);
    return PS_EINVAL;
}

static int config_entry(void *user, const char *section, const char *name, const char *value)
{
    config_ctx_t *cx = user;
    if (strcmp(section, "server") != 0 && strcmp(section, "worker") != 0) {
        snprintf(cx->why, sizeof cx->why, "key '%s' outside [server] or [worker]", name);
        return 0;
    }
    if (strcmp(section, cx->section) != 0) {
        return 1; /* the other binary's settings */
    }
    const ps_opt_t *o = find(cx->opts, cx->nopts, name, strlen(name));
    if (!o || strcmp(name, "config") == 0) {
        snprintf(cx->why, sizeof cx->why, "unknown key '%s' in [%s]", name, section);
        return 0;
    }
    if (o->kind == PS_OPT_STRING) {
        if (nconfig_strings == (int)(sizeof config_strings / sizeof config_strings[0])) {
            snprintf(cx->why, sizeof cx->why, "too many settings");
            return 0;
        }
        if (!(value = config_strings[nconfig_strings] = strdup(value))) {
            snprintf(cx->why, sizeof cx->why, "out of memory");
            return 0;
        }
        nconfig_strings++;
    }
    int rv = o->kind == PS_OPT_BOOL ? set_bool(o, value) : set_value(o, value);
    if (rv != 0) {
        snprintf(cx->why, sizeof cx->why, "%s", ps_error_msg());
        return 0;
    }
    return 1;
}

static const char *config_path(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            return argv[i + 1];
        }
        if (strncmp(argv[i], "--config=", 9) == 0) {
            return argv[i] + 9;
        }
    }
    return NULL;
}

int ps_opts_parse_config(const ps_opt_t *opts, int nopts, int argc, char **argv,
                         const char *section)
{
    config_ctx_t cx = {opts, nopts, section, config_path(argc, argv), ""};
    int help = ps_opts_parse(opts, nopts, argc, argv);
    if (help == PS_OPTS_HELP || help == PS_OPTS_VERSION || !cx.path) {
        return help;
    }
    int line = ini_parse(cx.path, config_entry, &cx);
    if (line < 0) {
        ps_error_set("--config %s: %s", cx.path,
                     line == -1 ? "cannot open the file" : "out of memory");
        return PS_EINVAL;
    }
    if (line > 0) {
        ps_error_set("%s:%d: %s", cx.path, line, cx.why[0] ? cx.why : "syntax error");
        return PS_EINVAL;
    }
    return ps_opts_parse(opts, nopts, argc, argv); /* the command line wins */
}
