/*
 * Unit tests for common/ps_half: fp16 and bfloat16 conversions against
 * hand-derived bit patterns (IEEE 754 binary16, bfloat16 = top half of
 * binary32, both rounding to nearest even).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ps_half.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_bf16_hand_values(void **state)
{
    (void)state;
    /* 1.0 = 0x3f800000 -> 0x3f80; 1 + 2^-8 = 0x3f808000 is a tie between
     * 0x3f80 and 0x3f81: even wins (0x3f80); 1 + 3*2^-8 = 0x3f818000 ties
     * between 0x3f81 and 0x3f82: even wins (0x3f82); 0x3f808001 is just
     * above the tie: up (0x3f81); -2.0 = 0xc0000000 -> 0xc000. */
    const float in[] = {1.0f,
                        from_bits(0x3f808000u),
                        from_bits(0x3f818000u),
                        from_bits(0x3f808001u),
                        -2.0f,
                        INFINITY,
                        NAN};
    const uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc000, 0x7f80};
    uint16_t out[7];
    ps_f32_to_bf16(in, out, 7);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(out[i], want[i]);
    }
    assert_true((out[6] & 0x7f80) == 0x7f80 && (out[6] & 0x7f) != 0); /* still a NaN */
    float back[7];
    ps_bf16_to_f32(out, back, 7);
    assert_true(back[0] == 1.0f && back[2] == from_bits(0x3f820000u) && back[4] == -2.0f);
    assert_true(isinf(back[5]) && isnan(back[6]));
}

static void test_f16_hand_values(void **state)
{
    (void)state;
    /* binary16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 (largest) = 0x7bff,
     * 65520 rounds up past it to Inf (0x7c00), 2^-24 (smallest subnormal)
     * = 0x0001, 1 + 2^-11 ties between 0x3c00 and 0x3c01: even (0x3c00). */
    const float in[] = {1.0f, -2.0f, 65504.0f, 65520.0f, 0x1p-24f, 1.0f + 0x1p-11f};
    const uint16_t want[] = {0x3c00, 0xc000, 0x7bff, 0x7c00, 0x0001, 0x3c00};
    uint16_t out[6];
    ps_f32_to_f16(in, out, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(out[i], want[i]);
    }
    /* Widening reads unaligned input (a network buffer). */
    unsigned char raw[13];
    memcpy(raw + 1, out, sizeof out);
    float back[6];
    ps_f16_to_f32(raw + 1, back, 6);
    assert_true(back[0] == 1.0f && back[1] == -2.0f && back[2] == 65504.0f);
    assert_true(isinf(back[3]) && back[4] == 0x1p-24f && back[5] == 1.0f);
}

/* One probe value at `at` in a run of n ones: where the scan stops. */
static size_t overflow_at(ps_half_fmt_t fmt, float probe, size_t at, size_t n)
{
    static float buf[3000];
    for (size_t i = 0; i < n; i++) {
        buf[i] = 1.0f;
    }
    buf[at] = probe;
    return ps_half_first_overflow(fmt, buf, n);
}

/* binary16's largest finite value is 65504 = 0x1.ffcp+15; the next
 * representable step would be 65536, so [65504, 65520) rounds down to
 * 65504 and 65520, the tie, goes to the even neighbour: Inf.  In float32
 * bits, 65520 = 0x477ff000 and the float just below it 0x477fefff. */
static void test_f16_overflow_decision(void **state)
{
    (void)state;
    const float fit[] = {65504.0f,  -65504.0f, from_bits(0x477fefffu), 1e-30f, 0.0f, INFINITY,
                         -INFINITY, NAN};
    const float over[] = {65520.0f, -65520.0f, 70000.0f, 1e10f, FLT_MAX, -FLT_MAX};
    for (size_t i = 0; i < sizeof fit / sizeof fit[0]; i++) {
        assert_int_equal(overflow_at(PS_HALF_F16, fit[i], 7, 10), 10);
    }
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        assert_int_equal(overflow_at(PS_HALF_F16, over[i], 7, 10), 7);
    }
    /* The float just below 65520 really does stay finite, and 65520
     * really does become Inf: the decision matches the conversion. */
    uint16_t h[2];
    const float edge[] = {from_bits(0x477fefffu), 65520.0f};
    ps_f32_to_f16(edge, h, 2);
    assert_int_equal(h[0], 0x7bff);
    assert_int_equal(h[1], 0x7c00);
    /* Past the vectorised blocks of 1024: in a full block, in the tail. */
    assert_int_equal(overflow_at(PS_HALF_F16, -65520.0f, 1500, 3000), 1500);
    assert_int_equal(overflow_at(PS_HALF_F16, 65520.0f, 2999, 3000), 2999);
    assert_int_equal(overflow_at(PS_HALF_F16, 65504.0f, 2047, 3000), 3000);
    assert_int_equal(overflow_at(PS_HALF_F16, NAN, 0, 2048), 2048);
}

