"""Throughput of cmrecon.sim.training.make_sample (samples per minute), 1..N worker processes.

python bench/bench_sim_training.py --workers 2 --samples 40
"""

import argparse
import time
from multiprocessing import get_context


def _work(args: tuple[int, int]) -> tuple[int, float]:
    seed, n = args
    import torch
    torch.set_num_threads(1)
    from cmrecon.sim.training import iterate_samples
    t0 = time.perf_counter()
    count = sum(1 for _ in iterate_samples(seed, n))
    return count, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=40, help="samples per worker")
    a = ap.parse_args()
    with get_context("spawn").Pool(a.workers) as pool:
        res = pool.map(_work, [(w, a.samples) for w in range(a.workers)])
    total = sum(r[0] for r in res)
    wall = max(r[1] for r in res)
    print(f"{a.workers} workers: {total} samples in {wall:.1f} s = {total / wall * 60:.0f} samples/min "
          f"(128x128, 8-16 coils)")


if __name__ == "__main__":
    main()
