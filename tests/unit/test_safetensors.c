/*
 * Unit tests for common/ps_safetensors: round trips, the exact bytes of
 * small files (written out by hand below), files laid out the way the
 * reference `safetensors` package writes them, every class of malformed
 * file, and the atomic replacement of an existing file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_safetensors.h"
#include "unit_tmp.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

static const char *in_dir(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return path;
}

static int setup_dir(void **state)
{
    (void)state;
    return ut_mkdtemp(g_dir, sizeof g_dir, "ps-st-test");
}

static int teardown_dir(void **state)
{
    (void)state;
    return ut_rm_tree(g_dir);
}

static void write_raw(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* A file with a hand-written header: 8-byte LE length `hlen`, the header
 * text as given (no padding added), then `dlen` data bytes. */
static void write_st(const char *path, uint64_t hlen, const char *hdr, const void *data,
                     size_t dlen)
{
    size_t tlen = strlen(hdr);
    uint8_t *b = malloc(8 + tlen + dlen + 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(hlen >> (8 * i));
    }
    memcpy(b + 8, hdr, tlen);
    if (dlen > 0) {
        memcpy(b + 8 + tlen, data, dlen);
    }
    write_raw(path, b, 8 + tlen + dlen);
    free(b);
}

static uint8_t *read_raw(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Temp files a write left behind in the test directory. */
static int count_tmp_files(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += strstr(e->d_name, ".tmp.") != NULL;
    }
    closedir(d);
    return n;
}

/* ---- writing and reading back ----------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    static const char weird[] = "we\"ird\\name\n\t\x01 \xc3\xa9/";
    const int64_t s_w[2] = {3, 2}, s_b[1] = {3}, s_e[2] = {0, 5};
    const uint32_t nan_bits = 0x7fc00123;
    float w[6] = {1.5f, -0.0f, 3.25f, 1e-38f, -7.0f, 0.0f}, b[3] = {0.1f, 0.2f, 0.3f}, sc = 42;
    memcpy(&w[5], &nan_bits, 4); /* a NaN payload must survive */
    const ps_st_tensor_t t[5] = {
        {"fc1.weight", 2, s_w, w}, {"fc1.bias", 1, s_b, b}, {"scalar", 0, NULL, &sc},
        {"empty", 2, s_e, NULL},   {weird, 1, s_b, b},
    };
    const char *meta[] = {
        "format", "pt", "quote\"key", "line1\nline2\\ \x1f end", "unicode", "\xc3\xbcn\xc3\xaf"};
    const char *path = in_dir("rt.safetensors");
    assert_int_equal(ps_st_write(path, t, 5, meta, 3), 0);

    ps_st_file_t *f = NULL;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_int_equal(ps_st_count(f), 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(ps_st_name(f, i), t[i].name); /* file order */
        const float *data;
        int ndim;
        int64_t shape[PS_MAX_DIMS];
        assert_int_equal(ps_st_get(f, t[i].name, &data, &ndim, shape), 0);
        assert_int_equal(ndim, t[i].ndim);
        size_t numel = 1;
        for (int d = 0; d < ndim; d++) {
            assert_int_equal(shape[d], t[i].shape[d]);
            numel *= (size_t)shape[d];
        }
        assert_memory_equal(data, numel ? (const void *)t[i].data : (const void *)"", numel * 4);
    }
    assert_null(ps_st_name(f, 5));
    assert_null(ps_st_name(f, -1));
    for (int k = 0; k < 3; k++) {
        assert_string_equal(ps_st_meta(f, meta[2 * k]), meta[2 * k + 1]);
    }
    assert_null(ps_st_meta(f, "missing"));
    assert_int_equal(ps_st_get(f, "fc2.weight", NULL, NULL, NULL), PS_ENOENT);
    ps_st_close(&f);
    assert_null(f);
    ps_st_close(&f); /* safe twice */
}

static void test_header_bytes(void **state)
{
    (void)state;
    const int64_t shape[1] = {2};
    const float data[2] = {1.0f, -2.0f};
    const ps_st_tensor_t t = {"a", 1, shape, data};
    const char *meta[] = {"format", "pt"};
    const char *path = in_dir("tiny.safetensors");
    assert_int_equal(ps_st_write(path, &t, 1, meta, 1), 0);
    /* The JSON is 85 bytes; three spaces pad it to 88 = 0x58.  Then 1.0f
     * (0x3f800000) and -2.0f (0xc0000000), little endian. */
    static const char want[] = "\x58\0\0\0\0\0\0\0"
                               "{\"__metadata__\":{\"format\":\"pt\"},"
                               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
                               "   "
                               "\x00\x00\x80\x3f"
                               "\x00\x00\x00\xc0";
    size_t len;
    uint8_t *got = read_raw(path, &len);
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(got, want, sizeof want - 1);
    free(got);
}

