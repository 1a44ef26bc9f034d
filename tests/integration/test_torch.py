"""Our saved model against torch.optim.SGD on the same data, batches and
initial weights (Debian's python3-torch).  Skipped, and said so, when
/usr/bin/python3 has no torch.  Prints TAP lines."""
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sthelp  # noqa: E402

N = 0


def tap(ok, what):
    global N
    N += 1
    print(("ok" if ok else "not ok") + " %d - %s" % (N, what), flush=True)


try:
    import numpy as np
    import torch
except ImportError as e:
    print("ok 1 - saved model matches torch.optim.SGD # SKIP torch not installed "
          "in /usr/bin/python3 (%s)" % e)
    sys.exit(0)

BINDIR = os.environ.get("BINDIR", "bin")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl="self,vader,tcp",
           OMPI_MCA_btl_vader_single_copy_mechanism="none")
torch.set_num_threads(1)


def make_data(tmp, n, d, c, regression):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if regression:
        y = (x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)).astype(np.float32)
    else:
        y = rng.integers(0, c, size=n)
        x[np.arange(n), y % d] += 1.5
    path = os.path.join(tmp, "data.csv")
    with open(path, "w") as f:
        for i in range(n):
            lab = ("%.9g" % y[i]) if regression else str(int(y[i]))
            f.write(lab + "," + ",".join("%.9g" % v for v in x[i]) + "\n")
    # Parse back through the same text so both sides see identical floats.
    arr = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return arr[:, 1:].astype(np.float32), arr[:, 0]


class Net(torch.nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.n = len(sizes) - 1
        for i in range(self.n):
            setattr(self, "fc%d" % (i + 1), torch.nn.Linear(sizes[i], sizes[i + 1]))

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, "fc%d" % (i + 1))(x)
            if i + 1 < self.n:
                x = torch.relu(x)
        return x


def torch_train(net, x, y, regression, g, steps, opt_kw, extra):
    """extra: 'schedule' (a function of the optimizer and steps per epoch
    returning (scheduler, per_step)), 'clip' (clamp the gradient first),
    'decoupled' (multiply the weights by 1 - lr*F before the step)."""
    opt = torch.optim.SGD(net.parameters(), **opt_kw)
    xt = torch.from_numpy(x)
    spe = (len(x) + g - 1) // g
    sched, per_step = (extra["schedule"](opt, spe, steps) if "schedule" in extra
                       else (None, False))
    for s in range(steps):
        j = s % spe
        xb = xt[j * g:(j + 1) * g]
        out = net(xb)
        if regression:
            yb = torch.from_numpy(y[j * g:(j + 1) * g].astype(np.float32))
            loss = ((out[:, 0] - yb) ** 2).mean()
        else:
            yb = torch.from_numpy(y[j * g:(j + 1) * g].astype(np.int64))
            loss = torch.nn.functional.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                if "clip" in extra:
                    p.grad.clamp_(-extra["clip"], extra["clip"])
                if "decoupled" in extra:
                    p.mul_(1 - opt.param_groups[0]["lr"] * extra["decoupled"])
        opt.step()
        if sched is not None and (per_step or (s + 1) % spe == 0):
            sched.step()
    return opt


