#include "ps_safetensors.h"

#include "ps_bytes.h"
#include "ps_err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* same limit as safetensors */
#define ST_HOST_LE (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)

enum { KEY_DTYPE = 1, KEY_SHAPE = 2, KEY_OFFSETS = 4, KEY_ALL = 7 };

typedef struct {
    const char *name; /* in the arena */
    int ndim;
    int64_t shape[PS_MAX_DIMS];
    uint64_t begin, end; /* byte offsets in the data section */
    unsigned seen;       /* KEY_* found while parsing */
} st_entry_t;

typedef struct {
    const char *key, *val; /* in the arena */
} st_meta_t;

struct ps_st_file {
    char *arena; /* every decoded string; never larger than the header */
    st_entry_t *t;
    int n, cap;
    st_entry_t **by_name; /* sorted by name, for ps_st_get */
    st_meta_t *meta;      /* sorted by key after validation */
    int nmeta, metacap;
    uint8_t *data; /* the data section, malloc'd: aligned for float */
    size_t data_len;
};

/* ---- shared helpers ------------------------------------------------------ */

/* Strict UTF-8 (no overlongs, no surrogates): JSON text must be UTF-8 and
 * safetensors' Rust parser rejects anything else. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], min;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (n - i < len) {
            return 0;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return 0;
            }
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
            return 0;
        }
        i += len;
    }
    return 1;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* First name that occurs twice, or NULL; *oom set if the copy failed. */
static const char *find_duplicate(const char **names, size_t n, int *oom)
{
    *oom = 0;
    if (n < 2) {
        return NULL;
    }
    const char **s = malloc(n * sizeof *s);
    if (s == NULL) {
        *oom = 1;
        return NULL;
    }
    memcpy(s, names, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_str_ptr);
    const char *dup = NULL;
    for (size_t i = 1; i < n && dup == NULL; i++) {
        dup = strcmp(s[i - 1], s[i]) == 0 ? s[i] : NULL;
    }
    free(s);
    return dup;
}

/* ---- writing ------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sb_t;

static void sb_put(sb_t *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sb_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(sb_t *b, uint64_t v)
{
    char tmp[24];
    int k = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)k);
}

/* A JSON string escaped as serde_json (safetensors' own writer) does it:
 * only '"', '\\' and control characters; UTF-8 passes through. */
static void sb_json_str(sb_t *b, const char *s)
{
    static const char shortesc[] = "\b\f\n\r\t";
    static const char shortname[] = "bfnrt";
    sb_put(b, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        const char *hit = c < 0x20 ? strchr(shortesc, c) : NULL;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (hit != NULL) {
            esc[0] = '\\', esc[1] = shortname[hit - shortesc];
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* The one rule for a tensor name, shared by the writer and the reader so
 * that every file one accepts the other does too: non-empty, UTF-8, not the
 * reserved "__metadata__". */
static int tensor_name_valid(const char *name)
{
    return name != NULL && name[0] != '\0' && strcmp(name, "__metadata__") != 0 &&
           utf8_valid((const unsigned char *)name, strlen(name));
}

/* Bytes of a valid tensor; 0 with a message when it is not valid. */
static int check_tensor_arg(const ps_st_tensor_t *t, int i, uint64_t *bytes)
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
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
            ps_error_set("safetensors write: tensor '%s' has a bad shape", t->name);
            return PS_EINVAL;
        }
    }
    if (numel > PS_MAX_ELEMS || (numel > 0 && t->data == NULL)) {
        ps_error_set("safetensors write: tensor '%s': too large or no data", t->name);
        return PS_EINVAL;
    }
    *bytes = numel * 4;
    return 0;
}

static int check_names_unique(const char **names, size_t n, const char *what)
{
    int oom;
    const char *dup = find_duplicate(names, n, &oom);
    if (oom) {
        ps_error_set("safetensors write: out of memory");
        return PS_ENOMEM;
    }
    if (dup != NULL) {
        ps_error_set("safetensors write: duplicate %s '%s'", what, dup);
        return PS_EINVAL;
    }
    return 0;
}

