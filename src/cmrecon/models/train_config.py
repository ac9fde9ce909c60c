"""The training configuration: typed frozen sections parsed like chain step parameters.

:func:`cmrecon.params.parse_params` reads every section; unknown keys and bad values are
:class:`ConfigError` naming the section and the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from cmrecon.errors import ChainError, CmreconError
from cmrecon.models.psirnet import PRESETS
from cmrecon.params import parse_params

__all__ = ["TARGET_KEYS", "ConfigError", "TrainConfig", "config_from_dict", "load_config",
           "same_run"]

#: Sample key of each target kind.
TARGET_KEYS = {"moco_noisy": "target_moco_noisy", "clean": "target_clean"}
#: ``train`` settings that may change when a run is resumed.
RESUME_MAY_CHANGE = ("epochs", "num_workers", "log_every_steps", "checkpoint_every_steps")


class ConfigError(CmreconError):
    """A training configuration that cannot be used (unknown key, bad value, changed on resume)."""


def _doc(doc: str, default: Any = None, **more: Any) -> Any:
    return field(default=default, metadata={"doc": doc, **more})


def _set(section: Any, skip: tuple = ()) -> dict[str, Any]:
    """The fields of ``section`` that are set (not None), by name, minus ``skip``."""
    return {k: v for k, v in vars(section).items() if v is not None and k not in skip}


@dataclass(frozen=True)
class ModelSection:
    """``model``: a :data:`~cmrecon.models.psirnet.PRESETS` name and constructor overrides."""

    preset: str = _doc("PSIRNet preset", "cpu_small", choices=tuple(PRESETS))
    num_cascades: Optional[int] = _doc("unrolled cascades")
    chans: Optional[int] = _doc("channels of the cascade U-Nets")
    sens_chans: Optional[int] = _doc("channels of the sensitivity U-Net")
    pools: Optional[int] = _doc("pooling levels of the cascade U-Nets")
    sens_pools: Optional[int] = _doc("pooling levels of the sensitivity U-Net")
    eps: Optional[float] = _doc("floor of |PD|² in the head")
    drop_prob: Optional[float] = _doc("Dropout2d probability")
    window_px: Optional[int] = _doc("odd box side of the head's coil correction, pixels")
    reg: Optional[float] = _doc("regulariser of the head's coil correction, SNR units²")

    def overrides(self) -> dict[str, Any]:
        """Constructor arguments replacing the preset's."""
        return _set(self, skip=("preset",))


@dataclass(frozen=True)
class DrawSection:
    """What each sample is drawn from: matrix sizes, coil counts, coil-map modes."""

    sizes: tuple[tuple[int, int], ...] = _doc("[RO, PE] matrices (each ≥ 16)", ((96, 96),))
    coils: tuple[int, int] = _doc("[lo, hi] coil count, 2 ≤ lo ≤ hi", (8, 32))
    sens: tuple[str, ...] = _doc("coil maps: 'true', or 'acs' (from the PD ACS)", ("true", "acs"))

    def __post_init__(self) -> None:
        if not self.sizes or any(min(s) < 16 for s in self.sizes):
            raise ValueError(f"sizes = {self.sizes!r}: a list of [RO, PE] ≥ 16")
        if not 2 <= self.coils[0] <= self.coils[1]:
            raise ValueError(f"coils = {self.coils!r}: need 2 ≤ lo ≤ hi")
        if not self.sens or any(s not in ("true", "acs") for s in self.sens):
            raise ValueError(f"sens = {self.sens!r}: choices are 'true' and 'acs'")


@dataclass(frozen=True)
class DataSection(DrawSection):
    """``data``: training draws (a batch shares one size and coil count, ``sens`` per sample)
    and :func:`~cmrecon.sim.training.make_sample` ranges (unset = its default).
    """

    R: Optional[tuple[int, ...]] = _doc("acceleration factors drawn from")
    acs_lines: Optional[int] = _doc("embedded calibration lines")
    partial_fourier: Optional[tuple[float, ...]] = _doc("PE partial-Fourier fractions")
    snr: Optional[tuple[float, float]] = _doc("[lo, hi] PD blood SNR of one repeat")
    moco_repeats: Optional[tuple[int, int]] = _doc("[lo, hi] repeats in the MOCO average")
    field_t: Optional[tuple[float, ...]] = _doc("field strengths drawn from, T")
    ti_ms: Optional[tuple[float, float]] = _doc("[lo, hi] inversion time, ms")
    heart_rate_bpm: Optional[tuple[float, float]] = _doc("[lo, hi] heart rate, bpm")
    fov_ro_mm: Optional[tuple[float, float]] = _doc("[lo, hi] readout field of view, mm")
    tr_ms: Optional[float] = _doc("bSSFP TR, ms")
    flip_deg: Optional[tuple[float, float]] = _doc("(IR, PD) flip angles, degrees")

    def sample_kwargs(self) -> dict[str, Any]:
        """The :func:`~cmrecon.sim.training.make_sample` arguments that are set."""
        return _set(self, skip=tuple(f.name for f in dataclasses.fields(DrawSection)))


