#include "ps_safetensors.h"

#include "ps_atomic.h"
#include "ps_bytes.h"
#include "ps_err.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* same limit as safetensors */
#define ST_HOST_LE (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
#define ST_META "__metadata__"

typedef struct {
    const char *name; /* a key of the header object, owned by it */
    int ndim;
    int64_t shape[PS_MAX_DIMS];
    uint64_t begin, end; /* byte offsets in the data section */
    int i64;             /* dtype I64, else F32 */
} st_entry_t;

struct ps_st_file {
    json_t *root;  /* the parsed header: owns every name and metadata string */
    json_t *meta;  /* its "__metadata__" object, or NULL */
    st_entry_t *t; /* in header order */
    int n;
    st_entry_t **by_name; /* sorted by name, for ps_st_get */
    uint8_t *data;        /* the data section, malloc'd: aligned for float */
    size_t data_len;
};

/* ---- shared helpers ------------------------------------------------------ */

/* jansson checks UTF-8 (strictly: no overlongs, no surrogates, as
 * safetensors' Rust parser) when it makes a string. */
static int utf8_valid(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

/* The one rule for a tensor name, shared by the writer and the reader so
 * that every file one accepts the other does too: non-empty, UTF-8, not the
 * reserved "__metadata__". */
static int tensor_name_valid(const char *name)
{
    return name != NULL && name[0] != '\0' && strcmp(name, ST_META) != 0 && utf8_valid(name);
}

/* ---- writing ------------------------------------------------------------- */

static int st_oom(void)
{
    ps_error_set("safetensors write: out of memory");
    return PS_ENOMEM;
}

/* "__metadata__" first, as safetensors' own writer puts it. */
static int add_meta(json_t *root, const char *const *meta, int nmeta)
{
    json_t *m = json_object();
    if (m == NULL || json_object_set_new(root, ST_META, m) != 0) {
        return st_oom();
    }
    for (int k = 0; k < nmeta; k++) {
        const char *key = meta[2 * k], *val = meta[2 * k + 1];
        json_t *s = key != NULL && val != NULL && utf8_valid(key) ? json_string(val) : NULL;
        if (s == NULL) {
            ps_error_set("safetensors write: metadata pair %d has a NULL or non-UTF-8 string", k);
            return PS_EINVAL;
        }
        if (json_object_get(m, key) != NULL) {
            json_decref(s);
            ps_error_set("safetensors write: duplicate metadata key '%s'", key);
            return PS_EINVAL;
        }
        if (json_object_set_new(m, key, s) != 0) {
            return st_oom();
        }
    }
    return 0;
}

/* Appends "name":{"dtype":"F32","shape":[...],"data_offsets":[begin,end]}
 * after checking the tensor; its data starts at *off, which moves past
 * it. */
static int add_tensor(json_t *root, const ps_st_tensor_t *t, int i64, int i, uint64_t *off)
{
    if (!tensor_name_valid(t->name)) {
        ps_error_set("safetensors write: tensor %d has a missing, reserved or non-UTF-8 name", i);
        return PS_EINVAL;
    }
    if (t->ndim < 0 || t->ndim > PS_MAX_DIMS || (t->ndim > 0 && t->shape == NULL)) {
        ps_error_set("safetensors write: tensor '%s' has %d dims (0..%d)", t->name, t->ndim,
                     PS_MAX_DIMS);
        return PS_EINVAL;
    }
    uint64_t numel = 1, end;
    json_t *shape = json_array();
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
            json_decref(shape);
            ps_error_set("safetensors write: tensor '%s' has a bad shape", t->name);
            return PS_EINVAL;
        }
        json_array_append_new(shape, json_integer(t->shape[d])); /* counted below */
    }
    if (numel > PS_MAX_ELEMS || (numel > 0 && t->data == NULL) ||
        __builtin_add_overflow(*off, numel * (i64 ? 8 : 4), &end) || end > INT64_MAX) {
        json_decref(shape);
        ps_error_set("safetensors write: tensor '%s': too large or no data", t->name);
        return PS_EINVAL;
    }
    if (json_object_get(root, t->name) != NULL) {
        json_decref(shape);
        ps_error_set("safetensors write: duplicate tensor name '%s'", t->name);
        return PS_EINVAL;
    }
    json_t *e = json_array_size(shape) != (size_t)t->ndim
                    ? NULL
                    : json_pack("{s:s,s:O,s:[I,I]}", "dtype", i64 ? "I64" : "F32", "shape", shape,
                                "data_offsets", (json_int_t)*off, (json_int_t)end);
    json_decref(shape);
    if (e == NULL || json_object_set_new(root, t->name, e) != 0) {
        return st_oom();
    }
    *off = end;
    return 0;
}

