"""Cardiac motion of the phantom (cmrecon.sim.heart_motion): cycle shape, EF, conserved myocardium."""

import numpy as np
import pytest

from cmrecon.sim import phantom as ph
from cmrecon.sim.heart_motion import CardiacCycle, anatomy_at, lv_cavity_area_mm2, lv_myocardial_area_mm2, random_cycle, random_heart_motion

FOV = (360.0, 360.0)
# box-integrated fractions on 1.4 mm pixels with 5×5 sub-pixels: the area of a smooth outline is
# counted to ~ perimeter × (pixel / 5) / 10 ≈ 0.1 % of these areas
TOL_AREA = 0.005


def _subject(seed):
    rng = np.random.default_rng(seed)
    return ph.random_anatomy(rng, FOV, 0.5), random_heart_motion(rng), random_cycle(rng, 1000.0)


def _areas(an):
    _, frac = ph.rasterize(an, (256, 256), FOV, supersample=5)
    px = (FOV[0] / 256) * (FOV[1] / 256)
    return ((frac[ph.LV_BLOOD] + frac[ph.PAPILLARY]).sum() * px, (frac[ph.LV_MYO] + frac[ph.SCAR]).sum() * px)


def test_contraction_is_zero_at_the_r_wave_one_at_end_systole_periodic_and_bounded():
    cyc = CardiacCycle(rr_ms=800.0, es=0.35, c_diastasis=0.3, c_atrial=0.2)
    t = np.linspace(0.0, 800.0, 4001)
    c = cyc.contraction(t)
    assert c[0] == 0.0 and c[-1] == 0.0 and 0.0 <= c.min() and c.max() <= 1.0
    assert cyc.contraction(0.35 * 800.0) == pytest.approx(1.0)
    np.testing.assert_allclose(cyc.contraction(t + 800.0), c, atol=1e-12)
    systole = (t >= 0.04 * 800) & (t <= 0.35 * 800)
    assert np.all(np.diff(c[systole]) >= 0)                         # ejection: monotone
    tau_d = 0.35 + 0.35 * 0.65
    assert cyc.contraction(tau_d * 800.0) == pytest.approx(0.3)       # end of rapid filling
    assert np.max(np.abs(np.diff(c))) < 0.01                          # no jumps (cosine ramps)


def test_end_systole_comes_later_in_the_cycle_at_a_faster_heart_rate():
    slow = random_cycle(np.random.default_rng(0), 1000.0)
    fast = random_cycle(np.random.default_rng(0), 600.0)
    assert 0.31 <= slow.es <= 0.36
    assert fast.es == pytest.approx(slow.es / np.sqrt(0.6))          # systole ∝ √RR (Bazett)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lv_cavity_shrinks_by_ef_and_the_myocardial_area_is_conserved(seed):
    an, motion, _ = _subject(seed)
    assert 0.5 <= motion.lv_ef <= 0.7
    cav0, myo0 = _areas(an)
    assert cav0 == pytest.approx(lv_cavity_area_mm2(an), rel=TOL_AREA)
    assert myo0 == pytest.approx(lv_myocardial_area_mm2(an), rel=TOL_AREA)
    for c in (0.5, 1.0):
        moved = anatomy_at(an, motion, c)
        cav, myo = _areas(moved)
        assert lv_cavity_area_mm2(moved) == pytest.approx(lv_cavity_area_mm2(an) * (1 - motion.lv_ef * c), rel=1e-12)
        assert cav == pytest.approx(lv_cavity_area_mm2(moved), rel=TOL_AREA)
        assert lv_myocardial_area_mm2(moved) == pytest.approx(lv_myocardial_area_mm2(an), rel=1e-9)
        assert myo == pytest.approx(myo0, rel=TOL_AREA)
    es = anatomy_at(an, motion, 1.0)
    assert es.wall_mm[0] > 1.2 * an.wall_mm[0]                        # the wall thickens


def test_the_heart_moves_and_nothing_else_does():
    an, motion, _ = _subject(4)
    es = anatomy_at(an, motion, 1.0)
    for name in ("body", "body_inner", "thorax", "lungs", "liver", "aorta", "rotation_deg"):
        assert getattr(es, name) == getattr(an, name), name
    np.testing.assert_allclose(np.subtract(es.lv_centre, an.lv_centre), motion.shift_mm)
    assert es.rv_blood.a * es.rv_blood.b == pytest.approx(an.rv_blood.a * an.rv_blood.b * (1 - motion.rv_ef))
    assert anatomy_at(an, motion, 0.0) == an                          # c = 0: the drawn anatomy
