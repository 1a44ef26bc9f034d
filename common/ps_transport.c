#include "ps_transport.h"

#include "ps_err.h"
#include "ps_ipcdir.h"
#include "ps_signal.h"
#include "ps_tp_auth.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

_Static_assert(PS_IPCDIR_MAX_FILES >= PS_TP_MAX_LANES, "a lane without a socket file");
_Static_assert(sizeof(zmq_msg_t) <= sizeof(((ps_tp_msg_t *)0)->impl), "zmq_msg_t too large");

#define ID_LEN 6 /* 'w' + little-endian u32 rank + u8 stream */
/* A draft option in libzmq 4.3 (Debian builds it): without a ZAP handler,
 * refuse instead of letting NULL-mechanism clients in. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

struct ps_tp {
    void *ctx;
    int is_server;
    int streams; /* worker: connections per server */
    int nsock;
    void **sock;
    zmq_pollitem_t *items;
    int next; /* round-robin start for fairness between servers */
    ps_tp_stats_t st;
    ps_tp_auth_t *auth;     /* server with authentication only */
    int ipc_sock, tcp_sock; /* server: the ROUTER of each plane, -1 when none */
    unsigned char *via_ipc; /* server with both planes: [nplaced], 1 for ipc */
    int nplaced;
    ps_ipcdir_t *ipc; /* server on ipc: removed at the end */
};

static int zfail(const char *what)
{
    ps_error_set("%s: %s", what, zmq_strerror(zmq_errno()));
    return PS_EZMQ;
}

static int tp_alloc(ps_tp_t **out, int is_server, int nsock, int io_threads)
{
    ps_tp_t *tp = calloc(1, sizeof *tp);
    if (!tp) {
        return PS_ENOMEM;
    }
    tp->is_server = is_server;
    tp->ipc_sock = tp->tcp_sock = -1;
    tp->sock = calloc((size_t)nsock, sizeof *tp->sock);
    tp->items = calloc((size_t)nsock, sizeof *tp->items);
    tp->ctx = zmq_ctx_new();
    if (!tp->sock || !tp->items || !tp->ctx) {
        ps_tp_destroy(&tp);
        return PS_ENOMEM;
    }
    zmq_ctx_set(tp->ctx, ZMQ_IO_THREADS, io_threads < 1 ? 1 : io_threads);
    tp->nsock = nsock;
    *out = tp;
    return 0;
}

/* Unlimited queues: a ROUTER silently drops at its high-water mark, and the
 * protocol already bounds what is in flight (one step per worker). */
static int set_common_opts(void *s, int linger)
{
    int zero = 0;
    if (zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0) {
        return zfail("zmq_setsockopt");
    }
    return 0;
}

int ps_tp_keypair(ps_tp_keypair_t *kp)
{
    if (!zmq_has("curve") || zmq_curve_keypair(kp->pub, kp->sec) != 0) {
        ps_error_set("this libzmq has no CurveZMQ support (use --insecure to run without it)");
        return PS_EZMQ;
    }
    return 0;
}

/* The ZAP handler on every plane: CurveZMQ with our key pair on tcp, the
 * peer's credentials on ipc (libzmq asks the handler about NULL-mechanism
 * clients only when the socket has a ZAP domain). */
static int server_security(ps_tp_t *tp, const ps_tp_keypair_t *keys)
{
    int one = 1, rv;
    if ((rv = ps_tp_auth_start(&tp->auth, tp->ctx, tp->sock, tp->nsock)) != 0) {
        return rv;
    }
    if (tp->tcp_sock >= 0 &&
        (zmq_setsockopt(tp->sock[tp->tcp_sock], ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
         zmq_setsockopt(tp->sock[tp->tcp_sock], ZMQ_CURVE_SECRETKEY, keys->sec, 40) != 0)) {
        return zfail("CurveZMQ server options");
    }
    if (tp->ipc_sock >= 0) {
        void *s = tp->sock[tp->ipc_sock];
        if (zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, PS_TP_AUTH_IPC_DOMAIN,
                           strlen(PS_TP_AUTH_IPC_DOMAIN)) != 0) {
            return zfail("ZAP domain of the ipc socket");
        }
        /* Belt and braces (the handler runs before the socket binds); a
         * libzmq without draft options refuses it, and the server loop
         * still refuses every message of a connection without a rank. */
        zmq_setsockopt(s, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one);
    }
    return 0;
}

