"""MOCO accuracy on synthetic free-breathing IR/PD repeats (PLACEHOLDER docstring, table below).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from cmrecon.sim import phantom as ph
from cmrecon.sim.signal import SequenceTiming, analytic_shot_signals, sample_tissue_params


# ----------------------------------------------------------------------------- synthetic data


def _null_ti_ms(params, timing: SequenceTiming) -> float:
    """TI (ms) nulling myocardium at the k-space centre line (analytic signal, bisection)."""
    myo = 0
    lo, hi = 150.0, 600.0
    f = lambda ti: analytic_shot_signals(params.t1_ms[myo:myo + 1], params.t2_ms[myo:myo + 1],
                                         dataclasses.replace(timing, ti_ms=ti))[0][0, timing.centre_index]
    flo = f(lo)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if f(mid) * flo > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def tissue_values(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-label IR and PD signal (units of M0·PD) at the myocardial null TI.

    Returns
    -------
    ir, pd : (N_LABELS,) float64, 0 for air.
    """
    params = sample_tissue_params(rng)
    timing = SequenceTiming()
    timing = dataclasses.replace(timing, ti_ms=_null_ti_ms(params, timing))
    s_ir, s_pd = analytic_shot_signals(params.t1_ms, params.t2_ms, timing)
    ir_t = s_ir[:, timing.centre_index] * params.pd
    pd_t = s_pd[:, timing.centre_index] * params.pd
    lab = ph.LABEL_TO_TISSUE
    ir = np.where(lab >= 0, ir_t[np.maximum(lab, 0)], 0.0)
    pd = np.where(lab >= 0, pd_t[np.maximum(lab, 0)], 0.0)
    return ir, pd


def render(an: ph.Anatomy, values: np.ndarray, shape: tuple[int, int], fov_mm: tuple[float, float],
           shift_mm, outer_mm, oversample: int = 6) -> np.ndarray:
    """Band-limited noise-free image ``(PE, RO)`` of one position (k-space cropped as in MRI).

    The phantom is rasterised with partial volume on an ``oversample``× finer grid, Fourier
    transformed and cropped to the central ``shape`` k-space, so sub-pixel shifts of the
    anatomy are (up to the body-wall motion) exact Fourier shifts, as for acquired data.
    """
    fine = (shape[0] * oversample, shape[1] * oversample)
    _, frac = ph.rasterize(an, fine, fov_mm, tuple(shift_mm), tuple(outer_mm), supersample=2)
    img = np.tensordot(values, frac, axes=(0, 0))
    k = np.fft.fftshift(np.fft.fft2(img))
    c0, c1 = fine[0] // 2 - shape[0] // 2, fine[1] // 2 - shape[1] // 2
    k = k[c0:c0 + shape[0], c1:c1 + shape[1]]
    out = np.fft.ifft2(np.fft.ifftshift(k)) / oversample ** 2
    return out.real.T.copy()   # (RO, PE) -> (PE, RO): axis 0 = "y" = phase encoding


@dataclasses.dataclass
class BreathingSet:
    """Noise-free repeats of one synthetic subject.

    Attributes
    ----------
    ir, pd : (n, y, x) complex128, scaled so that mean |PD| in LV blood = 1 at displacement 0.
    pd_at_ir : (n, y, x) complex128, the PD rendered at its repeat's IR position (the PD that
        PSIR wants: aligned with the IR).
    d_ir, d_pd : (n, 2) float, heart displacement (dy, dx) in pixels of each repeat's IR / PD.
    deep : int, index of the deep (2×) breath with through-plane motion.
    heart : list of (y, x) bool heart masks (10 mm margin) at each repeat's IR position.
    body : list of (y, x) bool body masks at each repeat's IR position.
    """

    ir: np.ndarray
    pd: np.ndarray
    pd_at_ir: np.ndarray
    d_ir: np.ndarray
    d_pd: np.ndarray
    deep: int
    heart: list
    body: list


