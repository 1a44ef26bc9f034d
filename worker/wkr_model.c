#include "wkr_model.h"

#include "ps_err.h"
#include "ps_rng.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS (WKR_MODEL_MAX_HIDDEN + 1)

struct wkr_model {
    wkr_model_kind_t kind;
    int nlayers;
    int in[MAX_LAYERS];
    int out[MAX_LAYERS];
    size_t woff[MAX_LAYERS]; /* weight offset in the flat space */
    size_t boff[MAX_LAYERS]; /* bias offset */
    int max_batch;
    ps_layout_t layout;
    float *params;
    float *grads;
    /* act[l]: layer l's output for max_batch rows (post-ReLU for hidden
     * layers, logits for the last); the input of layer l+1. */
    float *act[MAX_LAYERS];
    float *act_buf;
    /* Two ping-pong buffers of max_batch x widest layer for dZ and dX. */
    float *dz[2];
};

int wkr_model_parse_kind(const char *s, wkr_model_kind_t *out)
{
    static const struct {
        const char *name;
        wkr_model_kind_t kind;
    } kinds[] = {
        {"linear", WKR_MODEL_LINEAR}, {"softmax", WKR_MODEL_SOFTMAX}, {"mlp", WKR_MODEL_MLP}};
    for (size_t i = 0; s != NULL && i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(s, kinds[i].name) == 0) {
            *out = kinds[i].kind;
            return 0;
        }
    }
    ps_error_set("unknown model '%.64s' (expected linear, softmax or mlp)", s ? s : "(null)");
    return PS_EINVAL;
}

int wkr_model_parse_init(const char *s, wkr_init_t *out)
{
    if (s != NULL && strcmp(s, "default") == 0) {
        *out = WKR_INIT_DEFAULT;
        return 0;
    }
    if (s != NULL && strcmp(s, "zeros") == 0) {
        *out = WKR_INIT_ZEROS;
        return 0;
    }
    ps_error_set("unknown init '%.64s' (expected default or zeros)", s ? s : "(null)");
    return PS_EINVAL;
}

const char *wkr_model_kind_name(wkr_model_kind_t kind)
{
    switch (kind) {
    case WKR_MODEL_LINEAR: return "linear";
    case WKR_MODEL_SOFTMAX: return "softmax";
    case WKR_MODEL_MLP: return "mlp";
    }
    return "unknown";
}

static int dim_check(const char *what, int v, int lo)
{
    if (v < lo || v > WKR_MODEL_MAX_DIM) {
        ps_error_set("model: %s = %d out of range [%d, %d]", what, v, lo, WKR_MODEL_MAX_DIM);
        return PS_EINVAL;
    }
    return 0;
}

/* Fill the layer widths from the constructor's arguments. */
static int shape_set(wkr_model_t *m, int features, int classes, const int *hidden, int nhidden)
{
    int rv;
    if ((rv = dim_check("features", features, 1)) != 0) {
        return rv;
    }
    if (m->kind == WKR_MODEL_LINEAR) {
        m->nlayers = 1;
        m->in[0] = features;
        m->out[0] = 1;
        return 0;
    }
    if ((rv = dim_check("classes", classes, 2)) != 0) {
        return rv;
    }
    int nh = m->kind == WKR_MODEL_MLP ? nhidden : 0;
    if (m->kind == WKR_MODEL_MLP && (hidden == NULL || nh < 1 || nh > WKR_MODEL_MAX_HIDDEN)) {
        ps_error_set("model: mlp needs 1 to %d hidden layers, got %d", WKR_MODEL_MAX_HIDDEN, nh);
        return PS_EINVAL;
    }
    int prev = features;
    for (int l = 0; l < nh; l++) {
        if ((rv = dim_check("hidden layer width", hidden[l], 1)) != 0) {
            return rv;
        }
        m->in[l] = prev;
        m->out[l] = prev = hidden[l];
    }
    m->nlayers = nh + 1;
    m->in[nh] = prev;
    m->out[nh] = classes;
    return 0;
}

