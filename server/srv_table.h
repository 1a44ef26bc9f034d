/*
 * srv_table: one shard of a sparse table on one server (issue 14): rows of
 * `dim` float32 keyed by uint64, each with its momentum velocity, created on
 * first touch, and the two update rules (docs/semantics.md).
 *
 * Contract: pure C, no sockets, no MPI, single-threaded (the server loop
 * calls it).  The table owns every row; callers own the arrays they pass
 * and the arrays export() returns (free() them).  Every fallible function
 * returns 0 or a negative PS_E* with a detail in ps_error_msg(), and a
 * failed call changes nothing.
 *
 *   exact (default)  the table ends where torch.optim.SGD would put the same
 *         table held dense: every row takes every step, a row absent from
 *         the step's parts a zero gradient (so weight decay, decoupled decay
 *         and the velocity keep moving it).  The table keeps each step's
 *         2x2 zero-gradient map (srv_catchup.h) and brings a row up to date
 *         in O(log steps) when it is touched (stored: the row then takes
 *         its update) or read or exported (into the caller's output only;
 *         the stored row does not change): the cost of a step is
 *         proportional to the rows it touches, and a row's bits depend only
 *         on the pushes and lrs of the steps, never on when it was pulled,
 *         checkpointed or saved.  A new row is stored at its raw init value
 *         as of the first kept step and caught up from there when first
 *         touched.  Checkpoints keep the raw state (export_state /
 *         import_state), so a resume continues bit for bit.  A touched
 *         row's own step is srv_optim_apply() on that row, bit for bit the
 *         dense kernel's arithmetic for that step.  The momentum buffer is
 *         created for every row at the table's first step (torch's
 *         buf-is-None rule); a row created at step s was conceptually at its
 *         init value since step 0 and is caught up from there.
 *   lazy  only the rows present in a step's parts are updated (a pushed
 *         zero still counts), each with the first-touch rule of its own
 *         (its buffer starts as its first gradient): MXNet's lazy_update.
 *
 * The lr schedule is the caller's: apply() gets each step's lr (and the
 * configured cfg->lr is ignored).  Keys may be any uint64 (0 and values
 * above 2^32 included).  Memory: rows live in chunks of 4096 records
 * [w | buf | step], keys in a quotiented hash map (srv_rowmap.h): about 16
 * bytes per row beyond its weights and velocity, plus a fixed 1 MiB and 64-128
 * bytes per step (exact mode's step maps).  srv_table_bytes() counts every
 * byte the table keeps between calls, so a caller can bound it
 * (max_bytes); a call's scratch (about 24 bytes per key it names) is freed
 * before it returns.
 */
#ifndef SRV_TABLE_H
#define SRV_TABLE_H

#include "srv_optim.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { SRV_SPARSE_EXACT = 0, SRV_SPARSE_LAZY = 1 } srv_sparse_mode_t;

enum { SRV_TABLE_INIT_ZEROS = 0, SRV_TABLE_INIT_UNIFORM = 1 };

typedef struct {
    int kind;      /* SRV_TABLE_INIT_ZEROS or SRV_TABLE_INIT_UNIFORM */
    float bound;   /* uniform: U(-bound, bound), bound >= 0 and finite */
    uint64_t seed; /* uniform */
} srv_table_init_t;

/* One worker's gradient rows for one step. */
typedef struct {
    const uint64_t *keys; /* ascending, unique (else PS_EINVAL) */
    size_t n;
    const float *grad; /* n * dim, row-major */
    float coef;        /* this worker's weight: samples_w / samples_total */
} srv_rows_part_t;

typedef struct srv_table srv_table_t;

/* A new empty table at step 0.  `name` is copied (for messages).  `opt`
 * must pass srv_optim_check() (its lr is not used).  max_bytes: 0 for no
 * bound, else the most srv_table_bytes() may reach; a table whose empty
 * size is already above it is refused.  PS_EINVAL for dim 0 or above
 * 2^20, a bad init or bad optimizer settings; PS_ENOMEM. */
int srv_table_new(srv_table_t **out, const char *name, uint32_t table_id, uint32_t dim,
                  const srv_table_init_t *init, const srv_optim_cfg_t *opt, srv_sparse_mode_t mode,
                  size_t max_bytes);

/* Safe on NULL and twice; NULLs *t. */
void srv_table_destroy(srv_table_t **t);

