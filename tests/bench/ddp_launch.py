"""The DDP benchmarks' launcher (ddp_fmnist.py, ddp_sparse_lr.py): start
`world` processes running rank_main(rank, args, out), time them from spawn
to join, and collect what rank 0 put on the queue `out` (per-epoch records
are printed as JSON lines as they come; the one with "summary" is
returned)."""
import json
import sys
import time


def launch(name, mp, rank_main, a, start_method="spawn"):
    """(job_s, summary) on success; None after a message on stderr when a
    process failed or rank 0 sent no summary."""
    out = mp.get_context(start_method).SimpleQueue()
    t0 = time.perf_counter()
    try:
        mp.start_processes(rank_main, args=(a, out), nprocs=a.world, join=True,
                           start_method=start_method)
    except Exception as e:  # a child's traceback is already on stderr
        print(f"{name}: a DDP process failed: {e}", file=sys.stderr)
        return None
    job_s = time.perf_counter() - t0
    summary = None
    while not out.empty():
        rec = out.get()
        if rec.get("summary"):
            summary = rec
        else:
            print(json.dumps(rec), flush=True)
    if summary is None:
        print(f"{name}: rank 0 sent no summary", file=sys.stderr)
        return None
    return job_s, summary
