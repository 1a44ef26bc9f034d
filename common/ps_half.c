#include "ps_half.h"

#include <string.h>

/* The x86-64-v3 clones use F16C for binary16 (one instruction per 8
 * values); the default clone converts in software.  Both round the same.
 * Not under ThreadSanitizer: the ifunc resolver runs while the program is
 * being relocated, before the runtime its instrumentation calls exists. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define PS_HALF_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PS_HALF_CLONES
#endif

PS_HALF_CLONES
void ps_f32_to_f16(const float *in, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        _Float16 h = (_Float16)in[i];
        memcpy(&out[i], &h, sizeof h);
    }
}

PS_HALF_CLONES
void ps_f16_to_f32(const void *in, float *out, size_t n)
{
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        _Float16 h;
        memcpy(&h, p + 2 * i, sizeof h); /* any alignment */
        out[i] = (float)h;
    }
}

void ps_f32_to_bf16(const float *in, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &in[i], sizeof u);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            out[i] = (uint16_t)((u >> 16) | 0x40); /* NaN: keep it a (quiet) NaN */
            continue;
        }
        u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
        out[i] = (uint16_t)(u >> 16);
    }
}

void ps_bf16_to_f32(const void *in, float *out, size_t n)
{
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        uint16_t b;
        memcpy(&b, p + 2 * i, sizeof b); /* any alignment */
        uint32_t u = (uint32_t)b << 16;
        memcpy(&out[i], &u, sizeof u);
    }
}

/* The smallest |x| (float32 bits) each format rounds to Inf: binary16's
 * largest value is 65504 = 0x1.ffcp+15 and its next step would be 2^16, so
 * the tie 65520 (0x477ff000) goes to the even neighbour, Inf; bfloat16's
 * largest is 0x7f7f (0x1.fep+127), and 0x7f7f8000 is the tie between it
 * and Inf (0x7f80), which is even. */
#define F16_OVERFLOW 0x477ff000u
#define BF16_OVERFLOW 0x7f7f8000u
#define F32_INF 0x7f800000u
#define BLOCK 1024 /* as ps_finite: a fixed trip count GCC vectorises */

/* 1 when |x| lies in [lo, Inf): finite, and too large for the format. */
static uint32_t too_large(const float *x, uint32_t lo)
{
    uint32_t u;
    memcpy(&u, x, sizeof u);
    return (u & 0x7fffffffu) - lo < F32_INF - lo; /* unsigned: below lo wraps high */
}

static int block_too_large(const float *x, uint32_t lo)
{
    uint32_t any = 0;
    for (size_t i = 0; i < BLOCK; i++) {
        any |= too_large(&x[i], lo);
    }
    return any != 0;
}

size_t ps_half_first_overflow(ps_half_fmt_t fmt, const float *in, size_t n)
{
    uint32_t lo = fmt == PS_HALF_F16 ? F16_OVERFLOW : BF16_OVERFLOW;
    size_t i = 0;
    while (n - i >= BLOCK && !block_too_large(in + i, lo)) {
        i += BLOCK;
    }
    for (; i < n; i++) {
        if (too_large(&in[i], lo)) {
            return i;
        }
    }
    return n;
}

int ps_half_encode(ps_half_fmt_t fmt, const float *in, uint16_t *out, size_t n)
{
    if (ps_half_first_overflow(fmt, in, n) < n) {
        return 0;
    }
    if (fmt == PS_HALF_F16) {
        ps_f32_to_f16(in, out, n);
    } else {
        ps_f32_to_bf16(in, out, n);
    }
    return 1;
}
