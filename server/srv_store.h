/*
 * srv_store: the chunks one server owns, and how pushes become updates.
 *
 * The store owns each local chunk's weights, momentum velocity, version
 * (updates applied) and first-update flag.  Three consistency modes:
 *
 *   sync   a chunk's step t is applied once every worker's push for step t
 *          is in; the gradients are combined in worker-rank order, each
 *          weighted by its sample count, so the result does not depend on
 *          arrival order.
 *   ssp    the same aggregation, but pushes for steps up to version +
 *          staleness may arrive early and are held (workers run ahead of
 *          the slowest by at most `staleness` steps; the pull side of the
 *          rule is the worker's, which asks for version >= step + 1 - S).
 *          staleness 0 is sync, bit for bit.
 *   async  every push is applied on arrival with its own mean gradient;
 *          the version counts pushes.  A worker pushes a chunk once per
 *          step, in step order: a push for a step at or below the last one
 *          taken from that worker is a replay, refused as a duplicate.
 *
 * Held pushes are not copied: the store keeps the caller's pointer and an
 * owner handle, released through the release callback once the step is
 * applied or the store is finalised.  Staleness of every applied push
 * (version it was applied to minus the version it was computed on) is
 * recorded.  The learning rate of each update comes from `lr_of` (the
 * schedule): for sync/ssp its argument is the step being applied, for async
 * the pushing worker's step.
 *
 * Zero-copy readers of a chunk's weights (pull replies in flight) hold a
 * reference (srv_store_ref/unref, thread-safe); an update waits until none
 * is held, at most the time srv_store_set_ref_wait gives (the server's
 * --timeout), and then fails with PS_ETIMEDOUT naming the chunk rather
 * than hang.  No sockets and no MPI here: unit tests drive it directly.
 */
#ifndef SRV_STORE_H
#define SRV_STORE_H

#include "ps_chunk.h"
#include "ps_count.h"
#include "ps_jobinfo.h"
#include "ps_layout.h"
#include "srv_optim.h"

#include <stdint.h>

typedef void (*srv_release_fn)(void *owner);
typedef double (*srv_lr_fn)(void *arg, uint64_t t);
typedef void (*srv_idle_fn)(void *arg);

typedef struct {
    uint32_t id;
    size_t offset, count;
    float *w, *buf;   /* buf NULL when momentum == 0 */
    uint64_t version; /* updates applied so far */
    int had_update;   /* momentum buffer exists (torch's buf is not None) */
    int initialized;
    /* Held pushes, nslots x nworkers, slot = step % nslots. */
    int *arrived;       /* [nslots] */
    const float **part; /* NULL where not in */
    void **owner;
    uint32_t *samples;
    uint64_t *base;
    uint8_t *skip;       /* the push asked to drop its step (non-finite) */
    uint64_t skipped;    /* steps dropped on this chunk */
    uint64_t *next_step; /* [nworkers] async: 1 + the step of the worker's last push */
    ps_count_t refs;     /* zero-copy pull replies still reading w */
} srv_chunk_t;

typedef struct {
    ps_layout_t *layout; /* the registered layout, owned; readers share this one copy */
    ps_chunkmap_t map;
    int server, nworkers;
    srv_optim_cfg_t opt;
    int tensor_opts; /* some tensor has its own weight decay or lr scale (ps_layout) */
    ps_mode_t mode;
    uint64_t staleness; /* ssp bound; 0 in sync */
    int nslots;         /* staleness + 1 (1 in async: nothing is held) */
    srv_lr_fn lr_of;    /* NULL: opt.lr at every step */
    void *lr_arg;
    srv_release_fn release;
    int ref_wait_ms;  /* longest wait for zero-copy readers; < 0: no bound */
    srv_idle_fn idle; /* run while waiting for them; NULL: none */
    void *idle_arg;
    size_t nlocal;
    srv_chunk_t *chunks;                    /* local chunks, ascending id */
    int32_t *local_of;                      /* chunk id -> index into chunks, -1 when remote */
    uint64_t updates;                       /* chunk updates applied */
    uint64_t zero_sample_steps;             /* steps where no worker had a sample */
    uint64_t stale_max, stale_sum, stale_n; /* over applied pushes */
} srv_store_t;

