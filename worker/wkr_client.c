#include "wkr_client.h"

#include "ps_clock.h"
#include "ps_count.h"
#include "ps_err.h"
#include "ps_half.h"
#include "ps.h"
#include "ps_shm.h"
#include "ps_transport.h"
#include "wkr_arrays.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per chunk, this step. */
typedef struct {
    uint8_t pushed, requested, received;
    int unfinal;         /* its tensors whose gradient is not final yet */
    int undelivered;     /* its tensors the reply is not written into yet */
    uint64_t version;    /* the oldest reply version the request accepts */
    ps_tp_msg_t held;    /* the reply, until every tensor took its part */
    const uint8_t *data; /* its weights: in held, or in the server's shared memory */
} chunk_state_t;

/* Per tensor, this step. */
typedef struct {
    uint8_t final, wanted;
    size_t missing; /* chunks not yet written into a wanted tensor */
} tensor_state_t;

struct wkr_client {
    wkr_client_cfg_t cfg;
    const ps_layout_t *layout;
    ps_chunkmap_t map;
    wkr_arrays_t arrays;
    ps_tp_t *tp;
    uint64_t step;
    uint64_t want_step; /* the step whose weights are being pulled (messages) */
    int skip;           /* flag this step's pushes PS_FLAG_SKIP */
    int finished;       /* finish_step ran: only begin_step is valid */
    int said_wide;      /* logged that a --compress chunk went as float32 */
    chunk_state_t *ck;
    tensor_state_t *ts;
    uint64_t *have;  /* per chunk: version of the weights in the arrays */
    uint16_t *stage; /* --compress: the 16-bit gradients in flight */
    size_t nrequested, nreceived;
    int npulled;         /* wanted tensors with every chunk written */
    ps_count_t inflight; /* zero-copy pushes not yet released by zmq */
    wkr_client_stats_t st;
    wkr_client_other_fn other; /* row replies (ps_rows.c) */
    void *other_arg;
    ps_shm_t **shm; /* [nservers] the server's segment; NULL: sockets only */
};

static int ntensors_of(const wkr_client_t *c, size_t k)
{
    return c->arrays.tlast[k] - c->arrays.tfirst[k] + 1;
}

int wkr_client_new(wkr_client_t **out, const wkr_client_cfg_t *cfg)
{
    wkr_client_t *c = calloc(1, sizeof *c);
    int rv;
    if (!c) {
        ps_error_set("no memory for the data-plane client (%zu bytes)", sizeof *c);
        return PS_ENOMEM;
    }
    c->cfg = *cfg;
    c->layout = cfg->layout;
    c->cfg.streams = cfg->streams ? cfg->streams : 1;
    ps_count_init(&c->inflight);
    if ((rv = ps_chunkmap_init(&c->map, c->layout->total, cfg->chunk_elems, cfg->nservers)) != 0 ||
        (rv = wkr_arrays_init(&c->arrays, c->layout, &c->map)) != 0) {
        goto fail;
    }
    c->ck = calloc(c->map.n, sizeof *c->ck);
    c->ts = calloc((size_t)c->layout->n, sizeof *c->ts);
    c->have = calloc(c->map.n, sizeof *c->have);
    c->shm = calloc((size_t)cfg->nservers + 1, sizeof *c->shm);
    c->stage = cfg->compress ? malloc(c->layout->total * sizeof *c->stage) : NULL;
    if (!c->ck || !c->ts || !c->have || !c->shm || (cfg->compress && !c->stage)) {
        rv = PS_ENOMEM;
        goto fail;
    }
    wkr_client_begin_step(c, 0);
    if ((rv = ps_tp_client_new(&c->tp, cfg->rank, cfg->nservers, cfg->endpoints, c->cfg.streams,
                               cfg->io_threads, cfg->keys, cfg->server_keys)) != 0) {
        goto fail;
    }
    *out = c;
    return 0;
fail:
    wkr_client_destroy(&c);
    return rv;
}

