/*
 * fuzz_data: invariants of worker/wkr_data.h shared by the loader targets
 * (fuzz_libsvm, fuzz_csv, fuzz_idx).
 *
 * fz_data_load() loads a spec twice, as one shard (the whole file) and as
 * shard s of k, checks each result against the header's contract, and
 * checks the two against each other: every rank reads the whole file, so
 * both fail alike, or both infer the same shape and the shard's rows are
 * exactly rows s, s+k, ... of the whole.
 */
#ifndef FUZZ_DATA_H
#define FUZZ_DATA_H

#include <math.h>
#include <string.h>

#include "fuzz_util.h"
#include "wkr_data.h"

/* A failed load leaves a zeroed struct and a message. */
static inline void fz_data_check_failed(const wkr_dataset_t *ds, int rv)
{
    static const wkr_dataset_t zero;
    FZ_CHECK(fz_known_error(rv));
    FZ_CHECK(memcmp(ds, &zero, sizeof zero) == 0);
    FZ_CHECK(ps_error_msg()[0] != '\0');
}

/* A loaded shard matches the options and holds finite, in-range values;
 * reading every element lets ASan prove the arrays are that large. */
static inline void fz_data_check_loaded(const wkr_dataset_t *ds, const wkr_data_opts_t *o)
{
    size_t k = o->nshards > 0 ? (size_t)o->nshards : 1, s = (size_t)o->shard;
    FZ_CHECK(ds->x != NULL && ds->y != NULL);
    FZ_CHECK(ds->features >= 1 && ds->features <= WKR_DATA_MAX_FEATURES);
    FZ_CHECK(ds->total > s && ds->n == (ds->total - s - 1) / k + 1);
    FZ_CHECK(o->features == 0 || ds->features == o->features);
    /* A shape left to inference stays under the caps. */
    FZ_CHECK(o->features != 0 || ds->features <= WKR_DATA_INFER_MAX_FEATURES);
    if (o->regression) {
        FZ_CHECK(ds->classes == 0);
    } else {
        FZ_CHECK(ds->classes >= 2 && ds->classes <= WKR_DATA_MAX_CLASSES);
        FZ_CHECK(o->classes == 0 || ds->classes == o->classes);
        FZ_CHECK(o->classes != 0 || ds->classes <= WKR_DATA_INFER_MAX_CLASSES);
    }
    for (size_t i = 0; i < ds->n; i++) {
        float y = ds->y[i];
        FZ_CHECK(isfinite(y));
        FZ_CHECK(o->regression || (y >= 0.0f && y < (float)ds->classes && y == floorf(y)));
    }
    for (size_t i = 0; i < ds->n * (size_t)ds->features; i++) {
        FZ_CHECK(isfinite(ds->x[i]));
    }
}

static inline void fz_data_check(const wkr_dataset_t *ds, int rv, const wkr_data_opts_t *o)
{
    if (rv != 0) {
        fz_data_check_failed(ds, rv);
    } else {
        fz_data_check_loaded(ds, o);
    }
}

/* The shard holds rows s, s+k, ... of the whole file, bit for bit. */
static inline void fz_data_compare(const wkr_dataset_t *all, const wkr_dataset_t *part, int s,
                                   int k)
{
    size_t f = (size_t)all->features;
    FZ_CHECK(part->features == all->features && part->classes == all->classes);
    FZ_CHECK(part->total == all->total);
    for (size_t i = 0; i < part->n; i++) {
        size_t r = (size_t)s + i * (size_t)k;
        FZ_CHECK(r < all->n);
        FZ_CHECK(memcmp(&part->y[i], &all->y[r], sizeof(float)) == 0);
        FZ_CHECK(memcmp(part->x + i * f, all->x + r * f, f * sizeof(float)) == 0);
    }
}

/* Loads `spec` whole and, when k > 0, as shard s of k (other options from
 * *o); returns the whole load's code.  The whole load is handed to the
 * caller in *out (who frees it) when out is not NULL, else freed here. */
static inline int fz_data_load(const char *spec, int test_split, const wkr_data_opts_t *o, int s,
                               int k, wkr_dataset_t *out)
{
    wkr_data_opts_t ow = *o, op = *o;
    ow.shard = 0;
    ow.nshards = 1;
    op.shard = s;
    op.nshards = k;
    wkr_dataset_t whole, part;
    int rw = wkr_data_load(&whole, spec, test_split, &ow);
    fz_data_check(&whole, rw, &ow);
    if (k > 0) {
        int rp = wkr_data_load(&part, spec, test_split, &op);
        fz_data_check(&part, rp, &op);
        if (rw != 0) {
            FZ_CHECK(rp == rw);
        } else if (whole.total <= (size_t)s) {
            FZ_CHECK(rp == PS_ERANGE); /* an empty shard is refused */
        } else {
            FZ_CHECK(rp == 0);
            fz_data_compare(&whole, &part, s, k);
        }
        wkr_data_fini(&part);
        wkr_data_fini(&part); /* safe twice, per the contract */
    }
    if (out != NULL) {
        *out = whole;
    } else {
        wkr_data_fini(&whole);
    }
    return rw;
}

/* Two loads of the same content (e.g. raw and gzip'd) agree exactly. */
static inline void fz_data_same(const wkr_dataset_t *a, int ra, const wkr_dataset_t *b, int rb)
{
    FZ_CHECK(ra == rb);
    if (ra != 0) {
        return;
    }
    FZ_CHECK(a->n == b->n && a->total == b->total);
    FZ_CHECK(a->features == b->features && a->classes == b->classes);
    FZ_CHECK(memcmp(a->y, b->y, a->n * sizeof(float)) == 0);
    FZ_CHECK(memcmp(a->x, b->x, a->n * (size_t)a->features * sizeof(float)) == 0);
}

/* LIBSVM stores rows densely: with --features 16777216, one line
 * "0 16777216:1" is a 64 MiB row, by design (inferred, the width stops at
 * WKR_DATA_INFER_MAX_FEATURES, still a 4 MiB row).  Inputs of a few
 * hundred such lines would then trip libFuzzer's malloc limit without
 * being a bug, so targets infer the feature count only when no number in
 * the input has more than 4 digits, and otherwise pass a small --features
 * (wide indices are then refused, which is tested too). */
static inline int fz_has_long_number(const uint8_t *d, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        run = d[i] >= '0' && d[i] <= '9' ? run + 1 : 0;
        if (run > 4) {
            return 1;
        }
    }
    return 0;
}

/* One text input (LIBSVM or CSV, by `format`, "libsvm" or "csv") under
 * three option sets: inferred shape, regression, and fixed features and
 * classes, each whole and sharded. */
static inline void fz_text_fuzz(const char *format, const uint8_t *data, size_t size)
{
    char path[256], spec[300];
    fz_path(path, sizeof path, "input.txt");
    fz_write(path, data, size);
    snprintf(spec, sizeof spec, "%s:%s", format, path);
    int wide = fz_has_long_number(data, size);

    wkr_data_opts_t o = {.features = wide ? 64 : 0};
    fz_data_load(spec, 0, &o, 1, 3, NULL);

    wkr_data_opts_t r = {.features = wide ? 64 : 0, .regression = 1};
    fz_data_load(spec, 0, &r, 0, 2, NULL);

    wkr_data_opts_t c = {.features = 5, .classes = 3};
    fz_data_load(spec, 0, &c, 1, 2, NULL);
}

#endif
