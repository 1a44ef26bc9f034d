#!/usr/bin/python3
"""Bitwise comparison of the server's update kernel with torch.optim.SGD.

    /usr/bin/python3 tests/integration/test_optim_torch.py DRIVER_PATH

For a grid of SGD settings, runs torch.optim.SGD on one float32 parameter
(p.grad set by hand each step) and tests/tools/optim_driver on the same
initial weights and gradients, then compares the final weights and momentum
buffers bit for bit (as uint32).  Both torch code paths are checked: the
default single-tensor loop and foreach=True.  Prints TAP; exits non-zero if
any case differs.  Skips (exit 0) when torch is not importable.
"""
import itertools
import os
import struct
import subprocess
import sys
import tempfile

STEPS = 5


def skip_all(reason):
    print("1..1")
    print("ok 1 - torch optimizer comparison # SKIP %s" % reason)
    sys.exit(0)


try:
    import numpy as np
    import torch
except ImportError:
    skip_all("torch not installed in /usr/bin/python3")


def grid():
    """Every valid combination; odd sizes exercise the vector tails."""
    sizes = [1003, 7, 4099]
    cases = []
    for lr, mom, damp, nest, wd in itertools.product(
            [0.1, 0.003], [0.0, 0.9], [0.0, 0.1], [False, True], [0.0, 1e-4]):
        if nest and (mom == 0.0 or damp != 0.0):
            continue  # torch refuses these
        n = sizes[len(cases) % len(sizes)]
        cases.append(dict(lr=lr, momentum=mom, dampening=damp, nesterov=nest,
                          weight_decay=wd, n=n))
    return cases


def make_data(case, seed):
    rng = np.random.default_rng(seed)
    n = case["n"]
    w0 = rng.standard_normal(n).astype(np.float32)
    # Gradients over several magnitudes so rounding differences would show.
    scale = np.float32(10.0) ** rng.integers(-4, 2, size=(STEPS, n)).astype(np.float32)
    grads = (rng.standard_normal((STEPS, n)).astype(np.float32) * scale).astype(np.float32)
    return w0, grads


def run_torch(case, w0, grads, foreach):
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.SGD([p], lr=case["lr"], momentum=case["momentum"],
                          dampening=case["dampening"], weight_decay=case["weight_decay"],
                          nesterov=case["nesterov"], foreach=foreach)
    for s in range(STEPS):
        p.grad = torch.from_numpy(grads[s].copy())
        opt.step()
    w = p.detach().numpy().copy()
    buf = opt.state[p].get("momentum_buffer")
    buf = np.zeros_like(w) if buf is None else buf.numpy().copy()
    return w, buf


def run_driver(driver, case, w0, grads, tmp):
    inp = os.path.join(tmp, "in.bin")
    out = os.path.join(tmp, "out.bin")
    n = case["n"]
    with open(inp, "wb") as f:
        f.write(b"PSOPTIN1")
        f.write(struct.pack("<ddddIIQ", case["lr"], case["momentum"], case["dampening"],
                            case["weight_decay"], int(case["nesterov"]), STEPS, n))
        f.write(w0.astype("<f4").tobytes())
        f.write(grads.astype("<f4").tobytes())
    r = subprocess.run([driver, inp, out], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("driver failed (%d): %s" % (r.returncode, r.stderr.strip()))
    with open(out, "rb") as f:
        data = f.read()
    if data[:8] != b"PSOPTOUT" or struct.unpack("<Q", data[8:16])[0] != n:
        raise RuntimeError("driver output header is wrong")
    arr = np.frombuffer(data[16:], dtype="<f4")
    if arr.size != 2 * n:
        raise RuntimeError("driver output has %d floats, want %d" % (arr.size, 2 * n))
    return arr[:n], arr[n:]


def describe_diff(name, got, want):
    gu, wu = got.view(np.uint32), want.view(np.uint32)
    bad = np.nonzero(gu != wu)[0]
    if bad.size == 0:
        return None
    i = bad[0]
    return "%s differs at %d of %d elements, first [%d]: driver %r (0x%08x) torch %r (0x%08x)" % (
        name, bad.size, got.size, i, float(got[i]), gu[i], float(want[i]), wu[i])


def label(case, foreach):
    return ("lr=%g momentum=%g dampening=%g nesterov=%d weight_decay=%g n=%d %s" % (
        case["lr"], case["momentum"], case["dampening"], case["nesterov"],
        case["weight_decay"], case["n"], "foreach" if foreach else "single-tensor"))


def main():
    # The harness (tests/run.sh) passes no arguments: the driver is found
    # in $BUILD/tools.
    if len(sys.argv) > 2:
        sys.stderr.write("usage: %s [DRIVER_PATH]\n" % sys.argv[0])
        return 2
    driver = sys.argv[1] if len(sys.argv) == 2 else os.path.join(
        os.environ.get("BUILD", "build"), "tools", "optim_driver")
    torch.set_num_threads(1)
    runs = [(c, fe) for c in grid() for fe in (False, True)]
    print("1..%d" % len(runs))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ps-optim-") as tmp:
        for num, (case, foreach) in enumerate(runs, 1):
            w0, grads = make_data(case, seed=1000 + (num + 1) // 2)
            try:
                tw, tb = run_torch(case, w0, grads, foreach)
                dw, db = run_driver(driver, case, w0, grads, tmp)
                diffs = [d for d in (describe_diff("w", dw, tw), describe_diff("buf", db, tb)) if d]
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                diffs = [str(e)]
            ok = not diffs
            print("%s %d - %s" % ("ok" if ok else "not ok", num, label(case, foreach)))
            for d in diffs:
                print("# " + d)
            failed += 0 if ok else 1
    print("# %d of %d cases bitwise identical" % (len(runs) - failed, len(runs)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
