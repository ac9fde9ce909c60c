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

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Callable

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np

from cmrecon.errors import CmreconError
from cmrecon.io.header import schema_version
from cmrecon.recon.fft import fft2c, ifft2c
from cmrecon.recon.noise import prewhitening_matrix
from cmrecon.sim import coils as coil_mod
from cmrecon.sim import phantom as ph
from cmrecon.sim.signal import TISSUES, SequenceTiming, hard_pulse_shot_signals, sample_tissue_params

__all__ = ["LgeParams", "SimCase", "SimParamError", "Sampling", "sampling_pattern",
           "simulate_lge", "make_header", "key_repeat", "TICK_MS", "PARTIAL_FOURIER_CHOICES",
           "BREATHING_MODELS"]

#: Siemens/ISMRMRD time-stamp tick, ms.
TICK_MS = 2.5
#: Fine-grid points per pixel side of the band-limited object (phantom.bandlimited_fractions):
#: a 1 mm sub-pixel move then matches the Fourier shift of the object to ~2 % in the heart
#: (box-integrated pixels: 13 %, which no registration could undo).
BANDLIMIT_SUPERSAMPLE = 6
#: Respiratory motion models (:func:`_motion`).
BREATHING_MODELS = ("end_expiration", "two_sided")
#: Allowed partial-Fourier fractions along PE.
PARTIAL_FOURIER_CHOICES = (1.0, 7.0 / 8.0, 6.0 / 8.0)


class SimParamError(CmreconError, ValueError):
    """An LGE simulation parameter out of range (the message names field and value)."""