static void test_header_bytes_escaped_name(void **state)
{
    (void)state;
    const float one = 1.0f;
    const ps_st_tensor_t t = {"t\"\\\x01", 0, NULL, &one};
    const char *path = in_dir("esc.safetensors");
    assert_int_equal(ps_st_write(path, &t, 1, NULL, 0), 0);
    /* Name t"\<U+0001> is written "t\"\\\u0001"; no __metadata__ when there
     * is none.  63 bytes of JSON + 1 space = 64 = 0x40. */
    static const char want[] = "\x40\0\0\0\0\0\0\0"
                               "{\"t\\\"\\\\\\u0001\":{\"dtype\":\"F32\",\"shape\":[],"
                               "\"data_offsets\":[0,4]}}"
                               " "
                               "\x00\x00\x80\x3f";
    size_t len;
    uint8_t *got = read_raw(path, &len);
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(got, want, sizeof want - 1);
    free(got);
}

/* Control characters in names and metadata are written as serde_json (the
 * reference writer) writes them: short escapes where JSON has one, else
 * \u00XX with lower-case hex; DEL (0x7f) and UTF-8 pass through. */
static void test_header_bytes_control_characters(void **state)
{
    (void)state;
    const float one = 1.0f;
    const ps_st_tensor_t t = {"c\x0e\x1a", 0, NULL, &one};
    const char *meta[] = {"k\x0b", "\x1f\x7f"};
    const char *path = in_dir("ctl.safetensors");
    assert_int_equal(ps_st_write(path, &t, 1, meta, 1), 0);
    /* 102 bytes of JSON + 2 spaces = 104 = 0x68. */
    static const char want[] = "\x68\0\0\0\0\0\0\0"
                               "{\"__metadata__\":{\"k\\u000b\":\"\\u001f\x7f\"},"
                               "\"c\\u000e\\u001a\":{\"dtype\":\"F32\",\"shape\":[],"
                               "\"data_offsets\":[0,4]}}"
                               "  "
                               "\x00\x00\x80\x3f";
    size_t len;
    uint8_t *got = read_raw(path, &len);
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(got, want, sizeof want - 1);
    free(got);
    ps_st_file_t *f;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_string_equal(ps_st_name(f, 0), "c\x0e\x1a");
    assert_string_equal(ps_st_meta(f, "k\x0b"), "\x1f\x7f");
    ps_st_close(&f);
}

/* Dimensions past 2^53 (where a double would round) and up to 2^63-1 are
 * written and read exactly; an empty tensor may have them. */
static void test_large_dimensions(void **state)
{
    (void)state;
    const int64_t s_big[2] = {0, 9007199254740993LL}, s_max[2] = {INT64_MAX, 0};
    const ps_st_tensor_t t[2] = {{"big", 2, s_big, NULL}, {"max", 2, s_max, NULL}};
    const char *path = in_dir("large.safetensors");
    assert_int_equal(ps_st_write(path, t, 2, NULL, 0), 0);
    /* 148 bytes of JSON + 4 spaces = 152 = 0x98. */
    static const char want[] = "\x98\0\0\0\0\0\0\0"
                               "{\"big\":{\"dtype\":\"F32\",\"shape\":[0,9007199254740993],"
                               "\"data_offsets\":[0,0]},"
                               "\"max\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,0],"
                               "\"data_offsets\":[0,0]}}"
                               "    ";
    size_t len;
    uint8_t *got = read_raw(path, &len);
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(got, want, sizeof want - 1);
    free(got);
    ps_st_file_t *f;
    assert_int_equal(ps_st_open(&f, path), 0);
    int64_t shape[PS_MAX_DIMS];
    int ndim;
    assert_int_equal(ps_st_get(f, "big", NULL, &ndim, shape), 0);
    assert_int_equal(ndim, 2);
    assert_true(shape[0] == 0 && shape[1] == 9007199254740993LL);
    assert_int_equal(ps_st_get(f, "max", NULL, &ndim, shape), 0);
    assert_true(shape[0] == INT64_MAX && shape[1] == 0);
    ps_st_close(&f);
}

