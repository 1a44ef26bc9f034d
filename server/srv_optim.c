#include "srv_optim.h"

#include "ps_err.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Elements per block.  Full blocks run loops with a compile-time trip count
 * (a multiple of every vector width), which GCC vectorises even at -O2's
 * "very cheap" cost model; the last partial block runs the same code
 * scalar.  Also the size of the on-stack aggregation buffer (4 KiB).
 */
#define OPT_BLK 1024

/*
 * GCC function multiversioning (an ifunc picks the clone at load time) needs
 * x86-64 and glibc.  Elsewhere one plain build (same bits, maybe slower;
 * on aarch64 FMA is part of the base ISA anyway).  Not under
 * ThreadSanitizer either: the resolver runs during relocation, before the
 * runtime its instrumentation calls is there, and crashes.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) &&       \
    !defined(__SANITIZE_THREAD__)
#define OPT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define OPT_CLONES
#endif

/*
 * The float32 scalars PyTorch's kernels see (see the header).  sign is -1
 * for maximize: the aggregated g is multiplied by it, and since rounding to
 * nearest is symmetric, p*(-c) == -(p*c) and s*(-1) == -s exactly, so
 * maximize costs nothing in the loops (torch negates the gradient first).
 */
typedef struct {
    float mom;
    float one_minus_damp;
    float wd;
    float neglr;
    float sign;
} opt_scal_t;

/* The extra scalars and flags of the general path (see ext_range). */
typedef struct {
    float clip;
    float decoupled_scale;
    float one_minus_beta;
    int has_clip;
    int has_wd;
    int has_decoupled;
} opt_ext_t;

/* Momentum handling, fixed per call so it is hoisted out of the loops. */
enum { MODE_PLAIN, MODE_FIRST, MODE_MOM };

/* ---- settings check ---------------------------------------------------- */

/* Digits and decimal exponent of the shortest decimal that round-trips. */
static int shortest_digits(double v, char *dig, int *exp10)
{
    char tmp[40];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, fabs(v));
        if (strtod(tmp, NULL) == fabs(v)) {
            break;
        }
    }
    int nd = 0;
    const char *s = tmp;
    for (; *s != 'e'; s++) {
        if (*s != '.') {
            dig[nd++] = *s;
        }
    }
    while (nd > 1 && dig[nd - 1] == '0') {
        nd--; /* %.*e pads with zeros; repr does not */
    }
    dig[nd] = '\0';
    *exp10 = atoi(s + 1);
    return nd;
}

/* Python's repr(float), so messages read exactly like PyTorch's. */
static void py_repr(double v, char *out, size_t cap)
{
    if (isnan(v) || isinf(v) || v == 0.0) {
        snprintf(out, cap, "%s",
                 isnan(v)   ? "nan"
                 : isinf(v) ? (v < 0 ? "-inf" : "inf")
                            : (signbit(v) ? "-0.0" : "0.0"));
        return;
    }
    char dig[24];
    int x;
    int nd = shortest_digits(v, dig, &x);
    const char *sign = v < 0 ? "-" : "";
    if (x < -4 || x >= 16) {
        snprintf(out, cap, "%s%c%s%se%c%02d", sign, dig[0], nd > 1 ? "." : "", dig + 1,
                 x < 0 ? '-' : '+', abs(x));
    } else if (x < 0) {
        snprintf(out, cap, "%s0.%.*s%s", sign, -x - 1, "0000", dig);
    } else if (nd <= x + 1) {
        snprintf(out, cap, "%s%s%.*s.0", sign, dig, x + 1 - nd, "0000000000000000");
    } else {
        snprintf(out, cap, "%s%.*s.%s", sign, x + 1, dig, dig + x + 1);
    }
}

/* Refuse a value that is negative or not finite, in PyTorch's words. */
static int check_value(double v, const char *what)
{
    if (v >= 0.0 && isfinite(v)) {
        return 0;
    }
    char txt[64];
    py_repr(v, txt, sizeof txt);
    ps_error_set("%s: %s", what, txt);
    return PS_EINVAL;
}

