/*
 * wkr_train_int: what the dense trainer (wkr_train.c) and the sparse one
 * (wkr_train_sparse.c) share, inside ps-worker only: the epoch's figures
 * (trainer_t), their non-blocking sum over the workers and the report
 * (pending_t, wkr_train_close_epoch, wkr_train_drain), the shard's order
 * in an epoch and the clamp of a batch to the shard.
 */
#ifndef WKR_TRAIN_INT_H
#define WKR_TRAIN_INT_H

#include "wkr_train.h"

typedef struct {
    const wkr_train_cfg_t *cfg;
    const ps_planinfo_t *plan;
    ps_t *ps;
    wkr_model_t *m;
    const wkr_dataset_t *train;
    uint32_t *order; /* shard positions in this epoch's order */
    float *xb, *yb;  /* one micro-batch, gathered */
    double loss_sum, compute_s;
    double wait_s;           /* this epoch: blocked in ps_pull */
    double comm_s, hidden_s; /* this epoch: first push to weights back; the
                              * part of it that overlapped compute */
    double push_s;           /* this epoch: inside the push calls */
    double apply_seen;       /* servers' apply seconds reported so far */
    uint64_t samples;
    int has_eval;   /* sparse models: eval[] is this epoch's test figures */
    double eval[3]; /* test loss sum, correct, samples */
} trainer_t;

/* One epoch's figures on their way through the (non-blocking) sum over
 * the workers; rank 0 reports them when the sum is complete. */
typedef struct {
    wkr_epoch_rec_t e;
    double v[9]; /* loss sum, samples, test loss sum, correct, test n, compute s,
                  * comm s, hidden comm s, push s */
    double epoch_s;
    ps_reduce_t *req;
} pending_t;

/* Close epoch `epoch` (0-based) ending at step s: evaluate `test` (NULL:
 * take t->eval when t->has_eval) and start the epoch's sum. */
int wkr_train_close_epoch(trainer_t *t, const wkr_dataset_t *test, pending_t *p, uint64_t epoch,
                          uint64_t s, double start, double *epoch_start);
/* Report, in order, every epoch whose sum has completed (all of them when
 * `wait`); *next is the first epoch not reported yet. */
int wkr_train_drain(trainer_t *t, int has_test, wkr_report_t *r, pending_t *p, int *next,
                    int started, int wait);
/* The shard's positions 0..n-1 in epoch `epoch`'s order (shuffled by the
 * seed, the epoch and the rank when cfg->shuffle). */
void wkr_train_order(const wkr_train_cfg_t *cfg, uint32_t *order, size_t n, uint64_t epoch);
/* How many of `want` items from `from` on exist among `have`. */
size_t wkr_train_clamp(size_t have, size_t from, size_t want);

#endif
