/*
 * Unit tests for worker/wkr_data_sparse (LIBSVM with 64-bit indices and
 * the Criteo TSV, rows kept as CSR): hand-written files with expected
 * values worked out by hand, sharding, and every malformed-line case
 * naming PATH:LINE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_err.h"
#include "unit_tmp.h"
#include "wkr_data_sparse.h"

static char tmpdir[256];

static int group_setup(void **state)
{
    (void)state;
    return ut_mkdtemp(tmpdir, sizeof tmpdir, "test_data_sparse");
}

static int group_teardown(void **state)
{
    (void)state;
    ut_rm_tree(tmpdir);
    return 0;
}

/* Writes a fixture and returns the spec "fmt:PATH" (static buffer). */
static const char *spec_len(const char *fmt, const char *name, const char *content, size_t len)
{
    static char spec[600];
    const char *path = ut_in_dir(tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    snprintf(spec, sizeof spec, "%s:%s", fmt, path);
    return spec;
}

static void assert_zeroed(const wkr_sparse_ds_t *ds)
{
    static const wkr_sparse_ds_t zero;
    assert_memory_equal(ds, &zero, sizeof zero);
}

static const char *spec_of(const char *fmt, const char *name, const char *content)
{
    return spec_len(fmt, name, content, strlen(content));
}

/* Loads content and expects code rv with "PATH:LINE: " (line > 0) or
 * "PATH: " in the message, and needle. */
static void expect_err_opts(const char *fmt, const char *content, size_t len,
                            const wkr_data_opts_t *o, int rv, int line, const char *needle)
{
    char name[64];
    static int seq;
    snprintf(name, sizeof name, "bad%d.%s", seq++, fmt);
    const char *spec = spec_len(fmt, name, content, len);
    const char *path = strchr(spec, ':') + 1;
    wkr_sparse_ds_t ds;
    memset(&ds, 0x5a, sizeof ds);
    ps_error_clear();
    int got = wkr_data_sparse_load(&ds, spec, o);
    if (got != rv) {
        fail_msg("code %d, want %d (%s) for %.60s", got, rv, ps_error_msg(), content);
    }
    assert_zeroed(&ds);
    const char *msg = ps_error_msg();
    char want[600];
    if (line > 0) {
        snprintf(want, sizeof want, "%s:%d: ", path, line);
    } else {
        snprintf(want, sizeof want, "%s: ", path);
    }
    if (strstr(msg, want) == NULL || (needle != NULL && strstr(msg, needle) == NULL)) {
        fail_msg("message '%s' lacks '%s' / '%s'", msg, want, needle ? needle : "");
    }
    assert_null(strchr(msg, '\n'));
}

static void expect_err(const char *fmt, const char *content, int rv, int line, const char *needle)
{
    expect_err_opts(fmt, content, strlen(content), NULL, rv, line, needle);
}

/* ---- LIBSVM ---------------------------------------------------------------- */

static void test_libsvm_parse(void **state)
{
    (void)state;
    const char *spec = spec_of("libsvm", "a.svm",
                               "# a comment\n"
                               "+1 1:0.5 4294967297:-2 9223372036854775807:1e-3\n"
                               "\n"
                               "-1 16777216:1.5 # trailing comment\n"
                               "0\n"
                               "1.0\t7:4\r\n");
    wkr_sparse_ds_t ds;
    assert_int_equal(wkr_data_sparse_load(&ds, spec, NULL), 0);
    assert_int_equal(ds.n, 4);
    assert_int_equal(ds.total, 4);
    assert_int_equal(ds.ndense, 0);
    assert_null(ds.dense);
    const float y[] = {1, 0, 0, 1};
    assert_memory_equal(ds.y, y, sizeof y);
    const size_t rowptr[] = {0, 3, 4, 4, 5};
    assert_memory_equal(ds.rowptr, rowptr, sizeof rowptr);
    const uint64_t keys[] = {1, 4294967297ull, 9223372036854775807ull, 16777216, 7};
    assert_memory_equal(ds.keys, keys, sizeof keys);
    const float vals[] = {0.5f, -2.0f, 1e-3f, 1.5f, 4.0f};
    assert_memory_equal(ds.vals, vals, sizeof vals);
    wkr_data_sparse_fini(&ds);
    assert_zeroed(&ds);
    wkr_data_sparse_fini(&ds); /* safe twice */
}

/* Row i goes to shard i % W; every shard knows the total. */
static void test_libsvm_shards(void **state)
{
    (void)state;
    const char *spec = spec_of("libsvm", "s.svm", "1 1:1\n0 2:2\n1 3:3\n0 4:4\n1 5:5\n");
    wkr_data_opts_t o = {.shard = 1, .nshards = 2};
    wkr_sparse_ds_t ds;
    assert_int_equal(wkr_data_sparse_load(&ds, spec, &o), 0);
    assert_int_equal(ds.total, 5);
    assert_int_equal(ds.n, 2);
    const uint64_t keys[] = {2, 4};
    assert_memory_equal(ds.keys, keys, sizeof keys);
    assert_true(ds.y[0] == 0 && ds.y[1] == 0);
    wkr_data_sparse_fini(&ds);
    o = (wkr_data_opts_t){.shard = 0, .nshards = 3};
    assert_int_equal(wkr_data_sparse_load(&ds, spec, &o), 0);
    assert_int_equal(ds.n, 2);
    assert_true(ds.keys[0] == 1 && ds.keys[1] == 4);
    wkr_data_sparse_fini(&ds);
    /* Six workers for five rows: the last has nothing to train on. */
    o = (wkr_data_opts_t){.shard = 5, .nshards = 6};
    expect_err_opts("libsvm", "1 1:1\n", 6, &o, PS_ERANGE, 0, "leave data shard 5 of 6 empty");
}

/* A file far larger than the initial capacities (growth is right). */
static void test_libsvm_many_rows(void **state)
{
    (void)state;
    const char *path = ut_in_dir(tmpdir, "big.svm");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 5000; i++) {
        fprintf(f, "%d", i % 2);
        for (int j = 0; j <= i % 7; j++) {
            fprintf(f, " %llu:%d", (1ull << 40) + (unsigned long long)(i * 10 + j), j);
        }
        fprintf(f, "\n");
    }
    assert_int_equal(fclose(f), 0);
    char spec[600];
    snprintf(spec, sizeof spec, "libsvm:%s", path);
    wkr_sparse_ds_t ds;
    assert_int_equal(wkr_data_sparse_load(&ds, spec, NULL), 0);
    assert_int_equal(ds.n, 5000);
    for (size_t i = 0; i < 5000; i++) {
        assert_int_equal(ds.rowptr[i + 1] - ds.rowptr[i], i % 7 + 1);
        assert_true(ds.keys[ds.rowptr[i]] == (1ull << 40) + i * 10);
        assert_true(ds.y[i] == (float)(i % 2));
        assert_true(ds.vals[ds.rowptr[i + 1] - 1] == (float)(i % 7));
    }
    wkr_data_sparse_fini(&ds);
}

