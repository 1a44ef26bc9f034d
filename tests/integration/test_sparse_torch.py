#!/usr/bin/python3
"""Sparse tables against independent references (issue 14).

2 servers, 2 workers of tests/tools/sparse_worker (rows that are a pure
function of step, worker and key, recomputed here; feature ids above
2^32; duplicate keys within a push and across workers; sample weights 1
and 2; one zero-sample step):

  - --sparse-update exact against torch.optim.SGD on the same table held
    dense (every row that ever appears, untouched rows a zero gradient),
    within 1e-5 relative, for momentum, dampening, nesterov, weight decay,
    step and cosine schedules and warm-up;
  - --sparse-update lazy against a NumPy implementation of the lazy rule
    (only rows pushed in a step move, each row's buffer starts as its
    first gradient);
  - the saved layout: NAME.keys ascending (I64), NAME [R, dim] and
    NAME.momentum_buffer in the same row order, sparse_tables metadata.

Prints TAP; skips (exit 0) when /usr/bin/python3 has no torch."""
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sthelp  # noqa: E402

N = 0


def tap(ok, what, detail=""):
    global N
    N += 1
    print(("ok" if ok else "not ok") + " %d - %s" % (N, what), flush=True)
    if not ok and detail:
        print("# " + detail, flush=True)


try:
    import numpy as np
    import torch
except ImportError as e:
    print("ok 1 - sparse tables vs torch # SKIP torch not installed in /usr/bin/python3 (%s)" % e)
    sys.exit(0)

BINDIR = os.environ.get("BINDIR", "bin")
TOOLS = os.path.join(os.environ.get("BUILD", "build"), "tools")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl="self,vader,tcp",
           OMPI_MCA_btl_vader_single_copy_mechanism="none")
torch.set_num_threads(1)

STEPS, DIM, NKEYS, SPACE, SPE = 12, 3, 10, 40, 4
KEYBASE = (1 << 40) + 7  # above 2^32
ZERO_STEP = 5
W = 2
M64 = (1 << 64) - 1


# ---- the worker's data, rewritten from sparse_worker.c's comment ----------
def mix(z):
    z = (z + 0x9e3779b97f4a7c15) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def h4(a, b, c, d):
    return mix(a ^ mix(b ^ mix(c ^ mix(d))))


def val(t, r, j, d):
    return np.float32((h4(t, r, j, d) >> 40) / 8388608.0 - 1.0)


def push_of(t, r):
    """Worker r's push at step t: {key: summed float32 row} (the library
    sums duplicates in the caller's order) and its samples."""
    samples = 0 if t == ZERO_STEP else r + 1
    rows = {}
    for j in range(NKEYS):
        key = KEYBASE + h4(t, r, j, 0xabcd) % SPACE
        g = np.array([val(t, r, j, d) for d in range(DIM)], dtype=np.float32)
        rows[key] = (rows[key] + g).astype(np.float32) if key in rows else g
    return (rows if samples else {}), samples


def combined(t):
    """The server's sum: g = p0*c0, then g + pk*ck, products rounded in
    float32; coef = float32(samples / total)."""
    parts = [push_of(t, r) for r in range(W)]
    total = sum(s for _, s in parts)
    out = {}
    for rows, s in parts:
        if s == 0:
            continue
        c = np.float32(s / total)
        for k, g in rows.items():
            p = (g * c).astype(np.float32)
            out[k] = (out[k] + p).astype(np.float32) if k in out else p
    return out, total


