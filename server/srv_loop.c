#include "srv_loop.h"
#include "srv_register.h"

#include "ps_clock.h"
#include "ps_err.h"
#include "ps_finite.h"
#include "ps_half.h"
#include "ps_trace.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A held PUSH: the transport message that owns the payload, plus an
 * aligned copy when the payload was not float-aligned. */
typedef struct {
    ps_tp_msg_t msg;
    float *copy;
} held_push_t;

void srv_loop_release_push(void *owner)
{
    held_push_t *h = owner;
    ps_tp_msg_release(&h->msg);
    free(h->copy);
    free(h);
}

static void reply_done(void *data, void *hint)
{
    (void)data;
    srv_store_unref(hint);
}

/* While an update waits for its chunk's pull replies: a reply queued to a
 * worker that has since gone is dropped only once the socket hears of it. */
void srv_loop_service_socket(void *tp)
{
    ps_tp_service(tp);
}

const char *srv_loop_reject_name(srv_reject_t r)
{
    static const char *names[] = {"malformed", "sender",    "phase", "chunk",
                                  "step",      "duplicate", "layout"};
    return r < SRV_REJ_NREASONS ? names[r] : "?";
}

int srv_loop_init(srv_loop_t *L, const srv_loop_cfg_t *cfg)
{
    memset(L, 0, sizeof *L);
    L->cfg = *cfg;
    L->done = calloc((size_t)cfg->nworkers, 1);
    L->worker_step = calloc((size_t)cfg->nworkers, sizeof *L->worker_step);
    L->streams_seen = calloc((size_t)cfg->nworkers, sizeof *L->streams_seen);
    if (!L->done || !L->worker_step || !L->streams_seen) {
        ps_error_set("server: no memory for the state of %d workers", cfg->nworkers);
        return PS_ENOMEM;
    }
    srv_sparse_cfg_t sc = {.server = cfg->server,
                           .nservers = cfg->nservers,
                           .nworkers = cfg->nworkers,
                           .mode = cfg->mode,
                           .staleness = cfg->staleness,
                           .opt = cfg->opt,
                           .update = cfg->sparse_update,
                           .max_bytes = cfg->table_max_bytes,
                           .lr_of = cfg->lr_of,
                           .lr_arg = cfg->lr_arg,
                           .nonfinite_skip = cfg->nonfinite_skip};
    srv_sparse_init(&L->sparse, &sc);
    return 0;
}

void srv_loop_fini(srv_loop_t *L)
{
    for (size_t i = 0; L->held && i < L->store.nlocal; i++) {
        free(L->held[i].v);
    }
    free(L->held);
    L->held = NULL;
    srv_sparse_fini(&L->sparse);
    srv_store_fini(&L->store);
    free(L->done);
    free(L->worker_step);
    free(L->streams_seen);
    L->done = NULL;
    L->worker_step = NULL;
    L->streams_seen = NULL;
}

int srv_loop_connections_used(const srv_loop_t *L)
{
    int n = 0;
    for (int w = 0; w < L->cfg.nworkers; w++) {
        n += __builtin_popcount(L->streams_seen[w]);
    }
    return n;
}

uint64_t srv_loop_rejected_total(const srv_loop_t *L)
{
    uint64_t n = 0;
    for (int i = 0; i < SRV_REJ_NREASONS; i++) {
        n += L->rejected[i];
    }
    return n;
}

void srv_loop_reject(srv_loop_t *L, srv_reject_t why, int peer, const char *detail)
{
    static ps_ratelimit_t rl;
    L->rejected[why]++;
    ps_log_ratelimited(&rl, "dropped a message from peer %d (%s): %s", peer,
                       srv_loop_reject_name(why), detail);
}

/* Replies go to worker w on the stream its request came on. */
int srv_loop_send_simple(srv_loop_t *L, int w, int stream, ps_msg_type_t type, uint32_t request,
                         const char *text)
{
    ps_hdr_t h = ps_wire_hdr(type, (uint32_t)L->cfg.server);
    h.request = request;
    size_t len = text ? strlen(text) : 0;
    if (len > PS_WIRE_MAX_TEXT) {
        len = PS_WIRE_MAX_TEXT;
    }
    h.payload = len;
    return ps_tp_send(L->cfg.tp, w, stream, &h, text, len, NULL, NULL);
}