static int check_meta_args(const char *const *meta, int nmeta)
{
    for (int k = 0; k < 2 * nmeta; k++) {
        if (meta[k] == NULL || !utf8_valid((const unsigned char *)meta[k], strlen(meta[k]))) {
            ps_error_set("safetensors write: metadata string %d is NULL or not UTF-8", k);
            return PS_EINVAL;
        }
    }
    const char **keys = malloc((size_t)nmeta * sizeof *keys + 1);
    if (keys == NULL) {
        ps_error_set("safetensors write: out of memory");
        return PS_ENOMEM;
    }
    for (int k = 0; k < nmeta; k++) {
        keys[k] = meta[2 * k];
    }
    int rv = check_names_unique(keys, (size_t)nmeta, "metadata key");
    free(keys);
    return rv;
}

/* Validates every argument; bytes[i] receives tensor i's data size. */
static int check_write_args(const ps_st_tensor_t *t, int n, const char *const *meta, int nmeta,
                            uint64_t *bytes)
{
    if (n < 0 || nmeta < 0 || (n > 0 && t == NULL) || (nmeta > 0 && meta == NULL)) {
        ps_error_set("safetensors write: bad tensor or metadata count");
        return PS_EINVAL;
    }
    int rv = check_meta_args(meta, nmeta);
    const char **names = rv == 0 ? malloc((size_t)n * sizeof *names + 1) : NULL;
    if (rv == 0 && names == NULL) {
        ps_error_set("safetensors write: out of memory");
        rv = PS_ENOMEM;
    }
    for (int i = 0; i < n && rv == 0; i++) {
        rv = check_tensor_arg(&t[i], i, &bytes[i]);
        names[i] = t[i].name;
    }
    if (rv == 0) {
        rv = check_names_unique(names, (size_t)n, "tensor name");
    }
    free(names);
    return rv;
}

static void put_tensor_json(sb_t *h, const ps_st_tensor_t *t, uint64_t begin, uint64_t end)
{
    sb_json_str(h, t->name);
    sb_puts(h, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++) {
        if (d > 0) {
            sb_puts(h, ",");
        }
        sb_u64(h, (uint64_t)t->shape[d]);
    }
    sb_puts(h, "],\"data_offsets\":[");
    sb_u64(h, begin);
    sb_puts(h, ",");
    sb_u64(h, end);
    sb_puts(h, "]}");
}

static int build_header(sb_t *h, const ps_st_tensor_t *t, int n, const uint64_t *bytes,
                        const char *const *meta, int nmeta)
{
    sb_puts(h, "{");
    if (nmeta > 0) {
        sb_puts(h, "\"__metadata__\":{");
        for (int k = 0; k < nmeta; k++) {
            sb_puts(h, k > 0 ? "," : "");
            sb_json_str(h, meta[2 * k]);
            sb_puts(h, ":");
            sb_json_str(h, meta[2 * k + 1]);
        }
        sb_puts(h, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        sb_puts(h, (i > 0 || nmeta > 0) ? "," : "");
        put_tensor_json(h, &t[i], off, off + bytes[i]);
        off += bytes[i];
    }
    sb_puts(h, "}");
    while (!h->oom && h->len % 8 != 0) {
        sb_puts(h, " "); /* the data section starts 8-byte aligned */
    }
    if (h->oom || h->len > ST_MAX_HEADER) {
        ps_error_set("safetensors write: header too large (%zu bytes)", h->len);
        return h->oom ? PS_ENOMEM : PS_EINVAL;
    }
    return 0;
}

static int write_floats(FILE *f, const float *d, size_t count)
{
    if (ST_HOST_LE) {
        return count == 0 || fwrite(d, sizeof(float), count, f) == count;
    }
    uint8_t le[4096];
    for (size_t i = 0; i < count;) {
        size_t m = 0;
        for (; m < sizeof le / 4 && i < count; m++, i++) {
            uint32_t u;
            memcpy(&u, &d[i], 4);
            ps_put_u32(le + 4 * m, u);
        }
        if (fwrite(le, 4, m, f) != m) {
            return 0;
        }
    }
    return 1;
}

static int write_body(FILE *f, const sb_t *h, const ps_st_tensor_t *t, int n,
                      const uint64_t *bytes)
{
    uint8_t len[8];
    ps_put_u64(len, h->len);
    int ok = fwrite(len, 1, 8, f) == 8 && fwrite(h->p, 1, h->len, f) == h->len;
    for (int i = 0; i < n && ok; i++) {
        ok = write_floats(f, t[i].data, (size_t)(bytes[i] / 4));
    }
    return ok;
}

/* The rename is durable only once the directory entry is on disk. */
int ps_st_sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));
    int fd = dir == NULL ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv = 0;
    if (fd < 0 || fsync(fd) != 0) {
        ps_error_set("%s: cannot sync directory %s: %s", path, dir ? dir : "?", strerror(errno));
        rv = PS_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    free(dir);
    return rv;
}

