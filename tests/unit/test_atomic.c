/*
 * Unit tests for common/ps_atomic: a new file, the replacement of an old
 * one (a new inode; a hard link to the old one keeps the old bytes), every
 * failing step leaving the old file and no temp file, a symlink at the
 * target replaced rather than followed, the umask honoured, and a reader
 * racing a writer seeing only whole files.  The failures are ones that
 * fail as root too (tests may run as root, which ignores permissions).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "unit_tmp.h"
#include "ps_atomic.h"
#include "ps_err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[64];

static const char *in_dir(const char *name)
{
    return ut_in_dir(g_dir, name);
}

/* Removes every file in `dir` and one level of subdirectories. */
static void empty_dir(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0 && depth > 0) {
            empty_dir(p, depth - 1);
            rmdir(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
}

static int setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/ps-atomic-test-XXXXXX");
    return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    empty_dir(g_dir, 1);
    return rmdir(g_dir);
}

static int clean(void **state)
{
    (void)state;
    empty_dir(g_dir, 1);
    ps_error_clear();
    return 0;
}

/* Files in the test directory whose name has ".tmp." (our temp files). */
static int count_tmp_files(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        n += strstr(e->d_name, ".tmp.") != NULL;
    }
    closedir(d);
    return n;
}

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* The whole file, NUL-terminated (caller frees); *len its size. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *b = malloc(1 << 20);
    assert_non_null(b);
    *len = fread(b, 1, (1 << 20) - 1, f);
    b[*len] = '\0';
    fclose(f);
    return b;
}

static void assert_file_is(const char *path, const char *want)
{
    size_t len;
    char *got = slurp(path, &len);
    assert_int_equal(len, strlen(want));
    assert_string_equal(got, want);
    free(got);
}

