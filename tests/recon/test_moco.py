"""MOCO averaging: sub-pixel registration, noise scaling of (1/√K)Σ, plain average under motion."""

import numpy as np
import pytest

from cmrecon.errors import StepError
from cmrecon.metrics import nrmse
from cmrecon.recon.moco import (
    _ORDER1,
    _ORDER2,
    RigidTransform,
    _derivative_sums,
    _freqs,
    _shifted_spectra,
    estimate_translation,
    fourier_shift,
    moco_average,
    plain_average,
    register_demons,
    register_repeat,
    register_rigid,
    register_translation,
    robust_weight,
    roi_window,
    select_key_frame,
    select_repeats,
    two_layer_warp,
    warp,
)

from recon_phantoms import phantom

SHAPE = (96, 80)


def _shift_and_gradient(spec: np.ndarray, shift: np.ndarray, freqs: tuple, shape: tuple[int, int]) -> tuple:
    """``m(r − d)`` and its spectral gradient ``(∂y, ∂x)`` as images: ``irfft2`` of the half spectra
    :func:`_shifted_spectra` of orders ``(0, 0), (1, 0), (0, 1)``.
    """
    return tuple(np.fft.irfft2(s, s=shape) for s in _shifted_spectra(spec, shift, freqs, _ORDER1))


@pytest.mark.parametrize("shape", [(32, 24), (31, 24), (32, 25), (33, 27)])
def test_shift_and_gradient_from_the_half_spectrum_are_the_full_complex_transforms(shape):
    """Re ifft2(fft2(m)·e^{-2πi f·d}·(1, 2πi f_y, 2πi f_x)) computed from rfft2(m), Nyquist rows included.

    float64 FFTs of ~10³ points: ~1e-15 of the largest value; dropping the Hermitian part of the
    Nyquist row/column multipliers would be wrong by ~1e-2 on white noise.
    """
    rng = np.random.default_rng(sum(shape))
    m = rng.standard_normal(shape)
    d = np.array([0.37, -1.61])
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    s = np.fft.fft2(m) * np.exp(-2j * np.pi * (fy * d[0] + fx * d[1]))
    refs = (np.fft.ifft2(s).real, np.fft.ifft2(s * 2j * np.pi * fy).real, np.fft.ifft2(s * 2j * np.pi * fx).real)
    for out, ref in zip(_shift_and_gradient(np.fft.rfft2(m), d, _freqs(shape), shape), refs):
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("shape", [(32, 24), (31, 24), (32, 25), (33, 27)])
def test_second_derivative_spectra_and_parseval_sums_on_half_spectra(shape):
    """The half spectra of ∂yy, ∂yx, ∂xx m(r − d) are the rfft2 of the full complex transforms' real parts.

    So Σ_r a(r)·∂^(a,b) m(r − d) from the half spectra (Parseval, columns 0 < kx < nx/2 counted
    twice, as bilinear forms of the separable multipliers) is the sum in image space, first
    derivatives included. float64, ~10³ points: ~1e-15 relative; on even axes the Nyquist factor
    is Re[(−iπ)²e^{iπd}] = −π²cos(πd): the plain multiplier there is wrong by 0.14 of the largest value.
    """
    rng = np.random.default_rng(sum(shape) + 1)
    m, a = rng.standard_normal(shape), rng.standard_normal(shape)
    d = np.array([-0.83, 2.29])
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    s = np.fft.fft2(m) * np.exp(-2j * np.pi * (fy * d[0] + fx * d[1]))
    wy, wx = 2j * np.pi * fy, 2j * np.pi * fx
    refs = [np.fft.ifft2(s * wy * wy).real, np.fft.ifft2(s * wy * wx).real, np.fft.ifft2(s * wx * wx).real]
    specs = _shifted_spectra(np.fft.rfft2(m), d, _freqs(shape), _ORDER2)
    for spec, ref in zip(specs, refs):
        np.testing.assert_allclose(np.fft.irfft2(spec, s=shape), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
        np.testing.assert_allclose(spec, np.fft.rfft2(ref), rtol=0, atol=1e-12 * np.abs(spec).max())
    first = [np.fft.ifft2(s * wy).real, np.fft.ifft2(s * wx).real]
    sums = _derivative_sums(np.fft.rfft2(a), np.fft.rfft2(m), d, _freqs(shape), ((1, 0), (0, 1)) + _ORDER2,
                            shape[1])
    np.testing.assert_allclose(sums, [np.sum(a * r) for r in first + refs], rtol=1e-12)


def _noise(rng, shape, sigma=1.0):
    return ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
            * (sigma / np.sqrt(2))).astype(np.complex64)


