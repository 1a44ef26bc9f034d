/*
 * ps.h: the client library of the ps parameter server (libpsclient), for
 * writing your own worker.  A program built on it is a drop-in replacement
 * for ps-worker:
 *
 *     mpirun -np S ps-server [server flags] : -np W ./my-worker [my flags]
 *
 * Life of a worker (every call returns 0 or a negative PS_E* code):
 *
 *     ps_init      join the job: MPI, roles, endpoints, the servers' settings
 *     ps_declare   name the float32 tensors and their initial values
 *     ps_plan      steps per epoch and total steps (the servers' lr schedule)
 *     ps_start     agree with the other workers, register the model, pull it
 *     loop:        compute the mean gradient of your samples into ps_tensor()'s
 *                  gradient arrays, then ps_step() (or ps_push + ps_wait +
 *                  ps_pull); ps_reduce_sum() for metrics
 *     ps_finalize  tell the servers we are done; leave the job
 *
 * Collective calls.  ps_init, ps_start and ps_finalize are collective over
 * the whole job (servers included): every worker calls each once, in that
 * order.  ps_reduce_sum is collective over the workers.  Every worker must
 * run the same number of steps in sync and ssp mode (the servers wait for
 * everyone's push of a step).
 *
 * Ownership.  ps_init allocates the ps_t; ps_finalize frees it and NULLs the
 * caller's pointer (safe twice).  The library owns the weight and gradient
 * arrays (one flat float32 buffer each, in declaration order); ps_tensor()
 * lends pointers into them, valid from ps_start until ps_finalize.  Strings
 * and arrays passed in are copied; the caller keeps ownership of them.
 * While a push is in flight (from ps_push or ps_push_from until ps_wait
 * or ps_pull) the library reads the gradient arrays without copying: do
 * not write them.  The weight arrays change only inside ps_start, ps_pull
 * and ps_step.
 *
 * Errors.  Bad arguments (NULL, an unknown tensor, a call out of order) are
 * returned as PS_EINVAL / PS_ENOENT / PS_ESTATE and change nothing (but see
 * ps_declare); no call aborts the process because of them.
 * ps_last_error() has a one-line message.  Start-up calls (ps_init,
 * ps_start) agree on the outcome across the job: when any rank fails,
 * every rank's call fails, the lowest failing rank prints its message once
 * for the job, and each rank should then call ps_finalize and exit.  A
 * failed declaration or ps_fail() before ps_start is remembered and makes
 * ps_start fail that way.  After ps_start, a failure of the data plane (a
 * server timed out or refused a message, a non-finite gradient under the
 * servers' --on-nonfinite abort) or ps_fail() breaks the handle: later
 * calls return PS_ESTATE, and ps_finalize ends the whole job with the
 * message and exit status 3 (MPI_Abort), as ps-worker does, since the
 * servers cannot finish a step without this worker.
 *
 * MPI.  ps_init initialises MPI when the caller has not, and ps_finalize
 * then finalises it.  A caller that initialised MPI itself keeps it (see
 * ps_init).  The job's MPI_COMM_WORLD holds the servers and the workers;
 * the library splits it by role (a collective over MPI_COMM_WORLD that the
 * servers make too) and uses the workers' part for ps_reduce_sum.
 *
 * Threads.  A ps_t is not thread-safe: make all calls on it from one thread
 * at a time.  ps_last_error() is per thread.  The library starts libzmq I/O
 * threads of its own, which never call MPI or user code.
 */
#ifndef PS_H
#define PS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PS_API_VERSION 1 /* bumped when a declaration below changes */

#if defined(__GNUC__)
#define PS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PS_PRINTF(f, a)
#endif

#ifndef PS_ERR_H /* the library's own ps_err.h defines the same codes */
enum {
    PS_OK = 0,
    PS_EINVAL = -1,  /* bad argument, flag or value */
    PS_ENOMEM = -2,  /* allocation failed or size over a limit */
    PS_EIO = -3,     /* file or socket I/O failed */
    PS_EFORMAT = -4, /* malformed file content */
    PS_EPROTO = -5,  /* malformed or refused message */
    PS_ERANGE = -6,  /* value out of range (e.g. a non-finite gradient) */
    PS_ETIMEDOUT = -7,
    PS_ENOENT = -8,  /* no such tensor or file */
    PS_EMPI = -9,    /* an MPI call failed */
    PS_EZMQ = -10,   /* a zmq call failed */
    PS_ESTATE = -11, /* call not valid now (order, or a failed job) */
    PS_EAGAIN = -12,
};
/* Static text for a code; never NULL. */
const char *ps_strerror(int rv);
#endif

