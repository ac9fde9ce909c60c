"""LGE raw-data simulator: noise, SNR units, exact truth, determinism, ISMRMRD validity."""

from dataclasses import fields, replace

import ismrmrd
import numpy as np
import pytest

from cmrecon.axes import centre_crop, shape_yx
from cmrecon.io.mrdfile import write_dataset
from cmrecon.recon.fft import ifft2c
from cmrecon.recon.noise import noise_covariance, prewhiten, prewhitening_matrix
from cmrecon.sim import phantom as ph
from cmrecon.sim.lge import LgeParams, SimParamError, simulate_lge
from cmrecon.sim.motion import breathing_motion, key_repeat
from cmrecon.sim.sampling import sampling_pattern
from cmrecon.sim.truth import SimTruth

# noise-free float32 chain (FFT, 8×8 complex64 prewhitening, combination): relative error
TOL_EXACT = 2e-6
BASE = LgeParams(slices=1, repeats=2, coils=8, matrix=(64, 48), acceleration=1, acs_lines=0,
                 resp_amplitude_mm=0.0, snr=20.0, seed=11, noise_readouts=64)


def _noise(case):
    return [a for a in case.items if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _imaging(case):
    return [a for a in case.items if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]


def _kspace(case, slice_=0, average=0):
    """(2 sets, coils, ky, kx_os) k-space of one slice and repeat from the acquisitions."""
    p = case.params
    k = np.zeros((2, p.coils, p.matrix[1], p.n_ro_os), np.complex64)
    for a in _imaging(case):
        if a.idx.slice == slice_ and a.idx.average == average and not (
                a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)):
            k[a.idx.set, :, a.idx.kspace_encode_step_1] = a.data
    return k


def _coil_images(k, params):
    """Coil images ``(..., y, x)`` of k-space ``(..., ky, kx_os)``, readout oversampling cropped."""
    return centre_crop(ifft2c(k), shape_yx(params.matrix))


@pytest.fixture(scope="module")
def clean():
    return simulate_lge(replace(BASE, add_noise=False))


@pytest.fixture(scope="module")
def noisy():
    return simulate_lge(BASE)


def test_fully_sampled_noise_free_recon_reproduces_truth(clean):
    t = clean.truth
    w = prewhitening_matrix(t.psi)
    img = _coil_images(prewhiten(np.moveaxis(_kspace(clean), 1, 0), w), clean.params)   # (coils, 2, y, x)
    comb = np.sum(np.conj(t.coil_maps[0])[:, None] * img, axis=0)
    for s, key in enumerate(("ir", "pd")):
        ref = getattr(t, key)[0]
        assert np.abs(comb[s] - ref).max() < TOL_EXACT * np.abs(ref).max(), key
    # SNR definition: mean |PD| over pure LV blood = snr (SNR units)
    blood = t.labels[0] == ph.LV_BLOOD
    assert np.mean(np.abs(t.pd[0][blood])) == pytest.approx(BASE.snr, rel=0.05)


def test_noise_scan_covariance_matches_psi(noisy):
    noise = np.concatenate([a.data for a in _noise(noisy)], axis=1)          # (coils, N)
    n = noise.shape[1]
    psi = noisy.truth.psi
    est = noise_covariance(noise)
    d = np.sqrt(np.real(np.diag(psi)))
    # each element's standard error is ~ sqrt(Ψii Ψjj / N); allow 5 standard errors
    assert np.max(np.abs(est - psi) / np.outer(d, d)) < 5.0 / np.sqrt(n)


def test_prewhitened_imaging_noise_is_white_with_unit_sigma(clean, noisy):
    """Imaging noise (noisy − noise-free, same seed, no motion) whitened by the noise scan's Ψ."""
    w = prewhitening_matrix(noise_covariance(np.concatenate([a.data for a in _noise(noisy)], axis=1)))
    diff = np.concatenate([(a.data - b.data) for a, b in zip(_imaging(noisy), _imaging(clean))], axis=1)
    white = prewhiten(diff, w)
    cov = noise_covariance(white)
    n = white.shape[1]
    np.testing.assert_allclose(np.real(np.diag(cov)), 1.0, atol=5.0 / np.sqrt(n) + 5 * 0.03)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.1


def test_determinism_and_seed_dependence(noisy):
    again = simulate_lge(BASE)
    assert len(again.items) == len(noisy.items)
    for a, b in zip(again.items, noisy.items):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.getHead() == b.getHead()
    for key in ("labels", "ir", "psir_target", "coil_maps"):
        np.testing.assert_array_equal(getattr(again.truth, key), getattr(noisy.truth, key))
    other = simulate_lge(replace(BASE, seed=12))
    assert (other.truth.labels != noisy.truth.labels).mean() > 0.05


