"""Classical phase-sensitive inversion recovery (PSIR) with surface-coil correction.

From coil-combined complex IR and PD images in SNR units (docs/physics.md §3):

1. background phase ``φ = PD_f / |PD_f|`` with ``PD_f`` the PD image low-passed by a separable
   Hanning window in k-space (:func:`background_phase`);
2. ``PSIR_raw = Re(IR · conj(φ))`` keeps the sign of the longitudinal magnetisation;
3. surface-coil correction ``a = box_w(|PD|) / (box_w(|PD|²) + (t·σ)²)`` — the regularised local
   least-squares inverse of |PD| over a w×w window (:func:`scc_inverse`);
4. ``PSIR = PSIR_raw · a`` (≈ IR/PD ratio) and ``MagIR = |IR| · a``.

Box filter: :func:`cmrecon.recon.box.box_mean`, **circular (wrap-around)** as in the PSIRNet head
(:mod:`cmrecon.recon.psir_head`), so the classical and learned heads agree at the image border.
Only ``psirnet_compatible=True`` imports torch: it calls
:func:`cmrecon.recon.psir_head.psirnet_head` itself (no Hanning filter, phase = PD/|PD|).

References
----------
Kellman P, Arai AE, McVeigh ER, Aletras AH. Phase-sensitive inversion recovery for detecting
myocardial infarction using gadolinium-delayed hyperenhancement. MRM 2002;47:372-383.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrecon.recon.box import box_mean
from cmrecon.recon.fft import fft2c, ifft2c

__all__ = ["PsirResult", "background_phase", "scc_inverse", "psir", "to_gadgetron_units"]

#: Default fraction of k-space (per axis) spanned by the Hanning low-pass of the PD phase.
DEFAULT_HANNING_FRACTION = 0.5


@dataclass(frozen=True)
class PsirResult:
    """Output of :func:`psir`.

    Attributes
    ----------
    psir : (y, x) float32
        Surface-coil-corrected PSIR, dimensionless (≈ signed IR/PD ratio).
    magir : (y, x) float32
        Surface-coil-corrected magnitude IR ``|IR| · a``, dimensionless.
    phase : (y, x) complex64
        Unit-modulus background phase estimate used.
    scc : (y, x) float32
        Surface-coil correction ``a``, units 1/SNR.
    """

    psir: np.ndarray
    magir: np.ndarray
    phase: np.ndarray
    scc: np.ndarray


def _check_2d_complex(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or not np.iscomplexobj(x):
        raise ValueError(f"{name} must be a (y, x) complex image, got {x.shape} {x.dtype}")
    return x


def background_phase(pd: np.ndarray, hanning_fraction: float = DEFAULT_HANNING_FRACTION
                     ) -> np.ndarray:
    """Smooth background phase ``PD_f / |PD_f|`` from a Hanning-low-passed PD image.

    The PD image is transformed to k-space, multiplied by a separable Hanning window that spans
    ``hanning_fraction`` of k-space along each axis (centred, zero outside), and transformed
    back.

    Parameters
    ----------
    pd : (y, x) complex64
        Coil-combined proton-density reference image (SNR units).
    hanning_fraction : float
        Window width as a fraction of each k-space axis, in (0, 1]; smaller = smoother phase.

    Returns
    -------
    (y, x) complex64
        Unit-modulus phase (1 where ``PD_f`` is exactly 0).

    Raises
    ------
    ValueError
        Not a 2D complex image, or ``hanning_fraction`` outside (0, 1].

    References
    ----------
    Kellman P et al. MRM 2002;47:372-383.
    """
    pd = _check_2d_complex(pd, "pd")
    if not 0 < hanning_fraction <= 1:
        raise ValueError(f"hanning_fraction must be in (0, 1], got {hanning_fraction!r}")
    win = []
    for n in pd.shape:
        w = np.zeros(n)
        m = max(int(round(hanning_fraction * n)), 1)
        h = np.hanning(m + 2)[1:-1] if m > 1 else np.ones(1)  # strictly positive inside
        start = n // 2 - m // 2
        w[start:start + m] = h
        win.append(w)
    pdf = ifft2c((fft2c(pd.astype(np.complex64)) * np.outer(win[0], win[1])).astype(np.complex64))
    mag = np.abs(pdf)
    return np.where(mag > 0, pdf / np.where(mag > 0, mag, 1), 1).astype(np.complex64)


def scc_inverse(pd_mag: np.ndarray, window_px: int = 7, noise_sigma: float = 1.0,
                t: float = 4.0) -> np.ndarray:
    """Surface-coil correction: regularised local inverse of |PD|.

    ``a = box_w(|PD|) / (box_w(|PD|²) + (t·σ)²)``, the least-squares solution of
    ``a·|PD(r')| ≈ 1`` over the w×w window with Tikhonov weight ``(t·σ)²``. Box filter boundary:
    circular (wrap-around), as the PSIRNet head.

    Parameters
    ----------
    pd_mag : (y, x) float
        |PD| in SNR units.
    window_px : int
        Odd window side, pixels (7).
    noise_sigma : float
        Noise standard deviation σ of the PD image, same units (1 after prewhitening).
    t : float
        Regularisation in multiples of σ (4).

    Returns
    -------
    (y, x) float32
        Correction ``a``, units 1/SNR.

    Raises
    ------
    ValueError
        Non-real or non-2D input, negative ``noise_sigma``/``t``, bad window.

    References
    ----------
    Kellman P et al. MRM 2002;47:372-383.
    """
    pd_mag = np.asarray(pd_mag)
    if pd_mag.ndim != 2 or np.iscomplexobj(pd_mag):
        raise ValueError(f"pd_mag must be a real (y, x) image, got {pd_mag.shape} {pd_mag.dtype}")
    if noise_sigma < 0 or t < 0:
        raise ValueError(f"noise_sigma and t must be >= 0, got {noise_sigma!r}, {t!r}")
    reg = (t * noise_sigma) ** 2
    mag = pd_mag.astype(np.float64)
    num = box_mean(mag, window_px, "circular")
    den = box_mean(mag ** 2, window_px, "circular") + reg
    if reg == 0:
        den = np.where(den > 0, den, np.inf)
    return (num / den).astype(np.float32)


def psir(ir: np.ndarray, pd: np.ndarray, window_px: int = 7, noise_sigma: float = 1.0,
         t: float = 4.0, hanning_fraction: float = DEFAULT_HANNING_FRACTION,
         psirnet_compatible: bool = False) -> PsirResult:
    """Surface-coil-corrected PSIR and MagIR from coil-combined IR and PD images.

    Classical (default): ``PSIR = Re(IR·conj(φ)) · a`` with ``φ`` from
    :func:`background_phase` and ``a`` from :func:`scc_inverse`.
    ``psirnet_compatible=True``: ``PSIR`` is exactly
    :func:`cmrecon.recon.psir_head.psirnet_head` ``(ir, pd, window_px, (t·σ)²)``, i.e.
    ``Re(IR·conj(PD)) · a / sqrt(max(|PD|², 1e-6))`` with the PD phase unfiltered.

    Parameters
    ----------
    ir : (y, x) complex64
        Coil-combined IR image, SNR units.
    pd : (y, x) complex64
        Coil-combined PD reference image, SNR units, same shape.
    window_px : int
        Odd box side, pixels.
    noise_sigma : float
        Noise σ of the images (1 in SNR units).
    t : float
        SCC regularisation in multiples of σ.
    hanning_fraction : float
        k-space fraction of the Hanning low-pass for the background phase (classical mode).
    psirnet_compatible : bool
        Reproduce the learned model's head exactly.

    Returns
    -------
    PsirResult
        ``psir``, ``magir`` (``|IR|·a``), ``phase`` and ``scc`` maps.

    Raises
    ------
    ValueError
        Shape/dtype mismatch or bad parameters.

    References
    ----------
    Kellman P et al. MRM 2002;47:372-383. PSIRNet, arXiv 2604.08781.
    """
    ir = _check_2d_complex(ir, "ir")
    pd = _check_2d_complex(pd, "pd")
    if ir.shape != pd.shape:
        raise ValueError(f"ir shape {ir.shape} differs from pd shape {pd.shape}")
    pd_mag = np.abs(pd)
    a = scc_inverse(pd_mag, window_px, noise_sigma, t)
    if psirnet_compatible:
        from cmrecon.recon.psir_head import psirnet_head  # torch: imported only in this mode
        out = psirnet_head(ir.astype(np.complex64), pd.astype(np.complex64), window_px=window_px,
                           reg=float((t * noise_sigma) ** 2))
        mag = np.sqrt(np.maximum(pd_mag.astype(np.float64) ** 2, 1e-6))
        phase = (pd / mag).astype(np.complex64)
        return PsirResult(psir=np.asarray(out, dtype=np.float32),
                          magir=(np.abs(ir) * a).astype(np.float32), phase=phase, scc=a)
    phase = background_phase(pd, hanning_fraction)
    raw = np.real(ir * phase.conj())
    return PsirResult(psir=(raw * a).astype(np.float32), magir=(np.abs(ir) * a).astype(np.float32),
                      phase=phase, scc=a)


def to_gadgetron_units(result: PsirResult, scale: float = 1000.0, offset: float = 4096.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Gadgetron CMR output convention: ``PSIR·scale + offset`` and ``MagIR·scale``.

    Parameters
    ----------
    result : PsirResult
    scale : float
        Multiplier (1000).
    offset : float
        PSIR offset (4096, meta ``GADGETRON_ScaleOffset``).

    Returns
    -------
    psir : (y, x) float32
    magir : (y, x) float32
    """
    return ((result.psir * scale + offset).astype(np.float32),
            (result.magir * scale).astype(np.float32))
