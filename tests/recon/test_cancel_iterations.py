"""Iterative reconstructions ask ``should_stop`` before every iteration and stop within one
iteration of a True answer with :class:`Cancelled`; never asked to stop, they compute exactly as
without the callback.

Work is counted where each iteration does it once: the cine Gram operator (CG-SENSE, L+S), the
numpy CG-SENSE's forward FFT, the INR's progress callback (every iteration here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrecon.errors import Cancelled
from cmrecon.recon import cine, sense
from cmrecon.recon.cine_inr import InrParams, fit_inr
from cmrecon.recon.fft import fft2c

from recon_phantoms import coil_maps, smooth_ellipse

SHAPE, PHASES, COILS = (32, 32), 8, 4
ASKED_TO_STOP_AT = 3   # should_stop answers False 3 times, then True


class StopAfter:
    """``should_stop`` answering False ``k`` times, then True; counts the questions."""

    def __init__(self, k: int):
        self.k, self.asked = k, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked > self.k


@pytest.fixture(scope="module")
def cine_case():
    """(kspace (T, C, ky, kx), unit-norm maps (C, ky, kx), mask (T, ky)): a beating ellipse at R 2 + noise."""
    maps = coil_maps(SHAPE, COILS, seed=1)[1].astype(np.complex64)
    images = np.array([30 * (0.5 * smooth_ellipse(SHAPE, 0, 0, 0.4, 0.36)
                             + smooth_ellipse(SHAPE, -0.05, 0.08, 0.12 * (1 + 0.3 * np.cos(2 * np.pi * t / PHASES)),
                                              0.1)) for t in range(PHASES)])
    mask = np.zeros((PHASES, SHAPE[0]), bool)
    for t in range(PHASES):
        mask[t, t % 2::2] = True
        mask[t, 14:18] = True
    rng = np.random.default_rng(0)
    k = fft2c((maps[None] * images[:, None]).astype(np.complex64))
    k = k + (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)) / np.sqrt(2)
    return (k * mask[:, None, :, None]).astype(np.complex64), maps, mask


def _never() -> bool:
    return False


@pytest.mark.parametrize("method", ["ist", "pogm"])
def test_lps_stops_within_one_iteration_of_being_asked(cine_case, gram_calls, method):
    k, maps, mask = cine_case
    full = cine.lps(k, maps, mask, iterations=12, tol=0.0, method=method)
    work = len(gram_calls)
    assert full.iterations == 12 and work >= 12
    stop = StopAfter(ASKED_TO_STOP_AT)
    gram_calls.clear()
    with pytest.raises(Cancelled, match=rf"L\+S \({method}\) stopped as asked after 3 of at most 12 iterations"):
        cine.lps(k, maps, mask, iterations=12, tol=0.0, method=method, should_stop=stop)
    assert stop.asked == ASKED_TO_STOP_AT + 1
    assert ASKED_TO_STOP_AT <= len(gram_calls) <= ASKED_TO_STOP_AT + 1 < work
    same = cine.lps(k, maps, mask, iterations=12, tol=0.0, method=method, should_stop=_never)
    np.testing.assert_array_equal(same.images, full.images)


def test_cine_sense_stops_within_one_iteration_of_being_asked(cine_case, gram_calls):
    k, maps, mask = cine_case
    full = cine.cine_sense(k, maps, mask, iterations=15, tol=0.0)
    work = len(gram_calls)
    assert work == 15
    stop = StopAfter(ASKED_TO_STOP_AT)
    gram_calls.clear()
    with pytest.raises(Cancelled, match="per-phase CG-SENSE stopped as asked after 3 of at most 15"):
        cine.cine_sense(k, maps, mask, iterations=15, tol=0.0, should_stop=stop)
    assert stop.asked == ASKED_TO_STOP_AT + 1
    assert ASKED_TO_STOP_AT <= len(gram_calls) <= ASKED_TO_STOP_AT + 1
    np.testing.assert_array_equal(cine.cine_sense(k, maps, mask, iterations=15, tol=0.0, should_stop=_never), full)


def test_cg_sense_stops_within_one_iteration_of_being_asked(cine_case, monkeypatch):
    k, maps, mask = cine_case
    ffts = []
    fft = sense.fft2c
    monkeypatch.setattr(sense, "fft2c", lambda x: (ffts.append(1), fft(x))[1])   # once per E^H E
    full = sense.cg_sense(k[0], maps, mask[0], iterations=15, tol=0.0)
    assert len(ffts) == 1 + 15   # the initial residual, then one per iteration
    stop = StopAfter(ASKED_TO_STOP_AT)
    ffts.clear()
    with pytest.raises(Cancelled, match="CG-SENSE stopped as asked after 3 of at most 15"):
        sense.sense(k[0], maps, mask[0], 2, method="cg", iterations=15, should_stop=stop)
    assert stop.asked == ASKED_TO_STOP_AT + 1
    assert ASKED_TO_STOP_AT <= len(ffts) - 1 <= ASKED_TO_STOP_AT + 1
    np.testing.assert_array_equal(sense.cg_sense(k[0], maps, mask[0], iterations=15, tol=0.0, should_stop=_never),
                                  full)


def test_inr_fit_stops_within_one_iteration_of_being_asked(cine_case):
    k, maps, mask = cine_case
    params = InrParams(levels=3, base_resolution_px=8, level_scale=2.0, iterations=10, budget_s=1e9,
                       progress_every_iterations=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny fit: one thread is faster on a shared 2-core machine
    try:
        steps = []
        full = fit_inr(k, maps, mask, params, progress=lambda i, *_: steps.append(i))
        assert steps == list(range(1, 11))
        stop = StopAfter(ASKED_TO_STOP_AT)
        steps.clear()
        with pytest.raises(Cancelled, match="INR fit stopped as asked after 3 of at most 10"):
            fit_inr(k, maps, mask, params, progress=lambda i, *_: steps.append(i), should_stop=stop)
        assert stop.asked == ASKED_TO_STOP_AT + 1
        assert ASKED_TO_STOP_AT <= len(steps) <= ASKED_TO_STOP_AT + 1
        same = fit_inr(k, maps, mask, params, should_stop=_never)
        np.testing.assert_array_equal(same.images, full.images)
    finally:
        torch.set_num_threads(threads)
