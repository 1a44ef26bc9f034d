/*
 * libpsclient: the worker side of the start-up sequence (docs/protocol.md)
 * and the public data plane (ps.h) over wkr_client: declarations and bound
 * arrays, per-tensor and whole-step pushes and pulls with their handles,
 * reductions, and the end of the job.
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

#include "ps_api.h"

#define SAME_CODE(x) ((int)PSH_##x == (int)PS_##x)
_Static_assert(SAME_CODE(OK) && SAME_CODE(EINVAL) && SAME_CODE(ENOMEM) && SAME_CODE(EIO) &&
                   SAME_CODE(EFORMAT) && SAME_CODE(EPROTO) && SAME_CODE(ERANGE) &&
                   SAME_CODE(ETIMEDOUT) && SAME_CODE(ENOENT) && SAME_CODE(EMPI) &&
                   SAME_CODE(EZMQ) && SAME_CODE(ESTATE) && SAME_CODE(EAGAIN),
               "the error codes of ps.h and ps_err.h differ");
#undef SAME_CODE

#include "ps_finite.h"
#include "ps_opts.h"
#include "ps_rng.h"
#include "ps_safetensors.h"
#include "ps_sched.h"
#include "ps_transport.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXTRA_MAX 8

typedef enum {
    ST_BOOTED,  /* MPI is up; the first agreement is still to come */
    ST_JOINED,  /* ps_init done: declarations */
    ST_PLANNED, /* model and plan agreed; registration next */
    ST_STARTED, /* the data plane is open */
    ST_LEFT,    /* a start-up agreement failed: only ps_finalize */
    ST_BROKEN,  /* the data plane failed: ps_finalize ends the job */
} state_t;

/* A push or pull handle: one per tensor (the push of a whole step has
 * tensor -1), reused every step. */
struct ps_push {
    ps_t *ps;
    int tensor;
    uint64_t step; /* the step of its latest push */
    int active;
};

struct ps_pull {
    ps_t *ps;
    int tensor;
    uint64_t step;
    int active;
};

struct ps_reduce {
    ps_boot_req_t req;
    ps_reduce_t *next; /* the ps_t's list of reductions in flight */
    ps_reduce_t **list;
};

struct ps {
    ps_boot_t boot;
    state_t state;
    int rc;        /* a failure remembered for the next agreement, or why we left */
    char why[512]; /* its message (the thread-local detail may be gone by then) */
    ps_options_t opt;
    ps_tp_keypair_t keys;
    ps_srvinfo_t srv;
    ps_planinfo_t plan;
    int planned;
    ps_layout_t layout;    /* the one layout of this worker; the client borrows it */
    float *params, *grads; /* the library's arrays, layout order; params holds the
                              declared initial values until ps_start */
    float *bound_w[PS_MAX_TENSORS], *bound_g[PS_MAX_TENSORS]; /* ps_bind's, or NULL */
    uint64_t extra[EXTRA_MAX];
    int nextra;
    char *disagree; /* the caller's message for a mismatch */
    wkr_client_t *client;
    uint64_t step;    /* the step the next push belongs to */
    int open, pushed; /* this step: some tensor pushed / every tensor pushed */
    uint32_t samples;
    int npushed, npulls; /* tensors pushed / pulled with ps_pull_tensor this step */
    uint8_t tensor_pushed[PS_MAX_TENSORS];
    int shut; /* SHUTDOWN sent */
    ps_push_t step_push;
    ps_push_t pushes[PS_MAX_TENSORS];
    ps_pull_t pulls[PS_MAX_TENSORS];
    ps_reduce_t *reductions; /* in flight */
};

const char *ps_last_error(void)
{
    return ps_error_msg();
}

const char *ps_version(void)
{
    return PS_VERSION_STRING;
}

static int no_handle(const char *call)
{
    ps_error_set("%s: the ps_t handle is NULL", call);
    return PS_EINVAL;
}

/* A start-up agreement (common/ps_startup.h), with a message on the
 * ranks that did not fail. */
static int agree(ps_t *ps, ps_step_t step, int rc)
{
    int rv = ps_boot_agree(&ps->boot, step, rc);
    if (rv != 0 && rc == 0) {
        ps_error_set("another rank of the job failed to start (its message is above)");
    }
    return rv;
}

/* A start-up agreement failed: from now on only ps_finalize. */
static int startup_failed(ps_t *ps, int rv)
{
    ps->state = ST_LEFT;
    ps->rc = rv;
    return rv;
}

