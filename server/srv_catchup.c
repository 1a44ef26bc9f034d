#include "srv_catchup.h"

#include "ps_err.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

srv_map2_t srv_map2_identity(void)
{
    return (srv_map2_t){1.0, 0.0, 0.0, 1.0};
}

srv_map2_t srv_map2_mul(srv_map2_t x, srv_map2_t y)
{
    return (srv_map2_t){
        x.a * y.a + x.b * y.c,
        x.a * y.b + x.b * y.d,
        x.c * y.a + x.d * y.c,
        x.c * y.b + x.d * y.d,
    };
}

/*
 * Derivation (srv_optim.h's order, g = 0 from the data): g = wd*w (the old
 * w), then w is scaled by ds (decoupled decay), then the form's momentum
 * step.  L is the lr the kernel uses, -(float)(-lr).
 */
srv_map2_t srv_catchup_step_map(const srv_optim_cfg_t *c, double lr, int first)
{
    double L = -(double)(float)(-lr);
    double wd = (double)(float)c->weight_decay;
    double m = (double)(float)c->momentum;
    double ds = c->decoupled_wd > 0.0 ? (double)(float)(1.0 - lr * c->decoupled_wd) : 1.0;
    double nest = c->nesterov ? 1.0 : 0.0;
    if (c->momentum == 0.0) {
        return (srv_map2_t){ds - L * wd, 0.0, 0.0, 0.0};
    }
    if (c->form == SRV_FORM_SUTSKEVER) {
        /* v' = m v - L wd w; w' = ds w + v' (nesterov: ds w + m v' - L wd w) */
        double k = 1.0 + nest * m;
        double vm = first ? 0.0 : m;
        return (srv_map2_t){ds - L * wd * k, nest ? m * vm : vm, -L * wd, vm};
    }
    if (c->form == SRV_FORM_EMA) {
        /* v' = m v + (1-m) wd w; w' = ds w - L v' */
        double omb = (double)(float)(1.0 - c->momentum);
        double vm = first ? 0.0 : m;
        return (srv_map2_t){ds - L * omb * wd, -L * vm, omb * wd, vm};
    }
    /* torch: buf' = wd w (first) or m buf + (1-damp) wd w; d = buf' or
     * g + m buf' (nesterov); w' = ds w - L d */
    double omd = first ? 1.0 : (double)(float)(1.0 - c->dampening);
    double bm = first ? 0.0 : m;
    double dw = nest ? wd * (1.0 + m * omd) : omd * wd; /* d's w coefficient */
    double db = nest ? m * bm : bm;                     /* d's buf coefficient */
    return (srv_map2_t){ds - L * dw, -L * db, omd * wd, bm};
}

void srv_catchup_init(srv_catchup_t *k, uint64_t base)
{
    memset(k, 0, sizeof *k);
    k->base = base;
}

void srv_catchup_fini(srv_catchup_t *k)
{
    for (int l = 0; l < 64; l++) {
        free(k->level[l]);
    }
    memset(k, 0, sizeof *k);
}

void srv_catchup_reset(srv_catchup_t *k, uint64_t base)
{
    srv_catchup_fini(k);
    srv_catchup_init(k, base);
}

/* Room for `need` blocks at level l. */
static int reserve_level(srv_catchup_t *k, int l, uint64_t need)
{
    if (need <= k->cap[l]) {
        return 0;
    }
    uint64_t cap = k->cap[l] < 16 ? 16 : k->cap[l] * 2;
    srv_map2_t *p = realloc(k->level[l], cap * sizeof *p);
    if (p == NULL) {
        ps_error_set("catch-up tree: out of memory for %llu steps",
                     (unsigned long long)(k->count + 1));
        return PS_ENOMEM;
    }
    k->level[l] = p;
    k->cap[l] = cap;
    return 0;
}

int srv_catchup_push(srv_catchup_t *k, srv_map2_t m)
{
    uint64_t n = k->count + 1; /* steps kept after this push */
    /* Reserve every level first, so a failure changes nothing. */
    for (int l = 0; l < 64 && (n >> l) > 0; l++) {
        if (reserve_level(k, l, n >> l) != 0) {
            return PS_ENOMEM;
        }
    }
    k->level[0][n - 1] = m;
    /* Each block that this step completes is its two halves' product. */
    for (int l = 1; l < 64 && (n & ((1ULL << l) - 1)) == 0; l++) {
        uint64_t j = (n >> l) - 1;
        k->level[l][j] = srv_map2_mul(k->level[l - 1][2 * j + 1], k->level[l - 1][2 * j]);
        if (l + 1 > k->nlevels) {
            k->nlevels = l + 1;
        }
    }
    if (k->nlevels == 0) {
        k->nlevels = 1;
    }
    k->count = n;
    return 0;
}

srv_map2_t srv_catchup_product(const srv_catchup_t *k, uint64_t s, uint64_t e)
{
    assert(s >= k->base && s <= e && e - k->base <= k->count);
    uint64_t pos = s - k->base, end = e - k->base;
    srv_map2_t p = srv_map2_identity();
    while (pos < end) {
        /* The largest aligned block starting at pos that ends by `end`. */
        int l = 63 - __builtin_clzll(end - pos); /* floor(log2(remaining)) */
        if (pos != 0 && __builtin_ctzll(pos) < l) {
            l = __builtin_ctzll(pos);
        }
        p = srv_map2_mul(k->level[l][pos >> l], p);
        pos += 1ULL << l;
    }
    return p;
}

size_t srv_catchup_bytes(const srv_catchup_t *k)
{
    size_t b = 0;
    for (int l = 0; l < 64; l++) {
        b += (size_t)k->cap[l] * sizeof(srv_map2_t);
    }
    return b;
}

void srv_catchup_row(srv_map2_t p, float *w, float *buf, size_t n)
{
    if (buf == NULL) {
        for (size_t i = 0; i < n; i++) {
            w[i] = (float)(p.a * (double)w[i]);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        double x = w[i], y = buf[i];
        w[i] = (float)(p.a * x + p.b * y);
        buf[i] = (float)(p.c * x + p.d * y);
    }
}
