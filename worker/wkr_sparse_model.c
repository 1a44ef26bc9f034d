#include "wkr_sparse_model.h"

#include "ps_err.h"
#include "ps_rng.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS (WKR_SPARSE_MODEL_MAX_HIDDEN + 1)

typedef struct {
    uint64_t key;
    uint32_t e; /* entry in batch order */
} kpair_t;

struct wkr_sparse_model {
    wkr_sparse_kind_t kind;
    int dim, max_batch;
    int nlayers, in[MAX_LAYERS], out[MAX_LAYERS]; /* embed-mlp's MLP */
    size_t woff[MAX_LAYERS], boff[MAX_LAYERS];
    ps_layout_t layout;
    float *params, *grads;
    float *x, *act[MAX_LAYERS], *dz[2]; /* embed-mlp: input and activations */
    float *logit;                       /* max_batch */
    /* The batch. */
    const wkr_sparse_ds_t *ds;
    const uint32_t *rows;
    size_t n, nnz, nkeys, cap_nnz, cap_keys;
    kpair_t *pairs; /* nnz, sorted by key */
    uint32_t *slot; /* nnz: entry e's unique key */
    uint64_t *keys; /* nkeys, ascending */
    float *krows;   /* nkeys x dim */
    float *kgrads;  /* nkeys x dim */
};

int wkr_sparse_model_parse_kind(const char *s, wkr_sparse_kind_t *out)
{
    if (strcmp(s, "logreg") == 0) {
        *out = WKR_SPARSE_LOGREG;
    } else if (strcmp(s, "embed-mlp") == 0) {
        *out = WKR_SPARSE_EMBED_MLP;
    } else {
        return 1;
    }
    return 0;
}

static int check_width(const char *what, int v)
{
    if (v < 1 || v > WKR_SPARSE_MODEL_MAX_DIM) {
        ps_error_set("model: %s %d is outside 1..%d", what, v, WKR_SPARSE_MODEL_MAX_DIM);
        return PS_EINVAL;
    }
    return 0;
}

/* The MLP's shape and the dense layout (fcK.weight [out, in], fcK.bias). */
static int shape_set(wkr_sparse_model_t *m, const int *hidden, int nh)
{
    int rv;
    ps_layout_init(&m->layout);
    if (m->kind == WKR_SPARSE_LOGREG) {
        int64_t one = 1;
        return ps_layout_add(&m->layout, "fc1.bias", 1, &one);
    }
    if ((rv = check_width("--embed-dim", m->dim)) != 0) {
        return rv;
    }
    if (hidden == NULL || nh < 1 || nh > WKR_SPARSE_MODEL_MAX_HIDDEN) {
        ps_error_set("model: embed-mlp needs 1 to %d hidden layers, got %d",
                     WKR_SPARSE_MODEL_MAX_HIDDEN, nh);
        return PS_EINVAL;
    }
    int prev = WKR_CRITEO_CATS * m->dim + WKR_CRITEO_INTS;
    m->nlayers = nh + 1;
    for (int l = 0; l < m->nlayers; l++) {
        char name[32];
        m->in[l] = prev;
        m->out[l] = prev = l < nh ? hidden[l] : 1;
        if ((rv = check_width("hidden layer width", m->out[l])) != 0) {
            return rv;
        }
        int64_t dims[2] = {m->out[l], m->in[l]};
        m->woff[l] = m->layout.total;
        snprintf(name, sizeof name, "fc%d.weight", l + 1);
        if ((rv = ps_layout_add(&m->layout, name, 2, dims)) != 0) {
            return rv;
        }
        m->boff[l] = m->layout.total;
        snprintf(name, sizeof name, "fc%d.bias", l + 1);
        if ((rv = ps_layout_add(&m->layout, name, 1, dims)) != 0) {
            return rv;
        }
    }
    return 0;
}

static int buffers_alloc(wkr_sparse_model_t *m)
{
    size_t b = (size_t)m->max_batch, widest = 1;
    m->params = calloc(m->layout.total, sizeof(float));
    m->grads = calloc(m->layout.total, sizeof(float));
    m->logit = calloc(b, sizeof(float));
    int ok = m->params && m->grads && m->logit;
    if (m->kind == WKR_SPARSE_EMBED_MLP) {
        m->x = calloc(b * (size_t)m->in[0], sizeof(float));
        ok = ok && m->x;
        for (int l = 0; l < m->nlayers; l++) {
            m->act[l] = calloc(b * (size_t)m->out[l], sizeof(float));
            ok = ok && m->act[l];
            widest = (size_t)m->in[l] > widest ? (size_t)m->in[l] : widest;
        }
        m->dz[0] = calloc(b * widest, sizeof(float));
        m->dz[1] = calloc(b * widest, sizeof(float));
        ok = ok && m->dz[0] && m->dz[1];
    }
    if (!ok) {
        ps_error_set("model: out of memory (%zu parameters, batch %d)", m->layout.total,
                     m->max_batch);
        return PS_ENOMEM;
    }
    return 0;
}

