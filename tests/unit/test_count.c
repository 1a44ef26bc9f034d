/*
 * Unit tests for common/ps_count: the waiter must return exactly when the
 * last buffer is released by another thread, and never before.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_count.h"
#include "ps_err.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

typedef struct {
    ps_count_t *c;
    int n;           /* releases to do */
    long pause_ns;   /* before each one */
    atomic_int done; /* releases done so far */
} releaser_t;

static void *release_all(void *arg)
{
    releaser_t *r = arg;
    for (int i = 0; i < r->n; i++) {
        if (r->pause_ns) {
            struct timespec ts = {0, r->pause_ns};
            nanosleep(&ts, NULL);
        }
        atomic_fetch_add(&r->done, 1);
        ps_count_release(r->c);
    }
    return NULL;
}

static void wait_for(int n, long pause_ns)
{
    ps_count_t c;
    ps_count_init(&c);
    ps_count_add(&c, n);
    assert_int_equal(ps_count_get(&c), n);
    releaser_t r = {.c = &c, .n = n, .pause_ns = pause_ns};
    atomic_init(&r.done, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_all, &r), 0);
    ps_count_wait_zero(&c);
    /* Only the last release can have let us through. */
    assert_int_equal(atomic_load(&r.done), n);
    assert_int_equal(ps_count_get(&c), 0);
    pthread_join(t, NULL);
}

static void test_zero_returns_at_once(void **state)
{
    (void)state;
    ps_count_t c;
    ps_count_init(&c);
    ps_count_wait_zero(&c);
    assert_int_equal(ps_count_get(&c), 0);
}

/* Slow releases: the waiter goes to sleep and must be woken. */
static void test_sleeping_waiter_is_woken(void **state)
{
    (void)state;
    wait_for(3, 20 * 1000 * 1000);
}

/* Many fast releases racing the waiter's decision to sleep. */
static void test_races(void **state)
{
    (void)state;
    for (int round = 0; round < 2000; round++) {
        wait_for(1 + round % 5, round % 3 ? 0 : 1000);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The bounded wait: a buffer never released ends it after the bound (not
 * before, and not much later), with the count untouched; released ones let
 * it through as the unbounded wait does. */
static void test_bounded_wait(void **state)
{
    (void)state;
    ps_count_t c;
    ps_count_init(&c);
    assert_int_equal(ps_count_wait_zero_for(&c, 0), 0);
    ps_count_add(&c, 1);
    double t0 = now_ms();
    assert_int_equal(ps_count_wait_zero_for(&c, 150), PS_ETIMEDOUT);
    double took = now_ms() - t0;
    if (took < 150 || took > 2000) {
        fail_msg("a 150 ms wait took %.0f ms", took);
    }
    assert_int_equal(ps_count_get(&c), 1);
    assert_int_equal(ps_count_wait_zero_for(&c, 0), PS_ETIMEDOUT);
    /* Released late by another thread, well within the bound. */
    releaser_t r = {.c = &c, .n = 1, .pause_ns = 20 * 1000 * 1000};
    atomic_init(&r.done, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_all, &r), 0);
    assert_int_equal(ps_count_wait_zero_for(&c, 5000), 0);
    assert_int_equal(atomic_load(&r.done), 1);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&c.waiting), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_returns_at_once),
        cmocka_unit_test(test_sleeping_waiter_is_woken),
        cmocka_unit_test(test_races),
        cmocka_unit_test(test_bounded_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
