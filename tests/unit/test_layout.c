/*
 * Unit tests for common/ps_layout: building a layout, its offsets, the
 * describe text, the hash, and the REGISTER wire form.  Encodings are
 * compared with byte arrays written by hand from the format in
 * ps_layout.h, the hash with an FNV-1a written here, and the decoder is fed
 * every truncation (from exact-size heap copies, so valgrind sees any
 * over-read) and hand-made malformed inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_layout.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The PyTorch MLP 784-256-10. */
static void build_mlp(ps_layout_t *l)
{
    const int64_t w1[2] = {256, 784}, b1[1] = {256}, w2[2] = {10, 256}, b2[1] = {10};
    ps_layout_init(l);
    assert_int_equal(ps_layout_add(l, "fc1.weight", 2, w1), 0);
    assert_int_equal(ps_layout_add(l, "fc1.bias", 1, b1), 0);
    assert_int_equal(ps_layout_add(l, "fc2.weight", 2, w2), 0);
    assert_int_equal(ps_layout_add(l, "fc2.bias", 1, b2), 0);
}

/* "a"[2,3], "bc"[5] in the wire form, by hand. */
static const uint8_t small_bytes[] = {
    0x02, 0x00, 0x00, 0x00,                         /* u32 count 2 */
    0x01, 'a',                                      /* name */
    0x02,                                           /* ndim */
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* u64 2 */
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* u64 3 */
    0x02, 'b',  'c',                                /* name */
    0x01,                                           /* ndim */
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* u64 5 */
};

static void build_small(ps_layout_t *l)
{
    const int64_t a[2] = {2, 3}, bc[1] = {5};
    ps_layout_init(l);
    assert_int_equal(ps_layout_add(l, "a", 2, a), 0);
    assert_int_equal(ps_layout_add(l, "bc", 1, bc), 0);
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

static int decode_copy(ps_layout_t *l, const uint8_t *buf, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    int rv = ps_layout_decode(l, copy, len);
    free(copy);
    return rv;
}

static void expect_decode_reject(const uint8_t *buf, size_t len)
{
    ps_layout_t l;
    ps_error_clear();
    int rv = decode_copy(&l, buf, len);
    if (rv != PS_EPROTO) {
        fail_msg("decode of %zu bytes returned %d, want PS_EPROTO", len, rv);
    }
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
    assert_int_equal(l.n, 0); /* nothing half-built is left behind */
    assert_int_equal(l.total, 0);
}

static void assert_layout_equal(const ps_layout_t *a, const ps_layout_t *b)
{
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->total, b->total);
    for (int i = 0; i < a->n; i++) {
        assert_string_equal(a->t[i].name, b->t[i].name);
        assert_int_equal(a->t[i].ndim, b->t[i].ndim);
        for (int d = 0; d < a->t[i].ndim; d++) {
            assert_int_equal(a->t[i].dims[d], b->t[i].dims[d]);
        }
        assert_int_equal(a->t[i].offset, b->t[i].offset);
        assert_int_equal(a->t[i].numel, b->t[i].numel);
    }
}

static void test_add_offsets_totals(void **state)
{
    (void)state;
    ps_layout_t l;
    build_mlp(&l);
    assert_int_equal(l.n, 4);
    const size_t off[4] = {0, 200704, 200960, 203520}; /* 256*784, +256, +2560 */
    const size_t numel[4] = {200704, 256, 2560, 10};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(l.t[i].offset, off[i]);
        assert_int_equal(l.t[i].numel, numel[i]);
    }
    assert_int_equal(l.t[0].ndim, 2);
    assert_int_equal(l.t[0].dims[0], 256);
    assert_int_equal(l.t[0].dims[1], 784);
    assert_int_equal(l.total, 203530);
}

