"""Adjointness and gradient properties of the SENSE operator used by the data-consistency step."""

import numpy as np
import pytest
import torch

from cmrecon.recon import operators as operators
from cmrecon.recon import sense as recon_sense
from cmrecon.recon.fft import fft2c as np_fft2c
from cmrecon.recon.operators import CoilExpand, FFT2c, SamplingMask, fft2c, ifft2c, sense_operator

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")
# float32 inner products of O(1e3) terms: relative round-off
TOL_ADJ = 1e-5


def _cplx(gen, *shape):
    return torch.randn(*shape, dtype=torch.complex64, generator=gen)


def _inner(a, b):
    return torch.vdot(a.flatten(), b.flatten())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(2, 4, 16, 12), (1, 3, 15, 9)])
def test_sense_operator_adjoint(seed, shape):
    """<A x, y> = <x, A^H y> for random maps, mask, image and k-space (odd sizes included)."""
    gen = torch.Generator().manual_seed(seed)
    b, c, ro, pe = shape
    maps = _cplx(gen, b, c, ro, pe)
    mask = torch.rand(b, 1, ro, pe, generator=gen) < 0.4
    A = sense_operator(maps, mask)
    x, y = _cplx(gen, b, 1, ro, pe), _cplx(gen, b, c, ro, pe)
    lhs, rhs = _inner(A(x), y), _inner(x, A.H(y))
    assert abs(lhs - rhs) <= TOL_ADJ * abs(lhs)
    # the adjoint's adjoint is the operator
    torch.testing.assert_close(A.H.H(x), A(x))
    # and a deliberately wrong "adjoint" (no conjugate on the maps) fails the same check
    wrong = torch.sum(maps * ifft2c(torch.where(mask, y, 0)), dim=1, keepdim=True)
    assert abs(lhs - _inner(x, wrong)) > 100 * TOL_ADJ * abs(lhs)


def test_building_blocks_and_scaling():
    gen = torch.Generator().manual_seed(7)
    maps = _cplx(gen, 1, 2, 8, 8)
    x, y = _cplx(gen, 1, 1, 8, 8), _cplx(gen, 1, 2, 8, 8)
    for op, xin, yin in ((FFT2c(), y, y), (CoilExpand(maps), x, y),
                         (SamplingMask(torch.rand(1, 1, 8, 8, generator=gen) > 0.5), y, y),
                         (CoilExpand(maps) * (2 - 3j), x, y),
                         ((FFT2c() @ CoilExpand(maps)).H @ FFT2c(), y, x)):
        lhs, rhs = _inner(op(xin), yin), _inner(xin, op.H(yin))
        assert abs(lhs - rhs) <= TOL_ADJ * abs(lhs)
    with pytest.raises(TypeError):
        FFT2c() * FFT2c()
    with pytest.raises(TypeError):
        SamplingMask(torch.ones(1, 1, 8, 8))


def test_fft_is_centred_orthonormal_and_matches_numpy():
    gen = torch.Generator().manual_seed(3)
    x = _cplx(gen, 2, 3, 10, 7)
    k = fft2c(x)
    np.testing.assert_allclose(k.numpy(), np_fft2c(x.numpy()), atol=1e-5)
    torch.testing.assert_close(ifft2c(k), x, atol=1e-5, rtol=0)
    # Parseval (orthonormal) and a centred delta -> flat spectrum with zero phase
    torch.testing.assert_close(k.abs().pow(2).sum(), x.abs().pow(2).sum(), rtol=1e-5, atol=0)
    delta = torch.zeros(10, 7, dtype=torch.complex64)
    delta[5, 3] = 1
    torch.testing.assert_close(fft2c(delta), torch.full((10, 7), 1 / np.sqrt(70),
                                                        dtype=torch.complex64))


def test_data_consistency_term_is_the_gradient():
    """A^H(A x - y) equals torch's gradient of 0.5 ||A x - y||^2 w.r.t. complex x."""
    gen = torch.Generator().manual_seed(11)
    maps = _cplx(gen, 1, 4, 12, 10)
    mask = torch.rand(1, 1, 12, 10, generator=gen) < 0.5
    A = sense_operator(maps, mask)
    y = A(_cplx(gen, 1, 1, 12, 10))
    x = _cplx(gen, 1, 1, 12, 10).requires_grad_(True)
    (0.5 * (A(x) - y).abs().pow(2).sum()).backward()
    torch.testing.assert_close(x.grad, A.H(A(x.detach()) - y), atol=1e-5, rtol=1e-5)


def test_model_functions_are_the_shared_ones_and_scriptable():
    """One implementation: the network's FFT/expand/reduce are recon's, compiled by TorchScript."""
    assert operators.expand is recon_sense.expand and operators.reduce is recon_sense.reduce
    assert operators.masked is recon_sense.masked
    gen = torch.Generator().manual_seed(5)
    maps, x = _cplx(gen, 2, 3, 8, 6), _cplx(gen, 2, 1, 8, 6)

    def dc(image, sens_maps):
        return operators.reduce(operators.ifft2c(operators.fft2c(
            operators.expand(image, sens_maps))), sens_maps)

    assert torch.equal(torch.jit.script(dc)(x, maps), dc(x, maps))
