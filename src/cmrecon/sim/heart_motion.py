"""Cardiac motion of the short-axis phantom: the cardiac cycle, and the anatomy at a cardiac time.

The cycle is one periodic contraction curve ``c(τ) ∈ [0, 1]`` over the R-R interval
(``τ = t / RR``): 0 at end-diastole (the R wave), 1 at end-systole. Its phases, each joined
to the next by a half-cosine ramp (continuous, with zero slope at every knot):

* isovolumic contraction ``[0, τ_ivc)``: c = 0;
* ejection ``[τ_ivc, τ_es)``: 0 → 1; end-systole ``τ_es`` from the systolic duration, which
  grows like √RR (Bazett 1920): ``τ_es = k / √(RR / 1 s)``, k drawn from 0.31–0.36 (0.31–0.36 of
  the cycle at 60 bpm, 0.38–0.44 at 90 bpm);
* isovolumic relaxation (the first 10 % of diastole): c = 1;
* rapid filling (to 35 % of diastole): 1 → c_d (60–80 % of the filling);
* diastasis (to 75 % of diastole): c_d → c_a, slowly;
* atrial kick (to 97 % of diastole): c_a → 0 (the last 15–30 % of the filling).

The anatomy at contraction ``c`` (:func:`anatomy_at`), all in the patient frame (mm):

* the LV endocardium (``lv_endo``) scales about ``lv_centre`` by ``s = √(1 − EF·c)``, so the
  cavity area is ``A_ED·(1 − EF·c)``: ``EF`` is the slice's fractional area change, which in mid
  short-axis slices is close to the volume ejection fraction (normal 0.55–0.70);
* the wall thickens so that the LV myocardial area is conserved (myocardium is incompressible
  and, in this 2D model, stays in plane): the mean thickness ``wall_mm[0]`` is solved from
  ``½∮(r_epi² − r_endo²) dθ = A_myo(ED)``, its angular profile kept. Normal systolic wall
  thickening is roughly 40–60 % (Moore 2000); here it follows from EF and the wall/cavity
  ratio (≈ 40 % for EF 0.64, 25 mm cavity radius, 9 mm wall). The epicardium therefore moves
  less than the endocardium;
* the papillary muscles move towards ``lv_centre`` with the endocardium (kept ≥ 1 mm inside it);
* the RV cavity shrinks: area × ``(1 − EF_RV·c)``, mostly as free-wall motion towards the
  septum (radial semi-axis ``∝ f^0.7``, tangential ``∝ f^0.3``), its septal side following
  the LV epicardium;
* the whole heart translates by ``c·shift_mm`` (a few mm in plane, largest at end-systole);
* body wall, lungs, liver and aorta do not move (breath-hold cine).

Through-plane motion of the base, twist and any motion within a segment are not modelled.

References
----------
Bazett HC. An analysis of the time-relations of electrocardiograms. Heart 1920;7:353-370.
Maceira AM, Prasad SK, Khan M, Pennell DJ. Normalized left ventricular systolic and diastolic
function by steady state free precession cardiovascular magnetic resonance. JCMR 2006;8:417-426
(normal LV ejection fraction and filling by SSFP cine).
Maceira AM, Prasad SK, Khan M, Pennell DJ. Reference right ventricular systolic and diastolic
function normalized to age, gender and body surface area from steady-state free precession
cardiovascular magnetic resonance. Eur Heart J 2006;27:2879-2888.
Moore CC, Lugo-Olivieri CH, McVeigh ER, Zerhouni EA. Three-dimensional systolic strain patterns
in the normal human left ventricle: characterization with tagged MR imaging. Radiology
2000;214:453-466 (radial thickening of the normal wall).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cmrecon.sim.phantom import Anatomy, Blob

__all__ = ["CardiacCycle", "HeartMotion", "random_cycle", "random_heart_motion", "anatomy_at",
           "lv_cavity_area_mm2", "lv_myocardial_area_mm2", "endocardial_radius_mm"]

#: Angular samples of the wall-area quadrature (periodic trapezoid: spectrally accurate).
N_THETA = 720


@dataclass(frozen=True)
class CardiacCycle:
    """One subject's contraction curve (see the module docstring), in fractions of RR.

    Attributes
    ----------
    rr_ms : R-R interval, ms.
    es : end-systole τ_es.
    c_diastasis : contraction at the end of rapid filling, c_d.
    c_atrial : contraction before the atrial kick, c_a (< c_d).
    ivc : end of isovolumic contraction.
    """

    rr_ms: float
    es: float
    c_diastasis: float
    c_atrial: float
    ivc: float = 0.04

    def knots(self) -> tuple[np.ndarray, np.ndarray]:
        """(τ, c) at the phase boundaries: ED, ejection start, ES, IVR end, rapid filling end,
        diastasis end, atrial kick end, next R wave.
        """
        d = 1.0 - self.es
        tau = np.array([0.0, self.ivc, self.es, self.es + 0.10 * d, self.es + 0.35 * d,
                        self.es + 0.75 * d, self.es + 0.97 * d, 1.0])
        c = np.array([0.0, 0.0, 1.0, 1.0, self.c_diastasis, self.c_atrial, 0.0, 0.0])
        return tau, c

    def contraction(self, t_ms) -> np.ndarray:
        """Contraction ``c`` at times ``t_ms`` after the R wave (periodic in RR).

        Parameters
        ----------
        t_ms : (...) float, ms.

        Returns
        -------
        (...) float64 in [0, 1]; 0 at end-diastole, 1 at end-systole.
        """
        tau = np.mod(np.asarray(t_ms, np.float64) / self.rr_ms, 1.0)
        kt, kc = self.knots()
        i = np.clip(np.searchsorted(kt, tau, side="right") - 1, 0, len(kt) - 2)
        w = (tau - kt[i]) / (kt[i + 1] - kt[i])
        ramp = 0.5 * (1.0 - np.cos(np.pi * w))
        return kc[i] + (kc[i + 1] - kc[i]) * ramp


def random_cycle(rng: np.random.Generator, rr_ms: float) -> CardiacCycle:
    """Draw a contraction curve for an R-R interval of ``rr_ms`` (module docstring for ranges)."""
    es = float(np.clip(rng.uniform(0.31, 0.36) / np.sqrt(rr_ms / 1000.0), 0.25, 0.45))
    c_a = float(rng.uniform(0.15, 0.30))
    c_d = float(c_a + rng.uniform(0.03, 0.10))
    return CardiacCycle(rr_ms=float(rr_ms), es=es, c_diastasis=c_d, c_atrial=c_a)


@dataclass(frozen=True)
class HeartMotion:
    """How one subject's heart moves from end-diastole (c = 0) to end-systole (c = 1).

    Attributes
    ----------
    lv_ef : LV fractional area change at c = 1 (cavity area × (1 − lv_ef·c)).
    rv_ef : RV cavity area change at c = 1.
    shift_mm : (du, dv) in-plane translation of the heart at c = 1, mm, patient frame.
    """

    lv_ef: float
    rv_ef: float
    shift_mm: tuple[float, float]


def random_heart_motion(rng: np.random.Generator, lv_ef: tuple[float, float] = (0.5, 0.7),
                        rv_ef: tuple[float, float] = (0.45, 0.65),
                        shift_mm: tuple[float, float] = (1.0, 4.0)) -> HeartMotion:
    """Draw EFs and a translation (uniform in the given (lo, hi) ranges, random direction)."""
    amp = rng.uniform(*shift_mm)
    ang = rng.uniform(0.0, 2.0 * np.pi)
    return HeartMotion(float(rng.uniform(*lv_ef)), float(rng.uniform(*rv_ef)),
                       (float(amp * np.cos(ang)), float(amp * np.sin(ang))))


def endocardial_radius_mm(an: Anatomy, theta: np.ndarray) -> np.ndarray:
    """Distance from ``lv_centre`` to the endocardium along the rays at angles ``theta`` (rad).

    The same radius :mod:`cmrecon.sim.phantom` paints the wall from (``lv_endo`` is centred
    on ``lv_centre``).
    """
    cu, cv = an.lv_centre
    rho, th_e = an.lv_endo.polar(cu + np.cos(theta), cv + np.sin(theta))   # ρ of a point 1 mm out
    return an.lv_endo.boundary(th_e) / np.maximum(rho, 1e-12)


def lv_cavity_area_mm2(an: Anatomy) -> float:
    """Area inside the LV endocardium (papillary muscles included, as in cine volumetry), mm².

    Exact for the blob: ``a·b·(π + (π/2)·Σ_k (a_k² + b_k²))``.
    """
    e = an.lv_endo
    return float(e.a * e.b * np.pi * (1.0 + 0.5 * sum(ak * ak + bk * bk for ak, bk in e.harmonics)))


def _wall_integrals(an: Anatomy) -> tuple[float, float]:
    """``I1 = ∮ r_endo·f dθ`` and ``I2 = ∮ f² dθ`` of the wall profile ``f = thickness / wall_mm[0]``."""
    theta = 2.0 * np.pi * np.arange(N_THETA) / N_THETA
    f = an.wall_thickness(theta) / an.wall_mm[0]
    r0 = endocardial_radius_mm(an, theta)
    return float(np.mean(r0 * f) * 2.0 * np.pi), float(np.mean(f * f) * 2.0 * np.pi)


def lv_myocardial_area_mm2(an: Anatomy) -> float:
    """Area between the LV endocardium and epicardium, ``½∮(r_epi² − r_endo²) dθ``, mm².

    Scar and (where they reach the wall) papillary muscles included; the RV wall is not.
    """
    i1, i2 = _wall_integrals(an)
    w = an.wall_mm[0]
    return w * i1 + 0.5 * w * w * i2


def _extent(blob: Blob, direction: np.ndarray) -> float:
    """Half-width of the blob's ellipse along a unit ``direction`` (u, v) (harmonics ignored)."""
    t = np.deg2rad(blob.angle_deg)
    p = direction[0] * np.cos(t) + direction[1] * np.sin(t)
    q = -direction[0] * np.sin(t) + direction[1] * np.cos(t)
    return float(np.hypot(blob.a * p, blob.b * q))


