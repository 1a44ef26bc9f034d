/*
 * wkr_client: the worker side of the data plane, the one API a model needs
 * to talk to the servers.
 *
 * The client owns `streams` DEALERs per server (through ps_transport) and
 * knows the layout and the chunk map.  A server's chunks take turns over
 * its streams (the k-th chunk of server s goes on stream k % streams), and
 * a chunk's push, pull and reply share a stream, so they keep their order;
 * REGISTER, INIT and the other control messages use stream 0.
 *
 * Gradients are pushed chunk by chunk straight from the caller's buffer
 * (zero-copy): after a push the caller must not write that buffer until
 * wkr_client_wait_sends() returns.  A PULL for the weights a step may
 * start from is requested right behind each chunk's push, so the reply can
 * leave the server as soon as the consistency mode allows: sync wants
 * version step + 1, ssp step + 1 - staleness, async whatever is current.
 * Each push carries the version of the weights it was computed on, from
 * which the server measures staleness.
 *
 * With `compress`, pushes travel as IEEE fp16 or bfloat16 (half the
 * bytes; the servers widen them back to float32 before the update).
 * Every reply is checked (sender, chunk, offset, count, version) before it
 * is copied; a server's ERROR ends the call with its text as the detail.
 * Calls block for at most the timeout given at creation, then fail with a
 * message naming the silent server and its host.  Not thread-safe.
 */
#ifndef WKR_CLIENT_H
#define WKR_CLIENT_H

#include "ps_chunk.h"
#include "ps_jobinfo.h"
#include "ps_layout.h"
#include "ps_transport.h"
#include "ps_wire.h"

#include <stddef.h>
#include <stdint.h>

typedef struct wkr_client wkr_client_t;

typedef enum { WKR_COMPRESS_NONE, WKR_COMPRESS_F16, WKR_COMPRESS_BF16 } wkr_compress_t;

typedef struct {
    int rank;                    /* this worker's rank among the workers */
    int nservers;
    char *const *endpoints;      /* [nservers] */
    const char *const *hosts;    /* [nservers], for messages; may be NULL */
    const ps_layout_t *layout;
    size_t chunk_elems;
    int streams;                 /* connections per server, 1..PS_TP_MAX_STREAMS (0: 1) */
    int io_threads;
    int timeout_ms;
    ps_mode_t mode;
    uint64_t staleness;
    const ps_tp_keypair_t *keys;        /* NULL: plain text */
    const char (*server_keys)[41];      /* [nservers]; "" for an --insecure server */
    wkr_compress_t compress;            /* pushes as 16-bit floats (--compress) */
} wkr_client_cfg_t;

typedef struct {
    uint64_t bytes_pushed, bytes_pulled;
    double wait_s; /* time blocked waiting for pull replies */
} wkr_client_stats_t;

int wkr_client_new(wkr_client_t **out, const wkr_client_cfg_t *cfg);
void wkr_client_destroy(wkr_client_t **c);
/* Worker 0 only: send the layout and the initial values of every chunk,
 * wait for every server's ACK. */
int wkr_client_register(wkr_client_t *c, const float *init);
/* Start step `step`: forget which chunks were pushed or pulled. */
void wkr_client_begin_step(wkr_client_t *c, uint64_t step);
/* Flag every push of the current step PS_FLAG_SKIP (reset by begin_step). */
void wkr_client_set_skip(wkr_client_t *c, int skip);
/* Push, for the current step, every not yet pushed chunk that lies wholly
 * in grads[first .. total), each carrying `samples`, and request its pull
 * at version step + 1. */
int wkr_client_push_from(wkr_client_t *c, const float *grads, size_t first, uint32_t samples);
/* Request every chunk that is not requested yet at the version step
 * `step` may start from (see above; the initial weights: step 0), wait for
 * all replies and copy them into params[0 .. total). */
int wkr_client_pull(wkr_client_t *c, uint64_t step, float *params);
/* Ask every server for its counters and combine them (maximum of the
 * maxima and versions, sums of the rest). */
int wkr_client_server_stats(wkr_client_t *c, ps_wire_stats_t *out);
/* Wait until the transport no longer reads the pushed gradient buffer. */
int wkr_client_wait_sends(wkr_client_t *c);
/* Tell every server this worker is done. */
int wkr_client_shutdown(wkr_client_t *c);
void wkr_client_stats(const wkr_client_t *c, wkr_client_stats_t *st);

#endif
