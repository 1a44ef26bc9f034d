/*
 * ps_transport: the data plane, the only module that includes zmq.h.
 *
 * A server owns one ROUTER socket per plane: tcp (ports the OS chooses)
 * and/or ipc (unix sockets in a private folder); a worker owns `streams`
 * DEALERs per server (one tcp or ipc connection each, spread over the I/O
 * threads, so one connection's copy loop is not the ceiling), all on the
 * plane it uses for that server (ps_plane decides it).
 * A server binds one endpoint ("lane") per I/O thread, up to
 * PS_TP_MAX_LANES, on each plane's ROUTER; the connections that arrive
 * through lane i are served by I/O thread i (or, with more threads than
 * lanes, by threads i, i + lanes, ...), and stream j of worker w
 * connects through lane (w + j) % lanes, so the workers' busiest streams
 * (stream 0 of each) are spread over the server's I/O threads by rank,
 * not by the luck of the order they connect in.  The advertised endpoint
 * is the lanes' endpoints separated by single spaces, the ipc ones first;
 * any one lane of a plane reaches that plane's socket.
 * Every message is [header, payload] (see ps_wire.h); on the server the
 * ROUTER adds the peer's routing id, 'w' + the worker's rank (u32 LE) + the
 * stream (u8), so replies are addressed by rank and stream: a reply goes
 * back on the stream its request came on.
 *
 * Sending: the header is copied (PS_WIRE_HDR_SIZE bytes); the payload is sent zero-copy
 * when a free callback is given (the caller must keep the bytes unchanged
 * until the callback runs, on a zmq I/O thread), copied otherwise.  A given
 * callback runs exactly once whatever ps_tp_send returns: after zmq has
 * sent or dropped the bytes, or on the caller's thread before ps_tp_send
 * returns when the message was never queued (a peer gone: EHOSTUNREACH on
 * the routing id) or the payload was copied (len 0).
 * Receiving: the payload stays in zmq's buffer (zero-copy) until
 * ps_tp_msg_release.  A message that fails ps_wire_decode, has the wrong
 * number of frames or an unknown routing id is dropped, counted in the
 * stats and reported as PS_EPROTO with a detail; it never reaches the caller.
 *
 * Security: with keys, every connection is authenticated as one worker
 * rank by a ZAP handler on a thread of the transport (ps_tp_auth.h):
 *   - tcp speaks CurveZMQ: the server accepts a client only when its
 *     public key is on its allow list (ps_tp_server_allow);
 *   - ipc sockets live in a folder only this user can enter (0700, made
 *     by mkdtemp with a random name), and the server accepts a client only
 *     when the kernel's credentials of its process (SO_PEERCRED) say our
 *     own uid and the pid of a worker of this job on this host
 *     (ps_tp_server_place).  Bytes on ipc never leave the machine, so
 *     they are not encrypted.
 * Every refused handshake, and every connection that fails the handshake
 * for any reason (a plain-text client on tcp, the wrong server key), is
 * counted.  Every message received carries the rank its connection
 * proved (ps_tp_msg_t.auth_rank): the routing id is the client's own
 * choice, so the caller must compare the two (the transport reports, the
 * server loop judges).  Without keys (--insecure) there is no
 * authentication on either plane: anyone who reaches the port (on ipc:
 * any process of this user) can send messages, under any routing id not
 * already connected.
 * The ipc folder and its socket files are removed by ps_tp_destroy, also
 * when ps_tp_server_new fails half-way; they are registered with
 * ps_cleanup (a signal, an abort); and a small janitor process (/bin/sh)
 * that waits for this process to be gone removes them whatever happens
 * (SIGKILL included).
 * Not thread-safe: one thread per ps_tp_t (the ZAP thread is internal).
 */
#ifndef PS_TRANSPORT_H
#define PS_TRANSPORT_H

#include "ps_wire.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ps_tp ps_tp_t;
typedef void (*ps_tp_free_fn)(void *data, void *hint);

typedef struct {
    ps_hdr_t hdr;
    const uint8_t *payload; /* valid until ps_tp_msg_release */
    size_t len;
    int peer;   /* server: worker rank from the routing id; worker: server index */
    int stream; /* which of that worker's connections it came on */
    /* Server with authentication: the rank whose key (tcp) or process
     * (ipc) the sender's connection proved (-1 if none, which an accepted
     * connection never gives).  Server without security, and every
     * worker: PS_TP_AUTH_NONE. */
    int auth_rank;
    _Alignas(8) unsigned char impl[64]; /* the zmq message holding the payload */
    int held;
} ps_tp_msg_t;

typedef struct {
    uint64_t rx_msgs, rx_bytes, tx_msgs, tx_bytes;
    uint64_t rx_malformed;       /* dropped by the transport itself */
    uint64_t handshakes_refused; /* not a rank of the job, or failed the handshake */
} ps_tp_stats_t;

#define PS_TP_MAX_STREAMS 16 /* connections per worker and server */
#define PS_TP_AUTH_NONE (-2) /* auth_rank on a socket without authentication */
#define PS_TP_MAX_LANES 4    /* endpoints a server binds, one per I/O thread */
#define PS_TP_KEY_LEN 41     /* a Z85 CurveZMQ key, 40 characters + NUL */

typedef struct {
    char pub[PS_TP_KEY_LEN];
    char sec[PS_TP_KEY_LEN];
} ps_tp_keypair_t;

