"""Train the PSIRNet-style model on simulated LGE samples: ``cmrecon train psirnet --config``.

Recipe (PSIRNet, arXiv 2604.08781; docs/physics.md §5):

* **Data**: :func:`cmrecon.sim.training.make_sample` generated on the fly — random anatomy,
  coil count, SNR, acceleration R, partial Fourier, field strength, TI, heart rate, number of
  MOCO repeats, coil maps true or estimated from ACS. Input = one IR/PD repeat; target = the
  MOCO-style PSIR of that case (``target_moco_noisy``, the published yardstick) or the
  noise-free target (``target.kind: clean``).
* **Loss**: ``1 − SSIM`` with a 7×7 box window, prediction and target min–max scaled with the
  *target's* range (:func:`ssim_loss`, differentiable; equal to :func:`cmrecon.metrics.ssim`
  on the scaled images), plus optionally ``loss.l1`` × the mean absolute PSIR error
  (:func:`training_loss`). SSIM on min–max scaled images barely sees a uniform shift of the
  ratio (its luminance term is weak), so an SSIM-only model can be biased in the very number a
  PSIR image reports; the L1 term anchors the scale (0 = the published loss).
* **Optimiser**: AdamW (lr 6e-4, weight decay 1e-3); learning rate linear warm-up over
  ``warmup_steps`` steps, times ``lr_decay ** epoch`` (0.98).
* **Validation**: a fixed held-out simulated set, its seeds disjoint from every training seed
  by construction (training samples use spawn key ``(0, batch, item)``, validation samples
  ``(1, i)`` of their own :class:`numpy.random.SeedSequence`); metrics against the noisy MOCO
  target and the clean (noise-free) target, over the body and the heart region.
* **Determinism & resume**: every batch is a pure function of ``(seed, global batch index)``,
  the learning rate a pure function of ``(step, epoch)``; ``last.pt`` holds model, optimiser,
  position and RNG state, so ``--resume`` continues bit for bit (same device and threads).
* **Devices**: CPU, or CUDA with bf16 autocast around the U-Nets (``amp: auto``).

Outputs in ``--out`` (default ``runs/<name>``): ``config.yaml`` (resolved), ``metrics.jsonl``
(one JSON object per logged training step and per validation), ``last.pt`` (training state),
``best.pt`` / ``final.pt`` (:func:`cmrecon.models.weights.save_checkpoint` format with a
sha256 sidecar; ``best`` by validation SSIM against the training target).

References
----------
PSIRNet: arXiv 2604.08781; github.com/microsoft/psirnet (MIT).
Sriram A et al. End-to-end variational networks for accelerated MRI reconstruction. MICCAI 2020.
Hammernik K et al. Learning a variational network for reconstruction of accelerated MRI data.
MRM 2018;79:3055.
Wang Z et al. IEEE TIP 2004;13:600 (SSIM). Loshchilov I, Hutter F. ICLR 2019 (AdamW).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

from cmrecon.errors import CmreconError
from cmrecon.metrics import ssim_valid
from cmrecon.models.device import resolve_device

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "batch_for", "build_model",
           "learning_rate", "load_config", "make_validation_set", "ssim_loss",
           "ssim_torch", "train", "training_loss", "validate"]

#: Format tag of the resumable training state (``last.pt``).
STATE_FORMAT = "cmrecon.psirnet.trainstate/1"
#: Keys of a sample that the model takes.
MODEL_INPUTS = ("ir_kspace", "pd_kspace", "mask", "sens_maps")
#: Sample key of each target kind.
TARGET_KEYS = {"moco_noisy": "target_moco_noisy", "clean": "target_clean"}


class ConfigError(CmreconError):
    """A training configuration that cannot be used (unknown key, bad value, changed on resume)."""


# --- loss ---------------------------------------------------------------------------------------

def ssim_torch(x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor | float,
               window_px: int = 7) -> torch.Tensor:
    """Mean SSIM per image over the valid (uncropped-window) region, differentiable.

    :func:`cmrecon.metrics.ssim_valid`, the formula of :func:`cmrecon.metrics.ssim`, averaged
    over the pixels at least ``window_px // 2`` from the border (equal to
    :func:`cmrecon.metrics.ssim` without a mask).

    Parameters
    ----------
    x, y : torch.Tensor
        ``(B, 1, H, W)`` real test and reference images.
    data_range : torch.Tensor or float
        Dynamic range L, a scalar or ``(B,)``.
    window_px : int
        Odd window side, pixels.

    Returns
    -------
    torch.Tensor
        ``(B,)`` mean SSIM of each image.
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"ssim_torch expects two (B, 1, H, W) tensors, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if window_px < 1 or window_px % 2 == 0 or window_px > min(x.shape[-2:]):
        raise ValueError(f"window_px={window_px} must be odd and fit the image {tuple(x.shape)}")
    x = x.float()
    L = torch.as_tensor(data_range, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    return ssim_valid(x, y.float(), L, window_px).mean(dim=(1, 2, 3))


def minmax_scale_like(pred: torch.Tensor, target: torch.Tensor,
                      eps: float = 1e-8) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scale ``pred`` and ``target`` by the target's per-image min and max to ``[0, 1]``.

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(B, 1, H, W)`` real.
    eps : float
        Floor of the target range (a constant target would divide by zero).

    Returns
    -------
    tuple of torch.Tensor
        ``((pred − tmin) / (tmax − tmin), (target − tmin) / (tmax − tmin))``.
    """
    tmin = target.amin(dim=(1, 2, 3), keepdim=True)
    tmax = target.amax(dim=(1, 2, 3), keepdim=True)
    rng = torch.clamp(tmax - tmin, min=eps)
    return (pred - tmin) / rng, (target - tmin) / rng


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window_px: int = 7) -> torch.Tensor:
    """PSIRNet training loss ``1 − SSIM``, averaged over the batch.

    Both images are min–max scaled with the target's range (:func:`minmax_scale_like`), then
    SSIM is taken with ``data_range = 1`` and a 7×7 box window (:func:`ssim_torch`).

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(B, 1, H, W)`` real PSIR (dimensionless).
    window_px : int
        Odd SSIM window side, pixels.

    Returns
    -------
    torch.Tensor
        Scalar loss in [0, 2].

    References
    ----------
    PSIRNet, arXiv 2604.08781 (loss); Wang et al., IEEE TIP 2004;13:600 (SSIM).
    """
    p, t = minmax_scale_like(pred.float(), target.float())
    return 1.0 - ssim_torch(p, t, 1.0, window_px).mean()


def training_loss(pred: torch.Tensor, target: torch.Tensor,
                  loss_cfg: Dict[str, Any]) -> torch.Tensor:
    """Weighted training loss ``ssim · (1 − SSIM) + l1 · mean|pred − target|``.

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(B, 1, H, W)`` real PSIR (dimensionless IR/PD ratio).
    loss_cfg : dict
        ``ssim`` and ``l1`` weights (the ``loss`` section of :class:`TrainConfig`).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    pred, target = pred.float(), target.float()
    total = float(loss_cfg["ssim"]) * ssim_loss(pred, target)
    if float(loss_cfg["l1"]):
        total = total + float(loss_cfg["l1"]) * (pred - target).abs().mean()
    return total


# --- configuration ------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig:
    """A training run, as read from ``configs/<name>.yaml`` (sections = attributes).

    Attributes
    ----------
    name : str
        Run name (default output folder ``runs/<name>``).
    model : dict
        ``preset`` (a :data:`cmrecon.models.psirnet.PRESETS` name) plus constructor overrides.
    data : dict
        ``sizes``: list of ``[RO, PE]`` matrices drawn per batch; ``coils``: ``[lo, hi]``
        drawn per batch (a batch shares one coil count); ``sens``: list of ``"true"`` /
        ``"acs"`` drawn per sample; every other key goes to
        :func:`cmrecon.sim.training.make_sample` (``R``, ``snr``, ``partial_fourier``...).
    target : dict
        ``kind``: ``moco_noisy`` (published) or ``clean``.
    loss : dict
        ``ssim`` (weight of 1 − SSIM, 1.0) and ``l1`` (weight of the mean absolute PSIR
        error, 0.0 = the published loss); see :func:`training_loss`.
    optim : dict
        ``lr`` (6e-4), ``weight_decay`` (1e-3), ``betas``, ``warmup_steps``, ``lr_decay``
        (per epoch, 0.98), ``grad_clip_norm`` (None = off).
    train : dict
        ``seed``, ``epochs``, ``batches_per_epoch``, ``batch_size``, ``num_workers`` (data
        processes), ``log_every_steps``, ``checkpoint_every_steps``, ``device``
        (auto|cpu|cuda), ``amp`` (auto|bf16|none), ``threads`` (torch CPU threads; 0 = keep),
        ``init_weights`` (None, or a shipped name / checkpoint path whose weights, sha256
        verified, start a fresh run: fine-tuning; the architecture must match ``model``).
    validation : dict
        ``seed``, ``n`` (samples), ``sizes`` (cycled), ``coils`` ([lo, hi]), ``sens``
        (cycled), ``every_epochs``, ``batch_size``.
    """

    name: str
    model: Dict[str, Any]
    data: Dict[str, Any]
    target: Dict[str, Any]
    loss: Dict[str, Any]
    optim: Dict[str, Any]
    train: Dict[str, Any]
    validation: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return copy.deepcopy(dataclasses.asdict(self))


_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "model": {"preset": "cpu_small"},
    "data": {"sizes": [[96, 96]], "coils": [8, 32], "sens": ["true", "acs"]},
    "target": {"kind": "moco_noisy"},
    "loss": {"ssim": 1.0, "l1": 0.0},
    "optim": {"lr": 6e-4, "weight_decay": 1e-3, "betas": [0.9, 0.999], "warmup_steps": 100,
              "lr_decay": 0.98, "grad_clip_norm": None},
    "train": {"seed": 0, "epochs": 10, "batches_per_epoch": 100, "batch_size": 1,
              "num_workers": 0, "log_every_steps": 10, "checkpoint_every_steps": 0,
              "device": "auto", "amp": "auto", "threads": 0, "init_weights": None},
    "validation": {"seed": 1_000_003, "n": 16, "sizes": [[96, 96]], "coils": [8, 32],
                   "sens": ["true", "acs"], "every_epochs": 1, "batch_size": 1},
}


