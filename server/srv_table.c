#include "srv_table.h"

#include "ps_err.h"
#include "srv_catchup.h"
#include "srv_rowmap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows per chunk: the row arena grows a chunk at a time, so it never holds
 * more than one partly used chunk (no doubling trough, no copies). */
#define CH_SHIFT 12
#define CH_ROWS (1u << CH_SHIFT)
#define MAX_DIM (1u << 20)
/* Products cached per call, by the step a row is up to. */
#define PCACHE 64
/* Rows prefetched ahead of the one being updated (memory latency). */
#define ROW_AHEAD 12

struct srv_table {
    char *name;
    uint32_t id, dim;
    uint32_t rowf;   /* floats per row: [w | buf] or [w] when momentum is 0 */
    uint32_t stride; /* rowf + 1: the row's u32 step follows it */
    srv_table_init_t init;
    srv_optim_cfg_t opt;
    srv_sparse_mode_t mode;
    size_t max_bytes;
    uint64_t step;
    srv_rowmap_t *map;
    /* Chunk c: CH_ROWS records of `stride` 4-byte words: the row's
     * floats, then the step it is up to (exact) or of its last update, 0 =
     * never (lazy), in the same cache line as the row's end. */
    float **chunk;
    size_t nchunks, chunk_cap;
    srv_catchup_t tree; /* exact mode: the maps of steps (base, step] */
    /* Per-call scratch, freed when the call returns (scratch_free), so
     * it is not part of the table's bytes. */
    uint64_t *ukeys; /* the call's distinct keys */
    uint32_t *uidx;  /* their rows (SRV_ROWMAP_NONE until created) */
    uint64_t *mkeys; /* the missing ones */
    size_t ucap, mcap;
    const float **pptr; /* per part: this key's row, and the coefficients */
    float *pcoef;
    size_t *pcur;
    int pcap;
    uint64_t pc_step[PCACHE];
    srv_map2_t pc_map[PCACHE];
};

/* ---- rows -------------------------------------------------------------- */

static size_t chunk_bytes(const srv_table_t *t)
{
    return (size_t)CH_ROWS * t->stride * sizeof(float);
}

static inline float *row_w(const srv_table_t *t, uint32_t r)
{
    return t->chunk[r >> CH_SHIFT] + (size_t)(r & (CH_ROWS - 1)) * t->stride;
}

static inline float *row_buf(const srv_table_t *t, uint32_t r)
{
    return t->rowf > t->dim ? row_w(t, r) + t->dim : NULL;
}

static inline uint32_t *row_step(const srv_table_t *t, uint32_t r)
{
    return (uint32_t *)(row_w(t, r) + t->rowf);
}

/* Chunk-pointer capacity for `rows` rows, growing as ensure_chunk does. */
static size_t ptr_cap_for(const srv_table_t *t, size_t rows)
{
    size_t chunks = (rows + CH_ROWS - 1) >> CH_SHIFT, cap = t->chunk_cap;
    while (cap < chunks) {
        cap = cap < 16 ? 16 : cap * 2;
    }
    return cap;
}

/* Memory of the rows part (chunks and their pointer array) at `rows`. */
static size_t rows_bytes(const srv_table_t *t, size_t rows)
{
    size_t chunks = (rows + CH_ROWS - 1) >> CH_SHIFT;
    if (chunks < t->nchunks) {
        chunks = t->nchunks;
    }
    return chunks * chunk_bytes(t) + ptr_cap_for(t, rows) * sizeof(float *);
}

static int ensure_chunk(srv_table_t *t, uint32_t r)
{
    size_t c = r >> CH_SHIFT;
    if (c < t->nchunks) {
        return 0;
    }
    if (t->nchunks == t->chunk_cap) {
        size_t cap = ptr_cap_for(t, ((size_t)t->nchunks + 1) << CH_SHIFT);
        float **p = realloc(t->chunk, cap * sizeof *p);
        if (p == NULL) {
            goto fail;
        }
        t->chunk = p;
        t->chunk_cap = cap;
    }
    /* 64-byte aligned (chunk_bytes is a multiple of 64). */
    if ((t->chunk[t->nchunks] = aligned_alloc(64, chunk_bytes(t))) == NULL) {
        goto fail;
    }
    t->nchunks++;
    return 0;
fail:
    ps_error_set("table %s: out of memory at %zu rows", t->name, srv_rowmap_count(t->map));
    return PS_ENOMEM;
}