static void test_find(void **state)
{
    (void)state;
    ps_layout_t l;
    build_mlp(&l);
    assert_int_equal(ps_layout_find(&l, "fc1.weight"), 0);
    assert_int_equal(ps_layout_find(&l, "fc1.bias"), 1);
    assert_int_equal(ps_layout_find(&l, "fc2.weight"), 2);
    assert_int_equal(ps_layout_find(&l, "fc2.bias"), 3);
    assert_int_equal(ps_layout_find(&l, "fc1"), -1);
    assert_int_equal(ps_layout_find(&l, "fc1.weightx"), -1);
    assert_int_equal(ps_layout_find(&l, ""), -1);
    ps_layout_init(&l);
    assert_int_equal(ps_layout_find(&l, "fc1.weight"), -1);
}

/* A refused add leaves the layout as it was. */
static void expect_add_reject(ps_layout_t *l, const char *name, int ndim, const int64_t *dims)
{
    int n = l->n;
    size_t total = l->total;
    ps_error_clear();
    assert_int_equal(ps_layout_add(l, name, ndim, dims), PS_EINVAL);
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
    assert_int_equal(l->n, n);
    assert_int_equal(l->total, total);
}

static void test_duplicate(void **state)
{
    (void)state;
    ps_layout_t l;
    build_mlp(&l);
    const int64_t d[1] = {3};
    expect_add_reject(&l, "fc1.bias", 1, d);
    assert_non_null(strstr(ps_error_msg(), "fc1.bias"));
}

static void test_bad_names(void **state)
{
    (void)state;
    ps_layout_t l;
    ps_layout_init(&l);
    const int64_t d[1] = {3};
    char n64[65], n63[64];
    memset(n64, 'x', 64);
    n64[64] = '\0';
    memset(n63, 'y', 63);
    n63[63] = '\0';
    expect_add_reject(&l, "a b", 1, d);
    expect_add_reject(&l, "a\"b", 1, d);
    expect_add_reject(&l, "a\\b", 1, d);
    expect_add_reject(&l, "", 1, d);
    expect_add_reject(&l, "tab\there", 1, d);
    expect_add_reject(&l, "new\nline", 1, d);
    expect_add_reject(&l, "caf\xc3\xa9", 1, d); /* printable ASCII only */
    expect_add_reject(&l, "del\x7f", 1, d);
    expect_add_reject(&l, n64, 1, d);
    /* The longest allowed name and PyTorch-style punctuation are fine. */
    assert_int_equal(ps_layout_add(&l, n63, 1, d), 0);
    assert_int_equal(ps_layout_add(&l, "layers.0.attn-out_proj.weight", 1, d), 0);
    assert_int_equal(ps_layout_find(&l, n63), 0);
}

static void test_bad_dims(void **state)
{
    (void)state;
    ps_layout_t l;
    ps_layout_init(&l);
    const int64_t ok5[5] = {1, 1, 1, 1, 1};
    const int64_t zero[1] = {0}, neg[2] = {4, -1};
    const int64_t huge[2] = {(int64_t)1 << 20, (int64_t)1 << 20}; /* 2^40 > PS_MAX_ELEMS */
    const int64_t wrap[2] = {(int64_t)1 << 33, (int64_t)1 << 33}; /* wraps 64 bits */
    expect_add_reject(&l, "t", 0, ok5);
    expect_add_reject(&l, "t", 5, ok5);
    expect_add_reject(&l, "t", -1, ok5);
    expect_add_reject(&l, "t", 1, zero);
    expect_add_reject(&l, "t", 2, neg);
    expect_add_reject(&l, "t", 2, huge);
    expect_add_reject(&l, "t", 2, wrap);
    assert_int_equal(ps_layout_add(&l, "t", 4, ok5), 0);
    assert_int_equal(l.t[0].numel, 1);
}

static void test_total_limit(void **state)
{
    (void)state;
    ps_layout_t l;
    ps_layout_init(&l);
    const int64_t max[1] = {(int64_t)PS_MAX_ELEMS}, one[1] = {1};
    assert_int_equal(ps_layout_add(&l, "big", 1, max), 0);
    assert_int_equal(l.total, PS_MAX_ELEMS);
    expect_add_reject(&l, "more", 1, one);
}

