/*
 * srv_sparse: sparse tables on the server (see srv_sparse.h); the message
 * handlers at the end run inside srv_loop.
 */
#include "srv_sparse.h"
#include "srv_ckpt_tables.h"
#include "srv_loop.h"

#include "ps_bytes.h"
#include "ps_clock.h"
#include "ps_err.h"
#include "ps_finite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_sparse_init(srv_sparse_t *sp, const srv_sparse_cfg_t *cfg)
{
    memset(sp, 0, sizeof *sp);
    sp->cfg = *cfg;
    sp->nslots = cfg->mode == PS_MODE_ASYNC
                     ? 1
                     : (int)(cfg->mode == PS_MODE_SSP ? cfg->staleness : 0) + 1 + SRV_SPARSE_AHEAD;
}

static void drop_held(srv_rows_held_t *h)
{
    free(h->keys);
    free(h->grad);
    memset(h, 0, sizeof *h);
}

static void table_fini(srv_sparse_t *sp, srv_sparse_table_t *t)
{
    size_t nh = (size_t)sp->nslots * (size_t)sp->cfg.nworkers;
    for (size_t i = 0; t->held && i < nh; i++) {
        drop_held(&t->held[i]);
    }
    for (size_t i = 0; i < t->npulls; i++) {
        free(t->pulls[i].keys);
    }
    free(t->held);
    free(t->arrived);
    free(t->next_step);
    free(t->pulls);
    free(t->lrs);
    srv_table_destroy(&t->tbl);
}

void srv_sparse_fini(srv_sparse_t *sp)
{
    for (int i = 0; sp->t && i < sp->decls.n; i++) {
        table_fini(sp, &sp->t[i]);
    }
    free(sp->t);
    sp->t = NULL;
    sp->declared = 0;
}

static int table_new(srv_sparse_t *sp, int i)
{
    srv_sparse_table_t *t = &sp->t[i];
    const ps_table_decl_t *d = &sp->decls.t[i];
    size_t nh = (size_t)sp->nslots * (size_t)sp->cfg.nworkers;
    srv_table_init_t init = {.kind = d->init, .bound = d->bound, .seed = d->seed};
    t->decl = *d;
    t->held = calloc(nh, sizeof *t->held);
    t->arrived = calloc((size_t)sp->nslots, sizeof *t->arrived);
    t->next_step = calloc((size_t)sp->cfg.nworkers, sizeof *t->next_step);
    if (!t->held || !t->arrived || !t->next_step) {
        ps_error_set("server %d: no memory for the state of table '%s'", sp->cfg.server, d->name);
        return PS_ENOMEM;
    }
    return srv_table_new(&t->tbl, d->name, (uint32_t)i, d->dim, &init, &sp->cfg.opt, sp->cfg.update,
                         sp->cfg.max_bytes);
}

int srv_sparse_declare(srv_sparse_t *sp, const ps_tables_t *decls)
{
    sp->decls = *decls;
    sp->t = calloc(decls->n ? (size_t)decls->n : 1, sizeof *sp->t);
    if (!sp->t) {
        ps_error_set("server %d: no memory for %d tables", sp->cfg.server, decls->n);
        return PS_ENOMEM;
    }
    for (int i = 0; i < decls->n; i++) {
        int rv = table_new(sp, i);
        if (rv != 0) {
            srv_sparse_fini(sp);
            return rv;
        }
    }
    sp->declared = 1;
    return 0;
}

size_t srv_sparse_bytes(const srv_sparse_t *sp)
{
    size_t n = 0;
    for (int i = 0; sp->t && i < sp->decls.n; i++) {
        n += srv_table_bytes(sp->t[i].tbl);
    }
    return n;
}

int srv_sparse_ntables(const srv_sparse_t *sp)
{
    return sp->declared ? sp->decls.n : 0;
}

/* Remember step's lr (the table took the step). */
static int note_lr(srv_sparse_table_t *t, double lr)
{
    if (t->nlrs == t->caplrs) {
        size_t cap = t->caplrs ? 2 * t->caplrs : 64;
        double *v = realloc(t->lrs, cap * sizeof *v);
        if (!v) {
            ps_error_set("no memory for the lr history of table '%s'", t->decl.name);
            return PS_ENOMEM;
        }
        t->lrs = v;
        t->caplrs = cap;
    }
    t->lrs[t->nlrs++] = lr;
    return 0;
}