/* ---- init -------------------------------------------------------------- */

/* splitmix64's output function of state x. */
static uint64_t sm64(uint64_t x)
{
    uint64_t z = x + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void srv_table_init_row(const srv_table_init_t *init, uint32_t table_id, uint64_t key, uint32_t dim,
                        float *out)
{
    if (init == NULL || init->kind != SRV_TABLE_INIT_UNIFORM) {
        memset(out, 0, (size_t)dim * sizeof *out);
        return;
    }
    /* Counter-based: element j's bits depend on (seed, table, key, j) only. */
    uint64_t base = sm64(sm64(sm64(init->seed) ^ table_id) ^ key);
    for (uint32_t j = 0; j < dim; j++) {
        uint64_t r = sm64(base + (uint64_t)j * 0x9e3779b97f4a7c15ULL);
        double u = (double)(r >> 40) * (1.0 / 16777216.0);
        out[j] = (float)((2.0 * u - 1.0) * (double)init->bound);
    }
}

/* ---- new / destroy ----------------------------------------------------- */

static void pcache_clear(srv_table_t *t);
static void scratch_free(srv_table_t *t);

static int check_new(const char *name, uint32_t dim, const srv_table_init_t *init,
                     const srv_optim_cfg_t *opt, srv_sparse_mode_t mode)
{
    const char *nm = name != NULL ? name : "(null)";
    if (name == NULL || dim == 0 || dim > MAX_DIM) {
        ps_error_set("table %s: dim %u (want 1 .. %u)", nm, dim, MAX_DIM);
        return PS_EINVAL;
    }
    if (init != NULL && (init->kind < 0 || init->kind > SRV_TABLE_INIT_UNIFORM ||
                         (init->kind == SRV_TABLE_INIT_UNIFORM &&
                          !(isfinite(init->bound) && init->bound >= 0.0f)))) {
        ps_error_set("table %s: bad init (kind %d, bound %g): want zeros or uniform with a "
                     "finite bound >= 0",
                     nm, init->kind, (double)init->bound);
        return PS_EINVAL;
    }
    if (mode != SRV_SPARSE_EXACT && mode != SRV_SPARSE_LAZY) {
        ps_error_set("table %s: unknown sparse update mode %d", nm, (int)mode);
        return PS_EINVAL;
    }
    if (opt == NULL || srv_optim_check(opt) != 0) {
        return PS_EINVAL;
    }
    return 0;
}

int srv_table_new(srv_table_t **out, const char *name, uint32_t table_id, uint32_t dim,
                  const srv_table_init_t *init, const srv_optim_cfg_t *opt, srv_sparse_mode_t mode,
                  size_t max_bytes)
{
    int rv = check_new(name, dim, init, opt, mode);
    if (rv != 0) {
        return rv;
    }
    srv_table_t *t = calloc(1, sizeof *t);
    if (t == NULL || (t->name = strdup(name)) == NULL || (rv = srv_rowmap_new(&t->map)) != 0) {
        srv_table_destroy(&t);
        ps_error_set("table %s: out of memory", name);
        return PS_ENOMEM;
    }
    t->id = table_id;
    t->dim = dim;
    t->rowf = opt->momentum != 0.0 ? 2 * dim : dim;
    t->stride = t->rowf + 1;
    t->init = init != NULL ? *init : (srv_table_init_t){0};
    t->opt = *opt;
    t->mode = mode;
    t->max_bytes = max_bytes;
    srv_catchup_init(&t->tree, 0);
    pcache_clear(t);
    if (max_bytes != 0 && srv_table_bytes(t) > max_bytes) {
        ps_error_set("table %s: an empty table takes %zu bytes, over the limit of %zu", name,
                     srv_table_bytes(t), max_bytes);
        srv_table_destroy(&t);
        return PS_ENOMEM;
    }
    *out = t;
    return 0;
}

void srv_table_destroy(srv_table_t **tp)
{
    srv_table_t *t = tp != NULL ? *tp : NULL;
    if (t == NULL) {
        return;
    }
    for (size_t c = 0; c < t->nchunks; c++) {
        free(t->chunk[c]);
    }
    free(t->chunk);
    srv_rowmap_destroy(&t->map);
    srv_catchup_fini(&t->tree);
    scratch_free(t);
    free(t->name);
    free(t);
    *tp = NULL;
}

/* ---- accessors ----------------------------------------------------------- */

uint64_t srv_table_step(const srv_table_t *t)
{
    return t->step;
}

size_t srv_table_rows(const srv_table_t *t)
{
    return srv_rowmap_count(t->map);
}

uint32_t srv_table_dim(const srv_table_t *t)
{
    return t->dim;
}

const char *srv_table_name(const srv_table_t *t)
{
    return t->name;
}

static void scratch_free(srv_table_t *t)
{
    free(t->ukeys), free(t->uidx), free(t->mkeys);
    free(t->pptr), free(t->pcoef), free(t->pcur);
    t->ukeys = NULL, t->uidx = NULL, t->mkeys = NULL;
    t->pptr = NULL, t->pcoef = NULL, t->pcur = NULL;
    t->ucap = t->mcap = 0;
    t->pcap = 0;
}

size_t srv_table_bytes(const srv_table_t *t)
{
    return sizeof *t + strlen(t->name) + 1 + srv_rowmap_bytes(t->map) +
           rows_bytes(t, srv_rowmap_count(t->map)) + srv_catchup_bytes(&t->tree);
}

/* ---- scratch ------------------------------------------------------------- */

static int grow_u(srv_table_t *t, size_t n)
{
    if (n <= t->ucap) {
        return 0;
    }
    uint64_t *k = realloc(t->ukeys, n * sizeof *k);
    if (k != NULL) {
        t->ukeys = k;
    }
    uint32_t *x = k != NULL ? realloc(t->uidx, n * sizeof *x) : NULL;
    if (x == NULL) {
        ps_error_set("table %s: out of memory for %zu keys", t->name, n);
        return PS_ENOMEM;
    }
    t->uidx = x;
    t->ucap = n;
    return 0;
}

static int grow_m(srv_table_t *t, size_t n)
{
    if (n <= t->mcap) {
        return 0;
    }
    uint64_t *k = realloc(t->mkeys, n * sizeof *k);
    if (k == NULL) {
        ps_error_set("table %s: out of memory for %zu keys", t->name, n);
        return PS_ENOMEM;
    }
    t->mkeys = k;
    t->mcap = n;
    return 0;
}

static int grow_p(srv_table_t *t, int n)
{
    if (n <= t->pcap) {
        return 0;
    }
    const float **p = realloc(t->pptr, (size_t)n * sizeof *p);
    if (p != NULL) {
        t->pptr = p;
    }
    float *c = p != NULL ? realloc(t->pcoef, (size_t)n * sizeof *c) : NULL;
    if (c != NULL) {
        t->pcoef = c;
    }
    size_t *u = c != NULL ? realloc(t->pcur, (size_t)n * sizeof *u) : NULL;
    if (u == NULL) {
        ps_error_set("table %s: out of memory for %d parts", t->name, n);
        return PS_ENOMEM;
    }
    t->pcur = u;
    t->pcap = n;
    return 0;
}

/* ---- creating rows --------------------------------------------------------- */

/* PS_ENOMEM naming the table when m new distinct keys would pass the bound. */
static int check_bound(srv_table_t *t, const uint64_t *mk, size_t m)
{
    size_t rows = srv_rowmap_count(t->map);
    if (rows + m > SRV_ROWMAP_MAX_ROWS || rows + m < rows) {
        ps_error_set("table %s: %zu rows + %zu new is more than one server holds (%zu)", t->name,
                     rows, m, (size_t)SRV_ROWMAP_MAX_ROWS);
        return PS_ERANGE;
    }
    if (t->max_bytes == 0) {
        return 0;
    }
    size_t map_after = srv_rowmap_bytes_after(t->map, mk, m);
    size_t now = srv_table_bytes(t);
    size_t after = map_after == SIZE_MAX ? SIZE_MAX
                                         : now - srv_rowmap_bytes(t->map) - rows_bytes(t, rows) +
                                               map_after + rows_bytes(t, rows + m);
    if (after > t->max_bytes) {
        ps_error_set("table %s: %zu rows + %zu new would take %.1f MiB, over this server's "
                     "limit of %.1f MiB (--max-table-mib)",
                     t->name, rows, m, after == SIZE_MAX ? INFINITY : (double)after / 1048576.0,
                     (double)t->max_bytes / 1048576.0);
        return PS_ENOMEM;
    }
    return 0;
}

/* The product of the maps of steps (s, step], cached per call (the
 * step's own map may be in the tree already: apply pushes it first). */
static srv_map2_t product_from(srv_table_t *t, uint64_t s)
{
    int c = (int)(s % PCACHE);
    if (t->pc_step[c] != s) {
        t->pc_map[c] = srv_catchup_product(&t->tree, s, t->step);
        t->pc_step[c] = s;
    }
    return t->pc_map[c];
}

/* Forget cached products (the tree or the step changed). */
static void pcache_clear(srv_table_t *t)
{
    for (int c = 0; c < PCACHE; c++) {
        t->pc_step[c] = UINT64_MAX;
    }
}

/* A new row for `key` at its init value, exact mode caught up from the
 * first kept step to the current one. */
static int create_row(srv_table_t *t, uint64_t key, uint32_t *out)
{
    uint32_t r = (uint32_t)srv_rowmap_count(t->map);
    int rv;
    if ((rv = ensure_chunk(t, r)) != 0 || (rv = srv_rowmap_insert(t->map, key, &r)) != 0) {
        return rv;
    }
    float *w = row_w(t, r), *buf = row_buf(t, r);
    srv_table_init_row(&t->init, t->id, key, t->dim, w);
    if (buf != NULL) {
        memset(buf, 0, (size_t)t->dim * sizeof *buf); /* torch's None */
    }
    /* Exact: stored raw, at the first kept step; it is caught up from
     * there when first touched, so when it was created (by a read, an
     * import or a push) does not change its bits. */
    *row_step(t, r) = t->mode == SRV_SPARSE_EXACT ? (uint32_t)t->tree.base : 0;
    *out = r;
    return 0;
}

/* Bring an exact-mode row up to the current step, in place: only for a
 * row about to take an update, so the stored (w, buf, step) of a row
 * changes only when it is touched by a push. */
static inline void catch_up(srv_table_t *t, uint32_t r)
{
    uint32_t *st = row_step(t, r);
    if (t->mode == SRV_SPARSE_EXACT && *st != t->step) {
        srv_catchup_row(product_from(t, *st), row_w(t, r), row_buf(t, r), t->dim);
        *st = (uint32_t)t->step;
    }
}

/* Row r brought up to the current step into w (and buf when not NULL and
 * the row has one) without changing the stored row: reads, exports and
 * saves do not move a row's later bits. */
static void row_value(srv_table_t *t, uint32_t r, float *w, float *buf)
{
    const float *sb = row_buf(t, r);
    uint32_t st = *row_step(t, r);
    memcpy(w, row_w(t, r), (size_t)t->dim * sizeof *w);
    if (sb != NULL && buf != NULL) {
        memcpy(buf, sb, (size_t)t->dim * sizeof *buf);
    }
    if (t->mode != SRV_SPARSE_EXACT || st == t->step) {
        return;
    }
    srv_map2_t p = product_from(t, st);
    if (sb == NULL || buf != NULL) {
        srv_catchup_row(p, w, sb != NULL ? buf : NULL, t->dim);
        return;
    }
    for (uint32_t j = 0; j < t->dim; j++) { /* per element, as the row form */
        float bj = sb[j];
        srv_catchup_row(p, &w[j], &bj, 1);
    }
}

/* Create the rows of ukeys[0..nu) whose uidx is NONE (mk: those keys). */
static int create_missing(srv_table_t *t, size_t nu, size_t m)
{
    int rv = check_bound(t, t->mkeys, m);
    for (size_t i = 0; rv == 0 && i < nu; i++) {
        if (t->uidx[i] == SRV_ROWMAP_NONE) {
            rv = create_row(t, t->ukeys[i], &t->uidx[i]);
        }
    }
    return rv;
}

/* ---- apply ----------------------------------------------------------------- */

static int check_parts(const srv_table_t *t, const srv_rows_part_t *parts, int nparts,
                       size_t *total)
{
    *total = 0;
    for (int k = 0; k < nparts; k++) {
        const srv_rows_part_t *p = &parts[k];
        if (p->n > 0 && (p->keys == NULL || p->grad == NULL)) {
            ps_error_set("table %s: part %d has %zu rows but no keys or gradients", t->name, k,
                         p->n);
            return PS_EINVAL;
        }
        for (size_t i = 1; i < p->n; i++) {
            if (p->keys[i] <= p->keys[i - 1]) {
                ps_error_set("table %s: part %d: keys not ascending and unique at %zu "
                             "(%llu after %llu)",
                             t->name, k, i, (unsigned long long)p->keys[i],
                             (unsigned long long)p->keys[i - 1]);
                return PS_EINVAL;
            }
        }
        *total += p->n;
    }
    return 0;
}

/* The smallest key at the parts' cursors; 0 when every part is done. */
static int next_key(const srv_table_t *t, const srv_rows_part_t *parts, int nparts, uint64_t *key)
{
    int any = 0;
    for (int k = 0; k < nparts; k++) {
        size_t c = t->pcur[k];
        if (c < parts[k].n && (!any || parts[k].keys[c] < *key)) {
            *key = parts[k].keys[c];
            any = 1;
        }
    }
    return any;
}

/* The parts' distinct keys in ascending order into ukeys/uidx (rows
 * looked up), the missing ones into mkeys; *nu and *m their counts. */
static void merge_keys(srv_table_t *t, const srv_rows_part_t *parts, int nparts, size_t *nu,
                       size_t *m)
{
    uint64_t key = 0;
    *nu = *m = 0;
    if (nparts > 0) { /* pcur is NULL for no parts */
        memset(t->pcur, 0, (size_t)nparts * sizeof *t->pcur);
    }
    if (nparts == 1 && parts[0].n > 0) {
        *nu = parts[0].n; /* one part: already ascending and unique */
        memcpy(t->ukeys, parts[0].keys, *nu * sizeof *t->ukeys);
    }
    while (nparts > 1 && next_key(t, parts, nparts, &key)) {
        for (int k = 0; k < nparts; k++) {
            size_t c = t->pcur[k];
            t->pcur[k] += c < parts[k].n && parts[k].keys[c] == key;
        }
        t->ukeys[(*nu)++] = key;
    }
    srv_rowmap_find_many(t->map, t->ukeys, *nu, t->uidx);
    for (size_t i = 0; i < *nu; i++) {
        if (t->uidx[i] == SRV_ROWMAP_NONE) {
            t->mkeys[(*m)++] = t->ukeys[i];
        }
    }
}

/* Hint: row r's weights, buffer and step are about to be used. */
static inline void prefetch_row(const srv_table_t *t, uint32_t r)
{
    const char *w = (const char *)row_w(t, r);
    size_t bytes = (size_t)t->stride * sizeof(float);
    /* Every cache line of the row (64-byte aligned chunks; long rows are
     * streamed by the hardware prefetcher after the first few lines). */
    for (size_t off = 0; off < bytes && off < 512; off += 64) {
        __builtin_prefetch(w + off, 1);
    }
    __builtin_prefetch(w + bytes - 1, 1); /* the step, in the last line */
}

/* Update row r (up to date) with the parts holding key, whose cursors
 * point at it; advances those cursors. */
static void update_row(srv_table_t *t, const srv_rows_part_t *parts, int nparts, uint64_t key,
                       uint32_t r, const srv_optim_cfg_t *cfg)
{
    int np = 0;
    for (int k = 0; k < nparts; k++) {
        size_t c = t->pcur[k];
        if (c < parts[k].n && parts[k].keys[c] == key) {
            t->pptr[np] = parts[k].grad + c * t->dim;
            t->pcoef[np++] = parts[k].coef;
            t->pcur[k] = c + 1;
        }
    }
    uint32_t *st = row_step(t, r);
    int first = t->mode == SRV_SPARSE_EXACT ? t->step == 0 : *st == 0;
    srv_optim_apply(cfg, row_w(t, r), row_buf(t, r), t->pptr, t->pcoef, np, t->dim, first);
    *st = (uint32_t)(t->step + 1);
}

static int check_apply(const srv_table_t *t, const srv_rows_part_t *parts, int nparts, double lr)
{
    if (nparts < 0 || (nparts > 0 && parts == NULL) || !(lr >= 0.0 && isfinite(lr))) {
        ps_error_set("table %s: bad step (%d parts, lr %g)", t->name, nparts, lr);
        return PS_EINVAL;
    }
    if (t->step >= UINT32_MAX) {
        ps_error_set("table %s: step %llu is the last one a table counts", t->name,
                     (unsigned long long)t->step);
        return PS_ERANGE;
    }
    return 0;
}

static int apply_step(srv_table_t *t, const srv_rows_part_t *parts, int nparts, double lr)
{
    size_t total, nu, m;
    int rv;
    if ((rv = check_apply(t, parts, nparts, lr)) != 0 ||
        (rv = check_parts(t, parts, nparts, &total)) != 0 || (rv = grow_u(t, total)) != 0 ||
        (rv = grow_m(t, total)) != 0 || (rv = grow_p(t, nparts)) != 0) {
        return rv;
    }
    pcache_clear(t);
    merge_keys(t, parts, nparts, &nu, &m);
    if (m > 0 && (rv = create_missing(t, nu, m)) != 0) {
        return rv; /* rows made before an allocation failure are valid rows */
    }
    srv_optim_cfg_t cfg = t->opt;
    cfg.lr = lr;
    if (t->mode == SRV_SPARSE_EXACT &&
        (rv = srv_catchup_push(&t->tree, srv_catchup_step_map(&cfg, lr, t->step == 0))) != 0) {
        return rv;
    }
    if (nparts > 0) {
        memset(t->pcur, 0, (size_t)nparts * sizeof *t->pcur);
    }
    for (size_t i = 0; i < nu; i++) {
        if (i + ROW_AHEAD < nu) {
            prefetch_row(t, t->uidx[i + ROW_AHEAD]);
        }
        catch_up(t, t->uidx[i]);
        update_row(t, parts, nparts, t->ukeys[i], t->uidx[i], &cfg);
    }
    t->step++;
    return 0;
}

/* ---- read ------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Create the distinct missing keys among keys[0..n) (their rows in uidx
 * are NONE); then fill uidx. */
static int read_create(srv_table_t *t, const uint64_t *keys, size_t n, size_t m)
{
    qsort(t->mkeys, m, sizeof *t->mkeys, cmp_u64);
    size_t d = 0;
    for (size_t i = 0; i < m; i++) {
        if (d == 0 || t->mkeys[i] != t->mkeys[d - 1]) {
            t->mkeys[d++] = t->mkeys[i];
        }
    }
    int rv = check_bound(t, t->mkeys, d);
    for (size_t i = 0; rv == 0 && i < d; i++) {
        uint32_t r;
        rv = create_row(t, t->mkeys[i], &r);
    }
    for (size_t i = 0; rv == 0 && i < n; i++) {
        if (t->uidx[i] == SRV_ROWMAP_NONE) {
            t->uidx[i] = srv_rowmap_find(t->map, keys[i]);
        }
    }
    return rv;
}

static int read_rows(srv_table_t *t, const uint64_t *keys, size_t n, float *out)
{
    int rv;
    if (n > 0 && (keys == NULL || out == NULL)) {
        ps_error_set("table %s: read of %zu rows without keys or output", t->name, n);
        return PS_EINVAL;
    }
    if ((rv = grow_u(t, n)) != 0 || (rv = grow_m(t, n)) != 0) {
        return rv;
    }
    size_t m = 0;
    srv_rowmap_find_many(t->map, keys, n, t->uidx);
    for (size_t i = 0; i < n; i++) {
        if (t->uidx[i] == SRV_ROWMAP_NONE) {
            t->mkeys[m++] = keys[i];
        }
    }
    pcache_clear(t);
    if (m > 0 && (rv = read_create(t, keys, n, m)) != 0) {
        return rv;
    }
    for (size_t i = 0; i < n; i++) {
        if (i + ROW_AHEAD < n) {
            prefetch_row(t, t->uidx[i + ROW_AHEAD]);
        }
        row_value(t, t->uidx[i], out + i * t->dim, NULL);
    }
    return 0;
}

int srv_table_apply(srv_table_t *t, const srv_rows_part_t *parts, int nparts, double lr)
{
    int rv = apply_step(t, parts, nparts, lr);
    scratch_free(t);
    return rv;
}

int srv_table_read(srv_table_t *t, const uint64_t *keys, size_t n, float *out)
{
    int rv = read_rows(t, keys, n, out);
    scratch_free(t);
    return rv;
}

/* ---- export / import --------------------------------------------------------- */

typedef struct {
    uint64_t key;
    uint32_t row;
} keyrow_t;

static int cmp_keyrow(const void *a, const void *b)
{
    uint64_t x = ((const keyrow_t *)a)->key, y = ((const keyrow_t *)b)->key;
    return (x > y) - (x < y);
}

/* Every (key, row) pair in ascending key order; NULL on no memory. */
static keyrow_t *sorted_rows(const srv_table_t *t, size_t n)
{
    uint64_t *k = malloc(n * sizeof *k);
    uint32_t *r = malloc(n * sizeof *r);
    keyrow_t *kr = malloc(n * sizeof *kr);
    if (k != NULL && r != NULL && kr != NULL) {
        srv_rowmap_keys(t->map, k, r);
        for (size_t i = 0; i < n; i++) {
            kr[i] = (keyrow_t){k[i], r[i]};
        }
        qsort(kr, n, sizeof *kr, cmp_keyrow);
    } else {
        free(kr);
        kr = NULL;
    }
    free(k);
    free(r);
    return kr;
}

/* Every row in ascending key order: caught up (raw 0) or as stored with
 * its step word (raw 1, last not NULL). */
static int export_rows(srv_table_t *t, int raw, uint64_t **keys, float **w, float **buf,
                       uint64_t **last, size_t *n)
{
    size_t rows = srv_rowmap_count(t->map), d = t->dim;
    *keys = NULL, *w = NULL, *buf = NULL, *n = 0;
    if (last != NULL) {
        *last = NULL;
    }
    if (rows == 0) {
        return 0;
    }
    keyrow_t *kr = sorted_rows(t, rows);
    uint64_t *ko = malloc(rows * sizeof *ko);
    uint64_t *lo = last != NULL ? malloc(rows * sizeof *lo) : NULL;
    float *wo = malloc(rows * d * sizeof *wo);
    float *bo = t->rowf > t->dim ? malloc(rows * d * sizeof *bo) : NULL;
    if (kr == NULL || ko == NULL || wo == NULL || (t->rowf > t->dim && bo == NULL) ||
        (last != NULL && lo == NULL)) {
        free(kr), free(ko), free(wo), free(bo), free(lo);
        ps_error_set("table %s: out of memory exporting %zu rows", t->name, rows);
        return PS_ENOMEM;
    }
    pcache_clear(t);
    for (size_t i = 0; i < rows; i++) {
        uint32_t r = kr[i].row;
        ko[i] = kr[i].key;
        if (!raw) {
            row_value(t, r, wo + i * d, bo != NULL ? bo + i * d : NULL);
            continue;
        }
        memcpy(wo + i * d, row_w(t, r), d * sizeof *wo);
        if (bo != NULL) {
            memcpy(bo + i * d, row_buf(t, r), d * sizeof *bo);
        }
        lo[i] = *row_step(t, r);
    }
    free(kr);
    *keys = ko, *w = wo, *buf = bo, *n = rows;
    if (last != NULL) {
        *last = lo;
    }
    return 0;
}

int srv_table_export(srv_table_t *t, uint64_t **keys, float **w, float **buf, size_t *n)
{
    return export_rows(t, 0, keys, w, buf, NULL, n);
}

int srv_table_export_state(srv_table_t *t, uint64_t **keys, float **w, float **buf, uint64_t **last,
                           size_t *n)
{
    if (last == NULL) {
        ps_error_set("table %s: state export without a step array", t->name);
        return PS_EINVAL;
    }
    return export_rows(t, 1, keys, w, buf, last, n);
}

static int check_import(srv_table_t *t, const uint64_t *keys, const float *w, size_t n,
                        uint64_t step)
{
    if (srv_rowmap_count(t->map) != 0 || t->step != 0) {
        ps_error_set("table %s: import into a table that already has rows or steps", t->name);
        return PS_ESTATE;
    }
    if (step >= UINT32_MAX || (n > 0 && (keys == NULL || w == NULL))) {
        ps_error_set("table %s: bad import (%zu rows, step %llu)", t->name, n,
                     (unsigned long long)step);
        return PS_EINVAL;
    }
    for (size_t i = 1; i < n; i++) {
        if (keys[i] <= keys[i - 1]) {
            ps_error_set("table %s: imported keys not ascending and unique at row %zu", t->name, i);
            return PS_EINVAL;
        }
    }
    return check_bound(t, keys, n);
}

static int all_zero(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (x[i] != 0.0f) {
            return 0;
        }
    }
    return 1;
}