static int write_atomic(const char *path, const sb_t *h, const ps_st_tensor_t *t, int n,
                        const uint64_t *bytes)
{
    size_t cap = strlen(path) + 32;
    char *tmp = malloc(cap);
    if (tmp == NULL) {
        ps_error_set("%s: out of memory", path);
        return PS_ENOMEM;
    }
    snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int rv = 0;
    if (f == NULL) {
        ps_error_set("%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return PS_EIO;
    }
    if (!write_body(f, h, t, n, bytes) || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        ps_error_set("%s: write failed: %s", tmp, strerror(errno));
        rv = PS_EIO;
    }
    if (fclose(f) != 0 && rv == 0) {
        ps_error_set("%s: close failed: %s", tmp, strerror(errno));
        rv = PS_EIO;
    }
    if (rv == 0 && rename(tmp, path) != 0) {
        ps_error_set("%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        rv = PS_EIO;
    }
    if (rv != 0) {
        unlink(tmp);
    } else {
        rv = ps_st_sync_dir(path);
    }
    free(tmp);
    return rv;
}

int ps_st_write(const char *path, const ps_st_tensor_t *t, int n, const char *const *meta,
                int nmeta)
{
    uint64_t *bytes = malloc((n > 0 ? (size_t)n : 1) * sizeof *bytes);
    if (bytes == NULL) {
        ps_error_set("%s: out of memory", path);
        return PS_ENOMEM;
    }
    sb_t h = {0};
    int rv = check_write_args(t, n, meta, nmeta, bytes);
    if (rv == 0) {
        rv = build_header(&h, t, n, bytes, meta, nmeta);
    }
    if (rv == 0) {
        rv = write_atomic(path, &h, t, n, bytes);
    }
    free(h.p);
    free(bytes);
    return rv;
}

/* ---- reading: the JSON header ------------------------------------------ */

typedef struct {
    const char *p, *end, *start; /* cursor in the header text */
    const char *path;
    char *arena; /* next free byte for decoded strings */
    int seen_meta;
    ps_st_file_t *f;
} jp_t;

static int jp_fail(jp_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int jp_fail(jp_t *j, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ps_error_set("%s: bad safetensors header at byte %ld: %s", j->path,
                 (long)(j->p - j->start), what);
    return PS_EFORMAT;
}

/* Skip JSON whitespace; the next byte, or -1 at the end. */
static int jp_peek(jp_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) {
        j->p++;
    }
    return j->p < j->end ? (unsigned char)*j->p : -1;
}

static int jp_expect(jp_t *j, char c)
{
    if (jp_peek(j) != (unsigned char)c) {
        return jp_fail(j, "expected '%c'", c);
    }
    j->p++;
    return 0;
}

static int jp_hex4(jp_t *j, unsigned *out)
{
    if (j->end - j->p < 4) {
        return jp_fail(j, "truncated \\u escape");
    }
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = j->p[k];
        const char *hex = "0123456789abcdef0123456789ABCDEF";
        const char *hit = c != '\0' ? strchr(hex, c) : NULL;
        if (hit == NULL) {
            return jp_fail(j, "bad hex digit in \\u escape");
        }
        v = v * 16 + (unsigned)((hit - hex) % 16);
    }
    j->p += 4;
    *out = v;
    return 0;
}

static void utf8_put(char **o, unsigned cp)
{
    unsigned char *u = (unsigned char *)*o;
    if (cp < 0x80) {
        *u++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *u++ = (unsigned char)(0xC0 | cp >> 6);
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *u++ = (unsigned char)(0xE0 | cp >> 12);
        *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *u++ = (unsigned char)(0xF0 | cp >> 18);
        *u++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    *o = (char *)u;
}

/* After "\u": one code point, a surrogate pair taken as one. */
static int jp_escape_u(jp_t *j, char **o)
{
    unsigned cp, lo;
    if (jp_hex4(j, &cp) != 0) {
        return PS_EFORMAT;
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return jp_fail(j, "lone low surrogate in \\u escape");
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') {
            return jp_fail(j, "high surrogate without a low surrogate");
        }
        j->p += 2;
        if (jp_hex4(j, &lo) != 0) {
            return PS_EFORMAT;
        }
        if (lo < 0xDC00 || lo > 0xDFFF) {
            return jp_fail(j, "high surrogate without a low surrogate");
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0) {
        return jp_fail(j, "\\u0000 in a string"); /* names are C strings */
    }
    utf8_put(o, cp);
    return 0;
}

/* After a backslash. */
static int jp_escape(jp_t *j, char **o)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (j->p >= j->end) {
        return jp_fail(j, "unterminated string");
    }
    char c = *j->p;
    const char *hit = c != '\0' ? strchr(from, c) : NULL;
    if (hit != NULL) {
        j->p++;
        *(*o)++ = to[hit - from];
        return 0;
    }
    if (c == 'u') {
        j->p++;
        return jp_escape_u(j, o);
    }
    return jp_fail(j, "invalid escape '\\%c'", c >= 0x20 && c < 0x7f ? c : '?');
}

/* A string, decoded into the arena.  Decoding never grows a string and
 * every string spends at least its two quotes, so the arena (header
 * length + 1) always has room for the text and its NUL. */
static int jp_string(jp_t *j, const char **out)
{
    if (jp_expect(j, '"') != 0) {
        return PS_EFORMAT;
    }
    char *s = j->arena, *o = s;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) {
            return jp_fail(j, "control character in a string");
        }
        if (c != '\\') {
            *o++ = (char)c;
            j->p++;
        } else if (j->p++, jp_escape(j, &o) != 0) {
            return PS_EFORMAT;
        }
    }
    if (j->p >= j->end) {
        return jp_fail(j, "unterminated string");
    }
    j->p++;
    *o = '\0';
    if (!utf8_valid((const unsigned char *)s, (size_t)(o - s))) {
        return jp_fail(j, "string is not valid UTF-8");
    }
    j->arena = o + 1;
    *out = s;
    return 0;
}

