/*
 * Unit tests for server/srv_table's exact mode (and srv_catchup): the table
 * against a serial dense reference built here from srv_optim_apply over the
 * whole table every step (rows absent from a step get a zero gradient),
 * which is what torch.optim.SGD does on the same table held dense.  Every
 * optimizer option, schedules with a changing lr, rows created late (by a
 * push or a read), keys above 2^32 and momentum 0.9 over many steps, so
 * the catch-up products span long runs of skipped steps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_rng.h"
#include "srv_catchup.h"
#include "srv_optim.h"
#include "srv_table.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 3
#define NKEYS 48
#define TOL 1e-5

/* The dense reference: every key that will ever exist, held from step 0. */
typedef struct {
    srv_optim_cfg_t cfg;
    uint64_t keys[NKEYS];
    float w[NKEYS * DIM], b[NKEYS * DIM];
    uint64_t step;
} dense_t;

static void dense_init(dense_t *d, const srv_optim_cfg_t *cfg, const srv_table_init_t *init,
                       uint32_t table_id)
{
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    for (int i = 0; i < NKEYS; i++) {
        /* Spread over 64 bits: small ids, ids above 2^32, the extremes. */
        d->keys[i] = i == 0 ? 0 : i == 1 ? UINT64_MAX : ((uint64_t)i << 33) + (uint64_t)i * 7919;
        srv_table_init_row(init, table_id, d->keys[i], DIM, d->w + i * DIM);
    }
}

/* One step: dense part arrays (zeros where a part has no row) through
 * the dense kernel over the whole table. */
static void dense_step(dense_t *d, const srv_rows_part_t *parts, int nparts, double lr)
{
    float *dense[8];
    float coef[8];
    for (int k = 0; k < nparts; k++) {
        dense[k] = calloc(NKEYS * DIM, sizeof(float));
        assert_non_null(dense[k]);
        coef[k] = parts[k].coef;
        for (size_t j = 0; j < parts[k].n; j++) {
            int i = 0;
            while (d->keys[i] != parts[k].keys[j]) {
                i++;
            }
            memcpy(dense[k] + i * DIM, parts[k].grad + j * DIM, DIM * sizeof(float));
        }
    }
    srv_optim_cfg_t c = d->cfg;
    c.lr = lr;
    srv_optim_apply(&c, d->w, c.momentum != 0.0 ? d->b : NULL, (const float *const *)dense, coef,
                    nparts, NKEYS * DIM, d->step == 0);
    for (int k = 0; k < nparts; k++) {
        free(dense[k]);
    }
    d->step++;
}

/* |got - want| <= TOL * |want|, with a floor of TOL * 0.1 * scale (scale:
 * the largest |want| of the run) for values that decayed or cancelled to
 * nearly 0: the float32 dense reference's own rounding, accumulated over
 * hundreds of steps, is about 1e-7 of the scale (measured: the worst
 * error is printed). */
static double g_worst;

static double check_close(const float *got, const float *want, size_t n, double scale,
                          const char *what)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - (double)want[i]);
        double lim = TOL * fmax(fabs((double)want[i]), 0.1 * scale);
        if (err / lim > worst) {
            worst = err / lim;
        }
        if (err / lim > g_worst) {
            g_worst = err / lim;
        }
        if (err > lim) {
            fail_msg("%s[%zu]: got %.9g, want %.9g (error %.3g, limit %.3g)", what, i,
                     (double)got[i], (double)want[i], err, lim);
        }
    }
    return worst;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs((double)x[i]));
    }
    return m;
}