static void test_libsvm_errors(void **state)
{
    (void)state;
    expect_err("libsvm", "1 1:1\n1 9223372036854775808:1\n", PS_ERANGE, 2, "2^63-1");
    expect_err("libsvm", "1 99999999999999999999999:1\n", PS_ERANGE, 1, "2^63-1");
    expect_err("libsvm", "1 0:1\n", PS_EFORMAT, 1, "positive");
    expect_err("libsvm", "\n1 -3:1\n", PS_EFORMAT, 2, "not a positive integer");
    expect_err("libsvm", "1 +3:1\n", PS_EFORMAT, 1, "not a positive integer");
    expect_err("libsvm", "1 3x:1\n", PS_EFORMAT, 1, "not a positive integer");
    expect_err("libsvm", "1 :1\n", PS_EFORMAT, 1, "not a positive integer");
    expect_err("libsvm", "1 1.5:1\n", PS_EFORMAT, 1, "not a positive integer");
    expect_err("libsvm", "1 5:1 5:2\n", PS_EFORMAT, 1, "strictly increasing");
    expect_err("libsvm", "1 5:1 4:2\n", PS_EFORMAT, 1, "strictly increasing");
    expect_err("libsvm", "1 5\n", PS_EFORMAT, 1, "index:value");
    expect_err("libsvm", "1 5:abc\n", PS_EFORMAT, 1, "bad value");
    expect_err("libsvm", "1 5:nan\n", PS_EFORMAT, 1, "bad value");
    expect_err("libsvm", "1 5:\n", PS_EFORMAT, 1, "bad value");
    expect_err("libsvm", "2 5:1\n", PS_EFORMAT, 1, "0/1 or -1/+1");
    expect_err("libsvm", "0.5 5:1\n", PS_EFORMAT, 1, "0/1 or -1/+1");
    expect_err("libsvm", "yes 5:1\n", PS_EFORMAT, 1, "0/1 or -1/+1");
    expect_err_opts("libsvm", "1 1:1\n1 2:1\0junk\n", 17, NULL, PS_EFORMAT, 2, "NUL byte");
    expect_err("libsvm", "# only comments\n\n", PS_EFORMAT, 0, "no samples");
    expect_err("libsvm", "", PS_EFORMAT, 0, "no samples");
}

