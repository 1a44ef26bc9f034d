/*
 * Unit tests for worker/wkr_model: hand-computed forward/backward cases,
 * gradients against central finite differences of an independent
 * double-precision reference, accumulation, the layer callback, layouts,
 * initialisation and error handling.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ps_err.h"
#include "ps_rng.h"
#include "wkr_model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LOSS_TOL 1e-5

static void assert_close(double got, double want, double atol, double rtol)
{
    double err = fabs(got - want);
    if (!(err <= atol + rtol * fabs(want))) {
        fail_msg("got %.9g want %.9g (err %.3g)", got, want, err);
    }
}

static void set_floats(float *dst, const float *src, size_t n)
{
    memcpy(dst, src, n * sizeof *dst);
}

static void assert_grads(wkr_model_t *m, const double *want, size_t n)
{
    const float *g = wkr_model_grads(m);
    for (size_t i = 0; i < n; i++) {
        assert_close(g[i], want[i], 1e-6, 1e-5);
    }
}

/* ---------------------------------------------------------------- parsing */

static void test_parse(void **state)
{
    (void)state;
    wkr_model_kind_t k;
    wkr_init_t r;
    assert_int_equal(wkr_model_parse_kind("linear", &k), 0);
    assert_int_equal(k, WKR_MODEL_LINEAR);
    assert_int_equal(wkr_model_parse_kind("softmax", &k), 0);
    assert_int_equal(k, WKR_MODEL_SOFTMAX);
    assert_int_equal(wkr_model_parse_kind("mlp", &k), 0);
    assert_int_equal(k, WKR_MODEL_MLP);
    assert_int_equal(wkr_model_parse_kind("MLP", &k), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "MLP"));
    assert_int_equal(wkr_model_parse_kind("", &k), PS_EINVAL);
    assert_int_equal(wkr_model_parse_kind(NULL, &k), PS_EINVAL);
    assert_int_equal(wkr_model_parse_init("default", &r), 0);
    assert_int_equal(r, WKR_INIT_DEFAULT);
    assert_int_equal(wkr_model_parse_init("zeros", &r), 0);
    assert_int_equal(r, WKR_INIT_ZEROS);
    assert_int_equal(wkr_model_parse_init("xavier", &r), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "xavier"));
    assert_string_equal(wkr_model_kind_name(WKR_MODEL_MLP), "mlp");
}

static void test_new_errors(void **state)
{
    (void)state;
    wkr_model_t *m = (wkr_model_t *)1;
    int h[2] = {4, 0};
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 5, 3, h, 0, 4), PS_EINVAL);
    assert_null(m);
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 5, 3, NULL, 1, 4), PS_EINVAL);
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 5, 3, h, 2, 4), PS_EINVAL);
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 5, 3, h, WKR_MODEL_MAX_HIDDEN + 1, 4),
                     PS_EINVAL);
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 0, 3, NULL, 0, 4), PS_EINVAL);
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 5, 1, NULL, 0, 4), PS_EINVAL);
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 5, 3, NULL, 0, 0), PS_EINVAL);
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, -5, 3, NULL, 0, 4), PS_EINVAL);
    assert_int_equal(wkr_model_new(&m, (wkr_model_kind_t)7, 5, 3, NULL, 0, 4), PS_EINVAL);
    /* A weight of 2^28 x 2^28 floats is over the layout's sanity bound. */
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 1 << 28, 1 << 28, NULL, 0, 1), PS_EINVAL);
    /* Activations of 2^28 rows x 2^7 classes exceed the bound: refused
     * before any allocation is attempted. */
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 1, 1 << 7, NULL, 0, 1 << 28), PS_ENOMEM);
    assert_null(m);
    /* linear ignores classes and hidden entirely. */
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_LINEAR, 3, 0, NULL, -1, 4), 0);
    wkr_model_destroy(&m);
    assert_null(m);
    wkr_model_destroy(&m);
    wkr_model_destroy(NULL);
}

/* ---------------------------------------------------------------- layouts */