/* The checks the other forms and the extras add (after torch's own). */
static int check_extras(const srv_optim_cfg_t *c)
{
    if (c->form != SRV_FORM_TORCH && c->form != SRV_FORM_SUTSKEVER && c->form != SRV_FORM_EMA) {
        ps_error_set("Invalid momentum form: %d (want torch, sutskever or ema)", (int)c->form);
        return PS_EINVAL;
    }
    if (c->form == SRV_FORM_EMA && c->nesterov) {
        ps_error_set("Nesterov momentum is not available with the ema form");
        return PS_EINVAL;
    }
    if (c->form != SRV_FORM_TORCH && c->dampening != 0.0) {
        ps_error_set("Dampening must be 0 with the %s form", srv_optim_form_name(c->form));
        return PS_EINVAL;
    }
    if (c->form == SRV_FORM_EMA && c->momentum >= 1.0) {
        char txt[64];
        py_repr(c->momentum, txt, sizeof txt);
        ps_error_set("The ema form needs momentum (beta) below 1, not %s", txt);
        return PS_EINVAL;
    }
    if (check_value(c->clip_value, "Invalid clip value") != 0 ||
        check_value(c->decoupled_wd, "Invalid decoupled weight decay value") != 0) {
        return PS_EINVAL;
    }
    return 0;
}

int srv_optim_check(const srv_optim_cfg_t *c)
{
    /* Same order as torch.optim.SGD.__init__, so the first error matches. */
    if (check_value(c->lr, "Invalid learning rate") != 0 ||
        check_value(c->momentum, "Invalid momentum value") != 0 ||
        check_value(c->weight_decay, "Invalid weight_decay value") != 0 ||
        check_value(c->dampening, "Invalid dampening value") != 0) {
        return PS_EINVAL;
    }
    if (c->nesterov && (c->momentum <= 0.0 || c->dampening != 0.0)) {
        ps_error_set("Nesterov momentum requires a momentum and zero dampening");
        return PS_EINVAL;
    }
    return check_extras(c);
}

static const char *const form_names[] = {"torch", "sutskever", "ema"};

int srv_optim_parse_form(const char *s, srv_form_t *out)
{
    for (int f = 0; s != NULL && f < 3; f++) {
        if (strcmp(s, form_names[f]) == 0) {
            *out = (srv_form_t)f;
            return 0;
        }
    }
    ps_error_set("unknown momentum form \"%s\" (want torch, sutskever or ema)", s != NULL ? s : "");
    return PS_EINVAL;
}

const char *srv_optim_form_name(srv_form_t f)
{
    return (unsigned)f < 3 ? form_names[f] : "unknown";
}

/* ---- kernel ------------------------------------------------------------ */

/* g = p0*c0 + p1*c1 + ... in part order, each product rounded (no fma). */
static inline __attribute__((always_inline)) void sum_block(float *restrict g,
                                                            const float *const *parts,
                                                            const float *coef, int nparts,
                                                            size_t off, size_t m)
{
    const float *restrict p = parts[0] + off;
    float c = coef[0];
    for (size_t i = 0; i < m; i++) {
        g[i] = p[i] * c;
    }
    for (int k = 1; k < nparts; k++) {
        const float *restrict q = parts[k] + off;
        float ck = coef[k];
        for (size_t i = 0; i < m; i++) {
            g[i] = g[i] + q[i] * ck;
        }
    }
}

/* Not inlined: the same for every variant, and it vectorises without FMA. */
static void sum_parts(float *g, const float *const *parts, const float *coef, int nparts,
                      size_t off, size_t m)
{
    if (m == OPT_BLK) {
        sum_block(g, parts, coef, nparts, off, OPT_BLK);
    } else {
        sum_block(g, parts, coef, nparts, off, m);
    }
}

/*
 * One block.  Inlined with constant flags into each specialised caller, so
 * the branches below vanish; src[i]*c0 is the aggregated gradient (for
 * several parts src is the summed block and c0 is +-1, an exact identity
 * or negation on any value an arithmetic sum can produce).
 */
