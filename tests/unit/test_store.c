/*
 * Unit tests for server/srv_store: which chunks a server owns, initial
 * values, the synchronous aggregation, and the update number each update
 * evaluates the learning-rate schedule at (hand-derived rates, no torch).
 *
 * Expected weights are computed here element by element with the rounding
 * order srv_optim.h documents (g = part0*coef0; g = g + part1*coef1; ...;
 * w = fmaf(d, -lr, w)), with coefficients (float)(n_w / N) in worker-rank
 * order, and compared bit for bit.  Inputs are pseudo-random floats with
 * full mantissas, so a wrong coefficient, a different summation order or a
 * fused product shows up as a bit difference.  Release callbacks count
 * their calls per push.
 *
 * Layout: one tensor of 3000 floats, chunk 1024: chunks 0 [0,1024),
 * 1 [1024,2048), 2 [2048,3000) (952 elements, shorter than a block).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_sched.h"
#include "srv_store.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOTAL 3000
#define CHUNK 1024
#define MAXN 1024

/* A heap layout, as srv_store_init takes it. */
static ps_layout_t *layout_3000(void)
{
    const int64_t d[1] = {TOTAL};
    ps_layout_t *l = malloc(sizeof *l);
    assert_non_null(l);
    ps_layout_init(l);
    assert_int_equal(ps_layout_add(l, "w", 1, d), 0);
    return l;
}

/* Release callback: the owner handle is a per-push counter. */
static void count_release(void *owner)
{
    (*(int *)owner)++;
}

static void fill(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        /* In [-2, 2) with all 24 mantissa bits in play. */
        x[i] = (float)((double)(s >> 40) / (double)(1 << 24) * 4.0 - 2.0);
    }
}

static void assert_bits(const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t g, w;
        memcpy(&g, &got[i], 4);
        memcpy(&w, &want[i], 4);
        if (g != w) {
            fail_msg("element %zu: got %a (0x%08x), want %a (0x%08x)", i, (double)got[i], g,
                     (double)want[i], w);
        }
    }
}

/* An initialised store, every local chunk's weights from `seed`. */
static void store_new(srv_store_t *s, int server, int nservers, int nworkers, srv_optim_cfg_t opt,
                      uint64_t seed)
{
    ps_layout_t *l = layout_3000();
    assert_int_equal(srv_store_init(s, &l, CHUNK, server, nservers, nworkers, &opt, count_release),
                     0);
    float w0[MAXN];
    for (size_t i = 0; i < s->nlocal; i++) {
        srv_chunk_t *c = &s->chunks[i];
        fill(w0, c->count, seed + c->id);
        assert_int_equal(srv_store_set_init(s, c, w0), 0);
    }
}

/* g = sum_k parts[k]*coef[k] in the given order, the way srv_optim.h says. */
static float agg(const float *const *parts, const float *coef, int n, size_t i)
{
    float g = parts[0][i] * coef[0];
    for (int k = 1; k < n; k++) {
        float p = parts[k][i] * coef[k];
        g = g + p;
    }
    return g;
}

static void test_local_chunks(void **state)
{
    (void)state;
    srv_store_t s;
    srv_optim_cfg_t opt = {.lr = 0.1};
    ps_layout_t *l = layout_3000();

    assert_int_equal(srv_store_init(&s, &l, CHUNK, 0, 2, 2, &opt, count_release), 0);
    assert_null(l); /* the store took it */
    assert_int_equal(s.layout->total, TOTAL);
    assert_int_equal(s.nlocal, 2);
    assert_int_equal(s.chunks[0].id, 0);
    assert_int_equal(s.chunks[1].id, 2);
    srv_chunk_t *c0 = srv_store_chunk(&s, 0), *c2 = srv_store_chunk(&s, 2);
    assert_ptr_equal(c0, &s.chunks[0]);
    assert_ptr_equal(c2, &s.chunks[1]);
    assert_int_equal(c0->offset, 0);
    assert_int_equal(c0->count, 1024);
    assert_int_equal(c2->offset, 2048);
    assert_int_equal(c2->count, 952);
    assert_null(srv_store_chunk(&s, 1)); /* server 1's */
    assert_null(srv_store_chunk(&s, 3)); /* past the map */
    assert_null(srv_store_chunk(&s, UINT32_MAX));
    assert_true(c0->version == 0);
    assert_int_equal(srv_store_arrived(&s, c0, 0), 0);
    assert_int_equal(c0->initialized, 0);
    assert_null(c0->buf); /* no velocity without momentum */
    srv_store_fini(&s);

    l = layout_3000();
    assert_int_equal(srv_store_init(&s, &l, CHUNK, 1, 2, 2, &opt, count_release), 0);
    assert_int_equal(s.nlocal, 1);
    assert_int_equal(s.chunks[0].id, 1);
    assert_int_equal(s.chunks[0].offset, 1024);
    assert_int_equal(s.chunks[0].count, 1024);
    assert_null(srv_store_chunk(&s, 0));
    assert_non_null(srv_store_chunk(&s, 1));
    srv_store_fini(&s);

    opt.momentum = 0.9;
    l = layout_3000();
    assert_int_equal(srv_store_init(&s, &l, CHUNK, 0, 1, 2, &opt, count_release), 0);
    assert_int_equal(s.nlocal, 3);
    for (uint32_t id = 0; id < 3; id++) {
        srv_chunk_t *c = srv_store_chunk(&s, id);
        assert_non_null(c);
        assert_int_equal(c->id, id);
        assert_non_null(c->buf);
        for (size_t i = 0; i < c->count; i++) {
            assert_true(c->buf[i] == 0.0f);
        }
    }
    srv_store_fini(&s);
    srv_store_fini(&s); /* safe twice */
}

static void test_init_refused(void **state)
{
    (void)state;
    srv_store_t s;
    srv_optim_cfg_t opt = {.lr = 0.1};
    ps_layout_t *l = layout_3000();
    assert_int_equal(srv_store_init(&s, &l, CHUNK - 1, 0, 1, 1, &opt, count_release), PS_EINVAL);
    assert_null(l); /* taken, and freed with the failed store (ASan checks the leak) */
    srv_store_fini(&s);
    l = malloc(sizeof *l);
    assert_non_null(l);
    ps_layout_init(l); /* no elements */
    assert_int_equal(srv_store_init(&s, &l, CHUNK, 0, 1, 1, &opt, count_release), PS_EINVAL);
    assert_null(l);
    srv_store_fini(&s);
}

