/*
 * libFuzzer target: the IDX (MNIST layout) loader, wkr_data_load with
 * "fashion-mnist" and a data_dir holding the input as the training images
 * next to a fixed, valid labels file of three samples (labels 3, 0, 9), so
 * an image file announcing three images gets past the count check.
 *
 * Each input is loaded three ways:
 *   raw         as train-images-idx3-ubyte (no .gz: the loader reads the
 *               plain name, still through zlib, which passes non-gzip data
 *               through and decompresses gzip data)
 *   verbatim    the input itself as train-images-idx3-ubyte.gz: the same
 *               bytes through the same reader, so the same result as raw
 *   gzip'd      the input compressed by zlib as the .gz: the same result as
 *               raw unless the input itself starts with the gzip magic
 * and the raw form once more with --features 6 and regression.  The raw,
 * gzip'd and regression loads also run as a shard (see fuzz_data.h).
 */
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <zlib.h>

#include "fuzz_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char img_raw[256], img_gz[256];

static void setup(void)
{
    static const uint8_t labels[] = {0, 0, 8, 1, 0, 0, 0, 3, 3, 0, 9};
    char path[256];
    fz_path(path, sizeof path, "train-labels-idx1-ubyte");
    fz_write(path, labels, sizeof labels);
    fz_path(img_raw, sizeof img_raw, "train-images-idx3-ubyte");
    fz_path(img_gz, sizeof img_gz, "train-images-idx3-ubyte.gz");
}

static void write_gzip(const char *path, const uint8_t *data, size_t size)
{
    gzFile gz = gzopen(path, "wb1");
    FZ_CHECK(gz != NULL);
    FZ_CHECK(size == 0 || gzwrite(gz, data, (unsigned)size) == (int)size);
    FZ_CHECK(gzclose(gz) == Z_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (img_raw[0] == '\0') {
        setup();
    }
    wkr_data_opts_t o = {.data_dir = fz_dir()};
    wkr_dataset_t raw, zipped, verbatim;

    unlink(img_gz);
    fz_write(img_raw, data, size);
    int rr = fz_data_load("fashion-mnist", 0, &o, 1, 2, &raw);

    fz_write(img_gz, data, size);
    int rv = fz_data_load("fashion-mnist", 0, &o, 0, 0, &verbatim);
    fz_data_same(&raw, rr, &verbatim, rv);

    write_gzip(img_gz, data, size);
    int rz = fz_data_load("fashion-mnist", 0, &o, 2, 3, &zipped);
    if (size < 2 || data[0] != 0x1f || data[1] != 0x8b) {
        fz_data_same(&raw, rr, &zipped, rz);
    }

    unlink(img_gz);
    wkr_data_opts_t f = {.data_dir = fz_dir(), .features = 6, .regression = 1};
    fz_data_load("fashion-mnist", 0, &f, 2, 3, NULL);

    wkr_data_fini(&raw);
    wkr_data_fini(&zipped);
    wkr_data_fini(&verbatim);
    return 0;
}