static void drop_held(wkr_client_t *c)
{
    for (size_t k = 0; c->ck && k < c->map.n; k++) {
        ps_tp_msg_release(&c->ck[k].held);
    }
}

void wkr_client_destroy(wkr_client_t **cp)
{
    wkr_client_t *c = *cp;
    if (!c) {
        return;
    }
    drop_held(c); /* before the sockets: the messages live in their context */
    if (c->tp) {
        wkr_client_wait_sends(c);
        ps_tp_destroy(&c->tp);
    }
    for (int s = 0; c->shm && s < c->cfg.nservers; s++) {
        ps_shm_destroy(&c->shm[s]);
    }
    free(c->shm);
    wkr_arrays_fini(&c->arrays);
    ps_chunkmap_fini(&c->map);
    free(c->ck);
    free(c->ts);
    free(c->have);
    free(c->stage);
    free(c);
    *cp = NULL;
}

void wkr_client_set_arrays(wkr_client_t *c, int t, float *weights, const float *grads)
{
    wkr_arrays_set(&c->arrays, t, weights, grads);
}

static const char *host_of(const wkr_client_t *c, int s)
{
    return c->cfg.hosts ? c->cfg.hosts[s] : "?";
}

/* Wait for one message from any server; timeouts and ERROR replies become
 * errors naming the server.  timeout_ms 0: PS_EAGAIN when none is queued. */
static int recv_reply(wkr_client_t *c, ps_tp_msg_t *m, const char *waiting_for, int timeout_ms)
{
    for (;;) {
        int rv = ps_tp_recv(c->tp, m, timeout_ms);
        if (rv == PS_EPROTO) {
            ps_log_error("dropped a malformed reply from server %d: %s", m->peer, ps_error_msg());
            continue;
        }
        if (rv == PS_EAGAIN && timeout_ms == 0) {
            return rv;
        }
        if (rv == PS_EAGAIN) {
            ps_error_set("no answer from the servers for %d s while waiting for %s",
                         c->cfg.timeout_ms / 1000, waiting_for);
            return PS_ETIMEDOUT;
        }
        if (rv != 0) {
            return rv;
        }
        if (m->hdr.type == PS_MSG_ERROR) {
            ps_error_set("server %d (host %s) refused: %.*s", m->peer, host_of(c, m->peer),
                         (int)m->len, (const char *)m->payload);
            ps_tp_msg_release(m);
            return PS_EPROTO;
        }
        return 0;
    }
}

/* Chunk k is the (k / S)-th chunk of its server (chunk i lives on server
 * i % S); consecutive ones take turns over the streams. */
static int stream_of(const wkr_client_t *c, const ps_chunk_t *k)
{
    return (int)((k->id / (uint32_t)c->cfg.nservers) % (uint32_t)c->cfg.streams);
}

/* --compress: chunk k's gradient as 16 bits in the staging buffer, and 1;
 * 0 when it holds a finite value the format would make Inf, so it goes as
 * float32 (a server that found an Inf could drop the step only for this
 * chunk, and the worker's own check saw nothing wrong). */
static int compress_chunk(wkr_client_t *c, const ps_chunk_t *k, const float *data)
{
    ps_half_fmt_t fmt = c->cfg.compress == PS_COMPRESS_FP16 ? PS_HALF_F16 : PS_HALF_BF16;
    if (ps_half_encode(fmt, data, c->stage + k->offset, k->count)) {
        return 1;
    }
    if (!c->said_wide) {
        c->said_wide = 1;
        ps_log_info("--compress %s: chunk %u of step %llu holds a gradient too large for "
                    "16 bits (|g| >= %s); such chunks are pushed as float32 (said once)",
                    fmt == PS_HALF_F16 ? "fp16" : "bf16", k->id, (unsigned long long)c->step + 1,
                    fmt == PS_HALF_F16 ? "65520" : "3.39e38");
    }
    c->st.wide_pushes++;
    return 0;
}

