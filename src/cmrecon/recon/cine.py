"""Cine reconstruction numerics: per-phase CG-SENSE and low rank + sparse (L+S), in torch.

Both reconstruct every cardiac phase of one slice from Cartesian multi-coil k-space with the
encoding ``E = M·F·S`` of each phase (:func:`cine_encoding`): coil maps ``S`` shared by the
phases, one centred orthonormal 2D FFT ``F`` (:mod:`cmrecon.recon.fft`), the phase's row mask
``M``. Numpy in, numpy out; torch inside (batched FFTs), on the CPU unless ``device`` says
otherwise. Threads are the process's (:mod:`cmrecon.runtime`); nothing here sets them.

Arrays follow :mod:`cmrecon.axes`:

* ``kspace (T, C, ky, kx)`` complex64, prewhitened, zero where not sampled;
* ``maps (C, ky, kx)`` complex64, ``Σ_c |S_c|² = 1`` inside the support, 0 outside;
* ``mask (T, ky)`` bool, the rows sampled in each phase;
* images ``(T, ky, kx)`` complex64 on the k-space grid, SNR units (cropping to the recon
  matrix is the caller's job).

Speed. The iterations need only the normal operator ``E^H E``. With whole rows sampled, the
readout FFT of ``F`` cancels in ``F^H M F``, and the centring shifts move onto the mask, so
``E^H E`` is ``S^H · IFFT_y · M' · FFT_y · S`` on images that are ``ifftshift``-ed along y
(``M' = ifftshift(M)``). Both algorithms treat pixels alike (inner products, the Casorati matrix,
the per-pixel temporal FFT), so they run on images permuted once into that frame (and transposed
so that y is the contiguous axis), with preallocated work arrays: 3–4× less CPU time per
``E^H E`` than applying ``E`` and ``E^H`` as written (128², 20 phases, 10 coils).
:class:`CineGram` is tested against ``E.H @ E``.

References
----------
Pruessmann KP, Weiger M, Börnert P, Boesiger P. Advances in sensitivity encoding with arbitrary
k-space trajectories. MRM 2001;46:638-651 (CG-SENSE).
Otazo R, Candès E, Sodickson DK. Low-rank plus sparse matrix decomposition for accelerated
dynamic MRI with separation of background and dynamic components. MRM 2015;73:1125-1136.
Lin CY, Fessler JA. Efficient dynamic parallel MRI reconstruction for the low-rank plus sparse
model. IEEE Trans Comput Imaging 2019;5:17-26 (L+S with POGM).
Kim D, Fessler JA. Adaptive restart of the optimized gradient method for convex optimization.
J Optim Theory Appl 2018;178:240-263 (POGM with gradient restart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from cmrecon.errors import Cancelled
from cmrecon.recon.operators import LinearOp, sense_operator

__all__ = ["CineGram", "LpsResult", "cine_encoding", "cine_sense", "lps"]

_METHODS = ("ist", "pogm")


# ----------------------------------------------------------------------------- validation


def _check(kspace, maps, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes that agree, as complex64 / bool arrays; ValueError naming the arrays otherwise."""
    kspace = np.asarray(kspace)
    maps = np.asarray(maps)
    mask = np.asarray(mask)
    if kspace.ndim != 4:
        raise ValueError(f"kspace must be (phases, coils, ky, kx), got shape {kspace.shape}")
    if not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex, got dtype {kspace.dtype}")
    if maps.shape != kspace.shape[1:]:
        raise ValueError(f"maps shape {maps.shape} must be (coils, ky, kx) = {kspace.shape[1:]} "
                         f"of kspace shape {kspace.shape}")
    if mask.shape != kspace.shape[:1] + kspace.shape[2:3]:
        raise ValueError(f"mask shape {mask.shape} must be (phases, ky) = "
                         f"{kspace.shape[:1] + kspace.shape[2:3]} of kspace shape {kspace.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    return kspace.astype(np.complex64), maps.astype(np.complex64), mask


#: ``should_stop()``: asked once per iteration, before it; True stops the iterations with
#: :class:`~cmrecon.errors.Cancelled` (a server passes its session's cancel flag).
ShouldStop = Callable[[], bool]


def _stop_if_asked(should_stop: ShouldStop | None, what: str, done: int, iterations: int) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} stopped as asked after {done} of at most {iterations} iterations")