static void test_empty_file(void **state)
{
    (void)state;
    const char *path = in_dir("empty.safetensors");
    assert_int_equal(ps_st_write(path, NULL, 0, NULL, 0), 0);
    size_t len;
    uint8_t *got = read_raw(path, &len);
    /* "{}" padded with six spaces to 8 bytes; no data. */
    assert_int_equal(len, 16);
    assert_memory_equal(got, "\x08\0\0\0\0\0\0\0{}      ", 16);
    free(got);
    ps_st_file_t *f;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_int_equal(ps_st_count(f), 0);
    assert_int_equal(ps_st_get(f, "x", NULL, NULL, NULL), PS_ENOENT);
    assert_null(ps_st_meta(f, "x"));
    ps_st_close(&f);
}

static void test_padding_to_8(void **state)
{
    (void)state;
    const float v[3] = {1, 2, 3};
    const int64_t shape[1] = {3};
    const char *path = in_dir("pad.safetensors");
    for (int len = 1; len <= 16; len++) {
        char name[32];
        memset(name, 'n', (size_t)len);
        name[len] = '\0';
        const ps_st_tensor_t t = {name, 1, shape, v};
        assert_int_equal(ps_st_write(path, &t, 1, NULL, 0), 0);
        size_t flen;
        uint8_t *b = read_raw(path, &flen);
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--) {
            h = (h << 8) | b[i];
        }
        assert_int_equal(h % 8, 0);
        assert_int_equal(flen, 8 + h + 12);
        size_t close = 8 + h - 1; /* padding: spaces after the final '}' */
        while (b[close] == ' ') {
            close--;
        }
        assert_int_equal(b[close], '}');
        assert_true(8 + h - 1 - close < 8);
        assert_memory_equal(b + 8 + h, v, 12);
        free(b);
    }
}

/* ---- files laid out by the reference implementation ------------------- */

static void check_tensor(ps_st_file_t *f, const char *name, int ndim, const int64_t *shape,
                         const float *want)
{
    const float *data;
    int nd;
    int64_t s[PS_MAX_DIMS];
    assert_int_equal(ps_st_get(f, name, &data, &nd, s), 0);
    assert_int_equal(nd, ndim);
    size_t numel = 1;
    for (int d = 0; d < nd; d++) {
        assert_int_equal(s[d], shape[d]);
        numel *= (size_t)s[d];
    }
    assert_memory_equal(data, want, numel * 4);
}

static void test_reads_reference_layout(void **state)
{
    (void)state;
    /* What safetensors.torch.save_file({"weight": w, "bias": b},
     * metadata={"format": "pt"}) writes: __metadata__ first, tensors sorted
     * by name and packed in that order, header padded with spaces. */
    static const char hdr[] = "{\"__metadata__\":{\"format\":\"pt\"},"
                              "\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"weight\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                              "\"data_offsets\":[8,24]}}"
                              "   "; /* 149 + 3 = 152 bytes */
    const float data[6] = {0.5f, -0.5f, 1, 2, 3, 4};
    const char *path = in_dir("ref.safetensors");
    assert_int_equal(strlen(hdr), 152);
    write_st(path, 152, hdr, data, sizeof data);
    ps_st_file_t *f;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_int_equal(ps_st_count(f), 2);
    assert_string_equal(ps_st_name(f, 0), "bias");
    assert_string_equal(ps_st_name(f, 1), "weight");
    check_tensor(f, "bias", 1, (const int64_t[]){2}, data);
    check_tensor(f, "weight", 2, (const int64_t[]){2, 2}, data + 2);
    assert_string_equal(ps_st_meta(f, "format"), "pt");
    ps_st_close(&f);
}