@dataclass(frozen=True)
class TargetSection:
    """``target``: what the network learns to produce."""

    kind: str = _doc("MOCO-style PSIR of the noisy repeats (published) or the noise-free one",
                     "moco_noisy", choices=tuple(TARGET_KEYS))


@dataclass(frozen=True)
class LossSection:
    """``loss``: weights of ``1 − SSIM`` and of the mean absolute PSIR error."""

    ssim: float = _doc("weight of 1 − SSIM", 1.0)
    l1: float = _doc("weight of mean |pred − target| (0 = the published loss)", 0.0)

    def __post_init__(self) -> None:
        w = (self.ssim, self.l1)
        if any(not math.isfinite(v) or v < 0 for v in w) or not any(w):
            raise ValueError(f"loss = {dataclasses.asdict(self)!r}: weights must be finite, "
                             f"≥ 0 and not all zero")


@dataclass(frozen=True)
class OptimSection:
    """``optim``: AdamW and its learning-rate schedule (:func:`~cmrecon.models.train_loop.learning_rate`)."""

    lr: float = _doc("peak learning rate", 6e-4)
    weight_decay: float = _doc("AdamW weight decay", 1e-3)
    betas: tuple[float, float] = _doc("AdamW betas", (0.9, 0.999))
    warmup_steps: int = _doc("steps of linear warm-up (0 = none)", 100)
    lr_decay: float = _doc("learning-rate factor per epoch", 0.98)
    grad_clip_norm: Optional[float] = _doc("gradient norm clip (unset = off)")


@dataclass(frozen=True)
class TrainSection:
    """``train``: the run's seed, length, logging and hardware."""

    seed: int = _doc("seed of every training batch", 0)
    epochs: int = _doc("epochs (may grow on resume)", 10)
    batches_per_epoch: int = _doc("batches per epoch", 100)
    batch_size: int = _doc("samples per batch", 1)
    num_workers: int = _doc("data processes (0 = in the training process)", 0)
    log_every_steps: int = _doc("steps per logged training row", 10)
    checkpoint_every_steps: int = _doc("steps per last.pt within an epoch (0 = per epoch)", 0)
    device: str = _doc("torch device", "auto", choices=("auto", "cpu", "cuda"))
    amp: str = _doc("bf16 autocast: auto = on CUDA", "auto", choices=("auto", "bf16", "none"))
    threads: int = _doc("torch CPU threads (0 = keep)", 0)
    init_weights: Optional[str] = _doc("shipped name or checkpoint to fine-tune (sha256 checked)")

    def __post_init__(self) -> None:
        for key in ("epochs", "batches_per_epoch", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} = {getattr(self, key)!r} must be ≥ 1")


@dataclass(frozen=True)
class ValidationSection(DrawSection):
    """``validation``: the fixed held-out set (spawn keys ``(1, i)``; sizes and sens cycled)."""

    seed: int = _doc("seed of the validation set", 1_000_003)
    n: int = _doc("samples", 16)
    every_epochs: int = _doc("epochs between validations", 1)
    batch_size: int = _doc("unused: validation runs one sample at a time", 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError(f"n = {self.n!r} must be ≥ 1")


@dataclass(frozen=True)
class TrainConfig:
    """A training run, as read from ``configs/<name>.yaml`` (one attribute per section)."""

    name: str = _doc("run name (default output folder runs/<name>)", "")
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    target: TargetSection = field(default_factory=TargetSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("'name' is missing (the run's name)")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable): tuples as lists, and of ``model`` and
        ``data`` only the fields that are set (elsewhere None is a value: off, none).
        """
        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, tuple) else v
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self)[1:]:
            section = getattr(self, f.name)
            given = _set(section) if isinstance(section, (ModelSection, DataSection)) \
                else vars(section)
            out[f.name] = {k: plain(v) for k, v in given.items()}
        return out

    def with_train(self, **changes: Any) -> TrainConfig:
        """A copy with ``train`` settings replaced (command-line overrides); ConfigError if
        one is out of range.
        """
        try:
            return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))
        except ValueError as exc:
            raise ConfigError(f"train.{exc}") from None


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Validate a nested dict (a parsed YAML config) and fill in defaults; ConfigError naming
    the section and key of an unknown key or a bad value.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a training config is a mapping, got {type(raw).__name__}")
    try:
        return parse_params(TrainConfig, raw, "config")
    except ChainError as exc:
        raise ConfigError(str(exc)) from None


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


def same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``b`` may resume ``a``: equal but for :data:`RESUME_MAY_CHANGE` settings."""
    return a.with_train(**{k: getattr(b.train, k) for k in RESUME_MAY_CHANGE}) == b
