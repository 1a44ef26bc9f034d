/*
 * Unit tests for server/srv_loop: every message is checked before it
 * touches memory, through the public loop (srv_loop_setup and
 * srv_loop_train) over a real ROUTER on 127.0.0.1, without MPI.
 *
 * The two workers (ranks 0 and 1) are plain ps_transport clients in this
 * process.  A test queues crafted messages and then every worker's
 * SHUTDOWN; the loop then runs in this thread until both have shut down.
 * Each worker's messages arrive in the order it sent them, so when
 * srv_loop_train returns every message has been judged.  A bad message must
 * be dropped and counted under its reason, and the weights must still be
 * the INIT values, bit for bit; the control test shows that a well-formed
 * pair of pushes through the same path does move them, by the amount
 * derived by hand.
 *
 * Layout: one tensor "w" of 2500 floats, chunks of 1024, two servers; the
 * loop under test is server 0, which owns chunk 0 [0, 1024) and chunk 2
 * [2048, 2500); chunk 1 is server 1's.  Plain SGD, lr 0.5.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_count.h"
#include "ps_err.h"
#include "ps_layout.h"
#include "ps_transport.h"
#include "ps_wire.h"
#include "srv_loop.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOTAL 2500
#define CHUNK 1024
#define NWORKERS 2
#define WAIT_MS 5000

typedef struct {
    ps_mode_t mode;
    int nonfinite_skip;
    int secure;           /* CurveZMQ: every worker its own key pair, as in a job */
    int streams;          /* each client opens this many (0: 1); the loop is told loop_streams */
    int loop_streams;     /* the streams every worker said it opens (0: 1) */
    int timeout_ms;       /* the server's --timeout (0: WAIT_MS) */
    const char *ckpt_dir; /* checkpoint after every step here */
    const srv_ckpt_state_t *resume; /* --resume state (NULL: none) */
} loop_opts_t;

typedef struct {
    srv_loop_t L;
    ps_tp_t *cli[NWORKERS];
    char ep[512];
    float init[TOTAL];
    ps_tp_keypair_t skey, wkey[NWORKERS]; /* secure: the server's and the workers' */
    char spub[1][PS_TP_KEY_LEN];
    int wstreams[NWORKERS]; /* cfg.worker_streams */
} fix_t;

/* Elements of chunk `id` in this layout. */
static uint32_t chunk_count(uint32_t id)
{
    return id == 2 ? TOTAL - 2 * CHUNK : CHUNK;
}

/* The one place a srv_loop_t is configured. */
static int loop_start(fix_t *f, ps_tp_t *tp, const loop_opts_t *o)
{
    for (int w = 0; w < NWORKERS; w++) {
        f->wstreams[w] = o->loop_streams > 0 ? o->loop_streams : 1;
    }
    srv_loop_cfg_t cfg = {
        .tp = tp,
        .server = 0,
        .nservers = 2,
        .nworkers = NWORKERS,
        .chunk_elems = CHUNK,
        .opt = {.lr = 0.5},
        .mode = o->mode,
        .nonfinite_skip = o->nonfinite_skip,
        .timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : WAIT_MS,
        .worker_streams = f->wstreams,
        .ckpt_dir = o->ckpt_dir,
        .ckpt_every = o->ckpt_dir ? 1 : 0,
        .settings = "test",
        .resume = o->resume,
    };
    return srv_loop_init(&f->L, &cfg);
}

/* Secure: the key pairs, and the server's allow list with worker w's
 * public key at index w, as srv_main gives it from the MPI exchange. */
static int make_keys(fix_t *f, ps_tp_t *tp)
{
    char allow[NWORKERS][PS_TP_KEY_LEN];
    for (int w = 0; w < NWORKERS; w++) {
        if (ps_tp_keypair(&f->wkey[w]) != 0) {
            return -1;
        }
        memcpy(allow[w], f->wkey[w].pub, PS_TP_KEY_LEN);
    }
    memcpy(f->spub[0], f->skey.pub, PS_TP_KEY_LEN);
    return ps_tp_server_allow(tp, (const char(*)[PS_TP_KEY_LEN])allow, NWORKERS);
}

