/*
 * Unit tests for worker/wkr_train's step rule, without MPI, servers or
 * PyTorch: the plan (steps per epoch, total steps) and which shard
 * positions each micro-batch of a step uses, against values derived by
 * hand in the comments.  (wkr_train_run needs a job; the integration tests
 * and the PyTorch comparison run it.)
 *
 * The documented rule (wkr_train.h): G = W*K*B samples per step, an epoch
 * is ceil(N/G) steps (no drop-last: the short last step is trained on),
 * total = --steps, or epochs * steps per epoch; at step j a worker uses
 * positions [j*K*B, (j+1)*K*B) of its shard, cut into K micro-batches of
 * B, fewer or none near the end of the shard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ps_err.h"
#include "wkr_train.h"

#include <string.h>

static wkr_train_cfg_t cfg(int W, int K, int B, int epochs, long long steps)
{
    wkr_train_cfg_t c;
    memset(&c, 0, sizeof c);
    c.nworkers = W;
    c.accumulate = K;
    c.batch = B;
    c.epochs = epochs;
    c.steps = steps;
    return c;
}

static void plan_is(wkr_train_cfg_t c, size_t n, uint64_t spe, uint64_t total)
{
    ps_planinfo_t p = {0, 0};
    assert_int_equal(wkr_train_plan(&c, n, &p), 0);
    assert_true(p.steps_per_epoch == spe);
    assert_true(p.total_steps == total);
}

static void test_plan_uneven(void **state)
{
    (void)state;
    /* N=203, W=3, K=1, B=16: G=48; 4*48 = 192 < 203 <= 240 = 5*48, so 5
     * steps per epoch, the last one with 11 samples; 3 epochs = 15. */
    plan_is(cfg(3, 1, 16, 3, 0), 203, 5, 15);
    /* One sample past a whole number of steps still makes a step:
     * N=193 > 192 = 4*48 gives 5; N=192 gives exactly 4. */
    plan_is(cfg(3, 1, 16, 1, 0), 193, 5, 5);
    plan_is(cfg(3, 1, 16, 1, 0), 192, 4, 4);
    /* N=191 < 192: still 4 (ceil, not floor + 1). */
    plan_is(cfg(3, 1, 16, 2, 0), 191, 4, 8);
}

static void test_plan_accumulate(void **state)
{
    (void)state;
    /* N=100, W=2, K=3, B=5: G=30; 90 < 100 <= 120: 4 steps; 2 epochs = 8. */
    plan_is(cfg(2, 3, 5, 2, 0), 100, 4, 8);
    /* K multiplies the global batch like W does: K=1 would give G=10, 10
     * steps per epoch. */
    plan_is(cfg(2, 1, 5, 2, 0), 100, 10, 20);
    /* --steps overrides --epochs, even beyond one epoch. */
    plan_is(cfg(2, 3, 5, 2, 7), 100, 4, 7);
    plan_is(cfg(2, 3, 5, 0, 9), 100, 4, 9);
    /* Fewer samples than one global batch: one step per epoch. */
    plan_is(cfg(4, 2, 8, 3, 0), 1, 1, 3);
}

static void test_plan_refuses(void **state)
{
    (void)state;
    ps_planinfo_t p;
    wkr_train_cfg_t c = cfg(2, 1, 0, 1, 0);
    assert_int_equal(wkr_train_plan(&c, 10, &p), PS_EINVAL);
    c = cfg(2, 0, 4, 1, 0);
    assert_int_equal(wkr_train_plan(&c, 10, &p), PS_EINVAL);
    c = cfg(2, 1, 4, 0, 0);
    assert_int_equal(wkr_train_plan(&c, 10, &p), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "--epochs"));
    c = cfg(2, 1, 4, -1, 0);
    assert_int_equal(wkr_train_plan(&c, 10, &p), PS_EINVAL);
    c = cfg(2, 1, 4, 1, -3);
    assert_int_equal(wkr_train_plan(&c, 10, &p), PS_EINVAL);
    /* W*K*B = 2^16 * 2^16 * 2 = 2^33 does not fit the u32 sample count. */
    c = cfg(65536, 65536, 2, 1, 0);
    assert_int_equal(wkr_train_plan(&c, 10, &p), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "too large"));
}

static void batch_is(const wkr_train_cfg_t *c, size_t n, uint64_t j, size_t k, size_t first,
                     size_t count)
{
    size_t f = 99, m = 99;
    wkr_train_batch(c, n, j, k, &f, &m);
    assert_int_equal(f, first);
    assert_int_equal(m, count);
}

static void test_batch_hand_values(void **state)
{
    (void)state;
    /* N=203 over W=3 workers: sample i on worker i % 3, so shards of 68
     * (workers 0 and 1: i = 0..201 step 3 has 68 values) and 67 (worker
     * 2).  K=2, B=10: G=60, ceil(203/60) = 4 steps per epoch. */
    wkr_train_cfg_t c = cfg(3, 2, 10, 1, 0);
    /* Step 0: positions [0, 20) in two micro-batches of 10. */
    batch_is(&c, 68, 0, 0, 0, 10);
    batch_is(&c, 68, 0, 1, 10, 10);
    /* Step 2: [40, 60). */
    batch_is(&c, 67, 2, 0, 40, 10);
    batch_is(&c, 67, 2, 1, 50, 10);
    /* Step 3, the last: worker 0 has positions 60..67 (8 samples), worker 2
     * 60..66 (7), so 8 + 8 + 7 = 23 = 203 - 3*60 samples in the step. */
    batch_is(&c, 68, 3, 0, 60, 8);
    batch_is(&c, 68, 3, 1, 70, 0);
    batch_is(&c, 67, 3, 0, 60, 7);
    batch_is(&c, 67, 3, 1, 70, 0);
    /* A shard shorter than the micro-batch: K=1, B=64, n=5. */
    c = cfg(4, 1, 64, 1, 0);
    batch_is(&c, 5, 0, 0, 0, 5);
    batch_is(&c, 5, 1, 0, 64, 0);
}

/* Over an epoch, the micro-batches of every worker tile its shard exactly
 * once, and the step totals sum to N: nothing dropped, nothing twice. */
static void test_batch_covers_each_sample_once(void **state)
{
    (void)state;
    const int W = 3, K = 4, B = 7;
    const size_t N = 203;
    wkr_train_cfg_t c = cfg(W, K, B, 1, 0);
    ps_planinfo_t p;
    assert_int_equal(wkr_train_plan(&c, N, &p), 0);
    assert_true(p.steps_per_epoch == 3); /* G = 84: 168 < 203 <= 252 */
    size_t total = 0;
    for (int w = 0; w < W; w++) {
        size_t n = (N - (size_t)w + (size_t)W - 1) / (size_t)W; /* 68, 68, 67 */
        unsigned char seen[68] = {0};
        for (uint64_t j = 0; j < p.steps_per_epoch; j++) {
            for (size_t k = 0; k < (size_t)K; k++) {
                size_t f, m;
                wkr_train_batch(&c, n, j, k, &f, &m);
                for (size_t i = f; i < f + m; i++) {
                    assert_true(i < n);
                    seen[i]++;
                }
                total += m;
            }
        }
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(seen[i], 1);
        }
    }
    assert_int_equal(total, N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_uneven),
        cmocka_unit_test(test_plan_accumulate),
        cmocka_unit_test(test_plan_refuses),
        cmocka_unit_test(test_batch_hand_values),
        cmocka_unit_test(test_batch_covers_each_sample_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
