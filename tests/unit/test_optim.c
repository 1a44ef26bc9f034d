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
                fail_msg("step %d element %zu: w %a want %a, buf %a want %a", step, i, (double)w[i],
                         ew[i], (double)buf[i], eb[i]);
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
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .dampening = -0.1},
                   "Invalid dampening value: -0.1");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .nesterov = 1},
                   "Nesterov momentum requires a momentum and zero dampening");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = 1},
                   "Nesterov momentum requires a momentum and zero dampening");
}

/* ---- the sutskever and ema forms, maximize, clip, decoupled decay ----- */

/* One element through 3 steps: check w (and buf when want_b) after each. */
static void run3(const srv_optim_cfg_t *c, const double lr[3], float w0, const float g[3],
                 const float want_w[3], const float *want_b)
{
    srv_optim_cfg_t k = *c;
    float w = w0, buf = 123.0f; /* old content must be ignored on the first step */
    for (int t = 0; t < 3; t++) {
        k.lr = lr[t];
        step1(&k, &w, k.momentum != 0.0 ? &buf : NULL, g[t], t == 0);
        assert_bits(w, want_w[t]);
        if (want_b != NULL) {
            assert_bits(buf, want_b[t]);
        }
    }
}

static const double lr_half[3] = {0.5, 0.5, 0.5};
static const float g421[3] = {4.0f, 2.0f, 1.0f};

static void test_sutskever(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.5, .form = SRV_FORM_SUTSKEVER};
    /* lr 0.5, mu 0.5, w0 8, g 4, 2, 1:
     * v1 = -0.5*4 = -2              w1 = 8 - 2 = 6
     * v2 = 0.5*-2 - 0.5*2 = -2      w2 = 6 - 2 = 4
     * v3 = 0.5*-2 - 0.5*1 = -1.5    w3 = 4 - 1.5 = 2.5 */
    const float w[3] = {6.0f, 4.0f, 2.5f}, v[3] = {-2.0f, -2.0f, -1.5f};
    run3(&c, lr_half, 8.0f, g421, w, v);
}

static void test_sutskever_nesterov(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.5, .nesterov = 1, .form = SRV_FORM_SUTSKEVER};
    /* w += mu*v_new - lr*g:
     * v1 = -2     w1 = 8 + (0.5*-2 - 0.5*4) = 8 - 3 = 5
     * v2 = -2     w2 = 5 + (0.5*-2 - 0.5*2) = 5 - 2 = 3
     * v3 = -1.5   w3 = 3 + (0.5*-1.5 - 0.5*1) = 3 - 1.25 = 1.75
     * (torch Nesterov on the same input: d = 6, 4, 2.5, the same w.) */
    const float w[3] = {5.0f, 3.0f, 1.75f}, v[3] = {-2.0f, -2.0f, -1.5f};
    run3(&c, lr_half, 8.0f, g421, w, v);
}

static void test_ema(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.75, .form = SRV_FORM_EMA};
    /* beta 0.75, lr 0.5, w0 8, g 4, 2, 1; v starts at 0:
     * v1 = 0.25*4 = 1                  w1 = 8 - 0.5*1 = 7.5
     * v2 = 0.75*1 + 0.25*2 = 1.25      w2 = 7.5 - 0.625 = 6.875
     * v3 = 0.75*1.25 + 0.25*1 = 1.1875 w3 = 6.875 - 0.59375 = 6.28125
     * (beta and 1 - beta swapped would give v1 = 3.) */
    const float w[3] = {7.5f, 6.875f, 6.28125f}, v[3] = {1.0f, 1.25f, 1.1875f};
    run3(&c, lr_half, 8.0f, g421, w, v);
}

