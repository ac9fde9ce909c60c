"""Evaluate learned single-shot PSIR (psirnet_lge) against psir_classic and psir_moco.

Held-out simulated LGE cases (:func:`cmrecon.sim.lge.simulate_lge`, seeds 900000+ — the
training samples come from :func:`cmrecon.sim.training.make_sample` with their own seed
sequence, so no case here was seen in training) go through each chain in-process with
``cmrecon.evaluate``'s building blocks (``with_float_ratio``, ``psir_ratio_images``,
``score_slice``, ``EvalTable``): the metrics against the noise-free MOCO target are exactly
``cmrecon evaluate``'s. In addition the single-repeat chains are scored against the
**noisy MOCO reconstruction** (``psir_moco``'s own output, the published PSIRNet yardstick):
SSIM (7×7) on images min–max scaled with the reference's range (the published convention),
PSNR (peak = reference range) and NRMSE over the body.

Run (writes ``<out>/results.md``, per-slice CSVs and PNG panels)::

    python bench/eval_psirnet.py --cases 25 --slices 2 -o out/eval_psirnet
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cmrecon.chain.definition import resolve, with_step_params
from cmrecon.evaluate import (
    METRICS,
    EvalTable,
    SliceScore,
    psir_ratio_images,
    save_target_panel,
    score_slice,
    with_float_ratio,
)
from cmrecon.metrics import nrmse, psnr, ssim
from cmrecon.sim.lge import LgeParams, simulate_lge

CHAINS = ("psir_classic", "psir_moco", "psirnet_lge")
SEED0 = 900_000


def case_params(i: int, slices: int, repeats: int) -> LgeParams:
    """Held-out case ``i``: protocol drawn from its own seed (coils, SNR, R, field, PF...)."""
    rng = np.random.default_rng([SEED0, i])
    return LgeParams(
        slices=slices, repeats=repeats, coils=int(rng.choice([12, 16, 20])),
        matrix=(128, 96), acceleration=int(rng.choice([1, 2, 2, 3])), acs_lines=24,
        partial_fourier=float(rng.choice([1.0, 0.875])),
        field_t=float(rng.choice([1.5, 3.0])), heart_rate_bpm=float(rng.uniform(50, 85)),
        ti_ms=float(rng.uniform(270, 330)), resp_amplitude_mm=float(rng.uniform(2.0, 6.0)),
        snr=float(rng.uniform(12.0, 35.0)), seed=SEED0 + i)


def vs_reference(x: np.ndarray, ref: np.ndarray, body: np.ndarray) -> dict:
    """Published-style metrics of ``x`` against a PSIR reference (both (y, x))."""
    lo, hi = float(ref.min()), float(ref.max())
    xs, rs = (x - lo) / (hi - lo), (ref - lo) / (hi - lo)
    return {"ssim": ssim(xs, rs, data_range=1.0), "psnr": psnr(x, ref, data_range=hi - lo),
            "nrmse": nrmse(x, ref), "nrmse_body": nrmse(x, ref, mask=body)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=25)
    ap.add_argument("--slices", type=int, default=2, help="slices per case")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--weights", default="psirnet_cpu_small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--panels", type=int, default=4, help="cases with a PNG panel")
    ap.add_argument("--resp-amplitude-mm", type=float, default=None,
                    help="breathing amplitude for every case (default: drawn per case, 2-6 mm); "
                         "0 separates reconstruction quality from the single repeat's position")
    ap.add_argument("-o", "--output", default="out/eval_psirnet")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    (out / "png").mkdir(parents=True, exist_ok=True)
    chains = {}
    for name in CHAINS:
        c = resolve(name)
        if name == "psirnet_lge":
            c = with_step_params(c, "psirnet_recon", weights=args.weights)
        chains[name] = with_float_ratio(c)
    command = "python bench/eval_psirnet.py " + " ".join(sys.argv[1:])
    table = EvalTable(command=command)
    vs_moco: list[dict] = []
    for i in range(args.cases):
        p = case_params(i, args.slices, args.repeats)
        if args.resp_amplitude_mm is not None:
            p = dataclasses.replace(p, resp_amplitude_mm=args.resp_amplitude_mm)
        t0 = time.perf_counter()
        case = simulate_lge(p)
        name = f"seed{p.seed}"
        images = {}
        times = {}
        for cname, chain in chains.items():
            t1 = time.perf_counter()
            images[cname] = psir_ratio_images(chain, case.header_xml, case.items)
            times[cname] = (time.perf_counter() - t1) / p.slices
        line = []
        for s in range(p.slices):
            body = case.truth.body_mask[s]
            for cname in CHAINS:
                m = score_slice(images[cname][s], case.truth, s)
                m.pop("_range", None)
                table.rows.append(SliceScore(cname, name, s, m, times[cname]))
                if cname != "psir_moco":
                    vs_moco.append({"chain": cname, "case": name, "slice": s,
                                    **vs_reference(images[cname][s], images["psir_moco"][s], body)})
            line.append(" ".join(f"{c.split('_')[-1]} {table.rows[-3 + k].metrics['nrmse_heart']:.3f}"
                                 for k, c in enumerate(CHAINS)))
            if i < args.panels:
                save_target_panel(out / "png" / f"{name}_slc{s}.png", case.truth, s,
                                  {c: images[c][s] for c in CHAINS})
        print(f"case {i + 1}/{args.cases} {name} (coils {p.coils}, R {p.acceleration}, PF "
              f"{p.partial_fourier:g}, {p.field_t:g} T, SNR {p.snr:.0f}) "
              f"{time.perf_counter() - t0:.1f} s; heart NRMSE " + " | ".join(line),
              file=sys.stderr, flush=True)
    (out / "results_noise_free.csv").write_text(table.to_csv())
    (out / "summary_noise_free.csv").write_text(table.summary_csv())
    (out / "vs_moco.jsonl").write_text("".join(json.dumps(r) + "\n" for r in vs_moco))
    md = [f"Command: `{command}`", "", "### Against the noise-free MOCO target "
          "(`cmrecon.evaluate` metrics; mean ± sd over slices)", "", table.to_markdown(), "",
          "### Against the noisy MOCO reconstruction (`psir_moco` output; published yardstick)",
          "", "| chain | slices | SSIM (min–max) | PSNR dB | NRMSE | NRMSE body |",
          "|---|---|---|---|---|---|"]
    for cname in ("psir_classic", "psirnet_lge"):
        rows = [r for r in vs_moco if r["chain"] == cname]
        cell = lambda k, f, rows=rows: f"{np.mean([r[k] for r in rows]):{f}} ± {np.std([r[k] for r in rows], ddof=1):{f}}"  # noqa: E731
        md.append(f"| {cname} | {len(rows)} | {cell('ssim', '.4f')} | {cell('psnr', '.2f')} | "
                  f"{cell('nrmse', '.4f')} | {cell('nrmse_body', '.4f')} |")
    summ = table.summary()
    heart = {c: summ[c]["nrmse_heart"][0] for c in CHAINS}
    md += ["", f"Heart NRMSE ratio psirnet_lge / psir_moco = "
               f"{heart['psirnet_lge'] / heart['psir_moco']:.3f}; psirnet_lge / psir_classic = "
               f"{heart['psirnet_lge'] / heart['psir_classic']:.3f}",
           f"Wins per slice (heart NRMSE, psirnet_lge < psir_classic): "
           f"{_wins(table, 'psirnet_lge', 'psir_classic')}; (psirnet_lge < psir_moco): "
           f"{_wins(table, 'psirnet_lge', 'psir_moco')}"]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def _wins(table: EvalTable, a: str, b: str) -> str:
    ra = {(r.case, r.slice): r.metrics["nrmse_heart"] for r in table.rows if r.chain == a}
    rb = {(r.case, r.slice): r.metrics["nrmse_heart"] for r in table.rows if r.chain == b}
    wins = sum(ra[k] < rb[k] for k in ra)
    return f"{wins}/{len(ra)}"


if __name__ == "__main__":
    assert METRICS  # the columns come from cmrecon.evaluate
    raise SystemExit(main())
