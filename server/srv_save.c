#include "srv_save.h"

#include "ps_err.h"
#include "ps_safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pack this server's chunks (weights or buffers) in ascending chunk id. */
static void pack_local(const srv_store_t *s, int want_buf, float *out)
{
    size_t off = 0;
    for (size_t i = 0; i < s->nlocal; i++) {
        const srv_chunk_t *c = &s->chunks[i];
        const float *src = want_buf ? c->buf : c->w;
        if (src) {
            memcpy(out + off, src, c->count * sizeof(float));
        } else {
            memset(out + off, 0, c->count * sizeof(float));
        }
        off += c->count;
    }
}

/* Server 0: scatter the gathered, server-major data into flat order. */
static void unpack_all(const ps_chunkmap_t *map, const float *gathered, float *flat)
{
    size_t off = 0;
    for (int srv = 0; srv < map->nservers; srv++) {
        for (size_t i = (size_t)srv; i < map->n; i += (size_t)map->nservers) {
            memcpy(flat + map->c[i].offset, gathered + off, map->c[i].count * sizeof(float));
            off += map->c[i].count;
        }
    }
}

static int gather_flat(ps_boot_t *b, const srv_store_t *s, int want_buf, float *flat)
{
    size_t mine = 0, *counts = calloc((size_t)b->nservers, sizeof *counts);
    float *local = NULL, *all = NULL;
    int rv = PS_ENOMEM;
    ps_chunkmap_count_on(&s->map, b->rank, &mine);
    for (int i = 0; i < b->nservers; i++) {
        if (counts) {
            ps_chunkmap_count_on(&s->map, i, &counts[i]);
        }
    }
    local = malloc((mine ? mine : 1) * sizeof(float));
    all = b->rank == 0 ? malloc(s->map.total * sizeof(float)) : NULL;
    if (counts && local && (b->rank != 0 || all)) {
        pack_local(s, want_buf, local);
        rv = ps_boot_servers_gather(b, local, mine, all, counts);
        if (rv == 0 && b->rank == 0 && flat) {
            unpack_all(&s->map, all, flat);
        }
    }
    free(counts);
    free(local);
    free(all);
    return rv;
}

/* A table as server 0 writes it: every server's rows, ascending key. */
typedef struct {
    const char *name;
    uint32_t dim;
    uint64_t *keys;
    float *w, *buf;
    size_t n;
    int64_t shape[2];
} saved_table_t;

static void saved_fini(saved_table_t *st)
{
    free(st->keys);
    free(st->w);
    free(st->buf);
    st->keys = NULL;
    st->w = st->buf = NULL;
}

/* Gather n_s values of `width` floats from every server (counts[s] = n_s);
 * 64-bit keys travel as two floats' bits (MPI_FLOAT moves bytes unchanged
 * between hosts of one byte order, which the job's wire format assumes). */
static int gather_n(ps_boot_t *b, const void *mine, size_t n, size_t width, const size_t *ns,
                    void *out)
{
    size_t *counts = calloc((size_t)b->nservers, sizeof *counts);
    if (!counts) {
        ps_error_set("no memory to gather a table from %d servers", b->nservers);
        return PS_ENOMEM;
    }
    for (int s = 0; s < b->nservers; s++) {
        counts[s] = ns[s] * width;
    }
    int rv = ps_boot_servers_gather(b, mine, n * width, out, counts);
    free(counts);
    return rv;
}

static const uint64_t *sort_keys;

