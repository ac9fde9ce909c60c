"""Parameter-free PSIR head with surface-coil correction, as used at the output of PSIRNet.

The head turns a pair of coil-combined complex images (IR and its proton-density reference PD,
both in SNR units after prewhitening) into a surface-coil-corrected, phase-sensitive IR image:

    PSIR = Re(IR · conj(PD)) · box_w(|PD|) / (box_w(|PD|²) + reg) / sqrt(max(|PD|², eps))

``Re(IR·conj(PD)) / |PD|`` is the IR signal projected onto the PD phase (background phase
removed, sign of Mz kept); ``box_w(|PD|) / (box_w(|PD|²) + reg)`` is the regularised local
least-squares inverse of |PD| over a w×w window (Kellman 2002), with ``reg = (t·σ)² = 16``
for t = 4, σ = 1 in SNR units. The published PSIRNet applies the box filter with *circular*
(wrap-around) padding of ``w // 2`` pixels on each side; so does :mod:`cmrecon.recon.box`, so
the learned model's head, its training target and our classical PSIR module agree to rounding.

References
----------
Kellman P, Arai AE, McVeigh ER, Aletras AH. Phase-sensitive inversion recovery for detecting
myocardial infarction using gadolinium-delayed hyperenhancement. MRM 2002;47:372-383.
PSIRNet: arXiv 2604.08781; reference code github.com/microsoft/psirnet (MIT), ``compute_scc_torch``
and the last line of ``PSIRNet.forward``.
"""

from __future__ import annotations

import numpy as np
import torch

from cmrecon.recon.box import box_kernel, check_window

__all__ = ["DEFAULT_EPS", "DEFAULT_REG", "DEFAULT_WINDOW_PX", "psir_head_tensor", "psirnet_head",
           "surface_coil_correction_map"]

#: Side of the square box window, pixels (w in Kellman 2002; 7 in PSIRNet and Gadgetron).
DEFAULT_WINDOW_PX = 7
#: Regulariser (t·σ)² of the local inverse, SNR units squared: t = 4, σ = 1.
DEFAULT_REG = 16.0
#: Floor of |PD|² in the phase normalisation, SNR units squared (``eps`` of PSIRNet).
DEFAULT_EPS = 1e-6

_box_mean = box_kernel(torch)  # TorchScript-compatible, no input checks


def surface_coil_correction_map(pd_mag: torch.Tensor, window_px: int = 7,
                                reg: float = 16.0) -> torch.Tensor:
    """Regularised local inverse of |PD|: ``box(|PD|) / (box(|PD|²) + reg)``.

    Parameters
    ----------
    pd_mag : torch.Tensor
        ``(B, 1, RO, PE)`` real, |PD| in SNR units (noise σ = 1 after prewhitening).
    window_px : int
        Odd box side in pixels.
    reg : float
        Regulariser ``(t·σ)²`` in SNR units squared (16 for t = 4, σ = 1).

    Returns
    -------
    torch.Tensor
        ``(B, 1, RO, PE)`` real, units 1/SNR (multiplying an SNR-unit image gives a ratio).

    References
    ----------
    Kellman et al., MRM 2002;47:372.
    """
    return _box_mean(pd_mag, window_px, "circular") / (
        _box_mean(pd_mag * pd_mag, window_px, "circular") + reg)


def psir_head_tensor(ir: torch.Tensor, pd: torch.Tensor, window_px: int = 7,
                     reg: float = 16.0, eps: float = 1e-6) -> torch.Tensor:
    """TorchScript-compatible core of :func:`psirnet_head` on ``(B, 1, RO, PE)`` tensors.

    No input validation (the model calls it on its own tensors); see :func:`psirnet_head`
    for the formula, units and references.

    Parameters
    ----------
    ir, pd : torch.Tensor
        ``(B, 1, RO, PE)`` complex IR and PD images, SNR units.
    window_px : int
        Odd box side in pixels.
    reg : float
        Regulariser ``(t·σ)²``, SNR units squared.
    eps : float
        Floor of |PD|² under the square root.

    Returns
    -------
    torch.Tensor
        ``(B, 1, RO, PE)`` real PSIR (dimensionless).
    """
    pd_mag = pd.abs()
    scc = surface_coil_correction_map(pd_mag, window_px, reg)
    return (ir * pd.conj()).real * scc / torch.sqrt((pd_mag * pd_mag).clamp(min=eps))


