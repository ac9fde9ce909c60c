"""Streaming buffer of segmented cine readouts: one :class:`CineKspace` per slice.

A segmented, ECG-triggered cine acquisition reads, in each heartbeat, a segment of the
phase-encode rows of every cardiac phase (ISMRMRD ``idx.phase``); a slice is complete after its
last heartbeat. Arrays follow :mod:`cmrecon.axes`.

Release rule of :class:`CineBuffer` (see :meth:`CineBuffer.push`)
-----------------------------------------------------------------
A slice is released at once when an ``ACQ_LAST_IN_SLICE`` readout arrives for its last
cardiac phase (the highest phase the header declares, else the highest seen), or when every
declared phase has had its ``ACQ_LAST_IN_SLICE`` readout (scanners that flag each phase's last
readout). Anything still open at the end of the stream is released by :meth:`CineBuffer.flush`.
Released slices leave the buffer, so memory is bounded by the slices open at one time.

A row read more than once in a phase (repeated calibration rows) is averaged.

References
----------
Atkinson DJ, Edelman RR. Cineangiography of the heart in a single breath hold with a segmented
turboFLASH sequence. Radiology 1991;178:357-360 (segmented k-space cine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cmrecon.errors import StepError
from cmrecon.products.cine import CineKspace, CineSliceInfo
from cmrecon.recon.budget import MemoryBudget
from cmrecon.recon.cartesian import kspace_row, place_readout

__all__ = ["CineReadout", "CineBuffer", "row_spacing", "TICK_MS"]

#: ISMRMRD / Siemens time-stamp tick, ms.
TICK_MS = 2.5


@dataclass(frozen=True)
class CineReadout:
    """One cine readout, reduced to what :class:`CineBuffer` needs.

    Attributes
    ----------
    data : (coils, kx) complex64, prewhitened samples (all readouts of a stream equally long).
    slice, phase : encoding counters.
    line : ``kspace_encode_step_1``.
    center_sample : sample of k = 0 along the readout.
    calibration : flagged as parallel-imaging calibration (ACS).
    last_in_slice : ``ACQ_LAST_IN_SLICE``.
    trigger_ms : time after the R wave (``physiology_time_stamp[0]`` × 2.5 ms), or None.
    ref : opaque header kept for the image headers (the readout nearest the k-space centre of
        each phase is kept).
    """

    data: np.ndarray
    slice: int
    phase: int
    line: int
    center_sample: int
    calibration: bool = False
    last_in_slice: bool = False
    trigger_ms: float | None = None
    ref: Any = None


class _OpenSlice:
    """Readouts of one slice so far (private to :class:`CineBuffer`)."""

    def __init__(self) -> None:
        self.sums: dict[int, np.ndarray] = {}      # phase -> (coils, ky, kx) complex64 sum
        self.counts: dict[int, np.ndarray] = {}    # phase -> (ky,) readouts per row
        self.calib: dict[int, np.ndarray] = {}     # phase -> (ky,) bool rows flagged ACS
        self.refs: dict[int, tuple[int, Any, float | None]] = {}  # phase -> (|Δline|, ref, trigger)
        self.closed: set[int] = set()              # phases whose LAST_IN_SLICE arrived
        self.nbytes = 0                            # taken from the budget


class CineBuffer:
    """Collect cine readouts per slice; release each slice as a :class:`CineKspace`.

    Parameters
    ----------
    matrix_ky : encoded phase-encode rows.
    center_line : encode step of the k-space centre.
    recon_matrix : (x, y), carried to the slices.
    fov_mm : (x, y, z) reconstructed FOV, mm.
    expected_phases : cardiac phases per slice from the header, or None (then the phases seen).
    acceleration : R from the header, or None to estimate it from the rows of each phase.
    budget : the session's :class:`~cmrecon.recon.budget.MemoryBudget` (None: unlimited); each
        phase's k-space is taken from it before it is allocated.

    Raises
    ------
    StepError
        Non-positive sizes.
    """

    def __init__(self, matrix_ky: int, center_line: int, recon_matrix: tuple[int, int],
                 fov_mm: tuple[float, float, float], expected_phases: int | None = None,
                 acceleration: int | None = None, budget: MemoryBudget | None = None) -> None:
        if matrix_ky < 1:
            raise StepError(f"phase-encode matrix must be >= 1 row, got {matrix_ky}")
        if expected_phases is not None and expected_phases < 1:
            raise StepError(f"expected cardiac phases must be >= 1, got {expected_phases}")
        if acceleration is not None and acceleration < 1:
            raise StepError(f"acceleration R = {acceleration} must be >= 1")
        self.matrix_ky = int(matrix_ky)
        self.center_line = int(center_line)
        self.recon_matrix = tuple(int(v) for v in recon_matrix)
        self.fov_mm = tuple(float(v) for v in fov_mm)
        self.expected_phases = expected_phases
        self.acceleration = acceleration
        self.budget = budget or MemoryBudget(None)
        self._open: dict[int, _OpenSlice] = {}
        self._released: set[int] = set()
        self._shape: tuple[int, int] | None = None   # (coils, kx) of the first readout

    @property
    def open_slices(self) -> list[int]:
        """Slice indices currently held (memory in use)."""
        return sorted(self._open)

    def push(self, r: CineReadout) -> list[CineKspace]:
        """Add one readout; return the slices it completes (normally none, or one).

        Raises
        ------
        StepError
            A phase outside the declared count, a readout for a released slice, coils or
            readout length differing from the first readout, a line outside the matrix.
        InputError
            A new phase's k-space would take the session over its memory budget.
        """
        data = np.asarray(r.data)
        if data.ndim != 2:
            raise StepError(f"readout data must be (coils, samples), got shape {data.shape}")
        if self.expected_phases is not None and not 0 <= r.phase < self.expected_phases:
            raise StepError(f"readout slice {r.slice} line {r.line} has cardiac phase {r.phase}, "
                            f"outside the {self.expected_phases} phases the encoding limits declare")
        if r.phase < 0:
            raise StepError(f"readout slice {r.slice} line {r.line} has a negative phase {r.phase}")
        if self._shape is None:
            self._shape = data.shape
        if data.shape != self._shape:
            raise StepError(f"readout slice {r.slice} phase {r.phase} line {r.line} is "
                            f"{data.shape[0]} coils × {data.shape[1]} samples; earlier readouts were "
                            f"{self._shape[0]} × {self._shape[1]}")
        if r.slice in self._released:
            raise StepError(f"readout for slice {r.slice} (phase {r.phase}) arrived after that slice "
                            "was complete and released")
        row = kspace_row(r.line, self.center_line, self.matrix_ky)
        sl = self._open.setdefault(r.slice, _OpenSlice())
        if r.phase not in sl.sums:
            nbytes = data.shape[0] * self.matrix_ky * data.shape[1] * 8
            self.budget.take(nbytes, f"cine slice {r.slice} phase {r.phase} ({data.shape[0]} coils × "
                                     f"{self.matrix_ky} × {data.shape[1]})")
            sl.nbytes += nbytes
            sl.sums[r.phase] = np.zeros((data.shape[0], self.matrix_ky, data.shape[1]), np.complex64)
            sl.counts[r.phase] = np.zeros(self.matrix_ky, np.int32)
            sl.calib[r.phase] = np.zeros(self.matrix_ky, bool)
        aligned = np.zeros(data.shape, np.complex64)
        place_readout(aligned, data, r.center_sample)
        sl.sums[r.phase][:, row] += aligned
        sl.counts[r.phase][row] += 1
        sl.calib[r.phase][row] |= r.calibration
        dist = abs(r.line - self.center_line)
        if r.phase not in sl.refs or dist < sl.refs[r.phase][0]:
            sl.refs[r.phase] = (dist, r.ref, r.trigger_ms)
        if r.last_in_slice:
            sl.closed.add(r.phase)
            last = (self.expected_phases - 1) if self.expected_phases else max(sl.sums)
            declared = set(range(self.expected_phases)) if self.expected_phases else None
            if r.phase == last or (declared is not None and declared <= sl.closed):
                return [self._release(r.slice)]
        return []

    def flush(self) -> list[CineKspace]:
        """Release every slice still open (end of stream), in slice order.

        Raises
        ------
        StepError
            A slice missing some declared phases.
        """
        return [self._release(s) for s in sorted(self._open)]

    def _release(self, index: int) -> CineKspace:
        sl = self._open.pop(index)
        self._released.add(index)
        self.budget.give(sl.nbytes)   # handed on: the steps after hold it one slice at a time
        phases = tuple(sorted(sl.sums))
        if self.expected_phases is not None:
            missing = sorted(set(range(self.expected_phases)) - set(phases))
            if missing:
                raise StepError(f"slice {index} ended without cardiac phase(s) {missing} of the "
                                f"{self.expected_phases} the encoding limits declare")
        counts = np.stack([sl.counts[p] for p in phases])                       # (T, ky)
        kspace = np.stack([sl.sums.pop(p) for p in phases])                     # (T, C, ky, kx)
        repeated = counts > 1
        if repeated.any():
            kspace /= np.maximum(counts, 1)[:, None, :, None].astype(np.float32)
        mask = counts > 0
        calibration = np.logical_and.reduce([sl.calib[p] for p in phases])
        R = self.acceleration or row_spacing(mask, calibration)
        refs = tuple(sl.refs[p][1] for p in phases)
        trig = np.array([np.nan if sl.refs[p][2] is None else sl.refs[p][2] for p in phases], np.float64)
        info = CineSliceInfo(slice=index, phases=phases, refs=refs, trigger_times_ms=trig,
                             recon_matrix=self.recon_matrix, fov_mm=self.fov_mm)
        return CineKspace(info=info, kspace=kspace, mask=mask, acceleration=int(R),
                          calibration_rows=calibration)


def row_spacing(mask: np.ndarray, calibration: np.ndarray) -> int:
    """Acceleration R of a cine mask: the most common spacing of the non-calibration rows.

    Parameters
    ----------
    mask : (phases, ky) bool, sampled rows per phase.
    calibration : (ky,) bool, ACS rows (left out: they are contiguous).

    Returns
    -------
    int, R ≥ 1 (1 when a phase has fewer than two non-calibration rows).
    """
    gaps = []
    for rows in mask:
        r = np.flatnonzero(rows & ~calibration)
        if r.size >= 2:
            gaps.append(np.diff(r))
    if not gaps:
        return 1
    return int(np.bincount(np.concatenate(gaps)).argmax())