def case(name, model, sizes, regression, servers, workers, k, b, epochs, opt_kw, srv_flags,
         n=150, extra=None):
    extra = extra or {}
    with tempfile.TemporaryDirectory() as tmp:
        x, y = make_data(tmp, n, sizes[0], sizes[-1], regression)
        torch.manual_seed(0)
        net = Net(sizes)
        init = {kk: v.detach().numpy().copy() for kk, v in net.state_dict().items()}
        sthelp.write(os.path.join(tmp, "init.st"), init)
        hidden = ",".join(str(s) for s in sizes[1:-1])
        wflags = ["--progress", "none", "--model", model, "--data",
                  "csv:" + os.path.join(tmp, "data.csv"), "--init-from",
                  os.path.join(tmp, "init.st"), "--no-shuffle", "--batch-size", str(b),
                  "--accumulate", str(k), "--epochs", str(epochs)]
        if hidden:
            wflags += ["--hidden", hidden]
        save = os.path.join(tmp, "out.st")
        cmd = (["mpirun", "-np", str(servers), os.path.join(BINDIR, "ps-server"), "--quiet",
                "--chunk-kib", "4", "--save", save] + srv_flags +
               [":", "-np", str(workers), os.path.join(BINDIR, "ps-worker")] + wflags)
        p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            tap(False, name + ": job ran (exit %d)" % p.returncode)
            print("# " + (p.stdout + p.stderr)[-2000:].replace("\n", "\n# "))
            return
        g = workers * k * b
        steps = epochs * ((n + g - 1) // g)
        opt = torch_train(net, x, y, regression, g, steps, opt_kw, extra)
        ours, meta = sthelp.read(save)
        worst = 0.0
        for kk, v in net.state_dict().items():
            worst = max(worst, float(np.max(np.abs(ours[kk] - v.numpy()))))
        tap(worst < 2e-5, "%s: weights match torch.optim.SGD (max diff %.2g)" % (name, worst))
        if opt_kw.get("momentum", 0) > 0 and "sutskever" not in srv_flags:
            bw = 0.0
            for kk, p in net.named_parameters():
                buf = opt.state[p]["momentum_buffer"].numpy()
                bw = max(bw, float(np.max(np.abs(ours[kk + ".momentum_buffer"] - buf))))
            tap(bw < 2e-5, "%s: momentum buffers match torch (max diff %.2g)" % (name, bw))
        tap(meta.get("step") == str(steps), "%s: metadata records step %d" % (name, steps))
        plain = {kk: torch.from_numpy(v) for kk, v in ours.items()
                 if not kk.endswith(".momentum_buffer")}
        fresh = Net(sizes)
        try:
            fresh.load_state_dict(plain, strict=True)
            tap(True, "%s: loads into the PyTorch module with load_state_dict" % name)
        except Exception as e:  # noqa: BLE001
            tap(False, "%s: load_state_dict failed: %s" % (name, e))


case("softmax, momentum", "softmax", [7, 3], False, 1, 1, 1, 16, 3,
     dict(lr=0.1, momentum=0.9), ["--lr", "0.1", "--momentum", "0.9"])
case("mlp, 2 workers, K=2, Nesterov, weight decay", "mlp", [7, 24, 16, 3], False, 1, 2, 2, 8,
     2, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
     ["--lr", "0.05", "--momentum", "0.9", "--nesterov", "--weight-decay", "0.01"])
case("linear regression, dampening, 2 servers", "linear", [7, 1], True, 2, 2, 1, 10, 2,
     dict(lr=0.02, momentum=0.5, dampening=0.1),
     ["--lr", "0.02", "--momentum", "0.5", "--dampening", "0.1"])
case("mlp, plain SGD, 3 workers uneven shards", "mlp", [7, 1100, 3], False, 2, 3, 1, 11, 2,
     dict(lr=0.05), ["--lr", "0.05", "--momentum", "0"], n=152)


# Schedules: evaluated per step on the server, against torch's schedulers.
def multistep(milestones, gamma):
    return lambda opt, spe, steps: (
        torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma), False)


def cosine_warmup(warm):
    def make(opt, spe, steps):
        f = lambda t: ((1 + math.cos(math.pi * t / steps)) / 2) * (  # noqa: E731
            (t + 1) / warm if t < warm else 1.0)
        return torch.optim.lr_scheduler.LambdaLR(opt, f), True
    return make


case("softmax, step schedule", "softmax", [7, 3], False, 1, 2, 1, 8, 4,
     dict(lr=0.1, momentum=0.9), ["--lr", "0.1", "--momentum", "0.9",
                                   "--lr-schedule", "step:1,3:0.5"],
     extra={"schedule": multistep([1, 3], 0.5)})
case("mlp, cosine + warm-up, 2 servers", "mlp", [7, 16, 3], False, 2, 2, 1, 8, 3,
     dict(lr=0.1, momentum=0.9, nesterov=True),
     ["--lr", "0.1", "--momentum", "0.9", "--nesterov", "--lr-schedule", "cosine",
      "--warmup-steps", "5"], extra={"schedule": cosine_warmup(5)})
case("softmax, maximize", "softmax", [7, 3], False, 1, 1, 1, 16, 2,
     dict(lr=0.01, momentum=0.9, maximize=True),
     ["--lr", "0.01", "--momentum", "0.9", "--maximize"])
case("softmax, clip-grad-value + weight decay", "softmax", [7, 3], False, 1, 2, 1, 8, 2,
     dict(lr=0.1, momentum=0.9, weight_decay=0.01),
     ["--lr", "0.1", "--momentum", "0.9", "--weight-decay", "0.01",
      "--clip-grad-value", "0.05"], extra={"clip": 0.05})
case("softmax, decoupled weight decay", "softmax", [7, 3], False, 1, 1, 1, 16, 2,
     dict(lr=0.1, momentum=0.9), ["--lr", "0.1", "--momentum", "0.9",
                                  "--decoupled-weight-decay", "0.1"],
     extra={"decoupled": 0.1})
# At a constant lr the Sutskever form follows torch's trajectory.
case("mlp, sutskever form with Nesterov == torch at constant lr", "mlp", [7, 16, 3], False, 1, 2,
     1, 8, 2, dict(lr=0.05, momentum=0.9, nesterov=True),
     ["--lr", "0.05", "--momentum", "0.9", "--nesterov", "--momentum-form", "sutskever"])
