"""noise_prewhiten keeps a bounded noise scan: memory no longer grows with what a client sends."""

from __future__ import annotations

import logging

import ismrmrd
import numpy as np

from cmrecon.chain.registry import StepContext, get_step
from cmrecon.recon.noise import noise_covariance, prewhiten, prewhitening_matrix
from cmrecon_gadgets import raw


def _acq(data: np.ndarray, noise: bool) -> ismrmrd.Acquisition:
    acq = ismrmrd.Acquisition.from_array(data.astype(np.complex64))
    if noise:
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    return acq


def test_noise_beyond_the_bound_is_not_kept_and_the_first_readouts_whiten(monkeypatch, caplog):
    rng = np.random.default_rng(3)
    noise = [rng.standard_normal((4, 256)) + 1j * rng.standard_normal((4, 256)) for _ in range(6)]
    noise[4] *= 50   # readouts past the bound would change the covariance if they were used
    noise[5] *= 50
    kept = 4 * noise[0].astype(np.complex64).nbytes
    monkeypatch.setattr(raw, "MAX_NOISE_BYTES", kept)
    image = rng.standard_normal((4, 64)) + 1j * rng.standard_normal((4, 64))
    spec = get_step("noise_prewhiten")
    items = [_acq(n, True) for n in noise] + [_acq(image, False)]
    with caplog.at_level(logging.WARNING):
        (out,) = list(spec.fn(iter(items), spec.make_params({}), StepContext(header_xml=b"<ismrmrdHeader/>")))
    cov = noise_covariance(np.concatenate([n.astype(np.complex64) for n in noise[:4]], axis=1))
    expect = prewhiten(image.astype(np.complex64), prewhitening_matrix(cov))
    np.testing.assert_allclose(out.data, expect, rtol=1e-5, atol=1e-6)
    assert "later noise readouts are not used" in caplog.text
