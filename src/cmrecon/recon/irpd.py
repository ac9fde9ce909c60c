"""Interleaved IR/PD LGE slices: streaming buffer, coil maps, unfolding (arrays only).

The classical LGE chains (``psir_classic``, ``psir_moco``) reconstruct one slice at a time from
readouts of two interleaved heartbeats per repeat: the inversion-recovery image (ISMRMRD
``set`` 0) and the proton-density reference (``set`` 1), repeated ``N`` times (counter
``average`` or ``repetition``), plus parallel-imaging calibration (ACS) lines. This module holds
the state and the math; the gadgets in ``cmrecon_gadgets.lge_steps`` only convert MRD items.

Axis conventions (fixed across the module)
------------------------------------------
* k-space ``(repeats, coils, ky, kx)`` / ``(coils, ky, kx)``: ``ky`` = phase-encode rows of the
  encoded matrix (encode step ``center_line`` lands on row ``ky // 2``), ``kx`` = readout samples
  (DC at ``kx // 2``), as :class:`cmrecon.recon.cartesian.KspaceAssembler`.
* images ``(repeats, y, x)`` / ``(y, x)``: ``y`` = PE rows, ``x`` = RO columns (the orientation of
  MRD images, ``matrix_size = (x, y)``); coil maps ``(coils, y, x)`` on the ``(ky, kx)`` grid.
* units: after noise prewhitening each coil has unit noise variance; coil combination with
  unit-norm maps (``Σ_c |S_c|² = 1``) keeps σ = 1, so images are in SNR units.

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
Kellman P, Larson AC, Hsu L-Y, et al. MRM 2005;53:194-200 (MOCO averaging of repeats).
Griswold MA et al. MRM 2002;47:1202-1210 (GRAPPA). Pruessmann KP et al. MRM 1999;42:952 (SENSE).
Walsh DO et al. MRM 2000;43:682-690; Inati SJ et al. ISMRM 2014 p. 4407 (coil maps).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmrecon.coils.maps import espirit, inati, lowres_images_from_acs, walsh
from cmrecon.errors import StepError
from cmrecon.recon.fft import fft2c
from cmrecon.recon.grappa import grappa_fill, grappa_weights
from cmrecon.recon.moco import key_frame, roi_window
from cmrecon.recon.partial_fourier import partial_fourier
from cmrecon.recon.sense import coil_combine, sense

__all__ = ["IR_SET", "PD_SET", "Readout", "IrPdSlice", "IrPdBuffer", "acs_block",
           "estimate_acceleration", "coil_maps_for_slice", "unfold_slice", "key_frame", "choose_repeat",
           "auto_window", "crop_to_matrix", "roi_window"]

#: ISMRMRD ``set`` counter of the inversion-recovery heartbeat.
IR_SET = 0
#: ISMRMRD ``set`` counter of the proton-density reference heartbeat.
PD_SET = 1
#: Calibration rows used for coil maps when there is no ACS (R = 1): centre rows of the PD data.
DEFAULT_CALIB_ROWS = 24


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


@dataclass(frozen=True)
class IrPdSlice:
    """One slice of interleaved IR/PD data, growing through the chain (``dataclasses.replace``).

    Attributes
    ----------
    slice : int
        ISMRMRD slice counter.
    repeats : tuple of int
        Repeat-counter values, ascending; position ``i`` in every ``repeats``-axis is repeat
        ``repeats[i]``.
    ir_kspace, pd_kspace : (repeats, coils, ky, kx) complex64 or None
        Zero-filled IR (set 0) and PD (set 1) k-space, prewhitened; dropped (None) once the
        images are formed.
    mask_pe : (ky,) bool
        Phase-encode rows acquired as imaging rows in *every* set and repeat (rows missing
        from some repeat are zeroed in all).
    acs : (coils, ay, kx) complex64 or None
        PD calibration block, mean over repeats (the coils and the k-space kernel relations do
        not move with the object, so averaging moved repeats is a valid, less noisy
        calibration); rows ``acs_rows``; k = 0 on row ``ay // 2``. None without ACS lines.
    acs_ir : (coils, ay, kx) complex64 or None
        The same for the IR heartbeats (kept for diagnostics; the steps calibrate on PD, whose
        signal does not null any tissue).
    acs_rows : (ay,) int
        k-space rows of the ACS block.
    acs_repeats : (2, repeats, coils, ay, kx) complex64 or None
        Embedded calibration only: each heartbeat's own calibration rows ``acs_rows`` (set 0 IR,
        set 1 PD; the same motion state and contrast as that repeat's imaging rows). None for
        separate-shot calibration, or when some heartbeat lacks some of those rows.
    calibration_mode : str
        The header's ``parallelImaging.calibrationMode`` (``embedded``, ``separate``,
        ``interleaved``, ``other``): with ``separate`` the ACS rows come from their own
        heartbeats (own contrast and position) and are only fit for calibration.
    acceleration : int
        PE acceleration R (from the header, else from the imaging-row spacing).
    center_line : int
        Encode step of the k-space centre.
    recon_matrix : (x, y)
        Reconstructed matrix (RO, PE); images are cropped to it.
    fov_mm : (x, y, z)
        Reconstructed field of view, mm.
    refs : tuple of (ir_ref, pd_ref) per repeat
        Header of the readout nearest the k-space centre of each heartbeat.
    maps : (coils, ky, kx) complex64 or None
        Coil sensitivities on the image grid of the k-space (``coil_maps`` step).
    maps_method : str
        How ``maps`` were made.
    ir, pd : (n, y, x) complex64 or None
        Coil-combined images in SNR units (``unfold`` step): ``n`` = number of repeats, or 1
        after averaging (``kind`` says which).
    kind : str
        ``"repeats"`` (one image per repeat), ``"moco"`` (motion-corrected average) or
        ``"average"`` (plain average without registration).
    used : tuple of int
        Positions (into ``repeats``) that contributed to ``ir``/``pd`` (or to the PSIR).
    ref_index : int
        Position of the repeat whose headers describe the output images (the repeat used, or
        the MOCO key frame).
    psir : PsirResult or None
        ``psir`` step output (:class:`cmrecon.recon.psir.PsirResult`).
    psir_pd : (y, x) complex64 or None
        The PD image the PSIR was computed from (for the display-window mask |PD| > 5σ).
    info : dict
        Free-form diagnostics (MOCO key frame, shifts, ...), never needed downstream.
    """

    slice: int
    repeats: tuple[int, ...]
    ir_kspace: np.ndarray | None
    pd_kspace: np.ndarray | None
    mask_pe: np.ndarray
    acs: np.ndarray | None
    acs_ir: np.ndarray | None
    acs_rows: np.ndarray
    acceleration: int
    center_line: int
    recon_matrix: tuple[int, int]
    fov_mm: tuple[float, float, float]
    refs: tuple[tuple[Any, Any], ...]
    acs_repeats: np.ndarray | None = None
    calibration_mode: str = "embedded"
    maps: np.ndarray | None = None
    maps_method: str = ""
    ir: np.ndarray | None = None
    pd: np.ndarray | None = None
    kind: str = "repeats"
    used: tuple[int, ...] = ()
    ref_index: int = 0
    psir: Any = None
    psir_pd: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def replace(self, **changes: Any) -> "IrPdSlice":
        """A copy with ``changes`` applied (the dataclass is frozen)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- buffering


