"""Cine chains end to end on the recorded cine streams: image conventions and quality vs the truth.

Quality bounds are named per chain and stream, with the value measured when they were set in
brackets; each bound leaves room for BLAS/thread rounding, not for a worse reconstruction.
"""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from cmrecon.chain.definition import resolve
from cmrecon.chain.runner import run_file
from cmrecon.evaluate_cine import cine_images, score_cine_slice
from cmrecon.io.mrdfile import iter_items, read_header_xml
from cmrecon.sim.cine_truth import CineTruth

from paths import DATA

STREAMS = ("r4_equispaced", "r8_kt_2slice", "full")
CLASSICAL = ("cine_sense", "cine_lps")
LEARNED = ("cine_crunet",)


def _load(name: str):
    h5 = DATA / f"sim_cine_{name}.h5"
    return h5, CineTruth.load(DATA / f"sim_cine_{name}_truth.npz")


@pytest.mark.parametrize("name", STREAMS)
def test_cine_sense_emits_one_image_per_phase_with_gadgetron_cine_headers(name):
    h5, truth = _load(name)
    images = [i for i in run_file(resolve("cine_sense"), h5) if isinstance(i, ismrmrd.Image)]
    slices, phases = truth.images.shape[:2]
    assert len(images) == slices * phases
    for k, img in enumerate(images):
        s, p = divmod(k, phases)
        assert (img.slice, img.phase, img.image_index, img.image_series_index) == (s, p, k + 1, 1)
        assert img.image_type == ismrmrd.IMTYPE_MAGNITUDE and img.data.dtype == np.float32
        assert img.data.shape[-2:] == truth.images.shape[-2:]
        meta = ismrmrd.Meta.deserialize(img.attribute_string)
        assert meta["CineMethod"] == "cine_sense"
        # the trigger time is that phase's readout nearest the k-space centre (2.5 ms ticks)
        ms = float(meta["cmrecon_trigger_ms"])
        assert ms == img.physiology_time_stamp[0] * 2.5
        half_segment = float(truth.trigger_times_ms[1] - truth.trigger_times_ms[0]) / 2
        assert abs(ms - truth.trigger_times_ms[p]) <= half_segment + 2.5


def test_fully_sampled_cine_sense_misses_the_truth_by_the_noise_alone():
    """R = 1: the only error left is the noise (σ = 1 per pixel in SNR units, unit-norm maps).

    Expected NMSE over the image = Σ σ² / Σ |truth|² per phase = N_pixels / Σ|truth|² (noise in
    magnitude images is a little lower where the signal is high, and the estimated maps shade a
    little differently from the true ones: 0.6×–1.4× the prediction).
    """
    h5, truth = _load("full")
    [result] = cine_images(resolve("cine_sense"), read_header_xml(h5), iter_items(h5)).values()
    ref = np.abs(truth.images[0])
    predicted = np.mean([ref[p].size / np.sum(ref[p] ** 2) for p in range(len(ref))])
    nmse = np.mean([np.sum((result[p] - ref[p]) ** 2) / np.sum(ref[p] ** 2) for p in range(len(ref))])
    assert 0.6 * predicted < nmse < 1.4 * predicted, (nmse, predicted)


@pytest.fixture(scope="module")
def scores() -> dict[tuple[str, str], list[dict[str, float]]]:
    """``{(chain, stream): [metrics per slice]}`` on the undersampled streams (the INR on one: it fits)."""
    out = {}
    for name in ("r4_equispaced", "r8_kt_2slice"):
        h5, truth = _load(name)
        for chain in CLASSICAL + LEARNED + (("cine_inr",) if name == "r4_equispaced" else ()):
            images = cine_images(resolve(chain), read_header_xml(h5), iter_items(h5))
            out[chain, name] = [score_cine_slice(images[s], truth, s) for s in sorted(images)]
    return out