int ps_tp_server_allow(ps_tp_t *tp, const char (*pubkeys)[PS_TP_KEY_LEN], int n)
{
    return tp->auth ? ps_tp_auth_allow(tp->auth, pubkeys, n) : 0;
}

int ps_tp_server_place(ps_tp_t *tp, const ps_tp_place_t *place, int n)
{
    int64_t *pids = calloc((size_t)n + 1, sizeof *pids);
    unsigned char *via = calloc((size_t)n + 1, 1);
    int rv = 0;
    if (!pids || !via) {
        rv = PS_ENOMEM;
    }
    for (int r = 0; rv == 0 && r < n; r++) {
        if ((place[r].ipc ? tp->ipc_sock : tp->tcp_sock) < 0) {
            ps_error_set("worker %d comes over %s, but this server has no %s endpoint", r,
                         place[r].ipc ? "ipc" : "tcp", place[r].ipc ? "ipc" : "tcp");
            rv = PS_EINVAL;
        }
        pids[r] = place[r].pid;
        via[r] = place[r].ipc != 0;
    }
    if (rv == 0 && tp->auth) {
        rv = ps_tp_auth_allow_pids(tp->auth, pids, n);
    }
    if (rv == 0) {
        free(tp->via_ipc);
        tp->via_ipc = via;
        tp->nplaced = n;
        via = NULL;
    }
    free(pids);
    free(via);
    return rv;
}

/* Bind lane i of `lanes` on ROUTER s, served by I/O threads i,
 * i + lanes, ... of `threads`, and append its endpoint to the advertised
 * list.  bind_ep is "tcp://ADDR:*" or an ipc socket file's endpoint. */
static int bind_lane(void *s, const char *bind_ep, int i, int lanes, int threads, char *endpoint,
                     size_t cap)
{
    char last[600];
    uint64_t affinity = 0;
    for (int t = i; t < threads; t += lanes) {
        affinity |= (uint64_t)1 << t;
    }
    size_t len = sizeof last, used = strlen(endpoint);
    if (zmq_setsockopt(s, ZMQ_AFFINITY, &affinity, sizeof affinity) != 0) {
        return zfail("ZMQ_AFFINITY");
    }
    if (zmq_bind(s, bind_ep) != 0) {
        ps_error_set("cannot bind the data port on %s: %s", bind_ep, zmq_strerror(zmq_errno()));
        return PS_EZMQ;
    }
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, last, &len) != 0) {
        return zfail("ZMQ_LAST_ENDPOINT");
    }
    if (used + (used > 0) + strlen(last) + 1 > cap) {
        ps_error_set("the data port's endpoints do not fit in %zu bytes (%s...)", cap, endpoint);
        return PS_EINVAL;
    }
    snprintf(endpoint + used, cap - used, "%s%s", used ? " " : "", last);
    return 0;
}

/* The ipc plane: its folder, then one socket file per lane in it. */
static int bind_ipc(ps_tp_t *tp, const char *parent, int lanes, int threads, char *endpoint,
                    size_t cap)
{
    char ep[PS_IPCDIR_PATH + 8];
    const char *file;
    int rv = ps_ipcdir_new(&tp->ipc, parent);
    for (int i = 0; rv == 0 && i < lanes; i++) {
        if ((rv = ps_ipcdir_add(tp->ipc, i, &file)) == 0) {
            snprintf(ep, sizeof ep, "ipc://%s", file);
            rv = bind_lane(tp->sock[tp->ipc_sock], ep, i, lanes, threads, endpoint, cap);
        }
    }
    return rv;
}

static int bind_tcp(ps_tp_t *tp, const char *base, int lanes, int threads, char *endpoint,
                    size_t cap)
{
    char ep[600];
    int rv = 0;
    snprintf(ep, sizeof ep, "%s:*", base);
    for (int i = 0; i < lanes && rv == 0; i++) {
        rv = bind_lane(tp->sock[tp->tcp_sock], ep, i, lanes, threads, endpoint, cap);
    }
    return rv;
}

