/*
 * srv_optim: the server's update kernel, torch.optim.SGD element by element,
 * plus two other momentum forms and a few torch-style extras.
 *
 * Contract: srv_optim_apply() aggregates the pushed gradient parts and
 * applies one momentum-SGD step to a run of n float32 elements in place.
 * The caller owns every array (weights, velocity, parts) and keeps them
 * alive for the call; nothing is allocated and nothing can fail at run
 * time, so settings are validated once, up front, by srv_optim_check().
 * The caller passes this step's learning rate in cfg->lr (a schedule, see
 * common/ps_sched.h, is evaluated by the caller, not here).
 *
 * Rounding is part of the contract.  Per element, in this order:
 *     g = parts[0][i]*coef[0]; g = g + parts[k][i]*coef[k] for k = 1..
 *         (each product rounded, then added; never fused)
 *     g = -g                                             if maximize
 *     g = fminf(fmaxf(g, -clip), clip)                   if clip_value > 0
 *     g = fmaf(w, wd, g)                                 if weight_decay != 0
 *     w = w * decoupled_scale                            if decoupled_wd > 0
 *   then the form's momentum step (momentum != 0):
 *   torch:
 *     buf = first ? g : fmaf(g, one_minus_damp, buf*mom)
 *     d = nesterov ? fmaf(buf, mom, g) : buf
 *     w = fmaf(d, neglr, w)
 *   sutskever (Keras, Caffe, MXNet; buf holds v, which starts at 0):
 *     v = first ? g*neglr : fmaf(g, neglr, v*mom)
 *     w = nesterov ? w + fmaf(v, mom, g*neglr) : w + v      (the new v)
 *   ema (buf holds v, which starts at 0; beta = momentum):
 *     v = first ? g*one_minus_beta : fmaf(g, one_minus_beta, v*mom)
 *     w = fmaf(v, neglr, w)
 *   and for every form with momentum == 0, plain SGD:  w = fmaf(g, neglr, w)
 * with mom = (float)momentum, one_minus_damp = (float)(1.0 - dampening),
 * wd = (float)weight_decay, neglr = (float)(-lr), one_minus_beta =
 * (float)(1.0 - momentum), clip = (float)clip_value and decoupled_scale =
 * (float)(1.0 - lr * decoupled_wd) (the products and differences in double,
 * rounded to float once).  These are the float32 values PyTorch's CPU
 * kernels use (add(..., alpha) is one fmadd there), so the torch form with
 * a single part of coefficient 1 equals Debian's python3-torch bit for bit,
 * maximize included (tests/integration/test_optim_torch.py checks it).  The clip
 * maps NaN to -clip (what fminf/fmaxf do), where torch's clamp keeps NaN.
 *
 * The torch and sutskever forms, first two steps side by side (no weight
 * decay, dampening 0, mu = momentum, the same lr every step):
 *
 *     torch                              sutskever
 *     buf1 = g1                          v1 = -lr*g1
 *     w1 = w0 - lr*buf1                  w1 = w0 + v1
 *        = w0 - lr*g1                       = w0 - lr*g1
 *     buf2 = mu*buf1 + g2                v2 = mu*v1 - lr*g2
 *     w2 = w1 - lr*buf2                  w2 = w1 + v2
 *        = w1 - lr*mu*g1 - lr*g2            = w1 - mu*lr*g1 - lr*g2
 *
 * At constant lr the two trajectories are the same, with v_t = -lr*buf_t
 * (Nesterov too: -lr*(g + mu*buf) = mu*v - lr*g); in float32 they differ
 * only by rounding (different products are rounded), a few ulps.  When lr
 * changes they differ: torch's buf holds raw gradients, so a new lr scales
 * the whole history (w2 = w1 - lr2*mu*g1 - lr2*g2), while sutskever's v
 * holds steps already scaled by the lr of their time (w2 = w1 - mu*lr1*g1 -
 * lr2*g2).  ema is torch's form with dampening = momentum except that its
 * first step starts from v = 0 instead of v = g (v1 = (1-beta)*g1).
 *
 * The file must be compiled with -ffp-contract=off.  The kernels are built
 * twice (x86-64-v3 with AVX2+FMA, and a baseline clone calling libm's
 * fmaf); both give identical bits because fmaf is exactly rounded.
 */
#ifndef SRV_OPTIM_H
#define SRV_OPTIM_H

#include <stddef.h>

typedef enum { SRV_FORM_TORCH, SRV_FORM_SUTSKEVER, SRV_FORM_EMA } srv_form_t;

typedef struct {
    double lr; /* this step's (scheduled) learning rate */
    double momentum;
    double dampening;
    double weight_decay;
    int nesterov;
    srv_form_t form;     /* default SRV_FORM_TORCH (0) */
    int maximize;        /* torch's maximize: g = -g first */
    double clip_value;   /* > 0: clamp g element-wise to [-C, C]; 0 = off */
    double decoupled_wd; /* > 0: w = w * (1 - lr*F) before the step (AdamW); 0 = off */
} srv_optim_cfg_t;

/* 0 if the settings are usable; otherwise PS_EINVAL and a detail in
 * ps_error_msg().  The torch.optim.SGD checks come first, in its order and
 * wording (e.g. "Invalid learning rate: -0.1"); negative dampening is
 * refused too, which PyTorch does not check.  Then: an unknown form,
 * nesterov with ema, dampening != 0 with sutskever or ema, momentum >= 1
 * with ema (1 - beta would be <= 0), and a negative or non-finite
 * clip_value or decoupled_wd.  momentum 0 is fine with every form. */
int srv_optim_check(const srv_optim_cfg_t *c);

/* "torch" | "sutskever" | "ema" into *out; PS_EINVAL with a detail otherwise. */
int srv_optim_parse_form(const char *s, srv_form_t *out);

/* The name srv_optim_parse_form() reads ("unknown" for other values). */
const char *srv_optim_form_name(srv_form_t f);

/* One fused aggregate + update step over elements [0, n) (see above).
 * `c` must have passed srv_optim_check() (with any lr >= 0 in its place).
 * `buf` may be NULL when momentum == 0 and is then never touched.
 * nparts >= 1.  `first` != 0 marks the first update of these elements
 * (torch's buffer-is-None step: buf = g, no dampening; sutskever and ema
 * treat the old v as 0).  w, buf and the parts must not overlap. */
void srv_optim_apply(const srv_optim_cfg_t *c, float *w, float *buf, const float *const *parts,
                     const float *coef, int nparts, size_t n, int first);

#endif
