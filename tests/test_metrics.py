"""Tests of cmrecon.metrics: SSIM against a direct per-window formula, PSNR, NRMSE, masks."""

import subprocess
import sys

import numpy as np
import pytest

from cmrecon.metrics import nrmse, psnr, ssim, ssim_map, ssim_valid


def _direct_ssim_at(x, y, i, j, w, L):
    """SSIM of the w×w window centred at (i, j), straight from Wang 2004 with N−1 covariance."""
    h = w // 2
    a = x[i - h:i + h + 1, j - h:j + h + 1].ravel()
    b = y[i - h:i + h + 1, j - h:j + h + 1].ravel()
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(ddof=1), b.var(ddof=1)
    cab = np.sum((a - ma) * (b - mb)) / (a.size - 1)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    return (2 * ma * mb + c1) * (2 * cab + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))


def test_ssim_identity_is_one():
    x = np.random.default_rng(0).random((20, 17))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, x, mask=x > 0.5) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_direct_formula_on_tiny_arrays():
    rng = np.random.default_rng(1)
    y = rng.random((11, 12))
    x = y + 0.2 * rng.standard_normal(y.shape)
    L = float(y.max() - y.min())
    smap = ssim_map(x, y)
    direct = np.array([[_direct_ssim_at(x, y, i, j, 7, L) for j in range(3, 9)] for i in range(3, 8)])
    # float64 box sums vs direct sums: agreement to rounding (1e-10)
    np.testing.assert_allclose(smap[3:8, 3:9], direct, atol=1e-10)
    assert ssim(x, y) == pytest.approx(direct.mean(), abs=1e-10)


def test_ssim_mask_averages_map_inside_mask():
    rng = np.random.default_rng(2)
    y = rng.random((16, 16))
    x = y + 0.1 * rng.standard_normal(y.shape)
    mask = np.zeros_like(y, dtype=bool)
    mask[2:9, 5:14] = True
    assert ssim(x, y, mask=mask) == pytest.approx(ssim_map(x, y)[mask].mean(), abs=1e-14)
    assert ssim(x, y) < 1.0


def test_ssim_against_scikit_image_if_installed():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image not installed (optional)")
    rng = np.random.default_rng(3)
    y = rng.random((40, 32))
    x = y + 0.1 * rng.standard_normal(y.shape)
    L = float(y.max() - y.min())
    ref = skm.structural_similarity(x, y, win_size=7, data_range=L)
    assert ssim(x, y, data_range=L) == pytest.approx(ref, abs=1e-9)


def test_psnr_and_nrmse_known_values():
    y = np.zeros((4, 4))
    y[0, 0] = 2.0
    x = y.copy()
    x[1, 1] = 0.5  # mse = 0.25/16, range 2
    assert psnr(x, y) == pytest.approx(20 * np.log10(2.0) - 10 * np.log10(0.25 / 16), abs=1e-12)
    assert psnr(y, y) == float("inf")
    assert nrmse(x, y) == pytest.approx(0.5 / 2.0, abs=1e-15)
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    assert nrmse(x, y, mask=mask) == 0.0
    z = (1 + 1j) * np.ones(3)
    assert nrmse(z * 1.1, z) == pytest.approx(0.1, abs=1e-12)


def test_metrics_reject_bad_input():
    x = np.ones((8, 8))
    with pytest.raises(ValueError, match="complex"):
        ssim(x + 0j, x)
    with pytest.raises(ValueError, match="mask"):
        ssim(x, x * np.arange(8), mask=np.zeros((8, 8), dtype=bool))
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x)


def _recorded_cases():
    """Fixed images: mild noise, heavy noise (SSIM ≈ 0.1), and a large offset (mean 1000)."""
    rng = np.random.default_rng(20261202)
    y = rng.random((11, 12)) * 3 - 1
    yield "small_mild", y + 0.2 * rng.standard_normal(y.shape), y
    y = rng.random((40, 36))
    yield "noisy", y + 1.0 * rng.standard_normal(y.shape), y
    y = 1000.0 + rng.random((16, 20))
    yield "offset", y + 0.1 * rng.standard_normal(y.shape), y


#: ssim (7×7), ssim (5×5, L = 2), ssim in a mask, and ssim_map at a corner, an edge, the far
#: corner, near an edge and the centre, recorded from the scipy ``uniform_filter`` implementation
#: used before one SSIM served numpy and torch.
SSIM_RECORDED = {
    "small_mild": [0.9663506830130317, 0.9648944135479605, 0.9692450772575528, 0.9716522999416263,
                   0.9625757843468907, 0.9700187447047575, 0.9748124561499603, 0.9610536596160971],
    "noisy": [0.13384365120712344, 0.12462591799340725, 0.1336253053693087, 0.03588342394632433,
              -0.002048110779022788, 0.37992120399721496, 0.026995562395500692,
              0.15725837017946065],
    "offset": [0.9538354353459378, 0.9533900684742559, 0.9515810621918435, 0.951451193777618,
               0.9359906924189051, 0.9701401297156911, 0.9529237642501622, 0.9477201281277177],
}
#: The box sums now run in another order: ~1e-15 apart, except where E[x²] − E[x]² cancels; the
#: offset images (mean² / variance ≈ 1e7) lose about 7 of float64's 16 digits (measured 7e-9).
SSIM_RECORDED_RTOL = 1e-6


def test_ssim_equals_the_values_recorded_before_one_formula_served_numpy_and_torch():
    for name, x, y in _recorded_cases():
        m = ssim_map(x, y)
        h, w = m.shape
        now = [ssim(x, y), ssim(x, y, window_px=5, data_range=2.0),
               ssim(x, y, mask=y > np.median(y)),
               m[0, 0], m[0, w // 2], m[h - 1, w - 1], m[h // 2, 1], m[h // 2, w // 2]]
        np.testing.assert_allclose(now, SSIM_RECORDED[name], rtol=SSIM_RECORDED_RTOL, err_msg=name)


def test_one_ssim_formula_serves_numpy_arrays_and_torch_tensors():
    torch = pytest.importorskip("torch")
    for name, x, y in _recorded_cases():
        L = float(y.max() - y.min())
        ref = ssim_valid(x, y, L, 7)
        got = ssim_valid(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None], L, 7)
        # float64 both ways; only the order of the box sums differs (avg_pool2d vs slices)
        np.testing.assert_allclose(got[0, 0].numpy(), ref, rtol=SSIM_RECORDED_RTOL, err_msg=name)
        assert ssim(x, y) == pytest.approx(float(ref.mean()), abs=1e-14)


def test_numpy_ssim_does_not_import_torch():
    code = ("import sys, numpy as np; from cmrecon.metrics import ssim; "
            "x = np.random.default_rng(0).random((16, 16)); ssim(x, x + 0.1); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
