/*
 * ps_finite: finding NaN and Inf in float32 arrays (gradients on their way
 * to or arriving at a server).  Pure; bit tests in branch-free blocks, so
 * it vectorises at -O2 and does not depend on the floating-point
 * environment.
 */
#ifndef PS_FINITE_H
#define PS_FINITE_H

#include <stddef.h>

/* Index of the first NaN or Inf in g[from, to), or `to` when all are finite. */
size_t ps_first_nonfinite(const float *g, size_t from, size_t to);

#endif
