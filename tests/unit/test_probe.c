/*
 * Unit tests for common/ps_probe: a writable folder passes and keeps no
 * probe file; each way a path can be unwritable fails with a message that
 * names the flag, whatever the user (these cases stop root too: a path
 * through a regular file, a folder that does not exist, a directory given
 * as a file name).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_probe.h"
#include "unit_tmp.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[256];

static int group_setup(void **state)
{
    (void)state;
    return ut_mkdtemp(tmp, sizeof tmp, "ps-probe");
}

static int group_teardown(void **state)
{
    (void)state;
    return ut_rm_tree(tmp);
}

/* Entries in dir besides . and .. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d))) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

static void expect_fail(int rv, int want, const char *needle)
{
    assert_int_equal(rv, want);
    if (!strstr(ps_error_msg(), needle)) {
        fail_msg("message '%s' lacks '%s'", ps_error_msg(), needle);
    }
}

static void test_writable(void **state)
{
    (void)state;
    char dir[300], file[320];
    snprintf(dir, sizeof dir, "%s/ok", tmp);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(ps_probe_dir(dir, 0, "--x"), 0);
    snprintf(file, sizeof file, "%s/model.st", dir);
    assert_int_equal(ps_probe_file(file, "--save"), 0);
    assert_int_equal(entries(dir), 0); /* no probe left behind, no file made */
    /* create: the folder is made, as a checkpoint writer would. */
    snprintf(dir, sizeof dir, "%s/made", tmp);
    assert_int_equal(ps_probe_dir(dir, 1, "--checkpoint-dir"), 0);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(entries(dir), 0);
    assert_int_equal(ps_probe_dir(dir, 1, "--checkpoint-dir"), 0); /* exists: fine */
}

static void test_unwritable(void **state)
{
    (void)state;
    char reg[300], path[400];
    snprintf(reg, sizeof reg, "%s/regular", tmp);
    FILE *f = fopen(reg, "w");
    assert_non_null(f);
    fclose(f);
    /* Through a regular file. */
    snprintf(path, sizeof path, "%s/x.st", reg);
    expect_fail(ps_probe_file(path, "--save P"), PS_EIO, "--save P: cannot create a file in");
    expect_fail(ps_probe_dir(path, 1, "--checkpoint-dir D"), PS_EIO, "--checkpoint-dir D");
    expect_fail(ps_probe_dir(reg, 0, "--d"), PS_EIO, reg);
    /* A folder that does not exist (and only one level is made). */
    snprintf(path, sizeof path, "%s/no/such/model.st", tmp);
    expect_fail(ps_probe_file(path, "--save P"), PS_EIO, "/no/such");
    snprintf(path, sizeof path, "%s/no/such", tmp);
    expect_fail(ps_probe_dir(path, 1, "--checkpoint-dir D"), PS_EIO, "cannot create the directory");
    /* A directory named as the file. */
    expect_fail(ps_probe_file(tmp, "--save T"), PS_EINVAL, "directory");
    snprintf(path, sizeof path, "%s/", tmp);
    expect_fail(ps_probe_file(path, "--save T"), PS_EINVAL, "directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writable),
        cmocka_unit_test(test_unwritable),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