/* "tcp://ADDR" and "ipc://DIR", one or both, separated by a space. */
static int split_bases(const char *bases, char *tcp, char *ipc, size_t cap)
{
    const char *p = bases;
    tcp[0] = ipc[0] = '\0';
    while (*p) {
        size_t n = strcspn(p, " ");
        int is_tcp = strncmp(p, "tcp://", 6) == 0, is_ipc = strncmp(p, "ipc://", 6) == 0;
        char *dst = is_tcp ? tcp : ipc;
        if ((!is_tcp && !is_ipc) || n <= 6 || n >= cap || dst[0]) {
            ps_error_set("data port address '%s': want tcp://ADDRESS and/or ipc://FOLDER, once "
                         "each, separated by one space (set TMPDIR to a path without spaces)",
                         bases);
            return PS_EINVAL;
        }
        memcpy(dst, is_ipc ? p + 6 : p, is_ipc ? n - 6 : n);
        dst[is_ipc ? n - 6 : n] = '\0';
        p += n;
        p += *p == ' ' && p[1] != '\0';
    }
    if (!tcp[0] && !ipc[0]) {
        ps_error_set("data port address '%s': want tcp://ADDRESS and/or ipc://FOLDER", bases);
        return PS_EINVAL;
    }
    return 0;
}

/* One ROUTER per plane: ipc first, then tcp. */
static int server_sockets(ps_tp_t *tp)
{
    int one = 1, rv;
    for (int i = 0; i < tp->nsock; i++) {
        tp->sock[i] = zmq_socket(tp->ctx, ZMQ_ROUTER);
        if (!tp->sock[i]) {
            return zfail("zmq_socket");
        }
        if ((rv = set_common_opts(tp->sock[i], 0)) != 0) {
            return rv;
        }
        /* Replies to a vanished peer must fail loudly, not vanish. */
        zmq_setsockopt(tp->sock[i], ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        tp->items[i].socket = tp->sock[i];
        tp->items[i].events = ZMQ_POLLIN;
    }
    return 0;
}

int ps_tp_server_new(ps_tp_t **out, const char *bases, int io_threads, const ps_tp_keypair_t *keys,
                     char *endpoint, size_t cap)
{
    ps_tp_t *tp;
    char tcp[600], ipc[600];
    int rv;
    int lanes = io_threads < PS_TP_MAX_LANES ? io_threads : PS_TP_MAX_LANES;
    if (io_threads < 1 || io_threads > 64) {
        ps_error_set("%d I/O threads: want 1..64", io_threads);
        return PS_EINVAL;
    }
    if ((rv = split_bases(bases, tcp, ipc, sizeof tcp)) != 0 ||
        (rv = tp_alloc(&tp, 1, (tcp[0] != 0) + (ipc[0] != 0), io_threads)) != 0) {
        return rv;
    }
    tp->streams = 1;
    tp->ipc_sock = ipc[0] ? 0 : -1;
    tp->tcp_sock = tcp[0] ? tp->nsock - 1 : -1;
    endpoint[0] = '\0';
    if ((rv = server_sockets(tp)) != 0 || (keys && (rv = server_security(tp, keys)) != 0) ||
        (ipc[0] && (rv = bind_ipc(tp, ipc, lanes, io_threads, endpoint, cap)) != 0) ||
        (tcp[0] && (rv = bind_tcp(tp, tcp, lanes, io_threads, endpoint, cap)) != 0)) {
        ps_tp_destroy(&tp);
        return rv;
    }
    *out = tp;
    return 0;
}

static int client_security(void *s, const ps_tp_keypair_t *keys, const char *server_pub)
{
    if (!keys || !server_pub[0]) {
        return 0;
    }
    if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_pub, 40) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, keys->pub, 40) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, keys->sec, 40) != 0) {
        return zfail("CurveZMQ client options");
    }
    return 0;
}

static void routing_id(uint8_t id[ID_LEN], int rank, int stream)
{
    id[0] = 'w';
    for (int i = 0; i < 4; i++) {
        id[1 + i] = (uint8_t)((uint32_t)rank >> (8 * i));
    }
    id[5] = (uint8_t)stream;
}

