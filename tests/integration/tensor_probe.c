/*
 * tensor_probe: a custom worker on ps.h's per-tensor calls, for
 * test_install.sh (api_probe.c covers the whole-model ones).  Built against
 * the INSTALLED library with pkg-config only; run as 2 workers against
 * `ps-server --lr LR --momentum 0 --chunk-kib 4`:
 *
 *     tensor_probe MODE LR [OUT]
 *
 * Prints "probe[RANK]: ok - what" / "probe[RANK]: not ok - what (detail)"
 * per check.  MODE main binds the program's own arrays, pushes and pulls
 * tensor by tensor with handles, and checks every update against
 * w -= LR * g by hand (momentum 0; g is the sample-weighted mean of the
 * two workers' pushes: worker 0 pushes 1 with 1 sample, worker 1 pushes 2
 * with 2 samples, so g = (1 + 4) / 3 = 5/3).  MODE bad-bind makes worker 1
 * bind overlapping arrays: every worker's ps_start must fail.
 *
 * The layout, with 1024-element chunks (--chunk-kib 4):
 *     s.weight [2,3]  flat    0 ..    6   chunk 0
 *     s.bias   [2]    flat    6 ..    8   chunk 0
 *     big      [3000] flat    8 .. 3008   chunks 0, 1, 2
 *     t        [4]    flat 3008 .. 3012   chunk 2 (the library's arrays)
 * The options are given with the struct_size of an older ps.h that ended
 * before `streams`, and streams set to an invalid 99 behind it: ps_init
 * must not read it.
 */
#include <ps.h>

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBIG 3000

static int rank = -1, failures;
static float sw[6], sg[6], bw[2], bg[2], *gw, *gg; /* bound arrays (big on the heap) */
static float *tw, *tg;                             /* t: the library's */

static void check(int ok, const char *what)
{
    printf("probe[%d]: %s - %s", rank, ok ? "ok" : "not ok", what);
    printf(ok ? "\n" : " (%s)\n", ps_last_error());
    fflush(stdout);
    failures += !ok;
}

static int has(const char *text)
{
    return strstr(ps_last_error(), text) != NULL;
}

static void declare(ps_t *ps)
{
    static const float s0[6] = {1, 2, 3, 4, 5, 6};
    float *b0 = malloc(NBIG * sizeof *b0);
    for (int i = 0; b0 && i < NBIG; i++) {
        b0[i] = (float)(i % 10) * 0.5f;
    }
    ps_initializer_t sv = {.kind = PS_INIT_VALUES, .values = s0};
    ps_initializer_t bv = {.kind = PS_INIT_VALUES, .values = b0};
    check(b0 && ps_declare(ps, "s.weight", 2, (int64_t[]){2, 3}, &sv) == 0 &&
              ps_declare(ps, "s.bias", 1, (int64_t[]){2}, NULL) == 0 &&
              ps_declare(ps, "big", 1, (int64_t[]){NBIG}, &bv) == 0 &&
              ps_declare(ps, "t", 1, (int64_t[]){4}, NULL) == 0,
          "declare four tensors");
    free(b0); /* ps_declare copied the values */
}

static void bind(ps_t *ps, int overlap)
{
    gw = malloc(NBIG * sizeof *gw);
    gg = malloc(NBIG * sizeof *gg);
    memset(sw, 0xff, sizeof sw); /* ps_bind must write the declared values */
    check(gw && gg && ps_bind(ps, "s.weight", sw, sg) == 0, "ps_bind the program's arrays");
    check(sw[0] == 1 && sw[5] == 6, "ps_bind writes the declared initial values");
    check(ps_bind(ps, "s.bias", bw, overlap ? sg + 1 : bg) == (overlap ? PS_EINVAL : 0),
          overlap ? "overlapping arrays are refused" : "ps_bind s.bias");
    check(ps_bind(ps, "big", gw, gg) == 0, "ps_bind big (t keeps the library's arrays)");
}

/* Every gradient array: this worker's value. */
static void fill(float v)
{
    for (int i = 0; i < 6; i++) {
        sg[i] = v;
    }
    bg[0] = bg[1] = v;
    for (int i = 0; i < NBIG; i++) {
        gg[i] = v;
    }
    for (int i = 0; i < 4; i++) {
        tg[i] = v;
    }
}

typedef struct {
    float s[6], b[2], big[NBIG], t[4];
} snap_t;

static void snap(snap_t *x)
{
    memcpy(x->s, sw, sizeof x->s);
    memcpy(x->b, bw, sizeof x->b);
    memcpy(x->big, gw, sizeof x->big);
    memcpy(x->t, tw, sizeof x->t);
}

static int moved(const float *w, const float *before, int n, double step)
{
    int ok = 1;
    for (int i = 0; i < n; i++) {
        ok &= fabs(w[i] - (before[i] - step)) <= 1e-6 * (1 + fabs(before[i]));
    }
    return ok;
}

/* Step 1, tensor by tensor in backward's order (t, big, s.bias, s.weight),
 * with the pulls waited for one by one as a forward pass would. */
