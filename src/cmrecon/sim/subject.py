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


@dataclass(frozen=True, eq=False)
class Subject:
    """One subject's draws and the stream's start: body, receive array, noise, geometry, noise scan.

    Attributes
    ----------
    anatomy : the subject's body (its slices each draw their own heart, :func:`draw_slice`).
    array : the receive coil array.
    psi : (coils, coils) noise covariance per k-space sample.
    whiten : (coils, coils) prewhitening matrix W (W Ψ W^H = I).
    chol : Cholesky factor of Ψ (what colours the simulated noise).
    positions : (slices, 3) slice centres, mm (patient LPS).
    head : header fields every readout carries (uid, centre sample, dwell time, directions).
    items : the noise-scan acquisitions (ACQ_IS_NOISE_MEASUREMENT), the stream's first items.
    first_rwave_ms : time of the first R wave after the noise scan, ms.
    """

    anatomy: ph.Anatomy
    array: coil_mod.CoilArray
    psi: np.ndarray
    whiten: np.ndarray
    chol: np.ndarray
    positions: np.ndarray
    head: dict
    items: list
    first_rwave_ms: float


def draw_subject(rng: np.random.Generator, p) -> Subject:
    """Draw the subject's body, coil array and noise covariance, and simulate the noise scan.

    The noise scan has the same Ψ and dwell time as the imaging, 100 ms into the stream; the
    first R wave follows at least 500 ms after it, on the heart-rate grid.

    Parameters
    ----------
    rng : the case's generator (draws in a fixed order: recorded streams reproduce bit for bit).
    p : LgeParams or CineParams.
    """
    from cmrecon.recon.noise import prewhitening_matrix
    from cmrecon.sim.header import slice_geometry
    from cmrecon.sim.stream import noise_readouts

    anatomy = ph.random_anatomy(rng, p.fov_mm, 0.5)
    array = coil_mod.random_coil_array(rng, p.coils, (anatomy.body.a, anatomy.body.b), anatomy.rotation_deg)
    psi = coil_mod.random_noise_covariance(rng, array.centres)
    whiten = prewhitening_matrix(psi)
    chol = np.linalg.cholesky(psi)
    read_dir, phase_dir, slice_dir, positions = slice_geometry(p)
    head = {"measurement_uid": int(p.seed) & 0xFFFFFFFF, "center_sample": p.n_ro_os // 2,
            "sample_time_us": p.sample_time_us, "read_dir": read_dir, "phase_dir": phase_dir,
            "slice_dir": slice_dir}
    noise = mix_coils(chol, complex_normal(rng, (p.coils, p.noise_readouts * p.n_ro_os)))
    items, t_end = noise_readouts(noise.reshape(p.coils, p.noise_readouts, p.n_ro_os), 100.0, head)
    first = float(np.ceil((t_end + 500.0) / p.rr_ms) * p.rr_ms)
    return Subject(anatomy, array, psi, whiten, chol, positions, head, items, first)
