/*
 * ps.h: the client library of the ps parameter server (libpsclient), for
 * writing your own worker.  A program built on it is a drop-in replacement
 * for ps-worker (which is itself a program on this header alone):
 *
 *     mpirun -np S ps-server [server flags] : -np W ./my-worker [my flags]
 *
 * Life of a worker (every call returns 0 or a negative PS_E* code):
 *
 *     ps_init      join the job: MPI, roles, endpoints, the servers' settings
 *     ps_declare   name the float32 tensors and their initial values
 *     ps_bind      (optional) use your own arrays as a tensor's weights and
 *                  gradient
 *     ps_plan      steps per epoch and total steps (the servers' lr schedule)
 *     ps_start     agree with the other workers, register the model, pull it
 *     loop:        compute the mean gradient of your samples into the
 *                  gradient arrays, then either ps_step(), or per tensor
 *                  ps_push_tensor() as backward finishes each one and
 *                  ps_pull_tensor() + ps_wait_pulled() before forward needs
 *                  it (or ps_pull() for all); ps_reduce_sum() for metrics
 *     ps_finalize  tell the servers we are done (or ps_done earlier); leave
 *                  the job
 *
 * Collective calls.  ps_init, ps_start and ps_finalize are collective over
 * the whole job (servers included): every worker calls each once, in that
 * order.  ps_reduce_sum and ps_reduce_sum_start are collective over the
 * workers.  Every worker must run the same number of steps in sync and ssp
 * mode (the servers wait for everyone's push of a step).
 *
 * Steps.  A step begins with its first push (ps_push, ps_push_tensor or
 * ps_push_from) and is pushed once every tensor is.  It ends when the
 * weights for the next step are in the weight arrays: when ps_pull (or
 * ps_step) returns, or when every tensor has been pulled with
 * ps_pull_tensor and the last of those pulls is seen complete (by
 * ps_wait_pulled, ps_test_pulled, or the next step's first push, which
 * waits for them).  Each tensor is pushed once per step; a pull needs the
 * step's push of its tensor.
 *
 * Ownership.  ps_init allocates the ps_t; ps_finalize frees it and NULLs the
 * caller's pointer (safe twice).  A tensor's weights and gradient are two
 * float32 arrays of numel elements, row-major:
 *   - the library's by default (tensors laid end to end in declaration
 *     order in one flat array per side), lent by ps_tensor() from
 *     ps_start until ps_finalize; never free them;
 *   - the caller's after ps_bind: the caller allocates them, keeps them
 *     valid and in place from ps_bind until ps_finalize returns, and frees
 *     them afterwards.  The library never copies them per step: pushes read
 *     the gradient in place and pulls write the weights in place.
 * Either way, the library writes a tensor's weights only inside ps_start,
 * ps_pull, ps_step, ps_finalize and, once the tensor is pulled with
 * ps_pull_tensor, the wait, test and push calls of that step; it reads
 * a pushed gradient without copying until the push is sent (ps_wait_sent
 * / ps_test_sent, or the step's end): do not write it before.  With 0
 * samples the library zeroes the pushed gradient itself.  Handles
 * (ps_push_t, ps_pull_t) belong to the ps_t: one per tensor, reused every
 * step.  Strings and arrays passed in otherwise are copied or used during
 * the call only.
 *
 * Errors.  Bad arguments (NULL, an unknown tensor, a call out of order) are
 * returned as PS_EINVAL / PS_ENOENT / PS_ESTATE and change nothing (but see
 * ps_declare); no call aborts the process because of them.
 * ps_last_error() has a one-line message.  Start-up calls (ps_init,
 * ps_start) agree on the outcome across the job: when any rank fails,
 * every rank's call fails, the lowest failing rank prints its message once
 * for the job (ps_last_error() on the other ranks returns it too), and
 * each rank should then call ps_finalize and exit.  A
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
 * servers make too) and uses the workers' part for the reductions.
 *
 * Signals.  The library installs no signal handler unless asked.  With
 * ps_options_t.signals = PS_SIGNALS_STOP (as ps-worker does), ps_init
 * takes SIGINT and SIGTERM (after MPI_Init) and ps_finalize puts the
 * previous handlers back.  A signal then makes the call that waits for the
 * servers (ps_pull, ps_step, ps_wait_pulled, ...: a step's pushes are all
 * sent first) or the next start-up call return PS_EINTR, "stopped by
 * SIGTERM"; the handle is broken, and ps_finalize ends the whole job with
 * exit status 128 + the signal (the servers write a last checkpoint when
 * they can).  A process that has not ended 5 s after the signal is ended
 * (waits inside MPI cannot be interrupted).  A program that handles
 * signals itself leaves PS_SIGNALS_NONE; the library then takes no signal,
 * and a worker killed by one leaves no file behind (the servers own the
 * job's sockets).
 *
 * Threads.  A ps_t is not thread-safe: make all calls on it from one thread
 * at a time.  ps_last_error() is per thread.  The library starts libzmq I/O
 * threads of its own, which never call MPI or user code.
 *
 * Versions.  PS_API_VERSION changes with every change of this header:
 *   1  libpsclient 0.1.0
 *   2  0.2.0: ps_options_t.compress and .streams
 *   3  0.3.0: ps_options_t.struct_size (PS_OPTIONS_INIT), ps_bind,
 *      per-tensor ps_push_tensor / ps_pull_tensor with ps_wait_sent,
 *      ps_test_sent, ps_wait_pulled, ps_test_pulled (ps_wait is
 *      ps_wait_sent's old name), ps_reduce_sum_start with
 *      ps_wait_reduced / ps_test_reduced, ps_require_same, ps_done,
 *      ps_info_t.world_rank / .world_size, ps_stats_t.apply_s,
 *      ps_initializer_t (ps_init_t is its old name)
 *   4  ps_options_t.signals (PS_SIGNALS_STOP), PS_EINTR; a failed start-up
 *      gives every rank the failing rank's message
 *   5  ps_options_t.transport (PS_TRANSPORT_*)
 *   6  0.4.0: ps_set_tensor_opts (per-tensor weight decay and
 *      learning-rate scale); sparse tables: ps_declare_table,
 *      ps_pull_rows, ps_push_rows, ps_wait_rows, ps_test_rows (ps_rows_t);
 *      PS_TRANSPORT_SHM (auto now means shared memory on one host)
 * 0.x versions keep the soname libpsclient.so.0 and make no ABI promise:
 * rebuild a program for a new minor version.  From 3 on, ps_options_t
 * carries its size, so later versions read an older caller's options.
 */
