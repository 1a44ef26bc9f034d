/*
 * api_probe: a custom worker that exercises every call of ps.h, for
 * test_install.sh.  Built against the INSTALLED library with pkg-config only;
 * run as 2 workers against `ps-server --lr LR --momentum 0`:
 *
 *     api_probe MODE SERVERS LR [OUT]
 *
 * Prints "probe[RANK]: ok - what" or "probe[RANK]: not ok - what (detail)"
 * per check; the script turns them into TAP lines.  MODE main runs three
 * steps with gradients whose update is known by hand (momentum 0: w -= lr*g,
 * g the sample-weighted mean of the workers' pushes); the other modes make
 * worker 1 misbehave in one way each, and the job must end promptly.
 */
#include <ps.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NP 27 /* parameters: 12 + 3 + 5 + 4 + 3 */

static int rank = -1, failures;

static void check(int ok, const char *what)
{
    printf("probe[%d]: %s - %s", rank, ok ? "ok" : "not ok", what);
    printf(ok ? "\n" : " (%s)\n", ps_last_error());
    fflush(stdout);
    failures += !ok;
}

static void declare_all(ps_t *ps, int misfit)
{
    static const float v[4] = {1, 2, 3, 4};
    ps_initializer_t lin = {.kind = PS_INIT_TORCH_LINEAR, .seed = 7};
    ps_initializer_t uni = {.kind = PS_INIT_UNIFORM, .bound = 0.25f, .seed = 1};
    ps_initializer_t val = {.kind = PS_INIT_VALUES, .values = v};
    check(ps_declare(ps, "l1.weight", 2, (int64_t[]){3, 4}, &lin) == 0, "declare torch-linear");
    check(ps_declare(ps, "l1.bias", 1, (int64_t[]){3}, &lin) == 0, "declare a bias (fan-in 4)");
    check(ps_declare(ps, "u", 1, (int64_t[]){5}, &uni) == 0, "declare uniform");
    int64_t vdims[2] = {misfit ? 4 : 2, misfit ? 1 : 2};
    check(ps_declare(ps, "v", 2, vdims, &val) == 0, "declare values");
    check(ps_declare(ps, "z", 1, (int64_t[]){3}, NULL) == 0, "declare zeros");
}

static int in_range(const float *x, size_t n, float b)
{
    int ok = 1, same = 1;
    for (size_t i = 0; i < n; i++) {
        ok &= fabsf(x[i]) <= b;
        same &= x[i] == x[0];
    }
    return ok && (n == 1 || !same);
}

/* The initial weights are worker 0's, drawn by the rules declared. */
static void check_init(ps_t *ps, float **w)
{
    const char *names[5] = {"l1.weight", "l1.bias", "u", "v", "z"};
    size_t n[5], want[5] = {12, 3, 5, 4, 3};
    for (int i = 0; i < 5; i++) {
        check(ps_tensor(ps, names[i], &w[i], NULL, &n[i]) == 0 && n[i] == want[i],
              "ps_tensor finds each tensor with its size");
    }
    check(in_range(w[0], 12, 0.5f) && in_range(w[1], 3, 0.5f), "nn.Linear init within 1/sqrt(4)");
    check(in_range(w[2], 5, 0.25f), "uniform init within its bound");
    check(w[3][0] == 1 && w[3][1] == 2 && w[3][2] == 3 && w[3][3] == 4, "values copied");
    check(w[4][0] == 0 && w[4][1] == 0 && w[4][2] == 0, "zeros");
    double s = 0;
    for (int i = 0; i < NP; i++) {
        s += w[0][i]; /* one flat array in declaration order */
    }
    double all = s;
    check(ps_reduce_sum(ps, &all, 1) == 0 && all == 2 * s, "every worker holds the same weights");
}

static void fill(ps_t *ps, float v)
{
    float *g;
    check(ps_tensor(ps, "l1.weight", NULL, &g, NULL) == 0, "gradient arrays");
    for (int i = 0; i < NP; i++) {
        g[i] = v;
    }
}

/* After a step with mean gradient g: w == before - lr * g, elementwise. */
static void check_update(const float *w, const float *before, double lr, double g, const char *what)
{
    int ok = 1;
    for (int i = 0; i < NP; i++) {
        ok &= fabs(w[i] - (before[i] - lr * g)) <= 1e-6 * (1 + fabs(before[i]));
    }
    check(ok, what);
}

static void steps(ps_t *ps, float *w, double lr)
{
    float before[NP];
    ps_push_t *h = NULL;
    ps_info_t in;
    memcpy(before, w, sizeof before);
    check(ps_pull(ps) == PS_ESTATE, "ps_pull before ps_push is refused");
    fill(ps, (float)(rank + 1)); /* pushes 1 (1 sample) and 2 (2 samples): g = 5/3 */
    check(ps_push(ps, (uint32_t)rank + 1, &h) == 0 && h, "ps_push gives a handle");
    check(ps_push(ps, 1, NULL) == PS_ESTATE, "a second push in a step is refused");
    ps_stats_t st;
    check(ps_stats(ps, &st) == PS_ESTATE, "ps_stats inside a step is refused");
    check(ps_wait(h) == 0 && ps_pull(ps) == 0, "ps_wait, ps_pull");
    check_update(w, before, lr, 5.0 / 3.0, "step 1: w -= lr * sample-weighted mean");
    check(ps_info(ps, &in) == 0 && in.step == 1, "the step count advances");
    memcpy(before, w, sizeof before);
    fill(ps, 1.0f);
    check(ps_push_from(ps, "z", 1) == 0, "ps_push_from the last tensor");
    check(ps_push_from(ps, "u", 2) == PS_EINVAL, "a different sample count in a step is refused");
    check(ps_push_from(ps, "u", 1) == 0 && ps_push(ps, 1, NULL) == 0 && ps_pull(ps) == 0,
          "layer-wise pushes, then the rest");
    check_update(w, before, lr, 1.0, "step 2: layer-wise push");
    memcpy(before, w, sizeof before);
    fill(ps, rank ? NAN : 2.0f); /* worker 1 has no samples: its values do not count */
    check(ps_step(ps, rank ? 0 : 4) == 0, "ps_step with an empty share");
    check_update(w, before, lr, 2.0, "step 3: an empty share carries no weight");
}

