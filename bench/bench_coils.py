"""Coil-map timings: Inati, Walsh, ESPIRiT (ours) vs BART ecalib/caldir, 16 coils 192×144.

Run: ``python bench/bench_coils.py [--runs 5] [--threads 2]``. BART rows appear when ``bart`` is
on PATH; they include BART's process start and cfl file I/O (our rows do not), as a user of
the command line would pay them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cmrecon.coils.maps import espirit, inati, lowres_images_from_acs, walsh  # noqa: E402

from _bench_data import median_time, multicoil  # noqa: E402


def _write_cfl(base: Path, arr: np.ndarray) -> None:
    dims = list(arr.shape) + [1] * (16 - arr.ndim)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    arr.astype(np.complex64).ravel(order="F").tofile(base.with_suffix(".cfl"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch/BLAS threads note only")
    args = ap.parse_args()
    shape, nc, acs_n = (192, 144), 16, 24
    ksp, _, _ = multicoil(shape, nc)
    c0 = shape[0] // 2
    acs = ksp[:, c0 - acs_n // 2:c0 + acs_n // 2, :]
    calib = acs[:, :, shape[1] // 2 - 12:shape[1] // 2 + 12]  # 24×24 as BART -r 24
    rows = []
    t_lr, lowres = median_time(lambda: lowres_images_from_acs(acs, shape), args.runs)
    rows.append(("lowres_images_from_acs", t_lr))
    rows.append(("inati (w7, 5 it)", median_time(lambda: inati(lowres), args.runs)[0]))
    rows.append(("walsh (w7)", median_time(lambda: walsh(lowres), args.runs)[0]))
    rows.append(("espirit (k6, 24x24 calib)",
                 median_time(lambda: espirit(calib, shape), args.runs)[0]))
    if shutil.which("bart"):
        tmp = Path(tempfile.mkdtemp())
        zf = np.zeros_like(ksp)
        zf[:, c0 - 12:c0 + 12, shape[1] // 2 - 12:shape[1] // 2 + 12] = calib
        _write_cfl(tmp / "k", np.moveaxis(zf, 0, -1)[:, :, None, :])
        for name, cmd in (("bart ecalib -m1 -k6 -r24", ["ecalib", "-m1", "-k6", "-r24", "-t0.02",
                                                         "-c0.95"]),
                          ("bart caldir 24", ["caldir", "24"])):
            t, _ = median_time(lambda cmd=cmd: subprocess.run(["bart", *cmd, str(tmp / "k"),
                                                       str(tmp / "m")], check=True,
                                                      capture_output=True), args.runs)
            rows.append((name, t))
        shutil.rmtree(tmp)
    else:
        print("(bart not on PATH: BART rows skipped)")
    ref = dict(rows)["inati (w7, 5 it)"]
    print(f"coil maps, {nc} coils, {shape[0]}x{shape[1]}, median of {args.runs} runs")
    print(f"{'method':32s} {'time [ms]':>10s} {'/ inati':>8s}")
    for name, t in rows:
        print(f"{name:32s} {1e3 * t:10.1f} {t / ref:8.2f}")


if __name__ == "__main__":
    main()
