/*
 * bench_pushpull: one push + pull round trip through the real data path,
 * against raw libzmq moving the same bytes.
 *
 *     bench_pushpull [--chunk-elems N] [--streams N] [--io-threads N] [--iters N]
 *                    [--seconds S] [--elems N] [--shm] [RESULTS.jsonl]
 *
 * Ours: a server thread runs the real event loop (srv_loop: setup, train,
 * with lr 0 and momentum 0, so the update kernel runs but the weights stay
 * put); the main thread is a worker using wkr_client: begin_step, push the
 * whole 16 MiB gradient (chunk by chunk, zero-copy), pull the next version
 * into the caller's buffer, wait for the sends.  Reference: a DEALER and a
 * ROUTER in two threads of this process ping-pong the same 16 MiB payload
 * (zero-copy zmq_msg_init_data on both sides, nothing copied out), over the
 * same kind of endpoint.  So the ratio charges our code with everything it
 * adds: headers, chunking, the update kernel and the copy into `params`.
 *
 * Both run over tcp://127.0.0.1 and ipc (ours in a private folder under
 * /tmp, the raw one at a path under /tmp; both removed after).
 * Rounds of ours and of the reference alternate, so drift in the load of
 * this shared machine hits both alike; the median of each is reported (the
 * best one is printed too).  A second figure pushes+pulls a layout of many
 * 1 KiB tensors against one tensor of the same size (per-tensor overhead).
 * A third one is ours against ours: the default streams and I/O threads
 * (ps.h; or --streams/--io-threads) against one connection served by one
 * I/O thread on each side, 16 MiB over ipc, which shows what spreading the
 * bytes over several connections buys beyond one copy loop.
 *
 * With --shm, only the shared-memory figure (pushpull_16MiB_shm): the
 * same round trip with the payloads in the server's segment (ps_shm; the
 * headers over ipc), against one core's memcpy of the same 16 MiB in this
 * process, rounds alternating.  Both are bytes moved per second: ours
 * counts the push and the pull (2 x 16 MiB per round), memcpy its one
 * copy; so a ratio of 1 means a push+pull costs what two plain copies
 * would.  Ours does three copies (gradient into the slot, weights into the
 * reply area, reply into the caller's array) and the update kernel.
 *
 * Every run is checked: the pulled weights must equal the initial values
 * bit for bit, the server must have counted every push and rejected none,
 * every reference reply must have the full length.  A failed check exits
 * non-zero and writes nothing.  Results go to stdout as a table and, when a
 * path is given, are appended to it as JSON lines.
 *
 * --elems N sets the big tensor's floats (default 4194304: the 16 MiB
 * above); a result's name then says its size instead of 16MiB
 * (pushpull_64KiB_tcp...).  tests/integration/test_bench_smoke.sh runs a
 * tiny size with --seconds 0.01 in `make test`, so the bench cannot break
 * unnoticed until the next `make bench`.
 *
 * This program includes zmq.h for the reference only; our path goes
 * through ps_transport like the real binaries.
 */
#include "ps_clock.h"
#include "ps_err.h"
#include "ps.h"
#include "ps_count.h"
#include "ps_layout.h"
#include "ps_shm.h"
#include "srv_loop.h"
#include "wkr_client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define BIG_ELEMS ((size_t)4 << 20) /* 16 MiB of float32: the default --elems */
#define MAX_ELEMS ((size_t)16 << 20)
#define SMALL_TENSOR 256  /* floats per small tensor (1 KiB) */
#define SMALL_WANTED 1000 /* small tensors asked for */
#define TIMEOUT_MS 30000
#define WARMUP 3
#define MIN_ITERS 5

typedef struct {
    size_t chunk_elems;
    int streams;    /* ours: connections per server */
    int io_threads; /* ours: libzmq I/O threads on each side */
    int iters;      /* 0: calibrate to `seconds` */
    double seconds; /* wall time wanted for our side of each comparison */
    const char *results;
    int shm_only;       /* --shm: only the shared-memory figure */
    size_t big_elems;   /* --elems: floats of the big tensor */
    char size[24];      /* its size for names, "16MiB" */
    char size_text[24]; /* and for people, "16 MiB" */
} cfg_t;

typedef struct {
    double med, best;
} timing_t;

/* ---------------------------------------------------------------- ours */

typedef struct {
    ps_layout_t layout;
    float *init, *grads, *params;
    srv_loop_t L;
    pthread_t thread;
    int started, srv_rv;
    char ep[512];
    char *eps[1];
    wkr_client_t *client;
    uint64_t step;
    double apply_s; /* server time in the update, over all rounds */
    ps_shm_t *shm;  /* the server's segment when the payloads go through it */
} ours_t;

