"""PsirRefine: starts exactly at the classical estimate, learns, round-trips, runs as a chain step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cmrecon.chain.definition import resolve, with_step_params
from cmrecon.evaluate import psir_ratio_images, with_float_ratio
from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.models.refine import PsirRefine, make_refine_sample, weighted_l1
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
    model = PsirRefine(chans=4, pools=2)
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
    np.testing.assert_allclose(refined[0], classic[0], rtol=0, atol=1e-5)
