"""The one centred FFT (cmrecon.recon.fft) on numpy arrays and torch tensors."""

import numpy as np
import pytest
import torch

from cmrecon.recon.fft import centred_fft, fft1c, fft2c, ifft1c, ifft2c

# pocketfft (numpy) and torch's FFT differ by float32 round-off: ~1e-7 relative per stage,
# log2(n) stages on a 10x7 grid -> a few 1e-7 of the spectrum's peak
TOL_F32 = 2e-6
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


def _cplx(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_numpy_path_is_the_numpy_fft_formula_exactly():
    """Same numpy calls in the same order as before the merge: bit-identical, dtype kept."""
    x = _cplx(np.random.default_rng(0), 3, 10, 7)
    ax = (-2, -1)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)
    out = fft2c(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.complex64
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(ifft1c(x, axis=-2), np.fft.fftshift(
        np.fft.ifft(np.fft.ifftshift(x, axes=-2), axis=-2, norm="ortho"), axes=-2))


def test_torch_path_is_the_torch_fft_formula_exactly_and_scriptable():
    x = torch.from_numpy(_cplx(np.random.default_rng(1), 2, 3, 10, 7))
    d = [-2, -1]
    ref = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(x, dim=d), dim=d, norm="ortho"),
                             dim=d)
    out = ifft2c(x)
    assert torch.is_tensor(out) and out.dtype == torch.complex64
    assert torch.equal(out, ref)
    t_fft2c, t_ifft2c = centred_fft(torch)
    assert torch.equal(torch.jit.script(t_ifft2c)(x), ref)
    assert torch.equal(torch.jit.script(t_fft2c)(x), fft2c(x))


@pytest.mark.parametrize("shape", [(10, 7), (2, 9, 16)])
def test_numpy_and_torch_agree_and_invert(shape):
    x = _cplx(np.random.default_rng(2), *shape)
    for fwd, inv in ((fft2c, ifft2c), (fft1c, ifft1c)):
        k_np, k_t = fwd(x), fwd(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(k_t, k_np, rtol=0, atol=TOL_F32 * np.abs(k_np).max())
        np.testing.assert_allclose(inv(k_np), x, rtol=0, atol=TOL_F32 * np.abs(x).max())


def test_centred_delta_has_a_flat_zero_phase_spectrum():
    delta = np.zeros((10, 7), np.complex64)
    delta[5, 3] = 1
    np.testing.assert_allclose(fft2c(delta), np.full((10, 7), 1 / np.sqrt(70)), atol=1e-7)