static void expect_tensor(const ps_layout_t *l, int i, const char *name, int ndim, int64_t d0,
                          int64_t d1, size_t offset)
{
    assert_true(i < l->n);
    assert_string_equal(l->t[i].name, name);
    assert_int_equal(l->t[i].ndim, ndim);
    assert_int_equal(l->t[i].dims[0], d0);
    if (ndim == 2) {
        assert_int_equal(l->t[i].dims[1], d1);
    }
    assert_int_equal(l->t[i].offset, offset);
}

static void test_layouts(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_LINEAR, 7, 10, NULL, 0, 2), 0);
    const ps_layout_t *l = wkr_model_layout(m);
    assert_int_equal(l->n, 2);
    expect_tensor(l, 0, "fc1.weight", 2, 1, 7, 0);
    expect_tensor(l, 1, "fc1.bias", 1, 1, 0, 7);
    assert_int_equal(l->total, 8);
    wkr_model_destroy(&m);

    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 7, 3, NULL, 0, 2), 0);
    l = wkr_model_layout(m);
    assert_int_equal(l->n, 2);
    expect_tensor(l, 0, "fc1.weight", 2, 3, 7, 0);
    expect_tensor(l, 1, "fc1.bias", 1, 3, 0, 21);
    assert_int_equal(l->total, 24);
    wkr_model_destroy(&m);

    /* The Fashion-MNIST MLP: 784-256-128-10. */
    int h[2] = {256, 128};
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 784, 10, h, 2, 64), 0);
    l = wkr_model_layout(m);
    assert_int_equal(l->n, 6);
    expect_tensor(l, 0, "fc1.weight", 2, 256, 784, 0);
    expect_tensor(l, 1, "fc1.bias", 1, 256, 0, 200704);
    expect_tensor(l, 2, "fc2.weight", 2, 128, 256, 200960);
    expect_tensor(l, 3, "fc2.bias", 1, 128, 0, 233728);
    expect_tensor(l, 4, "fc3.weight", 2, 10, 128, 233856);
    expect_tensor(l, 5, "fc3.bias", 1, 10, 0, 235136);
    assert_int_equal(l->total, 235146);
    wkr_model_destroy(&m);
}

/* ------------------------------------------------------------- hand cases */

static void test_linear_hand(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_LINEAR, 2, 0, NULL, 0, 2), 0);
    /* w = [1, 2], b = 0.5.
     * sample 1: x = [1, 0], y = 1: y_hat = 1.5, d = 0.5, loss 0.25, dL/dy_hat = 1
     * sample 2: x = [2, 1], y = 3: y_hat = 4.5, d = 1.5, loss 2.25, dL/dy_hat = 3
     * loss_sum = 2.5; dw = 1*[1,0] + 3*[2,1] = [7, 3]; db = 1 + 3 = 4. */
    const float p[3] = {1, 2, 0.5f};
    const float x[4] = {1, 0, 2, 1};
    const float y[2] = {1, 3};
    set_floats(wkr_model_params(m), p, 3);
    double loss = -1;
    assert_int_equal(wkr_model_accumulate(m, x, y, 2, &loss, NULL, NULL), 0);
    assert_close(loss, 2.5, 1e-6, 1e-6);
    const double want[3] = {7, 3, 4};
    assert_grads(m, want, 3);

    int64_t correct = -1;
    assert_int_equal(wkr_model_evaluate(m, x, y, 2, &loss, &correct), 0);
    assert_close(loss, 2.5, 1e-6, 1e-6);
    assert_int_equal(correct, 0);
    wkr_model_destroy(&m);
}

static void test_softmax_hand(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 2, 2, NULL, 0, 2), 0);
    /* W = I, b = 0, so z = x.
     * sample 1: x = [ln 3, 0], y = 0: p = [3/4, 1/4], loss = ln(4/3),
     *           dz = p - e0 = [-1/4, 1/4]
     * sample 2: x = [0, 0], y = 1: p = [1/2, 1/2], loss = ln 2,
     *           dz = [1/2, -1/2]
     * loss_sum = ln(8/3); dW = dz^T X = [[-ln3/4, 0], [ln3/4, 0]];
     * db = [-1/4 + 1/2, 1/4 - 1/2] = [1/4, -1/4]. */
    const float p[6] = {1, 0, 0, 1, 0, 0};
    const float x[4] = {(float)log(3.0), 0, 0, 0};
    const float y[2] = {0, 1};
    set_floats(wkr_model_params(m), p, 6);
    double loss = -1;
    assert_int_equal(wkr_model_accumulate(m, x, y, 2, &loss, NULL, NULL), 0);
    assert_close(loss, log(8.0 / 3.0), 1e-6, 1e-6);
    double l3 = log(3.0) / 4;
    const double want[6] = {-l3, 0, l3, 0, 0.25, -0.25};
    assert_grads(m, want, 6);
    wkr_model_destroy(&m);
}

