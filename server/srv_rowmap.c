#include "srv_rowmap.h"

#include "ps_err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NSUB_BITS 16
#define NSUB (1u << NSUB_BITS)
#define LO_SHIFT 12 /* rows per chunk of low bits: 4096 */
#define LO_CHUNK (1u << LO_SHIFT)
/* Grow past 93% load, by 1.25x (at least 8 slots). */
#define LOAD_NUM 93
#define LOAD_DEN 100

/* Salt so the sub-table bits are unrelated to any other hash of the key
 * (e.g. the server a key is sharded to). */
#define SALT 0x9e3779b97f4a7c15ULL

typedef struct {
    uint64_t *slot; /* fp << 32 | (row + 1); 0 = empty */
    uint32_t cap;
    uint32_t count;
} sub_t;

struct srv_rowmap {
    sub_t *sub;    /* [NSUB] */
    uint16_t **lo; /* per row: the low 16 bits of h, chunks of LO_CHUNK */
    size_t nchunks, chunk_cap;
    size_t count;
};

/* murmur3's fmix64: xorshifts by 33 undo themselves, multipliers are odd. */
static uint64_t mix(uint64_t x)
{
    x ^= SALT;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t unmix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0x9cb4b2f8129337dbULL; /* inverse of 0xc4ceb9fe1a85ec53 mod 2^64 */
    x ^= x >> 33;
    x *= 0x4f74430c22a54005ULL; /* inverse of 0xff51afd7ed558ccd */
    x ^= x >> 33;
    return x ^ SALT;
}

static inline uint32_t home(uint32_t fp, uint32_t cap)
{
    return (uint32_t)(((uint64_t)fp * cap) >> 32);
}

/* How far slot value s sits at position pos from its home. */
static inline uint32_t disp(uint64_t s, uint32_t pos, uint32_t cap)
{
    uint32_t h = home((uint32_t)(s >> 32), cap);
    return pos >= h ? pos - h : pos + cap - h;
}

static inline uint16_t lo_of(const srv_rowmap_t *m, uint32_t row)
{
    return m->lo[row >> LO_SHIFT][row & (LO_CHUNK - 1)];
}

int srv_rowmap_new(srv_rowmap_t **out)
{
    srv_rowmap_t *m = calloc(1, sizeof *m);
    if (m == NULL || (m->sub = calloc(NSUB, sizeof *m->sub)) == NULL) {
        free(m);
        ps_error_set("row map: out of memory");
        return PS_ENOMEM;
    }
    *out = m;
    return 0;
}

void srv_rowmap_destroy(srv_rowmap_t **mp)
{
    srv_rowmap_t *m = mp != NULL ? *mp : NULL;
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < NSUB; i++) {
        free(m->sub[i].slot);
    }
    for (size_t c = 0; c < m->nchunks; c++) {
        free(m->lo[c]);
    }
    free(m->lo);
    free(m->sub);
    free(m);
    *mp = NULL;
}

uint32_t srv_rowmap_find(const srv_rowmap_t *m, uint64_t key)
{
    uint64_t h = mix(key);
    const sub_t *s = &m->sub[h >> (64 - NSUB_BITS)];
    if (s->count == 0) {
        return SRV_ROWMAP_NONE;
    }
    uint32_t fp = (uint32_t)(h >> 16), lo = (uint16_t)h, cap = s->cap;
    uint32_t pos = home(fp, cap);
    for (uint32_t dist = 0;; dist++) {
        uint64_t v = s->slot[pos];
        if (v == 0 || disp(v, pos, cap) < dist) {
            return SRV_ROWMAP_NONE; /* Robin Hood: key would sit before here */
        }
        uint32_t row = (uint32_t)v - 1;
        if ((uint32_t)(v >> 32) == fp && lo_of(m, row) == lo) {
            return row;
        }
        pos = pos + 1 == cap ? 0 : pos + 1;
    }
}

/* The first row whose slot matches h's fingerprint, or NONE when the key
 * is surely absent; reads the slot array only. */
static uint32_t probe(const srv_rowmap_t *m, uint64_t h)
{
    const sub_t *s = &m->sub[h >> (64 - NSUB_BITS)];
    if (s->count == 0) {
        return SRV_ROWMAP_NONE;
    }
    uint32_t fp = (uint32_t)(h >> 16), cap = s->cap;
    uint32_t pos = home(fp, cap);
    for (uint32_t dist = 0;; dist++) {
        uint64_t v = s->slot[pos];
        if (v == 0 || disp(v, pos, cap) < dist) {
            return SRV_ROWMAP_NONE;
        }
        if ((uint32_t)(v >> 32) == fp) {
            return (uint32_t)v - 1;
        }
        pos = pos + 1 == cap ? 0 : pos + 1;
    }
}

