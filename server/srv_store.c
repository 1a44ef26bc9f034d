#include "srv_store.h"

#include "ps_err.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

static int chunk_alloc(srv_chunk_t *c, const ps_chunk_t *m, int nworkers, int momentum)
{
    c->id = m->id;
    c->offset = m->offset;
    c->count = m->count;
    atomic_init(&c->refs, 0);
    c->w = aligned_alloc(64, ((m->count * sizeof(float)) + 63) / 64 * 64);
    c->buf = momentum ? aligned_alloc(64, ((m->count * sizeof(float)) + 63) / 64 * 64) : NULL;
    c->part = calloc((size_t)nworkers, sizeof *c->part);
    c->owner = calloc((size_t)nworkers, sizeof *c->owner);
    c->samples = calloc((size_t)nworkers, sizeof *c->samples);
    c->pull_want = calloc((size_t)nworkers, sizeof *c->pull_want);
    if (!c->w || (momentum && !c->buf) || !c->part || !c->owner || !c->samples ||
        !c->pull_want) {
        return PS_ENOMEM;
    }
    if (c->buf) {
        memset(c->buf, 0, m->count * sizeof(float));
    }
    return 0;
}

int srv_store_init(srv_store_t *s, const ps_layout_t *l, size_t chunk_elems, int server,
                   int nservers, int nworkers, const srv_optim_cfg_t *opt, srv_release_fn rel)
{
    int rv;
    memset(s, 0, sizeof *s);
    s->layout = *l;
    s->server = server;
    s->nworkers = nworkers;
    s->opt = *opt;
    s->release = rel;
    if ((rv = ps_chunkmap_init(&s->map, l->total, chunk_elems, nservers)) != 0) {
        return rv;
    }
    s->nlocal = ps_chunkmap_count_on(&s->map, server, NULL);
    s->chunks = calloc(s->nlocal ? s->nlocal : 1, sizeof *s->chunks);
    s->local_of = malloc(s->map.n * sizeof *s->local_of);
    if (!s->chunks || !s->local_of) {
        srv_store_fini(s);
        return PS_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < s->map.n; i++) {
        s->local_of[i] = -1;
        if (s->map.c[i].server != server) {
            continue;
        }
        s->local_of[i] = (int32_t)k;
        if ((rv = chunk_alloc(&s->chunks[k++], &s->map.c[i], nworkers, opt->momentum != 0)) !=
            0) {
            srv_store_fini(s);
            return rv;
        }
    }
    return 0;
}

static void drop_held(srv_store_t *s, srv_chunk_t *c)
{
    for (int w = 0; c->part && w < s->nworkers; w++) {
        if (c->part[w]) {
            if (s->release) {
                s->release(c->owner[w]);
            }
            c->part[w] = NULL;
            c->owner[w] = NULL;
        }
    }
    c->arrived = 0;
}

void srv_store_fini(srv_store_t *s)
{
    for (size_t i = 0; s->chunks && i < s->nlocal; i++) {
        srv_chunk_t *c = &s->chunks[i];
        drop_held(s, c);
        free(c->w);
        free(c->buf);
        free(c->part);
        free(c->owner);
        free(c->samples);
        free(c->pull_want);
    }
    free(s->chunks);
    free(s->local_of);
    ps_chunkmap_fini(&s->map);
    memset(s, 0, sizeof *s);
}

srv_chunk_t *srv_store_chunk(srv_store_t *s, uint32_t id)
{
    if (id >= s->map.n || s->local_of[id] < 0) {
        return NULL;
    }
    return &s->chunks[s->local_of[id]];
}

int srv_store_set_init(srv_store_t *s, srv_chunk_t *c, const float *data)
{
    (void)s;
    memcpy(c->w, data, c->count * sizeof(float));
    c->initialized = 1;
    return 0;
}

int srv_store_all_initialized(const srv_store_t *s)
{
    for (size_t i = 0; i < s->nlocal; i++) {
        if (!s->chunks[i].initialized) {
            return 0;
        }
    }
    return 1;
}

void srv_store_ref(srv_chunk_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_acq_rel);
}

void srv_store_unref(srv_chunk_t *c)
{
    atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel);
}

/* Combine the held gradients in worker order and apply the update. */
static void apply_step(srv_store_t *s, srv_chunk_t *c)
{
    const float *parts[c->arrived];
    float coef[c->arrived];
    uint64_t total = 0;
    int k = 0;
    for (int w = 0; w < s->nworkers; w++) {
        total += c->samples[w];
    }
    for (int w = 0; w < s->nworkers && total > 0; w++) {
        if (c->samples[w] == 0) {
            continue; /* an empty share carries no gradient and no weight */
        }
        parts[k] = c->part[w];
        coef[k] = (float)((double)c->samples[w] / (double)total);
        k++;
    }
    /* Zero-copy pull replies may still be reading w: wait them out. */
    while (atomic_load_explicit(&c->refs, memory_order_acquire) > 0) {
        sched_yield();
    }
    if (k > 0) {
        srv_optim_apply(&s->opt, c->w, c->buf, parts, coef, k, c->count, !c->had_update);
        c->had_update = 1;
    } else {
        s->zero_sample_steps++;
    }
    c->version++;
    s->updates++;
    drop_held(s, c);
}

int srv_store_push(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint32_t samples,
                   const float *grad, void *owner)
{
    if (step != c->version) {
        ps_error_set("push for step %llu, chunk %u is at step %llu", (unsigned long long)step,
                     c->id, (unsigned long long)c->version);
        return PS_ERANGE;
    }
    if (c->part[w]) {
        ps_error_set("second push from worker %d for chunk %u step %llu", w, c->id,
                     (unsigned long long)step);
        return PS_ESTATE;
    }
    c->part[w] = grad;
    c->owner[w] = owner;
    c->samples[w] = samples;
    if (++c->arrived < s->nworkers) {
        return 0;
    }
    apply_step(s, c);
    return 1;
}

int srv_store_missing(const srv_chunk_t *c, int nworkers, int *ranks, int cap)
{
    int n = 0;
    for (int w = 0; w < nworkers; w++) {
        if (!c->part[w]) {
            if (n < cap) {
                ranks[n] = w;
            }
            n++;
        }
    }
    return n;
}
