"""Which MRD acquisitions carry image data (the one list of flags the steps skip); header copies;
blocks of readouts for the per-readout steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import ismrmrd
import numpy as np

#: Readouts that are not image data of the encoding (noise, navigators, phase correction,
#: dummy scans, real-time/hyperpolarised feedback).
NON_IMAGING_FLAGS = (ismrmrd.ACQ_IS_NOISE_MEASUREMENT, ismrmrd.ACQ_IS_NAVIGATION_DATA,
                     ismrmrd.ACQ_IS_PHASECORR_DATA, ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
                     ismrmrd.ACQ_IS_RTFEEDBACK_DATA, ismrmrd.ACQ_IS_HPFEEDBACK_DATA)


def flag_mask(*flags: int) -> int:
    """MRD acquisition flags as one bit mask of ``AcquisitionHeader.flags`` (flag ``f`` is bit ``f − 1``)."""
    return sum(1 << (f - 1) for f in flags)


#: :data:`NON_IMAGING_FLAGS` as one bit mask
_NON_IMAGING_MASK = flag_mask(*NON_IMAGING_FLAGS)


def is_non_imaging(acq: ismrmrd.Acquisition) -> bool:
    """Whether ``acq`` carries one of :data:`NON_IMAGING_FLAGS` (one mask test per readout)."""
    return bool(acq.flags & _NON_IMAGING_MASK)


def head_copy(acq: ismrmrd.Acquisition | ismrmrd.AcquisitionHeader) -> ismrmrd.AcquisitionHeader:
    """A copy of a readout's header (given the readout or its header): one ctypes buffer copy
    (0.3 us; ``getHead()`` deep-copies, 7 us).

    Reads ismrmrd's ``Acquisition._head``, as cmrecon.io.protocol does to encode a readout.
    """
    return ismrmrd.AcquisitionHeader.from_buffer_copy(
        acq if isinstance(acq, ismrmrd.AcquisitionHeader) else acq._head)


#: flags after which a block is handed on at once: a step may complete an image on them
#: (ACQ_LAST_IN_AVERAGE … ACQ_LAST_IN_SEGMENT and ACQ_LAST_IN_MEASUREMENT)
_BLOCK_END_MASK = flag_mask(
    ismrmrd.ACQ_LAST_IN_AVERAGE, ismrmrd.ACQ_LAST_IN_SLICE, ismrmrd.ACQ_LAST_IN_CONTRAST,
    ismrmrd.ACQ_LAST_IN_PHASE, ismrmrd.ACQ_LAST_IN_REPETITION, ismrmrd.ACQ_LAST_IN_SET,
    ismrmrd.ACQ_LAST_IN_SEGMENT, ismrmrd.ACQ_LAST_IN_MEASUREMENT)

#: readouts per block: 16 readouts of 16 coils × 384 samples are 0.8 MB, which stay in cache
#: through the block's transforms (whole-slice blocks of 1344 readouts made the oversampling
#: removal 6x slower per readout than one at a time; 8-32 made it 1.6-2x faster)
BLOCK_READOUTS = 16


@dataclass(frozen=True)
class AcquisitionBlock:
    """Consecutive readouts of one shape as one array: how the per-readout steps batch their work.

    Steps that declare ``blocks=True`` (:func:`cmrecon.chain.registry.register`) get imaging
    readouts in blocks when the chain runs (:func:`pack_readouts`); to everything else, and
    at the chain's end, a block is the :class:`ismrmrd.Acquisition` items it holds
    (:meth:`acquisitions`), in their order. A step never modifies a block's headers or arrays:
    it hands on a new block (headers it changes are copies).

    Attributes
    ----------
    heads : tuple of ismrmrd.AcquisitionHeader, one per readout
    data : (n, coils, samples) complex64
    traj : (n, samples, trajectory_dimensions) float32 (``trajectory_dimensions`` 0 for Cartesian)
    """

    heads: tuple
    data: np.ndarray
    traj: np.ndarray

    def __len__(self) -> int:
        return len(self.heads)

    @classmethod
    def of(cls, acq: ismrmrd.Acquisition) -> "AcquisitionBlock":
        """One readout as a block of one (views of its arrays, its header shared)."""
        return cls((acq._head,), np.asarray(acq.data)[None], np.asarray(acq.traj)[None])

    def acquisitions(self) -> list[ismrmrd.Acquisition]:
        """The readouts as acquisitions: header copies, data and trajectory views of the block."""
        return [ismrmrd.Acquisition(head_copy(h), d, t)
                for h, d, t in zip(self.heads, self.data, self.traj)]


def pack_readouts(items: Iterable[Any], size: int = BLOCK_READOUTS) -> Iterator[Any]:
    """Items in order, runs of consecutive imaging readouts of one shape as :class:`AcquisitionBlock`.

    Packed: readouts without a trajectory and without :data:`NON_IMAGING_FLAGS` (noise scans
    and navigators pass as acquisitions, as do other items). A block is handed on when it holds
    ``size`` readouts, when the next item does not join it, after a readout carrying one of the
    ``ACQ_LAST_IN_*`` flags a step may complete an image on (slice, repetition, set, …), and at
    the end of the stream: at most ``size − 1`` readouts wait for their successors, and never
    past the end of an image.
    """
    heads: list = []
    datas: list = []
    shape = None

    def block() -> AcquisitionBlock:
        data = np.stack(datas)
        out = AcquisitionBlock(tuple(heads), data, np.zeros(data.shape[:1] + (data.shape[2], 0), np.float32))
        heads.clear()
        datas.clear()
        return out

    for item in items:
        if (not isinstance(item, ismrmrd.Acquisition) or item.flags & _NON_IMAGING_MASK
                or item.trajectory_dimensions):
            if heads:
                yield block()
            yield item
            continue
        data = np.asarray(item.data)
        if heads and (data.shape, data.dtype) != shape:
            yield block()
        shape = data.shape, data.dtype
        heads.append(item._head)
        datas.append(data)
        if len(heads) == size or item.flags & _BLOCK_END_MASK:
            yield block()
    if heads:
        yield block()


def unpack_readouts(items: Iterable[Any]) -> Iterator[Any]:
    """Items in order, every :class:`AcquisitionBlock` as the acquisitions it holds."""
    for item in items:
        if isinstance(item, AcquisitionBlock):
            yield from item.acquisitions()
        else:
            yield item
