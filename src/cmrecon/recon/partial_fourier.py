"""Partial-Fourier reconstruction for asymmetric phase-encode sampling (e.g. 6/8, 7/8).

Three methods on coil (or combined) k-space whose acquired phase-encode rows form one
contiguous extent that misses one side of k-space:

- ``zerofill`` (default): inverse FFT of the zero-filled k-space (blurs along ky, keeps phase).
- ``homodyne``: Noll's homodyne detection — weight the asymmetric part ×2 with a smooth ramp
  across the symmetric centre, demodulate by the low-resolution phase of the symmetric centre,
  take the real part, and put the low-resolution phase back (so the image stays complex with
  the sign of the real part preserved, as PSIR needs).
- ``pocs``: projection onto convex sets — alternately impose the low-resolution phase and the
  acquired data (Haacke 1991).

References
----------
Noll DC, Nishimura DG, Macovski A. Homodyne detection in magnetic resonance imaging.
IEEE TMI 1991;10:154-163.
Haacke EM, Lindskog ED, Lin W. A fast, iterative, partial-Fourier technique capable of local
phase recovery. JMR 1991;92:126-145.
"""

from __future__ import annotations

import numpy as np

from cmrecon.recon.fft import fft2c, ifft2c

__all__ = ["acquired_extent", "partial_fourier"]


def acquired_extent(mask_pe: np.ndarray) -> tuple[int, int]:
    """First and last acquired phase-encode row (inclusive).

    Parameters
    ----------
    mask_pe : (ky,) bool
        Acquired rows (after GRAPPA filling, all rows within the extent should be present).

    Returns
    -------
    (int, int)

    Raises
    ------
    ValueError
        If no row is acquired.
    """
    rows = np.flatnonzero(np.asarray(mask_pe, dtype=bool))
    if rows.size == 0:
        raise ValueError("mask_pe has no acquired row")
    return int(rows[0]), int(rows[-1])


def _symmetric_half_width(first: int, last: int, ny: int) -> tuple[int, bool]:
    """Half width of the symmetric centre and whether the missing side is the low-ky side."""
    c = ny // 2
    low_missing = first > 0
    high_missing = last < ny - 1
    if low_missing and high_missing:
        # both sides truncated: symmetric about the centre up to the nearer edge
        return min(c - first, last - c), True
    if low_missing:
        return c - first, True
    return last - c, False


def partial_fourier(kspace: np.ndarray, mask_pe: np.ndarray, method: str = "zerofill",
                    iterations: int = 10, transition_px: int = 4) -> np.ndarray:
    """Image(s) from asymmetrically sampled phase-encode k-space.

    Parameters
    ----------
    kspace : (..., ky, kx) complex64
        k-space (coil or combined), zero outside the acquired rows; the DC row is ``ky // 2``.
    mask_pe : (ky,) bool
        Acquired rows; their extent ``[first, last]`` defines the asymmetry (rows inside the
        extent are treated as acquired).
    method : {"zerofill", "homodyne", "pocs"}
        Reconstruction method (see the module docstring).
    iterations : int
        POCS iterations.
    transition_px : int
        Half width in rows of the smooth (raised-cosine) transitions of the homodyne ramp and
        of the low-resolution phase window.

    Returns
    -------
    (..., y, x) complex64
        Images (centred, orthonormal FFT).

    Raises
    ------
    ValueError
        Unknown method, mask shape mismatch, or an extent that does not contain the k-space
        centre.

    References
    ----------
    Noll DC et al. IEEE TMI 1991;10:154; Haacke EM et al. JMR 1991;92:126.
    """
    kspace = np.asarray(kspace)
    if method not in ("zerofill", "homodyne", "pocs"):
        raise ValueError(f"method must be 'zerofill', 'homodyne' or 'pocs', got {method!r}")
    ny = kspace.shape[-2]
    mask_pe = np.asarray(mask_pe, dtype=bool)
    if mask_pe.shape != (ny,):
        raise ValueError(f"mask_pe shape {mask_pe.shape} must be ({ny},)")
    first, last = acquired_extent(mask_pe)
    c = ny // 2
    if not first <= c <= last:
        raise ValueError(f"acquired rows [{first}, {last}] do not contain the centre row {c}")
    acq = np.zeros(ny, bool)
    acq[first:last + 1] = True
    # rows outside the extent are zero (k-space zero-filled there): one copy only where they are not
    if kspace[..., :first, :].any() or kspace[..., last + 1:, :].any():
        data = kspace.astype(np.complex64)
        data[..., ~acq, :] = 0
    else:
        data = kspace.astype(np.complex64, copy=False)
    if method == "zerofill" or acq.all():
        return ifft2c(data)
    half, low_missing = _symmetric_half_width(first, last, ny)
    ky = np.arange(ny) - c
    tr = max(int(transition_px), 1)
    # low-resolution phase window: symmetric centre with raised-cosine edges
    lw = np.clip((half - np.abs(ky)) / float(tr), 0.0, 1.0)  # 1 inside, 0 at |ky| >= half
    lw = 0.5 - 0.5 * np.cos(np.pi * lw)
    phase_img = ifft2c((data * lw[:, None]).astype(np.complex64))
    phase = np.exp(1j * np.angle(phase_img)).astype(np.complex64)
    if method == "homodyne":
        # ramp: 0 on the missing side, 1 at the centre, 2 on the acquired-only side
        s = ky if low_missing else -ky
        ramp = 1.0 + np.clip(s / float(half), -1.0, 1.0)
        ramp[~acq] = 0.0
        img = ifft2c((data * ramp[:, None]).astype(np.complex64))
        return (np.real(img * phase.conj()) * phase).astype(np.complex64)
    # POCS
    img = ifft2c(data)
    for _ in range(int(iterations)):
        img = np.abs(img) * phase
        k = fft2c(img.astype(np.complex64))
        k[..., acq, :] = data[..., acq, :]
        img = ifft2c(k)
    return img.astype(np.complex64)
