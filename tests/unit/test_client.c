/*
 * Unit tests for worker/wkr_client and worker/wkr_arrays without MPI: the
 * client talks to two fake servers, each a thread of this process on
 * ps_transport's server side over tcp://127.0.0.1.
 *
 * A fake server keeps the weights of its chunks, applies every PUSH at
 * once as w -= g (so a pulled value shows which gradient arrived), answers
 * a PULL when the chunk's version reaches the one asked for, ACKs the
 * model once TABLES (before REGISTER, as docs/protocol.md says; the real
 * server's setup waits for it), REGISTER and all its INITs are in, answers
 * STATS with fixed
 * counters, and stops at SHUTDOWN.  It records what it received, so the
 * tests compare the bytes on the wire with what the arrays held.
 *
 * The layout has tensors that share chunks and span them (1024-element
 * chunks, chunk i on server i % 2):
 *
 *     a [5]      flat    0 ..    5    chunk 0
 *     b [1500]   flat    5 .. 1505    chunks 0, 1
 *     c [3]      flat 1505 .. 1508    chunk 1
 *     d [2000]   flat 1508 .. 3508    chunks 1, 2, 3
 *
 * and each tensor's arrays are separate allocations (so chunks 0 and 1
 * are gathered into the staging buffer) unless a test lays them end to
 * end.  Every wait is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ps_chunk.h"
#include "ps_err.h"
#include "ps_half.h"
#include "ps_keys.h"
#include "ps.h"
#include "ps_transport.h"
#include "ps_wire.h"
#include "wkr_arrays.h"
#include "wkr_client.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NT 4
#define TOTAL 3508
#define CHUNK 1024
#define NCHUNKS 4
#define NSRV 2
#define WAIT_MS 5000

static const char *const NAMES[NT] = {"a", "b", "c", "d"};
static const int64_t SIZES[NT] = {5, 1500, 3, 2000};

enum { MODE_NORMAL, MODE_ERROR, MODE_SILENT, MODE_BOGUS };

typedef struct {
    int id;
    int mode;
    ps_tp_t *tp;
    char ep[256];
    pthread_t thread;
    int rv;
    /* What arrived, by flat index; written by the server thread, read by
     * the test after a reply or the join. */
    float w[TOTAL];
    float got[TOTAL];
    uint8_t got_flags[NCHUNKS];
    uint32_t got_samples[NCHUNKS];
    uint64_t version[NCHUNKS];
    uint64_t want[NCHUNKS]; /* a deferred PULL: version + 1, 0 for none */
    int want_stream[NCHUNKS];
    int inits, registered, pushes;
    int tables_ok;      /* a well-formed TABLES came before REGISTER */
    ps_tables_t tables; /* what it declared */
} fake_t;

/* The test's thread reads what a fake server wrote before answering, once
 * the answer is in: zmq orders the two, out of ThreadSanitizer's sight
 * (libzmq is not instrumented), so under TSan both sides say so. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define ANSWERED(f) __tsan_release(f)
#define SEEN(f) __tsan_acquire(f)
#else
#define ANSWERED(f) ((void)(f))
#define SEEN(f) ((void)(f))
#endif

static int fake_send(fake_t *f, int peer, int stream, const ps_hdr_t *h, const void *payload,
                     size_t len)
{
    ANSWERED(f);
    return ps_tp_send(f->tp, peer, stream, h, payload, len, NULL, NULL);
}

/* A fake server's records, as of the last answer received from it. */
static fake_t *seen(fake_t *f)
{
    SEEN(f);
    return f;
}

typedef struct {
    ps_layout_t layout;
    ps_chunkmap_t map;
    fake_t srv[NSRV];
    wkr_client_t *c;
    float *w[NT], *g[NT];
    float *flat_w, *flat_g; /* for the contiguous case */
    ps_tables_t tables;     /* the client's declarations */
} fix_t;

/* ---- the fake server ------------------------------------------------- */