static void test_torch_sutskever_same_at_constant_lr(void **state)
{
    (void)state;
    /* Exact case: the torch form on g 4, 2, 1 gives buf 4, 4, 3 and w 6, 4,
     * 2.5 (test_sutskever's w), and v = -lr*buf = -2, -2, -1.5 exactly. */
    srv_optim_cfg_t c = {.momentum = 0.5};
    const float w[3] = {6.0f, 4.0f, 2.5f}, b[3] = {4.0f, 4.0f, 3.0f};
    run3(&c, lr_half, 8.0f, g421, w, b);
    /* Rounded case: lr 0.1, mu 0.9 on values that round at every step.
     * The relation v_t = -lr*buf_t holds up to the roundings the two forms
     * make differently (v rounds -lr*g and mu*v; torch rounds mu*buf and the
     * product inside w's fma), so after 3 steps w agrees to a few ulps. */
    enum { N = 1000 };
    static float wt[N], ws[N], bt[N], vs[N], g[N];
    srv_optim_cfg_t t = {.lr = 0.1, .momentum = 0.9};
    srv_optim_cfg_t k = {.lr = 0.1, .momentum = 0.9, .form = SRV_FORM_SUTSKEVER};
    for (size_t i = 0; i < N; i++) {
        wt[i] = ws[i] = (float)sin((double)i) * 2.0f;
    }
    const float *parts[1] = {g};
    const float one = 1.0f;
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < N; i++) {
            g[i] = (float)cos((double)(i * 7 + (size_t)step)) / 3.0f;
        }
        srv_optim_apply(&t, wt, bt, parts, &one, 1, N, step == 0);
        srv_optim_apply(&k, ws, vs, parts, &one, 1, N, step == 0);
    }
    /* The roundings are relative to the terms, not to the result (which can
     * be small after cancellation): |w0| <= 2 and the steps add < 0.3, so w's
     * terms lie below 4 (ulp 2^-22); |g| <= 1/3 gives |buf| < 1 and |v| <
     * 0.1 (ulp 2^-27).  Measured: at most 1 and 1.2 of those ulps. */
    for (size_t i = 0; i < N; i++) {
        if (fabsf(wt[i] - ws[i]) > 0x1p-21f ||
            fabs((double)vs[i] + 0.1 * (double)bt[i]) > 0x1p-26) {
            fail_msg("element %zu: torch w %a buf %a, sutskever w %a v %a", i, (double)wt[i],
                     (double)bt[i], (double)ws[i], (double)vs[i]);
        }
    }
}

static void test_torch_sutskever_differ_when_lr_changes(void **state)
{
    (void)state;
    /* lr 0.5, then 0.25, 0.25; mu 0.5; w0 8; g 4, 2, 1.
     * torch:     buf 4, 4, 3         w 8-0.5*4 = 6, 6-0.25*4 = 5, 5-0.25*3 = 4.25
     * sutskever: v -2, 0.5*-2 - 0.25*2 = -1.5, 0.5*-1.5 - 0.25*1 = -1
     *            w 6, 4.5, 3.5
     * torch rescales the remembered gradient with the new lr; sutskever keeps
     * the first step's 0.5*4 at the old lr. */
    const double lr[3] = {0.5, 0.25, 0.25};
    srv_optim_cfg_t c = {.momentum = 0.5};
    const float wt[3] = {6.0f, 5.0f, 4.25f}, bt[3] = {4.0f, 4.0f, 3.0f};
    run3(&c, lr, 8.0f, g421, wt, bt);
    c.form = SRV_FORM_SUTSKEVER;
    const float ws[3] = {6.0f, 4.5f, 3.5f}, vs[3] = {-2.0f, -1.5f, -1.0f};
    run3(&c, lr, 8.0f, g421, ws, vs);
}

static void test_maximize(void **state)
{
    (void)state;
    /* maximize on -g is minimising on g: the trajectories of test_sutskever
     * and its torch twin (w 6, 4, 2.5; buf 4, 4, 3; v -2, -2, -1.5). */
    const float neg[3] = {-4.0f, -2.0f, -1.0f};
    srv_optim_cfg_t c = {.momentum = 0.5, .maximize = 1};
    const float w[3] = {6.0f, 4.0f, 2.5f}, b[3] = {4.0f, 4.0f, 3.0f};
    run3(&c, lr_half, 8.0f, neg, w, b);
    c.form = SRV_FORM_SUTSKEVER;
    const float v[3] = {-2.0f, -2.0f, -1.5f};
    run3(&c, lr_half, 8.0f, neg, w, v);
    /* Two parts: g = 4*0.5 + 8*0.25 = 4, negated: w = 10 + 0.5*4 = 12. */
    srv_optim_cfg_t p = {.lr = 0.5, .maximize = 1};
    float w1 = 10.0f, p0 = 4.0f, p1 = 8.0f;
    const float *parts[2] = {&p0, &p1};
    const float coef[2] = {0.5f, 0.25f};
    srv_optim_apply(&p, &w1, NULL, parts, coef, 2, 1, 0);
    assert_bits(w1, 12.0f);
    /* Weight decay is added after the negation: g = -1 + 0.125*8 = 0,
     * so w stays 8 (decay before negation would give 8 - 0.5*-2 = 9). */
    srv_optim_cfg_t d = {.lr = 0.5, .weight_decay = 0.125, .maximize = 1};
    float w2 = 8.0f;
    step1(&d, &w2, NULL, 1.0f, 0);
    assert_bits(w2, 8.0f);
}