static void test_set_init(void **state)
{
    (void)state;
    srv_store_t s;
    srv_optim_cfg_t opt = {.lr = 0.1};
    ps_layout_t *l = layout_3000();
    assert_int_equal(srv_store_init(&s, &l, CHUNK, 0, 2, 2, &opt, count_release), 0);
    float a[MAXN], b[MAXN];
    fill(a, 1024, 1);
    fill(b, 952, 2);
    assert_int_equal(srv_store_all_initialized(&s), 0);
    assert_int_equal(srv_store_set_init(&s, srv_store_chunk(&s, 0), a), 0);
    assert_int_equal(srv_store_all_initialized(&s), 0);
    assert_int_equal(srv_store_set_init(&s, srv_store_chunk(&s, 2), b), 0);
    assert_int_equal(srv_store_all_initialized(&s), 1);
    assert_bits(srv_store_chunk(&s, 0)->w, a, 1024);
    assert_bits(srv_store_chunk(&s, 2)->w, b, 952);
    srv_store_fini(&s);
}

/* The brief's example: lr 0.5, no momentum, samples 1 (worker 0) and 3
 * (worker 1), pushed by worker 1 first. */
static void test_weighted_mean_plain(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 2, 2, (srv_optim_cfg_t){.lr = 0.5}, 100);
    for (uint32_t id = 0; id <= 2; id += 2) {
        srv_chunk_t *c = srv_store_chunk(&s, id);
        size_t n = c->count;
        float w0[MAXN], g0[MAXN], g1[MAXN], want[MAXN];
        int own0 = 0, own1 = 0;
        memcpy(w0, c->w, n * sizeof(float));
        fill(g0, n, 10 + id);
        fill(g1, n, 20 + id);
        assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 3, g1, &own1), 0);
        assert_true(c->version == 0);
        assert_bits(c->w, w0, n); /* nothing applied yet */
        assert_int_equal(own1, 0);
        assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g0, &own0), 1);
        assert_true(c->version == 1);
        assert_int_equal(own0, 1);
        assert_int_equal(own1, 1);
        assert_int_equal(srv_store_arrived(&s, c, c->version), 0);
        /* coef = (float)(1/4), (float)(3/4): exact here. */
        const float c0 = 0.25f, c1 = 0.75f, neglr = -0.5f;
        for (size_t i = 0; i < n; i++) {
            float g = g0[i] * c0;
            float p = g1[i] * c1;
            g = g + p;
            want[i] = fmaf(g, neglr, w0[i]);
        }
        assert_bits(c->w, want, n);
    }
    assert_true(s.updates == 2);
    srv_store_fini(&s);
}

/* Coefficients that are not exact in float: samples 1 and 2. */
static void test_inexact_coefficients(void **state)
{
    (void)state;
    srv_store_t s;
    const double lr = 0.1;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = lr}, 200);
    srv_chunk_t *c = srv_store_chunk(&s, 1);
    size_t n = c->count;
    float w0[MAXN], g0[MAXN], g1[MAXN], want[MAXN];
    int own[2] = {0, 0};
    memcpy(w0, c->w, n * sizeof(float));
    fill(g0, n, 31);
    fill(g1, n, 32);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g0, &own[0]), 0);
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 2, g1, &own[1]), 1);
    const float coef[2] = {(float)(1.0 / 3.0), (float)(2.0 / 3.0)};
    const float *parts[2] = {g0, g1};
    for (size_t i = 0; i < n; i++) {
        want[i] = fmaf(agg(parts, coef, 2, i), (float)(-lr), w0[i]);
    }
    assert_bits(c->w, want, n);
    srv_store_fini(&s);
}

/* Sample counts over 2^24 are not exact in float: the coefficient is the
 * quotient rounded once, (float)(n/N), not (float)n / (float)N. */
static void test_large_sample_counts(void **state)
{
    (void)state;
    srv_store_t s;
    const double lr = 0.5;
    const uint32_t n0 = 16777217u, n1 = 1u; /* 2^24 + 1 */
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = lr}, 250);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float w0[MAXN], g0[MAXN], g1[MAXN], want[MAXN];
    int own[2] = {0, 0};
    memcpy(w0, c->w, sizeof w0);
    fill(g0, 1024, 35);
    fill(g1, 1024, 36);
    const float coef[2] = {(float)(16777217.0 / 16777218.0), (float)(1.0 / 16777218.0)};
    /* The test can tell the two roundings apart. */
    assert_true(coef[0] != (float)n0 / (float)(n0 + n1));
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, n1, g1, &own[1]), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, n0, g0, &own[0]), 1);
    const float *parts[2] = {g0, g1};
    for (size_t i = 0; i < 1024; i++) {
        want[i] = fmaf(agg(parts, coef, 2, i), (float)(-lr), w0[i]);
    }
    assert_bits(c->w, want, 1024);
    srv_store_fini(&s);
}

static void test_arrival_order_two(void **state)
{
    (void)state;
    srv_store_t a, b;
    store_new(&a, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 300);
    store_new(&b, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 300);
    srv_chunk_t *ca = srv_store_chunk(&a, 2), *cb = srv_store_chunk(&b, 2);
    float g0[MAXN], g1[MAXN];
    int own[4] = {0, 0, 0, 0};
    fill(g0, ca->count, 41);
    fill(g1, ca->count, 42);
    assert_int_equal(srv_store_push(&a, ca, 0, 0, 0, 1, g0, &own[0]), 0);
    assert_int_equal(srv_store_push(&a, ca, 1, 0, 0, 3, g1, &own[1]), 1);
    assert_int_equal(srv_store_push(&b, cb, 1, 0, 0, 3, g1, &own[2]), 0);
    assert_int_equal(srv_store_push(&b, cb, 0, 0, 0, 1, g0, &own[3]), 1);
    assert_bits(ca->w, cb->w, ca->count);
    srv_store_fini(&a);
    srv_store_fini(&b);
}

