#include "wkr_train.h"

#include "ps_clock.h"
#include "ps_err.h"
#include "ps_rng.h"
#include "ps_trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* State shared with the model's grad-ready callback during one step. */
typedef struct {
    ps_t *ps;
    const ps_layout_t *layout;
    float *grads;
    size_t done_from; /* grads[done_from ..) already scaled and pushed */
    float scale;      /* 1 / samples of this step on this worker */
    uint32_t samples;
    int inject_nan;    /* TEST ONLY: poison this step's gradient */
    double first_push; /* when the step's first push call began (0: none yet) */
    double push_s;     /* time spent inside the push calls */
    int rv;
} push_ctx_t;

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

int wkr_train_plan(const wkr_train_cfg_t *cfg, size_t total, ps_planinfo_t *plan)
{
    if (cfg->batch < 1 || cfg->accumulate < 1) {
        ps_error_set("--batch-size and --accumulate must be at least 1");
        return PS_EINVAL;
    }
    if (cfg->steps < 0 || cfg->epochs < 0 || (cfg->steps == 0 && cfg->epochs == 0)) {
        ps_error_set("give --epochs E >= 1 or --steps T >= 1 (--steps 0 with --epochs 0 "
                     "trains nothing)");
        return PS_EINVAL;
    }
    uint64_t g = (uint64_t)cfg->nworkers * (uint64_t)cfg->accumulate * (uint64_t)cfg->batch;
    if (g > UINT32_MAX) {
        ps_error_set("global batch W x K x B = %llu is too large", (unsigned long long)g);
        return PS_EINVAL;
    }
    plan->steps_per_epoch = (total + g - 1) / g;
    plan->total_steps =
        cfg->steps > 0 ? (uint64_t)cfg->steps : (uint64_t)cfg->epochs * plan->steps_per_epoch;
    return 0;
}

static size_t clamp_count(size_t have, size_t from, size_t want)
{
    return from >= have ? 0 : (have - from < want ? have - from : want);
}

void wkr_train_batch(const wkr_train_cfg_t *cfg, size_t n, uint64_t j, size_t k, size_t *first,
                     size_t *count)
{
    size_t B = (size_t)cfg->batch, K = (size_t)cfg->accumulate;
    *first = (size_t)j * K * B + k * B;
    *count = clamp_count(n, *first, B);
}

/* Push every tensor of grads[first .. done_from), first to last, so a NaN
 * is named in the first tensor that has one. */
static void push_region(push_ctx_t *p, size_t first)
{
    double t0 = ps_clock_now();
    if (p->first_push == 0) {
        p->first_push = t0;
    }
    int t = ps_layout_tensor_at(p->layout, first);
    for (; p->rv == 0 && t >= 0 && t < p->layout->n && p->layout->t[t].offset < p->done_from; t++) {
        p->rv = ps_push_tensor(p->ps, p->layout->t[t].name, p->samples, NULL);
    }
    p->push_s += ps_clock_now() - t0;
}

/* A layer's gradient is final: make it the mean and push it. */
static void grad_ready(void *arg, size_t first)
{
    push_ctx_t *p = arg;
    if (p->rv != 0 || first >= p->done_from) {
        return;
    }
    if (p->inject_nan && first == 0) {
        p->grads[0] = NAN;
    }
    for (size_t i = first; i < p->done_from; i++) {
        p->grads[i] *= p->scale;
    }
    push_region(p, first);
    p->done_from = first;
}

static void epoch_order(trainer_t *t, uint64_t epoch)
{
    for (size_t i = 0; i < t->train->n; i++) {
        t->order[i] = (uint32_t)i;
    }
    if (t->cfg->shuffle) {
        ps_rng_t rng;
        ps_rng_seed(&rng, t->cfg->seed, (epoch << 20) ^ (uint64_t)t->cfg->rank ^ 0x5bd1e995u);
        ps_rng_shuffle(&rng, t->order, t->train->n);
    }
}