static void *ours_server(void *arg)
{
    ours_t *o = arg;
    int rv = srv_loop_setup(&o->L);
    if (rv == 0) {
        rv = srv_loop_train(&o->L);
    }
    if (rv != 0) {
        fprintf(stderr, "bench_pushpull: server loop: %s\n", ps_error_msg());
    }
    o->srv_rv = rv;
    return NULL;
}

static int ours_buffers(ours_t *o)
{
    size_t n = o->layout.total;
    o->init = malloc(n * sizeof(float));
    o->grads = malloc(n * sizeof(float));
    o->params = malloc(n * sizeof(float));
    if (!o->init || !o->grads || !o->params) {
        return PS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        o->init[i] = (float)(i % 1000) * 1e-3f - 0.5f;
        o->grads[i] = (float)(i % 7) * 1e-4f; /* every page touched before timing */
        o->params[i] = 0.0f;
    }
    return 0;
}

/* Server thread up, client connected, model registered.  On failure the
 * caller still calls ours_stop() on the half-built state. */
/* The server's segment, sized for worker 0 as ps-server sizes it once
 * the layout is registered (the bench knows the layout up front). */
static int ours_shm(ours_t *o, size_t chunk_elems, char *path, size_t cap)
{
    ps_chunkmap_t map;
    const uint8_t use[1] = {1};
    int rv = ps_chunkmap_init(&map, o->layout.total, chunk_elems, 1);
    rv = rv ? rv : ps_shm_create(&o->shm, path, cap);
    rv = rv ? rv : ps_shm_size(o->shm, &map, 0, 1, 1, use);
    if (rv == 0) {
        srv_loop_set_shm(&o->L, o->shm);
    }
    ps_chunkmap_fini(&map);
    return rv;
}

static int ours_start(ours_t *o, const ps_layout_t *l, const char *base, size_t chunk_elems,
                      int streams, int io_threads, int shm)
{
    int rv;
    char path[PS_SHM_PATH];
    memset(o, 0, sizeof *o);
    o->layout = *l;
    ps_tp_t *tp = NULL;
    if ((rv = ours_buffers(o)) != 0 ||
        (rv = ps_tp_server_new(&tp, base, io_threads, NULL, o->ep, sizeof o->ep)) != 0) {
        return rv;
    }
    /* Fields left zero: server 0, sync mode, a constant learning rate. */
    srv_loop_cfg_t lc = {.tp = tp,
                         .nservers = 1,
                         .nworkers = 1,
                         .chunk_elems = chunk_elems,
                         .opt = {.lr = 0.0, .momentum = 0.0},
                         .timeout_ms = TIMEOUT_MS};
    if ((rv = srv_loop_init(&o->L, &lc)) != 0) {
        o->L.cfg.tp = tp; /* for ours_stop */
        return rv;
    }
    if (shm && (rv = ours_shm(o, chunk_elems, path, sizeof path)) != 0) {
        return rv;
    }
    if (pthread_create(&o->thread, NULL, ours_server, o) != 0) {
        ps_error_set("cannot start the server thread");
        return PS_ENOMEM;
    }
    o->started = 1;
    o->eps[0] = o->ep;
    wkr_client_cfg_t cc = {.rank = 0,
                           .nservers = 1,
                           .endpoints = o->eps,
                           .layout = &o->layout,
                           .chunk_elems = chunk_elems,
                           .streams = streams,
                           .io_threads = io_threads,
                           .timeout_ms = TIMEOUT_MS,
                           .nworkers = 1};
    if ((rv = wkr_client_new(&o->client, &cc)) != 0) {
        return rv;
    }
    /* The flat arrays, tensor by tensor (contiguous: sent zero-copy). */
    for (int t = 0; t < o->layout.n; t++) {
        size_t off = o->layout.t[t].offset;
        wkr_client_set_arrays(o->client, t, o->params + off, o->grads + off);
    }
    memcpy(o->params, o->init, o->layout.total * sizeof(float));
    rv = wkr_client_register(o->client);
    if (rv == 0 && shm) {
        const char *paths[1] = {path};
        rv = wkr_client_attach_shm(o->client, paths);
        if (rv == 0 && wkr_client_shm_servers(o->client) != 1) {
            ps_error_set("the client did not map the server's segment");
            rv = PS_EPROTO;
        }
    }
    return rv;
}

/* One timed round: the worker's whole step minus the compute. */
static int ours_round(void *arg, double *dt)
{
    ours_t *o = arg;
    double t0 = ps_clock_now();
    wkr_client_begin_step(o->client, o->step);
    int rv = 0;
    for (int t = o->layout.n; rv == 0 && t-- > 0;) {
        rv = wkr_client_push_tensor(o->client, t, 1);
    }
    if (rv == 0) {
        rv = wkr_client_pull(o->client, o->step + 1);
    }
    if (rv == 0) {
        rv = wkr_client_finish_step(o->client);
    }
    *dt = ps_clock_now() - t0;
    o->step++;
    return rv;
}

/* One more round into a poisoned buffer: lr 0 means every pulled weight
 * must come back as it was registered. */
