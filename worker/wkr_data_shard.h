/*
 * wkr_data_shard: what the dataset loaders share, the load options after
 * defaults and validation and the shard arithmetic.
 *
 * Contract: wkr_data_shard_resolve() checks the caller's wkr_data_opts_t
 * and fills a wkr_data_shard_t, a plain value the loaders read (they keep
 * no pointer to the caller's options).  Sample i (0-based, file order)
 * belongs to this rank iff i % nshards == shard.  wkr_data_shard_alloc()
 * sizes a dataset's x and y for its shard once `total` and `features` are
 * known; the arrays belong to the dataset (freed by wkr_data_fini).
 *
 * Failure: a negative PS_E* code with a ps_error_set() detail (the codes
 * wkr_data.h lists): PS_EINVAL for options out of range, PS_ERANGE for a
 * shard that would receive no sample, PS_ENOMEM when n x features
 * overflows or the allocation fails.
 */
#ifndef WKR_DATA_SHARD_H
#define WKR_DATA_SHARD_H

#include "wkr_data.h"

#include <stddef.h>

typedef struct {
    int features;          /* 0 = infer from the file */
    int classes;           /* 0 = infer; always 0 for regression */
    int regression;        /* 0 or 1 */
    size_t shard, nshards; /* nshards >= 1, shard < nshards */
} wkr_data_shard_t;

/* Defaults and checks: o NULL or zeroed means one shard, shape inferred. */
int wkr_data_shard_resolve(wkr_data_shard_t *r, const wkr_data_opts_t *o);

/* Samples i < total with i % nshards == shard. */
size_t wkr_data_shard_rows(const wkr_data_shard_t *o, size_t total);

/* Allocates ds->x (zeroed: LIBSVM rows set only their listed features)
 * and ds->y for the shard of ds->total samples of ds->features each, and
 * sets ds->n.  `path` names the file in messages. */
int wkr_data_shard_alloc(const wkr_data_shard_t *o, wkr_dataset_t *ds, const char *path);

#endif
