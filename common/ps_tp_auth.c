#include "ps_tp_auth.h"

#include "ps_err.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_KEYS 65536

struct ps_tp_auth {
    void *zap;     /* REP on inproc://zeromq.zap.01 */
    void *monitor; /* PAIR receiving the server socket's handshake events */
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    uint8_t (*keys)[32];
    int nkeys;
    atomic_uint_fast64_t refused;
};

/* The rank whose public key this is; -1 when it is not on the list. */
static int key_rank(ps_tp_auth_t *a, const uint8_t *key, size_t len)
{
    int rank = -1;
    if (len != 32) {
        return -1;
    }
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < a->nkeys && rank < 0; i++) {
        if (memcmp(a->keys[i], key, 32) == 0) {
            rank = i;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return rank;
}

/* One ZAP exchange (RFC 27): version, request id, domain, address,
 * identity, mechanism, credentials -> version, request id, status code,
 * status text, user id, metadata.  The user id is the key's rank in
 * decimal: libzmq attaches it to every message of the connection as the
 * "User-Id" property, which is how the transport knows who sent what. */
static int answer_zap(ps_tp_auth_t *a)
{
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], a->zap, 0) < 0) {
            zmq_msg_close(&f[n]);
            break;
        }
        more = zmq_msg_more(&f[n]);
        n++;
    }
    if (n < 6) {
        for (int i = 0; i < n; i++) {
            zmq_msg_close(&f[i]);
        }
        return -1;
    }
    int rank = -1;
    if (n >= 7 && zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0) {
        rank = key_rank(a, zmq_msg_data(&f[6]), zmq_msg_size(&f[6]));
    }
    int ok = rank >= 0;
    char user[16] = "";
    if (ok) {
        snprintf(user, sizeof user, "%d", rank);
    }
    zmq_send(a->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(a->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    zmq_send(a->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(a->zap, ok ? "OK" : "key not in this job", ok ? 2 : 19, ZMQ_SNDMORE);
    zmq_send(a->zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(a->zap, "", 0, 0);
    for (int i = 0; i < n; i++) {
        zmq_msg_close(&f[i]);
    }
    return 0;
}

/* A monitor event is [u16 event, u32 value][endpoint]. */
static int take_event(ps_tp_auth_t *a)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    if (zmq_msg_recv(&ev, a->monitor, 0) < 0) {
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
        return -1;
    }
    if (zmq_msg_more(&ev)) {
        zmq_msg_recv(&addr, a->monitor, 0);
    }
    if (zmq_msg_size(&ev) >= 2) {
        const uint8_t *d = zmq_msg_data(&ev);
        uint16_t e = (uint16_t)(d[0] | (d[1] << 8));
        if (e & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)) {
            atomic_fetch_add(&a->refused, 1);
        }
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
    return 0;
}

static void *run(void *arg)
{
    ps_tp_auth_t *a = arg;
    zmq_pollitem_t items[2] = {{a->zap, 0, ZMQ_POLLIN, 0}, {a->monitor, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0) {
            if (zmq_errno() == EINTR) {
                continue;
            }
            break; /* ETERM: the context is shutting down */
        }
        if ((items[0].revents & ZMQ_POLLIN) && answer_zap(a) < 0 && zmq_errno() == ETERM) {
            break;
        }
        if ((items[1].revents & ZMQ_POLLIN) && take_event(a) < 0 && zmq_errno() == ETERM) {
            break;
        }
    }
    zmq_close(a->zap);
    zmq_close(a->monitor);
    return NULL;
}

int ps_tp_auth_start(ps_tp_auth_t **out, void *ctx, void *sock)
{
    ps_tp_auth_t *a = calloc(1, sizeof *a);
    char mon_ep[64];
    int linger = 0;
    if (!a) {
        return PS_ENOMEM;
    }
    pthread_mutex_init(&a->lock, NULL);
    atomic_init(&a->refused, 0);
    snprintf(mon_ep, sizeof mon_ep, "inproc://ps-monitor-%p", (void *)a);
    a->zap = zmq_socket(ctx, ZMQ_REP);
    a->monitor = zmq_socket(ctx, ZMQ_PAIR);
    if (!a->zap || !a->monitor || zmq_bind(a->zap, "inproc://zeromq.zap.01") != 0 ||
        zmq_socket_monitor(sock, mon_ep,
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0 ||
        zmq_connect(a->monitor, mon_ep) != 0) {
        ps_error_set("cannot start the CurveZMQ handler: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    zmq_setsockopt(a->zap, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(a->monitor, ZMQ_LINGER, &linger, sizeof linger);
    if (pthread_create(&a->thread, NULL, run, a) != 0) {
        ps_error_set("cannot start the CurveZMQ handler thread");
        goto fail;
    }
    a->running = 1;
    *out = a;
    return 0;
fail:
    if (a->zap) {
        zmq_close(a->zap);
    }
    if (a->monitor) {
        zmq_close(a->monitor);
    }
    pthread_mutex_destroy(&a->lock);
    free(a);
    return PS_EZMQ;
}

static int cmp_key(const void *x, const void *y)
{
    return memcmp(x, y, 32);
}

/* A key held by two ranks would let either pass for the other. */
static int check_unique(const uint8_t (*keys)[32], int n)
{
    uint8_t (*sorted)[32] = malloc(((size_t)n + 1) * sizeof *sorted);
    int dup = 0;
    if (!sorted) {
        ps_error_set("no memory to check %d CurveZMQ keys", n);
        return PS_ENOMEM;
    }
    memcpy(sorted, keys, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_key);
    for (int i = 1; i < n && !dup; i++) {
        dup = memcmp(sorted[i - 1], sorted[i], 32) == 0;
    }
    free(sorted);
    if (dup) {
        ps_error_set("two ranks have the same CurveZMQ public key");
        return PS_EINVAL;
    }
    return 0;
}

int ps_tp_auth_allow(ps_tp_auth_t *a, const char (*z85)[41], int n)
{
    int rv;
    if (n < 0 || n > MAX_KEYS) {
        ps_error_set("%d CurveZMQ keys: want 0..%d", n, MAX_KEYS);
        return PS_EINVAL;
    }
    uint8_t (*keys)[32] = calloc((size_t)n + 1, sizeof *keys);
    if (!keys) {
        return PS_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        if (strlen(z85[i]) != 40 || !zmq_z85_decode(keys[i], z85[i])) {
            free(keys);
            ps_error_set("bad CurveZMQ public key '%.40s' (rank %d)", z85[i], i);
            return PS_EINVAL;
        }
    }
    if ((rv = check_unique((const uint8_t(*)[32])keys, n)) != 0) {
        free(keys);
        return rv;
    }
    pthread_mutex_lock(&a->lock);
    free(a->keys);
    a->keys = keys;
    a->nkeys = n;
    pthread_mutex_unlock(&a->lock);
    return 0;
}

uint64_t ps_tp_auth_refused(const ps_tp_auth_t *a)
{
    return atomic_load(&((ps_tp_auth_t *)a)->refused);
}

void ps_tp_auth_stop(ps_tp_auth_t **ap)
{
    ps_tp_auth_t *a = *ap;
    if (!a) {
        return;
    }
    if (a->running) {
        pthread_join(a->thread, NULL);
    }
    pthread_mutex_destroy(&a->lock);
    free(a->keys);
    free(a);
    *ap = NULL;
}
