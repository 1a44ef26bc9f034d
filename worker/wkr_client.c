#include "wkr_client.h"

#include "ps_clock.h"
#include "ps_count.h"
#include "ps_err.h"
#include "ps_half.h"
#include "ps_transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wkr_client {
    wkr_client_cfg_t cfg;
    ps_layout_t layout;
    ps_chunkmap_t map;
    ps_tp_t *tp;
    uint64_t step;
    int skip; /* flag this step's pushes PS_FLAG_SKIP */
    uint8_t *pushed, *requested, *received; /* per chunk, this step */
    uint64_t *have; /* per chunk: version of the weights in params */
    uint16_t *stage; /* --compress: the 16-bit gradients in flight */
    size_t nreceived;
    ps_count_t inflight; /* zero-copy pushes not yet released by zmq */
    wkr_client_stats_t st;
};

int wkr_client_new(wkr_client_t **out, const wkr_client_cfg_t *cfg)
{
    wkr_client_t *c = calloc(1, sizeof *c);
    int rv;
    if (!c) {
        return PS_ENOMEM;
    }
    c->cfg = *cfg;
    c->layout = *cfg->layout;
    c->cfg.layout = &c->layout;
    c->cfg.streams = cfg->streams ? cfg->streams : 1;
    ps_count_init(&c->inflight);
    if ((rv = ps_chunkmap_init(&c->map, c->layout.total, cfg->chunk_elems, cfg->nservers)) !=
        0) {
        goto fail;
    }
    c->pushed = calloc(c->map.n, 1);
    c->requested = calloc(c->map.n, 1);
    c->received = calloc(c->map.n, 1);
    c->have = calloc(c->map.n, sizeof *c->have);
    c->stage = cfg->compress ? malloc(c->layout.total * sizeof *c->stage) : NULL;
    if (!c->pushed || !c->requested || !c->received || !c->have ||
        (cfg->compress && !c->stage)) {
        rv = PS_ENOMEM;
        goto fail;
    }
    if ((rv = ps_tp_client_new(&c->tp, cfg->rank, cfg->nservers, cfg->endpoints,
                               c->cfg.streams, cfg->io_threads, cfg->keys, cfg->server_keys)) !=
        0) {
        goto fail;
    }
    *out = c;
    return 0;
fail:
    wkr_client_destroy(&c);
    return rv;
}

void wkr_client_destroy(wkr_client_t **cp)
{
    wkr_client_t *c = *cp;
    if (!c) {
        return;
    }
    if (c->tp) {
        wkr_client_wait_sends(c);
        ps_tp_destroy(&c->tp);
    }
    ps_chunkmap_fini(&c->map);
    free(c->pushed);
    free(c->requested);
    free(c->received);
    free(c->have);
    free(c->stage);
    free(c);
    *cp = NULL;
}

static const char *host_of(const wkr_client_t *c, int s)
{
    return c->cfg.hosts ? c->cfg.hosts[s] : "?";
}

/* Wait for one message from any server; timeouts and ERROR replies become
 * errors naming the server. */
