#include "srv_ckpt_tables.h"

#include "ps_err.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_ckpt_tables_out_fini(srv_ckpt_tables_out_t *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->keys[i]);
        free(o->w[i]);
        free(o->buf[i]);
        free(o->last[i]);
    }
    free(o->meta_steps);
    memset(o, 0, sizeof *o);
}

static void add(ps_st_tensor_t *t, int *i64, int *n, const char *name, const int64_t *shape,
                const void *data, int is_i64)
{
    t[*n] = (ps_st_tensor_t){name, 1, shape, (const float *)data};
    i64[*n] = is_i64;
    (*n)++;
}

int srv_ckpt_tables_out(srv_sparse_t *sp, srv_ckpt_tables_out_t *o, ps_st_tensor_t *t, int *i64,
                        int *n)
{
    int nt = srv_sparse_ntables(sp);
    memset(o, 0, sizeof *o);
    snprintf(o->meta_tables, sizeof o->meta_tables, "%d:%016" PRIx64, nt,
             ps_tables_hash(&sp->decls));
    if (!(o->meta_steps = calloc((size_t)nt + 1, 24))) {
        ps_error_set("no memory for the tables' checkpoint");
        return PS_ENOMEM;
    }
    for (int i = 0; i < nt; i++, o->n++) {
        srv_sparse_table_t *tb = &sp->t[i];
        size_t rows;
        /* The raw rows and their steps, not caught-up values: a resume
         * must continue with the bits of the uninterrupted run. */
        int rv =
            srv_table_export_state(tb->tbl, &o->keys[i], &o->w[i], &o->buf[i], &o->last[i], &rows);
        if (rv != 0) {
            return rv;
        }
        o->shape[i][0] = (int64_t)rows;
        o->shape[i][1] = (int64_t)(rows * tb->decl.dim);
        o->shape[i][2] = (int64_t)tb->nlrs;
        snprintf(o->names[i][0], 32, "table.%d.keys", i);
        snprintf(o->names[i][1], 32, "table.%d.w", i);
        snprintf(o->names[i][2], 32, "table.%d.buf", i);
        snprintf(o->names[i][3], 32, "table.%d.lr", i);
        snprintf(o->names[i][4], 32, "table.%d.last", i);
        add(t, i64, n, o->names[i][0], &o->shape[i][0], o->keys[i], 1);
        add(t, i64, n, o->names[i][1], &o->shape[i][1], o->w[i], 0);
        if (o->buf[i]) {
            add(t, i64, n, o->names[i][2], &o->shape[i][1], o->buf[i], 0);
        }
        add(t, i64, n, o->names[i][3], &o->shape[i][2], tb->lrs, 1); /* double bits */
        add(t, i64, n, o->names[i][4], &o->shape[i][0], o->last[i], 1);
        sprintf(o->meta_steps + strlen(o->meta_steps), "%s%" PRIu64, i ? "," : "",
                srv_table_step(tb->tbl));
    }
    return 0;
}

/* Tensor `name` as 1-D of `want` elements (8 bytes each when i64);
 * want SIZE_MAX: any length, returned in *got. */
static int get_1d(const ps_st_file_t *f, const char *path, const char *name, int i64,
                  const void **data, size_t *got)
{
    const float *d;
    int nd;
    int64_t sh[PS_MAX_DIMS];
    if (ps_st_get(f, name, &d, &nd, sh) != 0 || nd != 1 || ps_st_is_i64(f, name) != i64) {
        ps_error_set("%s: tensor %s is missing or not a 1-D %s", path, name, i64 ? "I64" : "F32");
        return PS_EFORMAT;
    }
    *data = d;
    *got = (size_t)sh[0];
    return 0;
}

static int grow(srv_ckpt_table_t *ct, size_t more, int with_buf)
{
    size_t need = ct->n + more, d = ct->dim;
    if (need <= ct->cap) {
        return 0;
    }
    size_t cap = need > 2 * ct->cap ? need : 2 * ct->cap;
    uint64_t *k = realloc(ct->keys, cap * sizeof *k);
    ct->keys = k ? k : ct->keys;
    float *w = realloc(ct->w, cap * d * sizeof *w);
    ct->w = w ? w : ct->w;
    float *b = with_buf ? realloc(ct->buf, cap * d * sizeof *b) : NULL;
    ct->buf = b ? b : ct->buf;
    uint64_t *l = realloc(ct->last, cap * sizeof *l);
    ct->last = l ? l : ct->last;
    if (!k || !w || (with_buf && !b) || !l) {
        ps_error_set("no memory for %zu rows of a checkpointed table", need);
        return PS_ENOMEM;
    }
    ct->cap = cap;
    return 0;
}

