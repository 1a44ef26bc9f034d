#!/usr/bin/python3
"""The reference for `make bench`'s Fashion-MNIST figure.

Trains the same MLP as `ps-worker --model mlp --hidden 256,128` (784-256-128-10,
ReLU, cross-entropy on the mean loss) with torch.optim.SGD in ONE process on
ONE thread (--threads 0: torch's default), with the global batch of the
distributed job (2 workers x 64 = 128), optionally with the servers' cosine
schedule (--lr-schedule cosine), and prints one JSON line per epoch:
    {"epoch": 1, "samples_per_s": ..., "train_loss": ..., "test_acc": ...}
samples_per_s counts the training loop only (batch gather, forward, backward,
step), not data loading or the test evaluation, like ps-worker's metrics.

Data: the IDX .gz files of Debian's dataset-fashion-mnist, read with gzip and
numpy, pixels scaled to [0, 1] as ps-worker does.  Exit status 3 when torch
cannot be imported (the caller reports the reference as skipped), 2 on bad
data.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np


def load_idx(path):
    """An IDX file of unsigned bytes as a numpy array; ValueError if malformed."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header")
    dtype, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    head = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != head + int(np.prod(dims)):
        raise ValueError(f"{path}: {len(data) - head} bytes of data for dims {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def load_split(data_dir, prefix):
    x = load_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = load_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{prefix}: {x.shape[0]} images but {y.shape[0]} labels")
    return x.reshape(x.shape[0], -1).astype(np.float32) / np.float32(255.0), y.astype(np.int64)


def build_model(torch, features, hidden, classes):
    layers, width = [], features
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, classes))
    return torch.nn.Sequential(*layers)


def train_epoch(torch, model, opt, x, y, batch, gen, sched=None):
    """One pass; returns (seconds, mean train loss).  sched, if any, is
    stepped once per update (as the servers step --lr-schedule)."""
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]
    total = 0.0
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        idx = perm[i:i + batch]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total += loss.item() * idx.shape[0]
    return time.perf_counter() - t0, total / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--hidden", default="256,128")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                    help="cosine: CosineAnnealingLR over all updates, as ps-server's")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (0: torch's default, all cores)")
    a = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"torch_single: torch is not importable: {e}", file=sys.stderr)
        return 3
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    try:
        xtr, ytr = load_split(a.data_dir, "train")
        xte, yte = load_split(a.data_dir, "t10k")
    except (OSError, ValueError) as e:
        print(f"torch_single: {e}", file=sys.stderr)
        return 2
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
    hidden = [int(h) for h in a.hidden.split(",") if h]
    model = build_model(torch, xtr.shape[1], hidden, 10)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    gen = torch.Generator().manual_seed(a.seed)
    sched = None
    if a.lr_schedule == "cosine":
        steps = (xtr.shape[0] + a.batch_size - 1) // a.batch_size * a.epochs
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for epoch in range(1, a.epochs + 1):
        secs, loss = train_epoch(torch, model, opt, xtr, ytr, a.batch_size, gen, sched)
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(json.dumps({"epoch": epoch, "samples_per_s": xtr.shape[0] / secs,
                          "train_loss": loss, "test_acc": acc, "epoch_s": secs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