static int ours_verify(ours_t *o)
{
    double dt;
    memset(o->params, 0xff, o->layout.total * sizeof(float));
    int rv = ours_round(o, &dt);
    if (rv != 0) {
        return rv;
    }
    if (memcmp(o->params, o->init, o->layout.total * sizeof(float)) != 0) {
        ps_error_set("pulled weights differ from the registered ones");
        return PS_EPROTO;
    }
    return 0;
}

/* Every push counted, nothing rejected (read after the join). */
static int ours_counters(const ours_t *o, size_t chunk_elems)
{
    uint64_t nchunks = (o->layout.total + chunk_elems - 1) / chunk_elems;
    if (srv_loop_rejected_total(&o->L) != 0) {
        ps_error_set("the server rejected %llu messages",
                     (unsigned long long)srv_loop_rejected_total(&o->L));
        return PS_EPROTO;
    }
    if (o->L.pushes != o->step * nchunks) {
        ps_error_set("the server counted %llu pushes, expected %llu",
                     (unsigned long long)o->L.pushes, (unsigned long long)(o->step * nchunks));
        return PS_EPROTO;
    }
    return 0;
}

static int ours_stop(ours_t *o, size_t chunk_elems, int rv)
{
    if (rv == 0 && o->client) {
        rv = ours_verify(o);
    }
    if (o->client) {
        int r2 = wkr_client_shutdown(o->client);
        rv = rv ? rv : r2;
    }
    if (o->started) {
        pthread_join(o->thread, NULL);
        rv = rv ? rv : o->srv_rv;
        rv = rv ? rv : ours_counters(o, chunk_elems);
        o->apply_s = o->L.apply_s;
    }
    wkr_client_destroy(&o->client);
    /* Closing the socket first runs the free callbacks of any reply still
     * queued, while the store they point into is alive. */
    ps_tp_destroy(&o->L.cfg.tp);
    srv_loop_fini(&o->L);
    ps_shm_destroy(&o->shm);
    free(o->init);
    free(o->grads);
    free(o->params);
    return rv;
}

/* ----------------------------------------------------------- reference */

typedef struct {
    void *sctx, *cctx, *router, *dealer;
    void *sbuf, *cbuf; /* the server's reply payload, the client's request */
    size_t bytes;
    ps_count_t inflight; /* client payloads zmq still reads */
    pthread_t thread;
    int started, srv_rv;
    char ep[512];
} ref_t;

static int zfail(const char *what)
{
    ps_error_set("%s: %s", what, zmq_strerror(zmq_errno()));
    return PS_EZMQ;
}

/* The server's payload is read-only and freed after zmq_ctx_term. */
static void ref_nofree(void *data, void *hint)
{
    (void)data;
    (void)hint;
}

static void ref_released(void *data, void *hint)
{
    (void)data;
    ps_count_release(&((ref_t *)hint)->inflight);
}

static int ref_reply(ref_t *r, zmq_msg_t *id)
{
    zmq_msg_t m;
    if (zmq_msg_send(id, r->router, ZMQ_SNDMORE) < 0) {
        return zfail("router send id");
    }
    if (zmq_msg_init_data(&m, r->sbuf, r->bytes, ref_nofree, NULL) != 0) {
        return zfail("zmq_msg_init_data");
    }
    if (zmq_msg_send(&m, r->router, 0) < 0) {
        zmq_msg_close(&m);
        return zfail("router send");
    }
    return 0;
}

/* Echo loop: a full-size request gets a full-size reply; an empty one
 * ends the loop. */
static void *ref_server(void *arg)
{
    ref_t *r = arg;
    int rv = 0;
    while (rv == 0) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&id, r->router, 0) < 0 || zmq_msg_recv(&body, r->router, 0) < 0) {
            rv = zfail("router recv");
        }
        size_t len = zmq_msg_size(&body);
        zmq_msg_close(&body);
        if (rv == 0 && len == 0) {
            zmq_msg_close(&id);
            break;
        }
        if (rv == 0 && len != r->bytes) {
            ps_error_set("reference request of %zu bytes", len);
            rv = PS_EPROTO;
        }
        rv = rv ? rv : ref_reply(r, &id);
        zmq_msg_close(&id);
    }
    if (rv != 0) {
        fprintf(stderr, "bench_pushpull: reference server: %s\n", ps_error_msg());
    }
    r->srv_rv = rv;
    return NULL;
}

static int ref_sockopts(void *s)
{
    int zero = 0, tmo = TIMEOUT_MS;
    if (zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo) != 0) {
        return zfail("zmq_setsockopt");
    }
    return 0;
}

