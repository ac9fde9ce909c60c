"""Cartesian k-space assembly and readout-oversampling removal (arrays only).

Axis convention: k-space ``(coils, ky, kx)`` with the DC sample at ``(ky // 2, kx // 2)``;
readouts are ``(coils, samples)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrecon.errors import StepError
from cmrecon.recon.fft import fft1c, ifft1c


def remove_readout_oversampling(readout: np.ndarray, n_out: int) -> np.ndarray:
    """Crop the centre ``n_out`` samples of the readout's image-space profile.

    For even ``samples`` and ``n_out`` (every oversampled readout in practice) no FFT shift is
    needed: with ``b = ifft(readout)`` (orthonormal, unshifted) the result is
    ``fft([b[:n_out/2], b[samples − n_out/2:]])`` — the ±1 modulations that the centring shifts
    amount to for even lengths cancel between the two transforms. This is
    ``fft1c(crop(ifft1c(readout)))`` to float32 rounding at two FFT calls (the second in
    place) instead of six numpy calls; odd lengths take the shifted route.

    Parameters
    ----------
    readout : (..., samples) complex64, centred (DC at ``samples // 2``); e.g. ``(coils, samples)``.
    n_out : samples to keep (e.g. ``samples // 2`` for 2x oversampling).

    Returns
    -------
    (..., n_out) complex64 readout with the same DC convention; orthonormal FFTs keep
    white noise at unit variance.
    """
    n = readout.shape[-1]
    if n_out > n or n_out < 1:
        raise StepError(f"cannot crop {n} readout samples to {n_out}")
    if n_out == n:
        return readout
    if n % 2 == 0 and n_out % 2 == 0:
        half = n_out // 2
        profile = np.fft.ifft(readout, axis=-1, norm="ortho")
        kept = np.empty(profile.shape[:-1] + (n_out,), profile.dtype)
        kept[..., :half] = profile[..., :half]
        kept[..., half:] = profile[..., n - half:]
        return np.fft.fft(kept, axis=-1, norm="ortho", out=kept)
    profile = ifft1c(readout, axis=-1)
    start = n // 2 - n_out // 2
    return fft1c(np.ascontiguousarray(profile[..., start:start + n_out]), axis=-1)


@dataclass(frozen=True)
class Geometry:
    """Encoded k-space geometry of one encoding space.

    Attributes
    ----------
    matrix : (ky, kx) encoded matrix (kx after any oversampling removal).
    center_line : the ``kspace_encode_step_1`` index of the k-space centre.
    """

    matrix: tuple[int, int]
    center_line: int


def kspace_row(line: int, center_line: int, ky: int) -> int:
    """Row of encode step ``line`` in a ``ky``-row k-space whose centre ``center_line`` is row ``ky // 2``.

    Raises
    ------
    StepError
        The line falls outside the matrix.
    """
    row = line - center_line + ky // 2
    if not 0 <= row < ky:
        raise StepError(f"encode step {line} falls outside the {ky}-row matrix (centre line {center_line})")
    return row


def place_readout(row: np.ndarray, readout: np.ndarray, center_sample: int) -> None:
    """Write ``readout`` into ``row`` so that sample ``center_sample`` lands on column ``kx // 2``.

    Parameters
    ----------
    row : (coils, kx) complex64, written in place (columns outside the readout keep their value:
        asymmetric echo and partial Fourier stay zero-filled).
    readout : (coils, n) complex64.
    center_sample : sample of k = 0 in the readout.

    Samples that fall off the matrix (an asymmetric echo as long as the matrix) are dropped.
    """
    kx, n = row.shape[-1], readout.shape[-1]
    col0 = kx // 2 - center_sample
    lo, hi = max(0, -col0), min(n, kx - col0)
    if hi > lo:
        row[:, col0 + lo:col0 + hi] = readout[:, lo:hi]


class KspaceAssembler:
    """Collect readouts of one image into a zero-filled ``(coils, ky, kx)`` k-space.

    Lines are placed by :func:`kspace_row` and :func:`place_readout` (asymmetric echo and partial
    Fourier are zero-filled).
    """

    def __init__(self, geometry: Geometry, coils: int) -> None:
        ky, kx = geometry.matrix
        self.geometry = geometry
        self.kspace = np.zeros((coils, ky, kx), np.complex64)
        self.sampled = np.zeros(ky, bool)

    def push(self, readout: np.ndarray, line: int, center_sample: int) -> None:
        """Place one readout ``(coils, samples)`` at encode step ``line``."""
        coils, ky, kx = self.kspace.shape
        if readout.shape[0] != coils:
            raise StepError(f"readout has {readout.shape[0]} coils, this image has {coils}")
        row = kspace_row(line, self.geometry.center_line, ky)
        place_readout(self.kspace[:, row], readout, center_sample)
        self.sampled[row] = True