/* A fresh CurveZMQ key pair; PS_EZMQ when libzmq was built without CURVE. */
int ps_tp_keypair(ps_tp_keypair_t *kp);

/* Bind a ROUTER per plane named in `bases`: "tcp://10.0.0.1" (lanes on
 * ports the OS chooses), "ipc://DIR" (lanes as socket files "0", "1", ...
 * in a new private folder inside DIR, which must exist), or both separated
 * by one space; one lane per I/O thread up to PS_TP_MAX_LANES on each.
 * The endpoint to advertise (the lanes, space-separated, ipc first) is
 * written to `endpoint`, PS_EINVAL when it does not fit in `cap`.
 * io_threads 1..64.  `keys` NULL: no security on either plane; otherwise
 * tcp speaks CurveZMQ with this key pair, ipc checks the peer process, and
 * until ps_tp_server_allow / ps_tp_server_place every client is refused. */
int ps_tp_server_new(ps_tp_t **out, const char *bases, int io_threads, const ps_tp_keypair_t *keys,
                     char *endpoint, size_t cap);
/* Replace the allow list with n Z85 public keys, pubkeys[r] worker rank
 * r's: a tcp connection with that key is authenticated as rank r.
 * PS_EINVAL for a malformed key or one key for two ranks.  No-op without
 * keys. */
int ps_tp_server_allow(ps_tp_t *tp, const char (*pubkeys)[PS_TP_KEY_LEN], int n);

/* Where worker rank r connects from: over ipc (else tcp), and its process
 * id when it runs on this host (0 otherwise; never matched). */
typedef struct {
    int64_t pid;
    int ipc;
} ps_tp_place_t;
/* Tell the server where its n workers are: with keys, an ipc connection
 * is authenticated as rank r only when its process runs as our uid with
 * pid place[r].pid; replies to rank r go out on its plane's socket (a
 * server with both planes cannot reply before this).  PS_EINVAL when a
 * worker's plane is not bound here, or two ranks give one pid. */
int ps_tp_server_place(ps_tp_t *tp, const ps_tp_place_t *place, int n);
/* The lanes of one plane (ipc when `ipc`, else tcp) of an advertised
 * endpoint, space-separated, into out; PS_ENOENT when it has none. */
int ps_tp_endpoint_select(const char *advertised, int ipc, char *out, size_t cap);
/* Connect `streams` (1..PS_TP_MAX_STREAMS) DEALERs to every server
 * endpoint (as ps_tp_server_new advertises it: lanes separated by spaces),
 * with routing ids naming `rank` and the stream; stream j of server s goes
 * through lane (rank + j) % lanes and is served by this side's I/O thread
 * (s * streams + j) % io_threads.
 * An endpoint lists the lanes of the one plane to use (ps_tp_endpoint_select).
 * keys NULL: plain text.  Otherwise tcp connections speak CurveZMQ with
 * this key pair, and server_pub[s] is server s's public key ("" for a
 * server without security); ipc connections need no key (the server
 * checks the process). */
int ps_tp_client_new(ps_tp_t **out, int rank, int nservers, char *const *endpoints, int streams,
                     int io_threads, const ps_tp_keypair_t *keys,
                     const char (*server_pub)[PS_TP_KEY_LEN]);
void ps_tp_destroy(ps_tp_t **tp);

/* dest: worker rank on a server, server index on a worker; stream: which
 * of the connections between the two (0..streams-1 on a worker; a server
 * answers on the request's m->stream).  ffn, when given, runs exactly once
 * on every path, failures included (see above): the caller must not
 * release what it releases itself when this fails. */
int ps_tp_send(ps_tp_t *tp, int dest, int stream, const ps_hdr_t *h, const void *payload,
               size_t len, ps_tp_free_fn ffn, void *hint);
/* Wait up to timeout_ms (< 0: forever) for one message.  0 with *m filled,
 * PS_EAGAIN on timeout, PS_EPROTO for a dropped malformed message (m->peer
 * is the sender's rank when known, else -1), PS_EZMQ on socket failure.
 * The header is checked before the routing id, so a peer of another
 * protocol version is told so rather than "unknown routing id".  Once a
 * stop is requested (SIGINT/SIGTERM, ps_signal), a wait (timeout_ms != 0)
 * returns what is already queued, then PS_EINTR. */
int ps_tp_recv(ps_tp_t *tp, ps_tp_msg_t *m, int timeout_ms);
void ps_tp_msg_release(ps_tp_msg_t *m);
/* Move a received message to another place (a ps_tp_msg_t must never be
 * copied with memcpy or assignment: small payloads live inside it); src is
 * left empty. */
void ps_tp_msg_move(ps_tp_msg_t *dst, ps_tp_msg_t *src);
void ps_tp_stats(const ps_tp_t *tp, ps_tp_stats_t *st);
/* Let the sockets handle what zmq's I/O threads told them (a peer gone:
 * the messages queued to it are dropped, and their free callbacks run)
 * without receiving anything.  ps_tp_recv does this too; a thread that
 * waits for free callbacks instead of receiving calls this meanwhile. */
void ps_tp_service(ps_tp_t *tp);
/* Once per process, before the sockets: keep glibc from returning zmq's
 * large receive buffers to the kernel after every message (otherwise each
 * step page-faults its whole model in again; docs/performance.md). */
void ps_tp_tune_malloc(void);

#endif
