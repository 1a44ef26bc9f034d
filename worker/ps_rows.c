/*
 * libpsclient: sparse tables (ps.h API 6): declarations, and the row
 * pulls and pushes of a step.  Rows are sorted and deduplicated here
 * (duplicate keys' gradients summed in the caller's order) and split by
 * server (ps_key_server), so every server gets strictly ascending keys of
 * its own, which it checks.
 */
#include "ps_api.h"

#include "ps_bytes.h"
#include "ps_finite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ps_declare_table(ps_t *ps, const char *name, int64_t dim, const ps_initializer_t *init)
{
    if (!ps) {
        return ps_api_no_handle("ps_declare_table");
    }
    int rv = 0;
    if (ps->state != ST_JOINED) {
        ps_error_set("ps_declare_table: only between ps_init and ps_start");
        return PS_ESTATE;
    }
    if (init && init->kind != PS_INIT_ZEROS && init->kind != PS_INIT_UNIFORM) {
        ps_error_set("ps_declare_table '%s': init must be PS_INIT_ZEROS or PS_INIT_UNIFORM",
                     name ? name : "(null)");
        rv = PS_EINVAL;
    } else if (!name) {
        ps_error_set("ps_declare_table: name must not be NULL");
        rv = PS_EINVAL;
    } else {
        int uniform = init && init->kind == PS_INIT_UNIFORM;
        rv = ps_tables_add(&ps->tables, name, dim,
                           uniform ? PS_TABLE_INIT_UNIFORM : PS_TABLE_INIT_ZEROS,
                           uniform ? init->bound : 0.0f, uniform ? init->seed : 0);
    }
    ps_api_fail(ps, rv);
    return rv;
}

int ps_rows_check_names(const ps_t *ps)
{
    for (int i = 0; i < ps->tables.n; i++) {
        if (ps_layout_find(&ps->layout, ps->tables.t[i].name) >= 0) {
            ps_error_set("ps_start: '%s' is declared both as a tensor and as a table",
                         ps->tables.t[i].name);
            return PS_EINVAL;
        }
    }
    return 0;
}

/* ---- replies ------------------------------------------------------------ */

/* Copy server s's rows into the caller's array where its keys asked. */
static void scatter(ps_rows_t *h, int s, const uint8_t *rows)
{
    size_t row = (size_t)h->dim * sizeof(float);
    for (size_t i = 0; i < h->n; i++) {
        if (h->srv[i] == (uint32_t)s) {
            memcpy(h->out + i * h->dim, rows + (size_t)h->pos[i] * row, row);
        }
    }
}

static void unlink_pull(ps_t *ps, ps_rows_t *h)
{
    for (ps_rows_t **p = &ps->rows_inflight; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            return;
        }
    }
}

/* A ROWS_REPLY (wkr_client hands every non-chunk reply here): checked
 * against the pull it answers before a byte is copied. */
static void take_reply(void *arg, ps_tp_msg_t *m)
{
    ps_t *ps = arg;
    const ps_hdr_t *hd = &m->hdr;
    ps_rows_t *h = ps->rows_inflight;
    while (h && h->request != hd->request) {
        h = h->next;
    }
    if (hd->type != PS_MSG_ROWS_REPLY || !h || m->peer < 0 || m->peer >= ps->boot.nservers ||
        h->asked[m->peer] == 0 || hd->chunk != (uint32_t)h->table || hd->offset != h->dim ||
        hd->count != h->asked[m->peer]) {
        ps_log_error("dropped a %s from server %d that answers no pull of this worker",
                     ps_wire_type_name(hd->type), m->peer);
        return;
    }
    scatter(h, m->peer, m->payload);
    h->asked[m->peer] = 0;
    if (--h->pending == 0) {
        unlink_pull(ps, h);
    }
}

int ps_rows_connect(ps_t *ps)
{
    /* The declarations go with the registration (wkr_client_register). */
    wkr_client_set_other(ps->client, take_reply, ps);
    return 0;
}

/* ---- sorting and splitting --------------------------------------------- */

typedef struct {
    uint64_t key;
    uint32_t idx;
} keyed_t;

