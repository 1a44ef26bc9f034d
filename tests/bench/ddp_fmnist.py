#!/usr/bin/python3
"""The PyTorch DDP reference for `make bench`'s fmnist_vs_ddp figure.

Runs the same job as

    mpirun -np 1 ps-server --lr 0.05 --momentum 0.9 --lr-schedule cosine \\
         : -np 2 ps-worker --model mlp --hidden 256,128 --batch-size 64 --epochs 5

with torch.nn.parallel.DistributedDataParallel on the gloo backend: WORLD
processes (default 2) started with torch.multiprocessing (spawn), env://
rendezvous on 127.0.0.1 and a free port, one intra-op thread each
(torch.set_num_threads(1)).  Same model (784-256-128-10, ReLU, mean
cross-entropy), same per-process batch, torch.optim.SGD with the same lr and
momentum and CosineAnnealingLR stepped once per update with T_max = all
steps, the same shard rule (sample i of the file goes to rank i % WORLD,
shuffled within the shard each epoch) and the same number of steps per
epoch, ceil(N / (WORLD * B)).  Like ps-worker with --metrics, every epoch
ends with the test loss and accuracy on t10k, each rank evaluating its own
strided half and the counts summed with all_reduce.

Prints one JSON line per epoch (from rank 0) and a closing summary line:
    {"summary": true, "job_s": ..., "test_acc": ..., ...}
job_s is the whole job as a user waits for it: from just before the
processes are spawned until they are joined (interpreter and torch import
in the children, rendezvous, data loading, training, every evaluation,
shutdown).  process_s adds this interpreter's own start and torch import
(from the kernel's start time of this process).  The other figures are
rank 0's own phases.

Exit status: 0 done, 2 bad data or arguments, 3 torch (or torch.distributed
with gloo) not importable, 1 any other failure.
"""
import argparse
import json
import math
import os
import socket
import sys
import time

import ddp_launch  # tests/bench, beside this script

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
    from torch_single import build_model, load_idx  # same folder
    IMPORT_ERROR = None
except ImportError as e:  # reported by main() as "reference skipped" (exit 3)
    IMPORT_ERROR = e


