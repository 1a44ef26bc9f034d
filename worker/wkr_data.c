#include "wkr_data.h"

#include "ps_bytes.h"
#include "ps_err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Options after defaults and validation. */
typedef struct {
    int features; /* 0 = infer */
    int classes;  /* 0 = infer; always 0 for regression */
    int regression;
    size_t shard, nshards;
} opts_t;

void wkr_data_fini(wkr_dataset_t *ds)
{
    if (ds == NULL) {
        return;
    }
    free(ds->x);
    free(ds->y);
    memset(ds, 0, sizeof *ds);
}

static int opts_resolve(const wkr_data_opts_t *o, opts_t *r)
{
    static const wkr_data_opts_t zero;
    if (o == NULL) {
        o = &zero;
    }
    memset(r, 0, sizeof *r);
    if (o->features < 0 || o->features > WKR_DATA_MAX_FEATURES) {
        ps_error_set("--features %d is outside 1..%d", o->features, WKR_DATA_MAX_FEATURES);
        return PS_EINVAL;
    }
    if (!o->regression &&
        (o->classes < 0 || o->classes == 1 || o->classes > WKR_DATA_MAX_CLASSES)) {
        ps_error_set("--classes %d is outside 2..%d", o->classes, WKR_DATA_MAX_CLASSES);
        return PS_EINVAL;
    }
    /* A zeroed opts struct means "one shard": the whole file. */
    int nshards = o->nshards == 0 ? 1 : o->nshards;
    if (nshards < 0 || o->shard < 0 || o->shard >= nshards) {
        ps_error_set("data shard %d of %d is out of range", o->shard, o->nshards);
        return PS_EINVAL;
    }
    r->features = o->features;
    r->classes = o->regression ? 0 : o->classes;
    r->regression = o->regression != 0;
    r->shard = (size_t)o->shard;
    r->nshards = (size_t)nshards;
    return 0;
}

/* Samples i < total with i % nshards == shard. */
static size_t shard_rows(size_t total, const opts_t *o)
{
    return total > o->shard ? (total - o->shard - 1) / o->nshards + 1 : 0;
}

/* Sizes the dataset for its shard once `total` and the shape are known.
 * x is zeroed because LIBSVM rows only set their listed features. */
static int rows_alloc(wkr_dataset_t *ds, const char *path, const opts_t *o)
{
    size_t n = shard_rows(ds->total, o);
    if (n == 0) {
        /* A worker without data cannot take part in training. */
        ps_error_set("%s: %zu samples leave data shard %zu of %zu empty", path, ds->total, o->shard,
                     o->nshards);
        return PS_ERANGE;
    }
    size_t f = (size_t)ds->features;
    if (n > SIZE_MAX / sizeof(float) / f) {
        ps_error_set("%s: %zu samples x %zu features overflow memory size", path, n, f);
        return PS_ENOMEM;
    }
    ds->x = calloc(n * f, sizeof(float));
    ds->y = calloc(n, sizeof(float));
    if (ds->x == NULL || ds->y == NULL) {
        ps_error_set("%s: cannot allocate %zu samples x %zu features (%.1f MiB)", path, n, f,
                     (double)n * (double)f * 4.0 / 1048576.0);
        return PS_ENOMEM;
    }
    ds->n = n;
    return 0;
}

/* Whole-string float parse: trailing blanks allowed, nothing else; only
 * finite values (strtof also accepts "nan" and "inf"). */
