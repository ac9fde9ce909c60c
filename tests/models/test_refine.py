"""PsirRefine: starts exactly at the classical estimate, learns, round-trips, runs as a chain step."""

from __future__ import annotations

import re
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch

from cmrecon.chain.definition import resolve, with_step_params
from cmrecon.chain.runner import run_chain
from cmrecon.errors import CmreconError
from cmrecon.evaluate import psir_ratio_images, with_float_ratio
from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.models.refine import PsirRefine, _first_layer_from, draw_samples, make_refine_sample, weighted_l1
from cmrecon.models.weights import load_checkpoint, save_checkpoint
from cmrecon.recon.psir_head import psirnet_head

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = dict(size=(64, 48), coils=(6, 6), R=(2,), acs_lines=16, snr=(10.0, 10.0), moco_repeats=(4, 4))


def test_untrained_model_is_the_head_on_the_classical_images_exactly():
    s = make_refine_sample(np.random.default_rng(1), **SMALL)
    model = PsirRefine(chans=4, pools=2)
    out = model(torch.from_numpy(s["ir"])[None], torch.from_numpy(s["pd"])[None])[0, 0]
    ref = psirnet_head(s["ir"][0] * model.gain, s["pd"][0] * model.gain)
    np.testing.assert_array_equal(out.detach().numpy(), np.asarray(ref))


def test_one_step_of_training_lowers_the_loss_on_its_batch():
    torch.manual_seed(0)
    s = make_refine_sample(np.random.default_rng(2), **SMALL)
    model = PsirRefine(chans=4, pools=2)
    ir, pd = torch.from_numpy(s["ir"])[None], torch.from_numpy(s["pd"])[None]
    target = torch.from_numpy(s["target"])[None]
    w = torch.from_numpy(s["body"])[None].float() + 3 * torch.from_numpy(s["heart"])[None].float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = float(weighted_l1(model(ir, pd), target, w))
    for _ in range(3):
        opt.zero_grad()
        loss = weighted_l1(model(ir, pd), target, w)
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(weighted_l1(model(ir, pd), target, w)) < before


def test_checkpoint_round_trip_and_the_chain_step_equals_the_classical_head_when_untrained(weights_folder):
    model = PsirRefine(chans=4, pools=2, noise_channel=True, trained_sizes=[[48, 64]])
    path = weights_folder / "refine.pt"
    save_checkpoint(path, model, model.model_config(), {})
    loaded = load_checkpoint(path)
    assert type(loaded.model).__name__ == "PsirRefine" and loaded.config == model.model_config()
    h5 = DATA / "sim_lge_r2_embedded.h5"
    header, items = read_header_xml(h5), list(iter_items(h5))
    refined = psir_ratio_images(with_float_ratio(
        with_step_params(resolve("psir_refine"), "psir_refine", weights=str(path))), header, items)
    # head(g·IR, g·PD, reg 16) = head(IR, PD, reg 16/g²): the classical chain with that head
    classic = psir_ratio_images(with_float_ratio(with_step_params(
        resolve("psir_classic"), "psir", psirnet_compatible=True, t_sigma=4.0 / model.gain)), header, items)
    kellman = psir_ratio_images(with_float_ratio(resolve("psir_classic")), header, items)
    # where there is signal the head's; in air (classical |PD| < 3σ) psir_classic's own PSIR
    truth = np.load(DATA / "sim_lge_r2_embedded_truth.npz")
    body = truth["body_mask"][0]
    from_head = np.isclose(refined[0], classic[0], rtol=0, atol=1e-5)
    from_classic = np.isclose(refined[0], kellman[0], rtol=0, atol=1e-5)
    assert np.all(from_head | from_classic)
    assert from_head[truth["heart_mask"][0]].all()
    # the 3×3 mean reaches a pixel or two beyond the body edge (64×48: ~15 % of the outside)
    assert from_classic[~body].mean() > 0.8 and from_head[body].mean() > 0.8


def test_a_noise_channel_model_started_from_a_first_generation_one_gives_its_output_exactly():
    torch.manual_seed(3)
    s = make_refine_sample(np.random.default_rng(4), **SMALL)
    old = PsirRefine(chans=4, pools=2)
    for prm in old.unet.up_conv[-1][-1].parameters():   # a trained-looking last layer
        torch.nn.init.normal_(prm, std=0.1)
    new = PsirRefine(chans=4, pools=2, noise_channel=True)
    new.load_state_dict(_first_layer_from(new, old.state_dict()), strict=True)
    ir, pd = torch.from_numpy(s["ir"])[None], torch.from_numpy(s["pd"])[None]
    with torch.no_grad():
        a, b = old(ir, pd), new(ir, pd)
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_samples_are_the_same_whether_drawn_by_one_process_or_two():
    one = draw_samples(11, 3, dict(SMALL, sizes=((64, 48), (48, 40))), workers=1)
    two = draw_samples(11, 3, dict(SMALL, sizes=((64, 48), (48, 40))), workers=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["ir"], b["ir"])
        np.testing.assert_array_equal(a["target"], b["target"])