/* The data plane failed: ps_finalize will end the job with this. */
static int break_handle(ps_t *ps, int rv)
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

/* Every handle knows its ps_t and tensor once and for all. */
static void handles_init(ps_t *ps)
{
    ps->step_push = (ps_push_t){.ps = ps, .tensor = -1};
    for (int t = 0; t < PS_MAX_TENSORS; t++) {
        ps->pushes[t] = (ps_push_t){.ps = ps, .tensor = t};
        ps->pulls[t] = (ps_pull_t){.ps = ps, .tensor = t};
    }
}

int ps_api_boot_new(ps_t **out, int *argc, char ***argv, const ps_options_t *opt)
{
    if (!out) {
        return no_handle("ps_init");
    }
    *out = NULL;
    ps_t *ps = calloc(1, sizeof *ps);
    if (!ps) {
        ps_error_set("ps_init: no memory for the handle (%zu bytes)", sizeof *ps);
        return PS_ENOMEM;
    }
    /* Bad options are agreed on in ps_api_join; name and quiet count now. */
    ps_api_fail(ps, ps_api_options(opt, &ps->opt));
    ps_tp_tune_malloc();
    int rv = ps_boot_init(&ps->boot, argc, argv, 0);
    if (rv != 0) {
        free(ps); /* MPI is in an unknown state: no collective call is safe */
        return rv;
    }
    ps_log_set_name(ps->opt.name ? ps->opt.name : program_invocation_short_name, ps->boot.rank);
    ps->opt.name = NULL; /* not ours to keep */
    if (ps->opt.quiet) {
        ps_log_set_level(0);
    }
    handles_init(ps);
    *out = ps;
    return 0;
}

_Static_assert(PS_MAX_STREAMS == PS_TP_MAX_STREAMS, "ps.h and ps_transport.h disagree");

/* Checked, with the defaults filled in. */
static int check_options(ps_options_t *o)
{
    if (o->timeout_s < 0 || o->io_threads < 0 || o->io_threads > 64) {
        ps_error_set("ps_init: timeout_s must be >= 0 and io_threads 0 to 64 (0: default)");
        return PS_EINVAL;
    }
    if (o->streams < 0 || o->streams > PS_MAX_STREAMS) {
        ps_error_set("ps_init: streams %d: want 1 to %d (0: default)", o->streams,
                     PS_MAX_STREAMS);
        return PS_EINVAL;
    }
    if (o->compress < PS_COMPRESS_NONE || o->compress > PS_COMPRESS_BF16) {
        ps_error_set("ps_init: compress %d: want PS_COMPRESS_NONE, _FP16 or _BF16", o->compress);
        return PS_EINVAL;
    }
    o->timeout_s = o->timeout_s ? o->timeout_s : 300;
    o->io_threads = o->io_threads ? o->io_threads : PS_DEFAULT_IO_THREADS;
    o->streams = o->streams ? o->streams : PS_DEFAULT_STREAMS;
    return 0;
}

int ps_api_options(const ps_options_t *in, ps_options_t *out)
{
    const unsigned char *bytes = (const unsigned char *)in;
    memset(out, 0, sizeof *out);
    size_t n = in ? in->struct_size : sizeof *out;
    if (n < sizeof in->struct_size) {
        ps_error_set("ps_init: ps_options_t.struct_size is %zu: start from PS_OPTIONS_INIT", n);
        return PS_EINVAL;
    }
    if (in) {
        memcpy(out, in, n < sizeof *out ? n : sizeof *out);
    }
    out->struct_size = sizeof *out;
    /* A newer caller: what this library does not know must be unset. */
    for (size_t i = sizeof *out; i < n; i++) {
        if (bytes[i] != 0) {
            ps_error_set("ps_init: ps_options_t of %zu bytes sets a field libpsclient %s (%zu "
                         "bytes) does not know",
                         n, PS_VERSION_STRING, sizeof *out);
            return PS_EINVAL;
        }
    }
    return check_options(out);
}

/* The failure remembered for the next agreement, its message restored. */
static int remembered_failure(ps_t *ps)
{
    if (ps->rc != 0) {
        ps_error_set("%s", ps->why);
    }
    return ps->rc;
}

