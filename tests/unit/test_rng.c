/*
 * Unit tests for common/ps_rng: the generator against its published
 * definition, determinism per (seed, stream), and the distributions of
 * ps_rng_uniform, ps_rng_below and ps_rng_shuffle.
 *
 * Reference values: splitmix64 seeded with 0 gives e220a8397b1dcdaf,
 * 6e789e6aa1b965f4, 06c45d188009454f, f88bb8a8724c81ec (Vigna's reference
 * splitmix64.c); the xoshiro256** outputs below were computed with a
 * separate Python transcription of xoshiro256starstar.c, not with this code.
 *
 * The statistical tests use fixed seeds, so each is deterministic: a bound
 * is chosen at or beyond the 99.9% quantile of the statistic for a correct
 * generator, and the faults they target (Sattolo's variant of the shuffle,
 * which only makes cyclic permutations; a modulo without rejection in
 * ps_rng_below) land orders of magnitude beyond it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_rng.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Chi-square statistic of counts against a uniform expectation. */
static double chi_square(const unsigned *count, int cells, double expect)
{
    double x = 0.0;
    for (int i = 0; i < cells; i++) {
        double d = (double)count[i] - expect;
        x += d * d / expect;
    }
    return x;
}

static void test_seed_is_splitmix64(void **state)
{
    (void)state;
    ps_rng_t r;
    ps_rng_seed(&r, 0, 0);
    assert_true(r.s[0] == 0xe220a8397b1dcdafULL);
    assert_true(r.s[1] == 0x6e789e6aa1b965f4ULL);
    assert_true(r.s[2] == 0x06c45d188009454fULL);
    assert_true(r.s[3] == 0xf88bb8a8724c81ecULL);
}

static void test_next_is_xoshiro256starstar(void **state)
{
    (void)state;
    static const uint64_t want00[] = {0x99ec5f36cb75f2b4ULL, 0xbf6e1f784956452aULL,
                                      0x1a5f849d4933e6e0ULL, 0x6aa594f1262d2d2cULL};
    /* seed 42, stream 7: the stream is mixed in before splitmix64. */
    static const uint64_t want42[] = {0x36566fde73b53910ULL, 0x17390ae20168c451ULL,
                                      0x235a55aaae6c8bc6ULL, 0x60d90b5fa82b2963ULL};
    ps_rng_t a, b;
    ps_rng_seed(&a, 0, 0);
    ps_rng_seed(&b, 42, 7);
    for (int i = 0; i < 4; i++) {
        assert_true(ps_rng_next(&a) == want00[i]);
        assert_true(ps_rng_next(&b) == want42[i]);
    }
}

static void test_determinism(void **state)
{
    (void)state;
    ps_rng_t a, b, c, d;
    ps_rng_seed(&a, 1234, 5);
    ps_rng_seed(&b, 1234, 5);
    ps_rng_seed(&c, 1234, 6);
    ps_rng_seed(&d, 1235, 5);
    int differ_stream = 0, differ_seed = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = ps_rng_next(&a);
        assert_true(x == ps_rng_next(&b));
        differ_stream += x != ps_rng_next(&c);
        differ_seed += x != ps_rng_next(&d);
    }
    assert_int_equal(differ_stream, 1000);
    assert_int_equal(differ_seed, 1000);
}

