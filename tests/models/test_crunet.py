"""CineCRUNet: shapes, batch safety, circular time, exact hard DC, the zero-initialised identity,
no dead parameters, and sha256-verified checkpoints (shipped weights reproduce a recorded output).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrecon.models.cine_train import phantom_slice
from cmrecon.models.crunet import (
    CineCRUNet,
    SpaceTime,
    TemporalConv,
    count_parameters,
    crunet_reconstruct,
    data_consistency,
    load_cine_crunet,
    zero_filled,
)
from cmrecon.models.weights import ChecksumMismatchError, WeightsError, save_checkpoint
from cmrecon.recon.fft import fft2c, ifft2c
from cmrecon.recon.sense import expand, reduce

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# float32 arithmetic through a few cascades of convolutions and FFTs on images of magnitude
# ~20: a batch of two and one case alone differ only by the BLAS blocking, ~1e-6 relative
BATCH_RTOL = 1e-5


def _case(seed: int, n: int = 20, phases: int = 5, coils: int = 3, R: int = 4, sampling: str = "equispaced"):
    sl = phantom_slice(np.random.default_rng(seed), n, phases, coils, R, sampling, acs_rows=4)
    return (torch.from_numpy(sl.kspace)[None], torch.from_numpy(sl.maps)[None],
            torch.from_numpy(sl.mask)[None])


def _randomised(model: CineCRUNet, seed: int = 0) -> CineCRUNet:
    """The model with its zero-initialised output convolutions drawn at random (a trained-like model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c in model.cascades:
            c.conv_out.weight.copy_(0.05 * torch.randn(c.conv_out.weight.shape, generator=g))
            c.conv_out.bias.copy_(0.05 * torch.randn(c.conv_out.bias.shape, generator=g))
    return model


def test_output_is_complex64_images_of_every_phase_on_the_kspace_grid_odd_sizes_too():
    torch.manual_seed(0)
    model = _randomised(CineCRUNet(chans=4, num_cascades=2))
    k, maps, mask = _case(1, n=20)
    k, maps, mask = k[..., :19, :17], maps[..., :19, :17], mask[..., :19]   # odd y and x: padded inside
    out = model(k, maps, mask)
    assert out.shape == (1, 5, 19, 17) and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()
    with pytest.raises(ValueError, match="expected kspace"):
        model(k[0], maps, mask)


def test_a_batch_of_two_different_cases_equals_each_case_alone():
    torch.manual_seed(0)
    model = _randomised(CineCRUNet(chans=4, num_cascades=2)).eval()
    a, b = _case(1), _case(2, R=2, sampling="kt_interleaved")
    with torch.no_grad():
        both = model(*(torch.cat([x, y]) for x, y in zip(a, b)))
        alone = [model(*a)[0], model(*b)[0]]
    for i in range(2):
        scale = float(alone[i].abs().max())
        assert float((both[i] - alone[i]).abs().max()) <= BATCH_RTOL * scale
    assert float((alone[0] - alone[1]).abs().max()) > 0.1 * float(alone[0].abs().max())


def test_temporal_blocks_are_circular_rolling_the_input_in_time_rolls_the_output():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 8, 8)
    for block in (TemporalConv(4, 5), SpaceTime(torch.nn.Conv2d(4, 4, 3, padding=1), 4)):
        y = block(x)
        for shift in (1, 2, -1):
            torch.testing.assert_close(block(x.roll(shift, 1)), y.roll(shift, 1), rtol=0, atol=1e-6)
    # the first and last frames are neighbours: changing frame T-1 changes output frame 0
    conv = TemporalConv(4, 4)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(conv(x2)[:, 0], conv(x)[:, 0])
    assert torch.equal(conv(x2)[:, 2], conv(x)[:, 2])


def test_hard_dc_keeps_exactly_the_measured_samples_on_sampled_rows():
    k, maps, mask = _case(3)
    pred = torch.randn_like(k)
    out = data_consistency(pred, k, mask)
    rows = mask[:, :, None, :, None].expand_as(k)
    assert torch.equal(out[rows], k[rows]) and torch.equal(out[~rows], pred[~rows])


def test_single_coil_output_reproduces_the_measured_samples():
    # with one coil of sensitivity 1, S^H and S are identities: the output's k-space is the DC'd k-space
    torch.manual_seed(0)
    model = _randomised(CineCRUNet(chans=4, num_cascades=2))
    k, _, mask = _case(4, coils=3)
    k1 = k[:, :, :1]
    ones = torch.ones(1, 1, *k.shape[-2:], dtype=torch.complex64)
    with torch.no_grad():
        out = model(k1, ones, mask)
    kout = fft2c(out)
    rows = mask[:, :, :, None].expand_as(kout)
    torch.testing.assert_close(kout[rows], k1[:, :, 0][rows], rtol=0, atol=1e-4)
    assert float((kout[~rows]).abs().max()) > 0   # the network filled the unsampled rows