static int by_key(const void *a, const void *b)
{
    const keyed_t *x = a, *y = b;
    if (x->key != y->key) {
        return x->key < y->key ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* keys sorted (stably: equal keys in the caller's order); *out from malloc. */
static int sorted(const uint64_t *keys, size_t n, keyed_t **out)
{
    keyed_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) {
        ps_error_set("no memory to sort %zu keys", n);
        return PS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        v[i].key = keys[i];
        v[i].idx = (uint32_t)i;
    }
    qsort(v, n, sizeof *v, by_key);
    *out = v;
    return 0;
}

/* The table and the call's checks shared by pull and push. */
static int rows_call(ps_t *ps, const char *call, const char *table, const uint64_t *keys, size_t n,
                     const float *data, int *t)
{
    int rv = ps_api_servers_open(ps, call);
    if (rv == 0) {
        rv = ps_api_settle_step(ps);
    }
    if (rv != 0) {
        return rv;
    }
    if (!table || (n > 0 && (!keys || !data))) {
        ps_error_set("%s: table, keys and the row array must not be NULL", call);
        return PS_EINVAL;
    }
    if (n > UINT32_MAX) {
        ps_error_set("%s: %zu keys, at most %u per call", call, n, UINT32_MAX);
        return PS_EINVAL;
    }
    if ((*t = ps_tables_find(&ps->tables, table)) < 0) {
        ps_error_set("%s: no table '%s' (ps_declare_table)", call, table);
        return PS_ENOENT;
    }
    return 0;
}

static int stream_of(const ps_t *ps, int t)
{
    return t % (ps->opt.streams > 0 ? ps->opt.streams : 1);
}

/* ---- pulls ---------------------------------------------------------------- */

static void rows_free(ps_rows_t *h)
{
    if (h) {
        free(h->asked);
        free(h->srv);
        free(h->pos);
        free(h);
    }
}

/* The version the current step's pull wants, as wkr_client's dense pulls. */
static uint64_t want_version(const ps_t *ps)
{
    switch ((ps_mode_t)ps->srv.mode) {
    case PS_MODE_ASYNC: return 0;
    case PS_MODE_SSP: return ps->step > ps->srv.staleness ? ps->step - ps->srv.staleness : 0;
    default: return ps->step;
    }
}

/* Per key its server and its place among that server's unique keys;
 * the unique keys go to `ukeys` grouped by server (server s's from
 * first[s]), counts in h->asked. */
static void split(ps_rows_t *h, const keyed_t *v, int S, uint64_t *ukeys, size_t *first)
{
    size_t u = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (i == 0 || v[i].key != v[i - 1].key) {
            uint32_t s = ps_key_server(v[i].key, (uint32_t)S);
            ukeys[first[s] + h->asked[s]] = v[i].key;
            h->asked[s]++;
            u++;
        }
        h->srv[v[i].idx] = ps_key_server(v[i].key, (uint32_t)S);
        h->pos[v[i].idx] = h->asked[h->srv[v[i].idx]] - 1;
    }
    (void)u;
}

/* first[s]: where server s's unique keys start (counts them first). */
static void server_starts(const keyed_t *v, size_t n, int S, size_t *first)
{
    size_t cnt[S];
    memset(cnt, 0, sizeof cnt);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || v[i].key != v[i - 1].key) {
            cnt[ps_key_server(v[i].key, (uint32_t)S)]++;
        }
    }
    for (int s = 0, at = 0; s < S; s++) {
        first[s] = (size_t)at;
        at += (int)cnt[s];
    }
}

static int send_pulls(ps_t *ps, ps_rows_t *h, const uint64_t *ukeys, const size_t *first)
{
    int rv = 0;
    for (int s = 0; rv == 0 && s < ps->boot.nservers; s++) {
        size_t cnt = h->asked[s];
        if (cnt == 0) {
            continue;
        }
        uint8_t *buf = malloc(cnt * 8);
        if (!buf) {
            ps_error_set("ps_pull_rows: no memory for %zu keys", cnt);
            return PS_ENOMEM;
        }
        for (size_t i = 0; i < cnt; i++) {
            ps_put_u64(buf + 8 * i, ukeys[first[s] + i]);
        }
        ps_hdr_t hd = ps_wire_hdr(PS_MSG_ROWS_PULL, (uint32_t)ps->boot.rank);
        hd.request = h->request;
        hd.step = want_version(ps);
        hd.chunk = (uint32_t)h->table;
        hd.offset = h->dim;
        hd.count = (uint32_t)cnt;
        hd.payload = cnt * 8;
        rv = ps_tp_send(wkr_client_tp(ps->client), s, stream_of(ps, h->table), &hd, buf, cnt * 8,
                        NULL, NULL);
        free(buf);
        h->pending++;
    }
    return rv;
}

