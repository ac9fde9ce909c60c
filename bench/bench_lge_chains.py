"""Per-slice time of each classical LGE step and chain (16 coils, 192×144, R = 2).

    python bench/bench_lge_chains.py [--runs 3] [--blas-threads 1] [--workers N] [--peer DIR]

Simulates one slice with 16 repeats (seed 0) once, then times, per run, every step of
``psir_classic`` and ``psir_moco`` as the chain runs them (exclusive time: a stage's time minus
its upstream's), with 8 and with 16 repeats, and prints medians over ``--runs``. Each run is a
fresh process reading the same simulated stream, after one untimed warm-up slice.
With ``--peer DIR`` (another checkout, e.g. ``git worktree add /tmp/base <commit>``) the runs
alternate between this checkout and ``DIR`` on the same stream, and each cell reads
``this / peer (ratio)``: on a shared machine only a ratio of alternated runs means much. The
clinical Gadgetron MOCO reference is > 5 s per slice (docs/physics.md §4).

``--blas-threads`` sets ``CMRECON_BLAS_THREADS``, the BLAS thread policy every process entry applies
(cmrecon.runtime; default 1, 0 leaves BLAS as the libraries set it): multithreaded OpenBLAS
makes the many tiny per-readout matrix products of ``noise_prewhiten`` tens of times slower on a
small, busy machine (see docs/results.md).

Both clocks are recorded in every run: wall (elapsed) and CPU (all the process's threads:
the compute workers of cmrecon.parallel spread unfold's GRAPPA batches over the cores, so wall
time falls below CPU time there).

Steps are stacked as the runner stacks them (``cmrecon.chain.runner.compose``: readouts in
blocks for the steps that take them; the packing lands in the first step's time).

Result (issue 15, ``--runs 5 --peer`` a worktree of e6c20ff, the commit before readouts travelled
in blocks; 2 vCPUs, idle, compute workers one per core; this / peer (ratio), seconds, 8 repeats)::

    | step                | psir_classic wall    | psir_moco wall       | psir_classic CPU     | psir_moco CPU        |
    | noise_prewhiten     | 0.035 / 0.047 (0.74) | 0.036 / 0.044 (0.82) | 0.035 / 0.047 (0.74) | 0.036 / 0.045 (0.81) |
    | remove_oversampling | 0.068 / 0.116 (0.59) | 0.069 / 0.109 (0.63) | 0.068 / 0.115 (0.59) | 0.068 / 0.107 (0.64) |
    | buffer_ir_pd        | 0.035 / 0.081 (0.43) | 0.042 / 0.090 (0.46) | 0.035 / 0.081 (0.43) | 0.042 / 0.089 (0.47) |
    | coil_maps           | 0.040 / 0.044 (0.93) | 0.043 / 0.047 (0.92) | 0.040 / 0.043 (0.93) | 0.043 / 0.047 (0.92) |
    | unfold              | 0.186 / 0.186 (1.00) | 0.168 / 0.188 (0.89) | 0.276 / 0.281 (0.98) | 0.263 / 0.286 (0.92) |
    | moco_average        | –                    | 0.283 / 0.280 (1.01) | –                    | 0.281 / 0.279 (1.01) |
    | TOTAL               | 0.354 / 0.484 (0.73) | 0.649 / 0.807 (0.80) | 0.448 / 0.557 (0.80) | 0.743 / 0.897 (0.83) |

At 16 repeats: psir_classic 0.690 / 0.885 s wall (0.78), psir_moco 1.279 / 1.352 s (0.95). The
run before, against efcdd9e (before the compute workers, the direct readout placement and the
BLAS fix): psir_moco 0.843 / 1.017 s wall; before the BLAS fix (d6d5715) scipy's OpenBLAS ran two
spinning threads in GRAPPA's calibration and unfold's CPU was 1.35x the peer's. The runs before,
against 0179e66 and 85fb243 (before MOCO by Newton's method and the batched GRAPPA): psir_moco
1.045 / 1.573 and 1.86 / 3.08 CPU s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["noise_prewhiten", "remove_oversampling", "buffer_ir_pd", "coil_maps", "unfold",
         "moco_average", "psir", "emit_images", "TOTAL"]
CHAINS = ("psir_classic", "psir_moco")
REPEATS = (8, 16)
#: import name → directory in a checkout (the layout pyproject.toml installs)
PACKAGES = {"cmrecon": "src/cmrecon", "cmrecon_gadgets": "gadgets", "cmrecon_chains": "chains",
            "cmrecon_weights": "weights"}


def import_dir(checkout: Path, into: Path) -> Path:
    """A directory whose entries link the checkout's packages, to put first on ``PYTHONPATH``."""
    into.mkdir(parents=True, exist_ok=True)
    for name, rel in PACKAGES.items():
        if (checkout / rel).is_dir():
            (into / name).symlink_to(checkout / rel)
    return into