static void assert_msg_has(const char *needle)
{
    if (strstr(ps_error_msg(), needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", ps_error_msg(), needle);
    }
}

/* ---- fill callbacks ----------------------------------------------------- */

static int fill_text(FILE *f, void *arg)
{
    fputs(arg, f);
    return 0;
}

/* Writes part of the content, then reports a failed write. */
static int fill_fails_io(FILE *f, void *arg)
{
    (void)arg;
    fputs("half of the new cont", f);
    fflush(f);
    return PS_EIO;
}

static int fill_fails_own(FILE *f, void *arg)
{
    (void)arg;
    fputs("new", f);
    ps_error_set("the producer ran out of widgets");
    return PS_EINVAL;
}

/* Makes every later write to the stream fail (its descriptor becomes a
 * read-only one) and, like a careless fill, ignores fputs' result. */
static int fill_breaks_stream(FILE *f, void *arg)
{
    (void)arg;
    int ro = open("/dev/null", O_RDONLY);
    assert_true(ro >= 0);
    assert_int_equal(dup2(ro, fileno(f)), fileno(f));
    close(ro);
    fputs("this never reaches the disk", f);
    return 0;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_writes_new_file(void **state)
{
    (void)state;
    const char *path = in_dir("new.txt");
    assert_int_equal(ps_atomic_write(path, fill_text, "hello\nworld\n"), 0);
    assert_file_is(path, "hello\nworld\n");
    assert_int_equal(count_tmp_files(), 0);
    /* A path without a directory part: the current directory. */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_dir), 0);
    assert_int_equal(ps_atomic_write_buf("bare.txt", "b", 1), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_file_is(in_dir("bare.txt"), "b");
}

static void test_buf_and_empty(void **state)
{
    (void)state;
    const char *path = in_dir("buf.bin");
    static const char bytes[5] = {'a', '\0', 'b', '\n', '\xff'};
    assert_int_equal(ps_atomic_write_buf(path, bytes, sizeof bytes), 0);
    size_t len;
    char *got = slurp(path, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(got, bytes, 5);
    free(got);
    assert_int_equal(ps_atomic_write_buf(path, NULL, 0), 0);
    assert_file_is(path, "");
}

static void test_replaces_with_new_inode(void **state)
{
    (void)state;
    const char *path = in_dir("model.txt"), *old = in_dir("old-link.txt");
    put_file(path, "old content, longer than the new one\n");
    assert_int_equal(link(path, old), 0);
    struct stat before, after;
    assert_int_equal(stat(path, &before), 0);
    assert_int_equal(ps_atomic_write(path, fill_text, "new\n"), 0);
    assert_int_equal(stat(path, &after), 0);
    assert_file_is(path, "new\n");
    /* Not rewritten in place: a reader holding the old file keeps it. */
    assert_true(before.st_ino != after.st_ino);
    assert_file_is(old, "old content, longer than the new one\n");
    assert_int_equal(count_tmp_files(), 0);
}

static void test_honours_umask(void **state)
{
    (void)state;
    const char *path = in_dir("mode.txt");
    mode_t old = umask(022);
    struct stat st;
    assert_int_equal(ps_atomic_write_buf(path, "x", 1), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    umask(077);
    assert_int_equal(ps_atomic_write_buf(path, "y", 1), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    umask(old);
}

static void test_failed_fill_keeps_old_file(void **state)
{
    (void)state;
    const char *path = in_dir("keep.txt");
    put_file(path, "old\n");

    assert_int_equal(ps_atomic_write(path, fill_fails_io, NULL), PS_EIO);
    assert_msg_has(path);
    assert_msg_has("cannot write the temp file");
    assert_file_is(path, "old\n");
    assert_int_equal(count_tmp_files(), 0);

    assert_int_equal(ps_atomic_write(path, fill_fails_own, NULL), PS_EINVAL);
    assert_string_equal(ps_error_msg(), "the producer ran out of widgets");
    assert_file_is(path, "old\n");
    assert_int_equal(count_tmp_files(), 0);

    assert_int_equal(ps_atomic_write(path, fill_breaks_stream, NULL), PS_EIO);
    assert_msg_has("cannot write the temp file");
    assert_file_is(path, "old\n");
    assert_int_equal(count_tmp_files(), 0);
}

static void test_cannot_create_temp(void **state)
{
    (void)state;
    /* No such parent directory, and a parent that is a regular file: both
     * fail for root too. */
    assert_int_equal(ps_atomic_write_buf(in_dir("nodir/x.txt"), "x", 1), PS_EIO);
    assert_msg_has("nodir/x.txt: cannot create the temp file");
    assert_msg_has("nodir/x.txt.tmp.");
    assert_msg_has("No such file or directory");
    put_file(in_dir("plain"), "p");
    assert_int_equal(ps_atomic_write_buf(in_dir("plain/x.txt"), "x", 1), PS_EIO);
    assert_msg_has("Not a directory");
    assert_file_is(in_dir("plain"), "p");
    assert_int_equal(count_tmp_files(), 0);
}

static void test_failed_rename_keeps_target(void **state)
{
    (void)state;
    /* rename() of a file onto a non-empty directory fails for root too. */
    const char *sub = in_dir("dir.txt"), *inner = in_dir("dir.txt/keep");
    assert_int_equal(mkdir(sub, 0700), 0);
    put_file(inner, "k");
    assert_int_equal(ps_atomic_write_buf(sub, "x", 1), PS_EIO);
    assert_msg_has("cannot rename");
    assert_msg_has(sub);
    assert_file_is(inner, "k");
    assert_int_equal(count_tmp_files(), 0);
}

static void test_symlink_replaced_not_followed(void **state)
{
    (void)state;
    const char *victim = in_dir("victim.txt"), *link = in_dir("link.txt");
    put_file(victim, "must not change\n");
    assert_int_equal(symlink(victim, link), 0);
    assert_int_equal(ps_atomic_write(link, fill_text, "through the link?\n"), 0);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_file_is(link, "through the link?\n");
    assert_file_is(victim, "must not change\n");
    /* A dangling symlink is replaced too, its target never created. */
    const char *dangling = in_dir("dangling.txt"), *nowhere = in_dir("nowhere.txt");
    assert_int_equal(symlink(nowhere, dangling), 0);
    assert_int_equal(ps_atomic_write_buf(dangling, "d", 1), 0);
    assert_int_equal(lstat(dangling, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(access(nowhere, F_OK), -1);
}

static void test_sync_dir(void **state)
{
    (void)state;
    assert_int_equal(ps_atomic_sync_dir(in_dir("anything")), 0);
    assert_int_equal(ps_atomic_sync_dir("no-slash-here"), 0); /* "." */
    assert_int_equal(ps_atomic_sync_dir("/at-the-root"), 0);  /* "/" */
    assert_int_equal(ps_atomic_sync_dir(in_dir("nodir/x")), PS_EIO);
    assert_msg_has("cannot sync directory");
    assert_msg_has("nodir");
}

/* A reader racing a writer sees one whole version or the other, never a
 * truncated or mixed file. */
static void test_reader_sees_whole_files(void **state)
{
    (void)state;
    enum { A_LEN = 70000, B_LEN = 130000, WRITES = 40 };
    const char *path = in_dir("race.bin");
    char *a = malloc(A_LEN), *b = malloc(B_LEN);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 'a', A_LEN);
    memset(b, 'b', B_LEN);
    assert_int_equal(ps_atomic_write_buf(path, a, A_LEN), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        for (int i = 0; i < WRITES; i++) {
            if (ps_atomic_write_buf(path, i % 2 ? a : b, i % 2 ? A_LEN : B_LEN) != 0) {
                _exit(1);
            }
        }
        _exit(0);
    }
    int status, reads = 0;
    while (waitpid(child, &status, WNOHANG) == 0) {
        size_t len;
        char *got = slurp(path, &len);
        int whole_a = len == A_LEN && memcmp(got, a, A_LEN) == 0;
        int whole_b = len == B_LEN && memcmp(got, b, B_LEN) == 0;
        free(got);
        if (!whole_a && !whole_b) {
            fail_msg("read %zu bytes that are neither version", len);
        }
        reads++;
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(reads > 0);
    assert_int_equal(count_tmp_files(), 0);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_writes_new_file, clean),
        cmocka_unit_test_setup(test_buf_and_empty, clean),
        cmocka_unit_test_setup(test_replaces_with_new_inode, clean),
        cmocka_unit_test_setup(test_honours_umask, clean),
        cmocka_unit_test_setup(test_failed_fill_keeps_old_file, clean),
        cmocka_unit_test_setup(test_cannot_create_temp, clean),
        cmocka_unit_test_setup(test_failed_rename_keeps_target, clean),
        cmocka_unit_test_setup(test_symlink_replaced_not_followed, clean),
        cmocka_unit_test_setup(test_sync_dir, clean),
        cmocka_unit_test_setup(test_reader_sees_whole_files, clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