static void step_by_tensor(ps_t *ps, double lr)
{
    ps_push_t *ht, *hb;
    ps_pull_t *pt, *pb, *ps_, *pw;
    ps_info_t in;
    snap_t before;
    int done = 0;
    snap(&before);
    fill((float)(rank + 1));
    uint32_t n = (uint32_t)rank + 1;
    check(ps_push_tensor(ps, "t", n, &ht) == 0 && ht, "ps_push_tensor t");
    check(ps_push_tensor(ps, "t", n, NULL) == PS_ESTATE, "a tensor is pushed once a step");
    check(ps_wait_sent(ht) == PS_ESTATE && has("'big'"),
          "ps_wait_sent: t's chunk waits for big, said so at once");
    check(ps_pull_tensor(ps, "t", &pt) == PS_ESTATE && has("'big'"),
          "ps_pull_tensor t before big: refused");
    check(ps_push_tensor(ps, "big", n + 1, NULL) == PS_EINVAL, "another sample count: refused");
    check(ps_push_tensor(ps, "big", n, &hb) == 0, "ps_push_tensor big");
    check(ps_wait_sent(ht) == 0 && ps_test_sent(ht, &done) == 0 && done,
          "t's chunk is complete: ps_wait_sent, ps_test_sent");
    check(ps_test_sent(hb, &done) == PS_ESTATE && !done && has("'s.weight'"),
          "big's first chunk waits for s.weight, said so");
    check(ps_pull_tensor(ps, "t", &pt) == 0, "ps_pull_tensor t");
    check(ps_pull_tensor(ps, "big", &pb) == PS_ESTATE && has("'s.weight'"),
          "ps_pull_tensor big before s.weight: refused");
    check(ps_pull_tensor(ps, "s.bias", &ps_) == PS_ESTATE, "a pull needs its tensor's push");
    check(ps_test_pulled(pt, &done) == 0 && ps_wait_pulled(pt) == 0 &&
              ps_test_pulled(pt, &done) == 0 && done,
          "ps_test_pulled, ps_wait_pulled");
    check(moved(tw, before.t, 4, lr * 5 / 3), "t: w -= lr * 5/3 (the library's array)");
    check(memcmp(sw, before.s, sizeof sw) == 0, "s.weight untouched while not pulled");
    check(ps_push_tensor(ps, "s.bias", n, NULL) == 0 &&
              ps_push_tensor(ps, "s.weight", n, NULL) == 0,
          "ps_push_tensor s.bias, s.weight");
    check(ps_wait_sent(hb) == 0, "now big's push has left");
    check(ps_pull_tensor(ps, "s.weight", &pw) == 0 && ps_pull_tensor(ps, "s.bias", &ps_) == 0 &&
              ps_pull_tensor(ps, "big", &pb) == 0,
          "ps_pull_tensor s.weight, s.bias, big");
    check(ps_stats(ps, &(ps_stats_t){0}) == PS_ESTATE, "ps_stats inside a step: refused");
    check(ps_wait_pulled(pw) == 0 && ps_wait_pulled(pb) == 0 && ps_wait_pulled(ps_) == 0,
          "ps_wait_pulled each");
    check(moved(sw, before.s, 6, lr * 5 / 3) && moved(bw, before.b, 2, lr * 5 / 3) &&
              moved(gw, before.big, NBIG, lr * 5 / 3),
          "bound arrays: w -= lr * 5/3, written in place");
    check(ps_info(ps, &in) == 0 && in.step == 1, "every tensor pulled: the step is over");
    check(ps_wait_pulled(pw) == 0 && ps_wait_sent(ht) == 0, "handles of an ended step are done");
}

/* Steps 2 to 4: a whole-model step on the bound arrays; then pulls left
 * unwaited, which the next step's first push completes. */
static void step_mixed(ps_t *ps, double lr)
{
    snap_t before;
    ps_push_t *h3;
    ps_pull_t *h;
    ps_info_t in;
    const char *names[4] = {"s.weight", "s.bias", "big", "t"};
    snap(&before);
    fill(rank ? 2.0f : 1.0f);
    check(ps_step(ps, (uint32_t)rank + 1) == 0, "ps_step on bound arrays");
    check(moved(sw, before.s, 6, lr * 5 / 3) && moved(gw, before.big, NBIG, lr * 5 / 3) &&
              moved(tw, before.t, 4, lr * 5 / 3),
          "step 2: w -= lr * 5/3");
    snap(&before);
    fill(3.0f); /* both workers: g = 3 */
    check(ps_push(ps, 1, &h3) == 0 && ps_push(ps, 1, NULL) == PS_ESTATE, "ps_push, once a step");
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        ok &= ps_pull_tensor(ps, names[i], &h) == 0;
    }
    check(ok, "ps_pull_tensor every tensor, waiting for none");
    check(ps_wait_sent(h3) == 0, "ps_wait_sent on the step's push");
    fill(rank ? 2.0f : 1.0f); /* the gradient is ours again */
    check(ps_push_tensor(ps, "t", (uint32_t)rank + 1, NULL) == 0, "the next step's first push");
    check(moved(sw, before.s, 6, lr * 3) && moved(bw, before.b, 2, lr * 3) &&
              moved(tw, before.t, 4, lr * 3),
          "step 3 ended in it: w -= lr * 3");
    snap(&before);
    check(ps_push(ps, (uint32_t)rank + 1, NULL) == 0 && ps_pull(ps) == 0,
          "ps_push the rest, ps_pull");
    check(moved(sw, before.s, 6, lr * 5 / 3) && moved(gw, before.big, NBIG, lr * 5 / 3) &&
              moved(tw, before.t, 4, lr * 5 / 3),
          "step 4: w -= lr * 5/3");
    check(ps_info(ps, &in) == 0 && in.step == 4, "four steps");
}