/* Slots per chunk in the shared push area, as the server's store holds
 * pushes: staleness + 1 steps in ssp, one otherwise.  By the time a
 * worker reuses a slot the pull replies it waited for normally imply the
 * server is done with it; the slot's flag makes sure in every mode. */
static int shm_slots(const wkr_client_t *c)
{
    return c->cfg.mode == PS_MODE_SSP ? (int)c->cfg.staleness + 1 : 1;
}

/* A PUSH over shared memory: the gradient (or its 16-bit form) into this
 * step's slot once the server has let go of it, then the header alone.
 * The caller's bytes are free when this returns (ffn runs here). */
static int push_shm(wkr_client_t *c, ps_hdr_t *h, const ps_chunk_t *k, const float *data,
                    ps_tp_free_fn ffn)
{
    ps_shm_t *shm = c->shm[k->server];
    int slot = (int)(h->step % (uint64_t)shm_slots(c)), rv = 0;
    h->flags |= PS_FLAG_SHM;
    h->payload = 0;
    if (!(h->flags & PS_FLAG_SKIP)) { /* a skipped step's bytes are never read */
        rv = ps_shm_slot_wait(shm, c->cfg.rank, k->id, slot, c->cfg.timeout_ms);
        void *dst = rv == 0 ? ps_shm_push_at(shm, c->cfg.rank, k->id, slot) : NULL;
        if (dst && c->cfg.compress && compress_chunk(c, k, data)) {
            h->flags |= c->cfg.compress == PS_COMPRESS_FP16 ? PS_FLAG_F16 : PS_FLAG_BF16;
            memcpy(dst, c->stage + k->offset, k->count * sizeof(uint16_t));
        } else if (dst) {
            memcpy(dst, data, k->count * sizeof(float));
        } else if (rv == 0) {
            ps_error_set("shared memory: no slot for chunk %u", k->id);
            rv = PS_EINVAL;
        }
        if (rv == 0) {
            ps_shm_slot_fill(shm, c->cfg.rank, k->id, slot);
        }
    }
    if (ffn) {
        ffn((void *)data, c);
    }
    if (rv == 0 &&
        (rv = ps_tp_send(c->tp, k->server, stream_of(c, k), h, NULL, 0, NULL, NULL)) == 0) {
        c->st.bytes_pushed += k->count * ((h->flags & PS_FLAG_HALF) ? 2 : 4);
    }
    return rv;
}

/* A PUSH, PULL or INIT of chunk k; `data` is the chunk's count floats
 * (NULL for a PULL), sent zero-copy when ffn is given. */
static int send_chunk(wkr_client_t *c, ps_msg_type_t type, const ps_chunk_t *k, uint64_t step,
                      const float *data, uint32_t samples, ps_tp_free_fn ffn)
{
    ps_hdr_t h = ps_wire_hdr(type, (uint32_t)c->cfg.rank);
    h.step = step;
    h.base = type == PS_MSG_PUSH ? c->have[k->id] : 0;
    h.flags = type == PS_MSG_PUSH && c->skip ? PS_FLAG_SKIP : 0;
    h.chunk = k->id;
    h.offset = k->offset;
    h.samples = samples;
    const void *payload = data;
    if (data) {
        h.count = (uint32_t)k->count;
        h.payload = k->count * sizeof(float);
    }
    if (data && type == PS_MSG_PUSH && c->shm[k->server]) {
        return push_shm(c, &h, k, data, ffn);
    }
    if (data && type == PS_MSG_PUSH && c->cfg.compress && compress_chunk(c, k, data)) {
        h.flags |= c->cfg.compress == PS_COMPRESS_FP16 ? PS_FLAG_F16 : PS_FLAG_BF16;
        h.payload = k->count * sizeof(uint16_t);
        payload = c->stage + k->offset;
    }
    /* INIT must not overtake the REGISTER before it: both on stream 0. */
    int stream = type == PS_MSG_INIT ? 0 : stream_of(c, k);
    int rv = ps_tp_send(c->tp, k->server, stream, &h, payload, h.payload, ffn, ffn ? c : NULL);
    if (rv == 0 && type == PS_MSG_PUSH) {
        c->st.bytes_pushed += h.payload;
    }
    return rv;
}