#ifndef PS_H
#define PS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PS_API_VERSION 6 /* see Versions above */

#if defined(__GNUC__)
#define PS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PS_PRINTF(f, a)
#endif

#ifndef PS_ERR_H /* the library's own ps_err.h defines the same codes */
#define PS_H_ERROR_CODES
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
    PS_EINTR = -13, /* stopped by SIGINT/SIGTERM (ps_options_t.signals) */
};
/* Static text for a code; never NULL. */
const char *ps_strerror(int rv);
#endif

/* The message of the last failed call on this thread; never NULL. */
const char *ps_last_error(void);
/* The library's version, e.g. "0.4.0". */
const char *ps_version(void);

typedef struct ps ps_t;
typedef struct ps_push ps_push_t;     /* a tensor's (or the step's) push */
typedef struct ps_pull ps_pull_t;     /* a tensor's pull */
typedef struct ps_reduce ps_reduce_t; /* a reduction in flight */

/* Options of ps_init.  Start from PS_OPTIONS_INIT (it sets struct_size);
 * 0 / NULL in any other field means the default. */
typedef struct {
    size_t struct_size; /* sizeof(ps_options_t) as the caller was compiled */
    const char *name;   /* log line prefix; default: the program's name */
    int timeout_s;      /* fail when the servers do not answer (default 300) */
    int io_threads;     /* libzmq I/O threads, 1..64 (default PS_DEFAULT_IO_THREADS) */
    int quiet;          /* log errors only */
    int compress;       /* pushes as 16-bit floats: PS_COMPRESS_* (default none) */
    int streams;        /* connections to each server, 1..16 (default PS_DEFAULT_STREAMS) */
    int signals;        /* PS_SIGNALS_STOP: SIGINT/SIGTERM stop the job (see Signals);
                           default PS_SIGNALS_NONE: the library installs no handler */
    int transport;      /* data plane: PS_TRANSPORT_* (default auto); API 5 */
} ps_options_t;

/* Every field listed, so that it compiles without warnings in C and C++. */
/* clang-format off */
#define PS_OPTIONS_INIT {sizeof(ps_options_t), 0, 0, 0, 0, 0, 0, 0, 0}
/* clang-format on */

