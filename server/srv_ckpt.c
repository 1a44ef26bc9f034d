#include "srv_ckpt.h"
#include "srv_ckpt_dir.h"
#include "srv_ckpt_tables.h"

#include "ps_atomic.h"
#include "ps_err.h"
#include "ps_safetensors.h"
#include "srv_save.h"
#include "srv_settings.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* A manifest names at most this many server files: far above any server
 * count a parameter server runs with, and it bounds what a damaged or
 * hostile MANIFEST can make the reader allocate. */
#define MAX_MANIFEST_SERVERS (1 << 20)

/* CRC-32 of the tensors' data (1-D; I64 ones 8 bytes an element), in the
 * given order.  Empty ones are skipped: zlib's crc32 of a NULL buffer
 * returns the initial value, not the running one. */
static uint32_t crc_of(const ps_st_tensor_t *t, const int *i64, int n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        uInt bytes = (uInt)(t[i].shape[0] * (i64[i] ? 8 : 4));
        if (bytes > 0) {
            crc = crc32(crc, (const Bytef *)t[i].data, bytes);
        }
    }
    return (uint32_t)crc;
}

/* Names the parts of servers 0..owners-1, the servers that own chunks. */
static int write_manifest(const srv_store_t *s, const char *sdir, uint64_t step, int nservers,
                          int owners)
{
    char path[4200], *text = malloc(64 * (size_t)owners + 512);
    if (!text) {
        ps_error_set("%s: no memory for the MANIFEST of %d servers", sdir, owners);
        return PS_ENOMEM;
    }
    size_t used = (size_t)sprintf(text,
                                  "ps-checkpoint 1\nstep %" PRIu64 "\nnservers %d\ntotal %zu\n"
                                  "layout %016" PRIx64 "\n",
                                  step, nservers, s->map.total, ps_layout_hash(s->layout));
    for (int r = 0; r < owners; r++) {
        used += (size_t)sprintf(text + used, "file server-%d.safetensors\n", r);
    }
    snprintf(path, sizeof path, "%s/MANIFEST", sdir);
    int rv = ps_atomic_write_buf(path, text, used);
    free(text);
    return rv;
}

/* "id:offset:count:had;..." for the chunks of this file. */
static char *chunk_list(const srv_store_t *s)
{
    char *out = malloc(64 * (s->nlocal + 1));
    size_t used = 0;
    if (!out) {
        return NULL;
    }
    out[0] = '\0';
    for (size_t i = 0; i < s->nlocal; i++) {
        const srv_chunk_t *c = &s->chunks[i];
        used += (size_t)sprintf(out + used, "%s%u:%zu:%zu:%d", i ? ";" : "", c->id, c->offset,
                                c->count, c->had_update);
    }
    return out;
}

/* After step's MANIFEST: every older checkpoint goes but the newest whole
 * one (a fallback should the new one turn out damaged).  Best effort: a
 * folder that stays is harmless.  Two servers that both completed the
 * step may prune at once; their removals of the same files do not harm
 * each other. */
static void prune(const char *dir, uint64_t step)
{
    uint64_t *steps;
    size_t n;
    int kept = 0;
    if (srv_ckpt_dir_list(dir, &steps, &n) != 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (steps[i] >= step) {
            continue;
        }
        if (!kept && srv_ckpt_dir_whole(dir, steps[i])) {
            kept = 1;
            continue;
        }
        srv_ckpt_dir_remove(dir, steps[i]);
    }
    free(steps);
}

/* Are the parts of every server that owns chunks in sdir?  Each writer
 * renames its part into place and syncs the folder before it looks, so
 * whichever writer finishes last sees every part. */
static int parts_complete(const char *sdir, int owners)
{
    char path[4200];
    struct stat sb;
    for (int r = 0; r < owners; r++) {
        snprintf(path, sizeof path, "%s/server-%d.safetensors", sdir, r);
        if (stat(path, &sb) != 0) {
            return 0;
        }
    }
    return 1;
}

/* The last part completes the checkpoint: MANIFEST, then pruning. */
static int complete_step(const srv_store_t *s, const char *dir, const char *sdir, uint64_t step,
                         int nservers, int ntables)
{
    /* With tables every server holds rows, so every server writes. */
    int owners =
        ntables > 0 ? nservers : (int)(s->map.n < (size_t)nservers ? s->map.n : (size_t)nservers);
    if (!parts_complete(sdir, owners)) {
        return 0; /* a later writer completes it */
    }
    int rv = write_manifest(s, sdir, step, nservers, owners);
    if (rv == 0) {
        prune(dir, step);
    }
    return rv;
}