static int rows_wait(ps_rows_t *h)
{
    ps_t *ps = h->ps;
    char what[128];
    snprintf(what, sizeof what, "the rows of table '%s' at step %llu", ps->tables.t[h->table].name,
             (unsigned long long)h->step);
    int rv = 0;
    while (rv == 0 && h->pending > 0) {
        rv = wkr_client_take(ps->client, what, ps->opt.timeout_s * 1000);
    }
    return rv ? ps_api_break(ps, rv) : 0;
}

static int pull_rows(ps_t *ps, int t, const uint64_t *keys, size_t n, float *out, ps_rows_t **hp)
{
    int S = ps->boot.nservers;
    ps_rows_t *h = calloc(1, sizeof *h);
    keyed_t *v = NULL;
    uint64_t *ukeys = malloc((n ? n : 1) * sizeof *ukeys);
    size_t first[S];
    int rv = PS_ENOMEM;
    if (!h || !ukeys || !(h->asked = calloc((size_t)S, sizeof *h->asked)) ||
        !(h->srv = malloc((n ? n : 1) * sizeof *h->srv)) ||
        !(h->pos = malloc((n ? n : 1) * sizeof *h->pos))) {
        ps_error_set("ps_pull_rows: no memory for %zu keys", n);
        goto out;
    }
    *h = (ps_rows_t){.ps = ps,
                     .pull = 1,
                     .table = t,
                     .step = ps->step,
                     .request = ++ps->rows_request,
                     .asked = h->asked,
                     .srv = h->srv,
                     .pos = h->pos,
                     .out = out,
                     .n = n,
                     .dim = ps->tables.t[t].dim};
    if ((rv = sorted(keys, n, &v)) != 0) {
        goto out;
    }
    server_starts(v, n, S, first);
    split(h, v, S, ukeys, first);
    if ((rv = send_pulls(ps, h, ukeys, first)) != 0) {
        rv = ps_api_break(ps, rv);
        goto out;
    }
    if (h->pending > 0) {
        h->next = ps->rows_inflight;
        ps->rows_inflight = h;
    }
    *hp = h;
    h = NULL;
out:
    rows_free(h);
    free(v);
    free(ukeys);
    return rv;
}

int ps_pull_rows(ps_t *ps, const char *table, const uint64_t *keys, size_t n, float *out,
                 ps_rows_t **handle)
{
    if (!ps) {
        return ps_api_no_handle("ps_pull_rows");
    }
    int t, rv = rows_call(ps, "ps_pull_rows", table, keys, n, out, &t);
    ps_rows_t *h = NULL;
    if (rv == 0) {
        rv = pull_rows(ps, t, keys, n, out, &h);
    }
    if (rv != 0) {
        return rv;
    }
    if (handle) {
        *handle = h;
        return 0;
    }
    return ps_wait_rows(h);
}

int ps_wait_rows(ps_rows_t *h)
{
    if (!h) {
        ps_error_set("ps_wait_rows: the handle is NULL");
        return PS_EINVAL;
    }
    int rv = h->pending > 0 ? rows_wait(h) : 0;
    if (h->pending > 0) {
        unlink_pull(h->ps, h);
    }
    rows_free(h);
    return rv;
}

int ps_test_rows(ps_rows_t *h, int *done)
{
    if (!h || !done) {
        ps_error_set("ps_test_rows: the handle and done must not be NULL");
        return PS_EINVAL;
    }
    int rv = 0;
    if (h->pending > 0 && h->ps->state == ST_STARTED) {
        while (rv == 0 && h->pending > 0) {
            rv = wkr_client_take(h->ps->client, "", 0);
        }
        rv = rv == PS_EAGAIN ? 0 : rv;
        if (rv != 0) {
            *done = 0;
            return ps_api_break(h->ps, rv);
        }
    }
    *done = h->pending == 0;
    if (*done) {
        rows_free(h);
    }
    return 0;
}

/* ---- pushes --------------------------------------------------------------- */

/* The unique keys (ascending) and their summed gradients: equal keys'
 * rows added in the caller's order.  Returns the unique count. */
static size_t dedup(const keyed_t *v, size_t n, const float *grads, uint32_t dim, uint64_t *ukeys,
                    float *ug)
{
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        const float *g = grads + (size_t)v[i].idx * dim;
        if (i == 0 || v[i].key != v[i - 1].key) {
            ukeys[u] = v[i].key;
            memcpy(ug + u * dim, g, dim * sizeof *g);
            u++;
        } else {
            float *acc = ug + (u - 1) * dim;
            for (uint32_t d = 0; d < dim; d++) {
                acc[d] += g[d];
            }
        }
    }
    return u;
}

