/*
 * Unit tests for common/ps_transport over real sockets on 127.0.0.1.
 *
 * A server (ROUTER) and a client (DEALER per server) in one process; the
 * hostile peers are raw zmq DEALERs made here (the only other file that
 * includes zmq.h, on purpose: the transport must not be its own judge of
 * what arrives on the wire).  Every wait is bounded, so a lost message
 * fails a test instead of hanging it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_transport.h"
#include "ps_wire.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define WAIT_MS 3000
#define RANK 3

typedef struct {
    ps_tp_t *srv;
    ps_tp_t *cli;
    char ep[256];
} fix_t;

static int setup(void **state)
{
    fix_t *f = calloc(1, sizeof *f);
    if (!f) {
        return -1;
    }
    if (ps_tp_server_new(&f->srv, "tcp://127.0.0.1", 1, NULL, f->ep, sizeof f->ep) != 0) {
        fprintf(stderr, "server: %s\n", ps_error_msg());
        free(f);
        return -1;
    }
    char *eps[1] = {f->ep};
    if (ps_tp_client_new(&f->cli, RANK, 1, eps, 1, 1, NULL, NULL) != 0) {
        fprintf(stderr, "client: %s\n", ps_error_msg());
        ps_tp_destroy(&f->srv);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix_t *f = *state;
    ps_tp_destroy(&f->cli);
    ps_tp_destroy(&f->srv);
    ps_tp_destroy(&f->srv); /* safe twice */
    free(f);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Free callback of zero-copy sends: runs on a zmq I/O thread. */
static void on_free(void *data, void *hint)
{
    (void)data;
    atomic_fetch_add((atomic_int *)hint, 1);
}

static int wait_flag(atomic_int *flag, int want)
{
    double end = now_ms() + WAIT_MS;
    while (atomic_load(flag) < want && now_ms() < end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(flag);
}

static ps_hdr_t push_hdr(uint32_t sender, uint32_t count)
{
    ps_hdr_t h = ps_wire_hdr(PS_MSG_PUSH, sender);
    h.request = 11;
    h.step = 5;
    h.chunk = 7;
    h.offset = 7 * 1024;
    h.count = count;
    h.samples = 16;
    h.payload = (uint64_t)count * 4;
    return h;
}

static void test_bind_endpoint(void **state)
{
    fix_t *f = *state;
    const char *pre = "tcp://127.0.0.1:";
    assert_true(strncmp(f->ep, pre, strlen(pre)) == 0);
    char *end;
    long port = strtol(f->ep + strlen(pre), &end, 10);
    assert_true(*end == '\0');
    assert_true(port > 0 && port < 65536);
}

static void test_push_zero_copy_and_reply(void **state)
{
    fix_t *f = *state;
    enum { N = 1000 };
    float *data = malloc(N * sizeof(float)), want[N];
    assert_non_null(data);
    for (int i = 0; i < N; i++) {
        want[i] = data[i] = (float)i * 0.5f - 3.0f;
    }
    static atomic_int freed;
    atomic_store(&freed, 0);
    ps_hdr_t h = push_hdr(RANK, N);
    assert_int_equal(ps_tp_send(f->cli, 0, 0, &h, data, N * sizeof(float), on_free, &freed), 0);

    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->srv, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, RANK);
    assert_int_equal(m.hdr.type, PS_MSG_PUSH);
    assert_int_equal(m.hdr.sender, RANK);
    assert_int_equal(m.hdr.request, 11);
    assert_true(m.hdr.step == 5);
    assert_int_equal(m.hdr.chunk, 7);
    assert_true(m.hdr.offset == 7 * 1024);
    assert_int_equal(m.hdr.count, N);
    assert_int_equal(m.hdr.samples, 16);
    assert_int_equal(m.len, N * sizeof(float));
    assert_memory_equal(m.payload, want, sizeof want);
    ps_tp_msg_release(&m);
    assert_null(m.payload);
    ps_tp_msg_release(&m); /* safe twice */
    /* The sender's buffer is zmq's until the callback: once, then ours. */
    assert_int_equal(wait_flag(&freed, 1), 1);
    free(data);

    /* Reply by rank, payload copied: changing it after send is harmless. */
    float reply[4] = {1.0f, -2.0f, 3.5f, 0.25f}, orig[4];
    memcpy(orig, reply, sizeof reply);
    ps_hdr_t r = ps_wire_hdr(PS_MSG_PULL_REPLY, 0);
    r.count = 4;
    r.payload = sizeof reply;
    r.step = 6;
    assert_int_equal(ps_tp_send(f->srv, RANK, 0, &r, reply, sizeof reply, NULL, NULL), 0);
    reply[0] = 99.0f;
    assert_int_equal(ps_tp_recv(f->cli, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, 0); /* server index */
    assert_int_equal(m.hdr.type, PS_MSG_PULL_REPLY);
    assert_true(m.hdr.step == 6);
    assert_int_equal(m.len, sizeof orig);
    assert_memory_equal(m.payload, orig, sizeof orig);
    ps_tp_msg_release(&m);

    /* An empty payload. */
    ps_hdr_t ack = ps_wire_hdr(PS_MSG_ACK, 0);
    assert_int_equal(ps_tp_send(f->srv, RANK, 0, &ack, NULL, 0, NULL, NULL), 0);
    assert_int_equal(ps_tp_recv(f->cli, &m, WAIT_MS), 0);
    assert_int_equal(m.hdr.type, PS_MSG_ACK);
    assert_int_equal(m.len, 0);
    ps_tp_msg_release(&m);

    ps_tp_stats_t st;
    ps_tp_stats(f->cli, &st);
    assert_true(st.tx_msgs == 1 && st.tx_bytes == PS_WIRE_HDR_SIZE + N * 4);
    assert_true(st.rx_msgs == 2 && st.rx_bytes == 2 * PS_WIRE_HDR_SIZE + sizeof orig);
    ps_tp_stats(f->srv, &st);
    assert_true(st.rx_msgs == 1 && st.rx_bytes == PS_WIRE_HDR_SIZE + N * 4);
    assert_true(st.tx_msgs == 2);
    assert_true(st.rx_malformed == 0);
}

/* Small payloads may live inside the ps_tp_msg_t itself: a moved message
 * keeps its bytes even when the source struct is then overwritten. */
static void test_msg_move(void **state)
{
    fix_t *f = *state;
    enum { BIG = 4096 };
    float small[2] = {7.0f, -8.0f};
    float *big = malloc(BIG * sizeof(float));
    assert_non_null(big);
    for (int i = 0; i < BIG; i++) {
        big[i] = (float)i;
    }
    ps_hdr_t hs = push_hdr(RANK, 2), hb = push_hdr(RANK, BIG);
    hb.chunk = 8;
    assert_int_equal(ps_tp_send(f->cli, 0, 0, &hs, small, sizeof small, NULL, NULL), 0);
    assert_int_equal(ps_tp_send(f->cli, 0, 0, &hb, big, BIG * sizeof(float), NULL, NULL), 0);
    ps_tp_msg_t *src = malloc(sizeof *src), dst[2];
    assert_non_null(src);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(ps_tp_recv(f->srv, src, WAIT_MS), 0);
        ps_tp_msg_move(&dst[k], src);
        assert_null(src->payload);
        assert_int_equal(src->len, 0);
        ps_tp_msg_release(src); /* an emptied source releases nothing */
        memset(src, 0xa5, sizeof *src);
    }
    free(src);
    assert_int_equal(dst[0].hdr.chunk, 7);
    assert_int_equal(dst[0].peer, RANK);
    assert_int_equal(dst[0].len, sizeof small);
    assert_memory_equal(dst[0].payload, small, sizeof small);
    assert_int_equal(dst[1].hdr.chunk, 8);
    assert_int_equal(dst[1].len, BIG * sizeof(float));
    assert_memory_equal(dst[1].payload, big, BIG * sizeof(float));
    ps_tp_msg_release(&dst[0]);
    ps_tp_msg_release(&dst[1]);
    free(big);
}

