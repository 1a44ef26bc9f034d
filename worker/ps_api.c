/*
 * libpsclient: the worker side of the start-up sequence (docs/protocol.md)
 * and a step-level data plane over wkr_client.  The contract is ps.h; the
 * pieces ps-worker's main reuses are in ps_api.h.
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

struct ps_push {
    ps_t *ps;
    int active;
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
    ps_layout_t layout;
    float *params, *grads; /* layout order; params holds the initial values until start */
    int adopted;           /* the arrays are the caller's */
    uint64_t extra[EXTRA_MAX];
    int nextra;
    char *disagree; /* the caller's message for a mismatch */
    wkr_client_t *client;
    uint64_t step;    /* the step the next push belongs to */
    int open, pushed; /* this step: some push left / ps_push done */
    uint32_t samples;
    size_t done_from; /* grads[done_from ..) of this step have left */
    int shut;         /* SHUTDOWN sent */
    ps_push_t push;
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

/* ps_boot_agree, with a message on the ranks that did not fail. */
static int agree(ps_t *ps, int rc)
{
    int rv = ps_boot_agree(&ps->boot, rc);
    if (rv != 0 && rc == 0) {
        ps_error_set("another rank of the job failed to start (its message is above)");
    }
    return rv;
}

static int leave(ps_t *ps, int rv)
{
    ps->state = ST_LEFT;
    ps->rc = rv;
    return rv;
}

static int broken(ps_t *ps, int rv)
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

int ps_api_boot_new(ps_t **out, int *argc, char ***argv, const ps_options_t *opt)
{
    if (!out) {
        return no_handle("ps_init");
    }
    *out = NULL;
    ps_t *ps = calloc(1, sizeof *ps);
    if (!ps) {
        return PS_ENOMEM;
    }
    if (opt) {
        ps->opt = *opt;
    }
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
    ps->push.ps = ps;
    *out = ps;
    return 0;
}

_Static_assert(PS_MAX_STREAMS == PS_TP_MAX_STREAMS, "ps.h and ps_transport.h disagree");

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

int ps_api_join(ps_t *ps, int local_rc)
{
    int rv = local_rc ? local_rc : check_options(&ps->opt);
    if ((rv = agree(ps, rv)) != 0) {
        return leave(ps, rv); /* flags (and, on servers, the data port) */
    }
    /* Our CurveZMQ key pair: the public half travels with the exchange. */
    if (ps_tp_keypair(&ps->keys) != 0) {
        memset(&ps->keys, 0, sizeof ps->keys);
    }
    if (ps_boot_exchange(&ps->boot, NULL, ps->keys.pub) != 0) {
        ps_boot_abort(&ps->boot, 2);
    }
    ps_boot_bcast_from_server0(&ps->boot, &ps->srv, sizeof ps->srv);
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
    return 0;
}

ps_boot_t *ps_api_boot(ps_t *ps)
{
    return &ps->boot;
}

const ps_srvinfo_t *ps_api_srvinfo(const ps_t *ps)
{
    return &ps->srv;
}

wkr_client_t *ps_api_client(ps_t *ps)
{
    return ps->client;
}

void ps_api_shutdown_sent(ps_t *ps)
{
    ps->shut = 1;
}

/* Between ps_init and ps_start, before the caller's own arrays (if any). */
static int declaring(const ps_t *ps, const char *call)
{
    if (ps->state != ST_JOINED || ps->adopted) {
        ps_error_set("%s: only between ps_init and ps_start", call);
        return PS_ESTATE;
    }
    return 0;
}

/* nn.Linear's fan-in: the weight's columns; a bias takes its weight's. */
static int fan_in_of(const ps_layout_t *l, int i, const ps_init_t *in, int64_t *fan)
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
static int fill_init(const ps_layout_t *l, int i, float *dst, const ps_init_t *in)
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