static int setup(void **state)
{
    static const loop_opts_t sync_abort = {.mode = PS_MODE_SYNC};
    const loop_opts_t *o = *state ? *state : &sync_abort;
    fix_t *f = calloc(1, sizeof *f);
    ps_tp_t *tp = NULL;
    if (!f || (o->secure && ps_tp_keypair(&f->skey) != 0) ||
        ps_tp_server_new(&tp, "tcp://127.0.0.1", 1, o->secure ? &f->skey : NULL, f->ep,
                         sizeof f->ep) != 0 ||
        (o->secure && make_keys(f, tp) != 0) || loop_start(f, tp, o) != 0) {
        fprintf(stderr, "loop setup: %s\n", ps_error_msg());
        return -1;
    }
    char *eps[1] = {f->ep};
    for (int w = 0; w < NWORKERS; w++) {
        if (ps_tp_client_new(&f->cli[w], w, 1, eps, o->streams ? o->streams : 1, 1,
                             o->secure ? &f->wkey[w] : NULL,
                             o->secure ? (const char(*)[PS_TP_KEY_LEN])f->spub : NULL) != 0) {
            fprintf(stderr, "client %d: %s\n", w, ps_error_msg());
            return -1;
        }
    }
    /* Multiples of 1/1024 in [-1, 1): w - 1 is exact for every one. */
    for (int i = 0; i < TOTAL; i++) {
        f->init[i] = (float)(i % 2048 - 1024) / 1024.0f;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix_t *f = *state;
    for (int w = 0; w < NWORKERS; w++) {
        ps_tp_destroy(&f->cli[w]);
    }
    /* The socket first: queued zero-copy replies still point into the store. */
    ps_tp_destroy(&f->L.cfg.tp);
    srv_loop_fini(&f->L);
    free(f);
    return 0;
}

static void send_from(fix_t *f, int w, const ps_hdr_t *h, const void *payload, size_t len)
{
    assert_int_equal(ps_tp_send(f->cli[w], 0, 0, h, payload, len, NULL, NULL), 0);
}

/* A well-formed header of `type` from worker w about chunk `id`. */
static ps_hdr_t chunk_hdr(ps_msg_type_t type, int w, uint32_t id, uint64_t step)
{
    ps_hdr_t h = ps_wire_hdr(type, (uint32_t)w);
    h.step = step;
    h.chunk = id;
    if (type != PS_MSG_PULL) {
        h.offset = (uint64_t)id * CHUNK;
        h.count = chunk_count(id);
        h.payload = (uint64_t)h.count * 4;
    }
    if (type == PS_MSG_PUSH) {
        h.samples = 1;
        h.base = step;
    }
    return h;
}

static void send_register(fix_t *f)
{
    ps_layout_t *l = malloc(sizeof *l);
    assert_non_null(l);
    const int64_t d[1] = {TOTAL};
    ps_layout_init(l);
    assert_int_equal(ps_layout_add(l, "w", 1, d), 0);
    uint8_t buf[256];
    long n = ps_layout_encode(l, buf, sizeof buf);
    free(l);
    assert_true(n > 0);
    ps_hdr_t h = ps_wire_hdr(PS_MSG_REGISTER, 0);
    h.payload = (uint64_t)n;
    send_from(f, 0, &h, buf, (size_t)n);
    /* libpsclient always declares the tables, none here: u32 count 0. */
    const uint8_t none[4] = {0, 0, 0, 0};
    h = ps_wire_hdr(PS_MSG_TABLES, 0);
    h.payload = sizeof none;
    send_from(f, 0, &h, none, sizeof none);
}

static void send_init(fix_t *f, uint32_t id)
{
    ps_hdr_t h = chunk_hdr(PS_MSG_INIT, 0, id, 0);
    send_from(f, 0, &h, f->init + (size_t)id * CHUNK, h.payload);
}

/* Worker 0 registers the model and initialises server 0's chunks; the
 * loop's setup phase must then end with an ACK to worker 0. */
static void register_model(fix_t *f)
{
    send_register(f);
    send_init(f, 0);
    send_init(f, 2);
    assert_int_equal(srv_loop_setup(&f->L), 0);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->cli[0], &m, WAIT_MS), 0);
    assert_int_equal(m.hdr.type, PS_MSG_ACK);
    ps_tp_msg_release(&m);
}

/* Every worker shuts down; the loop judges everything queued before. */
static void run_train(fix_t *f, int want_rv)
{
    for (int w = 0; w < NWORKERS; w++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_SHUTDOWN, (uint32_t)w);
        send_from(f, w, &h, NULL, 0);
    }
    assert_int_equal(srv_loop_train(&f->L), want_rv);
}

static void assert_bits(const float *got, const float *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            fail_msg("%s: element %zu is %a, want %a", what, i, (double)got[i], (double)want[i]);
        }
    }
}

/* Both local chunks still hold the INIT values and version 0. */
static void assert_weights_untouched(fix_t *f)
{
    for (uint32_t id = 0; id <= 2; id += 2) {
        srv_chunk_t *c = srv_store_chunk(&f->L.store, id);
        assert_non_null(c);
        assert_bits(c->w, f->init + c->offset, c->count, "weights");
        assert_true(c->version == 0);
    }
}

/* `n` messages dropped, all for reason `why`. */
static void assert_rejected(fix_t *f, srv_reject_t why, uint64_t n)
{
    if (f->L.rejected[why] != n || srv_loop_rejected_total(&f->L) != n) {
        fail_msg("rejected as %s: %llu of %llu in all, want %llu", srv_loop_reject_name(why),
                 (unsigned long long)f->L.rejected[why],
                 (unsigned long long)srv_loop_rejected_total(&f->L), (unsigned long long)n);
    }
}

static float grad[CHUNK];

static void fill_grad(float v)
{
    for (int i = 0; i < CHUNK; i++) {
        grad[i] = v;
    }
}

/* ---- setup phase ------------------------------------------------------ */

static void test_setup_registers(void **state)
{
    fix_t *f = *state;
    register_model(f);
    assert_true(f->L.registered);
    assert_int_equal(f->L.store.nlocal, 2);
    assert_true(f->L.store.layout->total == TOTAL);
    assert_weights_untouched(f);
    run_train(f, 0);
    assert_int_equal(srv_loop_rejected_total(&f->L), 0);
}

/* Before and between REGISTER and INIT, all from worker 0 (one ordered
 * connection): wrong phase, wrong sender field, bad layout, foreign chunk. */
static void test_setup_refuses(void **state)
{
    fix_t *f = *state;
    fill_grad(1.0f);
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    send_from(f, 0, &h, grad, h.payload); /* PUSH before REGISTER: phase */
    h = chunk_hdr(PS_MSG_INIT, 0, 0, 0);
    send_from(f, 0, &h, grad, h.payload); /* INIT before REGISTER: phase */
    h = ps_wire_hdr(PS_MSG_REGISTER, 0);
    uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}; /* 4 billion tensors */
    h.payload = sizeof junk;
    send_from(f, 0, &h, junk, sizeof junk); /* layout */
    h.sender = 1;
    send_from(f, 0, &h, junk, sizeof junk); /* says worker 1 on worker 0's line: sender */
    send_register(f);
    h = chunk_hdr(PS_MSG_INIT, 0, 1, 0);
    send_from(f, 0, &h, grad, h.payload); /* server 1's chunk: chunk */
    h = chunk_hdr(PS_MSG_INIT, 0, 2, 0);
    h.offset = 2048 + 1;
    send_from(f, 0, &h, grad, h.payload); /* wrong offset: chunk */
    send_init(f, 0);
    send_init(f, 2);
    assert_int_equal(srv_loop_setup(&f->L), 0);
    assert_int_equal(f->L.rejected[SRV_REJ_PHASE], 2);
    assert_int_equal(f->L.rejected[SRV_REJ_LAYOUT], 1);
    assert_int_equal(f->L.rejected[SRV_REJ_SENDER], 1);
    assert_int_equal(f->L.rejected[SRV_REJ_CHUNK], 2);
    assert_int_equal(srv_loop_rejected_total(&f->L), 6);
    assert_weights_untouched(f);
    run_train(f, 0);
}