def _check_iterations(iterations, tol) -> None:
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be a whole number >= 0, got {iterations!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")


# ----------------------------------------------------------------------------- operators


class _PhaseImages(LinearOp):
    """``(T, y, x)`` images ↔ ``(T, 1, y, x)``: the coil axis that :func:`sense_operator` expects."""

    def forward(self, x):
        return x[:, None]

    def adjoint(self, y):
        return y[:, 0]


def cine_encoding(maps: torch.Tensor, mask: torch.Tensor) -> LinearOp:
    """Cine encoding ``E = M·F·S`` of every phase: images ``(T, y, x)`` → k-space ``(T, C, ky, kx)``.

    Built from :func:`cmrecon.recon.operators.sense_operator` (one centred orthonormal FFT), so it
    composes with ``@`` and ``E.H`` is the adjoint ``S^H·F^H·M`` (coil combination of the
    zero-filled inverse FFT of each phase).

    Parameters
    ----------
    maps : (C, ky, kx) complex64 tensor
        Coil sensitivities, ``Σ_c |S_c|² = 1`` inside the support.
    mask : (T, ky) bool tensor
        Rows sampled in each phase.

    Returns
    -------
    LinearOp
    """
    return sense_operator(maps[None], mask[:, None, :, None]) @ _PhaseImages()


class CineGram:
    """``E^H E`` of the cine encoding, on images in the work frame (see the module notes).

    The work frame of images ``(T, y, x)`` is ``ifftshift`` along y, then transposed:
    ``(T, x, y)``; :meth:`to_work` / :meth:`from_work` convert. In it
    ``E^H E x = Σ_c conj(S_c) · IFFT_y(M' · FFT_y(S_c · x))`` with orthonormal 1D FFTs over the
    last (contiguous) axis. Work arrays of ``(T, C, x, y)`` are allocated once; calls are not
    thread-safe and the returned tensor is overwritten by the next call.

    Parameters
    ----------
    maps : (C, ky, kx) complex64 tensor
    mask : (T, ky) bool tensor
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor):
        nt, (nc, ny, nx) = mask.shape[0], maps.shape
        self.maps = self.to_work(maps)[None]                      # (1, C, x, y)
        self.maps_conj = self.maps.conj().resolve_conj()
        self.mask = torch.fft.ifftshift(mask, dim=-1).to(maps.dtype)[:, None, None, :]  # (T,1,1,y)
        self._coil = torch.empty((nt, nc, nx, ny), dtype=maps.dtype, device=maps.device)
        self._k = torch.empty_like(self._coil)
        self._out = torch.empty((nt, nx, ny), dtype=maps.dtype, device=maps.device)

    @staticmethod
    def to_work(images: torch.Tensor) -> torch.Tensor:
        """``(..., y, x)`` → ``(..., x, y)`` work frame (``ifftshift`` along y, transposed)."""
        return torch.fft.ifftshift(images, dim=-2).transpose(-1, -2).contiguous()

    @staticmethod
    def from_work(work: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_work`."""
        return torch.fft.fftshift(work.transpose(-1, -2), dim=-2).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``E^H E x`` for work-frame images ``x (T, x, y)``; returns ``(T, x, y)``."""
        torch.mul(self.maps, x[:, None], out=self._coil)
        torch.fft.fft(self._coil, dim=-1, norm="ortho", out=self._k)
        self._k.mul_(self.mask)
        torch.fft.ifft(self._k, dim=-1, norm="ortho", out=self._coil)
        self._coil.mul_(self.maps_conj)
        return torch.sum(self._coil, dim=1, out=self._out)


def _setup(kspace, maps, mask, device):
    """Validated tensors, ``E^H d`` in the work frame and the Gram operator."""
    kspace, maps, mask = _check(kspace, maps, mask)
    device = torch.device(device)
    maps_t = torch.from_numpy(maps).to(device)
    mask_t = torch.from_numpy(mask).to(device)
    enc = cine_encoding(maps_t, mask_t)
    rhs = CineGram.to_work(enc.H(torch.from_numpy(kspace).to(device)))
    return rhs, CineGram(maps_t, mask_t)


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    """``Re <a, b>`` over all elements."""
    return float(torch.dot(torch.view_as_real(a).flatten(), torch.view_as_real(b).flatten()))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re <a, b>`` per phase: ``(T, ...)`` → ``(T,)`` float."""
    return (torch.view_as_real(a) * torch.view_as_real(b)).flatten(1).sum(1)


# ----------------------------------------------------------------------------- CG-SENSE


def cine_sense(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, lam: float = 1e-3,
               iterations: int = 30, tol: float = 1e-6, device: str | torch.device = "cpu",
               should_stop: ShouldStop | None = None) -> np.ndarray:
    """Per-phase CG-SENSE: each phase solves ``(E_t^H E_t + λI) ρ_t = E_t^H d_t`` on its own.

    The phases run as one batch, but every phase has its own conjugate-gradient step sizes and
    stops on its own residual (a phase that has converged is frozen): the result is that of a
    separate CG per phase (:func:`cmrecon.recon.sense.cg_sense`), not of one CG on the
    block-diagonal system, whose shared step sizes would couple the phases' iterates.

    Parameters
    ----------
    kspace : (T, C, ky, kx) complex64
        Prewhitened k-space, zero where not sampled.
    maps : (C, ky, kx) complex64
        Coil sensitivities, ``Σ_c |S_c|² = 1`` inside the support.
    mask : (T, ky) bool
        Rows sampled in each phase.
    lam : float
        Tikhonov weight (≥ 0), units of ``Σ|S|²``.
    iterations : int
        Maximum CG iterations per phase.
    tol : float
        A phase stops when its residual norm falls below ``tol`` times its initial one.
    device : str or torch.device
        Where to compute (``cpu``; ``cuda`` when available).
    should_stop : callable() -> bool, optional
        Asked before every iteration; True stops with :class:`~cmrecon.errors.Cancelled`.

    Returns
    -------
    (T, ky, kx) complex64
        Coil-combined images, SNR units (as :func:`cmrecon.recon.sense.coil_combine`).

    Raises
    ------
    ValueError
        Shapes that disagree (the message names the arrays), a non-boolean mask, a negative
        ``lam``, ``iterations`` or ``tol``.
    Cancelled
        ``should_stop()`` returned True.

    References
    ----------
    Pruessmann KP et al. MRM 2001;46:638-651.
    """
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    _check_iterations(iterations, tol)
    b, gram = _setup(kspace, maps, mask, device)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = _dot(r, r)
    stop = tol * torch.sqrt(rr)
    for done in range(int(iterations)):
        active = torch.sqrt(rr) > stop
        if not bool(active.any()):
            break
        _stop_if_asked(should_stop, "per-phase CG-SENSE", done, iterations)
        q = gram(p) + lam * p
        pq = _dot(p, q)
        alpha = torch.where(active & (pq > 0), rr / torch.where(pq > 0, pq, 1), 0)[:, None, None]
        x.add_(alpha * p)
        r.sub_(alpha * q)
        rr_new = _dot(r, r)
        beta = torch.where(active & (rr > 0), rr_new / torch.where(rr > 0, rr, 1), 1)[:, None, None]
        p = torch.where(active[:, None, None], r + beta * p, p)
        rr = torch.where(active, rr_new, rr)
    return CineGram.from_work(x).cpu().numpy()


# ----------------------------------------------------------------------------- L+S


@dataclass(frozen=True)
class LpsResult:
    """Low rank + sparse reconstruction of one cine slice (:func:`lps`).

    Attributes
    ----------
    low_rank : (T, ky, kx) complex64
        ``L``, SNR units.
    sparse : (T, ky, kx) complex64
        ``S`` (sparse in the temporal Fourier domain), SNR units.
    images : (T, ky, kx) complex64
        ``L + S``, SNR units.
    iterations : int
        Iterations run (≤ the ``iterations`` asked for).
    scale : float
        ``max|E^H d|``: the data were divided by it before iterating and the results multiplied
        by it after (0 for all-zero data).
    """

    low_rank: np.ndarray
    sparse: np.ndarray
    images: np.ndarray
    iterations: int
    scale: float


def _svt(x: torch.Tensor, fraction: float, sigma: float | None = None) -> torch.Tensor:
    """Singular-value soft threshold ``fraction · sigma`` (``sigma = σ_1(x)`` when None) of the
    Casorati matrix of ``x (T, ...)``, decomposed as Otazo's tall ``(pixels, T)`` matrix (LAPACK
    is several times faster on it than on the wide ``(T, pixels)`` one).
    """
    u, s, vh = torch.linalg.svd(x.reshape(x.shape[0], -1).T, full_matrices=False)
    s = torch.clamp(s - fraction * (s[0] if sigma is None else sigma), min=0)
    return ((u * s.to(u.dtype)) @ vh).T.reshape(x.shape)


def _sigma_max(x: torch.Tensor) -> torch.Tensor:
    """Largest singular value of the Casorati matrix of ``x (T, ...)`` (from its T×T Gram)."""
    c = x.reshape(x.shape[0], -1)
    return torch.sqrt(torch.clamp(torch.linalg.eigvalsh(c @ c.conj().T)[-1], min=0))


def _soft_t(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """``T^H soft(T x, threshold)`` with ``T`` the unitary temporal FFT along axis 0 (``1/√T``).

    Complex soft thresholding ``z · max(|z| − τ, 0) / |z|`` is elementwise and keeps the phase,
    so neither the ``fftshift`` of Otazo's ``TempFFT`` (a permutation of the coefficients) nor
    the centring of :func:`cmrecon.recon.fft.fft1c` (a permutation and unit-modulus factors)
    changes the result: the plain orthonormal FFT is used.
    """
    z = torch.fft.fft(x, dim=0, norm="ortho")
    mag = z.real.square().add_(z.imag.square()).sqrt_().clamp_min_(1e-30)
    z.mul_(mag.reciprocal_().mul_(-threshold).add_(1).clamp_min_(0))
    return torch.fft.ifft(z, dim=0, norm="ortho")


def _norm(x: torch.Tensor) -> float:
    """``||x||₂`` of a complex tensor (through its real view: ~50× faster on the CPU)."""
    return float(torch.linalg.vector_norm(torch.view_as_real(x)))


def _relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    return _norm(new - old) / max(_norm(old), 1e-30)


def _lps_ist(gram: CineGram, b: torch.Tensor, lambda_l: float, lambda_s: float, iterations: int,
             tol: float, callback=None, should_stop: ShouldStop | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Otazo's iterative soft thresholding (``lps_ist``), a proximal gradient step of 1.

    ``callback(k, L, S)``, when given, sees the work-frame iterates after iteration ``k``;
    ``should_stop`` is asked before every iteration (:class:`~cmrecon.errors.Cancelled`).
    """
    m = b.clone()
    l_prev = m
    s = torch.zeros_like(b)
    low = m
    done = 0
    while done < iterations:
        _stop_if_asked(should_stop, "L+S (ist)", done, iterations)
        done += 1
        m_prev = m
        low = _svt(m - s, lambda_l)        # threshold λ_L·σ_1(M − S)
        s = _soft_t(m - l_prev, lambda_s)
        x = low + s
        m = x - (gram(x) - b)            # one gradient step: L + S − E^H(E(L + S) − d)
        l_prev = low
        if callback is not None:
            callback(done, low, s)
        if _relative_change(m, m_prev) < tol:
            break
    return low, s, done


def _lps_pogm(gram: CineGram, b: torch.Tensor, lambda_l: float, lambda_s: float, iterations: int,
              tol: float, callback=None, should_stop: ShouldStop | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """L+S by POGM with gradient restart on the stacked variable ``(L, S)`` (Lin & Fessler 2019).

    The data term ``½||E(L + S) − d||²`` has a gradient ``(g, g)``, ``g = E^H(E(L + S) − d)``,
    with Lipschitz constant 2 (``||E|| ≤ 1`` for unit-norm maps), hence the step ``α = 1/2``;
    a POGM step with weight ``ζ`` thresholds by ``ζ·λ``. Otazo's relative threshold is kept
    consistent with IST: ``λ_L · σ_1(L − g)``, the largest singular value of what IST would
    threshold at the current point, so both methods share the fixed point
    ``L = SVT_{λ_L σ_1(L − g)}(L − g)``, ``S = T^H soft_{λ_S}(T(S − g))``. ``callback`` and
    ``should_stop`` as in :func:`_lps_ist` (with the secondary iterate ``x_k``, the one returned).
    """
    alpha = 0.5
    # stacked iterates: index 0 is L, 1 is S; start of Lin & Fessler: L = E^H d, S = 0
    x = torch.stack([b, torch.zeros_like(b)])
    u_old, z_old, y_old = x, x, x
    t, zeta_old = 1.0, 1.0
    m_prev = None
    done = 0
    for k in range(iterations + 1):
        _stop_if_asked(should_stop, "L+S (pogm)", done, iterations)
        g = gram(x[0] + x[1]) - b
        m = x[0] + x[1] - g              # IST's point: the stopping rule is Otazo's
        if m_prev is not None and _relative_change(m, m_prev) < tol:
            break
        if k == iterations:
            break
        m_prev = m
        sigma = float(_sigma_max(x[0] - g))
        u = x - alpha * g                # gradient step, g for both L and S
        t_new = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        beta, gamma = (t - 1) / t_new, t / t_new
        c = beta * alpha / zeta_old
        # z = u + β(u − u_old) + γ(u − x) − c(x − z_old)
        z = u * (1 + beta + gamma)
        z.add_(u_old, alpha=-beta).add_(x, alpha=-(gamma + c)).add_(z_old, alpha=c)
        zeta = alpha * (1 + beta + gamma)
        x_new = torch.stack([_svt(z[0], zeta * lambda_l, sigma), _soft_t(z[1], zeta * lambda_s)])
        # composite gradient and the primary iterate, for the gradient restart (Kim & Fessler)
        f = (x_new - z).mul_(-1 / zeta).add_(g)
        y = x - alpha * f
        if _inner(f, y - y_old) >= 0:
            t_new = 1.0                  # -F · (y − y_old) ≤ 0: restart the momentum
        u_old, z_old, y_old = u, z, y
        x, zeta_old, t = x_new, zeta, t_new
        done = k + 1
        if callback is not None:
            callback(done, x[0], x[1])
    return x[0], x[1], done


def lps(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, lambda_l: float = 0.01,
        lambda_s: float = 0.0025, iterations: int = 50, tol: float = 0.0025, method: str = "ist",
        device: str | torch.device = "cpu", should_stop: ShouldStop | None = None) -> LpsResult:
    """Low rank + sparse reconstruction of all phases jointly (Otazo 2015).

    Minimises ``½||E(L + S) − d||² + λ_L' ||L||_* + λ_S ||T S||_1`` with ``||L||_*`` the nuclear
    norm of the Casorati matrix (pixels × phases) and ``T`` the unitary temporal FFT
    (``1/√T``). ``ist`` is Otazo's ``lps_ist``: a singular-value soft threshold of ``M − S``,
    a complex soft threshold of the temporal spectrum of ``M − L_prev``, one gradient step
    ``M = L + S − E^H(E(L + S) − d)``, stopping when ``||M − M_prev|| < tol·||M_prev||`` or
    after ``iterations`` (Otazo's loop allows one more).
    ``pogm`` reaches the same fixed point with the proximal optimized gradient method and
    gradient restart (Lin & Fessler 2019), in fewer iterations.

    Thresholds. The nuclear threshold is relative, ``λ_L' = lambda_l · σ_1`` with ``σ_1`` the
    largest singular value of the matrix being thresholded (Otazo's choice); ``lambda_s`` is
    absolute. The data are therefore normalised first, ``d / max|E^H d|`` (so the zero-filled
    combination peaks at 1 with unit-norm maps), and ``L``, ``S`` scaled back: ``lambda_s`` is in
    units of that peak, and the result does not depend on the scale of the data. With these
    units, a static component costs ``λ_S·√T`` per unit magnitude in ``S`` against
    ``λ_L'``·(its share of ``σ_1``) in ``L``: when ``lambda_s < lambda_l·√T·|x|`` (the defaults
    on bright pixels) the fixed point shares static signal between ``L`` and ``S``; fully
    sampled, ``lambda_s ≥ lambda_l·√T`` keeps a static series wholly in ``L``.

    Parameters
    ----------
    kspace : (T, C, ky, kx) complex64
        Prewhitened k-space, zero where not sampled.
    maps : (C, ky, kx) complex64
        Coil sensitivities, ``Σ_c |S_c|² = 1`` inside the support (``||E|| ≤ 1``, which the
        unit gradient step of ``ist`` and the step ½ of ``pogm`` rely on).
    mask : (T, ky) bool
        Rows sampled in each phase.
    lambda_l : float
        Singular-value threshold of ``L`` relative to the largest singular value, in [0, 1).
    lambda_s : float
        Soft threshold (≥ 0) of the unitary temporal Fourier coefficients of ``S``, in units of
        ``max|E^H d|``.
    iterations : int
        Maximum iterations.
    tol : float
        Stop when the relative change of ``M`` (Otazo's rule) falls below ``tol``.
    method : {"ist", "pogm"}
    device : str or torch.device
        Where to compute (``cpu``; ``cuda`` when available).
    should_stop : callable() -> bool, optional
        Asked before every iteration; True stops with :class:`~cmrecon.errors.Cancelled`.

    Returns
    -------
    LpsResult
        ``low_rank``, ``sparse``, ``images = L + S`` (T, ky, kx) complex64 in SNR units, the
        iterations run and the data scale ``max|E^H d|``.

    Raises
    ------
    ValueError
        Shapes that disagree (the message names the arrays), a non-boolean mask, maps with
        ``Σ_c |S_c|² > 1.01`` somewhere, parameters out of range, an unknown ``method``.
    Cancelled
        ``should_stop()`` returned True.

    References
    ----------
    Otazo R, Candès E, Sodickson DK. MRM 2015;73:1125-1136.
    Lin CY, Fessler JA. IEEE Trans Comput Imaging 2019;5:17-26.
    Kim D, Fessler JA. J Optim Theory Appl 2018;178:240-263.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if not 0 <= lambda_l < 1:
        raise ValueError(f"lambda_l must be in [0, 1), got {lambda_l!r}")
    if not lambda_s >= 0:
        raise ValueError(f"lambda_s must be >= 0, got {lambda_s!r}")
    _check_iterations(iterations, tol)
    power = float(np.max(np.sum(np.abs(np.asarray(maps)) ** 2, axis=0), initial=0.0))
    if power > 1.01:
        raise ValueError(f"maps must be unit-norm (Σ_c |S_c|² ≤ 1, so that ||E|| ≤ 1 for the "
                         f"gradient step), got max Σ_c |S_c|² = {power:.3g}")
    b, gram = _setup(kspace, maps, mask, device)
    scale = float(torch.abs(b).max()) if b.numel() else 0.0
    if scale == 0.0:
        zero = np.zeros(np.shape(kspace)[:1] + np.shape(kspace)[2:], np.complex64)
        return LpsResult(zero, zero.copy(), zero.copy(), 0, 0.0)
    run = _lps_ist if method == "ist" else _lps_pogm
    low, sparse, done = run(gram, b / scale, float(lambda_l), float(lambda_s), int(iterations), float(tol),
                            should_stop=should_stop)
    low, sparse = CineGram.from_work(low * scale), CineGram.from_work(sparse * scale)
    return LpsResult(low.cpu().numpy(), sparse.cpu().numpy(), (low + sparse).cpu().numpy(), done, scale)