static void test_mlp_hand(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    int h[1] = {2};
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 2, 2, h, 1, 1), 0);
    /* fc1: W1 = [[1, -1], [1, 1]], b1 = 0; fc2: W2 = I, b2 = 0.
     * x = [1, 2], y = 1: a = W1 x = [-1, 3], h = relu(a) = [0, 3], z = [0, 3].
     * s = 1/(1 + e^3) = softmax(z)_0; loss = -log(1 - s) = log(1 + e^-3).
     * dz = [s, -s]; dW2 = dz h^T = [[0, 3s], [0, -3s]]; db2 = [s, -s].
     * dh = W2^T dz = [s, -s]; the ReLU blocks unit 0 (a0 < 0): da = [0, -s].
     * dW1 = da x^T = [[0, 0], [-s, -2s]]; db1 = [0, -s]. */
    const float p[12] = {1, -1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0};
    const float x[2] = {1, 2};
    const float y[1] = {1};
    set_floats(wkr_model_params(m), p, 12);
    double loss = -1;
    assert_int_equal(wkr_model_accumulate(m, x, y, 1, &loss, NULL, NULL), 0);
    assert_close(loss, log(1.0 + exp(-3.0)), 1e-7, 1e-5);
    double s = 1.0 / (1.0 + exp(3.0));
    const double want[12] = {0, 0, -s, -2 * s, 0, -s, 0, 3 * s, 0, -3 * s, s, -s};
    assert_grads(m, want, 12);
    wkr_model_destroy(&m);
}

/* Logits far apart: the max-subtraction keeps exp() finite. */
static void test_softmax_stable(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 2, 2, NULL, 0, 1), 0);
    /* z = [1000, 0], y = 1: loss = 1000 (exactly, up to e^-1000);
     * dz = [1, -1] in float. */
    const float p[6] = {1, 0, 0, 1, 0, 0};
    const float x[2] = {1000, 0};
    const float y[1] = {1};
    set_floats(wkr_model_params(m), p, 6);
    double loss = -1;
    assert_int_equal(wkr_model_accumulate(m, x, y, 1, &loss, NULL, NULL), 0);
    assert_close(loss, 1000.0, 0, 1e-9);
    const double want[6] = {1000, 0, -1000, 0, 1, -1};
    assert_grads(m, want, 6);
    wkr_model_destroy(&m);
}

/* ----------------------------------------------- finite-difference checks */

typedef struct {
    wkr_model_kind_t kind;
    int features, classes, nhidden;
    int hidden[2];
} spec_t;

/* Independent double-precision forward pass giving the summed loss. */
static double ref_loss(const spec_t *s, const double *p, const float *x, const float *y, int n)
{
    int widths[4], nl = 0;
    widths[nl++] = s->features;
    for (int i = 0; i < s->nhidden; i++) {
        widths[nl++] = s->hidden[i];
    }
    widths[nl++] = s->kind == WKR_MODEL_LINEAR ? 1 : s->classes;
    double total = 0;
    for (int r = 0; r < n; r++) {
        double a[8] = {0}, b[8] = {0};
        for (int j = 0; j < s->features; j++) {
            a[j] = x[r * s->features + j];
        }
        const double *q = p;
        for (int l = 0; l + 1 < nl; l++) {
            int in = widths[l], out = widths[l + 1];
            for (int o = 0; o < out; o++) {
                double z = q[in * out + o];
                for (int i = 0; i < in; i++) {
                    z += q[o * in + i] * a[i];
                }
                b[o] = (l + 2 < nl && z < 0) ? 0 : z;
            }
            q += in * out + out;
            memcpy(a, b, sizeof a);
        }
        if (s->kind == WKR_MODEL_LINEAR) {
            total += (a[0] - y[r]) * (a[0] - y[r]);
            continue;
        }
        double sum = 0;
        for (int c = 0; c < s->classes; c++) {
            sum += exp(a[c]);
        }
        total += log(sum) - a[(int)y[r]];
    }
    return total;
}

