"""Weights I/O: published TorchScript checkpoints and our own sha256-checked checkpoint format.

* :func:`load_torchscript` / :func:`copy_torchscript_state`: load a TorchScript file (e.g. the
  published ``PSIRNet.pt``, ~3.4 GB, not downloadable here) and copy its state dict into an
  eager :class:`~cmrecon.models.psirnet.PSIRNet` whose module names match.
* :func:`save_checkpoint` / :func:`load_checkpoint`: our format, a ``torch.save`` payload
  ``{"format", "model_class", "config", "metrics", "state_dict", "torch_version"}`` next to a
  sidecar ``<path>.sha256`` in ``sha256sum`` format (``<hex>  <file name>``). Loading verifies
  the digest and rebuilds the model from ``config``.
* :func:`load_verified`: either format, told apart by its content, for the model cache.

Every loader opens the file once, hashes it and compares the digest (the caller's pin and the
sidecar, whichever exist; refused when neither does) before anything is deserialised; our own
format is then read from that same open file, so a file renamed over it after the check is not
what gets loaded. Nothing here downloads anything; paths are always given by the caller.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, Optional, Union

import torch
from torch import nn

from cmrecon.errors import CmreconError
from cmrecon.models.psirnet import PSIRNet

__all__ = ["CHECKPOINT_FORMAT", "ChecksumMismatchError", "LoadedCheckpoint", "WeightsError",
           "copy_torchscript_state", "file_sha256", "is_torchscript", "load_checkpoint",
           "load_published", "load_published_verified", "load_torchscript", "load_verified",
           "save_checkpoint", "sidecar_path"]

#: Format tag stored in every checkpoint this module writes.
CHECKPOINT_FORMAT = "cmrecon.psirnet.checkpoint/1"

PathLike = Union[str, os.PathLike]
MapLocation = Union[str, torch.device, None]


class WeightsError(CmreconError):
    """A checkpoint that cannot be loaded: missing file, wrong format, key or shape mismatch."""


class ChecksumMismatchError(WeightsError):
    """A checkpoint file whose sha256 differs from the expected digest."""


@dataclass
class LoadedCheckpoint:
    """A checkpoint read by :func:`load_checkpoint`.

    Attributes
    ----------
    model : PSIRNet
        Rebuilt from ``config`` with the stored weights, in eval mode.
    config : dict
        Constructor arguments (``PSIRNet(**config)``).
    metrics : dict
        Metrics stored at save time (e.g. validation SSIM).
    sha256 : str
        Verified hex digest of the checkpoint file.
    """

    model: PSIRNet
    config: Dict[str, Any]
    metrics: Dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def _stream_sha256(fh: IO[bytes], chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of an open binary file from its start, read in chunks."""
    digest = hashlib.sha256()
    fh.seek(0)
    for chunk in iter(lambda: fh.read(chunk_bytes), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks (checkpoints can be GBs)."""
    with open(path, "rb") as fh:
        return _stream_sha256(fh, chunk_bytes)


def sidecar_path(path: PathLike) -> Path:
    """Path of the sha256 sidecar of checkpoint ``path``: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _require_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: path={str(path)!r}")
    return path


def load_torchscript(path: PathLike, map_location: MapLocation = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript module (e.g. the published ``PSIRNet.pt``) with ``torch.jit.load``.

    Parameters
    ----------
    path : str or PathLike
        TorchScript archive.
    map_location : str, torch.device or None
        Where to put its tensors ("cpu", "cuda:0"...).

    Returns
    -------
    torch.jit.ScriptModule
        The scripted module, in eval mode.

    Raises
    ------
    WeightsError
        If the file is missing or is not a TorchScript archive.
    """
    path = _require_file(path)
    try:
        module = torch.jit.load(str(path), map_location=map_location)
    except RuntimeError as exc:  # torch reports bad archives as RuntimeError
        raise WeightsError(f"not a TorchScript archive: path={str(path)!r} ({exc})") from exc
    return module.eval()


def copy_torchscript_state(scripted: nn.Module, eager_model: nn.Module) -> nn.Module:
    """Copy every parameter and buffer of ``scripted`` into ``eager_model`` (strict).

    Parameters
    ----------
    scripted : torch.jit.ScriptModule or nn.Module
        Source module, e.g. from :func:`load_torchscript`.
    eager_model : nn.Module
        Destination with the same module names and shapes (e.g. ``PSIRNet`` built with the
        matching preset).

    Returns
    -------
    nn.Module
        ``eager_model``, with the copied weights.

    Raises
    ------
    WeightsError
        If keys are missing or unexpected, or shapes differ; the message lists them.
    """
    source = scripted.state_dict()
    target = eager_model.state_dict()
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    shapes = sorted(f"{k}: checkpoint {tuple(source[k].shape)} vs model {tuple(target[k].shape)}"
                    for k in set(source) & set(target) if source[k].shape != target[k].shape)
    if missing or unexpected or shapes:
        def listing(name, keys, limit=20):
            more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
            return f"{name} ({len(keys)}): {keys[:limit]}{more}"
        raise WeightsError(
            "state dict does not match the model; "
            + "; ".join(listing(n, k) for n, k in (("missing keys", missing),
                                                   ("unexpected keys", unexpected),
                                                   ("shape mismatches", shapes)) if k))
    # assign: the eager model takes the scripted module's tensors (no clone), so once the
    # scripted module is dropped one copy of the weights remains (the published 845 M
    # parameters: 3.4 GB, not 3 × 3.4 GB)
    eager_model.load_state_dict({k: v.detach() for k, v in source.items()}, strict=True, assign=True)
    return eager_model


def load_published(path: PathLike, map_location: MapLocation = "cpu",
                   config: Optional[Dict[str, Any]] = None) -> PSIRNet:
    """Load a TorchScript PSIRNet (e.g. the published ``PSIRNet.pt``) into an eager model.

    The eager model is built on the ``meta`` device and takes the scripted module's tensors
    (:func:`copy_torchscript_state`, no copy), so one copy of the weights stays in memory (the
    published 845,426,378 parameters: 3.4 GB).

    Parameters
    ----------
    path : str or PathLike
        TorchScript archive.
    map_location : str or torch.device
        Device of both copies.
    config : dict, optional
        ``PSIRNet`` constructor arguments; default the ``"published"`` preset.

    Returns
    -------
    PSIRNet
        Eager model in eval mode.

    Raises
    ------
    WeightsError
        If the file is missing, not TorchScript, or its state dict does not match ``config``.
    """
    scripted = load_torchscript(path, map_location=map_location)
    with torch.device("meta"):
        model = PSIRNet.from_config(config) if config is not None \
            else PSIRNet.from_preset("published")
    model = copy_torchscript_state(scripted, model).eval()
    del scripted
    return model


def _verify(fh: IO[bytes], path: Path, expected_sha256: Optional[str]) -> str:
    """The sha256 of open file ``fh`` (at ``path``) once it equals every digest there is.

    The digests are ``expected_sha256`` (a registry's or the chain's pin) and the ``.sha256``
    sidecar; without either the file is refused unread.

    Raises
    ------
    WeightsError
        No digest to check against, or a malformed sidecar.
    ChecksumMismatchError
        The file's sha256 differs from one of them.
    """
    expected = (expected_sha256 or "").lower() or None
    recorded = _read_sidecar(path)
    if expected is None and recorded is None:
        raise WeightsError(f"cannot verify weights path={str(path)!r}: pin their sha256 "
                           f"(psirnet_recon weights_sha256, expected_sha256) or write a "
                           f"{sidecar_path(path).name!r} sidecar; nothing is loaded unverified")
    actual = _stream_sha256(fh)
    for source, want in (("expected_sha256", expected), ("sidecar", recorded)):
        if want is not None and want != actual:
            raise ChecksumMismatchError(
                f"weights path={str(path)!r} have sha256 {actual}, but {source} says {want}")
    return actual


def _published_from(path: Path, digest: str, preset: str,
                    map_location: MapLocation) -> LoadedCheckpoint:
    """A verified TorchScript PSIRNet built with ``preset``."""
    from cmrecon.models.psirnet import PRESETS
    if preset not in PRESETS:
        raise WeightsError(f"preset {preset!r} is unknown; known: {', '.join(sorted(PRESETS))}")
    model = load_published(path, map_location=map_location, config=dict(PRESETS[preset]))
    return LoadedCheckpoint(model=model, config=model.model_config(), metrics={}, sha256=digest)


def load_published_verified(path: PathLike, expected_sha256: Optional[str], preset: str = "published",
                            map_location: MapLocation = "cpu") -> LoadedCheckpoint:
    """A TorchScript PSIRNet (the published file) loaded only after its digest is checked.

    The digest must equal ``expected_sha256`` and the ``.sha256`` sidecar, whichever exist;
    without either the file is refused (nothing is deserialised before it is verified).

    Raises
    ------
    WeightsError
        Unknown preset, or no digest to check against.
    ChecksumMismatchError
        The file's sha256 differs.
    """
    path = _require_file(path)
    with open(path, "rb") as fh:
        digest = _verify(fh, path, expected_sha256)
    return _published_from(path, digest, preset, map_location)


def is_torchscript(path: Union[PathLike, IO[bytes]]) -> bool:
    """True when ``path`` (a file name or an open binary file) is a TorchScript archive (a zip
    holding ``constants.pkl`` and ``code/``; only the zip's directory is read).
    """
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _plain(value: Any, name: str) -> Any:
    """Plain Python copy of ``value`` (loadable with ``torch.load(weights_only=True)``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return value.item()
    raise WeightsError(f"{name} has a value of type {type(value).__name__} that a checkpoint "
                       f"cannot store; use plain numbers, strings, lists or dicts")


def save_checkpoint(path: PathLike, model: PSIRNet, config: Dict[str, Any],
                    metrics: Optional[Dict[str, Any]] = None) -> str:
    """Write a checkpoint ``path`` and its sha256 sidecar ``<path>.sha256``.

    Both files are written to temporaries and renamed, so a crash leaves no half checkpoint.

    Parameters
    ----------
    path : str or PathLike
        Destination ``.pt`` file.
    model : PSIRNet
        Model whose ``state_dict`` is stored (moved to CPU in the file).
    config : dict
        Constructor arguments that rebuild ``model`` (``model.model_config()``); plain Python
        values only.
    metrics : dict, optional
        Plain-valued metrics (floats, ints, strings) to store alongside.

    Returns
    -------
    str
        Hex sha256 of the written checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "config": _plain(dict(config), "config"),
        "metrics": _plain(dict(metrics or {}), "metrics"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "torch_version": str(torch.__version__),
    }
    from cmrecon.io.atomic import atomic_path
    atomic_torch_save(payload, path)
    digest = file_sha256(path)
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")
    return digest


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path``, whole or not at all, and byte-reproducible.

    Written through :func:`cmrecon.io.atomic.atomic_path` and an open file: torch names the zip
    archive's records after the file it is given, so saving to the random temporary name made two
    saves of the same weights differ in their bytes (and sha256).

    Raises
    ------
    OutputError
        The file cannot be written.
    """
    from cmrecon.io.atomic import atomic_path
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def _read_sidecar(path: Path) -> Optional[str]:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    fields = side.read_text().split()
    if not fields or len(fields[0]) != 64:
        raise WeightsError(f"malformed sha256 sidecar: path={str(side)!r}")
    return fields[0].lower()


def _checkpoint_from(fh: IO[bytes], path: Path, digest: str,
                     map_location: MapLocation) -> LoadedCheckpoint:
    """Our checkpoint format read from the verified open file ``fh`` (tensors only)."""
    fh.seek(0)
    payload = torch.load(fh, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise WeightsError(f"unsupported checkpoint format={fmt!r} in path={str(path)!r}; "
                           f"expected {CHECKPOINT_FORMAT!r}")
    from cmrecon.models.crunet import CineCRUNet
    from cmrecon.models.refine import PsirRefine
    classes = {cls.__name__: cls for cls in (PSIRNet, PsirRefine, CineCRUNet)}
    cls = classes.get(payload.get("model_class"))
    if cls is None:
        raise WeightsError(f"checkpoint model_class={payload.get('model_class')!r} is not one of "
                           f"{', '.join(classes)}: path={str(path)!r}")
    config = dict(payload["config"])
    with torch.device("meta"):
        model = cls.from_config(config)
    model = model.to_empty(device=map_location if map_location is not None else "cpu")
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"checkpoint weights do not match its config in "
                           f"path={str(path)!r}: {exc}") from exc
    return LoadedCheckpoint(model=model.eval(), config=config,
                            metrics=dict(payload.get("metrics", {})), sha256=digest)


def load_checkpoint(path: PathLike, expected_sha256: Optional[str] = None,
                    map_location: MapLocation = "cpu") -> LoadedCheckpoint:
    """Verify and load a checkpoint written by :func:`save_checkpoint`.

    The file's sha256 must equal ``expected_sha256`` when given, and the sidecar's digest when
    the sidecar exists; at least one of the two must be available. The payload is then read
    from the file that was hashed, with ``torch.load(weights_only=True)`` (tensors and plain
    values only: no pickled code runs).

    Parameters
    ----------
    path : str or PathLike
        Checkpoint ``.pt`` file.
    expected_sha256 : str, optional
        Hex digest the file must have (e.g. from a model registry or a config file).
    map_location : str, torch.device or None
        Device for the loaded tensors and the rebuilt model.

    Returns
    -------
    LoadedCheckpoint
        Model (eval mode), config, metrics and the verified digest.

    Raises
    ------
    ChecksumMismatchError
        If the digest differs from ``expected_sha256`` or from the sidecar.
    WeightsError
        If the file is missing, there is nothing to verify against, or the payload is not a
        checkpoint of this format.
    """
    path = _require_file(path)
    with open(path, "rb") as fh:
        digest = _verify(fh, path, expected_sha256)
        return _checkpoint_from(fh, path, digest, map_location)


def load_verified(path: PathLike, expected_sha256: Optional[str] = None, preset: str = "published",
                  map_location: MapLocation = "cpu") -> LoadedCheckpoint:
    """Weights of either format, verified once before anything is deserialised.

    The file is hashed and checked (:func:`load_checkpoint`'s rules), then told apart by its
    content: a TorchScript archive (:func:`is_torchscript`) is built with ``preset``
    (:func:`load_published_verified`), anything else must be our checkpoint format.

    Parameters
    ----------
    path : str or PathLike
        Weights file.
    expected_sha256 : str, optional
        Digest it must have (besides its sidecar's, when there is one).
    preset : str
        :data:`cmrecon.models.psirnet.PRESETS` name of a TorchScript file's architecture.
    map_location : str, torch.device or None
        Device of the rebuilt model.

    Returns
    -------
    LoadedCheckpoint

    Raises
    ------
    WeightsError, ChecksumMismatchError
        As :func:`load_checkpoint`; an unknown preset for a TorchScript file.
    """
    path = _require_file(path)
    with open(path, "rb") as fh:
        digest = _verify(fh, path, expected_sha256)
        if not is_torchscript(fh):
            return _checkpoint_from(fh, path, digest, map_location)
    return _published_from(path, digest, preset, map_location)