@dataclass(frozen=True)
class LgeParams:
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

        if not 1 <= self.slices <= 64:
            raise bad("slices", "must be 1..64")
        if not 1 <= self.repeats <= 64:
            raise bad("repeats", "must be 1..64")
        if not 2 <= self.coils <= 64:
            raise bad("coils", "must be 2..64")
        if len(self.matrix) != 2 or any(int(m) != m or m < 16 or m % 2 for m in self.matrix):
            raise bad("matrix", "must be (readout, phase), even integers ≥ 16")
        if self.acceleration not in (1, 2, 3, 4):
            raise bad("acceleration", "must be 1, 2, 3 or 4")
        if self.acs_mode not in ("embedded", "separate"):
            raise bad("acs_mode", "must be 'embedded' or 'separate'")
        if self.acs_lines < 0 or self.acs_lines % 2 or self.acs_lines > self.matrix[1]:
            raise bad("acs_lines", "must be an even number between 0 and the phase matrix")
        if self.acceleration > 1 and self.acs_lines < 2:
            raise bad("acs_lines", "R > 1 needs calibration lines (≥ 2)")
        if not any(abs(self.partial_fourier - p) < 1e-6 for p in PARTIAL_FOURIER_CHOICES):
            raise bad("partial_fourier", "must be 1, 7/8 or 6/8")
        if self.readout_oversampling not in (1, 2):
            raise bad("readout_oversampling", "must be 1 or 2")
        if self.field_t not in (1.5, 3.0):
            raise bad("field_t", "must be 1.5 or 3.0")
        if not 30 <= self.heart_rate_bpm <= 150:
            raise bad("heart_rate_bpm", "must be 30..150")
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
        if not self.snr > 0:
            raise bad("snr", "must be > 0")
        if self.noise_readouts < 1:
            raise bad("noise_readouts", "must be ≥ 1")
        if len(self.fov_mm) != 2 or min(self.fov_mm) <= 0:
            raise bad("fov_mm", "must be two positive lengths (readout, phase)")

    @property
    def rr_ms(self) -> float:
        """R-R interval, ms."""
        return 60000.0 / self.heart_rate_bpm

    @property
    def n_ro_os(self) -> int:
        """Readout samples per line (oversampled)."""
        return self.matrix[0] * self.readout_oversampling

    @property
    def sample_time_us(self) -> float:
        """Dwell time per readout sample, µs."""
        return 1e6 / (self.bandwidth_hz_per_px * self.n_ro_os)

    def to_json(self) -> str:
        """Parameters as a JSON object string (stored in the header's userParameters)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Sampling:
    """Phase-encode lines of the protocol (indices into the full PE matrix).

    Attributes
    ----------
    centre : k-space centre line ``n_pe // 2``.
    first : first line inside the partial-Fourier range.
    imaging : lines used for imaging (every R-th through the centre).
    acs : calibration lines (empty for R = 1).
    shot : lines of each IR/PD shot, in acquisition (linear, ascending) order.
    acs_shot : lines of the separate ACS shot (empty unless acs_mode = "separate").
    """

    centre: int
    first: int
    imaging: tuple[int, ...]
    acs: tuple[int, ...]
    shot: tuple[int, ...]
    acs_shot: tuple[int, ...]


def sampling_pattern(n_pe: int, acceleration: int, acs_lines: int, acs_mode: str,
                     partial_fourier: float) -> Sampling:
    """Lines of an R-fold undersampled, partial-Fourier Cartesian acquisition with ACS.

    Parameters
    ----------
    n_pe : phase-encode matrix.
    acceleration : R; line k is an imaging line when ``(k − n_pe//2) % R == 0``.
    acs_lines : number of contiguous calibration lines centred on ``n_pe // 2``
        (``[c − acs/2, c + acs/2)``), clipped to the partial-Fourier range; unused for R = 1.
    acs_mode : "embedded" or "separate".
    partial_fourier : fraction of the PE lines acquired; the first ``n_pe − round(pf·n_pe)``
        lines are omitted.
    """
    c = n_pe // 2
    first = n_pe - int(round(partial_fourier * n_pe))
    imaging = tuple(k for k in range(first, n_pe) if (k - c) % acceleration == 0)
    acs: tuple[int, ...] = ()
    if acceleration > 1:
        acs = tuple(range(max(first, c - acs_lines // 2), min(n_pe, c - acs_lines // 2 + acs_lines)))
    if acs_mode == "embedded":
        shot, acs_shot = tuple(sorted(set(imaging) | set(acs))), ()
    else:
        shot, acs_shot = imaging, acs
    return Sampling(c, first, imaging, acs, shot, acs_shot)


@dataclass
class SimCase:
    """A simulated case: ISMRMRD header, acquisitions in scanner order, ground truth.

    Attributes
    ----------
    params : the LgeParams used.
    header_xml : ISMRMRD XML header.
    items : ismrmrd.Acquisition list (noise readouts, then per slice [separate ACS], then per
        repeat the IR and the PD heartbeat).
    truth : dict of numpy arrays, see ``docs/simulator.md`` (per-slice arrays have a leading
        slice axis; images are ``(RO, PE)`` at the reconstructed matrix).
    """

    params: LgeParams
    header_xml: str
    items: list
    truth: dict


# ----------------------------------------------------------------------------- header
def _slice_geometry(p: LgeParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit read/phase/slice directions (patient LPS) and per-slice centre positions (mm).

    A typical short-axis orientation: the slice normal points base → apex (patient left,
    anterior, inferior); slices are spaced ``thickness + 2`` mm along it, slice 0 basal.
    """
    n = np.array([0.6, -0.45, -0.65])
    n /= np.linalg.norm(n)
    r = np.cross(n, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    q = np.cross(n, r)
    spacing = p.slice_thickness_mm + 2.0
    centre = np.array([35.0, 10.0, 15.0])
    pos = centre[None, :] + (np.arange(p.slices) - (p.slices - 1) / 2)[:, None] * spacing * n[None, :]
    return r, q, n, pos


def make_header(p: LgeParams, sampling: Sampling, measurement_id: str | None = None) -> str:
    """ISMRMRD XML header of a case (ismrmrd.xsd classes).

    Encoded space ``(os·n_ro, n_pe, 1)`` over ``(os·fov_ro, fov_pe, thickness)``; recon space
    ``(n_ro, n_pe, 1)``; ``kspace_encoding_step_1`` limits (first sampled line, n_pe − 1,
    n_pe // 2); set 0..1 (IR, PD); average 0..repeats−1; slice 0..slices−1.
    """
    n_ro, n_pe = p.matrix
    os_ = p.readout_oversampling
    h = xsd.ismrmrdHeader(experimentalConditions=xsd.experimentalConditionsType(
        H1resonanceFrequency_Hz=int(round(42.577478e6 * p.field_t))))
    h.version = schema_version()  # what a Gadgetron on the same ISMRMRD release expects
    h.measurementInformation = xsd.measurementInformationType(
        measurementID=measurement_id or f"cmrecon_sim_{p.seed}",
        patientPosition=xsd.patientPositionType.HFS,
        protocolName="cmrecon_sim_lge_psir",
        sequenceName="tfi_psir",
        seriesDescription="simulated free-breathing single-shot bSSFP PSIR LGE (IR set 0, PD set 1)")
    h.acquisitionSystemInformation = xsd.acquisitionSystemInformationType(
        systemVendor="cmrecon", systemModel="simulator", systemFieldStrength_T=float(p.field_t),
        relativeReceiverNoiseBandwidth=1.0, receiverChannels=int(p.coils))
    def lim(lo: int, hi: int, c: int) -> xsd.limitType:
        return xsd.limitType(minimum=lo, maximum=hi, center=c)

    mode = {"embedded": xsd.calibrationModeType.EMBEDDED,
            "separate": xsd.calibrationModeType.SEPARATE}[p.acs_mode]
    enc = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=n_ro * os_, y=n_pe, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=p.fov_mm[0] * os_, y=p.fov_mm[1], z=p.slice_thickness_mm)),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=n_ro, y=n_pe, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=p.fov_mm[0], y=p.fov_mm[1], z=p.slice_thickness_mm)),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_0=lim(0, n_ro * os_ - 1, n_ro * os_ // 2),
            kspace_encoding_step_1=lim(min(sampling.shot + sampling.acs_shot), n_pe - 1, sampling.centre),
            kspace_encoding_step_2=lim(0, 0, 0),
            average=lim(0, p.repeats - 1 if p.repeat_counter == "average" else 0, 0),
            slice=lim(0, p.slices - 1, 0), contrast=lim(0, 0, 0), phase=lim(0, 0, 0),
            repetition=lim(0, p.repeats - 1 if p.repeat_counter == "repetition" else 0, 0),
            set=lim(0, 1, 0), segment=lim(0, 0, 0)),
        trajectory=xsd.trajectoryType.CARTESIAN,
        parallelImaging=xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=p.acceleration,
                                                          kspace_encoding_step_2=1),
            calibrationMode=mode if p.acceleration > 1 else xsd.calibrationModeType.OTHER))
    enc.echoTrainLength = len(sampling.shot)
    h.encoding.append(enc)
    h.sequenceParameters = xsd.sequenceParametersType(
        TR=[p.tr_ms], TE=[p.tr_ms / 2], TI=[p.ti_ms],
        flipAngle_deg=[p.flip_ir_deg, p.flip_pd_deg], sequence_type="TrueFISP",
        echo_spacing=[p.tr_ms])
    up = xsd.userParametersType()
    up.userParameterDouble.append(xsd.userParameterDoubleType(name="RR_ms", value=p.rr_ms))
    up.userParameterDouble.append(xsd.userParameterDoubleType(name="partial_fourier", value=p.partial_fourier))
    up.userParameterDouble.append(xsd.userParameterDoubleType(name="snr_pd_blood", value=p.snr))
    up.userParameterLong.append(xsd.userParameterLongType(name="readout_oversampling", value=p.readout_oversampling))
    up.userParameterLong.append(xsd.userParameterLongType(name="seed", value=p.seed))
    up.userParameterString.append(xsd.userParameterStringType(name="repeat_counter", value=p.repeat_counter))
    up.userParameterString.append(xsd.userParameterStringType(name="set_meaning", value="0=IR,1=PD"))
    up.userParameterString.append(xsd.userParameterStringType(name="cmrecon_sim_params", value=p.to_json()))
    h.userParameters = up
    return xsd.ToXML(h)


