#include "ps_layout.h"

#include "ps_bytes.h"
#include "ps_err.h"

#include <stdio.h>
#include <string.h>

void ps_layout_init(ps_layout_t *l)
{
    memset(l, 0, sizeof *l);
}

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > PS_MAX_NAME) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        /* Printable ASCII without quotes/backslash: names go into JSON. */
        if (name[i] <= ' ' || name[i] > '~' || name[i] == '"' || name[i] == '\\') {
            return 0;
        }
    }
    return 1;
}

int ps_layout_add(ps_layout_t *l, const char *name, int ndim, const int64_t *dims)
{
    if (l->n >= PS_MAX_TENSORS) {
        ps_error_set("too many tensors (at most %d)", PS_MAX_TENSORS);
        return PS_EINVAL;
    }
    if (!name_ok(name)) {
        ps_error_set("bad tensor name '%.80s'", name);
        return PS_EINVAL;
    }
    if (ps_layout_find(l, name) >= 0) {
        ps_error_set("duplicate tensor name '%s'", name);
        return PS_EINVAL;
    }
    if (ndim < 1 || ndim > PS_MAX_DIMS) {
        ps_error_set("tensor '%s': %d dimensions (1 to %d allowed)", name, ndim, PS_MAX_DIMS);
        return PS_EINVAL;
    }
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] < 1 || (size_t)dims[d] > PS_MAX_ELEMS / numel) {
            ps_error_set("tensor '%s': bad dimension %lld", name, (long long)dims[d]);
            return PS_EINVAL;
        }
        numel *= (size_t)dims[d];
    }
    if (numel > PS_MAX_ELEMS - l->total) {
        ps_error_set("model larger than %zu elements", PS_MAX_ELEMS);
        return PS_EINVAL;
    }
    ps_tensor_t *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->ndim = ndim;
    memcpy(t->dims, dims, (size_t)ndim * sizeof dims[0]);
    t->offset = l->total;
    t->numel = numel;
    l->total += numel;
    return 0;
}

void ps_layout_drop_last(ps_layout_t *l)
{
    if (l->n > 0) {
        l->n--;
        l->total = l->t[l->n].offset;
        memset(&l->t[l->n], 0, sizeof l->t[l->n]);
    }
}

int ps_layout_tensor_at(const ps_layout_t *l, size_t idx)
{
    for (int i = 0; i < l->n; i++) {
        if (idx >= l->t[i].offset && idx - l->t[i].offset < l->t[i].numel) {
            return i;
        }
    }
    return -1;
}

