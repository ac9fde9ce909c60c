"""Which MRD acquisitions carry image data: the one list of flags the steps skip."""

from __future__ import annotations

import ismrmrd

#: Readouts that are not image data of the encoding (noise, navigators, phase correction,
#: dummy scans, real-time/hyperpolarised feedback).
NON_IMAGING_FLAGS = (ismrmrd.ACQ_IS_NOISE_MEASUREMENT, ismrmrd.ACQ_IS_NAVIGATION_DATA,
                     ismrmrd.ACQ_IS_PHASECORR_DATA, ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
                     ismrmrd.ACQ_IS_RTFEEDBACK_DATA, ismrmrd.ACQ_IS_HPFEEDBACK_DATA)


def is_non_imaging(acq: ismrmrd.Acquisition) -> bool:
    """Whether ``acq`` carries one of :data:`NON_IMAGING_FLAGS`."""
    return any(acq.is_flag_set(f) for f in NON_IMAGING_FLAGS)