static void probe_main(ps_t *ps, int servers, double lr, const char *out)
{
    ps_info_t in;
    float *w[5];
    double v = rank + 1, got;
    check(ps_info(ps, &in) == 0 && in.nworkers == 2 && in.nservers == servers, "ps_info: roles");
    check(strcmp(in.mode, "sync") == 0 && in.lr == lr, "ps_info: the servers' settings");
    check(ps_tensor(ps, "z", NULL, NULL, NULL) == PS_ESTATE, "ps_tensor before ps_start");
    check(ps_push(ps, 1, NULL) == PS_ESTATE && ps_lr(ps, 0, &got) == PS_ESTATE,
          "the data plane before ps_start");
    check(ps_reduce_sum(ps, &v, 1) == 0 && v == 3, "ps_reduce_sum before ps_start");
    declare_all(ps, 0);
    check(ps_plan(ps, 3, 6) == 0, "ps_plan");
    check(ps_start(ps) == 0, "ps_start");
    check(ps_start(ps) == PS_ESTATE, "a second ps_start is refused");
    check(ps_declare(ps, "late", 1, (int64_t[]){1}, NULL) == PS_ESTATE, "declare after start");
    check(ps_tensor(ps, "nope", NULL, NULL, NULL) == PS_ENOENT, "unknown tensor: PS_ENOENT");
    check(ps_lr(ps, 0, &got) == 0 && got == lr, "ps_lr: the constant schedule");
    check_init(ps, w);
    steps(ps, w[0], lr);
    ps_stats_t st;
    check(ps_stats(ps, &st) == 0 && st.version == 3 && st.applied == 6 && st.rejected == 0,
          "ps_stats: 3 steps, 2 pushes each, nothing rejected");
    check(ps_save(ps, NULL) == PS_EINVAL, "ps_save(NULL)");
    if (rank == 0 && out) {
        check(ps_save(ps, out) == 0, "ps_save");
    }
}

/* Worker 1 misbehaves; every worker's ps_start must fail, cleanly. */
static void probe_bad(ps_t *ps, const char *mode)
{
    int misfit = rank == 1;
    if (misfit && strcmp(mode, "early") == 0) {
        check(ps_finalize(&ps) != 0 && ps == NULL, "leaving before ps_start fails the job");
        return;
    }
    if (misfit && strcmp(mode, "bad-declare") == 0) {
        check(ps_declare(ps, "bad", 0, (int64_t[]){1}, NULL) == PS_EINVAL, "0-D tensor refused");
    }
    if (misfit && strcmp(mode, "fail") == 0) {
        check(ps_fail(ps, "probe: my data file is gone") == 0, "ps_fail");
    }
    declare_all(ps, misfit && strcmp(mode, "mismatch") == 0);
    ps_plan(ps, 3, 6);
    check(ps_start(ps) != 0, "ps_start fails on every rank");
    check(ps_push(ps, 1, NULL) == PS_ESTATE, "and the data plane stays closed");
    check(ps_finalize(&ps) != 0 && ps == NULL, "ps_finalize reports the failure");
}

/* Worker 1 pushes a NaN: its push fails naming the tensor, and
 * ps_finalize ends the job (worker 0 waits in ps_pull meanwhile). */
static void probe_nan(ps_t *ps)
{
    declare_all(ps, 0);
    ps_plan(ps, 3, 6);
    check(ps_start(ps) == 0, "ps_start");
    fill(ps, rank ? NAN : 1.0f);
    if (rank == 1) {
        check(ps_push(ps, 1, NULL) == PS_ERANGE, "a NaN gradient is refused");
        check(ps_pull(ps) == PS_ESTATE, "then the handle is broken");
    } else {
        ps_step(ps, 1);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "main";
    ps_options_t opt = PS_OPTIONS_INIT;
    opt.name = "probe";
    opt.timeout_s = 60;
    opt.streams = 3;
    opt.io_threads = 2;
    ps_t *ps = NULL;
    check(ps_finalize(&ps) == 0 && ps_finalize(NULL) == 0, "ps_finalize on nothing");
    check(ps_wait(NULL) == PS_EINVAL && ps_declare(NULL, "x", 1, (int64_t[]){1}, NULL) == PS_EINVAL,
          "NULL arguments are errors, not crashes");
    check(strlen(ps_last_error()) > 0 && strlen(ps_strerror(PS_ENOENT)) > 0, "error texts");
    if (ps_init(&ps, &argc, &argv, &opt) != 0) {
        check(0, "ps_init");
        return 1;
    }
    ps_info_t in;
    ps_info(ps, &in);
    rank = in.rank;
    if (strcmp(mode, "main") == 0) {
        probe_main(ps, argc > 2 ? atoi(argv[2]) : 1, argc > 3 ? atof(argv[3]) : 0,
                   argc > 4 ? argv[4] : NULL);
    } else if (strcmp(mode, "nan") == 0) {
        probe_nan(ps);
    } else {
        probe_bad(ps, mode);
        return failures ? 1 : 2; /* the job failed, as it should */
    }
    check(ps_finalize(&ps) == 0 && ps == NULL, "ps_finalize");
    return failures ? 1 : 0;
}
