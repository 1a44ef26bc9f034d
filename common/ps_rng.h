/*
 * ps_rng: a small, seedable, platform-independent random generator
 * (splitmix64 seeding a xoshiro256** state).  Every rank that needs the same
 * sequence seeds it with the same value; results never depend on libc.
 */
#ifndef PS_RNG_H
#define PS_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} ps_rng_t;

/* Seed from a value and a stream number (e.g. seed and rank, or epoch). */
void ps_rng_seed(ps_rng_t *r, uint64_t seed, uint64_t stream);
uint64_t ps_rng_next(ps_rng_t *r);
/* Uniform in [0, 1) with 24 random bits. */
float ps_rng_uniform(ps_rng_t *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t ps_rng_below(ps_rng_t *r, uint64_t n);
/* Fisher-Yates shuffle of idx[0..n). */
void ps_rng_shuffle(ps_rng_t *r, uint32_t *idx, size_t n);

#endif