/* Three workers, every arrival order: always the rank-order sum. */
static void test_arrival_order_three(void **state)
{
    (void)state;
    const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    const uint32_t samples[3] = {1, 2, 4};
    const float coef[3] = {(float)(1.0 / 7.0), (float)(2.0 / 7.0), (float)(4.0 / 7.0)};
    const double lr = 0.5;
    static float g[3][MAXN], w0[MAXN], want[MAXN];
    const float *parts[3] = {g[0], g[1], g[2]};
    fill(g[0], 1024, 51);
    fill(g[1], 1024, 52);
    fill(g[2], 1024, 53);
    /* The test can tell orders apart: summing 2,0,1 gives other bits. */
    const float *other[3] = {g[2], g[0], g[1]};
    const float ocoef[3] = {coef[2], coef[0], coef[1]};
    int differs = 0;
    for (size_t i = 0; i < 1024; i++) {
        differs += agg(parts, coef, 3, i) != agg(other, ocoef, 3, i);
    }
    assert_true(differs > 0);
    for (int p = 0; p < 6; p++) {
        srv_store_t s;
        int own[3] = {0, 0, 0};
        store_new(&s, 0, 1, 3, (srv_optim_cfg_t){.lr = lr}, 400);
        srv_chunk_t *c = srv_store_chunk(&s, 0);
        memcpy(w0, c->w, 1024 * sizeof(float));
        for (int k = 0; k < 3; k++) {
            int w = perms[p][k];
            assert_int_equal(srv_store_push(&s, c, w, 0, 0, samples[w], g[w], &own[w]),
                             k == 2 ? 1 : 0);
        }
        for (size_t i = 0; i < 1024; i++) {
            want[i] = fmaf(agg(parts, coef, 3, i), (float)(-lr), w0[i]);
        }
        assert_bits(c->w, want, 1024);
        assert_int_equal(own[0] + own[1] + own[2], 3);
        srv_store_fini(&s);
    }
}

static void test_wrong_step(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 500);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float g[MAXN], w0[MAXN];
    int own = 0, ok0 = 0, ok1 = 0, missing[2];
    fill(g, 1024, 61);
    memcpy(w0, c->w, sizeof w0);
    ps_error_clear();
    assert_int_equal(srv_store_push(&s, c, 0, 1, 1, 1, g, &own), PS_ERANGE);
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
    assert_int_equal(srv_store_push(&s, c, 1, UINT64_MAX, 0, 1, g, &own), PS_ERANGE);
    assert_int_equal(srv_store_arrived(&s, c, c->version), 0);
    assert_null(srv_store_held(&s, c, 0, 0));
    assert_null(srv_store_held(&s, c, 0, 1));
    assert_int_equal(srv_store_missing(&s, c, missing, 2), 2);
    /* Step 0 still completes normally. */
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &ok0), 0);
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 1, g, &ok1), 1);
    /* Now step 0 is the past. */
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &own), PS_ERANGE);
    assert_int_equal(srv_store_push(&s, c, 0, 2, 2, 1, g, &own), PS_ERANGE);
    assert_int_equal(srv_store_arrived(&s, c, c->version), 0);
    srv_store_fini(&s);
    assert_int_equal(own, 0); /* refused pushes stay the caller's */
    assert_int_equal(ok0, 1);
    assert_int_equal(ok1, 1);
}

static void test_duplicate_push(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 600);
    srv_chunk_t *c = srv_store_chunk(&s, 2);
    size_t n = c->count;
    float first[MAXN], second[MAXN], g1[MAXN], w0[MAXN], want[MAXN];
    int own_first = 0, own_second = 0, own1 = 0;
    fill(first, n, 71);
    fill(second, n, 72);
    fill(g1, n, 73);
    memcpy(w0, c->w, n * sizeof(float));
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, first, &own_first), 0);
    ps_error_clear();
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, second, &own_second), PS_ESTATE);
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
    assert_int_equal(srv_store_arrived(&s, c, c->version), 1);
    assert_ptr_equal(srv_store_held(&s, c, 0, 0), first);
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 1, g1, &own1), 1);
    for (size_t i = 0; i < n; i++) {
        float g = first[i] * 0.5f;
        float p = g1[i] * 0.5f;
        want[i] = fmaf(g + p, -0.5f, w0[i]);
    }
    assert_bits(c->w, want, n);
    srv_store_fini(&s);
    assert_int_equal(own_first, 1);
    assert_int_equal(own_second, 0);
    assert_int_equal(own1, 1);
}

static void test_release_at_fini(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 3, (srv_optim_cfg_t){.lr = 0.5}, 700);
    float g[MAXN];
    int own[3] = {0, 0, 0};
    fill(g, 1024, 81);
    assert_int_equal(srv_store_push(&s, srv_store_chunk(&s, 0), 2, 0, 0, 1, g, &own[0]), 0);
    assert_int_equal(srv_store_push(&s, srv_store_chunk(&s, 0), 0, 0, 0, 1, g, &own[1]), 0);
    assert_int_equal(srv_store_push(&s, srv_store_chunk(&s, 2), 1, 0, 0, 1, g, &own[2]), 0);
    assert_int_equal(own[0] + own[1] + own[2], 0);
    srv_store_fini(&s);
    assert_int_equal(own[0], 1);
    assert_int_equal(own[1], 1);
    assert_int_equal(own[2], 1);
    srv_store_fini(&s); /* nothing released twice */
    assert_int_equal(own[0] + own[1] + own[2], 3);
}

static void test_no_release_callback(void **state)
{
    (void)state;
    srv_store_t s;
    srv_optim_cfg_t opt = {.lr = 0.5};
    ps_layout_t *l = layout_3000();
    assert_int_equal(srv_store_init(&s, &l, CHUNK, 0, 1, 2, &opt, NULL), 0);
    float g[MAXN];
    fill(g, 1024, 91);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    assert_int_equal(srv_store_set_init(&s, c, g), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, NULL), 0);
    srv_store_fini(&s);
}