# (chain, stream) → upper bound of the dynamic-region NMSE (GT-max normalisation) on every
# slice [measured 2026-12 on slice 0 (, 1)]
NMSE_DYNAMIC_BOUND = {
    ("cine_sense", "r4_equispaced"): 0.20,   # [0.168]
    ("cine_lps", "r4_equispaced"): 0.11,     # [0.089]
    ("cine_sense", "r8_kt_2slice"): 1.40,    # [1.140, 0.726]: R 8 unfolds badly phase by phase
    ("cine_lps", "r8_kt_2slice"): 0.08,      # [0.062, 0.055]
    ("cine_inr", "r4_equispaced"): 0.16,     # [0.133]
    ("cine_crunet", "r4_equispaced"): 0.045,  # [0.033]
    ("cine_crunet", "r8_kt_2slice"): 0.065,   # [0.034, 0.048]
}


@pytest.mark.parametrize("key", sorted(NMSE_DYNAMIC_BOUND))
def test_each_chain_meets_its_recorded_bound(scores, key):
    assert max(m["nmse_dynamic"] for m in scores[key]) < NMSE_DYNAMIC_BOUND[key]


@pytest.mark.parametrize("name", ["r4_equispaced", "r8_kt_2slice"])
def test_low_rank_plus_sparse_beats_per_phase_sense_on_the_beating_heart(scores, name):
    """The issue's goal on recorded data: L+S better than cine_sense in SSIM and NMSE (dynamic region)."""
    for lps, sense in zip(scores["cine_lps", name], scores["cine_sense", name]):
        assert lps["ssim_dynamic"] > sense["ssim_dynamic"] + 0.05
        assert lps["nmse_dynamic"] < 0.7 * sense["nmse_dynamic"]


def test_the_inr_step_defaults_are_the_fit_defaults():
    """cine_inr's parameters repeat InrParams' defaults (the step module must not import torch)."""
    from cmrecon.chain.registry import get_step
    from cmrecon.recon.cine_inr import InrParams
    step, fit = get_step("cine_inr").params_type(), InrParams()
    for name in ("iterations", "budget_s", "tv_time_weight", "nuclear_weight", "seed"):
        assert getattr(step, name) == getattr(fit, name), name


def test_the_inr_beats_per_phase_sense_on_the_beating_heart(scores):
    [inr], [sense] = scores["cine_inr", "r4_equispaced"], scores["cine_sense", "r4_equispaced"]
    assert inr["ssim_dynamic"] > sense["ssim_dynamic"] + 0.03       # [0.777 vs 0.687]
    assert inr["nmse_dynamic"] < 0.9 * sense["nmse_dynamic"]        # [0.133 vs 0.168]


@pytest.mark.parametrize("name", ["r4_equispaced", "r8_kt_2slice"])
def test_the_learned_chain_beats_low_rank_plus_sparse_on_the_beating_heart(scores, name):
    """The issue's goal on recorded data: cine_crunet ≥ cine_lps (dynamic region), slice by slice."""
    for net, lps in zip(scores["cine_crunet", name], scores["cine_lps", name]):
        assert net["ssim_dynamic"] > lps["ssim_dynamic"]          # [0.914 vs 0.801; 0.929, 0.932 vs 0.891, 0.919]
        assert net["nmse_dynamic"] < lps["nmse_dynamic"]          # [0.033 vs 0.089; 0.034, 0.048 vs 0.062, 0.055]


def test_cine_pngs_are_named_by_phase_and_share_the_slices_display_window(tmp_path):
    from cmrecon.cli import main
    from cmrecon.io.images import display_view
    h5, truth = _load("full")
    assert main(["replay", "-i", str(h5), "-c", "cine_sense", "--in-process", "--png", str(tmp_path)]) == 0
    phases = truth.images.shape[1]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        f"series1_slc0_set0_ave0_rep0_phs{p}_img{p + 1}.png" for p in range(phases))
    images = [i for i in run_file(resolve("cine_sense"), h5) if isinstance(i, ismrmrd.Image)]
    windows = {display_view(i)[2] for i in images}
    assert len(windows) == 1 and None not in windows   # one window per slice: no flicker between phases
