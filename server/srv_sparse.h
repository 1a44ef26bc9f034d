/*
 * srv_sparse: the server's side of the sparse tables (issue 14): the
 * TABLES declaration, ROWS_PUSH and ROWS_PULL, over one srv_table_t per
 * declared table (server/srv_table.h holds the rows and the update math;
 * this module decides when a step is applied, as srv_store does for the
 * dense chunks).
 *
 * Steps, per table, as for a dense chunk:
 *   sync   step t is applied once every worker's ROWS_PUSH for step t is
 *          in; the parts go to srv_table_apply in worker-rank order, each
 *          with coef = samples_w / total (float of the double quotient, as
 *          srv_store), at lr_of(t).
 *   ssp    pushes for steps up to version + staleness are held.
 *   (sync and ssp hold pushes up to SRV_SPARSE_AHEAD steps further still:
 *   see there.)
 *   async  each push is applied on arrival (coef 1, lr_of(the worker's
 *          step)); a replay (a step not after the worker's last) is a
 *          duplicate.
 * A step whose total is 0 samples, or that a worker flagged PS_FLAG_SKIP
 * (or whose gradient is not finite under --on-nonfinite skip), is not
 * applied (srv_table_apply is not called: the table's step does not
 * move) but the table's version advances in sync/ssp so every worker
 * stays in step.  A non-finite gradient under abort ends the loop with
 * PS_ERANGE naming worker, table and step.
 *
 * A ROWS_PULL wanting version v is answered when the table's version
 * reaches v (held until then, at most SRV_SPARSE_MAX_HELD per worker and
 * table), with the
 * rows in the pull's key order, read with srv_table_read (which creates
 * untouched rows and, in exact mode, brings the reply's copy up to the
 * current step; the stored rows do not change).
 *
 * Every message is checked before it touches a table: table id, dim,
 * the key count against the payload (ps_wire did), keys strictly
 * ascending and all of this server's (ps_key_server), step window,
 * duplicates.  A bad one is counted and dropped like a bad dense message.
 * Memory: the tables of one server together stay under max_bytes; a push
 * or pull that would pass it ends the loop (PS_ENOMEM) naming the table,
 * the server and the row count.
 */
#ifndef SRV_SPARSE_H
#define SRV_SPARSE_H

#include "ps_jobinfo.h"
#include "ps_keys.h"
#include "ps_transport.h"
#include "srv_optim.h"
#include "srv_table.h"

#include <stddef.h>
#include <stdint.h>

/* Sync/ssp: how many steps beyond its window a table holds pushes for.
 * A worker's push of step t+1 can reach a server before another worker's
 * push of step t has: a dense chunk's pull makes the worker wait for the
 * chunk's step, but a server where a worker has no rows to pull (an empty
 * push) makes it wait for nothing, and the other worker's push travels on
 * another connection.  The dense steps between keep the lead to a step or
 * two in practice; a push further ahead is refused (step). */
#define SRV_SPARSE_AHEAD 16

/* Row pulls held per worker and table before more are refused. */
#define SRV_SPARSE_MAX_HELD 64

typedef double (*srv_sparse_lr_fn)(void *arg, uint64_t t);

/* One worker's push of one step, copied out of the message. */
typedef struct {
    uint64_t *keys;
    float *grad;
    size_t n;
    uint32_t samples;
    uint8_t in, skip;
} srv_rows_held_t;

/* A ROWS_PULL waiting for its table to reach version `want`. */
typedef struct {
    uint64_t want;
    uint32_t request;
    int worker, stream;
    uint64_t *keys;
    size_t n;
} srv_rows_pull_t;

typedef struct {
    ps_table_decl_t decl;
    srv_table_t *tbl;
    uint64_t version;       /* steps completed (applied or not) */
    srv_rows_held_t *held;  /* [nslots * nworkers], slot = step % nslots */
    int *arrived;           /* [nslots] */
    uint64_t *next_step;    /* [nworkers] async: 1 + the worker's last step */
    srv_rows_pull_t *pulls; /* held pulls */
    size_t npulls, cap;
    uint64_t skipped; /* steps dropped (non-finite) */
    double *lrs;      /* the lr of each step the table took (checkpoints: an exact
                         table's rows created after a resume catch up with them) */
    size_t nlrs, caplrs;
} srv_sparse_table_t;

typedef struct {
    int server, nservers, nworkers;
    ps_mode_t mode;
    uint64_t staleness;
    srv_optim_cfg_t opt;
    srv_sparse_mode_t update; /* --sparse-update */
    size_t max_bytes;         /* --max-table-mib, this server's share; 0: none */
    srv_sparse_lr_fn lr_of;   /* NULL: opt.lr */
    void *lr_arg;
    int nonfinite_skip;
} srv_sparse_cfg_t;

typedef struct {
    srv_sparse_cfg_t cfg;
    int nslots;
    int declared; /* TABLES taken */
    ps_tables_t decls;
    srv_sparse_table_t *t; /* [decls.n] */
    uint64_t pushes, pulls, rows_pushed, rows_pulled;
    double apply_s;
} srv_sparse_t;

/* Zeroes sp and keeps cfg; nothing is allocated before the declaration. */
void srv_sparse_init(srv_sparse_t *sp, const srv_sparse_cfg_t *cfg);
void srv_sparse_fini(srv_sparse_t *sp);
/* Create the declared tables (empty).  PS_ENOMEM / the table's error. */
int srv_sparse_declare(srv_sparse_t *sp, const ps_tables_t *decls);
/* All the rows the tables hold, in bytes. */
size_t srv_sparse_bytes(const srv_sparse_t *sp);
/* The lowest table version (UINT64_MAX without tables). */
uint64_t srv_sparse_min_version(const srv_sparse_t *sp);
/* The number of tables (0 before the declaration). */
int srv_sparse_ntables(const srv_sparse_t *sp);

#endif
