/*
 * libFuzzer target: the safetensors reader (ps_st_open, common/
 * ps_safetensors.h).  Each input is written to a file and opened.
 *
 * Invariants on success:
 *   - every tensor named by ps_st_name is found by ps_st_get, with 0..4
 *     dims, and its product(shape) values (4 bytes each, 8 for I64, as
 *     ps_st_is_i64 says) are readable (ASan checks);
 *   - together the tensors cover the data section exactly: their sizes add
 *     up to the file size minus the 8-byte length and the header;
 *   - writing the tensors back with ps_st_write and reading that file gives
 *     the same names in the same order, the same shapes and the same bits.
 * On failure: *out is NULL and there is a message.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "ps_bytes.h"
#include "ps_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_T = 256 };

typedef struct {
    int n;
    const char *name[MAX_T];
    const float *data[MAX_T];
    int ndim[MAX_T];
    int64_t shape[MAX_T][PS_MAX_DIMS];
    uint64_t numel[MAX_T];
    int i64[MAX_T];
} view_t;

/* Collects every tensor of f, checking each; returns the total bytes. */
static uint64_t view_fill(const ps_st_file_t *f, view_t *v)
{
    uint64_t bytes = 0;
    v->n = ps_st_count(f);
    FZ_CHECK(v->n >= 0 && ps_st_name(f, v->n) == NULL && ps_st_name(f, -1) == NULL);
    for (int i = 0; i < v->n && i < MAX_T; i++) {
        v->name[i] = ps_st_name(f, i);
        FZ_CHECK(v->name[i] != NULL);
        FZ_CHECK(ps_st_get(f, v->name[i], &v->data[i], &v->ndim[i], v->shape[i]) == 0);
        FZ_CHECK(v->ndim[i] >= 0 && v->ndim[i] <= PS_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < v->ndim[i]; d++) {
            FZ_CHECK(v->shape[i][d] >= 0);
            numel *= (uint64_t)v->shape[i][d];
        }
        v->i64[i] = ps_st_is_i64(f, v->name[i]);
        FZ_CHECK(v->i64[i] == 0 || v->i64[i] == 1);
        uint64_t words = numel * (v->i64[i] ? 2 : 1);
        volatile uint32_t sink = 0;
        for (uint64_t k = 0; k < words; k++) {
            uint32_t u;
            memcpy(&u, &v->data[i][k], 4);
            sink ^= u;
        }
        (void)sink;
        v->numel[i] = numel;
        bytes += words * 4;
    }
    return bytes;
}

/* The same tensors, names in the same order, the same bits. */
static void view_same(const view_t *a, const view_t *b)
{
    FZ_CHECK(a->n == b->n);
    for (int i = 0; i < a->n && i < MAX_T; i++) {
        FZ_CHECK(strcmp(a->name[i], b->name[i]) == 0);
        FZ_CHECK(a->ndim[i] == b->ndim[i] && a->numel[i] == b->numel[i]);
        FZ_CHECK(memcmp(a->shape[i], b->shape[i], (size_t)a->ndim[i] * sizeof(int64_t)) == 0);
        FZ_CHECK(a->i64[i] == b->i64[i]);
        FZ_CHECK(a->numel[i] == 0 ||
                 memcmp(a->data[i], b->data[i], a->numel[i] * (a->i64[i] ? 8 : 4)) == 0);
    }
}

/* Writes v with ps_st_write and reads it back. */
static void round_trip(const view_t *v, const char *path)
{
    static ps_st_tensor_t t[MAX_T];
    for (int i = 0; i < v->n; i++) {
        t[i] = (ps_st_tensor_t){
            .name = v->name[i], .ndim = v->ndim[i], .shape = v->shape[i], .data = v->data[i]};
    }
    FZ_CHECK(ps_st_write_typed(path, t, v->i64, v->n, NULL, 0) == 0);
    ps_st_file_t *g = NULL;
    FZ_CHECK(ps_st_open(&g, path) == 0 && g != NULL);
    static view_t w;
    view_fill(g, &w);
    view_same(v, &w);
    ps_st_close(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[256], copy[256];
    fz_path(path, sizeof path, "input.safetensors");
    fz_path(copy, sizeof copy, "copy.safetensors");
    fz_write(path, data, size);
    ps_st_file_t *f = (ps_st_file_t *)1;
    int rv = ps_st_open(&f, path);
    if (rv != 0) {
        FZ_CHECK(f == NULL && fz_known_error(rv) && ps_error_msg()[0] != '\0');
        return 0;
    }
    FZ_CHECK(f != NULL && size >= 8);
    static view_t v;
    uint64_t bytes = view_fill(f, &v);
    uint64_t hlen = ps_get_u64(data);
    if (v.n <= MAX_T) {
        FZ_CHECK(bytes == size - 8 - hlen);
        round_trip(&v, copy);
    }
    (void)ps_st_meta(f, "step");
    (void)ps_st_meta(f, "");
    rv = ps_st_get(f, "no such tensor?", NULL, NULL, NULL);
    FZ_CHECK(rv == 0 || rv == PS_ENOENT);
    ps_st_close(&f);
    ps_st_close(&f);
    FZ_CHECK(f == NULL);
    return 0;
}
