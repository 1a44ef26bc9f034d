/*
 * Unit tests for server/srv_optim: the update kernel's arithmetic, case by
 * case, with values chosen so every intermediate is exactly representable
 * (the expected results are exact and derived by hand in the comments),
 * plus a few values chosen so that one rounding in the wrong place changes
 * the answer; and srv_optim_check's refusals with PyTorch's wording.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "srv_optim.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void assert_bits(float got, float want)
{
    uint32_t g, w;
    memcpy(&g, &got, 4);
    memcpy(&w, &want, 4);
    if (g != w) {
        fail_msg("got %a (0x%08x), want %a (0x%08x)", (double)got, g, (double)want, w);
    }
}

/* One element, one part of coefficient 1. */
static void step1(const srv_optim_cfg_t *c, float *w, float *buf, float g, int first)
{
    const float *parts[1] = {&g};
    const float one = 1.0f;
    srv_optim_apply(c, w, buf, parts, &one, 1, 1, first);
}

static void test_plain(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.5};
    float w = 2.0f;
    step1(&c, &w, NULL, 1.0f, 1); /* w = 2 - 0.5*1 = 1.5 */
    assert_bits(w, 1.5f);
    step1(&c, &w, NULL, -3.0f, 0); /* w = 1.5 - 0.5*(-3) = 3 */
    assert_bits(w, 3.0f);
}

static void test_momentum_first_step_not_dampened(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.5, .momentum = 0.5, .dampening = 0.25};
    float w = 10.0f, buf = 123.0f; /* buf's old content must be ignored */
    step1(&c, &w, &buf, 4.0f, 1);
    /* buf = g = 4 (a dampened buf would be 0.75*4 = 3); w = 10 - 0.5*4 = 8 */
    assert_bits(buf, 4.0f);
    assert_bits(w, 8.0f);
}

static void test_momentum_second_step_dampened(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.5, .momentum = 0.5, .dampening = 0.25};
    float w = 8.0f, buf = 4.0f;
    step1(&c, &w, &buf, 2.0f, 0);
    /* buf = 0.5*4 + (1-0.25)*2 = 2 + 1.5 = 3.5; w = 8 - 0.5*3.5 = 6.25 */
    assert_bits(buf, 3.5f);
    assert_bits(w, 6.25f);
}

static void test_nesterov(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.5, .momentum = 0.5, .nesterov = 1};
    float w = 10.0f, buf = 0.0f;
    step1(&c, &w, &buf, 4.0f, 1);
    /* buf = 4; d = g + 0.5*buf = 4 + 2 = 6; w = 10 - 0.5*6 = 7 */
    assert_bits(buf, 4.0f);
    assert_bits(w, 7.0f);
    step1(&c, &w, &buf, 2.0f, 0);
    /* buf = 0.5*4 + 1*2 = 4; d = 2 + 0.5*4 = 4; w = 7 - 0.5*4 = 5 */
    assert_bits(buf, 4.0f);
    assert_bits(w, 5.0f);
}

static void test_weight_decay(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.5, .weight_decay = 0.125};
    float w = 8.0f;
    step1(&c, &w, NULL, 1.0f, 0);
    /* g = 1 + 0.125*8 = 2; w = 8 - 0.5*2 = 7 */
    assert_bits(w, 7.0f);
}

static void test_weight_decay_momentum_nesterov(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.5, .momentum = 0.5, .weight_decay = 0.125, .nesterov = 1};
    float w = 8.0f, buf = -1.0f;
    step1(&c, &w, &buf, 1.0f, 1);
    /* g = 1 + 0.125*8 = 2; buf = 2; d = 2 + 0.5*2 = 3; w = 8 - 0.5*3 = 6.5 */
    assert_bits(buf, 2.0f);
    assert_bits(w, 6.5f);
    step1(&c, &w, &buf, 0.1875f, 0);
    /* g = 0.1875 + 0.125*6.5 = 0.1875 + 0.8125 = 1; buf = 0.5*2 + 1 = 2;
     * d = 1 + 0.5*2 = 2; w = 6.5 - 0.5*2 = 5.5 */
    assert_bits(buf, 2.0f);
    assert_bits(w, 5.5f);
}

static void test_momentum_zero_leaves_buf(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.25, .dampening = 0.5};
    float w[3] = {1.0f, 2.0f, 3.0f}, buf[3] = {7.0f, 8.0f, 9.0f}, g[3] = {4.0f, 4.0f, -4.0f};
    const float *parts[1] = {g};
    const float one = 1.0f;
    srv_optim_apply(&c, w, buf, parts, &one, 1, 3, 0);
    /* w = w - 0.25*g = {0, 1, 4}; buf untouched */
    assert_bits(w[0], 0.0f);
    assert_bits(w[1], 1.0f);
    assert_bits(w[2], 4.0f);
    assert_bits(buf[0], 7.0f);
    assert_bits(buf[1], 8.0f);
    assert_bits(buf[2], 9.0f);
    srv_optim_apply(&c, w, NULL, parts, &one, 1, 3, 1); /* NULL buf is fine */
    assert_bits(w[2], 5.0f);
}

