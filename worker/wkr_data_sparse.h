/*
 * wkr_data_sparse: data sets whose rows stay sparse (CSR), for the models
 * of sparse tables (wkr_sparse_model): LIBSVM with 64-bit feature indices
 * ("libsvm:PATH", wkr_data_libsvm64) and the Criteo display-advertising
 * TSV ("criteo:PATH", wkr_data_criteo).
 *
 * Contract: wkr_data_sparse_load() fills a caller-owned wkr_sparse_ds_t
 * whose arrays it allocates and owns; wkr_data_sparse_fini() frees them
 * and zeroes the struct (safe twice, safe on a zeroed struct).  Memory is
 * proportional to the entries of the rows kept, never to the largest
 * index: there is no feature count.
 *
 * Sharding as wkr_data_load: the file is read whole (so `total` agrees on
 * every rank), and sample i (0-based, file order) is kept iff
 * i % nshards == shard.  Only o->shard and o->nshards are read.
 *
 * Row i holds the entries keys[rowptr[i] .. rowptr[i+1]) (with vals at the
 * same positions; vals NULL means every value is 1), then ndense dense
 * floats at dense[i * ndense].  Labels y are 0 or 1.
 *   LIBSVM: keys are the feature indices as written, strictly increasing
 *     on a line, 1 .. 2^63-1; labels 0/1 or -1/+1 (-1 becomes 0);
 *     ndense 0.
 *   Criteo: label, 13 integer fields, 26 categorical fields of 8 hex
 *     digits, tab-separated, an empty field is missing.  Categorical field
 *     f (1..26) with value h is key f * 2^32 + h (missing: no entry, so
 *     keys stay ascending); vals NULL; ndense 13: integer x becomes
 *     log(1 + max(x, 0)), missing 0.
 *
 * Failure: a negative PS_E* code and a one-line ps_error_set() detail
 * "PATH:LINE: what is wrong" (or "PATH: ..." for the whole file); ds is
 * left zeroed.  PS_EINVAL bad spec or shard; PS_ENOENT / PS_EIO a file
 * that cannot be opened or read; PS_EFORMAT malformed content (bad label,
 * index or value, field count, hex, integer, no samples); PS_ERANGE an
 * index beyond 2^63-1 or a shard left empty; PS_ENOMEM.
 */
#ifndef WKR_DATA_SPARSE_H
#define WKR_DATA_SPARSE_H

#include "wkr_data.h"
#include "wkr_lines.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define WKR_CRITEO_INTS 13
#define WKR_CRITEO_CATS 26
/* Largest LIBSVM index: keys are signed 64-bit on the server's --save
 * (safetensors I64). */
#define WKR_SPARSE_MAX_KEY ((uint64_t)INT64_MAX)

typedef struct {
    size_t n;        /* samples kept in this shard */
    size_t total;    /* samples in the whole file */
    float *y;        /* n labels, 0 or 1 */
    size_t *rowptr;  /* n + 1 */
    uint64_t *keys;  /* rowptr[n] */
    float *vals;     /* rowptr[n], or NULL: every value is 1 */
    int ndense;      /* dense floats per row */
    float *dense;    /* n * ndense, or NULL when ndense is 0 */
    size_t cap_nnz;  /* allocated entries of keys/vals (loader's) */
    size_t cap_rows; /* allocated rows of y/rowptr/dense (loader's) */
} wkr_sparse_ds_t;

/* spec: "libsvm:PATH" | "criteo:PATH"; o may be NULL (one shard). */
int wkr_data_sparse_load(wkr_sparse_ds_t *ds, const char *spec, const wkr_data_opts_t *o);
void wkr_data_sparse_fini(wkr_sparse_ds_t *ds);

/* ---- for the loaders (wkr_data_libsvm64, wkr_data_criteo) ---------------- */

/* Appends one row: y, nnz entries (vals may be NULL when the data set
 * has none) and ds->ndense dense floats. */
int wkr_data_sparse_append(wkr_sparse_ds_t *ds, float y, const uint64_t *keys, const float *vals,
                           size_t nnz, const float *dense);

#endif
