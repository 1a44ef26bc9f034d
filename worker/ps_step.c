/*
 * libpsclient: the data plane of a step: pushes and pulls, per tensor and
 * whole-model, their handles and waits.
 */
#include "ps_api.h"

#include "ps_finite.h"

#include <string.h>

/* The weights for the next step are in every array: the step is over. */
static int end_step(ps_t *ps)
{
    int rv = wkr_client_finish_step(ps->client);
    if (rv != 0) {
        return ps_api_break(ps, rv);
    }
    ps->step++;
    ps->open = ps->pushed = 0;
    return 0;
}

int ps_api_settle_step(ps_t *ps)
{
    return ps->pushed && ps->npulls == ps->layout.n ? end_step(ps) : 0;
}

/* A push may start or continue this step with these samples. */
static int pushable(ps_t *ps, const char *call, uint32_t samples)
{
    int rv = ps_api_servers_open(ps, call);
    if (rv == 0 && ps->pushed && ps->npulls == ps->layout.n) {
        rv = end_step(ps); /* every tensor pulled: wait for them, then begin the next */
    }
    if (rv != 0) {
        return rv;
    }
    if (ps->pushed) {
        ps_error_set("%s: step %llu is pushed already; ps_pull first", call,
                     (unsigned long long)ps->step);
        return PS_ESTATE;
    }
    if (ps->open && samples != ps->samples) {
        ps_error_set("%s: %u samples, but this step's earlier push said %u", call, samples,
                     ps->samples);
        return PS_EINVAL;
    }
    if (!ps->open) {
        wkr_client_begin_step(ps->client, ps->step);
        ps->open = 1;
        ps->samples = samples;
        ps->npushed = ps->npulls = 0;
        memset(ps->tensor_pushed, 0, sizeof ps->tensor_pushed);
    }
    return 0;
}

/* Before tensor t's gradient may leave: a push of no samples carries no
 * gradient, but the servers still refuse a non-finite one, so its values
 * are ours to set; under --on-nonfinite abort a NaN or Inf ends here. */
static int check_gradient(ps_t *ps, int t)
{
    const ps_tensor_t *x = &ps->layout.t[t];
    float *g = ps_api_grads_of(ps, t);
    if (ps->samples == 0) {
        memset(g, 0, x->numel * sizeof *g);
    }
    if (ps->srv.nonfinite_skip || ps_first_nonfinite(g, 0, x->numel) == x->numel) {
        return 0; /* skip: the whole gradient is checked once it is final */
    }
    ps_error_set("non-finite gradient on worker %d in %s at step %llu (--on-nonfinite abort)",
                 ps->boot.rank, x->name, (unsigned long long)ps->step + 1);
    return ps_api_break(ps, PS_ERANGE);
}

/* --on-nonfinite skip: every tensor is final; a non-finite gradient drops
 * the step everywhere. */
static int push_held(ps_t *ps, int skip)
{
    int rv = 0;
    if (skip) {
        ps_log_info("non-finite gradient in a table at step %llu: the step is skipped",
                    (unsigned long long)ps->step + 1);
        wkr_client_set_skip(ps->client, 1);
    }
    for (int t = 0; t < ps->layout.n && !skip; t++) {
        size_t n = ps->layout.t[t].numel;
        if (ps_first_nonfinite(ps_api_grads_of(ps, t), 0, n) < n) {
            ps_log_info("non-finite gradient at step %llu: the step is skipped",
                        (unsigned long long)ps->step + 1);
            wkr_client_set_skip(ps->client, 1);
            skip = 1; /* the tables' pushes of the step are dropped too */
        }
    }
    for (int t = ps->layout.n; rv == 0 && t-- > 0;) {
        rv = wkr_client_push_tensor(ps->client, t, ps->samples);
    }
    if (rv == 0) {
        rv = ps_rows_flush(ps, skip);
    }
    return rv ? ps_api_break(ps, rv) : 0;
}

