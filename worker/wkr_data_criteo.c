#include "wkr_data_criteo.h"

#include "ps_err.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float y;
    float dense[WKR_CRITEO_INTS];
    uint64_t keys[WKR_CRITEO_CATS];
    size_t nnz;
} crow_t;

/* Splits s at tabs in place; the field count (may exceed max: only the
 * first max are stored). */
static int split_tabs(char *s, char **f, int max)
{
    int n = 0;
    for (;;) {
        char *tab = strchr(s, '\t');
        if (n < max) {
            f[n] = s;
        }
        n++;
        if (tab == NULL) {
            return n;
        }
        *tab = '\0';
        s = tab + 1;
    }
}

static int c_label(const wkr_lines_t *in, const char *s, float *y)
{
    if ((s[0] != '0' && s[0] != '1') || s[1] != '\0') {
        ps_error_set("%s:%zu: field 1 (label) '%.40s': want 0 or 1", in->path, in->lineno, s);
        return PS_EFORMAT;
    }
    *y = (float)(s[0] - '0');
    return 0;
}

/* Integer field k (0-based among the 13); empty = missing = 0. */
static int c_int(const wkr_lines_t *in, const char *s, int k, float *out)
{
    if (*s == '\0') {
        *out = 0.0f;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || s[0] == ' ' || s[0] == '\t' || errno == ERANGE) {
        ps_error_set("%s:%zu: field %d (integer I%d) '%.40s' is not an integer", in->path,
                     in->lineno, k + 2, k + 1, s);
        return PS_EFORMAT;
    }
    *out = (float)log1p(v > 0 ? (double)v : 0.0);
    return 0;
}

/* Categorical field k (0-based among the 26): 8 hex digits or empty. */
static int c_cat(const wkr_lines_t *in, const char *s, int k, crow_t *row)
{
    if (*s == '\0') {
        return 0;
    }
    if (strlen(s) != 8 || strspn(s, "0123456789abcdefABCDEF") != 8) {
        ps_error_set("%s:%zu: field %d (categorical C%d) '%.40s' is not 8 hex digits", in->path,
                     in->lineno, k + 2 + WKR_CRITEO_INTS, k + 1, s);
        return PS_EFORMAT;
    }
    uint64_t h = strtoull(s, NULL, 16);
    row->keys[row->nnz++] = ((uint64_t)(k + 1) << 32) + h;
    return 0;
}

static int c_line(const wkr_lines_t *in, char *s, crow_t *row)
{
    char *f[WKR_CRITEO_FIELDS];
    int n = split_tabs(s, f, WKR_CRITEO_FIELDS), rv;
    if (n != WKR_CRITEO_FIELDS) {
        ps_error_set("%s:%zu: %d tab-separated fields, want %d (label, %d integer, %d "
                     "categorical)",
                     in->path, in->lineno, n, WKR_CRITEO_FIELDS, WKR_CRITEO_INTS, WKR_CRITEO_CATS);
        return PS_EFORMAT;
    }
    if ((rv = c_label(in, f[0], &row->y)) != 0) {
        return rv;
    }
    for (int k = 0; k < WKR_CRITEO_INTS; k++) {
        if ((rv = c_int(in, f[1 + k], k, &row->dense[k])) != 0) {
            return rv;
        }
    }
    row->nnz = 0;
    for (int k = 0; k < WKR_CRITEO_CATS; k++) {
        if ((rv = c_cat(in, f[1 + WKR_CRITEO_INTS + k], k, row)) != 0) {
            return rv;
        }
    }
    return 0;
}

int wkr_data_criteo_load(wkr_sparse_ds_t *ds, const char *path, const wkr_data_shard_t *r)
{
    wkr_lines_t in;
    crow_t row;
    char *s;
    ds->ndense = WKR_CRITEO_INTS;
    int rv = wkr_lines_open(&in, path);
    while (rv == 0 && (rv = wkr_lines_next(&in, &s)) > 0) {
        rv = 0;
        if (s[strspn(s, " ")] == '\0') {
            continue;
        }
        if ((rv = c_line(&in, s, &row)) == 0 && ds->total++ % r->nshards == r->shard) {
            rv = wkr_data_sparse_append(ds, row.y, row.keys, NULL, row.nnz, row.dense);
        }
    }
    wkr_lines_close(&in);
    return rv;
}
