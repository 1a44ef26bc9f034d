#include "wkr_data.h"

#include "ps_err.h"
#include "wkr_data_idx.h"
#include "wkr_data_shard.h"
#include "wkr_data_text.h"

#include <stdlib.h>
#include <string.h>

void wkr_data_fini(wkr_dataset_t *ds)
{
    if (ds == NULL) {
        return;
    }
    free(ds->x);
    free(ds->y);
    memset(ds, 0, sizeof *ds);
}

/* The loader the spec names, on a zeroed ds. */
static int load_spec(wkr_dataset_t *ds, const char *spec, int test_split, const wkr_data_opts_t *o,
                     const wkr_data_shard_t *r)
{
    if (strcmp(spec, "fashion-mnist") == 0) {
        const char *dir = o != NULL && o->data_dir != NULL ? o->data_dir : WKR_FMNIST_DEFAULT_DIR;
        return wkr_data_idx_load(ds, dir, test_split, r);
    }
    if (strncmp(spec, "libsvm:", 7) == 0 && spec[7] != '\0') {
        return wkr_data_text_load(ds, spec + 7, WKR_DATA_LIBSVM, r);
    }
    if (strncmp(spec, "csv:", 4) == 0 && spec[4] != '\0') {
        return wkr_data_text_load(ds, spec + 4, WKR_DATA_CSV, r);
    }
    ps_error_set("unknown dataset '%s' (expected fashion-mnist, libsvm:PATH or csv:PATH)", spec);
    return PS_EINVAL;
}

int wkr_data_load(wkr_dataset_t *ds, const char *spec, int test_split, const wkr_data_opts_t *o)
{
    if (ds == NULL || spec == NULL) {
        ps_error_set("wkr_data_load: NULL dataset or spec");
        return PS_EINVAL;
    }
    memset(ds, 0, sizeof *ds);
    wkr_data_shard_t r;
    int rv = wkr_data_shard_resolve(&r, o);
    if (rv == 0) {
        rv = load_spec(ds, spec, test_split, o, &r);
    }
    if (rv != 0) {
        wkr_data_fini(ds); /* the contract: nothing allocated after a failure */
    }
    return rv;
}
