/*
 * srv_catchup: the exact-mode catch-up of a sparse table's rows.
 *
 * With a zero gradient from the data, one optimizer step moves each
 * element's state (w, buf) linearly: (w, buf) <- M_t (w, buf), where the
 * 2x2 matrix M_t depends only on the settings, the step's lr and whether
 * it is the tensor's first step (srv_catchup_step_map; the matrices per
 * form are written out in docs/semantics.md).  A row untouched over steps
 * (s, t] is brought up to date with the product M_t ... M_{s+1}, taken
 * from a tree of aligned power-of-two blocks of steps (srv_catchup_t): the
 * product over any (s, t] is at most 2 log2(t - s) block products, and
 * appending a step costs O(1) amortised.  Everything is in double; a row
 * is rounded to float once per catch-up.
 *
 * Contract: the caller owns the srv_catchup_t (embedded, _init/_fini);
 * push() may fail with PS_ENOMEM (nothing changed then); the rest cannot
 * fail.  No allocation per query.
 */
#ifndef SRV_CATCHUP_H
#define SRV_CATCHUP_H

#include "srv_optim.h"

#include <stddef.h>
#include <stdint.h>

/* [[a, b], [c, d]] acting on the column (w, buf). */
typedef struct {
    double a, b, c, d;
} srv_map2_t;

/* The identity map. */
srv_map2_t srv_map2_identity(void);

/* later * earlier: the map of `earlier` followed by `later`. */
srv_map2_t srv_map2_mul(srv_map2_t later, srv_map2_t earlier);

/*
 * The zero-gradient step map of settings `c` at learning rate `lr`;
 * `first` marks the tensor's first step (torch's buf-is-None: the old
 * buffer is ignored).  Built from the same float32 scalars the kernel uses
 * ((float)momentum, (float)(-lr), ...), taken to double.  Clip and
 * maximize do not enter: a zero gradient clips and negates to zero.  With
 * momentum 0 the buffer row and column are zero.
 */
srv_map2_t srv_catchup_step_map(const srv_optim_cfg_t *c, double lr, int first);

/* Products of the step maps of steps (base, base + count]. */
typedef struct {
    uint64_t base;  /* steps up to base are not kept */
    uint64_t count; /* steps kept: base + 1 .. base + count */
    int nlevels;
    srv_map2_t *level[64]; /* level l: block j = steps (base + j*2^l, base + (j+1)*2^l] */
    uint64_t cap[64];      /* allocated blocks per level */
} srv_catchup_t;

void srv_catchup_init(srv_catchup_t *k, uint64_t base);
void srv_catchup_fini(srv_catchup_t *k);
/* Drop every step and start again after step `base`. */
void srv_catchup_reset(srv_catchup_t *k, uint64_t base);

/* Append the map of step base + count + 1.  PS_ENOMEM (nothing changed). */
int srv_catchup_push(srv_catchup_t *k, srv_map2_t m);

/* The product of the maps of steps (s, e]; base <= s <= e <= base + count
 * (the caller's invariant; asserted). */
srv_map2_t srv_catchup_product(const srv_catchup_t *k, uint64_t s, uint64_t e);

/* Bytes the tree holds. */
size_t srv_catchup_bytes(const srv_catchup_t *k);

/* (w, buf) <- p (w, buf) per element of a row of n, in double, rounded
 * once; buf NULL means a zero buffer that is not kept (momentum 0). */
void srv_catchup_row(srv_map2_t p, float *w, float *buf, size_t n);

#endif