int wkr_sparse_model_new(wkr_sparse_model_t **out, wkr_sparse_kind_t kind, int embed_dim,
                         const int *hidden, int nhidden, int max_batch)
{
    int rv;
    *out = NULL;
    if (kind != WKR_SPARSE_LOGREG && kind != WKR_SPARSE_EMBED_MLP) {
        ps_error_set("model: unknown sparse model kind %d", (int)kind);
        return PS_EINVAL;
    }
    if (max_batch < 1 || max_batch > (1 << 24)) {
        ps_error_set("model: batch %d is outside 1..%d", max_batch, 1 << 24);
        return PS_EINVAL;
    }
    wkr_sparse_model_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        ps_error_set("model: out of memory");
        return PS_ENOMEM;
    }
    m->kind = kind;
    m->dim = kind == WKR_SPARSE_LOGREG ? 1 : embed_dim;
    m->max_batch = max_batch;
    if ((rv = shape_set(m, hidden, nhidden)) != 0 || (rv = buffers_alloc(m)) != 0) {
        wkr_sparse_model_destroy(&m);
        return rv;
    }
    *out = m;
    return 0;
}

int wkr_sparse_model_new_like(wkr_sparse_model_t **out, const wkr_sparse_model_t *m, int max_batch)
{
    int hidden[MAX_LAYERS];
    for (int l = 0; l + 1 < m->nlayers; l++) {
        hidden[l] = m->out[l];
    }
    return wkr_sparse_model_new(out, m->kind, m->dim, hidden, m->nlayers - 1, max_batch);
}

void wkr_sparse_model_destroy(wkr_sparse_model_t **mp)
{
    if (mp == NULL || *mp == NULL) {
        return;
    }
    wkr_sparse_model_t *m = *mp;
    free(m->params);
    free(m->grads);
    free(m->logit);
    free(m->x);
    for (int l = 0; l < MAX_LAYERS; l++) {
        free(m->act[l]);
    }
    free(m->dz[0]);
    free(m->dz[1]);
    free(m->pairs);
    free(m->slot);
    free(m->keys);
    free(m->krows);
    free(m->kgrads);
    free(m);
    *mp = NULL;
}

const char *wkr_sparse_model_table(const wkr_sparse_model_t *m)
{
    return m->kind == WKR_SPARSE_LOGREG ? "fc1.weight" : "emb.weight";
}

int wkr_sparse_model_dim(const wkr_sparse_model_t *m)
{
    return m->dim;
}

const ps_layout_t *wkr_sparse_model_layout(const wkr_sparse_model_t *m)
{
    return &m->layout;
}

float *wkr_sparse_model_params(wkr_sparse_model_t *m)
{
    return m->params;
}

float *wkr_sparse_model_grads(wkr_sparse_model_t *m)
{
    return m->grads;
}

void wkr_sparse_model_fill_weights(wkr_sparse_model_t *m, int zeros, uint64_t seed)
{
    memset(m->params, 0, m->layout.total * sizeof(float));
    if (zeros || m->kind == WKR_SPARSE_LOGREG) {
        return;
    }
    ps_rng_t rng;
    ps_rng_seed(&rng, seed, 0);
    for (int l = 0; l < m->nlayers; l++) {
        /* |2u - 1| <= 1 exactly in float, so rounding never leaves the bound. */
        float bound = (float)(1.0 / sqrt((double)m->in[l]));
        for (size_t i = m->woff[l]; i < m->boff[l] + (size_t)m->out[l]; i++) {
            m->params[i] = (2.0f * ps_rng_uniform(&rng) - 1.0f) * bound;
        }
    }
}

float wkr_sparse_model_table_bound(const wkr_sparse_model_t *m, int zeros)
{
    if (zeros || m->kind == WKR_SPARSE_LOGREG) {
        return 0.0f;
    }
    return (float)(1.0 / sqrt((double)m->dim));
}

/* ---- the batch's keys --------------------------------------------------- */

static int pair_cmp(const void *a, const void *b)
{
    const kpair_t *x = a, *y = b;
    if (x->key != y->key) {
        return x->key < y->key ? -1 : 1;
    }
    return x->e < y->e ? -1 : x->e > y->e;
}

