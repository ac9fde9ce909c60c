"""Coil maps and parallel-imaging unfolding of one IR/PD slice (arrays only).

Calibration comes from the PD heartbeats (their signal is positive in every tissue, whereas IR
nulls normal myocardium and flips sign between tissues); GRAPPA weights are fitted once per
slice and applied to every repeat's IR and PD k-space. Arrays follow :mod:`cmrecon.axes`;
after noise prewhitening and with unit-norm maps the images are in SNR units.

References
----------
Griswold MA et al. MRM 2002;47:1202-1210 (GRAPPA). Pruessmann KP et al. MRM 1999;42:952 (SENSE).
Walsh DO et al. MRM 2000;43:682-690; Inati SJ et al. ISMRM 2014 p. 4407 (coil maps).
"""

from __future__ import annotations

import numpy as np

from cmrecon.coils.maps import espirit, inati, lowres_images_from_acs, walsh
from cmrecon.parallel import pmap
from cmrecon.recon.fft import fft2c
from cmrecon.recon.grappa import grappa_fill, grappa_weights
from cmrecon.recon.partial_fourier import partial_fourier
from cmrecon.recon.sense import sense

__all__ = ["DEFAULT_CALIB_ROWS", "calibration_block", "estimate_maps", "unfold"]

#: Calibration rows used for coil maps when there is no ACS (R = 1): centre rows of the PD data.
DEFAULT_CALIB_ROWS = 24

#: Coil k-space per GRAPPA batch (bytes): every temporary of a batch stays well below glibc's
#: 32 MiB mmap threshold, so it is reused heap memory instead of fresh pages (a page fault per
#: 4 KiB each time: on the bench's VM that doubled the unfold time of one 56 MiB batch), and a
#: batch of coil images stays near the cache
BATCH_BYTES = 8 << 20