class _OpenSlice:
    """Readouts of one slice collected so far (private to :class:`IrPdBuffer`)."""

    def __init__(self, coils: int, ky: int, kx: int) -> None:
        self.coils, self.ky, self.kx = coils, ky, kx
        self.kspace: dict[tuple[int, int], np.ndarray] = {}      # (set, repeat) -> (c, ky, kx)
        self.rows: dict[tuple[int, int], np.ndarray] = {}        # (set, repeat) -> (ky,) bool
        self.acs_sum = np.zeros((2, coils, ky, kx), np.complex64)
        self.acs_count = np.zeros((2, ky), np.int32)
        self.closed: set[tuple[int, int]] = set()                # (set, repeat) with LAST_IN_SLICE
        self.refs: dict[tuple[int, int], tuple[int, Any]] = {}   # (set, repeat) -> (|Δline|, ref)
        self.calib: dict[tuple[int, int], dict[int, np.ndarray]] = {}  # (set, repeat) -> {row: (c, kx)}


class IrPdBuffer:
    """Collect IR/PD readouts per slice and release each slice as an :class:`IrPdSlice`.

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
        rows (:attr:`IrPdSlice.acs_repeats`).

    Raises
    ------
    StepError
        ``num_sets`` not 2, or non-positive sizes.
    """

    def __init__(self, matrix_ky: int, center_line: int, recon_matrix: tuple[int, int],
                 fov_mm: tuple[float, float, float], expected_repeats: int | None = None,
                 acceleration: int | None = None, num_sets: int | None = 2,
                 calibration_mode: str = "embedded") -> None:
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
        self._open: dict[int, _OpenSlice] = {}
        self._released: set[int] = set()
        self._coils: int | None = None
        self._kx: int | None = None

    @property
    def open_slices(self) -> list[int]:
        """Slice indices currently held (memory in use)."""
        return sorted(self._open)

    def push(self, r: Readout) -> list[IrPdSlice]:
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
        row = r.line - self.center_line + self.matrix_ky // 2
        if not 0 <= row < self.matrix_ky:
            raise StepError(f"encode step {r.line} falls outside the {self.matrix_ky}-row matrix "
                            f"(centre line {self.center_line})")
        col0 = kx // 2 - r.center_sample
        if col0 != 0:  # asymmetric echo: shift so that k = 0 lands on column kx // 2
            data = np.roll(data, col0, axis=1)
            if col0 > 0:
                data[:, :col0] = 0
            else:
                data[:, col0:] = 0
        sl = self._open.get(r.slice)
        if sl is None:
            sl = self._open[r.slice] = _OpenSlice(coils, self.matrix_ky, kx)
        key = (r.set, r.repeat)
        if r.imaging:
            if key not in sl.kspace:
                sl.kspace[key] = np.zeros((coils, self.matrix_ky, kx), np.complex64)
                sl.rows[key] = np.zeros(self.matrix_ky, bool)
            sl.kspace[key][:, row] = data
            sl.rows[key][row] = True
            dist = abs(r.line - self.center_line)
            if key not in sl.refs or dist < sl.refs[key][0]:
                sl.refs[key] = (dist, r.ref)
        if r.calibration:
            sl.acs_sum[r.set, :, row] += data
            sl.acs_count[r.set, row] += 1
            if self.calibration_mode == "embedded":
                sl.calib.setdefault(key, {})[row] = data
        if r.last_in_slice and r.imaging:
            sl.closed.add(key)
            if self.expected_repeats is not None and len(sl.closed) == 2 * self.expected_repeats:
                return [self._release(r.slice)]
        return []

    def flush(self) -> list[IrPdSlice]:
        """Release every slice still open (end of stream), in slice order.

        Raises
        ------
        StepError
            A slice with a repeat lacking its IR or PD partner, or fewer repeats than expected.
        """
        return [self._release(s) for s in sorted(self._open)]

    def _release(self, index: int) -> IrPdSlice:
        sl = self._open.pop(index)
        self._released.add(index)
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
        return IrPdSlice(slice=index, repeats=reps, ir_kspace=ir, pd_kspace=pd, mask_pe=mask,
                         acs=acs_pd, acs_ir=acs_ir, acs_rows=rows_pd, acceleration=int(R),
                         center_line=self.center_line, recon_matrix=self.recon_matrix,
                         fov_mm=self.fov_mm, refs=refs, acs_repeats=own,
                         calibration_mode=self.calibration_mode, used=tuple(range(len(reps))))


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