/* ---- Criteo ------------------------------------------------------------------ */

/* One Criteo line: label, 13 integers, 26 categorical fields. */
static void criteo_line(char *out, size_t cap, const char *label, const char *ints[13],
                        const char *cats[26])
{
    size_t k = (size_t)snprintf(out, cap, "%s", label);
    for (int i = 0; i < 13; i++) {
        k += (size_t)snprintf(out + k, cap - k, "\t%s", ints[i]);
    }
    for (int i = 0; i < 26; i++) {
        k += (size_t)snprintf(out + k, cap - k, "\t%s", cats[i]);
    }
    snprintf(out + k, cap - k, "\n");
}

static void test_criteo_parse(void **state)
{
    (void)state;
    const char *ints[13] = {"1", "", "-2", "0", "3", "", "", "", "", "", "", "", "100"};
    const char *cats[26] = {"68fd1e64", "", "", "", "", "", "", "", "", "", "", "", "",
                            "",         "", "", "", "", "", "", "", "", "", "", "", "FFFFFFFF"};
    char a[1024], b[1024], text[2100];
    criteo_line(a, sizeof a, "1", ints, cats);
    const char *ints2[13] = {"", "", "", "", "", "", "", "", "", "", "", "", ""};
    const char *cats2[26] = {"", "", "00000000", "", "", "", "", "", "", "", "", "", "",
                             "", "", "",         "", "", "", "", "", "", "", "", "", ""};
    criteo_line(b, sizeof b, "0", ints2, cats2);
    snprintf(text, sizeof text, "%s\n%s", a, b);
    wkr_sparse_ds_t ds;
    assert_int_equal(wkr_data_sparse_load(&ds, spec_of("criteo", "c.tsv", text), NULL), 0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.ndense, 13);
    assert_null(ds.vals);
    assert_true(ds.y[0] == 1 && ds.y[1] == 0);
    const size_t rowptr[] = {0, 2, 3};
    assert_memory_equal(ds.rowptr, rowptr, sizeof rowptr);
    /* Field 1 = 0x68fd1e64, field 26 = 0xffffffff, field 3 = 0. */
    const uint64_t keys[] = {(1ull << 32) + 0x68fd1e64ull, (26ull << 32) + 0xffffffffull,
                             3ull << 32};
    assert_memory_equal(ds.keys, keys, sizeof keys);
    /* log(1 + max(x, 0)): 1 -> log 2, -2 -> 0, 3 -> log 4, 100 -> log 101. */
    const double d0[13] = {log(2.0), 0, 0, 0, log(4.0), 0, 0, 0, 0, 0, 0, 0, log(101.0)};
    for (int k = 0; k < 13; k++) {
        assert_true(fabs(ds.dense[k] - d0[k]) < 1e-6);
        assert_true(ds.dense[13 + k] == 0.0f);
    }
    wkr_data_sparse_fini(&ds);
    assert_zeroed(&ds);
}

