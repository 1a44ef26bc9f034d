/*
 * bench_table: the sparse table's server-side benchmarks (issue 14).
 *
 *     bench_table [-o RESULTS.jsonl] [-b BIG_ROWS] [NAME...]
 *
 * NAME is any of (default: all three)
 *   sparse_rows_per_s          exact-mode update throughput on one core:
 *                              a 1M-row table of dim 16 (momentum 0.9,
 *                              weight decay), steps touching 64k random
 *                              rows, in rows per second; the reference is
 *                              the dense kernel (srv_optim_apply) over the
 *                              same number of floats in one array, so the
 *                              ratio is the sparse path's own cost
 *   sparse_bytes_per_row       srv_table_bytes / rows minus the weights and
 *                              velocity, at dim 1 (16M rows) and dim 16
 *                              (4M rows), one line each
 *                              (sparse_bytes_per_row_dim1, _dim16); the
 *                              reference is the goal, 16 bytes
 *   sparse_table_size_scaling  step time with BIG_ROWS (default 64M) rows
 *                              already in the table (dim 1) against 1M, the
 *                              same 64k rows touched per step; value and
 *                              reference are milliseconds, ratio the 1M
 *                              time over the big one (goal >= 1/1.3)
 * Rows are random 64-bit keys loaded with srv_table_import; steps pick
 * random existing keys (sorted, unique), one part, exact mode.  Step times
 * are the median of STEPS steps after WARM warm-up steps, in this
 * thread's CPU time (the machine is shared).  Prints one line
 * per result and appends one JSON line each to RESULTS.jsonl.
 */
#include "ps_err.h"
#include "ps_rng.h"
#include "srv_optim.h"
#include "srv_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOUCH 65536
#define STEPS 31
#define WARM 3

static const char *g_out;