static void test_tensor_limit(void **state)
{
    (void)state;
    ps_layout_t l;
    ps_layout_init(&l);
    const int64_t d[1] = {2};
    char name[16];
    for (int i = 0; i < PS_MAX_TENSORS; i++) {
        snprintf(name, sizeof name, "t%d", i);
        assert_int_equal(ps_layout_add(&l, name, 1, d), 0);
    }
    assert_int_equal(l.total, 2 * PS_MAX_TENSORS);
    expect_add_reject(&l, "one.more", 1, d);
}

static void test_encode_fixed_bytes(void **state)
{
    (void)state;
    ps_layout_t l;
    build_small(&l);
    uint8_t buf[64];
    memset(buf, 0xee, sizeof buf);
    long n = ps_layout_encode(&l, buf, sizeof buf);
    assert_int_equal(n, sizeof small_bytes);
    assert_memory_equal(buf, small_bytes, sizeof small_bytes);
    assert_int_equal(buf[sizeof small_bytes], 0xee);
    /* Exactly enough room works; one byte less is refused. */
    assert_int_equal(ps_layout_encode(&l, buf, sizeof small_bytes), sizeof small_bytes);
    assert_true(ps_layout_encode(&l, buf, sizeof small_bytes - 1) < 0);
    /* An empty layout is its count alone. */
    ps_layout_init(&l);
    assert_int_equal(ps_layout_encode(&l, buf, sizeof buf), 4);
    assert_int_equal(buf[0] | buf[1] | buf[2] | buf[3], 0);
}

static void test_decode_fixed_bytes(void **state)
{
    (void)state;
    ps_layout_t got, want;
    build_small(&want);
    assert_int_equal(decode_copy(&got, small_bytes, sizeof small_bytes), 0);
    assert_layout_equal(&got, &want);
    assert_int_equal(got.t[1].offset, 6);
    assert_int_equal(got.total, 11);
}