/* Worker 1 had no sample: its (garbage) gradient gets no weight at all. */
static void test_zero_sample_worker_excluded(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 3, (srv_optim_cfg_t){.lr = 0.5}, 800);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float g0[MAXN], junk[MAXN], g2[MAXN], w0[MAXN], want[MAXN];
    int own[3] = {0, 0, 0};
    fill(g0, 1024, 101);
    fill(g2, 1024, 102);
    for (int i = 0; i < 1024; i++) {
        junk[i] = NAN; /* 0 * NaN would poison the sum */
    }
    memcpy(w0, c->w, sizeof w0);
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 0, junk, &own[1]), 0);
    assert_int_equal(srv_store_push(&s, c, 2, 0, 0, 2, g2, &own[2]), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 2, g0, &own[0]), 1);
    for (int i = 0; i < 1024; i++) {
        float g = g0[i] * 0.5f;
        float p = g2[i] * 0.5f;
        want[i] = fmaf(g + p, -0.5f, w0[i]);
    }
    assert_bits(c->w, want, 1024);
    assert_int_equal(own[0] + own[1] + own[2], 3);
    srv_store_fini(&s);
    assert_int_equal(own[0] + own[1] + own[2], 3);
}

static void test_all_zero_samples(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 900);
    srv_chunk_t *c = srv_store_chunk(&s, 2);
    float junk[MAXN], w0[MAXN];
    int own[2] = {0, 0};
    for (int i = 0; i < MAXN; i++) {
        junk[i] = NAN;
    }
    memcpy(w0, c->w, c->count * sizeof(float));
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 0, junk, &own[0]), 0);
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 0, junk, &own[1]), 1);
    assert_true(c->version == 1);
    assert_bits(c->w, w0, c->count);
    assert_true(s.zero_sample_steps == 1);
    assert_true(s.updates == 1);
    assert_int_equal(own[0] + own[1], 2);
    srv_store_fini(&s);
    assert_int_equal(own[0] + own[1], 2);
}

/* With dampening, torch's first update (buf = g) differs from a later one
 * (buf = mom*buf + (1-damp)*g): a step with no samples must not count as
 * the first. */
static void test_zero_step_is_not_first_update(void **state)
{
    (void)state;
    const srv_optim_cfg_t opt = {.lr = 0.1, .momentum = 0.9, .dampening = 0.5};
    srv_store_t s;
    store_new(&s, 0, 1, 1, opt, 1000);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float junk[MAXN], g[MAXN], w0[MAXN], wb[MAXN], wantw[MAXN];
    int own[3] = {0, 0, 0};
    for (int i = 0; i < MAXN; i++) {
        junk[i] = NAN;
    }
    fill(g, 1024, 111);
    memcpy(w0, c->w, sizeof w0);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 0, junk, &own[0]), 1);
    assert_int_equal(srv_store_push(&s, c, 0, 1, 1, 5, g, &own[1]), 1);
    for (int i = 0; i < 1024; i++) {
        float gi = g[i] * 1.0f; /* one part, coefficient 5/5 */
        wb[i] = gi;             /* first update: buf = g, undampened */
        wantw[i] = fmaf(wb[i], (float)(-0.1), w0[i]);
    }
    assert_bits(c->buf, wb, 1024);
    assert_bits(c->w, wantw, 1024);
    /* The next one is dampened: buf = fmaf(g, 1 - damp, buf*mom). */
    fill(g, 1024, 112);
    assert_int_equal(srv_store_push(&s, c, 0, 2, 2, 5, g, &own[2]), 1);
    for (int i = 0; i < 1024; i++) {
        float bm = wb[i] * (float)0.9;
        wb[i] = fmaf(g[i], 0.5f, bm);
        wantw[i] = fmaf(wb[i], (float)(-0.1), wantw[i]);
    }
    assert_bits(c->buf, wb, 1024);
    assert_bits(c->w, wantw, 1024);
    assert_true(s.zero_sample_steps == 1);
    srv_store_fini(&s);
    assert_int_equal(own[0] + own[1] + own[2], 3);
}

static void test_missing(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 4, (srv_optim_cfg_t){.lr = 0.5}, 1100);
    srv_chunk_t *c = srv_store_chunk(&s, 1);
    float g[MAXN];
    int own[4] = {0, 0, 0, 0}, r[4] = {-9, -9, -9, -9};
    fill(g, 1024, 121);
    assert_int_equal(srv_store_missing(&s, c, r, 4), 4);
    assert_int_equal(r[0], 0);
    assert_int_equal(r[3], 3);
    assert_int_equal(srv_store_push(&s, c, 2, 0, 0, 1, g, &own[2]), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &own[0]), 0);
    for (int i = 0; i < 4; i++) {
        r[i] = -9;
    }
    assert_int_equal(srv_store_missing(&s, c, r, 4), 2);
    assert_int_equal(r[0], 1);
    assert_int_equal(r[1], 3);
    assert_int_equal(r[2], -9);
    r[0] = r[1] = -9;
    assert_int_equal(srv_store_missing(&s, c, r, 1), 2); /* count, not capped */
    assert_int_equal(r[0], 1);
    assert_int_equal(r[1], -9); /* nothing past cap */
    assert_int_equal(srv_store_missing(&s, c, r, 0), 2);
    assert_int_equal(srv_store_push(&s, c, 3, 0, 0, 1, g, &own[3]), 0);
    assert_int_equal(srv_store_missing(&s, c, r, 4), 1);
    assert_int_equal(r[0], 1);
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 1, g, &own[1]), 1);
    /* A new step: everyone is missing again. */
    assert_int_equal(srv_store_missing(&s, c, r, 4), 4);
    srv_store_fini(&s);
}