/* A sync store with the constant learning rate opt->lr.  A tensor with
 * options in the layout (PS_TOPT_*) is updated with its own weight decay
 * and opt->lr (or the schedule's) times its lr_scale; the others with
 * `opt` as given.  Takes the layout
 * (123 KB, so it is not copied): *layout, from malloc, belongs to the store
 * from this call on, even when the call fails (it is freed then), and
 * *layout is set to NULL; srv_store_fini frees it. */
int srv_store_init(srv_store_t *s, ps_layout_t **layout, size_t chunk_elems, int server,
                   int nservers, int nworkers, const srv_optim_cfg_t *opt, srv_release_fn rel);
/* The largest ssp bound: a chunk keeps every worker's pushes for up to
 * staleness + 1 steps (a slot array per step). */
#define SRV_STORE_MAX_STALENESS 1024

/* Before the first push: the consistency mode (staleness only for ssp;
 * PS_EINVAL over SRV_STORE_MAX_STALENESS) and the schedule. */
int srv_store_set_mode(srv_store_t *s, ps_mode_t mode, uint64_t staleness);
void srv_store_set_lr(srv_store_t *s, srv_lr_fn lr_of, void *arg);
/* How long an update waits for the chunk's zero-copy readers before it
 * fails (PS_ETIMEDOUT); < 0, the default, waits for ever.  `idle` (may be
 * NULL) runs every few milliseconds meanwhile, on the updating thread: the
 * server lets its socket drop replies queued to peers that have gone, whose
 * references only that thread can make zmq give back. */
void srv_store_set_ref_wait(srv_store_t *s, int timeout_ms, srv_idle_fn idle, void *arg);
/* Releases held pushes and frees everything; safe on a zeroed store. */
void srv_store_fini(srv_store_t *s);
/* The local chunk with this id, or NULL when it is not ours / out of range. */
srv_chunk_t *srv_store_chunk(srv_store_t *s, uint32_t id);
/* Copy initial values in (before any push). */
int srv_store_set_init(srv_store_t *s, srv_chunk_t *c, const float *data);
int srv_store_all_initialized(const srv_store_t *s);

/* Take worker `w`'s gradient for `step`, computed on weights of version
 * `base`.  Returns the number of updates this push caused (0 while
 * waiting for other workers; async: 1, or 0 for an empty push), PS_ERANGE
 * for a step outside the window (sync: the chunk's version; ssp: version
 * .. version + staleness; any mode: UINT64_MAX) or a base newer than the
 * chunk, PS_ESTATE for a second push from the same worker for one step
 * (async: for a step not after its last one) (detail set; nothing is held
 * then and the caller still owns `owner`).  PS_ETIMEDOUT when an update
 * could not wait out the chunk's readers (detail names the chunk): the
 * push is then held (sync/ssp) or released (async) as on success, the
 * store is consistent but that step is not applied; the server should
 * stop.  `w` must be in [0, nworkers). */
int srv_store_push(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint64_t base,
                   uint32_t samples, const float *grad, void *owner);
/* Like a push, from a worker whose gradient for `step` was not finite: the
 * whole step is dropped on this chunk (sync/ssp: whatever the others
 * push; async: just this push).  The version still advances in sync/ssp so
 * every worker stays in step. */
int srv_store_push_skip(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint64_t base);
/* Steps dropped because of non-finite gradients (the most on any chunk). */
uint64_t srv_store_skipped_steps(const srv_store_t *s);
/* Pushes held for `step` and the one from worker w (NULL if none). */
int srv_store_arrived(const srv_store_t *s, const srv_chunk_t *c, uint64_t step);
const float *srv_store_held(const srv_store_t *s, const srv_chunk_t *c, uint64_t step, int w);
/* Workers whose push for the chunk's current step is missing; returns the
 * count and writes up to `cap` ranks. */
int srv_store_missing(const srv_store_t *s, const srv_chunk_t *c, int *ranks, int cap);

void srv_store_ref(srv_chunk_t *c);
void srv_store_unref(srv_chunk_t *c);

#endif
