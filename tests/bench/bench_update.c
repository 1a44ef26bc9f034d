/*
 * bench_update: throughput of the server's update kernel against a plain
 * fused streaming loop over the same arrays.
 *
 *     bench_update [RESULTS.jsonl]
 *
 * Times srv_optim_apply() (momentum 0.9, one part of coefficient 1, not
 * the first step) over 16M floats per array (192 MiB in all, far beyond
 * any cache), best of several repetitions, and the reference loop
 *     b[i] = m*b[i] + g[i]; w[i] -= lr*b[i]
 * compiled here with the same flags.  Both read g, b, w and write b, w, so
 * both are bound by memory bandwidth and the ratio shows the kernel's own
 * overhead.  Then the same for the general path: the sutskever form, and
 * the torch form with maximize, clipping and decoupled weight decay.
 * Prints one line per variant and appends one JSON line each to
 * RESULTS.jsonl (update_kernel, update_kernel_sutskever,
 * update_kernel_extras).
 */
#include "ps_clock.h"
#include "ps_err.h"
#include "srv_optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N ((size_t)16 << 20)
#define REPS 7

/* The yardstick: what a hand-written fused loop costs on these arrays. */
static __attribute__((noinline)) void ref_update(float *restrict w, float *restrict b,
                                                 const float *restrict g, float m, float lr,
                                                 size_t n)
{
    for (size_t i = 0; i < n; i++) {
        b[i] = m * b[i] + g[i];
        w[i] -= lr * b[i];
    }
}

static float *alloc_fill(float v)
{
    float *p = aligned_alloc(64, N * sizeof(float));
    if (p != NULL) {
        for (size_t i = 0; i < N; i++) {
            p[i] = v * (float)(1 + (i & 7)); /* touch every page before timing */
        }
    }
    return p;
}

typedef struct {
    float *w, *b, *g;
    srv_optim_cfg_t cfg;
} bench_t;

static double time_kernel(bench_t *bn)
{
    const float one = 1.0f;
    const float *parts[1] = {bn->g};
    double t0 = ps_clock_now();
    srv_optim_apply(&bn->cfg, bn->w, bn->b, parts, &one, 1, N, 0);
    return ps_clock_now() - t0;
}

static double time_ref(bench_t *bn)
{
    double t0 = ps_clock_now();
    ref_update(bn->w, bn->b, bn->g, (float)bn->cfg.momentum, (float)bn->cfg.lr, N);
    return ps_clock_now() - t0;
}

static int append_json(const char *path, const char *name, double x, double y)
{
    FILE *f = fopen(path, "a");
    if (f == NULL) {
        fprintf(stderr, "bench_update: cannot open %s\n", path);
        return 1;
    }
    fprintf(f,
            "{\"name\":\"%s\",\"value\":%.4f,\"unit\":\"Gparam/s\","
            "\"reference\":\"fused streaming loop\",\"reference_value\":%.4f,\"ratio\":%.4f}\n",
            name, x, y, x / y);
    return fclose(f) == 0 ? 0 : 1;
}

/* Best of REPS for one setting and the reference; one line, one JSON line. */
static int bench_one(bench_t *bn, const char *name, const char *path)
{
    double best_k = 1e30, best_r = 1e30;
    time_kernel(bn); /* warm up both paths (ifunc resolution, page faults) */
    time_ref(bn);
    for (int r = 0; r < REPS; r++) {
        /* Interleaved, so drift in machine load hits both alike. */
        double tk = time_kernel(bn), tr = time_ref(bn);
        best_k = tk < best_k ? tk : best_k;
        best_r = tr < best_r ? tr : best_r;
    }
    double x = (double)N / best_k * 1e-9, y = (double)N / best_r * 1e-9;
    printf("%-24s %.3f Gparam/s  reference %.3f Gparam/s  ratio %.3f\n", name, x, y, x / y);
    return path != NULL ? append_json(path, name, x, y) : 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        srv_optim_cfg_t cfg;
    } runs[] = {
        {"update_kernel", {.lr = 1e-3, .momentum = 0.9}},
        {"update_kernel_sutskever", {.lr = 1e-3, .momentum = 0.9, .form = SRV_FORM_SUTSKEVER}},
        {"update_kernel_extras",
         {.lr = 1e-3, .momentum = 0.9, .maximize = 1, .clip_value = 1.0, .decoupled_wd = 1e-2}},
    };
    bench_t bn = {
        .w = alloc_fill(0.5f),
        .b = alloc_fill(0.0f),
        .g = alloc_fill(1e-3f),
    };
    int rv = bn.w == NULL || bn.b == NULL || bn.g == NULL;
    for (size_t i = 0; rv == 0 && i < sizeof runs / sizeof runs[0]; i++) {
        bn.cfg = runs[i].cfg;
        if (srv_optim_check(&bn.cfg) != 0) {
            fprintf(stderr, "bench_update: %s: %s\n", runs[i].name, ps_error_msg());
            rv = 1;
            break;
        }
        rv = bench_one(&bn, runs[i].name, argc > 1 ? argv[1] : NULL);
    }
    if (rv != 0) {
        fprintf(stderr, "bench_update: failed\n");
    }
    free(bn.w);
    free(bn.b);
    free(bn.g);
    return rv;
}
