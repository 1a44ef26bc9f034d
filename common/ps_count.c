#include "ps_count.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SPINS 200 /* ~ a microsecond of polling before sleeping */

static void futex(_Atomic int *addr, int op, int val)
{
    syscall(SYS_futex, (int *)addr, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
}

void ps_count_init(ps_count_t *c)
{
    atomic_init(&c->n, 0);
    atomic_init(&c->waiting, 0);
}

void ps_count_add(ps_count_t *c, int k)
{
    atomic_fetch_add_explicit(&c->n, k, memory_order_acq_rel);
}

void ps_count_release(ps_count_t *c)
{
    /* seq_cst on both sides: either the waiter sees n == 0, or this
     * thread sees waiting == 1 (Dekker's pairing with wait_zero). */
    if (atomic_fetch_sub(&c->n, 1) == 1 && atomic_load(&c->waiting)) {
        futex(&c->n, FUTEX_WAKE, INT_MAX);
    }
}

int ps_count_get(ps_count_t *c)
{
    return atomic_load_explicit(&c->n, memory_order_acquire);
}

void ps_count_wait_zero(ps_count_t *c)
{
    for (int i = 0; i < SPINS; i++) {
        if (atomic_load_explicit(&c->n, memory_order_acquire) == 0) {
            return;
        }
    }
    atomic_store(&c->waiting, 1);
    int v;
    while ((v = atomic_load(&c->n)) != 0) {
        /* Sleeps only while n is still v; a release in between makes the
         * kernel return at once (EAGAIN), and the loop looks again. */
        futex(&c->n, FUTEX_WAIT, v);
    }
    atomic_store(&c->waiting, 0);
}