static int room(void **p, size_t n, size_t size)
{
    void *q = realloc(*p, (n ? n : 1) * size);
    if (q == NULL) {
        ps_error_set("model: no memory for a batch of %zu entries", n);
        return PS_ENOMEM;
    }
    *p = q;
    return 0;
}

/* Arrays for nnz entries and as many keys (rows of dim floats). */
static int batch_room(wkr_sparse_model_t *m, size_t nnz)
{
    int rv = 0;
    if (nnz > m->cap_nnz) {
        if ((rv = room((void **)&m->pairs, nnz, sizeof *m->pairs)) == 0 &&
            (rv = room((void **)&m->slot, nnz, sizeof *m->slot)) == 0) {
            m->cap_nnz = nnz;
        }
    }
    if (rv == 0 && nnz > m->cap_keys) {
        size_t d = (size_t)m->dim;
        if ((rv = room((void **)&m->keys, nnz, sizeof *m->keys)) == 0 &&
            (rv = room((void **)&m->krows, nnz * d, sizeof *m->krows)) == 0 &&
            (rv = room((void **)&m->kgrads, nnz * d, sizeof *m->kgrads)) == 0) {
            m->cap_keys = nnz;
        }
    }
    return rv;
}

static int batch_check(const wkr_sparse_model_t *m, const wkr_sparse_ds_t *ds, size_t n)
{
    if (n > (size_t)m->max_batch) {
        ps_error_set("model: batch of %zu samples, more than the %d planned", n, m->max_batch);
        return PS_ERANGE;
    }
    int want = m->kind == WKR_SPARSE_LOGREG ? 0 : WKR_CRITEO_INTS;
    if (ds->ndense != want) {
        ps_error_set(
            "model: %s wants %s data", m->kind == WKR_SPARSE_LOGREG ? "logreg" : "embed-mlp",
            m->kind == WKR_SPARSE_LOGREG ? "LIBSVM (libsvm:PATH)" : "Criteo (criteo:PATH)");
        return PS_EINVAL;
    }
    return 0;
}

int wkr_sparse_model_batch(wkr_sparse_model_t *m, const wkr_sparse_ds_t *ds, const uint32_t *rows,
                           size_t n)
{
    int rv = batch_check(m, ds, n);
    size_t nnz = 0;
    for (size_t i = 0; rv == 0 && i < n; i++) {
        nnz += ds->rowptr[rows[i] + 1] - ds->rowptr[rows[i]];
    }
    if (rv == 0 && nnz > UINT32_MAX) {
        ps_error_set("model: a batch of %zu entries is too large", nnz);
        rv = PS_ERANGE;
    }
    if (rv != 0 || (rv = batch_room(m, nnz)) != 0) {
        return rv;
    }
    size_t e = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = ds->rowptr[rows[i]]; j < ds->rowptr[rows[i] + 1]; j++, e++) {
            m->pairs[e] = (kpair_t){.key = ds->keys[j], .e = (uint32_t)e};
        }
    }
    qsort(m->pairs, nnz, sizeof *m->pairs, pair_cmp);
    size_t u = 0;
    for (size_t k = 0; k < nnz; k++) {
        if (k == 0 || m->pairs[k].key != m->pairs[k - 1].key) {
            m->keys[u++] = m->pairs[k].key;
        }
        m->slot[m->pairs[k].e] = (uint32_t)(u - 1);
    }
    m->ds = ds;
    m->rows = rows;
    m->n = n;
    m->nnz = nnz;
    m->nkeys = u;
    return 0;
}

size_t wkr_sparse_model_nkeys(const wkr_sparse_model_t *m)
{
    return m->nkeys;
}

const uint64_t *wkr_sparse_model_keys(const wkr_sparse_model_t *m)
{
    return m->keys;
}

float *wkr_sparse_model_rows(wkr_sparse_model_t *m)
{
    return m->krows;
}

float *wkr_sparse_model_row_grads(wkr_sparse_model_t *m)
{
    return m->kgrads;
}

/* ---- losses and metrics ------------------------------------------------- */

double wkr_sparse_model_bce(float logit, float y)
{
    double z = logit;
    return (z > 0 ? z : 0) - z * (double)y + log1p(exp(-fabs(z)));
}

static float sigmoid(float z)
{
    if (z >= 0) {
        return 1.0f / (1.0f + expf(-z));
    }
    float e = expf(z);
    return e / (1.0f + e);
}

typedef struct {
    float score, y;
} scored_t;

