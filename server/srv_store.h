/*
 * srv_store: the chunks one server owns, and the synchronous aggregation.
 *
 * The store owns each local chunk's weights, momentum velocity, version
 * (updates applied) and first-update flag.  Pushes for a chunk's current
 * version are held (the payload is not copied: the store keeps the caller's
 * pointer and an owner handle, released through the store's release
 * callback once the step is applied or the store is finalised).  When every
 * worker's push for the step is in, the gradients are combined in worker-
 * rank order, each weighted by its sample count, and the momentum update is
 * applied: the result does not depend on arrival order.
 *
 * Zero-copy readers of a chunk's weights (pull replies in flight) hold a
 * reference (srv_store_ref/unref, thread-safe); an update waits until none
 * is held.  No sockets and no MPI here: unit tests drive it directly.
 */
#ifndef SRV_STORE_H
#define SRV_STORE_H

#include "ps_chunk.h"
#include "ps_layout.h"
#include "srv_optim.h"

#include <stdatomic.h>
#include <stdint.h>

typedef void (*srv_release_fn)(void *owner);

typedef struct {
    uint32_t id;
    size_t offset, count;
    float *w, *buf;      /* buf NULL when momentum == 0 */
    uint64_t version;    /* updates applied so far */
    int had_update;      /* momentum buffer exists (torch's buf is not None) */
    int initialized;
    int arrived;         /* pushes held for `version` */
    const float **part;  /* [nworkers] held gradients, NULL when not in */
    void **owner;        /* [nworkers] owner handles of held gradients */
    uint32_t *samples;   /* [nworkers] */
    uint64_t *pull_want; /* [nworkers] wanted version + 1; 0 = no pull waiting */
    atomic_int refs;
} srv_chunk_t;

typedef struct {
    ps_layout_t layout;
    ps_chunkmap_t map;
    int server, nworkers;
    srv_optim_cfg_t opt;
    srv_release_fn release;
    size_t nlocal;
    srv_chunk_t *chunks;  /* local chunks, ascending id */
    int32_t *local_of;    /* chunk id -> index into chunks, -1 when remote */
    uint64_t updates;     /* chunk updates applied */
    uint64_t zero_sample_steps; /* steps where no worker had a sample */
} srv_store_t;

int srv_store_init(srv_store_t *s, const ps_layout_t *l, size_t chunk_elems, int server,
                   int nservers, int nworkers, const srv_optim_cfg_t *opt, srv_release_fn rel);
/* Releases held pushes and frees everything; safe on a zeroed store. */
void srv_store_fini(srv_store_t *s);
/* The local chunk with this id, or NULL when it is not ours / out of range. */
srv_chunk_t *srv_store_chunk(srv_store_t *s, uint32_t id);
/* Copy initial values in (before any push). */
int srv_store_set_init(srv_store_t *s, srv_chunk_t *c, const float *data);
int srv_store_all_initialized(const srv_store_t *s);

/* Hold worker `w`'s gradient for `step`.  Returns 1 when this push
 * completed the step and the update was applied (version advanced), 0 when
 * still waiting for others, PS_ERANGE for a step other than the chunk's
 * version, PS_ESTATE for a second push from the same worker (detail set;
 * nothing is held then and the caller still owns `owner`). */
int srv_store_push(srv_store_t *s, srv_chunk_t *c, int w, uint64_t step, uint32_t samples,
                   const float *grad, void *owner);
/* Workers whose push for the chunk's current step is missing; returns the
 * count and writes up to `cap` ranks. */
int srv_store_missing(const srv_chunk_t *c, int nworkers, int *ranks, int cap);

void srv_store_ref(srv_chunk_t *c);
void srv_store_unref(srv_chunk_t *c);

#endif
