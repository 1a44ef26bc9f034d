#include "srv_store.h"

#include "ps_err.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* While readers hold a chunk, the idle callback runs this often: a reply
 * queued to a peer that has gone is dropped (and its reference given back)
 * only when the socket's own thread, this one, handles the news. */
#define IDLE_SLICE_MS 10

static float *alloc_floats(size_t n)
{
    return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
}

static void slots_free(srv_chunk_t *c)
{
    free(c->arrived);
    free(c->part);
    free(c->owner);
    free(c->samples);
    free(c->base);
    free(c->skip);
}

/* Per-chunk arrays of held pushes: nslots x nworkers. */
static int slots_alloc(srv_chunk_t *c, int nslots, int nworkers)
{
    size_t n = (size_t)nslots * (size_t)nworkers;
    slots_free(c);
    c->arrived = calloc((size_t)nslots, sizeof *c->arrived);
    c->skip = calloc(n, sizeof *c->skip);
    c->part = calloc(n, sizeof *c->part);
    c->owner = calloc(n, sizeof *c->owner);
    c->samples = calloc(n, sizeof *c->samples);
    c->base = calloc(n, sizeof *c->base);
    return c->arrived && c->part && c->owner && c->samples && c->base && c->skip ? 0 : PS_ENOMEM;
}

static int chunk_alloc(srv_chunk_t *c, const ps_chunk_t *m, int nworkers, int momentum)
{
    c->id = m->id;
    c->offset = m->offset;
    c->count = m->count;
    ps_count_init(&c->refs);
    c->w = alloc_floats(m->count);
    c->buf = momentum ? alloc_floats(m->count) : NULL;
    c->next_step = calloc((size_t)nworkers, sizeof *c->next_step);
    if (!c->w || (momentum && !c->buf) || !c->next_step) {
        return PS_ENOMEM;
    }
    if (c->buf) {
        memset(c->buf, 0, m->count * sizeof(float));
    }
    return slots_alloc(c, 1, nworkers);
}

int srv_store_init(srv_store_t *s, ps_layout_t **layout, size_t chunk_elems, int server,
                   int nservers, int nworkers, const srv_optim_cfg_t *opt, srv_release_fn rel)
{
    int rv;
    memset(s, 0, sizeof *s);
    s->layout = *layout;
    *layout = NULL;
    const ps_layout_t *l = s->layout;
    s->server = server;
    s->nworkers = nworkers;
    s->opt = *opt;
    s->tensor_opts = ps_layout_has_opts(l);
    s->release = rel;
    s->mode = PS_MODE_SYNC;
    s->nslots = 1;
    s->ref_wait_ms = -1;
    if ((rv = ps_chunkmap_init(&s->map, l->total, chunk_elems, nservers)) != 0) {
        srv_store_fini(s); /* frees the layout, as the contract says */
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
        if ((rv = chunk_alloc(&s->chunks[k++], &s->map.c[i], nworkers, opt->momentum != 0)) != 0) {
            srv_store_fini(s);
            return rv;
        }
    }
    return 0;
}

int srv_store_set_mode(srv_store_t *s, ps_mode_t mode, uint64_t staleness)
{
    if (mode == PS_MODE_SSP && staleness > SRV_STORE_MAX_STALENESS) {
        ps_error_set("--staleness %llu over the limit of %d", (unsigned long long)staleness,
                     SRV_STORE_MAX_STALENESS);
        return PS_EINVAL;
    }
    s->mode = mode;
    s->staleness = mode == PS_MODE_SSP ? staleness : 0;
    s->nslots = (int)s->staleness + 1;
    for (size_t i = 0; i < s->nlocal; i++) {
        if (slots_alloc(&s->chunks[i], s->nslots, s->nworkers) != 0) {
            return PS_ENOMEM;
        }
    }
    return 0;
}

void srv_store_set_lr(srv_store_t *s, srv_lr_fn lr_of, void *arg)
{
    s->lr_of = lr_of;
    s->lr_arg = arg;
}

