/*
 * Unit tests for server/srv_table (lazy mode, combination of parts,
 * import/export, the memory bound, deterministic init, bad input) and
 * server/srv_rowmap.  Exact mode against a dense reference is in
 * test_table_exact.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_rng.h"
#include "srv_optim.h"
#include "srv_rowmap.h"
#include "srv_table.h"

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

static srv_table_t *new_table(const char *name, uint32_t dim, const srv_optim_cfg_t *c,
                              srv_sparse_mode_t mode, size_t max_bytes)
{
    srv_table_init_t init = {.kind = SRV_TABLE_INIT_UNIFORM, .bound = 0.5f, .seed = 11};
    srv_table_t *t = NULL;
    assert_int_equal(srv_table_new(&t, name, 3, dim, &init, c, mode, max_bytes), 0);
    return t;
}

/* ---- lazy ------------------------------------------------------------------ */

#define LK 20
#define LD 2

/*
 * The lazy rule written out per element (torch form, srv_optim.h's
 * rounding): rows absent from a step do not move at all; a row's first
 * update sets buf = g.  g combines the parts holding the row, rank order.
 */
typedef struct {
    float w[LK][LD], b[LK][LD];
    int has_buf[LK];
} lazy_ref_t;

static void lazy_ref_step(lazy_ref_t *r, const srv_optim_cfg_t *c, double lr, const float *g_in,
                          const int *in_count, int nparts, const float *coef)
{
    (void)nparts;
    float mom = (float)c->momentum, omd = (float)(1.0 - c->dampening);
    float wd = (float)c->weight_decay, neglr = (float)(-lr);
    for (int i = 0; i < LK; i++) {
        if (in_count[i] == 0) {
            continue;
        }
        for (int j = 0; j < LD; j++) {
            /* g_in[(k*LK + i)*LD + j], only parts holding row i, in order */
            float g = 0.0f;
            int seen = 0;
            for (int k = 0; k < 3; k++) {
                float p = g_in[(k * LK + i) * LD + j];
                if (!isnan(p)) {
                    g = seen ? g + p * coef[k] : p * coef[k];
                    seen = 1;
                }
            }
            g = fmaf(r->w[i][j], wd, g);
            float b = r->has_buf[i] ? fmaf(g, omd, r->b[i][j] * mom) : g;
            r->b[i][j] = b;
            float d = c->nesterov ? fmaf(b, mom, g) : b;
            r->w[i][j] = fmaf(d, neglr, r->w[i][j]);
        }
        r->has_buf[i] = 1;
    }
}

static void run_lazy(const srv_optim_cfg_t *c)
{
    srv_table_t *t = new_table("lazy", LD, c, SRV_SPARSE_LAZY, 0);
    srv_table_init_t init = {.kind = SRV_TABLE_INIT_UNIFORM, .bound = 0.5f, .seed = 11};
    lazy_ref_t r = {0};
    uint64_t keys[LK];
    for (int i = 0; i < LK; i++) {
        keys[i] = (uint64_t)i * 0x100000001ULL; /* ascending, above 2^32 */
        srv_table_init_row(&init, 3, keys[i], LD, r.w[i]);
    }
    ps_rng_t rng;
    ps_rng_seed(&rng, 99, 0);
    for (int s = 0; s < 60; s++) {
        uint64_t pk[3][LK];
        float pg[3][LK * LD], dense[3 * LK * LD], coef[3] = {0.5f, 0.25f, 0.25f};
        int cnt[LK] = {0};
        srv_rows_part_t parts[3];
        for (int k = 0; k < 3; k++) {
            size_t n = 0;
            for (int i = 0; i < LK; i++) {
                int in = ps_rng_uniform(&rng) < 0.2f;
                for (int j = 0; j < LD; j++) {
                    /* a pushed zero counts; NaN marks "not in this part" */
                    float g = in ? (s % 5 == 0 ? 0.0f : ps_rng_uniform(&rng) - 0.5f) : NAN;
                    dense[(k * LK + i) * LD + j] = g;
                    if (in) {
                        pg[k][n * LD + j] = g;
                    }
                }
                if (in) {
                    pk[k][n++] = keys[i];
                    cnt[i]++;
                }
            }
            parts[k] = (srv_rows_part_t){pk[k], n, pg[k], coef[k]};
        }
        double lr = 0.1 + 0.01 * (s % 4);
        assert_int_equal(srv_table_apply(t, parts, 3, lr), 0);
        lazy_ref_step(&r, c, lr, dense, cnt, 3, coef);
    }
    float out[LK * LD];
    assert_int_equal(srv_table_read(t, keys, LK, out), 0);
    for (int i = 0; i < LK; i++) {
        for (int j = 0; j < LD; j++) {
            assert_bits(out[i * LD + j], r.w[i][j]);
        }
    }
    uint64_t *ek;
    float *ew, *eb;
    size_t n;
    assert_int_equal(srv_table_export(t, &ek, &ew, &eb, &n), 0);
    assert_int_equal(n, LK);
    for (int i = 0; i < LK; i++) {
        assert_true(ek[i] == keys[i]);
        for (int j = 0; j < LD; j++) {
            assert_bits(eb[i * LD + j], r.has_buf[i] ? r.b[i][j] : 0.0f);
        }
    }
    free(ek);
    free(ew);
    free(eb);
    srv_table_destroy(&t);
}

