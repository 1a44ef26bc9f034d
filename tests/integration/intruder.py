#!/usr/bin/python3
"""A hostile client for ps-server's data port (integration tests only).

Reads the server endpoints (and public keys) from the file ps-server writes
with --endpoint-file, then attacks every server:

  secure     a plain-text DEALER and CURVE DEALERs (a fresh key pair with the
             server's real public key; a fresh key pair with a wrong server
             key) keep connecting and sending well-formed PUSH/PULL/REGISTER/
             SHUTDOWN messages until --stop-file exists.  Some of them use
             the workers' own routing ids ('w' + 0..W-1): without a key the
             handshake fails before the ROUTER sees the id, so even that is
             harmless.  Counts what was queued and every handshake event
             seen on the client side (a succeeded handshake is a breach).
  insecure   against an --insecure server: a fixed, counted corpus of
             malformed and unauthorised messages (see corpus()), sent from
             routing ids that are not the workers'.  Once --wait-file (the
             metrics file of worker 0) has a line, every worker has
             connected: then also a burst with the workers' routing ids,
             which the ROUTER must refuse (a second connection with a
             routing id in use), a burst on streams no worker opened
             (routing id 'w' + rank + stream 9: free ids, well-formed
             PUSH/PULL/STATS/SHUTDOWN with the worker's sender field; the
             servers know each worker's stream count from start-up and
             must refuse every one as "sender"), then the corpus again
             (INIT during training, ...).  Grabbing a worker's id before
             that worker connects would deny it service; --insecure cannot
             prevent that, so the intruder never does it.
  trickle    one malformed message every --interval seconds until
             --stop-file exists (does unauthenticated noise keep a server
             from noticing a silent worker?).

Writes a JSON report to --report (with the endpoints it attacked).  Exit status 0 unless the intruder itself
failed (no endpoint file, ...).
"""
import argparse
import json
import os
import random
import struct
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

MAGIC = 0x514D5350
VERSION = 5
(REGISTER, INIT, ACK, ERROR, PUSH, PULL, PULL_REPLY, SHUTDOWN, STATS,
 STATS_REPLY) = range(1, 11)
# docs/protocol.md: magic, version, type, flags, sender, request, step,
# chunk, reserved, offset, count, samples, payload bytes, base.
HDR = struct.Struct("<IHBBIIQIIQIIQQ")
assert HDR.size == 64


def header(mtype, *, magic=MAGIC, version=VERSION, flags=0, sender=0,
           request=0, step=0, chunk=0, reserved=0, offset=0, count=0,
           samples=0, payload=0, base=0):
    return HDR.pack(magic, version, mtype, flags, sender, request, step,
                    chunk, reserved, offset, count, samples, payload, base)


def msg(mtype, body=b"", **kw):
    """Two frames whose header states the body's length (unless told)."""
    kw.setdefault("payload", len(body))
    return [header(mtype, **kw), body]


def floats(n, value=1e30):
    return struct.pack("<%df" % n, *([value] * n))


def wid(rank, stream=0):
    """The workers' routing id: 'w' + little-endian u32 rank + u8 stream."""
    return b"w" + struct.pack("<IB", rank & 0xFFFFFFFF, stream)


def layout(tensors):
    """ps_layout_encode: u32 count, per tensor u8 name length, name, u8
    ndim, ndim x u64."""
    out = struct.pack("<I", len(tensors))
    for name, dims in tensors:
        out += bytes([len(name)]) + name + bytes([len(dims)])
        out += b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in dims)
    return out


def garbage_layouts(rng):
    return [
        b"\x00\x00\x00\x00",                           # no tensors
        struct.pack("<I", 0xFFFFFFFF),                 # absurd count
        layout([(b"fc1.weight", [48, 20])])[:-3],      # truncated
        layout([(b"x" * 255, [1])]),                   # long name
        layout([(b"fc1.weight", [])]),                 # ndim 0
        layout([(b"fc1.weight", [2] * 200)]),          # many dims
        layout([(b"fc1.weight", [2**62, 2**62])]),     # overflowing size
        layout([(b"fc1.weight", [-1 & (2**64 - 1)])]),
        layout([(b"a", [3]), (b"a", [3])]),            # duplicate name
        layout([(b"fc1.weight", [48, 20])]) + b"tail",  # trailing bytes
        bytes(rng.getrandbits(8) for _ in range(300)),
        b"\xff" * 65536,                               # the maximum size
    ]


