/*
 * srv_save: the final model as one safetensors file.
 *
 * Collective over the server ranks: every server packs the weights (and the
 * momentum velocity, when there is one) of its chunks; server 0 gathers
 * them over MPI, reassembles the flat parameter space from the chunk map
 * and writes `<name>` tensors in layout order, then `<name>.momentum_buffer`
 * for each tensor when momentum > 0 and at least one update was applied,
 * with the step count, optimizer settings, momentum form, learning-rate
 * schedule and mode in __metadata__ (a resumed run continues from them).
 * Each sparse table NAME (srv_sparse.h) is written as `NAME.keys` (I64
 * [R], ascending; these come first in the file, so they are 8-byte
 * aligned), `NAME` (F32 [R, dim], row i for keys[i]) and, when the
 * dense tensors have their buffers, `NAME.momentum_buffer` (same rows):
 * every row any server holds, exact mode brought up to the last step.
 * __metadata__ "sparse_tables" lists the tables' names (a JSON array)
 * and "sparse_update" the rule.  The file is
 * written atomically (ps_st_write).  The result is agreed on: every server
 * returns the same code.
 */
#ifndef SRV_SAVE_H
#define SRV_SAVE_H

#include "ps_boot.h"
#include "srv_sparse.h"
#include "srv_store.h"

/* What the metadata records beyond the optimizer settings in the store. */
typedef struct {
    uint64_t step;        /* updates applied (async: pushes applied) */
    const char *mode;     /* "sync" | "ssp" | "async" */
    const char *schedule; /* ps_sched_describe text */
    const char *form;     /* momentum form name */
    const char *sparse;   /* --sparse-update */
} srv_save_info_t;

/* sp: the tables (may be NULL or without tables); exporting brings their
 * rows up to date, hence not const. */
int srv_save_model(ps_boot_t *b, const srv_store_t *s, srv_sparse_t *sp,
                   const srv_save_info_t *info, const char *path);

#endif