static void test_lazy_plain(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .dampening = 0.2, .weight_decay = 0.01};
    run_lazy(&c);
}

static void test_lazy_nesterov(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .nesterov = 1, .weight_decay = 0.05};
    run_lazy(&c);
}

/* A lazy row nobody pushes never moves, whatever the decay. */
static void test_lazy_untouched_rows_stay(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 0.5, .decoupled_wd = 0.5};
    srv_table_t *t = new_table("lazy", 4, &c, SRV_SPARSE_LAZY, 0);
    uint64_t quiet = 77, busy = 78;
    float before[4], after[4], g[4] = {1, 2, 3, 4};
    assert_int_equal(srv_table_read(t, &quiet, 1, before), 0);
    srv_rows_part_t p = {&busy, 1, g, 1.0f};
    for (int s = 0; s < 10; s++) {
        assert_int_equal(srv_table_apply(t, &p, 1, 0.1), 0);
    }
    assert_int_equal(srv_table_read(t, &quiet, 1, after), 0);
    assert_memory_equal(before, after, sizeof before);
    assert_int_equal(srv_table_step(t), 10);
    srv_table_destroy(&t);
}

/* ---- combination ------------------------------------------------------------ */

/* Parts combine in rank order, products rounded, a part without the key
 * contributing nothing (plain SGD, lr 1, zero init: w = -g). */
static void test_combination_rank_order(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 1.0};
    srv_table_init_t zeros = {0};
    for (int mode = 0; mode < 2; mode++) {
        srv_table_t *t = NULL;
        assert_int_equal(srv_table_new(&t, "c", 0, 1, &zeros, &c, (srv_sparse_mode_t)mode, 0), 0);
        uint64_t k0[2] = {1, 2}, k1[1] = {1}, k2[2] = {1, 2};
        float g0[2] = {1e8f, 3.0f}, g1[1] = {1.0f}, g2[2] = {-1e8f, 5.0f};
        srv_rows_part_t parts[3] = {{k0, 2, g0, 1.0f}, {k1, 1, g1, 1.0f}, {k2, 2, g2, 1.0f}};
        assert_int_equal(srv_table_apply(t, parts, 3, 1.0), 0);
        float out[2];
        uint64_t keys[2] = {1, 2};
        assert_int_equal(srv_table_read(t, keys, 2, out), 0);
        /* key 1: (1e8 + 1) + -1e8 = 1e8 - 1e8 = 0 in float (another order
         * would give 1); key 2: 3 + 5 = 8 */
        assert_bits(out[0], 0.0f);
        assert_bits(out[1], -8.0f);
        srv_table_destroy(&t);
    }
}

