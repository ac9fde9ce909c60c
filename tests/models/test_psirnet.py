"""Tests of the PSIRNet-style model: size, physics path, cascade algebra, determinism."""

import numpy as np
import pytest
import torch
from torch import nn

from cmrecon.models.psirnet import PRESETS, PSIRNet, SensitivityModel, VarNetBlock, count_parameters
from cmrecon.models.unet import JointNormUnet
from cmrecon.recon.fft import fft2c as np_fft2c
from cmrecon.recon.fft import ifft2c as np_ifft2c
from cmrecon.recon.operators import sense_operator
from cmrecon.recon.psir_head import psirnet_head

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

PUBLISHED_PARAMS = 845_426_378  # microsoft/psirnet, configs/psirnet.yaml
CPU_SMALL_PARAMS = 1_963_624
TINY = dict(num_cascades=2, chans=4, sens_chans=4, pools=2, sens_pools=2)
# float32 PSIR (an O(1) ratio) after a few FFT round trips
TOL_PSIR = 2e-4


class ZeroRegulariser(nn.Module):
    """Regulariser whose output is exactly zero: the cascade is then a pure gradient step."""

    def forward(self, ir, pd):
        return torch.zeros_like(ir), torch.zeros_like(pd)


def _phantom(ro=32, pe=28, coils=4, seed=0):
    """IR/PD images in SNR units with shared smooth background phase, RSS-normalised maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, ro), np.linspace(-1, 1, pe), indexing="ij")
    body = (xx**2 / 0.8 + yy**2 / 0.9) < 1
    blood = (xx**2 + (yy + 0.1) ** 2) < 0.12
    scar = ((xx - 0.35) ** 2 + (yy + 0.1) ** 2) < 0.01
    pd_mag = 40.0 * body * (1 + 0.3 * xx)  # coil-combined PD, SNR units
    ratio = np.where(body, -0.4, 0.0)  # long-T1 tissue: negative Mz at TI
    ratio = np.where(blood, 1.13, ratio)
    ratio = np.where(scar, 1.62, ratio)
    phase = np.exp(1j * (0.8 * xx - 0.5 * yy + 0.3))
    pd = (pd_mag * phase).astype(np.complex64)
    ir = (ratio * pd_mag * phase).astype(np.complex64)
    centres = rng.uniform(-1, 1, size=(coils, 2))
    maps = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2)) * np.exp(1j * rng.uniform(0, 6)
                                                                         + 1j * 0.5 * xx * c)
                     for c, (cx, cy) in enumerate(centres)])
    maps = (maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))).astype(np.complex64)
    return ir, pd, maps


def _kspace(image, maps, mask):
    return (np_fft2c(maps * image[None]) * mask).astype(np.complex64)


def _as_batch(ir_k, pd_k, mask, maps):
    t = torch.from_numpy
    return (t(ir_k)[None], t(pd_k)[None], t(mask)[None, None], t(maps)[None])


def test_published_parameter_count_on_meta_device():
    with torch.device("meta"):
        model = PSIRNet.from_preset("published")
    assert count_parameters(model) == PUBLISHED_PARAMS
    assert PRESETS["published"] == dict(num_cascades=12, chans=96, sens_chans=32, pools=4,
                                        sens_pools=4)


def test_cpu_small_preset_size_and_config_roundtrip():
    with torch.device("meta"):
        model = PSIRNet.from_preset("cpu_small")
        rebuilt = PSIRNet.from_config(model.model_config())
    assert count_parameters(model) == CPU_SMALL_PARAMS
    assert 1_000_000 <= CPU_SMALL_PARAMS <= 3_000_000
    assert rebuilt.model_config() == model.model_config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match="cpu_small"):
        PSIRNet.from_preset("nope")


def test_published_state_dict_names():
    """Key layout that a state dict from the published TorchScript model has."""
    with torch.device("meta"):
        keys = set(PSIRNet(num_cascades=1, chans=2, sens_chans=2, pools=4,
                           sens_pools=4).state_dict())
    for key in ("sens_net.norm_unet.unet.down_sample_layers.0.layers.0.weight",
                "sens_net.norm_unet.unet.down_sample_layers.3.layers.4.weight",
                "sens_net.norm_unet.unet.conv.layers.0.weight",
                "sens_net.norm_unet.unet.up_transpose_conv.0.layers.0.weight",
                "sens_net.norm_unet.unet.up_conv.3.0.layers.4.weight",
                "sens_net.norm_unet.unet.up_conv.3.1.bias",
                "cascades.0.ir_dc_weight", "cascades.0.pd_dc_weight",
                "cascades.0.model.unet.down_sample_layers.0.layers.0.weight",
                "cascades.0.model.unet.up_conv.3.1.weight"):
        assert key in keys, key
    # per 4-level U-Net: 8 down convs, 2 bottleneck, 4 transposed, 8 up convs, 1x1 weight+bias
    assert len(keys) == 2 * 24 + 2


def test_forward_shapes_dtypes_and_scriptable():
    torch.manual_seed(0)
    model = PSIRNet(**TINY).eval()
    gen = torch.Generator().manual_seed(1)
    b, c, ro, pe = 2, 3, 20, 18
    ir = torch.randn(b, c, ro, pe, dtype=torch.complex64, generator=gen)
    pd = torch.randn(b, c, ro, pe, dtype=torch.complex64, generator=gen)
    mask = torch.rand(b, 1, ro, pe, generator=gen) < 0.5
    maps = torch.randn(b, c, ro, pe, dtype=torch.complex64, generator=gen)
    ir, pd = ir * mask, pd * mask
    with torch.no_grad():
        out = model(ir, pd, mask, maps)
        scripted = torch.jit.script(model)(ir, pd, mask, maps)
    assert out.shape == (b, 1, ro, pe) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(scripted, out, atol=1e-5, rtol=1e-4)


def test_fully_sampled_zero_regulariser_reduces_to_head_on_combined_images():
    """R = 1, zero regulariser, given maps: output = head(IR, PD) of the true images."""
    ir, pd, maps = _phantom()
    mask = np.ones(ir.shape, bool)
    batch = _as_batch(_kspace(ir, maps, mask), _kspace(pd, maps, mask), mask, maps)
    model = PSIRNet(num_cascades=3, chans=4, sens_chans=0, pools=2)
    for i, cascade in enumerate(model.cascades):
        cascade.model = ZeroRegulariser()
        cascade.ir_dc_weight.data.fill_(0.5 + i)
        cascade.pd_dc_weight.data.fill_(-0.7)
    with torch.no_grad():
        out = model(*batch)[0, 0].numpy()
    expected = psirnet_head(ir.astype(np.complex128), pd.astype(np.complex128))
    np.testing.assert_allclose(out, expected, atol=TOL_PSIR)
    # inside the body the head is the signed IR/PD ratio shrunk by |PD|^2/(|PD|^2+16) at most
    body = np.abs(pd) > 30
    assert np.all(np.sign(out[body]) == np.sign((ir[body] / pd[body]).real))
    # and a model that forgot to conjugate the maps in the combination would be far off
    wrong = np.sum(maps * np_ifft2c(_kspace(ir, maps, mask)), axis=0)
    assert np.abs(psirnet_head(wrong, pd) - expected).max() > 100 * TOL_PSIR


def test_undersampled_zero_regulariser_matches_numpy_landweber():
    """With R(x) = 0 the cascades are gradient steps x <- x - |w| A^H(A x - y) (numpy reference)."""
    ir, pd, maps = _phantom(seed=3)
    rng = np.random.default_rng(5)
    mask = np.zeros(ir.shape, bool)
    mask[:, ::2] = True
    mask[:, 12:16] = True
    mask &= rng.random(ir.shape) < 0.9
    ir_k, pd_k = _kspace(ir, maps, mask), _kspace(pd, maps, mask)
    weights = [(0.6, 1.1), (-0.9, 0.4), (1.3, -0.2)]
    model = PSIRNet(num_cascades=len(weights), chans=4, sens_chans=0, pools=2)
    for cascade, (w_ir, w_pd) in zip(model.cascades, weights):
        cascade.model = ZeroRegulariser()
        cascade.ir_dc_weight.data.fill_(w_ir)
        cascade.pd_dc_weight.data.fill_(w_pd)
    with torch.no_grad():
        out = model(*_as_batch(ir_k, pd_k, mask, maps))[0, 0].numpy()

    def a_h(k):
        return np.sum(np.conj(maps) * np_ifft2c(k.astype(np.complex128)), axis=0)

    x_ir, x_pd = a_h(ir_k), a_h(pd_k)
    for w_ir, w_pd in weights:
        x_ir = x_ir - abs(w_ir) * a_h(_kspace(x_ir, maps, mask) - ir_k)
        x_pd = x_pd - abs(w_pd) * a_h(_kspace(x_pd, maps, mask) - pd_k)
    expected = psirnet_head(x_ir, x_pd)
    np.testing.assert_allclose(out, expected, atol=TOL_PSIR)
    # the steps matter: the zero-filled start gives a different PSIR
    assert np.abs(psirnet_head(a_h(ir_k), a_h(pd_k)) - expected).max() > 100 * TOL_PSIR


def test_cascade_is_gradient_step_minus_joint_regulariser():
    """VarNetBlock = x - |w| A^H(A x - y) - R(x_IR, x_PD), with the real 4-channel NormUnet."""
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(4)
    b, c, ro, pe = 1, 3, 16, 16
    maps = torch.randn(b, c, ro, pe, dtype=torch.complex64, generator=gen)
    mask = torch.rand(b, 1, ro, pe, generator=gen) < 0.5
    A = sense_operator(maps, mask)
    x_ir, x_pd = (torch.randn(b, 1, ro, pe, dtype=torch.complex64, generator=gen)
                  for _ in range(2))
    y_ir, y_pd = (A(torch.randn(b, 1, ro, pe, dtype=torch.complex64, generator=gen))
                  for _ in range(2))
    block = VarNetBlock(JointNormUnet(4, 2))
    block.ir_dc_weight.data.fill_(-0.3)
    block.pd_dc_weight.data.fill_(2.0)
    with torch.no_grad():
        out_ir, out_pd = block(x_ir, x_pd, y_ir, y_pd, mask, maps)
        r_ir, r_pd = block.model(x_ir, x_pd)
    assert r_ir.abs().mean() > 0.1 and r_pd.abs().mean() > 0.1  # a real, non-zero regulariser
    torch.testing.assert_close(out_ir, x_ir - 0.3 * A.H(A(x_ir) - y_ir) - r_ir,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_pd, x_pd - 2.0 * A.H(A(x_pd) - y_pd) - r_pd,
                               atol=1e-5, rtol=1e-5)


def test_joint_regulariser_couples_ir_and_pd():
    """One 4-channel U-Net: changing PD changes the IR term (joint refinement)."""
    torch.manual_seed(0)
    reg = JointNormUnet(4, 2).eval()
    gen = torch.Generator().manual_seed(0)
    ir = torch.randn(1, 1, 16, 16, dtype=torch.complex64, generator=gen)
    pd = torch.randn(1, 1, 16, 16, dtype=torch.complex64, generator=gen)
    pd2 = torch.randn(1, 1, 16, 16, dtype=torch.complex64, generator=gen)
    with torch.no_grad():
        assert (reg(ir, pd)[0] - reg(ir, pd2)[0]).abs().max() > 1e-3
    assert reg.unet.down_sample_layers[0].layers[0].in_channels == 4
    assert reg.unet.up_conv[-1][1].out_channels == 4


def test_sensitivity_model_output_has_unit_rss():
    torch.manual_seed(0)
    sens = SensitivityModel(4, 2)
    maps = torch.randn(2, 5, 18, 14, dtype=torch.complex64)
    with torch.no_grad():
        out = sens(maps)
    assert out.shape == maps.shape and out.dtype == torch.complex64
    torch.testing.assert_close(out.abs().pow(2).sum(dim=1), torch.ones(2, 18, 14),
                               atol=1e-5, rtol=0)


def test_determinism_for_a_seed():
    gen = torch.Generator().manual_seed(9)
    inputs = [torch.randn(1, 2, 16, 16, dtype=torch.complex64, generator=gen) for _ in range(3)]
    mask = torch.rand(1, 1, 16, 16, generator=gen) < 0.6
    outs = []
    for seed in (123, 123, 124):
        torch.manual_seed(seed)
        model = PSIRNet(**TINY).eval()
        with torch.no_grad():
            outs.append(model(inputs[0] * mask, inputs[1] * mask, mask, inputs[2]))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = PSIRNet(**TINY)
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(1, 2, 16, 16, dtype=torch.complex64, generator=gen)
    maps = torch.randn(1, 2, 16, 16, dtype=torch.complex64, generator=gen)
    mask = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    model(k, 2 * k, mask, maps).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing
