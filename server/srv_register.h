/*
 * srv_register: the setup phase of the server's event loop (srv_loop.h).
 *
 * Worker 0's REGISTER carries the model's layout: the store is built from
 * it (or refused, with an ERROR to worker 0 and L->failed set, when it
 * cannot be held or is not the --resume checkpoint's model), then every
 * local chunk's INIT fills the weights, unless a checkpoint already did.
 * Any other message is counted as out of phase.  A second REGISTER with
 * the same layout is ignored; with another, refused.
 */
#ifndef SRV_REGISTER_H
#define SRV_REGISTER_H

#include "srv_loop.h"

/* One setup-phase message; always 0 (refusals are counted or set
 * L->failed). */
int srv_register_dispatch(srv_loop_t *L, ps_tp_msg_t *m);
/* A REGISTER, in either phase (in training a repeat is harmless, a
 * different layout refused). */
void srv_register_handle(srv_loop_t *L, ps_tp_msg_t *m);

#endif
