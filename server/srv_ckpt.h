/*
 * srv_ckpt: checkpoints of the servers' state, and resuming from them.
 *
 * Layout on disk, under --checkpoint-dir DIR:
 *     DIR/step-00000100/server-0.safetensors   one file per server that owns chunks
 *     DIR/step-00000100/server-1.safetensors
 *     DIR/step-00000100/MANIFEST               written once every part is there
 * A server file holds, per local chunk, `chunk.<id>.w` and (once the
 * momentum buffer exists) `chunk.<id>.buf`, the sparse tables' rows it
 * holds (srv_ckpt_tables.h; with tables every server writes a file), and
 * in its metadata the step,
 * the chunk list with each chunk's first-update state, a CRC-32 of all its
 * tensor data, the layout hash and the run's settings.  Every file is
 * written to a temporary name, fsynced and renamed, and its folder fsynced
 * (ps_atomic; through ps_st_write for the tensors), MANIFEST too.
 *
 * A checkpoint is whole or absent, without MPI (the servers write their
 * parts from their event loops, each when its own chunks reach the step;
 * a collective there could wait forever on a lost rank):
 *   1. each server that owns chunks creates DIR (syncing DIR's parent when
 *      it created it) and DIR/step-N, and fsyncs DIR so that the step-N
 *      entry is on disk (every server does: the creator may have crashed
 *      between its mkdir and its fsync);
 *   2. writes its part, durably (rename, then fsync of step-N);
 *   3. then looks for every owner's part (servers 0..min(chunks, S)-1) in
 *      step-N; if all are there it writes MANIFEST, and only after that
 *      prunes: every older checkpoint goes except the newest whole one
 *      (one with a MANIFEST) before N.
 * Whichever server renames its part last sees every part in step 3 (each
 * looks only after its own rename), so exactly the complete sets get a
 * MANIFEST; two servers finishing together may both write it (the same
 * bytes, replaced atomically) and both prune.  A crash or a failed write
 * anywhere before MANIFEST leaves step N without one: it is never loaded
 * and nothing older is pruned.  The MANIFEST is the mark of a whole
 * checkpoint; the files it lists are still checked when loaded.  DIR must
 * be one folder that every server sees (a shared file system; on NFS a
 * lookup of a name not cached before asks the file server, so the last
 * writer finds the others' parts).
 *
 * In sync mode at most one checkpoint is being written at a time: every
 * server writes its part of step N before it releases the step's pull
 * replies, and no worker gets past N without every server's replies.
 *
 * A checkpoint folder belongs to one run: a new run refuses a folder that
 * holds another run's whole checkpoint, and at start-up server 0 removes
 * every (unfinished) step folder newer than the step the run starts from
 * (srv_ckpt_drop_newer), so the run's own parts never meet an earlier
 * run's in one step folder and a crash cannot resume into an earlier
 * run's later checkpoint.
 *
 * Resuming reads every server file of the newest checkpoint that is whole
 * (manifest present, every file present and valid, CRC right, same step,
 * layout and settings) into one flat copy of the state, falling back to
 * older checkpoints with a message naming what was wrong; any number of
 * servers can then take their chunks from it (the chunk size may differ).
 * Checkpoints need sync mode: in the other modes chunks are not all at one
 * step at any moment.
 */
#ifndef SRV_CKPT_H
#define SRV_CKPT_H

#include "srv_sparse.h"
#include "srv_store.h"

#include <stdint.h>

/* A sparse table's rows from every server file (srv_ckpt_tables.h). */
typedef struct {
    uint64_t *keys;
    float *w, *buf; /* buf NULL without momentum */
    uint64_t *last; /* [n]: each row's stored step (srv_table_export_state) */
    size_t n, cap;
    uint32_t dim;
    uint64_t step; /* the table's own step counter */
    double *lrs;   /* [step] */
    int files;     /* server files that held it */
} srv_ckpt_table_t;

typedef struct {
    uint64_t step;
    size_t total; /* elements */
    uint64_t layout_hash;
    float *w, *buf; /* flat, total elements each; buf NULL without momentum */
    /* First-update state by element range (old chunk boundaries). */
    size_t nranges;
    size_t *range_off, *range_cnt;
    uint8_t *range_had;
    int ntables; /* sparse tables (0: none, or a checkpoint without) */
    uint64_t tables_hash;
    srv_ckpt_table_t *tables;
} srv_ckpt_state_t;

/* Write this server's part of the checkpoint for `step` (all local chunks
 * and tables must be at that version; sp may be NULL), and complete the checkpoint when it is the
 * last part (steps 1-3 above).  `settings` is a canonical description of
 * everything that must match on resume (optimizer, schedule, mode, plan).
 * A failure before the MANIFEST (PS_EIO, PS_ENOMEM, detail set) leaves
 * the step without one and older checkpoints untouched. */
int srv_ckpt_write(const srv_store_t *s, srv_sparse_t *sp, const char *dir, uint64_t step,
                   int nservers, const char *settings);
/* Find and load the newest whole checkpoint in `dir` taken with settings
 * this run may resume (the same, or another total_steps under a schedule
 * that does not depend on it: srv_settings); PS_ENOENT (detail set) when
 * there is none.  A refused checkpoint is logged naming each setting that
 * differs. */
int srv_ckpt_load(srv_ckpt_state_t *st, const char *dir, const char *settings);
/* Put the loaded state into a freshly registered store (same layout: the
 * caller checks layout_hash and total first). */
void srv_ckpt_apply(const srv_ckpt_state_t *st, srv_store_t *s);
/* Server 0 at start-up, before any server can write a checkpoint: remove
 * DIR's step folders newer than `step` (the resumed step; they are
 * unfinished or were refused by the resume), logging how many.  A new run
 * (resuming 0) refuses, with PS_EINVAL and a message, a folder holding any
 * whole checkpoint: it belongs to another run, and is never deleted; only
 * unfinished parts are.  0 when DIR does not exist; PS_EIO (detail set)
 * when a folder cannot be removed. */
int srv_ckpt_drop_newer(const char *dir, uint64_t step, int resuming);
void srv_ckpt_fini(srv_ckpt_state_t *st);

#endif
