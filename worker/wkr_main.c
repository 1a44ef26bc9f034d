/*
 * ps-worker: loads its shard of the data, computes minibatch gradients of a
 * built-in model and trains it against the ps-server ranks of the job.
 *
 *   mpirun -np S bin/ps-server [flags] : -np W bin/ps-worker [flags]
 *
 * A plain program on libpsclient (ps.h), like any custom worker: ps_init,
 * declare and bind the model's own arrays, ps_plan, ps_start, the trainer
 * (wkr_train), ps_finalize.  This file adds the flags, the data, the model
 * and the reports; of the rest of the project it uses only utilities
 * (logging, flags, traces, safetensors files, the layout type).
 */
#include "ps.h"
#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_opts.h"
#include "ps_trace.h"
#include "ps_safetensors.h"
#include "ps_tmp.h"
#include "wkr_data.h"
#include "wkr_data_sparse.h"
#include "wkr_model.h"
#include "wkr_plot.h"
#include "wkr_report.h"
#include "wkr_sparse_model.h"
#include "wkr_train.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *model, *hidden, *data, *data_dir, *test_data, *init, *init_from, *metrics,
        *progress;
    const char *plot, *plot_metrics, *trace, *config, *compress, *transport;
    char tmp_metrics[4200]; /* --plot without --metrics: a file in TMPDIR */
    int features, classes;
    int embed_dim;
    int sparse; /* a model over a sparse table: skind */
    wkr_sparse_kind_t skind;
    int io_threads, streams, timeout_s, blas_threads, quiet;
    int no_shuffle;
    long long seed;
    int compress_code;  /* PS_COMPRESS_* */
    int transport_code; /* PS_TRANSPORT_* */
    wkr_model_kind_t kind;
    wkr_train_cfg_t train;
} wkr_cfg_t;

typedef struct {
    wkr_dataset_t train, test;
    int has_test;
    wkr_model_t *model;
    ps_planinfo_t plan;
    wkr_sparse_ds_t strain, stest; /* the sparse models' data (CSR) */
    wkr_sparse_model_t *smodel;
} wkr_job_t;

/* --hidden's default for mlp; the pointer itself tells "not given" (a
 * value from the command line or --config is another string). */
static const char MLP_HIDDEN[] = "256,128";

static const char USAGE[] =
    "usage: mpirun -np S ps-server [flags] : -np W ps-worker [flags]\n\n"
    "Trains a built-in model on its shard of the data (sample i goes to worker\n"
    "i mod W).  Each step pushes the mean gradient over its K x B samples to the\n"
    "servers and pulls the updated weights; the update uses the mean loss over\n"
    "all W x K x B samples of the step.";

static int parse_flags(wkr_cfg_t *c, int argc, char **argv)
{
    ps_opt_t opts[] = {
        {"model", PS_OPT_STRING, &c->model, "linear|softmax|mlp|logreg|embed-mlp",
         "linear (MSE), softmax regression or MLP (cross-entropy); over a sparse table "
         "(binary cross entropy, test_logloss and test_auc in the metrics): logreg, logistic "
         "regression on LIBSVM data (table fc1.weight keyed by feature index, any index up to "
         "2^63-1), or embed-mlp on Criteo data (table emb.weight, one row per categorical "
         "value, then an MLP)"},
        {"hidden", PS_OPT_STRING, &c->hidden, "N,N,...",
         "hidden layer widths (embed-mlp: 64,32 unless given)"},
        {"embed-dim", PS_OPT_INT, &c->embed_dim, "D",
         "embed-mlp: floats per embedding row (each of the 26 Criteo categorical fields)"},
        {"data", PS_OPT_STRING, &c->data, "SPEC",
         "fashion-mnist | libsvm:PATH | csv:PATH (label first) | criteo:PATH (the Criteo "
         "TSV: label, 13 integer, 26 categorical fields; embed-mlp); logreg reads libsvm:PATH "
         "sparse, labels 0/1 or -1/+1, no --features needed"},
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
         "progress display (auto: bar on a terminal, plain lines otherwise; the environment "
         "variable PS_PROGRESS_AUTO=bar|plain overrides what auto picks, as make run does "
         "when its own output is a terminal)"},
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
        {"transport", PS_OPT_STRING, &c->transport, "auto|shm|ipc|tcp",
         "data plane: auto = shared memory (+ ipc, peer credentials) to servers on this "
         "host, tcp (CurveZMQ) to the others; shm, ipc or tcp to every server"},
        {"compress", PS_OPT_STRING, &c->compress, "none|fp16|bf16",
         "push gradients as 16-bit floats (half the bytes; servers widen them back); "
         "a chunk too large for 16 bits goes as float32"},
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

static int parse_transport(const char *s, int *out)
{
    static const char *const names[] = {"auto", "ipc", "tcp", "shm"};
    static const int codes[] = {PS_TRANSPORT_AUTO, PS_TRANSPORT_IPC, PS_TRANSPORT_TCP,
                                PS_TRANSPORT_SHM};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = codes[i];
            return 0;
        }
    }
    ps_error_set("--transport '%s': want auto, shm, ipc or tcp", s);
    return PS_EINVAL;
}