/* Compare every row the table holds (and buffers) with the reference. */
static void compare_export(srv_table_t *t, const dense_t *d, const char *tag)
{
    uint64_t *keys;
    float *w, *buf;
    size_t n;
    assert_int_equal(srv_table_export(t, &keys, &w, &buf, &n), 0);
    assert_int_equal(srv_table_step(t), d->step);
    for (size_t j = 0; j < n; j++) {
        int i = 0;
        while (i < NKEYS && d->keys[i] != keys[j]) {
            i++;
        }
        assert_true(i < NKEYS);
        assert_true(j == 0 || keys[j] > keys[j - 1]);
        char what[64];
        snprintf(what, sizeof what, "%s w key %d", tag, i);
        check_close(w + j * DIM, d->w + i * DIM, DIM, max_abs(d->w, NKEYS * DIM), what);
        if (d->cfg.momentum != 0.0) {
            assert_non_null(buf);
            snprintf(what, sizeof what, "%s buf key %d", tag, i);
            check_close(buf + j * DIM, d->b + i * DIM, DIM, max_abs(d->b, NKEYS * DIM), what);
        } else {
            assert_null(buf);
        }
    }
    free(keys);
    free(w);
    free(buf);
}

/* A schedule with warm-up, steps and an oscillation: lr changes every step. */
static double sched(uint64_t t)
{
    double lr = 0.05 * (1.0 + 0.5 * sin(0.37 * (double)t));
    if (t < 10) {
        lr *= (double)(t + 1) / 10.0;
    }
    return t >= 150 ? lr * 0.3 : lr;
}

/*
 * Run `steps` steps of up to 3 parts with random subsets of the first
 * `live` keys (more keys come alive as steps go, so rows are created late),
 * comparing the whole table with the dense reference every `every` steps
 * and reading a few random keys in between (reads create rows too).
 */
static void run_case(const srv_optim_cfg_t *cfg, int steps, int every, uint64_t seed)
{
    srv_table_init_t init = {.kind = SRV_TABLE_INIT_UNIFORM, .bound = 0.5f, .seed = 42};
    dense_t *d = malloc(sizeof *d);
    assert_non_null(d);
    dense_init(d, cfg, &init, 7);
    srv_table_t *t = NULL;
    assert_int_equal(srv_table_new(&t, "emb.weight", 7, DIM, &init, cfg, SRV_SPARSE_EXACT, 0), 0);
    ps_rng_t rng;
    ps_rng_seed(&rng, seed, 1);
    uint64_t pk[3][NKEYS];
    float pg[3][NKEYS * DIM];
    for (int s = 0; s < steps; s++) {
        int live = 4 + s * (NKEYS - 4) / (steps / 2 + 1);
        live = live > NKEYS ? NKEYS : live;
        int nparts = 1 + (int)ps_rng_below(&rng, 3);
        srv_rows_part_t parts[3];
        for (int k = 0; k < nparts; k++) {
            /* Sorted keys: pick indexes, then order them by key. */
            size_t n = 0;
            uint64_t sorted[NKEYS];
            for (int i = 0; i < live; i++) {
                /* The first step touches every live row in part 0 (its
                 * buf = g rule), and some rows skip it. */
                if ((s == 0 && k == 0 && i < 3) || ps_rng_uniform(&rng) < 0.15f) {
                    sorted[n++] = d->keys[i];
                }
            }
            for (size_t a = 1; a < n; a++) {
                for (size_t b = a; b > 0 && sorted[b] < sorted[b - 1]; b--) {
                    uint64_t x = sorted[b];
                    sorted[b] = sorted[b - 1];
                    sorted[b - 1] = x;
                }
            }
            memcpy(pk[k], sorted, n * sizeof(uint64_t));
            for (size_t j = 0; j < n * DIM; j++) {
                pg[k][j] = ps_rng_uniform(&rng) * 2.0f - 1.0f;
            }
            parts[k] = (srv_rows_part_t){pk[k], n, pg[k], 1.0f / (float)(k + 2)};
        }
        double lr = sched((uint64_t)s);
        assert_int_equal(srv_table_apply(t, parts, nparts, lr), 0);
        dense_step(d, parts, nparts, lr);
        if (s % 7 == 3) {
            uint64_t rk[4];
            float out[4 * DIM];
            for (int j = 0; j < 4; j++) {
                rk[j] = d->keys[ps_rng_below(&rng, NKEYS)];
            }
            assert_int_equal(srv_table_read(t, rk, 4, out), 0);
            for (int j = 0; j < 4; j++) {
                int i = 0;
                while (d->keys[i] != rk[j]) {
                    i++;
                }
                check_close(out + j * DIM, d->w + i * DIM, DIM, max_abs(d->w, NKEYS * DIM), "read");
            }
        }
        if ((s + 1) % every == 0) {
            compare_export(t, d, "step");
        }
    }
    compare_export(t, d, "end");
    printf("# worst error / limit so far: %.3f\n", g_worst);
    srv_table_destroy(&t);
    srv_table_destroy(&t); /* safe twice */
    free(d);
}