int ps_api_join(ps_t *ps, int local_rc)
{
    int rv = local_rc ? local_rc : remembered_failure(ps);
    if ((rv = agree(ps, PS_STEP_FLAGS, rv)) != 0) {
        return startup_failed(ps, rv); /* flags (and, on servers, the data port) */
    }
    /* Our CurveZMQ key pair: the public half travels with the exchange. */
    if (ps_tp_keypair(&ps->keys) != 0) {
        memset(&ps->keys, 0, sizeof ps->keys);
    }
    if ((rv = ps_boot_exchange(&ps->boot, NULL, ps->keys.pub, ps->opt.streams)) != 0) {
        return startup_failed(ps, rv);
    }
    ps_boot_bcast(&ps->boot, PS_STEP_SETTINGS, &ps->srv, sizeof ps->srv);
    ps->state = ST_JOINED;
    return 0;
}

int ps_init(ps_t **out, int *argc, char ***argv, const ps_options_t *opt)
{
    int rv = ps_api_boot_new(out, argc, argv, opt);
    if (rv != 0) {
        return rv;
    }
    if ((*out)->boot.nservers < 1) {
        ps_error_set("no ps-server ranks in this job (launch: mpirun -np S ps-server : -np W "
                     "%s)",
                     program_invocation_short_name);
        rv = PS_EINVAL;
    }
    if ((rv = ps_api_join(*out, rv)) != 0) {
        ps_finalize(out);
    }
    return rv;
}