static int recv_reply(wkr_client_t *c, ps_tp_msg_t *m, const char *waiting_for)
{
    for (;;) {
        int rv = ps_tp_recv(c->tp, m, c->cfg.timeout_ms);
        if (rv == PS_EPROTO) {
            ps_log_error("dropped a malformed reply from server %d: %s", m->peer,
                         ps_error_msg());
            continue;
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
    const void *payload = data ? data + k->offset : NULL;
    if (data) {
        h.count = (uint32_t)k->count;
        h.payload = k->count * sizeof(float);
    }
    if (data && type == PS_MSG_PUSH && c->cfg.compress) {
        /* --compress: 16-bit copy in the staging buffer, sent from there. */
        uint16_t *half = c->stage + k->offset;
        if (c->cfg.compress == WKR_COMPRESS_F16) {
            ps_f32_to_f16(data + k->offset, half, k->count);
        } else {
            ps_f32_to_bf16(data + k->offset, half, k->count);
        }
        h.flags |= c->cfg.compress == WKR_COMPRESS_F16 ? PS_FLAG_F16 : PS_FLAG_BF16;
        h.payload = k->count * sizeof(uint16_t);
        payload = half;
    }
    /* INIT must not overtake the REGISTER before it: both on stream 0. */
    int stream = type == PS_MSG_INIT ? 0 : stream_of(c, k);
    return ps_tp_send(c->tp, k->server, stream, &h, payload, h.payload, ffn, ffn ? c : NULL);
}

int wkr_client_register(wkr_client_t *c, const float *init)
{
    uint8_t buf[PS_WIRE_MAX_LAYOUT];
    long len = ps_layout_encode(&c->layout, buf, sizeof buf);
    int rv, acks = 0;
    if (len < 0) {
        ps_error_set("layout too large to register");
        return PS_EINVAL;
    }
    for (int s = 0; s < c->cfg.nservers; s++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_REGISTER, (uint32_t)c->cfg.rank);
        h.payload = (uint64_t)len;
        if ((rv = ps_tp_send(c->tp, s, 0, &h, buf, (size_t)len, NULL, NULL)) != 0) {
            return rv;
        }
    }
    for (size_t i = 0; i < c->map.n; i++) {
        if ((rv = send_chunk(c, PS_MSG_INIT, &c->map.c[i], 0, init, 0, NULL)) != 0) {
            return rv;
        }
    }
    while (acks < c->cfg.nservers) {
        ps_tp_msg_t m;
        if ((rv = recv_reply(c, &m, "the servers to accept the model")) != 0) {
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
    c->skip = 0;
    memset(c->pushed, 0, c->map.n);
    memset(c->requested, 0, c->map.n);
    memset(c->received, 0, c->map.n);
    c->nreceived = 0;
}

/* The oldest weights version step `step` may start from. */
static uint64_t need_version(const wkr_client_t *c, uint64_t step)
{
    switch (c->cfg.mode) {
    case PS_MODE_ASYNC:
        return 0;
    case PS_MODE_SSP:
        return step > c->cfg.staleness ? step - c->cfg.staleness : 0;
    default:
        return step;
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

int wkr_client_push_from(wkr_client_t *c, const float *grads, size_t first, uint32_t samples)
{
    /* Chunks are in ascending offset; the ready region is a suffix. */
    for (size_t i = c->map.n; i-- > 0;) {
        const ps_chunk_t *k = &c->map.c[i];
        if (k->offset < first) {
            break;
        }
        if (c->pushed[i]) {
            continue;
        }
        ps_count_add(&c->inflight, 1);
        int rv = send_chunk(c, PS_MSG_PUSH, k, c->step, grads, samples, push_released);
        if (rv != 0) {
            return rv;
        }
        c->pushed[i] = 1;
        c->st.bytes_pushed += k->count * (c->cfg.compress ? sizeof(uint16_t) : sizeof(float));
        if ((rv = send_chunk(c, PS_MSG_PULL, k, need_version(c, c->step + 1), NULL, 0, NULL)) !=
            0) {
            return rv;
        }
        c->requested[i] = 1;
    }
    return 0;
}

/* Check a PULL_REPLY against the chunk map and copy it in. */
static void take_reply(wkr_client_t *c, const ps_tp_msg_t *m, uint64_t version, float *params)
{
    const ps_hdr_t *h = &m->hdr;
    if (h->type != PS_MSG_PULL_REPLY || h->chunk >= c->map.n) {
        ps_log_error("unexpected %s from server %d", ps_wire_type_name(h->type), m->peer);
        return;
    }
    const ps_chunk_t *k = &c->map.c[h->chunk];
    if (k->server != m->peer || h->offset != k->offset || h->count != k->count ||
        h->step < version || c->received[h->chunk]) {
        ps_log_error("dropped a reply for chunk %u from server %d that does not match", h->chunk,
                     m->peer);
        return;
    }
    memcpy(params + k->offset, m->payload, m->len);
    c->have[h->chunk] = h->step;
    c->received[h->chunk] = 1;
    c->nreceived++;
    c->st.bytes_pulled += m->len;
}

int wkr_client_pull(wkr_client_t *c, uint64_t step, float *params)
{
    uint64_t version = need_version(c, step);
    int rv;
    for (size_t i = 0; i < c->map.n; i++) {
        if (!c->requested[i]) {
            if ((rv = send_chunk(c, PS_MSG_PULL, &c->map.c[i], version, NULL, 0, NULL)) != 0) {
                return rv;
            }
            c->requested[i] = 1;
        }
    }
    double t0 = ps_clock_now();
    while (c->nreceived < c->map.n) {
        ps_tp_msg_t m;
        char what[64];
        snprintf(what, sizeof what, "the weights of step %llu", (unsigned long long)version);
        if ((rv = recv_reply(c, &m, what)) != 0) {
            return rv;
        }
        take_reply(c, &m, version, params);
        ps_tp_msg_release(&m);
    }
    c->st.wait_s += ps_clock_now() - t0;
    return 0;
}

int wkr_client_wait_sends(wkr_client_t *c)
{
    ps_count_wait_zero(&c->inflight);
    return 0;
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
        if ((rv = recv_reply(c, &m, "the servers' counters")) != 0) {
            return rv;
        }
        if (m.hdr.type == PS_MSG_STATS_REPLY) {
            ps_wire_stats_decode(&st, m.payload);
            out->staleness_max = st.staleness_max > out->staleness_max ? st.staleness_max
                                                                        : out->staleness_max;
            out->version = st.version > out->version ? st.version : out->version;
            out->staleness_sum += st.staleness_sum;
            out->applied += st.applied;
            out->rejected += st.rejected;
            out->apply_us += st.apply_us;
            got++;
        }
        ps_tp_msg_release(&m);
    }
    return 0;
}

void wkr_client_stats(const wkr_client_t *c, wkr_client_stats_t *st)
{
    *st = c->st;
}
