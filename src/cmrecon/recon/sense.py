"""SENSE encoding ``E = M·F·S`` (numpy or torch) and Cartesian SENSE: unfolding and CG-SENSE.

:func:`expand` (``S``), its adjoint :func:`reduce` and :func:`masked` (``M``) take numpy arrays or
torch tensors (the network calls them too); coils are axis -3, kept with size 1 by :func:`reduce`.

Both reconstructions solve the regularised least-squares problem
``ρ = argmin Σ_c ||M·F(S_c ρ) − y_c||² + λ||ρ||²`` for the coil-combined image ρ; unfolding does
it exactly pixel group by pixel group when the acquired rows form a regular lattice ``ky0 + R·n``
and ``R`` divides the number of rows, CG-SENSE does it iteratively for any mask (embedded ACS,
partial Fourier). With coil maps normalised to ``Σ|S|² = 1`` and an orthonormal FFT, ρ is in the
units of :func:`coil_combine` applied to fully sampled coil images (SNR units after
prewhitening).

References
----------
Pruessmann KP, Weiger M, Scheidegger MB, Boesiger P. SENSE: sensitivity encoding for fast MRI.
MRM 1999;42:952-962.
Pruessmann KP, Weiger M, Börnert P, Boesiger P. Advances in sensitivity encoding with arbitrary
k-space trajectories. MRM 2001;46:638-651 (CG-SENSE).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cmrecon.errors import Cancelled
from cmrecon.recon.fft import fft2c, ifft2c
from cmrecon.recon.grappa import lattice_offset
from cmrecon.recon.namespace import array_namespace

__all__ = ["cg_sense", "coil_combine", "expand", "masked", "reduce", "sense", "sense_unfold"]


def expand(image, maps):
    """Coil images from a coil-combined image: ``S_c · x``.

    Parameters
    ----------
    image : (..., 1, y, x) complex64, numpy array or torch tensor
    maps : (..., coils, y, x) complex64, same kind: coil sensitivities

    Returns
    -------
    (..., coils, y, x) complex64
    """
    return maps * image


def reduce(coil_images, maps):
    """Adjoint of :func:`expand`: ``Σ_c conj(S_c) · x_c`` (SENSE/Roemer combination).

    Parameters
    ----------
    coil_images, maps : (..., coils, y, x) complex64, numpy arrays or torch tensors

    Returns
    -------
    (..., 1, y, x) complex64; the image itself when ``Σ_c |S_c|² = 1``.
    """
    return (maps.conj() * coil_images).sum(-3)[..., None, :, :]  # -3 = COIL_AXIS, kept


def masked(kspace, mask):
    """Sampling projection ``M``: zero k-space where ``mask`` is False (self-adjoint).

    Parameters
    ----------
    kspace : (..., coils, ky, kx) complex64, numpy array or torch tensor
    mask : bool, same kind, broadcastable to ``kspace``, e.g. ``(B, 1, ky, kx)`` or ``(1, ky, 1)``

    Returns
    -------
    (..., coils, ky, kx) complex64, exactly 0 where not sampled.
    """
    return array_namespace(kspace).where(mask, kspace, 0)


def _check(kspace: np.ndarray, maps: np.ndarray, mask_pe: np.ndarray):
    kspace = np.asarray(kspace)
    maps = np.asarray(maps)
    mask_pe = np.asarray(mask_pe, dtype=bool)
    if kspace.ndim != 3 or not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be (coils, ky, kx) complex, got {kspace.shape} "
                         f"{kspace.dtype}")
    if maps.shape != kspace.shape:
        raise ValueError(f"maps shape {maps.shape} differs from kspace shape {kspace.shape}")
    if mask_pe.shape != (kspace.shape[1],):
        raise ValueError(f"mask_pe shape {mask_pe.shape} must be ({kspace.shape[1]},)")
    return kspace, maps, mask_pe


def coil_combine(images: np.ndarray, maps: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Optimal (matched-filter) coil combination ``Σ_c conj(S_c)·x_c / Σ_c |S_c|²``.

    Parameters
    ----------
    images : (coils, y, x) complex64
        Coil images (SNR units after prewhitening).
    maps : (coils, y, x) complex64
        Coil sensitivities.
    eps : float
        Pixels where ``Σ|S|² <= eps`` (e.g. outside an ESPIRiT mask) are set to 0.

    Returns
    -------
    (y, x) complex64
        Combined image; with ``Σ|S|² = 1`` and unit white noise per coil, noise σ = 1.

    Raises
    ------
    ValueError
        If the shapes differ.

    References
    ----------
    Roemer PB et al. The NMR phased array. MRM 1990;16:192-225; Walsh et al. MRM 2000.
    """
    images = np.asarray(images)
    maps = np.asarray(maps)
    if images.shape != maps.shape:
        raise ValueError(f"images shape {images.shape} differs from maps shape {maps.shape}")
    num = reduce(images, maps)[0]
    den = np.sum(np.abs(maps) ** 2, axis=0)
    out = np.where(den > eps, num / np.where(den > eps, den, 1.0), 0)
    return out.astype(np.complex64)


