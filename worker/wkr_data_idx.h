/*
 * wkr_data_idx: the IDX loader (the MNIST file layout) behind
 * wkr_data_load's "fashion-mnist", read through zlib.
 *
 * Contract: wkr_data_idx_load() reads DIR/PRE-images-idx3-ubyte.gz and
 * DIR/PRE-labels-idx1-ubyte.gz (PRE "train", or "t10k" when test_split),
 * or the uncompressed name when only that exists, and fills ds with the
 * rows of the shard `o`: pixels scaled to [0, 1] as float, labels 0..9
 * (classes 10, or 0 for regression).  The labels file is read first, in
 * full, so its count is proven by real data before x is sized from it;
 * both files must end exactly after the records their headers announce,
 * and the gzip trailer (CRC, length) must check out.  The caller passes a
 * zeroed ds and owns dir and o.
 *
 * Failure: a negative PS_E* code (wkr_data.h lists them) and a one-line
 * detail "PATH: what is wrong"; a missing file names the Debian package
 * dataset-fashion-mnist and --data-dir.  ds may then hold partly filled
 * arrays: the caller frees them with wkr_data_fini (wkr_data_load does).
 */
#ifndef WKR_DATA_IDX_H
#define WKR_DATA_IDX_H

#include "wkr_data.h"
#include "wkr_data_shard.h"

int wkr_data_idx_load(wkr_dataset_t *ds, const char *dir, int test_split,
                      const wkr_data_shard_t *o);

#endif