static void test_recv_timeout(void **state)
{
    fix_t *f = *state;
    ps_tp_msg_t m;
    double t0 = now_ms();
    assert_int_equal(ps_tp_recv(f->srv, &m, 100), PS_EAGAIN);
    double dt = now_ms() - t0;
    assert_true(dt >= 90.0 && dt < 2000.0);
    assert_int_equal(ps_tp_recv(f->cli, &m, 0), PS_EAGAIN);
    ps_tp_stats_t st;
    ps_tp_stats(f->srv, &st);
    assert_true(st.rx_msgs == 0 && st.rx_malformed == 0);
}

/* A raw DEALER with the given routing id (NULL: zmq picks one). */
static void *raw_dealer(void *ctx, const char *ep, const void *id, size_t idlen)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    assert_non_null(s);
    int zero = 0;
    assert_int_equal(zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero), 0);
    if (id) {
        assert_int_equal(zmq_setsockopt(s, ZMQ_ROUTING_ID, id, idlen), 0);
    }
    assert_int_equal(zmq_connect(s, ep), 0);
    return s;
}

static void raw_send(void *s, const void *const *frames, const size_t *lens, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = zmq_send(s, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0);
        assert_int_equal(rc, (int)lens[i]);
    }
}

/* The next message on the server is dropped as malformed. */
static void expect_dropped(fix_t *f, int peer, uint64_t malformed, const char *needle)
{
    ps_tp_msg_t m;
    ps_error_clear();
    int rv = ps_tp_recv(f->srv, &m, WAIT_MS);
    if (rv != PS_EPROTO) {
        fail_msg("recv returned %d, want PS_EPROTO (%s)", rv, ps_error_msg());
    }
    assert_int_equal(m.peer, peer);
    if (needle && !strstr(ps_error_msg(), needle)) {
        fail_msg("detail '%s' does not mention '%s'", ps_error_msg(), needle);
    }
    ps_tp_stats_t st;
    ps_tp_stats(f->srv, &st);
    assert_true(st.rx_malformed == malformed);
    assert_true(st.rx_msgs == 0);
}

static void test_garbage_from_raw_dealer(void **state)
{
    fix_t *f = *state;
    void *ctx = zmq_ctx_new();
    assert_non_null(ctx);
    const uint8_t id[6] = {'w', 7, 0, 0, 0, 0};
    void *s = raw_dealer(ctx, f->ep, id, sizeof id);

    uint8_t hdr[PS_WIRE_HDR_SIZE], bad[PS_WIRE_HDR_SIZE];
    float pay[2] = {1.5f, -2.5f};
    ps_hdr_t h = push_hdr(7, 2);
    ps_wire_encode(&h, hdr);
    memcpy(bad, hdr, sizeof bad);
    bad[0] ^= 0xff;

    const void *one[1] = {"hello"};
    const size_t one_len[1] = {5};
    raw_send(s, one, one_len, 1);
    expect_dropped(f, 7, 1, "frames");

    const void *three[3] = {hdr, pay, "x"};
    const size_t three_len[3] = {sizeof hdr, sizeof pay, 1};
    raw_send(s, three, three_len, 3);
    expect_dropped(f, 7, 2, "frames");

    const void *badm[2] = {bad, pay};
    const size_t two_len[2] = {sizeof bad, sizeof pay};
    raw_send(s, badm, two_len, 2);
    expect_dropped(f, 7, 3, "magic");

    /* Header and frame disagree on the payload length. */
    const size_t short_len[2] = {sizeof hdr, 4};
    const void *good[2] = {hdr, pay};
    raw_send(s, good, short_len, 2);
    expect_dropped(f, 7, 4, NULL);

    /* More frames than the transport keeps: all read, none leaked. */
    const void *six[6] = {hdr, pay, "a", "b", "c", "d"};
    const size_t six_len[6] = {sizeof hdr, sizeof pay, 1, 1, 1, 1};
    raw_send(s, six, six_len, 6);
    expect_dropped(f, 7, 5, "frames");

    /* The socket is still in step: a valid message comes through. */
    raw_send(s, good, two_len, 2);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->srv, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, 7);
    assert_int_equal(m.hdr.type, PS_MSG_PUSH);
    assert_int_equal(m.len, sizeof pay);
    assert_memory_equal(m.payload, pay, sizeof pay);
    ps_tp_msg_release(&m);
    ps_tp_stats_t st;
    ps_tp_stats(f->srv, &st);
    assert_true(st.rx_msgs == 1 && st.rx_malformed == 5);

    zmq_close(s);
    zmq_ctx_term(ctx);
}

static void test_bad_routing_ids(void **state)
{
    fix_t *f = *state;
    void *ctx = zmq_ctx_new();
    assert_non_null(ctx);
    const uint8_t ids[][7] = {
        {'a', 'b', 'c'},                      /* too short */
        {'x', 1, 0, 0, 0, 0},                 /* wrong tag */
        {'w', 1, 0, 0},                       /* 'w' + 3 bytes */
        {'w', 1, 0, 0, 0},                    /* 'w' + rank, no stream (version 3) */
        {'w', 1, 0, 0, 0, 0, 0},              /* 'w' + 6 bytes */
        {'w', 0xff, 0xff, 0xff, 0xff, 0},     /* rank over INT_MAX */
        {'w', 1, 0, 0, 0, PS_TP_MAX_STREAMS}, /* stream out of range */
    };
    const size_t lens[] = {3, 6, 4, 5, 7, 6, 6};
    uint8_t hdr[PS_WIRE_HDR_SIZE];
    float pay[2] = {1.0f, 2.0f};
    ps_hdr_t h = push_hdr(1, 2);
    ps_wire_encode(&h, hdr);
    const void *frames[2] = {hdr, pay};
    const size_t flen[2] = {sizeof hdr, sizeof pay};
    uint64_t dropped = 0;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        void *s = raw_dealer(ctx, f->ep, ids[i], lens[i]);
        raw_send(s, frames, flen, 2);
        expect_dropped(f, -1, ++dropped, "routing id");
        zmq_close(s);
    }
    /* A peer of the previous protocol (5-byte id, version 3 header) is
     * told about the version, not about its routing id. */
    uint8_t v3[PS_WIRE_HDR_SIZE];
    memcpy(v3, hdr, sizeof v3);
    v3[4] = 3;
    const void *old[2] = {v3, pay};
    void *o = raw_dealer(ctx, f->ep, ids[3], lens[3]);
    raw_send(o, old, flen, 2);
    expect_dropped(f, -1, ++dropped, "version 3");
    zmq_close(o);
    /* No routing id at all: ROUTER makes one up, which names no rank. */
    void *s = raw_dealer(ctx, f->ep, NULL, 0);
    raw_send(s, frames, flen, 2);
    expect_dropped(f, -1, ++dropped, NULL);
    zmq_close(s);
    zmq_ctx_term(ctx);

    /* The real client still gets through. */
    ps_hdr_t ok = push_hdr(RANK, 2);
    assert_int_equal(ps_tp_send(f->cli, 0, 0, &ok, pay, sizeof pay, NULL, NULL), 0);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->srv, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, RANK);
    ps_tp_msg_release(&m);
}

