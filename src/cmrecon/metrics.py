"""Image-quality metrics (SSIM, PSNR, NRMSE) on real 2D images, optionally inside a mask.

Conventions follow fastMRI and scikit-image so that numbers are comparable with the PSIRNet
publication: a 7×7 uniform (box) window, K1 = 0.01, K2 = 0.03, sample (N−1) covariance, and a
``data_range`` taken from the reference image when not given.

References
----------
Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from error visibility to
structural similarity. IEEE Trans Image Process 2004;13:600-612.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ssim", "ssim_map", "ssim_valid", "psnr", "nrmse"]

_K1 = 0.01
_K2 = 0.03


def _as_real_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        raise ValueError("metrics take real images; pass np.abs(...) or .real of complex data, "
                         f"got dtypes {x.dtype} and {y.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"x shape {x.shape} differs from y shape {y.shape}")
    return x.astype(np.float64), y.astype(np.float64)


def _check_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {shape}")
    if not mask.any():
        raise ValueError("mask selects no pixel")
    return mask


def _data_range(y: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        data_range = float(y.max() - y.min())
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r} (constant reference?)")
    return float(data_range)


def _box_mean(a, window_px: int):
    """Valid box filter: ``(..., y, x)`` → mean of each ``window_px``² window inside the image,
    ``(..., y − window_px + 1, x − window_px + 1)``. numpy: sums of shifted slices; torch
    ``(B, C, y, x)``: ``avg_pool2d``, imported only for a tensor (numpy never imports torch).
    """
    if isinstance(a, np.ndarray):
        ny, nx = a.shape[-2] - window_px + 1, a.shape[-1] - window_px + 1
        rows = sum(a[..., k:k + ny, :] for k in range(window_px))
        return sum(rows[..., k:k + nx] for k in range(window_px)) / window_px ** 2
    from torch.nn.functional import avg_pool2d
    return avg_pool2d(a, window_px, stride=1)


def ssim_valid(x, y, data_range, window_px: int = 7):
    """SSIM map over the windows inside the image: the one SSIM formula, for numpy and torch.

    Parameters
    ----------
    x, y : (..., y, x) numpy float arrays, or (B, 1, y, x) torch float tensors
        Test and reference images, not checked here (see :func:`ssim_map`).
    data_range : float, or a torch tensor broadcasting against the map
        Dynamic range L.
    window_px : int
        Odd side of the box window, pixels.

    Returns
    -------
    (..., y − window_px + 1, x − window_px + 1), the inputs' kind (differentiable for torch)
        SSIM (K1 = 0.01, K2 = 0.03, sample covariance) of each window inside the image.
    """
    n = window_px * window_px
    cov_norm = n / (n - 1.0)  # sample covariance, as fastMRI and scikit-image
    ux, uy = _box_mean(x, window_px), _box_mean(y, window_px)
    vx = cov_norm * (_box_mean(x * x, window_px) - ux * ux)
    vy = cov_norm * (_box_mean(y * y, window_px) - uy * uy)
    vxy = cov_norm * (_box_mean(x * y, window_px) - ux * uy)
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def ssim_map(x: np.ndarray, y: np.ndarray, window_px: int = 7,
             data_range: float | None = None) -> np.ndarray:
    """Per-pixel SSIM map of ``x`` against reference ``y`` (7×7 box, reflect boundary).

    Parameters
    ----------
    x : (y, x) float
        Test image.
    y : (y, x) float
        Reference image, same shape.
    window_px : int
        Odd side of the uniform window, pixels (7 as in fastMRI and scikit-image).
    data_range : float, optional
        Dynamic range L of the images; ``y.max() - y.min()`` when None.

    Returns
    -------
    (y, x) float64
        SSIM at every pixel (:func:`ssim_valid` on the images mirrored by ``window_px // 2``
        at the border: scipy's ``mode="reflect"``, scikit-image's choice).

    Raises
    ------
    ValueError
        Complex or mismatched inputs, an even/non-positive window, a non-positive data range.

    References
    ----------
    Wang et al., IEEE TIP 2004;13:600.
    """
    x, y = _as_real_pair(x, y)
    if x.ndim != 2:
        raise ValueError(f"ssim expects 2D images (y, x), got shape {x.shape}")
    if int(window_px) != window_px or window_px < 1 or window_px % 2 == 0:
        raise ValueError(f"window_px must be a positive odd integer, got {window_px!r}")
    if window_px > min(x.shape):
        raise ValueError(f"window_px={window_px} exceeds the image shape {x.shape}")
    L = _data_range(y, data_range)
    pad = window_px // 2
    x, y = np.pad(x, pad, mode="symmetric"), np.pad(y, pad, mode="symmetric")
    return ssim_valid(x, y, L, window_px)


def ssim(x: np.ndarray, y: np.ndarray, window_px: int = 7, data_range: float | None = None,
         mask: np.ndarray | None = None) -> float:
    """Mean structural similarity of ``x`` against reference ``y`` (fastMRI/scikit-image convention).

    Uses a ``window_px × window_px`` uniform window, K1 = 0.01, K2 = 0.03 and the sample
    covariance (N/(N−1) correction). Without a mask the SSIM map is averaged over the pixels
    at least ``window_px // 2`` from the border (scikit-image's crop, equal to fastMRI's
    valid convolution); with a mask it is averaged over the mask pixels.

    Parameters
    ----------
    x : (y, x) float
        Test image.
    y : (y, x) float
        Reference image.
    window_px : int
        Odd window side, pixels.
    data_range : float, optional
        Dynamic range L; ``y.max() - y.min()`` of the reference when None. (fastMRI passes
        ``y.max()``; give it explicitly to reproduce that.)
    mask : (y, x) bool, optional
        Pixels over which to average the SSIM map.

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; exactly 1 for ``x == y``.

    Raises
    ------
    ValueError
        See :func:`ssim_map`; also an empty or mis-shaped mask.

    References
    ----------
    Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. IEEE Trans Image Process 2004;13:600-612.
    """
    smap = ssim_map(x, y, window_px, data_range)
    mask = _check_mask(mask, smap.shape)
    if mask is not None:
        return float(smap[mask].mean())
    pad = (window_px - 1) // 2
    return float(smap[pad:smap.shape[0] - pad, pad:smap.shape[1] - pad].mean())


def psnr(x: np.ndarray, y: np.ndarray, data_range: float | None = None,
         mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio of ``x`` against reference ``y``, in dB.

    ``PSNR = 20·log10(L) − 10·log10(mean((x − y)²))``.

    Parameters
    ----------
    x, y : (...) float
        Test and reference images, same shape.
    data_range : float, optional
        Peak-to-peak range L; ``y.max() - y.min()`` (over the mask when given) when None.
    mask : (...) bool, optional
        Pixels over which the mean squared error (and the default range) is taken.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when x equals y.

    Raises
    ------
    ValueError
        Complex or mismatched inputs, empty mask, non-positive data range.
    """
    x, y = _as_real_pair(x, y)
    mask = _check_mask(mask, x.shape)
    if mask is not None:
        x, y = x[mask], y[mask]
    L = _data_range(y, data_range)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(20.0 * np.log10(L) - 10.0 * np.log10(mse))


def nrmse(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised root-mean-square error ``||x − y|| / ||y||`` against reference ``y``.

    Parameters
    ----------
    x, y : (...) float or complex
        Test and reference arrays, same shape (complex allowed: the 2-norm of the complex
        difference).
    mask : (...) bool, optional
        Pixels over which both norms are taken.

    Returns
    -------
    float
        Dimensionless; 0 for x == y.

    Raises
    ------
    ValueError
        Mismatched shapes, an empty mask, or a zero reference.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x shape {x.shape} differs from y shape {y.shape}")
    mask = _check_mask(mask, x.shape)
    if mask is not None:
        x, y = x[mask], y[mask]
    den = float(np.linalg.norm(y.astype(np.complex128).ravel()))
    if den == 0.0:
        raise ValueError("reference y has zero norm")
    return float(np.linalg.norm((x.astype(np.complex128) - y).ravel()) / den)
