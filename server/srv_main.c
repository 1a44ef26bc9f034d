/*
 * ps-server: holds a share of the weights and the momentum velocity and
 * applies torch.optim.SGD updates to the gradients the workers push.
 *
 *   mpirun -np S bin/ps-server [flags] : -np W bin/ps-worker [flags]
 *
 * Start-up is the table of collective steps in common/ps_startup.h, which
 * libpsclient's workers run too; run() below reads as that list.  A failed
 * agreement ends every rank cleanly.  Training runs on the zmq event loop
 * (srv_loop).
 */
#include "ps_atomic.h"
#include "ps_boot.h"
#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_jobinfo.h"
#include "ps_net.h"
#include "ps_opts.h"
#include "ps_plane.h"
#include "ps_probe.h"
#include "ps_signal.h"
#include "ps_trace.h"
#include "ps_transport.h"
#include "srv_loop.h"
#include "srv_optim.h"
#include "srv_save.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    srv_optim_cfg_t opt;
    const char *save;
    int chunk_kib;
    int io_threads;
    int timeout_s;
    const char *iface;
    const char *bind;
    const char *transport;
    const char *mode;
    long long staleness;
    const char *schedule;
    long long warmup;
    const char *form;
    int insecure;
    const char *endpoint_file;
    const char *on_nonfinite;
    const char *ckpt_dir;
    long long ckpt_every;
    const char *resume;
    const char *trace;
    const char *config;
    int quiet;
    /* Resolved from the flags above. */
    ps_plane_t plane;
    ps_srvinfo_t info;
    ps_planinfo_t plan;
} srv_cfg_t;

static const char USAGE[] =
    "usage: mpirun -np S ps-server [flags] : -np W ps-worker [flags]\n\n"
    "Holds the model's weights and momentum velocity, sharded in chunks over the\n"
    "S server ranks, and applies torch.optim.SGD's update to the mean gradient of\n"
    "each global batch (synchronous: every worker's push for a step, summed in\n"
    "worker-rank order, weighted by sample count).";

