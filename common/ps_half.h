/*
 * ps_half: 16-bit float formats for compressed gradient pushes
 * (--compress fp16|bf16).  IEEE binary16 via the compiler's _Float16
 * (round to nearest even; |x| >= 65520 rounds to Inf), and bfloat16 (the
 * top half of a float32, rounded to nearest even; |x| >= 0x1.ffp+127,
 * half a bf16 ulp below FLT_MAX, rounds to Inf; NaN stays NaN).  Pure
 * functions.
 *
 * A finite gradient must arrive finite: an Inf made in transit would be
 * taken for a diverged gradient by a server that sees only its chunk.  So
 * a chunk is encoded with ps_half_encode, which refuses a chunk holding a
 * finite value the format cannot hold; such a chunk travels as float32.
 */
#ifndef PS_HALF_H
#define PS_HALF_H

#include <stddef.h>
#include <stdint.h>

/* The 16-bit formats, numbered as ps.h's PS_COMPRESS_FP16 and _BF16. */
typedef enum { PS_HALF_F16 = 1, PS_HALF_BF16 = 2 } ps_half_fmt_t;

/* Index of the first finite value of in[0, n) that fmt cannot hold (it
 * would round to +-Inf), or n when every finite value fits.  NaN and Inf
 * do not count: they are not finite before the conversion either. */
size_t ps_half_first_overflow(ps_half_fmt_t fmt, const float *in, size_t n);
/* in[0, n) as fmt in out and 1 when every finite value fits; else 0 and
 * out untouched: the caller sends the chunk as float32. */
int ps_half_encode(ps_half_fmt_t fmt, const float *in, uint16_t *out, size_t n);

void ps_f32_to_f16(const float *in, uint16_t *out, size_t n);
/* The 16-bit inputs may be at any alignment (a network buffer). */
void ps_f16_to_f32(const void *in, float *out, size_t n);
void ps_f32_to_bf16(const float *in, uint16_t *out, size_t n);
void ps_bf16_to_f32(const void *in, float *out, size_t n);

#endif