/* Table i of one file: its rows appended, its step and lr history kept. */
static int take_table(srv_ckpt_table_t *ct, const ps_st_file_t *f, const char *path, int i,
                      uint64_t step)
{
    char name[48];
    const void *k, *w, *b = NULL, *lr, *last = NULL;
    size_t n, nw, nb = 0, nlr, nlast = 0;
    int rv;
    snprintf(name, sizeof name, "table.%d.keys", i);
    if ((rv = get_1d(f, path, name, 1, &k, &n)) != 0) {
        return rv;
    }
    snprintf(name, sizeof name, "table.%d.w", i);
    if ((rv = get_1d(f, path, name, 0, &w, &nw)) != 0) {
        return rv;
    }
    snprintf(name, sizeof name, "table.%d.buf", i);
    int with_buf = ps_st_get(f, name, NULL, NULL, NULL) == 0;
    if (with_buf && (rv = get_1d(f, path, name, 0, &b, &nb)) != 0) {
        return rv;
    }
    snprintf(name, sizeof name, "table.%d.lr", i);
    if ((rv = get_1d(f, path, name, 1, &lr, &nlr)) != 0) {
        return rv;
    }
    /* table.<i>.last: each row's stored step (checkpoints before it hold
     * rows caught up to the checkpoint's step). */
    snprintf(name, sizeof name, "table.%d.last", i);
    int with_last = ps_st_get(f, name, NULL, NULL, NULL) == 0;
    if (with_last && (rv = get_1d(f, path, name, 1, &last, &nlast)) != 0) {
        return rv;
    }
    int bad = nlr != step || (with_last && nlast != n) || (ct->files && step != ct->step) ||
              (n == 0 && nw != 0);
    if (n > 0) {
        bad |= nw % n != 0 || (ct->dim && nw / n != ct->dim) || (with_buf && nb != nw) ||
               (ct->n > 0 && with_buf != (ct->buf != NULL));
    }
    if (bad) {
        ps_error_set("%s: table %d's rows, buffer or lr history do not match", path, i);
        return PS_EFORMAT;
    }
    if (!ct->files) {
        ct->step = step;
        if (!(ct->lrs = malloc((nlr ? nlr : 1) * sizeof *ct->lrs))) {
            return PS_ENOMEM;
        }
        memcpy(ct->lrs, lr, nlr * sizeof *ct->lrs);
    }
    ct->files++;
    if (n == 0) {
        return 0;
    }
    ct->dim = (uint32_t)(nw / n);
    if ((rv = grow(ct, n, with_buf)) != 0) {
        return rv;
    }
    memcpy(ct->keys + ct->n, k, n * sizeof *ct->keys);
    for (size_t j = 0; j < n; j++) {
        uint64_t s = step;
        if (with_last) {
            memcpy(&s, (const char *)last + j * sizeof s, sizeof s);
        }
        if (s > step) {
            ps_error_set("%s: table %d row %zu is at step %" PRIu64 ", after the table's %" PRIu64,
                         path, i, j, s, step);
            return PS_EFORMAT;
        }
        ct->last[ct->n + j] = s;
    }
    memcpy(ct->w + ct->n * ct->dim, w, nw * sizeof(float));
    if (with_buf) {
        memcpy(ct->buf + ct->n * ct->dim, b, nw * sizeof(float));
    }
    ct->n += n;
    return 0;
}