/* Measured on 16 MiB push+pulls (docs/performance.md): two connections
 * served by two I/O threads move ~1.2x the bytes of one. */
#define PS_DEFAULT_STREAMS 2
#define PS_DEFAULT_IO_THREADS 2
#define PS_MAX_STREAMS 16

/* How the worker reaches each server (ps-worker --transport; the servers
 * have the same flag).  Auto: shared memory to a server on this host (the
 * tensors in a segment only this job's ranks map, the small messages that
 * say "it is there" over ipc), tcp (CurveZMQ unless the servers run
 * --insecure) to the others.  SHM, IPC (a unix socket in a private
 * folder, the peer's process checked) or TCP for every server; a pair the
 * two sides name differently (auto goes with any), or shm/ipc across
 * hosts, fails ps_init naming both.  A server that cannot make its segment
 * (e.g. /dev/shm full) serves its shm workers over ipc and says so. */
#define PS_TRANSPORT_AUTO 0
#define PS_TRANSPORT_IPC 1
#define PS_TRANSPORT_TCP 2
#define PS_TRANSPORT_SHM 3

#define PS_COMPRESS_NONE 0
/* A chunk holding a finite value the format would round to Inf goes as
 * float32 instead, so a finite gradient always arrives finite. */
#define PS_COMPRESS_FP16 1 /* IEEE binary16: 5 exponent bits, |g| <= 65504 */
#define PS_COMPRESS_BF16 2 /* bfloat16: float32's range, 8 significant bits */

#define PS_SIGNALS_NONE 0 /* signals are the program's business */
#define PS_SIGNALS_STOP 1 /* ps_init takes SIGINT and SIGTERM (see Signals) */

/*
 * Join the job (collective over MPI_COMM_WORLD), once per process.
 * argc/argv go to MPI_Init when MPI is not initialised yet (both may be
 * NULL); then ps_finalize finalises MPI.  When the caller initialised MPI
 * (MPI_Init before ps_init) it stays the caller's to finalise; that needs
 * a build whose ps_boot shares MPI (otherwise PS_ESTATE, without touching
 * MPI).  opt may be NULL (all defaults).  The library reads opt's first
 * struct_size bytes: the fields of an older, shorter ps_options_t keep
 * their defaults beyond them; a newer, longer one is accepted when the
 * fields this library does not know are 0.  On success *out is a new
 * handle; on failure *out is NULL, everything is released and MPI
 * finalised if ps_init initialised it.  Agreed: bad options or flags on
 * any rank (a server's too) fail every rank's ps_init.
 */
int ps_init(ps_t **out, int *argc, char ***argv, const ps_options_t *opt);

/* What ps_init learned; step is the step the next push belongs to (after
 * ps_start: at first the step the servers resumed at, 0 for a new run). */
typedef struct {
    int rank; /* this worker among the workers, 0 .. nworkers-1 */
    int nworkers;
    int nservers;
    const char *mode; /* "sync", "ssp" or "async" (static string) */
    uint64_t staleness;
    double lr; /* the servers' base learning rate */
    uint64_t step;
    int world_rank; /* this process in MPI_COMM_WORLD (servers and workers) */
    int world_size;
} ps_info_t;
int ps_info(const ps_t *ps, ps_info_t *out);

/* Initial values of a tensor (only worker 0's are used: it registers the
 * model, and every worker starts from the servers' copy). */
typedef enum {
    PS_INIT_ZEROS = 0,
    PS_INIT_UNIFORM,      /* U(-bound, bound) from the library's RNG, seeded */
    PS_INIT_TORCH_LINEAR, /* PyTorch nn.Linear's default: U(-1/sqrt(fan_in), ..) */
    PS_INIT_VALUES,       /* copied from `values` (numel floats, row-major) */
} ps_initializer_kind_t;

typedef struct {
    ps_initializer_kind_t kind;
    float bound;         /* PS_INIT_UNIFORM */
    uint64_t seed;       /* PS_INIT_UNIFORM, PS_INIT_TORCH_LINEAR */
    int64_t fan_in;      /* PS_INIT_TORCH_LINEAR; 0: dims[1]*... of a
                            weight, the fan-in of "X.weight" for "X.bias" */
    const float *values; /* PS_INIT_VALUES */
} ps_initializer_t;

/* The names of API version 2 (ps_init_t read like ps_init's type). */
typedef ps_initializer_t ps_init_t;
typedef ps_initializer_kind_t ps_init_kind_t;