static int reply_chunk(fake_t *f, int peer, int stream, uint32_t k)
{
    ps_hdr_t h = ps_wire_hdr(PS_MSG_PULL_REPLY, (uint32_t)f->id);
    h.step = f->version[k];
    h.chunk = k;
    h.offset = (uint64_t)k * CHUNK;
    h.count = (uint32_t)(k + 1 < NCHUNKS ? CHUNK : TOTAL - k * CHUNK);
    h.payload = h.count * sizeof(float);
    return fake_send(f, peer, stream, &h, f->w + h.offset, h.payload);
}

/* MODE_BOGUS: first a reply whose offset does not match its chunk. */
static void reply_bogus(fake_t *f, int peer, int stream, uint32_t k)
{
    float junk[8] = {99, 99, 99, 99, 99, 99, 99, 99};
    ps_hdr_t h = ps_wire_hdr(PS_MSG_PULL_REPLY, (uint32_t)f->id);
    h.step = f->version[k];
    h.chunk = k;
    h.offset = (uint64_t)k * CHUNK + 8;
    h.count = 8;
    h.payload = sizeof junk;
    fake_send(f, peer, stream, &h, junk, sizeof junk);
}

static void on_pull(fake_t *f, const ps_tp_msg_t *m)
{
    uint32_t k = m->hdr.chunk;
    if (f->mode == MODE_SILENT) {
        return;
    }
    if (f->mode == MODE_ERROR) {
        const char *text = "chunk refused by the test";
        ps_hdr_t h = ps_wire_hdr(PS_MSG_ERROR, (uint32_t)f->id);
        h.payload = strlen(text);
        fake_send(f, m->peer, m->stream, &h, text, h.payload);
        return;
    }
    if (f->version[k] >= m->hdr.step) {
        if (f->mode == MODE_BOGUS) {
            reply_bogus(f, m->peer, m->stream, k);
        }
        reply_chunk(f, m->peer, m->stream, k);
    } else {
        f->want[k] = m->hdr.step + 1;
        f->want_stream[k] = m->stream;
    }
}

static void on_push(fake_t *f, const ps_tp_msg_t *m)
{
    uint32_t k = m->hdr.chunk;
    float *g = f->got + m->hdr.offset;
    if (m->hdr.flags & PS_FLAG_BF16) {
        ps_bf16_to_f32(m->payload, g, m->hdr.count);
    } else if (m->hdr.flags & PS_FLAG_F16) {
        ps_f16_to_f32(m->payload, g, m->hdr.count);
    } else {
        memcpy(g, m->payload, m->len);
    }
    f->got_flags[k] = m->hdr.flags;
    f->got_samples[k] = m->hdr.samples;
    for (uint32_t i = 0; i < m->hdr.count; i++) {
        f->w[m->hdr.offset + i] -= g[i];
    }
    f->version[k] = m->hdr.step + 1;
    f->pushes++;
    if (f->want[k] && f->version[k] + 1 >= f->want[k]) {
        f->want[k] = 0;
        reply_chunk(f, m->peer, f->want_stream[k], k);
    }
}

static void on_stats(fake_t *f, const ps_tp_msg_t *m)
{
    uint8_t buf[PS_WIRE_STATS_BYTES];
    /* Server 0: max 3, sum 10, 4 applied, 1 rejected, version 7, 500 us;
     * server 1: max 5, sum 6, 2 applied, 0 rejected, version 4, 250 us. */
    ps_wire_stats_t st = {f->id ? 5 : 3, f->id ? 6 : 10, f->id ? 2 : 4,
                          f->id ? 0 : 1, f->id ? 4 : 7,  f->id ? 250 : 500};
    ps_wire_stats_encode(&st, buf);
    ps_hdr_t h = ps_wire_hdr(PS_MSG_STATS_REPLY, (uint32_t)f->id);
    h.payload = sizeof buf;
    fake_send(f, m->peer, m->stream, &h, buf, sizeof buf);
}

