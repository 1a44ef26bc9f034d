/*
 * The trainer of the models over a sparse table (wkr_sparse_model: logreg,
 * embed-mlp); see wkr_train.h.  Per step: the batch's rows were pulled
 * after the previous step, forward/backward, the rows' mean gradients
 * pushed, then the dense step.
 */
#include "wkr_train.h"
#include "wkr_train_int.h"

#include "ps_clock.h"
#include "ps_err.h"
#include "ps_trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- models over a sparse table ------------------------------------------ */

#define SPARSE_EVAL_BATCH 4096

typedef struct {
    trainer_t t;                /* the epoch's figures (order, xb, yb unused) */
    wkr_sparse_model_t *m, *em; /* training; evaluation (a rank with a test set) */
    const wkr_sparse_ds_t *train, *test;
    const char *table;
    size_t dim;
    uint32_t *order;      /* this epoch's order of the shard */
    uint64_t order_epoch; /* the epoch `order` is for; UINT64_MAX: none yet */
    uint32_t *tidx;       /* 0 .. test->n - 1 */
    uint64_t *tkeys;      /* the test set's unique keys, ascending */
    size_t ntkeys;
    uint64_t *pkeys; /* one step's pull: the batch's keys, then tkeys */
    float *prows;
    size_t pcap, nbatch_keys;
    float *scores;    /* test->n */
    uint32_t samples; /* of the prepared step */
    double auc;
} sparse_t;

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The test set's unique keys, its identity order and the evaluation model. */
static int sparse_test_init(sparse_t *sp)
{
    const wkr_sparse_ds_t *d = sp->test;
    size_t nnz = d->rowptr[d->n];
    sp->tkeys = malloc((nnz ? nnz : 1) * sizeof *sp->tkeys);
    sp->tidx = malloc(d->n * sizeof *sp->tidx);
    sp->scores = malloc(d->n * sizeof *sp->scores);
    if (!sp->tkeys || !sp->tidx || !sp->scores) {
        ps_error_set("no memory for the test set's %zu keys", nnz);
        return PS_ENOMEM;
    }
    memcpy(sp->tkeys, d->keys, nnz * sizeof *sp->tkeys);
    qsort(sp->tkeys, nnz, sizeof *sp->tkeys, u64_cmp);
    for (size_t i = 0; i < nnz; i++) {
        if (i == 0 || sp->tkeys[i] != sp->tkeys[sp->ntkeys - 1]) {
            sp->tkeys[sp->ntkeys++] = sp->tkeys[i];
        }
    }
    for (size_t i = 0; i < d->n; i++) {
        sp->tidx[i] = (uint32_t)i;
    }
    int b = d->n < SPARSE_EVAL_BATCH ? (int)d->n : SPARSE_EVAL_BATCH;
    return wkr_sparse_model_new_like(&sp->em, sp->m, b);
}

static int sparse_init(sparse_t *sp, const wkr_train_cfg_t *cfg, const ps_planinfo_t *plan,
                       ps_t *ps, wkr_sparse_model_t *m, const wkr_sparse_ds_t *train,
                       const wkr_sparse_ds_t *test)
{
    memset(sp, 0, sizeof *sp);
    sp->t.cfg = cfg;
    sp->t.plan = plan;
    sp->t.ps = ps;
    sp->m = m;
    sp->train = train;
    sp->test = test;
    sp->table = wkr_sparse_model_table(m);
    sp->dim = (size_t)wkr_sparse_model_dim(m);
    sp->order_epoch = UINT64_MAX;
    if (train->n > UINT32_MAX) {
        ps_error_set("a shard of %zu samples is too large", train->n);
        return PS_ERANGE;
    }
    sp->order = malloc((train->n ? train->n : 1) * sizeof *sp->order);
    if (sp->order == NULL) {
        ps_error_set("no memory for the order of %zu samples", train->n);
        return PS_ENOMEM;
    }
    return test ? sparse_test_init(sp) : 0;
}

static void sparse_fini(sparse_t *sp)
{
    wkr_sparse_model_destroy(&sp->em);
    free(sp->order);
    free(sp->tidx);
    free(sp->tkeys);
    free(sp->pkeys);
    free(sp->prows);
    free(sp->scores);
}

/* The shard's order in `epoch`: the dense trainer's rule. */
static void sparse_order(sparse_t *sp, uint64_t epoch)
{
    wkr_train_order(sp->t.cfg, sp->order, sp->train->n, epoch);
    sp->order_epoch = epoch;
}

/* Room in the pull buffers for n keys. */
static int sparse_pull_room(sparse_t *sp, size_t n)
{
    if (n <= sp->pcap) {
        return 0;
    }
    uint64_t *k = realloc(sp->pkeys, n * sizeof *k);
    if (k) {
        sp->pkeys = k;
    }
    float *r = k ? realloc(sp->prows, n * sp->dim * sizeof *r) : NULL;
    if (r == NULL) {
        ps_error_set("no memory to pull %zu rows of table %s", n, sp->table);
        return PS_ENOMEM;
    }
    sp->prows = r;
    sp->pcap = n;
    return 0;
}

