"""unfold on all repeats and both sets at once equals the one-image-at-a-time recon to float32 rounding."""

import numpy as np
import pytest

from cmrecon.recon.grappa import grappa_fill, grappa_weights
from cmrecon.recon.partial_fourier import partial_fourier
from cmrecon.recon.sense import coil_combine
from cmrecon.recon.unfold import unfold

from recon_phantoms import add_noise, multicoil_case

SHAPE = (64, 48)
ACS = np.arange(SHAPE[0] // 2 - 12, SHAPE[0] // 2 + 12)
REPEATS = 3

#: float32 k-space through float32 FFTs (length <= 64) and a 160-tap GRAPPA sum: a few
#: ε32·log2(n)·sqrt(taps) ≈ 1e-6 of the largest pixel; 1e-5 leaves room, a wrong row, repeat or
#: set is O(1)
TOL_F32 = 1e-5


@pytest.fixture(scope="module")
def repeats():
    """IR-like (sign-flipped, scaled) and PD repeats with independent noise, and unit-norm maps."""
    ksp, _, _, nmaps, _ = multicoil_case(SHAPE, 8, seed=2)
    rng = np.random.default_rng(9)
    ir = np.stack([add_noise(-0.4 * ksp * (1 + 0.1 * i), rng) for i in range(REPEATS)])
    pd = np.stack([add_noise(ksp * (1 - 0.05 * i), rng) for i in range(REPEATS)])
    return ir, pd, nmaps.astype(np.complex64)


def _mask(R, partial=0):
    m = np.zeros(SHAPE[0], bool)
    m[SHAPE[0] // 2 % R::R] = True
    if R > 1:
        m[ACS] = True
    m[:partial] = False
    return m


def _one_at_a_time(k, mask, R, weights, maps, pf_method):
    """The recon of one repeat's coil k-space (coils, ky, kx): GRAPPA, partial Fourier, combination."""
    filled = k if R == 1 else grappa_fill(k, mask, None, R, weights=weights)
    rows = np.any(filled != 0, axis=(0, 2))
    rows = rows if rows.any() else mask   # an all-zero image: the acquired extent
    return coil_combine(partial_fourier(filled, rows, pf_method), maps)


IMAGE_BYTES = 8 * SHAPE[0] * SHAPE[1] * 8  # one repeat's coil k-space, complex64


@pytest.mark.parametrize("R,partial,pf_method", [(1, 0, "zerofill"), (2, 0, "zerofill"),
                                                 (3, 0, "zerofill"), (2, 10, "zerofill"),
                                                 (2, 10, "homodyne")])
@pytest.mark.parametrize("batch_images", [1, 2, 6], ids=["1 per batch", "2 per batch (IR2+PD0)", "all 6"])
def test_grappa_unfold_of_all_repeats_is_the_per_image_recon(repeats, R, partial, pf_method, batch_images):
    ir, pd, maps = repeats
    mask = _mask(R, partial)
    ir_u, pd_u = ir * mask[None, None, :, None], pd * mask[None, None, :, None]
    acs = pd[:, :, ACS].mean(axis=0).astype(np.complex64)
    out_ir, out_pd = unfold(ir_u, pd_u, maps, mask, R, acs if R > 1 else None,
                            partial_fourier_method=pf_method, batch_bytes=batch_images * IMAGE_BYTES)
    weights = grappa_weights(acs, R) if R > 1 else None
    for out, data in ((out_ir, ir_u), (out_pd, pd_u)):
        assert out.shape == (REPEATS,) + SHAPE and out.dtype == np.complex64
        ref = np.stack([_one_at_a_time(k, mask, R, weights, maps, pf_method) for k in data])
        np.testing.assert_allclose(out, ref, rtol=0, atol=TOL_F32 * np.abs(ref).max())


def test_images_with_other_filled_extents_get_their_own_partial_fourier(repeats):
    """An all-zero repeat and one whose first acquired row is zero: each as if reconstructed alone."""
    ir, pd, maps = repeats
    mask = _mask(2, 10)
    ir_u, pd_u = ir * mask[None, None, :, None], pd * mask[None, None, :, None]
    ir_u[1] = 0
    pd_u[2, :, np.flatnonzero(mask)[0]] = 0
    acs = pd[:, :, ACS].mean(axis=0).astype(np.complex64)
    out = unfold(ir_u, pd_u, maps, mask, 2, acs, partial_fourier_method="homodyne")
    weights = grappa_weights(acs, 2)
    for got, data in zip(out, (ir_u, pd_u)):
        ref = np.stack([_one_at_a_time(k, mask, 2, weights, maps, "homodyne") for k in data])
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOL_F32 * np.abs(ref).max())
    assert np.all(out[0][1] == 0)


def test_grappa_batches_on_two_compute_workers_are_bitwise_the_loop(repeats, monkeypatch):
    """The GRAPPA batches of unfold run on the compute workers (cmrecon.parallel): the same images, bit for bit."""
    from cmrecon import runtime
    ir, pd, maps = repeats
    mask = _mask(2)
    ir_u, pd_u = ir * mask[None, None, :, None], pd * mask[None, None, :, None]
    out = []
    for n in (1, 2):
        monkeypatch.setattr(runtime, "_configured", runtime.Settings(workers=n))
        out.append(unfold(ir_u, pd_u, maps, mask, 2, pd[0][:, ACS], batch_bytes=IMAGE_BYTES))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