/* Momentum 0.9, dampening 0: buf = g, then buf = fmaf(g, 1, buf*mom). */
static void test_momentum_two_steps(void **state)
{
    (void)state;
    const double lr = 0.1, mom = 0.9;
    srv_store_t s;
    store_new(&s, 0, 2, 2, (srv_optim_cfg_t){.lr = lr, .momentum = mom}, 1200);
    srv_chunk_t *c = srv_store_chunk(&s, 2), *other = srv_store_chunk(&s, 0);
    size_t n = c->count;
    float ga[MAXN], gb[MAXN], w[MAXN], buf[MAXN], other0[MAXN];
    int own[4] = {0, 0, 0, 0};
    memcpy(w, c->w, n * sizeof(float));
    memcpy(other0, other->w, sizeof other0);
    const float neglr = (float)(-lr), fm = (float)mom;
    for (int step = 0; step < 2; step++) {
        fill(ga, n, 130 + (uint64_t)step);
        fill(gb, n, 140 + (uint64_t)step);
        assert_int_equal(
            srv_store_push(&s, c, 1, (uint64_t)step, (uint64_t)step, 2, gb, &own[2 * step + 1]), 0);
        assert_int_equal(
            srv_store_push(&s, c, 0, (uint64_t)step, (uint64_t)step, 2, ga, &own[2 * step]), 1);
        for (size_t i = 0; i < n; i++) {
            float g = ga[i] * 0.5f;
            float p = gb[i] * 0.5f;
            g = g + p;
            if (step == 0) {
                buf[i] = g;
            } else {
                float bm = buf[i] * fm;
                buf[i] = fmaf(g, 1.0f, bm);
            }
            w[i] = fmaf(buf[i], neglr, w[i]);
        }
        assert_bits(c->buf, buf, n);
        assert_bits(c->w, w, n);
        assert_true(c->version == (uint64_t)step + 1);
    }
    /* The other chunk is untouched. */
    assert_bits(other->w, other0, 1024);
    assert_true(other->version == 0);
    for (size_t i = 0; i < 1024; i++) {
        assert_true(other->buf[i] == 0.0f);
    }
    srv_store_fini(&s);
    assert_int_equal(own[0] + own[1] + own[2] + own[3], 4);
}

/* Tensor options: a[1000] (weight decay 0), b[100] (lr x 0.5), c[1900]
 * (server settings) cut into chunks of 1024: chunk 0 holds a and the start
 * of b, chunk 1 the rest of b and the start of c.  Two steps of nesterov
 * momentum with weight decay, each element by the documented rounding
 * with its own tensor's wd and lr. */
static void test_tensor_options(void **state)
{
    (void)state;
    const double lr = 0.1, mom = 0.9, wd = 0.01;
    const int64_t da[1] = {1000}, db[1] = {100}, dc[1] = {1900};
    ps_layout_t *l = malloc(sizeof *l);
    assert_non_null(l);
    ps_layout_init(l);
    assert_int_equal(ps_layout_add(l, "a", 1, da), 0);
    assert_int_equal(ps_layout_add(l, "b", 1, db), 0);
    assert_int_equal(ps_layout_add(l, "c", 1, dc), 0);
    assert_int_equal(ps_layout_set_opts(l, 0, PS_TOPT_WD, 0.0, 0.0), 0);
    assert_int_equal(ps_layout_set_opts(l, 1, PS_TOPT_LR, 0.0, 0.5), 0);
    srv_store_t s;
    srv_optim_cfg_t opt = {.lr = lr, .momentum = mom, .weight_decay = wd, .nesterov = 1};
    assert_int_equal(srv_store_init(&s, &l, CHUNK, 0, 1, 1, &opt, NULL), 0);
    float w[TOTAL], buf[TOTAL], g[TOTAL];
    fill(w, TOTAL, 77);
    for (size_t i = 0; i < s.nlocal; i++) {
        assert_int_equal(srv_store_set_init(&s, &s.chunks[i], w + s.chunks[i].offset), 0);
    }
    for (int step = 0; step < 2; step++) {
        fill(g, TOTAL, 300 + (uint64_t)step);
        for (size_t i = 0; i < s.nlocal; i++) {
            srv_chunk_t *c = &s.chunks[i];
            assert_int_equal(
                srv_store_push(&s, c, 0, (uint64_t)step, (uint64_t)step, 3, g + c->offset, NULL),
                1);
        }
        for (size_t i = 0; i < TOTAL; i++) {
            float ewd = i < 1000 ? 0.0f : (float)wd;
            float neglr = (float)(-(i >= 1000 && i < 1100 ? lr * 0.5 : lr));
            float gi = g[i] * 1.0f;
            gi = fmaf(w[i], ewd, gi);
            buf[i] = step == 0 ? gi : fmaf(gi, 1.0f, buf[i] * (float)mom);
            float d = fmaf(buf[i], (float)mom, gi);
            w[i] = fmaf(d, neglr, w[i]);
        }
    }
    for (size_t i = 0; i < s.nlocal; i++) {
        srv_chunk_t *c = &s.chunks[i];
        assert_bits(c->w, w + c->offset, c->count);
        assert_bits(c->buf, buf + c->offset, c->count);
    }
    srv_store_fini(&s);
}

static void test_refs(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 1, (srv_optim_cfg_t){.lr = 0.5}, 1300);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    srv_store_ref(c);
    srv_store_ref(c);
    assert_int_equal(ps_count_get(&c->refs), 2);
    srv_store_unref(c);
    srv_store_unref(c);
    assert_int_equal(ps_count_get(&c->refs), 0);
    /* With no reader left an update goes straight through. */
    float g[MAXN];
    int own = 0;
    fill(g, 1024, 131);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &own), 1);
    srv_store_fini(&s);
    assert_int_equal(own, 1);
}

/* A skip push drops the whole step: no update, version still advances,
 * the other worker's gradient is released unused. */
static void test_skip_drops_step(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 300);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float w0[MAXN], g[MAXN];
    int own = 0;
    memcpy(w0, c->w, c->count * sizeof(float));
    fill(g, c->count, 31);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 4, g, &own), 0);
    assert_int_equal(srv_store_push_skip(&s, c, 1, 0, 0), 1);
    assert_true(c->version == 1);
    assert_bits(c->w, w0, c->count);
    assert_int_equal(own, 1);
    assert_true(srv_store_skipped_steps(&s) == 1);
    /* The next step is a normal one again: w = w0 - 0.5*g (one part, coef 1). */
    assert_int_equal(srv_store_push(&s, c, 0, 1, 1, 2, g, &own), 0);
    assert_int_equal(srv_store_push(&s, c, 1, 1, 1, 2, g, &own), 1);
    float want[MAXN];
    for (size_t i = 0; i < c->count; i++) {
        float a = g[i] * 0.5f, b = g[i] * 0.5f;
        want[i] = fmaf(a + b, -0.5f, w0[i]);
    }
    assert_bits(c->w, want, c->count);
    srv_store_fini(&s);
}

/* ssp: pushes up to `staleness` steps ahead are held and applied in step
 * order once the earlier step completes; outside the window is refused. */