static int jp_uint(jp_t *j, uint64_t *out)
{
    int c = jp_peek(j);
    if (c < '0' || c > '9') {
        return jp_fail(j, "expected a non-negative integer");
    }
    const char *s = j->p;
    uint64_t v = 0;
    for (; j->p < j->end && *j->p >= '0' && *j->p <= '9'; j->p++) {
        unsigned d = (unsigned)(*j->p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return jp_fail(j, "integer too large");
        }
        v = v * 10 + d;
    }
    if (*s == '0' && j->p - s > 1) {
        j->p = s;
        return jp_fail(j, "integer with a leading zero");
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) {
        return jp_fail(j, "expected an integer, found a fraction or exponent");
    }
    *out = v;
    return 0;
}

/* "[u, u, ...]" with at most `max` elements. */
static int jp_uint_array(jp_t *j, uint64_t *v, int max, int *count, const char *what)
{
    if (jp_expect(j, '[') != 0) {
        return PS_EFORMAT;
    }
    int k = 0;
    if (jp_peek(j) == ']') {
        j->p++;
        *count = 0;
        return 0;
    }
    for (;;) {
        if (k == max) {
            return jp_fail(j, "%s has more than %d elements", what, max);
        }
        if (jp_uint(j, &v[k++]) != 0) {
            return PS_EFORMAT;
        }
        int c = jp_peek(j);
        if (c == ']') {
            j->p++;
            *count = k;
            return 0;
        }
        if (c != ',') {
            return jp_fail(j, "expected ',' or ']'");
        }
        j->p++;
    }
}

typedef int (*jp_member_fn)(jp_t *j, const char *key, void *ctx);

/* "{ "key": value, ... }"; member() parses each value. */
static int jp_object(jp_t *j, jp_member_fn member, void *ctx)
{
    if (jp_expect(j, '{') != 0) {
        return PS_EFORMAT;
    }
    if (jp_peek(j) == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        const char *key;
        int rv = jp_string(j, &key);
        if (rv == 0) {
            rv = jp_expect(j, ':');
        }
        if (rv == 0) {
            rv = member(j, key, ctx);
        }
        if (rv != 0) {
            return rv;
        }
        int c = jp_peek(j);
        if (c == '}') {
            j->p++;
            return 0;
        }
        if (c != ',') {
            return jp_fail(j, "expected ',' or '}'");
        }
        j->p++;
    }
}

