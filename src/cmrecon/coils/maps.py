"""Coil sensitivity maps: Walsh, Inati (fast iterative) and ESPIRiT, plus ACS low-res images.

All maps are returned as ``(coils, y, x)`` complex64 with ``sum_c |S_c|² = 1`` wherever they are
defined (inside the object for ESPIRiT, which zeroes the rest), and with a smooth phase: each
pixel is rotated so that the maps' projection onto the dominant "virtual body coil" (the
first principal component of the coil channels) is real and positive (Walsh, ESPIRiT), or as in
Inati's algorithm (Inati). Images are centred (see :mod:`cmrecon.recon.fft`).

References
----------
Walsh DO, Gmitro AF, Marcellin MW. Adaptive reconstruction of phased array MR imagery.
MRM 2000;43:682-690.
Inati SJ, Hansen MS, Kellman P. A solution to the phase problem in adaptive coil combination.
ISMRM 2013, p. 2672; A fast optimal method for coil sensitivity estimation and adaptive coil
combination for complex images. ISMRM 2014, p. 4407.
Uecker M, Lai P, Murphy MJ, et al. ESPIRiT—an eigenvalue approach to autocalibrating parallel
MRI: where SENSE meets GRAPPA. MRM 2014;71:990-1001.
"""

from __future__ import annotations

import numpy as np

from cmrecon.recon.box import box_mean, check_window
from cmrecon.recon.fft import ifft2c

__all__ = ["walsh", "inati", "espirit", "lowres_images_from_acs", "normalise_phase"]


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"{name} must be (coils, y, x), got shape {images.shape}")
    if not np.iscomplexobj(images):
        raise ValueError(f"{name} must be complex, got dtype {images.dtype}")
    return images


