/*
 * Unit tests for common/ps_opts: the flag parser, the help text and the
 * integer-list parser.  One flag table with every kind; each test starts
 * from the defaults, parses a hand-written argv and checks the targets
 * and, on refusal, that the targets kept their values and the detail names
 * the flag.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_opts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int verbose;
    int epochs;
    long long seed;
    double lr;
    const char *out;
} cfg_t;

static cfg_t cfg;

static const ps_opt_t opts[] = {
    {"verbose", PS_OPT_BOOL, &cfg.verbose, NULL, "print more"},
    {"epochs", PS_OPT_INT, &cfg.epochs, "N", "passes over the data"},
    {"seed", PS_OPT_LONG, &cfg.seed, "S", "random seed"},
    {"lr", PS_OPT_DOUBLE, &cfg.lr, "F", "learning rate"},
    {"out", PS_OPT_STRING, &cfg.out, "PATH", "output file"},
};
#define NOPTS ((int)(sizeof opts / sizeof opts[0]))

static int reset(void **state)
{
    (void)state;
    cfg.verbose = 0;
    cfg.epochs = 10;
    cfg.seed = 42;
    cfg.lr = 0.1;
    cfg.out = NULL;
    ps_error_clear();
    return 0;
}

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void assert_defaults(void)
{
    assert_int_equal(cfg.verbose, 0);
    assert_int_equal(cfg.epochs, 10);
    assert_true(cfg.seed == 42);
    assert_true(cfg.lr == 0.1);
    assert_null(cfg.out);
}

/* Parse {"prog", flag, value} (or {"prog", flag} when value is NULL) and
 * expect PS_EINVAL with a detail naming the flag; targets untouched. */
static void expect_refused(const char *flag, const char *value, const char *needle)
{
    char *argv[3] = {"prog", (char *)flag, (char *)value};
    reset(NULL);
    int rv = ps_opts_parse(opts, NOPTS, value ? 3 : 2, argv);
    if (rv != PS_EINVAL) {
        fail_msg("'%s %s' gave %d, want PS_EINVAL", flag, value ? value : "", rv);
    }
    if (!strstr(ps_error_msg(), needle)) {
        fail_msg("detail '%s' does not mention '%s'", ps_error_msg(), needle);
    }
    assert_defaults();
}

static void test_separate_values(void **state)
{
    (void)state;
    char *argv[] = {"prog", "--verbose", "--epochs", "3",     "--seed",
                    "-7",   "--lr",      "0.25",     "--out", "/tmp/x.bin"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(argv), argv), 0);
    assert_int_equal(cfg.verbose, 1);
    assert_int_equal(cfg.epochs, 3);
    assert_true(cfg.seed == -7);
    assert_true(cfg.lr == 0.25);
    assert_string_equal(cfg.out, "/tmp/x.bin");
    assert_ptr_equal(cfg.out, argv[9]); /* points into argv */
}

static void test_equals_values(void **state)
{
    (void)state;
    char *argv[] = {"prog", "--epochs=12", "--seed=9000000000", "--lr=1e-3", "--out=a=b"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(argv), argv), 0);
    assert_int_equal(cfg.verbose, 0);
    assert_int_equal(cfg.epochs, 12);
    assert_true(cfg.seed == 9000000000LL);
    assert_true(cfg.lr == 1e-3);
    assert_string_equal(cfg.out, "a=b"); /* only the first '=' splits */
}

static void test_no_args_keeps_defaults(void **state)
{
    (void)state;
    char *argv[] = {"prog"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(argv), argv), 0);
    assert_defaults();
}

static void test_last_one_wins(void **state)
{
    (void)state;
    char *argv[] = {"prog", "--epochs", "3", "--epochs=5"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(argv), argv), 0);
    assert_int_equal(cfg.epochs, 5);
}

static void test_value_may_start_with_dashes(void **state)
{
    (void)state;
    char *argv[] = {"prog", "--out", "--lr", "--epochs", "-3"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(argv), argv), 0);
    assert_string_equal(cfg.out, "--lr");
    assert_int_equal(cfg.epochs, -3);
    assert_true(cfg.lr == 0.1);
}

