#include "wkr_data_idx.h"

#include "ps_bytes.h"
#include "ps_err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_LABEL_MAGIC 0x00000801u
#define IDX_IMAGE_MAGIC 0x00000803u
#define IDX_CHUNK 16384

typedef struct {
    gzFile gz;
    char path[PATH_MAX];
} idx_file_t;

static int idx_path(idx_file_t *f, const char *dir, const char *name, const char *ext)
{
    int len = snprintf(f->path, sizeof f->path, "%s/%s%s", dir, name, ext);
    if (len < 0 || (size_t)len >= sizeof f->path) {
        ps_error_set("%s: data directory path too long", dir);
        return PS_EINVAL;
    }
    return 0;
}

/* Opens DIR/NAME.gz, or DIR/NAME when only the uncompressed file exists
 * (gzread passes plain files through); a miss names the .gz path. */
static int idx_open(idx_file_t *f, const char *dir, const char *name)
{
    int rv = idx_path(f, dir, name, "");
    if (rv != 0) {
        return rv;
    }
    char plain[PATH_MAX];
    memcpy(plain, f->path, sizeof plain);
    if ((rv = idx_path(f, dir, name, ".gz")) != 0) {
        return rv;
    }
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && access(plain, F_OK) == 0) {
        memcpy(f->path, plain, sizeof plain);
        fd = open(f->path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            ps_error_set("%s: not found; install the Debian package dataset-fashion-mnist "
                         "or pass --data-dir DIR",
                         f->path);
            return PS_ENOENT;
        }
        ps_error_set("%s: cannot open: %s", f->path, strerror(e));
        return PS_EIO;
    }
    if ((f->gz = gzdopen(fd, "rb")) == NULL) {
        close(fd);
        ps_error_set("%s: cannot start zlib reader", f->path);
        return PS_ENOMEM;
    }
    gzbuffer(f->gz, 1u << 17);
    return 0;
}

static void idx_close(idx_file_t *f)
{
    if (f->gz != NULL) {
        gzclose_r(f->gz);
        f->gz = NULL;
    }
}

/* zlib's error text without the "<fd:N>: " prefix gzdopen gives it. */
static const char *idx_zerror(idx_file_t *f, int *zerr)
{
    const char *m = gzerror(f->gz, zerr);
    const char *sep = strstr(m, ": ");
    return m[0] == '<' && sep != NULL ? sep + 2 : m;
}

/* Sets the message for a read that got `got` of len bytes of `what`. */
static int idx_short(idx_file_t *f, int got, size_t len, const char *what)
{
    int zerr = Z_OK;
    const char *zmsg = idx_zerror(f, &zerr);
    if (zerr == Z_ERRNO) {
        ps_error_set("%s: read error in %s: %s", f->path, what, strerror(errno));
        return PS_EIO;
    }
    if (zerr != Z_OK) {
        /* A cut stream is a short read with Z_BUF_ERROR, not got < 0. */
        ps_error_set("%s: corrupt or truncated gzip data (reading %s): %s", f->path, what, zmsg);
        return PS_EFORMAT;
    }
    ps_error_set("%s: file ends early in %s (%d of %zu bytes; truncated)", f->path, what,
                 got < 0 ? 0 : got, len);
    return PS_EFORMAT;
}

/* Reads exactly len bytes; a short read is a truncated or corrupt file. */
static int idx_read(idx_file_t *f, void *buf, size_t len, const char *what)
{
    int got = gzread(f->gz, buf, (unsigned)len);
    if (got >= 0 && (size_t)got == len) {
        return 0;
    }
    return idx_short(f, got, len, what);
}

/* After the last record: nothing more, and the gzip trailer checks out
 * (zlib verifies the CRC and length only when asked for more). */
static int idx_expect_end(idx_file_t *f, uint32_t count)
{
    unsigned char b;
    int got = gzread(f->gz, &b, 1);
    int zerr = Z_OK;
    idx_zerror(f, &zerr);
    if (got > 0) {
        ps_error_set("%s: extra bytes after the %u records the header announces", f->path, count);
        return PS_EFORMAT;
    }
    if (got == 0 && zerr == Z_OK) {
        return 0;
    }
    return idx_short(f, got, 1, "the gzip trailer");
}

/* Reads a header of nwords big-endian u32 and checks the magic. */
static int idx_header(idx_file_t *f, uint32_t magic, uint32_t *w, int nwords)
{
    unsigned char h[16];
    int rv = idx_read(f, h, (size_t)nwords * 4, "the IDX header");
    if (rv != 0) {
        return rv;
    }
    for (int i = 0; i < nwords; i++) {
        w[i] = ps_get_u32_be(h + 4 * i);
    }
    if (w[0] != magic) {
        ps_error_set("%s: wrong IDX magic 0x%08x, expected 0x%08x", f->path, w[0], magic);
        return PS_EFORMAT;
    }
    return 0;
}

/* Streams every label: all must be 0..9; keeps the shard's when y != NULL. */
static int idx_labels_read(idx_file_t *f, uint32_t count, const wkr_data_shard_t *o, float *y)
{
    unsigned char buf[IDX_CHUNK];
    size_t k = 0;
    for (uint32_t i = 0; i < count;) {
        size_t len = count - i < IDX_CHUNK ? count - i : IDX_CHUNK;
        int rv = idx_read(f, buf, len, "the labels");
        if (rv != 0) {
            return rv;
        }
        for (size_t j = 0; j < len; j++, i++) {
            if (buf[j] > 9) {
                ps_error_set("%s: label %u of sample %u is beyond 9", f->path, buf[j], i);
                return PS_ERANGE;
            }
            if (y != NULL && i % o->nshards == o->shard) {
                y[k++] = (float)buf[j];
            }
        }
    }
    return y == NULL ? idx_expect_end(f, count) : 0;
}

/* Streams the images, converting this shard's rows to [0,1]. */
static int idx_images_read(idx_file_t *f, wkr_dataset_t *ds, const wkr_data_shard_t *o)
{
    size_t feat = (size_t)ds->features, k = 0;
    unsigned char *row = malloc(feat);
    if (row == NULL) {
        ps_error_set("%s: cannot allocate an image row", f->path);
        return PS_ENOMEM;
    }
    int rv = 0;
    for (size_t i = 0; i < ds->total && rv == 0; i++) {
        rv = idx_read(f, row, feat, "the images");
        if (rv != 0 || i % o->nshards != o->shard) {
            continue;
        }
        float *xr = ds->x + k++ * feat;
        for (size_t j = 0; j < feat; j++) {
            xr[j] = (float)row[j] / 255.0f;
        }
    }
    free(row);
    return rv == 0 ? idx_expect_end(f, (uint32_t)ds->total) : rv;
}

/* Checks the two headers against each other and the flags. */
static int idx_shape(idx_file_t *img, idx_file_t *lbl, wkr_dataset_t *ds, const wkr_data_shard_t *o)
{
    uint32_t iw[4], lw[2];
    int rv = idx_header(lbl, IDX_LABEL_MAGIC, lw, 2);
    if (rv == 0) {
        rv = idx_header(img, IDX_IMAGE_MAGIC, iw, 4);
    }
    if (rv != 0) {
        return rv;
    }
    if (iw[1] != lw[1]) {
        ps_error_set("%s: %u images but %s holds %u labels", img->path, iw[1], lbl->path, lw[1]);
        return PS_EFORMAT;
    }
    uint64_t feat = (uint64_t)iw[2] * iw[3];
    if (iw[1] == 0 || feat == 0 || feat > WKR_DATA_MAX_FEATURES) {
        ps_error_set("%s: bad IDX shape %u x %u x %u", img->path, iw[1], iw[2], iw[3]);
        return PS_EFORMAT;
    }
    if (o->features > 0 && (uint64_t)o->features != feat) {
        ps_error_set("%s: images have %llu features (%u x %u) but --features is %d", img->path,
                     (unsigned long long)feat, iw[2], iw[3], o->features);
        return PS_EINVAL;
    }
    ds->total = iw[1];
    ds->features = (int)feat;
    return 0;
}

static int idx_load_files(wkr_dataset_t *ds, idx_file_t *img, idx_file_t *lbl,
                          const wkr_data_shard_t *o)
{
    int rv = idx_shape(img, lbl, ds, o);
    uint32_t count = (uint32_t)ds->total;
    /* Validate the whole label file before sizing x from its count. */
    if (rv == 0) {
        rv = idx_labels_read(lbl, count, o, NULL);
    }
    if (rv == 0) {
        rv = wkr_data_shard_alloc(o, ds, img->path);
    }
    if (rv == 0 && gzrewind(lbl->gz) != 0) {
        ps_error_set("%s: cannot rewind", lbl->path);
        rv = PS_EIO;
    }
    uint32_t lw[2];
    if (rv == 0 && (rv = idx_header(lbl, IDX_LABEL_MAGIC, lw, 2)) == 0) {
        rv = idx_labels_read(lbl, count, o, ds->y);
    }
    if (rv == 0) {
        rv = idx_images_read(img, ds, o);
    }
    return rv;
}

int wkr_data_idx_load(wkr_dataset_t *ds, const char *dir, int test_split, const wkr_data_shard_t *o)
{
    const char *pre = test_split ? "t10k" : "train";
    char iname[64], lname[64];
    snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", pre);
    snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", pre);
    if (!o->regression && o->classes != 0 && o->classes != 10) {
        ps_error_set("%s: Fashion-MNIST has 10 classes but --classes is %d", dir, o->classes);
        return PS_EINVAL;
    }
    idx_file_t img = {0}, lbl = {0};
    int rv = idx_open(&img, dir, iname);
    if (rv == 0) {
        rv = idx_open(&lbl, dir, lname);
    }
    if (rv == 0) {
        rv = idx_load_files(ds, &img, &lbl, o);
    }
    idx_close(&lbl);
    idx_close(&img);
    if (rv != 0) {
        return rv;
    }
    ds->classes = o->regression ? 0 : 10;
    return 0;
}
