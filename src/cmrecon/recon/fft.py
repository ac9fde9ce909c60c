"""Centred, orthonormal Fourier transforms (numpy or torch) and simple coil combination.

On the last two axes ``(..., y, x)`` (or one given axis), ``norm="ortho"``: unit-variance noise
keeps unit variance (SNR units, :mod:`cmrecon.axes`). Numpy or torch in, same kind and dtype out.

Numpy arrays go through ``scipy.fft`` (pocketfft's n-dimensional C++ transform in the input's
precision, one thread: ``workers`` left at 1, cmrecon.runtime's policy), torch tensors through
``torch.fft``. The centring shifts ``fftshift(F(ifftshift(x)))`` are, on even axes, sign
modulations: rolling an even length ``N`` by ``N/2`` multiplies the transform by ``(−1)^k``,
so ``fftshift(F(ifftshift(x)))[k] = (−1)^{N/2}·(−1)^k·F((−1)^n·x)[k]``; numpy arrays whose
transformed axes are all even take that route (two multiplications instead of two copies by
``np.roll``, and the product the transform may overwrite), odd ones the shifts.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft

from cmrecon.recon.namespace import array_namespace


@functools.cache
def centred_fft(xp) -> tuple:
    """``(fft2c, ifft2c)`` written over the namespace ``xp`` (numpy or torch)."""
    if xp is np:
        return (functools.partial(_centred_numpy, axes=(-2, -1), inverse=False),
                functools.partial(_centred_numpy, axes=(-2, -1), inverse=True))

    def fft2c(x):
        return xp.fft.fftshift(xp.fft.fft2(xp.fft.ifftshift(x, (-2, -1)), norm="ortho"), (-2, -1))

    def ifft2c(k):
        return xp.fft.fftshift(xp.fft.ifft2(xp.fft.ifftshift(k, (-2, -1)), norm="ortho"), (-2, -1))

    return fft2c, ifft2c


@functools.lru_cache(maxsize=32)
def _modulation(shape: tuple[int, ...], axes: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``(−1)^(Σ n_a)`` over ``axes`` of an array of ``shape`` (1 elsewhere), broadcastable, read-only."""
    m = np.ones([1] * len(shape), dtype)
    for a in axes:
        s = [1] * len(shape)
        s[a] = shape[a]
        m = m * (1 - 2 * (np.arange(shape[a]) % 2)).astype(dtype).reshape(s)
    m.flags.writeable = False
    return m


def _centred_numpy(x, axes: tuple[int, ...], inverse: bool) -> np.ndarray:
    """``fftshift(F(ifftshift(x)))`` over ``axes``, orthonormal, in the input's precision (module notes)."""
    x = np.asarray(x)
    axes = tuple(a % x.ndim for a in axes)
    transform = sfft.ifftn if inverse else sfft.fftn
    if any(x.shape[a] % 2 for a in axes):
        return sfft.fftshift(transform(sfft.ifftshift(x, axes), axes=axes, norm="ortho", overwrite_x=True),
                             axes)
    real = np.float32 if x.dtype in (np.complex64, np.float32) else np.float64
    m = _modulation(tuple(n if a in axes else 1 for a, n in enumerate(x.shape)), axes, np.dtype(real))
    y = transform(x * m, axes=axes, norm="ortho", overwrite_x=True)
    y *= m if sum(x.shape[a] // 2 for a in axes) % 2 == 0 else -m
    return y


def ifft2c(kspace):
    """Centred orthonormal inverse 2D FFT over the last two axes.

    Parameters
    ----------
    kspace : (..., ky, kx) complex64, numpy array or torch tensor
        k-space with the DC sample at index ``(n // 2)`` of each axis.

    Returns
    -------
    (..., y, x) complex, same kind and dtype as the input.
    """
    return centred_fft(array_namespace(kspace))[1](kspace)


def fft2c(image):
    """Centred orthonormal forward 2D FFT over the last two axes (inverse of :func:`ifft2c`)."""
    return centred_fft(array_namespace(image))[0](image)


def ifft1c(data, axis: int = -1):
    """Centred orthonormal inverse 1D FFT along ``axis``."""
    xp = array_namespace(data)
    if xp is np:
        return _centred_numpy(data, (axis,), inverse=True)
    return xp.fft.fftshift(xp.fft.ifft(xp.fft.ifftshift(data, axis), None, axis, "ortho"), axis)


def fft1c(data, axis: int = -1):
    """Centred orthonormal forward 1D FFT along ``axis``."""
    xp = array_namespace(data)
    if xp is np:
        return _centred_numpy(data, (axis,), inverse=False)
    return xp.fft.fftshift(xp.fft.fft(xp.fft.ifftshift(data, axis), None, axis, "ortho"), axis)


def rss(images: np.ndarray, axis: int = 0) -> np.ndarray:
    """Root-sum-of-squares coil combination.

    Parameters
    ----------
    images : (coils, ...) complex
        Coil images; ``axis`` names the coil axis.

    Returns
    -------
    (...) float32 magnitude image.
    """
    return np.sqrt(np.sum(np.abs(images) ** 2, axis=axis)).astype(np.float32)