/* INIT every chunk from the weight arrays (copied by the transport). */
static int send_inits(wkr_client_t *c)
{
    float *buf = malloc(c->map.chunk_elems * sizeof *buf);
    int rv = 0;
    if (!buf) {
        ps_error_set("no memory for a chunk of %zu floats", c->map.chunk_elems);
        return PS_ENOMEM;
    }
    for (size_t i = 0; rv == 0 && i < c->map.n; i++) {
        wkr_arrays_gather_weights(&c->arrays, i, buf);
        rv = send_chunk(c, PS_MSG_INIT, &c->map.c[i], 0, buf, 0, NULL);
    }
    free(buf);
    return rv;
}

/* TABLES first: the server ACKs the model only once it has the tables. */
static int send_tables(wkr_client_t *c)
{
    static const ps_tables_t none = {.n = 0};
    const ps_tables_t *ts = c->cfg.tables ? c->cfg.tables : &none;
    size_t len = ps_tables_size(ts);
    uint8_t *buf = malloc(len);
    int rv = 0;
    if (!buf) {
        ps_error_set("no memory to encode the tables");
        return PS_ENOMEM;
    }
    ps_tables_encode(ts, buf);
    for (int s = 0; rv == 0 && s < c->cfg.nservers; s++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_TABLES, (uint32_t)c->cfg.rank);
        h.payload = len;
        rv = ps_tp_send(c->tp, s, 0, &h, buf, len, NULL, NULL);
    }
    free(buf);
    return rv;
}

static int send_register(wkr_client_t *c)
{
    uint8_t *buf = malloc(PS_WIRE_MAX_LAYOUT);
    long len = buf ? ps_layout_encode(c->layout, buf, PS_WIRE_MAX_LAYOUT) : PS_ENOMEM;
    int rv = 0;
    if (len < 0) {
        ps_error_set(buf ? "layout too large to register" : "no memory to encode the layout");
        free(buf);
        return buf ? PS_EINVAL : PS_ENOMEM;
    }
    for (int s = 0; rv == 0 && s < c->cfg.nservers; s++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_REGISTER, (uint32_t)c->cfg.rank);
        h.payload = (uint64_t)len;
        rv = ps_tp_send(c->tp, s, 0, &h, buf, (size_t)len, NULL, NULL);
    }
    free(buf);
    return rv;
}

int wkr_client_register(wkr_client_t *c)
{
    int rv, acks = 0;
    if ((rv = wkr_arrays_prepare(&c->arrays)) != 0 || (rv = send_tables(c)) != 0 ||
        (rv = send_register(c)) != 0 || (rv = send_inits(c)) != 0) {
        return rv;
    }
    while (acks < c->cfg.nservers) {
        ps_tp_msg_t m;
        if ((rv = recv_reply(c, &m, "the servers to accept the model", c->cfg.timeout_ms)) != 0) {
            return rv;
        }
        acks += m.hdr.type == PS_MSG_ACK;
        ps_tp_msg_release(&m);
    }
    return 0;
}

void wkr_client_begin_step(wkr_client_t *c, uint64_t step)
{
    c->step = step;
    c->want_step = step + 1;
    c->skip = 0;
    c->finished = 0;
    drop_held(c);
    for (size_t k = 0; k < c->map.n; k++) {
        chunk_state_t *s = &c->ck[k];
        s->pushed = s->requested = s->received = 0;
        s->unfinal = s->undelivered = ntensors_of(c, k);
        s->version = 0;
    }
    memset(c->ts, 0, (size_t)c->layout->n * sizeof *c->ts);
    c->nrequested = c->nreceived = 0;
    c->npulled = 0;
}