static void random_fill(float *v, size_t n, ps_rng_t *r, float scale)
{
    for (size_t i = 0; i < n; i++) {
        v[i] = (2.0f * ps_rng_uniform(r) - 1.0f) * scale;
    }
}

/* Random inputs, targets and weights (larger than the default init so every
 * layer matters). */
static void fd_data(const spec_t *s, wkr_model_t *m, float *x, float *y, int n)
{
    ps_rng_t r;
    ps_rng_seed(&r, 1234, (uint64_t)s->kind);
    random_fill(x, (size_t)n * (size_t)s->features, &r, 1.0f);
    for (int i = 0; i < n; i++) {
        y[i] = s->kind == WKR_MODEL_LINEAR ? 2.0f * ps_rng_uniform(&r) - 1.0f
                                           : (float)ps_rng_below(&r, (uint64_t)s->classes);
    }
    random_fill(wkr_model_params(m), wkr_model_layout(m)->total, &r, 1.0f);
}

static void fd_check(const spec_t *s)
{
    enum { N = 4 };
    wkr_model_t *m = NULL;
    assert_int_equal(wkr_model_new(&m, s->kind, s->features, s->classes, s->hidden, s->nhidden, N),
                     0);
    size_t total = wkr_model_layout(m)->total;
    float x[N * 8], y[N];
    fd_data(s, m, x, y, N);
    double loss = 0;
    assert_int_equal(wkr_model_accumulate(m, x, y, N, &loss, NULL, NULL), 0);

    double *p = malloc(total * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < total; i++) {
        p[i] = wkr_model_params(m)[i];
    }
    assert_close(loss, ref_loss(s, p, x, y, N), 1e-5, 1e-5);
    const double eps = 1e-6;
    const float *g = wkr_model_grads(m);
    for (size_t i = 0; i < total; i++) {
        double keep = p[i];
        p[i] = keep + eps;
        double up = ref_loss(s, p, x, y, N);
        p[i] = keep - eps;
        double down = ref_loss(s, p, x, y, N);
        p[i] = keep;
        double fd = (up - down) / (2 * eps);
        if (!(fabs(g[i] - fd) <= 1e-4 + 1e-4 * fabs(fd))) {
            fail_msg("%s param %zu: grad %.7g, finite difference %.7g",
                     wkr_model_kind_name(s->kind), i, (double)g[i], fd);
        }
    }
    free(p);
    wkr_model_destroy(&m);
}

static void test_fd_linear(void **state)
{
    (void)state;
    spec_t s = {WKR_MODEL_LINEAR, 5, 0, 0, {0, 0}};
    fd_check(&s);
}

static void test_fd_softmax(void **state)
{
    (void)state;
    spec_t s = {WKR_MODEL_SOFTMAX, 5, 3, 0, {0, 0}};
    fd_check(&s);
}

static void test_fd_mlp(void **state)
{
    (void)state;
    spec_t s = {WKR_MODEL_MLP, 5, 3, 2, {4, 3}};
    fd_check(&s);
}

static void test_fd_mlp_one_hidden(void **state)
{
    (void)state;
    spec_t s = {WKR_MODEL_MLP, 5, 4, 1, {6, 0}};
    fd_check(&s);
}

/* ----------------------------------------------------------- accumulation */

typedef struct {
    wkr_model_t *m;
    const float *want; /* the gradients after a full call from zero */
    size_t total;
    size_t firsts[8];
    int calls;
} cb_state_t;

/* Checks at call time that grads[first..total) are final and that the
 * layers not yet reported are still untouched (zero). */
static void record_cb(void *arg, size_t first)
{
    cb_state_t *st = arg;
    const float *g = wkr_model_grads(st->m);
    if (st->calls < 8) {
        st->firsts[st->calls] = first;
    }
    st->calls++;
    for (size_t i = first; i < st->total; i++) {
        assert_close(g[i], st->want[i], 1e-7, 1e-6);
    }
    for (size_t i = 0; i < first; i++) {
        assert_true(g[i] == 0.0f);
    }
}

