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
 * Gradients leave layer by layer while backward still runs (the model's
 * grad-ready callback), with the pull for the next step requested behind
 * each chunk.  Each region is checked for NaN/Inf before it leaves: with
 * the servers' --on-nonfinite abort a non-finite gradient ends the job
 * naming this worker, the tensor and the step; with skip the whole
 * gradient is checked first (no overlap) and pushed flagged PS_FLAG_SKIP,
 * which drops the step for everyone.
 */
#ifndef WKR_TRAIN_H
#define WKR_TRAIN_H

#include "ps_boot.h"
#include "wkr_client.h"
#include "wkr_data.h"
#include "wkr_model.h"
#include "wkr_report.h"

#include <stdint.h>

typedef struct {
    int batch;        /* B */
    int accumulate;   /* K */
    int epochs;
    long long steps;  /* > 0 overrides epochs */
    int shuffle;
    uint64_t seed;
    int rank, nworkers;
    int delay_ms;              /* TEST ONLY: sleep this long every step */
    long long nan_step;        /* TEST ONLY: > 0: poison step nan_step's gradient (1-based) */
    uint64_t start_step;       /* resume: the servers' step (0 for a new run) */
    const ps_srvinfo_t *srv;   /* the servers' settings (for the lr in metrics) */
} wkr_train_cfg_t;

typedef struct {
    uint64_t steps_per_epoch;
    uint64_t total_steps;
} wkr_plan_t;

/* Validate the configuration against the data and compute the plan. */
int wkr_train_plan(const wkr_train_cfg_t *cfg, size_t total_samples, wkr_plan_t *plan);
/* Run the plan, then tell the servers this worker is done.  `b` is used
 * for the metric reductions (collective over the workers, non-blocking);
 * `r` may be NULL on ranks other than 0. */
int wkr_train_run(const wkr_train_cfg_t *cfg, const wkr_plan_t *plan, ps_boot_t *b,
                  wkr_model_t *m, wkr_client_t *c, const wkr_dataset_t *train,
                  const wkr_dataset_t *test, wkr_report_t *r);

#endif