static int by_saved_key(const void *a, const void *b)
{
    uint64_t x = sort_keys[*(const size_t *)a], y = sort_keys[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* Server 0: the concatenated rows (each server's ascending, disjoint
 * across servers) put in ascending key order. */
static int sort_saved(saved_table_t *st, int with_buf)
{
    size_t n = st->n, d = st->dim;
    size_t *perm = malloc((n ? n : 1) * sizeof *perm);
    uint64_t *k = malloc((n ? n : 1) * sizeof *k);
    float *w = malloc((n ? n : 1) * d * sizeof *w);
    float *bf = with_buf ? malloc((n ? n : 1) * d * sizeof *bf) : NULL;
    if (!perm || !k || !w || (with_buf && !bf)) {
        free(perm), free(k), free(w), free(bf);
        ps_error_set("no memory to sort the %zu rows of table '%s'", n, st->name);
        return PS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        perm[i] = i;
    }
    sort_keys = st->keys;
    qsort(perm, n, sizeof *perm, by_saved_key);
    for (size_t i = 0; i < n; i++) {
        k[i] = st->keys[perm[i]];
        memcpy(w + i * d, st->w + perm[i] * d, d * sizeof *w);
        if (bf) {
            memcpy(bf + i * d, st->buf + perm[i] * d, d * sizeof *bf);
        }
    }
    free(perm);
    saved_fini(st);
    st->keys = k;
    st->w = w;
    st->buf = bf;
    return 0;
}

/* Every server's row count, on server 0 (ns[S]), as two floats' bits. */
static int gather_counts(ps_boot_t *b, size_t n, size_t *ns)
{
    uint64_t mine = n, *all = calloc((size_t)b->nservers, sizeof *all);
    size_t *twos = calloc((size_t)b->nservers, sizeof *twos);
    int rv = all && twos ? 0 : PS_ENOMEM;
    for (int s = 0; rv == 0 && s < b->nservers; s++) {
        twos[s] = 1;
    }
    if (rv == 0) {
        rv = gather_n(b, &mine, 1, 2, twos, all);
    }
    for (int s = 0; rv == 0 && b->rank == 0 && s < b->nservers; s++) {
        ns[s] = (size_t)all[s];
    }
    free(all);
    free(twos);
    return rv;
}

/* Collective: table t of every server into *st on server 0. */
static int gather_table(ps_boot_t *b, srv_table_t *t, int with_buf, saved_table_t *st)
{
    uint64_t *keys = NULL;
    float *w = NULL, *buf = NULL;
    size_t n = 0, R = 0, *ns = calloc((size_t)b->nservers, sizeof *ns);
    int rv = ns ? srv_table_export(t, &keys, &w, &buf, &n) : PS_ENOMEM;
    if (rv != 0) {
        n = 0; /* still take part in every gather */
    }
    uint32_t d = srv_table_dim(t);
    int rv2 = gather_counts(b, n, ns);
    for (int s = 0; ns && s < b->nservers; s++) {
        R += ns[s];
    }
    *st = (saved_table_t){.name = srv_table_name(t), .dim = d, .n = R};
    if (b->rank == 0) {
        st->keys = malloc((R ? R : 1) * sizeof *st->keys);
        st->w = malloc((R ? R : 1) * d * sizeof *st->w);
        st->buf = with_buf ? calloc(R ? R : 1, d * sizeof *st->buf) : NULL;
    }
    float *zeros = with_buf && !buf ? calloc(n ? n : 1, d * sizeof *zeros) : NULL;
    int rv3 = gather_n(b, keys, n, 2, ns, st->keys);
    int rv4 = gather_n(b, w, n, d, ns, st->w);
    int rv5 = with_buf ? gather_n(b, buf ? buf : zeros, n, d, ns, st->buf) : 0;
    rv = rv ? rv : rv2 ? rv2 : rv3 ? rv3 : rv4 ? rv4 : rv5;
    if (rv == 0 && b->rank == 0) {
        rv = sort_saved(st, with_buf);
    }
    st->shape[0] = (int64_t)st->n;
    st->shape[1] = (int64_t)d;
    free(ns), free(keys), free(w), free(buf), free(zeros);
    return rv;
}

/* "sparse_tables": the names as a JSON array (names may hold any
 * printable byte). */
static char *table_list(const saved_table_t *st, int nt)
{
    json_t *a = json_array();
    for (int i = 0; a && i < nt; i++) {
        json_array_append_new(a, json_string(st[i].name));
    }
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return text;
}

static int write_file(const srv_store_t *s, const float *w, const float *buf,
                      const saved_table_t *st, int nt, const srv_save_info_t *info,
                      const char *path)
{
    const ps_layout_t *l = s->layout;
    ps_st_tensor_t t[2 * PS_MAX_TENSORS + 3 * PS_TABLES_MAX];
    int i64[2 * PS_MAX_TENSORS + 3 * PS_TABLES_MAX] = {0};
    char names[PS_MAX_TENSORS][PS_MAX_NAME + 20], tnames[2 * PS_TABLES_MAX][PS_MAX_NAME + 20];
    int n = 0;
    for (int i = 0; i < nt; i++) { /* the I64 keys first: 8-byte aligned */
        snprintf(tnames[2 * i], sizeof tnames[0], "%s.keys", st[i].name);
        i64[n] = 1;
        t[n++] = (ps_st_tensor_t){tnames[2 * i], 1, st[i].shape, (const float *)st[i].keys};
    }
    for (int i = 0; i < nt; i++) {
        t[n++] = (ps_st_tensor_t){st[i].name, 2, st[i].shape, st[i].w};
    }
    for (int i = 0; i < nt && buf; i++) {
        snprintf(tnames[2 * i + 1], sizeof tnames[0], "%s.momentum_buffer", st[i].name);
        t[n++] = (ps_st_tensor_t){tnames[2 * i + 1], 2, st[i].shape, st[i].buf};
    }
    for (int i = 0; i < l->n; i++) {
        t[n++] = (ps_st_tensor_t){l->t[i].name, l->t[i].ndim, l->t[i].dims, w + l->t[i].offset};
    }
    for (int i = 0; buf && i < l->n; i++) {
        snprintf(names[i], sizeof names[i], "%s.momentum_buffer", l->t[i].name);
        t[n++] = (ps_st_tensor_t){names[i], l->t[i].ndim, l->t[i].dims, buf + l->t[i].offset};
    }
    char v[9][64];
    snprintf(v[0], sizeof v[0], "%llu", (unsigned long long)info->step);
    snprintf(v[1], sizeof v[1], "%.17g", s->opt.lr);
    snprintf(v[2], sizeof v[2], "%.17g", s->opt.momentum);
    snprintf(v[3], sizeof v[3], "%.17g", s->opt.dampening);
    snprintf(v[4], sizeof v[4], "%s", s->opt.nesterov ? "true" : "false");
    snprintf(v[5], sizeof v[5], "%.17g", s->opt.weight_decay);
    snprintf(v[6], sizeof v[6], "%s", s->opt.maximize ? "true" : "false");
    snprintf(v[7], sizeof v[7], "%.17g", s->opt.clip_value);
    snprintf(v[8], sizeof v[8], "%.17g", s->opt.decoupled_wd);
    const char *meta[] = {"format",
                          "ps-momentum-sgd",
                          "optimizer",
                          "torch.optim.SGD",
                          "step",
                          v[0],
                          "lr",
                          v[1],
                          "momentum",
                          v[2],
                          "dampening",
                          v[3],
                          "nesterov",
                          v[4],
                          "weight_decay",
                          v[5],
                          "maximize",
                          v[6],
                          "clip_grad_value",
                          v[7],
                          "decoupled_weight_decay",
                          v[8],
                          "momentum_form",
                          info->form,
                          "lr_schedule",
                          info->schedule,
                          "mode",
                          info->mode,
                          "sparse_tables",
                          NULL,
                          "sparse_update",
                          info->sparse ? info->sparse : "exact"};
    int nmeta = (int)(sizeof meta / sizeof meta[0] / 2);
    char *list = nt > 0 ? table_list(st, nt) : NULL;
    if (nt > 0 && !list) {
        ps_error_set("no memory for the table list");
        return PS_ENOMEM;
    }
    meta[2 * nmeta - 3] = list;
    int rv = ps_st_write_typed(path, t, i64, n, meta, nt > 0 ? nmeta : nmeta - 2);
    free(list);
    return rv;
}

int srv_save_model(ps_boot_t *b, const srv_store_t *s, srv_sparse_t *sp,
                   const srv_save_info_t *info, const char *path)
{
    int with_buf = s->opt.momentum != 0 && info->step > 0;
    float *w = NULL, *buf = NULL;
    int rv = 0, nt = sp && sp->declared ? sp->decls.n : 0;
    saved_table_t st[PS_TABLES_MAX];
    memset(st, 0, sizeof st);
    for (int i = 0; i < nt; i++) {
        int r = gather_table(b, sp->t[i].tbl, with_buf, &st[i]);
        rv = rv ? rv : r;
    }
    if (b->rank == 0) {
        w = malloc(s->map.total * sizeof(float));
        buf = with_buf ? malloc(s->map.total * sizeof(float)) : NULL;
        if (!w || (with_buf && !buf)) {
            rv = PS_ENOMEM;
        }
    }
    /* Every server takes part in both gathers whatever happened at root. */
    int rv1 = gather_flat(b, s, 0, w ? w : NULL);
    int rv2 = with_buf ? gather_flat(b, s, 1, buf) : 0;
    if (rv == 0) {
        rv = rv1 ? rv1 : rv2;
    }
    if (rv == 0 && b->rank == 0) {
        rv = write_file(s, w, buf, st, nt, info, path);
    }
    for (int i = 0; i < nt; i++) {
        saved_fini(&st[i]);
    }
    free(w);
    free(buf);
    return rv;
}