void srv_store_set_ref_wait(srv_store_t *s, int timeout_ms, srv_idle_fn idle, void *arg)
{
    s->ref_wait_ms = timeout_ms;
    s->idle = idle;
    s->idle_arg = arg;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Until no zero-copy reader holds c, at most ref_wait_ms, running the idle
 * callback between short sleeps; PS_ETIMEDOUT (detail set) after that. */
static int wait_readers(srv_store_t *s, srv_chunk_t *c)
{
    double end = now_s() + s->ref_wait_ms / 1000.0;
    while (ps_count_wait_zero_for(&c->refs, IDLE_SLICE_MS) != 0) {
        if (s->ref_wait_ms >= 0 && now_s() >= end) {
            int t = ps_layout_tensor_at(s->layout, c->offset);
            ps_error_set("chunk %u (tensor %s): %d pull replies still read its weights after "
                         "%.1f s (--timeout), so its update cannot run",
                         c->id, t >= 0 ? s->layout->t[t].name : "?", ps_count_get(&c->refs),
                         s->ref_wait_ms / 1000.0);
            return PS_ETIMEDOUT;
        }
        if (s->idle) {
            s->idle(s->idle_arg);
        }
    }
    return 0;
}

static size_t slot_at(const srv_store_t *s, uint64_t step)
{
    return (size_t)(step % (uint64_t)s->nslots) * (size_t)s->nworkers;
}

/* Release every push held in one slot. */
static void drop_slot(srv_store_t *s, srv_chunk_t *c, uint64_t step)
{
    size_t base = slot_at(s, step);
    for (int w = 0; w < s->nworkers; w++) {
        size_t i = base + (size_t)w;
        if (c->part[i]) {
            if (s->release && c->owner[i]) {
                s->release(c->owner[i]);
            }
            c->part[i] = NULL;
            c->owner[i] = NULL;
            c->skip[i] = 0;
        }
    }
    c->arrived[step % (uint64_t)s->nslots] = 0;
}

void srv_store_fini(srv_store_t *s)
{
    for (size_t i = 0; s->chunks && i < s->nlocal; i++) {
        srv_chunk_t *c = &s->chunks[i];
        for (int k = 0; c->part && k < s->nslots; k++) {
            drop_slot(s, c, (uint64_t)k);
        }
        free(c->w);
        free(c->buf);
        slots_free(c);
        free(c->next_step);
    }
    free(s->chunks);
    free(s->local_of);
    free(s->layout);
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
    ps_count_add(&c->refs, 1);
}

void srv_store_unref(srv_chunk_t *c)
{
    ps_count_release(&c->refs);
}

static void note_staleness(srv_store_t *s, uint64_t applied_to, uint64_t base)
{
    uint64_t st = applied_to - base;
    s->stale_sum += st;
    s->stale_n++;
    if (st > s->stale_max) {
        s->stale_max = st;
    }
}

/* Chunks pack small tensors and cut large ones: run the kernel once per
 * tensor run inside the chunk, each with its tensor's weight decay and
 * learning rate (the kernel is element-wise, so a run gives the bits the
 * whole chunk would with the same settings). */
static void apply_runs(const srv_store_t *s, srv_chunk_t *c, const srv_optim_cfg_t *opt,
                       const float *const *parts, const float *coef, int nparts)
{
    const ps_layout_t *l = s->layout;
    const float *sub[nparts];
    size_t at = 0;
    for (int t = ps_layout_tensor_at(l, c->offset); t >= 0 && t < l->n && at < c->count; t++) {
        const ps_tensor_t *x = &l->t[t];
        size_t end = x->offset + x->numel - c->offset; /* past the run, chunk-relative */
        size_t n = (end < c->count ? end : c->count) - at;
        srv_optim_cfg_t o = *opt;
        if (x->opts & PS_TOPT_WD) {
            o.weight_decay = x->weight_decay;
        }
        if (x->opts & PS_TOPT_LR) {
            o.lr = opt->lr * x->lr_scale;
        }
        for (int k = 0; k < nparts; k++) {
            sub[k] = parts[k] + at;
        }
        srv_optim_apply(&o, c->w + at, c->buf ? c->buf + at : NULL, sub, coef, nparts, n,
                        !c->had_update);
        at += n;
    }
}

/* Run the optimizer over the chunk with the learning rate of step t;
 * PS_ETIMEDOUT (nothing changed) when readers hold it past the bound. */
static int update(srv_store_t *s, srv_chunk_t *c, const float *const *parts, const float *coef,
                  int nparts, uint64_t t)
{
    srv_optim_cfg_t opt = s->opt;
    if (s->lr_of) {
        opt.lr = s->lr_of(s->lr_arg, t);
    }
    /* Zero-copy pull replies may still be reading w: wait them out, but
     * not for ever (a reference whose release never comes would hang the
     * server out of reach of its timeout). */
    int rv = wait_readers(s, c);
    if (rv != 0) {
        return rv;
    }
    if (s->tensor_opts) {
        apply_runs(s, c, &opt, parts, coef, nparts);
    } else {
        /* No tensor options: one run, exactly the kernel call of earlier
         * releases. */
        srv_optim_apply(&opt, c->w, c->buf, parts, coef, nparts, c->count, !c->had_update);
    }
    c->had_update = 1;
    return 0;
}

/* Combine the pushes held for the chunk's current step in worker order,
 * weighted by sample count, and apply them.  On failure the step stays
 * held and the version where it was. */
static int apply_slot(srv_store_t *s, srv_chunk_t *c)
{
    size_t at = slot_at(s, c->version);
    const float *parts[s->nworkers];
    float coef[s->nworkers];
    uint64_t total = 0;
    int k = 0, skip = 0;
    for (int w = 0; w < s->nworkers; w++) {
        total += c->samples[at + (size_t)w];
        skip |= c->skip[at + (size_t)w];
    }
    if (skip) {
        total = 0; /* a non-finite gradient drops the whole step */
        c->skipped++;
    }
    for (int w = 0; w < s->nworkers && total > 0; w++) {
        size_t i = at + (size_t)w;
        note_staleness(s, c->version, c->base[i]);
        if (c->samples[i] == 0) {
            continue; /* an empty share carries no gradient and no weight */
        }
        parts[k] = c->part[i];
        coef[k] = (float)((double)c->samples[i] / (double)total);
        k++;
    }
    if (k > 0) {
        int rv = update(s, c, parts, coef, k, c->version);
        if (rv != 0) {
            return rv;
        }
    } else if (!skip) {
        s->zero_sample_steps++;
    }
    drop_slot(s, c, c->version);
    c->version++;
    s->updates++;
    return 0;
}

/* Async: a worker's pushes of one chunk come in step order, one per step,
 * so a step at or below one already taken is a replay (a duplicate). */
static int check_replay(const srv_chunk_t *c, int w, uint64_t step)
{
    if (step < c->next_step[w]) {
        ps_error_set("push from worker %d for chunk %u step %llu: step %llu already taken", w,
                     c->id, (unsigned long long)step, (unsigned long long)c->next_step[w] - 1);
        return PS_ESTATE;
    }
    return 0;
}

static int push_async(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint64_t base,
                      uint32_t samples, const float *grad, void *owner)
{
    const float one = 1.0f;
    int rv = check_replay(c, w, step);
    if (rv != 0) {
        return rv;
    }
    c->next_step[w] = step + 1;
    if (samples > 0) {
        rv = update(s, c, &grad, &one, 1, step);
    }
    if (samples > 0 && rv == 0) {
        note_staleness(s, c->version, base);
        c->version++;
        s->updates++;
    }
    if (s->release) {
        s->release(owner);
    }
    return rv != 0 ? rv : samples > 0;
}

static int check_window(const srv_store_t *s, const srv_chunk_t *c, uint64_t step, uint64_t base)
{
    if (base > c->version) {
        ps_error_set("push computed on version %llu, chunk %u is at %llu", (unsigned long long)base,
                     c->id, (unsigned long long)c->version);
        return PS_ERANGE;
    }
    if (step == UINT64_MAX) {
        ps_error_set("push for step %llu, chunk %u: no step follows it", (unsigned long long)step,
                     c->id);
        return PS_ERANGE;
    }
    if (s->mode != PS_MODE_ASYNC && (step < c->version || step - c->version > s->staleness)) {
        ps_error_set("push for step %llu, chunk %u accepts steps %llu..%llu",
                     (unsigned long long)step, c->id, (unsigned long long)c->version,
                     (unsigned long long)(c->version + s->staleness));
        return PS_ERANGE;
    }
    return 0;
}

/* Hold one push (sync/ssp) and apply every step it completes. */
static int take(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint64_t base,
                uint32_t samples, const float *grad, void *owner, int skip)
{
    size_t i = slot_at(s, step) + (size_t)w;
    if (c->part[i]) {
        ps_error_set("second push from worker %d for chunk %u step %llu", w, c->id,
                     (unsigned long long)step);
        return PS_ESTATE;
    }
    c->part[i] = grad;
    c->owner[i] = owner;
    c->samples[i] = skip ? 0 : samples;
    c->base[i] = base;
    c->skip[i] = (uint8_t)skip;
    c->arrived[step % (uint64_t)s->nslots]++;
    int applied = 0;
    /* Completing the current step may make held later steps ready too. */
    while (c->arrived[c->version % (uint64_t)s->nslots] == s->nworkers) {
        int rv = apply_slot(s, c);
        if (rv != 0) {
            return rv; /* the push stays held: the store owns it */
        }
        applied++;
    }
    return applied;
}

int srv_store_push(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint64_t base,
                   uint32_t samples, const float *grad, void *owner)
{
    int rv = check_window(s, c, step, base);
    if (rv != 0) {
        return rv;
    }
    if (s->mode == PS_MODE_ASYNC) {
        return push_async(s, c, w, step, base, samples, grad, owner);
    }
    return take(s, c, w, step, base, samples, grad, owner, 0);
}

/* A sentinel for a held skip push: not NULL, never read. */
static const float skip_marker = 0.0f;

int srv_store_push_skip(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint64_t base)
{
    int rv = check_window(s, c, step, base);
    if (rv != 0) {
        return rv;
    }
    if (s->mode == PS_MODE_ASYNC) {
        if ((rv = check_replay(c, w, step)) != 0) {
            return rv;
        }
        c->next_step[w] = step + 1;
        c->skipped++;
        return 0;
    }
    return take(s, c, w, step, base, 0, &skip_marker, NULL, 1);
}

uint64_t srv_store_skipped_steps(const srv_store_t *s)
{
    uint64_t m = 0;
    for (size_t i = 0; i < s->nlocal; i++) {
        if (s->chunks[i].skipped > m) {
            m = s->chunks[i].skipped;
        }
    }
    return m;
}

int srv_store_arrived(const srv_store_t *s, const srv_chunk_t *c, uint64_t step)
{
    return c->arrived[step % (uint64_t)s->nslots];
}

const float *srv_store_held(const srv_store_t *s, const srv_chunk_t *c, uint64_t step, int w)
{
    return c->part[slot_at(s, step) + (size_t)w];
}

int srv_store_missing(const srv_store_t *s, const srv_chunk_t *c, int *ranks, int cap)
{
    int n = 0;
    size_t at = slot_at(s, c->version);
    for (int w = 0; w < s->nworkers; w++) {
        if (!c->part[at + (size_t)w]) {
            if (n < cap) {
                ranks[n] = w;
            }
            n++;
        }
    }
    return n;
}
