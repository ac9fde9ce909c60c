"""cine_crunet: forward time per slice, and held-out simulated cine against SENSE, L+S and zero-filled.

``speed``: one 128×128 slice, 20 phases, 10 coils, R = 8 (equispaced, 24 ACS rows), forward only,
median of 3 runs after a warm-up, at 1 and 2 torch threads (the issue's goal: ≤ 5 s per slice on
2 CPU cores).

``heldout``: simulated cases from the test seeds (:data:`cmrecon.models.cine_train.TEST_SEED_BASE`
and up, never used for training or model selection), 128×128, 20 phases, 10 coils, the
training SNR range; per R, half equispaced and half kt-interleaved. Every case runs through the
chains' own front end once (:func:`cmrecon.models.cine_train.front_end`); each method
reconstructs from that same :class:`~cmrecon.products.cine.CineMapped` data:

* ``zero_filled`` — per-phase SENSE combination of the zero-filled k-space (the network's start);
* ``cine_sense`` / ``cine_lps`` — :mod:`cmrecon.recon.cine` with the chain steps' default
  parameters (``cmrecon_gadgets.cine_steps``);
* ``cine_crunet`` — :func:`cmrecon.models.crunet.crunet_reconstruct` with the given weights.

Scores: :func:`cmrecon.evaluate_cine.score_cine_slice` (magnitude per phase, ground-truth-max
normalisation; SSIM and NMSE over the truth's dynamic region and the whole image), mean over
slices, plus per-slice wins of cine_crunet. Slices and baseline results are cached in
``--cache`` so new weights re-run only the network.

Run::

    python bench/bench_crunet.py speed --weights cine_crunet_cpu
    python bench/bench_crunet.py heldout --weights cine_crunet_cpu --cases 12 --R 4 8 10 \\
        --cache /tmp/crunet_bench

Result (2026-12-02, 2 shared vCPUs, shipped cine_crunet_cpu, ``--threads 1``; dynamic region
SSIM / NMSE, mean of 12 slices per R; full table in docs/model_card.md)::

    | R | zero-filled | cine_sense | cine_lps | cine_crunet |
    | 4 | 0.829 / 0.104 | 0.870 / 0.032 | 0.939 / 0.0142 | 0.962 / 0.0123 |
    | 8 | 0.790 / 0.105 | 0.625 / 0.122 | 0.905 / 0.0260 | 0.936 / 0.0127 |
    | 10 | 0.804 / 0.125 | 0.668 / 0.078 | 0.903 / 0.0335 | 0.934 / 0.0122 |

    speed: 3.3 s/slice on 1 thread; 2 threads 22 s with the other core busy (3.7 s when free)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cmrecon.axes import centre_crop
from cmrecon.evaluate_cine import score_cine_slice
from cmrecon.models.cine_train import TEST_SEED_BASE, CineSlice, CineTrainSettings, case_params, front_end
from cmrecon.models.crunet import CineCRUNet, crunet_reconstruct, load_cine_crunet, zero_filled

KEYS = ("ssim_dynamic", "nmse_dynamic", "ssim_all", "nmse_all")


def _model(weights: str | None) -> CineCRUNet:
    if weights:
        return load_cine_crunet(weights).model
    torch.manual_seed(0)
    model = CineCRUNet().eval()
    for c in model.cascades:   # an untrained model's output layer is zero: time a non-trivial one
        torch.nn.init.normal_(c.conv_out.weight, std=0.01)
    return model


def speed(args: argparse.Namespace) -> None:
    from cmrecon.sim.cine import CineParams, simulate_cine
    case = simulate_cine(CineParams(phases=20, coils=10, matrix=(128, 128), acceleration=8, seed=TEST_SEED_BASE + 999))
    mk = front_end(case.header_xml, case.items)[0]
    model = _model(args.weights)
    print("| threads | s/slice (median of 3) | parameters |")
    print("|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        run = lambda: crunet_reconstruct(model, mk.kspace.kspace, mk.maps.maps, mk.kspace.mask)  # noqa: E731
        run()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        print(f"| {threads} | {np.median(times):.2f} | {sum(p.numel() for p in model.parameters()):,} |")


def _baselines(sl: CineSlice) -> dict[str, np.ndarray]:
    """zero_filled, cine_sense and cine_lps images (phases, y, x) of one slice."""
    from cmrecon.recon.cine import cine_sense, lps
    from cmrecon_gadgets.cine_steps import CineLpsParams, CineSenseParams
    out = {}
    k, m, mask = (torch.from_numpy(a)[None] for a in (sl.kspace, sl.maps, sl.mask))
    out["zero_filled"] = zero_filled(k, m, mask)[0].numpy()
    sp = CineSenseParams()
    out["cine_sense"] = cine_sense(sl.kspace, sl.maps, sl.mask, lam=sp.lam, iterations=sp.iterations, tol=sp.tol)
    lp = CineLpsParams()
    out["cine_lps"] = lps(sl.kspace, sl.maps, sl.mask, lambda_l=lp.lambda_l, lambda_s=lp.lambda_s,
                          iterations=lp.iterations, tol=lp.tol, method=lp.method).images
    return out


def _score(images: np.ndarray, sl: CineSlice) -> dict[str, float]:
    mag = np.abs(np.asarray(centre_crop(images, sl.target.shape[-2:])))
    truth = {"images": sl.target[None], "dynamic_mask": sl.dynamic[None], "static_mask": sl.static[None]}
    m = score_cine_slice(mag, truth, 0)
    return {k: m[k] for k in KEYS}


def test_slice(settings: CineTrainSettings, R: int, i: int, cache: Path) -> tuple[str, str, CineSlice]:
    """Held-out case ``i`` at ``R`` (simulated and run through the front end once, then cached)."""
    from cmrecon.models.cine_train import simulated_slices
    sampling = ("equispaced", "kt_interleaved")[i % 2]
    name = f"test_R{R}_{i:03d}"
    path = cache / f"{name}.npz"
    if not path.is_file():
        p = case_params(settings, "test", R * 1000 + i, acceleration=R, sampling=sampling, phases=20, coils=10)
        simulated_slices(p)[0].save(path)
    return name, sampling, CineSlice.load(path)


def heldout(args: argparse.Namespace) -> None:
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    settings = CineTrainSettings()
    model = _model(args.weights) if args.weights else None
    torch.set_num_threads(args.threads)
    rows = []
    for R in args.R:
        for i in range(args.cases):
            name, sampling, sl = test_slice(settings, R, i, cache)
            scores_path = cache / f"{name}_baselines.json"
            if scores_path.is_file():
                scores = json.loads(scores_path.read_text())
            else:
                t0 = time.perf_counter()
                scores = {k: _score(v, sl) for k, v in _baselines(sl).items()}
                scores["baseline_s"] = time.perf_counter() - t0
                scores_path.write_text(json.dumps(scores))
            if model is not None:
                t0 = time.perf_counter()
                out = crunet_reconstruct(model, sl.kspace, sl.maps, sl.mask)
                scores["crunet_s"] = time.perf_counter() - t0
                scores["cine_crunet"] = _score(out, sl)
            rows.append({"R": R, "sampling": sampling, "case": name, "snr": sl.snr, **scores})
            line = " ".join(f"{m} {scores[m]['ssim_dynamic']:.3f}/{scores[m]['nmse_dynamic']:.4f}"
                            for m in ("zero_filled", "cine_sense", "cine_lps", "cine_crunet") if m in scores)
            print(f"{name} {sampling:14s} SNR {sl.snr:4.1f}: {line}", flush=True)
    methods = [m for m in ("zero_filled", "cine_sense", "cine_lps", "cine_crunet") if m in rows[0]]
    print("\n| R | sampling | method | n | SSIM dynamic | NMSE dynamic | SSIM image | NMSE image |")
    print("|---|---|---|---|---|---|---|---|")
    for R in args.R:
        for sampling in ("all", "equispaced", "kt_interleaved"):
            sel = [r for r in rows if r["R"] == R and sampling in ("all", r["sampling"])]
            for m in methods:
                mean = {k: np.mean([r[m][k] for r in sel]) for k in KEYS}
                print(f"| {R} | {sampling} | {m} | {len(sel)} | {mean['ssim_dynamic']:.4f} | "
                      f"{mean['nmse_dynamic']:.4f} | {mean['ssim_all']:.4f} | {mean['nmse_all']:.4f} |")
    if "cine_crunet" in methods:
        print("\ncine_crunet per-slice wins on the dynamic region (SSIM higher / NMSE lower):")
        for R in args.R:
            sel = [r for r in rows if r["R"] == R]
            for other in ("cine_sense", "cine_lps"):
                ws = sum(r["cine_crunet"]["ssim_dynamic"] > r[other]["ssim_dynamic"] for r in sel)
                wn = sum(r["cine_crunet"]["nmse_dynamic"] < r[other]["nmse_dynamic"] for r in sel)
                print(f"  R {R} vs {other}: SSIM {ws}/{len(sel)}, NMSE {wn}/{len(sel)}")
        print(f"\nmean cine_crunet time per slice: {np.mean([r['crunet_s'] for r in rows]):.2f} s "
              f"({args.threads} threads)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--weights", help="shipped name or checkpoint (default: an untrained model)")
    s.set_defaults(func=speed)
    h = sub.add_parser("heldout")
    h.add_argument("--weights", help="shipped name or checkpoint (none: baselines only)")
    h.add_argument("--cases", type=int, default=12, help="cases (one slice each) per R")
    h.add_argument("--R", type=int, nargs="+", default=[4, 8, 10])
    h.add_argument("--cache", default="/tmp/crunet_bench")
    h.add_argument("--threads", type=int, default=1)
    h.add_argument("--json", help="write every row here")
    h.set_defaults(func=heldout)
    args = p.parse_args()
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