@pytest.fixture(scope="module")
def body():
    """Phantom of 64x48 px centred in the 96x80 FOV: shifts up to ~10 px stay inside it."""
    small, small_mask = phantom((64, 48))
    img = np.zeros(SHAPE, np.complex64)
    mask = np.zeros(SHAPE, bool)
    img[16:80, 16:64] = 30 * small
    mask[16:80, 16:64] = small_mask
    return img, mask


@pytest.mark.parametrize("shape", [(32, 24), (31, 25)])
def test_fourier_shift_of_a_real_image_is_the_real_part_of_the_complex_shift(shape):
    """A real image is shifted on its half spectrum: Re of the complex route, in each precision.

    The output is float32: a float64 image within its rounding (~6e-8 of the largest value, bound
    1e-6), a float32 one computed in single precision within a few 1e-7 (log2 n stages, bound
    2e-6); odd lengths have no Nyquist line. A shift by whole pixels is a circular roll.
    """
    rng = np.random.default_rng(sum(shape) + 2)
    x = rng.standard_normal(shape)
    d = (1.37, -2.6)
    ref = fourier_shift(x.astype(np.complex128), d).real   # complex64 out: float32 precision
    exact = np.fft.ifft2(np.fft.fft2(x) * np.exp(-2j * np.pi * (np.fft.fftfreq(shape[0])[:, None] * d[0]
                                                              + np.fft.fftfreq(shape[1])[None, :] * d[1]))).real
    out64, out32 = fourier_shift(x, d), fourier_shift(x.astype(np.float32), d)
    assert out64.dtype == out32.dtype == np.float32
    np.testing.assert_allclose(out64, exact, rtol=0, atol=1e-6 * np.abs(exact).max())   # float32 out
    np.testing.assert_allclose(out32, exact, rtol=0, atol=2e-6 * np.abs(exact).max())
    np.testing.assert_allclose(ref, exact, rtol=0, atol=1e-6 * np.abs(exact).max())
    np.testing.assert_allclose(fourier_shift(x, (2.0, -3.0)), np.roll(x, (2, -3), axis=(0, 1)),
                               rtol=0, atol=1e-6 * np.abs(x).max())


@pytest.mark.parametrize("shift", [(3.0, -2.0), (2.3, -1.7), (-0.4, 0.35), (7.0, 4.5)])
def test_translation_recovered_subpixel(body, shift):
    img, _ = body
    rng = np.random.default_rng(0)
    fixed = np.abs(img + _noise(rng, SHAPE))
    moving = np.abs(fourier_shift(img, (-shift[0], -shift[1])) + _noise(rng, SHAPE))
    est = estimate_translation(moving, fixed)
    rig = register_rigid(moving, fixed)
    # 1/20 px grid + noise at SNR 30: measured error <= 0.02 px; requirement 0.2 px
    assert np.allclose(est, shift, atol=0.2)
    assert np.allclose(rig.shift, shift, atol=0.2) and abs(rig.angle_rad) < 0.01


def test_rigid_recovers_rotation(body):
    img, _ = body
    t = RigidTransform((1.2, -0.7), 0.05)
    fixed = np.abs(warp(img, t))
    est = register_rigid(np.abs(img), fixed)
    # noise-free, cubic splines: measured errors < 1e-5
    assert np.allclose(est.shift, t.shift, atol=0.05)
    assert abs(est.angle_rad - t.angle_rad) < 2e-3


def test_demons_reduces_residual_of_smooth_deformation(body):
    img, _ = body
    mag = np.abs(img).astype(np.float64)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]].astype(float)
    u_true = np.stack([1.5 * np.sin(2 * np.pi * xx / SHAPE[1]), 1.0 * np.cos(2 * np.pi * yy / SHAPE[0])])
    moving = np.abs(warp(img, None, u_true))  # moving(r) = img(r + u(r))
    # moving(r + u2(r)) ≈ img(r) needs u2 ≈ −u(r − u): the demons field must undo the warp
    u = register_demons(moving, mag, iterations=80)
    before = nrmse(moving, mag)
    after = nrmse(np.abs(warp(moving.astype(np.complex64), None, u)), mag)
    assert after < 0.5 * before  # measured ~0.4x (single resolution level, 80 iterations)


