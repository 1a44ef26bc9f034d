/*
 * Unit tests for common/ps_chunk: the chunk map.  Expected maps are
 * written out by hand for small cases; the invariants (chunks tile the
 * flat space, round-robin owners, per-server counts add up) are checked
 * over a sweep of totals and server counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_chunk.h"
#include "ps_err.h"

#include <stdint.h>
#include <string.h>

static void expect_chunk(const ps_chunkmap_t *m, size_t i, int server, size_t offset, size_t count)
{
    assert_true(i < m->n);
    assert_int_equal(m->c[i].id, i);
    assert_int_equal(m->c[i].server, server);
    assert_int_equal(m->c[i].offset, offset);
    assert_int_equal(m->c[i].count, count);
}

static void test_even_split(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, 4096, 1024, 2), 0);
    assert_int_equal(m.n, 4);
    assert_int_equal(m.total, 4096);
    assert_int_equal(m.chunk_elems, 1024);
    assert_int_equal(m.nservers, 2);
    expect_chunk(&m, 0, 0, 0, 1024);
    expect_chunk(&m, 1, 1, 1024, 1024);
    expect_chunk(&m, 2, 0, 2048, 1024);
    expect_chunk(&m, 3, 1, 3072, 1024);
    ps_chunkmap_fini(&m);
}

static void test_uneven_split_last_shorter(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, 3000, 1024, 2), 0);
    assert_int_equal(m.n, 3);
    expect_chunk(&m, 0, 0, 0, 1024);
    expect_chunk(&m, 1, 1, 1024, 1024);
    expect_chunk(&m, 2, 0, 2048, 952); /* 3000 - 2048 */
    ps_chunkmap_fini(&m);

    /* One element past a boundary gives a one-element last chunk. */
    assert_int_equal(ps_chunkmap_init(&m, 2049, 1024, 3), 0);
    assert_int_equal(m.n, 3);
    expect_chunk(&m, 2, 2, 2048, 1);
    ps_chunkmap_fini(&m);

    /* Fewer elements than one chunk: a single short chunk. */
    assert_int_equal(ps_chunkmap_init(&m, 10, 1024, 4), 0);
    assert_int_equal(m.n, 1);
    expect_chunk(&m, 0, 0, 0, 10);
    ps_chunkmap_fini(&m);
}

static void test_round_robin(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, 10 * 1024 + 5, 1024, 3), 0);
    assert_int_equal(m.n, 11);
    const int want[11] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1};
    for (size_t i = 0; i < m.n; i++) {
        assert_int_equal(m.c[i].server, want[i]);
    }
    size_t e;
    assert_int_equal(ps_chunkmap_count_on(&m, 0, &e), 4);
    assert_int_equal(e, 4 * 1024);
    assert_int_equal(ps_chunkmap_count_on(&m, 1, &e), 4);
    assert_int_equal(e, 3 * 1024 + 5); /* holds the 5-element tail */
    assert_int_equal(ps_chunkmap_count_on(&m, 2, &e), 3);
    assert_int_equal(e, 3 * 1024);
    assert_int_equal(ps_chunkmap_count_on(&m, 1, NULL), 4);
    ps_chunkmap_fini(&m);
}

/* Chunks tile [0, total) in order and the per-server sums add up. */
static void check_invariants(size_t total, size_t ce, int S)
{
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, total, ce, S), 0);
    assert_int_equal(m.n, (total + ce - 1) / ce);
    size_t next = 0;
    for (size_t i = 0; i < m.n; i++) {
        assert_int_equal(m.c[i].id, i);
        assert_int_equal(m.c[i].offset, next);
        assert_int_equal(m.c[i].server, (int)(i % (size_t)S));
        assert_true(m.c[i].count >= 1 && m.c[i].count <= ce);
        if (i + 1 < m.n) {
            assert_int_equal(m.c[i].count, ce);
        }
        next += m.c[i].count;
    }
    assert_int_equal(next, total);
    size_t chunks = 0, elems = 0;
    for (int s = 0; s < S; s++) {
        size_t e = 0;
        chunks += ps_chunkmap_count_on(&m, s, &e);
        elems += e;
    }
    assert_int_equal(chunks, m.n);
    assert_int_equal(elems, total);
    ps_chunkmap_fini(&m);
}

