/*
 * optim_driver: run srv_optim_apply() over a few steps for a test script,
 * and print ps_sched learning rates for it.
 *
 *     optim_driver INPUT OUTPUT
 *     optim_driver --sched SPEC WARMUP BASE_LR STEPS_PER_EPOCH TOTAL_STEPS COUNT
 *
 * INPUT, little endian, field by field, in one of two versions:
 *   version 1 (one lr for every step, the torch form, no extras):
 *     8 bytes  magic "PSOPTIN1"
 *     f64 x 4  lr, momentum, dampening, weight_decay (IEEE-754 bits)
 *     u32      nesterov (0/1)
 *     u32      steps
 *     u64      n
 *     f32 x n  initial weights
 *     steps x (f32 x n) gradients, one array per step
 *   version 2 (every srv_optim_cfg_t field, an lr per step):
 *     8 bytes  magic "PSOPTIN2"
 *     f64 x 5  momentum, dampening, weight_decay, clip_value, decoupled_wd
 *     u32 x 4  nesterov (0/1), form (srv_form_t), maximize (0/1), steps
 *     u64      n
 *     f64 x steps  the lr of each step
 *     f32 x n  initial weights
 *     steps x (f32 x n) gradients, one array per step
 * OUTPUT:
 *     8 bytes  magic "PSOPTOUT"
 *     u64      n
 *     f32 x n  final weights
 *     f32 x n  final momentum buffer (zeros when momentum == 0)
 *
 * Each step is one srv_optim_apply() with a single part of coefficient 1;
 * the first step has first = 1, like torch.optim.SGD's first step.  Every
 * step's settings pass srv_optim_check() first.
 *
 * --sched prints ps_sched_describe() of the parsed schedule on one line,
 * then ps_sched_lr(t) for t = 0 .. COUNT-1, one C99 hex float per line.
 *
 * Exit 0 on success, 2 on bad input or settings (message on stderr).
 */
#include "ps_bytes.h"
#include "ps_err.h"
#include "ps_sched.h"
#include "srv_optim.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IN1_HDR 56
#define IN2_HDR 72
#define MAX_IN ((size_t)1 << 31) /* 2 GiB: far beyond any test */
#define MAX_SCHED_COUNT 10000000ULL

typedef struct {
    srv_optim_cfg_t cfg;
    uint32_t steps;
    uint64_t n;
    double *lr;  /* steps */
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
    if (sz < IN1_HDR || (size_t)sz > MAX_IN || fseek(f, 0, SEEK_SET) != 0 ||
        (b = malloc((size_t)sz)) == NULL || fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        ps_error_set("%s: cannot read, or size %ld outside [%d, %zu]", path, sz, IN1_HDR, MAX_IN);
        free(b);
        fclose(f);
        return PS_EIO;
    }
    fclose(f);
    *out = b;
    *len = (size_t)sz;
    return 0;
}

/* The header fields of either version; *hdr is where the arrays start. */
static int parse_header(drv_t *d, const uint8_t *b, size_t len, size_t *hdr)
{
    if (memcmp(b, "PSOPTIN1", 8) == 0) {
        d->cfg.lr = get_f64(b + 8);
        d->cfg.momentum = get_f64(b + 16);
        d->cfg.dampening = get_f64(b + 24);
        d->cfg.weight_decay = get_f64(b + 32);
        d->cfg.nesterov = ps_get_u32(b + 40) != 0;
        d->steps = ps_get_u32(b + 44);
        d->n = ps_get_u64(b + 48);
        *hdr = IN1_HDR;
        return 0;
    }
    if (memcmp(b, "PSOPTIN2", 8) != 0 || len < IN2_HDR) {
        ps_error_set("bad magic, or a version 2 header shorter than %d bytes", IN2_HDR);
        return PS_EFORMAT;
    }
    d->cfg.momentum = get_f64(b + 8);
    d->cfg.dampening = get_f64(b + 16);
    d->cfg.weight_decay = get_f64(b + 24);
    d->cfg.clip_value = get_f64(b + 32);
    d->cfg.decoupled_wd = get_f64(b + 40);
    d->cfg.nesterov = ps_get_u32(b + 48) != 0;
    d->cfg.form = (srv_form_t)ps_get_u32(b + 52);
    d->cfg.maximize = ps_get_u32(b + 56) != 0;
    d->steps = ps_get_u32(b + 60);
    d->n = ps_get_u64(b + 64);
    *hdr = IN2_HDR;
    return 0;
}