static int scored_cmp(const void *a, const void *b)
{
    float x = ((const scored_t *)a)->score, y = ((const scored_t *)b)->score;
    return x < y ? -1 : x > y;
}

double wkr_sparse_model_auc(const float *score, const float *y, size_t n)
{
    scored_t *s = malloc((n ? n : 1) * sizeof *s);
    size_t pos = 0;
    if (s == NULL) {
        return NAN;
    }
    for (size_t i = 0; i < n; i++) {
        if (isnan(score[i])) {
            free(s);
            return NAN; /* a diverged model: no order to rank by */
        }
        s[i] = (scored_t){score[i], y[i]};
        pos += y[i] > 0.5f;
    }
    qsort(s, n, sizeof *s, scored_cmp);
    double rank_sum = 0; /* ranks of the positives, 1-based, ties averaged */
    for (size_t i = 0; i < n;) {
        size_t j = i, p = 0;
        for (; j < n && s[j].score == s[i].score; j++) {
            p += s[j].y > 0.5f;
        }
        rank_sum += (double)p * ((double)(i + 1) + (double)j) / 2.0;
        i = j;
    }
    free(s);
    size_t neg = n - pos;
    if (pos == 0 || neg == 0) {
        return NAN;
    }
    return (rank_sum - (double)pos * ((double)pos + 1) / 2.0) / ((double)pos * (double)neg);
}

/* ---- logreg ------------------------------------------------------------- */

/* logit_i = bias + sum of w[key] * val over the sample's entries. */
static void logreg_forward(wkr_sparse_model_t *m)
{
    const wkr_sparse_ds_t *ds = m->ds;
    size_t e = 0;
    for (size_t i = 0; i < m->n; i++) {
        float z = m->params[0];
        for (size_t j = ds->rowptr[m->rows[i]]; j < ds->rowptr[m->rows[i] + 1]; j++, e++) {
            z += m->krows[m->slot[e]] * (ds->vals ? ds->vals[j] : 1.0f);
        }
        m->logit[i] = z;
    }
}

static void logreg_backward(wkr_sparse_model_t *m, const float *dz)
{
    const wkr_sparse_ds_t *ds = m->ds;
    float db = 0;
    size_t e = 0;
    memset(m->kgrads, 0, m->nkeys * sizeof *m->kgrads);
    for (size_t i = 0; i < m->n; i++) {
        for (size_t j = ds->rowptr[m->rows[i]]; j < ds->rowptr[m->rows[i] + 1]; j++, e++) {
            m->kgrads[m->slot[e]] += dz[i] * (ds->vals ? ds->vals[j] : 1.0f);
        }
        db += dz[i];
    }
    m->grads[0] = db;
}

/* ---- embed-mlp ---------------------------------------------------------- */

/* x_i = field embeddings (summed when a field repeats), then dense values. */
static int embed_input(wkr_sparse_model_t *m)
{
    const wkr_sparse_ds_t *ds = m->ds;
    size_t in = (size_t)m->in[0], d = (size_t)m->dim, e = 0;
    memset(m->x, 0, m->n * in * sizeof *m->x);
    for (size_t i = 0; i < m->n; i++) {
        float *x = m->x + i * in;
        for (size_t j = ds->rowptr[m->rows[i]]; j < ds->rowptr[m->rows[i] + 1]; j++, e++) {
            uint64_t f = ds->keys[j] >> 32;
            if (f < 1 || f > WKR_CRITEO_CATS) {
                ps_error_set("model: key %llu has field %llu, not 1..%d",
                             (unsigned long long)ds->keys[j], (unsigned long long)f,
                             WKR_CRITEO_CATS);
                return PS_EINVAL;
            }
            const float *r = m->krows + (size_t)m->slot[e] * d;
            for (size_t k = 0; k < d; k++) {
                x[(f - 1) * d + k] += r[k];
            }
        }
        memcpy(x + WKR_CRITEO_CATS * d, ds->dense + (size_t)m->rows[i] * WKR_CRITEO_INTS,
               WKR_CRITEO_INTS * sizeof *x);
    }
    return 0;
}

