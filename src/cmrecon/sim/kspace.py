"""The simulator's forward model: tissue objects → noise-free multi-coil k-space lines.

Arrays here are on the simulator's drawing grid ``(…, RO, PE)`` (readout first, as the
readouts are written); the ground truth is handed out ``(…, y, x)`` (:mod:`cmrecon.sim.truth`).
"""

from __future__ import annotations

import numpy as np

from cmrecon.recon.fft import fft2c
from cmrecon.sim import phantom as ph
from cmrecon.sim.signal import TISSUES

#: Fine-grid points per pixel side of the band-limited object (phantom.bandlimited_fractions):
#: a 1 mm sub-pixel move then matches the Fourier shift of the object to ~2 % in the heart
#: (box-integrated pixels: 13 %, which no registration could undo).
BANDLIMIT_SUPERSAMPLE = 6


def class_fractions(label_fractions: np.ndarray) -> np.ndarray:
    """(N_LABELS, RO, PE) label fractions → (n_tissues, RO, PE) tissue-class fractions."""
    out = np.zeros((len(TISSUES),) + label_fractions.shape[1:], np.float32)
    for lab, t in enumerate(ph.LABEL_TO_TISSUE):
        if t >= 0:
            out[t] += label_fractions[lab]
    return out


def tissue_objects(an: ph.Anatomy, matrix: tuple[int, int], fov_mm: tuple[float, float],
                   shift_mm: np.ndarray, wall_fraction: float, pd: np.ndarray) -> np.ndarray:
    """The object as the scanner sees it: PD × tissue-class fractions band-limited to ``matrix``.

    ``shift_mm`` (dx, dy) moves the heart and organs, ``wall_fraction`` of it the body wall;
    ``pd`` (n_tissues,) is each class's proton density. Returns (n_tissues, RO, PE) float32.
    """
    d = np.asarray(shift_mm, float)
    lf = ph.bandlimited_fractions(an, matrix, fov_mm, shift_mm=tuple(d), outer_shift_mm=tuple(wall_fraction * d),
                                  supersample=BANDLIMIT_SUPERSAMPLE)
    return class_fractions(lf) * pd[:, None, None].astype(np.float32)


def mix_coils(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``matrix @ x`` over the coil axis, bit-identical on every CPU.

    A BLAS ``gemm`` picks its kernel (and so its summation order and float rounding) by CPU
    model, so ``Ψ^½ z`` or ``W s`` differ in the last bits between machines and a recorded
    stream could not be reproduced bit for bit elsewhere. Here every product and sum is a
    separate elementwise float64 ufunc on real and imaginary parts, in a fixed order (no
    reduction, no fused multiply–add), which IEEE 754 makes exact to reproduce.

    Parameters
    ----------
    matrix : (C_out, C_in) complex
    x : (C_in, ...) complex

    Returns
    -------
    (C_out, ...) complex128
    """
    m = np.asarray(matrix, np.complex128)
    x = np.asarray(x)
    if m.ndim != 2 or x.shape[0] != m.shape[1]:
        raise ValueError(f"mix_coils: matrix {m.shape} does not apply to x {x.shape}")
    xr = np.ascontiguousarray(x.real, np.float64)
    xi = np.ascontiguousarray(x.imag, np.float64)
    out_r = np.zeros((m.shape[0], *x.shape[1:]), np.float64)
    out_i = np.zeros_like(out_r)
    tmp = np.empty(x.shape[1:], np.float64)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            a, b = m[i, j].real, m[i, j].imag
            if a:
                out_r[i] += np.multiply(a, xr[j], out=tmp)
                out_i[i] += np.multiply(a, xi[j], out=tmp)
            if b:
                out_r[i] -= np.multiply(b, xi[j], out=tmp)
                out_i[i] += np.multiply(b, xr[j], out=tmp)
    return out_r + 1j * out_i


def kspace_lines(obj_t: np.ndarray, sens_phase: np.ndarray, weights: np.ndarray,
                 lines: np.ndarray) -> np.ndarray:
    """Noise-free k-space of the chosen lines: Σ_t w_t(ky) · F[C_c e^{iφ} pad(ρ_t)](kx, ky).

    Parameters
    ----------
    obj_t : (T, n_ro, n_pe) float32 tissue objects (PD × fraction).
    sens_phase : (coils, n_ro_os, n_pe) complex64, C_c·e^{iφ_b} on the oversampled grid.
    weights : (T, n_lines) signal of each tissue on each requested line.
    lines : (n_lines,) PE indices.

    Returns
    -------
    (coils, n_ro_os, n_lines) complex64
    """
    n_t, n_ro, n_pe = obj_t.shape
    n_ro_os = sens_phase.shape[1]
    start = (n_ro_os - n_ro) // 2
    keep = np.flatnonzero(obj_t.reshape(n_t, -1).any(axis=1))
    out = np.zeros((sens_phase.shape[0], n_ro_os, lines.size), np.complex64)
    w = weights[keep].astype(np.complex64)
    for c in range(sens_phase.shape[0]):
        img = np.zeros((keep.size, n_ro_os, n_pe), np.complex64)
        img[:, start:start + n_ro] = obj_t[keep] * sens_phase[c, start:start + n_ro]
        k = fft2c(img)[:, :, lines]                          # (T', n_ro_os, n_lines)
        out[c] = np.einsum("tl,trl->rl", w, k)
    return out
