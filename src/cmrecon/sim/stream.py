"""The simulated scanner's raw stream: noise and heartbeat readouts as ISMRMRD acquisitions."""

from __future__ import annotations

from typing import Any

import ismrmrd
import numpy as np

from cmrecon.io.mrdfile import make_acquisition
from cmrecon.sim.sampling import Sampling

#: Siemens/ISMRMRD time-stamp tick, ms.
TICK_MS = 2.5


def noise_readouts(noise: np.ndarray, t0_ms: float, head: dict[str, Any]
                   ) -> tuple[list[ismrmrd.Acquisition], float]:
    """Noise-only readouts, each 1 ms after the end of the previous one.

    Parameters
    ----------
    noise : (coils, readouts, samples) complex, the noise scan.
    t0_ms : time of the first readout, ms.
    head : header fields every readout carries (``sample_time_us``, directions...).

    Returns
    -------
    The acquisitions (flag ``ACQ_IS_NOISE_MEASUREMENT``) and the time after the last, ms.
    """
    out, t = [], t0_ms
    for i in range(noise.shape[1]):
        out.append(make_acquisition(noise[:, i], [ismrmrd.ACQ_IS_NOISE_MEASUREMENT],
                                    acquisition_time_stamp=int(round(t / TICK_MS)), **head))
        t += noise.shape[2] * head["sample_time_us"] / 1000.0 + 1.0
    return out, t


def heartbeat_readouts(kspace: np.ndarray, lines: np.ndarray, sampling: Sampling, t_rwave_ms: float,
                       td_centre_ms: float, tr_ms: float, idx: dict[str, int], head: dict[str, Any],
                       calibration_only: bool = False) -> list[ismrmrd.Acquisition]:
    """One heartbeat's single-shot readouts, one every ``tr_ms``, the centre line at ``td_centre_ms``.

    Parameters
    ----------
    kspace : (coils, samples, n_lines) complex, the lines in reading order.
    lines : (n_lines,) ascending phase-encode lines.
    sampling : the protocol's lines (which are calibration, which imaging).
    t_rwave_ms : time of this heartbeat's R wave, ms.
    td_centre_ms : trigger delay of the centre line (or of the middle readout), ms.
    tr_ms : readout spacing, ms.
    idx : encoding counters of the shot (``set``, ``slice``, the repeat counter).
    head : header fields every readout carries.
    calibration_only : a separate ACS shot: every line flagged ``ACQ_IS_PARALLEL_CALIBRATION``,
        no first/last-in-slice flags.
    """
    c = int(np.searchsorted(lines, sampling.centre)) if sampling.centre in lines else len(lines) // 2
    acs, imaging = set(sampling.acs), set(sampling.imaging)
    out = []
    for k, line in enumerate(lines):
        flags = []
        if calibration_only or (line in acs and line not in imaging):
            flags.append(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        elif line in acs:
            flags.append(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        if k == 0:
            flags += [ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1] + [ismrmrd.ACQ_FIRST_IN_SLICE] * (not calibration_only)
        if k == len(lines) - 1:
            flags += [ismrmrd.ACQ_LAST_IN_ENCODE_STEP1] + [ismrmrd.ACQ_LAST_IN_SLICE] * (not calibration_only)
        phys = td_centre_ms + (k - c) * tr_ms
        out.append(make_acquisition(kspace[:, :, k], flags, dict(idx, kspace_encode_step_1=int(line)),
                                    acquisition_time_stamp=int(round((t_rwave_ms + phys) / TICK_MS)),
                                    physiology_time_stamp=[int(round(phys / TICK_MS))], **head))
    return out
