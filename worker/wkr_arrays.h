/*
 * wkr_arrays: where each tensor's weights and gradient live, seen chunk by
 * chunk (part of libpsclient's data plane; internal).
 *
 * The chunk map cuts the flat parameter space without regard to tensor
 * boundaries (ps_chunk.h), but a tensor's arrays need not be where the
 * flat space would put them: a program may bind arrays of its own to some
 * tensors (ps_bind).  This module knows, for every chunk, which tensors
 * it overlaps and whether their gradient arrays lie end to end in memory
 * as the chunk does; such a chunk is sent straight from the arrays
 * (zero-copy), any other one is gathered into a staging buffer first.
 * Pull replies are scattered into the weight arrays tensor by tensor.
 * The bits are the same either way.
 *
 * Ownership: the layout and the chunk map are borrowed and must outlive
 * the wkr_arrays_t; the arrays are the caller's (numel floats each) and
 * must stay valid while it uses them; the staging buffer is owned.
 */
#ifndef WKR_ARRAYS_H
#define WKR_ARRAYS_H

#include "ps_chunk.h"
#include "ps_layout.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const ps_layout_t *layout;
    const ps_chunkmap_t *map;
    float **w;           /* [tensor] weights */
    const float **g;     /* [tensor] gradient */
    int *tfirst, *tlast; /* [chunk] the tensors a chunk overlaps */
    const float **gsrc;  /* [chunk] its gradient when contiguous, else NULL */
    float *stage;        /* [total] gathered gradients of the other chunks */
    int dirty;           /* arrays changed since the last wkr_arrays_prepare */
} wkr_arrays_t;

/* Both maps must describe the same number of elements.  PS_ENOMEM. */
int wkr_arrays_init(wkr_arrays_t *a, const ps_layout_t *l, const ps_chunkmap_t *m);
void wkr_arrays_fini(wkr_arrays_t *a);
/* Tensor t's arrays (either may be NULL until prepare). */
void wkr_arrays_set(wkr_arrays_t *a, int t, float *weights, const float *grads);
/* Check every tensor has both arrays and work out which chunks are
 * contiguous (allocating the staging buffer when one is not).  PS_ESTATE
 * naming a tensor without arrays; PS_ENOMEM. */
int wkr_arrays_prepare(wkr_arrays_t *a);
/* The first and last chunk tensor t overlaps. */
size_t wkr_arrays_chunk_first(const wkr_arrays_t *a, int t);
size_t wkr_arrays_chunk_last(const wkr_arrays_t *a, int t);
/* Chunk k's gradient as count contiguous floats: in the arrays
 * themselves, or gathered now into the staging buffer (which then holds
 * them until the next call for the same chunk). */
const float *wkr_arrays_grads(wkr_arrays_t *a, size_t k);
/* Copy chunk k's weights into dst (count floats). */
void wkr_arrays_gather_weights(const wkr_arrays_t *a, size_t k, float *dst);
/* Copy the part of chunk k's payload (count float32, any alignment) that
 * belongs to tensor t into t's weights; returns the floats copied (0 when
 * they do not overlap). */
size_t wkr_arrays_scatter(const wkr_arrays_t *a, size_t k, int t, const void *payload);

#endif
