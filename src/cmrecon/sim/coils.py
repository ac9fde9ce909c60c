"""Receive-coil sensitivities of an anterior + posterior cardiac array, background phase, noise.

Sensitivities are the quasi-static Biot–Savart field of circular loops (discretised into
straight segments) evaluated in the slice plane z = 0, with the static field B0 along the slice
normal z; the receive sensitivity of a loop is taken as ``C = Bx − i·By`` (the counter-rotating
component, principle of reciprocity) times a random per-channel receiver phase. Loops sit on
the anterior chest (following the body outline) and under the back (flat, on the table), in
rows along z (through-slice) and columns across the chest, with normals pointing into the body.

References
----------
Roemer PB, Edelstein WA, Hayes CE, Souza SP, Mueller OM. The NMR phased array. MRM
1990;16:192-225 (array geometry, noise correlation between elements).
Hoult DI. The principle of reciprocity in signal strength calculations. Concepts Magn Reson
2000;12:173-187.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CoilArray", "random_coil_array", "coil_sensitivities", "coil_maps_on_grid", "normalise_sensitivities",
           "background_phase", "random_noise_covariance"]


@dataclass(frozen=True)
class CoilArray:
    """Geometry of a receive array, in image coordinates (mm, origin at the FOV centre).

    Attributes
    ----------
    centres : (coils, 3) float64, loop centres (x, y, z) mm; z is through-slice.
    normals : (coils, 3) float64, unit loop normals (pointing into the body).
    radii : (coils,) float64, loop radii, mm.
    phases : (coils,) float64, receiver phase offsets, rad.
    """

    centres: np.ndarray
    normals: np.ndarray
    radii: np.ndarray
    phases: np.ndarray

    @property
    def n_coils(self) -> int:
        return int(self.centres.shape[0])


def random_coil_array(rng: np.random.Generator, n_coils: int, body_semi_axes_mm: tuple[float, float],
                      rotation_deg: float = 0.0) -> CoilArray:
    """Place ``n_coils`` loops half on the anterior chest, half under the back.

    Parameters
    ----------
    rng : numpy Generator.
    n_coils : number of elements (2…64).
    body_semi_axes_mm : (lateral a, AP b) of the body outline, mm (patient frame).
    rotation_deg : rotation of the patient frame relative to the image, degrees (the
        :class:`cmrecon.sim.phantom.Anatomy` ``rotation_deg``); the array rotates with the
        body since it lies on it.

    Returns
    -------
    CoilArray in image coordinates.
    """
    if not 2 <= n_coils <= 64:
        raise ValueError(f"n_coils must be in 2..64, got {n_coils}")
    a, b = body_semi_axes_mm
    n_ant = n_coils // 2
    n_post = n_coils - n_ant
    centres, normals, radii = [], [], []
    for n, anterior in ((n_ant, True), (n_post, False)):
        rows = 2 if n <= 8 else 3
        cols = -(-n // rows)
        span = 1.7 * a                                     # lateral extent covered by the array
        r_loop = min(0.6 * span / cols, 80.0) * rng.uniform(0.9, 1.1)
        z_rows = (np.arange(rows) - (rows - 1) / 2) * 1.6 * r_loop + rng.normal(0, 10.0)
        k = 0
        for i in range(rows):
            for j in range(cols):
                if k == n:
                    break
                u = (j - (cols - 1) / 2) * span / cols + rng.normal(0, 4.0)
                if anterior:
                    uu = np.clip(u / a, -0.95, 0.95)
                    v = b * np.sqrt(1 - uu**2) + rng.uniform(10.0, 25.0)   # drapes on the chest
                    nrm = np.array([u / a**2, v / b**2])                    # outward ellipse normal
                    nrm = -nrm / np.linalg.norm(nrm)
                else:
                    v = -b - rng.uniform(8.0, 15.0)                          # flat on the table
                    nrm = np.array([0.0, 1.0])
                centres.append((u, v, z_rows[i]))
                normals.append((nrm[0], nrm[1], 0.0))
                radii.append(r_loop)
                k += 1
    c = np.array(centres, float)
    nv = np.array(normals, float)
    # patient (u, v) → image (x, y): inverse of phantom._to_patient (rotation, then v → −y)
    t = np.deg2rad(rotation_deg)

    def to_image(p: np.ndarray) -> np.ndarray:
        u, v = p[:, 0], p[:, 1]
        x = u * np.cos(t) + v * np.sin(t)
        y = u * np.sin(t) - v * np.cos(t)
        return np.stack([x, y, p[:, 2]], axis=1)

    return CoilArray(to_image(c), to_image(nv), np.array(radii), rng.uniform(-np.pi, np.pi, n_coils))


def coil_sensitivities(array: CoilArray, x_mm: np.ndarray, y_mm: np.ndarray,
                       n_segments: int = 24) -> np.ndarray:
    """Complex receive sensitivities of the loops at in-plane points (z = 0).

    Parameters
    ----------
    array : CoilArray.
    x_mm, y_mm : (...) float, point coordinates in mm (image frame).
    n_segments : straight segments per loop in the Biot–Savart sum.

    Returns
    -------
    (coils, ...) complex64, ``Bx − i·By`` per unit current (arbitrary scale) times the
    channel's receiver phase.
    """
    pts = np.stack([x_mm.ravel(), y_mm.ravel(), np.zeros(x_mm.size)], axis=1)   # (P, 3)
    phi = 2 * np.pi * (np.arange(n_segments) + 0.5) / n_segments
    dphi = 2 * np.pi / n_segments
    out = np.empty((array.n_coils, x_mm.size), np.complex64)
    for c in range(array.n_coils):
        nrm = array.normals[c] / np.linalg.norm(array.normals[c])
        e1 = np.cross(nrm, [0.0, 0.0, 1.0])
        if np.linalg.norm(e1) < 1e-6:
            e1 = np.array([1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(nrm, e1)
        r = array.radii[c]
        seg_pos = array.centres[c] + r * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
        seg_dl = r * dphi * (-np.sin(phi)[:, None] * e1 + np.cos(phi)[:, None] * e2)
        d = pts[:, None, :] - seg_pos[None, :, :]                               # (P, S, 3)
        dist3 = np.maximum(np.sum(d * d, axis=-1), 1.0) ** 1.5
        bx = np.sum((seg_dl[None, :, 1] * d[..., 2] - seg_dl[None, :, 2] * d[..., 1]) / dist3, axis=1)
        by = np.sum((seg_dl[None, :, 2] * d[..., 0] - seg_dl[None, :, 0] * d[..., 2]) / dist3, axis=1)
        out[c] = (bx - 1j * by) * np.exp(1j * array.phases[c])
    return out.reshape((array.n_coils,) + x_mm.shape)


def coil_maps_on_grid(array: CoilArray, shape: tuple[int, int], fov_mm: tuple[float, float],
                      step: int = 4) -> np.ndarray:
    """Sensitivities on the pixel grid of an ``(RO, PE)`` image, from a coarse Biot–Savart grid.

    The field is evaluated every ``step`` pixels (plus the last row/column) and interpolated
    with cubic splines (real and imaginary parts), which is exact to well below 1 % inside the
    body where the field is smooth and ~``step``² times cheaper.

    Parameters
    ----------
    array : CoilArray.
    shape : (n_ro, n_pe).
    fov_mm : (fov_ro, fov_pe) mm; pixel centres as :func:`cmrecon.sim.phantom.pixel_coordinates`.
    step : coarse-grid spacing in pixels (1 evaluates every pixel).

    Returns
    -------
    (coils, n_ro, n_pe) complex64.
    """
    from scipy.ndimage import map_coordinates

    n_ro, n_pe = shape
    dx, dy = fov_mm[0] / n_ro, fov_mm[1] / n_pe
    i = np.unique(np.r_[np.arange(0, n_ro, step), n_ro - 1])
    j = np.unique(np.r_[np.arange(0, n_pe, step), n_pe - 1])
    xc, yc = np.meshgrid((i - n_ro // 2) * dx, (j - n_pe // 2) * dy, indexing="ij")
    coarse = coil_sensitivities(array, xc, yc)
    if step == 1:
        return coarse
    # fractional coarse-grid coordinates of every fine pixel
    fi = np.interp(np.arange(n_ro), i, np.arange(i.size))
    fj = np.interp(np.arange(n_pe), j, np.arange(j.size))
    gi, gj = np.meshgrid(fi, fj, indexing="ij")
    out = np.empty((array.n_coils, n_ro, n_pe), np.complex64)
    for c in range(array.n_coils):
        re = map_coordinates(coarse[c].real, [gi, gj], order=3, mode="nearest")
        im = map_coordinates(coarse[c].imag, [gi, gj], order=3, mode="nearest")
        out[c] = re + 1j * im
    return out


def normalise_sensitivities(sens: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Scale sensitivities so that their root-sum-of-squares has median 1 inside ``region``.

    Parameters
    ----------
    sens : (coils, ...) complex.
    region : (...) bool, e.g. the body mask.

    Returns
    -------
    (coils, ...) complex64; the relative shading (surface-coil profile) is kept.
    """
    rss = np.sqrt(np.sum(np.abs(sens) ** 2, axis=0))
    med = float(np.median(rss[region])) if region.any() else float(np.median(rss))
    return (sens / med).astype(np.complex64)