/* Forward/backward over the K micro-batches of step j, pushing as we go. */
static int compute_step(trainer_t *t, uint64_t j, push_ctx_t *p)
{
    const wkr_dataset_t *d = t->train;
    size_t K = (size_t)t->cfg->accumulate, D = (size_t)d->features, n_step = 0, lo, mn;
    for (size_t k = 0; k < K; k++) {
        wkr_train_batch(t->cfg, d->n, j, k, &lo, &mn);
        n_step += mn;
    }
    p->samples = (uint32_t)n_step;
    p->scale = n_step ? 1.0f / (float)n_step : 0.0f;
    double t0 = ps_clock_now();
    for (size_t k = 0; k < K; k++) {
        wkr_train_batch(t->cfg, d->n, j, k, &lo, &mn);
        for (size_t i = 0; i < mn; i++) {
            size_t row = t->order[lo + i];
            memcpy(t->xb + i * D, d->x + row * D, D * sizeof(float));
            t->yb[i] = d->y[row];
        }
        double loss = 0;
        int rv = wkr_model_accumulate(t->m, t->xb, t->yb, (int)mn, &loss,
                                      k + 1 == K ? grad_ready : NULL, p);
        if (rv != 0) {
            return rv;
        }
        t->loss_sum += loss;
    }
    grad_ready(p, 0); /* whatever the callbacks did not cover, e.g. no samples */
    t->samples += n_step;
    t->compute_s += ps_clock_now() - t0;
    return p->rv;
}

static int run_step(trainer_t *t, uint64_t s)
{
    const ps_layout_t *l = wkr_model_layout(t->m);
    push_ctx_t p = {.ps = t->ps,
                    .grads = wkr_model_grads(t->m),
                    .layout = l,
                    .done_from = l->total,
                    .inject_nan = t->cfg->nan_step > 0 && (uint64_t)t->cfg->nan_step == s + 1};
    int rv;
    if (t->cfg->delay_ms > 0) {
        usleep((useconds_t)t->cfg->delay_ms * 1000u);
    }
    /* The last step's ps_pull waited for its sends: the gradient is ours. */
    wkr_model_zero_grads(t->m);
    int64_t t0 = ps_trace_on() ? ps_trace_now() : 0;
    if ((rv = compute_step(t, s % t->plan->steps_per_epoch, &p)) != 0) {
        return rv;
    }
    ps_trace_event("compute + push", t0, (int64_t)s + 1);
    t0 = ps_trace_on() ? ps_trace_now() : 0;
    double compute_end = ps_clock_now();
    rv = ps_pull(t->ps);
    ps_trace_event("pull wait", t0, (int64_t)s + 1);
    /* Communication runs from the first chunk pushed to the last weights
     * back; what ran before compute ended was hidden behind backward. */
    double sent = p.first_push > 0 ? p.first_push : compute_end, done = ps_clock_now();
    t->wait_s += done - compute_end;
    t->comm_s += done - sent;
    t->hidden_s += compute_end - sent;
    t->push_s += p.push_s;
    return rv;
}

/* One epoch's figures on their way through the (non-blocking) sum over
 * the workers; rank 0 reports them when the sum is complete. */
typedef struct {
    wkr_epoch_rec_t e;
    double v[9]; /* loss sum, samples, test loss sum, correct, test n, compute s,
                  * comm s, hidden comm s, push s */
    double epoch_s;
    ps_reduce_t *req;
} pending_t;

