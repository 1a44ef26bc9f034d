/*
 * libFuzzer target: the Criteo TSV loader (wkr_data_sparse_load with "criteo:PATH",
 * wkr_data_criteo).
 * Each input is written to a file and loaded whole and sharded; see
 * fuzz_sparse.h for the invariants checked.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_sparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_sparse_fuzz("criteo", FZ_CRITEO, data, size);
    return 0;
}
