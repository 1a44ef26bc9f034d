/*
 * libpsclient (ps.h): errors and the handle's state, tensor lookup, info,
 * stats and save.  The rest of the library is in ps_start.c, ps_model.c,
 * ps_step.c and ps_reduce.c (see ps_api.h).
 */
/*
 * ps.h repeats ps_err.h's error codes (it is installed alone).  Read ps.h's
 * copy first under other names, then ps_err.h's, and make the compiler
 * check that every code agrees.
 */
#define PS_OK PSH_OK
#define PS_EINVAL PSH_EINVAL
#define PS_ENOMEM PSH_ENOMEM
#define PS_EIO PSH_EIO
#define PS_EFORMAT PSH_EFORMAT
#define PS_EPROTO PSH_EPROTO
#define PS_ERANGE PSH_ERANGE
#define PS_ETIMEDOUT PSH_ETIMEDOUT
#define PS_ENOENT PSH_ENOENT
#define PS_EMPI PSH_EMPI
#define PS_EZMQ PSH_EZMQ
#define PS_ESTATE PSH_ESTATE
#define PS_EAGAIN PSH_EAGAIN
#define PS_EINTR PSH_EINTR
#include "ps.h"
#undef PS_H_ERROR_CODES
#undef PS_OK
#undef PS_EINVAL
#undef PS_ENOMEM
#undef PS_EIO
#undef PS_EFORMAT
#undef PS_EPROTO
#undef PS_ERANGE
#undef PS_ETIMEDOUT
#undef PS_ENOENT
#undef PS_EMPI
#undef PS_EZMQ
#undef PS_ESTATE
#undef PS_EAGAIN
#undef PS_EINTR

#include "ps_api.h"

#define SAME_CODE(x) ((int)PSH_##x == (int)PS_##x)
_Static_assert(SAME_CODE(OK) && SAME_CODE(EINVAL) && SAME_CODE(ENOMEM) && SAME_CODE(EIO) &&
                   SAME_CODE(EFORMAT) && SAME_CODE(EPROTO) && SAME_CODE(ERANGE) &&
                   SAME_CODE(ETIMEDOUT) && SAME_CODE(ENOENT) && SAME_CODE(EMPI) &&
                   SAME_CODE(EZMQ) && SAME_CODE(ESTATE) && SAME_CODE(EAGAIN) && SAME_CODE(EINTR),
               "the error codes of ps.h and ps_err.h differ");
#undef SAME_CODE

#include "ps_opts.h"
#include "ps_safetensors.h"

#include <stdlib.h>
#include <string.h>

const char *ps_last_error(void)
{
    return ps_error_msg();
}

const char *ps_version(void)
{
    return PS_VERSION_STRING;
}

int ps_api_no_handle(const char *call)
{
    ps_error_set("%s: the ps_t handle is NULL", call);
    return PS_EINVAL;
}

/* A start-up agreement (common/ps_startup.h); on the ranks that did not
 * fail, the failing rank's message is the error (ps_boot_agree). */
int ps_api_agree(ps_t *ps, ps_step_t step, int rc)
{
    return ps_boot_agree(&ps->boot, step, rc);
}

/* A start-up agreement failed: from now on only ps_finalize. */
int ps_api_startup_failed(ps_t *ps, int rv)
{
    ps->state = ST_LEFT;
    ps->rc = rv;
    return rv;
}

/* The data plane failed: ps_finalize will end the job with this. */
int ps_api_break(ps_t *ps, int rv)
{
    snprintf(ps->why, sizeof ps->why, "%s", ps_error_msg());
    ps->state = ST_BROKEN;
    ps->rc = rv;
    return rv;
}

void ps_api_fail(ps_t *ps, int rc)
{
    if (rc != 0 && ps->rc == 0) {
        ps->rc = rc;
        snprintf(ps->why, sizeof ps->why, "%s", ps_error_msg());
    }
}

int ps_info(const ps_t *ps, ps_info_t *out)
{
    if (!ps || !out) {
        return ps_api_no_handle("ps_info");
    }
    memset(out, 0, sizeof *out);
    out->rank = ps->boot.rank;
    out->nworkers = ps->boot.nworkers;
    out->nservers = ps->boot.nservers;
    out->mode = ps_mode_name(ps->srv.mode);
    out->staleness = ps->srv.staleness;
    out->lr = ps->srv.lr;
    out->step = ps->step;
    out->world_rank = ps->boot.world_rank;
    out->world_size = ps->boot.world_size;
    return 0;
}