static void test_reads_other_valid_forms(void **state)
{
    (void)state;
    /* Whitespace everywhere, keys in another order, metadata last, \u
     * escapes (é and a surrogate pair for U+1F600), the data section in a
     * different order from the header, and an unpadded 189-byte header so
     * the data is not aligned inside the file. */
    static const char hdr[] =
        " {\n  \"w\\u00e9ight\" : { \"data_offsets\" : [ 8 , 16 ] , \"shape\":[2],"
        "\t\"dtype\":\"F32\" },\r\n  \"\\ud83d\\ude00\\/x\":{\"shape\":[1,2,1],"
        "\"dtype\":\"F32\",\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":\"v\\u0041\"}}\n";
    const float data[4] = {1, 2, 3, 4};
    const char *path = in_dir("other.safetensors");
    assert_int_equal(strlen(hdr), 189);
    write_st(path, strlen(hdr), hdr, data, sizeof data);
    ps_st_file_t *f;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_int_equal(ps_st_count(f), 2);
    assert_string_equal(ps_st_name(f, 0), "w\xc3\xa9ight");
    assert_string_equal(ps_st_name(f, 1), "\xf0\x9f\x98\x80/x");
    check_tensor(f, "w\xc3\xa9ight", 1, (const int64_t[]){2}, data + 2);
    check_tensor(f, "\xf0\x9f\x98\x80/x", 3, (const int64_t[]){1, 2, 1}, data);
    assert_string_equal(ps_st_meta(f, "k"), "vA");
    ps_st_close(&f);
}

/* ---- malformed files ---------------------------------------------------- */

static void expect_format_error(const char *path, const char *needle)
{
    ps_st_file_t *f = (ps_st_file_t *)(uintptr_t)1;
    ps_error_clear();
    int rv = ps_st_open(&f, path);
    if (rv != PS_EFORMAT || f != NULL || strstr(ps_error_msg(), path) == NULL ||
        strstr(ps_error_msg(), needle) == NULL) {
        fail_msg("rv %d, message \"%s\", wanted PS_EFORMAT and \"%s\"", rv, ps_error_msg(), needle);
    }
}

/* A header with a valid length field, followed by `dlen` bytes of zeros. */
static void expect_bad_header(const char *hdr, size_t dlen, const char *needle)
{
    static const uint8_t zeros[64];
    const char *path = in_dir("bad.safetensors");
    assert_true(dlen <= sizeof zeros);
    write_st(path, strlen(hdr), hdr, zeros, dlen);
    expect_format_error(path, needle);
}

#define T_A "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static void test_rejects_truncated(void **state)
{
    (void)state;
    const int64_t shape[1] = {4};
    const float v[4] = {1, 2, 3, 4};
    const ps_st_tensor_t t = {"x", 1, shape, v};
    const char *good = in_dir("good.safetensors"), *cut = in_dir("cut.safetensors");
    assert_int_equal(ps_st_write(good, &t, 1, NULL, 0), 0);
    size_t len;
    uint8_t *b = read_raw(good, &len);
    const size_t cuts[] = {0, 4, 7};
    for (size_t i = 0; i < 3; i++) {
        write_raw(cut, b, cuts[i]);
        expect_format_error(cut, "too short for the 8-byte header length");
    }
    write_raw(cut, b, 8 + 20); /* inside the header */
    expect_format_error(cut, "runs past the end");
    write_raw(cut, b, len - 1); /* inside the data */
    expect_format_error(cut, "run past the 15-byte data section");
    write_raw(cut, b, len - 16); /* all data gone */
    expect_format_error(cut, "run past the 0-byte data section");
    free(b);
}

static void test_rejects_bad_header_length(void **state)
{
    (void)state;
    const char *path = in_dir("len.safetensors");
    static const char hdr[] = "{" T_A "}";
    const float v[2] = {1, 2};
    write_st(path, (uint64_t)1 << 40, hdr, v, 8);
    expect_format_error(path, "over the 100 MiB limit");
    write_st(path, ((uint64_t)100 << 20) + 1, hdr, v, 8);
    expect_format_error(path, "over the 100 MiB limit");
    write_st(path, UINT64_MAX, hdr, v, 8);
    expect_format_error(path, "over the 100 MiB limit");
    write_st(path, strlen(hdr) + 9, hdr, v, 8); /* past the end of the file */
    expect_format_error(path, "runs past the end");
    write_st(path, strlen(hdr) - 1, hdr, v, 8); /* cuts the JSON short */
    expect_format_error(path, "bad safetensors header");
    write_st(path, 0, "", NULL, 0);
    expect_format_error(path, "'[' or '{' expected near end of file");
}

