"""Centred, orthonormal Fourier transforms (numpy or torch) and simple coil combination.

On the last two axes ``(..., y, x)`` (or one given axis), ``norm="ortho"``: unit-variance noise
keeps unit variance (SNR units, :mod:`cmrecon.axes`). Numpy or torch in, same kind and dtype out.
"""

from __future__ import annotations

import functools

import numpy as np

from cmrecon.recon.namespace import array_namespace


@functools.cache
def centred_fft(xp) -> tuple:
    """``(fft2c, ifft2c)`` written over the namespace ``xp`` (numpy or torch)."""

    def fft2c(x):
        return xp.fft.fftshift(xp.fft.fft2(xp.fft.ifftshift(x, (-2, -1)), norm="ortho"), (-2, -1))

    def ifft2c(k):
        return xp.fft.fftshift(xp.fft.ifft2(xp.fft.ifftshift(k, (-2, -1)), norm="ortho"), (-2, -1))

    return fft2c, ifft2c


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
    return xp.fft.fftshift(xp.fft.ifft(xp.fft.ifftshift(data, axis), None, axis, "ortho"), axis)


def fft1c(data, axis: int = -1):
    """Centred orthonormal forward 1D FFT along ``axis``."""
    xp = array_namespace(data)
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