static int handle(fake_t *f, const ps_tp_msg_t *m)
{
    switch (m->hdr.type) {
    case PS_MSG_TABLES:
        f->tables_ok = !f->registered && ps_tables_decode(&f->tables, m->payload, m->len) == 0;
        break;
    case PS_MSG_REGISTER: f->registered = 1; break;
    case PS_MSG_INIT:
        memcpy(f->w + m->hdr.offset, m->payload, m->len);
        f->inits++;
        break;
    case PS_MSG_PUSH: on_push(f, m); break;
    case PS_MSG_PULL: on_pull(f, m); break;
    case PS_MSG_STATS: on_stats(f, m); break;
    case PS_MSG_SHUTDOWN: return 1;
    default: break;
    }
    if (m->hdr.type == PS_MSG_INIT && f->tables_ok && f->registered && f->inits == NCHUNKS / NSRV) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_ACK, (uint32_t)f->id);
        fake_send(f, m->peer, 0, &h, NULL, 0);
    }
    return 0;
}

static void *serve(void *arg)
{
    fake_t *f = arg;
    for (;;) {
        ps_tp_msg_t m;
        int rv = ps_tp_recv(f->tp, &m, WAIT_MS * 2);
        if (rv != 0) {
            f->rv = rv == PS_EAGAIN ? PS_ETIMEDOUT : rv;
            return NULL;
        }
        int stop = handle(f, &m);
        ps_tp_msg_release(&m);
        if (stop) {
            return NULL;
        }
    }
}

/* ---- fixture ---------------------------------------------------------- */

static int start_servers(fix_t *x, int mode1)
{
    for (int s = 0; s < NSRV; s++) {
        fake_t *f = &x->srv[s];
        f->id = s;
        f->mode = s == 1 ? mode1 : MODE_NORMAL;
        if (ps_tp_server_new(&f->tp, "tcp://127.0.0.1", 1, NULL, f->ep, sizeof f->ep) != 0) {
            return -1;
        }
        if (pthread_create(&f->thread, NULL, serve, f) != 0) {
            return -1;
        }
    }
    return 0;
}

static int new_client(fix_t *x, int compress, int timeout_ms)
{
    char *eps[NSRV] = {x->srv[0].ep, x->srv[1].ep};
    wkr_client_cfg_t cc = {.rank = 0,
                           .nservers = NSRV,
                           .endpoints = eps,
                           .layout = &x->layout,
                           .chunk_elems = CHUNK,
                           .streams = 2,
                           .io_threads = 1,
                           .timeout_ms = timeout_ms,
                           .mode = PS_MODE_SYNC,
                           .compress = compress,
                           .tables = &x->tables};
    return wkr_client_new(&x->c, &cc);
}

/* Separate arrays per tensor; weights 0.25 * (flat index + 1). */
static int make_arrays(fix_t *x, int flat)
{
    if (flat && (!(x->flat_w = malloc(TOTAL * sizeof(float))) ||
                 !(x->flat_g = malloc(TOTAL * sizeof(float))))) {
        return -1;
    }
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset, n = x->layout.t[t].numel;
        x->w[t] = flat ? x->flat_w + off : malloc(n * sizeof(float));
        x->g[t] = flat ? x->flat_g + off : malloc(n * sizeof(float));
        if (!x->w[t] || !x->g[t]) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            x->w[t][i] = 0.25f * (float)(off + i + 1);
        }
        wkr_client_set_arrays(x->c, t, x->w[t], x->g[t]);
    }
    return 0;
}

static int setup_with(void **state, int flat, int compress, int mode1, int timeout_ms)
{
    fix_t *x = calloc(1, sizeof *x);
    if (!x) {
        return -1;
    }
    ps_layout_init(&x->layout);
    for (int t = 0; t < NT; t++) {
        if (ps_layout_add(&x->layout, NAMES[t], 1, &SIZES[t]) != 0) {
            return -1;
        }
    }
    *state = x;
    if (ps_tables_add(&x->tables, "emb", 8, PS_TABLE_INIT_UNIFORM, 0.125f, 7) != 0 ||
        ps_chunkmap_init(&x->map, TOTAL, CHUNK, NSRV) != 0 || start_servers(x, mode1) != 0 ||
        new_client(x, compress, timeout_ms) != 0 || make_arrays(x, flat) != 0) {
        fprintf(stderr, "setup: %s\n", ps_error_msg());
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 0, PS_COMPRESS_NONE, MODE_NORMAL, WAIT_MS);
}

