/*
 * ps_api: the inside of libpsclient (ps.h); not installed, not for programs
 * (ps-worker included: it uses ps.h alone).
 *
 * The public start-up calls are compositions of these steps:
 *
 *     ps_init  = ps_api_boot_new + (servers present?) + ps_api_join
 *     ps_start = ps_api_start_plan + ps_api_start_register + initial pull
 *
 * and ps_finalize runs whichever of them a worker that leaves early has
 * not run yet, so the servers' sequence always completes.  Each runs the
 * steps of the start-up table (common/ps_startup.h) it names below.  After
 * a failed agreement the handle is "left": only ps_finalize (no more
 * collective steps) is valid.
 */
#ifndef PS_API_H
#define PS_API_H

#include "ps_err.h"
#include "ps.h"
#include "ps_boot.h"
#include "ps_jobinfo.h"
#include "ps_keys.h"
#include "ps_layout.h"
#include "ps_transport.h"
#include "wkr_client.h"

#include <stdint.h>

/*
 * The library's files, one concern each, all over the one struct ps below:
 *
 *     ps_api.c     errors, the handle's state, tensor lookup, info, stats, save
 *     ps_start.c   the worker's side of the start-up table, ps_done, ps_finalize
 *     ps_model.c   declarations, the plan, bound arrays, ps_require_same
 *     ps_step.c    pushes, pulls, their handles and waits, whole steps
 *     ps_reduce.c  sums over the workers, blocking and not
 *     ps_rows.c    sparse tables: declarations, row pulls and pushes
 */

/* Before the table: MPI (unless the caller initialised it), the role split, log
 * name and level.  No agreement yet: the caller checks its flags next.
 * *out is NULL on failure (nothing collective happened). */
int ps_api_boot_new(ps_t **out, int *argc, char ***argv, const ps_options_t *opt);
/* Steps flags, exchange, settings: agree on `local_rc` (the caller's checks) and on the
 * options, exchange endpoints and keys, receive the servers' settings. */
int ps_api_join(ps_t *ps, int local_rc);
/* Remember a failure whose detail is already in ps_error_msg(). */
void ps_api_fail(ps_t *ps, int rc);

/* Steps ports, model, plan, resume: agree on the declarations (and remembered failures), compare
 * model and plan across the workers, broadcast the plan, the servers'
 * --resume agreement. */
int ps_api_start_plan(ps_t *ps);
/* Steps register, start: connect, register the model (worker 0), agree (with any
 * failure remembered since), receive the step the servers start from. */
int ps_api_start_register(ps_t *ps);

/* ps_init's reading of the caller's options: the first in->struct_size
 * bytes (in NULL: all defaults), checked, defaults filled in, into *out
 * (always fully set).  PS_EINVAL with a detail for a struct_size below
 * sizeof(size_t), a field set that this version does not know, or a bad
 * value. */
int ps_api_options(const ps_options_t *in, ps_options_t *out);

/* ---- the handle, shared by the library's files ------------------------ */

#define EXTRA_MAX 8

typedef enum {
    ST_BOOTED,  /* MPI is up; the first agreement is still to come */
    ST_JOINED,  /* ps_init done: declarations */
    ST_PLANNED, /* model and plan agreed; registration next */
    ST_STARTED, /* the data plane is open */
    ST_LEFT,    /* a start-up agreement failed: only ps_finalize */
    ST_BROKEN,  /* the data plane failed: ps_finalize ends the job */
} state_t;

/* A push or pull handle: one per tensor (the push of a whole step has
 * tensor -1), reused every step. */
struct ps_push {
    ps_t *ps;
    int tensor;
    uint64_t step; /* the step of its latest push */
    int active;
};

struct ps_pull {
    ps_t *ps;
    int tensor;
    uint64_t step;
    int active;
};

/* A row pull (or push) in flight (ps_rows.c). */
struct ps_rows {
    ps_t *ps;
    int pull, table;
    uint64_t step;
    uint32_t request;
    int pending;     /* servers still to answer */
    uint32_t *asked; /* [nservers] keys asked of each server (0: none, or answered) */
    uint32_t *srv;   /* [n] the server of keys[i] */
    uint32_t *pos;   /* [n] its place among that server's keys */
    float *out;      /* [n * dim], the caller's */
    size_t n;
    uint32_t dim;
    ps_rows_t *next; /* the ps_t's pulls in flight */
};

/* A ROWS_PUSH held until the step's dense push (--on-nonfinite skip). */
typedef struct {
    ps_hdr_t h;
    int server, stream;
    uint8_t *buf;
} ps_rows_held_t;