/* A pull reply straight from the chunk's weights.  The reference it takes
 * is dropped by reply_done on every path: the transport runs the callback
 * even when the reply cannot be sent (its peer gone), so a lost reply
 * cannot hold the chunk's next update back. */
static void send_chunk(srv_loop_t *L, int w, int stream, srv_chunk_t *c, uint32_t request)
{
    static ps_ratelimit_t rl;
    ps_hdr_t h = ps_wire_hdr(PS_MSG_PULL_REPLY, (uint32_t)L->cfg.server);
    h.request = request;
    h.step = c->version;
    h.chunk = c->id;
    h.offset = c->offset;
    h.count = (uint32_t)c->count;
    h.payload = c->count * sizeof(float);
    srv_store_ref(c);
    if (ps_tp_send(L->cfg.tp, w, stream, &h, c->w, h.payload, reply_done, c) != 0) {
        L->replies_lost++;
        ps_log_ratelimited(&rl, "a pull reply of chunk %u was not delivered: %s", c->id,
                           ps_error_msg());
    }
}

/* The chunk a data message names, checked against the map; NULL (and the
 * message counted) when it is not ours or its offset/count disagree. */
srv_chunk_t *srv_loop_checked_chunk(srv_loop_t *L, const ps_tp_msg_t *m, int need_payload)
{
    srv_chunk_t *c = srv_store_chunk(&L->store, m->hdr.chunk);
    char why[128];
    if (!c) {
        snprintf(why, sizeof why, "chunk %u is not on server %d", m->hdr.chunk, L->cfg.server);
    } else if (need_payload && (m->hdr.offset != c->offset || m->hdr.count != c->count)) {
        snprintf(why, sizeof why, "chunk %u: offset %llu count %u, expected %zu/%zu", m->hdr.chunk,
                 (unsigned long long)m->hdr.offset, m->hdr.count, c->offset, c->count);
        c = NULL;
    } else {
        return c;
    }
    srv_loop_reject(L, SRV_REJ_CHUNK, m->peer, why);
    return NULL;
}

/* Answer, and forget, the held pulls chunk c's version now satisfies. */
static void answer_pulls(srv_loop_t *L, srv_chunk_t *c)
{
    srv_pulls_t *p = &L->held[c - L->store.chunks];
    size_t keep = 0;
    for (size_t i = 0; i < p->n; i++) {
        srv_held_pull_t h = p->v[i];
        if (c->version >= h.want) {
            send_chunk(L, h.worker, h.stream, c, h.request);
        } else {
            p->v[keep++] = h;
        }
    }
    p->n = keep;
}

/* Hold a PULL until chunk c reaches the version it wants.  One per
 * (worker, stream): a stream asks for a chunk once at a time, so a newer
 * PULL on it replaces the older, and no PULL, whatever it claims, can
 * displace another connection's.  At most nworkers x PS_TP_MAX_STREAMS. */
