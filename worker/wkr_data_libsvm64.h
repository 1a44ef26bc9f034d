/*
 * wkr_data_libsvm64: LIBSVM text with 64-bit feature indices, rows kept
 * sparse (behind wkr_data_sparse_load's "libsvm:PATH").
 *
 * Contract: reads the file once, validating every line, and appends the
 * rows of shard `r` to ds (zeroed by the caller; sets total).  Format:
 * `label idx:val ...`, label 0/1 or -1/+1 (-1 becomes 0; "+1", "1.0" are
 * fine), indices positive decimal integers up to 2^63-1, strictly
 * increasing on a line, values finite; blank lines and '#' lines skipped,
 * a '#' token ends a line.  Failure: wkr_data_sparse.h's codes with
 * "PATH:LINE: what is wrong"; ds may hold partly filled arrays (the caller
 * frees them).
 */
#ifndef WKR_DATA_LIBSVM64_H
#define WKR_DATA_LIBSVM64_H

#include "wkr_data_shard.h"
#include "wkr_data_sparse.h"

int wkr_data_libsvm64_load(wkr_sparse_ds_t *ds, const char *path, const wkr_data_shard_t *r);

#endif