static void test_send_to_unknown_worker(void **state)
{
    fix_t *f = *state;
    ps_hdr_t ack = ps_wire_hdr(PS_MSG_ACK, 0);
    ps_error_clear();
    assert_int_equal(ps_tp_send(f->srv, 99, 0, &ack, NULL, 0, NULL, NULL), PS_EZMQ);
    assert_string_not_equal(ps_error_msg(), "no detail recorded");
    /* The socket is still usable afterwards. */
    float pay[1] = {4.0f};
    ps_hdr_t h = push_hdr(RANK, 1);
    assert_int_equal(ps_tp_send(f->cli, 0, 0, &h, pay, sizeof pay, NULL, NULL), 0);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->srv, &m, WAIT_MS), 0);
    ps_tp_msg_release(&m);
    assert_int_equal(ps_tp_send(f->srv, RANK, 0, &ack, NULL, 0, NULL, NULL), 0);
    assert_int_equal(ps_tp_recv(f->cli, &m, WAIT_MS), 0);
    assert_int_equal(m.hdr.type, PS_MSG_ACK);
    ps_tp_msg_release(&m);
}

/* A zero-copy send that fails still runs its free callback, exactly once
 * and before ps_tp_send returns: the server's pull replies hold a
 * reference on the chunk until it runs (an update waits for it), the
 * worker's pushes a count of buffers in flight.  The paths: a worker that
 * is not there (the routing id is refused, EHOSTUNREACH), a client's
 * stream that does not exist, and a payload copied because it is empty. */
static void test_free_callback_on_failure(void **state)
{
    fix_t *f = *state;
    static atomic_int freed;
    float pay[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    ps_hdr_t r = ps_wire_hdr(PS_MSG_PULL_REPLY, 0);
    r.count = 4;
    r.payload = sizeof pay;
    atomic_store(&freed, 0);
    assert_int_equal(ps_tp_send(f->srv, 99, 0, &r, pay, sizeof pay, on_free, &freed), PS_EZMQ);
    assert_int_equal(atomic_load(&freed), 1);
    ps_hdr_t h = push_hdr(RANK, 4);
    assert_int_equal(ps_tp_send(f->cli, 0, 5, &h, pay, sizeof pay, on_free, &freed), PS_EINVAL);
    assert_int_equal(atomic_load(&freed), 2);
    ps_hdr_t stats = ps_wire_hdr(PS_MSG_STATS, RANK);
    assert_int_equal(ps_tp_send(f->cli, 0, 0, &stats, NULL, 0, on_free, &freed), 0);
    assert_int_equal(atomic_load(&freed), 3);
    /* And a send that works runs it once too, later, from zmq. */
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->srv, &m, WAIT_MS), 0);
    ps_tp_msg_release(&m);
    assert_int_equal(ps_tp_send(f->srv, RANK, 0, &r, pay, sizeof pay, on_free, &freed), 0);
    assert_int_equal(ps_tp_recv(f->cli, &m, WAIT_MS), 0);
    ps_tp_msg_release(&m);
    assert_int_equal(wait_flag(&freed, 4), 4);
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL);
    assert_int_equal(atomic_load(&freed), 4);
}

/* Replies queued to a peer that stops reading and then goes away: zmq
 * drops them (and runs their free callbacks) only once the server's socket
 * has handled the news, on its own thread; ps_tp_service does that for a
 * thread that waits for the callbacks instead of receiving (the server's
 * update waiting for its pull replies). */
