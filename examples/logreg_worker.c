/*
 * logreg_worker: logistic regression by hand on libpsclient (ps.h), a drop-in
 * replacement for ps-worker (walk-through: docs/api.md):
 *   mpirun -np 1 ps-server --lr 0.5 --save m.safetensors : -np 2 ./logreg_worker [OUT]
 * Data: x uniform in [-1, 1)^D, label 1 when x0 + x1 - x2 > 0; sample i is
 * worker (i mod W)'s.  A step pushes the mean gradient of B samples per worker.
 * With OUT, worker 0 also writes the weights it holds at the end there.
 */
#include <math.h>
#include <ps.h>
#include <stdio.h>
#include <string.h>

enum { N = 4000, D = 4, B = 50, EPOCHS = 5 }; /* samples, features, batch, epochs */

/* Sample i (the same on every worker): adds its loss to m[0], 1 to m[1] when
 * it is classified right and, with g, its share of the mean gradient over n. */
static void visit(uint32_t i, const float *w, const float *b, float **g, float n, double *m)
{
    float x[D], z = b[0];
    uint32_t s = (i + 1) * 2654435761u;
    for (int k = 0; k < D; k++) {
        s = s * 1664525u + 1013904223u;
        x[k] = (float)(s >> 8) / 8388608.0f - 1.0f;
        z += w[k] * x[k];
    }
    float y = x[0] + x[1] - x[2] > 0, d = (1.0f / (1.0f + expf(-z)) - y) / n; /* dloss/dz / n */
    m[0] += log1pf(expf(-fabsf(z))) + fmaxf(z, 0.0f) - y * z;                 /* -log p(y | x) */
    m[1] += (z > 0) == (y > 0);
    if (g) {
        for (int k = 0; k < D; k++) {
            g[0][k] += d * x[k];
        }
        g[1][0] += d;
    }
}

/* Mean loss and accuracy over every worker's samples, printed by worker 0. */
static int evaluate(ps_t *ps, const ps_info_t *in, uint64_t epoch, const float *w, const float *b)
{
    double m[2] = {0, 0};
    for (uint32_t i = (uint32_t)in->rank; i < N; i += (uint32_t)in->nworkers) {
        visit(i, w, b, NULL, 1, m);
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
    float *w, *b, *g[2];
    ps_info_t in;
    ps_t *ps;
    if (ps_init(&ps, &argc, &argv, NULL) != 0) {
        return 1; /* the job's error line is printed already */
    }
    ps_info(ps, &in);
    uint64_t W = (uint64_t)in.nworkers, spe = (N + W * B - 1) / (W * B),
             mine = (N - in.rank + W - 1) / W;
    ps_declare(ps, "fc.weight", 2, (int64_t[]){1, D}, NULL); /* zeros; errors show in ps_start */
    ps_declare(ps, "fc.bias", 1, (int64_t[]){1}, NULL);
    ps_plan(ps, spe, EPOCHS * spe);
    if (ps_start(ps) != 0 || ps_tensor(ps, "fc.weight", &w, &g[0], NULL) != 0 ||
        ps_tensor(ps, "fc.bias", &b, &g[1], NULL) != 0) {
        return ps_finalize(&ps), 1;
    }
    ps_info(ps, &in); /* in.step: where the servers start (after their --resume) */
    for (uint64_t s = in.step; s <= EPOCHS * spe; s++) {
        if ((s % spe == 0 && evaluate(ps, &in, s / spe, w, b) != 0) || s == EPOCHS * spe) {
            break;
        }
        uint64_t lo = (s % spe) * B, n = mine > lo ? (mine - lo < B ? mine - lo : B) : 0;
        double m[2] = {0, 0};
        memset(g[0], 0, D * sizeof(float));
        g[1][0] = 0;
        for (uint64_t p = lo; p < lo + n; p++) { /* shard position p is sample p*W + rank */
            visit((uint32_t)(p * W + (uint64_t)in.rank), w, b, g, (float)n, m);
        }
        if (ps_step(ps, (uint32_t)n) != 0) {
            break; /* ps_finalize then ends the job with the message */
        }
    }
    if (argc > 1 && in.rank == 0 && ps_save(ps, argv[1]) != 0) {
        fprintf(stderr, "%s\n", ps_last_error());
    }
    return ps_finalize(&ps) == 0 ? 0 : 1;
}