/*
 * One optimizer step (the table's step counter goes t -> t+1) with this
 * step's lr (>= 0, finite).  parts in worker-rank order (nparts >= 0;
 * parts with n == 0 are fine), combined per key like the dense kernel:
 * g = p0*c0, then g = g + pk*ck (products rounded, never fused), where a
 * part without the key contributes nothing (the first part holding it
 * starts the sum).  Missing rows are created with the deterministic init
 * (exact: caught up from step 0) before their update.
 *   exact: every row of the table takes this step (untouched rows a zero
 *          gradient), at a cost proportional to the touched rows.
 *   lazy:  only the touched rows take it.
 * Errors (nothing changed): PS_EINVAL for keys not ascending/unique, a bad
 * lr or nparts < 0; PS_ENOMEM naming the table and the row count when the
 * new rows would take the table above max_bytes; PS_ERANGE when the step
 * counter or the row count would overflow (2^32 - 1).
 *
 * A step with no update at all (--on-nonfinite skip, a zero-sample step)
 * is no call: the step counter does not move, as in the dense store.
 */
int srv_table_apply(srv_table_t *t, const srv_rows_part_t *parts, int nparts, double lr);

/* Rows of `keys` (any order, duplicates allowed) into out[n * dim],
 * created on first touch with the deterministic init, exact mode brought
 * up to the current step in `out` only: a read never changes a stored
 * row, so a row's bits depend only on the steps' pushes and lrs, never on
 * when (or whether) it was pulled, checkpointed or saved (as for a dense
 * tensor).  PS_ENOMEM as apply (nothing created then). */
int srv_table_read(srv_table_t *t, const uint64_t *keys, size_t n, float *out);

/* Steps applied so far (import sets it). */
uint64_t srv_table_step(const srv_table_t *t);
size_t srv_table_rows(const srv_table_t *t);
uint32_t srv_table_dim(const srv_table_t *t);
const char *srv_table_name(const srv_table_t *t);
/* All memory the table holds (rows, map, per-row state, step maps). */
size_t srv_table_bytes(const srv_table_t *t);

/*
 * Every row brought up to the current step (computed into the new arrays;
 * the stored rows do not change), in ascending key order: keys[n],
 * w[n * dim] and, when momentum != 0, buf[n * dim] (else *buf = NULL).
 * In exact mode before the first step, and in lazy mode for a row never
 * updated, the buffer is exported as zeros (torch's None).  An empty table
 * gives n = 0 and NULL arrays.  Caller frees.  This is what --save writes.
 */
int srv_table_export(srv_table_t *t, uint64_t **keys, float **w, float **buf, size_t *n);

/*
 * The raw state, for checkpoints: as export, but each row as stored (NOT
 * caught up) with last[n], the step its stored value is at (exact) or of
 * its last update, 0 = never (lazy).  srv_table_import_state() of this
 * state (with the lr of every step) continues bit for bit as the table
 * would have: exact-mode catch-up products are taken from the same tree of
 * step maps, so storing caught-up values instead (and catching up again
 * from there) would round differently.  PS_EINVAL when last is NULL.
 */
int srv_table_export_state(srv_table_t *t, uint64_t **keys, float **w, float **buf, uint64_t **last,
                           size_t *n);

/*
 * Load caught-up rows (srv_table_export, --save's layout) and the step
 * counter: only on a table with no rows that has taken no step.  keys
 * ascending and unique; buf may be NULL (zeros).  The rows are at `step`;
 * continuing from them is not bit for bit the run that exported them
 * (exact: the catch-up is split at `step`), so checkpoints use
 * srv_table_import_state.  Lazy mode: a row whose
 * buffer is all zeros counts as never updated (its next update takes the
 * first-touch rule).  Exact mode: a row first touched after the import
 * starts from its init value as of the import step unless the lr of the
 * steps before it were given with srv_table_import_history() (then it is
 * caught up from step 0, as without the restart; this matters only for
 * uniform init with weight decay).  PS_ESTATE, PS_EINVAL, PS_ENOMEM.
 */
int srv_table_import(srv_table_t *t, const uint64_t *keys, const float *w, const float *buf,
                     size_t n, uint64_t step);

/*
 * Load a state from srv_table_export_state() (possibly merged from several
 * servers' tables: keys ascending and unique, last[i] <= step) at `step`,
 * with lr[step] the lr of steps 1..step (exact mode; not read in lazy
 * mode).  Same preconditions and errors as import; on failure the table
 * is empty at step 0 again.
 */
int srv_table_import_state(srv_table_t *t, const uint64_t *keys, const float *w, const float *buf,
                           const uint64_t *last, size_t n, uint64_t step, const double *lr);

/* The lr of steps 1..nsteps (nsteps == the imported step) for exact-mode
 * catch-up of rows created after an import.  Call after import, before
 * any apply.  PS_ESTATE, PS_EINVAL. */
int srv_table_import_history(srv_table_t *t, const double *lr, uint64_t nsteps);

/*
 * Deterministic initial row value: a pure function of (init, table_id,
 * key, element), so any worker or server count gives the same row.
 * Uniform: element j is bound * (2u - 1) with u in [0, 1) the top 24 bits
 * of a counter-based hash of (seed, table_id, key, j).
 */
void srv_table_init_row(const srv_table_init_t *init, uint32_t table_id, uint64_t key, uint32_t dim,
                        float *out);

#endif
