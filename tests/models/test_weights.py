"""Tests of weights I/O: TorchScript state copy and our sha256-checked checkpoints."""

import os

import pytest
import torch

from cmrecon.models.psirnet import PSIRNet
from cmrecon.models.weights import (
    ChecksumMismatchError,
    WeightsError,
    copy_torchscript_state,
    file_sha256,
    load_checkpoint,
    load_published,
    load_torchscript,
    save_checkpoint,
    sidecar_path,
)

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")

TINY = dict(num_cascades=2, chans=4, sens_chans=4, pools=2, sens_pools=2)


def _inputs(seed=0, b=1, c=3, ro=20, pe=16):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, 1, ro, pe, generator=gen) < 0.5
    ir, pd, maps = (torch.randn(b, c, ro, pe, dtype=torch.complex64, generator=gen)
                    for _ in range(3))
    return ir * mask, pd * mask, mask, maps


def _perturb(model, seed):
    """Make the DC weights (initialised to ones) differ between models too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for cascade in model.cascades:
            cascade.ir_dc_weight.copy_(torch.rand(1, generator=gen) + 0.2)
            cascade.pd_dc_weight.copy_(torch.rand(1, generator=gen) + 0.2)
    return model


def test_torchscript_roundtrip_into_eager_model(tmp_path):
    torch.manual_seed(1)
    source = _perturb(PSIRNet(**TINY), 1).eval()
    path = tmp_path / "tiny_scripted.pt"
    torch.jit.script(source).save(str(path))

    scripted = load_torchscript(path, map_location="cpu")
    torch.manual_seed(2)
    eager = _perturb(PSIRNet(**TINY), 2).eval()
    x = _inputs()
    with torch.no_grad():
        reference = scripted(*x)
        before = eager(*x)
        assert not torch.allclose(before, reference, atol=1e-3)  # the copy has work to do
        copy_torchscript_state(scripted, eager)
        after = eager(*x)
    torch.testing.assert_close(after, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, source(*x), atol=1e-5, rtol=1e-5)


def test_copy_reports_missing_and_unexpected_keys(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "three_cascades.pt"
    torch.jit.script(PSIRNet(**{**TINY, "num_cascades": 3}).eval()).save(str(path))
    scripted = load_torchscript(path)
    with pytest.raises(WeightsError, match=r"unexpected keys \(\d+\): \['cascades\.2\."):
        copy_torchscript_state(scripted, PSIRNet(**TINY))
    with pytest.raises(WeightsError, match=r"missing keys .*cascades\.3\."):
        copy_torchscript_state(scripted, PSIRNet(**{**TINY, "num_cascades": 4}))
    with pytest.raises(WeightsError, match="shape mismatches"):
        copy_torchscript_state(scripted, PSIRNet(**{**TINY, "num_cascades": 3, "chans": 6}))


def test_load_torchscript_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_torchscript(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(WeightsError, match="TorchScript"):
        load_torchscript(bad)


def test_checkpoint_roundtrip_and_sidecar(tmp_path):
    torch.manual_seed(3)
    model = _perturb(PSIRNet(**TINY), 3).eval()
    path = tmp_path / "ckpt" / "psirnet_tiny.pt"
    metrics = {"val_ssim": torch.tensor(0.5), "epoch": 3, "hist": (1.0, 2.0)}
    digest = save_checkpoint(path, model, model.model_config(), metrics)
    assert digest == file_sha256(path)
    assert sidecar_path(path).read_text() == f"{digest}  psirnet_tiny.pt\n"

    loaded = load_checkpoint(path)
    assert loaded.sha256 == digest and loaded.metrics == {"val_ssim": 0.5, "epoch": 3,
                                                              "hist": [1.0, 2.0]}
    assert loaded.config == model.model_config() and not loaded.model.training
    x = _inputs(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(*x), model(*x), atol=0, rtol=0)
    assert load_checkpoint(path, expected_sha256=digest.upper()).sha256 == digest


def test_checkpoint_checksum_mismatch(tmp_path):
    torch.manual_seed(0)
    model = PSIRNet(**TINY)
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, model, model.model_config(), {})
    with pytest.raises(WeightsError, match=r"metrics\['bad'\]"):
        save_checkpoint(tmp_path / "x.pt", model, model.model_config(), {"bad": object()})
    with pytest.raises(ChecksumMismatchError, match="expected_sha256"):
        load_checkpoint(path, expected_sha256="0" * 64)
    # tamper with the file: the sidecar no longer matches
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="sidecar"):
        load_checkpoint(path)
    with pytest.raises(ChecksumMismatchError):
        load_checkpoint(path, expected_sha256=digest)
    # no sidecar and no expected digest: nothing to verify against
    sidecar_path(path).unlink()
    with pytest.raises(WeightsError, match="cannot verify"):
        load_checkpoint(path)


def test_load_published_path_with_a_tiny_config(tmp_path):
    """The meta-device build + copy used for the 3.4 GB published file, on a tiny model."""
    torch.manual_seed(5)
    source = _perturb(PSIRNet(**TINY), 5).eval()
    path = tmp_path / "tiny.pt"
    torch.jit.script(source).save(str(path))
    model = load_published(path, config=TINY)
    assert isinstance(model, PSIRNet) and not model.training
    x = _inputs(seed=6)
    with torch.no_grad():
        torch.testing.assert_close(model(*x), source(*x), atol=1e-5, rtol=1e-5)


def test_nothing_is_deserialised_before_the_digest_is_checked(tmp_path, monkeypatch):
    """A mismatching or unpinned file of either format never reaches torch.load / torch.jit.load."""
    from cmrecon.models import weights

    torch.manual_seed(0)
    model = PSIRNet(**TINY)
    ours, scripted = tmp_path / "ours.pt", tmp_path / "scripted.pt"
    save_checkpoint(ours, model, model.model_config(), {})
    torch.jit.script(model.eval()).save(str(scripted))

    def refuse(*args, **kwargs):
        raise AssertionError("deserialised before its digest was checked")
    monkeypatch.setattr(weights.torch, "load", refuse)
    monkeypatch.setattr(weights, "load_published", refuse)
    for path in (ours, scripted):
        for load in (weights.load_verified, weights.load_checkpoint):
            with pytest.raises(ChecksumMismatchError):
                load(path, expected_sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError):
        weights.load_published_verified(scripted, "0" * 64, preset="published")
    with pytest.raises(WeightsError, match="pin their sha256"):
        weights.load_verified(scripted)                    # no pin, no sidecar


def test_the_checkpoint_loaded_is_the_file_that_was_hashed(tmp_path, monkeypatch):
    """A file renamed over the checkpoint between the check and the read is not what loads."""
    from cmrecon.models import weights

    torch.manual_seed(1)
    good, other = PSIRNet(**TINY), PSIRNet(**TINY)
    path, swap = tmp_path / "good.pt", tmp_path / "other.pt"
    save_checkpoint(path, good, good.model_config(), {})
    save_checkpoint(swap, other, other.model_config(), {})
    verify = weights._verify

    def verify_then_swap(fh, p, expected):
        digest = verify(fh, p, expected)
        os.replace(swap, path)                             # the rename lands after the check
        return digest
    monkeypatch.setattr(weights, "_verify", verify_then_swap)
    loaded = weights.load_verified(path)
    for k, v in good.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


def test_the_same_weights_saved_twice_are_the_same_bytes(tmp_path):
    """Torch names its archive records after the file: saving via a temporary name made sha256 random."""
    import torch

    from cmrecon.models.refine import PsirRefine
    from cmrecon.models.weights import save_checkpoint
    torch.manual_seed(0)
    model = PsirRefine()
    a = save_checkpoint(tmp_path / "a.pt", model, model.model_config())
    b = save_checkpoint(tmp_path / "b.pt", model, model.model_config())
    assert a == b and (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