static int parse_flags(srv_cfg_t *c, int argc, char **argv)
{
    ps_opt_t opts[] = {
        {"lr", PS_OPT_DOUBLE, &c->opt.lr, "F", "learning rate"},
        {"momentum", PS_OPT_DOUBLE, &c->opt.momentum, "F", "momentum factor (0 = plain SGD)"},
        {"dampening", PS_OPT_DOUBLE, &c->opt.dampening, "F", "dampening for momentum"},
        {"nesterov", PS_OPT_BOOL, &c->opt.nesterov, NULL,
         "Nesterov momentum (needs momentum > 0 and dampening 0)"},
        {"weight-decay", PS_OPT_DOUBLE, &c->opt.weight_decay, "F",
         "L2 penalty added to the gradient"},
        {"mode", PS_OPT_STRING, &c->mode, "sync|async|ssp",
         "consistency: sync (every step waits for all workers), async (apply each push "
         "on arrival), ssp (workers at most --staleness steps apart)"},
        {"staleness", PS_OPT_LONG, &c->staleness, "S",
         "ssp bound (0 = sync, bit for bit; at most 1024)"},
        {"lr-schedule", PS_OPT_STRING, &c->schedule, "SPEC",
         "constant | step:EPOCHS:GAMMA (e.g. step:30,60:0.1) | cosine (over all steps)"},
        {"warmup-steps", PS_OPT_LONG, &c->warmup, "N",
         "linear warm-up: update t < N uses lr * (t+1)/N"},
        {"momentum-form", PS_OPT_STRING, &c->form, "torch|sutskever|ema",
         "torch.optim.SGD, Sutskever/Keras (v = mu*v - lr*g; w += v), or EMA "
         "(v = b*v + (1-b)*g; w -= lr*v)"},
        {"maximize", PS_OPT_BOOL, &c->opt.maximize, NULL, "maximize the objective (g = -g)"},
        {"clip-grad-value", PS_OPT_DOUBLE, &c->opt.clip_value, "C",
         "clip the aggregated gradient element-wise to [-C, C] (0 = off)"},
        {"decoupled-weight-decay", PS_OPT_DOUBLE, &c->opt.decoupled_wd, "F",
         "w -= lr*F*w before the momentum step (0 = off)"},
        {"on-nonfinite", PS_OPT_STRING, &c->on_nonfinite, "abort|skip",
         "a NaN/Inf gradient ends the job naming worker, tensor and step, or drops that "
         "step for everyone"},
        {"checkpoint-dir", PS_OPT_STRING, &c->ckpt_dir, "DIR",
         "write checkpoints here (one file per server + MANIFEST per step; sync mode)"},
        {"checkpoint-every", PS_OPT_LONG, &c->ckpt_every, "N", "checkpoint every N steps"},
        {"resume", PS_OPT_STRING, &c->resume, "DIR",
         "continue from the newest whole checkpoint in DIR (same settings, but more or fewer "
         "epochs under a constant or step schedule; any server count)"},
        {"trace", PS_OPT_STRING, &c->trace, "PATH.json",
         "timeline in Chrome trace format, merged over every rank given the same PATH"},
        {"save", PS_OPT_STRING, &c->save, "PATH",
         "write the final model (and momentum buffers) as one safetensors file"},
        {"chunk-kib", PS_OPT_INT, &c->chunk_kib, "N",
         "chunk size in KiB (0 = auto: one chunk per server, 64 KiB to 4 MiB); chunks "
         "are spread round-robin over the servers"},
        {"io-threads", PS_OPT_INT, &c->io_threads, "N",
         "libzmq I/O threads; the server binds one endpoint per thread (up to 4) and the "
         "workers' connections are spread over them by rank"},
        {"timeout", PS_OPT_INT, &c->timeout_s, "SECONDS",
         "end the job when the workers send nothing for this long"},
        {"transport", PS_OPT_STRING, &c->transport, "auto|ipc|tcp",
         "data plane: auto = ipc (peer credentials) to workers on this host, tcp "
         "(CurveZMQ) to the others; ipc or tcp for every worker"},
        {"iface", PS_OPT_STRING, &c->iface, "NAME", "advertise this interface's address"},
        {"bind", PS_OPT_STRING, &c->bind, "CIDR",
         "advertise the local address in this subnet"},
        {"insecure", PS_OPT_BOOL, &c->insecure, NULL,
         "no authentication on the data port (no CurveZMQ on tcp, no process check on "
         "ipc): anyone who reaches it can push (benchmarks only)"},
        {"endpoint-file", PS_OPT_STRING, &c->endpoint_file, "PATH",
         "server 0 writes one line per server: RANK ENDPOINT PUBLIC_KEY"},
        {"quiet", PS_OPT_BOOL, &c->quiet, NULL, "log errors only"},
        {"config", PS_OPT_STRING, &c->config, "FILE",
         "INI file; its [server] keys are these flags (the command line wins)"},
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    int rv = ps_opts_parse_config(opts, n, argc, argv, "server");
    if (rv == PS_OPTS_HELP) {
        ps_opts_help(stdout, USAGE, opts, n);
    } else if (rv == PS_OPTS_VERSION) {
        printf("ps-server %s\n", PS_VERSION_STRING);
    }
    return rv;
}

static int resolve_mode(srv_cfg_t *c)
{
    const char *const *names = ps_mode_names;
    for (uint32_t m = 0; m < 3; m++) {
        if (strcmp(c->mode, names[m]) == 0) {
            c->info.mode = m;
        }
    }
    if (strcmp(c->mode, names[c->info.mode]) != 0) {
        ps_error_set("--mode '%s': want sync, async or ssp", c->mode);
        return PS_EINVAL;
    }
    if (c->staleness < 0 || (c->staleness > 0 && c->info.mode != PS_MODE_SSP)) {
        ps_error_set("--staleness %lld: a bound >= 0, only with --mode ssp", c->staleness);
        return PS_EINVAL;
    }
    if (c->staleness > SRV_STORE_MAX_STALENESS) {
        ps_error_set("--staleness %lld: at most %d (a server keeps every worker's pushes of up "
                     "to staleness + 1 steps per chunk); for no bound use --mode async",
                     c->staleness, SRV_STORE_MAX_STALENESS);
        return PS_EINVAL;
    }
    c->info.staleness = (uint64_t)c->staleness;
    return 0;
}

static int check_flags(srv_cfg_t *c)
{
    int rv;
    if ((rv = srv_optim_parse_form(c->form, &c->opt.form)) != 0 ||
        (rv = srv_optim_check(&c->opt)) != 0 || (rv = resolve_mode(c)) != 0) {
        return rv;
    }
    if (c->warmup < 0 || (rv = ps_sched_parse(&c->info.sched, c->schedule, c->warmup)) != 0) {
        if (c->warmup < 0) {
            ps_error_set("--warmup-steps must be >= 0");
        }
        return PS_EINVAL;
    }
    c->info.lr = c->opt.lr;
    if (strcmp(c->on_nonfinite, "abort") && strcmp(c->on_nonfinite, "skip")) {
        ps_error_set("--on-nonfinite '%s': want abort or skip", c->on_nonfinite);
        return PS_EINVAL;
    }
    c->info.nonfinite_skip = strcmp(c->on_nonfinite, "skip") == 0;
    if ((c->ckpt_dir || c->resume) && c->info.mode != PS_MODE_SYNC) {
        ps_error_set("--checkpoint-dir and --resume need --mode sync (in the other modes the "
                     "chunks are never all at one step)");
        return PS_EINVAL;
    }
    if (c->ckpt_every < 0 || (c->ckpt_dir && c->ckpt_every == 0)) {
        ps_error_set("--checkpoint-every N >= 1 goes with --checkpoint-dir");
        return PS_EINVAL;
    }
    if (c->chunk_kib != 0 && (c->chunk_kib < 4 || c->chunk_kib > 256 * 1024)) {
        ps_error_set("--chunk-kib %d: 0 (auto) or 4 to 262144", c->chunk_kib);
        return PS_EINVAL;
    }
    if (c->io_threads < 1 || c->io_threads > 64) {
        ps_error_set("--io-threads %d outside [1, 64]", c->io_threads);
        return PS_EINVAL;
    }
    if (c->timeout_s < 1) {
        ps_error_set("--timeout must be at least 1 second");
        return PS_EINVAL;
    }
    return 0;
}

/* Worker w's plane to this server (ps_plane: the same rule the worker
 * applies). */
static int plane_of(const srv_cfg_t *c, const ps_boot_t *b, int w, ps_plane_t *p)
{
    ps_plane_pair_t pair = {.server = b->rank, .worker = w, .server_host = b->host,
                            .worker_host = ps_boot_worker_host(b, w), .srv = c->plane,
                            .wkr = (ps_plane_t)ps_boot_worker_transport(b, w)};
    return ps_plane_decide(&pair, p);
}

/* Open the data port: ipc when a worker on this host uses it, tcp on the
 * address the other hosts can reach when any worker uses that. */
static int open_port(const srv_cfg_t *c, ps_boot_t *b, ps_tp_t **tp, const ps_tp_keypair_t *keys,
                     char *ep, size_t cap)
{
    char bases[700] = "", addr[64];
    int ipc = 0, tcp = 0, rv;
    for (int w = 0; w < b->nworkers; w++) {
        ps_plane_t p;
        if ((rv = plane_of(c, b, w, &p)) != 0) {
            return rv;
        }
        ipc |= p == PS_PLANE_IPC;
        tcp |= p == PS_PLANE_TCP;
    }
    if (ipc) {
        const char *tmp = getenv("TMPDIR");
        snprintf(bases, sizeof bases, "ipc://%s", tmp && *tmp ? tmp : "/tmp");
    }
    /* An --iface or --bind that matches nothing is an error even when no
     * worker needs tcp. */
    if (tcp || c->iface || c->bind) {
        if ((rv = ps_net_pick_addr(c->iface, c->bind, b->single_host, addr, sizeof addr)) != 0) {
            return rv;
        }
    }
    if (tcp) {
        size_t used = strlen(bases);
        snprintf(bases + used, sizeof bases - used, "%stcp://%s", used ? " " : "", addr);
    }
    return ps_tp_server_new(tp, bases, c->io_threads, keys, ep, cap);
}

static void summary(const srv_loop_t *L, ps_tp_t *tp)
{
    ps_tp_stats_t st;
    ps_tp_stats(tp, &st);
    ps_log_info("done: step %llu, %llu chunk updates, %llu pushes, %llu pulls, "
                "in %.1f MB, out %.1f MB, rejected %llu, apply %.2f s, idle %.2f s",
                (unsigned long long)L->max_version, (unsigned long long)L->store.updates,
                (unsigned long long)L->pushes, (unsigned long long)L->pulls,
                (double)st.rx_bytes / 1e6, (double)st.tx_bytes / 1e6,
                (unsigned long long)srv_loop_rejected_total(L), L->apply_s, L->wait_s);
    ps_log_info("connections used: %d from %d workers", srv_loop_connections_used(L),
                L->cfg.nworkers);
    if (srv_store_skipped_steps(&L->store)) {
        ps_log_info("steps skipped for non-finite gradients: %llu",
                    (unsigned long long)srv_store_skipped_steps(&L->store));
    }
    if (st.handshakes_refused) {
        ps_log_info("refused handshakes on the data port: %llu",
                    (unsigned long long)st.handshakes_refused);
    }
    if (L->replies_lost) {
        ps_log_info("pull replies not delivered (peer gone): %llu",
                    (unsigned long long)L->replies_lost);
    }
    ps_log_peak_memory();
    ps_log_info("staleness of applied pushes: max %llu, mean %.3f over %llu pushes",
                (unsigned long long)L->store.stale_max,
                L->store.stale_n ? (double)L->store.stale_sum / (double)L->store.stale_n : 0.0,
                (unsigned long long)L->store.stale_n);
    for (int r = 0; r < SRV_REJ_NREASONS; r++) {
        if (L->rejected[r]) {
            ps_log_info("rejected (%s): %llu", srv_loop_reject_name(r),
                        (unsigned long long)L->rejected[r]);
        }
    }
}

/* Everything a checkpoint must share with the run that resumes it. */
static void describe_settings(const srv_cfg_t *c, char *out, size_t cap)
{
    char sched[160];
    ps_sched_describe(&c->info.sched, sched, sizeof sched);
    snprintf(out, cap,
             "lr=%.17g;momentum=%.17g;dampening=%.17g;nesterov=%d;weight_decay=%.17g;"
             "form=%s;maximize=%d;clip=%.17g;decoupled=%.17g;schedule=%s;mode=%s;"
             "nonfinite=%s;steps_per_epoch=%llu;total_steps=%llu",
             c->opt.lr, c->opt.momentum, c->opt.dampening, c->opt.nesterov, c->opt.weight_decay,
             srv_optim_form_name(c->opt.form), c->opt.maximize, c->opt.clip_value,
             c->opt.decoupled_wd, sched, c->mode, c->on_nonfinite,
             (unsigned long long)c->plan.steps_per_epoch,
             (unsigned long long)c->plan.total_steps);
}

static double scheduled_lr(void *arg, uint64_t t)
{
    const srv_cfg_t *c = arg;
    return ps_sched_lr(&c->info.sched, c->info.lr, t, c->plan.steps_per_epoch,
                       c->plan.total_steps);
}

/* What start-up builds and run() releases; on the heap (the loop holds
 * the store, the checkpoint the model). */
typedef struct {
    ps_tp_keypair_t keys;
    ps_tp_t *tp;
    char ep[PS_BOOT_EP_LEN];
    const char **hosts; /* worker host names, for timeout messages */
    srv_ckpt_state_t resume;
    char settings[1024];
    srv_loop_t loop;
    int loop_up;
} srv_job_t;

/* A run must not train for hours and then find it cannot write: --save
 * is probed where it is written (server 0), --checkpoint-dir on every
 * server (each writes its part there), made as the first checkpoint
 * would make it. */
static int check_outputs(const srv_cfg_t *c, const ps_boot_t *b)
{
    char what[4200];
    int rv = 0;
    if (c->save && b->rank == 0) {
        snprintf(what, sizeof what, "--save %s", c->save);
        rv = ps_probe_file(c->save, what);
    }
    if (rv == 0 && c->ckpt_dir) {
        snprintf(what, sizeof what, "--checkpoint-dir %s", c->ckpt_dir);
        rv = ps_probe_dir(c->ckpt_dir, 1, what);
    }
    return rv;
}

/* Step "flags": the flags, the outputs, this server's key pair and its
 * data port. */
static int open_data_port(srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    int rv = check_flags(c);
    if (rv == 0) {
        rv = check_outputs(c, b);
    }
    if (rv == 0 && !c->insecure) {
        rv = ps_tp_keypair(&j->keys);
    }
    if (rv == 0) {
        rv = open_port(c, b, &j->tp, c->insecure ? NULL : &j->keys, j->ep, sizeof j->ep);
    }
    return rv;
}

/* Step "settings": server 0's chunk size, mode and schedule hold for all. */
static void share_settings(srv_cfg_t *c, ps_boot_t *b)
{
    c->info.chunk_kib = (uint64_t)c->chunk_kib;
    ps_boot_bcast(b, PS_STEP_SETTINGS, &c->info, sizeof c->info);
    c->chunk_kib = (int)c->info.chunk_kib;
}

/* Server 0: "RANK ENDPOINT PUBLIC_KEY" per server, for operators and tests;
 * replaced atomically so readers never see half. */
static int endpoint_lines(FILE *f, void *arg)
{
    ps_boot_t *b = arg;
    const char(*keys)[41] = ps_boot_server_keys(b);
    for (int s = 0; s < b->nservers; s++) {
        /* The first lane: any one reaches the server's socket. */
        const char *ep = ps_boot_server_endpoint(b, s);
        fprintf(f, "%d %.*s %s\n", s, (int)strcspn(ep, " "), ep, keys[s][0] ? keys[s] : "-");
    }
    return 0;
}

static int write_endpoint_file(const srv_cfg_t *c, ps_boot_t *b)
{
    if (!c->endpoint_file || b->rank != 0) {
        return 0;
    }
    int rv = ps_atomic_write(c->endpoint_file, endpoint_lines, b);
    /* Its ports close with the job, however the job ends. */
    return rv == 0 ? ps_cleanup_add_file(c->endpoint_file) : rv;
}

/* Which worker comes over which plane, and the pids of those on this
 * host; the start-up line says who uses what. */
static int place_workers(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    ps_tp_place_t *pl = calloc((size_t)b->nworkers + 1, sizeof *pl);
    ps_plane_count_t n = {0};
    char what[256];
    int rv = pl ? 0 : PS_ENOMEM;
    for (int w = 0; rv == 0 && w < b->nworkers; w++) {
        ps_plane_t p;
        int local = strcmp(ps_boot_worker_host(b, w), b->host) == 0;
        if ((rv = plane_of(c, b, w, &p)) != 0) {
            break;
        }
        pl[w].ipc = p == PS_PLANE_IPC;
        pl[w].pid = local ? ps_boot_worker_pid(b, w) : 0;
        n.ipc += pl[w].ipc;
        n.tcp_local += !pl[w].ipc && local;
        n.tcp_remote += !local;
    }
    if (rv == 0) {
        rv = ps_tp_server_place(j->tp, pl, b->nworkers);
    }
    free(pl);
    if (rv == 0) {
        ps_plane_describe(&n, !c->insecure, what, sizeof what);
        ps_log_info("data plane: %s", what);
    }
    return rv;
}

/* Step "ports": only this job's workers may talk to the data port; the
 * endpoint file tells operators where it is. */
static int secure_port(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    j->hosts = calloc((size_t)b->nworkers + 1, sizeof *j->hosts);
    if (!j->hosts) {
        ps_error_set("server: no memory for the host names of %d workers", b->nworkers);
        return PS_ENOMEM;
    }
    for (int w = 0; w < b->nworkers; w++) {
        j->hosts[w] = ps_boot_worker_host(b, w);
    }
    ps_log_info("data port %s", j->ep);
    int rv = place_workers(c, b, j);
    if (rv == 0 && c->insecure) {
        if (b->rank == 0) {
            ps_log_info("WARNING: --insecure: the data port accepts unauthenticated messages");
        }
    } else if (rv == 0) {
        rv = ps_tp_server_allow(j->tp, ps_boot_worker_keys(b), b->nworkers);
    }
    return rv == 0 ? write_endpoint_file(c, b) : rv;
}

/* Step "resume": every server loads the same newest whole checkpoint;
 * server 0 clears the checkpoint folder of anything newer. */
static int load_resume(const srv_cfg_t *c, ps_boot_t *b, srv_ckpt_state_t *st)
{
    char settings[1024];
    int rv = 0;
    uint64_t step = 0, most;
    if (c->resume) {
        describe_settings(c, settings, sizeof settings);
        rv = srv_ckpt_load(st, c->resume, settings);
        step = st->step;
    }
    most = step;
    int mpi = ps_boot_servers_max_u64(b, &most);
    if (rv == 0 && mpi != 0) {
        rv = mpi;
    } else if (rv == 0 && most != step) {
        ps_error_set("servers found different checkpoints (step %llu here, %llu elsewhere): "
                     "do all servers see the same --resume folder?",
                     (unsigned long long)step, (unsigned long long)most);
        rv = PS_EINVAL;
    }
    /* Before any server can write one: this run's checkpoints must not
     * meet an earlier run's newer ones (srv_ckpt.h). */
    if (rv == 0 && b->rank == 0 && c->ckpt_dir) {
        rv = srv_ckpt_drop_newer(c->ckpt_dir, most, c->resume != NULL);
    }
    return rv;
}

/* Step "register": the event loop takes worker 0's REGISTER and the INIT
 * of every local chunk (or the checkpoint's values). */
static int setup_loop(srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    describe_settings(c, j->settings, sizeof j->settings);
    srv_loop_cfg_t lc = {
        .tp = j->tp,
        .server = b->rank,
        .nservers = b->nservers,
        .nworkers = b->nworkers,
        .chunk_elems = (size_t)c->chunk_kib * 1024 / sizeof(float),
        .opt = c->opt,
        .mode = (ps_mode_t)c->info.mode,
        .staleness = c->info.staleness,
        .lr_of = scheduled_lr,
        .lr_arg = c,
        .nonfinite_skip = (int)c->info.nonfinite_skip,
        .ckpt_dir = c->ckpt_dir,
        .ckpt_every = (uint64_t)c->ckpt_every,
        .settings = j->settings,
        .resume = c->resume ? &j->resume : NULL,
        .timeout_ms = c->timeout_s * 1000,
        .worker_hosts = j->hosts,
        .worker_streams = ps_boot_worker_streams(b),
    };
    j->loop_up = 1;
    int rv = srv_loop_init(&j->loop, &lc);
    if (rv == 0) {
        rv = srv_loop_setup(&j->loop);
    }
    /* Applied at REGISTER; no need to hold a second copy of the model. */
    srv_ckpt_fini(&j->resume);
    j->loop.cfg.resume = NULL;
    return rv;
}

/* Step "start": the workers continue from the step the servers resumed at. */
static void announce_start(ps_boot_t *b, srv_job_t *j)
{
    uint64_t start = j->loop.max_version;
    ps_boot_bcast(b, PS_STEP_START, &start, sizeof start);
    if (b->rank == 0 && start > 0) {
        ps_log_info("resumed at step %llu", (unsigned long long)start);
    }
}

#define STOP_QUIET_MS 100 /* a stop: the workers' last pushes come within this */
#define STOP_DRAIN_MS 400
#define STOP_AGREE_MS 500 /* the servers meet within this, or give up */

/* A stop in sync mode with --checkpoint-dir: take the pushes still on
 * their way (a stopping worker first sends its whole step), and when every
 * chunk of every server is then at one step, newer than the last
 * checkpoint, write it.  Bounded: Open MPI's mpirun sends SIGKILL 1 s after
 * SIGTERM. */
static void final_checkpoint(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j, char *what,
                             size_t cap)
{
    uint64_t lo, hi, last = j->loop.ckpt_next - (uint64_t)c->ckpt_every;
    srv_loop_drain(&j->loop, STOP_QUIET_MS, STOP_DRAIN_MS);
    srv_loop_versions(&j->loop, &lo, &hi);
    int rv = ps_boot_servers_minmax_u64(b, &lo, &hi, STOP_AGREE_MS);
    if (rv != 0) {
        snprintf(what, cap, "no final checkpoint: %s", ps_error_msg());
    } else if (lo != hi) {
        snprintf(what, cap, "no final checkpoint: stopped inside a step (chunks at steps %llu "
                 "to %llu)", (unsigned long long)lo, (unsigned long long)hi);
    } else if (lo == last || lo == 0) {
        snprintf(what, cap, "step %llu is checkpointed already", (unsigned long long)lo);
    } else {
        rv = srv_ckpt_write(&j->loop.store, c->ckpt_dir, lo, b->nservers, j->settings);
        uint64_t bad = rv != 0, any = bad;
        snprintf(what, cap, "%s", rv ? ps_error_msg() : "");
        /* Nobody ends the job while another server still writes its part. */
        if (ps_boot_servers_minmax_u64(b, &bad, &any, STOP_AGREE_MS) != 0 || any) {
            snprintf(what + strlen(what), cap - strlen(what), "%sthe final checkpoint of "
                     "step %llu is incomplete", rv ? "; " : "", (unsigned long long)lo);
        } else {
            snprintf(what, cap, "final checkpoint: step %llu in %s", (unsigned long long)lo,
                     c->ckpt_dir);
        }
    }
}

/* SIGINT/SIGTERM during training (ps_signal): the files are gone already;
 * a last checkpoint when it can be whole, then the job ends. */
static void stop_training(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    char what[700] = "";
    int sig = ps_signal_stop_requested();
    if (c->ckpt_dir) {
        final_checkpoint(c, b, j, what, sizeof what);
    }
    ps_log_error("stopped by %s at step %llu%s%s", ps_signal_name(sig),
                 (unsigned long long)j->loop.max_version, what[0] ? "; " : "", what);
    ps_boot_abort(b, 128 + sig);
}

/* The workers cannot finish a step without this server: a failure here
 * ends the job. */
static void train(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    int rv = srv_loop_train(&j->loop);
    if (rv == PS_EINTR) {
        stop_training(c, b, j);
    }
    if (rv != 0) {
        ps_log_error("%s", ps_error_msg());
        ps_boot_abort(b, 3);
    }
}

/* Step "done": the model gathered and saved, the summary, the trace part. */
static int finish(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    uint64_t step = j->loop.max_version;
    int rv = ps_boot_servers_max_u64(b, &step);
    if (rv == 0 && c->save) {
        char sched[160];
        ps_sched_describe(&c->info.sched, sched, sizeof sched);
        srv_save_info_t info = {.step = step, .mode = c->mode, .schedule = sched,
                                .form = srv_optim_form_name(c->opt.form)};
        rv = srv_save_model(b, &j->loop.store, &info, c->save);
        if (rv == 0 && b->rank == 0) {
            ps_log_info("saved the model to %s", c->save);
        }
    }
    if (!c->quiet) {
        summary(&j->loop, j->tp);
    }
    return rv == 0 ? ps_trace_write_part() : rv;
}

static void close_job(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    /* Close the socket first: its queued zero-copy replies point into the
     * store's chunks and are released when it closes. */
    ps_tp_destroy(&j->tp);
    if (j->loop_up) {
        srv_loop_fini(&j->loop);
    }
    srv_ckpt_fini(&j->resume);
    free(j->hosts);
    memset(&j->keys, 0, sizeof j->keys);
    if (c->endpoint_file && b->rank == 0) {
        unlink(c->endpoint_file); /* its ports are closed now */
        ps_cleanup_forget(c->endpoint_file);
    }
    free(j);
}

/* The server's side of the start-up table (common/ps_startup.h), then
 * training and the end.  Every step runs on every rank, failed or not, so
 * the workers' side of the table meets the same steps. */
static int run(srv_cfg_t *c, ps_boot_t *b, int flags_rv)
{
    srv_job_t *j = calloc(1, sizeof *j);
    int rv = flags_rv;
    if (rv == 0 && !j) {
        ps_error_set("server: no memory for the job state (%zu bytes)", sizeof *j);
        rv = PS_ENOMEM;
    }
    if ((rv = ps_boot_agree(b, PS_STEP_FLAGS, rv ? rv : open_data_port(c, b, j))) != 0) {
        if (j) {
            close_job(c, b, j);
        }
        return rv;
    }
    if ((rv = ps_boot_exchange(b, j->ep, j->keys.pub, 0)) == 0) {
        memset(j->keys.sec, 0, sizeof j->keys.sec); /* the socket has its copy */
        share_settings(c, b);
        rv = ps_boot_agree(b, PS_STEP_PORTS, secure_port(c, b, j));
    }
    if (rv == 0) {
        rv = ps_boot_agree(b, PS_STEP_MODEL, 0); /* the workers compare their models */
    }
    if (rv == 0) {
        ps_boot_bcast(b, PS_STEP_PLAN, &c->plan, sizeof c->plan);
        rv = ps_boot_agree(b, PS_STEP_RESUME, load_resume(c, b, &j->resume));
    }
    if (rv == 0) {
        rv = ps_boot_agree(b, PS_STEP_REGISTER, setup_loop(c, b, j));
    }
    if (rv == 0) {
        announce_start(b, j);
        train(c, b, j);
        rv = ps_boot_agree(b, PS_STEP_DONE, finish(c, b, j));
    }
    if (rv == 0 && b->world_rank == 0) {
        rv = ps_trace_merge(b->world_size);
    }
    close_job(c, b, j);
    return rv;
}

int main(int argc, char **argv)
{
    srv_cfg_t c = {
        .opt = {.lr = 0.01, .momentum = 0.9},
        .chunk_kib = 0,
        .io_threads = 2, /* as the workers' PS_DEFAULT_IO_THREADS */
        .timeout_s = 300,
        .transport = "auto",
        .mode = "sync",
        .schedule = "constant",
        .form = "torch",
        .on_nonfinite = "abort",
    };
    ps_boot_t b;
    int flags_rv = parse_flags(&c, argc, argv);
    if (flags_rv == PS_OPTS_HELP || flags_rv == PS_OPTS_VERSION) {
        return 0;
    }
    /* Every rank's --transport travels with ps_boot_init. */
    if (flags_rv == 0) {
        flags_rv = ps_plane_parse(c.transport, "--transport", &c.plane);
    }
    ps_tp_tune_malloc();
    if (ps_boot_init(&b, &argc, &argv, 1, (int)c.plane) != 0) {
        ps_log_error("%s", ps_error_msg());
        return 2;
    }
    ps_log_set_name("ps-server", b.rank);
    if (c.quiet) {
        ps_log_set_level(0);
    }
    if (flags_rv == 0) {
        flags_rv = ps_signal_install(PS_SIGNAL_GRACE_MS); /* after MPI_Init: ours win */
    }
    if (flags_rv == 0 && b.nworkers < 1) {
        ps_error_set("no ps-worker ranks in this job (launch: mpirun -np S ps-server : -np W "
                     "ps-worker)");
        flags_rv = PS_EINVAL;
    }
    if (flags_rv == 0 && c.trace) {
        char label[32];
        snprintf(label, sizeof label, "server %d", b.rank);
        flags_rv = ps_trace_start(c.trace, b.world_rank, label);
    }
    int rv = run(&c, &b, flags_rv);
    ps_trace_stop();
    ps_boot_fini(&b);
    return rv == 0 ? 0 : 1;
}