int ps_info(const ps_t *ps, ps_info_t *out)
{
    if (!ps || !out) {
        return no_handle("ps_info");
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

/* Between ps_init and ps_start. */
static int declaring(const ps_t *ps, const char *call)
{
    if (ps->state != ST_JOINED) {
        ps_error_set("%s: only between ps_init and ps_start", call);
        return PS_ESTATE;
    }
    return 0;
}

/* nn.Linear's fan-in: the weight's columns; a bias takes its weight's. */
static int fan_in_of(const ps_layout_t *l, int i, const ps_initializer_t *in, int64_t *fan)
{
    const ps_tensor_t *t = &l->t[i];
    char wname[PS_MAX_NAME + 8];
    size_t n = strlen(t->name);
    int w = i;
    if (in->fan_in > 0) {
        *fan = in->fan_in;
        return 0;
    }
    if (t->ndim < 2 && n > 5 && strcmp(t->name + n - 5, ".bias") == 0) {
        snprintf(wname, sizeof wname, "%.*s.weight", (int)(n - 5), t->name);
        w = ps_layout_find(l, wname);
    }
    if (w < 0 || l->t[w].ndim < 2) {
        ps_error_set("tensor '%s': PS_INIT_TORCH_LINEAR needs fan_in, or a 2-D '<prefix>.weight' "
                     "declared before '<prefix>.bias'",
                     t->name);
        return PS_EINVAL;
    }
    *fan = (int64_t)(l->t[w].numel / (size_t)l->t[w].dims[0]);
    return 0;
}

/* Initial values of tensor i; random rules draw from stream i of `seed`. */
static int fill_init(const ps_layout_t *l, int i, float *dst, const ps_initializer_t *in)
{
    const ps_tensor_t *t = &l->t[i];
    int64_t fan = 0;
    float bound = 0;
    int rv;
    if (in->kind == PS_INIT_ZEROS) {
        memset(dst, 0, t->numel * sizeof *dst);
        return 0;
    }
    if (in->kind == PS_INIT_VALUES && in->values) {
        memcpy(dst, in->values, t->numel * sizeof *dst);
        return 0;
    }
    if (in->kind == PS_INIT_UNIFORM && isfinite(in->bound) && in->bound >= 0) {
        bound = in->bound;
    } else if (in->kind == PS_INIT_TORCH_LINEAR) {
        if ((rv = fan_in_of(l, i, in, &fan)) != 0) {
            return rv;
        }
        bound = (float)(1.0 / sqrt((double)fan));
    } else {
        ps_error_set("tensor '%s': bad init (kind %d: VALUES needs values, UNIFORM a finite "
                     "bound >= 0)",
                     t->name, (int)in->kind);
        return PS_EINVAL;
    }
    ps_rng_t rng;
    ps_rng_seed(&rng, in->seed, (uint64_t)i);
    for (size_t k = 0; k < t->numel; k++) {
        dst[k] = (2.0f * ps_rng_uniform(&rng) - 1.0f) * bound; /* |2u-1| <= 1 exactly */
    }
    return 0;
}

static int declare(ps_t *ps, const char *name, int ndim, const int64_t *dims,
                   const ps_initializer_t *init)
{
    static const ps_initializer_t zeros = {.kind = PS_INIT_ZEROS};
    ps_layout_t *l = &ps->layout;
    int rv;
    if (!name || !dims) {
        ps_error_set("ps_declare: name and dims must not be NULL");
        return PS_EINVAL;
    }
    if ((rv = declaring(ps, "ps_declare")) != 0) {
        return rv;
    }
    if ((rv = ps_layout_add(l, name, ndim, dims)) != 0) {
        return rv; /* the limits are checked before anything grows */
    }
    float *buf = realloc(ps->params, l->total * sizeof *buf);
    if (!buf) {
        ps_error_set("tensor '%s': no memory for %zu floats", name, l->total);
        ps_layout_drop_last(l);
        return PS_ENOMEM;
    }
    ps->params = buf;
    const ps_tensor_t *t = &l->t[l->n - 1];
    if ((rv = fill_init(l, l->n - 1, buf + t->offset, init ? init : &zeros)) != 0) {
        ps_layout_drop_last(l);
    }
    return rv;
}

int ps_declare(ps_t *ps, const char *name, int ndim, const int64_t *dims,
               const ps_initializer_t *init)
{
    if (!ps) {
        return no_handle("ps_declare");
    }
    int rv = declare(ps, name, ndim, dims, init);
    if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

int ps_plan(ps_t *ps, uint64_t steps_per_epoch, uint64_t total_steps)
{
    if (!ps) {
        return no_handle("ps_plan");
    }
    int rv = 0;
    if (ps->state != ST_JOINED) {
        ps_error_set("ps_plan: only between ps_init and ps_start");
        rv = PS_ESTATE;
    } else if (steps_per_epoch < 1 || total_steps < 1) {
        ps_error_set("ps_plan: steps_per_epoch and total_steps must be >= 1");
        rv = PS_EINVAL;
    }
    if (rv == 0) {
        ps->plan = (ps_planinfo_t){steps_per_epoch, total_steps};
        ps->planned = 1;
    } else if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

/* [a, a + n) and [b, b + m) share a float (NULL shares nothing). */
static int overlap(const float *a, size_t n, const float *b, size_t m)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return a && b && x < y + m * sizeof *b && y < x + n * sizeof *a;
}

/* The library reads one array while it writes another: they must be apart. */
static int check_apart(const ps_t *ps, int t, const float *w, const float *g)
{
    const ps_tensor_t *x = ps->layout.t;
    size_t n = x[t].numel;
    if (overlap(w, n, g, n)) {
        ps_error_set("ps_bind: the weights and the gradient of '%s' overlap", x[t].name);
        return PS_EINVAL;
    }
    for (int u = 0; u < ps->layout.n; u++) {
        size_t m = x[u].numel;
        const float *uw = ps->bound_w[u], *ug = ps->bound_g[u];
        if (u != t && (overlap(w, n, uw, m) || overlap(w, n, ug, m) || overlap(g, n, uw, m) ||
                       overlap(g, n, ug, m))) {
            ps_error_set("ps_bind: the arrays of '%s' overlap those bound to '%s'", x[t].name,
                         x[u].name);
            return PS_EINVAL;
        }
    }
    return 0;
}

static int bind(ps_t *ps, const char *name, float *weights, float *grads)
{
    int t, rv = declaring(ps, "ps_bind");
    if (rv != 0) {
        return rv;
    }
    if (!name || (t = ps_layout_find(&ps->layout, name)) < 0) {
        ps_error_set("ps_bind: no tensor '%.80s' declared", name ? name : "(null)");
        return PS_ENOENT;
    }
    if ((rv = check_apart(ps, t, weights, grads)) != 0) {
        return rv;
    }
    const ps_tensor_t *x = &ps->layout.t[t];
    if (weights) {
        /* memmove: they may be the very values ps_declare copied. */
        memmove(weights, ps->params + x->offset, x->numel * sizeof *weights);
    }
    ps->bound_w[t] = weights;
    ps->bound_g[t] = grads;
    return 0;
}

int ps_bind(ps_t *ps, const char *name, float *weights, float *grads)
{
    if (!ps) {
        return no_handle("ps_bind");
    }
    int rv = bind(ps, name, weights, grads);
    if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

int ps_require_same(ps_t *ps, const uint64_t *values, int n, const char *msg)
{
    if (!ps) {
        return no_handle("ps_require_same");
    }
    int rv = declaring(ps, "ps_require_same");
    if (rv == 0 && (n < 0 || n > EXTRA_MAX || (n > 0 && !values))) {
        ps_error_set("ps_require_same: 0 to %d values", EXTRA_MAX);
        rv = PS_EINVAL;
    }
    if (rv == 0) {
        free(ps->disagree);
        ps->disagree = msg ? strdup(msg) : NULL;
        if (n > 0) {
            memcpy(ps->extra, values, (size_t)n * sizeof *values);
        }
        ps->nextra = n;
    }
    if (rv == 0 && msg && !ps->disagree) {
        ps_error_set("ps_require_same: no memory for the message");
        rv = PS_ENOMEM;
    }
    if (ps->state == ST_JOINED) {
        ps_api_fail(ps, rv);
    }
    return rv;
}

int ps_fail(ps_t *ps, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (!ps || !fmt) {
        return no_handle("ps_fail");
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ps_error_set("%s", msg);
    if (ps->state == ST_STARTED) {
        break_handle(ps, PS_EINVAL);
    } else if (ps->state != ST_LEFT && ps->state != ST_BROKEN) {
        ps_api_fail(ps, PS_EINVAL);
    }
    return 0;
}

/* Whether some tensor uses the library's gradient array. */
static int library_grads(const ps_t *ps)
{
    for (int t = 0; t < ps->layout.n; t++) {
        if (!ps->bound_g[t]) {
            return 1;
        }
    }
    return 0;
}

/* What ps_start needs from the caller. */
static int check_startable(ps_t *ps)
{
    if (ps->layout.n == 0) {
        ps_error_set("ps_start: declare at least one tensor first (ps_declare)");
        return PS_EINVAL;
    }
    if (!ps->planned) {
        ps_error_set("ps_start: give the training plan first (ps_plan)");
        return PS_EINVAL;
    }
    if (library_grads(ps) && !(ps->grads = calloc(ps->layout.total, sizeof *ps->grads))) {
        ps_error_set("ps_start: no memory for %zu gradients", ps->layout.total);
        return PS_ENOMEM;
    }
    return 0;
}

/* Workers must agree on the model and on the plan, or sync would hang. */
static int check_agreement(ps_t *ps)
{
    uint64_t h = ps_layout_hash(&ps->layout),
             v[2 + EXTRA_MAX] = {ps->plan.steps_per_epoch, ps->plan.total_steps};
    uint64_t *all = calloc((size_t)ps->boot.nworkers, sizeof *all);
    memcpy(v + 2, ps->extra, (size_t)ps->nextra * sizeof *v);
    for (int i = 0; i < 2 + ps->nextra; i++) {
        h = (h ^ v[i]) * 1099511628211ULL;
    }
    if (!all) {
        ps_error_set("ps_start: no memory to compare the models of %d workers",
                     ps->boot.nworkers);
        return PS_ENOMEM;
    }
    int rv = ps_boot_workers_allgather_u64(&ps->boot, h, all);
    if (rv != 0) {
        free(all);
        return rv; /* PS_EMPI, with MPI's message */
    }
    int same = all[ps->boot.rank] == all[0];
    free(all);
    if (same) {
        return 0;
    }
    char desc[512];
    ps_layout_describe(&ps->layout, desc, sizeof desc);
    if (ps->disagree) {
        ps_error_set("%s", ps->disagree);
    } else {
        ps_error_set("workers disagree on the model or plan: worker %d declared %s, %llu steps "
                     "per epoch, %llu steps, unlike worker 0; every worker must declare the same",
                     ps->boot.rank, desc, (unsigned long long)ps->plan.steps_per_epoch,
                     (unsigned long long)ps->plan.total_steps);
    }
    return PS_EINVAL;
}

int ps_api_start_plan(ps_t *ps)
{
    int rv = ps->rc;
    if (ps->state != ST_JOINED) {
        ps_error_set("ps_start: call it once, after ps_init");
        return PS_ESTATE;
    }
    if (rv == 0) {
        rv = check_startable(ps);
    } else {
        ps_error_set("%s", ps->why); /* the remembered failure is what the job hears */
    }
    if ((rv = agree(ps, PS_STEP_PORTS, rv)) != 0) {
        return startup_failed(ps, rv);
    }
    if ((rv = agree(ps, PS_STEP_MODEL, check_agreement(ps))) != 0) {
        return startup_failed(ps, rv);
    }
    ps_boot_bcast(&ps->boot, PS_STEP_PLAN, &ps->plan, sizeof ps->plan);
    if ((rv = agree(ps, PS_STEP_RESUME, 0)) != 0) { /* the servers' --resume */
        return startup_failed(ps, rv);
    }
    ps->state = ST_PLANNED;
    return 0;
}

static float *weights_of(const ps_t *ps, int t)
{
    return ps->bound_w[t] ? ps->bound_w[t] : ps->params + ps->layout.t[t].offset;
}

static float *grads_of(const ps_t *ps, int t)
{
    return ps->bound_g[t] ? ps->bound_g[t] : ps->grads + ps->layout.t[t].offset;
}

/* After the initial pull: the library's weights are needed only by the
 * tensors that are not bound. */
static void drop_initial_values(ps_t *ps)
{
    for (int t = 0; t < ps->layout.n; t++) {
        if (!ps->bound_w[t]) {
            return;
        }
    }
    free(ps->params);
    ps->params = NULL;
}

static int connect_servers(ps_t *ps)
{
    int S = ps->boot.nservers;
    char *eps[S];
    const char *hosts[S];
    for (int s = 0; s < S; s++) {
        eps[s] = (char *)ps_boot_server_endpoint(&ps->boot, s);
        hosts[s] = ps_boot_server_host(&ps->boot, s);
    }
    wkr_client_cfg_t cc = {.rank = ps->boot.rank, .nservers = S, .endpoints = eps,
                           .hosts = hosts, .layout = &ps->layout,
                           .chunk_elems = (size_t)ps->srv.chunk_kib * 1024 / sizeof(float),
                           .streams = ps->opt.streams, .io_threads = ps->opt.io_threads,
                           .timeout_ms = ps->opt.timeout_s * 1000,
                           .mode = (ps_mode_t)ps->srv.mode, .staleness = ps->srv.staleness,
                           .keys = ps->keys.pub[0] ? &ps->keys : NULL,
                           .server_keys = ps_boot_server_keys(&ps->boot),
                           .compress = ps->opt.compress};
    int rv = wkr_client_new(&ps->client, &cc);
    memset(&ps->keys, 0, sizeof ps->keys); /* the sockets have their copies */
    for (int t = 0; rv == 0 && t < ps->layout.n; t++) {
        wkr_client_set_arrays(ps->client, t, weights_of(ps, t), grads_of(ps, t));
    }
    return rv;
}

int ps_api_start_register(ps_t *ps)
{
    uint64_t start = 0;
    if (ps->state != ST_PLANNED) {
        ps_error_set("ps_start: registration before the plan");
        return PS_ESTATE;
    }
    int rv = connect_servers(ps);
    if (rv == 0 && ps->boot.rank == 0) {
        rv = wkr_client_register(ps->client);
    }
    if (rv == 0 && ps->rc != 0) {
        rv = ps->rc;
        ps_error_set("%s", ps->why);
    }
    if ((rv = agree(ps, PS_STEP_REGISTER, rv)) != 0) {
        return startup_failed(ps, rv);
    }
    /* A resumed run continues from the servers' step. */
    ps_boot_bcast(&ps->boot, PS_STEP_START, &start, sizeof start);
    ps->step = start;
    ps->state = ST_STARTED;
    return 0;
}

int ps_start(ps_t *ps)
{
    if (!ps) {
        return no_handle("ps_start");
    }
    int rv = ps_api_start_plan(ps);
    if (rv == 0) {
        rv = ps_api_start_register(ps);
    }
    if (rv != 0) {
        return rv;
    }
    wkr_client_begin_step(ps->client, 0);
    if ((rv = wkr_client_pull(ps->client, 0)) != 0) {
        return break_handle(ps, rv); /* the initial weights */
    }
    drop_initial_values(ps);
    return 0;
}

/* The data plane is open (and nothing failed on it). */
static int data_plane_open(const ps_t *ps, const char *call)
{
    if (!ps) {
        return no_handle(call);
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
static int servers_open(const ps_t *ps, const char *call)
{
    int rv = data_plane_open(ps, call);
    if (rv == 0 && ps->shut) {
        ps_error_set("%s: this worker is done (ps_done)", call);
        rv = PS_ESTATE;
    }
    return rv;
}

/* After ps_start: tensor `name`'s index into *t. */
static int find_tensor(const ps_t *ps, const char *call, const char *name, int *t)
{
    int rv = data_plane_open(ps, call);
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
    int t, rv = find_tensor(ps, "ps_tensor", name, &t);
    if (rv != 0) {
        return rv;
    }
    if (weights) {
        *weights = weights_of(ps, t);
    }
    if (grads) {
        *grads = grads_of(ps, t);
    }
    if (numel) {
        *numel = ps->layout.t[t].numel;
    }
    return 0;
}

/* The weights for the next step are in every array: the step is over. */
static int end_step(ps_t *ps)
{
    int rv = wkr_client_finish_step(ps->client);
    if (rv != 0) {
        return break_handle(ps, rv);
    }
    ps->step++;
    ps->open = ps->pushed = 0;
    return 0;
}

/* A push may start or continue this step with these samples. */
static int pushable(ps_t *ps, const char *call, uint32_t samples)
{
    int rv = servers_open(ps, call);
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
    float *g = grads_of(ps, t);
    if (ps->samples == 0) {
        memset(g, 0, x->numel * sizeof *g);
    }
    if (ps->srv.nonfinite_skip || ps_first_nonfinite(g, 0, x->numel) == x->numel) {
        return 0; /* skip: the whole gradient is checked once it is final */
    }
    ps_error_set("non-finite gradient on worker %d in %s at step %llu (--on-nonfinite abort)",
                 ps->boot.rank, x->name, (unsigned long long)ps->step + 1);
    return break_handle(ps, PS_ERANGE);
}

/* --on-nonfinite skip: every tensor is final; a non-finite gradient drops
 * the step everywhere. */
static int push_held(ps_t *ps)
{
    int rv = 0;
    for (int t = 0; t < ps->layout.n; t++) {
        size_t n = ps->layout.t[t].numel;
        if (ps_first_nonfinite(grads_of(ps, t), 0, n) < n) {
            ps_log_info("non-finite gradient at step %llu: the step is skipped",
                        (unsigned long long)ps->step + 1);
            wkr_client_set_skip(ps->client, 1);
            break;
        }
    }
    for (int t = ps->layout.n; rv == 0 && t-- > 0;) {
        rv = wkr_client_push_tensor(ps->client, t, ps->samples);
    }
    return rv ? break_handle(ps, rv) : 0;
}

/* Tensor t is final: hand it to the client (held under skip). */
static int send_tensor(ps_t *ps, int t)
{
    int rv = 0;
    ps->tensor_pushed[t] = 1;
    ps->npushed++;
    if (!ps->srv.nonfinite_skip && (rv = wkr_client_push_tensor(ps->client, t, ps->samples))) {
        return break_handle(ps, rv);
    }
    if (ps->npushed == ps->layout.n) {
        ps->pushed = 1;
        rv = ps->srv.nonfinite_skip ? push_held(ps) : 0;
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
    int t, rv = find_tensor(ps, "ps_push_tensor", name, &t);
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
    int t, rv = find_tensor(ps, "ps_push_from", tensor, &t);
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
    int rv = data_plane_open(ps, call);
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
    int t, rv = find_tensor(ps, "ps_pull_tensor", name, &t);
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
            return break_handle(ps, rv);
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
        return break_handle(h->ps, rv);
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
        return break_handle(h->ps, rv);
    }
    *done = wkr_client_tensor_pulled(h->ps->client, h->tensor);
    return *done ? end_if_pulled(h->ps) : 0;
}

int ps_pull(ps_t *ps)
{
    int rv = servers_open(ps, "ps_pull");
    if (rv != 0) {
        return rv;
    }
    if (!ps->pushed) {
        ps_error_set("ps_pull: step %llu is not pushed yet (ps_push first)",
                     (unsigned long long)ps->step);
        return PS_ESTATE;
    }
    if ((rv = wkr_client_pull(ps->client, ps->step + 1)) != 0) {
        return break_handle(ps, rv);
    }
    return end_step(ps);
}

int ps_step(ps_t *ps, uint32_t samples)
{
    int rv = ps_push(ps, samples, NULL);
    return rv ? rv : ps_pull(ps);
}

int ps_reduce_sum(ps_t *ps, double *vals, int n)
{
    if (!ps) {
        return no_handle("ps_reduce_sum");
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
    return rv && ps->state == ST_STARTED ? break_handle(ps, rv) : rv;
}

int ps_reduce_sum_start(ps_t *ps, double *vals, int n, ps_reduce_t **req)
{
    if (!ps || !req) {
        return no_handle("ps_reduce_sum_start");
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
        return ps->state == ST_STARTED ? break_handle(ps, rv) : rv;
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
static int complete_reductions(ps_t *ps)
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

int ps_lr(const ps_t *ps, uint64_t step, double *lr)
{
    int rv = data_plane_open(ps, "ps_lr");
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
    int rv = servers_open(ps, "ps_stats");
    if (rv == 0 && (!out || ps->open)) {
        /* Inside a step, pull replies are on their way and would be lost. */
        ps_error_set("ps_stats: %s", out ? "not inside a step (after ps_pull)" : "out is NULL");
        rv = out ? PS_ESTATE : PS_EINVAL;
    }
    if (rv != 0) {
        return rv;
    }
    if ((rv = wkr_client_server_stats(ps->client, &st)) != 0) {
        return break_handle(ps, rv);
    }
    *out = (ps_stats_t){.staleness_max = st.staleness_max, .staleness_sum = st.staleness_sum,
                        .applied = st.applied, .rejected = st.rejected, .version = st.version,
                        .apply_s = (double)st.apply_us / 1e6};
    return 0;
}

int ps_save(ps_t *ps, const char *path)
{
    char step[32];
    const char *meta[2] = {"step", step};
    int rv = data_plane_open(ps, "ps_save");
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
        t[i] = (ps_st_tensor_t){x->name, x->ndim, x->dims, weights_of(ps, i)};
    }
    snprintf(step, sizeof step, "%llu", (unsigned long long)ps->step);
    rv = ps_st_write(path, t, ps->layout.n, meta, 1);
    free(t);
    return rv;
}

int ps_done(ps_t *ps)
{
    int rv = data_plane_open(ps, "ps_done");
    if (rv != 0 || ps->shut) {
        return rv;
    }
    if (ps->pushed) {
        rv = ps_pull(ps); /* so no reply is left on its way to a closed socket */
    } else if (ps->open) {
        ps_error_set("step %llu was pushed only in part (%d of %d tensors): push every tensor "
                     "of a step",
                     (unsigned long long)ps->step, ps->npushed, ps->layout.n);
        rv = break_handle(ps, PS_ESTATE);
    }
    if (rv == 0) {
        wkr_client_wait_sends(ps->client);
        if ((rv = wkr_client_shutdown(ps->client)) != 0) {
            return break_handle(ps, rv);
        }
        ps->shut = 1;
    }
    return rv;
}

/* Say goodbye (if not yet), complete the sums in flight, and meet the
 * servers' save step. */
static int leave_job(ps_t *ps)
{
    ps_done(ps);
    if (ps->state == ST_STARTED && complete_reductions(ps) != 0) {
        break_handle(ps, PS_EMPI);
    }
    return ps->state == ST_BROKEN ? ps->rc : agree(ps, PS_STEP_DONE, 0);
}

/* Run whatever start-up steps the servers still expect, failing them, so
 * the whole job ends cleanly. */
static void abandon_start(ps_t *ps)
{
    ps_error_set("worker %d left before ps_start", ps->boot.rank);
    ps_api_fail(ps, PS_ESTATE);
    if (ps->state == ST_BOOTED) {
        ps_api_join(ps, ps->rc);
    }
    if (ps->state == ST_JOINED) {
        ps_api_start_plan(ps);
    }
    if (ps->state == ST_PLANNED) {
        ps_api_start_register(ps);
    }
}

int ps_finalize(ps_t **pp)
{
    if (!pp || !*pp) {
        return 0;
    }
    ps_t *ps = *pp;
    if (ps->state != ST_STARTED && ps->state != ST_BROKEN) {
        complete_reductions(ps); /* the workers' start-up ended alike: they all get here */
    }
    int rv = ps->rc;
    if (ps->state == ST_BOOTED || ps->state == ST_JOINED || ps->state == ST_PLANNED) {
        abandon_start(ps);
        rv = ps->rc;
    } else if (ps->state == ST_STARTED) {
        rv = leave_job(ps);
    }
    if (ps->state == ST_BROKEN) {
        ps_log_error("%s", ps->why);
        ps_boot_abort(&ps->boot, 3);
    }
    wkr_client_destroy(&ps->client);
    free(ps->params);
    free(ps->grads);
    free(ps->disagree);
    memset(&ps->keys, 0, sizeof ps->keys);
    ps_boot_finalize(&ps->boot);
    free(ps);
    *pp = NULL;
    return rv;
}