/* The batch of step s (the step's K x B samples as one), if s is a step
 * of the plan. */
static int sparse_batch(sparse_t *sp, uint64_t s)
{
    const wkr_train_cfg_t *c = sp->t.cfg;
    uint64_t spe = sp->t.plan->steps_per_epoch;
    sp->samples = 0;
    sp->nbatch_keys = 0;
    if (s >= sp->t.plan->total_steps) {
        return 0;
    }
    if (s / spe != sp->order_epoch) {
        sparse_order(sp, s / spe);
    }
    size_t per = (size_t)c->accumulate * (size_t)c->batch, lo = (size_t)(s % spe) * per;
    size_t n = wkr_train_clamp(sp->train->n, lo, per);
    int rv = wkr_sparse_model_batch(sp->m, sp->train, sp->order + lo, n);
    sp->samples = (uint32_t)n;
    sp->nbatch_keys = wkr_sparse_model_nkeys(sp->m);
    return rv;
}

/* Step s's one pull: its batch's rows, and the test set's when with_test. */
static int sparse_prepare(sparse_t *sp, uint64_t s, int with_test)
{
    int rv = sparse_batch(sp, s);
    size_t nb = sp->nbatch_keys, n = nb + (with_test ? sp->ntkeys : 0);
    if (rv != 0 || (rv = sparse_pull_room(sp, n)) != 0 || n == 0) {
        return rv;
    }
    memcpy(sp->pkeys, wkr_sparse_model_keys(sp->m), nb * sizeof *sp->pkeys);
    if (with_test) {
        memcpy(sp->pkeys + nb, sp->tkeys, sp->ntkeys * sizeof *sp->pkeys);
    }
    double t0 = ps_clock_now();
    int64_t tr = ps_trace_on() ? ps_trace_now() : 0;
    ps_rows_t *h = NULL;
    rv = ps_pull_rows(sp->t.ps, sp->table, sp->pkeys, n, sp->prows, &h);
    if (rv == 0) {
        rv = ps_wait_rows(h);
    }
    ps_trace_event("pull rows", tr, (int64_t)s + 1);
    sp->t.wait_s += ps_clock_now() - t0;
    sp->t.comm_s += ps_clock_now() - t0;
    if (rv == 0) {
        memcpy(wkr_sparse_model_rows(sp->m), sp->prows, nb * sp->dim * sizeof *sp->prows);
    }
    return rv;
}

