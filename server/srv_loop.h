/*
 * srv_loop: the server's single-threaded event loop over its ROUTER socket.
 *
 * Two phases.  Setup: wait for worker 0's REGISTER (the layout) and the
 * INIT of every local chunk, then ACK (when resuming, the chunks come from
 * the checkpoint instead and the INIT values are ignored); a model the
 * server cannot hold (no memory, not the --resume checkpoint's) is
 * answered with ERROR and ends the setup with that reason.  In sync mode
 * with checkpoints on, the state is written every `ckpt_every` steps, before
 * the pull replies that let the workers go on; a checkpoint that fails twice
 * ends srv_loop_train with its error.  Training: PUSH messages go to the
 * store (srv_store, which applies them per the consistency mode), PULL
 * requests are answered as soon as the chunk reaches the wanted version
 * (zero-copy from the weights; until then held, one per worker connection
 * (worker, stream), on the stream it came on), STATS is answered with the server's
 * counters, SHUTDOWN marks a worker finished; the phase ends when every
 * worker has shut down.
 *
 * Every message is checked against the layout and the chunk map before it
 * touches memory; a bad one is dropped, counted by reason and logged at a
 * limited rate with the peer's rank.  No message from the network can
 * change a weight except a well-formed PUSH for the chunk's current step
 * from a worker that has not pushed it yet.  The sender is the worker
 * whose key the connection proved (CurveZMQ): a message whose routing id
 * or header names another rank, or that comes on a stream its worker did
 * not open, is refused as "sender".  Without authentication (--insecure)
 * the routing id is trusted.
 *
 * Every pushed gradient is checked for NaN/Inf before it is held: with
 * --on-nonfinite abort the loop returns PS_ERANGE naming the worker, tensor
 * and step; with skip the chunk's step is dropped for every worker (as when
 * the worker flags the push with PS_FLAG_SKIP), so the model never holds a
 * non-finite value that came from a gradient.  Dropping the step on every
 * chunk of every server is the worker's doing: it sees the whole gradient
 * and flags every push of a bad step; a server sees one chunk.  libpsclient
 * never sends an unflagged non-finite push under skip (its --compress keeps
 * finite values finite), so the check here is the backstop for one that did.
 *
 * When nothing arrives for `timeout_ms` while workers are expected, the
 * loop names the missing workers and returns PS_ETIMEDOUT.  No wait is
 * unbounded: an update whose chunk is still read by pull replies after
 * `timeout_ms` ends the loop with PS_ETIMEDOUT naming the chunk.  A pull
 * reply that cannot be sent (its peer gone) is counted in replies_lost and
 * holds nothing back.
 */
#ifndef SRV_LOOP_H
#define SRV_LOOP_H

#include "ps_transport.h"
#include "srv_ckpt.h"
#include "srv_sparse.h"
#include "srv_store.h"

#include <stdint.h>

typedef enum {
    SRV_REJ_MALFORMED, /* failed header/frame decoding */
    SRV_REJ_SENDER,    /* sender rank unknown, not matching its routing id or its
                          key's rank, or on a stream the worker did not open */
    SRV_REJ_PHASE,     /* message type not valid now */
    SRV_REJ_CHUNK,     /* chunk not on this server, or offset/count mismatch */
    SRV_REJ_STEP,      /* push for a step other than the chunk's current one */
    SRV_REJ_DUPLICATE, /* second push from a worker for one step */
    SRV_REJ_LAYOUT,    /* malformed or conflicting REGISTER */
    SRV_REJ_NREASONS
} srv_reject_t;

/* What the loop is given; copied by srv_loop_init.  Pointers are borrowed
 * and must outlive the loop (resume: until srv_loop_setup returns). */
typedef struct {
    ps_tp_t *tp;
    int server, nservers, nworkers;
    size_t chunk_elems;
    srv_optim_cfg_t opt;
    ps_mode_t mode;
    uint64_t staleness;
    srv_lr_fn lr_of; /* the schedule; NULL = constant opt.lr */
    void *lr_arg;
    int nonfinite_skip;             /* --on-nonfinite skip (else abort) */
    const char *ckpt_dir;           /* NULL: no checkpoints */
    uint64_t ckpt_every;            /* steps */
    const char *settings;           /* recorded in checkpoints, checked on resume */
    const srv_ckpt_state_t *resume; /* NULL: start from worker 0's INIT */
    int timeout_ms;
    const char *const *worker_hosts; /* [nworkers], for timeout messages */
    /* [nworkers] the connections per server each worker opens (its
     * --streams); a message on a stream beyond is refused.  NULL: only
     * PS_TP_MAX_STREAMS bounds them. */
    const int *worker_streams;
    srv_sparse_mode_t sparse_update; /* --sparse-update */
    size_t table_max_bytes;          /* --max-table-mib, this server's; 0: no bound */
} srv_loop_cfg_t;

