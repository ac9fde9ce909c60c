"""The array library of an argument: numpy for arrays, torch for tensors (imported only then).

Numerics the TorchScript model calls are built by a factory ``f(xp)`` closing over ``xp``:
TorchScript resolves ``xp.fft.fft2`` in a closure to ``torch.fft.fft2``: ``f(torch)`` is scriptable.
"""

import numpy as np


def array_namespace(*arrays):
    """``torch`` when an argument is a torch tensor (told by its type's module), else ``numpy``."""
    if any(type(a).__module__.partition(".")[0] == "torch" for a in arrays):
        import torch
        return torch
    return np
