#include "wkr_data_text.h"

#include "wkr_lines.h"

#include "ps_err.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* Pass 1 validates every line and infers the shape; pass 2 re-reads the
 * file and parses only this shard's rows, so x holds only the shard and
 * never grows by reallocation. */

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

typedef struct {
    const char *path;
    wkr_data_text_fmt_t fmt;
    wkr_data_shard_t o;
    wkr_lines_t in;     /* in.lineno: the line being parsed */
    int content_seen;   /* a non-blank, non-comment line was read */
    size_t header_line; /* CSV header line, 0 if none */
    long cols;          /* CSV columns per row, 0 until the first row */
    size_t cols_line;   /* line that fixed cols */
    long max_index;     /* LIBSVM largest index seen */
    long max_label;
    size_t total;
} txt_t;

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
                     t->path, t->in.lineno, tok);
        return PS_EFORMAT;
    }
    if (v < 0.0f) {
        ps_error_set("%s:%zu: label %.0f is negative; class labels are 0..C-1 "
                     "(map -1/+1 labels to 0/1)",
                     t->path, t->in.lineno, (double)v);
        return PS_ERANGE;
    }
    if (v >= (float)WKR_DATA_MAX_CLASSES) {
        ps_error_set("%s:%zu: label %.0f is beyond the limit of %d classes", t->path, t->in.lineno,
                     (double)v, WKR_DATA_MAX_CLASSES);
        return PS_ERANGE;
    }
    if (t->o.classes == 0 && v >= (float)WKR_DATA_INFER_MAX_CLASSES) {
        ps_error_set("%s:%zu: label %.0f would make %.0f classes, more than the %d inferred "
                     "from labels at most; pass --classes if the data has that many",
                     t->path, t->in.lineno, (double)v, (double)v + 1, WKR_DATA_INFER_MAX_CLASSES);
        return PS_ERANGE;
    }
    if (t->o.classes > 0 && v >= (float)t->o.classes) {
        ps_error_set("%s:%zu: label %.0f is out of range for %d classes (0..%d)", t->path,
                     t->in.lineno, (double)v, t->o.classes, t->o.classes - 1);
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
        ps_error_set("%s:%zu: bad label '%.40s' (not a finite number)", t->path, t->in.lineno, tok);
        return PS_EFORMAT;
    }
    return label_check(t, tok, *y);
}

/* The index of an "idx:val" pair (tok ends at the colon); prev is the
 * previous index on the line, 0 for the first. */
static int svm_index(txt_t *t, const char *tok, long prev, long *idx)
{
    char *end;
    errno = 0;
    long i = strtol(tok, &end, 10);
    if (end == tok || *end != '\0') {
        ps_error_set("%s:%zu: bad feature index '%.40s'", t->path, t->in.lineno, tok);
        return PS_EFORMAT;
    }
    if (errno == ERANGE || i > WKR_DATA_MAX_FEATURES) {
        ps_error_set("%s:%zu: feature index %.40s is beyond the limit %d", t->path, t->in.lineno,
                     tok, WKR_DATA_MAX_FEATURES);
        return PS_ERANGE;
    }
    if (i < 1) {
        ps_error_set("%s:%zu: feature index %ld: indices are 1-based", t->path, t->in.lineno, i);
        return PS_EFORMAT;
    }
    if (i <= prev) {
        ps_error_set("%s:%zu: feature index %ld after %ld: indices must be strictly increasing",
                     t->path, t->in.lineno, i, prev);
        return PS_EFORMAT;
    }
    if (t->o.features > 0 && i > t->o.features) {
        ps_error_set("%s:%zu: feature index %ld is beyond --features %d", t->path, t->in.lineno, i,
                     t->o.features);
        return PS_ERANGE;
    }
    if (t->o.features == 0 && i > WKR_DATA_INFER_MAX_FEATURES) {
        ps_error_set("%s:%zu: feature index %ld, more than the %d features inferred from a "
                     "file at most (rows are dense); pass --features if the data is that wide",
                     t->path, t->in.lineno, i, WKR_DATA_INFER_MAX_FEATURES);
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
        ps_error_set("%s:%zu: expected index:value, got '%.40s'", t->path, t->in.lineno, tok);
        return PS_EFORMAT;
    }
    *colon = '\0';
    int rv = svm_index(t, tok, prev, idx);
    if (rv != 0) {
        return rv;
    }
    if (float_parse(colon + 1, val) != 0) {
        ps_error_set("%s:%zu: bad value '%.40s' for feature index %ld", t->path, t->in.lineno,
                     colon + 1, *idx);
        return PS_EFORMAT;
    }
    return 0;
}

