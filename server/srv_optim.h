/*
 * srv_optim: the server's update kernel, torch.optim.SGD element by element.
 *
 * Contract: srv_optim_apply() aggregates the pushed gradient parts and
 * applies one momentum-SGD step to a run of n float32 elements in place.
 * The caller owns every array (weights, velocity, parts) and keeps them
 * alive for the call; nothing is allocated and nothing can fail at run
 * time, so settings are validated once, up front, by srv_optim_check().
 *
 * Rounding is part of the contract.  Per element, in this order:
 *     g = parts[0][i]*coef[0]; g = g + parts[k][i]*coef[k] for k = 1..
 *         (each product rounded, then added; never fused)
 *     g = fmaf(w, wd, g)                                 if weight_decay != 0
 *     buf = first ? g : fmaf(g, damp1, buf*mom)          if momentum != 0
 *     d = nesterov ? fmaf(buf, mom, g) : buf             if momentum != 0
 *     w = fmaf(d, neglr, w)
 * with mom = (float)momentum, damp1 = (float)(1.0 - dampening),
 * wd = (float)weight_decay and neglr = (float)(-lr): the float32 values
 * PyTorch's CPU kernels use (add(..., alpha) is one fmadd there), so with a
 * single part of coefficient 1 the result equals Debian's python3-torch
 * bit for bit (tests/integration/test_optim_torch.py checks it).
 *
 * The file must be compiled with -ffp-contract=off.  The kernel is built
 * twice (x86-64-v3 with AVX2+FMA, and a baseline clone calling libm's
 * fmaf); both give identical bits because fmaf is exactly rounded.
 */
#ifndef SRV_OPTIM_H
#define SRV_OPTIM_H

#include <stddef.h>

typedef struct {
    double lr;
    double momentum;
    double dampening;
    double weight_decay;
    int nesterov;
} srv_optim_cfg_t;

/* 0 if torch.optim.SGD would accept these settings and all are finite;
 * otherwise PS_EINVAL with PyTorch's wording in ps_error_msg(), e.g.
 * "Invalid learning rate: -0.1".  Negative dampening is refused too
 * ("Invalid dampening value: ..."), which PyTorch does not check. */
int srv_optim_check(const srv_optim_cfg_t *c);

/* One fused aggregate + update step over elements [0, n) (see above).
 * `c` must have passed srv_optim_check().  `buf` may be NULL when
 * momentum == 0 and is then never touched.  nparts >= 1.  `first` != 0
 * marks the first update of these elements (torch's buffer-is-None step:
 * buf = g, no dampening).  w, buf and the parts must not overlap. */
void srv_optim_apply(const srv_optim_cfg_t *c, float *w, float *buf, const float *const *parts,
                     const float *coef, int nparts, size_t n, int first);

#endif
