#include "wkr_train.h"
#include "wkr_train_int.h"

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

size_t wkr_train_clamp(size_t have, size_t from, size_t want)
{
    return from >= have ? 0 : (have - from < want ? have - from : want);
}

void wkr_train_batch(const wkr_train_cfg_t *cfg, size_t n, uint64_t j, size_t k, size_t *first,
                     size_t *count)
{
    size_t B = (size_t)cfg->batch, K = (size_t)cfg->accumulate;
    *first = (size_t)j * K * B + k * B;
    *count = wkr_train_clamp(n, *first, B);
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

void wkr_train_order(const wkr_train_cfg_t *cfg, uint32_t *order, size_t n, uint64_t epoch)
{
    for (size_t i = 0; i < n; i++) {
        order[i] = (uint32_t)i;
    }
    if (cfg->shuffle) {
        ps_rng_t rng;
        ps_rng_seed(&rng, cfg->seed, (epoch << 20) ^ (uint64_t)cfg->rank ^ 0x5bd1e995u);
        ps_rng_shuffle(&rng, order, n);
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
int wkr_train_drain(trainer_t *t, int has_test, wkr_report_t *r, pending_t *p, int *next,
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
int wkr_train_close_epoch(trainer_t *t, const wkr_dataset_t *test, pending_t *p, uint64_t epoch,
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
            wkr_train_order(cfg, t.order, train->n, epoch);
        }
        if ((rv = run_step(&t, s)) != 0) {
            break;
        }
        if (r) {
            wkr_report_step(r, (int)epoch + 1, epochs, j + 1, spe,
                            t.samples ? t.loss_sum / (double)t.samples : 0);
        }
        if (j + 1 == spe || s + 1 == plan->total_steps) {
            rv = wkr_train_close_epoch(&t, test, &pend[started], epoch, s, start, &epoch_start);
            pend[started].e.epochs = epochs;
            started++;
        }
        if (rv == 0) {
            rv = wkr_train_drain(&t, test != NULL, r, pend, &reported, started, 0);
        }
    }
    /* Only rank 0 still talks to the servers (STATS) while the last sums
     * complete; the others are done now and say so at once, so that in
     * async mode the servers need not wait for a slower worker's epochs. */
    if (rv == 0 && cfg->rank != 0) {
        rv = ps_done(ps);
    }
    if (rv == 0) {
        rv = wkr_train_drain(&t, test != NULL, r, pend, &reported, started, 1);
    }
    if (rv == 0 || reported == started) {
        free(pend); /* otherwise sums in flight still write into it */
    }
    trainer_fini(&t);
    return rv;
}