/* Two contexts of one I/O thread each, as our server and client have. */
static int ref_sockets(ref_t *r, const char *bind_ep)
{
    size_t len = sizeof r->ep;
    r->sctx = zmq_ctx_new();
    r->cctx = zmq_ctx_new();
    if (!r->sctx || !r->cctx) {
        return zfail("zmq_ctx_new");
    }
    r->router = zmq_socket(r->sctx, ZMQ_ROUTER);
    r->dealer = zmq_socket(r->cctx, ZMQ_DEALER);
    if (!r->router || !r->dealer) {
        return zfail("zmq_socket");
    }
    if (ref_sockopts(r->router) != 0 || ref_sockopts(r->dealer) != 0) {
        return PS_EZMQ;
    }
    if (zmq_bind(r->router, bind_ep) != 0) {
        return zfail(bind_ep);
    }
    if (zmq_getsockopt(r->router, ZMQ_LAST_ENDPOINT, r->ep, &len) != 0) {
        return zfail("ZMQ_LAST_ENDPOINT");
    }
    if (zmq_connect(r->dealer, r->ep) != 0) {
        return zfail(r->ep);
    }
    return 0;
}

static int ref_start(ref_t *r, const char *bind_ep, size_t bytes)
{
    int rv;
    memset(r, 0, sizeof *r);
    ps_count_init(&r->inflight);
    r->bytes = bytes;
    r->sbuf = malloc(bytes);
    r->cbuf = malloc(bytes);
    if (!r->sbuf || !r->cbuf) {
        return PS_ENOMEM;
    }
    memset(r->sbuf, 0x11, bytes);
    memset(r->cbuf, 0x22, bytes);
    if ((rv = ref_sockets(r, bind_ep)) != 0) {
        return rv;
    }
    if (pthread_create(&r->thread, NULL, ref_server, r) != 0) {
        ps_error_set("cannot start the reference server thread");
        return PS_ENOMEM;
    }
    r->started = 1;
    return 0;
}

static int ref_send(ref_t *r, void *data, size_t len)
{
    zmq_msg_t m;
    ps_count_add(&r->inflight, 1);
    if (zmq_msg_init_data(&m, data, len, ref_released, r) != 0) {
        ps_count_release(&r->inflight);
        return zfail("zmq_msg_init_data");
    }
    if (zmq_msg_send(&m, r->dealer, 0) < 0) {
        zmq_msg_close(&m);
        return zfail("dealer send");
    }
    return 0;
}

static int ref_round(void *arg, double *dt)
{
    ref_t *r = arg;
    zmq_msg_t rep;
    double t0 = ps_clock_now();
    int rv = ref_send(r, r->cbuf, r->bytes);
    zmq_msg_init(&rep);
    if (rv == 0 && zmq_msg_recv(&rep, r->dealer, 0) < 0) {
        rv = zfail("dealer recv");
    }
    if (rv == 0 && zmq_msg_size(&rep) != r->bytes) {
        ps_error_set("reference reply of %zu bytes", zmq_msg_size(&rep));
        rv = PS_EPROTO;
    }
    zmq_msg_close(&rep);
    ps_count_wait_zero(&r->inflight); /* as wkr_client_wait_sends */
    *dt = ps_clock_now() - t0;
    return rv;
}

static int ref_stop(ref_t *r, int rv)
{
    if (r->started) {
        /* An empty request ends the echo loop; a failed send would leave
         * the thread waiting, so it must not be ignored. */
        static char empty;
        int r2 = ref_send(r, &empty, 0);
        if (r2 == 0) {
            pthread_join(r->thread, NULL);
            rv = rv ? rv : r->srv_rv;
        } else {
            rv = rv ? rv : r2;
            pthread_detach(r->thread);
            return rv; /* the thread still uses the sockets: leave them */
        }
    }
    if (r->router) {
        zmq_close(r->router);
    }
    if (r->dealer) {
        zmq_close(r->dealer);
    }
    if (r->sctx) {
        zmq_ctx_term(r->sctx);
    }
    if (r->cctx) {
        zmq_ctx_term(r->cctx);
    }
    free(r->sbuf);
    free(r->cbuf);
    return rv;
}

/* ------------------------------------------------------------- timing */

typedef int (*round_fn)(void *ctx, double *dt);

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static timing_t summarize(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    timing_t r = {.best = t[0], .med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2])};
    return r;
}

/* Rounds for about cfg->seconds of side A, from A's fastest warm-up. */
static int calibrate(const cfg_t *cfg, double warm_best, int max_iters)
{
    if (cfg->iters > 0) {
        return cfg->iters;
    }
    double n = cfg->seconds / (warm_best > 1e-7 ? warm_best : 1e-7);
    return n < MIN_ITERS ? MIN_ITERS : n > max_iters ? max_iters : (int)n;
}

/* Warm up both sides, then alternate their rounds (A first on even
 * rounds, B first on odd ones). */