static void test_service_drops_replies_to_gone_peer(void **state)
{
    fix_t *f = *state;
    void *ctx = zmq_ctx_new();
    assert_non_null(ctx);
    const uint8_t id[6] = {'w', 8, 0, 0, 0, 0};
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    assert_non_null(s);
    int zero = 0, one = 1, small = 4096;
    assert_int_equal(zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(s, ZMQ_RCVHWM, &one, sizeof one), 0);
    assert_int_equal(zmq_setsockopt(s, ZMQ_RCVBUF, &small, sizeof small), 0);
    assert_int_equal(zmq_setsockopt(s, ZMQ_ROUTING_ID, id, sizeof id), 0);
    assert_int_equal(zmq_connect(s, f->ep), 0);
    uint8_t hdr[PS_WIRE_HDR_SIZE];
    ps_hdr_t h = ps_wire_hdr(PS_MSG_STATS, 8);
    ps_wire_encode(&h, hdr);
    const void *fr[2] = {hdr, ""};
    const size_t len[2] = {sizeof hdr, 0};
    raw_send(s, fr, len, 2);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->srv, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, 8);
    ps_tp_msg_release(&m);
    enum { N = 64, ELEMS = 65536 };
    static float big[ELEMS];
    static atomic_int freed;
    atomic_store(&freed, 0);
    ps_hdr_t r = ps_wire_hdr(PS_MSG_PULL_REPLY, 0);
    r.count = ELEMS;
    r.payload = sizeof big;
    for (int i = 0; i < N; i++) {
        assert_int_equal(ps_tp_send(f->srv, 8, 0, &r, big, sizeof big, on_free, &freed), 0);
    }
    /* 16 MiB against a peer that takes a few KiB: most stay queued. */
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_true(atomic_load(&freed) < N);
    zmq_close(s);
    zmq_ctx_term(ctx);
    double end = now_ms() + WAIT_MS;
    while (atomic_load(&freed) < N && now_ms() < end) {
        ps_tp_service(f->srv);
        struct timespec tick = {0, 10 * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
    assert_int_equal(atomic_load(&freed), N);
}

/* A client with two servers addresses them by index. */
static void test_two_servers(void **state)
{
    (void)state;
    ps_tp_t *a = NULL, *b = NULL, *cli = NULL;
    char ea[256], eb[256];
    assert_int_equal(ps_tp_server_new(&a, "tcp://127.0.0.1", 1, NULL, ea, sizeof ea), 0);
    assert_int_equal(ps_tp_server_new(&b, "tcp://127.0.0.1", 1, NULL, eb, sizeof eb), 0);
    assert_string_not_equal(ea, eb);
    char *eps[2] = {ea, eb};
    assert_int_equal(ps_tp_client_new(&cli, 5, 2, eps, 1, 1, NULL, NULL), 0);
    float pa[1] = {1.0f}, pb[1] = {2.0f};
    ps_hdr_t h = push_hdr(5, 1);
    assert_int_equal(ps_tp_send(cli, 1, 0, &h, pb, sizeof pb, NULL, NULL), 0);
    assert_int_equal(ps_tp_send(cli, 0, 0, &h, pa, sizeof pa, NULL, NULL), 0);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(b, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, 5);
    assert_memory_equal(m.payload, pb, sizeof pb);
    ps_tp_msg_release(&m);
    assert_int_equal(ps_tp_recv(a, &m, WAIT_MS), 0);
    assert_memory_equal(m.payload, pa, sizeof pa);
    ps_tp_msg_release(&m);
    assert_int_equal(ps_tp_recv(a, &m, 0), PS_EAGAIN);
    /* Replies come back tagged with the server's index. */
    ps_hdr_t ack = ps_wire_hdr(PS_MSG_ACK, 0);
    assert_int_equal(ps_tp_send(b, 5, 0, &ack, NULL, 0, NULL, NULL), 0);
    assert_int_equal(ps_tp_recv(cli, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, 1);
    ps_tp_msg_release(&m);
    assert_int_equal(ps_tp_send(a, 5, 0, &ack, NULL, 0, NULL, NULL), 0);
    assert_int_equal(ps_tp_recv(cli, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, 0);
    ps_tp_msg_release(&m);
    ps_tp_destroy(&cli);
    ps_tp_destroy(&a);
    ps_tp_destroy(&b);
    assert_null(a);
}

/* Several connections to one server: each message arrives tagged with
 * the stream it was sent on, in order within a stream, and the reply
 * comes back on the stream it is addressed to. */
static void test_streams(void **state)
{
    (void)state;
    enum { K = 3, PER = 4 };
    ps_tp_t *srv = NULL, *cli = NULL;
    char ep[256];
    assert_int_equal(ps_tp_server_new(&srv, "tcp://127.0.0.1", 2, NULL, ep, sizeof ep), 0);
    char *eps[1] = {ep};
    assert_int_equal(ps_tp_client_new(&cli, RANK, 1, eps, K, 2, NULL, NULL), 0);
    float pay[1];
    for (int i = 0; i < PER; i++) {
        for (int j = 0; j < K; j++) {
            ps_hdr_t h = push_hdr(RANK, 1);
            h.step = (uint64_t)i;
            pay[0] = (float)(10 * j + i);
            assert_int_equal(ps_tp_send(cli, 0, j, &h, pay, sizeof pay, NULL, NULL), 0);
        }
    }
    int next[K] = {0};
    ps_tp_msg_t m;
    for (int n = 0; n < K * PER; n++) {
        assert_int_equal(ps_tp_recv(srv, &m, WAIT_MS), 0);
        assert_int_equal(m.peer, RANK);
        assert_in_range(m.stream, 0, K - 1);
        float got;
        memcpy(&got, m.payload, sizeof got);
        assert_true(got == (float)(10 * m.stream + next[m.stream]));
        assert_int_equal(m.hdr.step, (uint64_t)next[m.stream]);
        next[m.stream]++;
        ps_tp_msg_release(&m);
    }
    for (int j = 0; j < K; j++) {
        assert_int_equal(next[j], PER);
    }
    for (int j = K - 1; j >= 0; j--) {
        ps_hdr_t ack = ps_wire_hdr(PS_MSG_ACK, 0);
        ack.request = (uint32_t)j;
        assert_int_equal(ps_tp_send(srv, RANK, j, &ack, NULL, 0, NULL, NULL), 0);
        assert_int_equal(ps_tp_recv(cli, &m, WAIT_MS), 0);
        assert_int_equal(m.peer, 0);
        assert_int_equal(m.stream, j);
        assert_int_equal(m.hdr.request, (uint32_t)j);
        ps_tp_msg_release(&m);
    }
    /* Streams and servers that do not exist are refused, not guessed. */
    ps_hdr_t h = push_hdr(RANK, 1);
    assert_int_equal(ps_tp_send(cli, 0, K, &h, pay, sizeof pay, NULL, NULL), PS_EINVAL);
    assert_int_equal(ps_tp_send(cli, 0, -1, &h, pay, sizeof pay, NULL, NULL), PS_EINVAL);
    assert_int_equal(ps_tp_send(cli, 1, 0, &h, pay, sizeof pay, NULL, NULL), PS_EINVAL);
    assert_int_equal(ps_tp_recv(srv, &m, 50), PS_EAGAIN);
    ps_tp_destroy(&cli);
    ps_tp_t *bad = NULL;
    assert_int_equal(ps_tp_client_new(&bad, RANK, 1, eps, 0, 1, NULL, NULL), PS_EINVAL);
    assert_int_equal(ps_tp_client_new(&bad, RANK, 1, eps, PS_TP_MAX_STREAMS + 1, 1, NULL, NULL),
                     PS_EINVAL);
    assert_null(bad);
    ps_tp_destroy(&srv);
}

/* One lane per I/O thread, at most PS_TP_MAX_LANES: distinct endpoints,
 * space-separated, each reaching the same socket; clients of any rank
 * and stream find their lane. */
static void test_lanes(void **state)
{
    (void)state;
    ps_tp_t *srv = NULL;
    char ep[512], *save = NULL, lanes[PS_TP_MAX_LANES + 1][128];
    int n = 0;
    assert_int_equal(ps_tp_server_new(&srv, "tcp://127.0.0.1", 6, NULL, ep, sizeof ep), 0);
    char copy[512];
    snprintf(copy, sizeof copy, "%s", ep);
    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        assert_true(n < PS_TP_MAX_LANES);
        assert_true(strncmp(t, "tcp://127.0.0.1:", 16) == 0);
        for (int i = 0; i < n; i++) {
            assert_string_not_equal(lanes[i], t);
        }
        snprintf(lanes[n++], sizeof lanes[0], "%s", t);
    }
    assert_int_equal(n, PS_TP_MAX_LANES); /* 6 I/O threads, capped */
    /* A raw peer through every lane reaches the one socket. */
    void *ctx = zmq_ctx_new();
    uint8_t hdr[PS_WIRE_HDR_SIZE];
    float pay[1] = {7.0f};
    for (int i = 0; i < n; i++) {
        const uint8_t id[6] = {'w', (uint8_t)i, 0, 0, 0, 0};
        void *s = raw_dealer(ctx, lanes[i], id, sizeof id);
        ps_hdr_t h = push_hdr((uint32_t)i, 1);
        ps_wire_encode(&h, hdr);
        const void *fr[2] = {hdr, pay};
        const size_t len[2] = {sizeof hdr, sizeof pay};
        raw_send(s, fr, len, 2);
        ps_tp_msg_t m;
        assert_int_equal(ps_tp_recv(srv, &m, WAIT_MS), 0);
        assert_int_equal(m.peer, i);
        ps_tp_msg_release(&m);
        zmq_close(s);
    }
    zmq_ctx_term(ctx);
    /* Workers of several ranks with 3 streams each: every stream gets
     * through its lane and the reply comes back on it. */
    char *eps[1] = {ep};
    for (int rank = 0; rank < 3; rank++) {
        ps_tp_t *cli = NULL;
        assert_int_equal(ps_tp_client_new(&cli, rank, 1, eps, 3, 2, NULL, NULL), 0);
        for (int j = 0; j < 3; j++) {
            ps_hdr_t h = push_hdr((uint32_t)rank, 1);
            ps_tp_msg_t m;
            assert_int_equal(ps_tp_send(cli, 0, j, &h, pay, sizeof pay, NULL, NULL), 0);
            assert_int_equal(ps_tp_recv(srv, &m, WAIT_MS), 0);
            assert_int_equal(m.peer, rank);
            assert_int_equal(m.stream, j);
            ps_tp_msg_release(&m);
            ps_hdr_t ack = ps_wire_hdr(PS_MSG_ACK, 0);
            assert_int_equal(ps_tp_send(srv, rank, j, &ack, NULL, 0, NULL, NULL), 0);
            assert_int_equal(ps_tp_recv(cli, &m, WAIT_MS), 0);
            assert_int_equal(m.stream, j);
            ps_tp_msg_release(&m);
        }
        ps_tp_destroy(&cli);
    }
    ps_tp_destroy(&srv);

    /* ipc lanes are socket files "0", "1", ... in a new private folder
     * (mode 0700, ours, a random name) inside the folder given; the
     * transport removes files and folder. */
    char parent[64], want[600];
    snprintf(parent, sizeof parent, "/tmp/ps-test-lanes-XXXXXX");
    assert_non_null(mkdtemp(parent));
    snprintf(want, sizeof want, "ipc://%s", parent);
    assert_int_equal(ps_tp_server_new(&srv, want, 2, NULL, ep, sizeof ep), 0);
    char dir[200], f0[220], f1[220];
    assert_int_equal(sscanf(ep, "ipc://%199[^ ]", dir), 1);
    *strrchr(dir, '/') = '\0';
    assert_true(strncmp(dir, parent, strlen(parent)) == 0);
    const char *name = dir + strlen(parent);
    assert_int_equal(strlen(name), strlen("/ps-0123456789ab-XXXXXX"));
    assert_true(strncmp(name, "/ps-", 4) == 0 && strspn(name + 4, "0123456789abcdef") == 12);
    snprintf(want, sizeof want, "ipc://%s/0 ipc://%s/1", dir, dir);
    assert_string_equal(ep, want);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, geteuid());
    snprintf(f0, sizeof f0, "%s/0", dir);
    snprintf(f1, sizeof f1, "%s/1", dir);
    assert_int_equal(access(f0, F_OK), 0);
    assert_int_equal(access(f1, F_OK), 0);
    ps_tp_destroy(&srv);
    /* Both socket files and the folder are gone with the transport. */
    assert_int_equal(access(f0, F_OK), -1);
    assert_int_equal(access(f1, F_OK), -1);
    assert_int_equal(access(dir, F_OK), -1);
    assert_int_equal(rmdir(parent), 0); /* empty again */

    /* A folder that does not exist: refused, naming it. */
    ps_error_clear();
    assert_int_equal(ps_tp_server_new(&srv, "ipc:///nonexistent/ps", 1, NULL, ep, sizeof ep),
                     PS_EIO);
    assert_non_null(strstr(ps_error_msg(), "/nonexistent/ps"));
    assert_null(srv);

    /* Too little room for the lanes, or a space in the base: refused. */
    ps_error_clear();
    assert_int_equal(ps_tp_server_new(&srv, "tcp://127.0.0.1", 4, NULL, ep, 40), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "do not fit"));
    assert_null(srv);
    assert_int_equal(ps_tp_server_new(&srv, "ipc:///tmp/a b", 1, NULL, ep, sizeof ep), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "space"));
}