static int parse_input(drv_t *d, const uint8_t *b, size_t len)
{
    size_t hdr = 0;
    int rv = parse_header(d, b, len, &hdr);
    if (rv != 0) {
        return rv;
    }
    /* Check the size before allocating: n and steps come from the file. */
    uint64_t arrays = (uint64_t)d->steps + 1;
    uint64_t lr_bytes = hdr == IN2_HDR ? 8 * (uint64_t)d->steps : 0;
    if (d->n > MAX_IN / 4 || arrays > MAX_IN || d->n * 4 * arrays + lr_bytes != len - hdr) {
        ps_error_set("size %zu does not match n=%llu steps=%u", len, (unsigned long long)d->n,
                     d->steps);
        return PS_EFORMAT;
    }
    size_t n = (size_t)d->n;
    d->lr = malloc(8 * (size_t)d->steps + 8);
    d->w = malloc(n * 4 + 4);
    d->buf = calloc(n + 1, 4);
    d->grad = malloc(n * 4 * d->steps + 4);
    if (d->lr == NULL || d->w == NULL || d->buf == NULL || d->grad == NULL) {
        ps_error_set("out of memory");
        return PS_ENOMEM;
    }
    for (uint32_t s = 0; s < d->steps; s++) {
        d->lr[s] = hdr == IN2_HDR ? get_f64(b + hdr + 8 * (size_t)s) : d->cfg.lr;
    }
    get_f32s(d->w, b + hdr + lr_bytes, n);
    get_f32s(d->grad, b + hdr + lr_bytes + 4 * n, n * d->steps);
    return 0;
}

/* Every step's settings are checked before any step runs. */
static int check_steps(drv_t *d)
{
    for (uint32_t s = 0; s < d->steps; s++) {
        d->cfg.lr = d->lr[s];
        int rv = srv_optim_check(&d->cfg);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static void run_steps(drv_t *d)
{
    const float one = 1.0f;
    for (uint32_t s = 0; s < d->steps; s++) {
        const float *part = d->grad + (size_t)s * d->n;
        d->cfg.lr = d->lr[s];
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

static int run_file(const char *in_path, const char *out_path)
{
    drv_t d = {0};
    uint8_t *in = NULL;
    size_t len = 0;
    int rv = read_file(in_path, &in, &len);
    if (rv == 0) {
        rv = parse_input(&d, in, len);
    }
    if (rv == 0) {
        rv = check_steps(&d);
    }
    if (rv == 0) {
        run_steps(&d);
        rv = write_output(&d, out_path);
    }
    free(in);
    free(d.lr);
    free(d.w);
    free(d.buf);
    free(d.grad);
    return rv;
}

/* A whole-string unsigned decimal, at most max. */
static int arg_u64(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v > max) {
        ps_error_set("\"%s\" is not a number in [0, %llu]", s, max);
        return PS_EINVAL;
    }
    *out = v;
    return 0;
}

/* --sched SPEC WARMUP BASE_LR STEPS_PER_EPOCH TOTAL_STEPS COUNT */
static int run_sched(char **a)
{
    unsigned long long warm, spe, total, count;
    char *end = NULL;
    double base = strtod(a[2], &end);
    int rv = end == a[2] || *end != '\0' ? PS_EINVAL : 0;
    if (rv != 0) {
        ps_error_set("base lr \"%s\" is not a number", a[2]);
        return rv;
    }
    if ((rv = arg_u64(a[1], INT64_MAX, &warm)) != 0 ||
        (rv = arg_u64(a[3], UINT64_MAX, &spe)) != 0 ||
        (rv = arg_u64(a[4], UINT64_MAX, &total)) != 0 ||
        (rv = arg_u64(a[5], MAX_SCHED_COUNT, &count)) != 0) {
        return rv;
    }
    ps_sched_t s;
    if ((rv = ps_sched_parse(&s, a[0], (long long)warm)) != 0) {
        return rv;
    }
    char txt[512];
    ps_sched_describe(&s, txt, sizeof txt);
    printf("%s\n", txt);
    for (unsigned long long t = 0; t < count; t++) {
        printf("%a\n", ps_sched_lr(&s, base, t, spe, total));
    }
    return fflush(stdout) == 0 ? 0 : PS_EIO;
}

int main(int argc, char **argv)
{
    int rv;
    if (argc == 8 && strcmp(argv[1], "--sched") == 0) {
        rv = run_sched(argv + 2);
    } else if (argc == 3) {
        rv = run_file(argv[1], argv[2]);
    } else {
        fprintf(stderr,
                "usage: %s INPUT OUTPUT\n"
                "       %s --sched SPEC WARMUP BASE_LR STEPS_PER_EPOCH TOTAL_STEPS COUNT\n",
                argv[0], argv[0]);
        return 2;
    }
    if (rv != 0) {
        fprintf(stderr, "optim_driver: %s (%s)\n", ps_error_msg(), ps_strerror(rv));
    }
    return rv == 0 ? 0 : 2;
}