static int run_interleaved(const cfg_t *cfg, round_fn fa, void *a, round_fn fb, void *b,
                           int max_iters, timing_t *ta, timing_t *tb, int *iters)
{
    double dt, warm_best = 1e30;
    int rv = 0;
    for (int i = 0; i < WARMUP && rv == 0; i++) {
        rv = fa(a, &dt);
        warm_best = dt < warm_best ? dt : warm_best;
        rv = rv ? rv : fb(b, &dt);
    }
    int n = calibrate(cfg, warm_best, max_iters);
    double *sa = malloc((size_t)n * sizeof *sa), *sb = malloc((size_t)n * sizeof *sb);
    if (rv == 0 && (!sa || !sb)) {
        rv = PS_ENOMEM;
    }
    for (int i = 0; i < n && rv == 0; i++) {
        rv = (i & 1) ? fb(b, &sb[i]) : fa(a, &sa[i]);
        rv = rv ? rv : (i & 1) ? fa(a, &sa[i]) : fb(b, &sb[i]);
    }
    if (rv == 0) {
        *ta = summarize(sa, n);
        *tb = summarize(sb, n);
        *iters = n;
    }
    free(sa);
    free(sb);
    return rv;
}

/* ------------------------------------------------------- the figures */

typedef struct {
    const char *kind;
    timing_t ours, ref;
    int iters;
    double apply_ms; /* server update per round */
    size_t bytes;    /* of the tensor */
} big_res_t;

static double gbps(size_t bytes, double s)
{
    return 2.0 * (double)bytes / s * 1e-9;
}

static void ipc_paths(char *ours, char *ref, size_t cap, const char *what)
{
    snprintf(ours, cap, "/tmp/ps-bench-%ld-%s-ours.ipc", (long)getpid(), what);
    snprintf(ref, cap, "/tmp/ps-bench-%ld-%s-ref.ipc", (long)getpid(), what);
}

static int bench_big(const cfg_t *cfg, const char *kind, big_res_t *res)
{
    ps_layout_t l;
    int64_t dims[1] = {(int64_t)cfg->big_elems};
    char p_ours[256], p_ref[256], base[64], bind_ep[300];
    int ipc = strcmp(kind, "ipc") == 0;
    ours_t o;
    ref_t r;
    memset(&o, 0, sizeof o);
    memset(&r, 0, sizeof r);
    ipc_paths(p_ours, p_ref, sizeof p_ours, "big");
    snprintf(base, sizeof base, "%s", ipc ? "ipc:///tmp" : "tcp://127.0.0.1");
    snprintf(bind_ep, sizeof bind_ep, ipc ? "ipc://%s" : "tcp://127.0.0.1:*", p_ref);
    ps_layout_init(&l);
    int rv = ps_layout_add(&l, "tensor", 1, dims);
    rv = rv ? rv : ours_start(&o, &l, base, cfg->chunk_elems, cfg->streams, cfg->io_threads, 0);
    rv = rv ? rv : ref_start(&r, bind_ep, cfg->big_elems * sizeof(float));
    rv = rv ? rv
            : run_interleaved(cfg, ours_round, &o, ref_round, &r, 1000, &res->ours, &res->ref,
                              &res->iters);
    rv = ref_stop(&r, rv);
    rv = ours_stop(&o, cfg->chunk_elems, rv);
    res->kind = kind;
    res->bytes = cfg->big_elems * sizeof(float);
    res->apply_ms = o.step ? 1e3 * o.apply_s / (double)o.step : 0;
    if (ipc) {
        unlink(p_ref); /* raw libzmq leaves it; ours removes its own */
    }
    return rv;
}

/* As many 1 KiB tensors as asked for, or as the layout holds. */
static int small_layouts(ps_layout_t *many, ps_layout_t *one)
{
    int64_t d = SMALL_TENSOR;
    char name[32];
    ps_layout_init(many);
    for (int i = 0; i < SMALL_WANTED; i++) {
        snprintf(name, sizeof name, "layer%d.weight", i);
        if (ps_layout_add(many, name, 1, &d) != 0) {
            printf("note: the layout holds %d tensors at most (%s); using %d\n", many->n,
                   ps_error_msg(), many->n);
            break;
        }
    }
    int64_t dims[2] = {many->n, SMALL_TENSOR};
    ps_layout_init(one);
    return many->n > 0 ? ps_layout_add(one, "all", 2, dims) : PS_EINVAL;
}

/* One of two "ours" set-ups compared with each other. */
typedef struct {
    const ps_layout_t *layout;
    const char *base;
    int streams, io_threads;
} side_t;

typedef struct {
    int iters;
    timing_t a, b;
} pair_res_t;

/* Side a against side b, rounds alternating; `share` of the configured
 * time (short rounds need less). */
