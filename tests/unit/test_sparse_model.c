/*
 * Unit tests for worker/wkr_sparse_model: logreg against hand-derived
 * values, both models' gradients against central finite differences of
 * the loss and against PyTorch autograd (/usr/bin/python3, skipped when
 * torch is missing), the batch's unique keys, the AUC against
 * hand-computed values (ties averaged), and the errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ps_err.h"
#include "ps_rng.h"
#include "unit_tmp.h"
#include "wkr_sparse_model.h"

#define K40 ((uint64_t)1 << 40)

/* Three LIBSVM-like rows, ids above 2^32, key K40 in two rows. */
static const size_t lr_rowptr[] = {0, 2, 4, 5};
static const uint64_t lr_keys[] = {5, K40, 7, K40, 9};
static const float lr_vals[] = {0.5f, 2.0f, -1.0f, 1.0f, 3.0f};
static const float lr_y[] = {1, 0, 1};

static wkr_sparse_ds_t lr_ds(void)
{
    wkr_sparse_ds_t ds = {.n = 3, .total = 3};
    ds.rowptr = (size_t *)lr_rowptr;
    ds.keys = (uint64_t *)lr_keys;
    ds.vals = (float *)lr_vals;
    ds.y = (float *)lr_y;
    return ds;
}

/* A key's row in the model's pulled rows. */
static float *row_of(wkr_sparse_model_t *m, uint64_t key)
{
    const uint64_t *k = wkr_sparse_model_keys(m);
    for (size_t i = 0; i < wkr_sparse_model_nkeys(m); i++) {
        if (k[i] == key) {
            return wkr_sparse_model_rows(m) + i * (size_t)wkr_sparse_model_dim(m);
        }
    }
    fail_msg("key %llu not in the batch", (unsigned long long)key);
    return NULL;
}

static void test_logreg_hand(void **state)
{
    (void)state;
    wkr_sparse_ds_t ds = lr_ds();
    wkr_sparse_model_t *m;
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_LOGREG, 0, NULL, 0, 4), 0);
    assert_string_equal(wkr_sparse_model_table(m), "fc1.weight");
    assert_int_equal(wkr_sparse_model_dim(m), 1);
    const ps_layout_t *l = wkr_sparse_model_layout(m);
    assert_int_equal(l->n, 1);
    assert_string_equal(l->t[0].name, "fc1.bias");
    uint32_t rows[] = {2, 0, 1};
    assert_int_equal(wkr_sparse_model_batch(m, &ds, rows, 3), 0);
    assert_int_equal(wkr_sparse_model_nkeys(m), 4);
    const uint64_t want_keys[] = {5, 7, 9, K40};
    assert_memory_equal(wkr_sparse_model_keys(m), want_keys, sizeof want_keys);
    /* w5 = 0.2, w7 = -0.4, w9 = 0.1, wK = 0.3, b = 0.05:
     * z(row2) = 0.05 + 0.1*3 = 0.35; z(row0) = 0.05 + 0.1 + 0.6 = 0.75;
     * z(row1) = 0.05 + 0.4 + 0.3 = 0.75. */
    *row_of(m, 5) = 0.2f;
    *row_of(m, 7) = -0.4f;
    *row_of(m, 9) = 0.1f;
    *row_of(m, K40) = 0.3f;
    wkr_sparse_model_params(m)[0] = 0.05f;
    double loss;
    assert_int_equal(wkr_sparse_model_train(m, 1.0f / 3.0f, &loss), 0);
    double s35 = 1 / (1 + exp(-0.35)), s75 = 1 / (1 + exp(-0.75));
    double want_loss = -log(s35) - log(s75) - log(1 - s75);
    assert_true(fabs(loss - want_loss) < 1e-5);
    /* dz: row2 (s35 - 1)/3, row0 (s75 - 1)/3, row1 s75/3. */
    double d2 = (s35 - 1) / 3, d0 = (s75 - 1) / 3, d1 = s75 / 3;
    double want_g[] = {d0 * 0.5, d1 * -1.0, d2 * 3.0, d0 * 2.0 + d1 * 1.0}; /* 5, 7, 9, K40 */
    const float *g = wkr_sparse_model_row_grads(m);
    for (int i = 0; i < 4; i++) {
        assert_true(fabs(g[i] - want_g[i]) < 1e-6);
    }
    assert_true(fabs(wkr_sparse_model_grads(m)[0] - (d0 + d1 + d2)) < 1e-6);
    wkr_sparse_model_destroy(&m);
    assert_null(m);
    wkr_sparse_model_destroy(&m);
}

