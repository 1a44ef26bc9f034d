#include "ps_finite.h"

#include <stdint.h>
#include <string.h>

/* Floats per block.  A full block runs a loop with a compile-time trip
 * count and no early exit, which GCC vectorises even at -O2's "very
 * cheap" cost model (as srv_optim's blocks); only a block that has an
 * Inf or NaN, and the last partial block, are scanned one by one. */
#define BLOCK 1024

static int nonfinite(const float *x)
{
    uint32_t u;
    memcpy(&u, x, sizeof u);
    return (u & 0x7f800000u) == 0x7f800000u; /* exponent all ones: Inf or NaN */
}

static int block_has_nonfinite(const float *x)
{
    uint32_t any = 0;
    for (size_t i = 0; i < BLOCK; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        /* A full exponent carries into bit 31; nothing else reaches it. */
        any |= (u & 0x7f800000u) + 0x00800000u;
    }
    return (any & 0x80000000u) != 0;
}

size_t ps_first_nonfinite(const float *g, size_t from, size_t to)
{
    size_t i = from;
    if (from >= to) {
        return to;
    }
    while (to - i >= BLOCK && !block_has_nonfinite(g + i)) {
        i += BLOCK;
    }
    for (; i < to; i++) {
        if (nonfinite(&g[i])) {
            return i;
        }
    }
    return to;
}