/* Coefficients: each product rounded on its own. */
static void test_combination_coefficients(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.lr = 1.0};
    srv_table_init_t zeros = {0};
    srv_table_t *t = NULL;
    assert_int_equal(srv_table_new(&t, "c", 0, 1, &zeros, &c, SRV_SPARSE_EXACT, 0), 0);
    uint64_t ka = 5, kb = 5;
    float ga = 1.0f + 0x1p-23f, gb = 3.0f;
    float ca = 1.0f / 3.0f, cb = 2.0f / 3.0f;
    srv_rows_part_t parts[2] = {{&ka, 1, &ga, ca}, {&kb, 1, &gb, cb}};
    assert_int_equal(srv_table_apply(t, parts, 2, 1.0), 0);
    float out;
    assert_int_equal(srv_table_read(t, &ka, 1, &out), 0);
    float pa = ga * ca, pb = gb * cb;
    float want = -(pa + pb);
    assert_bits(out, want);
    srv_table_destroy(&t);
}

/* ---- import / export ------------------------------------------------------------ */

static void export_all(srv_table_t *t, uint64_t **k, float **w, float **b, size_t *n)
{
    assert_int_equal(srv_table_export(t, k, w, b, n), 0);
}

/* Drive two tables with the same steps (keys from a growing range). */
static void same_steps(srv_table_t *a, srv_table_t *b, int from, int to)
{
    for (int s = from; s < to; s++) {
        uint64_t keys[6];
        float g[6 * 2];
        for (int i = 0; i < 6; i++) {
            keys[i] = ((uint64_t)(s * 3 + i * 5) << 34) + (uint64_t)i;
            g[2 * i] = (float)(i - s % 3) * 0.25f;
            g[2 * i + 1] = 0.5f;
        }
        srv_rows_part_t p = {keys, 6, g, 0.5f};
        double lr = 0.05 * (1 + s % 3);
        assert_int_equal(srv_table_apply(a, &p, 1, lr), 0);
        if (b != NULL) {
            assert_int_equal(srv_table_apply(b, &p, 1, lr), 0);
        }
    }
}