static void free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Server s's ROWS_PUSH: its keys (LE u64) then their rows. */
static uint8_t *push_payload(const uint64_t *ukeys, const float *ug, size_t u, uint32_t dim, int S,
                             int s, size_t *cnt, size_t *len)
{
    size_t c = 0;
    for (size_t i = 0; i < u; i++) {
        c += ps_key_server(ukeys[i], (uint32_t)S) == (uint32_t)s;
    }
    size_t row = (size_t)dim * sizeof(float);
    uint8_t *buf = malloc(c * (8 + row) + 1);
    if (!buf) {
        return NULL;
    }
    for (size_t i = 0, k = 0; i < u; i++) {
        if (ps_key_server(ukeys[i], (uint32_t)S) == (uint32_t)s) {
            ps_put_u64(buf + 8 * k, ukeys[i]);
            memcpy(buf + 8 * c + k * row, ug + i * dim, row);
            k++;
        }
    }
    *cnt = c;
    *len = c * (8 + row);
    return buf;
}

static int hold_push(ps_t *ps, const ps_rows_held_t *m)
{
    if (ps->nrows_held == ps->caprows_held) {
        size_t cap = ps->caprows_held ? 2 * ps->caprows_held : 8;
        ps_rows_held_t *v = realloc(ps->rows_held, cap * sizeof *v);
        if (!v) {
            ps_error_set("ps_push_rows: no memory to hold the step's row pushes");
            return PS_ENOMEM;
        }
        ps->rows_held = v;
        ps->caprows_held = cap;
    }
    ps->rows_held[ps->nrows_held++] = *m;
    return 0;
}

/* One ROWS_PUSH per server (an empty one too: sync waits for everyone's);
 * held until the step's dense push under --on-nonfinite skip. */
static int send_pushes(ps_t *ps, int t, const uint64_t *ukeys, const float *ug, size_t u,
                       uint32_t samples)
{
    uint32_t dim = ps->tables.t[t].dim;
    int rv = 0;
    for (int s = 0; rv == 0 && s < ps->boot.nservers; s++) {
        size_t cnt, len;
        ps_rows_held_t m = {.server = s, .stream = stream_of(ps, t)};
        if (!(m.buf = push_payload(ukeys, ug, u, dim, ps->boot.nservers, s, &cnt, &len))) {
            ps_error_set("ps_push_rows: no memory for %zu rows", u);
            return PS_ENOMEM;
        }
        m.h = ps_wire_hdr(PS_MSG_ROWS_PUSH, (uint32_t)ps->boot.rank);
        m.h.step = ps->step;
        m.h.chunk = (uint32_t)t;
        m.h.offset = dim;
        m.h.count = (uint32_t)cnt;
        m.h.samples = samples;
        m.h.payload = len;
        if (ps->srv.nonfinite_skip) {
            if ((rv = hold_push(ps, &m)) != 0) {
                free(m.buf);
            }
            continue;
        }
        rv = ps_tp_send(wkr_client_tp(ps->client), s, m.stream, &m.h, m.buf, len, free_buf, NULL);
    }
    return rv;
}

/* May table t be pushed now (once per step, before the dense push, with
 * the step's samples)? */
static int pushable_rows(ps_t *ps, int t, uint32_t samples)
{
    const char *name = ps->tables.t[t].name;
    if (ps->pushed) {
        ps_error_set("ps_push_rows '%s': step %llu is pushed already (a step's row pushes go "
                     "before its ps_step / ps_push); ps_pull first",
                     name, (unsigned long long)ps->step);
        return PS_ESTATE;
    }
    if (ps->table_pushed[t] == ps->step + 1) {
        ps_error_set("ps_push_rows '%s': pushed twice in step %llu", name,
                     (unsigned long long)ps->step);
        return PS_ESTATE;
    }
    int any = 0;
    for (int i = 0; i < ps->tables.n; i++) {
        any |= ps->table_pushed[i] == ps->step + 1;
    }
    if ((any || ps->open) && samples != (ps->open ? ps->samples : ps->rows_samples)) {
        ps_error_set("ps_push_rows '%s': %u samples, but this step's earlier push said %u", name,
                     samples, ps->open ? ps->samples : ps->rows_samples);
        return PS_EINVAL;
    }
    if (!any) {
        ps->rows_nonfinite = 0;
    }
    return 0;
}

