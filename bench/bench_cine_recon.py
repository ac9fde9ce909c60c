"""Cine reconstruction per slice: per-phase CG-SENSE and L+S (IST, POGM), with peers.

Data: 128×128 k-space grid, 20 phases, 10 coils, R 8 equispaced + 12 ACS rows (24 of 246 scaled
to 128), a static body and a beating heart (SNR ≈ 50), unit coil noise. Peers in the same
script: ``bart pics -l2`` (the same Tikhonov CG-SENSE, all phases at once; when ``bart`` is
installed, timed with its file I/O) for ``cine_sense``, and the numpy transcription of Otazo's
``lps_ist`` used as the tests' reference for ``lps``. A second table gives the iterations each
L+S method needs to bring the fixed-point residual ``||Φ(L, S) − (L, S)|| / ||(L, S)||`` (Φ
one IST step) below a level: the accuracy the two methods share.

Run: ``python bench/bench_cine_recon.py [--runs 3] [--threads 2] [--convergence 300]``. The
issue's goal: ``cine_lps`` ≤ 5 s per slice on 2 CPU cores at this size.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "recon"))
from cmrecon.metrics import nrmse, ssim  # noqa: E402
from cmrecon.recon import cine  # noqa: E402
from cmrecon.recon.fft import fft2c  # noqa: E402

from _bench_data import _ellipse, median_time, multicoil  # noqa: E402

#: the tests' independent numpy transcription of Otazo's lps_ist (tests/recon/test_cine.py)
lps_numpy = importlib.import_module("test_cine").lps_numpy

SHAPE, PHASES, COILS, R, ACS = (128, 128), 20, 10, 8, 12


def cine_case(seed: int = 0, snr: float = 50.0):
    """(k-space (T, C, ky, kx), truth (T, y, x), maps (C, ky, kx), mask (T, ky), heart (y, x))."""
    ny, nx = SHAPE
    yy, xx = np.meshgrid((np.arange(ny) - ny // 2) / ny, (np.arange(nx) - nx // 2) / nx, indexing="ij")
    _, _, maps = multicoil(SHAPE, COILS, seed=seed)
    frames = []
    for t in range(PHASES):
        beat = 1 + 0.3 * np.cos(2 * np.pi * t / PHASES)
        img = (0.6 * _ellipse(yy, xx, 0, 0, 0.40, 0.36) + 0.5 * _ellipse(yy, xx, -0.05, 0.08, 0.1 * beat, 0.09 * beat)
               + 0.3 * _ellipse(yy, xx, -0.02, -0.12, 0.12, 0.07 * (2 - beat)))
        frames.append(snr * img * np.exp(1j * (0.6 + 2 * yy - 1.5 * xx)))
    truth = np.array(frames).astype(np.complex64)
    rows = (np.arange(ny) - ny // 2) % R == 0
    rows[ny // 2 - ACS // 2: ny // 2 + ACS // 2] = True
    mask = np.repeat(rows[None], PHASES, axis=0)
    rng = np.random.default_rng(seed)
    k = fft2c(maps[None] * truth[:, None])
    k = k + (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)).astype(np.complex64) / np.sqrt(2)
    heart = _ellipse(yy, xx, -0.03, -0.01, 0.2, 0.3) > 0.5
    return (k * mask[:, None, :, None]).astype(np.complex64), truth, maps, mask, heart


def quality(recon, truth, heart):
    """(NRMSE, mean SSIM) of magnitudes over the heart region, every phase."""
    peak = float(np.abs(truth).max())
    err = nrmse(np.abs(recon)[:, heart], np.abs(truth)[:, heart])
    sim = np.mean([ssim(np.abs(recon[t]), np.abs(truth[t]), data_range=peak, mask=heart)
                   for t in range(len(truth))])
    return err, float(sim)


def _write_cfl(stem: Path, dims: list[int], data: np.ndarray) -> None:
    stem.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    np.ascontiguousarray(data, np.complex64).tofile(stem.with_suffix(".cfl"))


def bart_pics(kspace, maps, lam, iterations, threads):
    """``bart pics -l2`` on all phases (BART's TIME dimension 10); C-order (T, C, ky, kx) is
    BART's column-major (kx, ky, 1, C, …, T). Returns ((T, ky, kx) images, seconds).
    """
    import time
    nt, nc, ny, nx = kspace.shape
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        _write_cfl(tmp / "k", [nx, ny, 1, nc, 1, 1, 1, 1, 1, 1, nt], kspace)
        _write_cfl(tmp / "s", [nx, ny, 1, nc], maps)
        subprocess.run(["bart", "pics", "-l2", "-r", str(lam), "-i", str(iterations), "-w", "1",
                        str(tmp / "k"), str(tmp / "s"), str(tmp / "x")], check=True, capture_output=True,
                       env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        out = np.fromfile(tmp / "x.cfl", np.complex64).reshape(nt, ny, nx)
        return out, time.perf_counter() - t0


def convergence(kspace, maps, mask, method, iterations, levels):
    """Iterations at which the fixed-point residual first falls below each level (None: never)."""
    b, gram = cine._setup(kspace, maps, mask, "cpu")
    b = b / float(torch.abs(b).max())
    reached = {lv: None for lv in levels}

    def residual(k, low, sparse):
        g = gram(low + sparse) - b
        step_l, step_s = cine._svt(low - g, 0.01) - low, cine._soft_t(sparse - g, 0.0025) - sparse
        r = np.hypot(cine._norm(step_l), cine._norm(step_s)) / np.hypot(cine._norm(low), cine._norm(sparse))
        for lv in levels:
            if reached[lv] is None and r < lv:
                reached[lv] = k

    run = cine._lps_ist if method == "ist" else cine._lps_pogm
    run(gram, b, 0.01, 0.0025, iterations, 0.0, callback=residual)
    return reached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (BART: OMP_NUM_THREADS)")
    ap.add_argument("--convergence", type=int, default=300,
                    help="iterations of the convergence table (0 skips it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    kspace, truth, maps, mask, heart = cine_case()
    print(f"cine, {SHAPE[0]}x{SHAPE[1]} k-space grid, {PHASES} phases, {COILS} coils, R {R} + {ACS} ACS "
          f"({int(mask[0].sum())} of {SHAPE[0]} rows); torch {torch.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs; median of {args.runs}")

    rows = []   # (name, iterations, seconds, images, peer name, peer seconds)

    def timed(fn):
        return median_time(fn, args.runs)

    t, img = timed(lambda: cine.cine_sense(kspace, maps, mask, lam=1e-3, iterations=30, tol=0.0))
    peer = ("bart pics -l2 30 it", None)
    if shutil.which("bart"):
        times = [bart_pics(kspace, maps, 1e-3, 30, args.threads) for _ in range(args.runs)]
        peer = ("bart pics -l2 30 it", float(np.median([s for _, s in times])))
        rows.append(("  (bart pics -l2 itself)", 30, peer[1], times[0][0], "", None))
    rows.insert(0, ("cine_sense CG 30 it", 30, t, img, *peer))

    t_np, (l_np, s_np) = median_time(lambda: lps_numpy(kspace, maps, mask, 0.01, 0.0025, 50), 1)
    for method in ("ist", "pogm"):
        t, res = timed(lambda method=method: cine.lps(kspace, maps, mask, iterations=50, tol=0.0, method=method))
        rows.append((f"lps {method} 50 it", res.iterations, t, res.images, "numpy lps_ist 50 it", t_np))
        t, res = timed(lambda method=method: cine.lps(kspace, maps, mask, method=method))
        rows.append((f"lps {method} tol 0.0025", res.iterations, t, res.images, "", None))
    rows.append(("  (numpy lps_ist 50 it)", 50, t_np, l_np + s_np, "", None))
    zero_filled = cine.cine_encoding(torch.from_numpy(maps), torch.from_numpy(mask)).H(torch.from_numpy(kspace)).numpy()
    rows.append(("  (zero-filled E^H d)", 0, float("nan"), zero_filled, "", None))

    print(f"{'reconstruction':26s} {'it':>4s} {'time [s]':>9s} {'peer':>22s} {'peer [s]':>9s} {'ratio':>6s} "
          f"{'NRMSE':>6s} {'SSIM':>6s}  (heart region, magnitude)")
    for name, its, sec, images, peer_name, peer_sec in rows:
        err, sim = quality(images, truth, heart)
        ratio = f"{sec / peer_sec:6.2f}" if peer_sec else f"{'':6s}"
        peer_s = f"{peer_sec:9.2f}" if peer_sec else f"{'':9s}"
        print(f"{name:26s} {its:4d} {sec:9.2f} {peer_name:>22s} {peer_s} {ratio} {err:6.3f} {sim:6.3f}")
    print("ratio = ours / peer (below 1: ours is faster); bart includes its process start and file I/O")

    if args.convergence:
        levels = (1e-2, 1e-3, 1e-4)
        print(f"\nfixed-point residual ||Φ(L,S) − (L,S)|| / ||(L,S)|| (Φ = one IST step), "
              f"iterations to reach it (at most {args.convergence}), default λ_L 0.01, λ_S 0.0025")
        print(f"{'method':8s} " + " ".join(f"{lv:>8.0e}" for lv in levels))
        for method in ("ist", "pogm"):
            reached = convergence(kspace, maps, mask, method, args.convergence, levels)
            print(f"{method:8s} " + " ".join(f"{'-' if reached[lv] is None else reached[lv]:>8}" for lv in levels))
    load1 = os.getloadavg()
    print(f"\nload average (1 min) {load0[0]:.1f} at start, {load1[0]:.1f} at end, on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