def breathing_set(seed: int, n: int = 8, shape_ro_pe=(112, 84), pixel_mm: float = 1.8,
                  amp_mm: tuple[float, float] = (4.0, 10.0)) -> BreathingSet:
    """One synthetic free-breathing set: one-sided breathing, a deep breath, slower chest wall.

    Heart displacement ``d = A·cos⁴(πu)``, ``u ~ U(0, 1)``, ``A ~ U(amp_mm)`` along a direction
    within ±20° of the phase-encoding axis; the PD (one heartbeat later) displaced from its IR
    by a further ``N(0, 0.1·A)`` per axis (as ``cmrecon.sim.lge``); the body wall moves a fraction ``f ~ U(0.2, 0.5)`` as much; one repeat
    (the deep breath) at ``2A`` whose LV is also 1.5 mm smaller (through-plane motion).
    """
    rng = np.random.default_rng(seed)
    fov = (shape_ro_pe[0] * pixel_mm, shape_ro_pe[1] * pixel_mm)
    an = ph.random_anatomy(rng, fov, slice_position=rng.uniform(0.3, 0.6))
    ir_v, pd_v = tissue_values(rng)
    amp = rng.uniform(*amp_mm)
    ang = np.deg2rad(rng.uniform(-20, 20))
    wall = rng.uniform(0.2, 0.5)
    u = rng.uniform(0, 1, n)
    deep = int(rng.integers(0, n))
    d = amp * np.cos(np.pi * u) ** 4
    d[deep] = 2 * amp
    direction = np.array([np.sin(ang), np.cos(ang)])      # (x = RO, y = PE) mm
    s_ir = d[:, None] * direction[None]                    # (n, 2) mm, (x, y)
    s_pd = s_ir + rng.normal(0.0, 0.1 * amp, (n, 2))
    # smooth receiver phase, fixed in the scanner frame, common to IR and PD
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape_ro_pe[1]), np.linspace(-1, 1, shape_ro_pe[0]),
                         indexing="ij")
    c = rng.normal(0, 1, 4)
    phase = np.exp(1j * (c[0] * np.pi + 0.8 * c[1] * yy + 0.8 * c[2] * xx + 0.4 * c[3] * xx * yy))
    ir, pd, pd_at_ir, heart, body = [], [], [], [], []
    for k in range(n):
        a = an if k != deep else dataclasses.replace(an, lv_endo=an.lv_endo.grown(-1.5))
        ir.append(render(a, ir_v, shape_ro_pe, fov, s_ir[k], wall * s_ir[k]) * phase)
        pd.append(render(a, pd_v, shape_ro_pe, fov, s_pd[k], wall * s_pd[k]) * phase)
        pd_at_ir.append(render(a, pd_v, shape_ro_pe, fov, s_ir[k], wall * s_ir[k]) * phase)
        lab, _ = ph.rasterize(a, shape_ro_pe, fov, tuple(s_ir[k]), tuple(wall * s_ir[k]),
                              supersample=1)
        heart.append(ph.heart_mask(lab, (pixel_mm, pixel_mm)).T.copy())
        body.append(ph.body_mask(lab).T.copy())
    lab0, _ = ph.rasterize(an, shape_ro_pe, fov, (0.0, 0.0), supersample=1)
    pd0 = np.abs(render(an, pd_v, shape_ro_pe, fov, (0.0, 0.0), (0.0, 0.0)))
    scale = 1.0 / pd0[lab0.T == ph.LV_BLOOD].mean()
    return BreathingSet(np.array(ir) * scale, np.array(pd) * scale, np.array(pd_at_ir) * scale,
                        s_ir[:, ::-1] / pixel_mm, s_pd[:, ::-1] / pixel_mm, deep, heart, body)


def noisy(bs: BreathingSet, snr: float, rng: np.random.Generator):
    """IR, PD repeats (n, y, x) complex64 at PD SNR ``snr``, noise σ = 1 (complex Gaussian)."""
    def cn(shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return ((snr * bs.ir + cn(bs.ir.shape)).astype(np.complex64),
            (snr * bs.pd + cn(bs.pd.shape)).astype(np.complex64))


if __name__ == "__main__":
    t0 = time.perf_counter()
    bs = breathing_set(0)
    print(time.perf_counter() - t0, bs.d_ir, bs.deep)
