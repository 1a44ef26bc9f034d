#!/usr/bin/python3
"""Comparison of the server's update kernel with torch.optim.SGD.

    /usr/bin/python3 tests/integration/test_optim_torch.py DRIVER_PATH

Part 1 (the original 40 cases): for a grid of SGD settings, runs
torch.optim.SGD on one float32 parameter (p.grad set by hand each step) and
tests/tools/optim_driver on the same initial weights and gradients, then
compares the final weights and momentum buffers bit for bit (as uint32).
Both torch code paths are checked: the default single-tensor loop and
foreach=True.

Part 2: maximize=True against torch's maximize (bitwise); learning-rate
schedules, the per-step lr computed here by an independent Python copy of
common/ps_sched.h's formulas, checked against the C ps_sched (optim_driver
--sched, bitwise) and run against torch.optim.SGD driven by the matching
torch.optim.lr_scheduler (MultiStepLR stepped per epoch, CosineAnnealingLR
stepped per update, LambdaLR and LinearLR for the warm-up); the sutskever and
ema forms, gradient clipping and decoupled weight decay against the same
recurrences written with torch tensor ops (bitwise).

Prints TAP; exits non-zero if any case differs.  Skips (exit 0) when torch
is not importable.
"""
import bisect
import itertools
import math
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
    return read_driver_output(driver, inp, out, n)


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


# ---- part 2: version-2 driver input, schedules, forms and extras ----------

FORMS = {"torch": 0, "sutskever": 1, "ema": 2}
SCHED_STEPS = 18


def write_v2(path, case, lrs, w0, grads):
    """The driver's version-2 input (see tests/tools/optim_driver.c)."""
    steps, n = grads.shape
    with open(path, "wb") as f:
        f.write(b"PSOPTIN2")
        f.write(struct.pack("<5d4IQ", case["momentum"], case.get("dampening", 0.0),
                            case.get("weight_decay", 0.0), case.get("clip", 0.0),
                            case.get("decoupled", 0.0), int(case.get("nesterov", False)),
                            FORMS[case.get("form", "torch")], int(case.get("maximize", False)),
                            steps, n))
        f.write(struct.pack("<%dd" % steps, *lrs))
        f.write(w0.astype("<f4").tobytes())
        f.write(grads.astype("<f4").tobytes())


def run_driver_v2(driver, case, lrs, w0, grads, tmp):
    inp = os.path.join(tmp, "in2.bin")
    out = os.path.join(tmp, "out2.bin")
    write_v2(inp, case, lrs, w0, grads)
    return read_driver_output(driver, inp, out, w0.size)


def read_driver_output(driver, inp, out, n):
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


def sched_lr(sched, base, t, spe, total):
    """common/ps_sched.h's ps_sched_lr, rewritten from its documented formula
    (the same double operations in the same order, so the same bits)."""
    kind = sched["kind"]
    if kind == "step":
        epoch = t // max(spe, 1)
        k = sum(1 for m in sched["milestones"] if epoch >= m)
        lr = base * sched["gamma"] ** k
    elif kind == "cosine" and total > 0:
        lr = base * (1.0 + math.cos(math.pi * t / total)) / 2.0
    else:
        lr = base
    warm = sched.get("warmup", 0)
    if t < warm:
        lr = lr * ((t + 1) / warm)
    return lr