def simulate(path: Path, matrix: tuple[int, int], coils: int) -> None:
    """Simulate the 16-repeat slice (seed 0) and pickle its header and readouts to ``path``."""
    import pickle
    import time

    import ismrmrd

    from cmrecon.sim.lge import LgeParams, simulate_lge

    t0 = time.perf_counter()
    case = simulate_lge(LgeParams(matrix=matrix, coils=coils, repeats=16, acceleration=2,
                                  acs_lines=24, seed=0))
    items = [("acq", a.getHead(), a.data.copy(), a.traj.copy()) if isinstance(a, ismrmrd.Acquisition)
             else ("item", a) for a in case.items]
    with open(path, "wb") as f:
        pickle.dump((case.header_xml, items), f)
    print(f"simulated 1 slice, 16 repeats, {coils} coils, {matrix[0]}x{matrix[1]}, R=2 in "
          f"{time.perf_counter() - t0:.1f} s (CMRECON_BLAS_THREADS="
          f"{os.environ.get('CMRECON_BLAS_THREADS', 'unset: 1')})", file=sys.stderr)


def worker(case_path: str) -> dict:
    """One run of every (chain, repeats) on the pickled stream, with whichever cmrecon imports first."""
    import copy
    import logging
    import pickle
    import re
    import time

    import ismrmrd

    from cmrecon.chain.definition import resolve
    from cmrecon.chain.registry import StepContext, get_step
    from cmrecon.runtime import Settings, configure
    try:
        from cmrecon.chain.runner import compose
    except ImportError:
        compose = None

    configure(Settings.build())  # as cmrecon's process entry does
    logging.getLogger("cmrecon").setLevel(logging.WARNING)
    with open(case_path, "rb") as f:
        header_xml, raw = pickle.load(f)
    items = []
    for kind, *rest in raw:
        if kind == "acq":
            head, data, traj = rest
            acq = ismrmrd.Acquisition(head)
            acq.data[:] = data
            if traj.size:
                acq.traj[:] = traj
            items.append(acq)
        else:
            items.append(rest[0])

    def keep_repeats(n: int):
        """Items with only the first n repeats (average < n); header limits rewritten."""
        kept = [a for a in items if not isinstance(a, ismrmrd.Acquisition) or a.idx.average < n]
        hdr = re.sub(r"(<average>\s*<minimum>0</minimum>\s*<maximum>)15(</maximum>)",
                     rf"\g<1>{n - 1}\g<2>", header_xml)
        if hdr == header_xml and n != 16:
            raise SystemExit("bench: could not rewrite the average limit in the header")
        return hdr.encode(), kept

    def run_timed(chain_name: str, hdr: bytes, stream_items) -> dict[str, dict[str, float]]:
        chain = resolve(chain_name)
        ctx = StepContext(header_xml=hdr)
        clocks = {"wall": time.perf_counter, "cpu": time.process_time}   # cpu: all threads
        cumulative: dict[str, dict[str, float]] = {c: {} for c in clocks}

        def timed(name, gen):
            for c in clocks:
                cumulative[c][name] = 0.0
            while True:
                t = {c: f() for c, f in clocks.items()}
                try:
                    x = next(gen)
                except StopIteration:
                    for c, f in clocks.items():
                        cumulative[c][name] += f() - t[c]
                    return
                for c, f in clocks.items():
                    cumulative[c][name] += f() - t[c]
                yield x

        stream = iter(copy.deepcopy(stream_items))
        if compose is not None:   # as run_chain stacks the steps (blocks of readouts where taken)
            stream = compose(chain.steps, stream, ctx, timed)
        else:                     # a peer checkout from before cmrecon.chain.runner.compose
            for s in chain.steps:
                stream = timed(s.name, get_step(s.name).fn(stream, s.params, ctx))
        out = list(stream)
        assert any(isinstance(o, ismrmrd.Image) for o in out)
        exclusive: dict[str, dict[str, float]] = {c: {} for c in clocks}
        for c in clocks:
            prev = 0.0
            for s in chain.steps:
                exclusive[c][s.name] = cumulative[c][s.name] - prev
                prev = cumulative[c][s.name]
            exclusive[c]["TOTAL"] = prev
        return exclusive

    run_timed(CHAINS[-1], *keep_repeats(REPEATS[0]))   # warm-up: imports, FFT plans, allocator
    times: dict = {}
    for n in REPEATS:
        hdr, kept = keep_repeats(n)
        for chain in CHAINS:
            times[f"{chain} {n}"] = run_timed(chain, hdr, kept)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="CMRECON_BLAS_THREADS for this run (default: the policy's 1; 0: leave BLAS as is)")
    ap.add_argument("--matrix", default="192x144")
    ap.add_argument("--coils", type=int, default=16)
    ap.add_argument("--peer", type=Path, default=None,
                    help="another checkout to alternate runs with (e.g. a git worktree of a base commit)")
    ap.add_argument("--workers", type=int, default=None,
                    help="CMRECON_WORKERS for the runs (default: as cmrecon sets it, one per core; "
                         "1 = serial; a peer checkout older than the compute workers ignores it)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.blas_threads is not None:
        os.environ["CMRECON_BLAS_THREADS"] = str(args.blas_threads)
    if args.workers is not None:
        os.environ["CMRECON_WORKERS"] = str(args.workers)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0

    import numpy as np

    matrix = tuple(int(v) for v in args.matrix.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_lge_") as tmp:
        case = Path(tmp) / "case.pkl"
        simulate(case, matrix, args.coils)
        checkouts = {"this": ROOT} | ({"peer": args.peer.resolve()} if args.peer else {})
        paths = {k: import_dir(v, Path(tmp) / k) for k, v in checkouts.items()}
        runs: dict[str, list[dict]] = {k: [] for k in checkouts}
        for r in range(args.runs):
            for label in checkouts:   # alternate: this, peer, this, peer, ...
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                    [str(paths[label])] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(case)],
                                     env=env, capture_output=True, text=True, cwd=tmp)
                if out.returncode:
                    raise SystemExit(f"bench: the {label} run failed:\n{out.stderr[-4000:]}")
                runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"run {r + 1}/{args.runs} {label}: " + ", ".join(
                    f"{k} {v['wall']['TOTAL']:.2f} s" for k, v in runs[label][-1].items()), file=sys.stderr)

    def median(label: str, key: str, clock: str, step: str) -> float | None:
        vals = [t[key][clock][step] for t in runs[label] if step in t[key][clock]]
        return float(np.median(vals)) if vals else None

    cols = [f"{c} {n}" for n in REPEATS for c in CHAINS]
    what = "this / peer (ratio)" if args.peer else "this checkout"
    workers = os.environ.get("CMRECON_WORKERS") or "one per core"
    for clock, meaning in (("wall", "elapsed"), ("cpu", "CPU time of all the process's threads")):
        print(f"\nper-slice {clock} time ({meaning}), median of {args.runs} runs, seconds, {what} "
              f"({args.coils} coils, {matrix[0]}x{matrix[1]}, R = 2; compute workers: {workers}; "
              "clinical Gadgetron MOCO: > 5 s/slice)" + (f"\npeer: {args.peer}" if args.peer else "") + "\n")
        print("| step | " + " | ".join(f"{c.split()[0]} ({c.split()[1]} rep)" for c in cols) + " |")
        print("|---|" + "---|" * len(cols))
        for s in STEPS:
            cells = []
            for key in cols:
                this = median("this", key, clock, s)
                peer = median("peer", key, clock, s) if args.peer else None
                if this is None:
                    cells.append("–")
                elif peer:
                    cells.append(f"{this:.3f} / {peer:.3f} ({this / peer:.2f})")
                else:
                    cells.append(f"{this:.3f}")
            print(f"| {s} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