static void test_ssp_window(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.25}, 400);
    assert_int_equal(srv_store_set_mode(&s, PS_MODE_SSP, 1), 0);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float w0[MAXN], g0[MAXN], g1[MAXN];
    int own[4] = {0, 0, 0, 0};
    memcpy(w0, c->w, c->count * sizeof(float));
    fill(g0, c->count, 41);
    fill(g1, c->count, 42);
    /* Worker 0 runs ahead: steps 0 and 1 (step 1 computed on version 0). */
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g0, &own[0]), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 1, 0, 1, g1, &own[1]), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 2, 0, 1, g1, &own[3]), PS_ERANGE);
    assert_int_equal(srv_store_arrived(&s, c, 1), 1);
    /* Worker 1 completes step 0, then step 1: one update each. */
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 1, g0, &own[2]), 1);
    assert_true(c->version == 1);
    assert_int_equal(srv_store_push(&s, c, 1, 1, 1, 1, g1, &own[2]), 1);
    assert_true(c->version == 2);
    /* Staleness: step 1 from worker 0 was computed on version 0 -> 1. */
    assert_true(s.stale_max == 1);
    assert_true(s.stale_n == 4 && s.stale_sum == 1);
    float want[MAXN];
    for (size_t i = 0; i < c->count; i++) {
        float a = g0[i] * 0.5f, b = g0[i] * 0.5f;
        float w1 = fmaf(a + b, -0.25f, w0[i]);
        float p = g1[i] * 0.5f, q = g1[i] * 0.5f;
        want[i] = fmaf(p + q, -0.25f, w1);
    }
    assert_bits(c->w, want, c->count);
    srv_store_fini(&s);
}

/* async: every push applies at once with its own gradient. */
static void test_async_applies_each_push(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 500);
    assert_int_equal(srv_store_set_mode(&s, PS_MODE_ASYNC, 0), 0);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float w0[MAXN], g[MAXN], want[MAXN];
    int own = 0;
    memcpy(w0, c->w, c->count * sizeof(float));
    fill(g, c->count, 51);
    assert_int_equal(srv_store_push(&s, c, 1, 7, 0, 3, g, &own), 1);
    assert_int_equal(own, 1); /* released at once */
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 3, g, &own), 1);
    assert_true(c->version == 2);
    assert_true(s.stale_max == 1); /* the second push was computed on version 0 */
    for (size_t i = 0; i < c->count; i++) {
        want[i] = fmaf(g[i], -0.5f, fmaf(g[i], -0.5f, w0[i]));
    }
    assert_bits(c->w, want, c->count);
    assert_int_equal(srv_store_push(&s, c, 0, 1, 3, 3, g, &own), PS_ERANGE); /* base > version */
    srv_store_fini(&s);
}

/* ---- the update number the schedule is evaluated at ---------------------
 *
 * The rates, derived by hand from torch.optim.lr_scheduler semantics (the
 * rule docs/semantics.md and ps_sched.h state for "step:E1,E2:GAMMA"):
 *
 *     opt = torch.optim.SGD([w], lr=0.5)
 *     sched = MultiStepLR(opt, milestones=[1, 2], gamma=0.5)
 *     for epoch in range(3):
 *         for _ in range(3):        # 3 steps per epoch: updates t = 3*epoch + 0..2
 *             ...; opt.step()
 *         sched.step()              # once per epoch, after its updates
 *
 * so updates t = 0, 1, 2 use 0.5, t = 3, 4, 5 use 0.25 and t = 6, 7, 8 use
 * 0.125.  With momentum 0, w0 = 0 and a gradient of 1 in every element, w
 * after update t is minus the sum of the rates so far, every value exact in
 * float.  In sync and ssp mode t is the step being applied; in async mode it
 * is the pushing worker's step.  An off-by-one in the step the store hands
 * the schedule moves a rate across an epoch boundary and changes w.
 */
static const float w_after[9] = {-0.5f,  -1.0f,   -1.5f, -1.75f, -2.0f,
                                 -2.25f, -2.375f, -2.5f, -2.625f};

/* The server's schedule callback as srv_main wires it (ps_sched_lr with
 * the base rate and the steps per epoch), recording each t it is asked. */
typedef struct {
    ps_sched_t sched;
    uint64_t asked[16];
    int nasked;
} sched_probe_t;

static double probe_lr(void *arg, uint64_t t)
{
    sched_probe_t *p = arg;
    if (p->nasked < 16) {
        p->asked[p->nasked] = t;
    }
    p->nasked++;
    return ps_sched_lr(&p->sched, 0.5, t, 3, 0);
}

/* One chunk of 1024 zeros, plain SGD at base lr 0.5, the probe's schedule. */
static srv_chunk_t *sched_store(srv_store_t *s, sched_probe_t *p, int nworkers, ps_mode_t mode,
                                uint64_t staleness)
{
    const int64_t d[1] = {CHUNK};
    ps_layout_t *l = malloc(sizeof *l);
    assert_non_null(l);
    ps_layout_init(l);
    assert_int_equal(ps_layout_add(l, "w", 1, d), 0);
    srv_optim_cfg_t opt = {.lr = 0.5};
    assert_int_equal(srv_store_init(s, &l, CHUNK, 0, 1, nworkers, &opt, NULL), 0);
    assert_int_equal(srv_store_set_mode(s, mode, staleness), 0);
    memset(p, 0, sizeof *p);
    assert_int_equal(ps_sched_parse(&p->sched, "step:1,2:0.5", 0), 0);
    srv_store_set_lr(s, probe_lr, p);
    static const float zeros[CHUNK];
    srv_chunk_t *c = srv_store_chunk(s, 0);
    assert_int_equal(srv_store_set_init(s, c, zeros), 0);
    return c;
}

static void assert_all(const srv_chunk_t *c, float want, const char *when)
{
    for (size_t i = 0; i < c->count; i++) {
        if (c->w[i] != want) {
            fail_msg("%s: w[%zu] = %g, want %g", when, i, (double)c->w[i], (double)want);
        }
    }
}

static void test_schedule_sync_step(void **state)
{
    (void)state;
    static float ones[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        ones[i] = 1.0f;
    }
    srv_store_t s;
    sched_probe_t p;
    srv_chunk_t *c = sched_store(&s, &p, 1, PS_MODE_SYNC, 0);
    for (uint64_t t = 0; t < 9; t++) {
        assert_int_equal(srv_store_push(&s, c, 0, t, t, 1, ones, NULL), 1);
        char when[32];
        snprintf(when, sizeof when, "after update %d", (int)t);
        assert_all(c, w_after[t], when);
    }
    assert_int_equal(p.nasked, 9);
    for (int t = 0; t < 9; t++) {
        assert_int_equal(p.asked[t], t);
    }
    srv_store_fini(&s);
}

