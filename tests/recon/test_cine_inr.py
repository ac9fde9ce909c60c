"""Spatiotemporal INR cine reconstruction (cmrecon.recon.cine_inr) on a tiny analytic cine phantom."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cmrecon.recon.cine_inr import (
    DenseGridEncoder,
    InrParams,
    SampledSense,
    fit_inr,
    ifftshift_index,
    interpolation_matrix,
    level_shapes,
    nuclear_norm,
    temporal_tv,
    unlocked_levels,
)
from cmrecon.recon.fft import fft2c, ifft2c

from recon_phantoms import coil_maps, grid, smooth_ellipse


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These fits are tiny (8192 pixels): one torch thread is 10-20x faster than two on a shared
    2-core machine, where OpenMP workers wait for busy cores. Restored afterwards.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cine_phantom(shape=(32, 32), phases=8, ncoils=4, seed=0, scale=50.0):
    """Analytic cine slice: static body and RV, a beating LV blood pool inside a beating myocardium.

    The LV radii follow ``1 + 0.25·cos(2π p/phases)`` over one cardiac cycle; a smooth
    background phase. ``scale`` sets the blood-pool signal in SNR units.

    Returns
    -------
    images : (phases, y, x) complex128 truth.
    maps : (coils, y, x) complex64, Σ|S|² = 1 (recon_phantoms.coil_maps).
    kspace : (phases, coils, ky, kx) complex64, noiseless, fully sampled.
    dynamic : (y, x) bool, pixels whose magnitude changes over the cycle (dilated by 1 pixel).
    """
    yy, xx = grid(shape)
    body = smooth_ellipse(shape, 0.0, 0.0, 0.42, 0.38)
    rv = smooth_ellipse(shape, -0.02, -0.17, 0.14, 0.07)
    phase = np.exp(1j * (0.4 + 1.5 * yy - 1.0 * xx))
    frames = []
    for p in range(phases):
        f = 1.0 + 0.25 * np.cos(2 * np.pi * p / phases)
        myo = smooth_ellipse(shape, -0.03, 0.08, 0.17 * (0.6 + 0.4 * f), 0.15 * (0.6 + 0.4 * f))
        lv = smooth_ellipse(shape, -0.03, 0.08, 0.11 * f, 0.10 * f)
        img = 0.35 * body + 0.35 * rv - 0.15 * myo + 0.8 * lv
        frames.append(scale * img * phase)
    images = np.array(frames)
    _, maps = coil_maps(shape, ncoils, seed)
    maps = maps.astype(np.complex64)
    kspace = fft2c((maps[None] * images[:, None]).astype(np.complex64))
    mag = np.abs(images)
    dyn = (mag.max(0) - mag.min(0)) > 0.05 * mag.max()
    dyn = dyn | np.roll(dyn, 1, 0) | np.roll(dyn, -1, 0) | np.roll(dyn, 1, 1) | np.roll(dyn, -1, 1)
    return images, maps, kspace.astype(np.complex64), dyn


def equispaced_mask(phases, n_pe, r, acs):
    """CMRxRecon-style rows ``(k − n_pe//2) % r == 0`` plus ``acs`` central rows, every phase."""
    k = np.arange(n_pe)
    rows = ((k - n_pe // 2) % r == 0) | (np.abs(k - n_pe // 2) < acs // 2 + acs % 2)
    return np.repeat(rows[None], phases, 0)


def zero_filled(kspace, maps, mask):
    return (maps.conj()[None] * ifft2c(kspace * mask[:, None, :, None])).sum(1)


def nrmse(x, ref, region=None):
    if region is not None:
        x, ref = x[:, region], ref[:, region]
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


class FakeClock:
    """Seconds that advance by ``step`` at every call (the fit reads it once per iteration)."""

    def __init__(self, step=1.0):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


#: small and quick: 4 levels up to the full 32² matrix, 200 iterations (~1-2 s on a 2-core CPU)
FAST = InrParams(levels=4, base_resolution_px=8, level_scale=2.0, mlp_width=32, iterations=200,
                 budget_s=1e9)


@pytest.mark.parametrize("precision, bound", [("float32", 2e-3), ("bfloat16", 1e-2)])
def test_fully_sampled_noiseless_data_are_fitted_closely(precision, bound):
    """Full sampling: E^H E = I, so the only error is the fit's.

    With the regularisers off, the loss is zero exactly at the truth, and the finest level
    (one node per pixel and frame) can represent it, so the error left is the optimiser's and
    the arithmetic's. float32: 200 Adam steps reach 0.02 % NRMSE; bound 0.2 %. bfloat16 MLP:
    its outputs carry 8 significant bits (relative rounding up to 2^-9 ≈ 0.2 %), measured
    0.27 %; bound 1 %. Both are far below the initial (constant) image's error of ~1.
    """
    images, maps, kspace, _ = cine_phantom()
    mask = np.ones(kspace.shape[:1] + kspace.shape[2:3], bool)
    params = dataclasses.replace(FAST, tv_time_weight=0.0, nuclear_weight=0.0, mlp_precision=precision)
    res = fit_inr(kspace, maps, mask, params)
    assert res.images.shape == images.shape and res.images.dtype == np.complex64
    assert nrmse(res.images, images) < bound
    assert res.iterations == params.iterations and res.stopped_by == "iterations"


def test_beats_zero_filled_on_the_dynamic_region_at_r4():
    images, maps, kspace, dyn = cine_phantom()
    mask = equispaced_mask(kspace.shape[0], kspace.shape[2], 4, 4)
    zf = zero_filled(kspace, maps, mask)
    res = fit_inr(kspace * mask[:, None, :, None], maps, mask, FAST)
    e_inr, e_zf = nrmse(res.images, images, dyn), nrmse(zf, images, dyn)
    assert e_inr < 0.4 * e_zf, (e_inr, e_zf)  # measured 0.08 vs 0.35


def test_budget_stops_the_fit_and_the_last_iterate_is_reported():
    """Fake clock: one second per read; the start is read once, then once per iteration."""
    _, maps, kspace, _ = cine_phantom()
    mask = equispaced_mask(kspace.shape[0], kspace.shape[2], 4, 4)
    seen = []
    params = dataclasses.replace(FAST, budget_s=5.0, progress_every_iterations=2)
    res = fit_inr(kspace, maps, mask, params, progress=lambda *a: seen.append(a), clock=FakeClock())
    assert res.iterations == 5 and res.stopped_by == "budget"
    assert [s[0] for s in seen] == [2, 4, 5]
    assert [s[2] for s in seen] == [2.0, 4.0, 5.0]
    # the reported images are the 5th iterate, whatever the progress callback saw
    again = fit_inr(kspace, maps, mask, dataclasses.replace(FAST, budget_s=5.0), clock=FakeClock())
    np.testing.assert_array_equal(again.images, res.images)
    longer = fit_inr(kspace, maps, mask, dataclasses.replace(FAST, budget_s=6.0), clock=FakeClock())
    assert longer.iterations == 6 and not np.array_equal(longer.images, res.images)


def test_same_seed_same_result_other_seed_differs():
    _, maps, kspace, _ = cine_phantom(phases=4)
    mask = equispaced_mask(kspace.shape[0], kspace.shape[2], 4, 4)
    params = dataclasses.replace(FAST, iterations=20)
    a = fit_inr(kspace, maps, mask, params)
    b = fit_inr(kspace, maps, mask, params)
    c = fit_inr(kspace, maps, mask, dataclasses.replace(params, seed=1))
    np.testing.assert_array_equal(a.images, b.images)
    assert a.loss == b.loss
    assert not np.array_equal(a.images, c.images)


def test_results_are_in_the_units_of_the_kspace():
    """Scaling the data scales the images by the same factor (normalisation undone)."""
    _, maps, kspace, _ = cine_phantom(phases=4)
    mask = equispaced_mask(kspace.shape[0], kspace.shape[2], 4, 4)
    params = dataclasses.replace(FAST, iterations=10)
    a = fit_inr(kspace, maps, mask, params)
    b = fit_inr(kspace * 8, maps, mask, params)
    np.testing.assert_allclose(b.images, 8 * a.images, rtol=1e-4, atol=1e-4 * np.abs(8 * a.images).max())


def test_sampled_forward_model_is_the_centred_fft_of_the_coil_images():
    """SampledSense on ifftshift(x) = the sampled rows of fft2c(S·x) (odd and even sizes)."""
    rng = np.random.default_rng(0)
    for ny, nx in ((8, 6), (7, 9)):
        x = (rng.standard_normal((3, ny, nx)) + 1j * rng.standard_normal((3, ny, nx))).astype(np.complex64)
        maps = (rng.standard_normal((2, ny, nx)) + 1j * rng.standard_normal((2, ny, nx))).astype(np.complex64)
        mask = rng.random((3, ny)) < 0.5
        model = SampledSense(torch.from_numpy(maps), torch.from_numpy(mask))
        x_shifted = torch.from_numpy(np.fft.ifftshift(x, (-2, -1)))
        k = fft2c(maps[None] * x[:, None])
        expected = np.concatenate([k[p][:, mask[p]].transpose(1, 0, 2) for p in range(3)])
        assert sorted(model(x_shifted).shape) == sorted(expected.shape)
        np.testing.assert_allclose(np.sort_complex(model(x_shifted).numpy().ravel()),
                                   np.sort_complex(expected.ravel()), rtol=1e-5, atol=1e-5)
        # and select() lists the measured rows in the model's order
        np.testing.assert_allclose(model.select(torch.from_numpy(k)).numpy(), model(x_shifted).numpy(),
                                   rtol=1e-5, atol=1e-5)
        assert np.array_equal(np.fft.ifftshift(np.arange(nx)), ifftshift_index(nx).numpy())


def test_interpolation_is_exact_at_nodes_and_reproduces_linear_functions():
    np.testing.assert_array_equal(interpolation_matrix(7, 7).numpy(), np.eye(7))
    w = interpolation_matrix(11, 4)
    np.testing.assert_allclose(w.sum(1).numpy(), 1.0, atol=1e-12)
    nodes = torch.linspace(0, 1, 4, dtype=torch.float64)
    np.testing.assert_allclose((w @ (3 * nodes - 1)).numpy(), 3 * np.linspace(0, 1, 11) - 1, atol=1e-12)
    assert interpolation_matrix(5, 1).numpy().tolist() == [[1.0]] * 5


def test_grid_encoder_is_trilinear_interpolation_of_its_volume():
    """Against torch's own trilinear interpolation (align_corners) of the same volume."""
    gen = torch.Generator().manual_seed(0)
    enc = DenseGridEncoder((6, 9, 10), [(3, 4, 5), (6, 9, 10)], 2, 1.0, gen)
    feats = enc().reshape(4, 6, 9, 10)
    ref = torch.nn.functional.interpolate(enc.grids[0][None], size=(6, 9, 10), mode="trilinear",
                                          align_corners=True)[0]
    torch.testing.assert_close(feats[:2], ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(feats[2:], enc.grids[1].detach())   # nodes = samples: exact
    locked = enc(active_levels=1).reshape(4, 6, 9, 10)
    assert torch.count_nonzero(locked[2:]) == 0


def test_level_shapes_space_time_like_pixels_and_cap_at_the_matrix():
    params = InrParams(levels=5, base_resolution_px=16, level_scale=2.0, time_scale=1.0)
    shapes = level_shapes((20, 128, 96), params)
    assert shapes == [(2, 16, 12), (5, 32, 24), (10, 64, 48), (20, 128, 96), (20, 128, 96)]
    denser = level_shapes((20, 128, 96), dataclasses.replace(params, time_scale=2.0))
    assert [s[0] for s in denser] == [5, 10, 20, 20, 20]


def test_regulariser_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((5, 4, 3)) + 1j * rng.standard_normal((5, 4, 3)))
    x.requires_grad_(True)
    torch.autograd.gradcheck(nuclear_norm, (x,))
    # temporal TV: max|x| is detached, so check against its value with that factor held fixed
    const = float(x.detach().abs().max())
    tv = lambda z: temporal_tv(z) * z.abs().max().detach() / const  # noqa: E731
    torch.autograd.gradcheck(tv, (x,))
    zero = torch.zeros(1, 4, 3, dtype=torch.complex64)
    assert float(temporal_tv(zero)) == 0.0


def test_nuclear_norm_of_a_rank_one_series_is_its_frobenius_norm():
    u = torch.tensor([1.0, 2.0, -1.0], dtype=torch.complex64)
    v = torch.arange(6, dtype=torch.float32).to(torch.complex64).reshape(2, 3)
    x = u[:, None, None] * v[None]
    expected = float(torch.linalg.vector_norm(x)) / 3
    assert abs(float(nuclear_norm(x)) - expected) < 1e-5 * expected


@pytest.mark.parametrize("what, args, match", [
    ("kspace", (np.zeros((4, 2, 8, 8), np.float32), None, None), "kspace"),
    ("maps", (None, np.zeros((3, 8, 8), np.complex64), None), "maps"),
    ("mask", (None, None, np.ones((4, 7), bool)), "mask"),
    ("mask dtype", (None, None, np.ones((4, 8), np.uint8)), "mask"),
])
def test_bad_shapes_are_value_errors_naming_the_array(what, args, match):
    k = np.ones((4, 2, 8, 8), np.complex64)
    s = np.ones((2, 8, 8), np.complex64) / np.sqrt(2)
    m = np.ones((4, 8), bool)
    k, s, m = (a if a is not None else d for a, d in zip(args, (k, s, m)))
    with pytest.raises(ValueError, match=match):
        fit_inr(k, s, m, dataclasses.replace(FAST, iterations=1))


def test_levels_unlock_coarse_to_fine_over_the_unlock_fraction():
    params = InrParams(levels=4, iterations=100, unlock_fraction=0.3)
    seen = [unlocked_levels(i, params) for i in range(100)]
    assert seen[0] == 1 and seen[9] == 1 and seen[10] == 2 and seen[20] == 3 and seen[30] == 4
    assert seen == sorted(seen) and seen[-1] == 4
    assert unlocked_levels(0, dataclasses.replace(params, unlock_fraction=0.0)) == 4


def test_samples_outside_the_mask_are_ignored():
    _, maps, kspace, _ = cine_phantom(phases=4)
    mask = equispaced_mask(kspace.shape[0], kspace.shape[2], 4, 4)
    params = dataclasses.replace(FAST, iterations=5)
    clean = fit_inr(kspace * mask[:, None, :, None], maps, mask, params)
    junk = np.where(mask[:, None, :, None], kspace, 1e3).astype(np.complex64)
    np.testing.assert_array_equal(fit_inr(junk, maps, mask, params).images, clean.images)


def test_no_signal_is_a_value_error():
    k = np.zeros((2, 2, 8, 8), np.complex64)
    with pytest.raises(ValueError, match="no signal"):
        fit_inr(k, np.ones((2, 8, 8), np.complex64) / np.sqrt(2), np.ones((2, 8), bool), FAST)


@pytest.mark.cuda
def test_cuda_fit_matches_the_cpu_fit():
    """Same seed and schedule on the GPU: the same images to float round-off (bfloat16 MLP on both
    where available, so compared with a float32 MLP: 20 iterations of Adam amplify round-off
    only mildly on this small problem).
    """
    images, maps, kspace, _ = cine_phantom()
    mask = equispaced_mask(kspace.shape[0], kspace.shape[2], 4, 4)
    params = dataclasses.replace(FAST, iterations=20, mlp_precision="float32")
    cpu = fit_inr(kspace, maps, mask, params)
    gpu = fit_inr(kspace, maps, mask, params, device="cuda")
    assert nrmse(gpu.images, cpu.images) < 1e-3


def test_bad_params_are_value_errors_naming_the_field():
    with pytest.raises(ValueError, match="budget_s"):
        InrParams(budget_s=0)
    with pytest.raises(ValueError, match="levels"):
        InrParams(levels=0)
    with pytest.raises(ValueError, match="mlp_precision"):
        InrParams(mlp_precision="float16")
    with pytest.raises(ValueError, match="unlock_fraction"):
        InrParams(unlock_fraction=1.5)
