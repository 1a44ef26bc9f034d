#!/usr/bin/python3
"""The PyTorch DDP reference for `make bench`'s torch_binding_vs_ddp.

The same training as

    mpirun -np 1 ps-server --insecure --lr 0.05 --momentum 0.9 --weight-decay 5e-4 \\
        : -np 2 python3 examples/torch_mnist.py --steps STEPS

(examples/torch_mnist.py's CNN, data, shard rule, batch, seed, sampling and
param groups: biases without weight decay) with DistributedDataParallel on
the gloo backend: WORLD processes spawned with torch.multiprocessing,
rendezvous on 127.0.0.1, one thread each, torch.optim.SGD with the same
groups.  Prints the example's JSON line plus "job_s": from just before the
processes are spawned until they are joined.
"""
import argparse
import json
import os
import socket
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "examples"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(rank, args, port, queue):
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch_mnist import Net, load  # the example's model and data
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=args.world)
    torch.manual_seed(args.seed)
    size = args.world
    xtr, ytr = load(args.data_dir, "train")
    xte, yte = load(args.data_dir, "test")
    xtr, ytr, xte, yte = xtr[rank::size], ytr[rank::size], xte[rank::size], yte[rank::size]
    model = Net()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    named = list(model.named_parameters())
    opt = torch.optim.SGD([{"params": [p for n, p in named if n.endswith(".bias")],
                            "weight_decay": 0.0},
                           {"params": [p for n, p in named if not n.endswith(".bias")]}],
                          lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(args.seed + rank)
    perm, at, losses = torch.randperm(len(ytr), generator=g), 0, []
    for _ in range(args.steps):
        if at + args.batch_size > len(perm):
            perm, at = torch.randperm(len(ytr), generator=g), 0
        idx = perm[at:at + args.batch_size]
        at += args.batch_size
        opt.zero_grad()
        loss = F.cross_entropy(ddp(xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        correct = sum(int((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum())
                      for i in range(0, len(yte), 1000))
    tot = torch.tensor([correct, len(yte), float(np.mean(losses[-50:]))], dtype=torch.float64)
    dist.all_reduce(tot)
    if rank == 0:
        queue.put({"steps": args.steps, "workers": size, "test_acc": float(tot[0] / tot[1]),
                   "train_loss": float(tot[2]) / size})
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--world", type=int, default=2)
    args = ap.parse_args()
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    t0 = time.time()
    port = free_port()
    procs = [ctx.Process(target=run, args=(r, args, port, queue)) for r in range(args.world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    job_s = time.time() - t0
    if any(p.exitcode != 0 for p in procs) or queue.empty():
        print("ddp_torch_mnist: a process failed", file=sys.stderr)
        return 1
    out = queue.get()
    out["job_s"] = round(job_s, 3)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