/* ---- Criteo-like rows for embed-mlp ------------------------------------- */

#define EN 4
static size_t em_rowptr[EN + 1];
static uint64_t em_keys[EN * WKR_CRITEO_CATS];
static float em_dense[EN * WKR_CRITEO_INTS];
static const float em_y[EN] = {1, 0, 0, 1};

/* Fields present in row i: every field f with (f + i) % 3 != 0, values
 * drawn from a tiny vocabulary so rows share keys. */
static wkr_sparse_ds_t em_ds(void)
{
    ps_rng_t r;
    ps_rng_seed(&r, 42, 1);
    size_t e = 0;
    for (int i = 0; i < EN; i++) {
        em_rowptr[i] = e;
        for (uint64_t f = 1; f <= WKR_CRITEO_CATS; f++) {
            if ((f + (uint64_t)i) % 3 != 0) {
                em_keys[e++] = (f << 32) + 0xdeadbe00u + ps_rng_below(&r, 2);
            }
        }
        for (int k = 0; k < WKR_CRITEO_INTS; k++) {
            em_dense[i * WKR_CRITEO_INTS + k] = (float)log1p((double)ps_rng_below(&r, 50));
        }
    }
    em_rowptr[EN] = e;
    wkr_sparse_ds_t ds = {.n = EN, .total = EN, .ndense = WKR_CRITEO_INTS};
    ds.rowptr = em_rowptr;
    ds.keys = em_keys;
    ds.dense = em_dense;
    ds.y = (float *)em_y;
    return ds;
}

static void fill_rows(wkr_sparse_model_t *m, uint64_t seed)
{
    ps_rng_t r;
    ps_rng_seed(&r, seed, 2);
    size_t n = wkr_sparse_model_nkeys(m) * (size_t)wkr_sparse_model_dim(m);
    for (size_t i = 0; i < n; i++) {
        wkr_sparse_model_rows(m)[i] = ps_rng_uniform(&r) - 0.5f;
    }
}

static wkr_sparse_model_t *embed_model(const wkr_sparse_ds_t *ds, const uint32_t *rows, size_t n)
{
    wkr_sparse_model_t *m;
    int hidden[] = {6, 5};
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_EMBED_MLP, 3, hidden, 2, 8), 0);
    wkr_sparse_model_fill_weights(m, 0, 7);
    assert_int_equal(wkr_sparse_model_batch(m, ds, rows, n), 0);
    fill_rows(m, 3);
    return m;
}

/* Mean loss of the batch at the current parameters and rows. */
static double mean_loss(wkr_sparse_model_t *m, size_t n)
{
    float logits[16];
    double loss;
    assert_int_equal(wkr_sparse_model_predict(m, logits, &loss), 0);
    return loss / (double)n;
}

/* Central differences of the mean loss against the analytic gradient
 * g (scale 1/n) at the parameters p[0..count). */
static void fd_check(wkr_sparse_model_t *m, size_t n, float *p, const float *g, size_t count,
                     const char *what)
{
    const float eps = 1e-2f;
    for (size_t i = 0; i < count; i++) {
        float keep = p[i];
        p[i] = keep + eps;
        double up = mean_loss(m, n);
        p[i] = keep - eps;
        double down = mean_loss(m, n);
        p[i] = keep;
        double fd = (up - down) / (2.0 * (double)eps);
        if (fabs(fd - g[i]) > 2e-3 + 2e-2 * fabs(fd)) {
            fail_msg("%s[%zu]: analytic %.6g, finite difference %.6g", what, i, (double)g[i], fd);
        }
    }
}

static void test_embed_finite_diff(void **state)
{
    (void)state;
    wkr_sparse_ds_t ds = em_ds();
    uint32_t rows[] = {3, 1, 0, 2};
    wkr_sparse_model_t *m = embed_model(&ds, rows, EN);
    assert_int_equal(wkr_sparse_model_dim(m), 3);
    assert_string_equal(wkr_sparse_model_table(m), "emb.weight");
    const ps_layout_t *l = wkr_sparse_model_layout(m);
    assert_int_equal(l->n, 6);
    assert_string_equal(l->t[0].name, "fc1.weight");
    assert_int_equal(l->t[0].dims[0], 6);
    assert_int_equal(l->t[0].dims[1], 26 * 3 + 13);
    assert_string_equal(l->t[5].name, "fc3.bias");
    assert_int_equal(l->t[5].dims[0], 1);
    double loss;
    assert_int_equal(wkr_sparse_model_train(m, 1.0f / EN, &loss), 0);
    size_t nr = wkr_sparse_model_nkeys(m) * 3, np = l->total;
    float *rg = malloc(nr * sizeof *rg), *pg = malloc(np * sizeof *pg);
    memcpy(rg, wkr_sparse_model_row_grads(m), nr * sizeof *rg);
    memcpy(pg, wkr_sparse_model_grads(m), np * sizeof *pg);
    fd_check(m, EN, wkr_sparse_model_rows(m), rg, nr, "row grad");
    fd_check(m, EN, wkr_sparse_model_params(m), pg, np, "dense grad");
    free(rg);
    free(pg);
    wkr_sparse_model_destroy(&m);
}