# ----------------------------------------------------------------------------- coil maps


def _calibration(sl: IrPdSlice, rows: int = DEFAULT_CALIB_ROWS) -> np.ndarray:
    """PD calibration block ``(coils, ay, kx)``: the ACS, or (R = 1) centre rows of the PD data."""
    if sl.acs is not None and sl.acs.shape[1] >= 2:
        return sl.acs
    if sl.pd_kspace is None:
        raise StepError(f"slice {sl.slice}: no ACS lines and no PD k-space left to calibrate coil maps")
    ky = sl.pd_kspace.shape[2]
    c = ky // 2
    h = min(rows // 2, c, ky - c)
    block_rows = np.arange(c - h, c + h)
    if not sl.mask_pe[block_rows].all():
        raise StepError(f"slice {sl.slice}: no ACS lines and the central {2 * h} PE rows are not "
                        f"fully sampled (R = {sl.acceleration}); coil maps cannot be calibrated")
    return sl.pd_kspace[:, :, block_rows].mean(axis=0).astype(np.complex64)


def coil_maps_for_slice(sl: IrPdSlice, method: str = "inati", window_px: int = 7,
                        espirit_kernel_px: int = 6, espirit_threshold: float = 0.02,
                        espirit_crop: float = 0.8, espirit_calib_kx: int = 32) -> np.ndarray:
    """Coil sensitivities of one slice from the PD calibration data.

    Calibration source: the **PD** ACS block (mean over repeats); without ACS (R = 1) the
    central 24 rows of the mean PD k-space. PD is used alone because its signal is positive and
    similar in every tissue, whereas the IR image nulls normal myocardium (so IR-derived maps
    would be noise there) and flips sign between tissues (so pooling complex IR and PD data
    would cancel signal).

    Parameters
    ----------
    sl : IrPdSlice
        Buffered slice with ``acs`` or ``pd_kspace``.
    method : {"inati", "walsh", "espirit"}
        Inati 2014 (default, fast), Walsh 2000, or ESPIRiT (Uecker 2014; zero outside the
        eigenvalue mask).
    window_px : int
        Odd smoothing window of Walsh/Inati, pixels.
    espirit_kernel_px, espirit_threshold, espirit_crop : ESPIRiT kernel, singular-value
        threshold and eigenvalue crop.
    espirit_calib_kx : int
        Readout width of the ESPIRiT calibration block (central samples; all when larger).

    Returns
    -------
    (coils, ky, kx) complex64
        Maps with ``Σ_c |S_c|² = 1`` (inside the mask for ESPIRiT).

    Raises
    ------
    StepError
        Unknown method, or no calibration data.

    References
    ----------
    Walsh DO et al. MRM 2000;43:682-690. Inati SJ et al. ISMRM 2013 p. 2672; ISMRM 2014 p. 4407.
    Uecker M et al. MRM 2014;71:990-1001.
    """
    calib = _calibration(sl)
    ky = int(sl.mask_pe.shape[0])
    kx = int(calib.shape[2])
    if method in ("inati", "walsh"):
        low = lowres_images_from_acs(calib, (ky, kx))
        return (inati(low, window_px) if method == "inati" else walsh(low, window_px)).astype(np.complex64)
    if method == "espirit":
        w = min(int(espirit_calib_kx), kx)
        block = calib[:, :, kx // 2 - w // 2: kx // 2 - w // 2 + w]
        return espirit(block, (ky, kx), kernel_px=espirit_kernel_px, threshold=espirit_threshold,
                       crop=espirit_crop).astype(np.complex64)
    raise StepError(f"coil map method '{method}' is unknown; known: inati, walsh, espirit")


# ----------------------------------------------------------------------------- unfolding


def crop_to_matrix(images: np.ndarray, recon_matrix: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``(..., y, x)`` images to the reconstructed matrix ``(x, y)`` where larger."""
    rx, ry = recon_matrix
    ny, nx = images.shape[-2:]
    if nx > rx:
        images = images[..., :, nx // 2 - rx // 2: nx // 2 - rx // 2 + rx]
    if ny > ry:
        images = images[..., ny // 2 - ry // 2: ny // 2 - ry // 2 + ry, :]
    return np.ascontiguousarray(images)


def _filled_rows(kspace: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    rows = np.any(kspace != 0, axis=(0, 2))
    return rows if rows.any() else fallback


def unfold_slice(sl: IrPdSlice, method: str = "grappa", partial_fourier_method: str = "zerofill",
                 grappa_kernel: tuple[int, int] = (4, 5), grappa_lam: float = 1e-4,
                 sense_lam: float = 1e-3, sense_method: str = "auto",
                 sense_iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Coil-combined complex IR and PD images of every repeat, in SNR units.

    GRAPPA (default): weights fitted once per slice on the PD ACS block, applied to each
    repeat's IR and PD k-space; partial Fourier per coil (``zerofill`` default, ``homodyne``,
    ``pocs``); coil images combined with the unit-norm maps (noise σ = 1 before g-factor
    amplification). SENSE: regularised unfolding when the rows form a pure lattice, else
    CG-SENSE (embedded ACS, partial Fourier: unknown rows are the minimum-norm solution, i.e.
    ≈ zero-filled); ``homodyne``/``pocs`` are then applied to the combined image's k-space.

    Parameters
    ----------
    sl : IrPdSlice
        With ``ir_kspace``, ``pd_kspace``, ``maps``; ``acs`` for GRAPPA with R > 1.
    method : {"grappa", "sense"}
    partial_fourier_method : {"zerofill", "homodyne", "pocs"}
    grappa_kernel : (kernel_ky, kernel_kx)
    grappa_lam : relative Tikhonov weight of the GRAPPA fit.
    sense_lam : absolute Tikhonov weight of SENSE (units of Σ|S|²).
    sense_method : {"auto", "unfold", "cg"}
    sense_iterations : CG iterations.

    Returns
    -------
    ir, pd : (repeats, y, x) complex64
        Cropped to the reconstructed matrix; ``y`` = PE, ``x`` = RO.

    Raises
    ------
    StepError
        Missing maps/k-space/ACS, maps of the wrong shape, unknown method, or a numerics error
        (named).

    References
    ----------
    Griswold MA et al. MRM 2002;47:1202-1210. Pruessmann KP et al. MRM 1999;42:952-962;
    MRM 2001;46:638-651. Noll DC et al. IEEE TMI 1991;10:154.
    """
    if sl.ir_kspace is None or sl.pd_kspace is None:
        raise StepError(f"slice {sl.slice}: no k-space to unfold (already unfolded?)")
    if sl.maps is None:
        raise StepError(f"slice {sl.slice}: unfold needs coil maps; put the coil_maps step before unfold")
    n, nc, ky, kx = sl.ir_kspace.shape
    if sl.maps.shape != (nc, ky, kx):
        raise StepError(f"slice {sl.slice}: coil maps {sl.maps.shape} do not match k-space "
                        f"(coils, ky, kx) = {(nc, ky, kx)}")
    R = sl.acceleration
    out = np.zeros((2, n, ky, kx), np.complex64)
    try:
        if method == "grappa":
            weights = None
            if R > 1:
                if sl.acs is None:
                    raise StepError(f"slice {sl.slice}: GRAPPA with R = {R} needs ACS lines; none arrived")
                weights = grappa_weights(sl.acs, R, tuple(grappa_kernel), grappa_lam)
            for s, ksp in enumerate((sl.ir_kspace, sl.pd_kspace)):
                for i in range(n):
                    k = ksp[i] if R == 1 else grappa_fill(ksp[i], sl.mask_pe, None, R, weights=weights)
                    rows = _filled_rows(k, sl.mask_pe)
                    coil_img = partial_fourier(k, rows, partial_fourier_method)
                    out[s, i] = coil_combine(coil_img, sl.maps)
        elif method == "sense":
            acquired = np.flatnonzero(sl.mask_pe)
            extent = np.zeros(ky, bool)
            extent[acquired[0]:acquired[-1] + 1] = True
            for s, ksp in enumerate((sl.ir_kspace, sl.pd_kspace)):
                for i in range(n):
                    img = sense(ksp[i], sl.maps, sl.mask_pe, R, lam=sense_lam, method=sense_method,
                                iterations=sense_iterations)
                    if partial_fourier_method != "zerofill" and not extent.all():
                        img = partial_fourier(fft2c(img), extent, partial_fourier_method)
                    out[s, i] = img
        else:
            raise StepError(f"unfold method '{method}' is unknown; known: grappa, sense")
    except ValueError as exc:
        raise StepError(f"slice {sl.slice}: {method} failed: {exc}") from exc
    out = crop_to_matrix(out, sl.recon_matrix)
    return out[0], out[1]


# ----------------------------------------------------------------------------- helpers


def choose_repeat(ir: np.ndarray, repeat: int, roi_fraction: float, who: str) -> int:
    """Position of the repeat a single-shot step reconstructs: ``repeat``, or the key frame (-1).

    Parameters
    ----------
    ir : (n, y, x) complex
        The repeats' IR images (only used for the key frame).
    repeat : int
        Position, or -1 for :func:`key_frame`.
    roi_fraction : float
        Region of the key-frame comparison.
    who : str
        The step, for the error message.

    Raises
    ------
    StepError
        ``repeat`` outside ``-1, 0..n−1``.
    """
    n = len(ir)
    if repeat == -1:
        return key_frame(ir, roi_fraction)
    if 0 <= repeat < n:
        return int(repeat)
    raise StepError(f"{who} repeat = {repeat} is outside the {n} repeats (0..{n - 1}, or -1 for "
                    "the key frame)")


def auto_window(values: np.ndarray, mask: np.ndarray, low: float = 0.0,
                percentile: float = 95.0) -> tuple[float, float]:
    """Display window ``(centre, width)`` spanning ``[low, p95 inside mask]``.

    Parameters
    ----------
    values : (y, x) float
        Image in output units.
    mask : (y, x) bool
        Pixels with signal (the chains use ``|PD| > 5σ``); all pixels when it selects none.
    low : float
        Lower end of the window, output units (0 for MagIR; the +4096 offset, i.e. ratio 0,
        for PSIR, so nulled myocardium and background are black).
    percentile : float
        Upper end: this percentile of ``values`` inside ``mask``.

    Returns
    -------
    (centre, width) : float, float
        Width at least 1 output unit.
    """
    values = np.asarray(values, dtype=np.float64)
    sel = values[mask] if np.any(mask) else values.ravel()
    hi = float(np.percentile(sel, percentile))
    width = max(hi - low, 1.0)
    return low + width / 2.0, width