/* ssp: steps held out of order complete together, each at its own t. */
static void test_schedule_ssp_held_steps(void **state)
{
    (void)state;
    static float ones[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        ones[i] = 1.0f;
    }
    srv_store_t s;
    sched_probe_t p;
    srv_chunk_t *c = sched_store(&s, &p, 2, PS_MODE_SSP, 2);
    for (uint64_t e = 0; e < 3; e++) {
        /* Worker 0 runs a whole epoch ahead; worker 1 sends it backwards,
         * so its last push (the epoch's first step) applies all three. */
        for (uint64_t j = 0; j < 3; j++) {
            assert_int_equal(srv_store_push(&s, c, 0, 3 * e + j, 3 * e, 1, ones, NULL), 0);
        }
        assert_int_equal(srv_store_push(&s, c, 1, 3 * e + 2, 3 * e, 1, ones, NULL), 0);
        assert_int_equal(srv_store_push(&s, c, 1, 3 * e + 1, 3 * e, 1, ones, NULL), 0);
        assert_int_equal(srv_store_push(&s, c, 1, 3 * e, 3 * e, 1, ones, NULL), 3);
        assert_all(c, w_after[3 * e + 2], "after an epoch");
    }
    assert_int_equal(p.nasked, 9);
    for (int t = 0; t < 9; t++) {
        assert_int_equal(p.asked[t], t);
    }
    srv_store_fini(&s);
}

/* async: the rate of the pushing worker's step, not of the version. */
static void test_schedule_async_worker_step(void **state)
{
    (void)state;
    static float ones[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        ones[i] = 1.0f;
    }
    srv_store_t s;
    sched_probe_t p;
    srv_chunk_t *c = sched_store(&s, &p, 2, PS_MODE_ASYNC, 0);
    /* (worker, step): rates 0.5, 0.25, 0.25, 0.125 by the table above; the
     * versions 0..3 would give 0.5, 0.5, 0.5, 0.25 instead. */
    static const int who[4] = {0, 1, 0, 1};
    static const uint64_t step[4] = {2, 3, 5, 6};
    static const float want[4] = {-0.5f, -0.75f, -1.0f, -1.125f};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(srv_store_push(&s, c, who[k], step[k], 0, 1, ones, NULL), 1);
        assert_all(c, want[k], "after an async push");
        assert_int_equal(p.asked[k], step[k]);
    }
    srv_store_fini(&s);
}

/* ---- zero-copy readers hold updates back -----------------------------------
 *
 * A pull reply in flight reads the chunk's weights from a zmq I/O thread
 * (zero-copy) and holds a reference until zmq lets go of it.  The reference
 * is taken here by hand and a second thread pushes the step that completes
 * an update: while the reference is held the weights must stay as they
 * were, bit for bit, and the push must not return; once it is released the
 * update goes through with the hand-derived result.  (A store whose update
 * does not wait changes w under the reader's feet and fails here.)
 */
typedef struct {
    srv_store_t *s;
    srv_chunk_t *c;
    int w;
    uint64_t step;
    const float *g;
    int own;
    int rv;
    atomic_int done;
} pusher_t;

static void *push_thread(void *arg)
{
    pusher_t *p = arg;
    p->rv = srv_store_push(p->s, p->c, p->w, p->step, p->step, 1, p->g, &p->own);
    atomic_store(&p->done, 1);
    return NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Sync (one worker, so its push completes the step) and async. */
static void test_update_waits_for_readers(void **state)
{
    (void)state;
    static const ps_mode_t modes[2] = {PS_MODE_SYNC, PS_MODE_ASYNC};
    for (int k = 0; k < 2; k++) {
        srv_store_t s;
        store_new(&s, 0, 1, 1, (srv_optim_cfg_t){.lr = 0.5}, 1400);
        assert_int_equal(srv_store_set_mode(&s, modes[k], 0), 0);
        srv_chunk_t *c = srv_store_chunk(&s, 0);
        float w0[MAXN], g[MAXN], want[MAXN];
        memcpy(w0, c->w, c->count * sizeof(float));
        fill(g, c->count, 141);
        for (size_t i = 0; i < c->count; i++) {
            want[i] = fmaf(g[i], -0.5f, w0[i]);
        }
        srv_store_ref(c); /* a reply in flight */
        pusher_t p = {.s = &s, .c = c, .g = g, .rv = -100};
        atomic_init(&p.done, 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, push_thread, &p), 0);
        sleep_ms(200);
        int early = atomic_load(&p.done);
        int same = memcmp(c->w, w0, c->count * sizeof(float)) == 0;
        srv_store_unref(c);
        pthread_join(t, NULL);
        if (early || !same) {
            fail_msg("%s: the update %s while a reader held the chunk",
                     modes[k] == PS_MODE_SYNC ? "sync" : "async",
                     !same ? "changed the weights" : "returned");
        }
        assert_int_equal(p.rv, 1);
        assert_true(c->version == 1);
        assert_bits(c->w, want, c->count);
        srv_store_fini(&s);
        assert_int_equal(p.own, 1);
    }
}

/* The wait is bounded: a reference never released (a reply whose free
 * callback never runs) makes the update fail after the bound with
 * PS_ETIMEDOUT and a message naming the chunk and its tensor, instead of
 * hanging; the weights and the version stay, the push stays held (sync)
 * or is released (async). */