struct ps_reduce {
    ps_boot_req_t req;
    ps_reduce_t *next; /* the ps_t's list of reductions in flight */
    ps_reduce_t **list;
};

struct ps {
    ps_boot_t boot;
    state_t state;
    int rc;        /* a failure remembered for the next agreement, or why we left */
    char why[512]; /* its message (the thread-local detail may be gone by then) */
    ps_options_t opt;
    int signals;               /* ps_signal_install ran for this handle */
    const char **server_hosts; /* [nservers], lent to the client (ps_boot's strings) */
    ps_tp_keypair_t keys;
    ps_srvinfo_t srv;
    ps_planinfo_t plan;
    int planned;
    ps_layout_t layout;    /* the one layout of this worker; the client borrows it */
    float *params, *grads; /* the library's arrays, layout order; params holds the
                              declared initial values until ps_start */
    float *bound_w[PS_MAX_TENSORS], *bound_g[PS_MAX_TENSORS]; /* ps_bind's, or NULL */
    uint64_t extra[EXTRA_MAX];
    int nextra;
    char *disagree; /* the caller's message for a mismatch */
    wkr_client_t *client;
    uint64_t step;    /* the step the next push belongs to */
    int open, pushed; /* this step: some tensor pushed / every tensor pushed */
    uint32_t samples;
    int npushed, npulls; /* tensors pushed / pulled with ps_pull_tensor this step */
    uint8_t tensor_pushed[PS_MAX_TENSORS];
    int shut; /* SHUTDOWN sent */
    ps_push_t step_push;
    ps_push_t pushes[PS_MAX_TENSORS];
    ps_pull_t pulls[PS_MAX_TENSORS];
    ps_reduce_t *reductions; /* in flight */
    /* Sparse tables (ps_rows.c). */
    ps_tables_t tables;
    uint64_t table_pushed[PS_TABLES_MAX]; /* 1 + the step of its last push; 0: none */
    uint32_t rows_samples;                /* samples of this step's row pushes */
    int rows_nonfinite;                   /* a row push of this step was not finite */
    ps_rows_t *rows_inflight;             /* pulls waiting for replies */
    uint32_t rows_request;
    ps_rows_held_t *rows_held; /* --on-nonfinite skip: this step's row pushes */
    size_t nrows_held, caprows_held;
};

/* ---- helpers the library's files share --------------------------------- */

/* PS_EINVAL with "CALL: the ps_t handle is NULL". */
int ps_api_no_handle(const char *call);
/* A start-up agreement (common/ps_startup.h), with a message on the
 * ranks that did not fail. */
int ps_api_agree(ps_t *ps, ps_step_t step, int rc);
/* A start-up agreement failed: from now on only ps_finalize. */
int ps_api_startup_failed(ps_t *ps, int rv);
/* The data plane failed: ps_finalize will end the job with this. */
int ps_api_break(ps_t *ps, int rv);
/* Whether some tensor uses the library's gradient array. */
int ps_api_library_grads(const ps_t *ps);
float *ps_api_weights_of(const ps_t *ps, int t);
float *ps_api_grads_of(const ps_t *ps, int t);
/* The data plane is open (and nothing failed on it). */
int ps_api_data_plane_open(const ps_t *ps, const char *call);
/* The data plane is open and this worker has not said it is done. */
int ps_api_servers_open(const ps_t *ps, const char *call);
/* After ps_start: tensor `name`'s index into *t. */
int ps_api_find_tensor(const ps_t *ps, const char *call, const char *name, int *t);
/* ps_finalize: the reductions the caller left in flight. */
int ps_api_complete_reductions(ps_t *ps);
/* A step whose every tensor was pulled with ps_pull_tensor ends at the
 * next call that needs the next step (ps_step.c). */
int ps_api_settle_step(ps_t *ps);

/* ---- sparse tables (ps_rows.c) ----------------------------------------- */

/* ps_start: the declared tables' names clash with no tensor's. */
int ps_rows_check_names(const ps_t *ps);
/* After connecting: the client hands row replies to ps_rows (worker 0's
 * wkr_client_register sends the declarations, TABLES, to every server). */
int ps_rows_connect(ps_t *ps);
/* The step's dense push is complete: every table pushed with the step's
 * samples (else PS_ESTATE / PS_EINVAL naming the table); *skip |= a row
 * push was not finite (--on-nonfinite skip). */
int ps_rows_step_check(ps_t *ps, int *skip);
/* --on-nonfinite skip: send the step's held row pushes, flagged SKIP when
 * `skip`. */
int ps_rows_flush(ps_t *ps, int skip);
/* ps_finalize: free what is left (held pushes, pulls in flight). */
void ps_rows_fini(ps_t *ps);

#endif
