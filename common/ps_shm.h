/*
 * ps_shm: a server's shared-memory segment, the payload half of the shm
 * data plane (the headers still travel as zmq messages over the ipc
 * socket; see docs/architecture.md, "Shared memory").
 *
 * One segment per server, created by the server at start-up in
 * $PS_SHM_DIR (default /dev/shm, a tmpfs) under an unguessable name
 * ("ps-shm-" and 24 random hex digits), O_CREAT|O_EXCL|O_NOFOLLOW, mode
 * 0600; its path travels in the server's advertised endpoint (the MPI
 * exchange, ps_boot).  Once the layout is known the server sizes it with
 * posix_fallocate (ftruncate alone would let a full tmpfs SIGBUS at the
 * first touch) and lays out one area per worker that uses shm:
 *
 *   flags  u32 [nlocal x nslots]   1 while a push slot is the server's
 *   push   nslots x local floats   the worker's gradient, slot = step % nslots
 *   reply  local floats            the weights of the worker's last pull
 *
 * where a chunk sits at its offset among the server's own chunks
 * (ascending id).  A worker maps the segment (checking owner, mode and
 * geometry) and the server unlinks it once every such worker has mapped
 * it; the path is registered with ps_cleanup and a janitor process
 * removes it if the server is killed outright, so no segment outlives
 * the job.
 *
 * Ownership of the push slots: the worker waits until a slot's flag is 0,
 * writes the gradient, sets the flag and sends the PUSH header; the server
 * clears the flag when the store has consumed the gradient (or dropped
 * the message).  The reply area of a chunk is written by the server only
 * in answer to that worker's PULL, and a worker has at most one PULL of a
 * chunk outstanding and reads the reply before it asks again, so no read
 * is ever torn.  Plain C, no zmq or MPI: unit tests drive it.
 */
#ifndef PS_SHM_H
#define PS_SHM_H

#include "ps_chunk.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ps_shm ps_shm_t;

#define PS_SHM_PATH 256 /* room for a segment's path */
#define PS_SHM_PREFIX "shm://"

/* Server, before the layout is known: an empty segment file in
 * $PS_SHM_DIR (else /dev/shm); its path into `path` (cap bytes).  PS_EIO
 * with a message when the folder does not take it.  The file is
 * registered with ps_cleanup and watched by a janitor. */
int ps_shm_create(ps_shm_t **out, char *path, size_t cap);
/* Server, once the layout is known: the geometry (chunk map, this server,
 * slots per chunk) and an area for each worker w with use[w] != 0
 * (nworkers of them).  PS_ENOSPC with a message naming the bytes needed
 * when the folder cannot hold it (the caller falls back to ipc); the
 * segment is then left empty, which workers read as "no shm". */
int ps_shm_size(ps_shm_t *s, const ps_chunkmap_t *map, int server, int nslots, int nworkers,
                const uint8_t *use);
/* Worker w: map server `server`'s segment at `path` and check that it is
 * ours (owner, mode 0600, a regular file) and that its geometry is the one
 * this worker computes.  PS_ENOENT when the server left it empty or gave
 * this worker no area (then use ipc); PS_EPROTO/PS_EIO with a message for
 * anything else.  Call it once the server has sized the segment (after
 * the start-up step "register"). */
int ps_shm_attach(ps_shm_t **out, const char *path, const ps_chunkmap_t *map, int server,
                  int nslots, int nworkers, int worker);
/* The segment path a server advertised (the "shm://PATH" lane of its
 * endpoint) into out; PS_ENOENT when it has none (no segment: ipc). */
int ps_shm_endpoint_path(const char *advertised, char *out, size_t cap);
/* Server: remove the segment's name (the mappings stay); idempotent. */
void ps_shm_unlink(ps_shm_t *s);
/* Unmaps, unlinks (server), stops the janitor, frees; safe on NULL and
 * twice (NULLs *sp). */
void ps_shm_destroy(ps_shm_t **sp);

/* The bytes of the segment (0 before ps_shm_size / when empty). */
size_t ps_shm_bytes(const ps_shm_t *s);
/* 1 when worker w has an area (a sized segment that gave it one). */
int ps_shm_has(const ps_shm_t *s, int w);
int ps_shm_nslots(const ps_shm_t *s);
/* Worker w's push slot `slot` of chunk `id` (count x 4 bytes), its reply
 * area of chunk `id`; NULL when w has no area or the chunk is not this
 * server's or the slot is out of range. */
void *ps_shm_push_at(ps_shm_t *s, int w, uint32_t id, int slot);
float *ps_shm_reply_at(ps_shm_t *s, int w, uint32_t id);
/* Worker: wait until the slot is free (the server is done with what was
 * pushed in it last), at most timeout_ms (< 0: for ever); then the caller
 * writes it and calls ps_shm_slot_fill.  PS_ETIMEDOUT with a message
 * naming the server when it never frees it, PS_EINTR on a stop
 * (ps_signal). */
int ps_shm_slot_wait(ps_shm_t *s, int w, uint32_t id, int slot, int timeout_ms);
void ps_shm_slot_fill(ps_shm_t *s, int w, uint32_t id, int slot);
/* Server: the slot's gradient is consumed; the worker may write it. */
void ps_shm_slot_free(ps_shm_t *s, int w, uint32_t id, int slot);

#endif
