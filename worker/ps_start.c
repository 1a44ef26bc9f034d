/*
 * libpsclient: the worker's side of the start-up table (common/ps_startup.h)
 * in ps_init and ps_start, and the end of a worker's job (ps_done,
 * ps_finalize), including the steps a worker that leaves early still owes
 * the servers.
 */
#include "ps_api.h"

#include "ps_opts.h"
#include "ps_plane.h"
#include "ps_shm.h"
#include "ps_signal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
        return ps_api_no_handle("ps_init");
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
    /* Bad options fail the flags step; until then the transport is auto. */
    int rv = ps_boot_init(&ps->boot, argc, argv, 0, ps->rc ? PS_TRANSPORT_AUTO : ps->opt.transport);
    if (rv != 0) {
        free(ps); /* MPI is in an unknown state: no collective call is safe */
        return rv;
    }
    ps_log_set_name(ps->opt.name ? ps->opt.name : program_invocation_short_name, ps->boot.rank);
    ps->opt.name = NULL; /* not ours to keep */
    if (ps->opt.quiet) {
        ps_log_set_level(0);
    }
    if (ps->opt.signals == PS_SIGNALS_STOP && ps->rc == 0) {
        /* After MPI_Init, so that ours are the handlers that run. */
        ps_api_fail(ps, ps_signal_install(PS_SIGNAL_GRACE_MS));
        ps->signals = ps->rc == 0;
    }
    handles_init(ps);
    *out = ps;
    return 0;
}

_Static_assert(PS_MAX_STREAMS == PS_TP_MAX_STREAMS, "ps.h and ps_transport.h disagree");
_Static_assert(PS_TRANSPORT_AUTO == (int)PS_PLANE_AUTO && PS_TRANSPORT_IPC == (int)PS_PLANE_IPC &&
                   PS_TRANSPORT_TCP == (int)PS_PLANE_TCP && PS_TRANSPORT_SHM == (int)PS_PLANE_SHM,
               "ps.h and ps_plane.h disagree");