static int meta_member(jp_t *j, const char *key, void *ctx)
{
    (void)ctx;
    ps_st_file_t *f = j->f;
    const char *val;
    if (jp_string(j, &val) != 0) {
        return PS_EFORMAT; /* safetensors metadata maps strings to strings */
    }
    if (f->nmeta == f->metacap) {
        int cap = f->metacap ? 2 * f->metacap : 8;
        st_meta_t *m = realloc(f->meta, (size_t)cap * sizeof *m);
        if (m == NULL) {
            ps_error_set("%s: out of memory", j->path);
            return PS_ENOMEM;
        }
        f->meta = m;
        f->metacap = cap;
    }
    f->meta[f->nmeta].key = key;
    f->meta[f->nmeta++].val = val;
    return 0;
}

static int parse_shape(jp_t *j, st_entry_t *e)
{
    uint64_t dims[PS_MAX_DIMS];
    int nd;
    if (jp_uint_array(j, dims, PS_MAX_DIMS, &nd, "shape") != 0) {
        return PS_EFORMAT;
    }
    for (int d = 0; d < nd; d++) {
        if (dims[d] > INT64_MAX) {
            return jp_fail(j, "tensor '%s': dimension too large", e->name);
        }
        e->shape[d] = (int64_t)dims[d];
    }
    e->ndim = nd;
    return 0;
}

static int tensor_member(jp_t *j, const char *key, void *ctx)
{
    st_entry_t *e = ctx;
    unsigned bit = strcmp(key, "dtype") == 0 ? KEY_DTYPE
                   : strcmp(key, "shape") == 0 ? KEY_SHAPE
                   : strcmp(key, "data_offsets") == 0 ? KEY_OFFSETS : 0;
    if (bit == 0 || (e->seen & bit) != 0) {
        return jp_fail(j, "tensor '%s': %s key '%s'", e->name, bit ? "duplicate" : "unexpected",
                       key);
    }
    e->seen |= bit;
    if (bit == KEY_SHAPE) {
        return parse_shape(j, e);
    }
    if (bit == KEY_OFFSETS) {
        uint64_t off[2];
        int k;
        if (jp_uint_array(j, off, 2, &k, "data_offsets") != 0) {
            return PS_EFORMAT;
        }
        if (k != 2) {
            return jp_fail(j, "tensor '%s': data_offsets needs 2 integers", e->name);
        }
        e->begin = off[0];
        e->end = off[1];
        return 0;
    }
    const char *dtype;
    if (jp_string(j, &dtype) != 0) {
        return PS_EFORMAT;
    }
    if (strcmp(dtype, "F32") != 0) {
        return jp_fail(j, "tensor '%s': dtype %s is not supported (only F32)", e->name, dtype);
    }
    return 0;
}

static int add_entry(jp_t *j, st_entry_t **out)
{
    ps_st_file_t *f = j->f;
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 16;
        st_entry_t *t = realloc(f->t, (size_t)cap * sizeof *t);
        if (t == NULL) {
            ps_error_set("%s: out of memory", j->path);
            return PS_ENOMEM;
        }
        f->t = t;
        f->cap = cap;
    }
    *out = &f->t[f->n++];
    memset(*out, 0, sizeof **out);
    return 0;
}

static int top_member(jp_t *j, const char *key, void *ctx)
{
    (void)ctx;
    if (strcmp(key, "__metadata__") == 0) {
        if (j->seen_meta) {
            return jp_fail(j, "duplicate __metadata__");
        }
        j->seen_meta = 1;
        return jp_object(j, meta_member, NULL);
    }
    if (!tensor_name_valid(key)) {
        return jp_fail(j, "tensor name '%s' is empty or not UTF-8", key);
    }
    st_entry_t *e;
    int rv = add_entry(j, &e);
    if (rv != 0) {
        return rv;
    }
    e->name = key;
    rv = jp_object(j, tensor_member, e);
    if (rv == 0 && e->seen != KEY_ALL) {
        return jp_fail(j, "tensor '%s' lacks dtype, shape or data_offsets", key);
    }
    return rv;
}

