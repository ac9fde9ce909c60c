"""Noise covariance estimation and prewhitening of multi-coil data.

After prewhitening every virtual coil has unit-variance, uncorrelated noise, so coil-combined
images are in SNR units (ARCHITECTURE.md).

References
----------
Pruessmann KP et al. Advances in sensitivity encoding with arbitrary k-space trajectories.
MRM 2001;46:638-651 (noise decorrelation). Gadgetron ``NoiseAdjustGadget`` (bandwidth scaling).
"""

from __future__ import annotations

import numpy as np

from cmrecon.errors import StepError


def noise_covariance(noise: np.ndarray) -> np.ndarray:
    """Sample covariance of coil noise.

    Parameters
    ----------
    noise : (coils, samples) complex
        Noise-only samples (``ACQ_IS_NOISE_MEASUREMENT`` readouts concatenated along samples).

    Returns
    -------
    (coils, coils) complex128 Hermitian matrix Ψ with Ψ[i, j] = E[n_i conj(n_j)].
    """
    if noise.ndim != 2 or noise.shape[1] < 2:
        raise StepError(f"noise samples must be (coils, samples) with at least 2 samples, got {noise.shape}")
    n = noise.astype(np.complex128)
    n = n - n.mean(axis=1, keepdims=True)
    return (n @ n.conj().T) / (n.shape[1] - 1)


def prewhitening_matrix(covariance: np.ndarray, dwell_ratio: float = 1.0) -> np.ndarray:
    """Lower-triangular W with W Ψ W^H = I (inverse Cholesky factor of Ψ).

    Parameters
    ----------
    covariance : (coils, coils) complex Hermitian positive definite Ψ.
    dwell_ratio : imaging dwell time / noise-scan dwell time. Per-sample noise variance is
        proportional to the receiver bandwidth (1 / dwell), so imaging noise has covariance
        Ψ / dwell_ratio and W is scaled by sqrt(dwell_ratio).

    Returns
    -------
    (coils, coils) complex64 matrix; apply as ``W @ data`` with data ``(coils, samples)``.

    Raises
    ------
    StepError
        When Ψ is not positive definite (e.g. a dead or duplicated channel).
    """
    try:
        lower = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError as exc:
        raise StepError("noise covariance is not positive definite (dead or duplicated coil channel?); "
                        f"diagonal = {np.real(np.diag(covariance)).round(4).tolist()}") from exc
    w = np.linalg.inv(lower) * np.sqrt(dwell_ratio)
    return w.astype(np.complex64)


def prewhiten(data: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    """Apply a prewhitening matrix to multi-coil data.

    Parameters
    ----------
    data : (coils, ...) complex64
    whitening : (coils, coils) complex64 from :func:`prewhitening_matrix`.

    Returns
    -------
    (coils, ...) complex64 with unit-variance, uncorrelated coil noise.
    """
    if data.shape[0] != whitening.shape[0]:
        raise StepError(f"data has {data.shape[0]} coils but the noise scan had {whitening.shape[0]}")
    flat = data.reshape(data.shape[0], -1)
    return (whitening @ flat).reshape(data.shape).astype(np.complex64, copy=False)