def test_key_frame_is_the_central_one():
    rng = np.random.default_rng(1)
    base = rng.random((16, 16))
    reps = np.array([base + d for d in (0.0, 5.0, 0.1, -5.0, 0.05)])
    # median distances (×16): 1.6, 80, 1.6, 80, 0.8 -> the 0.05 offset is the key frame
    assert select_key_frame(reps) == 4
    reps = np.array([base + d for d in (0.0, 2.0, 3.0, 10.0)])
    # medians (×16): 40, 24, 32, 136
    assert select_key_frame(reps) == 1


@pytest.mark.parametrize("transform", ["translation", "rigid"])
def test_moco_average_noise_and_signal_scaling(body, transform):
    """Repeats moved by known translations: signal grows by √K, noise σ stays 1."""
    img, mask = body
    rng = np.random.default_rng(2)
    n = 8
    shifts = rng.normal(0.0, 3.0, (n, 2))
    shifts[0] = 0.0
    ir = np.array([fourier_shift(img, s) + _noise(rng, SHAPE) for s in shifts])
    pd = np.array([fourier_shift(1.2 * img, s) + _noise(rng, SHAPE) for s in shifts])
    info = moco_average(ir, pd, transform=transform, keep_fraction=1.0, roi_fraction=1.0,
                        reference="key", register_pd_to_ir=False)
    ir_avg, pd_avg = info.ir, info.pd
    k = len(info.kept)
    assert k == n
    key = shifts[info.key_index]
    for t, s in zip(info.shifts, shifts):  # warped(r) = x_k(r − t) must equal img(r − key)
        assert np.allclose(np.array(t) + s, key, atol=0.2)
    truth = fourier_shift(img, key) * np.sqrt(k)
    resid = (ir_avg - truth)[mask]
    # σ of the residual: 1 for the exact Fourier shift; cubic-spline resampling in rigid mode
    # smooths noise a little (σ ~0.85–1). 3000 samples: statistical error ~2 %.
    lo = 0.9 if transform == "translation" else 0.7
    assert lo < resid.std() < 1.1
    assert nrmse(pd_avg, fourier_shift(1.2 * img, key) * np.sqrt(k), mask=mask) < 0.1


def test_moco_noise_only_average_keeps_unit_sigma():
    rng = np.random.default_rng(3)
    ir = np.array([_noise(rng, SHAPE) for _ in range(16)])
    info = moco_average(ir, ir.copy(), transform="translation", keep_fraction=0.5,
                        roi_fraction=1.0, reference="key", register_pd_to_ir=False)
    avg = info.ir
    assert len(info.kept) == 8
    # (1/√K)Σ of K independent unit-σ images, each exactly Fourier-shifted: σ = 1 ± 2 %
    assert avg.std() == pytest.approx(1.0, rel=0.06)


def test_plain_average_under_motion_is_worse_than_one_repeat(body):
    img, mask = body
    rng = np.random.default_rng(4)
    shifts = rng.normal(0.0, 3.0, (8, 2))
    shifts[0] = 0.0
    ir = np.array([fourier_shift(img, s) + _noise(rng, SHAPE, 0.3) for s in shifts])
    pd = ir.copy()
    pa, _ = plain_average(ir, pd)
    info = moco_average(ir, pd, transform="translation", roi_fraction=1.0, reference="key",
                        register_pd_to_ir=False)
    ma = info.ir
    key = shifts[info.key_index]
    single = nrmse(ir[info.key_index], fourier_shift(img, key))
    plain = nrmse(pa / np.sqrt(8), fourier_shift(img, key))
    moco = nrmse(ma / np.sqrt(len(info.kept)), fourier_shift(img, key))
    assert plain > 2 * single  # blurring dominates (measured ~5x)
    assert moco < single


def test_pd_registered_to_ir(body):
    img, _ = body
    rng = np.random.default_rng(5)
    ir = np.array([img + _noise(rng, SHAPE) for _ in range(4)])
    # PD: different contrast (squared magnitude profile) and shifted by a known amount
    pd_img = (np.abs(img) ** 1.5 / 5).astype(np.complex64)
    d = (1.5, -2.25)
    pd = np.array([fourier_shift(pd_img, d) + _noise(rng, SHAPE) for _ in range(4)])
    info = moco_average(ir, pd, roi_fraction=1.0, register_pd_to_ir=True)
    assert np.allclose(info.pd_shift, (-d[0], -d[1]), atol=0.25)


