/*
 * wkr_data_text: the text dataset loaders, LIBSVM and CSV (behind
 * wkr_data_load's "libsvm:PATH" and "csv:PATH").
 *
 * Contract: wkr_data_text_load() reads the whole file at `path` twice:
 * pass 1 validates every line and infers the shape (features: the largest
 * LIBSVM index or the CSV columns minus the label; classes: the largest
 * label + 1), pass 2 parses only the rows of the shard `o` into ds, whose
 * x and y it allocates (wkr_data_shard_alloc).  The caller passes a zeroed
 * ds and owns path and o.
 *
 * Formats: LIBSVM `label idx:val ...` with 1-based strictly increasing
 * indices, blank lines and '#' lines skipped, a '#' token ends a line
 * (svmlight comment); CSV with the label first, an optional header line
 * (its first field is not a number), blank and '#' lines skipped.  Numbers
 * must be finite.  Classification labels are integers >= 0; regression
 * labels are any finite float.
 *
 * Failure: a negative PS_E* code (wkr_data.h lists them) and a one-line
 * detail "PATH:LINE: what is wrong" (or "PATH: ..." for the whole file).
 * ds may then hold partly filled arrays: the caller frees them with
 * wkr_data_fini (wkr_data_load does).
 */
#ifndef WKR_DATA_TEXT_H
#define WKR_DATA_TEXT_H

#include "wkr_data.h"
#include "wkr_data_shard.h"

typedef enum { WKR_DATA_LIBSVM, WKR_DATA_CSV } wkr_data_text_fmt_t;

int wkr_data_text_load(wkr_dataset_t *ds, const char *path, wkr_data_text_fmt_t fmt,
                       const wkr_data_shard_t *o);

#endif
