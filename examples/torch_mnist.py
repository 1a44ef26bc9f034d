#!/usr/bin/python3
"""A small CNN on Fashion-MNIST, trained through the ps servers with
psclient.torch (the Python layer over libpsclient).

    make        # builds bin/ and build/libpsclient.so
    mpirun -np 1 bin/ps-server --lr 0.05 --momentum 0.9 --weight-decay 5e-4 \\
        : -np 2 env PYTHONPATH=python /usr/bin/python3 examples/torch_mnist.py --steps 300

Data: the IDX files of Debian's dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist, the data `make run` uses; --data-dir
for another folder); nothing is downloaded.  Each worker trains on its
shard (every size()-th image from rank()), batch --batch-size, and
evaluates its share of the test set; the workers' counts are summed.  The
biases get no weight decay (a param group).  Prints one JSON line at the
end: {"steps":..., "test_acc":..., "train_loss":..., "seconds":...}.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % prefix))
    y = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % prefix))
    x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)  # N,1,28,28
    return (x - 0.2860) / 0.3530, torch.from_numpy(y.astype(np.int64))


class Net(torch.nn.Module):
    """conv 1->8 5x5, pool, conv 8->16 5x5, pool, fc 256->64, fc 64->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 5)
        self.conv2 = torch.nn.Conv2d(8, 16, 5)
        self.fc1 = torch.nn.Linear(16 * 4 * 4, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--steps", type=int, default=1000, help="updates (default 1000)")
    ap.add_argument("--batch-size", type=int, default=64, help="per worker (default 64)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--save", help="this worker's final weights (safetensors)")
    args = ap.parse_args()
    import psclient.torch as pst  # here: Net and load serve other scripts too
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # worker 0's initial values start the servers

    pst.init()
    rank, size = pst.rank(), pst.size()
    try:
        xtr, ytr = load(args.data_dir, "train")
        xte, yte = load(args.data_dir, "test")
    except OSError as e:
        pst.client().fail("torch_mnist: cannot read Fashion-MNIST in %s: %s (install "
                          "dataset-fashion-mnist or give --data-dir)" % (args.data_dir, e))
        xtr = ytr = xte = yte = None
    if xtr is not None:
        xtr, ytr = xtr[rank::size], ytr[rank::size]
        xte, yte = xte[rank::size], yte[rank::size]
        spe = max(1, len(ytr) // args.batch_size)
    else:
        spe = 1
    pst.plan(spe, args.steps)
    model = Net()
    biases = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    pst.register(model, groups=[{"params": biases, "weight_decay": 0.0}])

    g = torch.Generator().manual_seed(args.seed + rank)
    t0 = time.time()
    perm, at, losses = torch.randperm(len(ytr), generator=g), 0, []
    for _ in range(args.steps):
        if at + args.batch_size > len(perm):
            perm, at = torch.randperm(len(ytr), generator=g), 0
        idx = perm[at:at + args.batch_size]
        at += args.batch_size
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])  # the batch's mean loss
        loss.backward()
        pst.step(model, samples=len(idx))
        losses.append(loss.item())

    with torch.no_grad():
        correct = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum())
                      for i in range(0, len(yte), 1000))
    tot = pst.client().reduce_sum([correct, len(yte), float(np.mean(losses[-50:]))])
    if args.save:
        pst.save(args.save)
    seconds = time.time() - t0
    pst.finalize()
    if rank == 0:
        print(json.dumps({"steps": args.steps, "workers": size, "test_acc": tot[0] / tot[1],
                          "train_loss": tot[2] / size, "seconds": round(seconds, 3)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