static int push_rows(ps_t *ps, int t, const uint64_t *keys, size_t n, const float *grads,
                     uint32_t samples)
{
    uint32_t dim = ps->tables.t[t].dim;
    size_t m = samples == 0 ? 0 : n; /* no samples: no weight, no rows */
    keyed_t *v = NULL;
    uint64_t *ukeys = malloc((m ? m : 1) * sizeof *ukeys);
    float *ug = malloc((m ? m : 1) * dim * sizeof *ug);
    int rv = ukeys && ug ? sorted(keys, m, &v) : PS_ENOMEM;
    if (rv != 0) {
        ps_error_set("ps_push_rows: no memory for %zu rows", n);
        goto out;
    }
    size_t u = dedup(v, m, grads, dim, ukeys, ug);
    if (ps_first_nonfinite(ug, 0, u * dim) < u * dim) {
        if (!ps->srv.nonfinite_skip) {
            ps_error_set("non-finite gradient on worker %d in table %s at step %llu "
                         "(--on-nonfinite abort)",
                         ps->boot.rank, ps->tables.t[t].name, (unsigned long long)ps->step + 1);
            rv = ps_api_break(ps, PS_ERANGE);
            goto out;
        }
        ps->rows_nonfinite = 1;
    }
    ps->table_pushed[t] = ps->step + 1;
    ps->rows_samples = samples;
    if ((rv = send_pushes(ps, t, ukeys, ug, u, samples)) != 0) {
        rv = ps_api_break(ps, rv);
    }
out:
    free(v);
    free(ukeys);
    free(ug);
    return rv;
}

int ps_push_rows(ps_t *ps, const char *table, const uint64_t *keys, size_t n, const float *grads,
                 uint32_t samples, ps_rows_t **handle)
{
    if (!ps) {
        return ps_api_no_handle("ps_push_rows");
    }
    int t, rv = rows_call(ps, "ps_push_rows", table, keys, n, grads, &t);
    if (rv == 0) {
        rv = pushable_rows(ps, t, samples);
    }
    if (rv == 0) {
        rv = push_rows(ps, t, keys, n, grads, samples);
    }
    if (rv == 0 && handle) {
        /* The rows were copied and handed to the transport: done already. */
        if (!(*handle = calloc(1, sizeof **handle))) {
            ps_error_set("ps_push_rows: no memory for a handle");
            return PS_ENOMEM;
        }
        (*handle)->ps = ps;
        (*handle)->table = t;
        (*handle)->step = ps->step;
    }
    return rv;
}

int ps_rows_step_check(ps_t *ps, int *skip)
{
    for (int t = 0; t < ps->tables.n; t++) {
        if (ps->table_pushed[t] != ps->step + 1) {
            ps_error_set("step %llu: table '%s' was not pushed (ps_push_rows once per table "
                         "per step, n may be 0, before the step's dense push)",
                         (unsigned long long)ps->step, ps->tables.t[t].name);
            return PS_ESTATE;
        }
    }
    if (ps->tables.n > 0 && ps->rows_samples != ps->samples) {
        ps_error_set("step %llu: the row pushes said %u samples, the dense push %u",
                     (unsigned long long)ps->step, ps->rows_samples, ps->samples);
        return PS_EINVAL;
    }
    *skip |= ps->tables.n > 0 && ps->rows_nonfinite;
    return 0;
}

int ps_rows_flush(ps_t *ps, int skip)
{
    int rv = 0;
    for (size_t i = 0; i < ps->nrows_held; i++) {
        ps_rows_held_t *m = &ps->rows_held[i];
        if (skip) {
            m->h.flags |= PS_FLAG_SKIP;
        }
        if (rv == 0) {
            rv = ps_tp_send(wkr_client_tp(ps->client), m->server, m->stream, &m->h, m->buf,
                            m->h.payload, free_buf, NULL);
        } else {
            free(m->buf);
        }
    }
    ps->nrows_held = 0;
    return rv;
}

void ps_rows_fini(ps_t *ps)
{
    for (size_t i = 0; i < ps->nrows_held; i++) {
        free(ps->rows_held[i].buf);
    }
    free(ps->rows_held);
    ps->rows_held = NULL;
    ps->nrows_held = ps->caprows_held = 0;
    while (ps->rows_inflight) {
        ps_rows_t *h = ps->rows_inflight;
        ps->rows_inflight = h->next;
        h->pending = 0; /* a later ps_wait_rows must not wait on a freed ps_t */
    }
}
