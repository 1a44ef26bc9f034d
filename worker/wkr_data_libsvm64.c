#include "wkr_data_libsvm64.h"

#include "ps_err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    wkr_lines_t in;
    uint64_t *keys;
    float *vals;
    size_t cap;
} svm_t;

/* 0/1 or -1/+1 as any number spelling ("+1", "1.0"); -1 becomes 0. */
static int svm_label(const svm_t *t, const char *tok, float *y)
{
    char *end;
    double v = strtod(tok, &end);
    if (end == tok || *end != '\0' || !(v == 0.0 || v == 1.0 || v == -1.0)) {
        ps_error_set("%s:%zu: label '%.40s': want 0/1 or -1/+1 (binary classification)", t->in.path,
                     t->in.lineno, tok);
        return PS_EFORMAT;
    }
    *y = v == 1.0 ? 1.0f : 0.0f;
    return 0;
}

/* Decimal digits only, 1 .. 2^63-1 (no sign, no spaces: strtoull would
 * take "-1" as 2^64-1). */
static int svm_index(const svm_t *t, const char *tok, uint64_t prev, uint64_t *out)
{
    uint64_t v = 0;
    if (*tok == '\0' || tok[strspn(tok, "0123456789")] != '\0') {
        ps_error_set("%s:%zu: feature index '%.40s' is not a positive integer", t->in.path,
                     t->in.lineno, tok);
        return PS_EFORMAT;
    }
    for (const char *p = tok; *p; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (WKR_SPARSE_MAX_KEY - d) / 10) {
            ps_error_set("%s:%zu: feature index %.40s is beyond 2^63-1", t->in.path, t->in.lineno,
                         tok);
            return PS_ERANGE;
        }
        v = v * 10 + d;
    }
    if (v == 0) {
        ps_error_set("%s:%zu: feature index 0: indices are positive (1-based)", t->in.path,
                     t->in.lineno);
        return PS_EFORMAT;
    }
    if (v <= prev) {
        ps_error_set("%s:%zu: feature index %llu after %llu: indices must be strictly increasing",
                     t->in.path, t->in.lineno, (unsigned long long)v, (unsigned long long)prev);
        return PS_EFORMAT;
    }
    *out = v;
    return 0;
}

/* One "idx:val" pair into entry k of the line buffers. */
static int svm_pair(svm_t *t, char *tok, size_t k)
{
    char *colon = strchr(tok, ':'), *end;
    if (colon == NULL) {
        ps_error_set("%s:%zu: expected index:value, got '%.40s'", t->in.path, t->in.lineno, tok);
        return PS_EFORMAT;
    }
    *colon = '\0';
    int rv = svm_index(t, tok, k ? t->keys[k - 1] : 0, &t->keys[k]);
    if (rv != 0) {
        return rv;
    }
    float v = strtof(colon + 1, &end);
    if (end == colon + 1 || *end != '\0' || !isfinite(v)) {
        ps_error_set("%s:%zu: bad value '%.40s' for feature index %s", t->in.path, t->in.lineno,
                     colon + 1, tok);
        return PS_EFORMAT;
    }
    t->vals[k] = v;
    return 0;
}

/* A line has at most (length + 1) / 4 pairs ("i:v" and a blank). */
static int svm_room(svm_t *t, size_t len)
{
    size_t need = len / 4 + 1;
    if (need <= t->cap) {
        return 0;
    }
    uint64_t *k = realloc(t->keys, need * sizeof *k);
    if (k) {
        t->keys = k;
    }
    float *v = k ? realloc(t->vals, need * sizeof *v) : NULL;
    if (!v) {
        ps_error_set("%s:%zu: no memory for a line of %zu bytes", t->in.path, t->in.lineno, len);
        return PS_ENOMEM;
    }
    t->vals = v;
    t->cap = need;
    return 0;
}

/* One sample line into the line buffers: *nnz entries, *y. */
static int svm_line(svm_t *t, char *s, float *y, size_t *nnz)
{
    int rv = svm_room(t, strlen(s));
    char *tok = wkr_lines_token(&s);
    if (rv == 0) {
        rv = svm_label(t, tok, y);
    }
    size_t k = 0;
    while (rv == 0 && (tok = wkr_lines_token(&s)) != NULL && tok[0] != '#') {
        rv = svm_pair(t, tok, k++);
    }
    *nnz = k;
    return rv;
}

int wkr_data_libsvm64_load(wkr_sparse_ds_t *ds, const char *path, const wkr_data_shard_t *r)
{
    svm_t t = {0};
    char *s;
    int rv = wkr_lines_open(&t.in, path);
    while (rv == 0 && (rv = wkr_lines_next(&t.in, &s)) > 0) {
        rv = 0;
        if (s[strspn(s, " \t")] == '\0' || s[strspn(s, " \t")] == '#') {
            continue;
        }
        float y;
        size_t nnz;
        if ((rv = svm_line(&t, s, &y, &nnz)) == 0 && ds->total++ % r->nshards == r->shard) {
            rv = wkr_data_sparse_append(ds, y, t.keys, t.vals, nnz, NULL);
        }
    }
    wkr_lines_close(&t.in);
    free(t.keys);
    free(t.vals);
    return rv;
}