static void test_clip(void **state)
{
    (void)state;
    /* C 1.5, lr 0.5, w0 8, g 4, -2, 1 -> clipped 1.5, -1.5, 1.
     * plain:  w 8-0.75 = 7.25, 7.25+0.75 = 8, 8-0.5 = 7.5
     * mu 0.5: buf 1.5, 0.75-1.5 = -0.75, -0.375+1 = 0.625
     *         w 7.25, 7.25+0.375 = 7.625, 7.625-0.3125 = 7.3125 */
    const float g[3] = {4.0f, -2.0f, 1.0f};
    srv_optim_cfg_t c = {.clip_value = 1.5};
    const float wp[3] = {7.25f, 8.0f, 7.5f};
    run3(&c, lr_half, 8.0f, g, wp, NULL);
    c.momentum = 0.5;
    const float wm[3] = {7.25f, 7.625f, 7.3125f}, bm[3] = {1.5f, -0.75f, 0.625f};
    run3(&c, lr_half, 8.0f, g, wm, bm);
    /* Clip before weight decay: g = clip(4) + 0.25*8 = 1.5 + 2 = 3.5, w =
     * 8 - 1.75 = 6.25 (decay first would clip 6 to 1.5 and give 7.25). */
    srv_optim_cfg_t d = {.lr = 0.5, .weight_decay = 0.25, .clip_value = 1.5};
    float w = 8.0f;
    step1(&d, &w, NULL, 4.0f, 0);
    assert_bits(w, 6.25f);
    /* After maximize: -(-4) = 4 -> 1.5, w = 8 - 0.75. */
    srv_optim_cfg_t m = {.lr = 0.5, .clip_value = 1.5, .maximize = 1};
    w = 8.0f;
    step1(&m, &w, NULL, -4.0f, 0);
    assert_bits(w, 7.25f);
    /* Infinities clamp to +-C; NaN becomes -C (fmaxf(NaN, -C) = -C). */
    srv_optim_cfg_t p = {.lr = 1.0, .clip_value = 1.5};
    float wi[3] = {0.0f, 0.0f, 0.0f}, gi[3] = {INFINITY, -INFINITY, NAN};
    const float *parts[1] = {gi}; /* reused below */
    const float one = 1.0f;
    srv_optim_apply(&p, wi, NULL, parts, &one, 1, 3, 0);
    assert_bits(wi[0], -1.5f);
    assert_bits(wi[1], 1.5f);
    assert_bits(wi[2], 1.5f);
    /* The same inside a full (vectorised) block: g cycles through
     * {inf, -inf, NaN, 0.5, -2} -> clipped {1.5, -1.5, -1.5, 0.5, -1.5}. */
    enum { N = 1024 + 5 };
    static float wv[N], gv[N];
    const float cyc[5] = {INFINITY, -INFINITY, NAN, 0.5f, -2.0f};
    const float want[5] = {-1.5f, 1.5f, 1.5f, -0.5f, 1.5f};
    for (size_t i = 0; i < N; i++) {
        wv[i] = 0.0f;
        gv[i] = cyc[i % 5];
    }
    parts[0] = gv;
    srv_optim_apply(&p, wv, NULL, parts, &one, 1, N, 0);
    for (size_t i = 0; i < N; i++) {
        assert_bits(wv[i], want[i % 5]);
    }
}