int srv_ckpt_tables_take(srv_ckpt_state_t *st, const ps_st_file_t *f, const char *path)
{
    const char *tables = ps_st_meta(f, "tables"), *steps = ps_st_meta(f, "table_steps");
    int nt;
    uint64_t hash;
    if (!tables) {
        return st->ntables == 0 ? 0 : (ps_error_set("%s: no tables", path), PS_EFORMAT);
    }
    if (sscanf(tables, "%d:%" SCNx64, &nt, &hash) != 2 || nt < 0 || nt > PS_TABLES_MAX || !steps ||
        (st->tables && (nt != st->ntables || hash != st->tables_hash))) {
        ps_error_set("%s: malformed or other tables than the other files'", path);
        return PS_EFORMAT;
    }
    if (!st->tables) {
        st->ntables = nt;
        st->tables_hash = hash;
        if (!(st->tables = calloc((size_t)nt + 1, sizeof *st->tables))) {
            return PS_ENOMEM;
        }
    }
    for (int i = 0; i < nt; i++) {
        unsigned long long s;
        int used = 0;
        if (sscanf(steps, "%llu%n", &s, &used) != 1) {
            ps_error_set("%s: malformed table_steps", path);
            return PS_EFORMAT;
        }
        steps += used + (steps[used] == ',');
        int rv = take_table(&st->tables[i], f, path, i, (uint64_t)s);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static const uint64_t *sort_keys;

static int by_key(const void *a, const void *b)
{
    uint64_t x = sort_keys[*(const size_t *)a], y = sort_keys[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* The rows of ct that live on this server, ascending, into t. */
static int import_one(const srv_ckpt_table_t *ct, srv_sparse_t *sp, srv_sparse_table_t *t)
{
    size_t n = 0, d = t->decl.dim, *perm = malloc((ct->n + 1) * sizeof *perm);
    uint64_t *k = malloc((ct->n + 1) * sizeof *k);
    float *w = malloc((ct->n * d + 1) * sizeof *w);
    float *b = ct->buf ? malloc((ct->n * d + 1) * sizeof *b) : NULL;
    uint64_t *l = malloc((ct->n + 1) * sizeof *l);
    int rv = perm && k && w && l && (!ct->buf || b) ? 0 : PS_ENOMEM;
    for (size_t i = 0; rv == 0 && i < ct->n; i++) {
        if (ps_key_server(ct->keys[i], (uint32_t)sp->cfg.nservers) == (uint32_t)sp->cfg.server) {
            perm[n++] = i;
        }
    }
    sort_keys = ct->keys;
    if (rv == 0) {
        qsort(perm, n, sizeof *perm, by_key);
    }
    for (size_t i = 0; rv == 0 && i < n; i++) {
        k[i] = ct->keys[perm[i]];
        l[i] = ct->last[perm[i]];
        memcpy(w + i * d, ct->w + perm[i] * d, d * sizeof *w);
        if (b) {
            memcpy(b + i * d, ct->buf + perm[i] * d, d * sizeof *b);
        }
    }
    if (rv == 0) {
        rv = srv_table_import_state(t->tbl, k, w, b, l, n, ct->step, ct->lrs);
    }
    free(perm), free(k), free(w), free(b), free(l);
    return rv;
}

int srv_ckpt_tables_apply(const srv_ckpt_state_t *st, srv_sparse_t *sp, uint64_t step)
{
    int nt = srv_sparse_ntables(sp);
    if (st->ntables != nt || (nt > 0 && st->tables_hash != ps_tables_hash(&sp->decls))) {
        ps_error_set("the --resume checkpoint (step %" PRIu64 ") holds %d sparse tables "
                     "(declarations %016" PRIx64 "), the model declares %d (%016" PRIx64 ")",
                     st->step, st->ntables, st->tables_hash, nt, ps_tables_hash(&sp->decls));
        return PS_EINVAL;
    }
    for (int i = 0; i < nt; i++) {
        srv_sparse_table_t *t = &sp->t[i];
        const srv_ckpt_table_t *ct = &st->tables[i];
        int rv = import_one(ct, sp, t);
        if (rv == 0 && ct->step > 0 && !(t->lrs = malloc(ct->step * sizeof *t->lrs))) {
            rv = PS_ENOMEM;
        }
        if (rv != 0) {
            return rv;
        }
        if (ct->step > 0) {
            memcpy(t->lrs, ct->lrs, ct->step * sizeof *t->lrs);
        }
        t->nlrs = t->caplrs = ct->step;
        t->version = step;
    }
    return 0;
}
