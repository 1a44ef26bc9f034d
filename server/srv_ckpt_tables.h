/*
 * srv_ckpt_tables: the sparse tables' part of a checkpoint (srv_ckpt.h).
 *
 * Every server's file holds, per table i of the model (declaration
 * order), its rows: `table.<i>.keys` (I64 [n], ascending), `table.<i>.w`
 * (F32 [n * dim], row-major, as stored: NOT brought up to the checkpoint's
 * step, see srv_table_export_state) and, with momentum, `table.<i>.buf`;
 * `table.<i>.last` (I64 [n]: the step each row's stored value is at, or
 * lazy: of its last update, 0 = never; a checkpoint without it holds rows
 * at the table's step); and `table.<i>.lr` (I64 [steps]: the
 * bits of the float64 lr of each step the table took, for the exact
 * catch-up of rows first touched after a resume).  Metadata "tables" is
 * "COUNT:HASH" (ps_tables_hash of the declarations) and "table_steps" the
 * tables' own step counters, comma-separated.  With tables every server
 * writes a file (rows live on every server); resuming reads every file and
 * keeps the rows whose key is now its own (ps_key_server), so any server
 * count resumes.
 */
#ifndef SRV_CKPT_TABLES_H
#define SRV_CKPT_TABLES_H

#include "ps_safetensors.h"
#include "srv_ckpt.h"
#include "srv_sparse.h"

/* What a file's table tensors point into, freed after the write. */
typedef struct {
    int n;
    uint64_t *keys[PS_TABLES_MAX];
    float *w[PS_TABLES_MAX], *buf[PS_TABLES_MAX];
    uint64_t *last[PS_TABLES_MAX];
    int64_t shape[PS_TABLES_MAX][3]; /* keys, rows, lr */
    char names[PS_TABLES_MAX][5][32];
    char meta_tables[48];
    char *meta_steps;
} srv_ckpt_tables_out_t;

/* Append the tables' tensors to t / i64 from *n on (room for 5 per table)
 * and fill o; srv_ckpt_tables_out_fini frees it (also after a failure). */
int srv_ckpt_tables_out(srv_sparse_t *sp, srv_ckpt_tables_out_t *o, ps_st_tensor_t *t, int *i64,
                        int *n);
void srv_ckpt_tables_out_fini(srv_ckpt_tables_out_t *o);
/* One server file's tables into st (st->ntables set by the first). */
int srv_ckpt_tables_take(srv_ckpt_state_t *st, const ps_st_file_t *f, const char *path);
/* Load the checkpoint's rows that live on this server into freshly
 * declared tables at `step`; PS_EINVAL naming the difference when the
 * checkpoint holds other tables. */
int srv_ckpt_tables_apply(const srv_ckpt_state_t *st, srv_sparse_t *sp, uint64_t step);

#endif