static void round_trip(srv_sparse_mode_t mode)
{
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 0.01};
    srv_table_t *a = new_table("rt", 2, &c, mode, 0);
    same_steps(a, NULL, 0, 20);
    uint64_t *k1, *k2;
    float *w1, *w2, *b1, *b2;
    size_t n1, n2;
    export_all(a, &k1, &w1, &b1, &n1);
    assert_true(n1 > 20);
    srv_table_t *b = new_table("rt", 2, &c, mode, 0);
    assert_int_equal(srv_table_import(b, k1, w1, b1, n1, 20), 0);
    if (mode == SRV_SPARSE_EXACT) {
        double lrs[20];
        for (int s = 0; s < 20; s++) {
            lrs[s] = 0.05 * (1 + s % 3);
        }
        assert_int_equal(srv_table_import_history(b, lrs, 20), 0);
    }
    assert_int_equal(srv_table_step(b), 20);
    export_all(b, &k2, &w2, &b2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(k1, k2, n1 * sizeof *k1);
    assert_memory_equal(w1, w2, n1 * 2 * sizeof *w1);
    assert_memory_equal(b1, b2, n1 * 2 * sizeof *b1);
    free(k1), free(k2), free(w1), free(w2), free(b1), free(b2);
    /* The raw state (a checkpoint) imported into c: continuing a, b (lazy
     * only: exact catch-up from caught-up values rounds differently) and c
     * the same way (new rows too) stays identical to a table that was
     * never exported, imported or read (twin). */
    srv_table_t *c2 = new_table("rt", 2, &c, mode, 0);
    srv_table_t *twin = new_table("rt", 2, &c, mode, 0);
    same_steps(twin, NULL, 0, 20);
    uint64_t *ks, *last;
    float *ws, *bs;
    size_t ns;
    assert_int_equal(srv_table_export_state(a, &ks, &ws, &bs, &last, &ns), 0);
    double lrs[20];
    for (int s = 0; s < 20; s++) {
        lrs[s] = 0.05 * (1 + s % 3);
    }
    assert_int_equal(srv_table_import_state(c2, ks, ws, bs, last, ns, 20, lrs), 0);
    free(ks), free(ws), free(bs), free(last);
    same_steps(a, c2, 20, 40);
    same_steps(twin, mode == SRV_SPARSE_LAZY ? b : NULL, 20, 40);
    srv_table_t *cmp[3] = {a, c2, b};
    export_all(twin, &k1, &w1, &b1, &n1);
    for (int j = 0; j < (mode == SRV_SPARSE_LAZY ? 3 : 2); j++) {
        export_all(cmp[j], &k2, &w2, &b2, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(k1, k2, n1 * sizeof *k1);
        assert_memory_equal(w1, w2, n1 * 2 * sizeof *w1);
        assert_memory_equal(b1, b2, n1 * 2 * sizeof *b1);
        free(k2), free(w2), free(b2);
    }
    free(k1), free(w1), free(b1);
    /* Import only into an empty table. */
    assert_int_equal(srv_table_import(b, NULL, NULL, NULL, 0, 3), PS_ESTATE);
    assert_int_equal(srv_table_import_state(c2, NULL, NULL, NULL, NULL, 0, 3, lrs), PS_ESTATE);
    srv_table_destroy(&a);
    srv_table_destroy(&b);
    srv_table_destroy(&c2);
    srv_table_destroy(&twin);
}

static void test_round_trip_exact(void **state)
{
    (void)state;
    round_trip(SRV_SPARSE_EXACT);
}

static void test_round_trip_lazy(void **state)
{
    (void)state;
    round_trip(SRV_SPARSE_LAZY);
}

/*
 * Reads (of existing and of new keys) and exports between steps do not
 * change a table's later bits: compared with a twin never read, bit for
 * bit (uniform init, weight decay, momentum: every catch-up path rounds).
 */
static void reads_do_not_move(srv_sparse_mode_t mode)
{
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 0.01, .dampening = 0.1};
    srv_table_t *a = new_table("rd", 2, &c, mode, 0);
    srv_table_t *twin = new_table("rd", 2, &c, mode, 0);
    for (int s = 0; s < 30; s++) {
        same_steps(a, twin, s, s + 1);
        /* keys of earlier and of later steps (the later ones are new) */
        uint64_t keys[4] = {((uint64_t)(s * 3) << 34), ((uint64_t)(s * 3 + 5) << 34) + 1,
                            ((uint64_t)(s * 3 + 12) << 34) + 2, ((uint64_t)(s * 3 + 14) << 34)};
        float out[4 * 2];
        assert_int_equal(srv_table_read(a, keys, 4, out), 0);
        if (s % 4 == 1) {
            uint64_t *k;
            float *w, *b;
            size_t n;
            export_all(a, &k, &w, &b, &n);
            free(k), free(w), free(b);
        }
    }
    uint64_t *k1, *k2;
    float *w1, *w2, *b1, *b2;
    size_t n1, n2;
    export_all(twin, &k1, &w1, &b1, &n1);
    export_all(a, &k2, &w2, &b2, &n2);
    assert_true(n2 > n1); /* the reads created rows */
    /* every row of the twin is in a, with the same bits */
    size_t j = 0;
    for (size_t i = 0; i < n1; i++) {
        while (j < n2 && k2[j] < k1[i]) {
            j++;
        }
        assert_true(j < n2 && k2[j] == k1[i]);
        assert_memory_equal(w1 + 2 * i, w2 + 2 * j, 2 * sizeof *w1);
        assert_memory_equal(b1 + 2 * i, b2 + 2 * j, 2 * sizeof *b1);
    }
    free(k1), free(k2), free(w1), free(w2), free(b1), free(b2);
    srv_table_destroy(&a);
    srv_table_destroy(&twin);
}