static void test_decoupled_weight_decay(void **state)
{
    (void)state;
    /* F 0.25, lr 0.5: w *= 1 - 0.125 = 0.875 before the step; g = 1 always.
     * plain:  8*0.875 = 7 - 0.5 = 6.5;  6.5*0.875 = 5.6875 - 0.5 = 5.1875;
     *         5.1875*0.875 = 4.5390625 - 0.5 = 4.0390625
     * mu 0.5: buf 1, 1.5, 1.75;  w 7 - 0.5 = 6.5;  5.6875 - 0.75 = 4.9375;
     *         4.9375*0.875 = 4.3203125 - 0.875 = 3.4453125 */
    const float g[3] = {1.0f, 1.0f, 1.0f};
    srv_optim_cfg_t c = {.decoupled_wd = 0.25};
    const float wp[3] = {6.5f, 5.1875f, 4.0390625f};
    run3(&c, lr_half, 8.0f, g, wp, NULL);
    c.momentum = 0.5;
    const float wm[3] = {6.5f, 4.9375f, 3.4453125f}, bm[3] = {1.0f, 1.5f, 1.75f};
    run3(&c, lr_half, 8.0f, g, wm, bm);
    /* With coupled weight decay 0.125 too: the coupled term sees w before
     * the decoupled shrink.  g = 1 + 0.125*8 = 2, w = 7 - 1 = 6;
     * g = 1 + 0.75 = 1.75, w = 5.25 - 0.875 = 4.375;
     * g = 1 + 0.546875 = 1.546875, w = 3.828125 - 0.7734375 = 3.0546875
     * (shrinking first would give g = 1.875 and w = 6.0625 on step 1). */
    srv_optim_cfg_t d = {.weight_decay = 0.125, .decoupled_wd = 0.25};
    const float wd[3] = {6.0f, 4.375f, 3.0546875f};
    run3(&d, lr_half, 8.0f, g, wd, NULL);
    /* The factor follows the step's lr: lr 0.25 gives 1 - 0.0625. */
    const double lr[3] = {0.5, 0.25, 0.25};
    /* 8*0.875 - 0.5 = 6.5; 6.5*0.9375 = 6.09375 - 0.25 = 5.84375;
     * 5.84375*0.9375 = 5.478515625 - 0.25 = 5.228515625 */
    const float wl[3] = {6.5f, 5.84375f, 5.228515625f};
    srv_optim_cfg_t e = {.decoupled_wd = 0.25};
    run3(&e, lr, 8.0f, g, wl, NULL);
}

static void test_decoupled_factor_rounded_once(void **state)
{
    (void)state;
    /* lr 0.3, F 0.3: 1 - 0.09 = 0.91 in double; 0.91 * 2^24 =
     * 15267266.56 -> 15267267 = 0xe8f5c3, i.e. 0x1.d1eb86p-1.  Working in
     * float ((float)0.3 squared, then 1 - it) gives 0x1.d1eb84p-1. */
    srv_optim_cfg_t c = {.lr = 0.3, .decoupled_wd = 0.3};
    float w = 1.0f;
    step1(&c, &w, NULL, 0.0f, 0);
    assert_bits(w, 0x1.d1eb86p-1f);
}

static void test_all_combined(void **state)
{
    (void)state;
    /* sutskever + Nesterov, lr 0.5, mu 0.5, weight_decay 0.125, F 0.25
     * (factor 0.875), C 3, maximize; w0 8, raw g -4, -1, 8:
     * 1: g = 4 -> 3 -> 3 + 1 = 4;  w = 7;  v = -2;
     *    w = 7 + (0.5*-2 - 0.5*4) = 4
     * 2: g = 1 -> 1 -> 1 + 0.5 = 1.5;  w = 3.5;  v = -1 - 0.75 = -1.75;
     *    w = 3.5 + (-0.875 - 0.75) = 1.875
     * 3: g = -8 -> -3 -> -3 + 0.234375 = -2.765625;  w = 1.640625;
     *    v = -0.875 + 1.3828125 = 0.5078125;
     *    w = 1.640625 + (0.25390625 + 1.3828125) = 3.27734375 */
    srv_optim_cfg_t c = {.momentum = 0.5,
                         .nesterov = 1,
                         .weight_decay = 0.125,
                         .form = SRV_FORM_SUTSKEVER,
                         .maximize = 1,
                         .clip_value = 3.0,
                         .decoupled_wd = 0.25};
    const float g[3] = {-4.0f, -1.0f, 8.0f};
    const float w[3] = {4.0f, 1.875f, 3.27734375f}, v[3] = {-2.0f, -1.75f, 0.5078125f};
    run3(&c, lr_half, 8.0f, g, w, v);
}

