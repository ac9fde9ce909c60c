"""Cine simulator (cmrecon.sim.cine): exact truth, stream layout, noise, SNR, motion, CLI."""

import argparse
from dataclasses import replace

import ismrmrd
import numpy as np
import pytest
from scipy import ndimage

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.recon.fft import fft2c, ifft2c
from cmrecon.recon.noise import noise_covariance, prewhiten, prewhitening_matrix
from cmrecon.recon.sense import cg_sense
from cmrecon.sim import command
from cmrecon.sim import phantom as ph
from cmrecon.sim.cine import CineParams, SimParamError, _render, simulate_cine
from cmrecon.sim.cine_signal import bssfp_steady_state
from cmrecon.sim.cine_truth import CineTruth
from cmrecon.sim.heart_motion import anatomy_at, random_heart_motion
from cmrecon.sim.sampling import cine_masks

# noise-free float32 chain (FFT, 4×4 complex64 prewhitening, combination): relative error
TOL_EXACT = 1e-5
BASE = CineParams(phases=8, coils=4, matrix=(80, 80), fov_mm=(260.0, 260.0), acceleration=1, acs_lines=0,
                  snr=20.0, seed=3, noise_readouts=64)
SMALL = CineParams(phases=6, coils=4, matrix=(48, 40), fov_mm=(300.0, 260.0), acceleration=4, acs_lines=8,
                   seed=5, noise_readouts=8, slices=2)