/* This thread's CPU time: the machine is shared, and a step's cost on one
 * core is what is measured (wall time would count other jobs' turns). */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void emit(const char *name, double value, const char *unit, const char *ref,
                 double ref_value, double ratio)
{
    printf("%-32s %.4g %s  reference (%s) %.4g  ratio %.3f\n", name, value, unit, ref, ref_value,
           ratio);
    fflush(stdout); /* the big table takes minutes to build: show results as they come */
    if (g_out == NULL) {
        return;
    }
    FILE *f = fopen(g_out, "a");
    if (f == NULL) {
        fprintf(stderr, "bench_table: cannot open %s\n", g_out);
        return;
    }
    fprintf(f,
            "{\"name\":\"%s\",\"value\":%.6g,\"unit\":\"%s\",\"reference\":\"%s\","
            "\"reference_value\":%.6g,\"ratio\":%.4f}\n",
            name, value, unit, ref, ref_value, ratio);
    fclose(f);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* n distinct random keys, ascending. */
static uint64_t *make_keys(size_t n, uint64_t seed)
{
    uint64_t *k = malloc(n * sizeof *k);
    if (k == NULL) {
        return NULL;
    }
    ps_rng_t r;
    ps_rng_seed(&r, seed, 0);
    size_t m = 0;
    while (m < n) {
        for (size_t i = m; i < n; i++) {
            k[i] = ps_rng_next(&r);
        }
        qsort(k, n, sizeof *k, cmp_u64);
        m = 1;
        for (size_t i = 1; i < n; i++) {
            if (k[i] != k[m - 1]) {
                k[m++] = k[i];
            }
        }
    }
    return k;
}

/* A table of `rows` random keys (dim, exact, momentum 0.9), loaded by
 * import; the keys stay with the caller for picking touched rows. */
static srv_table_t *filled_table(size_t rows, uint32_t dim, uint64_t **keys_out)
{
    srv_optim_cfg_t c = {.momentum = 0.9, .weight_decay = 1e-4};
    srv_table_init_t init = {.kind = SRV_TABLE_INIT_UNIFORM, .bound = 0.01f, .seed = 1};
    srv_table_t *t = NULL;
    uint64_t *keys = make_keys(rows, rows ^ dim);
    float *w = keys != NULL ? calloc(rows * dim, sizeof *w) : NULL;
    if (w == NULL || srv_table_new(&t, "bench", 1, dim, &init, &c, SRV_SPARSE_EXACT, 0) != 0 ||
        srv_table_import(t, keys, w, NULL, rows, 0) != 0) {
        fprintf(stderr, "bench_table: cannot build a table of %zu rows: %s\n", rows,
                ps_error_msg());
        srv_table_destroy(&t);
        free(keys);
        keys = NULL;
    }
    free(w);
    *keys_out = keys;
    return t;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median time of one exact step touching TOUCH random rows of the table. */
static double step_time(srv_table_t *t, const uint64_t *keys, size_t rows, uint32_t dim)
{
    uint64_t *pk = malloc(TOUCH * sizeof *pk);
    float *g = malloc((size_t)TOUCH * dim * sizeof *g);
    double times[STEPS];
    ps_rng_t r;
    ps_rng_seed(&r, 7, dim);
    for (size_t i = 0; g != NULL && i < (size_t)TOUCH * dim; i++) {
        g[i] = ps_rng_uniform(&r) - 0.5f;
    }
    double med = -1.0;
    for (int s = 0; pk != NULL && g != NULL && s < WARM + STEPS; s++) {
        for (size_t i = 0; i < TOUCH; i++) {
            pk[i] = keys[ps_rng_below(&r, rows)];
        }
        qsort(pk, TOUCH, sizeof *pk, cmp_u64);
        size_t n = 1;
        for (size_t i = 1; i < TOUCH; i++) {
            if (pk[i] != pk[n - 1]) {
                pk[n++] = pk[i];
            }
        }
        srv_rows_part_t p = {pk, n, g, 0.5f};
        double t0 = cpu_now();
        if (srv_table_apply(t, &p, 1, 0.01) != 0) {
            fprintf(stderr, "bench_table: apply: %s\n", ps_error_msg());
            break;
        }
        if (s >= WARM) {
            times[s - WARM] = (cpu_now() - t0) * (double)TOUCH / (double)n;
        }
        if (s == WARM + STEPS - 1) {
            qsort(times, STEPS, sizeof *times, cmp_dbl);
            med = times[STEPS / 2];
        }
    }
    free(pk);
    free(g);
    return med;
}

/* The dense kernel over TOUCH * dim floats: the reference for rows/s. */
static double dense_time(uint32_t dim)
{
    size_t n = (size_t)TOUCH * dim;
    float *w = calloc(n, sizeof *w), *b = calloc(n, sizeof *b), *g = calloc(n, sizeof *g);
    srv_optim_cfg_t c = {.lr = 0.01, .momentum = 0.9, .weight_decay = 1e-4};
    const float *parts[1] = {g};
    float coef = 0.5f;
    double best = 1e30;
    for (int s = 0; w != NULL && b != NULL && g != NULL && s < WARM + STEPS; s++) {
        double t0 = cpu_now();
        srv_optim_apply(&c, w, b, parts, &coef, 1, n, 0);
        double dt = cpu_now() - t0;
        best = dt < best ? dt : best;
    }
    free(w), free(b), free(g);
    return best;
}

static int bench_rows_per_s(void)
{
    uint64_t *keys;
    srv_table_t *t = filled_table((size_t)1 << 20, 16, &keys);
    if (t == NULL) {
        return 1;
    }
    double ts = step_time(t, keys, (size_t)1 << 20, 16), td = dense_time(16);
    srv_table_destroy(&t);
    free(keys);
    if (ts <= 0.0) {
        return 1;
    }
    double x = TOUCH / ts, y = TOUCH / td;
    emit("sparse_rows_per_s", x, "rows/s",
         "dense kernel on the same floats, dim 16, 64k of 1M rows", y, x / y);
    return 0;
}

static int bench_bytes(uint32_t dim, size_t rows, const char *name)
{
    uint64_t *keys;
    srv_table_t *t = filled_table(rows, dim, &keys);
    if (t == NULL) {
        return 1;
    }
    /* Touch some rows so the step maps and a step's state are counted. */
    double ts = step_time(t, keys, rows, dim);
    double per = (double)srv_table_bytes(t) / (double)rows - 2.0 * dim * sizeof(float);
    char ref[96];
    snprintf(ref, sizeof ref, "goal, %zuM rows of dim %u", rows >> 20, dim);
    emit(name, per, "bytes/row", ref, 16.0, 16.0 / per);
    srv_table_destroy(&t);
    free(keys);
    return ts > 0.0 ? 0 : 1;
}

static int bench_scaling(size_t big)
{
    size_t small = (size_t)1 << 20;
    uint64_t *keys;
    srv_table_t *t = filled_table(small, 1, &keys);
    double t_small = t != NULL ? step_time(t, keys, small, 1) : -1.0;
    srv_table_destroy(&t);
    free(keys);
    t = filled_table(big, 1, &keys);
    double t_big = t != NULL ? step_time(t, keys, big, 1) : -1.0;
    size_t bytes = t != NULL ? srv_table_bytes(t) : 0;
    srv_table_destroy(&t);
    free(keys);
    if (t_small <= 0.0 || t_big <= 0.0) {
        return 1;
    }
    char name[64], ref[96];
    snprintf(name, sizeof name, "sparse_table_size_scaling%s",
             big == (size_t)64 << 20 ? "" : "_reduced");
    snprintf(ref, sizeof ref, "step with 1M rows (vs %zuM rows, %.0f MiB, dim 1)", big >> 20,
             (double)bytes / 1048576.0);
    emit(name, t_big * 1e3, "ms", ref, t_small * 1e3, t_small / t_big);
    printf("  (64k rows touched per step; big/small step time %.3f, goal <= 1.3)\n",
           t_big / t_small);
    return 0;
}

int main(int argc, char **argv)
{
    size_t big = (size_t)64 << 20;
    int which[3] = {0, 0, 0}, any = 0, rv = 0;
    static const char *names[3] = {"sparse_rows_per_s", "sparse_bytes_per_row",
                                   "sparse_table_size_scaling"};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            g_out = argv[++i];
        } else if (strcmp(argv[i], "-b") == 0 && i + 1 < argc) {
            char *end;
            big = (size_t)strtoull(argv[++i], &end, 10);
            if (*end != '\0' || big < ((size_t)1 << 20) || big > ((size_t)1 << 31)) {
                fprintf(stderr, "bench_table: -b wants rows from 1048576 to 2^31, not '%s'\n",
                        argv[i]);
                return 2;
            }
        } else {
            int k = 0;
            while (k < 3 && strcmp(argv[i], names[k]) != 0) {
                k++;
            }
            if (k == 3) {
                fprintf(stderr,
                        "bench_table: unknown argument '%s' (want -o FILE, -b ROWS, or %s, %s, "
                        "%s)\n",
                        argv[i], names[0], names[1], names[2]);
                return 2;
            }
            which[k] = any = 1;
        }
    }
    if (!any || which[0]) {
        rv |= bench_rows_per_s();
    }
    if (!any || which[1]) {
        rv |= bench_bytes(1, (size_t)16 << 20, "sparse_bytes_per_row_dim1");
        rv |= bench_bytes(16, (size_t)4 << 20, "sparse_bytes_per_row_dim16");
    }
    if (!any || which[2]) {
        rv |= bench_scaling(big);
    }
    if (rv != 0) {
        fprintf(stderr, "bench_table: failed\n");
    }
    return rv;
}
