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


def test_stored_images_score_as_the_chain_run_does(tmp_path, capsys):
    """``evaluate --images``: a replayed file scores like the in-process run (LGE: to the ×1000 rounding)."""
    import pytest

    from cmrecon.chain.definition import resolve
    from cmrecon.cli import main
    from cmrecon.evaluate import EvaluateError, psir_ratio_images, score_stored, with_float_ratio
    from cmrecon.evaluate_cine import cine_images, score_cine_slice
    from cmrecon.io.mrdfile import iter_items, read_header_xml, read_images

    def stored(h5, chain):
        out = tmp_path / f"{chain}.h5"
        assert main(["replay", "-i", str(h5), "-c", chain, "--in-process", "-o", str(out)]) == 0
        return out, [i for series in read_images(out).values() for i in series]

    h5, npz = DATA / "sim_cine_r4_equispaced.h5", DATA / "sim_cine_r4_equispaced_truth.npz"
    out, images = stored(h5, "cine_sense")
    [row] = score_stored(images, npz)["cine"].rows
    [direct] = cine_images(resolve("cine_sense"), read_header_xml(h5), iter_items(h5)).values()
    assert row.chain == "cine_sense" and row.metrics == score_cine_slice(direct, np.load(npz), 0)
    capsys.readouterr()
    assert main(["evaluate", "--images", str(out), "--truth", str(npz)]) == 0
    assert "| cine_sense | 1 |" in capsys.readouterr().out

    h5, npz = DATA / "sim_lge_r2_embedded.h5", DATA / "sim_lge_r2_embedded_truth.npz"
    _, lge = stored(h5, "psir_classic")
    [row] = score_stored(lge, npz)["lge"].rows
    ratio = psir_ratio_images(with_float_ratio(resolve("psir_classic")), read_header_xml(h5), iter_items(h5))[0]
    exact = score_slice(ratio, SimTruth.load(npz), 0)
    # stored as round(ratio·1000 + 4096): ±0.0005 per pixel, far below the heart NRMSE
    assert abs(row.metrics["nrmse_heart"] - exact["nrmse_heart"]) < 1e-3
    with pytest.raises(EvaluateError, match="not a cine truth"):
        score_stored(images, npz)
