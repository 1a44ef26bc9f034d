#include "ps_boot.h"

#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_signal.h"
#include "ps_startup.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EP_LEN PS_BOOT_EP_LEN
#define HOST_LEN sizeof(((ps_boot_t *)0)->host)
#define KEY_LEN 41

typedef struct {
    MPI_Comm role;
    int owns_mpi;             /* we called MPI_Init, so we call MPI_Finalize */
    MPI_Errhandler caller_eh; /* the caller's handler on MPI_COMM_WORLD, restored */
    int server0_world;        /* world rank of server rank 0 */
    int worker0_world;        /* world rank of worker rank 0 */
    char (*server_ep)[EP_LEN];
    char (*server_host)[HOST_LEN];
    char (*worker_host)[HOST_LEN];
    char (*server_key)[KEY_LEN];
    char (*worker_key)[KEY_LEN];
    int *worker_streams;
    int *server_transport, *worker_transport;
    int64_t *worker_pid;
} boot_impl_t;

static boot_impl_t *impl(const ps_boot_t *b)
{
    return (boot_impl_t *)b->impl;
}

static int mpi_fail(const char *what, int err)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, msg, &len);
    ps_error_set("%s: %s", what, msg);
    return PS_EMPI;
}

/* What every rank is and where it runs, known at init. */
typedef struct {
    int is_server;
    int rank;
    int transport;
    char host[HOST_LEN];
} who_rec_t;

static void store_who(ps_boot_t *b, const who_rec_t *all)
{
    boot_impl_t *im = impl(b);
    b->single_host = 1;
    for (int i = 0; i < b->world_size; i++) {
        const who_rec_t *p = &all[i];
        if (p->is_server) {
            memcpy(im->server_host[p->rank], p->host, HOST_LEN);
            im->server_transport[p->rank] = p->transport;
        } else {
            memcpy(im->worker_host[p->rank], p->host, HOST_LEN);
            im->worker_transport[p->rank] = p->transport;
        }
        if (strcmp(p->host, b->host) != 0) {
            b->single_host = 0;
        }
    }
}

/* Every rank's host and --transport: whether a server binds ipc, tcp or
 * both depends on where the workers run and what they want, so it is
 * known before any server binds. */
static int gather_ranks(ps_boot_t *b, int transport)
{
    boot_impl_t *im = impl(b);
    who_rec_t mine, *all = calloc((size_t)b->world_size, sizeof *all);
    im->server_host = calloc((size_t)b->nservers + 1, HOST_LEN);
    im->worker_host = calloc((size_t)b->nworkers + 1, HOST_LEN);
    im->server_transport = calloc((size_t)b->nservers + 1, sizeof(int));
    im->worker_transport = calloc((size_t)b->nworkers + 1, sizeof(int));
    if (!all || !im->server_host || !im->worker_host || !im->server_transport ||
        !im->worker_transport) {
        free(all);
        ps_error_set("start-up: no memory for the host names of %d ranks", b->world_size);
        return PS_ENOMEM;
    }
    memset(&mine, 0, sizeof mine);
    mine.is_server = b->is_server;
    mine.rank = b->rank;
    mine.transport = transport;
    snprintf(mine.host, HOST_LEN, "%s", b->host);
    int rv =
        MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all, sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
    if (rv == MPI_SUCCESS) {
        store_who(b, all);
    }
    free(all);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Allgather of the host names", rv);
}

/* Once MPI is up, the other ranks are already inside the same collective
 * calls: a failure here cannot be agreed on, only end the job. */
static void boot_fatal(ps_boot_t *b, const char *what, int err)
{
    mpi_fail(what, err);
    ps_log_error("start-up: %s", ps_error_msg());
    ps_boot_abort(b, 2);
}