int srv_ckpt_write(const srv_store_t *s, srv_sparse_t *sp, const char *dir, uint64_t step,
                   int nservers, const char *settings)
{
    char sdir[4100], path[4200], crc[16], stepv[24], hash[24], total[24];
    int rv, n = 0, nt = sp ? srv_sparse_ntables(sp) : 0;
    srv_ckpt_tables_out_t tabs;
    memset(&tabs, 0, sizeof tabs);
    if (s->nlocal == 0 && nt == 0) {
        return 0; /* a server without chunks or tables has nothing to keep */
    }
    srv_ckpt_dir_step(sdir, sizeof sdir, dir, step);
    if ((rv = srv_ckpt_dir_make(dir, sdir)) != 0) {
        return rv;
    }
    size_t cap = 2 * s->nlocal + 5 * (size_t)nt + 1;
    ps_st_tensor_t *t = calloc(cap, sizeof *t);
    int *i64 = calloc(cap, sizeof *i64);
    char(*names)[32] = calloc(2 * s->nlocal + 1, sizeof *names);
    int64_t *shapes = calloc(s->nlocal, sizeof *shapes);
    char *chunks = chunk_list(s);
    if (!t || !i64 || !names || !shapes || !chunks) {
        ps_error_set("%s: no memory to describe %zu chunks", sdir, s->nlocal);
        rv = PS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < s->nlocal; i++) {
        const srv_chunk_t *c = &s->chunks[i];
        shapes[i] = (int64_t)c->count;
        snprintf(names[n], sizeof names[n], "chunk.%u.w", c->id);
        t[n] = (ps_st_tensor_t){names[n], 1, &shapes[i], c->w};
        n++;
        if (c->buf && c->had_update) {
            snprintf(names[n], sizeof names[n], "chunk.%u.buf", c->id);
            t[n] = (ps_st_tensor_t){names[n], 1, &shapes[i], c->buf};
            n++;
        }
    }
    if (nt > 0 && (rv = srv_ckpt_tables_out(sp, &tabs, t, i64, &n)) != 0) {
        goto out;
    }
    snprintf(crc, sizeof crc, "%08" PRIx32, crc_of(t, i64, n));
    snprintf(stepv, sizeof stepv, "%" PRIu64, step);
    snprintf(hash, sizeof hash, "%016" PRIx64, ps_layout_hash(s->layout));
    snprintf(total, sizeof total, "%zu", s->map.total);
    const char *meta[] = {"format",   "ps-checkpoint",
                          "step",     stepv,
                          "crc32",    crc,
                          "layout",   hash,
                          "total",    total,
                          "chunks",   chunks,
                          "settings", settings,
                          NULL,       NULL,
                          NULL,       NULL,
                          NULL,       NULL};
    int nmeta = (int)(sizeof meta / sizeof meta[0] / 2) - 3;
    /* The layout hash covers the tensor options (a resume needs the same);
     * the text is for people reading the file. */
    char *topts = s->tensor_opts ? srv_save_tensor_opts(s->layout) : NULL;
    if (topts) {
        meta[2 * nmeta] = "tensor_options";
        meta[2 * nmeta++ + 1] = topts;
    }
    if (nt > 0) {
        meta[2 * nmeta] = "tables";
        meta[2 * nmeta++ + 1] = tabs.meta_tables;
        meta[2 * nmeta] = "table_steps";
        meta[2 * nmeta++ + 1] = tabs.meta_steps;
    }
    snprintf(path, sizeof path, "%s/server-%d.safetensors", sdir, s->server);
    rv = ps_st_write_typed(path, t, i64, n, meta, nmeta);
    free(topts);
    if (rv == 0) {
        rv = complete_step(s, dir, sdir, step, nservers, nt);
    }
out:
    srv_ckpt_tables_out_fini(&tabs);
    free(i64);
    free(t);
    free(names);
    free(shapes);
    free(chunks);
    return rv;
}

typedef struct {
    uint64_t step;
    long long nservers;
    size_t total;
    uint64_t layout;
    int nfiles, cap;
    char (*files)[64]; /* nfiles names, malloc'd */
} manifest_t;

static void manifest_fini(manifest_t *m)
{
    free(m->files);
    m->files = NULL;
    m->nfiles = m->cap = 0;
}

