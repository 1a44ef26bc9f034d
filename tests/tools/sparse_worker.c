/*
 * sparse_worker: a custom worker on ps.h's sparse-table calls, for
 * tests/integration/test_sparse*.  It declares table "emb" [*, DIM] and
 * dense tensor "bias" [2], and every step pulls then pushes rows whose
 * keys and gradients are a pure function of (step, worker, j, d), so a
 * reference (test_sparse_torch.py) can recompute them:
 *
 *     h4(a, b, c, d) = mix(a ^ mix(b ^ mix(c ^ mix(d))))   (mix: splitmix64)
 *     key_j       = KEYBASE + h4(step, rank, j, 0xabcd) % SPACE, j < NKEYS
 *     g_j[d]      = (h4(step, rank, j, d) >> 40) / 2^23 - 1   (exact in float)
 *     bias grad d = the same with j = 1000000
 *     samples     = rank + 1 (0 at --zero-step)
 *
 * Keys repeat within a push (the library sums them) and across workers.
 *
 *     sparse_worker STEPS DIM NKEYS SPACE [--key-base B] [--spe N]
 *         [--dump PREFIX] [--zero-step T] [--nan-step T] [--uniform BOUND SEED]
 *         [--no-table-push T] [--misuse] [--misuse-start] [--async-handles]
 *         [--hostile] [--delay-ms MS]
 *
 * --delay-ms sleeps before every step's dense push (a kill lands
 * mid-training); --dump writes every pulled row (float32, step order) to PREFIX.RANK;
 * --nan-step makes worker 1 push a NaN at step T; --no-table-push T makes
 * worker 0 skip the table at step T (the dense push must then fail);
 * --misuse checks the calls' refusals at step 0, --misuse-start those of
 * the declarations (ps_start must then fail); "ok"/"not ok" lines.
 * --hostile: worker 1, at step 1, also sends every server a set of
 * malformed row messages straight through its sockets (the library's
 * internals: ps.h cannot make them), each of which the server must refuse
 * without touching a table; it prints "hostile: N messages to server S".
 * Exit status 0 when every call did what it should.
 */
#include "ps_api.h"
#include "ps_bytes.h"
#include "ps_keys.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t h4(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    return mix(a ^ mix(b ^ mix(c ^ mix(d))));
}

static float val(uint64_t t, int r, uint64_t j, uint64_t d)
{
    return (float)((double)(h4(t, (uint64_t)r, j, d) >> 40) / 8388608.0 - 1.0);
}

typedef struct {
    long steps, dim, nkeys, spe;
    uint64_t space, base;
    const char *dump;
    long zero_step, nan_step, no_push;
    int uniform, misuse, async_handles, hostile;
    long delay_ms;
    float bound;
    uint64_t seed;
} args_t;

static int failures, rank = -1;

static void check(int ok, const char *what)
{
    printf("sparse[%d]: %s - %s%s%s\n", rank, ok ? "ok" : "not ok", what, ok ? "" : ": ",
           ok ? "" : ps_last_error());
    fflush(stdout);
    failures += !ok;
}

static int parse(args_t *a, int argc, char **argv)
{
    if (argc < 5) {
        return -1;
    }
    *a = (args_t){.steps = atol(argv[1]),
                  .dim = atol(argv[2]),
                  .nkeys = atol(argv[3]),
                  .space = strtoull(argv[4], NULL, 10),
                  .base = 1ULL << 33,
                  .zero_step = -1,
                  .nan_step = -1,
                  .no_push = -1};
    for (int i = 5; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--misuse")) {
            a->misuse = 1;
        } else if (!strcmp(f, "--misuse-start")) {
            a->misuse = 2;
        } else if (!strcmp(f, "--hostile")) {
            a->hostile = 1;
        } else if (!strcmp(f, "--async-handles")) {
            a->async_handles = 1;
        } else if (!v) {
            return -1;
        } else if (!strcmp(f, "--key-base")) {
            a->base = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(f, "--delay-ms")) {
            a->delay_ms = atol(argv[++i]);
        } else if (!strcmp(f, "--spe")) {
            a->spe = atol(argv[++i]);
        } else if (!strcmp(f, "--dump")) {
            a->dump = argv[++i];
        } else if (!strcmp(f, "--zero-step")) {
            a->zero_step = atol(argv[++i]);
        } else if (!strcmp(f, "--nan-step")) {
            a->nan_step = atol(argv[++i]);
        } else if (!strcmp(f, "--no-table-push")) {
            a->no_push = atol(argv[++i]);
        } else if (!strcmp(f, "--uniform") && i + 2 < argc) {
            a->uniform = 1;
            a->bound = strtof(argv[++i], NULL);
            a->seed = strtoull(argv[++i], NULL, 10);
        } else {
            return -1;
        }
    }
    return a->steps > 0 && a->dim > 0 && a->nkeys >= 0 && a->space > 0 ? 0 : -1;
}