int ps_boot_init(ps_boot_t *b, int *argc, char ***argv, int is_server, int transport)
{
    memset(b, 0, sizeof *b);
    boot_impl_t *im = calloc(1, sizeof *im);
    if (!im) {
        ps_error_set("start-up: no memory for the control plane (%zu bytes)", sizeof *im);
        return PS_ENOMEM;
    }
    b->impl = im;
    int up = 0, rv;
    MPI_Initialized(&up);
    if (!up) {
        MPI_Init(argc, argv); /* MPI's default handler: a failure here aborts */
        im->owns_mpi = 1;
    } else {
        MPI_Comm_get_errhandler(MPI_COMM_WORLD, &im->caller_eh);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &b->world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &b->world_size);
    b->is_server = is_server;
    if ((rv = MPI_Comm_split(MPI_COMM_WORLD, is_server ? 0 : 1, b->world_rank, &im->role)) !=
        MPI_SUCCESS) {
        boot_fatal(b, "MPI_Comm_split by role", rv);
    }
    MPI_Comm_rank(im->role, &b->rank);
    int mine = is_server, servers = 0;
    if ((rv = MPI_Allreduce(&mine, &servers, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD)) != MPI_SUCCESS) {
        boot_fatal(b, "MPI_Allreduce counting the servers", rv);
    }
    b->nservers = servers;
    b->nworkers = b->world_size - servers;
    gethostname(b->host, sizeof b->host - 1);
    if ((rv = gather_ranks(b, transport)) != 0) {
        ps_log_error("start-up: %s", ps_error_msg());
        ps_boot_abort(b, 2);
    }
    return 0;
}

/*
 * Every step of the start-up table begins with this one collective, the
 * same on every rank whatever the step's kind: an MPI_Allreduce(MIN) of
 * {step, -step, the rank if it failed}.  Ranks at different steps see it
 * at once (min != max) and end the job naming both steps, instead of
 * meeting in mismatched MPI calls.  Returns the lowest failing world rank,
 * INT_MAX when none failed.
 */
static int step_begin(ps_boot_t *b, ps_step_t s, int kind, int rc)
{
    const ps_step_info_t *si = ps_step_info((int)s);
    if (!si || (int)si->kind != kind) {
        ps_log_error("start-up: step %d '%s' run as the wrong kind of collective (a bug: see "
                     "common/ps_startup.h)",
                     (int)s, ps_step_name((int)s));
        ps_boot_abort(b, 2);
    }
    int v[3] = {(int)s, -(int)s, rc != 0 ? b->world_rank : INT_MAX}, r[3];
    int err = MPI_Allreduce(v, r, 3, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) {
        boot_fatal(b, "MPI_Allreduce of a start-up step", err);
    }
    if (r[0] != -r[1]) {
        int other = r[0] != (int)s ? r[0] : -r[1];
        ps_log_error("start-up out of step: this rank is at step %d '%s' while another is at "
                     "step %d '%s'; both roles must run the table in common/ps_startup.h",
                     (int)s, si->name, other, ps_step_name(other));
        ps_boot_abort(b, 2);
    }
    return r[2];
}

/* A failed step: the lowest failing rank says why, in one line for the
 * job, and every rank that did not fail takes its message as its own
 * error, so that a library caller on any rank can tell the real reason. */
static int step_failed(ps_boot_t *b, int first, int rc)
{
    char why[512];
    if (first == b->world_rank) {
        ps_log_error("%s", ps_error_msg());
    }
    snprintf(why, sizeof why, "%s", first == b->world_rank ? ps_error_msg() : "");
    int err = MPI_Bcast(why, (int)sizeof why, MPI_CHAR, first, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) {
        boot_fatal(b, "MPI_Bcast of a start-up failure", err);
    }
    if (rc == 0) {
        ps_error_set("%s", why);
    }
    return rc != 0 ? rc : PS_ESTATE;
}

int ps_boot_agree(ps_boot_t *b, ps_step_t step, int rc)
{
    if (rc == 0 && ps_signal_stop_requested()) {
        rc = ps_signal_stopped(); /* start-up ends at the next agreement */
    }
    int first = step_begin(b, step, PS_STEP_AGREE, rc);
    return first == INT_MAX ? 0 : step_failed(b, first, rc);
}

typedef struct {
    int is_server;
    int rank;
    char ep[EP_LEN];
    char key[KEY_LEN];
    int streams;
    int64_t pid;
} peer_rec_t;

static void store_peers(ps_boot_t *b, const peer_rec_t *all)
{
    boot_impl_t *im = impl(b);
    for (int i = 0; i < b->world_size; i++) {
        const peer_rec_t *p = &all[i];
        if (p->is_server) {
            memcpy(im->server_ep[p->rank], p->ep, EP_LEN);
            memcpy(im->server_key[p->rank], p->key, KEY_LEN);
            if (p->rank == 0) {
                im->server0_world = i;
            }
        } else {
            memcpy(im->worker_key[p->rank], p->key, KEY_LEN);
            im->worker_streams[p->rank] = p->streams;
            im->worker_pid[p->rank] = p->pid;
            if (p->rank == 0) {
                im->worker0_world = i;
            }
        }
    }
}