/* An advertised endpoint is its lanes' endpoints separated by single
 * spaces (ps_tp_server_new). */
static unsigned count_lanes(const char *list)
{
    unsigned lanes = 1;
    for (const char *p = list; *p; p++) {
        lanes += *p == ' ';
    }
    return lanes;
}

/* Lane k (< count_lanes) of the list into out. */
static int lane_at(const char *list, unsigned k, char *out, size_t cap)
{
    const char *p = list;
    for (; k > 0; k--) {
        p = strchr(p, ' ') + 1;
    }
    size_t n = strcspn(p, " ");
    if (n == 0 || n >= cap) {
        ps_error_set("bad server endpoint '%.200s'", list);
        return PS_EINVAL;
    }
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

int ps_tp_endpoint_select(const char *advertised, int ipc, char *out, size_t cap)
{
    const char *want = ipc ? "ipc://" : "tcp://";
    char lane[600];
    size_t used = 0;
    out[0] = '\0';
    for (unsigned k = 0; k < count_lanes(advertised); k++) {
        if (lane_at(advertised, k, lane, sizeof lane) != 0) {
            return PS_EINVAL;
        }
        if (strncmp(lane, want, 6) != 0) {
            continue;
        }
        if (used + (used > 0) + strlen(lane) + 1 > cap) {
            ps_error_set("the %s lanes of '%.200s' do not fit in %zu bytes", want, advertised, cap);
            return PS_EINVAL;
        }
        used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? " " : "", lane);
    }
    if (used == 0) {
        ps_error_set("the server offers no %s endpoint (it has '%.200s')", ipc ? "ipc" : "tcp",
                     advertised);
        return PS_ENOENT;
    }
    return 0;
}

/* One DEALER: socket i = s * streams + j talks to server s as stream j,
 * through lane rank + j of its endpoint. */
static int client_socket(ps_tp_t *tp, int i, int rank, const char *advertised,
                         const ps_tp_keypair_t *keys, const char *server_pub, int io_threads)
{
    uint8_t id[ID_LEN];
    char endpoint[600];
    uint64_t affinity = (uint64_t)1 << (i % io_threads);
    int rv;
    void *s = tp->sock[i] = zmq_socket(tp->ctx, ZMQ_DEALER);
    if (!s) {
        return zfail("zmq_socket");
    }
    /* A worker's last messages (SHUTDOWN) must reach the server. */
    if ((rv = set_common_opts(s, 5000)) != 0) {
        return rv;
    }
    routing_id(id, rank, i % tp->streams);
    if (zmq_setsockopt(s, ZMQ_ROUTING_ID, id, sizeof id) != 0 ||
        zmq_setsockopt(s, ZMQ_AFFINITY, &affinity, sizeof affinity) != 0) {
        return zfail("zmq_setsockopt");
    }
    unsigned lane = (unsigned)rank + (unsigned)(i % tp->streams);
    if ((rv = lane_at(advertised, lane % count_lanes(advertised), endpoint, sizeof endpoint)) !=
        0) {
        return rv;
    }
    /* On ipc the server knows us by our process, not by a key. */
    if (strncmp(endpoint, "ipc://", 6) != 0 && (rv = client_security(s, keys, server_pub)) != 0) {
        return rv;
    }
    if (zmq_connect(s, endpoint) != 0) {
        ps_error_set("cannot connect to server %d at %s: %s", i / tp->streams, endpoint,
                     zmq_strerror(zmq_errno()));
        return PS_EZMQ;
    }
    tp->items[i].socket = s;
    tp->items[i].events = ZMQ_POLLIN;
    return 0;
}

