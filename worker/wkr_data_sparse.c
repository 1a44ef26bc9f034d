#include "wkr_data_sparse.h"

#include "ps_err.h"
#include "wkr_data_criteo.h"
#include "wkr_data_libsvm64.h"
#include "wkr_data_shard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A capacity of at least `need`, doubling from `cap`; 0 on overflow. */
static size_t cap_for(size_t cap, size_t need, size_t width)
{
    size_t c = cap ? cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 4 / width) {
            return 0;
        }
        c *= 2;
    }
    return c;
}

/* Resizes *p to c elements of `size` bytes. */
static int resize(void **p, size_t c, size_t size)
{
    void *q = realloc(*p, c * size);
    if (q == NULL) {
        ps_error_set("data set: cannot allocate %zu entries (%.1f MiB)", c,
                     (double)c * (double)size / 1048576.0);
        return PS_ENOMEM;
    }
    *p = q;
    return 0;
}

/* Room for `need` rows (y, rowptr + 1, dense), all sized from one count. */
static int grow_rows(wkr_sparse_ds_t *ds, size_t need)
{
    size_t w = ds->ndense > 0 ? (size_t)ds->ndense : 1, c = cap_for(ds->cap_rows, need, w + 2);
    if (c == 0) {
        ps_error_set("data set: %zu rows overflow memory size", need);
        return PS_ENOMEM;
    }
    int rv = resize((void **)&ds->y, c, sizeof *ds->y);
    if (rv == 0) {
        rv = resize((void **)&ds->rowptr, c + 1, sizeof *ds->rowptr);
    }
    if (rv == 0 && ds->ndense > 0) {
        rv = resize((void **)&ds->dense, c * w, sizeof *ds->dense);
    }
    if (rv == 0) {
        ds->cap_rows = c;
    }
    return rv;
}

/* Room for `need` entries (keys, and vals when the data set has them). */
static int grow_nnz(wkr_sparse_ds_t *ds, size_t need, int with_vals)
{
    size_t c = cap_for(ds->cap_nnz, need, sizeof(uint64_t));
    if (c == 0) {
        ps_error_set("data set: %zu entries overflow memory size", need);
        return PS_ENOMEM;
    }
    int rv = resize((void **)&ds->keys, c, sizeof *ds->keys);
    if (rv == 0 && with_vals) {
        rv = resize((void **)&ds->vals, c, sizeof *ds->vals);
    }
    if (rv == 0) {
        ds->cap_nnz = c;
    }
    return rv;
}

int wkr_data_sparse_append(wkr_sparse_ds_t *ds, float y, const uint64_t *keys, const float *vals,
                           size_t nnz, const float *dense)
{
    size_t at = ds->n ? ds->rowptr[ds->n] : 0;
    int rv = 0;
    if (ds->n + 1 > ds->cap_rows) {
        rv = grow_rows(ds, ds->n + 1);
    }
    if (rv == 0 && at + nnz > ds->cap_nnz) {
        rv = grow_nnz(ds, at + nnz, vals != NULL);
    }
    if (rv != 0) {
        return rv;
    }
    ds->rowptr[0] = 0;
    ds->y[ds->n] = y;
    if (nnz > 0) {
        memcpy(ds->keys + at, keys, nnz * sizeof *keys);
    }
    if (nnz > 0 && vals) {
        memcpy(ds->vals + at, vals, nnz * sizeof *vals);
    }
    if (ds->ndense > 0) {
        memcpy(ds->dense + ds->n * (size_t)ds->ndense, dense, (size_t)ds->ndense * sizeof *dense);
    }
    ds->n++;
    ds->rowptr[ds->n] = at + nnz;
    return 0;
}

void wkr_data_sparse_fini(wkr_sparse_ds_t *ds)
{
    if (ds == NULL) {
        return;
    }
    free(ds->y);
    free(ds->rowptr);
    free(ds->keys);
    free(ds->vals);
    free(ds->dense);
    memset(ds, 0, sizeof *ds);
}

/* The loader the spec names, on a zeroed ds. */
static int load_spec(wkr_sparse_ds_t *ds, const char *spec, const wkr_data_shard_t *r)
{
    if (strncmp(spec, "libsvm:", 7) == 0 && spec[7] != '\0') {
        return wkr_data_libsvm64_load(ds, spec + 7, r);
    }
    if (strncmp(spec, "criteo:", 7) == 0 && spec[7] != '\0') {
        return wkr_data_criteo_load(ds, spec + 7, r);
    }
    ps_error_set("unknown sparse dataset '%s' (expected libsvm:PATH or criteo:PATH)", spec);
    return PS_EINVAL;
}

/* What every loader checks at the end: some samples, a non-empty shard. */
static int check_loaded(const wkr_sparse_ds_t *ds, const char *spec, const wkr_data_shard_t *r)
{
    const char *path = strchr(spec, ':') + 1;
    if (ds->total == 0) {
        ps_error_set("%s: no samples (empty, or only blank or comment lines)", path);
        return PS_EFORMAT;
    }
    if (ds->n == 0) {
        /* A worker without data cannot take part in training. */
        ps_error_set("%s: %zu samples leave data shard %zu of %zu empty", path, ds->total, r->shard,
                     r->nshards);
        return PS_ERANGE;
    }
    return 0;
}

int wkr_data_sparse_load(wkr_sparse_ds_t *ds, const char *spec, const wkr_data_opts_t *o)
{
    if (ds == NULL || spec == NULL) {
        ps_error_set("wkr_data_sparse_load: NULL dataset or spec");
        return PS_EINVAL;
    }
    memset(ds, 0, sizeof *ds);
    wkr_data_opts_t only_shard = {0};
    if (o != NULL) {
        only_shard.shard = o->shard; /* features/classes mean nothing here */
        only_shard.nshards = o->nshards;
    }
    wkr_data_shard_t r;
    int rv = wkr_data_shard_resolve(&r, &only_shard);
    if (rv == 0) {
        rv = load_spec(ds, spec, &r);
    }
    if (rv == 0) {
        rv = check_loaded(ds, spec, &r);
    }
    if (rv != 0) {
        wkr_data_sparse_fini(ds); /* the contract: nothing allocated after a failure */
    }
    return rv;
}