static void test_extreme_values(void **state)
{
    (void)state;
    char *argv[] = {"prog", "--epochs=-2147483648", "--seed=-9223372036854775808"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(argv), argv), 0);
    assert_int_equal(cfg.epochs, -2147483647 - 1);
    assert_true(cfg.seed == -9223372036854775807LL - 1);
}

static void test_unknown_flag(void **state)
{
    (void)state;
    expect_refused("--bogus", NULL, "--bogus");
    expect_refused("--bogus=3", NULL, "--bogus");
    expect_refused("--epoch", "3", "--epoch"); /* prefixes are not accepted */
    expect_refused("--epochsx", "3", "--epochsx");
    expect_refused("--", NULL, "--");
    expect_refused("-v", NULL, "-v");
    expect_refused("positional", NULL, "positional");
}

static void test_missing_value(void **state)
{
    (void)state;
    expect_refused("--epochs", NULL, "epochs");
    expect_refused("--seed", NULL, "seed");
    expect_refused("--lr", NULL, "lr");
    expect_refused("--out", NULL, "out");
}

static void test_bad_int(void **state)
{
    (void)state;
    const char *bad[] = {"1.5", "abc",  "",    "nan",        "inf",
                         "3x",  "0x10", "1e3", "2147483648", "-2147483649"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_refused("--epochs", bad[i], "epochs");
        char eq[64];
        snprintf(eq, sizeof eq, "--epochs=%s", bad[i]);
        expect_refused(eq, NULL, "epochs");
    }
}

static void test_bad_long(void **state)
{
    (void)state;
    const char *bad[] = {"1.5", "abc", "", "nan", "9223372036854775808", "12 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_refused("--seed", bad[i], "seed");
    }
}

static void test_bad_double(void **state)
{
    (void)state;
    const char *bad[] = {"abc", "", "nan", "NaN", "inf", "-inf", "infinity", "1e999", "0.5x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_refused("--lr", bad[i], "lr");
        char eq[64];
        snprintf(eq, sizeof eq, "--lr=%s", bad[i]);
        expect_refused(eq, NULL, "lr");
    }
}

static void test_good_doubles(void **state)
{
    (void)state;
    const char *good[] = {"0", "-2.5", "1e-3", "3", ".5"};
    const double want[] = {0.0, -2.5, 1e-3, 3.0, 0.5};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *argv[] = {"prog", "--lr", (char *)good[i]};
        reset(NULL);
        assert_int_equal(ps_opts_parse(opts, NOPTS, 3, argv), 0);
        assert_true(cfg.lr == want[i]);
    }
}

static void test_bool_refuses_value(void **state)
{
    (void)state;
    expect_refused("--verbose=1", NULL, "verbose");
    expect_refused("--verbose=", NULL, "verbose");
    /* A bool never eats the next argument. */
    char *argv[] = {"prog", "--verbose", "--epochs", "2"};
    reset(NULL);
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(argv), argv), 0);
    assert_int_equal(cfg.verbose, 1);
    assert_int_equal(cfg.epochs, 2);
}

static void test_help_version_anywhere(void **state)
{
    (void)state;
    char *a1[] = {"prog", "--help"};
    char *a2[] = {"prog", "--epochs", "3", "--help"};
    char *a3[] = {"prog", "--bogus", "--lr=abc", "--version"};
    char *a4[] = {"prog", "-h", "--epochs", "3"};
    char *a5[] = {"prog", "--epochs", "3", "--version", "--lr", "2"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(a1), a1), PS_OPTS_HELP);
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(a2), a2), PS_OPTS_HELP);
    assert_defaults(); /* nothing else is parsed then */
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(a3), a3), PS_OPTS_VERSION);
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(a4), a4), PS_OPTS_HELP);
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(a5), a5), PS_OPTS_VERSION);
    assert_defaults();
    /* argv[0] is the program name, never a flag. */
    char *a6[] = {"--help"};
    assert_int_equal(ps_opts_parse(opts, NOPTS, ARGC(a6), a6), 0);
}

/* The line of `text` that starts with "  --name". */
static const char *find_line(const char *text, const char *name, char *line, size_t cap)
{
    char key[64];
    snprintf(key, sizeof key, "\n  --%s", name);
    const char *p = strstr(text, key);
    if (!p) {
        return NULL;
    }
    p += 1;
    size_t n = strcspn(p, "\n");
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(line, p, n);
    line[n] = '\0';
    return line;
}

static void expect_help_line(const char *text, const char *name, const char *metavar,
                             const char *help, const char *def)
{
    char line[256], want[128];
    if (!find_line(text, name, line, sizeof line)) {
        fail_msg("no line for --%s in:\n%s", name, text);
    }
    snprintf(want, sizeof want, "--%s%s%s ", name, metavar ? " " : "", metavar ? metavar : "");
    if (strncmp(line + 2, want, strlen(want)) != 0) {
        fail_msg("line '%s' does not start with '%s'", line, want);
    }
    if (!strstr(line, help)) {
        fail_msg("line '%s' lacks the help '%s'", line, help);
    }
    if (def) {
        snprintf(want, sizeof want, "(default: %s)", def);
        if (!strstr(line, want)) {
            fail_msg("line '%s' lacks '%s'", line, want);
        }
    }
}

static void test_help_output(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cfg.epochs = 7; /* the default shown is the target's current value */
    cfg.out = "model.st";
    ps_opts_help(f, "usage: prog [flags]", opts, NOPTS);
    fclose(f);
    assert_true(strncmp(text, "usage: prog [flags]\n", 20) == 0);
    expect_help_line(text, "verbose", NULL, "print more", "off");
    expect_help_line(text, "epochs", "N", "passes over the data", "7");
    expect_help_line(text, "seed", "S", "random seed", "42");
    expect_help_line(text, "lr", "F", "learning rate", "0.1");
    expect_help_line(text, "out", "PATH", "output file", "model.st");
    expect_help_line(text, "help", NULL, "help", NULL);
    expect_help_line(text, "version", NULL, "version", NULL);
    /* Flags appear in table order. */
    assert_true(strstr(text, "--verbose") < strstr(text, "--epochs"));
    assert_true(strstr(text, "--epochs") < strstr(text, "--seed"));
    assert_true(strstr(text, "--seed") < strstr(text, "--lr"));
    assert_true(strstr(text, "--lr") < strstr(text, "--out"));
    free(text);
}

static void test_help_defaults_after_reset(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cfg.verbose = 1;
    ps_opts_help(f, "usage", opts, NOPTS);
    fclose(f);
    expect_help_line(text, "verbose", NULL, "print more", "on");
    expect_help_line(text, "out", "PATH", "output file", "none"); /* NULL string */
    expect_help_line(text, "epochs", "N", "passes over the data", "10");
    free(text);
}

static void test_int_list_good(void **state)
{
    (void)state;
    int v[4] = {0, 0, 0, 0};
    assert_int_equal(ps_opts_int_list("256,128", v, 4), 2);
    assert_int_equal(v[0], 256);
    assert_int_equal(v[1], 128);
    assert_int_equal(v[2], 0); /* nothing written past the count */
    assert_int_equal(ps_opts_int_list("7", v, 4), 1);
    assert_int_equal(v[0], 7);
    assert_int_equal(ps_opts_int_list("1,2,3,4", v, 4), 4);
    assert_int_equal(v[3], 4);
    assert_int_equal(ps_opts_int_list("2147483647", v, 1), 1);
    assert_int_equal(v[0], 2147483647);
}

static void expect_list_refused(const char *s, int max)
{
    int v[8];
    ps_error_clear();
    int rv = ps_opts_int_list(s, v, max);
    if (rv != PS_EINVAL) {
        fail_msg("int_list(\"%s\", max %d) returned %d, want PS_EINVAL", s, max, rv);
    }
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
}

static void test_int_list_bad(void **state)
{
    (void)state;
    expect_list_refused("", 4);
    expect_list_refused("0", 4);
    expect_list_refused("-5", 4);
    expect_list_refused("256,0", 4);
    expect_list_refused("a,b", 4);
    expect_list_refused("1,,2", 4);
    expect_list_refused(",1", 4);
    expect_list_refused(",", 4);
    expect_list_refused("1.5", 4);
    expect_list_refused("12x", 4);
    expect_list_refused("2147483648", 4);
    expect_list_refused("99999999999999999999", 4);
    expect_list_refused("1,2,3", 2); /* more than max */
}