static void test_reads_do_not_move_exact(void **state)
{
    (void)state;
    reads_do_not_move(SRV_SPARSE_EXACT);
}

static void test_reads_do_not_move_lazy(void **state)
{
    (void)state;
    reads_do_not_move(SRV_SPARSE_LAZY);
}

static void test_import_refuses_unsorted(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9};
    srv_table_t *t = new_table("imp", 1, &c, SRV_SPARSE_EXACT, 0);
    uint64_t k[3] = {1, 3, 3};
    float w[3] = {0};
    assert_int_equal(srv_table_import(t, k, w, NULL, 3, 5), PS_EINVAL);
    assert_int_equal(srv_table_rows(t), 0);
    assert_non_null(strstr(ps_error_msg(), "imp"));
    srv_table_destroy(&t);
}

static void test_export_empty_and_no_momentum(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.weight_decay = 0.1};
    srv_table_t *t = new_table("e", 3, &c, SRV_SPARSE_EXACT, 0);
    uint64_t *k;
    float *w, *b;
    size_t n = 7;
    export_all(t, &k, &w, &b, &n);
    assert_int_equal(n, 0);
    assert_null(k);
    uint64_t key = 9;
    float out[3];
    assert_int_equal(srv_table_read(t, &key, 1, out), 0);
    export_all(t, &k, &w, &b, &n);
    assert_int_equal(n, 1);
    assert_null(b);
    assert_memory_equal(w, out, sizeof out);
    free(k), free(w);
    srv_table_destroy(&t);
}

/* ---- the memory bound -------------------------------------------------------------- */

static void test_max_bytes_refusal(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9};
    /* Learn the size of a table with 5000 rows, then bound a new one a
     * little above it. */
    srv_table_t *probe = new_table("probe", 4, &c, SRV_SPARSE_EXACT, 0);
    uint64_t keys[6000];
    for (int i = 0; i < 6000; i++) {
        keys[i] = ((uint64_t)i << 40) + (uint64_t)i * 977; /* ascending */
    }
    float *out = malloc(6000 * 4 * sizeof *out);
    assert_non_null(out);
    assert_int_equal(srv_table_read(probe, keys, 5000, out), 0);
    size_t bound = srv_table_bytes(probe) + 100;
    srv_table_destroy(&probe);

    srv_table_t *t = new_table("emb.weight", 4, &c, SRV_SPARSE_EXACT, bound);
    assert_int_equal(srv_table_read(t, keys, 5000, out), 0);
    assert_true(srv_table_bytes(t) <= bound);
    float g[1000 * 4];
    for (int i = 0; i < 4000; i++) {
        g[i] = 1.0f;
    }
    srv_rows_part_t p = {keys + 4500, 1000, g, 1.0f}; /* 500 new rows: past the bound */
    uint64_t *k1, *k2;
    float *w1, *w2, *b1, *b2;
    size_t n1, n2;
    export_all(t, &k1, &w1, &b1, &n1);
    size_t bytes = srv_table_bytes(t);
    assert_int_equal(srv_table_apply(t, &p, 1, 0.1), PS_ENOMEM);
    assert_non_null(strstr(ps_error_msg(), "emb.weight"));
    assert_non_null(strstr(ps_error_msg(), "5000 rows"));
    assert_int_equal(srv_table_read(t, keys + 4500, 1000, out), PS_ENOMEM);
    /* Nothing changed: rows, step, bytes and every value. */
    assert_int_equal(srv_table_rows(t), 5000);
    assert_int_equal(srv_table_step(t), 0);
    assert_int_equal(srv_table_bytes(t), bytes);
    export_all(t, &k2, &w2, &b2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(k1, k2, n1 * sizeof *k1);
    assert_memory_equal(w1, w2, n1 * 4 * sizeof *w1);
    assert_memory_equal(b1, b2, n1 * 4 * sizeof *b1);
    /* Known rows still update. */
    p.keys = keys;
    assert_int_equal(srv_table_apply(t, &p, 1, 0.1), 0);
    free(k1), free(k2), free(w1), free(w2), free(b1), free(b2);
    free(out);
    srv_table_destroy(&t);
}