int srv_table_import(srv_table_t *t, const uint64_t *keys, const float *w, const float *buf,
                     size_t n, uint64_t step)
{
    int rv = check_import(t, keys, w, n, step);
    if (rv != 0) {
        return rv;
    }
    size_t d = t->dim;
    for (size_t i = 0; i < n; i++) {
        uint32_t r;
        if ((rv = create_row(t, keys[i], &r)) != 0) {
            return rv;
        }
        memcpy(row_w(t, r), w + i * d, d * sizeof *w);
        float *b = row_buf(t, r);
        if (b != NULL && buf != NULL) {
            memcpy(b, buf + i * d, d * sizeof *b);
        }
        if (t->mode == SRV_SPARSE_EXACT) {
            *row_step(t, r) = (uint32_t)step;
        } else {
            *row_step(t, r) = b == NULL || !all_zero(b, d) ? (uint32_t)(step > 0 ? step : 1) : 0;
        }
    }
    t->step = step;
    srv_catchup_reset(&t->tree, step);
    return 0;
}

int srv_table_import_history(srv_table_t *t, const double *lr, uint64_t nsteps)
{
    if (t->mode != SRV_SPARSE_EXACT || t->step != nsteps || t->tree.base != nsteps ||
        t->tree.count != 0) {
        ps_error_set("table %s: step history of %llu steps does not fit (exact mode, after an "
                     "import at that step, before any apply)",
                     t->name, (unsigned long long)nsteps);
        return PS_ESTATE;
    }
    for (uint64_t i = 0; i < nsteps; i++) {
        if (lr == NULL || !(lr[i] >= 0.0 && isfinite(lr[i]))) {
            ps_error_set("table %s: bad lr %g for step %llu", t->name, lr != NULL ? lr[i] : NAN,
                         (unsigned long long)(i + 1));
            return PS_EINVAL;
        }
    }
    srv_catchup_t k;
    srv_catchup_init(&k, 0);
    for (uint64_t i = 0; i < nsteps; i++) {
        srv_optim_cfg_t cfg = t->opt;
        cfg.lr = lr[i];
        if (srv_catchup_push(&k, srv_catchup_step_map(&cfg, lr[i], i == 0)) != 0) {
            srv_catchup_fini(&k);
            return PS_ENOMEM;
        }
    }
    srv_catchup_fini(&t->tree);
    t->tree = k;
    return 0;
}

