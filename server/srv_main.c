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
#include "ps_net.h"
#include "ps_opts.h"
#include "ps_plane.h"
#include "ps_probe.h"
#include "ps_signal.h"
#include "ps_trace.h"
#include "ps_transport.h"
#include "srv_flags.h"
#include "srv_loop.h"
#include "srv_save.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Worker w's plane to this server (ps_plane: the same rule the worker
 * applies). */
static int plane_of(const srv_cfg_t *c, const ps_boot_t *b, int w, ps_plane_t *p)
{
    ps_plane_pair_t pair = {.server = b->rank,
                            .worker = w,
                            .server_host = b->host,
                            .worker_host = ps_boot_worker_host(b, w),
                            .srv = c->plane,
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
    const srv_sparse_t *sp = &L->sparse;
    for (int i = 0; sp->declared && i < sp->decls.n; i++) {
        const srv_sparse_table_t *t = &sp->t[i];
        ps_log_info("table %s: %zu rows (%.1f MiB), step %llu, %llu steps skipped", t->decl.name,
                    srv_table_rows(t->tbl), (double)srv_table_bytes(t->tbl) / 1048576.0,
                    (unsigned long long)t->version, (unsigned long long)t->skipped);
    }
    if (sp->declared && sp->decls.n > 0) {
        ps_log_info("row pushes %llu (%llu rows), row pulls %llu (%llu rows)",
                    (unsigned long long)sp->pushes, (unsigned long long)sp->rows_pushed,
                    (unsigned long long)sp->pulls, (unsigned long long)sp->rows_pulled);
    }
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

static double scheduled_lr(void *arg, uint64_t t)
{
    const srv_cfg_t *c = arg;
    return ps_sched_lr(&c->info.sched, c->info.lr, t, c->plan.steps_per_epoch, c->plan.total_steps);
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
    int rv = srv_flags_check(c);
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
        srv_flags_describe(c, settings, sizeof settings);
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

/* This server's share of --max-table-mib: the flag, or 80% of the RAM the
 * kernel says is available now (MemAvailable) over the servers on this
 * host, so the job ends with a message naming the table before the OOM
 * killer ends it without one.  0 (no bound) when /proc/meminfo is not
 * readable. */
static size_t table_budget(const srv_cfg_t *c, const ps_boot_t *b)
{
    if (c->max_table_mib > 0) {
        return (size_t)c->max_table_mib << 20;
    }
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kib = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    int here = 0;
    for (int s = 0; s < b->nservers; s++) {
        here += strcmp(ps_boot_server_host(b, s), b->host) == 0;
    }
    return (size_t)(kib * 1024ULL / 10 * 8 / (unsigned long long)(here > 0 ? here : 1));
}

/* Step "register": the event loop takes worker 0's REGISTER and the INIT
 * of every local chunk (or the checkpoint's values). */
static int setup_loop(srv_cfg_t *c, ps_boot_t *b, srv_job_t *j)
{
    srv_flags_describe(c, j->settings, sizeof j->settings);
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
        .sparse_update = c->sparse_lazy ? SRV_SPARSE_LAZY : SRV_SPARSE_EXACT,
        .table_max_bytes = table_budget(c, b),
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
static void final_checkpoint(const srv_cfg_t *c, ps_boot_t *b, srv_job_t *j, char *what, size_t cap)
{
    uint64_t lo, hi, last = j->loop.ckpt_next - (uint64_t)c->ckpt_every;
    srv_loop_drain(&j->loop, STOP_QUIET_MS, STOP_DRAIN_MS);
    srv_loop_versions(&j->loop, &lo, &hi);
    int rv = ps_boot_servers_minmax_u64(b, &lo, &hi, STOP_AGREE_MS);
    if (rv != 0) {
        snprintf(what, cap, "no final checkpoint: %s", ps_error_msg());
    } else if (lo != hi) {
        snprintf(what, cap,
                 "no final checkpoint: stopped inside a step (chunks at steps %llu "
                 "to %llu)",
                 (unsigned long long)lo, (unsigned long long)hi);
    } else if (lo == last || lo == 0) {
        snprintf(what, cap, "step %llu is checkpointed already", (unsigned long long)lo);
    } else {
        rv = srv_ckpt_write(&j->loop.store, &j->loop.sparse, c->ckpt_dir, lo, b->nservers,
                            j->settings);
        uint64_t bad = rv != 0, any = bad;
        snprintf(what, cap, "%s", rv ? ps_error_msg() : "");
        /* Nobody ends the job while another server still writes its part. */
        if (ps_boot_servers_minmax_u64(b, &bad, &any, STOP_AGREE_MS) != 0 || any) {
            snprintf(what + strlen(what), cap - strlen(what),
                     "%sthe final checkpoint of "
                     "step %llu is incomplete",
                     rv ? "; " : "", (unsigned long long)lo);
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
        srv_save_info_t info = {.step = step,
                                .mode = c->mode,
                                .schedule = sched,
                                .form = srv_optim_form_name(c->opt.form),
                                .sparse = c->sparse_update};
        rv = srv_save_model(b, &j->loop.store, &j->loop.sparse, &info, c->save);
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
    srv_cfg_t c;
    ps_boot_t b;
    int flags_rv = srv_flags_parse(&c, argc, argv);
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
