/*
 * ps_plane: which data-plane transport each server-worker pair uses, and
 * what each side must bind or connect for it.
 *
 * Every rank names its --transport (auto, shm, ipc or tcp); the names are
 * gathered at start-up (ps_boot_init), so every rank decides every pair
 * alone and both ends of a pair decide the same way (one rule, written
 * once, here):
 *   - a pair on two hosts uses tcp; shm or ipc on either side is an error;
 *   - a pair on one host uses tcp when either side says tcp (shm or ipc on
 *     the other side is then an error), else ipc when either side says ipc
 *     (shm on the other side is then an error), else shm.
 * So with auto everywhere, ranks on one host move tensors through shared
 * memory (ps_shm; the small messages that say a tensor is there go over a
 * unix socket in a private directory, authenticated by the peer's process
 * credentials) and the others over tcp (CurveZMQ), in the same job.  A
 * pair decided shm falls back to ipc at run time when the server cannot
 * make its segment (the server says so, and the worker sees no segment).
 *
 * Plain C, no MPI or zmq: unit tests drive it.
 */
#ifndef PS_PLANE_H
#define PS_PLANE_H

#include <stddef.h>

/* Values are ps.h's PS_TRANSPORT_*: a new one goes at the end. */
typedef enum { PS_PLANE_AUTO = 0, PS_PLANE_IPC, PS_PLANE_TCP, PS_PLANE_SHM } ps_plane_t;

/* "auto", "shm", "ipc" or "tcp" into *out; PS_EINVAL naming `flag`
 * otherwise. */
int ps_plane_parse(const char *s, const char *flag, ps_plane_t *out);
/* "auto", "ipc", "tcp", "shm" ("?" for anything else). */
const char *ps_plane_name(ps_plane_t p);

/* One pair: what server s (wish `srv`) and worker w (wish `wkr`) use,
 * PS_PLANE_SHM, PS_PLANE_IPC or PS_PLANE_TCP into *out; PS_EINVAL with a message naming
 * both ranks and hosts when their wishes cannot both hold. */
typedef struct {
    int server, worker;
    const char *server_host, *worker_host;
    ps_plane_t srv, wkr;
} ps_plane_pair_t;
int ps_plane_decide(const ps_plane_pair_t *p, ps_plane_t *out);

/* What one server serves: how many workers reach it over each plane, and
 * how many of those run on its host. */
typedef struct {
    int shm;        /* workers over shared memory (all on this host) */
    int ipc;        /* workers over ipc (all on this host) */
    int tcp_local;  /* workers over tcp from this host */
    int tcp_remote; /* workers over tcp from other hosts */
} ps_plane_count_t;

/* The start-up line's text, e.g. "shm + ipc (peer credentials) to 2 local
 * workers, tcp+CurveZMQ to 1 remote"; `secure` 0 says "no authentication"
 * instead of the mechanisms. */
void ps_plane_describe(const ps_plane_count_t *c, int secure, char *out, size_t cap);

#endif
