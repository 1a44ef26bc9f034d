/*
 * ps_chunk: the chunk map, a pure function of (total elements, chunk size,
 * number of servers).  The flat parameter space is cut into chunks of
 * `chunk_elems` elements (the last one shorter) without regard to tensor
 * boundaries, so small tensors share chunks and large ones span several;
 * chunk i lives on server i % nservers, which gives every server about 1/S
 * of the bytes.  Every rank computes the same map on its own.
 */
#ifndef PS_CHUNK_H
#define PS_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#define PS_CHUNK_MIN_ELEMS 1024
#define PS_CHUNK_MAX_ELEMS (64u << 20) /* 256 MiB of float32 */
#define PS_CHUNK_AUTO_MIN (16u << 10)  /* 64 KiB of float32 */
#define PS_CHUNK_AUTO_MAX (1u << 20)   /* 4 MiB of float32 */

typedef struct {
    uint32_t id;
    int server;
    size_t offset;
    size_t count;
} ps_chunk_t;

typedef struct {
    size_t total;
    size_t chunk_elems;
    int nservers;
    size_t n;      /* number of chunks */
    ps_chunk_t *c; /* n entries, owned */
} ps_chunkmap_t;

/* The automatic chunk size (chunk_elems 0): one chunk per server, rounded
 * up to a multiple of PS_CHUNK_MIN_ELEMS and kept within 64 KiB..4 MiB.
 * Measured on Fashion-MNIST's MLP: every extra message costs more than the
 * overlap of smaller chunks wins back on one host (docs/performance.md). */
size_t ps_chunk_auto(size_t total, int nservers);
/* chunk_elems 0 means ps_chunk_auto.  PS_EINVAL (detail set) for zero
 * totals, servers < 1, or a chunk size outside [PS_CHUNK_MIN_ELEMS,
 * PS_CHUNK_MAX_ELEMS]. */
int ps_chunkmap_init(ps_chunkmap_t *m, size_t total, size_t chunk_elems, int nservers);
void ps_chunkmap_fini(ps_chunkmap_t *m);
/* Number of chunks and elements that server `s` holds. */
size_t ps_chunkmap_count_on(const ps_chunkmap_t *m, int s, size_t *elems);

#endif