/*
 * Declare the next tensor of the model, between ps_init and ps_start:
 * name (1..63 bytes, unique; PyTorch names like "fc1.weight" make the
 * servers' --save file load into the matching nn.Module), ndim 1..4
 * positive dims.  init NULL means zeros.  Every worker must declare the
 * same tensors in the same order.  A failure is also remembered and makes
 * ps_start fail on every rank.
 */
int ps_declare(ps_t *ps, const char *name, int ndim, const int64_t *dims,
               const ps_initializer_t *init);

/*
 * Use the caller's arrays as tensor `name`'s weights and gradient (numel
 * floats each; see Ownership above), between its ps_declare and ps_start.
 * ps_bind writes the declared initial values into `weights` (a no-op when
 * they came from that very array with PS_INIT_VALUES); at ps_start worker
 * 0 registers what the array then holds, and every worker pulls the
 * servers' weights into it.  Either array may be NULL: the library keeps
 * its own for that side.  Binding again replaces the arrays.  The arrays
 * must not overlap each other nor another tensor's (PS_EINVAL).  A
 * failure is remembered like ps_declare's.
 */
int ps_bind(ps_t *ps, const char *name, float *weights, float *grads);

/*
 * Declare a sparse table, between ps_init and ps_start: rows of `dim`
 * float32 (1..PS_MAX_TABLE_DIM) keyed by a uint64 id, created on the
 * servers at their first touch (a pull or a push) with a value that is a
 * pure function of (seed, table, key), whatever the server or worker
 * count.  name as in ps_declare, unique among tensors and tables.  init
 * NULL means zeros; otherwise PS_INIT_ZEROS or PS_INIT_UNIFORM (bound,
 * seed) only (PS_EINVAL).  Every worker must declare the same tables
 * (name, dim, init) in the same order; ps_start checks it with the dense
 * layout.  A model still needs at least one dense tensor (ps_declare):
 * the dense push is what ends a step.  A failure is remembered like
 * ps_declare's.
 */
int ps_declare_table(ps_t *ps, const char *name, int64_t dim, const ps_initializer_t *init);
#define PS_MAX_TABLE_DIM 65536
#define PS_MAX_TABLES 64

/* The training plan, before ps_start: the servers evaluate the learning-
 * rate schedule (step:..., cosine, warm-up) against it.  Both >= 1; every
 * worker must give the same values. */
int ps_plan(ps_t *ps, uint64_t steps_per_epoch, uint64_t total_steps);

/* Before ps_start: ps_start also compares these n values (at most 8, e.g.
 * the size of the data, the batch) across the workers, with the model and
 * the plan; on any mismatch it fails on every rank and a worker that
 * differs from worker 0 says `msg` (copied; NULL: the library's message
 * naming the model and the plan).  A later call replaces the values. */
int ps_require_same(ps_t *ps, const uint64_t *values, int n, const char *msg);

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

/* The arrays of tensor `name` (after ps_start): its weights, its gradient
 * (the library's, or those given to ps_bind) and its element count.  Any
 * output may be NULL.  PS_ENOENT for an unknown name. */
int ps_tensor(ps_t *ps, const char *name, float **weights, float **grads, size_t *numel);

/*
 * Push tensor `name`'s gradient for this step, as soon as it is final (in
 * backward, the last layer's first: communication then overlaps the rest
 * of backward).  The array must hold the MEAN gradient over the `samples`
 * samples this worker used in the step, and every push of a step must
 * give the same `samples` (PS_EINVAL).  The servers combine the workers'
 * pushes weighted by their sample counts, so a worker with fewer samples
 * (an uneven shard, the end of an epoch) counts less; with 0 samples the
 * push carries no weight (the library zeroes the array).  A NaN or Inf
 * fails with PS_ERANGE naming the tensor under the servers'
 * --on-nonfinite abort (and breaks the handle); under skip the library
 * holds every push of the step until all tensors are pushed, then drops
 * the whole step for everyone.  Small tensors share chunks: a chunk
 * leaves once every tensor in it is pushed.  Asynchronous: *handle (may
 * be NULL) is this tensor's push handle; do not write the gradient until
 * ps_wait_sent(*handle) or the step's end.  PS_ESTATE when the tensor was
 * pushed in this step already.
 */
