/*
 * wkr_report: what worker rank 0 shows and records about training.
 *
 * A progress bar on a terminal (redrawn at most ten times a second on
 * stderr, the per-epoch lines written there too, between its frames), or
 * plain per-epoch lines on stdout when the output is not a terminal, and
 * the metrics file: JSON lines, one per epoch, with at least
 * epoch, step, train_loss, test_acc (when there is a test set),
 * samples_per_s and elapsed_s; a loss that is not finite is written as
 * null (JSON has no NaN).  The binary classifiers of sparse tables
 * (logreg, embed-mlp) add test_logloss (the mean binary cross entropy,
 * = test_loss) and test_auc (exact ROC AUC; null when the test set holds
 * one class only).
 *
 * Under mpirun a rank's stdout is always a pseudo-terminal, so "is the user
 * looking at a terminal" is answered for mpirun's own stdout (the parent
 * process, through /proc) when the parent is mpirun or orted.  A launcher
 * that knows better (make run pipes mpirun through tee, yet its own output
 * may be a terminal) sets PS_PROGRESS_AUTO=bar or plain: what "auto" means.
 *
 * The bar shows the epoch, its steps, the running loss, samples/s and the
 * time left (both over the steps since the bar's first draw, so start-up
 * and a resumed run's earlier steps do not count).  Every frame is written
 * as "\r" TEXT "\033[K" with no "\r", "\n" or ESC inside TEXT, and the bar is
 * cleared with "\r\033[K" before an epoch line, so a log writer can drop
 * the frames (deploy/run-fmnist.sh does).
 */
#ifndef WKR_REPORT_H
#define WKR_REPORT_H

#include <stdint.h>
#include <stdio.h>

typedef enum { WKR_PROGRESS_NONE, WKR_PROGRESS_PLAIN, WKR_PROGRESS_BAR } wkr_progress_t;

typedef struct {
    int epoch;     /* 1-based */
    int epochs;    /* planned epochs (may be fractional with --steps: rounded up) */
    uint64_t step; /* global steps done */
    double train_loss;
    int has_test;
    double test_loss, test_acc;
    int has_auc;     /* binary classifiers: test_logloss and test_auc too */
    double test_auc; /* NaN when undefined */
    double samples_per_s;
    double elapsed_s;
    double compute_s, wait_s; /* this epoch: forward/backward, waiting for pulls */
    double comm_s;            /* this epoch: first push to last weights back */
    double push_s;            /* this epoch: inside the push calls (part of compute_s) */
    double server_apply_s;    /* since the last report: updates applied, all servers */
    double comm_hidden;       /* fraction of comm_s that overlapped compute */
    double lr;                /* learning rate of the epoch's last step */
    int has_staleness;
    double staleness_max, staleness_mean; /* over pushes applied so far */
} wkr_epoch_rec_t;

typedef struct {
    wkr_progress_t mode;
    FILE *metrics;
    double last_draw;
    int drew;
    /* The plan (wkr_report_plan), for samples/s and the time left. */
    uint64_t total_steps, samples_per_step, samples_per_epoch;
    double first_t;      /* when the bar was first drawn */
    uint64_t first_step; /* global steps done then */
    int started;
} wkr_report_t;

/* "auto" | "bar" | "plain" | "none". */
int wkr_report_parse_mode(const char *s, wkr_progress_t *out);
/* Resolve auto against PS_PROGRESS_AUTO or else the terminal (PS_EINVAL
 * naming the variable when it is neither bar nor plain), open the metrics
 * file (NULL: none); PS_EIO naming the path when it cannot be created. */
int wkr_report_init(wkr_report_t *r, const char *mode, const char *metrics_path);
/* The plan: all steps of the run, samples of a full step (W x K x B) and
 * of an epoch (the last step of an epoch may be short).  Without it the
 * bar shows no samples/s and no time left. */
void wkr_report_plan(wkr_report_t *r, uint64_t total_steps, uint64_t samples_per_step,
                     uint64_t samples_per_epoch);
/* Step `done` (1-based) of `per_epoch` of epoch `epoch` (1-based) is done. */
void wkr_report_step(wkr_report_t *r, int epoch, int epochs, uint64_t done, uint64_t per_epoch,
                     double loss);
int wkr_report_epoch(wkr_report_t *r, const wkr_epoch_rec_t *e);
void wkr_report_fini(wkr_report_t *r);

#endif
