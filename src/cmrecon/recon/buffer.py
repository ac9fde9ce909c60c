"""Streaming buffer of interleaved IR/PD LGE readouts: one :class:`IrPdKspace` per slice.

The LGE chains reconstruct one slice at a time from readouts of two interleaved heartbeats per
repeat: the inversion-recovery image (ISMRMRD ``set`` 0) and the proton-density reference
(``set`` 1), repeated ``N`` times (counter ``average`` and/or ``repetition``), plus
parallel-imaging calibration (ACS) lines. Arrays follow :mod:`cmrecon.axes`.

Release rule of :class:`IrPdBuffer` (explicit, see :meth:`IrPdBuffer.push`)
--------------------------------------------------------------------------
A slice is complete, and is released at once, when an ``ACQ_LAST_IN_SLICE`` readout has arrived
for both sets of each of the ``N`` expected repeats (``N`` from the header's encoding limits of
the repeat counter, or given). Calibration-only readouts never close anything. Anything still
open at the end of the stream is released by :meth:`IrPdBuffer.flush` (the only rule when ``N``
is unknown). Released slices are dropped from the buffer, so memory is bounded by the slices
open at one time (one for sequential multi-slice acquisitions).

References
----------
Kellman P, Arai AE, McVeigh ER, Aletras AH. MRM 2002;47:372-383 (PSIR, interleaved PD reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cmrecon.errors import StepError
from cmrecon.products.lge import Calibration, IrPdKspace, SliceInfo
from cmrecon.recon.budget import MemoryBudget
from cmrecon.recon.cartesian import kspace_row, place_readout

__all__ = ["IR_SET", "PD_SET", "Readout", "IrPdBuffer", "acs_block", "estimate_acceleration"]

#: ISMRMRD ``set`` counter of the inversion-recovery heartbeat.
IR_SET = 0
#: ISMRMRD ``set`` counter of the proton-density reference heartbeat.
PD_SET = 1


@dataclass(frozen=True)
class Readout:
    """One imaging or calibration readout, reduced to what the IR/PD buffer needs.

    Attributes
    ----------
    data : (coils, kx) complex64
        Prewhitened samples (readout oversampling removed or not: all readouts of a stream must
        have the same length).
    slice, set, repeat : int
        Encoding counters (``repeat`` is ``average`` or ``repetition``, as configured).
    line : int
        ``kspace_encode_step_1``.
    center_sample : int
        Sample index of k = 0 along the readout.
    calibration : bool
        ``ACQ_IS_PARALLEL_CALIBRATION`` or ``..._AND_IMAGING``: goes into the ACS block.
    imaging : bool
        Not calibration-only: goes into the image k-space.
    last_in_slice : bool
        ``ACQ_LAST_IN_SLICE``: the last readout of this (slice, set, repeat) image.
    ref : object
        Opaque header kept for the image headers (an ``ismrmrd.AcquisitionHeader`` in the
        gadget); the readout nearest the k-space centre of each (set, repeat) is kept.
    """

    data: np.ndarray
    slice: int
    set: int
    repeat: int
    line: int
    center_sample: int
    calibration: bool = False
    imaging: bool = True
    last_in_slice: bool = False
    ref: Any = None


class _OpenSlice:
    """Readouts of one slice collected so far (private to :class:`IrPdBuffer`)."""

    def __init__(self, coils: int, ky: int, kx: int, repeats: int | None) -> None:
        self.coils, self.ky, self.kx = coils, ky, kx
        # (set, repeat, c, ky, kx) when the repeat count is known: the heartbeats are released as
        # views of it (no copy); else each heartbeat is its own array, stacked at release
        self.heartbeats = None if repeats is None else np.zeros((2, repeats, coils, ky, kx), np.complex64)
        self.kspace: dict[tuple[int, int], np.ndarray] = {}      # (set, repeat) -> (c, ky, kx)
        self.rows: dict[tuple[int, int], np.ndarray] = {}        # (set, repeat) -> (ky,) bool
        self.acs_sum = np.zeros((2, coils, ky, kx), np.complex64)
        self.acs_count = np.zeros((2, ky), np.int32)
        self.closed: set[tuple[int, int]] = set()                # (set, repeat) with LAST_IN_SLICE
        self.refs: dict[tuple[int, int], tuple[int, Any]] = {}   # (set, repeat) -> (|Δline|, ref)
        self.calib: dict[tuple[int, int], dict[int, np.ndarray]] = {}  # (set, repeat) -> {row: (c, kx)}
        self.nbytes = 0                                           # taken from the budget


class IrPdBuffer:
    """Collect IR/PD readouts per slice and release each slice as an :class:`IrPdKspace`.

    ``push(readout)`` returns the list of slices that this readout completed (normally empty or
    one); ``flush()`` releases whatever is still open at the end of the stream. See the module
    docstring for the release rule.

    Parameters
    ----------
    matrix_ky : int
        Encoded phase-encode matrix (rows of the k-space).
    center_line : int
        Encode step of the k-space centre (header ``kspace_encoding_step_1.center``).
    recon_matrix : (x, y)
        Reconstructed matrix, carried to the slices.
    fov_mm : (x, y, z)
        Reconstructed FOV, mm, carried to the slices.
    expected_repeats : int or None
        ``N``: repeats per slice; None when unknown (slices are then released by ``flush``).
    acceleration : int or None
        R from the header; None to estimate it from the imaging rows.
    num_sets : int or None
        Number of sets the header declares; anything but 2 is an error.
    calibration_mode : str
        The header's calibration mode; ``embedded`` keeps each heartbeat's own calibration
        rows (:attr:`Calibration.per_repeat`).
    budget : MemoryBudget or None
        The session's memory budget (None: unlimited); each heartbeat's k-space is taken from
        it before it is allocated.

    Raises
    ------
    StepError
        ``num_sets`` not 2, or non-positive sizes.
    """

    def __init__(self, matrix_ky: int, center_line: int, recon_matrix: tuple[int, int],
                 fov_mm: tuple[float, float, float], expected_repeats: int | None = None,
                 acceleration: int | None = None, num_sets: int | None = 2,
                 calibration_mode: str = "embedded", budget: MemoryBudget | None = None) -> None:
        if num_sets is not None and num_sets != 2:
            raise StepError(f"the IR/PD chains need exactly two sets (0 = IR, 1 = PD); the "
                            f"header's encoding limits declare {num_sets}")
        if matrix_ky < 1:
            raise StepError(f"phase-encode matrix must be >= 1 row, got {matrix_ky}")
        if expected_repeats is not None and expected_repeats < 1:
            raise StepError(f"expected repeats must be >= 1, got {expected_repeats}")
        if acceleration is not None and not 1 <= acceleration <= 4:
            raise StepError(f"acceleration R = {acceleration} is outside 1..4")
        self.matrix_ky = int(matrix_ky)
        self.center_line = int(center_line)
        self.recon_matrix = tuple(int(v) for v in recon_matrix)
        self.fov_mm = tuple(float(v) for v in fov_mm)
        self.expected_repeats = expected_repeats
        self.acceleration = acceleration
        self.calibration_mode = calibration_mode
        self.budget = budget or MemoryBudget(None)
        self._open: dict[int, _OpenSlice] = {}
        self._released: set[int] = set()
        self._coils: int | None = None
        self._kx: int | None = None

    @property
    def open_slices(self) -> list[int]:
        """Slice indices currently held (memory in use)."""
        return sorted(self._open)

    def push(self, r: Readout) -> list[IrPdKspace]:
        """Add one readout; return the slices it completes.

        Raises
        ------
        StepError
            A set other than 0/1, a repeat outside the expected count, a readout for an already
            released slice, coils or readout length differing from the first readout, a line
            outside the matrix.
        """
        data = np.asarray(r.data)
        if data.ndim != 2:
            raise StepError(f"readout data must be (coils, samples), got shape {data.shape}")
        if r.set not in (IR_SET, PD_SET):
            raise StepError(f"readout slice {r.slice} repeat {r.repeat} line {r.line} has set "
                            f"{r.set}; the IR/PD chains expect set 0 (IR) and set 1 (PD) only")
        if self.expected_repeats is not None and not 0 <= r.repeat < self.expected_repeats:
            raise StepError(f"readout slice {r.slice} set {r.set} has repeat {r.repeat}, outside "
                            f"the {self.expected_repeats} repeats the encoding limits declare")
        coils, kx = data.shape
        if self._coils is None:
            self._coils, self._kx = coils, kx
        if coils != self._coils:
            raise StepError(f"readout slice {r.slice} set {r.set} repeat {r.repeat} line {r.line} "
                            f"has {coils} coils, earlier readouts had {self._coils}")
        if kx != self._kx:
            raise StepError(f"readout slice {r.slice} set {r.set} repeat {r.repeat} line {r.line} "
                            f"has {kx} samples, earlier readouts had {self._kx}")
        if r.slice in self._released:
            raise StepError(f"readout for slice {r.slice} (set {r.set}, repeat {r.repeat}) arrived "
                            "after that slice was complete and released")
        row = kspace_row(r.line, self.center_line, self.matrix_ky)
        sl = self._open.get(r.slice)
        if sl is None:
            n = self.expected_repeats
            heartbeat = coils * self.matrix_ky * kx * 8
            what = f"slice {r.slice} calibration ({coils} coils × {self.matrix_ky} × {kx})"
            if n is not None:   # the whole slice at once
                what = (f"slice {r.slice}: 2 sets × {n} repeats and calibration ({coils} coils × "
                        f"{self.matrix_ky} × {kx})")
            nbytes = (2 + 2 * (n or 0)) * heartbeat   # calibration: two heartbeats' worth
            self.budget.take(nbytes, what)
            sl = self._open[r.slice] = _OpenSlice(coils, self.matrix_ky, kx, n)
            sl.nbytes = nbytes
        key = (r.set, r.repeat)
        if r.imaging:
            if key not in sl.kspace:
                if sl.heartbeats is not None:
                    sl.kspace[key] = sl.heartbeats[r.set, r.repeat]
                else:
                    nbytes = coils * self.matrix_ky * kx * 8
                    self.budget.take(nbytes, f"slice {r.slice} set {r.set} repeat {r.repeat} ({coils} "
                                             f"coils × {self.matrix_ky} × {kx})")
                    sl.nbytes += nbytes
                    sl.kspace[key] = np.zeros((coils, self.matrix_ky, kx), np.complex64)
                sl.rows[key] = np.zeros(self.matrix_ky, bool)
            target = sl.kspace[key][:, row]      # a view: the readout is placed in k-space directly
            if sl.rows[key][row]:                # a repeated line replaces the earlier one whole
                target[:] = 0
            place_readout(target, data, r.center_sample)
            sl.rows[key][row] = True
            dist = abs(r.line - self.center_line)
            if key not in sl.refs or dist < sl.refs[key][0]:
                sl.refs[key] = (dist, r.ref)
        if r.calibration:
            if r.imaging:
                data = target.copy()
            else:
                aligned = np.zeros((coils, kx), np.complex64)
                place_readout(aligned, data, r.center_sample)
                data = aligned
            sl.acs_sum[r.set, :, row] += data
            sl.acs_count[r.set, row] += 1
            if self.calibration_mode == "embedded":
                sl.calib.setdefault(key, {})[row] = data
        if r.last_in_slice and r.imaging:
            sl.closed.add(key)
            if self.expected_repeats is not None and len(sl.closed) == 2 * self.expected_repeats:
                return [self._release(r.slice)]
        return []

    def flush(self) -> list[IrPdKspace]:
        """Release every slice still open (end of stream), in slice order.

        Raises
        ------
        StepError
            A slice with a repeat lacking its IR or PD partner, or fewer repeats than expected.
        """
        return [self._release(s) for s in sorted(self._open)]

    def _release(self, index: int) -> IrPdKspace:
        sl = self._open.pop(index)
        self._released.add(index)
        self.budget.give(sl.nbytes)   # handed on: the steps after hold it one slice at a time
        ir_reps = sorted(rep for s, rep in sl.kspace if s == IR_SET)
        pd_reps = sorted(rep for s, rep in sl.kspace if s == PD_SET)
        if not ir_reps and not pd_reps:
            raise StepError(f"slice {index} has calibration readouts but no imaging readouts")
        missing_pd = sorted(set(ir_reps) - set(pd_reps))
        missing_ir = sorted(set(pd_reps) - set(ir_reps))
        if missing_pd:
            raise StepError(f"slice {index}: repeat(s) {missing_pd} have an IR (set 0) but no PD "
                            "partner (set 1); PSIR needs both heartbeats of every repeat")
        if missing_ir:
            raise StepError(f"slice {index}: repeat(s) {missing_ir} have a PD (set 1) but no IR "
                            "partner (set 0); PSIR needs both heartbeats of every repeat")
        if self.expected_repeats is not None and len(ir_reps) != self.expected_repeats:
            raise StepError(f"slice {index} ended with {len(ir_reps)} IR/PD repeats "
                            f"({ir_reps}); the encoding limits declare {self.expected_repeats}")
        reps = tuple(ir_reps)
        rows = [sl.rows[(s, rep)] for rep in reps for s in (IR_SET, PD_SET)]
        mask = np.logical_and.reduce(rows)
        union = np.logical_or.reduce(rows)
        if not mask.any():
            raise StepError(f"slice {index}: no phase-encode row was acquired in every set and repeat")
        if sl.heartbeats is not None:   # every repeat 0 … N − 1 is there (checked above)
            ir, pd = sl.heartbeats[IR_SET], sl.heartbeats[PD_SET]
        else:
            ir = np.stack([sl.kspace.pop((IR_SET, rep)) for rep in reps])
            pd = np.stack([sl.kspace.pop((PD_SET, rep)) for rep in reps])
        if not np.array_equal(mask, union):
            dropped = np.flatnonzero(union & ~mask)
            ir[:, :, dropped] = 0
            pd[:, :, dropped] = 0
        acs_pd, rows_pd = acs_block(sl.acs_sum[PD_SET], sl.acs_count[PD_SET])
        acs_ir, _ = acs_block(sl.acs_sum[IR_SET], sl.acs_count[IR_SET], rows=rows_pd)
        if acs_pd is None:  # calibration flagged only on IR heartbeats: use them
            acs_pd, rows_pd = acs_block(sl.acs_sum[IR_SET], sl.acs_count[IR_SET])
        calib = np.zeros(self.matrix_ky, bool)
        calib[np.flatnonzero(sl.acs_count.sum(axis=0))] = True
        R = self.acceleration or estimate_acceleration(mask & ~calib if (mask & ~calib).any() else mask)
        refs = tuple((sl.refs[(IR_SET, rep)][1], sl.refs[(PD_SET, rep)][1]) for rep in reps)
        own = None
        if self.calibration_mode == "embedded" and rows_pd.size and all(
                int(r) in sl.calib.get((s, rep), {}) for s in (IR_SET, PD_SET) for rep in reps
                for r in rows_pd):
            own = np.stack([np.stack([np.stack([sl.calib[(s, rep)][int(r)] for r in rows_pd], axis=1)
                                      for rep in reps]) for s in (IR_SET, PD_SET)]).astype(np.complex64)
        info = SliceInfo(slice=index, repeats=reps, refs=refs, recon_matrix=self.recon_matrix,
                         fov_mm=self.fov_mm, acceleration=int(R))
        calibration = Calibration(pd=acs_pd, ir=acs_ir, rows=rows_pd, per_repeat=own,
                                  mode=self.calibration_mode)
        return IrPdKspace(info=info, ir=ir, pd=pd, mask_pe=mask, acceleration=int(R),
                          center_line=self.center_line, calibration=calibration)


def acs_block(acs_sum: np.ndarray, counts: np.ndarray, rows: np.ndarray | None = None
              ) -> tuple[np.ndarray | None, np.ndarray]:
    """Mean calibration block symmetric about the k-space centre row.

    Parameters
    ----------
    acs_sum : (coils, ky, kx) complex64
        Sum of calibration readouts per row.
    counts : (ky,) int
        Readouts summed per row.
    rows : (ay,) int, optional
        Use exactly these rows (they must all have data), e.g. the PD block's rows for IR.

    Returns
    -------
    block : (coils, ay, kx) complex64 or None
        Mean over the readouts of rows ``[c − h, c + h)`` with ``c = ky // 2`` and ``h`` the
        largest half-width whose rows all have data (so k = 0 sits on row ``ay // 2``, as
        :func:`cmrecon.coils.maps.lowres_images_from_acs` expects); None when the centre row
        has no calibration data.
    rows : (ay,) int
        The rows used (empty when None).
    """
    ky = counts.shape[0]
    if rows is None:
        c = ky // 2
        if counts[c] == 0:
            return None, np.zeros(0, int)
        h = 1
        while c - h - 1 >= 0 and c + h < ky and counts[c - h - 1] > 0 and counts[c + h] > 0:
            h += 1
        rows = np.arange(c - h, c + h)
        if counts[c - h] == 0:  # block of one row pair that failed the first test
            rows = np.array([c])
    rows = np.asarray(rows, int)
    if rows.size == 0 or np.any(counts[rows] == 0):
        return None, np.zeros(0, int)
    block = acs_sum[:, rows] / counts[rows][None, :, None].astype(np.float32)
    return block.astype(np.complex64), rows


def estimate_acceleration(mask_pe: np.ndarray) -> int:
    """PE acceleration from imaging rows: the most common spacing of consecutive rows.

    Parameters
    ----------
    mask_pe : (ky,) bool
        Imaging rows (calibration-only rows excluded).

    Returns
    -------
    int
        R in 1..4.

    Raises
    ------
    StepError
        A spacing outside 1..4.
    """
    rows = np.flatnonzero(mask_pe)
    if rows.size < 2:
        return 1
    gaps = np.diff(rows)
    R = int(np.bincount(gaps).argmax())
    if not 1 <= R <= 4:
        raise StepError(f"imaging rows are spaced {R} apart; only accelerations 1..4 are supported")
    return R
