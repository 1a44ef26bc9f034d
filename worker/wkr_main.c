/*
 * ps-worker: loads its shard of the data, computes minibatch gradients of a
 * built-in model and trains it against the ps-server ranks of the job.
 *
 *   mpirun -np S bin/ps-server [flags] : -np W bin/ps-worker [flags]
 *
 * The collective start-up sequence mirrors ps-server's (see ps_boot.h); it
 * is libpsclient's (ps_api.h), so a custom worker on ps.h starts the same
 * way.  This file adds the flags, the data, the model and the trainer.
 */
#include "ps_api.h"
#include "ps_boot.h"
#include "ps_err.h"
#include "ps_opts.h"
#include "ps_trace.h"
#include "ps_safetensors.h"
#include "wkr_data.h"
#include "wkr_model.h"
#include "wkr_plot.h"
#include "wkr_report.h"
#include "wkr_train.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *model, *hidden, *data, *data_dir, *test_data, *init, *init_from, *metrics,
        *progress;
    const char *plot, *plot_metrics, *trace, *config, *compress;
    char tmp_metrics[64]; /* --plot without --metrics */
    int features, classes;
    int io_threads, streams, timeout_s, blas_threads, quiet;
    int no_shuffle;
    long long seed;
    wkr_train_cfg_t train;
} wkr_cfg_t;

typedef struct {
    wkr_dataset_t train, test;
    int has_test;
    wkr_model_t *model;
    wkr_plan_t plan;
} wkr_job_t;

static const char USAGE[] =
    "usage: mpirun -np S ps-server [flags] : -np W ps-worker [flags]\n\n"
    "Trains a built-in model on its shard of the data (sample i goes to worker\n"
    "i mod W).  Each step pushes the mean gradient over its K x B samples to the\n"
    "servers and pulls the updated weights; the update uses the mean loss over\n"
    "all W x K x B samples of the step.";

