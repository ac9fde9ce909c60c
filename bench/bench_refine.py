"""Model time per slice: psir_refine_cpu against psirnet_cpu_small, same process, same input size.

Both shipped models on a 128×96 slice (PSIRNet with 16 coils of k-space, R = 2; PsirRefine on the
coil-combined IR/PD images it takes), torch 1 and 2 threads, median of 15 forward passes after
3 warm-ups; the goal of the learned round is ≤ 0.3 s per slice on 2 CPU cores.

Run::

    python bench/bench_refine.py

Result (2026-12-02, 2-core CPU machine)::

    | model | threads | ms/slice (median) | / psirnet_cpu_small |
    | psirnet_cpu_small | 1 | 345.7 | 1.00 |
    | psir_refine_cpu | 1 | 27.0 | 0.08 |
    | psirnet_cpu_small | 2 | 256.4 | 1.00 |
    | psir_refine_cpu | 2 | 20.1 | 0.08 |
"""

from __future__ import annotations

import time

import numpy as np
import torch

from cmrecon.models.shipped import load_shipped

RO, PE, COILS = 128, 96, 16


def median_ms(fn, runs: int = 15) -> float:
    with torch.no_grad():
        for _ in range(3):
            fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main() -> int:
    g = torch.Generator().manual_seed(0)
    net = load_shipped("psirnet_cpu_small").model
    ref = load_shipped("psir_refine_cpu").model
    k = lambda: torch.randn(1, COILS, RO, PE, dtype=torch.complex64, generator=g)  # noqa: E731
    ir_k, pd_k = k(), k()
    mask = torch.zeros(1, 1, RO, PE, dtype=torch.bool)
    mask[..., ::2] = True
    maps = k() / COILS ** 0.5
    img = lambda: 20 * torch.randn(1, 1, PE, RO, dtype=torch.complex64, generator=g)  # noqa: E731
    ir, pd = img(), img()
    print("| model | threads | ms/slice (median) | / psirnet_cpu_small |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t_net = median_ms(lambda: net(ir_k * mask, pd_k * mask, mask, maps))
        t_ref = median_ms(lambda: ref(ir, pd))
        print(f"| psirnet_cpu_small | {threads} | {t_net:.1f} | 1.00 |")
        print(f"| psir_refine_cpu | {threads} | {t_ref:.1f} | {t_ref / t_net:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