/* The oldest weights version step `step` may start from. */
static uint64_t need_version(const wkr_client_t *c, uint64_t step)
{
    switch (c->cfg.mode) {
    case PS_MODE_ASYNC: return 0;
    case PS_MODE_SSP: return step > c->cfg.staleness ? step - c->cfg.staleness : 0;
    default: return step;
    }
}

void wkr_client_set_skip(wkr_client_t *c, int skip)
{
    c->skip = skip;
}

static void push_released(void *data, void *hint)
{
    (void)data;
    wkr_client_t *c = hint;
    ps_count_release(&c->inflight);
}

static int request(wkr_client_t *c, size_t k, uint64_t version)
{
    chunk_state_t *s = &c->ck[k];
    if (s->requested) {
        return 0;
    }
    int rv = send_chunk(c, PS_MSG_PULL, &c->map.c[k], version, NULL, 0, NULL);
    if (rv == 0) {
        s->requested = 1;
        s->version = version;
        c->nrequested++;
    }
    return rv;
}

static int push_chunk(wkr_client_t *c, size_t k, uint32_t samples)
{
    const ps_chunk_t *ch = &c->map.c[k];
    ps_count_add(&c->inflight, 1);
    int rv = send_chunk(c, PS_MSG_PUSH, ch, c->step, wkr_arrays_grads(&c->arrays, k), samples,
                        push_released);
    if (rv != 0) {
        return rv; /* ps_tp_send ran push_released already: it does on failure too */
    }
    c->ck[k].pushed = 1;
    return request(c, k, need_version(c, c->step + 1));
}

/* Pushes and pulls belong to a step that is not finished. */
static int in_step(const wkr_client_t *c)
{
    if (c->finished) {
        ps_error_set("the data plane's step %llu is finished; begin the next one",
                     (unsigned long long)c->step);
        return PS_ESTATE;
    }
    return 0;
}

int wkr_client_push_tensor(wkr_client_t *c, int t, uint32_t samples)
{
    int rv = in_step(c);
    if (rv == 0) {
        rv = wkr_arrays_prepare(&c->arrays);
    }
    if (rv != 0 || c->ts[t].final) {
        return rv;
    }
    c->ts[t].final = 1;
    /* Last chunk first, as backward produces the gradients. */
    size_t first = wkr_arrays_chunk_first(&c->arrays, t);
    for (size_t k = wkr_arrays_chunk_last(&c->arrays, t) + 1; rv == 0 && k-- > first;) {
        if (--c->ck[k].unfinal == 0) {
            rv = push_chunk(c, k, samples);
        }
    }
    return rv;
}

int wkr_client_tensor_pushed(const wkr_client_t *c, int t, int *waiting)
{
    size_t last = wkr_arrays_chunk_last(&c->arrays, t);
    for (size_t k = wkr_arrays_chunk_first(&c->arrays, t); k <= last; k++) {
        if (c->ck[k].pushed) {
            continue;
        }
        for (int u = c->arrays.tfirst[k]; waiting && u <= c->arrays.tlast[k]; u++) {
            if (!c->ts[u].final) {
                *waiting = u;
                break;
            }
        }
        return 0;
    }
    return 1;
}

/* Write chunk k's held reply into tensor t (wanted), and let the reply go
 * once every tensor of the chunk has its part. */
static void deliver(wkr_client_t *c, size_t k, int t)
{
    chunk_state_t *s = &c->ck[k];
    wkr_arrays_scatter(&c->arrays, k, t, s->data);
    if (--c->ts[t].missing == 0) {
        c->npulled++;
    }
    if (--s->undelivered == 0) {
        c->have[k] = s->held.hdr.step;
        ps_tp_msg_release(&s->held);
    }
}