static void test_rejects_bad_json(void **state)
{
    (void)state;
    static const struct {
        const char *hdr, *needle;
    } cases[] = {
        /* Syntax: jansson's messages, after the byte position. */
        {"{" T_A, "at byte 53: '}' expected near end of file"},
        {"{" T_A ",}", "string or '}' expected"},
        {"{" T_A "}x", "end of file expected near 'x'"},
        {"{" T_A "}{}", "end of file expected near '{'"},
        {"[" T_A "]", "']' expected near ':'"},
        {"{\"a\" {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "':' expected"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,],\"data_offsets\":[0,8]}}",
         "unexpected token near ']'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}",
         "invalid token near '0'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2] \"data_offsets\":[0,8]}}",
         "'}' expected near '\"data_offsets\"'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2 2],\"data_offsets\":[0,8]}}",
         "']' expected near '2'"},
        {"{\"a\":{\"dtype\":\"F32", "premature end of input"},
        {"{\"a\\x\":{}}", "invalid escape"},
        {"{\"a\\u12\":{}}", "invalid escape"},
        {"{\"a\\udc00\":{}}", "invalid Unicode '\\uDC00'"},
        {"{\"a\\ud800x\":{}}", "invalid Unicode '\\uD800'"},
        {"{\"a\\u0000\":{}}", "NUL byte in object key"},
        {"{\"__metadata__\":{\"k\":\"v\\u0000\"}}", "\\u0000 is not allowed"},
        {"{\"a\tb\":{}}", "control character 0x9"},
        {"{\"a\xff\":{}}", "unable to decode byte 0xff"},
        {"{\"a\xc0\x80\":{}}", "unable to decode byte 0xc0"},     /* overlong NUL */
        {"{\"a\xed\xa0\x80\":{}}", "unable to decode byte 0xed"}, /* a surrogate */
        /* Integers: past 2^63-1, a fraction or exponent, negative. */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99999999999999999999]}}",
         "too big integer near '99999999999999999999'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,8]}}",
         "too big integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
         "tensor 'a': shape[0] is negative, not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}",
         "shape[0] is a fraction or exponent, not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}",
         "shape[0] is a fraction or exponent"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}",
         "data_offsets[1] is a fraction or exponent"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}",
         "data_offsets[1] is a string, not a non-negative integer"},
        /* Valid JSON, wrong structure. */
        {"[]", "the header is an array, not an object"},
        {"{\"a\":[]}", "tensor 'a': Expected object, got array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":null,\"data_offsets\":[0,8]}}",
         "tensor 'a': shape is null, not an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}}",
         "tensor 'a': data_offsets is an object, not an array"},
        {"{\"a\":{\"dtype\":true,\"shape\":[2],\"data_offsets\":[0,8]}}",
         "tensor 'a': Expected string, got true"},
        {"{\"__metadata__\":{\"k\":1}," T_A "}",
         "__metadata__ value of 'k' is an integer, not a string"},
        {"{\"__metadata__\":[]," T_A "}", "__metadata__ is an array, not an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_bad_header(cases[i].hdr, 8, cases[i].needle);
    }
}

static void test_rejects_non_f32(void **state)
{
    (void)state;
    static const char *dtypes[] = {"F16", "BF16", "F64", "I32", "U8", "BOOL", "f32", "F32 ", ""};
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "{\"a\":{\"dtype\":\"%s\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                 dtypes[i]);
        expect_bad_header(hdr, 8, "is not supported (only F32 and I64)");
    }
}

/* A sparse table's keys: dtype I64, 8 bytes an element, little-endian
 * (the bytes written out by hand), read back as such. */
