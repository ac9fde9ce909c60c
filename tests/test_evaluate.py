"""The position-free score separates 'wrong frame' from 'poor image'."""

from __future__ import annotations

import numpy as np

from cmrecon.evaluate import score_slice
from cmrecon.recon.moco import fourier_shift
from cmrecon.sim.truth import SimTruth

from paths import DATA


def test_a_shifted_perfect_psir_scores_badly_in_frame_and_perfectly_registered():
    truth = SimTruth.load(DATA / "sim_lge_full_truth.npz")
    target = truth.psir_target[0].astype(np.float64)               # (y, x)
    d = (1.3, -0.7)
    moved = np.real(fourier_shift(target, d))                        # the right image, wrong frame
    m = score_slice(moved, truth, 0)
    assert m["nrmse_heart"] > 0.3
    # registration undoes the shift to the 1/20 px search grid; the PSIR's sharp edges turn that
    # last ≤ 0.025 px into a few percent (0.2 px costs ~0.15 on these 64×48 images)
    assert abs(m["shift_px"] - np.hypot(*d)) < 0.08
    assert m["nrmse_heart_reg"] < 0.06
    # an image in the right frame needs no shift
    m0 = score_slice(target, truth, 0)
    assert m0["shift_px"] <= 0.1 and m0["nrmse_heart"] < 1e-6   # one or two 1/20 px grid steps
