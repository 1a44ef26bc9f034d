/*
 * wkr_data: dataset loaders for the worker (Fashion-MNIST IDX, LIBSVM, CSV).
 *
 * The public entry; the work is done by wkr_data_shard (options after
 * defaults, shard arithmetic), wkr_data_text (LIBSVM, CSV) and
 * wkr_data_idx (IDX through zlib).
 *
 * Contract: wkr_data_load() fills a caller-owned wkr_dataset_t whose x and
 * y arrays it allocates and owns; wkr_data_fini() frees them and zeroes the
 * struct (safe twice, safe on a zeroed struct).  The caller owns `spec`,
 * `o` and `o->data_dir`; nothing keeps a pointer to them.
 *
 * Every rank reads the whole file, so feature/class inference and `total`
 * agree on all ranks, but keeps only the rows of its shard
 * (i % nshards == shard, i = 0-based sample index in file order): x holds
 * exactly n x features floats.
 *
 * Failure: a negative PS_E* code and a one-line ps_error_set() detail of
 * the form "PATH:LINE: what is wrong" (text files) or "PATH: what is wrong"
 * (binary files); ds is left zeroed with nothing allocated.  Codes:
 *   PS_EINVAL  bad spec or options (unknown format, shard out of range,
 *              classes == 1, features beyond WKR_DATA_MAX_FEATURES)
 *   PS_ENOENT  a file is missing (Fashion-MNIST: names the package
 *              dataset-fashion-mnist and --data-dir)
 *   PS_EIO     a file cannot be opened or read for another reason
 *   PS_EFORMAT malformed content: bad number, non-integer label, index 0 or
 *              not increasing, inconsistent CSV columns, empty file, fewer
 *              than two classes inferred, wrong IDX magic, IDX count or
 *              size mismatch, truncated/corrupt gzip
 *   PS_ERANGE  a value out of range: negative label, label >= classes,
 *              feature index beyond --features or beyond the limit, a
 *              feature or class count beyond WKR_DATA_INFER_MAX_* that the
 *              options leave to inference, a shard that would receive no
 *              sample
 *   PS_ENOMEM  allocation failed or n x features overflows size_t
 *
 * Formats (see docs): LIBSVM `label idx:val ...` with 1-based strictly
 * increasing indices, blank lines and '#' lines skipped, a '#' token ends a
 * line (svmlight comment); CSV with the label first, an optional header
 * line (its first field is not a number), blank and '#' lines skipped.
 * Classification labels are integers >= 0 stored as float; regression labels
 * are any finite float and classes is 0.  Fashion-MNIST also reads
 * uncompressed IDX files when the .gz name is absent, and any MNIST-layout
 * folder given as data_dir (e.g. the original MNIST).
 */
#ifndef WKR_DATA_H
#define WKR_DATA_H

#include <stddef.h>

#define WKR_FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
/* Largest feature count accepted (also caps LIBSVM indices). */
#define WKR_DATA_MAX_FEATURES (1 << 24)
/* Largest class count; labels up to this are exact in a float. */
#define WKR_DATA_MAX_CLASSES (1 << 24)
/* Largest sizes a text file may imply when --features / --classes are 0
 * (docs/operations.md, "Data files: inferred sizes"): rows are dense, so one line
 * "1 16777216:1" would otherwise ask for a 64 MiB row and a model to
 * match, and one label 16000000 for 16 million classes.  Beyond them the
 * load fails naming PATH:LINE and the flag that lifts the cap. */
#define WKR_DATA_INFER_MAX_FEATURES (1 << 20)
#define WKR_DATA_INFER_MAX_CLASSES (1 << 16)

typedef struct {
    float *x;     /* n x features, row-major, owned by the dataset */
    float *y;     /* n labels: exact integer class index stored as float,
                   * or a real regression target */
    size_t n;     /* samples kept in this shard */
    size_t total; /* samples in the whole file, all shards together */
    int features;
    int classes; /* number of classes; 0 for regression */
} wkr_dataset_t;

typedef struct {
    const char *data_dir; /* fashion-mnist folder; NULL = WKR_FMNIST_DEFAULT_DIR */
    int features;         /* 0 = infer from the file */
    int classes;          /* 0 = infer as max label + 1; ignored when regression */
    int regression;       /* labels are real targets (the linear model); classes = 0 */
    int shard, nshards;   /* keep sample i (0-based, file order) iff i % nshards == shard;
                           * nshards 0 means 1 (a zeroed opts loads everything) */
} wkr_data_opts_t;

/* spec: "fashion-mnist" | "libsvm:PATH" | "csv:PATH".  test_split != 0
 * selects the t10k files for fashion-mnist (ignored for the file forms: the
 * caller passes the test file's own spec).  o may be NULL (all defaults). */
int wkr_data_load(wkr_dataset_t *ds, const char *spec, int test_split, const wkr_data_opts_t *o);

/* Frees x and y and zeroes ds; safe twice. */
void wkr_data_fini(wkr_dataset_t *ds);

#endif