#define PIPE 16 /* keys apart, per stage of srv_rowmap_find_many */

void srv_rowmap_find_many(const srv_rowmap_t *m, const uint64_t *keys, size_t n, uint32_t *idx)
{
    /* Four stages PIPE keys apart, so the cache misses of many keys
     * overlap: prefetch the sub-table's directory entry; prefetch the home
     * slot; probe it (now cached) and prefetch the candidate's low bits;
     * check them (a fingerprint collision, rare, takes the full search). */
    for (size_t i = 0; i < n + 3 * PIPE; i++) {
        if (i < n) {
            __builtin_prefetch(&m->sub[mix(keys[i]) >> (64 - NSUB_BITS)]);
        }
        if (i >= PIPE && i - PIPE < n) {
            srv_rowmap_prefetch(m, keys[i - PIPE]);
        }
        if (i >= 2 * PIPE && i - 2 * PIPE < n) {
            size_t j = i - 2 * PIPE;
            idx[j] = probe(m, mix(keys[j]));
            if (idx[j] != SRV_ROWMAP_NONE) {
                __builtin_prefetch(&m->lo[idx[j] >> LO_SHIFT][idx[j] & (LO_CHUNK - 1)]);
            }
        }
        if (i >= 3 * PIPE) {
            size_t k = i - 3 * PIPE;
            if (idx[k] != SRV_ROWMAP_NONE && lo_of(m, idx[k]) != (uint16_t)mix(keys[k])) {
                idx[k] = srv_rowmap_find(m, keys[k]);
            }
        }
    }
}

void srv_rowmap_prefetch(const srv_rowmap_t *m, uint64_t key)
{
    uint64_t h = mix(key);
    const sub_t *s = &m->sub[h >> (64 - NSUB_BITS)];
    if (s->count != 0) {
        __builtin_prefetch(&s->slot[home((uint32_t)(h >> 16), s->cap)]);
    } else {
        __builtin_prefetch(s);
    }
}

/* Put slot value v into an array with room (Robin Hood: the entry
 * farther from home keeps the slot). */
static void place(uint64_t *slot, uint32_t cap, uint64_t v)
{
    uint32_t pos = home((uint32_t)(v >> 32), cap);
    for (uint32_t dist = 0;; dist++) {
        uint64_t s = slot[pos];
        if (s == 0) {
            slot[pos] = v;
            return;
        }
        uint32_t d = disp(s, pos, cap);
        if (d < dist) {
            slot[pos] = v;
            v = s;
            dist = d;
        }
        pos = pos + 1 == cap ? 0 : pos + 1;
    }
}

/* Sub-table i's place in the growth cycle: its bits reversed, so the
 * 65536 phases spread evenly over [0, 1). */
static double phase(uint32_t sub)
{
    uint32_t r = 0;
    for (int b = 0; b < NSUB_BITS; b++) {
        r |= ((sub >> b) & 1u) << (NSUB_BITS - 1 - b);
    }
    return (double)r / (double)NSUB;
}

/*
 * The capacity of sub-table `sub` (now cap slots, count keys) after k more
 * keys.  Capacities are the values ceil(1.25^(j + phase)) for whole j: each
 * sub-table grows by 1.25x, but at its own phase, so sub-tables that fill
 * at the same pace (keys are hashed evenly) do not all grow at once, and
 * the map's bytes per key stay near their average (8 / (0.93 * 0.892))
 * instead of swinging between 8/0.93 and 8/0.744 in lock-step.
 */
static uint32_t cap_after(uint32_t sub, uint32_t cap, uint64_t count, uint64_t k)
{
    if ((count + k) * LOAD_DEN <= (uint64_t)cap * LOAD_NUM) {
        return cap;
    }
    uint64_t need = ((count + k) * LOAD_DEN + LOAD_NUM - 1) / LOAD_NUM;
    double u = phase(sub), j = ceil(log((double)need) / log(1.25) - u);
    double c = ceil(pow(1.25, j + u));
    /* The smallest such value >= need (the ceil and the rounding of
     * log/pow can put j one off either way). */
    while (c < (double)need) {
        c = ceil(pow(1.25, ++j + u));
    }
    while (j > 0 && ceil(pow(1.25, j - 1 + u)) >= (double)need) {
        c = ceil(pow(1.25, --j + u));
    }
    return c > (double)UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}

static int sub_grow(sub_t *s, uint32_t cap)
{
    uint64_t *slot = calloc(cap, sizeof *slot);
    if (slot == NULL) {
        ps_error_set("row map: out of memory growing a sub-table to %u slots", cap);
        return PS_ENOMEM;
    }
    for (uint32_t i = 0; i < s->cap; i++) {
        if (s->slot[i] != 0) {
            place(slot, cap, s->slot[i]);
        }
    }
    free(s->slot);
    s->slot = slot;
    s->cap = cap;
    return 0;
}

