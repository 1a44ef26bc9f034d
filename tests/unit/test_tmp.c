/*
 * Unit tests for common/ps_tmp: scratch files go in $TMPDIR (or /tmp),
 * under names that differ every time, created as new private files; a
 * TMPDIR that does not exist is an error naming it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_tmp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/test_tmp.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rmdir(g_dir);
    return 0;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* In TMPDIR, STEM-XXXXXX.SUFFIX with the Xs replaced, a new regular file
 * of mode 0600, and a different name on every call. */
static void test_in_tmpdir(void **state)
{
    (void)state;
    char a[256], b[256], want[128];
    int fa, fb;
    setenv("TMPDIR", g_dir, 1);
    assert_string_equal(ps_tmp_dir(), g_dir);
    assert_int_equal(ps_tmp_create(a, sizeof a, "ps-metrics", ".jsonl", &fa), 0);
    assert_int_equal(ps_tmp_create(b, sizeof b, "ps-metrics", ".jsonl", &fb), 0);
    snprintf(want, sizeof want, "%s/ps-metrics-", g_dir);
    assert_int_equal(strncmp(a, want, strlen(want)), 0);
    assert_true(ends_with(a, ".jsonl") && strlen(a) == strlen(want) + 6 + 6);
    assert_null(strstr(a, "XXXXXX"));
    assert_string_not_equal(a, b);
    struct stat st;
    assert_int_equal(lstat(a, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(write(fa, "x", 1), 1);
    close(fa);
    close(fb);
    assert_int_equal(unlink(a), 0);
    assert_int_equal(unlink(b), 0);
}

static void test_default_tmp(void **state)
{
    (void)state;
    unsetenv("TMPDIR");
    assert_string_equal(ps_tmp_dir(), "/tmp");
    setenv("TMPDIR", "", 1);
    assert_string_equal(ps_tmp_dir(), "/tmp");
}

static void test_bad_tmpdir(void **state)
{
    (void)state;
    char p[256], gone[128];
    int fd;
    snprintf(gone, sizeof gone, "%s/not-there", g_dir);
    setenv("TMPDIR", gone, 1);
    assert_int_equal(ps_tmp_create(p, sizeof p, "ps-plot", ".dat", &fd), PS_EIO);
    assert_non_null(strstr(ps_error_msg(), gone));
    assert_non_null(strstr(ps_error_msg(), "TMPDIR"));
    setenv("TMPDIR", g_dir, 1);
    assert_int_equal(ps_tmp_create(p, 20, "ps-plot", ".dat", &fd), PS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_tmpdir),
        cmocka_unit_test(test_default_tmp),
        cmocka_unit_test(test_bad_tmpdir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