/* CurveZMQ holds on every lane: the allowed client gets through both
 * lanes (2 streams, rank 0: lanes 0 and 1); a client with a key not on the
 * allow list and a plain-text peer, both through lane 1, are refused and
 * counted, and nothing of theirs arrives. */
static void test_curve_every_lane(void **state)
{
    (void)state;
    if (!zmq_has("curve")) {
        skip();
    }
    ps_tp_keypair_t sk, ck, bad;
    assert_int_equal(ps_tp_keypair(&sk), 0);
    assert_int_equal(ps_tp_keypair(&ck), 0);
    assert_int_equal(ps_tp_keypair(&bad), 0);
    ps_tp_t *srv = NULL, *cli = NULL, *intruder = NULL;
    char ep[512], lane1[256];
    assert_int_equal(ps_tp_server_new(&srv, "tcp://127.0.0.1", 2, &sk, ep, sizeof ep), 0);
    const char allow[1][PS_TP_KEY_LEN];
    memcpy((char *)allow[0], ck.pub, PS_TP_KEY_LEN);
    assert_int_equal(ps_tp_server_allow(srv, allow, 1), 0);
    const char *sp = strchr(ep, ' ');
    assert_non_null(sp);
    snprintf(lane1, sizeof lane1, "%s", sp + 1);
    char *eps[1] = {ep};
    const char spub[1][PS_TP_KEY_LEN];
    memcpy((char *)spub[0], sk.pub, PS_TP_KEY_LEN);
    assert_int_equal(ps_tp_client_new(&cli, 0, 1, eps, 2, 2, &ck, spub), 0);
    float pay[1] = {3.0f};
    ps_tp_msg_t m;
    for (int j = 0; j < 2; j++) {
        ps_hdr_t h = push_hdr(0, 1);
        assert_int_equal(ps_tp_send(cli, 0, j, &h, pay, sizeof pay, NULL, NULL), 0);
        assert_int_equal(ps_tp_recv(srv, &m, WAIT_MS), 0);
        assert_int_equal(m.stream, j);
        ps_tp_msg_release(&m);
    }
    /* Rank 1, stream 0: lane 1, with a key the server does not know. */
    assert_int_equal(ps_tp_client_new(&intruder, 1, 1, eps, 1, 1, &bad, spub), 0);
    ps_hdr_t h = push_hdr(1, 1);
    assert_int_equal(ps_tp_send(intruder, 0, 0, &h, pay, sizeof pay, NULL, NULL), 0);
    /* A plain-text peer on lane 1. */
    void *ctx = zmq_ctx_new();
    const uint8_t id[6] = {'w', 2, 0, 0, 0, 0};
    void *raw = raw_dealer(ctx, lane1, id, sizeof id);
    uint8_t hdr[PS_WIRE_HDR_SIZE];
    ps_hdr_t h2 = push_hdr(2, 1);
    ps_wire_encode(&h2, hdr);
    const void *fr[2] = {hdr, pay};
    const size_t len[2] = {sizeof hdr, sizeof pay};
    raw_send(raw, fr, len, 2);
    ps_tp_stats_t st = {0};
    for (int t = 0; t < 60 && st.handshakes_refused < 2; t++) {
        assert_int_equal(ps_tp_recv(srv, &m, 50), PS_EAGAIN);
        ps_tp_stats(srv, &st);
    }
    assert_true(st.handshakes_refused >= 2);
    assert_true(st.rx_msgs == 2 && st.rx_malformed == 0);
    zmq_close(raw);
    zmq_ctx_term(ctx);
    ps_tp_destroy(&intruder);
    ps_tp_destroy(&cli);
    ps_tp_destroy(&srv);
}

/* The allow list is by rank: a message carries the rank whose key its
 * connection proved, whatever rank its routing id claims; a server
 * without keys says it knows nothing (PS_TP_AUTH_NONE).  One key for two
 * ranks is refused: either could then pass for the other. */
