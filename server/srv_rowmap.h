/*
 * srv_rowmap: a sparse table's map from uint64 keys to dense row indexes
 * 0, 1, 2, ... (in insertion order), in about 12 bytes per key.
 *
 * How: h = H(key) with H a bijection of uint64 (a salted murmur3 fmix64,
 * inverted for srv_rowmap_keys).  The top 16 bits of h pick one of 65536
 * sub-tables, so they are stored nowhere; a sub-table is an open-addressing
 * array (linear probing, Robin Hood order) of 8-byte slots holding the
 * next 32 bits of h (the fingerprint, which also gives the home slot) and
 * the row index; the last 16 bits of h are kept per row, in chunks of 4096
 * rows.  Probing compares fingerprints inside the slot array and reads a
 * row's 16 bits only on a fingerprint match.  A sub-table grows by 1.25x
 * when it passes 93% load, each at its own phase of the 1.25x cycle (so the
 * sub-tables, which fill at the same pace, do not all grow at once): the
 * map grows a small piece at a time, with no global rehash and no doubling
 * trough.  Slots cost about 8 / (0.93 * 0.892) = 9.6 bytes per key (load
 * between 0.74 and 0.93, averaged over the phases).  The sub-table
 * directory is a fixed 1 MiB.
 *
 * Contract: single-threaded; _new/_destroy; insert may fail with PS_ENOMEM
 * (the map unchanged) or PS_ERANGE (2^32 - 1 rows).
 */
#ifndef SRV_ROWMAP_H
#define SRV_ROWMAP_H

#include <stddef.h>
#include <stdint.h>

#define SRV_ROWMAP_NONE UINT32_MAX
/* The most rows a map holds (row indexes are u32, one value is NONE). */
#define SRV_ROWMAP_MAX_ROWS ((size_t)UINT32_MAX - 1)

typedef struct srv_rowmap srv_rowmap_t;

int srv_rowmap_new(srv_rowmap_t **out);
void srv_rowmap_destroy(srv_rowmap_t **m);

/* The row index of `key`, or SRV_ROWMAP_NONE. */
uint32_t srv_rowmap_find(const srv_rowmap_t *m, uint64_t key);

/* idx[i] = srv_rowmap_find(m, keys[i]) for i < n, with the memory reads
 * of many keys overlapped (the fast way to look up a batch). */
void srv_rowmap_find_many(const srv_rowmap_t *m, const uint64_t *keys, size_t n, uint32_t *idx);

/* Hint: the slots `key` will probe are about to be read. */
void srv_rowmap_prefetch(const srv_rowmap_t *m, uint64_t key);

/* Add `key` (which must be absent) as row srv_rowmap_count(m). */
int srv_rowmap_insert(srv_rowmap_t *m, uint64_t key, uint32_t *idx);

size_t srv_rowmap_count(const srv_rowmap_t *m);

/* Bytes the map holds now, and exactly what it would hold after inserting
 * the n distinct absent keys (SIZE_MAX when the scratch memory for the
 * estimate cannot be had). */
size_t srv_rowmap_bytes(const srv_rowmap_t *m);
size_t srv_rowmap_bytes_after(const srv_rowmap_t *m, const uint64_t *keys, size_t n);

/* Every (key, row index) pair into keys[count] and idx[count], in no
 * particular order. */
void srv_rowmap_keys(const srv_rowmap_t *m, uint64_t *keys, uint32_t *idx);

#endif