/* ---- init ---------------------------------------------------------------------- */

static void test_init_independent_of_order(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.5};
    srv_table_t *a = new_table("i", 5, &c, SRV_SPARSE_EXACT, 0);
    srv_table_t *b = new_table("i", 5, &c, SRV_SPARSE_EXACT, 0);
    uint64_t keys[300];
    for (int i = 0; i < 300; i++) {
        keys[i] = (uint64_t)i * i * 1000003ULL + ((uint64_t)i << 40);
    }
    float oa[300 * 5], ob[300 * 5];
    assert_int_equal(srv_table_read(a, keys, 300, oa), 0);
    /* b sees the keys in another order, a few at a time, duplicates too. */
    for (int i = 299; i >= 0; i -= 3) {
        uint64_t k3[3] = {keys[i], keys[i], keys[i > 0 ? i - 1 : 0]};
        float o3[15];
        assert_int_equal(srv_table_read(b, k3, 3, o3), 0);
    }
    assert_int_equal(srv_table_read(b, keys, 300, ob), 0);
    assert_memory_equal(oa, ob, sizeof oa);
    /* Pure function of (seed, table, key): and really random-looking. */
    srv_table_init_t init = {.kind = SRV_TABLE_INIT_UNIFORM, .bound = 0.5f, .seed = 11};
    float one[5], other_table[5], other_seed[5];
    srv_table_init_row(&init, 3, keys[7], 5, one);
    assert_memory_equal(one, oa + 7 * 5, sizeof one);
    srv_table_init_row(&init, 4, keys[7], 5, other_table);
    init.seed = 12;
    srv_table_init_row(&init, 3, keys[7], 5, other_seed);
    assert_memory_not_equal(one, other_table, sizeof one);
    assert_memory_not_equal(one, other_seed, sizeof one);
    double sum = 0.0;
    for (int i = 0; i < 300 * 5; i++) {
        assert_true(oa[i] >= -0.5f && oa[i] <= 0.5f);
        sum += oa[i];
    }
    assert_true(fabs(sum / 1500.0) < 0.05); /* mean 0, sd 0.29/sqrt(1500) */
    srv_table_destroy(&a);
    srv_table_destroy(&b);
}

static void test_init_zeros(void **state)
{
    (void)state;
    srv_table_init_t z = {0};
    float out[4] = {1, 1, 1, 1};
    srv_table_init_row(&z, 1, 12345, 4, out);
    for (int i = 0; i < 4; i++) {
        assert_bits(out[i], 0.0f);
    }
}

/* ---- bad input --------------------------------------------------------------------- */

static void test_bad_input(void **state)
{
    (void)state;
    srv_optim_cfg_t c = {.momentum = 0.9};
    srv_table_t *t = NULL;
    srv_table_init_t bad = {.kind = SRV_TABLE_INIT_UNIFORM, .bound = NAN};
    assert_int_equal(srv_table_new(&t, "x", 0, 0, NULL, &c, SRV_SPARSE_EXACT, 0), PS_EINVAL);
    assert_int_equal(srv_table_new(&t, "x", 0, 2, &bad, &c, SRV_SPARSE_EXACT, 0), PS_EINVAL);
    srv_optim_cfg_t neg = {.momentum = -1};
    assert_int_equal(srv_table_new(&t, "x", 0, 2, NULL, &neg, SRV_SPARSE_EXACT, 0), PS_EINVAL);
    assert_int_equal(srv_table_new(&t, "x", 0, 2, NULL, &c, SRV_SPARSE_EXACT, 10), PS_ENOMEM);
    assert_null(t);
    t = new_table("bad", 1, &c, SRV_SPARSE_EXACT, 0);
    uint64_t k[2] = {5, 4};
    float g[2] = {1, 1};
    srv_rows_part_t p = {k, 2, g, 1.0f};
    assert_int_equal(srv_table_apply(t, &p, 1, 0.1), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "ascending"));
    k[1] = 6;
    assert_int_equal(srv_table_apply(t, &p, 1, -0.1), PS_EINVAL);
    assert_int_equal(srv_table_apply(t, &p, 1, NAN), PS_EINVAL);
    assert_int_equal(srv_table_rows(t), 0);
    assert_int_equal(srv_table_step(t), 0);
    /* No parts at all is a step too (every exact row moves). */
    assert_int_equal(srv_table_apply(t, NULL, 0, 0.1), 0);
    assert_int_equal(srv_table_step(t), 1);
    srv_table_destroy(&t);
}

