"""Simulated free-breathing interleaved IR/PD single-shot bSSFP LGE raw data with ground truth.

Forward model (docs/physics.md §2), per slice, coil c, set s (0 = IR, 1 = PD), repeat n:

    y = M ⊙ F[ C_c · e^{iφ_b} · Σ_t w_{s,t}(ky) · ρ_t(W_{n,s} r) ] + ε,   ε ~ CN(0, Ψ)

* ``ρ_t`` — proton density × fraction of tissue class t, low-passed to the acquired matrix
  (:func:`cmrecon.sim.phantom.bandlimited_fractions`: a sub-pixel move is a Fourier shift, as
  in real data), moved by
  the respiratory displacement ``W_{n,s}`` (the coils and φ_b do not move);
* ``w_{s,t}(ky)`` — the hard-pulse bSSFP signal (signal.py) of tissue t at the time line ky
  is read in the shot (linear order), so the IR image carries the real approach-to-steady-state
  modulation along PE;
* ``C_c`` — Biot–Savart sensitivities of a chest array (coils.py), ``φ_b`` a smooth background
  phase shared by IR and PD;
* ``F`` — the centred orthonormal 2D DFT (:func:`cmrecon.recon.fft.fft2c`) on the oversampled
  grid ``(os·n_ro, n_pe)``; the object occupies the central ``n_ro`` readout pixels
  (indices ``[(os−1)·n_ro/2, (os+1)·n_ro/2)``) so cropping them after the inverse FFT
  removes the readout oversampling exactly;
* ``M`` — the sampled lines: every R-th line through the centre line ``n_pe // 2``, partial
  Fourier omitting the first ``(1 − pf)·n_pe`` lines, plus ACS lines;
* ``ε`` — correlated complex Gaussian noise of covariance Ψ per k-space sample, the same Ψ as
  the noise-only readouts at the start of the file.

SNR definition: ``snr`` is the mean magnitude of the PD image over pure LV-blood pixels in the
noise-free, fully sampled, prewhitened, coil-combined image (combination with the true
prewhitened maps normalised to RSS = 1), divided by the noise σ of that image, which is 1.
Each slice is scaled to hit ``snr``; truth images are in these SNR units.

References
----------
Kellman P, Arai AE, McVeigh ER, Aletras AH. MRM 2002;47:372-383 (PSIR).
Kellman P, Larson AC, Hsu L-Y, et al. Motion-corrected free-breathing delayed enhancement
imaging of myocardial infarction. MRM 2005;53:194-200 (interleaved IR/PD, MOCO averaging).
Schmitt P et al. MRM 2004;51:661-667 (IR bSSFP signal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import ismrmrd
import numpy as np

from cmrecon.axes import centre_crop
from cmrecon.errors import CmreconError
from cmrecon.recon.fft import ifft2c
from cmrecon.recon.sense import reduce
from cmrecon.sim import coils as coil_mod
from cmrecon.sim import phantom as ph
from cmrecon.sim.header import make_header
from cmrecon.sim.kspace import kspace_lines, mix_coils, tissue_objects
from cmrecon.sim.motion import BREATHING_MODELS, breathing_motion, key_repeat
from cmrecon.sim.protocol import ScanProtocol
from cmrecon.sim.sampling import PARTIAL_FOURIER_CHOICES, Sampling, line_signals, sampling_pattern
from cmrecon.sim.signal import TISSUES, SequenceTiming, hard_pulse_shot_signals, sample_tissue_params
from cmrecon.sim.stream import heartbeat_readouts
from cmrecon.sim.subject import SliceDraw, complex_normal, draw_slice, draw_subject
from cmrecon.sim.truth import SimTruth

__all__ = ["LgeParams", "SimCase", "SimParamError", "simulate_lge"]


class SimParamError(CmreconError, ValueError):
    """An LGE simulation parameter out of range (the message names field and value)."""


@dataclass(frozen=True)
class LgeParams(ScanProtocol):
    """Parameters of one simulated LGE case (units in the names; defaults: a small case).

    Attributes
    ----------
    slices : number of short-axis slices (base → apex).
    repeats : IR/PD pairs per slice (ISMRMRD ``average``), 1-24 typical.
    coils : receive channels, 8-32 typical.
    matrix : (readout, phase) reconstructed matrix; the data have ``readout_oversampling``×
        readout samples.
    acceleration : PE undersampling factor R (1-4).
    acs_lines : calibration lines around the centre (ignored for R = 1).
    acs_mode : "embedded" (inside each IR/PD shot) or "separate" (one extra PD-contrast
        heartbeat per slice and set before the repeats).
    partial_fourier : 1, 7/8 or 6/8 along PE (the first lines are omitted).
    readout_oversampling : 1 or 2.
    field_t : 1.5 or 3.0 T (T1s 10-20 % longer at 3 T).
    heart_rate_bpm : RR = 60000 / heart_rate_bpm ms.
    ti_ms : inversion to k-space-centre readout, ms.
    resp_amplitude_mm : respiratory excursion of the heart from end-expiration to normal
        end-inspiration, mm (0: none).
    breathing : "end_expiration" (default: one-sided, most heartbeats near end-expiration, an
        occasional deeper breath) or "two_sided" (the earlier model: ±amplitude around the
        motion-free position, no repeat at it).
    chest_wall_fraction : (lo, hi) range of the chest wall's share of the heart's displacement
        (drawn per slice; the heart and liver follow the diaphragm fully).
    repeat_counter : ISMRMRD counter that numbers the repeats: "average" (Siemens-style LGE)
        or "repetition" (the layout of Gadgetron's generic Cartesian chains).
    snr : PD blood SNR of one fully sampled repeat (see the module docstring).
    seed : random seed; the same parameters and seed give bit-identical output.
    fov_mm : (readout, phase) reconstructed field of view, mm.
    slice_thickness_mm : slice thickness, mm (slice spacing = thickness + 2 mm).
    tr_ms : bSSFP repetition time, ms (TE = TR/2).
    flip_ir_deg, flip_pd_deg : flip angles of the IR and PD shots, degrees.
    noise_readouts : noise-only readouts at the start of the file.
    add_noise : False gives noise-free data (the noise scan is still written, with noise).
    bandwidth_hz_per_px : receiver bandwidth per (oversampled) pixel; sets ``sample_time_us``.
    """

    slices: int = 1
    repeats: int = 8
    coils: int = 16
    matrix: tuple[int, int] = (128, 96)
    acceleration: int = 2
    acs_lines: int = 24
    acs_mode: str = "embedded"
    partial_fourier: float = 1.0
    readout_oversampling: int = 2
    field_t: float = 1.5
    heart_rate_bpm: float = 60.0
    ti_ms: float = 300.0
    resp_amplitude_mm: float = 4.0
    breathing: str = "end_expiration"
    chest_wall_fraction: tuple[float, float] = (0.2, 0.5)
    repeat_counter: str = "average"
    snr: float = 25.0
    seed: int = 0
    fov_mm: tuple[float, float] = (360.0, 270.0)
    slice_thickness_mm: float = 8.0
    tr_ms: float = 2.8
    flip_ir_deg: float = 45.0
    flip_pd_deg: float = 8.0
    noise_readouts: int = 32
    add_noise: bool = True
    bandwidth_hz_per_px: float = 1000.0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> SimParamError:
            return SimParamError(f"LgeParams.{name} = {getattr(self, name)!r}: {why}")

        self.check_scan(bad)
        if not 1 <= self.repeats <= 64:
            raise bad("repeats", "must be 1..64")
        if self.acceleration not in (1, 2, 3, 4):
            raise bad("acceleration", "must be 1, 2, 3 or 4")
        if self.acs_mode not in ("embedded", "separate"):
            raise bad("acs_mode", "must be 'embedded' or 'separate'")
        if self.acceleration > 1 and self.acs_lines < 2:
            raise bad("acs_lines", "R > 1 needs calibration lines (≥ 2)")
        if not any(abs(self.partial_fourier - p) < 1e-6 for p in PARTIAL_FOURIER_CHOICES):
            raise bad("partial_fourier", "must be 1, 7/8 or 6/8")
        if not 50 <= self.ti_ms <= 900:
            raise bad("ti_ms", "must be 50..900")
        if not 0 <= self.resp_amplitude_mm <= 30:
            raise bad("resp_amplitude_mm", "must be 0..30")
        if self.breathing not in BREATHING_MODELS:
            raise bad("breathing", f"must be one of {', '.join(BREATHING_MODELS)}")
        lo, hi = self.chest_wall_fraction
        if not 0 <= lo <= hi <= 1:
            raise bad("chest_wall_fraction", "must be (lo, hi) with 0 <= lo <= hi <= 1")
        if self.repeat_counter not in ("average", "repetition"):
            raise bad("repeat_counter", "must be 'average' or 'repetition'")
        if len(self.fov_mm) != 2 or min(self.fov_mm) <= 0:
            raise bad("fov_mm", "must be two positive lengths (readout, phase)")



@dataclass
class SimCase:
    """A simulated case: ISMRMRD header, acquisitions in scanner order, ground truth.

    Attributes
    ----------
    params : the LgeParams used.
    header_xml : ISMRMRD XML header.
    items : ismrmrd.Acquisition list (noise readouts, then per slice [separate ACS], then per
        repeat the IR and the PD heartbeat).
    truth : the ground truth, images ``(slices, y, x)`` at the reconstructed matrix.
    """

    params: LgeParams
    header_xml: str
    items: list
    truth: SimTruth


@dataclass(frozen=True, eq=False)
class _Slice(SliceDraw):
    """One slice's draw (:class:`cmrecon.sim.subject.SliceDraw`: anatomy, coils, phase on the
    oversampled ``(RO_os, PE)`` grid) and its breathing.

    Attributes
    ----------
    motion_mm : (repeats, 2 sets, 2 (dx, dy)) float64, heart displacement in each heartbeat.
    wall : share of the heart's displacement the body wall follows.
    key : the key repeat (medoid of the IR displacements), the truth's frame.
    """

    motion_mm: np.ndarray
    wall: float
    key: int


def _shot_timing(p: LgeParams, smp: Sampling) -> tuple[SequenceTiming, float]:
    """Sequence timing of the IR/PD shots and the trigger delay of their centre line, ms.

    The centre line is read in mid-diastole (72 % of RR) unless the shot would then end less
    than 15 ms before the next R wave.

    Raises
    ------
    SimParamError
        When the timing does not fit (shot longer than the diastolic window, TI too long).
    """
    rr = p.rr_ms
    ci = int(np.searchsorted(smp.shot, smp.centre))
    try:
        timing = SequenceTiming(rr_ms=rr, ti_ms=p.ti_ms, tr_ms=p.tr_ms, n_lines=len(smp.shot),
                                centre_index=ci, alpha_ir_deg=p.flip_ir_deg, alpha_pd_deg=p.flip_pd_deg)
    except ValueError as exc:
        raise SimParamError(f"LgeParams.ti_ms = {p.ti_ms}, heart_rate_bpm = {p.heart_rate_bpm}: "
                            f"timing does not fit: {exc}") from exc
    td_centre = min(0.72 * rr, rr - (len(smp.shot) - ci) * p.tr_ms - 15.0)
    if td_centre - p.ti_ms < 10.0 or td_centre - ci * p.tr_ms < 30.0:
        raise SimParamError(f"LgeParams.ti_ms = {p.ti_ms} with a {len(smp.shot)}-line shot does not fit in "
                            f"RR {rr:.0f} ms (heart_rate_bpm = {p.heart_rate_bpm})")
    return timing, td_centre


def _draw_slice(rng: np.random.Generator, p: LgeParams, s: int, subject: ph.Anatomy,
                array: coil_mod.CoilArray, whiten: np.ndarray) -> _Slice:
    """Draw slice ``s``: its heart, coils and background phase (:func:`draw_slice`), then breathing."""
    d = draw_slice(rng, p, s, subject, array, whiten)
    motion = breathing_motion(rng, p.repeats, p.resp_amplitude_mm, p.breathing)
    wall = float(rng.uniform(*p.chest_wall_fraction))
    return _Slice(d.anatomy, d.sens_phase, d.maps, d.phase, motion, wall, key_repeat(motion[:, 0]))


def _slice_truth(p: LgeParams, smp: Sampling, sl: _Slice, obj: np.ndarray, s_ir: np.ndarray,
                 s_pd: np.ndarray, whiten: np.ndarray, target_scale: np.float32) -> tuple[dict, float]:
    """Noise-free truth of one slice in its key repeat's frame, scaled to the requested SNR.

    Parameters
    ----------
    obj : (tissues, RO, PE) float32, the object at the key repeat's position.
    s_ir, s_pd : (tissues, n_shot) signal of each tissue at each readout of the IR / PD shot.
    whiten : (coils, coils) prewhitening matrix W.
    target_scale : √K of the MOCO target.

    Returns
    -------
    The slice's :class:`SimTruth` fields (images ``(y, x)``, no slice axis) and the object scale
    that gives the requested SNR.
    """
    from cmrecon.recon.psir_head import psirnet_head  # lazy: torch import only when needed

    n_pe = p.matrix[1]
    d = sl.motion_mm[sl.key, 0]
    labels, fractions = ph.rasterize(sl.anatomy, p.matrix, p.fov_mm, shift_mm=tuple(d),
                                     outer_shift_mm=tuple(sl.wall * d))
    body = ph.body_mask(labels)
    maps = centre_crop(sl.maps, p.matrix)
    combined = []
    for signal in (s_ir, s_pd):
        k = kspace_lines(obj, sl.sens_phase, line_signals(signal, smp.shot, n_pe), np.arange(n_pe))
        combined.append(reduce(centre_crop(ifft2c(mix_coils(whiten, k)), p.matrix), maps)[0])
    pure = fractions[ph.LV_BLOOD] > 0.999
    if not pure.any():
        pure = labels == ph.LV_BLOOD
    scale = p.snr / float(np.mean(np.abs(combined[1][pure])))
    ir, pd = ((c * scale).astype(np.complex64) for c in combined)
    ci = int(np.searchsorted(smp.shot, smp.centre))
    num, den = (np.tensordot(signal[:, ci], obj.astype(np.float64), axes=1) for signal in (s_ir, s_pd))
    ratio = np.where(body & (den > 1e-6), num / np.where(den > 1e-6, den, 1.0), 0.0)
    images = {"labels": labels, "ir": ir, "pd": pd, "coil_maps": maps,
              "background_phase": centre_crop(sl.phase, p.matrix), "psir_ratio": ratio.astype(np.float32),
              "psir_target": np.asarray(psirnet_head(ir * target_scale, pd * target_scale), np.float32),
              "heart_mask": ph.heart_mask(labels, p.pixel_mm), "body_mask": body}
    truth = {k: np.swapaxes(v, -1, -2) for k, v in images.items()}   # drawn (RO, PE), handed out (y, x)
    truth.update(motion_mm=sl.motion_mm.astype(np.float32), key_repeat=sl.key,
                 chest_wall_fraction=sl.wall, snr_scale=scale)
    return truth, scale


def simulate_lge(params: LgeParams, progress: Callable[[str], None] | None = None) -> SimCase:
    """Simulate one LGE case: header, acquisitions in scanner order and ground truth.

    Parameters
    ----------
    params : LgeParams.
    progress : called with one line of text per slice (e.g. ``print`` to stderr).

    Returns
    -------
    SimCase

    Raises
    ------
    SimParamError
        When the timing does not fit (shot longer than the diastolic window, TI too long).
    """
    p = params
    rng = np.random.default_rng(p.seed)
    n_pe = p.matrix[1]
    smp = sampling_pattern(n_pe, p.acceleration, p.acs_lines, p.acs_mode, p.partial_fourier)
    shot, acs_shot = np.array(smp.shot), np.array(smp.acs_shot)
    timing, td_centre = _shot_timing(p, smp)

    # subject-level draws: tissues, body, coil array, noise covariance
    tissues = sample_tissue_params(rng, p.field_t)
    s_ir, s_pd = hard_pulse_shot_signals(tissues.t1_ms, tissues.t2_ms, timing)
    if smp.acs_shot:
        _, s_acs = hard_pulse_shot_signals(tissues.t1_ms, tissues.t2_ms, timing, n_lines_pd=len(acs_shot),
                                           centre_index_pd=int(np.searchsorted(acs_shot, smp.centre)))
    sub = draw_subject(rng, p)                 # body, coils, Ψ, geometry, the noise scan
    subject, array, psi, whiten, chol = sub.anatomy, sub.array, sub.psi, sub.whiten, sub.chol
    positions, head, items, t_beat = sub.positions, sub.head, list(sub.items), sub.first_rwave_ms

    target_scale = np.float32(np.sqrt(math.ceil(p.repeats / 2)))
    per_slice = []
    for s in range(p.slices):
        if progress is not None:
            progress(f"simulate lge: slice {s + 1}/{p.slices} ({p.repeats} repeats, {p.coils} coils, "
                     f"{p.n_ro_os}x{n_pe})")
        sl = _draw_slice(rng, p, s, subject, array, whiten)
        key_shift = sl.motion_mm[sl.key, 0]
        obj_key = tissue_objects(sl.anatomy, p.matrix, p.fov_mm, key_shift, sl.wall, tissues.pd)
        truth, scale = _slice_truth(p, smp, sl, obj_key, s_ir, s_pd, whiten, target_scale)
        per_slice.append(truth)
        # heartbeats: (lines, signals, displacement (None: separate ACS, unmoved), set, repeat)
        beats = [(acs_shot, s_acs, None, set_, 0) for set_ in (0, 1)] if smp.acs_shot else []
        beats += [(shot, signal, sl.motion_mm[n, set_], set_, n)
                  for n in range(p.repeats) for set_, signal in ((0, s_ir), (1, s_pd))]
        for lines, signal, shift, set_, repeat in beats:
            if shift is not None and np.array_equal(shift, key_shift):
                obj = obj_key
            else:
                obj = tissue_objects(sl.anatomy, p.matrix, p.fov_mm, np.zeros(2) if shift is None else shift,
                                     sl.wall, tissues.pd)
            ksp = kspace_lines(obj, sl.sens_phase, signal, lines) * np.complex64(scale)
            if p.add_noise:
                ksp = ksp + mix_coils(chol, complex_normal(rng, ksp.shape)).astype(np.complex64)
            items += heartbeat_readouts(ksp, lines, smp, t_beat, td_centre, p.tr_ms,
                                        {"set": set_, "slice": s, p.repeat_counter: repeat},
                                        dict(head, position=positions[s], user_float=[p.ti_ms]),
                                        calibration_only=shift is None)
            t_beat += p.rr_ms
        t_beat += 2 * p.rr_ms                                  # pause between slices
    items[-1].set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    for i, acq in enumerate(items, 1):
        acq.scan_counter = i

    stacked = {k: np.stack([t[k] for t in per_slice]) for k in per_slice[0]}
    pixel_mm = np.array(p.pixel_mm, np.float32)
    truth = SimTruth(
        **stacked, motion_px=(stacked["motion_mm"] / pixel_mm).astype(np.float32),
        psi=psi.astype(np.complex128), imaging_lines=np.isin(np.arange(n_pe), smp.imaging),
        acs_lines=np.isin(np.arange(n_pe), smp.acs), shot_lines=shot.astype(np.int32),
        signal_ir=s_ir.astype(np.float32), signal_pd=s_pd.astype(np.float32),
        tissue_names=np.array(TISSUES), label_names=np.array(ph.LABEL_NAMES),
        tissue_t1_ms=tissues.t1_ms.astype(np.float32), tissue_t2_ms=tissues.t2_ms.astype(np.float32),
        tissue_pd=tissues.pd.astype(np.float32), pixel_mm=pixel_mm, target_scale=target_scale,
        params_json=np.array(p.to_json()))
    return SimCase(params=p, header_xml=make_header(p, smp), items=items, truth=truth)