/* A valid line with field `f` (0-based over all 40) replaced by `v`. */
static const char *criteo_with(int f, const char *v)
{
    static char line[1024];
    const char *fields[40];
    for (int i = 0; i < 40; i++) {
        fields[i] = i == 0 ? "1" : i < 14 ? "5" : "0a0b0c0d";
    }
    fields[f] = v;
    criteo_line(line, sizeof line, fields[0], fields + 1, fields + 14);
    return line;
}

static void test_criteo_errors(void **state)
{
    (void)state;
    char text[4096];
    snprintf(text, sizeof text, "%s", criteo_with(1, "7")); /* one static buffer: in turn */
    snprintf(text + strlen(text), sizeof text - strlen(text), "%s", criteo_with(5, "1.5"));
    expect_err("criteo", text, PS_EFORMAT, 2, "field 6 (integer I5) '1.5' is not an integer");
    expect_err("criteo", criteo_with(13, "x"), PS_EFORMAT, 1, "I13");
    expect_err("criteo", criteo_with(1, " 3"), PS_EFORMAT, 1, "not an integer");
    expect_err("criteo", criteo_with(1, "99999999999999999999999"), PS_EFORMAT, 1,
               "not an integer");
    expect_err("criteo", criteo_with(14, "0a0b0c0"), PS_EFORMAT, 1,
               "field 15 (categorical C1) '0a0b0c0' is not 8 hex digits");
    expect_err("criteo", criteo_with(39, "0a0b0c0g"), PS_EFORMAT, 1, "C26");
    expect_err("criteo", criteo_with(20, "0a0b0c0d0"), PS_EFORMAT, 1, "C7");
    expect_err("criteo", criteo_with(20, "-a0b0c0d"), PS_EFORMAT, 1, "C7");
    expect_err("criteo", criteo_with(0, "2"), PS_EFORMAT, 1, "label");
    expect_err("criteo", criteo_with(0, ""), PS_EFORMAT, 1, "label");
    expect_err("criteo", "1\t2\t3\n", PS_EFORMAT, 1, "3 tab-separated fields, want 40");
    /* One field too many: the line's end is a field. */
    snprintf(text, sizeof text, "%s", criteo_with(39, "0a0b0c0d\t"));
    expect_err("criteo", text, PS_EFORMAT, 1, "41 tab-separated fields");
    expect_err("criteo", "", PS_EFORMAT, 0, "no samples");
}

static void test_bad_spec(void **state)
{
    (void)state;
    wkr_sparse_ds_t ds;
    assert_int_equal(wkr_data_sparse_load(&ds, "csv:/x", NULL), PS_EINVAL);
    assert_int_equal(wkr_data_sparse_load(&ds, "libsvm:", NULL), PS_EINVAL);
    assert_zeroed(&ds);
    assert_int_equal(wkr_data_sparse_load(&ds, "libsvm:/nonexistent/x.svm", NULL), PS_ENOENT);
    assert_non_null(strstr(ps_error_msg(), "/nonexistent/x.svm"));
    wkr_data_opts_t o = {.shard = 2, .nshards = 2};
    assert_int_equal(wkr_data_sparse_load(&ds, "libsvm:/x", &o), PS_EINVAL);
    assert_zeroed(&ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libsvm_parse),     cmocka_unit_test(test_libsvm_shards),
        cmocka_unit_test(test_libsvm_many_rows), cmocka_unit_test(test_libsvm_errors),
        cmocka_unit_test(test_criteo_parse),     cmocka_unit_test(test_criteo_errors),
        cmocka_unit_test(test_bad_spec),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
