/*
 * wkr_data_criteo: the Criteo display-advertising TSV (the Kaggle and
 * Terabyte day files), rows kept sparse (behind wkr_data_sparse_load's
 * "criteo:PATH").
 *
 * Contract: reads the file once, validating every line, and appends the
 * rows of shard `r` to ds (zeroed by the caller; sets total and ndense =
 * 13, vals stay NULL).  A line is exactly 40 tab-separated fields: the
 * label 0 or 1, 13 integer fields (decimal, optional sign, may be empty),
 * 26 categorical fields of exactly 8 hex digits (may be empty).  Integer
 * x becomes log(1 + max(x, 0)), missing 0; categorical field f (1..26)
 * with value h becomes key f * 2^32 + h, a missing one no entry.  Blank
 * lines are skipped.  Failure: wkr_data_sparse.h's codes with
 * "PATH:LINE: what is wrong" naming the field; ds may hold partly filled
 * arrays (the caller frees them).
 */
#ifndef WKR_DATA_CRITEO_H
#define WKR_DATA_CRITEO_H

#include "wkr_data_shard.h"
#include "wkr_data_sparse.h"

#define WKR_CRITEO_FIELDS (1 + WKR_CRITEO_INTS + WKR_CRITEO_CATS)

int wkr_data_criteo_load(wkr_sparse_ds_t *ds, const char *path, const wkr_data_shard_t *r);

#endif