static void test_round_trip(void **state)
{
    (void)state;
    ps_layout_t l, back;
    build_mlp(&l);
    uint8_t buf[512];
    long n = ps_layout_encode(&l, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(decode_copy(&back, buf, (size_t)n), 0);
    assert_layout_equal(&back, &l);
}

/* Every limit at once: PS_MAX_TENSORS tensors, 63-byte names, 4 dims each. */
static void build_max(ps_layout_t *l)
{
    const int64_t d[4] = {1, 2, 3, 4};
    char name[PS_MAX_NAME + 1];
    ps_layout_init(l);
    for (int i = 0; i < PS_MAX_TENSORS; i++) {
        memset(name, 'n', PS_MAX_NAME);
        snprintf(name, sizeof name, "%04d", i);
        name[4] = 'n'; /* keep it 63 bytes: snprintf wrote a NUL there */
        name[PS_MAX_NAME] = '\0';
        assert_int_equal(ps_layout_add(l, name, 4, d), 0);
    }
}

static void test_round_trip_max(void **state)
{
    (void)state;
    ps_layout_t l, back;
    build_max(&l);
    size_t want = 4 + PS_MAX_TENSORS * (1 + PS_MAX_NAME + 1 + 4 * 8);
    uint8_t *buf = malloc(want);
    assert_non_null(buf);
    assert_int_equal(ps_layout_encode(&l, buf, want), want);
    assert_int_equal(decode_copy(&back, buf, want), 0);
    assert_layout_equal(&back, &l);
    free(buf);
    /* The hash covers the whole encoding, even at the limits: the last
     * byte of the last tensor's last dim changes it. */
    ps_layout_t m = l;
    uint64_t h = ps_layout_hash(&l);
    m.t[PS_MAX_TENSORS - 1].dims[3] = 5;
    assert_true(ps_layout_hash(&m) != h);
    m = l;
    m.t[PS_MAX_TENSORS - 1].name[PS_MAX_NAME - 1] = 'm';
    assert_true(ps_layout_hash(&m) != h);
}

/*
 * Regression: ps_layout_hash once started from 1469598103934665603, the
 * 64-bit FNV offset basis 14695981039346656037 (0xcbf29ce484222325) with
 * its last digit dropped.  Equal layouts still hashed equal, but no other
 * FNV-1a implementation (a Python tool, another client) could reproduce
 * the value the header promises.
 */
static void test_hash_is_fnv1a(void **state)
{
    (void)state;
    /* The reference implementation against the published test vector. */
    assert_true(fnv1a((const uint8_t *)"a", 1) == 0xaf63dc4c8601ec8cull);
    ps_layout_t a;
    build_small(&a);
    uint64_t got = ps_layout_hash(&a), want = fnv1a(small_bytes, sizeof small_bytes);
    if (got != want) {
        fail_msg("ps_layout_hash = 0x%016llx, FNV-1a of the encoding = 0x%016llx",
                 (unsigned long long)got, (unsigned long long)want);
    }
}

static void test_hash(void **state)
{
    (void)state;
    ps_layout_t a, b;
    build_mlp(&a);
    build_mlp(&b);
    assert_true(ps_layout_hash(&a) == ps_layout_hash(&b));
    b.t[2].dims[1] = 255; /* one dim differs */
    assert_true(ps_layout_hash(&a) != ps_layout_hash(&b));
    /* Same sizes, dims swapped. */
    const int64_t d1[2] = {784, 256}, d2[1] = {256};
    ps_layout_init(&b);
    assert_int_equal(ps_layout_add(&b, "fc1.weight", 2, d1), 0);
    assert_int_equal(ps_layout_add(&b, "fc1.bias", 1, d2), 0);
    ps_layout_t c;
    const int64_t e1[2] = {256, 784};
    ps_layout_init(&c);
    assert_int_equal(ps_layout_add(&c, "fc1.weight", 2, e1), 0);
    assert_int_equal(ps_layout_add(&c, "fc1.bias", 1, d2), 0);
    assert_true(ps_layout_hash(&b) != ps_layout_hash(&c));
    /* A renamed tensor. */
    ps_layout_init(&b);
    assert_int_equal(ps_layout_add(&b, "fc1.weigh7", 2, e1), 0);
    assert_int_equal(ps_layout_add(&b, "fc1.bias", 1, d2), 0);
    assert_true(ps_layout_hash(&b) != ps_layout_hash(&c));
}

static void test_describe(void **state)
{
    (void)state;
    const char *full = "fc1.weight[256,784] fc1.bias[256] fc2.weight[10,256] fc2.bias[10]";
    ps_layout_t l;
    build_mlp(&l);
    char buf[128];
    ps_layout_describe(&l, buf, sizeof buf);
    assert_string_equal(buf, full);
    /* Any smaller buffer gets the longest prefix that fits. */
    size_t flen = strlen(full);
    for (size_t cap = 1; cap <= flen + 1; cap++) {
        char *small = malloc(cap);
        assert_non_null(small);
        ps_layout_describe(&l, small, cap);
        size_t want = cap - 1 < flen ? cap - 1 : flen;
        assert_int_equal(strlen(small), want);
        assert_memory_equal(small, full, want);
        free(small);
    }
    ps_layout_init(&l);
    ps_layout_describe(&l, buf, sizeof buf);
    assert_string_equal(buf, "");
}

static void test_decode_rejects_truncations(void **state)
{
    (void)state;
    ps_layout_t l;
    build_mlp(&l);
    uint8_t buf[512];
    long n = ps_layout_encode(&l, buf, sizeof buf);
    assert_true(n > 0);
    for (long len = 0; len < n; len++) {
        expect_decode_reject(buf, (size_t)len);
    }
    for (size_t len = 0; len < sizeof small_bytes; len++) {
        expect_decode_reject(small_bytes, len);
    }
}

static void test_decode_rejects_trailing(void **state)
{
    (void)state;
    uint8_t buf[sizeof small_bytes + 1];
    memcpy(buf, small_bytes, sizeof small_bytes);
    buf[sizeof small_bytes] = 0;
    expect_decode_reject(buf, sizeof buf);
}

/* One tensor "a" with the given ndim, each dim `dim`. */
static size_t one_tensor(uint8_t *p, int ndim, uint64_t dim)
{
    size_t k = 0;
    p[k++] = 1, p[k++] = 0, p[k++] = 0, p[k++] = 0;
    p[k++] = 1, p[k++] = 'a';
    p[k++] = (uint8_t)ndim;
    for (int d = 0; d < ndim; d++) {
        for (int b = 0; b < 8; b++) {
            p[k++] = (uint8_t)(dim >> (8 * b));
        }
    }
    return k;
}

static void test_decode_rejects_bad_fields(void **state)
{
    (void)state;
    uint8_t buf[2048]; /* one_tensor(buf, 255, 1) writes 2047 bytes */
    ps_layout_t l;
    size_t n = one_tensor(buf, 1, 7);
    assert_int_equal(decode_copy(&l, buf, n), 0); /* the template is valid */
    assert_int_equal(l.total, 7);
    expect_decode_reject(buf, one_tensor(buf, 0, 7));
    expect_decode_reject(buf, one_tensor(buf, 5, 1));
    expect_decode_reject(buf, one_tensor(buf, 255, 1));
    expect_decode_reject(buf, one_tensor(buf, 1, 0));
    expect_decode_reject(buf, one_tensor(buf, 1, (uint64_t)PS_MAX_ELEMS + 1));
    expect_decode_reject(buf, one_tensor(buf, 1, UINT64_MAX));        /* -1 as int64 */
    expect_decode_reject(buf, one_tensor(buf, 2, (uint64_t)1 << 20)); /* 2^40 elements */
    n = one_tensor(buf, 1, 7);
    buf[5] = ' '; /* a name the adder refuses */
    expect_decode_reject(buf, n);
    n = one_tensor(buf, 1, 7);
    buf[4] = 0; /* empty name: the 'a' becomes ndim 0x61 */
    expect_decode_reject(buf, n);
}

static void test_decode_rejects_name_length(void **state)
{
    (void)state;
    /* A 64-byte name followed by a valid ndim and dim. */
    uint8_t buf[4 + 1 + 64 + 1 + 8];
    size_t k = 0;
    buf[k++] = 1, buf[k++] = 0, buf[k++] = 0, buf[k++] = 0;
    buf[k++] = 64;
    memset(buf + k, 'x', 64);
    k += 64;
    buf[k++] = 1;
    buf[k++] = 3;
    memset(buf + k, 0, 7);
    k += 7;
    assert_int_equal(k, sizeof buf);
    expect_decode_reject(buf, sizeof buf);
    /* 255 with the bytes present. */
    uint8_t big[4 + 1 + 255 + 1 + 8];
    memset(big, 'x', sizeof big);
    big[0] = 1, big[1] = 0, big[2] = 0, big[3] = 0;
    big[4] = 255;
    big[4 + 1 + 255] = 1;
    memset(big + 4 + 1 + 255 + 1, 0, 8);
    big[4 + 1 + 255 + 1] = 3;
    expect_decode_reject(big, sizeof big);
}

static void test_decode_rejects_count(void **state)
{
    (void)state;
    /* PS_MAX_TENSORS + 1 well-formed tensors: refused for the count alone. */
    size_t per = 1 + 4 + 1 + 8;
    size_t len = 4 + (PS_MAX_TENSORS + 1) * per;
    uint8_t *buf = calloc(1, len);
    assert_non_null(buf);
    buf[0] = (uint8_t)((PS_MAX_TENSORS + 1) & 0xff); /* u32, little endian */
    buf[1] = (uint8_t)((PS_MAX_TENSORS + 1) >> 8);
    for (int i = 0; i <= PS_MAX_TENSORS; i++) {
        uint8_t *p = buf + 4 + (size_t)i * per;
        p[0] = 4; /* "t" + i in base 26 letters: unique, printable */
        p[1] = 't', p[2] = (uint8_t)('a' + i / 676), p[3] = (uint8_t)('a' + i / 26 % 26);
        p[4] = (uint8_t)('a' + i % 26);
        p[5] = 1;
        p[6] = 2;
    }
    expect_decode_reject(buf, len);
    /* The same bytes with the count lowered to the limit (and that many
     * tensors) pass. */
    buf[0] = (uint8_t)(PS_MAX_TENSORS & 0xff);
    buf[1] = (uint8_t)(PS_MAX_TENSORS >> 8);
    ps_layout_t l;
    assert_int_equal(decode_copy(&l, buf, len - per), 0);
    assert_int_equal(l.n, PS_MAX_TENSORS);
    assert_int_equal(l.total, 2 * PS_MAX_TENSORS);
    free(buf);
    /* A huge count with no tensors behind it. */
    const uint8_t ff[4] = {0xff, 0xff, 0xff, 0xff};
    expect_decode_reject(ff, sizeof ff);
}

static void test_decode_rejects_duplicate(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = one_tensor(buf, 1, 7);
    memcpy(buf + n, buf + 4, n - 4); /* the same tensor again */
    buf[0] = 2;
    expect_decode_reject(buf, 2 * n - 4);
}

/* "a"[2,3] (weight decay 0), "bc"[5] (lr scale 0.5) in the version-2 wire
 * form, by hand: the magic, then the version-1 fields and per tensor u8
 * opts, f64 weight decay, f64 lr scale. */
static const uint8_t small_v2_bytes[] = {
    0x50, 0x53, 0x4c, 0x32,                         /* "PSL2" */
    0x02, 0x00, 0x00, 0x00,                         /* u32 count 2 */
    0x01, 'a',  0x02,                               /* name, ndim */
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* u64 2 */
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* u64 3 */
    0x01,                                           /* opts: weight decay */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* f64 0.0 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* f64 0 (not set) */
    0x02, 'b',  'c',  0x01,                         /* name, ndim */
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* u64 5 */
    0x02,                                           /* opts: lr scale */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* f64 0 (not set) */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f, /* f64 0.5 */
};

static void build_small_v2(ps_layout_t *l)
{
    build_small(l);
    assert_int_equal(ps_layout_set_opts(l, 0, PS_TOPT_WD, 0.0, 7.0), 0); /* 7 ignored */
    assert_int_equal(ps_layout_set_opts(l, 1, PS_TOPT_LR, 3.0, 0.5), 0); /* 3 ignored */
}

static void test_opts_encode_decode(void **state)
{
    (void)state;
    ps_layout_t l, back;
    build_small_v2(&l);
    assert_true(ps_layout_has_opts(&l));
    uint8_t buf[128];
    long n = ps_layout_encode(&l, buf, sizeof buf);
    assert_int_equal(n, sizeof small_v2_bytes);
    assert_memory_equal(buf, small_v2_bytes, sizeof small_v2_bytes);
    assert_true(ps_layout_encode(&l, buf, sizeof small_v2_bytes - 1) < 0);
    assert_int_equal(decode_copy(&back, small_v2_bytes, sizeof small_v2_bytes), 0);
    assert_layout_equal(&back, &l);
    assert_int_equal(back.t[0].opts, PS_TOPT_WD);
    assert_true(back.t[0].weight_decay == 0.0 && back.t[0].lr_scale == 0.0);
    assert_int_equal(back.t[1].opts, PS_TOPT_LR);
    assert_true(back.t[1].lr_scale == 0.5 && back.t[1].weight_decay == 0.0);
    assert_int_equal(ps_layout_first_diff(&back, &l), -1);
    /* Options are part of the identity; clearing them gives version 1 back. */
    ps_layout_t plain;
    build_small(&plain);
    assert_true(ps_layout_hash(&l) != ps_layout_hash(&plain));
    assert_int_equal(ps_layout_first_diff(&l, &plain), 0);
    assert_int_equal(ps_layout_set_opts(&l, 0, 0, 0, 0), 0);
    assert_int_equal(ps_layout_set_opts(&l, 1, 0, 0, 0), 0);
    assert_false(ps_layout_has_opts(&l));
    assert_int_equal(ps_layout_encode(&l, buf, sizeof buf), sizeof small_bytes);
    assert_memory_equal(buf, small_bytes, sizeof small_bytes);
    assert_true(ps_layout_hash(&l) == fnv1a(small_bytes, sizeof small_bytes));
}

static void test_opts_refused(void **state)
{
    (void)state;
    ps_layout_t l;
    build_small(&l);
    assert_int_equal(ps_layout_set_opts(&l, 2, PS_TOPT_WD, 0, 0), PS_EINVAL);
    assert_int_equal(ps_layout_set_opts(&l, 0, 4, 0, 0), PS_EINVAL);
    assert_int_equal(ps_layout_set_opts(&l, 0, PS_TOPT_WD, -0.1, 0), PS_EINVAL);
    assert_int_equal(ps_layout_set_opts(&l, 1, PS_TOPT_LR, 0, NAN), PS_EINVAL);
    assert_int_equal(ps_layout_set_opts(&l, 1, PS_TOPT_LR, 0, INFINITY), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "'bc'"));
    assert_false(ps_layout_has_opts(&l)); /* nothing changed */
}