static void test_curve_rank_of_key(void **state)
{
    fix_t *f = *state;
    if (!zmq_has("curve")) {
        skip();
    }
    ps_tp_keypair_t sk, k[3];
    assert_int_equal(ps_tp_keypair(&sk), 0);
    char allow[3][PS_TP_KEY_LEN], spub[1][PS_TP_KEY_LEN];
    for (int r = 0; r < 3; r++) {
        assert_int_equal(ps_tp_keypair(&k[r]), 0);
        memcpy(allow[r], k[r].pub, PS_TP_KEY_LEN);
    }
    memcpy(spub[0], sk.pub, PS_TP_KEY_LEN);
    ps_tp_t *srv = NULL, *cli[2] = {NULL, NULL};
    char ep[512];
    assert_int_equal(ps_tp_server_new(&srv, "tcp://127.0.0.1", 1, &sk, ep, sizeof ep), 0);
    assert_int_equal(ps_tp_server_allow(srv, (const char(*)[PS_TP_KEY_LEN])allow, 3), 0);
    char *eps[1] = {ep};
    /* Rank 2 with its own key; "rank 0" with rank 1's key. */
    assert_int_equal(
        ps_tp_client_new(&cli[0], 2, 1, eps, 1, 1, &k[2], (const char(*)[PS_TP_KEY_LEN])spub), 0);
    assert_int_equal(
        ps_tp_client_new(&cli[1], 0, 1, eps, 1, 1, &k[1], (const char(*)[PS_TP_KEY_LEN])spub), 0);
    float pay[1] = {1.0f};
    int seen[3] = {-9, -9, -9};
    for (int c = 0; c < 2; c++) {
        ps_hdr_t h = push_hdr(c == 0 ? 2 : 0, 1);
        assert_int_equal(ps_tp_send(cli[c], 0, 0, &h, pay, sizeof pay, NULL, NULL), 0);
    }
    for (int i = 0; i < 2; i++) {
        ps_tp_msg_t m;
        assert_int_equal(ps_tp_recv(srv, &m, WAIT_MS), 0);
        assert_true(m.peer == 0 || m.peer == 2);
        seen[m.peer] = m.auth_rank;
        ps_tp_msg_release(&m);
    }
    assert_int_equal(seen[2], 2);
    assert_int_equal(seen[0], 1);
    memcpy(allow[2], allow[0], PS_TP_KEY_LEN);
    assert_int_equal(ps_tp_server_allow(srv, (const char(*)[PS_TP_KEY_LEN])allow, 3), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "same"));
    ps_tp_destroy(&cli[0]);
    ps_tp_destroy(&cli[1]);
    ps_tp_destroy(&srv);
    /* The fixture's server has no keys. */
    ps_hdr_t h = push_hdr(RANK, 1);
    assert_int_equal(ps_tp_send(f->cli, 0, 0, &h, pay, sizeof pay, NULL, NULL), 0);
    ps_tp_msg_t m;
    assert_int_equal(ps_tp_recv(f->srv, &m, WAIT_MS), 0);
    assert_int_equal(m.peer, RANK);
    assert_int_equal(m.auth_rank, PS_TP_AUTH_NONE);
    ps_tp_msg_release(&m);
}

/* A server with both planes advertises its ipc lanes first; a worker
 * takes the lanes of its plane; a reply goes out on the plane the worker
 * was placed on, and cannot go before the server knows. */
static void test_two_planes(void **state)
{
    (void)state;
    char parent[64], bases[128], ep[600], sel[600];
    snprintf(parent, sizeof parent, "/tmp/ps-test-planes-XXXXXX");
    assert_non_null(mkdtemp(parent));
    snprintf(bases, sizeof bases, "ipc://%s tcp://127.0.0.1", parent);
    ps_tp_t *srv = NULL, *ci = NULL, *ct = NULL;
    assert_int_equal(ps_tp_server_new(&srv, bases, 2, NULL, ep, sizeof ep), 0);
    /* ipc, ipc, tcp, tcp */
    char l[4][200];
    assert_int_equal(sscanf(ep, "%199s %199s %199s %199s", l[0], l[1], l[2], l[3]), 4);
    assert_true(strncmp(l[0], "ipc://", 6) == 0 && strncmp(l[1], "ipc://", 6) == 0);
    assert_true(strncmp(l[2], "tcp://127.0.0.1:", 16) == 0);
    assert_true(strncmp(l[3], "tcp://127.0.0.1:", 16) == 0);
    assert_int_equal(ps_tp_endpoint_select(ep, 1, sel, sizeof sel), 0);
    char want[600];
    snprintf(want, sizeof want, "%s %s", l[0], l[1]);
    assert_string_equal(sel, want);
    assert_int_equal(ps_tp_endpoint_select(ep, 0, sel, sizeof sel), 0);
    snprintf(want, sizeof want, "%s %s", l[2], l[3]);
    assert_string_equal(sel, want);
    assert_int_equal(ps_tp_endpoint_select(l[2], 1, sel, sizeof sel), PS_ENOENT);
    assert_non_null(strstr(ps_error_msg(), "no ipc endpoint"));
    assert_int_equal(ps_tp_endpoint_select(ep, 1, sel, 20), PS_EINVAL);

    /* Worker 0 over ipc, worker 1 over tcp. */
    char ipc_lanes[600], tcp_lanes[600];
    ps_tp_endpoint_select(ep, 1, ipc_lanes, sizeof ipc_lanes);
    ps_tp_endpoint_select(ep, 0, tcp_lanes, sizeof tcp_lanes);
    char *ei[1] = {ipc_lanes}, *et[1] = {tcp_lanes};
    assert_int_equal(ps_tp_client_new(&ci, 0, 1, ei, 1, 1, NULL, NULL), 0);
    assert_int_equal(ps_tp_client_new(&ct, 1, 1, et, 1, 1, NULL, NULL), 0);
    float pay[1] = {2.0f};
    ps_tp_msg_t m;
    for (int w = 0; w < 2; w++) {
        ps_hdr_t h = push_hdr((uint32_t)w, 1);
        assert_int_equal(ps_tp_send(w ? ct : ci, 0, 0, &h, pay, sizeof pay, NULL, NULL), 0);
        assert_int_equal(ps_tp_recv(srv, &m, WAIT_MS), 0);
        assert_int_equal(m.peer, w);
        ps_tp_msg_release(&m);
    }
    ps_hdr_t ack = ps_wire_hdr(PS_MSG_ACK, 0);
    ps_error_clear();
    assert_int_equal(ps_tp_send(srv, 0, 0, &ack, NULL, 0, NULL, NULL), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "no route to worker 0"));
    /* Refused before any message exists: a zero-copy payload is given back. */
    static atomic_int freed;
    atomic_store(&freed, 0);
    assert_int_equal(ps_tp_send(srv, 1, 0, &ack, pay, sizeof pay, on_free, &freed), PS_EINVAL);
    assert_int_equal(atomic_load(&freed), 1);
    ps_tp_place_t place[2] = {{.pid = 0, .ipc = 1}, {.pid = 0, .ipc = 0}};
    assert_int_equal(ps_tp_server_place(srv, place, 2), 0);
    for (int w = 0; w < 2; w++) {
        assert_int_equal(ps_tp_send(srv, w, 0, &ack, NULL, 0, NULL, NULL), 0);
        assert_int_equal(ps_tp_recv(w ? ct : ci, &m, WAIT_MS), 0);
        assert_int_equal(m.hdr.type, PS_MSG_ACK);
        ps_tp_msg_release(&m);
    }
    /* Placed on the wrong plane: the ROUTER there has no such peer. */
    place[0].ipc = 0;
    place[1].ipc = 1;
    assert_int_equal(ps_tp_server_place(srv, place, 2), 0);
    assert_int_equal(ps_tp_send(srv, 0, 0, &ack, NULL, 0, NULL, NULL), PS_EZMQ);
    /* Worker 2 is not placed: no route. */
    assert_int_equal(ps_tp_send(srv, 2, 0, &ack, NULL, 0, NULL, NULL), PS_EINVAL);
    ps_tp_destroy(&ci);
    ps_tp_destroy(&ct);
    ps_tp_destroy(&srv);
    assert_int_equal(rmdir(parent), 0); /* the private folder went with the server */

    /* A plane the server does not have; one pid for two ranks. */
    assert_int_equal(ps_tp_server_new(&srv, "tcp://127.0.0.1", 1, NULL, ep, sizeof ep), 0);
    ps_tp_place_t one[1] = {{.pid = 0, .ipc = 1}};
    assert_int_equal(ps_tp_server_place(srv, one, 1), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "no ipc endpoint"));
    ps_tp_destroy(&srv);
    ps_tp_keypair_t sk;
    if (zmq_has("curve") && ps_tp_keypair(&sk) == 0) {
        assert_int_equal(ps_tp_server_new(&srv, "ipc:///tmp", 1, &sk, ep, sizeof ep), 0);
        ps_tp_place_t dup[3] = {{.pid = 77, .ipc = 1}, {.pid = 0, .ipc = 1}, {.pid = 77, .ipc = 1}};
        assert_int_equal(ps_tp_server_place(srv, dup, 3), PS_EINVAL);
        assert_non_null(strstr(ps_error_msg(), "one process id"));
        dup[2].pid = 0; /* workers elsewhere all say 0 */
        assert_int_equal(ps_tp_server_place(srv, dup, 3), 0);
        ps_tp_destroy(&srv);
    }
}