def c_sched_lrs(driver, spec, base, spe, total, count):
    """The C ps_sched's rates via optim_driver --sched; (describe, [lr])."""
    r = subprocess.run([driver, "--sched", spec, "0", repr(base), str(spe), str(total),
                        str(count)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("driver --sched failed (%d): %s" % (r.returncode, r.stderr.strip()))
    lines = r.stdout.split()
    return lines[0], [float.fromhex(x) for x in lines[1:]]


def ulps(a, b):
    """Distance in units of the last place between two doubles of one sign."""
    ia = struct.unpack("<q", struct.pack("<d", a))[0]
    ib = struct.unpack("<q", struct.pack("<d", b))[0]
    return abs(ia - ib)


def torch_sched_run(case, w0, grads, make_sched, per_epoch, foreach):
    """torch.optim.SGD stepped with a torch scheduler; (w, buf, [lr used])."""
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.SGD([p], lr=case["lr"], momentum=case["momentum"],
                          dampening=case.get("dampening", 0.0),
                          weight_decay=case.get("weight_decay", 0.0),
                          nesterov=case.get("nesterov", False),
                          maximize=case.get("maximize", False), foreach=foreach)
    sched = make_sched(opt) if make_sched else None
    used = []
    for t in range(grads.shape[0]):
        used.append(opt.param_groups[0]["lr"])
        p.grad = torch.from_numpy(grads[t].copy())
        opt.step()
        if sched is not None and (per_epoch is None or (t + 1) % per_epoch == 0):
            sched.step()
    w = p.detach().numpy().copy()
    buf = opt.state[p].get("momentum_buffer")
    buf = np.zeros_like(w) if buf is None else buf.numpy().copy()
    return w, buf, used


def make_sched_data(n, steps, seed):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(n).astype(np.float32)
    scale = np.float32(10.0) ** rng.integers(-3, 1, size=(steps, n)).astype(np.float32)
    grads = (rng.standard_normal((steps, n)).astype(np.float32) * scale).astype(np.float32)
    return w0, grads


def compare_lrs(ours, theirs, what):
    """Notes on how torch's scheduler lr differs from the closed form."""
    notes = []
    dbl = [t for t in range(len(ours)) if ours[t] != theirs[t]]
    f32 = [t for t in range(len(ours)) if np.float32(-ours[t]) != np.float32(-theirs[t])]
    if dbl:
        notes.append("%s: lr differs from the closed form in the double at %d of %d steps "
                     "(max %d ulps; first at t=%d: %r vs %r); as float32 at %d steps" % (
                         what, len(dbl), len(ours), max(ulps(ours[t], theirs[t]) for t in dbl),
                         dbl[0], ours[dbl[0]], theirs[dbl[0]], len(f32)))
    return notes, f32


def sched_check(driver, tmp, sc, foreach, seed):
    """One schedule case: C == Python closed form (bitwise), then weights
    against torch; (diffs, notes)."""
    case, sched, spe = sc["case"], sc["sched"], sc["spe"]
    total = SCHED_STEPS
    ours = [sched_lr(sched, case["lr"], t, spe, total) for t in range(SCHED_STEPS)]
    desc, c_lrs = c_sched_lrs(driver, sc["spec"], case["lr"], spe, total, SCHED_STEPS)
    diffs = []
    if desc != sc["canon"]:
        diffs.append("ps_sched_describe gave %r, want %r" % (desc, sc["canon"]))
    bad = [t for t in range(SCHED_STEPS) if c_lrs[t] != ours[t]]
    if bad:
        diffs.append("C ps_sched_lr differs from the formula at t=%d: %r vs %r" % (
            bad[0], c_lrs[bad[0]], ours[bad[0]]))
    w0, grads = make_sched_data(sc["n"], SCHED_STEPS, seed)
    tw, tb, used = torch_sched_run(case, w0, grads, sc["torch"], sc.get("per_epoch"), foreach)
    notes, f32 = compare_lrs(ours, used, sc["torch_name"])
    dw, db = run_driver_v2(driver, case, ours, w0, grads, tmp)
    if not f32:
        # Every float32 lr agrees, so torch's arithmetic is ours: bitwise.
        diffs += [d for d in (describe_diff("w", dw, tw), describe_diff("buf", db, tb)) if d]
    else:
        # torch's recursive scheduler rounded some lr to a different float32;
        # the weights then differ by about that relative change (~6e-8).
        err = float(np.max(np.abs(dw.astype(np.float64) - tw)))
        tol = 1e-6 * max(1.0, float(np.max(np.abs(tw))))
        notes.append("weights compared with tolerance %.1e: max |diff| %.3e" % (tol, err))
        if err > tol:
            diffs.append("w differs by %.3e > %.1e" % (err, tol))
    return diffs, notes


def warm_lambda(w):
    return lambda e: (e + 1) / w if e < w else 1.0


def sched_cases():
    """Torch form + schedule runs: the spec, its Python model, the torch
    scheduler that should give the same rates, and how often it steps."""
    E = 3  # updates per "epoch"
    mom = dict(lr=0.1, momentum=0.9)
    return [
        dict(spec="step:2,4:0.1", canon="step:2,4:0.1", spe=E, per_epoch=E, n=1003,
             case=mom, sched=dict(kind="step", milestones=[2, 4], gamma=0.1),
             torch=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 4], 0.1),
             torch_name="MultiStepLR per epoch"),
        dict(spec="step:1,3,5:0.5", canon="step:1,3,5:0.5", spe=E, per_epoch=E, n=7,
             case=dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
             sched=dict(kind="step", milestones=[1, 3, 5], gamma=0.5),
             torch=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [1, 3, 5], 0.5),
             torch_name="MultiStepLR per epoch"),
        dict(spec="cosine", canon="cosine", spe=E, n=4099, case=mom,
             sched=dict(kind="cosine"),
             torch=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, SCHED_STEPS),
             torch_name="CosineAnnealingLR per update"),
        dict(spec="constant;warmup=5", canon="constant;warmup=5", spe=E, n=1003, case=mom,
             sched=dict(kind="constant", warmup=5),
             torch=lambda o: torch.optim.lr_scheduler.LambdaLR(o, warm_lambda(5)),
             torch_name="LambdaLR warm-up"),
        dict(spec="constant;warmup=5", canon="constant;warmup=5", spe=E, n=1003, case=mom,
             sched=dict(kind="constant", warmup=5),
             torch=lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 5,
                                                               total_iters=4),
             torch_name="LinearLR warm-up"),
        dict(spec="cosine;warmup=4", canon="cosine;warmup=4", spe=E, n=7, case=mom,
             sched=dict(kind="cosine", warmup=4),
             torch=lambda o: torch.optim.lr_scheduler.LambdaLR(
                 o, lambda e: (1 + math.cos(math.pi * e / SCHED_STEPS)) / 2 * warm_lambda(4)(e)),
             torch_name="LambdaLR cosine with warm-up"),
        dict(spec="step:2,4:0.1;warmup=4", canon="step:2,4:0.1;warmup=4", spe=E, n=4099,
             case=dict(lr=0.1, momentum=0.9, dampening=0.1),
             sched=dict(kind="step", milestones=[2, 4], gamma=0.1, warmup=4),
             torch=lambda o: torch.optim.lr_scheduler.LambdaLR(
                 o, lambda e: 0.1 ** bisect.bisect_right([2, 4], e // E) * warm_lambda(4)(e)),
             torch_name="LambdaLR step with warm-up"),
    ]


def maximize_cases():
    cases = []
    for i, (mom, damp, nest, wd) in enumerate([(0.0, 0.0, False, 0.0), (0.9, 0.0, False, 0.0),
                                               (0.9, 0.0, True, 1e-4), (0.9, 0.1, False, 1e-4)]):
        cases.append(dict(lr=0.1, momentum=mom, dampening=damp, nesterov=nest, weight_decay=wd,
                          maximize=True, n=[1003, 7, 4099, 1003][i]))
    return cases


def maximize_check(driver, tmp, case, foreach, seed):
    w0, grads = make_data(case, seed)
    tw, tb, _ = torch_sched_run(case, w0, grads, None, None, foreach)
    dw, db = run_driver_v2(driver, case, [case["lr"]] * STEPS, w0, grads, tmp)
    return [d for d in (describe_diff("w", dw, tw), describe_diff("buf", db, tb)) if d], []


def torch_ops_reference(case, lrs, w0, grads):
    """srv_optim.h's recurrences written with torch tensor ops, whose CPU
    kernels round like the kernel (mul by a Python float is one rounded
    float32 multiply; add(x, alpha=a) is one fmadd)."""
    p = torch.from_numpy(w0.copy())
    mom, form = case["momentum"], case.get("form", "torch")
    v = None
    for t in range(grads.shape[0]):
        lr = lrs[t]
        g = torch.from_numpy(grads[t].copy())
        if case.get("maximize"):
            g = -g
        if case.get("clip", 0.0) > 0:
            g = g.clamp(-case["clip"], case["clip"])
        if case.get("weight_decay", 0.0) != 0:
            g = g.add(p, alpha=case["weight_decay"])
        if case.get("decoupled", 0.0) > 0:
            p.mul_(1 - lr * case["decoupled"])
        if mom == 0:
            p.add_(g, alpha=-lr)
        elif form == "sutskever":
            v = g.mul(-lr) if v is None else v.mul(mom).add_(g, alpha=-lr)
            p.add_(g.mul(-lr).add_(v, alpha=mom) if case.get("nesterov") else v)
        elif form == "ema":
            v = g.mul(1 - mom) if v is None else v.mul(mom).add_(g, alpha=1 - mom)
            p.add_(v, alpha=-lr)
        else:
            v = g.clone() if v is None else v.mul(mom).add_(g, alpha=1 - case.get("dampening", 0))
            p.add_(g.add(v, alpha=mom) if case.get("nesterov") else v, alpha=-lr)
    buf = np.zeros_like(w0) if v is None else v.numpy().copy()
    return p.numpy().copy(), buf


def form_cases():
    """Forms and extras, each under the step schedule so the lr changes."""
    sched = dict(kind="step", milestones=[2, 4], gamma=0.1)
    base = dict(lr=0.1, momentum=0.9)
    extra = [
        dict(form="sutskever"), dict(form="sutskever", nesterov=True, weight_decay=1e-4),
        dict(form="ema"), dict(form="ema", momentum=0.5, weight_decay=1e-4, maximize=True),
        dict(clip=0.05), dict(clip=0.05, form="sutskever", maximize=True),
        dict(decoupled=0.01), dict(decoupled=0.01, weight_decay=1e-4, clip=0.2, nesterov=True),
        dict(momentum=0.0, form="ema", clip=0.05, decoupled=0.01),
    ]
    return [dict(base, **e, n=[1003, 7, 4099][i % 3], sched=sched) for i, e in enumerate(extra)]


def form_check(driver, tmp, case, seed):
    lrs = [sched_lr(case["sched"], case["lr"], t, 3, SCHED_STEPS) for t in range(SCHED_STEPS)]
    w0, grads = make_sched_data(case["n"], SCHED_STEPS, seed)
    rw, rb = torch_ops_reference(case, lrs, w0, grads)
    dw, db = run_driver_v2(driver, case, lrs, w0, grads, tmp)
    return [d for d in (describe_diff("w", dw, rw), describe_diff("buf", db, rb)) if d], []


def clip_decoupled_vs_sgd_check(driver, tmp, case, foreach, seed):
    """clip and decoupled decay as a torch user writes them around SGD:
    clamp_ the gradient (clip_grad_value_) and p.mul_(1 - lr*F) before step()."""
    w0, grads = make_data(case, seed)
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.SGD([p], lr=case["lr"], momentum=case["momentum"], foreach=foreach)
    for t in range(STEPS):
        p.grad = torch.from_numpy(grads[t].copy())
        torch.nn.utils.clip_grad_value_([p], case["clip"])
        with torch.no_grad():
            p.mul_(1 - case["lr"] * case["decoupled"])
        opt.step()
    tw = p.detach().numpy().copy()
    tb = opt.state[p]["momentum_buffer"].numpy().copy()
    dw, db = run_driver_v2(driver, case, [case["lr"]] * STEPS, w0, grads, tmp)
    return [d for d in (describe_diff("w", dw, tw), describe_diff("buf", db, tb)) if d], []


def part2_runs():
    """(label, function(driver, tmp, seed) -> (diffs, notes)) for part 2."""
    runs = []
    for c in maximize_cases():
        for fe in (False, True):
            runs.append(("maximize " + label(c, fe),
                         lambda d, t, s, c=c, fe=fe: maximize_check(d, t, c, fe, s)))
    for sc in sched_cases():
        for fe in (False, True):
            runs.append(("schedule %s vs %s, %s" % (sc["spec"], sc["torch_name"],
                                                    "foreach" if fe else "single-tensor"),
                         lambda d, t, s, sc=sc, fe=fe: sched_check(d, t, sc, fe, s)))
    for c in form_cases():
        keys = [k for k in ("form", "momentum", "nesterov", "weight_decay", "maximize", "clip",
                            "decoupled") if k in c]
        runs.append(("vs torch ops, step schedule: " + " ".join(
            "%s=%s" % (k, c[k]) for k in keys), lambda d, t, s, c=c: form_check(d, t, c, s)))
    c = dict(lr=0.1, momentum=0.9, clip=0.05, decoupled=0.01, n=1003)
    for fe in (False, True):
        runs.append(("clip_grad_value_ + p.mul_(1-lr*F) + SGD, %s" % (
            "foreach" if fe else "single-tensor"),
            lambda d, t, s, fe=fe: clip_decoupled_vs_sgd_check(d, t, c, fe, s)))
    return runs


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
    more = part2_runs()
    print("1..%d" % (len(runs) + len(more)))
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
        for num, (name, fn) in enumerate(more, len(runs) + 1):
            try:
                diffs, notes = fn(driver, tmp, 2000 + num)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                diffs, notes = [str(e)], []
            print("%s %d - %s" % ("not ok" if diffs else "ok", num, name))
            for d in diffs + notes:
                print("# " + d)
            failed += 1 if diffs else 0
    total = len(runs) + len(more)
    print("# %d of %d cases passed (part 1: %d bitwise torch.optim.SGD cases)" % (
        total - failed, total, len(runs)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