def calibration_block(acs: np.ndarray | None, pd_kspace: np.ndarray, mask_pe: np.ndarray,
                      rows: int = DEFAULT_CALIB_ROWS) -> np.ndarray:
    """PD calibration block ``(coils, ay, kx)``: the ACS block, or (R = 1) centre rows of the PD data.

    Parameters
    ----------
    acs : (coils, ay, kx) complex64 or None
        The PD ACS block (:attr:`cmrecon.products.lge.Calibration.pd`).
    pd_kspace : (repeats, coils, ky, kx) complex64
        PD k-space, averaged over repeats when there is no usable ACS.
    mask_pe : (ky,) bool
        Sampled rows.
    rows : int
        Central rows used without ACS.

    Raises
    ------
    ValueError
        No ACS and the central rows are not fully sampled.
    """
    if acs is not None and acs.shape[1] >= 2:
        return acs
    ky = pd_kspace.shape[2]
    c = ky // 2
    h = min(rows // 2, c, ky - c)
    block_rows = np.arange(c - h, c + h)
    if not mask_pe[block_rows].all():
        raise ValueError(f"no ACS lines and the central {2 * h} PE rows are not fully sampled; "
                         "coil maps cannot be calibrated")
    return pd_kspace[:, :, block_rows].mean(axis=0).astype(np.complex64)


def estimate_maps(calib: np.ndarray, shape: tuple[int, int], method: str = "inati",
                  window_px: int = 7, espirit_kernel_px: int = 6, espirit_threshold: float = 0.02,
                  espirit_crop: float = 0.8, espirit_calib_kx: int = 32) -> np.ndarray:
    """Coil sensitivities on the ``(ky, kx)`` grid from a PD calibration block.

    Calibration source: the **PD** ACS block (mean over repeats); without ACS (R = 1) the
    central 24 rows of the mean PD k-space. PD is used alone because its signal is positive and
    similar in every tissue, whereas the IR image nulls normal myocardium (so IR-derived maps
    would be noise there) and flips sign between tissues (so pooling complex IR and PD data
    would cancel signal).

    Parameters
    ----------
    calib : (coils, ay, kx) complex64
        Calibration block (:func:`calibration_block`), k = 0 on row ``ay // 2``.
    shape : (ky, kx)
        The k-space grid the maps live on.
    method : {"inati", "walsh", "espirit"}
        Inati 2014 (default, fast), Walsh 2000, or ESPIRiT (Uecker 2014; zero outside the
        eigenvalue mask).
    window_px : int
        Odd smoothing window of Walsh/Inati, pixels.
    espirit_kernel_px, espirit_threshold, espirit_crop : ESPIRiT kernel, singular-value
        threshold and eigenvalue crop.
    espirit_calib_kx : int
        Readout width of the ESPIRiT calibration block (central samples; all when larger).

    Returns
    -------
    (coils, ky, kx) complex64
        Maps with ``Σ_c |S_c|² = 1`` (inside the mask for ESPIRiT).

    Raises
    ------
    ValueError
        Unknown method.

    References
    ----------
    Walsh DO et al. MRM 2000;43:682-690. Inati SJ et al. ISMRM 2013 p. 2672; ISMRM 2014 p. 4407.
    Uecker M et al. MRM 2014;71:990-1001.
    """
    ky, kx = int(shape[0]), int(calib.shape[2])
    if method in ("inati", "walsh"):
        low = lowres_images_from_acs(calib, (ky, kx))
        return (inati(low, window_px) if method == "inati" else walsh(low, window_px)).astype(np.complex64)
    if method == "espirit":
        w = min(int(espirit_calib_kx), kx)
        block = calib[:, :, kx // 2 - w // 2: kx // 2 - w // 2 + w]
        return espirit(block, (ky, kx), kernel_px=espirit_kernel_px, threshold=espirit_threshold,
                       crop=espirit_crop).astype(np.complex64)
    raise ValueError(f"coil map method '{method}' is unknown; known: inati, walsh, espirit")


# ----------------------------------------------------------------------------- unfolding


def _row_extent(kspace: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows ``(n, ky)`` bool of a batch ``(n, coils, ky, kx)``: True from the first to the last row
    holding a non-zero sample of each image (all that :func:`partial_fourier` reads of its mask);
    the extent of ``fallback`` for an all-zero image.

    Scans rows inwards from each edge until every image has a non-zero one (one row each in
    practice) instead of testing every sample.
    """
    n, ky = len(kspace), kspace.shape[-2]

    def first_nonzero(order) -> np.ndarray:
        found = np.full(n, -1)
        for r in order:
            found[(found < 0) & np.any(kspace[:, :, r] != 0, axis=(1, 2))] = r
            if (found >= 0).all():
                break
        return found

    first, last = first_nonzero(range(ky)), first_nonzero(range(ky - 1, -1, -1))
    fb = np.flatnonzero(fallback)
    if fb.size:
        first[first < 0], last[last < 0] = fb[0], fb[-1]
    rows = np.arange(ky)
    return (rows >= first[:, None]) & (rows <= last[:, None]) & (first[:, None] >= 0)


def _combination_weights(maps: np.ndarray, eps: float = 1e-12) -> tuple[np.ndarray, ...]:
    """``(conj(S), Σ_c |S_c|², Σ_c |S_c|² > eps)`` of ``(coils, y, x)`` maps, once per slice for :func:`_combine`."""
    den = np.sum(np.abs(maps) ** 2, axis=0)
    return maps.conj(), den, den > eps


def _combine(images: np.ndarray, weights: tuple[np.ndarray, ...]) -> np.ndarray:
    """:func:`cmrecon.recon.sense.coil_combine` of a batch ``(n, coils, y, x)`` with one set of maps.

    ``Σ_c conj(S_c)·x_c / Σ_c |S_c|²`` (0 where ``Σ|S|² <= eps``), the same float32 operations in
    the same order as ``coil_combine`` per image (the numerator is :func:`sense.reduce
    <cmrecon.recon.sense.reduce>` with the conjugate taken once per slice).
    """
    conj_maps, den, inside = weights
    num = np.sum(conj_maps * images, axis=-3)
    return np.where(inside, num / np.where(inside, den, 1.0), 0).astype(np.complex64)


def _set_major(ir: np.ndarray, pd: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Images ``start:stop`` of the IR repeats followed by the PD repeats, ``(stop − start, ...)``."""
    n = len(ir)
    if stop <= n:
        return ir[start:stop]
    if start >= n:
        return pd[start - n:stop - n]
    return np.concatenate((ir[start:], pd[:stop - n]))


def _grappa_images(kspace: np.ndarray, combination: tuple[np.ndarray, ...], mask_pe: np.ndarray,
                   R: int, weights, partial_fourier_method: str) -> np.ndarray:
    """GRAPPA, partial Fourier and coil combination of a batch ``(n, coils, ky, kx)`` → ``(n, y, x)``.

    One operation each over the whole batch; images whose filled extents differ (they share the
    mask, so only a zero edge row can make them) go through partial Fourier as separate groups.
    """
    filled = kspace if R == 1 else grappa_fill(kspace, mask_pe, None, R, weights=weights)
    rows = _row_extent(filled, mask_pe)
    out = np.empty((len(filled),) + filled.shape[-2:], np.complex64)
    patterns, group = np.unique(rows, axis=0, return_inverse=True)
    for g, pattern in enumerate(patterns):
        sel = np.flatnonzero(group.ravel() == g)
        part = filled if len(patterns) == 1 else filled[sel]
        out[sel] = _combine(partial_fourier(part, pattern, partial_fourier_method), combination)
    return out


def unfold(ir_kspace: np.ndarray, pd_kspace: np.ndarray, maps: np.ndarray, mask_pe: np.ndarray,
           acceleration: int, acs: np.ndarray | None, method: str = "grappa",
           partial_fourier_method: str = "zerofill", grappa_kernel: tuple[int, int] = (4, 5),
           grappa_lam: float = 1e-4, sense_lam: float = 1e-3, sense_method: str = "auto",
           sense_iterations: int = 30, batch_bytes: int = BATCH_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Coil-combined complex IR and PD images of every repeat, in SNR units.

    GRAPPA (default): weights fitted once per slice on the PD ACS block and applied to the
    repeats' IR and PD k-space in batches of ``batch_bytes`` (:func:`grappa_fill`); partial
    Fourier per coil (``zerofill`` default, ``homodyne``, ``pocs``); coil images combined with the
    unit-norm maps (noise σ = 1 before g-factor amplification); each stage is one operation per
    batch, and the images do not depend on the batching.
    SENSE: regularised unfolding when the rows form a pure lattice, else CG-SENSE (embedded
    ACS, partial Fourier: unknown rows are the minimum-norm solution, i.e. ≈ zero-filled);
    ``homodyne``/``pocs`` are then applied to the combined image's k-space.

    Parameters
    ----------
    ir_kspace, pd_kspace : (repeats, coils, ky, kx) complex64
        Zero-filled, prewhitened k-space.
    maps : (coils, ky, kx) complex64
        Unit-norm coil maps.
    mask_pe : (ky,) bool
        Sampled rows.
    acceleration : int
        R.
    acs : (coils, ay, kx) complex64 or None
        PD calibration block; needed by GRAPPA with R > 1.
    method : {"grappa", "sense"}
    partial_fourier_method : {"zerofill", "homodyne", "pocs"}
    grappa_kernel : (kernel_ky, kernel_kx)
    grappa_lam : relative Tikhonov weight of the GRAPPA fit.
    sense_lam : absolute Tikhonov weight of SENSE (units of Σ|S|²).
    sense_method : {"auto", "unfold", "cg"}
    sense_iterations : CG iterations.
    batch_bytes : coil k-space per GRAPPA batch (:data:`BATCH_BYTES`; at least one image).

    Returns
    -------
    ir, pd : (repeats, ky, kx) complex64
        On the k-space grid (crop with :func:`cmrecon.axes.centre_crop`).

    Raises
    ------
    ValueError
        Maps of the wrong shape, GRAPPA with R > 1 and no ACS, an unknown method, or a numerics
        error.

    References
    ----------
    Griswold MA et al. MRM 2002;47:1202-1210. Pruessmann KP et al. MRM 1999;42:952-962;
    MRM 2001;46:638-651. Noll DC et al. IEEE TMI 1991;10:154.
    """
    n, nc, ky, kx = ir_kspace.shape
    if maps.shape != (nc, ky, kx):
        raise ValueError(f"coil maps {maps.shape} do not match k-space (coils, ky, kx) = {(nc, ky, kx)}")
    R = int(acceleration)
    if method == "grappa":
        weights = None
        if R > 1:
            if acs is None:
                raise ValueError(f"GRAPPA with R = {R} needs ACS lines; none arrived")
            weights = grappa_weights(acs, R, tuple(grappa_kernel), grappa_lam)
        # the repeats' IR then PD images in batches: one GRAPPA fill, FFT and combination each
        out = np.empty((2 * n, ky, kx), np.complex64)
        combination = _combination_weights(maps)
        step = max(1, batch_bytes // (nc * ky * kx * np.dtype(np.complex64).itemsize))

        def batch(start: int) -> None:   # batches write disjoint rows of out
            stop = min(start + step, 2 * n)
            out[start:stop] = _grappa_images(_set_major(ir_kspace, pd_kspace, start, stop), combination,
                                             mask_pe, R, weights, partial_fourier_method)

        pmap(batch, range(0, 2 * n, step))   # on the compute workers: same images as a loop
        out = out.reshape(2, n, ky, kx)
    elif method == "sense":
        acquired = np.flatnonzero(mask_pe)
        extent = np.zeros(ky, bool)
        extent[acquired[0]:acquired[-1] + 1] = True
        out = np.zeros((2, n, ky, kx), np.complex64)
        for s, ksp in enumerate((ir_kspace, pd_kspace)):
            for i in range(n):
                img = sense(ksp[i], maps, mask_pe, R, lam=sense_lam, method=sense_method,
                            iterations=sense_iterations)
                if partial_fourier_method != "zerofill" and not extent.all():
                    img = partial_fourier(fft2c(img), extent, partial_fourier_method)
                out[s, i] = img
    else:
        raise ValueError(f"unfold method '{method}' is unknown; known: grappa, sense")
    return out[0], out[1]