/* One "file NAME" line: room grows with the list, up to the bound. */
static int manifest_add_file(manifest_t *m, const char *line, const char *path)
{
    if (m->nfiles == m->cap) {
        if (m->cap >= MAX_MANIFEST_SERVERS) {
            ps_error_set("%s: malformed (more than %d files)", path, MAX_MANIFEST_SERVERS);
            return PS_EFORMAT;
        }
        int cap = m->cap ? 2 * m->cap : 16;
        void *more = realloc(m->files, (size_t)cap * sizeof *m->files);
        if (!more) {
            ps_error_set("%s: no memory for a list of %d files", path, cap);
            return PS_ENOMEM;
        }
        m->files = more;
        m->cap = cap;
    }
    if (sscanf(line, "file %63s", m->files[m->nfiles]) == 1) {
        m->nfiles++;
    }
    return 0;
}

/* The header fields, and the file list against the server count. */
static int manifest_check(const manifest_t *m, int version, int fields, const char *path)
{
    if (version != 1 || fields != 5 || m->nfiles < 1 || m->total == 0) {
        ps_error_set("%s: malformed", path);
        return PS_EFORMAT;
    }
    if (m->nservers < 1 || m->nservers > MAX_MANIFEST_SERVERS) {
        ps_error_set("%s: malformed (nservers %lld, not in 1..%d)", path, m->nservers,
                     MAX_MANIFEST_SERVERS);
        return PS_EFORMAT;
    }
    if (m->nfiles > m->nservers) {
        ps_error_set("%s: malformed (lists %d files, more files than its %lld servers)", path,
                     m->nfiles, m->nservers);
        return PS_EFORMAT;
    }
    return 0;
}

/* Any number of servers up to MAX_MANIFEST_SERVERS; m->files is freed by
 * manifest_fini, also after a failure. */
static int read_manifest(const char *sdir, manifest_t *m)
{
    char path[4200], line[256];
    snprintf(path, sizeof path, "%s/MANIFEST", sdir);
    FILE *f = fopen(path, "r");
    int version = 0, fields = 0, rv = 0;
    memset(m, 0, sizeof *m);
    if (!f) {
        ps_error_set("%s: missing", path);
        return PS_ENOENT;
    }
    while (rv == 0 && fgets(line, sizeof line, f)) {
        fields += sscanf(line, "ps-checkpoint %d", &version) == 1;
        fields += sscanf(line, "step %" SCNu64, &m->step) == 1;
        fields += sscanf(line, "nservers %lld", &m->nservers) == 1;
        fields += sscanf(line, "total %zu", &m->total) == 1;
        fields += sscanf(line, "layout %" SCNx64, &m->layout) == 1;
        if (strncmp(line, "file ", 5) == 0) {
            rv = manifest_add_file(m, line, path);
        }
    }
    fclose(f);
    return rv != 0 ? rv : manifest_check(m, version, fields, path);
}

static int state_alloc(srv_ckpt_state_t *st, const manifest_t *m)
{
    memset(st, 0, sizeof *st);
    st->step = m->step;
    st->total = m->total;
    st->layout_hash = m->layout;
    st->w = malloc(m->total * sizeof(float));
    st->buf = calloc(m->total, sizeof(float));
    if (!st->w || !st->buf) {
        ps_error_set("no memory for a model of %zu elements (twice)", m->total);
        return PS_ENOMEM;
    }
    return 0;
}

static int add_range(srv_ckpt_state_t *st, size_t off, size_t cnt, int had)
{
    size_t n = st->nranges + 1;
    size_t *o = realloc(st->range_off, n * sizeof *o);
    if (o) {
        st->range_off = o;
    }
    size_t *c = realloc(st->range_cnt, n * sizeof *c);
    if (c) {
        st->range_cnt = c;
    }
    uint8_t *h = realloc(st->range_had, n);
    if (h) {
        st->range_had = h;
    }
    if (!o || !c || !h) {
        return PS_ENOMEM;
    }
    st->range_off[st->nranges] = off;
    st->range_cnt[st->nranges] = cnt;
    st->range_had[st->nranges] = (uint8_t)had;
    st->nranges++;
    return 0;
}

/* Copy one chunk of a server file into the flat state. */
static int take_chunk(srv_ckpt_state_t *st, const ps_st_file_t *f, const char *path, unsigned id,
                      size_t off, size_t cnt, int had)
{
    char name[48];
    const float *d;
    int nd;
    int64_t sh[PS_MAX_DIMS];
    snprintf(name, sizeof name, "chunk.%u.w", id);
    if (cnt == 0 || off > st->total || cnt > st->total - off ||
        ps_st_get(f, name, &d, &nd, sh) != 0 || nd != 1 || (size_t)sh[0] != cnt) {
        ps_error_set("%s: chunk %u does not match its entry", path, id);
        return PS_EFORMAT;
    }
    memcpy(st->w + off, d, cnt * sizeof(float));
    snprintf(name, sizeof name, "chunk.%u.buf", id);
    if (ps_st_get(f, name, &d, &nd, sh) == 0) {
        if (nd != 1 || (size_t)sh[0] != cnt) {
            ps_error_set("%s: chunk %u's buffer does not match", path, id);
            return PS_EFORMAT;
        }
        memcpy(st->buf + off, d, cnt * sizeof(float));
    }
    return add_range(st, off, cnt, had);
}

