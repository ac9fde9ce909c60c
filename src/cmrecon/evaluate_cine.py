"""Score cine chains on simulated cine cases against the simulator's truth, per acceleration.

Each chain runs **in-process** on each case (a :class:`cmrecon.sim.cine.CineParams`, simulated
here, or a ready case); its magnitude images (one per phase, ``emit_cine``) are compared with
the truth's noise-free, fully sampled coil-combined images ``|images|`` per phase.

Normalisation (say it, because it changes the numbers): **ground-truth max**. Both the result
and the truth are divided by the maximum of ``|truth|`` over all phases of the slice, so a chain
that gets the brightness wrong is penalised, and PSNR uses ``data_range = 1``. The CRUNet paper
(and its code) divides each image by its *own* maximum, which hides intensity errors and
flatters; that convention is reported once, as ``SSIM self-max`` over the whole image.

Metrics per phase, averaged over phases (:mod:`cmrecon.metrics`): PSNR (dB), SSIM (7×7 box,
K1 0.01, K2 0.03) and NMSE ``||x − y||² / ||y||²``, over the whole image, the **dynamic** region
(truth ``dynamic_mask``: the top decile of temporal SD inside the body) and the **static**
region (``static_mask``: the bottom half). SSIM over a region averages the SSIM map over it.

References
----------
Lyu J et al. (CRUNet-MR) reports SSIM 0.986 (R 4) and 0.971 (R 8) on CMRxRecon 2023 cine with
self-max normalisation; the data here are simulated and differ.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import ismrmrd
import numpy as np

from cmrecon.chain.definition import Chain, resolve
from cmrecon.chain.runner import run_chain
from cmrecon.errors import CmreconError
from cmrecon.evaluate import EvalTable, SliceScore
from cmrecon.metrics import psnr, ssim

__all__ = ["CINE_METRICS", "is_cine_chain", "cine_images", "score_cine_slice", "evaluate_cine"]

#: Metric columns: (key, header, higher_is_better).
CINE_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ssim_dynamic", "SSIM dynamic", True),
    ("nmse_dynamic", "NMSE dynamic", False),
    ("psnr_dynamic", "PSNR dynamic dB", True),
    ("ssim_all", "SSIM image", True),
    ("nmse_all", "NMSE image", False),
    ("psnr_all", "PSNR image dB", True),
    ("ssim_static", "SSIM static", True),
    ("nmse_static", "NMSE static", False),
    ("ssim_selfmax", "SSIM self-max", True),
)


class CineEvaluateError(CmreconError):
    """A cine chain emitted no image for some slice or phase, or shapes disagree with the truth."""


def is_cine_chain(chain: Chain) -> bool:
    """Whether ``chain`` ends in cine images (has an ``emit_cine`` step)."""
    return any(step.name == "emit_cine" for step in chain.steps)


def cine_images(chain: Chain, header_xml: str | bytes, items: Iterable[Any]) -> dict[int, np.ndarray]:
    """Run ``chain`` in-process; ``{slice: |images| (phases, y, x) float32}`` ordered by phase.

    Items are deep-copied first (steps may modify readouts in place).
    """
    header = header_xml.encode() if isinstance(header_xml, str) else header_xml
    by_slice: dict[int, dict[int, np.ndarray]] = {}
    for img in run_chain(chain, header, (copy.deepcopy(i) for i in items)):
        if isinstance(img, ismrmrd.Image):
            data = np.abs(np.asarray(img.data)).reshape(img.data.shape[-2:]).astype(np.float32)
            by_slice.setdefault(int(img.slice), {})[int(img.phase)] = data
    return {s: np.stack([ph[p] for p in sorted(ph)]) for s, ph in by_slice.items()}


def score_cine_slice(result: np.ndarray, truth: Mapping[str, np.ndarray] | Any, s: int) -> dict[str, float]:
    """Metrics of one slice's magnitudes ``(phases, y, x)`` against slice ``s`` of the cine truth.

    Parameters
    ----------
    result : (phases, y, x) float, magnitude images (SNR units, as emitted).
    truth : the simulator's cine truth (or its loaded ``.npz``): ``images (slices, phases, y, x)``,
        ``dynamic_mask``, ``static_mask`` ``(slices, y, x)``.
    s : slice index.

    Returns
    -------
    dict with the :data:`CINE_METRICS` keys (means over phases).

    Raises
    ------
    CineEvaluateError
        Shapes differ from the truth's.
    """
    ref = np.abs(np.asarray(truth["images"][s])).astype(np.float64)
    if result.shape != ref.shape:
        raise CineEvaluateError(f"slice {s}: images {result.shape} differ from the truth's "
                                f"(phases, y, x) = {ref.shape}")
    dyn = np.asarray(truth["dynamic_mask"][s], bool)
    static = np.asarray(truth["static_mask"][s], bool)
    top = float(ref.max())
    x, y = np.asarray(result, np.float64) / top, ref / top
    out: dict[str, list[float]] = {k: [] for k, _, _ in CINE_METRICS}
    for xp, yp in zip(x, y):
        for region, mask in (("all", None), ("dynamic", dyn), ("static", static)):
            sel = (slice(None),) if mask is None else mask
            err, energy = np.sum((xp[sel] - yp[sel]) ** 2), np.sum(yp[sel] ** 2)
            out[f"nmse_{region}"].append(float(err / energy))
            out[f"ssim_{region}"].append(ssim(xp, yp, data_range=1.0, mask=mask))
            if region != "static":
                out[f"psnr_{region}"].append(psnr(xp, yp, data_range=1.0, mask=mask))
        out["ssim_selfmax"].append(ssim(xp / xp.max(), yp / yp.max(), data_range=1.0))
    return {k: float(np.mean(v)) for k, v in out.items()}


def _case_name(params: Any) -> str:
    return f"R{params.acceleration}_{params.sampling}_seed{params.seed}"


def evaluate_cine(chains: Sequence[Chain | str], cases: Sequence[Any], out_dir: str | Path | None = None,
                  png: bool = True, progress: Callable[[str], None] | None = None,
                  command: str = "") -> dict[int, EvalTable]:
    """Run each cine chain over each case and score every slice; one table per acceleration R.

    Parameters
    ----------
    chains : chain names or loaded :class:`Chain` objects ending in ``emit_cine``.
    cases : :class:`cmrecon.sim.cine.CineParams` (simulated here) or simulated cine cases.
    out_dir : where to write ``results.md``, ``results_R<R>.csv`` and, with ``png``,
        ``png/<chain>_<case>_slc<s>.png`` panels (truth, result, error at end-systole and
        end-diastole, and an x–t profile through the heart).
    png : write the panels (only with ``out_dir``).
    progress : one line per case and chain (default: stderr).
    command : the command line, recorded in ``results.md``.

    Returns
    -------
    ``{R: EvalTable}`` with :data:`CINE_METRICS` columns; ``seconds`` is the chain's wall time
    per slice (in-process, this machine's torch threads).

    Raises
    ------
    CineEvaluateError
        A chain that is not a cine chain, or a slice it emitted no images for.
    """
    from cmrecon.sim.cine import CineParams, simulate_cine

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    loaded = [c if isinstance(c, Chain) else resolve(c) for c in chains]
    for c in loaded:
        if not is_cine_chain(c):
            raise CineEvaluateError(f"chain '{c.name}' has no emit_cine step; it is not a cine chain")
    tables: dict[int, EvalTable] = {}
    out = Path(out_dir) if out_dir is not None else None
    for i, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        if isinstance(case, CineParams):
            case = simulate_cine(case)
        name = _case_name(case.params)
        n_slices = case.truth["images"].shape[0]
        say(f"evaluate cine: case {i}/{len(cases)} ({name}, {n_slices} slice(s), "
            f"{case.truth['images'].shape[1]} phases) ready in {time.perf_counter() - t0:.1f} s")
        table = tables.setdefault(int(case.params.acceleration), EvalTable(command=command, metrics=CINE_METRICS))
        for chain in loaded:
            t1 = time.perf_counter()
            images = cine_images(chain, case.header_xml, case.items)
            dt = (time.perf_counter() - t1) / max(n_slices, 1)
            parts = []
            for s in range(n_slices):
                if s not in images:
                    raise CineEvaluateError(f"chain '{chain.name}' emitted no image for slice {s} of case {name}")
                m = score_cine_slice(images[s], case.truth, s)
                table.rows.append(SliceScore(chain.name, name, s, m, dt))
                parts.append(f"SSIM dyn {m['ssim_dynamic']:.3f} NMSE dyn {m['nmse_dynamic']:.4f}")
                if out is not None and png:
                    save_cine_panel(out / "png" / f"{chain.name}_{name}_slc{s}.png", case.truth, s,
                                    chain.name, images[s])
            say(f"evaluate cine:   {chain.name:12s} {dt:6.2f} s/slice  " + "; ".join(parts))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        md = ["# cmrecon evaluate (cine)\n"]
        if command:
            md.append(f"Command: `{command}`\n")
        md.append("Magnitude per phase vs the noise-free fully sampled truth, ground-truth-max "
                  "normalisation (SSIM self-max: each image by its own max, the CRUNet paper's "
                  "convention); mean ± sd over slices.\n")
        for R in sorted(tables):
            md.append(f"## R = {R}\n\n" + tables[R].to_markdown())
            (out / f"results_R{R}.csv").write_text(tables[R].to_csv())
        (out / "results.md").write_text("\n".join(md))
        say(f"evaluate cine: wrote {out / 'results.md'} and results_R*.csv"
            + (f" and panels in {out / 'png'}" if png else ""))
    return tables


def save_cine_panel(path: Path, truth: Any, s: int, name: str, result: np.ndarray) -> None:
    """PNG of slice ``s``: truth and ``result`` at end-diastole and end-systole, |error|, x–t profiles.

    The second phase shown is the one whose truth differs most from phase 0 (end-diastole)
    inside the dynamic mask, i.e. about end-systole; the x–t profile is the image row through the
    centre of the dynamic mask, phases down the page. Everything on the ground-truth-max scale.
    """
    from cmrecon.io.png import save_panel
    ref = np.abs(np.asarray(truth["images"][s])).astype(np.float64)
    dyn = np.asarray(truth["dynamic_mask"][s], bool)
    top = float(ref.max())
    x, y = result / top, ref / top
    es = int(np.argmax([np.sum((y[p][dyn] - y[0][dyn]) ** 2) for p in range(len(y))]))
    row = int(np.round(np.mean(np.nonzero(dyn)[0]))) if dyn.any() else y.shape[1] // 2
    win, err_win = (0.0, 1.0), (0.0, 0.2)
    reps = max(1, y.shape[1] // (2 * len(y)))            # x-t tiles at least half as tall as the images
    xt = lambda a: np.repeat(a[:, row, :], reps, axis=0)  # noqa: E731
    save_panel(path, [("truth ED", y[0], win), (f"{name} ED", x[0], win), ("|error| ED", np.abs(x[0] - y[0]), err_win),
                      (f"truth phase {es}", y[es], win), (f"{name} phase {es}", x[es], win),
                      (f"|error| phase {es}", np.abs(x[es] - y[es]), err_win),
                      (f"truth x-t row {row}", xt(y), win), (f"{name} x-t", xt(x), win)], ncols=3)