static int parse_compress(const char *s, int *out)
{
    static const struct {
        const char *name;
        int code;
    } kinds[] = {
        {"none", PS_COMPRESS_NONE}, {"fp16", PS_COMPRESS_FP16}, {"bf16", PS_COMPRESS_BF16}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(s, kinds[i].name) == 0) {
            *out = kinds[i].code;
            return 0;
        }
    }
    ps_error_set("--compress '%s': want none, fp16 or bf16", s);
    return PS_EINVAL;
}

/* The sparse models' flags (and the ones that apply to both). */
static int check_sparse_flags(wkr_cfg_t *c)
{
    const char *want = c->skind == WKR_SPARSE_LOGREG ? "libsvm:" : "criteo:";
    if (strncmp(c->data, want, 7) != 0) {
        ps_error_set("--model %s reads --data %sPATH, not '%s'", c->model, want, c->data);
        return PS_EINVAL;
    }
    if (c->test_data && strncmp(c->test_data, want, 7) != 0) {
        ps_error_set("--model %s reads --test-data %sPATH, not '%s'", c->model, want, c->test_data);
        return PS_EINVAL;
    }
    if (c->init_from) {
        ps_error_set("--init-from is not supported for --model %s yet", c->model);
        return PS_EINVAL;
    }
    if (c->skind == WKR_SPARSE_EMBED_MLP &&
        (c->embed_dim < 1 || c->embed_dim > WKR_SPARSE_MODEL_MAX_DIM)) {
        ps_error_set("--embed-dim %d: want 1 to %d", c->embed_dim, WKR_SPARSE_MODEL_MAX_DIM);
        return PS_EINVAL;
    }
    if (c->hidden == MLP_HIDDEN) {
        c->hidden = "64,32"; /* not given: embed-mlp's own default */
    }
    if (parse_transport(c->transport, &c->transport_code) != 0) {
        return PS_EINVAL;
    }
    return parse_compress(c->compress, &c->compress_code);
}

/* Flags that need no data: checked before the job starts, agreed on at
 * ps_start (ps_fail). */
static int check_flags(wkr_cfg_t *c)
{
    wkr_progress_t p;
    char why[512];
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
    c->sparse = wkr_sparse_model_parse_kind(c->model, &c->skind) == 0;
    if (c->sparse) {
        return check_sparse_flags(c);
    }
    if (wkr_model_parse_kind(c->model, &c->kind) != 0) {
        snprintf(why, sizeof why, "%s", ps_error_msg()); /* the detail buffer is the target */
        ps_error_set("--model: %s", why);
        return PS_EINVAL;
    }
    if (parse_transport(c->transport, &c->transport_code) != 0) {
        return PS_EINVAL;
    }
    return parse_compress(c->compress, &c->compress_code);
}

/* The shard of the training file; the whole test file on rank 0 (the
 * exact AUC needs every score in one place). */
static int load_sparse_data(const wkr_cfg_t *c, wkr_job_t *j)
{
    wkr_data_opts_t o = {.shard = c->train.rank, .nshards = c->train.nworkers};
    int rv = wkr_data_sparse_load(&j->strain, c->data, &o);
    if (rv != 0 || !c->test_data || c->train.rank != 0) {
        return rv;
    }
    if ((rv = wkr_data_sparse_load(&j->stest, c->test_data, NULL)) == 0) {
        j->has_test = 1;
    }
    return rv;
}

