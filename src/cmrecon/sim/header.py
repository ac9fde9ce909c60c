"""ISMRMRD XML headers and slice geometry of the simulated LGE and cine protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING

import ismrmrd.xsd as xsd
import numpy as np

from cmrecon.io.header import schema_version
from cmrecon.sim.sampling import Sampling

if TYPE_CHECKING:
    from cmrecon.sim.cine import CineParams
    from cmrecon.sim.lge import LgeParams


def slice_geometry(p: LgeParams | CineParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit read/phase/slice directions (patient LPS) and per-slice centre positions (mm).

    A typical short-axis orientation: the slice normal points base → apex (patient left,
    anterior, inferior); slices are spaced ``thickness + 2`` mm along it, slice 0 basal.

    Returns
    -------
    read_dir, phase_dir, slice_dir : (3,) float64
    positions : (slices, 3) float64, mm
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


def _limit(lo: int, hi: int, c: int) -> xsd.limitType:
    return xsd.limitType(minimum=lo, maximum=hi, center=c)


def _base_header(p, measurement_id: str, protocol: str, sequence: str, description: str) -> xsd.ismrmrdHeader:
    """The header fields both simulators fill alike: field strength, schema version, measurement, system."""
    h = xsd.ismrmrdHeader(experimentalConditions=xsd.experimentalConditionsType(
        H1resonanceFrequency_Hz=int(round(42.577478e6 * p.field_t))))
    h.version = schema_version()  # what a Gadgetron on the same ISMRMRD release expects
    h.measurementInformation = xsd.measurementInformationType(
        measurementID=measurement_id, patientPosition=xsd.patientPositionType.HFS,
        protocolName=protocol, sequenceName=sequence, seriesDescription=description)
    h.acquisitionSystemInformation = xsd.acquisitionSystemInformationType(
        systemVendor="cmrecon", systemModel="simulator", systemFieldStrength_T=float(p.field_t),
        relativeReceiverNoiseBandwidth=1.0, receiverChannels=int(p.coils))
    return h


def make_header(p: LgeParams, sampling: Sampling) -> str:
    """ISMRMRD XML header of a case (ismrmrd.xsd classes).

    Encoded space ``(os·n_ro, n_pe, 1)`` over ``(os·fov_ro, fov_pe, thickness)``; recon space
    ``(n_ro, n_pe, 1)``; ``kspace_encoding_step_1`` limits (first sampled line, n_pe − 1,
    n_pe // 2); set 0..1 (IR, PD); average 0..repeats−1; slice 0..slices−1.
    """
    n_ro, n_pe = p.matrix
    os_ = p.readout_oversampling
    h = _base_header(p, f"cmrecon_sim_{p.seed}", "cmrecon_sim_lge_psir", "tfi_psir",
                     "simulated free-breathing single-shot bSSFP PSIR LGE (IR set 0, PD set 1)")

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
            kspace_encoding_step_0=_limit(0, n_ro * os_ - 1, n_ro * os_ // 2),
            kspace_encoding_step_1=_limit(min(sampling.shot + sampling.acs_shot), n_pe - 1, sampling.centre),
            kspace_encoding_step_2=_limit(0, 0, 0),
            average=_limit(0, p.repeats - 1 if p.repeat_counter == "average" else 0, 0),
            slice=_limit(0, p.slices - 1, 0), contrast=_limit(0, 0, 0), phase=_limit(0, 0, 0),
            repetition=_limit(0, p.repeats - 1 if p.repeat_counter == "repetition" else 0, 0),
            set=_limit(0, 1, 0), segment=_limit(0, 0, 0)),
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
    for name, value in (("RR_ms", p.rr_ms), ("partial_fourier", p.partial_fourier), ("snr_pd_blood", p.snr)):
        up.userParameterDouble.append(xsd.userParameterDoubleType(name=name, value=value))
    for name, value in (("readout_oversampling", p.readout_oversampling), ("seed", p.seed)):
        up.userParameterLong.append(xsd.userParameterLongType(name=name, value=value))
    for name, value in (("repeat_counter", p.repeat_counter), ("set_meaning", "0=IR,1=PD"),
                        ("cmrecon_sim_params", p.to_json())):
        up.userParameterString.append(xsd.userParameterStringType(name=name, value=value))
    h.userParameters = up
    return xsd.ToXML(h)


def make_cine_header(p: CineParams, mask: np.ndarray) -> str:
    """ISMRMRD XML header of a simulated segmented bSSFP cine (ismrmrd.xsd classes).

    Encoded space ``(os·n_ro, n_pe, 1)`` over ``(os·fov_ro, fov_pe, thickness)``; recon space
    ``(n_ro, n_pe, 1)``; limits ``phase`` 0..phases−1, ``slice`` 0..slices−1,
    ``kspace_encoding_step_1`` (first sampled row, n_pe − 1, n_pe // 2); parallel imaging R with
    calibration mode ``embedded`` (equispaced), ``interleaved`` (kt) or ``other`` (R = 1);
    TR, TE = TR/2, flip angle, ``TrueFISP``; userParameters ``RR_ms``, ``lines_per_segment``,
    ``snr``, ``seed``, ``readout_oversampling``, ``sampling`` and ``cmrecon_sim_params`` (the
    CineParams as JSON).

    Parameters
    ----------
    p : CineParams.
    mask : (phases, n_pe) bool, the rows sampled in each phase (:func:`cine_masks`).
    """
    n_ro, n_pe = p.matrix
    os_ = p.readout_oversampling
    h = _base_header(p, f"cmrecon_sim_cine_{p.seed}", "cmrecon_sim_cine", "tfi_cine_segmented",
                     "simulated ECG-triggered segmented bSSFP short-axis cine")

    mode = {"equispaced": xsd.calibrationModeType.EMBEDDED,
            "kt_interleaved": xsd.calibrationModeType.INTERLEAVED}[p.sampling]
    first_row = int(np.flatnonzero(np.asarray(mask).any(axis=0))[0])
    enc = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=n_ro * os_, y=n_pe, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=p.fov_mm[0] * os_, y=p.fov_mm[1], z=p.slice_thickness_mm)),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=n_ro, y=n_pe, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=p.fov_mm[0], y=p.fov_mm[1], z=p.slice_thickness_mm)),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_0=_limit(0, n_ro * os_ - 1, n_ro * os_ // 2),
            kspace_encoding_step_1=_limit(first_row, n_pe - 1, n_pe // 2),
            kspace_encoding_step_2=_limit(0, 0, 0),
            average=_limit(0, 0, 0), slice=_limit(0, p.slices - 1, 0), contrast=_limit(0, 0, 0),
            phase=_limit(0, p.phases - 1, 0), repetition=_limit(0, 0, 0), set=_limit(0, 0, 0),
            segment=_limit(0, 0, 0)),
        trajectory=xsd.trajectoryType.CARTESIAN,
        parallelImaging=xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=p.acceleration,
                                                          kspace_encoding_step_2=1),
            calibrationMode=mode if p.acceleration > 1 else xsd.calibrationModeType.OTHER))
    enc.echoTrainLength = p.segment_lines
    h.encoding.append(enc)
    h.sequenceParameters = xsd.sequenceParametersType(
        TR=[p.tr_ms], TE=[p.tr_ms / 2], flipAngle_deg=[p.flip_deg], sequence_type="TrueFISP",
        echo_spacing=[p.tr_ms])
    up = xsd.userParametersType()
    for name, value in (("RR_ms", p.rr_ms), ("snr", p.snr)):
        up.userParameterDouble.append(xsd.userParameterDoubleType(name=name, value=value))
    for name, value in (("lines_per_segment", p.segment_lines), ("readout_oversampling", p.readout_oversampling),
                        ("seed", p.seed)):
        up.userParameterLong.append(xsd.userParameterLongType(name=name, value=value))
    for name, value in (("sampling", p.sampling), ("cmrecon_sim_params", p.to_json())):
        up.userParameterString.append(xsd.userParameterStringType(name=name, value=value))
    h.userParameters = up
    return xsd.ToXML(h)