static int parse_flags(wkr_cfg_t *c, int argc, char **argv)
{
    ps_opt_t opts[] = {
        {"model", PS_OPT_STRING, &c->model, "linear|softmax|mlp",
         "linear (MSE), softmax regression or MLP (cross-entropy)"},
        {"hidden", PS_OPT_STRING, &c->hidden, "N,N,...", "MLP hidden layer widths"},
        {"data", PS_OPT_STRING, &c->data, "SPEC",
         "fashion-mnist | libsvm:PATH | csv:PATH (label first)"},
        {"data-dir", PS_OPT_STRING, &c->data_dir, "DIR", "folder of the Fashion-MNIST .gz files"},
        {"test-data", PS_OPT_STRING, &c->test_data, "SPEC",
         "test set, same forms (fashion-mnist: t10k by default)"},
        {"features", PS_OPT_INT, &c->features, "D", "feature count (0 = infer from the data)"},
        {"classes", PS_OPT_INT, &c->classes, "C", "class count (0 = infer: max label + 1)"},
        {"batch-size", PS_OPT_INT, &c->train.batch, "B", "samples per micro-batch per worker"},
        {"accumulate", PS_OPT_INT, &c->train.accumulate, "K", "micro-batches per push"},
        {"epochs", PS_OPT_INT, &c->train.epochs, "E", "passes over the training data"},
        {"steps", PS_OPT_LONG, &c->train.steps, "T", "train T steps instead (0 = use --epochs)"},
        {"no-shuffle", PS_OPT_BOOL, &c->no_shuffle, NULL, "keep the file order of each shard"},
        {"seed", PS_OPT_LONG, &c->seed, "N", "seed for initialisation and shuffling"},
        {"init", PS_OPT_STRING, &c->init, "zeros|default",
         "initial weights (default: PyTorch nn.Linear's uniform rule)"},
        {"init-from", PS_OPT_STRING, &c->init_from, "PATH",
         "initial weights from a safetensors file (tensor names and shapes must match)"},
        {"metrics", PS_OPT_STRING, &c->metrics, "PATH",
         "JSON lines, one per epoch, from worker rank 0"},
        {"progress", PS_OPT_STRING, &c->progress, "auto|bar|plain|none",
         "progress display (auto: bar on a terminal, plain lines otherwise)"},
        {"io-threads", PS_OPT_INT, &c->io_threads, "N",
         "libzmq I/O threads; the streams are spread over them"},
        {"streams", PS_OPT_INT, &c->streams, "N",
         "connections to each server (1-16); a server's chunks take turns over them, so "
         "one connection's copy loop is not the ceiling"},
        {"blas-threads", PS_OPT_INT, &c->blas_threads, "N", "OpenBLAS threads per worker"},
        {"timeout", PS_OPT_INT, &c->timeout_s, "SECONDS",
         "end the job when the servers do not answer for this long"},
        {"quiet", PS_OPT_BOOL, &c->quiet, NULL, "log errors only"},
        {"test-delay-ms", PS_OPT_INT, &c->train.delay_ms, "MS",
         "TEST ONLY: sleep this long before every step (simulates a slow worker)"},
        {"compress", PS_OPT_STRING, &c->compress, "none|fp16|bf16",
         "push gradients as 16-bit floats (half the bytes; servers widen them back)"},
        {"plot", PS_OPT_STRING, &c->plot, "PATH.png",
         "worker 0 draws loss and accuracy against steps and wall time (gnuplot)"},
        {"plot-metrics", PS_OPT_STRING, &c->plot_metrics, "FILE",
         "no training: draw --plot from an existing metrics file and exit"},
        {"trace", PS_OPT_STRING, &c->trace, "PATH.json",
         "timeline in Chrome trace format, merged over every rank given the same PATH"},
        {"config", PS_OPT_STRING, &c->config, "FILE",
         "INI file; its [worker] keys are these flags (the command line wins)"},
        {"test-nan-step", PS_OPT_LONG, &c->train.nan_step, "N",
         "TEST ONLY: make this worker's gradient NaN at step N (1-based)"},
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    int rv = ps_opts_parse_config(opts, n, argc, argv, "worker");
    if (rv == PS_OPTS_HELP) {
        ps_opts_help(stdout, USAGE, opts, n);
    } else if (rv == PS_OPTS_VERSION) {
        printf("ps-worker %s\n", PS_VERSION_STRING);
    }
    return rv;
}

static int check_flags(const wkr_cfg_t *c)
{
    wkr_progress_t p;
    if (strcmp(c->progress, "auto") != 0 && wkr_report_parse_mode(c->progress, &p) != 0) {
        return PS_EINVAL;
    }
    if (c->features < 0 || c->classes < 0 || c->io_threads < 1 || c->blas_threads < 1 ||
        c->timeout_s < 1) {
        ps_error_set("--features/--classes must be >= 0; --io-threads, --blas-threads and "
                     "--timeout >= 1");
        return PS_EINVAL;
    }
    if (c->streams < 1 || c->streams > PS_MAX_STREAMS) {
        ps_error_set("--streams %d: want 1 to %d", c->streams, PS_MAX_STREAMS);
        return PS_EINVAL;
    }
    if (c->io_threads > 64) {
        ps_error_set("--io-threads %d: want 1 to 64", c->io_threads);
        return PS_EINVAL;
    }
    if (c->train.batch < 1 || c->train.accumulate < 1 || c->train.epochs < 0 ||
        c->train.steps < 0 || c->train.delay_ms < 0) {
        ps_error_set("--batch-size and --accumulate must be >= 1, --epochs and --steps >= 0");
        return PS_EINVAL;
    }
    return 0;
}

static int load_data(const wkr_cfg_t *c, ps_boot_t *b, wkr_job_t *j, wkr_model_kind_t kind)
{
    wkr_data_opts_t o = {.data_dir = c->data_dir, .features = c->features,
                         .classes = c->classes, .regression = kind == WKR_MODEL_LINEAR,
                         .shard = b->rank, .nshards = b->nworkers};
    int rv = wkr_data_load(&j->train, c->data, 0, &o);
    if (rv != 0) {
        return rv;
    }
    const char *test = c->test_data;
    if (!test && strcmp(c->data, "fashion-mnist") == 0) {
        test = "fashion-mnist";
    }
    if (!test) {
        return 0;
    }
    o.features = j->train.features;
    o.classes = j->train.classes;
    if ((rv = wkr_data_load(&j->test, test, 1, &o)) == 0) {
        j->has_test = 1;
    }
    return rv;
}

/* Overwrite the initial weights with the tensors of a safetensors file. */
static int load_init(wkr_model_t *m, const char *path)
{
    const ps_layout_t *l = wkr_model_layout(m);
    ps_st_file_t *f = NULL;
    int rv = ps_st_open(&f, path);
    for (int i = 0; rv == 0 && i < l->n; i++) {
        const ps_tensor_t *t = &l->t[i];
        const float *data;
        int ndim;
        int64_t shape[PS_MAX_DIMS];
        if (ps_st_get(f, t->name, &data, &ndim, shape) != 0) {
            ps_error_set("--init-from %s: no tensor '%s'", path, t->name);
            rv = PS_ENOENT;
        } else if (ndim != t->ndim || memcmp(shape, t->dims, (size_t)ndim * sizeof *shape)) {
            ps_error_set("--init-from %s: tensor '%s' has another shape than the model's",
                         path, t->name);
            rv = PS_EINVAL;
        } else {
            memcpy(wkr_model_params(m) + t->offset, data, t->numel * sizeof(float));
        }
    }
    ps_st_close(&f);
    return rv;
}

static int build_model(const wkr_cfg_t *c, wkr_job_t *j, wkr_model_kind_t kind)
{
    int hidden[32], nh = 0, rv;
    char why[512];
    wkr_init_t init;
    if ((rv = wkr_model_parse_init(c->init, &init)) != 0) {
        return rv;
    }
    if (kind == WKR_MODEL_MLP && (nh = ps_opts_int_list(c->hidden, hidden, 32)) < 0) {
        snprintf(why, sizeof why, "%s", ps_error_msg()); /* the detail buffer is the target */
        ps_error_set("--hidden: %s", why);
        return PS_EINVAL;
    }
    rv = wkr_model_new(&j->model, kind, j->train.features, j->train.classes, hidden, nh,
                       c->train.batch);
    if (rv != 0) {
        return rv;
    }
    wkr_model_fill_weights(j->model, init, (uint64_t)c->seed);
    if (c->init_from && (rv = load_init(j->model, c->init_from)) != 0) {
        return rv;
    }
    return wkr_train_plan(&c->train, j->train.total, &j->plan);
}

/* Hand the model's own arrays and the plan to the library; the workers
 * also compare the data size and the batch (or sync would hang). */
static int declare_model(const wkr_cfg_t *c, ps_t *ps, wkr_job_t *j)
{
    const ps_layout_t *l = wkr_model_layout(j->model);
    uint64_t extra[3] = {j->train.total, (uint64_t)c->train.batch,
                         (uint64_t)c->train.accumulate};
    char desc[512], msg[1024];
    ps_layout_describe(l, desc, sizeof desc);
    snprintf(msg, sizeof msg,
             "workers disagree on the model or plan: worker %d has model %s, %zu samples, %llu "
             "steps, batch %d x %d, unlike worker 0; give every worker the same flags and data",
             c->train.rank, desc, j->train.total, (unsigned long long)j->plan.total_steps,
             c->train.accumulate, c->train.batch);
    int rv = ps_api_adopt(ps, l, wkr_model_params(j->model), wkr_model_grads(j->model));
    if (rv == 0) {
        rv = ps_plan(ps, j->plan.steps_per_epoch, j->plan.total_steps);
    }
    return rv ? rv : ps_api_agreement(ps, extra, 3, msg);
}

/* Start-up steps 5-7 (docs/protocol.md): data, model, agreement, plan. */
static int prepare(wkr_cfg_t *c, ps_t *ps, wkr_job_t *j, wkr_model_kind_t kind)
{
    c->train.srv = ps_api_srvinfo(ps);
    c->train.shuffle = !c->no_shuffle;
    c->train.seed = (uint64_t)c->seed;
    int rv = load_data(c, ps_api_boot(ps), j, kind);
    if (rv == 0) {
        rv = build_model(c, j, kind);
    }
    if (rv == 0) {
        rv = declare_model(c, ps, j);
    }
    ps_api_fail(ps, rv);
    return ps_api_start_plan(ps);
}

static int connect_and_train(wkr_cfg_t *c, ps_t *ps, wkr_job_t *j)
{
    ps_boot_t *b = ps_api_boot(ps);
    wkr_report_t rep, *r = NULL;
    ps_info_t info;
    int rv = 0;
    if (b->rank == 0 && (rv = wkr_report_open(&rep, c->progress, c->metrics)) == 0) {
        r = &rep;
    }
    ps_api_fail(ps, rv); /* agreed on with the registration */
    if ((rv = ps_api_start_register(ps)) == 0) {
        ps_info(ps, &info);
        c->train.start_step = info.step;
        rv = wkr_train_run(&c->train, &j->plan, b, j->model, ps_api_client(ps), &j->train,
                           j->has_test ? &j->test : NULL, r);
        if (rv != 0) {
            ps_log_error("%s", ps_error_msg());
            ps_boot_abort(b, 3);
        }
        ps_api_shutdown_sent(ps);
    }
    if (r) {
        wkr_report_close(r);
    }
    if (rv == 0) {
        ps_log_peak_memory();
    }
    if (rv == 0 && r && c->plot && (rv = wkr_plot_metrics(c->metrics, c->plot)) != 0) {
        ps_log_error("%s", ps_error_msg()); /* the model is trained: report, go on */
        rv = 0;
    }
    return rv;
}

static int parse_compress(const char *s, int *out)
{
    const char *names[] = {"none", "fp16", "bf16"};
    for (int i = 0; i < 3; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i; /* PS_COMPRESS_NONE, _FP16, _BF16 */
            return 0;
        }
    }
    ps_error_set("--compress '%s': want none, fp16 or bf16", s);
    return PS_EINVAL;
}

