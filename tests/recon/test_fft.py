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


@pytest.mark.parametrize("shape", [(3, 10, 8), (3, 10, 7), (2, 9, 16), (9, 7)])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_numpy_path_is_the_centred_fft_formula_in_the_input_precision(shape, dtype):
    """scipy.fft, with sign modulations for the shifts on even axes: numpy's shifted formula in float64.

    Its own precision, dtype kept: complex64 within float32 round-off (~1e-7 relative per stage,
    log2(n) stages: a few 1e-7 of the peak, bound TOL_F32), complex128 within 1e-14. Until
    issue 15 the numpy path was numpy's formula bit for bit; scipy.fft's n-dimensional transform
    (and no np.roll copies on even axes) took ifft2c of 16 coils at 192x144 from 6.8 to 3.3 ms.
    """
    x = _cplx(np.random.default_rng(0), *shape).astype(dtype)
    tol = TOL_F32 if dtype == np.complex64 else 1e-14
    ax = (-2, -1)
    x128 = x.astype(np.complex128)
    for f, ref in ((fft2c, np.fft.fft2), (ifft2c, np.fft.ifft2)):
        want = np.fft.fftshift(ref(np.fft.ifftshift(x128, axes=ax), axes=ax, norm="ortho"), axes=ax)
        out = f(x)
        assert isinstance(out, np.ndarray) and out.dtype == dtype
        np.testing.assert_allclose(out, want, rtol=0, atol=tol * np.abs(want).max())
    for axis in range(-x.ndim, 0):
        for f, ref in ((fft1c, np.fft.fft), (ifft1c, np.fft.ifft)):
            want = np.fft.fftshift(ref(np.fft.ifftshift(x128, axes=axis), axis=axis, norm="ortho"), axes=axis)
            out = f(x, axis=axis)
            assert out.dtype == dtype
            np.testing.assert_allclose(out, want, rtol=0, atol=tol * np.abs(want).max())
    assert fft2c(x.real.astype(np.float32)).dtype == np.complex64   # real in, complex of its precision


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