int ps_push_tensor(ps_t *ps, const char *name, uint32_t samples, ps_push_t **handle);
/* Push every tensor not pushed in this step yet (all of them when none
 * was), as ps_push_tensor does each; *handle (may be NULL) stands for the
 * whole step's push.  PS_ESTATE when the step is pushed already. */
int ps_push(ps_t *ps, uint32_t samples, ps_push_t **handle);
/* Push tensor `tensor` and every tensor declared after it that is not
 * pushed yet (for layered models in declaration order: call it for the
 * last layer first); a NaN is reported in the first such tensor. */
int ps_push_from(ps_t *ps, const char *tensor, uint32_t samples);

/* Wait until the push no longer reads its gradient arrays (then they may
 * be written).  PS_ESTATE, at once, when the push cannot have left yet
 * because a tensor sharing its chunk (named in the message) is not pushed
 * (or, under the servers' --on-nonfinite skip, any tensor is not).  A
 * push of an earlier step is done; waiting again returns 0 at once. */
int ps_wait_sent(ps_push_t *handle);
/* The same without blocking: *done is 1 when ps_wait_sent would return at
 * once, else 0. */
int ps_test_sent(ps_push_t *handle, int *done);
/* The name of ps_wait_sent in API version 2. */
int ps_wait(ps_push_t *handle);

/*
 * Ask for tensor `name`'s weights for the next step, once its push of this
 * step has left (PS_ESTATE before, naming what is missing): they are
 * written into its weight array as they arrive, during the wait, test and
 * push calls that follow, never at another time.  *handle (may be NULL) is
 * the tensor's pull handle.  Pulling a tensor twice in a step is a no-op.
 */
int ps_pull_tensor(ps_t *ps, const char *name, ps_pull_t **handle);
/* Block until the pulled tensor's weights are in its array.  A pull of an
 * earlier step is done. */
int ps_wait_pulled(ps_pull_t *handle);
/* Take what has arrived without blocking; *done is 1 when the tensor's
 * weights are in its array. */
int ps_test_pulled(ps_pull_t *handle, int *done);

/* Finish the step: block until the weights after this step's update
 * (as the consistency mode allows) are in every weight array, and the
 * gradients are no longer read.  PS_ESTATE before the step is pushed. */
int ps_pull(ps_t *ps);
/* ps_push + ps_pull: on return the weights are updated and the gradient
 * arrays may be written. */
int ps_step(ps_t *ps, uint32_t samples);

/* Element-wise sum of vals[0..n) over all workers, in place, on every
 * worker (collective over the workers; after ps_init).  For metrics. */
int ps_reduce_sum(ps_t *ps, double *vals, int n);
/* The same without waiting for the other workers: start it, keep `vals`
 * untouched until it completes, and complete it with ps_wait_reduced or
 * ps_test_reduced; ps_finalize completes any left.  Every worker starts
 * the same reductions in the same order.  *req is owned by the library. */
int ps_reduce_sum_start(ps_t *ps, double *vals, int n, ps_reduce_t **req);
/* Block until the sum is in vals; frees *req and sets it to NULL. */
int ps_wait_reduced(ps_reduce_t **req);
/* *done is 1 (and *req freed and NULL) when the sum is in vals, else 0. */
int ps_test_reduced(ps_reduce_t **req, int *done);

/*
 * Sparse tables, after ps_start.  Per step and per declared table:
 * exactly one ps_push_rows (n may be 0), before the step's dense push
 * (ps_step / ps_push / the last ps_push_tensor), which fails with
 * PS_ESTATE naming a table not pushed (and breaks the handle: the servers
 * would wait for it); and any number of ps_pull_rows, typically before
 * forward.
 *
 * Pull the rows of `keys` (n keys, any order, duplicates fine) at the
 * weights of the current step (as ps_pull gives them: in sync mode the
 * previous step applied; ssp/async as the mode allows) into out[n * dim],
 * row i for keys[i].  A row never touched comes back at its initial value.
 * With a handle, keys may be reused at once but `out` is written until
 * ps_wait_rows (or ps_test_rows says done): do not read it before.  handle
 * NULL: the call waits for the rows itself.
 */
typedef struct ps_rows ps_rows_t;
int ps_pull_rows(ps_t *ps, const char *table, const uint64_t *keys, size_t n, float *out,
                 ps_rows_t **handle);