/* Refusals the API promises (before and after ps_start). */
static void misuse_before(ps_t *ps)
{
    ps_initializer_t tl = {.kind = PS_INIT_TORCH_LINEAR};
    check(ps_declare_table(ps, "x", 4, &tl) == PS_EINVAL, "a table refuses TORCH_LINEAR");
    check(ps_declare_table(ps, "y", 0, NULL) == PS_EINVAL, "dim 0 is refused");
}

static void misuse_after(ps_t *ps, const uint64_t *keys, float *rows, const float *g, int dim)
{
    check(ps_declare_table(ps, "late", 2, NULL) == PS_ESTATE, "no table after ps_start");
    check(ps_pull_rows(ps, "nope", keys, 1, rows, NULL) == PS_ENOENT, "unknown table: ENOENT");
    check(ps_push_rows(ps, "emb", keys, 1, g, (uint32_t)rank + 1, NULL) == PS_ESTATE,
          "second push of a table in a step: ESTATE");
    check(ps_pull_rows(ps, "emb", NULL, 1, rows, NULL) == PS_EINVAL, "NULL keys: EINVAL");
    (void)dim;
}

/* One raw message to server s; counted. */
static int raw(ps_t *ps, int s, ps_hdr_t h, const void *payload, size_t len)
{
    h.payload = len;
    return ps_tp_send(wkr_client_tp(ps->client), s, 0, &h, payload, len, NULL, NULL) == 0;
}

/* A key that lives on server s (when want) or on another one. */
static uint64_t key_on(int s, int S, int want)
{
    for (uint64_t k = 1;; k++) {
        if (((int)ps_key_server(k, (uint32_t)S) == s) == want) {
            return k;
        }
    }
}

/* Malformed row messages the server must refuse (see the file comment). */
static void hostile(ps_t *ps, long t, int dim)
{
    int S = ps->boot.nservers;
    for (int s = 0; s < S; s++) {
        uint8_t buf[8 * 3 + 3 * 4 * 64];
        uint64_t mine = key_on(s, S, 1), mine2 = mine, k[3];
        for (mine2 = mine + 1; (int)ps_key_server(mine2, (uint32_t)S) != s; mine2++) {
        }
        memset(buf, 0, sizeof buf);
        ps_hdr_t h = ps_wire_hdr(PS_MSG_ROWS_PUSH, (uint32_t)rank);
        h.step = (uint64_t)t;
        h.offset = (uint64_t)dim;
        h.samples = 1;
        size_t one = 8 + 4 * (size_t)dim, two = 2 * one;
        int n = 0;
        ps_put_u64(buf, mine);
        h.chunk = 5; /* no such table */
        h.count = 1;
        n += raw(ps, s, h, buf, one);
        h.chunk = 0;
        h.offset = (uint64_t)dim + 1; /* not the table's dim */
        n += raw(ps, s, h, buf, 8 + 4 * ((size_t)dim + 1));
        h.offset = (uint64_t)dim;
        k[0] = mine2, k[1] = mine; /* descending */
        ps_put_u64(buf, k[0]), ps_put_u64(buf + 8, k[1]);
        h.count = 2;
        n += raw(ps, s, h, buf, two);
        ps_put_u64(buf, mine), ps_put_u64(buf + 8, mine); /* duplicate */
        n += raw(ps, s, h, buf, two);
        if (S > 1) {
            ps_put_u64(buf, key_on(s, S, 0)); /* another server's key */
            h.count = 1;
            n += raw(ps, s, h, buf, one);
        }
        ps_put_u64(buf, mine);
        h.count = 1;
        h.step = (uint64_t)t + 1000; /* far past the window */
        n += raw(ps, s, h, buf, one);
        h.step = (uint64_t)t - 1; /* applied already */
        n += raw(ps, s, h, buf, one);
        h.step = (uint64_t)t;
        n += raw(ps, s, h, buf, one - 4); /* payload one float short: malformed */
        h.type = PS_MSG_ROWS_REPLY;       /* a reply sent to a server */
        h.samples = 0;
        n += raw(ps, s, h, buf, 4 * (size_t)dim);
        h = ps_wire_hdr(PS_MSG_ROWS_PULL, (uint32_t)rank);
        h.offset = (uint64_t)dim;
        h.count = 2;
        ps_put_u64(buf, mine2), ps_put_u64(buf + 8, mine); /* unsorted pull */
        n += raw(ps, s, h, buf, 16);
        h = ps_wire_hdr(PS_MSG_TABLES, (uint32_t)rank); /* from worker 1 */
        ps_put_u32(buf, 0);
        n += raw(ps, s, h, buf, 4);
        printf("hostile: %d messages to server %d\n", n, s);
        fflush(stdout);
    }
}