int ps_boot_exchange(ps_boot_t *b, const char *my_endpoint, const char *my_pubkey, int my_streams)
{
    boot_impl_t *im = impl(b);
    peer_rec_t mine, *all = calloc((size_t)b->world_size, sizeof *all);
    im->server_ep = calloc((size_t)b->nservers + 1, EP_LEN);
    im->server_key = calloc((size_t)b->nservers + 1, KEY_LEN);
    im->worker_key = calloc((size_t)b->nworkers + 1, KEY_LEN);
    im->worker_streams = calloc((size_t)b->nworkers + 1, sizeof *im->worker_streams);
    im->worker_pid = calloc((size_t)b->nworkers + 1, sizeof *im->worker_pid);
    int rc = 0;
    if (!all || !im->server_ep || !im->server_key || !im->worker_key || !im->worker_streams ||
        !im->worker_pid) {
        ps_error_set("start-up: no memory for the endpoints of %d ranks", b->world_size);
        rc = PS_ENOMEM;
    }
    /* Agreed before the all-gather, which needs every rank's buffers. */
    int first = step_begin(b, PS_STEP_EXCHANGE, PS_STEP_EXCHANGE_ALL, rc);
    if (first != INT_MAX) {
        free(all);
        return step_failed(b, first, rc);
    }
    memset(&mine, 0, sizeof mine);
    mine.is_server = b->is_server;
    mine.rank = b->rank;
    snprintf(mine.ep, EP_LEN, "%s", my_endpoint ? my_endpoint : "");
    snprintf(mine.key, KEY_LEN, "%s", my_pubkey ? my_pubkey : "");
    mine.streams = my_streams;
    mine.pid = (int64_t)getpid();
    int err =
        MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all, sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) {
        boot_fatal(b, "MPI_Allgather of the endpoints", err);
    }
    store_peers(b, all);
    free(all);
    return 0;
}

const char *ps_boot_server_endpoint(const ps_boot_t *b, int server)
{
    return impl(b)->server_ep[server];
}

const char (*ps_boot_server_keys(const ps_boot_t *b))[41]
{
    return (const char(*)[41])impl(b)->server_key;
}

const char (*ps_boot_worker_keys(const ps_boot_t *b))[41]
{
    return (const char(*)[41])impl(b)->worker_key;
}

const int *ps_boot_worker_streams(const ps_boot_t *b)
{
    return impl(b)->worker_streams;
}

const char *ps_boot_server_host(const ps_boot_t *b, int server)
{
    return impl(b)->server_host[server];
}

int ps_boot_server_transport(const ps_boot_t *b, int server)
{
    return impl(b)->server_transport[server];
}

int ps_boot_worker_transport(const ps_boot_t *b, int w)
{
    return impl(b)->worker_transport[w];
}

int64_t ps_boot_worker_pid(const ps_boot_t *b, int w)
{
    return impl(b)->worker_pid ? impl(b)->worker_pid[w] : 0;
}

const char *ps_boot_worker_host(const ps_boot_t *b, int w)
{
    if (w < 0 || w >= b->nworkers || !impl(b)->worker_host) {
        return "?";
    }
    return impl(b)->worker_host[w];
}

void ps_boot_bcast(ps_boot_t *b, ps_step_t step, void *buf, size_t len)
{
    const ps_step_info_t *si = ps_step_info((int)step);
    int kind = si ? (int)si->kind : -1;
    int root = kind == PS_STEP_BCAST_WORKER0 ? impl(b)->worker0_world : impl(b)->server0_world;
    if (kind != PS_STEP_BCAST_WORKER0) {
        kind = PS_STEP_BCAST_SERVER0; /* step_begin ends the job for any other kind */
    }
    step_begin(b, step, kind, 0);
    if (len > INT_MAX) {
        ps_log_error("start-up: step '%s' broadcasts %zu bytes (a bug)", si->name, len);
        ps_boot_abort(b, 2);
    }
    int err = MPI_Bcast(buf, (int)len, MPI_BYTE, root, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) {
        boot_fatal(b, "MPI_Bcast of a start-up step", err);
    }
}

int ps_boot_workers_sum(ps_boot_t *b, double *vals, int n)
{
    int rv = MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, MPI_SUM, impl(b)->role);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Allreduce", rv);
}

_Static_assert(sizeof(MPI_Request) <= sizeof(((ps_boot_req_t *)0)->impl), "MPI_Request size");

int ps_boot_workers_isum(ps_boot_t *b, double *vals, int n, ps_boot_req_t *r)
{
    MPI_Request *req = (MPI_Request *)(void *)r->impl;
    int rv = MPI_Iallreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, MPI_SUM, impl(b)->role, req);
    r->active = rv == MPI_SUCCESS;
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Iallreduce", rv);
}