/* A PULL waiting for its chunk to reach version `want`. */
typedef struct {
    uint64_t want;
    uint32_t request;
    int worker, stream;
} srv_held_pull_t;

typedef struct {
    srv_held_pull_t *v;
    size_t n, cap;
} srv_pulls_t;

typedef struct {
    srv_loop_cfg_t cfg;
    srv_store_t store;
    srv_sparse_t sparse; /* the sparse tables (TABLES, ROWS_PUSH, ROWS_PULL) */
    int registered;
    uint8_t *done;          /* [nworkers] SHUTDOWN received */
    uint64_t *worker_step;  /* [nworkers] highest step pushed + 1 */
    uint32_t *streams_seen; /* [nworkers] bit j: a message came on stream j */
    int ndone;
    uint64_t rejected[SRV_REJ_NREASONS];
    uint64_t pushes, pulls;
    uint64_t replies_lost; /* pull replies that could not be sent (peer gone) */
    srv_pulls_t *held;     /* [store.nlocal] held pulls, once registered */
    double apply_s, busy_s, wait_s;
    uint64_t max_version;
    uint64_t ckpt_next; /* next step to checkpoint */
    double last_ok;     /* when a worker's message last got through */
    size_t inits_seen;  /* INIT messages taken for local chunks */
    int resumed;
    int failed; /* a handler's fatal error (a checkpoint not written, a model refused at
                   REGISTER): ends the phase */
} srv_loop_t;

/* Zeroes L, copies cfg into it and allocates the per-worker state; on
 * failure (PS_ENOMEM, with a message) srv_loop_fini is still safe. */
int srv_loop_init(srv_loop_t *L, const srv_loop_cfg_t *cfg);
void srv_loop_fini(srv_loop_t *L);
/* Setup: 0 once registered and initialised (worker 0 ACKed); the reason
 * when worker 0's model cannot be held (worker 0 gets it as an ERROR),
 * PS_ETIMEDOUT, or PS_EINTR on a stop (ps_signal). */
int srv_loop_setup(srv_loop_t *L);
/* Training until every worker said SHUTDOWN; PS_EINTR on a stop. */
int srv_loop_train(srv_loop_t *L);
/* After a stop: go on taking the messages still arriving (the workers
 * finish sending their step before they stop) until none came for
 * quiet_ms, or max_ms passed. */
void srv_loop_drain(srv_loop_t *L, int quiet_ms, int max_ms);
/* The lowest and highest version of the local chunks and tables
 * (UINT64_MAX and 0 without either): equal when no step is half applied
 * here. */
void srv_loop_versions(const srv_loop_t *L, uint64_t *lo, uint64_t *hi);
uint64_t srv_loop_rejected_total(const srv_loop_t *L);
/* Worker connections (worker, stream) that carried at least one message. */
int srv_loop_connections_used(const srv_loop_t *L);
const char *srv_loop_reject_name(srv_reject_t r);

/* ---- for the loop's own files (srv_loop.c, srv_register.c) ------------- */

/* Counts a dropped message by reason and logs it (rate-limited). */
void srv_loop_reject(srv_loop_t *L, srv_reject_t why, int peer, const char *detail);
/* An ACK/ERROR-style reply with optional text, to worker w on `stream`. */
int srv_loop_send_simple(srv_loop_t *L, int w, int stream, ps_msg_type_t type, uint32_t request,
                         const char *text);
/* The chunk a data message names, checked against the map (and, with
 * need_payload, its offset and count); NULL, counted, when not. */
srv_chunk_t *srv_loop_checked_chunk(srv_loop_t *L, const ps_tp_msg_t *m, int need_payload);
/* The store's callbacks: release a held push; service the socket while
 * an update waits for zero-copy readers. */
void srv_loop_release_push(void *owner);
void srv_loop_service_socket(void *tp);
/* Sync mode: write the checkpoint when every chunk and every table has
 * reached the next checkpoint step (a failure sets L->failed). */
void srv_loop_checkpoint_due(srv_loop_t *L);
/* The sparse tables' messages (srv_sparse.c): 0, or a fatal error. */
int srv_sparse_handle_push(srv_loop_t *L, ps_tp_msg_t *m);
int srv_sparse_handle_pull(srv_loop_t *L, ps_tp_msg_t *m);
void srv_sparse_handle_tables(srv_loop_t *L, ps_tp_msg_t *m);

#endif