static void test_i64_round_trip(void **state)
{
    (void)state;
    const int64_t keys[2] = {3, (int64_t)1 << 40}, s_k[1] = {2}, s_w[2] = {2, 1};
    const float w[2] = {0.5f, -1.0f};
    const ps_st_tensor_t t[2] = {{"e.keys", 1, s_k, (const float *)keys}, {"e", 2, s_w, w}};
    const int i64[2] = {1, 0};
    const char *path = in_dir("i64.safetensors");
    assert_int_equal(ps_st_write_typed(path, t, i64, 2, NULL, 0), 0);
    size_t len;
    uint8_t *raw = read_raw(path, &len);
    static const uint8_t want[24] = {3, 0, 0, 0, 0, 0, 0, 0,    0, 0, 0,    0,
                                     0, 1, 0, 0, 0, 0, 0, 0x3f, 0, 0, 0x80, 0xbf};
    assert_true(len >= sizeof want);
    assert_memory_equal(raw + len - sizeof want, want, sizeof want);
    assert_non_null(strstr((const char *)raw + 8, "\"e.keys\":{\"dtype\":\"I64\""));
    free(raw);
    ps_st_file_t *f = NULL;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_int_equal(ps_st_is_i64(f, "e.keys"), 1);
    assert_int_equal(ps_st_is_i64(f, "e"), 0);
    assert_int_equal(ps_st_is_i64(f, "nope"), PS_ENOENT);
    const float *d;
    int nd;
    int64_t sh[PS_MAX_DIMS], back[2];
    assert_int_equal(ps_st_get(f, "e.keys", &d, &nd, sh), 0);
    assert_int_equal(nd, 1);
    assert_int_equal(sh[0], 2);
    memcpy(back, d, sizeof back);
    assert_memory_equal(back, keys, sizeof back);
    ps_st_close(&f);
    /* An I64 tensor whose offsets span 4 bytes an element is refused. */
    expect_bad_header("{\"k\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                      "shape needs 2 elements");
}

static void test_rejects_bad_offsets(void **state)
{
    (void)state;
    /* Past the data section. */
    expect_bad_header("{" T_A "}", 4, "run past the 4-byte data section");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8,
                      "run past the 8-byte data section");
    /* Overlapping, with a gap, or not reaching the end of the data. */
    expect_bad_header("{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "expected 8 (overlap)");
    expect_bad_header("{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                      20, "expected 8 (gap)");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                      "expected 0 (gap)");
    expect_bad_header("{" T_A "}", 12, "the tensors end at byte 8 of a 12-byte data section");
    expect_bad_header("{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                      "(overlap)");
    /* Wrong arity. */
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
                      "more than 2 elements");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8,
                      "needs 2 integers");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
                      "end before they begin");
}

static void test_rejects_shape_mismatch(void **state)
{
    (void)state;
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                      "shape needs 3 elements but data_offsets span 8 bytes");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8,
                      "shape needs 4 elements");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8,
                      "shape needs 1 elements");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,8]}}", 8,
                      "shape needs 0 elements");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,7]}}", 7,
                      "span 7 bytes");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                      "\"data_offsets\":[0,8]}}",
                      8, "shape overflows");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                      "\"data_offsets\":[0,0]}}",
                      0, "shape needs 4611686018427387904 elements");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                      "shape has more than 4 elements");
}

static void test_rejects_bad_structure(void **state)
{
    (void)state;
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0,
                      "tensor 'a': Object item not found: data_offsets");
    expect_bad_header("{\"a\":{}}", 0, "Object item not found: dtype");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],"
                      "\"data_offsets\":[0,8]}}",
                      8, "duplicate object key near '\"dtype\"'");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
                      "\"extra\":[]}}",
                      8, "1 object item(s) left unpacked: extra");
    expect_bad_header("{" T_A "," T_A "}", 8, "duplicate object key near '\"a\"'");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                      0, "duplicate object key near '\"a\"'");
    expect_bad_header("{\"__metadata__\":{},\"__metadata__\":{}}", 0,
                      "duplicate object key near '\"__metadata__\"'");
    /* The writer refuses an empty name, so the reader must too (a fuzzer
     * find: tests/fuzz/regress/safetensors/empty_tensor_name). */
    expect_bad_header("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "tensor name '' is empty or not UTF-8");
    expect_bad_header("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
                      "duplicate object key near '\"k\"'");
}

static void test_open_missing_file(void **state)
{
    (void)state;
    ps_st_file_t *f;
    assert_int_equal(ps_st_open(&f, in_dir("does-not-exist")), PS_ENOENT);
    assert_null(f);
    assert_int_equal(ps_st_open(&f, g_dir), PS_EIO); /* a directory */
    ps_st_close(NULL);
}

/* ---- writing: arguments and atomic replacement -------------------------- */