static wkr_model_t *small_mlp(float *x, float *y, int n)
{
    wkr_model_t *m = NULL;
    int h[2] = {4, 3};
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 5, 3, h, 2, n), 0);
    wkr_model_fill_weights(m, WKR_INIT_DEFAULT, 42);
    ps_rng_t r;
    ps_rng_seed(&r, 99, 0);
    random_fill(x, (size_t)n * 5, &r, 2.0f);
    for (int i = 0; i < n; i++) {
        y[i] = (float)ps_rng_below(&r, 3);
    }
    return m;
}

static void test_accumulate_adds(void **state)
{
    (void)state;
    float x[40], y[8];
    wkr_model_t *m = small_mlp(x, y, 8);
    size_t total = wkr_model_layout(m)->total;
    float *full = malloc(total * sizeof *full);
    assert_non_null(full);
    double l_full = 0, l_a = 0, l_b = 0;
    assert_int_equal(wkr_model_accumulate(m, x, y, 8, &l_full, NULL, NULL), 0);
    memcpy(full, wkr_model_grads(m), total * sizeof *full);

    /* Two halves into zeroed gradients equal one full call. */
    wkr_model_zero_grads(m);
    for (size_t i = 0; i < total; i++) {
        assert_true(wkr_model_grads(m)[i] == 0.0f);
    }
    assert_int_equal(wkr_model_accumulate(m, x, y, 4, &l_a, NULL, NULL), 0);
    assert_int_equal(wkr_model_accumulate(m, x + 20, y + 4, 4, &l_b, NULL, NULL), 0);
    assert_close(l_a + l_b, l_full, 1e-6, 1e-6);
    const float *g = wkr_model_grads(m);
    for (size_t i = 0; i < total; i++) {
        assert_close(g[i], full[i], 1e-6, 1e-5);
    }
    /* Adding the full batch again doubles the sum: nothing is overwritten. */
    assert_int_equal(wkr_model_accumulate(m, x, y, 8, &l_a, NULL, NULL), 0);
    for (size_t i = 0; i < total; i++) {
        assert_close(g[i], 2.0 * full[i], 1e-6, 1e-5);
    }
    /* n == 0 changes nothing and reports zero loss. */
    l_a = -1;
    assert_int_equal(wkr_model_accumulate(m, x, y, 0, &l_a, NULL, NULL), 0);
    assert_true(l_a == 0.0);
    for (size_t i = 0; i < total; i++) {
        assert_close(g[i], 2.0 * full[i], 1e-6, 1e-5);
    }
    free(full);
    wkr_model_destroy(&m);
}

static void test_callback_order(void **state)
{
    (void)state;
    float x[20], y[4];
    wkr_model_t *m = small_mlp(x, y, 4);
    const ps_layout_t *l = wkr_model_layout(m);
    float *want = malloc(l->total * sizeof *want);
    assert_non_null(want);
    double loss;
    assert_int_equal(wkr_model_accumulate(m, x, y, 4, &loss, NULL, NULL), 0);
    memcpy(want, wkr_model_grads(m), l->total * sizeof *want);

    wkr_model_zero_grads(m);
    cb_state_t st = {.m = m, .want = want, .total = l->total};
    assert_int_equal(wkr_model_accumulate(m, x, y, 4, &loss, record_cb, &st), 0);
    assert_int_equal(st.calls, 3);
    assert_int_equal(st.firsts[0], l->t[ps_layout_find(l, "fc3.weight")].offset);
    assert_int_equal(st.firsts[1], l->t[ps_layout_find(l, "fc2.weight")].offset);
    assert_int_equal(st.firsts[2], 0);

    /* No callback for an empty batch. */
    st.calls = 0;
    assert_int_equal(wkr_model_accumulate(m, x, y, 0, &loss, record_cb, &st), 0);
    assert_int_equal(st.calls, 0);
    free(want);
    wkr_model_destroy(&m);
}

static void test_callback_single_layer(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 3, 2, NULL, 0, 2), 0);
    float want[8] = {0};
    cb_state_t st = {.m = m, .want = want, .total = 0};
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const float y[2] = {0, 1};
    double loss;
    assert_int_equal(wkr_model_accumulate(m, x, y, 2, &loss, record_cb, &st), 0);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.firsts[0], 0);
    wkr_model_destroy(&m);
}

