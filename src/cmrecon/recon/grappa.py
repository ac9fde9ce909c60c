"""GRAPPA for one-dimensional (phase-encode) Cartesian undersampling, R = 1..4.

Missing phase-encode rows are synthesised, per coil, as a linear combination of the acquired
neighbours of all coils: ``kernel_ky`` acquired rows (spacing R) around the target row times
``kernel_kx`` readout points. One weight set per offset ``t = 1..R−1`` of the target from the
acquired lattice row below it is fitted on the fully sampled ACS block by Tikhonov-regularised
least squares. Works with embedded ACS (calibration rows are also imaging rows: they are kept
as acquired) and separate ACS, and with the acquired lattice at any offset (e.g. partial Fourier
with the first rows never acquired: lattice rows that were not acquired are left zero for
:mod:`cmrecon.recon.partial_fourier`).

References
----------
Griswold MA, Jakob PM, Heidemann RM, et al. Generalized autocalibrating partially parallel
acquisitions (GRAPPA). MRM 2002;47:1202-1210.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.linalg
from scipy.linalg.blas import zherk

__all__ = ["GrappaWeights", "grappa_weights", "grappa_fill", "lattice_offset"]


@dataclass(frozen=True)
class GrappaWeights:
    """Fitted GRAPPA weights.

    Attributes
    ----------
    R : int
        Acceleration (lattice spacing of acquired phase-encode rows).
    kernel : (int, int)
        ``(kernel_ky, kernel_kx)``: acquired source rows, readout points.
    weights : tuple of ndarray
        ``weights[t-1]``: ``(coils * kernel_ky * kernel_kx, coils)`` complex64 mapping the
        flattened source patch (coil, source row, kx) to the target row's coils, for target
        offset ``t`` = 1..R−1 above the acquired row ``base``; source rows are
        ``base + R·(j − (kernel_ky//2 − 1))`` for ``j = 0..kernel_ky−1``.
    """

    R: int
    kernel: tuple[int, int]
    weights: tuple[np.ndarray, ...]


def _source_offsets(R: int, kernel_ky: int) -> np.ndarray:
    """Source row offsets from the base lattice row: e.g. R·(−1, 0, 1, 2) for 4 rows."""
    first = -(kernel_ky // 2 - 1) if kernel_ky > 1 else 0
    return R * (np.arange(kernel_ky) + first)


def _check_kernel(kernel) -> tuple[int, int]:
    try:
        ky, kx = (int(v) for v in kernel)
    except (TypeError, ValueError):
        raise ValueError(f"kernel must be (kernel_ky, kernel_kx), got {kernel!r}") from None
    if ky < 1 or kx < 1 or kx % 2 == 0:
        raise ValueError(f"kernel must have >= 1 source rows and an odd kx size, got {kernel!r}")
    return ky, kx


def _patches(data: np.ndarray, base_rows: np.ndarray, offsets: np.ndarray, kx: int,
             valid_rows: np.ndarray | None = None) -> np.ndarray:
    """Source patches ``(len(base_rows) * nx, coils * ky * kx)`` with zeros outside the data.

    ``valid_rows`` (bool per row) zeroes rows that are not acquired.
    """
    nc, ny, nx = data.shape
    half = kx // 2
    padded = np.zeros((nc, ny, nx + 2 * half), dtype=data.dtype)
    padded[:, :, half:half + nx] = data
    rows = base_rows[:, None] + offsets[None, :]  # (n, ky)
    inside = (rows >= 0) & (rows < ny)
    if valid_rows is not None:
        inside &= valid_rows[np.clip(rows, 0, ny - 1)]
    src = padded[:, np.clip(rows, 0, ny - 1), :]  # (c, n, ky, nx + 2h)
    src = src * inside[None, :, :, None]
    win = np.lib.stride_tricks.sliding_window_view(src, kx, axis=-1)  # (c, n, ky, nx, kx)
    win = np.moveaxis(win, 3, 0)  # (nx, c, n, ky, kx)
    win = np.moveaxis(win, 2, 0)  # (n, nx, c, ky, kx)
    return win.reshape(len(base_rows) * nx, nc * len(offsets) * kx)


def grappa_weights(acs: np.ndarray, R: int, kernel: tuple[int, int] = (4, 5),
                   lam: float = 1e-4) -> GrappaWeights:
    """Fit GRAPPA weights on a fully sampled ACS block.

    Solves, for each target offset t, ``W = argmin ||T − S W||² + λ ||W||²`` with
    ``λ = lam · ||S||_F² / n_columns`` (i.e. ``lam`` times the mean eigenvalue of ``S^H S``,
    so the regularisation is relative to the calibration energy and independent of scaling).
    Only target positions whose whole source patch lies inside the ACS block are used.

    Parameters
    ----------
    acs : (coils, ay, kx) complex64
        Fully sampled calibration rows (consecutive phase-encode lines), same readout length as
        the data to be filled.
    R : int
        Acceleration factor, 1..4 (R = 1 gives no weights: nothing to fill).
    kernel : (int, int)
        ``(kernel_ky, kernel_kx)``: acquired source rows (spacing R) and odd readout width.
    lam : float
        Relative Tikhonov regularisation (dimensionless, ≥ 0).

    Returns
    -------
    GrappaWeights

    Raises
    ------
    ValueError
        R outside 1..4, a bad kernel, negative ``lam``, an ACS block too short to hold one
        kernel (``ay < R·(kernel_ky − 1) + 1``) or narrower than ``kernel_kx``, or a singular
        calibration (no signal in the block).

    References
    ----------
    Griswold MA et al. MRM 2002;47:1202-1210.
    """
    acs = np.asarray(acs)
    if acs.ndim != 3 or not np.iscomplexobj(acs):
        raise ValueError(f"acs must be (coils, ay, kx) complex, got {acs.shape} {acs.dtype}")
    if int(R) != R or not 1 <= R <= 4:
        raise ValueError(f"R must be an integer in 1..4, got {R!r}")
    R = int(R)
    ky, kx = _check_kernel(kernel)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    nc, ay, nx = acs.shape
    if nx < kx:
        raise ValueError(f"ACS readout length {nx} is shorter than kernel_kx={kx}")
    offsets = _source_offsets(R, ky)
    ws = []
    for t in range(1, R):
        lo = -offsets[0]
        hi = ay - 1 - max(offsets[-1], t)
        if hi < lo:
            raise ValueError(f"ACS block of {ay} rows too short for R={R}, kernel_ky={ky} "
                             f"(needs >= {offsets[-1] - offsets[0] + 1})")
        base = np.arange(lo, hi + 1)
        src = _patches(acs.astype(np.complex128), base, offsets, kx)
        # keep readout positions whose kx window lies fully inside the block
        half = kx // 2
        keep = np.tile(np.r_[np.zeros(half, bool), np.ones(nx - 2 * half, bool),
                             np.zeros(half, bool)], len(base))
        src = src[keep]
        tgt = np.moveaxis(acs[:, base + t, :], 0, -1).reshape(len(base) * nx, nc)[keep]
        # S^H S by a Hermitian rank-k update (upper triangle: half a general product's work),
        # then Cholesky; λ = lam · mean eigenvalue on the diagonal
        gram = zherk(1.0, src, trans=2)
        diag = np.einsum("ii->i", gram)
        diag += lam * float(diag.real.sum()) / gram.shape[0]
        try:
            factor = scipy.linalg.cho_factor(gram, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as exc:
            raise ValueError(f"GRAPPA calibration for R={R} is singular (an ACS block without "
                             f"signal, or lam = 0 with too few ACS rows): {exc}") from exc
        w = scipy.linalg.cho_solve(factor, src.conj().T @ tgt, check_finite=False)
        ws.append(w.astype(np.complex64))
    return GrappaWeights(R=R, kernel=(ky, kx), weights=tuple(ws))


def lattice_offset(mask_pe: np.ndarray, R: int) -> int:
    """Offset ``ky0`` (0..R−1) of the acquired lattice ``ky0 + R·n``: the most populated residue.

    Parameters
    ----------
    mask_pe : (ky,) bool
        Acquired phase-encode rows (ACS rows included when embedded).
    R : int
        Acceleration.

    Returns
    -------
    int
    """
    rows = np.flatnonzero(mask_pe)
    if rows.size == 0:
        raise ValueError("mask_pe has no acquired row")
    return int(np.argmax(np.bincount(rows % R, minlength=R)))


def _fft_length(n: int) -> int:
    """Smallest 2·3·5-smooth integer ``>= n`` (a fast pocketfft length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _readout_transfer(weights: np.ndarray, coils: int, kernel: tuple[int, int], length: int
                      ) -> np.ndarray:
    """Weights of one target offset as per-frequency coil mixing along the padded readout.

    The kx part of the kernel, ``Σ_d w_d · s(kx + d − kx//2)``, is a correlation along the
    readout; on a zero-padded grid of ``length >= nx + kx//2`` points it is exactly the linear
    one, and after an FFT along kx it is a product per frequency ``f``:
    ``H[f, j, c', c] = Σ_d w[(c', j, d), c] · exp(2πi f (d − kx//2) / length)``.

    Returns
    -------
    (length, kernel_ky, coils, coils) complex64
    """
    ky, kx = kernel
    w = weights.reshape(coils, ky, kx, -1).astype(np.complex128).transpose(1, 0, 3, 2)  # (j, c', c, d)
    phase = np.exp(2j * np.pi * np.outer(np.arange(kx) - kx // 2, np.arange(length)) / length)
    # C order: each (f, j) block is a BLAS-ready (coils, coils) matrix
    return np.ascontiguousarray((w @ phase).transpose(3, 0, 1, 2), dtype=np.complex64)


def grappa_fill(kspace: np.ndarray, mask_pe: np.ndarray, acs: np.ndarray, R: int,
                lam: float = 1e-4, kernel: tuple[int, int] = (4, 5),
                weights: GrappaWeights | None = None) -> np.ndarray:
    """Fill the missing phase-encode rows of undersampled k-space with GRAPPA.

    A missing row ``y`` with lattice offset ``t = (y − ky0) mod R ≠ 0`` is filled when one of
    its two central source rows (``y − t`` or ``y − t + R``) was acquired; source rows outside
    the matrix or not acquired count as zero. Missing rows *on* the lattice (``t = 0``, e.g. the
    skipped partial-Fourier rows) stay zero. Acquired rows (including embedded ACS) are
    returned unchanged.

    Any leading axes are a batch sharing the mask and the weights (repeats, IR and PD sets):
    all images are filled by one operation. The kernel is applied in hybrid (ky, x) space
    (readout FFT on a zero-padded grid, so the kx correlation is the exact linear one; then one
    ``kernel_ky·coils × coils`` mixing per readout frequency, sources taken from the lattice rows
    by slicing, with the images in the matrix rows), which is the k-space sum of the definition
    to float32 rounding at ``kernel_kx`` times fewer operations (the image-space idea of
    Brau 2008 along the readout only, which keeps the matrix edges exact).

    Parameters
    ----------
    kspace : (..., coils, ky, kx) complex64
        Undersampled k-space, zero where not acquired.
    mask_pe : (ky,) bool
        Acquired phase-encode rows of ``kspace`` (the same for every image of the batch).
    acs : (coils, ay, kx) complex64
        Fully sampled calibration rows (embedded or from a separate scan).
    R : int
        Acceleration 1..4.
    lam : float
        Relative Tikhonov regularisation of the weight fit (see :func:`grappa_weights`).
    kernel : (int, int)
        ``(kernel_ky, kernel_kx)`` source rows and readout points.
    weights : GrappaWeights, optional
        Pre-computed weights (then ``acs``, ``lam`` and ``kernel`` are not used for fitting).

    Returns
    -------
    (..., coils, ky, kx) complex64
        Filled k-space.

    Raises
    ------
    ValueError
        Shape mismatches between ``kspace``, ``mask_pe`` and ``acs``, or see
        :func:`grappa_weights`.

    References
    ----------
    Griswold MA et al. MRM 2002;47:1202-1210. Brau ACS, Beatty PJ, Skare S, Bammer R.
    Comparison of reconstruction accuracy and efficiency among autocalibrating data-driven
    parallel imaging methods. MRM 2008;59:382-395.
    """
    kspace = np.asarray(kspace)
    mask_pe = np.asarray(mask_pe, dtype=bool)
    if kspace.ndim < 3 or not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be (..., coils, ky, kx) complex, got {kspace.shape} "
                         f"{kspace.dtype}")
    nc, ny, nx = kspace.shape[-3:]
    if mask_pe.shape != (ny,):
        raise ValueError(f"mask_pe shape {mask_pe.shape} must be ({ny},)")
    if acs is not None and (np.shape(acs)[0] != nc or np.shape(acs)[-1] != nx):
        raise ValueError(f"acs shape {np.shape(acs)} does not match kspace {kspace.shape} "
                         "(coils and readout must agree)")
    if weights is None:
        weights = grappa_weights(acs, R, kernel, lam)
    elif weights.R != R:
        raise ValueError(f"weights were fitted for R={weights.R}, not R={R}")
    out = kspace.astype(np.complex64, copy=True)
    out[..., ~mask_pe, :] = 0
    if R == 1:
        return out
    ky, kx = weights.kernel
    first = int(_source_offsets(R, ky)[0]) // R      # lattice index of source j=0 from the base
    ky0 = lattice_offset(mask_pe, R)
    rows = np.arange(ny)
    t_of = (rows - ky0) % R
    jobs = []
    for t in range(1, R):
        targets = rows[(~mask_pe) & (t_of == t)]
        base = targets - t
        b0 = np.clip(base, 0, ny - 1)
        b1 = np.clip(base + R, 0, ny - 1)
        ok = ((base >= 0) & mask_pe[b0]) | ((base + R < ny) & mask_pe[b1])
        if ok.any():
            jobs.append((t, targets[ok], (base[ok] - ky0) // R))
    if not jobs:
        return out
    batch = out.shape[:-3]
    nb = int(np.prod(batch, dtype=int))
    length = _fft_length(nx + kx // 2)
    lattice = out.reshape(nb, nc, ny, nx)[:, :, ky0::R]          # (B, c, M, nx), unacquired = 0
    m_rows = lattice.shape[2]
    lo = min(0, min(int(b[0]) for _, _, b in jobs) + first)
    hi = max(m_rows, max(int(b[-1]) for _, _, b in jobs) + first + ky)
    # (P, M', B, c): readout frequency outermost, so each source row offset is a slice and each
    # frequency's mixing is one (rows·B, c) @ (c, c) product
    spec = np.zeros((length, hi - lo, nb, nc), np.complex64)
    spec[:, -lo:m_rows - lo] = scipy.fft.fft(lattice, n=length, axis=-1).transpose(3, 2, 0, 1)
    for t, targets, base in jobs:
        h = _readout_transfer(weights.weights[t - 1], nc, (ky, kx), length)
        b_lo, n_b = int(base[0]), int(base[-1] - base[0]) + 1
        acc = np.zeros((length, n_b * nb, nc), np.complex64)
        for j in range(ky):
            s0 = b_lo + first + j - lo
            acc += spec[:, s0:s0 + n_b].reshape(length, n_b * nb, nc) @ h[:, j]
        acc = acc.reshape(length, n_b, nb, nc)[:, base - b_lo]       # (P, n_t, B, c)
        filled = scipy.fft.ifft(acc.transpose(2, 3, 1, 0), axis=-1)[..., :nx]
        out[..., targets, :] = filled.reshape(batch + (nc, len(targets), nx))
    return out