def chunk_map(params, chunk_elems):
    """(chunk id, offset, count) of every chunk of the flat space."""
    out, off, cid = [], 0, 0
    while off < params:
        n = min(chunk_elems, params - off)
        out.append((cid, off, n))
        off += n
        cid += 1
    return out


def corpus(rng, me, chunks, workers, big=False):
    """Every hostile message once; `me` is the rank the routing id claims
    (None for ids that are not 'w' + rank); `big` adds a 4 MiB push.  A
    list of frame lists."""
    out = []
    senders = sorted({me if me is not None else 12345, 0, workers - 1,
                      workers, 0xFFFFFFFF})
    # Random bytes, 1/3/5-frame messages.
    for n in (1, 2, 3, 5):
        for _ in range(20):
            out.append([bytes(rng.getrandbits(8) for _ in
                              range(rng.randrange(0, 200)))
                        for _ in range(n)])
    good = header(PULL, sender=senders[0])
    out += [[good], [good, b"", b""], [good, b"", b"", b"", b""],
            [good, b"", b"x"], [b"", good]]
    # Truncated headers, every length 0..63, and longer ones.
    push = msg(PUSH, floats(4), sender=0, step=1, count=4, samples=8)
    for n in range(64):
        out.append([push[0][:n], push[1]])
    for n in (65, 128, 4096, 1 << 20):
        out.append([push[0] + b"\0" * (n - 64), push[1]])
    # Oversized payloads: consistent (4 MiB), and lying about their size.
    if big:
        n = 1 << 20
        out.append(msg(PUSH, bytes(4 * n), sender=0, step=1, count=n))
    out.append(msg(PUSH, b"\0" * (1 << 20), sender=0, step=1, count=4))
    out.append(msg(REGISTER, b"\0" * (1 << 20), sender=0))
    out.append(msg(ERROR, b"e" * 2000, sender=0))
    # Wrong magic, version, unknown types, non-zero flags/reserved.
    for m in (0, 0x4D51535F, 0x50534D51, 0xFFFFFFFF):
        out.append(msg(PULL, magic=m, sender=0))
    for v in (0, 1, 3, 0xFFFF):
        out.append(msg(PULL, version=v, sender=0))
        out.append(msg(PUSH, floats(4), version=v, sender=0, step=1, count=4))
    for t in (0, 11, 12, 100, 255):
        out.append(msg(t, sender=0))
    for f in (1, 2, 0x80, 0xFF):
        out.append(msg(PULL, flags=f, sender=0))
        out.append(msg(PUSH, floats(4), flags=f, sender=0, step=1, count=4))
    for r in (1, 0x80000000, 0xFFFFFFFF):
        out.append(msg(PULL, reserved=r, sender=0))
    # Payload length mismatches.
    out += [
        msg(PUSH, floats(4), sender=0, count=4, payload=12),
        msg(PUSH, floats(4), sender=0, count=4, payload=20),
        msg(PUSH, floats(4), sender=0, count=5),
        msg(PUSH, floats(4), sender=0, count=0),
        msg(PUSH, b"", sender=0, count=0),
        msg(PUSH, floats(4) + b"x", sender=0, count=4, payload=16),
        msg(PUSH, floats(4), sender=0, count=4, payload=2**64 - 1),
        msg(INIT, floats(4), sender=0, count=1),
        msg(PULL, b"x", sender=0),
        msg(SHUTDOWN, b"bye", sender=0),
        msg(STATS, b"\0" * 48, sender=0),
        msg(REGISTER, b"abc", sender=0),
        msg(REGISTER, b"", sender=0),
        msg(REGISTER, layout([(b"w", [4])]), sender=0, count=1),
        msg(STATS_REPLY, b"\0" * 39, sender=0),
        msg(ERROR, b"", sender=0, count=3),
    ]
    # Well-formed messages of every type, for real chunks and beyond them,
    # with sender fields that match the routing id and that do not.
    last = chunks[-1]
    bad_chunks = [(last[0] + 1, last[1] + last[2], 4), (0xFFFFFFFF, 0, 4),
                  (0, 2**63, chunks[0][2]), (0, 0, chunks[0][2] + 1),
                  (0, 1, chunks[0][2])]
    for s in senders:
        for cid, off, n in chunks + bad_chunks:
            for step in (0, 1, 2, 10**6, 2**63, 2**64 - 1):
                out.append(msg(PUSH, floats(n), sender=s, step=step,
                               chunk=cid, offset=off, count=n, samples=1,
                               base=step))
            out.append(msg(PUSH, floats(n, float("nan")), sender=s, step=1,
                           chunk=cid, offset=off, count=n, samples=2**32 - 1))
            out.append(msg(INIT, floats(n), sender=s, chunk=cid,
                           offset=off, count=n))
            out.append(msg(PULL, sender=s, step=0, chunk=cid, offset=off))
            out.append(msg(PULL, sender=s, step=2**64 - 1, chunk=cid))
            out.append(msg(PULL_REPLY, floats(n), sender=s, chunk=cid,
                           offset=off, count=n))
        for body in garbage_layouts(rng):
            out.append(msg(REGISTER, body, sender=s))
        for t in (ACK, SHUTDOWN, STATS):
            out.append(msg(t, sender=s, request=7))
        out.append(msg(ERROR, b"you are wrong", sender=s))
        out.append(msg(STATS_REPLY, b"\0" * 48, sender=s))
    return out


