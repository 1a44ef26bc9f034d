/*
 * fuzz_sparse: invariants of worker/wkr_data_sparse.h shared by the sparse
 * loader targets (fuzz_libsvm64, fuzz_criteo).
 *
 * fz_sparse_fuzz() writes the input to a file and loads it whole and as
 * shard s of k, and checks:
 *   - a failed load returns a documented code, leaves a zeroed struct and
 *     a message; whole and shard fail alike (every rank reads the whole
 *     file), except that a shard left empty is PS_ERANGE;
 *   - a loaded set has n = the samples i of `total` with i % k == s, the
 *     CSR rowptr starts at 0, never decreases, ends at the entry count and
 *     within the allocated capacity; labels are exactly 0 or 1;
 *   - per format: LIBSVM keys are strictly increasing on a row within
 *     1 .. 2^63-1, values finite, no dense part; Criteo keys are
 *     f * 2^32 + h with field f in 1..26 strictly increasing on a row (so
 *     at most 26 entries), no vals, 13 dense values each
 *     log(1 + max(x, 0)) of a 64-bit integer, so in [0, log(2^63)];
 *   - the shard's rows are exactly rows s, s+k, ... of the whole, bit for
 *     bit.
 * Reading every element lets ASan prove the arrays are as large as
 * claimed.
 */
#ifndef FUZZ_SPARSE_H
#define FUZZ_SPARSE_H

#include <math.h>
#include <string.h>

#include "fuzz_util.h"
#include "wkr_data_sparse.h"

enum { FZ_LIBSVM64, FZ_CRITEO };

static inline void fz_sparse_check_failed(const wkr_sparse_ds_t *ds, int rv)
{
    static const wkr_sparse_ds_t zero;
    FZ_CHECK(fz_known_error(rv));
    FZ_CHECK(memcmp(ds, &zero, sizeof zero) == 0);
    FZ_CHECK(ps_error_msg()[0] != '\0');
}

/* Row i's keys (and values) as the format promises. */
static inline void fz_sparse_check_row(const wkr_sparse_ds_t *ds, int fmt, size_t i)
{
    uint64_t prev = 0;
    for (size_t j = ds->rowptr[i]; j < ds->rowptr[i + 1]; j++) {
        uint64_t key = ds->keys[j];
        if (fmt == FZ_LIBSVM64) {
            FZ_CHECK(key >= 1 && key <= WKR_SPARSE_MAX_KEY);
            FZ_CHECK(key > prev);
            FZ_CHECK(isfinite(ds->vals[j]));
        } else {
            uint64_t f = key >> 32;
            FZ_CHECK(f >= 1 && f <= WKR_CRITEO_CATS);
            FZ_CHECK(f > prev >> 32); /* one entry per field, ascending */
        }
        prev = key;
    }
}

static inline void fz_sparse_check_loaded(const wkr_sparse_ds_t *ds, int fmt, size_t s, size_t k)
{
    FZ_CHECK(ds->total > s && ds->n == (ds->total - s - 1) / k + 1);
    FZ_CHECK(ds->n <= ds->cap_rows);
    FZ_CHECK(ds->y != NULL && ds->rowptr != NULL && ds->rowptr[0] == 0);
    size_t nnz = ds->rowptr[ds->n];
    FZ_CHECK(nnz <= ds->cap_nnz);
    FZ_CHECK(nnz == 0 || ds->keys != NULL);
    if (fmt == FZ_LIBSVM64) {
        FZ_CHECK(ds->ndense == 0 && ds->dense == NULL);
        FZ_CHECK(nnz == 0 || ds->vals != NULL);
    } else {
        FZ_CHECK(ds->ndense == WKR_CRITEO_INTS && ds->dense != NULL && ds->vals == NULL);
    }
    for (size_t i = 0; i < ds->n; i++) {
        FZ_CHECK(ds->y[i] == 0.0f || ds->y[i] == 1.0f);
        FZ_CHECK(ds->rowptr[i] <= ds->rowptr[i + 1]);
        FZ_CHECK(fmt == FZ_LIBSVM64 || ds->rowptr[i + 1] - ds->rowptr[i] <= WKR_CRITEO_CATS);
        fz_sparse_check_row(ds, fmt, i);
    }
    for (size_t i = 0; i < ds->n * (size_t)ds->ndense; i++) {
        float v = ds->dense[i];
        FZ_CHECK(isfinite(v) && v >= 0.0f && v <= (float)log1p(9.3e18));
    }
}

static inline void fz_sparse_check(const wkr_sparse_ds_t *ds, int rv, int fmt, size_t s, size_t k)
{
    if (rv != 0) {
        fz_sparse_check_failed(ds, rv);
    } else {
        fz_sparse_check_loaded(ds, fmt, s, k);
    }
}

/* The shard holds rows s, s+k, ... of the whole file, bit for bit. */
static inline void fz_sparse_compare(const wkr_sparse_ds_t *all, const wkr_sparse_ds_t *part,
                                     size_t s, size_t k)
{
    size_t d = (size_t)all->ndense;
    FZ_CHECK(part->total == all->total && part->ndense == all->ndense);
    for (size_t i = 0; i < part->n; i++) {
        size_t r = s + i * k;
        FZ_CHECK(r < all->n);
        size_t a = all->rowptr[r], m = all->rowptr[r + 1] - a, b = part->rowptr[i];
        FZ_CHECK(part->rowptr[i + 1] - b == m);
        FZ_CHECK(memcmp(&part->y[i], &all->y[r], sizeof(float)) == 0);
        FZ_CHECK(m == 0 || memcmp(part->keys + b, all->keys + a, m * sizeof(uint64_t)) == 0);
        FZ_CHECK(m == 0 || all->vals == NULL ||
                 memcmp(part->vals + b, all->vals + a, m * sizeof(float)) == 0);
        FZ_CHECK(d == 0 || memcmp(part->dense + i * d, all->dense + r * d, d * sizeof(float)) == 0);
    }
}

/* Loads spec whole, then as shard s of k, checking both and each other. */
static inline void fz_sparse_load(const char *spec, int fmt, int s, int k)
{
    wkr_data_opts_t ow = {.shard = 0, .nshards = 1}, op = {.shard = s, .nshards = k};
    wkr_sparse_ds_t whole, part;
    int rw = wkr_data_sparse_load(&whole, spec, &ow);
    fz_sparse_check(&whole, rw, fmt, 0, 1);
    int rp = wkr_data_sparse_load(&part, spec, &op);
    fz_sparse_check(&part, rp, fmt, (size_t)s, (size_t)k);
    if (rw != 0) {
        FZ_CHECK(rp == rw);
    } else if (whole.total <= (size_t)s) {
        FZ_CHECK(rp == PS_ERANGE); /* an empty shard is refused */
    } else {
        FZ_CHECK(rp == 0);
        fz_sparse_compare(&whole, &part, (size_t)s, (size_t)k);
    }
    wkr_data_sparse_fini(&part);
    wkr_data_sparse_fini(&part); /* safe twice, per the contract */
    wkr_data_sparse_fini(&whole);
}

/* One input in `format` ("libsvm" or "criteo"): whole, shard 1 of 3 and
 * shard 0 of 2. */
static inline void fz_sparse_fuzz(const char *format, int fmt, const uint8_t *data, size_t size)
{
    char path[256], spec[300];
    fz_path(path, sizeof path, "input.txt");
    fz_write(path, data, size);
    snprintf(spec, sizeof spec, "%s:%s", format, path);
    fz_sparse_load(spec, fmt, 1, 3);
    fz_sparse_load(spec, fmt, 0, 2);
}

#endif