/* Evaluate and start summing the epoch's figures over the workers. */
static int start_epoch(trainer_t *t, const wkr_dataset_t *test, pending_t *p)
{
    double *v = p->v;
    v[0] = t->loss_sum;
    v[1] = (double)t->samples;
    v[5] = t->compute_s;
    v[6] = t->comm_s;
    v[7] = t->hidden_s;
    v[8] = t->push_s;
    if (test) {
        int64_t correct = 0, t0 = ps_trace_on() ? ps_trace_now() : 0;
        int rv = wkr_model_evaluate(t->m, test->x, test->y, test->n, &v[2], &correct);
        ps_trace_event("evaluate", t0, -1);
        if (rv != 0) {
            return rv;
        }
        v[3] = (double)correct;
        v[4] = (double)test->n;
    } else if (t->has_eval) {
        memcpy(&v[2], t->eval, sizeof t->eval);
    }
    return ps_reduce_sum_start(t->ps, v, 9, &p->req);
}

/* The sum is complete: rank 0 adds the servers' counters and reports. */
static int finish_epoch(trainer_t *t, int has_test, wkr_report_t *r, pending_t *p)
{
    wkr_epoch_rec_t *e = &p->e;
    const double *v = p->v;
    ps_stats_t st;
    if (!r) {
        return 0;
    }
    int rv = ps_stats(t->ps, &st);
    if (rv == 0) {
        rv = ps_lr(t->ps, e->step - 1, &e->lr);
    }
    if (rv != 0) {
        return rv;
    }
    e->has_staleness = 1;
    e->staleness_max = (double)st.staleness_max;
    e->staleness_mean = st.applied ? (double)st.staleness_sum / (double)st.applied : 0;
    e->server_apply_s = st.apply_s - t->apply_seen;
    t->apply_seen = st.apply_s;
    e->train_loss = v[1] > 0 ? v[0] / v[1] : 0;
    e->has_test = has_test && v[4] > 0;
    e->test_loss = e->has_test ? v[2] / v[4] : 0;
    e->test_acc = e->has_test ? v[3] / v[4] : 0;
    e->samples_per_s = p->epoch_s > 0 ? v[1] / p->epoch_s : 0;
    e->compute_s = v[5] / t->cfg->nworkers;
    e->comm_s = v[6] / t->cfg->nworkers;
    e->comm_hidden = v[6] > 0 ? v[7] / v[6] : 0;
    e->push_s = v[8] / t->cfg->nworkers;
    return wkr_report_epoch(r, e);
}

/* Report, in order, every epoch whose sum has completed (all of them when
 * `wait`). */
static int drain_epochs(trainer_t *t, int has_test, wkr_report_t *r, pending_t *p, int *next,
                        int started, int wait)
{
    while (*next < started) {
        int done = 0, rv;
        if (wait) {
            rv = ps_wait_reduced(&p[*next].req);
            done = 1;
        } else {
            rv = ps_test_reduced(&p[*next].req, &done);
        }
        if (rv != 0) {
            return rv;
        }
        if (!done) {
            return 0;
        }
        if ((rv = finish_epoch(t, has_test, r, &p[*next])) != 0) {
            return rv;
        }
        (*next)++;
    }
    return 0;
}

static int trainer_init(trainer_t *t, const wkr_train_cfg_t *cfg, const ps_planinfo_t *plan,
                        ps_t *ps, wkr_model_t *m, const wkr_dataset_t *train)
{
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->plan = plan;
    t->ps = ps;
    t->m = m;
    t->train = train;
    t->order = malloc((train->n ? train->n : 1) * sizeof *t->order);
    t->xb = malloc((size_t)cfg->batch * (size_t)train->features * sizeof(float));
    t->yb = malloc((size_t)cfg->batch * sizeof(float));
    if (!t->order || !t->xb || !t->yb) {
        ps_error_set("no memory for the trainer's batch buffers");
        return PS_ENOMEM;
    }
    return 0;
}

static void trainer_fini(trainer_t *t)
{
    free(t->order);
    free(t->xb);
    free(t->yb);
}

