"""Learned PSIR timings: model latency/throughput per slice, and psirnet_lge vs psir_moco end to end.

1. The shipped ``psirnet_cpu_small`` model on the CPU (``--threads``, default 2): per-slice
   latency at batch 1 and throughput at batch ``--batch`` through
   :func:`cmrecon.models.serving.infer_slices` (the step's own code path: numpy in, numpy
   out), on simulated slices of ``--matrix`` × ``--coils``.
2. With CUDA: the full published configuration (845,426,378 parameters, random weights), the
   shipped ``--weights`` and ``psir_refine_cpu`` (and ``--refine-weights``) at 256×192 × 30
   coils, fp32 and bf16 autocast, batch 1 and ``--gpu-batch``, with peak GPU memory; without
   CUDA a note says it was skipped.
3. End to end through ``cmrecon serve`` (in this process, loopback TCP): one simulated case
   (``--e2e-slices`` slices, 8 repeats) replayed through ``psirnet_lge`` and ``psir_moco``;
   seconds per slice (the first psirnet_lge replay, which loads the model, is reported apart).

Run:  .venv/bin/python bench/bench_psirnet.py [--threads 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def device_line() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; {gpu}; "
            f"Python {platform.python_version()}")


def slice_inputs(n: int, matrix: tuple[int, int], coils: int):
    """``n`` simulated slices as SliceInput (R = 2, ACS-estimated coil maps)."""
    from cmrecon.models.adapter import SliceInput
    from cmrecon.sim.training import make_sample
    out = []
    for i in range(n):
        s = make_sample(np.random.default_rng([4242, i]), size=matrix, coils=(coils, coils),
                        R=(2,), sens="acs")
        out.append(SliceInput(s["ir_kspace"], s["pd_kspace"], s["mask"], s["sens_maps"], 0))
    return out


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def bench_shipped(args) -> list[str]:
    from cmrecon.models.serving import get_model, infer_slices
    entry = get_model(args.weights, "cpu")
    inputs = slice_inputs(args.batch, tuple(args.matrix), args.coils)
    rows = ["| model | device | matrix × coils | batch | median s/call | ms/slice | slices/s |",
            "|---|---|---|---|---|---|---|"]
    for b in (1, args.batch):
        ts = timed(lambda b=b: infer_slices(entry, inputs[:b], batch_size=b), args.runs)
        med = statistics.median(ts)
        rows.append(f"| {args.weights} | CPU ({torch.get_num_threads()} thr) | "
                    f"{args.matrix[0]}×{args.matrix[1]} × {args.coils} | {b} | {med:.3f} | "
                    f"{1000 * med / b:.0f} | {b / med:.2f} |")
    return rows


def _gpu_models(args):
    """``(label, model, kind)`` for the GPU table: the published configuration (random weights),
    the shipped PSIRNet-style weights and the shipped (or ``--refine-weights``) PsirRefine.
    """
    from cmrecon.models.psirnet import PSIRNet, count_parameters
    from cmrecon.models.shipped import load_shipped
    torch.manual_seed(0)
    pub = PSIRNet.from_preset("published")
    yield f"published config ({count_parameters(pub):,} params, random)", pub, "kspace"
    del pub
    yield args.weights, load_shipped(args.weights).model, "kspace"
    if args.refine_weights:
        from cmrecon.models.weights import load_checkpoint
        yield args.refine_weights, load_checkpoint(args.refine_weights).model, "images"
    yield "psir_refine_cpu", load_shipped("psir_refine_cpu").model, "images"


def bench_published(args) -> list[str]:
    """GPU latency at 256×192 × 30 coils, R = 2: fp32 and bf16 autocast, batch 1 and ``--gpu-batch``.

    PSIRNet-style models take the undersampled k-space, coil maps and mask; PsirRefine takes the
    coil-combined IR/PD images the chain's GRAPPA made (its own GPU cost only).
    """
    if not torch.cuda.is_available():
        print("note: no CUDA device — the GPU table (published 845 M parameters and the shipped "
              "models, 256x192 x 30 coils) was skipped", file=sys.stderr)
        return ["(GPU table skipped: no CUDA device)"]
    dev = torch.device("cuda")
    rows = ["| model | precision | batch | median s/call | ms/slice | slices/s | peak GiB |",
            "|---|---|---|---|---|---|---|"]
    shape = (30, 256, 192)
    for label, model, kind in _gpu_models(args):
        model = model.to(dev).eval()
        for b in (1, args.gpu_batch):
            g = torch.Generator(device=dev).manual_seed(1)
            k = torch.randn((b, *shape), dtype=torch.complex64, device=dev, generator=g)
            maps = torch.randn((b, *shape), dtype=torch.complex64, device=dev, generator=g)
            maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
            mask = torch.zeros((b, 1, 256, 192), dtype=torch.bool, device=dev)
            mask[..., ::2] = True
            img = 20 * torch.randn((b, 1, 192, 256), dtype=torch.complex64, device=dev, generator=g)
            for prec in ("fp32", "bf16"):
                ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if prec == "bf16"
                       else torch.autocast("cuda", enabled=False))

                def run(ctx=ctx, k=k, mask=mask, maps=maps, img=img, model=model, kind=kind):
                    with torch.inference_mode(), ctx:
                        if kind == "kspace":
                            model(k, 0.5 * k, mask, maps)
                        else:
                            model(img, 0.5 * img)
                    torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                try:
                    ts = timed(run, args.runs)
                except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                    rows.append(f"| {label} | {prec} | {b} | failed: {type(exc).__name__} | | | |")
                    continue
                med = statistics.median(ts)
                rows.append(f"| {label} | {prec} | {b} | {med:.3f} | {1000 * med / b:.1f} | "
                            f"{b / med:.2f} | {torch.cuda.max_memory_allocated() / 2**30:.2f} |")
        model.to("cpu")
        del model
        torch.cuda.empty_cache()
    return rows


def bench_e2e(args) -> list[str]:
    from cmrecon.io.mrdfile import write_dataset
    from cmrecon.server.client import replay_remote
    from cmrecon.server.tcp import MrdServer
    from cmrecon.sim.lge import LgeParams, simulate_lge
    p = LgeParams(slices=args.e2e_slices, repeats=8, coils=args.coils, matrix=tuple(args.matrix),
                  acceleration=2, acs_lines=24, seed=31337)
    case = simulate_lge(p)
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "case.h5"
    write_dataset(path, case.header_xml, case.items)
    srv = MrdServer("127.0.0.1", 0, idle_timeout_s=600.0)
    srv.start_background()
    rows = ["| chain | repeats used | slices | median s/slice | first replay s/slice |",
            "|---|---|---|---|---|"]
    try:
        for chain in ("psirnet_lge", "psir_moco"):
            ts = []
            for _ in range(args.e2e_runs + 1):
                t = time.perf_counter()
                res = replay_remote(path, "127.0.0.1", srv.port, chain_name=chain)
                ts.append((time.perf_counter() - t) / p.slices)
                if not res.images:
                    raise RuntimeError(f"{chain}: no images came back ({res.texts})")
            used = "1 of 8" if chain == "psirnet_lge" else "8 (best half kept)"
            rows.append(f"| {chain} | {used} | {p.slices} | {statistics.median(ts[1:]):.2f} | "
                        f"{ts[0]:.2f} |")
    finally:
        srv.shutdown()
        srv.server_close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--weights", default="psirnet_cpu_small")
    ap.add_argument("--matrix", type=int, nargs=2, default=[128, 96], metavar=("RO", "PE"))
    ap.add_argument("--coils", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--gpu-batch", type=int, default=4)
    ap.add_argument("--refine-weights", help="also time this PsirRefine checkpoint on the GPU")
    ap.add_argument("--e2e-slices", type=int, default=2)
    ap.add_argument("--e2e-runs", type=int, default=2)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Command: `python bench/bench_psirnet.py {' '.join(sys.argv[1:])}`")
    print(f"Device: {device_line()}\n")
    print("\n".join(bench_shipped(args)) + "\n")
    print("\n".join(bench_published(args)) + "\n")
    if not args.skip_e2e:
        print("\n".join(bench_e2e(args)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