static int load_data(const wkr_cfg_t *c, wkr_job_t *j)
{
    if (c->sparse) {
        return load_sparse_data(c, j);
    }
    wkr_data_opts_t o = {.data_dir = c->data_dir,
                         .features = c->features,
                         .classes = c->classes,
                         .regression = c->kind == WKR_MODEL_LINEAR,
                         .shard = c->train.rank,
                         .nshards = c->train.nworkers};
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
            ps_error_set("--init-from %s: tensor '%s' has another shape than the model's", path,
                         t->name);
            rv = PS_EINVAL;
        } else {
            memcpy(wkr_model_params(m) + t->offset, data, t->numel * sizeof(float));
        }
    }
    ps_st_close(&f);
    return rv;
}

static int build_sparse_model(const wkr_cfg_t *c, wkr_job_t *j)
{
    int hidden[WKR_SPARSE_MODEL_MAX_HIDDEN], nh = 0, rv;
    char why[512];
    wkr_init_t init;
    if ((rv = wkr_model_parse_init(c->init, &init)) != 0) {
        return rv;
    }
    if (c->skind == WKR_SPARSE_EMBED_MLP &&
        (nh = ps_opts_int_list(c->hidden, hidden, WKR_SPARSE_MODEL_MAX_HIDDEN)) < 0) {
        snprintf(why, sizeof why, "%s", ps_error_msg()); /* the detail buffer is the target */
        ps_error_set("--hidden: %s", why);
        return PS_EINVAL;
    }
    int max_batch = c->train.batch * c->train.accumulate; /* a step is one batch */
    if (c->train.accumulate > (1 << 24) / c->train.batch) {
        ps_error_set("--batch-size x --accumulate is larger than %d", 1 << 24);
        return PS_EINVAL;
    }
    rv = wkr_sparse_model_new(&j->smodel, c->skind, c->embed_dim, hidden, nh, max_batch);
    if (rv != 0) {
        return rv;
    }
    wkr_sparse_model_fill_weights(j->smodel, init == WKR_INIT_ZEROS, (uint64_t)c->seed);
    return wkr_train_plan(&c->train, j->strain.total, &j->plan);
}

