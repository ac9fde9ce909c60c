"""Weights shipped in the repository (``weights/``), and which weights a chain may name.

:data:`SHIPPED` is the registry: name → file (relative to :func:`weights_dir`), expected
sha256 and architecture. :func:`load_shipped` verifies the digest before anything is
deserialised, so a corrupted or swapped file is refused with
:class:`~cmrecon.models.weights.ChecksumMismatchError`. Nothing is ever downloaded.

A chain's ``weights`` parameter comes from whoever sent the chain (a client's inline XML), so
:func:`resolve_chain_weights` allows only a shipped name or a file inside a weights folder
(:func:`weights_folders`: the shipped folder, then ``cmrecon.runtime.Settings.weights_path``,
i.e. ``--weights-path`` / ``CMRECON_WEIGHTS_PATH``), and refuses anything else with one
message whatever the file system holds. :func:`resolve_weights` is the trusted form, for paths
an operator gives in a local command line or config (a training config's ``init_weights``).

See ``docs/model_card.md`` for how each entry was trained and how well it does.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from cmrecon.models.weights import LoadedCheckpoint, WeightsError, load_checkpoint

__all__ = ["SHIPPED", "load_shipped", "resolve_chain_weights", "resolve_weights", "shipped_path",
           "weights_dir", "weights_folders"]

#: name → {"path": file under weights_dir(), "sha256": expected digest, "config": the model's
#: constructor arguments (PSIRNet, PsirRefine or CineCRUNet, as the checkpoint's model_class says)}.
SHIPPED: Dict[str, Dict[str, Any]] = {
    "psirnet_cpu_small": {
        "path": "psirnet_cpu_small.pt",
        "sha256": "1cd54a02887205f8762984995e92a809c2789172b5488f1bf8391d19e4aaa642",
        "config": {"num_cascades": 5, "chans": 14, "sens_chans": 8, "pools": 3,
                   "sens_pools": 3, "eps": 1e-6, "drop_prob": 0.0, "window_px": 7,
                   "reg": 16.0},
        "parameters": 1_963_624,
        "card": "docs/model_card.md",
    },
    "psir_refine_cpu": {
        "path": "psir_refine_cpu.pt",
        "sha256": "be7ed36ac2ca9cabca8cc221c3507f64b1a6b0226cb3c8330a13aa97af0407c3",
        "config": {"chans": 16, "pools": 3, "gain": 2.0, "window_px": 7, "reg": 16.0,
                   "noise_channel": True, "trained_sizes": [[48, 64], [72, 96], [96, 128]],
                   "max_acceleration": 3},
        "parameters": 481_556,
        "card": "docs/model_card.md",
    },
    "cine_crunet_cpu": {
        "path": "cine_crunet_cpu.pt",
        "sha256": "dbe62005c6a7ac7c2b111171aa3320358ac7b684658e5148d33914c422e65b05",
        "config": {"chans": 16, "num_cascades": 4},
        "parameters": 223_368,
        "card": "docs/model_card.md",
    },
}


def weights_dir() -> Path:
    """Where shipped weights live: ``$CMRECON_WEIGHTS``, else the data package ``cmrecon_weights``."""
    from cmrecon.runtime import data_dir
    return data_dir("CMRECON_WEIGHTS", "cmrecon_weights")


def shipped_path(name: str) -> Path:
    """File of shipped weights ``name``.

    Raises
    ------
    WeightsError
        Unknown name (the message lists the known ones).
    """
    if name not in SHIPPED:
        raise WeightsError(f"unknown shipped weights {name!r}; known: {', '.join(sorted(SHIPPED))}")
    return weights_dir() / SHIPPED[name]["path"]


def resolve_weights(spec: Union[str, os.PathLike]) -> Tuple[Path, Optional[str]]:
    """A shipped name or any checkpoint path → ``(path, expected sha256 or None)`` (trusted).

    A name in :data:`SHIPPED` gives its file and recorded digest; anything else is taken as a
    path (its ``.sha256`` sidecar is then what :func:`~cmrecon.models.weights.load_checkpoint`
    verifies against). For paths the operator gave (a training config); weights named by a
    chain go through :func:`resolve_chain_weights`.

    Raises
    ------
    WeightsError
        A spec that is neither a shipped name nor an existing file.
    """
    text = str(spec)
    if text in SHIPPED:
        return shipped_path(text), SHIPPED[text]["sha256"]
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights={text!r} is neither a shipped name "
                           f"({', '.join(sorted(SHIPPED))}) nor an existing checkpoint file")
    return path, None


def weights_folders() -> Tuple[Path, ...]:
    """Folders whose files a chain may name as weights, each with symlinks and ``..`` resolved.

    The shipped folder (:func:`weights_dir`), then the process's configured folders
    (:func:`cmrecon.runtime.current`'s ``weights_path``: ``cmrecon serve --weights-path`` or
    ``CMRECON_WEIGHTS_PATH``, ``os.pathsep``-separated).
    """
    from cmrecon.runtime import current
    folders = (weights_dir(), *(Path(f) for f in current().weights_path))
    return tuple(Path(os.path.realpath(f)) for f in folders)


def resolve_chain_weights(spec: Union[str, os.PathLike]) -> Tuple[Path, Optional[str]]:
    """Weights named by a chain → ``(real path, expected sha256 or None)``, or refused.

    Allowed: a name in :data:`SHIPPED`, or a path (absolute, or relative to the working folder;
    ``~`` expanded) whose real location, symlinks and ``..`` resolved, is a regular file inside
    one of :func:`weights_folders`. Nothing outside those folders is opened or examined (beyond
    resolving the path's symlinks): a refusal reads the same whether the file exists or not.

    Parameters
    ----------
    spec : str or PathLike
        The step's ``weights`` parameter, as the chain gave it.

    Returns
    -------
    tuple of (Path, str or None)
        The resolved file (load this one: a symlink swapped later changes nothing) and the
        registry's digest for a shipped name (None: the caller's pin or the file's sidecar).

    Raises
    ------
    WeightsError
        Anything else, with one message naming ``spec`` and the shipped names only.
    """
    text = str(spec)
    if text in SHIPPED:
        return shipped_path(text), SHIPPED[text]["sha256"]
    folders = weights_folders()
    try:
        real = Path(os.path.realpath(Path(text).expanduser())) if text.strip() else None
    except (OSError, ValueError):   # a NUL byte, a name too long
        real = None
    if real is not None and any(real.is_relative_to(f) for f in folders):
        try:
            if stat.S_ISREG(real.stat().st_mode):
                return real, None
        except OSError:
            pass
    logging.getLogger("cmrecon.models.shipped").warning(
        "weights %r refused: not a shipped name nor a file inside the weights folders %s",
        text, ", ".join(str(f) for f in folders))
    raise WeightsError(f"weights={text!r} refused: a chain may name shipped weights "
                       f"({', '.join(sorted(SHIPPED))}) or a file inside the weights "
                       f"folders (cmrecon serve --weights-path, CMRECON_WEIGHTS_PATH)")


def load_shipped(name: str, map_location: Union[str, Any] = "cpu") -> LoadedCheckpoint:
    """Load shipped weights ``name`` after checking the file's sha256 against :data:`SHIPPED`.

    Parameters
    ----------
    name : str
        Key of :data:`SHIPPED` (e.g. ``"psirnet_cpu_small"``).
    map_location : str or torch.device
        Device of the rebuilt model.

    Returns
    -------
    LoadedCheckpoint
        Model in eval mode, its config, stored metrics and the verified digest.

    Raises
    ------
    ChecksumMismatchError
        The file's digest differs from the registry's.
    WeightsError
        Unknown name, missing file, or an architecture differing from the registry's config.
    """
    path = shipped_path(name)
    entry = SHIPPED[name]
    loaded = load_checkpoint(path, expected_sha256=entry["sha256"], map_location=map_location)
    if loaded.config != entry["config"]:
        raise WeightsError(f"shipped weights {name!r}: architecture {loaded.config} differs from "
                           f"the registry's {entry['config']}")
    return loaded
