/*
 * ps_boot: the control plane, and the only code that includes mpi.h.
 *
 * Both binaries share MPI_COMM_WORLD; ps_boot_init splits it by role into a
 * server and a worker communicator and counts both roles.  Every function
 * here is collective over the group its comment names: all ranks of that
 * group must call it in the same order.
 *
 * World collectives of the start-up are steps of the one table in
 * ps_startup.h (ps_boot_agree, ps_boot_exchange, ps_boot_bcast take the
 * step): ranks that reach different steps end the job naming both (exit
 * status 2) instead of hanging.  Start-up errors are agreed on with
 * ps_boot_agree so that a bad flag or file on one rank ends every rank with
 * a clean exit, every rank's error being the failing rank's message;
 * errors during training use ps_boot_abort, which ends the whole job.
 *
 * MPI errors are returned (MPI_ERRORS_RETURN is set on MPI_COMM_WORLD), as
 * PS_EMPI with a message naming the call.  Inside a start-up step, where
 * the other ranks are already in the same collective and cannot be told,
 * an MPI failure ends the job instead (exit status 2, the message logged).
 */
#ifndef PS_BOOT_H
#define PS_BOOT_H

#include "ps_startup.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int is_server;
    int world_rank, world_size;
    int rank; /* rank within the role */
    int nservers, nworkers;
    int single_host; /* every rank runs on this host */
    char host[256];
    void *impl; /* communicators */
} ps_boot_t;

/* World: MPI_Init (unless the caller initialised MPI already: then MPI
 * stays the caller's, and ps_boot_fini leaves it running with the
 * caller's error handler back on MPI_COMM_WORLD), role split, and every
 * rank's host name and `transport` (its --transport, a ps_plane_t, which
 * ps_boot only carries), so that servers know before they bind where the
 * workers run and what they want.  Returns PS_ENOMEM, with a message and
 * MPI untouched, when it cannot start; once MPI is up a failure ends the
 * job (exit status 2). */
int ps_boot_init(ps_boot_t *b, int *argc, char ***argv, int is_server, int transport);
/* World, a PS_STEP_AGREE step: 0 when every rank passes rc == 0; otherwise
 * our own rc when we failed, else PS_ESTATE.  The lowest failing rank logs
 * its ps_error_msg() (so callers do not), giving one error line for the
 * whole job, and the ranks that passed 0 get that message as their
 * ps_error_msg().  A rank asked to stop (ps_signal) fails the step with
 * PS_EINTR. */
int ps_boot_agree(ps_boot_t *b, ps_step_t step, int rc);
#define PS_BOOT_EP_LEN 512 /* room for a server's endpoint (with its lanes) */

/* World, step PS_STEP_EXCHANGE: servers pass their endpoint (shorter than
 * PS_BOOT_EP_LEN), workers NULL; everyone passes its CurveZMQ public key
 * ("" or NULL without one); workers pass the connections they will open
 * to each server (their --streams), servers 0; every rank's process id
 * goes with it.  On return every rank has the endpoints, public keys,
 * stream counts and process ids of all ranks, by role rank (owned by b).
 * The launcher's channel is the root of trust for the keys and the pids: a
 * server binds each worker rank to its key (tcp) and, for the workers on
 * its host, to its pid (ipc).  A rank that cannot allocate the tables
 * fails every rank's call, agreed like ps_boot_agree. */
int ps_boot_exchange(ps_boot_t *b, const char *my_endpoint, const char *my_pubkey, int my_streams);
const char *ps_boot_server_endpoint(const ps_boot_t *b, int server);
/* Public keys by role rank: [n][41] arrays, "" where a rank has none. */
const char (*ps_boot_server_keys(const ps_boot_t *b))[41];
const char (*ps_boot_worker_keys(const ps_boot_t *b))[41];
/* Streams per server of every worker, by worker rank ([nworkers]). */
const int *ps_boot_worker_streams(const ps_boot_t *b);
/* Host names and --transport values by role rank (known after
 * ps_boot_init); "?" for a worker rank out of range. */
const char *ps_boot_server_host(const ps_boot_t *b, int server);
const char *ps_boot_worker_host(const ps_boot_t *b, int w);
int ps_boot_server_transport(const ps_boot_t *b, int server);
int ps_boot_worker_transport(const ps_boot_t *b, int w);
/* Worker w's process id (after ps_boot_exchange). */
int64_t ps_boot_worker_pid(const ps_boot_t *b, int w);
/* World, a PS_STEP_BCAST_* step: `len` bytes from the step's root (server
 * rank 0 or worker rank 0) to every rank.  Cannot fail: an MPI failure
 * ends the job. */
void ps_boot_bcast(ps_boot_t *b, ps_step_t step, void *buf, size_t len);
/* Workers: element-wise sum of n doubles over all workers, result on all. */
int ps_boot_workers_sum(ps_boot_t *b, double *vals, int n);
/* A pending non-blocking reduction (see ps_boot_workers_isum). */
typedef struct {
    _Alignas(8) unsigned char impl[16];
    int active;
} ps_boot_req_t;

/* Workers: start an element-wise sum of n doubles in place, without
 * waiting for the others (so an epoch's metrics do not make fast workers
 * wait for slow ones).  `vals` must stay valid until the request is done.
 * ps_boot_req_test makes progress and sets *done; ps_boot_req_wait blocks. */
int ps_boot_workers_isum(ps_boot_t *b, double *vals, int n, ps_boot_req_t *r);
int ps_boot_req_test(ps_boot_req_t *r, int *done);
int ps_boot_req_wait(ps_boot_req_t *r);
/* Workers: everyone's value of `mine`, by worker rank, into all[nworkers]. */
int ps_boot_workers_allgather_u64(ps_boot_t *b, uint64_t mine, uint64_t *all);
/* Servers: gather `n` floats from every server into `out` on server 0,
 * concatenated in server-rank order (counts[s] from each; out may be NULL
 * elsewhere). */
int ps_boot_servers_gather(ps_boot_t *b, const float *mine, size_t n, float *out,
                           const size_t *counts);
/* Servers: maximum of a value over all servers, on all. */
int ps_boot_servers_max_u64(ps_boot_t *b, uint64_t *v);
/* Servers, bounded: *lo becomes the minimum of every server's *lo, *hi
 * the maximum of their *hi, when every server takes part within
 * timeout_ms; else PS_ETIMEDOUT (then the job must end: the reduction is
 * left pending).  For the way out after a stop, where a server may be
 * gone. */
int ps_boot_servers_minmax_u64(ps_boot_t *b, uint64_t *lo, uint64_t *hi, int timeout_ms);
/* Ends every rank of the job with `code`, after removing the files
 * registered with ps_cleanup; does not return. */
void ps_boot_abort(ps_boot_t *b, int code) __attribute__((noreturn));
void ps_boot_fini(ps_boot_t *b);

#endif