static void test_momentum_zero_every_form(void **state)
{
    (void)state;
    /* momentum 0 is plain SGD in every form, buf NULL: w = fmaf(g, -lr, w).
     * With a = 1 + 2^-12 as both g and lr, w = 1 + 2^-11: the fused result
     * is -2^-24 (a sutskever w + (-lr*g) would round the product: 0). */
    const float a = 1.0f + 0x1p-12f;
    for (int f = 0; f < 3; f++) {
        for (int extra = 0; extra < 2; extra++) {
            srv_optim_cfg_t c = {.lr = (double)a, .form = (srv_form_t)f};
            c.clip_value = extra ? 100.0 : 0.0; /* the general path too */
            float w = 1.0f + 0x1p-11f;
            step1(&c, &w, NULL, a, f == 1);
            assert_bits(w, -0x1p-24f);
        }
    }
}

/* Double-precision model of one element under every setting (dyadic inputs,
 * so it is exact and equals the float32 kernel). */
static double expect_ext(const srv_optim_cfg_t *c, double w, double *v, double g, int first)
{
    g = c->maximize ? -g : g;
    if (c->clip_value > 0.0) {
        g = fmin(fmax(g, -c->clip_value), c->clip_value);
    }
    g += c->weight_decay * w;
    w *= 1.0 - c->lr * c->decoupled_wd;
    if (c->momentum == 0.0) {
        return w - c->lr * g;
    }
    double mu = c->momentum, prev = first ? 0.0 : *v;
    if (c->form == SRV_FORM_SUTSKEVER) {
        *v = mu * prev - c->lr * g;
        return w + (c->nesterov ? mu * *v - c->lr * g : *v);
    }
    if (c->form == SRV_FORM_EMA) {
        *v = mu * prev + (1.0 - mu) * g;
        return w - c->lr * *v;
    }
    *v = first ? g : mu * prev + (1.0 - c->dampening) * g;
    return w - c->lr * (c->nesterov ? g + mu * *v : *v);
}

/* A full vector block and a scalar tail, 3 steps, against expect_ext. */
static void run_ext_array_case(const srv_optim_cfg_t *c, int nparts)
{
    enum { N = 1024 + 13 };
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
        eb[i] = 99.0;
    }
    for (int step = 0; step < 3; step++) {
        srv_optim_apply(c, w, c->momentum != 0.0 ? buf : NULL, parts, coef, nparts, N, step == 0);
        for (size_t i = 0; i < N; i++) {
            double g = nparts == 1 ? 0.5 * p0[i] : 0.5 * p0[i] + 0.25 * p1[i];
            ew[i] = expect_ext(c, ew[i], &eb[i], g, step == 0);
            if ((float)ew[i] != w[i] || (float)eb[i] != buf[i]) {
                fail_msg("form %s mom %g nest %d wd %g clip %g dec %g max %d parts %d: step %d "
                         "element %zu: w %a want %a, buf %a want %a",
                         srv_optim_form_name(c->form), c->momentum, c->nesterov, c->weight_decay,
                         c->clip_value, c->decoupled_wd, c->maximize, nparts, step, i, (double)w[i],
                         ew[i], (double)buf[i], eb[i]);
            }
        }
    }
}

static void test_general_path_on_arrays(void **state)
{
    (void)state;
    /* Momentum settings per form: {momentum, dampening, nesterov}. */
    static const struct {
        srv_form_t form;
        double mom, damp;
        int nest;
    } ms[] = {
        {SRV_FORM_TORCH, 0.0, 0.0, 0},     {SRV_FORM_TORCH, 0.5, 0.0, 0},
        {SRV_FORM_TORCH, 0.5, 0.25, 0},    {SRV_FORM_TORCH, 0.5, 0.0, 1},
        {SRV_FORM_SUTSKEVER, 0.0, 0.0, 0}, {SRV_FORM_SUTSKEVER, 0.5, 0.0, 0},
        {SRV_FORM_SUTSKEVER, 0.5, 0.0, 1}, {SRV_FORM_EMA, 0.0, 0.0, 0},
        {SRV_FORM_EMA, 0.75, 0.0, 0},
    };
    for (size_t k = 0; k < sizeof ms / sizeof ms[0]; k++) {
        for (int bits = 0; bits < 32; bits++) {
            srv_optim_cfg_t c = {.lr = 0.5,
                                 .momentum = ms[k].mom,
                                 .dampening = ms[k].damp,
                                 .nesterov = ms[k].nest,
                                 .form = ms[k].form};
            c.weight_decay = bits & 1 ? 0.125 : 0.0;
            c.clip_value = bits & 2 ? 0.75 : 0.0;
            c.decoupled_wd = bits & 4 ? 0.25 : 0.0;
            c.maximize = (bits & 8) != 0;
            assert_int_equal(srv_optim_check(&c), 0);
            run_ext_array_case(&c, bits & 16 ? 2 : 1);
        }
    }
}

