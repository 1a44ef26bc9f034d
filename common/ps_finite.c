#include "ps_finite.h"

#include <stdint.h>
#include <string.h>

size_t ps_first_nonfinite(const float *g, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        uint32_t u;
        memcpy(&u, &g[i], sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u) { /* exponent all ones: Inf or NaN */
            return i;
        }
    }
    return to;
}