static void test_logreg_finite_diff(void **state)
{
    (void)state;
    wkr_sparse_ds_t ds = lr_ds();
    uint32_t rows[] = {0, 1, 2, 1}; /* a sample twice: its keys count twice */
    wkr_sparse_model_t *m;
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_LOGREG, 0, NULL, 0, 4), 0);
    assert_int_equal(wkr_sparse_model_batch(m, &ds, rows, 4), 0);
    fill_rows(m, 9);
    wkr_sparse_model_params(m)[0] = -0.2f;
    double loss;
    assert_int_equal(wkr_sparse_model_train(m, 0.25f, &loss), 0);
    float rg[4], pg[1];
    memcpy(rg, wkr_sparse_model_row_grads(m), sizeof rg);
    pg[0] = wkr_sparse_model_grads(m)[0];
    fd_check(m, 4, wkr_sparse_model_rows(m), rg, 4, "row grad");
    fd_check(m, 4, wkr_sparse_model_params(m), pg, 1, "bias grad");
    wkr_sparse_model_destroy(&m);
}

/* ---- against PyTorch ------------------------------------------------------ */

static int have_torch(void)
{
    return system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}

static void put_floats(FILE *f, const char *name, const float *v, size_t n)
{
    fprintf(f, "%s = [", name);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%.9g,", (double)v[i]);
    }
    fprintf(f, "]\n");
}

/* The batch as Python lists: per entry its sample, its unique key's slot
 * and its field (key >> 32); labels in batch order. */
static void put_batch(FILE *f, wkr_sparse_model_t *m, const wkr_sparse_ds_t *ds,
                      const uint32_t *rows, size_t n)
{
    fprintf(f, "ent = [");
    for (size_t i = 0; i < n; i++) {
        for (size_t j = ds->rowptr[rows[i]]; j < ds->rowptr[rows[i] + 1]; j++) {
            const uint64_t *k = wkr_sparse_model_keys(m);
            size_t s = 0;
            while (k[s] != ds->keys[j]) {
                s++;
            }
            fprintf(f, "(%zu,%zu,%llu,%.9g),", i, s, (unsigned long long)(ds->keys[j] >> 32),
                    ds->vals ? (double)ds->vals[j] : 1.0);
        }
    }
    fprintf(f, "]\ny = [");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%g,", (double)ds->y[rows[i]]);
    }
    fprintf(f, "]\ndense = [");
    for (size_t i = 0; ds->ndense && i < n; i++) {
        for (int k = 0; k < ds->ndense; k++) {
            fprintf(f, "%.9g,", (double)ds->dense[rows[i] * (size_t)ds->ndense + k]);
        }
    }
    fprintf(f, "]\n");
}

/* The model in PyTorch, written independently of the C code: embeddings
 * gathered per entry and summed into the field's slot, nn.functional
 * linear layers, BCEWithLogits (mean). */