uint64_t srv_sparse_min_version(const srv_sparse_t *sp)
{
    uint64_t v = UINT64_MAX;
    for (int i = 0; sp->t && i < sp->decls.n; i++) {
        v = sp->t[i].version < v ? sp->t[i].version : v;
    }
    return v;
}

/* ---- the loop's handlers ------------------------------------------------ */

/* The table a row message names, checked: id, dim, keys ours and strictly
 * ascending.  Keys are copied out (the payload need not be 8-aligned).
 * NULL, counted, when anything is wrong. */
static srv_sparse_table_t *checked_table(srv_loop_t *L, const ps_tp_msg_t *m, uint64_t **keys)
{
    srv_sparse_t *sp = &L->sparse;
    char why[160];
    *keys = NULL;
    if (!sp->declared || m->hdr.chunk >= (uint32_t)sp->decls.n) {
        snprintf(why, sizeof why, "%s: table %u is not declared", ps_wire_type_name(m->hdr.type),
                 m->hdr.chunk);
        srv_loop_reject(L, SRV_REJ_CHUNK, m->peer, why);
        return NULL;
    }
    srv_sparse_table_t *t = &sp->t[m->hdr.chunk];
    if (m->hdr.offset != t->decl.dim) {
        snprintf(why, sizeof why, "%s: table '%s' has dim %u, message says %llu",
                 ps_wire_type_name(m->hdr.type), t->decl.name, t->decl.dim,
                 (unsigned long long)m->hdr.offset);
        srv_loop_reject(L, SRV_REJ_CHUNK, m->peer, why);
        return NULL;
    }
    size_t n = m->hdr.count;
    uint64_t *k = malloc((n ? n : 1) * sizeof *k);
    if (!k) {
        srv_loop_reject(L, SRV_REJ_MALFORMED, m->peer, "no memory for the keys");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        k[i] = ps_get_u64(m->payload + 8 * i);
    }
    if (!ps_keys_check(k, n, (uint32_t)sp->cfg.server, (uint32_t)sp->cfg.nservers)) {
        snprintf(why, sizeof why, "%s: table '%s': keys not strictly ascending or not server %d's",
                 ps_wire_type_name(m->hdr.type), t->decl.name, sp->cfg.server);
        srv_loop_reject(L, SRV_REJ_CHUNK, m->peer, why);
        free(k);
        return NULL;
    }
    *keys = k;
    return t;
}

/* The memory budget after a table grew. */
static int check_budget(srv_loop_t *L, const srv_sparse_table_t *t)
{
    srv_sparse_t *sp = &L->sparse;
    size_t used = srv_sparse_bytes(sp);
    if (sp->cfg.max_bytes == 0 || used <= sp->cfg.max_bytes) {
        return 0;
    }
    ps_error_set("server %d: table '%s' grew to %zu rows and the tables now take %zu MiB, over "
                 "--max-table-mib (%zu MiB on this server)",
                 sp->cfg.server, t->decl.name, srv_table_rows(t->tbl), used >> 20,
                 sp->cfg.max_bytes >> 20);
    return PS_ENOMEM;
}

/* A table's own error (PS_ENOMEM over its bound) gets the server named. */
static int table_failed(srv_loop_t *L, int rv)
{
    char why[900];
    snprintf(why, sizeof why, "%s", ps_error_msg());
    ps_error_set("server %d: %s", L->sparse.cfg.server, why);
    return rv;
}