def test_moco_rejects_bad_input(body):
    img, _ = body
    with pytest.raises(StepError, match="transform"):
        moco_average(img[None], img[None], transform="affine")
    with pytest.raises(StepError, match="equal shape"):
        moco_average(np.stack([img, img]), img[None])
    with pytest.raises(StepError, match="reference"):
        moco_average(img[None], img[None], reference="median")


# ----------------------------------------------------------------------------- heart vs chest wall
# Two band-limited layers built from the smooth phantom: the "heart" (inner blobs) and the
# "chest wall" (a bright ring) — each shifted exactly, the wall by 30 % of the heart's motion.

def _layers(shape=SHAPE):
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    cy, cx = shape[0] / 2, shape[1] / 2

    def blob(y0, x0, ry, rx, edge=1.0):
        r = np.sqrt(((yy - y0) / ry) ** 2 + ((xx - x0) / rx) ** 2)
        return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) * min(ry, rx) / edge, -50, 50)))

    heart = (blob(cy - 4, cx + 3, 9, 8) - 0.6 * blob(cy - 4, cx + 3, 5, 4.5)
             + 0.8 * blob(cy - 2, cx - 9, 7, 4) + 0.5 * blob(cy + 12, cx + 2, 4, 6))
    wall = blob(cy, cx, 30, 25) - blob(cy, cx, 26, 21)
    return heart.astype(np.complex128), wall.astype(np.complex128)


def _repeat(heart, wall, d, frac=0.3, scale=20.0):
    """Heart shifted by d px, wall by frac·d; scaled so the heart blobs have magnitude ~scale."""
    return scale * (fourier_shift(heart, d) + 1.5 * fourier_shift(wall, (frac * d[0], frac * d[1])))


def test_weighted_translation_unbiased_where_windowing_both_is_not():
    """Window on the key frame only: error <= 0.1 px at SNR 20; the same window on both
    images biases the estimate toward 0 (the window's own autocorrelation peak).
    """
    heart, wall = _layers()
    rng = np.random.default_rng(10)
    d = (2.6, -1.3)
    key = np.abs(_repeat(heart, wall, (0.0, 0.0)) + _noise(rng, SHAPE))
    mov = np.abs(_repeat(heart, wall, d) + _noise(rng, SHAPE))
    w = roi_window(SHAPE, 0.5)
    est = np.array(register_translation(mov, key, w))
    # Cramér–Rao: σ_d² ≈ 2·σ_mag² / Σ w|∇f|² with σ_mag² = 1/2 → 0.023 px here; 0.1 px > 3σ
    gy, gx = np.gradient(np.abs(_repeat(heart, wall, (0.0, 0.0))))
    crb = np.sqrt(1.0 / np.sum(w * (gy ** 2 + gx ** 2)))
    assert crb < 0.03
    assert np.allclose(est, (-d[0], -d[1]), atol=0.1)
    both = np.array(estimate_translation(mov * w, key * w))
    assert np.hypot(*(both + d)) > np.hypot(*(est + d))


def test_weighted_translation_is_the_stationary_point_of_the_weighted_ssd():
    """Newton's iteration ends where ∇E = −2Σ w·(m(r − d) − f)·∇m(r − d) vanishes.

    After an update below tol = 1e-3 px, quadratic convergence leaves ~κ·1e-6 px: the next
    Gauss–Newton update H⁻¹∇E/2 from the result is below 1e-5 px (measured 4e-9; the linearly
    converging Gauss–Newton iteration used before stopped with a next update of 5e-5 px here).
    """
    heart, wall = _layers()
    rng = np.random.default_rng(14)
    key = np.abs(_repeat(heart, wall, (0.0, 0.0)) + _noise(rng, SHAPE))
    mov = np.abs(_repeat(heart, wall, (1.7, -0.6)) + _noise(rng, SHAPE))
    w = roi_window(SHAPE, 0.5)
    d = np.array(register_translation(mov, key, w, robust_iterations=0))
    mt, gy, gx = _shift_and_gradient(np.fft.rfft2(mov), d, _freqs(SHAPE), SHAPE)
    r = mt - key
    h = np.array([[np.sum(w * gy * gy), np.sum(w * gy * gx)], [np.sum(w * gy * gx), np.sum(w * gx * gx)]])
    step = np.linalg.solve(h, [np.sum(w * r * gy), np.sum(w * r * gx)])
    assert np.max(np.abs(step)) < 1e-5
    assert np.allclose(d, (-1.7, 0.6), atol=0.1)   # the heart's shift (wall 30 % as much, window)


