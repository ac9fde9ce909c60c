"""``cmrecon evaluate``: score PSIR chains on simulated LGE cases against the simulator's truth.

For each case (an :class:`cmrecon.sim.lge.LgeParams`, simulated here, or a ready
:class:`cmrecon.sim.lge.SimCase`) every chain is run **in-process** with ``emit_images``'
``float_ratio=true`` override, so its PSIR images carry the float IR/PD ratio itself (no
``·1000 + 4096`` rounding or clipping to undo). Each slice's PSIR is compared with

* the **noise-free MOCO target** (primary; truth key ``psir_target``: the PSIRNet head applied
  to noise-free, motion-free IR and PD scaled by √K, K = ⌈repeats/2⌉) inside the heart region
  (``heart_mask``: LV/RV and ~10 mm around) and the body (``body_mask``);
* the **noise-free pixel ratio** S_IR/S_PD (secondary; ``psir_ratio``), which every
  surface-coil-corrected PSIR misses by an error floor of ~0.2 NRMSE;
* the **position-free** score: the PSIR translated onto the target (sub-pixel cross-correlation
  against the target inside a smoothed heart window, exact Fourier shift) before the heart
  NRMSE, and that residual shift in pixels, so an image in the wrong frame (another repeat's
  breathing position) is told apart from a poor image in the right one.

All truth images are in the key repeat's frame (``key_repeat``), the frame every chain outputs in.

Metrics (:mod:`cmrecon.metrics`): NRMSE ``||x − y|| / ||y||`` over the mask; SSIM (7×7 box)
averaged over the mask; PSNR over the mask. SSIM and PSNR use the reference's range inside the
body mask as ``data_range`` so that the heart and body numbers share one scale.

The Python entry point :func:`evaluate` is what other chains (e.g. the learned PSIRNet chain)
reuse: ``evaluate(["psir_classic", my_chain], [LgeParams(seed=s) for s in range(10)])``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import ismrmrd
import numpy as np

from cmrecon.chain.definition import Chain, resolve, with_step_params
from cmrecon.chain.runner import run_chain
from cmrecon.errors import ChainError, CmreconError
from cmrecon.metrics import nrmse, psnr, ssim
from cmrecon.sim.truth import SimTruth

__all__ = ["METRICS", "SliceScore", "EvalTable", "with_float_ratio", "psir_ratio_images",
           "score_slice", "evaluate", "register"]

#: Metric columns, in table order: (key, header, higher_is_better).
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("nrmse_heart", "NRMSE heart", False),
    ("ssim_heart", "SSIM heart", True),
    ("psnr_heart", "PSNR heart dB", True),
    ("nrmse_body", "NRMSE body", False),
    ("ssim_body", "SSIM body", True),
    ("psnr_body", "PSNR body dB", True),
    ("nrmse_ratio_heart", "NRMSE heart vs ratio", False),
    ("nrmse_ratio_body", "NRMSE body vs ratio", False),
    ("nrmse_heart_reg", "NRMSE heart registered", False),
    ("shift_px", "residual shift px", False),
)


class EvaluateError(CmreconError):
    """A chain produced no PSIR image for a slice, or the inputs are unusable."""


@dataclass(frozen=True)
class SliceScore:
    """Scores of one chain on one slice of one case."""

    chain: str
    case: str
    slice: int
    metrics: dict
    seconds: float


@dataclass
class EvalTable:
    """Per-slice scores and their per-chain summary (mean ± sd over slices) in the columns ``metrics``."""

    rows: list[SliceScore] = field(default_factory=list)
    command: str = ""
    metrics: tuple[tuple[str, str, bool], ...] = METRICS

    @property
    def chains(self) -> list[str]:
        """Chain names in first-seen order."""
        out: list[str] = []
        for r in self.rows:
            if r.chain not in out:
                out.append(r.chain)
        return out

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """``{chain: {metric: (mean, sd)}}`` over slices (sd with N−1; 0 for one slice)."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for chain in self.chains:
            rows = [r for r in self.rows if r.chain == chain]
            out[chain] = {}
            for key, _, _ in self.metrics:
                v = np.array([r.metrics[key] for r in rows], dtype=np.float64)
                out[chain][key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
            t = np.array([r.seconds for r in rows])
            out[chain]["seconds_per_slice"] = (float(np.median(t)), 0.0)
        return out

    def to_markdown(self) -> str:
        """The summary as a markdown table (one row per chain)."""
        summ = self.summary()
        n = {c: sum(r.chain == c for r in self.rows) for c in self.chains}
        head = ["chain", "slices"] + [h for _, h, _ in self.metrics] + ["s/slice (median)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for chain in self.chains:
            cells = [chain, str(n[chain])]
            for key, _, _ in self.metrics:
                m, sd = summ[chain][key]
                digits = 2 if "psnr" in key else 4 if "nmse" in key else 3
                cells.append(f"{m:.{digits}f} ± {sd:.{digits}f}")
            t = summ[chain]["seconds_per_slice"][0]
            cells.append(f"{t:.2f}" if np.isfinite(t) else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Per-slice rows as CSV (chain, case, slice, every metric, seconds)."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["chain", "case", "slice"] + [k for k, _, _ in self.metrics] + ["seconds"])
        for r in self.rows:
            w.writerow([r.chain, r.case, r.slice] + [f"{r.metrics[k]:.6g}" for k, _, _ in self.metrics]
                       + [f"{r.seconds:.3f}"])
        return buf.getvalue()

    def summary_csv(self) -> str:
        """The summary as CSV: chain, metric_mean, metric_sd..."""
        buf = io.StringIO()
        w = csv.writer(buf)
        keys = [k for k, _, _ in self.metrics]
        w.writerow(["chain", "slices"] + [f"{k}_{s}" for k in keys for s in ("mean", "sd")])
        summ = self.summary()
        for chain in self.chains:
            n = sum(r.chain == chain for r in self.rows)
            w.writerow([chain, n] + [f"{summ[chain][k][i]:.6g}" for k in keys for i in (0, 1)])
        return buf.getvalue()


def with_float_ratio(chain: Chain) -> Chain:
    """A copy of ``chain`` whose ``emit_images`` step emits float32 PSIR ratios.

    Raises
    ------
    EvaluateError
        The chain has no ``emit_images`` step.
    """
    try:
        return with_step_params(chain, "emit_images", float_ratio=True)
    except ChainError as exc:
        raise EvaluateError(f"{exc}; cannot read its PSIR as a float ratio") from exc


def _is_psir(img: ismrmrd.Image) -> bool:
    meta = ismrmrd.Meta.deserialize(img.attribute_string) if img.attribute_string else {}
    role = meta.get("DataRole", [])
    role = [role] if isinstance(role, str) else list(role)
    return "PSIR" in role


def psir_ratio_images(chain: Chain, header_xml: str | bytes, items: Iterable[Any]) -> dict[int, np.ndarray]:
    """Run ``chain`` (already float-ratio) in-process; ``{slice: PSIR (y, x) float32}``.

    Items are deep-copied first (steps may modify readouts in place).
    """
    header = header_xml.encode() if isinstance(header_xml, str) else header_xml
    out: dict[int, np.ndarray] = {}
    for img in run_chain(chain, header, (copy.deepcopy(i) for i in items)):
        if isinstance(img, ismrmrd.Image) and _is_psir(img):
            out[int(img.slice)] = np.asarray(img.data, np.float32).reshape(img.data.shape[-2:])
    return out


def register_to_target(result: np.ndarray, target: np.ndarray, heart: np.ndarray
                       ) -> tuple[tuple[float, float], np.ndarray]:
    """Translate a PSIR onto the target in the heart region (for the position-free score).

    Parameters
    ----------
    result, target : (y, x) float
        PSIR ratios.
    heart : (y, x) bool
        Heart region of the target.

    Returns
    -------
    shift : (dy, dx) px
        Translation applied to ``result`` (``result(r − d) ≈ target(r)``).
    registered : (y, x) float64
        ``result`` moved by an exact Fourier shift.
    """
    from scipy.ndimage import gaussian_filter

    from cmrecon.recon.moco import estimate_translation, fourier_shift
    window = gaussian_filter(heart.astype(np.float64), 2.0)
    # only the target is windowed: a window on both images would pull the peak towards zero
    d = estimate_translation(result, target * window, upsample=20)
    return d, np.real(fourier_shift(np.asarray(result, np.float64), d))


def score_slice(result: np.ndarray, truth: SimTruth | Mapping[str, np.ndarray], s: int) -> dict[str, float]:
    """Metrics of one ``(y, x)`` PSIR ratio against slice ``s`` of the simulator truth.

    Parameters
    ----------
    result : (y, x) float
        PSIR ratio, y = PE, x = RO.
    truth : SimTruth, or its stored ``.npz`` as loaded
        Simulator truth (``psir_target``, ``psir_ratio``, ``heart_mask``, ``body_mask``:
        ``(slices, y, x)``).
    s : int
        Slice index.

    Returns
    -------
    dict
        The :data:`METRICS` keys.
    """
    target = np.asarray(truth["psir_target"][s], np.float64)
    ratio = np.asarray(truth["psir_ratio"][s], np.float64)
    heart = np.asarray(truth["heart_mask"][s], bool)
    body = np.asarray(truth["body_mask"][s], bool)
    if result.shape != target.shape:
        raise EvaluateError(f"slice {s}: PSIR shape {result.shape} differs from the truth's "
                            f"(y, x) = {target.shape}")
    x = np.asarray(result, np.float64)
    shift, x_reg = register_to_target(x, target, heart)
    rng_t = float(target[body].max() - target[body].min())
    rng_r = float(ratio[body].max() - ratio[body].min())
    return {
        "nrmse_heart": nrmse(x, target, heart),
        "ssim_heart": ssim(x, target, data_range=rng_t, mask=heart),
        "psnr_heart": psnr(x, target, data_range=rng_t, mask=heart),
        "nrmse_body": nrmse(x, target, body),
        "ssim_body": ssim(x, target, data_range=rng_t, mask=body),
        "psnr_body": psnr(x, target, data_range=rng_t, mask=body),
        "nrmse_ratio_heart": nrmse(x, ratio, heart),
        "nrmse_ratio_body": nrmse(x, ratio, body),
        "nrmse_heart_reg": nrmse(x_reg, target, heart),
        "shift_px": float(np.hypot(*shift)),
        "_range": rng_r,
    }


def save_target_panel(path: Path, truth: SimTruth, s: int, results: dict[str, np.ndarray]) -> None:
    """PNG of slice ``s``: the noise-free MOCO target, each ``(y, x)`` result, the last one's error."""
    from cmrecon.io.png import save_panel
    target, body = truth["psir_target"][s], truth["body_mask"][s]
    lo, hi = np.percentile(target[body], [1, 99.5])
    win = (float(lo), float(hi))
    name, err = list(results)[-1], list(results.values())[-1] - target
    e = float(max(np.percentile(np.abs(err[body]), 99), 1e-3))
    save_panel(path, [("noise-free MOCO target", target, win)] + [(n, r, win) for n, r in results.items()]
               + [(f"{name} - target", err, (-e, e))])


def _load_chain(c: Chain | str) -> Chain:
    return c if isinstance(c, Chain) else resolve(c)


def evaluate(chains: Sequence[Chain | str], cases: Sequence[Any], out_dir: str | Path | None = None,
             png: bool = True, progress: Callable[[str], None] | None = None,
             command: str = "") -> EvalTable:
    """Run each chain over each case and score every slice's PSIR against the truth.

    Parameters
    ----------
    chains : chain names or loaded :class:`Chain` objects (each needs an ``emit_images`` step).
    cases : :class:`cmrecon.sim.lge.LgeParams` (simulated here) or :class:`SimCase` objects.
    out_dir : where to write ``results.md``, ``results.csv`` (per slice), ``summary.csv`` and,
        with ``png``, ``png/<chain>_<case>_slc<s>.png`` panels (target, result, error).
    png : write the panels (only with ``out_dir``).
    progress : called with one line per case and chain (default: print to stderr).
    command : the command line, recorded in ``results.md``.

    Returns
    -------
    EvalTable

    Raises
    ------
    EvaluateError
        A chain without ``emit_images``, or a slice for which a chain emitted no PSIR.
    """
    from cmrecon.sim.lge import LgeParams, simulate_lge

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    loaded = [with_float_ratio(_load_chain(c)) for c in chains]
    table = EvalTable(command=command)
    out = Path(out_dir) if out_dir is not None else None
    for i, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        if isinstance(case, LgeParams):
            case = simulate_lge(case)
        name = f"seed{case.params.seed}"
        n_slices = case.truth.psir_target.shape[0]
        say(f"evaluate: case {i}/{len(cases)} ({name}, {n_slices} slice(s), "
            f"{case.params.repeats} repeats) ready in {time.perf_counter() - t0:.1f} s")
        for chain in loaded:
            t1 = time.perf_counter()
            images = psir_ratio_images(chain, case.header_xml, case.items)
            dt = (time.perf_counter() - t1) / max(n_slices, 1)
            parts = []
            for s in range(n_slices):
                if s not in images:
                    raise EvaluateError(f"chain '{chain.name}' emitted no PSIR image for slice {s} "
                                        f"of case {name}")
                m = score_slice(images[s], case.truth, s)
                m.pop("_range", None)
                table.rows.append(SliceScore(chain.name, name, s, m, dt))
                parts.append(f"NRMSE heart {m['nrmse_heart']:.3f}")
                if out is not None and png:
                    save_target_panel(out / "png" / f"{chain.name}_{name}_slc{s}.png", case.truth, s,
                                      {chain.name: images[s]})
            say(f"evaluate:   {chain.name:16s} {dt:6.2f} s/slice  " + "; ".join(parts))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        md = ("# cmrecon evaluate\n\n"
              + (f"Command: `{command}`\n\n" if command else "")
              + "PSIR float ratio vs the noise-free MOCO target (heart, body) and the pixel ratio; "
                "mean ± sd over slices.\n\n" + table.to_markdown())
        (out / "results.md").write_text(md)
        (out / "results.csv").write_text(table.to_csv())
        (out / "summary.csv").write_text(table.summary_csv())
        say(f"evaluate: wrote {out / 'results.md'}, results.csv, summary.csv"
            + (f" and {len(table.rows)} panels in {out / 'png'}" if png else ""))
    return table


def _meta(img: ismrmrd.Image) -> dict:
    return ismrmrd.Meta.deserialize(img.attribute_string) if img.attribute_string else {}


def score_stored(images: Sequence[ismrmrd.Image], truth_path: str | Path, name: str = "stored") -> dict[str, EvalTable]:
    """Score images a chain wrote earlier (``cmrecon replay -o``) against a simulator truth file.

    LGE: every PSIR image (DataRole PSIR), its stored value mapped back to the IR/PD ratio with
    its own ``GADGETRON_ScaleOffset``/``GADGETRON_ScaleRatio``, scored as :func:`score_slice`
    does. Cine: every image with ``CineMethod`` meta, stacked by phase per slice and scored by
    :func:`cmrecon.evaluate_cine.score_cine_slice`. Timing is not known: ``seconds`` is NaN.

    Parameters
    ----------
    images : the stored images (all series of one group).
    truth_path : ``<case>_truth.npz`` of ``cmrecon simulate lge`` or ``simulate cine``.
    name : the case's name in the table.

    Returns
    -------
    ``{"lge": EvalTable}`` or ``{"cine": EvalTable}`` (rows named by chain: the image's
    ``CineMethod``, or ``stored`` for PSIRs).

    Raises
    ------
    EvaluateError
        No PSIR or cine image among ``images``, a truth file of the other kind, or a slice the
        truth does not have.
    """
    from cmrecon.evaluate_cine import CINE_METRICS, score_cine_slice
    with np.load(truth_path) as z:
        truth = {k: z[k] for k in z.files}
    cine = [i for i in images if "CineMethod" in _meta(i)]
    psirs = [i for i in images if _is_psir(i)]
    if cine:
        if "dynamic_mask" not in truth:
            raise EvaluateError(f"{truth_path} is not a cine truth (no dynamic_mask); these are cine images")
        table = EvalTable(metrics=CINE_METRICS)
        groups: dict[tuple[str, int], dict[int, np.ndarray]] = {}
        for img in cine:
            data = np.abs(np.asarray(img.data)).reshape(img.data.shape[-2:]).astype(np.float32)
            groups.setdefault((str(_meta(img)["CineMethod"]), int(img.slice)), {})[int(img.phase)] = data
        for (method, s), phases in sorted(groups.items()):
            if s >= truth["images"].shape[0]:
                raise EvaluateError(f"{method}: slice {s} is not in {truth_path}")
            result = np.stack([phases[p] for p in sorted(phases)])
            table.rows.append(SliceScore(method, name, s, score_cine_slice(result, truth, s), float("nan")))
        return {"cine": table}
    if psirs:
        if "psir_target" not in truth:
            raise EvaluateError(f"{truth_path} is not an LGE truth (no psir_target); these are PSIR images")
        table = EvalTable()
        for img in psirs:
            meta, s = _meta(img), int(img.slice)
            if s >= truth["psir_target"].shape[0]:
                raise EvaluateError(f"PSIR slice {s} is not in {truth_path}")
            offset = float(meta.get("GADGETRON_ScaleOffset", 0.0))
            scale = float(meta.get("GADGETRON_ScaleRatio", 1.0))
            ratio = (np.asarray(img.data, np.float64).reshape(img.data.shape[-2:]) - offset) / scale
            m = score_slice(ratio, truth, s)
            m.pop("_range", None)
            table.rows.append(SliceScore("stored", name, s, m, float("nan")))
        return {"lge": table}
    raise EvaluateError("no PSIR (DataRole PSIR) or cine (CineMethod) image to score")


# ----------------------------------------------------------------------------- CLI


def _seeds(text: str) -> list[int]:
    """``"0-9"``, ``"1,4,7"`` or ``"3"`` → list of ints."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise CmreconError(f"--seeds {text!r} names no seed")
    return out


def _extra_params(pairs: list[str] | None) -> dict[str, str]:
    """``--set KEY=VALUE`` pairs as a dict (dashes in keys become underscores)."""
    raw: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CmreconError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        raw[key.strip().replace("-", "_")] = value
    return raw


def _accelerations(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CmreconError(f"--acceleration must be integers separated by commas, got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    from cmrecon.evaluate_cine import evaluate_cine, is_cine_chain
    from cmrecon.params import parse_params

    if args.images is not None:
        if args.truth is None or args.chain:
            raise CmreconError("--images scores stored images: give --truth TRUTH.npz and no -c")
        from cmrecon.io.mrdfile import read_images
        stored = [img for series in read_images(args.images, args.group).values() for img in series]
        for kind, table in score_stored(stored, args.truth, Path(args.images).stem).items():
            sys.stdout.write(f"## {kind}: {args.images} vs {args.truth}\n\n" + table.to_markdown())
        return 0
    if not args.chain:
        raise CmreconError("give chains to run (-c NAME ...) or stored images to score (--images OUT.h5 --truth T.npz)")

    chains = [resolve(c) for c in args.chain]
    cine = [is_cine_chain(c) for c in chains]
    if any(cine) and not all(cine):
        raise CmreconError("evaluate takes LGE chains or cine chains, not both: "
                           + ", ".join(f"{c.name} ({'cine' if k else 'LGE'})" for c, k in zip(chains, cine)))
    command = "cmrecon evaluate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    extra = _extra_params(args.set)
    if all(cine):
        from cmrecon.sim.cine import CineParams
        raw = dict(slices=args.slices, coils=args.coils or 10, matrix=args.matrix or "128x128",
                   phases=args.phases, sampling=args.sampling, **({"snr": args.snr} if args.snr else {}))
        cases = [parse_params(CineParams, dict(raw, acceleration=R, seed=s, **extra), "evaluate --set")
                 for R in _accelerations(args.acceleration or "4,8,10") for s in _seeds(args.seeds)]
        tables = evaluate_cine(chains, cases, out_dir=args.output, png=not args.no_png, command=command)
        for R in sorted(tables):
            sys.stdout.write(f"## R = {R}\n\n" + tables[R].to_markdown() + "\n")
        return 0
    from cmrecon.sim.lge import LgeParams
    accel = _accelerations(args.acceleration or "2")
    if len(accel) != 1:
        raise CmreconError(f"--acceleration takes one value for LGE chains, got {args.acceleration!r}")
    raw = dict(slices=args.slices, repeats=args.repeats, coils=args.coils or 16, matrix=args.matrix or "128x96",
               acceleration=accel[0], resp_amplitude_mm=args.resp_amplitude_mm,
               snr=args.snr or 25.0, partial_fourier=float(Fraction(args.partial_fourier)))
    cases = [parse_params(LgeParams, dict(raw, seed=s, **extra), "evaluate --set") for s in _seeds(args.seeds)]
    table = evaluate(chains, cases, out_dir=args.output, png=not args.no_png, command=command)
    sys.stdout.write(table.to_markdown())
    return 0


def register(subparsers: Any) -> None:
    """Add ``cmrecon evaluate`` to the CLI."""
    p = subparsers.add_parser(
        "evaluate", help="score LGE (PSIR) or cine chains on simulated cases against the truth",
        description="Score chains on simulated cases against the simulator's truth. LGE chains "
                    "(emit_images) are scored on their PSIR; cine chains (emit_cine) per phase, "
                    "one table per acceleration.")
    p.add_argument("-c", "--chain", nargs="+", default=[],
                   help="chain names, all LGE (e.g. psir_classic psir_moco) or all cine (e.g. cine_sense cine_lps)")
    p.add_argument("--images", default=None, metavar="OUT.h5",
                   help="instead of running chains: score the images a chain already wrote "
                        "(cmrecon replay -o OUT.h5) against --truth")
    p.add_argument("--truth", default=None, metavar="TRUTH.npz", help="the simulator's truth of --images")
    p.add_argument("--group", default=None, help="image group of --images (default: the last one)")
    p.add_argument("--seeds", default="0-9", help="simulation seeds: 0-9, 1,4,7 (default 0-9)")
    p.add_argument("--slices", type=int, default=1, help="slices per case (default 1)")
    p.add_argument("--repeats", type=int, default=8, help="LGE: IR/PD repeats per slice (default 8)")
    p.add_argument("--coils", type=int, default=None, help="receive coils (default: LGE 16, cine 10)")
    p.add_argument("--matrix", default=None, help="RO x PE reconstructed matrix (default: LGE 128x96, cine 128x128)")
    p.add_argument("--acceleration", default=None,
                   help="R; cine takes a list, one table each (default: LGE 2, cine 4,8,10)")
    p.add_argument("--partial-fourier", default="1", help="LGE: 1, 7/8 or 6/8")
    p.add_argument("--resp-amplitude-mm", type=float, default=4.0, help="LGE: breathing amplitude (default 4 mm)")
    p.add_argument("--snr", type=float, default=None,
                   help="LGE: PD blood SNR of one repeat (default 25); cine: blood SNR of one phase "
                        "(default: the simulator's)")
    p.add_argument("--phases", type=int, default=20, help="cine: cardiac phases (default 20)")
    p.add_argument("--sampling", choices=("equispaced", "kt_interleaved"), default="equispaced",
                   help="cine: undersampling pattern (default equispaced, the CMRxRecon 2023 masks)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other LgeParams / CineParams field (repeatable), e.g. --set field_t=3.0")
    p.add_argument("-o", "--output", help="directory for results.md/.csv and PNG panels")
    p.add_argument("--no-png", action="store_true", help="do not write PNG panels")
    p.set_defaults(func=_run)
