#include "ps_boot.h"

#include "ps_err.h"

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
    int server0_world; /* world rank of server rank 0 */
    int worker0_world; /* world rank of worker rank 0 */
    char (*server_ep)[EP_LEN];
    char (*server_host)[HOST_LEN];
    char (*worker_host)[HOST_LEN];
    char (*server_key)[KEY_LEN];
    char (*worker_key)[KEY_LEN];
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

/* Whether every rank runs on this host decides loopback/ipc endpoints, so
 * it is known before any server binds. */
static int find_single_host(ps_boot_t *b)
{
    char (*hosts)[HOST_LEN] = calloc((size_t)b->world_size, HOST_LEN);
    char mine[HOST_LEN] = {0};
    if (!hosts) {
        return PS_ENOMEM;
    }
    snprintf(mine, HOST_LEN, "%s", b->host);
    int rv = MPI_Allgather(mine, HOST_LEN, MPI_CHAR, hosts, HOST_LEN, MPI_CHAR, MPI_COMM_WORLD);
    b->single_host = 1;
    for (int i = 0; rv == MPI_SUCCESS && i < b->world_size; i++) {
        if (strcmp(hosts[i], mine) != 0) {
            b->single_host = 0;
        }
    }
    free(hosts);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Allgather", rv);
}

int ps_boot_init(ps_boot_t *b, int *argc, char ***argv, int is_server)
{
    memset(b, 0, sizeof *b);
    boot_impl_t *im = calloc(1, sizeof *im);
    if (!im) {
        return PS_ENOMEM;
    }
    b->impl = im;
    int up = 0;
    MPI_Initialized(&up);
    if (!up) {
        MPI_Init(argc, argv);
        im->owns_mpi = 1;
    } else {
        MPI_Comm_get_errhandler(MPI_COMM_WORLD, &im->caller_eh);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &b->world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &b->world_size);
    b->is_server = is_server;
    int rv = MPI_Comm_split(MPI_COMM_WORLD, is_server ? 0 : 1, b->world_rank, &im->role);
    if (rv != MPI_SUCCESS) {
        return mpi_fail("MPI_Comm_split", rv);
    }
    MPI_Comm_rank(im->role, &b->rank);
    int mine = is_server, servers = 0;
    MPI_Allreduce(&mine, &servers, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    b->nservers = servers;
    b->nworkers = b->world_size - servers;
    gethostname(b->host, sizeof b->host - 1);
    return find_single_host(b);
}

int ps_boot_agree(ps_boot_t *b, int rc)
{
    int mine = rc != 0 ? b->world_rank : INT_MAX, first = INT_MAX;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS) {
        return PS_EMPI;
    }
    if (first == INT_MAX) {
        return 0;
    }
    /* One line for the job: the lowest failing rank says why. */
    if (first == b->world_rank) {
        ps_log_error("%s", ps_error_msg());
    }
    return rc != 0 ? rc : PS_ESTATE;
}

typedef struct {
    int is_server;
    int rank;
    char ep[EP_LEN];
    char host[HOST_LEN];
    char key[KEY_LEN];
} peer_rec_t;

static void store_peers(ps_boot_t *b, const peer_rec_t *all)
{
    boot_impl_t *im = impl(b);
    for (int i = 0; i < b->world_size; i++) {
        const peer_rec_t *p = &all[i];
        if (p->is_server) {
            memcpy(im->server_ep[p->rank], p->ep, EP_LEN);
            memcpy(im->server_host[p->rank], p->host, HOST_LEN);
            memcpy(im->server_key[p->rank], p->key, KEY_LEN);
            if (p->rank == 0) {
                im->server0_world = i;
            }
        } else {
            memcpy(im->worker_host[p->rank], p->host, HOST_LEN);
            memcpy(im->worker_key[p->rank], p->key, KEY_LEN);
            if (p->rank == 0) {
                im->worker0_world = i;
            }
        }
    }
}

int ps_boot_exchange(ps_boot_t *b, const char *my_endpoint, const char *my_pubkey)
{
    boot_impl_t *im = impl(b);
    peer_rec_t mine, *all = calloc((size_t)b->world_size, sizeof *all);
    im->server_ep = calloc((size_t)b->nservers + 1, EP_LEN);
    im->server_host = calloc((size_t)b->nservers + 1, HOST_LEN);
    im->worker_host = calloc((size_t)b->nworkers + 1, HOST_LEN);
    im->server_key = calloc((size_t)b->nservers + 1, KEY_LEN);
    im->worker_key = calloc((size_t)b->nworkers + 1, KEY_LEN);
    if (!all || !im->server_ep || !im->server_host || !im->worker_host || !im->server_key ||
        !im->worker_key) {
        free(all);
        return PS_ENOMEM;
    }
    memset(&mine, 0, sizeof mine);
    mine.is_server = b->is_server;
    mine.rank = b->rank;
    snprintf(mine.ep, EP_LEN, "%s", my_endpoint ? my_endpoint : "");
    snprintf(mine.host, HOST_LEN, "%s", b->host);
    snprintf(mine.key, KEY_LEN, "%s", my_pubkey ? my_pubkey : "");
    int rv = MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all, sizeof mine, MPI_BYTE,
                           MPI_COMM_WORLD);
    if (rv != MPI_SUCCESS) {
        free(all);
        return mpi_fail("MPI_Allgather", rv);
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

const char *ps_boot_server_host(const ps_boot_t *b, int server)
{
    return impl(b)->server_host[server];
}

const char *ps_boot_worker_host(const ps_boot_t *b, int w)
{
    if (w < 0 || w >= b->nworkers || !impl(b)->worker_host) {
        return "?";
    }
    return impl(b)->worker_host[w];
}

int ps_boot_bcast_from_server0(ps_boot_t *b, void *buf, size_t len)
{
    if (len > INT_MAX) {
        return PS_EINVAL;
    }
    int rv = MPI_Bcast(buf, (int)len, MPI_BYTE, impl(b)->server0_world, MPI_COMM_WORLD);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Bcast", rv);
}

int ps_boot_bcast_from_worker0(ps_boot_t *b, void *buf, size_t len)
{
    if (len > INT_MAX) {
        return PS_EINVAL;
    }
    int rv = MPI_Bcast(buf, (int)len, MPI_BYTE, impl(b)->worker0_world, MPI_COMM_WORLD);
    return rv == MPI_SUCCESS ? 0 : mpi_fail("MPI_Bcast", rv);
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

void ps_boot_abort(ps_boot_t *b, int code)
{
    (void)b;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    _exit(code ? code : 1);
}

void ps_boot_finalize(ps_boot_t *b)
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
        free(im);
        b->impl = NULL;
    }
    if (owns) {
        MPI_Finalize();
    }
}