def _dominant_eig(mats: np.ndarray, iterations: int = 40, tol: float = 1e-5
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Largest eigenpair of a batch of Hermitian PSD matrices ``(P, C, C)`` by power iteration.

    Starts from the column with the largest diagonal entry; stops when no vector moves by more
    than ``tol`` (2-norm, after phase alignment) or after ``iterations``. Much faster than a
    batched ``eigh`` for the small (C ≤ 32) matrices here.
    Returns (eigenvalues (P,) float64, unit eigenvectors (P, C) complex64).
    """
    mats = np.ascontiguousarray(mats, dtype=np.complex64)
    p, c, _ = mats.shape
    diag = np.real(np.einsum("pii->pi", mats))
    start = np.argmax(diag, axis=1)
    v = mats[np.arange(p), :, start][..., None]  # (P, C, 1)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
    for _ in range(iterations):
        w = mats @ v
        w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-30)
        # compare up to phase: 1 - |<v, w>| is ~ half the squared distance
        moved = 1.0 - np.abs(np.sum(v.conj() * w, axis=1))
        v = w
        if float(moved.max()) < tol * tol:
            break
    lam = np.real(np.sum(v.conj() * (mats @ v), axis=1))[:, 0]
    return lam.astype(np.float64), v[..., 0]


def normalise_phase(maps: np.ndarray) -> np.ndarray:
    """Rotate each pixel's coil vector so that its virtual-body-coil component is real ≥ 0.

    The virtual body coil ``v`` is the dominant eigenvector of ``Σ_r S(r) S(r)^H`` (a global
    coil combination); each pixel is multiplied by ``exp(-i·angle(v^H S(r)))``. This makes the
    maps' phase smooth and independent of the arbitrary per-pixel phase of an eigenvector.

    Parameters
    ----------
    maps : (coils, y, x) complex
        Coil maps with arbitrary per-pixel phase.

    Returns
    -------
    (coils, y, x) complex64
        Same magnitudes, normalised phase.
    """
    maps = _check_images(maps, "maps")
    flat = maps.reshape(maps.shape[0], -1).astype(np.complex128)
    cov = flat @ flat.conj().T
    _, vecs = np.linalg.eigh(cov)
    v = vecs[:, -1]
    proj = v.conj() @ flat
    mag = np.abs(proj)
    rot = np.where(mag > 0, proj.conj() / np.where(mag > 0, mag, 1.0), 1.0)
    return (flat * rot[None, :]).reshape(maps.shape).astype(np.complex64)


def walsh(images: np.ndarray, window_px: int = 7) -> np.ndarray:
    """Walsh adaptive coil maps: dominant eigenvector of the local coil correlation matrix.

    For each pixel the ``coils × coils`` matrix ``R(r) = Σ_{r' ∈ w×w box} x(r') x(r')^H`` is
    formed (box mean, symmetric boundary) and its dominant eigenvector is the map at ``r``.

    Parameters
    ----------
    images : (coils, y, x) complex64
        Low-resolution coil images (e.g. :func:`lowres_images_from_acs`), any units.
    window_px : int
        Odd side of the square smoothing window, pixels.

    Returns
    -------
    (coils, y, x) complex64
        Unit-norm coil vector per pixel (``Σ_c |S_c|² = 1`` everywhere), phase normalised
        with :func:`normalise_phase`.

    Raises
    ------
    ValueError
        Non-complex or non-3D ``images``, or an even/non-positive window.

    References
    ----------
    Walsh DO, Gmitro AF, Marcellin MW. MRM 2000;43:682-690.
    """
    images = _check_images(images)
    w = check_window(window_px)
    nc, ny, nx = images.shape
    x = images.astype(np.complex64)
    corr = x[:, None] * x[None, :].conj()  # (c, c', y, x)
    corr = box_mean(corr, w, "symmetric")
    corr = np.moveaxis(corr.reshape(nc, nc, -1), -1, 0)  # (pix, c, c')
    _, vecs = _dominant_eig(corr)
    maps = vecs.T.reshape(nc, ny, nx)
    return normalise_phase(maps)


def inati(images: np.ndarray, window_px: int = 7, iterations: int = 5,
          tol: float = 1e-3) -> np.ndarray:
    """Inati's fast iterative coil-map estimate (power iteration on smoothed coil images).

    Alternates: combine the coils with the current maps, multiply the coil images by the
    conjugate combined phase-and-magnitude, smooth with a box window, normalise to unit coil
    norm, and fix the global phase on a virtual reference coil. It converges to Walsh's
    dominant eigenvector without forming per-pixel correlation matrices, and its phase is
    consistent across the image (Inati 2013).

    Parameters
    ----------
    images : (coils, y, x) complex64
        Low-resolution coil images.
    window_px : int
        Odd side of the box smoothing window, pixels.
    iterations : int
        Maximum number of iterations (5 is usually converged).
    tol : float
        Stop early when the relative change of the combined image is below ``tol``.

    Returns
    -------
    (coils, y, x) complex64
        Maps with ``Σ_c |S_c|² = 1`` wherever the smoothed signal is non-zero.

    Raises
    ------
    ValueError
        Non-complex or non-3D ``images``, an even window, ``iterations < 1``.

    References
    ----------
    Inati SJ, Hansen MS, Kellman P. ISMRM 2013 p. 2672; ISMRM 2014 p. 4407.
    """
    images = _check_images(images)
    w = check_window(window_px)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations!r}")
    im = images.astype(np.complex64)
    eps = np.finfo(np.float32).eps * float(np.abs(im).mean()) + np.finfo(np.float32).tiny

    d_sum = im.sum(axis=(1, 2))
    d_sum /= np.linalg.norm(d_sum) + eps
    rho = np.tensordot(d_sum.conj(), im, axes=(0, 0))  # (y, x) combined image
    maps = im
    for it in range(iterations):
        prev = rho
        smoothed = box_mean(im * rho.conj()[None], w, "symmetric")
        norm = np.sqrt(np.sum(np.abs(smoothed) ** 2, axis=0)) + eps
        maps = smoothed / norm[None]
        rho = np.sum(im * maps.conj(), axis=0)
        # global phase reference: virtual coil from the maps weighted by the combined image
        d_sum = np.sum(maps * rho[None], axis=(1, 2))
        d_sum /= np.linalg.norm(d_sum) + eps
        ref = np.tensordot(d_sum.conj(), maps, axes=(0, 0))
        ref /= np.abs(ref) + eps
        rho = rho * ref
        maps = maps * ref.conj()[None]
        if it > 0 and np.linalg.norm(rho - prev) / (np.linalg.norm(rho) + eps) < tol:
            break
    return maps.astype(np.complex64)


def _espirit_operator(kernels: np.ndarray, shape: tuple[int, int], kernel_px: int) -> np.ndarray:
    """Image-space ESPIRiT matrices ``G(r) = k⁻² Σ_j h_j(r) h_j(r)^H`` on the full grid.

    ``kernels`` is ``(nv, coils, k, k)``. ``G`` is a trigonometric polynomial of degree
    ``k − 1`` per axis, so it is computed exactly on a small ``2k × 2k`` grid and Fourier-
    interpolated (zero-padded in its coefficient domain) to ``shape``.
    Returns ``(y, x, coils, coils)`` complex64 on the centred image grid.
    """
    nv, nc, k, _ = kernels.shape
    m = 2 * k
    grid = np.zeros((nv, nc, m, m), dtype=np.complex128)
    grid[:, :, :k, :k] = kernels
    h = np.fft.ifft2(grid, axes=(-2, -1)) * (m * m)  # h_j(r) = Σ_p K_j[p] e^{+2πi p·r/m}
    gm = np.einsum("jcyx,jdyx->cdyx", h, h.conj()) / float(kernel_px * kernel_px)
    coef = np.fft.fftshift(np.fft.fft2(gm, axes=(-2, -1)) / (m * m), axes=(-2, -1))
    ny, nx = shape
    full = np.zeros((nc, nc, ny, nx), dtype=np.complex64)
    oy, ox = ny // 2 - m // 2, nx // 2 - m // 2
    if oy < 0 or ox < 0:
        raise ValueError(f"shape {shape} is smaller than twice the kernel ({kernel_px} px)")
    full[:, :, oy:oy + m, ox:ox + m] = coef
    g = np.fft.ifft2(np.fft.ifftshift(full, axes=(-2, -1)),
                     axes=(-2, -1)) * (ny * nx)
    g = np.fft.fftshift(g, axes=(-2, -1))
    return np.moveaxis(np.moveaxis(g, 0, -1), 0, -1)  # (y, x, c, c') with g[y,x] = G(r)


def espirit(calib_kspace: np.ndarray, shape: tuple[int, int], kernel_px: int = 6,
            threshold: float = 0.02, crop: float = 0.95,
            return_eigenvalues: bool = False):
    """ESPIRiT coil maps from a fully sampled calibration region (first eigenvector only).

    1. Calibration (Hankel) matrix of all ``kernel_px × kernel_px × coils`` patches of
       ``calib_kspace``; SVD; keep right singular vectors with ``σ > threshold · σ_max``.
    2. For each image pixel the ``coils × coils`` operator ``G(r) = k⁻² Σ_j h_j(r) h_j(r)^H``
       (``h_j`` = inverse DFT of kernel j zero-padded to ``shape``) is formed and
       eigen-decomposed; inside the object its largest eigenvalue is ≈ 1 and the eigenvector is
       the coil sensitivity.
    3. Maps are zeroed where that eigenvalue is below ``crop`` and phase-normalised
       (:func:`normalise_phase`).

    Parameters
    ----------
    calib_kspace : (coils, cy, cx) complex64
        Fully sampled, centred calibration k-space block (e.g. 24 ACS lines × 24–all readout
        points); the block's centre need not be k = 0 (a common shift only changes a phase
        that cancels).
    shape : (ny, nx)
        Image matrix of the returned maps.
    kernel_px : int
        Kernel side, pixels (6 as in Uecker 2014 and BART ``ecalib -k 6``).
    threshold : float
        Relative singular-value threshold defining the signal subspace (0.02 in Uecker 2014;
        BART's ``-t``).
    crop : float
        Eigenvalue below which maps are set to zero (BART's ``-c``).
    return_eigenvalues : bool
        Also return the ``(y, x)`` largest eigenvalue map.

    Returns
    -------
    maps : (coils, y, x) complex64
        Unit-norm maps where the eigenvalue ≥ ``crop``, zero elsewhere.
    eigenvalues : (y, x) float32
        Only when ``return_eigenvalues``.

    Raises
    ------
    ValueError
        Bad shapes (calibration smaller than the kernel, ``shape`` smaller than 2 kernels),
        threshold or crop outside (0, 1).

    References
    ----------
    Uecker M et al. ESPIRiT. MRM 2014;71:990-1001.
    """
    calib = _check_images(calib_kspace, "calib_kspace").astype(np.complex128)
    nc, cy, cx = calib.shape
    k = int(kernel_px)
    if k < 1 or k > min(cy, cx):
        raise ValueError(f"kernel_px={kernel_px} must be in [1, min(calib shape)={min(cy, cx)}]")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if not 0 <= crop < 1:
        raise ValueError(f"crop must be in [0, 1), got {crop!r}")
    if len(shape) != 2:
        raise ValueError(f"shape must be (ny, nx), got {shape!r}")
    # calibration matrix: rows = patch positions, columns = (coil, dy, dx)
    win = np.lib.stride_tricks.sliding_window_view(calib, (k, k), axis=(1, 2))  # c, py, px, k, k
    a = np.moveaxis(win, 0, 2).reshape((cy - k + 1) * (cx - k + 1), nc * k * k)
    _, s, vh = np.linalg.svd(a, full_matrices=False)
    nv = int(np.sum(s > threshold * s[0]))
    # Rows of vh span the signal row space: a patch row a satisfies a = (a vh^H) vh. For an
    # image point at r the patch is a[p] = s·e^{-2πi p·r} (centred ifft), so the symbol is
    # G(r) = k⁻² Σ_j h_j h_j^H with h_j(r) = Σ_p vh_j[p] e^{+2πi p·r} (checked against known
    # maps in tests/coils).
    kernels = vh[:nv].reshape(nv, nc, k, k)
    g = _espirit_operator(kernels, tuple(shape), k)
    ny, nx = shape
    lam, vecs = _dominant_eig(g.reshape(ny * nx, nc, nc))
    lam = lam.reshape(ny, nx)
    maps = vecs.T.reshape(nc, ny, nx)
    maps = normalise_phase(maps.astype(np.complex64))
    maps = np.where((lam >= crop)[None], maps, 0).astype(np.complex64)
    if return_eigenvalues:
        return maps, lam.astype(np.float32)
    return maps


def periodic_tukey(n: int, alpha: float) -> np.ndarray:
    """Periodic Tukey (tapered cosine) window of length ``n`` (scipy's ``tukey(n, alpha, sym=False)``).

    Written here so that importing the coil-map code does not import ``scipy.signal`` (0.7 s of
    a Gadgetron external's start-up).

    Parameters
    ----------
    n : int
        Window length, samples (>= 1).
    alpha : float
        Fraction of the window inside the cosine tapers (0: rectangular, 1: Hann).

    Returns
    -------
    (n,) float64
        The window; its peak (1) is at index ``n // 2``.

    References
    ----------
    Harris FJ. Proc IEEE 1978;66:51-83 (tapered cosine window).
    """
    if n < 1:
        raise ValueError(f"window length must be >= 1, got {n}")
    m = n + 1  # periodic window = the symmetric window of n + 1 samples without its last one
    if alpha <= 0 or n == 1:
        return np.ones(n)
    alpha = min(float(alpha), 1.0)
    k = np.arange(m, dtype=np.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    w = np.ones(m)
    left = k[: width + 1]
    right = k[m - width - 1:]
    w[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * left / alpha / (m - 1))))
    w[m - width - 1:] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * right / alpha / (m - 1))))
    return w[:n]


def lowres_images_from_acs(acs_kspace: np.ndarray, shape: tuple[int, int],
                           taper: float = 0.5) -> np.ndarray:
    """Low-resolution coil images: Tukey-windowed ACS block zero-filled to ``shape``.

    Parameters
    ----------
    acs_kspace : (coils, ay, ax) complex64
        Fully sampled calibration block whose k = 0 sample sits at ``(ay // 2, ax // 2)``.
        ``ax`` may equal ``nx`` (ACS lines over the full readout).
    shape : (ny, nx)
        Output matrix; ``ny >= ay`` and ``nx >= ax``.
    taper : float
        Tukey window taper fraction per axis (0 = box, 1 = Hann).

    Returns
    -------
    (coils, ny, nx) complex64
        Centred images, orthonormal FFT (same units as the full-resolution images times
        the window).

    Raises
    ------
    ValueError
        If the block is larger than ``shape`` or not ``(coils, ay, ax)`` complex.
    """
    acs = _check_images(acs_kspace, "acs_kspace")
    nc, ay, ax = acs.shape
    ny, nx = shape
    if ay > ny or ax > nx:
        raise ValueError(f"ACS block {acs.shape[1:]} larger than the output shape {shape}")
    wy = periodic_tukey(ay, taper) if ay > 1 else np.ones(1)
    wx = periodic_tukey(ax, taper) if ax > 1 else np.ones(1)
    # sym=False puts the window's peak at index n//2, the k = 0 sample
    full = np.zeros((nc, ny, nx), dtype=np.complex64)
    oy, ox = ny // 2 - ay // 2, nx // 2 - ax // 2
    full[:, oy:oy + ay, ox:ox + ax] = acs * (wy[:, None] * wx[None, :])[None]
    return ifft2c(full)