static int float_parse(const char *s, float *out)
{
    char *end;
    float v = strtof(s, &end);
    if (end == s) {
        return -1;
    }
    while (*end == ' ' || *end == '\t') {
        end++;
    }
    if (*end != '\0' || !isfinite(v)) {
        return -1;
    }
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------------
 * Text formats (LIBSVM, CSV): pass 1 validates every line and infers the
 * shape; pass 2 re-reads the file and parses only this shard's rows, so x
 * holds only the shard and never grows by reallocation.
 * ------------------------------------------------------------------- */

enum { FMT_LIBSVM, FMT_CSV };

typedef struct {
    const char *path;
    int fmt;
    opts_t o;
    FILE *fp;
    char *line;
    size_t cap;
    size_t lineno;
    int content_seen;   /* a non-blank, non-comment line was read */
    size_t header_line; /* CSV header line, 0 if none */
    long cols;          /* CSV columns per row, 0 until the first row */
    size_t cols_line;   /* line that fixed cols */
    long max_index;     /* LIBSVM largest index seen */
    long max_label;
    size_t total;
} txt_t;

/* Next line without its end of line, in *s; 1 = a line, 0 = end of file. */
static int txt_next(txt_t *t, char **s)
{
    errno = 0;
    ssize_t len = getline(&t->line, &t->cap, t->fp);
    if (len < 0) {
        if (ferror(t->fp)) {
            ps_error_set("%s:%zu: read error: %s", t->path, t->lineno + 1,
                         strerror(errno ? errno : EIO));
            return PS_EIO;
        }
        return 0;
    }
    t->lineno++;
    if (memchr(t->line, '\0', (size_t)len) != NULL) {
        ps_error_set("%s:%zu: NUL byte in a text line (binary file?)", t->path, t->lineno);
        return PS_EFORMAT;
    }
    while (len > 0 && (t->line[len - 1] == '\n' || t->line[len - 1] == '\r')) {
        t->line[--len] = '\0';
    }
    *s = t->line;
    return 1;
}

/* Blank lines and lines starting with '#' carry no sample. */
static int line_is_skip(const char *s)
{
    s += strspn(s, " \t");
    return *s == '\0' || *s == '#';
}

/* Checks a parsed label against the task; records the largest. */
static int label_check(txt_t *t, const char *tok, float v)
{
    if (t->o.regression) {
        return 0;
    }
    if (v != floorf(v)) {
        ps_error_set("%s:%zu: label '%.40s' is not an integer class index "
                     "(use regression for real-valued targets)",
                     t->path, t->lineno, tok);
        return PS_EFORMAT;
    }
    if (v < 0.0f) {
        ps_error_set("%s:%zu: label %.0f is negative; class labels are 0..C-1 "
                     "(map -1/+1 labels to 0/1)",
                     t->path, t->lineno, (double)v);
        return PS_ERANGE;
    }
    if (v >= (float)WKR_DATA_MAX_CLASSES) {
        ps_error_set("%s:%zu: label %.0f is beyond the limit of %d classes", t->path, t->lineno,
                     (double)v, WKR_DATA_MAX_CLASSES);
        return PS_ERANGE;
    }
    if (t->o.classes > 0 && v >= (float)t->o.classes) {
        ps_error_set("%s:%zu: label %.0f is out of range for %d classes (0..%d)", t->path,
                     t->lineno, (double)v, t->o.classes, t->o.classes - 1);
        return PS_ERANGE;
    }
    if ((long)v > t->max_label) {
        t->max_label = (long)v;
    }
    return 0;
}

static int label_parse(txt_t *t, const char *tok, float *y)
{
    if (float_parse(tok, y) != 0) {
        ps_error_set("%s:%zu: bad label '%.40s' (not a finite number)", t->path, t->lineno, tok);
        return PS_EFORMAT;
    }
    return label_check(t, tok, *y);
}

/* Next blank-separated token, NUL-terminated in place; NULL at the end. */
static char *tok_next(char **s)
{
    char *p = *s + strspn(*s, " \t");
    if (*p == '\0') {
        return NULL;
    }
    char *e = p + strcspn(p, " \t");
    *s = *e ? e + 1 : e;
    *e = '\0';
    return p;
}

/* The index of an "idx:val" pair (tok ends at the colon); prev is the
 * previous index on the line, 0 for the first. */
static int svm_index(txt_t *t, const char *tok, long prev, long *idx)
{
    char *end;
    errno = 0;
    long i = strtol(tok, &end, 10);
    if (end == tok || *end != '\0') {
        ps_error_set("%s:%zu: bad feature index '%.40s'", t->path, t->lineno, tok);
        return PS_EFORMAT;
    }
    if (errno == ERANGE || i > WKR_DATA_MAX_FEATURES) {
        ps_error_set("%s:%zu: feature index %.40s is beyond the limit %d", t->path, t->lineno, tok,
                     WKR_DATA_MAX_FEATURES);
        return PS_ERANGE;
    }
    if (i < 1) {
        ps_error_set("%s:%zu: feature index %ld: indices are 1-based", t->path, t->lineno, i);
        return PS_EFORMAT;
    }
    if (i <= prev) {
        ps_error_set("%s:%zu: feature index %ld after %ld: indices must be strictly increasing",
                     t->path, t->lineno, i, prev);
        return PS_EFORMAT;
    }
    if (t->o.features > 0 && i > t->o.features) {
        ps_error_set("%s:%zu: feature index %ld is beyond --features %d", t->path, t->lineno, i,
                     t->o.features);
        return PS_ERANGE;
    }
    *idx = i;
    return 0;
}

/* One LIBSVM "idx:val" pair. */
static int svm_pair(txt_t *t, char *tok, long prev, long *idx, float *val)
{
    char *colon = strchr(tok, ':');
    if (colon == NULL) {
        ps_error_set("%s:%zu: expected index:value, got '%.40s'", t->path, t->lineno, tok);
        return PS_EFORMAT;
    }
    *colon = '\0';
    int rv = svm_index(t, tok, prev, idx);
    if (rv != 0) {
        return rv;
    }
    if (float_parse(colon + 1, val) != 0) {
        ps_error_set("%s:%zu: bad value '%.40s' for feature index %ld", t->path, t->lineno,
                     colon + 1, *idx);
        return PS_EFORMAT;
    }
    return 0;
}

/* One LIBSVM sample line; xrow (NULL = validate only) has o.features slots. */
static int svm_parse(txt_t *t, char *s, float *xrow, float *y)
{
    char *tok = tok_next(&s);
    int rv = label_parse(t, tok, y);
    if (rv != 0) {
        return rv;
    }
    long prev = 0;
    while ((tok = tok_next(&s)) != NULL) {
        /* svmlight allows a trailing "# comment" on a sample line. */
        if (tok[0] == '#') {
            break;
        }
        long idx;
        float v;
        if ((rv = svm_pair(t, tok, prev, &idx, &v)) != 0) {
            return rv;
        }
        if (xrow != NULL) {
            xrow[idx - 1] = v;
        }
        prev = idx;
    }
    if (prev > t->max_index) {
        t->max_index = prev;
    }
    return 0;
}

/* Fixes the column count on the first row; every later row must match. */
static int csv_cols_check(txt_t *t, long cols)
{
    if (t->cols == 0) {
        if (cols < 2) {
            ps_error_set("%s:%zu: %ld column(s): need a label and at least one feature", t->path,
                         t->lineno, cols);
            return PS_EFORMAT;
        }
        if (t->o.features > 0 && cols - 1 != t->o.features) {
            ps_error_set("%s:%zu: %ld feature columns but --features is %d", t->path, t->lineno,
                         cols - 1, t->o.features);
            return PS_EINVAL;
        }
        t->cols = cols;
        t->cols_line = t->lineno;
        return 0;
    }
    if (cols != t->cols) {
        ps_error_set("%s:%zu: %ld columns, expected %ld as on line %zu", t->path, t->lineno, cols,
                     t->cols, t->cols_line);
        return PS_EFORMAT;
    }
    return 0;
}

/* One CSV sample line; xrow (NULL = validate only) has cols - 1 slots. */
static int csv_parse(txt_t *t, char *s, float *xrow, float *y)
{
    long col = 0;
    for (char *f = s;; col++) {
        char *comma = strchr(f, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        int rv = 0;
        float v;
        if (col == 0) {
            rv = label_parse(t, f, y);
        } else if (float_parse(f, &v) != 0) {
            ps_error_set("%s:%zu: column %ld: bad number '%.40s'", t->path, t->lineno, col + 1, f);
            rv = PS_EFORMAT;
        } else if (xrow != NULL && col < t->cols) {
            xrow[col - 1] = v; /* col < cols: a changed file cannot overrun */
        }
        if (rv != 0) {
            return rv;
        }
        if (comma == NULL) {
            break;
        }
        f = comma + 1;
    }
    return csv_cols_check(t, col + 1);
}

/* A CSV header is the first content line when its first field is no number. */
static int csv_is_header(const char *s)
{
    char first[64];
    size_t len = strcspn(s, ",");
    if (len >= sizeof first) {
        return 1; /* no number is that long */
    }
    memcpy(first, s, len);
    first[len] = '\0';
    float v;
    return float_parse(first, &v) != 0;
}

static long csv_count_cols(const char *s)
{
    long cols = 1;
    for (; *s; s++) {
        cols += *s == ',';
    }
    return cols;
}

static int row_parse(txt_t *t, char *s, float *xrow, float *y)
{
    return t->fmt == FMT_CSV ? csv_parse(t, s, xrow, y) : svm_parse(t, s, xrow, y);
}

/* Pass 1: validate every line, count samples, find the shape. */
static int txt_scan(txt_t *t)
{
    char *s;
    int rv;
    while ((rv = txt_next(t, &s)) > 0) {
        if (line_is_skip(s)) {
            continue;
        }
        int first = !t->content_seen;
        t->content_seen = 1;
        if (first && t->fmt == FMT_CSV && csv_is_header(s)) {
            t->header_line = t->lineno;
            if ((rv = csv_cols_check(t, csv_count_cols(s))) != 0) {
                return rv;
            }
            continue;
        }
        float y;
        if ((rv = row_parse(t, s, NULL, &y)) != 0) {
            return rv;
        }
        t->total++;
    }
    return rv;
}

/* Features and classes from the flags or from what pass 1 saw. */
static int txt_shape(txt_t *t, wkr_dataset_t *ds)
{
    if (t->total == 0) {
        ps_error_set("%s: no samples (empty, or only blank, comment or header lines)", t->path);
        return PS_EFORMAT;
    }
    long f = t->fmt == FMT_CSV ? t->cols - 1 : t->max_index;
    if (t->o.features > 0) {
        f = t->o.features;
    }
    if (f < 1) {
        ps_error_set("%s: no feature index on any line; pass --features", t->path);
        return PS_EFORMAT;
    }
    ds->features = (int)f;
    ds->total = t->total;
    if (t->o.regression) {
        ds->classes = 0;
        return 0;
    }
    ds->classes = t->o.classes > 0 ? t->o.classes : (int)(t->max_label + 1);
    if (ds->classes < 2) {
        ps_error_set("%s: every label is %ld: classification needs at least 2 classes "
                     "(pass --classes, or use regression)",
                     t->path, t->max_label);
        return PS_EFORMAT;
    }
    return 0;
}

/* Pass 2: parse only this shard's rows into ds. */
static int txt_fill(txt_t *t, wkr_dataset_t *ds)
{
    if (fseek(t->fp, 0, SEEK_SET) != 0) {
        ps_error_set("%s: cannot rewind for the second pass: %s", t->path, strerror(errno));
        return PS_EIO;
    }
    /* Pass 2 checks against the final shape, so it never writes past a row. */
    t->o.features = ds->features;
    t->o.classes = ds->classes;
    t->lineno = 0;
    size_t i = 0, k = 0;
    char *s;
    int rv;
    while ((rv = txt_next(t, &s)) > 0) {
        if (line_is_skip(s) || t->lineno == t->header_line) {
            continue;
        }
        if (i++ % t->o.nshards != t->o.shard) {
            continue;
        }
        if (k == ds->n) {
            break;
        }
        rv = row_parse(t, s, ds->x + k * (size_t)ds->features, &ds->y[k]);
        if (rv != 0) {
            return rv;
        }
        k++;
    }
    if (rv < 0) {
        return rv;
    }
    if (i != ds->total || k != ds->n) {
        ps_error_set("%s: the file changed while it was being read", t->path);
        return PS_EIO;
    }
    return 0;
}

static int txt_load(wkr_dataset_t *ds, const char *path, int fmt, const opts_t *o)
{
    txt_t t = {.path = path, .fmt = fmt, .o = *o, .max_label = -1};
    t.fp = fopen(path, "r");
    if (t.fp == NULL) {
        int e = errno;
        ps_error_set("%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? PS_ENOENT : PS_EIO;
    }
    int rv = txt_scan(&t);
    if (rv == 0) {
        rv = txt_shape(&t, ds);
    }
    if (rv == 0) {
        rv = rows_alloc(ds, path, o);
    }
    if (rv == 0) {
        rv = txt_fill(&t, ds);
    }
    free(t.line);
    fclose(t.fp);
    if (rv != 0) {
        wkr_data_fini(ds);
    }
    return rv;
}

/* ---------------------------------------------------------------------
 * IDX (MNIST layout) through zlib.  The labels file is read first, in
 * full, so its count is proven by real data before x is sized from it.
 * ------------------------------------------------------------------- */

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
static int idx_labels_read(idx_file_t *f, uint32_t count, const opts_t *o, float *y)
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
static int idx_images_read(idx_file_t *f, wkr_dataset_t *ds, const opts_t *o)
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
static int idx_shape(idx_file_t *img, idx_file_t *lbl, wkr_dataset_t *ds, const opts_t *o)
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

static int idx_load_files(wkr_dataset_t *ds, idx_file_t *img, idx_file_t *lbl, const opts_t *o)
{
    int rv = idx_shape(img, lbl, ds, o);
    uint32_t count = (uint32_t)ds->total;
    /* Validate the whole label file before sizing x from its count. */
    if (rv == 0) {
        rv = idx_labels_read(lbl, count, o, NULL);
    }
    if (rv == 0) {
        rv = rows_alloc(ds, img->path, o);
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

static int idx_load(wkr_dataset_t *ds, const char *dir, int test_split, const opts_t *o)
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
        wkr_data_fini(ds);
        return rv;
    }
    ds->classes = o->regression ? 0 : 10;
    return 0;
}

int wkr_data_load(wkr_dataset_t *ds, const char *spec, int test_split, const wkr_data_opts_t *o)
{
    if (ds == NULL || spec == NULL) {
        ps_error_set("wkr_data_load: NULL dataset or spec");
        return PS_EINVAL;
    }
    memset(ds, 0, sizeof *ds);
    opts_t r;
    int rv = opts_resolve(o, &r);
    if (rv != 0) {
        return rv;
    }
    if (strcmp(spec, "fashion-mnist") == 0) {
        const char *dir = o != NULL && o->data_dir != NULL ? o->data_dir : WKR_FMNIST_DEFAULT_DIR;
        return idx_load(ds, dir, test_split, &r);
    }
    int fmt = strncmp(spec, "libsvm:", 7) == 0 ? FMT_LIBSVM
              : strncmp(spec, "csv:", 4) == 0  ? FMT_CSV
                                               : -1;
    const char *path = fmt == FMT_LIBSVM ? spec + 7 : spec + 4;
    if (fmt < 0 || *path == '\0') {
        ps_error_set("unknown dataset '%s' (expected fashion-mnist, libsvm:PATH or csv:PATH)",
                     spec);
        return PS_EINVAL;
    }
    return txt_load(ds, path, fmt, &r);
}