static void make_step(const args_t *a, long t, uint64_t *keys, float *g, float *bg)
{
    for (long j = 0; j < a->nkeys; j++) {
        keys[j] = a->base + h4((uint64_t)t, (uint64_t)rank, (uint64_t)j, 0xabcd) % a->space;
        for (long d = 0; d < a->dim; d++) {
            g[j * a->dim + d] = val((uint64_t)t, rank, (uint64_t)j, (uint64_t)d);
        }
    }
    if (t == a->nan_step && rank == 1 && a->nkeys > 0) {
        g[0] = NAN;
    }
    bg[0] = val((uint64_t)t, rank, 1000000, 0);
    bg[1] = val((uint64_t)t, rank, 1000000, 1);
}

static int run_step(ps_t *ps, const args_t *a, long t, FILE *dump, uint64_t *keys, float *g,
                    float *rows, float *bg)
{
    uint32_t samples = t == a->zero_step ? 0 : (uint32_t)rank + 1;
    ps_rows_t *h = NULL;
    int rv;
    make_step(a, t, keys, g, bg);
    rv = ps_pull_rows(ps, "emb", keys, (size_t)a->nkeys, rows, a->async_handles ? &h : NULL);
    if (rv == 0 && h) {
        int done = 0;
        rv = ps_test_rows(h, &done);
        if (rv == 0 && !done) {
            rv = ps_wait_rows(h);
        }
    }
    if (rv != 0) {
        return rv;
    }
    if (a->hostile && rank == 1 && t == 1) {
        hostile(ps, t, (int)a->dim);
    }
    if (dump && fwrite(rows, sizeof *rows, (size_t)(a->nkeys * a->dim), dump) !=
                    (size_t)(a->nkeys * a->dim)) {
        return -1;
    }
    if (!(t == a->no_push && rank == 0)) {
        h = NULL;
        rv = ps_push_rows(ps, "emb", keys, (size_t)a->nkeys, g, samples,
                          a->async_handles ? &h : NULL);
        if (rv == 0 && h) {
            rv = ps_wait_rows(h);
        }
        if (rv != 0) {
            return rv;
        }
        if (a->misuse && t == 0) {
            misuse_after(ps, keys, rows, g, (int)a->dim);
        }
    }
    if (a->delay_ms > 0) {
        struct timespec ts = {a->delay_ms / 1000, (a->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return ps_step(ps, samples);
}

int main(int argc, char **argv)
{
    args_t a;
    ps_t *ps = NULL;
    ps_info_t info;
    float *bw, *bg;
    if (parse(&a, argc, argv) != 0) {
        fprintf(stderr, "usage: sparse_worker STEPS DIM NKEYS SPACE [flags] (see the source)\n");
        return 2;
    }
    if (ps_init(&ps, &argc, &argv, NULL) != 0) {
        fprintf(stderr, "sparse_worker: %s\n", ps_last_error());
        return 1;
    }
    ps_info(ps, &info);
    rank = info.rank;
    ps_initializer_t uni = {.kind = PS_INIT_UNIFORM, .bound = a.bound, .seed = a.seed};
    const int64_t bdim[1] = {2};
    if (a.misuse == 2) {
        misuse_before(ps);
    }
    int rv = ps_declare_table(ps, "emb", a.dim, a.uniform ? &uni : NULL);
    if (rv == 0) {
        rv = ps_declare(ps, "bias", 1, bdim, NULL);
    }
    if (rv == 0) {
        rv = ps_plan(ps, (uint64_t)(a.spe > 0 ? a.spe : a.steps), (uint64_t)a.steps);
    }
    if (a.misuse == 2) {
        /* The refused declarations above were remembered: ps_start fails. */
        check(ps_start(ps) != 0, "ps_start fails after a refused declaration");
        ps_finalize(&ps);
        return failures ? 1 : 0;
    }
    if (rv == 0) {
        rv = ps_start(ps);
    }
    size_t n = (size_t)(a.nkeys > 0 ? a.nkeys : 1);
    uint64_t *keys = malloc(n * sizeof *keys);
    float *g = malloc(n * (size_t)a.dim * sizeof *g), *rows = malloc(n * (size_t)a.dim * 4);
    FILE *dump = NULL;
    char path[512];
    if (rv == 0 && a.dump) {
        snprintf(path, sizeof path, "%s.%d", a.dump, rank);
        dump = fopen(path, "wb");
    }
    if (rv == 0 && (rv = ps_tensor(ps, "bias", &bw, &bg, NULL)) == 0) {
        ps_info(ps, &info);
        for (long t = (long)info.step; rv == 0 && t < a.steps; t++) {
            rv = run_step(ps, &a, t, dump, keys, g, rows, bg);
        }
    }
    if (rv != 0) {
        fprintf(stderr, "sparse_worker[%d]: %s\n", rank, ps_last_error());
    }
    if (dump) {
        fclose(dump);
    }
    free(keys);
    free(g);
    free(rows);
    int frv = ps_finalize(&ps);
    return rv || frv || failures ? 1 : 0;
}