/* Check a PULL_REPLY against the chunk map and keep it for its tensors. */
static void take_reply(wkr_client_t *c, ps_tp_msg_t *m)
{
    const ps_hdr_t *h = &m->hdr;
    if (h->type != PS_MSG_PULL_REPLY && c->other) {
        c->other(c->other_arg, m);
        return;
    }
    if (h->type != PS_MSG_PULL_REPLY || h->chunk >= c->map.n) {
        ps_log_error("unexpected %s from server %d", ps_wire_type_name(h->type), m->peer);
        return;
    }
    const ps_chunk_t *k = &c->map.c[h->chunk];
    chunk_state_t *s = &c->ck[h->chunk];
    int shm = (h->flags & PS_FLAG_SHM) != 0;
    const float *area = shm && k->server == m->peer
                            ? ps_shm_reply_at(c->shm[m->peer], c->cfg.rank, h->chunk)
                            : NULL;
    if (k->server != m->peer || h->offset != k->offset || h->count != k->count ||
        (shm ? !area : m->len != k->count * sizeof(float)) || !s->requested ||
        h->step < s->version || s->received) {
        ps_log_error("dropped a reply for chunk %u from server %d that does not match", h->chunk,
                     m->peer);
        return;
    }
    s->received = 1;
    c->nreceived++;
    c->st.bytes_pulled += k->count * sizeof(float);
    ps_tp_msg_move(&s->held, m);
    s->data = shm ? (const uint8_t *)area : s->held.payload;
    for (int t = c->arrays.tfirst[h->chunk]; t <= c->arrays.tlast[h->chunk]; t++) {
        if (c->ts[t].wanted) {
            deliver(c, h->chunk, t);
        }
    }
}

/* Receive and take one reply (timeout_ms as recv_reply). */
static int take_one(wkr_client_t *c, const char *what, int timeout_ms)
{
    ps_tp_msg_t m;
    int rv = recv_reply(c, &m, what, timeout_ms);
    if (rv != 0) {
        return rv;
    }
    take_reply(c, &m);
    ps_tp_msg_release(&m);
    return 0;
}

int wkr_client_take(wkr_client_t *c, const char *what, int timeout_ms)
{
    return take_one(c, what, timeout_ms);
}

ps_tp_t *wkr_client_tp(wkr_client_t *c)
{
    return c->tp;
}

void wkr_client_set_other(wkr_client_t *c, wkr_client_other_fn fn, void *arg)
{
    c->other = fn;
    c->other_arg = arg;
}

int wkr_client_want(wkr_client_t *c, int t, uint64_t step)
{
    tensor_state_t *ts = &c->ts[t];
    int rv = in_step(c);
    if (rv == 0) {
        rv = wkr_arrays_prepare(&c->arrays);
    }
    if (rv != 0 || ts->wanted) {
        return rv;
    }
    c->want_step = step;
    size_t first = wkr_arrays_chunk_first(&c->arrays, t),
           last = wkr_arrays_chunk_last(&c->arrays, t);
    ts->wanted = 1;
    ts->missing = last - first + 1;
    for (size_t k = first; rv == 0 && k <= last; k++) {
        if (c->ck[k].received) {
            deliver(c, k, t);
        } else {
            rv = request(c, k, need_version(c, step));
        }
    }
    return rv;
}

int wkr_client_tensor_pulled(const wkr_client_t *c, int t)
{
    return c->ts[t].wanted && c->ts[t].missing == 0;
}

int wkr_client_tensors_pulled(const wkr_client_t *c)
{
    return c->npulled;
}

/* Receive until done(c, arg) holds. */
static int wait_until(wkr_client_t *c, int (*done)(const wkr_client_t *, int), int arg)
{
    char what[96];
    double t0 = ps_clock_now();
    int rv = 0;
    snprintf(what, sizeof what, "the weights of step %llu", (unsigned long long)c->want_step);
    while (rv == 0 && !done(c, arg)) {
        rv = take_one(c, what, c->cfg.timeout_ms);
    }
    c->st.wait_s += ps_clock_now() - t0;
    return rv;
}