static int declare(ps_t *ps, const char *name, int ndim, const int64_t *dims, const ps_init_t *init)
{
    static const ps_init_t zeros = {.kind = PS_INIT_ZEROS};
    ps_layout_t l;
    int rv;
    if (!name || !dims) {
        ps_error_set("ps_declare: name and dims must not be NULL");
        return PS_EINVAL;
    }
    if ((rv = declaring(ps, "ps_declare")) != 0) {
        return rv;
    }
    l = ps->layout;
    if ((rv = ps_layout_add(&l, name, ndim, dims)) != 0) {
        return rv; /* the limits are checked before anything grows */
    }
    float *buf = realloc(ps->params, l.total * sizeof *buf);
    if (!buf) {
        ps_error_set("tensor '%s': no memory for %zu floats", name, l.total);
        return PS_ENOMEM;
    }
    ps->params = buf;
    if ((rv = fill_init(&l, l.n - 1, buf + l.t[l.n - 1].offset, init ? init : &zeros)) != 0) {
        return rv;
    }
    ps->layout = l;
    return 0;
}

int ps_declare(ps_t *ps, const char *name, int ndim, const int64_t *dims, const ps_init_t *init)
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

int ps_api_adopt(ps_t *ps, const ps_layout_t *layout, float *params, float *grads)
{
    int rv = declaring(ps, "ps_api_adopt");
    if (rv == 0 && ps->layout.n > 0) {
        ps_error_set("ps_api_adopt: tensors were declared already");
        rv = PS_ESTATE;
    }
    if (rv == 0) {
        ps->layout = *layout;
        ps->params = params;
        ps->grads = grads;
        ps->adopted = 1;
    }
    return rv;
}

int ps_api_agreement(ps_t *ps, const uint64_t *extra, int n, const char *msg)
{
    if (n < 0 || n > EXTRA_MAX) {
        ps_error_set("ps_api_agreement: at most %d values", EXTRA_MAX);
        return PS_EINVAL;
    }
    free(ps->disagree);
    ps->disagree = msg ? strdup(msg) : NULL;
    if (n > 0) {
        memcpy(ps->extra, extra, (size_t)n * sizeof *extra);
    }
    ps->nextra = n;
    return msg && !ps->disagree ? PS_ENOMEM : 0;
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
        broken(ps, PS_EINVAL);
    } else if (ps->state != ST_LEFT && ps->state != ST_BROKEN) {
        ps_api_fail(ps, PS_EINVAL);
    }
    return 0;
}

/* What ps_start needs from the caller. */
static int ready(ps_t *ps)
{
    if (ps->layout.n == 0) {
        ps_error_set("ps_start: declare at least one tensor first (ps_declare)");
        return PS_EINVAL;
    }
    if (!ps->planned) {
        ps_error_set("ps_start: give the training plan first (ps_plan)");
        return PS_EINVAL;
    }
    if (!ps->adopted && !(ps->grads = calloc(ps->layout.total, sizeof *ps->grads))) {
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
    if (!all || ps_boot_workers_allgather_u64(&ps->boot, h, all) != 0) {
        free(all);
        return PS_EMPI;
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
        rv = ready(ps);
    } else {
        ps_error_set("%s", ps->why); /* the remembered failure is what the job hears */
    }
    if ((rv = agree(ps, rv)) != 0) {
        return leave(ps, rv);
    }
    if ((rv = agree(ps, check_agreement(ps))) != 0) {
        return leave(ps, rv);
    }
    ps_boot_bcast_from_worker0(&ps->boot, &ps->plan, sizeof ps->plan);
    if ((rv = agree(ps, 0)) != 0) { /* the servers' --resume */
        return leave(ps, rv);
    }
    ps->state = ST_PLANNED;
    return 0;
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
                           .compress = (wkr_compress_t)ps->opt.compress};
    int rv = wkr_client_new(&ps->client, &cc);
    memset(&ps->keys, 0, sizeof ps->keys); /* the sockets have their copies */
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
        rv = wkr_client_register(ps->client, ps->params);
    }
    if (rv == 0 && ps->rc != 0) {
        rv = ps->rc;
        ps_error_set("%s", ps->why);
    }
    if ((rv = agree(ps, rv)) != 0) {
        return leave(ps, rv);
    }
    /* A resumed run continues from the servers' step. */
    ps_boot_bcast_from_server0(&ps->boot, &start, sizeof start);
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
    if ((rv = wkr_client_pull(ps->client, 0, ps->params)) != 0) {
        return broken(ps, rv); /* the initial weights */
    }
    return 0;
}

