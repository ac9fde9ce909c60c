"""Cine CRUNet training: exact readout crops, the loss, the schedule, learning, bit-identical resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cmrecon.models.cine_train import (
    CineSlice,
    CineTrainError,
    CineTrainSettings,
    aligned_target,
    cine_loss,
    crop_columns,
    learning_rate,
    phantom_slice,
    tensors,
    train_cine,
)
from cmrecon.models.crunet import zero_filled

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = CineTrainSettings(chans=4, num_cascades=2, crop_x=12, steps=6, lr=3e-3, warmup_steps=2,
                         log_every=2, val_every=3, threads=0, seed=3)


def _slices(tmp_path, n: int = 3) -> list:
    files = []
    for i in range(n):
        sl = phantom_slice(np.random.default_rng(i), 20, 4, 3, (2, 4, 4)[i % 3], acs_rows=4)
        files.append(tmp_path / f"train_{i}.npz")
        sl.save(files[-1])
    return files


def test_a_readout_crop_is_the_same_problem_restricted_to_those_columns():
    sl = phantom_slice(np.random.default_rng(0), 24, 4, 3, 4, "kt_interleaved", acs_rows=4)
    cut = crop_columns(sl, 5, 12)
    full = zero_filled(*tensors(sl, torch.device("cpu"))[:3])[0].numpy()
    part = zero_filled(*tensors(cut, torch.device("cpu"))[:3])[0].numpy()
    np.testing.assert_allclose(part, full[..., 5:17], rtol=0, atol=1e-5 * np.abs(full).max())
    np.testing.assert_array_equal(cut.target, sl.target[..., 5:17])
    assert cut.dynamic.shape == (24, 12)
    with pytest.raises(ValueError, match="outside"):
        crop_columns(sl, 20, 12)


def test_loss_is_zero_at_the_target_and_grows_with_the_error():
    t = torch.from_numpy(phantom_slice(np.random.default_rng(1), 20, 3, 2, 2).target)[None]
    assert float(cine_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn_like(t) * float(t.abs().max())
    assert 0 < float(cine_loss(t + 0.01 * noise, t)) < float(cine_loss(t + 0.1 * noise, t))


def test_the_dynamic_term_adds_the_weighted_nmse_over_the_dynamic_region():
    sl = phantom_slice(np.random.default_rng(1), 20, 3, 2, 2)
    t, dyn = torch.from_numpy(sl.target)[None], torch.from_numpy(sl.dynamic)[None]
    pred = t + 0.05 * torch.randn_like(t) * float(t.abs().max())
    d = (pred - t)[0][:, sl.dynamic]
    nmse = float(d.abs().pow(2).sum() / t[0][:, sl.dynamic].abs().pow(2).sum())
    extra = float(cine_loss(pred, t, dyn, 2.0)) - float(cine_loss(pred, t))
    assert extra == pytest.approx(2.0 * nmse, rel=1e-4)


def test_the_target_takes_the_phase_convention_of_the_estimated_maps():
    sl = phantom_slice(np.random.default_rng(4), 16, 3, 3, 2)
    yy, xx = np.mgrid[0:16, 0:16]
    theta = 0.3 * xx - 0.2 * yy + 1.0
    est = sl.maps * np.exp(1j * theta)[None]
    aligned = aligned_target(sl.target, sl.maps, est)
    np.testing.assert_allclose(np.abs(aligned), np.abs(sl.target), rtol=1e-5)
    # the same coil images: true maps × truth = estimated maps × aligned target
    np.testing.assert_allclose(est[None] * aligned[:, None], sl.maps[None] * sl.target[:, None],
                               rtol=0, atol=1e-4 * np.abs(sl.target).max())


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    s = CineTrainSettings(lr=1e-3, min_lr=1e-5, warmup_steps=10, steps=110)
    assert learning_rate(s, 0) == pytest.approx(1e-4)
    assert learning_rate(s, 9) == pytest.approx(1e-3)
    assert learning_rate(s, 60) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert learning_rate(s, 110) == pytest.approx(1e-5)


def test_slices_round_trip_through_npz(tmp_path):
    sl = phantom_slice(np.random.default_rng(2), 16, 3, 2, 2, "kt_interleaved")
    sl.save(tmp_path / "a.npz")
    back = CineSlice.load(tmp_path / "a.npz")
    for f in dataclasses.fields(CineSlice):
        np.testing.assert_array_equal(getattr(back, f.name), getattr(sl, f.name))


def test_training_steps_lower_the_loss_on_a_tiny_case(tmp_path):
    files = _slices(tmp_path, 1)
    val = [CineSlice.load(files[0])]
    s = dataclasses.replace(TINY, steps=12, crop_x=0, val_every=12, lr=1e-2)
    out = train_cine(s, files, val, tmp_path / "run", say=lambda line: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if r["kind"] == "train"]
    assert train[-1] < train[0]
    assert out.finished and (tmp_path / "run" / "best.pt").is_file()
    assert (tmp_path / "run" / "best.pt.sha256").is_file()


def test_a_run_can_start_from_saved_weights(tmp_path):
    files = _slices(tmp_path, 1)
    first = train_cine(dataclasses.replace(TINY, steps=2, val_every=2), files, [CineSlice.load(files[0])],
                       tmp_path / "first", say=lambda line: None)
    assert first.best["step"] == 2
    s = dataclasses.replace(TINY, steps=1, lr=0.0, min_lr=0.0, init_weights=str(tmp_path / "first" / "best.pt"))
    train_cine(s, files, [], tmp_path / "second", say=lambda line: None)
    a = torch.load(tmp_path / "first" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "second" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)   # lr 0: the step changed nothing


def test_resuming_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    files = _slices(tmp_path)
    val = [CineSlice.load(files[0])]
    quiet = lambda line: None  # noqa: E731
    train_cine(TINY, files, val, tmp_path / "straight", say=quiet)
    train_cine(TINY, files, val, tmp_path / "split", max_steps=3, say=quiet)
    with pytest.raises(CineTrainError, match="exists"):
        train_cine(TINY, files, val, tmp_path / "split", say=quiet)
    with pytest.raises(CineTrainError, match="differ"):
        train_cine(dataclasses.replace(TINY, lr=1e-3), files, val, tmp_path / "split", resume=True, say=quiet)
    train_cine(TINY, files, val, tmp_path / "split", resume=True, say=quiet)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == TINY.steps
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["best"] == b["best"]
