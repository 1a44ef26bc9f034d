#include "wkr_data_shard.h"

#include "ps_err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int wkr_data_shard_resolve(wkr_data_shard_t *r, const wkr_data_opts_t *o)
{
    static const wkr_data_opts_t zero;
    if (o == NULL) {
        o = &zero;
    }
    memset(r, 0, sizeof *r);
    if (o->features < 0 || o->features > WKR_DATA_MAX_FEATURES) {
        ps_error_set("--features %d is outside 1..%d", o->features, WKR_DATA_MAX_FEATURES);
        return PS_EINVAL;
    }
    if (!o->regression &&
        (o->classes < 0 || o->classes == 1 || o->classes > WKR_DATA_MAX_CLASSES)) {
        ps_error_set("--classes %d is outside 2..%d", o->classes, WKR_DATA_MAX_CLASSES);
        return PS_EINVAL;
    }
    /* A zeroed opts struct means "one shard": the whole file. */
    int nshards = o->nshards == 0 ? 1 : o->nshards;
    if (nshards < 0 || o->shard < 0 || o->shard >= nshards) {
        ps_error_set("data shard %d of %d is out of range", o->shard, o->nshards);
        return PS_EINVAL;
    }
    r->features = o->features;
    r->classes = o->regression ? 0 : o->classes;
    r->regression = o->regression != 0;
    r->shard = (size_t)o->shard;
    r->nshards = (size_t)nshards;
    return 0;
}

size_t wkr_data_shard_rows(const wkr_data_shard_t *o, size_t total)
{
    return total > o->shard ? (total - o->shard - 1) / o->nshards + 1 : 0;
}

int wkr_data_shard_alloc(const wkr_data_shard_t *o, wkr_dataset_t *ds, const char *path)
{
    size_t n = wkr_data_shard_rows(o, ds->total);
    if (n == 0) {
        /* A worker without data cannot take part in training. */
        ps_error_set("%s: %zu samples leave data shard %zu of %zu empty", path, ds->total, o->shard,
                     o->nshards);
        return PS_ERANGE;
    }
    size_t f = (size_t)ds->features;
    if (n > SIZE_MAX / sizeof(float) / f) {
        ps_error_set("%s: %zu samples x %zu features overflow memory size", path, n, f);
        return PS_ENOMEM;
    }
    ds->x = calloc(n * f, sizeof(float));
    ds->y = calloc(n, sizeof(float));
    if (ds->x == NULL || ds->y == NULL) {
        ps_error_set("%s: cannot allocate %zu samples x %zu features (%.1f MiB)", path, n, f,
                     (double)n * (double)f * 4.0 / 1048576.0);
        return PS_ENOMEM;
    }
    ds->n = n;
    return 0;
}
