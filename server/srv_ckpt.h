/*
 * srv_ckpt: checkpoints of the servers' state, and resuming from them.
 *
 * Layout on disk, under --checkpoint-dir DIR:
 *     DIR/step-00000100/server-0.safetensors   one file per server that owns chunks
 *     DIR/step-00000100/server-1.safetensors
 *     DIR/step-00000100/MANIFEST               written by server 0
 * A server file holds, per local chunk, `chunk.<id>.w` and (once the
 * momentum buffer exists) `chunk.<id>.buf`, and in its metadata the step,
 * the chunk list with each chunk's first-update state, a CRC-32 of all its
 * tensor data, the layout hash and the run's settings.  Every file is
 * written to a temporary name, fsynced and renamed (ps_atomic; through
 * ps_st_write for the tensors), MANIFEST too.  A new checkpoint is written before the step's last pull replies
 * leave, so the previous one is complete everywhere by then; server 0
 * deletes checkpoints older than the previous one only after writing its
 * part of the new one.
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

#include "srv_store.h"

#include <stdint.h>

typedef struct {
    uint64_t step;
    size_t total;     /* elements */
    uint64_t layout_hash;
    float *w, *buf;   /* flat, total elements each; buf NULL without momentum */
    /* First-update state by element range (old chunk boundaries). */
    size_t nranges;
    size_t *range_off, *range_cnt;
    uint8_t *range_had;
} srv_ckpt_state_t;

/* Write this server's part of the checkpoint for `step` (all local chunks
 * must be at that version).  `settings` is a canonical description of
 * everything that must match on resume (optimizer, schedule, mode, plan). */
int srv_ckpt_write(const srv_store_t *s, const char *dir, uint64_t step, int nservers,
                   const char *settings);
/* Find and load the newest whole checkpoint in `dir` taken with settings
 * this run may resume (the same, or another total_steps under a schedule
 * that does not depend on it: srv_settings); PS_ENOENT (detail set) when
 * there is none.  A refused checkpoint is logged naming each setting that
 * differs. */
int srv_ckpt_load(srv_ckpt_state_t *st, const char *dir, const char *settings);
/* Put the loaded state into a freshly registered store (same layout: the
 * caller checks layout_hash and total first). */
void srv_ckpt_apply(const srv_ckpt_state_t *st, srv_store_t *s);
void srv_ckpt_fini(srv_ckpt_state_t *st);

#endif