static int build_model(const wkr_cfg_t *c, wkr_job_t *j)
{
    if (c->sparse) {
        return build_sparse_model(c, j);
    }
    int hidden[32], nh = 0, rv;
    char why[512];
    wkr_init_t init;
    if ((rv = wkr_model_parse_init(c->init, &init)) != 0) {
        return rv;
    }
    if (c->kind == WKR_MODEL_MLP && (nh = ps_opts_int_list(c->hidden, hidden, 32)) < 0) {
        snprintf(why, sizeof why, "%s", ps_error_msg()); /* the detail buffer is the target */
        ps_error_set("--hidden: %s", why);
        return PS_EINVAL;
    }
    rv = wkr_model_new(&j->model, c->kind, j->train.features, j->train.classes, hidden, nh,
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

/* Every tensor of the model, its initial values and its arrays (the
 * library pushes from and pulls into the model's own). */
static int declare_tensors(ps_t *ps, const ps_layout_t *l, float *w, float *g)
{
    int rv = 0;
    for (int i = 0; rv == 0 && i < l->n; i++) {
        const ps_tensor_t *t = &l->t[i];
        ps_initializer_t init = {.kind = PS_INIT_VALUES, .values = w + t->offset};
        rv = ps_declare(ps, t->name, t->ndim, t->dims, &init);
        if (rv == 0) {
            rv = ps_bind(ps, t->name, w + t->offset, g + t->offset);
        }
    }
    return rv;
}

/* The table (its rows start at 0, or uniform from the seed: a pure
 * function of (seed, table, key) on the servers), then the dense tensors. */
static int declare_sparse(const wkr_cfg_t *c, ps_t *ps, wkr_sparse_model_t *m)
{
    wkr_init_t init;
    int rv = wkr_model_parse_init(c->init, &init);
    float bound = wkr_sparse_model_table_bound(m, init == WKR_INIT_ZEROS);
    ps_initializer_t ti = {.kind = bound > 0 ? PS_INIT_UNIFORM : PS_INIT_ZEROS,
                           .bound = bound,
                           .seed = (uint64_t)c->seed};
    if (rv == 0) {
        rv = ps_declare_table(ps, wkr_sparse_model_table(m), wkr_sparse_model_dim(m), &ti);
    }
    if (rv == 0) {
        rv = declare_tensors(ps, wkr_sparse_model_layout(m), wkr_sparse_model_params(m),
                             wkr_sparse_model_grads(m));
    }
    return rv;
}

/* The model and the plan to the library; the workers also compare the
 * data size and the batch (or sync would hang). */
static int declare_model(const wkr_cfg_t *c, ps_t *ps, wkr_job_t *j)
{
    const ps_layout_t *l =
        c->sparse ? wkr_sparse_model_layout(j->smodel) : wkr_model_layout(j->model);
    size_t total = c->sparse ? j->strain.total : j->train.total;
    uint64_t extra[3] = {total, (uint64_t)c->train.batch, (uint64_t)c->train.accumulate};
    char desc[512], msg[1024];
    ps_layout_describe(l, desc, sizeof desc);
    snprintf(msg, sizeof msg,
             "workers disagree on the model or plan: worker %d has model %s, %zu samples, %llu "
             "steps, batch %d x %d, unlike worker 0; give every worker the same flags and data",
             c->train.rank, desc, total, (unsigned long long)j->plan.total_steps,
             c->train.accumulate, c->train.batch);
    int rv = c->sparse
                 ? declare_sparse(c, ps, j->smodel)
                 : declare_tensors(ps, l, wkr_model_params(j->model), wkr_model_grads(j->model));
    if (rv == 0) {
        rv = ps_plan(ps, j->plan.steps_per_epoch, j->plan.total_steps);
    }
    return rv ? rv : ps_require_same(ps, extra, 3, msg);
}

/* Data, model, declarations, plan, the report: everything ps_start needs.
 * A failure is handed to the library, which fails ps_start on every rank. */
static void prepare(wkr_cfg_t *c, ps_t *ps, wkr_job_t *j, wkr_report_t *rep, wkr_report_t **r)
{
    int rv = load_data(c, j);
    if (rv == 0) {
        rv = build_model(c, j);
    }
    if (rv == 0) {
        rv = declare_model(c, ps, j);
    }
    if (rv == 0 && c->train.rank == 0 &&
        (rv = wkr_report_init(rep, c->progress, c->metrics)) == 0) {
        uint64_t per_step =
            (uint64_t)c->train.nworkers * (uint64_t)c->train.accumulate * (uint64_t)c->train.batch;
        wkr_report_plan(rep, j->plan.total_steps, per_step, j->train.total);
        *r = rep;
    }
    if (rv != 0) {
        ps_fail(ps, "%s", ps_error_msg());
    }
}

static int train(wkr_cfg_t *c, ps_t *ps, wkr_job_t *j)
{
    wkr_report_t rep, *r = NULL;
    prepare(c, ps, j, &rep, &r);
    int rv = ps_start(ps);
    if (rv == 0) {
        if (c->sparse) {
            rv = wkr_train_run_sparse(&c->train, &j->plan, ps, j->smodel, &j->strain,
                                      j->has_test ? &j->stest : NULL, r);
        } else {
            rv = wkr_train_run(&c->train, &j->plan, ps, j->model, &j->train,
                               j->has_test ? &j->test : NULL, r);
        }
        if (rv != 0) {
            ps_fail(ps, "%s", ps_error_msg()); /* ps_finalize ends the job with it */
        }
    }
    if (r) {
        wkr_report_fini(r);
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
static int start_outputs(wkr_cfg_t *c, const ps_info_t *in)
{
    if (c->plot && !c->metrics && in->rank == 0) {
        /* An unguessable new file in TMPDIR: a fixed name there could be
         * a symlink someone planted.  wkr_report reopens it by name. */
        int fd,
            rv = ps_tmp_create(c->tmp_metrics, sizeof c->tmp_metrics, "ps-metrics", ".jsonl", &fd);
        if (rv != 0) {
            char why[4400];
            snprintf(why, sizeof why, "%s", ps_error_msg());
            c->tmp_metrics[0] = '\0';
            ps_error_set("--plot without --metrics: %s", why);
            return rv;
        }
        close(fd);
        c->metrics = c->tmp_metrics;
        ps_cleanup_add_file(c->tmp_metrics); /* also when the job ends early */
    }
    if (!c->trace) {
        return 0;
    }
    char label[32];
    snprintf(label, sizeof label, "worker %d", in->rank);
    return ps_trace_start(c->trace, in->world_rank, label);
}

/* Everything after ps_init; ps_finalize meets the servers' save step. */
static int run(wkr_cfg_t *c, ps_t *ps, const char *flags_error)
{
    wkr_job_t j;
    ps_info_t in;
    int rv = ps_info(ps, &in);
    memset(&j, 0, sizeof j);
    c->train.rank = in.rank;
    c->train.nworkers = in.nworkers;
    c->train.shuffle = !c->no_shuffle;
    c->train.seed = (uint64_t)c->seed;
    if (rv == 0 && flags_error) {
        ps_error_set("%s", flags_error);
        rv = PS_EINVAL;
    }
    if (rv == 0) {
        rv = start_outputs(c, &in);
    }
    if (rv != 0) {
        ps_fail(ps, "%s", ps_error_msg()); /* ps_finalize fails the start-up with it */
    } else {
        openblas_set_num_threads(c->blas_threads);
        rv = train(c, ps, &j);
    }
    if (rv == 0 && ps_trace_write_part() != 0) {
        ps_log_error("%s", ps_error_msg());
    }
    int end = ps_finalize(&ps);
    if (end == 0 && in.world_rank == 0 && ps_trace_merge(in.world_size) != 0) {
        ps_log_error("%s", ps_error_msg());
    }
    if (c->tmp_metrics[0]) {
        unlink(c->tmp_metrics);
        ps_cleanup_forget(c->tmp_metrics);
    }
    wkr_model_destroy(&j.model);
    wkr_data_fini(&j.train);
    wkr_data_fini(&j.test);
    wkr_sparse_model_destroy(&j.smodel);
    wkr_data_sparse_fini(&j.strain);
    wkr_data_sparse_fini(&j.stest);
    return rv ? rv : end;
}

int main(int argc, char **argv)
{
    wkr_cfg_t c = {
        .model = "mlp",
        .hidden = MLP_HIDDEN,
        .embed_dim = 16,
        .data = "fashion-mnist",
        .init = "default",
        .data_dir = WKR_FMNIST_DEFAULT_DIR,
        .progress = "auto",
        .compress = "none",
        .transport = "auto",
        .io_threads = PS_DEFAULT_IO_THREADS,
        .streams = PS_DEFAULT_STREAMS,
        .timeout_s = 300,
        .blas_threads = 1,
        .seed = 1,
        .train = {.batch = 64, .accumulate = 1, .epochs = 10},
    };
    ps_t *ps = NULL;
    char why[512];
    int flags_rv = parse_flags(&c, argc, argv);
    if (flags_rv == PS_OPTS_HELP || flags_rv == PS_OPTS_VERSION) {
        return 0;
    }
    if (flags_rv == 0 && c.plot_metrics) {
        return plot_only(&c);
    }
    if (flags_rv == 0) {
        flags_rv = check_flags(&c);
    }
    /* Bad flags still join the job, so that every rank ends cleanly; they
     * fail its start-up (run) with the defaults in the options. */
    snprintf(why, sizeof why, "%s", flags_rv ? ps_error_msg() : "");
    ps_options_t o = PS_OPTIONS_INIT;
    o.name = "ps-worker";
    o.quiet = c.quiet;
    o.signals = PS_SIGNALS_STOP; /* stop between steps, exit 128 + the signal */
    if (flags_rv == 0) {
        o.timeout_s = c.timeout_s;
        o.io_threads = c.io_threads;
        o.streams = c.streams;
        o.compress = c.compress_code;
        o.transport = c.transport_code;
    }
    if (ps_init(&ps, &argc, &argv, &o) != 0) {
        return 1; /* the job's error line is printed already */
    }
    return run(&c, ps, flags_rv ? why : NULL) == 0 ? 0 : 1;
}
