#include "ps_tp_auth.h"

#include "ps_err.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_KEYS 65536
#define MAX_SOCKS 2

struct ps_tp_auth {
    void *zap;                /* REP on inproc://zeromq.zap.01 */
    void *monitor[MAX_SOCKS]; /* PAIRs receiving the server sockets' handshake events */
    int nmon;
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    uint8_t (*keys)[32];
    int nkeys;
    int64_t *pids; /* by rank: the workers on this host, 0 elsewhere */
    int npids;
    uid_t uid; /* ours: an ipc peer must be the same user */
    unsigned long ipc_refused_logged;
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

/* The rank whose process this is; -1 when none. */
static int pid_rank(ps_tp_auth_t *a, int64_t pid)
{
    int rank = -1;
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < a->npids && rank < 0 && pid > 0; i++) {
        if (a->pids[i] == pid) {
            rank = i;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return rank;
}

/* The last `n` ':'-separated decimal fields of `s` into v[0..n); -1 when
 * `s` does not end so. */
static int tail_fields(const char *s, size_t len, long long *v, int n)
{
    size_t end = len;
    for (int k = n - 1; k >= 0; k--) {
        size_t start = end;
        long long x = 0;
        while (start > 0 && s[start - 1] >= '0' && s[start - 1] <= '9' && end - start < 18) {
            start--;
        }
        if (start == end || start == 0 || s[start - 1] != ':') {
            return -1;
        }
        for (size_t i = start; i < end; i++) {
            x = x * 10 + (s[i] - '0');
        }
        v[k] = x;
        end = start - 1;
    }
    return 0;
}

/* An ipc peer: libzmq (SO_PEERCRED) appends ":uid:gid:pid" of the process
 * that connected to the peer address.  Accepted as the rank whose pid it
 * is, when it runs as our user. */
static int ipc_rank(ps_tp_auth_t *a, const zmq_msg_t *addr)
{
    long long cred[3]; /* uid, gid, pid */
    const char *s = zmq_msg_data((zmq_msg_t *)addr);
    size_t len = zmq_msg_size((zmq_msg_t *)addr);
    int rank = -1;
    const char *why = "not a rank of this job";
    if (tail_fields(s, len, cred, 3) != 0) {
        why = "no peer credentials (a libzmq without SO_PEERCRED? use --transport tcp)";
        cred[0] = cred[2] = -1;
    } else if (cred[0] != (long long)a->uid) {
        why = "another user";
    } else {
        rank = pid_rank(a, cred[2]);
    }
    if (rank < 0 && a->ipc_refused_logged++ < 3) {
        ps_log_info("refused an ipc connection from uid %lld pid %lld: %s", cred[0], cred[2], why);
    }
    return rank;
}

static int is_frame(zmq_msg_t *f, const char *text)
{
    size_t n = strlen(text);
    return zmq_msg_size(f) == n && memcmp(zmq_msg_data(f), text, n) == 0;
}

/* One ZAP exchange (RFC 27): version, request id, domain, address,
 * identity, mechanism, credentials -> version, request id, status code,
 * status text, user id, metadata.  The user id is the rank in decimal
 * (of the CURVE key, or of the ipc peer's process): libzmq attaches it to
 * every message of the connection as the "User-Id" property, which is how
 * the transport knows who sent what. */
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
    if (n >= 7 && is_frame(&f[5], "CURVE")) {
        rank = key_rank(a, zmq_msg_data(&f[6]), zmq_msg_size(&f[6]));
    } else if (is_frame(&f[5], "NULL") && is_frame(&f[2], PS_TP_AUTH_IPC_DOMAIN)) {
        rank = ipc_rank(a, &f[3]);
    }
    int ok = rank >= 0;
    char user[16] = "";
    if (ok) {
        snprintf(user, sizeof user, "%d", rank);
    }
    zmq_send(a->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(a->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    zmq_send(a->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(a->zap, ok ? "OK" : "not in this job", ok ? 2 : 15, ZMQ_SNDMORE);
    zmq_send(a->zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(a->zap, "", 0, 0);
    for (int i = 0; i < n; i++) {
        zmq_msg_close(&f[i]);
    }
    return 0;
}

/* A monitor event is [u16 event, u32 value][endpoint]. */
static int take_event(ps_tp_auth_t *a, void *monitor)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    if (zmq_msg_recv(&ev, monitor, 0) < 0) {
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
        return -1;
    }
    if (zmq_msg_more(&ev)) {
        zmq_msg_recv(&addr, monitor, 0);
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

static void close_all(ps_tp_auth_t *a)
{
    if (a->zap) {
        zmq_close(a->zap);
    }
    for (int i = 0; i < MAX_SOCKS; i++) {
        if (a->monitor[i]) {
            zmq_close(a->monitor[i]);
        }
    }
}

static void *run(void *arg)
{
    ps_tp_auth_t *a = arg;
    zmq_pollitem_t items[1 + MAX_SOCKS] = {{a->zap, 0, ZMQ_POLLIN, 0}};
    for (int i = 0; i < a->nmon; i++) {
        items[1 + i] = (zmq_pollitem_t){a->monitor[i], 0, ZMQ_POLLIN, 0};
    }
    for (int stop = 0; !stop;) {
        if (zmq_poll(items, 1 + a->nmon, -1) < 0) {
            if (zmq_errno() == EINTR) {
                continue;
            }
            break; /* ETERM: the context is shutting down */
        }
        if ((items[0].revents & ZMQ_POLLIN) && answer_zap(a) < 0 && zmq_errno() == ETERM) {
            break;
        }
        for (int i = 0; i < a->nmon && !stop; i++) {
            stop = (items[1 + i].revents & ZMQ_POLLIN) && take_event(a, a->monitor[i]) < 0 &&
                   zmq_errno() == ETERM;
        }
    }
    close_all(a);
    return NULL;
}

/* A PAIR that receives socket `sock`'s handshake failures. */
static int watch(ps_tp_auth_t *a, void *ctx, void *sock, int i)
{
    char ep[80];
    int linger = 0;
    snprintf(ep, sizeof ep, "inproc://ps-monitor-%p-%d", (void *)a, i);
    a->monitor[i] = zmq_socket(ctx, ZMQ_PAIR);
    if (!a->monitor[i] ||
        zmq_socket_monitor(sock, ep,
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0 ||
        zmq_connect(a->monitor[i], ep) != 0) {
        return -1;
    }
    zmq_setsockopt(a->monitor[i], ZMQ_LINGER, &linger, sizeof linger);
    return 0;
}

int ps_tp_auth_start(ps_tp_auth_t **out, void *ctx, void *const *socks, int nsocks)
{
    ps_tp_auth_t *a = calloc(1, sizeof *a);
    int linger = 0, rv = 0;
    if (!a) {
        return PS_ENOMEM;
    }
    if (nsocks < 1 || nsocks > MAX_SOCKS) {
        free(a);
        ps_error_set("the ZAP handler watches 1 to %d sockets, not %d", MAX_SOCKS, nsocks);
        return PS_EINVAL;
    }
    pthread_mutex_init(&a->lock, NULL);
    atomic_init(&a->refused, 0);
    a->uid = geteuid();
    a->nmon = nsocks;
    a->zap = zmq_socket(ctx, ZMQ_REP);
    rv = !a->zap || zmq_bind(a->zap, "inproc://zeromq.zap.01") != 0 ? -1 : 0;
    for (int i = 0; i < nsocks && rv == 0; i++) {
        rv = watch(a, ctx, socks[i], i);
    }
    if (rv != 0) {
        ps_error_set("cannot start the data port's ZAP handler: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    zmq_setsockopt(a->zap, ZMQ_LINGER, &linger, sizeof linger);
    if (pthread_create(&a->thread, NULL, run, a) != 0) {
        ps_error_set("cannot start the data port's ZAP handler thread");
        goto fail;
    }
    a->running = 1;
    *out = a;
    return 0;
fail:
    close_all(a);
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
    uint8_t(*sorted)[32] = malloc(((size_t)n + 1) * sizeof *sorted);
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
    uint8_t(*keys)[32] = calloc((size_t)n + 1, sizeof *keys);
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

static int cmp_pid(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* One process cannot be two ranks. */
static int check_unique_pids(const int64_t *pids, int n)
{
    int64_t *sorted = malloc(((size_t)n + 1) * sizeof *sorted);
    int dup = 0;
    if (!sorted) {
        return PS_ENOMEM;
    }
    memcpy(sorted, pids, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_pid);
    for (int i = 1; i < n && !dup; i++) {
        dup = sorted[i] > 0 && sorted[i - 1] == sorted[i];
    }
    free(sorted);
    if (dup) {
        ps_error_set("two workers on this host have one process id");
        return PS_EINVAL;
    }
    return 0;
}

int ps_tp_auth_allow_pids(ps_tp_auth_t *a, const int64_t *pids, int n)
{
    int rv;
    if (n < 0 || n > MAX_KEYS) {
        ps_error_set("%d worker processes: want 0..%d", n, MAX_KEYS);
        return PS_EINVAL;
    }
    if ((rv = check_unique_pids(pids, n)) != 0) {
        return rv;
    }
    int64_t *copy = calloc((size_t)n + 1, sizeof *copy);
    if (!copy) {
        return PS_ENOMEM;
    }
    memcpy(copy, pids, (size_t)n * sizeof *copy);
    pthread_mutex_lock(&a->lock);
    free(a->pids);
    a->pids = copy;
    a->npids = n;
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
    free(a->pids);
    free(a);
    *ap = NULL;
}
