"""Motion-corrected (MOCO) averaging of repeated single-shot IR/PD images (Kellman 2005).

Pipeline (docs/physics.md §4), all on coil-combined complex images in SNR units:

1. key frame: ``argmin_m median_n ||w·(|x_m| − |x_n|)||`` over the IR magnitudes, ``w`` a central
   Hann window on the heart (:func:`roi_window`; uniform with ``roi_fraction = 1``);
2. register each repeat's IR magnitude to the key IR, and its PD to the key PD
   (:func:`register_repeat`): weighted SSD with the window in the *key frame only* (a window
   multiplied onto both images biases the shift toward zero), Newton's method on exact
   Fourier shifts, robust re-weighting that discounts the chest wall; a rotation (``rigid``) only when it moves
   the window edge by ≥ ``min_rotation_px``; ``nonrigid`` adds the body wall as a second
   translating layer (:func:`two_layer_warp`) or a demons field;
3. apply the transforms (translations by an exact Fourier shift, which keeps white noise white
   with σ unchanged; rotations/deformations by cubic-spline interpolation);
4. keep repeats by post-registration residual (:func:`excess_residual`, :func:`select_repeats`:
   robust median + k·MAD outlier rejection, then the count minimising the predicted MSE), at
   most ``keep_fraction``;
5. average ``x̄ = (1/√K)·Σ_k W_k(x_k)`` (noise σ stays 1, signal grows by √K), placed at the
   key frame's position or at the mean position of all repeats (``reference``);
6. optionally register the averaged PD to the averaged IR (translation on normalised
   gradient-magnitude images, accepted only when it raises their correlation).

Accuracy on synthetic free-breathing sets (bench/bench_moco.py): heart registration error
~0.02 px at PD SNR 10-30 (was ~0.08 px on IR and ~0.5 px on PD with the window on both images).

References
----------
Kellman P, Larson AC, Hsu LY, et al. Motion-corrected free-breathing delayed enhancement
imaging of myocardial infarction. MRM 2005;53:194-200.
Guizar-Sicairos M, Thurman ST, Fienup JR. Efficient subpixel image registration algorithms.
Opt Lett 2008;33:156-158.
Thirion JP. Image matching as a diffusion process: an analogy with Maxwell's demons.
Med Image Anal 1998;2:243-260.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import gaussian_filter, map_coordinates, spline_filter
from scipy.special import expit

from cmrecon.errors import StepError

__all__ = ["MocoResult", "RigidTransform", "roi_window", "estimate_translation",
           "register_translation", "robust_weight", "register_rigid", "register_demons",
           "register_repeat", "two_layer_warp", "fourier_shift", "warp", "select_key_frame", "key_frame",
           "excess_residual", "select_repeats", "moco_average", "plain_average"]


@dataclass(frozen=True)
class RigidTransform:
    """Rigid transform ``warped(r) = moving(R(−θ)(r − c − d) + c)``, c the image centre.

    Attributes
    ----------
    shift : (float, float)
        ``(dy, dx)`` translation in pixels applied to the moving image.
    angle_rad : float
        Rotation θ in radians (in the (y, x) plane, about the image centre).
    """

    shift: tuple[float, float] = (0.0, 0.0)
    angle_rad: float = 0.0


# ----------------------------------------------------------------------------- translation


def _upsampled_cc(cps: np.ndarray, centre: np.ndarray, upsample: int, half_px: float
                  ) -> np.ndarray:
    """Cross-correlation ``(1/N)Σ_k cps(k)e^{+2πi k·r/N}`` on a fine grid around ``centre``."""
    ny, nx = cps.shape
    n = int(np.ceil(2 * half_px * upsample)) + 1
    off = (np.arange(n) - n // 2) / upsample
    ry = centre[0] + off
    rx = centre[1] + off
    fy = np.fft.fftfreq(ny) * ny
    fx = np.fft.fftfreq(nx) * nx
    ey = np.exp(2j * np.pi * np.outer(ry, fy) / ny)  # (n, ny)
    ex = np.exp(2j * np.pi * np.outer(fx, rx) / nx)  # (nx, n)
    return (ey @ cps @ ex), off


def estimate_translation(moving: np.ndarray, fixed: np.ndarray, upsample: int = 20,
                         weight: np.ndarray | None = None, robust_iterations: int = 2
                         ) -> tuple[float, float]:
    """Sub-pixel translation ``d`` with ``moving(r − d) ≈ fixed(r)``.

    Without ``weight``: integer peak of the circular cross-correlation of the mean-subtracted
    images, refined on a ``1/upsample`` px grid within ±1.5 px of it (matrix-multiply DFT,
    Guizar-Sicairos 2008). With ``weight``: minimiser of the weighted sum of squared
    differences ``E(d) = Σ_r w(r)·(moving(r − d) − fixed(r))²`` (:func:`register_translation`),
    the weight staying in the fixed frame — multiplying the *same* window onto both images
    instead adds the window's own autocorrelation peak at ``d = 0`` and biases the estimate
    toward zero shift (on PD magnitudes by ~0.3 px median, bench/bench_moco.py).

    Parameters
    ----------
    moving, fixed : (y, x) float
        Real images (magnitudes), same shape.
    upsample : int
        Sub-pixel refinement factor of the unweighted search (precision ``1/upsample`` px).
    weight : (y, x) float, optional
        Non-negative region weight in the fixed frame (e.g. :func:`roi_window`).
    robust_iterations : int
        Re-weighting rounds of the weighted estimate (see :func:`register_translation`).

    Returns
    -------
    (float, float)
        ``(dy, dx)`` in pixels, each in ``[-n/2, n/2)``.

    Raises
    ------
    ValueError
        Shape mismatch or complex input.

    References
    ----------
    Guizar-Sicairos M et al. Opt Lett 2008;33:156-158.
    """
    moving = np.asarray(moving, dtype=np.float64)
    fixed = np.asarray(fixed, dtype=np.float64)
    if moving.shape != fixed.shape or moving.ndim != 2:
        raise ValueError(f"moving {moving.shape} and fixed {fixed.shape} must be equal 2D shapes")
    if weight is not None:
        return register_translation(moving, fixed, weight, robust_iterations=robust_iterations)
    fm = np.fft.fft2(moving - moving.mean())
    ff = np.fft.fft2(fixed - fixed.mean())
    cps = ff * fm.conj()
    cc = np.fft.ifft2(cps).real
    peak = _wrap_peak(np.unravel_index(np.argmax(cc), cc.shape), cc.shape)
    if upsample > 1:
        fine, off = _upsampled_cc(cps, peak, int(upsample), 1.5)
        iy, ix = np.unravel_index(np.argmax(fine.real), fine.shape)
        peak = peak + np.array([off[iy], off[ix]])
    return float(peak[0]), float(peak[1])


def _parabolic_offset(e: np.ndarray, index) -> np.ndarray:
    """Sub-pixel offset of a minimum of a circular map from a parabola through it and its neighbours.

    Per axis ``(e₋ − e₊) / (2(e₋ − 2e₀ + e₊))``, within ±0.5 px (0 where the map is not convex).
    """
    off = np.zeros(2)
    e0 = e[index]
    for ax in range(2):
        nb = []
        for s in (-1, 1):
            i = list(index)
            i[ax] = (i[ax] + s) % e.shape[ax]
            nb.append(e[tuple(i)])
        den = nb[0] - 2.0 * e0 + nb[1]
        if den > 0:
            off[ax] = np.clip(0.5 * (nb[0] - nb[1]) / den, -0.5, 0.5)
    return off


def _wrap_peak(index, shape) -> np.ndarray:
    """Integer index of a circular correlation → signed shift in ``[-n/2, n/2)``."""
    peak = np.array(index, dtype=np.float64)
    shape = np.array(shape)
    return np.where(peak >= shape / 2, peak - shape, peak)


def _ramp(freqs: np.ndarray, shift: float) -> np.ndarray:
    """``exp(−2πi f·d)`` along one axis (a 2D shift ramp is the outer product of two)."""
    return np.exp(-2j * np.pi * freqs * shift)


@functools.lru_cache(maxsize=16)
def _freqs(shape: tuple[int, int]) -> tuple:
    """Frequencies of the ``rfft2`` half spectrum for :func:`_shifted_spectra` (cached, read-only).

    Returns ``(fy, fx, nyq_y, nyq_x)``: ``fy`` all ``ny`` rows and ``fx`` the ``nx//2 + 1`` half
    columns (``fftfreq`` values, cycles/px), and the index of the Nyquist row (``ny`` even) and
    Nyquist column (``nx`` even), else None: there ``f = −1/2`` is its own Hermitian partner.
    """
    ny, nx = shape
    fy = np.fft.fftfreq(ny)
    fx = np.fft.rfftfreq(nx) * np.where(np.arange(nx // 2 + 1) == nx / 2, -1, 1)
    fy.flags.writeable = fx.flags.writeable = False
    return fy, fx, ny // 2 if ny % 2 == 0 else None, nx // 2 if nx % 2 == 0 else None


def _nyquist_factor(order: int, shift: float) -> float:
    """Hermitian part ``Re[(−iπ)^a·e^{iπd}] = π^a·cos(πd − aπ/2)`` of the multiplier ``(2πi f)^a·e^{−2πi f d}`` at ``f = −1/2``."""
    return math.pi ** order * math.cos(math.pi * (shift - 0.5 * order))


def _shifted_spectra(spec: np.ndarray, shift: np.ndarray, freqs: tuple,
                     orders: tuple[tuple[int, int], ...]) -> list[np.ndarray]:
    """Half spectra of the derivatives ``∂_y^a ∂_x^b m(r − d)`` of a Fourier-shifted real image.

    ``Re ifft2(fft2(m)·g)`` for the multipliers ``g = e^{−2πi f·d}·(2πi f_y)^a (2πi f_x)^b``,
    computed from the half spectrum ``spec = rfft2(m)``: ``Re ifft2(X)`` is the inverse of the
    Hermitian part ``(X(f) + conj X(−f))/2``, and since ``fft2(m)`` is Hermitian that is
    ``fft2(m)·(g(f) + conj g(−f))/2``: ``g`` itself except where ``−f`` is ``f`` (a Nyquist row
    or column of an even axis, ``f = −1/2``), where the separable factor of that axis becomes
    its real part :func:`_nyquist_factor`, and at the corner of two Nyquist lines the factor of
    order ``a + b`` at shift ``d_y + d_x``. The returned arrays are therefore exactly the
    ``rfft2`` of the real images (``irfft2`` inverts them; Parseval's sums
    :func:`_derivative_sums` apply).

    Parameters
    ----------
    spec : (..., ny, nx//2 + 1) complex64 or complex128
        ``rfft2(m)``.
    shift : (2,) float
        ``(dy, dx)`` px.
    freqs : tuple
        :func:`_freqs` of ``(ny, nx)``.
    orders : tuple of (a, b)
        Derivative orders along y and x (``(0, 0)``: the shifted image itself).

    Returns
    -------
    list of (..., ny, nx//2 + 1) complex, ``spec``'s dtype, one per order.
    """
    out = []
    for a, b in orders:
        vy, vx, corner = _factors(freqs, shift, a, b)
        o = np.multiply.outer(vy.astype(spec.dtype), vx.astype(spec.dtype))
        if corner is not None:
            o[corner[0]] = corner[1]
        out.append(spec * o)
    return out


def _factors(freqs: tuple, shift, a: int, b: int) -> tuple:
    """Separable factors ``(vy, vx)`` of the Hermitian multiplier of order ``(a, b)`` (:func:`_shifted_spectra`).

    Returns ``vy`` (ny,), ``vx`` (nx//2 + 1,) complex128 and ``corner``: None, or ``((row, col),
    value)`` where two Nyquist lines cross and the multiplier is not ``vy·vx``.
    """
    fy, fx, nyq_y, nyq_x = freqs
    vy = _axis_factors(fy, nyq_y, shift[0], a)[a]
    vx = _axis_factors(fx, nyq_x, shift[1], b)[b]
    corner = None
    if nyq_y is not None and nyq_x is not None:
        corner = ((nyq_y, nyq_x), _nyquist_factor(a + b, shift[0] + shift[1]))
    return vy, vx, corner


_ORDER1 = ((0, 0), (1, 0), (0, 1))   # m, ∂y m, ∂x m
_ORDER2 = ((2, 0), (1, 1), (0, 2))   # ∂yy m, ∂yx m, ∂xx m
_ORDER12 = _ORDER1[1:] + _ORDER2
#: Newton's stopping step in the robust rounds before the last: they only place the next round's
#: weights (a 0.01 px error there moves the final minimiser far less than the 0.02 px noise)
_ROUND_TOL_PX = 1e-2
#: the Gauss–Newton part Σ w·∇m∇mᵀ of the Hessian reuses gradient images from up to this far
#: (relative error ~2π·f·0.05 px, a few %): it sets how fast, not where, the iteration converges
_GRADIENT_REUSE_PX = 0.05


def _axis_factors(f: np.ndarray, nyq: int | None, shift: float, max_order: int) -> list[np.ndarray]:
    """One axis's factors ``(2πi f)^a·e^{−2πi f d}``, ``a = 0..max_order``, Nyquist entry real (:func:`_nyquist_factor`)."""
    ramp = _ramp(f, shift)
    out = [ramp]
    for _ in range(max_order):
        out.append(out[-1] * ((2j * np.pi) * f))
    for a, v in enumerate(out):
        if nyq is not None:
            v[nyq] = _nyquist_factor(a, shift)
    return out


def _derivative_sums(a_spec: np.ndarray, spec: np.ndarray, shift, freqs: tuple,
                     orders: tuple[tuple[int, int], ...], nx: int) -> np.ndarray:
    """``Σ_r a(r)·∂_y^a ∂_x^b m(r − d)`` for real images ``a``, ``m`` from their half spectra.

    Parseval, ``Σ_r a·h = (1/N) Σ_f conj A(f)·H(f)`` over the full spectrum; on the half
    spectrum the columns ``0 < kx < nx/2`` stand for two (their Hermitian partners), column 0 and
    an even ``nx``'s Nyquist column for one, whose sums over ky are real. ``H`` is ``rfft2(m)``
    times the separable multiplier of :func:`_shifted_spectra`, so with ``B = c·conj A·rfft2(m)``
    each sum is the bilinear form ``vyᵀ B vx`` (plus the corner's correction): one pass over
    ``B`` for all orders, no shifted image.

    Parameters
    ----------
    a_spec, spec : (ny, nx//2 + 1) complex
        ``rfft2(a)`` and ``rfft2(m)``.
    shift : (2,) float
        ``d = (dy, dx)`` px.
    freqs : tuple
        :func:`_freqs` of ``(ny, nx)``.
    orders : tuple of (a, b)
        Derivative orders.
    nx : int
        Length of the images' last axis.

    Returns
    -------
    (len(orders),) float64
    """
    c = np.full(spec.shape[1], 2.0)
    c[0] = 1.0
    if nx % 2 == 0:
        c[-1] = 1.0
    fy, fx, nyq_y, nyq_x = freqs
    bm = (a_spec.conj() * spec).astype(np.complex128) * c
    vys = _axis_factors(fy, nyq_y, shift[0], max(a for a, _ in orders))
    vxs = _axis_factors(fx, nyq_x, shift[1], max(b for _, b in orders))
    bx = bm @ np.stack(vxs, axis=1)            # (ny, orders in x)
    out = []
    for a, b in orders:
        v = vys[a] @ bx[:, b]
        if nyq_y is not None and nyq_x is not None:   # the corner's multiplier is not vy·vx
            v += bm[nyq_y, nyq_x] * (_nyquist_factor(a + b, shift[0] + shift[1])
                                     - vys[a][nyq_y] * vxs[b][nyq_x])
        out.append(v.real)
    return np.array(out) / (spec.shape[0] * nx)


def robust_weight(residual: np.ndarray, weight: np.ndarray, sigma_px: float = 2.0,
                  c: float = 2.0) -> np.ndarray:
    """Down-weight regions that do not follow the dominant motion (IRLS, Cauchy-like).

    ``w'(r) = w(r) / (1 + (ρ(r) / (c·ν))²)`` with ``ρ = G_σ * e²`` the local residual energy
    and ``ν`` its median where ``w > 0.1·max w`` (the noise floor when most of the region is
    aligned). The chest wall, which moves 20-50 % as much as the heart, leaves structured
    residual at its edges once the heart is aligned and is thereby excluded.

    Parameters
    ----------
    residual : (y, x) float
        ``moving(r − d) − fixed(r)`` at the current estimate.
    weight : (y, x) float
        Region weight.
    sigma_px : float
        Gaussian σ (px) of the local residual energy.
    c : float
        Tuning constant, in units of the median local residual energy.

    Returns
    -------
    (y, x) float64
    """
    weight = np.asarray(weight, np.float64)
    # only where w > 0 matters: filter its bounding box and the kernel's reach (truncate 4σ)
    box = _support_box(weight, int(4.0 * sigma_px + 0.5))
    rho = gaussian_filter(np.asarray(residual, np.float64)[box] ** 2, sigma_px)
    wb = weight[box]
    nu = max(float(np.median(rho[wb > 0.1 * weight.max()])), 1e-12)
    out = np.zeros_like(weight)
    out[box] = wb / (1.0 + (rho / (c * nu)) ** 2)
    return out


def _support_box(weight: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box of ``weight ≠ 0`` grown by ``margin`` px (clipped to the image); all if empty."""
    rows, cols = np.flatnonzero(weight.any(axis=1)), np.flatnonzero(weight.any(axis=0))
    if not len(rows):
        return slice(None), slice(None)
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def register_translation(moving: np.ndarray, fixed: np.ndarray, weight: np.ndarray,
                         iterations: int = 10, robust_iterations: int = 2, tol: float = 1e-3
                         ) -> tuple[float, float]:
    """Translation minimising the weighted SSD ``Σ w(r)(m(r − d) − f(r))²``, exact Fourier shifts.

    The integer minimum of the expansion ``E(d) = (w ⋆ m²)(d) − 2((w·f) ⋆ m)(d) + c`` (two FFT
    correlations), moved to the vertex of a parabola through its neighbours, starts Newton's
    method on ``E`` with ``m(r − d)`` and its derivatives evaluated spectrally (no
    interpolation, precision limited by noise only: ~0.02 px at PD SNR 20 on the heart,
    bench/bench_moco.py). An iteration shifts ``m`` (one inverse FFT) and transforms
    ``a = w·(m(r − d) − f)`` (one FFT); the gradient ``Σ a·∇m(r − d)`` and the Hessian's second
    term ``Σ a·∇²m(r − d)`` are then bilinear forms of the spectra (:func:`_derivative_sums`,
    Parseval), exact at ``d``; its first term ``Σ w·∇m∇mᵀ`` takes gradient images from within
    0.05 px (they change how fast, not where, the iteration converges). Where the Hessian is not
    positive definite the Gauss–Newton matrix ``Σ w·∇m∇mᵀ`` is used. Gauss–Newton alone
    converged linearly here (contraction 0.5-0.8 with the chest wall in the window: 10-25
    evaluations of 3 FFTs per estimate, some stopped by ``iterations`` 1e-3-1e-2 px short);
    Newton converges quadratically, in 2-4 steps per round, to the same minimiser.
    ``robust_iterations`` rounds of :func:`robust_weight` follow, re-estimating with
    structured-residual regions down-weighted.

    Parameters
    ----------
    moving, fixed : (y, x) float
        Magnitude images, same shape.
    weight : (y, x) float
        Non-negative weight in the fixed frame (e.g. a Hann window on the heart).
    iterations : int
        Newton iterations per round (at most).
    robust_iterations : int
        Re-weighting rounds (0 = plain weighted SSD).
    tol : float
        Stop a round when the update is below ``tol`` px (quadratic convergence: the remaining
        error is then ~tol² px).

    Returns
    -------
    (float, float)
        ``(dy, dx)`` px such that ``fourier_shift(moving, d) ≈ fixed`` on the weighted region.

    Notes
    -----
    The transforms are single precision (scipy.fft, 1.7x faster than double here), the sums
    double: float32 rounding (~1e-7 of the largest value) moves the zero of the gradient by
    ~1e-7·max|m|/(|∇m|·√N) ≈ 1e-8 px, far below ``tol`` and the noise (~0.02 px).

    References
    ----------
    Guizar-Sicairos M et al. Opt Lett 2008;33:156-158 (sub-pixel translation by DFT);
    Holland PW, Welsch RE. Commun Stat 1977;6:813 (iteratively reweighted least squares);
    Nocedal J, Wright SJ. Numerical Optimization, 2nd ed. Springer 2006, ch. 3 and 10 (Newton
    and Gauss–Newton convergence).
    """
    m = np.asarray(moving, dtype=np.float64)
    f = np.asarray(fixed, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if m.shape != f.shape or m.ndim != 2 or w.shape != m.shape:
        raise ValueError(f"moving {m.shape}, fixed {f.shape} and weight {w.shape} must be equal 2D")
    shape = m.shape

    def rfft2(x):   # single-precision transforms, sums in double (see Notes)
        return sfft.rfft2(x.astype(np.float32))

    def irfft2(x):
        return sfft.irfft2(x, s=shape).astype(np.float64)

    # real images: half spectra (rfft2), correlations real by construction (one inverse for both)
    spec = rfft2(m)
    e = irfft2(rfft2(w) * rfft2(m * m).conj() - 2.0 * rfft2(w * f) * spec.conj())
    peak = np.unravel_index(np.argmin(e), e.shape)
    p = _wrap_peak(peak, e.shape) + _parabolic_offset(e, peak)
    freqs = _freqs(shape)
    ww = w
    current = None   # (p, m(r − p)): computed once per point
    grads = None     # (q, ∂y m(r − q), ∂x m(r − q)) at a point q near p, for Σ w·∇m∇mᵀ

    def image(q):
        nonlocal current
        if current is None or current[0] is not q:
            current = (q, irfft2(_shifted_spectra(spec, q, freqs, ((0, 0),))[0]))
        return current[1]

    for rnd in range(robust_iterations + 1):
        if rnd:   # a robust round starts where the last one ended
            ww = robust_weight(image(p) - f, w)
        last = np.inf
        for _ in range(iterations):
            a = ww * (image(p) - f)
            # gradient Σ a·∇m(r − p) and Σ a·∂ij m(r − p), exact at p, from the spectra (Parseval)
            by, bx, syy, syx, sxx = _derivative_sums(rfft2(a), spec, p, freqs, _ORDER12, shape[1])
            if grads is None or np.max(np.abs(p - grads[0])) > _GRADIENT_REUSE_PX:
                sp = _shifted_spectra(spec, p, freqs, _ORDER12[:2])
                grads = (p, irfft2(sp[0]), irfft2(sp[1]))
            _, gy, gx = grads
            wgy = ww * gy
            hyx = wgy.ravel() @ gx.ravel()
            h = np.array([[wgy.ravel() @ gy.ravel(), hyx], [hyx, (ww * gx).ravel() @ gx.ravel()]])
            hn = h + np.array([[syy, syx], [syx, sxx]])
            if hn[0, 0] > 0 and np.linalg.det(hn) > 0:   # else the Gauss–Newton matrix
                h = hn
            step = np.linalg.solve(h + 1e-12 * np.trace(h) * np.eye(2), [by, bx])
            p = p + step
            size = float(np.max(np.abs(step)))
            if size < (tol if rnd == robust_iterations else max(tol, _ROUND_TOL_PX)):
                break
            if size > 0.5 * last:   # not contracting: the next Hessian from gradients at p
                grads = None
            last = size
    return float(p[0]), float(p[1])


def fourier_shift(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Exact (band-limited, circular) sub-pixel shift: ``out(r) = image(r − d)``.

    Parameters
    ----------
    image : (..., y, x) complex or float
        Image(s); a real input gives the real part of the shifted result.
    shift : (float, float)
        ``(dy, dx)`` in pixels.

    Returns
    -------
    (..., y, x), complex64 for complex input, float32 for real.

    Notes
    -----
    Computed in the input's precision (complex64 and float32 in single, scipy.fft), a real
    image on its half spectrum: the real part of the complex result is ``irfft2`` of the
    Hermitian part of the multiplied spectrum (:func:`_shifted_spectra`).
    """
    image = np.asarray(image)
    ny, nx = image.shape[-2:]
    if not np.iscomplexobj(image):
        x = image if image.dtype in (np.float32, np.float64) else image.astype(np.float64)
        spec = _shifted_spectra(sfft.rfft2(x), shift, _freqs((ny, nx)), ((0, 0),))[0]
        return sfft.irfft2(spec, s=(ny, nx)).astype(np.float32)
    ctype = np.complex64 if image.dtype == np.complex64 else np.complex128
    ramp = np.multiply.outer(_ramp(np.fft.fftfreq(ny), shift[0]).astype(ctype),
                             _ramp(np.fft.fftfreq(nx), shift[1]).astype(ctype))
    return sfft.ifft2(sfft.fft2(image) * ramp).astype(np.complex64, copy=False)


# ----------------------------------------------------------------------------- rigid


def _rigid_coords(shape, t: RigidTransform, disp: np.ndarray | None = None,
                  box: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
    """Sampling coordinates ``R(−θ)(q − c − d) + c`` with ``q = r + disp(r)``, at the pixels ``box``."""
    ny, nx = shape
    yy, xx = np.meshgrid(np.arange(ny, dtype=np.float64)[box[0]], np.arange(nx, dtype=np.float64)[box[1]],
                         indexing="ij")
    if disp is not None:
        yy = yy + disp[0]
        xx = xx + disp[1]
    cy, cx = ny // 2, nx // 2
    vy = yy - cy - t.shift[0]
    vx = xx - cx - t.shift[1]
    c, s = np.cos(t.angle_rad), np.sin(t.angle_rad)
    # R(−θ) = [[c, s], [−s, c]] on (y, x)
    return np.stack([c * vy + s * vx + cy, -s * vy + c * vx + cx])


def warp(image: np.ndarray, transform: RigidTransform | None = None,
         displacement: np.ndarray | None = None) -> np.ndarray:
    """Apply a rigid transform (and optional pull-back displacement) to a complex image.

    Pure translations without displacement use :func:`fourier_shift` (exact, noise-preserving);
    otherwise real and imaginary parts are resampled with cubic splines (zero outside).

    Parameters
    ----------
    image : (y, x) complex64 or float
        Image to warp.
    transform : RigidTransform, optional
        Rigid part (identity when None).
    displacement : (2, y, x) float, optional
        Non-rigid pull-back displacement ``(uy, ux)`` in pixels applied before the rigid part:
        ``out(r) = image(T(r + u(r)))``.

    Returns
    -------
    (y, x), complex64 for complex input, float32 for real.
    """
    image = np.asarray(image)
    t = transform or RigidTransform()
    if displacement is None and t.angle_rad == 0.0:
        return fourier_shift(image, t.shift)
    coords = _rigid_coords(image.shape, t, displacement)
    parts = [image.real, image.imag] if np.iscomplexobj(image) else [image]
    out = [map_coordinates(p.astype(np.float64), coords, order=3, mode="constant", cval=0.0)
           for p in parts]
    if np.iscomplexobj(image):
        return (out[0] + 1j * out[1]).astype(np.complex64)
    return out[0].astype(np.float32)


def register_rigid(moving: np.ndarray, fixed: np.ndarray, rotation: bool = True,
                   iterations: int = 30, init: RigidTransform | None = None,
                   tol: float = 1e-3, weight: np.ndarray | None = None) -> RigidTransform:
    """Rigid (translation + rotation) registration by Gauss–Newton on the (weighted) SSD.

    Initialised by :func:`estimate_translation` (unless ``init`` is given); each iteration
    resamples the spline-prefiltered moving image and solves the 3×3 (or 2×2) normal equations
    of ``Σ w(r)(moving(T(r)) − fixed(r))²`` with the analytic Jacobian ``∂w/∂d = −∇w``,
    ``∂w/∂θ = g_y v_x − g_x v_y``; the weight stays in the fixed frame.

    Parameters
    ----------
    moving, fixed : (y, x) float
        Magnitude images.
    rotation : bool
        Estimate the rotation too.
    iterations : int
        Maximum Gauss–Newton iterations.
    init : RigidTransform, optional
        Starting transform.
    tol : float
        Stop when the update is below ``tol`` px (and ``tol`` rad).
    weight : (y, x) float, optional
        Region weight in the fixed frame (uniform when None).

    Returns
    -------
    RigidTransform
        Transform mapping ``moving`` onto ``fixed`` (see :func:`warp`).
    """
    moving = np.asarray(moving, dtype=np.float64)
    fixed = np.asarray(fixed, dtype=np.float64)
    if moving.shape != fixed.shape or moving.ndim != 2:
        raise ValueError(f"moving {moving.shape} and fixed {fixed.shape} must be equal 2D shapes")
    if init is None:
        init = RigidTransform(estimate_translation(moving, fixed, weight=weight), 0.0)
    t = init
    coef = spline_filter(moving, order=3, mode="mirror")
    ny, nx = moving.shape
    # only pixels of non-zero weight enter the sums: resample their bounding box and a 1 px margin
    # (the central differences inside it are those of the whole image)
    box = (slice(None), slice(None))
    if weight is not None:
        wt = np.asarray(weight, np.float64)
        box = _support_box(wt, 1)
        wv = wt[box].ravel()
    yy, xx = np.meshgrid(np.arange(ny, dtype=np.float64)[box[0]], np.arange(nx, dtype=np.float64)[box[1]],
                         indexing="ij")
    if weight is None:
        wv = np.ones(yy.size)
    fixed = fixed[box]
    p = np.array([t.shift[0], t.shift[1], t.angle_rad], dtype=np.float64)
    npar = 3 if rotation else 2
    for _ in range(iterations):
        tt = RigidTransform((p[0], p[1]), p[2])
        w = map_coordinates(coef, _rigid_coords(moving.shape, tt, box=box), order=3, mode="mirror",
                            prefilter=False)
        gy, gx = np.gradient(w)
        vy = yy - ny // 2 - p[0]
        vx = xx - nx // 2 - p[1]
        cols = [-gy.ravel(), -gx.ravel()]
        if rotation:
            cols.append((gy * vx - gx * vy).ravel())
        jac = np.stack(cols, axis=1)
        e = (w - fixed).ravel()
        h = jac.T @ (jac * wv[:, None])
        delta = -np.linalg.solve(h + 1e-9 * np.trace(h) * np.eye(npar), jac.T @ (wv * e))
        p[:npar] += delta
        if np.all(np.abs(delta[:2]) < tol) and (not rotation or abs(delta[2]) < tol * 1e-2):
            break
    return RigidTransform((float(p[0]), float(p[1])), float(p[2]) if rotation else 0.0)


def register_demons(moving: np.ndarray, fixed: np.ndarray, iterations: int = 60,
                    sigma_fluid: float = 1.0, sigma_diffusion: float = 2.0,
                    max_step_px: float = 0.5, smooth_px: float = 0.0) -> np.ndarray:
    """Non-rigid registration by symmetric-force demons with Gaussian regularisation.

    Parameters
    ----------
    moving, fixed : (y, x) float
        Magnitude images, already roughly aligned (e.g. after :func:`register_rigid`).
    iterations : int
        Demons iterations.
    sigma_fluid : float
        Gaussian σ (px) applied to each update (fluid-like regularisation).
    sigma_diffusion : float
        Gaussian σ (px) applied to the accumulated field (diffusion-like regularisation).
    max_step_px : float
        Largest update per iteration, pixels.
    smooth_px : float
        Gaussian σ (px) applied to both images before registering (noise suppression of the
        demons force; 0 = none).

    Returns
    -------
    (2, y, x) float64
        Pull-back displacement ``u`` (pixels): ``moving(r + u(r)) ≈ fixed(r)``.

    References
    ----------
    Thirion JP. Med Image Anal 1998;2:243-260; Vercauteren T et al. NeuroImage 2009;45:S61.
    """
    moving = np.asarray(moving, dtype=np.float64)
    fixed = np.asarray(fixed, dtype=np.float64)
    if smooth_px > 0:
        moving = gaussian_filter(moving, smooth_px)
        fixed = gaussian_filter(fixed, smooth_px)
    scale = max(float(np.percentile(fixed, 99)), 1e-12)
    m = moving / scale
    f = fixed / scale
    coef = spline_filter(m, order=3, mode="mirror")
    ny, nx = m.shape
    grid = np.stack(np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64),
                                indexing="ij"))
    gf = np.stack(np.gradient(f))
    u = np.zeros((2, ny, nx))
    for _ in range(iterations):
        w = map_coordinates(coef, grid + u, order=3, mode="mirror", prefilter=False)
        diff = w - f
        g = 0.5 * (gf + np.stack(np.gradient(w)))
        den = np.sum(g * g, axis=0) + diff * diff
        step = np.where(den > 1e-12, -diff / np.where(den > 1e-12, den, 1.0), 0.0) * g
        norm = np.sqrt(np.sum(step * step, axis=0))
        step *= np.minimum(1.0, max_step_px / np.maximum(norm, 1e-12))
        if sigma_fluid > 0:
            step = np.stack([gaussian_filter(s, sigma_fluid) for s in step])
        u = u + step
        if sigma_diffusion > 0:
            u = np.stack([gaussian_filter(c, sigma_diffusion) for c in u])
    return u


# ----------------------------------------------------------------------------- averaging


def select_key_frame(magnitudes: np.ndarray) -> int:
    """Key frame ``argmin_m median_n ||x_m − x_n||₂`` of repeated magnitude images.

    Parameters
    ----------
    magnitudes : (n, y, x) float
        Repeated magnitude images.

    Returns
    -------
    int
    """
    x = np.asarray(magnitudes, dtype=np.float64).reshape(len(magnitudes), -1)
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    return int(np.argmin(np.median(np.sqrt(d2), axis=1)))


#: central fraction of each axis that the key-frame choice and the registration look at
DEFAULT_ROI_FRACTION = 0.5


def key_frame(ir: np.ndarray, roi_fraction: float = DEFAULT_ROI_FRACTION) -> int:
    """The key frame of repeated IR images: the one repeat every LGE chain outputs in.

    ``argmin_m median_n ||w·(|x_m| − |x_n|)||`` with ``w`` the central Hann window
    (:func:`roi_window`): the repeat most like the others in the heart region. With breathing
    that dwells at end-expiration this is a repeat at end-expiration. Gadgetron's CMR MOCO
    picks its key frame this way and registers every repeat to it; PSIRNet's input repeat is
    the one closest to the MOCO average, i.e. the key frame, and its target is the MOCO average
    in that frame. ``psir_classic`` and ``psirnet_lge`` reconstruct this repeat and
    ``psir_moco`` averages into it.

    Parameters
    ----------
    ir : (n, y, x) complex or real
        Repeated IR images (magnitude is used).
    roi_fraction : float in (0, 1]
        Central fraction of each axis weighted by the window (1 = whole image).

    Returns
    -------
    int
        Index into the first axis.

    References
    ----------
    Kellman P, Larson AC, Hsu L-Y, et al. MRM 2005;53:194-200.
    """
    ir = np.asarray(ir)
    if ir.ndim != 3 or len(ir) < 1:
        raise StepError(f"key frame needs (n, y, x) repeats, got shape {ir.shape}")
    if len(ir) == 1:
        return 0
    w = roi_window(ir.shape[1:], roi_fraction)
    return select_key_frame(np.abs(ir).astype(np.float64) * w[None])


def _check_repeats(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or not np.iscomplexobj(x) or len(x) < 1:
        raise ValueError(f"{name} must be (n, y, x) complex with n >= 1, got {x.shape} {x.dtype}")
    return x


def plain_average(ir_repeats: np.ndarray, pd_repeats: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Average without registration, ``(1/√n)·Σ_k x_k`` (noise σ preserved).

    Parameters
    ----------
    ir_repeats, pd_repeats : (n, y, x) complex64
        Repeated coil-combined IR and PD images, SNR units.

    Returns
    -------
    ir_avg, pd_avg : (y, x) complex64
    """
    ir = _check_repeats(ir_repeats, "ir_repeats")
    pd = _check_repeats(pd_repeats, "pd_repeats")
    if ir.shape != pd.shape:
        raise ValueError(f"ir_repeats {ir.shape} and pd_repeats {pd.shape} differ")
    n = len(ir)
    return ((ir.sum(axis=0) / np.sqrt(n)).astype(np.complex64),
            (pd.sum(axis=0) / np.sqrt(n)).astype(np.complex64))


def choose_repeat(ir: np.ndarray, repeat: int, roi_fraction: float = DEFAULT_ROI_FRACTION) -> int:
    """Position of the repeat a single-shot step reconstructs: ``repeat``, or the key frame (-1).

    Parameters
    ----------
    ir : (n, y, x) complex
        The repeats' IR images (only used for the key frame).
    repeat : int
        Position, or -1 for :func:`key_frame`.
    roi_fraction : float
        Region of the key-frame comparison.

    Raises
    ------
    ValueError
        ``repeat`` outside ``-1, 0..n−1``.
    """
    n = len(ir)
    if repeat == -1:
        return key_frame(ir, roi_fraction)
    if 0 <= repeat < n:
        return int(repeat)
    raise ValueError(f"repeat = {repeat} is outside the {n} repeats (0..{n - 1}, or -1 for "
                    "the key frame)")


def roi_window(shape: tuple[int, int], roi_fraction: float) -> np.ndarray:
    """Separable Hann weight spanning the central ``roi_fraction`` of each image axis.

    Cardiac scans are planned with the heart at the isocentre, so a central window focuses
    registration and repeat selection on the heart rather than on the chest wall, which moves
    differently with breathing.

    Parameters
    ----------
    shape : (ny, nx)
    roi_fraction : float
        In (0, 1]; 1 gives uniform weight 1 (whole image).

    Returns
    -------
    (ny, nx) float64 weight in [0, 1].
    """
    if not 0 < roi_fraction <= 1:
        raise StepError(f"roi_fraction = {roi_fraction!r} must be in (0, 1]")
    if roi_fraction == 1:
        return np.ones(shape)
    ws = []
    for n in shape:
        m = max(int(round(roi_fraction * n)), 3)
        w = np.zeros(n)
        start = n // 2 - m // 2
        w[start:start + m] = np.hanning(m + 2)[1:-1]
        ws.append(w)
    return np.outer(ws[0], ws[1])


@dataclass
class MocoResult:
    """Output of :func:`moco_average`.

    Attributes
    ----------
    ir, pd : (y, x) complex64
        Averaged images, SNR units (noise σ = 1).
    key_index : int
        Key frame.
    shifts : (n, 2) float
        Translation ``(dy, dx)`` px that maps each repeat's IR onto the key frame (rigid part).
    angles_rad : (n,) float
        Rotation of each repeat's IR transform (0 unless significant, see ``min_rotation_px``).
    similarity : (n,) float
        Weighted correlation of each registered IR magnitude with the key frame's.
    kept : (K,) int
        Averaged repeats.
    recentre_shift : (2,) float
        Shift ``(dy, dx)`` px applied to the average (``reference="mean"``).
    pd_shift : (2,) float
        Shift applied to the averaged PD to align it with the averaged IR.
    pd_shifts : (n, 2) float
        Translation applied to each repeat's PD (its own registration to the key PD with
        ``pd_registration="pd"``, else equal to ``shifts``).
    residual : (n,) float
        Post-registration excess residual of each repeat in the window (the larger of IR's
        and PD's), in units of the noise variance per pixel (0 for the key frame and for
        noise-only differences), see :func:`excess_residual`.
    """

    ir: np.ndarray
    pd: np.ndarray
    key_index: int
    shifts: np.ndarray
    angles_rad: np.ndarray
    similarity: np.ndarray
    kept: np.ndarray
    recentre_shift: np.ndarray
    pd_shift: np.ndarray
    pd_shifts: np.ndarray | None = None
    residual: np.ndarray | None = None


def _wcorr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    sw = w.sum()
    a = a - (a * w).sum() / sw
    b = b - (b * w).sum() / sw
    den = np.sqrt((w * a * a).sum() * (w * b * b).sum())
    return float((w * a * b).sum() / den) if den > 0 else 0.0


def _grad_mag(x: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(np.asarray(x, dtype=np.float64))
    return np.hypot(gy, gx)


def register_repeat(moving: np.ndarray, fixed: np.ndarray, weight: np.ndarray,
                    transform: str = "rigid", robust_iterations: int = 2,
                    min_rotation_px: float = 0.25) -> RigidTransform:
    """Rigid part of one repeat's registration to the key frame, on magnitudes.

    Translation by weighted SSD with exact Fourier shifts and robust re-weighting
    (:func:`register_translation`); for ``rigid``/``nonrigid`` a rotation is then estimated
    (:func:`register_rigid`, same robust weights) but kept only when it moves some point of
    the window by at least ``min_rotation_px`` — otherwise the cubic-spline resampling a
    rotation needs would blur the image (and smooth the noise) for no gain.

    Parameters
    ----------
    moving, fixed : (y, x) float
        Magnitudes of the repeat and of the key frame.
    weight : (y, x) float
        Region weight in the key frame (:func:`roi_window`).
    transform : {"translation", "rigid", "nonrigid"}
    robust_iterations : int
    min_rotation_px : float
        Smallest rotation-induced displacement (px, at the window's edge) worth resampling for.

    Returns
    -------
    RigidTransform
    """
    moving = np.asarray(moving, np.float64)
    fixed = np.asarray(fixed, np.float64)
    t = RigidTransform(register_translation(moving, fixed, weight,
                                            robust_iterations=robust_iterations), 0.0)
    if transform == "translation":
        return t
    resid = fourier_shift(moving, t.shift).astype(np.float64) - fixed
    rw = robust_weight(resid, weight) if robust_iterations else weight
    # to 0.01 px / 1e-4 rad to decide (a rotation is usually dropped); a kept one is refined from
    # there to register_rigid's own tolerance, the minimiser a single run would have reached
    r = register_rigid(moving, fixed, rotation=True, init=t, weight=rw, tol=_ROUND_TOL_PX)
    ny, nx = moving.shape
    sel = np.argwhere(weight > 0.1 * weight.max())
    radius = float(np.max(np.hypot(sel[:, 0] - ny // 2, sel[:, 1] - nx // 2))) if len(sel) else 0.0
    if abs(r.angle_rad) * radius < min_rotation_px:
        return t
    return register_rigid(moving, fixed, rotation=True, init=r, weight=rw)


def two_layer_warp(image: np.ndarray, key_magnitude: np.ndarray, heart_shift: tuple[float, float],
                   weight: np.ndarray, sigma_px: float = 2.0, kappa: float = 2.0,
                   noise_sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-rigid alignment as two translating layers: the heart and the body wall.

    With breathing the intrathoracic organs (heart, lungs, liver) translate together while the
    chest wall moves 20-50 % as much and slides past them, so a single translation leaves the
    chest wall — inside the 10 mm margin around the heart — misaligned by 1-3 px, and a smooth
    deformation (demons) cannot represent the sliding interface. Here the repeat is shifted
    exactly (Fourier) by the heart translation *and* by a body-wall translation (weighted SSD
    outside the heart window, :func:`register_translation` with weight ``1 − w``); per pixel
    the wall layer replaces the heart layer only where its local residual energy against the
    key frame, ``ρ = G_σ * (|S_t x| − |x_key|)²``, is clearly lower (by ``> 2κτ``, ``τ`` the
    noise standard deviation of ``ρ``), through a smoothed logistic switch. Where the switch is
    0 (the heart, flat regions) the output is the exact Fourier shift: no interpolation blur,
    noise white with σ unchanged.

    Parameters
    ----------
    image : (y, x) complex
        Repeat, SNR units.
    key_magnitude : (y, x) float
        Magnitude of the key frame.
    heart_shift : (float, float)
        Heart translation ``(dy, dx)`` px (:func:`register_repeat`).
    weight : (y, x) float
        Heart window (:func:`roi_window`), in [0, 1].
    sigma_px : float
        Gaussian σ (px) of the local residual energy.
    kappa : float
        Switching threshold in units of ``τ``.
    noise_sigma : float
        Noise σ per pixel.

    Returns
    -------
    warped : (y, x) complex64
    wall_shift : (2,) float
        Body-wall translation, px.
    alpha : (y, x) float
        Weight of the wall layer in [0, 1].
    """
    m = np.abs(np.asarray(image)).astype(np.float64)
    mk = np.asarray(key_magnitude, np.float64)
    t_w = np.array(register_translation(m, mk, 1.0 - weight, robust_iterations=2))
    heart = fourier_shift(image, heart_shift)
    wall = fourier_shift(image, tuple(t_w))
    # ρ_heart − ρ_wall in one filter (G_σ is linear): the switch needs only the difference
    drho = gaussian_filter((np.abs(heart).astype(np.float64) - mk) ** 2
                           - (np.abs(wall).astype(np.float64) - mk) ** 2, sigma_px)
    tau = 2.0 * noise_sigma ** 2 / np.sqrt(4.0 * np.pi * sigma_px ** 2)
    alpha = gaussian_filter(expit((drho - 2.0 * kappa * tau) / tau), 1.0)
    return ((1.0 - alpha) * heart + alpha * wall).astype(np.complex64), t_w, alpha


def excess_residual(warped: np.ndarray, key: np.ndarray, weight: np.ndarray,
                    noise_sigma: float = 1.0) -> float:
    """Weighted mean ``|W(x_k) − x_key|²`` beyond the noise floor, in units of σ².

    Two independent complex images with noise σ each differ by noise of variance ``2σ²``;
    ``e = Σ w|W(x_k) − x_key|² / (2σ²Σw) − 1`` is then the mismatch energy (through-plane
    motion, misregistration, structures that moved differently, phase change) per pixel
    relative to the noise, ≈ 0 ± √(2/N_eff)·… for a perfectly registered repeat.

    Parameters
    ----------
    warped, key : (y, x) complex
        Registered repeat and key frame, SNR units.
    weight : (y, x) float
    noise_sigma : float
        Noise σ per pixel (1 in SNR units).

    Returns
    -------
    float
    """
    d2 = np.abs(np.asarray(warped) - np.asarray(key)) ** 2
    return float((weight * d2).sum() / (2 * noise_sigma ** 2 * weight.sum()) - 1.0)


def estimate_noise_sigma(registered: list[np.ndarray], key: int, region: np.ndarray) -> float:
    """Noise σ of registered repeats from their differences to the key frame, robustly.

    After GRAPPA or SENSE the image noise is σ = g·1 (g-factor > 1, highest mid-FOV), not the
    unit σ of the prewhitened data, so the repeats' own differences set the noise floor:
    ``d = W(x_k) − x_key`` is complex Gaussian with ``E|d|² = 2σ²`` where the repeats agree,
    ``|d|²`` exponential with median ``2σ² ln 2``; the median over ``region`` ignores the
    minority of pixels that disagree (edges that moved differently).

    Parameters
    ----------
    registered : n arrays (y, x) complex, the repeats registered to the key frame.
    key : int
    region : (y, x) bool, where to look (the heart window).

    Returns
    -------
    float
        σ (1 for a single repeat: nothing to compare).
    """
    meds = [np.median(np.abs(registered[k] - registered[key])[region] ** 2)
            for k in range(len(registered)) if k != key]
    if not meds:
        return 1.0
    return float(np.sqrt(np.median(meds) / (2.0 * np.log(2.0))))


def select_repeats(residual: np.ndarray, key: int, max_keep: int, reject_mad: float | None = 3.0
                   ) -> np.ndarray:
    """Repeats to average: robust outlier rejection, then the size that minimises the MSE.

    1. outliers: excess residual ``e_k > median + reject_mad·1.4826·MAD`` of the non-key
       repeats (and ``e_k > 0.25``, a mismatch of at least a quarter of the noise variance);
    2. the rest sorted by ``e_k``; the average of the key and the first ``K − 1`` has
       predicted relative MSE ``1/K + (Σ_k √e_k / K)²`` (noise, plus the repeats' mismatches
       added coherently, the conservative case), minimised over ``K ≤ max_keep``.

    Parameters
    ----------
    residual : (n,) float
        :func:`excess_residual` of each repeat (the key's ignored).
    key : int
    max_keep : int
        Upper bound on the number averaged (≥ 1).
    reject_mad : float, optional
        Outlier threshold in robust standard deviations; None disables step 1.

    Returns
    -------
    (K,) int, sorted, always containing ``key``.
    """
    e = np.clip(np.asarray(residual, np.float64), 0.0, None)
    others = np.array([k for k in range(len(e)) if k != key], dtype=int)
    if len(others) and reject_mad is not None:
        med = np.median(e[others])
        mad = 1.4826 * np.median(np.abs(e[others] - med))
        others = others[(e[others] <= med + reject_mad * mad) | (e[others] <= 0.25)]
    others = others[np.argsort(e[others], kind="stable")]
    m = np.concatenate([[0.0], np.cumsum(np.sqrt(e[others]))])
    sizes = np.arange(1, len(others) + 2)
    mse = 1.0 / sizes + (m / sizes) ** 2
    k_best = int(np.argmin(mse[:max(1, max_keep)])) + 1
    return np.sort(np.concatenate([[key], others[:k_best - 1]])).astype(int)


def _pd_to_ir_shift(ir_avg: np.ndarray, pd_avg: np.ndarray, weight: np.ndarray,
                    max_shift_px: float) -> np.ndarray:
    """Translation aligning the averaged PD with the averaged IR (different contrast).

    Weighted SSD (weight on the IR, :func:`register_translation`) between gradient-magnitude
    images each normalised to unit weighted RMS; rejected (zero) beyond ``max_shift_px`` or
    when it does not raise their weighted correlation.
    """
    gi = _grad_mag(gaussian_filter(np.abs(ir_avg).astype(np.float64), 0.7))
    gp = _grad_mag(gaussian_filter(np.abs(pd_avg).astype(np.float64), 0.7))
    gi = gi / max(np.sqrt((weight * gi * gi).sum() / weight.sum()), 1e-12)
    gp = gp / max(np.sqrt((weight * gp * gp).sum() / weight.sum()), 1e-12)
    d = np.array(register_translation(gp, gi, weight, robust_iterations=0))
    if not np.hypot(*d) <= max_shift_px:
        return np.zeros(2)
    if _wcorr(fourier_shift(gp, tuple(d)), gi, weight) <= _wcorr(gp, gi, weight):
        return np.zeros(2)
    return d


def moco_average(ir: np.ndarray, pd: np.ndarray, transform: str = "rigid",
                 keep_fraction: float = 1.0, roi_fraction: float = DEFAULT_ROI_FRACTION,
                 reference: str = "key", register_pd_to_ir: bool = True,
                 max_pd_shift_px: float = 5.0, upsample: int = 20,
                 demons_iterations: int = 60, robust_iterations: int = 2,
                 min_rotation_px: float = 0.25, reject_mad: float | None = 3.0,
                 pd_registration: str = "pd", noise_sigma: float | None = None,
                 nonrigid_model: str = "layers") -> MocoResult:
    """Motion-corrected average of IR/PD repeats, registered on a central (heart) region.

    Kellman 2005 MOCO from this module's building blocks:

    1. key frame ``argmin_m median_n ||w·(|x_m| − |x_n|)||`` (:func:`key_frame`), ``w`` the
       central Hann window (:func:`roi_window`, ``roi_fraction``);
    2. each repeat's IR magnitude registered to the key IR (:func:`register_repeat`: weighted
       SSD with ``w`` in the key frame only, exact Fourier shifts, robust re-weighting that
       drops the chest wall; rotation only when significant); with ``pd_registration="pd"``
       each PD likewise to the key PD (PD and IR of a repeat are a heartbeat apart and need
       not share a position), with ``"ir"`` the PD takes its IR's transform;
    3. ``nonrigid``: the body wall, which moves less than the heart, is aligned too — by
       default as a second translating layer (:func:`two_layer_warp`: exact Fourier shifts
       blended where the wall layer fits better; on the bench it cuts the heart-margin
       mismatch 2-5×, where demons halves it and blurs), or with ``nonrigid_model="demons"``
       by a demons field (Thirion 1998) on the smoothed PD magnitudes applied by cubic-spline
       resampling after the exact Fourier shift;
    4. repeats chosen by post-registration residual (:func:`excess_residual`,
       :func:`select_repeats`: robust ``median + reject_mad·MAD`` outlier rejection — deep
       breaths, through-plane motion — then the count that minimises the predicted MSE), at
       most ``ceil(keep_fraction·n)``; the key frame always;
    5. ``x̄ = (1/√K) Σ_k W_k(x_k)`` — noise σ stays 1, signal grows by √K;
    6. ``reference="key"`` (default) keeps the key frame's position, the clinical convention
       (Gadgetron's CMR MOCO, PSIRNet's targets); ``"mean"`` shifts the average to the mean
       position of *all* repeats (−mean of their translations);
    7. optionally align the averaged PD to the averaged IR (:func:`_pd_to_ir_shift`,
       translation on normalised gradient magnitudes, at most ``max_pd_shift_px``).

    Parameters
    ----------
    ir, pd : (n, y, x) complex64
        Coil-combined repeats, SNR units (noise σ = ``noise_sigma``).
    transform : {"translation", "rigid", "nonrigid"}
    keep_fraction : float in (0, 1]
        Upper bound on the fraction of repeats averaged (the residual-based selection decides).
    roi_fraction : float in (0, 1]
        Central fraction of each axis covered by the registration/selection window.
    reference : {"key", "mean"}
    register_pd_to_ir : bool
    max_pd_shift_px : float
    upsample : int
        Kept for compatibility; the weighted registration is not grid-limited.
    demons_iterations : int
    robust_iterations : int
        Robust re-weighting rounds of each translation estimate.
    min_rotation_px : float
        Rotations moving the window's edge by less than this many pixels are dropped.
    reject_mad : float, optional
        Outlier threshold (robust standard deviations of the residuals); None = no rejection.
    pd_registration : {"pd", "ir"}
    noise_sigma : float or None
        Noise σ per pixel of the inputs; None (default) estimates it from the registered
        repeats (:func:`estimate_noise_sigma`): after parallel imaging it is g·1, not 1.
    nonrigid_model : {"layers", "demons"}
        Model of the ``nonrigid`` transform.

    Returns
    -------
    MocoResult

    Raises
    ------
    StepError
        Bad shapes or parameters.

    References
    ----------
    Kellman P, Larson AC, Hsu L-Y, et al. MRM 2005;53:194-200.
    Guizar-Sicairos M et al. Opt Lett 2008;33:156. Thirion JP. Med Image Anal 1998;2:243.
    """
    ir = np.asarray(ir)
    pd = np.asarray(pd)
    if ir.ndim != 3 or ir.shape != pd.shape or not np.iscomplexobj(ir) or len(ir) < 1:
        raise StepError(f"MOCO needs (n, y, x) complex IR and PD repeats of equal shape, got "
                        f"{ir.shape} {ir.dtype} and {pd.shape}")
    if transform not in ("translation", "rigid", "nonrigid"):
        raise StepError(f"MOCO transform '{transform}' is unknown; known: translation, rigid, nonrigid")
    if reference not in ("mean", "key"):
        raise StepError(f"MOCO reference '{reference}' is unknown; known: mean, key")
    if nonrigid_model not in ("layers", "demons"):
        raise StepError(f"MOCO nonrigid_model '{nonrigid_model}' is unknown; known: layers, demons")
    if pd_registration not in ("pd", "ir"):
        raise StepError(f"MOCO pd_registration '{pd_registration}' is unknown; known: pd, ir")
    if not 0 < keep_fraction <= 1:
        raise StepError(f"MOCO keep_fraction = {keep_fraction!r} must be in (0, 1]")
    n = len(ir)
    w = roi_window(ir.shape[1:], roi_fraction)
    key = key_frame(ir, roi_fraction)
    mi = np.abs(ir).astype(np.float64)
    mp = np.abs(pd).astype(np.float64)
    shifts, pd_shifts = np.zeros((n, 2)), np.zeros((n, 2))
    angles, sim, resid = np.zeros(n), np.zeros(n), np.zeros(n)
    warped_ir, warped_pd = [], []
    sel = w > 0.1
    # loops, not cmrecon.parallel.pmap: two threads gave the same wall time at 1.27x the CPU
    # (the registrations' many small transforms and array operations hold the GIL)
    transforms = []
    for k in range(n):
        t_ir = t_pd = RigidTransform()
        if k != key:
            t_ir = register_repeat(mi[k], mi[key], w, transform, robust_iterations, min_rotation_px)
            t_pd = (register_repeat(mp[k], mp[key], w, transform, robust_iterations,
                                    min_rotation_px) if pd_registration == "pd" else t_ir)
        transforms.append((t_ir, t_pd))
    rigid_pd = [warp(pd[k], transforms[k][1]) for k in range(n)]   # each PD warped once
    if noise_sigma is None:
        noise_sigma = estimate_noise_sigma(rigid_pd, key, sel)
    layers = transform == "nonrigid" and nonrigid_model == "layers"
    for k in range(n):
        t_ir, t_pd = transforms[k]
        if layers and k != key:   # the two-layer warp replaces the rigid one where there is no rotation
            wi = (two_layer_warp(ir[k], mi[key], t_ir.shift, w, noise_sigma=noise_sigma)[0]
                  if t_ir.angle_rad == 0.0 else warp(ir[k], t_ir))
            wp = (two_layer_warp(pd[k], mp[key], t_pd.shift, w, noise_sigma=noise_sigma)[0]
                  if t_pd.angle_rad == 0.0 else rigid_pd[k])
        else:
            wi, wp = warp(ir[k], t_ir), rigid_pd[k]
        if transform == "nonrigid" and k != key and not layers:
            u = register_demons(np.abs(wp), mp[key], iterations=demons_iterations, smooth_px=1.0)
            wi, wp = warp(wi, None, u), warp(wp, None, u)
        shifts[k], pd_shifts[k], angles[k] = t_ir.shift, t_pd.shift, t_ir.angle_rad
        warped_ir.append(wi)
        warped_pd.append(wp)
        sim[k] = _wcorr(np.abs(wi)[sel], mi[key][sel], w[sel])
        if k != key:
            resid[k] = max(excess_residual(wi, ir[key], w, noise_sigma),
                           excess_residual(wp, pd[key], w, noise_sigma))
    kept = select_repeats(resid, key, int(np.ceil(keep_fraction * n)), reject_mad)
    scale = 1.0 / np.sqrt(len(kept))
    ir_avg = (np.sum([warped_ir[k] for k in kept], axis=0) * scale).astype(np.complex64)
    pd_avg = (np.sum([warped_pd[k] for k in kept], axis=0) * scale).astype(np.complex64)
    recentre = np.zeros(2)
    if reference == "mean" and n > 1:
        recentre = -shifts.mean(axis=0)
        ir_avg = fourier_shift(ir_avg, tuple(recentre))
        pd_avg = fourier_shift(pd_avg, tuple(recentre))
    pd_shift = np.zeros(2)
    if register_pd_to_ir:
        pd_shift = _pd_to_ir_shift(ir_avg, pd_avg, w, max_pd_shift_px)
        if np.any(pd_shift):
            pd_avg = fourier_shift(pd_avg, tuple(pd_shift))
    return MocoResult(ir=ir_avg, pd=pd_avg, key_index=int(key), shifts=shifts, angles_rad=angles,
                      similarity=sim, kept=kept, recentre_shift=recentre, pd_shift=pd_shift,
                      pd_shifts=pd_shifts, residual=resid)