static void test_torch_plain(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 0.01};
    run_case(&c, 300, 50, 1);
}

static void test_torch_dampening(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .dampening = 0.3, .weight_decay = 0.05};
    run_case(&c, 300, 60, 2);
}

static void test_torch_nesterov(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .nesterov = 1, .weight_decay = 0.02};
    run_case(&c, 300, 60, 3);
}

static void test_sutskever(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 0.01, .form = SRV_FORM_SUTSKEVER};
    run_case(&c, 300, 60, 4);
}

static void test_sutskever_nesterov(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {
        .momentum = 0.9, .nesterov = 1, .weight_decay = 0.01, .form = SRV_FORM_SUTSKEVER};
    run_case(&c, 300, 60, 5);
}

static void test_ema(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 0.03, .form = SRV_FORM_EMA};
    run_case(&c, 300, 60, 6);
}

static void test_extras(void **state)
{
    (void)state;
    /* maximize, clip (a zero gradient clips to 0), coupled and decoupled
     * decay together. */
    srv_optim_cfg_t c = {.momentum = 0.9,
                         .weight_decay = 0.01,
                         .maximize = 1,
                         .clip_value = 0.3,
                         .decoupled_wd = 0.2};
    run_case(&c, 300, 60, 7);
}

static void test_no_momentum(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.weight_decay = 0.05, .decoupled_wd = 0.1};
    run_case(&c, 200, 50, 8);
}

static void test_no_decay(void **state)
{
    (void)state;
    /* Without decay an untouched row's w still moves (its velocity). */
    srv_optim_cfg_t c = {.momentum = 0.99};
    run_case(&c, 400, 100, 9);
}

/* A row untouched for 2000 steps, against the per-step loop done here. */
static void test_long_gap(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 1e-3};
    srv_table_init_t init = {.kind = SRV_TABLE_INIT_UNIFORM, .bound = 1.0f, .seed = 5};
    srv_table_t *t = NULL;
    assert_int_equal(srv_table_new(&t, "t", 1, 1, &init, &c, SRV_SPARSE_EXACT, 0), 0);
    uint64_t k0 = 3, k1 = 1ULL << 40;
    float g = 1.0f;
    srv_rows_part_t p0 = {&k0, 1, &g, 1.0f}, p1 = {&k1, 1, &g, 1.0f};
    /* Reference in double, step by step, from the algebra of the update. */
    double w = 0.0, b = 0.0;
    float w0;
    srv_table_init_row(&init, 1, k1, 1, &w0);
    w = w0;
    assert_int_equal(srv_table_apply(t, &p1, 1, 0.1), 0); /* k1 touched at step 1 */
    /* The kernel's scalars are floats: use the same values. */
    const double m = (float)0.9, wd = (float)1e-3;
    b = 1.0 + wd * w;
    w = w - (double)(float)0.1 * b;
    for (int s = 1; s < 2001; s++) {
        double lr = 0.1 / (1.0 + 0.001 * s);
        assert_int_equal(srv_table_apply(t, &p0, 1, lr), 0);
        b = m * b + wd * w;
        w = w - (double)(float)lr * b;
    }
    float out;
    assert_int_equal(srv_table_read(t, &k1, 1, &out), 0);
    assert_true(fabs((double)out - w) <= 1e-5 * fabs(w));
    srv_table_destroy(&t);
}

