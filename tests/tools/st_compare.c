/*
 * st_compare --finite A: exit 0 when every value in A is finite.
 * st_compare A B [--rtol R] [--atol T]: exit 0 when two safetensors files
 * hold the same tensor names and shapes and every value of B is within
 * atol + rtol*|a| of A's; prints the worst difference either way.  Used by
 * the integration tests to compare runs that must agree up to float
 * summation order.
 */
#include "ps_err.h"
#include "ps_safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int compare_tensor(const ps_st_file_t *a, const ps_st_file_t *b, const char *name,
                          double rtol, double atol, double *worst)
{
    const float *da, *db;
    int na, nb;
    int64_t sa[PS_MAX_DIMS], sb[PS_MAX_DIMS];
    if (ps_st_get(a, name, &da, &na, sa) != 0 || ps_st_get(b, name, &db, &nb, sb) != 0) {
        printf("%s: missing in one file\n", name);
        return 1;
    }
    if (na != nb || memcmp(sa, sb, (size_t)na * sizeof sa[0]) != 0) {
        printf("%s: shapes differ\n", name);
        return 1;
    }
    size_t n = 1;
    for (int d = 0; d < na; d++) {
        n *= (size_t)sa[d];
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)da[i] - (double)db[i]);
        double lim = atol + rtol * fabs((double)da[i]);
        if (!(diff <= lim)) {
            if (!bad) {
                printf("%s[%zu]: %.9g vs %.9g (diff %.3g > %.3g)\n", name, i, da[i], db[i], diff,
                       lim);
            }
            bad = 1;
        }
        if (diff > *worst) {
            *worst = diff;
        }
    }
    return bad;
}

static int all_finite(const char *path)
{
    ps_st_file_t *f = NULL;
    if (ps_st_open(&f, path) != 0) {
        fprintf(stderr, "st_compare: %s\n", ps_error_msg());
        return 2;
    }
    size_t bad = 0;
    for (int i = 0; i < ps_st_count(f); i++) {
        const float *d;
        int nd;
        int64_t sh[PS_MAX_DIMS];
        ps_st_get(f, ps_st_name(f, i), &d, &nd, sh);
        size_t n = 1;
        for (int k = 0; k < nd; k++) {
            n *= (size_t)sh[k];
        }
        for (size_t j = 0; j < n; j++) {
            bad += !isfinite(d[j]);
        }
    }
    printf("%zu non-finite values\n", bad);
    ps_st_close(&f);
    return bad != 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--finite") == 0) {
        return all_finite(argv[2]);
    }
    double rtol = 1e-5, atol = 1e-6, worst = 0;
    ps_st_file_t *a = NULL, *b = NULL;
    if (argc < 3) {
        fprintf(stderr, "usage: st_compare A B [--rtol R] [--atol T]\n");
        return 2;
    }
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rtol") == 0) {
            rtol = atof(argv[i + 1]);
        } else if (strcmp(argv[i], "--atol") == 0) {
            atol = atof(argv[i + 1]);
        }
    }
    if (ps_st_open(&a, argv[1]) != 0 || ps_st_open(&b, argv[2]) != 0) {
        fprintf(stderr, "st_compare: %s\n", ps_error_msg());
        ps_st_close(&a);
        return 2;
    }
    int bad = ps_st_count(a) != ps_st_count(b);
    if (bad) {
        printf("tensor counts differ: %d vs %d\n", ps_st_count(a), ps_st_count(b));
    }
    for (int i = 0; i < ps_st_count(a); i++) {
        bad |= compare_tensor(a, b, ps_st_name(a, i), rtol, atol, &worst);
    }
    printf("max abs difference %.3g\n", worst);
    ps_st_close(&a);
    ps_st_close(&b);
    return bad;
}