static int hold_pull(srv_loop_t *L, srv_chunk_t *c, const ps_tp_msg_t *m)
{
    srv_pulls_t *p = &L->held[c - L->store.chunks];
    srv_held_pull_t h = {
        .want = m->hdr.step, .request = m->hdr.request, .worker = m->peer, .stream = m->stream};
    for (size_t i = 0; i < p->n; i++) {
        if (p->v[i].worker == h.worker && p->v[i].stream == h.stream) {
            p->v[i] = h;
            return 0;
        }
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 4;
        srv_held_pull_t *v = realloc(p->v, cap * sizeof *v);
        if (!v) {
            ps_error_set("server: no memory to hold a pull of chunk %u", c->id);
            return PS_ENOMEM;
        }
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = h;
    return 0;
}

/* Sync mode: once every local chunk has reached a checkpoint step, write
 * the checkpoint, before the replies that let the workers go past it.
 * Only the update that brings chunk c to that step can complete the set,
 * so the scan runs then and not after every update. */
static void maybe_checkpoint(srv_loop_t *L, const srv_chunk_t *c)
{
    if (!L->cfg.ckpt_dir || L->cfg.ckpt_every == 0 || (c && c->version != L->ckpt_next)) {
        return;
    }
    for (size_t i = 0; i < L->store.nlocal; i++) {
        if (L->store.chunks[i].version != L->ckpt_next) {
            return;
        }
    }
    /* The tables too: a table's step can complete after the chunks' (its
     * pushes travel on their own stream), and then that completes the set. */
    for (int i = 0; i < srv_sparse_ntables(&L->sparse); i++) {
        if (L->sparse.t[i].version != L->ckpt_next) {
            return;
        }
    }
    int rv = srv_ckpt_write(&L->store, &L->sparse, L->cfg.ckpt_dir, L->ckpt_next, L->cfg.nservers,
                            L->cfg.settings);
    if (rv != 0) {
        /* Once more, for a passing fault (an NFS hiccup); a run that was
         * asked for checkpoints must not go on without them. */
        ps_log_error("checkpoint of step %llu failed: %s; trying once more",
                     (unsigned long long)L->ckpt_next, ps_error_msg());
        rv = srv_ckpt_write(&L->store, &L->sparse, L->cfg.ckpt_dir, L->ckpt_next, L->cfg.nservers,
                            L->cfg.settings);
    }
    if (rv != 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", ps_error_msg());
        ps_error_set("checkpoint of step %llu in --checkpoint-dir %s failed twice: %s (the job "
                     "ends; the newest whole checkpoint before it is kept for --resume)",
                     (unsigned long long)L->ckpt_next, L->cfg.ckpt_dir, why);
        L->failed = rv;
    }
    L->ckpt_next += L->cfg.ckpt_every;
}

void srv_loop_checkpoint_due(srv_loop_t *L)
{
    maybe_checkpoint(L, NULL);
}

/* A chunk moved to a new version: checkpoint if due, then release the
 * pulls waiting for it. */
static void after_update(srv_loop_t *L, srv_chunk_t *c)
{
    if (c->version > L->max_version) {
        L->max_version = c->version;
    }
    maybe_checkpoint(L, c);
    answer_pulls(L, c);
}

/* The gradient as float32: zmq's buffer itself when it is float-aligned
 * float32, else a copy (misaligned, or 16-bit from --compress). */
static float *widen(const ps_tp_msg_t *m)
{
    uint32_t n = m->hdr.count;
    float *out = malloc((size_t)n * sizeof(float));
    if (!out) {
        return NULL;
    }
    if (m->hdr.flags & PS_FLAG_F16) {
        ps_f16_to_f32(m->payload, out, n);
    } else if (m->hdr.flags & PS_FLAG_BF16) {
        ps_bf16_to_f32(m->payload, out, n);
    } else {
        memcpy(out, m->payload, m->len);
    }
    return out;
}

static held_push_t *hold(ps_tp_msg_t *m, const float **grad)
{
    held_push_t *h = calloc(1, sizeof *h);
    if (!h) {
        return NULL;
    }
    ps_tp_msg_move(&h->msg, m);
    if ((h->msg.hdr.flags & PS_FLAG_HALF) ||
        ((uintptr_t)h->msg.payload & (sizeof(float) - 1)) != 0) {
        if (!(h->copy = widen(&h->msg))) {
            srv_loop_release_push(h);
            return NULL;
        }
    }
    *grad = h->copy ? h->copy : (const float *)(const void *)h->msg.payload;
    return h;
}

/* A push whose gradient is not finite: drop the step, or end the job. */
static int nonfinite_push(srv_loop_t *L, srv_chunk_t *c, const ps_tp_msg_t *m, size_t at)
{
    if (!L->cfg.nonfinite_skip && !(m->hdr.flags & PS_FLAG_SKIP)) {
        int t = ps_layout_tensor_at(L->store.layout, c->offset + at);
        ps_error_set("non-finite gradient from worker %d (host %s) in %s at step %llu "
                     "(--on-nonfinite abort)",
                     m->peer, L->cfg.worker_hosts ? L->cfg.worker_hosts[m->peer] : "?",
                     t >= 0 ? L->store.layout->t[t].name : "?",
                     (unsigned long long)m->hdr.step + 1);
        return PS_ERANGE;
    }
    int rv = srv_store_push_skip(&L->store, c, m->peer, m->hdr.step, m->hdr.base);
    if (rv == PS_ETIMEDOUT) {
        return rv; /* a held later step could not be applied (ssp) */
    }
    if (rv < 0) {
        srv_loop_reject(L, rv == PS_ERANGE ? SRV_REJ_STEP : SRV_REJ_DUPLICATE, m->peer,
                        ps_error_msg());
        return 0;
    }
    L->pushes++;
    if (rv > 0) {
        after_update(L, c);
    }
    return 0;
}

static int handle_push(srv_loop_t *L, ps_tp_msg_t *m)
{
    srv_chunk_t *c = srv_loop_checked_chunk(L, m, 1);
    if (!c) {
        return 0;
    }
    const float *grad;
    if (m->hdr.flags & PS_FLAG_SKIP) {
        return nonfinite_push(L, c, m, 0);
    }
    held_push_t *h = hold(m, &grad);
    if (!h) {
        return PS_ENOMEM;
    }
    size_t bad = ps_first_nonfinite(grad, 0, c->count);
    if (bad < c->count) {
        srv_loop_release_push(h);
        return nonfinite_push(L, c, m, bad);
    }
    double t0 = ps_clock_now();
    int64_t t0_us = ps_trace_on() ? ps_trace_now() : 0;
    uint64_t step = m->hdr.step;
    int rv = srv_store_push(&L->store, c, m->peer, step, m->hdr.base, m->hdr.samples, grad, h);
    if (rv == PS_ETIMEDOUT) {
        return rv; /* the store holds or released h; the detail names the chunk */
    }
    if (rv < 0) {
        srv_loop_reject(L, rv == PS_ERANGE ? SRV_REJ_STEP : SRV_REJ_DUPLICATE, m->peer,
                        ps_error_msg());
        srv_loop_release_push(h);
        return 0;
    }
    L->pushes++;
    if (step + 1 > L->worker_step[m->peer]) {
        L->worker_step[m->peer] = step + 1;
    }
    if (rv > 0) {
        L->apply_s += ps_clock_now() - t0;
        ps_trace_event("server apply", t0_us, (int64_t)step + 1);
        after_update(L, c);
    }
    return 0;
}

static int handle_pull(srv_loop_t *L, ps_tp_msg_t *m)
{
    srv_chunk_t *c = srv_loop_checked_chunk(L, m, 0);
    if (!c) {
        return 0;
    }
    L->pulls++;
    if (c->version >= m->hdr.step) {
        send_chunk(L, m->peer, m->stream, c, m->hdr.request);
        return 0;
    }
    return hold_pull(L, c, m);
}

static void handle_stats(srv_loop_t *L, ps_tp_msg_t *m)
{
    uint8_t buf[PS_WIRE_STATS_BYTES];
    ps_wire_stats_t st = {.staleness_max = L->store.stale_max,
                          .staleness_sum = L->store.stale_sum,
                          .applied = L->store.stale_n,
                          .rejected = srv_loop_rejected_total(L),
                          .version = L->max_version,
                          .apply_us = (uint64_t)(L->apply_s * 1e6)};
    ps_wire_stats_encode(&st, buf);
    ps_hdr_t h = ps_wire_hdr(PS_MSG_STATS_REPLY, (uint32_t)L->cfg.server);
    h.request = m->hdr.request;
    h.payload = sizeof buf;
    ps_tp_send(L->cfg.tp, m->peer, m->stream, &h, buf, sizeof buf, NULL, NULL);
}

/* Async: say how far the others are when a worker finishes, which shows
 * whether fast workers were held back. */
static void note_shutdown(srv_loop_t *L, int w)
{
    char line[512];
    size_t used = 0;
    for (int i = 0; i < L->cfg.nworkers && used < sizeof line; i++) {
        used += (size_t)snprintf(line + used, sizeof line - used, "%s%d:%llu", i ? " " : "", i,
                                 (unsigned long long)L->worker_step[i]);
    }
    if (L->cfg.mode == PS_MODE_ASYNC) {
        ps_log_info("worker %d finished; steps pushed per worker: %s", w, line);
    } else {
        ps_log_debug("worker %d finished; steps pushed per worker: %s", w, line);
    }
}

static int dispatch_train(srv_loop_t *L, ps_tp_msg_t *m)
{
    switch (m->hdr.type) {
    case PS_MSG_PUSH: return handle_push(L, m);
    case PS_MSG_PULL: return handle_pull(L, m);
    case PS_MSG_SHUTDOWN:
        if (!L->done[m->peer]) {
            L->done[m->peer] = 1;
            L->ndone++;
            note_shutdown(L, m->peer);
        }
        return 0;
    case PS_MSG_STATS: handle_stats(L, m); return 0;
    case PS_MSG_ROWS_PUSH: return srv_sparse_handle_push(L, m);
    case PS_MSG_ROWS_PULL: return srv_sparse_handle_pull(L, m);
    case PS_MSG_TABLES:
        srv_sparse_handle_tables(L, m); /* a repeat is harmless; a different one is refused */
        return L->failed;
    case PS_MSG_REGISTER:
        srv_register_handle(L, m); /* a repeat is harmless; a different one is refused */
        return 0;
    default: srv_loop_reject(L, SRV_REJ_PHASE, m->peer, ps_wire_type_name(m->hdr.type)); return 0;
    }
}

/* Whether the message comes from the worker it names: a rank of the job,
 * the header's sender, the rank whose key the connection proved (the
 * routing id is the client's own choice; without authentication it is all
 * there is) and one of the streams that worker opened.  Else why not. */
static int sender_ok(const srv_loop_t *L, const ps_tp_msg_t *m, char *why, size_t cap)
{
    int w = m->peer;
    if (w >= L->cfg.nworkers || m->hdr.sender != (uint32_t)w) {
        snprintf(why, cap, "header says sender %u", m->hdr.sender);
    } else if (m->auth_rank != PS_TP_AUTH_NONE && m->auth_rank < 0) {
        snprintf(why, cap, "routing id says worker %d, the connection has no rank", w);
    } else if (m->auth_rank != PS_TP_AUTH_NONE && m->auth_rank != w) {
        snprintf(why, cap, "routing id says worker %d, the key is worker %d's", w, m->auth_rank);
    } else if (m->stream >=
               (L->cfg.worker_streams ? L->cfg.worker_streams[w] : PS_TP_MAX_STREAMS)) {
        snprintf(why, cap, "stream %d, but worker %d opened %d", m->stream, w,
                 L->cfg.worker_streams[w]);
    } else {
        return 1;
    }
    return 0;
}

/* Receive one message and hand it on; a malformed one is counted here.
 * The timeout runs from the last message a worker got through, so a
 * stranger's garbage cannot keep a silent worker from being named. */
static int step_once(srv_loop_t *L, int (*dispatch)(srv_loop_t *, ps_tp_msg_t *))
{
    ps_tp_msg_t m;
    double t0 = ps_clock_now();
    if (L->last_ok == 0) {
        L->last_ok = t0;
    }
    double left_ms = (L->last_ok + L->cfg.timeout_ms / 1000.0 - t0) * 1000.0;
    if (left_ms <= 0) {
        return PS_EAGAIN;
    }
    int rv = ps_tp_recv(L->cfg.tp, &m, (int)left_ms + 1);
    double t1 = ps_clock_now();
    L->wait_s += t1 - t0;
    if (rv == PS_EPROTO) {
        srv_loop_reject(L, SRV_REJ_MALFORMED, m.peer, ps_error_msg());
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    char why[128];
    if (!sender_ok(L, &m, why, sizeof why)) {
        srv_loop_reject(L, SRV_REJ_SENDER, m.peer, why);
        ps_tp_msg_release(&m);
        return 0;
    }
    L->last_ok = t1;
    L->streams_seen[m.peer] |= 1u << m.stream;
    rv = dispatch(L, &m);
    ps_tp_msg_release(&m);
    L->busy_s += ps_clock_now() - t1;
    return rv;
}

int srv_loop_setup(srv_loop_t *L)
{
    int rv;
    while (!L->registered || !L->sparse.declared || !srv_store_all_initialized(&L->store) ||
           L->inits_seen < L->store.nlocal) {
        rv = step_once(L, srv_register_dispatch);
        if (rv == 0 && L->failed) {
            return L->failed; /* its message is set where it happened */
        }
        if (rv == PS_EAGAIN) {
            ps_error_set("worker 0 (host %s) did not register the model within %d s",
                         L->cfg.worker_hosts ? L->cfg.worker_hosts[0] : "?",
                         L->cfg.timeout_ms / 1000);
            return PS_ETIMEDOUT;
        }
        if (rv != 0) {
            return rv;
        }
    }
    return srv_loop_send_simple(L, 0, 0, PS_MSG_ACK, 0, NULL);
}

void srv_loop_drain(srv_loop_t *L, int quiet_ms, int max_ms)
{
    double t0 = ps_clock_now(), last = t0;
    while (L->registered && !L->failed) {
        double now = ps_clock_now();
        if ((now - last) * 1000.0 >= quiet_ms || (now - t0) * 1000.0 >= max_ms) {
            return;
        }
        ps_tp_msg_t m;
        char why[128];
        int rv = ps_tp_recv(L->cfg.tp, &m, 0); /* a poll: a stop does not end it */
        if (rv == PS_EAGAIN || rv == PS_EPROTO) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (rv != 0) {
            return;
        }
        last = now;
        rv = sender_ok(L, &m, why, sizeof why) ? dispatch_train(L, &m) : 0;
        ps_tp_msg_release(&m);
        if (rv != 0) {
            return;
        }
    }
}

void srv_loop_versions(const srv_loop_t *L, uint64_t *lo, uint64_t *hi)
{
    *lo = UINT64_MAX;
    *hi = 0;
    for (size_t i = 0; i < L->store.nlocal; i++) {
        uint64_t v = L->store.chunks[i].version;
        *lo = v < *lo ? v : *lo;
        *hi = v > *hi ? v : *hi;
    }
    for (int i = 0; i < srv_sparse_ntables(&L->sparse); i++) {
        uint64_t v = L->sparse.t[i].version;
        *lo = v < *lo ? v : *lo;
        *hi = v > *hi ? v : *hi;
    }
}

/* Name the workers the server is waiting for. */
static void describe_missing(srv_loop_t *L, char *out, size_t cap)
{
    int ranks[16], n = 0;
    srv_chunk_t *c = NULL;
    for (size_t i = 0; i < L->store.nlocal && !c; i++) {
        srv_chunk_t *k = &L->store.chunks[i];
        if (L->cfg.mode != PS_MODE_ASYNC && srv_store_arrived(&L->store, k, k->version) > 0) {
            c = k;
        }
    }
    if (c) {
        n = srv_store_missing(&L->store, c, ranks, 16);
    } else {
        for (int w = 0; w < L->cfg.nworkers; w++) {
            if (!L->done[w] && n < 16) {
                ranks[n++] = w;
            }
        }
    }
    size_t used = (size_t)snprintf(out, cap, "no message from worker");
    for (int i = 0; i < n && i < 16 && used < cap; i++) {
        used += (size_t)snprintf(out + used, cap - used, "%s %d (host %s)", i ? "," : "", ranks[i],
                                 L->cfg.worker_hosts ? L->cfg.worker_hosts[ranks[i]] : "?");
    }
}

int srv_loop_train(srv_loop_t *L)
{
    while (L->ndone < L->cfg.nworkers) {
        int rv = step_once(L, dispatch_train);
        if (rv == 0 && L->failed) {
            rv = L->failed; /* its message is set where it happened */
        }
        if (rv == PS_EAGAIN) {
            char who[600];
            describe_missing(L, who, sizeof who);
            ps_error_set("%s within --timeout %d s", who, L->cfg.timeout_ms / 1000);
            return PS_ETIMEDOUT;
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}