def process_age_s():
    """Seconds since the kernel started this process, or None off Linux."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def free_port():
    """A port the OS considers free on 127.0.0.1 (released again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_shard(torch, data_dir, prefix, rank, world):
    """This rank's rows (sample i goes to rank i % world, as ps-worker shards)
    as float32 pixels / 255 and int64 labels.  Sharded before the conversion
    so each process converts only its own rows."""
    x = load_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = load_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{prefix}: {x.shape[0]} images but {y.shape[0]} labels")
    xs = torch.from_numpy(np.array(x.reshape(x.shape[0], -1)[rank::world]))  # a copy
    ys = torch.from_numpy(y[rank::world].astype(np.int64))
    return xs.float().div_(255.0), ys, x.shape[0]


def epoch_order(torch, n, seed, epoch, rank):
    """This rank's positions in its shard for one epoch (seeded per epoch)."""
    gen = torch.Generator().manual_seed((seed * 1000003 + epoch) * 64 + rank)
    return torch.randperm(n, generator=gen)


def evaluate(torch, dist, model, xte, yte):
    """(test loss, test accuracy) over every rank's shard of the test set."""
    with torch.no_grad():
        z = model(xte)
        loss = torch.nn.functional.cross_entropy(z, yte, reduction="sum")
        correct = (z.argmax(1) == yte).sum()
    t = torch.tensor([loss.item(), float(correct.item()), float(yte.shape[0])],
                     dtype=torch.float64)
    dist.all_reduce(t)
    return t[0].item() / t[2].item(), t[1].item() / t[2].item()


def train_epoch(torch, dist, ddp, opt, sched, xtr, ytr, order, a, steps):
    """One epoch of `steps` updates; returns (seconds, mean train loss over ranks)."""
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    total, count = 0.0, 0
    for j in range(steps):
        idx = order[j * a.batch_size:(j + 1) * a.batch_size]
        if idx.shape[0] == 0:
            # DDP needs every rank in every all-reduce; ps pushes a
            # zero-weight gradient here instead.  Not the case for FMNIST.
            raise RuntimeError("a rank ran out of samples before the epoch's last step")
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ddp(xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * idx.shape[0]
        count += idx.shape[0]
    secs = time.perf_counter() - t0
    t = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(t)
    return secs, t[0].item() / t[1].item()


def rank_main(rank, a, out):
    """One DDP process; rank 0 sends its per-epoch records and summary to `out`."""
    t_start = time.perf_counter()
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=a.world)
    t_init = time.perf_counter()
    xtr, ytr, n_total = load_shard(torch, a.data_dir, "train", rank, a.world)
    xte, yte, _ = load_shard(torch, a.data_dir, "t10k", rank, a.world)
    t_load = time.perf_counter()

    torch.manual_seed(a.seed)  # same initial weights everywhere; DDP broadcasts rank 0's anyway
    hidden = [int(h) for h in a.hidden.split(",") if h]
    ddp = DistributedDataParallel(build_model(torch, xtr.shape[1], hidden, 10))
    opt = torch.optim.SGD(ddp.parameters(), lr=a.lr, momentum=a.momentum)
    steps = math.ceil(n_total / (a.world * a.batch_size))
    total_steps = steps * a.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    train_s = eval_s = 0.0
    acc = test_loss = None
    for epoch in range(a.epochs):
        order = epoch_order(torch, xtr.shape[0], a.seed, epoch, rank)
        secs, train_loss = train_epoch(torch, dist, ddp, opt, sched, xtr, ytr, order, a, steps)
        train_s += secs
        t0 = time.perf_counter()
        if a.eval == "every" or epoch + 1 == a.epochs:
            test_loss, acc = evaluate(torch, dist, ddp.module, xte, yte)
        eval_s += time.perf_counter() - t0
        if rank == 0:
            out.put({"epoch": epoch + 1, "step": (epoch + 1) * steps, "train_loss": train_loss,
                     "test_loss": test_loss, "test_acc": acc,
                     "lr": opt.param_groups[0]["lr"],
                     "samples_per_s": n_total / secs, "epoch_s": secs})
    t_end = time.perf_counter()
    dist.destroy_process_group()
    if rank == 0:
        out.put({"summary": True, "test_acc": acc, "test_loss": test_loss,
                 "steps": total_steps, "import_init_s": t_init - t_start,
                 "load_s": t_load - t_init, "train_s": train_s, "eval_s": eval_s,
                 "rank0_s": t_end - t_start, "torch": torch.__version__})


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--world", type=int, default=2, help="DDP processes")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64, help="per process")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--hidden", default="256,128")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start-method", choices=("spawn", "fork"), default="spawn",
                    help="how the DDP processes start (spawn: fresh interpreters, as torchrun)")
    ap.add_argument("--eval", choices=("every", "last"), default="every",
                    help="evaluate on t10k after every epoch (as ps-worker --metrics) or the last")
    a = ap.parse_args()
    if a.world < 1 or a.epochs < 1 or a.batch_size < 1:
        ap.error("--world, --epochs and --batch-size must be at least 1")
    return a


def main():
    a = parse_args()
    if IMPORT_ERROR is not None:
        print(f"ddp_fmnist: {IMPORT_ERROR}", file=sys.stderr)
        return 3
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            path = os.path.join(a.data_dir, f"{split}-{kind}-ubyte.gz")
            if not os.path.isfile(path):
                print(f"ddp_fmnist: {path}: no such file", file=sys.stderr)
                return 2
    try:
        import torch.distributed as dist
        import torch.multiprocessing as mp
        if not dist.is_available() or not dist.is_gloo_available():
            raise ImportError("torch.distributed with gloo is not available")
    except ImportError as e:
        print(f"ddp_fmnist: {e}", file=sys.stderr)
        return 3
    # The children inherit these: rendezvous on loopback, one OpenMP thread.
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                       "OMP_NUM_THREADS": "1"})
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    res = ddp_launch.launch("ddp_fmnist", mp, rank_main, a, a.start_method)
    if res is None:
        return 1
    job_s, summary = res
    summary.update({"job_s": job_s, "process_s": process_age_s(), "world": a.world,
                    "start_method": a.start_method, "epochs": a.epochs, "batch_size": a.batch_size})
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
