/*
 * wkr_client: the worker side of the data plane, inside libpsclient.
 * Programs (ps-worker included) use ps.h; this module is what ps_api.c
 * builds the public calls on, and it is not installed.
 *
 * The client owns `streams` DEALERs per server (through ps_transport) and
 * knows the layout and the chunk map.  A server's chunks take turns over
 * its streams (the k-th chunk of server s goes on stream k % streams), and
 * a chunk's push, pull and reply share a stream, so they keep their order;
 * TABLES, REGISTER, INIT and the other control messages use stream 0.
 *
 * Arrays.  Each tensor's weights and gradient live wherever the caller
 * says (wkr_client_set_arrays; see wkr_arrays.h): the client reads the
 * gradients and writes the weights there, and owns neither.
 *
 * A step.  wkr_client_begin_step forgets the last step's chunk states.
 * wkr_client_push_tensor marks a tensor's gradient final; every chunk
 * whose tensors are all final is then pushed (zero-copy from the arrays,
 * or from a staging buffer) with a PULL for the weights the next step may
 * start from right behind it, so the reply can leave the server as soon
 * as the consistency mode allows: sync wants version step + 1, ssp step + 1
 * - staleness, async whatever is current.  Each push carries the version
 * of the weights it was computed on, from which the server measures
 * staleness.  The caller must not write a pushed gradient until
 * wkr_client_sends_done() (or after wkr_client_wait_sends()).
 *
 * Replies are written into a tensor's weights only once the caller wants
 * that tensor (wkr_client_want): a reply that arrives earlier is held
 * (zero-copy, in zmq's buffer) until then, so weights never change under
 * a caller who is still reading them.  wkr_client_finish_step waits for
 * every reply requested in the step, writes those wanted, drops the rest
 * and waits for the sends: after it the server has applied the step for
 * every pushed chunk, so the next step's pushes are in its window.
 *
 * With `compress`, pushes travel as IEEE fp16 or bfloat16 (half the
 * bytes; the servers widen them back to float32 before the update),
 * except a chunk holding a finite value the format would round to Inf
 * (fp16: |g| >= 65520), which travels as float32 (the PUSH without the
 * 16-bit flag): a finite gradient always arrives finite.
 * Every reply is checked (sender, chunk, offset, count, version) before it
 * is used; a server's ERROR ends the call with its text as the detail.
 * Calls block for at most the timeout given at creation, then fail with a
 * message naming the silent server and its host.  Not thread-safe.
 */
#ifndef WKR_CLIENT_H
#define WKR_CLIENT_H

#include "ps_chunk.h"
#include "ps_jobinfo.h"
#include "ps_keys.h"
#include "ps_layout.h"
#include "ps_transport.h"
#include "ps_wire.h"

#include <stddef.h>
#include <stdint.h>

typedef struct wkr_client wkr_client_t;

typedef struct {
    int rank; /* this worker's rank among the workers */
    int nservers;
    char *const *endpoints;    /* [nservers] */
    const char *const *hosts;  /* [nservers], for messages; may be NULL */
    const ps_layout_t *layout; /* borrowed: must outlive the client */
    size_t chunk_elems;
    int streams; /* connections per server, 1..PS_TP_MAX_STREAMS (0: 1) */
    int io_threads;
    int timeout_ms;
    ps_mode_t mode;
    uint64_t staleness;
    const ps_tp_keypair_t *keys;   /* NULL: plain text */
    const char (*server_keys)[41]; /* [nservers]; "" for an --insecure server */
    int compress;                  /* PS_COMPRESS_* of ps.h (--compress) */
    int nworkers;                  /* workers in the job (the shm geometry) */
    const ps_tables_t *tables;     /* worker 0: the sparse tables wkr_client_register
                                      declares (borrowed); NULL: none */
} wkr_client_cfg_t;

typedef struct {
    uint64_t bytes_pushed, bytes_pulled;
    uint64_t wide_pushes; /* --compress: chunks pushed as float32 (too large for 16 bits) */
    double wait_s;        /* time blocked waiting for pull replies */
} wkr_client_stats_t;

int wkr_client_new(wkr_client_t **out, const wkr_client_cfg_t *cfg);
void wkr_client_destroy(wkr_client_t **c);
/* Tensor t's weight and gradient arrays (layout->t[t].numel floats each,
 * the caller's).  Every tensor needs both before the first register, push
 * or pull; change them only between steps. */