def extend_outside(sens: np.ndarray, region: np.ndarray, sigma_px: float = 4.0) -> np.ndarray:
    """Replace the sensitivities outside ``region`` by a smooth extension of those inside.

    A loop's Biot–Savart field grows without bound towards its conductor, so outside the body
    (in the air between skin and coil) the computed sensitivities reach 10-20x their largest
    value in the body. No signal comes from there, but the band-limited object rings a little
    beyond the skin, and ringing times such values would be signal no scanner records. The
    extension is the normalised convolution ``G*(S·B) / G*B`` (Gaussian ``G``, body ``B``):
    smooth, bounded, and equal to the sensitivities wherever there is tissue.

    Parameters
    ----------
    sens : (coils, RO, PE) complex
    region : (RO, PE) bool, the body.
    sigma_px : Gaussian width of the extension, pixels.

    Returns
    -------
    (coils, RO, PE) complex64
    """
    from scipy.ndimage import gaussian_filter
    b = region.astype(np.float64)
    den = np.maximum(gaussian_filter(b, sigma_px), 1e-6)
    out = np.empty(sens.shape, np.complex64)
    for c in range(sens.shape[0]):
        num = gaussian_filter(sens[c].real * b, sigma_px) + 1j * gaussian_filter(sens[c].imag * b, sigma_px)
        out[c] = np.where(region, sens[c], num / den)
    return out