def _check_keys(section: str, raw: Dict[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"config section '{section}': unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")


def _sample_kwargs() -> List[str]:
    from cmrecon.sim.training import make_sample
    skip = {"rng", "size", "coils", "sens", "as_torch"}
    return [p for p in inspect.signature(make_sample).parameters if p not in skip]


def config_from_dict(raw: Dict[str, Any]) -> TrainConfig:
    """Validate a nested dict (a parsed YAML config) and fill in defaults.

    Raises
    ------
    ConfigError
        Unknown section or key, unknown preset, bad size/coil range/target kind/device.
    """
    from cmrecon.models.psirnet import PRESETS

    if not isinstance(raw, dict):
        raise ConfigError(f"a training config is a mapping, got {type(raw).__name__}")
    _check_keys("top level", raw, ["name", *_DEFAULTS])
    if not raw.get("name"):
        raise ConfigError("config needs a 'name'")
    out: Dict[str, Any] = {"name": str(raw["name"])}
    for section, defaults in _DEFAULTS.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"config section '{section}' must be a mapping, got {given!r}")
        if section == "model":
            known = ["preset", *inspect.signature(_psirnet_init()).parameters]
        elif section == "data":
            known = [*defaults, *_sample_kwargs()]
        else:
            known = list(defaults)
        _check_keys(section, given, known)
        out[section] = {**copy.deepcopy(defaults), **copy.deepcopy(given)}
    cfg = TrainConfig(**out)
    if cfg.model["preset"] not in PRESETS:
        raise ConfigError(f"model.preset = {cfg.model['preset']!r}; known: {sorted(PRESETS)}")
    for section in ("data", "validation"):
        sizes = getattr(cfg, section)["sizes"]
        if not sizes or any(len(s) != 2 or min(s) < 16 for s in sizes):
            raise ConfigError(f"{section}.sizes = {sizes!r}: a list of [RO, PE] ≥ 16")
        lo, hi = getattr(cfg, section)["coils"]
        if not 2 <= lo <= hi:
            raise ConfigError(f"{section}.coils = {[lo, hi]!r}: need 2 ≤ lo ≤ hi")
        bad = [s for s in getattr(cfg, section)["sens"] if s not in ("true", "acs")]
        if bad or not getattr(cfg, section)["sens"]:
            raise ConfigError(f"{section}.sens = {getattr(cfg, section)['sens']!r}: "
                              f"choices are 'true' and 'acs'")
    if cfg.target["kind"] not in TARGET_KEYS:
        raise ConfigError(f"target.kind = {cfg.target['kind']!r}; one of {sorted(TARGET_KEYS)}")
    weights = {k: cfg.loss[k] for k in ("ssim", "l1")}
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
           for v in weights.values()) or not any(weights.values()):
        raise ConfigError(f"loss = {weights!r}: weights must be finite, ≥ 0 and not all zero")
    if cfg.train["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device = {cfg.train['device']!r}; one of auto, cpu, cuda")
    if cfg.train["amp"] not in ("auto", "bf16", "none"):
        raise ConfigError(f"train.amp = {cfg.train['amp']!r}; one of auto, bf16, none")
    for key in ("epochs", "batches_per_epoch", "batch_size"):
        if int(cfg.train[key]) < 1:
            raise ConfigError(f"train.{key} = {cfg.train[key]!r} must be ≥ 1")
    if int(cfg.validation["n"]) < 1:
        raise ConfigError(f"validation.n = {cfg.validation['n']!r} must be ≥ 1")
    return cfg


