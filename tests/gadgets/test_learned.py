"""psirnet_recon / psirnet_lge: shipped weights, model cache, input checks, OOM fallback, replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmrecon.chain.definition import load_file, resolve, with_step_params
from cmrecon.errors import StepError
from cmrecon.models import adapter, shipped
from cmrecon.models import serving as inf
from cmrecon.models.psirnet import PSIRNet
from cmrecon.models.weights import ChecksumMismatchError, WeightsError, save_checkpoint
from cmrecon.products.lge import MappedKspace, PsirImages

from paths import DATA, ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_model_cache")

TINY = dict(num_cascades=1, chans=4, sens_chans=2, pools=2, sens_pools=2)


@pytest.fixture()
def tiny_ckpt(weights_folder) -> Path:
    torch.manual_seed(0)
    model = PSIRNet(**TINY)
    path = weights_folder / "tiny.pt"
    save_checkpoint(path, model, model.model_config(), {"note": "test"})
    return path


# --- shipped weights ----------------------------------------------------------------------------

def test_shipped_weights_resolve_from_the_package_and_match_the_registry():
    entry = shipped.SHIPPED["psirnet_cpu_small"]
    path = shipped.shipped_path("psirnet_cpu_small")
    assert path == ROOT / "weights" / "psirnet_cpu_small.pt" and path.is_file()
    assert path.stat().st_size < 25e6
    loaded = shipped.load_shipped("psirnet_cpu_small")
    assert loaded.sha256 == entry["sha256"]
    assert sum(p.numel() for p in loaded.model.parameters()) == entry["parameters"] == 1_963_624


def test_sha256_mismatch_is_refused_with_a_clear_error(tmp_path, tiny_ckpt, monkeypatch):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    shutil.copy(tiny_ckpt, wdir / "tiny.pt")
    monkeypatch.setenv("CMRECON_WEIGHTS", str(wdir))
    monkeypatch.setitem(shipped.SHIPPED, "tiny", {"path": "tiny.pt", "sha256": "0" * 64,
                                                  "config": PSIRNet(**TINY).model_config()})
    with pytest.raises(ChecksumMismatchError, match=r"sha256 .* but expected_sha256 says 0{64}"):
        shipped.load_shipped("tiny")
    # and through the step's model cache
    with pytest.raises(ChecksumMismatchError):
        inf.get_model("tiny", "cpu")
    # a tampered checkpoint whose sidecar no longer matches is refused too
    data = bytearray(tiny_ckpt.read_bytes())
    data[-10] ^= 0xFF
    tiny_ckpt.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="sidecar"):
        inf.get_model(str(tiny_ckpt), "cpu")


def test_unknown_weights_name_lists_the_shipped_ones():
    with pytest.raises(WeightsError, match="psirnet_cpu_small"):
        inf.get_model("no_such_weights", "cpu")


# --- model cache --------------------------------------------------------------------------------

def _items(case: str):
    from cmrecon.io.mrdfile import iter_items, read_header_xml
    path = DATA / f"sim_lge_{case}.h5"
    return read_header_xml(path), list(iter_items(path))


def _chain(weights: str, **params):
    return with_step_params(resolve("psirnet_lge"), "psirnet_recon", weights=weights, **params)


def _psir_images(chain, case: str) -> dict:
    from cmrecon.evaluate import psir_ratio_images, with_float_ratio
    header, items = _items(case)
    return psir_ratio_images(with_float_ratio(chain), header, items)


def _run_step(sl, **params):
    from cmrecon.chain.registry import StepContext, get_step
    spec = get_step("psirnet_recon")
    header, _ = _items("full")
    return list(spec.fn(iter([sl, "other item"]), spec.make_params(params),
                        StepContext(header_xml=header)))


def test_model_cache_returns_one_model_for_two_chains(tiny_ckpt, full_slice):
    a = inf.get_model(str(tiny_ckpt), "cpu")
    b = inf.get_model(str(tiny_ckpt), "auto" if not torch.cuda.is_available() else "cpu")
    assert a is b
    # two step instances (two chains / connections) with different batching share that object
    out1 = _run_step(full_slice, weights=str(tiny_ckpt), device="cpu", batch_slices=4)
    out2 = _run_step(full_slice, weights=str(tiny_ckpt), device="cpu", batch_slices=1)
    assert inf.get_model(str(tiny_ckpt), "cpu") is a and len(inf._CACHE) == 1
    # other items pass at once: before the held slice with batch 4, after it with batch 1
    assert out1[0] == "other item" and out2[1] == "other item"
    r1, r2 = out1[1], out2[0]
    assert r1.provenance["psirnet_sha256"] == a.sha256
    assert np.array_equal(r1.psir.psir, r2.psir.psir) and r1.psir.psir.shape == (48, 64)
    assert isinstance(r1, PsirImages) and r1.pd.shape == (48, 64)


def _random_inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random complex k-space and maps ``(batch, 3, 32, 24)`` and an R = 2 mask ``(batch, 1, 32, 24)``."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 3, 32, 24)
    k = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    maps = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    mask = (torch.arange(24) % 2 == 0).reshape(1, 1, 1, 24).expand(batch, 1, 32, 24)
    return k, maps, mask


def test_psirnet_images_equals_the_model_forward(tiny_ckpt):
    model = inf.get_model(str(tiny_ckpt), "cpu").model
    k, maps, mask = _random_inputs(batch=2, seed=1)
    with torch.inference_mode():
        psir, magir, pd, scc, phase = adapter.psirnet_images(model, k, 0.5 * k, mask, maps)
        ref = model(k, 0.5 * k, mask, maps)
    assert torch.equal(psir, ref)
    assert psir.shape == magir.shape == pd.shape == (2, 1, 32, 24)
    assert torch.all(magir >= psir.abs() - 1e-5)  # |Re(IR·e^{-iφ})| ≤ |IR|


def test_a_raw_torchscript_psirnet_gives_the_networks_own_magir_and_pd(tmp_path):
    """A torch.jit.load module (the published file's form) is rebuilt as a PSIRNet sharing its
    tensors: PSIR, MagIR and PD equal the eager model's (MagIR used to be |PSIR| for it).
    """
    from cmrecon.models.psirnet import PSIRNet
    from cmrecon.models.weights import WeightsError
    torch.manual_seed(5)
    eager = PSIRNet.from_preset("cpu_small").eval()
    torch.jit.script(eager).save(str(tmp_path / "PSIRNet.pt"))
    raw = torch.jit.load(str(tmp_path / "PSIRNet.pt"))
    k, maps, mask = _random_inputs(batch=1, seed=2)
    with torch.inference_mode():
        ours = adapter.psirnet_images(eager, k, 0.5 * k, mask, maps)
        theirs = adapter.psirnet_images(raw, k, 0.5 * k, mask, maps)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert not torch.allclose(theirs[1], theirs[0].abs())    # MagIR is not |PSIR|
    assert adapter.as_psirnet(raw) is adapter.as_psirnet(raw)   # rebuilt once
    with pytest.raises(WeightsError, match="match no PSIRNet preset"):
        adapter.as_psirnet(torch.nn.Linear(2, 2))


# --- input checks -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_slice():
    """The fully sampled recorded slice after noise_prewhiten → … → coil_maps."""
    return _mapped("full")


def _mapped(stream_name: str) -> MappedKspace:
    """The first slice of a recorded stream after noise_prewhiten → … → coil_maps."""
    from cmrecon.chain.registry import StepContext, get_step
    header, items = _items(stream_name)
    ctx = StepContext(header_xml=header)
    stream = iter(items)
    for name in ("noise_prewhiten", "remove_oversampling", "buffer_ir_pd", "coil_maps"):
        spec = get_step(name)
        stream = spec.fn(stream, spec.make_params({}), ctx)
    return [x for x in stream if isinstance(x, MappedKspace)][0]


def test_out_of_range_input_is_a_clear_step_error(full_slice):
    sl = full_slice
    prepare_slice = adapter.prepare_slice
    inp = prepare_slice(sl)
    assert inp.ir_kspace.shape == (8, 64, 48) and inp.mask.shape == (1, 64, 48)
    with pytest.raises(StepError, match="8 coils is outside the accepted 16..64"):
        prepare_slice(sl, min_coils=16)
    with pytest.raises(StepError, match="smaller than 64 pixels"):
        prepare_slice(sl, min_matrix=64)
    with pytest.raises(StepError, match="repeat = 3 is outside"):
        prepare_slice(sl, repeat=3)


def test_calibration_only_rows_are_filled_from_the_chosen_heartbeats_own_acs():
    """Embedded ACS lines off the R grid are kept per heartbeat; the input gets the chosen
    repeat's own (the network was trained on whole shots, ACS included), not the mean over
    repeats that moved differently.
    """
    mk = _mapped("r2_embedded")
    sl, cal = mk.kspace, mk.kspace.calibration
    extra = [r for r in cal.rows if not sl.mask_pe[r]]
    assert extra, "the recorded R = 2 stream has calibration-only rows"
    with_acs = adapter.prepare_slice(mk, repeat=1)
    without = adapter.prepare_slice(mk, repeat=1, use_acs=False)
    assert with_acs.mask[0, 0].sum() == without.mask[0, 0].sum() + len(extra)
    j = list(cal.rows).index(extra[0])
    np.testing.assert_array_equal(with_acs.pd_kspace[:, :, extra[0]], cal.per_repeat[1, 1][:, j])
    np.testing.assert_array_equal(with_acs.ir_kspace[:, :, extra[0]], cal.per_repeat[0, 1][:, j])
    assert not np.array_equal(cal.per_repeat[0, 1][:, j], cal.ir[:, j])   # not the mean
    assert not without.ir_kspace[:, :, extra[0]].any()
    imaging = np.flatnonzero(sl.mask_pe)
    np.testing.assert_array_equal(with_acs.ir_kspace[:, :, imaging], without.ir_kspace[:, :, imaging])


def test_step_refuses_a_matrix_too_small_for_the_unet(tiny_ckpt, full_slice):
    # 5 pools need 64 px in RO and PE; the recorded matrix is 64 x 48
    deep = PSIRNet(num_cascades=1, chans=2, sens_chans=0, pools=5, sens_pools=5)
    path = tiny_ckpt.with_name("deep.pt")
    save_checkpoint(path, deep, deep.model_config(), {})
    with pytest.raises(StepError, match=r"\(RO 64, PE 48\) is smaller than 64 pixels"):
        _run_step(full_slice, weights=str(path), device="cpu", fallback=False)


def test_an_input_the_model_was_not_trained_for_gets_the_classical_psir_and_says_so(tiny_ckpt):
    """R = 4 (the shipped weights know R 1-3): the classical PSIR of the key-frame repeat, the
    reason in the log and in every image's meta; never a silently broken image.
    """
    import ismrmrd

    from cmrecon.chain.runner import run_chain
    header, items = _items("r4_embedded_pf_rep")
    chain = with_step_params(resolve("psirnet_lge"), "psirnet_recon", max_acceleration=3)
    import copy  # noise_prewhiten whitens the readouts it is given in place (issue 11)
    images = [im for im in run_chain(chain, header, copy.deepcopy(items)) if isinstance(im, ismrmrd.Image)]
    classic = {im.image_series_index: im for im in run_chain(resolve("psir_classic"), header,
                                                             copy.deepcopy(items))
               if isinstance(im, ismrmrd.Image)}
    psir = [im for im in images if im.image_series_index == 1][0]
    meta = ismrmrd.Meta.deserialize(psir.attribute_string)
    assert "R = 4 is above the R <= 3" in meta["cmrecon_fallback"]
    assert "CLASSICAL FALLBACK" in list(meta["GADGETRON_ImageComment"])
    np.testing.assert_array_equal(psir.data, classic[1].data)     # exactly psir_classic's image
    with pytest.raises(Exception, match="R = 4 is above"):
        list(run_chain(with_step_params(chain, "psirnet_recon", fallback=False), header,
                       copy.deepcopy(items)))


# --- CUDA out-of-memory fallback ----------------------------------------------------------------

class _FakeOomModel(PSIRNet):
    """A tiny PSIRNet that raises CUDA OOM when the batch exceeds ``max_batch``."""

    def __init__(self, max_batch: int):
        super().__init__(num_cascades=1, chans=2, sens_chans=2, pools=1, sens_pools=1)
        self.max_batch = max_batch
        self.batches: list[int] = []

    def reconstruct(self, ir_kspace, pd_kspace, mask, sens_maps):
        self.batches.append(ir_kspace.shape[0])
        if ir_kspace.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return super().reconstruct(ir_kspace, pd_kspace, mask, sens_maps)


def _fake_inputs(n: int) -> list:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        k = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(np.complex64)
        out.append(adapter.SliceInput(k, k, np.ones((1, 16, 16), bool), np.ones_like(k) / np.float32(np.sqrt(2)), 0))
    return out


def test_oom_halves_the_batch_and_keeps_every_slice():
    torch.manual_seed(0)
    fake = _FakeOomModel(max_batch=1).eval()
    entry = inf.CachedModel(model=fake, device=torch.device("cpu"), weights="fake",
                            path=Path("fake"), sha256="", config={}, min_matrix=16)
    inputs = _fake_inputs(5)
    outs = inf.infer_slices(entry, inputs, batch_size=4)
    assert fake.batches == [4, 2, 1, 1, 1, 1, 1]
    for inp, out in zip(inputs, outs):   # each slice as if it had been run alone
        (alone,) = inf.infer_slices(entry, [inp], batch_size=1)
        np.testing.assert_allclose(out.psir, alone.psir, rtol=0, atol=1e-5 * np.abs(alone.psir).max())


def test_oom_at_batch_one_falls_back_to_the_cpu_model_or_errors():
    calls = {"primary": [], "fallback": []}

    def primary(chunk):
        calls["primary"].append(len(chunk))
        if "big" in chunk:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return [f"gpu:{c}" for c in chunk]

    def fallback(chunk):
        calls["fallback"].append(len(chunk))
        return [f"cpu:{c}" for c in chunk]

    out = inf.run_with_fallback(["a", "big", "b", "c"], primary, 2, fallback)
    assert out == ["gpu:a", "cpu:big", "gpu:b", "gpu:c"]
    assert calls == {"primary": [2, 1, 1, 1, 1], "fallback": [1]}
    with pytest.raises(StepError, match="out of memory for a single slice"):
        inf.run_with_fallback(["big"], primary, 1, None)


# --- chain files and replay ---------------------------------------------------------------------

def test_chain_yaml_and_xml_agree():
    from cmrecon.chain.definition import to_xml
    yaml_chain = load_file(ROOT / "chains" / "psirnet_lge.yaml")
    assert (ROOT / "chains" / "psirnet_lge.xml").read_text() == to_xml(yaml_chain)
    names = [s.name for s in yaml_chain.steps]
    assert names == ["noise_prewhiten", "remove_oversampling", "buffer_ir_pd", "coil_maps",
                     "psirnet_recon", "emit_images"]


#: Heart-region NRMSE vs the noise-free MOCO target (truth ``psir_target``) of the PSIR from
#: tests/data/sim_lge_r2_embedded.h5 (R = 2, 2 breathing repeats) at the key frame, through
#: psirnet_lge with its default weights (psir_refine_cpu, the refine preset): measured 0.089, and
#: with the unrolled psirnet_cpu_small: 0.144 (psir_classic on the same stream: 0.084; both CPU
#: models lose to it on this 64×48 stream, see docs/model_card.md). The bounds leave room for
#: BLAS/threading differences; a wrong repeat (0.2 px away) or a broken input fails them.
R2_NRMSE_HEART_MAX = {"psir_refine_cpu": 0.11, "psirnet_cpu_small": 0.18}


def test_replay_recorded_stream_with_shipped_weights():
    from cmrecon.evaluate import score_slice
    truth = dict(np.load(DATA / "sim_lge_r2_embedded_truth.npz"))
    classic = score_slice(_psir_images(resolve("psir_classic"), "r2_embedded")[0], truth, 0)["nrmse_heart"]
    for weights, bound in R2_NRMSE_HEART_MAX.items():
        chain = with_step_params(resolve("psirnet_lge"), "psirnet_recon", weights=weights)
        learned = score_slice(_psir_images(chain, "r2_embedded")[0], truth, 0)["nrmse_heart"]
        assert learned < bound, (weights, learned)
        assert classic < learned, (weights, learned, classic)   # documented loss (model card)


def test_the_pd_series_is_the_pd_heartbeat_dark_air_bright_tissue():
    """The PD series shows the reconstructed PD heartbeat (the network's PD had stripes in air
    brighter than tissue); compared with the noise-free truth |PD| in the body.
    """
    import ismrmrd

    from cmrecon.chain.runner import run_chain
    from cmrecon.metrics import nrmse
    header, items = _items("r2_embedded")
    truth = dict(np.load(DATA / "sim_lge_r2_embedded_truth.npz"))
    pd = [im for im in run_chain(resolve("psirnet_lge"), header, items)
          if isinstance(im, ismrmrd.Image) and im.image_series_index == 3]
    assert len(pd) == 1
    img = pd[0].data[0, 0].astype(np.float64)                     # (PE, RO), |PD| in SNR units
    body = truth["body_mask"][0]
    from scipy.ndimage import binary_dilation
    air = ~binary_dilation(body, iterations=4)
    # noise only in air: Rayleigh mean σ·√(π/4) ≈ 0.9 (times the GRAPPA g-factor), tissue ~20-40
    assert img[air].mean() < 0.1 * img[body].mean()
    # single-shot PD vs the noise-free truth in the body: noise (1/SNR ~ 0.05) plus coil-map error
    assert nrmse(img, np.abs(truth["pd"][0]), body) < 0.15


def test_a_torchscript_psirnet_by_path_gives_the_eager_models_psir_and_is_refused_unpinned(weights_folder):
    """`weights: /path/PSIRNet.pt` (TorchScript detected, preset, digest pinned) and
    `cmrecon weights import` give exactly the PSIR of the same weights as our checkpoint.
    """
    import torch

    from cmrecon.cli import main
    from cmrecon.models.psirnet import PSIRNet
    from cmrecon.models.weights import file_sha256, save_checkpoint
    torch.manual_seed(3)
    model = PSIRNet.from_preset("cpu_small").eval()
    scripted, ours = weights_folder / "PSIRNet.pt", weights_folder / "ours.pt"
    torch.jit.script(model).save(str(scripted))
    save_checkpoint(ours, model, model.model_config())
    reference = _psir_images(_chain(str(ours)), "r2_embedded")
    with pytest.raises(Exception, match="pin their sha256"):
        _psir_images(_chain(str(scripted), preset="cpu_small"), "r2_embedded")
    with pytest.raises(Exception, match="expected_sha256 says 0{64}"):
        _psir_images(_chain(str(scripted), preset="cpu_small", weights_sha256="0" * 64), "r2_embedded")
    by_path = _psir_images(_chain(str(scripted), preset="cpu_small",
                                  weights_sha256=file_sha256(scripted)), "r2_embedded")
    np.testing.assert_array_equal(by_path[0], reference[0])
    imported = weights_folder / "imported.pt"
    assert main(["weights", "import", str(scripted), "-o", str(imported), "--preset", "cpu_small",
                 "--sha256", file_sha256(scripted)]) == 0
    np.testing.assert_array_equal(_psir_images(_chain(str(imported)), "r2_embedded")[0], reference[0])
