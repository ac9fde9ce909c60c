"""Which MRD acquisitions carry image data (the one list of flags the steps skip); header copies."""

from __future__ import annotations

import ismrmrd

#: Readouts that are not image data of the encoding (noise, navigators, phase correction,
#: dummy scans, real-time/hyperpolarised feedback).
NON_IMAGING_FLAGS = (ismrmrd.ACQ_IS_NOISE_MEASUREMENT, ismrmrd.ACQ_IS_NAVIGATION_DATA,
                     ismrmrd.ACQ_IS_PHASECORR_DATA, ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
                     ismrmrd.ACQ_IS_RTFEEDBACK_DATA, ismrmrd.ACQ_IS_HPFEEDBACK_DATA)


#: :data:`NON_IMAGING_FLAGS` as one bit mask (MRD flag ``f`` is bit ``f − 1``)
_NON_IMAGING_MASK = sum(1 << (f - 1) for f in NON_IMAGING_FLAGS)


def is_non_imaging(acq: ismrmrd.Acquisition) -> bool:
    """Whether ``acq`` carries one of :data:`NON_IMAGING_FLAGS` (one mask test per readout)."""
    return bool(acq.flags & _NON_IMAGING_MASK)


def head_copy(acq: ismrmrd.Acquisition) -> ismrmrd.AcquisitionHeader:
    """A copy of a readout's header: one ctypes buffer copy (0.3 us; ``getHead()`` deep-copies, 7 us).

    Reads ismrmrd's ``Acquisition._head``, as cmrecon.io.protocol does to encode a readout.
    """
    return ismrmrd.AcquisitionHeader.from_buffer_copy(acq._head)