static int setup_flat(void **state)
{
    return setup_with(state, 1, PS_COMPRESS_NONE, MODE_NORMAL, WAIT_MS);
}

static int setup_bf16(void **state)
{
    return setup_with(state, 0, PS_COMPRESS_BF16, MODE_NORMAL, WAIT_MS);
}

static int setup_fp16(void **state)
{
    return setup_with(state, 0, PS_COMPRESS_FP16, MODE_NORMAL, WAIT_MS);
}

static int setup_error(void **state)
{
    return setup_with(state, 0, PS_COMPRESS_NONE, MODE_ERROR, WAIT_MS);
}

static int setup_silent(void **state)
{
    return setup_with(state, 0, PS_COMPRESS_NONE, MODE_SILENT, 1000);
}

static int setup_bogus(void **state)
{
    return setup_with(state, 0, PS_COMPRESS_NONE, MODE_BOGUS, WAIT_MS);
}

static int teardown(void **state)
{
    fix_t *x = *state;
    if (x->c) {
        wkr_client_shutdown(x->c); /* the fakes stop (a silent one too) */
    }
    for (int s = 0; s < NSRV; s++) {
        if (x->srv[s].tp) {
            pthread_join(x->srv[s].thread, NULL);
        }
    }
    wkr_client_destroy(&x->c);
    wkr_client_destroy(&x->c); /* safe twice */
    for (int s = 0; s < NSRV; s++) {
        ps_tp_destroy(&x->srv[s].tp);
    }
    for (int t = 0; t < NT && !x->flat_w; t++) {
        free(x->w[t]);
        free(x->g[t]);
    }
    free(x->flat_w);
    free(x->flat_g);
    ps_chunkmap_fini(&x->map);
    free(x);
    return 0;
}

/* ---- helpers ---------------------------------------------------------- */

/* The server holding flat element i. */
static fake_t *owner(fix_t *x, size_t i)
{
    return seen(&x->srv[(i / CHUNK) % NSRV]);
}

static void fill_grads(fix_t *x, float base)
{
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset;
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            x->g[t][i] = base + 0.5f * (float)((off + i) % 8); /* exact in bf16 too */
        }
    }
}

static void start(fix_t *x)
{
    assert_int_equal(wkr_client_register(x->c), 0);
    wkr_client_begin_step(x->c, 0);
    for (int t = 0; t < NT; t++) {
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            x->w[t][i] = NAN; /* the pull must overwrite every element */
        }
    }
    assert_int_equal(wkr_client_pull(x->c, 0), 0);
}

/* ---- wkr_arrays --------------------------------------------------------- */