/* Index of key in the ascending tkeys (present by construction). */
static size_t sparse_test_slot(const sparse_t *sp, uint64_t key)
{
    size_t lo = 0, hi = sp->ntkeys;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->tkeys[mid] <= key) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* The whole test set with the rows just pulled (after the batch's). */
static int sparse_eval(sparse_t *sp)
{
    const wkr_sparse_ds_t *d = sp->test;
    const float *trows = sp->prows + sp->nbatch_keys * sp->dim;
    double loss_sum = 0, correct = 0;
    size_t dense = wkr_sparse_model_layout(sp->m)->total;
    memcpy(wkr_sparse_model_params(sp->em), wkr_sparse_model_params(sp->m), dense * sizeof(float));
    for (size_t lo = 0; lo < d->n; lo += SPARSE_EVAL_BATCH) {
        size_t n = wkr_train_clamp(d->n, lo, SPARSE_EVAL_BATCH);
        int rv = wkr_sparse_model_batch(sp->em, d, sp->tidx + lo, n);
        const uint64_t *keys = wkr_sparse_model_keys(sp->em);
        float *rows = wkr_sparse_model_rows(sp->em);
        for (size_t k = 0; rv == 0 && k < wkr_sparse_model_nkeys(sp->em); k++) {
            memcpy(rows + k * sp->dim, trows + sparse_test_slot(sp, keys[k]) * sp->dim,
                   sp->dim * sizeof *rows);
        }
        double loss = 0;
        if (rv != 0 || (rv = wkr_sparse_model_predict(sp->em, sp->scores + lo, &loss)) != 0) {
            return rv;
        }
        loss_sum += loss;
    }
    for (size_t i = 0; i < d->n; i++) {
        correct += (sp->scores[i] > 0.0f) == (d->y[i] > 0.5f);
    }
    sp->t.eval[0] = loss_sum;
    sp->t.eval[1] = correct;
    sp->t.eval[2] = (double)d->n;
    sp->t.has_eval = 1;
    sp->auc = wkr_sparse_model_auc(sp->scores, d->y, d->n);
    return 0;
}

/* Forward/backward of the prepared batch, the rows' push, the step. */
static int sparse_step(sparse_t *sp, uint64_t s)
{
    const wkr_train_cfg_t *c = sp->t.cfg;
    double loss = 0, t0 = ps_clock_now();
    int64_t tr = ps_trace_on() ? ps_trace_now() : 0;
    if (c->delay_ms > 0) {
        usleep((useconds_t)c->delay_ms * 1000u);
    }
    int rv = wkr_sparse_model_train(sp->m, sp->samples ? 1.0f / (float)sp->samples : 0.0f, &loss);
    if (rv != 0) {
        return rv;
    }
    if (c->nan_step > 0 && (uint64_t)c->nan_step == s + 1) {
        wkr_sparse_model_grads(sp->m)[0] = NAN;
    }
    double t1 = ps_clock_now();
    sp->t.compute_s += t1 - t0;
    sp->t.loss_sum += loss;
    sp->t.samples += sp->samples;
    rv = ps_push_rows(sp->t.ps, sp->table, wkr_sparse_model_keys(sp->m), sp->nbatch_keys,
                      wkr_sparse_model_row_grads(sp->m), sp->samples, NULL);
    double t2 = ps_clock_now();
    sp->t.push_s += t2 - t1;
    ps_trace_event("compute + push", tr, (int64_t)s + 1);
    tr = ps_trace_on() ? ps_trace_now() : 0;
    if (rv == 0) {
        rv = ps_step(sp->t.ps, sp->samples);
    }
    ps_trace_event("step wait", tr, (int64_t)s + 1);
    sp->t.wait_s += ps_clock_now() - t2;
    sp->t.comm_s += ps_clock_now() - t1;
    return rv;
}

/* After step s: the next step's pull (with the test rows when the epoch
 * closes on a rank with a test set), the evaluation, the epoch's close. */
static int sparse_after(sparse_t *sp, uint64_t s, pending_t *p, int *started, double start,
                        double *epoch_start)
{
    uint64_t spe = sp->t.plan->steps_per_epoch, total = sp->t.plan->total_steps;
    int closes = (s + 1) % spe == 0 || s + 1 == total, eval = closes && sp->test;
    int rv = 0;
    if (s + 1 < total || eval) {
        rv = sparse_prepare(sp, s + 1, eval);
    }
    if (rv == 0 && eval) {
        int64_t t0 = ps_trace_on() ? ps_trace_now() : 0;
        rv = sparse_eval(sp);
        ps_trace_event("evaluate", t0, -1);
    }
    if (rv == 0 && closes) {
        rv = wkr_train_close_epoch(&sp->t, NULL, &p[*started], s / spe, s, start, epoch_start);
        p[*started].e.epochs = (int)((total + spe - 1) / spe);
        p[*started].e.has_auc = eval;
        p[*started].e.test_auc = sp->auc;
        sp->t.has_eval = 0;
        (*started)++;
    }
    return rv;
}

int wkr_train_run_sparse(const wkr_train_cfg_t *cfg, const ps_planinfo_t *plan, ps_t *ps,
                         wkr_sparse_model_t *m, const wkr_sparse_ds_t *train,
                         const wkr_sparse_ds_t *test, wkr_report_t *r)
{
    sparse_t sp;
    ps_info_t info = {0};
    int rv = sparse_init(&sp, cfg, plan, ps, m, train, test);
    uint64_t spe = plan->steps_per_epoch;
    int epochs = (int)((plan->total_steps + spe - 1) / spe), started = 0, reported = 0;
    double start = ps_clock_now(), epoch_start = start;
    pending_t *pend = calloc((size_t)epochs + 1, sizeof *pend);
    if (rv == 0 && !pend) {
        ps_error_set("no memory for %d epochs' figures", epochs);
        rv = PS_ENOMEM;
    }
    if (rv == 0) {
        rv = ps_info(ps, &info); /* info.step: where the servers start (--resume) */
    }
    if (rv == 0 && info.step < plan->total_steps) {
        rv = sparse_prepare(&sp, info.step, 0);
    }
    for (uint64_t s = info.step; rv == 0 && s < plan->total_steps; s++) {
        if ((rv = sparse_step(&sp, s)) != 0) {
            break;
        }
        if (r) {
            wkr_report_step(r, (int)(s / spe) + 1, epochs, s % spe + 1, spe,
                            sp.t.samples ? sp.t.loss_sum / (double)sp.t.samples : 0);
        }
        rv = sparse_after(&sp, s, pend, &started, start, &epoch_start);
        if (rv == 0) {
            rv = wkr_train_drain(&sp.t, test != NULL, r, pend, &reported, started, 0);
        }
    }
    if (rv == 0 && cfg->rank != 0) {
        rv = ps_done(ps); /* as wkr_train_run: the others need not wait for our sums */
    }
    if (rv == 0) {
        rv = wkr_train_drain(&sp.t, test != NULL, r, pend, &reported, started, 1);
    }
    if (rv == 0 || reported == started) {
        free(pend); /* otherwise sums in flight still write into it */
    }
    sparse_fini(&sp);
    return rv;
}