static void test_write_rejects_bad_args(void **state)
{
    (void)state;
    const int64_t s1[1] = {2}, s5[5] = {1, 1, 1, 1, 1}, sneg[1] = {-1};
    const float v[2] = {1, 2};
    const char *path = in_dir("args.safetensors");
    const ps_st_tensor_t dup[2] = {{"a", 1, s1, v}, {"a", 1, s1, v}};
    const ps_st_tensor_t bad[] = {
        {"__metadata__", 1, s1, v}, {"", 1, s1, v},    {NULL, 1, s1, v},   {"x", 5, s5, v},
        {"x", -1, s1, v},           {"x", 1, sneg, v}, {"x", 1, s1, NULL}, {"\xff", 1, s1, v},
    };
    assert_int_equal(ps_st_write(path, dup, 2, NULL, 0), PS_EINVAL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ps_st_write(path, &bad[i], 1, NULL, 0), PS_EINVAL);
    }
    const char *dupmeta[] = {"k", "1", "k", "2"};
    assert_int_equal(ps_st_write(path, dup, 1, dupmeta, 2), PS_EINVAL);
    const char *nullmeta[] = {"k", NULL};
    assert_int_equal(ps_st_write(path, dup, 1, nullmeta, 1), PS_EINVAL);
    assert_int_equal(ps_st_write(path, dup, -1, NULL, 0), PS_EINVAL);
    assert_int_equal(access(path, F_OK), -1); /* nothing was created */
    assert_int_equal(count_tmp_files(), 0);
}

static void test_atomic_replace(void **state)
{
    (void)state;
    enum { BIG = 100000 };
    float *big = malloc(BIG * sizeof *big);
    assert_non_null(big);
    for (int i = 0; i < BIG; i++) {
        big[i] = (float)i;
    }
    const int64_t sb[1] = {BIG}, ss[1] = {3};
    const float small[3] = {7, 8, 9};
    const ps_st_tensor_t tb = {"big", 1, sb, big}, ts = {"small", 1, ss, small};
    const char *path = in_dir("model.safetensors");
    assert_int_equal(ps_st_write(path, &tb, 1, NULL, 0), 0);
    assert_int_equal(ps_st_write(path, &ts, 1, NULL, 0), 0);
    free(big);

    /* Only the new file is left, whole: no temp file, no old bytes. */
    assert_int_equal(count_tmp_files(), 0);
    size_t len;
    uint8_t *b = read_raw(path, &len);
    assert_int_equal(len, 8 + 64 + 12); /* 59 bytes of JSON + 5 spaces */
    assert_memory_equal(b + 8,
                        "{\"small\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}"
                        "     ",
                        64);
    free(b);
    ps_st_file_t *f;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_int_equal(ps_st_count(f), 1);
    check_tensor(f, "small", 1, ss, small);
    assert_int_equal(ps_st_get(f, "big", NULL, NULL, NULL), PS_ENOENT);
    ps_st_close(&f);

    /* A failed write (no such directory) leaves nothing behind. */
    assert_int_equal(ps_st_write(in_dir("nodir/x.safetensors"), &ts, 1, NULL, 0), PS_EIO);
    assert_non_null(strstr(ps_error_msg(), "nodir/x.safetensors.tmp."));
    assert_int_equal(count_tmp_files(), 0);
    unlink(path);

    /* A failure after the temp file exists (the rename onto a non-empty
     * directory fails) removes the temp file and leaves the target alone. */
    char sub[256], inner[300];
    snprintf(sub, sizeof sub, "%s", in_dir("dir.safetensors"));
    snprintf(inner, sizeof inner, "%s/keep", sub);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_raw(inner, "x", 1);
    assert_int_equal(ps_st_write(sub, &ts, 1, NULL, 0), PS_EIO);
    assert_non_null(strstr(ps_error_msg(), "cannot rename"));
    assert_int_equal(count_tmp_files(), 0);
    assert_int_equal(access(inner, F_OK), 0);
    unlink(inner);
    rmdir(sub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_header_bytes),
        cmocka_unit_test(test_header_bytes_escaped_name),
        cmocka_unit_test(test_header_bytes_control_characters),
        cmocka_unit_test(test_large_dimensions),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_padding_to_8),
        cmocka_unit_test(test_reads_reference_layout),
        cmocka_unit_test(test_reads_other_valid_forms),
        cmocka_unit_test(test_rejects_truncated),
        cmocka_unit_test(test_rejects_bad_header_length),
        cmocka_unit_test(test_rejects_bad_json),
        cmocka_unit_test(test_rejects_non_f32),
        cmocka_unit_test(test_i64_round_trip),
        cmocka_unit_test(test_rejects_bad_offsets),
        cmocka_unit_test(test_rejects_shape_mismatch),
        cmocka_unit_test(test_rejects_bad_structure),
        cmocka_unit_test(test_open_missing_file),
        cmocka_unit_test(test_write_rejects_bad_args),
        cmocka_unit_test(test_atomic_replace),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
