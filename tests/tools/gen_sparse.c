/*
 * gen_sparse: deterministic sparse classification data from a planted
 * model, for the tests and benchmarks of the sparse models (issue 14).
 *
 *   gen_sparse --format libsvm|criteo --rows N --out PATH [--part K] ...
 *
 * The planted model is a pure function of --seed (and the shape flags),
 * never of --rows or --part, so a training file (--part 0) and a test file
 * (--part 1) come from the same model.  Ids follow a Zipf law over a
 * vocabulary (rank r drawn with probability ~ 1 / r^s): a few ids are hot,
 * most are rare.  Labels are drawn from the model's probability.
 *
 *   libsvm  each row has --per-row distinct ids (value 1) from a
 *           vocabulary of --vocab ids spread over [--id-min, --id-min +
 *           --id-space) by a hash (so ids above 2^32 when asked); planted
 *           logit = bias + sum of the ids' weights (N(0, --sigma^2)).
 *   criteo  label, 13 integer fields (missing with probability
 *           --missing), 26 categorical fields of 8 hex digits (a Zipf
 *           draw from a --vocab vocabulary per field, missing likewise);
 *           planted logit = bias + sum over present fields of the value's
 *           weight + sum_j a_j log(1 + max(I_j, 0)).
 *
 * Prints one JSON line: rows, distinct ids used, positives, and the
 * planted model's own logloss and AUC on the file's rows -- the best a
 * learner can expect on them.
 */
#include "ps_err.h"
#include "ps_opts.h"
#include "ps_rng.h"
#include "wkr_sparse_model.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *format, *out;
    long long rows, part, seed, vocab, id_min, id_space, per_row;
    double zipf, sigma, bias, missing;
} gen_cfg_t;

typedef struct {
    const gen_cfg_t *c;
    double *cdf; /* vocab: the Zipf law's cumulative probabilities */
    ps_rng_t rng;
    uint8_t *seen; /* vocab x fields: which (field, rank) occurred */
    size_t distinct, positives;
    float *score, *y;
    double loss;
} gen_t;