def test_untrained_model_is_data_consistency_repeated_on_the_zero_filled_image():
    model = CineCRUNet(chans=4, num_cascades=3)
    k, maps, mask = _case(5)
    with torch.no_grad():
        out = model(k, maps, mask)
        image = zero_filled(k, maps, mask)
        k0 = torch.where(mask[:, :, None, :, None], k, 0)
        for _ in range(3):
            kk = data_consistency(fft2c(expand(image[:, :, None], maps[:, None])), k0, mask)
            image = reduce(ifft2c(kk), maps[:, None])[:, :, 0]
    torch.testing.assert_close(out, image, rtol=0, atol=1e-4 * float(image.abs().max()))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = _randomised(CineCRUNet(chans=4, num_cascades=2))
    k, maps, mask = _case(6)
    model(k, maps, mask).abs().pow(2).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert count_parameters(CineCRUNet(16, 4)) == 223_368


def test_numpy_helper_equals_the_model_and_a_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = _randomised(CineCRUNet(chans=4, num_cascades=2)).eval()
    k, maps, mask = _case(7)
    out = crunet_reconstruct(model, k[0].numpy(), maps[0].numpy(), mask[0].numpy())
    assert out.dtype == np.complex64 and out.shape == (5, 20, 20)
    with torch.no_grad():
        np.testing.assert_array_equal(out, model(k, maps, mask)[0].numpy())
    path = tmp_path / "crunet.pt"
    digest = save_checkpoint(path, model, model.model_config(), {"note": "test"})
    loaded = load_cine_crunet(path)
    assert loaded.sha256 == digest and loaded.config == {"chans": 4, "num_cascades": 2}
    assert not loaded.model.training
    np.testing.assert_array_equal(crunet_reconstruct(loaded.model, k[0].numpy(), maps[0].numpy(),
                                                     mask[0].numpy()), out)
    with pytest.raises(ChecksumMismatchError):
        load_cine_crunet(path, expected_sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        load_cine_crunet(path)
    (tmp_path / "nosidecar.pt").write_bytes(b"x")
    with pytest.raises(WeightsError, match="cannot verify"):
        load_cine_crunet(tmp_path / "nosidecar.pt")
    from cmrecon.models.refine import PsirRefine
    other = PsirRefine(chans=4, pools=2)
    save_checkpoint(tmp_path / "refine.pt", other, other.model_config(), {})
    with pytest.raises(WeightsError, match="not a CineCRUNet"):
        load_cine_crunet(tmp_path / "refine.pt")


# Recorded with the shipped weights (sha256 dbe62005…) on phantom_slice(default_rng(0), 24, 6, 4, 4,
# acs_rows=4), one torch thread: Σ|out| and two pixels. A float32 forward on another BLAS may
# differ by ~1e-6 relative; 1e-4 leaves room for that and nothing else.
RECORDED_SUM_ABS = 11016.798828125
RECORDED_PIXELS = {(2, 12, 12): 16.335344314575195 - 10.517775535583496j,
                   (5, 3, 20): -0.41524702310562134 - 0.3732629418373108j}


def test_shipped_weights_verify_their_digest_and_reproduce_a_recorded_output(fresh_model_cache):
    from cmrecon.models import serving, shipped
    loaded = load_cine_crunet("cine_crunet_cpu")
    assert loaded.sha256 == shipped.SHIPPED["cine_crunet_cpu"]["sha256"]
    assert count_parameters(loaded.model) == shipped.SHIPPED["cine_crunet_cpu"]["parameters"]
    sl = phantom_slice(np.random.default_rng(0), 24, 6, 4, 4, acs_rows=4)
    out = crunet_reconstruct(loaded.model, sl.kspace, sl.maps, sl.mask)
    assert float(np.abs(out).sum()) == pytest.approx(RECORDED_SUM_ABS, rel=1e-4)
    for idx, value in RECORDED_PIXELS.items():
        assert abs(complex(out[idx]) - value) <= 1e-4 * float(np.abs(out).max())
    entry = serving.get_model("cine_crunet_cpu", "cpu", warm_up=False)   # the chain step's loader
    assert isinstance(entry.model, CineCRUNet) and entry.sha256 == loaded.sha256
    with pytest.raises(WeightsError, match="differs from the registry"):
        load_cine_crunet("cine_crunet_cpu", expected_sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError):
        load_cine_crunet(shipped.shipped_path("cine_crunet_cpu"), expected_sha256="0" * 64)