/*
 * Regression: ps_opts_int_list("256,", ...) once returned 1.  After the
 * last number it skipped the comma and the loop ended on the NUL, so a
 * trailing comma was accepted while "1,,2" and ",1" were refused.
 */
static void test_int_list_trailing_comma(void **state)
{
    (void)state;
    expect_list_refused("256,", 4);
    expect_list_refused("256,128,", 4);
}

/* --config: [section] keys set flags, the command line wins, the other
 * role's section is skipped, unknown keys name FILE:LINE. */
static const char *write_ini(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/ps-test-opts-%d.ini", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_config_file(void **state)
{
    (void)state;
    double lr = 0.01;
    int nest = 0, k = 1;
    const char *cfg = NULL, *name = "x";
    ps_opt_t o[] = {{"lr", PS_OPT_DOUBLE, &lr, "F", "lr"},
                    {"nesterov", PS_OPT_BOOL, &nest, NULL, "n"},
                    {"k", PS_OPT_INT, &k, "K", "k"},
                    {"name", PS_OPT_STRING, &name, "S", "s"},
                    {"config", PS_OPT_STRING, &cfg, "FILE", "c"}};
    const char *path = write_ini("; comment\n[server]\nlr = 0.5\nnesterov = yes\n"
                                 "name = from-file\n[worker]\nbogus = 1\n");
    char *argv[] = {"p", "--config", (char *)path, "--lr", "0.25", NULL};
    assert_int_equal(ps_opts_parse_config(o, 5, 5, argv, "server"), 0);
    assert_true(lr == 0.25); /* the command line wins */
    assert_int_equal(nest, 1);
    assert_string_equal(name, "from-file");
    /* As the worker, [worker]'s unknown key is an error naming the line. */
    assert_int_equal(ps_opts_parse_config(o, 5, 3, argv, "worker"), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), ":7: unknown key 'bogus' in [worker]"));
    char arg[128];
    char *argv2[] = {"p", arg, NULL};
    path = write_ini("[server]\nk = 2.5\n");
    snprintf(arg, sizeof arg, "--config=%s", path);
    assert_int_equal(ps_opts_parse_config(o, 5, 2, argv2, "server"), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), ":2: "));
    path = write_ini("[other]\nk = 2\n");
    assert_int_equal(ps_opts_parse_config(o, 5, 2, argv2, "server"), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "outside [server] or [worker]"));
    unlink(path);
    char *argv3[] = {"p", "--config", "/nonexistent/x.ini", NULL};
    assert_int_equal(ps_opts_parse_config(o, 5, 3, argv3, "server"), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "cannot open"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_separate_values, reset),
        cmocka_unit_test_setup(test_equals_values, reset),
        cmocka_unit_test_setup(test_no_args_keeps_defaults, reset),
        cmocka_unit_test_setup(test_last_one_wins, reset),
        cmocka_unit_test_setup(test_value_may_start_with_dashes, reset),
        cmocka_unit_test_setup(test_extreme_values, reset),
        cmocka_unit_test_setup(test_unknown_flag, reset),
        cmocka_unit_test_setup(test_missing_value, reset),
        cmocka_unit_test_setup(test_bad_int, reset),
        cmocka_unit_test_setup(test_bad_long, reset),
        cmocka_unit_test_setup(test_bad_double, reset),
        cmocka_unit_test_setup(test_good_doubles, reset),
        cmocka_unit_test_setup(test_bool_refuses_value, reset),
        cmocka_unit_test_setup(test_help_version_anywhere, reset),
        cmocka_unit_test_setup(test_help_output, reset),
        cmocka_unit_test_setup(test_help_defaults_after_reset, reset),
        cmocka_unit_test_setup(test_int_list_good, reset),
        cmocka_unit_test_setup(test_int_list_bad, reset),
        cmocka_unit_test_setup(test_int_list_trailing_comma, reset),
        cmocka_unit_test(test_config_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