/* The CRC over every tensor in file order must match the metadata. */
static int check_crc(const ps_st_file_t *f, const char *path)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    const char *want = ps_st_meta(f, "crc32");
    for (int i = 0; i < ps_st_count(f); i++) {
        const float *d;
        int nd;
        int64_t sh[PS_MAX_DIMS];
        ps_st_get(f, ps_st_name(f, i), &d, &nd, sh);
        uInt bytes = nd == 1 ? (uInt)(sh[0] * (ps_st_is_i64(f, ps_st_name(f, i)) == 1 ? 8 : 4)) : 0;
        if (bytes > 0) { /* as crc_of */
            crc = crc32(crc, (const Bytef *)d, bytes);
        }
    }
    char got[16];
    snprintf(got, sizeof got, "%08" PRIx32, (uint32_t)crc);
    if (!want || strcmp(want, got) != 0) {
        ps_error_set("%s: bad checksum (recorded %s, computed %s)", path, want ? want : "none",
                     got);
        return PS_EFORMAT;
    }
    return 0;
}

static int meta_is(const ps_st_file_t *f, const char *key, const char *want)
{
    const char *v = ps_st_meta(f, key);
    return v && strcmp(v, want) == 0;
}

/* One server file: metadata against the manifest and our settings, CRC,
 * then every chunk it lists. */
