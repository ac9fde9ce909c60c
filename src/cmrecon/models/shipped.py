"""Weights shipped in the repository (``weights/``), each with the sha256 it must have.

:data:`SHIPPED` is the registry: name → file (relative to :func:`weights_dir`), expected
sha256 and architecture. :func:`load_shipped` verifies the digest before anything is
deserialised, so a corrupted or swapped file is refused with
:class:`~cmrecon.models.weights.ChecksumMismatchError`. Nothing is ever downloaded.

See ``docs/model_card.md`` for how each entry was trained and how well it does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from cmrecon.models.weights import LoadedCheckpoint, WeightsError, load_checkpoint

__all__ = ["SHIPPED", "load_shipped", "resolve_weights", "shipped_path", "weights_dir"]

#: name → {"path": file under weights_dir(), "sha256": expected digest, "config": the model's
#: constructor arguments (PSIRNet or PsirRefine, as the checkpoint's model_class says)}.
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
        "sha256": "6d0c342080bc0ca50e2794cfa12b5ab9f0801424a51f2f4f9fbdd8e816b53219",
        "config": {"chans": 16, "pools": 3, "gain": 2.0, "window_px": 7, "reg": 16.0},
        "parameters": 481_412,
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
    """A shipped name or a checkpoint path → ``(path, expected sha256 or None)``.

    A name in :data:`SHIPPED` gives its file and recorded digest; anything else is taken as a
    path (its ``.sha256`` sidecar is then what :func:`~cmrecon.models.weights.load_checkpoint`
    verifies against).

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