/*
 * Push this step's MEAN gradient for rows `keys` (n keys, any order;
 * grads[n * dim], row i for keys[i]; rows of one key are summed).  The
 * library sorts, deduplicates and splits the rows by server and copies
 * them before it returns: keys and grads may be reused at once (so the
 * handle, when asked for, is already complete).  samples as in ps_push:
 * the same value as the step's other pushes (PS_EINVAL); 0 sends no rows
 * (no weight).  A NaN or Inf fails with PS_ERANGE under --on-nonfinite
 * abort (and breaks the handle); under skip the rows are held until the
 * step's dense push and the whole step is dropped, tables included.
 * PS_ESTATE for a second push of the table in a step, or after the
 * step's dense push.
 */
int ps_push_rows(ps_t *ps, const char *table, const uint64_t *keys, size_t n, const float *grads,
                 uint32_t samples, ps_rows_t **handle);
/* Block until the pull's rows are in `out` (a push's handle is complete
 * already); frees the handle.  Every handle must be waited for (or
 * tested done) before ps_finalize; after it only ps_wait_rows, which then
 * just frees it, is valid. */
int ps_wait_rows(ps_rows_t *h);
/* Without blocking: *done is 1 when ps_wait_rows would return at once
 * (the handle is then freed by this call), else 0. */
int ps_test_rows(ps_rows_t *h, int *done);

/* The servers' learning rate at update `step` (after ps_start). */
int ps_lr(const ps_t *ps, uint64_t step, double *lr);

/* The servers' counters, combined over the servers: after ps_start and
 * outside a step (not between a step's first push and its end:
 * PS_ESTATE). */
typedef struct {
    uint64_t staleness_max; /* of the pushes applied so far */
    uint64_t staleness_sum; /* mean = staleness_sum / applied */
    uint64_t applied;       /* pushes applied */
    uint64_t rejected;      /* messages the servers dropped */
    uint64_t version;       /* highest step applied */
    double apply_s;         /* seconds spent applying updates, all servers */
} ps_stats_t;
int ps_stats(ps_t *ps, ps_stats_t *out);

/* Write the weights this worker holds (as of its last pull) to a
 * safetensors file, replaced atomically; metadata "step".  Local: any
 * worker may call it.  The servers' --save writes the final model with the
 * momentum buffers and the optimizer settings. */
int ps_save(ps_t *ps, const char *path);

/* Tell the servers this worker will push no more (finishing an open step
 * first), without leaving the job: in async and ssp mode the others need
 * not wait for it while it evaluates, writes files or completes its sums.
 * After it, the calls that talk to the servers (pushes, pulls, ps_stats)
 * return PS_ESTATE; reductions, ps_save, ps_lr and ps_info still work.
 * A second call returns 0 at once. */
int ps_done(ps_t *ps);

/*
 * Leave the job (collective over the job): finish an open step, tell the
 * servers this worker is done (unless ps_done did), complete the
 * reductions still in flight,
 * wait for the servers' end (their --save), release everything and
 * finalise MPI if ps_init initialised it.  Before ps_start it ends the
 * whole job's start-up with an error.  On a broken handle it ends the
 * whole job (see Errors).  Returns 0 when the job ended well, else the
 * failure.  Safe on NULL and twice; NULLs *ps.
 */
int ps_finalize(ps_t **ps);

/* ---- API 6: per-tensor optimizer options (torch.optim param groups) ---- */

/* Keep the servers' setting (ps_set_tensor_opts). */
#define PS_TENSOR_DEFAULT (-1.0)

/*
 * Give tensor `name` its own weight decay and learning-rate multiplier,
 * between its ps_declare and ps_start: what torch.optim.SGD's param
 * groups do (biases and norms without weight decay, a layer with its own
 * learning rate).  weight_decay replaces the servers' --weight-decay for
 * this tensor (not --decoupled-wd, which stays the servers'); the
 * tensor's learning rate is the servers' (schedule included) times
 * lr_scale.  A negative value (PS_TENSOR_DEFAULT) keeps the servers'
 * setting for that one; NaN or Inf is PS_EINVAL.  Calling it again
 * replaces both.  The options are part of the model: every worker must
 * give the same (ps_start compares them, naming the first difference),
 * the servers' --save file lists them in its "tensor_options" metadata,
 * and a --resume needs the same.  A model where no tensor has options is
 * registered exactly as before API 6.  A failure is remembered like
 * ps_declare's.
 */
int ps_set_tensor_opts(ps_t *ps, const char *name, double weight_decay, double lr_scale);

#ifdef __cplusplus
}
#endif

#endif