static inline __attribute__((always_inline)) void
update_block(opt_scal_t s, float *restrict w, float *restrict buf, const float *restrict src,
             float c0, size_t m, int has_wd, int mode, int nest)
{
    for (size_t i = 0; i < m; i++) {
        float g = src[i] * c0;
        if (has_wd) {
            g = fmaf(w[i], s.wd, g);
        }
        float d = g;
        if (mode != MODE_PLAIN) {
            float b = mode == MODE_FIRST ? g : fmaf(g, s.one_minus_damp, buf[i] * s.mom);
            buf[i] = b;
            d = nest ? fmaf(b, s.mom, g) : b;
        }
        w[i] = fmaf(d, s.neglr, w[i]);
    }
}

/* The whole range, block by block; constant flags after inlining. */
static inline __attribute__((always_inline)) void
update_range(opt_scal_t s, float *w, float *buf, const float *const *parts, const float *coef,
             int nparts, size_t n, int has_wd, int mode, int nest)
{
    float sum[OPT_BLK];
    for (size_t off = 0; off < n; off += OPT_BLK) {
        size_t m = n - off < OPT_BLK ? n - off : OPT_BLK;
        const float *src = parts[0] + off;
        float c0 = coef[0] * s.sign;
        float *b = mode == MODE_PLAIN ? NULL : buf + off;
        if (nparts > 1) {
            sum_parts(sum, parts, coef, nparts, off, m);
            src = sum;
            c0 = s.sign;
        }
        if (m == OPT_BLK) {
            update_block(s, w + off, b, src, c0, OPT_BLK, has_wd, mode, nest);
        } else {
            update_block(s, w + off, b, src, c0, m, has_wd, mode, nest);
        }
    }
}

/* Momentum variant m = {plain, first, first+nesterov, mom, mom+nesterov}. */
static inline __attribute__((always_inline)) void update_mode(int m, opt_scal_t s, float *w,
                                                              float *buf, const float *const *parts,
                                                              const float *coef, int nparts,
                                                              size_t n, int wd)
{
    switch (m) {
    case 0: update_range(s, w, buf, parts, coef, nparts, n, wd, MODE_PLAIN, 0); break;
    case 1: update_range(s, w, buf, parts, coef, nparts, n, wd, MODE_FIRST, 0); break;
    case 2: update_range(s, w, buf, parts, coef, nparts, n, wd, MODE_FIRST, 1); break;
    case 3: update_range(s, w, buf, parts, coef, nparts, n, wd, MODE_MOM, 0); break;
    default: update_range(s, w, buf, parts, coef, nparts, n, wd, MODE_MOM, 1); break;
    }
}

/*
 * Variant v = 5*has_wd + momentum variant, ten specialised loops.  Cloned
 * per ISA: the x86-64-v3 clone vectorises fmaf to vfmadd on 8 floats; the
 * default clone is plain x86-64 and calls libm's fmaf (exact everywhere).
 * The ifunc resolver picks a clone once per process.
 */
OPT_CLONES static void update_variant(int v, opt_scal_t s, float *w, float *buf,
                                      const float *const *parts, const float *coef, int nparts,
                                      size_t n)
{
    if (v >= 5) {
        update_mode(v - 5, s, w, buf, parts, coef, nparts, n, 1);
    } else {
        update_mode(v, s, w, buf, parts, coef, nparts, n, 0);
    }
}

/* ---- the general path: other forms, clipping, decoupled decay --------- */

/*
 * Final-step variants of the general path, fixed per call: the torch form's
 * five momentum variants (as update_mode numbers them), then sutskever's
 * four and ema's two.
 */
enum {
    FV_TORCH = 0, /* + 0..4: plain, first, first+nest, mom, mom+nest */
    FV_SUT_FIRST = 5,
    FV_SUT_FIRST_NEST,
    FV_SUT_MOM,
    FV_SUT_MOM_NEST,
    FV_EMA_FIRST,
    FV_EMA_MOM,
};