/* -------------------------------------------------------- initialisation */

/* v lies in +-1/sqrt(in), fills the range and is centred: a wrong bound
 * (e.g. 1/in or 1/sqrt(out)) fails here. */
static void check_uniform(const float *v, size_t n, int in)
{
    double bound = 1.0 / sqrt((double)in), lo = 0, hi = 0, mean = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(fabs(v[i]) <= bound * (1 + 1e-6));
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        mean += v[i];
    }
    mean /= (double)n;
    if (n >= 1000) {
        assert_true(hi > 0.98 * bound && lo < -0.98 * bound);
        assert_true(fabs(mean) < 0.1 * bound);
    } else if (n >= 50) {
        assert_true(hi > 0.5 * bound && lo < -0.5 * bound);
    }
}

static void test_init_default(void **state)
{
    (void)state;
    wkr_model_t *a = NULL, *b = NULL;
    int h[1] = {50};
    assert_int_equal(wkr_model_new(&a, WKR_MODEL_MLP, 100, 4, h, 1, 1), 0);
    assert_int_equal(wkr_model_new(&b, WKR_MODEL_MLP, 100, 4, h, 1, 1), 0);
    const ps_layout_t *l = wkr_model_layout(a);
    size_t total = l->total;
    wkr_model_fill_weights(a, WKR_INIT_DEFAULT, 7);
    wkr_model_fill_weights(b, WKR_INIT_DEFAULT, 7);
    assert_memory_equal(wkr_model_params(a), wkr_model_params(b), total * sizeof(float));
    wkr_model_fill_weights(b, WKR_INIT_DEFAULT, 8);
    size_t same = 0;
    for (size_t i = 0; i < total; i++) {
        same += wkr_model_params(a)[i] == wkr_model_params(b)[i];
    }
    assert_true(same < total / 100);

    for (int t = 0; t < l->n; t++) {
        check_uniform(wkr_model_params(a) + l->t[t].offset, l->t[t].numel, t < 2 ? 100 : 50);
    }
    wkr_model_destroy(&a);
    wkr_model_destroy(&b);
}

static void test_init_zeros(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    int h[2] = {4, 3};
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_MLP, 5, 3, h, 2, 1), 0);
    size_t total = wkr_model_layout(m)->total;
    wkr_model_fill_weights(m, WKR_INIT_DEFAULT, 1);
    wkr_model_fill_weights(m, WKR_INIT_ZEROS, 1);
    for (size_t i = 0; i < total; i++) {
        assert_true(wkr_model_params(m)[i] == 0.0f);
    }
    /* All-zero softmax: every class has probability 1/3. */
    const float x[5] = {1, 2, 3, 4, 5};
    const float y[1] = {2};
    double loss;
    assert_int_equal(wkr_model_accumulate(m, x, y, 1, &loss, NULL, NULL), 0);
    assert_close(loss, log(3.0), 1e-6, 1e-6);
    wkr_model_destroy(&m);
}

/* ------------------------------------------------------------- evaluation */

static void test_evaluate(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    /* max_batch 2 with 5 samples: evaluate works in pieces of 2, 2, 1. */
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 3, 3, NULL, 0, 2), 0);
    /* W = I, b = 0: the logits are x and the argmax is the largest x. */
    const float p[12] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
    set_floats(wkr_model_params(m), p, 12);
    /* Row argmaxes 0, 1, 2, 1 and a tie among all three (the first, 0). */
    const float x[15] = {5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 5, 0, 0, 0, 0};
    const float y[5] = {0, 1, 0, 2, 0};
    /* Hits: samples 0, 1 and 4 (ties go to the first maximum, as in
     * torch.argmax).  Losses: right with margin 5 -> log(1 + 2e^-5);
     * wrong by 5 -> 5 + log(1 + 2e^-5); all equal -> log 3. */
    double right = log(1 + 2 * exp(-5.0)), wrong = 5 + right;
    double loss = -1;
    int64_t correct = -1;
    assert_int_equal(wkr_model_evaluate(m, x, y, 5, &loss, &correct), 0);
    assert_int_equal(correct, 3);
    assert_close(loss, 2 * right + 2 * wrong + log(3.0), 1e-6, 1e-6);
    /* Evaluation leaves the gradients alone. */
    for (size_t i = 0; i < 12; i++) {
        assert_true(wkr_model_grads(m)[i] == 0.0f);
    }
    assert_int_equal(wkr_model_evaluate(m, x, y, 0, &loss, &correct), 0);
    assert_true(loss == 0.0 && correct == 0);
    wkr_model_destroy(&m);
}