/* One LIBSVM sample line; xrow (NULL = validate only) has o.features slots. */
static int svm_parse(txt_t *t, char *s, float *xrow, float *y)
{
    char *tok = wkr_lines_token(&s);
    int rv = label_parse(t, tok, y);
    if (rv != 0) {
        return rv;
    }
    long prev = 0;
    while ((tok = wkr_lines_token(&s)) != NULL) {
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
                         t->in.lineno, cols);
            return PS_EFORMAT;
        }
        if (t->o.features > 0 && cols - 1 != t->o.features) {
            ps_error_set("%s:%zu: %ld feature columns but --features is %d", t->path, t->in.lineno,
                         cols - 1, t->o.features);
            return PS_EINVAL;
        }
        if (t->o.features == 0 && cols - 1 > WKR_DATA_INFER_MAX_FEATURES) {
            ps_error_set("%s:%zu: %ld feature columns, more than the %d features inferred from "
                         "a file at most; pass --features %ld if the data is that wide",
                         t->path, t->in.lineno, cols - 1, WKR_DATA_INFER_MAX_FEATURES, cols - 1);
            return PS_ERANGE;
        }
        t->cols = cols;
        t->cols_line = t->in.lineno;
        return 0;
    }
    if (cols != t->cols) {
        ps_error_set("%s:%zu: %ld columns, expected %ld as on line %zu", t->path, t->in.lineno,
                     cols, t->cols, t->cols_line);
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
            ps_error_set("%s:%zu: column %ld: bad number '%.40s'", t->path, t->in.lineno, col + 1,
                         f);
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
    return t->fmt == WKR_DATA_CSV ? csv_parse(t, s, xrow, y) : svm_parse(t, s, xrow, y);
}

/* Pass 1: validate every line, count samples, find the shape. */
static int txt_scan(txt_t *t)
{
    char *s;
    int rv;
    while ((rv = wkr_lines_next(&t->in, &s)) > 0) {
        if (line_is_skip(s)) {
            continue;
        }
        int first = !t->content_seen;
        t->content_seen = 1;
        if (first && t->fmt == WKR_DATA_CSV && csv_is_header(s)) {
            t->header_line = t->in.lineno;
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
    long f = t->fmt == WKR_DATA_CSV ? t->cols - 1 : t->max_index;
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
    int rv = wkr_lines_rewind(&t->in);
    if (rv != 0) {
        return rv;
    }
    /* Pass 2 checks against the final shape, so it never writes past a row. */
    t->o.features = ds->features;
    t->o.classes = ds->classes;
    size_t i = 0, k = 0;
    char *s;
    while ((rv = wkr_lines_next(&t->in, &s)) > 0) {
        if (line_is_skip(s) || t->in.lineno == t->header_line) {
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

int wkr_data_text_load(wkr_dataset_t *ds, const char *path, wkr_data_text_fmt_t fmt,
                       const wkr_data_shard_t *o)
{
    txt_t t = {.path = path, .fmt = fmt, .o = *o, .max_label = -1};
    int rv = wkr_lines_open(&t.in, path);
    if (rv != 0) {
        return rv;
    }
    rv = txt_scan(&t);
    if (rv == 0) {
        rv = txt_shape(&t, ds);
    }
    if (rv == 0) {
        rv = wkr_data_shard_alloc(o, ds, path);
    }
    if (rv == 0) {
        rv = txt_fill(&t, ds);
    }
    wkr_lines_close(&t.in);
    return rv;
}
