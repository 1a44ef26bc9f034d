/*
 * ps_tp_auth: the transport's CurveZMQ gatekeeper (part of the transport
 * module; only ps_transport.c uses it, and like it, it includes zmq.h).
 *
 * A thread that answers libzmq's ZAP requests for one context: a CURVE
 * client is accepted only when its public key is on the allow list, and
 * its connection is then labelled with the key's rank (the ZAP user id,
 * read back per message as the "User-Id" property).  The
 * same thread watches the server socket's monitor and counts every failed
 * handshake (refused keys, plain-text clients, wrong server key).
 */
#ifndef PS_TP_AUTH_H
#define PS_TP_AUTH_H

#include <stdint.h>

typedef struct ps_tp_auth ps_tp_auth_t;

/* Start the handler on context `ctx`, watching server socket `sock`.
 * Must run before the socket binds. */
int ps_tp_auth_start(ps_tp_auth_t **out, void *ctx, void *sock);
/* Replace the allow list: n Z85 keys of 40 characters, z85[r] the key of
 * rank r.  PS_EINVAL for a malformed key or two ranks with one key. */
int ps_tp_auth_allow(ps_tp_auth_t *a, const char (*z85)[41], int n);
uint64_t ps_tp_auth_refused(const ps_tp_auth_t *a);
/* Stops the thread (call after the server socket is closed, before
 * zmq_ctx_term can return: the thread closes its sockets on ETERM). */
void ps_tp_auth_stop(ps_tp_auth_t **a);

#endif