/* The message of the last failed call on this thread; never NULL. */
const char *ps_last_error(void);
/* The library's version, e.g. "0.2.0". */
const char *ps_version(void);

typedef struct ps ps_t;
typedef struct ps_push ps_push_t;

/* Options of ps_init.  Zero-initialise: 0 / NULL means the default. */
typedef struct {
    const char *name; /* log line prefix; default: the program's name */
    int timeout_s;    /* fail when the servers do not answer (default 300) */
    int io_threads;   /* libzmq I/O threads, 1..64 (default PS_DEFAULT_IO_THREADS) */
    int quiet;        /* log errors only */
    int compress;     /* pushes as 16-bit floats: PS_COMPRESS_* (default none) */
    int streams;      /* connections to each server, 1..16 (default PS_DEFAULT_STREAMS) */
} ps_options_t;

/* Measured on 16 MiB push+pulls (docs/performance.md): two connections
 * served by two I/O threads move ~1.2x the bytes of one. */
#define PS_DEFAULT_STREAMS 2
#define PS_DEFAULT_IO_THREADS 2
#define PS_MAX_STREAMS 16

#define PS_COMPRESS_NONE 0
#define PS_COMPRESS_FP16 1 /* IEEE binary16: 5 exponent bits, |g| < 65504 */
#define PS_COMPRESS_BF16 2 /* bfloat16: float32's range, 8 significant bits */

/*
 * Join the job (collective over MPI_COMM_WORLD), once per process.
 * argc/argv go to MPI_Init when MPI is not initialised yet (both may be
 * NULL); then ps_finalize finalises MPI.  When the caller initialised MPI
 * (MPI_Init before ps_init) it stays the caller's to finalise; that needs
 * a build whose ps_boot shares MPI (otherwise PS_ESTATE, without touching
 * MPI).  opt may be NULL.  On success *out is a new handle; on failure
 * *out is NULL, everything is released and MPI finalised if ps_init
 * initialised it.  Agreed: bad options or flags on any rank (a server's
 * too) fail every rank's ps_init.
 */
int ps_init(ps_t **out, int *argc, char ***argv, const ps_options_t *opt);

/* What ps_init learned; step is the first step this worker runs (after
 * ps_start: the step the servers resumed at, 0 for a new run). */
typedef struct {
    int rank; /* this worker among the workers, 0 .. nworkers-1 */
    int nworkers;
    int nservers;
    const char *mode; /* "sync", "ssp" or "async" (static string) */
    uint64_t staleness;
    double lr; /* the servers' base learning rate */
    uint64_t step;
} ps_info_t;
int ps_info(const ps_t *ps, ps_info_t *out);

/* Initial values of a tensor (only worker 0's are used: it registers the
 * model, and every worker starts from the servers' copy). */
typedef enum {
    PS_INIT_ZEROS = 0,
    PS_INIT_UNIFORM,      /* U(-bound, bound) from the library's RNG, seeded */
    PS_INIT_TORCH_LINEAR, /* PyTorch nn.Linear's default: U(-1/sqrt(fan_in), ..) */
    PS_INIT_VALUES,       /* copied from `values` (numel floats, row-major) */
} ps_init_kind_t;

typedef struct {
    ps_init_kind_t kind;
    float bound;         /* PS_INIT_UNIFORM */
    uint64_t seed;       /* PS_INIT_UNIFORM, PS_INIT_TORCH_LINEAR */
    int64_t fan_in;      /* PS_INIT_TORCH_LINEAR; 0: dims[1]*... of a
                            weight, the fan-in of "X.weight" for "X.bias" */
    const float *values; /* PS_INIT_VALUES */
} ps_init_t;

/*
 * Declare the next tensor of the model, between ps_init and ps_start:
 * name (1..63 bytes, unique; PyTorch names like "fc1.weight" make the
 * servers' --save file load into the matching nn.Module), ndim 1..4
 * positive dims.  init NULL means zeros.  Every worker must declare the
 * same tensors in the same order.  A failure is also remembered and makes
 * ps_start fail on every rank.
 */
int ps_declare(ps_t *ps, const char *name, int ndim, const int64_t *dims, const ps_init_t *init);

/* The training plan, before ps_start: the servers evaluate the learning-
 * rate schedule (step:..., cosine, warm-up) against it.  Both >= 1; every
 * worker must give the same values. */
