"""Box (moving-average) filter over the last two axes: one for numpy arrays and torch tensors.

For PSIR surface-coil correction (circular boundary) and Walsh/Inati coil maps (symmetric). numpy
runs scipy's ``uniform_filter``; torch the published PSIRNet head's ``conv2d`` with a ``1/w²``
kernel (so the head, its gradients and the recorded training targets stay bit for bit).
"""

from __future__ import annotations

import functools

import numpy as np

from cmrecon.recon.namespace import array_namespace


@functools.cache
def box_kernel(xp):
    """:func:`box_mean` over the namespace ``xp`` without input checks (torch's: TorchScript)."""
    if xp is np:
        from scipy.ndimage import uniform_filter  # here: scipy.ndimage costs start-up time

        def box_mean_scipy(x, window_px: int, boundary: str):
            mode = "wrap" if boundary == "circular" else "reflect"
            return uniform_filter(x, size=(1,) * (x.ndim - 2) + (window_px, window_px), mode=mode)

        return box_mean_scipy
    functional = xp.nn.functional

    def box_mean(x, window_px: int, boundary: str):
        h, shape = window_px // 2, x.shape
        x = x.reshape(-1, 1, shape[-2], shape[-1])
        if boundary == "circular":
            x = functional.pad(x, [h, h, h, h], mode="circular")
        else:
            x = xp.cat((x[..., :h, :].flip([-2]), x, x[..., shape[-2] - h:, :].flip([-2])), -2)
            x = xp.cat((x[..., :h].flip([-1]), x, x[..., shape[-1] - h:].flip([-1])), -1)
        kernel = xp.full((1, 1, window_px, window_px), 1.0 / float(window_px * window_px),
                         dtype=x.dtype, device=x.device)
        return functional.conv2d(x, kernel).reshape(shape)

    return box_mean


def box_mean(x, window_px: int = 7, boundary: str = "circular"):
    """Mean over a ``window_px × window_px`` box on the last two axes.

    Parameters
    ----------
    x : (..., y, x) real or complex, numpy array or torch tensor
    window_px : int
        Odd box side, pixels, at most ``2·min(y, x) + 1``.
    boundary : {"circular", "symmetric"}
        Beyond the edge: wrap around (scipy ``wrap``, torch ``circular``), or mirror with the
        edge sample repeated, ``b a | a b c | c b`` (scipy ``reflect``, numpy ``symmetric``).

    Returns
    -------
    (..., y, x), same kind and dtype as ``x``.

    Raises
    ------
    ValueError
        Bad ``window_px`` (see :func:`check_window`) or unknown ``boundary``.
    """
    if boundary not in ("circular", "symmetric"):
        raise ValueError(f"boundary must be 'circular' or 'symmetric', got {boundary!r}")
    return box_kernel(array_namespace(x))(x, check_window(window_px, x.shape[-2:]), boundary)


def check_window(window_px: int, shape: tuple[int, int] | None = None) -> int:
    """``window_px`` as an int; ValueError unless a positive odd side ≤ ``2·min(shape) + 1``."""
    if int(window_px) != window_px or window_px < 1 or window_px % 2 == 0:
        raise ValueError(f"window_px must be a positive odd integer, got {window_px!r}")
    if shape is not None and window_px > 2 * min(shape) + 1:
        raise ValueError(f"window_px={window_px} exceeds 2·min(image shape)+1 for an image of "
                         f"shape {tuple(shape)}")
    return int(window_px)