static void test_form_names(void **state)
{
    (void)state;
    const char *names[3] = {"torch", "sutskever", "ema"};
    for (int f = 0; f < 3; f++) {
        srv_form_t out = (srv_form_t)99;
        assert_int_equal(srv_optim_parse_form(names[f], &out), 0);
        assert_int_equal(out, f);
        assert_string_equal(srv_optim_form_name((srv_form_t)f), names[f]);
    }
    assert_string_equal(srv_optim_form_name((srv_form_t)7), "unknown");
    srv_form_t out = SRV_FORM_EMA;
    const char *bad[] = {"Torch", "sgd", "", "ema ", "sutskever2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ps_error_clear();
        assert_int_equal(srv_optim_parse_form(bad[i], &out), PS_EINVAL);
        assert_non_null(strstr(ps_error_msg(), "unknown momentum form"));
        assert_int_equal(out, SRV_FORM_EMA); /* untouched */
    }
    assert_int_equal(srv_optim_parse_form(NULL, &out), PS_EINVAL);
}

static void test_check_forms_and_extras(void **state)
{
    (void)state;
    srv_optim_cfg_t ok[] = {
        {.lr = 0.1, .momentum = 0.9, .nesterov = 1, .form = SRV_FORM_SUTSKEVER},
        {.lr = 0.1, .momentum = 0.9, .form = SRV_FORM_EMA},
        {.lr = 0.1, .form = SRV_FORM_SUTSKEVER},
        {.lr = 0.1, .form = SRV_FORM_EMA},
        {.lr = 0.1, .momentum = 0.9, .maximize = 1, .clip_value = 1e30, .decoupled_wd = 0.01},
        {.lr = 0.1, .momentum = 0.9, .dampening = 0.5, .clip_value = 0.0, .decoupled_wd = 0.0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (srv_optim_check(&ok[i]) != 0) {
            fail_msg("case %zu refused: %s", i, ps_error_msg());
        }
    }
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .form = (srv_form_t)3},
                   "Invalid momentum form: 3 (want torch, sutskever or ema)");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .form = (srv_form_t)-1},
                   "Invalid momentum form: -1 (want torch, sutskever or ema)");
    expect_refusal(
        (srv_optim_cfg_t){.lr = 0.1, .momentum = 0.9, .nesterov = 1, .form = SRV_FORM_EMA},
        "Nesterov momentum is not available with the ema form");
    expect_refusal(
        (srv_optim_cfg_t){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .form = SRV_FORM_SUTSKEVER},
        "Dampening must be 0 with the sutskever form");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .dampening = 0.1, .form = SRV_FORM_EMA},
                   "Dampening must be 0 with the ema form");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .momentum = 1.0, .form = SRV_FORM_EMA},
                   "The ema form needs momentum (beta) below 1, not 1.0");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .clip_value = -1.0}, "Invalid clip value: -1.0");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .clip_value = INFINITY}, "Invalid clip value: inf");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .clip_value = NAN}, "Invalid clip value: nan");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .decoupled_wd = -0.01},
                   "Invalid decoupled weight decay value: -0.01");
    expect_refusal((srv_optim_cfg_t){.lr = 0.1, .decoupled_wd = NAN},
                   "Invalid decoupled weight decay value: nan");
    /* torch's own checks still come first. */
    expect_refusal((srv_optim_cfg_t){.lr = -1.0, .form = (srv_form_t)9},
                   "Invalid learning rate: -1.0");
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
        cmocka_unit_test(test_sutskever),
        cmocka_unit_test(test_sutskever_nesterov),
        cmocka_unit_test(test_ema),
        cmocka_unit_test(test_torch_sutskever_same_at_constant_lr),
        cmocka_unit_test(test_torch_sutskever_differ_when_lr_changes),
        cmocka_unit_test(test_maximize),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_decoupled_weight_decay),
        cmocka_unit_test(test_decoupled_factor_rounded_once),
        cmocka_unit_test(test_all_combined),
        cmocka_unit_test(test_momentum_zero_every_form),
        cmocka_unit_test(test_general_path_on_arrays),
        cmocka_unit_test(test_form_names),
        cmocka_unit_test(test_check_forms_and_extras),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