static const char TORCH_SCRIPT[] =
    "import torch\n"
    "torch.set_default_dtype(torch.float64)\n"
    "n = len(y)\n"
    "E = torch.tensor(rows).reshape(nkeys, D).requires_grad_()\n"
    "P = torch.tensor(params).requires_grad_()\n"
    "if kind == 'logreg':\n"
    "    z = [P[0]] * n\n"
    "    for (i, s, f, v) in ent: z[i] = z[i] + E[s, 0] * v\n"
    "    z = torch.stack(z)\n"
    "else:\n"
    "    slots = [[torch.zeros(D) for f in range(26)] for i in range(n)]\n"
    "    for (i, s, f, v) in ent: slots[i][f - 1] = slots[i][f - 1] + E[s]\n"
    "    dn = torch.tensor(dense).reshape(n, 13)\n"
    "    h = torch.stack([torch.cat(slots[i] + [dn[i]]) for i in range(n)])\n"
    "    off = 0\n"
    "    for l, (o, i_) in enumerate(shapes):\n"
    "        W = P[off:off + o * i_].reshape(o, i_); off += o * i_\n"
    "        b = P[off:off + o]; off += o\n"
    "        h = torch.nn.functional.linear(h, W, b)\n"
    "        if l + 1 < len(shapes): h = torch.relu(h)\n"
    "    z = h[:, 0]\n"
    "loss = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(y, "
    "dtype=torch.float64))\n"
    "loss.backward()\n"
    "print(loss.item() * n)\n"
    "print(' '.join('%.12g' % v for v in E.grad.flatten().tolist()))\n"
    "print(' '.join('%.12g' % v for v in P.grad.tolist()))\n";

static void torch_compare(wkr_sparse_model_t *m, const wkr_sparse_ds_t *ds, const uint32_t *rows,
                          size_t n, const char *kind)
{
    char dir[256];
    assert_int_equal(ut_mkdtemp(dir, sizeof dir, "test_sparse_model"), 0);
    const char *script = ut_in_dir(dir, "ref.py");
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    const ps_layout_t *l = wkr_sparse_model_layout(m);
    size_t nk = wkr_sparse_model_nkeys(m), d = (size_t)wkr_sparse_model_dim(m);
    fprintf(f, "kind = '%s'\nnkeys = %zu\nD = %zu\nshapes = [", kind, nk, d);
    for (int t = 0; t + 1 < l->n; t += 2) {
        fprintf(f, "(%lld,%lld),", (long long)l->t[t].dims[0], (long long)l->t[t].dims[1]);
    }
    fprintf(f, "]\n");
    put_floats(f, "rows", wkr_sparse_model_rows(m), nk * d);
    put_floats(f, "params", wkr_sparse_model_params(m), l->total);
    put_batch(f, m, ds, rows, n);
    fputs(TORCH_SCRIPT, f);
    assert_int_equal(fclose(f), 0);
    double loss, tloss;
    assert_int_equal(wkr_sparse_model_train(m, 1.0f / (float)n, &loss), 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s", script);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%lf", &tloss), 1);
    assert_true(fabs(loss - tloss) < 1e-5 * (1 + fabs(tloss)));
    const float *g = wkr_sparse_model_row_grads(m);
    for (size_t i = 0; i < nk * d; i++) {
        double t;
        assert_int_equal(fscanf(p, "%lf", &t), 1);
        if (fabs(g[i] - t) > 1e-6 + 1e-4 * fabs(t)) {
            fail_msg("row grad %zu: ours %.9g, torch %.9g", i, (double)g[i], t);
        }
    }
    g = wkr_sparse_model_grads(m);
    for (size_t i = 0; i < l->total; i++) {
        double t;
        assert_int_equal(fscanf(p, "%lf", &t), 1);
        if (fabs(g[i] - t) > 1e-6 + 1e-4 * fabs(t)) {
            fail_msg("dense grad %zu: ours %.9g, torch %.9g", i, (double)g[i], t);
        }
    }
    assert_int_equal(pclose(p), 0);
    ut_rm_tree(dir);
}

static void test_torch_logreg(void **state)
{
    (void)state;
    if (!have_torch()) {
        skip();
    }
    wkr_sparse_ds_t ds = lr_ds();
    uint32_t rows[] = {1, 2, 0, 1};
    wkr_sparse_model_t *m;
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_LOGREG, 0, NULL, 0, 4), 0);
    assert_int_equal(wkr_sparse_model_batch(m, &ds, rows, 4), 0);
    fill_rows(m, 11);
    wkr_sparse_model_params(m)[0] = 0.3f;
    torch_compare(m, &ds, rows, 4, "logreg");
    wkr_sparse_model_destroy(&m);
}

static void test_torch_embed(void **state)
{
    (void)state;
    if (!have_torch()) {
        skip();
    }
    wkr_sparse_ds_t ds = em_ds();
    uint32_t rows[] = {2, 0, 3, 1, 0};
    wkr_sparse_model_t *m = embed_model(&ds, rows, 5);
    torch_compare(m, &ds, rows, 5, "embed-mlp");
    wkr_sparse_model_destroy(&m);
}

/* ---- AUC ------------------------------------------------------------------ */

