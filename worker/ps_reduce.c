/*
 * libpsclient: element-wise sums over the workers, blocking and not.
 */
#include "ps_api.h"

#include <stdlib.h>

int ps_reduce_sum(ps_t *ps, double *vals, int n)
{
    if (!ps) {
        return ps_api_no_handle("ps_reduce_sum");
    }
    if (n < 0 || (n > 0 && !vals)) {
        ps_error_set("ps_reduce_sum: need n >= 0 values");
        return PS_EINVAL;
    }
    if (ps->state != ST_JOINED && ps->state != ST_STARTED) {
        ps_error_set("ps_reduce_sum: only after ps_init, before ps_finalize, on a working handle");
        return PS_ESTATE;
    }
    int rv = n ? ps_boot_workers_sum(&ps->boot, vals, n) : 0;
    return rv && ps->state == ST_STARTED ? ps_api_break(ps, rv) : rv;
}

int ps_reduce_sum_start(ps_t *ps, double *vals, int n, ps_reduce_t **req)
{
    if (!ps || !req) {
        return ps_api_no_handle("ps_reduce_sum_start");
    }
    *req = NULL;
    if (n < 0 || (n > 0 && !vals)) {
        ps_error_set("ps_reduce_sum_start: need n >= 0 values");
        return PS_EINVAL;
    }
    if (ps->state != ST_JOINED && ps->state != ST_STARTED) {
        ps_error_set("ps_reduce_sum_start: only after ps_init, before ps_finalize, on a working "
                     "handle");
        return PS_ESTATE;
    }
    ps_reduce_t *r = calloc(1, sizeof *r);
    if (!r) {
        ps_error_set("ps_reduce_sum_start: no memory");
        return PS_ENOMEM;
    }
    int rv = ps_boot_workers_isum(&ps->boot, vals, n, &r->req);
    if (rv != 0) {
        free(r);
        return ps->state == ST_STARTED ? ps_api_break(ps, rv) : rv;
    }
    r->next = ps->reductions;
    r->list = &ps->reductions;
    if (r->next) {
        r->next->list = &r->next;
    }
    ps->reductions = r;
    *req = r;
    return 0;
}

/* Unlink a completed reduction from its ps_t's list and free it. */
static void reduce_free(ps_reduce_t **rp)
{
    ps_reduce_t *r = *rp;
    *r->list = r->next;
    if (r->next) {
        r->next->list = r->list;
    }
    free(r);
    *rp = NULL;
}

int ps_wait_reduced(ps_reduce_t **rp)
{
    if (!rp || !*rp) {
        ps_error_set("ps_wait_reduced: the request is NULL");
        return PS_EINVAL;
    }
    int rv = ps_boot_req_wait(&(*rp)->req);
    reduce_free(rp);
    return rv;
}

int ps_test_reduced(ps_reduce_t **rp, int *done)
{
    if (!rp || !*rp || !done) {
        ps_error_set("ps_test_reduced: the request or done is NULL");
        return PS_EINVAL;
    }
    int rv = ps_boot_req_test(&(*rp)->req, done);
    if (rv != 0 || *done) {
        reduce_free(rp);
        *done = 1;
    }
    return rv;
}

/* ps_finalize: the reductions the caller left in flight. */
int ps_api_complete_reductions(ps_t *ps)
{
    int rv = 0;
    while (ps->reductions) {
        ps_reduce_t *r = ps->reductions;
        int r2 = ps_boot_req_wait(&r->req);
        rv = rv ? rv : r2;
        reduce_free(&r);
    }
    return rv;
}