/* The data plane is open (and nothing failed on it). */
static int plane(const ps_t *ps, const char *call)
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

int ps_tensor(ps_t *ps, const char *name, float **weights, float **grads, size_t *numel)
{
    int rv = plane(ps, "ps_tensor"), i;
    if (rv != 0) {
        return rv;
    }
    if (!name || (i = ps_layout_find(&ps->layout, name)) < 0) {
        ps_error_set("ps_tensor: no tensor '%.80s'", name ? name : "(null)");
        return PS_ENOENT;
    }
    const ps_tensor_t *t = &ps->layout.t[i];
    if (weights) {
        *weights = ps->params + t->offset;
    }
    if (grads) {
        *grads = ps->grads + t->offset;
    }
    if (numel) {
        *numel = t->numel;
    }
    return 0;
}

/* A push may start or continue this step with these samples. */
static int pushable(ps_t *ps, const char *call, uint32_t samples)
{
    int rv = plane(ps, call);
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
        ps->done_from = ps->layout.total;
    }
    return 0;
}

/* A push of no samples carries no gradient, but the servers still refuse a
 * non-finite one: its values are ours to set. */
static void zero_if_empty(ps_t *ps, size_t first, size_t end)
{
    if (ps->samples == 0 && first < end) {
        memset(ps->grads + first, 0, (end - first) * sizeof *ps->grads);
    }
}

/* Send grads[first .. done_from), checked first (--on-nonfinite abort). */
static int push_region(ps_t *ps, size_t first)
{
    if (first >= ps->done_from) {
        return 0;
    }
    zero_if_empty(ps, first, ps->done_from);
    size_t bad = ps_first_nonfinite(ps->grads, first, ps->done_from);
    if (bad < ps->done_from) {
        int t = ps_layout_tensor_at(&ps->layout, bad);
        ps_error_set("non-finite gradient on worker %d in %s at step %llu (--on-nonfinite abort)",
                     ps->boot.rank, t >= 0 ? ps->layout.t[t].name : "?",
                     (unsigned long long)ps->step + 1);
        return broken(ps, PS_ERANGE);
    }
    ps->done_from = first;
    int rv = wkr_client_push_from(ps->client, ps->grads, first, ps->samples);
    return rv ? broken(ps, rv) : 0;
}

/* --on-nonfinite skip: a non-finite gradient drops the step everywhere. */
static int push_held(ps_t *ps)
{
    size_t total = ps->layout.total;
    zero_if_empty(ps, 0, total);
    if (ps_first_nonfinite(ps->grads, 0, total) < total) {
        ps_log_info("non-finite gradient at step %llu: the step is skipped",
                    (unsigned long long)ps->step + 1);
        wkr_client_set_skip(ps->client, 1);
    }
    int rv = wkr_client_push_from(ps->client, ps->grads, 0, ps->samples);
    return rv ? broken(ps, rv) : 0;
}

int ps_push(ps_t *ps, uint32_t samples, ps_push_t **handle)
{
    int rv = pushable(ps, "ps_push", samples);
    if (handle) {
        *handle = NULL;
    }
    if (rv != 0) {
        return rv;
    }
    rv = ps->srv.nonfinite_skip ? push_held(ps) : push_region(ps, 0);
    if (rv != 0) {
        return rv;
    }
    ps->pushed = 1;
    ps->push.active = 1;
    if (handle) {
        *handle = &ps->push;
    }
    return 0;
}

int ps_push_from(ps_t *ps, const char *tensor, uint32_t samples)
{
    int i, rv = plane(ps, "ps_push_from");
    if (rv != 0) {
        return rv;
    }
    if (!tensor || (i = ps_layout_find(&ps->layout, tensor)) < 0) {
        ps_error_set("ps_push_from: no tensor '%.80s'", tensor ? tensor : "(null)");
        return PS_ENOENT;
    }
    if ((rv = pushable(ps, "ps_push_from", samples)) != 0) {
        return rv;
    }
    if (ps->srv.nonfinite_skip) {
        return 0; /* the whole gradient is checked before anything leaves */
    }
    return push_region(ps, ps->layout.t[i].offset);
}

