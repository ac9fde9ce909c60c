"""Per-readout numerics: oversampling removal against its definition."""

import numpy as np
import pytest

from cmrecon.recon.cartesian import remove_readout_oversampling
from cmrecon.recon.fft import fft1c, ifft1c

#: float32 data through two length-n FFTs: a few ε32·log2(n) ≈ 1e-6 of the largest sample
TOL_F32 = 1e-5


def _cplx(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("n,n_out", [(384, 192), (256, 128), (384, 160), (255, 128), (384, 383)])
def test_oversampling_removal_is_the_centred_crop_of_the_profile(n, n_out):
    """Equals fft1c(centre crop of ifft1c(readout)) (the definition) to float32 rounding."""
    x = _cplx(np.random.default_rng(n + n_out), 4, n)
    ref = fft1c(ifft1c(x)[:, n // 2 - n_out // 2: n // 2 - n_out // 2 + n_out])
    out = remove_readout_oversampling(x, n_out)
    assert out.shape == (4, n_out) and out.dtype == np.complex64
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL_F32 * np.abs(ref).max())


def test_oversampling_removal_keeps_an_object_inside_the_reconstructed_fov():
    """A profile that is zero outside the central n_out samples comes back whole (2x oversampling)."""
    rng = np.random.default_rng(1)
    n, n_out = 384, 192
    obj = _cplx(rng, 3, n_out)
    padded = np.zeros((3, n), np.complex64)
    padded[:, n // 2 - n_out // 2: n // 2 + n_out // 2] = obj
    out = remove_readout_oversampling(fft1c(padded), n_out)
    np.testing.assert_allclose(ifft1c(out), obj, rtol=0, atol=TOL_F32 * np.abs(obj).max())