static void test_arrays_map(void **state)
{
    fix_t *x = *state;
    wkr_arrays_t a;
    assert_int_equal(wkr_arrays_init(&a, &x->layout, &x->map), 0);
    /* Chunk 0 = [0, 1024): a, b.  Chunk 1 = [1024, 2048): b, c, d.
     * Chunks 2, 3: d only. */
    int first[NCHUNKS] = {0, 1, 3, 3}, last[NCHUNKS] = {1, 3, 3, 3};
    for (int k = 0; k < NCHUNKS; k++) {
        assert_int_equal(a.tfirst[k], first[k]);
        assert_int_equal(a.tlast[k], last[k]);
    }
    /* d = [1508, 3508): chunks 1508/1024 = 1 to 3507/1024 = 3. */
    assert_int_equal(wkr_arrays_chunk_first(&a, 3), 1);
    assert_int_equal(wkr_arrays_chunk_last(&a, 3), 3);
    assert_int_equal(wkr_arrays_chunk_last(&a, 0), 0);
    /* No arrays yet: refused, naming the tensor. */
    assert_int_equal(wkr_arrays_prepare(&a), PS_ESTATE);
    assert_non_null(strstr(ps_error_msg(), "'a'"));
    for (int t = 0; t < NT; t++) {
        wkr_arrays_set(&a, t, x->w[t], x->g[t]);
    }
    assert_int_equal(wkr_arrays_prepare(&a), 0);
    /* Separate arrays: the chunks with two or more tensors are gathered,
     * the others read in place. */
    assert_null(a.gsrc[0]);
    assert_null(a.gsrc[1]);
    assert_ptr_equal(a.gsrc[2], x->g[3] + (2048 - 1508));
    assert_ptr_equal(a.gsrc[3], x->g[3] + (3072 - 1508));
    assert_non_null(a.stage);
    fill_grads(x, 1.0f);
    const float *c1 = wkr_arrays_grads(&a, 1);
    /* Chunk 1 starts with b[1019], then c[0..3), then d[0..]. */
    assert_true(c1[0] == x->g[1][1019]);
    assert_true(c1[480] == x->g[1][1499]);
    assert_true(c1[481] == x->g[2][0] && c1[483] == x->g[2][2]);
    assert_true(c1[484] == x->g[3][0] && c1[1023] == x->g[3][539]);
    /* Scatter writes only the part of tensor c. */
    float payload[CHUNK];
    for (int i = 0; i < CHUNK; i++) {
        payload[i] = -(float)i;
    }
    float b_before = x->w[1][1019];
    assert_int_equal(wkr_arrays_scatter(&a, 1, 2, payload), 3);
    assert_true(x->w[2][0] == -481.0f && x->w[2][2] == -483.0f);
    assert_true(x->w[1][1019] == b_before);
    assert_int_equal(wkr_arrays_scatter(&a, 0, 3, payload), 0); /* d is not in chunk 0 */
    wkr_arrays_fini(&a);
}

static void test_arrays_contiguous(void **state)
{
    fix_t *x = *state; /* setup_flat: the arrays lie end to end */
    wkr_arrays_t a;
    assert_int_equal(wkr_arrays_init(&a, &x->layout, &x->map), 0);
    for (int t = 0; t < NT; t++) {
        wkr_arrays_set(&a, t, x->w[t], x->g[t]);
    }
    assert_int_equal(wkr_arrays_prepare(&a), 0);
    for (int k = 0; k < NCHUNKS; k++) {
        assert_ptr_equal(a.gsrc[k], x->flat_g + (size_t)k * CHUNK); /* zero-copy */
    }
    assert_null(a.stage);
    wkr_arrays_fini(&a);
}

/* ---- wkr_client --------------------------------------------------------- */

/* Register sends every tensor's initial values; the pull writes the
 * servers' copy back into every (poisoned) array. */
static void test_register_and_pull(void **state)
{
    fix_t *x = *state;
    start(x);
    for (size_t i = 0; i < TOTAL; i++) {
        assert_true(owner(x, i)->w[i] == 0.25f * (float)(i + 1));
    }
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset;
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            assert_true(x->w[t][i] == 0.25f * (float)(off + i + 1));
        }
    }
}

/* Registering declares the client's tables to every server, before the
 * layout: the servers ACK only then (so start() returning is the order). */
static void test_register_sends_tables(void **state)
{
    fix_t *x = *state;
    start(x);
    for (int s = 0; s < NSRV; s++) {
        const ps_tables_t *ts = &seen(&x->srv[s])->tables;
        assert_int_equal(ts->n, 1);
        assert_string_equal(ts->t[0].name, "emb");
        assert_int_equal(ts->t[0].dim, 8);
        assert_int_equal(ts->t[0].init, PS_TABLE_INIT_UNIFORM);
        assert_true(ts->t[0].bound == 0.125f);
        assert_true(ts->t[0].seed == 7);
    }
}

/* A chunk leaves once every tensor in it is final; the bytes on the wire
 * are the tensors' arrays in flat order. */
