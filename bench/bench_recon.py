"""Per-slice timings of GRAPPA, SENSE, PSIR and MOCO averaging (16 coils, 192×144, R = 2).

Run: ``python bench/bench_recon.py [--runs 3]``. For reference, MOCO in Gadgetron's clinical
LGE chain costs > 5 s per slice (docs/physics.md §4); PSIRNet ~100 ms per slice on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cmrecon.coils.maps import inati, lowres_images_from_acs  # noqa: E402
from cmrecon.recon.fft import ifft2c  # noqa: E402
from cmrecon.recon.grappa import grappa_fill, grappa_weights  # noqa: E402
from cmrecon.recon.moco import fourier_shift, moco_average  # noqa: E402
from cmrecon.recon.psir import psir  # noqa: E402
from cmrecon.recon.sense import coil_combine, sense  # noqa: E402

from _bench_data import median_time, multicoil  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    shape, nc, R = (192, 144), 16, 2
    ksp, img, nmaps = multicoil(shape, nc)
    c0 = shape[0] // 2
    acs_rows = slice(c0 - 12, c0 + 12)
    m = np.zeros(shape[0], bool)
    m[::R] = True
    m_emb = m.copy()
    m_emb[acs_rows] = True
    und = ksp * m_emb[None, :, None]
    acs = ksp[:, acs_rows]
    rows = []
    rows.append(("GRAPPA weights (4x5, 24 ACS)", median_time(lambda: grappa_weights(acs, R),
                                                             args.runs)[0]))
    rows.append(("GRAPPA fit + fill + ifft + combine", median_time(
        lambda: coil_combine(ifft2c(grappa_fill(und, m_emb, acs, R)), nmaps), args.runs)[0]))
    maps = inati(lowres_images_from_acs(acs, shape))
    rows.append(("SENSE unfold (lattice)", median_time(
        lambda: sense(ksp * m[None, :, None], maps, m, R), args.runs)[0]))
    rows.append(("CG-SENSE 20 it (embedded ACS)", median_time(
        lambda: sense(und, maps, m_emb, R, iterations=20), args.runs)[0]))
    rng = np.random.default_rng(0)
    pd = (1.2 * np.abs(img) * np.exp(1j * np.angle(img))).astype(np.complex64)
    ir = (0.3 * img).astype(np.complex64)
    rows.append(("PSIR classical", median_time(lambda: psir(ir, pd), args.runs)[0]))
    rows.append(("PSIR psirnet_compatible", median_time(
        lambda: psir(ir, pd, psirnet_compatible=True), args.runs)[0]))

    def noise():
        return ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
                ).astype(np.complex64)

    for n in (8, 16):
        shifts = rng.normal(0, 3, (n, 2))
        irs = np.array([fourier_shift(ir, s) + noise() for s in shifts])
        pds = np.array([fourier_shift(pd, s) + noise() for s in shifts])
        for tr in ("translation", "rigid", "nonrigid"):
            t, _ = median_time(lambda irs=irs, pds=pds, tr=tr: moco_average(irs, pds, transform=tr), args.runs)
            rows.append((f"MOCO {tr}, {n} repeats", t))
    print(f"per-slice timings, {nc} coils, {shape[0]}x{shape[1]}, R={R}, median of {args.runs}")
    print(f"{'step':34s} {'time [ms]':>10s}")
    for name, t in rows:
        print(f"{name:34s} {1e3 * t:10.1f}")
    print("reference: Gadgetron MOCO LGE > 5000 ms/slice (clinical); PSIRNet ~100 ms/slice (GPU)")


if __name__ == "__main__":
    main()
