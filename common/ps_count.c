#include "ps_count.h"

#include "ps_err.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SPINS 200 /* ~ a microsecond of polling before sleeping */

/* ThreadSanitizer cannot see zmq (not instrumented) hand a buffer from the
 * thread that counted it to the I/O thread that releases it, so it takes
 * the release's own atomic access, checked before it synchronises, for a
 * race with the count's initialisation.  Tell it what the contract
 * guarantees: every release comes after the add that counted its buffer. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define HANDED_OVER(c) __tsan_release(c)
#define TAKEN_OVER(c) __tsan_acquire(c)
#else
#define HANDED_OVER(c) ((void)(c))
#define TAKEN_OVER(c) ((void)(c))
#endif

static void futex(_Atomic int *addr, int op, int val, const struct timespec *rel)
{
    syscall(SYS_futex, (int *)addr, op | FUTEX_PRIVATE_FLAG, val, rel, NULL, 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ps_count_init(ps_count_t *c)
{
    atomic_init(&c->n, 0);
    atomic_init(&c->waiting, 0);
}

void ps_count_add(ps_count_t *c, int k)
{
    atomic_fetch_add_explicit(&c->n, k, memory_order_acq_rel);
    HANDED_OVER(c);
}

void ps_count_release(ps_count_t *c)
{
    TAKEN_OVER(c);
    /* seq_cst on both sides: either the waiter sees n == 0, or this
     * thread sees waiting == 1 (Dekker's pairing with wait_zero). */
    if (atomic_fetch_sub(&c->n, 1) == 1 && atomic_load(&c->waiting)) {
        futex(&c->n, FUTEX_WAKE, INT_MAX, NULL);
    }
}

int ps_count_get(ps_count_t *c)
{
    return atomic_load_explicit(&c->n, memory_order_acquire);
}

void ps_count_wait_zero(ps_count_t *c)
{
    (void)ps_count_wait_zero_for(c, -1);
}

int ps_count_wait_zero_for(ps_count_t *c, int timeout_ms)
{
    for (int i = 0; i < SPINS; i++) {
        if (atomic_load_explicit(&c->n, memory_order_acquire) == 0) {
            return 0;
        }
    }
    double end = now_s() + timeout_ms / 1000.0;
    int v, rv = 0;
    atomic_store(&c->waiting, 1);
    while ((v = atomic_load(&c->n)) != 0) {
        if (timeout_ms < 0) {
            /* Sleeps only while n is still v; a release in between makes
             * the kernel return at once (EAGAIN), and the loop looks again. */
            futex(&c->n, FUTEX_WAIT, v, NULL);
            continue;
        }
        double left = end - now_s();
        if (left <= 0) {
            rv = PS_ETIMEDOUT;
            break;
        }
        struct timespec rel = {.tv_sec = (time_t)left,
                               .tv_nsec = (long)((left - (double)(time_t)left) * 1e9)};
        futex(&c->n, FUTEX_WAIT, v, &rel);
    }
    atomic_store(&c->waiting, 0);
    return rv;
}