static void test_push_per_tensor(void **state)
{
    fix_t *x = *state;
    int waiting = -1;
    start(x);
    wkr_client_begin_step(x->c, 0);
    fill_grads(x, 1.0f);
    assert_int_equal(wkr_client_push_tensor(x->c, 3, 12), 0); /* d: chunks 2, 3 leave */
    assert_int_equal(wkr_client_tensor_pushed(x->c, 3, &waiting), 0);
    assert_int_equal(waiting, 1); /* chunk 1 still waits for b (and c) */
    assert_int_equal(wkr_client_push_tensor(x->c, 2, 12), 0);
    assert_int_equal(wkr_client_push_tensor(x->c, 2, 12), 0); /* twice: once */
    assert_int_equal(wkr_client_tensor_pushed(x->c, 2, &waiting), 0);
    assert_int_equal(waiting, 1);
    assert_int_equal(wkr_client_push_tensor(x->c, 1, 12), 0); /* chunk 1 leaves */
    assert_int_equal(wkr_client_tensor_pushed(x->c, 3, NULL), 1);
    assert_int_equal(wkr_client_tensor_pushed(x->c, 1, &waiting), 0);
    assert_int_equal(waiting, 0); /* chunk 0 waits for a */
    assert_int_equal(wkr_client_push_tensor(x->c, 0, 12), 0);
    assert_int_equal(wkr_client_tensor_pushed(x->c, 1, NULL), 1);
    assert_int_equal(wkr_client_finish_step(x->c), 0); /* every reply in: every push too */
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset;
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            assert_true(owner(x, off + i)->got[off + i] == x->g[t][i]);
        }
    }
    for (int k = 0; k < NCHUNKS; k++) {
        assert_int_equal(seen(&x->srv[k % NSRV])->got_samples[k], 12);
        assert_int_equal(seen(&x->srv[k % NSRV])->got_flags[k], 0);
    }
}

/* Replies are written only into the tensors that are wanted: a tensor's
 * weights never change while the caller has not asked for them. */
static void test_want_writes_only_wanted(void **state)
{
    fix_t *x = *state;
    start(x);
    wkr_client_begin_step(x->c, 0);
    fill_grads(x, 1.0f);
    for (int t = NT; t-- > 0;) {
        assert_int_equal(wkr_client_push_tensor(x->c, t, 1), 0);
    }
    assert_int_equal(wkr_client_want(x->c, 2, 1), 0); /* c only */
    assert_int_equal(wkr_client_wait_tensor(x->c, 2), 0);
    assert_int_equal(wkr_client_tensor_pulled(x->c, 2), 1);
    assert_int_equal(wkr_client_tensors_pulled(x->c), 1);
    for (size_t i = 0; i < 3; i++) {
        size_t f = 1505 + i; /* w was 0.25 (f + 1), g is 1 + 0.5 (f % 8) */
        assert_true(x->w[2][i] == 0.25f * (float)(f + 1) - (1.0f + 0.5f * (float)(f % 8)));
    }
    /* b and d share chunk 1 with c: its reply is here, but they keep
     * their old weights until wanted. */
    assert_int_equal(wkr_client_poll(x->c), 0);
    assert_true(x->w[1][1499] == 0.25f * 1505.0f);
    assert_true(x->w[3][0] == 0.25f * 1509.0f);
    assert_int_equal(wkr_client_tensor_pulled(x->c, 3), 0);
    /* Wanted now: the held reply is written at once, the rest on arrival. */
    assert_int_equal(wkr_client_want(x->c, 3, 1), 0);
    assert_int_equal(wkr_client_wait_tensor(x->c, 3), 0);
    assert_true(x->w[3][0] == 0.25f * 1509.0f - (1.0f + 0.5f * (1508 % 8)));
    assert_true(x->w[3][1999] == 0.25f * 3508.0f - (1.0f + 0.5f * (3507 % 8)));
    /* The end of the step drops what nobody wanted: a and b stay. */
    assert_int_equal(wkr_client_finish_step(x->c), 0);
    assert_true(x->w[0][0] == 0.25f && x->w[1][0] == 0.25f * 6.0f);
    assert_int_equal(wkr_client_push_tensor(x->c, 0, 1), PS_ESTATE); /* step is over */
    /* The next step: everything pulled at version 2 (two updates). */
    wkr_client_begin_step(x->c, 1);
    for (int t = NT; t-- > 0;) {
        assert_int_equal(wkr_client_push_tensor(x->c, t, 1), 0);
    }
    assert_int_equal(wkr_client_pull(x->c, 2), 0);
    assert_int_equal(wkr_client_finish_step(x->c), 0);
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset;
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            float g = 1.0f + 0.5f * (float)((off + i) % 8);
            assert_true(x->w[t][i] == 0.25f * (float)(off + i + 1) - g - g);
        }
    }
}

