/*
 * srv_register: the setup phase of the server's loop (srv_loop.h).
 */
#include "srv_register.h"

#include "ps_err.h"
#include "ps_layout.h"

#include <stdio.h>
#include <stdlib.h>

/* The REGISTER payload decoded into a heap layout (123 KB: not on the
 * stack); NULL, and the message counted, when it is malformed. */
static ps_layout_t *decoded_layout(srv_loop_t *L, const ps_tp_msg_t *m)
{
    ps_layout_t *l = malloc(sizeof *l);
    if (!l) {
        srv_loop_reject(L, SRV_REJ_LAYOUT, m->peer, "no memory to decode the layout");
        return NULL;
    }
    if (ps_layout_decode(l, m->payload, m->len) != 0) {
        srv_loop_reject(L, SRV_REJ_LAYOUT, m->peer, ps_error_msg());
        free(l);
        return NULL;
    }
    return l;
}

/* Worker 0's model cannot be held (no memory, not the checkpoint's):
 * worker 0 hears why at once, and the setup ends with the same reason
 * (srv_loop_setup), so the job's 'register' step fails everywhere
 * instead of waiting out --timeout for a REGISTER that will not change. */
static void refuse_model(srv_loop_t *L, const ps_tp_msg_t *m, int rv)
{
    char msg[600];
    snprintf(msg, sizeof msg, "server %d cannot hold the model: %s", L->cfg.server, ps_error_msg());
    free(L->held);
    L->held = NULL;
    srv_store_fini(&L->store);
    L->rejected[SRV_REJ_LAYOUT]++;
    srv_loop_send_simple(L, m->peer, m->stream, PS_MSG_ERROR, m->hdr.request, msg);
    ps_error_set("%s", msg);
    L->failed = rv;
}

void srv_register_handle(srv_loop_t *L, ps_tp_msg_t *m)
{
    if (m->peer != 0) {
        srv_loop_reject(L, SRV_REJ_SENDER, m->peer, "REGISTER from a worker other than rank 0");
        return;
    }
    ps_layout_t *l = decoded_layout(L, m);
    if (!l) {
        return;
    }
    if (L->registered) {
        if (ps_layout_hash(l) != ps_layout_hash(L->store.layout)) {
            srv_loop_reject(L, SRV_REJ_LAYOUT, m->peer, "a second, different layout");
            srv_loop_send_simple(L, m->peer, m->stream, PS_MSG_ERROR, m->hdr.request,
                                 "layout already registered");
        }
        free(l);
        return;
    }
    /* The store takes l (and frees it if it fails). */
    int rv = srv_store_init(&L->store, &l, L->cfg.chunk_elems, L->cfg.server, L->cfg.nservers,
                            L->cfg.nworkers, &L->cfg.opt, srv_loop_release_push);
    if (rv == 0) {
        rv = srv_store_set_mode(&L->store, L->cfg.mode, L->cfg.staleness);
        srv_store_set_lr(&L->store, L->cfg.lr_of, L->cfg.lr_arg);
        srv_store_set_ref_wait(&L->store, L->cfg.timeout_ms, srv_loop_service_socket, L->cfg.tp);
    }
    if (rv == 0 && !(L->held = calloc(L->store.nlocal ? L->store.nlocal : 1, sizeof *L->held))) {
        ps_error_set("no memory for the pulls of %zu chunks", L->store.nlocal);
        rv = PS_ENOMEM;
    }
    if (rv == 0 && L->cfg.resume &&
        (L->cfg.resume->layout_hash != ps_layout_hash(L->store.layout) ||
         L->cfg.resume->total != L->store.layout->total)) {
        ps_error_set("the --resume checkpoint (step %llu) holds another model (%zu parameters, "
                     "layout %016llx) than the one worker 0 registered (%zu parameters, layout "
                     "%016llx)",
                     (unsigned long long)L->cfg.resume->step, L->cfg.resume->total,
                     (unsigned long long)L->cfg.resume->layout_hash, L->store.layout->total,
                     (unsigned long long)ps_layout_hash(L->store.layout));
        rv = PS_EINVAL;
    }
    if (rv != 0) {
        refuse_model(L, m, rv);
        return;
    }
    L->registered = 1;
    if (L->cfg.resume) {
        srv_ckpt_apply(L->cfg.resume, &L->store);
        L->resumed = 1;
        L->max_version = L->cfg.resume->step;
    }
    L->ckpt_next = L->max_version + L->cfg.ckpt_every;
}

static void handle_init(srv_loop_t *L, ps_tp_msg_t *m)
{
    if (m->peer != 0 || !L->registered) {
        srv_loop_reject(L, m->peer != 0 ? SRV_REJ_SENDER : SRV_REJ_PHASE, m->peer,
                        "INIT before REGISTER or not from worker 0");
        return;
    }
    srv_chunk_t *c = srv_loop_checked_chunk(L, m, 1);
    if (!c) {
        return;
    }
    L->inits_seen++;
    if (!L->resumed) {
        /* memcpy tolerates any alignment of the zmq buffer. */
        srv_store_set_init(&L->store, c, (const float *)(const void *)m->payload);
    }
}

int srv_register_dispatch(srv_loop_t *L, ps_tp_msg_t *m)
{
    switch (m->hdr.type) {
    case PS_MSG_REGISTER: srv_register_handle(L, m); return 0;
    case PS_MSG_INIT: handle_init(L, m); return 0;
    case PS_MSG_TABLES: srv_sparse_handle_tables(L, m); return 0;
    default: srv_loop_reject(L, SRV_REJ_PHASE, m->peer, ps_wire_type_name(m->hdr.type)); return 0;
    }
}