int ps_tp_client_new(ps_tp_t **out, int rank, int nservers, char *const *endpoints, int streams,
                     int io_threads, const ps_tp_keypair_t *keys,
                     const char (*server_pub)[PS_TP_KEY_LEN])
{
    ps_tp_t *tp;
    int rv;
    if (streams < 1 || streams > PS_TP_MAX_STREAMS || io_threads < 1 || io_threads > 64) {
        ps_error_set("%d streams and %d I/O threads: want 1..%d and 1..64", streams, io_threads,
                     PS_TP_MAX_STREAMS);
        return PS_EINVAL;
    }
    if ((rv = tp_alloc(&tp, 0, nservers * streams, io_threads)) != 0) {
        return rv;
    }
    tp->streams = streams;
    for (int i = 0; i < tp->nsock; i++) {
        int s = i / streams;
        rv = client_socket(tp, i, rank, endpoints[s], keys, server_pub ? server_pub[s] : "",
                           io_threads);
        if (rv != 0) {
            ps_tp_destroy(&tp);
            return rv;
        }
    }
    *out = tp;
    return 0;
}

void ps_tp_destroy(ps_tp_t **tpp)
{
    ps_tp_t *tp = *tpp;
    if (!tp) {
        return;
    }
    for (int i = 0; tp->sock && i < tp->nsock; i++) {
        if (tp->sock[i]) {
            zmq_close(tp->sock[i]);
        }
    }
    if (tp->ctx) {
        zmq_ctx_term(tp->ctx); /* also ends the auth thread (ETERM) */
    }
    ps_tp_auth_stop(&tp->auth);
    /* libzmq may leave a socket file behind when the socket closes. */
    ps_ipcdir_destroy(&tp->ipc);
    free(tp->via_ipc);
    free(tp->sock);
    free(tp->items);
    free(tp);
    *tpp = NULL;
}

/* The socket a worker's connections come in on; NULL when a server with
 * two planes has not been told (ps_tp_server_place). */
static void *server_route(ps_tp_t *tp, int dest)
{
    if (tp->nsock == 1) {
        return tp->sock[0];
    }
    if (dest < 0 || dest >= tp->nplaced) {
        return NULL;
    }
    return tp->sock[tp->via_ipc[dest] ? tp->ipc_sock : tp->tcp_sock];
}

static int send_frame(void *s, zmq_msg_t *msg, int more)
{
    if (zmq_msg_send(msg, s, more ? ZMQ_SNDMORE : 0) < 0) {
        zmq_msg_close(msg);
        return zfail("zmq_msg_send");
    }
    return 0;
}

/* A zero-copy payload that zmq will not free after all (the message was
 * never made, or its bytes were copied): the caller is owed its callback
 * now, or whatever the callback releases (a chunk's reference, a count of
 * buffers in flight) would stay held for good. */
static int give_back(int rv, const void *payload, ps_tp_free_fn ffn, void *hint)
{
    if (ffn) {
        ffn((void *)payload, hint);
    }
    return rv;
}

static int payload_msg(zmq_msg_t *msg, const void *payload, size_t len, ps_tp_free_fn ffn,
                       void *hint)
{
    if (len > 0 && ffn) {
        /* zmq never writes through this pointer; the cast drops const only
         * to fit its signature.  zmq does not call ffn when this fails. */
        if (zmq_msg_init_data(msg, (void *)payload, len, ffn, hint) != 0) {
            return give_back(zfail("zmq_msg_init_data"), payload, ffn, hint);
        }
        return 0;
    }
    if (zmq_msg_init_size(msg, len) != 0) {
        return give_back(zfail("zmq_msg_init_size"), payload, ffn, hint);
    }
    if (len > 0) {
        memcpy(zmq_msg_data(msg), payload, len);
    }
    return give_back(0, payload, ffn, hint); /* copied: the caller's bytes are free */
}

/* From the routing id on, every failure before the payload message exists
 * gives the payload back; once it exists, zmq_msg_close (in send_frame)
 * or the I/O thread that sent it runs the callback. */