def test_weighted_rigid_registration_only_resamples_where_the_weight_is_not_zero():
    """Cropping to the weight's support (and a 1 px margin for central differences) changes no sum.

    The same weight with 1e-300 added everywhere (whole image resampled) adds nothing a float64
    sum can hold: equal transforms to rounding.
    """
    heart, wall = _layers()
    rng = np.random.default_rng(15)
    key = np.abs(_repeat(heart, wall, (0.0, 0.0)) + _noise(rng, SHAPE))
    mov = np.abs(warp(_repeat(heart, wall, (0.8, 0.3)), RigidTransform((0.0, 0.0), 0.03)) + _noise(rng, SHAPE))
    w = roi_window(SHAPE, 0.5)
    assert not w[0].any() and not w[:, 0].any()   # the support is a central box
    init = RigidTransform((-0.8, -0.3), 0.0)
    cropped = register_rigid(mov, key, init=init, weight=w)
    full = register_rigid(mov, key, init=init, weight=w + 1e-300)
    assert np.allclose(cropped.shift, full.shift, rtol=0, atol=1e-12)
    assert abs(cropped.angle_rad - full.angle_rad) < 1e-12
    assert abs(cropped.angle_rad + 0.03) < 5e-3


def test_robust_weight_is_its_formula_on_the_whole_image():
    """The robust weight is w / (1 + (ρ/(c·ν))²), ρ = G_σ * e², ν = median ρ where w > 0.1·max w.

    Filtering only the window's support and the kernel's reach (4σ) changes nothing (float64
    rounding); the weight is zero outside the support.
    """
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(16)
    resid = rng.standard_normal(SHAPE) * np.linspace(0.5, 2.0, SHAPE[1])[None, :]
    for w in (roi_window(SHAPE, 0.5), 1.0 - roi_window(SHAPE, 0.5)):
        rho = gaussian_filter(resid ** 2, 2.0)
        nu = np.median(rho[w > 0.1 * w.max()])
        np.testing.assert_allclose(robust_weight(resid, w), w / (1.0 + (rho / (2.0 * nu)) ** 2),
                                   rtol=1e-12, atol=1e-15)


def test_register_repeat_follows_heart_and_drops_insignificant_rotation():
    heart, wall = _layers()
    rng = np.random.default_rng(11)
    key = _repeat(heart, wall, (0.0, 0.0)) + _noise(rng, SHAPE)
    mov = _repeat(heart, wall, (3.0, 1.0)) + _noise(rng, SHAPE)
    t = register_repeat(np.abs(mov), np.abs(key), roi_window(SHAPE, 0.5), "rigid")
    # the wall (30 % of the motion) is down-weighted: heart shift within 0.1 px, and no
    # rotation resampling for a pure translation (so the warp stays an exact Fourier shift)
    assert np.allclose(t.shift, (-3.0, -1.0), atol=0.1)
    assert t.angle_rad == 0.0
    rot = RigidTransform((0.0, 0.0), 0.05)   # 0.05 rad moves the window edge ~1.5 px
    img = np.abs(warp(_repeat(heart, wall, (0.0, 0.0)), rot))
    t = register_repeat(img, np.abs(_repeat(heart, wall, (0.0, 0.0))), np.ones(SHAPE), "rigid")
    assert abs(t.angle_rad + 0.05) < 5e-3


def test_two_layer_warp_aligns_slower_chest_wall():
    heart, wall = _layers()
    key = _repeat(heart, wall, (0.0, 0.0))
    mov = _repeat(heart, wall, (3.0, 0.0))
    w = roi_window(SHAPE, 0.5)
    one = fourier_shift(mov, (-3.0, 0.0))
    two, t_wall, alpha = two_layer_warp(mov, np.abs(key), (-3.0, 0.0), w)
    assert np.allclose(t_wall, (-0.9, 0.0), atol=0.1)
    # noise-free: one translation leaves the ring misaligned by 2.1 px; the layer blend
    # replaces it near the ring (measured ~0.15x the residual energy)
    assert np.linalg.norm(two - key) < 0.4 * np.linalg.norm(one - key)
    heart_px = np.abs(heart) > 0.3
    assert alpha[heart_px].max() < 0.05   # the heart stays an exact Fourier shift


