/*
 * ps_sched: learning-rate schedules (constant, step, cosine, linear warm-up).
 *
 * Contract: a schedule is a small value type (no pointers, no allocation),
 * filled once by ps_sched_parse() from a command-line spec and then read by
 * ps_sched_lr(), a pure function of its arguments, so the server and every
 * worker compute the same rate for the same update number with no shared
 * state.  Only ps_sched_parse() can fail (bad spec: PS_EINVAL and a
 * ps_error_msg() detail naming the problem); it leaves *s unchanged then.
 * No MPI, no sockets: plain C that unit tests drive directly.
 *
 * Spec grammar (no spaces):
 *     constant
 *     cosine
 *     step:M1,M2,...[:GAMMA]     1..16 milestones in epochs, decimal,
 *                                strictly increasing; GAMMA finite and > 0,
 *                                default 0.1 (torch's MultiStepLR default)
 *   each optionally followed by ";warmup=N" (what ps_sched_describe() writes).
 *
 * The rate of update t (0-based), in double, in exactly this order:
 *     constant: lr = base
 *     step:     lr = base * pow(gamma, k), k = number of milestones m with
 *               t / steps_per_epoch >= m (integer division): torch's
 *               MultiStepLR(milestones, gamma) stepped once per epoch
 *     cosine:   c = cos((M_PI * t) / total_steps); lr = (base * (1 + c)) / 2:
 *               torch's CosineAnnealingLR(T_max=total_steps, eta_min=0)
 *               stepped once per update, in its closed form (torch's
 *               recursive update may differ in the last bits of the double).
 *               Past total_steps the curve rises again, as torch's does.
 *     warm-up:  when t < warmup_steps, lr = lr * ((t + 1) / warmup_steps):
 *               a linear ramp from base/W at t = 0 to the full rate at
 *               t = W - 1 (and after), multiplied into any of the above;
 *               torch's LambdaLR(lambda t: (t + 1) / W if t < W else 1).
 * steps_per_epoch 0 is read as 1; total_steps 0 leaves cosine at base (there
 * is no horizon to anneal over).
 */
#ifndef PS_SCHED_H
#define PS_SCHED_H

#include <stddef.h>
#include <stdint.h>

#define PS_SCHED_MAX_MILESTONES 16

typedef enum { PS_SCHED_CONSTANT, PS_SCHED_STEP, PS_SCHED_COSINE } ps_sched_kind_t;

typedef struct {
    ps_sched_kind_t kind;
    int nmilestones;
    uint32_t milestones[PS_SCHED_MAX_MILESTONES]; /* epochs, strictly increasing, for STEP */
    double gamma;                                 /* STEP */
    uint64_t warmup_steps;                        /* 0 = none */
} ps_sched_t;

/* Parse `spec` (see above) into *s.  warmup_steps >= 0 is the warm-up from
 * its own flag; a ";warmup=N" inside the spec is used when that is 0, and
 * refused when both are given and differ. */
int ps_sched_parse(ps_sched_t *s, const char *spec, long long warmup_steps);

/* The learning rate of update number t (0-based); see the formulas above. */
double ps_sched_lr(const ps_sched_t *s, double base_lr, uint64_t t, uint64_t steps_per_epoch,
                   uint64_t total_steps);

/* Canonical text ("constant", "cosine", "step:30,60:0.1", each plus
 * ";warmup=N" when warmup_steps > 0; gamma in the shortest form that reads
 * back to the same double), NUL-terminated and truncated to cap; parsing it
 * again gives the same schedule. */
void ps_sched_describe(const ps_sched_t *s, char *buf, size_t cap);

#endif