int ps_tp_send(ps_tp_t *tp, int dest, int stream, const ps_hdr_t *h, const void *payload,
               size_t len, ps_tp_free_fn ffn, void *hint)
{
    void *s;
    zmq_msg_t msg;
    int rv;
    if (tp->is_server) {
        uint8_t id[ID_LEN];
        if (!(s = server_route(tp, dest))) {
            ps_error_set("no route to worker %d: its plane (ipc or tcp) is not known", dest);
            return give_back(PS_EINVAL, payload, ffn, hint);
        }
        routing_id(id, dest, stream);
        /* EHOSTUNREACH (ROUTER_MANDATORY) when that peer is gone. */
        if (zmq_send(s, id, sizeof id, ZMQ_SNDMORE) < 0) {
            ps_error_set("cannot send to worker %d (stream %d): %s", dest, stream,
                         zmq_strerror(zmq_errno()));
            return give_back(PS_EZMQ, payload, ffn, hint);
        }
    } else if (dest < 0 || stream < 0 || stream >= tp->streams ||
               dest * tp->streams + stream >= tp->nsock) {
        ps_error_set("no connection to server %d, stream %d", dest, stream);
        return give_back(PS_EINVAL, payload, ffn, hint);
    } else {
        s = tp->sock[dest * tp->streams + stream];
    }
    if (zmq_msg_init_size(&msg, PS_WIRE_HDR_SIZE) != 0) {
        return give_back(zfail("zmq_msg_init_size"), payload, ffn, hint);
    }
    ps_wire_encode(h, zmq_msg_data(&msg));
    if ((rv = send_frame(s, &msg, 1)) != 0) {
        return give_back(rv, payload, ffn, hint);
    }
    if ((rv = payload_msg(&msg, payload, len, ffn, hint)) != 0) {
        return rv;
    }
    if ((rv = send_frame(s, &msg, 0)) != 0) {
        return rv;
    }
    tp->st.tx_msgs++;
    tp->st.tx_bytes += PS_WIRE_HDR_SIZE + len;
    return 0;
}

/* Reads every frame of one message into frames[0..*n); frames past `cap`
 * are read and discarded so the socket stays in step. */
static int recv_all(void *s, zmq_msg_t *frames, int cap, int *n)
{
    int more = 1, k = 0;
    while (more) {
        zmq_msg_t tmp, *dst = k < cap ? &frames[k] : &tmp;
        zmq_msg_init(dst);
        if (zmq_msg_recv(dst, s, 0) < 0) {
            zmq_msg_close(dst);
            for (int i = 0; i < k && i < cap; i++) {
                zmq_msg_close(&frames[i]);
            }
            return zfail("zmq_msg_recv");
        }
        more = zmq_msg_more(dst);
        if (dst == &tmp) {
            zmq_msg_close(&tmp);
        }
        k++;
    }
    *n = k;
    return 0;
}

/* The worker rank and stream a routing id names; -1 when it names none. */
static int peer_rank(zmq_msg_t *id, int *stream)
{
    const uint8_t *p = zmq_msg_data(id);
    if (zmq_msg_size(id) != ID_LEN || p[0] != 'w' || p[5] >= PS_TP_MAX_STREAMS) {
        return -1;
    }
    uint32_t r =
        (uint32_t)p[1] | ((uint32_t)p[2] << 8) | ((uint32_t)p[3] << 16) | ((uint32_t)p[4] << 24);
    *stream = p[5];
    return r > 0x7fffffffu ? -1 : (int)r;
}

/* The rank the ZAP handler gave the frame's connection (ps_tp_auth.c
 * writes it in decimal); -1 when it has none. */
static int auth_rank(zmq_msg_t *frame)
{
    const char *uid = zmq_msg_gets(frame, "User-Id");
    char *end;
    if (!uid || uid[0] < '0' || uid[0] > '9') {
        return -1;
    }
    errno = 0;
    long r = strtol(uid, &end, 10);
    return *end != '\0' || errno != 0 || r > 0x7fffffffL ? -1 : (int)r;
}

