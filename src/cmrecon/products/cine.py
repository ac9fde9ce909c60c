"""What flows between the cine steps: one slice, every cardiac phase.

``buffer_cine`` → :class:`CineKspace` → ``cine_coil_maps`` → :class:`CineMapped` → one of
``cine_sense`` / ``cine_lps`` / ``cine_crunet`` / ``cine_inr`` → :class:`CineImages` →
``emit_cine`` → MRD images (one per phase, Gadgetron cine conventions).

Arrays follow :mod:`cmrecon.axes`: k-space ``(phases, coils, ky, kx)``, images
``(phases, y, x)``. Phase *positions* index the ``phases`` axis (position ``i`` is phase-counter
value ``info.phases[i]``).

References
----------
Otazo R, Candès E, Sodickson DK. Low-rank plus sparse matrix decomposition for accelerated
dynamic MRI with separation of background and dynamic components. MRM 2015;73:1125-1136.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmrecon.products.lge import CoilMaps

__all__ = ["CineSliceInfo", "CineKspace", "CineMapped", "CineImages", "CoilMaps"]


@dataclass(frozen=True)
class CineSliceInfo:
    """What every cine product of one slice carries for the output images.

    Attributes
    ----------
    slice : ISMRMRD slice counter.
    phases : cardiac-phase counter values (``idx.phase``), ascending.
    refs : per phase, the header (``ismrmrd.AcquisitionHeader``) of the readout nearest the
        k-space centre: position, directions and time stamps of that phase's images.
    trigger_times_ms : (phases,) float64, time after the R wave of each phase (the reference
        readout's ``physiology_time_stamp[0]`` × 2.5 ms).
    recon_matrix : reconstructed matrix ``(x, y)`` (header order).
    fov_mm : reconstructed field of view ``(x, y, z)``, mm.
    """

    slice: int
    phases: tuple[int, ...]
    refs: tuple[Any, ...]
    trigger_times_ms: np.ndarray
    recon_matrix: tuple[int, int]
    fov_mm: tuple[float, float, float]


@dataclass(frozen=True)
class CineKspace:
    """One slice of cine k-space, every phase (``buffer_cine``).

    Attributes
    ----------
    info : CineSliceInfo
    kspace : (phases, coils, ky, kx) complex64
        Prewhitened, readout oversampling removed, zero where not sampled; encode step
        ``center_line`` on row ``ky // 2``.
    mask : (phases, ky) bool
        Rows sampled in each phase (equispaced: the same rows; kt-interleaved: shifted per phase).
    acceleration : int
        The header's phase-encode acceleration R (1: fully sampled).
    calibration_rows : (ky,) bool
        Rows flagged as parallel-imaging calibration (ACS) in every phase.
    """

    info: CineSliceInfo
    kspace: np.ndarray
    mask: np.ndarray
    acceleration: int
    calibration_rows: np.ndarray


@dataclass(frozen=True)
class CineMapped:
    """A :class:`CineKspace` with unit-norm coil maps ``(coils, ky, kx)`` (``cine_coil_maps``)."""

    kspace: CineKspace
    maps: CoilMaps

    @property
    def info(self) -> CineSliceInfo:
        """The slice's :class:`CineSliceInfo`."""
        return self.kspace.info


@dataclass(frozen=True)
class CineImages:
    """Coil-combined complex images of every phase, SNR units, cropped to the recon matrix.

    Attributes
    ----------
    info : CineSliceInfo
    images : (phases, y, x) complex64
    method : the step that made them (``cine_sense``, ``cine_lps``...).
    provenance : how (iterations, seconds, weights sha256, device...): written to image meta.
    """

    info: CineSliceInfo
    images: np.ndarray
    method: str
    provenance: dict = field(default_factory=dict)