/* Back to an empty table at step 0 (a failed state import). */
static void import_undo(srv_table_t *t)
{
    srv_rowmap_t *m = NULL;
    if (srv_rowmap_new(&m) != 0) {
        return; /* no memory: the rows stay (the caller ends the job) */
    }
    srv_rowmap_destroy(&t->map);
    t->map = m;
    for (size_t c = 0; c < t->nchunks; c++) {
        free(t->chunk[c]);
    }
    t->nchunks = 0;
    t->step = 0;
    srv_catchup_reset(&t->tree, 0);
    pcache_clear(t);
}

int srv_table_import_state(srv_table_t *t, const uint64_t *keys, const float *w, const float *buf,
                           const uint64_t *last, size_t n, uint64_t step, const double *lr)
{
    for (size_t i = 0; i < n; i++) {
        if (last == NULL || last[i] > step) {
            ps_error_set("table %s: row %zu's step %llu is after the import step %llu", t->name, i,
                         last != NULL ? (unsigned long long)last[i] : 0ULL,
                         (unsigned long long)step);
            return PS_EINVAL;
        }
    }
    for (uint64_t i = 0; t->mode == SRV_SPARSE_EXACT && i < step; i++) {
        if (lr == NULL || !(lr[i] >= 0.0 && isfinite(lr[i]))) {
            ps_error_set("table %s: bad lr %g for step %llu", t->name, lr != NULL ? lr[i] : NAN,
                         (unsigned long long)(i + 1));
            return PS_EINVAL;
        }
    }
    int rv = srv_table_import(t, keys, w, buf, n, step);
    if (rv == 0 && t->mode == SRV_SPARSE_EXACT && step > 0) {
        rv = srv_table_import_history(t, lr, step);
    }
    if (rv != 0) {
        import_undo(t);
        return rv;
    }
    /* The tree now starts at step 0 (exact), so any stored step is valid. */
    for (size_t i = 0; i < n; i++) {
        *row_step(t, srv_rowmap_find(t->map, keys[i])) = (uint32_t)last[i];
    }
    return 0;
}