/* Checked, with the defaults filled in. */
static int check_options(ps_options_t *o)
{
    if (o->timeout_s < 0 || o->io_threads < 0 || o->io_threads > 64) {
        ps_error_set("ps_init: timeout_s must be >= 0 and io_threads 0 to 64 (0: default)");
        return PS_EINVAL;
    }
    if (o->streams < 0 || o->streams > PS_MAX_STREAMS) {
        ps_error_set("ps_init: streams %d: want 1 to %d (0: default)", o->streams, PS_MAX_STREAMS);
        return PS_EINVAL;
    }
    if (o->compress < PS_COMPRESS_NONE || o->compress > PS_COMPRESS_BF16) {
        ps_error_set("ps_init: compress %d: want PS_COMPRESS_NONE, _FP16 or _BF16", o->compress);
        return PS_EINVAL;
    }
    if (o->signals != PS_SIGNALS_NONE && o->signals != PS_SIGNALS_STOP) {
        ps_error_set("ps_init: signals %d: want PS_SIGNALS_NONE or PS_SIGNALS_STOP", o->signals);
        return PS_EINVAL;
    }
    if (o->transport < PS_TRANSPORT_AUTO || o->transport > PS_TRANSPORT_SHM) {
        ps_error_set("ps_init: transport %d: want PS_TRANSPORT_AUTO, _SHM, _IPC or _TCP",
                     o->transport);
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

/* This worker's plane to server s: ps_plane's rule, which the server
 * applies to the same pair. */
static int plane_to(const ps_t *ps, int s, ps_plane_t *p)
{
    ps_plane_pair_t pair = {.server = s,
                            .worker = ps->boot.rank,
                            .server_host = ps_boot_server_host(&ps->boot, s),
                            .worker_host = ps->boot.host,
                            .srv = (ps_plane_t)ps_boot_server_transport(&ps->boot, s),
                            .wkr = (ps_plane_t)ps->opt.transport};
    return ps_plane_decide(&pair, p);
}

/* Every server reachable the way both sides want (the servers check the
 * same pairs: whoever is first in the job says why). */
static int check_planes(const ps_t *ps)
{
    ps_plane_t p;
    int rv = 0;
    for (int s = 0; s < ps->boot.nservers && rv == 0; s++) {
        rv = plane_to(ps, s, &p);
    }
    return rv;
}

int ps_api_join(ps_t *ps, int local_rc)
{
    int rv = local_rc ? local_rc : remembered_failure(ps);
    if (rv == 0) {
        rv = check_planes(ps);
    }
    if ((rv = ps_api_agree(ps, PS_STEP_FLAGS, rv)) != 0) {
        return ps_api_startup_failed(ps, rv); /* flags (and, on servers, the data port) */
    }
    /* Our CurveZMQ key pair: the public half travels with the exchange. */
    if (ps_tp_keypair(&ps->keys) != 0) {
        memset(&ps->keys, 0, sizeof ps->keys);
    }
    if ((rv = ps_boot_exchange(&ps->boot, NULL, ps->keys.pub, ps->opt.streams)) != 0) {
        return ps_api_startup_failed(ps, rv);
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
    if (ps_rows_check_names(ps) != 0) {
        return PS_EINVAL;
    }
    if (ps_api_library_grads(ps) && !(ps->grads = calloc(ps->layout.total, sizeof *ps->grads))) {
        ps_error_set("ps_start: no memory for %zu gradients", ps->layout.total);
        return PS_ENOMEM;
    }
    return 0;
}

/* Worker 0's layout on every worker (collective over the workers): its
 * encoding summed as one double per byte, the others adding zeros.  Only
 * after a mismatch, to say what differs.  NULL when it fails. */
static ps_layout_t *layout_of_worker0(ps_t *ps)
{
    uint8_t *enc = calloc(PS_LAYOUT_MAX_ENCODED, 1);
    double *v = calloc(PS_LAYOUT_MAX_ENCODED, sizeof *v);
    ps_layout_t *l = malloc(sizeof *l);
    /* [0]: worker 0's length; [1]: workers without the memory (all must
     * make the second sum or none). */
    double head[2] = {0, !(enc && v && l)};
    if (!head[1] && ps->boot.rank == 0) {
        long n = ps_layout_encode(&ps->layout, enc, PS_LAYOUT_MAX_ENCODED);
        head[0] = n > 0 ? (double)n : 0;
        for (long i = 0; i < n; i++) {
            v[i] = enc[i];
        }
    }
    int n = 0, ok = ps_boot_workers_sum(&ps->boot, head, 2) == 0 && head[1] == 0;
    if (ok && head[0] > 0 && head[0] <= PS_LAYOUT_MAX_ENCODED) {
        n = (int)head[0];
        ok = ps_boot_workers_sum(&ps->boot, v, n) == 0;
    }
    for (int i = 0; ok && i < n; i++) {
        enc[i] = (uint8_t)v[i];
    }
    ok = ok && n > 0 && ps_layout_decode(l, enc, (size_t)n) == 0;
    free(enc);
    free(v);
    if (!ok) {
        free(l);
        return NULL;
    }
    return l;
}

/* "... worker 1 declared a model that differs from worker 0's at tensor 2:
 * ..." (the prefix is the one every mismatch has always had) */
static void say_first_difference(ps_t *ps, const ps_layout_t *zero)
{
    char mine[160] = "nothing", theirs[160] = "nothing";
    int i = ps_layout_first_diff(&ps->layout, zero);
    if (i < ps->layout.n) {
        ps_layout_describe_tensor(&ps->layout.t[i], mine, sizeof mine);
    }
    if (i < zero->n) {
        ps_layout_describe_tensor(&zero->t[i], theirs, sizeof theirs);
    }
    ps_error_set("workers disagree on the model or plan: worker %d declared a model that differs "
                 "from worker 0's at tensor %d: %s here, %s on worker 0 (%d tensors here, %d "
                 "there); every worker must declare the same tensors, shapes and options in the "
                 "same order",
                 ps->boot.rank, i, mine, theirs, ps->layout.n, zero->n);
}

/* The layouts first, so that a worker that differs can name the first
 * difference (a collective: every worker learns whether any differs). */
static int check_same_layout(ps_t *ps)
{
    uint64_t *all = calloc((size_t)ps->boot.nworkers, sizeof *all);
    if (!all) {
        ps_error_set("ps_start: no memory to compare the models of %d workers", ps->boot.nworkers);
        return PS_ENOMEM;
    }
    int rv = ps_boot_workers_allgather_u64(&ps->boot, ps_layout_hash(&ps->layout), all);
    int differs = 0, me = rv == 0 && all[ps->boot.rank] != all[0];
    for (int i = 0; rv == 0 && i < ps->boot.nworkers; i++) {
        differs |= all[i] != all[0];
    }
    free(all);
    if (rv != 0 || !differs) {
        return rv; /* PS_EMPI, with MPI's message, or 0 */
    }
    ps_layout_t *zero = layout_of_worker0(ps);
    if (!me) {
        free(zero);
        return 0; /* the worker that differs says so; the agreement fails us */
    }
    if (ps->disagree) {
        ps_error_set("%s", ps->disagree);
    } else if (zero) {
        say_first_difference(ps, zero);
    } else {
        char desc[512];
        ps_layout_describe(&ps->layout, desc, sizeof desc);
        ps_error_set("workers disagree on the model or plan: worker %d declared %s, unlike "
                     "worker 0",
                     ps->boot.rank, desc);
    }
    free(zero);
    return PS_EINVAL;
}

/* The model, the plan and ps_require_same's values, in one hash. */
static int check_plan(ps_t *ps)
{
    uint64_t h = ps_layout_hash(&ps->layout) ^ ps_tables_hash(&ps->tables),
             v[2 + EXTRA_MAX] = {ps->plan.steps_per_epoch, ps->plan.total_steps};
    uint64_t *all = calloc((size_t)ps->boot.nworkers, sizeof *all);
    memcpy(v + 2, ps->extra, (size_t)ps->nextra * sizeof *v);
    for (int i = 0; i < 2 + ps->nextra; i++) {
        h = (h ^ v[i]) * 1099511628211ULL;
    }
    if (!all) {
        ps_error_set("ps_start: no memory to compare the models of %d workers", ps->boot.nworkers);
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
                     "per epoch, %llu steps and %d tables, unlike worker 0; every worker must "
                     "declare the same",
                     ps->boot.rank, desc, (unsigned long long)ps->plan.steps_per_epoch,
                     (unsigned long long)ps->plan.total_steps, ps->tables.n);
    }
    return PS_EINVAL;
}

/* Workers must agree on the model and on the plan, or sync would hang.
 * Both collectives run on every worker; a model that differs is named by
 * its first difference. */
static int check_agreement(ps_t *ps)
{
    int rv = check_plan(ps), rv_model = check_same_layout(ps);
    return rv_model != 0 ? rv_model : rv;
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
    if ((rv = ps_api_agree(ps, PS_STEP_PORTS, rv)) != 0) {
        return ps_api_startup_failed(ps, rv);
    }
    if ((rv = ps_api_agree(ps, PS_STEP_MODEL, check_agreement(ps))) != 0) {
        return ps_api_startup_failed(ps, rv);
    }
    ps_boot_bcast(&ps->boot, PS_STEP_PLAN, &ps->plan, sizeof ps->plan);
    if ((rv = ps_api_agree(ps, PS_STEP_RESUME, 0)) != 0) { /* the servers' --resume */
        return ps_api_startup_failed(ps, rv);
    }
    ps->state = ST_PLANNED;
    return 0;
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

/* Server s's lanes on this worker's plane to it. */
static int lanes_to(const ps_t *ps, int s, char *out, size_t cap)
{
    ps_plane_t p;
    int rv = plane_to(ps, s, &p);
    if (rv == 0) {
        /* shm: the headers go over the server's ipc socket */
        rv = ps_tp_endpoint_select(ps_boot_server_endpoint(&ps->boot, s),
                                   p == PS_PLANE_IPC || p == PS_PLANE_SHM, out, cap);
    }
    return rv;
}

static int connect_servers(ps_t *ps)
{
    int S = ps->boot.nservers, rv = 0;
    char *eps[S];
    char(*lanes)[PS_BOOT_EP_LEN] = calloc((size_t)S + 1, sizeof *lanes);
    /* The client names servers by host in its messages for as long as it
     * lives: the table outlives this call (freed by ps_finalize). */
    ps->server_hosts = calloc((size_t)S, sizeof *ps->server_hosts);
    if (!ps->server_hosts || !lanes) {
        free(lanes);
        ps_error_set("ps_start: no memory for the endpoints of %d servers", S);
        return PS_ENOMEM;
    }
    for (int s = 0; rv == 0 && s < S; s++) {
        rv = lanes_to(ps, s, lanes[s], sizeof lanes[s]);
        eps[s] = lanes[s];
        ps->server_hosts[s] = ps_boot_server_host(&ps->boot, s);
    }
    wkr_client_cfg_t cc = {.rank = ps->boot.rank,
                           .nservers = S,
                           .endpoints = eps,
                           .hosts = ps->server_hosts,
                           .layout = &ps->layout,
                           .chunk_elems = (size_t)ps->srv.chunk_kib * 1024 / sizeof(float),
                           .streams = ps->opt.streams,
                           .io_threads = ps->opt.io_threads,
                           .timeout_ms = ps->opt.timeout_s * 1000,
                           .mode = (ps_mode_t)ps->srv.mode,
                           .staleness = ps->srv.staleness,
                           .keys = ps->keys.pub[0] ? &ps->keys : NULL,
                           .server_keys = ps_boot_server_keys(&ps->boot),
                           .compress = ps->opt.compress,
                           .nworkers = ps->boot.nworkers,
                           .tables = &ps->tables};
    if (rv == 0) {
        rv = wkr_client_new(&ps->client, &cc); /* the endpoints are read here only */
    }
    memset(&ps->keys, 0, sizeof ps->keys); /* the sockets have their copies */
    for (int t = 0; rv == 0 && t < ps->layout.n; t++) {
        wkr_client_set_arrays(ps->client, t, ps_api_weights_of(ps, t), ps_api_grads_of(ps, t));
    }
    free(lanes);
    return rv;
}

/* After the step "register" (the servers sized their segments): map the
 * segment of every server this worker reaches over shm (the path came
 * with its endpoint); a server without one is reached over ipc. */
static int attach_shm(ps_t *ps)
{
    int S = ps->boot.nservers, rv = 0;
    char(*paths)[PS_SHM_PATH] = calloc((size_t)S + 1, sizeof *paths);
    const char **list = calloc((size_t)S + 1, sizeof *list);
    if (!paths || !list) {
        ps_error_set("ps_start: no memory for the shared-memory paths of %d servers", S);
        rv = PS_ENOMEM;
    }
    for (int s = 0; rv == 0 && s < S; s++) {
        ps_plane_t p;
        if ((rv = plane_to(ps, s, &p)) != 0 || p != PS_PLANE_SHM) {
            continue;
        }
        rv = ps_shm_endpoint_path(ps_boot_server_endpoint(&ps->boot, s), paths[s], sizeof paths[s]);
        if (rv == PS_ENOENT) {
            rv = 0; /* the server said why: its workers use ipc */
        }
        list[s] = paths[s];
    }
    if (rv == 0) {
        rv = wkr_client_attach_shm(ps->client, list);
    }
    free(paths);
    free(list);
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
    if (rv == 0) {
        rv = ps_rows_connect(ps); /* row replies; TABLES goes with REGISTER */
    }
    if (rv == 0 && ps->boot.rank == 0) {
        rv = wkr_client_register(ps->client);
    }
    if (rv == 0 && ps->rc != 0) {
        rv = ps->rc;
        ps_error_set("%s", ps->why);
    }
    if ((rv = ps_api_agree(ps, PS_STEP_REGISTER, rv)) != 0) {
        return ps_api_startup_failed(ps, rv);
    }
    rv = attach_shm(ps);
    /* A resumed run continues from the servers' step. */
    ps_boot_bcast(&ps->boot, PS_STEP_START, &start, sizeof start);
    ps->step = start;
    ps->state = ST_STARTED;
    return rv == 0 ? 0 : ps_api_break(ps, rv);
}

int ps_start(ps_t *ps)
{
    if (!ps) {
        return ps_api_no_handle("ps_start");
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
        return ps_api_break(ps, rv); /* the initial weights */
    }
    drop_initial_values(ps);
    return 0;
}

int ps_done(ps_t *ps)
{
    int rv = ps_api_data_plane_open(ps, "ps_done");
    if (rv != 0 || ps->shut) {
        return rv;
    }
    if (ps->pushed) {
        rv = ps_pull(ps); /* so no reply is left on its way to a closed socket */
    } else if (ps->open) {
        ps_error_set("step %llu was pushed only in part (%d of %d tensors): push every tensor "
                     "of a step",
                     (unsigned long long)ps->step, ps->npushed, ps->layout.n);
        rv = ps_api_break(ps, PS_ESTATE);
    }
    if (rv == 0) {
        wkr_client_wait_sends(ps->client);
        if ((rv = wkr_client_shutdown(ps->client)) != 0) {
            return ps_api_break(ps, rv);
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
    if (ps->state == ST_STARTED && ps_api_complete_reductions(ps) != 0) {
        ps_api_break(ps, PS_EMPI);
    }
    return ps->state == ST_BROKEN ? ps->rc : ps_api_agree(ps, PS_STEP_DONE, 0);
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
        ps_api_complete_reductions(ps); /* the workers' start-up ended alike: they all get here */
    }
    int rv = ps->rc;
    if (ps->state == ST_BOOTED || ps->state == ST_JOINED || ps->state == ST_PLANNED) {
        abandon_start(ps);
        rv = ps->rc;
    } else if (ps->state == ST_STARTED) {
        rv = leave_job(ps);
    }
    if (ps->state == ST_BROKEN) {
        int sig = ps->rc == PS_EINTR ? ps_signal_stop_requested() : 0;
        ps_log_error("%s", ps->why);
        ps_boot_abort(&ps->boot, sig ? 128 + sig : 3);
    }
    if (ps->signals) {
        ps_signal_uninstall();
    }
    ps_rows_fini(ps);
    wkr_client_destroy(&ps->client);
    free(ps->server_hosts);
    free(ps->params);
    free(ps->grads);
    free(ps->disagree);
    memset(&ps->keys, 0, sizeof ps->keys);
    ps_boot_fini(&ps->boot);
    free(ps);
    *pp = NULL;
    return rv;
}
