"""GRAPPA and SENSE on a noise-free simulated multicoil phantom, and noise behaviour."""

import numpy as np
import pytest

from cmrecon.metrics import nrmse
from cmrecon.recon.fft import fft2c
from cmrecon.recon.grappa import grappa_fill, grappa_weights, lattice_offset
from cmrecon.recon.sense import cg_sense, coil_combine, expand, masked, reduce, sense, sense_unfold

from recon_phantoms import add_noise, combine, ifft2c, multicoil_case

SHAPE = (64, 48)


@pytest.fixture(scope="module")
def case():
    ksp, img, maps, nmaps, mask = multicoil_case(SHAPE, 8, seed=0)
    ref = combine(ifft2c(ksp), nmaps)
    return ksp, nmaps.astype(np.complex64), mask, ref


def _mask(R, offset, ny=SHAPE[0], acs=None):
    m = np.zeros(ny, bool)
    m[offset::R] = True
    if acs is not None:
        m[acs] = True
    return m


ACS = slice(SHAPE[0] // 2 - 12, SHAPE[0] // 2 + 12)


@pytest.mark.parametrize("R,bound", [(2, 5e-3), (3, 1.5e-2), (4, 6e-2)])
@pytest.mark.parametrize("offset", [0, 1])
def test_grappa_embedded_acs_reproduces_full(case, R, bound, offset):
    ksp, nmaps, _, ref = case
    m = _mask(R, offset, acs=ACS)
    filled = grappa_fill(ksp * m[None, :, None], m, ksp[:, ACS], R, lam=1e-4)
    # measured NRMSE: R2 1.8e-3, R3 2.6e-3/4.0e-3, R4 2.4e-2/2.0e-2 (finite 4x5 kernel on
    # smooth but not band-limited maps, 8 coils); bounds ~2.5x above
    assert nrmse(combine(ifft2c(filled), nmaps), ref) < bound
    np.testing.assert_array_equal(filled[:, m], ksp[:, m].astype(np.complex64))  # acquired kept


@pytest.mark.parametrize("R,bound", [(2, 6e-3), (3, 1.5e-2)])
def test_grappa_separate_acs(case, R, bound):
    ksp, nmaps, _, ref = case
    m = _mask(R, 1)
    filled = grappa_fill(ksp * m[None, :, None], m, ksp[:, ACS], R)
    # measured 2.5e-3 (R2), 6.2e-3 (R3)
    assert nrmse(combine(ifft2c(filled), nmaps), ref) < bound


def test_grappa_partial_fourier_offset(case):
    """First 16 rows never acquired: the lattice starts at 17; rows < 16 stay zero."""
    ksp, nmaps, _, _ = case
    m = _mask(2, 1)
    m[:16] = False
    filled = grappa_fill(ksp * m[None, :, None], m, ksp[:, ACS], 2)
    truth = ksp.copy()
    truth[:, :16] = 0
    assert np.all(filled[:, :16] == 0)
    assert np.abs(filled[:, 16]).max() > 0  # between unacquired lattice row 15 and row 17
    # measured 5.0e-3 against the equally truncated fully sampled k-space
    assert nrmse(combine(ifft2c(filled), nmaps), combine(ifft2c(truth), nmaps)) < 1.2e-2


def test_grappa_weights_exact_on_a_plane_wave():
    """Per-coil plane waves s_c·z^ky·w^kx are predicted exactly (checks row/column indexing)."""
    rng = np.random.default_rng(4)
    nc, ny, nx = 4, 32, 16
    z, w = np.exp(0.3j), np.exp(-0.7j)
    s = rng.standard_normal((nc, 1, 1)) + 1j * rng.standard_normal((nc, 1, 1))
    ksp = (s * z ** np.arange(ny)[None, :, None] * w ** np.arange(nx)[None, None, :])
    ksp = ksp.astype(np.complex64)
    acs = ksp[:, 4:20]
    m = _mask(2, 0, ny=ny)
    filled = grappa_fill(ksp * m[None, :, None], m, acs, 2, lam=1e-7)
    # rows whose 4 source rows exist and columns whose 5-wide window is inside the matrix;
    # a wrong row offset would rotate the prediction by z^{±1} (error ~0.3 relative)
    inner = filled[:, 2:ny - 4, 2:nx - 2]
    np.testing.assert_allclose(inner, ksp[:, 2:ny - 4, 2:nx - 2], atol=1e-3 * np.abs(ksp).max())


def _grappa_by_definition(kspace, mask, weights):
    """GRAPPA fill by its definition (Griswold 2002), one target row at a time, in complex128.

    Target row ``y`` (lattice offset ``t``, not acquired, one of its central source rows acquired)
    gets ``patch · weights[t-1]`` per readout point, the patch flattened (coil, source row, kx) as
    :class:`GrappaWeights` documents; rows off the matrix or not acquired count as zero.
    """
    nc, ny, nx = kspace.shape
    R, (nky, nkx) = weights.R, weights.kernel
    half = nkx // 2
    first = -(nky // 2 - 1) if nky > 1 else 0
    data = np.where(mask[None, :, None], kspace, 0).astype(np.complex128)
    out = data.copy()
    ky0 = lattice_offset(mask, R)
    padded = np.pad(data, ((0, 0), (0, 0), (half, half)))
    for y in range(ny):
        t = (y - ky0) % R
        base = y - t
        if mask[y] or t == 0 or not ((base >= 0 and mask[base]) or (base + R < ny and mask[base + R])):
            continue
        patch = np.zeros((nc, nky, nx + 2 * half), np.complex128)
        for j in range(nky):
            r = base + R * (j + first)
            if 0 <= r < ny and mask[r]:
                patch[:, j] = padded[:, r]
        win = np.lib.stride_tricks.sliding_window_view(patch, nkx, axis=-1)  # (c, ky, nx, kx)
        out[:, y] = (np.moveaxis(win, 2, 0).reshape(nx, -1) @ weights.weights[t - 1]).T
    return out


def _masks_for_definition_test():
    pf = _mask(2, 1)
    pf[:16] = False  # partial Fourier: lattice rows 1..15 never acquired
    return {"R2 embedded": (2, _mask(2, 0, acs=ACS)), "R2 offset 1": (2, _mask(2, 1, acs=ACS)),
            "R3 embedded": (3, _mask(3, 2, acs=ACS)), "R4 embedded": (4, _mask(4, 1, acs=ACS)),
            "R3 separate": (3, _mask(3, 1)), "R2 partial Fourier": (2, pf)}


#: float32 data and weights, float32 products summed over the 8·4·5 = 160 taps (and FFTs of
#: length < 64 where the implementation works in image space): each output is within a few
#: ε32·sqrt(160) ≈ 2e-6 of its float64 value relative to the largest sample
TOL_GRAPPA_F32 = 1e-5


@pytest.mark.parametrize("name", list(_masks_for_definition_test()))
def test_grappa_fill_is_the_definition_to_float32_rounding(case, name):
    ksp, _, _, _ = case
    R, m = _masks_for_definition_test()[name]
    noisy = add_noise(ksp, np.random.default_rng(5)) * m[None, :, None]
    w = grappa_weights(ksp[:, ACS], R)
    filled = grappa_fill(noisy, m, None, R, weights=w)
    ref = _grappa_by_definition(noisy, m, w)
    assert filled.dtype == np.complex64
    np.testing.assert_array_equal(filled[:, m], noisy[:, m])  # acquired rows bit for bit
    np.testing.assert_allclose(filled, ref, rtol=0, atol=TOL_GRAPPA_F32 * np.abs(ref).max())


def test_grappa_fill_of_a_batch_is_each_image_filled_alone(case):
    """Leading axes are a batch: (2 sets, 3 repeats, coils, ky, kx) filled at once = one by one."""
    ksp, _, _, _ = case
    m = _mask(3, 1, acs=ACS)
    rng = np.random.default_rng(8)
    stack = np.stack([np.stack([add_noise(ksp * (s + 1) * (r + 1), rng) * m[None, :, None]
                                for r in range(3)]) for s in range(2)])
    w = grappa_weights(ksp[:, ACS], 3)
    filled = grappa_fill(stack, m, None, 3, weights=w)
    assert filled.shape == stack.shape and filled.dtype == np.complex64
    for s in range(2):
        for r in range(3):
            ref = _grappa_by_definition(stack[s, r], m, w)
            np.testing.assert_allclose(filled[s, r], ref, rtol=0, atol=TOL_GRAPPA_F32 * np.abs(ref).max())


def test_grappa_rejects_bad_input(case):
    ksp, _, _, _ = case
    with pytest.raises(ValueError, match="R must"):
        grappa_weights(ksp[:, ACS], 5)
    with pytest.raises(ValueError, match="too short"):
        grappa_weights(ksp[:, :5], 2)
    with pytest.raises(ValueError, match="mask_pe"):
        grappa_fill(ksp, np.ones(3, bool), ksp[:, ACS], 2)
    # an ACS block without signal: the calibration system is singular, named as such
    with pytest.raises(ValueError, match="singular"):
        grappa_weights(np.zeros_like(ksp[:, ACS]), 2)
    assert lattice_offset(_mask(3, 2, acs=ACS), 3) == 2


@pytest.mark.parametrize("R", [1, 2, 4])
@pytest.mark.parametrize("method", ["unfold", "cg"])
def test_sense_true_maps_reproduce_full(case, R, method):
    ksp, nmaps, _, ref = case
    m = _mask(R, R - 1)
    if method == "unfold":
        x = sense_unfold(ksp * m[None, :, None], nmaps, m, R, lam=0.0)
        bound = 1e-5  # exact algebra in float64 on float32 data: measured <= 1.5e-6
    else:
        x = cg_sense(ksp * m[None, :, None], nmaps, m, lam=0.0, iterations=100)
        bound = 2e-3  # 100 CG iterations: measured <= 5e-4 at R4
    assert nrmse(x, ref) < bound


def test_sense_R3_non_power_of_two_matrix():
    ksp, _, _, nmaps, _ = multicoil_case((60, 48), 8, seed=1)
    nmaps = nmaps.astype(np.complex64)
    ref = combine(ifft2c(ksp), nmaps)
    m = _mask(3, 2, ny=60)
    assert nrmse(sense(ksp * m[None, :, None], nmaps, m, 3, lam=0.0), ref) < 1e-5


def test_sense_auto_uses_cg_for_embedded_acs(case):
    ksp, nmaps, _, ref = case
    m = _mask(2, 0, acs=ACS)
    x = sense(ksp * m[None, :, None], nmaps, m, 2, lam=0.0, iterations=60)
    assert nrmse(x, ref) < 2e-3
    pf = _mask(2, 0)
    pf[:8] = False  # partial Fourier: lattice rows missing, unfolding would be wrong
    with pytest.raises(ValueError, match="cg_sense"):
        sense_unfold(ksp * pf[None, :, None], nmaps, pf, 2)
    x_pf = sense(ksp * pf[None, :, None], nmaps, pf, 2, lam=0.0, iterations=60)
    truth = ksp.copy()
    truth[:, :8] = 0
    # CG-SENSE is the least-squares solution of the truncated data, close to the truncated image
    assert nrmse(x_pf, combine(ifft2c(truth), nmaps)) < 0.05


def test_coil_combine_is_exact_for_true_maps(case):
    ksp, nmaps, _, ref = case
    assert nrmse(coil_combine(ifft2c(ksp), nmaps), ref) < 1e-6


def test_noise_amplification_is_plausible(case):
    """With unit coil noise, combined noise σ is 1 fully sampled; SENSE R2 raises it to ~g·√2."""
    ksp, nmaps, mask, _ = case
    rng = np.random.default_rng(7)
    noise_only = add_noise(np.zeros_like(ksp), rng)
    full = coil_combine(ifft2c(noise_only), nmaps)
    sigma_full = full[mask].std()
    # 1389 complex samples: relative std error of σ ≈ 1/sqrt(2·1389) ≈ 2 %
    assert sigma_full == pytest.approx(1.0, rel=0.08)
    m = _mask(2, 0)
    und = sense_unfold(noise_only * m[None, :, None], nmaps, m, 2, lam=0.0)
    ratio = und[mask].std() / sigma_full
    # unit-noise data with half the lines: σ·√R·g with g >= 1 and modest for 8 coils at R2
    assert np.sqrt(2) * 0.9 < ratio < np.sqrt(2) * 2.0
    gr = grappa_fill(noise_only * m[None, :, None] + ksp * m[None, :, None], m, ksp[:, ACS], 2)
    gr_noise = coil_combine(ifft2c(gr - grappa_fill(ksp * m[None, :, None], m, ksp[:, ACS], 2)),
                            nmaps)
    assert 0.9 < gr_noise[mask].std() / sigma_full < 3.0


def test_numpy_encoding_pieces_are_adjoint(case):
    """<M F S x, y> = <x, S^H F^H M y> with the same functions the torch model calls."""
    ksp, nmaps, _, _ = case
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((1,) + SHAPE) + 1j * rng.standard_normal((1,) + SHAPE)).astype(
        np.complex64)
    m = _mask(3, 1)[None, :, None]
    lhs = np.vdot(masked(fft2c(expand(x, nmaps)), m), ksp)
    rhs = np.vdot(x, reduce(ifft2c(masked(ksp, m)), nmaps))
    # float32 sums of ~2e4 terms
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    assert reduce(expand(x, nmaps), nmaps).shape == (1,) + SHAPE
    np.testing.assert_allclose(reduce(expand(x, nmaps), nmaps), x, atol=1e-5)  # Σ|S|² = 1
    assert np.all(masked(ksp, m)[:, ~m[0, :, 0]] == 0)


def test_encoding_pieces_agree_on_numpy_and_torch(case):
    torch = pytest.importorskip("torch")
    ksp, nmaps, _, _ = case
    m = _mask(2, 0)[None, :, None]
    t = torch.from_numpy
    for out_np, out_t in ((reduce(ksp, nmaps), reduce(t(ksp), t(nmaps))),
                          (expand(ksp[:1], nmaps), expand(t(ksp[:1]), t(nmaps))),
                          (masked(ksp, m), masked(t(ksp), t(m)))):
        assert torch.is_tensor(out_t) and out_t.dtype == torch.complex64
        # complex multiply and coil sum: a few float32 roundings of |S|·|x|
        np.testing.assert_allclose(out_t.numpy(), out_np, rtol=0,
                                   atol=1e-6 * np.abs(out_np).max())