/* Z = A W^T + b, ReLU on hidden layers; the last layer's one column is the logit. */
static void mlp_forward(wkr_sparse_model_t *m)
{
    int n = (int)m->n;
    for (int l = 0; l < m->nlayers; l++) {
        int fin = m->in[l], fout = m->out[l];
        const float *a = l ? m->act[l - 1] : m->x, *b = m->params + m->boff[l];
        float *z = m->act[l];
        for (int i = 0; i < n; i++) {
            memcpy(z + (size_t)i * (size_t)fout, b, (size_t)fout * sizeof *b);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, fout, fin, 1.0f, a, fin,
                    m->params + m->woff[l], fin, 1.0f, z, fout);
        if (l + 1 < m->nlayers) {
            for (size_t k = 0; k < (size_t)n * (size_t)fout; k++) {
                z[k] = z[k] > 0.0f ? z[k] : 0.0f;
            }
        }
    }
    memcpy(m->logit, m->act[m->nlayers - 1], m->n * sizeof *m->logit);
}

/* The input's gradient dx (n x in[0]) into the rows' gradients. */
static void embed_scatter(wkr_sparse_model_t *m, const float *dx)
{
    const wkr_sparse_ds_t *ds = m->ds;
    size_t in = (size_t)m->in[0], d = (size_t)m->dim, e = 0;
    memset(m->kgrads, 0, m->nkeys * d * sizeof *m->kgrads);
    for (size_t i = 0; i < m->n; i++) {
        for (size_t j = ds->rowptr[m->rows[i]]; j < ds->rowptr[m->rows[i] + 1]; j++, e++) {
            size_t f = (size_t)(ds->keys[j] >> 32);
            float *g = m->kgrads + (size_t)m->slot[e] * d;
            for (size_t k = 0; k < d; k++) {
                g[k] += dx[i * in + (f - 1) * d + k];
            }
        }
    }
}

/* Backward from dz (n x 1, the logits' gradient) through every layer. */
static void mlp_backward(wkr_sparse_model_t *m, const float *dz_out)
{
    int n = (int)m->n, cur = 0;
    float *dz = m->dz[cur];
    memcpy(dz, dz_out, m->n * sizeof *dz);
    for (int l = m->nlayers - 1; l >= 0; l--) {
        int fin = m->in[l], fout = m->out[l];
        const float *a = l ? m->act[l - 1] : m->x;
        float *gb = m->grads + m->boff[l], *da = m->dz[1 - cur];
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fout, fin, n, 1.0f, dz, fout, a, fin,
                    0.0f, m->grads + m->woff[l], fin);
        for (int o = 0; o < fout; o++) {
            float s = 0;
            for (int i = 0; i < n; i++) {
                s += dz[(size_t)i * (size_t)fout + (size_t)o];
            }
            gb[o] = s;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, fin, fout, 1.0f, dz, fout,
                    m->params + m->woff[l], fin, 0.0f, da, fin);
        if (l > 0) {
            for (size_t k = 0; k < (size_t)n * (size_t)fin; k++) {
                da[k] = a[k] > 0.0f ? da[k] : 0.0f; /* a = relu(z): z > 0 iff a > 0 */
            }
        }
        cur = 1 - cur;
        dz = da;
    }
    embed_scatter(m, dz);
}

/* ---- the batch's forward and backward ----------------------------------- */

static int forward(wkr_sparse_model_t *m, double *loss_sum)
{
    if (m->kind == WKR_SPARSE_LOGREG) {
        logreg_forward(m);
    } else {
        int rv = embed_input(m);
        if (rv != 0) {
            return rv;
        }
        if (m->n > 0) {
            mlp_forward(m);
        }
    }
    double loss = 0;
    for (size_t i = 0; i < m->n; i++) {
        loss += wkr_sparse_model_bce(m->logit[i], m->ds->y[m->rows[i]]);
    }
    *loss_sum = loss;
    return 0;
}

int wkr_sparse_model_predict(wkr_sparse_model_t *m, float *logits, double *loss_sum)
{
    int rv = forward(m, loss_sum);
    if (rv == 0) {
        memcpy(logits, m->logit, m->n * sizeof *logits);
    }
    return rv;
}

int wkr_sparse_model_train(wkr_sparse_model_t *m, float scale, double *loss_sum)
{
    int rv = forward(m, loss_sum);
    if (rv != 0) {
        return rv;
    }
    memset(m->grads, 0, m->layout.total * sizeof *m->grads);
    /* d BCE / d logit = sigmoid(logit) - y; the logit buffer becomes dz. */
    for (size_t i = 0; i < m->n; i++) {
        m->logit[i] = (sigmoid(m->logit[i]) - m->ds->y[m->rows[i]]) * scale;
    }
    if (m->kind == WKR_SPARSE_LOGREG) {
        logreg_backward(m, m->logit);
    } else if (m->n > 0) {
        mlp_backward(m, m->logit);
    } else {
        memset(m->kgrads, 0, m->nkeys * (size_t)m->dim * sizeof *m->kgrads);
    }
    return 0;
}
