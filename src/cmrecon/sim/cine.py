"""Simulated ECG-triggered segmented 2D bSSFP short-axis cine raw data with ground truth.

Forward model, per slice, coil c, cardiac phase p:

    y_p = M_p ⊙ F[ C_c · e^{iφ_b} · ρ(t_p) ] + ε,   ε ~ CN(0, Ψ)

* ``ρ(t)`` — the object at cardiac time ``t``: the LGE simulator's anatomy
  (:func:`cmrecon.sim.phantom.random_anatomy`) moved by :func:`cmrecon.sim.heart_motion.anatomy_at`
  to the contraction ``c(t)`` of the subject's cardiac cycle, each tissue class weighted by its
  native bSSFP steady-state signal (:mod:`cmrecon.sim.cine_signal`), painted on a grid 6× finer
  than the matrix and low-passed to the acquired k-space (as
  :func:`cmrecon.sim.phantom.bandlimited_fractions`);
* ``t_p = p·seg·TR + seg·TR/2`` — the nominal time of phase ``p``: every readout of phase ``p``
  sees the heart at ``t_p`` (motion within a segment of ``seg·TR`` ms is ignored: the standard
  segmented-cine approximation, whose temporal blur is one segment);
* ``C_c``, ``φ_b``, ``Ψ`` — the LGE simulator's Biot–Savart chest array, smooth background
  phase and noise covariance (:mod:`cmrecon.sim.coils`); coils and φ_b do not move;
* ``F`` — the centred orthonormal 2D DFT on the oversampled grid ``(os·n_ro, n_pe)``, the
  object in the central ``n_ro`` readout pixels (cropping after the inverse FFT removes the
  oversampling exactly);
* ``M_p`` — the rows of phase ``p`` (:func:`cmrecon.sim.sampling.cine_masks`: equispaced or
  kt-interleaved, plus ACS rows);
* ``ε`` — correlated complex Gaussian noise, the same Ψ as the noise scan at the start.

Acquisition (docs/cine.md): a breath-hold per slice; in heartbeat ``h`` the scanner reads, for
each phase ``p`` in turn, segment ``h`` of that phase's ascending row list
(``lines_per_segment`` rows, one every TR), so a phase needs ``H = ceil(max_p rows_p / seg)``
heartbeats. Signals are steady state throughout (bSSFP runs on through the trigger gap).

SNR definition: ``snr`` is the mean magnitude over pure LV-blood pixels (all phases) of the
noise-free, fully sampled, prewhitened image combined with the true prewhitened maps (RSS = 1),
divided by that image's noise σ (= 1); each slice is scaled to hit it, so truth images are in
SNR units.

References
----------
Atkinson DJ, Edelman RR. Cineangiography of the heart in a single breath hold with a segmented
turboFLASH sequence. Radiology 1991;178:357-360 (segmented cine).
Carr JC, Simonetti O, Bundy J, et al. Cine MR angiography of the heart with segmented true fast
imaging with steady-state precession. Radiology 2001;219:828-834 (bSSFP cine).
Scheffler K, Hennig J. MRM 2003;49:395-397 (bSSFP steady state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import ismrmrd
import numpy as np

from cmrecon.axes import centre_crop
from cmrecon.io.mrdfile import make_acquisition
from cmrecon.recon.fft import fft2c
from cmrecon.recon.sense import reduce
from cmrecon.sim import phantom as ph
from cmrecon.sim.cine_signal import bssfp_steady_state, sample_native_tissues
from cmrecon.sim.cine_truth import CineTruth
from cmrecon.sim.header import make_cine_header
from cmrecon.sim.heart_motion import anatomy_at, lv_cavity_area_mm2, random_cycle, random_heart_motion
from cmrecon.sim.kspace import BANDLIMIT_SUPERSAMPLE, mix_coils
from cmrecon.sim.lge import SimParamError
from cmrecon.sim.protocol import ScanProtocol
from cmrecon.sim.sampling import CINE_SAMPLING, cine_acs_rows, cine_masks
from cmrecon.sim.signal import TISSUES
from cmrecon.sim.stream import TICK_MS
from cmrecon.sim.subject import complex_normal, draw_slice, draw_subject

__all__ = ["CineParams", "CineCase", "SimParamError", "simulate_cine", "temporal_masks"]

#: Share of the R-R interval the phases may fill (the rest is the gap before the next trigger).
ACQUISITION_WINDOW = 0.9
#: Body pixels (by temporal SD of |image|) in the dynamic mask (top) and static mask (bottom).
DYNAMIC_FRACTION, STATIC_FRACTION = 0.10, 0.50


@dataclass(frozen=True)
class CineParams(ScanProtocol):
    """Parameters of one simulated cine case (units in the names).

    Attributes
    ----------
    slices : short-axis slices (one breath-hold each).
    phases : cardiac phases per slice, 4–40 (12–25 typical).
    coils : receive channels.
    matrix : (readout, phase) reconstructed matrix; the data have ``readout_oversampling``×
        readout samples.
    fov_mm : (readout, phase) reconstructed field of view, mm, each ≥ 200; the body is drawn to
        fit inside with 20 mm to spare, so nothing wraps along PE.
    acceleration : PE undersampling factor R, 1–12 (4, 8, 10 are the CMRxRecon factors).
    acs_lines : calibration rows about the centre, sampled in every phase (R > 1; equispaced
        sampling needs ≥ 2, kt-interleaved may have 0: its time average is fully sampled).
    sampling : "equispaced" or "kt_interleaved" (:func:`cmrecon.sim.sampling.cine_masks`).
    readout_oversampling : 1 or 2.
    field_t : 1.5 or 3.0 T (native T1/T2 ranges, :mod:`cmrecon.sim.cine_signal`).
    heart_rate_bpm : RR = 60000 / heart_rate_bpm ms.
    tr_ms : bSSFP repetition time, ms (TE = TR/2).
    flip_deg : flip angle, degrees.
    lines_per_segment : rows per phase per heartbeat; 0 = the largest with
        ``phases·seg·TR ≤ 0.9·RR``.
    snr : LV-blood SNR of one fully sampled phase (see the module docstring).
    seed : random seed; the same parameters and seed give bit-identical output.
    noise_readouts : noise-only readouts at the start of the file.
    add_noise : False gives noise-free imaging data (the noise scan still has noise).
    slice_thickness_mm : slice thickness, mm (slice spacing = thickness + 2 mm).
    bandwidth_hz_per_px : receiver bandwidth per (oversampled) pixel; sets ``sample_time_us``.
    lv_ef : (lo, hi) range of the subject's LV fractional area change at end-systole.
    rv_ef : (lo, hi) range of the RV cavity area change at end-systole.
    heart_shift_mm : (lo, hi) range of the heart's in-plane translation at end-systole, mm.
    """

    slices: int = 1
    phases: int = 20
    coils: int = 10
    matrix: tuple[int, int] = (128, 128)
    fov_mm: tuple[float, float] = (360.0, 360.0)
    acceleration: int = 8
    acs_lines: int = 24
    sampling: str = "equispaced"
    readout_oversampling: int = 2
    field_t: float = 1.5
    heart_rate_bpm: float = 60.0
    tr_ms: float = 3.0
    flip_deg: float = 50.0
    lines_per_segment: int = 0
    snr: float = 20.0
    seed: int = 0
    noise_readouts: int = 32
    add_noise: bool = True
    slice_thickness_mm: float = 8.0
    bandwidth_hz_per_px: float = 930.0
    lv_ef: tuple[float, float] = (0.5, 0.7)
    rv_ef: tuple[float, float] = (0.45, 0.65)
    heart_shift_mm: tuple[float, float] = (1.0, 4.0)

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> SimParamError:
            return SimParamError(f"CineParams.{name} = {getattr(self, name)!r}: {why}")

        def is_range(v, lo: float, hi: float) -> bool:
            return len(v) == 2 and lo <= v[0] <= v[1] <= hi

        self.check_scan(bad)
        if not 4 <= self.phases <= 40:
            raise bad("phases", "must be 4..40")
        if len(self.fov_mm) != 2 or min(self.fov_mm) < 200.0:
            raise bad("fov_mm", "must be two lengths ≥ 200 mm (readout, phase)")
        if int(self.acceleration) != self.acceleration or not 1 <= self.acceleration <= 12:
            raise bad("acceleration", "must be an integer 1..12")
        if self.sampling not in CINE_SAMPLING:
            raise bad("sampling", f"must be one of {', '.join(CINE_SAMPLING)}")
        if self.sampling == "equispaced" and self.acceleration > 1 and self.acs_lines < 2:
            raise bad("acs_lines", "equispaced sampling with R > 1 needs calibration lines (≥ 2)")
        if not 1.5 <= self.tr_ms <= 10.0:
            raise bad("tr_ms", "must be 1.5..10")
        if not 5.0 <= self.flip_deg <= 90.0:
            raise bad("flip_deg", "must be 5..90")
        if not self.slice_thickness_mm > 0:
            raise bad("slice_thickness_mm", "must be > 0")
        if not self.bandwidth_hz_per_px > 0:
            raise bad("bandwidth_hz_per_px", "must be > 0")
        if not is_range(self.lv_ef, 0.1, 0.85):
            raise bad("lv_ef", "must be (lo, hi) with 0.1 <= lo <= hi <= 0.85")
        if not is_range(self.rv_ef, 0.1, 0.85):
            raise bad("rv_ef", "must be (lo, hi) with 0.1 <= lo <= hi <= 0.85")
        if not is_range(self.heart_shift_mm, 0.0, 10.0):
            raise bad("heart_shift_mm", "must be (lo, hi) with 0 <= lo <= hi <= 10")
        window = ACQUISITION_WINDOW * self.rr_ms
        if self.lines_per_segment < 0:
            raise bad("lines_per_segment", "must be ≥ 0 (0: the most that fit)")
        if self.segment_lines < 1:
            raise bad("phases", f"{self.phases} phases × TR {self.tr_ms} ms do not fit in "
                                f"{ACQUISITION_WINDOW:.0%} of RR {self.rr_ms:.0f} ms (heart_rate_bpm = "
                                f"{self.heart_rate_bpm})")
        if self.phases * self.segment_lines * self.tr_ms > window + 1e-9:
            raise bad("lines_per_segment", f"{self.phases} phases × {self.lines_per_segment} lines × TR "
                                           f"{self.tr_ms} ms exceed {ACQUISITION_WINDOW:.0%} of RR "
                                           f"{self.rr_ms:.0f} ms")

    @property
    def segment_lines(self) -> int:
        """Rows per phase per heartbeat: ``lines_per_segment``, or the most that fit when 0."""
        if self.lines_per_segment:
            return int(self.lines_per_segment)
        return int(math.floor(ACQUISITION_WINDOW * self.rr_ms / (self.phases * self.tr_ms) + 1e-9))

    @property
    def temporal_resolution_ms(self) -> float:
        """Duration of one segment (the time each phase's image spans), ms."""
        return self.segment_lines * self.tr_ms

    @property
    def trigger_times_ms(self) -> np.ndarray:
        """(phases,) float64, nominal time of each phase after the R wave, ms."""
        seg = self.temporal_resolution_ms
        return np.arange(self.phases) * seg + seg / 2.0



@dataclass
class CineCase:
    """A simulated cine case: ISMRMRD header, acquisitions in scanner order, ground truth.

    Attributes
    ----------
    params : the CineParams used.
    header_xml : ISMRMRD XML header.
    items : ismrmrd.Acquisition list (noise readouts, then per slice the segmented heartbeats).
    truth : the ground truth, images ``(slices, phases, y, x)`` at the reconstructed matrix.
    """

    params: CineParams
    header_xml: str
    items: list
    truth: CineTruth


@dataclass(frozen=True, eq=False)
class _Rendered:
    """A slice's object at every phase, on the ``(RO, PE)`` recon grid.

    Attributes
    ----------
    objects : (phases, RO, PE) float32, signal-weighted band-limited object (PD·S_bSSFP units).
    labels : (phases, RO, PE) uint8, majority label over the fine grid's sub-pixels.
    pure_blood : (phases, RO, PE) bool, pixels entirely LV blood.
    """

    objects: np.ndarray
    labels: np.ndarray
    pure_blood: np.ndarray


def _to_image(u: float, v: float, rotation_deg: float) -> tuple[float, float]:
    """Patient (u, v) mm → image (x, y) mm (inverse of the phantom's rotation and v flip)."""
    t = np.deg2rad(rotation_deg)
    return u * np.cos(t) + v * np.sin(t), u * np.sin(t) - v * np.cos(t)


def _heart_box(anatomies: list[ph.Anatomy], p: CineParams) -> tuple[slice, slice]:
    """Pixel ranges ``(RO, PE)`` that hold the heart in every phase (outside, nothing moves)."""
    dx, dy = p.pixel_mm
    n_ro, n_pe = p.matrix
    lo, hi = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
    for an in anatomies:
        cu, cv = an.lv_centre
        # the radius about lv_centre within which the phantom paints the heart (phantom.paint_labels)
        reach = max(an.lv_endo.reach() + 1.6 * an.wall_mm[0], 1.0,
                    np.hypot(an.rv_blood.cu - cu, an.rv_blood.cv - cv) + an.rv_blood.reach() + an.rv_wall_mm)
        reach += max([f[0] for f in an.epi_fat], default=0.0) + 2.0
        x, y = _to_image(cu, cv, an.rotation_deg)
        lo = np.minimum(lo, [(x - reach) / dx + n_ro // 2, (y - reach) / dy + n_pe // 2])
        hi = np.maximum(hi, [(x + reach) / dx + n_ro // 2, (y + reach) / dy + n_pe // 2])
    i0, j0 = (max(int(np.floor(v)) - 2, 0) for v in lo)
    i1, j1 = (min(int(np.ceil(v)) + 3, n) for v, n in zip(hi, p.matrix))
    return slice(i0, i1), slice(j0, j1)


def _render(anatomies: list[ph.Anatomy], p: CineParams, weights: np.ndarray) -> _Rendered:
    """Paint each phase's anatomy on the fine grid and low-pass it to the matrix.

    The same band-limiting as :func:`cmrecon.sim.phantom.bandlimited_fractions` (a fine grid
    ``s = BANDLIMIT_SUPERSAMPLE`` times denser, its central ``matrix`` frequencies, the
    half-sample phase ramp, the ringing kept within 2 pixels of the body), applied once to the
    signal-weighted label image instead of to each label; only the heart's box is repainted
    per phase.

    Parameters
    ----------
    anatomies : one per phase.
    p : CineParams (matrix, FOV).
    weights : (N_LABELS,) float, signal of each label (0 for air).
    """
    s = BANDLIMIT_SUPERSAMPLE
    n_ro, n_pe = p.matrix
    x, y = ph.pixel_coordinates(p.matrix, p.fov_mm, s)
    static = ph.paint_labels(anatomies[0], x, y, (0.0, 0.0), (0.0, 0.0))
    bi, bj = _heart_box(anatomies, p)
    fi, fj = slice(bi.start * s, bi.stop * s), slice(bj.start * s, bj.stop * s)
    xb, yb = x[fi, fj], y[fi, fj]
    taper = ph.ringing_taper(static, p.matrix, s, 2)
    lut = np.asarray(weights, np.float64)

    def majority(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nr, npe = lab.shape[0] // s, lab.shape[1] // s
        pix = np.broadcast_to((np.arange(nr)[:, None, None, None] * npe + np.arange(npe)[None, None, :, None]),
                              (nr, s, npe, s)).ravel()
        counts = np.bincount(pix * ph.N_LABELS + lab.ravel(), minlength=nr * npe * ph.N_LABELS)
        counts = counts.reshape(nr, npe, ph.N_LABELS)
        return np.argmax(counts, axis=-1).astype(np.uint8), counts[..., ph.LV_BLOOD] == s * s

    labels0, pure0 = majority(static)
    n_p = len(anatomies)
    objects = np.empty((n_p, n_ro, n_pe), np.float32)
    labels = np.empty((n_p, n_ro, n_pe), np.uint8)
    pure = np.empty((n_p, n_ro, n_pe), bool)
    lab = static.copy()
    for i, an in enumerate(anatomies):
        lab[fi, fj] = ph.paint_labels(an, xb, yb, (0.0, 0.0), (0.0, 0.0))
        objects[i] = ph.lowpass_to_matrix(lut[lab], p.matrix, s) * taper
        labels[i], pure[i] = labels0, pure0
        labels[i, bi, bj], pure[i, bi, bj] = majority(lab[fi, fj])
    return _Rendered(objects, labels, pure)


def temporal_masks(images: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dynamic, static) masks of one slice from its (phases, y, x) images and (y, x) body."""
    sd = np.std(np.abs(images), axis=0)
    vals = sd[body]
    dynamic = body & (sd >= np.quantile(vals, 1.0 - DYNAMIC_FRACTION))
    static = body & (sd <= np.quantile(vals, STATIC_FRACTION))
    return dynamic, static


def _slice_readouts(p: CineParams, kspace: list[np.ndarray], rows: list[np.ndarray], acs: np.ndarray,
                    t_rwave_ms: float, s: int, head: dict) -> tuple[list[ismrmrd.Acquisition], float]:
    """One slice's segmented heartbeats as acquisitions; returns them and the next R wave, ms.

    Parameters
    ----------
    kspace : per phase, (coils, samples, rows_p) complex64, the phase's rows in ascending order.
    rows : per phase, (rows_p,) ascending row indices.
    acs : (n_pe,) bool, calibration rows.
    t_rwave_ms : time of the slice's first R wave, ms.
    s : slice counter.
    head : header fields every readout carries.
    """
    seg = p.segment_lines
    beats = max(-(-len(r) // seg) for r in rows)
    out = []
    for h in range(beats):
        for ph_i, (k, r) in enumerate(zip(kspace, rows)):
            for j in range(h * seg, min((h + 1) * seg, len(r))):
                row = int(r[j])
                flags = [ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING] if acs[row] else []
                if j == 0:
                    flags.append(ismrmrd.ACQ_FIRST_IN_PHASE)
                if j == len(r) - 1:
                    flags.append(ismrmrd.ACQ_LAST_IN_PHASE)
                t = ph_i * seg * p.tr_ms + (j - h * seg + 0.5) * p.tr_ms     # after the R wave
                out.append(make_acquisition(
                    k[:, :, j], flags, {"kspace_encode_step_1": row, "phase": ph_i, "slice": s},
                    acquisition_time_stamp=int(round((t_rwave_ms + t) / TICK_MS)),
                    physiology_time_stamp=[int(round(t / TICK_MS))], **head))
    out[0].set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
    out[-1].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    return out, t_rwave_ms + beats * p.rr_ms


def simulate_cine(params: CineParams, progress: Callable[[str], None] | None = None) -> CineCase:
    """Simulate one cine case: header, acquisitions in scanner order and ground truth.

    Parameters
    ----------
    params : CineParams.
    progress : called with one line of text per slice (e.g. ``print`` to stderr).

    Returns
    -------
    CineCase
    """
    p = params
    rng = np.random.default_rng(p.seed)
    n_ro, n_pe = p.matrix
    mask = cine_masks(n_pe, p.phases, p.acceleration, p.acs_lines, p.sampling)
    acs = cine_acs_rows(n_pe, p.acceleration, p.acs_lines)
    rows = [np.flatnonzero(m) for m in mask]

    # subject-level draws: tissues, cardiac cycle and motion, body, coil array, noise covariance
    tissues = sample_native_tissues(rng, p.field_t)
    signal = bssfp_steady_state(tissues.t1_ms, tissues.t2_ms, p.tr_ms, p.flip_deg, tissues.pd)
    weights = np.where(ph.LABEL_TO_TISSUE >= 0, signal[np.maximum(ph.LABEL_TO_TISSUE, 0)], 0.0)
    cycle = random_cycle(rng, p.rr_ms)
    motion = random_heart_motion(rng, p.lv_ef, p.rv_ef, p.heart_shift_mm)
    times = p.trigger_times_ms
    contraction = cycle.contraction(times)
    sub = draw_subject(rng, p)                 # body, coils, Ψ, geometry, the noise scan
    subject, array, psi, whiten, chol = sub.anatomy, sub.array, sub.psi, sub.whiten, sub.chol
    positions, head, items, t_beat = sub.positions, sub.head, list(sub.items), sub.first_rwave_ms

    start = (p.n_ro_os - n_ro) // 2
    per_slice = []
    for s in range(p.slices):
        if progress is not None:
            progress(f"simulate cine: slice {s + 1}/{p.slices} ({p.phases} phases, {p.coils} coils, "
                     f"{p.n_ro_os}x{n_pe}, R={p.acceleration} {p.sampling})")
        sl = draw_slice(rng, p, s, subject, array, whiten)
        anatomies = [anatomy_at(sl.anatomy, motion, c) for c in contraction]
        rend = _render(anatomies, p, weights)
        # combined image = RSS(W·C)·e^{iφ}·ρ exactly (Σ_c conj(maps_c)·(W·C·e^{iφ}·ρ)_c)
        shading = reduce(mix_coils(whiten, sl.sens_phase), sl.maps)[0][start:start + n_ro]
        combined = shading[None] * rend.objects
        scale = p.snr / float(np.mean(np.abs(combined[rend.pure_blood]))) if rend.pure_blood.any() else (
            p.snr / float(np.mean(np.abs(combined[rend.labels == ph.LV_BLOOD]))))
        kspace = []
        img = np.zeros((p.coils, p.n_ro_os, n_pe), np.complex64)
        for i in range(p.phases):
            img[:, start:start + n_ro] = sl.sens_phase[:, start:start + n_ro] * (rend.objects[i] * np.float32(scale))
            k = fft2c(img)[:, :, rows[i]]                             # (coils, RO_os, rows_p)
            if p.add_noise:
                k = k + mix_coils(chol, complex_normal(rng, k.shape))
            kspace.append(np.ascontiguousarray(k, np.complex64))
        acqs, t_beat = _slice_readouts(p, kspace, rows, acs, t_beat, s, dict(head, position=positions[s]))
        items += acqs
        t_beat += 2 * p.rr_ms                                        # pause between breath-holds
        images = np.swapaxes((combined * scale).astype(np.complex64), -1, -2)   # (P, y, x)
        labels = np.swapaxes(rend.labels, -1, -2)
        body = labels[0] != ph.AIR
        heart = np.zeros(body.shape, bool)
        for lab in labels:
            heart |= ph.heart_mask(lab, p.pixel_mm[::-1])
        dynamic, static = temporal_masks(images, body)
        shift_xy = np.array([_to_image(c * motion.shift_mm[0], c * motion.shift_mm[1], sl.anatomy.rotation_deg)
                             for c in contraction], np.float32)
        per_slice.append({
            "images": images, "labels": labels,
            "coil_maps": np.swapaxes(centre_crop(sl.maps, p.matrix), -1, -2),
            "background_phase": np.swapaxes(centre_crop(sl.phase, p.matrix), -1, -2).astype(np.float32),
            "body_mask": body, "heart_mask": heart, "dynamic_mask": dynamic, "static_mask": static,
            "lv_area_mm2": np.array([lv_cavity_area_mm2(a) for a in anatomies]),
            "heart_shift_mm": shift_xy, "snr_scale": scale})
    items[-1].set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    for i, acq in enumerate(items, 1):
        acq.scan_counter = i

    stacked = {k: np.stack([t[k] for t in per_slice]) for k in per_slice[0]}
    truth = CineTruth(
        **stacked, trigger_times_ms=times, contraction=contraction, sampling_mask=mask,
        lv_ef=np.float64(motion.lv_ef), rv_ef=np.float64(motion.rv_ef), psi=psi.astype(np.complex128),
        tissue_names=np.array(TISSUES), tissue_t1_ms=tissues.t1_ms.astype(np.float32),
        tissue_t2_ms=tissues.t2_ms.astype(np.float32), tissue_pd=tissues.pd.astype(np.float32),
        tissue_signal=signal.astype(np.float32), label_names=np.array(ph.LABEL_NAMES),
        pixel_mm=np.array(p.pixel_mm, np.float32), params_json=np.array(p.to_json()))
    return CineCase(params=p, header_xml=make_cine_header(p, mask), items=items, truth=truth)