/* splitmix64 finaliser: the planted model's values are hashes of their
 * coordinates, so no table sized by the id space is ever needed. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash3(uint64_t seed, uint64_t a, uint64_t b)
{
    return mix(mix(mix(seed) ^ a) ^ b);
}

/* A standard normal from two hashed uniforms (Box-Muller). */
static double normal_of(uint64_t h)
{
    double u1 = ((double)(mix(h) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(mix(h ^ 0x5851f42d4c957f2dull) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Weight of vocabulary rank r in field f (f 0 for LIBSVM). */
static double weight_of(const gen_cfg_t *c, uint64_t f, uint64_t r)
{
    return c->sigma * normal_of(hash3((uint64_t)c->seed, 1000 + f, r));
}

/* The LIBSVM id of rank r: a hash spread over the id range. */
static uint64_t libsvm_id(const gen_cfg_t *c, uint64_t r)
{
    return (uint64_t)c->id_min + hash3((uint64_t)c->seed, 7, r) % (uint64_t)c->id_space;
}

/* The Criteo value (32 bits) of rank r in field f. */
static uint32_t criteo_value(const gen_cfg_t *c, uint64_t f, uint64_t r)
{
    return (uint32_t)hash3((uint64_t)c->seed, 11 + f, r);
}

/* A Zipf rank in 0 .. vocab-1 by binary search of the CDF. */
static uint64_t zipf_draw(gen_t *g)
{
    double u = (double)(ps_rng_next(&g->rng) >> 11) / 9007199254740992.0;
    size_t lo = 0, hi = (size_t)g->c->vocab - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->cdf[mid] > u) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double uniform01(gen_t *g)
{
    return (double)(ps_rng_next(&g->rng) >> 11) / 9007199254740992.0;
}

/* The label of a row with planted logit z, and the bookkeeping. */
static int label_of(gen_t *g, size_t i, double z)
{
    double p = 1.0 / (1.0 + exp(-z));
    int y = uniform01(g) < p;
    g->score[i] = (float)z;
    g->y[i] = (float)y;
    g->positives += (size_t)y;
    g->loss += wkr_sparse_model_bce((float)z, (float)y);
    return y;
}

static void mark(gen_t *g, size_t f, uint64_t r)
{
    uint8_t *s = &g->seen[f * (size_t)g->c->vocab + r];
    g->distinct += !*s;
    *s = 1;
}

static void libsvm_row(gen_t *g, FILE *out, size_t i, uint64_t *ids, uint64_t *ranks)
{
    const gen_cfg_t *c = g->c;
    size_t n = 0;
    /* per_row distinct ranks (per_row <= vocab is checked). */
    while (n < (size_t)c->per_row) {
        uint64_t r = zipf_draw(g);
        int dup = 0;
        for (size_t k = 0; k < n; k++) {
            dup |= ranks[k] == r;
        }
        if (!dup) {
            ranks[n++] = r;
        }
    }
    double z = c->bias;
    for (size_t k = 0; k < n; k++) {
        z += weight_of(c, 0, ranks[k]);
        ids[k] = libsvm_id(c, ranks[k]);
        mark(g, 0, ranks[k]);
    }
    qsort(ids, n, sizeof *ids, u64_cmp);
    fprintf(out, "%d", label_of(g, i, z));
    for (size_t k = 0; k < n; k++) {
        if (k == 0 || ids[k] != ids[k - 1]) { /* two ranks may hash alike */
            fprintf(out, " %llu:1", (unsigned long long)ids[k]);
        }
    }
    fputc('\n', out);
}

static void criteo_row(gen_t *g, FILE *out, size_t i)
{
    const gen_cfg_t *c = g->c;
    char ints[13][24], cats[26][12];
    double z = c->bias;
    for (int j = 0; j < 13; j++) {
        ints[j][0] = '\0';
        if (uniform01(g) >= c->missing) {
            /* Mostly small counts, a long tail, sometimes -1 as in I2. */
            long long x = (long long)floor(exp(uniform01(g) * 6.0)) - 1 - (uniform01(g) < 0.05);
            snprintf(ints[j], sizeof ints[j], "%lld", x);
            z += 0.3 * c->sigma * normal_of(hash3((uint64_t)c->seed, 99, (uint64_t)j)) *
                 log1p(x > 0 ? (double)x : 0.0);
        }
    }
    for (int f = 0; f < 26; f++) {
        cats[f][0] = '\0';
        if (uniform01(g) >= c->missing) {
            uint64_t r = zipf_draw(g);
            snprintf(cats[f], sizeof cats[f], "%08x", criteo_value(c, (uint64_t)f + 1, r));
            z += weight_of(c, (uint64_t)f + 1, r);
            mark(g, (size_t)f, r);
        }
    }
    fprintf(out, "%d", label_of(g, i, z));
    for (int j = 0; j < 13; j++) {
        fprintf(out, "\t%s", ints[j]);
    }
    for (int f = 0; f < 26; f++) {
        fprintf(out, "\t%s", cats[f]);
    }
    fputc('\n', out);
}

static int check_cfg(const gen_cfg_t *c)
{
    int criteo = strcmp(c->format, "criteo") == 0;
    if (!criteo && strcmp(c->format, "libsvm") != 0) {
        fprintf(stderr, "gen_sparse: --format '%s': want libsvm or criteo\n", c->format);
        return 1;
    }
    if (!c->out || c->rows < 1 || c->vocab < 1 || c->vocab > (1ll << 28) || c->part < 0 ||
        c->zipf <= 0 || c->sigma < 0 || c->missing < 0 || c->missing >= 1) {
        fprintf(stderr, "gen_sparse: need --out, --rows >= 1, 1 <= --vocab <= 2^28, --part "
                        ">= 0, --zipf > 0, --sigma >= 0, 0 <= --missing < 1\n");
        return 1;
    }
    if (!criteo && (c->per_row < 1 || c->per_row > c->vocab || c->id_min < 1 || c->id_space < 1 ||
                    c->id_space > INT64_MAX - c->id_min + 1)) {
        fprintf(stderr, "gen_sparse: need 1 <= --per-row <= --vocab, --id-min >= 1 and "
                        "--id-min + --id-space - 1 <= 2^63-1\n");
        return 1;
    }
    return 0;
}

static int gen_init(gen_t *g, const gen_cfg_t *c)
{
    size_t v = (size_t)c->vocab, fields = strcmp(c->format, "criteo") == 0 ? 26 : 1;
    memset(g, 0, sizeof *g);
    g->c = c;
    g->cdf = malloc(v * sizeof *g->cdf);
    g->seen = calloc(v * fields, 1);
    g->score = malloc((size_t)c->rows * sizeof *g->score);
    g->y = malloc((size_t)c->rows * sizeof *g->y);
    if (!g->cdf || !g->seen || !g->score || !g->y) {
        fprintf(stderr, "gen_sparse: out of memory\n");
        return 1;
    }
    double sum = 0;
    for (size_t r = 0; r < v; r++) {
        sum += pow((double)r + 1.0, -c->zipf);
        g->cdf[r] = sum;
    }
    for (size_t r = 0; r < v; r++) {
        g->cdf[r] /= sum;
    }
    g->cdf[v - 1] = 2.0; /* every u < 1 lands in the vocabulary */
    ps_rng_seed(&g->rng, (uint64_t)c->seed, 1000 + (uint64_t)c->part);
    return 0;
}

static void gen_fini(gen_t *g)
{
    free(g->cdf);
    free(g->seen);
    free(g->score);
    free(g->y);
}

static int generate(const gen_cfg_t *c)
{
    gen_t g;
    uint64_t *ids = malloc((size_t)c->per_row * 2 * sizeof *ids);
    FILE *out = fopen(c->out, "w");
    int rv = !ids || !out || gen_init(&g, c);
    for (size_t i = 0; rv == 0 && i < (size_t)c->rows; i++) {
        if (c->format[0] == 'c') {
            criteo_row(&g, out, i);
        } else {
            libsvm_row(&g, out, i, ids, ids + c->per_row);
        }
    }
    if (out && (ferror(out) | fclose(out)) != 0) {
        rv = 1;
    }
    if (rv != 0) {
        fprintf(stderr, "gen_sparse: cannot write %s\n", c->out);
    } else {
        printf("{\"format\":\"%s\",\"rows\":%lld,\"part\":%lld,\"distinct_ids\":%zu,"
               "\"positives\":%zu,\"planted_logloss\":%.6f,\"planted_auc\":%.6f}\n",
               c->format, c->rows, c->part, g.distinct, g.positives, g.loss / (double)c->rows,
               wkr_sparse_model_auc(g.score, g.y, (size_t)c->rows));
    }
    gen_fini(&g);
    free(ids);
    return rv;
}

int main(int argc, char **argv)
{
    gen_cfg_t c = {.format = "libsvm",
                   .rows = 1000,
                   .seed = 1,
                   .vocab = 10000,
                   .id_min = 1,
                   .id_space = 1ll << 40,
                   .per_row = 24,
                   .zipf = 1.1,
                   .sigma = 0.5,
                   .bias = -0.5,
                   .missing = 0.1};
    ps_opt_t opts[] = {
        {"format", PS_OPT_STRING, &c.format, "libsvm|criteo", "file format"},
        {"out", PS_OPT_STRING, &c.out, "PATH", "file to write (required)"},
        {"rows", PS_OPT_LONG, &c.rows, "N", "rows to write"},
        {"part", PS_OPT_LONG, &c.part, "K", "sample stream (0 train, 1 test): same model"},
        {"seed", PS_OPT_LONG, &c.seed, "S", "seed of the planted model and the rows"},
        {"vocab", PS_OPT_LONG, &c.vocab, "V", "distinct ids (per field for criteo)"},
        {"zipf", PS_OPT_DOUBLE, &c.zipf, "S", "Zipf exponent of the id ranks"},
        {"id-min", PS_OPT_LONG, &c.id_min, "N", "libsvm: smallest id"},
        {"id-space", PS_OPT_LONG, &c.id_space, "N", "libsvm: ids in [id-min, id-min + N)"},
        {"per-row", PS_OPT_LONG, &c.per_row, "P", "libsvm: ids per row"},
        {"sigma", PS_OPT_DOUBLE, &c.sigma, "X", "planted weights ~ N(0, X^2)"},
        {"bias", PS_OPT_DOUBLE, &c.bias, "B", "planted bias"},
        {"missing", PS_OPT_DOUBLE, &c.missing, "P", "criteo: probability a field is empty"},
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    int rv = ps_opts_parse(opts, n, argc, argv);
    if (rv == PS_OPTS_HELP) {
        ps_opts_help(stdout, "usage: gen_sparse --format libsvm|criteo --rows N --out PATH", opts,
                     n);
        return 0;
    }
    if (rv != 0) {
        fprintf(stderr, "gen_sparse: %s\n", ps_error_msg());
        return 2;
    }
    if (check_cfg(&c) != 0) {
        return 2;
    }
    return generate(&c) ? 1 : 0;
}