def psirnet_head(ir, pd, window_px: int = DEFAULT_WINDOW_PX, reg: float = DEFAULT_REG,
                 eps: float = DEFAULT_EPS):
    """Surface-coil-corrected PSIR from coil-combined complex IR and PD images (PSIRNet head).

    Computes ``Re(IR·conj(PD)) · box(|PD|) / (box(|PD|²) + reg) / sqrt(max(|PD|², eps))``
    with a circularly padded ``window_px × window_px`` box mean, in that order of operations,
    as the published PSIRNet does. In a uniform region (|PD| = p constant over the window)
    the result is ``Re(IR/PD) · p² / (p² + reg)``: the IR/PD ratio, sign kept, shrunk by the
    regulariser's known bias factor ``p² / (p² + reg)``.

    Parameters
    ----------
    ir : torch.Tensor or numpy.ndarray
        Complex IR image, ``(B, 1, RO, PE)`` or ``(RO, PE)``, SNR units (prewhitened,
        coil-combined; noise σ = 1).
    pd : torch.Tensor or numpy.ndarray
        Complex PD reference image, same shape as ``ir``, SNR units.
    window_px : int
        Odd box side in pixels (7).
    reg : float
        Regulariser ``(t·σ)²``, SNR units squared (16 = (4·1)²).
    eps : float
        Floor of |PD|² under the square root, SNR units squared (1e-6).

    Returns
    -------
    torch.Tensor or numpy.ndarray
        Real PSIR, dimensionless (≈ signed IR/PD ratio: ~0 normal myocardium, ~1–2 blood and
        scar), same shape as the input. Real dtype matching the complex input (complex64 →
        float32). A numpy array when both inputs are numpy arrays, else a torch tensor on
        the inputs' device.

    Raises
    ------
    ValueError
        If shapes differ, are not ``(RO, PE)`` or ``(B, 1, RO, PE)``, inputs are not complex,
        or ``window_px`` is not a positive odd integer.

    References
    ----------
    Kellman P et al. Phase-sensitive inversion recovery for detecting myocardial infarction
    using gadolinium-delayed hyperenhancement. MRM 2002;47:372-383.
    PSIRNet, arXiv 2604.08781 (github.com/microsoft/psirnet).
    """
    as_numpy = isinstance(ir, np.ndarray) and isinstance(pd, np.ndarray)
    ir_t = torch.from_numpy(np.ascontiguousarray(ir)) if isinstance(ir, np.ndarray) else ir
    pd_t = torch.from_numpy(np.ascontiguousarray(pd)) if isinstance(pd, np.ndarray) else pd
    if not (torch.is_tensor(ir_t) and torch.is_tensor(pd_t)):
        raise ValueError(f"ir and pd must be torch tensors or numpy arrays, got "
                         f"{type(ir).__name__} and {type(pd).__name__}")
    if not (ir_t.is_complex() and pd_t.is_complex()):
        raise ValueError(f"ir and pd must be complex, got dtypes {ir_t.dtype} and {pd_t.dtype}")
    if ir_t.shape != pd_t.shape:
        raise ValueError(f"ir shape {tuple(ir_t.shape)} differs from pd shape {tuple(pd_t.shape)}")
    shape = ir_t.shape
    if ir_t.ndim == 2:
        ir_t, pd_t = ir_t[None, None], pd_t[None, None]
    elif not (ir_t.ndim == 4 and ir_t.shape[1] == 1):
        raise ValueError(f"ir/pd must have shape (RO, PE) or (B, 1, RO, PE), got {tuple(shape)}")
    window_px = check_window(window_px, ir_t.shape[-2:])
    psir = psir_head_tensor(ir_t, pd_t, window_px, float(reg), float(eps)).reshape(shape)
    if as_numpy:
        return psir.detach().cpu().numpy()
    return psir