static void reply_free(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Answer a pull: the rows of its keys, read now. */
static int send_rows(srv_loop_t *L, srv_sparse_table_t *t, const srv_rows_pull_t *p)
{
    static ps_ratelimit_t rl;
    size_t bytes = p->n * t->decl.dim * sizeof(float);
    float *out = malloc(bytes);
    if (!out) {
        ps_error_set("server %d: no memory for a reply of %zu rows of table '%s'",
                     L->sparse.cfg.server, p->n, t->decl.name);
        return PS_ENOMEM;
    }
    int rv = srv_table_read(t->tbl, p->keys, p->n, out);
    if (rv != 0) {
        free(out);
        return table_failed(L, rv);
    }
    if ((rv = check_budget(L, t)) != 0) {
        free(out);
        return rv;
    }
    ps_hdr_t h = ps_wire_hdr(PS_MSG_ROWS_REPLY, (uint32_t)L->cfg.server);
    h.request = p->request;
    h.step = t->version;
    h.chunk = (uint32_t)(t - L->sparse.t);
    h.offset = t->decl.dim;
    h.count = (uint32_t)p->n;
    h.payload = bytes;
    L->sparse.rows_pulled += p->n;
    if (ps_tp_send(L->cfg.tp, p->worker, p->stream, &h, out, bytes, reply_free, NULL) != 0) {
        L->replies_lost++;
        ps_log_ratelimited(&rl, "a row reply of table '%s' was not delivered: %s", t->decl.name,
                           ps_error_msg());
    }
    return 0;
}

/* Answer the held pulls the table's version now satisfies. */
static int answer_pulls(srv_loop_t *L, srv_sparse_table_t *t)
{
    size_t keep = 0;
    int rv = 0;
    for (size_t i = 0; i < t->npulls; i++) {
        srv_rows_pull_t p = t->pulls[i];
        if (rv == 0 && t->version >= p.want) {
            rv = send_rows(L, t, &p);
            free(p.keys);
        } else {
            t->pulls[keep++] = p;
        }
    }
    t->npulls = keep;
    return rv;
}

/* Hold a pull until its version is reached: at most SRV_SPARSE_MAX_HELD
 * per worker and table (a worker has at most a few in flight; more is a
 * flood, refused rather than grown without bound). */
static int hold_pull(srv_loop_t *L, srv_sparse_table_t *t, const srv_rows_pull_t *p)
{
    int mine = 0;
    for (size_t i = 0; i < t->npulls; i++) {
        mine += t->pulls[i].worker == p->worker;
    }
    if (mine >= SRV_SPARSE_MAX_HELD) {
        srv_loop_reject(L, SRV_REJ_DUPLICATE, p->worker, "too many row pulls held");
        free(p->keys);
        return 0;
    }
    if (t->npulls == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 4;
        srv_rows_pull_t *v = realloc(t->pulls, cap * sizeof *v);
        if (!v) {
            free(p->keys);
            ps_error_set("server: no memory to hold a pull of table '%s'", t->decl.name);
            return PS_ENOMEM;
        }
        t->pulls = v;
        t->cap = cap;
    }
    t->pulls[t->npulls++] = *p;
    return 0;
}

int srv_sparse_handle_pull(srv_loop_t *L, ps_tp_msg_t *m)
{
    srv_rows_pull_t p = {.want = m->hdr.step,
                         .request = m->hdr.request,
                         .worker = m->peer,
                         .stream = m->stream,
                         .n = m->hdr.count};
    srv_sparse_table_t *t = checked_table(L, m, &p.keys);
    if (!t) {
        return 0;
    }
    L->sparse.pulls++;
    if (t->version >= p.want) {
        int rv = send_rows(L, t, &p);
        free(p.keys);
        return rv;
    }
    return hold_pull(L, t, &p); /* it owns the keys now */
}

/* The learning rate of update t. */
static double lr_at(const srv_sparse_t *sp, uint64_t t)
{
    return sp->cfg.lr_of ? sp->cfg.lr_of(sp->cfg.lr_arg, t) : sp->cfg.opt.lr;
}

/* Apply the parts (rank order) with their sample weights at lr_at(step). */
static int apply_parts(srv_loop_t *L, srv_sparse_table_t *t, const srv_rows_held_t *const *in,
                       int nin, uint64_t lr_step, int async)
{
    srv_sparse_t *sp = &L->sparse;
    srv_rows_part_t parts[nin > 0 ? nin : 1];
    uint64_t total = 0;
    int k = 0;
    for (int i = 0; i < nin; i++) {
        total += in[i]->samples;
    }
    for (int i = 0; i < nin && total > 0; i++) {
        if (in[i]->samples == 0) {
            continue; /* no weight: as the dense store, it is not a part */
        }
        parts[k].keys = in[i]->keys;
        parts[k].n = in[i]->n;
        parts[k].grad = in[i]->grad;
        parts[k].coef = async ? 1.0f : (float)((double)in[i]->samples / (double)total);
        k++;
    }
    if (k == 0) {
        return 0; /* a zero-sample step: the table's step does not move */
    }
    double t0 = ps_clock_now(), lr = lr_at(sp, lr_step);
    int rv = srv_table_apply(t->tbl, parts, k, lr);
    sp->apply_s += ps_clock_now() - t0;
    L->apply_s += ps_clock_now() - t0;
    if (rv != 0) {
        return table_failed(L, rv);
    }
    if ((rv = note_lr(t, lr)) != 0) {
        return rv;
    }
    return check_budget(L, t);
}

/* Sync/ssp: apply every complete step from the table's version on. */
static int apply_ready(srv_loop_t *L, srv_sparse_table_t *t)
{
    srv_sparse_t *sp = &L->sparse;
    int W = sp->cfg.nworkers;
    int rv = 0;
    for (;;) {
        int slot = (int)(t->version % (uint64_t)sp->nslots);
        if (t->arrived[slot] < W) {
            return rv;
        }
        srv_rows_held_t *row = &t->held[(size_t)slot * (size_t)W];
        const srv_rows_held_t *in[W];
        int skip = 0;
        for (int w = 0; w < W; w++) {
            in[w] = &row[w];
            skip |= row[w].skip;
        }
        if (skip) {
            t->skipped++;
        } else if ((rv = apply_parts(L, t, in, W, t->version, 0)) != 0) {
            return rv;
        }
        for (int w = 0; w < W; w++) {
            drop_held(&row[w]);
        }
        t->arrived[slot] = 0;
        t->version++;
        srv_loop_checkpoint_due(L); /* before the replies that let workers past it */
        if ((rv = answer_pulls(L, t)) != 0) {
            return rv;
        }
    }
}

/* The step window of the mode; a detail when the push is outside it. */
static int push_window(srv_loop_t *L, srv_sparse_table_t *t, int w, uint64_t step, char *why,
                       size_t cap)
{
    srv_sparse_t *sp = &L->sparse;
    if (sp->cfg.mode == PS_MODE_ASYNC) {
        if (step == UINT64_MAX || step + 1 <= t->next_step[w]) {
            snprintf(why, cap, "table '%s': step %llu replays worker %d's earlier push",
                     t->decl.name, (unsigned long long)step, w);
            return SRV_REJ_DUPLICATE;
        }
        return -1;
    }
    uint64_t hi = t->version + (uint64_t)sp->nslots - 1;
    if (step < t->version || step > hi || step == UINT64_MAX) {
        snprintf(why, cap, "table '%s': push for step %llu, window %llu..%llu", t->decl.name,
                 (unsigned long long)step, (unsigned long long)t->version, (unsigned long long)hi);
        return SRV_REJ_STEP;
    }
    size_t i = (size_t)(step % (uint64_t)sp->nslots) * (size_t)sp->cfg.nworkers + (size_t)w;
    if (t->held[i].in) {
        snprintf(why, cap, "table '%s': second push of step %llu from worker %d", t->decl.name,
                 (unsigned long long)step, w);
        return SRV_REJ_DUPLICATE;
    }
    return -1;
}

/* The push's gradients, copied out; NULL on no memory. */
static float *grads_of(const ps_tp_msg_t *m)
{
    size_t n = (size_t)m->hdr.count * (size_t)m->hdr.offset;
    float *g = malloc((n ? n : 1) * sizeof *g);
    if (g && n) {
        memcpy(g, m->payload + 8 * (size_t)m->hdr.count, n * sizeof *g);
    }
    return g;
}

/* A non-finite gradient: end the job (abort), or the step is dropped. */
static int nonfinite_rows(srv_loop_t *L, srv_sparse_table_t *t, const ps_tp_msg_t *m)
{
    if (L->sparse.cfg.nonfinite_skip) {
        return 0;
    }
    ps_error_set("non-finite gradient from worker %d (host %s) in table %s at step %llu "
                 "(--on-nonfinite abort)",
                 m->peer, L->cfg.worker_hosts ? L->cfg.worker_hosts[m->peer] : "?", t->decl.name,
                 (unsigned long long)m->hdr.step + 1);
    return PS_ERANGE;
}

static int take_async(srv_loop_t *L, srv_sparse_table_t *t, srv_rows_held_t *h, uint64_t step,
                      int w)
{
    const srv_rows_held_t *in[1] = {h};
    int rv = 0;
    t->next_step[w] = step + 1;
    if (!h->skip && h->samples > 0) {
        rv = apply_parts(L, t, in, 1, step, 1);
        t->version++;
    } else if (h->skip) {
        t->skipped++;
    }
    drop_held(h);
    return rv ? rv : answer_pulls(L, t);
}

int srv_sparse_handle_push(srv_loop_t *L, ps_tp_msg_t *m)
{
    srv_sparse_t *sp = &L->sparse;
    srv_rows_held_t h = {.n = m->hdr.count, .samples = m->hdr.samples};
    srv_sparse_table_t *t = checked_table(L, m, &h.keys);
    char why[200];
    if (!t) {
        return 0;
    }
    int w = m->peer, rej = push_window(L, t, w, m->hdr.step, why, sizeof why);
    if (rej >= 0) {
        srv_loop_reject(L, (srv_reject_t)rej, w, why);
        free(h.keys);
        return 0;
    }
    if (!(h.grad = grads_of(m))) {
        free(h.keys);
        ps_error_set("server %d: no memory for a push of %zu rows", sp->cfg.server, h.n);
        return PS_ENOMEM;
    }
    h.skip = (m->hdr.flags & PS_FLAG_SKIP) != 0;
    size_t len = h.n * t->decl.dim;
    if (!h.skip && ps_first_nonfinite(h.grad, 0, len) < len) {
        int rv = nonfinite_rows(L, t, m);
        if (rv != 0) {
            drop_held(&h);
            return rv;
        }
        h.skip = 1;
    }
    h.in = 1;
    sp->pushes++;
    sp->rows_pushed += h.n;
    if (m->hdr.step + 1 > L->worker_step[w]) {
        L->worker_step[w] = m->hdr.step + 1;
    }
    if (sp->cfg.mode == PS_MODE_ASYNC) {
        return take_async(L, t, &h, m->hdr.step, w);
    }
    int slot = (int)(m->hdr.step % (uint64_t)sp->nslots);
    t->held[(size_t)slot * (size_t)sp->cfg.nworkers + (size_t)w] = h;
    t->arrived[slot]++;
    return apply_ready(L, t);
}

void srv_sparse_handle_tables(srv_loop_t *L, ps_tp_msg_t *m)
{
    ps_tables_t d;
    if (m->peer != 0) {
        srv_loop_reject(L, SRV_REJ_SENDER, m->peer, "TABLES from a worker other than rank 0");
        return;
    }
    if (ps_tables_decode(&d, m->payload, m->len) != 0) {
        srv_loop_reject(L, SRV_REJ_LAYOUT, m->peer, ps_error_msg());
        return;
    }
    if (L->sparse.declared) {
        if (ps_tables_hash(&d) != ps_tables_hash(&L->sparse.decls)) {
            srv_loop_reject(L, SRV_REJ_LAYOUT, m->peer, "a second, different TABLES");
        }
        return;
    }
    int rv = srv_sparse_declare(&L->sparse, &d);
    if (rv == 0 && L->cfg.resume) {
        rv = srv_ckpt_tables_apply(L->cfg.resume, &L->sparse, L->cfg.resume->step);
    }
    if (rv != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "server %d cannot hold the tables: %s", L->cfg.server,
                 ps_error_msg());
        srv_loop_send_simple(L, m->peer, m->stream, PS_MSG_ERROR, m->hdr.request, msg);
        ps_error_set("%s", msg);
        L->failed = rv;
    }
}