static int bench_pair(const cfg_t *cfg, side_t sa, side_t sb, double share, pair_res_t *res)
{
    ours_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int rv = ours_start(&a, sa.layout, sa.base, cfg->chunk_elems, sa.streams, sa.io_threads, 0);
    rv = rv ? rv
            : ours_start(&b, sb.layout, sb.base, cfg->chunk_elems, sb.streams, sb.io_threads, 0);
    cfg_t c = *cfg;
    c.seconds = cfg->seconds * share;
    rv = rv ? rv
            : run_interleaved(&c, ours_round, &a, ours_round, &b, 20000, &res->a, &res->b,
                              &res->iters);
    rv = ours_stop(&b, cfg->chunk_elems, rv);
    return ours_stop(&a, cfg->chunk_elems, rv);
}

typedef struct {
    int ntensors;
    size_t bytes;
    pair_res_t r; /* a: many tensors, b: one */
} small_res_t;

static int bench_small(const cfg_t *cfg, small_res_t *res)
{
    ps_layout_t many, one;
    int rv = small_layouts(&many, &one);
    side_t a = {&many, "tcp://127.0.0.1", cfg->streams, cfg->io_threads};
    side_t b = {&one, "tcp://127.0.0.1", cfg->streams, cfg->io_threads};
    rv = rv ? rv : bench_pair(cfg, a, b, 1.0 / 3, &res->r);
    res->ntensors = many.n;
    res->bytes = many.total * sizeof(float);
    return rv;
}

/* Beyond one stream: the configured streams and I/O threads against one
 * connection served by one I/O thread on each side, the big tensor over
 * ipc. */
static int bench_streams(const cfg_t *cfg, pair_res_t *res)
{
    ps_layout_t l;
    int64_t dims[1] = {(int64_t)cfg->big_elems};
    ps_layout_init(&l);
    int rv = ps_layout_add(&l, "tensor", 1, dims);
    /* Each makes its own private folder in /tmp. */
    side_t a = {&l, "ipc:///tmp", cfg->streams, cfg->io_threads}, b = {&l, "ipc:///tmp", 1, 1};
    return rv ? rv : bench_pair(cfg, a, b, 1.0, res); /* ours removes its socket files */
}

static void json_line(FILE *f, const char *name, double v, const char *unit, const char *ref,
                      double rv);
static void print_row(const char *kind, const char *what, double unit, size_t bytes,
                      const timing_t *t);

/* One core's memcpy of the big tensor, the shm figure's reference. */
typedef struct {
    void *src, *dst;
    size_t bytes;
} copy_t;

static int copy_round(void *arg, double *dt)
{
    copy_t *c = arg;
    double t0 = ps_clock_now();
    memcpy(c->dst, c->src, c->bytes);
    *dt = ps_clock_now() - t0;
    /* Keep the copy from being elided: its bytes are looked at. */
    return ((volatile unsigned char *)c->dst)[c->bytes / 2] == 0x33 ? 0 : PS_EPROTO;
}

static int bench_shm(const cfg_t *cfg, big_res_t *res)
{
    ps_layout_t l;
    size_t bytes = cfg->big_elems * sizeof(float);
    int64_t dims[1] = {(int64_t)cfg->big_elems};
    copy_t c = {malloc(bytes), malloc(bytes), bytes};
    ours_t o;
    memset(&o, 0, sizeof o);
    ps_layout_init(&l);
    int rv = c.src && c.dst ? ps_layout_add(&l, "tensor", 1, dims) : PS_ENOMEM;
    if (rv == 0) {
        memset(c.src, 0x33, c.bytes);
        memset(c.dst, 0, c.bytes); /* every page touched before timing */
    }
    rv = rv ? rv
            : ours_start(&o, &l, "ipc:///tmp", cfg->chunk_elems, cfg->streams, cfg->io_threads, 1);
    rv = rv ? rv
            : run_interleaved(cfg, ours_round, &o, copy_round, &c, 1000, &res->ours, &res->ref,
                              &res->iters);
    rv = ours_stop(&o, cfg->chunk_elems, rv);
    res->kind = "shm";
    res->bytes = bytes;
    res->apply_ms = o.step ? 1e3 * o.apply_s / (double)o.step : 0;
    free(c.src);
    free(c.dst);
    return rv;
}

static double copy_gbps(size_t bytes, const timing_t *t)
{
    return (double)bytes / t->med * 1e-9;
}

static int shm_main(const cfg_t *cfg)
{
    big_res_t r;
    char name[64], ref[96];
    size_t bytes = cfg->big_elems * sizeof(float);
    int rv = bench_shm(cfg, &r);
    if (rv != 0) {
        fprintf(stderr, "bench_pushpull: %s: %s\n", ps_strerror(rv), ps_error_msg());
        return 1;
    }
    print_row("shm", "ours (push+pull)", 1e3, bytes, &r.ours);
    printf("%-5s %-22s %10.3f %10.3f %10.3f\n", "mem", "memcpy, one core", 1e3 * r.ref.med,
           1e3 * r.ref.best, copy_gbps(bytes, &r.ref));
    printf("shm   ratio ours GB/s / memcpy GB/s %.3f (median); %d rounds; server update %.3f "
           "ms/round\n",
           gbps(bytes, r.ours.med) / copy_gbps(bytes, &r.ref), r.iters, r.apply_ms);
    if (!cfg->results) {
        return 0;
    }
    FILE *f = fopen(cfg->results, "a");
    if (!f) {
        fprintf(stderr, "bench_pushpull: cannot open %s\n", cfg->results);
        return 1;
    }
    snprintf(name, sizeof name, "pushpull_%s_shm", cfg->size);
    snprintf(ref, sizeof ref, "memcpy of %s, one core (same run)", cfg->size_text);
    json_line(f, name, gbps(bytes, r.ours.med), "GB/s", ref, copy_gbps(bytes, &r.ref));
    return fclose(f) == 0 ? 0 : 1;
}