static void test_contiguous_arrays(void **state)
{
    fix_t *x = *state; /* flat: every chunk leaves from the arrays themselves */
    start(x);
    wkr_client_begin_step(x->c, 0);
    fill_grads(x, -2.0f);
    for (int t = NT; t-- > 0;) {
        assert_int_equal(wkr_client_push_tensor(x->c, t, 3), 0);
    }
    assert_int_equal(wkr_client_pull(x->c, 1), 0);
    assert_int_equal(wkr_client_finish_step(x->c), 0);
    for (size_t i = 0; i < TOTAL; i++) {
        assert_true(owner(x, i)->got[i] == x->flat_g[i]);
        assert_true(x->flat_w[i] == 0.25f * (float)(i + 1) - x->flat_g[i]);
    }
}

static void test_compress_bf16(void **state)
{
    fix_t *x = *state;
    start(x);
    wkr_client_begin_step(x->c, 0);
    fill_grads(x, 3.0f); /* 3 + k/2, k < 8: exact in bfloat16's 8 significant bits */
    for (int t = NT; t-- > 0;) {
        assert_int_equal(wkr_client_push_tensor(x->c, t, 1), 0);
    }
    assert_int_equal(wkr_client_finish_step(x->c), 0);
    for (int k = 0; k < NCHUNKS; k++) {
        assert_int_equal(seen(&x->srv[k % NSRV])->got_flags[k], PS_FLAG_BF16);
    }
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset;
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            assert_true(owner(x, off + i)->got[off + i] == x->g[t][i]);
        }
    }
}

/* Push every tensor of step 0 and wait for the step to end. */
static void push_step0(fix_t *x)
{
    wkr_client_begin_step(x->c, 0);
    for (int t = NT; t-- > 0;) {
        assert_int_equal(wkr_client_push_tensor(x->c, t, 1), 0);
    }
    assert_int_equal(wkr_client_finish_step(x->c), 0);
}

/* Every element arrived as exactly the float32 the arrays held. */
static void assert_arrived_exact(fix_t *x)
{
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset;
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            assert_true(owner(x, off + i)->got[off + i] == x->g[t][i]);
        }
    }
}

/* --compress fp16: a chunk holding |g| >= 65520 (Inf in binary16) goes as
 * float32, bit for bit; one holding 65504 (binary16's largest) still goes
 * as fp16, and arrives as 65504. */
static void test_compress_fp16_too_large(void **state)
{
    fix_t *x = *state;
    start(x);
    fill_grads(x, 1.0f);          /* 1 + k/2: exact in fp16 */
    x->g[1][10] = -70000.5f;      /* flat 15: chunk 0 */
    x->g[3][2048 - 1508] = 65520; /* flat 2048: chunk 2 */
    x->g[3][3500 - 1508] = 65504; /* flat 3500: chunk 3 */
    push_step0(x);
    const uint8_t want[NCHUNKS] = {0, PS_FLAG_F16, 0, PS_FLAG_F16};
    for (int k = 0; k < NCHUNKS; k++) {
        assert_int_equal(seen(&x->srv[k % NSRV])->got_flags[k], want[k]);
    }
    assert_arrived_exact(x);
    wkr_client_stats_t st;
    wkr_client_stats(x->c, &st);
    assert_int_equal(st.wide_pushes, 2);
    /* Chunks 0 and 2 in 4 bytes an element, 1 and 3 (436 elements) in 2. */
    assert_int_equal(st.bytes_pushed, 2 * CHUNK * 4 + (CHUNK + TOTAL - 3 * CHUNK) * 2);
}