/* clip, coupled weight decay, then decoupled decay, each its own loop. */
static inline __attribute__((always_inline)) void
pre_block(const opt_ext_t *e, opt_scal_t s, float *restrict w, float *restrict g, size_t m)
{
    if (e->has_clip) {
        float hi = e->clip, lo = -e->clip;
        for (size_t i = 0; i < m; i++) {
            /* fminf(fmaxf(g, lo), hi), spelled as compares so it vectorises:
             * the same value for every g, NaN included (-> lo), since lo
             * and hi are not NaN. */
            float x = g[i] > lo ? g[i] : lo;
            g[i] = x < hi ? x : hi;
        }
    }
    if (e->has_wd) {
        for (size_t i = 0; i < m; i++) {
            g[i] = fmaf(w[i], s.wd, g[i]);
        }
    }
    if (e->has_decoupled) {
        for (size_t i = 0; i < m; i++) {
            w[i] = w[i] * e->decoupled_scale;
        }
    }
}

/* Sutskever: v = mom*v - lr*g (v = -lr*g first); w += v or mom*v - lr*g. */
static inline __attribute__((always_inline)) void sut_block(opt_scal_t s, float *restrict w,
                                                            float *restrict v,
                                                            const float *restrict g, size_t m,
                                                            int first, int nest)
{
    for (size_t i = 0; i < m; i++) {
        float vi = first ? g[i] * s.neglr : fmaf(g[i], s.neglr, v[i] * s.mom);
        v[i] = vi;
        w[i] = w[i] + (nest ? fmaf(vi, s.mom, g[i] * s.neglr) : vi);
    }
}

/* EMA: v = beta*v + (1-beta)*g (v = (1-beta)*g first); w -= lr*v. */
static inline __attribute__((always_inline)) void ema_block(opt_scal_t s, float one_minus_beta,
                                                            float *restrict w, float *restrict v,
                                                            const float *restrict g, size_t m,
                                                            int first)
{
    for (size_t i = 0; i < m; i++) {
        float vi = first ? g[i] * one_minus_beta : fmaf(g[i], one_minus_beta, v[i] * s.mom);
        v[i] = vi;
        w[i] = fmaf(vi, s.neglr, w[i]);
    }
}

/* g = the signed aggregate of the parts over [off, off + m). */
static inline __attribute__((always_inline)) void gather_block(opt_scal_t s, float *restrict g,
                                                               const float *const *parts,
                                                               const float *coef, int nparts,
                                                               size_t off, size_t m)
{
    if (nparts > 1) {
        sum_parts(g, parts, coef, nparts, off, m);
        if (s.sign < 0.0f) {
            for (size_t i = 0; i < m; i++) {
                g[i] = -g[i]; /* == g*(-1): maximize */
            }
        }
        return;
    }
    const float *restrict p = parts[0] + off;
    float c0 = coef[0] * s.sign;
    for (size_t i = 0; i < m; i++) {
        g[i] = p[i] * c0;
    }
}

/* One block: aggregate into g, the steps before momentum, then the form. */
static inline __attribute__((always_inline)) void
ext_block(int fv, const opt_ext_t *e, opt_scal_t s, float *w, float *b, float *g,
          const float *const *parts, const float *coef, int nparts, size_t off, size_t m)
{
    gather_block(s, g, parts, coef, nparts, off, m);
    pre_block(e, s, w, g, m);
    if (fv < FV_SUT_FIRST) {
        /* torch: wd is already in g, so the block runs without it; g*1 == g. */
        int mode = fv == 0 ? MODE_PLAIN : fv <= 2 ? MODE_FIRST : MODE_MOM;
        update_block(s, w, b, g, 1.0f, m, 0, mode, fv == 2 || fv == 4);
    } else if (fv < FV_EMA_FIRST) {
        int nest = fv == FV_SUT_FIRST_NEST || fv == FV_SUT_MOM_NEST;
        sut_block(s, w, b, g, m, fv <= FV_SUT_FIRST_NEST, nest);
    } else {
        ema_block(s, e->one_minus_beta, w, b, g, m, fv == FV_EMA_FIRST);
    }
}