static void test_uniform(void **state)
{
    (void)state;
    enum { N = 100000 };
    ps_rng_t r;
    ps_rng_seed(&r, 7, 0);
    double sum = 0.0;
    float lo = 1.0f, hi = 0.0f;
    for (int i = 0; i < N; i++) {
        float u = ps_rng_uniform(&r);
        assert_true(u >= 0.0f && u < 1.0f);
        /* 24 random bits: u * 2^24 is an integer, exactly. */
        float k = u * 16777216.0f;
        assert_true(k == (float)(uint32_t)k);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    /* Mean 1/2, standard error sqrt(1/12/N) = 0.00091: 5 sigma. */
    assert_true(sum / N > 0.5 - 0.0046 && sum / N < 0.5 + 0.0046);
    assert_true(lo < 0.001f && hi > 0.999f);
}

static void test_below_range_and_spread(void **state)
{
    (void)state;
    enum { N = 60000, K = 6 };
    ps_rng_t r;
    ps_rng_seed(&r, 11, 0);
    unsigned count[K] = {0};
    for (int i = 0; i < N; i++) {
        uint64_t v = ps_rng_below(&r, K);
        assert_true(v < K);
        count[v]++;
    }
    /* 5 degrees of freedom: P(chi2 > 20.52) = 0.001. */
    double x = chi_square(count, K, (double)N / K);
    if (x > 20.52) {
        fail_msg("below(6) chi-square %.2f over 20.52", x);
    }
    for (int i = 0; i < 100; i++) {
        assert_true(ps_rng_below(&r, 1) == 0);
        assert_true(ps_rng_below(&r, UINT64_MAX) < UINT64_MAX);
    }
}

/* n = 3 * 2^62: a bare `next % n` would map the values [n, 2^64) onto
 * [0, 2^62) and give that third of the range probability 1/2; rejection
 * keeps it at 1/3. */
static void test_below_unbiased_for_large_n(void **state)
{
    (void)state;
    enum { N = 30000 };
    const uint64_t n = 3ULL << 62, third = 1ULL << 62;
    ps_rng_t r;
    ps_rng_seed(&r, 3, 1);
    int low = 0;
    for (int i = 0; i < N; i++) {
        uint64_t v = ps_rng_below(&r, n);
        assert_true(v < n);
        low += v < third;
    }
    /* 1/3 with standard error sqrt(2/9/N) = 0.0027: 5 sigma. */
    double p = (double)low / N;
    if (p < 1.0 / 3 - 0.0136 || p > 1.0 / 3 + 0.0136) {
        fail_msg("fraction below n/3 is %.4f, want 1/3", p);
    }
}

static void test_shuffle_is_permutation(void **state)
{
    (void)state;
    enum { N = 1000 };
    uint32_t idx[N], again[N];
    uint8_t seen[N] = {0};
    for (uint32_t i = 0; i < N; i++) {
        idx[i] = again[i] = i;
    }
    ps_rng_t r;
    ps_rng_seed(&r, 99, 3);
    ps_rng_shuffle(&r, idx, N);
    ps_rng_seed(&r, 99, 3);
    ps_rng_shuffle(&r, again, N);
    int moved = 0;
    for (uint32_t i = 0; i < N; i++) {
        assert_true(idx[i] < N);
        assert_int_equal(seen[idx[i]]++, 0);
        assert_int_equal(idx[i], again[i]); /* same seed, same order */
        moved += idx[i] != i;
    }
    assert_true(moved > N / 2);
    /* n = 0 and n = 1 leave the array alone. */
    uint32_t one[2] = {7, 8};
    ps_rng_shuffle(&r, one, 0);
    ps_rng_shuffle(&r, one, 1);
    assert_int_equal(one[0], 7);
    assert_int_equal(one[1], 8);
}

/* Rank of a permutation of 0..3 in 0..23 (Lehmer code). */
static int perm4_rank(const uint32_t *p)
{
    int rank = 0;
    for (int i = 0; i < 4; i++) {
        int smaller = 0;
        for (int j = i + 1; j < 4; j++) {
            smaller += p[j] < p[i];
        }
        rank = rank * (4 - i) + smaller;
    }
    return rank;
}

/* All 24 orders of 4 items, equally often over many seeds.  Sattolo's
 * variant reaches only the 6 cyclic ones (chi-square ~ 72000). */
static void test_shuffle_uniform_over_seeds(void **state)
{
    (void)state;
    enum { SEEDS = 24000 };
    unsigned count[24] = {0};
    for (uint64_t seed = 0; seed < SEEDS; seed++) {
        uint32_t p[4] = {0, 1, 2, 3};
        ps_rng_t r;
        ps_rng_seed(&r, seed, 0);
        ps_rng_shuffle(&r, p, 4);
        count[perm4_rank(p)]++;
    }
    for (int i = 0; i < 24; i++) {
        if (count[i] == 0) {
            fail_msg("permutation %d of 4 items never appears in %d shuffles", i, SEEDS);
        }
    }
    /* 23 degrees of freedom: P(chi2 > 49.73) = 0.001. */
    double x = chi_square(count, 24, SEEDS / 24.0);
    if (x > 49.73) {
        fail_msg("chi-square of the 24 permutations is %.2f, over 49.73", x);
    }
}

/* A uniform permutation of 8 items keeps at least one item in place with
 * probability 1 - D8/8! = 1 - 14833/40320 = 0.63212 (-> 1 - 1/e); a cyclic
 * one never does. */
static void test_shuffle_fixed_points(void **state)
{
    (void)state;
    enum { SEEDS = 20000, N = 8 };
    int with_fixed = 0;
    for (uint64_t seed = 0; seed < SEEDS; seed++) {
        uint32_t p[N];
        for (uint32_t i = 0; i < N; i++) {
            p[i] = i;
        }
        ps_rng_t r;
        ps_rng_seed(&r, seed, 1);
        ps_rng_shuffle(&r, p, N);
        int fixed = 0;
        for (uint32_t i = 0; i < N; i++) {
            fixed |= p[i] == i;
        }
        with_fixed += fixed;
    }
    /* Standard error sqrt(p(1-p)/SEEDS) = 0.0034: 0.0112 is 3.3 sigma. */
    double f = (double)with_fixed / SEEDS;
    if (f < 0.63212 - 0.0112 || f > 0.63212 + 0.0112) {
        fail_msg("%.4f of the permutations have a fixed point, want 0.6321", f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_is_splitmix64),
        cmocka_unit_test(test_next_is_xoshiro256starstar),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_below_range_and_spread),
        cmocka_unit_test(test_below_unbiased_for_large_n),
        cmocka_unit_test(test_shuffle_is_permutation),
        cmocka_unit_test(test_shuffle_uniform_over_seeds),
        cmocka_unit_test(test_shuffle_fixed_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
