#!/usr/bin/python3
"""The PyTorch DDP reference for `make bench`'s sparse_lr_vs_ddp figure.

Runs the same job as

    mpirun -np 1 ps-server --lr LR --momentum M \\
         : -np 2 ps-worker --model logreg --data libsvm:TRAIN \\
           --test-data libsvm:TEST --batch-size B --epochs E

with torch.nn.parallel.DistributedDataParallel on the gloo backend: WORLD
processes (default 2) started with torch.multiprocessing (spawn), env://
rendezvous on 127.0.0.1 and a free port, one intra-op thread each.  The
model is binary logistic regression: nn.EmbeddingBag(num_ids, 1,
mode='sum', sparse=True) over the row's feature indices, weighted by their
values, plus a dense bias, both starting at zero (as ps-worker's table and
bias); mean binary cross-entropy; torch.optim.SGD with the same lr and
momentum.  num_ids is 1 + the largest index in any rank's rows (train and
test; indices are used as written, so they must be below 2^62 here).
Same shard rule as ps-worker (row i of the file goes to rank i % WORLD,
shuffled within the shard each epoch) and the same steps per epoch,
ceil(N / (WORLD * B)).  Labels may be 0/1 or -1/+1.  Every epoch ends with
the test logloss over the whole test file (each rank its strided part, the
sums all-reduced), as ps-worker --metrics does.

Prints one JSON line per epoch (from rank 0) and a closing summary line:
    {"summary": true, "job_s": ..., "test_logloss": ..., ...}
job_s is from just before the processes are spawned until they are joined
(interpreter start, torch import, rendezvous, parsing, training, every
evaluation, shutdown).

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


def free_port():
    """A port the OS considers free on 127.0.0.1 (released again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DataError(Exception):
    pass


def parse_libsvm(path, rank, world):
    """Rows rank, rank + world, ... of a LIBSVM file as CSR lists:
    (labels 0/1, offsets, indices, values, rows in the whole file)."""
    labels, offsets, ids, vals = [], [0], [], []
    n = 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            mine = n % world == rank
            n += 1
            if not mine:
                continue
            try:
                y = float(parts[0])
                for tok in parts[1:]:
                    k, _, v = tok.partition(":")
                    ids.append(int(k))
                    vals.append(float(v))
            except ValueError:
                raise DataError(f"{path}:{lineno}: not a LIBSVM line") from None
            if y not in (0.0, 1.0, -1.0):
                raise DataError(f"{path}:{lineno}: label {parts[0]} is not 0/1 or -1/+1")
            labels.append(1.0 if y == 1.0 else 0.0)
            offsets.append(len(ids))
    if any(k < 1 or k >= 1 << 62 for k in ids):
        raise DataError(f"{path}: an index is not in [1, 2^62)")
    return labels, offsets, ids, vals, n


def to_tensors(torch, csr):
    labels, offsets, ids, vals, n = csr
    return (torch.tensor(labels, dtype=torch.float32), torch.tensor(offsets, dtype=torch.int64),
            torch.tensor(ids, dtype=torch.int64), torch.tensor(vals, dtype=torch.float32), n)


def batch(torch, data, idx):
    """The rows idx of a CSR shard as EmbeddingBag inputs (ids, offsets,
    per-sample weights) and labels."""
    y, off, ids, vals, _ = data
    starts, ends = off[idx], off[idx + 1]
    lens = ends - starts
    boff = torch.zeros(idx.shape[0], dtype=torch.int64)
    boff[1:] = torch.cumsum(lens, 0)[:-1]
    pos = torch.repeat_interleave(starts - boff, lens) + torch.arange(int(lens.sum()))
    return ids[pos], boff, vals[pos], y[idx]


class LogReg:
    @staticmethod
    def build(torch, num_ids):
        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.EmbeddingBag(num_ids, 1, mode="sum", sparse=True)
                self.bias = torch.nn.Parameter(torch.zeros(1))
                with torch.no_grad():
                    self.emb.weight.zero_()

            def forward(self, ids, offsets, weights):
                return self.emb(ids, offsets, per_sample_weights=weights).squeeze(1) + self.bias

        return Model()


def evaluate(torch, dist, model, test):
    """Test logloss over every rank's part of the test file."""
    with torch.no_grad():
        idx = torch.arange(test[0].shape[0])
        ids, off, w, y = batch(torch, test, idx)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(ids, off, w), y, reduction="sum")
    t = torch.tensor([loss.item(), float(y.shape[0])], dtype=torch.float64)
    dist.all_reduce(t)
    return t[0].item() / t[1].item()