static int layout_build(wkr_model_t *m)
{
    ps_layout_init(&m->layout);
    for (int l = 0; l < m->nlayers; l++) {
        char name[32];
        int64_t wdims[2] = {m->out[l], m->in[l]};
        int rv;
        m->woff[l] = m->layout.total;
        snprintf(name, sizeof name, "fc%d.weight", l + 1);
        if ((rv = ps_layout_add(&m->layout, name, 2, wdims)) != 0) {
            return rv;
        }
        m->boff[l] = m->layout.total;
        snprintf(name, sizeof name, "fc%d.bias", l + 1);
        if ((rv = ps_layout_add(&m->layout, name, 1, wdims)) != 0) {
            return rv;
        }
    }
    return 0;
}

/* Activation and dZ buffers; every size is checked before it is used. */
static int buffers_alloc(wkr_model_t *m)
{
    size_t rows = (size_t)m->max_batch, total = 0, widest = 0;
    for (int l = 0; l < m->nlayers; l++) {
        size_t w = (size_t)m->out[l];
        if (w > (PS_MAX_ELEMS - total) / rows) {
            ps_error_set("model: activations for batch %d exceed %zu floats", m->max_batch,
                         PS_MAX_ELEMS);
            return PS_ENOMEM;
        }
        total += rows * w;
        widest = w > widest ? w : widest;
    }
    m->act_buf = calloc(total, sizeof(float));
    m->dz[0] = calloc(rows * widest, sizeof(float));
    m->dz[1] = calloc(rows * widest, sizeof(float));
    m->params = calloc(m->layout.total, sizeof(float));
    m->grads = calloc(m->layout.total, sizeof(float));
    if (!m->act_buf || !m->dz[0] || !m->dz[1] || !m->params || !m->grads) {
        ps_error_set("model: out of memory (%zu parameters, batch %d)", m->layout.total,
                     m->max_batch);
        return PS_ENOMEM;
    }
    float *p = m->act_buf;
    for (int l = 0; l < m->nlayers; l++) {
        m->act[l] = p;
        p += rows * (size_t)m->out[l];
    }
    return 0;
}

int wkr_model_new(wkr_model_t **out, wkr_model_kind_t kind, int features, int classes,
                  const int *hidden, int nhidden, int max_batch)
{
    int rv;
    *out = NULL;
    if (kind != WKR_MODEL_LINEAR && kind != WKR_MODEL_SOFTMAX && kind != WKR_MODEL_MLP) {
        ps_error_set("model: unknown kind %d", (int)kind);
        return PS_EINVAL;
    }
    if ((rv = dim_check("max_batch", max_batch, 1)) != 0) {
        return rv;
    }
    wkr_model_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        ps_error_set("model: out of memory");
        return PS_ENOMEM;
    }
    m->kind = kind;
    m->max_batch = max_batch;
    if ((rv = shape_set(m, features, classes, hidden, nhidden)) != 0 ||
        (rv = layout_build(m)) != 0 || (rv = buffers_alloc(m)) != 0) {
        wkr_model_destroy(&m);
        return rv;
    }
    *out = m;
    return 0;
}

void wkr_model_destroy(wkr_model_t **mp)
{
    if (mp == NULL || *mp == NULL) {
        return;
    }
    wkr_model_t *m = *mp;
    free(m->act_buf);
    free(m->dz[0]);
    free(m->dz[1]);
    free(m->params);
    free(m->grads);
    free(m);
    *mp = NULL;
}

const ps_layout_t *wkr_model_layout(const wkr_model_t *m)
{
    return &m->layout;
}

float *wkr_model_params(wkr_model_t *m)
{
    return m->params;
}

float *wkr_model_grads(wkr_model_t *m)
{
    return m->grads;
}