static void test_sums_over_servers(void **state)
{
    (void)state;
    const size_t totals[] = {1, 1023, 1024, 1025, 3000, 4096, 10000, 65536 + 17};
    const size_t sizes[] = {1024, 1500, 4096};
    for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++) {
        for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
            for (int S = 1; S <= 7; S++) {
                check_invariants(totals[t], sizes[c], S);
            }
        }
    }
}

static void test_more_servers_than_chunks(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, 3000, 1024, 5), 0);
    assert_int_equal(m.n, 3);
    size_t e = 99;
    assert_int_equal(ps_chunkmap_count_on(&m, 0, &e), 1);
    assert_int_equal(e, 1024);
    assert_int_equal(ps_chunkmap_count_on(&m, 2, &e), 1);
    assert_int_equal(e, 952);
    assert_int_equal(ps_chunkmap_count_on(&m, 3, &e), 0);
    assert_int_equal(e, 0);
    assert_int_equal(ps_chunkmap_count_on(&m, 4, &e), 0);
    assert_int_equal(e, 0);
    /* A server index outside the map holds nothing. */
    assert_int_equal(ps_chunkmap_count_on(&m, 5, &e), 0);
    assert_int_equal(ps_chunkmap_count_on(&m, -1, &e), 0);
    ps_chunkmap_fini(&m);
}

static void test_chunk_size_bounds_accepted(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, 5000, PS_CHUNK_MIN_ELEMS, 1), 0);
    assert_int_equal(m.n, (5000 + PS_CHUNK_MIN_ELEMS - 1) / PS_CHUNK_MIN_ELEMS);
    ps_chunkmap_fini(&m);
    assert_int_equal(ps_chunkmap_init(&m, 5000, PS_CHUNK_MAX_ELEMS, 2), 0);
    assert_int_equal(m.n, 1);
    expect_chunk(&m, 0, 0, 0, 5000);
    ps_chunkmap_fini(&m);
}

static void expect_invalid(size_t total, size_t ce, int S)
{
    ps_chunkmap_t m;
    memset(&m, 0x5a, sizeof m);
    ps_error_clear();
    assert_int_equal(ps_chunkmap_init(&m, total, ce, S), PS_EINVAL);
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
    /* A failed init leaves nothing to free, and fini on it is harmless. */
    assert_null(m.c);
    assert_int_equal(m.n, 0);
    ps_chunkmap_fini(&m);
}

static void test_invalid_args(void **state)
{
    (void)state;
    expect_invalid(0, 1024, 1);
    expect_invalid(1000, 1024, 0);
    expect_invalid(1000, 1024, -3);
    expect_invalid(1000, PS_CHUNK_MIN_ELEMS - 1, 1);
    expect_invalid(1000, (size_t)PS_CHUNK_MAX_ELEMS + 1, 1);
    expect_invalid(1000, SIZE_MAX, 1);
}

static void test_fini_twice(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, 3000, 1024, 2), 0);
    ps_chunkmap_fini(&m);
    assert_null(m.c);
    assert_int_equal(m.n, 0);
    ps_chunkmap_fini(&m);
}

/* chunk_elems 0: one chunk per server, multiples of 1024, 16Ki..1Mi. */
static void test_auto_size(void **state)
{
    (void)state;
    assert_int_equal(ps_chunk_auto(1000, 1), 16384);         /* raised to 64 KiB */
    assert_int_equal(ps_chunk_auto(235146, 1), 230 * 1024);  /* 229.6 KiE rounded up */
    assert_int_equal(ps_chunk_auto(235146, 2), 115 * 1024);  /* 117573 = 114.8 KiE, up */
    assert_int_equal(ps_chunk_auto(10u << 20, 1), 1u << 20); /* capped at 4 MiB */
    ps_chunkmap_t m;
    assert_int_equal(ps_chunkmap_init(&m, 235146, 0, 2), 0);
    assert_int_equal(m.n, 2);
    assert_int_equal(m.c[0].count, 117760);
    assert_int_equal(m.c[1].count, 235146 - 117760);
    assert_int_equal(m.c[1].server, 1);
    ps_chunkmap_fini(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_even_split),
        cmocka_unit_test(test_uneven_split_last_shorter),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_sums_over_servers),
        cmocka_unit_test(test_more_servers_than_chunks),
        cmocka_unit_test(test_chunk_size_bounds_accepted),
        cmocka_unit_test(test_invalid_args),
        cmocka_unit_test(test_auto_size),
        cmocka_unit_test(test_fini_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