/* The whole range, block by block, for a constant variant fv. */
static inline __attribute__((always_inline)) void ext_range(int fv, const opt_ext_t *e,
                                                            opt_scal_t s, float *w, float *buf,
                                                            const float *const *parts,
                                                            const float *coef, int nparts, size_t n)
{
    float g[OPT_BLK];
    for (size_t off = 0; off < n; off += OPT_BLK) {
        size_t m = n - off < OPT_BLK ? n - off : OPT_BLK;
        float *b = fv == 0 ? NULL : buf + off;
        if (m == OPT_BLK) {
            ext_block(fv, e, s, w + off, b, g, parts, coef, nparts, off, OPT_BLK);
        } else {
            ext_block(fv, e, s, w + off, b, g, parts, coef, nparts, off, m);
        }
    }
}

/* Variant fv as a compile-time constant in each case; cloned per ISA. */
OPT_CLONES static void ext_variant(int fv, const opt_ext_t *e, opt_scal_t s, float *w, float *buf,
                                   const float *const *parts, const float *coef, int nparts,
                                   size_t n)
{
    switch (fv) {
#define EXT_CASE(k)                                                                                \
    case k: ext_range(k, e, s, w, buf, parts, coef, nparts, n); break;
        EXT_CASE(0)
        EXT_CASE(1)
        EXT_CASE(2)
        EXT_CASE(3)
        EXT_CASE(4)
        EXT_CASE(5)
        EXT_CASE(6)
        EXT_CASE(7)
        EXT_CASE(8)
        EXT_CASE(9)
        EXT_CASE(10)
#undef EXT_CASE
    default: break;
    }
}

/* Settings the fast path does not cover: pick the variant, then run it. */
static void apply_general(const srv_optim_cfg_t *c, opt_scal_t s, float *w, float *buf,
                          const float *const *parts, const float *coef, int nparts, size_t n,
                          int first)
{
    opt_ext_t e = {
        .clip = (float)c->clip_value,
        .decoupled_scale = (float)(1.0 - c->lr * c->decoupled_wd),
        .one_minus_beta = (float)(1.0 - c->momentum),
        .has_clip = c->clip_value > 0.0,
        .has_wd = c->weight_decay != 0.0,
        .has_decoupled = c->decoupled_wd > 0.0,
    };
    int fv = 0; /* momentum 0: plain SGD in every form */
    if (c->momentum != 0.0) {
        int nest = c->nesterov != 0;
        if (c->form == SRV_FORM_SUTSKEVER) {
            fv = (first ? FV_SUT_FIRST : FV_SUT_MOM) + nest;
        } else if (c->form == SRV_FORM_EMA) {
            fv = first ? FV_EMA_FIRST : FV_EMA_MOM;
        } else {
            fv = (first ? 1 : 3) + nest;
        }
    }
    ext_variant(fv, &e, s, w, buf, parts, coef, nparts, n);
}

void srv_optim_apply(const srv_optim_cfg_t *c, float *w, float *buf, const float *const *parts,
                     const float *coef, int nparts, size_t n, int first)
{
    assert(nparts >= 1);
    assert(c->momentum == 0.0 || buf != NULL);
    opt_scal_t s = {
        .mom = (float)c->momentum,
        .one_minus_damp = (float)(1.0 - c->dampening),
        .wd = (float)c->weight_decay,
        .neglr = (float)(-c->lr),
        .sign = c->maximize ? -1.0f : 1.0f,
    };
    /* The torch form without clip or decoupled decay (maximize folds into
     * the sign) keeps its ten specialised loops; the rest is the general
     * path.  With momentum 0 every form is plain SGD, the torch loop. */
    if (c->clip_value > 0.0 || c->decoupled_wd > 0.0 ||
        (c->momentum != 0.0 && c->form != SRV_FORM_TORCH)) {
        apply_general(c, s, w, buf, parts, coef, nparts, n, first);
        return;
    }
    /* torch tests momentum and weight_decay as Python floats, not floats. */
    int v = 0;
    if (c->momentum != 0.0) {
        v = (first ? 1 : 3) + (c->nesterov ? 1 : 0);
    }
    if (c->weight_decay != 0.0) {
        v += 5;
    }
    update_variant(v, s, w, buf, parts, coef, nparts, n);
}
