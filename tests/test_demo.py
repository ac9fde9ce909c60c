"""The README's main command: `cmrecon demo` simulates, serves, replays and writes files."""

from __future__ import annotations

import ismrmrd
import numpy as np
from scipy.ndimage import binary_erosion

from cmrecon.cli import main
from cmrecon.io.mrdfile import read_images
from cmrecon.sim import phantom as ph


def _role(im: ismrmrd.Image) -> str:
    role = ismrmrd.Meta.deserialize(im.attribute_string)["DataRole"]
    return role[0] if isinstance(role, list) else role


def test_demo_runs_psirnet_lge_and_writes_images_pngs_and_panel(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    images = {_role(series[0]): series[0]
              for series in read_images(out / "images.h5", "demo").values()}
    assert sorted(images) == ["MagIR", "PD", "PSIR"]
    assert [images[r].image_series_index for r in ("PSIR", "MagIR", "PD")] == [1, 2, 3]
    assert len(list((out / "png").glob("*.png"))) == 3
    assert (out / "panel.png").stat().st_size > 1000
    assert (out / "case.h5").exists()
    # PSIR physics at the default TI (myocardium nulled): blood well above myocardium, as in
    # the truth, whose gap is ~1.5; eroded masks keep ~1.4 px of breathing off the edges
    truth = dict(np.load(out / "case_truth.npz"))
    labels = truth["labels"][0]
    ratio = (images["PSIR"].data[0, 0] - 4096.0) / 1000.0
    blood = np.median(ratio[binary_erosion(labels == ph.LV_BLOOD, iterations=2)])
    myo = np.median(ratio[binary_erosion(labels == ph.LV_MYO, iterations=1)])
    target = truth["psir_target"][0]
    gap = (np.median(target[binary_erosion(labels == ph.LV_BLOOD, iterations=2)])
           - np.median(target[binary_erosion(labels == ph.LV_MYO, iterations=1)]))
    assert gap > 1.0
    assert blood - myo > 0.6 * gap, (blood, myo, gap)
    assert abs(myo) < 0.3


def test_demo_with_another_chain(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--chain", "fft_rss"]) == 0
    images = [im for series in read_images(out / "images.h5", "demo").values() for im in series]
    assert len(images) == 4  # 2 repeats x (IR, PD) magnitude images from fft_rss
    assert sorted({(im.set, im.average) for im in images}) == [(0, 0), (0, 1), (1, 0), (1, 1)]