/* ------------------------------------------------------------- output */

static void print_row(const char *kind, const char *what, double unit, size_t bytes,
                      const timing_t *t)
{
    printf("%-5s %-22s %10.3f %10.3f %10.3f %10.3f\n", kind, what, unit * t->med, unit * t->best,
           gbps(bytes, t->med), gbps(bytes, t->best));
}

static void print_big(const big_res_t *r)
{
    size_t bytes = r->bytes;
    print_row(r->kind, "ours (push+pull)", 1e3, bytes, &r->ours);
    print_row(r->kind, "raw libzmq ping-pong", 1e3, bytes, &r->ref);
    printf("%-5s ratio ours/raw %.3f (median), %.3f (best); %d rounds; server update "
           "%.3f ms/round\n",
           r->kind, r->ref.med / r->ours.med, r->ref.best / r->ours.best, r->iters, r->apply_ms);
}

static void json_line(FILE *f, const char *name, double v, const char *unit, const char *ref,
                      double rv)
{
    fprintf(f,
            "{\"name\":\"%s\",\"value\":%.4f,\"unit\":\"%s\",\"reference\":\"%s\","
            "\"reference_value\":%.4f,\"ratio\":%.4f}\n",
            name, v, unit, ref, rv, v / rv);
}

static int write_json(const char *path, const big_res_t *big, const small_res_t *s,
                      const pair_res_t *st, const cfg_t *cfg)
{
    FILE *f = fopen(path, "a");
    char name[64], ref[96];
    size_t bytes = big[0].bytes;
    if (!f) {
        fprintf(stderr, "bench_pushpull: cannot open %s\n", path);
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "pushpull_%s_%s", cfg->size, big[i].kind);
        snprintf(ref, sizeof ref, "raw libzmq ping-pong (%s)", big[i].kind);
        json_line(f, name, gbps(bytes, big[i].ours.med), "GB/s", ref, gbps(bytes, big[i].ref.med));
    }
    const big_res_t *fast = big[0].ours.med <= big[1].ours.med ? &big[0] : &big[1];
    snprintf(ref, sizeof ref, "raw libzmq ping-pong (%s)", fast->kind);
    snprintf(name, sizeof name, "pushpull_%s", cfg->size);
    json_line(f, name, gbps(bytes, fast->ours.med), "GB/s", ref, gbps(bytes, fast->ref.med));
    snprintf(ref, sizeof ref, "ours, one [%d,%d] tensor (tcp)", s->ntensors, SMALL_TENSOR);
    json_line(f, "pushpull_small_tensors", gbps(s->bytes, s->r.a.med), "GB/s", ref,
              gbps(s->bytes, s->r.b.med));
    snprintf(name, sizeof name, "pushpull_streams");
    snprintf(ref, sizeof ref, "ours, 1 stream and 1 I/O thread (ipc; here %d and %d)", cfg->streams,
             cfg->io_threads);
    json_line(f, name, gbps(bytes, st->a.med), "GB/s", ref, gbps(bytes, st->b.med));
    return fclose(f) == 0 ? 0 : 1;
}

/* ------------------------------------------------------------- main */

