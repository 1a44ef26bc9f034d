/*
 * ps_count: a count of zero-copy buffers that zmq still reads, and a way
 * for their owner to wait until it drops to zero without stealing the
 * core from the thread that will drop it.
 *
 * ps_count_add runs on the owner's thread, ps_count_release on a zmq I/O
 * thread (the free callback of a message).  ps_count_wait_zero spins
 * briefly (a reply is often released within microseconds) and then
 * sleeps on a Linux futex until the count is zero; the release that
 * reaches zero wakes it.  ps_count_wait_zero_for gives up after a time, for
 * a waiter that must not hang when a release never comes (a buffer zmq
 * never took, a peer gone).  Lock-free, async-signal-unsafe, no allocation.
 * The releasing thread still reads the count just after the last release,
 * so a count must outlive the zmq context whose callbacks release it.
 */
#ifndef PS_COUNT_H
#define PS_COUNT_H

#include <stdatomic.h>

typedef struct {
    _Atomic int n;       /* buffers not yet released */
    _Atomic int waiting; /* a thread sleeps (or is about to) in wait_zero */
} ps_count_t;

void ps_count_init(ps_count_t *c);
void ps_count_add(ps_count_t *c, int k);
/* One buffer released; wakes the waiter when it was the last. */
void ps_count_release(ps_count_t *c);
int ps_count_get(ps_count_t *c);
/* Waits for ever. */
void ps_count_wait_zero(ps_count_t *c);
/* Waits at most timeout_ms (< 0: for ever): 0 once the count is zero,
 * PS_ETIMEDOUT when it is still not zero then (no detail set: the caller
 * knows what the count was for). */
int ps_count_wait_zero_for(ps_count_t *c, int timeout_ms);

#endif
