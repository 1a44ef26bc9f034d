/*
 * Unit tests for common/ps_trace's files: the per-rank part has a
 * predictable name (PATH.part-RANK, the merging rank must find it), so a
 * symlink planted there must be replaced, never written through; and a
 * symlink at the part name of a rank that wrote none must not pull the
 * file it points to into the merged trace.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "unit_tmp.h"
#include "ps_trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static const char *in_dir(const char *name)
{
    return ut_in_dir(g_dir, name);
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The whole file (at most 64 KiB) as a string. */
static char *slurp(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_planted_symlinks(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/test_trace.XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    put(in_dir("victim"), "not yours");
    put(in_dir("secret"), "SECRET");
    assert_int_equal(symlink(in_dir("victim"), in_dir("t.json.part-0")), 0);
    assert_int_equal(symlink(in_dir("secret"), in_dir("t.json.part-1")), 0);

    assert_int_equal(ps_trace_start(in_dir("t.json"), 0, "worker 0"), 0);
    ps_trace_event("compute", ps_trace_now(), 1);
    assert_int_equal(ps_trace_write_part(), 0);
    assert_string_equal(slurp(in_dir("victim")), "not yours");
    struct stat st;
    assert_int_equal(lstat(in_dir("t.json.part-0"), &st), 0);
    assert_true(S_ISREG(st.st_mode)); /* the symlink was replaced */

    /* Rank 1 wrote no part; its planted name is skipped, not followed. */
    assert_int_equal(ps_trace_merge(2), 0);
    const char *merged = slurp(in_dir("t.json"));
    assert_non_null(strstr(merged, "\"compute\""));
    assert_null(strstr(merged, "SECRET"));
    assert_string_equal(slurp(in_dir("secret")), "SECRET");
    ps_trace_stop();

    const char *names[] = {"victim", "secret", "t.json", "t.json.part-0", "t.json.part-1"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        unlink(in_dir(names[i]));
    }
    assert_int_equal(rmdir(g_dir), 0); /* nothing else was left behind */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planted_symlinks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