static void test_opts_decode_rejects(void **state)
{
    (void)state;
    uint8_t buf[sizeof small_v2_bytes];
    for (size_t n = 0; n < sizeof small_v2_bytes; n++) {
        expect_decode_reject(small_v2_bytes, n); /* every truncation */
    }
    const size_t opts0 = 27, wd0 = 28, lr1 = sizeof small_v2_bytes - 8;
    struct {
        size_t at;
        uint8_t v;
    } bad[] = {
        {opts0, 0x04},   /* unknown option bit */
        {wd0 + 7, 0xbf}, /* weight decay -0.0...: negative */
        {wd0 + 8, 0x01}, /* a value where the bit is clear: not canonical */
        {lr1 + 7, 0x7f}, /* lr scale 2^1023: over any sane bound */
        {0, 0x51},       /* another magic: a count far over the limit */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        memcpy(buf, small_v2_bytes, sizeof buf);
        buf[bad[k].at] = bad[k].v;
        expect_decode_reject(buf, sizeof buf);
    }
    /* Version 2 where no tensor has options would hash unlike its twin. */
    memcpy(buf, small_v2_bytes, sizeof buf);
    buf[opts0] = 0;
    buf[sizeof small_v2_bytes - 17] = 0;
    memset(buf + lr1, 0, 8);
    expect_decode_reject(buf, sizeof buf);
}