/* The product tree against the plain left-to-right product. */
static void test_catchup_tree(void **state)
{
    (void)state;
    srv_catchup_t k;
    srv_catchup_init(&k, 0);
    srv_map2_t maps[300];
    for (int i = 0; i < 300; i++) {
        maps[i] = (srv_map2_t){1.0 + 0.01 * sin(i), 0.1 * cos(i), -0.05 * i / 300.0, 0.9};
        assert_int_equal(srv_catchup_push(&k, maps[i]), 0);
    }
    for (uint64_t s = 0; s <= 300; s += 7) {
        for (uint64_t e = s; e <= 300; e += 13) {
            srv_map2_t want = srv_map2_identity(), got = srv_catchup_product(&k, s, e);
            for (uint64_t i = s; i < e; i++) {
                want = srv_map2_mul(maps[i], want);
            }
            assert_true(fabs(got.a - want.a) <= 1e-12 * (1 + fabs(want.a)));
            assert_true(fabs(got.b - want.b) <= 1e-12 * (1 + fabs(want.b)));
            assert_true(fabs(got.c - want.c) <= 1e-12 * (1 + fabs(want.c)));
            assert_true(fabs(got.d - want.d) <= 1e-12 * (1 + fabs(want.d)));
        }
    }
    srv_catchup_fini(&k);
}

/* Each step map against one step of the kernel on (w, buf) with g = 0. */
static void test_step_maps(void **state)
{
    (void)state;
    const srv_optim_cfg_t cfgs[] = {
        {.momentum = 0.9, .weight_decay = 0.1},
        {.momentum = 0.9, .weight_decay = 0.1, .dampening = 0.4},
        {.momentum = 0.9, .weight_decay = 0.1, .nesterov = 1},
        {.momentum = 0.8, .weight_decay = 0.1, .form = SRV_FORM_SUTSKEVER},
        {.momentum = 0.8, .weight_decay = 0.1, .form = SRV_FORM_SUTSKEVER, .nesterov = 1},
        {.momentum = 0.7, .weight_decay = 0.1, .form = SRV_FORM_EMA},
        {.momentum = 0.9, .weight_decay = 0.1, .decoupled_wd = 0.5, .clip_value = 1.0},
        {.weight_decay = 0.1, .decoupled_wd = 0.5},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        for (int first = 0; first < 2; first++) {
            srv_optim_cfg_t c = cfgs[i];
            c.lr = 0.25;
            float w = 1.5f, b = -0.75f, zero = 0.0f, one = 1.0f;
            const float *parts[1] = {&zero};
            srv_optim_apply(&c, &w, c.momentum != 0.0 ? &b : NULL, parts, &one, 1, 1, first);
            srv_map2_t m = srv_catchup_step_map(&c, 0.25, first);
            double wm = m.a * 1.5 + m.b * -0.75, bm = m.c * 1.5 + m.d * -0.75;
            assert_true(fabs(wm - (double)w) <= 1e-6);
            if (c.momentum != 0.0) {
                assert_true(fabs(bm - (double)b) <= 1e-6);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_maps),
        cmocka_unit_test(test_catchup_tree),
        cmocka_unit_test(test_torch_plain),
        cmocka_unit_test(test_torch_dampening),
        cmocka_unit_test(test_torch_nesterov),
        cmocka_unit_test(test_sutskever),
        cmocka_unit_test(test_sutskever_nesterov),
        cmocka_unit_test(test_ema),
        cmocka_unit_test(test_extras),
        cmocka_unit_test(test_no_momentum),
        cmocka_unit_test(test_no_decay),
        cmocka_unit_test(test_long_gap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