int ps_boot_req_test(ps_boot_req_t *r, int *done)
{
    *done = 1;
    if (!r->active) {
        return 0;
    }
    int rv = MPI_Test((MPI_Request *)(void *)r->impl, done, MPI_STATUS_IGNORE);
    if (*done) {
        r->active = 0;
    }
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Test", rv);
}

int ps_boot_req_wait(ps_boot_req_t *r)
{
    if (!r->active) {
        return 0;
    }
    r->active = 0;
    int rv = MPI_Wait((MPI_Request *)(void *)r->impl, MPI_STATUS_IGNORE);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Wait", rv);
}

int ps_boot_workers_allgather_u64(ps_boot_t *b, uint64_t mine, uint64_t *all)
{
    int rv = MPI_Allgather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, impl(b)->role);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Allgather", rv);
}

int ps_boot_servers_gather(ps_boot_t *b, const float *mine, size_t n, float *out,
                           const size_t *counts)
{
    int S = b->nservers, rv;
    int *cnt = calloc((size_t)S, sizeof *cnt), *disp = calloc((size_t)S, sizeof *disp);
    if (!cnt || !disp) {
        free(cnt);
        free(disp);
        ps_error_set("no memory to gather the model from %d servers", S);
        return PS_ENOMEM;
    }
    size_t off = 0;
    for (int s = 0; s < S; s++) {
        if (counts[s] > INT_MAX || off > INT_MAX) {
            free(cnt);
            free(disp);
            ps_error_set("model too large to gather in one MPI call");
            return PS_EINVAL;
        }
        cnt[s] = (int)counts[s];
        disp[s] = (int)off;
        off += counts[s];
    }
    rv = MPI_Gatherv(mine, (int)n, MPI_FLOAT, out, cnt, disp, MPI_FLOAT, 0, impl(b)->role);
    free(cnt);
    free(disp);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Gatherv", rv);
}

int ps_boot_servers_max_u64(ps_boot_t *b, uint64_t *v)
{
    int rv = MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_UINT64_T, MPI_MAX, impl(b)->role);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Allreduce", rv);
}

/* A non-blocking reduction polled against the clock, so a server that
 * never comes (stopped, or dead) cannot hold the others. */
int ps_boot_servers_minmax_u64(ps_boot_t *b, uint64_t *lo, uint64_t *hi, int timeout_ms)
{
    uint64_t mine[2] = {~*lo, *hi}, most[2];
    MPI_Request req;
    int rv = MPI_Iallreduce(mine, most, 2, MPI_UINT64_T, MPI_MAX, impl(b)->role, &req);
    if (rv != MPI_SUCCESS) {
        return mpi_fail("MPI_Iallreduce", rv);
    }
    double until = MPI_Wtime() + timeout_ms / 1000.0;
    int done = 0;
    while (!done && (rv = MPI_Test(&req, &done, MPI_STATUS_IGNORE)) == MPI_SUCCESS) {
        if (!done && MPI_Wtime() > until) {
            ps_error_set("not every server took part within %d ms", timeout_ms);
            return PS_ETIMEDOUT; /* the request is left behind: the job is ending */
        }
        if (!done) {
            usleep(500); /* other ranks share the cores */
        }
    }
    if (rv != MPI_SUCCESS) {
        return mpi_fail("MPI_Test", rv);
    }
    *lo = ~most[0];
    *hi = most[1];
    return 0;
}

void ps_boot_abort(ps_boot_t *b, int code)
{
    (void)b;
    ps_cleanup_run(); /* MPI_Abort does not return, nor run atexit */
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    _exit(code ? code : 1);
}

void ps_boot_fini(ps_boot_t *b)
{
    boot_impl_t *im = impl(b);
    int owns = !im || im->owns_mpi;
    if (im && !owns) {
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, im->caller_eh);
        MPI_Errhandler_free(&im->caller_eh);
    }
    if (im) {
        if (im->role != MPI_COMM_NULL && im->role) {
            MPI_Comm_free(&im->role);
        }
        free(im->server_ep);
        free(im->server_host);
        free(im->worker_host);
        free(im->server_key);
        free(im->worker_key);
        free(im->worker_streams);
        free(im->server_transport);
        free(im->worker_transport);
        free(im->worker_pid);
        free(im);
        b->impl = NULL;
    }
    if (owns) {
        MPI_Finalize();
    }
}
