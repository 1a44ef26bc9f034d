/*
 * ps_clock: the one clock the programs time themselves with.
 *
 * Seconds as a double from CLOCK_MONOTONIC: for durations (compute, wait,
 * apply, epoch times), never for dates; it does not jump when the wall
 * clock is set.  Timestamps in trace files use ps_trace_now instead
 * (CLOCK_REALTIME, so the ranks' events line up in one file).
 */
#ifndef PS_CLOCK_H
#define PS_CLOCK_H

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double ps_clock_now(void);

#endif
