/*
 * libpsclient: what a worker declares before ps_start: tensors and their
 * initial values, per-tensor optimizer options (ps_set_tensor_opts), the
 * training plan, caller-owned arrays (ps_bind), and the values every worker
 * must share (ps_require_same).
 */
#include "ps_api.h"

#include "ps_rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Between ps_init and ps_start. */
static int declaring(const ps_t *ps, const char *call)
{
    if (ps->state != ST_JOINED) {
        ps_error_set("%s: only between ps_init and ps_start", call);
        return PS_ESTATE;
    }
    return 0;
}

/* nn.Linear's fan-in: the weight's columns; a bias takes its weight's. */
static int fan_in_of(const ps_layout_t *l, int i, const ps_initializer_t *in, int64_t *fan)
{
    const ps_tensor_t *t = &l->t[i];
    char wname[PS_MAX_NAME + 8];
    size_t n = strlen(t->name);
    int w = i;
    if (in->fan_in > 0) {
        *fan = in->fan_in;
        return 0;
    }
    if (t->ndim < 2 && n > 5 && strcmp(t->name + n - 5, ".bias") == 0) {
        snprintf(wname, sizeof wname, "%.*s.weight", (int)(n - 5), t->name);
        w = ps_layout_find(l, wname);
    }
    if (w < 0 || l->t[w].ndim < 2) {
        ps_error_set("tensor '%s': PS_INIT_TORCH_LINEAR needs fan_in, or a 2-D '<prefix>.weight' "
                     "declared before '<prefix>.bias'",
                     t->name);
        return PS_EINVAL;
    }
    *fan = (int64_t)(l->t[w].numel / (size_t)l->t[w].dims[0]);
    return 0;
}

/* Initial values of tensor i; random rules draw from stream i of `seed`. */
static int fill_init(const ps_layout_t *l, int i, float *dst, const ps_initializer_t *in)
{
    const ps_tensor_t *t = &l->t[i];
    int64_t fan = 0;
    float bound = 0;
    int rv;
    if (in->kind == PS_INIT_ZEROS) {
        memset(dst, 0, t->numel * sizeof *dst);
        return 0;
    }
    if (in->kind == PS_INIT_VALUES && in->values) {
        memcpy(dst, in->values, t->numel * sizeof *dst);
        return 0;
    }
    if (in->kind == PS_INIT_UNIFORM && isfinite(in->bound) && in->bound >= 0) {
        bound = in->bound;
    } else if (in->kind == PS_INIT_TORCH_LINEAR) {
        if ((rv = fan_in_of(l, i, in, &fan)) != 0) {
            return rv;
        }
        bound = (float)(1.0 / sqrt((double)fan));
    } else {
        ps_error_set("tensor '%s': bad init (kind %d: VALUES needs values, UNIFORM a finite "
                     "bound >= 0)",
                     t->name, (int)in->kind);
        return PS_EINVAL;
    }
    ps_rng_t rng;
    ps_rng_seed(&rng, in->seed, (uint64_t)i);
    for (size_t k = 0; k < t->numel; k++) {
        dst[k] = (2.0f * ps_rng_uniform(&rng) - 1.0f) * bound; /* |2u-1| <= 1 exactly */
    }
    return 0;
}

static int declare(ps_t *ps, const char *name, int ndim, const int64_t *dims,
                   const ps_initializer_t *init)
{
    static const ps_initializer_t zeros = {.kind = PS_INIT_ZEROS};
    ps_layout_t *l = &ps->layout;
    int rv;
    if (!name || !dims) {
        ps_error_set("ps_declare: name and dims must not be NULL");
        return PS_EINVAL;
    }
    if ((rv = declaring(ps, "ps_declare")) != 0) {
        return rv;
    }
    if ((rv = ps_layout_add(l, name, ndim, dims)) != 0) {
        return rv; /* the limits are checked before anything grows */
    }
    float *buf = realloc(ps->params, l->total * sizeof *buf);
    if (!buf) {
        ps_error_set("tensor '%s': no memory for %zu floats", name, l->total);
        ps_layout_drop_last(l);
        return PS_ENOMEM;
    }
    ps->params = buf;
    const ps_tensor_t *t = &l->t[l->n - 1];
    if ((rv = fill_init(l, l->n - 1, buf + t->offset, init ? init : &zeros)) != 0) {
        ps_layout_drop_last(l);
    }
    return rv;
}