/* A --resume checkpoint of another model (10 parameters): worker 0's
 * REGISTER is answered with ERROR naming why, and the setup ends at once
 * with that reason, instead of waiting out the timeout for a REGISTER
 * that will not change. */
static const srv_ckpt_state_t other_model = {.step = 7, .total = 10, .layout_hash = 0x1234};
static const loop_opts_t resume_other = {.mode = PS_MODE_SYNC, .resume = &other_model};

static void test_setup_refused_model_ends_setup(void **state)
{
    fix_t *f = *state;
    send_register(f);
    send_init(f, 0);
    send_init(f, 2);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(srv_loop_setup(&f->L), PS_EINVAL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s < WAIT_MS / 1000.0 / 2); /* not the timeout */
    assert_non_null(strstr(ps_error_msg(), "server 0 cannot hold the model: the --resume "
                                           "checkpoint (step 7) holds another model (10 "
                                           "parameters"));
    assert_false(f->L.registered);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->cli[0], &m, WAIT_MS), 0);
    assert_int_equal(m.hdr.type, PS_MSG_ERROR);
    char text[600];
    snprintf(text, sizeof text, "%.*s", (int)m.len, (const char *)m.payload);
    ps_tp_msg_release(&m);
    assert_string_equal(text, ps_error_msg());
}

/* ---- training phase: headers ------------------------------------------ */

static void test_malformed_headers(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    ps_hdr_t good = chunk_hdr(PS_MSG_PUSH, 0, 0, 0), h;
    int n = 0;
#define BAD(field_change)                                                                          \
    do {                                                                                           \
        h = good;                                                                                  \
        field_change;                                                                              \
        send_from(f, 0, &h, grad, sizeof grad);                                                    \
        n++;                                                                                       \
    } while (0)
    BAD(h.magic = 0x514d5351u);
    BAD(h.version = PS_WIRE_VERSION + 1);
    BAD(h.version = PS_WIRE_VERSION - 1);
    BAD(h.type = 0);
    BAD(h.type = PS_MSG_TYPE_MAX + 1);
    BAD(h.flags = 0x80);                       /* an unknown flag */
    BAD(h.flags = PS_FLAG_F16 | PS_FLAG_BF16); /* two 16-bit formats */
    BAD(h.flags = PS_FLAG_F16);                /* f16 needs 2 bytes per element */
    BAD(h.reserved = 1);
    BAD(h.count = 0);
    BAD(h.count = CHUNK + 1);         /* count and payload disagree */
    BAD(h.payload = sizeof grad + 4); /* header and frame disagree */
    BAD((h = chunk_hdr(PS_MSG_PULL, 0, 0, 1), h.flags = PS_FLAG_SKIP)); /* PUSH-only flag */
    BAD((h = chunk_hdr(PS_MSG_PULL, 0, 0, 1)));                         /* a PULL with a payload */
    BAD((h = ps_wire_hdr(PS_MSG_SHUTDOWN, 0), h.count = 3, h.payload = sizeof grad));
#undef BAD
    /* A frame shorter than the header says, and no frame at all. */
    h = good;
    send_from(f, 0, &h, grad, sizeof grad - 4);
    send_from(f, 0, &h, NULL, 0);
    n += 2;
    run_train(f, 0);
    assert_rejected(f, SRV_REJ_MALFORMED, (uint64_t)n);
    assert_true(f->L.pushes == 0);
    assert_weights_untouched(f);
}

/* ---- training phase: against the layout and the chunk map ------------- */

static void test_chunk_bounds(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    static const struct {
        uint32_t chunk;
        uint64_t offset;
        uint32_t count;
    } bad[] = {
        {1, 1024, 1024},          /* server 1's chunk */
        {3, 3072, 1024},          /* past the chunk map */
        {UINT32_MAX, 0, 1024},    /* far past it */
        {0, 1, 1024},             /* offset one off */
        {0, 2048, 1024},          /* another chunk's offset */
        {0, 0, 1023},             /* one short */
        {2, 2048, 1024},          /* chunk 2 holds 452: would write past it */
        {2, 2048, 453},           /* one over */
        {2, UINT64_MAX - 1, 452}, /* an offset that overflows */
    };
    int n = (int)(sizeof bad / sizeof bad[0]);
    for (int i = 0; i < n; i++) {
        ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, i % 2, 0, 0);
        h.chunk = bad[i].chunk;
        h.offset = bad[i].offset;
        h.count = bad[i].count;
        h.payload = (uint64_t)bad[i].count * 4;
        send_from(f, i % 2, &h, grad, h.payload);
    }
    ps_hdr_t h = chunk_hdr(PS_MSG_PULL, 1, 7, 1); /* a pull of a chunk nobody has */
    send_from(f, 1, &h, NULL, 0);
    h = chunk_hdr(PS_MSG_PULL, 0, 1, 1); /* and of server 1's */
    send_from(f, 0, &h, NULL, 0);
    run_train(f, 0);
    assert_rejected(f, SRV_REJ_CHUNK, (uint64_t)n + 2);
    assert_true(f->L.pushes == 0 && f->L.pulls == 0);
    assert_weights_untouched(f);
}