@pytest.mark.parametrize("config, why", [
    (dict(trained_sizes=[[96, 128]]), "matrix 64x48 (RO x PE) is outside"),
    (dict(trained_sizes=[[48, 64]], max_acceleration=1), "R = 2 is above the R <= 1"),
])
def test_an_input_outside_the_training_range_gets_the_classical_psir_and_says_so(weights_folder, config, why):
    model = PsirRefine(chans=4, pools=2, **config)
    path = weights_folder / "refine.pt"
    save_checkpoint(path, model, model.model_config(), {})
    h5 = DATA / "sim_lge_r2_embedded.h5"
    header, items = read_header_xml(h5), list(iter_items(h5))
    chain = with_step_params(resolve("psir_refine"), "psir_refine", weights=str(path))
    images = [im for im in run_chain(chain, header, iter(items)) if isinstance(im, ismrmrd.Image)]
    classic = {im.image_series_index: im for im in run_chain(resolve("psir_classic"), header, iter(items))
               if isinstance(im, ismrmrd.Image)}
    psir = [im for im in images if im.image_series_index == 1]
    assert psir
    for im in psir:
        meta = ismrmrd.Meta.deserialize(im.attribute_string)
        assert why in meta["cmrecon_fallback"]
        assert "CLASSICAL FALLBACK" in list(meta["GADGETRON_ImageComment"])
    np.testing.assert_array_equal(psir[0].data, classic[1].data)     # exactly psir_classic's image
    with pytest.raises(CmreconError, match=re.escape(why)):
        list(run_chain(with_step_params(chain, "psir_refine", fallback=False), header, iter(items)))


def test_the_shipped_model_has_no_tissue_bias_at_r1():
    """Mean PSIR bias against the noise-free target in LV blood, LV myocardium and scar within
    0.01 (the learned round's bound; the per-sample spread is ~0.004 in blood and myocardium and
    ~0.013 in scar, so the mean of 10 shots is known to ~0.004) at R = 1, PD SNR 6-40, 128×96.
    """
    from cmrecon.models.shipped import load_shipped
    from cmrecon.sim import phantom as ph
    model = load_shipped("psir_refine_cpu").model
    bias: dict[str, list[float]] = {"blood": [], "myocardium": [], "scar": []}
    tissues = {"blood": ph.LV_BLOOD, "myocardium": ph.LV_MYO, "scar": ph.SCAR}
    for i in range(10):
        s = make_refine_sample(np.random.default_rng([77, i]), size=(128, 96), coils=(8, 16), R=(1,),
                               acs_lines=24, snr=(6.0, 40.0), moco_repeats=(4, 4), with_labels=True)
        with torch.no_grad():
            psir = model(torch.from_numpy(s["ir"])[None], torch.from_numpy(s["pd"])[None])[0, 0].numpy()
        for name, label in tissues.items():
            where = s["labels"][0] == label
            if where.any():
                bias[name].append(float((psir - s["target"][0])[where].mean()))
    for name, values in bias.items():
        assert len(values) >= 5, name
        assert abs(np.mean(values)) <= 0.01, (name, np.mean(values), values)


def test_psirnet_lge_with_refine_weights_gives_the_psir_refine_chains_images(weights_folder):
    """The refine preset inside psirnet_lge: psirnet_recon unfolds the slice as the classical
    chain does and refines the same key-frame repeat, so both chains' PSIR are equal.
    """
    torch.manual_seed(6)
    model = PsirRefine(chans=4, pools=2, noise_channel=True, trained_sizes=[[48, 64]])
    for prm in model.unet.up_conv[-1][-1].parameters():   # a model that changes its input
        torch.nn.init.normal_(prm, std=0.05)
    path = weights_folder / "refine.pt"
    save_checkpoint(path, model, model.model_config(), {})
    h5 = DATA / "sim_lge_r2_embedded.h5"
    header, items = read_header_xml(h5), list(iter_items(h5))
    via_refine = psir_ratio_images(with_float_ratio(
        with_step_params(resolve("psir_refine"), "psir_refine", weights=str(path))), header, items)
    via_psirnet = psir_ratio_images(with_float_ratio(
        with_step_params(resolve("psirnet_lge"), "psirnet_recon", weights=str(path))), header, items)
    head_only = psir_ratio_images(with_float_ratio(with_step_params(
        resolve("psir_classic"), "psir", psirnet_compatible=True, t_sigma=4.0 / model.gain)), header, items)
    np.testing.assert_array_equal(via_psirnet[0], via_refine[0])
    assert np.abs(via_refine[0] - head_only[0]).max() > 1e-3    # the network did change the images
