"""Spatiotemporal INR cine reconstruction: time per iteration and quality against time budgets.

Data: the analytic cine phantom of tests/recon/test_cine_inr.py (static body and RV, beating LV
and myocardium, smooth coil maps with Σ|S|² = 1) at 128² × 20 phases × 10 coils, complex noise
σ = 1 per sample (SNR units), CMRxRecon-style equispaced rows at R = 8 plus 24 ACS rows (or
``--sampling kt_interleaved``). Quality: NMSE and SSIM (cmrecon.metrics, 7×7 box, data range =
the truth's peak) of |x| against |truth|, over the whole image and over the dynamic region
(pixels whose magnitude changes over the cycle), averaged over phases; peers in the same run:
zero-filled E^H d, and cine_sense (per-phase CG-SENSE) and cine_lps (L+S) of
cmrecon.recon.cine with the chain steps' default parameters.

The INR's schedule (level unlocking, lr halving) runs in iterations (``InrParams.iterations``);
a budget shorter than those iterations take cuts the schedule short. Two rows per budget:
``defaults`` (InrParams() with that budget) and ``schedule fitted`` (iterations set to what a
15-iteration probe says fit the budget, so the whole schedule runs; shown when fewer than the
defaults' iterations).

``--simulated`` uses a held-out case of the cine simulator through the chains' own front end
instead (estimated coil maps, drawn SNR, truth aligned to the maps' phase).

Run: ``python bench/bench_cine_inr.py [--budgets 10,30,60] [--threads 2] [--simulated]``. The machine's load
(``os.getloadavg``) is printed with the table: timings on a shared 2-core CPU move with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "recon"))
from test_cine_inr import cine_phantom  # noqa: E402  (the test's phantom, built the same way)

from cmrecon.metrics import ssim  # noqa: E402
from cmrecon.recon.cine import cine_sense, lps  # noqa: E402
from cmrecon.recon.cine_inr import InrParams, fit_inr  # noqa: E402
from cmrecon.recon.fft import ifft2c  # noqa: E402
from cmrecon.sim.sampling import cine_masks  # noqa: E402
from cmrecon_gadgets.cine_steps import CineLpsParams, CineSenseParams  # noqa: E402


def scores(x: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict:
    """NMSE and mean per-phase SSIM of |x| vs |truth|, whole image and inside ``region``."""
    a, b = np.abs(x), np.abs(truth)
    peak = float(b.max())
    out = {"nmse": float(np.sum((a - b) ** 2) / np.sum(b ** 2)),
           "nmse_dyn": float(np.sum((a[:, region] - b[:, region]) ** 2) / np.sum(b[:, region] ** 2))}
    out["ssim"] = float(np.mean([ssim(a[p], b[p], data_range=peak) for p in range(len(a))]))
    out["ssim_dyn"] = float(np.mean([ssim(a[p], b[p], data_range=peak, mask=region)
                                     for p in range(len(a))]))
    return out


def simulated_case(args):
    """A held-out simulated slice (cmrecon.models.cine_train's test split, as bench_crunet.py)."""
    from cmrecon.models.cine_train import CineTrainSettings, case_params, simulated_slices
    p = case_params(CineTrainSettings(), "test", args.R * 1000 + args.seed, acceleration=args.R,
                    sampling=args.sampling, phases=args.phases, coils=args.coils)
    sl = simulated_slices(p)[0]
    ny, nx = sl.target.shape[-2:]
    ky, kx = sl.kspace.shape[-2:]
    if (ky, kx) != (ny, nx):  # score on the recon matrix: pad the truth and the region back
        raise SystemExit(f"simulated k-space grid {(ky, kx)} differs from the recon matrix {(ny, nx)}")
    return (sl.kspace, sl.maps, sl.mask, sl.target, sl.dynamic,
            f"simulated cine (test case {args.R * 1000 + args.seed}, SNR {sl.snr:.1f}, estimated maps)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="k-space matrix (square), px")
    ap.add_argument("--phases", type=int, default=20)
    ap.add_argument("--coils", type=int, default=10)
    ap.add_argument("--R", type=int, default=8)
    ap.add_argument("--acs", type=int, default=24, help="central ACS rows")
    ap.add_argument("--sampling", choices=("equispaced", "kt_interleaved"), default="equispaced")
    ap.add_argument("--signal", type=float, default=40.0, help="phantom scale, SNR units")
    ap.add_argument("--budgets", default="10,30,60", help="INR time budgets, s (comma-separated)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--params", default="", help="InrParams overrides, e.g. 'mlp_width=32,dc_eps=1.0'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simulated", action="store_true",
                    help="a held-out case of the cine simulator through the chains' front end (estimated "
                         "coil maps, SNR drawn; --size, --acs, --signal ignored) instead of the phantom")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.simulated:
        kspace, maps, mask, truth, dyn, what = simulated_case(args)
    else:
        truth, maps, full, dyn = cine_phantom((args.size, args.size), args.phases, args.coils,
                                              seed=args.seed, scale=args.signal)
        rng = np.random.default_rng(args.seed)
        noise = (rng.standard_normal(full.shape) + 1j * rng.standard_normal(full.shape)) / np.sqrt(2)
        mask = cine_masks(args.size, args.phases, args.R, args.acs, args.sampling)
        kspace = ((full + noise) * mask[:, None, :, None]).astype(np.complex64)
        what = f"analytic phantom, {args.acs} ACS, peak signal {args.signal:g}"
    overrides = {}
    for item in filter(None, args.params.split(",")):
        key, value = item.split("=")
        overrides[key.strip()] = type(getattr(InrParams(), key.strip()))(value)
    base = dataclasses.replace(InrParams(), **overrides)
    print(f"{what}: k-space {kspace.shape}, {args.sampling} R {args.R} ({mask.mean():.3f} of rows), "
          f"torch threads {args.threads}, load {os.getloadavg()[0]:.2f} at start")
    print(f"InrParams: {base}")

    rows = []

    def timed(name, fn, its="-"):
        t = time.perf_counter()
        x = fn()
        secs = time.perf_counter() - t
        rows.append((name, its, "-", secs, scores(x, truth, dyn)))

    timed("zero-filled E^H d", lambda: (maps.conj()[None] * ifft2c(kspace)).sum(1))
    sp, lp = CineSenseParams(), CineLpsParams()
    timed("cine_sense (per-phase CG-SENSE)", lambda: cine_sense(kspace, maps, mask, lam=sp.lam,
                                                                iterations=sp.iterations, tol=sp.tol))
    timed("cine_lps (L+S)", lambda: lps(kspace, maps, mask, lambda_l=lp.lambda_l, lambda_s=lp.lambda_s,
                                        iterations=lp.iterations, tol=lp.tol, method=lp.method).images)
    lps_scores = rows[-1][-1]

    marks = {}
    probe = dataclasses.replace(base, iterations=15, budget_s=1e9, progress_every_iterations=5)
    fit_inr(kspace, maps, mask, probe, progress=lambda it, loss, el: marks.__setitem__(it, el))
    per_iteration = (marks[15] - marks[5]) / 10
    setup = marks[5] - 5 * per_iteration
    print(f"probe: {per_iteration:.3f} s per iteration (iterations 6-15), {setup:.1f} s setup and warm-up")
    for budget in [float(b) for b in args.budgets.split(",")]:
        fitted = max(1, int(0.9 * (budget - setup) / per_iteration))  # 10 % margin for load swings
        for label, params in (("defaults", dataclasses.replace(base, budget_s=budget)),
                              (f"schedule fitted ({fitted} it)",
                               dataclasses.replace(base, budget_s=budget, iterations=fitted))):
            if label == "defaults" or fitted < base.iterations:
                res = fit_inr(kspace, maps, mask, params)
                rows.append((f"cine_inr {budget:g} s, {label}, stopped by {res.stopped_by}", res.iterations,
                             res.seconds / max(res.iterations, 1), res.seconds, scores(res.images, truth, dyn)))

    print("\n| method | iterations | s/iteration | s/slice | NMSE | NMSE dyn | SSIM | SSIM dyn |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, its, per_it, secs, sc in rows:
        per = per_it if isinstance(per_it, str) else f"{per_it:.3f}"
        print(f"| {name} | {its} | {per} | {secs:.1f} | {sc['nmse']:.4f} | {sc['nmse_dyn']:.4f} | "
              f"{sc['ssim']:.4f} | {sc['ssim_dyn']:.4f} |")
    print("\nINR against cine_lps (dynamic region): NMSE ratio (< 1: INR better), SSIM difference (> 0: INR better)")
    for name, _, _, _, sc in rows[3:]:
        print(f"  {name}: NMSE dyn {sc['nmse_dyn'] / lps_scores['nmse_dyn']:.2f}x, "
              f"SSIM dyn {sc['ssim_dyn'] - lps_scores['ssim_dyn']:+.4f}")
    print(f"\nload {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
