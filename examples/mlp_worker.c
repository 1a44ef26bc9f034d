/*
 * mlp_worker: a two-layer MLP by hand on libpsclient (ps.h) with the
 * program's own arrays bound to the tensors, each layer pushed as soon as
 * backward has it, and each layer's weights waited for just before
 * forward needs them (walk-through: docs/api.md):
 *   mpirun -np 1 ps-server --lr 0.2 --momentum 0.9 : -np 2 ./mlp_worker [OUT] [--whole]
 * Data: x uniform in [-1, 1)^2, label 1 when x0 * x1 > 0 (no line separates
 * the classes); sample i is worker (i mod W)'s.  With OUT, worker 0 writes
 * the weights it holds at the end there.  --whole trains through ps_step
 * instead, which must give the same bits.
 */
#include <math.h>
#include <ps.h>
#include <stdio.h>
#include <string.h>

enum { N = 4000, D = 2, H = 16, B = 32, EPOCHS = 12 };
enum { W1, B1, W2, B2, NT }; /* fc1.weight [H,D], fc1.bias [H], fc2.weight [1,H], fc2.bias [1] */

static const char *const NAME[NT] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
static float w1[H * D], b1[H], w2[H], b2[1];   /* weights: ours, bound */
static float g1[H * D], gb1[H], g2[H], gb2[1]; /* gradients: ours, bound */
static float *const WEIGHT[NT] = {w1, b1, w2, b2};
static float *const GRAD[NT] = {g1, gb1, g2, gb2};
static const int64_t SIZE[NT] = {H * D, H, H, 1};
static const int NDIM[NT] = {2, 1, 2, 1};
static const int64_t DIMS[NT][2] = {{H, D}, {H}, {1, H}, {1}};

