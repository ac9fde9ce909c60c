"""Tests of the parameter-free PSIRNet head (cmrecon.recon.psir_head)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter

from cmrecon.recon.psir_head import psirnet_head

# float32 round-off on O(1) ratios after two box means and a division
TOL_F32 = 2e-5
TOL_F64 = 1e-12


def _numpy_head(ir, pd, w=7, reg=16.0, eps=1e-6):
    """Independent reference: scipy box mean with wrap padding, same formula."""
    mag = np.abs(pd)
    a = uniform_filter(mag, size=w, mode="wrap") / (uniform_filter(mag**2, size=w, mode="wrap") + reg)
    return np.real(ir * np.conj(pd)) * a / np.sqrt(np.maximum(mag**2, eps))


def _random_pair(rng, shape, scale=20.0):
    ir = scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    pd = scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return ir, pd


def test_matches_numpy_reference_float64_2d():
    rng = np.random.default_rng(0)
    ir, pd = _random_pair(rng, (24, 20))
    out = psirnet_head(ir, pd)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (24, 20)
    np.testing.assert_allclose(out, _numpy_head(ir, pd), rtol=0, atol=TOL_F64)


def test_matches_numpy_reference_batched_torch_complex64():
    rng = np.random.default_rng(1)
    ir, pd = _random_pair(rng, (3, 1, 16, 18))
    out = psirnet_head(torch.from_numpy(ir.astype(np.complex64)),
                       torch.from_numpy(pd.astype(np.complex64)))
    assert torch.is_tensor(out) and out.dtype == torch.float32 and out.shape == (3, 1, 16, 18)
    ref = np.stack([_numpy_head(ir[b, 0], pd[b, 0]) for b in range(3)])[:, None]
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=TOL_F32 * np.abs(ref).max())


def test_is_the_published_head_bit_for_bit():
    """microsoft/psirnet's compute_scc_torch (circular F.pad, conv2d with a 1/49 kernel)."""
    rng = np.random.default_rng(2)
    ir, pd = (torch.from_numpy(z.astype(np.complex64)) for z in _random_pair(rng, (2, 1, 20, 16)))
    mag = pd.abs()
    kernel = torch.full((1, 1, 7, 7), 1 / 49)

    def box(x):
        return F.conv2d(F.pad(x, [3, 3, 3, 3], mode="circular"), kernel)

    scc = box(mag) / (box(mag * mag) + 16.0)
    published = (ir * pd.conj()).real * scc / torch.sqrt((mag * mag).clamp(min=1e-6))
    assert torch.equal(psirnet_head(ir, pd), published)


def test_circular_padding_not_zero_padding():
    """A bright PD column at the left edge must influence the right edge (wrap-around)."""
    pd = np.full((16, 16), 1.0 + 0j)
    pd[:, 0] = 50.0
    ir = np.ones_like(pd)
    out = psirnet_head(ir, pd)
    np.testing.assert_allclose(out, _numpy_head(ir, pd), atol=TOL_F64)
    # column 15's 7-wide window is columns 12..15 and, wrapped, 0..2: it holds the bright
    # column, so box|PD| = (6 + 50)/7 = 8 and box|PD|^2 = (6 + 2500)/7 = 358 (zero padding
    # would give 4/7 and 4/7 instead).
    np.testing.assert_allclose(out[:, -1], 8.0 / (358.0 + 16.0), rtol=1e-12)
    # column 8's window (5..11) does not reach the bright column
    np.testing.assert_allclose(out[:, 8], 1.0 / (1.0 + 16.0), rtol=1e-12)


@pytest.mark.parametrize("ratio", [-0.8, 0.07, 1.13, 1.62])
def test_uniform_region_gives_ratio_with_known_bias(ratio):
    """|PD| = p uniform: PSIR = Re(IR/PD) · p² / (p² + 16), sign kept, phase removed."""
    p = 30.0
    phase = np.exp(1j * np.linspace(0, 2.0, 32))[None, :] * np.ones((32, 1))  # smooth bg phase
    pd = p * phase
    ir = ratio * pd
    out = psirnet_head(ir, pd)
    expected = ratio * p**2 / (p**2 + 16.0)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert np.all(np.sign(out) == np.sign(ratio))


def test_zero_pd_is_finite_and_zero():
    ir = np.ones((12, 12), np.complex64)
    pd = np.zeros((12, 12), np.complex64)
    out = psirnet_head(ir, pd)
    assert np.all(np.isfinite(out)) and np.all(out == 0)


def test_input_validation():
    z = np.zeros((8, 8), np.complex64)
    with pytest.raises(ValueError, match="window_px"):
        psirnet_head(z, z, window_px=6)
    with pytest.raises(ValueError, match="complex"):
        psirnet_head(z.real, z.real)
    with pytest.raises(ValueError, match="shape"):
        psirnet_head(z, np.zeros((8, 9), np.complex64))
    with pytest.raises(ValueError, match="shape"):
        psirnet_head(np.zeros((2, 2, 8, 8), np.complex64), np.zeros((2, 2, 8, 8), np.complex64))


def test_gradient_flows():
    ir = torch.randn(1, 1, 10, 10, dtype=torch.complex64, requires_grad=True)
    pd = (5 * torch.randn(1, 1, 10, 10, dtype=torch.complex64)).requires_grad_(True)
    psirnet_head(ir, pd).sum().backward()
    assert torch.isfinite(ir.grad).all() and torch.isfinite(pd.grad).all()
    assert ir.grad.abs().sum() > 0