static int parse_header(ps_st_file_t *f, const char *path, const char *hdr, size_t len)
{
    f->arena = malloc(len + 1);
    if (f->arena == NULL) {
        ps_error_set("%s: out of memory", path);
        return PS_ENOMEM;
    }
    jp_t j = {.p = hdr, .end = hdr + len, .start = hdr, .path = path, .arena = f->arena, .f = f};
    int rv = jp_object(&j, top_member, NULL);
    if (rv == 0 && jp_peek(&j) != -1) {
        return jp_fail(&j, "unexpected bytes after the header object");
    }
    return rv;
}

/* ---- reading: validation ------------------------------------------------ */

static int st_fail(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int st_fail(const char *path, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ps_error_set("%s: %s", path, what);
    return PS_EFORMAT;
}

static int check_entry_size(const st_entry_t *e, size_t data_len, const char *path)
{
    uint64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) {
        if (__builtin_mul_overflow(numel, (uint64_t)e->shape[d], &numel)) {
            return st_fail(path, "tensor '%s': shape overflows", e->name);
        }
    }
    if (e->end < e->begin) {
        return st_fail(path, "tensor '%s': data_offsets [%llu,%llu] end before they begin",
                       e->name, (unsigned long long)e->begin, (unsigned long long)e->end);
    }
    uint64_t span = e->end - e->begin;
    if (numel > span / 4 || numel * 4 != span) {
        return st_fail(path, "tensor '%s': shape needs %llu elements but data_offsets span %llu bytes",
                       e->name, (unsigned long long)numel, (unsigned long long)span);
    }
    if (e->end > data_len) {
        return st_fail(path, "tensor '%s': data_offsets [%llu,%llu] run past the %zu-byte data section",
                       e->name, (unsigned long long)e->begin, (unsigned long long)e->end, data_len);
    }
    return 0;
}

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

static int cmp_meta_key(const void *a, const void *b)
{
    return strcmp(((const st_meta_t *)a)->key, ((const st_meta_t *)b)->key);
}

/* Sorted by offset the tensors must tile [0, data_len) exactly. */
static int check_tiling(st_entry_t **s, int n, size_t data_len, const char *path)
{
    qsort(s, (size_t)n, sizeof *s, cmp_entry_offset);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (s[i]->begin != at) {
            return st_fail(path, "tensor '%s': data_offsets begin at %llu, expected %llu (%s)",
                           s[i]->name, (unsigned long long)s[i]->begin, (unsigned long long)at,
                           s[i]->begin < at ? "overlap" : "gap");
        }
        at = s[i]->end;
    }
    if (at != data_len) {
        return st_fail(path, "the tensors end at byte %llu of a %zu-byte data section",
                       (unsigned long long)at, data_len);
    }
    return 0;
}

static int check_entries(ps_st_file_t *f, const char *path)
{
    f->by_name = malloc((size_t)f->n * sizeof *f->by_name + 1);
    if (f->by_name == NULL) {
        ps_error_set("%s: out of memory", path);
        return PS_ENOMEM;
    }
    for (int i = 0; i < f->n; i++) {
        int rv = check_entry_size(&f->t[i], f->data_len, path);
        if (rv != 0) {
            return rv;
        }
        f->by_name[i] = &f->t[i];
    }
    int rv = check_tiling(f->by_name, f->n, f->data_len, path);
    if (rv != 0) {
        return rv;
    }
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_entry_name);
    for (int i = 1; i < f->n; i++) {
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            return st_fail(path, "duplicate tensor name '%s'", f->by_name[i]->name);
        }
    }
    if (f->nmeta > 0) {
        qsort(f->meta, (size_t)f->nmeta, sizeof *f->meta, cmp_meta_key);
    }
    for (int i = 1; i < f->nmeta; i++) {
        if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0) {
            return st_fail(path, "duplicate metadata key '%s'", f->meta[i].key);
        }
    }
    return 0;
}

/* ---- reading: the file ------------------------------------------------- */

static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t k = read(fd, p, len);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