void wkr_model_fill_weights(wkr_model_t *m, wkr_init_t rule, uint64_t seed)
{
    if (rule == WKR_INIT_ZEROS) {
        memset(m->params, 0, m->layout.total * sizeof(float));
        return;
    }
    ps_rng_t rng;
    ps_rng_seed(&rng, seed, 0);
    for (int l = 0; l < m->nlayers; l++) {
        /* |2u - 1| <= 1 exactly in float, so rounding never leaves the bound. */
        float bound = (float)(1.0 / sqrt((double)m->in[l]));
        size_t first = m->woff[l];
        size_t end = m->boff[l] + (size_t)m->out[l];
        for (size_t i = first; i < end; i++) {
            m->params[i] = (2.0f * ps_rng_uniform(&rng) - 1.0f) * bound;
        }
    }
}

void wkr_model_zero_grads(wkr_model_t *m)
{
    memset(m->grads, 0, m->layout.total * sizeof(float));
}

/* Targets are checked before any arithmetic so a bad batch changes nothing. */
static int targets_check(const wkr_model_t *m, const float *y, size_t n, size_t base)
{
    int classes = m->out[m->nlayers - 1];
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(y[i])) {
            ps_error_set("model: sample %zu: non-finite target", base + i);
            return PS_EINVAL;
        }
        if (m->kind == WKR_MODEL_LINEAR) {
            continue;
        }
        if (y[i] != floorf(y[i])) {
            ps_error_set("model: sample %zu: label %g is not an integer", base + i, (double)y[i]);
            return PS_EINVAL;
        }
        if (y[i] < 0.0f || y[i] >= (float)classes) {
            ps_error_set("model: sample %zu: label %g outside [0, %d)", base + i, (double)y[i],
                         classes);
            return PS_ERANGE;
        }
    }
    return 0;
}

/* Z = X W^T + b (bias copied into Z first, then beta = 1), ReLU on hidden
 * layers. */
static void layer_forward(wkr_model_t *m, int l, const float *x, int n)
{
    int fin = m->in[l], fout = m->out[l];
    const float *w = m->params + m->woff[l];
    const float *b = m->params + m->boff[l];
    float *z = m->act[l];
    for (int i = 0; i < n; i++) {
        memcpy(z + (size_t)i * (size_t)fout, b, (size_t)fout * sizeof *b);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, fout, fin, 1.0f, x, fin, w, fin, 1.0f,
                z, fout);
    if (l + 1 == m->nlayers) {
        return;
    }
    size_t count = (size_t)n * (size_t)fout;
    for (size_t i = 0; i < count; i++) {
        z[i] = z[i] > 0.0f ? z[i] : 0.0f;
    }
}

static void forward(wkr_model_t *m, const float *x, int n)
{
    for (int l = 0; l < m->nlayers; l++) {
        layer_forward(m, l, l == 0 ? x : m->act[l - 1], n);
    }
}

/* -log softmax(z)_label, computed with the maximum subtracted; when dz is
 * not NULL it receives softmax(z) - onehot(label). */
static double xent_row(const float *z, int c, int label, float *dz)
{
    float mx = z[0];
    for (int j = 1; j < c; j++) {
        mx = z[j] > mx ? z[j] : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j < c; j++) {
        float e = expf(z[j] - mx);
        sum += e;
        if (dz != NULL) {
            dz[j] = e;
        }
    }
    if (dz != NULL) {
        float inv = 1.0f / sum;
        for (int j = 0; j < c; j++) {
            dz[j] *= inv;
        }
        dz[label] -= 1.0f;
    }
    return log((double)sum) + (double)mx - (double)z[label];
}

static int argmax_row(const float *z, int c)
{
    int best = 0;
    for (int j = 1; j < c; j++) {
        if (z[j] > z[best]) {
            best = j;
        }
    }
    return best;
}

/* Loss of the last forward pass over n rows; dz (may be NULL) receives
 * dLoss/dZ of the last layer, correct (may be NULL) the argmax hits. */