/* Sync: a chunk at version 0 takes pushes for step 0 only, one per worker.
 * Worker 1 never pushes chunk 0, so nothing may be applied. */
static void test_step_window(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    static const struct {
        uint64_t step, base;
    } bad[] = {
        {1, 0},          /* the next step, early */
        {2, 1},          /* further ahead */
        {UINT64_MAX, 0}, /* step + 1 would wrap */
        {0, 1},          /* computed on a version the chunk has not reached */
        {0, UINT64_MAX},
    };
    int n = (int)(sizeof bad / sizeof bad[0]);
    for (int i = 0; i < n; i++) {
        ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, bad[i].step);
        h.base = bad[i].base;
        send_from(f, 0, &h, grad, h.payload);
    }
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    send_from(f, 0, &h, grad, h.payload); /* held: worker 1's is missing */
    send_from(f, 0, &h, grad, h.payload); /* a second one for step 0 */
    run_train(f, 0);
    assert_int_equal(f->L.rejected[SRV_REJ_STEP], n);
    assert_int_equal(f->L.rejected[SRV_REJ_DUPLICATE], 1);
    assert_int_equal(srv_loop_rejected_total(&f->L), n + 1);
    assert_true(f->L.pushes == 1);
    srv_chunk_t *c = srv_store_chunk(&f->L.store, 0);
    assert_int_equal(srv_store_arrived(&f->L.store, c, 0), 1);
    assert_weights_untouched(f);
}

/* The sender field must match the connection; worker-only and
 * setup-only messages are refused in training. */
static void test_sender_and_phase(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    h.sender = 1; /* worker 0's connection, worker 1's name */
    send_from(f, 0, &h, grad, h.payload);
    h = chunk_hdr(PS_MSG_PUSH, 1, 2, 0);
    h.sender = 7; /* no such worker */
    send_from(f, 1, &h, grad, h.payload);
    send_register(f); /* a repeat of the same layout is harmless */
    h = ps_wire_hdr(PS_MSG_REGISTER, 1);
    h.payload = 8;
    send_from(f, 1, &h, "\1\0\0\0\1w\1\1", 8); /* REGISTER not from worker 0 */
    send_init(f, 0);                           /* INIT after setup */
    h = chunk_hdr(PS_MSG_PULL_REPLY, 0, 0, 0); /* server-to-worker types */
    send_from(f, 0, &h, grad, h.payload);
    h = ps_wire_hdr(PS_MSG_ACK, 1);
    send_from(f, 1, &h, NULL, 0);
    h = ps_wire_hdr(PS_MSG_STATS_REPLY, 1);
    uint8_t stats[PS_WIRE_STATS_BYTES] = {0};
    h.payload = sizeof stats;
    send_from(f, 1, &h, stats, sizeof stats);
    run_train(f, 0);
    assert_int_equal(f->L.rejected[SRV_REJ_SENDER], 3);
    assert_int_equal(f->L.rejected[SRV_REJ_PHASE], 4);
    assert_int_equal(srv_loop_rejected_total(&f->L), 7);
    assert_weights_untouched(f);
}

/* A peer that is not one of the job's workers (rank 5 of 2).  It is on a
 * connection of its own, so the loop runs in a thread and worker 0 asks
 * for STATS until the server has counted the message, before shutting
 * down: nothing else orders the two connections. */
typedef struct {
    fix_t *f;
    int rv;
    char msg[512]; /* the error detail (thread-local) when rv != 0 */
} train_arg_t;

static void *train_thread(void *arg)
{
    train_arg_t *a = arg;
    a->rv = srv_loop_train(&a->f->L);
    snprintf(a->msg, sizeof a->msg, "%s", a->rv != 0 ? ps_error_msg() : "");
    return NULL;
}

static uint64_t stats_rejected(fix_t *f)
{
    ps_hdr_t h = ps_wire_hdr(PS_MSG_STATS, 0);
    send_from(f, 0, &h, NULL, 0);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->cli[0], &m, WAIT_MS), 0);
    assert_int_equal(m.hdr.type, PS_MSG_STATS_REPLY);
    ps_wire_stats_t st;
    ps_wire_stats_decode(&st, m.payload);
    ps_tp_msg_release(&m);
    return st.rejected;
}

static void test_stranger_rank(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    ps_tp_t *stranger = NULL;
    char *eps[1] = {f->ep};
    assert_int_equal(ps_tp_client_new(&stranger, 5, 1, eps, 1, 1, NULL, NULL), 0);
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 5, 0, 0);
    assert_int_equal(ps_tp_send(stranger, 0, 0, &h, grad, h.payload, NULL, NULL), 0);
    train_arg_t a = {.f = f, .rv = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, train_thread, &a), 0);
    uint64_t seen = 0;
    for (int i = 0; i < 500 && seen == 0; i++) {
        seen = stats_rejected(f);
    }
    for (int w = 0; w < NWORKERS; w++) {
        h = ps_wire_hdr(PS_MSG_SHUTDOWN, (uint32_t)w);
        send_from(f, w, &h, NULL, 0);
    }
    pthread_join(t, NULL);
    ps_tp_destroy(&stranger);
    assert_int_equal(a.rv, 0);
    assert_true(seen == 1);
    assert_rejected(f, SRV_REJ_SENDER, 1);
    assert_weights_untouched(f);
}

/* Worker 1's own key pair on a connection whose routing id says worker 0
 * (stream 9, a stream no worker uses): the server must judge the sender by
 * the key, not by the id the client chose.  Its PUSH, PULL, STATS and
 * SHUTDOWN are refused as "sender" and answered with nothing; the real
 * step that follows is worker 0's and worker 1's, as derived by hand in
 * test_valid_pushes_apply (w - 1); the impostor's gradient of 1000 would
 * have made it w - 250.75, and its SHUTDOWN would have ended worker 0. */