/* ---- row map ----------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void test_rowmap(void **state)
{
    (void)state;
    enum { N = 1000000 };
    srv_rowmap_t *m = NULL;
    assert_int_equal(srv_rowmap_new(&m), 0);
    uint64_t *keys = malloc(N * sizeof *keys), *got = malloc(N * sizeof *got);
    uint32_t *idx = malloc(N * sizeof *idx);
    assert_non_null(keys);
    assert_non_null(got);
    assert_non_null(idx);
    ps_rng_t rng;
    ps_rng_seed(&rng, 5, 5);
    for (size_t i = 0; i < N; i++) {
        /* random 64-bit keys, plus the extremes and keys that differ only
         * in their low bits (same sub-table and fingerprint is unlikely,
         * so also keys that differ in one high bit) */
        keys[i] = i == 0 ? 0 : i == 1 ? UINT64_MAX : i < 100 ? (uint64_t)i : ps_rng_next(&rng);
    }
    size_t after = srv_rowmap_bytes_after(m, keys, N / 2);
    for (size_t i = 0; i < N / 2; i++) {
        uint32_t r;
        assert_int_equal(srv_rowmap_insert(m, keys[i], &r), 0);
        assert_int_equal(r, i);
    }
    assert_int_equal(srv_rowmap_bytes(m), after);
    for (size_t i = N / 2; i < N; i++) {
        uint32_t r;
        assert_int_equal(srv_rowmap_find(m, keys[i]), SRV_ROWMAP_NONE);
        assert_int_equal(srv_rowmap_insert(m, keys[i], &r), 0);
    }
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(srv_rowmap_find(m, keys[i]), i);
    }
    assert_int_equal(srv_rowmap_count(m), N);
    srv_rowmap_keys(m, got, idx);
    for (size_t i = 0; i < N; i++) {
        assert_true(got[i] == keys[idx[i]]);
    }
    qsort(got, N, sizeof *got, cmp_u64);
    for (size_t i = 1; i < N; i++) {
        assert_true(got[i] > got[i - 1]);
    }
    /* About 12 bytes a key at this size: slots 8/load (load 0.74 .. 0.93),
     * 2 low bytes, the 1 MiB directory over 1M keys. */
    double per = (double)srv_rowmap_bytes(m) / N;
    printf("# row map: %.2f bytes per key at %d keys\n", per, N);
    assert_true(per < 8.0 / 0.74 + 2.0 + 1048576.0 / N + 0.5);
    srv_rowmap_destroy(&m);
    srv_rowmap_destroy(&m);
    free(keys), free(got), free(idx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy_plain),
        cmocka_unit_test(test_lazy_nesterov),
        cmocka_unit_test(test_lazy_untouched_rows_stay),
        cmocka_unit_test(test_combination_rank_order),
        cmocka_unit_test(test_combination_coefficients),
        cmocka_unit_test(test_round_trip_exact),
        cmocka_unit_test(test_round_trip_lazy),
        cmocka_unit_test(test_reads_do_not_move_exact),
        cmocka_unit_test(test_reads_do_not_move_lazy),
        cmocka_unit_test(test_import_refuses_unsorted),
        cmocka_unit_test(test_export_empty_and_no_momentum),
        cmocka_unit_test(test_max_bytes_refusal),
        cmocka_unit_test(test_init_independent_of_order),
        cmocka_unit_test(test_init_zeros),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_rowmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
