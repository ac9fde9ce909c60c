"""noise_prewhiten keeps a bounded noise scan; the raw steps make new readouts and leave their inputs."""

from __future__ import annotations

import logging

import ismrmrd
import numpy as np

from cmrecon.chain.registry import StepContext, get_step
from cmrecon.recon.cartesian import remove_readout_oversampling
from cmrecon.recon.noise import noise_covariance, prewhiten, prewhitening_matrix
from cmrecon_gadgets import raw

from mrd_cases import make_case


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


def _run(name: str, items: list, header_xml: str) -> list:
    spec = get_step(name)
    return list(spec.fn(iter(items), spec.make_params({}), StepContext(header_xml=header_xml.encode())))


def test_raw_steps_make_new_readouts_with_the_header_and_leave_the_inputs_as_they_were():
    """Whitened and cropped readouts carry the input's header (bytes equal, but for the cropped
    length, centre and discards), their own arrays, and the inputs keep their samples and headers.
    """
    case = make_case(seed=4, nx=16, ny=8, coils=3, slices=1, noise_readouts=8)
    snapshot = [(bytes(a._head), a.data.copy()) for a in case.items]
    white = _run("noise_prewhiten", case.items, case.header_xml)
    noise = np.concatenate([a.data for a in case.items[:8]], axis=1)
    w = prewhitening_matrix(noise_covariance(noise))
    assert len(white) == 8
    for a, b in zip(case.items[8:], white):
        assert b is not a and bytes(b._head) == bytes(a._head)
        np.testing.assert_array_equal(b.data, prewhiten(a.data, w))
        assert b.traj.shape == a.traj.shape and not np.shares_memory(b.traj, a.traj)
    cropped = _run("remove_oversampling", white, case.header_xml)
    for a, b in zip(white, cropped):
        assert (b.number_of_samples, b.center_sample, b.discard_pre, b.discard_post) == (16, 8, 0, 0)
        assert b.traj.shape == (16, 0) and b.scan_counter == a.scan_counter
        head = ismrmrd.AcquisitionHeader.from_buffer_copy(b._head)
        head.number_of_samples, head.center_sample = a.number_of_samples, a.center_sample
        assert bytes(head) == bytes(a._head)   # discards were 0 in the input too
        np.testing.assert_array_equal(b.data, remove_readout_oversampling(a.data, 16))
    for a, (head, data) in zip(case.items, snapshot):
        assert bytes(a._head) == head
        np.testing.assert_array_equal(a.data, data)


def test_raw_steps_give_the_same_readouts_in_blocks_as_one_at_a_time():
    """The runner hands the raw steps blocks of readouts (cmrecon.chain.runner.compose); what
    leaves is the stream the per-readout path makes: same headers, samples equal to float32
    rounding of the batched products (a few ε32 of the largest sample).
    """
    from cmrecon.chain.definition import StepConfig
    from cmrecon.chain.runner import compose

    case = make_case(seed=5, nx=16, ny=40, coils=3, slices=2, noise_readouts=8)
    steps = [StepConfig(n, get_step(n).make_params({})) for n in ("noise_prewhiten", "remove_oversampling")]
    ctx = StepContext(header_xml=case.header_xml.encode())
    blocked = list(compose(steps, iter(case.items), ctx))
    single = _run("remove_oversampling", _run("noise_prewhiten", case.items, case.header_xml), case.header_xml)
    assert len(blocked) == len(single) == len(case.items) - 8
    assert all(isinstance(b, ismrmrd.Acquisition) for b in blocked)
    for a, b in zip(single, blocked):
        assert bytes(b._head) == bytes(a._head)
        np.testing.assert_allclose(b.data, a.data, rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(a.data).max())