def read_endpoints(path, wait_s):
    """[(rank, endpoint, key or None)] once the file exists."""
    t0 = time.monotonic()
    while not os.path.exists(path):
        if time.monotonic() - t0 > wait_s:
            sys.exit("intruder: no endpoint file %s after %d s" % (path, wait_s))
        time.sleep(0.02)
    eps = []
    with open(path) as f:
        for line in f:
            rank, ep, key = line.split()
            eps.append((int(rank), ep, None if key == "-" else key))
    return eps


def lines_in(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def dealer(ctx, ep, rid=None, curve=None):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 100000)
    s.setsockopt(zmq.SNDTIMEO, 2000)
    if rid is not None:
        s.setsockopt(zmq.ROUTING_ID, rid)
    if curve is not None:
        pub, sec, server_key = curve
        s.curve_publickey = pub
        s.curve_secretkey = sec
        s.curve_serverkey = server_key
    return s


# --- secure: nobody without a job key gets through ---------------------------

HS_EVENTS = {
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "succeeded",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "failed",
    zmq.EVENT_CONNECTED: "connected",
}


def secure_round(ctx, eps, workers, mons):
    """One generation of attacking sockets, left to (re)connect for a while."""
    socks = []
    for rank, ep, key in eps:
        if key is None:
            sys.exit("intruder: server %d has no public key (--insecure?)" % rank)
        pub, sec = zmq.curve_keypair()
        wpub, wsec = zmq.curve_keypair()
        wrong, _ = zmq.curve_keypair()
        kinds = [("plain", None), ("curve", (pub, sec, key.encode())),
                 ("wrongkey", (wpub, wsec, wrong))]
        for kind, curve in kinds:
            for rid in (wid(workers + 7), wid(0), wid(workers - 1), None):
                s = dealer(ctx, ep, rid, curve)
                # A name of our own: pyzmq's default reuses the fd number,
                # which collides with a monitor of a socket closed earlier.
                MONITOR_ID[0] += 1
                m = s.get_monitor_socket(sum(HS_EVENTS),
                                         addr="inproc://intruder-mon-%d" % MONITOR_ID[0])
                mons.append(m)
                s.connect(ep)
                socks.append((kind, s))
    return socks