static double loss_rows(const wkr_model_t *m, const float *y, int n, float *dz, int64_t *correct)
{
    const float *z = m->act[m->nlayers - 1];
    double loss = 0.0;
    if (m->kind == WKR_MODEL_LINEAR) {
        for (int i = 0; i < n; i++) {
            float d = z[i] - y[i];
            loss += (double)d * (double)d;
            if (dz != NULL) {
                dz[i] = 2.0f * d;
            }
        }
        return loss;
    }
    int c = m->out[m->nlayers - 1];
    for (int i = 0; i < n; i++) {
        size_t row = (size_t)i * (size_t)c;
        int label = (int)y[i];
        loss += xent_row(z + row, c, label, dz != NULL ? dz + row : NULL);
        if (correct != NULL && argmax_row(z + row, c) == label) {
            (*correct)++;
        }
    }
    return loss;
}

/* dW += dZ^T X (beta = 1 accumulates in place), db += column sums of dZ. */
static void layer_grads(wkr_model_t *m, int l, const float *x, const float *dz, int n)
{
    int fin = m->in[l], fout = m->out[l];
    float *dw = m->grads + m->woff[l];
    float *db = m->grads + m->boff[l];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fout, fin, n, 1.0f, dz, fout, x, fin, 1.0f,
                dw, fin);
    for (int i = 0; i < n; i++) {
        const float *row = dz + (size_t)i * (size_t)fout;
        for (int j = 0; j < fout; j++) {
            db[j] += row[j];
        }
    }
}

/* dX = dZ W, then through the ReLU of the previous layer (its output is
 * positive exactly where the ReLU passed the gradient). */
static void layer_dx(wkr_model_t *m, int l, const float *dz, float *dx, int n)
{
    int fin = m->in[l], fout = m->out[l];
    const float *w = m->params + m->woff[l];
    const float *h = m->act[l - 1];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, fin, fout, 1.0f, dz, fout, w, fin,
                0.0f, dx, fin);
    size_t count = (size_t)n * (size_t)fin;
    for (size_t i = 0; i < count; i++) {
        dx[i] = h[i] > 0.0f ? dx[i] : 0.0f;
    }
}

static void backward(wkr_model_t *m, const float *x, int n, wkr_grad_ready_fn cb, void *arg)
{
    float *dz = m->dz[0], *dx = m->dz[1];
    for (int l = m->nlayers - 1; l >= 0; l--) {
        layer_grads(m, l, l == 0 ? x : m->act[l - 1], dz, n);
        /* Tell the caller first so its push overlaps the rest of backward. */
        if (cb != NULL) {
            cb(arg, m->woff[l]);
        }
        if (l == 0) {
            break;
        }
        layer_dx(m, l, dz, dx, n);
        float *t = dz;
        dz = dx;
        dx = t;
    }
}

int wkr_model_accumulate(wkr_model_t *m, const float *x, const float *y, int n, double *loss_sum,
                         wkr_grad_ready_fn cb, void *arg)
{
    int rv;
    *loss_sum = 0.0;
    if (n < 0 || n > m->max_batch) {
        ps_error_set("model: batch of %d samples outside [0, %d]", n, m->max_batch);
        return n < 0 ? PS_EINVAL : PS_ERANGE;
    }
    if (n == 0) {
        return 0;
    }
    if ((rv = targets_check(m, y, (size_t)n, 0)) != 0) {
        return rv;
    }
    forward(m, x, n);
    *loss_sum = loss_rows(m, y, n, m->dz[0], NULL);
    backward(m, x, n, cb, arg);
    return 0;
}

int wkr_model_evaluate(wkr_model_t *m, const float *x, const float *y, size_t n, double *loss_sum,
                       int64_t *correct)
{
    double loss = 0.0;
    int64_t hits = 0;
    *loss_sum = 0.0;
    *correct = 0;
    for (size_t done = 0; done < n;) {
        size_t left = n - done;
        int piece = left < (size_t)m->max_batch ? (int)left : m->max_batch;
        int rv = targets_check(m, y + done, (size_t)piece, done);
        if (rv != 0) {
            return rv;
        }
        forward(m, x + done * (size_t)m->in[0], piece);
        loss += loss_rows(m, y + done, piece, NULL, &hits);
        done += (size_t)piece;
    }
    *loss_sum = loss;
    *correct = hits;
    return 0;
}
