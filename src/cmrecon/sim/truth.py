"""Ground truth of a simulated LGE case: what a reconstruction is judged against.

Images follow :mod:`cmrecon.axes`: ``(slices, y, x)`` (y = phase-encode rows, x = readout
columns) at the reconstructed matrix, in the key repeat's frame, the grid of a chain's images.
Stored as an ``.npz`` whose keys are the field names (``docs/simulator.md``); ``truth[name]``
reads a SimTruth and a loaded ``.npz`` alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmrecon.io.atomic import atomic_path


class NpzRecord:
    """Mixin of a dataclass of arrays stored as one ``.npz`` whose keys are the field names.

    ``record[name]`` reads a field, so a record and its loaded ``.npz`` read alike.
    """

    def __getitem__(self, key: str) -> np.ndarray:
        """The field ``key``, as in the stored ``.npz``."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def save(self, path: str | Path) -> Path:
        """Write every field to a compressed ``.npz`` (keys = field names) at ``path``; return it.

        The file gets exactly the name given (numpy would add ``.npz`` to a name without it) and is
        written atomically (:mod:`cmrecon.io.atomic`): whole, or not at all.

        Raises
        ------
        OutputError
            The file cannot be written (disk full, no permission, ``path`` is a folder...).
        """
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read a record written by :meth:`save`."""
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True, eq=False)
class SimTruth(NpzRecord):
    """Noise-free images, masks, motion and the subject's parameters of one simulated case.

    Attributes
    ----------
    labels : (slices, y, x) uint8, majority tissue label (names in ``label_names``).
    ir, pd : (slices, y, x) complex64, noise-free, fully sampled, prewhitened coil-combined IR
        / PD in SNR units (with coil shading, background phase, per-line shot modulation).
    coil_maps : (slices, coils, y, x) complex64, true maps in the prewhitened coil basis, RSS = 1.
    background_phase : (slices, y, x) float32, φ_b in rad.
    psir_ratio : (slices, y, x) float32, signed S_IR/S_PD at the centre readout, 0 outside the body.
    psir_target : (slices, y, x) float32, noise-free MOCO target ``psirnet_head(ir·k, pd·k)``,
        ``k = target_scale``.
    heart_mask, body_mask : (slices, y, x) bool, the heart and 10 mm around; labels ≠ air.
    motion_mm, motion_px : (slices, repeats, 2 sets (IR, PD), 2 (dx, dy)) float32, displacement
        of the heart from end-expiration in each heartbeat.
    key_repeat : (slices,) int, the repeat whose frame the images are in.
    chest_wall_fraction : (slices,) float64, share of the heart's displacement the body wall follows.
    snr_scale : (slices,) float64, object scale that gave the requested SNR.
    psi : (coils, coils) complex128, noise covariance per k-space sample.
    imaging_lines, acs_lines : (n_pe,) bool.
    shot_lines : (n_shot,) int32, lines of an IR/PD shot in acquisition order.
    signal_ir, signal_pd : (tissues, n_shot) float32, signal of each tissue at each readout (M0 units).
    tissue_names, tissue_t1_ms, tissue_t2_ms, tissue_pd : (tissues,) the subject's tissues.
    label_names : (labels,) str.
    pixel_mm : (2,) float32, (dx, dy).
    target_scale : () float32, √K with K = ⌈repeats / 2⌉.
    params_json : () str, the LgeParams.
    """

    labels: np.ndarray
    ir: np.ndarray
    pd: np.ndarray
    coil_maps: np.ndarray
    background_phase: np.ndarray
    psir_ratio: np.ndarray
    psir_target: np.ndarray
    heart_mask: np.ndarray
    body_mask: np.ndarray
    motion_mm: np.ndarray
    motion_px: np.ndarray
    key_repeat: np.ndarray
    chest_wall_fraction: np.ndarray
    snr_scale: np.ndarray
    psi: np.ndarray
    imaging_lines: np.ndarray
    acs_lines: np.ndarray
    shot_lines: np.ndarray
    signal_ir: np.ndarray
    signal_pd: np.ndarray
    tissue_names: np.ndarray
    tissue_t1_ms: np.ndarray
    tissue_t2_ms: np.ndarray
    tissue_pd: np.ndarray
    label_names: np.ndarray
    pixel_mm: np.ndarray
    target_scale: np.ndarray
    params_json: np.ndarray
