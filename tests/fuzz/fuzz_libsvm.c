/*
 * libFuzzer target: the LIBSVM loader (wkr_data_load with "libsvm:PATH").
 * Each input is written to a file and loaded under several option sets,
 * whole and sharded; see fuzz_data.h for the invariants checked.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_text_fuzz("libsvm", data, size);
    return 0;
}