/* --- child processes --------------------------------------------------------
 *
 * The ipc tests need other processes: the kernel reports a connecting
 * process's real pid and uid (SO_PEERCRED), which no message field can
 * change.  A child is this test program run again (fork, then exec at
 * once: ThreadSanitizer cannot follow a fork of a process with threads
 * that goes on running) in one of the modes of child_main. */

static pid_t child_exec(char *const argv[])
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    return pid;
}

/* --ipc-server BASE FD: a server on ipc in BASE; its endpoint goes to FD,
 * then it waits to be killed. */
static int child_server(const char *base, int fd)
{
    ps_tp_t *srv = NULL;
    char ep[600];
    if (ps_tp_server_new(&srv, base, 2, NULL, ep, sizeof ep) != 0 ||
        write(fd, ep, strlen(ep) + 1) < 0) {
        return 1;
    }
    for (;;) {
        pause();
    }
}

/* --ipc-client GOFD LANES RANK UID WAITMS: wait for a byte on GOFD (the
 * server is told the pids first), become UID (-1: stay), connect, send
 * one PUSH as RANK; exit 0 when the server's reply came back, 1 when
 * none came within WAITMS. */
static int child_client(int go, char *lanes, int rank, int uid, int wait_ms)
{
    char b;
    if (read(go, &b, 1) != 1) {
        return 3;
    }
    if (uid >= 0 && (setgid((gid_t)uid) != 0 || setuid((uid_t)uid) != 0)) {
        return 4;
    }
    ps_tp_t *cli = NULL;
    char *eps[1] = {lanes};
    if (ps_tp_client_new(&cli, rank, 1, eps, 1, 1, NULL, NULL) != 0) {
        return 5;
    }
    float pay[1] = {1.0f};
    ps_hdr_t h = push_hdr((uint32_t)rank, 1);
    ps_tp_msg_t m;
    int rv = ps_tp_send(cli, 0, 0, &h, pay, sizeof pay, NULL, NULL);
    rv = rv ? rv : ps_tp_recv(cli, &m, wait_ms);
    if (rv == 0) {
        ps_tp_msg_release(&m);
    }
    /* _exit: a refused child must not wait on its queued message. */
    _exit(rv == 0 ? 0 : 1);
}

