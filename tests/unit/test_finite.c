/*
 * Unit tests for common/ps_finite against a one-by-one reference written
 * here: every position, block boundary and kind of non-finite value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_finite.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define N 5000 /* several 1024-float blocks and a partial one */

static size_t reference(const float *g, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (isnan(g[i]) || isinf(g[i])) {
            return i;
        }
    }
    return to;
}

static float bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void fill_finite(float *g)
{
    /* Large, tiny, subnormal, negative and zero values, none of them
     * non-finite: the largest finite float must not be mistaken. */
    const float pool[] = {0.0f, -0.0f, 1.0f, -3.0e38f, 3.4028235e38f, 1e-45f, -1e-40f, 7.25f};
    for (size_t i = 0; i < N; i++) {
        g[i] = pool[i % (sizeof pool / sizeof pool[0])];
    }
}

static void test_all_finite(void **state)
{
    (void)state;
    float *g = malloc(N * sizeof *g);
    fill_finite(g);
    assert_int_equal(ps_first_nonfinite(g, 0, N), N);
    assert_int_equal(ps_first_nonfinite(g, 17, 17), 17);
    assert_int_equal(ps_first_nonfinite(g, 20, 10), 10); /* empty range */
    free(g);
}

/* One non-finite value at every position, searched from several starts
 * (before, at and after it) and to several ends. */
static void test_every_position(void **state)
{
    (void)state;
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY, bits(0x7f800001u), bits(0xffc00000u)};
    const size_t froms[] = {0, 1, 1023, 1024, 1025, 2047, 3000};
    float *g = malloc(N * sizeof *g);
    fill_finite(g);
    for (size_t pos = 0; pos < N; pos++) {
        float keep = g[pos];
        g[pos] = bad[pos % (sizeof bad / sizeof bad[0])];
        for (size_t f = 0; f < sizeof froms / sizeof froms[0]; f++) {
            size_t to = N - (pos % 3) * 511;
            size_t want = reference(g, froms[f], to), got = ps_first_nonfinite(g, froms[f], to);
            if (got != want) {
                fail_msg("bad value at %zu, range [%zu, %zu): got %zu, want %zu", pos, froms[f], to,
                         got, want);
            }
        }
        g[pos] = keep;
    }
    free(g);
}

/* Two bad values: the first one is reported, also within one block. */
static void test_first_of_two(void **state)
{
    (void)state;
    float *g = malloc(N * sizeof *g);
    fill_finite(g);
    g[1500] = INFINITY;
    g[1100] = NAN;
    assert_int_equal(ps_first_nonfinite(g, 0, N), 1100);
    assert_int_equal(ps_first_nonfinite(g, 1101, N), 1500);
    assert_int_equal(ps_first_nonfinite(g, 1101, 1500), 1500);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_finite),
        cmocka_unit_test(test_every_position),
        cmocka_unit_test(test_first_of_two),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