@pytest.mark.parametrize("acs_mode", ["embedded", "separate"])
def test_file_is_valid_ismrmrd_with_right_counts_and_flags(tmp_path, acs_mode):
    p = LgeParams(slices=2, repeats=3, coils=8, matrix=(64, 48), acceleration=2, acs_lines=12,
                  acs_mode=acs_mode, partial_fourier=0.75, resp_amplitude_mm=3.0, seed=5,
                  noise_readouts=8)
    case = simulate_lge(p)
    path = tmp_path / "case.h5"
    write_dataset(path, case.header_xml, case.items)
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    hdr = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
    enc = hdr.encoding[0]
    lim = enc.encodingLimits
    assert enc.encodedSpace.matrixSize.x == 128 and enc.reconSpace.matrixSize.x == 64
    assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(2 * enc.reconSpace.fieldOfView_mm.x)
    assert (lim.set.maximum, lim.average.maximum, lim.slice.maximum) == (1, 2, 1)
    assert lim.kspace_encoding_step_1.center == 24
    assert enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 == 2
    assert enc.parallelImaging.calibrationMode.value == acs_mode
    assert list(hdr.sequenceParameters.flipAngle_deg) == [45.0, 8.0]
    assert hdr.sequenceParameters.TI[0] == 300.0
    assert hdr.acquisitionSystemInformation.receiverChannels == 8
    assert hdr.acquisitionSystemInformation.systemFieldStrength_T == 1.5

    acqs = [ds.read_acquisition(i) for i in range(ds.number_of_acquisitions())]
    assert len(acqs) == len(case.items)
    is_noise = [a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acqs]
    assert all(is_noise[:8]) and not any(is_noise[8:])
    smp = sampling_pattern(48, 2, 12, acs_mode, 0.75)
    counts: dict = {}
    stamps = [a.acquisition_time_stamp for a in acqs]
    assert stamps == sorted(stamps)
    n_first = n_last = 0
    for a in acqs[8:]:
        i = a.idx
        assert a.data.shape == (8, 128) and a.center_sample == 64
        assert 0 <= i.set <= 1 and 0 <= i.average <= 2 and 0 <= i.slice <= 1
        assert lim.kspace_encoding_step_1.minimum <= i.kspace_encode_step_1 <= lim.kspace_encoding_step_1.maximum
        assert a.sample_time_us > 0 and np.linalg.norm(a.slice_dir) == pytest.approx(1.0, abs=1e-6)
        calib = a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        both = a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        line = i.kspace_encode_step_1
        if acs_mode == "embedded":
            assert calib == (line in smp.acs and line not in smp.imaging)
            assert both == (line in smp.acs and line in smp.imaging)
        elif calib:
            assert line in smp.acs and i.average == 0
        n_first += a.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE)
        n_last += a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
        if not (calib and acs_mode == "separate"):
            key = (i.slice, i.set, i.average)
            counts[key] = counts.get(key, 0) + 1
    assert set(counts) == {(s, e, n) for s in range(2) for e in range(2) for n in range(3)}
    assert set(counts.values()) == {len(smp.shot)}
    assert n_first == n_last == 2 * 2 * 3                      # one per heartbeat
    assert acqs[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    ds.close()


def test_motion_is_applied_to_anatomy_not_coils():
    p = replace(BASE, repeats=4, resp_amplitude_mm=8.0, add_noise=False, seed=21)
    case = simulate_lge(p)
    mot = case.truth.motion_px[0]
    assert np.abs(mot).max() > 0.5
    # a repeat's PD differs from the motion-free truth, but the coil maps are the same arrays
    k = _kspace(case, average=int(np.argmax(np.abs(mot[:, 1]).sum(-1))))
    w = prewhitening_matrix(case.truth.psi)
    img = _coil_images(prewhiten(k[1], w), p)
    pd = np.sum(np.conj(case.truth.coil_maps[0]) * img, axis=0)
    assert np.abs(pd - case.truth.pd[0]).max() > 0.2 * np.abs(case.truth.pd[0]).max()
    still = simulate_lge(replace(p, resp_amplitude_mm=0.0))
    assert not np.any(still.truth.motion_mm)


def test_truth_targets_are_consistent(clean):
    t = clean.truth
    from cmrecon.recon.psir_head import psirnet_head
    k = float(t.target_scale)
    np.testing.assert_allclose(t.psir_target[0], psirnet_head(t.ir[0] * k, t.pd[0] * k), atol=1e-5)
    lab, ratio = t.labels[0], t.psir_ratio[0]
    myo = lab == ph.LV_MYO
    blood = np.median(ratio[lab == ph.LV_BLOOD])
    assert 0.8 < blood < 2.1   # blood T1 250-350 ms at TI 300
    # nulled myocardium, ~2 pixels thick at 5.6 mm: the band-limited image mixes up to a third
    # of the neighbouring blood into it (as a real 64×48 image would)
    assert abs(np.median(ratio[myo])) < 0.4 * blood
    assert t.heart_mask[0][np.isin(lab, ph.HEART_LABELS)].all()
    assert t.coil_maps.shape == (1, 8, 48, 64)                 # (slices, coils, y, x)
    np.testing.assert_allclose(np.sum(np.abs(t.coil_maps[0]) ** 2, 0), 1.0, rtol=1e-4)


def test_truth_saves_every_field_and_reads_like_its_npz(clean, tmp_path):
    clean.truth.save(tmp_path / "truth.npz")
    back = SimTruth.load(tmp_path / "truth.npz")
    with np.load(tmp_path / "truth.npz") as stored:
        for f in fields(SimTruth):
            np.testing.assert_array_equal(getattr(back, f.name), getattr(clean.truth, f.name))
            assert getattr(back, f.name).dtype == getattr(clean.truth, f.name).dtype
            np.testing.assert_array_equal(clean.truth[f.name], stored[f.name])
    with pytest.raises(KeyError):
        clean.truth["save"]


def test_bad_parameters_name_the_field():
    with pytest.raises(SimParamError, match="partial_fourier"):
        LgeParams(partial_fourier=0.6)
    with pytest.raises(SimParamError, match="acs_mode"):
        LgeParams(acs_mode="interleaved")
    with pytest.raises(SimParamError, match="ti_ms"):
        simulate_lge(LgeParams(matrix=(64, 48), acceleration=1, acs_lines=0, heart_rate_bpm=150, ti_ms=450))


def test_key_repeat_is_the_medoid_of_the_displacements():
    d = np.array([[0.0, 0.1], [0.0, 6.0], [0.1, 0.3], [0.0, 0.2], [0.2, 12.0]])
    # median distance to the others: repeat 3 (0.2 mm from 0.1 and 0.3) is the most central
    assert key_repeat(d) == 3
    assert key_repeat(d[:1]) == 0


@pytest.mark.parametrize("model, near_min, near_max", [("end_expiration", 0.42, 0.62), ("two_sided", 0.0, 0.1)])
def test_breathing_dwells_at_end_expiration_unless_two_sided(model, near_min, near_max):
    """cos⁶ breathing: P(|d| < 0.2·a) = P(cos⁶(πu) < 0.2) = 1 − 2·acos(0.2^⅙)/π = 0.555, times
    0.92 (no deep breath) = 0.51, blurred by the 0.05·a / 0.1·a jitter (512 draws: ±0.05);
    two-sided: |N(1, 0.53)| < 0.2 has p ≈ 0.07.
    """
    p = replace(BASE, repeats=64, resp_amplitude_mm=10.0, breathing=model)
    rng = np.random.default_rng(3)
    d = np.concatenate([breathing_motion(rng, p.repeats, p.resp_amplitude_mm, model)[:, 0] for _ in range(8)])   # (512, 2) mm
    near = float(np.mean(np.hypot(d[:, 0], d[:, 1]) < 0.2 * p.resp_amplitude_mm))
    assert near_min <= near <= near_max, near
    if model == "end_expiration":   # one-sided: the excursion never goes far past the baseline
        main = np.median(d[np.hypot(d[:, 0], d[:, 1]) > 5.0], axis=0)
        main /= np.linalg.norm(main)
        assert np.mean(d @ main < -0.3 * p.resp_amplitude_mm) < 0.01


def test_truth_lives_in_the_key_repeats_frame():
    """Noise-free, fully sampled: the key repeat's IR is the truth IR (exactly); others are moved."""
    p = replace(BASE, repeats=5, resp_amplitude_mm=8.0, add_noise=False, seed=23)
    case = simulate_lge(p)
    t = case.truth
    key = int(t.key_repeat[0])
    assert key == key_repeat(t.motion_mm[0][:, 0])
    w = prewhitening_matrix(t.psi)
    errors = []
    for n in range(p.repeats):
        img = _coil_images(prewhiten(np.moveaxis(_kspace(case, average=n), 1, 0), w), p)
        ir = np.sum(np.conj(t.coil_maps[0]) * img[:, 0], axis=0)
        errors.append(np.abs(ir - t.ir[0]).max() / np.abs(t.ir[0]).max())
    assert errors[key] < TOL_EXACT
    moved = [n for n in range(p.repeats)
             if np.abs(t.motion_px[0][n, 0] - t.motion_px[0][key, 0]).max() > 1.0]
    assert moved and all(errors[n] > 0.05 for n in moved)
    assert 0.2 <= float(t.chest_wall_fraction[0]) <= 0.5


def test_repeats_counted_in_repetition_when_asked(tmp_path):
    p = replace(BASE, repeats=3, repeat_counter="repetition")
    case = simulate_lge(p)
    imaging = _imaging(case)
    assert sorted({a.idx.repetition for a in imaging}) == [0, 1, 2]
    assert {a.idx.average for a in imaging} == {0}
    lim = ismrmrd.xsd.CreateFromDocument(case.header_xml).encoding[0].encodingLimits
    assert (lim.repetition.maximum, lim.average.maximum) == (2, 0)
