/*
 * optim_driver: run srv_optim_apply() over a few steps for a test script.
 *
 *     optim_driver INPUT OUTPUT
 *
 * INPUT, little endian, field by field:
 *     8 bytes  magic "PSOPTIN1"
 *     f64 x 4  lr, momentum, dampening, weight_decay (IEEE-754 bits)
 *     u32      nesterov (0/1)
 *     u32      steps
 *     u64      n
 *     f32 x n  initial weights
 *     steps x (f32 x n) gradients, one array per step
 * OUTPUT:
 *     8 bytes  magic "PSOPTOUT"
 *     u64      n
 *     f32 x n  final weights
 *     f32 x n  final momentum buffer (zeros when momentum == 0)
 *
 * Each step is one srv_optim_apply() with a single part of coefficient 1;
 * the first step has first = 1, like torch.optim.SGD's first step.
 * Exit 0 on success, 2 on bad input or settings (message on stderr).
 */
#include "ps_bytes.h"
#include "ps_err.h"
#include "srv_optim.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IN_HDR 56
#define MAX_IN ((size_t)1 << 31) /* 2 GiB: far beyond any test */

typedef struct {
    srv_optim_cfg_t cfg;
    uint32_t steps;
    uint64_t n;
    float *w;    /* n */
    float *buf;  /* n */
    float *grad; /* steps * n */
} drv_t;

static double get_f64(const uint8_t *p)
{
    uint64_t u = ps_get_u64(p);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void get_f32s(float *dst, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = ps_get_u32(p + 4 * i);
        memcpy(&dst[i], &u, sizeof u);
    }
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        ps_error_set("%s: cannot open", path);
        return PS_EIO;
    }
    uint8_t *b = NULL;
    long sz = -1;
    if (fseek(f, 0, SEEK_END) == 0) {
        sz = ftell(f);
    }
    if (sz < IN_HDR || (size_t)sz > MAX_IN || fseek(f, 0, SEEK_SET) != 0 ||
        (b = malloc((size_t)sz)) == NULL || fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        ps_error_set("%s: cannot read, or size %ld outside [%d, %zu]", path, sz, IN_HDR, MAX_IN);
        free(b);
        fclose(f);
        return PS_EIO;
    }
    fclose(f);
    *out = b;
    *len = (size_t)sz;
    return 0;
}

static int parse_input(drv_t *d, const uint8_t *b, size_t len)
{
    if (memcmp(b, "PSOPTIN1", 8) != 0) {
        ps_error_set("bad magic");
        return PS_EFORMAT;
    }
    d->cfg.lr = get_f64(b + 8);
    d->cfg.momentum = get_f64(b + 16);
    d->cfg.dampening = get_f64(b + 24);
    d->cfg.weight_decay = get_f64(b + 32);
    d->cfg.nesterov = ps_get_u32(b + 40) != 0;
    d->steps = ps_get_u32(b + 44);
    d->n = ps_get_u64(b + 48);
    /* Check the size before allocating: n and steps come from the file. */
    uint64_t arrays = (uint64_t)d->steps + 1;
    if (d->n > MAX_IN / 4 || arrays > MAX_IN || d->n * 4 * arrays != len - IN_HDR) {
        ps_error_set("size %zu does not match n=%llu steps=%u", len, (unsigned long long)d->n,
                     d->steps);
        return PS_EFORMAT;
    }
    size_t n = (size_t)d->n;
    d->w = malloc(n * 4 + 4);
    d->buf = calloc(n + 1, 4);
    d->grad = malloc(n * 4 * d->steps + 4);
    if (d->w == NULL || d->buf == NULL || d->grad == NULL) {
        ps_error_set("out of memory");
        return PS_ENOMEM;
    }
    get_f32s(d->w, b + IN_HDR, n);
    get_f32s(d->grad, b + IN_HDR + 4 * n, n * d->steps);
    return 0;
}

static void run_steps(drv_t *d)
{
    const float one = 1.0f;
    for (uint32_t s = 0; s < d->steps; s++) {
        const float *part = d->grad + (size_t)s * d->n;
        srv_optim_apply(&d->cfg, d->w, d->buf, &part, &one, 1, (size_t)d->n, s == 0);
    }
}

static int write_output(const drv_t *d, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        ps_error_set("%s: cannot create", path);
        return PS_EIO;
    }
    uint8_t hdr[16];
    memcpy(hdr, "PSOPTOUT", 8);
    ps_put_u64(hdr + 8, d->n);
    int ok = fwrite(hdr, 1, sizeof hdr, f) == sizeof hdr;
    const float *arr[2] = {d->w, d->buf};
    for (int a = 0; a < 2 && ok; a++) {
        for (size_t i = 0; i < d->n && ok; i++) {
            uint8_t le[4];
            uint32_t u;
            memcpy(&u, &arr[a][i], sizeof u);
            ps_put_u32(le, u);
            ok = fwrite(le, 1, 4, f) == 4;
        }
    }
    if (fclose(f) != 0 || !ok) {
        ps_error_set("%s: write failed", path);
        return PS_EIO;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUT OUTPUT\n", argv[0]);
        return 2;
    }
    drv_t d = {0};
    uint8_t *in = NULL;
    size_t len = 0;
    int rv = read_file(argv[1], &in, &len);
    if (rv == 0) {
        rv = parse_input(&d, in, len);
    }
    if (rv == 0) {
        rv = srv_optim_check(&d.cfg);
    }
    if (rv == 0) {
        run_steps(&d);
        rv = write_output(&d, argv[2]);
    }
    if (rv != 0) {
        fprintf(stderr, "optim_driver: %s (%s)\n", ps_error_msg(), ps_strerror(rv));
    }
    free(in);
    free(d.w);
    free(d.buf);
    free(d.grad);
    return rv == 0 ? 0 : 2;
}