static void probe_main(ps_t *ps, double lr, const char *out)
{
    ps_info_t in;
    static double sum[2]; /* alive until ps_finalize, which completes the last */
    ps_reduce_t *r1, *r2, *r3;
    int done = 0;
    declare(ps);
    bind(ps, 0);
    ps_plan(ps, 4, 4);
    uint64_t same[2] = {NBIG, 4};
    check(ps_require_same(ps, same, 2, "probe: workers disagree") == 0, "ps_require_same");
    check(ps_start(ps) == 0, "ps_start");
    float *w, *g;
    check(ps_tensor(ps, "s.weight", &w, &g, NULL) == 0 && w == sw && g == sg,
          "ps_tensor lends the bound arrays");
    check(ps_tensor(ps, "t", &tw, &tg, NULL) == 0 && tw && tg, "ps_tensor t");
    check(sw[5] == 6 && gw[13] == 1.5f && tw[3] == 0, "the initial pull into the bound arrays");
    check(ps_info(ps, &in) == 0 && in.world_size == 3 && in.world_rank >= 0 && in.world_rank < 3,
          "ps_info: world rank and size");
    step_by_tensor(ps, lr);
    step_mixed(ps, lr);
    /* Non-blocking sums: 1 + 2 over the two workers. */
    double a[1] = {rank + 1.0}, b[1] = {rank + 1.0};
    sum[0] = sum[1] = rank + 1.0;
    check(ps_reduce_sum_start(ps, a, 1, &r1) == 0 && ps_reduce_sum_start(ps, b, 1, &r2) == 0 &&
              ps_reduce_sum_start(ps, sum, 2, &r3) == 0,
          "ps_reduce_sum_start three sums");
    while (r1 && ps_test_reduced(&r1, &done) == 0 && !done) {
    }
    check(done && !r1 && a[0] == 3, "ps_test_reduced completes the first");
    check(ps_wait_reduced(&r2) == 0 && !r2 && b[0] == 3, "ps_wait_reduced the second");
    ps_stats_t st;
    check(ps_stats(ps, &st) == 0 && st.version == 4 && st.apply_s >= 0 && st.rejected == 0,
          "ps_stats: 4 steps applied, apply_s");
    check(ps_done(ps) == 0 && ps_done(ps) == 0, "ps_done, twice");
    check(ps_push(ps, 1, NULL) == PS_ESTATE && ps_stats(ps, &st) == PS_ESTATE,
          "after ps_done: no pushes, no counters");
    double c[1] = {1};
    check(ps_reduce_sum(ps, c, 1) == 0 && c[0] == 2, "after ps_done: sums still work");
    if (rank == 0 && out) {
        check(ps_save(ps, out) == 0, "ps_save the bound arrays (after ps_done)");
    }
    (void)r3; /* left in flight: ps_finalize completes it */
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "main";
    ps_options_t opt = PS_OPTIONS_INIT;
    opt.name = "probe";
    opt.timeout_s = 60;
    opt.streams = 99;                                  /* beyond the older struct: */
    opt.struct_size = offsetof(ps_options_t, streams); /* never read */
    ps_t *ps = NULL;
    if (ps_init(&ps, &argc, &argv, &opt) != 0) {
        check(0, "ps_init with an older, shorter ps_options_t");
        return 1;
    }
    ps_info_t in;
    ps_info(ps, &in);
    rank = in.rank;
    check(1, "ps_init with an older, shorter ps_options_t");
    if (strcmp(mode, "bad-bind") == 0) {
        declare(ps);
        bind(ps, rank == 1);
        ps_plan(ps, 4, 4);
        check(ps_start(ps) != 0, "ps_start fails on every rank");
        check(ps_finalize(&ps) != 0 && ps == NULL, "ps_finalize reports the failure");
        free(gw);
        free(gg);
        return failures ? 1 : 2;
    }
    probe_main(ps, argc > 2 ? atof(argv[2]) : 0, argc > 3 ? argv[3] : NULL);
    check(ps_finalize(&ps) == 0 && ps == NULL, "ps_finalize");
    free(gw);
    free(gg);
    return failures ? 1 : 0;
}
