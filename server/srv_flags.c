#include "srv_flags.h"

#include "ps_err.h"
#include "ps_opts.h"
#include "srv_store.h"

#include <stdio.h>
#include <string.h>

static const char USAGE[] =
    "usage: mpirun -np S ps-server [flags] : -np W ps-worker [flags]\n\n"
    "Holds the model's weights and momentum velocity, sharded in chunks over the\n"
    "S server ranks, and applies torch.optim.SGD's update to the mean gradient of\n"
    "each global batch (synchronous: every worker's push for a step, summed in\n"
    "worker-rank order, weighted by sample count).";

int srv_flags_parse(srv_cfg_t *c, int argc, char **argv)
{
    *c = (srv_cfg_t){
        .opt = {.lr = 0.01, .momentum = 0.9},
        .chunk_kib = 0,
        .io_threads = 2, /* as the workers' PS_DEFAULT_IO_THREADS */
        .timeout_s = 300,
        .transport = "auto",
        .mode = "sync",
        .schedule = "constant",
        .form = "torch",
        .on_nonfinite = "abort",
        .sparse_update = "exact",
    };
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
        {"sparse-update", PS_OPT_STRING, &c->sparse_update, "exact|lazy",
         "sparse tables: exact (every row steps every step, as torch.optim.SGD on the "
         "table held dense: a row not in the batch takes a zero gradient; brought up to "
         "date when next touched) or lazy (only the rows pushed in a step are updated)"},
        {"max-table-mib", PS_OPT_LONG, &c->max_table_mib, "MIB",
         "memory the sparse tables of one server may take; past it the job ends naming "
         "table, server and row count (0 = auto: 80% of the RAM available at start, split "
         "over the servers on this host)"},
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
        {"bind", PS_OPT_STRING, &c->bind, "CIDR", "advertise the local address in this subnet"},
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

int srv_flags_check(srv_cfg_t *c)
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
    if (strcmp(c->sparse_update, "exact") && strcmp(c->sparse_update, "lazy")) {
        ps_error_set("--sparse-update '%s': want exact or lazy", c->sparse_update);
        return PS_EINVAL;
    }
    c->sparse_lazy = strcmp(c->sparse_update, "lazy") == 0;
    if (c->max_table_mib < 0 || c->max_table_mib > (1LL << 40)) {
        ps_error_set("--max-table-mib %lld: 0 (auto) or a size in MiB", c->max_table_mib);
        return PS_EINVAL;
    }
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

/* Everything a checkpoint must share with the run that resumes it. */
void srv_flags_describe(const srv_cfg_t *c, char *out, size_t cap)
{
    char sched[160];
    ps_sched_describe(&c->info.sched, sched, sizeof sched);
    snprintf(out, cap,
             "lr=%.17g;momentum=%.17g;dampening=%.17g;nesterov=%d;weight_decay=%.17g;"
             "form=%s;maximize=%d;clip=%.17g;decoupled=%.17g;schedule=%s;mode=%s;"
             "nonfinite=%s;steps_per_epoch=%llu;total_steps=%llu;sparse=%s",
             c->opt.lr, c->opt.momentum, c->opt.dampening, c->opt.nesterov, c->opt.weight_decay,
             srv_optim_form_name(c->opt.form), c->opt.maximize, c->opt.clip_value,
             c->opt.decoupled_wd, sched, c->mode, c->on_nonfinite,
             (unsigned long long)c->plan.steps_per_epoch, (unsigned long long)c->plan.total_steps,
             c->sparse_update);
}
