"""What flows between the LGE steps: small frozen products whose type says what they hold.

``buffer_ir_pd`` → :class:`IrPdKspace` → ``coil_maps`` → :class:`MappedKspace` → ``unfold`` →
:class:`RepeatImages` → [``moco_average`` → :class:`AveragedImages`] → ``psir`` (or the learned
``psirnet_recon`` from :class:`MappedKspace`, ``psir_refine`` from :class:`RepeatImages`) →
:class:`PsirImages` → ``emit_images`` → MRD images.

Every product carries the :class:`SliceInfo` of its slice (counters, headers, geometry) so the
output images can be described; arrays follow :mod:`cmrecon.axes`. Repeat *positions* index the
``repeats`` axis of every array (position ``i`` is repeat-counter value ``repeats[i]``).

References
----------
Kellman P, Arai AE, McVeigh ER, Aletras AH. MRM 2002;47:372-383 (PSIR, interleaved PD reference).
Kellman P, Larson AC, Hsu L-Y, et al. MRM 2005;53:194-200 (MOCO averaging of repeats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SliceInfo", "Calibration", "IrPdKspace", "CoilMaps", "MappedKspace", "RepeatImages",
           "AveragedImages", "PsirImages"]


@dataclass(frozen=True)
class SliceInfo:
    """What every product of one slice carries for the output images.

    Attributes
    ----------
    slice : ISMRMRD slice counter.
    repeats : repeat-counter values, ascending (position ``i`` ↔ ``repeats[i]``).
    refs : per repeat, ``(ir_ref, pd_ref)``: the header of the readout nearest the k-space
        centre of each heartbeat (``ismrmrd.AcquisitionHeader``).
    recon_matrix : reconstructed matrix ``(x, y)`` (header order, see :mod:`cmrecon.axes`).
    fov_mm : reconstructed field of view ``(x, y, z)``, mm.
    acceleration : phase-encode acceleration R of the imaging rows (the header's, else
        estimated from the rows; what learned steps check against their training range).
    """

    slice: int
    repeats: tuple[int, ...]
    refs: tuple[tuple[Any, Any], ...]
    recon_matrix: tuple[int, int]
    fov_mm: tuple[float, float, float]
    acceleration: int = 1


@dataclass(frozen=True)
class Calibration:
    """Parallel-imaging calibration data of one slice.

    Attributes
    ----------
    pd : (coils, ay, kx) complex64 or None
        PD calibration block, mean over repeats (coils and k-space kernel relations do not move
        with the object, so averaging moved repeats is a valid, less noisy calibration); k = 0 on
        row ``ay // 2``. None without calibration lines.
    ir : (coils, ay, kx) complex64 or None
        The same for the IR heartbeats (diagnostics; the steps calibrate on PD, whose signal
        nulls no tissue).
    rows : (ay,) int
        k-space rows of the blocks.
    per_repeat : (2, repeats, coils, ay, kx) complex64 or None
        Embedded calibration only: each heartbeat's own calibration rows (set 0 IR, set 1 PD);
        None for separate-shot calibration or when a heartbeat lacks some of those rows.
    mode : str
        The header's ``parallelImaging.calibrationMode`` (``embedded``, ``separate``,
        ``interleaved``, ``other``): ``separate`` rows come from their own heartbeats.
    """

    pd: np.ndarray | None
    ir: np.ndarray | None
    rows: np.ndarray
    per_repeat: np.ndarray | None = None
    mode: str = "embedded"


@dataclass(frozen=True)
class IrPdKspace:
    """One slice of interleaved IR (set 0) / PD (set 1) k-space, every repeat (``buffer_ir_pd``).

    Attributes
    ----------
    info : SliceInfo
    ir, pd : (repeats, coils, ky, kx) complex64
        Zero-filled, prewhitened k-space.
    mask_pe : (ky,) bool
        Rows acquired as imaging rows in every set and repeat (rows missing from some repeat are
        zeroed in all).
    acceleration : int
        Phase-encode acceleration R.
    center_line : int
        Encode step of the k-space centre.
    calibration : Calibration
    """

    info: SliceInfo
    ir: np.ndarray
    pd: np.ndarray
    mask_pe: np.ndarray
    acceleration: int
    center_line: int
    calibration: Calibration


@dataclass(frozen=True)
class CoilMaps:
    """Coil sensitivities ``maps`` ``(coils, ky, kx)`` complex64 (``Σ_c |S_c|² = 1``) and how made."""

    maps: np.ndarray
    method: str


@dataclass(frozen=True)
class MappedKspace:
    """An :class:`IrPdKspace` with its :class:`CoilMaps` attached (``coil_maps``)."""

    kspace: IrPdKspace
    maps: CoilMaps

    @property
    def info(self) -> SliceInfo:
        """The slice's :class:`SliceInfo`."""
        return self.kspace.info


@dataclass(frozen=True)
class RepeatImages:
    """Coil-combined complex IR and PD images of every repeat, SNR units (``unfold``).

    Attributes
    ----------
    info : SliceInfo
    ir, pd : (repeats, y, x) complex64
        Cropped to the reconstructed matrix.
    """

    info: SliceInfo
    ir: np.ndarray
    pd: np.ndarray


@dataclass(frozen=True)
class AveragedImages:
    """One IR/PD pair averaged over repeats (``moco_average``).

    Attributes
    ----------
    info : SliceInfo
    ir, pd : (y, x) complex64
    used : positions of the repeats averaged.
    key : position of the repeat whose headers describe the output (the key frame).
    roles : MRD DataRole values the output images add: ``("MOCO", "AVE")`` motion-corrected,
        ``("AVE",)`` a plain average.
    diagnostics : registration details (key frame, shifts), never needed downstream.
    """

    info: SliceInfo
    ir: np.ndarray
    pd: np.ndarray
    used: tuple[int, ...]
    key: int
    roles: tuple[str, ...]
    diagnostics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PsirImages:
    """Surface-coil-corrected PSIR and MagIR of one slice, ready for the MRD images.

    Attributes
    ----------
    info : SliceInfo
    psir : cmrecon.recon.psir.PsirResult
        ``psir``/``magir``/``phase``/``scc``, each ``(y, x)``.
    pd : (y, x) complex64
        The PD image of the same repeat(s): the PD series and the display-window mask.
    noise_sigma : float
        Noise σ of ``pd`` (1 in SNR units).
    used : positions of the repeats that contributed.
    key : position of the repeat whose headers describe the output.
    roles : DataRole values added to every output image (empty for a single shot).
    fallback : why a learned step handed back the classical result instead (None: it did not).
    provenance : how it was made (weights name and sha256, device, MOCO diagnostics): image meta.
    """

    info: SliceInfo
    psir: Any
    pd: np.ndarray
    noise_sigma: float
    used: tuple[int, ...]
    key: int
    roles: tuple[str, ...] = ()
    fallback: str | None = None
    provenance: dict = field(default_factory=dict)