static void test_auc(void **state)
{
    (void)state;
    /* Pairs (pos, neg): (0.35, 0.1) yes, (0.35, 0.4) no, (0.8, *) yes: 3/4. */
    const float s1[] = {0.1f, 0.4f, 0.35f, 0.8f}, y1[] = {0, 0, 1, 1};
    assert_true(fabs(wkr_sparse_model_auc(s1, y1, 4) - 0.75) < 1e-12);
    /* Ties count half: positives 0.5, 0.5 against negatives 0.5 (1/2
     * each) and 0.2 (1 each): (0.5 + 1 + 0.5 + 1) / 4. */
    const float s2[] = {0.5f, 0.5f, 0.5f, 0.2f}, y2[] = {1, 0, 1, 0};
    assert_true(fabs(wkr_sparse_model_auc(s2, y2, 4) - 0.75) < 1e-12);
    const float s3[] = {1, 1, 1, 1, 1}, y3[] = {1, 0, 0, 1, 0};
    assert_true(fabs(wkr_sparse_model_auc(s3, y3, 5) - 0.5) < 1e-12);
    const float s4[] = {3, 2, 1}, y4[] = {0, 1, 1};
    assert_true(fabs(wkr_sparse_model_auc(s4, y4, 3) - 0.0) < 1e-12);
    /* 2 positives, 3 negatives: 0.9 beats all 3, 0.3 beats 0.1 and ties
     * 0.3: (3 + 1 + 0.5) / 6. */
    const float s5[] = {0.3f, 0.9f, 0.1f, 0.3f, 0.6f}, y5[] = {1, 1, 0, 0, 0};
    assert_true(fabs(wkr_sparse_model_auc(s5, y5, 5) - 4.5 / 6.0) < 1e-12);
    assert_true(isnan(wkr_sparse_model_auc(s4, y4 + 1, 2))); /* only one class */
    const float s6[] = {0.5f, NAN, 0.1f};
    assert_true(isnan(wkr_sparse_model_auc(s6, y4, 3))); /* a diverged model */
    assert_true(fabs(wkr_sparse_model_bce(0.0f, 1.0f) - log(2.0)) < 1e-12);
    assert_true(fabs(wkr_sparse_model_bce(-800.0f, 1.0f) - 800.0) < 1e-9); /* no overflow */
}

/* ---- errors ----------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    wkr_sparse_model_t *m;
    wkr_sparse_kind_t k;
    assert_int_equal(wkr_sparse_model_parse_kind("logreg", &k), 0);
    assert_int_equal(k, WKR_SPARSE_LOGREG);
    assert_int_equal(wkr_sparse_model_parse_kind("embed-mlp", &k), 0);
    assert_int_equal(k, WKR_SPARSE_EMBED_MLP);
    assert_int_equal(wkr_sparse_model_parse_kind("mlp", &k), 1);
    int h[] = {4};
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_EMBED_MLP, 0, h, 1, 4), PS_EINVAL);
    assert_null(m);
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_EMBED_MLP, 4, h, 0, 4), PS_EINVAL);
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_LOGREG, 0, NULL, 0, 0), PS_EINVAL);
    /* Too many samples; the wrong data form for the model. */
    wkr_sparse_ds_t lr = lr_ds(), em = em_ds();
    uint32_t rows[] = {0, 1, 2};
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_LOGREG, 0, NULL, 0, 2), 0);
    assert_int_equal(wkr_sparse_model_batch(m, &lr, rows, 3), PS_ERANGE);
    assert_int_equal(wkr_sparse_model_batch(m, &em, rows, 2), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "logreg wants LIBSVM"));
    wkr_sparse_model_destroy(&m);
    assert_int_equal(wkr_sparse_model_new(&m, WKR_SPARSE_EMBED_MLP, 2, h, 1, 4), 0);
    assert_int_equal(wkr_sparse_model_batch(m, &lr, rows, 2), PS_EINVAL);
    /* A key whose field is not 1..26. */
    em.keys[0] = ((uint64_t)27 << 32) + 1;
    assert_int_equal(wkr_sparse_model_batch(m, &em, rows, 2), 0);
    double loss;
    assert_int_equal(wkr_sparse_model_train(m, 0.5f, &loss), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "field 27"));
    wkr_sparse_model_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logreg_hand),
        cmocka_unit_test(test_logreg_finite_diff),
        cmocka_unit_test(test_embed_finite_diff),
        cmocka_unit_test(test_torch_logreg),
        cmocka_unit_test(test_torch_embed),
        cmocka_unit_test(test_auc),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
