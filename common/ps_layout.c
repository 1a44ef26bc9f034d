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
    uint8_t buf[PS_MAX_TENSORS * (2 + PS_MAX_NAME + 8 * PS_MAX_DIMS) + 4];
    long n = ps_layout_encode(l, buf, sizeof buf);
    uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */
    for (long i = 0; i < n; i++) {
        h ^= buf[i];
        h *= 1099511628211ULL;
    }
    return h;
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

long ps_layout_encode(const ps_layout_t *l, uint8_t *buf, size_t cap)
{
    size_t need = 4;
    for (int i = 0; i < l->n; i++) {
        need += 2 + strlen(l->t[i].name) + 8 * (size_t)l->t[i].ndim;
    }
    if (need > cap) {
        return PS_ENOMEM;
    }
    uint8_t *p = buf;
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
    }
    return (long)(p - buf);
}

int ps_layout_decode(ps_layout_t *l, const uint8_t *buf, size_t len)
{
    const uint8_t *p = buf, *end = buf + len;
    ps_layout_init(l);
    if (len < 4) {
        goto malformed;
    }
    uint32_t count = ps_get_u32(p);
    p += 4;
    if (count > PS_MAX_TENSORS) {
        goto malformed;
    }
    for (uint32_t i = 0; i < count; i++) {
        char name[PS_MAX_NAME + 1];
        int64_t dims[PS_MAX_DIMS];
        if (end - p < 1 || *p > PS_MAX_NAME || end - p < 2 + *p) {
            goto malformed;
        }
        size_t nlen = *p++;
        if (memchr(p, '\0', nlen)) {
            goto malformed; /* would decode to a shorter name: not canonical */
        }
        memcpy(name, p, nlen);
        name[nlen] = '\0';
        p += nlen;
        int ndim = *p++;
        if (ndim < 1 || ndim > PS_MAX_DIMS || end - p < 8 * ndim) {
            goto malformed;
        }
        for (int d = 0; d < ndim; d++) {
            uint64_t v = ps_get_u64(p);
            p += 8;
            if (v > PS_MAX_ELEMS) {
                goto malformed;
            }
            dims[d] = (int64_t)v;
        }
        if (ps_layout_add(l, name, ndim, dims) != 0) {
            goto malformed;
        }
    }
    if (p != end) {
        goto malformed;
    }
    return 0;
malformed:
    ps_error_set("malformed layout (%zu bytes)", len);
    ps_layout_init(l);
    return PS_EPROTO;
}
