"""The one box filter (cmrecon.recon.box): both boundaries, numpy and torch, TorchScript."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter

from cmrecon.recon.box import box_kernel, box_mean

SCIPY_MODE = {"circular": "wrap", "symmetric": "reflect"}
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")


@pytest.mark.parametrize("boundary", ["circular", "symmetric"])
@pytest.mark.parametrize("window", [1, 3, 7, 9])
def test_numpy_is_scipy_uniform_filter_bit_for_bit(boundary, window):
    """What classical PSIR (wrap) and the coil maps (reflect, on .real and .imag) called."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 17, 13))
    size = (1, window, window)
    out = box_mean(x, window, boundary)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, uniform_filter(x, size=size, mode=SCIPY_MODE[boundary]))
    z = (x + 1j * rng.standard_normal(x.shape)).astype(np.complex64)
    ref = (uniform_filter(z.real, size=size, mode=SCIPY_MODE[boundary])
           + 1j * uniform_filter(z.imag, size=size, mode=SCIPY_MODE[boundary]))
    out = box_mean(z, window, boundary)
    assert out.dtype == np.complex64
    np.testing.assert_array_equal(out, ref)


def test_torch_is_the_published_conv2d_head_bit_for_bit():
    """PSIRNet's compute_scc_torch: circular F.pad, then conv2d with a 1/w² kernel."""
    x = torch.rand(2, 1, 24, 20, generator=torch.Generator().manual_seed(3)) * 50
    published = F.conv2d(F.pad(x, [3, 3, 3, 3], mode="circular"), torch.full((1, 1, 7, 7), 1 / 49))
    assert torch.equal(box_mean(x, 7, "circular"), published)
    # leading axes of any number go through the same conv2d
    assert torch.equal(box_mean(x[:, 0], 7, "circular"), published[:, 0])


@pytest.mark.parametrize("boundary", ["circular", "symmetric"])
def test_numpy_and_torch_agree_within_rounding(boundary):
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 10))
    # scipy's running sum (2 roundings per sample along a line of 12, both axes) against
    # conv2d's sum of 25 products: |error| <= (4·12 + 25)·eps·max|x|
    atol = (4 * 12 + 25) * np.finfo(np.float64).eps * np.abs(x).max()
    np.testing.assert_allclose(box_mean(torch.from_numpy(x), 5, boundary).numpy(),
                               box_mean(x, 5, boundary), rtol=0, atol=atol)


def test_torch_kernel_is_scriptable_and_differentiable():
    kernel = box_kernel(torch)
    scripted = torch.jit.script(kernel)
    x = torch.randn(1, 1, 9, 11, requires_grad=True)
    for boundary in ("circular", "symmetric"):
        assert torch.equal(scripted(x, 7, boundary), kernel(x, 7, boundary))
    box_mean(x, 7).sum().backward()
    # every pixel lies in exactly w² circular windows, each weighting it 1/w²
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_rejects_bad_windows_and_boundaries():
    x = np.zeros((8, 8))
    for window in (0, 4, 7.5):
        with pytest.raises(ValueError, match="window_px"):
            box_mean(x, window)
    with pytest.raises(ValueError, match="window_px=19"):
        box_mean(x, 19)
    assert box_mean(x, 17).shape == (8, 8)  # 2·8 + 1: one full wrap still fits
    with pytest.raises(ValueError, match="boundary"):
        box_mean(x, 3, "zero")