def sched_lr(kind, base, t, warm):
    """common/ps_sched.h's formulas (as tests/integration/test_optim_torch.py)."""
    if kind == "step":
        k = sum(1 for m in (1, 2) if t // SPE >= m)
        lr = base * 0.5 ** k
    elif kind == "cosine":
        lr = base * (1.0 + math.cos(math.pi * t / STEPS)) / 2.0
    else:
        lr = base
    if t < warm:
        lr = lr * ((t + 1) / warm)
    return lr


def all_keys():
    ks = set()
    for t in range(STEPS):
        for r in range(W):
            for j in range(NKEYS):
                ks.add(KEYBASE + h4(t, r, j, 0xabcd) % SPACE)
    return sorted(ks)


# ---- references ------------------------------------------------------------
def torch_exact(case, keys):
    idx = {k: i for i, k in enumerate(keys)}
    p = torch.nn.Parameter(torch.zeros(len(keys), DIM))
    opt = torch.optim.SGD([p], lr=case["lr"], momentum=case["momentum"],
                          dampening=case["dampening"], nesterov=case["nesterov"],
                          weight_decay=case["wd"])
    for t in range(STEPS):
        g, total = combined(t)
        if total == 0:
            continue  # a zero-sample step is no update (the schedule still moves)
        dense = np.zeros((len(keys), DIM), dtype=np.float32)
        for k, row in g.items():
            dense[idx[k]] = row
        p.grad = torch.from_numpy(dense)
        for grp in opt.param_groups:
            grp["lr"] = sched_lr(case["sched"], case["lr"], t, case["warm"])
        opt.step()
    buf = opt.state[p].get("momentum_buffer")
    return p.detach().numpy(), (buf.numpy() if buf is not None else None)


def numpy_lazy(case, keys):
    idx = {k: i for i, k in enumerate(keys)}
    w = np.zeros((len(keys), DIM), dtype=np.float64)
    buf = np.zeros((len(keys), DIM), dtype=np.float64)
    seen = np.zeros(len(keys), dtype=bool)
    m, damp, wd = case["momentum"], case["dampening"], case["wd"]
    for t in range(STEPS):
        g, total = combined(t)
        if total == 0:
            continue
        lr = sched_lr(case["sched"], case["lr"], t, case["warm"])
        for k, row in g.items():
            i = idx[k]
            gi = row.astype(np.float64) + wd * w[i]
            if m != 0:
                buf[i] = gi if not seen[i] else m * buf[i] + (1 - damp) * gi
                seen[i] = True
                d = gi + m * buf[i] if case["nesterov"] else buf[i]
            else:
                d = gi
            w[i] = w[i] - lr * d
    return w, (buf if m != 0 else None)


# ---- runs -------------------------------------------------------------------
def run(tmp, case, update):
    out = os.path.join(tmp, "model-%s.st" % update)
    flags = ["--quiet", "--lr", repr(case["lr"]), "--momentum", repr(case["momentum"]),
             "--dampening", repr(case["dampening"]), "--weight-decay", repr(case["wd"]),
             "--sparse-update", update, "--save", out]
    if case["nesterov"]:
        flags.append("--nesterov")
    if case["sched"] == "step":
        flags += ["--lr-schedule", "step:1,2:0.5"]
    elif case["sched"] == "cosine":
        flags += ["--lr-schedule", "cosine"]
    if case["warm"]:
        flags += ["--warmup-steps", str(case["warm"])]
    cmd = (["timeout", "-k", "5", "120", "mpirun", "--oversubscribe", "-np", "2",
            os.path.join(BINDIR, "ps-server")] + flags +
           [":", "-np", str(W), os.path.join(TOOLS, "sparse_worker"), str(STEPS), str(DIM),
            str(NKEYS), str(SPACE), "--key-base", str(KEYBASE), "--spe", str(SPE),
            "--zero-step", str(ZERO_STEP)])
    p = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError("job failed (%d): %s" % (p.returncode, p.stdout.decode()[-1500:]))
    return sthelp.read(out)


def close(got, want, rtol=1e-5):
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = rtol * np.maximum(np.abs(want), 1e-3 * scale)
    return bool(np.all(err <= bound)), float(np.max(err / np.maximum(np.abs(want), 1e-3 * scale)))


def check_layout(t, meta, keys, what):
    k = t.get("emb.keys")
    ok = (k is not None and k.dtype == np.int64 and k.shape == (len(keys),) and
          [int(x) for x in k] == keys and t["emb"].shape == (len(keys), DIM) and
          json.loads(meta.get("sparse_tables", "[]")) == ["emb"])
    tap(ok, "%s: saved layout (emb.keys ascending I64 = every key touched, emb [R, %d], "
        "sparse_tables metadata)" % (what, DIM),
        "keys %s" % (None if k is None else list(k[:5])))
    return ok


CASES = [
    dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, wd=0.0, sched="constant", warm=0),
    dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, wd=0.0, sched="constant", warm=0),
    dict(lr=0.1, momentum=0.8, dampening=0.3, nesterov=False, wd=0.0, sched="constant", warm=0),
    dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, wd=0.01, sched="constant", warm=0),
    dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True, wd=0.05, sched="step", warm=0),
    dict(lr=0.2, momentum=0.7, dampening=0.1, nesterov=False, wd=0.02, sched="cosine", warm=3),
    dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, wd=0.01, sched="constant", warm=0),
]