static void test_impostor_with_other_key(void **state)
{
    fix_t *f = *state;
    register_model(f);
    ps_tp_t *imp = NULL;
    char *eps[1] = {f->ep};
    assert_int_equal(ps_tp_client_new(&imp, 0, 1, eps, 10, 1, &f->wkey[1],
                                      (const char(*)[PS_TP_KEY_LEN])f->spub),
                     0);
    float g1000[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        g1000[i] = 1000.0f;
    }
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    assert_int_equal(ps_tp_send(imp, 0, 9, &h, g1000, h.payload, NULL, NULL), 0);
    h = chunk_hdr(PS_MSG_PULL, 0, 0, 0);
    assert_int_equal(ps_tp_send(imp, 0, 9, &h, NULL, 0, NULL, NULL), 0);
    h = ps_wire_hdr(PS_MSG_STATS, 0);
    assert_int_equal(ps_tp_send(imp, 0, 9, &h, NULL, 0, NULL, NULL), 0);
    h = ps_wire_hdr(PS_MSG_SHUTDOWN, 0);
    assert_int_equal(ps_tp_send(imp, 0, 9, &h, NULL, 0, NULL, NULL), 0);
    train_arg_t a = {.f = f, .rv = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, train_thread, &a), 0);
    uint64_t seen = 0;
    for (int i = 0; i < 500 && seen < 4; i++) {
        seen = stats_rejected(f);
    }
    float g3[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        g3[i] = 3.0f;
    }
    fill_grad(1.0f);
    h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    send_from(f, 0, &h, grad, h.payload);
    h = chunk_hdr(PS_MSG_PUSH, 1, 0, 0);
    send_from(f, 1, &h, g3, h.payload);
    for (int w = 0; w < NWORKERS; w++) {
        h = ps_wire_hdr(PS_MSG_SHUTDOWN, (uint32_t)w);
        send_from(f, w, &h, NULL, 0);
    }
    pthread_join(t, NULL);
    ps_tp_msg_t m;
    int got = ps_tp_recv(imp, &m, 200);
    if (got == 0) {
        ps_tp_msg_release(&m);
    }
    ps_tp_destroy(&imp);
    assert_int_equal(a.rv, 0);
    assert_true(seen == 4);
    assert_rejected(f, SRV_REJ_SENDER, 4);
    assert_int_equal(got, PS_EAGAIN); /* no PULL_REPLY, no STATS_REPLY */
    assert_true(f->L.pushes == 2);
    float want[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        want[i] = f->init[i] - 1.0f;
    }
    srv_chunk_t *c0 = srv_store_chunk(&f->L.store, 0);
    assert_bits(c0->w, want, CHUNK, "chunk 0 after the real workers' step");
    assert_true(c0->version == 1);
}

/* Worker 1, with its own key, on a second stream when it said at start-up
 * that it opens one (cfg.worker_streams; the fixture's clients open two):
 * refused as "sender".  (Else the streams a worker does not use are free
 * for anyone holding its key, and pulls answered there never reach it.) */
static void test_stream_beyond_streams(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 1, 0, 0);
    assert_int_equal(ps_tp_send(f->cli[1], 0, 1, &h, grad, h.payload, NULL, NULL), 0);
    h = ps_wire_hdr(PS_MSG_STATS, 1);
    assert_int_equal(ps_tp_send(f->cli[1], 0, 1, &h, NULL, 0, NULL, NULL), 0);
    train_arg_t a = {.f = f, .rv = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, train_thread, &a), 0);
    uint64_t seen = 0;
    for (int i = 0; i < 500 && seen < 2; i++) {
        seen = stats_rejected(f);
    }
    for (int w = 0; w < NWORKERS; w++) {
        h = ps_wire_hdr(PS_MSG_SHUTDOWN, (uint32_t)w);
        send_from(f, w, &h, NULL, 0);
    }
    pthread_join(t, NULL);
    ps_tp_msg_t m;
    int got = ps_tp_recv(f->cli[1], &m, 200);
    if (got == 0) {
        ps_tp_msg_release(&m);
    }
    assert_int_equal(a.rv, 0);
    assert_true(seen == 2);
    assert_rejected(f, SRV_REJ_SENDER, 2);
    assert_int_equal(got, PS_EAGAIN);
    assert_true(f->L.pushes == 0);
    assert_weights_untouched(f);
}

/* ---- the control: good messages do get through ------------------------ */

/* Sync, two workers, one sample each: g = 1*0.5 + 3*0.5 = 2 (coefficients
 * n_w / N = 0.5, every product exact), w1 = w0 - 0.5*2 = w0 - 1, exact for
 * the INIT values (multiples of 1/1024 in [-1, 1)).  Chunk 2 gets nothing. */
static void test_valid_pushes_apply(void **state)
{
    fix_t *f = *state;
    register_model(f);
    float g3[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        g3[i] = 3.0f;
    }
    fill_grad(1.0f);
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    send_from(f, 0, &h, grad, h.payload);
    h = chunk_hdr(PS_MSG_PULL, 0, 0, 1); /* waits for version 1 */
    send_from(f, 0, &h, NULL, 0);
    h = chunk_hdr(PS_MSG_PUSH, 1, 0, 0);
    send_from(f, 1, &h, g3, h.payload);
    run_train(f, 0);
    assert_int_equal(srv_loop_rejected_total(&f->L), 0);
    assert_true(f->L.pushes == 2 && f->L.pulls == 1);
    float want[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        want[i] = f->init[i] - 1.0f;
    }
    srv_chunk_t *c0 = srv_store_chunk(&f->L.store, 0), *c2 = srv_store_chunk(&f->L.store, 2);
    assert_bits(c0->w, want, CHUNK, "chunk 0 after one step");
    assert_true(c0->version == 1);
    assert_bits(c2->w, f->init + 2048, c2->count, "chunk 2");
    /* The pull was answered once the step was in, with the new weights. */
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->cli[0], &m, WAIT_MS), 0);
    assert_int_equal(m.hdr.type, PS_MSG_PULL_REPLY);
    assert_true(m.hdr.step == 1 && m.hdr.chunk == 0 && m.len == sizeof want);
    assert_bits((const float *)(const void *)m.payload, want, CHUNK, "pull reply");
    ps_tp_msg_release(&m);
}