int ps_declare(ps_t *ps, const char *name, int ndim, const int64_t *dims,
               const ps_initializer_t *init)
{
    if (!ps) {
        return ps_api_no_handle("ps_declare");
    }
    int rv = declare(ps, name, ndim, dims, init);
    if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

int ps_plan(ps_t *ps, uint64_t steps_per_epoch, uint64_t total_steps)
{
    if (!ps) {
        return ps_api_no_handle("ps_plan");
    }
    int rv = 0;
    if (ps->state != ST_JOINED) {
        ps_error_set("ps_plan: only between ps_init and ps_start");
        rv = PS_ESTATE;
    } else if (steps_per_epoch < 1 || total_steps < 1) {
        ps_error_set("ps_plan: steps_per_epoch and total_steps must be >= 1");
        rv = PS_EINVAL;
    }
    if (rv == 0) {
        ps->plan = (ps_planinfo_t){steps_per_epoch, total_steps};
        ps->planned = 1;
    } else if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

/* [a, a + n) and [b, b + m) share a float (NULL shares nothing). */
static int overlap(const float *a, size_t n, const float *b, size_t m)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return a && b && x < y + m * sizeof *b && y < x + n * sizeof *a;
}

/* The library reads one array while it writes another: they must be apart. */
static int check_apart(const ps_t *ps, int t, const float *w, const float *g)
{
    const ps_tensor_t *x = ps->layout.t;
    size_t n = x[t].numel;
    if (overlap(w, n, g, n)) {
        ps_error_set("ps_bind: the weights and the gradient of '%s' overlap", x[t].name);
        return PS_EINVAL;
    }
    for (int u = 0; u < ps->layout.n; u++) {
        size_t m = x[u].numel;
        const float *uw = ps->bound_w[u], *ug = ps->bound_g[u];
        if (u != t && (overlap(w, n, uw, m) || overlap(w, n, ug, m) || overlap(g, n, uw, m) ||
                       overlap(g, n, ug, m))) {
            ps_error_set("ps_bind: the arrays of '%s' overlap those bound to '%s'", x[t].name,
                         x[u].name);
            return PS_EINVAL;
        }
    }
    return 0;
}

static int bind(ps_t *ps, const char *name, float *weights, float *grads)
{
    int t, rv = declaring(ps, "ps_bind");
    if (rv != 0) {
        return rv;
    }
    if (!name || (t = ps_layout_find(&ps->layout, name)) < 0) {
        ps_error_set("ps_bind: no tensor '%.80s' declared", name ? name : "(null)");
        return PS_ENOENT;
    }
    if ((rv = check_apart(ps, t, weights, grads)) != 0) {
        return rv;
    }
    const ps_tensor_t *x = &ps->layout.t[t];
    if (weights) {
        /* memmove: they may be the very values ps_declare copied. */
        memmove(weights, ps->params + x->offset, x->numel * sizeof *weights);
    }
    ps->bound_w[t] = weights;
    ps->bound_g[t] = grads;
    return 0;
}

int ps_bind(ps_t *ps, const char *name, float *weights, float *grads)
{
    if (!ps) {
        return ps_api_no_handle("ps_bind");
    }
    int rv = bind(ps, name, weights, grads);
    if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

int ps_require_same(ps_t *ps, const uint64_t *values, int n, const char *msg)
{
    if (!ps) {
        return ps_api_no_handle("ps_require_same");
    }
    int rv = declaring(ps, "ps_require_same");
    if (rv == 0 && (n < 0 || n > EXTRA_MAX || (n > 0 && !values))) {
        ps_error_set("ps_require_same: 0 to %d values", EXTRA_MAX);
        rv = PS_EINVAL;
    }
    if (rv == 0) {
        free(ps->disagree);
        ps->disagree = msg ? strdup(msg) : NULL;
        if (n > 0) {
            memcpy(ps->extra, values, (size_t)n * sizeof *values);
        }
        ps->nextra = n;
    }
    if (rv == 0 && msg && !ps->disagree) {
        ps_error_set("ps_require_same: no memory for the message");
        rv = PS_ENOMEM;
    }
    if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

static int set_tensor_opts(ps_t *ps, const char *name, double weight_decay, double lr_scale)
{
    int t, rv = declaring(ps, "ps_set_tensor_opts");
    if (rv != 0) {
        return rv;
    }
    if (!name || (t = ps_layout_find(&ps->layout, name)) < 0) {
        ps_error_set("ps_set_tensor_opts: no tensor '%.80s' declared", name ? name : "(null)");
        return PS_ENOENT;
    }
    if (!isfinite(weight_decay) || !isfinite(lr_scale)) {
        ps_error_set("ps_set_tensor_opts: tensor '%s': weight decay %g, lr scale %g (finite "
                     "values expected; negative for the servers' setting)",
                     name, weight_decay, lr_scale);
        return PS_EINVAL;
    }
    unsigned opts = (weight_decay >= 0 ? PS_TOPT_WD : 0u) | (lr_scale >= 0 ? PS_TOPT_LR : 0u);
    if ((rv = ps_layout_set_opts(&ps->layout, t, opts, weight_decay, lr_scale)) != 0) {
        char why[256]; /* the detail buffer cannot be its own argument */
        snprintf(why, sizeof why, "%s", ps_error_msg());
        ps_error_set("ps_set_tensor_opts: %s", why);
    }
    return rv;
}

int ps_set_tensor_opts(ps_t *ps, const char *name, double weight_decay, double lr_scale)
{
    if (!ps) {
        return ps_api_no_handle("ps_set_tensor_opts");
    }
    int rv = set_tensor_opts(ps, name, weight_decay, lr_scale);
    if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}