def _noise(case):
    return [a for a in case.items if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _imaging(case):
    return [a for a in case.items if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _kspace(case, slice_=0):
    """(phases, coils, ky, kx_os) k-space of one slice from the acquisitions, zero where not read."""
    p = case.params
    k = np.zeros((p.phases, p.coils, p.matrix[1], p.n_ro_os), np.complex64)
    for a in _imaging(case):
        if a.idx.slice == slice_:
            k[a.idx.phase, :, a.idx.kspace_encode_step_1] = a.data
    return k


def _combined(case, kspace):
    """Prewhitened, oversampling-cropped images combined with the true maps, (phases, y, x)."""
    t = case.truth
    w = prewhitening_matrix(t.psi)
    coil_img = centre_crop(ifft2c(prewhiten(np.moveaxis(kspace, 1, 0), w)), shape_yx(case.params.matrix))
    return np.sum(np.conj(t.coil_maps[0])[:, None] * coil_img, axis=0)


@pytest.fixture(scope="module")
def clean():
    return simulate_cine(replace(BASE, add_noise=False))


@pytest.fixture(scope="module")
def noisy():
    return simulate_cine(BASE)


@pytest.fixture(scope="module")
def small():
    return simulate_cine(SMALL)


def test_fully_sampled_noise_free_recon_reproduces_truth(clean):
    comb = _combined(clean, _kspace(clean))
    ref = clean.truth.images[0]
    assert comb.shape == ref.shape == (8, 80, 80)
    assert np.linalg.norm(comb - ref) / np.linalg.norm(ref) < TOL_EXACT


@pytest.mark.parametrize("sampling", ["equispaced", "kt_interleaved"])
def test_undersampled_noise_free_stream_is_the_truth_seen_through_its_mask(sampling):
    """CG-SENSE with the true maps recovers every phase (R = 2, 4 coils: well conditioned)."""
    case = simulate_cine(replace(BASE, acceleration=2, acs_lines=8, sampling=sampling, add_noise=False))
    t = case.truth
    k = prewhiten(np.moveaxis(_kspace(case), 1, 0), prewhitening_matrix(t.psi))        # (coils, P, ky, kx_os)
    k = fft2c(centre_crop(ifft2c(k), shape_yx(case.params.matrix)))                    # oversampling removed
    for p in range(case.params.phases):
        x = cg_sense(k[:, p], t.coil_maps[0], t.sampling_mask[p], lam=0.0, iterations=200, tol=1e-9)
        assert np.linalg.norm(x - t.images[0, p]) / np.linalg.norm(t.images[0, p]) < TOL_EXACT


def test_truth_images_are_in_snr_units_and_the_measured_blood_snr_is_the_requested_one(clean, noisy):
    t = clean.truth
    noise = _combined(noisy, _kspace(noisy)) - _combined(clean, _kspace(clean))   # same seed, same object
    # the true maps have RSS = 1 wherever the coils' extension reaches (not in the far FOV corners)
    covered = np.sqrt(np.sum(np.abs(t.coil_maps[0]) ** 2, axis=0)) > 0.999
    assert covered[t.body_mask[0]].all()
    noise = noise[:, covered]
    n = noise.size
    # prewhitened, orthonormal FFT, RSS = 1 maps: σ² = E|n|² = 1; its estimate has rel. SE 1/√n
    assert np.mean(np.abs(noise) ** 2) == pytest.approx(1.0, abs=5.0 / np.sqrt(n))
    # blood well inside the cavity (labels eroded by one pixel): its mean is the SNR definition's
    # (pure-blood pixels), up to the band-limited edge's ringing
    blood = np.stack([ndimage.binary_erosion(lab == ph.LV_BLOOD) for lab in t.labels[0]])
    snr = np.mean(np.abs(t.images[0][blood])) / np.sqrt(np.mean(np.abs(noise) ** 2))
    assert snr == pytest.approx(BASE.snr, rel=0.05)
    assert t.snr_scale.shape == (1,)


def test_noise_scan_covariance_matches_psi(noisy):
    noise = np.concatenate([a.data for a in _noise(noisy)], axis=1)          # (coils, N)
    psi = noisy.truth.psi
    d = np.sqrt(np.real(np.diag(psi)))
    # each element's standard error is ~ sqrt(Ψii Ψjj / N); allow 5 standard errors
    assert np.max(np.abs(noise_covariance(noise) - psi) / np.outer(d, d)) < 5.0 / np.sqrt(noise.shape[1])


def test_same_seed_gives_bit_identical_output_and_another_seed_another_subject(noisy):
    again = simulate_cine(BASE)
    assert again.header_xml == noisy.header_xml and len(again.items) == len(noisy.items)
    for a, b in zip(again.items, noisy.items):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.getHead() == b.getHead()
    for key in ("images", "labels", "coil_maps", "lv_area_mm2", "psi"):
        np.testing.assert_array_equal(again.truth[key], noisy.truth[key])
    other = simulate_cine(replace(BASE, seed=4))
    assert (other.truth.labels != noisy.truth.labels).mean() > 0.05


def test_stream_is_segmented_by_heartbeat_with_counters_flags_and_time_stamps(small):
    p, t = small.params, small.truth
    items = small.items
    assert all(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in items[:p.noise_readouts])
    assert [a.scan_counter for a in items] == list(range(1, len(items) + 1))
    assert [a.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT) for a in items].count(True) == 1
    assert items[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    seg = p.segment_lines
    rows = [np.flatnonzero(m) for m in t.sampling_mask]
    beats = max(-(-len(r) // seg) for r in rows)
    acs = np.zeros(p.matrix[1], bool)
    acs[p.matrix[1] // 2 - p.acs_lines // 2:p.matrix[1] // 2 + p.acs_lines // 2] = True
    stamps = [a.acquisition_time_stamp for a in items]
    assert stamps == sorted(stamps)
    for s in range(p.slices):
        acq = [a for a in _imaging(small) if a.idx.slice == s]
        # scanner order: heartbeat h, then phase p, then segment h of p's ascending rows
        expected = [(ph_i, int(r[j])) for h in range(beats) for ph_i, r in enumerate(rows)
                    for j in range(h * seg, min((h + 1) * seg, len(r)))]
        assert [(a.idx.phase, a.idx.kspace_encode_step_1) for a in acq] == expected
        for ph_i in range(p.phases):
            got = sorted(a.idx.kspace_encode_step_1 for a in acq if a.idx.phase == ph_i)
            assert got == list(rows[ph_i])
        for a in acq:
            assert a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) == acs[a.idx.kspace_encode_step_1]
            assert not a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            assert a.data.shape == (p.coils, p.n_ro_os)
        assert acq[0].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) and acq[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
        assert sum(a.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) or a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
                   for a in acq) == 2
        last = [a for a in acq if a.is_flag_set(ismrmrd.ACQ_LAST_IN_PHASE)]
        assert sorted(a.idx.phase for a in last) == list(range(p.phases))
        for a in last:
            assert a.idx.kspace_encode_step_1 == rows[a.idx.phase][-1]
        # physiology time stamps rise within a heartbeat and restart at each R wave
        phys = np.array([a.physiology_time_stamp[0] for a in acq])
        assert np.count_nonzero(np.diff(phys) < 0) == beats - 1
        assert phys.max() * 2.5 < 0.9 * p.rr_ms + 2.5
        # each phase's readouts lie within its segment around the trigger time
        for a in acq:
            t_ms = a.physiology_time_stamp[0] * 2.5
            assert abs(t_ms - t.trigger_times_ms[a.idx.phase]) <= p.temporal_resolution_ms / 2 + 1.25


def test_header_states_the_protocol(small):
    hdr = ismrmrd.xsd.CreateFromDocument(small.header_xml)
    enc = hdr.encoding[0]
    lim = enc.encodingLimits
    assert hdr.measurementInformation.protocolName == "cmrecon_sim_cine"
    assert hdr.sequenceParameters.sequence_type == "TrueFISP"
    assert hdr.sequenceParameters.flipAngle_deg == [SMALL.flip_deg]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (96, 40)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (48, 40)
    assert (lim.phase.minimum, lim.phase.maximum, lim.slice.maximum) == (0, 5, 1)
    first = int(np.flatnonzero(small.truth.sampling_mask.any(axis=0))[0])
    assert (lim.kspace_encoding_step_1.minimum, lim.kspace_encoding_step_1.maximum,
            lim.kspace_encoding_step_1.center) == (first, 39, 20)
    assert enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 == 4
    assert enc.parallelImaging.calibrationMode.value == "embedded"
    longs = {u.name: u.value for u in hdr.userParameters.userParameterLong}
    strings = {u.name: u.value for u in hdr.userParameters.userParameterString}
    assert longs["lines_per_segment"] == SMALL.segment_lines and longs["seed"] == 5
    assert strings["sampling"] == "equispaced"
    assert CineParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                         __import__("json").loads(strings["cmrecon_sim_params"]).items()}) == SMALL
    kt = ismrmrd.xsd.CreateFromDocument(simulate_cine(replace(SMALL, slices=1, sampling="kt_interleaved",
                                                              add_noise=False)).header_xml)
    assert kt.encoding[0].parallelImaging.calibrationMode.value == "interleaved"


def test_cine_masks_equispaced_kt_interleaved_and_full():
    eq = cine_masks(32, 5, 4, 6, "equispaced")
    assert eq.shape == (5, 32) and (eq == eq[0]).all()
    assert list(np.flatnonzero(eq[0])) == [0, 4, 8, 12, 13, 14, 15, 16, 17, 18, 20, 24, 28]
    kt = cine_masks(32, 5, 4, 6, "kt_interleaved")
    for p in range(5):
        outside = np.r_[0:13, 19:32]
        assert list(np.flatnonzero(kt[p, outside])) == [i for i, k in enumerate(outside) if (k - 16 - p) % 4 == 0]
        assert kt[p, 13:19].all()
    assert kt[:4].any(axis=0).all() and not eq.any(axis=0).all()      # R consecutive phases cover every row
    assert cine_masks(32, 3, 1, 0, "kt_interleaved").all()
    with pytest.raises(ValueError, match="radial"):
        cine_masks(32, 3, 2, 4, "radial")


def test_kt_interleaved_stream_reads_every_row_over_the_phases():
    case = simulate_cine(replace(BASE, acceleration=8, acs_lines=8, sampling="kt_interleaved", add_noise=False))
    read = {a.idx.kspace_encode_step_1 for a in _imaging(case)}
    assert read == set(range(80))
    np.testing.assert_array_equal(case.truth.sampling_mask, cine_masks(80, 8, 8, 8, "kt_interleaved"))


def test_lv_area_follows_the_cycle_and_gives_the_drawn_ejection_fraction(clean):
    t = clean.truth
    area = t.lv_area_mm2[0]
    assert 0.5 <= t.lv_ef <= 0.7
    np.testing.assert_allclose(area, area.max() * (1 - t.lv_ef * t.contraction) / (1 - t.lv_ef * t.contraction.min()),
                               rtol=1e-10)
    # 8 phases of 111 ms sample end-systole (the isovolumic-relaxation plateau lasts ~65 ms)
    assert t.contraction.max() > 0.95 and t.contraction.min() < 0.05
    ef = 1 - area.min() / area.max()
    assert t.lv_ef * 0.95 - 0.01 <= ef <= t.lv_ef + 1e-9
    # label counts agree with the analytic cavity within the partial volume of its outline
    px = np.prod(t.pixel_mm)
    counted = np.sum(np.isin(t.labels[0], [ph.LV_BLOOD, ph.PAPILLARY]), axis=(1, 2)) * px
    np.testing.assert_allclose(counted, area, rtol=0.12)


def test_myocardial_area_is_conserved_over_the_cycle(clean):
    t = clean.truth
    px = np.prod(t.pixel_mm)
    myo = np.sum(np.isin(t.labels[0], [ph.LV_MYO, ph.SCAR]), axis=(1, 2)) * px
    # majority labels of 3.25 mm pixels: the two outlines' partial volume, up to ~10 % of a thin ring
    assert myo.std() / myo.mean() < 0.06
    assert np.ptp(myo) / myo.mean() < 0.2


def test_dynamic_mask_lies_on_the_heart_and_static_mask_away_from_it(clean):
    t = clean.truth
    dyn, stat, heart, body = t.dynamic_mask[0], t.static_mask[0], t.heart_mask[0], t.body_mask[0]
    assert not (dyn & ~body).any() and not (stat & ~body).any() and not (dyn & stat).any()
    assert dyn.sum() == pytest.approx(0.1 * body.sum(), rel=0.1)
    assert stat.sum() >= 0.5 * body.sum() - 1
    assert np.mean(heart[dyn]) > 0.9
    assert np.mean(heart[stat]) < 0.2
    sd = np.std(np.abs(t.images[0]), axis=0)
    assert sd[dyn].min() >= sd[stat].max()


def test_render_is_the_phantoms_band_limited_object_weighted_by_tissue_signal():
    """The simulator paints the weighted object once and repaints only the heart's box per phase;
    both are checked against the per-label phantom of the moved anatomy.
    """
    rng = np.random.default_rng(0)
    p = replace(BASE, matrix=(48, 40), fov_mm=(300.0, 250.0))
    an = ph.random_anatomy(rng, p.fov_mm, 0.5)
    es = anatomy_at(an, random_heart_motion(rng, shift_mm=(4.0, 4.0)), 1.0)
    weights = rng.uniform(0.1, 1.0, ph.N_LABELS)
    weights[ph.AIR] = 0.0
    got = _render([an, es], p, weights)
    for i, a in enumerate((an, es)):
        ref = np.tensordot(weights, ph.bandlimited_fractions(a, p.matrix, p.fov_mm, supersample=6), axes=1)
        np.testing.assert_allclose(got.objects[i], ref, atol=1e-6 * np.abs(ref).max())
        assert (got.labels[i] == ph.rasterize(a, p.matrix, p.fov_mm, supersample=6)[0]).mean() > 0.99


def test_bssfp_signal_matches_a_hard_pulse_bloch_simulation_and_orders_the_tissues():
    t1, t2, tr, alpha = np.array([1000.0, 1550.0, 340.0]), np.array([50.0, 250.0, 58.0]), 3.0, 50.0
    a = np.deg2rad(alpha)
    m = np.array([0.0, 0.0, 1.0])
    e1, e2 = np.exp(-tr / 2 / t1), np.exp(-tr / 2 / t2)
    sig = []
    for k in range(3):
        m = np.array([0.0, 0.0, 1.0])
        for n in range(6000):                                   # ±α every TR, echo at TR/2
            sgn = 1 if n % 2 == 0 else -1
            c, s = np.cos(sgn * a), np.sin(sgn * a)
            m = np.array([m[0], c * m[1] + s * m[2], -s * m[1] + c * m[2]])
            m = np.array([m[0] * e2[k], m[1] * e2[k], 1 + (m[2] - 1) * e1[k]])
            echo = sgn * m[1]
            m = np.array([m[0] * e2[k], m[1] * e2[k], 1 + (m[2] - 1) * e1[k]])
        sig.append(abs(echo))
    np.testing.assert_allclose(bssfp_steady_state(t1, t2, tr, alpha), sig, rtol=1e-3)
    r = t1 / t2                                                  # TR ≪ T1, T2 limit (Schmitt 2004)
    np.testing.assert_allclose(bssfp_steady_state(t1, t2, 0.01, alpha), np.sin(a) / ((r + 1) - np.cos(a) * (r - 1)),
                               rtol=1e-3)
    s = bssfp_steady_state(t1, t2, tr, alpha)
    assert s[1] > 2 * s[0] and s[2] > 2 * s[0]                   # blood, fat bright; myocardium dark


@pytest.mark.parametrize(("change", "field"), [
    ({"phases": 3}, "phases"), ({"acceleration": 13}, "acceleration"), ({"acs_lines": 3}, "acs_lines"),
    ({"acceleration": 4, "acs_lines": 0}, "acs_lines"), ({"sampling": "radial"}, "sampling"),
    ({"field_t": 7.0}, "field_t"), ({"matrix": (63, 64)}, "matrix"), ({"fov_mm": (300.0, 100.0)}, "fov_mm"),
    ({"lv_ef": (0.7, 0.5)}, "lv_ef"), ({"lines_per_segment": 40}, "lines_per_segment"),
    ({"phases": 40, "heart_rate_bpm": 150, "tr_ms": 9.5}, "phases"), ({"snr": 0.0}, "snr")])
def test_bad_parameters_are_refused_naming_the_field(change, field):
    with pytest.raises(SimParamError, match=rf"CineParams\.{field} = "):
        replace(BASE, **change)


def test_kt_interleaved_needs_no_acs_and_segment_length_fills_the_window():
    p = replace(BASE, acceleration=4, acs_lines=0, sampling="kt_interleaved")
    assert p.segment_lines == 37                                   # 8 phases × 37 × 3 ms ≤ 900 ms
    assert p.temporal_resolution_ms == 111.0
    assert replace(BASE, phases=20).segment_lines == 15
    np.testing.assert_allclose(replace(BASE, phases=20).trigger_times_ms[:2], [22.5, 67.5])


def _parser():
    ap = argparse.ArgumentParser(prog="cmrecon")
    command.register(ap.add_subparsers(dest="command"))
    return ap


def test_cli_writes_the_raw_data_and_the_truth(tmp_path, capsys):
    out = tmp_path / "cine.h5"
    args = _parser().parse_args(["simulate", "cine", "-o", str(out), "--seed", "2", "--slices", "2", "--phases", "6",
                                 "--coils", "4", "--matrix", "48x40", "--fov", "300x260", "--acceleration", "4",
                                 "--acs-lines", "8", "--sampling", "kt_interleaved", "--field", "3.0"])
    assert args.func(args) == 0
    err = capsys.readouterr().err
    assert "slice 1/2" in err and "slice 2/2" in err
    truth = CineTruth.load(tmp_path / "cine_truth.npz")
    assert truth.images.shape == (2, 6, 40, 48) and truth["sampling_mask"].shape == (6, 40)
    ds = ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)
    hdr = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
    assert hdr.acquisitionSystemInformation.systemFieldStrength_T == 3.0
    assert hdr.encoding[0].parallelImaging.calibrationMode.value == "interleaved"
    assert ds.number_of_acquisitions() == CineParams().noise_readouts + 2 * int(truth.sampling_mask.sum())
    ds.close()


def test_cli_help_and_refusals(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["simulate", "cine", "--help"])
    assert exc.value.code == 0 and "--sampling" in capsys.readouterr().out
    args = _parser().parse_args(["simulate", "cine", "-o", str(tmp_path / "c.h5"), "--no-truth",
                                 "--truth", str(tmp_path / "t.npz")])
    with pytest.raises(command.CmreconError, match="contradict"):
        args.func(args)
    args = _parser().parse_args(["simulate", "cine", "-o", str(tmp_path / "c.h5"), "--phases", "2", "--quiet"])
    with pytest.raises(SimParamError, match="CineParams.phases = 2"):
        args.func(args)
    assert list(tmp_path.iterdir()) == []
