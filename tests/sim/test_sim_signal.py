"""Physics of the interleaved IR/PD bSSFP signal model (cmrecon.sim.signal)."""

from dataclasses import replace

import numpy as np
import pytest

from cmrecon.sim.signal import (
    TISSUES,
    SequenceTiming,
    analytic_null_ti_ms,
    analytic_shot_signals,
    hard_pulse_shot_signals,
    null_ti_ms,
    sample_tissue_params,
)

# docs/physics.md §2 anchor protocol: α 45°/8°, 80 lines, TR 2.8 ms, TI 300 ms, RR 1000 ms
ANCHOR = SequenceTiming(rr_ms=1000.0, ti_ms=300.0, tr_ms=2.8, n_lines=80, centre_index=40,
                        alpha_ir_deg=45.0, alpha_pd_deg=8.0)
T1 = np.array([450.0, 270.0, 320.0])   # myocardium, scar, blood
T2 = np.array([45.0, 55.0, 225.0])


def test_analytic_null_formula_anchor():
    # (calc) T1 450, RR 1000, η 1 → 307 ms
    assert analytic_null_ti_ms(450.0, 1000.0, 1.0) == pytest.approx(306.7, abs=0.1)


def test_myocardial_null_within_20ms_of_formula():
    ti0 = null_ti_ms(450.0, 45.0, ANCHOR)
    assert abs(ti0 - analytic_null_ti_ms(450.0, 1000.0)) < 20.0
    assert ti0 == pytest.approx(294.0, abs=3.0)        # hard-pulse anchor of docs/physics.md


def test_ir_pd_ratios_in_physics_ranges():
    s_ir, s_pd = hard_pulse_shot_signals(T1, T2, ANCHOR)
    ratio = s_ir[:, 40] / s_pd[:, 40]
    myo, scar, blood = ratio
    assert abs(myo) < 0.15                                # nulled: ≈ 0.07 in docs/physics.md
    assert 1.0 < blood < 1.3                              # ≈ 1.13
    assert 1.45 < scar < 1.8                              # ≈ 1.62
    assert scar > blood > myo
    # PD ≈ 0.063-0.070 for all three tissues
    assert np.all((s_pd[:, 40] > 0.055) & (s_pd[:, 40] < 0.075))


def test_hard_pulse_matches_analytic_for_pd_and_bright_tissues():
    s_ir, s_pd = hard_pulse_shot_signals(T1, T2, ANCHOR)
    a_ir, a_pd = analytic_shot_signals(T1, T2, ANCHOR)
    # the 8° PD shot barely saturates: Schmitt's formula agrees to ~2 %
    np.testing.assert_allclose(a_pd[:, 40], s_pd[:, 40], rtol=0.03)
    # scar and blood IR (far from the null) agree to a few %
    np.testing.assert_allclose(a_ir[1:, 40], s_ir[1:, 40], rtol=0.03)


def test_steady_state_is_periodic_and_ir_modulates_along_the_shot():
    s_ir, s_pd = hard_pulse_shot_signals(T1, T2, ANCHOR)
    # IR: blood recovers towards the bSSFP steady state along the shot → not constant
    assert np.ptp(s_ir[2]) > 0.2 * abs(s_ir[2, 40])
    # myocardium crosses zero within the shot (sign change of the modulation)
    assert s_ir[0, 0] < 0 < s_ir[0, -1]
    # shorter TI → more negative myocardium
    s_short, _ = hard_pulse_shot_signals(T1, T2, replace(ANCHOR, ti_ms=250.0))
    assert s_short[0, 40] < s_ir[0, 40] - 0.01


def test_3t_lengthens_t1_and_moves_the_null():
    rng15, rng3 = np.random.default_rng(4), np.random.default_rng(4)
    p15, p3 = sample_tissue_params(rng15, 1.5), sample_tissue_params(rng3, 3.0)
    f = p3.t1_ms / p15.t1_ms
    assert np.all((f >= 1.1 - 1e-9) & (f <= 1.2 + 1e-9))
    i = TISSUES.index("myocardium")
    assert null_ti_ms(p3.t1_ms[i], p3.t2_ms[i], ANCHOR) > null_ti_ms(p15.t1_ms[i], p15.t2_ms[i], ANCHOR) + 15


def test_timing_that_does_not_fit_is_rejected():
    with pytest.raises(ValueError, match="ti_ms"):
        SequenceTiming(ti_ms=50.0, n_lines=80, centre_index=40)
