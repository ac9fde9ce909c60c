"""The one device resolver of the models (serving and training)."""

from __future__ import annotations

import torch

from cmrecon.errors import StepError


def resolve_device(name: str, field: str = "device") -> torch.device:
    """``auto`` → ``cuda`` when CUDA is available, else ``cpu``; errors name the setting ``field``.

    Raises
    ------
    StepError
        ``cuda`` without CUDA, or a name other than auto, cpu, cuda.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StepError(f"{field} = 'cuda' but no CUDA device is available (use auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise StepError(f"{field} = {name!r}; one of auto, cpu, cuda")
    return torch.device(name)
