/*
 * ps_keys: where a sparse table's row lives, and the tables a model
 * declares.
 *
 * A row of a table is keyed by a uint64 id and lives on server
 * ps_key_server(key, S): a pure function of the key (a 64-bit mix, then
 * modulo S), the one definition every worker and server uses, so no rank
 * needs a map to find a row and consecutive ids (hashed feature indices)
 * spread evenly.  The table, not the key, carries no say in it: every
 * table of a model is spread the same way.
 *
 * The declarations (ps_tables_t) travel from worker 0 to every server in
 * a TABLES message (docs/protocol.md), encoded field by field:
 *
 *     u32 count, then per table: u8 name length, name, u32 dim,
 *     u8 init kind (0 zeros, 1 uniform), u32 bound (float32 bits), u64 seed
 *
 * ps_tables_decode checks everything (lengths, names, dims, kinds, a
 * finite bound >= 0, bound and seed 0 for zeros, unique names) before it
 * returns; a declaration has one encoding.
 */
#ifndef PS_KEYS_H
#define PS_KEYS_H

#include "ps_layout.h"

#include <stddef.h>
#include <stdint.h>

#define PS_TABLES_MAX 64       /* tables per model */
#define PS_TABLE_MAX_DIM 65536 /* floats per row */
#define PS_TABLE_INIT_ZEROS 0
#define PS_TABLE_INIT_UNIFORM 1 /* U(-bound, bound) from (seed, table, key) */

typedef struct {
    char name[PS_MAX_NAME + 1];
    uint32_t dim;
    uint8_t init; /* PS_TABLE_INIT_* */
    float bound;
    uint64_t seed;
} ps_table_decl_t;

typedef struct {
    int n;
    ps_table_decl_t t[PS_TABLES_MAX];
} ps_tables_t;

/* The server (0 .. nservers-1) that holds `key`'s rows. */
uint32_t ps_key_server(uint64_t key, uint32_t nservers);
/* 1 when keys[0..n) are strictly ascending and all live on `server`. */
int ps_keys_check(const uint64_t *keys, size_t n, uint32_t server, uint32_t nservers);

/* Append a table; PS_EINVAL (detail set, nothing changed) for a bad name,
 * a duplicate name, dim outside 1..PS_TABLE_MAX_DIM, an unknown init or a
 * bound that is not finite and >= 0, PS_ENOMEM past PS_TABLES_MAX. */
int ps_tables_add(ps_tables_t *ts, const char *name, int64_t dim, int init, float bound,
                  uint64_t seed);
/* The index of table `name`, or -1. */
int ps_tables_find(const ps_tables_t *ts, const char *name);
/* Bytes ps_tables_encode writes. */
size_t ps_tables_size(const ps_tables_t *ts);
void ps_tables_encode(const ps_tables_t *ts, uint8_t *buf);
/* PS_EFORMAT with a detail for anything malformed; *ts is then empty. */
int ps_tables_decode(ps_tables_t *ts, const uint8_t *buf, size_t len);
/* A hash of the declarations (FNV-1a over the encoding); 0 tables hash to
 * a fixed value. */
uint64_t ps_tables_hash(const ps_tables_t *ts);

#endif