/* jansson writes a control character as \u001F; serde_json (safetensors'
 * own writer) writes \u001f, and so did this module: keep those bytes. */
static void lower_escapes(char *s)
{
    for (; *s != '\0'; s++) {
        if (s[0] == '\\' && s[1] == 'u') {
            for (int k = 2; k < 6; k++) {
                s[k] = (char)tolower((unsigned char)s[k]);
            }
            s += 5;
        } else if (s[0] == '\\') {
            s++;
        }
    }
}

/* The header text, compact, keys in insertion order; *len without the
 * padding. */
static int build_header(char **text, size_t *len, const ps_st_tensor_t *t, const int *i64, int n,
                        const char *const *meta, int nmeta)
{
    json_t *root = json_object();
    int rv = root == NULL ? st_oom() : 0;
    if (rv == 0 && nmeta > 0) {
        rv = add_meta(root, meta, nmeta);
    }
    uint64_t off = 0;
    for (int i = 0; i < n && rv == 0; i++) {
        rv = add_tensor(root, &t[i], i64 && i64[i], i, &off);
    }
    *text = rv == 0 ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (rv == 0 && *text == NULL) {
        rv = st_oom();
    }
    if (rv != 0) {
        return rv;
    }
    lower_escapes(*text);
    *len = strlen(*text);
    if (*len > ST_MAX_HEADER) { /* padded, it stays within: the limit is a multiple of 8 */
        ps_error_set("safetensors write: header too large (%zu bytes)", *len);
        return PS_EINVAL;
    }
    return 0;
}

static int write_i64s(FILE *f, const int64_t *d, size_t count)
{
    for (size_t i = 0; i < count; i++) { /* stdio buffers these */
        uint8_t le[8];
        ps_put_u64(le, (uint64_t)d[i]);
        if (fwrite(le, 1, 8, f) != 8) {
            return 0;
        }
    }
    return 1;
}

static int write_floats(FILE *f, const float *d, size_t count)
{
    if (ST_HOST_LE) {
        return count == 0 || fwrite(d, sizeof(float), count, f) == count;
    }
    for (size_t i = 0; i < count; i++) { /* stdio buffers these */
        uint8_t le[4];
        uint32_t u;
        memcpy(&u, &d[i], 4);
        ps_put_u32(le, u);
        if (fwrite(le, 1, 4, f) != 4) {
            return 0;
        }
    }
    return 1;
}

typedef struct {
    const char *text;
    size_t len;
    const ps_st_tensor_t *t;
    const int *i64;
    int n;
} st_body_t;

/* The length, the header padded with spaces so the data section starts
 * 8-byte aligned, the data. */
static int fill_body(FILE *f, void *arg)
{
    const st_body_t *b = arg;
    size_t pad = (8 - b->len % 8) % 8;
    uint8_t len[8];
    ps_put_u64(len, b->len + pad);
    int ok = fwrite(len, 1, 8, f) == 8 && fwrite(b->text, 1, b->len, f) == b->len &&
             fwrite("       ", 1, pad, f) == pad;
    for (int i = 0; i < b->n && ok; i++) {
        size_t numel = 1; /* add_tensor checked the product */
        for (int d = 0; d < b->t[i].ndim; d++) {
            numel *= (size_t)b->t[i].shape[d];
        }
        ok = b->i64 && b->i64[i] ? write_i64s(f, (const int64_t *)(const void *)b->t[i].data, numel)
                                 : write_floats(f, b->t[i].data, numel);
    }
    return ok ? 0 : PS_EIO;
}

int ps_st_write(const char *path, const ps_st_tensor_t *t, int n, const char *const *meta,
                int nmeta)
{
    return ps_st_write_typed(path, t, NULL, n, meta, nmeta);
}