def background_phase(rng: np.random.Generator, x_mm: np.ndarray, y_mm: np.ndarray,
                     fov_mm: float, max_rad: float = 1.5) -> np.ndarray:
    """Smooth background phase φ_b (rad): constant + linear + quadratic terms over the FOV.

    Models B0 off-resonance / receiver phase that is common to IR and PD (docs/physics.md §2).

    Parameters
    ----------
    rng : numpy Generator.
    x_mm, y_mm : (...) coordinates, mm.
    fov_mm : length scale (the larger FOV side), mm.
    max_rad : approximate peak phase excursion of the varying part over the FOV, rad.

    Returns
    -------
    (...) float32 phase in rad.
    """
    px, py = 2 * x_mm / fov_mm, 2 * y_mm / fov_mm
    c = rng.normal(0.0, 1.0, 6) * np.array([np.pi, 0.5, 0.5, 0.25, 0.25, 0.25]) * max_rad / 1.5
    return (c[0] + c[1] * px + c[2] * py + c[3] * px**2 + c[4] * py**2 + c[5] * px * py).astype(np.float32)


def random_noise_covariance(rng: np.random.Generator, centres_mm: np.ndarray,
                            corr_range: tuple[float, float] = (0.05, 0.3),
                            var_range: tuple[float, float] = (0.5, 2.0),
                            decay_mm: float = 120.0) -> np.ndarray:
    """Random coil noise covariance Ψ with unequal variances and spatially decaying correlation.

    Correlation magnitude between elements i, j is ``lo + (hi − lo)·exp(−d_ij / decay)·U(0.5, 1)``
    (neighbouring loops couple more, Roemer 1990), with a random phase; the Hermitian
    correlation matrix is shrunk towards identity until its smallest eigenvalue is ≥ 0.05, so
    Ψ = D·R·D is positive definite (shrinking may push a few magnitudes below ``lo``).

    Parameters
    ----------
    rng : numpy Generator.
    centres_mm : (coils, 3) element positions, mm.
    corr_range : (lo, hi) correlation-coefficient magnitudes before shrinking.
    var_range : (lo, hi) of the per-channel noise variance (diagonal of Ψ), drawn log-uniform.
    decay_mm : distance scale of the correlation, mm.

    Returns
    -------
    (coils, coils) complex128 Hermitian positive definite Ψ, Ψ[i, j] = E[n_i conj(n_j)] per
    k-space sample.
    """
    n = centres_mm.shape[0]
    lo, hi = corr_range
    d = np.linalg.norm(centres_mm[:, None, :] - centres_mm[None, :, :], axis=-1)
    mag = lo + (hi - lo) * np.exp(-d / decay_mm) * rng.uniform(0.5, 1.0, (n, n))
    ph = rng.uniform(-np.pi, np.pi, (n, n))
    r = np.triu(mag * np.exp(1j * ph), 1)
    r = r + r.conj().T
    shrink = 1.0
    while np.linalg.eigvalsh(np.eye(n) + shrink * r).min() < 0.05:
        shrink *= 0.9
    corr = np.eye(n) + shrink * r
    sd = np.sqrt(np.exp(rng.uniform(np.log(var_range[0]), np.log(var_range[1]), n)))
    return corr * sd[:, None] * sd[None, :]