# ----------------------------------------------------------------------------- helpers
def _class_fractions(label_fractions: np.ndarray) -> np.ndarray:
    """(N_LABELS, RO, PE) label fractions → (n_tissues, RO, PE) tissue-class fractions."""
    out = np.zeros((len(TISSUES),) + label_fractions.shape[1:], np.float32)
    for lab, t in enumerate(ph.LABEL_TO_TISSUE):
        if t >= 0:
            out[t] += label_fractions[lab]
    return out


def line_signals(sig_shot: np.ndarray, shot: tuple[int, ...], n_pe: int) -> np.ndarray:
    """Per-tissue signal for every PE line of the full matrix from the shot's readouts.

    Acquired lines get their own readout's signal exactly; lines skipped by acceleration get
    the signal linearly interpolated in shot position between their neighbours (the time they
    would have been read); lines outside the shot (partial Fourier) get the nearest readout's.

    Parameters
    ----------
    sig_shot : (T, n_shot) signals in shot order.
    shot : (n_shot,) ascending PE line indices.
    n_pe : PE matrix.

    Returns
    -------
    (T, n_pe) float64
    """
    pos = np.interp(np.arange(n_pe), np.asarray(shot, float), np.arange(len(shot), dtype=float))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(shot) - 1)
    w = pos - lo
    return sig_shot[:, lo] * (1 - w) + sig_shot[:, hi] * w