/* ---- checkpoints ------------------------------------------------------ */

/* A checkpoint that cannot be written (here a folder under /dev/null,
 * which fails for root too) ends training with the error, naming the step
 * and the folder, as soon as the step that needed it is in: training must
 * not go on without the checkpoints it was asked for. */
static void test_checkpoint_failure_ends_training(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    for (int w = 0; w < NWORKERS; w++) {
        for (uint32_t id = 0; id <= 2; id += 2) {
            ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, w, id, 0);
            send_from(f, w, &h, grad, h.payload);
        }
    }
    run_train(f, PS_EIO);
    const char *msg = ps_error_msg();
    if (!strstr(msg, "checkpoint of step 1") || !strstr(msg, "/dev/null/ckpt")) {
        fail_msg("message does not name the step and the folder: %s", msg);
    }
    assert_true(srv_store_chunk(&f->L.store, 0)->version == 1);
    assert_true(f->L.ndone < NWORKERS); /* it did not wait for the SHUTDOWNs */
}

/* ---- non-finite gradients ---------------------------------------------- */

static void push_nan_step(fix_t *f)
{
    register_model(f);
    fill_grad(1.0f);
    float bad[CHUNK];
    memcpy(bad, grad, sizeof bad);
    bad[700] = NAN;
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    send_from(f, 0, &h, bad, h.payload);
    h = chunk_hdr(PS_MSG_PUSH, 1, 0, 0);
    send_from(f, 1, &h, grad, h.payload);
}

/* --on-nonfinite abort: the loop ends naming the worker and the tensor. */
static void test_nonfinite_abort(void **state)
{
    fix_t *f = *state;
    push_nan_step(f);
    run_train(f, PS_ERANGE);
    const char *msg = ps_error_msg();
    if (!strstr(msg, "worker 0") || !strstr(msg, " w ")) {
        fail_msg("message does not name worker 0 and tensor w: %s", msg);
    }
    assert_weights_untouched(f);
}

/* --on-nonfinite skip: the whole step is dropped for everyone, the
 * version moves on so the workers stay in step. */
static void test_nonfinite_skip(void **state)
{
    fix_t *f = *state;
    push_nan_step(f);
    run_train(f, 0);
    assert_int_equal(srv_loop_rejected_total(&f->L), 0);
    srv_chunk_t *c = srv_store_chunk(&f->L.store, 0);
    assert_true(c->version == 1 && c->skipped == 1);
    assert_bits(c->w, f->init, CHUNK, "chunk 0 after a skipped step");
}

/* ---- accepted workers with wrong counts, replays ----------------------- */

/* A PUSH or INIT from an accepted worker whose count is one off the
 * chunk's, with a payload that matches its own header (so the decoder
 * passes it): refused as `chunk` before anything reads the payload (run
 * under SAN=address too: no read past it), the weights still the INIT
 * values.  Worker 0's setup messages, then both workers' pushes. */
static void test_wrong_count_from_worker(void **state)
{
    fix_t *f = *state;
    static float big[CHUNK + 1];
    for (int i = 0; i <= CHUNK; i++) {
        big[i] = 1.0f;
    }
    uint64_t n = 0;
    send_register(f);
    for (uint32_t id = 0; id <= 2; id += 2) {
        for (int d = -1; d <= 1; d += 2) {
            ps_hdr_t h = chunk_hdr(PS_MSG_INIT, 0, id, 0);
            h.count = (uint32_t)((int)h.count + d);
            h.payload = (uint64_t)h.count * 4;
            send_from(f, 0, &h, big, h.payload);
            n++;
        }
    }
    send_init(f, 0);
    send_init(f, 2);
    assert_int_equal(srv_loop_setup(&f->L), 0);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->cli[0], &m, WAIT_MS), 0);
    assert_int_equal(m.hdr.type, PS_MSG_ACK);
    ps_tp_msg_release(&m);
    for (int w = 0; w < NWORKERS; w++) {
        for (uint32_t id = 0; id <= 2; id += 2) {
            for (int d = -1; d <= 1; d += 2) {
                ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, w, id, 0);
                h.count = (uint32_t)((int)h.count + d);
                h.payload = (uint64_t)h.count * 4;
                send_from(f, w, &h, big, h.payload);
                n++;
            }
        }
    }
    run_train(f, 0);
    assert_rejected(f, SRV_REJ_CHUNK, n);
    assert_true(f->L.pushes == 0);
    assert_weights_untouched(f);
}

/* Async: a replayed PUSH (same worker, chunk and step) is a duplicate, not
 * another update (docs/protocol.md).  Worker 0 sends its step-0 push three
 * times, then step 1, then step 0 again; worker 1 sends step 0.  Three
 * updates of g = 1 at lr 0.5: w0 - 1.5 (exact for the INIT values). */