static int take_message(ps_tp_t *tp, void *s, int from, ps_tp_msg_t *m)
{
    zmq_msg_t f[4];
    int n, rv, base = tp->is_server ? 1 : 0;
    if ((rv = recv_all(s, f, 4, &n)) != 0) {
        return rv;
    }
    if (tp->is_server) {
        m->peer = peer_rank(&f[0], &m->stream);
        /* Every frame of a connection carries its metadata; the header
         * frame is the one libzmq made from the wire. */
        m->auth_rank = tp->auth ? auth_rank(&f[n > 1 ? 1 : 0]) : PS_TP_AUTH_NONE;
    } else {
        m->peer = from / tp->streams;
        m->stream = from % tp->streams;
    }
    rv = PS_EPROTO;
    if (n != base + 2) {
        ps_error_set("message of %d frames (want %d)", n, base + 2);
    } else if ((rv = ps_wire_decode(&m->hdr, zmq_msg_data(&f[base]), zmq_msg_size(&f[base]),
                                    zmq_msg_size(&f[base + 1]))) == 0 &&
               m->peer < 0) {
        ps_error_set("unknown routing id");
        rv = PS_EPROTO;
    }
    for (int i = 0; i < n && i < 4; i++) {
        if (rv == 0 && i == base + 1) {
            continue;
        }
        zmq_msg_close(&f[i]);
    }
    if (rv != 0) {
        tp->st.rx_malformed++;
        return rv;
    }
    zmq_msg_t *held = (zmq_msg_t *)m->impl;
    zmq_msg_init(held);
    zmq_msg_move(held, &f[base + 1]);
    zmq_msg_close(&f[base + 1]);
    m->held = 1;
    m->payload = zmq_msg_data(held);
    m->len = zmq_msg_size(held);
    tp->st.rx_msgs++;
    tp->st.rx_bytes += PS_WIRE_HDR_SIZE + m->len;
    return 0;
}

int ps_tp_recv(ps_tp_t *tp, ps_tp_msg_t *m, int timeout_ms)
{
    m->held = 0;
    m->peer = -1;
    m->stream = 0;
    m->auth_rank = PS_TP_AUTH_NONE;
    for (;;) {
        /* Drain what is already queued before sleeping in zmq_poll. */
        for (int k = 0; k < tp->nsock; k++) {
            int i = (tp->next + k) % tp->nsock;
            int ev = 0;
            size_t evlen = sizeof ev;
            zmq_getsockopt(tp->sock[i], ZMQ_EVENTS, &ev, &evlen);
            if (ev & ZMQ_POLLIN) {
                tp->next = (i + 1) % tp->nsock;
                return take_message(tp, tp->sock[i], i, m);
            }
        }
        /* A stop (ps_signal) ends waits, never a poll (timeout 0): a
         * worker finishes sending its step first. */
        if (timeout_ms != 0 && ps_signal_stop_requested()) {
            return ps_signal_stopped();
        }
        int rc = zmq_poll(tp->items, tp->nsock, timeout_ms);
        if (rc < 0) {
            if (zmq_errno() == EINTR) {
                continue; /* a stop is seen above */
            }
            return zfail("zmq_poll");
        }
        if (rc == 0) {
            return PS_EAGAIN;
        }
    }
}

void ps_tp_service(ps_tp_t *tp)
{
    for (int i = 0; i < tp->nsock; i++) {
        int ev = 0;
        size_t evlen = sizeof ev;
        /* ZMQ_EVENTS makes the socket process its pending commands. */
        zmq_getsockopt(tp->sock[i], ZMQ_EVENTS, &ev, &evlen);
    }
}

void ps_tp_msg_release(ps_tp_msg_t *m)
{
    if (m->held) {
        zmq_msg_close((zmq_msg_t *)m->impl);
        m->held = 0;
    }
    m->payload = NULL;
    m->len = 0;
}

void ps_tp_msg_move(ps_tp_msg_t *dst, ps_tp_msg_t *src)
{
    dst->hdr = src->hdr;
    dst->peer = src->peer;
    dst->stream = src->stream;
    dst->auth_rank = src->auth_rank;
    dst->held = 0;
    dst->payload = NULL;
    dst->len = 0;
    if (src->held) {
        zmq_msg_t *d = (zmq_msg_t *)dst->impl;
        zmq_msg_init(d);
        zmq_msg_move(d, (zmq_msg_t *)src->impl);
        zmq_msg_close((zmq_msg_t *)src->impl);
        dst->held = 1;
        dst->payload = zmq_msg_data(d);
        dst->len = zmq_msg_size(d);
    }
    src->held = 0;
    src->payload = NULL;
    src->len = 0;
}

void ps_tp_stats(const ps_tp_t *tp, ps_tp_stats_t *st)
{
    *st = tp->st;
    st->handshakes_refused = tp->auth ? ps_tp_auth_refused(tp->auth) : 0;
}

void ps_tp_tune_malloc(void)
{
    /* Both or neither: raising only one of them measured worse. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}