static void test_update_wait_bounded(void **state)
{
    (void)state;
    static const ps_mode_t modes[2] = {PS_MODE_SYNC, PS_MODE_ASYNC};
    for (int k = 0; k < 2; k++) {
        srv_store_t s;
        store_new(&s, 0, 1, 1, (srv_optim_cfg_t){.lr = 0.5}, 1450);
        assert_int_equal(srv_store_set_mode(&s, modes[k], 0), 0);
        srv_store_set_ref_wait(&s, 200, NULL, NULL);
        srv_chunk_t *c = srv_store_chunk(&s, 2);
        float w0[MAXN], g[MAXN];
        int own = 0;
        memcpy(w0, c->w, c->count * sizeof(float));
        fill(g, c->count, 145);
        srv_store_ref(c);
        ps_error_clear();
        assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &own), PS_ETIMEDOUT);
        const char *msg = ps_error_msg();
        if (!strstr(msg, "chunk 2") || !strstr(msg, "tensor w")) {
            fail_msg("the message does not name chunk 2 of tensor w: %s", msg);
        }
        assert_true(c->version == 0);
        assert_bits(c->w, w0, c->count);
        assert_int_equal(own, modes[k] == PS_MODE_ASYNC ? 1 : 0);
        srv_store_unref(c);
        srv_store_fini(&s);
        assert_int_equal(own, 1);
    }
}

/* While it waits, the update runs the idle callback on its own thread
 * every few milliseconds (the server's lets its socket drop replies queued
 * to peers that have gone, which gives their references back).  Here the
 * third call drops the reference: the update then goes through. */
typedef struct {
    srv_chunk_t *c;
    int calls;
} idle_probe_t;

static void idle_release(void *arg)
{
    idle_probe_t *p = arg;
    if (++p->calls == 3) {
        srv_store_unref(p->c);
    }
}

static void test_update_wait_runs_idle(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 1, (srv_optim_cfg_t){.lr = 0.5}, 1460);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    idle_probe_t p = {.c = c};
    srv_store_set_ref_wait(&s, 5000, idle_release, &p);
    float w0[MAXN], g[MAXN], want[MAXN];
    int own = 0;
    memcpy(w0, c->w, c->count * sizeof(float));
    fill(g, c->count, 146);
    for (size_t i = 0; i < c->count; i++) {
        want[i] = fmaf(g[i], -0.5f, w0[i]);
    }
    srv_store_ref(c);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &own), 1);
    assert_int_equal(p.calls, 3);
    assert_bits(c->w, want, c->count);
    srv_store_fini(&s);
    assert_int_equal(own, 1);
}

/* ---- replays ----------------------------------------------------------------
 *
 * Async keeps, per chunk and worker, the step after the worker's latest
 * push: a push for a step at or below one already taken (a replay) is
 * refused with PS_ESTATE and stays the caller's.  Skip pushes count as
 * taken too.  In ssp a replay of a held step is a duplicate as well, and
 * of an applied step out of the window.
 */
static void test_async_replay(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 1500);
    assert_int_equal(srv_store_set_mode(&s, PS_MODE_ASYNC, 0), 0);
    srv_chunk_t *c = srv_store_chunk(&s, 0);
    float w0[MAXN], g[MAXN], want[MAXN];
    int own = 0, replay = 0;
    memcpy(w0, c->w, c->count * sizeof(float));
    fill(g, c->count, 151);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &own), 1);
    ps_error_clear();
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &replay), PS_ESTATE);
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &replay), PS_ESTATE);
    assert_true(c->version == 1);
    for (size_t i = 0; i < c->count; i++) {
        want[i] = fmaf(g[i], -0.5f, w0[i]);
    }
    assert_bits(c->w, want, c->count);
    /* Worker 1's step 0 is its own; worker 0's next steps are new. */
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 1, g, &own), 1);
    assert_int_equal(srv_store_push(&s, c, 0, 5, 1, 1, g, &own), 1);
    assert_int_equal(srv_store_push(&s, c, 0, 3, 1, 1, g, &replay), PS_ESTATE);
    assert_int_equal(srv_store_push_skip(&s, c, 0, 6, 1), 0);
    assert_int_equal(srv_store_push_skip(&s, c, 0, 6, 1), PS_ESTATE);
    assert_int_equal(srv_store_push(&s, c, 0, 6, 1, 1, g, &replay), PS_ESTATE);
    assert_true(c->version == 3);
    assert_int_equal(replay, 0); /* refused pushes stay the caller's */
    assert_int_equal(own, 3);
    srv_store_fini(&s);

    /* ssp, staleness 2: worker 0 pushes steps 0 and 1 (held); replays of
     * either are duplicates; once step 0 is applied its replay is late. */
    store_new(&s, 0, 1, 2, (srv_optim_cfg_t){.lr = 0.5}, 1501);
    assert_int_equal(srv_store_set_mode(&s, PS_MODE_SSP, 2), 0);
    c = srv_store_chunk(&s, 0);
    own = 0;
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &own), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 1, 0, 1, g, &own), 0);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &replay), PS_ESTATE);
    assert_int_equal(srv_store_push(&s, c, 0, 1, 0, 1, g, &replay), PS_ESTATE);
    assert_int_equal(srv_store_push(&s, c, 1, 0, 0, 1, g, &own), 1);
    assert_int_equal(srv_store_push(&s, c, 0, 0, 0, 1, g, &replay), PS_ERANGE);
    assert_true(c->version == 1);
    srv_store_fini(&s);
    assert_int_equal(replay, 0);
    assert_int_equal(own, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_chunks),
        cmocka_unit_test(test_tensor_options),
        cmocka_unit_test(test_init_refused),
        cmocka_unit_test(test_set_init),
        cmocka_unit_test(test_weighted_mean_plain),
        cmocka_unit_test(test_inexact_coefficients),
        cmocka_unit_test(test_large_sample_counts),
        cmocka_unit_test(test_arrival_order_two),
        cmocka_unit_test(test_arrival_order_three),
        cmocka_unit_test(test_wrong_step),
        cmocka_unit_test(test_duplicate_push),
        cmocka_unit_test(test_release_at_fini),
        cmocka_unit_test(test_no_release_callback),
        cmocka_unit_test(test_zero_sample_worker_excluded),
        cmocka_unit_test(test_all_zero_samples),
        cmocka_unit_test(test_zero_step_is_not_first_update),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_momentum_two_steps),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_skip_drops_step),
        cmocka_unit_test(test_ssp_window),
        cmocka_unit_test(test_async_applies_each_push),
        cmocka_unit_test(test_schedule_sync_step),
        cmocka_unit_test(test_schedule_ssp_held_steps),
        cmocka_unit_test(test_schedule_async_worker_step),
        cmocka_unit_test(test_update_waits_for_readers),
        cmocka_unit_test(test_update_wait_bounded),
        cmocka_unit_test(test_update_wait_runs_idle),
        cmocka_unit_test(test_async_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