static void test_async_replay_refused(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    for (int i = 0; i < 3; i++) {
        send_from(f, 0, &h, grad, h.payload);
    }
    h = chunk_hdr(PS_MSG_PUSH, 0, 0, 1);
    send_from(f, 0, &h, grad, h.payload);
    h = chunk_hdr(PS_MSG_PUSH, 0, 0, 0);
    send_from(f, 0, &h, grad, h.payload); /* an older step, after step 1 */
    h = chunk_hdr(PS_MSG_PUSH, 1, 0, 0);
    send_from(f, 1, &h, grad, h.payload);
    run_train(f, 0);
    assert_rejected(f, SRV_REJ_DUPLICATE, 3);
    assert_true(f->L.pushes == 3);
    srv_chunk_t *c = srv_store_chunk(&f->L.store, 0);
    assert_true(c->version == 3);
    float want[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        want[i] = f->init[i] - 1.5f;
    }
    assert_bits(c->w, want, CHUNK, "chunk 0 after three distinct pushes");
}

/* ---- held pulls --------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* 0 when the next message to `cli` (within WAIT_MS) is of `type`; *m then
 * holds it.  No cmocka assertion: the tests using it have the loop
 * running in a thread, and must stop it before they fail. */
static int recv_type(ps_tp_t *cli, ps_msg_type_t type, ps_tp_msg_t *m)
{
    if (ps_tp_recv(cli, m, WAIT_MS) != 0) {
        return -1;
    }
    if (m->hdr.type != type) {
        ps_tp_msg_release(m);
        return -1;
    }
    return 0;
}

/* Every worker shuts down and the loop's thread is joined.  A loop still
 * running long after that is hung (asleep in a wait nothing will end): it
 * cannot be unwound from here, so the program ends, saying so. */
static void stop_train(fix_t *f, pthread_t t, const char *test)
{
    for (int w = 0; w < NWORKERS; w++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_SHUTDOWN, (uint32_t)w);
        send_from(f, w, &h, NULL, 0);
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 3 * WAIT_MS / 1000;
    if (pthread_timedjoin_np(t, NULL, &until) != 0) {
        printf("not ok - %s: the server loop still runs %d s after every worker shut "
               "down: it hangs\n",
               test, 3 * WAIT_MS / 1000);
        fflush(stdout);
        _exit(1);
    }
}

/* Both workers push g = 1 for chunk 0 at `step` (w drops by 0.5). */
static void push_step(fix_t *f, uint64_t step)
{
    for (int w = 0; w < NWORKERS; w++) {
        ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, w, 0, step);
        send_from(f, w, &h, grad, h.payload);
    }
}

/* The weights a pull reply carries: chunk 0 after `steps` steps of g = 1. */
static int reply_is(const ps_tp_msg_t *m, uint64_t steps, const float *init)
{
    if (m->hdr.step != steps || m->hdr.chunk != 0 || m->len != CHUNK * sizeof(float)) {
        return 0;
    }
    for (int i = 0; i < CHUNK; i++) {
        float want = init[i] - 0.5f * (float)steps, got;
        memcpy(&got, m->payload + (size_t)i * 4, 4);
        if (memcmp(&got, &want, 4) != 0) {
            return 0;
        }
    }
    return 1;
}

/* issue 13, 1: a pull reply that cannot be delivered.  A connection of
 * worker 0 (its stream 9 of the ten it said it opens; --insecure, so
 * anyone could be it) asks for chunk 0 at version 1, then disconnects, as
 * a worker whose tcp connection drops while its pull is held.  When version 1 comes its reply
 * cannot be routed (ROUTER_MANDATORY: EHOSTUNREACH); the reference the reply took on the chunk must
 * still be dropped, else the update to version 2 waits for it for ever.  The real workers then run
 * two steps, pulling each result. */
static void test_pull_then_disconnect(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    train_arg_t a = {.f = f, .rv = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, train_thread, &a), 0);
    ps_tp_t *ghost = NULL;
    char *eps[1] = {f->ep};
    ps_tp_msg_t m;
    /* Its stream 0 has worker 0's routing id and is ignored by the ROUTER. */
    int held = ps_tp_client_new(&ghost, 0, 1, eps, 10, 1, NULL, NULL) == 0;
    ps_hdr_t h = chunk_hdr(PS_MSG_PULL, 0, 0, 1);
    held = held && ps_tp_send(ghost, 0, 9, &h, NULL, 0, NULL, NULL) == 0;
    h = ps_wire_hdr(PS_MSG_STATS, 0);
    held = held && ps_tp_send(ghost, 0, 9, &h, NULL, 0, NULL, NULL) == 0;
    /* The STATS reply came after the PULL was taken: it is held. */
    held = held && recv_type(ghost, PS_MSG_STATS_REPLY, &m) == 0;
    if (held) {
        ps_tp_msg_release(&m);
    }
    ps_tp_destroy(&ghost);
    sleep_ms(300); /* time for the server's socket to see the peer gone */
    /* Sync: step 1 is taken only once step 0 is in, so worker 0 waits for
     * version 1 before either worker pushes step 1. */
    int got = 1, right = 1;
    for (uint64_t step = 0; step < 2; step++) {
        push_step(f, step);
        h = chunk_hdr(PS_MSG_PULL, 0, 0, step + 1);
        send_from(f, 0, &h, NULL, 0);
        int ok = recv_type(f->cli[0], PS_MSG_PULL_REPLY, &m) == 0;
        got &= ok;
        right &= ok && reply_is(&m, step + 1, f->init);
        if (ok) {
            ps_tp_msg_release(&m);
        }
    }
    stop_train(f, t, "test_pull_then_disconnect");
    assert_true(held);
    if (a.rv != 0) {
        fail_msg("the loop failed: %s", a.msg);
    }
    assert_true(got);
    assert_true(right);
    srv_chunk_t *c = srv_store_chunk(&f->L.store, 0);
    assert_true(c->version == 2);
    assert_true(f->L.replies_lost == 1); /* the lost reply did take that path */
    /* Every reference is given back (zmq may still be finishing the last
     * reply's write for a moment). */
    for (int i = 0; i < 200 && ps_count_get(&c->refs) != 0; i++) {
        sleep_ms(10);
    }
    assert_int_equal(ps_count_get(&c->refs), 0);
}