static void test_two_parts(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.5};
    float w = 10.0f, p0 = 4.0f, p1 = 8.0f;
    const float *parts[2] = {&p0, &p1};
    const float coef[2] = {0.5f, 0.25f};
    srv_optim_apply(&c, &w, NULL, parts, coef, 2, 1, 0);
    /* g = 4*0.5 + 8*0.25 = 2 + 2 = 4; w = 10 - 0.5*4 = 8 */
    assert_bits(w, 8.0f);
}

static void test_parts_summed_in_order(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 1.0};
    const float tiny = 0x1p-24f;
    float w = 0.0f, p0 = 1.0f, p1 = tiny, p2 = tiny;
    const float *parts[3] = {&p0, &p1, &p2};
    const float coef[3] = {1.0f, 1.0f, 1.0f};
    srv_optim_apply(&c, &w, NULL, parts, coef, 3, 1, 0);
    /* (1 + 2^-24) is a tie and rounds to even, 1; again + 2^-24 -> 1.
     * Summing the tiny parts first would give 1 + 2^-23.  w = 0 - 1*1. */
    assert_bits(w, -1.0f);
}

static void test_part_products_not_fused(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 1.0};
    const float a = 1.0f + 0x1p-12f;
    float w = 0.0f, p0 = -(1.0f + 0x1p-11f), p1 = a;
    const float *parts[2] = {&p0, &p1};
    const float coef[2] = {1.0f, a};
    srv_optim_apply(&c, &w, NULL, parts, coef, 2, 1, 0);
    /* a*a = 1 + 2^-11 + 2^-24 exactly; rounded to float (a tie, to even)
     * it is 1 + 2^-11, so g = -(1 + 2^-11) + (1 + 2^-11) = 0 and w = -0*1 + 0.
     * fmaf(p1, a, p0) would have kept 2^-24. */
    assert_bits(w, 0.0f);
}

static void test_final_update_is_fused(void **state)
{
    (void)state;
    const float a = 1.0f + 0x1p-12f;
    srv_optim_cfg_t c = {.lr = (double)a};
    float w = 1.0f + 0x1p-11f;
    step1(&c, &w, NULL, a, 0);
    /* d*(-lr) = -(1 + 2^-11 + 2^-24) exactly.  fmaf adds it to w unrounded:
     * (1 + 2^-11) - (1 + 2^-11 + 2^-24) = -2^-24.  A separate multiply would
     * round the product to -(1 + 2^-11) first and give 0. */
    assert_bits(w, -0x1p-24f);
}

static void test_scalars_rounded_to_float(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 0.0, .momentum = 0.9};
    float w = 1.0f, buf = 3.0f;
    step1(&c, &w, &buf, 0.0f, 0);
    /* mom = (float)0.9 = 0x1.cccccc p-1; 3*mom = 2.69999992847442626953125
     * exactly, halfway between 0x1.599998p+1 and 0x1.59999ap+1: ties to
     * even gives 0x1.599998p+1.  (float)(3*0.9 in double) would be
     * 0x1.59999ap+1.  buf = fmaf(0, 1, that) = that. */
    assert_bits(buf, 0x1.599998p+1f);
    assert_bits(w, 1.0f);
}

/* Expected value of one element after one step, in double: every input
 * below is a short dyadic fraction, so double arithmetic is exact and
 * equals the float32 result. */
static double expect_elem(const srv_optim_cfg_t *c, double w, double *buf, double g, int first)
{
    if (c->weight_decay != 0.0) {
        g += c->weight_decay * w;
    }
    double d = g;
    if (c->momentum != 0.0) {
        *buf = first ? g : c->momentum * *buf + (1.0 - c->dampening) * g;
        d = c->nesterov ? g + c->momentum * *buf : *buf;
    }
    return w - c->lr * d;
}

