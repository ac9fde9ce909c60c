"""Per-slice time of each classical LGE step and chain (16 coils, 192×144, R = 2).

    python bench/bench_lge_chains.py [--runs 3] [--blas-threads 1]

Simulates one slice with 16 repeats (seed 0), then times, per run, every step of
``psir_classic`` and ``psir_moco`` as the chain runs them (exclusive time: a stage's time minus
its upstream's), with 8 and with 16 repeats, and prints medians over ``--runs``. The clinical
Gadgetron MOCO reference is > 5 s per slice (docs/physics.md §4).

``--blas-threads`` sets ``CMRECON_BLAS_THREADS``, the BLAS thread policy every process entry applies
(cmrecon.runtime; default 1, 0 leaves BLAS as the libraries set it): multithreaded OpenBLAS
makes the many tiny per-readout matrix products of ``noise_prewhiten`` tens of times slower on a
small, busy machine (see docs/results.md).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="CMRECON_BLAS_THREADS for this run (default: the policy's 1; 0: leave BLAS as is)")
    ap.add_argument("--matrix", default="192x144")
    ap.add_argument("--coils", type=int, default=16)
    args = ap.parse_args(argv)
    if args.blas_threads is not None:
        os.environ["CMRECON_BLAS_THREADS"] = str(args.blas_threads)

    import copy
    import logging
    import re
    import time

    import ismrmrd
    import numpy as np

    from cmrecon.chain.definition import resolve
    from cmrecon.chain.registry import StepContext, get_step
    from cmrecon.runtime import Settings, configure
    from cmrecon.sim.lge import LgeParams, simulate_lge

    configure(Settings.build())  # as cmrecon's process entry does

    logging.getLogger("cmrecon").setLevel(logging.WARNING)
    matrix = tuple(int(v) for v in args.matrix.split("x"))
    t0 = time.perf_counter()
    case = simulate_lge(LgeParams(matrix=matrix, coils=args.coils, repeats=16, acceleration=2,
                                  acs_lines=24, seed=0))
    print(f"simulated 1 slice, 16 repeats, {args.coils} coils, {matrix[0]}x{matrix[1]}, R=2 in "
          f"{time.perf_counter() - t0:.1f} s (CMRECON_BLAS_THREADS="
          f"{os.environ.get('CMRECON_BLAS_THREADS', 'unset: 1')})", file=sys.stderr)

    def keep_repeats(n: int):
        """Items with only the first n repeats (average < n); header limits rewritten."""
        items = [a for a in case.items if a.idx.average < n]
        hdr = re.sub(r"(<average>\s*<minimum>0</minimum>\s*<maximum>)15(</maximum>)",
                     rf"\g<1>{n - 1}\g<2>", case.header_xml)
        if hdr == case.header_xml and n != 16:
            raise SystemExit("bench: could not rewrite the average limit in the header")
        return hdr.encode(), items

    def run_timed(chain_name: str, hdr: bytes, items) -> dict[str, float]:
        chain = resolve(chain_name)
        ctx = StepContext(header_xml=hdr)
        cumulative: dict[str, float] = {}

        def timed(name, gen):
            cumulative[name] = 0.0
            while True:
                t = time.perf_counter()
                try:
                    x = next(gen)
                except StopIteration:
                    cumulative[name] += time.perf_counter() - t
                    return
                cumulative[name] += time.perf_counter() - t
                yield x

        stream = iter(copy.deepcopy(items))
        for s in chain.steps:
            stream = timed(s.name, get_step(s.name).fn(stream, s.params, ctx))
        out = list(stream)
        assert any(isinstance(o, ismrmrd.Image) for o in out)
        exclusive, prev = {}, 0.0
        for s in chain.steps:
            exclusive[s.name] = cumulative[s.name] - prev
            prev = cumulative[s.name]
        exclusive["TOTAL"] = prev
        return exclusive

    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    for n in (8, 16):
        hdr, items = keep_repeats(n)
        for chain in ("psir_classic", "psir_moco"):
            for _ in range(args.runs):
                rows.setdefault((chain, n), []).append(run_timed(chain, hdr, items))
    steps = ["noise_prewhiten", "remove_oversampling", "buffer_ir_pd", "coil_maps", "unfold",
             "moco_average", "psir", "emit_images", "TOTAL"]
    cols = [(c, n) for n in (8, 16) for c in ("psir_classic", "psir_moco")]
    print(f"\nper-slice time, median of {args.runs} runs, seconds ({args.coils} coils, "
          f"{matrix[0]}x{matrix[1]}, R = 2; clinical Gadgetron MOCO: > 5 s/slice)\n")
    print("| step | " + " | ".join(f"{c} ({n} rep)" for c, n in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for s in steps:
        cells = []
        for key in cols:
            vals = [r[s] for r in rows[key] if s in r]
            cells.append(f"{np.median(vals):.3f}" if vals else "–")
        print(f"| {s} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