static void test_first_diff(void **state)
{
    (void)state;
    ps_layout_t a, b;
    const int64_t d4[1] = {4};
    build_mlp(&a);
    build_mlp(&b);
    assert_int_equal(ps_layout_first_diff(&a, &b), -1);
    b.t[2].dims[0] = 11; /* a shape */
    assert_int_equal(ps_layout_first_diff(&a, &b), 2);
    build_mlp(&b);
    assert_int_equal(ps_layout_add(&b, "extra", 1, d4), 0); /* one more */
    assert_int_equal(ps_layout_first_diff(&a, &b), 4);
    assert_int_equal(ps_layout_first_diff(&b, &a), 4);
    build_mlp(&b);
    assert_int_equal(ps_layout_set_opts(&b, 3, PS_TOPT_WD, 0.0, 0.0), 0);
    assert_int_equal(ps_layout_first_diff(&a, &b), 3);
    char desc[128];
    ps_layout_describe_tensor(&b.t[3], desc, sizeof desc);
    assert_string_equal(desc, "'fc2.bias' [10] weight_decay 0");
    ps_layout_describe_tensor(&a.t[0], desc, sizeof desc);
    assert_string_equal(desc, "'fc1.weight' [256,784]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_offsets_totals),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_duplicate),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_bad_dims),
        cmocka_unit_test(test_total_limit),
        cmocka_unit_test(test_tensor_limit),
        cmocka_unit_test(test_encode_fixed_bytes),
        cmocka_unit_test(test_decode_fixed_bytes),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_max),
        cmocka_unit_test(test_hash_is_fnv1a),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_decode_rejects_truncations),
        cmocka_unit_test(test_decode_rejects_trailing),
        cmocka_unit_test(test_decode_rejects_bad_fields),
        cmocka_unit_test(test_decode_rejects_name_length),
        cmocka_unit_test(test_decode_rejects_count),
        cmocka_unit_test(test_decode_rejects_duplicate),
        cmocka_unit_test(test_opts_encode_decode),
        cmocka_unit_test(test_opts_refused),
        cmocka_unit_test(test_opts_decode_rejects),
        cmocka_unit_test(test_first_diff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