def _psirnet_init():
    from cmrecon.models.psirnet import PSIRNet
    return PSIRNet.__init__


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read and validate a YAML training config (see :class:`TrainConfig`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config not found: path={str(path)!r}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {str(path)!r}: {exc}") from exc
    return config_from_dict(raw)


def build_model(cfg: TrainConfig):
    """The :class:`~cmrecon.models.psirnet.PSIRNet` of ``cfg.model`` (preset + overrides)."""
    from cmrecon.models.psirnet import PSIRNet
    overrides = {k: v for k, v in cfg.model.items() if k != "preset"}
    return PSIRNet.from_preset(cfg.model["preset"], **overrides)


# --- data ---------------------------------------------------------------------------------------

def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def _make_sample(rng: np.random.Generator, data: Dict[str, Any], size: Sequence[int],
                 n_coils: int, sens: str) -> Dict[str, Any]:
    from cmrecon.sim.training import make_sample
    extra = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()
             if k not in ("sizes", "coils", "sens")}
    return make_sample(rng, size=(int(size[0]), int(size[1])), coils=(n_coils, n_coils),
                       sens=sens, as_torch=True, **extra)


def _stack(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in samples[0].items():
        out[k] = torch.stack([s[k] for s in samples]) if isinstance(v, torch.Tensor) else \
            [s[k] for s in samples]
    return out


def batch_for(cfg: TrainConfig, batch_index: int) -> Dict[str, Any]:
    """Training batch number ``batch_index`` (global, counted from 0 over all epochs).

    A pure function of ``(cfg.train.seed, batch_index)``: the batch's matrix size and coil
    count come from spawn key ``(0, batch_index)``, item ``b`` from ``(0, batch_index, b + 1)``.

    Returns
    -------
    dict
        :func:`cmrecon.sim.training.make_sample` keys stacked on a leading batch axis
        (``ir_kspace`` ``(B, coils, RO, PE)`` complex64, ``mask`` ``(B, 1, RO, PE)`` bool, ...).
    """
    data = cfg.data
    seed = int(cfg.train["seed"])
    meta = _rng(seed, 0, batch_index)
    size = data["sizes"][int(meta.integers(len(data["sizes"])))]
    n_coils = int(meta.integers(data["coils"][0], data["coils"][1] + 1))
    samples = []
    for b in range(int(cfg.train["batch_size"])):
        rng = _rng(seed, 0, batch_index, b + 1)
        sens = data["sens"][int(rng.integers(len(data["sens"])))]
        samples.append(_make_sample(rng, data, size, n_coils, sens))
    return _stack(samples)


class _BatchDataset(torch.utils.data.Dataset):
    """Map-style dataset over global batch indices ``[start, stop)`` (for DataLoader workers)."""

    def __init__(self, cfg: TrainConfig, start: int, stop: int):
        self.cfg, self.start, self.stop = cfg, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return batch_for(self.cfg, self.start + i)


def _batches(cfg: TrainConfig, start: int, stop: int) -> Iterator[Dict[str, Any]]:
    workers = int(cfg.train["num_workers"])
    if workers <= 0:
        for g in range(start, stop):
            yield batch_for(cfg, g)
        return
    loader = torch.utils.data.DataLoader(_BatchDataset(cfg, start, stop), batch_size=None,
                                         shuffle=False, num_workers=workers, prefetch_factor=2,
                                         persistent_workers=False)
    yield from loader


def make_validation_set(cfg: TrainConfig) -> List[Dict[str, Any]]:
    """The fixed held-out validation samples (each a batch of one, torch tensors).

    Sample ``i`` uses spawn key ``(1, i)`` of ``SeedSequence(validation.seed)``; training
    samples use keys starting with 0, so the two sets never share a generator state. Sizes and
    coil-map modes cycle through ``validation.sizes`` / ``validation.sens``.
    """
    val = cfg.validation
    out = []
    for i in range(int(val["n"])):
        rng = _rng(int(val["seed"]), 1, i)
        n_coils = int(rng.integers(val["coils"][0], val["coils"][1] + 1))
        size = val["sizes"][i % len(val["sizes"])]
        sens = val["sens"][i % len(val["sens"])]
        out.append(_stack([_make_sample(rng, cfg.data, size, n_coils, sens)]))
    return out


# --- devices ------------------------------------------------------------------------------------

def _autocast(device: torch.device, amp: str):
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _unets_return_float32(model: torch.nn.Module) -> None:
    """Cast every U-Net's output back to float32 (under bf16 autocast the convolutions run in
    bf16, but the NormUnet wrappers rebuild complex64 tensors from the U-Net output)."""
    from cmrecon.models.unet import Unet
    for m in model.modules():
        if isinstance(m, Unet) and not getattr(m, "_cmrecon_f32_hook", False):
            m.register_forward_hook(lambda mod, inp, out: out.float())
            m._cmrecon_f32_hook = True


def _to(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


# --- schedule, validation -----------------------------------------------------------------------

def learning_rate(optim: Dict[str, Any], step: int, epoch: int) -> float:
    """``lr · min(1, (step + 1) / warmup_steps) · lr_decay ** epoch`` (step, epoch from 0)."""
    warm = int(optim["warmup_steps"])
    ramp = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    return float(optim["lr"]) * ramp * float(optim["lr_decay"]) ** epoch


def _image_metrics(pred: np.ndarray, ref: np.ndarray, heart: np.ndarray,
                   body: np.ndarray) -> Dict[str, float]:
    from cmrecon.metrics import nrmse, psnr, ssim
    lo, rng = float(ref.min()), float(ref.max() - ref.min())
    p, r = (pred - lo) / rng, (ref - lo) / rng  # the published convention: target's min–max
    return {
        "ssim": ssim(p, r, data_range=1.0),
        "ssim_heart": ssim(p, r, data_range=1.0, mask=heart),
        "ssim_raw": ssim(pred, ref, data_range=rng),
        "psnr": psnr(pred, ref, data_range=rng),
        "nrmse": nrmse(pred, ref),
        "nrmse_body": nrmse(pred, ref, mask=body),
        "nrmse_heart": nrmse(pred, ref, mask=heart),
    }


@torch.no_grad()
def validate(model: torch.nn.Module, val_set: List[Dict[str, Any]], cfg: TrainConfig,
             device: torch.device) -> Dict[str, float]:
    """Mean loss and image metrics of ``model`` on the validation set.

    Metrics (:mod:`cmrecon.metrics`) against both ``target_moco_noisy`` (prefix ``moco_``) and
    ``target_clean`` (prefix ``clean_``): SSIM (7×7) of both images min–max scaled with the
    reference's range (the published convention; ``ssim_raw`` on unscaled values — SSIM's
    luminance term is not shift invariant, so the two differ), heart-region SSIM, PSNR (dB,
    peak = reference range), NRMSE over the whole image, the body and the heart region.

    Returns
    -------
    dict
        ``loss`` (mean :func:`training_loss` against the training target) and
        ``<target>_<metric>`` means.
    """
    model.eval()
    amp = str(cfg.train["amp"])
    key = TARGET_KEYS[cfg.target["kind"]]
    sums: Dict[str, float] = {}
    for sample in val_set:
        s = _to(sample, device)
        with _autocast(device, amp):
            pred = model(*(s[k] for k in MODEL_INPUTS)).float()
        row = {"loss": float(training_loss(pred, s[key], cfg.loss))}
        p = pred[0, 0].cpu().numpy()
        heart = sample["heart_mask"][0, 0].numpy()
        body = sample["body_mask"][0, 0].numpy()
        for prefix, tkey in (("moco", "target_moco_noisy"), ("clean", "target_clean")):
            ref = sample[tkey][0, 0].numpy()
            row.update({f"{prefix}_{k}": v for k, v in _image_metrics(p, ref, heart, body).items()})
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
    model.train()
    return {k: v / len(val_set) for k, v in sums.items()}


# --- training -----------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    out_dir : Path
        Output folder.
    steps : int
        Optimiser steps taken in total (including those before a resume).
    samples : int
        Training samples seen in total.
    last_val : dict
        Metrics of the last validation (empty if none ran).
    best_val_loss : float
        Lowest validation loss seen.
    wall_s : float
        Wall time of this call, seconds.
    finished : bool
        True when all epochs ran (False when stopped by ``max_steps``).
    """

    out_dir: Path
    steps: int
    samples: int
    last_val: Dict[str, float]
    best_val_loss: float
    wall_s: float
    finished: bool


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _log(fh, row: Dict[str, Any]) -> None:
    fh.write(json.dumps(row, sort_keys=True) + "\n")
    fh.flush()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after ``step`` (by a run that was interrupted after its checkpoint)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _configs_match(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for d in (a, b):
        d["train"].pop("epochs", None)  # extending a run is allowed
        d["train"].pop("num_workers", None)
        d["train"].pop("log_every_steps", None)
        d["train"].pop("checkpoint_every_steps", None)
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def init_weights(model: torch.nn.Module, spec: str, device: torch.device) -> None:
    """Copy verified weights (a shipped name or a checkpoint path) into ``model`` (fine-tuning).

    Raises
    ------
    ConfigError
        The checkpoint's architecture differs from the run's model (the message lists the
        first mismatching keys).
    """
    from cmrecon.models.shipped import resolve_weights
    from cmrecon.models.weights import load_checkpoint

    path, sha = resolve_weights(spec)
    source = load_checkpoint(path, expected_sha256=sha, map_location=device).model.state_dict()
    target = model.state_dict()
    bad = sorted(k for k in set(source) | set(target)
                 if k not in source or k not in target or source[k].shape != target[k].shape)
    if bad:
        raise ConfigError(f"train.init_weights = {spec!r} does not fit the run's model "
                          f"({len(bad)} mismatching tensors, e.g. {', '.join(bad[:3])})")
    model.load_state_dict(source, strict=True)


def train(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
          max_steps: Optional[int] = None, stream=None) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; write everything to ``out_dir``.

    Parameters
    ----------
    cfg : TrainConfig
        The run (see :class:`TrainConfig`).
    out_dir : str or PathLike
        Output folder (created). Without ``resume`` an existing ``last.pt`` is an error.
    resume : bool
        Continue from ``out_dir/last.pt``; its config must equal ``cfg`` except
        ``train.epochs`` / ``num_workers`` / logging and checkpoint intervals.
    max_steps : int, optional
        Stop after this many optimiser steps in total (a checkpoint is written), e.g. to
        test resuming.
    stream : file, optional
        Where progress lines go (stderr by default).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Existing run without ``resume``, missing or mismatched state on ``resume``, a
        non-finite loss.
    """
    from cmrecon.models.weights import save_checkpoint

    stream = stream or sys.stderr
    t_start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "last.pt", out / "metrics.jsonl"
    device = resolve_device(str(cfg.train["device"]), "train.device")
    if int(cfg.train["threads"]) > 0:
        torch.set_num_threads(int(cfg.train["threads"]))
    amp = str(cfg.train["amp"])

    torch.manual_seed(int(cfg.train["seed"]))
    model = build_model(cfg).to(device)
    _unets_return_float32(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.optim["lr"]),
                            betas=tuple(cfg.optim["betas"]),
                            weight_decay=float(cfg.optim["weight_decay"]))
    bpe = int(cfg.train["batches_per_epoch"])
    step, best_loss, elapsed_before = 0, math.inf, 0.0
    if resume:
        if not state_path.is_file():
            raise ConfigError(f"--resume: no training state at {str(state_path)!r}")
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{str(state_path)!r} is not a training state ({STATE_FORMAT})")
        if not _configs_match(state["config"], cfg.to_dict()):
            raise ConfigError(f"--resume: the config differs from the one in {str(state_path)!r} "
                              f"(only train.epochs and logging/worker settings may change)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, best_loss = int(state["step"]), float(state["best_val_loss"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        _truncate_log(log_path, step)
        print(f"train {cfg.name}: resumed at step {step} (epoch {step // bpe})", file=stream,
              flush=True)
    elif state_path.exists():
        raise ConfigError(f"{str(state_path)!r} exists: pass --resume to continue that run, "
                          f"or choose another --out")
    elif cfg.train["init_weights"]:
        init_weights(model, str(cfg.train["init_weights"]), device)
        print(f"train {cfg.name}: starting from the weights of {cfg.train['init_weights']}",
              file=stream, flush=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    from cmrecon.models.psirnet import count_parameters
    val_set = make_validation_set(cfg)
    key = TARGET_KEYS[cfg.target["kind"]]
    epochs = int(cfg.train["epochs"])
    total_steps = epochs * bpe
    stop_at = total_steps if max_steps is None else min(total_steps, int(max_steps))
    log_every = max(1, int(cfg.train["log_every_steps"]))
    ckpt_every = int(cfg.train["checkpoint_every_steps"])
    bsz = int(cfg.train["batch_size"])
    print(f"train {cfg.name}: {count_parameters(model):,} parameters on {device} "
          f"(amp {amp}, {torch.get_num_threads()} threads); {epochs} epochs × {bpe} batches × "
          f"{bsz}; validation {len(val_set)} samples", file=stream, flush=True)

    def save_state() -> None:
        _atomic_torch_save({
            "format": STATE_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "step": step, "best_val_loss": best_loss,
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": elapsed_before + time.monotonic() - t_start,
        }, state_path)

    def weights_metrics(val: Dict[str, float]) -> Dict[str, Any]:
        return {"step": step, "epoch": step // bpe, "samples": step * bsz,
                "target": cfg.target["kind"], "val": val, "run": cfg.name}

    last_val: Dict[str, float] = {}
    window_t, window_n, run_loss = time.monotonic(), 0, []
    with open(log_path, "a") as logf:
        while step < stop_at:
            epoch = step // bpe
            epoch_end = min((epoch + 1) * bpe, stop_at)
            for batch in _batches(cfg, step, epoch_end):
                lr = learning_rate(cfg.optim, step, epoch)
                for group in opt.param_groups:
                    group["lr"] = lr
                b = _to(batch, device)
                with _autocast(device, amp):
                    pred = model(*(b[k] for k in MODEL_INPUTS))
                loss = training_loss(pred, b[key], cfg.loss)
                if not torch.isfinite(loss):
                    raise ConfigError(f"non-finite loss {float(loss)} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim["grad_clip_norm"]:
                    torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   float(cfg.optim["grad_clip_norm"]))
                opt.step()
                step += 1
                window_n += 1
                run_loss.append(loss.item())
                if step % log_every == 0 or step == epoch_end:
                    now = time.monotonic()
                    rate = window_n * bsz / max(now - window_t, 1e-9)
                    row = {"kind": "train", "step": step, "epoch": epoch, "lr": lr,
                           "loss": float(np.mean(run_loss)), "samples_per_s": rate,
                           "coils": int(b["ir_kspace"].shape[1]),
                           "size": list(b["ir_kspace"].shape[-2:]),
                           "elapsed_s": elapsed_before + now - t_start}
                    _log(logf, row)
                    print(f"train {cfg.name}: epoch {epoch + 1}/{epochs} step {step}/{total_steps}"
                          f" loss {row['loss']:.4f} lr {lr:.2e} {rate:.2f} samples/s",
                          file=stream, flush=True)
                    window_t, window_n, run_loss = now, 0, []
                if ckpt_every > 0 and step % ckpt_every == 0 and step < epoch_end:
                    save_state()
            if step % bpe == 0 and (step // bpe) % int(cfg.validation["every_epochs"]) == 0 \
                    or step == total_steps:
                last_val = validate(model, val_set, cfg, device)
                row = {"kind": "val", "step": step, "epoch": step // bpe - 1,
                       "elapsed_s": elapsed_before + time.monotonic() - t_start, **last_val}
                _log(logf, row)
                print(f"val {cfg.name}: step {step} loss {last_val['loss']:.4f} "
                      f"moco SSIM {last_val['moco_ssim']:.4f} NRMSE {last_val['moco_nrmse']:.4f}"
                      f" heart {last_val['moco_nrmse_heart']:.4f} | clean SSIM "
                      f"{last_val['clean_ssim']:.4f} heart NRMSE "
                      f"{last_val['clean_nrmse_heart']:.4f}", file=stream, flush=True)
                if last_val["loss"] < best_loss:
                    best_loss = last_val["loss"]
                    save_checkpoint(out / "best.pt", model, model.model_config(),
                                    weights_metrics(last_val))
            save_state()
    finished = step >= total_steps
    if finished:
        save_checkpoint(out / "final.pt", model, model.model_config(), weights_metrics(last_val))
    wall = time.monotonic() - t_start
    print(f"train {cfg.name}: {'finished' if finished else 'stopped'} at step {step} "
          f"({step * bsz} samples) in {wall:.0f} s", file=stream, flush=True)
    return TrainResult(out_dir=out, steps=step, samples=step * bsz, last_val=last_val,
                       best_val_loss=best_loss, wall_s=wall, finished=finished)


# --- CLI ----------------------------------------------------------------------------------------

def _run_psirnet(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.device:
        cfg.train["device"] = args.device
    if args.threads is not None:
        cfg.train["threads"] = args.threads
    if args.workers is not None:
        cfg.train["num_workers"] = args.workers
    if args.epochs is not None:
        cfg.train["epochs"] = args.epochs
    out = args.out or str(Path("runs") / cfg.name)
    result = train(cfg, out, resume=args.resume, max_steps=args.max_steps)
    print(f"train: {result.steps} steps, {result.samples} samples, best validation loss "
          f"{result.best_val_loss:.4f}; outputs in {result.out_dir}", file=sys.stderr)
    return 0