int ps_st_write_typed(const char *path, const ps_st_tensor_t *t, const int *i64, int n,
                      const char *const *meta, int nmeta)
{
    if (n < 0 || nmeta < 0 || (n > 0 && t == NULL) || (nmeta > 0 && meta == NULL)) {
        ps_error_set("safetensors write: bad tensor or metadata count");
        return PS_EINVAL;
    }
    st_body_t body = {.t = t, .i64 = i64, .n = n};
    char *text = NULL;
    int rv = build_header(&text, &body.len, t, i64, n, meta, nmeta);
    if (rv == 0) {
        body.text = text;
        rv = ps_atomic_write(path, fill_body, &body);
    }
    free(text);
    return rv;
}

/* ---- reading: the JSON header ------------------------------------------ */

__attribute__((format(printf, 2, 3))) static int st_fail(const char *path, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ps_error_set("%s: %s", path, what);
    return PS_EFORMAT;
}

/* "a string", "an integer", ... for messages. */
static const char *json_kind(const json_t *v)
{
    static const char *const kind[] = {
        "an object", "an array", "a string", "an integer", "a fraction or exponent",
        "true",      "false",    "null"};
    return json_is_integer(v) && json_integer_value(v) < 0 ? "negative" : kind[json_typeof(v)];
}

/* An array of at most `max` non-negative integers.  jansson has already
 * refused integers past 2^63-1 ("too big integer"); "-0" reaches here as
 * 0 and is taken as 0. */
static int get_sizes(const char *path, const char *name, const char *what, json_t *a, int64_t *v,
                     int max, int *count)
{
    if (!json_is_array(a)) {
        return st_fail(path, "tensor '%s': %s is %s, not an array", name, what, json_kind(a));
    }
    *count = (int)json_array_size(a);
    if (json_array_size(a) > (size_t)max) {
        return st_fail(path, "tensor '%s': %s has more than %d elements (%zu)", name, what, max,
                       json_array_size(a));
    }
    for (int k = 0; k < *count; k++) {
        json_t *x = json_array_get(a, (size_t)k);
        if (!json_is_integer(x) || json_integer_value(x) < 0) {
            return st_fail(path, "tensor '%s': %s[%d] is %s, not a non-negative integer", name,
                           what, k, json_kind(x));
        }
        v[k] = json_integer_value(x);
    }
    return 0;
}