MONITOR_ID = [0]


def drain_monitors(mons, rep):
    for m in mons:
        while m.poll(0):
            ev = recv_monitor_message(m)
            what = HS_EVENTS.get(ev["event"])
            if what:
                rep["client_handshakes_" + what] += 1


def secure(a, eps, rep, rng):
    ctx = zmq.Context()
    t_end = time.monotonic() + a.max_seconds
    chunks = chunk_map(a.params, a.chunk_elems)
    mons, socks = [], []
    good = [msg(PUSH, floats(n), sender=0, step=1, chunk=c, offset=o, count=n,
                samples=1) for c, o, n in chunks]
    good += [msg(PULL, sender=0, step=1, chunk=c) for c, _, _ in chunks]
    good += [msg(REGISTER, layout([(b"fc1.weight", [48, 20])]), sender=0),
             msg(SHUTDOWN, sender=0)]
    gen_t = 0.0
    while not os.path.exists(a.stop_file) and time.monotonic() < t_end:
        if time.monotonic() - gen_t > 0.5:
            # Fresh sockets (and fresh keys) force fresh handshakes.
            for _, s in socks:
                s.close(0)
            time.sleep(0.01)
            drain_monitors(mons, rep)
            for m in mons:
                m.close(0)
            mons = []
            socks = secure_round(ctx, eps, a.workers, mons)
            gen_t = time.monotonic()
        for kind, s in socks:
            frames = good[rng.randrange(len(good))]
            try:
                s.send_multipart(frames, zmq.NOBLOCK)
                rep["queued_" + kind] += 1
            except zmq.Again:
                rep["not_queued_" + kind] += 1
        drain_monitors(mons, rep)
        time.sleep(0.002)
    time.sleep(0.1)
    drain_monitors(mons, rep)
    for _, s in socks:
        s.close(0)
    for m in mons:
        m.close(0)
    ctx.term()


# --- insecure: a counted corpus of hostile messages --------------------------

def random_id(rng, workers):
    while True:
        rid = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 256)))
        if not (len(rid) == 5 and rid[0] == ord("w") and
                struct.unpack("<I", rid[1:])[0] < workers):
            return rid


def send_all(socks, frames_of, rep, key):
    """Send each socket its corpus; counts messages handed to libzmq."""
    for s, frames_list in zip(socks, frames_of):
        for frames in frames_list:
            s.send_multipart(frames)
            rep[key] += 1


def insecure(a, eps, rep, rng):
    ctx = zmq.Context()
    chunks = chunk_map(a.params, a.chunk_elems)
    W = a.workers
    # Routing ids that are not the workers': 'w' + rank beyond the job,
    # 'w' + a rank > 2^31, random ids of random length, and none at all
    # (the ROUTER then makes one up).  One DEALER per id and server.
    ids = [(wid(999), 999), (wid(W), W), (wid(0xFFFFFFFF), None),
           (b"x", None), (random_id(rng, W), None), (random_id(rng, W), None),
           (None, None)]
    socks, corp = [], []
    for _, ep, _ in eps:
        for rid, me in ids:
            s = dealer(ctx, ep, rid)
            s.setsockopt(zmq.LINGER, 10000)
            s.connect(ep)
            socks.append(s)
            corp.append(corpus(rng, me, chunks, W, big=me == 999))
    rep["ids"] = len(ids)
    rep["corpus_per_socket"] = len(corp[0])
    # Round 1 at once: during start-up (REGISTER/INIT phase) or early
    # training, whichever the server is in.
    send_all(socks, corp, rep, "sent")
    rep["round1_done_at_epoch_lines"] = lines_in(a.wait_file)
    t0 = time.monotonic()
    while lines_in(a.wait_file) < 1:
        if time.monotonic() - t0 > a.max_seconds:
            sys.exit("intruder: %s stayed empty" % a.wait_file)
        time.sleep(0.01)
    # Every worker has connected: their ids are taken, so these
    # connections must be refused by the ROUTER, not served.
    fakes = []
    for _, ep, _ in eps:
        for w in range(W):
            s = dealer(ctx, ep, wid(w))
            s.connect(ep)
            fakes.append((w, s))
    time.sleep(0.2)
    for w, s in fakes:
        for c, o, n in chunks:
            for step in range(0, 50):
                for frames in (msg(PUSH, floats(n), sender=w, step=step,
                                   chunk=c, offset=o, count=n, samples=1000,
                                   base=step),
                               msg(INIT, floats(n), sender=w, chunk=c,
                                   offset=o, count=n)):
                    s.send_multipart(frames, zmq.NOBLOCK)
                    rep["impersonation_sent"] += 1
        s.send_multipart(msg(SHUTDOWN, sender=w), zmq.NOBLOCK)
        rep["impersonation_sent"] += 1
    time.sleep(0.2)
    for _, s in fakes:
        s.close(0)
    spare_streams(ctx, eps, chunks, W, rep)
    # Round 2 during training.
    send_all(socks, [c[::-1] for c in corp], rep, "sent")
    for s in socks:
        s.close()  # LINGER 10 s: waits until libzmq has written everything
    ctx.term()
    rep["flushed_at_epoch_lines"] = lines_in(a.wait_file)


