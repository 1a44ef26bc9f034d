/*
 * libFuzzer target: the LIBSVM loader with 64-bit indices (wkr_data_sparse_load with
 * "libsvm:PATH", wkr_data_libsvm64).
 * Each input is written to a file and loaded whole and sharded; see
 * fuzz_sparse.h for the invariants checked.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_sparse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_sparse_fuzz("libsvm", FZ_LIBSVM64, data, size);
    return 0;
}
