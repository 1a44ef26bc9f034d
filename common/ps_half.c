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