/* Held pulls are kept per (worker, stream): worker 0 holds a pull of
 * chunk 0 for version 1 on stream 0 and one for version 2 on stream 1;
 * neither may replace the other.  Each is answered on its own stream, with
 * the weights of its version, once that version is there. */
static void test_held_pulls_per_stream(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    train_arg_t a = {.f = f, .rv = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, train_thread, &a), 0);
    ps_tp_msg_t m;
    int held = 1, stream[2] = {-1, -1}, right[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        ps_hdr_t h = chunk_hdr(PS_MSG_PULL, 0, 0, (uint64_t)s + 1);
        held &= ps_tp_send(f->cli[0], 0, s, &h, NULL, 0, NULL, NULL) == 0;
        h = ps_wire_hdr(PS_MSG_STATS, 0);
        held &= ps_tp_send(f->cli[0], 0, s, &h, NULL, 0, NULL, NULL) == 0;
        if (recv_type(f->cli[0], PS_MSG_STATS_REPLY, &m) == 0) {
            held &= m.stream == s;
            ps_tp_msg_release(&m);
        } else {
            held = 0;
        }
    }
    for (int s = 0; s < 2; s++) {
        push_step(f, (uint64_t)s);
        if (recv_type(f->cli[0], PS_MSG_PULL_REPLY, &m) == 0) {
            stream[s] = m.stream;
            right[s] = reply_is(&m, (uint64_t)s + 1, f->init);
            ps_tp_msg_release(&m);
        }
    }
    stop_train(f, t, "test_held_pulls_per_stream");
    assert_true(held);
    for (int s = 0; s < 2; s++) {
        if (stream[s] != s || !right[s]) {
            fail_msg("after step %d: reply on stream %d (want %d), weights %s", s, stream[s], s,
                     right[s] ? "right" : "wrong or missing");
        }
    }
    assert_int_equal(a.rv, 0);
    assert_true(f->L.pulls == 2);
}

/* No wait is unbounded: a reply that never gives its reference back (here
 * one taken by hand) makes the chunk's update fail after --timeout (half a
 * second here) with PS_ETIMEDOUT naming the chunk, instead of hanging the
 * server; the weights stay. */
static void test_update_wait_bounded(void **state)
{
    fix_t *f = *state;
    register_model(f);
    fill_grad(1.0f);
    srv_chunk_t *c = srv_store_chunk(&f->L.store, 2);
    srv_store_ref(c);
    for (int w = 0; w < NWORKERS; w++) {
        ps_hdr_t h = chunk_hdr(PS_MSG_PUSH, w, 2, 0);
        send_from(f, w, &h, grad, h.payload);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    train_arg_t a = {.f = f, .rv = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, train_thread, &a), 0);
    stop_train(f, t, "test_update_wait_bounded"); /* ends the program if it hangs */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    srv_store_unref(c);
    assert_int_equal(a.rv, PS_ETIMEDOUT);
    if (!strstr(a.msg, "chunk 2")) {
        fail_msg("the message does not name chunk 2: %s", a.msg);
    }
    double took = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (took < 0.5 || took > 4.0) {
        fail_msg("the loop gave up after %.2f s, want about 0.5", took);
    }
    assert_weights_untouched(f);
}

int main(void)
{
    static const loop_opts_t skip = {.mode = PS_MODE_SYNC, .nonfinite_skip = 1};
    static const loop_opts_t secure = {.mode = PS_MODE_SYNC, .secure = 1};
    static const loop_opts_t secure2 = {.mode = PS_MODE_SYNC, .secure = 1, .streams = 2};
    static const loop_opts_t bad_ckpt = {.mode = PS_MODE_SYNC, .ckpt_dir = "/dev/null/ckpt"};
    static const loop_opts_t async = {.mode = PS_MODE_ASYNC};
    /* Worker connections 0..9 are the workers' own (test_pull_then_disconnect). */
    static const loop_opts_t ten_streams = {.mode = PS_MODE_SYNC, .loop_streams = 10};
    static const loop_opts_t two_streams = {.mode = PS_MODE_SYNC, .streams = 2, .loop_streams = 2};
    static const loop_opts_t short_timeout = {.mode = PS_MODE_SYNC, .timeout_ms = 500};
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_setup_registers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setup_refuses, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_setup_refused_model_ends_setup, setup,
                                                 teardown, (void *)&resume_other),
        cmocka_unit_test_setup_teardown(test_malformed_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sender_and_phase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stranger_rank, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_impostor_with_other_key, setup, teardown,
                                                 (void *)&secure),
        cmocka_unit_test_prestate_setup_teardown(test_stream_beyond_streams, setup, teardown,
                                                 (void *)&secure2),
        cmocka_unit_test_setup_teardown(test_valid_pushes_apply, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_checkpoint_failure_ends_training, setup,
                                                 teardown, (void *)&bad_ckpt),
        cmocka_unit_test_setup_teardown(test_nonfinite_abort, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_nonfinite_skip, setup, teardown,
                                                 (void *)&skip),
        cmocka_unit_test_setup_teardown(test_wrong_count_from_worker, setup, teardown),
        cmocka_unit_test_prestate_setup_teardown(test_async_replay_refused, setup, teardown,
                                                 (void *)&async),
        cmocka_unit_test_prestate_setup_teardown(test_pull_then_disconnect, setup, teardown,
                                                 (void *)&ten_streams),
        cmocka_unit_test_prestate_setup_teardown(test_held_pulls_per_stream, setup, teardown,
                                                 (void *)&two_streams),
        cmocka_unit_test_prestate_setup_teardown(test_update_wait_bounded, setup, teardown,
                                                 (void *)&short_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