def sense_unfold(kspace: np.ndarray, maps: np.ndarray, mask_pe: np.ndarray, R: int,
                 lam: float = 1e-3) -> np.ndarray:
    """Regularised Cartesian SENSE unfolding in image space (Pruessmann 1999).

    Only rows on the acquired lattice ``ky0 + R·n`` are used (extra embedded-ACS rows are
    ignored; use :func:`cg_sense` to exploit them). The aliasing weights are taken from the
    lattice's point-spread function, so any offset ``ky0`` is handled. For each group of R
    pixels ``y0 + m·ny/R`` the ``coils × R`` system is solved with Tikhonov weight ``lam``
    (absolute, relative to ``Σ|S|² = 1``).

    Parameters
    ----------
    kspace : (coils, ky, kx) complex64
        Undersampled k-space, zero where not acquired.
    maps : (coils, y, x) complex64
        Coil sensitivities, normalised ``Σ_c |S_c|² = 1`` inside the object.
    mask_pe : (ky,) bool
        Acquired phase-encode rows.
    R : int
        Acceleration 1..4; ``ky`` must be divisible by R.
    lam : float
        Tikhonov regularisation (≥ 0), in units of ``Σ|S|²``.

    Returns
    -------
    (y, x) complex64
        Coil-combined image (units of :func:`coil_combine`).

    Raises
    ------
    ValueError
        Shape mismatches, R outside 1..4, ``ky % R != 0``, negative ``lam``, or a lattice row
        missing (partial Fourier — use :func:`cg_sense`).

    References
    ----------
    Pruessmann KP et al. MRM 1999;42:952-962.
    """
    kspace, maps, mask_pe = _check(kspace, maps, mask_pe)
    if int(R) != R or not 1 <= R <= 4:
        raise ValueError(f"R must be an integer in 1..4, got {R!r}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    nc, ny, nx = kspace.shape
    R = int(R)
    if ny % R:
        raise ValueError(f"ky={ny} is not divisible by R={R}; use cg_sense")
    ky0 = lattice_offset(mask_pe, R)
    lattice = np.zeros(ny, bool)
    lattice[ky0::R] = True
    if not mask_pe[lattice].all():
        raise ValueError("lattice rows are missing from mask_pe (partial Fourier?); use cg_sense")
    aliased = ifft2c((kspace * lattice[None, :, None]).astype(np.complex64))
    psf = np.fft.ifft(np.fft.ifftshift(lattice.astype(np.complex128)))  # a = psf ⊛ x along y
    step = ny // R
    # a[y0 + j·step] = Σ_m psf[(j − m)·step] x[y0 + m·step]; use j = 0
    coef = np.array([psf[(-m * step) % ny] for m in range(R)])  # (R,)
    a = aliased[:, :step, :]  # (c, step, nx)
    enc = np.stack([maps[:, m * step:(m + 1) * step, :] for m in range(R)], axis=-1)
    enc = enc * coef[None, None, None, :]  # (c, step, nx, R)
    e = np.moveaxis(enc, 0, 2).reshape(step * nx, nc, R).astype(np.complex128)
    b = np.moveaxis(a, 0, -1).reshape(step * nx, nc).astype(np.complex128)
    eh = np.conj(np.swapaxes(e, 1, 2))
    gram = eh @ e + lam * np.eye(R)[None]
    rhs = eh @ b[..., None]
    # pixels where the whole group has no sensitivity (lam = 0 outside maps) give a singular
    # system: solve with a tiny ridge there only
    sing = np.abs(np.linalg.det(gram)) < 1e-20
    gram[sing] += 1e-9 * np.eye(R)
    rho = np.linalg.solve(gram, rhs)[..., 0].reshape(step, nx, R)
    out = np.concatenate([rho[:, :, m] for m in range(R)], axis=0)
    return out.astype(np.complex64)


def cg_sense(kspace: np.ndarray, maps: np.ndarray, mask_pe: np.ndarray, lam: float = 1e-3,
             iterations: int = 30, tol: float = 1e-6, x0: np.ndarray | None = None,
             should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """CG-SENSE: conjugate gradients on the regularised normal equations, any row mask.

    Solves ``(E^H E + λI) ρ = E^H y`` with ``E ρ = M·F(S ρ)``.

    Parameters
    ----------
    kspace : (coils, ky, kx) complex64
        k-space, zero where not acquired.
    maps : (coils, y, x) complex64
        Coil sensitivities (``Σ|S|² = 1``).
    mask_pe : (ky,) bool
        Acquired phase-encode rows (any pattern).
    lam : float
        Tikhonov weight (≥ 0), units of ``Σ|S|²``.
    iterations : int
        Maximum CG iterations.
    tol : float
        Stop when the residual norm falls below ``tol`` times the initial one.
    x0 : (y, x) complex64, optional
        Starting image (zero when None).
    should_stop : callable() -> bool, optional
        Asked before every iteration; True stops with :class:`~cmrecon.errors.Cancelled`
        (a server passes its session's cancel flag).

    Returns
    -------
    (y, x) complex64
        Coil-combined image.

    Raises
    ------
    ValueError
        Shape mismatches or negative ``lam``.
    Cancelled
        ``should_stop()`` returned True.

    References
    ----------
    Pruessmann KP et al. MRM 2001;46:638-651.
    """
    kspace, maps, mask_pe = _check(kspace, maps, mask_pe)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    m = mask_pe[None, :, None]
    maps = maps.astype(np.complex64)

    def normal(x):  # (E^H E + λI) x on (1, y, x) images
        return reduce(ifft2c(masked(fft2c(expand(x, maps)), m)), maps) + lam * x

    b = reduce(ifft2c(masked(kspace.astype(np.complex64), m)), maps)
    x = np.zeros_like(b) if x0 is None else np.asarray(x0, dtype=np.complex64)[None].copy()
    r = b - normal(x)
    p = r.copy()
    rr = float(np.vdot(r, r).real)
    r0 = np.sqrt(rr) + 1e-30
    for done in range(iterations):
        if np.sqrt(rr) < tol * r0:
            break
        if should_stop is not None and should_stop():
            raise Cancelled(f"CG-SENSE stopped as asked after {done} of at most {iterations} iterations")
        q = normal(p)
        alpha = rr / float(np.vdot(p, q).real)
        x = x + alpha * p
        r = r - alpha * q
        rr_new = float(np.vdot(r, r).real)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x[0].astype(np.complex64)


def sense(kspace: np.ndarray, maps: np.ndarray, mask_pe: np.ndarray, R: int,
          lam: float = 1e-3, method: str = "auto", iterations: int = 30,
          should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """SENSE reconstruction of the coil-combined image: unfolding when possible, else CG.

    Parameters
    ----------
    kspace : (coils, ky, kx) complex64
        Undersampled k-space.
    maps : (coils, y, x) complex64
        Coil sensitivities.
    mask_pe : (ky,) bool
        Acquired rows.
    R : int
        Acceleration 1..4.
    lam : float
        Tikhonov weight.
    method : {"auto", "unfold", "cg"}
        ``auto`` unfolds when the mask is exactly a full regular lattice and ``ky % R == 0``,
        else runs CG-SENSE.
    iterations : int
        CG iterations.
    should_stop : callable() -> bool, optional
        Passed to :func:`cg_sense` (unfolding is one direct solve and does not ask it).

    Returns
    -------
    (y, x) complex64

    Raises
    ------
    ValueError
        Unknown ``method``, or see :func:`sense_unfold` / :func:`cg_sense`.
    Cancelled
        ``should_stop()`` returned True during CG-SENSE.

    References
    ----------
    Pruessmann KP et al. MRM 1999;42:952-962; MRM 2001;46:638-651.
    """
    if method not in ("auto", "unfold", "cg"):
        raise ValueError(f"method must be 'auto', 'unfold' or 'cg', got {method!r}")
    mask_pe = np.asarray(mask_pe, dtype=bool)
    if method == "auto":
        ny = mask_pe.shape[0]
        ky0 = lattice_offset(mask_pe, R)
        lattice = np.zeros(ny, bool)
        lattice[ky0::R] = True
        method = "unfold" if (ny % R == 0 and np.array_equal(lattice, mask_pe)) else "cg"
    if method == "unfold":
        return sense_unfold(kspace, maps, mask_pe, R, lam)
    return cg_sense(kspace, maps, mask_pe, lam, iterations, should_stop=should_stop)