/* Every specialised loop over full blocks, the vector body and tails. */
static void run_array_case(const srv_optim_cfg_t *c, int nparts)
{
    enum { N = 2 * 1024 + 13 };
    static float w[N], buf[N], p0[N], p1[N];
    static double ew[N], eb[N];
    const float *parts[2] = {p0, p1};
    const float coef[2] = {0.5f, 0.25f};
    for (size_t i = 0; i < N; i++) {
        w[i] = (float)(i % 17) * 0.25f - 2.0f;
        buf[i] = 99.0f;
        p0[i] = (float)((int)(i % 5) - 2) * 0.5f;
        p1[i] = (float)(i % 3);
        ew[i] = w[i];
        eb[i] = c->momentum != 0.0 ? 0.0 : 99.0;
    }
    for (int step = 0; step < 3; step++) {
        srv_optim_apply(c, w, buf, parts, coef, nparts, N, step == 0);
        for (size_t i = 0; i < N; i++) {
            double g = nparts == 1 ? 0.5 * p0[i] : 0.5 * p0[i] + 0.25 * p1[i];
            ew[i] = expect_elem(c, ew[i], &eb[i], g, step == 0);
            if ((float)ew[i] != w[i] || (float)eb[i] != buf[i]) {
                fail_msg("step %d element %zu: w %a want %a, buf %a want %a", step, i,
                         (double)w[i], ew[i], (double)buf[i], eb[i]);
            }
        }
    }
}

static void test_all_variants_on_arrays(void **state)
{
    (void)state;
    for (int wd = 0; wd < 2; wd++) {
        for (int m = 0; m < 4; m++) {
            srv_optim_cfg_t c = {.lr = 0.5, .weight_decay = wd ? 0.125 : 0.0};
            c.momentum = m == 0 ? 0.0 : 0.5;
            c.dampening = m == 2 ? 0.25 : 0.0;
            c.nesterov = m == 3;
            run_array_case(&c, 1);
            run_array_case(&c, 2);
        }
    }
}

static void expect_refusal(srv_optim_cfg_t c, const char *msg)
{
    ps_error_clear();
    assert_int_equal(srv_optim_check(&c), PS_EINVAL);
    assert_string_equal(ps_error_msg(), msg);
}

static void test_check_accepts(void **state)
{
    (void)state;
    srv_optim_cfg_t ok[] = {
        {.lr = 0.1},
        {.lr = 0.0},
        {.lr = -0.0}, /* torch: -0.0 < 0.0 is false */
        {.lr = 0.1, .momentum = 0.9, .nesterov = 1},
        {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 1e-4},
        {.lr = 0.1, .momentum = 0.0, .dampening = 0.5},
        {.lr = 10.0, .momentum = 1.5, .dampening = 2.0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(srv_optim_check(&ok[i]), 0);
    }
}

static void test_check_refuses(void **state)
{
    (void)state;
    expect_refusal((srv_optim_cfg_t){.lr = -0.1}, "Invalid learning rate: -0.1");
    expect_refusal((srv_optim_cfg_t){.lr = -1.0, .momentum = -1.0}, "Invalid learning rate: -1.0");
    expect_refusal((srv_optim_cfg_t){.lr = -100.0}, "Invalid learning rate: -100.0");
    expect_refusal((srv_optim_cfg_t){.lr = -1e16}, "Invalid learning rate: -1e+16");
    expect_refusal((srv_optim_cfg_t){.lr = -123.456}, "Invalid learning rate: -123.456");
    expect_refusal((srv_optim_cfg_t){.lr = -0.0001}, "Invalid learning rate: -0.0001");
    expect_refusal((srv_optim_cfg_t){.lr = -3e-4}, "Invalid learning rate: -0.0003");
    expect_refusal((srv_optim_cfg_t){.lr = -2.5e-300}, "Invalid learning rate: -2.5e-300");
    expect_refusal((srv_optim_cfg_t){.lr = NAN}, "Invalid learning rate: nan");
    expect_refusal((srv_optim_cfg_t){.lr = INFINITY}, "Invalid learning rate: inf");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .momentum = -0.5}, "Invalid momentum value: -0.5");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .momentum = -INFINITY},
                   "Invalid momentum value: -inf");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .weight_decay = -1e-5},
                   "Invalid weight_decay value: -1e-05");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .weight_decay = NAN},
                   "Invalid weight_decay value: nan");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .dampening = -0.1}, "Invalid dampening value: -0.1");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .nesterov = 1},
                   "Nesterov momentum requires a momentum and zero dampening");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = 1},
                   "Nesterov momentum requires a momentum and zero dampening");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_momentum_first_step_not_dampened),
        cmocka_unit_test(test_momentum_second_step_dampened),
        cmocka_unit_test(test_nesterov),
        cmocka_unit_test(test_weight_decay),
        cmocka_unit_test(test_weight_decay_momentum_nesterov),
        cmocka_unit_test(test_momentum_zero_leaves_buf),
        cmocka_unit_test(test_two_parts),
        cmocka_unit_test(test_parts_summed_in_order),
        cmocka_unit_test(test_part_products_not_fused),
        cmocka_unit_test(test_final_update_is_fused),
        cmocka_unit_test(test_scalars_rounded_to_float),
        cmocka_unit_test(test_all_variants_on_arrays),
        cmocka_unit_test(test_check_accepts),
        cmocka_unit_test(test_check_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