int ps_plan(ps_t *ps, uint64_t steps_per_epoch, uint64_t total_steps);

/* Record a failure of the caller's own (e.g. a data file it cannot read)
 * with a printf-style message.  Before ps_start: ps_start then fails on
 * every rank and the lowest failing rank prints its message.  After: the
 * handle is broken (see Errors above). */
int ps_fail(ps_t *ps, const char *fmt, ...) PS_PRINTF(2, 3);

/*
 * Collective over the job: agree on the declarations and the plan with
 * every worker (a mismatch names the worker), hand the plan to the
 * servers, register the model (worker 0) and pull the servers' weights
 * into the tensors.  On failure every rank's ps_start fails; call
 * ps_finalize.
 */
int ps_start(ps_t *ps);

/* Pointers into the library's arrays for tensor `name` (after ps_start):
 * its weights, its gradient and its element count.  Any output may be
 * NULL.  PS_ENOENT for an unknown name. */
int ps_tensor(ps_t *ps, const char *name, float **weights, float **grads, size_t *numel);

/*
 * Push this step's gradient: every gradient array must hold the MEAN
 * gradient over the `samples` samples this worker used.  The servers
 * combine the workers' pushes weighted by their sample counts, so a worker
 * with fewer samples (an uneven shard, the end of an epoch) counts less;
 * with 0 samples the push carries no weight (the library zeroes the
 * arrays).  A NaN or Inf fails with PS_ERANGE, naming the tensor, under
 * the servers' --on-nonfinite abort, and drops the step for everyone under
 * skip.  Asynchronous: on return *handle (owned by ps) is in flight, and
 * the gradient arrays must not be written until ps_wait(*handle) or
 * ps_pull returns.  handle may be NULL.  One push per step.
 */
int ps_push(ps_t *ps, uint32_t samples, ps_push_t **handle);
/* Overlap (optional): during backward, once the gradients of `tensor` and
 * of every tensor declared after it are final, push those now (call it
 * for the last layer first); finish the step with ps_push, which sends the
 * rest.  `samples` must be the same in every call of a step.  With the
 * servers' --on-nonfinite skip, nothing leaves before ps_push. */
int ps_push_from(ps_t *ps, const char *tensor, uint32_t samples);
/* Wait until the push no longer reads the gradient arrays (the handle is
 * then done; waiting again returns 0 at once). */
int ps_wait(ps_push_t *handle);
/* Finish the step: block until the weights after this step's update
 * (as the consistency mode allows) are in the weight arrays. */
int ps_pull(ps_t *ps);
/* ps_push + ps_pull + ps_wait: on return the weights are updated and the
 * gradient arrays may be written. */
int ps_step(ps_t *ps, uint32_t samples);

/* Element-wise sum of vals[0..n) over all workers, in place, on every
 * worker (collective over the workers; after ps_init).  For metrics. */
int ps_reduce_sum(ps_t *ps, double *vals, int n);

/* The servers' learning rate at update `step` (after ps_start). */
int ps_lr(const ps_t *ps, uint64_t step, double *lr);

/* The servers' counters, combined over the servers: after ps_start and
 * outside a step (not between a push and its pull: PS_ESTATE). */
typedef struct {
    uint64_t staleness_max; /* of the pushes applied so far */
    uint64_t staleness_sum; /* mean = staleness_sum / applied */
    uint64_t applied;       /* pushes applied */
    uint64_t rejected;      /* messages the servers dropped */
    uint64_t version;       /* highest step applied */
} ps_stats_t;
int ps_stats(ps_t *ps, ps_stats_t *out);

/* Write the weights this worker holds (as of its last pull) to a
 * safetensors file, replaced atomically; metadata "step".  Local: any
 * worker may call it.  The servers' --save writes the final model with the
 * momentum buffers and the optimizer settings. */
int ps_save(ps_t *ps, const char *path);

/*
 * Leave the job (collective over the job): finish an open step, tell the
 * servers this worker is done, wait for the servers' end (their --save),
 * release everything and finalise MPI if ps_init initialised it.  Before
 * ps_start it ends the whole job's start-up with an error.  On a broken
 * handle it ends the whole job (see Errors).  Returns 0 when the job ended
 * well, else the failure.  Safe on NULL and twice; NULLs *ps.
 */
int ps_finalize(ps_t **ps);

#ifdef __cplusplus
}
#endif

#endif