/* ----------------------------------------------------------------- errors */

static void test_bad_labels(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_SOFTMAX, 2, 3, NULL, 0, 2), 0);
    wkr_model_fill_weights(m, WKR_INIT_DEFAULT, 3);
    const float x[4] = {1, 2, 3, 4};
    double loss;
    int64_t correct;
    const float high[2] = {0, 3};
    assert_int_equal(wkr_model_accumulate(m, x, high, 2, &loss, NULL, NULL), PS_ERANGE);
    assert_non_null(strstr(ps_error_msg(), "sample 1"));
    const float neg[2] = {-1, 0};
    assert_int_equal(wkr_model_accumulate(m, x, neg, 2, &loss, NULL, NULL), PS_ERANGE);
    const float frac[2] = {0.5f, 0};
    assert_int_equal(wkr_model_accumulate(m, x, frac, 2, &loss, NULL, NULL), PS_EINVAL);
    const float nan_[2] = {0, NAN};
    assert_int_equal(wkr_model_accumulate(m, x, nan_, 2, &loss, NULL, NULL), PS_EINVAL);
    const float big[2] = {0, 1e30f};
    assert_int_equal(wkr_model_accumulate(m, x, big, 2, &loss, NULL, NULL), PS_ERANGE);
    /* Nothing was accumulated by the failed calls. */
    for (size_t i = 0; i < 9; i++) {
        assert_true(wkr_model_grads(m)[i] == 0.0f);
    }
    /* evaluate: the bad label is in the second piece; its index is global. */
    const float x3[6] = {1, 2, 3, 4, 5, 6};
    const float y3[3] = {0, 1, 7};
    assert_int_equal(wkr_model_evaluate(m, x3, y3, 3, &loss, &correct), PS_ERANGE);
    assert_non_null(strstr(ps_error_msg(), "sample 2"));
    /* Batch size outside [0, max_batch]. */
    const float ok[3] = {0, 1, 2};
    assert_int_equal(wkr_model_accumulate(m, x3, ok, 3, &loss, NULL, NULL), PS_ERANGE);
    assert_int_equal(wkr_model_accumulate(m, x3, ok, -1, &loss, NULL, NULL), PS_EINVAL);
    wkr_model_destroy(&m);
}

/* Regression targets may be any finite value, not infinity. */
static void test_bad_targets(void **state)
{
    (void)state;
    wkr_model_t *m = NULL;
    const float x[4] = {1, 2, 3, 4};
    double loss;
    int64_t correct;
    assert_int_equal(wkr_model_new(&m, WKR_MODEL_LINEAR, 2, 0, NULL, 0, 2), 0);
    const float reg[2] = {-7.25f, 1e6f};
    assert_int_equal(wkr_model_accumulate(m, x, reg, 2, &loss, NULL, NULL), 0);
    const float inf[2] = {0, INFINITY};
    assert_int_equal(wkr_model_evaluate(m, x, inf, 2, &loss, &correct), PS_EINVAL);
    wkr_model_destroy(&m);
}

int main(void)
{
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_linear_hand),
        cmocka_unit_test(test_softmax_hand),
        cmocka_unit_test(test_mlp_hand),
        cmocka_unit_test(test_softmax_stable),
        cmocka_unit_test(test_fd_linear),
        cmocka_unit_test(test_fd_softmax),
        cmocka_unit_test(test_fd_mlp),
        cmocka_unit_test(test_fd_mlp_one_hidden),
        cmocka_unit_test(test_accumulate_adds),
        cmocka_unit_test(test_callback_order),
        cmocka_unit_test(test_callback_single_layer),
        cmocka_unit_test(test_init_default),
        cmocka_unit_test(test_init_zeros),
        cmocka_unit_test(test_evaluate),
        cmocka_unit_test(test_bad_labels),
        cmocka_unit_test(test_bad_targets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