int ps_layout_find(const ps_layout_t *l, const char *name)
{
    for (int i = 0; i < l->n; i++) {
        if (strcmp(l->t[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

uint64_t ps_layout_hash(const ps_layout_t *l)
{
    uint8_t buf[PS_LAYOUT_MAX_ENCODED];
    long n = ps_layout_encode(l, buf, sizeof buf);
    uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */
    for (long i = 0; i < n; i++) {
        h ^= buf[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int ps_layout_set_opts(ps_layout_t *l, int i, unsigned opts, double weight_decay, double lr_scale)
{
    if (i < 0 || i >= l->n) {
        ps_error_set("no tensor %d in the layout", i);
        return PS_EINVAL;
    }
    ps_tensor_t *t = &l->t[i];
    if (opts & ~(PS_TOPT_WD | PS_TOPT_LR)) {
        ps_error_set("tensor '%s': unknown option bits 0x%x", t->name, opts);
        return PS_EINVAL;
    }
    /* !(x >= 0) also catches NaN; isfinite is not needed beyond Inf. */
    if ((opts & PS_TOPT_WD) && !(weight_decay >= 0 && weight_decay <= 1e30)) {
        ps_error_set("tensor '%s': weight decay %g (a finite value >= 0 expected)", t->name,
                     weight_decay);
        return PS_EINVAL;
    }
    if ((opts & PS_TOPT_LR) && !(lr_scale >= 0 && lr_scale <= 1e30)) {
        ps_error_set("tensor '%s': learning-rate scale %g (a finite value >= 0 expected)", t->name,
                     lr_scale);
        return PS_EINVAL;
    }
    t->opts = opts;
    t->weight_decay = (opts & PS_TOPT_WD) ? weight_decay : 0.0;
    t->lr_scale = (opts & PS_TOPT_LR) ? lr_scale : 0.0;
    return 0;
}

int ps_layout_has_opts(const ps_layout_t *l)
{
    for (int i = 0; i < l->n; i++) {
        if (l->t[i].opts) {
            return 1;
        }
    }
    return 0;
}

void ps_layout_describe_opts(const ps_layout_t *l, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->n && used + 1 < cap; i++) {
        const ps_tensor_t *t = &l->t[i];
        if (!t->opts) {
            continue;
        }
        used += (size_t)snprintf(buf + used, cap - used, "%s%s:", used ? "; " : "", t->name);
        if ((t->opts & PS_TOPT_WD) && used + 1 < cap) {
            used +=
                (size_t)snprintf(buf + used, cap - used, " weight_decay %.17g", t->weight_decay);
        }
        if ((t->opts & PS_TOPT_LR) && used + 1 < cap) {
            used += (size_t)snprintf(buf + used, cap - used, "%s lr_scale %.17g",
                                     (t->opts & PS_TOPT_WD) ? "," : "", t->lr_scale);
        }
    }
}

static int tensor_same(const ps_tensor_t *x, const ps_tensor_t *y)
{
    return strcmp(x->name, y->name) == 0 && x->ndim == y->ndim &&
           memcmp(x->dims, y->dims, (size_t)x->ndim * sizeof x->dims[0]) == 0 &&
           x->opts == y->opts && x->weight_decay == y->weight_decay && x->lr_scale == y->lr_scale;
}

int ps_layout_first_diff(const ps_layout_t *a, const ps_layout_t *b)
{
    int n = a->n < b->n ? a->n : b->n;
    for (int i = 0; i < n; i++) {
        if (!tensor_same(&a->t[i], &b->t[i])) {
            return i;
        }
    }
    return a->n == b->n ? -1 : n;
}

void ps_layout_describe_tensor(const ps_tensor_t *t, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "'%s' [", t->name);
    for (int d = 0; d < t->ndim && used + 1 < cap; d++) {
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", d ? "," : "", (long long)t->dims[d]);
    }
    if (used + 1 < cap) {
        used += (size_t)snprintf(buf + used, cap - used, "]");
    }
    if ((t->opts & PS_TOPT_WD) && used + 1 < cap) {
        used += (size_t)snprintf(buf + used, cap - used, " weight_decay %g", t->weight_decay);
    }
    if ((t->opts & PS_TOPT_LR) && used + 1 < cap) {
        snprintf(buf + used, cap - used, " lr_scale %g", t->lr_scale);
    }
}

void ps_layout_describe(const ps_layout_t *l, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < l->n && used + 1 < cap; i++) {
        const ps_tensor_t *t = &l->t[i];
        used += (size_t)snprintf(buf + used, cap - used, "%s%s[", i ? " " : "", t->name);
        for (int d = 0; d < t->ndim && used + 1 < cap; d++) {
            used += (size_t)snprintf(buf + used, cap - used, "%s%lld", d ? "," : "",
                                     (long long)t->dims[d]);
        }
        if (used + 1 < cap) {
            used += (size_t)snprintf(buf + used, cap - used, "]");
        }
    }
}

static uint64_t f64_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static double f64_of(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

long ps_layout_encode(const ps_layout_t *l, uint8_t *buf, size_t cap)
{
    int v2 = ps_layout_has_opts(l);
    size_t need = v2 ? 8 : 4;
    for (int i = 0; i < l->n; i++) {
        need += 2 + strlen(l->t[i].name) + 8 * (size_t)l->t[i].ndim + (v2 ? 17 : 0);
    }
    if (need > cap) {
        return PS_ENOMEM;
    }
    uint8_t *p = buf;
    if (v2) {
        ps_put_u32(p, PS_LAYOUT_V2_MAGIC);
        p += 4;
    }
    ps_put_u32(p, (uint32_t)l->n);
    p += 4;
    for (int i = 0; i < l->n; i++) {
        const ps_tensor_t *t = &l->t[i];
        size_t len = strlen(t->name);
        *p++ = (uint8_t)len;
        memcpy(p, t->name, len);
        p += len;
        *p++ = (uint8_t)t->ndim;
        for (int d = 0; d < t->ndim; d++) {
            ps_put_u64(p, (uint64_t)t->dims[d]);
            p += 8;
        }
        if (v2) {
            *p++ = (uint8_t)t->opts;
            ps_put_u64(p, f64_bits(t->weight_decay));
            ps_put_u64(p + 8, f64_bits(t->lr_scale));
            p += 16;
        }
    }
    return (long)(p - buf);
}

/* One tensor's version-1 fields at *pp, appended to l; 0 or -1. */
static int decode_tensor(ps_layout_t *l, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    char name[PS_MAX_NAME + 1];
    int64_t dims[PS_MAX_DIMS];
    if (end - p < 1 || *p > PS_MAX_NAME || end - p < 2 + *p) {
        return -1;
    }
    size_t nlen = *p++;
    if (memchr(p, '\0', nlen)) {
        return -1; /* would decode to a shorter name: not canonical */
    }
    memcpy(name, p, nlen);
    name[nlen] = '\0';
    p += nlen;
    int ndim = *p++;
    if (ndim < 1 || ndim > PS_MAX_DIMS || end - p < 8 * ndim) {
        return -1;
    }
    for (int d = 0; d < ndim; d++) {
        uint64_t v = ps_get_u64(p);
        p += 8;
        if (v > PS_MAX_ELEMS) {
            return -1;
        }
        dims[d] = (int64_t)v;
    }
    *pp = p;
    return ps_layout_add(l, name, ndim, dims) == 0 ? 0 : -1;
}

/* The version-2 options of the tensor just decoded; canonical only: known
 * bits, valid values, 0 where the bit is clear. */
static int decode_opts(ps_layout_t *l, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    if (end - p < 17) {
        return -1;
    }
    unsigned opts = p[0];
    double wd = f64_of(ps_get_u64(p + 1)), lr = f64_of(ps_get_u64(p + 9));
    if ((!(opts & PS_TOPT_WD) && f64_bits(wd) != 0) ||
        (!(opts & PS_TOPT_LR) && f64_bits(lr) != 0)) {
        return -1;
    }
    *pp = p + 17;
    return ps_layout_set_opts(l, l->n - 1, opts, wd, lr) == 0 ? 0 : -1;
}

int ps_layout_decode(ps_layout_t *l, const uint8_t *buf, size_t len)
{
    const uint8_t *p = buf, *end = buf + len;
    ps_layout_init(l);
    if (len < 4) {
        goto malformed;
    }
    int v2 = ps_get_u32(p) == PS_LAYOUT_V2_MAGIC;
    if (v2) {
        p += 4;
        if (end - p < 4) {
            goto malformed;
        }
    }
    uint32_t count = ps_get_u32(p);
    p += 4;
    if (count > PS_MAX_TENSORS) {
        goto malformed;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (decode_tensor(l, &p, end) != 0 || (v2 && decode_opts(l, &p, end) != 0)) {
            goto malformed;
        }
    }
    /* Version 2 without options would hash differently from its version-1
     * twin: not canonical. */
    if (p != end || (v2 && !ps_layout_has_opts(l))) {
        goto malformed;
    }
    return 0;
malformed:
    ps_error_set("malformed layout (%zu bytes)", len);
    ps_layout_init(l);
    return PS_EPROTO;
}