/* Tensor t is final: hand it to the client (held under skip). */
static int send_tensor(ps_t *ps, int t)
{
    int rv = 0;
    ps->tensor_pushed[t] = 1;
    ps->npushed++;
    if (!ps->srv.nonfinite_skip && (rv = wkr_client_push_tensor(ps->client, t, ps->samples))) {
        return ps_api_break(ps, rv);
    }
    if (ps->npushed == ps->layout.n) {
        int skip = 0;
        if ((rv = ps_rows_step_check(ps, &skip)) != 0) {
            return ps_api_break(ps, rv); /* the servers would wait for the table for ever */
        }
        ps->pushed = 1;
        rv = ps->srv.nonfinite_skip ? push_held(ps, skip) : 0;
    }
    return rv;
}

/* Push the tensors from `first` on not pushed yet: all are checked before
 * any leaves (a NaN is named in the first tensor that has one), then sent
 * last first. */
static int push_rest(ps_t *ps, int first)
{
    int rv = 0, n = ps->layout.n;
    for (int t = first; rv == 0 && t < n; t++) {
        rv = ps->tensor_pushed[t] ? 0 : check_gradient(ps, t);
    }
    for (int t = n; rv == 0 && t-- > first;) {
        rv = ps->tensor_pushed[t] ? 0 : send_tensor(ps, t);
    }
    return rv;
}

static ps_push_t *issue_push(ps_t *ps, ps_push_t *h)
{
    h->step = ps->step;
    h->active = 1;
    return h;
}

int ps_push_tensor(ps_t *ps, const char *name, uint32_t samples, ps_push_t **handle)
{
    int t, rv = ps_api_find_tensor(ps, "ps_push_tensor", name, &t);
    if (handle) {
        *handle = NULL;
    }
    if (rv == 0) {
        rv = pushable(ps, "ps_push_tensor", samples);
    }
    if (rv == 0 && ps->tensor_pushed[t]) {
        ps_error_set("ps_push_tensor: '%s' is pushed in step %llu already", name,
                     (unsigned long long)ps->step);
        rv = PS_ESTATE;
    }
    if (rv == 0 && (rv = check_gradient(ps, t)) == 0) {
        rv = send_tensor(ps, t);
    }
    if (rv == 0 && handle) {
        *handle = issue_push(ps, &ps->pushes[t]);
    }
    return rv;
}

int ps_push(ps_t *ps, uint32_t samples, ps_push_t **handle)
{
    int rv = pushable(ps, "ps_push", samples);
    if (handle) {
        *handle = NULL;
    }
    if (rv == 0 && (rv = push_rest(ps, 0)) == 0 && handle) {
        *handle = issue_push(ps, &ps->step_push);
    }
    return rv;
}

int ps_push_from(ps_t *ps, const char *tensor, uint32_t samples)
{
    int t, rv = ps_api_find_tensor(ps, "ps_push_from", tensor, &t);
    if (rv == 0) {
        rv = pushable(ps, "ps_push_from", samples);
    }
    return rv ? rv : push_rest(ps, t);
}

/* Tensor t's chunks have all left; else PS_ESTATE saying what holds them. */
static int tensor_left(const ps_t *ps, const char *call, int t)
{
    const char *name = ps->layout.t[t].name;
    int waiting = -1;
    if (ps->srv.nonfinite_skip && !ps->pushed) {
        ps_error_set("%s: '%s' is held until every tensor is pushed (the servers' "
                     "--on-nonfinite skip)",
                     call, name);
        return PS_ESTATE;
    }
    if (!wkr_client_tensor_pushed(ps->client, t, &waiting)) {
        ps_error_set("%s: '%s' shares a chunk with '%s', which is not pushed yet", call, name,
                     waiting >= 0 ? ps->layout.t[waiting].name : "?");
        return PS_ESTATE;
    }
    return 0;
}

/* *current: the handle is of this step and may still be busy. */
static int handle_state(ps_t *ps, int active, uint64_t step, const char *call, int *current)
{
    *current = 0;
    if (!active || step < ps->step) {
        return 0; /* an ended step waited for everything */
    }
    int rv = ps_api_data_plane_open(ps, call);
    *current = rv == 0;
    return rv;
}

static int sent_state(ps_push_t *h, const char *call, int *current)
{
    if (!h) {
        ps_error_set("%s: the handle is NULL", call);
        return PS_EINVAL;
    }
    int rv = handle_state(h->ps, h->active, h->step, call, current);
    if (rv == 0 && *current && h->tensor >= 0) {
        rv = tensor_left(h->ps, call, h->tensor);
    }
    return rv;
}

