/*
 * Unit tests for common/ps_keys: where a row lives (ps_key_server) and the
 * TABLES declarations' codec.  Expected bytes are written out by hand from
 * the format in ps_keys.h; the hash is checked against splitmix64's
 * published first output (seed 0 -> 0xe220a8397b1dcdaf), not against
 * itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_keys.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

/* splitmix64's first output for state 0 is the finaliser of
 * 0x9e3779b97f4a7c15: 0xe220a8397b1dcdaf; ps_key_server mixes the key
 * itself, so key 0x9e3779b97f4a7c15 must map by that value. */
static void test_key_server_is_splitmix(void **state)
{
    (void)state;
    uint64_t k = 0x9e3779b97f4a7c15ULL, z = 0xe220a8397b1dcdafULL;
    for (uint32_t s = 1; s <= 9; s++) {
        assert_int_equal(ps_key_server(k, s), (uint32_t)(z % s));
    }
    assert_int_equal(ps_key_server(12345, 1), 0);
    assert_int_equal(ps_key_server(12345, 0), 0);
}

/* Consecutive ids (hashed features, f * 2^32 + h) spread evenly. */
static void test_key_server_spreads(void **state)
{
    (void)state;
    int count[4] = {0};
    for (uint64_t i = 0; i < 40000; i++) {
        count[ps_key_server((3ULL << 32) + i, 4)]++;
    }
    for (int s = 0; s < 4; s++) {
        assert_true(count[s] > 9500 && count[s] < 10500);
    }
}

static void test_keys_check(void **state)
{
    (void)state;
    uint64_t k[4];
    int n = 0;
    for (uint64_t key = 1; n < 4; key++) {
        if (ps_key_server(key, 3) == 1) {
            k[n++] = key;
        }
    }
    assert_true(ps_keys_check(k, 4, 1, 3));
    assert_true(ps_keys_check(k, 0, 1, 3));
    assert_false(ps_keys_check(k, 4, 0, 3)); /* not server 0's */
    uint64_t dup[2] = {k[0], k[0]}, desc[2] = {k[1], k[0]};
    assert_false(ps_keys_check(dup, 2, 1, 3));
    assert_false(ps_keys_check(desc, 2, 1, 3));
}

/* One table, bytes written out from the format in ps_keys.h. */
static void test_tables_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {
        1,    0,    0,    0,                   /* count 1 */
        3,    'e',  'm',  'b',                 /* name */
        16,   0,    0,    0,                   /* dim 16 */
        1,                                     /* uniform */
        0x00, 0x00, 0x00, 0x3f,                /* bound 0.5f */
        7,    0,    0,    0,    0, 0, 0, 0x80, /* seed 2^63 + 7 */
    };
    ps_tables_t ts = {0}, back;
    assert_int_equal(ps_tables_add(&ts, "emb", 16, PS_TABLE_INIT_UNIFORM, 0.5f, (1ULL << 63) + 7),
                     0);
    uint8_t buf[64];
    assert_int_equal(ps_tables_size(&ts), sizeof want);
    ps_tables_encode(&ts, buf);
    assert_memory_equal(buf, want, sizeof want);
    assert_int_equal(ps_tables_decode(&back, want, sizeof want), 0);
    assert_int_equal(back.n, 1);
    assert_string_equal(back.t[0].name, "emb");
    assert_int_equal(back.t[0].dim, 16);
    assert_true(back.t[0].seed == (1ULL << 63) + 7);
    assert_true(ps_tables_hash(&back) == ps_tables_hash(&ts));
    back.t[0].dim = 17;
    assert_true(ps_tables_hash(&back) != ps_tables_hash(&ts));
}

static void expect_refused(const uint8_t *b, size_t len)
{
    ps_tables_t ts;
    ps_error_clear();
    assert_int_equal(ps_tables_decode(&ts, b, len), PS_EFORMAT);
    assert_int_equal(ts.n, 0);
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
}

static void test_tables_refused(void **state)
{
    (void)state;
    uint8_t good[] = {1, 0, 0, 0, 1, 'a', 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    ps_tables_t ts;
    assert_int_equal(ps_tables_decode(&ts, good, sizeof good), 0);
    for (size_t cut = 0; cut < sizeof good; cut++) {
        expect_refused(good, cut);
    }
    uint8_t b[sizeof good + 1];
    memcpy(b, good, sizeof good);
    b[sizeof good] = 0;
    expect_refused(b, sizeof b); /* a byte after the last table */
    memcpy(b, good, sizeof good);
    b[6] = 0; /* dim 0 */
    expect_refused(b, sizeof good);
    memcpy(b, good, sizeof good);
    b[10] = 2; /* unknown init */
    expect_refused(b, sizeof good);
    memcpy(b, good, sizeof good);
    b[22] = 1; /* zeros with a seed */
    expect_refused(b, sizeof good);
    memcpy(b, good, sizeof good);
    b[5] = 0; /* a NUL in the name */
    expect_refused(b, sizeof good);
    memcpy(b, good, sizeof good);
    b[0] = 65; /* more than PS_TABLES_MAX */
    expect_refused(b, sizeof good);
}

static void test_tables_add_checks(void **state)
{
    (void)state;
    ps_tables_t ts = {0};
    assert_int_equal(ps_tables_add(&ts, "a", 0, 0, 0, 0), PS_EINVAL);
    assert_int_equal(ps_tables_add(&ts, "a", PS_TABLE_MAX_DIM + 1, 0, 0, 0), PS_EINVAL);
    assert_int_equal(ps_tables_add(&ts, "", 1, 0, 0, 0), PS_EINVAL);
    assert_int_equal(ps_tables_add(&ts, "a", 1, 1, NAN, 0), PS_EINVAL);
    assert_int_equal(ps_tables_add(&ts, "a", 1, 1, -1.0f, 0), PS_EINVAL);
    assert_int_equal(ps_tables_add(&ts, "a", 1, 0, 0, 0), 0);
    assert_int_equal(ps_tables_add(&ts, "a", 2, 0, 0, 0), PS_EINVAL); /* twice */
    assert_int_equal(ts.n, 1);
    for (int i = 1; i < PS_TABLES_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        assert_int_equal(ps_tables_add(&ts, name, 1, 0, 0, 0), 0);
    }
    assert_int_equal(ps_tables_add(&ts, "one-more", 1, 0, 0, 0), PS_ENOMEM);
    assert_int_equal(ps_tables_find(&ts, "t5"), 5);
    assert_int_equal(ps_tables_find(&ts, "nope"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_server_is_splitmix),
        cmocka_unit_test(test_key_server_spreads),
        cmocka_unit_test(test_keys_check),
        cmocka_unit_test(test_tables_bytes),
        cmocka_unit_test(test_tables_refused),
        cmocka_unit_test(test_tables_add_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