/* `ps-worker --plot-metrics FILE --plot OUT.png`: no MPI, no training. */
static int plot_only(const wkr_cfg_t *c)
{
    if (!c->plot) {
        fprintf(stderr, "ps-worker: --plot-metrics needs --plot OUT.png\n");
        return 1;
    }
    if (wkr_plot_metrics(c->plot_metrics, c->plot) != 0) {
        fprintf(stderr, "ps-worker: %s\n", ps_error_msg());
        return 1;
    }
    return 0;
}

/* --trace recording, and a metrics file for --plot when none was asked. */
static int start_outputs(wkr_cfg_t *c, const ps_boot_t *b)
{
    if (c->plot && !c->metrics && b->rank == 0) {
        snprintf(c->tmp_metrics, sizeof c->tmp_metrics, "/tmp/ps-metrics-%d.jsonl",
                 (int)getpid());
        c->metrics = c->tmp_metrics;
    }
    if (!c->trace) {
        return 0;
    }
    char label[32];
    snprintf(label, sizeof label, "worker %d", b->rank);
    return ps_trace_start(c->trace, b->world_rank, label);
}

/* Everything after the flags; ps_finalize meets the servers' save step. */
static int run(wkr_cfg_t *c, ps_t *ps, int flags_rv)
{
    wkr_job_t j;
    wkr_model_kind_t kind = WKR_MODEL_MLP;
    char why[512];
    int rv = flags_rv ? flags_rv : check_flags(c);
    memset(&j, 0, sizeof j);
    if (rv == 0 && (rv = wkr_model_parse_kind(c->model, &kind)) != 0) {
        snprintf(why, sizeof why, "%s", ps_error_msg());
        ps_error_set("--model: %s", why);
    }
    if ((rv = ps_api_join(ps, rv)) == 0 && (rv = prepare(c, ps, &j, kind)) == 0) {
        rv = connect_and_train(c, ps, &j);
    }
    if (rv == 0 && ps_trace_write_part() != 0) {
        ps_log_error("%s", ps_error_msg());
    }
    int world_rank = ps_api_boot(ps)->world_rank, world = ps_api_boot(ps)->world_size;
    int end = ps_finalize(&ps);
    if (end == 0 && world_rank == 0 && ps_trace_merge(world) != 0) {
        ps_log_error("%s", ps_error_msg());
    }
    if (c->tmp_metrics[0]) {
        unlink(c->tmp_metrics);
    }
    wkr_model_destroy(&j.model);
    wkr_data_fini(&j.train);
    wkr_data_fini(&j.test);
    return rv ? rv : end;
}