static void sample(uint32_t i, float *x, float *y)
{
    uint32_t s = (i + 1) * 2654435761u;
    for (int k = 0; k < D; k++) {
        s = s * 1664525u + 1013904223u;
        x[k] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    *y = x[0] * x[1] > 0;
}

/* Forward of layer 1 into h; pl (may be NULL) are its pending pulls. */
static int layer1(ps_pull_t **pl, const float *x, float *h)
{
    if ((pl[W1] && ps_wait_pulled(pl[W1]) != 0) || (pl[B1] && ps_wait_pulled(pl[B1]) != 0)) {
        return -1;
    }
    for (int j = 0; j < H; j++) {
        h[j] = fmaxf(b1[j] + w1[j * D] * x[0] + w1[j * D + 1] * x[1], 0.0f);
    }
    return 0;
}

static int layer2(ps_pull_t **pl, const float *h, float *z)
{
    if ((pl[W2] && ps_wait_pulled(pl[W2]) != 0) || (pl[B2] && ps_wait_pulled(pl[B2]) != 0)) {
        return -1;
    }
    *z = b2[0];
    for (int j = 0; j < H; j++) {
        *z += w2[j] * h[j];
    }
    return 0;
}

static double loss_of(float z, float y)
{
    return log1p(exp(-fabs(z))) + fmax(z, 0.0) - y * z; /* -log p(y | x), stable */
}

/* Request every layer's next weights, layer 1 first (forward's order). */
static int pull_all(ps_t *ps, ps_pull_t **pl)
{
    for (int t = 0; t < NT; t++) {
        if (ps_pull_tensor(ps, NAME[t], &pl[t]) != 0) {
            return -1;
        }
    }
    return 0;
}

static int wait_all(ps_pull_t **pl)
{
    for (int t = 0; t < NT; t++) {
        if (pl[t] && ps_wait_pulled(pl[t]) != 0) {
            return -1;
        }
        pl[t] = NULL;
    }
    return 0;
}

/* One step over shard positions [lo, lo + n): forward, each layer after
 * its pull (pl) is in; backward, pushing layer 2 and then layer 1 as soon
 * as each is final; then the pulls for the next step, left in flight.
 * With `whole`, one ps_step at the end instead. */
static int step(ps_t *ps, const ps_info_t *in, uint64_t lo, uint64_t n, ps_pull_t **pl, int whole)
{
    float x[B][D], y[B], h[B][H], z[B], dz[B];
    ps_pull_t *none[NT] = {NULL}, **wait = pl;
    uint32_t cnt = (uint32_t)n;
    for (uint64_t p = 0; p < n; p++, wait = none) { /* the first sample waits */
        sample((uint32_t)((lo + p) * (uint64_t)in->nworkers + (uint64_t)in->rank), x[p], &y[p]);
        if (layer1(wait, x[p], h[p]) != 0 || layer2(wait, h[p], &z[p]) != 0) {
            return -1;
        }
        dz[p] = (1.0f / (1.0f + expf(-z[p])) - y[p]) / (float)n; /* mean-loss dloss/dz */
    }
    if (wait_all(pl) != 0) { /* the last step is over: the gradients are ours */
        return -1;
    }
    for (int t = 0; t < NT; t++) {
        memset(GRAD[t], 0, (size_t)SIZE[t] * sizeof(float));
    }
    for (uint64_t p = 0; p < n; p++) {
        gb2[0] += dz[p];
        for (int j = 0; j < H; j++) {
            g2[j] += dz[p] * h[p][j];
        }
    }
    if (!whole && (ps_push_tensor(ps, "fc2.bias", cnt, NULL) != 0 ||
                   ps_push_tensor(ps, "fc2.weight", cnt, NULL) != 0)) {
        return -1; /* layer 2 left while layer 1's gradient is computed */
    }
    for (uint64_t p = 0; p < n; p++) {
        for (int j = 0; j < H; j++) {
            float dh = h[p][j] > 0 ? dz[p] * w2[j] : 0.0f;
            gb1[j] += dh;
            g1[j * D] += dh * x[p][0];
            g1[j * D + 1] += dh * x[p][1];
        }
    }
    if (whole) {
        return ps_step(ps, cnt);
    }
    return ps_push_tensor(ps, "fc1.bias", cnt, NULL) || ps_push_tensor(ps, "fc1.weight", cnt, NULL)
               ? -1
               : pull_all(ps, pl);
}

/* Mean loss and accuracy over every worker's samples, printed by worker 0. */
static int evaluate(ps_t *ps, const ps_info_t *in, uint64_t epoch)
{
    double m[2] = {0, 0};
    ps_pull_t *none[NT] = {NULL};
    for (uint32_t i = (uint32_t)in->rank; i < N; i += (uint32_t)in->nworkers) {
        float x[D], y, h[H], z;
        sample(i, x, &y);
        layer1(none, x, h);
        layer2(none, h, &z);
        m[0] += loss_of(z, y);
        m[1] += (z > 0) == (y > 0);
    }
    int rv = ps_reduce_sum(ps, m, 2);
    if (rv == 0 && in->rank == 0) {
        printf("epoch %llu loss %.4f accuracy %.4f\n", (unsigned long long)epoch, m[0] / N,
               m[1] / N);
    }
    return rv;
}

int main(int argc, char **argv)
{
    ps_info_t in;
    ps_t *ps;
    ps_pull_t *pl[NT] = {NULL};
    int whole = argc > 2 && strcmp(argv[2], "--whole") == 0;
    if (ps_init(&ps, &argc, &argv, NULL) != 0) {
        return 1; /* the job's error line is printed already */
    }
    ps_info(ps, &in);
    uint64_t W = (uint64_t)in.nworkers, spe = (N + W * B - 1) / (W * B),
             mine = (N - in.rank + W - 1) / W;
    for (int t = 0; t < NT; t++) { /* nn.Linear's init, fan-in from the weights */
        ps_initializer_t init = {.kind = PS_INIT_TORCH_LINEAR, .seed = 5};
        ps_declare(ps, NAME[t], NDIM[t], DIMS[t], &init);
        ps_bind(ps, NAME[t], WEIGHT[t], GRAD[t]); /* errors show in ps_start */
    }
    ps_plan(ps, spe, EPOCHS * spe);
    if (ps_start(ps) != 0) {
        return ps_finalize(&ps), 1;
    }
    ps_info(ps, &in); /* in.step: where the servers start (after their --resume) */
    for (uint64_t s = in.step; s <= EPOCHS * spe; s++) {
        if (s % spe == 0 && (wait_all(pl) != 0 || evaluate(ps, &in, s / spe) != 0)) {
            break;
        }
        if (s == EPOCHS * spe) {
            break;
        }
        uint64_t lo = (s % spe) * B, n = mine > lo ? (mine - lo < B ? mine - lo : B) : 0;
        if (step(ps, &in, lo, n, pl, whole) != 0) {
            break; /* ps_finalize then ends the job with the message */
        }
    }
    if (argc > 1 && in.rank == 0 && ps_save(ps, argv[1]) != 0) {
        fprintf(stderr, "%s\n", ps_last_error());
    }
    return ps_finalize(&ps) == 0 ? 0 : 1;
}
