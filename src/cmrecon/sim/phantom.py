"""Short-axis cardiac slice phantom: random anatomy drawn in mm, rasterised with partial volume.

Coordinates
-----------
Image arrays are ``(RO, PE)`` = ``(x, y)``: axis 0 runs along the readout, axis 1 along the
phase encoding, as the reconstruction produces them. Pixel ``(i, j)`` has its centre at
``x = (i − n_ro // 2)·dx``, ``y = (j − n_pe // 2)·dy`` mm, i.e. the FFT centre ``n // 2`` is
the origin (the convention of :mod:`cmrecon.recon.fft`). The anatomy is drawn in patient
in-plane coordinates ``(u, v)`` mm (``u``: patient right → left, ``v``: posterior → anterior),
rotated by ``rotation_deg`` into ``(x, y)``.

Respiratory motion is a translation of the intrathoracic organs (heart, lungs, liver, aorta) by
``shift_mm``; the body wall (skin fat, chest-wall muscle, the mediastinal soft tissue it
encloses) moves by ``outer_shift_mm`` (typically a fraction of it), so breathing motion is not
rigid. Lungs and liver are clipped to the inside of the (moved) body wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrecon.sim.signal import TISSUES

__all__ = ["AIR", "LV_BLOOD", "RV_BLOOD", "LV_MYO", "RV_WALL", "PAPILLARY", "SCAR", "EPI_FAT",
           "SUBCUT_FAT", "CHEST_WALL", "SOFT_TISSUE", "LUNG", "LIVER", "AORTA", "LABEL_NAMES",
           "N_LABELS", "LABEL_TO_TISSUE", "HEART_LABELS", "Blob", "Anatomy", "random_anatomy",
           "rasterize", "heart_mask", "body_mask", "pixel_coordinates", "paint_labels",
           "bandlimited_fractions", "lowpass_to_matrix", "ringing_taper"]

# ----------------------------------------------------------------------------- labels
AIR = 0
LV_BLOOD = 1
RV_BLOOD = 2
LV_MYO = 3
RV_WALL = 4
PAPILLARY = 5
SCAR = 6
EPI_FAT = 7
SUBCUT_FAT = 8
CHEST_WALL = 9
SOFT_TISSUE = 10
LUNG = 11
LIVER = 12
AORTA = 13
#: Label names, indexed by label value.
LABEL_NAMES: tuple[str, ...] = ("air", "lv_blood", "rv_blood", "lv_myocardium", "rv_wall",
                                "papillary", "scar", "epicardial_fat", "subcutaneous_fat",
                                "chest_wall", "soft_tissue", "lung", "liver", "aorta")
N_LABELS = len(LABEL_NAMES)
#: Signal class (index into :data:`cmrecon.sim.signal.TISSUES`) of each label; −1 for air.
LABEL_TO_TISSUE: np.ndarray = np.array([
    -1,
    TISSUES.index("blood"), TISSUES.index("blood"),
    TISSUES.index("myocardium"), TISSUES.index("myocardium"), TISSUES.index("myocardium"),
    TISSUES.index("scar"),
    TISSUES.index("fat"), TISSUES.index("fat"),
    TISSUES.index("muscle"), TISSUES.index("soft_tissue"), TISSUES.index("lung"),
    TISSUES.index("liver"), TISSUES.index("blood"),
], dtype=np.int64)
#: Labels of the heart (ventricles, their blood pools, papillary muscles, scar).
HEART_LABELS: tuple[int, ...] = (LV_BLOOD, RV_BLOOD, LV_MYO, RV_WALL, PAPILLARY, SCAR)


# ----------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Blob:
    """Star-shaped region: an ellipse with a radius perturbed by a few angular harmonics.

    A point at normalised elliptical polar coordinates ``(ρ, θ)`` (ρ = 1 on the ellipse) is
    inside when ``ρ < 1 + Σ_k a_k cos(kθ) + b_k sin(kθ)``.

    Attributes
    ----------
    cu, cv : centre, mm (patient in-plane coordinates).
    a, b : semi-axes along the rotated u and v, mm.
    angle_deg : rotation of the ellipse, degrees.
    harmonics : ((a_k, b_k), ...) for k = 2, 3, ...; small (|·| < 0.1) for smooth outlines.
    """

    cu: float
    cv: float
    a: float
    b: float
    angle_deg: float = 0.0
    harmonics: tuple[tuple[float, float], ...] = ()

    def polar(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised radius ρ and angle θ of points relative to this blob."""
        t = np.deg2rad(self.angle_deg)
        du, dv = u - self.cu, v - self.cv
        p = (du * np.cos(t) + dv * np.sin(t)) / self.a
        q = (-du * np.sin(t) + dv * np.cos(t)) / self.b
        return np.hypot(p, q), np.arctan2(q, p)

    def boundary(self, theta: np.ndarray) -> np.ndarray:
        """Normalised boundary radius at angle θ (1 for a plain ellipse)."""
        r = np.ones_like(theta)
        for k, (ak, bk) in enumerate(self.harmonics, start=2):
            r = r + ak * np.cos(k * theta) + bk * np.sin(k * theta)
        return r

    def reach(self) -> float:
        """Radius (mm) about the centre outside which no point is inside."""
        return max(self.a, self.b) * (1.0 + sum(abs(ak) + abs(bk) for ak, bk in self.harmonics))

    def inside(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Boolean mask of the points ``(u, v)`` (mm) inside the blob."""
        r = self.reach()
        near = ((u - self.cu) ** 2 + (v - self.cv) ** 2) < r * r
        out = np.zeros(u.shape, bool)
        if near.any():
            t = np.deg2rad(self.angle_deg)
            du, dv = u[near] - self.cu, v[near] - self.cv
            w = ((du * np.cos(t) + dv * np.sin(t)) / self.a
                 + 1j * (-du * np.sin(t) + dv * np.cos(t)) / self.b)        # ρ·e^{iθ}
            rho = np.abs(w)
            bound = np.ones(rho.shape)
            if self.harmonics:
                z = w / np.maximum(rho, 1e-12)
                zk = z
                for ak, bk in self.harmonics:                              # k = 2, 3, ...
                    zk = zk * z
                    bound += ak * zk.real + bk * zk.imag
            out[near] = rho < bound
        return out

    def grown(self, d_mm: float) -> "Blob":
        """The same blob with both semi-axes grown by ``d_mm`` (negative shrinks)."""
        return Blob(self.cu, self.cv, max(self.a + d_mm, 1.0), max(self.b + d_mm, 1.0),
                    self.angle_deg, self.harmonics)


def _harmonics(rng: np.random.Generator, n: int, amp: float) -> tuple[tuple[float, float], ...]:
    return tuple((float(rng.normal(0, amp)), float(rng.normal(0, amp))) for _ in range(n))


@dataclass(frozen=True)
class Anatomy:
    """One subject's slice anatomy, in mm (see the module docstring for coordinates).

    Attributes
    ----------
    rotation_deg : in-plane rotation of the patient frame relative to the image axes.
    body, body_inner, thorax : outer skin, inside of the subcutaneous fat, inside of the
        chest-wall muscle.
    lungs : right and left lung.
    liver : liver section, or None (absent in basal slices).
    aorta : descending aorta.
    lv_centre : (u, v) of the LV cavity centre, mm.
    lv_endo : LV cavity (endocardial border) blob centred on ``lv_centre``.
    wall_mm : (mean mm, c_1, c_2, c_3) of the LV wall thickness, see :meth:`wall_thickness`.
    wall_phase : (φ_1, φ_2, φ_3) rad: thickness(θ) = wall_mm[0]·(1 + Σ_k c_k cos(kθ − φ_k)).
    rv_blood : RV cavity blob (its part overlapping the LV is removed).
    rv_wall_mm : RV free-wall thickness.
    epi_fat : (thickness mm, centre angle rad, half-width rad) of epicardial fat bands.
    papillary : papillary muscle blobs inside the LV cavity.
    scar_kind : "none", "subendocardial", "transmural" or "midwall".
    scar_sector : (centre angle rad, half-width rad) about ``lv_centre``.
    scar_depth : transmural extent as a fraction of the wall (1 = transmural).
    """

    rotation_deg: float
    body: Blob
    body_inner: Blob
    thorax: Blob
    lungs: tuple[Blob, Blob]
    liver: Blob | None
    aorta: Blob
    lv_centre: tuple[float, float]
    lv_endo: Blob
    wall_mm: tuple[float, ...]
    wall_phase: tuple[float, ...]
    rv_blood: Blob
    rv_wall_mm: float
    epi_fat: tuple[tuple[float, float, float], ...]
    papillary: tuple[Blob, ...]
    scar_kind: str
    scar_sector: tuple[float, float]
    scar_depth: float

    def wall_thickness(self, theta: np.ndarray) -> np.ndarray:
        """LV wall thickness (mm) at polar angle θ about ``lv_centre``."""
        t = np.full_like(theta, 1.0)
        for k, (ck, pk) in enumerate(zip(self.wall_mm[1:], self.wall_phase), start=1):
            t = t + ck * np.cos(k * theta - pk)
        return self.wall_mm[0] * t


def random_anatomy(rng: np.random.Generator, fov_mm: tuple[float, float],
                   slice_position: float = 0.5, margin_mm: float = 20.0) -> Anatomy:
    """Draw a plausible short-axis slice anatomy that fits inside the field of view.

    Parameters
    ----------
    rng : numpy Generator.
    fov_mm : (fov_ro, fov_pe) of the reconstructed image, mm. The body (rotated) fits inside
        with ``margin_mm`` to spare on every side, leaving room for breathing motion.
    slice_position : 0 (base) … 1 (apex): the LV shrinks towards the apex, the liver appears
        in mid/apical slices, the RV shortens.
    margin_mm : clearance between the body outline and the FOV edge, mm.

    Returns
    -------
    Anatomy
    """
    sp = float(np.clip(slice_position, 0.0, 1.0))
    rot = float(rng.uniform(-25.0, 25.0))
    # body: lateral semi-axis a, AP semi-axis b; shrink to fit the rotated FOV
    a = rng.uniform(140.0, 185.0)
    b = a * rng.uniform(0.62, 0.78)
    t = np.deg2rad(rot)
    half_x = np.sqrt((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2) * 1.06
    half_y = np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2) * 1.06
    k = min(1.0, (fov_mm[0] / 2 - margin_mm) / half_x, (fov_mm[1] / 2 - margin_mm) / half_y)
    a, b = a * k, b * k
    s = a / 165.0  # anatomy scale relative to a typical adult chest
    body = Blob(0.0, 0.0, a, b, 0.0, _harmonics(rng, 3, 0.015))
    fat_t = rng.uniform(5.0, 22.0) * s
    body_inner = body.grown(-fat_t)
    muscle_t = rng.uniform(10.0, 18.0) * s
    thorax = Blob(0.0, rng.uniform(0.0, 10.0) * s, body_inner.a - muscle_t,
                  body_inner.b - 1.8 * muscle_t, 0.0, body.harmonics)
    # heart: LV centre left-anterior of the midline
    lv_u = rng.uniform(10.0, 40.0) * s
    lv_v = rng.uniform(0.0, 25.0) * s
    r_endo = rng.uniform(20.0, 28.0) * (1.0 - 0.45 * sp) * np.sqrt(s)
    ecc = rng.uniform(0.9, 1.1)
    lv_endo = Blob(lv_u, lv_v, r_endo * ecc, r_endo / ecc, rng.uniform(0, 180),
                   _harmonics(rng, 2, 0.03))
    wall_mean = rng.uniform(7.0, 11.0) * np.sqrt(s)
    wall_mm = (wall_mean, rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.1), rng.uniform(0.0, 0.06))
    wall_phase = tuple(float(x) for x in rng.uniform(0, 2 * np.pi, 3))
    r_epi = r_endo + wall_mean
    # RV: crescent on the patient's right-anterior side of the LV
    rv_ang = np.deg2rad(rng.uniform(130.0, 190.0))
    rv_a = r_epi * rng.uniform(1.1, 1.4) * (1.0 - 0.3 * sp)
    rv_b = r_epi * rng.uniform(0.5, 0.75) * (1.0 - 0.3 * sp)
    rv_dist = r_epi + rv_b * rng.uniform(0.1, 0.45)
    rv_blood = Blob(lv_u + rv_dist * np.cos(rv_ang), lv_v + rv_dist * np.sin(rv_ang),
                    rv_a, rv_b, float(np.rad2deg(rv_ang)) + rng.uniform(-20, 20) + 90.0,
                    _harmonics(rng, 2, 0.04))
    rv_wall = rng.uniform(3.0, 5.0) * s
    # epicardial fat bands (AV groove / RV free wall / apex), sometimes none
    n_fat = int(rng.integers(0, 4))
    epi_fat = tuple((float(rng.uniform(2.0, 8.0) * s), float(rng.uniform(0, 2 * np.pi)),
                     float(rng.uniform(0.3, 1.2))) for _ in range(n_fat))
    # papillary muscles: anterolateral and posteromedial, inside the cavity near the wall
    paps = []
    if sp < 0.85:
        for base_ang in (np.deg2rad(40.0), np.deg2rad(-60.0)):
            ang = base_ang + rng.normal(0, 0.25)
            rr = r_endo * rng.uniform(0.55, 0.7)
            pr = rng.uniform(3.0, 5.5) * s
            paps.append(Blob(lv_u + rr * np.cos(ang), lv_v + rr * np.sin(ang), pr,
                             pr * rng.uniform(0.7, 1.0), rng.uniform(0, 180)))
    # scar: none / subendocardial / transmural / (rarely) midwall
    kind = str(rng.choice(["none", "subendocardial", "transmural", "midwall"],
                          p=[0.25, 0.4, 0.28, 0.07]))
    sector = (float(rng.uniform(0, 2 * np.pi)), float(np.deg2rad(rng.uniform(15.0, 65.0))))
    depth = {"none": 0.0, "subendocardial": rng.uniform(0.25, 0.75), "transmural": 1.0,
             "midwall": rng.uniform(0.3, 0.5)}[kind]
    # lungs: lateral-posterior, clipped to the thorax when rasterised
    lungs = []
    for side in (-1.0, 1.0):
        la = rng.uniform(0.32, 0.42) * thorax.a
        lb = rng.uniform(0.55, 0.75) * thorax.b
        lu = side * (thorax.a - la * rng.uniform(0.9, 1.1))
        lv = -rng.uniform(0.05, 0.25) * thorax.b
        lungs.append(Blob(lu, lv, la, lb, rng.uniform(-15, 15), _harmonics(rng, 3, 0.05)))
    # liver: patient right, more of it towards the apex (diaphragm level)
    liver = None
    if rng.uniform() < 0.25 + 0.7 * sp:
        la = thorax.a * rng.uniform(0.35, 0.55) * (0.5 + 0.6 * sp)
        liver = Blob(-thorax.a * rng.uniform(0.35, 0.55), -thorax.b * rng.uniform(0.0, 0.4),
                     la, la * rng.uniform(0.6, 0.9), rng.uniform(-30, 30), _harmonics(rng, 3, 0.05))
    ar = rng.uniform(9.0, 13.0) * s
    aorta = Blob(rng.uniform(5.0, 25.0) * s, -thorax.b + rng.uniform(25.0, 40.0) * s, ar, ar)
    return Anatomy(rot, body, body_inner, thorax, (lungs[0], lungs[1]), liver, aorta,
                   (float(lv_u), float(lv_v)), lv_endo, tuple(float(x) for x in wall_mm),
                   wall_phase, rv_blood, float(rv_wall), epi_fat, tuple(paps), kind, sector,
                   float(depth))


# ----------------------------------------------------------------------------- raster
def pixel_coordinates(shape: tuple[int, int], fov_mm: tuple[float, float],
                      supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Sample coordinates ``(x, y)`` in mm, shape ``(RO·s, PE·s)``, centred on pixel ``n // 2``.

    With ``supersample = s`` each pixel holds s×s points at the centres of its sub-pixels.
    """
    n_ro, n_pe = shape
    dx, dy = fov_mm[0] / n_ro, fov_mm[1] / n_pe
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    x = ((np.arange(n_ro) - n_ro // 2)[:, None] + sub[None, :]).ravel() * dx
    y = ((np.arange(n_pe) - n_pe // 2)[:, None] + sub[None, :]).ravel() * dy
    return np.meshgrid(x, y, indexing="ij")


def _to_patient(x: np.ndarray, y: np.ndarray, rot_deg: float, shift_mm: tuple[float, float]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Image (x, y) mm → patient (u, v) mm for an anatomy translated by ``shift_mm`` (x, y)."""
    t = np.deg2rad(rot_deg)
    xs, ys = x - shift_mm[0], y - shift_mm[1]
    # rotate by t, then flip y so that anterior (v > 0) is at small PE index: shown with
    # PE down the rows, the anterior chest is at the top and the patient's left on the right
    return xs * np.cos(t) + ys * np.sin(t), xs * np.sin(t) - ys * np.cos(t)


def paint_labels(an: Anatomy, x: np.ndarray, y: np.ndarray, shift_mm: tuple[float, float],
                  outer_shift_mm: tuple[float, float]) -> np.ndarray:
    """Label value at each point, painting later structures over earlier ones."""
    lab = np.zeros(x.shape, np.uint8)
    uo, vo = _to_patient(x, y, an.rotation_deg, outer_shift_mm)
    u, v = _to_patient(x, y, an.rotation_deg, shift_mm)
    lab[an.body.inside(uo, vo)] = SUBCUT_FAT
    lab[an.body_inner.inside(uo, vo)] = CHEST_WALL
    in_thorax = an.thorax.inside(uo, vo)
    lab[in_thorax] = SOFT_TISSUE
    for lung in an.lungs:
        lab[lung.inside(u, v) & in_thorax] = LUNG
    if an.liver is not None:
        lab[an.liver.inside(u, v) & in_thorax] = LIVER
    lab[an.aorta.inside(u, v) & in_thorax] = AORTA
    # heart, in polar coordinates about the LV centre, evaluated only near the heart
    reach = max(an.lv_endo.reach() + 1.6 * an.wall_mm[0], 1.0)
    reach = max(reach, np.hypot(an.rv_blood.cu - an.lv_centre[0], an.rv_blood.cv - an.lv_centre[1])
                + an.rv_blood.reach() + an.rv_wall_mm) + max([f[0] for f in an.epi_fat], default=0.0) + 2.0
    near = ((u - an.lv_centre[0]) ** 2 + (v - an.lv_centre[1]) ** 2) < reach * reach
    sub = lab[near]
    _paint_heart(an, u[near], v[near], sub, in_thorax[near])
    lab[near] = sub
    return lab


def _paint_heart(an: Anatomy, u: np.ndarray, v: np.ndarray, lab: np.ndarray,
                 in_thorax: np.ndarray) -> None:
    """Paint epicardial fat, RV, LV, papillary muscles and scar into ``lab`` (in place)."""
    du, dv = u - an.lv_centre[0], v - an.lv_centre[1]
    r = np.hypot(du, dv)
    th = np.arctan2(dv, du)
    rho, th_e = an.lv_endo.polar(u, v)
    r_endo = r / np.maximum(rho, 1e-9) * an.lv_endo.boundary(th_e)   # endocardial radius along the ray
    wall = an.wall_thickness(th)
    r_epi = r_endo + wall
    in_epi = r < r_epi
    rv_out = an.rv_blood.grown(an.rv_wall_mm)
    heart_out = in_epi | rv_out.inside(u, v)
    for thick, ang, half in an.epi_fat:
        d_ang = np.angle(np.exp(1j * (th - ang)))
        near = (np.abs(d_ang) < half) & ~heart_out & (r < r_epi + thick * np.cos(d_ang / half * np.pi / 2) + 1e-9)
        near |= (np.abs(d_ang) < half) & rv_out.grown(thick).inside(u, v) & ~heart_out
        lab[near & in_thorax] = EPI_FAT
    lab[rv_out.inside(u, v)] = RV_WALL
    lab[in_epi] = LV_MYO
    lab[an.rv_blood.inside(u, v) & ~in_epi] = RV_BLOOD
    in_endo = rho < an.lv_endo.boundary(th_e)
    lab[in_endo] = LV_BLOOD
    for pap in an.papillary:
        lab[pap.inside(u, v)] = PAPILLARY
    if an.scar_kind != "none":
        c, half = an.scar_sector
        d_ang = np.angle(np.exp(1j * (th - c)))
        taper = np.clip(1.0 - (np.abs(d_ang) / half) ** 4, 0.0, 1.0)   # extent falls off at the sector edges
        depth = np.where(np.abs(d_ang) < half, an.scar_depth * np.sqrt(taper), 0.0)
        frac = (r - r_endo) / np.maximum(wall, 1e-9)                    # 0 endo … 1 epi
        if an.scar_kind == "midwall":
            mid = 0.5
            in_scar = np.abs(frac - mid) < depth / 2
        else:
            in_scar = frac < depth
        lab[(lab == LV_MYO) & in_scar & (depth > 0)] = SCAR


def rasterize(an: Anatomy, shape: tuple[int, int], fov_mm: tuple[float, float],
              shift_mm: tuple[float, float] = (0.0, 0.0),
              outer_shift_mm: tuple[float, float] | None = None,
              supersample: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise an anatomy to a label map and per-label partial-volume fractions.

    Parameters
    ----------
    an : Anatomy.
    shape : (n_ro, n_pe) pixels.
    fov_mm : (fov_ro, fov_pe) mm.
    shift_mm : (x, y) translation of the intrathoracic organs, mm (respiratory motion).
    outer_shift_mm : (x, y) translation of the body wall, mm (default: same as ``shift_mm``).
    supersample : sub-pixels per pixel side for the partial-volume fractions.

    Returns
    -------
    labels : (n_ro, n_pe) uint8
        Majority label of each pixel (see ``LABEL_NAMES``).
    fractions : (N_LABELS, n_ro, n_pe) float32
        Fraction of each pixel's area covered by each label; sums to 1 over labels.
    """
    if outer_shift_mm is None:
        outer_shift_mm = shift_mm
    s = int(supersample)
    x, y = pixel_coordinates(shape, fov_mm, s)
    lab = paint_labels(an, x, y, shift_mm, outer_shift_mm)
    n_ro, n_pe = shape
    flat_pix = (np.arange(n_ro)[:, None, None, None] * n_pe + np.arange(n_pe)[None, None, :, None])
    flat_pix = np.broadcast_to(flat_pix, (n_ro, s, n_pe, s)).ravel()
    counts = np.bincount(flat_pix * N_LABELS + lab.ravel(), minlength=n_ro * n_pe * N_LABELS)
    fractions = (counts.reshape(n_ro, n_pe, N_LABELS) / float(s * s)).astype(np.float32)
    labels = np.argmax(fractions, axis=-1).astype(np.uint8)
    return labels, np.moveaxis(fractions, -1, 0)


def bandlimited_fractions(an: Anatomy, shape: tuple[int, int], fov_mm: tuple[float, float],
                          shift_mm: tuple[float, float] = (0.0, 0.0),
                          outer_shift_mm: tuple[float, float] | None = None,
                          supersample: int = 4, support_px: int | None = 2) -> np.ndarray:
    """Per-label fractions as an MR scanner sees them: the object low-passed to the k-space matrix.

    The anatomy is painted on a grid ``supersample`` times finer, each label's indicator is
    Fourier transformed and only the ``shape`` central frequencies are kept (the k-space a
    ``shape`` acquisition samples), then transformed back. Unlike box-integrated pixel fractions
    (:func:`rasterize`), a sub-pixel translation of the anatomy then changes these maps by the
    Fourier shift theorem (as real data do: a moved object's k-space is its k-space times a
    phase ramp), and edges ring (Gibbs) as in real images.

    Parameters
    ----------
    an : Anatomy.
    shape : (n_ro, n_pe) pixels.
    fov_mm : (fov_ro, fov_pe) mm.
    shift_mm, outer_shift_mm : as :func:`rasterize`.
    supersample : fine-grid points per pixel side.
    support_px : keep the ringing within this many pixels of the body (smooth taper); None
        keeps it everywhere.

    Returns
    -------
    (N_LABELS, n_ro, n_pe) float32
        Band-limited fractions; they sum to 1 over labels (up to rounding) and may dip below 0
        or exceed 1 next to edges.
    """
    if outer_shift_mm is None:
        outer_shift_mm = shift_mm
    s = int(supersample)
    n_ro, n_pe = shape
    x, y = pixel_coordinates(shape, fov_mm, s)
    lab = paint_labels(an, x, y, shift_mm, outer_shift_mm)
    out = np.zeros((N_LABELS, n_ro, n_pe), np.float32)
    for label in np.unique(lab):
        if label == AIR:
            continue
        out[label] = lowpass_to_matrix((lab == label).astype(np.float64), shape, s)
    if support_px is not None:
        out *= ringing_taper(lab, shape, s, support_px)[None].astype(np.float32)
    out[AIR] = 1.0 - out.sum(axis=0)
    return out


def lowpass_to_matrix(fine: np.ndarray, shape: tuple[int, int], supersample: int) -> np.ndarray:
    """A fine-grid image as an MR acquisition of ``shape`` sees it: its central frequencies only.

    Parameters
    ----------
    fine : (n_ro·s, n_pe·s) float, painted on the grid of :func:`pixel_coordinates` with ``s``.
    shape : (n_ro, n_pe) pixels.
    supersample : ``s``.

    Returns
    -------
    (n_ro, n_pe) float64, the mean over each pixel's area of the band-limited image (sums and
    averages keep their meaning: a full pixel of 1 is 1).
    """
    s = int(supersample)
    n_ro, n_pe = shape
    nf_ro, nf_pe = n_ro * s, n_pe * s
    # fine sample j sits at ((j + 0.5)/s − 0.5 − n/2) px: (s − 1)/2 fine samples before the point
    # the coarse grid puts at the same index; undo that offset with a phase ramp
    delta = (s - 1) / 2.0
    kx = np.fft.fftfreq(n_ro) * n_ro
    ky = np.fft.fftfreq(n_pe) * n_pe
    ramp = np.exp(2j * np.pi * delta * (kx[:, None] / nf_ro + ky[None, :] / nf_pe))
    ix = np.mod(kx, nf_ro).astype(int)
    iy = np.mod(ky, nf_pe).astype(int)
    spec = np.fft.fft2(fine)[np.ix_(ix, iy)]
    return np.real(np.fft.ifft2(spec * ramp)) / (s * s)


def ringing_taper(labels_fine: np.ndarray, shape: tuple[int, int], supersample: int,
                  support_px: int = 2) -> np.ndarray:
    """Weight (n_ro, n_pe) in [0, 1] that keeps band-limiting ringing within ``support_px`` of the body.

    The ringing of the body outline is confined to the skin's neighbourhood: a receive coil's
    sensitivity grows without bound towards its conductor, so ringing multiplied by it far out in
    the air would be signal no scanner records ((C·ρ) is what is band-limited, and ρ = 0 there).

    Parameters
    ----------
    labels_fine : (n_ro·s, n_pe·s) labels on the fine grid (:func:`paint_labels`).
    shape : (n_ro, n_pe).
    supersample : ``s``.
    support_px : pixels of ringing kept around the body.
    """
    from scipy.ndimage import binary_dilation, gaussian_filter
    n_ro, n_pe = shape
    s = int(supersample)
    body = (labels_fine != AIR).reshape(n_ro, s, n_pe, s).any(axis=(1, 3))
    grown = binary_dilation(body, iterations=int(support_px))
    return np.clip(gaussian_filter(grown.astype(np.float64), 1.0) * 2.0, 0.0, 1.0)


def heart_mask(labels: np.ndarray, pixel_mm: tuple[float, float], margin_mm: float = 10.0) -> np.ndarray:
    """Heart region: LV/RV blood, walls, papillary muscles, scar, and ``margin_mm`` around.

    Parameters
    ----------
    labels : (RO, PE) uint8 label map.
    pixel_mm : (dx, dy) pixel size, mm.
    margin_mm : distance from the heart included, mm.

    Returns
    -------
    (RO, PE) bool
    """
    heart = np.isin(labels, HEART_LABELS)
    if not heart.any():
        return heart
    from scipy import ndimage  # lazy: the CLI imports this module for its defaults
    dist = ndimage.distance_transform_edt(~heart, sampling=pixel_mm)
    return dist <= margin_mm


def body_mask(labels: np.ndarray) -> np.ndarray:
    """Pixels whose majority label is not air, (RO, PE) bool."""
    return labels != AIR
