"""Training of :class:`~cmrecon.models.crunet.CineCRUNet` on simulated cine slices.

Data
----
A training slice is what the ``cine_crunet`` chain step will be handed: the simulated raw
stream (:func:`cmrecon.sim.cine.simulate_cine`) run through the chain's own front-end steps
(:func:`front_end`: ``noise_prewhiten``, ``remove_oversampling``, ``buffer_cine``,
``cine_coil_maps``, as the shipped chains run them) to a
:class:`~cmrecon.products.cine.CineMapped`, so training inputs and chain inputs cannot differ.
The target is the truth's noise-free, fully sampled coil-combined ``images`` (phases, y, x) on
the recon grid, turned into the phase convention of the chain's estimated coil maps
(:func:`aligned_target`: maps are known only up to a smooth phase, and hard DC imposes the
estimated maps' one; a target in the true maps' phase asks for the impossible); the output is
centre-cropped to that grid (:func:`cmrecon.axes.centre_crop`). Slices are generated once
into a cache folder of ``.npz`` files (:func:`build_cache`); epochs read them back.
:func:`phantom_slice` is a small analytic stand-in (a beating ellipse on a static background)
for tests.

Readout crops: the undersampling is along ``ky`` only, so the problem separates over image
columns. A training step may take a random block of ``crop_x`` columns (:func:`crop_columns`:
k-space → ``(ky, x)`` hybrid space, crop, back; coil maps and target cropped alike): the
aliasing along ``y`` is exactly that of the full slice, at a fraction of the compute.

Loss
----
:func:`cine_loss`, CRUNet's weights on images divided by the target's maximum magnitude:
``0.25·MSE(F x̂, F x) + 0.5·(MSE + L1)(x̂, x) + 0.5·(SSIM loss(Re) + SSIM loss(Im))``. The FFT is
orthonormal, so the k-space MSE equals the image MSE (Parseval) and is computed as such:
``0.75·MSE + 0.5·L1 + 0.5·ΣSSIM``. SSIM is the project's one formula
(:func:`cmrecon.metrics.ssim_valid`, 7×7 box) with data range 1.

Optimisation: AdamW, linear warm-up then cosine decay in steps (:func:`learning_rate`), gradient
norm clip. Every ``val_every`` steps the model is scored on held-out simulated slices (their own
seeds) with :func:`cmrecon.evaluate_cine.score_cine_slice` (dynamic-region SSIM/NMSE, ground-truth
max normalisation); ``best.pt`` (+ sha256 sidecar, :func:`~cmrecon.models.weights.save_checkpoint`)
keeps the lowest dynamic-region NMSE. ``last.pt`` holds the resumable state, written atomically;
each step's slice and crop are a function of ``(seed, step)`` only, so a resumed run is
bit-identical to an uninterrupted one.

References
----------
Lyu J et al. CRUNet-MR (loss weights, AdamW with warm-up and cosine; github.com/dong845/CRUNet-MR).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.errors import CmreconError
from cmrecon.models.crunet import PAD_MULTIPLE, CineCRUNet, count_parameters
from cmrecon.recon.fft import fft1c, fft2c, ifft1c
from cmrecon.sim.cine import temporal_masks
from cmrecon.sim.sampling import cine_masks

__all__ = ["STATE_FORMAT", "CineSlice", "aligned_target", "CineTrainError", "CineTrainSettings",
           "build_cache", "cine_loss", "crop_columns", "front_end", "learning_rate",
           "phantom_slice", "simulated_slices", "train_cine", "validate"]

#: Format tag of the resumable training state (``last.pt``).
STATE_FORMAT = "cmrecon.cine_crunet.trainstate/1"


class CineTrainError(CmreconError):
    """Training cannot go on: an existing run without resume, changed settings, a bad loss."""


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CineSlice:
    """One training/validation slice: the network's input and its target.

    Attributes
    ----------
    kspace : (T, C, ky, kx) complex64, prewhitened, zero where not sampled (SNR units).
    maps : (C, ky, kx) complex64, unit-norm coil maps (the chain's estimate).
    mask : (T, ky) bool, sampled rows per phase.
    target : (T, y, x) complex64, noise-free fully sampled images on the recon grid.
    dynamic : (y, x) bool, the truth's dynamic region; static : (y, x) bool, its static region.
    R : acceleration; sampling : ``equispaced`` or ``kt_interleaved``; snr : the case's SNR.
    """

    kspace: np.ndarray
    maps: np.ndarray
    mask: np.ndarray
    target: np.ndarray
    dynamic: np.ndarray
    static: np.ndarray
    R: int
    sampling: str
    snr: float

    def save(self, path: Path) -> None:
        """Write as an uncompressed ``.npz`` (atomically)."""
        from cmrecon.io.atomic import atomic_path
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: Path) -> "CineSlice":
        """Read a slice written by :meth:`save`."""
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        return cls(kspace=d["kspace"], maps=d["maps"], mask=d["mask"].astype(bool), target=d["target"],
                   dynamic=d["dynamic"].astype(bool), static=d["static"].astype(bool),
                   R=int(d["R"]), sampling=str(d["sampling"]), snr=float(d["snr"]))


def phantom_slice(rng: np.random.Generator, matrix: int = 48, phases: int = 8, coils: int = 6, R: int = 4,
                  sampling: str = "equispaced", snr: float = 20.0, acs_rows: int = 8) -> CineSlice:
    """A small analytic cine slice: a beating bright disc in a dark ring on a static textured body.

    For tests and experiments without the simulator: the maps are the true ones (Gaussian
    bumps around the body, ``Σ|S|² = 1``), the noise is white with σ = 1 per coil sample (SNR
    units), ``snr`` is the blood signal.

    Returns
    -------
    CineSlice on a ``matrix × matrix`` grid (k-space grid = recon grid).
    """
    n = int(matrix)
    yy, xx = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    body = (xx / 0.85) ** 2 + (yy / 0.7) ** 2 <= 1.0
    texture = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n)))
                                   * np.exp(-(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None] ** 2) * 400)))
    texture = texture / (np.abs(texture).max() + 1e-9)
    static = body * (0.3 + 0.1 * texture)
    cy, cx = rng.uniform(-0.2, 0.2, 2)
    r0, squeeze = rng.uniform(0.18, 0.26), rng.uniform(0.2, 0.35)
    phase_map = np.exp(1j * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy + rng.uniform(0, 2 * np.pi)))
    frames = []
    for t in range(phases):
        r = r0 * (1 - squeeze * 0.5 * (1 - np.cos(2 * np.pi * t / phases)))
        d = np.hypot(xx - cx, yy - cy)
        blood, myo = d <= r, (d > r) & (d <= r + 0.08)
        frames.append(np.where(blood, 1.0, np.where(myo, 0.15, static)))
    target = (snr * np.stack(frames) * phase_map).astype(np.complex64)
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(coils) / coils
    sens = np.stack([np.exp(-((xx - 1.1 * np.cos(a)) ** 2 + (yy - 1.1 * np.sin(a)) ** 2) / 1.2)
                     * np.exp(1j * (a + 0.5 * xx)) for a in angles])
    maps = (sens / np.sqrt((np.abs(sens) ** 2).sum(0, keepdims=True))).astype(np.complex64)
    mask = cine_masks(n, phases, R, acs_rows, sampling)
    k = fft2c(maps[None] * target[:, None])
    k = k + (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    k = np.where(mask[:, None, :, None], k, 0).astype(np.complex64)
    dyn, stat = temporal_masks(target, body)
    return CineSlice(k, maps, mask, target, dyn, stat, int(R), sampling, float(snr))


def front_end(header_xml: str | bytes, items: Sequence[Any]) -> list:
    """The cine chains' own front end over a raw stream: one :class:`~cmrecon.products.cine.CineMapped` per slice.

    Runs :func:`cmrecon_gadgets.cine_steps.cine_front_chain` (``noise_prewhiten →
    remove_oversampling → buffer_cine → cine_coil_maps``, the shipped chains' parameters) in
    process with :func:`cmrecon.chain.runner.run_chain`; ``items`` are deep-copied first.
    """
    import copy

    from cmrecon.chain.registry import load_steps
    from cmrecon.chain.runner import run_chain
    from cmrecon.products.cine import CineMapped
    load_steps()
    from cmrecon_gadgets.cine_steps import cine_front_chain

    header = header_xml.encode() if isinstance(header_xml, str) else header_xml
    stream = run_chain(cine_front_chain(), header, (copy.deepcopy(i) for i in items))
    return [x for x in stream if isinstance(x, CineMapped)]


def aligned_target(images: np.ndarray, true_maps: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """The truth's images in the phase convention of the chain's coil maps.

    Coil maps are known up to a smooth phase θ(y, x): if ``maps = true_maps · e^{iθ}``, the
    same data are explained by ``images · e^{−iθ}``, and that is what a reconstruction with the
    chain's maps (hard DC included) can give. The magnitude stays the truth's; the phase turns by
    ``angle(Σ_c conj(maps_c) · true_maps_c)`` (= −θ where the maps agree).

    Parameters
    ----------
    images : (T, y, x) complex, the truth's images (combined with the true maps).
    true_maps, maps : (C, y, x) complex, true and estimated unit-norm coil maps on that grid.

    Returns
    -------
    (T, y, x) complex64
    """
    rel = np.sum(np.conj(maps) * true_maps, axis=0)
    return (np.asarray(images) * np.exp(1j * np.angle(rel))[None]).astype(np.complex64)


def simulated_slices(params: Any) -> list[CineSlice]:
    """Every slice of one simulated cine case, through the chain's front end.

    Parameters
    ----------
    params : cmrecon.sim.cine.CineParams

    Returns
    -------
    list of CineSlice, one per slice of the case.
    """
    from cmrecon.sim.cine import simulate_cine
    case = simulate_cine(params)
    truth = case.truth
    out = []
    for mk in front_end(case.header_xml, case.items):
        s = int(mk.info.slice)
        ny, nx = shape_yx(mk.info.recon_matrix)
        target = aligned_target(truth["images"][s], truth["coil_maps"][s],
                                centre_crop(mk.maps.maps, (ny, nx)))
        if target.shape[-2:] != (ny, nx):
            raise CineTrainError(f"truth images {target.shape} differ from the recon matrix {(ny, nx)}")
        out.append(CineSlice(
            kspace=mk.kspace.kspace.astype(np.complex64), maps=mk.maps.maps.astype(np.complex64),
            mask=mk.kspace.mask.astype(bool), target=target,
            dynamic=np.asarray(truth["dynamic_mask"][s], bool), static=np.asarray(truth["static_mask"][s], bool),
            R=int(params.acceleration), sampling=str(params.sampling), snr=float(getattr(params, "snr", 0.0))))
    return out


def crop_columns(sl: CineSlice, x0: int, width: int) -> CineSlice:
    """The ``width`` image columns from recon-grid column ``x0`` of a slice, exactly.

    k-space goes to ``(ky, x)`` hybrid space (centred inverse FFT along ``kx``), the columns
    are cut and transformed back; coil maps, target and masks are cut alike. The sampling is
    along ``ky`` only, so the cropped problem is the full one restricted to those columns.

    Raises
    ------
    ValueError
        A block outside the recon grid.
    """
    kx, tx = sl.kspace.shape[-1], sl.target.shape[-1]
    off = kx // 2 - tx // 2                       # recon column j = k-space grid column j + off
    if not (0 <= x0 and x0 + width <= tx and width > 0):
        raise ValueError(f"columns [{x0}, {x0 + width}) outside the recon grid of {tx}")
    cols = slice(off + x0, off + x0 + width)
    hybrid = ifft1c(sl.kspace, axis=-1)[..., cols]
    k = fft1c(np.ascontiguousarray(hybrid), axis=-1).astype(np.complex64)
    k = np.where(sl.mask[:, None, :, None], k, 0).astype(np.complex64)
    tcols = slice(x0, x0 + width)
    return dataclasses.replace(sl, kspace=k, maps=np.ascontiguousarray(sl.maps[..., cols]),
                               target=np.ascontiguousarray(sl.target[..., tcols]),
                               dynamic=sl.dynamic[..., tcols], static=sl.static[..., tcols])


def tensors(sl: CineSlice, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(kspace, maps, mask, target, dynamic)`` of one slice as a batch of one on ``device``."""
    return tuple(torch.from_numpy(np.ascontiguousarray(a))[None].to(device)
                 for a in (sl.kspace, sl.maps, sl.mask, sl.target, sl.dynamic))


# ----------------------------------------------------------------------------- loss


def cine_loss(pred: torch.Tensor, target: torch.Tensor, dynamic: Optional[torch.Tensor] = None,
              dynamic_weight: float = 0.0, window_px: int = 7) -> torch.Tensor:
    """CRUNet's loss on images scaled by the target's maximum magnitude (module docstring), plus an
    optional dynamic-region NMSE term.

    Parameters
    ----------
    pred, target : (B, T, y, x) complex64
        Prediction (cropped to the target's grid) and the noise-free target.
    dynamic : (B, y, x) bool, optional
        The truth's dynamic region.
    dynamic_weight : float
        Weight of ``Σ_dyn |pred − target|² / Σ_dyn |target|²`` (over every phase).

    Returns
    -------
    Scalar ``0.75·MSE + 0.5·L1 + 0.5·(SSIM loss(Re) + SSIM loss(Im)) [+ w·NMSE_dynamic]``,
    averaged over the batch.
    """
    from cmrecon.metrics import ssim_valid
    scale = target.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
    p = torch.view_as_real(pred / scale)               # (B, T, y, x, 2)
    t = torch.view_as_real(target / scale)
    d = p - t
    mse, l1 = d.pow(2).mean(), d.abs().mean()
    pp = p.permute(0, 1, 4, 2, 3).flatten(0, 2)[:, None]   # (B·T·2, 1, y, x): Re and Im images
    tt = t.permute(0, 1, 4, 2, 3).flatten(0, 2)[:, None]
    one = torch.ones((), dtype=pp.dtype, device=pp.device)
    ssim_sum = 2.0 * (1.0 - ssim_valid(pp, tt, one, window_px).mean())   # Re + Im
    total = 0.75 * mse + 0.5 * l1 + 0.5 * ssim_sum
    if dynamic_weight and dynamic is not None:
        w = dynamic[:, None].to(pred.real.dtype)
        err = (w * (pred - target).abs().pow(2)).sum(dim=(1, 2, 3))
        energy = (w * target.abs().pow(2)).sum(dim=(1, 2, 3)).clamp(min=1e-12)
        total = total + dynamic_weight * (err / energy).mean()
    return total


# ----------------------------------------------------------------------------- settings


def _doc(doc: str, default: Any) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class CineTrainSettings:
    """One training run. Changing anything but ``minutes``, ``log_every``, ``val_every`` and
    ``threads`` makes a different run (refused on resume).
    """

    chans: int = _doc("feature channels per cascade", 16)
    num_cascades: int = _doc("unrolled cascades", 4)
    crop_x: int = _doc("image columns per training step (0 = the whole slice)", 48)
    steps: int = _doc("optimiser steps in total (the cosine schedule's length)", 3000)
    lr: float = _doc("peak learning rate", 1e-3)
    min_lr: float = _doc("learning rate at the end of the cosine", 1e-5)
    warmup_steps: int = _doc("linear warm-up steps", 100)
    weight_decay: float = _doc("AdamW weight decay", 1e-3)
    grad_clip: float = _doc("gradient norm clip", 1.0)
    seed: int = _doc("seed of the step draws and of the initial weights", 0)
    minutes: float = _doc("wall-clock budget of this call (0 = none); the state is saved", 0.0)
    log_every: int = _doc("steps per progress line", 20)
    val_every: int = _doc("steps per validation", 200)
    threads: int = _doc("torch CPU threads (0 = leave as is)", 1)
    train_cases: int = _doc("simulated training cases (one slice each)", 160)
    val_cases: int = _doc("simulated validation cases (their own seeds)", 6)
    train_phases: tuple[int, ...] = _doc("cardiac phases of a training case, drawn from", (12, 16))
    val_phases: int = _doc("cardiac phases of a validation case", 20)
    matrix: int = _doc("square recon matrix of every case", 128)
    coils: tuple[int, int] = _doc("[lo, hi] receive coils", (8, 12))
    accelerations: tuple[int, ...] = _doc("R drawn from", (4, 8, 10))
    samplings: tuple[str, ...] = _doc("sampling patterns drawn from", ("equispaced", "kt_interleaved"))
    snr: tuple[float, float] = _doc("[lo, hi] LV-blood SNR of one fully sampled phase", (10.0, 40.0))
    data_seed: int = _doc("seed of the case draws (validation and training use disjoint streams)", 16)
    dynamic_weight: float = _doc("weight of the dynamic-region NMSE term of the loss (0 = CRUNet's loss)", 0.0)
    init_weights: str = _doc("CineCRUNet checkpoint to start from (fine-tuning; '' = random)", "")

    def run_fields(self) -> dict[str, Any]:
        """The fields that define the run (must match on resume)."""
        skip = ("minutes", "log_every", "val_every", "threads")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def learning_rate(s: CineTrainSettings, step: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine to ``min_lr`` at ``steps``."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.steps - s.warmup_steps)
    frac = min(1.0, (step - s.warmup_steps) / span)
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * frac))


def _draw(s: CineTrainSettings, step: int, n_train: int) -> tuple[int, int]:
    """Slice index and a uniform number in [0, 1) for the crop of ``step`` (a function of seed and step)."""
    rng = np.random.default_rng([s.seed, step])
    return int(rng.integers(n_train)), float(rng.random())


def _crop_for(sl: CineSlice, s: CineTrainSettings, u: float) -> CineSlice:
    """The training crop of a slice: ``crop_x`` columns that contain the dynamic region's centre
    column (anywhere, without a dynamic region), placed by ``u`` in [0, 1).
    """
    tx = sl.target.shape[-1]
    if not s.crop_x or s.crop_x >= tx:
        return sl
    width = s.crop_x - s.crop_x % PAD_MULTIPLE
    lo, hi = 0, tx - width
    cols = np.flatnonzero(sl.dynamic.any(axis=0))
    if cols.size:
        centre = int(round(cols.mean()))
        lo, hi = max(0, centre - width + 1), min(tx - width, centre)
    return crop_columns(sl, lo + int(u * (hi - lo + 1)), width)


# ----------------------------------------------------------------------------- cases

#: Seed offsets of the simulated cases: training, validation; held-out test cases
#: (bench/bench_crunet.py) use :data:`TEST_SEED_BASE` and up.
TRAIN_SEED_BASE, VAL_SEED_BASE, TEST_SEED_BASE = 100_000, 200_000, 300_000


def case_params(s: CineTrainSettings, split: str, i: int, **fixed: Any) -> Any:
    """The :class:`cmrecon.sim.cine.CineParams` of case ``i`` of ``split`` (train, val or test).

    R, sampling, SNR, coils, phases (training), field strength and heart rate are drawn from
    ``np.random.default_rng([data_seed, split, i])``; the simulator's seed is the split's base
    plus ``i``, so the three splits never share an anatomy. ``fixed`` overrides any field.
    """
    from cmrecon.sim.cine import CineParams
    code, base = {"train": (0, TRAIN_SEED_BASE), "val": (1, VAL_SEED_BASE), "test": (2, TEST_SEED_BASE)}[split]
    rng = np.random.default_rng([s.data_seed, code, i])
    drawn = dict(
        acceleration=int(rng.choice(s.accelerations)), sampling=str(rng.choice(s.samplings)),
        snr=float(rng.uniform(*s.snr)), coils=int(rng.integers(s.coils[0], s.coils[1] + 1)),
        phases=int(rng.choice(s.train_phases)) if split == "train" else int(s.val_phases),
        field_t=float(rng.choice([1.5, 3.0])), heart_rate_bpm=float(rng.uniform(50.0, 90.0)),
        matrix=(s.matrix, s.matrix), seed=base + i)
    drawn.update(fixed)
    return CineParams(**drawn)


# ----------------------------------------------------------------------------- cache


def build_cache(folder: Path, name: str, make: Callable[[int], list[CineSlice]], cases: int,
                say: Callable[[str], None] = print) -> list[Path]:
    """Slices of ``cases`` cases in ``folder/<name>_<case>_<slice>.npz``, made by ``make(case)``
    only where missing (a half-built cache is completed, not redone).

    Returns
    -------
    Sorted list of the slice files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for c in range(cases):
        if any(folder.glob(f"{name}_{c:05d}_*.npz")):
            continue
        for j, sl in enumerate(make(c)):
            sl.save(folder / f"{name}_{c:05d}_{j:02d}.npz")
        if (c + 1) % 10 == 0 or c + 1 == cases:
            say(f"cine data: {name} {c + 1}/{cases} cases ({time.perf_counter() - t0:.0f} s)")
    return sorted(folder.glob(f"{name}_*.npz"))


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: CineCRUNet, val: Sequence[CineSlice], device: torch.device) -> dict[str, float]:
    """Mean loss and :func:`cmrecon.evaluate_cine.score_cine_slice` metrics of ``model`` on ``val``.

    Also the same metrics of the zero-filled SENSE combination (``zf_`` prefix), the
    network's starting point.
    """
    from cmrecon.evaluate_cine import score_cine_slice
    from cmrecon.models.crunet import zero_filled
    was = model.training
    model.eval()
    rows = []
    for sl in val:
        k, maps, mask, target, _ = tensors(sl, device)
        pred = centre_crop(model(k, maps, mask), sl.target.shape[-2:])
        zf = centre_crop(zero_filled(k, maps, mask), sl.target.shape[-2:])
        truth = {"images": sl.target[None], "dynamic_mask": sl.dynamic[None], "static_mask": sl.static[None]}
        row = {"loss": float(cine_loss(pred, target))}
        for prefix, img in (("", pred), ("zf_", zf)):
            m = score_cine_slice(np.abs(img[0].cpu().numpy()), truth, 0)
            row.update({prefix + key: m[key] for key in ("ssim_dynamic", "nmse_dynamic", "ssim_all", "nmse_all")})
        rows.append(row)
    model.train(was)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


# ----------------------------------------------------------------------------- training


@dataclass
class TrainOutcome:
    """What :func:`train_cine` did: steps done, the best validation, where the files are."""

    out_dir: Path
    step: int
    best: dict[str, Any]
    finished: bool
    wall_s: float


def train_cine(settings: CineTrainSettings, train_files: Sequence[Path], val: Sequence[CineSlice],
               out_dir: str | Path, resume: bool = False, max_steps: Optional[int] = None,
               say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> TrainOutcome:
    """Train (or resume) :class:`CineCRUNet` on cached slices; keep the best on validation.

    Parameters
    ----------
    settings : CineTrainSettings
    train_files : the training slices (``.npz`` from :func:`build_cache`), read per step.
    val : held-out validation slices (never the test slices).
    out_dir : gets ``last.pt`` (state), ``best.pt`` + ``.sha256`` (weights), ``metrics.jsonl``.
    resume : continue ``out_dir/last.pt`` (same run settings required).
    max_steps : stop after this many steps in total (state saved), e.g. to test resuming.

    Returns
    -------
    TrainOutcome

    Raises
    ------
    CineTrainError
        ``last.pt`` exists without ``resume`` (or is missing with it), the settings differ from
        the stored run's, or the loss is not finite.
    """
    from cmrecon.models.weights import atomic_torch_save, save_checkpoint

    t_start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "last.pt", out / "metrics.jsonl"
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    device = torch.device("cpu")
    torch.manual_seed(settings.seed)
    model = CineCRUNet(settings.chans, settings.num_cascades).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, elapsed_before = 0, 0.0
    best: dict[str, Any] = {"nmse_dynamic": math.inf, "step": 0}
    if resume:
        if not state_path.is_file():
            raise CineTrainError(f"resume: no training state at {str(state_path)!r}")
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise CineTrainError(f"{str(state_path)!r} is not a cine training state ({STATE_FORMAT})")
        if state["run"] != settings.run_fields():
            raise CineTrainError(f"resume: settings differ from the run in {str(state_path)!r} "
                                 f"(stored {state['run']})")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        best = json.loads(state["best"])
        say(f"train cine: resumed at step {step}")
    elif state_path.exists():
        raise CineTrainError(f"{str(state_path)!r} exists: resume that run or choose another folder")
    elif settings.init_weights:
        from cmrecon.models.crunet import load_cine_crunet
        start = load_cine_crunet(settings.init_weights)
        if start.config != model.model_config():
            raise CineTrainError(f"init_weights {settings.init_weights!r}: architecture {start.config} "
                                 f"differs from the run's {model.model_config()}")
        model.load_state_dict(start.model.state_dict())
        say(f"train cine: starting from {settings.init_weights} (sha256 {start.sha256[:12]}…)")
    stop = settings.steps if max_steps is None else min(settings.steps, int(max_steps))
    say(f"train cine: {count_parameters(model):,} parameters, {len(train_files)} training slices, "
        f"{len(val)} validation slices, steps {step}→{stop} of {settings.steps}, "
        f"{torch.get_num_threads()} threads")

    def save_state() -> None:
        atomic_torch_save({"format": STATE_FORMAT, "run": settings.run_fields(), "model": model.state_dict(),
                           "optimizer": opt.state_dict(), "step": step, "best": json.dumps(best),
                           "elapsed_s": elapsed_before + time.monotonic() - t_start}, state_path)

    def log(row: dict[str, Any]) -> None:
        with open(log_path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")

    model.train()
    window, t_window = [], time.monotonic()
    budget = settings.minutes * 60.0
    while step < stop:
        if budget and time.monotonic() - t_start > budget:
            break
        idx, u = _draw(settings, step, len(train_files))
        sl = _crop_for(CineSlice.load(train_files[idx]), settings, u)
        k, maps, mask, target, dynamic = tensors(sl, device)
        lr = learning_rate(settings, step)
        for group in opt.param_groups:
            group["lr"] = lr
        pred = centre_crop(model(k, maps, mask), sl.target.shape[-2:])
        loss = cine_loss(pred, target, dynamic, settings.dynamic_weight)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise CineTrainError(f"non-finite loss {value} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        step += 1
        window.append(value)
        if step % settings.log_every == 0 or step == stop:
            now = time.monotonic()
            row = {"kind": "train", "step": step, "loss": float(np.mean(window)), "lr": lr,
                   "s_per_step": (now - t_window) / len(window),
                   "elapsed_s": elapsed_before + now - t_start}
            log(row)
            say(f"train cine: step {step}/{settings.steps} loss {row['loss']:.4f} lr {lr:.2e} "
                f"{row['s_per_step']:.2f} s/step elapsed {row['elapsed_s']:.0f} s")
            window, t_window = [], now
        if val and (step % settings.val_every == 0 or step == settings.steps):
            v = validate(model, val, device)
            row = {"kind": "val", "step": step, "elapsed_s": elapsed_before + time.monotonic() - t_start, **v}
            log(row)
            say(f"val cine: step {step} loss {v['loss']:.4f} dynamic SSIM {v['ssim_dynamic']:.4f} "
                f"NMSE {v['nmse_dynamic']:.4f} (zero-filled {v['zf_ssim_dynamic']:.4f} / "
                f"{v['zf_nmse_dynamic']:.4f}) image SSIM {v['ssim_all']:.4f}")
            if v["nmse_dynamic"] < best["nmse_dynamic"]:
                best = {"step": step, **v}
                save_checkpoint(out / "best.pt", model, model.model_config(),
                                {"val": v, "step": step, "run": settings.run_fields()})
            save_state()
    save_state()
    wall = time.monotonic() - t_start
    say(f"train cine: {'finished' if step >= settings.steps else 'stopped'} at step {step} in {wall:.0f} s; "
        f"best validation dynamic NMSE {best['nmse_dynamic']:.4f} at step {best['step']}")
    return TrainOutcome(out, step, best, step >= settings.steps, wall)


def run_cine_training(settings: CineTrainSettings, out_dir: str | Path, cache_dir: str | Path,
                      resume: bool = False, ship: Optional[str | Path] = None, source: str = "sim",
                      max_steps: Optional[int] = None,
                      say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
                      ) -> TrainOutcome:
    """Build (or complete) the slice cache, train, and optionally ship the best weights.

    Parameters
    ----------
    source : ``sim`` (:func:`simulated_slices` of :func:`case_params`) or ``phantom``
        (:func:`phantom_slice`, for smoke runs).
    ship : where to write the best weights (:func:`~cmrecon.models.weights.save_checkpoint`,
        with sidecar) once training stops, e.g. ``weights/cine_crunet_cpu.pt``.
    """
    cache = Path(cache_dir)
    if source == "sim":
        make_train = lambda i: simulated_slices(case_params(settings, "train", i))  # noqa: E731
        make_val = lambda i: simulated_slices(case_params(settings, "val", i))  # noqa: E731
    elif source == "phantom":
        def phantom(split: int, phases: Sequence[int]) -> Callable[[int], list[CineSlice]]:
            def make(i: int) -> list[CineSlice]:
                rng = np.random.default_rng([settings.data_seed, split, i])
                return [phantom_slice(rng, settings.matrix, int(rng.choice(phases)),
                                      int(rng.integers(settings.coils[0], settings.coils[1] + 1)),
                                      int(rng.choice(settings.accelerations)), str(rng.choice(settings.samplings)),
                                      float(rng.uniform(*settings.snr)))]
            return make
        make_train, make_val = phantom(0, settings.train_phases), phantom(1, (settings.val_phases,))
    else:
        raise CineTrainError(f"source = {source!r}; one of sim, phantom")
    val_files = build_cache(cache / source, "val", make_val, settings.val_cases, say)
    train_files = build_cache(cache / source, "train", make_train, settings.train_cases, say)
    val = [CineSlice.load(f) for f in val_files]
    outcome = train_cine(settings, train_files, val, out_dir, resume=resume, max_steps=max_steps, say=say)
    if ship is not None:
        ship_best(Path(out_dir) / "best.pt", Path(ship))
        say(f"train cine: best weights (step {outcome.best['step']}) written to {ship} (+ .sha256)")
    return outcome


def ship_best(best: Path, dest: Path) -> str:
    """Write the verified checkpoint ``best`` to ``dest`` (+ sidecar); returns its sha256."""
    from cmrecon.models.crunet import load_cine_crunet
    from cmrecon.models.weights import save_checkpoint
    loaded = load_cine_crunet(best)
    return save_checkpoint(dest, loaded.model, loaded.config, loaded.metrics)