int ps_fail(ps_t *ps, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (!ps || !fmt) {
        return ps_api_no_handle("ps_fail");
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ps_error_set("%s", msg);
    if (ps->state == ST_STARTED) {
        ps_api_break(ps, PS_EINVAL);
    } else if (ps->state != ST_LEFT && ps->state != ST_BROKEN) {
        ps_api_fail(ps, PS_EINVAL);
    }
    return 0;
}

/* Whether some tensor uses the library's gradient array. */
int ps_api_library_grads(const ps_t *ps)
{
    for (int t = 0; t < ps->layout.n; t++) {
        if (!ps->bound_g[t]) {
            return 1;
        }
    }
    return 0;
}

float *ps_api_weights_of(const ps_t *ps, int t)
{
    return ps->bound_w[t] ? ps->bound_w[t] : ps->params + ps->layout.t[t].offset;
}

float *ps_api_grads_of(const ps_t *ps, int t)
{
    return ps->bound_g[t] ? ps->bound_g[t] : ps->grads + ps->layout.t[t].offset;
}

/* The data plane is open (and nothing failed on it). */
int ps_api_data_plane_open(const ps_t *ps, const char *call)
{
    if (!ps) {
        return ps_api_no_handle(call);
    }
    if (ps->state == ST_STARTED) {
        return 0;
    }
    if (ps->state == ST_BROKEN) {
        ps_error_set("%s: an earlier call failed: %s", call, ps->why);
    } else {
        ps_error_set("%s: only between ps_start and ps_finalize", call);
    }
    return PS_ESTATE;
}

/* The data plane is open and this worker has not said it is done. */
int ps_api_servers_open(const ps_t *ps, const char *call)
{
    int rv = ps_api_data_plane_open(ps, call);
    if (rv == 0 && ps->shut) {
        ps_error_set("%s: this worker is done (ps_done)", call);
        rv = PS_ESTATE;
    }
    return rv;
}

/* After ps_start: tensor `name`'s index into *t. */
int ps_api_find_tensor(const ps_t *ps, const char *call, const char *name, int *t)
{
    int rv = ps_api_data_plane_open(ps, call);
    if (rv != 0) {
        return rv;
    }
    if (!name || (*t = ps_layout_find(&ps->layout, name)) < 0) {
        ps_error_set("%s: no tensor '%.80s'", call, name ? name : "(null)");
        return PS_ENOENT;
    }
    return 0;
}

int ps_tensor(ps_t *ps, const char *name, float **weights, float **grads, size_t *numel)
{
    int t, rv = ps_api_find_tensor(ps, "ps_tensor", name, &t);
    if (rv != 0) {
        return rv;
    }
    if (weights) {
        *weights = ps_api_weights_of(ps, t);
    }
    if (grads) {
        *grads = ps_api_grads_of(ps, t);
    }
    if (numel) {
        *numel = ps->layout.t[t].numel;
    }
    return 0;
}

int ps_lr(const ps_t *ps, uint64_t step, double *lr)
{
    int rv = ps_api_data_plane_open(ps, "ps_lr");
    if (rv == 0 && !lr) {
        ps_error_set("ps_lr: lr is NULL");
        rv = PS_EINVAL;
    }
    if (rv == 0) {
        *lr = ps_sched_lr(&ps->srv.sched, ps->srv.lr, step, ps->plan.steps_per_epoch,
                          ps->plan.total_steps);
    }
    return rv;
}

int ps_stats(ps_t *ps, ps_stats_t *out)
{
    ps_wire_stats_t st;
    int rv = ps_api_servers_open(ps, "ps_stats");
    if (rv == 0 && (!out || ps->open)) {
        /* Inside a step, pull replies are on their way and would be lost. */
        ps_error_set("ps_stats: %s", out ? "not inside a step (after ps_pull)" : "out is NULL");
        rv = out ? PS_ESTATE : PS_EINVAL;
    }
    if (rv != 0) {
        return rv;
    }
    if ((rv = wkr_client_server_stats(ps->client, &st)) != 0) {
        return ps_api_break(ps, rv);
    }
    *out = (ps_stats_t){.staleness_max = st.staleness_max,
                        .staleness_sum = st.staleness_sum,
                        .applied = st.applied,
                        .rejected = st.rejected,
                        .version = st.version,
                        .apply_s = (double)st.apply_us / 1e6};
    return 0;
}

int ps_save(ps_t *ps, const char *path)
{
    char step[32];
    const char *meta[2] = {"step", step};
    int rv = ps_api_data_plane_open(ps, "ps_save");
    if (rv == 0 && !path) {
        ps_error_set("ps_save: path is NULL");
        rv = PS_EINVAL;
    }
    if (rv != 0) {
        return rv;
    }
    ps_st_tensor_t *t = malloc((size_t)ps->layout.n * sizeof *t);
    if (!t) {
        ps_error_set("ps_save: no memory for %d tensors", ps->layout.n);
        return PS_ENOMEM;
    }
    for (int i = 0; i < ps->layout.n; i++) {
        const ps_tensor_t *x = &ps->layout.t[i];
        t[i] = (ps_st_tensor_t){x->name, x->ndim, x->dims, ps_api_weights_of(ps, i)};
    }
    snprintf(step, sizeof step, "%llu", (unsigned long long)ps->step);
    rv = ps_st_write(path, t, ps->layout.n, meta, 1);
    free(t);
    return rv;
}