int main(int argc, char **argv)
{
    wkr_cfg_t c = {
        .model = "mlp", .hidden = "256,128", .data = "fashion-mnist", .init = "default",
        .data_dir = WKR_FMNIST_DEFAULT_DIR,
        .progress = "auto", .compress = "none", .io_threads = PS_DEFAULT_IO_THREADS,
        .streams = PS_DEFAULT_STREAMS, .timeout_s = 300,
        .blas_threads = 1, .seed = 1,
        .train = {.batch = 64, .accumulate = 1, .epochs = 10},
    };
    ps_t *ps = NULL;
    int flags_rv = parse_flags(&c, argc, argv);
    if (flags_rv == PS_OPTS_HELP || flags_rv == PS_OPTS_VERSION) {
        return 0;
    }
    if (flags_rv == 0 && c.plot_metrics) {
        return plot_only(&c);
    }
    ps_options_t o = {.name = "ps-worker", .timeout_s = c.timeout_s,
                      .io_threads = c.io_threads, .streams = c.streams, .quiet = c.quiet};
    if (flags_rv == 0) {
        flags_rv = parse_compress(c.compress, &o.compress); /* agreed on in run() */
    }
    if (ps_api_boot_new(&ps, &argc, &argv, &o) != 0) {
        ps_log_error("%s", ps_error_msg());
        return 1;
    }
    const ps_boot_t *b = ps_api_boot(ps);
    c.train.rank = b->rank;
    c.train.nworkers = b->nworkers;
    openblas_set_num_threads(c.blas_threads);
    if (flags_rv == 0) {
        flags_rv = start_outputs(&c, b);
    }
    if (flags_rv == 0 && b->nservers < 1) {
        ps_error_set("no ps-server ranks in this job (launch: mpirun -np S ps-server : -np W "
                     "ps-worker)");
        flags_rv = PS_EINVAL;
    }
    return run(&c, ps, flags_rv) == 0 ? 0 : 1;
}