def spare_streams(ctx, eps, chunks, workers, rep):
    """As each worker, on a stream it did not open (it opens 2 by default):
    pushes for every step a short job can reach, a pull, STATS, SHUTDOWN.
    Each one that got through would change the model or end a worker."""
    socks = []
    for _, ep, _ in eps:
        for w in range(workers):
            s = dealer(ctx, ep, wid(w, 9))
            s.setsockopt(zmq.LINGER, 10000)
            s.connect(ep)
            socks.append((w, s))
    for w, s in socks:
        for c, o, n in chunks:
            for step in range(300):
                s.send_multipart(msg(PUSH, floats(n, 1e3), sender=w, step=step,
                                     chunk=c, offset=o, count=n, samples=1000,
                                     base=step))
                rep["spare_stream_sent"] += 1
            s.send_multipart(msg(PULL, sender=w, step=0, chunk=c))
            rep["spare_stream_sent"] += 1
        for t in (STATS, SHUTDOWN):
            s.send_multipart(msg(t, sender=w))
            rep["spare_stream_sent"] += 1
    for _, s in socks:
        s.close()  # LINGER 10 s: every message written out


def trickle(a, eps, rep, rng):
    ctx = zmq.Context()
    socks = [dealer(ctx, ep, wid(999)) for _, ep, _ in eps]
    for (_, ep, _), s in zip(eps, socks):
        s.connect(ep)
    t_end = time.monotonic() + a.max_seconds
    while not os.path.exists(a.stop_file) and time.monotonic() < t_end:
        for s in socks:
            s.send_multipart([b"noise", bytes(rng.getrandbits(8) for _ in range(16))])
            rep["sent"] += 1
        time.sleep(a.interval)
    for s in socks:
        s.close(0)
    ctx.term()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["secure", "insecure", "trickle"])
    p.add_argument("--endpoint-file", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--stop-file", default="/nonexistent")
    p.add_argument("--wait-file", default="/nonexistent")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--params", type=int, default=1204)
    p.add_argument("--chunk-elems", type=int, default=1024)
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rng = random.Random(a.seed)
    eps = read_endpoints(a.endpoint_file, a.max_seconds)
    rep = {k: 0 for k in (
        "sent", "impersonation_sent", "spare_stream_sent", "client_handshakes_succeeded",
        "client_handshakes_failed", "client_handshakes_connected",
        "queued_plain", "queued_curve", "queued_wrongkey", "not_queued_plain",
        "not_queued_curve", "not_queued_wrongkey")}
    rep["servers"] = len(eps)
    rep["endpoints"] = [ep for _, ep, _ in eps]
    {"secure": secure, "insecure": insecure, "trickle": trickle}[a.mode](a, eps, rep, rng)
    tmp = a.report + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rep, f, sort_keys=True)
    os.rename(tmp, a.report)


if __name__ == "__main__":
    main()