/* The header length, checked against the limit and the file size. */
static int read_header_len(int fd, const char *path, uint64_t size, uint64_t *hlen)
{
    uint8_t b[8];
    if (size < 8) {
        return st_fail(path, "file is %llu bytes, too short for the 8-byte header length",
                       (unsigned long long)size);
    }
    if (read_full(fd, b, 8) != 0) {
        ps_error_set("%s: read failed: %s", path, strerror(errno));
        return PS_EIO;
    }
    *hlen = ps_get_u64(b);
    if (*hlen > ST_MAX_HEADER) {
        return st_fail(path, "header length %llu is over the 100 MiB limit",
                       (unsigned long long)*hlen);
    }
    if (*hlen > size - 8) {
        return st_fail(path, "header length %llu runs past the end of the %llu-byte file",
                       (unsigned long long)*hlen, (unsigned long long)size);
    }
    return 0;
}

/* Reads the header into *hdr (caller frees) and the data into f->data. */
static int load_file(ps_st_file_t *f, const char *path, char **hdr, size_t *hlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ps_error_set("%s: cannot open: %s", path, strerror(errno));
        return errno == ENOENT ? PS_ENOENT : PS_EIO;
    }
    struct stat st;
    uint64_t n = 0;
    int rv = fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ? PS_EIO : 0;
    if (rv != 0) {
        ps_error_set("%s: not a readable regular file", path);
    } else {
        rv = read_header_len(fd, path, (uint64_t)st.st_size, &n);
    }
    if (rv == 0) {
        *hlen = (size_t)n;
        f->data_len = (size_t)((uint64_t)st.st_size - 8 - n);
        *hdr = malloc(*hlen + 1);
        f->data = malloc(f->data_len + 1);
        if (*hdr == NULL || f->data == NULL) {
            ps_error_set("%s: out of memory for %zu data bytes", path, f->data_len);
            rv = PS_ENOMEM;
        }
    }
    if (rv == 0 && (read_full(fd, *hdr, *hlen) != 0 || read_full(fd, f->data, f->data_len) != 0)) {
        ps_error_set("%s: read failed (file changed while reading?)", path);
        rv = PS_EIO;
    }
    close(fd);
    return rv;
}

static void swap_data(ps_st_file_t *f)
{
    if (ST_HOST_LE) {
        return;
    }
    for (size_t i = 0; i + 4 <= f->data_len; i += 4) {
        uint32_t u = ps_get_u32(f->data + i);
        memcpy(f->data + i, &u, 4);
    }
}

int ps_st_open(ps_st_file_t **out, const char *path)
{
    *out = NULL;
    ps_st_file_t *f = calloc(1, sizeof *f);
    if (f == NULL) {
        ps_error_set("%s: out of memory", path);
        return PS_ENOMEM;
    }
    char *hdr = NULL;
    size_t hlen = 0;
    int rv = load_file(f, path, &hdr, &hlen);
    if (rv == 0) {
        rv = parse_header(f, path, hdr, hlen);
    }
    if (rv == 0) {
        rv = check_entries(f, path);
    }
    free(hdr);
    if (rv != 0) {
        ps_st_close(&f);
        return rv;
    }
    swap_data(f);
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

static int cmp_key_entry(const void *key, const void *el)
{
    return strcmp(key, (*(st_entry_t *const *)el)->name);
}

int ps_st_get(const ps_st_file_t *f, const char *name, const float **data, int *ndim,
              int64_t *shape)
{
    st_entry_t **hit = f->n > 0 ? bsearch(name, f->by_name, (size_t)f->n, sizeof *f->by_name,
                                          cmp_key_entry)
                                : NULL;
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

static int cmp_key_meta(const void *key, const void *el)
{
    return strcmp(key, ((const st_meta_t *)el)->key);
}

const char *ps_st_meta(const ps_st_file_t *f, const char *key)
{
    const st_meta_t *m = f->nmeta > 0 ? bsearch(key, f->meta, (size_t)f->nmeta, sizeof *f->meta,
                                                cmp_key_meta)
                                      : NULL;
    return m != NULL ? m->val : NULL;
}

void ps_st_close(ps_st_file_t **fp)
{
    if (fp == NULL || *fp == NULL) {
        return;
    }
    ps_st_file_t *f = *fp;
    free(f->arena);
    free(f->t);
    free(f->by_name);
    free(f->meta);
    free(f->data);
    free(f);
    *fp = NULL;
}