def label(case):
    return "lr %g mom %g damp %g%s wd %g %s%s" % (
        case["lr"], case["momentum"], case["dampening"], " nesterov" if case["nesterov"] else "",
        case["wd"], case["sched"], " warmup %d" % case["warm"] if case["warm"] else "")


def main():
    keys = all_keys()
    assert len(keys) > 10 and keys[0] > 1 << 32
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES):
            t, meta = run(tmp, case, "exact")
            if i == 0:
                check_layout(t, meta, keys, "exact")
            w, buf = torch_exact(case, keys)
            ok, rel = close(t["emb"], w)
            if buf is not None:
                ok2, rel2 = close(t["emb.momentum_buffer"], buf)
                ok, rel = ok and ok2, max(rel, rel2)
            tap(ok, "exact == torch.optim.SGD on the dense table (%s), max rel err %.2g"
                % (label(case), rel))
            t, meta = run(tmp, case, "lazy")
            w, buf = numpy_lazy(case, keys)
            ok, rel = close(t["emb"], w)
            if buf is not None:
                ok2, rel2 = close(t["emb.momentum_buffer"], buf)
                ok, rel = ok and ok2, max(rel, rel2)
            tap(ok and meta.get("sparse_update") == "lazy",
                "lazy == the NumPy lazy rule (%s), max rel err %.2g" % (label(case), rel))
    print("1..%d" % N)
    return 0


def async_check(argv):
    """--async-check PATH STEPS DIM NKEYS SPACE KEYBASE ZERO_STEP LR (for
    test_sparse.sh): a momentum-0 async run's table must be -lr times the
    sum of every applied push (each with its own mean gradient, coef 1;
    a zero-sample push is not applied), in any order, within 1e-5."""
    global STEPS, DIM, NKEYS, SPACE, KEYBASE, ZERO_STEP
    path = argv[0]
    STEPS, DIM, NKEYS, SPACE, KEYBASE, ZERO_STEP = (int(x) for x in argv[1:7])
    lr = float(argv[7])
    keys = all_keys()
    idx = {k: i for i, k in enumerate(keys)}
    want = np.zeros((len(keys), DIM), dtype=np.float64)
    for t in range(STEPS):
        for r in range(W):
            rows, samples = push_of(t, r)
            for k, g in rows.items():
                want[idx[k]] -= lr * g.astype(np.float64)
    t, meta = sthelp.read(path)
    ok = [int(x) for x in t["emb.keys"]] == keys and meta.get("mode") == "async"
    good, rel = close(t["emb"], want)
    print("# async: keys %s, max rel err %.2g" % ("ok" if ok else "differ", rel))
    return 0 if ok and good else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--async-check":
        sys.exit(async_check(sys.argv[2:]))
    sys.exit(main())