int ps_wait(ps_push_t *h)
{
    if (!h) {
        ps_error_set("ps_wait: the handle is NULL");
        return PS_EINVAL;
    }
    if (h->active && h->ps->client) {
        wkr_client_wait_sends(h->ps->client);
    }
    h->active = 0;
    return 0;
}

int ps_pull(ps_t *ps)
{
    int rv = plane(ps, "ps_pull");
    if (rv != 0) {
        return rv;
    }
    if (!ps->pushed) {
        ps_error_set("ps_pull: step %llu is not pushed yet (ps_push first)",
                     (unsigned long long)ps->step);
        return PS_ESTATE;
    }
    if ((rv = wkr_client_pull(ps->client, ps->step + 1, ps->params)) != 0) {
        return broken(ps, rv);
    }
    ps_wait(&ps->push);
    ps->step++;
    ps->open = ps->pushed = 0;
    return 0;
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
    return rv && ps->state == ST_STARTED ? broken(ps, rv) : rv;
}

int ps_lr(const ps_t *ps, uint64_t step, double *lr)
{
    int rv = plane(ps, "ps_lr");
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
    int rv = plane(ps, "ps_stats");
    if (rv == 0 && (!out || ps->open)) {
        /* Inside a step, pull replies are on their way and would be lost. */
        ps_error_set("ps_stats: %s", out ? "not inside a step (after ps_pull)" : "out is NULL");
        rv = out ? PS_ESTATE : PS_EINVAL;
    }
    if (rv != 0) {
        return rv;
    }
    if ((rv = wkr_client_server_stats(ps->client, &st)) != 0) {
        return broken(ps, rv);
    }
    *out = (ps_stats_t){.staleness_max = st.staleness_max, .staleness_sum = st.staleness_sum,
                        .applied = st.applied, .rejected = st.rejected, .version = st.version};
    return 0;
}

int ps_save(ps_t *ps, const char *path)
{
    ps_st_tensor_t t[PS_MAX_TENSORS];
    char step[32];
    const char *meta[2] = {"step", step};
    int rv = plane(ps, "ps_save");
    if (rv == 0 && !path) {
        ps_error_set("ps_save: path is NULL");
        rv = PS_EINVAL;
    }
    if (rv != 0) {
        return rv;
    }
    for (int i = 0; i < ps->layout.n; i++) {
        const ps_tensor_t *x = &ps->layout.t[i];
        t[i] = (ps_st_tensor_t){x->name, x->ndim, x->dims, ps->params + x->offset};
    }
    snprintf(step, sizeof step, "%llu", (unsigned long long)ps->step);
    return ps_st_write(path, t, ps->layout.n, meta, 1);
}

/* Finish the open step, say goodbye, and meet the servers' save step. */
static int leave_job(ps_t *ps)
{
    int rv = 0;
    if (ps->pushed) {
        rv = ps_pull(ps); /* so no reply is left on its way to a closed socket */
    } else if (ps->open) {
        ps_error_set("step %llu was pushed only in part (ps_push_from without ps_push)",
                     (unsigned long long)ps->step);
        rv = broken(ps, PS_ESTATE);
    }
    if (rv == 0 && !ps->shut) {
        wkr_client_wait_sends(ps->client);
        if ((rv = wkr_client_shutdown(ps->client)) != 0) {
            broken(ps, rv);
        }
        ps->shut = 1;
    }
    return ps->state == ST_BROKEN ? ps->rc : agree(ps, 0);
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
    if (!ps->adopted) {
        free(ps->params);
        free(ps->grads);
    }
    free(ps->disagree);
    memset(&ps->keys, 0, sizeof ps->keys);
    ps_boot_finalize(&ps->boot);
    free(ps);
    *pp = NULL;
    return rv;
}