int ps_wait_sent(ps_push_t *h)
{
    int current, rv = sent_state(h, "ps_wait_sent", &current);
    if (rv == 0 && current) {
        wkr_client_wait_sends(h->ps->client);
        h->active = 0;
    }
    return rv;
}

int ps_test_sent(ps_push_t *h, int *done)
{
    int current = 0, rv = done ? sent_state(h, "ps_test_sent", &current) : PS_EINVAL;
    if (!done) {
        ps_error_set("ps_test_sent: done is NULL");
        return rv;
    }
    *done = rv == 0 && (!current || wkr_client_sends_done(h->ps->client));
    return rv;
}

int ps_wait(ps_push_t *h)
{
    return ps_wait_sent(h);
}

int ps_pull_tensor(ps_t *ps, const char *name, ps_pull_t **handle)
{
    int t, rv = ps_api_find_tensor(ps, "ps_pull_tensor", name, &t);
    if (handle) {
        *handle = NULL;
    }
    if (rv != 0) {
        return rv;
    }
    if (!ps->open || !ps->tensor_pushed[t]) {
        ps_error_set("ps_pull_tensor: push '%s' in step %llu first", name,
                     (unsigned long long)ps->step);
        return PS_ESTATE;
    }
    if ((rv = tensor_left(ps, "ps_pull_tensor", t)) != 0) {
        return rv;
    }
    ps_pull_t *h = &ps->pulls[t];
    if (!(h->active && h->step == ps->step)) {
        if ((rv = wkr_client_want(ps->client, t, ps->step + 1)) != 0) {
            return ps_api_break(ps, rv);
        }
        h->active = 1;
        h->step = ps->step;
        ps->npulls++;
    }
    if (handle) {
        *handle = h;
    }
    return 0;
}

/* Every tensor pulled and here: the step ends without a ps_pull. */
static int end_if_pulled(ps_t *ps)
{
    if (ps->pushed && ps->npulls == ps->layout.n &&
        wkr_client_tensors_pulled(ps->client) == ps->layout.n) {
        return end_step(ps);
    }
    return 0;
}

static int pulled_state(ps_pull_t *h, const char *call, int *current)
{
    if (!h) {
        ps_error_set("%s: the handle is NULL", call);
        return PS_EINVAL;
    }
    return handle_state(h->ps, h->active, h->step, call, current);
}

int ps_wait_pulled(ps_pull_t *h)
{
    int current, rv = pulled_state(h, "ps_wait_pulled", &current);
    if (rv != 0 || !current) {
        return rv;
    }
    if ((rv = wkr_client_wait_tensor(h->ps->client, h->tensor)) != 0) {
        return ps_api_break(h->ps, rv);
    }
    return end_if_pulled(h->ps);
}

int ps_test_pulled(ps_pull_t *h, int *done)
{
    int current = 0, rv = done ? pulled_state(h, "ps_test_pulled", &current) : PS_EINVAL;
    if (!done) {
        ps_error_set("ps_test_pulled: done is NULL");
        return rv;
    }
    *done = rv == 0 && !current;
    if (rv != 0 || !current) {
        return rv;
    }
    if ((rv = wkr_client_poll(h->ps->client)) != 0) {
        return ps_api_break(h->ps, rv);
    }
    *done = wkr_client_tensor_pulled(h->ps->client, h->tensor);
    return *done ? end_if_pulled(h->ps) : 0;
}

int ps_pull(ps_t *ps)
{
    int rv = ps_api_servers_open(ps, "ps_pull");
    if (rv != 0) {
        return rv;
    }
    if (!ps->pushed) {
        ps_error_set("ps_pull: step %llu is not pushed yet (ps_push first)",
                     (unsigned long long)ps->step);
        return PS_ESTATE;
    }
    if ((rv = wkr_client_pull(ps->client, ps->step + 1)) != 0) {
        return ps_api_break(ps, rv);
    }
    return end_step(ps);
}

int ps_step(ps_t *ps, uint32_t samples)
{
    int rv = ps_push(ps, samples, NULL);
    return rv ? rv : ps_pull(ps);
}
