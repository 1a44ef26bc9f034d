/*
 * ps_tp_auth: the transport's gatekeeper (part of the transport module;
 * only ps_transport.c uses it, and like it, it includes zmq.h).
 *
 * A thread that answers libzmq's ZAP requests for one context, and labels
 * every accepted connection with a worker's rank (the ZAP user id, read
 * back per message as the "User-Id" property):
 *   - tcp (CURVE): a client is accepted only when its public key is on
 *     the key list, as the key's rank;
 *   - ipc (the NULL mechanism with ZAP domain PS_TP_AUTH_IPC_DOMAIN): a
 *     client is accepted only when the peer credentials libzmq reads from
 *     the unix socket (SO_PEERCRED, appended to the peer address as
 *     ":uid:gid:pid") name our own effective uid and the pid of a worker
 *     on the pid list, as that worker's rank.
 * Anything else is refused.  The same thread watches the server sockets'
 * monitors and counts every failed handshake (refused keys or processes,
 * plain-text clients on tcp, wrong server key); the first few refused ipc
 * peers are logged with their uid and pid.
 */
#ifndef PS_TP_AUTH_H
#define PS_TP_AUTH_H

#include <stdint.h>

typedef struct ps_tp_auth ps_tp_auth_t;

/* The ZAP domain an ipc server socket sets, so that libzmq asks the
 * handler about NULL-mechanism clients too. */
#define PS_TP_AUTH_IPC_DOMAIN "ps-ipc"

/* Start the handler on context `ctx`, watching nsocks (1 or 2) server
 * sockets.  Must run before the sockets bind. */
int ps_tp_auth_start(ps_tp_auth_t **out, void *ctx, void *const *socks, int nsocks);
/* Replace the allow list: n Z85 keys of 40 characters, z85[r] the key of
 * rank r.  PS_EINVAL for a malformed key or two ranks with one key. */
int ps_tp_auth_allow(ps_tp_auth_t *a, const char (*z85)[41], int n);
/* Replace the pid list: pids[r] is worker rank r's process id when it
 * runs on this host, 0 otherwise (never matched).  PS_EINVAL when two
 * ranks give one pid. */
int ps_tp_auth_allow_pids(ps_tp_auth_t *a, const int64_t *pids, int n);
uint64_t ps_tp_auth_refused(const ps_tp_auth_t *a);
/* Stops the thread (call after the server socket is closed, before
 * zmq_ctx_term can return: the thread closes its sockets on ETERM). */
void ps_tp_auth_stop(ps_tp_auth_t **a);

#endif