/* bfloat16's largest finite value is 0x7f7f (0x1.fep+127); float32
 * 0x7f7f8000 lies halfway between it and Inf (0x7f80, the even one), so
 * it and everything above it up to FLT_MAX (0x7f7fffff) round to Inf,
 * while 0x7f7f7fff rounds down to 0x7f7f.  65520 is nothing to bf16. */
static void test_bf16_overflow_decision(void **state)
{
    (void)state;
    const float fit[] = {
        from_bits(0x7f7f7fffu), -from_bits(0x7f7f7fffu), 1e38f, 65520.0f, INFINITY, NAN};
    const float over[] = {from_bits(0x7f7f8000u), -from_bits(0x7f7f8000u), FLT_MAX, -FLT_MAX};
    for (size_t i = 0; i < sizeof fit / sizeof fit[0]; i++) {
        assert_int_equal(overflow_at(PS_HALF_BF16, fit[i], 3, 10), 10);
    }
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        assert_int_equal(overflow_at(PS_HALF_BF16, over[i], 3, 10), 3);
    }
    uint16_t b[3];
    const float edge[] = {from_bits(0x7f7f7fffu), from_bits(0x7f7f8000u), FLT_MAX};
    ps_f32_to_bf16(edge, b, 3);
    assert_int_equal(b[0], 0x7f7f);
    assert_int_equal(b[1], 0x7f80);
    assert_int_equal(b[2], 0x7f80);
    assert_int_equal(overflow_at(PS_HALF_BF16, FLT_MAX, 1024, 3000), 1024);
}

/* The encoder: 16 bits when every finite value fits (a NaN or Inf the
 * gradient already had stays what it was), else nothing written. */
static void test_encode(void **state)
{
    (void)state;
    const float ok[] = {65504.0f, -1.0f, INFINITY, NAN};
    uint16_t out[4] = {0xaaaa, 0xaaaa, 0xaaaa, 0xaaaa};
    assert_int_equal(ps_half_encode(PS_HALF_F16, ok, out, 4), 1);
    assert_int_equal(out[0], 0x7bff);
    assert_int_equal(out[1], 0xbc00);
    assert_int_equal(out[2], 0x7c00);
    assert_true((out[3] & 0x7c00) == 0x7c00 && (out[3] & 0x3ff) != 0);
    const float big[] = {1.0f, 65520.0f, 2.0f, 3.0f};
    for (int i = 0; i < 4; i++) {
        out[i] = 0xaaaa;
    }
    assert_int_equal(ps_half_encode(PS_HALF_F16, big, out, 4), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out[i], 0xaaaa); /* untouched: the chunk goes as float32 */
    }
    assert_int_equal(ps_half_encode(PS_HALF_BF16, big, out, 4), 1); /* bf16 holds 65520 */
    assert_int_equal(out[1], 0x4780); /* 65520 = 0x477ff000: up to 0x4780 (65536) */
    const float huge[] = {-2.0f, FLT_MAX};
    out[0] = out[1] = 0xaaaa;
    assert_int_equal(ps_half_encode(PS_HALF_BF16, huge, out, 2), 0);
    assert_true(out[0] == 0xaaaa && out[1] == 0xaaaa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_hand_values),
        cmocka_unit_test(test_f16_hand_values),
        cmocka_unit_test(test_f16_overflow_decision),
        cmocka_unit_test(test_bf16_overflow_decision),
        cmocka_unit_test(test_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