/* --compress bf16 near FLT_MAX: float32 0x7f7f8000 and above round to Inf
 * in bfloat16, so that chunk goes as float32; 0x7f7f7fff rounds down to
 * bf16 0x7f7f and its chunk stays 16-bit. */
static void test_compress_bf16_near_flt_max(void **state)
{
    fix_t *x = *state;
    start(x);
    fill_grads(x, 3.0f);
    const uint32_t below = 0x7f7f7fffu;
    x->g[3][1500] = FLT_MAX;                      /* flat 3008: chunk 2 */
    memcpy(&x->g[3][1800], &below, sizeof below); /* flat 3308: chunk 3 */
    push_step0(x);
    const uint8_t want[NCHUNKS] = {PS_FLAG_BF16, PS_FLAG_BF16, 0, PS_FLAG_BF16};
    for (int k = 0; k < NCHUNKS; k++) {
        assert_int_equal(seen(&x->srv[k % NSRV])->got_flags[k], want[k]);
    }
    uint32_t got;
    memcpy(&got, &seen(&x->srv[1])->got[3308], sizeof got);
    assert_int_equal(got, 0x7f7f0000u);
    assert_true(seen(&x->srv[0])->got[3008] == FLT_MAX);
    x->g[3][1800] = seen(&x->srv[1])->got[3308]; /* the one value bf16 rounded */
    assert_arrived_exact(x);
}

static void test_server_stats(void **state)
{
    fix_t *x = *state;
    ps_wire_stats_t st;
    start(x);
    assert_int_equal(wkr_client_server_stats(x->c, &st), 0);
    /* Maxima of the maxima and versions, sums of the rest. */
    assert_true(st.staleness_max == 5 && st.version == 7);
    assert_true(st.staleness_sum == 16 && st.applied == 6 && st.rejected == 1);
    assert_true(st.apply_us == 750);
}

static void test_server_error(void **state)
{
    fix_t *x = *state;
    assert_int_equal(wkr_client_register(x->c), 0);
    wkr_client_begin_step(x->c, 0);
    assert_int_equal(wkr_client_pull(x->c, 0), PS_EPROTO);
    assert_non_null(strstr(ps_error_msg(), "server 1"));
    assert_non_null(strstr(ps_error_msg(), "chunk refused by the test"));
}

static void test_silent_server_times_out(void **state)
{
    fix_t *x = *state;
    assert_int_equal(wkr_client_register(x->c), 0);
    wkr_client_begin_step(x->c, 0);
    assert_int_equal(wkr_client_pull(x->c, 0), PS_ETIMEDOUT);
    assert_non_null(strstr(ps_error_msg(), "no answer from the servers"));
}

/* A reply that does not match its chunk is dropped, never copied. */
static void test_bogus_reply_dropped(void **state)
{
    fix_t *x = *state;
    start(x); /* server 1's chunks (1, 3) each come with a bogus reply first */
    for (int t = 0; t < NT; t++) {
        size_t off = x->layout.t[t].offset;
        for (size_t i = 0; i < x->layout.t[t].numel; i++) {
            assert_true(x->w[t][i] == 0.25f * (float)(off + i + 1));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_arrays_map, setup, teardown),
        cmocka_unit_test_setup_teardown(test_arrays_contiguous, setup_flat, teardown),
        cmocka_unit_test_setup_teardown(test_register_and_pull, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_sends_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_per_tensor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_want_writes_only_wanted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contiguous_arrays, setup_flat, teardown),
        cmocka_unit_test_setup_teardown(test_compress_bf16, setup_bf16, teardown),
        cmocka_unit_test_setup_teardown(test_compress_fp16_too_large, setup_fp16, teardown),
        cmocka_unit_test_setup_teardown(test_compress_bf16_near_flt_max, setup_bf16, teardown),
        cmocka_unit_test_setup_teardown(test_server_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_error, setup_error, teardown),
        cmocka_unit_test_setup_teardown(test_silent_server_times_out, setup_silent, teardown),
        cmocka_unit_test_setup_teardown(test_bogus_reply_dropped, setup_bogus, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
