/*
 * ps_half: 16-bit float formats for compressed gradient pushes
 * (--compress fp16|bf16).  IEEE binary16 via the compiler's _Float16
 * (round to nearest even; values beyond 65504 become Inf, which the
 * servers then treat as a non-finite gradient), and bfloat16 (the top half
 * of a float32, rounded to nearest even; NaN stays NaN).  Pure functions.
 */
#ifndef PS_HALF_H
#define PS_HALF_H

#include <stddef.h>
#include <stdint.h>

void ps_f32_to_f16(const float *in, uint16_t *out, size_t n);
/* The 16-bit inputs may be at any alignment (a network buffer). */
void ps_f16_to_f32(const void *in, float *out, size_t n);
void ps_f32_to_bf16(const float *in, uint16_t *out, size_t n);
void ps_bf16_to_f32(const void *in, float *out, size_t n);

#endif
