"""What the LGE and cine simulators draw alike for each slice of one subject.

Each slice gets its own heart (``random_anatomy`` at its position base → apex) inside the
subject's body, thorax, lungs and aorta; the subject's receive array shifted to the slice's
position; Biot–Savart sensitivities normalised inside the body and extended smoothly outside it;
a smooth background phase; and the true prewhitened maps a reconstruction combines with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cmrecon.sim import coils as coil_mod
from cmrecon.sim import phantom as ph
from cmrecon.sim.kspace import mix_coils

__all__ = ["SliceDraw", "complex_normal", "draw_slice"]


def complex_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Circular complex Gaussian samples of unit variance, complex128."""
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)


@dataclass(frozen=True, eq=False)
class SliceDraw:
    """One slice's anatomy and coils, on the simulator's oversampled ``(RO_os, PE)`` grid.

    Attributes
    ----------
    anatomy : the slice's anatomy (the subject's body wall, thorax, lungs and aorta).
    sens_phase : (coils, RO_os, PE) complex64, ``C_c · e^{iφ_b}``.
    maps : (coils, RO_os, PE) complex64, true prewhitened maps ``W·C / RSS(W·C)``.
    phase : (RO_os, PE) float, background phase φ_b, rad.
    """

    anatomy: ph.Anatomy
    sens_phase: np.ndarray
    maps: np.ndarray
    phase: np.ndarray


def draw_slice(rng: np.random.Generator, p, s: int, subject: ph.Anatomy, array: coil_mod.CoilArray,
               whiten: np.ndarray) -> SliceDraw:
    """Draw slice ``s`` of ``p.slices``: its heart inside the subject's body, the coils it sees, φ_b.

    Parameters
    ----------
    rng : the case's generator (draws in a fixed order: recorded streams reproduce bit for bit).
    p : LgeParams or CineParams (matrix, FOV, oversampling, slices, slice thickness).
    s : slice index (slices are ``thickness + 2`` mm apart, centred on the array).
    subject : the subject's anatomy (body wall, thorax, lungs, aorta are shared by its slices).
    array : the subject's receive array.
    whiten : (coils, coils) prewhitening matrix W.
    """
    sp = 0.15 + 0.7 * s / max(p.slices - 1, 1) if p.slices > 1 else 0.5
    an = dataclasses.replace(ph.random_anatomy(rng, p.fov_mm, sp), rotation_deg=subject.rotation_deg,
                             body=subject.body, body_inner=subject.body_inner, thorax=subject.thorax,
                             lungs=subject.lungs, aorta=subject.aorta)
    n_ro, n_pe = p.matrix
    grid_os, fov_os = (p.n_ro_os, n_pe), (p.fov_mm[0] * p.readout_oversampling, p.fov_mm[1])
    z_off = (s - (p.slices - 1) / 2) * (p.slice_thickness_mm + 2.0)
    arr_s = dataclasses.replace(array, centres=array.centres - np.array([0.0, 0.0, z_off]))
    sens = coil_mod.coil_maps_on_grid(arr_s, grid_os, fov_os, step=2)
    body_os = np.zeros(grid_os, bool)
    body_os[(p.n_ro_os - n_ro) // 2:(p.n_ro_os + n_ro) // 2] = ph.body_mask(ph.rasterize(an, p.matrix, p.fov_mm)[0])
    sens = coil_mod.extend_outside(coil_mod.normalise_sensitivities(sens, body_os), body_os)
    phi = coil_mod.background_phase(rng, *ph.pixel_coordinates(grid_os, fov_os), max(fov_os))
    # true maps after prewhitening, RSS-normalised (what a recon combines prewhitened data with)
    sens_w = mix_coils(whiten, sens)
    maps = sens_w / np.maximum(np.sqrt(np.sum(np.abs(sens_w) ** 2, axis=0)), 1e-12)
    return SliceDraw(an, (sens * np.exp(1j * phi)).astype(np.complex64), maps.astype(np.complex64), phi)