/* 0 when argv names no child mode; else the child's exit status. */
static int child_main(int argc, char **argv, int *is_child)
{
    *is_child = argc > 1 && strncmp(argv[1], "--ipc-", 6) == 0;
    if (*is_child && strcmp(argv[1], "--ipc-server") == 0 && argc == 4) {
        return child_server(argv[2], atoi(argv[3]));
    }
    if (*is_child && strcmp(argv[1], "--ipc-client") == 0 && argc == 7) {
        return child_client(atoi(argv[2]), argv[3], atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    }
    return 64;
}

typedef struct {
    pid_t pid;
    int go; /* write end: one byte starts the child */
} child_t;

/* A --ipc-client child, waiting for child_go. */
static child_t child_start(const char *lanes, int rank, int uid, int wait_ms)
{
    int p[2];
    child_t c = {-1, -1};
    char go[16], r[16], u[16], w[16], l[600];
    assert_int_equal(pipe(p), 0);
    snprintf(go, sizeof go, "%d", p[0]);
    snprintf(r, sizeof r, "%d", rank);
    snprintf(u, sizeof u, "%d", uid);
    snprintf(w, sizeof w, "%d", wait_ms);
    snprintf(l, sizeof l, "%s", lanes);
    c.pid = child_exec((char *[]){"test_transport", "--ipc-client", go, l, r, u, w, NULL});
    close(p[0]);
    c.go = p[1];
    return c;
}

/* A server process killed outright (SIGKILL: no cleanup of its own)
 * leaves no folder behind: its janitor removes it.  A server destroyed
 * normally leaves no janitor behind either. */
static void test_ipc_janitor(void **state)
{
    (void)state;
    char parent[64], base[80], dir[200] = "";
    snprintf(parent, sizeof parent, "/tmp/ps-test-janitor-XXXXXX");
    assert_non_null(mkdtemp(parent));
    snprintf(base, sizeof base, "ipc://%s", parent);
    int p[2];
    assert_int_equal(pipe(p), 0);
    char fd[16];
    snprintf(fd, sizeof fd, "%d", p[1]);
    pid_t pid = child_exec((char *[]){"test_transport", "--ipc-server", base, fd, NULL});
    close(p[1]);
    char ep[600] = "";
    ssize_t n = read(p[0], ep, sizeof ep - 1);
    close(p[0]);
    assert_true(n > 0);
    assert_int_equal(sscanf(ep, "ipc://%199[^ ]", dir), 1);
    *strrchr(dir, '/') = '\0';
    assert_int_equal(access(dir, F_OK), 0);
    kill(pid, SIGKILL);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    for (int t = 0; t < 200 && access(dir, F_OK) == 0; t++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(access(dir, F_OK), -1);
    assert_int_equal(rmdir(parent), 0); /* nothing else was left in it */

    /* In this process: destroy waits for its janitor, so no child is left. */
    ps_tp_t *srv = NULL;
    assert_int_equal(ps_tp_server_new(&srv, "ipc:///tmp", 1, NULL, ep, sizeof ep), 0);
    ps_tp_destroy(&srv);
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

static void child_go(child_t *c)
{
    assert_int_equal(write(c->go, "g", 1), 1);
    close(c->go);
}

static int child_wait(child_t *c)
{
    int st = 0;
    assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

typedef struct {
    ps_tp_t *srv;
    char lanes[600];
    char dir[200];
} ipc_srv_t;

static void ipc_server(ipc_srv_t *s)
{
    ps_tp_keypair_t sk;
    char ep[600];
    memset(s, 0, sizeof *s);
    assert_int_equal(ps_tp_keypair(&sk), 0);
    assert_int_equal(ps_tp_server_new(&s->srv, "ipc:///tmp", 1, &sk, ep, sizeof ep), 0);
    assert_int_equal(ps_tp_endpoint_select(ep, 1, s->lanes, sizeof s->lanes), 0);
    assert_int_equal(sscanf(ep, "ipc://%199[^ ]", s->dir), 1);
    *strrchr(s->dir, '/') = '\0';
}

/* Serve for `ms`: answer every message with an ACK on its stream; *got
 * counts messages by auth_rank + 1 (index 0: none). */
static void serve(ps_tp_t *srv, int ms, int got[8], int peer_of_auth[8])
{
    double end = now_ms() + ms;
    while (now_ms() < end) {
        ps_tp_msg_t m;
        int rv = ps_tp_recv(srv, &m, 20);
        if (rv != 0) {
            continue;
        }
        int a = m.auth_rank >= 0 && m.auth_rank < 7 ? m.auth_rank + 1 : 0;
        got[a]++;
        peer_of_auth[a] = m.peer;
        ps_hdr_t ack = ps_wire_hdr(PS_MSG_ACK, 0);
        ps_tp_send(srv, m.peer, m.stream, &ack, NULL, 0, NULL, NULL);
        ps_tp_msg_release(&m);
    }
}

/* The workers whose pids the server was given get through, labelled with
 * their ranks (a routing id claiming another rank is reported as such,
 * for the server loop to refuse); a process of this user whose pid is not
 * a worker's is refused at the handshake, counted, and nothing of its
 * reaches the server. */
static void test_ipc_peer_pid(void **state)
{
    (void)state;
    if (!zmq_has("curve")) {
        skip();
    }
    ipc_srv_t s;
    ipc_server(&s);
    /* Ranks 0 and 1 as themselves; rank 2's process claiming rank 1's
     * routing id on another stream... of its own: routing id rank 5. */
    child_t c[4];
    c[0] = child_start(s.lanes, 0, -1, WAIT_MS);
    c[1] = child_start(s.lanes, 1, -1, WAIT_MS);
    c[2] = child_start(s.lanes, 5, -1, WAIT_MS);
    c[3] = child_start(s.lanes, 3, -1, 1500); /* not a worker */
    ps_tp_place_t place[3] = {{c[0].pid, 1}, {c[1].pid, 1}, {c[2].pid, 1}};
    assert_int_equal(ps_tp_server_place(s.srv, place, 3), 0);
    for (int i = 0; i < 4; i++) {
        child_go(&c[i]);
    }
    int got[8] = {0}, peer[8] = {0};
    serve(s.srv, 2000, got, peer);
    assert_int_equal(child_wait(&c[0]), 0);
    assert_int_equal(child_wait(&c[1]), 0);
    assert_int_equal(child_wait(&c[2]), 0); /* the transport reports; the loop judges */
    assert_int_equal(child_wait(&c[3]), 1); /* no reply: nothing of it got in */
    assert_int_equal(got[1], 1);
    assert_int_equal(peer[1], 0);
    assert_int_equal(got[2], 1);
    assert_int_equal(peer[2], 1);
    assert_int_equal(got[3], 1);
    assert_int_equal(peer[3], 5); /* routing id 5, process of rank 2 */
    assert_int_equal(got[0], 0);  /* nothing without a rank */
    ps_tp_stats_t st;
    ps_tp_stats(s.srv, &st);
    assert_true(st.handshakes_refused >= 1);
    assert_int_equal(st.rx_msgs, 3);
    ps_tp_destroy(&s.srv);
    assert_int_equal(access(s.dir, F_OK), -1);
}

/* The uid check, apart from the folder's 0700: the folder and socket are
 * opened to everyone here, and a worker's own pid connecting as another
 * user (nobody) is still refused; the same child as our user gets in.
 * Root only (to become nobody). */
static void test_ipc_peer_uid(void **state)
{
    (void)state;
    if (geteuid() != 0 || !zmq_has("curve")) {
        skip();
    }
    ipc_srv_t s;
    ipc_server(&s);
    char f0[220];
    snprintf(f0, sizeof f0, "%s/0", s.dir);
    assert_int_equal(chmod(s.dir, 0755), 0);
    assert_int_equal(chmod(f0, 0777), 0);
    child_t c = child_start(s.lanes, 0, 65534, 1500);
    ps_tp_place_t place[1] = {{c.pid, 1}};
    assert_int_equal(ps_tp_server_place(s.srv, place, 1), 0);
    child_go(&c);
    int got[8] = {0}, peer[8] = {0};
    serve(s.srv, 1700, got, peer);
    assert_int_equal(child_wait(&c), 1);
    ps_tp_stats_t st;
    ps_tp_stats(s.srv, &st);
    assert_int_equal(st.rx_msgs, 0);
    /* It reached the socket (the handshake ran) and was refused. */
    assert_true(st.handshakes_refused >= 1);
    /* Control: the same, as our own user. */
    child_t ok = child_start(s.lanes, 0, -1, WAIT_MS);
    place[0].pid = ok.pid;
    assert_int_equal(ps_tp_server_place(s.srv, place, 1), 0);
    child_go(&ok);
    serve(s.srv, 1000, got, peer);
    assert_int_equal(child_wait(&ok), 0);
    assert_int_equal(got[1], 1);
    ps_tp_destroy(&s.srv);
}

/* Without the folder opened, another user cannot even reach the socket:
 * connect(2) fails with EACCES (the first guard). */
static void test_ipc_private_folder(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        skip();
    }
    ps_tp_t *srv = NULL;
    char ep[600], path[108];
    assert_int_equal(ps_tp_server_new(&srv, "ipc:///tmp", 1, NULL, ep, sizeof ep), 0);
    assert_int_equal(sscanf(ep, "ipc://%107s", path), 1);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) {
            _exit(4);
        }
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        memcpy(a.sun_path, path, sizeof path);
        int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        _exit(rc != 0 && errno == EACCES ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Control: as our user the same connect reaches the socket. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, path, sizeof path);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    close(fd);
    ps_tp_destroy(&srv);
}

static void test_bind_refused(void **state)
{
    (void)state;
    ps_tp_t *tp = (ps_tp_t *)1;
    char ep[256];
    ps_error_clear();
    assert_int_equal(ps_tp_server_new(&tp, "tcp://256.1.1.1", 1, NULL, ep, sizeof ep), PS_EZMQ);
    assert_non_null(strstr(ps_error_msg(), "256.1.1.1"));
}

int main(int argc, char **argv)
{
    int is_child;
    int rv = child_main(argc, argv, &is_child);
    if (is_child) {
        return rv;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bind_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_zero_copy_and_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msg_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recv_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_from_raw_dealer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_routing_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_to_unknown_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_callback_on_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_drops_replies_to_gone_peer, setup, teardown),
        cmocka_unit_test(test_two_servers),
        cmocka_unit_test(test_streams),
        cmocka_unit_test(test_lanes),
        cmocka_unit_test(test_curve_every_lane),
        cmocka_unit_test_setup_teardown(test_curve_rank_of_key, setup, teardown),
        cmocka_unit_test(test_two_planes),
        cmocka_unit_test(test_ipc_janitor),
        cmocka_unit_test(test_ipc_peer_pid),
        cmocka_unit_test(test_ipc_peer_uid),
        cmocka_unit_test(test_ipc_private_folder),
        cmocka_unit_test(test_bind_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