def test_moco_of_aligned_repeats_reduces_noise_by_sqrt_k():
    heart, wall = _layers()
    rng = np.random.default_rng(12)
    truth = _repeat(heart, wall, (0.0, 0.0))
    n = 8
    ir = np.array([truth + _noise(rng, SHAPE) for _ in range(n)])
    pd = np.array([truth + _noise(rng, SHAPE) for _ in range(n)])
    res = moco_average(ir, pd, transform="translation", register_pd_to_ir=False)
    assert len(res.kept) == n     # noise-only residuals: nothing rejected, MSE falls with K
    mask = np.abs(truth) > 5
    single = nrmse(ir[res.key_index], truth, mask=mask)
    ratio = nrmse(res.ir / np.sqrt(n), truth, mask=mask) / single
    # 1/√8 = 0.354; ~1000 pixels: ±3 % on each norm, registration noise ~0.01 px adds < 1 %
    assert 0.354 * 0.9 < ratio < 0.354 * 1.12


def test_deep_breath_with_through_plane_change_is_rejected():
    heart, wall = _layers()
    rng = np.random.default_rng(13)
    disp = [(0.0, 0.0), (0.3, 0.1), (0.0, 0.0), (0.8, 0.2), (0.1, 0.0), (0.5, 0.1), (0.0, 0.1)]
    ir = [_repeat(heart, wall, d) for d in disp]
    # deep breath: 2× the deepest shift and a heart cross-section 15 % smaller (through-plane)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]].astype(float)
    from scipy.ndimage import map_coordinates
    c = np.array(SHAPE)[:, None, None] / 2
    coords = (np.stack([yy, xx]) - c) / 0.85 + c
    small = map_coordinates(heart.real, coords, order=3).astype(np.complex128)
    ir.append(20 * (fourier_shift(small, (6.0, 1.0)) + 1.5 * fourier_shift(wall, (1.8, 0.3))))
    pd = np.array([x + _noise(rng, SHAPE) for x in ir])
    ir = np.array([x + _noise(rng, SHAPE) for x in ir])
    res = moco_average(ir, pd, transform="translation")
    assert 7 not in res.kept
    assert len(res.kept) >= 5
    assert res.residual[7] > 10 * max(np.median(res.residual), 0.1)


def test_select_repeats_rules():
    # outlier by median + 3·MAD; then the MSE-optimal count
    assert list(select_repeats(np.array([0.0, 0.02, 0.05, 0.01, 30.0, 0.03]), 0, 6)) == [0, 1, 2, 3, 5]
    # every other repeat mismatched by 4× the noise variance: averaging two gives
    # 1/2 + (2/2)² = 1.5 > 1, so the key frame alone
    assert list(select_repeats(np.array([4.0, 0.0, 4.0, 4.0]), 1, 4, reject_mad=None)) == [1]
    assert len(select_repeats(np.zeros(8), 3, 4)) == 4   # keep_fraction cap



def test_register_repeat_keeps_a_significant_rotation_at_full_precision(body):
    """register_repeat decides on a rotation from a 0.01 px estimate and refines a kept one: the
    result is the single full-tolerance rigid registration's (tol 1e-3 px: agreement ~1e-6).
    """
    img, _ = body
    t = RigidTransform((1.2, -0.7), 0.05)        # 0.05 rad: ~1.5 px at the window's edge
    moving, fixed = np.abs(img).astype(np.float64), np.abs(warp(img, t)).astype(np.float64)
    w = roi_window(SHAPE, 0.5)
    got = register_repeat(moving, fixed, w, "rigid", robust_iterations=0)
    start = RigidTransform(register_translation(moving, fixed, w, robust_iterations=0), 0.0)
    want = register_rigid(moving, fixed, rotation=True, init=start, weight=w)
    assert got.angle_rad != 0.0
    assert np.allclose(got.shift, want.shift, atol=1e-4)
    assert abs(got.angle_rad - want.angle_rad) < 1e-6
    assert abs(got.angle_rad - t.angle_rad) < 2e-3
