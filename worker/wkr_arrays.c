#include "wkr_arrays.h"

#include "ps_err.h"

#include <stdlib.h>
#include <string.h>

int wkr_arrays_init(wkr_arrays_t *a, const ps_layout_t *l, const ps_chunkmap_t *m)
{
    memset(a, 0, sizeof *a);
    a->layout = l;
    a->map = m;
    size_t nt = l->n > 0 ? (size_t)l->n : 1, nk = m->n > 0 ? m->n : 1;
    a->w = calloc(nt, sizeof *a->w);
    a->g = calloc(nt, sizeof *a->g);
    a->tfirst = calloc(nk, sizeof *a->tfirst);
    a->tlast = calloc(nk, sizeof *a->tlast);
    a->gsrc = calloc(nk, sizeof *a->gsrc);
    if (!a->w || !a->g || !a->tfirst || !a->tlast || !a->gsrc) {
        wkr_arrays_fini(a);
        ps_error_set("no memory for the arrays of %d tensors in %zu chunks", l->n, m->n);
        return PS_ENOMEM;
    }
    /* Tensors and chunks both run in ascending offset: one sweep. */
    int t = 0;
    for (size_t k = 0; k < m->n; k++) {
        const ps_chunk_t *c = &m->c[k];
        while (t < l->n && l->t[t].offset + l->t[t].numel <= c->offset) {
            t++;
        }
        a->tfirst[k] = t;
        int u = t;
        while (u + 1 < l->n && l->t[u + 1].offset < c->offset + c->count) {
            u++;
        }
        a->tlast[k] = u;
    }
    a->dirty = 1;
    return 0;
}

void wkr_arrays_fini(wkr_arrays_t *a)
{
    free(a->w);
    free(a->g);
    free(a->tfirst);
    free(a->tlast);
    free(a->gsrc);
    free(a->stage);
    memset(a, 0, sizeof *a);
}

void wkr_arrays_set(wkr_arrays_t *a, int t, float *weights, const float *grads)
{
    a->w[t] = weights;
    a->g[t] = grads;
    a->dirty = 1;
}

size_t wkr_arrays_chunk_first(const wkr_arrays_t *a, int t)
{
    return a->layout->t[t].offset / a->map->chunk_elems;
}

size_t wkr_arrays_chunk_last(const wkr_arrays_t *a, int t)
{
    const ps_tensor_t *x = &a->layout->t[t];
    return (x->offset + x->numel - 1) / a->map->chunk_elems;
}

/* Where chunk k's gradient starts if its tensors' arrays lie end to end. */
static const float *contiguous_grads(const wkr_arrays_t *a, size_t k)
{
    const ps_chunk_t *c = &a->map->c[k];
    const ps_tensor_t *t = a->layout->t;
    int f = a->tfirst[k];
    for (int u = f; u < a->tlast[k]; u++) {
        if (a->g[u] + t[u].numel != a->g[u + 1]) {
            return NULL;
        }
    }
    return a->g[f] + (c->offset - t[f].offset);
}

int wkr_arrays_prepare(wkr_arrays_t *a)
{
    int gathered = 0;
    if (!a->dirty) {
        return 0;
    }
    for (int t = 0; t < a->layout->n; t++) {
        if (!a->w[t] || !a->g[t]) {
            ps_error_set("tensor '%s' has no weight or gradient array", a->layout->t[t].name);
            return PS_ESTATE;
        }
    }
    for (size_t k = 0; k < a->map->n; k++) {
        a->gsrc[k] = contiguous_grads(a, k);
        gathered += a->gsrc[k] == NULL;
    }
    if (gathered && !a->stage && !(a->stage = malloc(a->map->total * sizeof *a->stage))) {
        ps_error_set("no memory to stage %zu gradients", a->map->total);
        return PS_ENOMEM;
    }
    a->dirty = 0;
    return 0;
}

/* The overlap of chunk k and tensor t: flat [*lo, *hi). */
static int overlap(const wkr_arrays_t *a, size_t k, int t, size_t *lo, size_t *hi)
{
    const ps_chunk_t *c = &a->map->c[k];
    const ps_tensor_t *x = &a->layout->t[t];
    *lo = c->offset > x->offset ? c->offset : x->offset;
    *hi = c->offset + c->count < x->offset + x->numel ? c->offset + c->count : x->offset + x->numel;
    return *lo < *hi;
}

const float *wkr_arrays_grads(wkr_arrays_t *a, size_t k)
{
    if (a->gsrc[k]) {
        return a->gsrc[k];
    }
    const ps_chunk_t *c = &a->map->c[k];
    float *dst = a->stage + c->offset;
    for (int t = a->tfirst[k]; t <= a->tlast[k]; t++) {
        size_t lo, hi, off = a->layout->t[t].offset;
        if (overlap(a, k, t, &lo, &hi)) {
            memcpy(dst + (lo - c->offset), a->g[t] + (lo - off), (hi - lo) * sizeof *dst);
        }
    }
    return dst;
}

void wkr_arrays_gather_weights(const wkr_arrays_t *a, size_t k, float *dst)
{
    const ps_chunk_t *c = &a->map->c[k];
    for (int t = a->tfirst[k]; t <= a->tlast[k]; t++) {
        size_t lo, hi, off = a->layout->t[t].offset;
        if (overlap(a, k, t, &lo, &hi)) {
            memcpy(dst + (lo - c->offset), a->w[t] + (lo - off), (hi - lo) * sizeof *dst);
        }
    }
}

size_t wkr_arrays_scatter(const wkr_arrays_t *a, size_t k, int t, const void *payload)
{
    size_t lo, hi, off = a->layout->t[t].offset;
    if (!overlap(a, k, t, &lo, &hi)) {
        return 0;
    }
    /* Bytes, not floats: a received payload need not be aligned. */
    const unsigned char *src =
        (const unsigned char *)payload + (lo - a->map->c[k].offset) * sizeof(float);
    memcpy(a->w[t] + (lo - off), src, (hi - lo) * sizeof(float));
    return hi - lo;
}