def _motion(rng: np.random.Generator, p: LgeParams, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Respiratory displacements of the heart (repeats, 2 sets, 2 axes (x=RO, y=PE)) in mm.

    Mostly along one in-plane direction (within ±20° of the PE axis, fixed per slice).

    ``end_expiration`` (default): each IR heartbeat falls at a uniformly random phase ``u`` of
    the breathing cycle, whose excursion from end-expiration is ``a·cos⁶(πu)`` (Lujan et al.
    1999: the cos^2n model, n = 3, dwells at end-expiration): half of the heartbeats sit
    within 20 % of ``a`` of it, a third within 10 %; with probability 0.08 a breath is
    deeper, ``a·U(1.5, 2.5)``. The
    end-expiratory position itself varies by ``N(0, 0.05·a)`` along the main direction and
    ``N(0, 0.1·a)`` across it. The PD heartbeat (the next RR) is displaced from its IR by a
    further ``N(0, 0.1·a)`` per axis.

    ``two_sided`` (the earlier model): ``a·|N(1, 0.53)|`` with a random sign, ×2.5 for a deep
    breath (p = 0.08), ``N(0, 0.25·a)`` across, PD ``N(0, 0.1·a)`` from its IR: no repeat at 0.

    References
    ----------
    Lujan AE, Larsen EW, Balter JM, Ten Haken RK. A method for incorporating organ motion due
    to breathing into 3D dose calculations. Med Phys 1999;26:715-720.
    """
    a = p.resp_amplitude_mm
    beta = np.deg2rad(90.0 + rng.normal(0.0, 20.0))
    main = np.array([np.cos(beta), np.sin(beta)])
    perp = np.array([-main[1], main[0]])
    out = np.zeros((p.repeats, 2, 2))
    for n in range(p.repeats):
        if p.breathing == "two_sided":
            mag = a * abs(rng.normal(1.0, 0.53)) * rng.choice([-1.0, 1.0])
            if rng.uniform() < 0.08:
                mag *= 2.5
            d = mag * main + rng.normal(0.0, 0.25 * a) * perp
        else:
            mag = a * np.cos(np.pi * rng.uniform()) ** 6
            if rng.uniform() < 0.08:
                mag = a * rng.uniform(1.5, 2.5)
            d = (mag + rng.normal(0.0, 0.05 * a)) * main + rng.normal(0.0, 0.1 * a) * perp
        out[n, 0] = d
        out[n, 1] = d + rng.normal(0.0, 0.1 * a, 2)
    return out


def key_repeat(displacements_mm: np.ndarray) -> int:
    """The medoid repeat of the IR displacements: ``argmin_m median_n ||d_m − d_n||``.

    The truth frame: the noise-free counterpart of the key frame a reconstruction picks from
    its images (:func:`cmrecon.recon.moco.key_frame`, the same criterion on images).

    Parameters
    ----------
    displacements_mm : (repeats, 2) float
        IR heartbeat displacement of each repeat, mm.

    Returns
    -------
    int
    """
    d = np.asarray(displacements_mm, dtype=np.float64)
    dist = np.sqrt(((d[:, None, :] - d[None, :, :]) ** 2).sum(axis=-1))
    return int(np.argmin(np.median(dist, axis=1)))


def mix_coils(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``matrix @ x`` over the coil axis, bit-identical on every CPU.

    A BLAS ``gemm`` picks its kernel (and so its summation order and float rounding) by CPU
    model, so ``Ψ^½ z`` or ``W s`` differ in the last bits between machines and a recorded
    stream could not be reproduced bit for bit elsewhere. Here every product and sum is a
    separate elementwise float64 ufunc on real and imaginary parts, in a fixed order (no
    reduction, no fused multiply–add), which IEEE 754 makes exact to reproduce.

    Parameters
    ----------
    matrix : (C_out, C_in) complex
    x : (C_in, ...) complex

    Returns
    -------
    (C_out, ...) complex128
    """
    m = np.asarray(matrix, np.complex128)
    x = np.asarray(x)
    if m.ndim != 2 or x.shape[0] != m.shape[1]:
        raise ValueError(f"mix_coils: matrix {m.shape} does not apply to x {x.shape}")
    xr = np.ascontiguousarray(x.real, np.float64)
    xi = np.ascontiguousarray(x.imag, np.float64)
    out_r = np.zeros((m.shape[0], *x.shape[1:]), np.float64)
    out_i = np.zeros_like(out_r)
    tmp = np.empty(x.shape[1:], np.float64)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            a, b = m[i, j].real, m[i, j].imag
            if a:
                out_r[i] += np.multiply(a, xr[j], out=tmp)
                out_i[i] += np.multiply(a, xi[j], out=tmp)
            if b:
                out_r[i] -= np.multiply(b, xi[j], out=tmp)
                out_i[i] += np.multiply(b, xr[j], out=tmp)
    return out_r + 1j * out_i


def _kspace_lines(obj_t: np.ndarray, sens_phase: np.ndarray, weights: np.ndarray, lines: np.ndarray,
                  n_ro_os: int) -> np.ndarray:
    """Noise-free k-space of the chosen lines: Σ_t w_t(ky) · F[C_c e^{iφ} pad(ρ_t)](kx, ky).

    Parameters
    ----------
    obj_t : (T, n_ro, n_pe) float32 tissue objects (PD × fraction).
    sens_phase : (coils, n_ro_os, n_pe) complex64, C_c·e^{iφ_b} on the oversampled grid.
    weights : (T, n_lines) signal of each tissue on each requested line.
    lines : (n_lines,) PE indices.
    n_ro_os : oversampled readout length.

    Returns
    -------
    (coils, n_ro_os, n_lines) complex64
    """
    n_t, n_ro, n_pe = obj_t.shape
    start = (n_ro_os - n_ro) // 2
    keep = np.flatnonzero(obj_t.reshape(n_t, -1).any(axis=1))
    out = np.zeros((sens_phase.shape[0], n_ro_os, lines.size), np.complex64)
    w = weights[keep].astype(np.complex64)
    for c in range(sens_phase.shape[0]):
        img = np.zeros((keep.size, n_ro_os, n_pe), np.complex64)
        img[:, start:start + n_ro] = obj_t[keep] * sens_phase[c, start:start + n_ro]
        k = fft2c(img)[:, :, lines]                          # (T', n_ro_os, n_lines)
        out[c] = np.einsum("tl,trl->rl", w, k)
    return out


def _centre_crop(img: np.ndarray, n_ro: int) -> np.ndarray:
    start = (img.shape[-2] - n_ro) // 2
    return img[..., start:start + n_ro, :]


# ----------------------------------------------------------------------------- main
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
    from cmrecon.recon.psir_head import psirnet_head  # lazy: torch import only when needed

    p = params
    rng = np.random.default_rng(p.seed)
    n_ro, n_pe = p.matrix
    os_ = p.readout_oversampling
    n_ro_os = p.n_ro_os
    pixel_mm = (p.fov_mm[0] / n_ro, p.fov_mm[1] / n_pe)
    fov_os = (p.fov_mm[0] * os_, p.fov_mm[1])
    smp = sampling_pattern(n_pe, p.acceleration, p.acs_lines, p.acs_mode, p.partial_fourier)
    rr = p.rr_ms
    shot = np.array(smp.shot)
    ci = int(np.searchsorted(shot, smp.centre))
    try:
        timing = SequenceTiming(rr_ms=rr, ti_ms=p.ti_ms, tr_ms=p.tr_ms, n_lines=len(shot),
                                centre_index=ci, alpha_ir_deg=p.flip_ir_deg, alpha_pd_deg=p.flip_pd_deg)
    except ValueError as exc:
        raise SimParamError(f"LgeParams.ti_ms = {p.ti_ms}, heart_rate_bpm = {p.heart_rate_bpm}: "
                            f"timing does not fit: {exc}") from exc
    # readout centre after the R wave: mid-diastole, the shot must end 15 ms before the next R
    after = (len(shot) - ci) * p.tr_ms
    td_centre = min(0.72 * rr, rr - after - 15.0)
    if td_centre - p.ti_ms < 10.0 or td_centre - ci * p.tr_ms < 30.0:
        raise SimParamError(f"LgeParams.ti_ms = {p.ti_ms} with a {len(shot)}-line shot does not fit in "
                            f"RR {rr:.0f} ms (heart_rate_bpm = {p.heart_rate_bpm})")

    # subject-level draws: tissues, body, coil array, noise covariance
    tissues = sample_tissue_params(rng, p.field_t)
    t1, t2, pd_t = tissues.t1_ms, tissues.t2_ms, tissues.pd
    s_ir_shot, s_pd_shot = hard_pulse_shot_signals(t1, t2, timing)
    w_ir_full = line_signals(s_ir_shot, smp.shot, n_pe)
    w_pd_full = line_signals(s_pd_shot, smp.shot, n_pe)
    if smp.acs_shot:
        acs_arr = np.array(smp.acs_shot)
        _, s_acs = hard_pulse_shot_signals(t1, t2, timing, n_lines_pd=len(acs_arr),
                                           centre_index_pd=int(np.searchsorted(acs_arr, smp.centre)))
    subject = ph.random_anatomy(rng, p.fov_mm, 0.5)
    array = coil_mod.random_coil_array(rng, p.coils, (subject.body.a, subject.body.b), subject.rotation_deg)
    psi = coil_mod.random_noise_covariance(rng, array.centres)
    whiten = prewhitening_matrix(psi)                      # (C, C) complex64, W Ψ W^H = I
    chol = np.linalg.cholesky(psi)
    r_dir, q_dir, n_dir, positions = _slice_geometry(p)
    spacing = p.slice_thickness_mm + 2.0
    k_moco = max(1, math.ceil(p.repeats / 2))

    header = make_header(p, smp)
    items: list[ismrmrd.Acquisition] = []
    counter = [0]

    def new_acq(data: np.ndarray, t_ms: float, phys_ms: float) -> ismrmrd.Acquisition:
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, np.complex64))
        counter[0] += 1
        acq.scan_counter = counter[0]
        acq.measurement_uid = int(p.seed) & 0xFFFFFFFF
        acq.acquisition_time_stamp = int(round(t_ms / TICK_MS))
        acq.physiology_time_stamp[0] = int(round(phys_ms / TICK_MS))
        acq.available_channels = p.coils
        acq.center_sample = n_ro_os // 2
        acq.sample_time_us = p.sample_time_us
        acq.discard_pre = 0
        acq.discard_post = 0
        return acq

    # noise scan: same Ψ, same dwell time, before the imaging
    noise = mix_coils(chol, (rng.standard_normal((p.coils, p.noise_readouts * n_ro_os))
                             + 1j * rng.standard_normal((p.coils, p.noise_readouts * n_ro_os)))
                      / np.sqrt(2))
    noise = noise.reshape(p.coils, p.noise_readouts, n_ro_os)
    t_now = 100.0
    for i in range(p.noise_readouts):
        acq = new_acq(noise[:, i], t_now, 0.0)
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        acq.read_dir[:] = r_dir
        acq.phase_dir[:] = q_dir
        acq.slice_dir[:] = n_dir
        items.append(acq)
        t_now += n_ro_os * p.sample_time_us / 1000.0 + 1.0
    t_beat = np.ceil((t_now + 500.0) / rr) * rr            # first R wave after the noise scan

    truth_keys = ("labels", "ir", "pd", "coil_maps", "background_phase", "psir_ratio",
                  "psir_target", "heart_mask", "body_mask", "motion_mm", "snr_scale", "key_repeat",
                  "chest_wall_fraction")
    per_slice: dict[str, list] = {k: [] for k in truth_keys}
    x_os, y_os = ph.pixel_coordinates((n_ro_os, n_pe), fov_os)
    acs_set = set(smp.acs)
    img_set = set(smp.imaging)
    last_item = None

    for s in range(p.slices):
        if progress is not None:
            progress(f"simulate lge: slice {s + 1}/{p.slices} ({p.repeats} repeats, {p.coils} coils, "
                     f"{n_ro_os}x{n_pe})")
        sp = 0.15 + 0.7 * s / max(p.slices - 1, 1) if p.slices > 1 else 0.5
        an = ph.random_anatomy(rng, p.fov_mm, sp)
        an = dataclasses.replace(an, rotation_deg=subject.rotation_deg, body=subject.body,
                                 body_inner=subject.body_inner, thorax=subject.thorax,
                                 lungs=subject.lungs, aorta=subject.aorta)
        z_off = (s - (p.slices - 1) / 2) * spacing
        arr_s = dataclasses.replace(array, centres=array.centres - np.array([0.0, 0.0, z_off]))
        sens = coil_mod.coil_maps_on_grid(arr_s, (n_ro_os, n_pe), fov_os, step=2)
        labels0, lfrac0 = ph.rasterize(an, p.matrix, p.fov_mm)
        body = ph.body_mask(labels0)
        body_os = np.zeros((n_ro_os, n_pe), bool)
        body_os[(n_ro_os - n_ro) // 2:(n_ro_os + n_ro) // 2] = body
        sens = coil_mod.extend_outside(coil_mod.normalise_sensitivities(sens, body_os), body_os)
        phi = coil_mod.background_phase(rng, x_os, y_os, max(fov_os))
        sens_phase = (sens * np.exp(1j * phi)).astype(np.complex64)
        # true maps after prewhitening, RSS-normalised (what a recon combines prewhitened data with)
        sens_w = mix_coils(whiten, sens)
        rss_w = np.sqrt(np.sum(np.abs(sens_w) ** 2, axis=0))
        maps_w = (sens_w / np.maximum(rss_w, 1e-12)).astype(np.complex64)
        motion = _motion(rng, p, pixel_mm)
        wall = float(rng.uniform(*p.chest_wall_fraction))
        key = key_repeat(motion[:, 0])

        def fractions_at(shift: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
            """Labels and box partial-volume fractions (masks) with the heart moved by ``shift`` mm."""
            if shift is None or not np.any(shift):
                return labels0, lfrac0
            return ph.rasterize(an, p.matrix, p.fov_mm, shift_mm=tuple(shift),
                                outer_shift_mm=tuple(wall * shift))

        def object_at(shift: np.ndarray | None) -> np.ndarray:
            """(tissues, RO, PE) object as the scanner sees it (band-limited to the matrix)."""
            d = np.zeros(2) if shift is None else np.asarray(shift, float)
            lf = ph.bandlimited_fractions(an, p.matrix, p.fov_mm, shift_mm=tuple(d),
                                          outer_shift_mm=tuple(wall * d), supersample=BANDLIMIT_SUPERSAMPLE)
            return _class_fractions(lf) * pd_t[:, None, None].astype(np.float32)

        # noise-free truth in the key repeat's frame (the frame every chain outputs in) at unit
        # scale, then scaled to the requested SNR
        labels_k, lfrac_k = fractions_at(motion[key, 0])
        body_k = ph.body_mask(labels_k)
        obj0 = object_at(motion[key, 0])
        all_lines = np.arange(n_pe)

        def combined(ksp: np.ndarray) -> np.ndarray:
            img = _centre_crop(ifft2c(mix_coils(whiten, ksp)), n_ro)
            return np.sum(np.conj(_centre_crop(maps_w, n_ro)) * img, axis=0)

        ir0 = combined(_kspace_lines(obj0, sens_phase, w_ir_full, all_lines, n_ro_os))
        pd0 = combined(_kspace_lines(obj0, sens_phase, w_pd_full, all_lines, n_ro_os))
        pure = lfrac_k[ph.LV_BLOOD] > 0.999
        if not pure.any():
            pure = labels_k == ph.LV_BLOOD
        scale = p.snr / float(np.mean(np.abs(pd0[pure])))
        ir_truth = (ir0 * scale).astype(np.complex64)
        pd_truth = (pd0 * scale).astype(np.complex64)
        cf0 = obj0.astype(np.float64)
        num = np.tensordot(s_ir_shot[:, ci], cf0, axes=1)
        den = np.tensordot(s_pd_shot[:, ci], cf0, axes=1)
        ratio = np.where(body_k & (den > 1e-6), num / np.where(den > 1e-6, den, 1.0), 0.0)
        root_k = np.float32(np.sqrt(k_moco))
        target = psirnet_head(ir_truth * root_k, pd_truth * root_k)
        per_slice["labels"].append(labels_k)
        per_slice["ir"].append(ir_truth)
        per_slice["pd"].append(pd_truth)
        per_slice["coil_maps"].append(_centre_crop(maps_w, n_ro))
        per_slice["background_phase"].append(_centre_crop(phi, n_ro))
        per_slice["psir_ratio"].append(ratio.astype(np.float32))
        per_slice["psir_target"].append(np.asarray(target, np.float32))
        per_slice["heart_mask"].append(ph.heart_mask(labels_k, pixel_mm))
        per_slice["body_mask"].append(body_k)
        per_slice["motion_mm"].append(motion.astype(np.float32))
        per_slice["key_repeat"].append(key)
        per_slice["chest_wall_fraction"].append(wall)
        per_slice["snr_scale"].append(scale)

        def beat(lines: np.ndarray, weights: np.ndarray, shift: np.ndarray | None, set_: int,
                 avg: int, acs_only: bool) -> None:
            """Append one heartbeat's readouts (noise-free signal + noise) to ``items``."""
            nonlocal t_beat, last_item
            obj = obj0 if shift is not None and np.array_equal(shift, motion[key, 0]) else object_at(shift)
            ksp = _kspace_lines(obj, sens_phase, weights, lines, n_ro_os) * np.complex64(scale)
            if p.add_noise:
                z = (rng.standard_normal(ksp.shape) + 1j * rng.standard_normal(ksp.shape)) / np.sqrt(2)
                ksp = ksp + mix_coils(chol, z).astype(np.complex64)
            c_idx = int(np.searchsorted(lines, smp.centre)) if smp.centre in lines else len(lines) // 2
            for k, line in enumerate(lines):
                phys = td_centre + (k - c_idx) * p.tr_ms
                acq = new_acq(ksp[:, :, k], t_beat + phys, phys)
                acq.idx.kspace_encode_step_1 = int(line)
                acq.idx.set = set_
                setattr(acq.idx, p.repeat_counter, avg)
                acq.idx.slice = s
                if acs_only or (line in acs_set and line not in img_set):
                    acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
                elif line in acs_set:
                    acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
                if k == 0:
                    acq.set_flag(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1)
                    if not acs_only:
                        acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
                if k == len(lines) - 1:
                    acq.set_flag(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1)
                    if not acs_only:
                        acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
                acq.position[:] = positions[s]
                acq.read_dir[:] = r_dir
                acq.phase_dir[:] = q_dir
                acq.slice_dir[:] = n_dir
                acq.user_float[0] = p.ti_ms
                items.append(acq)
                last_item = acq
            t_beat += rr

        if smp.acs_shot:
            acs_lines = np.array(smp.acs_shot)
            for set_ in (0, 1):
                beat(acs_lines, s_acs, None, set_, 0, acs_only=True)
        for n in range(p.repeats):
            beat(shot, s_ir_shot, motion[n, 0], 0, n, acs_only=False)
            beat(shot, s_pd_shot, motion[n, 1], 1, n, acs_only=False)
        t_beat += 2 * rr                                       # pause between slices

    if last_item is not None:
        last_item.set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)

    truth: dict[str, np.ndarray] = {k: np.stack(v) for k, v in per_slice.items()}
    truth["motion_px"] = (truth["motion_mm"] / np.array(pixel_mm, np.float32)).astype(np.float32)
    line_mask = np.zeros(n_pe, bool)
    line_mask[list(smp.imaging)] = True
    acs_mask = np.zeros(n_pe, bool)
    acs_mask[list(smp.acs)] = True
    truth.update({
        "psi": psi.astype(np.complex128),
        "imaging_lines": line_mask,
        "acs_lines": acs_mask,
        "shot_lines": shot.astype(np.int32),
        "signal_ir": s_ir_shot.astype(np.float32),
        "signal_pd": s_pd_shot.astype(np.float32),
        "tissue_names": np.array(TISSUES),
        "label_names": np.array(ph.LABEL_NAMES),
        "tissue_t1_ms": t1.astype(np.float32),
        "tissue_t2_ms": t2.astype(np.float32),
        "tissue_pd": pd_t.astype(np.float32),
        "pixel_mm": np.array(pixel_mm, np.float32),
        "target_scale": np.float32(np.sqrt(k_moco)),
        "params_json": np.array(p.to_json()),
    })
    truth["snr_scale"] = truth["snr_scale"].astype(np.float64)
    return SimCase(params=p, header_xml=header, items=items, truth=truth)