/* A number in [lo, hi]; a whole one unless the range starts below 1. */
static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end != '\0' || !(x >= lo && x <= hi) ||
        (lo >= 1 && x != (double)(long)x)) {
        fprintf(stderr, "bench_pushpull: %s wants a %s in [%.9g, %.9g]\n", flag,
                lo >= 1 ? "whole number" : "number", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* "16MiB" (sep "") or "16 MiB" (sep " "); bytes not whole KiB in B. */
static void size_label(size_t bytes, const char *sep, char *out, size_t cap)
{
    if (bytes % (1 << 20) == 0) {
        snprintf(out, cap, "%zu%sMiB", bytes >> 20, sep);
    } else if (bytes % 1024 == 0) {
        snprintf(out, cap, "%zu%sKiB", bytes >> 10, sep);
    } else {
        snprintf(out, cap, "%zu%sB", bytes, sep);
    }
}

static int parse_args(int argc, char **argv, cfg_t *c)
{
    double chunk = (double)c->chunk_elems, streams = c->streams, io = c->io_threads;
    double iters = c->iters, seconds = c->seconds, elems = (double)c->big_elems;
    const struct {
        const char *flag;
        double lo, hi, *value;
    } flags[] = {
        {"--chunk-elems", 1024, (double)BIG_ELEMS, &chunk},
        {"--streams", 1, 16, &streams},
        {"--io-threads", 1, 16, &io},
        {"--iters", 1, 100000, &iters},
        {"--seconds", 0.01, 60, &seconds},
        {"--elems", 1024, (double)MAX_ELEMS, &elems},
    };
    const int nflags = (int)(sizeof flags / sizeof flags[0]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int f = 0;
        while (f < nflags && strcmp(a, flags[f].flag) != 0) {
            f++;
        }
        if (strcmp(a, "--shm") == 0) {
            c->shm_only = 1;
        } else if (f < nflags) {
            if (parse_num(a, v, flags[f].lo, flags[f].hi, flags[f].value) != 0) {
                return -1;
            }
            i++;
        } else if (a[0] == '-' || c->results) {
            fprintf(stderr, "usage: bench_pushpull [--chunk-elems N] [--streams N] "
                            "[--io-threads N] [--iters N] [--seconds S] [--elems N] [--shm] "
                            "[RESULTS.jsonl]\n");
            return -1;
        } else {
            c->results = a;
        }
    }
    c->chunk_elems = (size_t)chunk;
    c->streams = (int)streams;
    c->io_threads = (int)io;
    c->iters = (int)iters;
    c->seconds = seconds;
    c->big_elems = (size_t)elems;
    size_label(c->big_elems * sizeof(float), "", c->size, sizeof c->size);
    size_label(c->big_elems * sizeof(float), " ", c->size_text, sizeof c->size_text);
    return 0;
}

int main(int argc, char **argv)
{
    cfg_t cfg = {.chunk_elems = 65536,
                 .streams = PS_DEFAULT_STREAMS,
                 .io_threads = PS_DEFAULT_IO_THREADS,
                 .iters = 0,
                 .seconds = 1.5,
                 .results = NULL,
                 .big_elems = BIG_ELEMS};
    big_res_t big[2];
    small_res_t small;
    pair_res_t streams;
    int rv = 0;
    if (parse_args(argc, argv, &cfg) != 0) {
        return 2;
    }
    ps_log_set_name("bench_pushpull", 0);
    if (cfg.shm_only) {
        printf("push+pull round trip of a %s tensor over shared memory, chunks of %zu "
               "elements, against one core's memcpy\n",
               cfg.size_text, cfg.chunk_elems);
        return shm_main(&cfg);
    }
    printf("push+pull round trip of a %s tensor, chunks of %zu elements (%zu KiB), "
           "%d streams, %d I/O threads\n",
           cfg.size_text, cfg.chunk_elems, cfg.chunk_elems * sizeof(float) / 1024, cfg.streams,
           cfg.io_threads);
    printf("%-5s %-22s %10s %10s %10s %10s\n", "", "", "median ms", "best ms", "GB/s med",
           "GB/s best");
    const char *kinds[2] = {"tcp", "ipc"};
    for (int i = 0; i < 2 && rv == 0; i++) {
        if ((rv = bench_big(&cfg, kinds[i], &big[i])) == 0) {
            print_big(&big[i]);
        }
    }
    if (rv == 0 && (rv = bench_small(&cfg, &small)) == 0) {
        printf("\n%d tensors of %d floats vs one [%d,%d] tensor, %d rounds\n", small.ntensors,
               SMALL_TENSOR, small.ntensors, SMALL_TENSOR, small.r.iters);
        printf("%-5s %-22s %10s %10s %10s %10s\n", "", "", "median us", "best us", "GB/s med",
               "GB/s best");
        print_row("tcp", "many 1 KiB tensors", 1e6, small.bytes, &small.r.a);
        print_row("tcp", "one tensor", 1e6, small.bytes, &small.r.b);
        printf("ratio time(one)/time(many) %.3f (median)\n", small.r.b.med / small.r.a.med);
    }
    if (rv == 0 && (rv = bench_streams(&cfg, &streams)) == 0) {
        size_t bytes = cfg.big_elems * sizeof(float);
        printf("\n%s over ipc: %d streams and %d I/O threads vs one of each, %d rounds\n",
               cfg.size_text, cfg.streams, cfg.io_threads, streams.iters);
        print_row("ipc", "configured", 1e3, bytes, &streams.a);
        print_row("ipc", "1 stream, 1 thread", 1e3, bytes, &streams.b);
        printf("ratio %.3f (median)\n", streams.b.med / streams.a.med);
    }
    if (rv != 0) {
        fprintf(stderr, "bench_pushpull: %s: %s\n", ps_strerror(rv), ps_error_msg());
        return 1;
    }
    return cfg.results ? write_json(cfg.results, big, &small, &streams, &cfg) : 0;
}