/* Close epoch `epoch` (0-based) ending at step s: start its reduction. */
static int close_epoch(trainer_t *t, const wkr_dataset_t *test, pending_t *p, uint64_t epoch,
                       uint64_t s, double start, double *epoch_start)
{
    double tnow = ps_clock_now();
    p->e = (wkr_epoch_rec_t){
        .epoch = (int)epoch + 1, .step = s + 1, .elapsed_s = tnow - start, .wait_s = t->wait_s};
    p->epoch_s = tnow - *epoch_start;
    int rv = start_epoch(t, test, p);
    t->loss_sum = 0;
    t->samples = 0;
    t->compute_s = 0;
    t->wait_s = 0;
    t->comm_s = 0;
    t->hidden_s = 0;
    t->push_s = 0;
    *epoch_start = ps_clock_now();
    return rv;
}

int wkr_train_run(const wkr_train_cfg_t *cfg, const ps_planinfo_t *plan, ps_t *ps, wkr_model_t *m,
                  const wkr_dataset_t *train, const wkr_dataset_t *test, wkr_report_t *r)
{
    trainer_t t;
    ps_info_t info = {0};
    int rv = trainer_init(&t, cfg, plan, ps, m, train);
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
    /* A resumed run starts mid-plan with the same data order (the order
     * of an epoch depends only on the seed, the epoch and the rank). */
    for (uint64_t s = info.step; rv == 0 && s < plan->total_steps; s++) {
        uint64_t j = s % spe, epoch = s / spe;
        if (j == 0 || s == info.step) {
            epoch_order(&t, epoch);
        }
        if ((rv = run_step(&t, s)) != 0) {
            break;
        }
        if (r) {
            wkr_report_step(r, (int)epoch + 1, epochs, j + 1, spe,
                            t.samples ? t.loss_sum / (double)t.samples : 0);
        }
        if (j + 1 == spe || s + 1 == plan->total_steps) {
            rv = close_epoch(&t, test, &pend[started], epoch, s, start, &epoch_start);
            pend[started].e.epochs = epochs;
            started++;
        }
        if (rv == 0) {
            rv = drain_epochs(&t, test != NULL, r, pend, &reported, started, 0);
        }
    }
    /* Only rank 0 still talks to the servers (STATS) while the last sums
     * complete; the others are done now and say so at once, so that in
     * async mode the servers need not wait for a slower worker's epochs. */
    if (rv == 0 && cfg->rank != 0) {
        rv = ps_done(ps);
    }
    if (rv == 0) {
        rv = drain_epochs(&t, test != NULL, r, pend, &reported, started, 1);
    }
    if (rv == 0 || reported == started) {
        free(pend); /* otherwise sums in flight still write into it */
    }
    trainer_fini(&t);
    return rv;
}

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

/* The shard's order in `epoch`: the dense trainer's rule (epoch_order). */
static void sparse_order(sparse_t *sp, uint64_t epoch)
{
    for (size_t i = 0; i < sp->train->n; i++) {
        sp->order[i] = (uint32_t)i;
    }
    if (sp->t.cfg->shuffle) {
        ps_rng_t rng;
        ps_rng_seed(&rng, sp->t.cfg->seed, (epoch << 20) ^ (uint64_t)sp->t.cfg->rank ^ 0x5bd1e995u);
        ps_rng_shuffle(&rng, sp->order, sp->train->n);
    }
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
    size_t n = clamp_count(sp->train->n, lo, per);
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
        size_t n = clamp_count(d->n, lo, SPARSE_EVAL_BATCH);
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
        rv = close_epoch(&sp->t, NULL, &p[*started], s / spe, s, start, epoch_start);
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
            rv = drain_epochs(&sp.t, test != NULL, r, pend, &reported, started, 0);
        }
    }
    if (rv == 0 && cfg->rank != 0) {
        rv = ps_done(ps); /* as wkr_train_run: the others need not wait for our sums */
    }
    if (rv == 0) {
        rv = drain_epochs(&sp.t, test != NULL, r, pend, &reported, started, 1);
    }
    if (rv == 0 || reported == started) {
        free(pend); /* otherwise sums in flight still write into it */
    }
    sparse_fini(&sp);
    return rv;
}