/* Room for the low bits of row m->count. */
static int lo_reserve(srv_rowmap_t *m)
{
    size_t c = m->count >> LO_SHIFT;
    if (c < m->nchunks) {
        return 0;
    }
    if (m->nchunks == m->chunk_cap) {
        size_t cap = m->chunk_cap < 16 ? 16 : m->chunk_cap * 2;
        uint16_t **p = realloc(m->lo, cap * sizeof *p);
        if (p == NULL) {
            goto fail;
        }
        m->lo = p;
        m->chunk_cap = cap;
    }
    if ((m->lo[m->nchunks] = malloc(LO_CHUNK * sizeof(uint16_t))) == NULL) {
        goto fail;
    }
    m->nchunks++;
    return 0;
fail:
    ps_error_set("row map: out of memory at %zu rows", m->count);
    return PS_ENOMEM;
}

int srv_rowmap_insert(srv_rowmap_t *m, uint64_t key, uint32_t *idx)
{
    if (m->count >= SRV_ROWMAP_MAX_ROWS) {
        ps_error_set("row map: %zu rows, the most one table shard holds", m->count);
        return PS_ERANGE;
    }
    uint64_t h = mix(key);
    sub_t *s = &m->sub[h >> (64 - NSUB_BITS)];
    uint32_t cap = cap_after((uint32_t)(h >> (64 - NSUB_BITS)), s->cap, s->count, 1);
    int rv;
    if ((rv = lo_reserve(m)) != 0 || (cap != s->cap && (rv = sub_grow(s, cap)) != 0)) {
        return rv;
    }
    uint32_t row = (uint32_t)m->count;
    m->lo[row >> LO_SHIFT][row & (LO_CHUNK - 1)] = (uint16_t)h;
    place(s->slot, s->cap, (h >> 16) << 32 | ((uint64_t)row + 1));
    s->count++;
    m->count++;
    *idx = row;
    return 0;
}

size_t srv_rowmap_count(const srv_rowmap_t *m)
{
    return m->count;
}

/* Everything but the slot arrays, for `rows` rows. */
static size_t fixed_bytes(const srv_rowmap_t *m, size_t rows)
{
    size_t chunks = (rows + LO_CHUNK - 1) >> LO_SHIFT;
    size_t ptrs = m->chunk_cap;
    while (ptrs < chunks) {
        ptrs = ptrs < 16 ? 16 : ptrs * 2;
    }
    return sizeof *m + NSUB * sizeof(sub_t) + ptrs * sizeof(uint16_t *) +
           chunks * LO_CHUNK * sizeof(uint16_t);
}

size_t srv_rowmap_bytes(const srv_rowmap_t *m)
{
    size_t b = fixed_bytes(m, m->count);
    for (size_t i = 0; i < NSUB; i++) {
        b += (size_t)m->sub[i].cap * sizeof(uint64_t);
    }
    return b;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

size_t srv_rowmap_bytes_after(const srv_rowmap_t *m, const uint64_t *keys, size_t n)
{
    if (n == 0) {
        return srv_rowmap_bytes(m);
    }
    uint32_t *sub = malloc(n * sizeof *sub);
    if (sub == NULL) {
        return SIZE_MAX;
    }
    for (size_t i = 0; i < n; i++) {
        sub[i] = (uint32_t)(mix(keys[i]) >> (64 - NSUB_BITS));
    }
    qsort(sub, n, sizeof *sub, cmp_u32);
    size_t b = srv_rowmap_bytes(m) - fixed_bytes(m, m->count) + fixed_bytes(m, m->count + n);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && sub[j] == sub[i]) {
            j++;
        }
        const sub_t *s = &m->sub[sub[i]];
        b += ((size_t)cap_after(sub[i], s->cap, s->count, j - i) - s->cap) * sizeof(uint64_t);
        i = j;
    }
    free(sub);
    return b;
}

void srv_rowmap_keys(const srv_rowmap_t *m, uint64_t *keys, uint32_t *idx)
{
    size_t k = 0;
    for (uint64_t i = 0; i < NSUB; i++) {
        const sub_t *s = &m->sub[i];
        for (uint32_t p = 0; p < s->cap; p++) {
            uint64_t v = s->slot[p];
            if (v == 0) {
                continue;
            }
            uint32_t row = (uint32_t)v - 1;
            uint64_t h = i << (64 - NSUB_BITS) | (v >> 32) << 16 | lo_of(m, row);
            keys[k] = unmix(h);
            idx[k] = row;
            k++;
        }
    }
}