def rank_main(rank, a, out):
    """One DDP process; rank 0 sends its per-epoch records and summary to `out`."""
    t_start = time.perf_counter()
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    # A collective that waits this long is a hang (seen intermittently on
    # tiny runs): fail instead of waiting for run.sh's timeout.
    import datetime
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=a.world,
                            timeout=datetime.timedelta(seconds=300))
    train = to_tensors(torch, parse_libsvm(a.train, rank, a.world))
    test = to_tensors(torch, parse_libsvm(a.test, rank, a.world))
    top = torch.tensor([max(int(train[2].max()) if train[2].numel() else 0,
                            int(test[2].max()) if test[2].numel() else 0)])
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    t_load = time.perf_counter()

    ddp = DistributedDataParallel(LogReg.build(torch, int(top.item()) + 1))
    opt = torch.optim.SGD(ddp.parameters(), lr=a.lr, momentum=a.momentum)
    steps = math.ceil(train[4] / (a.world * a.batch_size))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    n_mine = train[0].shape[0]
    train_s = 0.0
    logloss = None
    for epoch in range(a.epochs):
        gen = torch.Generator().manual_seed((a.seed * 1000003 + epoch) * 64 + rank)
        order = torch.randperm(n_mine, generator=gen)
        t0 = time.perf_counter()
        for j in range(steps):
            idx = order[j * a.batch_size:(j + 1) * a.batch_size]
            if idx.shape[0] == 0:
                # DDP needs every rank in every all-reduce; ps pushes a
                # zero-weight gradient here instead.
                raise RuntimeError("a rank ran out of rows before the epoch's last step")
            ids, off, w, y = batch(torch, train, idx)
            opt.zero_grad(set_to_none=True)
            loss_fn(ddp(ids, off, w), y).backward()
            opt.step()
        train_s += time.perf_counter() - t0
        logloss = evaluate(torch, dist, ddp.module, test)
        if rank == 0:
            out.put({"epoch": epoch + 1, "step": (epoch + 1) * steps, "test_logloss": logloss,
                     "lr": a.lr,
                     "epoch_s": time.perf_counter() - t0})
    dist.destroy_process_group()
    if rank == 0:
        out.put({"summary": True, "test_logloss": logloss, "steps": steps * a.epochs,
                 "num_ids": int(top.item()) + 1, "load_s": t_load - t_start,
                 "train_s": train_s, "torch": torch.__version__})


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, help="LIBSVM training file")
    ap.add_argument("--test", required=True, help="LIBSVM test file")
    ap.add_argument("--world", type=int, default=2, help="DDP processes")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256, help="per process")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.world < 1 or a.epochs < 1 or a.batch_size < 1:
        ap.error("--world, --epochs and --batch-size must be at least 1")
    return a


def main():
    a = parse_args()
    for path in (a.train, a.test):
        if not os.path.isfile(path):
            print(f"ddp_sparse_lr: {path}: no such file", file=sys.stderr)
            return 2
    try:
        parse_libsvm(a.test, 0, 1)  # bad data is exit 2 before anything spawns
    except DataError as e:
        print(f"ddp_sparse_lr: {e}", file=sys.stderr)
        return 2
    try:
        import torch.distributed as dist
        import torch.multiprocessing as mp
        if not dist.is_available() or not dist.is_gloo_available():
            raise ImportError("torch.distributed with gloo is not available")
    except ImportError as e:
        print(f"ddp_sparse_lr: {e}", file=sys.stderr)
        return 3
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                       "OMP_NUM_THREADS": "1"})
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    res = ddp_launch.launch("ddp_sparse_lr", mp, rank_main, a, "spawn")
    if res is None:
        return 1
    job_s, summary = res
    summary.update({"job_s": job_s, "world": a.world, "epochs": a.epochs,
                    "batch_size": a.batch_size, "lr": a.lr, "momentum": a.momentum})
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
