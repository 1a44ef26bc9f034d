/*
 * wkr_train: the built-in trainer, one user of the client library.
 *
 * The step rule.  With W workers, K micro-batches of B samples, the global
 * batch of a step is G = W*K*B samples and an epoch is ceil(N/G) steps, the
 * same on every worker.  Worker w holds the samples i with i % W == w (its
 * shard, n_w of them) and, at step j of an epoch, uses positions
 * [j*K*B, (j+1)*K*B) of its (optionally shuffled) shard order, cut into K
 * micro-batches; near the end of an epoch a worker may have fewer samples
 * or none.  It pushes the MEAN gradient over the samples it used and their
 * count n; the server weights each push by n / sum(n).  So every step
 * applies the gradient of the mean loss over exactly the samples used in
 * that step, whatever the shard sizes: no hang and no bias on uneven
 * shards.  Without shuffling, step j uses exactly the global samples
 * [j*G, (j+1)*G), which is what one process with batch G would use.
 *
 * Gradients leave layer by layer while backward still runs: the model's
 * grad-ready callback scales a finished layer to the mean and pushes its
 * tensors with ps_push_tensor (ps.h), which sends every chunk that is
 * complete, with the pull for the next step requested behind it; ps_pull
 * then waits for the weights.  The library checks each tensor for NaN/Inf
 * before it leaves: with the servers' --on-nonfinite abort a non-finite
 * gradient ends the job naming this worker, the tensor and the step; with
 * skip the library holds the pushes until the whole gradient is final and
 * drops the step for everyone.
 *
 * The trainer is a plain user of libpsclient (ps.h): it binds the model's
 * arrays, and everything it does with the servers goes through ps_t.
 */
#ifndef WKR_TRAIN_H
#define WKR_TRAIN_H

#include "ps.h"
#include "ps_jobinfo.h"
#include "wkr_data.h"
#include "wkr_model.h"
#include "wkr_sparse_model.h"
#include "wkr_report.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int batch;      /* B */
    int accumulate; /* K */
    int epochs;
    long long steps; /* > 0 overrides epochs */
    int shuffle;
    uint64_t seed;
    int rank, nworkers;
    int delay_ms;       /* TEST ONLY: sleep this long every step */
    long long nan_step; /* TEST ONLY: > 0: poison step nan_step's gradient (1-based) */
} wkr_train_cfg_t;

/* Validate the configuration against the data and compute the plan:
 * steps_per_epoch = ceil(total_samples / (W*K*B)) (0 for no samples),
 * total_steps = steps, or epochs * steps_per_epoch. */
int wkr_train_plan(const wkr_train_cfg_t *cfg, size_t total_samples, ps_planinfo_t *plan);
/* Micro-batch k (0 .. K-1) of step j of an epoch, on a shard of n samples:
 * the positions [*first, *first + *count) of the shard's order; *count is
 * B, fewer near the end of the shard, or 0 past it. */
void wkr_train_batch(const wkr_train_cfg_t *cfg, size_t n, uint64_t j, size_t k, size_t *first,
                     size_t *count);
/* Run the plan from the servers' step on, through `ps` (started, with the
 * model's arrays bound).  Metric sums over the workers are collective
 * over the workers (started without waiting, completed in order); `r` may
 * be NULL on ranks other than 0.  Ranks other than 0 tell the servers
 * they are done (ps_done) before waiting for the last sums; rank 0's
 * ps_finalize does, after its last report. */
int wkr_train_run(const wkr_train_cfg_t *cfg, const ps_planinfo_t *plan, ps_t *ps, wkr_model_t *m,
                  const wkr_dataset_t *train, const wkr_dataset_t *test, wkr_report_t *r);

/* The same for a model over a sparse table (wkr_sparse_model, whose dense
 * tensors are bound and whose table is declared): each step pulls the rows
 * of its batch's unique keys (ps_pull_rows, issued right after the
 * previous step so it is the step's one pull), computes the mean-loss
 * gradient of its K x B samples as one batch, pushes the rows'
 * gradients (ps_push_rows) and then the dense ones (ps_step).  `test`
 * (NULL on ranks without one) is evaluated whole at every epoch's end
 * with the rows of all its keys, pulled with the next step's rows (or,
 * after the last step, alone): test loss, accuracy (logit > 0) and exact
 * AUC. */
int wkr_train_run_sparse(const wkr_train_cfg_t *cfg, const ps_planinfo_t *plan, ps_t *ps,
                         wkr_sparse_model_t *m, const wkr_sparse_ds_t *train,
                         const wkr_sparse_ds_t *test, wkr_report_t *r);

#endif