/* shape and data_offsets agree, inside a data section of data_len bytes. */
static int check_size(const char *path, const st_entry_t *e, size_t data_len)
{
    uint64_t numel = 1, span = e->end - e->begin;
    for (int d = 0; d < e->ndim; d++) {
        if (__builtin_mul_overflow(numel, (uint64_t)e->shape[d], &numel)) {
            return st_fail(path, "tensor '%s': shape overflows", e->name);
        }
    }
    if (e->end < e->begin) {
        return st_fail(path, "tensor '%s': data_offsets [%llu,%llu] end before they begin", e->name,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    }
    uint64_t elem = e->i64 ? 8 : 4;
    if (numel > span / elem || numel * elem != span) {
        return st_fail(path,
                       "tensor '%s': shape needs %llu elements but data_offsets span %llu bytes",
                       e->name, (unsigned long long)numel, (unsigned long long)span);
    }
    if (e->end > data_len) {
        return st_fail(path,
                       "tensor '%s': data_offsets [%llu,%llu] run past the %zu-byte data section",
                       e->name, (unsigned long long)e->begin, (unsigned long long)e->end, data_len);
    }
    return 0;
}

/* {"dtype":"F32","shape":[...],"data_offsets":[b,e]}, nothing else. */
static int parse_entry(const char *path, const char *name, json_t *obj, st_entry_t *e,
                       size_t data_len)
{
    json_error_t err;
    json_t *shape, *offsets;
    const char *dtype;
    if (json_unpack_ex(obj, &err, 0, "{s:s,s:o,s:o!}", "dtype", &dtype, "shape", &shape,
                       "data_offsets", &offsets) != 0) {
        return st_fail(path, "tensor '%s': %s (wanted dtype, shape and data_offsets)", name,
                       err.text);
    }
    if (strcmp(dtype, "F32") != 0 && strcmp(dtype, "I64") != 0) {
        return st_fail(path, "tensor '%s': dtype %s is not supported (only F32 and I64)", name,
                       dtype);
    }
    e->i64 = strcmp(dtype, "I64") == 0;
    int64_t off[2];
    int k;
    int rv = get_sizes(path, name, "shape", shape, e->shape, PS_MAX_DIMS, &e->ndim);
    if (rv == 0) {
        rv = get_sizes(path, name, "data_offsets", offsets, off, 2, &k);
    }
    if (rv == 0 && k != 2) {
        rv = st_fail(path, "tensor '%s': data_offsets needs 2 integers, has %d", name, k);
    }
    if (rv != 0) {
        return rv;
    }
    e->name = name;
    e->begin = (uint64_t)off[0];
    e->end = (uint64_t)off[1];
    return check_size(path, e, data_len);
}

/* safetensors metadata maps strings to strings. */
static int check_meta(const char *path, json_t *m)
{
    const char *key;
    json_t *v;
    if (!json_is_object(m)) {
        return st_fail(path, ST_META " is %s, not an object", json_kind(m));
    }
    json_object_foreach (m, key, v) {
        if (!json_is_string(v)) {
            return st_fail(path, ST_META " value of '%s' is %s, not a string", key, json_kind(v));
        }
    }
    return 0;
}

/* jansson parses strictly (UTF-8, no duplicate keys, no \u0000, nothing
 * after the object); then every member is checked here.  f->t and
 * f->by_name list the tensors in header order. */
static int parse_header(ps_st_file_t *f, const char *path, const char *hdr, size_t len)
{
    json_error_t err;
    f->root = json_loadb(hdr, len, JSON_REJECT_DUPLICATES, &err);
    if (f->root == NULL) {
        return st_fail(path, "bad safetensors header at byte %d: %s", err.position, err.text);
    }
    if (!json_is_object(f->root)) {
        return st_fail(path, "the header is %s, not an object", json_kind(f->root));
    }
    size_t cap = json_object_size(f->root) + 1;
    f->t = calloc(cap, sizeof *f->t);
    f->by_name = calloc(cap, sizeof *f->by_name);
    if (f->t == NULL || f->by_name == NULL) {
        ps_error_set("%s: out of memory", path);
        return PS_ENOMEM;
    }
    const char *key;
    json_t *v;
    json_object_foreach (f->root, key, v) {
        int rv;
        if (strcmp(key, ST_META) == 0) {
            f->meta = v;
            rv = check_meta(path, v);
        } else if (!tensor_name_valid(key)) {
            rv = st_fail(path, "tensor name '%s' is empty or not UTF-8", key);
        } else {
            f->by_name[f->n] = &f->t[f->n];
            rv = parse_entry(path, key, v, &f->t[f->n++], f->data_len);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* ---- reading: validation and the file ---------------------------------- */

static int cmp_entry_offset(const void *a, const void *b)
{
    const st_entry_t *x = *(st_entry_t *const *)a, *y = *(st_entry_t *const *)b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(st_entry_t *const *)a)->name, (*(st_entry_t *const *)b)->name);
}

/* Sorted by offset the tensors must tile [0, data_len) exactly, as
 * safetensors' own validate() requires.  Then by_name is sorted by name
 * (unique: jansson refused duplicate keys) for ps_st_get. */
static int check_tiling(ps_st_file_t *f, const char *path)
{
    st_entry_t **s = f->by_name;
    qsort(s, (size_t)f->n, sizeof *s, cmp_entry_offset);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        if (s[i]->begin != at) {
            return st_fail(path, "tensor '%s': data_offsets begin at %llu, expected %llu (%s)",
                           s[i]->name, (unsigned long long)s[i]->begin, (unsigned long long)at,
                           s[i]->begin < at ? "overlap" : "gap");
        }
        at = s[i]->end;
    }
    if (at != f->data_len) {
        return st_fail(path, "the tensors end at byte %llu of a %zu-byte data section",
                       (unsigned long long)at, f->data_len);
    }
    qsort(s, (size_t)f->n, sizeof *s, cmp_entry_name);
    return 0;
}

/* Everything after the 8-byte length into f->data: the header (*hlen
 * bytes), then the data section (f->data_len bytes).  The length is
 * checked against the limit and the file size before anything is
 * allocated for it. */
static int load_file(ps_st_file_t *f, const char *path, uint64_t *hlen)
{
    FILE *in = fopen(path, "rbe");
    if (in == NULL) {
        int err = errno;
        ps_error_set("%s: cannot open: %s", path, strerror(err));
        return err == ENOENT ? PS_ENOENT : PS_EIO;
    }
    struct stat st;
    uint8_t len[8];
    int regular = fstat(fileno(in), &st) == 0 && S_ISREG(st.st_mode), rv = PS_EFORMAT;
    uint64_t size = regular ? (uint64_t)st.st_size : 0;
    if (!regular) {
        ps_error_set("%s: not a readable regular file", path);
        rv = PS_EIO;
    } else if (size < 8) {
        st_fail(path, "file is %llu bytes, too short for the 8-byte header length",
                (unsigned long long)size);
    } else if (fread(len, 1, 8, in) != 8) {
        ps_error_set("%s: read failed: %s", path, strerror(errno));
        rv = PS_EIO;
    } else if ((*hlen = ps_get_u64(len)) > ST_MAX_HEADER) {
        st_fail(path, "header length %llu is over the 100 MiB limit", (unsigned long long)*hlen);
    } else if (*hlen > size - 8) {
        st_fail(path, "header length %llu runs past the end of the %llu-byte file",
                (unsigned long long)*hlen, (unsigned long long)size);
    } else if ((f->data = malloc(size - 8 + 1)) == NULL) {
        ps_error_set("%s: out of memory for %llu bytes", path, (unsigned long long)size);
        rv = PS_ENOMEM;
    } else if (fread(f->data, 1, size - 8, in) != size - 8) {
        ps_error_set("%s: read failed (file changed while reading?)", path);
        rv = PS_EIO;
    } else {
        f->data_len = (size_t)(size - 8 - *hlen);
        rv = 0;
    }
    fclose(in);
    return rv;
}

int ps_st_open(ps_st_file_t **out, const char *path)
{
    *out = NULL;
    ps_st_file_t *f = calloc(1, sizeof *f);
    if (f == NULL) {
        ps_error_set("%s: out of memory", path);
        return PS_ENOMEM;
    }
    uint64_t hlen = 0;
    int rv = load_file(f, path, &hlen);
    if (rv == 0) {
        rv = parse_header(f, path, (const char *)f->data, (size_t)hlen);
    }
    if (rv == 0) {
        rv = check_tiling(f, path);
    }
    if (rv != 0) {
        ps_st_close(&f);
        return rv;
    }
    /* The parsed header owns its strings: the data section moves to the
     * start of the buffer, which malloc aligned for float, in host order. */
    memmove(f->data, f->data + hlen, f->data_len);
    for (size_t i = 0; !ST_HOST_LE && i + 4 <= f->data_len; i += 4) {
        uint32_t u = ps_get_u32(f->data + i);
        memcpy(f->data + i, &u, 4);
    }
    *out = f;
    return 0;
}

int ps_st_count(const ps_st_file_t *f)
{
    return f->n;
}

const char *ps_st_name(const ps_st_file_t *f, int i)
{
    return i >= 0 && i < f->n ? f->t[i].name : NULL;
}

int ps_st_get(const ps_st_file_t *f, const char *name, const float **data, int *ndim,
              int64_t *shape)
{
    st_entry_t key = {.name = name}, *kp = &key;
    st_entry_t **hit = bsearch(&kp, f->by_name, (size_t)f->n, sizeof kp, cmp_entry_name);
    if (hit == NULL) {
        ps_error_set("no tensor named '%s' in the safetensors file", name);
        return PS_ENOENT;
    }
    const st_entry_t *e = *hit;
    if (data != NULL) {
        /* Tiling from 0 with 4-byte multiples keeps every begin aligned. */
        *data = (const float *)(const void *)(f->data + e->begin);
    }
    if (ndim != NULL) {
        *ndim = e->ndim;
    }
    if (shape != NULL) {
        memcpy(shape, e->shape, (size_t)e->ndim * sizeof *shape);
    }
    return 0;
}

int ps_st_is_i64(const ps_st_file_t *f, const char *name)
{
    st_entry_t key = {.name = name}, *kp = &key;
    st_entry_t **hit = bsearch(&kp, f->by_name, (size_t)f->n, sizeof kp, cmp_entry_name);
    if (hit == NULL) {
        ps_error_set("no tensor named '%s' in the safetensors file", name);
        return PS_ENOENT;
    }
    return (*hit)->i64;
}

const char *ps_st_meta(const ps_st_file_t *f, const char *key)
{
    return json_string_value(f->meta != NULL ? json_object_get(f->meta, key) : NULL);
}

void ps_st_close(ps_st_file_t **fp)
{
    if (fp == NULL || *fp == NULL) {
        return;
    }
    ps_st_file_t *f = *fp;
    json_decref(f->root);
    free(f->t);
    free(f->by_name);
    free(f->data);
    free(f);
    *fp = NULL;
}