void wkr_client_set_arrays(wkr_client_t *c, int t, float *weights, const float *grads);
/* Worker 0 only: the whole registration of docs/protocol.md.  Send every
 * server the table declarations (TABLES, empty without cfg.tables: a
 * server's setup waits for it), the layout and the initial values of every
 * chunk (read from the weight arrays), then wait for every server's ACK. */
int wkr_client_register(wkr_client_t *c);
/* Start step `step`: forget which chunks were pushed, pulled or wanted.
 * The last step must be finished (wkr_client_finish_step or pull). */
void wkr_client_begin_step(wkr_client_t *c, uint64_t step);
/* Flag every push of the current step PS_FLAG_SKIP (reset by begin_step). */
void wkr_client_set_skip(wkr_client_t *c, int skip);
/* Tensor t's gradient is final for this step: push every chunk that now
 * has all its tensors final, each carrying `samples`, and request its
 * pull.  A tensor marked twice is pushed once. */
int wkr_client_push_tensor(wkr_client_t *c, int t, uint32_t samples);
/* 1 when every chunk of tensor t has been pushed this step; else 0 and,
 * when `waiting` is not NULL, a tensor sharing one of those chunks whose
 * gradient is not final yet. */
int wkr_client_tensor_pushed(const wkr_client_t *c, int t, int *waiting);
/* The caller wants tensor t's weights of version `step` may start from
 * (see above): write the replies already here into its weights, request
 * its chunks that are not requested yet; later replies are written as
 * they arrive. */
int wkr_client_want(wkr_client_t *c, int t, uint64_t step);
/* 1 when every chunk of a wanted tensor t has been written into it. */
int wkr_client_tensor_pulled(const wkr_client_t *c, int t);
/* How many tensors are pulled so far in this step. */
int wkr_client_tensors_pulled(const wkr_client_t *c);
/* Receive replies until tensor t is pulled (it must be wanted). */
int wkr_client_wait_tensor(wkr_client_t *c, int t);
/* Take every message already queued, without blocking. */
int wkr_client_poll(wkr_client_t *c);
/* Want every tensor at the version `step` may start from and wait until
 * all are written (the initial weights: step 0). */
int wkr_client_pull(wkr_client_t *c, uint64_t step);
/* End the step: wait for every reply requested, write those wanted, drop
 * the others, and wait for the sends. */
int wkr_client_finish_step(wkr_client_t *c);
/* Ask every server for its counters and combine them (maximum of the
 * maxima and versions, sums of the rest).  Not inside a step. */
int wkr_client_server_stats(wkr_client_t *c, ps_wire_stats_t *out);
/* Wait until the transport no longer reads any pushed gradient. */
int wkr_client_wait_sends(wkr_client_t *c);
/* 1 when no push is being read by the transport any more. */
int wkr_client_sends_done(wkr_client_t *c);
/* Tell every server this worker is done. */
int wkr_client_shutdown(wkr_client_t *c);
void wkr_client_stats(const wkr_client_t *c, wkr_client_stats_t *st);
/* Map the shared-memory segment of every server whose paths[s] is not
 * NULL or "" (the servers this worker reaches over shm), once the servers
 * have sized them (after the start-up step "register").  A server that
 * has none for us (no room) is reached over ipc, said once.  From then on
 * pushes to such a server put the gradient into this worker's slot for
 * the step (waiting, at most the timeout, until the server has let go of
 * what the slot held: PS_ETIMEDOUT naming the chunk) and send only the
 * header (PS_FLAG_SHM); its replies come the same way.  PS_EPROTO/PS_EIO
 * for a segment that is not ours or not the expected shape. */
int wkr_client_attach_shm(wkr_client_t *c, const char *const *paths);
/* How many servers this worker reaches over shared memory. */
int wkr_client_shm_servers(const wkr_client_t *c);

/* Sparse tables (worker/ps_rows.c) share the client's sockets: the
 * transport, to send row messages on, and a handler for every reply that
 * is not a PULL_REPLY (ROWS_REPLY), called with the message while the
 * client receives (it may move the message; the client releases what is
 * left).  wkr_client_take receives and handles one message (timeout_ms as
 * ps_tp_recv; PS_EAGAIN at 0 when none is queued). */
typedef void (*wkr_client_other_fn)(void *arg, ps_tp_msg_t *m);
ps_tp_t *wkr_client_tp(wkr_client_t *c);
void wkr_client_set_other(wkr_client_t *c, wkr_client_other_fn fn, void *arg);
int wkr_client_take(wkr_client_t *c, const char *what, int timeout_ms);

#endif