def anatomy_at(an: Anatomy, motion: HeartMotion, c: float) -> Anatomy:
    """The anatomy at contraction ``c`` (0 = end-diastole as drawn, 1 = end-systole).

    Parameters
    ----------
    an : the end-diastolic anatomy (:func:`cmrecon.sim.phantom.random_anatomy`).
    motion : HeartMotion.
    c : contraction in [0, 1] (:meth:`CardiacCycle.contraction`).

    Returns
    -------
    Anatomy (``an`` itself for c = 0, else a new one; ``an`` is not changed): LV cavity area ``× (1 − lv_ef·c)``, LV
    myocardial area unchanged, RV shrunk, heart translated by ``c·shift_mm``; the rest as ``an``.
    See the module docstring.
    """
    c = float(c)
    if c == 0.0:
        return an
    cu, cv = an.lv_centre
    du, dv = c * motion.shift_mm[0], c * motion.shift_mm[1]
    s = float(np.sqrt(1.0 - motion.lv_ef * c))
    # LV: cavity scaled about its centre; wall thickness solved for constant myocardial area
    endo = dataclasses.replace(an.lv_endo, a=an.lv_endo.a * s, b=an.lv_endo.b * s)
    i1, i2 = _wall_integrals(an)
    w0 = an.wall_mm[0]
    a_myo = w0 * i1 + 0.5 * w0 * w0 * i2
    w = (-s * i1 + np.sqrt((s * i1) ** 2 + 2.0 * i2 * a_myo)) / i2
    moved = dataclasses.replace(an, lv_endo=endo, wall_mm=(float(w),) + tuple(an.wall_mm[1:]))
    # papillary muscles: towards the centre with the endocardium, kept 1 mm inside it
    paps = []
    for pap in an.papillary:
        d = np.array([pap.cu - cu, pap.cv - cv]) * s
        dist = float(np.hypot(*d))
        if dist > 0:
            half = np.arcsin(min(1.0, pap.reach() / dist)) + 0.05
            ang = np.arctan2(d[1], d[0]) + np.linspace(-half, half, 33)
            room = float(np.min(endocardial_radius_mm(moved, ang))) - pap.reach() - 1.0
            d = d * max(min(dist, room), 0.0) / dist
        paps.append(dataclasses.replace(pap, cu=cu + d[0], cv=cv + d[1]))
    # RV: shrinks mostly radially; its septal side follows the (mean) epicardial radius
    f = 1.0 - motion.rv_ef * c
    rv = an.rv_blood
    rv_t = dataclasses.replace(rv, a=rv.a * f ** 0.3, b=rv.b * f ** 0.7)
    radial = np.array([rv.cu - cu, rv.cv - cv])
    d0 = float(np.hypot(*radial))
    e = radial / max(d0, 1e-9)
    theta = 2.0 * np.pi * np.arange(N_THETA) / N_THETA
    r_epi0 = np.mean(endocardial_radius_mm(an, theta) + an.wall_thickness(theta))
    r_epi = np.mean(endocardial_radius_mm(moved, theta) + moved.wall_thickness(theta))
    d_t = d0 - _extent(rv, e) + _extent(rv_t, e) + (r_epi - r_epi0)
    rv_t = dataclasses.replace(rv_t, cu=cu + d_t * e[0], cv=cv + d_t * e[1])

    def shifted(b: Blob) -> Blob:
        return dataclasses.replace(b, cu=b.cu + du, cv=b.cv + dv)

    return dataclasses.replace(moved, lv_centre=(cu + du, cv + dv), lv_endo=shifted(endo),
                               rv_blood=shifted(rv_t), papillary=tuple(shifted(p) for p in paps))
