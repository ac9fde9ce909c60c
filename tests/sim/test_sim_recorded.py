"""The recorded CI streams in tests/data are reproduced by the simulator.

Headers, item order and labels must match exactly. The readouts and the noise-free truth images go
through complex matrix products (noise colouring, prewhitening of the coil maps) whose BLAS kernel,
and so whose float32 rounding, depends on the CPU: they are held to 1e-5 of the array's peak
(float32 eps is 6e-8; the largest difference measured between two machines was 1.5e-7 of the
peak for the truth and 7e-7 for a readout). A real change of the simulator moves them by far more.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cmrecon.io.mrdfile import iter_items, read_header_xml

DATA = Path(__file__).resolve().parents[1] / "data"


def _recorded_module():
    spec = importlib.util.spec_from_file_location("make_recorded", DATA / "make_recorded.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REC = _recorded_module()


@pytest.mark.parametrize("name", sorted(REC.RECORDED_CASES))
def test_recorded_case_is_reproduced(name):
    from cmrecon.sim.lge import simulate_lge

    h5 = DATA / f"sim_lge_{name}.h5"
    assert h5.stat().st_size < 2_000_000
    case = simulate_lge(REC.RECORDED_CASES[name])
    assert read_header_xml(h5).decode() == case.header_xml
    stored = list(iter_items(h5))
    assert len(stored) == len(case.items)
    for a, b in zip(stored, case.items):
        assert a.getHead() == b.getHead()
        peak = float(np.abs(a.data).max())
        np.testing.assert_allclose(b.data, a.data, rtol=0, atol=1e-5 * peak)
    with np.load(DATA / f"sim_lge_{name}_truth.npz") as truth:
        for key in ("labels", "psi"):
            np.testing.assert_array_equal(truth[key], case.truth[key])
        for key in ("ir", "pd", "psir_target", "coil_maps"):
            ref = truth[key]
            peak = float(np.abs(ref).max())
            np.testing.assert_allclose(case.truth[key], ref, rtol=0, atol=1e-5 * peak, err_msg=key)
