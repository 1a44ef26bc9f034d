#include "ps_keys.h"

#include "ps_bytes.h"
#include "ps_err.h"

#include <math.h>
#include <string.h>

/* splitmix64's finaliser: every input bit moves every output bit, so ids
 * that differ in a few low bits (hashed features, f * 2^32 + h) land on
 * servers evenly. */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint32_t ps_key_server(uint64_t key, uint32_t nservers)
{
    return nservers <= 1 ? 0 : (uint32_t)(mix(key) % nservers);
}

int ps_keys_check(const uint64_t *keys, size_t n, uint32_t server, uint32_t nservers)
{
    for (size_t i = 0; i < n; i++) {
        if ((i > 0 && keys[i] <= keys[i - 1]) || ps_key_server(keys[i], nservers) != server) {
            return 0;
        }
    }
    return 1;
}

static int name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > PS_MAX_NAME) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
            return 0;
        }
    }
    return 1;
}

int ps_tables_add(ps_tables_t *ts, const char *name, int64_t dim, int init, float bound,
                  uint64_t seed)
{
    if (!name_ok(name)) {
        ps_error_set("table name must be 1..%d printable bytes", PS_MAX_NAME);
        return PS_EINVAL;
    }
    if (ps_tables_find(ts, name) >= 0) {
        ps_error_set("table '%s' declared twice", name);
        return PS_EINVAL;
    }
    if (dim < 1 || dim > PS_TABLE_MAX_DIM) {
        ps_error_set("table '%s': dim %lld outside 1..%d", name, (long long)dim, PS_TABLE_MAX_DIM);
        return PS_EINVAL;
    }
    if ((init != PS_TABLE_INIT_ZEROS && init != PS_TABLE_INIT_UNIFORM) || !isfinite(bound) ||
        bound < 0) {
        ps_error_set("table '%s': init must be zeros or uniform with a finite bound >= 0", name);
        return PS_EINVAL;
    }
    if (ts->n >= PS_TABLES_MAX) {
        ps_error_set("table '%s': more than %d tables", name, PS_TABLES_MAX);
        return PS_ENOMEM;
    }
    ps_table_decl_t *t = &ts->t[ts->n++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, strlen(name));
    t->dim = (uint32_t)dim;
    t->init = (uint8_t)init;
    t->bound = init == PS_TABLE_INIT_UNIFORM ? bound : 0.0f;
    t->seed = init == PS_TABLE_INIT_UNIFORM ? seed : 0;
    return 0;
}

int ps_tables_find(const ps_tables_t *ts, const char *name)
{
    for (int i = 0; i < ts->n; i++) {
        if (strcmp(ts->t[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* u8 name length + name + u32 dim + u8 init + u32 bound + u64 seed */
#define FIXED_BYTES (1 + 4 + 1 + 4 + 8)

size_t ps_tables_size(const ps_tables_t *ts)
{
    size_t n = 4;
    for (int i = 0; i < ts->n; i++) {
        n += FIXED_BYTES + strlen(ts->t[i].name);
    }
    return n;
}

void ps_tables_encode(const ps_tables_t *ts, uint8_t *buf)
{
    ps_put_u32(buf, (uint32_t)ts->n);
    buf += 4;
    for (int i = 0; i < ts->n; i++) {
        const ps_table_decl_t *t = &ts->t[i];
        size_t len = strlen(t->name);
        uint32_t bits;
        memcpy(&bits, &t->bound, sizeof bits);
        *buf++ = (uint8_t)len;
        memcpy(buf, t->name, len);
        buf += len;
        ps_put_u32(buf, t->dim);
        buf[4] = t->init;
        ps_put_u32(buf + 5, bits);
        ps_put_u64(buf + 9, t->seed);
        buf += 17;
    }
}

/* One table at *pos; advances it.  The name is copied out before it is
 * checked, so a name holding a NUL is refused rather than cut short. */
static int decode_one(ps_tables_t *ts, const uint8_t *buf, size_t len, size_t *pos)
{
    char name[PS_MAX_NAME + 1];
    size_t p = *pos;
    if (p >= len) {
        ps_error_set("tables: truncated");
        return PS_EFORMAT;
    }
    size_t nlen = buf[p++];
    if (nlen == 0 || nlen > PS_MAX_NAME || len - p < nlen + 17) {
        ps_error_set("tables: bad name length %zu or truncated", nlen);
        return PS_EFORMAT;
    }
    memcpy(name, buf + p, nlen);
    name[nlen] = '\0';
    if (strlen(name) != nlen) {
        ps_error_set("tables: a name holds a NUL byte");
        return PS_EFORMAT;
    }
    p += nlen;
    uint32_t bits = ps_get_u32(buf + p + 5);
    uint64_t seed = ps_get_u64(buf + p + 9);
    float bound;
    memcpy(&bound, &bits, sizeof bound);
    if (buf[p + 4] == PS_TABLE_INIT_ZEROS && (bits != 0 || seed != 0)) {
        ps_error_set("tables: '%s': zeros init with a bound or seed", name);
        return PS_EFORMAT; /* one encoding per declaration */
    }
    int rv =
        ps_tables_add(ts, name, ps_get_u32(buf + p), buf[p + 4], bound, ps_get_u64(buf + p + 9));
    *pos = p + 17;
    return rv == 0 ? 0 : PS_EFORMAT;
}

int ps_tables_decode(ps_tables_t *ts, const uint8_t *buf, size_t len)
{
    ts->n = 0;
    if (len < 4) {
        ps_error_set("tables: %zu bytes, need at least 4", len);
        return PS_EFORMAT;
    }
    uint32_t n = ps_get_u32(buf);
    if (n > PS_TABLES_MAX) {
        ps_error_set("tables: %u tables, at most %d", n, PS_TABLES_MAX);
        return PS_EFORMAT;
    }
    size_t pos = 4;
    for (uint32_t i = 0; i < n; i++) {
        int rv = decode_one(ts, buf, len, &pos);
        if (rv != 0) {
            ts->n = 0;
            return rv;
        }
    }
    if (pos != len) {
        ps_error_set("tables: %zu bytes after the last table", len - pos);
        ts->n = 0;
        return PS_EFORMAT;
    }
    return 0;
}

uint64_t ps_tables_hash(const ps_tables_t *ts)
{
    uint8_t buf[4 + PS_TABLES_MAX * (FIXED_BYTES + PS_MAX_NAME)];
    size_t n = ps_tables_size(ts);
    uint64_t h = 14695981039346656037ULL;
    ps_tables_encode(ts, buf);
    for (size_t i = 0; i < n; i++) {
        h = (h ^ buf[i]) * 1099511628211ULL;
    }
    return h;
}
