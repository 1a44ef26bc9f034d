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
    const float in[] = {1.0f, from_bits(0x3f808000u), from_bits(0x3f818000u),
                        from_bits(0x3f808001u), -2.0f, INFINITY, NAN};
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_hand_values),
        cmocka_unit_test(test_f16_hand_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