int wkr_client_wait_tensor(wkr_client_t *c, int t)
{
    return wait_until(c, wkr_client_tensor_pulled, t);
}

int wkr_client_poll(wkr_client_t *c)
{
    int rv;
    while ((rv = take_one(c, "", 0)) == 0) {
    }
    return rv == PS_EAGAIN ? 0 : rv;
}

static int all_received(const wkr_client_t *c, int unused)
{
    (void)unused;
    return c->nreceived == c->nrequested;
}

int wkr_client_pull(wkr_client_t *c, uint64_t step)
{
    int rv = 0;
    for (int t = 0; rv == 0 && t < c->layout->n; t++) {
        rv = wkr_client_want(c, t, step);
    }
    return rv ? rv : wait_until(c, all_received, 0);
}

int wkr_client_finish_step(wkr_client_t *c)
{
    int rv = wait_until(c, all_received, 0);
    drop_held(c); /* replies no tensor wanted */
    wkr_client_wait_sends(c);
    c->finished = 1;
    return rv;
}

int wkr_client_wait_sends(wkr_client_t *c)
{
    ps_count_wait_zero(&c->inflight);
    return 0;
}

int wkr_client_sends_done(wkr_client_t *c)
{
    return ps_count_get(&c->inflight) == 0;
}

int wkr_client_shutdown(wkr_client_t *c)
{
    for (int s = 0; s < c->cfg.nservers; s++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_SHUTDOWN, (uint32_t)c->cfg.rank);
        int rv = ps_tp_send(c->tp, s, 0, &h, NULL, 0, NULL, NULL);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* Fold one server's counters into the job's. */
static void add_stats(ps_wire_stats_t *out, const ps_wire_stats_t *st)
{
    out->staleness_max =
        st->staleness_max > out->staleness_max ? st->staleness_max : out->staleness_max;
    out->version = st->version > out->version ? st->version : out->version;
    out->staleness_sum += st->staleness_sum;
    out->applied += st->applied;
    out->rejected += st->rejected;
    out->apply_us += st->apply_us;
}

int wkr_client_server_stats(wkr_client_t *c, ps_wire_stats_t *out)
{
    int rv, got = 0;
    memset(out, 0, sizeof *out);
    for (int s = 0; s < c->cfg.nservers; s++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_STATS, (uint32_t)c->cfg.rank);
        if ((rv = ps_tp_send(c->tp, s, 0, &h, NULL, 0, NULL, NULL)) != 0) {
            return rv;
        }
    }
    while (got < c->cfg.nservers) {
        ps_tp_msg_t m;
        ps_wire_stats_t st;
        if ((rv = recv_reply(c, &m, "the servers' counters", c->cfg.timeout_ms)) != 0) {
            return rv;
        }
        if (m.hdr.type == PS_MSG_STATS_REPLY) {
            ps_wire_stats_decode(&st, m.payload);
            add_stats(out, &st);
            got++;
        }
        ps_tp_msg_release(&m);
    }
    return 0;
}

int wkr_client_attach_shm(wkr_client_t *c, const char *const *paths)
{
    for (int s = 0; s < c->cfg.nservers; s++) {
        if (!paths[s] || !paths[s][0]) {
            continue;
        }
        int rv = ps_shm_attach(&c->shm[s], paths[s], &c->map, s, shm_slots(c), c->cfg.nworkers,
                               c->cfg.rank);
        if (rv == PS_ENOENT) {
            ps_log_info("server %d (host %s) has no shared memory for this worker: its tensors "
                        "go over ipc",
                        s, host_of(c, s));
            continue;
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int wkr_client_shm_servers(const wkr_client_t *c)
{
    int n = 0;
    for (int s = 0; s < c->cfg.nservers; s++) {
        n += c->shm[s] != NULL;
    }
    return n;
}

void wkr_client_stats(const wkr_client_t *c, wkr_client_stats_t *st)
{
    *st = c->st;
}