static int load_file(srv_ckpt_state_t *st, const char *path, const manifest_t *m,
                     const char *settings)
{
    ps_st_file_t *f = NULL;
    char stepv[24], hash[24], why[400];
    int rv = ps_st_open(&f, path);
    if (rv != 0) {
        return rv;
    }
    snprintf(stepv, sizeof stepv, "%" PRIu64, m->step);
    snprintf(hash, sizeof hash, "%016" PRIx64, m->layout);
    if (!meta_is(f, "format", "ps-checkpoint") || !meta_is(f, "step", stepv) ||
        !meta_is(f, "layout", hash)) {
        ps_error_set("%s: step or layout differs from the manifest", path);
        rv = PS_EFORMAT;
    } else if (!meta_is(f, "settings", settings) &&
               srv_settings_check_resume(ps_st_meta(f, "settings"), settings, m->step, why,
                                         sizeof why) != 0) {
        ps_error_set("%s was taken with other settings: %s", path, why);
        rv = PS_EINVAL;
    } else {
        rv = check_crc(f, path);
    }
    const char *list = ps_st_meta(f, "chunks");
    for (const char *p = list; rv == 0 && p && *p;) {
        unsigned id;
        size_t off, cnt;
        int had, used = 0;
        if (sscanf(p, "%u:%zu:%zu:%d%n", &id, &off, &cnt, &had, &used) != 4) {
            ps_error_set("%s: malformed chunk list", path);
            rv = PS_EFORMAT;
            break;
        }
        rv = take_chunk(st, f, path, id, off, cnt, had);
        p += used;
        p += *p == ';';
    }
    if (rv == 0) {
        rv = srv_ckpt_tables_take(st, f, path);
    }
    ps_st_close(&f);
    return rv;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* The ranges must tile [0, total) exactly. */
static int check_coverage(const srv_ckpt_state_t *st, const char *sdir)
{
    size_t n = st->nranges, *pairs = malloc(2 * n * sizeof *pairs + 1), next = 0;
    if (!pairs) {
        return PS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        pairs[2 * i] = st->range_off[i];
        pairs[2 * i + 1] = st->range_cnt[i];
    }
    qsort(pairs, n, 2 * sizeof *pairs, cmp_size);
    for (size_t i = 0; i < n && next != SIZE_MAX; i++) {
        next = pairs[2 * i] == next ? next + pairs[2 * i + 1] : SIZE_MAX;
    }
    free(pairs);
    if (next != st->total) {
        ps_error_set("%s: the server files do not cover the model exactly", sdir);
        return PS_EFORMAT;
    }
    return 0;
}

static int try_step(srv_ckpt_state_t *st, const char *dir, uint64_t step, const char *settings)
{
    char sdir[4100], path[4200];
    manifest_t m;
    srv_ckpt_dir_step(sdir, sizeof sdir, dir, step);
    int rv = read_manifest(sdir, &m);
    if (rv == 0 && m.step != step) {
        ps_error_set("%s: manifest says step %" PRIu64, sdir, m.step);
        rv = PS_EFORMAT;
    }
    if (rv == 0) {
        rv = state_alloc(st, &m);
    }
    for (int i = 0; rv == 0 && i < m.nfiles; i++) {
        snprintf(path, sizeof path, "%s/%s", sdir, m.files[i]);
        rv = load_file(st, path, &m, settings);
    }
    if (rv == 0) {
        rv = check_coverage(st, sdir);
    }
    for (int i = 0; rv == 0 && i < st->ntables; i++) {
        if (st->tables[i].files != m.nfiles) {
            ps_error_set("%s: table %d is not in every server file", sdir, i);
            rv = PS_EFORMAT;
        }
    }
    if (rv != 0) {
        srv_ckpt_fini(st);
    }
    manifest_fini(&m);
    return rv;
}

int srv_ckpt_load(srv_ckpt_state_t *st, const char *dir, const char *settings)
{
    uint64_t *steps;
    size_t n;
    memset(st, 0, sizeof *st);
    int rv = srv_ckpt_dir_list(dir, &steps, &n);
    if (rv == PS_ENOENT) {
        ps_error_set("--resume %s: %s", dir, strerror(errno));
    }
    if (rv != 0) {
        return rv;
    }
    char newest[400] = "";
    for (size_t i = 0; i < n; i++) {
        if (try_step(st, dir, steps[i], settings) == 0) {
            free(steps);
            return 0;
        }
        ps_log_error("checkpoint step %" PRIu64 " is unusable: %s%s", steps[i], ps_error_msg(),
                     i + 1 < n ? "; trying the previous one" : "");
        if (i == 0) {
            snprintf(newest, sizeof newest, "%s", ps_error_msg());
        }
    }
    free(steps);
    /* The job's one error line says why the newest could not be used. */
    ps_error_set("--resume %s: no usable checkpoint%s%s%s", dir, n ? " (the newest: " : "", newest,
                 n ? ")" : "");
    return PS_ENOENT;
}

int srv_ckpt_drop_newer(const char *dir, uint64_t step, int resuming)
{
    uint64_t *steps;
    size_t n, dropped = 0;
    int rv = srv_ckpt_dir_list(dir, &steps, &n);
    if (rv == PS_ENOENT) {
        return 0; /* no folder yet: nothing to drop */
    }
    /* A new run never deletes a whole checkpoint it did not write. */
    for (size_t i = 0; rv == 0 && !resuming && i < n; i++) {
        if (srv_ckpt_dir_whole(dir, steps[i])) {
            ps_error_set("--checkpoint-dir %s already holds a checkpoint of another run (step "
                         "%" PRIu64 "): pass --resume %s to continue it, or give an empty folder",
                         dir, steps[i], dir);
            rv = PS_EINVAL;
        }
    }
    for (size_t i = 0; rv == 0 && i < n && steps[i] > step; i++) {
        rv = srv_ckpt_dir_remove(dir, steps[i]);
        dropped += rv == 0;
    }
    if (dropped > 0) {
        ps_log_info("--checkpoint-dir %s: removed %zu unfinished or unusable checkpoint "
                    "folder(s) newer than step %" PRIu64 " (steps %" PRIu64 "..%" PRIu64 ")",
                    dir, dropped, step, steps[dropped - 1], steps[0]);
    }
    free(steps);
    return rv;
}

void srv_ckpt_apply(const srv_ckpt_state_t *st, srv_store_t *s)
{
    for (size_t i = 0; i < s->nlocal; i++) {
        srv_chunk_t *c = &s->chunks[i];
        memcpy(c->w, st->w + c->offset, c->count * sizeof(float));
        c->had_update = 0;
        for (size_t r = 0; r < st->nranges; r++) {
            if (c->offset >= st->range_off[r] && c->offset - st->range_off[r] < st->range_cnt[r]) {
                c->had_update = st->range_had[r];
            }
        }
        if (c->buf) {
            memcpy(c->buf, st->buf + c->offset, c->count * sizeof(float));
        }
        c->version = st->step;
        c->initialized = 1;
    }
}

void srv_ckpt_fini(srv_ckpt_state_t *st)
{
    free(st->w);
    free(st->buf);
    free(st->range_off);
    free(st->range_cnt);
    free(st->range_had);
    for (int i = 0; st->tables && i < st->ntables; i++) {
        free(st->tables[i].keys);
        free(st->tables[i].w);
        free(st->tables[i].buf);
        free(st->tables[i].last);
        free(st->tables[i].lrs);
    }
    free(st->tables);
    memset(st, 0, sizeof *st);
}
